"""Each patch of moto in emulator/patches.py exists because the pinned moto differs from what AWS
documents. These tests run that moto unpatched (in process, under `mock_aws`) and assert that
each gap is still there. When a new moto closes one, its test fails with the patch's name: the
patch can go (and the local-AWS tests, which run patched, say whether anything else depended on
it)."""

import hashlib
import importlib
import inspect
import json
import os
import sys
import time

import boto3
import pytest
import yaml
from botocore.exceptions import ClientError
from moto import mock_aws

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "emulator"))

import patches  # noqa: E402

REGION = "us-east-1"
# Each patch's gap tests, by the patch's name in patches.PATCHES.
GAPS: dict[str, list[str]] = {}


def gap(patch: str):
    def register(test):
        GAPS.setdefault(patch, []).append(test.__name__)
        return test

    return register


def closed(patch: str, what: str) -> str:
    return f"moto now {what}, as AWS does: patch {patch!r} in emulator/patches.py can go"


def accepted(patch: str, what: str, call, code: str) -> None:
    """`call` goes through on moto, where AWS refuses it with `code`. Refused with that code, the
    gap is closed; with another, something else changed, and the test says so."""
    try:
        call()
    except ClientError as error:
        if error.response["Error"]["Code"] == code:
            pytest.fail(f"{closed(patch, what)} ({error})")
        raise


@pytest.fixture(autouse=True)
def unpatched():
    # Importing the local AWS's modules must not change moto: only patches.apply() does.
    assert patches.applied() == [], "a test applied the local AWS's patches in this process"
    with mock_aws():
        yield


@pytest.fixture
def ec2():
    return boto3.client("ec2", region_name=REGION)


def xvda_image(ec2) -> str:
    """An image whose root device is /dev/xvda, as Amazon Linux's are."""
    volume = ec2.create_volume(Size=8, AvailabilityZone=f"{REGION}a")["VolumeId"]
    snapshot = ec2.create_snapshot(VolumeId=volume)["SnapshotId"]
    return ec2.register_image(
        Name="xvda-root", RootDeviceName="/dev/xvda", Architecture="x86_64", VirtualizationType="hvm",
        BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": snapshot}}])["ImageId"]


def launch(ec2, image: str, **extra) -> dict:
    return ec2.run_instances(ImageId=image, InstanceType=extra.pop("InstanceType", "t3.micro"),
                             MinCount=1, MaxCount=1, **extra)["Instances"][0]


def describe(ec2, instance_id: str) -> dict:
    return ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]


@gap("run_instances")
def test_run_instances_accepts_an_instance_type_that_does_not_exist(ec2):
    """RunInstances refuses an unknown instance type (InvalidParameterValue):
    https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_RunInstances.html"""
    image = xvda_image(ec2)
    accepted("run_instances", "refuses an unknown instance type",
             lambda: launch(ec2, image, InstanceType="x9.nonexistent"), "InvalidParameterValue")


@gap("run_instances")
def test_run_instances_accepts_an_instance_type_of_another_architecture(ec2):
    """An arm64 type with an x86_64 image is refused by EC2 (InvalidParameterValue, "The architecture
    ... of the specified instance type does not match the architecture ... of the specified AMI"):
    https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_RunInstances.html"""
    image = xvda_image(ec2)
    accepted("run_instances", "refuses an instance type of another architecture",
             lambda: launch(ec2, image, InstanceType="t4g.micro"), "InvalidParameterValue")


@gap("run_instances")
@gap("repeated_launch")
def test_run_instances_ignores_client_token(ec2):
    """The same ClientToken with the same parameters answers the same instance:
    https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-idempotency.html. (The
    `repeated_launch` patch only serves `run_instances`' ClientToken: both go together.)"""
    image = xvda_image(ec2)
    first = launch(ec2, image, ClientToken="same")["InstanceId"]
    second = launch(ec2, image, ClientToken="same")["InstanceId"]
    assert first != second, closed("run_instances", "honours RunInstances' ClientToken")


@gap("run_instances")
def test_run_instances_attaches_the_root_volume_at_dev_sda1(ec2):
    """An instance's root device is its image's root device name (/dev/xvda for Amazon Linux):
    https://docs.aws.amazon.com/ebs/latest/userguide/block-device-mapping-concepts.html"""
    instance = describe(ec2, launch(ec2, xvda_image(ec2))["InstanceId"])
    assert instance["RootDeviceName"] != "/dev/xvda", closed(
        "run_instances", "names the image's root device as the instance's")


