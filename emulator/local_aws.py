"""The local AWS for Custom::EcsAmi: moto server plus the SSM behaviour a build depends on.

moto 5.2 serves EC2, SSM parameters, IAM and CloudFormation, but its SSM Run Command never runs
anything and it has no DescribeInstanceInformation. This module wraps moto's WSGI application and
answers those SSM operations itself, so that every instance moto launches behaves like an SSM
managed instance:

* DescribeInstanceInformation lists a running instance as Online once it has run for
  ECS_AMI_EMULATOR_ONLINE_DELAY seconds, and stops listing it when it stops or terminates.
* SendCommand (AWS-RunShellScript) really runs the commands with bash, asynchronously, inside an
  overlay of the host's root file system private to that instance, so that a file written to
  /etc lands in the instance's own view and never on the host.
* GetCommandInvocation, ListCommandInvocations, ListCommands and CancelCommand report Pending,
  InProgress, then Success, Failed, TimedOut or Cancelled with the real exit code and output,
  cut to SSM's 24,000 / 8,000 characters.
* ModifyImageAttribute's Description, which moto ignores, is applied.
* An image made by CreateImage stays `pending` for ECS_AMI_EMULATOR_IMAGE_DELAY seconds (default 0)
  before it is `available`, as a snapshot takes time on AWS; moto makes it available at once.
* CopyImage follows EC2's rules that moto ignores (ClientToken idempotency, a name unique in the
  destination region, TagSpecifications for the image and its snapshots, KmsKeyId only with
  Encrypted), and the copy stays `pending` for ECS_AMI_EMULATOR_COPY_DELAY seconds (default 2).
  Every region is its own EC2 and SSM, chosen by the request's signature, as moto keeps them.
* An instance's root volume is attached at the image's root device name, as on AWS, also when
  RunInstances maps only extra volumes; moto attaches it at /dev/sda1, or not at all.
* CreateImage snapshots every EBS volume attached to the instance, and the image maps each at its
  device (moto's images map the root alone); CopyImage copies each. RunInstances launches every
  device the image maps, and a device the request names takes what the request leaves out
  (SnapshotId, VolumeSize, ...) from the image's mapping, as EC2 merges them (moto refuses a
  mapping without a size or snapshot).
* CloudFormation templates may use a short-form function on a mapping (`!Base64` over
  `Fn::Sub: [...]`, `!ImportValue` over `Fn::Sub: ...`), as CloudFormation allows: moto's YAML
  loader returns such a node unconverted and then fails on it.

It also seeds what a real account already has: the ECS-optimized Amazon Linux 2023 images that the
public SSM parameters point at, and the builder instance profile that template.yaml would create.
`GET /ecs-ami-local/calls` counts the AWS API calls received, by operation and in order, and the
calls throttled (`DELETE` also resets), because moto's own recorder never sees the SSM calls
answered here. EC2's request-rate buckets and Parameter Store's throughput are enforced as AWS
documents them (emulator/throttling.py; ECS_AMI_EMULATOR_RATE_SCALE scales them).

For the fault tests, `POST /ecs-ami-local/faults` takes `{"rules": [...]}` (`DELETE` clears them,
`GET` says how often each fired). A rule names an `operation` (`EC2.CreateImage`,
`AmazonSSM.SendCommand`, or `*`) and either an error to answer with (`code`, `status`, and
`attempts`: the SDK attempt numbers it hits, from the amz-sdk-request header, so `[1, 2]` makes
every call fail twice and then succeed; absent: every attempt), `"stall": SECONDS` (the answer
comes only that much later, as when a connection died under the caller), or `"image": "failed"`
(the image that CreateImage makes ends `failed`). `POST /ecs-ami-local/offline/<instance id>` takes an
instance's SSM agent offline: it reports ConnectionLost, and its running commands are killed and
never report an end, as when an agent dies.

Every other request goes to moto unchanged.
"""

from __future__ import annotations

import argparse
import base64
import fnmatch
import html
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from xml.etree import ElementTree
from datetime import datetime, timezone
from typing import Any

# The patches below replace moto's internals as the pinned version has them: the version is
# checked before moto is imported, since another one may fail at an import or a patch first.
import versions  # noqa: E402 (emulator/versions.py, beside this file)

_MOTO_PROBLEM = versions.mismatch("moto")
if _MOTO_PROBLEM:
    sys.exit(f"local AWS: {_MOTO_PROBLEM}")

import moto.cloudformation.models
import moto.cloudformation.responses
import yaml
from moto.core import DEFAULT_ACCOUNT_ID
from moto.ec2.models import ec2_backends
from moto.ec2.exceptions import EC2ClientError, InvalidSnapshotInUse
from moto.ec2.models.amis import Ami, AmiBackend
from moto.ec2.models.iam_instance_profile import IamInstanceProfileAssociationBackend
from moto.ec2.models.elastic_block_store import EBSBackend
from moto.ec2.models.instance_types import INSTANCE_TYPES
from moto.ec2.models.instances import InstanceBackend, StateReason
from moto.ec2.responses.instances import InstanceResponse
from moto.iam.models import iam_backends
from moto.kms.models import kms_backends
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from moto.ecs.models import ecs_backends
from moto.ssm.models import ssm_backends
from werkzeug.serving import make_server

from throttling import Throttle
from authorization import (ADMIN_KEY, BUILDER_ROLE_NAME, TEST_ROLE_NAME, Authorizer, CannotAuthorize, caller_key, ec2_params,
                           tag_specifications)

STDOUT_LIMIT = 24_000
STDERR_LIMIT = 8_000
LIST_OUTPUT_LIMIT = 2_500
PLUGIN = "aws:runShellScript"

ONLINE_DELAY = float(os.environ.get("ECS_AMI_EMULATOR_ONLINE_DELAY", "1"))
# How long Parameter Store takes to validate an aws:ec2:image value after PutParameter answered.
IMAGE_PARAMETER_DELAY = float(os.environ.get("ECS_AMI_EMULATOR_IMAGE_PARAMETER_DELAY", "1"))
IMAGE_DELAY = float(os.environ.get("ECS_AMI_EMULATOR_IMAGE_DELAY", "0"))
# How long an image made by CopyImage stays `pending` (a cross-region copy takes minutes on AWS).
COPY_DELAY = float(os.environ.get("ECS_AMI_EMULATOR_COPY_DELAY", "2"))
# Eventual consistency: for this long after RunInstances (CreateImage), a request naming the new
# instance (image) answers InvalidInstanceID.NotFound (InvalidAMIID.NotFound).
CONSISTENCY_DELAY = float(os.environ.get("ECS_AMI_EMULATOR_CONSISTENCY_DELAY", "2"))
# For this long after DeregisterImage, DeleteSnapshot of its snapshots answers InvalidSnapshot.InUse.
# The function's filtered Describe and List calls are answered in pages of this many items, the
# first page always empty and carrying a token, as AWS may answer a filtered call
# (https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-pagination.html,
# https://docs.aws.amazon.com/systems-manager/latest/APIReference/API_DescribeInstanceInformation.html,
# https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_ListContainerInstances.html).
# 0: no pages.
PAGE_SIZE = int(os.environ.get("ECS_AMI_EMULATOR_PAGE_SIZE", "1"))
PAGE_TOKEN = "ecs-ami-local-page-"
SNAPSHOT_RELEASE_DELAY = float(os.environ.get("ECS_AMI_EMULATOR_SNAPSHOT_RELEASE_DELAY", "2"))
STATE_DIR = os.environ.get("ECS_AMI_EMULATOR_STATE") or tempfile.mkdtemp(prefix="ecs-ami-local-aws-")
SEED_REGIONS = os.environ.get("ECS_AMI_EMULATOR_REGIONS", "us-east-1").split(",")
BUILDER_PROFILE = os.environ.get("ECS_AMI_EMULATOR_PROFILE", "ecs-ami-builder")
TEST_PROFILE = "ecs-ami-test-instance"
# IAM authorization of the function's calls against template.yaml's role (emulator/authorization.py):
# on unless set to "off".
IAM = os.environ.get("ECS_AMI_EMULATOR_IAM", "on") != "off"
# The template whose role is enforced (another one, such as an older version, for comparison).
TEMPLATE = os.environ.get("ECS_AMI_EMULATOR_TEMPLATE") or os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "template.yaml")

