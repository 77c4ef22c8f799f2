"""Container registries: the OCI distribution API
(https://github.com/opencontainers/distribution-spec/blob/main/spec.md) for every registry, under
one prefix, `/ecs-ami-local/registry/{HOST}/v2/...`, HOST being the registry's host name as an
image reference writes it. The function reaches it through ECS_AMI_REGISTRY_ENDPOINT
(`{local AWS}/ecs-ami-local/registry`), an instance's docker (emulator/docker_stand_in.py)
through ECS_AMI_LOCAL_AWS.

* An ECR host (`ACCOUNT.dkr.ecr.REGION.amazonaws.com`) serves the manifests of moto's ECR in that
  region, as ECR does: authenticated as Docker does it, `Authorization: Basic base64("AWS:" +
  password)` with a password GetAuthorizationToken issued (emulator/ecr.py), and each manifest
  request authorized as ecr:BatchGetImage, each blob request as ecr:GetDownloadUrlForLayer, on
  the repository, for the principal the token was issued to
  (https://docs.aws.amazon.com/AmazonECR/latest/userguide/image-pull.html,
  https://docs.aws.amazon.com/AmazonECR/latest/userguide/registry_auth.html). The local AWS has one
  account: another account's registry has no repository (NAME_UNKNOWN) once IAM allowed the call.
* Any other host is a public registry (Docker Hub, public.ecr.aws, ...), with their anonymous
  bearer-token flow: a request without a token answers 401 and a `WWW-Authenticate: Bearer` challenge
  whose realm is `/ecs-ami-local/registry/{HOST}/token`, which answers a token for the scope asked.

Blobs are kept by digest, each linked to the repositories it was pushed to (a blob of another
repository is BLOB_UNKNOWN, as a registry answers). For the tests: `POST
/ecs-ami-local/registry/push` stores a manifest and its blobs, `POST /ecs-ami-local/registry/refuse`
makes a registry answer every request with an HTTP status."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import secrets
import threading
import time
import urllib.parse
from datetime import datetime, timezone
from typing import Any

from moto.core import DEFAULT_ACCOUNT_ID
from moto.ecr.models import ecr_backends

from authorization import Principal, ecr_repository
from ecr import ECR_TOKENS, manifest_digest, media_type_of

PREFIX = "/ecs-ami-local/registry/"
ECR_HOST = re.compile(r"(\d{12})\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?")
# The distribution spec's grammar for names, tags and digests (sha256 only here).
NAME = re.compile(r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*")
TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
DIGEST = re.compile(r"sha256:[a-f0-9]{64}")
IMAGE_TYPES = ("application/vnd.oci.image.manifest.v1+json",
               "application/vnd.docker.distribution.manifest.v2+json")
INDEX_TYPES = ("application/vnd.oci.image.index.v1+json",
               "application/vnd.docker.distribution.manifest.list.v2+json")
# How long a public registry's bearer token lasts (Docker Hub's: 300 seconds).
BEARER_LIFETIME = 300
REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
           405: "Method Not Allowed", 500: "Internal Server Error"}


class RegistryError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: list[tuple[str, str]] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or []


def reply(start_response: Any, status: int, body: bytes, headers: list[tuple[str, str]],
          head: bool = False) -> list[bytes]:
    start_response(f"{status} {REASONS.get(status, 'Error')}",
                   [*headers, ("Content-Length", str(len(body))),
                    ("Docker-Distribution-API-Version", "registry/2.0")])
    return [b""] if head else [body]


def errors_body(code: str, message: str) -> bytes:
    return json.dumps({"errors": [{"code": code, "message": message, "detail": None}]}).encode()


class Registries:
    """Every registry's repositories, blobs and tokens."""

    def __init__(self, authorizer: Any) -> None:
        # emulator/authorization.Authorizer, or None when IAM is off.
        self.authorizer = authorizer
        self.lock = threading.Lock()
        self.blobs: dict[str, bytes] = {}
        self.links: set[tuple[str, str, str]] = set()  # (host, repository, digest)
        # A public registry's repositories: host -> name -> {"manifests": {digest: (bytes,
        # media type)}, "tags": {tag: digest}}.
        self.public: dict[str, dict[str, dict[str, Any]]] = {}
        # Bearer tokens of the public registries: token -> (host, repositories it may pull, expiry).
        self.bearer: dict[str, tuple[str, frozenset[str], float]] = {}
        # Registries told to answer every request with an HTTP status (POST .../refuse).
        self.refused: dict[str, int] = {}

    # --- the test harness ------------------------------------------------------------------

    def push(self, body: dict[str, Any]) -> dict[str, Any]:
        """`POST /ecs-ami-local/registry/push` `{"registry": HOST, "repository": NAME, "tag": TAG or
        null, "manifest": TEXT, "mediaType": TYPE, "blobs": {DIGEST: BASE64}, "allowMissingBlobs":
        false}`: stores the blobs (each checked against its digest), then the manifest, exactly as
        given, and answers its digest. The manifest's config and layers must be among the blobs of
        the repository (pushed now or before), and an index's manifests must be in the
        repository, as registries refuse a manifest whose references they lack (ECR's PutImage:
        LayersNotFoundException); `allowMissingBlobs` lets a manifest name blobs never pushed.
        A descriptor's size is not checked against its blob (the client checks it on a pull), so
        that a test can claim a layer far larger than it pushes. For an ECR host the
        manifest goes to moto's ECR (the repository is created if absent); a tag already in use
        moves to the new manifest."""
        host = str(body.get("registry") or "").lower()
        name = body.get("repository") or ""
        tag = body.get("tag")
        manifest = body.get("manifest")
        if not host or "/" in host or not isinstance(name, str) or not NAME.fullmatch(name):
            raise RegistryError(400, "NAME_INVALID", f"invalid registry {host!r} or repository name {name!r}")
        if tag is not None and not (isinstance(tag, str) and TAG.fullmatch(tag)):
            raise RegistryError(400, "TAG_INVALID", f"invalid tag {tag!r}")
        if not isinstance(manifest, str):
            raise RegistryError(400, "MANIFEST_INVALID", "manifest must be the manifest's JSON text")
        try:
            parsed = json.loads(manifest)
        except ValueError as error:
            raise RegistryError(400, "MANIFEST_INVALID", f"the manifest is not JSON: {error}") from error
        media_type = body.get("mediaType") or parsed.get("mediaType")
        if media_type not in IMAGE_TYPES + INDEX_TYPES:
            raise RegistryError(400, "MANIFEST_INVALID",
                                f"media type {media_type!r} is not one the local registry serves: {IMAGE_TYPES + INDEX_TYPES}")
        if parsed.get("mediaType", media_type) != media_type:
            raise RegistryError(400, "MANIFEST_INVALID",
                                f"the manifest says mediaType {parsed.get('mediaType')}, the push {media_type}")
        blobs: dict[str, bytes] = {}
        for digest, encoded in (body.get("blobs") or {}).items():
            try:
                data = base64.b64decode(encoded, validate=True)
            except (binascii.Error, TypeError) as error:
                raise RegistryError(400, "BLOB_UPLOAD_INVALID", f"blob {digest}: not base64") from error
            actual = "sha256:" + hashlib.sha256(data).hexdigest()
            if not DIGEST.fullmatch(str(digest)) or actual != digest:
                raise RegistryError(400, "DIGEST_INVALID", f"blob {digest} has the digest {actual}")
            blobs[digest] = data
        with self.lock:
            if media_type in IMAGE_TYPES:
                descriptors = [parsed.get("config") or {}] + list(parsed.get("layers") or [])
                for descriptor in descriptors:
                    digest = descriptor.get("digest", "")
                    known = digest in blobs or (host, name, digest) in self.links
                    if not known and not body.get("allowMissingBlobs"):
                        raise RegistryError(400, "MANIFEST_BLOB_UNKNOWN", f"blob {digest!r} unknown to registry")
            else:
                for child in parsed.get("manifests") or []:
                    if self.manifest(host, name, child.get("digest", "")) is None:
                        raise RegistryError(400, "MANIFEST_UNKNOWN", f"manifest {child.get('digest')!r} of the index "
                                                                     "is not in the repository: push it first")
            for digest, data in blobs.items():
                self.blobs[digest] = data
                self.links.add((host, name, digest))
            digest = manifest_digest(manifest)
            ecr_host = ECR_HOST.fullmatch(host)
            if ecr_host is not None:
                self.push_to_ecr(ecr_host.group(1), ecr_host.group(2), name, tag, manifest, media_type)
            else:
                repository = self.public.setdefault(host, {}).setdefault(name, {"manifests": {}, "tags": {}})
                repository["manifests"][digest] = (manifest.encode("utf-8"), media_type)
                if tag is not None:
                    repository["tags"][tag] = digest
        return {"digest": digest}

    def push_to_ecr(self, account: str, region: str, name: str, tag: str | None, manifest: str, media_type: str) -> None:
        if account != DEFAULT_ACCOUNT_ID:
            raise RegistryError(400, "DENIED", f"the local AWS has one account, {DEFAULT_ACCOUNT_ID}: "
                                               f"it cannot push to account {account}'s registry")
        try:
            backend = ecr_backends[account][region]
        except KeyError as error:
            raise RegistryError(400, "NAME_INVALID", f"no ECR region {region}") from error
        if name not in backend.repositories:
            backend.create_repository(repository_name=name, registry_id=None, encryption_config=None,
                                      image_scan_config=None, image_tag_mutability=None,
                                      image_tag_mutability_exclusion_filters=None, tags=[])
        existing = next((i for i in backend.repositories[name].images if i.image_manifest == manifest), None)
        if existing is not None and (tag is None or tag in existing.image_tags):
            return  # already there, as asked
        backend.put_image(name, manifest, tag, media_type)

    def refuse(self, body: dict[str, Any]) -> dict[str, Any]:
        """`POST /ecs-ami-local/registry/refuse` `{"registry": HOST, "status": 401 | 403 | 500 |
        null}`: every request to that registry (its token endpoint too) answers the status, until
        it is set back to null."""
        host = str(body.get("registry") or "").lower()
        status = body.get("status")
        if not host or status not in (None, 401, 403, 500):
            raise RegistryError(400, "UNSUPPORTED", "registry: a host; status: 401, 403, 500 or null")
        with self.lock:
            if status is None:
                self.refused.pop(host, None)
            else:
                self.refused[host] = status
        return {"refused": dict(self.refused)}

    # --- what is stored --------------------------------------------------------------------

    def manifest(self, host: str, name: str, reference: str) -> tuple[bytes, str] | None:
        """A manifest of a repository by tag or digest: its bytes as pushed and its media type."""
        ecr_host = ECR_HOST.fullmatch(host)
        if ecr_host is None:
            repository = self.public.get(host, {}).get(name)
            if repository is None:
                return None
            digest = reference if DIGEST.fullmatch(reference) else repository["tags"].get(reference)
            return repository["manifests"].get(digest or "")
        repository = self.ecr_repository(ecr_host.group(1), ecr_host.group(2), name)
        if repository is None:
            return None
        for image in repository.images:
            if (manifest_digest(image.image_manifest) == reference if DIGEST.fullmatch(reference)
                    else reference in image.image_tags):
                return image.image_manifest.encode("utf-8"), media_type_of(image)
        return None

    def ecr_repository(self, account: str, region: str, name: str) -> Any:
        if account != DEFAULT_ACCOUNT_ID:
            return None
        try:
            return ecr_backends[account][region].repositories.get(name)
        except KeyError:
            return None

    def repository_exists(self, host: str, name: str) -> bool:
        ecr_host = ECR_HOST.fullmatch(host)
        if ecr_host is None:
            return name in self.public.get(host, {})
        return self.ecr_repository(ecr_host.group(1), ecr_host.group(2), name) is not None

    # --- the API -----------------------------------------------------------------------------

    def handle(self, environ: dict[str, Any], start_response: Any, path: str, method: str, raw: bytes) -> list[bytes]:
        try:
            if path in (PREFIX + "push", PREFIX + "refuse"):
                if method != "POST":
                    raise RegistryError(405, "UNSUPPORTED", "POST only")
                try:
                    body = json.loads(raw or b"{}")
                except ValueError as error:
                    raise RegistryError(400, "UNSUPPORTED", f"not JSON: {error}") from error
                answer = self.push(body) if path.endswith("push") else self.refuse(body)
                return reply(start_response, 200, json.dumps(answer).encode(), [("Content-Type", "application/json")])
            return self.serve(environ, start_response, path, method)
        except RegistryError as error:
            return reply(start_response, error.status, errors_body(error.code, error.message),
                         [("Content-Type", "application/json"), *error.headers], head=method == "HEAD")

    def serve(self, environ: dict[str, Any], start_response: Any, path: str, method: str) -> list[bytes]:
        host, _, rest = path[len(PREFIX):].partition("/")
        host = host.lower()
        ecr_host = ECR_HOST.fullmatch(host)
        local = f"http://{environ.get('HTTP_HOST') or environ.get('SERVER_NAME', '127.0.0.1')}"
        with self.lock:
            refused = self.refused.get(host)
        if refused is not None:
            raise self.refusal(refused, host, local, ecr_host is not None)
        if rest == "token" and ecr_host is None:
            return self.token(environ, start_response, host)
        if method not in ("GET", "HEAD"):
            raise RegistryError(405, "UNSUPPORTED", f"{method} is not served by the local registry (pulls only)")
        if rest in ("v2", "v2/"):
            self.caller(environ, host, ecr_host, local, None)
            return reply(start_response, 200, b"{}", [("Content-Type", "application/json")], head=method == "HEAD")
        match = re.fullmatch(r"v2/(?P<name>.+)/(?P<kind>manifests|blobs)/(?P<reference>[^/]+)", rest)
        if match is None:
            raise RegistryError(404, "NOT_FOUND", f"{path} is not an endpoint of the distribution API")
        name, kind, reference = match.group("name"), match.group("kind"), urllib.parse.unquote(match.group("reference"))
        if not NAME.fullmatch(name):
            raise RegistryError(400, "NAME_INVALID", f"invalid repository name {name!r}")
        principal = self.caller(environ, host, ecr_host, local, name)
        if ecr_host is not None:
            action = "ecr:BatchGetImage" if kind == "manifests" else "ecr:GetDownloadUrlForLayer"
            self.authorize(principal, ecr_host.group(2), ecr_host.group(1), name, action,
                           "Registry.GetManifest" if kind == "manifests" else "Registry.GetBlob")
        if not self.repository_exists(host, name):
            message = (f"The repository with name '{name}' does not exist in the registry with id "
                       f"'{ecr_host.group(1)}'" if ecr_host else "repository name not known to registry")
            raise RegistryError(404, "NAME_UNKNOWN", message)
        if kind == "blobs":
            if not DIGEST.fullmatch(reference):
                raise RegistryError(400, "DIGEST_INVALID", f"invalid digest {reference!r}")
            with self.lock:
                data = self.blobs.get(reference) if (host, name, reference) in self.links else None
            if data is None:
                raise RegistryError(404, "BLOB_UNKNOWN", "blob unknown to registry")
            return reply(start_response, 200, data, [("Content-Type", "application/octet-stream"),
                                                     ("Docker-Content-Digest", reference)], head=method == "HEAD")
        if not (DIGEST.fullmatch(reference) or TAG.fullmatch(reference)):
            raise RegistryError(400, "MANIFEST_INVALID", f"invalid tag or digest {reference!r}")
        with self.lock:
            found = self.manifest(host, name, reference)
        if found is None:
            raise RegistryError(404, "MANIFEST_UNKNOWN",
                                "Requested image not found" if ecr_host else "manifest unknown")
        data, media_type = found
        accepted = [part.split(";", 1)[0].strip() for part in environ.get("HTTP_ACCEPT", "").split(",") if part.strip()]
        if accepted and media_type not in accepted and "*/*" not in accepted:
            # What a registry answers when it has the manifest in no type the client accepts.
            raise RegistryError(404, "MANIFEST_UNKNOWN",
                                f"manifest unknown: the manifest is {media_type}, not among the accepted {accepted}")
        return reply(start_response, 200, data, [("Content-Type", media_type),
                                                 ("Docker-Content-Digest", manifest_digest(data))],
                     head=method == "HEAD")

    # --- who asks, and may they --------------------------------------------------------------

    def challenge(self, host: str, local: str, ecr: bool, name: str | None, error: str = "") -> list[tuple[str, str]]:
        if ecr:
            return [("WWW-Authenticate", f'Basic realm="https://{host}/",service="ecr.amazonaws.com"')]
        value = f'Bearer realm="{local}{PREFIX}{host}/token",service="{host}"'
        if name is not None:
            value += f',scope="repository:{name}:pull"'
        if error:
            value += f',error="{error}"'
        return [("WWW-Authenticate", value)]

    def refusal(self, status: int, host: str, local: str, ecr: bool) -> RegistryError:
        if status == 401:
            return RegistryError(401, "UNAUTHORIZED", "authentication required", self.challenge(host, local, ecr, None))
        if status == 403:
            return RegistryError(403, "DENIED", "requested access to the resource is denied")
        return RegistryError(status, "UNKNOWN", "unknown error (the local registry was told to refuse)")

    def caller(self, environ: dict[str, Any], host: str, ecr_host: Any, local: str, name: str | None) -> Any:
        """Who makes the request: for an ECR host the principal its token was issued to; for a
        public registry, None once its bearer token is valid for the repository."""
        authorization = environ.get("HTTP_AUTHORIZATION", "")
        if ecr_host is not None:
            scheme, _, credentials = authorization.partition(" ")
            try:
                user, _, password = base64.b64decode(credentials, validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError, ValueError):
                user, password = "", ""
            token = ECR_TOKENS.get(password) if scheme == "Basic" and user == "AWS" else None
            if token is None:
                raise RegistryError(401, "UNAUTHORIZED", "Not Authorized", self.challenge(host, local, True, name))
            if token["expires"] < time.time():
                raise RegistryError(403, "DENIED", "Your authorization token has expired. Reauthenticate and try again.")
            return token["principal"]
        scheme, _, value = authorization.partition(" ")
        with self.lock:
            held = self.bearer.get(value) if scheme == "Bearer" else None
        if held is None or held[0] != host or held[2] < time.time():
            raise RegistryError(401, "UNAUTHORIZED", "authentication required", self.challenge(host, local, False, name))
        if name is not None and name not in held[1]:
            raise RegistryError(401, "UNAUTHORIZED", "authentication required",
                                self.challenge(host, local, False, name, "insufficient_scope"))
        return None

    def token(self, environ: dict[str, Any], start_response: Any, host: str) -> list[bytes]:
        """A public registry's token endpoint, anonymous
        (https://distribution.github.io/distribution/spec/auth/token/): a token for the
        repositories the `scope` parameters ask to pull."""
        query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
        service = (query.get("service") or [host])[0]
        if service != host:
            raise RegistryError(400, "UNSUPPORTED", f"service {service!r} is not this registry's ({host})")
        repositories = set()
        for scope in query.get("scope", []):
            for part in scope.split(" "):
                kind, _, rest = part.partition(":")
                repository, _, actions = rest.rpartition(":")
                if kind == "repository" and "pull" in actions.split(","):
                    repositories.add(repository)
        token = secrets.token_urlsafe(32)
        with self.lock:
            self.bearer[token] = (host, frozenset(repositories), time.time() + BEARER_LIFETIME)
        issued = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = json.dumps({"token": token, "access_token": token, "expires_in": BEARER_LIFETIME, "issued_at": issued})
        return reply(start_response, 200, body.encode(), [("Content-Type", "application/json")])

    def authorize(self, principal: Any, region: str, account: str, name: str, action: str, operation: str) -> None:
        """A manifest or blob request to ECR, authorized as IAM would the action it stands for."""
        if principal == "admin" or self.authorizer is None:
            return
        if not isinstance(principal, Principal):
            raise RegistryError(403, "DENIED", "LocalAwsCannotAuthorize: the token was issued to no principal the "
                                               "local AWS knows")
        resource = ecr_repository(region, account, name)
        entry = self.authorizer.authorize_action(operation, region, principal,
                                                 [{"action": action, "resources": [resource]}])
        if entry["decision"] == "Allowed":
            return
        if entry["decision"] == "Denied":
            raise RegistryError(403, "DENIED", f"User: {principal.arn} is not authorized to perform: {action} on "
                                               f"resource: {resource['arn']} because no identity-based policy "
                                               f"allows the {action} action")
        raise RegistryError(403, "DENIED", f"LocalAwsCannotAuthorize: the local AWS could not evaluate {action}: "
                                           f"{entry.get('error', '')}")
