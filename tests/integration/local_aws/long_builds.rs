//! Builds over 55 minutes, as the EcsAmi macro declares them (`crate::cfn::transform`): the
//! requests CloudFormation sends to the resource that builds (`AmiBuild`: the user's properties,
//! `SignalUrl`, `ImageResource`) and to the resource that holds the image (`Ami`: `Signal`, the
//! wait condition's `Data`), on the local AWS, through Create, a rebuild, the rollback after a
//! later resource failed, the rollback's cleanup, a stack deleted mid-build and the stack's
//! deletion.
//!
//! CloudFormation's part is played by the test, as the pages say it behaves:
//! - a wait condition completes on `Count` SUCCESS signals to its handle's presigned URL, and
//!   `!GetAtt Wait.Data` is a JSON object of each signal's `UniqueId` to its `Data`
//!   (https://docs.aws.amazon.com/AWSCloudFormation/latest/TemplateReference/aws-resource-cloudformation-waitcondition.html,
//!   and the user guide's "Wait condition signal JSON format");
//! - the macro gives each stack operation a new handle and wait condition, so the resource that
//!   builds gets an Update with a new `SignalUrl` at every deployment, and a rollback an Update
//!   back to the previous one
//!   (https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/crpg-ref-requesttypes-update.html);
//! - the resource that builds answers CloudFormation itself when its request ends within the first
//!   invocation (these builds take seconds), else at its first hand-over (tests/integration/
//!   offline/long_builds.rs); a Create cancelled before it answered gets a Delete with a physical
//!   id CloudFormation made up, as a short build's does (see cancellation.rs);
//! - the resources are deleted in the reverse order of their references: `Ami`, the wait, the
//!   resource that builds (it refers to the handle), the handle.

use crate::common;

use std::time::Duration;

use common::local::{ResponseCatcher, invoke_until_answered};
use common::{ECS_AL2023, LocalAws, PROFILE, on_local_aws, report, update_from};
use ecs_ami::aws::Aws;
use ecs_ami::cfn::HttpSink;
use ecs_ami::handler::Limits;
use ecs_ami::watch::{Target, look};
use serde_json::{Value, json};

const SECTION: &str = "Builds over 55 minutes (the EcsAmi macro's wait condition)";

/// The user's properties, as the template declares them: a build allowed 90 minutes.
fn declared(step: &str) -> Value {
    json!({
        "ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:ecs-ami",
        "SourceAmiParameter": ECS_AL2023,
        "IamInstanceProfile": PROFILE,
        "TimeoutMinutes": 90,
        "Steps": [{"Name": "install", "Commands": [step]}],
    })
}

/// The resource that builds: the declared properties and the handle's URL.
fn building(step: &str, handle: &str) -> Value {
    let mut properties = declared(step);
    properties["SignalUrl"] = json!(handle);
    properties["ImageResource"] = json!("Ami");
    properties
}

/// The resource that holds the image: the declared properties and the wait condition's Data.
fn holding(step: &str, data: &Value) -> Value {
    let mut properties = declared(step);
    properties["Signal"] = json!(data.to_string());
    properties
}

fn request(
    kind: &str,
    stack: &str,
    logical_id: &str,
    request_id: &str,
    properties: Value,
) -> Value {
    let mut event = common::event(kind, stack, request_id, None, properties);
    event["LogicalResourceId"] = json!(logical_id);
    event
}

fn of_builder(mut event: Value) -> Value {
    event["LogicalResourceId"] = json!("AmiBuild");
    event
}

/// What one request of the resource that builds sent: CloudFormation's response, and the signal
/// (as `!GetAtt Wait.Data` then holds it), if any reached the handle.
struct Sent {
    response: Value,
    signal: Option<Value>,
}

/// Runs `event` (with `handle` as its wait condition handle) to its end, as Lambda would.
async fn run(aws: &Aws, event: Value, handle: &mut ResponseCatcher) -> Sent {
    run_with(aws, event, handle, Limits::default).await
}

