"""RunInstances as EC2 documents it and moto does not: instance types and architectures, ClientToken
idempotency, launches that fail on an unusable KMS key, and the root volume at the image's root
device name (installed by patches.py)."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from moto.core import DEFAULT_ACCOUNT_ID
from moto.ec2.exceptions import EC2ClientError
from moto.ec2.models import ec2_backends
from moto.ec2.models.instance_types import INSTANCE_TYPES
from moto.ec2.models.instances import StateReason
from moto.kms.models import kms_backends

from consistency import CREATED
from filesystems import start_from_image
from messages import REQUEST


# RunInstances' ClientToken -> (what the request asked for, the reservation it made).
CLIENT_TOKENS: dict[str, tuple[Any, Any]] = {}


# ClientTokens of launches whose KMS key the function's role may not use (emulator/authorization.py).
KMS_REFUSED: set[str] = set()


def as_ec2_runs_instances(original: Any) -> Any:
    """Wraps moto's RunInstances with EC2's rules
    (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_RunInstances.html):

    * an instance type that does not exist, or whose architecture is not the image's, is refused
      (moto accepts any type);
    * ClientToken makes the call idempotent
      (https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-idempotency.html): the same token
      with the same parameters answers the same instance, with other parameters
      `IdempotentParameterMismatch` (moto ignores the token);
    * an EBS volume encrypted with a KMS key that is not usable (absent or disabled) makes the
      instance go pending -> terminated with StateReason `Client.InternalError`, as on AWS
      (https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/troubleshooting-launch.html);
    * every instance has its root volume at its root device name, tagged like the request's other
      volumes (moto attaches it at /dev/sda1, or not at all when only extra volumes are mapped).
    """

    def run_instances(self: Any, image_id: str, count: int, *args: Any, **kwargs: Any) -> Any:
        instance_type = kwargs.get("instance_type", "")
        if instance_type not in INSTANCE_TYPES:
            raise EC2ClientError("InvalidParameterValue", f"Invalid value '{instance_type}' for InstanceType.")
        image = self.amis.get(image_id)
        supported = INSTANCE_TYPES[instance_type].get("ProcessorInfo", {}).get("SupportedArchitectures", [])
        if image is not None and image.architecture not in supported:
            raise EC2ClientError(
                "InvalidParameterValue",
                f"The architecture '{supported[0] if supported else '?'}' of the specified instance type does not "
                f"match the architecture '{image.architecture}' of the specified AMI. Specify an instance type "
                "and an AMI that have matching architectures, and try again.")
        token = kwargs.get("client_token")
        asked = json.dumps([image_id, count, instance_type, kwargs.get("subnet_id"),
                            kwargs.get("tags"), kwargs.get("iam_instance_profile_name"),
                            kwargs.get("iam_instance_profile_arn")], sort_keys=True, default=str)
        if token and token != "ABCDE":  # moto's stand-in for no token
            if token in CLIENT_TOKENS:
                earlier, reservation = CLIENT_TOKENS[token]
                if earlier != asked:
                    raise EC2ClientError(
                        "IdempotentParameterMismatch",
                        "The client token you have provided is associated with a resource that is "
                        "already deleted or with different parameters.")
                # The same instance answered again: its profile is associated already.
                REQUEST.token_repeat = True
                return reservation
        volume_tags = (kwargs.get("tags") or {}).get("volume", {})
        reservation = original(self, image_id, count, *args, **kwargs)
        if token and token != "ABCDE":
            CLIENT_TOKENS[token] = (asked, reservation)
        keys = [m.get("Ebs", {}).get("KmsKeyId") for m in kwargs.get("block_device_mappings") or []]
        unusable = [k for k in keys if k and not kms_key_usable(self.region_name, k)]
        if token in KMS_REFUSED:
            KMS_REFUSED.discard(token)
            unusable.append("a key the caller may not use")
        for instance in reservation.instances:
            CREATED[instance.id] = time.time()
            # The instance starts with its image's file system (see image_layer).
            start_from_image(instance.id, image_id)
            mapping = instance.block_device_mapping
            root = instance.root_device_name
            if unusable:
                fail_launch(instance)
            if root in mapping:
                continue
            if "/dev/sda1" in mapping and root != "/dev/sda1":
                mapping[root] = mapping.pop("/dev/sda1")
                self.get_volume(mapping[root].volume_id).attachment.device = root
                continue
            instance.add_block_device(8, root, None, False, True, None, volume_type="gp3")
            self.get_volume(mapping[root].volume_id).add_tags(volume_tags)
        return reservation

    return run_instances


def kms_key_usable(region: str, key: str) -> bool:
    """A key id, ARN or alias the local KMS knows and that is enabled."""
    backend = kms_backends[DEFAULT_ACCOUNT_ID][region]
    try:
        key_id = backend.get_key_id_from_alias(key) if "alias/" in key else key
        found = backend.describe_key(key_id or key)
    except Exception:  # moto's NotFoundException and friends: the key cannot be used
        return False
    return bool(found.enabled)


def fail_launch(instance: Any) -> None:
    """pending for a moment, then terminated with the reason EC2 gives for an unusable KMS key."""
    instance._state.name, instance._state.code = "pending", 0

    def terminate() -> None:
        instance.terminate()
        instance.state_reason = StateReason("Client.InternalError: Client error on launch", "Client.InternalError")
        instance._reason = "Client.InternalError: Client error on launch"

    timer = threading.Timer(0.5, terminate)
    timer.daemon = True
    timer.start()


def as_ec2_answers_a_repeated_launch(original: Any) -> Any:
    """moto associates the instance profile again after a RunInstances that a ClientToken
    answered with an earlier instance, and fails (IncorrectState); EC2 answers the earlier
    instance as it is."""

    def associate(self: Any, instance_id: str, *args: Any, **kwargs: Any) -> Any:
        if getattr(REQUEST, "token_repeat", False) and instance_id in self.iam_instance_profile_associations:
            return self.iam_instance_profile_associations[instance_id]
        return original(self, instance_id, *args, **kwargs)

    return associate


def ec2_instance(region: str, instance_id: str):
    backend = ec2_backends[DEFAULT_ACCOUNT_ID][region]
    return backend.get_instance_by_id(instance_id)
