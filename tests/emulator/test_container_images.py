"""Container images on the local AWS: the registries' distribution API (emulator/registry.py), ECR's
API as AWS answers it (emulator/ecr.py), an instance's metadata service and role credentials
(emulator/imds.py), the instance role's authorization (emulator/authorization.py), and the
ECS-optimized images' docker stand-in (emulator/docker_stand_in.py), against one local AWS started
for this module (as scripts/local-aws starts it; root, for the instances' file systems).

The rules are AWS's and the distribution spec's:
https://github.com/opencontainers/distribution-spec/blob/main/spec.md,
https://docs.aws.amazon.com/AmazonECR/latest/userguide/image-pull.html,
https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/instancedata-data-retrieval.html."""

import base64
import hashlib
import http.server
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import boto3
import pytest
from botocore.exceptions import ClientError

HERE = os.path.dirname(os.path.abspath(__file__))
EMULATOR = os.path.join(HERE, "..", "..", "emulator", "local_aws.py")
DOCKER = os.path.join(HERE, "..", "..", "emulator", "docker_stand_in.py")
ACCOUNT = "123456789012"
ECR_HOST = f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com"
HUB = "registry-1.docker.io"
OCI = "application/vnd.oci.image.manifest.v1+json"
DOCKER_V2 = "application/vnd.docker.distribution.manifest.v2+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
APP = f"arn:aws:ecr:us-east-1:{ACCOUNT}:repository/app"


