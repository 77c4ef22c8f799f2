//! Builds longer than one Lambda invocation, in simulated time: tokio's paused clock and an AWS
//! whose answers follow a scripted timeline. Each "invocation" gets Lambda's 15 minutes; the
//! handler hands the build over before they run out, and only the last invocation answers.

use crate::common;

use common::report;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_ssm::operation::describe_instance_information::DescribeInstanceInformationOutput;
use aws_sdk_ssm::operation::get_command_invocation::GetCommandInvocationOutput;
use aws_sdk_ssm::operation::send_command::SendCommandOutput;
use aws_sdk_ssm::types as ssmt;
use aws_smithy_mocks::mock;
use common::local::{InProcessScheduler, invoke_until_answered};
use common::mocks::*;
use ecs_ami::cfn::{Form, Response, SinkError, Status};
use ecs_ami::handler::{Handled, Limits, ResponseSink, handle};
use serde_json::{Value, json};
use tokio::time::Instant;

/// Records responses with the (simulated) time they were sent.
#[derive(Clone, Default)]
struct MemorySink(Arc<Mutex<Vec<(Response, Instant)>>>);

impl ResponseSink for MemorySink {
    fn send(
        &self,
        _url: &str,
        response: &Response,
    ) -> impl std::future::Future<Output = Result<(), SinkError>> + Send {
        self.0
            .lock()
            .unwrap()
            .push((response.clone(), Instant::now()));
        async { Ok(()) }
    }
}

const PENDING: Duration = Duration::from_secs(40);
const ONLINE_AFTER: Duration = Duration::from_secs(120);
const STEPS: [Duration; 2] = [Duration::from_secs(180), Duration::from_secs(300)];
const STOPPING: Duration = Duration::from_secs(60);
const SNAPSHOT: Duration = Duration::from_secs(25 * 60);
const LAMBDA_TIMEOUT: Duration = Duration::from_secs(900);

/// What has happened so far in the scripted AWS, and when each state change was first noticed.
#[derive(Default)]
struct Timeline {
    launched: Option<Instant>,
    /// The same moment on the build's clock, as EC2 reports LaunchTime.
    launched_ms: Option<u64>,
    /// When each command was sent, and its comment (which names the step).
    commands: Vec<(Instant, String)>,
    stop_requested: Option<Instant>,
    image_requested: Option<Instant>,
    terminated: bool,
    /// State change -> how long after it happened the build first saw it.
    noticed: BTreeMap<String, Duration>,
    /// How long each step runs, when not [`STEPS`]; and the step (0-based) that fails at its end.
    step_lengths: Option<Vec<Duration>>,
    failing_step: Option<usize>,
}

impl Timeline {
    fn notice(&mut self, what: String, happened: Instant) {
        self.noticed
            .entry(what)
            .or_insert_with(|| Instant::now() - happened);
    }

    /// The builder's state now, following the script.
    fn instance_state(&mut self) -> &'static str {
        let now = Instant::now();
        let launched = self.launched.expect("launched before described");
        if self.terminated {
            "terminated"
        } else if let Some(stop) = self.stop_requested {
            if now >= stop + STOPPING {
                self.notice("stopped".into(), stop + STOPPING);
                "stopped"
            } else {
                "stopping"
            }
        } else if now >= launched + PENDING {
            "running"
        } else {
            "pending"
        }
    }

    fn image_state(&mut self) -> &'static str {
        let available_at = self.image_requested.expect("requested") + SNAPSHOT;
        if Instant::now() >= available_at {
            self.notice("image available".into(), available_at);
            "available"
        } else {
            "pending"
        }
    }
}

