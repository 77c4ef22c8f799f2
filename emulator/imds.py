"""The instance metadata service for the processes of an instance, and the credentials of its role.

Each instance's IMDS is served under `/ecs-ami-local/imds/{INSTANCE_ID}/`, which processes inside
the instance are told through AWS_EC2_METADATA_SERVICE_ENDPOINT (the AWS SDKs' and CLI's own
setting; emulator/filesystems.py). It is IMDSv2 with tokens required
(https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/instancedata-data-retrieval.html): `PUT
latest/api/token` with `X-aws-ec2-metadata-token-ttl-seconds` (1 to 21600, else 400) answers a
token of that instance, and every GET needs one in `X-aws-ec2-metadata-token` (else 401). It
answers the instance's id, its region, and the temporary credentials of its instance profile's role
(https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/iam-roles-for-amazon-ec2.html).

A request signed with those credentials is that role's (emulator/authorization.py authorizes it
against the role's policy): `authenticate` checks it as AWS does first, the session token, the
expiry and the Signature Version 4 signature
(https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_sigv-create-signed-request.html)."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import string
import threading
import time
import urllib.parse
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from moto.core import DEFAULT_ACCOUNT_ID
from moto.ec2.models import ec2_backends

PREFIX = "/ecs-ami-local/imds/"
# How long the role's credentials last; new ones are made available at least five minutes before
# the old ones expire (iam-roles-for-amazon-ec2.html, "Retrieve security credentials").
CREDENTIAL_LIFETIME = 6 * 3600
RENEW_BEFORE = 5 * 60
MAX_TOKEN_TTL = 21600


@dataclass
class Credentials:
    access_key: str
    secret: str
    token: str
    instance: str
    role: str
    issued: float
    expires: float


LOCK = threading.Lock()
# IMDSv2 session tokens: token -> (instance id, when it expires).
TOKENS: dict[str, tuple[str, float]] = {}
# Every set of role credentials handed out, by access key id, and the current one of each
# (instance, role).
CREDENTIALS: dict[str, Credentials] = {}
CURRENT: dict[tuple[str, str], Credentials] = {}


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def find_instance(instance_id: str) -> tuple[str, Any] | None:
    for region, backend in ec2_backends[DEFAULT_ACCOUNT_ID].items():
        for instance in backend.all_instances():
            if instance.id == instance_id:
                return region, instance
    return None


def instance_profile(region: str, instance_id: str) -> Any:
    """The instance profile associated with the instance (moto keeps it as an association)."""
    association = ec2_backends[DEFAULT_ACCOUNT_ID][region].iam_instance_profile_associations.get(instance_id)
    return association.iam_instance_profile if association is not None else None


def credentials_for(instance_id: str, role: str) -> Credentials:
    with LOCK:
        current = CURRENT.get((instance_id, role))
        now = time.time()
        if current is None or current.expires - now < RENEW_BEFORE:
            alphabet = string.ascii_uppercase + string.digits
            current = Credentials(
                access_key="ASIA" + "".join(secrets.choice(alphabet) for _ in range(16)),
                secret=secrets.token_urlsafe(30)[:40],
                token=secrets.token_urlsafe(180),
                instance=instance_id, role=role, issued=now, expires=now + CREDENTIAL_LIFETIME)
            CURRENT[(instance_id, role)] = current
            CREDENTIALS[current.access_key] = current
        return current


NOT_FOUND = ('<?xml version="1.0" encoding="iso-8859-1"?>\n<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 '
             'Transitional//EN"\n\t"http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">\n'
             '<html xmlns="http://www.w3.org/1999/xhtml" xml:lang="en" lang="en">\n <head>\n  '
             '<title>{status}</title>\n </head>\n <body>\n  <h1>{status}</h1>\n </body>\n</html>\n')
REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
           405: "Method Not Allowed"}


def answer(start_response: Any, status: int, text: str, method: str = "GET",
           headers: list[tuple[str, str]] | None = None) -> list[bytes]:
    if status != 200:
        text = NOT_FOUND.format(status=f"{status} - {REASONS[status]}")
    data = text.encode()
    start_response(f"{status} {REASONS[status]}", [("Content-Type", "text/plain"), ("Content-Length", str(len(data))),
                                                   ("Server", "EC2ws"), *(headers or [])])
    return [b""] if method == "HEAD" else [data]


def serve(environ: dict[str, Any], start_response: Any, path: str, method: str) -> list[bytes]:
    """`/ecs-ami-local/imds/{INSTANCE_ID}/...`: one instance's IMDSv2."""
    instance_id, _, rest = path[len(PREFIX):].partition("/")
    found = find_instance(instance_id)
    if found is None or found[1].state not in ("pending", "running"):
        return answer(start_response, 404, "", method)
    region, instance = found
    if rest == "latest/api/token":
        if method != "PUT":
            return answer(start_response, 405, "", method)
        if environ.get("HTTP_X_FORWARDED_FOR"):
            # IMDS does not issue a token to a request that went through a proxy.
            return answer(start_response, 403, "", method)
        ttl = environ.get("HTTP_X_AWS_EC2_METADATA_TOKEN_TTL_SECONDS", "")
        if not ttl.isdigit() or not 1 <= int(ttl) <= MAX_TOKEN_TTL:
            return answer(start_response, 400, "", method)
        token = secrets.token_urlsafe(42)
        with LOCK:
            TOKENS[token] = (instance_id, time.time() + int(ttl))
        return answer(start_response, 200, token, method, [("X-Aws-Ec2-Metadata-Token-Ttl-Seconds", ttl)])
    if method not in ("GET", "HEAD"):
        return answer(start_response, 405, "", method)
    with LOCK:
        held = TOKENS.get(environ.get("HTTP_X_AWS_EC2_METADATA_TOKEN", ""))
    if held is None or held[0] != instance_id or held[1] < time.time():
        return answer(start_response, 401, "", method)
    profile = instance_profile(region, instance_id)
    roles = [role.name for role in profile.roles] if profile is not None else []
    categories = ["instance-id", "placement/"] + (["iam/"] if profile is not None else [])
    documents: dict[str, str] = {
        "latest/meta-data/": "\n".join(categories),
        "latest/meta-data/instance-id": instance_id,
        "latest/meta-data/placement/": "region",
        "latest/meta-data/placement/region": region,
    }
    if profile is not None:
        documents["latest/meta-data/iam/"] = "info\nsecurity-credentials/"
        documents["latest/meta-data/iam/info"] = json.dumps({
            "Code": "Success", "LastUpdated": iso(time.time()), "InstanceProfileArn": profile.arn,
            "InstanceProfileId": profile.id}, indent=2)
        documents["latest/meta-data/iam/security-credentials/"] = "\n".join(roles)
        for role in roles:
            documents[f"latest/meta-data/iam/security-credentials/{role}"] = "credentials"
    # A category answers with or without its trailing slash.
    document = documents.get(rest if rest in documents else rest + "/")
    if document is None:
        return answer(start_response, 404, "", method)
    if document == "credentials":
        credentials = credentials_for(instance_id, rest.rsplit("/", 1)[1])
        document = json.dumps({
            "Code": "Success", "LastUpdated": iso(credentials.issued), "Type": "AWS-HMAC",
            "AccessKeyId": credentials.access_key, "SecretAccessKey": credentials.secret,
            "Token": credentials.token, "Expiration": iso(credentials.expires)}, indent=2)
    return answer(start_response, 200, document, method)


