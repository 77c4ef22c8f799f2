"""EC2's token buckets and Parameter Store's throughput, as the local AWS enforces them
(emulator/throttling.py), on a clock the test moves.

The figures are AWS's: https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-throttling.html
("Request token bucket sizes and refill rates", "Resource token bucket sizes and refill rates")
and the Parameter Store throughput quota of the Systems Manager endpoints and quotas page.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "emulator"))

import throttling  # noqa: E402


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def admitted(throttle, operation, params=None, times=1, region="us-east-1"):
    return sum(throttle.admit(region, operation, params or {}) is None for _ in range(times))


def test_run_instances_bursts_five_then_refills_two_a_second():
    clock = Clock()
    throttle = throttling.Throttle(clock)
    assert admitted(throttle, "EC2.RunInstances", {"MaxCount": "1"}, times=8) == 5
    refused = throttle.admit("us-east-1", "EC2.RunInstances", {"MaxCount": "1"})
    assert refused == {"code": "RequestLimitExceeded", "status": 503, "message": "Request limit exceeded."}
    clock.now += 1.0
    assert admitted(throttle, "EC2.RunInstances", {"MaxCount": "1"}, times=5) == 2
    assert throttle.report(False) == {"EC2.RunInstances": 7}


def test_each_action_and_region_has_its_own_bucket():
    clock = Clock()
    throttle = throttling.Throttle(clock)
    assert admitted(throttle, "EC2.RunInstances", times=5) == 5
    assert admitted(throttle, "EC2.RunInstances", times=1) == 0
    # Another region, another action: full buckets.
    assert admitted(throttle, "EC2.RunInstances", times=5, region="eu-west-1") == 5
    assert admitted(throttle, "EC2.CreateImage", times=50) == 50
    assert admitted(throttle, "EC2.CreateImage", times=1) == 0


def test_unfiltered_unpaginated_describe_uses_the_smaller_bucket():
    clock = Clock()
    throttle = throttling.Throttle(clock)
    assert admitted(throttle, "EC2.DescribeInstances", {"InstanceId.1": "i-1"}, times=60) == 50
    filtered = {"Filter.1.Name": "tag:a", "Filter.1.Value.1": "b"}
    assert admitted(throttle, "EC2.DescribeInstances", filtered, times=120) == 100
    # DescribeImages is not in the unfiltered subset.
    assert admitted(throttle, "EC2.DescribeImages", {"ImageId.1": "ami-1"}, times=120) == 100


def test_resource_tokens_count_instances():
    clock = Clock()
    throttle = throttling.Throttle(clock)
    ids = {f"InstanceId.{n}": f"i-{n}" for n in range(1, 401)}
    # 400 instances a request: the request bucket (100) admits all three, the resource bucket
    # (1000) only two.
    assert admitted(throttle, "EC2.TerminateInstances", ids, times=3) == 2
    clock.now += 10.0  # 20 a second
    assert admitted(throttle, "EC2.TerminateInstances", ids, times=1) == 1


def test_fractional_refill():
    clock = Clock()
    throttle = throttling.Throttle(clock)
    assert admitted(throttle, "EC2.CopyImage", times=101) == 100
    clock.now += 0.5
    assert admitted(throttle, "EC2.CopyImage") == 0
    clock.now += 0.5
    assert admitted(throttle, "EC2.CopyImage") == 1


def test_parameter_store_shares_forty_a_second_between_its_calls():
    clock = Clock()
    throttle = throttling.Throttle(clock)
    assert admitted(throttle, "AmazonSSM.GetParameter", times=20) == 20
    assert admitted(throttle, "AmazonSSM.GetParametersByPath", times=10) == 10
    assert admitted(throttle, "AmazonSSM.PutParameter", times=20) == 10
    assert throttle.admit("us-east-1", "AmazonSSM.GetParameters", {}) == {
        "code": "ThrottlingException", "status": 400, "message": "Rate exceeded"}
    clock.now += 0.25
    assert admitted(throttle, "AmazonSSM.GetParameter", times=20) == 10
    # Run Command has no published rate: not throttled.
    assert admitted(throttle, "AmazonSSM.GetCommandInvocation", times=1000) == 1000


def test_scale_shrinks_buckets_but_never_below_one_token(monkeypatch):
    monkeypatch.setattr(throttling, "SCALE", 0.01)
    clock = Clock()
    throttle = throttling.Throttle(clock)
    assert admitted(throttle, "EC2.RunInstances", times=3) == 1
    clock.now += 50.0  # 0.02 a second
    assert admitted(throttle, "EC2.RunInstances", times=3) == 1
