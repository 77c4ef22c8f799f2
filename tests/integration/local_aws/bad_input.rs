//! The bad-input catalogue: each invalid Create goes through the whole handler on the local AWS
//! and must be answered FAILED with a Reason that names the property and the problem, before
//! any AWS call is made (the local AWS counts every call it receives). Each case writes its row
//! of the Reliability table (docs/internals/reliability.md).

use crate::common;

use common::report;
use common::{LocalAws, PROFILE, event, invoke};
use serde_json::{Map, Value, json};

const SECTION: &str = "Bad input (refused before anything is launched)";

fn valid() -> Value {
    json!({
        "ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:ecs-ami",
        "SourceAmi": "ami-0aae19d30bab785d3",
        "IamInstanceProfile": PROFILE,
        "Steps": [{"Name": "a", "Commands": ["echo a"]}]
    })
}

/// `valid()` with keys set (a null removes the key).
fn with(changes: Value) -> Value {
    let mut properties = valid();
    for (key, value) in changes.as_object().unwrap() {
        if value.is_null() {
            properties.as_object_mut().unwrap().remove(key);
        } else {
            properties[key] = value.clone();
        }
    }
    properties
}

fn step(step: Value) -> Value {
    with(json!({ "Steps": [step] }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_is_refused_before_any_call_naming_the_property() {
    let local = LocalAws::start().await;
    let aws = local.aws().await;
    let many_tags: Map<String, Value> = (0..41).map(|i| (format!("t{i}"), json!("x"))).collect();
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "A required property is missing (IamInstanceProfile)",
            with(json!({"IamInstanceProfile": null})),
            "IamInstanceProfile: required",
        ),
        (
            "Neither source property",
            with(json!({"SourceAmi": null})),
            "SourceAmi: required: give SourceAmi (an AMI id), SourceAmiParameter",
        ),
        (
            "Both source properties",
            with(json!({"SourceAmiParameter": "/aws/service/x"})),
            "SourceAmi: give only one source, not SourceAmi and SourceAmiParameter",
        ),
        (
            "SourceAmiFilter without Owners",
            with(json!({"SourceAmi": null, "SourceAmiFilter": {"Name": "al2023-ami-ecs-*"}})),
            "SourceAmiFilter.Owners: required",
        ),
        (
            "SourceAmiFilter with Owners alone",
            with(json!({"SourceAmi": null, "SourceAmiFilter": {"Owners": ["amazon"]}})),
            "SourceAmiFilter: give Name or Filters",
        ),
        (
            "SourceAmiFilter filtering on the image state",
            with(
                json!({"SourceAmi": null, "SourceAmiFilter": {"Owners": ["amazon"], "Filters": [{"Name": "state", "Values": ["pending"]}]}}),
            ),
            "SourceAmiFilter.Filters[0]: filter \"state\" is not taken here",
        ),
        (
            "A property name with a typo (Step for Steps)",
            with(json!({"Step": []})),
            "Step: unknown property (expected one of:",
        ),
        (
            "A typo inside a step (Command for Commands)",
            step(json!({"Name": "a", "Command": ["x"]})),
            "Steps[0].Command: unknown property",
        ),
        (
            "A wrong type (Steps as a string)",
            with(json!({"Steps": "echo a"})),
            "Steps: must be a list, not a string",
        ),
        (
            "A wrong type (a number where a whole number is wanted)",
            step(json!({"Name": "a", "Commands": ["x"], "TimeoutSeconds": "ten"})),
            "Steps[0].TimeoutSeconds: must be a whole number",
        ),
        (
            "ResourceProperties that are not an object",
            json!(["SourceAmi"]),
            "ResourceProperties: must be an object of properties",
        ),
        (
            "A malformed AMI id",
            with(json!({"SourceAmi": "ami-xyz"})),
            "SourceAmi: \"ami-xyz\" is not an AMI id",
        ),
        (
            "A malformed instance type",
            with(json!({"InstanceType": "huge"})),
            "InstanceType: \"huge\" is not an EC2 instance type",
        ),
        (
            "A malformed subnet id",
            with(json!({"SubnetId": "subnet-XYZ"})),
            "SubnetId: \"subnet-XYZ\" is not a subnet id",
        ),
        (
            "A malformed device name",
            with(
                json!({"BlockDeviceMappings": [{"DeviceName": "sdb", "Ebs": {"VolumeSize": 20}}]}),
            ),
            "BlockDeviceMappings[0].DeviceName: \"sdb\" is not a device name",
        ),
        (
            "A volume size out of range",
            with(
                json!({"BlockDeviceMappings": [{"DeviceName": "/dev/xvdb", "Ebs": {"VolumeSize": 70000, "VolumeType": "gp3"}}]}),
            ),
            "BlockDeviceMappings[0].Ebs.VolumeSize: 70000 is out of range 1..=65536",
        ),
        (
            "More tags than EC2 allows beside the product's own",
            with(json!({"Tags": many_tags})),
            "Tags: 41 tags given; at most 40 fit",
        ),
        (
            "A tag key longer than 128 characters",
            with(json!({"Tags": {"k".repeat(129): "v"}})),
            "must be 1 to 128 characters",
        ),
        (
            "A tag value longer than 256 characters",
            with(json!({"Tags": {"k": "v".repeat(257)}})),
            "Tags.k: the value of tag \"k\" is longer than 256 characters",
        ),
        (
            "A tag key with a reserved prefix",
            with(json!({"Tags": {"aws:x": "v"}})),
            "Tags.aws:x: tag key \"aws:x\" uses a reserved prefix",
        ),
        (
            "A file path that is not absolute",
            step(json!({"Name": "f", "Path": "etc/ecs/ecs.config", "Content": ""})),
            "Steps[0].Path: \"etc/ecs/ecs.config\" is not an absolute path",
        ),
        (
            "A file path with ..",
            step(json!({"Name": "f", "Path": "/etc/../root/x", "Content": ""})),
            "Steps[0].Path: \"/etc/../root/x\" must name a file, without . or .. components",
        ),
        (
            "An invalid file mode",
            step(json!({"Name": "f", "Path": "/x", "Content": "", "Mode": "0999"})),
            "Steps[0].Mode: \"0999\" is not an octal file mode",
        ),
        (
            "An invalid owner",
            step(json!({"Name": "f", "Path": "/x", "Content": "", "Owner": "Root:Wheel"})),
            "Steps[0].Owner: \"Root:Wheel\" is not USER or USER:GROUP",
        ),
        (
            "Duplicate step names",
            with(
                json!({"Steps": [{"Name": "a", "Commands": ["x"]}, {"Name": "a", "Commands": ["y"]}]}),
            ),
            "Steps[1].Name: \"a\" is used by an earlier step",
        ),
        (
            "An empty command list",
            step(json!({"Name": "a", "Commands": []})),
            "Steps[0].Commands: must list at least one command",
        ),
        (
            "An environment variable name the shell cannot take",
            step(json!({"Name": "a", "Commands": ["x"], "Environment": {"MY-VAR": "1"}})),
            "Steps[0].Environment.MY-VAR: is not a shell variable name",
        ),
        (
            "A step TimeoutSeconds out of range",
            step(json!({"Name": "a", "Commands": ["x"], "TimeoutSeconds": 0})),
            "Steps[0].TimeoutSeconds: 0 is out of range 1..=43200",
        ),
        (
            "TimeoutMinutes beyond what ServiceTimeout leaves",
            with(json!({"TimeoutMinutes": 60})),
            "TimeoutMinutes: 60 is more than the 55 minutes",
        ),
        (
            "A ServiceTimeout too short to build",
            with(json!({"ServiceTimeout": 200})),
            "ServiceTimeout: 200 s leaves no time to build",
        ),
        (
            "A file step larger than one SSM command takes (refused, with a request to split it)",
            step(json!({"Name": "big", "Path": "/x", "Content": "x".repeat(70_000)})),
            "Steps[0]: is 94762 bytes once rendered for SSM, more than the 65536 one command accepts; split it into several steps",
        ),
        (
            "A step output name CloudFormation cannot use as an attribute",
            step(json!({"Name": "a", "Commands": ["x"], "Outputs": ["docker-version"]})),
            "Steps[0].Outputs[0]: \"docker-version\" is not an output name",
        ),
        (
            "OutputTags naming an output no step declares",
            with(json!({"OutputTags": {"v": "Version"}})),
            "OutputTags.v: \"Version\" is neither SourceImageId nor an output of any step",
        ),
    ];
    let mut problems_seen = 0;
    for (n, (scenario, properties, words)) in cases.into_iter().enumerate() {
        local.take_calls().await;
        let answer = invoke(
            &aws,
            event(
                "Create",
                "bad-input",
                &format!("req-bad-{n}"),
                None,
                properties,
            ),
        )
        .await;
        let calls = local.take_calls().await;
        let reason = answer["Reason"].as_str().unwrap_or_default();
        assert_eq!(answer["Status"], "FAILED", "{scenario}: {answer}");
        assert!(
            reason.contains(words),
            "{scenario}: {words:?} not in {reason}"
        );
        assert!(
            reason.contains("Nothing was launched"),
            "{scenario}: {reason}"
        );
        assert_eq!(calls["total"], 0, "{scenario}: AWS was called: {calls}");
        problems_seen += 1;
        report::record(
            &format!("bad-{:02}", n + 1),
            SECTION,
            scenario,
            &format!("FAILED, 0 AWS calls: `{}`", words.replace('`', "'")),
            None,
        );
    }
    assert_eq!(problems_seen, 33);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_problems_are_reported_in_one_answer() {
    let local = LocalAws::start().await;
    let aws = local.aws().await;
    let properties = json!({
        "SourceAmi": "ami-nope", "InstanceType": "huge", "Tag": {},
        "Steps": [{"Name": "a", "Commands": []}, {"Name": "a", "Path": "rel", "Content": ""}]
    });
    let answer = invoke(
        &aws,
        event("Create", "bad-all", "req-all", None, properties),
    )
    .await;
    let reason = answer["Reason"].as_str().unwrap();
    for path in [
        "SourceAmi:",
        "IamInstanceProfile:",
        "InstanceType:",
        "Tag:",
        "Steps[0].Commands:",
        "Steps[1].Name:",
        "Steps[1].Path:",
    ] {
        assert!(reason.contains(path), "{path} not in {reason}");
    }
    report::record(
        "bad-all",
        SECTION,
        "Seven problems in one template",
        "FAILED once, naming all seven, so one fix round suffices",
        None,
    );
}
