"""IAM authorization for the local AWS: every request made with the function's credentials is
evaluated against the function's role policy as written in template.yaml, by a real IAM
evaluation engine (@cloud-copilot/iam-simulate, run as a helper process: emulator/iam/), before
moto sees it.

The part written here is only what the engine cannot know: which resources a request names and
which condition keys it carries, read from the request and from the local AWS's state (the
resources' current tags, the instance profile's role, the default subnet and security group).
It follows the Service Authorization Reference for Amazon EC2 and AWS Systems Manager
(https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonec2.html,
.../list_awssystemsmanager.html): RunInstances authorizes the image, the new instance and its
volumes and network interface (ARNs ending in `*`, the ids being unknown yet), the security
groups and the subnet; CreateImage the new image, the instance and the new snapshots. Image and
snapshot ARNs have no account (`arn:aws:ec2:REGION::snapshot/ID`); so do AWS-owned SSM documents
and public parameters. Tags given in TagSpecifications are authorized as ec2:CreateTags with
`ec2:CreateAction` (https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/supported-iam-actions-tagging.html),
and passing the instance profile's role as iam:PassRole with `iam:PassedToService`.

Credentials decide who calls: the access key id `local-admin` is the test harness or an
operator (allowed everything, not logged); a key the local AWS handed to an instance through its
metadata service (emulator/imds.py) is that instance's role, evaluated against that role's policy
as template.yaml writes it (`Principal`, `instance_role_policy`), for the ECR pulls only;
`local-watcher` is a person following builds with `ecs-ami watch`, whose one policy is
template.yaml's WatchBuildsPolicy; any other key is the function. A request the engine cannot evaluate (an operation not mapped here, a
resource type missing, an instance role or an action of one the local AWS does not model) is
answered with an error and logged, never allowed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import urllib.parse
from dataclasses import dataclass
from typing import Any

from moto.core import DEFAULT_ACCOUNT_ID
from moto.ec2.models import ec2_backends
from moto.ecr.models import ecr_backends
from moto.iam.models import iam_backends
from moto.kms.models import kms_backends

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "templates"))
from cfn_template import (  # noqa: E402  (the template tests' own resolver)
    Resolver, function_role_statements, load, role_managed_policies, role_statements)

ADMIN_KEY = "local-admin"
# The access key id of someone following builds with `ecs-ami watch`: a user with nothing but
# template.yaml's WatchBuildsPolicy attached.
WATCHER_KEY = "local-watcher"
WATCH_POLICY = "WatchBuildsPolicy"
TALLY = os.environ.get("ECS_AMI_EMULATOR_IAM_TALLY")
STACK_NAME = os.environ.get("ECS_AMI_EMULATOR_STACK", "ecs-ami")
FUNCTION_ROLE = f"arn:aws:iam::{DEFAULT_ACCOUNT_ID}:role/{STACK_NAME}-FunctionRole-LOCAL"
BUILDER_ROLE_NAME = f"{STACK_NAME}-BuilderRole-LOCAL"
BUILDER_ROLE = f"arn:aws:iam::{DEFAULT_ACCOUNT_ID}:role/{BUILDER_ROLE_NAME}"
TEST_ROLE_NAME = f"{STACK_NAME}-TestInstanceRole-LOCAL"
TEST_ROLE = f"arn:aws:iam::{DEFAULT_ACCOUNT_ID}:role/{TEST_ROLE_NAME}"
UNHANDLED_QUEUE = f"arn:aws:sqs:us-east-1:{DEFAULT_ACCOUNT_ID}:{STACK_NAME}-UnhandledEvents-LOCAL"


class CannotAuthorize(Exception):
    """The request cannot be evaluated: a test must fail on it, not pass."""


class Missing(Exception):
    """The request names a resource that does not exist: EC2 answers `...NotFound` for it, which
    the local AWS leaves to moto."""


def template_resolver(template: dict[str, Any], parameters: dict[str, str] | None) -> Resolver:
    """template.yaml's intrinsics resolved for the local account, region and stack, with the
    roles' ARNs as the local AWS seeds them."""
    return Resolver(template, parameters or {}, stack_name=STACK_NAME,
                    attributes={"BuilderRole.Arn": BUILDER_ROLE, "TestInstanceRole.Arn": TEST_ROLE,
                                "UnhandledEvents.Arn": UNHANDLED_QUEUE})


def role_policy(template_path: str, parameters: dict[str, str] | None = None) -> dict[str, Any]:
    """The function's role policy from template.yaml, intrinsics resolved for the local account,
    region and stack, with BuilderRole's ARN as the local AWS seeds it."""
    template = load(template_path)
    resolver = template_resolver(template, parameters)
    return {"Version": "2012-10-17", "Statement": function_role_statements(template, resolver)}


