"""Request rates of the local AWS: EC2's token buckets and Parameter Store's throughput.

EC2 (https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-throttling.html) throttles each
account in each region with a token bucket per API action, sized by the action's category, and
for four instance actions a second bucket counting the instances a request names. A request that
finds either bucket empty answers `RequestLimitExceeded` (HTTP 503). Buckets refill every second,
by fractions too (CopyImage refills one token a second).

Parameter Store (https://docs.aws.amazon.com/systems-manager/latest/userguide/parameter-store-throughput.html,
and the default "Max throughput (transactions per second)" quota of the Systems Manager endpoints
and quotas page: 40, shared by GetParameter, GetParameters and GetParametersByPath) answers
`ThrottlingException` ("Rate exceeded", HTTP 400) past that. The throughput page counts
PutParameter under the same setting; the quota page found gives no separate figure for it, so it
draws on the same 40 here (the stricter reading). Other SSM and ECS actions have no published
rate and are not throttled.

`ECS_AMI_EMULATOR_RATE_SCALE` (default 1) scales every bucket's size and refill rate, so that a
test can make them tight; a bucket never holds less than one token. Calls made with the tests'
administrator key are not throttled (they stand for the test's own set-up, not the function).
"""

from __future__ import annotations

import os
import re
import threading
import time
from typing import Callable

SCALE = float(os.environ.get("ECS_AMI_EMULATOR_RATE_SCALE", "1"))

# (bucket maximum capacity, refill per second), from the page's tables.
NON_MUTATING = (100.0, 20.0)
UNFILTERED_NON_MUTATING = (50.0, 10.0)
MUTATING = (50.0, 5.0)
RESOURCE_INTENSIVE = (50.0, 5.0)

# "Unfiltered and unpaginated non-mutating actions": these draw on the smaller bucket when the
# request has neither a filter nor pagination (MaxResults or NextToken).
UNFILTERED_ACTIONS = {
    "DescribeInstances", "DescribeInstanceStatus", "DescribeNetworkInterfaces",
    "DescribeSecurityGroups", "DescribeSnapshots", "DescribeSpotInstanceRequests", "DescribeVolumes",
}
RESOURCE_INTENSIVE_ACTIONS = {
    "AcceptVpcPeeringConnection", "AuthorizeSecurityGroupIngress", "CancelSpotInstanceRequests",
    "CreateKeyPair", "CreateVpcPeeringConnection", "DeleteVpcPeeringConnection",
    "RejectVpcPeeringConnection", "RevokeSecurityGroupIngress", "RequestSpotInstances",
}
# "Uncategorized actions" with buckets of their own: those a build, its cleanup or its
# distribution may call (the rest of the table concerns VPN, BYOIP, Verified Access and the like).
UNCATEGORIZED = {
    "AssociateIamInstanceProfile": (100.0, 5.0),
    "CopyImage": (100.0, 1.0),
    "CreateLaunchTemplateVersion": (100.0, 5.0),
    "CreateNetworkInterface": (100.0, 5.0),
    "CreateSnapshot": (100.0, 5.0),
    "CreateSnapshots": (100.0, 5.0),
    "CreateTags": (100.0, 10.0),
    "CreateVolume": (100.0, 5.0),
    "DeleteNetworkInterface": (100.0, 5.0),
    "DeleteSnapshot": (100.0, 5.0),
    "DeleteTags": (100.0, 10.0),
    "DeleteVolume": (100.0, 5.0),
    "DeregisterImage": (100.0, 5.0),
    "DisassociateIamInstanceProfile": (100.0, 5.0),
    "ModifyImageAttribute": (100.0, 5.0),
    "ModifyInstanceMetadataOptions": (100.0, 5.0),
    "ModifyLaunchTemplate": (100.0, 5.0),
    "ModifyNetworkInterfaceAttribute": (100.0, 5.0),
    "ModifySnapshotAttribute": (100.0, 5.0),
    "RunInstances": (5.0, 2.0),
    "StartInstances": (5.0, 2.0),
    "TerminateInstances": (100.0, 5.0),
}
# Resource rate limiting: tokens are the instances the request affects.
RESOURCE_BUCKETS = {
    "RunInstances": (1000.0, 2.0),
    "TerminateInstances": (1000.0, 20.0),
    "StartInstances": (1000.0, 2.0),
    "StopInstances": (1000.0, 20.0),
}
PARAMETER_STORE = (40.0, 40.0)
PARAMETER_STORE_ACTIONS = {"GetParameter", "GetParameters", "GetParametersByPath", "PutParameter"}