def short_form_function(loader: Any, tag: str, node: Any) -> Any:
    """`!Name value` as `{"Fn::Name": value}` (`!Ref` as `{"Ref": value}`), for scalar, list and
    mapping values alike; moto's own version leaves a mapping as a raw YAML node."""
    key = "Ref" if tag == "!Ref" else f"Fn::{tag[1:]}"
    if isinstance(node, yaml.MappingNode):
        return {key: loader.construct_mapping(node, deep=True)}
    if isinstance(node, yaml.SequenceNode):
        return {key: loader.construct_sequence(node, deep=True)}
    if tag == "!GetAtt":
        return {key: node.value.split(".", 1)}
    return {key: node.value}


# When each instance and image was created, and when each image was deregistered (with its
# snapshots): the eventual consistency and snapshot release windows below are measured from these.
CREATED: dict[str, float] = {}
RELEASED: dict[str, float] = {}
# RunInstances' ClientToken -> (what the request asked for, the reservation it made).
CLIENT_TOKENS: dict[str, tuple[Any, Any]] = {}
# ClientTokens of launches whose KMS key the function's role may not use (emulator/authorization.py).
KMS_REFUSED: set[str] = set()


def recently_created(resource_id: str) -> bool:
    created = CREATED.get(resource_id)
    return created is not None and time.time() - created < CONSISTENCY_DELAY


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


InstanceBackend.run_instances = as_ec2_runs_instances(InstanceBackend.run_instances)


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


AmiBackend.deregister_image, EBSBackend.delete_snapshot = with_snapshot_release_delay(
    AmiBackend.deregister_image, EBSBackend.delete_snapshot)


def as_ec2_creates_images(original: Any) -> Any:
    """Wraps moto's CreateImage with two rules of EC2's
    (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_CreateImage.html):
    TagSpecifications may tag the `image` and the `snapshot`s it creates (moto raises
    NotImplementedError for `snapshot`), and an AMI name is unique per account and region
    (`InvalidAMIName.Duplicate`; moto accepts any number of images with one name)."""

    def create_image(self: Any, instance_id: str, name: str, description: str,
                     tag_specifications: list[dict[str, Any]]) -> Any:
        for ami in self.amis.values():
            if ami.name == name and ami.owner_id == self.account_id and ami.state != "deregistered":
                raise EC2ClientError("InvalidAMIName.Duplicate",
                                     f"AMI name {name} is already in use by AMI {ami.id}")
        snapshot_tags: dict[str, str] = {}
        for spec in tag_specifications:
            if spec.get("ResourceType") == "snapshot":
                snapshot_tags.update({t["Key"]: t["Value"] for t in spec.get("Tags", [])})
        ami = original(self, instance_id, name, description,
                       [s for s in tag_specifications if s.get("ResourceType") != "snapshot"])
        CREATED[ami.id] = time.time()
        IMAGE_LAYERS[ami.id] = image_layer(ami.id, instance_id)
        # Every other EBS volume of the instance, snapshotted and mapped at its device, with the
        # DeleteOnTermination the request gives it (else the instance's own).
        asked = getattr(REQUEST, "image_mappings", {}) or {}
        instance = self.get_instance(instance_id)
        devices = []
        for device, attached in sorted(instance.block_device_mapping.items()):
            if device == instance.root_device_name:
                continue
            volume = self.get_volume(attached.volume_id)
            snapshot = self.create_snapshot(volume.id, f"Created by CreateImage({instance_id}) for {ami.id}",
                                            self.account_id, from_ami=ami.id)
            devices.append({"DeviceName": device, "Ebs": {
                "SnapshotId": snapshot.id, "VolumeSize": volume.size, "VolumeType": volume.volume_type,
                "Encrypted": bool(volume.encrypted),
                "DeleteOnTermination": asked.get(device, bool(attached.delete_on_termination))}})
        IMAGE_DEVICES[ami.id] = devices
        if snapshot_tags:
            self.create_tags([ami.ebs_snapshot.id, *[d["Ebs"]["SnapshotId"] for d in devices]], snapshot_tags)
        return ami

    return create_image


AmiBackend.create_image = as_ec2_creates_images(AmiBackend.create_image)

# Each image's EBS devices besides its root (see as_ec2_creates_images), by image id.
IMAGE_DEVICES: dict[str, list[dict[str, Any]]] = {}
_root_mapping = Ami.block_device_mappings
Ami.block_device_mappings = property(lambda self: _root_mapping.fget(self) + IMAGE_DEVICES.get(self.id, []))


def as_ec2_merges_image_mappings(original: Any) -> Any:
    """RunInstances' block device mappings over the image's
    (https://docs.aws.amazon.com/ebs/latest/userguide/block-device-mapping-concepts.html): every
    device the image maps is launched, and what the request says of a device (DeleteOnTermination,
    a size, a type) overrides the image's mapping, the snapshot included only when named."""

    def parse(self: Any) -> list[dict[str, Any]]:
        requested = self._get_param("BlockDeviceMappings", []) or []
        image = self.ec2_backend.amis.get(self._get_param("ImageId") or "")
        if image is None:
            return original(self)
        image_devices = {d["DeviceName"]: d for d in image.block_device_mappings}
        unnamed = {d["DeviceName"]: d for d in IMAGE_DEVICES.get(image.id, [])}
        merged = []
        for mapping in requested:
            device = image_devices.get(mapping.get("DeviceName"))
            unnamed.pop(mapping.get("DeviceName"), None)
            if device is not None and "NoDevice" not in mapping:
                mapping = {**mapping, "Ebs": {**device["Ebs"], **mapping.get("Ebs", {})}}
            merged.append(mapping)
        # The root volume is attached by as_ec2_runs_instances when the request does not name it.
        merged += unnamed.values()
        if not merged:
            return original(self)
        get_param = self._get_param
        self._get_param = lambda name, default=None: merged if name == "BlockDeviceMappings" else get_param(name, default)
        try:
            return original(self)
        finally:
            del self._get_param

    return parse


InstanceResponse._parse_block_device_mapping = as_ec2_merges_image_mappings(
    InstanceResponse._parse_block_device_mapping)


def as_ec2_answers_a_repeated_launch(original: Any) -> Any:
    """moto associates the instance profile again after a RunInstances that a ClientToken
    answered with an earlier instance, and fails (IncorrectState); EC2 answers the earlier
    instance as it is."""

    def associate(self: Any, instance_id: str, *args: Any, **kwargs: Any) -> Any:
        if getattr(REQUEST, "token_repeat", False) and instance_id in self.iam_instance_profile_associations:
            return self.iam_instance_profile_associations[instance_id]
        return original(self, instance_id, *args, **kwargs)

    return associate


IamInstanceProfileAssociationBackend.associate_iam_instance_profile = as_ec2_answers_a_repeated_launch(
    IamInstanceProfileAssociationBackend.associate_iam_instance_profile)

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


# CopyImage's idempotency: (destination region, ClientToken) -> (the request's parameters, image).
COPY_TOKENS: dict[tuple[str, str], tuple[dict[str, str], str]] = {}


def as_ec2_copies_images(original: Any) -> Any:
    """Wraps moto's CopyImage with EC2's rules
    (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_CopyImage.html), which moto
    ignores: ClientToken makes the call idempotent (the same token with the same parameters
    answers the same image; with others, IdempotentParameterMismatch); the name is unique in the
    destination region; TagSpecifications tag the new image and its new snapshots; KmsKeyId needs
    Encrypted, and the key must exist in the destination region; the copy keeps the source's root
    device name. Launch permissions, deprecation, ImdsSupport and tags are not copied (the
    product sets what it wants on each copy). The parameters are the request's, from REQUEST."""

    def copy_image(self: Any, source_image_id: str, source_region: str, name: str | None = None,
                   description: str | None = None) -> Any:
        params = dict(getattr(REQUEST, "copy_params", {}) or {})
        region = self.region_name
        token = params.pop("ClientToken", "")
        same = {k: v for k, v in params.items() if k not in ("Action", "Version", "DryRun")}
        if token and (region, token) in COPY_TOKENS:
            earlier, image_id = COPY_TOKENS[(region, token)]
            if earlier != same:
                raise EC2ClientError("IdempotentParameterMismatch",
                                     f"ClientToken {token} was used with other parameters")
            return self.amis.get(image_id) or FORGOTTEN(image_id)
        for ami in self.amis.values():
            if ami.name == name and ami.owner_id == self.account_id and ami.state != "deregistered":
                raise EC2ClientError("InvalidAMIName.Duplicate",
                                     f"AMI name {name} is already in use by AMI {ami.id}")
        key = params.get("KmsKeyId")
        if key and params.get("Encrypted", "").lower() != "true":
            raise EC2ClientError("InvalidParameterCombination",
                                 "KmsKeyId requires Encrypted to be true")
        if key and kms_key_usable(region, key) is False:
            raise EC2ClientError("InvalidParameterValue", f"KMS key {key} does not exist in {region}")
        specs = tag_specifications(params)
        unknown = set(specs) - {"image", "snapshot"}
        if unknown:
            raise EC2ClientError("InvalidParameterValue",
                                 f"CopyImage tags only image and snapshot, not {sorted(unknown)}")
        ami = original(self, source_image_id, source_region, name, description)
        source = ec2_backends[self.account_id][source_region].amis[source_image_id]
        ami.root_device_name = source.root_device_name
        CREATED[ami.id] = time.time()
        if source_image_id in IMAGE_LAYERS:
            IMAGE_LAYERS[ami.id] = IMAGE_LAYERS[source_image_id]
        # The source's other devices, each a new snapshot here.
        devices = []
        for device in IMAGE_DEVICES.get(source_image_id, []):
            volume = self.create_volume(size=device["Ebs"]["VolumeSize"], zone_name=region)
            snapshot = self.create_snapshot(volume.id, f"Copied for {ami.id}", self.account_id, from_ami=ami.id)
            self.delete_volume(volume.id)
            devices.append({"DeviceName": device["DeviceName"], "Ebs": {**device["Ebs"], "SnapshotId": snapshot.id}})
        IMAGE_DEVICES[ami.id] = devices
        if specs.get("image"):
            self.create_tags([ami.id], specs["image"])
        if specs.get("snapshot"):
            self.create_tags([ami.ebs_snapshot.id, *[d["Ebs"]["SnapshotId"] for d in devices]], specs["snapshot"])
        if token:
            COPY_TOKENS[(region, token)] = (same, ami.id)
        return ami

    return copy_image


