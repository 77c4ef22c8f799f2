"""The templates themselves: every shell script in them passes shellcheck, the function's role
allows every AWS call the code makes and no more than it should, and the AMI template's
resource passes the product's own property checks (tests/integration/local_aws/ecs_stack.rs builds it)."""

import json
import re
import subprocess
from pathlib import Path

import pytest

from cfn_template import Resolver, function_role_statements, load, shell_scripts

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = sorted(str(p.relative_to(REPO)) for p in (REPO / "cfn").glob("*.yaml"))


def all_scripts():
    for name in TEMPLATES + ["template.yaml"]:
        for where, script in shell_scripts(load(str(REPO / name))):
            yield pytest.param(script, id=f"{name}:{where}")


@pytest.mark.parametrize("script", list(all_scripts()))
def test_inline_shell_scripts_pass_shellcheck(script):
    result = subprocess.run(["shellcheck", "--shell=bash", "-"], input=script, text=True,
                            capture_output=True)
    assert result.returncode == 0, result.stdout


def test_the_templates_have_their_scripts():
    # The extraction above must find what is there, or the shellcheck test proves nothing.
    found = {name: [w for w, _ in shell_scripts(load(str(REPO / name)))] for name in TEMPLATES}
    assert "Ami.Steps[first-run-script]" in found["cfn/ecs-ami.yaml"]
    assert "Ami.Steps[docker-volume-storage]" in found["cfn/ecs-ami.yaml"]
    assert "LaunchTemplate.UserData" in found["cfn/ecs-cluster.yaml"]


BUILDER_ROLE = "arn:aws:iam::123456789012:role/ecs-ami-BuilderRole-X"
TEST_ROLE = "arn:aws:iam::123456789012:role/ecs-ami-TestInstanceRole-X"
QUEUE = "arn:aws:sqs:us-east-1:123456789012:ecs-ami-UnhandledEvents-X"
ATTRIBUTES = {"BuilderRole.Arn": BUILDER_ROLE, "TestInstanceRole.Arn": TEST_ROLE,
              "UnhandledEvents.Arn": QUEUE}


def role_statements(params=None):
    """The function's role statements, resolved for the stack `ecs-ami` and `params` (the
    engine-backed tests in tests/integration/local_aws/authorization.rs evaluate the same policy call by call)."""
    template = load(str(REPO / "template.yaml"))
    resolver = Resolver(template, params or {}, stack_name="ecs-ami", attributes=ATTRIBUTES)
    return template, function_role_statements(template, resolver)


def listed(value):
    return [value] if isinstance(value, str) else value


def actions_of(statement):
    return listed(statement["Action"])


ALL_OPTIONS = {"BuilderKmsKeyArns": "arn:aws:kms:us-east-1:123456789012:key/k",
               "BuilderRoleArns": "arn:aws:iam::123456789012:role/mine",
               "ContainerImageRepositories": "arn:aws:ecr:*:123456789012:repository/*",
               "ReadTaskDefinitions": "true"}
COPY_OPTIONS = {"AmiCopyRegions": "eu-west-1,us-west-2",
                "AmiCopyKmsKeyArns": "arn:aws:kms:eu-west-1:123456789012:key/c"}


def test_the_role_allows_every_call_the_code_makes():
    source = "".join(p.read_text() for p in (REPO / "src").rglob("*.rs"))
    # The adapters name each call as service:Operation in their errors.
    called = set(re.findall(r'"((?:ec2|ssm|ecs|ecr):[A-Z][A-Za-z]+)"', source))
    assert {"ec2:RunInstances", "ssm:SendCommand", "ssm:ListCommands"} <= called
    called |= {"lambda:InvokeFunction", "iam:PassRole"}
    _, statements = role_statements({**ALL_OPTIONS, **COPY_OPTIONS})
    allowed = {a for s in statements if s["Effect"] == "Allow" for a in actions_of(s)}
    assert sorted(called - allowed) == []


