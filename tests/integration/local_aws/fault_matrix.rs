//! The fault matrix, on the local AWS: each scenario breaks one thing a build depends on (AWS
//! errors injected by the local AWS, or someone acting on the builder mid-build through the
//! ordinary AWS APIs), checks what CloudFormation is answered, and ends with an audit of the
//! local AWS for anything of the build left behind. Each writes its row of the
//! Reliability table (`scripts/reliability-table`).

use crate::common;

use std::time::Duration;

use common::audit::Audit;
use common::report;
use common::{ECS_AL2023, LocalAws, PROFILE, event, invoke, stack_id};
use ecs_ami::aws::Aws;
use ecs_ami::cfn::{Identity, Outcome, Status};
use ecs_ami::engine::{self, Progress, Timing};
use ecs_ami::spec::AmiSpec;
use serde_json::{Value, json};

const SECTION_AWS: &str = "AWS errors during a build";
const SECTION_WORLD: &str = "The builder or image changed by someone else";
const SECTION_SOURCE: &str = "Unusable inputs found at build time";

struct Scenario {
    local: LocalAws,
    aws: Aws,
    audit: Audit,
    identity: Identity,
}

impl Scenario {
    async fn start(stack: &str, settings: &[(&str, &str)]) -> Scenario {
        let local = LocalAws::start_with(settings).await;
        let aws = local.aws().await;
        let audit = Audit {
            ec2: local.ec2().await,
            stack_id: stack_id(stack),
        };
        let identity = Identity {
            stack_id: stack_id(stack),
            logical_id: "Ami".into(),
            request_id: format!("req-{stack}"),
        };
        Scenario {
            local,
            aws,
            audit,
            identity,
        }
    }

    /// Injects AWS errors (see emulator/local_aws.py); an empty list clears them.
    async fn faults(&self, rules: Value) -> Value {
        let answer = reqwest::Client::new()
            .post(format!("{}/ecs-ami-local/faults", self.local.endpoint))
            .body(json!({ "rules": rules }).to_string())
            .send()
            .await
            .unwrap();
        serde_json::from_slice(&answer.bytes().await.unwrap()).unwrap()
    }

    /// How often each injected fault fired.
    async fn fired(&self) -> Value {
        let answer = reqwest::get(format!("{}/ecs-ami-local/faults", self.local.endpoint))
            .await
            .unwrap();
        serde_json::from_slice(&answer.bytes().await.unwrap()).unwrap()
    }

    /// Runs a Create to its end in the background, with polls and checks fast enough for tests.
    fn build(&self, properties: Value) -> tokio::task::JoinHandle<Outcome> {
        let mut full = json!({"SourceAmiParameter": ECS_AL2023, "IamInstanceProfile": PROFILE});
        for (key, value) in properties.as_object().unwrap() {
            full[key] = value.clone();
        }
        let spec = AmiSpec::parse(&full).unwrap();
        let (aws, identity) = (self.aws.clone(), self.identity.clone());
        tokio::spawn(async move {
            let timing = Timing {
                online_timeout: Duration::from_secs(8),
                state_check_every: Duration::from_secs(1),
                step_grace: Duration::from_secs(3),
                // A call throttled for good fails after one more try of its phase, not three.
                throttled_tries: 1,
                ..Timing::default()
            };
            match engine::create(&engine::Context::new(&aws, &identity, &timing), spec).await {
                Progress::Finished(done) => ecs_ami::handler::success_outcome(done),
                // As the handler answers a failed Create: the Reason the user reads.
                Progress::Failed(failed) => Outcome::failed(
                    ecs_ami::cfn::failed_create_physical_id(&identity),
                    failed.to_string(),
                ),
                other => panic!("the build did not finish: {other:?}"),
            }
        })
    }