@pytest.fixture(scope="module")
def endpoint():
    if os.geteuid() != 0:
        pytest.skip("the local AWS runs instances' commands in mount namespaces: root only")
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as state:
        env = dict(os.environ, ECS_AMI_EMULATOR_STATE=state, ECS_AMI_EMULATOR_ONLINE_DELAY="0")
        env.pop("ECS_AMI_EMULATOR_IAM", None)
        local_aws = subprocess.Popen([sys.executable, EMULATOR, "0"], env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 60
            while not os.path.exists(os.path.join(state, "port")):
                assert local_aws.poll() is None, local_aws.stderr.read()
                assert time.monotonic() < deadline, "the local AWS did not start"
                time.sleep(0.1)
            with open(os.path.join(state, "port")) as handle:
                yield f"http://127.0.0.1:{handle.read().strip()}"
        finally:
            local_aws.terminate()
            local_aws.wait(timeout=30)


def call(endpoint, method, path, body=None, headers=None):
    """(status, headers, body) of a request, whatever the status."""
    data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(endpoint + path, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, answer.headers, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def client(endpoint, service, key="local-admin", secret="x", token=None):
    return boto3.client(service, endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=key,
                        aws_secret_access_key=secret, aws_session_token=token)


def set_role(endpoint, body):
    status, _, answer = call(endpoint, "POST", "/ecs-ami-local/iam/policy", body)
    assert status == 200, answer
    return json.loads(answer)


def decisions(endpoint):
    return json.loads(call(endpoint, "DELETE", "/ecs-ami-local/iam")[2])["decisions"]


def digest_of(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def image(architecture="amd64", layer=b"layer", media_type=OCI):
    """(manifest text, blobs) of a one-layer image."""
    config = json.dumps({"architecture": architecture, "os": "linux", "created": "2026-01-01T00:00:00Z",
                         "rootfs": {"type": "layers", "diff_ids": [digest_of(layer)]}, "config": {}}).encode()
    config_type = ("application/vnd.oci.image.config.v1+json" if media_type == OCI
                   else "application/vnd.docker.container.image.v1+json")
    layer_type = ("application/vnd.oci.image.layer.v1.tar+gzip" if media_type == OCI
                  else "application/vnd.docker.image.rootfs.diff.tar.gzip")
    manifest = json.dumps({"schemaVersion": 2, "mediaType": media_type,
                           "config": {"mediaType": config_type, "digest": digest_of(config), "size": len(config)},
                           "layers": [{"mediaType": layer_type, "digest": digest_of(layer), "size": len(layer)}]},
                          indent=2)
    return manifest, {digest_of(config): config, digest_of(layer): layer}


def push(endpoint, registry, repository, tag, manifest, blobs, media_type=OCI, **extra):
    body = {"registry": registry, "repository": repository, "tag": tag, "manifest": manifest,
            "mediaType": media_type, "blobs": {d: base64.b64encode(b).decode() for d, b in blobs.items()}, **extra}
    status, _, answer = call(endpoint, "POST", "/ecs-ami-local/registry/push", body)
    return status, json.loads(answer)


def errors(answer):
    return [e["code"] for e in json.loads(answer)["errors"]]


def bearer(endpoint, challenge):
    """The token a public registry's challenge leads to."""
    fields = dict(part.split("=", 1) for part in challenge[len("Bearer "):].replace('"', "").split(","))
    query = urllib.parse.urlencode({"service": fields["service"], "scope": fields.get("scope", "")})
    status, _, answer = call("", "GET", fields["realm"] + "?" + query)
    assert status == 200, answer
    granted = json.loads(answer)
    assert granted["token"] == granted["access_token"]
    return granted["token"]


# --- the distribution API --------------------------------------------------------------------------

def test_a_public_registry_serves_manifests_and_blobs_with_its_bearer_token(endpoint):
    manifest, blobs = image(layer=b"nginx layer")
    status, pushed = push(endpoint, HUB, "library/nginx", "1.27", manifest, blobs)
    assert status == 200 and pushed == {"digest": digest_of(manifest.encode())}, pushed
    path = f"/ecs-ami-local/registry/{HUB}/v2/library/nginx/manifests/1.27"
    status, headers, answer = call(endpoint, "GET", path)
    assert status == 401 and errors(answer) == ["UNAUTHORIZED"]
    challenge = headers["WWW-Authenticate"]
    assert challenge == (f'Bearer realm="{endpoint}/ecs-ami-local/registry/{HUB}/token",service="{HUB}",'
                         f'scope="repository:library/nginx:pull"')
    token = bearer(endpoint, challenge)
    auth = {"Authorization": f"Bearer {token}"}
    status, headers, answer = call(endpoint, "GET", path, headers=auth)
    assert status == 200 and answer == manifest.encode()
    assert headers["Content-Type"] == OCI and headers["Docker-Content-Digest"] == pushed["digest"]
    # HEAD: the same headers, no body.
    status, headers, answer = call(endpoint, "HEAD", path, headers=auth)
    assert (status, answer, headers["Content-Length"]) == (200, b"", str(len(manifest)))
    # By digest; Accept honoured (none: any type).
    by_digest = path.replace("1.27", pushed["digest"])
    assert call(endpoint, "GET", by_digest, headers=auth)[2] == manifest.encode()
    assert call(endpoint, "GET", path, headers={**auth, "Accept": f"{DOCKER_V2}, {OCI}"})[0] == 200
    status, _, answer = call(endpoint, "GET", path, headers={**auth, "Accept": DOCKER_V2})
    assert status == 404 and errors(answer) == ["MANIFEST_UNKNOWN"]
    # Blobs of the repository, by digest.
    for digest, data in blobs.items():
        status, headers, answer = call(endpoint, "GET", f"/ecs-ami-local/registry/{HUB}/v2/library/nginx/blobs/{digest}",
                                       headers=auth)
        assert (status, answer, headers["Docker-Content-Digest"]) == (200, data, digest)
    status, _, answer = call(endpoint, "GET", f"/ecs-ami-local/registry/{HUB}/v2/library/nginx/blobs/sha256:{'0' * 64}",
                             headers=auth)
    assert status == 404 and errors(answer) == ["BLOB_UNKNOWN"]
    status, _, answer = call(endpoint, "GET", path.replace("1.27", "9.9"), headers=auth)
    assert status == 404 and errors(answer) == ["MANIFEST_UNKNOWN"]
    # The token is for that repository of that registry.
    status, headers, _ = call(endpoint, "GET", f"/ecs-ami-local/registry/{HUB}/v2/library/redis/manifests/7", headers=auth)
    assert status == 401 and 'error="insufficient_scope"' in headers["WWW-Authenticate"]
    status, _, _ = call(endpoint, "GET", "/ecs-ami-local/registry/public.ecr.aws/v2/library/nginx/manifests/1.27",
                        headers=auth)
    assert status == 401
    # A repository the registry does not have.
    other = f"/ecs-ami-local/registry/{HUB}/v2/library/redis/manifests/7"
    token = bearer(endpoint, call(endpoint, "GET", other)[1]["WWW-Authenticate"])
    status, _, answer = call(endpoint, "GET", other, headers={"Authorization": f"Bearer {token}"})
    assert status == 404 and errors(answer) == ["NAME_UNKNOWN"]
    # The ping needs a token too.
    assert call(endpoint, "GET", f"/ecs-ami-local/registry/{HUB}/v2/")[0] == 401


def test_a_push_is_checked_as_a_registry_checks_it(endpoint):
    manifest, blobs = image(layer=b"checked")
    config, layer = list(blobs)
    wrong = {config: blobs[config], layer: b"not the layer"}
    status, answer = push(endpoint, "public.ecr.aws", "team/app", "1", manifest, wrong)
    assert status == 400 and answer["errors"][0]["code"] == "DIGEST_INVALID", answer
    status, answer = push(endpoint, "public.ecr.aws", "team/app", "1", manifest, {config: blobs[config]})
    assert status == 400 and answer["errors"][0]["code"] == "MANIFEST_BLOB_UNKNOWN", answer
    # A manifest whose blobs are never pulled, when the push says so.
    status, answer = push(endpoint, "public.ecr.aws", "team/app", "1", manifest, {}, allowMissingBlobs=True)
    assert status == 200, answer
    # Sizes are the puller's to check: a layer may claim more than was pushed (a size test).
    claimed = manifest.replace(f'"size": {len(b"checked")}', '"size": 42949672960')
    assert claimed != manifest
    status, answer = push(endpoint, "public.ecr.aws", "team/app", "huge", claimed, blobs)
    assert status == 200, answer
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI, "digest": "sha256:" + "1" * 64, "size": 10, "platform": {"architecture": "amd64", "os": "linux"}}]})
    status, answer = push(endpoint, "public.ecr.aws", "team/app", "multi", index, {}, media_type=OCI_INDEX)
    assert status == 400 and answer["errors"][0]["code"] == "MANIFEST_UNKNOWN", answer