fn scripted_world(timeline: &Arc<Mutex<Timeline>>) -> World {
    let mut world = World::happy();
    let t = timeline.clone();
    world.run_instances = on("RunInstances").then_xml(move || {
        // The same ClientToken returns the same instance, as EC2 does.
        let mut t = t.lock().unwrap();
        t.launched.get_or_insert_with(Instant::now);
        t.launched_ms
            .get_or_insert_with(ecs_ami::engine::time::now_ms);
        launched()
    });
    let t = timeline.clone();
    world.describe_instances = on("DescribeInstances")
        .then_xml(move || instance_state(t.lock().unwrap().instance_state()));
    let t = timeline.clone();
    world.tagged_instances = on("DescribeInstances")
        .when(|q| !q.filter_names().is_empty())
        .then_xml(move || {
            let mut t = t.lock().unwrap();
            match t.launched_ms {
                Some(ms) => {
                    let launched = aws_smithy_types::DateTime::from_millis(ms as i64)
                        .fmt(aws_smithy_types::date_time::Format::DateTime)
                        .unwrap();
                    let mut builder = MockInstance::new(BUILDER, t.instance_state());
                    builder.launched = Some(launched);
                    instances(&[builder])
                }
                None => instances(&[]),
            }
        });
    let t = timeline.clone();
    world.list_commands =
        mock!(aws_sdk_ssm::Client::list_commands).then_compute_output(move |_| {
            let t = t.lock().unwrap();
            let commands = t.commands.iter().enumerate().map(|(i, (_, comment))| {
                ssmt::Command::builder()
                    .command_id(format!("cmd-{i}"))
                    .comment(comment)
                    .build()
            });
            aws_sdk_ssm::operation::list_commands::ListCommandsOutput::builder()
                .set_commands(Some(commands.collect()))
                .build()
        });
    let t = timeline.clone();
    world.tagged_images = on("DescribeImages")
        .when(|q| q.list("Owner") == ["self"])
        .then_xml(move || {
            let mut t = t.lock().unwrap();
            if t.image_requested.is_some() {
                images(&[image(NEW_IMAGE, t.image_state())])
            } else {
                images(&[])
            }
        });
    let t = timeline.clone();
    world.instance_info = mock!(aws_sdk_ssm::Client::describe_instance_information)
        .then_compute_output(move |_| {
            let mut t = t.lock().unwrap();
            let online_at = t.launched.expect("launched") + ONLINE_AFTER;
            let mut out = DescribeInstanceInformationOutput::builder();
            if Instant::now() >= online_at {
                t.notice("SSM Online".into(), online_at);
                out = out.instance_information_list(
                    ssmt::InstanceInformation::builder()
                        .instance_id(BUILDER)
                        .ping_status(ssmt::PingStatus::Online)
                        .build(),
                );
            }
            out.build()
        });
    let t = timeline.clone();
    world.send_command =
        mock!(aws_sdk_ssm::Client::send_command).then_compute_output(move |input| {
            let mut t = t.lock().unwrap();
            t.commands.push((
                Instant::now(),
                input.comment().unwrap_or_default().to_owned(),
            ));
            let id = format!("cmd-{}", t.commands.len() - 1);
            SendCommandOutput::builder()
                .command(ssmt::Command::builder().command_id(id).build())
                .build()
        });
    let t = timeline.clone();
    world.command_result =
        mock!(aws_sdk_ssm::Client::get_command_invocation).then_compute_output(move |input| {
            let mut t = t.lock().unwrap();
            let index: usize = input
                .command_id()
                .unwrap()
                .trim_start_matches("cmd-")
                .parse()
                .unwrap();
            let length = t
                .step_lengths
                .as_ref()
                .map_or_else(|| STEPS[index], |l| l[index]);
            let done_at = t.commands[index].0 + length;
            let fails = t.failing_step == Some(index);
            let status = if Instant::now() < done_at {
                ssmt::CommandInvocationStatus::InProgress
            } else if fails {
                ssmt::CommandInvocationStatus::Failed
            } else {
                t.notice(format!("step {} done", index + 1), done_at);
                ssmt::CommandInvocationStatus::Success
            };
            GetCommandInvocationOutput::builder()
                .status(status)
                .response_code(if fails { 1 } else { 0 })
                .standard_error_content(if fails { "make: *** [all] Error 2" } else { "" })
                .build()
        });
    let t = timeline.clone();
    world.stop = on("StopInstances").then_xml(move || {
        t.lock()
            .unwrap()
            .stop_requested
            .get_or_insert_with(Instant::now);
        document("StopInstances", "")
    });
    let t = timeline.clone();
    world.create_image = on("CreateImage").then_xml(move || {
        t.lock()
            .unwrap()
            .image_requested
            .get_or_insert_with(Instant::now);
        image_id("CreateImage", NEW_IMAGE)
    });
    let t = timeline.clone();
    world.new_image = on("DescribeImages")
        .when(|q| q.list("ImageId") == [NEW_IMAGE])
        .then_xml(move || {
            let state = t.lock().unwrap().image_state();
            images(&[image(NEW_IMAGE, state)])
        });
    let t = timeline.clone();
    world.terminate = on("TerminateInstances").then_xml(move || {
        t.lock().unwrap().terminated = true;
        document("TerminateInstances", "")
    });
    world
}

