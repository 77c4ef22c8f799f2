//! Failure paths the local AWS cannot produce, with AWS answers scripted through
//! `aws-smithy-mocks`. The real adapters in `src/aws` run; only the HTTP layer is replaced.
//! Time is tokio's paused clock, so ten minutes of polling take no real time.

use std::time::Duration;

use aws_config::{BehaviorVersion, Region};
use aws_sdk_ec2::config::Credentials;
use aws_sdk_ec2::error::ErrorMetadata;
use aws_sdk_ec2::operation::create_image::CreateImageOutput;
use aws_sdk_ec2::operation::create_tags::CreateTagsOutput;
use aws_sdk_ec2::operation::delete_snapshot::DeleteSnapshotOutput;
use aws_sdk_ec2::operation::deregister_image::DeregisterImageOutput;
use aws_sdk_ec2::operation::describe_images::DescribeImagesOutput;
use aws_sdk_ec2::operation::describe_instances::DescribeInstancesOutput;
use aws_sdk_ec2::operation::describe_snapshots::DescribeSnapshotsOutput;
use aws_sdk_ec2::operation::describe_volumes::DescribeVolumesOutput;
use aws_sdk_ec2::operation::run_instances::{RunInstancesError, RunInstancesOutput};
use aws_sdk_ec2::operation::stop_instances::StopInstancesOutput;
use aws_sdk_ec2::operation::terminate_instances::TerminateInstancesOutput;
use aws_sdk_ec2::types as ec2t;
use aws_sdk_ssm::operation::describe_instance_information::DescribeInstanceInformationOutput;
use aws_sdk_ssm::operation::get_command_invocation::GetCommandInvocationOutput;
use aws_sdk_ssm::operation::send_command::SendCommandOutput;
use aws_sdk_ssm::types as ssmt;
use aws_smithy_async::rt::sleep::{SharedAsyncSleep, TokioSleep};
use aws_smithy_mocks::{Rule, RuleMode, create_mock_http_client, mock};
use ecs_ami::aws::{Aws, retry_config};
use ecs_ami::build::{self, Timing};
use ecs_ami::cfn::properties::AmiSpec;
use ecs_ami::cfn::{Identity, Outcome, Status};
use serde_json::json;

const SOURCE: &str = "ami-0aae19d30bab785d3";
const BUILDER: &str = "i-0123456789abcdef0";
const NEW_IMAGE: &str = "ami-0fedcba9876543210";

fn ec2(rules: &[&Rule]) -> aws_sdk_ec2::Client {
    let interceptor = rules.iter().fold(
        aws_smithy_mocks::MockResponseInterceptor::new().rule_mode(RuleMode::MatchAny),
        |i, r| i.with_rule(r),
    );
    let config = aws_sdk_ec2::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "mocks"))
        .http_client(create_mock_http_client())
        .interceptor(interceptor)
        .retry_config(retry_config())
        .sleep_impl(SharedAsyncSleep::new(TokioSleep::new()))
        .build();
    aws_sdk_ec2::Client::from_conf(config)
}

fn ssm(rules: &[&Rule]) -> aws_sdk_ssm::Client {
    let interceptor = rules.iter().fold(
        aws_smithy_mocks::MockResponseInterceptor::new().rule_mode(RuleMode::MatchAny),
        |i, r| i.with_rule(r),
    );
    let config = aws_sdk_ssm::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "mocks"))
        .http_client(create_mock_http_client())
        .interceptor(interceptor)
        .retry_config(retry_config())
        .sleep_impl(SharedAsyncSleep::new(TokioSleep::new()))
        .build();
    aws_sdk_ssm::Client::from_conf(config)
}

fn identity() -> Identity {
    Identity {
        stack_id: "arn:aws:cloudformation:us-east-1:123456789012:stack/mocked/guid".into(),
        logical_id: "Ami".into(),
        request_id: "req-mocked".into(),
    }
}

fn spec(steps: serde_json::Value) -> AmiSpec {
    AmiSpec::parse(&json!({"SourceAmi": SOURCE, "IamInstanceProfile": "builder", "Steps": steps}))
        .unwrap()
}

fn instance_state(state: ec2t::InstanceStateName) -> DescribeInstancesOutput {
    DescribeInstancesOutput::builder()
        .reservations(
            ec2t::Reservation::builder()
                .instances(
                    ec2t::Instance::builder()
                        .instance_id(BUILDER)
                        .state(ec2t::InstanceState::builder().name(state).build())
                        .build(),
                )
                .build(),
        )
        .build()
}