/// [`run`], each invocation with `limits`.
async fn run_with(
    aws: &Aws,
    mut event: Value,
    handle: &mut ResponseCatcher,
    limits: impl Fn() -> Limits,
) -> Sent {
    let mut responses = ResponseCatcher::start().await.unwrap();
    event["ResponseURL"] = json!(responses.url);
    let sink = HttpSink::with_retries(3, Duration::from_millis(50));
    invoke_until_answered(event, aws, &sink, limits)
        .await
        .expect("handled");
    let response = responses
        .next(Duration::from_secs(5))
        .await
        .expect("CloudFormation got its response");
    assert!(responses.try_next().is_none(), "one response");
    let signal = handle.next(Duration::from_millis(500)).await;
    Sent {
        response: serde_json::from_slice(&response).unwrap(),
        signal: signal.map(|b| serde_json::from_slice(&b).unwrap()),
    }
}

/// `!GetAtt Wait.Data` after `signal`: `{UniqueId: Data}`.
fn wait_data(signal: &Value) -> Value {
    assert_eq!(signal["Status"], "SUCCESS", "{signal}");
    json!({ signal["UniqueId"].as_str().unwrap(): signal["Data"] })
}

fn launches(calls: &Value) -> u64 {
    calls["by_operation"]["EC2.RunInstances"]
        .as_u64()
        .unwrap_or(0)
}

