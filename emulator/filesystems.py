"""Instances' and images' file systems: every instance runs in an overlay of the host's root with a
writable layer of its own, which begins as its image's; an image keeps the layer its instance had
when it was made. What runs inside an instance is told its id, its region and the local AWS's
address."""

from __future__ import annotations

import os
import shutil
import subprocess

from settings import STATE_DIR


# An image's file system, as what it changes of the machine's root (the read-only lower layer of
# every instance's overlay): a directory of the image's own.
IMAGE_LAYERS: dict[str, str] = {}


def image_layer(image_id: str, instance_id: str) -> str:
    """An image keeps the file system its instance had when it was imaged: the instance's
    writable layer (which began as its own image's) is copied, whiteouts of removed files
    included. An instance launched from the image starts with a copy of it as its writable layer
    (`start_from_image`), so that images built from each other stack as on AWS."""
    upper = os.path.join(STATE_DIR, "instances", instance_id, "upper")
    layer = os.path.join(STATE_DIR, "images", image_id, "layer")
    os.makedirs(os.path.dirname(layer), exist_ok=True)
    if os.path.isdir(upper):
        subprocess.run(["cp", "-a", upper, layer], check=True)
        # The agent's own files are the instance's, not the image's.
        shutil.rmtree(os.path.join(layer, "var/lib/amazon/ssm"), ignore_errors=True)
    else:
        os.makedirs(layer)
    return layer


def start_from_image(instance_id: str, image_id: str) -> None:
    layer = IMAGE_LAYERS.get(image_id)
    if layer is None:
        return
    root = os.path.join(STATE_DIR, "instances", instance_id)
    os.makedirs(root, exist_ok=True)
    subprocess.run(["cp", "-a", layer, os.path.join(root, "upper")], check=True)


def instance_process(instance_id: str, script: str, script_dir: str, env_extra: dict[str, str],
                     workdir: str = "/", stderr: int = subprocess.STDOUT) -> subprocess.Popen:
    """`script` run by bash as root inside the instance's own view of the file system, from
    `workdir` (or / if it does not exist there): an overlay of the host's root (read-only) and the
    instance's writable layer, which began as its image's, in a private mount namespace that
    exists only while it runs; /dev and /proc are the host's so that ordinary tools work. The
    script is written to `script_dir` (relative to the instance's root) first. stdout is piped;
    stderr goes with it unless `stderr` says otherwise."""
    root = os.path.join(STATE_DIR, "instances", instance_id)
    upper, work, merged = (os.path.join(root, d) for d in ("upper", "work", "merged"))
    directory = os.path.join(upper, script_dir)
    for path in (upper, work, merged, directory):
        os.makedirs(path, exist_ok=True)
    with open(os.path.join(directory, "_script.sh"), "w") as handle:
        handle.write(script)
    inner = "/" + os.path.relpath(os.path.join(directory, "_script.sh"), upper)
    launcher = (
        'set -e; mount -t overlay overlay -o "lowerdir=/,upperdir=$1,workdir=$2" "$3"; '
        'mount --rbind /dev "$3/dev"; mount -t proc proc "$3/proc"; '
        'exec chroot "$3" /bin/bash -c \'cd "$1" 2>/dev/null || cd /; exec /bin/bash "$2"\' bash "$4" "$5"'
    )
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
           "LANG": "C.UTF-8", **env_extra}
    return subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", launcher,
         "sh", upper, work, merged, workdir, inner],
        stdout=subprocess.PIPE, stderr=stderr, stdin=subprocess.DEVNULL, env=env,
        start_new_session=True,
    )


# The local AWS's own address, for what runs inside an instance (the ECS agent's stand-in).
ENDPOINT = {"url": ""}


def instance_architecture(instance_id: str, region: str) -> str:
    """`x86_64` or `arm64`: the architecture of the image the instance was launched from."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.ec2.models import ec2_backends

    backend = ec2_backends[DEFAULT_ACCOUNT_ID][region]
    instance = next((i for i in backend.all_instances() if i.id == instance_id), None)
    image = backend.amis.get(instance.image_id) if instance is not None else None
    return getattr(image, "architecture", None) or "x86_64"


def instance_env(instance_id: str, region: str) -> dict[str, str]:
    """What a process inside an instance knows of it and of the local AWS: its instance metadata
    service (emulator/imds.py) through AWS_EC2_METADATA_SERVICE_ENDPOINT, and ECR's API through
    AWS_ENDPOINT_URL_ECR, the AWS SDKs' and CLI's own settings for them
    (https://docs.aws.amazon.com/sdkref/latest/guide/feature-imds-credentials.html,
    https://docs.aws.amazon.com/sdkref/latest/guide/feature-ss-endpoints.html)."""
    return {"ECS_AMI_INSTANCE_ID": instance_id, "ECS_AMI_REGION": region,
            "ECS_AMI_LOCAL_AWS": ENDPOINT["url"],
            # The instance's architecture, as its image gives it (the docker stand-in pulls an
            # image index's manifest for it, as docker does for the machine it runs on).
            "ECS_AMI_ARCHITECTURE": instance_architecture(instance_id, region),
            "AWS_EC2_METADATA_SERVICE_ENDPOINT": f"{ENDPOINT['url']}/ecs-ami-local/imds/{instance_id}/",
            "AWS_ENDPOINT_URL_ECR": ENDPOINT["url"]}