DESTRUCTIVE = {"ec2:StopInstances", "ec2:TerminateInstances", "ec2:CreateImage", "ec2:CreateTags",
               "ec2:DeleteTags", "ec2:ModifyImageAttribute", "ec2:EnableImageDeprecation",
               "ec2:DisableImageDeprecation", "ec2:ModifySnapshotAttribute", "ec2:DeregisterImage",
               "ec2:DeleteSnapshot", "ec2:DeleteVolume", "ssm:SendCommand", "ec2:RunInstances",
               "ec2:CopyImage"}


def test_no_destructive_action_on_everything_without_a_tag_condition():
    _, statements = role_statements({**ALL_OPTIONS, **COPY_OPTIONS})
    for statement in statements:
        risky = DESTRUCTIVE & set(actions_of(statement))
        if risky and "*" in listed(statement["Resource"]):
            condition = str(statement.get("Condition", {}))
            assert re.search(r"aws:ResourceTag/ecs-ami:|ec2:CreateAction", condition), \
                f"{statement['Sid']}: {sorted(risky)} on * without a tag condition"
        assert not any(a.endswith(":*") or a == "*" for a in actions_of(statement))


def test_pass_role_only_for_the_builder_roles():
    for params, roles in [({}, [BUILDER_ROLE, TEST_ROLE]),
                          (ALL_OPTIONS, [BUILDER_ROLE, TEST_ROLE, "arn:aws:iam::123456789012:role/mine"])]:
        _, statements = role_statements(params)
        passing = [s for s in statements if "iam:PassRole" in actions_of(s)]
        assert len(passing) == 1
        assert listed(passing[0]["Resource"]) == roles
        assert passing[0]["Condition"] == {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}


def test_kms_only_for_the_listed_keys_and_only_through_ec2():
    _, statements = role_statements()
    assert not [s for s in statements if any(a.startswith("kms:") for a in actions_of(s))]
    _, statements = role_statements(ALL_OPTIONS)
    (kms,) = [s for s in statements if any(a.startswith("kms:") for a in actions_of(s))]
    assert kms["Resource"] == ["arn:aws:kms:us-east-1:123456789012:key/k"]
    assert kms["Condition"] == {"StringEquals": {"kms:ViaService": "ec2.us-east-1.amazonaws.com"}}


def test_unhandled_events_go_to_the_stacks_queue():
    """An event the function failed on even after Lambda's retries is kept, not dropped: the
    on-failure destination is the stack's queue, and the role may send to it and nothing else."""
    template, statements = role_statements()
    config = template["Resources"]["Function"]["Properties"]["EventInvokeConfig"]
    assert config["MaximumRetryAttempts"] == 2
    assert config["DestinationConfig"]["OnFailure"] == {
        "Type": "SQS", "Destination": {"Fn::GetAtt": ["UnhandledEvents", "Arn"]}}
    (send,) = [s for s in statements if any(a.startswith("sqs:") for a in actions_of(s))]
    assert actions_of(send) == ["sqs:SendMessage"] and listed(send["Resource"]) == [QUEUE]


def test_the_function_may_invoke_only_itself():
    """The hand-over (lambda:InvokeFunction) is not served by the local AWS, so its statement
    is checked here: the one function it names is the function this template deploys."""
    template = load(str(REPO / "template.yaml"))
    for params, expected in [({}, "ecs-ami-ecs-ami"), ({"FunctionName": "builds"}, "builds")]:
        resolver = Resolver(template, params, stack_name="ecs-ami", attributes=ATTRIBUTES)
        # Without the parameter, the name every earlier version gave: no replacement on upgrade.
        name = resolver.resolve(template["Resources"]["Function"]["Properties"]["FunctionName"])
        assert name == expected
        (invoke,) = [s for s in function_role_statements(template, resolver)
                     if "lambda:InvokeFunction" in actions_of(s)]
        assert listed(invoke["Resource"]) == [f"arn:aws:lambda:us-east-1:123456789012:function:{name}"]


# The longest name of each kind the templates give (Lambda's, IAM's and CloudFormation's quotas).
NAME_LIMITS = {"FunctionName": 64, "PolicyName": 128, "RoleName": 64, "QueueName": 80, "LogGroupName": 512,
               "AutoScalingGroupName": 255, "LaunchTemplateName": 128, "ClusterName": 255,
               "Export": 255}