# --- Requests signed with an instance's credentials ----------------------------------------------

# The service a request's operation belongs to, which its signature's scope must name.
SIGNING_NAMES = {"EC2": "ec2", "AmazonSSM": "ssm", "AmazonEC2ContainerServiceV20141113": "ecs",
                 "AmazonEC2ContainerRegistry_V20150921": "ecr"}


def header(environ: dict[str, Any], name: str) -> str | None:
    name = name.lower()
    if name == "content-type":
        return environ.get("CONTENT_TYPE")
    if name == "content-length":
        return environ.get("CONTENT_LENGTH")
    return environ.get("HTTP_" + name.upper().replace("-", "_"))


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).digest()


def signature_problem(environ: dict[str, Any], raw: bytes, secret: str) -> str | None:
    """None when the request's Signature Version 4 signature is the one its secret key makes;
    otherwise what is wrong. The canonical request is rebuilt from what was received."""
    match = re.fullmatch(
        r"AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request,\s*"
        r"SignedHeaders=([^,]+),\s*Signature=([0-9a-f]{64})", environ.get("HTTP_AUTHORIZATION", "").strip())
    if match is None:
        return "the Authorization header is not an AWS4-HMAC-SHA256 signature"
    _, date, region, service, signed, signature = match.groups()
    amz_date = header(environ, "x-amz-date") or ""
    if not amz_date.startswith(date):
        return "X-Amz-Date is missing or is not of the credential scope's date"
    names = signed.split(";")
    if "host" not in names:
        return "the signature does not sign the Host header"
    lines = []
    for name in names:
        value = header(environ, name)
        if value is None:
            return f"the signed header {name} is not in the request"
        lines.append(f"{name}:{' '.join(value.strip().split())}\n")
    path = (environ.get("RAW_URI") or environ.get("REQUEST_URI") or environ.get("PATH_INFO") or "/").split("?", 1)[0]
    canonical_path = urllib.parse.quote(urllib.parse.unquote(path), safe="/~") or "/"
    pairs = urllib.parse.parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    query = "&".join(f"{urllib.parse.quote(k, safe='-_.~')}={urllib.parse.quote(v, safe='-_.~')}"
                     for k, v in sorted(pairs))
    payload = header(environ, "x-amz-content-sha256") or hashlib.sha256(raw).hexdigest()
    canonical = "\n".join([environ.get("REQUEST_METHOD", "GET"), canonical_path, query, "".join(lines),
                           signed, payload])
    scope = f"{date}/{region}/{service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = _hmac(_hmac(_hmac(_hmac(("AWS4" + secret).encode(), date), region), service), "aws4_request")
    expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature):
        return "the signature is not the one the secret access key makes for this request"
    return None


