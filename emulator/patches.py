"""Where the local AWS changes moto itself: every patch of moto's internals, installed by
`apply()` when the local AWS starts, and by nothing else (importing a module of the local AWS
changes nothing in moto).

Each patch makes moto do what AWS documents and moto does not. Each has a test in
tests/emulator/test_moto_gaps.py that runs the unpatched, pinned moto and asserts the gap is
still there: when a new moto closes it, that test fails, and the patch can go. The patches
replace internals of the moto version that emulator/requirements.txt pins (emulator/versions.py
refuses to start on another)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import moto.cloudformation.models
import moto.cloudformation.responses
from moto.ec2.models.amis import Ami, AmiBackend
from moto.ec2.models.elastic_block_store import EBSBackend
from moto.ec2.models.iam_instance_profile import IamInstanceProfileAssociationBackend
from moto.ec2.models.instances import InstanceBackend
from moto.ec2.responses.instances import InstanceResponse
from moto.ecr.models import ECRBackend, Image
from moto.ecr.responses import ECRResponse

import cloudformation
import consistency
import ecr
import ecs
import images
import launches


@dataclass(frozen=True)
class Patch:
    """One change to moto: what AWS does that moto does not, and how it is installed."""

    name: str
    aws_does: str
    install: Callable[[], None]


def _wrap(owner: Any, attribute: str, wrapper: Callable[[Any], Any]) -> Callable[[], None]:
    def install() -> None:
        setattr(owner, attribute, wrapper(getattr(owner, attribute)))

    return install


def _snapshot_release() -> None:
    AmiBackend.deregister_image, EBSBackend.delete_snapshot = consistency.with_snapshot_release_delay(
        AmiBackend.deregister_image, EBSBackend.delete_snapshot)


def _image_devices() -> None:
    root_only = Ami.block_device_mappings
    Ami.block_device_mappings = property(
        lambda self: root_only.fget(self) + images.IMAGE_DEVICES.get(self.id, []))


def _short_form_functions() -> None:
    # moto registers its constructor by this module-level name each time it parses a template.
    moto.cloudformation.models.yaml_tag_constructor = cloudformation.short_form_function
    moto.cloudformation.responses.yaml_tag_constructor = cloudformation.short_form_function


def _ecr_image_digest() -> None:
    Image._create_digest = ecr.digest_of_manifest
    ECRBackend.put_image = ecr.as_ecr_checks_pushed_digests(ECRBackend.put_image)


PATCHES = [
    Patch("run_instances",
          "RunInstances refuses an unknown instance type or one of another architecture, honours "
          "ClientToken, fails a launch whose KMS key is unusable, and attaches the root volume at "
          "the image's root device name",
          _wrap(InstanceBackend, "run_instances", launches.as_ec2_runs_instances)),
    Patch("repeated_launch",
          "a RunInstances answered from its ClientToken returns the earlier instance as it is "
          "(needed because of run_instances' ClientToken: moto would associate its profile again)",
          _wrap(IamInstanceProfileAssociationBackend, "associate_iam_instance_profile",
                launches.as_ec2_answers_a_repeated_launch)),
    Patch("snapshot_release",
          "DeleteSnapshot of a just-deregistered image's snapshot answers InvalidSnapshot.InUse for a while",
          _snapshot_release),
    Patch("create_image",
          "CreateImage tags the snapshots it makes, refuses a name in use, and snapshots every EBS volume",
          _wrap(AmiBackend, "create_image", images.as_ec2_creates_images)),
    Patch("image_devices",
          "an image maps each EBS device it was made with, not its root alone",
          _image_devices),
    Patch("merged_mappings",
          "RunInstances merges its block device mappings over the image's",
          _wrap(InstanceResponse, "_parse_block_device_mapping", images.as_ec2_merges_image_mappings)),
    Patch("copy_image",
          "CopyImage honours ClientToken, refuses a name in use, tags what it makes, and checks KmsKeyId",
          _wrap(AmiBackend, "copy_image", images.as_ec2_copies_images)),
    Patch("deprecated_images",
          "DescribeImages leaves out other owners' deprecated images unless asked",
          _wrap(AmiBackend, "describe_images", images.as_ec2_hides_deprecated_images)),
    Patch("terminated_container_instances",
          "ECS deregisters a terminated container instance",
          _wrap(InstanceBackend, "terminate_instances", ecs.as_ecs_deregisters_terminated_instances)),
    Patch("short_form_functions",
          "CloudFormation reads a short-form function over a mapping or a list (!Base64 over Fn::Sub: [...])",
          _short_form_functions),
    Patch("ecr_image_digest",
          "an ECR image's digest is the SHA-256 of its manifest as pushed, and PutImage refuses "
          "another imageDigest (ImageDigestDoesNotMatchException)",
          _ecr_image_digest),
    Patch("ecr_tag_moves",
          "a manifest pushed under a tag in use takes the tag; the earlier image stays, untagged",
          _wrap(ECRBackend, "put_image", ecr.as_ecr_moves_tags)),
    Patch("ecr_batch_get_image",
          "BatchGetImage names a missing image as asked, answers UnsupportedImageType for a manifest "
          "of a media type not accepted, and finds no repository in another account's registry",
          _wrap(ECRResponse, "batch_get_image", ecr.as_ecr_gets_images)),
    Patch("ecr_authorization_token",
          "GetAuthorizationToken issues a token of the caller's own, valid for 12 hours",
          _wrap(ECRResponse, "get_authorization_token", ecr.as_ecr_issues_own_tokens)),
]

_applied: list[str] = []


def apply() -> None:
    """Installs every patch, once."""
    if _applied:
        return
    for patch in PATCHES:
        patch.install()
        _applied.append(patch.name)


def applied() -> list[str]:
    """The names of the patches installed in this process (none unless `apply()` ran)."""
    return list(_applied)