class FORGOTTEN:
    """An image a ClientToken answered with, deregistered since: its id is still the answer."""

    def __init__(self, image_id: str) -> None:
        self.id = image_id


AmiBackend.copy_image = as_ec2_copies_images(AmiBackend.copy_image)

# The request being answered, for what moto's backend methods are not told (IncludeDeprecated).
REQUEST = threading.local()


def as_ec2_hides_deprecated_images(original: Any) -> Any:
    """DescribeImages leaves out other owners' deprecated images unless the request names them by
    id or sets IncludeDeprecated; the owner always sees its own
    (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DescribeImages.html and
    https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/ami-deprecate.html). moto knows no
    deprecation: this keeps the time EnableImageDeprecation set (`deprecation_time`, which moto
    then answers as DeprecationTime) and applies the rule."""

    def describe_images(self: Any, ami_ids: Any = None, filters: Any = None, exec_users: Any = None,
                        owners: Any = None) -> Any:
        images = original(self, ami_ids=ami_ids, filters=filters, exec_users=exec_users, owners=owners)
        if ami_ids or getattr(REQUEST, "include_deprecated", False):
            return images
        now = time.time()
        return [ami for ami in images
                if ami.owner_id == self.account_id or not is_deprecated(ami, now)]

    return describe_images


def is_deprecated(ami: Any, now: float) -> bool:
    at = getattr(ami, "deprecation_time", None)
    return at is not None and parse_iso(at) <= now