def authenticate(credentials: Credentials, environ: dict[str, Any], raw: bytes,
                 operation: str | None) -> dict[str, Any] | None:
    """None when a request signed with an instance's credentials is genuine; otherwise the error
    AWS answers (https://docs.aws.amazon.com/IAM/latest/UserGuide/id_credentials_temp_use-resources.html:
    temporary credentials need their session token)."""
    if header(environ, "x-amz-security-token") != credentials.token:
        return {"code": "UnrecognizedClientException", "status": 400,
                "message": "The security token included in the request is invalid."}
    if credentials.expires < time.time():
        return {"code": "ExpiredTokenException", "status": 400,
                "message": "The security token included in the request is expired"}
    scope = re.search(r"Credential=[^/]+/\d{8}/[^/]+/([^/]+)/", environ.get("HTTP_AUTHORIZATION", ""))
    wanted = SIGNING_NAMES.get((operation or "").partition(".")[0])
    if wanted is not None and (scope is None or scope.group(1) != wanted):
        return {"code": "InvalidSignatureException", "status": 403,
                "message": f"Credential should be scoped to correct service: '{wanted}'. "}
    problem = signature_problem(environ, raw, credentials.secret)
    if problem is not None:
        return {"code": "InvalidSignatureException", "status": 403,
                "message": "The request signature we calculated does not match the signature you provided. "
                           f"Check your AWS Secret Access Key and signing method. ({problem}; local AWS)"}
    return None
