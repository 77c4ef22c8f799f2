//! AWS answers scripted for the engine: EC2 at the HTTP level (`ec2_mock`), SSM with
//! `aws-smithy-mocks`; fixtures, and a happy-path world whose rules a test replaces to stage its
//! scenario.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

pub use super::ec2_mock::{
    Answer, Ec2Rule, MockImage, MockInstance, document, image_id, images, instances, on,
};
use aws_config::{BehaviorVersion, Region};
use aws_sdk_ssm::config::Credentials;
use aws_sdk_ssm::operation::delete_parameters::DeleteParametersOutput;
use aws_sdk_ssm::operation::describe_instance_information::DescribeInstanceInformationOutput;
use aws_sdk_ssm::operation::get_command_invocation::GetCommandInvocationOutput;
use aws_sdk_ssm::operation::get_parameter::{GetParameterError, GetParameterOutput};
use aws_sdk_ssm::operation::get_parameters::GetParametersOutput;
use aws_sdk_ssm::operation::get_parameters_by_path::GetParametersByPathOutput;
use aws_sdk_ssm::operation::put_parameter::{PutParameterError, PutParameterOutput};
use aws_sdk_ssm::operation::send_command::SendCommandOutput;
use aws_sdk_ssm::types as ssmt;
use aws_smithy_async::rt::sleep::{SharedAsyncSleep, TokioSleep};
use aws_smithy_mocks::MockResponse;
use aws_smithy_mocks::{Rule, RuleMode, create_mock_http_client, mock};
use ecs_ami::aws::{Aws, retry_config};
use ecs_ami::cfn::Identity;
use ecs_ami::engine::{self, Done, Failed, Progress, Timing};
use ecs_ami::spec::AmiSpec;
use serde_json::json;

pub const SOURCE: &str = "ami-0aae19d30bab785d3";
pub const BUILDER: &str = "i-0123456789abcdef0";
pub const NEW_IMAGE: &str = "ami-0fedcba9876543210";

/// A client of `$krate` whose calls are answered by `$rules` (first matching rule wins), with the
/// product's retry policy and tokio's sleep, so retries back off on the (paused) test clock.
macro_rules! mocked_client {
    ($krate:ident, $rules:expr) => {{
        let interceptor = $rules.iter().fold(
            aws_smithy_mocks::MockResponseInterceptor::new().rule_mode(RuleMode::MatchAny),
            |i, r| i.with_rule(r),
        );
        let config = $krate::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("test", "test", None, None, "mocks"))
            .http_client(create_mock_http_client())
            .interceptor(interceptor)
            .retry_config(retry_config())
            .sleep_impl(SharedAsyncSleep::new(TokioSleep::new()))
            .build();
        $krate::Client::from_conf(config)
    }};
}

pub fn ssm(rules: &[&Rule]) -> aws_sdk_ssm::Client {
    mocked_client!(aws_sdk_ssm, rules)
}

pub fn identity() -> Identity {
    Identity {
        stack_id: "arn:aws:cloudformation:us-east-1:123456789012:stack/mocked/guid".into(),
        logical_id: "Ami".into(),
        request_id: "req-mocked".into(),
    }
}

pub fn spec(steps: serde_json::Value) -> AmiSpec {
    AmiSpec::parse(&json!({"SourceAmi": SOURCE, "IamInstanceProfile": "builder", "Steps": steps}))
        .unwrap()
}

/// RunInstances' answer: the builder was launched.
pub fn launched() -> String {
    super::ec2_mock::launched(BUILDER)
}

/// DescribeInstances' answer: the builder in `state` (`running`).
pub fn instance_state(state: &str) -> String {
    instances(&[MockInstance::new(BUILDER, state)])
}

/// An image in `state` (`available`), with one snapshot (`snap-0123456789abcdef0`) and, when
/// failed, the reason `Client.InternalError: snapshot failed`.
pub fn image(id: &str, state: &str) -> MockImage {
    MockImage::new(id, state)
}

/// The AWS a build meets: each rule answers one kind of call, always the same way, and counts
/// how often it was called. Tests replace the rules that their scenario is about.
pub struct World {
    pub source_image: Ec2Rule,
    /// DescribeInstanceTypes, checked before launch: every type runs x86_64, as SOURCE does.
    pub instance_types: Ec2Rule,
    pub run_instances: Ec2Rule,
    pub instance_info: Rule,
    /// DescribeInstances by tag (adoption and cleanup searches): answers first, so that a test
    /// replacing `describe_instances` only stages the builder's own state.
    pub tagged_instances: Ec2Rule,
    pub describe_instances: Ec2Rule,
    pub list_commands: Rule,
    /// SSM Parameter Store, as far as the build lease uses it.
    pub parameters: ParameterStore,
    pub put_parameter: Rule,
    pub parameters_by_path: Rule,
    pub delete_parameters: Rule,
    pub get_parameter: Rule,
    /// GetParameters: the request's record (and whether a Delete cancelled its Create).
    pub get_parameters: Rule,
    pub send_command: Rule,
    pub command_result: Rule,
    pub cancel_command: Rule,
    pub stop: Ec2Rule,
    pub create_image: Ec2Rule,
    pub new_image: Ec2Rule,
    pub tagged_images: Ec2Rule,
    pub create_tags: Ec2Rule,
    pub terminate: Ec2Rule,
    pub deregister: Ec2Rule,
    pub delete_snapshot: Ec2Rule,
    pub snapshots: Ec2Rule,
    pub volumes: Ec2Rule,
}