fn create_event(properties: Value) -> Value {
    json!({
        "RequestType": "Create",
        "ResponseURL": "https://cloudformation-custom-resource-response.invalid/presigned",
        "StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/mocked/guid",
        "RequestId": "req-long",
        "ResourceType": "Custom::EcsAmi",
        "LogicalResourceId": "Ami",
        "ResourceProperties": properties,
    })
}

/// The 40-minute build of the issue: instance pending 40 s, SSM Online at 2 min, steps 8 min,
/// stopping 1 min, image pending 25 min. Prints the figures reported in docs/internals/measurements.md.
#[tokio::test(start_paused = true)]
async fn a_forty_minute_build_hands_over_and_answers_once() {
    let timeline = Arc::new(Mutex::new(Timeline::default()));
    let world = scripted_world(&timeline);
    let sink = MemorySink::default();
    let properties = json!({
        "SourceAmi": SOURCE,
        "IamInstanceProfile": "builder",
        "Steps": [
            {"Name": "update", "Commands": ["dnf -y update --releasever=latest"]},
            {"Name": "agents", "Commands": ["dnf -y install amazon-cloudwatch-agent"]}
        ]
    });
    let started = Instant::now();
    let (response, hand_overs) =
        invoke_until_answered(create_event(properties), &world.aws(), &sink, || {
            Limits::before_deadline(LAMBDA_TIMEOUT)
        })
        .await
        .expect("answered")
        .expect("not yielded");
    let elapsed = started.elapsed();

    assert_eq!(response.status, Status::Success, "{:?}", response.reason);
    assert_eq!(response.physical_resource_id, NEW_IMAGE);
    let sent = sink.0.lock().unwrap().clone();
    assert_eq!(sent.len(), 1, "exactly one response");
    assert_eq!(world.run_instances.num_calls(), 1);
    assert_eq!(world.create_image.num_calls(), 1);
    assert_eq!(world.send_command.num_calls(), 2);

    // Each invocation hands over 90 s before its 15 minutes end: one hand-over per started
    // 810-second window, and no more.
    let window = LAMBDA_TIMEOUT - Duration::from_secs(90);
    let expected = (elapsed.as_secs_f64() / window.as_secs_f64()).ceil() as u32 - 1;
    assert_eq!(hand_overs, expected, "elapsed {elapsed:?}");
    assert!(
        hand_overs >= 2,
        "a 40-minute build needs at least two hand-overs"
    );

    let timeline = timeline.lock().unwrap();
    let available_at = timeline.image_requested.unwrap() + SNAPSHOT;
    let answered_after = sent[0].1 - available_at;
    // Polls slow down to Timing::max_poll (15 s), and to image_max_poll (30 s) for an image.
    let timing = ecs_ami::engine::Timing::default();
    assert!(
        answered_after <= timing.image_max_poll + Duration::from_secs(1),
        "SUCCESS {answered_after:?} after the image was available"
    );
    for (change, latency) in &timeline.noticed {
        let bound = match change.as_str() {
            "image available" => timing.image_max_poll,
            _ => timing.max_poll,
        };
        assert!(*latency <= bound, "{change} noticed after {latency:?}");
    }
    assert_eq!(timeline.noticed.len(), 5, "{:?}", timeline.noticed);

    let calls = world.total_calls();
    let lease_calls = world.put_parameter.num_calls()
        + world.parameters_by_path.num_calls()
        + world.delete_parameters.num_calls();
    println!(
        "simulated build: {:.1} min, {hand_overs} hand-overs, {calls} AWS API calls ({lease_calls} of them for the build lease), SUCCESS {:.1} s after the image was available",
        elapsed.as_secs_f64() / 60.0,
        answered_after.as_secs_f64()
    );
    for (change, latency) in &timeline.noticed {
        println!(
            "  {change}: noticed {:.1} s after it happened",
            latency.as_secs_f64()
        );
    }
    let record_reads = world.get_parameters.num_calls();
    println!("  {record_reads} of the calls read the request's record (whether it was cancelled)");
    // The same figures for scripts/bench, which records them for docs/internals/measurements.md.
    let noticed: serde_json::Map<String, serde_json::Value> = timeline
        .noticed
        .iter()
        .map(|(change, latency)| (change.to_string(), json!(latency.as_secs_f64())))
        .collect();
    println!(
        "measured: {}",
        json!({"simulated_build": {
            "minutes": elapsed.as_secs_f64() / 60.0, "hand_overs": hand_overs, "calls": calls,
            "lease_calls": lease_calls, "record_reads": record_reads,
            "answered_after_s": answered_after.as_secs_f64(), "noticed_s": noticed,
        }})
    );
    // 451-456 seen when polls stopped slowing at 10 s, the builder's EC2 state was looked at every
    // 30 s of the steps and the request's record read every 10 s.
    assert!(calls <= 250, "{calls} API calls exceed the budget of 250");
    report::record(
        "deadline-02",
        "Deadlines",
        "Scripted AWS, simulated time: a 36-minute build in 15-minute invocations",
        "2 hand-overs, exactly one SUCCESS",
        None,
    );
}