/// Create, a rebuild, the rollback after a later resource failed (the previous AMI, no launch),
/// the rollback's cleanup and the stack's deletion: every guarantee of a short build, through the
/// macro's two resources.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_rebuild_rollback_and_delete_through_the_wait_condition() {
    let stack = "long-build";
    let (local, aws, audit) = on_local_aws(stack).await;

    // Create: the resource that builds is acknowledged, the build signals its AMI, the resource
    // that holds it answers with it.
    let mut handle1 = ResponseCatcher::start().await.unwrap();
    let v1 = building("echo one > /etc/v", &handle1.url);
    let create = run(
        &aws,
        request("Create", stack, "AmiBuild", "r-create", v1.clone()),
        &mut handle1,
    )
    .await;
    assert_eq!(create.response["Status"], "SUCCESS", "{}", create.response);
    assert_eq!(create.response["LogicalResourceId"], "AmiBuild");
    let build_id = create.response["PhysicalResourceId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(build_id.starts_with("ecs-ami-build-"), "{build_id}");
    let signal = create.signal.expect("the build signalled");
    assert_eq!(signal["UniqueId"], "r-create");
    let first = signal["Data"].as_str().unwrap().to_owned();
    let data1 = wait_data(&signal);
    let held = run(
        &aws,
        request(
            "Create",
            stack,
            "Ami",
            "r-hold",
            holding("echo one > /etc/v", &data1),
        ),
        &mut ResponseCatcher::start().await.unwrap(),
    )
    .await;
    assert_eq!(held.response["Status"], "SUCCESS", "{}", held.response);
    assert_eq!(
        held.response["PhysicalResourceId"],
        first.as_str(),
        "!Ref Ami"
    );
    assert_eq!(held.response["Data"]["ImageId"], first.as_str());
    assert!(
        held.response["Data"]["Fingerprint"].is_string(),
        "{}",
        held.response
    );
    let image = audit.image(&first).await.expect("the AMI exists");
    let tags = common::audit::tags_of(image.tags());
    assert_eq!(tags["ecs-ami:logical-id"], "Ami", "the image is Ami's");
    // `ecs-ami watch` finds the long build as any other, by the AMI: the building request,
    // answered (the build ran under Ami's logical id).
    let watched = look(&local.watcher_aws().await, &Target::Image(first.clone()))
        .await
        .unwrap();
    assert_eq!(watched.logical_id, "Ami");
    assert_eq!(watched.request_id.as_deref(), Some("r-create"));
    assert!(
        watched
            .to_string()
            .contains(&format!("answered SUCCESS with {first}")),
        "{watched}"
    );

    // An Update that rebuilds (new steps, and the macro's new handle): a new AMI, signalled.
    local.take_calls().await;
    let mut handle2 = ResponseCatcher::start().await.unwrap();
    let v2 = building("echo two > /etc/v", &handle2.url);
    let rebuild = run(
        &aws,
        of_builder(update_from(stack, "r-rebuild", &build_id, &v2, &v1)),
        &mut handle2,
    )
    .await;
    assert_eq!(rebuild.response["Status"], "SUCCESS");
    assert_eq!(
        rebuild.response["PhysicalResourceId"],
        build_id.as_str(),
        "one physical id"
    );
    let signal = rebuild.signal.expect("the rebuild signalled");
    let second = signal["Data"].as_str().unwrap().to_owned();
    assert_ne!(second, first, "a new AMI");
    assert_eq!(launches(&local.take_calls().await), 1, "one builder");
    let data2 = wait_data(&signal);
    let mut hold2 = update_from(
        stack,
        "r-hold2",
        &first,
        &holding("echo two > /etc/v", &data2),
        &holding("echo one > /etc/v", &data1),
    );
    hold2["LogicalResourceId"] = json!("Ami");
    let held2 = run(&aws, hold2, &mut ResponseCatcher::start().await.unwrap()).await;
    assert_eq!(held2.response["PhysicalResourceId"], second.as_str());

    // A later resource fails: CloudFormation rolls both back to their previous properties (the
    // first handle, which still exists). The first AMI comes back; nothing is launched.
    let rollback = run(
        &aws,
        of_builder(update_from(stack, "r-rollback", &build_id, &v1, &v2)),
        &mut handle1,
    )
    .await;
    assert_eq!(
        rollback.response["Status"], "SUCCESS",
        "{}",
        rollback.response
    );
    let signal = rollback
        .signal
        .expect("signalled (a completed wait ignores it)");
    assert_eq!(signal["Data"], first.as_str(), "the previous AMI");
    let mut hold_back = update_from(
        stack,
        "r-hold-back",
        &second,
        &holding("echo one > /etc/v", &data1),
        &holding("echo two > /etc/v", &data2),
    );
    hold_back["LogicalResourceId"] = json!("Ami");
    let held_back = run(
        &aws,
        hold_back,
        &mut ResponseCatcher::start().await.unwrap(),
    )
    .await;
    assert_eq!(held_back.response["PhysicalResourceId"], first.as_str());
    assert_eq!(
        launches(&local.take_calls().await),
        0,
        "the rollback launched nothing"
    );

    // The rollback's cleanup deletes the second AMI through the resource that held it.
    let mut cleanup = request(
        "Delete",
        stack,
        "Ami",
        "r-cleanup",
        holding("echo two > /etc/v", &data2),
    );
    cleanup["PhysicalResourceId"] = json!(second);
    let cleaned = run(&aws, cleanup, &mut ResponseCatcher::start().await.unwrap()).await;
    assert_eq!(
        cleaned.response["Status"], "SUCCESS",
        "{}",
        cleaned.response
    );
    audit.assert_only(&[&first]).await;

    // The stack's deletion: the resource that holds the image first, then the one that builds.
    let mut delete_holder = request(
        "Delete",
        stack,
        "Ami",
        "r-del-ami",
        holding("echo one > /etc/v", &data1),
    );
    delete_holder["PhysicalResourceId"] = json!(first);
    let deleted = run(
        &aws,
        delete_holder,
        &mut ResponseCatcher::start().await.unwrap(),
    )
    .await;
    assert_eq!(
        deleted.response["Status"], "SUCCESS",
        "{}",
        deleted.response
    );
    let mut delete_builder = request("Delete", stack, "AmiBuild", "r-del-build", v1.clone());
    delete_builder["PhysicalResourceId"] = json!(build_id);
    let mut no_handle = ResponseCatcher::start().await.unwrap();
    let deleted = run(&aws, delete_builder, &mut no_handle).await;
    assert_eq!(
        deleted.response["Status"], "SUCCESS",
        "{}",
        deleted.response
    );
    assert_eq!(deleted.response["LogicalResourceId"], "AmiBuild");
    assert!(deleted.signal.is_none(), "a Delete signals nothing");
    audit.assert_only(&[]).await;
    report::record_clean(
        "long-build-01",
        SECTION,
        "Local AWS: Create, rebuild, rollback after a later resource failed, cleanup and stack deletion through the macro's two resources",
        "each build signalled once; the rollback returned the previous AMI with no launch",
        &audit.leftovers(&[]).await,
    );
}

