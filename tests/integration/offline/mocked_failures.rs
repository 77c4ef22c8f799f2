//! Failure paths the local AWS cannot produce, with AWS answers scripted at the HTTP level (EC2,
//! `common::ec2_mock`) and through `aws-smithy-mocks` (SSM). The real adapters in `src/aws` run;
//! only the HTTP layer is replaced.
//! Time is tokio's paused clock, so ten minutes of polling take no real time.

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use aws_sdk_ssm::operation::get_command_invocation::GetCommandInvocationOutput;
use aws_sdk_ssm::types as ssmt;
use aws_smithy_mocks::mock;
use common::mocks::*;
use ecs_ami::aws::InstanceStateName;
use ecs_ami::cfn::Status;
use ecs_ami::engine::{BuildError, Failed, Failure, ResourceKind, StepEnd, Timing};
use ecs_ami::spec::AmiSpec;
use serde_json::json;

/// The phase error of a build that failed in a phase, and the cleanup's report as a Reason
/// gives it.
fn failed_in(failed: &Failed) -> (&'static str, &BuildError, String) {
    match &failed.failure {
        Failure::In { stage, error } => (
            stage,
            error,
            failed
                .cleanup
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
        ),
        other => panic!("a failure in a phase was expected: {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn scripted_happy_path_answers_with_the_image() {
    let world = World::happy();
    let outcome = world
        .create(
            spec(json!([{"Name": "a", "Commands": ["true"]}])),
            Timing::default(),
        )
        .await
        .expect("the build succeeds");
    assert_eq!(outcome.id, NEW_IMAGE, "{outcome:?}");
    assert_eq!(outcome.attributes["SnapshotIds"], "snap-0123456789abcdef0");
    assert_eq!(world.run_instances.num_calls(), 1);
    assert_eq!(world.terminate.num_calls(), 1);
    assert_eq!(world.deregister.num_calls(), 0);
    assert_eq!(
        world.create_tags.num_calls(),
        1,
        "the snapshots are tagged once"
    );
}

#[tokio::test(start_paused = true)]
async fn ssm_never_online_fails_after_the_timeout_and_terminates_the_builder() {
    let world = World::never_online("running");
    let started = tokio::time::Instant::now();
    let timing = Timing {
        online_timeout: Duration::from_secs(300),
        ..Timing::default()
    };
    let failed = world
        .create(spec(json!([{"Name": "a", "Commands": ["true"]}])), timing)
        .await
        .unwrap_err();
    let (_, error, cleanup) = failed_in(&failed);
    assert!(
        matches!(error, BuildError::NeverOnline { instance, timeout, profile }
            if instance == "i-0123456789abcdef0" && *timeout == Duration::from_secs(300) && profile == "builder"),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("AmazonSSMManagedInstanceCore"),
        "{error}"
    );
    assert!(
        cleanup.contains("terminated builder i-0123456789abcdef0"),
        "{cleanup}"
    );
    assert_eq!(world.send_command.num_calls(), 0);
    assert!(world.terminate.num_calls() >= 1);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(300) && waited < Duration::from_secs(320),
        "{waited:?}"
    );
    // Polls slow down: 300 s of waiting costs tens of calls, not hundreds.
    assert!(
        world.instance_info.num_calls() < 50,
        "{} polls",
        world.instance_info.num_calls()
    );
}

#[tokio::test(start_paused = true)]
async fn failing_step_names_step_exit_code_and_output() {
    let mut world = World::happy();
    world.command_result = mock!(aws_sdk_ssm::Client::get_command_invocation).then_output(|| {
        GetCommandInvocationOutput::builder()
            .status(ssmt::CommandInvocationStatus::Failed)
            .response_code(2)
            .standard_output_content("Installing...\nstep 2 of 2")
            .standard_error_content("warning: retrying\nE: Unable to locate package ecs-init")
            .build()
    });
    let steps = json!([{"Name": "install", "Commands": ["dnf install -y ecs-init"]}, {"Name": "later", "Commands": ["true"]}]);
    let failed = world
        .create(spec(steps), Timing::default())
        .await
        .unwrap_err();
    let (stage, error, _) = failed_in(&failed);
    assert_eq!(stage, "running a step");
    let BuildError::StepFailed {
        step,
        end,
        stderr,
        stdout,
    } = error
    else {
        panic!("a failed step was expected: {error:?}");
    };
    assert_eq!((step.name.as_str(), step.index, step.of), ("install", 0, 2));
    assert_eq!(*end, StepEnd::Exited { code: 2 });
    assert!(
        stderr.contains("E: Unable to locate package ecs-init"),
        "{stderr}"
    );
    assert!(stdout.contains("step 2 of 2"), "{stdout}");
    // And the Reason quotes both tails.
    let reason = failed.to_string();
    assert!(
        reason.contains("step \"install\" (1 of 2) exited 2; stderr: \"warning: retrying\\nE: Unable to locate package ecs-init\""),
        "{reason}"
    );
    assert_eq!(
        world.send_command.num_calls(),
        1,
        "the later step never starts"
    );
    assert_eq!(
        world.cancel_command.num_calls(),
        0,
        "a finished command needs no cancelling"
    );
    assert_eq!(world.create_image.num_calls(), 0);
    assert!(world.terminate.num_calls() >= 1);
}

#[tokio::test(start_paused = true)]
async fn step_timeout_is_reported_as_such() {
    let mut world = World::happy();
    world.command_result = mock!(aws_sdk_ssm::Client::get_command_invocation).then_output(|| {
        GetCommandInvocationOutput::builder()
            .status(ssmt::CommandInvocationStatus::TimedOut)
            .response_code(-1)
            .build()
    });
    let outcome = world
        .create(
            spec(json!([{"Name": "slow", "Commands": ["sleep 999"], "TimeoutSeconds": 60}])),
            Timing::default(),
        )
        .await
        .unwrap_err();
    let (_, error, _) = failed_in(&outcome);
    assert!(
        matches!(error, BuildError::StepFailed { step, end: StepEnd::TimedOut { timeout_seconds: 60 }, .. } if step.name == "slow"),
        "{error:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn image_ending_failed_is_removed_with_its_snapshot() {
    let mut world = World::happy();
    world.new_image = on("DescribeImages")
        .when(|q| q.list("ImageId") == [NEW_IMAGE])
        .then_xml(|| images(&[image(NEW_IMAGE, "failed")]));
    // The image is findable by its tags only once CreateImage made it.
    let made = Arc::new(AtomicBool::new(false));
    let set = made.clone();
    world.create_image = on("CreateImage").then(move |_| {
        set.store(true, Ordering::SeqCst);
        Answer::Xml(image_id("CreateImage", NEW_IMAGE))
    });
    world.tagged_images = on("DescribeImages")
        .when(|q| q.list("Owner") == ["self"])
        .then_xml(move || {
            if made.load(Ordering::SeqCst) {
                images(&[image(NEW_IMAGE, "failed")])
            } else {
                images(&[])
            }
        });
    let failed = world
        .create(spec(json!([])), Timing::default())
        .await
        .unwrap_err();
    let (_, error, cleanup) = failed_in(&failed);
    assert_eq!(
        *error,
        BuildError::ImageFailed {
            image: NEW_IMAGE.into(),
            state: "failed".into(),
            reason: Some("Client.InternalError: snapshot failed".into()),
        }
    );
    assert!(
        cleanup.contains("deregistered half-made image ami-0fedcba9876543210"),
        "{cleanup}"
    );
    assert!(
        cleanup.contains("deleted snapshot snap-0123456789abcdef0"),
        "{cleanup}"
    );
    assert_eq!(world.deregister.num_calls(), 1);
    assert_eq!(world.delete_snapshot.num_calls(), 1);
    assert!(world.terminate.num_calls() >= 1);
}

#[tokio::test(start_paused = true)]
async fn throttling_and_server_errors_are_retried() {
    let mut world = World::happy();
    world.run_instances = on("RunInstances")
        .first(
            Answer::Error(
                "RequestLimitExceeded".into(),
                "Request limit exceeded.".into(),
            ),
            2,
        )
        .first(Answer::Status(503), 1)
        .then_xml(launched);
    let outcome = world
        .create(
            spec(json!([{"Name": "a", "Commands": ["true"]}])),
            Timing::default(),
        )
        .await
        .expect("the build succeeds");
    assert_eq!(outcome.id, NEW_IMAGE, "{outcome:?}");
    assert_eq!(
        world.run_instances.num_calls(),
        4,
        "two throttles, one 503, then the launch"
    );
}

#[tokio::test(start_paused = true)]
async fn persistent_throttling_fails_with_the_call_named_and_nothing_left() {
    let mut world = World::happy();
    world.run_instances =
        on("RunInstances").then_error("RequestLimitExceeded", "Request limit exceeded.");
    world.describe_instances = on("DescribeInstances").then_xml(|| instances(&[]));
    let failed = world
        .create(spec(json!([])), Timing::default())
        .await
        .unwrap_err();
    let (stage, error, cleanup) = failed_in(&failed);
    assert_eq!(stage, "launching the builder");
    assert!(
        matches!(error, BuildError::Aws(e) if e.operation == "ec2:RunInstances" && e.code.as_deref() == Some("RequestLimitExceeded")),
        "{error:?}"
    );
    assert_eq!(cleanup, "Cleanup: nothing had been created");
    let tries = 1 + Timing::default().throttled_tries as usize;
    assert_eq!(
        world.run_instances.num_calls(),
        8 * tries,
        "the retry policy's 8 attempts, for the phase and each time it is tried again"
    );
}

#[tokio::test(start_paused = true)]
async fn builder_terminated_by_someone_else_fails_the_build() {
    let world = World::never_online("terminated");
    let failed = world
        .create(spec(json!([])), Timing::default())
        .await
        .unwrap_err();
    let (_, error, _) = failed_in(&failed);
    assert!(
        matches!(error, BuildError::BuilderNotRunning { instance, state: Some(state), step: None, .. }
            if instance == "i-0123456789abcdef0" && *state == InstanceStateName::Terminated),
        "{error:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn timeout_minutes_stops_the_build_and_cleans_up() {
    let mut world = World::happy();
    world.command_result = mock!(aws_sdk_ssm::Client::get_command_invocation).then_output(|| {
        GetCommandInvocationOutput::builder()
            .status(ssmt::CommandInvocationStatus::InProgress)
            .response_code(-1)
            .build()
    });
    let started = tokio::time::Instant::now();
    let spec = AmiSpec::parse(&json!({
        "SourceAmi": SOURCE, "IamInstanceProfile": "builder", "TimeoutMinutes": 2,
        "Steps": [{"Name": "long", "Commands": ["sleep 900"], "TimeoutSeconds": 900}]
    }))
    .unwrap();
    let failed = world.create(spec, Timing::default()).await.unwrap_err();
    assert!(
        matches!(failed.failure, Failure::TimedOut { minutes: 2, stage: "running a step", stage_ran }
            if stage_ran >= Duration::from_secs(100)),
        "{:?}",
        failed.failure
    );
    let cleanup = failed.cleanup.clone().unwrap_or_default();
    let elapsed = started.elapsed();
    // Noticed at the first poll after the 2 minutes: polls are at most max_poll apart.
    let latest = Duration::from_secs(121) + Timing::default().max_poll;
    assert!(
        elapsed >= Duration::from_secs(120) && elapsed <= latest,
        "{elapsed:?}"
    );
    assert_eq!(
        world.cancel_command.num_calls(),
        1,
        "the running command is cancelled"
    );
    assert!(
        cleanup
            .removed
            .iter()
            .any(|r| r.kind == ResourceKind::Builder && r.id == "i-0123456789abcdef0"),
        "{cleanup:?}"
    );
    assert!(cleanup.is_complete(), "{cleanup}");
}

/// A delivery retried after its CreateImage went through, while the tag search does not list
/// the image yet (eventual consistency): CreateImage answers InvalidAMIName.Duplicate (AMI names
/// are unique per account and region), and the build follows the image found by its name
/// instead of failing. An image of that name that is not this request's is an error.
#[tokio::test(start_paused = true)]
async fn a_duplicate_name_of_this_requests_own_image_is_followed() {
    let ours = vec![
        ("ecs-ami:stack-id".to_owned(), identity().stack_id),
        ("ecs-ami:logical-id".to_owned(), identity().logical_id),
        ("ecs-ami:request-id".to_owned(), identity().request_id),
    ];
    let theirs = vec![("team".to_owned(), "other".to_owned())];
    for (tags, expected) in [(ours, Status::Success), (theirs, Status::Failed)] {
        let mut world = World::happy();
        world.create_image = on("CreateImage").then_error(
            "InvalidAMIName.Duplicate",
            "AMI name x is already in use by AMI ami-0fedcba9876543210",
        );
        // DescribeImages of our own images: the tag search lists nothing yet, the name finds it.
        world.tagged_images = on("DescribeImages")
            .when(|q| q.list("Owner") == ["self"])
            .then(move |q| {
                let by_name = q.filter_names().contains(&"name");
                let mut found = image(NEW_IMAGE, "available");
                found.tags = tags.clone();
                Answer::Xml(if by_name {
                    images(&[found])
                } else {
                    images(&[])
                })
            });
        match (
            world.create(spec(json!([])), Timing::default()).await,
            expected,
        ) {
            (Ok(done), Status::Success) => assert_eq!(done.id, NEW_IMAGE),
            (Err(failed), Status::Failed) => {
                let (stage, error, _) = failed_in(&failed);
                assert_eq!(stage, "creating the image");
                assert!(
                    matches!(error, BuildError::Aws(e) if e.code.as_deref() == Some("InvalidAMIName.Duplicate")),
                    "{error:?}"
                );
            }
            (other, _) => panic!("expected {expected:?}: {other:?}"),
        }
    }
}

/// Request records are kept a day (past the 6 hours Lambda keeps an event), then removed by the
/// hourly sweep, every resource's. Younger ones and values that are not records stay.
#[tokio::test]
async fn request_records_older_than_a_day_are_swept() {
    use ecs_ami::engine::ledger;
    let world = World::happy();
    let aws = world.aws();
    let mine = identity();
    let other = ecs_ami::cfn::Identity {
        stack_id: "arn:aws:cloudformation:us-east-1:123456789012:stack/gone/guid".into(),
        ..identity()
    };
    let now_ms = ecs_ami::engine::time::now_ms();
    let old = json!({"Record": "Answered", "Status": "SUCCESS", "PhysicalId": "ami-1", "Reason": null, "AtMs": now_ms - 25 * 3600 * 1000}).to_string();
    let young = json!({"Record": "Cancelled", "By": "r", "AtMs": now_ms - 3600 * 1000}).to_string();
    let records = |identity: &ecs_ami::cfn::Identity, request: &str| {
        ledger::path(&ecs_ami::cfn::Identity {
            request_id: request.into(),
            ..identity.clone()
        })
    };
    {
        let mut store = world.parameters.lock().unwrap();
        store.insert(records(&mine, "old"), old.clone());
        store.insert(records(&mine, "young"), young.clone());
        store.insert(records(&mine, "garbage"), "not a record".into());
        store.insert(records(&other, "old"), old);
    }
    assert_eq!(ledger::sweep_all(&aws).await.unwrap(), 2);
    let left = |name: String| world.parameters.lock().unwrap().contains_key(&name);
    assert!(!left(records(&mine, "old")));
    assert!(!left(records(&other, "old")));
    assert!(left(records(&mine, "young")));
    assert!(left(records(&mine, "garbage")));
}