fn image(id: &str, state: ec2t::ImageState) -> ec2t::Image {
    ec2t::Image::builder()
        .image_id(id)
        .name("built")
        .state(state)
        .architecture(ec2t::ArchitectureValues::X8664)
        .state_reason(
            ec2t::StateReason::builder()
                .message("Client.InternalError: snapshot failed")
                .build(),
        )
        .block_device_mappings(
            ec2t::BlockDeviceMapping::builder()
                .device_name("/dev/xvda")
                .ebs(
                    ec2t::EbsBlockDevice::builder()
                        .snapshot_id("snap-0123456789abcdef0")
                        .build(),
                )
                .build(),
        )
        .build()
}

/// The AWS a build meets: each rule answers one kind of call, always the same way, and counts
/// how often it was called. Tests replace the rules that their scenario is about.
struct World {
    source_image: Rule,
    run_instances: Rule,
    instance_info: Rule,
    describe_instances: Rule,
    send_command: Rule,
    command_result: Rule,
    cancel_command: Rule,
    stop: Rule,
    create_image: Rule,
    new_image: Rule,
    tagged_images: Rule,
    create_tags: Rule,
    terminate: Rule,
    deregister: Rule,
    delete_snapshot: Rule,
    snapshots: Rule,
    volumes: Rule,
}

impl World {
    fn happy() -> World {
        World {
            source_image: mock!(aws_sdk_ec2::Client::describe_images)
                .match_requests(|r| r.image_ids() == [SOURCE.to_owned()])
                .then_output(|| {
                    DescribeImagesOutput::builder()
                        .images(image(SOURCE, ec2t::ImageState::Available))
                        .build()
                }),
            run_instances: mock!(aws_sdk_ec2::Client::run_instances).then_output(|| {
                RunInstancesOutput::builder()
                    .instances(ec2t::Instance::builder().instance_id(BUILDER).build())
                    .build()
            }),
            instance_info: mock!(aws_sdk_ssm::Client::describe_instance_information).then_output(
                || {
                    DescribeInstanceInformationOutput::builder()
                        .instance_information_list(
                            ssmt::InstanceInformation::builder()
                                .instance_id(BUILDER)
                                .ping_status(ssmt::PingStatus::Online)
                                .build(),
                        )
                        .build()
                },
            ),
            describe_instances: mock!(aws_sdk_ec2::Client::describe_instances)
                .then_output(|| instance_state(ec2t::InstanceStateName::Stopped)),
            send_command: mock!(aws_sdk_ssm::Client::send_command).then_output(|| {
                SendCommandOutput::builder()
                    .command(ssmt::Command::builder().command_id("cmd-1").build())
                    .build()
            }),
            command_result: mock!(aws_sdk_ssm::Client::get_command_invocation).then_output(|| {
                GetCommandInvocationOutput::builder()
                    .status(ssmt::CommandInvocationStatus::Success)
                    .response_code(0)
                    .standard_output_content("done")
                    .build()
            }),
            cancel_command: mock!(aws_sdk_ssm::Client::cancel_command).then_output(|| {
                aws_sdk_ssm::operation::cancel_command::CancelCommandOutput::builder().build()
            }),
            stop: mock!(aws_sdk_ec2::Client::stop_instances)
                .then_output(|| StopInstancesOutput::builder().build()),
            create_image: mock!(aws_sdk_ec2::Client::create_image)
                .then_output(|| CreateImageOutput::builder().image_id(NEW_IMAGE).build()),
            new_image: mock!(aws_sdk_ec2::Client::describe_images)
                .match_requests(|r| r.image_ids() == [NEW_IMAGE.to_owned()])
                .then_output(|| {
                    DescribeImagesOutput::builder()
                        .images(image(NEW_IMAGE, ec2t::ImageState::Available))
                        .build()
                }),
            tagged_images: mock!(aws_sdk_ec2::Client::describe_images)
                .match_requests(|r| r.owners() == ["self".to_owned()])
                .then_output(|| DescribeImagesOutput::builder().build()),
            create_tags: mock!(aws_sdk_ec2::Client::create_tags)
                .then_output(|| CreateTagsOutput::builder().build()),
            terminate: mock!(aws_sdk_ec2::Client::terminate_instances)
                .then_output(|| TerminateInstancesOutput::builder().build()),
            deregister: mock!(aws_sdk_ec2::Client::deregister_image)
                .then_output(|| DeregisterImageOutput::builder().build()),
            delete_snapshot: mock!(aws_sdk_ec2::Client::delete_snapshot)
                .then_output(|| DeleteSnapshotOutput::builder().build()),
            snapshots: mock!(aws_sdk_ec2::Client::describe_snapshots)
                .then_output(|| DescribeSnapshotsOutput::builder().build()),
            volumes: mock!(aws_sdk_ec2::Client::describe_volumes)
                .then_output(|| DescribeVolumesOutput::builder().build()),
        }
    }

