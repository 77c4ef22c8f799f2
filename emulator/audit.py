"""Lists what a stack's builds left on the local AWS: the answer to "was anything leaked?".

Prints one line per resource carrying the stack's ecs-ami:stack-id tag, grouped as: builder
instances not terminated, images, snapshots, volumes. Exits 1 if anything but the expected images
(--keep) remains.
"""

import argparse
import sys

import boto3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stack-id", required=True)
    parser.add_argument("--keep", action="append", default=[], help="an image id that should remain")
    args = parser.parse_args()
    # As the local AWS's administrator: an audit is not the function, and is not authorized
    # against its role (emulator/authorization.py).
    ec2 = boto3.client("ec2", aws_access_key_id="local-admin", aws_secret_access_key="local")
    tag = [{"Name": "tag:ecs-ami:stack-id", "Values": [args.stack_id]}]
    instances = [
        (i["InstanceId"], i["State"]["Name"])
        for r in ec2.describe_instances(Filters=tag)["Reservations"]
        for i in r["Instances"]
        if i["State"]["Name"] != "terminated"
    ]
    images = [i["ImageId"] for i in ec2.describe_images(Owners=["self"], Filters=tag)["Images"]]
    snapshots = [
        (s["SnapshotId"], {t["Key"]: t["Value"] for t in s.get("Tags", [])}.get("ecs-ami:image-id"))
        for s in ec2.describe_snapshots(OwnerIds=["self"], Filters=tag)["Snapshots"]
    ]
    volumes = [v["VolumeId"] for v in ec2.describe_volumes(Filters=tag)["Volumes"]]
    print(f"builder instances not terminated: {instances or 'none'}")
    print(f"images: {images or 'none'}")
    print(f"snapshots: {snapshots or 'none'}")
    print(f"volumes: {volumes or 'none'}")
    leaked = (
        [i for i, _ in instances]
        + [i for i in images if i not in args.keep]
        + [s for s, image in snapshots if image not in args.keep]
        + volumes
    )
    if leaked:
        print(f"LEFT BEHIND: {' '.join(leaked)}")
        return 1
    print("nothing left behind")
    return 0


if __name__ == "__main__":
    sys.exit(main())