@gap("run_instances")
def test_run_instances_with_a_disabled_kms_key_runs(ec2):
    """A volume encrypted with a key that cannot be used makes the instance go from pending to
    terminated (Client.InternalError):
    https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/troubleshooting-launch.html"""
    kms = boto3.client("kms", region_name=REGION)
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    kms.disable_key(KeyId=key)
    instance = launch(ec2, xvda_image(ec2), BlockDeviceMappings=[
        {"DeviceName": "/dev/xvdb", "Ebs": {"VolumeSize": 2, "Encrypted": True, "KmsKeyId": key}}])
    described = describe(ec2, instance["InstanceId"])
    reason = described.get("StateReason", {}).get("Code", "")
    assert described["State"]["Name"] != "terminated" and reason != "Client.InternalError", closed(
        "run_instances", "fails a launch whose KMS key is disabled")


@gap("snapshot_release")
def test_a_deregistered_images_snapshot_is_deleted_at_once(ec2):
    """Right after DeregisterImage, DeleteSnapshot of its snapshots may still answer
    InvalidSnapshot.InUse. This is observed behaviour, not a documented rule: AWS documents only
    that a snapshot an AMI uses cannot be deleted until the AMI is deregistered
    (https://docs.aws.amazon.com/ebs/latest/userguide/ebs-deleting-snapshot.html) and that the API
    is eventually consistent (https://docs.aws.amazon.com/ec2/latest/devguide/eventual-consistency.html)."""
    instance = launch(ec2, xvda_image(ec2))["InstanceId"]
    image = ec2.create_image(InstanceId=instance, Name="release")["ImageId"]
    snapshots = [m["Ebs"]["SnapshotId"] for m in
                 ec2.describe_images(ImageIds=[image])["Images"][0]["BlockDeviceMappings"] if "Ebs" in m]
    ec2.deregister_image(ImageId=image)
    accepted("snapshot_release", "keeps a deregistered image's snapshots in use for a while",
             lambda: ec2.delete_snapshot(SnapshotId=snapshots[0]), "InvalidSnapshot.InUse")


@gap("create_image")
def test_create_image_accepts_a_name_in_use(ec2):
    """An AMI name is unique per account and region (InvalidAMIName.Duplicate):
    https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_CreateImage.html"""
    instance = launch(ec2, xvda_image(ec2))["InstanceId"]
    ec2.create_image(InstanceId=instance, Name="twice")
    accepted("create_image", "refuses an AMI name in use",
             lambda: ec2.create_image(InstanceId=instance, Name="twice"), "InvalidAMIName.Duplicate")


@gap("create_image")
def test_create_image_cannot_tag_the_snapshots_it_makes(ec2):
    """CreateImage's TagSpecifications may tag the AMI, the snapshots, or both:
    https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_CreateImage.html"""
    instance = launch(ec2, xvda_image(ec2))["InstanceId"]
    with pytest.raises(Exception) as raised:
        ec2.create_image(InstanceId=instance, Name="tagged", TagSpecifications=[
            {"ResourceType": "snapshot", "Tags": [{"Key": "k", "Value": "v"}]}])
    assert "NotImplemented" in type(raised.value).__name__ + str(raised.value), closed(
        "create_image", "tags the snapshots CreateImage makes")


@gap("create_image")
@gap("image_devices")
def test_an_image_maps_its_root_volume_alone(ec2):
    """CreateImage snapshots every EBS volume attached to the instance and the image maps each:
    https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_CreateImage.html"""
    instance = launch(ec2, xvda_image(ec2), BlockDeviceMappings=[
        {"DeviceName": "/dev/xvdb", "Ebs": {"VolumeSize": 2}}])["InstanceId"]
    image = ec2.create_image(InstanceId=instance, Name="two-volumes")["ImageId"]
    devices = [m["DeviceName"] for m in ec2.describe_images(ImageIds=[image])["Images"][0]["BlockDeviceMappings"]]
    assert "/dev/xvdb" not in devices, closed("image_devices", "maps every volume of the instance in its image")


@gap("merged_mappings")
def test_run_instances_does_not_merge_a_mapping_over_the_images(ec2):
    """A device the request names takes what it leaves out (the snapshot, the size) from the
    image's mapping:
    https://docs.aws.amazon.com/ebs/latest/userguide/block-device-mapping-concepts.html"""
    with pytest.raises(ClientError) as raised:
        launch(ec2, xvda_image(ec2), BlockDeviceMappings=[
            {"DeviceName": "/dev/xvda", "Ebs": {"DeleteOnTermination": True}}])
    assert raised.value.response["Error"]["Code"] == "MissingParameter", closed(
        "merged_mappings", "merges RunInstances' mappings over the image's")