    fn aws(&self) -> Aws {
        let ec2 = ec2(&[
            &self.source_image,
            &self.new_image,
            &self.tagged_images,
            &self.run_instances,
            &self.describe_instances,
            &self.stop,
            &self.create_image,
            &self.create_tags,
            &self.terminate,
            &self.deregister,
            &self.delete_snapshot,
            &self.snapshots,
            &self.volumes,
        ]);
        let ssm = ssm(&[
            &self.instance_info,
            &self.send_command,
            &self.command_result,
            &self.cancel_command,
        ]);
        Aws::from_clients(ec2, ssm)
    }

    async fn create(&self, spec: AmiSpec, timing: Timing) -> Outcome {
        build::create(&self.aws(), &identity(), spec, &timing).await
    }
}

fn reason(outcome: &Outcome) -> &str {
    outcome.reason.as_deref().unwrap_or_default()
}

#[tokio::test(start_paused = true)]
async fn scripted_happy_path_answers_with_the_image() {
    let world = World::happy();
    let outcome = world
        .create(
            spec(json!([{"Name": "a", "Commands": ["true"]}])),
            Timing::default(),
        )
        .await;
    assert_eq!(outcome.status, Status::Success, "{outcome:?}");
    assert_eq!(outcome.physical_id, NEW_IMAGE);
    assert_eq!(outcome.data["SnapshotIds"], "snap-0123456789abcdef0");
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
    let mut world = World::happy();
    world.instance_info = mock!(aws_sdk_ssm::Client::describe_instance_information)
        .then_output(|| DescribeInstanceInformationOutput::builder().build());
    world.describe_instances = mock!(aws_sdk_ec2::Client::describe_instances)
        .then_output(|| instance_state(ec2t::InstanceStateName::Running));
    let started = tokio::time::Instant::now();
    let timing = Timing {
        online_timeout: Duration::from_secs(300),
        ..Timing::default()
    };
    let outcome = world
        .create(spec(json!([{"Name": "a", "Commands": ["true"]}])), timing)
        .await;
    assert_eq!(outcome.status, Status::Failed);
    let reason = reason(&outcome);
    assert!(
        reason.contains("did not report builder i-0123456789abcdef0 Online within 300 s"),
        "{reason}"
    );
    assert!(reason.contains("AmazonSSMManagedInstanceCore"), "{reason}");
    assert!(
        reason.contains("terminated builder i-0123456789abcdef0"),
        "{reason}"
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
    let outcome = world.create(spec(steps), Timing::default()).await;
    assert_eq!(outcome.status, Status::Failed);
    let reason = reason(&outcome);
    assert!(
        reason.contains("step \"install\" (1 of 2) exited 2"),
        "{reason}"
    );
    assert!(
        reason.contains("E: Unable to locate package ecs-init"),
        "{reason}"
    );
    assert!(reason.contains("step 2 of 2"), "{reason}");
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
        .await;
    assert_eq!(outcome.status, Status::Failed);
    assert!(
        reason(&outcome).contains("step \"slow\" (1 of 1) timed out after its 60 s TimeoutSeconds"),
        "{}",
        reason(&outcome)
    );
}

#[tokio::test(start_paused = true)]
async fn image_ending_failed_is_removed_with_its_snapshot() {
    let mut world = World::happy();
    world.new_image = mock!(aws_sdk_ec2::Client::describe_images)
        .match_requests(|r| r.image_ids() == [NEW_IMAGE.to_owned()])
        .then_output(|| {
            DescribeImagesOutput::builder()
                .images(image(NEW_IMAGE, ec2t::ImageState::Failed))
                .build()
        });
    world.tagged_images = mock!(aws_sdk_ec2::Client::describe_images)
        .match_requests(|r| r.owners() == ["self".to_owned()])
        .then_output(|| {
            DescribeImagesOutput::builder()
                .images(image(NEW_IMAGE, ec2t::ImageState::Failed))
                .build()
        });
    let outcome = world.create(spec(json!([])), Timing::default()).await;
    assert_eq!(outcome.status, Status::Failed);
    let reason = reason(&outcome);
    assert!(
        reason.contains(
            "image ami-0fedcba9876543210 ended failed: Client.InternalError: snapshot failed"
        ),
        "{reason}"
    );
    assert!(
        reason.contains("deregistered half-made image ami-0fedcba9876543210"),
        "{reason}"
    );
    assert!(
        reason.contains("deleted snapshot snap-0123456789abcdef0"),
        "{reason}"
    );
    assert!(
        !outcome.physical_id.starts_with("ami-"),
        "a failed Create never answers with an image id"
    );
    assert_eq!(world.deregister.num_calls(), 1);
    assert_eq!(world.delete_snapshot.num_calls(), 1);
    assert!(world.terminate.num_calls() >= 1);
}

#[tokio::test(start_paused = true)]
async fn throttling_and_server_errors_are_retried() {
    let mut world = World::happy();
    world.run_instances = mock!(aws_sdk_ec2::Client::run_instances)
        .sequence()
        .error(|| {
            RunInstancesError::generic(
                ErrorMetadata::builder()
                    .code("RequestLimitExceeded")
                    .message("Request limit exceeded.")
                    .build(),
            )
        })
        .times(2)
        .http_status(503, None)
        .output(|| {
            RunInstancesOutput::builder()
                .instances(ec2t::Instance::builder().instance_id(BUILDER).build())
                .build()
        })
        .build();
    let outcome = world
        .create(
            spec(json!([{"Name": "a", "Commands": ["true"]}])),
            Timing::default(),
        )
        .await;
    assert_eq!(outcome.status, Status::Success, "{outcome:?}");
    assert_eq!(
        world.run_instances.num_calls(),
        4,
        "two throttles, one 503, then the launch"
    );
}

#[tokio::test(start_paused = true)]
async fn persistent_throttling_fails_with_the_call_named_and_nothing_left() {
    let mut world = World::happy();
    world.run_instances = mock!(aws_sdk_ec2::Client::run_instances).then_error(|| {
        RunInstancesError::generic(
            ErrorMetadata::builder()
                .code("RequestLimitExceeded")
                .message("Request limit exceeded.")
                .build(),
        )
    });
    world.describe_instances = mock!(aws_sdk_ec2::Client::describe_instances)
        .then_output(|| DescribeInstancesOutput::builder().build());
    let outcome = world.create(spec(json!([])), Timing::default()).await;
    assert_eq!(outcome.status, Status::Failed);
    let reason = reason(&outcome);
    assert!(
        reason.contains("ec2:RunInstances failed: RequestLimitExceeded"),
        "{reason}"
    );
    assert!(
        reason.contains("Cleanup: nothing had been created"),
        "{reason}"
    );
    assert_eq!(
        world.run_instances.num_calls(),
        8,
        "the retry policy's 8 attempts"
    );
}

#[tokio::test(start_paused = true)]
async fn builder_terminated_by_someone_else_fails_the_build() {
    let mut world = World::happy();
    world.instance_info = mock!(aws_sdk_ssm::Client::describe_instance_information)
        .then_output(|| DescribeInstanceInformationOutput::builder().build());
    world.describe_instances = mock!(aws_sdk_ec2::Client::describe_instances)
        .then_output(|| instance_state(ec2t::InstanceStateName::Terminated));
    let outcome = world.create(spec(json!([])), Timing::default()).await;
    assert_eq!(outcome.status, Status::Failed);
    assert!(
        reason(&outcome).contains("builder i-0123456789abcdef0 is terminated instead of running"),
        "{}",
        reason(&outcome)
    );
}

#[tokio::test(start_paused = true)]
async fn the_deadline_stops_the_build_and_cleans_up() {
    let mut world = World::happy();
    world.command_result = mock!(aws_sdk_ssm::Client::get_command_invocation).then_output(|| {
        GetCommandInvocationOutput::builder()
            .status(ssmt::CommandInvocationStatus::InProgress)
            .response_code(-1)
            .build()
    });
    let timing = Timing {
        deadline: Some(tokio::time::Instant::now() + Duration::from_secs(120)),
        ..Timing::default()
    };
    let outcome = world
        .create(
            spec(json!([{"Name": "long", "Commands": ["sleep 900"]}])),
            timing,
        )
        .await;
    assert_eq!(outcome.status, Status::Failed);
    let reason = reason(&outcome);
    assert!(
        reason.contains("ran out of time while running a step"),
        "{reason}"
    );
    assert_eq!(
        world.cancel_command.num_calls(),
        1,
        "the running command is cancelled"
    );
    assert!(reason.contains("terminated builder"), "{reason}");
}