def test_a_tag_pushed_again_moves_and_the_earlier_manifest_stays(endpoint):
    first, blobs = image(layer=b"first")
    second, more = image(layer=b"second")
    for registry in (HUB, ECR_HOST):
        assert push(endpoint, registry, "moving", "v", first, blobs)[0] == 200
        assert push(endpoint, registry, "moving", "v", second, more)[0] == 200
        assert pulled_manifest(endpoint, registry, "moving", "v") == second.encode()
        assert pulled_manifest(endpoint, registry, "moving", digest_of(first.encode())) == first.encode()
    ecr = client(endpoint, "ecr")
    listed = ecr.list_images(repositoryName="moving")["imageIds"]
    assert sorted((i.get("imageTag", ""), i["imageDigest"]) for i in listed) == sorted(
        [("", digest_of(first.encode())), ("v", digest_of(second.encode()))])


def pulled_manifest(endpoint, registry, name, reference):
    """A manifest as a client with the administrator's credentials reads it."""
    path = f"/ecs-ami-local/registry/{registry}/v2/{name}/manifests/{reference}"
    if registry == ECR_HOST:
        token = client(endpoint, "ecr").get_authorization_token()["authorizationData"][0]["authorizationToken"]
        headers = {"Authorization": f"Basic {token}"}
    else:
        headers = {"Authorization": f"Bearer {bearer(endpoint, call(endpoint, 'GET', path)[1]['WWW-Authenticate'])}"}
    status, _, answer = call(endpoint, "GET", path, headers=headers)
    assert status == 200, answer
    return answer


def test_a_registry_told_to_refuse_answers_that_status(endpoint):
    manifest, blobs = image(layer=b"refused")
    push(endpoint, "quay.io", "team/refused", "1", manifest, blobs)
    path = "/ecs-ami-local/registry/quay.io/v2/team/refused/manifests/1"
    for status in (500, 403, 401):
        assert call(endpoint, "POST", "/ecs-ami-local/registry/refuse", {"registry": "quay.io", "status": status})[0] == 200
        got, headers, answer = call(endpoint, "GET", path)
        assert got == status, answer
        assert call(endpoint, "GET", "/ecs-ami-local/registry/quay.io/token?service=quay.io")[0] == status
    assert headers["WWW-Authenticate"].startswith("Bearer ")
    call(endpoint, "POST", "/ecs-ami-local/registry/refuse", {"registry": "quay.io", "status": None})
    assert pulled_manifest(endpoint, "quay.io", "team/refused", "1") == manifest.encode()


