//! Fuzzing of everything that reads an event: the hand-over envelope, the CloudFormation request,
//! the properties, and the response. Generated events go through the whole handler against an
//! AWS that refuses every connection (`common::offline::handle_offline`); whatever the input, it
//! must not panic, and an event carrying a ResponseURL must get exactly one response of at most
//! 4,096 bytes. The seed is fixed, so CI runs the same cases every time; `ECS_AMI_FUZZ_CASES`
//! runs more (the cargo-fuzz target in fuzz/ explores without bounds).

use crate::common;

use common::report;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::{Map, Value, json};

const KEYS: &[&str] = &[
    "RequestType",
    "ResponseURL",
    "StackId",
    "RequestId",
    "LogicalResourceId",
    "ResourceType",
    "PhysicalResourceId",
    "ResourceProperties",
    "OldResourceProperties",
    "ServiceToken",
    "SourceAmi",
    "SourceAmiParameter",
    "SourceAmiFilter",
    "Owners",
    "Architecture",
    "Filters",
    "Values",
    "IncludeDeprecated",
    "DeprecateAfterDays",
    "ImdsSupport",
    "SsmParameters",
    "LaunchPermissions",
    "UserIds",
    "OrganizationArns",
    "OrganizationalUnitArns",
    "IamInstanceProfile",
    "InstanceType",
    "SubnetId",
    "SecurityGroupIds",
    "AmiName",
    "AmiDescription",
    "BlockDeviceMappings",
    "DeviceName",
    "Ebs",
    "VolumeSize",
    "VolumeType",
    "Iops",
    "Throughput",
    "Encrypted",
    "KmsKeyId",
    "Tags",
    "Key",
    "Value",
    "OutputTags",
    "Steps",
    "Name",
    "Commands",
    "Environment",
    "TimeoutSeconds",
    "Path",
    "Content",
    "Mode",
    "Owner",
    "Outputs",
    "TimeoutMinutes",
    "ServiceTimeout",
    "EcsAmiContinuation",
    "Event",
    "Build",
];

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ -~]{0,12}",
        Just("ami-0aae19d30bab785d3".to_owned()),
        Just("/dev/xvdb".to_owned()),
        Just("Create".to_owned()),
        Just("Update".to_owned()),
        Just("Delete".to_owned()),
        Just("\u{0}".to_owned()),
        Just("é🦀".repeat(40)),
        Just("x".repeat(5000)),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![4 => proptest::sample::select(KEYS).prop_map(str::to_owned), 1 => "[A-Za-z:.\\[\\]0-9-]{1,10}"]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|n| json!(n)),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::vec((key(), inner), 0..6)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Valid properties, then a few random changes: a key set to anything, or removed.
fn properties() -> impl Strategy<Value = Value> {
    let base = json!({
        "ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:f",
        "SourceAmi": "ami-0aae19d30bab785d3",
        "IamInstanceProfile": "builder",
        "Tags": {"team": "platform"},
        "BlockDeviceMappings": [{"DeviceName": "/dev/xvdb", "Ebs": {"VolumeSize": 20, "VolumeType": "gp3"}}],
        "Steps": [
            {"Name": "a", "Commands": ["echo a"], "Environment": {"X": "1"}, "Outputs": ["V"]},
            {"Name": "f", "Path": "/etc/x", "Content": "x", "Mode": "0600"}
        ],
        "OutputTags": {"v": "V"}
    });
    let change = (
        key(),
        prop_oneof![3 => json_value().prop_map(Some), 1 => Just(None)],
    );
    proptest::collection::vec(change, 0..4).prop_map(move |changes| {
        let mut properties = base.clone();
        for (key, value) in changes {
            let map = properties.as_object_mut().unwrap();
            match value {
                Some(value) => map.insert(key, value),
                None => map.remove(&key),
            };
        }
        properties
    })
}

/// Events shaped like CloudFormation's, each field possibly missing or of a wrong type.
fn cloudformation_event() -> impl Strategy<Value = Value> {
    let field = |good: Value| prop_oneof![6 => Just(Some(good)), 1 => json_value().prop_map(Some), 1 => Just(None)];
    (
        prop_oneof![
            Just(json!("Create")),
            Just(json!("Update")),
            Just(json!("Delete")),
            json_value()
        ],
        field(json!(
            "arn:aws:cloudformation:us-east-1:123456789012:stack/s/g"
        )),
        field(json!("req-fuzz")),
        field(json!("Ami")),
        prop_oneof![
            Just(None),
            text().prop_map(|t| Some(json!(t))),
            Just(Some(json!("ami-0fedcba9876543210")))
        ],
        prop_oneof![3 => properties(), 1 => json_value()],
        proptest::option::of(json_value()),
    )
        .prop_map(
            |(kind, stack, request, logical, physical, properties, old)| {
                let mut event = json!({
                    "RequestType": kind,
                    "ResponseURL": "http://127.0.0.1:1/response?X-Amz-Signature=fuzz",
                    "ResourceType": "Custom::EcsAmi",
                    "ResourceProperties": properties,
                });
                let map = event.as_object_mut().unwrap();
                for (key, value) in [
                    ("StackId", stack),
                    ("RequestId", request),
                    ("LogicalResourceId", logical),
                    ("PhysicalResourceId", physical),
                    ("OldResourceProperties", old),
                ] {
                    if let Some(value) = value {
                        map.insert(key.into(), value);
                    }
                }
                event
            },
        )
}

fn runner(default_cases: u32) -> TestRunner {
    let cases = std::env::var("ECS_AMI_FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default_cases);
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]))
}

/// The property (`common::offline::offline_answer_problem`): no panic; a ResponseURL means
/// exactly one response, within the size limit.
fn check(event: Value) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let problem = runtime.block_on(common::offline::offline_answer_problem(event.clone()));
    prop_assert!(
        problem.is_none(),
        "{} for {event}",
        problem.unwrap_or_default()
    );
    Ok(())
}

#[test]
fn arbitrary_json_never_panics() {
    let mut runner = runner(400);
    let strategy = prop_oneof![
        json_value(),
        json_value().prop_map(|v| json!({ "EcsAmiContinuation": v })),
        cloudformation_event()
            .prop_map(|e| json!({ "EcsAmiContinuation": {"Event": e, "Build": {}} })),
    ];
    runner.run(&strategy, check).unwrap();
    report::record(
        "fuzz-01",
        "Fuzzing",
        &format!(
            "{} arbitrary JSON documents and hand-over envelopes (fixed seed)",
            runner.config().cases
        ),
        "no panic; those without a ResponseURL refused without a response",
        None,
    );
}

#[test]
fn cloudformation_shaped_events_get_exactly_one_bounded_response() {
    let mut runner = runner(400);
    runner.run(&cloudformation_event(), check).unwrap();
    report::record(
        "fuzz-02",
        "Fuzzing",
        &format!(
            "{} CloudFormation-shaped events, fields missing or mistyped, properties mutated (fixed seed)",
            runner.config().cases
        ),
        "exactly one response each, at most 4,096 bytes; no panic",
        None,
    );
}
