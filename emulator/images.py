"""Images as EC2 documents them and moto does not: CreateImage and CopyImage rules, every EBS device
in an image's mappings, RunInstances' mappings merged over the image's, deprecation,
descriptions, ImdsSupport, images pending for a while, and the images the tests add."""

from __future__ import annotations

import re
import threading
import time
import urllib.parse
import uuid
from datetime import datetime, timezone
from typing import Any

from moto.core import DEFAULT_ACCOUNT_ID
from moto.ec2.exceptions import EC2ClientError
from moto.ec2.models import ec2_backends
from moto.ec2.models.amis import Ami

from authorization import tag_specifications
from consistency import CREATED
from filesystems import IMAGE_LAYERS, image_layer
from launches import kms_key_usable
from messages import REQUEST, error_response
from settings import IMAGE_DELAY


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


# Each image's EBS devices besides its root (see as_ec2_creates_images), by image id.
IMAGE_DEVICES: dict[str, list[dict[str, Any]]] = {}


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