def test_ecr_registry_needs_an_authorization_token(endpoint):
    manifest, blobs = image(layer=b"private")
    push(endpoint, ECR_HOST, "app", "1.4", manifest, blobs)
    path = f"/ecs-ami-local/registry/{ECR_HOST}/v2/app/manifests/1.4"
    status, headers, answer = call(endpoint, "GET", path)
    assert status == 401 and errors(answer) == ["UNAUTHORIZED"]
    assert headers["WWW-Authenticate"] == f'Basic realm="https://{ECR_HOST}/",service="ecr.amazonaws.com"'
    forged = base64.b64encode(b"AWS:not-a-token").decode()
    assert call(endpoint, "GET", path, headers={"Authorization": f"Basic {forged}"})[0] == 401
    assert pulled_manifest(endpoint, ECR_HOST, "app", "1.4") == manifest.encode()
    # Each GetAuthorizationToken is a token of its own.
    ecr = client(endpoint, "ecr")
    assert len({ecr.get_authorization_token()["authorizationData"][0]["authorizationToken"] for _ in range(2)}) == 2
    # docker login checks the password with the registry, as docker does.
    with tempfile.TemporaryDirectory() as home:
        env = {"PATH": os.environ.get("PATH", ""), "HOME": home, "ECS_AMI_LOCAL_AWS": endpoint}
        login = subprocess.run([DOCKER, "login", "-u", "AWS", "--password-stdin", ECR_HOST], input="not-a-token\n",
                               env=env, capture_output=True, text=True, timeout=60)
        assert login.returncode == 1 and "failed with status: 401 Unauthorized" in login.stderr, login
        assert not os.path.exists(os.path.join(home, ".docker", "config.json"))
    # Another account's registry has no repository here.
    other = path.replace(ACCOUNT, "210987654321")
    token = client(endpoint, "ecr").get_authorization_token()["authorizationData"][0]["authorizationToken"]
    status, _, answer = call(endpoint, "GET", other, headers={"Authorization": f"Basic {token}"})
    assert status == 404 and errors(answer) == ["NAME_UNKNOWN"]


# --- ECR's and ECS's API, from the function ----------------------------------------------------------

def test_the_functions_batch_get_image_is_authorized_and_answered_as_aws_does(endpoint):
    manifest, blobs = image(layer=b"resolved")
    push(endpoint, ECR_HOST, "app", "2.0", manifest, blobs)
    function = client(endpoint, "ecr", key="function")
    decisions(endpoint)
    with pytest.raises(ClientError) as refused:
        function.batch_get_image(repositoryName="app", imageIds=[{"imageTag": "2.0"}])
    assert refused.value.response["Error"]["Code"] == "AccessDeniedException"
    set_role(endpoint, {"parameters": {"ContainerImageRepositories": APP}})
    try:
        missing = "sha256:" + "0" * 64
        answer = function.batch_get_image(repositoryName="app", imageIds=[{"imageTag": "2.0"}, {"imageDigest": missing}],
                                          acceptedMediaTypes=[OCI, DOCKER_V2])
        assert [i["imageId"] for i in answer["images"]] == [{"imageDigest": digest_of(manifest.encode()), "imageTag": "2.0"}]
        assert answer["images"][0]["imageManifest"] == manifest
        assert answer["images"][0]["imageManifestMediaType"] == OCI
        assert answer["failures"] == [{"imageId": {"imageDigest": missing}, "failureCode": "ImageNotFound",
                                       "failureReason": "Requested image not found"}]
        answer = function.batch_get_image(repositoryName="app", imageIds=[{"imageTag": "2.0"}],
                                          acceptedMediaTypes=[DOCKER_V2])
        assert answer["images"] == [] and answer["failures"][0]["failureCode"] == "UnsupportedImageType"
        answer = function.batch_get_image(repositoryName="app", imageIds=[{}, {"imageDigest": "sha256:not-hex"}])
        assert [f["failureCode"] for f in answer["failures"]] == ["MissingDigestAndTag", "InvalidImageDigest"]
        # Allowed by IAM, but no such repository: ECR's own error.
        set_role(endpoint, {"parameters": {"ContainerImageRepositories": f"{APP},arn:aws:ecr:us-east-1:{ACCOUNT}:repository/gone,"
                                                                          "arn:aws:ecr:us-east-1:210987654321:repository/app"}})
        for registry, name in ((ACCOUNT, "gone"), ("210987654321", "app")):
            with pytest.raises(ClientError) as refused:
                function.batch_get_image(registryId=registry, repositoryName=name, imageIds=[{"imageTag": "1"}])
            assert refused.value.response["Error"] == {
                "Code": "RepositoryNotFoundException",
                "Message": f"The repository with name '{name}' does not exist in the registry with id '{registry}'"}
        kinds = [(d["operation"], d["decision"]) for d in decisions(endpoint)]
        assert ("AmazonEC2ContainerRegistry_V20150921.BatchGetImage", "Denied") in kinds
        assert all(d == "Allowed" for op, d in kinds[1:]), kinds
    finally:
        set_role(endpoint, {})


def test_put_image_refuses_a_digest_that_is_not_its_manifests(endpoint):
    manifest, _ = image(layer=b"put")
    ecr = client(endpoint, "ecr")
    ecr.create_repository(repositoryName="put")
    with pytest.raises(ClientError) as refused:
        ecr.put_image(repositoryName="put", imageManifest=manifest, imageTag="1", imageDigest="sha256:" + "0" * 64)
    assert refused.value.response["Error"]["Code"] == "ImageDigestDoesNotMatchException"
    put = ecr.put_image(repositoryName="put", imageManifest=manifest, imageTag="1",
                        imageDigest=digest_of(manifest.encode()))
    assert put["image"]["imageId"]["imageDigest"] == digest_of(manifest.encode())