def is_parameter(template, value):
    return list(value) == ["Ref"] and value["Ref"] in (template.get("Parameters") or {})


@pytest.mark.parametrize("path", ["template.yaml", "cfn/ecs-ami.yaml", "cfn/ecs-cluster.yaml"])
def test_every_name_fits_with_the_longest_stack_name(path):
    """A stack name may have 128 characters (CloudFormation's quota): every name a template makes
    from it must still fit its own limit. `FunctionName: ${AWS::StackName}-ecs-ami` did not past
    56 characters (https://docs.aws.amazon.com/lambda/latest/api/API_CreateFunction.html)."""
    template = load(str(REPO / path))
    stack = "s" * 128
    # template.yaml names its function STACK-ecs-ami unless told otherwise (FunctionName): past
    # 56 characters of stack name, the deployer names it.
    resolver = Resolver(template, {"TestCluster": "c", "Architecture": "arm64", "FunctionName": "ecs-ami"},
                        {"ecs-ami-ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:f",
                         "ecs-ami-BuilderInstanceProfile": "b", "ecs-ami-TestInstanceProfile": "t"},
                        stack_name=stack, attributes=ATTRIBUTES)
    names = []
    for logical_id, resource in template["Resources"].items():
        for key, value in (resource.get("Properties") or {}).items():
            if resource["Type"] == "AWS::CloudFormation::Macro" and key == "FunctionName":
                continue  # the ARN of a function the template names elsewhere, not a new name
            if key.endswith("Name") and key in NAME_LIMITS:
                names.append((f"{logical_id}.{key}", NAME_LIMITS[key], resolver.resolve(value)))
            elif key.endswith("Name") and isinstance(value, dict) and not is_parameter(template, value):
                # (A name that is a parameter as given is bounded by its AllowedPattern.)
                pytest.fail(f"{logical_id}.{key} is computed and has no limit in NAME_LIMITS")
    for output, spec in (template.get("Outputs") or {}).items():
        if "Export" in spec:
            names.append((f"Outputs.{output}", NAME_LIMITS["Export"], resolver.resolve(spec["Export"]["Name"])))
    for where, limit, name in names:
        assert len(name) <= limit, f"{where}: {len(name)} characters with a 128-character stack name"
    if path == "template.yaml":
        assert ("Function.FunctionName", 64, "ecs-ami") in names
        assert any(where.startswith("Outputs.") for where, _, _ in names)
        default = Resolver(template, {}, stack_name="s" * 57).resolve(
            template["Resources"]["Function"]["Properties"]["FunctionName"])
        assert len(default) == 65, "the default name is the stack's plus -ecs-ami, as before"


def test_the_role_resolves_in_the_china_partition():
    """kms:ViaService is `ec2.REGION.` plus the partition's DNS suffix: amazonaws.com.cn in
    aws-cn (https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/pseudo-parameter-reference.html,
    AWS::URLSuffix). ARNs carry the partition."""
    template = load(str(REPO / "template.yaml"))
    params = {"BuilderKmsKeyArns": "arn:aws-cn:kms:cn-north-1:123456789012:key/k",
              "AmiCopyRegions": "cn-northwest-1",
              "AmiCopyKmsKeyArns": "arn:aws-cn:kms:cn-northwest-1:123456789012:key/c"}
    resolver = Resolver(template, params, stack_name="ecs-ami", attributes=ATTRIBUTES, region="cn-north-1")
    statements = function_role_statements(template, resolver)
    via = {s["Sid"]: s["Condition"]["StringEquals" if s["Sid"] == "EncryptBuilderVolumes" else "StringLike"]["kms:ViaService"]
           for s in statements if s.get("Sid") in ("EncryptBuilderVolumes", "EncryptCopies")}
    assert via == {"EncryptBuilderVolumes": "ec2.cn-north-1.amazonaws.com.cn",
                   "EncryptCopies": "ec2.*.amazonaws.com.cn"}
    # EC2's service principal in China: both names, in PassRole's condition and the roles' trust.
    (passing,) = [s for s in statements if s.get("Sid") == "PassOnlyBuilderRoles"]
    principals = ["ec2.amazonaws.com", "ec2.amazonaws.com.cn"]
    assert passing["Condition"]["StringEquals"]["iam:PassedToService"] == principals
    for role in ("BuilderRole", "TestInstanceRole"):
        trust = resolver.resolve(template["Resources"][role]["Properties"]["AssumeRolePolicyDocument"])
        assert trust["Statement"][0]["Principal"]["Service"] == principals
    aws = Resolver(template, params, stack_name="ecs-ami", attributes=ATTRIBUTES)
    (passing,) = [s for s in function_role_statements(template, aws) if s.get("Sid") == "PassOnlyBuilderRoles"]
    assert passing["Condition"]["StringEquals"]["iam:PassedToService"] == "ec2.amazonaws.com"
    arns = [arn for s in statements for arn in listed(s["Resource"]) if arn.startswith("arn:")
            and arn not in ATTRIBUTES.values()]
    assert arns and all(arn.startswith("arn:aws-cn:") for arn in arns), arns


