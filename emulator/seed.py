"""What a real account already has: the ECS-optimized Amazon Linux 2023 images that AWS's public SSM
parameters point at, and the instance profiles template.yaml would create."""

from __future__ import annotations

import json
import os
import shutil
import stat

from moto.core import DEFAULT_ACCOUNT_ID
from moto.ec2.models import ec2_backends
from moto.iam.models import iam_backends
from moto.ssm.models import ssm_backends

from authorization import BUILDER_ROLE_NAME, TEST_ROLE_NAME
from filesystems import IMAGE_LAYERS
from images import register_image
from settings import BUILDER_PROFILE, STATE_DIR, TEST_PROFILE

# The ECS-optimized images have Docker; here its CLI is a stand-in (emulator/docker_stand_in.py).
DOCKER_STAND_IN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "docker_stand_in.py")


ECS_AL2023_PARAMETERS = {
    "x86_64": "/aws/service/ecs/optimized-ami/amazon-linux-2023/recommended/image_id",
    "arm64": "/aws/service/ecs/optimized-ami/amazon-linux-2023/arm64/recommended/image_id",
}


def seed(region: str) -> None:
    """What a real account has from day one: public ECS AMIs and the builder's instance profile."""
    ec2 = ec2_backends[DEFAULT_ACCOUNT_ID][region]
    ssm = ssm_backends[DEFAULT_ACCOUNT_ID][region]
    for architecture, parameter in ECS_AL2023_PARAMETERS.items():
        image_id = ssm.get_parameter(parameter).value
        if image_id not in IMAGE_LAYERS:
            IMAGE_LAYERS[image_id] = ecs_optimized_layer(image_id)
        if image_id in ec2.amis:
            continue
        register_image(region, image_id, f"al2023-ami-ecs-hvm-2023.0.20261101-kernel-6.1-{architecture}",
                       architecture, "Amazon Linux AMI 2023.0.20261101 ECS HVM (seeded by the local AWS)",
                       amazon=True)
    iam = iam_backends[DEFAULT_ACCOUNT_ID]["global"]
    if BUILDER_PROFILE not in {p.name for p in iam.instance_profiles.values()}:
        # template.yaml's BuilderRole (whose ARN the role policy's PassRole names) in its profile.
        trust = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                                   "Principal": {"Service": "ec2.amazonaws.com"}}]})
        iam.create_role(BUILDER_ROLE_NAME, trust, "/", None, "Custom::EcsAmi builders", [], None)
        iam.create_instance_profile(BUILDER_PROFILE, "/", role_names=[BUILDER_ROLE_NAME], tags=[])
        # template.yaml's TestInstanceRole in its profile, for test instances that join a cluster.
        iam.create_role(TEST_ROLE_NAME, trust, "/", None, "Custom::EcsAmi test instances", [], None)
        iam.create_instance_profile(TEST_PROFILE, "/", role_names=[TEST_ROLE_NAME], tags=[])


def ecs_optimized_layer(image_id: str) -> str:
    """What an ECS-optimized image has that this machine's root (every instance's lower layer)
    lacks, and what it lacks that this machine has: `docker` is /usr/bin/docker, the stand-in, and
    no other `docker` comes before it in PATH (one this machine has in /usr/local/bin is hidden by
    an overlay whiteout, a character device 0/0 of its name)."""
    layer = os.path.join(STATE_DIR, "images", image_id, "layer")
    target = os.path.join(layer, "usr", "bin", "docker")
    os.makedirs(os.path.dirname(target), exist_ok=True)
    shutil.copyfile(DOCKER_STAND_IN, target)
    os.chmod(target, 0o755)
    for directory in ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin"):
        if os.path.islink(directory) or not os.path.lexists(os.path.join(directory, "docker")):
            continue
        whiteout = os.path.join(layer, directory.lstrip("/"), "docker")
        os.makedirs(os.path.dirname(whiteout), exist_ok=True)
        if not os.path.lexists(whiteout):
            os.mknod(whiteout, stat.S_IFCHR | 0o600, os.makedev(0, 0))
    return layer