def test_the_function_reads_task_definitions_only_when_the_template_lets_it(endpoint):
    client(endpoint, "ecs").register_task_definition(
        family="web", containerDefinitions=[{"name": "web", "image": f"{ECR_HOST}/app:1.4", "memory": 128}])
    function = client(endpoint, "ecs", key="function")
    with pytest.raises(ClientError) as refused:
        function.describe_task_definition(taskDefinition="web")
    assert refused.value.response["Error"]["Code"] == "AccessDeniedException"
    set_role(endpoint, {"parameters": {"ReadTaskDefinitions": "true"}})
    try:
        answer = function.describe_task_definition(taskDefinition="web:1", include=["TAGS"])
        assert [c["image"] for c in answer["taskDefinition"]["containerDefinitions"]] == [f"{ECR_HOST}/app:1.4"]
        assert decisions(endpoint)[-1]["checks"][0]["resources"][0]["arn"] == "*"
    finally:
        set_role(endpoint, {})


# --- instances: metadata, credentials, their role ----------------------------------------------------

def launch(endpoint, profile="ecs-ami-builder"):
    image = client(endpoint, "ssm").get_parameter(
        Name="/aws/service/ecs/optimized-ami/amazon-linux-2023/recommended/image_id")["Parameter"]["Value"]
    extra = {"IamInstanceProfile": {"Name": profile}} if profile else {}
    return client(endpoint, "ec2").run_instances(ImageId=image, InstanceType="t3.micro", MinCount=1, MaxCount=1,
                                                 **extra)["Instances"][0]["InstanceId"]


def metadata(endpoint, instance, path, token=None):
    headers = {"X-aws-ec2-metadata-token": token} if token else {}
    return call(endpoint, "GET", f"/ecs-ami-local/imds/{instance}/latest/{path}", headers=headers)


def imds_token(endpoint, instance, ttl="60"):
    status, _, answer = call(endpoint, "PUT", f"/ecs-ami-local/imds/{instance}/latest/api/token", b"",
                             {"X-aws-ec2-metadata-token-ttl-seconds": ttl})
    return status, answer.decode()


def role_credentials(endpoint, instance):
    _, token = imds_token(endpoint, instance)
    role = metadata(endpoint, instance, "meta-data/iam/security-credentials/", token)[2].decode()
    return json.loads(metadata(endpoint, instance, f"meta-data/iam/security-credentials/{role}", token)[2])


def as_instance(endpoint, instance, service="ecr"):
    credentials = role_credentials(endpoint, instance)
    return client(endpoint, service, credentials["AccessKeyId"], credentials["SecretAccessKey"], credentials["Token"])


def test_imds_v2_answers_an_instance_its_own_metadata_and_role_credentials(endpoint):
    builder, bare = launch(endpoint), launch(endpoint, profile=None)
    for ttl in ("", "0", "21601", "x"):
        assert imds_token(endpoint, builder, ttl)[0] == 400, ttl
    status, token = imds_token(endpoint, builder, "21600")
    assert status == 200 and token
    # Tokens required (IMDSv2), and a token is its instance's.
    assert metadata(endpoint, builder, "meta-data/instance-id")[0] == 401
    assert metadata(endpoint, builder, "meta-data/instance-id", "forged")[0] == 401
    assert metadata(endpoint, bare, "meta-data/instance-id", token)[0] == 401
    assert metadata(endpoint, builder, "meta-data/instance-id", token)[2] == builder.encode()
    assert metadata(endpoint, builder, "meta-data/placement/region", token)[2] == b"us-east-1"
    assert metadata(endpoint, builder, "meta-data/iam/security-credentials/", token)[2] == b"ecs-ami-BuilderRole-LOCAL"
    credentials = role_credentials(endpoint, builder)
    assert sorted(credentials) == ["AccessKeyId", "Code", "Expiration", "LastUpdated", "SecretAccessKey", "Token", "Type"]
    assert credentials["Code"] == "Success" and credentials["Type"] == "AWS-HMAC"
    assert credentials["AccessKeyId"].startswith("ASIA") and len(credentials["AccessKeyId"]) == 20
    assert metadata(endpoint, builder, "meta-data/iam/security-credentials/other-role", token)[0] == 404
    _, bare_token = imds_token(endpoint, bare)
    assert metadata(endpoint, bare, "meta-data/iam/security-credentials/", bare_token)[0] == 404