/// The stack is deleted while its Create builds: CloudFormation cancels the Create of the
/// resource that builds and deletes it. That Delete stops the build and removes what it made;
/// nothing is answered or signalled, and nothing is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stack_deleted_mid_build_leaves_nothing() {
    let stack = "long-build-deleted";
    let (_local, aws, audit) = on_local_aws(stack).await;
    let mut handle = ResponseCatcher::start().await.unwrap();
    let properties = building("sleep 60", &handle.url);
    let mut unanswered = ResponseCatcher::start().await.unwrap();
    let mut create = request("Create", stack, "AmiBuild", "r-create", properties.clone());
    create["ResponseURL"] = json!(unanswered.url);
    let build = {
        let aws = aws.clone();
        tokio::spawn(async move {
            let sink = HttpSink::with_retries(3, Duration::from_millis(50));
            invoke_until_answered(create, &aws, &sink, Limits::default)
                .await
                .expect("handled")
        })
    };
    for _ in 0..300 {
        if !audit.live_instances().await.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!audit.live_instances().await.is_empty(), "a builder runs");
    tokio::time::sleep(Duration::from_secs(3)).await;

    // The Create has not answered yet (it would at its first hand-over): CloudFormation cancels
    // it and deletes the resource under a physical id of its own making.
    let build_id = format!("{stack}-AmiBuild-1QX7R2M9ZK4T");
    let mut delete = request("Delete", stack, "AmiBuild", "r-delete", properties);
    delete["PhysicalResourceId"] = json!(build_id);
    let mut no_handle = ResponseCatcher::start().await.unwrap();
    let deleted = run(&aws, delete, &mut no_handle).await;
    assert_eq!(
        deleted.response["Status"], "SUCCESS",
        "{}",
        deleted.response
    );
    let reason = deleted.response["Reason"].as_str().unwrap();
    assert!(
        reason.contains("Stopped the build of request r-create"),
        "{reason}"
    );
    audit.assert_only(&[]).await;
    let ended = tokio::time::timeout(Duration::from_secs(60), build)
        .await
        .expect("the cancelled build stops")
        .expect("no panic");
    assert!(
        ended.is_none(),
        "the cancelled build answered nothing: {ended:?}"
    );
    assert!(
        handle.next(Duration::from_millis(500)).await.is_none(),
        "nothing signalled"
    );
    assert!(
        unanswered.next(Duration::from_millis(500)).await.is_none(),
        "the cancelled Create answered nothing"
    );
    audit.assert_only(&[]).await;
    report::record_clean(
        "long-build-02",
        SECTION,
        "Local AWS: the stack deleted while its Create builds",
        "the Delete of the resource that builds stopped the build; no signal",
        &audit.leftovers(&[]).await,
    );
}

/// Properties the function refuses are refused to CloudFormation by the resource that builds,
/// FAILED before any acknowledgement and before anything is launched; nothing is signalled (the
/// stack fails on that resource, and the wait condition is never created).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_properties_fail_the_resource_that_builds_at_once() {
    let local = LocalAws::start().await;
    let aws = local.aws().await;
    let mut handle = ResponseCatcher::start().await.unwrap();
    let mut properties = building("echo x", &handle.url);
    properties["TimeoutMinutes"] = json!(711);
    properties["InstanceTyp"] = json!("t3.micro");
    let refused = run(
        &aws,
        request("Create", "long-refused", "AmiBuild", "r-create", properties),
        &mut handle,
    )
    .await;
    assert_eq!(refused.response["Status"], "FAILED", "{}", refused.response);
    assert_eq!(refused.response["LogicalResourceId"], "AmiBuild");
    let reason = refused.response["Reason"].as_str().unwrap();
    assert!(
        reason.contains("TimeoutMinutes: 711 is out of range") && reason.contains("InstanceTyp"),
        "{reason}"
    );
    assert!(refused.signal.is_none(), "nothing signalled");
    common::assert_launched_nothing(&local.take_calls().await);
    report::record(
        "long-build-03",
        SECTION,
        "Local AWS: invalid properties on the resource that builds",
        "FAILED at once, naming each property, before any acknowledgement; nothing launched or signalled",
        Some(0),
    );
}

