//! The properties as a user writes them, valid and not.

use super::*;
use serde_json::{Map, json};

fn minimal() -> Value {
    json!({
        "ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:f",
        "SourceAmi": "ami-0aae19d30bab785d3",
        "IamInstanceProfile": "ecs-ami-builder"
    })
}

fn with(extra: Value) -> Value {
    let mut base = minimal();
    for (k, v) in extra.as_object().unwrap() {
        base[k] = v.clone();
    }
    base
}

fn problems(properties: Value) -> Vec<String> {
    AmiSpec::parse(&properties)
        .expect_err("expected invalid properties")
        .problems
}

fn assert_problem(properties: Value, path: &str, words: &str) {
    let found = problems(properties);
    assert!(
        found
            .iter()
            .any(|p| p.starts_with(&format!("{path}:")) && p.contains(words)),
        "no problem at {path} mentioning {words:?} in {found:?}"
    );
}

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
fn tags_as_a_map_are_accepted() {
    let spec = AmiSpec::parse(&with(json!({"Tags": {"team": "platform"}}))).unwrap();
    assert_eq!(spec.tags["team"], "platform");
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

fn filtered(filter: Value) -> Value {
    json!({"SourceAmiFilter": filter, "IamInstanceProfile": "p"})
}

#[test]
fn a_source_filter_parses_into_owners_and_describe_images_filters() {
    let spec = AmiSpec::parse(&filtered(json!({
        "Owners": ["amazon", "123456789012", "amazon"],
        "Name": "al2023-ami-ecs-hvm-*",
        "Architecture": "arm64",
        "Filters": [{"Name": "tag:Team", "Values": ["platform", 7]}, {"Name": "root-device-type", "Values": ["ebs"]}],
        "IncludeDeprecated": "true"
    })))
    .unwrap();
    let Source::Filter(filter) = spec.source else {
        panic!("not a filter: {:?}", spec.source)
    };
    assert_eq!(filter.owners, ["123456789012", "amazon"]);
    assert!(filter.include_deprecated);
    assert_eq!(
        filter.describe(),
        "architecture=arm64, name=al2023-ami-ecs-hvm-*, root-device-type=ebs, tag:Team=platform|7"
    );
    let plain = AmiSpec::parse(&filtered(json!({"Owners": ["self"], "Name": "team-*"}))).unwrap();
    assert!(matches!(plain.source, Source::Filter(f) if !f.include_deprecated));
}

#[test]
fn a_source_filter_is_refused_where_it_would_match_too_much_or_nothing_valid() {
    let case =
        |filter: Value, path: &str, words: &str| assert_problem(filtered(filter), path, words);
    case(json!("al2023-*"), "SourceAmiFilter", "must be an object");
    case(json!({"Name": "x"}), "SourceAmiFilter.Owners", "required");
    case(
        json!({"Owners": [], "Name": "x"}),
        "SourceAmiFilter.Owners",
        "required",
    );
    case(
        json!({"Owners": ["amazn"], "Name": "x"}),
        "SourceAmiFilter.Owners[0]",
        "neither a 12-digit account id",
    );
    case(
        json!({"Owners": ["self"]}),
        "SourceAmiFilter",
        "give Name or Filters",
    );
    case(
        json!({"Owners": ["self"], "Architecture": "arm64"}),
        "SourceAmiFilter",
        "give Name or Filters",
    );
    case(
        json!({"Owners": ["self"], "Name": "x", "Architecture": "aarch64"}),
        "SourceAmiFilter.Architecture",
        "not one of",
    );
    case(
        json!({"Owners": ["self"], "Name": "x".repeat(129)}),
        "SourceAmiFilter.Name",
        "at most 128",
    );
    case(
        json!({"Owners": ["self"], "Filters": [{"Name": "state", "Values": ["available"]}]}),
        "SourceAmiFilter.Filters[0]",
        "always filters on state=available",
    );
    case(
        json!({"Owners": ["self"], "Name": "x", "Filters": [{"Name": "name", "Values": ["y"]}]}),
        "SourceAmiFilter.Filters[0]",
        "give the name as SourceAmiFilter.Name",
    );
    case(
        json!({"Owners": ["self"], "Filters": [{"Name": "tag:a", "Values": []}]}),
        "SourceAmiFilter.Filters[0]",
        "needs Values",
    );
    case(
        json!({"Owners": ["self"], "Filters": [{"Name": "tag:a", "Values": [["x"]]}]}),
        "SourceAmiFilter.Filters[0].Values[0]",
        "must be a string",
    );
    case(
        json!({"Owners": ["self"], "Filters": [{"Name": "tag:a", "Values": ["1"]}, {"Name": "tag:a", "Values": ["2"]}]}),
        "SourceAmiFilter.Filters[1]",
        "given twice",
    );
    case(
        json!({"Owners": ["self"], "Filters": [{"Values": ["1"]}]}),
        "SourceAmiFilter.Filters[0]",
        "needs a Name",
    );
    case(
        json!({"Owners": ["self"], "Name": "x", "MostRecent": true}),
        "SourceAmiFilter.MostRecent",
        "unknown property",
    );
}

#[test]
fn launch_permissions_take_accounts_organizations_and_units() {
    let spec = AmiSpec::parse(&with(json!({"LaunchPermissions": {
        "UserIds": ["111122223333", 444455556666_u64],
        "OrganizationArns": ["arn:aws:organizations::111122223333:organization/o-exampleorg1"],
        "OrganizationalUnitArns": ["arn:aws:organizations::111122223333:ou/o-exampleorg1/ou-ab12-cdefgh34"]
    }})))
    .unwrap();
    let shared = spec.launch_permissions;
    assert_eq!(
        shared.user_ids.iter().collect::<Vec<_>>(),
        ["111122223333", "444455556666"]
    );
    assert_eq!(shared.organization_arns.len(), 1);
    assert_eq!(shared.organizational_unit_arns.len(), 1);
    assert!(
        AmiSpec::parse(&minimal())
            .unwrap()
            .launch_permissions
            .is_empty()
    );
}

#[test]
fn ssm_parameters_are_full_names_outside_aws_and_the_functions_records() {
    let spec = AmiSpec::parse(&with(
        json!({"SsmParameters": [{"Name": "/ecs-ami/images/base"}, {"Name": "/team/x.y_z-1"}]}),
    ))
    .unwrap();
    assert_eq!(
        spec.ssm_parameters,
        ["/ecs-ami/images/base", "/team/x.y_z-1"]
    );
    let case = |parameters: Value, path: &str, words: &str| {
        assert_problem(with(json!({ "SsmParameters": parameters })), path, words)
    };
    case(json!({"Name": "/a"}), "SsmParameters", "must be a list");
    case(
        json!(["/a"]),
        "SsmParameters[0]",
        "must be an object with a Name",
    );
    case(
        json!([{"Nme": "/a"}]),
        "SsmParameters[0].Nme",
        "unknown property",
    );
    case(
        json!([{"Name": "relative/name"}]),
        "SsmParameters[0].Name",
        "not a full parameter path",
    );
    case(
        json!([{"Name": "/a b"}]),
        "SsmParameters[0].Name",
        "not a parameter name",
    );
    case(
        json!([{"Name": "/aws/service/x"}]),
        "SsmParameters[0].Name",
        "reserved by AWS",
    );
    case(
        json!([{"Name": "/SSM/x"}]),
        "SsmParameters[0].Name",
        "reserved by AWS",
    );
    case(
        json!([{"Name": "/ecs-ami/requests/x"}]),
        "SsmParameters[0].Name",
        "the function's own records",
    );
    case(
        json!([{"Name": "/ecs-ami/leases"}]),
        "SsmParameters[0].Name",
        "the function's own records",
    );
    case(
        json!([{"Name": "/a".repeat(16)}]),
        "SsmParameters[0].Name",
        "more than 15 levels",
    );
    case(
        json!([{"Name": "/a/b"}, {"Name": "/a/b"}]),
        "SsmParameters[1].Name",
        "given twice",
    );
    let many: Vec<Value> = (0..21)
        .map(|i| json!({"Name": format!("/p/{i}")}))
        .collect();
    case(json!(many), "SsmParameters", "at most 20");
    // Read leniently for a Delete: the valid names of whatever the properties hold.
    let names = ssm_parameter_names(
        &json!({"SsmParameters": [{"Name": "/ok/a"}, {"Name": "bad"}, 7, {"Name": "/aws/x"}]}),
        Some("us-east-1"),
    );
    assert_eq!(names.home, ["/ok/a"]);
    assert!(names.copies.is_empty());
}

#[test]
fn ssm_parameters_outside_the_deployments_prefix_are_named() {
    let spec = AmiSpec::parse(&with(
        json!({"Regions": [{"Region": "eu-west-1"}], "SsmParameters": [
            {"Name": "/ecs-ami/images/a"},
            {"Name": "/other/b"},
            {"Name": "/other/c", "Region": "eu-west-1"},
        ]}),
    ))
    .unwrap();
    let refused = spec.check_parameter_prefix("/ecs-ami/images/").unwrap_err();
    assert_eq!(refused.problems.len(), 2, "{refused}");
    assert!(
        refused.problems[0].starts_with("SsmParameters: /other/b is outside"),
        "{refused}"
    );
    assert!(
        refused.problems[1].starts_with("SsmParameters: /other/c is outside"),
        "{refused}"
    );
    assert!(spec.check_parameter_prefix("/").is_ok());
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
fn launch_permissions_name_what_is_not_an_account_or_an_organization() {
    let case = |shared: Value, path: &str, words: &str| {
        assert_problem(with(json!({ "LaunchPermissions": shared })), path, words)
    };
    case(
        json!(["111122223333"]),
        "LaunchPermissions",
        "must be an object",
    );
    case(
        json!({"UserIds": ["11112222333"]}),
        "LaunchPermissions.UserIds[0]",
        "not a 12-digit account id",
    );
    case(
        json!({"UserIds": ["111122223333", "111122223333"]}),
        "LaunchPermissions.UserIds[1]",
        "given twice",
    );
    case(
        json!({"UserIds": "111122223333"}),
        "LaunchPermissions.UserIds",
        "must be a list",
    );
    case(
        json!({"OrganizationArns": ["o-exampleorg1"]}),
        "LaunchPermissions.OrganizationArns[0]",
        "not an organization ARN",
    );
    case(
        json!({"OrganizationArns": ["arn:aws:organizations::111122223333:organization/o-SHORT"]}),
        "LaunchPermissions.OrganizationArns[0]",
        "not an organization ARN",
    );
    case(
        json!({"OrganizationalUnitArns": ["arn:aws:organizations::111122223333:organization/o-exampleorg1"]}),
        "LaunchPermissions.OrganizationalUnitArns[0]",
        "not an organizational unit ARN",
    );
    case(
        json!({"Accounts": ["111122223333"]}),
        "LaunchPermissions.Accounts",
        "unknown property",
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
fn block_devices_are_checked() {
    let bdm = |m: Value| with(json!({"BlockDeviceMappings": [m]}));
    assert_problem(
        bdm(json!({"DeviceName": "xvdb", "Ebs": {}})),
        "BlockDeviceMappings[0].DeviceName",
        "not a device name",
    );
    assert_problem(
        bdm(json!({"DeviceName": "/dev/xvdb"})),
        "BlockDeviceMappings[0].Ebs",
        "required",
    );
    assert_problem(
        bdm(json!({"DeviceName": "/dev/xvdb", "Ebs": {"VolumeSize": 0}})),
        "BlockDeviceMappings[0].Ebs.VolumeSize",
        "out of range",
    );
    assert_problem(
        bdm(json!({"DeviceName": "/dev/xvdb", "Ebs": {"VolumeSize": 20000}})),
        "BlockDeviceMappings[0].Ebs.VolumeSize",
        "for gp3",
    );
    assert_problem(
        bdm(json!({"DeviceName": "/dev/xvdb", "Ebs": {"VolumeSize": "big"}})),
        "BlockDeviceMappings[0].Ebs.VolumeSize",
        "whole number",
    );
    assert_problem(
        bdm(json!({"DeviceName": "/dev/xvdb", "Ebs": {"VolumeType": "ssd"}})),
        "BlockDeviceMappings[0].Ebs.VolumeType",
        "not one of",
    );
    assert_problem(
        bdm(json!({"DeviceName": "/dev/xvdb", "Ebs": {"VolumeType": "gp2", "Throughput": 200}})),
        "BlockDeviceMappings[0].Ebs.Throughput",
        "only to gp3",
    );
    assert_problem(
        bdm(
            json!({"DeviceName": "/dev/xvdb", "Ebs": {"VolumeType": "st1", "VolumeSize": 500, "Iops": 3000}}),
        ),
        "BlockDeviceMappings[0].Ebs.Iops",
        "io1, io2 and gp3",
    );
    assert_problem(
        bdm(json!({"DeviceName": "/dev/xvdb", "Ebs": {"KmsKeyId": "k"}})),
        "BlockDeviceMappings[0].Ebs.KmsKeyId",
        "Encrypted",
    );
    assert_problem(
        bdm(json!({"DeviceName": "/dev/xvdb", "Ebs": {"Encrypted": "yes"}})),
        "BlockDeviceMappings[0].Ebs.Encrypted",
        "true or false",
    );
    assert_problem(
        with(
            json!({"BlockDeviceMappings": [{"DeviceName": "/dev/xvdb", "Ebs": {}}, {"DeviceName": "/dev/xvdb", "Ebs": {}}]}),
        ),
        "BlockDeviceMappings[1].DeviceName",
        "mapped twice",
    );
}

#[test]
fn tags_are_checked() {
    assert_problem(
        with(json!({"Tags": {"aws:x": "1"}})),
        "Tags.aws:x",
        "reserved prefix",
    );
    assert_problem(
        with(json!({"Tags": {"ecs-ami:fingerprint": "1"}})),
        "Tags.ecs-ami:fingerprint",
        "reserved prefix",
    );
    assert_problem(
        with(json!({"Tags": {"k": "v".repeat(257)}})),
        "Tags.k",
        "256",
    );
    assert_problem(
        with(json!({"Tags": {"k".repeat(129): "v"}})),
        &format!("Tags.{}", "k".repeat(129)),
        "1 to 128",
    );
    assert_problem(
        with(json!({"Tags": [{"Key": "a", "Value": "1"}, {"Key": "a", "Value": "2"}]})),
        "Tags[1]",
        "given twice",
    );
    assert_problem(
        with(json!({"Tags": [{"Key": "a"}]})),
        "Tags[0]",
        "Key and Value",
    );
    assert_problem(
        with(json!({"Tags": "team=platform"})),
        "Tags",
        "map or a list",
    );
    // EC2's 50 per resource less the product's 10 (https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/Using_Tags.html#tag-restrictions),
    // with or without Tests: an AMI keeps its test tags when an Update drops Tests.
    let tags = |n: usize| -> Map<String, Value> {
        (0..n).map(|i| (format!("k{i}"), json!("v"))).collect()
    };
    let tests = json!({"Steps": [{"Name": "t", "Commands": ["true"]}]});
    assert!(AmiSpec::parse(&with(json!({"Tags": tags(40)}))).is_ok());
    assert!(AmiSpec::parse(&with(json!({"Tags": tags(40), "Tests": tests}))).is_ok());
    assert_problem(
        with(json!({"Tags": tags(41)})),
        "Tags",
        "41 tags given; at most 40 fit (EC2 allows 50 per resource; the product keeps 10 of its own on the AMI, its snapshots and copies, 3 of them once the AMI passed Tests)",
    );
    assert_problem(
        with(json!({"Tags": tags(41), "Tests": tests})),
        "Tags",
        "41 tags given; at most 40 fit",
    );
}

#[test]
fn outputs_and_output_tags_parse() {
    let spec = AmiSpec::parse(&with(json!({
        "Steps": [
            {"Name": "a", "Commands": ["x"], "Outputs": ["DockerVersion", "AgentVersion"]},
            {"Name": "b", "Commands": ["y"]}
        ],
        "OutputTags": {"docker-version": "DockerVersion", "source-ami": "SourceImageId"}
    })))
    .unwrap();
    assert_eq!(spec.steps[0].outputs, ["DockerVersion", "AgentVersion"]);
    assert!(spec.steps[1].outputs.is_empty());
    assert_eq!(
        spec.output_tags,
        BTreeMap::from([
            ("docker-version".into(), "DockerVersion".into()),
            ("source-ami".into(), "SourceImageId".into())
        ])
    );
}

#[test]
fn outputs_and_output_tags_are_checked() {
    let outputs =
        |names: Value| with(json!({"Steps": [{"Name": "a", "Commands": ["x"], "Outputs": names}]}));
    assert_problem(outputs(json!("One")), "Steps[0].Outputs", "must be a list");
    assert_problem(
        outputs(json!([1])),
        "Steps[0].Outputs[0]",
        "must be a string",
    );
    assert_problem(
        outputs(json!(["has-dash"])),
        "Steps[0].Outputs[0]",
        "not an output name",
    );
    assert_problem(
        outputs(json!(["9lives"])),
        "Steps[0].Outputs[0]",
        "not an output name",
    );
    assert_problem(
        outputs(json!(["ImageId"])),
        "Steps[0].Outputs[0]",
        "resource's own attributes",
    );
    assert_problem(
        outputs(json!(["A", "A"])),
        "Steps[0].Outputs[1]",
        "already declared",
    );
    let eleven: Vec<String> = (0..11).map(|i| format!("O{i}")).collect();
    assert_problem(
        outputs(json!(eleven)),
        "Steps[0].Outputs[10]",
        "more than 10",
    );
    assert_problem(
        with(json!({"Steps": [
            {"Name": "a", "Commands": ["x"], "Outputs": ["V"]},
            {"Name": "b", "Commands": ["y"], "Outputs": ["V"]}
        ]})),
        "Steps[1].Outputs[0]",
        "unique across steps",
    );
    assert_problem(
        with(json!({"Steps": [{"Name": "f", "Path": "/x", "Content": "", "Outputs": ["V"]}]})),
        "Steps[0].Outputs",
        "only to command steps",
    );
    let tagged = |output_tags: Value, tags: Value| {
        with(json!({
            "Steps": [{"Name": "a", "Commands": ["x"], "Outputs": ["V"]}],
            "OutputTags": output_tags,
            "Tags": tags
        }))
    };
    assert_problem(
        tagged(json!({"v": "W"}), json!({})),
        "OutputTags.v",
        "\"W\" is neither SourceImageId nor an output of any step (declared: V)",
    );
    assert_problem(
        tagged(json!({"v": "V"}), json!({"v": "1"})),
        "OutputTags.v",
        "also given in Tags",
    );
    assert_problem(
        tagged(json!({"ecs-ami:v": "V"}), json!({})),
        "OutputTags.ecs-ami:v",
        "reserved prefix",
    );
    assert_problem(
        tagged(json!({"v": ["V"]}), json!({})),
        "OutputTags.v",
        "must be the name of a step output",
    );
    assert_problem(
        tagged(json!(["V"]), json!({})),
        "OutputTags",
        "must be a map",
    );
    assert_problem(
        with(json!({"OutputTags": {"v": "V"}})),
        "OutputTags.v",
        "declared: none",
    );
    // 39 tags, one output kept as a tag and one output tag: 41 > 40.
    let tags: serde_json::Map<String, Value> =
        (0..39).map(|i| (format!("t{i}"), json!("x"))).collect();
    assert_problem(
        tagged(json!({"v": "V"}), Value::Object(tags)),
        "OutputTags",
        "need 41 tags; at most 40 fit",
    );
}

#[test]
fn steps_are_checked() {
    let step = |s: Value| with(json!({"Steps": [s]}));
    assert_problem(
        step(json!({"Commands": ["x"]})),
        "Steps[0].Name",
        "required",
    );
    assert_problem(
        step(json!({"Name": "a", "Commands": []})),
        "Steps[0].Commands",
        "at least one",
    );
    assert_problem(
        step(json!({"Name": "a", "Commands": [["nested"]]})),
        "Steps[0].Commands[0]",
        "must be a string",
    );
    assert_problem(step(json!({"Name": "a"})), "Steps[0]", "needs Commands");
    assert_problem(
        step(json!({"Name": "a", "Commands": ["x"], "Path": "/x", "Content": ""})),
        "Steps[0]",
        "not both",
    );
    assert_problem(
        step(json!({"Name": "a", "Commands": ["x"], "TimeoutSeconds": 0})),
        "Steps[0].TimeoutSeconds",
        "out of range",
    );
    assert_problem(
        step(json!({"Name": "a", "Commands": ["x"], "TimeoutSeconds": 3601})),
        "Steps[0].TimeoutSeconds",
        "out of range",
    );
    assert_problem(
        step(json!({"Name": "a", "Commands": ["x"], "Environment": {"1BAD": "v"}})),
        "Steps[0].Environment.1BAD",
        "shell variable",
    );
    assert_problem(
        step(json!({"Name": "a", "Commands": ["x"], "Environment": ["A=b"]})),
        "Steps[0].Environment",
        "map",
    );
    assert_problem(
        step(json!({"Name": "a", "Path": "etc/x", "Content": "c"})),
        "Steps[0].Path",
        "absolute",
    );
    assert_problem(
        step(json!({"Name": "a", "Path": "/etc/../x", "Content": "c"})),
        "Steps[0].Path",
        "..",
    );
    assert_problem(
        step(json!({"Name": "a", "Path": "/etc/x"})),
        "Steps[0].Content",
        "required",
    );
    assert_problem(
        step(json!({"Name": "a", "Path": "/etc/x", "Content": "c", "Mode": "rw"})),
        "Steps[0].Mode",
        "octal",
    );
    assert_problem(
        step(json!({"Name": "a", "Path": "/etc/x", "Content": "c", "Mode": "0999"})),
        "Steps[0].Mode",
        "octal",
    );
    assert_problem(
        step(json!({"Name": "a", "Path": "/etc/x", "Content": "c", "Owner": "Root"})),
        "Steps[0].Owner",
        "USER:GROUP",
    );
    assert_problem(
        step(json!({"Name": "a", "Path": "/etc/x", "Content": "c", "Environment": {}})),
        "Steps[0].Environment",
        "only to command",
    );
    assert_problem(
        with(
            json!({"Steps": [{"Name": "a", "Commands": ["x"]}, {"Name": "a", "Commands": ["y"]}]}),
        ),
        "Steps[1].Name",
        "unique",
    );
    assert_problem(
        step(json!({"Name": "big", "Path": "/x", "Content": "x".repeat(60_000)})),
        "Steps[0]",
        "split it",
    );
    assert_problem(
        with(json!({"Steps": ["echo"]})),
        "Steps[0]",
        "must be an object",
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
fn regions_are_other_regions_each_with_an_optional_key_of_its_own() {
    let spec = AmiSpec::parse(&with(json!({"Regions": [
        {"Region": "eu-west-1"},
        {"Region": "us-west-2", "KmsKeyId": "alias/ami-copies"},
    ]})))
    .unwrap();
    assert_eq!(
        spec.regions,
        [
            CopyRegion {
                region: "eu-west-1".into(),
                kms_key_id: None
            },
            CopyRegion {
                region: "us-west-2".into(),
                kms_key_id: Some("alias/ami-copies".into())
            },
        ]
    );
    let case = |regions: Value, path: &str, words: &str| {
        assert_problem(with(json!({ "Regions": regions })), path, words)
    };
    case(json!("eu-west-1"), "Regions", "must be a list");
    case(
        json!(["eu-west-1"]),
        "Regions[0]",
        "must be an object with a Region",
    );
    case(
        json!([{"KmsKeyId": "alias/x"}]),
        "Regions[0]",
        "needs a Region",
    );
    case(
        json!([{"Region": "Europe"}]),
        "Regions[0].Region",
        "not a region name",
    );
    case(
        json!([{"Region": "eu-west-1"}, {"Region": "eu-west-1"}]),
        "Regions[1].Region",
        "given twice",
    );
    case(
        json!([{"Region": "eu-west-1", "KmsKeyId": "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"}]),
        "Regions[0].KmsKeyId",
        "a key of us-east-1, not of eu-west-1",
    );
    case(
        json!([{"Region": "eu-west-1", "Kms": "x"}]),
        "Regions[0].Kms",
        "unknown property",
    );
    let many: Vec<Value> = (1..=17)
        .map(|i| json!({"Region": format!("eu-west-{}", i.min(20))}))
        .collect();
    case(json!(many), "Regions", "at most 16");
    // Only another region than the function's: known when the request is handled.
    let home = AmiSpec::parse(&with(json!({"Regions": [{"Region": "us-east-1"}]})))
        .unwrap()
        .check_regions("us-east-1")
        .unwrap_err();
    assert!(
        home.problems[0]
            .starts_with("Regions[0].Region: us-east-1 is the region the AMI is built in"),
        "{home:?}"
    );
    // Regions are distribution: a change of them alone never rebuilds.
    let other = AmiSpec::parse(&with(json!({"Regions": [{"Region": "ap-south-1"}]}))).unwrap();
    assert!(spec.differs_only_in_distribution(&other));
}

#[test]
fn ssm_parameters_with_a_region_hold_that_regions_copy() {
    let properties = with(json!({
        "Regions": [{"Region": "eu-west-1"}],
        "SsmParameters": [
            {"Name": "/ecs-ami/images/base"},
            {"Name": "/ecs-ami/images/base", "Region": "eu-west-1"},
            {"Name": "/ecs-ami/images/home", "Region": "us-east-1"},
        ],
    }));
    let spec = AmiSpec::parse(&properties)
        .unwrap()
        .check_regions("us-east-1")
        .unwrap();
    // The function's own region named explicitly is the same as no Region.
    assert_eq!(
        spec.ssm_parameters,
        ["/ecs-ami/images/base", "/ecs-ami/images/home"]
    );
    assert_eq!(
        spec.copy_parameters,
        BTreeMap::from([(
            "eu-west-1".to_owned(),
            vec!["/ecs-ami/images/base".to_owned()]
        )])
    );
    let names = ssm_parameter_names(&properties, Some("us-east-1"));
    assert_eq!(names.home, ["/ecs-ami/images/base", "/ecs-ami/images/home"]);
    assert_eq!(names.copies, spec.copy_parameters);
    // A region without a copy of the AMI.
    let nowhere = AmiSpec::parse(&with(json!({"SsmParameters": [
        {"Name": "/ecs-ami/images/base", "Region": "ap-south-1"},
    ]})))
    .unwrap()
    .check_regions("us-east-1")
    .unwrap_err();
    assert!(
        nowhere.problems[0].contains("names Region ap-south-1, which is neither this function's region (us-east-1) nor one of Regions"),
        "{nowhere:?}"
    );
    assert_problem(
        with(json!({"SsmParameters": [{"Name": "/a", "Region": "Mars"}]})),
        "SsmParameters[0].Region",
        "not a region name",
    );
    assert_problem(
        with(json!({"SsmParameters": [
            {"Name": "/a", "Region": "eu-west-1"},
            {"Name": "/a", "Region": "eu-west-1"},
        ]})),
        "SsmParameters[1].Name",
        "/a in eu-west-1 is given twice",
    );
}

#[test]
fn an_ami_encrypted_with_the_aws_managed_key_cannot_be_shared() {
    let encrypted = |key: Value| {
        let mut ebs = json!({"VolumeSize": 20, "Encrypted": true});
        if !key.is_null() {
            ebs["KmsKeyId"] = key;
        }
        with(json!({
            "BlockDeviceMappings": [{"DeviceName": "/dev/xvdb", "Ebs": ebs}],
            "LaunchPermissions": {"UserIds": ["111122223333"]},
        }))
    };
    for key in [Value::Null, json!("alias/aws/ebs")] {
        assert_problem(
            encrypted(key),
            "BlockDeviceMappings[0].Ebs.KmsKeyId",
            "AWS managed key aws/ebs cannot be shared",
        );
    }
    let customer = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";
    assert!(AmiSpec::parse(&encrypted(json!(customer))).is_ok());
}

#[test]
fn copy_regions_outside_the_deployment_and_key_changes_are_refused() {
    let spec = AmiSpec::parse(&with(json!({"Regions": [
        {"Region": "eu-west-1", "KmsKeyId": "alias/new"},
        {"Region": "us-west-2"},
    ]})))
    .unwrap();
    assert!(spec.check_copy_regions(&["eu-west-1", "us-west-2"]).is_ok());
    let refused = spec.check_copy_regions(&["eu-west-1"]).unwrap_err();
    assert_eq!(refused.problems.len(), 1);
    assert!(
        refused.problems[0].starts_with(
            "Regions[1].Region: us-west-2 is not in this deployment's AmiCopyRegions (eu-west-1)"
        ),
        "{refused:?}"
    );
    let none = spec.check_copy_regions(&[]).unwrap_err();
    assert!(
        none.problems[0].contains("AmiCopyRegions (none)"),
        "{none:?}"
    );
    let before = AmiSpec::parse(&with(json!({"Regions": [
        {"Region": "eu-west-1", "KmsKeyId": "alias/old"},
    ]})))
    .unwrap();
    let changed = spec.check_copy_keys(&before).unwrap_err();
    assert!(
        changed.problems[0]
            .starts_with("Regions[0].KmsKeyId: the copy in eu-west-1 exists with alias/old"),
        "{changed:?}"
    );
    assert!(spec.check_copy_keys(&spec).is_ok());
}

#[test]
fn copies_of_an_encrypted_shared_ami_need_a_key() {
    let properties = |key: Option<&str>| {
        let mut region = json!({"Region": "eu-west-1"});
        if let Some(key) = key {
            region["KmsKeyId"] = json!(key);
        }
        with(json!({
            "BlockDeviceMappings": [{"DeviceName": "/dev/xvdb", "Ebs": {"VolumeSize": 20, "Encrypted": true,
                "KmsKeyId": "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"}}],
            "LaunchPermissions": {"UserIds": ["111122223333"]},
            "Regions": [region],
        }))
    };
    assert_problem(
        properties(None),
        "Regions[0].KmsKeyId",
        "required to share an encrypted AMI",
    );
    assert!(AmiSpec::parse(&properties(Some("alias/copies"))).is_ok());
}

#[test]
fn tests_are_checked() {
    let tests = |value: Value| with(json!({ "Tests": value }));
    let spec = AmiSpec::parse(&tests(json!({
        "UserData": "#!/bin/bash\necho hi\n",
        "EcsCluster": "arn:aws:ecs:us-east-1:123456789012:cluster/main",
        "Steps": [{"Name": "mounted", "Commands": ["findmnt /data"]}],
    })))
    .unwrap();
    let parsed = spec.tests.clone().unwrap();
    assert_eq!(parsed.timeout_minutes, DEFAULT_TEST_MINUTES);
    assert_eq!(parsed.steps.len(), 1);
    assert!(spec.clone().check_regions("us-east-1").is_ok());
    let elsewhere = spec.check_regions("eu-west-1").unwrap_err();
    assert!(
        elsewhere.problems[0].starts_with("Tests.EcsCluster: arn:aws:ecs:us-east-1:123456789012:cluster/main is a cluster of us-east-1"),
        "{elsewhere:?}"
    );
    assert_problem(tests(json!({})), "Tests.Steps", "required (or EcsCluster)");
    assert_problem(tests(json!("yes")), "Tests", "must be an object with Steps");
    assert_problem(
        tests(json!({"UserData": "echo hi", "EcsCluster": "main"})),
        "Tests.UserData",
        "must begin with #!",
    );
    assert_problem(
        tests(json!({"UserData": format!("#!/bin/bash\n{}", "x".repeat(MAX_USER_DATA_BYTES))})),
        "Tests.UserData",
        "EC2 takes at most 16384",
    );
    assert_problem(
        tests(json!({"EcsCluster": "no spaces allowed"})),
        "Tests.EcsCluster",
        "not an ECS cluster name",
    );
    assert_problem(
        tests(json!({"Steps": [{"Name": "v", "Commands": ["true"], "Outputs": ["V"]}]})),
        "Tests.Steps[0].Outputs",
        "a test hands nothing back",
    );
    assert_problem(
        tests(json!({"EcsCluster": "main", "TimeoutMinutes": 61})),
        "Tests.TimeoutMinutes",
        "",
    );
    assert_problem(
        tests(json!({"EcsCluster": "main", "InstanceType": "big"})),
        "Tests.InstanceType",
        "not an EC2 instance type",
    );
    // Not part of the fingerprint: a change of Tests alone never rebuilds.
    let other = AmiSpec::parse(&tests(json!({"EcsCluster": "other"}))).unwrap();
    let none = AmiSpec::parse(&minimal()).unwrap();
    assert!(other.differs_only_in_distribution(&none));
}