def test_an_instances_credentials_are_checked_as_aws_checks_them(endpoint):
    builder = launch(endpoint)
    credentials = role_credentials(endpoint, builder)
    set_role(endpoint, {"parameters": {"ContainerImageRepositories": APP}})
    try:
        key, secret, token = credentials["AccessKeyId"], credentials["SecretAccessKey"], credentials["Token"]
        assert client(endpoint, "ecr", key, secret, token).get_authorization_token()["authorizationData"]
        for wrong, code in (((key, secret, None), "UnrecognizedClientException"),
                            ((key, "not-the-secret", token), "InvalidSignatureException")):
            with pytest.raises(ClientError) as refused:
                client(endpoint, "ecr", *wrong).get_authorization_token()
            assert refused.value.response["Error"]["Code"] == code
        # Anything but the ECR pulls is refused loudly.
        call(endpoint, "POST", "/ecs-ami-local/iam/expect-errors", {"count": 1})
        with pytest.raises(ClientError) as refused:
            client(endpoint, "ec2", key, secret, token).describe_instances()
        assert refused.value.response["Error"]["Code"] == "LocalAwsCannotAuthorize"
        assert "ec2:DescribeInstances by an instance" in refused.value.response["Error"]["Message"]
    finally:
        set_role(endpoint, {})


def test_a_builder_pulls_as_its_role_allows(endpoint):
    manifest, blobs = image(layer=b"pulled by the builder")
    push(endpoint, ECR_HOST, "app", "3.0", manifest, blobs)
    builder = launch(endpoint)
    # Without ContainerImageRepositories, BuilderRole has no ECR statement at all.
    with pytest.raises(ClientError) as refused:
        as_instance(endpoint, builder).get_authorization_token()
    assert refused.value.response["Error"]["Code"] == "AccessDeniedException"
    assert f"assumed-role/ecs-ami-BuilderRole-LOCAL/{builder}" in refused.value.response["Error"]["Message"]
    set_role(endpoint, {"parameters": {"ContainerImageRepositories": APP}})
    decisions(endpoint)
    try:
        token = as_instance(endpoint, builder).get_authorization_token()["authorizationData"][0]
        assert token["proxyEndpoint"] == f"https://{ECR_HOST}"
        assert token["expiresAt"].timestamp() > time.time() + 11 * 3600
        auth = {"Authorization": f"Basic {token['authorizationToken']}"}
        base = f"/ecs-ami-local/registry/{ECR_HOST}/v2/app"
        assert call(endpoint, "GET", f"{base}/manifests/3.0", headers=auth)[2] == manifest.encode()
        layer = list(blobs)[1]
        assert call(endpoint, "GET", f"{base}/blobs/{layer}", headers=auth)[2] == blobs[layer]
        made = [(d["operation"], d["principal"], d["checks"][0]["action"], d["decision"]) for d in decisions(endpoint)]
        principal = f"arn:aws:sts::{ACCOUNT}:assumed-role/ecs-ami-BuilderRole-LOCAL/{builder}"
        assert made == [("AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken", principal, "ecr:GetAuthorizationToken", "Allowed"),
                        ("Registry.GetManifest", principal, "ecr:BatchGetImage", "Allowed"),
                        ("Registry.GetBlob", principal, "ecr:GetDownloadUrlForLayer", "Allowed")]
        # The same token, once the role no longer names the repository: refused as AWS refuses.
        set_role(endpoint, {"parameters": {"ContainerImageRepositories": APP}, "without": ["PullContainerImages"]})
        for path, action in ((f"{base}/manifests/3.0", "ecr:BatchGetImage"), (f"{base}/blobs/{layer}", "ecr:GetDownloadUrlForLayer")):
            status, _, answer = call(endpoint, "GET", path, headers=auth)
            assert status == 403 and errors(answer) == ["DENIED"], answer
            assert f"is not authorized to perform: {action} on resource: {APP}" in answer.decode()
    finally:
        set_role(endpoint, {})


def test_other_instance_roles(endpoint):
    # TestInstanceRole's AmazonEC2ContainerServiceforEC2Role grants the ECR pull actions on "*".
    tester = launch(endpoint, profile="ecs-ami-test-instance")
    assert as_instance(endpoint, tester).get_authorization_token()["authorizationData"]
    # A role template.yaml does not define cannot be evaluated: refused loudly.
    iam = client(endpoint, "iam")
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                     "Principal": {"Service": "ec2.amazonaws.com"}}]}
    iam.create_role(RoleName="someone-elses", AssumeRolePolicyDocument=json.dumps(trust))
    iam.create_instance_profile(InstanceProfileName="someone-elses")
    iam.add_role_to_instance_profile(InstanceProfileName="someone-elses", RoleName="someone-elses")
    stranger = launch(endpoint, profile="someone-elses")
    call(endpoint, "POST", "/ecs-ami-local/iam/expect-errors", {"count": 1})
    with pytest.raises(ClientError) as refused:
        as_instance(endpoint, stranger).get_authorization_token()
    assert refused.value.response["Error"]["Code"] == "LocalAwsCannotAuthorize"


