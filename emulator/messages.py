"""Reading the requests the local AWS receives and writing its answers: the region and operation
a request is for, the SDK's attempt number, moto's answer to a request, JSON and AWS-shaped error
answers, and `REQUEST`, what the request being answered says that moto's backend methods are not
told."""

from __future__ import annotations

import html
import io
import json
import re
import threading
import uuid
from typing import Any


# The request being answered, for what moto's backend methods are not told (IncludeDeprecated).
REQUEST = threading.local()


def region_of(environ: dict[str, Any]) -> str:
    auth = environ.get("HTTP_AUTHORIZATION", "")
    match = re.search(r"Credential=[^/]+/\d{8}/([a-z0-9-]+)/", auth)
    return match.group(1) if match else "us-east-1"


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


def respond(start_response: Any, status: int, payload: dict[str, Any]) -> list[bytes]:
    data = json.dumps(payload).encode()
    reason = {200: "OK", 400: "Bad Request"}.get(status, "Error")
    start_response(
        f"{status} {reason}",
        [("Content-Type", "application/x-amz-json-1.1"), ("Content-Length", str(len(data)))],
    )
    return [data]