/// Parameter name -> value, shared by the rules that stand in for Parameter Store.
pub type ParameterStore = Arc<Mutex<BTreeMap<String, String>>>;

/// The parameter store and its rules: PutParameter, GetParametersByPath, DeleteParameters,
/// GetParameter, GetParameters.
type ParameterRules = (ParameterStore, Rule, Rule, Rule, Rule, Rule);

fn parameter_store() -> ParameterRules {
    let store = Arc::new(Mutex::new(BTreeMap::<String, String>::new()));
    let (put, list, delete, get) = (store.clone(), store.clone(), store.clone(), store.clone());
    let get_many = store.clone();
    let get_parameters =
        mock!(aws_sdk_ssm::Client::get_parameters).then_compute_output(move |input| {
            let store = get_many.lock().unwrap();
            let (found, missing): (Vec<&String>, Vec<&String>) = input
                .names()
                .iter()
                .partition(|name| store.contains_key(*name));
            GetParametersOutput::builder()
                .set_parameters(Some(
                    found
                        .into_iter()
                        .map(|name| {
                            ssmt::Parameter::builder()
                                .name(name)
                                .value(&store[name])
                                .build()
                        })
                        .collect(),
                ))
                .set_invalid_parameters(Some(missing.into_iter().cloned().collect()))
                .build()
        });
    let get_parameter =
        mock!(aws_sdk_ssm::Client::get_parameter).then_compute_response(move |input| {
            let store = get.lock().unwrap();
            match store.get(input.name().unwrap()) {
                Some(value) => MockResponse::Output(
                    GetParameterOutput::builder()
                        .parameter(
                            ssmt::Parameter::builder()
                                .name(input.name().unwrap())
                                .value(value)
                                .build(),
                        )
                        .build(),
                ),
                // Typed, as the SDK reads SSM's ParameterNotFound.
                None => MockResponse::Error(GetParameterError::ParameterNotFound(
                    aws_sdk_ssm::types::error::ParameterNotFound::builder().build(),
                )),
            }
        });
    let put_parameter =
        mock!(aws_sdk_ssm::Client::put_parameter).then_compute_response(move |input| {
            let mut store = put.lock().unwrap();
            let name = input.name().unwrap().to_owned();
            if store.contains_key(&name) && input.overwrite() != Some(true) {
                return MockResponse::Error(PutParameterError::ParameterAlreadyExists(
                    aws_sdk_ssm::types::error::ParameterAlreadyExists::builder().build(),
                ));
            }
            store.insert(name, input.value().unwrap().to_owned());
            MockResponse::Output(PutParameterOutput::builder().version(1).build())
        });
    let parameters_by_path = mock!(aws_sdk_ssm::Client::get_parameters_by_path)
        .then_compute_output(move |input| {
            let prefix = format!("{}/", input.path().unwrap());
            let recursive = input.recursive() == Some(true);
            let store = list.lock().unwrap();
            let found = store
                .iter()
                .filter(|(name, _)| {
                    name.starts_with(&prefix) && (recursive || !name[prefix.len()..].contains('/'))
                })
                .map(|(name, value)| ssmt::Parameter::builder().name(name).value(value).build());
            GetParametersByPathOutput::builder()
                .set_parameters(Some(found.collect()))
                .build()
        });
    let delete_parameters =
        mock!(aws_sdk_ssm::Client::delete_parameters).then_compute_output(move |input| {
            let mut store = delete.lock().unwrap();
            let deleted = input
                .names()
                .iter()
                .filter(|name| store.remove(*name).is_some())
                .cloned();
            DeleteParametersOutput::builder()
                .set_deleted_parameters(Some(deleted.collect()))
                .build()
        });
    (
        store,
        put_parameter,
        parameters_by_path,
        delete_parameters,
        get_parameter,
        get_parameters,
    )
}