# --- the docker stand-in ----------------------------------------------------------------------------

def run_on(endpoint, instance, script):
    """(exit code, stdout, stderr) of a script run with SSM on the instance."""
    ssm = client(endpoint, "ssm")
    command = ssm.send_command(InstanceIds=[instance], DocumentName="AWS-RunShellScript",
                               Parameters={"commands": [script]})["Command"]["CommandId"]
    deadline = time.monotonic() + 60
    while True:
        answer = ssm.get_command_invocation(CommandId=command, InstanceId=instance)
        if answer["Status"] not in ("Pending", "InProgress"):
            return answer["ResponseCode"], answer["StandardOutputContent"], answer["StandardErrorContent"]
        assert time.monotonic() < deadline, "the command did not end"
        time.sleep(0.2)


# What the product's pull step does on a builder: ECR credentials from the instance's role
# (IMDSv2, then GetAuthorizationToken signed with curl), docker login, pull by digest, tag.
LOGIN = r'''
set -euo pipefail
imds="$AWS_EC2_METADATA_SERVICE_ENDPOINT"
token=$(curl -fsS -X PUT "${imds}latest/api/token" -H "X-aws-ec2-metadata-token-ttl-seconds: 300")
role=$(curl -fsS -H "X-aws-ec2-metadata-token: $token" "${imds}latest/meta-data/iam/security-credentials/")
credentials=$(curl -fsS -H "X-aws-ec2-metadata-token: $token" "${imds}latest/meta-data/iam/security-credentials/$role")
field() { python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1" <<<"$credentials"; }
region=$(curl -fsS -H "X-aws-ec2-metadata-token: $token" "${imds}latest/meta-data/placement/region")
answer=$(curl -fsS --aws-sigv4 "aws:amz:$region:ecr" --user "$(field AccessKeyId):$(field SecretAccessKey)" \
  -H "x-amz-security-token: $(field Token)" -H "Content-Type: application/x-amz-json-1.1" \
  -H "X-Amz-Target: AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken" -d '{}' "$AWS_ENDPOINT_URL_ECR/")
python3 -c 'import base64, json, sys; print(base64.b64decode(json.load(sys.stdin)["authorizationData"][0]["authorizationToken"]).decode().split(":", 1)[1])' <<<"$answer" \
  | docker login --username AWS --password-stdin HOST
'''