def parse_iso(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


AmiBackend.describe_images = as_ec2_hides_deprecated_images(AmiBackend.describe_images)

# moto registers its constructor by this module-level name each time it parses a template.
moto.cloudformation.models.yaml_tag_constructor = short_form_function
moto.cloudformation.responses.yaml_tag_constructor = short_form_function

ECS_AL2023_PARAMETERS = {
    "x86_64": "/aws/service/ecs/optimized-ami/amazon-linux-2023/recommended/image_id",
    "arm64": "/aws/service/ecs/optimized-ami/amazon-linux-2023/arm64/recommended/image_id",
}


class SsmError(Exception):
    def __init__(self, code: str, message: str, status: int = 400):
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


def now_epoch() -> float:
    return time.time()


def region_of(environ: dict[str, Any]) -> str:
    auth = environ.get("HTTP_AUTHORIZATION", "")
    match = re.search(r"Credential=[^/]+/\d{8}/([a-z0-9-]+)/", auth)
    return match.group(1) if match else "us-east-1"


def ec2_instance(region: str, instance_id: str):
    backend = ec2_backends[DEFAULT_ACCOUNT_ID][region]
    return backend.get_instance_by_id(instance_id)


OFFLINE: set[str] = set()


# User data at boot: instance id -> the console output so far, and the instances still running it.
CONSOLE: dict[str, str] = {}
BOOTING: set[str] = set()


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


def instance_env(instance_id: str, region: str) -> dict[str, str]:
    """What a process inside an instance knows of it and of the local AWS."""
    return {"ECS_AMI_INSTANCE_ID": instance_id, "ECS_AMI_REGION": region,
            "ECS_AMI_LOCAL_AWS": ENDPOINT["url"]}


def ecs_agent_started(body: dict[str, Any]) -> dict[str, Any]:
    """POST /ecs-ami-local/ecs/agent-started `{"instance": id}`: the ECS agent of an instance
    started (the stand-in for the service manager in the image calls this on `systemctl start
    ecs`). As the real agent does, it reads ECS_CLUSTER from the instance's /etc/ecs/ecs.config
    (default `default`) and registers the instance there as a container instance, agent
    connected (https://docs.aws.amazon.com/AmazonECS/latest/developerguide/ecs-agent-config.html)."""
    instance_id = body["instance"]
    for region, backend in ec2_backends[DEFAULT_ACCOUNT_ID].items():
        if any(i.id == instance_id for i in backend.all_instances()):
            break
    else:
        raise SsmError("InvalidInstanceId", f"no instance {instance_id}")
    config_path = os.path.join(STATE_DIR, "instances", instance_id, "upper", "etc/ecs/ecs.config")
    cluster = "default"
    if os.path.exists(config_path):
        for line in open(config_path, encoding="utf-8", errors="replace"):
            key, _, value = line.strip().partition("=")
            if key == "ECS_CLUSTER" and value:
                cluster = value.strip().strip("'\"")
    ecs = ecs_backends[DEFAULT_ACCOUNT_ID][region]
    if cluster not in ecs.clusters:
        raise SsmError("ClusterNotFoundException", f"cluster {cluster} not found in {region}")
    registered = ecs.register_container_instance(cluster, instance_id)
    return {"cluster": cluster, "containerInstanceArn": registered.container_instance_arn}


def as_ecs_deregisters_terminated_instances(original: Any) -> Any:
    """A terminated container instance is deregistered from its cluster by ECS
    (https://docs.aws.amazon.com/AmazonECS/latest/developerguide/deregister_container_instance.html);
    moto keeps it."""

    def terminate_instances(self: Any, instance_ids: list[str]) -> Any:
        answer = original(self, instance_ids)
        ecs = ecs_backends[DEFAULT_ACCOUNT_ID][self.region_name]
        for cluster, members in list(ecs.container_instances.items()):
            for member_id, member in list(members.items()):
                if member.ec2_instance_id in instance_ids and cluster in ecs.clusters:
                    ecs.deregister_container_instance(cluster, member_id, force=True)
        return answer

    return terminate_instances


InstanceBackend.terminate_instances = as_ecs_deregisters_terminated_instances(
    InstanceBackend.terminate_instances)


# Instance families on the Xen hypervisor, which have no latest console output.
XEN_FAMILIES = ("t1.", "t2.", "m1.", "m2.", "m3.", "m4.", "c1.", "c3.", "c4.", "r3.", "r4.", "i2.",
                "d2.", "g2.", "g3.", "p2.", "x1.", "x1e.", "h1.")
CONSOLE_BUFFERED: dict[str, str] = {}


def boot(instance_id: str, user_data: bytes) -> None:
    """An instance's first boot runs its user data (a shell script, as cloud-init's
    scripts-user does), in the instance's own file system; what it prints goes to the console
    output (GetConsoleOutput). The instance's SSM agent reports Online only once it has run, a
    simplification: on AWS the agent may come Online first, so a test that depends on the user
    data should wait for it (`cloud-init status --wait`)."""
    BOOTING.add(instance_id)
    CONSOLE[instance_id] = f"[    0.000000] Linux version (local AWS) booting {instance_id}\n"
    # What EC2 posts shortly after the instance starts, and answers without Latest.
    CONSOLE_BUFFERED[instance_id] = CONSOLE[instance_id]

    def run() -> None:
        try:
            text = user_data.decode("utf-8", "replace")
            if not text.startswith("#!"):
                text = "#!/bin/bash\n" + text
            region = next((r for r, b in ec2_backends[DEFAULT_ACCOUNT_ID].items()
                           if any(i.id == instance_id for i in b.all_instances())), "us-east-1")
            process = instance_process(instance_id, text, "var/lib/ecs-ami-local/user-data",
                                       instance_env(instance_id, region))
            out, _ = process.communicate(timeout=600)
            CONSOLE[instance_id] += out.decode("utf-8", "replace")
            CONSOLE[instance_id] += (f"cloud-init: user data finished with exit code {process.returncode}\n")
            # Where cloud-init keeps how its run ended (`cloud-init status` reads it).
            result = os.path.join(STATE_DIR, "instances", instance_id, "upper", "var/lib/cloud/data")
            os.makedirs(result, exist_ok=True)
            errors = [] if process.returncode == 0 else [
                f"scripts-user: user data exited with code {process.returncode}"]
            with open(os.path.join(result, "result.json"), "w") as handle:
                json.dump({"v1": {"datasource": "DataSourceEc2Local", "errors": errors}}, handle)
        except Exception as error:  # noqa: BLE001 (the console says what went wrong)
            CONSOLE[instance_id] += f"cloud-init: user data could not run: {error}\n"
        finally:
            BOOTING.discard(instance_id)

    threading.Thread(target=run, daemon=True).start()


def console_output(start_response: Any, params: dict[str, Any]) -> list[bytes]:
    """GetConsoleOutput: the instance's boot messages and user data output, base64-encoded. With
    `Latest` (Nitro instance types only; others answer UnsupportedOperation) everything so far;
    without it, the buffer EC2 posted shortly after the instance started
    (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_GetConsoleOutput.html)."""
    instance_id = params.get("InstanceId", "")
    latest = params.get("Latest", "").lower() == "true"
    if latest:
        instance = next((i for b in ec2_backends[DEFAULT_ACCOUNT_ID].values() for i in b.all_instances()
                         if i.id == instance_id), None)
        if instance is not None and instance.instance_type.startswith(XEN_FAMILIES):
            return error_response(start_response, "EC2.GetConsoleOutput", {
                "code": "UnsupportedOperation", "status": 400,
                "message": "Latest console output is supported only on instance types built on the Nitro System"})
    text = CONSOLE.get(instance_id, "") if latest else CONSOLE_BUFFERED.get(instance_id, "")
    output = base64.b64encode(text.encode()).decode()
    body = ('<?xml version="1.0" encoding="UTF-8"?>\n<GetConsoleOutputResponse '
            'xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>local</requestId>'
            f"<instanceId>{html.escape(instance_id)}</instanceId>"
            f"<timestamp>{datetime.now(timezone.utc).strftime('%Y-%m-%dT%H:%M:%S.000Z')}</timestamp>"
            f"<output>{output}</output></GetConsoleOutputResponse>")
    start_response("200 OK", [("Content-Type", "text/xml"), ("Content-Length", str(len(body)))])
    return [body.encode()]


def is_online(instance) -> bool:
    if instance is None or instance.state != "running" or instance.id in OFFLINE:
        return False
    if instance.id in BOOTING:
        return False
    started = instance.launch_time
    if isinstance(started, str):
        started = datetime.fromisoformat(started.replace("Z", "+00:00"))
    if started.tzinfo is None:
        started = started.replace(tzinfo=timezone.utc)
    return (datetime.now(timezone.utc) - started).total_seconds() >= ONLINE_DELAY


class Invocation:
    """One instance's run of one command: a bash process in the instance's own root view."""

    def __init__(self, command: "Command", instance_id: str):
        self.command = command
        self.instance_id = instance_id
        self.status = "Pending"
        self.status_details = "Pending"
        self.response_code = -1
        self.stdout = ""
        self.stderr = ""
        self.started: float | None = None
        self.ended: float | None = None
        self.process: subprocess.Popen | None = None
        self.cancelled = False
        # The agent went offline: the command was killed and its end is never reported.
        self.lost = False
        self.lock = threading.Lock()

    def cancel(self) -> None:
        with self.lock:
            self.cancelled = True
            if self.process is not None and self.process.poll() is None:
                os.killpg(self.process.pid, signal.SIGKILL)
            elif self.status in ("Pending", "InProgress"):
                self.finish("Cancelled", "Cancelled", -1)

    def lose(self) -> None:
        with self.lock:
            self.lost = True
            if self.process is not None and self.process.poll() is None:
                os.killpg(self.process.pid, signal.SIGKILL)

    def finish(self, status: str, details: str, code: int) -> None:
        self.status = status
        self.status_details = details
        self.response_code = code
        self.ended = now_epoch()

    def run(self) -> None:
        script_dir = os.path.join(
            "var/lib/amazon/ssm", self.instance_id, "document/orchestration", self.command.id
        )
        env = {
            "AWS_SSM_INSTANCE_ID": self.instance_id,
            "AWS_SSM_REGION_NAME": self.command.region,
            **instance_env(self.instance_id, self.command.region),
        }
        with self.lock:
            if self.cancelled:
                return
            self.status = self.status_details = "InProgress"
            self.started = now_epoch()
            self.process = instance_process(
                self.instance_id, "\n".join(self.command.commands) + "\n", script_dir, env,
                workdir=self.command.working_directory or "/", stderr=subprocess.PIPE,
            )
        try:
            out, err = self.process.communicate(timeout=self.command.execution_timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            out, err = self.process.communicate()
            timed_out = True
        with self.lock:
            if self.lost:
                return
            self.stdout = out.decode("utf-8", "replace")[:STDOUT_LIMIT]
            self.stderr = err.decode("utf-8", "replace")[:STDERR_LIMIT]
            code = self.process.returncode
            if self.cancelled:
                self.finish("Cancelled", "Cancelled", -1)
            elif timed_out:
                self.finish("TimedOut", "ExecutionTimedOut", 124)
            elif code == 0:
                self.finish("Success", "Success", 0)
            else:
                self.finish("Failed", "Failed", code if code > 0 else 128 - code)

    def describe(self) -> dict[str, Any]:
        with self.lock:
            elapsed = ""
            if self.started is not None:
                seconds = (self.ended or now_epoch()) - self.started
                elapsed = time.strftime("PT%H:%M:%S", time.gmtime(seconds))
            return {
                "CommandId": self.command.id,
                "InstanceId": self.instance_id,
                "Comment": self.command.comment,
                "DocumentName": self.command.document,
                "DocumentVersion": "$DEFAULT",
                "PluginName": PLUGIN,
                "ResponseCode": self.response_code,
                "ExecutionStartDateTime": iso(self.started),
                "ExecutionElapsedTime": elapsed,
                "ExecutionEndDateTime": iso(self.ended),
                "Status": self.status,
                "StatusDetails": self.status_details,
                "StandardOutputContent": self.stdout,
                "StandardOutputUrl": "",
                "StandardErrorContent": self.stderr,
                "StandardErrorUrl": "",
            }


def iso(epoch: float | None) -> str:
    if epoch is None:
        return ""
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Command:
    def __init__(self, region: str, body: dict[str, Any]):
        parameters = body.get("Parameters") or {}
        self.id = str(uuid.uuid4())
        self.region = region
        self.document = body.get("DocumentName", "")
        self.comment = body.get("Comment", "")
        self.parameters = parameters
        self.commands = list(parameters.get("commands") or [])
        self.working_directory = (parameters.get("workingDirectory") or [""])[0]
        self.execution_timeout = int((parameters.get("executionTimeout") or ["3600"])[0])
        self.requested = now_epoch()
        self.invocations: dict[str, Invocation] = {}

    def status(self) -> str:
        states = {inv.status for inv in self.invocations.values()}
        for state in ("InProgress", "Pending"):
            if state in states:
                return "InProgress" if state == "InProgress" or len(states) > 1 else "Pending"
        if states == {"Success"}:
            return "Success"
        if "Cancelled" in states:
            return "Cancelled"
        if "TimedOut" in states:
            return "TimedOut"
        return "Failed"

    def describe(self) -> dict[str, Any]:
        return {
            "CommandId": self.id,
            "DocumentName": self.document,
            "DocumentVersion": "$DEFAULT",
            "Comment": self.comment,
            "Parameters": self.parameters,
            "InstanceIds": list(self.invocations),
            "Targets": [],
            "RequestedDateTime": self.requested,
            "Status": self.status(),
            "StatusDetails": self.status(),
            "TargetCount": len(self.invocations),
            "CompletedCount": sum(
                1 for i in self.invocations.values() if i.status not in ("Pending", "InProgress")
            ),
            "ErrorCount": sum(
                1 for i in self.invocations.values() if i.status in ("Failed", "TimedOut")
            ),
            "TimeoutSeconds": self.execution_timeout,
        }


class RunCommandService:
    """The SSM operations moto lacks, keyed on the X-Amz-Target header."""

    def __init__(self) -> None:
        self.commands: dict[str, Command] = {}
        self.lock = threading.Lock()

    def handle(self, operation: str, region: str, body: dict[str, Any]) -> dict[str, Any] | None:
        handler = getattr(self, "op_" + operation, None)
        return handler(region, body) if handler else None

    def op_DescribeInstanceInformation(self, region: str, body: dict[str, Any]) -> dict[str, Any]:
        wanted: set[str] | None = None
        for item in body.get("InstanceInformationFilterList") or []:
            if item.get("key") == "InstanceIds":
                wanted = set(item.get("valueSet") or [])
        for item in body.get("Filters") or []:
            if item.get("Key") == "InstanceIds":
                wanted = set(item.get("Values") or [])
        backend = ec2_backends[DEFAULT_ACCOUNT_ID][region]
        listed = []
        for instance in backend.all_instances():
            if wanted is not None and instance.id not in wanted:
                continue
            if instance.id in OFFLINE and instance.state == "running":
                ping = "ConnectionLost"
            elif is_online(instance):
                ping = "Online"
            else:
                continue
            listed.append(
                {
                    "InstanceId": instance.id,
                    "PingStatus": ping,
                    "LastPingDateTime": now_epoch(),
                    "AgentVersion": "3.3.0.0",
                    "IsLatestVersion": True,
                    "PlatformType": "Linux",
                    "PlatformName": "Amazon Linux",
                    "PlatformVersion": "2023",
                    "ResourceType": "EC2Instance",
                    "IPAddress": instance.private_ip,
                    "ComputerName": f"ip-{instance.private_ip.replace('.', '-')}.ec2.internal",
                }
            )
        return {"InstanceInformationList": listed}

    def op_SendCommand(self, region: str, body: dict[str, Any]) -> dict[str, Any]:
        if body.get("DocumentName") != "AWS-RunShellScript":
            raise SsmError(
                "InvalidDocument", "the local AWS runs only the AWS-RunShellScript document"
            )
        instance_ids = body.get("InstanceIds") or []
        if not instance_ids:
            raise SsmError("ValidationException", "InstanceIds is required by the local AWS")
        for instance_id in instance_ids:
            if not is_online(ec2_instance(region, instance_id)):
                raise SsmError("InvalidInstanceId", f"Instances [[{instance_id}]] not in a valid state for account {DEFAULT_ACCOUNT_ID}")
        command = Command(region, body)
        for instance_id in instance_ids:
            invocation = Invocation(command, instance_id)
            command.invocations[instance_id] = invocation
            threading.Thread(target=invocation.run, daemon=True).start()
        with self.lock:
            self.commands[command.id] = command
        return {"Command": command.describe()}

    def find(self, command_id: str) -> Command:
        with self.lock:
            command = self.commands.get(command_id)
        if command is None:
            raise SsmError("InvalidCommandId", f"command {command_id} does not exist")
        return command

    def op_GetCommandInvocation(self, region: str, body: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            command = self.commands.get(body.get("CommandId", ""))
        invocation = command.invocations.get(body.get("InstanceId", "")) if command else None
        if invocation is None:
            raise SsmError("InvocationDoesNotExist", "")
        return invocation.describe()

    def op_ListCommandInvocations(self, region: str, body: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            commands = list(self.commands.values())
        if body.get("CommandId"):
            commands = [self.find(body["CommandId"])]
        listed = []
        for command in commands:
            for instance_id, invocation in command.invocations.items():
                if body.get("InstanceId") and body["InstanceId"] != instance_id:
                    continue
                detail = invocation.describe()
                entry = {
                    "CommandId": command.id,
                    "InstanceId": instance_id,
                    "Comment": command.comment,
                    "DocumentName": command.document,
                    "RequestedDateTime": command.requested,
                    "Status": detail["Status"],
                    "StatusDetails": detail["StatusDetails"],
                    "StandardOutputUrl": "",
                    "StandardErrorUrl": "",
                    "CommandPlugins": [],
                }
                if body.get("Details"):
                    entry["CommandPlugins"] = [
                        {
                            "Name": PLUGIN,
                            "Status": detail["Status"],
                            "StatusDetails": detail["StatusDetails"],
                            "ResponseCode": detail["ResponseCode"],
                            "Output": (detail["StandardOutputContent"] + detail["StandardErrorContent"])[:LIST_OUTPUT_LIMIT],
                        }
                    ]
                listed.append(entry)
        return {"CommandInvocations": listed}

    def op_ListCommands(self, region: str, body: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            commands = list(self.commands.values())
        if body.get("CommandId"):
            commands = [self.find(body["CommandId"])]
        if body.get("InstanceId"):
            commands = [c for c in commands if body["InstanceId"] in c.invocations]
        return {"Commands": [c.describe() for c in commands]}

    def op_CancelCommand(self, region: str, body: dict[str, Any]) -> dict[str, Any]:
        command = self.find(body.get("CommandId", ""))
        targets = body.get("InstanceIds") or list(command.invocations)
        for instance_id in targets:
            invocation = command.invocations.get(instance_id)
            if invocation is not None:
                invocation.cancel()
        return {}


    def take_offline(self, instance_id: str) -> None:
        OFFLINE.add(instance_id)
        with self.lock:
            commands = list(self.commands.values())
        for command in commands:
            invocation = command.invocations.get(instance_id)
            if invocation is not None and invocation.status in ("Pending", "InProgress"):
                invocation.lose()


class Faults:
    """Errors injected into chosen operations, for the fault tests."""

    def __init__(self) -> None:
        self.rules: list[dict[str, Any]] = []
        self.fired: dict[str, int] = {}
        self.lock = threading.Lock()

    def set(self, rules: list[dict[str, Any]]) -> None:
        with self.lock:
            self.rules = rules
            self.fired = {}

    def report(self) -> dict[str, Any]:
        with self.lock:
            return {"rules": self.rules, "fired": dict(self.fired), "total": sum(self.fired.values())}

    def matching(self, operation: str, attempt: int, kind: str, body: bytes = b"") -> dict[str, Any] | None:
        """A rule may also name text the request's body must contain (`body_contains`), let that
        many matching requests through first (`after`), and fire at most that many times
        (`times`)."""
        with self.lock:
            for rule in self.rules:
                if not fnmatch.fnmatchcase(operation, rule.get("operation", "")):
                    continue
                if kind == "image" and "image" not in rule:
                    continue
                if kind == "error" and "code" not in rule:
                    continue
                if kind == "stall" and "stall" not in rule:
                    continue
                if rule.get("attempts") is not None and attempt not in rule["attempts"]:
                    continue
                if rule.get("body_contains") is not None and rule["body_contains"].encode() not in body:
                    continue
                if rule.get("after", 0) > 0:
                    rule["after"] -= 1
                    continue
                if rule.get("times") is not None:
                    if rule["times"] <= 0:
                        continue
                    rule["times"] -= 1
                self.fired[operation] = self.fired.get(operation, 0) + 1
                return rule
        return None


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


def sdk_attempt(environ: dict[str, Any]) -> int:
    match = re.search(r"attempt=(\d+)", environ.get("HTTP_AMZ_SDK_REQUEST", ""))
    return int(match.group(1)) if match else 1


def error_response(start_response: Any, operation: str, rule: dict[str, Any]) -> list[bytes]:
    status = int(rule.get("status", 400))
    code = rule["code"]
    message = html.escape(rule.get("message", f"{code} (injected by the local AWS)"), quote=False)
    reason = {400: "Bad Request", 403: "Forbidden", 500: "Internal Server Error", 503: "Service Unavailable"}.get(status, "Error")
    if operation.startswith("EC2."):
        data = (
            '<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
            f"<Code>{code}</Code><Message>{message}</Message></Error></Errors>"
            f"<RequestID>{uuid.uuid4()}</RequestID></Response>"
        ).encode()
        content_type = "text/xml"
    else:
        data = json.dumps({"__type": code, "message": message}).encode()
        content_type = "application/x-amz-json-1.1"
    start_response(f"{status} {reason}", [("Content-Type", content_type), ("Content-Length", str(len(data)))])
    return [data]


class CallCounter:
    """Counts AWS API calls by operation, so a build's cost in calls can be measured."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        # The calls in the order they came, each with what it named (a parameter, a path), so
        # that what every call of a build is for can be read off (scripts/bench, the tests).
        self.sequence: list[str] = []
        self.lock = threading.Lock()

    def record(self, operation: str, raw: bytes) -> None:
        named = ""
        if operation.startswith("AmazonSSM."):
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                body = {}
            found = body.get("Name") or body.get("Path") or body.get("Names")
            named = f" {found}" if found else ""
        with self.lock:
            self.counts[operation] = self.counts.get(operation, 0) + 1
            self.sequence.append(operation + named)

    def take(self, reset: bool) -> dict[str, Any]:
        with self.lock:
            counts = dict(self.counts)
            sequence = list(self.sequence)
            if reset:
                self.counts.clear()
                self.sequence.clear()
        return {"total": sum(counts.values()), "by_operation": counts, "sequence": sequence}


def operation_of(environ: dict[str, Any], raw: bytes) -> str | None:
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    if target:
        service, _, action = target.partition(".")
        return f"{service}.{action}"
    match = re.search(rb"(?:^|&)Action=([A-Za-z0-9]+)", raw) or re.search(
        r"(?:^|&)Action=([A-Za-z0-9]+)", environ.get("QUERY_STRING", "")
    )
    if match is None:
        return None
    action = match.group(1)
    return "EC2." + (action.decode() if isinstance(action, bytes) else action)


class LocalAws:
    def __init__(self) -> None:
        self.moto = DomainDispatcherApplication(create_backend_app)
        self.run_command = RunCommandService()
        self.calls = CallCounter()
        self.throttle = Throttle()
        self.faults = Faults()
        self.authorizer = Authorizer(TEMPLATE, os.path.join(STATE_DIR, "iam-decisions.log")) if IAM else None

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD")
        length = int(environ.get("CONTENT_LENGTH") or 0)
        raw = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(raw)
        if path == "/ecs-ami-local/calls":
            taken = self.calls.take(method == "DELETE")
            taken["throttled"] = self.throttle.report(method == "DELETE")
            return respond(start_response, 200, taken)
        if path == "/ecs-ami-local/faults":
            if method in ("POST", "DELETE"):
                self.faults.set(json.loads(raw or b"{}").get("rules", []) if method == "POST" else [])
            return respond(start_response, 200, self.faults.report())
        if path == "/ecs-ami-local/iam":
            if self.authorizer is None:
                return respond(start_response, 200, {"off": True, "counts": {}, "decisions": []})
            return respond(start_response, 200, self.authorizer.report(method == "DELETE"))
        if path == "/ecs-ami-local/iam/expect-errors" and self.authorizer is not None:
            self.authorizer.expected_errors = int(json.loads(raw or b"{}").get("count", 0))
            return respond(start_response, 200, {})
        if path == "/ecs-ami-local/iam/policy" and self.authorizer is not None:
            try:
                return respond(start_response, 200, self.authorizer.configure(json.loads(raw or b"{}")))
            except CannotAuthorize as error:
                return respond(start_response, 400, {"message": str(error)})
        if path == "/ecs-ami-local/ecs/agent-started" and method == "POST":
            try:
                return respond(start_response, 200, ecs_agent_started(json.loads(raw)))
            except SsmError as error:
                return respond(start_response, 400, {"__type": error.code, "message": error.message})
        if path == "/ecs-ami-local/images" and method == "POST":
            return respond(start_response, 200, add_image(region_of(environ), json.loads(raw)))
        if path.startswith("/ecs-ami-local/offline/"):
            self.run_command.take_offline(path.rsplit("/", 1)[1])
            return respond(start_response, 200, {})
        operation = operation_of(environ, raw)
        REQUEST.copy_kms_refused = False
        REQUEST.token_repeat = False
        if operation is not None:
            self.calls.record(operation, raw)
            if caller_key(environ) != ADMIN_KEY:
                params = ec2_params(raw or environ.get("QUERY_STRING", "").encode()) if operation.startswith("EC2.") else {}
                throttled = self.throttle.admit(region_of(environ), operation, params)
                if throttled is not None:
                    return error_response(start_response, operation, throttled)
            rule = self.faults.matching(operation, sdk_attempt(environ), "error", raw)
            if rule is not None:
                return error_response(start_response, operation, rule)
            stall = self.faults.matching(operation, sdk_attempt(environ), "stall", raw)
            if stall is not None:
                # A response that does not come (a dead pooled connection): the caller's
                # per-attempt timeout must end the wait; the answer, if any, goes nowhere.
                time.sleep(float(stall["stall"]))
            if self.authorizer is not None and caller_key(environ) != ADMIN_KEY:
                refused = self.authorize(environ, operation, raw, start_response)
                if refused is not None:
                    return refused
            if caller_key(environ) != ADMIN_KEY:
                unseen = not_yet_visible(operation, raw or environ.get("QUERY_STRING", "").encode())
                if unseen is not None:
                    return error_response(start_response, operation, unseen)
        if operation == "EC2.CreateImage" and re.search(rb"BlockDeviceMapping\.\d+\.Ebs\.KmsKeyId=", raw):
            # EbsBlockDevice.KmsKeyId "is only supported on BlockDeviceMapping objects called by
            # RunInstances, RequestSpotFleet, and RequestSpotInstances" (EC2 API reference).
            rule = {"code": "InvalidParameter", "status": 400,
                    "message": "KmsKeyId is not supported in CreateImage's block device mappings"}
            return error_response(start_response, operation, rule)
        if operation == "EC2.ModifyImageAttribute":
            refused = refused_imds_support(raw)
            if refused is not None:
                return error_response(start_response, operation, refused)
            apply_image_description(region_of(environ), raw)
        if operation in ("EC2.EnableImageDeprecation", "EC2.DisableImageDeprecation"):
            return image_deprecation(start_response, operation, region_of(environ),
                                     ec2_params(raw or environ.get("QUERY_STRING", "").encode()))
        REQUEST.include_deprecated = operation == "EC2.DescribeImages" and ec2_params(
            raw or environ.get("QUERY_STRING", "").encode()).get("IncludeDeprecated", "").lower() == "true"
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if operation == "EC2.CreateImage":
            params = ec2_params(raw or environ.get("QUERY_STRING", "").encode())
            REQUEST.image_mappings = {
                params[key]: params[flag].lower() == "true"
                for key in params if re.fullmatch(r"BlockDeviceMapping\.\d+\.DeviceName", key)
                for flag in [key.replace("DeviceName", "Ebs.DeleteOnTermination")] if flag in params}
            failing = self.faults.matching(operation, sdk_attempt(environ), "image")
            if IMAGE_DELAY > 0 or failing is not None:
                return hold_image_pending(self.moto(environ, start_response), region_of(environ), failing is not None)
        if operation == "EC2.GetConsoleOutput":
            return console_output(start_response, ec2_params(raw or environ.get("QUERY_STRING", "").encode()))
        if operation == "EC2.RunInstances":
            user_data = ec2_params(raw or environ.get("QUERY_STRING", "").encode()).get("UserData")
            if user_data:
                answer = b"".join(self.moto(environ, start_response))
                for instance_id in re.findall(rb"<instanceId>(i-[0-9a-f]+)</instanceId>", answer):
                    if instance_id.decode() not in CONSOLE:
                        boot(instance_id.decode(), base64.b64decode(user_data))
                return [answer]
        if operation == "EC2.CopyImage":
            REQUEST.copy_params = ec2_params(raw or environ.get("QUERY_STRING", "").encode())
            failing = self.faults.matching(operation, sdk_attempt(environ), "image")
            if getattr(REQUEST, "copy_kms_refused", False):
                failing = {"image": "failed"}
            return hold_image_pending(self.moto(environ, start_response), region_of(environ),
                                      failing is not None, COPY_DELAY, fresh_only=True)
        if target == "AmazonSSM.PutParameter" and json.loads(raw or b"{}").get("DataType") == "aws:ec2:image":
            try:
                return respond(start_response, 200, put_image_parameter(region_of(environ), json.loads(raw)))
            except SsmError as error:
                return respond(start_response, error.status, {"__type": error.code, "message": error.message})
        if target.startswith("AmazonSSM."):
            try:
                body = json.loads(raw or b"{}")
                answer = self.run_command.handle(target.split(".", 1)[1], region_of(environ), body)
                if (answer is not None and target == "AmazonSSM.DescribeInstanceInformation"
                        and caller_key(environ) != ADMIN_KEY and PAGE_SIZE > 0):
                    answer = page_of(answer, "InstanceInformationList", "NextToken", body.get("NextToken"))
            except SsmError as error:
                return respond(start_response, error.status, {"__type": error.code, "message": error.message})
            if answer is not None:
                return respond(start_response, 200, answer)
        if caller_key(environ) != ADMIN_KEY and PAGE_SIZE > 0:
            paged = self.paged(environ, start_response, operation or "", raw)
            if paged is not None:
                return paged
        return self.moto(environ, start_response)

    def paged(self, environ: dict[str, Any], start_response: Any, operation: str, raw: bytes) -> Any:
        """The answer to a filtered EC2 Describe call or ECS ListContainerInstances in pages (see
        PAGE_SIZE): moto answers the whole list, of which the token's page is returned."""
        if operation == "AmazonEC2ContainerServiceV20141113.ListContainerInstances":
            body = json.loads(raw or b"{}")
            token = body.pop("nextToken", None)
            status, headers, answer = moto_answer(self.moto, with_body(environ, json.dumps(body).encode()))
            if not status.startswith("200"):
                return respond_raw(start_response, status, headers, answer)
            page = page_of(json.loads(answer), "containerInstanceArns", "nextToken", token)
            return respond(start_response, 200, page)
        listed = EC2_PAGED.get(operation)
        if listed is None:
            return None
        pairs = urllib.parse.parse_qsl((raw or environ.get("QUERY_STRING", "").encode()).decode(), keep_blank_values=True)
        set_name, id_param = listed
        if any(re.fullmatch(rf"{id_param}\.\d+", key) for key, _ in pairs):
            if any(key == "MaxResults" for key, _ in pairs):
                # "You cannot specify this parameter and the ... IDs parameter in the same request"
                return error_response(start_response, operation, {
                    "code": "InvalidParameterCombination", "status": 400,
                    "message": f"MaxResults cannot be given with {id_param}"})
            return None  # by id: EC2 does not page
        token = next((value for key, value in pairs if key == "NextToken"), None)
        if token is not None and not token.startswith(PAGE_TOKEN):
            return None
        rest = urllib.parse.urlencode([(k, v) for k, v in pairs if k not in ("NextToken", "MaxResults")]).encode()
        status, headers, answer = moto_answer(self.moto, with_body(environ, rest, query=not raw))
        if not status.startswith("200"):
            return respond_raw(start_response, status, headers, answer)
        root = ElementTree.fromstring(answer)
        namespace = root.tag.split("}")[0] + "}" if root.tag.startswith("{") else ""
        items_set = root.find(namespace + set_name)
        items = list(items_set) if items_set is not None else []
        page, next_token = page_items(items, token)
        if items_set is not None:
            for item in items:
                items_set.remove(item)
            items_set.extend(page)
        for old in root.findall(namespace + "nextToken"):
            root.remove(old)
        if next_token is not None:
            ElementTree.SubElement(root, namespace + "nextToken").text = next_token
        if namespace:
            ElementTree.register_namespace("", namespace.strip("{}"))
        return respond_raw(start_response, status, headers, ElementTree.tostring(root, encoding="utf-8"))

    def authorize(self, environ: dict[str, Any], operation: str, raw: bytes, start_response: Any) -> Any:
        """None when the call may go on; otherwise the answer AWS gives a refused call."""
        scope = re.search(r"Credential=[^/]+/\d{8}/[^/]+/([^/]+)/", environ.get("HTTP_AUTHORIZATION", ""))
        service = scope.group(1) if scope else ""
        if service == "ec2":
            params = ec2_params(raw or environ.get("QUERY_STRING", "").encode())
        elif service in ("ssm", "ecs"):
            params = json.loads(raw or b"{}")
        else:
            params = None
        if params is None:
            entry = {"operation": operation, "decision": "Error",
                     "error": f"service {service or '?'}: the local AWS authorizes only EC2, SSM and ECS"}
            with self.authorizer.lock:
                self.authorizer.record(entry)
        else:
            entry = self.authorizer.authorize(operation, region_of(environ), params)
        if entry["decision"] in ("Allowed", "NotFound"):
            if entry.get("consequence") and operation == "EC2.CopyImage":
                REQUEST.copy_kms_refused = True
            if entry.get("consequence") and operation == "EC2.RunInstances":
                token = ec2_params(raw).get("ClientToken")
                if token:
                    KMS_REFUSED.add(token)
            return None
        if entry["decision"] == "Error":
            rule = {"code": "LocalAwsCannotAuthorize", "status": 400,
                    "message": f"the local AWS could not evaluate {operation}: {entry.get('error', '')}"}
            return error_response(start_response, operation, rule)
        check = entry["checks"][-1]
        refused = next(r for r in check["resources"] if r["result"] != "Allowed")
        detail = (f"User: arn:aws:sts::{DEFAULT_ACCOUNT_ID}:assumed-role/function-role/ecs-ami is not "
                  f"authorized to perform: {check['action']} on resource: {refused['arn']} because no "
                  f"identity-based policy allows the {check['action']} action")
        if operation.startswith("EC2."):
            encoded = base64.b64encode(json.dumps(entry).encode()).decode()
            rule = {"code": "UnauthorizedOperation", "status": 403,
                    "message": "You are not authorized to perform this operation. " + detail
                    + ". Encoded authorization failure message: " + encoded}
        else:
            rule = {"code": "AccessDeniedException", "status": 400, "message": detail}
        return error_response(start_response, operation, rule)


# EC2's filtered Describe calls the local AWS pages: the item set of the answer, and the id
# parameter with which EC2 does not page.
EC2_PAGED = {"EC2.DescribeInstances": ("reservationSet", "InstanceId"),
             "EC2.DescribeImages": ("imagesSet", "ImageId"),
             "EC2.DescribeSnapshots": ("snapshotSet", "SnapshotId"),
             "EC2.DescribeVolumes": ("volumeSet", "VolumeId")}


def page_items(items: list[Any], token: str | None) -> tuple[list[Any], str | None]:
    """The page a token asks for: none asks for the first, which is empty and carries a token."""
    if token is None:
        return [], PAGE_TOKEN + "0"
    offset = int(token[len(PAGE_TOKEN):])
    following = offset + PAGE_SIZE
    return items[offset:following], (PAGE_TOKEN + str(following) if following < len(items) else None)


def page_of(answer: dict[str, Any], list_key: str, token_key: str, token: str | None) -> dict[str, Any]:
    if token is not None and not token.startswith(PAGE_TOKEN):
        raise SsmError("InvalidNextToken", f"the token {token} is not valid")
    page, next_token = page_items(answer.get(list_key) or [], token)
    paged = {k: v for k, v in answer.items() if k != token_key}
    paged[list_key] = page
    if next_token is not None:
        paged[token_key] = next_token
    return paged


def with_body(environ: dict[str, Any], body: bytes, query: bool = False) -> dict[str, Any]:
    """The request with another body (or query string)."""
    changed = dict(environ)
    if query:
        changed["QUERY_STRING"] = body.decode()
    else:
        changed["wsgi.input"] = io.BytesIO(body)
        changed["CONTENT_LENGTH"] = str(len(body))
    return changed


def moto_answer(app: Any, environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
    captured: dict[str, Any] = {}

    def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        captured.update(status=status, headers=headers)
        return lambda data: None

    body = b"".join(app(environ, capture))
    return captured["status"], captured["headers"], body


def respond_raw(start_response: Any, status: str, headers: list[tuple[str, str]], body: bytes) -> list[bytes]:
    start_response(status, [(k, v) for k, v in headers if k.lower() != "content-length"]
                   + [("Content-Length", str(len(body)))])
    return [body]


def hold_image_pending(answer: Any, region: str, fails: bool = False, delay: float | None = None,
                       fresh_only: bool = False) -> list[bytes]:
    """The new image is pending for `delay` (IMAGE_DELAY) seconds, then available (or failed).
    `fresh_only`: an image answered again (an idempotent repeat) keeps its state."""
    delay = IMAGE_DELAY if delay is None else delay
    body = b"".join(answer)
    match = re.search(rb"<imageId>(ami-[0-9a-f]+)</imageId>", body)
    ami = ec2_backends[DEFAULT_ACCOUNT_ID][region].amis.get(match.group(1).decode()) if match else None
    if fresh_only and ami is not None and time.time() - CREATED.get(ami.id, 0) > 1:
        ami = None
    if ami is not None and (delay > 0 or fails):
        ami.state = "pending"

        def settle() -> None:
            ami.state = "failed" if fails else "available"
            if fails:
                ami.state_reason = {"code": "Client.InternalError", "message": "Client.InternalError: snapshot failed (injected by the local AWS)"}

        timer = threading.Timer(delay, settle)
        timer.daemon = True
        timer.start()
    return [body]


def image_deprecation(start_response: Any, operation: str, region: str, params: dict[str, Any]) -> list[bytes]:
    """EnableImageDeprecation and DisableImageDeprecation, which moto lacks
    (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_EnableImageDeprecation.html):
    DeprecateAt is UTC, rounded to the nearest minute, not in the past, and at most 10 years
    ahead (2 years after its creation for a public image)."""
    image_id = params.get("ImageId", "")
    ami = ec2_backends[DEFAULT_ACCOUNT_ID][region].amis.get(image_id)
    if ami is None:
        return error_response(start_response, operation, {
            "code": "InvalidAMIID.NotFound", "message": f"The image id '[{image_id}]' does not exist"})
    if ami.owner_id != DEFAULT_ACCOUNT_ID:
        return error_response(start_response, operation, {
            "code": "AuthFailure", "message": f"Not authorized for image:{image_id}"})
    if operation == "EC2.DisableImageDeprecation":
        ami.deprecation_time = None
    else:
        try:
            at = parse_iso(params.get("DeprecateAt", ""))
        except ValueError:
            return error_response(start_response, operation, {
                "code": "InvalidParameterValue", "message": "DeprecateAt must be a UTC date and time"})
        now = time.time()
        created = ami.creation_date.replace(tzinfo=timezone.utc)
        start = created if ami.is_public else datetime.now(timezone.utc)
        years = 2 if ami.is_public else 10
        try:
            latest = start.replace(year=start.year + years).timestamp()
        except ValueError:  # 29 February
            latest = start.replace(year=start.year + years, day=28).timestamp()
        if at < now or at > latest:
            return error_response(start_response, operation, {
                "code": "InvalidParameterValue",
                "message": f"DeprecateAt must be in the future and at most {'2 years after the creation of a public image' if ami.is_public else '10 years from now'}"})
        at = round(at / 60) * 60
        ami.deprecation_time = datetime.fromtimestamp(at, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    name = operation.split(".", 1)[1]
    data = (f'<?xml version="1.0" encoding="UTF-8"?>\n<{name}Response xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">'
            f"<requestId>{uuid.uuid4()}</requestId><return>true</return></{name}Response>").encode()
    start_response("200 OK", [("Content-Type", "text/xml"), ("Content-Length", str(len(data)))])
    return [data]


def add_image(region: str, spec: dict[str, Any]) -> dict[str, Any]:
    """POST /ecs-ami-local/images: an image with a history, as a real account sees them (an owner's
    older releases, a deprecated one): its name, architecture, owner (`amazon`, public, or `self`),
    creation date and, optionally, the time it was deprecated."""
    image_id = f"ami-{uuid.uuid4().hex[:17]}"
    ami = register_image(
        region, image_id, spec["name"], spec.get("architecture", "x86_64"),
        spec.get("description", "added by the local AWS"), amazon=spec.get("owner", "amazon") == "amazon",
        # Naive UTC, as moto keeps its own.
        creation_date=datetime.fromtimestamp(parse_iso(spec["created"]), timezone.utc).replace(tzinfo=None),
    )
    ami.deprecation_time = spec.get("deprecated_at")
    return {"ImageId": image_id}


def register_image(region: str, image_id: str, name: str, architecture: str, description: str,
                   amazon: bool, creation_date: datetime | None = None) -> Ami:
    """An EBS-backed HVM image in the region: Amazon's (public, alias `amazon`) or the account's."""
    ec2 = ec2_backends[DEFAULT_ACCOUNT_ID][region]
    ami = Ami(
        ec2, image_id, name=name, description=description,
        owner_id="591542846629" if amazon else DEFAULT_ACCOUNT_ID, owner_alias="amazon" if amazon else None,
        public=amazon, virtualization_type="hvm", architecture=architecture,
        root_device_type="ebs", root_device_name="/dev/xvda", region_name=region, creation_date=creation_date,
    )
    ec2.amis[image_id] = ami
    return ami


def apply_image_description(region: str, raw: bytes) -> None:
    """moto ignores ModifyImageAttribute's Description and ImdsSupport; apply them, then let moto
    answer. ImdsSupport takes only `v2.0`, which DescribeImages then answers as ImdsSupport
    (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_ModifyImageAttribute.html)."""
    form = urllib.parse.parse_qs(raw.decode("utf-8", "replace"))
    image_id = (form.get("ImageId") or [""])[0]
    description = form.get("Description.Value")
    ami = ec2_backends[DEFAULT_ACCOUNT_ID][region].amis.get(image_id)
    if ami is not None and description is not None:
        ami.description = description[0]
    if ami is not None and form.get("ImdsSupport.Value") == ["v2.0"]:
        ami.imds_support = "v2.0"


def refused_imds_support(raw: bytes) -> dict[str, Any] | None:
    """ImdsSupport is `v2.0` or absent: EC2 cannot set another value or take it back."""
    value = urllib.parse.parse_qs(raw.decode("utf-8", "replace")).get("ImdsSupport.Value")
    if value is not None and value != ["v2.0"]:
        return {"code": "InvalidParameterValue", "message": f"Invalid value for ImdsSupport: {value[0]}"}
    return None


def put_image_parameter(region: str, body: dict[str, Any]) -> dict[str, Any]:
    """PutParameter with data type aws:ec2:image, as Parameter Store does it
    (https://docs.aws.amazon.com/systems-manager/latest/userguide/parameter-store-ec2-aliases.html):
    it answers at once with the version it would create, then validates the value
    (IMAGE_PARAMETER_DELAY later) and creates that version only if the value is an available AMI
    of the account's region; otherwise the parameter keeps what it held. A parameter cannot change
    to or from this data type (parameter-store-data-types.html)."""
    ssm = ssm_backends[DEFAULT_ACCOUNT_ID][region]
    name, value = body.get("Name", ""), body.get("Value", "")
    versions = ssm._parameters.get(name) or []
    if versions:
        if not body.get("Overwrite"):
            raise SsmError("ParameterAlreadyExists", "The parameter already exists. To overwrite this value, set the overwrite option in the request to true.")
        if versions[-1].data_type != "aws:ec2:image":
            raise SsmError("ValidationException", f"The data type of parameter {name} can't be changed to aws:ec2:image.")

    def validate() -> None:
        ami = ec2_backends[DEFAULT_ACCOUNT_ID][region].amis.get(value)
        if ami is None or ami.state != "available":
            print(f"parameter {name}: {value} is not an available image; not created or updated", flush=True)
            return
        ssm.put_parameter(name=name, description=body.get("Description"), value=value,
                          parameter_type="String", allowed_pattern=None, keyid=None, overwrite=True,
                          tags=None, data_type="aws:ec2:image", tier=None, policies=None)

    timer = threading.Timer(IMAGE_PARAMETER_DELAY, validate)
    timer.daemon = True
    timer.start()
    return {"Version": (versions[-1].version if versions else 0) + 1, "Tier": "Standard"}


def respond(start_response: Any, status: int, payload: dict[str, Any]) -> list[bytes]:
    data = json.dumps(payload).encode()
    reason = {200: "OK", 400: "Bad Request"}.get(status, "Error")
    start_response(
        f"{status} {reason}",
        [("Content-Type", "application/x-amz-json-1.1"), ("Content-Length", str(len(data)))],
    )
    return [data]


def seed(region: str) -> None:
    """What a real account has from day one: public ECS AMIs and the builder's instance profile."""
    ec2 = ec2_backends[DEFAULT_ACCOUNT_ID][region]
    ssm = ssm_backends[DEFAULT_ACCOUNT_ID][region]
    for architecture, parameter in ECS_AL2023_PARAMETERS.items():
        image_id = ssm.get_parameter(parameter).value
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port", nargs="?", type=int, default=5000)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()
    # Every authorized call writes its decision under STATE_DIR: a directory that cannot be
    # written would make each of them answer HTTP 500. Made here, or refused at once.
    try:
        os.makedirs(STATE_DIR, exist_ok=True)
        tempfile.TemporaryFile(dir=STATE_DIR).close()
    except OSError as error:
        sys.exit(f"local AWS: cannot use ECS_AMI_EMULATOR_STATE={STATE_DIR}: {error}")
    for region in SEED_REGIONS:
        seed(region.strip())
    app = LocalAws()
    # Port 0: the system picks a free port, written to STATE_DIR/port once it is listening (the
    # tests start many local AWSes at once; a port picked and released by the caller could be
    # taken by another listener before this one binds it).
    server = make_server(args.host, args.port, app, threaded=True)
    port = server.server_port
    os.environ.setdefault("MOTO_PORT", str(port))
    ENDPOINT["url"] = f"http://127.0.0.1:{port}"
    print(f"local AWS on http://{args.host}:{port} (instance state in {STATE_DIR})", flush=True)
    with open(os.path.join(STATE_DIR, "port.tmp"), "w") as handle:
        handle.write(str(port))
    os.replace(os.path.join(STATE_DIR, "port.tmp"), os.path.join(STATE_DIR, "port"))
    try:
        server.serve_forever()
    finally:
        shutil.rmtree(os.path.join(STATE_DIR, "instances"), ignore_errors=True)


if __name__ == "__main__":
    main()
