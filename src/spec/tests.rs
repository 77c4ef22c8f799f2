//! The properties as a user writes them, valid and not.

use super::test_support::*;
use super::*;
use serde_json::json;

#[test]
fn minimal_properties_parse_with_defaults() {
    let spec = AmiSpec::parse(&minimal()).unwrap();
    assert_eq!(spec.source, Source::Ami("ami-0aae19d30bab785d3".into()));
    assert!(spec.steps.is_empty() && spec.tags.is_empty() && spec.instance_type.is_none());
}

#[test]
fn full_properties_parse_with_strings_for_numbers_and_booleans() {
    let spec = AmiSpec::parse(&json!({
        "SourceAmiParameter": "/aws/service/ecs/optimized-ami/amazon-linux-2023/recommended/image_id",
        "IamInstanceProfile": "arn:aws:iam::123456789012:instance-profile/builder",
        "InstanceType": "t4g.medium",
        "SubnetId": "subnet-0123456789abcdef0",
        "SecurityGroupIds": ["sg-0123abcd"],
        "AmiName": "ecs node (2026.11) [al2023]",
        "AmiDescription": "ECS node",
        "BlockDeviceMappings": [{"DeviceName": "/dev/xvdb", "Ebs": {"VolumeSize": "20", "VolumeType": "gp3", "Throughput": 250, "Encrypted": "true", "DeleteOnTermination": "false"}}],
        "Tags": [{"Key": "team", "Value": "platform"}, {"Key": "cost", "Value": 42}],
        "Steps": [
            {"Name": "update", "Commands": ["dnf -y update"], "Environment": {"HTTP_PROXY": ""}, "TimeoutSeconds": "900"},
            {"Name": "config", "Path": "/etc/ecs/ecs.config", "Content": "ECS_CLUSTER=x\n", "Mode": "600", "Owner": "root:root"}
        ]
    }))
    .unwrap();
    assert_eq!(spec.block_device_mappings[0].ebs.volume_size, Some(20));
    assert_eq!(
        spec.block_device_mappings[0].ebs.delete_on_termination,
        Some(false)
    );
    assert_eq!(spec.tags["cost"], "42");
    assert_eq!(spec.steps[0].timeout_seconds, 900);
    assert_eq!(spec.steps[1].timeout_seconds, DEFAULT_STEP_TIMEOUT_SECONDS);
    assert!(matches!(&spec.steps[1].action, Action::File { mode, .. } if mode == "600"));
}

#[test]
fn source_must_be_exactly_one() {
    assert_problem(json!({"IamInstanceProfile": "p"}), "SourceAmi", "required");
    assert_problem(
        with(json!({"SourceAmiParameter": "/a/b"})),
        "SourceAmi",
        "give only one source, not SourceAmi and SourceAmiParameter",
    );
    assert_problem(
        json!({"SourceAmiParameter": "/a/b", "SourceAmiFilter": {"Owners": ["self"], "Name": "x"}, "IamInstanceProfile": "p"}),
        "SourceAmiParameter",
        "not SourceAmiParameter and SourceAmiFilter",
    );
    assert_problem(
        with(json!({"SourceAmi": "ami-xyz"})),
        "SourceAmi",
        "not an AMI id",
    );
    assert_problem(
        json!({"SourceAmiParameter": "bad name!", "IamInstanceProfile": "p"}),
        "SourceAmiParameter",
        "not an SSM parameter name",
    );
}

#[test]
fn imds_support_takes_only_v2() {
    let spec = AmiSpec::parse(&with(json!({"ImdsSupport": "v2.0"}))).unwrap();
    assert_eq!(spec.imds_support.as_deref(), Some("v2.0"));
    assert_problem(
        with(json!({"ImdsSupport": "v1.0"})),
        "ImdsSupport",
        "not v2.0",
    );
    assert_problem(
        with(json!({"ImdsSupport": "required"})),
        "ImdsSupport",
        "not v2.0",
    );
}

#[test]
fn each_scalar_property_is_checked() {
    assert_problem(
        json!({"SourceAmi": "ami-12345678"}),
        "IamInstanceProfile",
        "required",
    );
    assert_problem(
        with(json!({"IamInstanceProfile": "arn:aws:iam::1:role/x"})),
        "IamInstanceProfile",
        "ARN",
    );
    assert_problem(
        with(json!({"IamInstanceProfile": "has space"})),
        "IamInstanceProfile",
        "not an instance profile name",
    );
    assert_problem(
        with(json!({"InstanceType": "large"})),
        "InstanceType",
        "not an EC2 instance type",
    );
    assert_problem(
        with(json!({"SubnetId": "vpc-12345678"})),
        "SubnetId",
        "not a subnet id",
    );
    assert_problem(
        with(json!({"SecurityGroupIds": ["sg-1"]})),
        "SecurityGroupIds[0]",
        "not a security group id",
    );
    assert_problem(
        with(json!({"SecurityGroupIds": "sg-12345678"})),
        "SecurityGroupIds",
        "must be a list",
    );
    assert_problem(with(json!({"AmiName": "ab"})), "AmiName", "3 to 104");
    assert_problem(
        with(json!({"AmiName": "name#1"})),
        "AmiName",
        "'#' is not allowed",
    );
    assert_problem(
        with(json!({"AmiDescription": "d".repeat(256)})),
        "AmiDescription",
        "255",
    );
    assert_problem(
        with(json!({"InstanceType": ["t3.small"]})),
        "InstanceType",
        "must be a string",
    );
    assert_problem(with(json!({"AmiName": ""})), "AmiName", "must not be empty");
}