def test_the_docker_stand_in_pulls_tags_and_keeps_images_in_the_instance(endpoint):
    manifest, blobs = image(layer=b"baked")
    digest = push(endpoint, ECR_HOST, "baked", "1.0", manifest, blobs)[1]["digest"]
    hub_manifest, hub_blobs = image(architecture="arm64", layer=b"hub layer")
    hub_digest = push(endpoint, HUB, "library/busybox", "1.36", hub_manifest, hub_blobs)[1]["digest"]
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI, "digest": hub_digest, "size": len(hub_manifest),
         "platform": {"architecture": "arm64", "os": "linux"}}]})
    push(endpoint, HUB, "library/busybox", "multi", index, {}, media_type=OCI_INDEX)
    config_digest = json.loads(manifest)["config"]["digest"]
    set_role(endpoint, {"parameters": {"ContainerImageRepositories": f"arn:aws:ecr:us-east-1:{ACCOUNT}:repository/baked"}})
    try:
        builder = launch(endpoint)
        script = LOGIN.replace("HOST", ECR_HOST) + f'''
docker pull {ECR_HOST}/baked@{digest}
docker tag {ECR_HOST}/baked@{digest} {ECR_HOST}/baked:1.0
docker image inspect --format '{{{{.Id}}}} {{{{.Architecture}}}} {{{{index .RepoDigests 0}}}} {{{{join .RepoTags ","}}}}' {ECR_HOST}/baked@{digest}
docker pull busybox:1.36 >/dev/null
docker images
docker logout {ECR_HOST}
python3 -c 'import json; print("auths:", json.load(open("/root/.docker/config.json"))["auths"])'
'''
        code, out, err = run_on(endpoint, builder, script)
        assert code == 0, out + err
        lines = out.splitlines()
        assert lines[0] == "Login Succeeded"
        assert lines[1] == f"{digest}: Pulling from baked"
        assert f"Digest: {digest}" in lines
        assert f"Status: Downloaded newer image for {ECR_HOST}/baked@{digest}" in lines
        assert f"{ECR_HOST}/baked@{digest}" in lines
        assert f"{config_digest} amd64 {ECR_HOST}/baked@{digest} {ECR_HOST}/baked:1.0" in lines
        table = lines[lines.index(next(line for line in lines if line.startswith("REPOSITORY"))):]
        assert table[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
        assert any(row.split()[:3] == [f"{ECR_HOST}/baked", "1.0", config_digest[7:19]] for row in table)
        assert any(row.split()[:2] == ["busybox", "1.36"] for row in table)
        assert f"Removing login credentials for {ECR_HOST}" in lines
        assert lines[-1] == "auths: {}"
        # Errors as docker words them, exit 1.
        for command, message in (
                (LOGIN.replace("HOST", ECR_HOST) + f"docker pull {ECR_HOST}/baked:9.9",
                 f"manifest for {ECR_HOST}/baked:9.9 not found: manifest unknown: Requested image not found"),
                ("docker pull busybox:multi", "no matching manifest for linux/amd64 in the manifest list entries"),
                (f"docker image inspect {ECR_HOST}/baked:9.9", f"Error: No such image: {ECR_HOST}/baked:9.9"),
                ("docker run busybox", "not implemented by the local AWS's docker stand-in")):
            code, out, err = run_on(endpoint, builder, command)
            assert code == 1 and message in err, (command, out, err)
        # Without login: ECR asks for credentials.
        code, _, err = run_on(endpoint, builder, f"docker logout {ECR_HOST}; docker pull {ECR_HOST}/baked:1.0")
        assert code == 1 and "no basic auth credentials" in err, err
        # The role without the repository: denied, as docker reports it.
        set_role(endpoint, {"parameters": {"ContainerImageRepositories": APP}})
        code, out, err = run_on(endpoint, builder, LOGIN.replace("HOST", ECR_HOST) + f"docker pull {ECR_HOST}/baked:1.0")
        assert code == 1 and "denied: User: arn:aws:sts::" in err and "ecr:BatchGetImage" in err, out + err
        # The image made from the builder has the pulled image; an instance launched from it
        # inspects it by digest without the network.
        ec2 = client(endpoint, "ec2")
        baked = ec2.create_image(InstanceId=builder, Name="with-containers")["ImageId"]
        instance = ec2.run_instances(ImageId=baked, InstanceType="t3.micro", MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
        code, out, err = run_on(endpoint, instance, f"unset ECS_AMI_LOCAL_AWS; docker image inspect --format '{{{{.Id}}}}' {ECR_HOST}/baked@{digest}")
        assert (code, out.strip()) == (0, config_digest), err
    finally:
        set_role(endpoint, {})


class Tampering(http.server.BaseHTTPRequestHandler):
    """A registry that answers other bytes than the digest asked for (a manifest, or a blob)."""

    answers: dict[str, tuple[str, bytes]] = {}

    def do_GET(self):  # noqa: N802 (http.server's name)
        content_type, body = self.answers.get(self.path, ("application/json", b'{"errors": [{"code": "NOT_FOUND"}]}'))
        self.send_response(200 if self.path in self.answers else 404)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_the_docker_stand_in_refuses_what_does_not_match_its_digest():
    manifest, blobs = image(layer=b"genuine")
    config, layer = list(blobs)
    base = "/ecs-ami-local/registry/quay.io/v2/team/app"
    tampered_manifest = manifest + "\n"
    Tampering.answers = {
        f"{base}/manifests/{digest_of(manifest.encode())}": (OCI, tampered_manifest.encode()),
        f"{base}/manifests/1": (OCI, manifest.encode()),
        f"{base}/blobs/{config}": ("application/octet-stream", blobs[config]),
        f"{base}/blobs/{layer}": ("application/octet-stream", b"tampered"),
    }
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Tampering)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with tempfile.TemporaryDirectory() as home:
            env = {"PATH": os.environ.get("PATH", ""), "HOME": home, "ECS_AMI_DOCKER_DATA_ROOT": home,
                   "ECS_AMI_LOCAL_AWS": f"http://127.0.0.1:{server.server_port}"}
            for reference, message in ((f"quay.io/team/app@{digest_of(manifest.encode())}", "manifest verification failed"),
                                       ("quay.io/team/app:1", "digest mismatch")):
                pulled = subprocess.run([DOCKER, "pull", reference], env=env, capture_output=True, text=True, timeout=60)
                assert pulled.returncode == 1 and message in pulled.stderr, pulled
            assert not os.path.exists(os.path.join(home, "stand-in", "images.json"))
    finally:
        server.shutdown()