def ec2_request_bucket(action: str, params: dict[str, str]) -> tuple[str, tuple[float, float]]:
    """The request bucket of an EC2 action (its name beside the action's, and its size and
    refill), as the page's categories size it."""
    if action in UNCATEGORIZED:
        return "", UNCATEGORIZED[action]
    if action in RESOURCE_INTENSIVE_ACTIONS:
        return "", RESOURCE_INTENSIVE
    if re.match(r"(Describe|List|Search|Get)[A-Z]", action):
        if action in UNFILTERED_ACTIONS and not any(
                key.startswith("Filter.") or key in ("MaxResults", "NextToken") for key in params):
            return "unfiltered", UNFILTERED_NON_MUTATING
        return "", NON_MUTATING
    return "", MUTATING


def ec2_resource_tokens(action: str, params: dict[str, str]) -> int:
    """How many instances a request affects, for the resource buckets."""
    if action == "RunInstances":
        return max(1, int(params.get("MaxCount", "1") or 1))
    return sum(1 for key in params if re.fullmatch(r"InstanceId\.\d+", key))


class Bucket:
    def __init__(self, size: float, refill: float, now: float) -> None:
        self.size = max(1.0, size * SCALE)
        self.refill = refill * SCALE
        self.tokens = self.size
        self.at = now

    def level(self, now: float) -> float:
        self.tokens = min(self.size, self.tokens + (now - self.at) * self.refill)
        self.at = now
        return self.tokens


class Throttle:
    """Every bucket of the local AWS, per region (the local AWS is one account). `admit` takes
    the tokens a call needs, or answers the error a throttled call gets."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.buckets: dict[tuple[str, ...], Bucket] = {}
        self.lock = threading.Lock()
        self.throttled: dict[str, int] = {}

    def _take(self, needs: list[tuple[tuple[str, ...], tuple[float, float], float]]) -> bool:
        """Takes every need (bucket key, its size and refill, tokens) or none of them."""
        now = self.clock()
        buckets = []
        for key, (size, refill), tokens in needs:
            bucket = self.buckets.get(key)
            if bucket is None:
                bucket = self.buckets[key] = Bucket(size, refill, now)
            if bucket.level(now) < min(tokens, bucket.size):
                return False
            buckets.append((bucket, min(tokens, bucket.size)))
        for bucket, tokens in buckets:
            bucket.tokens -= tokens
        return True

    def admit(self, region: str, operation: str, params: dict[str, str]) -> dict | None:
        """None: the call goes ahead. Otherwise the error rule it is answered with."""
        service, _, action = operation.partition(".")
        needs = []
        if service == "EC2":
            bucket, rate = ec2_request_bucket(action, params)
            needs.append(((region, "ec2", action, bucket), rate, 1.0))
            if action in RESOURCE_BUCKETS:
                needs.append(((region, "ec2-resource", action), RESOURCE_BUCKETS[action],
                              float(ec2_resource_tokens(action, params))))
            error = {"code": "RequestLimitExceeded", "status": 503, "message": "Request limit exceeded."}
        elif service == "AmazonSSM" and action in PARAMETER_STORE_ACTIONS:
            needs.append(((region, "ssm-parameters"), PARAMETER_STORE, 1.0))
            error = {"code": "ThrottlingException", "status": 400, "message": "Rate exceeded"}
        else:
            return None
        with self.lock:
            if self._take(needs):
                return None
            self.throttled[operation] = self.throttled.get(operation, 0) + 1
        return error

    def report(self, reset: bool) -> dict[str, int]:
        with self.lock:
            throttled = dict(self.throttled)
            if reset:
                self.throttled.clear()
        return throttled