#[test]
fn unknown_properties_are_named_at_every_level() {
    assert_problem(
        with(json!({"SourceAMI": "ami-12345678"})),
        "SourceAMI",
        "unknown property",
    );
    assert_problem(
        with(json!({"Steps": [{"Name": "a", "Command": ["x"]}]})),
        "Steps[0].Command",
        "unknown property",
    );
    assert_problem(
        with(json!({"BlockDeviceMappings": [{"DeviceName": "/dev/xvdb", "Ebs": {"Size": 3}}]})),
        "BlockDeviceMappings[0].Ebs.Size",
        "unknown property",
    );
}

#[test]
fn timeouts_follow_service_timeout() {
    assert_eq!(AmiSpec::parse(&minimal()).unwrap().timeout_minutes, 55);
    assert_eq!(
        AmiSpec::parse(&with(json!({"ServiceTimeout": "1200"})))
            .unwrap()
            .timeout_minutes,
        15
    );
    assert_eq!(
        AmiSpec::parse(&with(json!({"TimeoutMinutes": "30"})))
            .unwrap()
            .timeout_minutes,
        30
    );
    assert_problem(
        with(json!({"TimeoutMinutes": 56})),
        "TimeoutMinutes",
        "more than the 55 minutes",
    );
    assert_problem(
        with(json!({"ServiceTimeout": 1200, "TimeoutMinutes": 20})),
        "TimeoutMinutes",
        "more than the 15 minutes",
    );
    assert_problem(
        with(json!({"ServiceTimeout": 300})),
        "ServiceTimeout",
        "leaves no time to build",
    );
    assert_problem(
        with(json!({"ServiceTimeout": 4000})),
        "ServiceTimeout",
        "out of range",
    );
    assert_problem(
        with(json!({"TimeoutMinutes": 0})),
        "TimeoutMinutes",
        "out of range",
    );
}

/// Over 55 minutes through the EcsAmi macro's resources: up to 710, ServiceTimeout no longer the
/// bound (the wait condition is), but long enough for the first answer; not fingerprinted.
#[test]
fn long_builds_are_bounded_by_the_wait_condition() {
    let long = |extra: serde_json::Value| {
        let mut properties = with(extra);
        properties["SignalUrl"] = json!("https://handle.invalid/h");
        properties["ImageResource"] = json!("Ami");
        properties
    };
    let spec = AmiSpec::parse(&long(json!({"TimeoutMinutes": 710}))).unwrap();
    assert_eq!(spec.timeout_minutes, 710);
    assert_eq!(
        AmiSpec::parse(&long(json!({}))).unwrap().timeout_minutes,
        710
    );
    assert_problem(
        long(json!({"TimeoutMinutes": 711})),
        "TimeoutMinutes",
        "out of range",
    );
    assert_problem(
        long(json!({"ServiceTimeout": 600, "TimeoutMinutes": 600})),
        "ServiceTimeout",
        "too short for a build through the EcsAmi macro",
    );
    assert!(AmiSpec::parse(&long(json!({"ServiceTimeout": 900}))).is_ok());
    assert_problem(
        with(json!({"TimeoutMinutes": 600})),
        "TimeoutMinutes",
        "add the deployment's EcsAmi macro",
    );
    let short = AmiSpec::parse(&with(json!({}))).unwrap();
    assert_eq!(
        fingerprint::of_request(&spec),
        fingerprint::of_request(&short),
        "neither the mode nor TimeoutMinutes shapes the image"
    );
    let same_bound = AmiSpec::parse(&long(json!({"TimeoutMinutes": 55}))).unwrap();
    assert!(same_bound.differs_only_in_distribution(&short));
}

#[test]
fn all_problems_are_reported_together() {
    let found = problems(json!({"SourceAmi": "bad", "InstanceType": "x", "Bogus": 1}));
    assert!(found.len() >= 4, "{found:?}");
}

#[test]
fn non_object_properties_are_refused() {
    assert_problem(json!("SourceAmi"), "ResourceProperties", "object");
}

#[test]
fn keep_failed_instance_minutes_is_bounded_and_changes_no_image() {
    let with = |minutes: serde_json::Value| {
        let mut properties = minimal();
        properties["KeepFailedInstanceMinutes"] = minutes;
        AmiSpec::parse(&properties)
    };
    assert_eq!(
        AmiSpec::parse(&minimal())
            .unwrap()
            .keep_failed_instance_minutes,
        0
    );
    let kept = with(json!("240")).unwrap();
    assert_eq!(kept.keep_failed_instance_minutes, 240);
    assert_eq!(with(json!(0)).unwrap().keep_failed_instance_minutes, 0);
    for bad in [json!(241), json!(-1), json!("half an hour")] {
        let error = with(bad.clone()).unwrap_err().to_string();
        assert!(
            error.contains("KeepFailedInstanceMinutes"),
            "{bad}: {error}"
        );
    }
    // Applied in place: neither the fingerprint nor the properties a rollback looks for move,
    // and an Update changing it alone does not resolve the source again.
    let none = AmiSpec::parse(&minimal()).unwrap();
    assert!(kept.differs_only_in_distribution(&none));
    assert_eq!(
        fingerprint::of_request(&kept),
        fingerprint::of_request(&none)
    );
}