def test_the_ami_template_resolves_for_both_architectures():
    template = load(str(REPO / "cfn/ecs-ami.yaml"))
    imports = {"ecs-ami-ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:f",
               "ecs-ami-BuilderInstanceProfile": "builder",
               "ecs-ami-TestInstanceProfile": "tester"}
    for architecture, parameter in [("x86_64", "/recommended/image_id"),
                                    ("arm64", "/arm64/recommended/image_id")]:
        properties = Resolver(template, {"Architecture": architecture, "TestCluster": "c"}, imports).resolve(
            template["Resources"]["Ami"]["Properties"])
        assert properties["SourceAmiParameter"].endswith(parameter)
        assert "SubnetId" not in properties and "SecurityGroupIds" not in properties
        for step in properties["Steps"]:
            assert all(isinstance(c, str) for c in step.get("Commands", [])), step["Name"]


def test_the_cluster_follows_the_image():
    """A new AMI id gives the launch template a new version; the group must follow its latest
    version and replace instances only as fast as they join the cluster."""
    resources = load(str(REPO / "cfn/ecs-cluster.yaml"))["Resources"]
    data = resources["LaunchTemplate"]["Properties"]["LaunchTemplateData"]
    assert data["ImageId"] == {"Ref": "ImageId"}
    group = resources["AutoScalingGroup"]
    assert group["Properties"]["LaunchTemplate"]["Version"] == {
        "Fn::GetAtt": ["LaunchTemplate", "LatestVersionNumber"]}
    rolling = group["UpdatePolicy"]["AutoScalingRollingUpdate"]
    assert rolling["WaitOnResourceSignals"] is True
    assert group["CreationPolicy"]["ResourceSignal"]["Count"] == {"Ref": "DesiredCapacity"}
    stack = load(str(REPO / "cfn/ecs-stack.yaml"))["Resources"]
    assert stack["Cluster"]["Properties"]["Parameters"]["ImageId"] == {
        "Fn::GetAtt": ["Image", "Outputs.ImageId"]}