@gap("copy_image")
def test_copy_image_ignores_client_token(ec2):
    """CopyImage's ClientToken makes it idempotent:
    https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_CopyImage.html"""
    image = xvda_image(ec2)
    first = ec2.copy_image(SourceImageId=image, SourceRegion=REGION, Name="copy", ClientToken="t")["ImageId"]
    second = ec2.copy_image(SourceImageId=image, SourceRegion=REGION, Name="copy", ClientToken="t")["ImageId"]
    assert first != second, closed("copy_image", "honours CopyImage's ClientToken")


@gap("copy_image")
def test_copy_image_takes_a_kms_key_without_encrypted(ec2):
    """KmsKeyId is valid only with Encrypted (the API reference's KmsKeyId)."""
    image = xvda_image(ec2)
    kms = boto3.client("kms", region_name=REGION)
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    accepted("copy_image", "refuses KmsKeyId without Encrypted", lambda: ec2.copy_image(
        SourceImageId=image, SourceRegion=REGION, Name="keyed", KmsKeyId=key), "InvalidParameterCombination")


@gap("deprecated_images")
def test_moto_has_no_image_deprecation(ec2):
    """DescribeImages leaves out other owners' deprecated images unless IncludeDeprecated is set
    (the owner always sees its own), and EnableImageDeprecation sets when an image is deprecated:
    https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DescribeImages.html,
    https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/ami-deprecate.html"""
    from moto.ec2.models.amis import AmiBackend

    # moto's DescribeImages has no notion of deprecation to filter on...
    assert "include_deprecated" not in inspect.signature(AmiBackend.describe_images).parameters, closed(
        "deprecated_images", "filters DescribeImages by deprecation")
    # ...and no way to deprecate an image.
    with pytest.raises(Exception) as raised:
        ec2.enable_image_deprecation(ImageId=xvda_image(ec2), DeprecateAt="2020-01-01T00:00:00Z")
    assert "not been implemented" in str(raised.value), closed("deprecated_images", "deprecates images")


@gap("terminated_container_instances")
def test_a_terminated_container_instance_stays_registered(ec2):
    """ECS deregisters a container instance whose EC2 instance is terminated:
    https://docs.aws.amazon.com/AmazonECS/latest/developerguide/deregister_container_instance.html"""
    ecs = boto3.client("ecs", region_name=REGION)
    ecs.create_cluster(clusterName="cluster")
    instance = launch(ec2, xvda_image(ec2))["InstanceId"]
    ecs.register_container_instance(
        cluster="cluster", instanceIdentityDocument=json.dumps({"instanceId": instance, "region": REGION}))
    ec2.terminate_instances(InstanceIds=[instance])
    listed = ecs.list_container_instances(cluster="cluster")["containerInstanceArns"]
    assert len(listed) == 1, closed("terminated_container_instances", "deregisters terminated instances")


@gap("short_form_functions")
def test_a_short_form_function_over_a_mapping_stays_a_yaml_node():
    """`!Base64` over `Fn::Sub: ...` is `{"Fn::Base64": {"Fn::Sub": ...}}`:
    https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/intrinsic-function-reference-base64.html"""
    import moto.cloudformation.utils

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("", moto.cloudformation.utils.yaml_tag_constructor)
    loaded = yaml.load("Value: !Base64\n  Fn::Sub: text\n", Loader=Loader)
    assert loaded["Value"] != {"Fn::Base64": {"Fn::Sub": "text"}}, closed(
        "short_form_functions", "reads a short-form function over a mapping")


@pytest.fixture
def ecr():
    client = boto3.client("ecr", region_name=REGION)
    client.create_repository(repositoryName="app")
    return client


def oci_manifest(layer: str = "a", indent: int | None = None) -> str:
    """An OCI image manifest's text (its blobs need not exist: moto does not check them)."""
    return json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + "c" * 64, "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": "sha256:" + layer * 64,
                    "size": 3}]}, indent=indent)


@gap("ecr_image_digest")
def test_an_ecr_image_digest_is_not_its_manifests(ecr):
    """An image's digest is the SHA-256 of its manifest as pushed:
    https://docs.aws.amazon.com/AmazonECR/latest/APIReference/API_ImageIdentifier.html ("The
    sha256 digest of the image manifest"); two manifests of the same layers are two images."""
    manifest = oci_manifest(indent=3)
    digest = ecr.put_image(repositoryName="app", imageManifest=manifest, imageTag="1")["image"]["imageId"]["imageDigest"]
    assert digest != "sha256:" + hashlib.sha256(manifest.encode()).hexdigest(), closed(
        "ecr_image_digest", "digests an image by its manifest's SHA-256")