    /// The builder and its running step, once SSM runs it.
    async fn running_step(&self) -> (String, String) {
        let ssm = aws_sdk_ssm::Client::new(&self.local.sdk_config().await);
        for _ in 0..200 {
            let out = ssm.list_commands().send().await.unwrap();
            if let Some(command) = out.commands().iter().find(|c| {
                c.status().map(|s| s.as_str()) == Some("InProgress")
                    && c.comment().is_some_and(|c| c.starts_with("ecs-ami step"))
            }) {
                return (
                    command.instance_ids()[0].clone(),
                    command.command_id().unwrap().to_owned(),
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no step started");
    }

    /// Audits, records the row and checks that nothing but `keep` is left.
    async fn finish(&self, id: &str, section: &str, scenario: &str, outcome: &str, keep: &[&str]) {
        self.faults(json!([])).await;
        let left = self.audit.leftovers(keep).await;
        report::record(id, section, scenario, outcome, Some(left.len()));
        assert_eq!(left, Vec::<String>::new(), "{scenario}: left behind");
    }
}

fn reason(outcome: &Outcome) -> &str {
    outcome.reason.as_deref().unwrap_or_default()
}

fn assert_failed(outcome: &Outcome, words: &[&str]) {
    assert_eq!(outcome.status, Status::Failed, "{outcome:?}");
    assert!(
        !outcome.physical_id.starts_with("ami-"),
        "a failed Create never answers with an image id"
    );
    for word in words {
        assert!(
            reason(outcome).contains(word),
            "{word:?} not in {}",
            reason(outcome)
        );
    }
}

fn one_step(commands: &[&str], timeout_seconds: u32) -> Value {
    json!({"Steps": [{"Name": "work", "Commands": commands, "TimeoutSeconds": timeout_seconds}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_throttled_twice() {
    let s = Scenario::start("throttled", &[]).await;
    s.faults(json!([
        {"operation": "EC2.*", "code": "RequestLimitExceeded", "status": 503, "attempts": [1, 2]},
        {"operation": "AmazonSSM.*", "code": "ThrottlingException", "status": 400, "attempts": [1, 2]}
    ]))
    .await;
    let outcome = s.build(one_step(&["echo ok"], 60)).await.unwrap();
    let fired = s.fired().await;
    println!("throttled attempts answered: {}", fired["fired"]);
    assert_eq!(outcome.status, Status::Success, "{outcome:?}");
    // Every call the build made met the burst: each operation's first two attempts per call.
    let fired = fired["fired"].as_object().unwrap();
    for operation in [
        "EC2.RunInstances",
        "AmazonSSM.SendCommand",
        "AmazonSSM.GetCommandInvocation",
        "EC2.StopInstances",
        "EC2.CreateImage",
        "EC2.CreateTags",
        "EC2.TerminateInstances",
        "AmazonSSM.PutParameter",
        "AmazonSSM.GetParameters",
        // (The lease is deleted by the handler once the answer is recorded; `s.build` drives the
        // engine alone.)
    ] {
        assert!(
            fired.contains_key(operation),
            "{operation} was not throttled: {fired:?}"
        );
    }
    assert!(
        fired.values().all(|n| n.as_u64().unwrap() % 2 == 0),
        "{fired:?}"
    );
    s.finish(
        "aws-01",
        SECTION_AWS,
        "Every AWS call the build makes is throttled (RequestLimitExceeded, ThrottlingException) on its first two attempts",
        "SUCCESS: each call retried by the SDK",
        &[&outcome.physical_id],
    )
    .await;
}

/// A response that never arrives (a pooled connection that died while Lambda froze the sandbox)
/// ends at the per-attempt timeout every call carries, and the SDK's retry strategy sends the
/// call again (a timeout is a transient error:
/// https://docs.aws.amazon.com/sdkref/latest/guide/feature-retry-behavior.html). The product's
/// timeout is 30 s (aws::ATTEMPT_TIMEOUT); this test gives its clients 3 s, as a config may.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_that_never_comes_is_retried() {
    let mut s = Scenario::start("stalled", &[]).await;
    let config = s
        .local
        .function_config()
        .await
        .to_builder()
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .operation_attempt_timeout(Duration::from_secs(3))
                .build(),
        )
        .build();
    s.aws = Aws::from_config(&config);
    s.faults(json!([
        {"operation": "EC2.DescribeInstances", "stall": 12, "attempts": [1], "times": 1}
    ]))
    .await;
    let started = std::time::Instant::now();
    let outcome = s.build(one_step(&["echo ok"], 60)).await.unwrap();
    let fired = s.fired().await;
    assert_eq!(outcome.status, Status::Success, "{outcome:?}");
    assert_eq!(fired["fired"]["EC2.DescribeInstances"], 1, "{fired}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    s.finish(
        "aws-stalled",
        SECTION_AWS,
        "One DescribeInstances answer never comes (the response stalls for 12 s)",
        "SUCCESS: the attempt ends at its timeout and the SDK sends the call again",
        &[&outcome.physical_id],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_answered_5xx_twice() {
    let s = Scenario::start("server-errors", &[]).await;
    s.faults(json!([
        {"operation": "EC2.*", "code": "InternalError", "status": 500, "attempts": [1, 2]},
        {"operation": "AmazonSSM.*", "code": "InternalServerError", "status": 500, "attempts": [1, 2]}
    ]))
    .await;
    let outcome = s.build(one_step(&["echo ok"], 60)).await.unwrap();
    assert_eq!(outcome.status, Status::Success, "{outcome:?}");
    s.finish(
        "aws-02",
        SECTION_AWS,
        "Every AWS call the build makes gets a 500 on its first two attempts",
        "SUCCESS: each call retried by the SDK",
        &[&outcome.physical_id],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_image_refused() {
    let s = Scenario::start("no-image", &[]).await;
    s.faults(
        json!([{"operation": "EC2.CreateImage", "code": "InvalidParameterValue", "status": 400}]),
    )
    .await;
    let outcome = s.build(one_step(&["echo ok"], 60)).await.unwrap();
    assert_failed(
        &outcome,
        &[
            "ec2:CreateImage failed: InvalidParameterValue",
            "terminated builder",
        ],
    );
    s.finish(
        "aws-03",
        SECTION_AWS,
        "CreateImage fails",
        "FAILED naming ec2:CreateImage and its error; builder terminated",
        &[],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_ends_failed() {
    let s = Scenario::start("image-failed", &[("ECS_AMI_EMULATOR_IMAGE_DELAY", "1")]).await;
    s.faults(json!([{"operation": "EC2.CreateImage", "image": "failed"}]))
        .await;
    let outcome = s.build(one_step(&["echo ok"], 60)).await.unwrap();
    assert_failed(
        &outcome,
        &[
            "ended failed",
            "deregistered half-made image",
            "terminated builder",
        ],
    );
    s.finish(
        "aws-04",
        SECTION_AWS,
        "The image ends `failed`",
        "FAILED; half-made image deregistered, its snapshots deleted, builder terminated",
        &[],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_throttling_of_one_call() {
    let s = Scenario::start("throttled-for-good", &[]).await;
    s.faults(
        json!([{"operation": "EC2.StopInstances", "code": "RequestLimitExceeded", "status": 503}]),
    )
    .await;
    let outcome = s.build(one_step(&["echo ok"], 60)).await.unwrap();
    assert_failed(
        &outcome,
        &[
            "ec2:StopInstances failed: RequestLimitExceeded",
            "terminated builder",
        ],
    );
    s.finish(
        "aws-05",
        SECTION_AWS,
        "One call (StopInstances) throttled on every attempt",
        "FAILED naming the call after the 8 attempts of the retry policy, and as many again when its phase is tried once more (3 times by default); builder terminated",
        &[],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builder_terminated_mid_step() {
    let s = Scenario::start("terminated", &[]).await;
    let build = s.build(one_step(&["sleep 30"], 120));
    let (instance, _) = s.running_step().await;
    s.audit
        .ec2
        .terminate_instances()
        .instance_ids(&instance)
        .send()
        .await
        .unwrap();
    let outcome = build.await.unwrap();
    assert_failed(
        &outcome,
        &["is terminated instead of running, during step \"work\""],
    );
    s.finish(
        "world-01",
        SECTION_WORLD,
        "The builder is terminated by someone else during a step",
        "FAILED within one state check (60 s; 1 s here), naming the step",
        &[],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builder_stopped_mid_step() {
    let s = Scenario::start("stopped", &[]).await;
    let build = s.build(one_step(&["sleep 30"], 120));
    let (instance, _) = s.running_step().await;
    s.audit
        .ec2
        .stop_instances()
        .instance_ids(&instance)
        .send()
        .await
        .unwrap();
    let outcome = build.await.unwrap();
    assert_failed(
        &outcome,
        &[
            "is stopped instead of running, during step \"work\"",
            "terminated builder",
        ],
    );
    s.finish(
        "world-02",
        SECTION_WORLD,
        "The builder is stopped by someone else during a step",
        "FAILED within one state check, naming the step; builder terminated",
        &[],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_volume_detached_mid_build() {
    let s = Scenario::start("detached", &[]).await;
    let mut properties = one_step(&["sleep 3"], 60);
    properties["BlockDeviceMappings"] =
        json!([{"DeviceName": "/dev/xvdb", "Ebs": {"VolumeSize": 1, "VolumeType": "gp3"}}]);
    let build = s.build(properties);
    let (instance, _) = s.running_step().await;
    let volumes = s
        .audit
        .ec2
        .describe_volumes()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("attachment.instance-id")
                .values(&instance)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let data = volumes
        .volumes()
        .iter()
        .find(|v| {
            v.attachments()
                .iter()
                .any(|a| a.device() == Some("/dev/xvdb"))
        })
        .expect("the data volume is attached")
        .volume_id()
        .unwrap()
        .to_owned();
    s.audit
        .ec2
        .detach_volume()
        .volume_id(&data)
        .instance_id(&instance)
        .force(true)
        .send()
        .await
        .unwrap();
    let outcome = build.await.unwrap();
    assert_failed(
        &outcome,
        &[
            "volume /dev/xvdb was detached from builder",
            "deleted volume vol-",
        ],
    );
    s.finish(
        "world-03",
        SECTION_WORLD,
        "A volume of the builder is detached during the build",
        "FAILED before imaging (the image would lack it); the detached volume deleted",
        &[],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssm_never_online() {
    let s = Scenario::start("never-online", &[("ECS_AMI_EMULATOR_ONLINE_DELAY", "3600")]).await;
    let outcome = s.build(one_step(&["echo ok"], 60)).await.unwrap();
    assert_failed(
        &outcome,
        &[
            "did not report builder",
            "Online within 8 s",
            "AmazonSSMManagedInstanceCore",
            "terminated builder",
        ],
    );
    s.finish(
        "world-04",
        SECTION_WORLD,
        "SSM never reports the builder Online",
        "FAILED after the Online timeout (600 s; 8 s here), naming the likely causes; builder terminated",
        &[],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_goes_offline_mid_step() {
    let s = Scenario::start("offline", &[]).await;
    let build = s.build(one_step(&["sleep 30"], 2));
    let (instance, _) = s.running_step().await;
    reqwest::Client::new()
        .post(format!(
            "{}/ecs-ami-local/offline/{instance}",
            s.local.endpoint
        ))
        .send()
        .await
        .unwrap();
    let outcome = build.await.unwrap();
    assert_failed(
        &outcome,
        &[
            "past its 2 s TimeoutSeconds",
            "SSM reports its agent not Online",
            "terminated builder",
        ],
    );
    s.finish(
        "world-05",
        SECTION_WORLD,
        "The SSM agent goes offline during a step (the step never reports an end)",
        "FAILED once TimeoutSeconds and the grace (120 s; 3 s here) pass, saying the agent is not Online",
        &[],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_times_out() {
    let s = Scenario::start("timed-out", &[]).await;
    let outcome = s.build(one_step(&["sleep 30"], 2)).await.unwrap();
    assert_failed(
        &outcome,
        &[
            "timed out after its 2 s TimeoutSeconds",
            "terminated builder",
        ],
    );
    s.finish(
        "world-06",
        SECTION_WORLD,
        "A step runs past its TimeoutSeconds",
        "FAILED: SSM stops it; the Reason says it timed out",
        &[],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_cancelled_by_someone_else() {
    let s = Scenario::start("cancelled", &[]).await;
    let build = s.build(one_step(&["sleep 30"], 120));
    let (instance, command) = s.running_step().await;
    aws_sdk_ssm::Client::new(&s.local.sdk_config().await)
        .cancel_command()
        .command_id(command)
        .instance_ids(instance)
        .send()
        .await
        .unwrap();
    let outcome = build.await.unwrap();
    assert_failed(
        &outcome,
        &["step \"work\" (1 of 1) was cancelled", "terminated builder"],
    );
    s.finish(
        "world-07",
        SECTION_WORLD,
        "A step is cancelled by someone else",
        "FAILED: the Reason says it was cancelled",
        &[],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_deleted_before_the_image_is_ready() {
    let s = Scenario::start("snapshot-deleted", &[("ECS_AMI_EMULATOR_IMAGE_DELAY", "3")]).await;
    let build = s.build(one_step(&["echo ok"], 60));
    // Wait for the pending image, then try to delete its snapshot from outside.
    let mut refused = None;
    for _ in 0..100 {
        let images = s.audit.images().await;
        if let Some(image) = images.first()
            && let Some(found) = s.audit.image(image).await
            && found.state().map(|s| s.as_str()) == Some("pending")
        {
            let snapshot = found.block_device_mappings()[0]
                .ebs()
                .and_then(|e| e.snapshot_id())
                .unwrap()
                .to_owned();
            let answer = s
                .audit
                .ec2
                .delete_snapshot()
                .snapshot_id(&snapshot)
                .send()
                .await;
            refused = Some(
                answer
                    .err()
                    .and_then(|e| {
                        aws_sdk_ec2::error::ProvideErrorMetadata::code(&e).map(str::to_owned)
                    })
                    .unwrap_or_else(|| "deleted".into()),
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let outcome = build.await.unwrap();
    assert_eq!(refused.as_deref(), Some("InvalidSnapshot.InUse"));
    assert_eq!(outcome.status, Status::Success, "{outcome:?}");
    s.finish(
        "world-08",
        SECTION_WORLD,
        "Someone deletes the image's snapshot before the image is ready",
        "EC2 refuses (InvalidSnapshot.InUse), as on AWS; SUCCESS with the snapshot intact",
        &[&outcome.physical_id],
    )
    .await;
}

async fn unusable(stack: &str, properties: Value, words: &[&str]) -> (Scenario, Outcome) {
    let s = Scenario::start(stack, &[]).await;
    let outcome = s.build(properties).await.unwrap();
    assert_failed(&outcome, words);
    (s, outcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_ami_does_not_exist() {
    let (s, _) = unusable(
        "no-source",
        json!({"SourceAmi": "ami-0123456789abcdef0", "SourceAmiParameter": null}),
        &[
            "SourceAmi: ami-0123456789abcdef0 does not exist in this region",
            "nothing had been created",
        ],
    )
    .await;
    s.finish(
        "source-01",
        SECTION_SOURCE,
        "SourceAmi does not exist",
        "FAILED before any launch, naming SourceAmi and the AMI",
        &[],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_parameter_does_not_exist_or_holds_no_ami() {
    let (s, _) = unusable(
        "no-parameter",
        json!({"SourceAmiParameter": "/ecs-ami/source/nowhere"}),
        &["SourceAmiParameter /ecs-ami/source/nowhere could not be read: ssm:GetParameter failed: ParameterNotFound"],
    )
    .await;
    s.finish(
        "source-02",
        SECTION_SOURCE,
        "SourceAmiParameter does not exist",
        "FAILED before any launch, naming the parameter and ParameterNotFound",
        &[],
    )
    .await;
    let ssm = aws_sdk_ssm::Client::new(&s.local.sdk_config().await);
    ssm.put_parameter()
        .name("/ecs-ami/source/base-image")
        .value("latest")
        .r#type(aws_sdk_ssm::types::ParameterType::String)
        .send()
        .await
        .unwrap();
    let outcome = s
        .build(json!({"SourceAmiParameter": "/ecs-ami/source/base-image"}))
        .await
        .unwrap();
    assert_failed(
        &outcome,
        &[
            "SourceAmiParameter /ecs-ami/source/base-image holds a value of 6 characters that is not an AMI id",
        ],
    );
    s.finish(
        "source-03",
        SECTION_SOURCE,
        "SourceAmiParameter holds something that is not an AMI id",
        "FAILED before any launch, naming the parameter, never quoting its value",
        &[],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subnet_security_group_or_profile_do_not_exist() {
    let cases = [
        (
            "source-04",
            "SubnetId does not exist",
            json!({"SubnetId": "subnet-0123456789abcdef0"}),
            &["SubnetId: subnet-0123456789abcdef0 does not exist"][..],
            "FAILED before any launch, naming SubnetId; nothing created",
        ),
        (
            "source-05",
            "A security group does not exist",
            json!({"SecurityGroupIds": ["sg-0123456789abcdef0"]}),
            &["SecurityGroupIds: sg-0123456789abcdef0 does not exist"][..],
            "FAILED before any launch, naming SecurityGroupIds; nothing created",
        ),
        (
            "source-06",
            "IamInstanceProfile does not exist",
            json!({"IamInstanceProfile": "no-such-profile"}),
            &["ec2:RunInstances failed", "no-such-profile"][..],
            "FAILED at launch with EC2's error naming the profile; nothing created",
        ),
        (
            "source-07",
            "InstanceType does not exist",
            json!({"InstanceType": "t3.gigantic"}),
            &["InstanceType: t3.gigantic does not exist"][..],
            "FAILED before any launch, naming InstanceType; nothing created",
        ),
        (
            "source-08",
            "InstanceType of another architecture than the source AMI",
            json!({"InstanceType": "t4g.medium"}),
            &[
                "InstanceType: t4g.medium is arm64, SourceAmi ami-",
                "is x86_64",
            ][..],
            "FAILED before any launch, naming both architectures; nothing created",
        ),
    ];
    for (id, scenario, properties, words, outcome) in cases {
        let mut expected = words.to_vec();
        expected.push("nothing had been created");
        let (s, _) = unusable(&format!("unusable-{id}"), properties, &expected).await;
        s.finish(id, SECTION_SOURCE, scenario, outcome, &[]).await;
    }
}

// Delete, Update and rollback go through the whole handler, as CloudFormation drives them.

const SECTION_DELETE: &str = "Delete";
const SECTION_UPDATE: &str = "Update";

fn properties(steps: Value) -> Value {
    json!({
        "ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:ecs-ami",
        "SourceAmiParameter": ECS_AL2023,
        "IamInstanceProfile": PROFILE,
        "Tags": {"team": "platform"},
        "Steps": steps
    })
}

async fn created(s: &Scenario, stack: &str, request: &str, steps: Value) -> String {
    let answer = invoke(
        &s.aws,
        event("Create", stack, request, None, properties(steps)),
    )
    .await;
    assert_eq!(answer["Status"], "SUCCESS", "{answer}");
    answer["PhysicalResourceId"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_in_every_state() {
    let stack = "deletes";
    let s = Scenario::start(stack, &[]).await;
    // Each Delete is its own request (a RequestId seen before is a late delivery of that one).
    let delete = |id: &str| {
        event(
            "Delete",
            stack,
            &format!("req-delete-{id}"),
            Some(id),
            properties(json!([])),
        )
    };

    // An image already gone, its snapshots with it.
    let gone = created(&s, stack, "req-a", json!([])).await;
    let snapshots = s
        .audit
        .image(&gone)
        .await
        .unwrap()
        .block_device_mappings()
        .iter()
        .filter_map(|m| m.ebs().and_then(|e| e.snapshot_id()).map(str::to_owned))
        .collect::<Vec<_>>();
    s.audit
        .ec2
        .deregister_image()
        .image_id(&gone)
        .send()
        .await
        .unwrap();
    for snapshot in &snapshots {
        // EC2 releases a deregistered image's snapshots after a while (the local AWS:
        // ECS_AMI_EMULATOR_SNAPSHOT_RELEASE_DELAY): until then InvalidSnapshot.InUse.
        let mut tries = 0;
        while let Err(error) = s
            .audit
            .ec2
            .delete_snapshot()
            .snapshot_id(snapshot)
            .send()
            .await
        {
            let code = aws_sdk_ec2::error::ProvideErrorMetadata::code(&error).map(str::to_owned);
            assert_eq!(code.as_deref(), Some("InvalidSnapshot.InUse"), "{error:?}");
            tries += 1;
            assert!(tries < 50, "the snapshot was never released");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let answer = invoke(&s.aws, delete(&gone)).await;
    assert_eq!(answer["Status"], "SUCCESS", "{answer}");
    assert!(
        answer["Reason"].as_str().unwrap().contains("already gone"),
        "{answer}"
    );
    report::record(
        "delete-01",
        SECTION_DELETE,
        "Delete of an AMI (and snapshots) already gone",
        "SUCCESS, saying it was already gone",
        Some(s.audit.leftovers(&[]).await.len()),
    );

    // An image whose snapshots someone deregistered-then-deleted... a snapshot can only go once
    // its image is deregistered, so "snapshots gone" means: image deregistered, snapshot kept.
    let half = created(&s, stack, "req-b", json!([])).await;
    s.audit
        .ec2
        .deregister_image()
        .image_id(&half)
        .send()
        .await
        .unwrap();
    let answer = invoke(&s.aws, delete(&half)).await;
    assert_eq!(answer["Status"], "SUCCESS", "{answer}");
    let left = s.audit.leftovers(&[]).await;
    report::record(
        "delete-02",
        SECTION_DELETE,
        "Delete of an AMI deregistered by someone else, its snapshots left",
        "SUCCESS; the orphaned snapshots found by tag and deleted",
        Some(left.len()),
    );
    assert_eq!(left, Vec::<String>::new());

    // The physical id of a failed Create, and ids that are not AMIs at all.
    for (id, scenario, physical) in [
        (
            "delete-03",
            "Delete of a failed Create's marker id",
            "ecs-ami-not-built-0123abcd",
        ),
        (
            "delete-04",
            "Delete of an id that is not an AMI at all",
            "i-0123456789abcdef0",
        ),
    ] {
        let answer = invoke(&s.aws, delete(physical)).await;
        assert_eq!(answer["Status"], "SUCCESS", "{answer}");
        assert!(
            answer["Reason"]
                .as_str()
                .unwrap()
                .contains("is not an AMI id"),
            "{answer}"
        );
        report::record(
            id,
            SECTION_DELETE,
            scenario,
            "SUCCESS without touching anything",
            Some(s.audit.leftovers(&[]).await.len()),
        );
    }

    // An AMI this resource did not build: the seeded ECS-optimized AMI, and another stack's.
    let ssm = aws_sdk_ssm::Client::new(&s.local.sdk_config().await);
    let public = ssm
        .get_parameter()
        .name(ECS_AL2023)
        .send()
        .await
        .unwrap()
        .parameter()
        .unwrap()
        .value()
        .unwrap()
        .to_owned();
    let other_stack = invoke(
        &s.aws,
        event(
            "Create",
            "other-stack",
            "req-other",
            None,
            properties(json!([])),
        ),
    )
    .await;
    let other = other_stack["PhysicalResourceId"]
        .as_str()
        .unwrap()
        .to_owned();
    for image in [&public, &other] {
        let answer = invoke(&s.aws, delete(image)).await;
        assert_eq!(answer["Status"], "SUCCESS", "{answer}");
        assert!(
            s.audit.image(image).await.is_some(),
            "{image} left untouched"
        );
    }
    report::record(
        "delete-05",
        SECTION_DELETE,
        "Delete of an AMI this resource did not build (a public one, another stack's)",
        "SUCCESS; the AMI left untouched",
        Some(s.audit.leftovers(&[]).await.len()),
    );
    s.finish(
        "delete-06",
        SECTION_DELETE,
        "After all of the above",
        "nothing of the stack left",
        &[],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_update_then_rollback() {
    let stack = "updates";
    let s = Scenario::start(stack, &[]).await;
    let first_steps = json!([{"Name": "a", "Commands": ["echo one"]}]);
    let first = created(&s, stack, "req-create", first_steps.clone()).await;
    let before = s.audit.image(&first).await.unwrap();

    let mut invalid = properties(json!([{"Name": "a", "Commands": []}]));
    invalid["Tags"] = json!({"aws:reserved": "x"});
    let answer = invoke(
        &s.aws,
        event("Update", stack, "req-invalid", Some(&first), invalid),
    )
    .await;
    assert_eq!(answer["Status"], "FAILED", "{answer}");
    assert_eq!(answer["PhysicalResourceId"], json!(first));
    let reason = answer["Reason"].as_str().unwrap();
    assert!(
        reason.contains("Steps[0].Commands: must list at least one command"),
        "{reason}"
    );
    assert!(reason.contains("Tags.aws:reserved"), "{reason}");
    let after = s.audit.image(&first).await.unwrap();
    assert_eq!(after.tags(), before.tags(), "the existing AMI is untouched");
    assert_eq!(s.audit.instances().await.len(), 1, "nothing launched");
    report::record(
        "update-01",
        SECTION_UPDATE,
        "Update whose new properties are invalid",
        "FAILED naming each property; same physical id, the AMI untouched, nothing launched",
        Some(s.audit.leftovers(&[&first]).await.len()),
    );

    let rebuilt = invoke(
        &s.aws,
        event(
            "Update",
            stack,
            "req-rebuild",
            Some(&first),
            properties(json!([{"Name": "a", "Commands": ["echo two"]}])),
        ),
    )
    .await;
    let second = rebuilt["PhysicalResourceId"].as_str().unwrap().to_owned();
    assert_ne!(second, first);
    let rolled = invoke(
        &s.aws,
        event(
            "Update",
            stack,
            "req-rollback",
            Some(&second),
            properties(first_steps),
        ),
    )
    .await;
    assert_eq!(rolled["PhysicalResourceId"], json!(first), "{rolled}");
    assert_eq!(
        s.audit.instances().await.len(),
        2,
        "the rollback launched nothing"
    );
    s.finish(
        "update-02",
        SECTION_UPDATE,
        "Update that rebuilds, then its rollback",
        "the previous AMI returned without a rebuild",
        &[&first, &second],
    )
    .await;
}