# --- Instances' roles ------------------------------------------------------------------------------
#
# A process on an instance calls AWS with the credentials of the instance profile's role, which it
# reads from the instance metadata service (emulator/imds.py): those calls are that role's. The
# local AWS evaluates them for the ECR pulls a builder makes (an authorization token, then each
# manifest and layer; https://docs.aws.amazon.com/AmazonECR/latest/userguide/image-pull.html) and
# for nothing else: any other action of an instance is refused as one it cannot evaluate.
INSTANCE_ACTIONS = ("ecr:GetAuthorizationToken", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer")
# The seeded roles (emulator/seed.py) and the template.yaml resources they stand for.
INSTANCE_ROLES = {BUILDER_ROLE_NAME: "BuilderRole", TEST_ROLE_NAME: "TestInstanceRole"}
# The AWS managed policies those roles attach, as far as INSTANCE_ACTIONS go: the statements of
# each that grant one of them, from the AWS Managed Policy Reference. AmazonSSMManagedInstanceCore
# grants ssm, ssmmessages and ec2messages actions only
# (https://docs.aws.amazon.com/aws-managed-policy/latest/reference/AmazonSSMManagedInstanceCore.html);
# AmazonEC2ContainerServiceforEC2Role grants the ECR pull actions on every repository
# (https://docs.aws.amazon.com/aws-managed-policy/latest/reference/AmazonEC2ContainerServiceforEC2Role.html).
# A managed policy not listed here makes its role one the local AWS cannot evaluate.
MANAGED_ECR_STATEMENTS: dict[str, list[dict[str, Any]]] = {
    "AmazonSSMManagedInstanceCore": [],
    "service-role/AmazonEC2ContainerServiceforEC2Role": [{
        "Sid": "AmazonEC2ContainerServiceforEC2Role", "Effect": "Allow",
        "Action": ["ecr:GetAuthorizationToken", "ecr:BatchCheckLayerAvailability",
                   "ecr:GetDownloadUrlForLayer", "ecr:BatchGetImage"],
        "Resource": "*"}],
}


def instance_role_policy(template: dict[str, Any], resolver: Resolver, logical_id: str) -> dict[str, Any]:
    """An instance role's policy as template.yaml writes it, for INSTANCE_ACTIONS: its own
    statements and the ECR statements of its managed policies."""
    statements = role_statements(template, resolver, logical_id)
    for arn in role_managed_policies(template, resolver, logical_id):
        name = arn.split(":policy/", 1)[-1]
        if name not in MANAGED_ECR_STATEMENTS:
            raise CannotAuthorize(f"{logical_id} attaches {arn}, which the local AWS does not model "
                                  "(emulator/authorization.py, MANAGED_ECR_STATEMENTS)")
        statements += MANAGED_ECR_STATEMENTS[name]
    return {"Version": "2012-10-17", "Statement": statements}


def instance_role_policies(template_path: str, parameters: dict[str, str] | None) -> dict[str, Any]:
    """Each seeded instance role's policy, or why it cannot be evaluated (a string)."""
    template = load(template_path)
    resolver = template_resolver(template, parameters)
    policies: dict[str, Any] = {}
    for role, logical_id in INSTANCE_ROLES.items():
        try:
            policies[role] = instance_role_policy(template, resolver, logical_id)
        except (CannotAuthorize, KeyError) as error:
            policies[role] = str(error)
    return policies


@dataclass(frozen=True)
class Principal:
    """Who makes a request: the function (its role), or an instance's role (the session EC2 makes
    for the instance profile, named after the instance)."""

    arn: str
    role: str = ""        # an instance's role name; empty for the function
    instance: str = ""
    policy: str = ""      # a template.yaml managed policy that is the caller's whole identity policy

    @property
    def is_instance(self) -> bool:
        return bool(self.role)


FUNCTION = Principal(FUNCTION_ROLE)
WATCHER = Principal(f"arn:aws:iam::{DEFAULT_ACCOUNT_ID}:user/watcher", policy=WATCH_POLICY)


def managed_policy(template_path: str, logical_id: str, parameters: dict[str, str] | None = None) -> dict[str, Any]:
    """An AWS::IAM::ManagedPolicy's document from template.yaml, intrinsics resolved."""
    template = load(template_path)
    resolver = template_resolver(template, parameters)
    return resolver.resolve(template["Resources"][logical_id]["Properties"]["PolicyDocument"])


def instance_principal(role: str, instance_id: str) -> Principal:
    return Principal(f"arn:aws:sts::{DEFAULT_ACCOUNT_ID}:assumed-role/{role}/{instance_id}", role, instance_id)


def caller_key(environ: dict[str, Any]) -> str:
    match = re.search(r"Credential=([^/]+)/", environ.get("HTTP_AUTHORIZATION", ""))
    return match.group(1) if match else ""


class Authorizer:
    """The engine as a child process, the role policy in force, and the log of decisions."""

    def __init__(self, template_path: str, log_path: str) -> None:
        self.template_path = template_path
        self.log_path = log_path
        self.lock = threading.Lock()
        self.decisions: list[dict[str, Any]] = []
        self.engine = subprocess.Popen(
            ["node", os.path.join(HERE, "iam", "authorize.mjs")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
        )
        self.policy: dict[str, Any] = {}
        # Each instance role's policy (or why it cannot be evaluated), for the same template
        # parameters as the function's.
        self.instance_policies: dict[str, Any] = instance_role_policies(template_path, None)
        self.watch_policy: dict[str, Any] = managed_policy(template_path, WATCH_POLICY)
        self.types: dict[str, dict[str, Any]] = {}
        # Errors a test provokes on purpose (POST /ecs-ami-local/iam/expect-errors): tallied as
        # ExpectedError, so that scripts/test fails only on the others.
        self.expected_errors = 0
        self.set_policy(role_policy(template_path))

    def resource_types(self, action: str) -> dict[str, Any]:
        """The action's resource types from the engine's data (iam-data), optional ones too."""
        if action not in self.types:
            with self.lock:
                answer = self.ask({"resourceTypes": action})
            if "error" in answer:
                raise CannotAuthorize(answer["error"])
            self.types[action] = answer
        return self.types[action]

    def ask(self, message: dict[str, Any]) -> dict[str, Any]:
        assert self.engine.stdin is not None and self.engine.stdout is not None
        self.engine.stdin.write(json.dumps(message) + "\n")
        self.engine.stdin.flush()
        line = self.engine.stdout.readline()
        if not line:
            raise CannotAuthorize("the IAM engine (emulator/iam/authorize.mjs) exited")
        return json.loads(line)

    def set_policy(self, policy: dict[str, Any]) -> None:
        with self.lock:
            self.policy = policy
            self.ask({"policy": policy})

    def configure(self, body: dict[str, Any]) -> dict[str, Any]:
        """`{"without": [Sid, ...]}` removes statements from the template's policies (the
        function's and the instance roles'), `{"parameters": {...}}` resolves them for other
        template parameters (both roles follow them: ContainerImageRepositories gives the
        function and BuilderRole their statements), `{"policy": {...}}` replaces the function's,
        `{}` restores the template's. Answers the Sids in force: the function's, and each
        instance role's (or why it cannot be evaluated)."""
        instance = instance_role_policies(self.template_path, body.get("parameters"))
        if "policy" in body:
            policy = body["policy"]
        else:
            policy = role_policy(self.template_path, body.get("parameters"))
            without = set(body.get("without") or [])
            known = {s.get("Sid") for s in policy["Statement"]} | {
                s.get("Sid") for p in instance.values() if isinstance(p, dict) for s in p["Statement"]}
            unknown = without - known
            if unknown:
                raise CannotAuthorize(f"no statement with Sid {sorted(unknown)} in template.yaml")
            policy["Statement"] = [s for s in policy["Statement"] if s.get("Sid") not in without]
            for role_policy_ in instance.values():
                if isinstance(role_policy_, dict):
                    role_policy_["Statement"] = [s for s in role_policy_["Statement"] if s.get("Sid") not in without]
        self.set_policy(policy)
        with self.lock:
            self.instance_policies = instance
            self.watch_policy = managed_policy(self.template_path, WATCH_POLICY, body.get("parameters"))
        return {"statements": [s.get("Sid") for s in policy["Statement"]],
                "instance_roles": {role: [s.get("Sid") for s in p["Statement"]] if isinstance(p, dict) else p
                                   for role, p in instance.items()}}

    def report(self, clear: bool) -> dict[str, Any]:
        with self.lock:
            decisions = list(self.decisions)
            if clear:
                self.decisions.clear()
        counts: dict[str, int] = {}
        for decision in decisions:
            counts[decision["decision"]] = counts.get(decision["decision"], 0) + 1
        return {"counts": counts, "decisions": decisions}

    def authorize(self, operation: str, region: str, params: dict[str, Any],
                  principal: Principal = FUNCTION) -> dict[str, Any]:
        """The decision on one request: `Allowed`, `Denied` (with the action and resource that
        were refused) or `Error`. Every request is one or more IAM actions, each on its
        resources; all of them must be allowed. `principal` is who calls: the function, or an
        instance's role (INSTANCE_ACTIONS only)."""
        entry: dict[str, Any] = {"operation": operation, "principal": principal.arn, "checks": []}
        try:
            checks = actions_of(operation, region, params)
            entry["derived"] = cover(operation, region, params, checks, self.resource_types)
        except Missing as missing:
            entry.update(decision="NotFound", resource=str(missing))
            with self.lock:
                self.record(entry)
            return entry
        except CannotAuthorize as error:
            checks, failure = [], str(error)
        else:
            failure = ""
        return self.evaluate(entry, checks, region, principal, failure)

    def authorize_action(self, operation: str, region: str, principal: Principal,
                         checks: list[dict[str, Any]]) -> dict[str, Any]:
        """The decision on a request that is not an API call (a registry's manifest or blob
        request, emulator/registry.py), given its IAM actions and resources."""
        entry: dict[str, Any] = {"operation": operation, "principal": principal.arn, "checks": []}
        return self.evaluate(entry, checks, region, principal, "")

    def evaluate(self, entry: dict[str, Any], checks: list[dict[str, Any]], region: str,
                 principal: Principal, failure: str) -> dict[str, Any]:
        identity: dict[str, Any] = {}
        if principal.is_instance and not failure:
            policy = self.instance_policies.get(principal.role)
            outside = [c["action"] for c in checks if c["action"] not in INSTANCE_ACTIONS]
            if policy is None:
                failure = (f"the role {principal.role} of {principal.instance} is not one the local AWS "
                           f"models (emulator/authorization.py, INSTANCE_ROLES)")
            elif isinstance(policy, str):
                failure = f"the role {principal.role} of {principal.instance} cannot be evaluated: {policy}"
            elif outside:
                failure = (f"{outside[0]} by an instance ({principal.role}): the local AWS evaluates an "
                           f"instance's calls only for {', '.join(INSTANCE_ACTIONS)}")
            else:
                identity = {"identityPolicy": policy, "policyName": principal.role}
        elif principal.policy == WATCH_POLICY:
            identity = {"identityPolicy": self.watch_policy, "policyName": WATCH_POLICY}
        with self.lock:
            decision = "Error" if failure else "Allowed"
            for check in [] if failure else checks:
                consequence = check.pop("consequence", None)
                # aws:RequestedRegion: the region the request was sent to (for CopyImage, the
                # destination), a global condition key present in every request.
                context = {"aws:RequestedRegion": region, **check.get("context", {})}
                answer = self.ask({**check, "context": context, "principal": principal.arn,
                                   "account": DEFAULT_ACCOUNT_ID, **identity})
                entry["checks"].append({"action": check["action"], **answer})
                if consequence and answer.get("decision") == "Denied":
                    # Not a refusal of this request: a later failure of what it made.
                    entry["consequence"] = consequence
                    continue
                if answer.get("decision") != "Allowed":
                    decision = answer.get("decision", "Error")
                    failure = answer.get("error", "")
                    break
            entry["decision"] = decision
            if failure:
                entry["error"] = failure
            self.record(entry)
        return entry

    def record(self, entry: dict[str, Any]) -> None:
        """Keeps the decision and writes it as one line to the decision log (a failing test prints
        it): the operation, the decision, and per IAM action each resource with its result and the
        statements that decided it."""
        self.decisions.append(entry)
        parts = [f"{entry['decision']:<8} {entry['operation']}"]
        if entry.get("principal", FUNCTION_ROLE) != FUNCTION_ROLE:
            parts.append(f"as {entry['principal']}")
        for check in entry.get("checks", []):
            for resource in check.get("resources", []):
                sids = ",".join(resource.get("statements", [])) or "no statement"
                parts.append(f"{check['action']} {resource['arn']} {resource['result']} ({sids})")
        if entry.get("error"):
            parts.append(entry["error"])
        if entry.get("consequence"):
            parts.append("refused on the caller's behalf: " + entry["consequence"])
        if entry.get("resource"):
            parts.append(f"{entry['resource']} does not exist: left to the service")
        with open(self.log_path, "a") as log:
            log.write(" | ".join(parts) + "\n")
        tallied = entry["decision"]
        if tallied == "Error" and self.expected_errors > 0:
            self.expected_errors -= 1
            tallied = "ExpectedError"
        if TALLY:
            # One line per decision across every local AWS of a test run (scripts/test sums them).
            with open(TALLY, "a") as tally:
                resources = sum(len(c.get("resources", [])) for c in entry.get("checks", []))
                tally.write(f"{tallied} {entry['operation']} resources={resources} "
                            f"derived={entry.get('derived', 0)}\n")


# --- What each request names -------------------------------------------------------------------

def ec2_arn(region: str, kind: str, ident: str) -> str:
    account = "" if kind in ("image", "snapshot") else DEFAULT_ACCOUNT_ID
    return f"arn:aws:ec2:{region}:{account}:{kind}/{ident}"


PREFIXES = {"i-": "instance", "vol-": "volume", "ami-": "image", "snap-": "snapshot",
            "sg-": "security-group", "subnet-": "subnet", "eni-": "network-interface"}


def kind_of(resource_id: str) -> str:
    for prefix, kind in PREFIXES.items():
        if resource_id.startswith(prefix):
            return kind
    raise CannotAuthorize(f"no EC2 resource type for the id {resource_id!r}")


def numbered(params: dict[str, Any], prefix: str) -> list[str]:
    """`Prefix.1`, `Prefix.2`, ... of an EC2 query request."""
    found = []
    index = 1
    while f"{prefix}.{index}" in params:
        found.append(params[f"{prefix}.{index}"])
        index += 1
    return found


def tag_specifications(params: dict[str, Any]) -> dict[str, dict[str, str]]:
    specs: dict[str, dict[str, str]] = {}
    index = 1
    while f"TagSpecification.{index}.ResourceType" in params:
        kind = params[f"TagSpecification.{index}.ResourceType"]
        tags = specs.setdefault(kind, {})
        n = 1
        while f"TagSpecification.{index}.Tag.{n}.Key" in params:
            tags[params[f"TagSpecification.{index}.Tag.{n}.Key"]] = params.get(
                f"TagSpecification.{index}.Tag.{n}.Value", "")
            n += 1
        index += 1
    return specs


def request_tags(tags: dict[str, str]) -> dict[str, Any]:
    context: dict[str, Any] = {f"aws:RequestTag/{k}": v for k, v in tags.items()}
    if tags:
        context["aws:TagKeys"] = sorted(tags)
    return context


def resource_tags(region: str, resource_id: str, prefix: str = "aws:ResourceTag") -> dict[str, str]:
    tags = ec2_backends[DEFAULT_ACCOUNT_ID][region].tags.get(resource_id, {})
    context = {f"{prefix}/{k}": v for k, v in tags.items()}
    if prefix == "aws:ResourceTag":
        context.update({f"ec2:ResourceTag/{k}": v for k, v in tags.items()})
    return context


def exists(region: str, resource_id: str) -> bool:
    backend = ec2_backends[DEFAULT_ACCOUNT_ID][region]
    kind = kind_of(resource_id)
    if kind == "instance":
        return any(i.id == resource_id for i in backend.all_instances())
    if kind == "subnet":
        return any(s.id == resource_id for s in backend.describe_subnets())
    if kind == "security-group":
        return backend.get_security_group_from_id(resource_id) is not None
    if kind == "network-interface":
        return resource_id in backend.enis
    store = {"volume": backend.volumes, "image": backend.amis, "snapshot": backend.snapshots}.get(kind)
    if store is None:
        raise CannotAuthorize(f"the local AWS cannot look up the {kind} {resource_id}")
    return resource_id in store


def existing(region: str, resource_id: str) -> dict[str, Any]:
    if not exists(region, resource_id):
        raise Missing(resource_id)
    return {"arn": ec2_arn(region, kind_of(resource_id), resource_id),
            "context": {**resource_tags(region, resource_id), **resource_keys(region, resource_id)}}


def resource_keys(region: str, resource_id: str) -> dict[str, Any]:
    """The EC2 condition keys a resource carries besides its tags, as the Service Authorization
    Reference lists them for its type (ec2:Owner and ec2:ParentVolume of a snapshot,
    ec2:ParentSnapshot of a volume, ...), read from the local AWS's state."""
    backend = ec2_backends[DEFAULT_ACCOUNT_ID][region]
    kind = kind_of(resource_id)
    keys: dict[str, Any] = {"ec2:Region": region}
    if kind == "image":
        image = backend.amis[resource_id]
        keys.update({"ec2:ImageID": resource_id, "ec2:Owner": image.owner_alias or image.owner_id,
                     "ec2:Public": "true" if image.is_public else "false",
                     "ec2:ImageType": "machine", "ec2:RootDeviceType": "ebs"})
    elif kind == "snapshot":
        snapshot = backend.snapshots[resource_id]
        keys.update({"ec2:SnapshotID": resource_id, "ec2:Owner": snapshot.owner_id,
                     "ec2:Encrypted": "true" if snapshot.encrypted else "false",
                     "ec2:VolumeSize": str(snapshot.volume.size),
                     "ec2:ParentVolume": ec2_arn(region, "volume", snapshot.volume.id)})
    elif kind == "volume":
        volume = backend.volumes[resource_id]
        keys.update({"ec2:VolumeID": resource_id, "ec2:Encrypted": "true" if volume.encrypted else "false",
                     "ec2:VolumeSize": str(volume.size), "ec2:VolumeType": volume.volume_type,
                     "ec2:AvailabilityZone": volume.zone.name})
        if volume.snapshot_id:
            keys["ec2:ParentSnapshot"] = ec2_arn(region, "snapshot", volume.snapshot_id)
    elif kind == "instance":
        instance = next(i for i in backend.all_instances() if i.id == resource_id)
        keys.update({"ec2:InstanceID": resource_id, "ec2:InstanceType": instance.instance_type,
                     "ec2:AvailabilityZone": instance._placement.zone})
        profile = instance.iam_instance_profile
        if profile:
            keys["ec2:InstanceProfile"] = profile.get("Arn", "") if isinstance(profile, dict) else str(profile)
    elif kind == "subnet":
        subnet = backend.get_subnet(resource_id)
        keys.update({"ec2:SubnetID": resource_id, "ec2:AvailabilityZone": subnet.availability_zone,
                     "ec2:Vpc": ec2_arn(region, "vpc", subnet.vpc_id)})
    elif kind == "security-group":
        group = backend.get_security_group_from_id(resource_id)
        keys.update({"ec2:SecurityGroupID": resource_id, "ec2:Vpc": ec2_arn(region, "vpc", group.vpc_id)})
    return keys


def tag_on_create(region: str, action: str, specs: dict[str, dict[str, str]]) -> list[dict[str, Any]]:
    """Tags applied by a create call are authorized as ec2:CreateTags on the new resources."""
    if not specs:
        return []
    return [{
        "action": "ec2:CreateTags",
        "context": {"ec2:CreateAction": action},
        "resources": [{"arn": ec2_arn(region, kind, "*"), "context": request_tags(tags)}
                      for kind, tags in specs.items()],
    }]


def run_instances(region: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    backend = ec2_backends[DEFAULT_ACCOUNT_ID][region]
    specs = tag_specifications(params)
    subnet_id = params.get("SubnetId")
    if subnet_id:
        vpc_id = backend.get_subnet(subnet_id).vpc_id
    else:
        subnet = sorted(backend.get_default_subnets().values(), key=lambda s: s.availability_zone)[0]
        subnet_id, vpc_id = subnet.id, subnet.vpc_id
    groups = numbered(params, "SecurityGroupId") or [backend.get_default_security_group(vpc_id).id]
    resources = [
        existing(region, params["ImageId"]),
        {"arn": ec2_arn(region, "instance", "*"), "context": request_tags(specs.get("instance", {}))},
        {"arn": ec2_arn(region, "volume", "*"), "context": request_tags(specs.get("volume", {}))},
        {"arn": ec2_arn(region, "network-interface", "*"),
         "context": request_tags(specs.get("network-interface", {}))},
        existing(region, subnet_id),
        *[existing(region, group) for group in groups],
    ]
    checks = [{"action": "ec2:RunInstances", "resources": resources}]
    checks += tag_on_create(region, "RunInstances", specs)
    checks += kms_for_launch(region, params)
    profile = params.get("IamInstanceProfile.Name") or params.get("IamInstanceProfile.Arn", "").rsplit("/", 1)[-1]
    if profile:
        iam = iam_backends[DEFAULT_ACCOUNT_ID]["global"]
        found = [p for p in iam.instance_profiles.values() if p.name == profile]
        if not found:
            # EC2 refuses a profile that does not exist (InvalidParameterValue): moto's answer.
            raise Missing(f"instance profile {profile}")
        for role in found[0].roles:
            checks.append({"action": "iam:PassRole",
                           "context": {"iam:PassedToService": "ec2.amazonaws.com"},
                           "resources": [{"arn": role.arn}]})
    return checks


# What EC2 does with the caller's permissions on a customer managed key for an encrypted volume
# (https://docs.aws.amazon.com/ebs/latest/userguide/ebs-encryption-requirements.html), through
# EC2 (kms:ViaService). A refusal does not fail RunInstances: the instance goes pending ->
# terminated with Client.InternalError, which the local AWS reproduces.
KMS_ACTIONS = ["kms:CreateGrant", "kms:Decrypt", "kms:DescribeKey", "kms:GenerateDataKeyWithoutPlaintext"]


def kms_for_launch(region: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    keys = sorted({v for k, v in params.items() if re.fullmatch(r"BlockDeviceMapping\.\d+\.Ebs\.KmsKeyId", k)})
    return kms_for(region, keys, "the instance terminates (Client.InternalError)")


def kms_for(region: str, keys: list[str], consequence: str) -> list[dict[str, Any]]:
    checks = []
    for key in keys:
        found = kms_key(region, key)
        if found is None:
            continue  # no such key: the launch fails anyway (emulator/local_aws.py)
        arn, policy = found.arn, json.loads(found.policy)
        for action in KMS_ACTIONS:
            context: dict[str, Any] = {"kms:ViaService": f"ec2.{region}.amazonaws.com",
                                       "kms:CallerAccount": DEFAULT_ACCOUNT_ID}
            if action == "kms:CreateGrant":
                context["kms:GrantIsForAWSResource"] = "true"
            checks.append({"action": action, "context": context, "resources": [{"arn": arn}],
                           "resourcePolicy": policy,
                           "consequence": consequence})
    return checks


def kms_key(region: str, key: str) -> Any:
    """The local KMS's key (its ARN and key policy) for an id, ARN or alias."""
    backend = kms_backends[DEFAULT_ACCOUNT_ID][region]
    try:
        key_id = backend.get_key_id_from_alias(key) if "alias/" in key else key
        return backend.describe_key(key_id or key)
    except Exception:  # moto's NotFoundException: not a key of this account
        return None


def create_image(region: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    specs = tag_specifications(params)
    resources = [
        {"arn": ec2_arn(region, "image", "*"), "context": request_tags(specs.get("image", {}))},
        existing(region, params["InstanceId"]),
        {"arn": ec2_arn(region, "snapshot", "*"), "context": request_tags(specs.get("snapshot", {}))},
    ]
    return [{"action": "ec2:CreateImage", "resources": resources}] + tag_on_create(region, "CreateImage", specs)


def copy_image(region: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    """CopyImage, called in the destination region: the new image and snapshots there, and (since
    October 2024) the source image in its own region, whose condition keys are ec2:ImageID and
    ec2:Owner, not its tags (https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/copy-ami-permissions.html).
    A customer managed key is used by EC2 on the caller's behalf, as for an encrypted volume."""
    specs = tag_specifications(params)
    source_region, source_id = params["SourceRegion"], params["SourceImageId"]
    if not exists(source_region, source_id):
        raise Missing(source_id)
    source = ec2_backends[DEFAULT_ACCOUNT_ID][source_region].amis[source_id]
    resources = [
        {"arn": ec2_arn(region, "image", "*"), "context": request_tags(specs.get("image", {}))},
        # aws:RequestTag is a request-wide key: the source image is evaluated with it too.
        {"arn": ec2_arn(source_region, "image", source_id),
         "context": {"ec2:ImageID": source_id, "ec2:Owner": source.owner_id,
                     **request_tags(specs.get("image", {}))}},
        {"arn": ec2_arn(region, "snapshot", "*"), "context": request_tags(specs.get("snapshot", {}))},
    ]
    checks = [{"action": "ec2:CopyImage", "resources": resources}] + tag_on_create(region, "CopyImage", specs)
    key = params.get("KmsKeyId")
    if key:
        checks += kms_for(region, [key], "the copy fails (the local AWS refuses CopyImage)")
    return checks


def tagging(action: str, region: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    tags: dict[str, str] = {}
    index = 1
    while f"Tag.{index}.Key" in params:
        tags[params[f"Tag.{index}.Key"]] = params.get(f"Tag.{index}.Value", "")
        index += 1
    context = request_tags(tags) if action == "ec2:CreateTags" else (
        {"aws:TagKeys": sorted(tags)} if tags else {})
    resources = []
    for resource_id in numbered(params, "ResourceId"):
        resource = existing(region, resource_id)
        resource["context"].update(context)
        resources.append(resource)
    return [{"action": action, "resources": resources}]


def on_each(action: str, key: str):
    def checks(region: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        ids = numbered(params, key) or [params[key]]
        return [{"action": action, "resources": [existing(region, i) for i in ids]}]
    return checks


def anything(action: str):
    return lambda region, params: [{"action": action, "resources": []}]


def parameter_arn(region: str, name: str) -> str:
    name = name if name.startswith("/") else "/" + name
    # AWS's public parameters are owned by no account of the caller's.
    account = "" if name.startswith("/aws/") else DEFAULT_ACCOUNT_ID
    return f"arn:aws:ssm:{region}:{account}:parameter{name}"


def send_command(region: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    document = body.get("DocumentName", "")
    owner = "" if document.startswith("AWS-") else DEFAULT_ACCOUNT_ID
    resources = [{"arn": f"arn:aws:ssm:{region}:{owner}:document/{document}"}]
    for instance_id in body.get("InstanceIds") or []:
        context = resource_tags(region, instance_id, "ssm:resourceTag")
        context.update(resource_tags(region, instance_id))
        resources.append({"arn": ec2_arn(region, "instance", instance_id), "context": context})
    if body.get("Targets"):
        raise CannotAuthorize("SendCommand with Targets is not authorized by the local AWS")
    return [{"action": "ssm:SendCommand", "resources": resources}]


def parameters(action: str, field: str):
    def checks(region: str, body: dict[str, Any]) -> list[dict[str, Any]]:
        names = body.get(field)
        names = names if isinstance(names, list) else [names or ""]
        return [{"action": action, "resources": [{"arn": parameter_arn(region, n)} for n in names]}]
    return checks


EC2 = {
    "RunInstances": run_instances,
    "CreateImage": create_image,
    "CopyImage": copy_image,
    "CreateTags": lambda region, params: tagging("ec2:CreateTags", region, params),
    "DeleteTags": lambda region, params: tagging("ec2:DeleteTags", region, params),
    "StopInstances": on_each("ec2:StopInstances", "InstanceId"),
    "GetConsoleOutput": on_each("ec2:GetConsoleOutput", "InstanceId"),
    "TerminateInstances": on_each("ec2:TerminateInstances", "InstanceId"),
    "DeregisterImage": on_each("ec2:DeregisterImage", "ImageId"),
    "ModifyImageAttribute": on_each("ec2:ModifyImageAttribute", "ImageId"),
    "EnableImageDeprecation": on_each("ec2:EnableImageDeprecation", "ImageId"),
    "DescribeImageAttribute": on_each("ec2:DescribeImageAttribute", "ImageId"),
    "DescribeSnapshotAttribute": on_each("ec2:DescribeSnapshotAttribute", "SnapshotId"),
    "ModifySnapshotAttribute": on_each("ec2:ModifySnapshotAttribute", "SnapshotId"),
    "DisableImageDeprecation": on_each("ec2:DisableImageDeprecation", "ImageId"),
    "DeleteSnapshot": on_each("ec2:DeleteSnapshot", "SnapshotId"),
    "DeleteVolume": on_each("ec2:DeleteVolume", "VolumeId"),
    "DescribeImages": anything("ec2:DescribeImages"),
    "DescribeInstances": anything("ec2:DescribeInstances"),
    "DescribeInstanceTypes": anything("ec2:DescribeInstanceTypes"),
    "DescribeSnapshots": anything("ec2:DescribeSnapshots"),
    "DescribeVolumes": anything("ec2:DescribeVolumes"),
    "DescribeSubnets": anything("ec2:DescribeSubnets"),
    "DescribeSecurityGroups": anything("ec2:DescribeSecurityGroups"),
}

SSM = {
    "SendCommand": send_command,
    "GetCommandInvocation": anything("ssm:GetCommandInvocation"),
    "ListCommands": anything("ssm:ListCommands"),
    "ListCommandInvocations": anything("ssm:ListCommandInvocations"),
    "CancelCommand": anything("ssm:CancelCommand"),
    "DescribeInstanceInformation": anything("ssm:DescribeInstanceInformation"),
    "GetParameter": parameters("ssm:GetParameter", "Name"),
    "GetParameters": parameters("ssm:GetParameters", "Names"),
    "PutParameter": parameters("ssm:PutParameter", "Name"),
    "DeleteParameters": parameters("ssm:DeleteParameters", "Names"),
    "GetParametersByPath": parameters("ssm:GetParametersByPath", "Path"),
    "GetParameterHistory": parameters("ssm:GetParameterHistory", "Name"),
}


def ecs_cluster_arn(region: str, cluster: str) -> str:
    if cluster.startswith("arn:"):
        return cluster
    return f"arn:aws:ecs:{region}:{DEFAULT_ACCOUNT_ID}:cluster/{cluster or 'default'}"


def ecs_container_instances(region: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """DescribeContainerInstances names container instances (by ARN, or by id within the
    cluster), each authorized with `ecs:cluster`."""
    cluster = ecs_cluster_arn(region, body.get("cluster", ""))
    name = cluster.rsplit("/", 1)[-1]
    resources = []
    for item in body.get("containerInstances") or []:
        arn = item if item.startswith("arn:") else (
            f"arn:aws:ecs:{region}:{DEFAULT_ACCOUNT_ID}:container-instance/{name}/{item}")
        resources.append({"arn": arn, "context": {"ecs:cluster": cluster}})
    return [{"action": "ecs:DescribeContainerInstances", "resources": resources}]


ECS = {
    "ListContainerInstances": lambda region, body: [{
        "action": "ecs:ListContainerInstances",
        "resources": [{"arn": ecs_cluster_arn(region, body.get("cluster", ""))}]}],
    "DescribeContainerInstances": ecs_container_instances,
    # ContainerImages.TaskDefinitions: the Service Authorization Reference lists no resource type
    # for it, so it is authorized on "*" (whatever task definition it names).
    "DescribeTaskDefinition": anything("ecs:DescribeTaskDefinition"),
}


def ecr_repository_arn(region: str, registry: str, name: str) -> str:
    return f"arn:aws:ecr:{region}:{registry}:repository/{name}"


def ecr_repository(region: str, registry: str, name: str) -> dict[str, Any]:
    """A repository as IAM sees it: its ARN (the registry is the account that owns it), with its
    tags as aws:ResourceTag when it is the local account's
    (https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonelasticcontainerregistry.html)."""
    context: dict[str, Any] = {}
    if registry == DEFAULT_ACCOUNT_ID:
        backend = ecr_backends[DEFAULT_ACCOUNT_ID][region]
        if name in backend.repositories:
            tags = backend.list_tags_for_resource(backend.repositories[name].arn).get("tags", [])
            context = {f"aws:ResourceTag/{t['Key']}": t["Value"] for t in tags}
    return {"arn": ecr_repository_arn(region, registry, name), "context": context}


ECR = {
    # The function resolves a tag to its digest; a builder reads a manifest by the ECR API too.
    "BatchGetImage": lambda region, body: [{
        "action": "ecr:BatchGetImage",
        "resources": [ecr_repository(region, body.get("registryId") or DEFAULT_ACCOUNT_ID, body["repositoryName"])]}],
    # A builder's registry credentials: the action names no resource type.
    "GetAuthorizationToken": anything("ecr:GetAuthorizationToken"),
}


# --- Every resource a request names, authorized as the Service Authorization Reference says --------
#
# The builders above say what each operation does that the request does not spell out: resources
# it creates (`*`), defaults it uses (the default subnet), tags on create, the role it passes, the
# key EC2 uses on the caller's behalf. What the request names by itself is found here, from every
# parameter it carries: each parameter is classified below (an unknown one is refused, so a
# parameter the product starts to send is looked at before it is trusted), each resource it names
# gets its ARN, and the action's resource types come from the engine's data (iam-data lists every
# one, optional ones included). A named resource of a type the action authorizes is evaluated with
# its condition keys; one the action does not authorize, and nothing else accounts for, cannot be
# judged: the request is refused (LocalAwsCannotAuthorize).

REF = "resource"        # an id or ARN of a resource (EC2's type read from the id's prefix)
MAYBE = "maybe"         # a value that may be an id (filter values): a resource when it looks like one
DATA = "data"           # names no resource
SOURCE = "source"       # CopyImage's source image, in SourceRegion
PROFILE = "profile"     # an instance profile: authorized as iam:PassRole of its roles
KMS = "kms"             # a KMS key EC2 uses on the caller's behalf: authorized as kms:* (kms_for)

# EC2's Query parameters, list indices removed (`BlockDeviceMapping.1.Ebs.SnapshotId` ->
# `BlockDeviceMapping.Ebs.SnapshotId`).
EC2_FIELDS: dict[str, str] = {
    **dict.fromkeys([
        "Action", "Version", "DryRun", "ClientToken", "MinCount", "MaxCount", "InstanceType",
        "UserData", "InstanceInitiatedShutdownBehavior", "MetadataOptions.HttpTokens",
        "MetadataOptions.HttpPutResponseHopLimit", "MetadataOptions.HttpEndpoint",
        "TagSpecification.ResourceType", "TagSpecification.Tag.Key", "TagSpecification.Tag.Value",
        "Tag.Key", "Tag.Value", "Name", "Description", "Description.Value", "NoReboot",
        "BlockDeviceMapping.DeviceName", "BlockDeviceMapping.NoDevice", "BlockDeviceMapping.Ebs.VolumeSize",
        "BlockDeviceMapping.Ebs.VolumeType", "BlockDeviceMapping.Ebs.Iops",
        "BlockDeviceMapping.Ebs.Throughput", "BlockDeviceMapping.Ebs.Encrypted",
        "BlockDeviceMapping.Ebs.DeleteOnTermination", "Filter.Name", "MaxResults", "NextToken",
        "Owner", "IncludeDeprecated", "Attribute", "OperationType", "ImdsSupport.Value",
        "DeprecateAt", "SourceRegion", "Encrypted", "Latest",
        # Grantees, not resources: ModifyImageAttribute and ModifySnapshotAttribute authorize
        # the image or snapshot, with ec2:Add/userId and friends as condition keys.
        "UserId", "LaunchPermission.Add.UserId", "LaunchPermission.Add.Group",
        "LaunchPermission.Add.OrganizationArn", "LaunchPermission.Add.OrganizationalUnitArn",
        "LaunchPermission.Remove.UserId", "LaunchPermission.Remove.Group",
        "LaunchPermission.Remove.OrganizationArn", "LaunchPermission.Remove.OrganizationalUnitArn",
    ], DATA),
    **dict.fromkeys([
        "ImageId", "InstanceId", "SnapshotId", "VolumeId", "SubnetId", "SecurityGroupId", "GroupId",
        "ResourceId", "BlockDeviceMapping.Ebs.SnapshotId",
    ], REF),
    "Filter.Value": MAYBE,
    "SourceImageId": SOURCE,
    "IamInstanceProfile.Name": PROFILE,
    "IamInstanceProfile.Arn": PROFILE,
    "BlockDeviceMapping.Ebs.KmsKeyId": KMS,
    "KmsKeyId": KMS,
}

# Systems Manager's JSON bodies, object members joined by '.', list items unnumbered.
SSM_FIELDS: dict[str, str] = {
    **dict.fromkeys([
        "Value", "Type", "DataType", "Overwrite", "Recursive", "WithDecryption", "MaxResults",
        "NextToken", "Comment", "TimeoutSeconds", "CommandId", "Details", "PluginName",
        "Description", "Tier", "Tags.Key", "Tags.Value", "Policies", "Filters.Key",
        "ParameterFilters.Key", "ParameterFilters.Option", "ParameterFilters.Values",
        # AWS-RunShellScript's parameters: the script and its settings.
        "Parameters.commands", "Parameters.workingDirectory", "Parameters.executionTimeout",
    ], DATA),
    "Filters.Values": MAYBE,
    "InstanceFilterList.valueSet": MAYBE,
    "InstanceFilterList.key": DATA,
    "Name": "parameter", "Names": "parameter", "Path": "parameter",
    "DocumentName": "document",
    "InstanceIds": REF, "InstanceId": REF,
}

# ECS's JSON bodies.
ECS_FIELDS: dict[str, str] = {
    **dict.fromkeys(["filter", "maxResults", "nextToken", "status", "include"], DATA),
    "cluster": "cluster",
    "containerInstances": "container-instance",
    "taskDefinition": "task-definition",
}

# ECR's JSON bodies. registryId is the account part of the repository's ARN (the repository is
# the resource), so it names nothing by itself; registryIds (GetAuthorizationToken's, deprecated)
# the registries a token is for, authorized on "*".
ECR_FIELDS: dict[str, str] = {
    **dict.fromkeys(["registryId", "registryIds", "imageIds.imageTag", "imageIds.imageDigest",
                     "acceptedMediaTypes"], DATA),
    "repositoryName": "repository",
}

FIELDS = {"ec2": EC2_FIELDS, "ssm": SSM_FIELDS, "ecs": ECS_FIELDS, "ecr": ECR_FIELDS}
# Condition keys whose value is another resource the request names, authorized through them.
RESOURCE_KEYS = ("ecs:cluster",)
SERVICES = {"EC2": "ec2", "AmazonSSM": "ssm", "AmazonEC2ContainerServiceV20141113": "ecs",
            "AmazonEC2ContainerRegistry_V20150921": "ecr"}
LOOKS_LIKE_ID = re.compile(r"[a-z]+(-[a-z]+)*-[0-9a-f]{8,17}")


def fields(service: str, params: dict[str, Any]) -> list[tuple[str, str]]:
    """Every (parameter, value) of a request: a Query request's keys without their indices, a
    JSON body's members flattened."""
    if service == "ec2":
        return [(re.sub(r"\.\d+(?=\.|$)", "", key), str(value)) for key, value in params.items()]
    found: list[tuple[str, str]] = []

    def walk(path: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, member in value.items():
                walk(f"{path}.{key}" if path else key, member)
        elif isinstance(value, list):
            for item in value:
                walk(path, item)
        else:
            found.append((path, str(value)))

    walk("", params)
    return found


def named_resources(service: str, region: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    """What the request names: for each, the parameter, the ARN, and how it is authorized."""
    table = FIELDS[service]
    named = []
    for path, value in fields(service, params):
        kind = table.get(path)
        if kind is None:
            raise CannotAuthorize(f"the parameter {path} is not classified by the local AWS "
                                  f"(emulator/authorization.py, {service.upper()}_FIELDS)")
        if kind == DATA or value == "" or (kind == MAYBE and not (LOOKS_LIKE_ID.fullmatch(value)
                                                                  or value.startswith("arn:"))):
            continue
        entry: dict[str, Any] = {"parameter": path, "value": value, "kind": kind}
        if kind in (REF, MAYBE, SOURCE):
            if value.startswith("arn:"):
                entry["arn"] = value
            elif kind == MAYBE and not any(value.startswith(p) for p in PREFIXES):
                entry["arn"] = value  # an id of a kind the local AWS does not know: refused
                # below unless the action authorizes only "*"
            else:
                where = params.get("SourceRegion", region) if kind == SOURCE else region
                entry.update(arn=ec2_arn(where, kind_of(value), value), id=value, region=where)
        elif kind == PROFILE:
            entry["arn"] = value if value.startswith("arn:") else (
                f"arn:aws:iam::{DEFAULT_ACCOUNT_ID}:instance-profile/{value}")
        elif kind == KMS:
            key = kms_key(region, value)
            entry["arn"] = key.arn if key is not None else value
            entry["missing"] = key is None
        elif kind == "parameter":
            entry["arn"] = parameter_arn(region, value)
        elif kind == "document":
            owner = "" if value.startswith("AWS-") else DEFAULT_ACCOUNT_ID
            entry["arn"] = f"arn:aws:ssm:{region}:{owner}:document/{value}"
        elif kind == "cluster":
            entry["arn"] = ecs_cluster_arn(region, value)
        elif kind == "container-instance":
            cluster = ecs_cluster_arn(region, params.get("cluster", "")).rsplit("/", 1)[-1]
            entry["arn"] = value if value.startswith("arn:") else (
                f"arn:aws:ecs:{region}:{DEFAULT_ACCOUNT_ID}:container-instance/{cluster}/{value}")
        elif kind == "task-definition":
            # A family, family:revision or ARN.
            entry["arn"] = value if value.startswith("arn:") else (
                f"arn:aws:ecs:{region}:{DEFAULT_ACCOUNT_ID}:task-definition/{value}")
        elif kind == "repository":
            entry["arn"] = ecr_repository_arn(region, str(params.get("registryId") or DEFAULT_ACCOUNT_ID), value)
        named.append(entry)
    return named


def matching_type(types: dict[str, Any], arn: str) -> str | None:
    for resource_type in types["types"]:
        if resource_type["pattern"] and re.search(resource_type["pattern"], arn):
            return resource_type["name"]
    return None


def cover(operation: str, region: str, params: dict[str, Any], checks: list[dict[str, Any]],
          resource_types: Any) -> int:
    """Adds to the operation's own action every resource the request names that the builders did
    not list, when the action authorizes its type; refuses what nothing authorizes. Answers how
    many were added."""
    service = SERVICES[operation.partition(".")[0]]
    action = f"{service}:{operation.partition('.')[2]}"
    named = named_resources(service, region, params)
    if not named:
        return 0
    listed = {r.get("arn") for check in checks for r in check.get("resources", [])}
    # A resource the action takes as a condition key of others (DescribeContainerInstances'
    # cluster is `ecs:cluster` of each container instance) is authorized through them; only the
    # keys of RESOURCE_KEYS count, never a tag that happens to hold an ARN.
    conditions = {str(r["context"][key]) for check in checks for r in check.get("resources", [])
                  for key in RESOURCE_KEYS if key in (r.get("context") or {})}
    actions = {check["action"] for check in checks}
    types = resource_types(action)
    own = next((check for check in checks if check["action"] == action), None)
    added = 0
    for entry in named:
        if entry["arn"] in listed or entry["arn"] in conditions:
            continue
        if entry["kind"] == PROFILE and "iam:PassRole" in actions:
            continue  # the profile's roles are what RunInstances passes (run_instances)
        if entry["kind"] == KMS and (entry["missing"] or any(a.startswith("kms:") for a in actions)):
            continue  # kms_for: EC2 uses the key on the caller's behalf; no key, no launch
        if types["wildcardOnly"]:
            continue  # the action authorizes "*": AWS evaluates no resource of the request
        resource_type = matching_type(types, entry["arn"])
        if resource_type is None or own is None or "id" not in entry:
            raise CannotAuthorize(
                f"{operation}: {entry['parameter']}={entry['value']} names {entry['arn']}, which the "
                f"local AWS does not map to a resource type of {action}")
        own["resources"].append(existing(entry["region"], entry["id"]))
        listed.add(entry["arn"])
        added += 1
    return added


def actions_of(operation: str, region: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    """The IAM actions one request needs, each with the resources it names."""
    service, _, name = operation.partition(".")
    table = {"EC2": EC2, "AmazonSSM": SSM, "AmazonEC2ContainerServiceV20141113": ECS,
             "AmazonEC2ContainerRegistry_V20150921": ECR}.get(service, {})
    if name not in table:
        raise CannotAuthorize(f"{operation}: the local AWS does not know what this request authorizes")
    try:
        return table[name](region, params)
    except KeyError as error:
        raise CannotAuthorize(f"{operation}: {error} not found in the request or the local AWS") from error


def ec2_params(raw: bytes) -> dict[str, str]:
    return {k: v[0] for k, v in urllib.parse.parse_qs(raw.decode("utf-8", "replace")).items()}