impl World {
    pub fn happy() -> World {
        let (
            parameters,
            put_parameter,
            parameters_by_path,
            delete_parameters,
            get_parameter,
            get_parameters,
        ) = parameter_store();
        // The builder runs until StopInstances, then it is stopped.
        let stopped = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (stop, seen) = (stopped.clone(), stopped);
        World {
            parameters,
            put_parameter,
            parameters_by_path,
            delete_parameters,
            get_parameter,
            get_parameters,
            source_image: on("DescribeImages")
                .when(|q| q.list("ImageId") == [SOURCE])
                .then_xml(|| images(&[image(SOURCE, "available")])),
            instance_types: on("DescribeInstanceTypes").then(|q| {
                Answer::Xml(document(
                    "DescribeInstanceTypes",
                    &format!(
                        "<instanceTypeSet><item><instanceType>{}</instanceType><processorInfo>\
                         <supportedArchitectures><item>x86_64</item></supportedArchitectures>\
                         </processorInfo></item></instanceTypeSet>",
                        q.get("InstanceType.1").unwrap_or_default()
                    ),
                ))
            }),
            run_instances: on("RunInstances").then_xml(launched),
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
            tagged_instances: on("DescribeInstances")
                .when(|q| !q.filter_names().is_empty())
                .then_xml(|| instances(&[])),
            list_commands: mock!(aws_sdk_ssm::Client::list_commands).then_output(|| {
                aws_sdk_ssm::operation::list_commands::ListCommandsOutput::builder().build()
            }),
            describe_instances: on("DescribeInstances").then(move |_| {
                Answer::Xml(instance_state(
                    if seen.load(std::sync::atomic::Ordering::SeqCst) {
                        "stopped"
                    } else {
                        "running"
                    },
                ))
            }),
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
            stop: on("StopInstances").then(move |_| {
                stop.store(true, std::sync::atomic::Ordering::SeqCst);
                Answer::Xml(document("StopInstances", ""))
            }),
            create_image: on("CreateImage").then_xml(|| image_id("CreateImage", NEW_IMAGE)),
            new_image: on("DescribeImages")
                .when(|q| q.list("ImageId") == [NEW_IMAGE])
                .then_xml(|| images(&[image(NEW_IMAGE, "available")])),
            tagged_images: on("DescribeImages")
                .when(|q| q.list("Owner") == ["self"])
                .then_xml(|| images(&[])),
            create_tags: on("CreateTags").then_ok(),
            terminate: on("TerminateInstances").then_ok(),
            deregister: on("DeregisterImage").then_ok(),
            delete_snapshot: on("DeleteSnapshot").then_ok(),
            snapshots: on("DescribeSnapshots")
                .then_xml(|| document("DescribeSnapshots", "<snapshotSet/>")),
            volumes: on("DescribeVolumes").then_xml(|| document("DescribeVolumes", "<volumeSet/>")),
        }
    }

    /// SSM never reports the builder Online, while EC2 shows it in `state`.
    pub fn never_online(state: &'static str) -> World {
        let mut world = World::happy();
        world.instance_info = mock!(aws_sdk_ssm::Client::describe_instance_information)
            .then_output(|| DescribeInstanceInformationOutput::builder().build());
        world.describe_instances = on("DescribeInstances").then_xml(move || instance_state(state));
        world
    }

    /// The build leases left in Parameter Store (the requests' records stay by design).
    pub fn leases(&self) -> Vec<String> {
        let store = self.parameters.lock().unwrap();
        store
            .keys()
            .filter(|name| name.starts_with("/ecs-ami/leases/"))
            .cloned()
            .collect()
    }

    pub fn ec2_rules(&self) -> Vec<&Ec2Rule> {
        vec![
            &self.source_image,
            &self.instance_types,
            &self.new_image,
            &self.tagged_images,
            &self.run_instances,
            &self.tagged_instances,
            &self.describe_instances,
            &self.stop,
            &self.create_image,
            &self.create_tags,
            &self.terminate,
            &self.deregister,
            &self.delete_snapshot,
            &self.snapshots,
            &self.volumes,
        ]
    }

    pub fn ssm_rules(&self) -> Vec<&Rule> {
        vec![
            &self.instance_info,
            &self.send_command,
            &self.command_result,
            &self.cancel_command,
            &self.list_commands,
            &self.put_parameter,
            &self.parameters_by_path,
            &self.delete_parameters,
            &self.get_parameter,
            &self.get_parameters,
        ]
    }

    /// Every call the build made, EC2's and SSM's.
    pub fn total_calls(&self) -> usize {
        let ec2: usize = self.ec2_rules().iter().map(|r| r.num_calls()).sum();
        let ssm: usize = self.ssm_rules().iter().map(|r| r.num_calls()).sum();
        ec2 + ssm
    }

    pub fn aws(&self) -> Aws {
        Aws::from_clients(
            super::ec2_mock::ec2(&self.ec2_rules()),
            ssm(&self.ssm_rules()),
        )
    }

    /// The image's answer, or the failure as the engine reports it (before the handler makes it
    /// a Reason).
    pub async fn create(&self, spec: AmiSpec, timing: Timing) -> Result<Done, Failed> {
        match engine::create(
            &engine::Context::new(&self.aws(), &identity(), &timing),
            spec,
        )
        .await
        {
            Progress::Finished(done) => Ok(done),
            Progress::Failed(failed) => Err(*failed),
            Progress::Paused(state) => panic!("no hand-over expected: {state:?}"),
            Progress::Yielded => panic!("no other invocation holds the lease"),
            Progress::Cancelled(report) => panic!("no other request cancels this one: {report}"),
        }
    }
}
