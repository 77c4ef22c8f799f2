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

For container images: `/ecs-ami-local/registry/{HOST}/v2/...` is every registry's distribution
API (ECR's hosts from moto's ECR, authenticated by ECR's authorization tokens and authorized as
the principal each was issued to; other hosts public, with a bearer-token challenge), and `POST
/ecs-ami-local/registry/push` and `.../refuse` set them up for the tests; `/ecs-ami-local/imds/{INSTANCE_ID}/`
is each instance's metadata service (IMDSv2), whose role credentials make an instance's calls its
role's; the seeded images have a `docker` stand-in.

Every other request goes to moto unchanged.

This module is the entry point and the router. Each behaviour lives in a module of its own in
emulator/ (`launches`, `images`, `consistency`, `filesystems`, `boot`, `run_command`, `ecs`,
`ecr`, `registry`, `imds`, `parameters`, `paging`, `faults`, `calls`, `seed`, `cloudformation`,
with `settings` and `messages`; `docker_stand_in` runs inside instances); every change to moto's
internals is in `patches`, installed by `main()`.
"""

from __future__ import annotations

# The patches replace moto's internals as the pinned version has them: the version is checked
# before moto is imported, since another one may fail at an import or a patch first.
import versions  # noqa: E402 (emulator/versions.py, beside this file)

_MOTO_PROBLEM = versions.mismatch("moto")
if _MOTO_PROBLEM:
    import sys

    sys.exit(f"local AWS: {_MOTO_PROBLEM}")


import argparse
import base64
import io
import json
import os
import re
import shutil
import sys
import tempfile
import time
import urllib.parse
from typing import Any
from xml.etree import ElementTree

from moto.core import DEFAULT_ACCOUNT_ID
from moto.moto_server.werkzeug_app import create_backend_app, DomainDispatcherApplication
from werkzeug.serving import make_server

from authorization import (ADMIN_KEY, WATCHER, WATCHER_KEY, Authorizer, caller_key, CannotAuthorize, ec2_params, FUNCTION, instance_principal,
                           Principal)
from boot import CONSOLE, boot, console_output
from calls import CallCounter
from consistency import not_yet_visible
from ecs import ecs_agent_started
from faults import Faults
from filesystems import ENDPOINT
from images import (add_image, apply_image_description, hold_image_pending, image_deprecation, refused_imds_support)
import imds
from launches import KMS_REFUSED
from messages import (REQUEST, error_response, moto_answer, operation_of, region_of, respond, respond_raw, sdk_attempt, with_body)
import patches
from paging import EC2_PAGED, page_items, page_of
from parameters import put_image_parameter
from registry import PREFIX as REGISTRY_PREFIX, Registries
from run_command import RunCommandService, SsmError
from seed import seed
from settings import COPY_DELAY, IAM, IMAGE_DELAY, PAGE_SIZE, PAGE_TOKEN, SEED_REGIONS, STATE_DIR, TEMPLATE
from throttling import Throttle


class LocalAws:
    def __init__(self) -> None:
        self.moto = DomainDispatcherApplication(create_backend_app)
        self.run_command = RunCommandService()
        self.calls = CallCounter()
        self.throttle = Throttle()
        self.faults = Faults()
        self.authorizer = Authorizer(TEMPLATE, os.path.join(STATE_DIR, "iam-decisions.log")) if IAM else None
        self.registries = Registries(self.authorizer)

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
        if path.startswith(REGISTRY_PREFIX):
            return self.registries.handle(environ, start_response, path, method, raw)
        if path.startswith(imds.PREFIX):
            return imds.serve(environ, start_response, path, method)
        operation = operation_of(environ, raw)
        REQUEST.copy_kms_refused = False
        REQUEST.token_repeat = False
        # Who calls: the administrator, the function, someone following builds (WatchBuildsPolicy),
        # or an instance's role with the credentials
        # its metadata service handed out (checked as AWS checks temporary credentials).
        principal: Principal | None = {ADMIN_KEY: None, WATCHER_KEY: WATCHER}.get(caller_key(environ), FUNCTION)
        credentials = imds.CREDENTIALS.get(caller_key(environ))
        if credentials is not None:
            problem = imds.authenticate(credentials, environ, raw, operation)
            if problem is not None:
                return error_response(start_response, operation or "", problem)
            principal = instance_principal(credentials.role, credentials.instance)
        # For what moto's backend is not told (the principal an ECR token is issued to).
        REQUEST.principal = principal if principal is not None else "admin"
        if operation is not None:
            # The calls counted are the builds' (and the harness's): a watcher's looks are not.
            if caller_key(environ) != WATCHER_KEY:
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
            if self.authorizer is not None and principal is not None:
                refused = self.authorize(environ, operation, raw, start_response, principal)
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

    def authorize(self, environ: dict[str, Any], operation: str, raw: bytes, start_response: Any,
                  principal: Principal) -> Any:
        """None when the call may go on; otherwise the answer AWS gives a refused call."""
        scope = re.search(r"Credential=[^/]+/\d{8}/[^/]+/([^/]+)/", environ.get("HTTP_AUTHORIZATION", ""))
        service = scope.group(1) if scope else ""
        if service == "ec2":
            params = ec2_params(raw or environ.get("QUERY_STRING", "").encode())
        elif service in ("ssm", "ecs", "ecr"):
            params = json.loads(raw or b"{}")
        else:
            params = None
        if params is None:
            entry = {"operation": operation, "decision": "Error", "principal": principal.arn,
                     "error": f"service {service or '?'}: the local AWS authorizes only EC2, SSM, ECS and ECR"}
            with self.authorizer.lock:
                self.authorizer.record(entry)
        else:
            entry = self.authorizer.authorize(operation, region_of(environ), params, principal)
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
        caller = (principal.arn if principal.is_instance
                  else f"arn:aws:sts::{DEFAULT_ACCOUNT_ID}:assumed-role/function-role/ecs-ami")
        detail = (f"User: {caller} is not "
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
    patches.apply()
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