@gap("ecr_tag_moves")
def test_a_tag_pushed_again_deletes_the_earlier_image(ecr):
    """A tag pushed again with another manifest (mutable tags) moves to it, and the earlier
    image stays, untagged, until a lifecycle rule on untagged images or a deletion removes it:
    https://docs.aws.amazon.com/AmazonECR/latest/userguide/LifecyclePolicies.html"""
    first = ecr.put_image(repositoryName="app", imageManifest=oci_manifest("a"), imageTag="1")["image"]["imageId"]
    ecr.put_image(repositoryName="app", imageManifest=oci_manifest("b"), imageTag="1")
    found = ecr.batch_get_image(repositoryName="app", imageIds=[{"imageDigest": first["imageDigest"]}])
    assert found["images"] == [], closed("ecr_tag_moves", "keeps the earlier image untagged")


@gap("ecr_batch_get_image")
def test_batch_get_image_names_a_missing_digest_as_a_tag(ecr):
    """An image not found is a failure naming the image id asked for:
    https://docs.aws.amazon.com/AmazonECR/latest/APIReference/API_ImageFailure.html"""
    missing = "sha256:" + "0" * 64
    failures = ecr.batch_get_image(repositoryName="app", imageIds=[{"imageDigest": missing}])["failures"]
    assert failures[0]["imageId"] != {"imageDigest": missing}, closed(
        "ecr_batch_get_image", "names the missing digest in BatchGetImage's failure")


@gap("ecr_batch_get_image")
def test_batch_get_image_ignores_accepted_media_types(ecr):
    """acceptedMediaTypes: an image whose manifest is of another type (and cannot be converted)
    is a failure `UnsupportedImageType`:
    https://docs.aws.amazon.com/AmazonECR/latest/APIReference/API_BatchGetImage.html"""
    ecr.put_image(repositoryName="app", imageManifest=oci_manifest(), imageTag="1")
    answer = ecr.batch_get_image(repositoryName="app", imageIds=[{"imageTag": "1"}],
                                 acceptedMediaTypes=["application/vnd.docker.distribution.manifest.v2+json"])
    assert len(answer["images"]) == 1 and answer["failures"] == [], closed(
        "ecr_batch_get_image", "honours acceptedMediaTypes")


@gap("ecr_batch_get_image")
def test_batch_get_image_answers_another_registry_from_the_local_one(ecr):
    """registryId names the registry (account) of the repository:
    https://docs.aws.amazon.com/AmazonECR/latest/APIReference/API_BatchGetImage.html. The local
    account's repository is not another account's."""
    ecr.put_image(repositoryName="app", imageManifest=oci_manifest(), imageTag="1")
    accepted("ecr_batch_get_image", "looks repositories up in the registry registryId names",
             lambda: ecr.batch_get_image(repositoryName="app", registryId="210987654321", imageIds=[{"imageTag": "1"}]),
             "RepositoryNotFoundException")


@gap("ecr_authorization_token")
def test_get_authorization_token_answers_one_expired_password(ecr):
    """Each token represents the caller's credentials and is valid for 12 hours:
    https://docs.aws.amazon.com/AmazonECR/latest/APIReference/API_GetAuthorizationToken.html,
    https://docs.aws.amazon.com/AmazonECR/latest/APIReference/API_AuthorizationData.html"""
    first = ecr.get_authorization_token()["authorizationData"][0]
    second = ecr.get_authorization_token()["authorizationData"][0]
    assert first["authorizationToken"] == second["authorizationToken"], closed(
        "ecr_authorization_token", "issues a token per call")
    assert first["expiresAt"].timestamp() < time.time(), closed("ecr_authorization_token", "answers a valid expiry")


def test_every_patch_has_a_gap_test_and_every_gap_a_patch():
    assert sorted(GAPS) == sorted(p.name for p in patches.PATCHES)


def test_importing_the_local_aws_changes_nothing_in_moto():
    """Only `patches.apply()` patches moto: these tests rely on it."""
    from moto.ec2.models.amis import AmiBackend
    from moto.ec2.models.instances import InstanceBackend
    from moto.ecr.models import ECRBackend, Image
    from moto.ecr.responses import ECRResponse

    for module in ("images", "launches", "ecr", "registry", "imds", "local_aws"):
        importlib.import_module(module)

    for owner, attribute in [(AmiBackend, "create_image"), (AmiBackend, "copy_image"),
                             (AmiBackend, "describe_images"), (AmiBackend, "deregister_image"),
                             (InstanceBackend, "run_instances"), (InstanceBackend, "terminate_instances"),
                             (ECRBackend, "put_image"), (Image, "_create_digest"),
                             (ECRResponse, "batch_get_image"), (ECRResponse, "get_authorization_token")]:
        assert getattr(owner, attribute).__module__.startswith("moto."), attribute