def test_copies_only_to_the_listed_regions_and_only_tagged():
    """Regions (CopyImage: https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/copy-ami-permissions.html):
    without AmiCopyRegions the role grants nothing outside the function's region; with it, every
    statement that reaches other regions is limited to them by aws:RequestedRegion, creates only
    tagged copies, touches only tagged ones, and copies only this account's images."""
    _, statements = role_statements()
    assert not [s for s in statements if "ec2:CopyImage" in actions_of(s)]
    assert not [r for s in statements for r in listed(s["Resource"])
                if r.startswith("arn:") and r.split(":")[3] == "*"], "a statement reaches other regions"
    _, statements = role_statements(COPY_OPTIONS)
    regional = [s for s in statements
                if any(r.startswith(("arn:aws:ec2:*:", "arn:aws:ssm:*:")) for r in listed(s["Resource"]))]
    assert {s["Sid"] for s in regional} == {"CopyOnlyTaggedImages", "TagCopiesOnCreate",
                                            "OperateOnlyOurCopies", "PublishImageParametersInCopyRegions"}
    for statement in regional:
        assert statement["Condition"]["StringEquals"]["aws:RequestedRegion"] == ["eu-west-1", "us-west-2"]
    by_sid = {s["Sid"]: s for s in statements}
    assert by_sid["CopyOnlyTaggedImages"]["Condition"]["StringLike"] == {"aws:RequestTag/ecs-ami:logical-id": "?*"}
    assert by_sid["TagCopiesOnCreate"]["Condition"]["StringEquals"]["ec2:CreateAction"] == "CopyImage"
    assert "aws:ResourceTag/ecs-ami:logical-id" in by_sid["OperateOnlyOurCopies"]["Condition"]["StringLike"]
    source = by_sid["CopyFromOwnImages"]
    assert source["Resource"] == "arn:aws:ec2:us-east-1::image/*"
    assert source["Condition"]["StringEquals"]["ec2:Owner"] == "123456789012"
    (copies_kms,) = [s for s in statements if s["Sid"] == "EncryptCopies"]
    assert listed(copies_kms["Resource"]) == ["arn:aws:kms:eu-west-1:123456789012:key/c"]
    assert copies_kms["Condition"] == {"StringLike": {"kms:ViaService": "ec2.*.amazonaws.com"}}
    _, statements = role_statements({"AmiCopyRegions": "eu-west-1"})
    assert "EncryptCopies" not in {s["Sid"] for s in statements}
    (deny,) = [s for s in statements if s["Effect"] == "Deny"]
    assert deny["Sid"] == "CopyNoOtherOwnersImages" and deny["Action"] == "ec2:CopyImage"
    assert deny["Resource"] == "arn:aws:ec2:us-east-1::image/*"
    assert deny["Condition"] == {"StringNotEquals": {"ec2:Owner": "123456789012"}}


def test_records_are_swept_every_hour_and_removed_with_the_stack():
    """The hourly sweep invokes the function with its maintenance event (src/handler/maintenance.rs,
    SWEEP_EVENT_KEY), as a role that may invoke that function alone; so does the schedule that
    ends instances kept for debugging, every 5 minutes without a flexible window (an instance
    outlives its KeepFailedInstanceMinutes by at most 5 minutes); the store resource, whose
    Delete removes every record and lease, is served by the function."""
    template = load(str(REPO / "template.yaml"))
    resources = template["Resources"]
    schedule = resources["SweepRecords"]["Properties"]
    assert schedule["ScheduleExpression"] == "rate(1 hour)"
    assert schedule["Target"]["Arn"] == {"Fn::GetAtt": ["Function", "Arn"]}
    assert json.loads(schedule["Target"]["Input"]) == {"EcsAmiMaintenance": "sweep"}
    source = (REPO / "src/handler/maintenance.rs").read_text()
    assert 'SWEEP_EVENT_KEY: &str = "EcsAmiMaintenance"' in source
    assert 'STORE_RESOURCE_TYPE: &str = "Custom::EcsAmiStore"' in source
    role = resources["SweepScheduleRole"]["Properties"]
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "scheduler.amazonaws.com"}
    assert trust["Condition"]["StringEquals"]["aws:SourceAccount"] == {"Ref": "AWS::AccountId"}
    (policy,) = role["Policies"]
    (statement,) = policy["PolicyDocument"]["Statement"]
    assert statement["Action"] == "lambda:InvokeFunction"
    assert statement["Resource"] == {"Fn::GetAtt": ["Function", "Arn"]}
    kept = resources["EndKeptInstances"]["Properties"]
    assert kept["ScheduleExpression"] == "rate(5 minutes)"
    assert kept["FlexibleTimeWindow"] == {"Mode": "OFF"}
    assert kept["Target"]["Arn"] == {"Fn::GetAtt": ["Function", "Arn"]}
    assert kept["Target"]["RoleArn"] == {"Fn::GetAtt": ["SweepScheduleRole", "Arn"]}
    assert json.loads(kept["Target"]["Input"]) == {"EcsAmiMaintenance": "end-kept-instances"}
    assert 'END_KEPT_INSTANCES: &str = "end-kept-instances"' in source
    store = resources["Store"]
    assert store["Type"] == "Custom::EcsAmiStore"
    assert store["Properties"] == {"ServiceToken": {"Fn::GetAtt": ["Function", "Arn"]}}