/// A build handed over after every state reaches the same result as one that is not.
#[tokio::test(start_paused = true)]
async fn hand_over_after_every_state_gives_the_same_answer() {
    let properties = json!({"SourceAmi": SOURCE, "IamInstanceProfile": "builder", "Steps": [{"Name": "a", "Commands": ["true"]}]});
    let mut answers = Vec::new();
    for every_state in [false, true] {
        let timeline = Arc::new(Mutex::new(Timeline::default()));
        let world = scripted_world(&timeline);
        let sink = MemorySink::default();
        let (response, hand_overs) = invoke_until_answered(
            create_event(properties.clone()),
            &world.aws(),
            &sink,
            || Limits {
                hand_over_every_state: every_state,
                ..Limits::before_deadline(LAMBDA_TIMEOUT)
            },
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(world.run_instances.num_calls(), 1);
        assert_eq!(world.create_image.num_calls(), 1);
        if every_state {
            assert!(hand_overs >= 10, "{hand_overs} hand-overs");
        }
        answers.push(response.data);
    }
    let without_names = |mut data: BTreeMap<String, String>| {
        data.remove("ImageName");
        data
    };
    assert_eq!(
        without_names(answers[0].clone()),
        without_names(answers[1].clone())
    );
}

/// Runs `event` to its answer as Lambda would: 15-minute invocations, each hand-over a fresh one.
/// `crash_at` kills whichever invocation is running at that moment (its work stops with it) and
/// `lose_hand_over` kills the invocation that made that hand-over just after its phase; either
/// way Lambda delivers the killed invocation's payload again a minute later. Returns the number of
/// hand-overs the build took, or None when the delivery left the build to another invocation.
async fn drive_like_lambda(
    world: &World,
    sink: &MemorySink,
    event: Value,
    every_state: bool,
    mut crash_at: Option<Instant>,
    mut lose_hand_over: Option<u32>,
) -> Option<u32> {
    let aws = world.aws();
    let mut most_hand_overs = 0;
    let scheduler = InProcessScheduler::default();
    let mut payload = event;
    for _ in 0..500 {
        let limits = Limits {
            hand_over_every_state: every_state,
            ..Limits::before_deadline(LAMBDA_TIMEOUT)
        };
        let invocation = handle(payload.clone(), &aws, sink, &scheduler, limits);
        let handled = match crash_at {
            Some(at) => match tokio::time::timeout_at(at, invocation).await {
                Ok(handled) => handled,
                Err(_) => {
                    crash_at = None;
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    continue;
                }
            },
            None => invocation.await,
        };
        match handled.expect("handled") {
            Handled::Answered(_) | Handled::Repeated(_) => return Some(most_hand_overs),
            Handled::Yielded => return None,
            Handled::Cancelled { by } => panic!("no other request cancels this one ({by})"),
            Handled::Swept { .. } | Handled::EndedKept { .. } | Handled::Expanded(_) => {
                panic!("a build's event is not a scheduled maintenance")
            }
            Handled::HandedOver { hand_overs } => {
                most_hand_overs = most_hand_overs.max(hand_overs);
                let next = scheduler.take().expect("queued");
                if lose_hand_over == Some(hand_overs) {
                    lose_hand_over = None;
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    continue;
                }
                payload = serde_json::from_str(&next).unwrap();
            }
        }
    }
    panic!("no answer after 500 invocations");
}

fn two_step_build() -> Value {
    create_event(json!({
        "SourceAmi": SOURCE,
        "IamInstanceProfile": "builder",
        "Steps": [
            {"Name": "update", "Commands": ["dnf -y update --releasever=latest"]},
            {"Name": "agents", "Commands": ["dnf -y install amazon-cloudwatch-agent"]}
        ]
    }))
}

fn assert_one_build(world: &World, sink: &MemorySink, scenario: &str) {
    let sent = sink.0.lock().unwrap();
    assert_eq!(sent.len(), 1, "{scenario}: one response");
    assert_eq!(
        sent[0].0.status,
        Status::Success,
        "{scenario}: {:?}",
        sent[0].0.reason
    );
    assert_eq!(sent[0].0.physical_resource_id, NEW_IMAGE, "{scenario}");
    assert_eq!(
        world.run_instances.num_calls(),
        1,
        "{scenario}: one builder launched"
    );
    assert_eq!(
        world.send_command.num_calls(),
        2,
        "{scenario}: each step sent once"
    );
    assert_eq!(world.create_image.num_calls(), 1, "{scenario}: one image");
    assert_eq!(
        world.deregister.num_calls(),
        0,
        "{scenario}: nothing undone"
    );
    assert!(
        world.terminate.num_calls() >= 1,
        "{scenario}: builder terminated"
    );
}

/// Killed after any phase, before handing over: the retried payload is one phase stale, and the
/// build neither repeats a side effect nor loses one.
#[tokio::test(start_paused = true)]
async fn a_crash_at_every_state_boundary_converges_on_one_build() {
    let clean = {
        let world = scripted_world(&Arc::new(Mutex::new(Timeline::default())));
        drive_like_lambda(
            &world,
            &MemorySink::default(),
            two_step_build(),
            true,
            None,
            None,
        )
        .await
        .expect("answered")
    };
    // Resolve, Launch, AwaitOnline, 2 x (StartStep, AwaitStep), StartStep (none left), Stop,
    // AwaitStopped, CreateImage, AwaitImage, TagSnapshots, Finish, Done: 14 changes of state.
    assert_eq!(clean, 14, "hand-overs of a two-step build");
    for lost in 1..=clean {
        let world = scripted_world(&Arc::new(Mutex::new(Timeline::default())));
        let sink = MemorySink::default();
        drive_like_lambda(&world, &sink, two_step_build(), true, None, Some(lost)).await;
        assert_one_build(&world, &sink, &format!("crash after hand-over {lost}"));
    }
    println!(
        "crashed at each of {clean} state boundaries: one builder, one image, one response each time"
    );
    report::record(
        "crash-02",
        "Crashes and duplicate deliveries",
        "Scripted AWS, simulated time: a two-step build killed at each of its 14 state boundaries, the stale hand-over retried",
        "one builder (terminated), each step sent once, one image, exactly one SUCCESS",
        None,
    );
}

/// Killed at any moment, including in the middle of every wait: the retried payload may be
/// minutes stale, and the build still ends with one builder, one image and one response.
#[tokio::test(start_paused = true)]
async fn a_crash_at_any_moment_converges_on_one_build() {
    let mut crashes = 0;
    for at_seconds in (5..2250).step_by(45) {
        let timeline = Arc::new(Mutex::new(Timeline::default()));
        let world = scripted_world(&timeline);
        let sink = MemorySink::default();
        let crash_at = Instant::now() + Duration::from_secs(at_seconds);
        drive_like_lambda(&world, &sink, two_step_build(), false, Some(crash_at), None).await;
        assert_one_build(&world, &sink, &format!("crash at {at_seconds} s"));
        crashes += 1;
    }
    println!(
        "crashed at {crashes} moments from 5 s to 37 min: one builder, one image, one response each time"
    );
    report::record(
        "crash-03",
        "Crashes and duplicate deliveries",
        "Scripted AWS, simulated time: a 36-minute build killed at 50 moments from 5 s to 37 min, retried a minute later",
        "one builder (terminated), each step sent once, one image, exactly one SUCCESS",
        None,
    );
}

/// Lambda delivers the same Create twice at once: one delivery builds and answers, the other sees
/// the lease renewed by a live holder and leaves the build to it, saying nothing.
#[tokio::test(start_paused = true)]
async fn concurrent_duplicate_deliveries_converge_on_one_build() {
    let world = scripted_world(&Arc::new(Mutex::new(Timeline::default())));
    let sink = MemorySink::default();
    let (first, second) = tokio::join!(
        drive_like_lambda(&world, &sink, two_step_build(), false, None, None),
        drive_like_lambda(&world, &sink, two_step_build(), false, None, None),
    );
    assert_eq!(
        [first.is_some(), second.is_some()]
            .iter()
            .filter(|answered| **answered)
            .count(),
        1,
        "exactly one delivery answers: {first:?} {second:?}"
    );
    assert_one_build(&world, &sink, "two concurrent deliveries");
    assert!(world.leases().is_empty(), "the lease is released");
}

/// TimeoutMinutes running out in each stage of the 36-minute build: FAILED naming the stage and
/// how long it had run, the running command cancelled, the builder terminated, a half-made image
/// deregistered with its snapshot.
#[tokio::test(start_paused = true)]
async fn timeout_minutes_in_each_stage_fails_and_cleans_up() {
    for (minutes, stage) in [
        (1, "waiting for SSM to report the builder Online"),
        (5, "running a step"),
        (11, "stopping the builder"),
        (20, "creating the image"),
    ] {
        let world = scripted_world(&Arc::new(Mutex::new(Timeline::default())));
        let sink = MemorySink::default();
        let mut event = two_step_build();
        event["ResourceProperties"]["TimeoutMinutes"] = json!(minutes);
        drive_like_lambda(&world, &sink, event, false, None, None).await;
        let sent = sink.0.lock().unwrap();
        assert_eq!(sent.len(), 1);
        let reason = sent[0].0.reason.clone().unwrap_or_default();
        assert_eq!(sent[0].0.status, Status::Failed, "{minutes} min: {reason}");
        assert!(
            reason.contains(&format!(
                "exceeded its TimeoutMinutes ({minutes}) while {stage} (that stage had run"
            )),
            "{minutes} min: {reason}"
        );
        assert!(
            reason.contains("terminated builder"),
            "{minutes} min: {reason}"
        );
        assert!(world.terminate.num_calls() >= 1);
        if stage == "running a step" {
            assert_eq!(
                world.cancel_command.num_calls(),
                1,
                "the running step is cancelled"
            );
        }
        if stage == "creating the image" {
            assert!(reason.contains("deregistered half-made image"), "{reason}");
            assert_eq!(world.deregister.num_calls(), 1);
            assert_eq!(world.delete_snapshot.num_calls(), 1);
        }
        assert!(world.leases().is_empty(), "the lease is released");
    }
    report::record(
        "deadline-01",
        "Deadlines",
        "Scripted AWS, simulated time: TimeoutMinutes runs out in each stage of a build",
        "one FAILED naming the stage; running step cancelled, half-made image and its snapshot removed, builder terminated",
        None,
    );
}

/// A retry of the original event after a crash keeps counting TimeoutMinutes from the builder's
/// launch: killed 9 minutes in (before the first hand-over), with TimeoutMinutes 12, the retry
/// takes over when the dead invocation's lease expires and stops at once, instead of granting
/// itself 12 more minutes.
#[tokio::test(start_paused = true)]
async fn a_retry_keeps_the_original_deadline() {
    let world = scripted_world(&Arc::new(Mutex::new(Timeline::default())));
    let sink = MemorySink::default();
    let mut event = two_step_build();
    event["ResourceProperties"]["TimeoutMinutes"] = json!(12);
    let started = Instant::now();
    let crash_at = started + Duration::from_secs(9 * 60);
    drive_like_lambda(&world, &sink, event, false, Some(crash_at), None).await;
    let sent = sink.0.lock().unwrap();
    assert_eq!(sent.len(), 1);
    let reason = sent[0].0.reason.clone().unwrap_or_default();
    assert_eq!(sent[0].0.status, Status::Failed, "{reason}");
    assert!(
        reason.contains("exceeded its TimeoutMinutes (12) while running a step"),
        "{reason}"
    );
    let answered_at = sent[0].1 - started;
    // Crash at 9 min, retry at 10, lease of the dead invocation expires by 14.
    assert!(
        answered_at <= Duration::from_secs(15 * 60),
        "answered after {answered_at:?}"
    );
    assert_eq!(world.run_instances.num_calls(), 1);
}

const MOCKED_STACK: &str = "arn:aws:cloudformation:us-east-1:123456789012:stack/mocked/guid";
/// The wait condition handle's URL the EcsAmi macro gives the resource that builds.
const HANDLE_URL: &str = "https://cloudformation-waitcondition-us-east-1.s3.amazonaws.com/handle";

/// The resource that builds, as the EcsAmi macro declares it (`AmiBuild`, building the image of
/// `Ami`): `steps` of `step_minutes` each, within `TimeoutMinutes` 600.
fn long_build_properties(steps: usize, step_minutes: u64) -> Value {
    let steps: Vec<Value> = (1..=steps)
        .map(|i| json!({"Name": format!("stage{i}"), "Commands": ["make -j2"], "TimeoutSeconds": step_minutes * 60 + 600}))
        .collect();
    json!({
        "SourceAmi": SOURCE,
        "IamInstanceProfile": "builder",
        "Steps": steps,
        "TimeoutMinutes": 600,
        "SignalUrl": HANDLE_URL,
        "ImageResource": "Ami",
    })
}

fn long_build_event(properties: Value) -> Value {
    let mut event = create_event(properties);
    event["LogicalResourceId"] = json!("AmiBuild");
    event
}

/// The resource that builds, with `properties`, run to its signal in 15-minute invocations:
/// the last answer (the signal) and the hand-overs it took.
async fn run_long_build(world: &World, sink: &MemorySink, properties: Value) -> (Response, u32) {
    invoke_until_answered(long_build_event(properties), &world.aws(), sink, || {
        Limits::before_deadline(LAMBDA_TIMEOUT)
    })
    .await
    .expect("answered")
    .expect("not yielded")
}

/// The same AMI as the build's scripted one, tagged as the build tags it: for `Ami`'s answer.
fn tagged_new_image(world: &mut World, timeline: &Arc<Mutex<Timeline>>) {
    let t = timeline.clone();
    world.new_image = on("DescribeImages")
        .when(|q| q.list("ImageId") == [NEW_IMAGE])
        .then_xml(move || {
            let mut built = image(NEW_IMAGE, t.lock().unwrap().image_state());
            built.tags = vec![
                ("ecs-ami:stack-id".into(), MOCKED_STACK.into()),
                ("ecs-ami:logical-id".into(), "Ami".into()),
            ];
            images(&[built])
        });
}

/// Issue 26's 8-hour build, declared as the EcsAmi macro expands one resource: the resource that
/// builds is acknowledged at its first hand-over, the build goes on in 15-minute invocations for 8 simulated
/// hours, signals its image to the wait condition once, and the resource that holds the image
/// answers with it for `!Ref` and `!GetAtt`, launching nothing.
#[tokio::test(start_paused = true)]
async fn an_eight_hour_build_is_acknowledged_at_its_first_hand_over_and_signals_its_image() {
    let timeline = Arc::new(Mutex::new(Timeline {
        step_lengths: Some(vec![Duration::from_secs(65 * 60); 7]),
        ..Timeline::default()
    }));
    let mut world = scripted_world(&timeline);
    tagged_new_image(&mut world, &timeline);
    let sink = MemorySink::default();
    let started = Instant::now();
    let (last, hand_overs) = run_long_build(&world, &sink, long_build_properties(7, 65)).await;
    let elapsed = started.elapsed();
    assert!(
        elapsed > Duration::from_secs(8 * 3600),
        "an 8-hour build: {elapsed:?}"
    );
    let sent = sink.0.lock().unwrap().clone();
    assert_eq!(sent.len(), 2, "the acknowledgement, then the signal");
    let (ack, acked_at) = &sent[0];
    assert_eq!(ack.form, Form::Response);
    assert_eq!(ack.status, Status::Success);
    assert_eq!(ack.logical_resource_id, "AmiBuild");
    assert!(
        ack.physical_resource_id.starts_with("ecs-ami-build-"),
        "{}",
        ack.physical_resource_id
    );
    // CloudFormation waits for the resource that builds: told at the first hand-over, within the
    // first invocation's 15 minutes, that the build goes on.
    assert!(
        *acked_at - started < LAMBDA_TIMEOUT,
        "{:?}",
        *acked_at - started
    );
    assert!(
        ack.reason
            .as_deref()
            .is_some_and(|r| r.starts_with("build in progress as request req-long")),
        "{:?}",
        ack.reason
    );
    let (signal, signalled_at) = &sent[1];
    assert_eq!(signal.form, Form::Signal);
    let body: Value = serde_json::from_slice(&signal.body()).unwrap();
    assert_eq!(
        body,
        json!({"Status": "SUCCESS", "Reason": "built", "UniqueId": "req-long", "Data": NEW_IMAGE})
    );
    assert!(*signalled_at - started > Duration::from_secs(8 * 3600));
    assert_eq!(last.physical_resource_id, NEW_IMAGE);
    assert_eq!(world.run_instances.num_calls(), 1);
    assert_eq!(world.send_command.num_calls(), 7);
    assert_eq!(world.create_image.num_calls(), 1);
    assert!(world.terminate.num_calls() >= 1, "builder terminated");
    // One invocation per 13.5 minutes of the build, as a short build hands over.
    let window = LAMBDA_TIMEOUT - Duration::from_secs(90);
    assert_eq!(
        hand_overs,
        (elapsed.as_secs_f64() / window.as_secs_f64()).ceil() as u32 - 1
    );

    // The wait condition's Data, as `!GetAtt Wait.Data` gives it to the resource that holds the
    // image: a JSON object of each signal's UniqueId to its Data.
    let launches = world.run_instances.num_calls();
    let mut holder = create_event(json!({
        "SourceAmi": SOURCE,
        "IamInstanceProfile": "builder",
        "Steps": long_build_properties(7, 65)["Steps"],
        "TimeoutMinutes": 600,
        "Signal": json!({"req-long": NEW_IMAGE}).to_string(),
    }));
    holder["RequestId"] = json!("req-holder");
    let (answer, _) = invoke_until_answered(holder, &world.aws(), &sink, || {
        Limits::before_deadline(LAMBDA_TIMEOUT)
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(answer.status, Status::Success, "{:?}", answer.reason);
    assert_eq!(answer.logical_resource_id, "Ami");
    assert_eq!(
        answer.physical_resource_id, NEW_IMAGE,
        "what !Ref Ami gives"
    );
    assert_eq!(
        answer.data["ImageId"], NEW_IMAGE,
        "what !GetAtt Ami.ImageId gives"
    );
    assert_eq!(
        world.run_instances.num_calls(),
        launches,
        "nothing launched"
    );
    println!(
        "simulated long build: {:.1} h, {hand_overs} hand-overs, acknowledged after {:?}, signalled {:.1} s after it began",
        elapsed.as_secs_f64() / 3600.0,
        *acked_at - started,
        (*signalled_at - started).as_secs_f64()
    );
    report::record(
        "deadline-long-01",
        "Builds over 55 minutes (the EcsAmi macro's wait condition)",
        "Scripted AWS, simulated time: an 8-hour build through the EcsAmi macro's wait condition",
        "acknowledged at the first hand-over, one SUCCESS signal with the AMI id, the image resource answers it",
        None,
    );
}

/// A long build whose first step fails at hour 3: the FAILURE signal carries the same Reason a
/// short build answers with, after everything the build made is removed.
#[tokio::test(start_paused = true)]
async fn a_failure_at_hour_three_is_signalled_with_its_reason_after_cleanup() {
    let timeline = Arc::new(Mutex::new(Timeline {
        step_lengths: Some(vec![Duration::from_secs(3 * 3600); 3]),
        failing_step: Some(0),
        ..Timeline::default()
    }));
    let world = scripted_world(&timeline);
    let sink = MemorySink::default();
    let started = Instant::now();
    run_long_build(&world, &sink, long_build_properties(3, 180)).await;
    let sent = sink.0.lock().unwrap().clone();
    assert_eq!(sent.len(), 2, "the acknowledgement, then the signal");
    assert_eq!(sent[0].0.status, Status::Success);
    let (signal, signalled_at) = &sent[1];
    let at = *signalled_at - started;
    assert!(
        at > Duration::from_secs(3 * 3600) && at < Duration::from_secs(3 * 3600 + 600),
        "signalled at {at:?}"
    );
    let body: Value = serde_json::from_slice(&signal.body()).unwrap();
    assert_eq!(body["Status"], "FAILURE");
    assert_eq!(body["UniqueId"], "req-long");
    let reason = body["Reason"].as_str().unwrap();
    assert!(
        reason.starts_with("failed while running a step: step \"stage1\" (1 of 3) exited 1")
            && reason.contains("make: *** [all] Error 2"),
        "{reason}"
    );
    assert!(
        reason.ends_with("Cleanup: terminated builder i-0123456789abcdef0"),
        "{reason}"
    );
    assert!(world.terminate.num_calls() >= 1, "builder terminated");
    assert_eq!(world.create_image.num_calls(), 0, "no image made");
    assert_eq!(
        world.send_command.num_calls(),
        1,
        "no step after the failed one"
    );
    report::record(
        "deadline-long-02",
        "Builds over 55 minutes (the EcsAmi macro's wait condition)",
        "Scripted AWS, simulated time: a long build's step fails at hour 3",
        "FAILURE signal with the short build's Reason, after the builder is terminated",
        None,
    );
}
