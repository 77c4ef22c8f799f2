"""EC2's eventual consistency as the local AWS reproduces it: a request naming an instance or image
created moments ago answers NotFound, and the snapshots of an image deregistered moments ago are
still in use."""

from __future__ import annotations

import re
import time
from typing import Any

from moto.ec2.exceptions import InvalidSnapshotInUse

from authorization import ec2_params
from settings import CONSISTENCY_DELAY, SNAPSHOT_RELEASE_DELAY


# When each instance and image was created, and when each image was deregistered (with its
# snapshots): the eventual consistency and snapshot release windows below are measured from these.
CREATED: dict[str, float] = {}


RELEASED: dict[str, float] = {}


def recently_created(resource_id: str) -> bool:
    created = CREATED.get(resource_id)
    return created is not None and time.time() - created < CONSISTENCY_DELAY


def with_snapshot_release_delay(deregister: Any, delete_snapshot: Any) -> tuple[Any, Any]:
    """For SNAPSHOT_RELEASE_DELAY seconds after DeregisterImage, DeleteSnapshot of the image's
    snapshots answers `InvalidSnapshot.InUse`, a race AWS users meet (moto frees them at once)."""

    def deregister_image(self: Any, ami_id: str) -> None:
        deregister(self, ami_id)
        RELEASED[ami_id] = time.time()

    def delete(self: Any, snapshot_id: str) -> Any:
        snapshot = self.snapshots.get(snapshot_id)
        released = RELEASED.get(getattr(snapshot, "from_ami", None) or "")
        if released is not None and time.time() - released < SNAPSHOT_RELEASE_DELAY:
            raise InvalidSnapshotInUse(snapshot_id, snapshot.from_ami)
        return delete_snapshot(self, snapshot_id)

    return deregister_image, delete


def not_yet_visible(operation: str, raw: bytes) -> dict[str, Any] | None:
    """EC2's eventual consistency
    (https://docs.aws.amazon.com/ec2/latest/devguide/eventual-consistency.html): a request that
    names an instance or image created less than CONSISTENCY_DELAY seconds ago answers NotFound.
    The local AWS's administrator (the tests' own look-ups) always sees everything."""
    if CONSISTENCY_DELAY <= 0 or not operation.startswith("EC2."):
        return None
    for key, value in ec2_params(raw).items():
        if re.fullmatch(r"(InstanceId|ResourceId|ImageId)(\.\d+)?", key) and recently_created(value):
            if value.startswith("i-"):
                return {"code": "InvalidInstanceID.NotFound", "status": 400,
                        "message": f"The instance ID '{value}' does not exist"}
            return {"code": "InvalidAMIID.NotFound", "status": 400,
                    "message": f"The image id '[{value}]' does not exist"}
    return None