/// A long build that goes on past its first invocation (a hand-over after every state, as a real
/// build's would after 13.5 minutes) and then fails in a step with `KeepFailedInstanceMinutes`:
/// CloudFormation was told SUCCESS at the first hand-over, the FAILURE signal names the kept
/// builder, and CloudFormation's rollback (the Delete of the resource that builds, under its
/// own physical id) leaves it running; the schedule ends it at its time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_long_build_keeps_its_builder_past_the_rollback() {
    let stack = "long-build-kept";
    let (local, aws, audit) = on_local_aws(stack).await;
    let mut handle = ResponseCatcher::start().await.unwrap();
    let mut properties = building("echo broken >&2; exit 3", &handle.url);
    properties["KeepFailedInstanceMinutes"] = json!(30);
    let every_state = || Limits {
        hand_over_every_state: true,
        ..Limits::default()
    };
    let created = run_with(
        &aws,
        request("Create", stack, "AmiBuild", "r-create", properties.clone()),
        &mut handle,
        every_state,
    )
    .await;
    assert_eq!(
        created.response["Status"], "SUCCESS",
        "{}",
        created.response
    );
    assert!(
        created.response["Reason"]
            .as_str()
            .unwrap()
            .starts_with("build in progress as request r-create"),
        "{}",
        created.response
    );
    let build_id = created.response["PhysicalResourceId"]
        .as_str()
        .unwrap()
        .to_owned();
    let signal = created.signal.expect("the failure is signalled");
    assert_eq!(signal["Status"], "FAILURE", "{signal}");
    let reason = signal["Reason"].as_str().unwrap();
    assert!(
        reason.contains("exited 3") && reason.contains("KEPT for debugging"),
        "{reason}"
    );
    let kept = audit.live_instances().await;
    assert_eq!(kept.len(), 1, "the builder is kept: {kept:?}");

    // The wait failed: CloudFormation rolls the Create back, deleting the resource that builds.
    let mut rollback = request("Delete", stack, "AmiBuild", "r-rollback", properties);
    rollback["PhysicalResourceId"] = json!(build_id);
    let deleted = run(&aws, rollback, &mut ResponseCatcher::start().await.unwrap()).await;
    assert_eq!(
        deleted.response["Status"], "SUCCESS",
        "{}",
        deleted.response
    );
    assert_eq!(audit.live_instances().await, kept, "the rollback leaves it");

    // At its time, the schedule ends it.
    let past = ecs_ami::engine::time::utc_iso_at_ms(ecs_ami::engine::time::now_ms() - 60_000);
    local
        .ec2()
        .await
        .create_tags()
        .resources(&kept[0])
        .tags(
            aws_sdk_ec2::types::Tag::builder()
                .key("ecs-ami:keep-until")
                .value(&past)
                .build(),
        )
        .send()
        .await
        .unwrap();
    common::invoke_maintenance(&aws, "end-kept-instances").await;
    audit.assert_only(&[]).await;
    report::record_clean(
        "long-build-04",
        SECTION,
        "Local AWS: a long build acknowledged, then failed with KeepFailedInstanceMinutes, and rolled back",
        "SUCCESS at the first hand-over, FAILURE signal naming the kept builder; the rollback's Delete left it, the schedule ended it",
        &audit.leftovers(&[]).await,
    );
}
