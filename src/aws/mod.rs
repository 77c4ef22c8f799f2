//! Narrow adapters over EC2 and SSM, named for what the build needs from them.
//!
//! The build engine never sees an SDK type: it asks to `launch_builder`, whether an instance is
//! `instance_online`, to `run_step`, and so on. Errors carry the operation and AWS's error code so
//! that a Reason says which call failed and why.

mod lambda;

pub use lambda::SelfInvoke;

use std::collections::BTreeMap;
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_sdk_ec2::types as ec2t;
use aws_sdk_ssm::types as ssmt;
use aws_smithy_runtime_api::client::result::SdkError;

use crate::spec::BlockDevice;

/// Throttling and transient 5xx answers are retried by the SDK with exponential backoff; a build
/// makes few calls, so it can afford to wait longer than the SDK's default of 3 attempts.
pub fn retry_config() -> RetryConfig {
    RetryConfig::standard()
        .with_max_attempts(8)
        .with_initial_backoff(Duration::from_millis(500))
        .with_max_backoff(Duration::from_secs(20))
}

/// SDK configuration from the environment (`AWS_REGION`, credentials, and `AWS_ENDPOINT_URL` for a
/// local AWS), with the product's retry policy.
pub async fn sdk_config_from_env() -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .retry_config(retry_config())
        .load()
        .await
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{operation} failed: {}{message}", code.as_deref().map(|c| format!("{c}: ")).unwrap_or_default())]
pub struct AwsError {
    pub operation: &'static str,
    pub code: Option<String>,
    pub message: String,
}

impl AwsError {
    pub fn is_not_found(&self) -> bool {
        self.code.as_deref().is_some_and(|c| {
            c.contains("NotFound") || c.ends_with(".Malformed") || c == "InvalidAMIID.Unavailable"
        })
    }

    fn from_sdk<E, R>(operation: &'static str, error: SdkError<E, R>) -> AwsError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        let code = error.code().map(str::to_owned);
        let message = match error.message() {
            Some(message) => without_encoded_failure(message),
            None => aws_smithy_types::error::display::DisplayErrorContext(&error).to_string(),
        };
        AwsError {
            operation,
            code,
            message,
        }
    }
}

type Result<T> = std::result::Result<T, AwsError>;

/// EC2's UnauthorizedOperation ends with an encoded authorization failure message of a thousand
/// characters or more, readable only through sts:DecodeAuthorizationMessage: dropped, so that a
/// Reason (4,096 bytes in all) keeps room for what the build left behind. The readable part
/// names the action and the resource.
fn without_encoded_failure(message: &str) -> String {
    const MARK: &str = "Encoded authorization failure message:";
    match message.find(MARK) {
        Some(at) => {
            // Kept in the log: sts:DecodeAuthorizationMessage tells which statement or condition
            // refused the call.
            tracing::warn!(message, "AWS refused the call");
            format!(
                "{} (encoded authorization failure message omitted; it is in the log)",
                message[..at].trim_end()
            )
        }
        None => message.to_owned(),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub state: String,
    pub state_reason: Option<String>,
    pub architecture: String,
    pub root_device_name: Option<String>,
    pub snapshot_ids: Vec<String>,
    pub tags: BTreeMap<String, String>,
}

/// What DescribeInstances says about the builder while the build watches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceStatus {
    pub state: String,
    /// Why EC2 changed the state, as `Code: message` (`Client.InternalError: Client error on
    /// launch` for an EBS volume whose KMS key cannot be used).
    pub state_reason: Option<String>,
    pub root_device: Option<String>,
    /// Device names of the volumes attached now.
    pub devices: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub id: String,
    pub state: String,
    /// When EC2 launched it, in milliseconds since the Unix epoch.
    pub launched_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepStatus {
    Running,
    Success,
    Failed,
    TimedOut,
    Cancelled,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepResult {
    pub status: StepStatus,
    pub detail: String,
    pub exit_code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Everything RunInstances needs, decided by the engine.
#[derive(Debug, Clone)]
pub struct LaunchRequest {
    pub image_id: String,
    pub instance_type: String,
    pub instance_profile: String,
    pub subnet_id: Option<String>,
    pub security_group_ids: Vec<String>,
    pub block_devices: Vec<BlockDevice>,
    pub tags: BTreeMap<String, String>,
    pub client_token: String,
}

#[derive(Debug, Clone)]
pub struct ImageRequest {
    pub instance_id: String,
    pub name: String,
    pub description: Option<String>,
    pub block_devices: Vec<BlockDevice>,
    pub tags: BTreeMap<String, String>,
}

#[derive(Clone, Debug)]
pub struct Aws {
    ec2: aws_sdk_ec2::Client,
    ssm: aws_sdk_ssm::Client,
}

impl Aws {
    /// Clients from the environment (`AWS_REGION`, credentials, and `AWS_ENDPOINT_URL` for a local
    /// AWS), with the product's retry policy.
    pub async fn from_env() -> Aws {
        Aws::from_config(&sdk_config_from_env().await)
    }

    pub fn from_config(config: &aws_config::SdkConfig) -> Aws {
        Aws::from_clients(
            aws_sdk_ec2::Client::new(config),
            aws_sdk_ssm::Client::new(config),
        )
    }

    pub fn from_clients(ec2: aws_sdk_ec2::Client, ssm: aws_sdk_ssm::Client) -> Aws {
        Aws { ec2, ssm }
    }

    pub async fn parameter_value(&self, name: &str) -> Result<String> {
        let out = self
            .ssm
            .get_parameter()
            .name(name)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ssm:GetParameter", e))?;
        out.parameter()
            .and_then(|p| p.value())
            .map(str::to_owned)
            .ok_or_else(|| AwsError {
                operation: "ssm:GetParameter",
                code: None,
                message: format!("parameter {name} has no value"),
            })
    }

    /// Creates a parameter only if it does not exist: the one atomic test-and-set this product
    /// needs (the build lease). False when it already exists.
    pub async fn create_parameter(&self, name: &str, value: &str) -> Result<bool> {
        let put = self
            .ssm
            .put_parameter()
            .name(name)
            .value(value)
            .r#type(ssmt::ParameterType::String)
            .overwrite(false)
            .send()
            .await;
        match put {
            Ok(_) => Ok(true),
            Err(error) => {
                let error = AwsError::from_sdk("ssm:PutParameter", error);
                if error.code.as_deref() == Some("ParameterAlreadyExists") {
                    Ok(false)
                } else {
                    Err(error)
                }
            }
        }
    }

    /// A parameter's value, or None when it does not exist.
    pub async fn parameter_if_exists(&self, name: &str) -> Result<Option<String>> {
        match self.ssm.get_parameter().name(name).send().await {
            Ok(out) => Ok(out.parameter().and_then(|p| p.value()).map(str::to_owned)),
            Err(error) => {
                let error = AwsError::from_sdk("ssm:GetParameter", error);
                if error.code.as_deref() == Some("ParameterNotFound") {
                    Ok(None)
                } else {
                    Err(error)
                }
            }
        }
    }

    /// The parameters directly under `path`, as (name, value).
    pub async fn parameters_under(&self, path: &str) -> Result<Vec<(String, String)>> {
        self.parameters_below(path, false, usize::MAX).await
    }

    /// The parameters under `path`, at any depth when `recursive`, as (name, value); at most
    /// `pages` pages of results.
    pub async fn parameters_below(
        &self,
        path: &str,
        recursive: bool,
        pages: usize,
    ) -> Result<Vec<(String, String)>> {
        let mut found = Vec::new();
        let mut stream = self
            .ssm
            .get_parameters_by_path()
            .path(path)
            .recursive(recursive)
            .into_paginator()
            .send();
        let mut left = pages;
        while left > 0
            && let Some(page) = stream.next().await
        {
            left -= 1;
            let page = page.map_err(|e| AwsError::from_sdk("ssm:GetParametersByPath", e))?;
            found.extend(
                page.parameters()
                    .iter()
                    .filter_map(|p| Some((p.name()?.to_owned(), p.value()?.to_owned()))),
            );
        }
        Ok(found)
    }

    pub async fn delete_parameters(&self, names: &[String]) -> Result<()> {
        for batch in names.chunks(10) {
            self.ssm
                .delete_parameters()
                .set_names(Some(batch.to_vec()))
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("ssm:DeleteParameters", e))?;
        }
        Ok(())
    }

    pub async fn overwrite_parameter(&self, name: &str, value: &str) -> Result<()> {
        self.ssm
            .put_parameter()
            .name(name)
            .value(value)
            .r#type(ssmt::ParameterType::String)
            .overwrite(true)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ssm:PutParameter", e))?;
        Ok(())
    }

    pub async fn describe_image(&self, image_id: &str) -> Result<Option<Image>> {
        let out = self.ec2.describe_images().image_ids(image_id).send().await;
        match out {
            Ok(out) => Ok(out
                .images()
                .iter()
                .find(|i| i.image_id() == Some(image_id))
                .map(to_image)),
            Err(error) => {
                let error = AwsError::from_sdk("ec2:DescribeImages", error);
                if error.is_not_found() {
                    Ok(None)
                } else {
                    Err(error)
                }
            }
        }
    }

    /// The architectures an instance type supports, or None when EC2 has no such type here.
    pub async fn instance_type_architectures(
        &self,
        instance_type: &str,
    ) -> Result<Option<Vec<String>>> {
        let out = self
            .ec2
            .describe_instance_types()
            .instance_types(ec2t::InstanceType::from(instance_type))
            .send()
            .await;
        match out {
            Ok(out) => Ok(out.instance_types().first().map(|t| {
                t.processor_info()
                    .map(|p| {
                        p.supported_architectures()
                            .iter()
                            .map(|a| a.as_str().to_owned())
                            .collect()
                    })
                    .unwrap_or_default()
            })),
            Err(error) => {
                let error = AwsError::from_sdk("ec2:DescribeInstanceTypes", error);
                // EC2 answers InvalidInstanceType for a type it does not have.
                if error
                    .code
                    .as_deref()
                    .is_some_and(|c| c.starts_with("InvalidInstanceType"))
                {
                    Ok(None)
                } else {
                    Err(error)
                }
            }
        }
    }

    /// The subnet's VPC, or None when the subnet does not exist.
    pub async fn subnet_vpc(&self, subnet_id: &str) -> Result<Option<String>> {
        let out = self
            .ec2
            .describe_subnets()
            .subnet_ids(subnet_id)
            .send()
            .await;
        match out {
            Ok(out) => Ok(out
                .subnets()
                .first()
                .and_then(|s| s.vpc_id())
                .map(str::to_owned)),
            Err(error) => {
                let error = AwsError::from_sdk("ec2:DescribeSubnets", error);
                if error.is_not_found() {
                    Ok(None)
                } else {
                    Err(error)
                }
            }
        }
    }

    /// The VPC of each security group that exists, by id; one that does not is missing.
    pub async fn security_group_vpcs(
        &self,
        group_ids: &[String],
    ) -> Result<BTreeMap<String, String>> {
        let mut found = BTreeMap::new();
        // One at a time: EC2 refuses the whole call when one id does not exist.
        for group_id in group_ids {
            let out = self
                .ec2
                .describe_security_groups()
                .group_ids(group_id)
                .send()
                .await;
            match out {
                Ok(out) => {
                    if let Some(group) = out.security_groups().first() {
                        found.insert(
                            group_id.clone(),
                            group.vpc_id().unwrap_or_default().to_owned(),
                        );
                    }
                }
                Err(error) => {
                    let error = AwsError::from_sdk("ec2:DescribeSecurityGroups", error);
                    if !error.is_not_found() {
                        return Err(error);
                    }
                }
            }
        }
        Ok(found)
    }

    /// The image this account owns under `name` (AMI names are unique per account and region).
    pub async fn image_named(&self, name: &str) -> Result<Option<Image>> {
        let out = self
            .ec2
            .describe_images()
            .owners("self")
            .filters(ec2t::Filter::builder().name("name").values(name).build())
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ec2:DescribeImages", e))?;
        Ok(out.images().first().map(to_image))
    }

    /// Images this account owns that carry every one of `tags`.
    pub async fn images_tagged(&self, tags: &BTreeMap<String, String>) -> Result<Vec<Image>> {
        let out = self
            .ec2
            .describe_images()
            .owners("self")
            .set_filters(Some(tag_filters(tags)))
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ec2:DescribeImages", e))?;
        Ok(out.images().iter().map(to_image).collect())
    }

    pub async fn launch_builder(&self, request: &LaunchRequest) -> Result<String> {
        let profile = if request.instance_profile.starts_with("arn:") {
            ec2t::IamInstanceProfileSpecification::builder().arn(&request.instance_profile)
        } else {
            ec2t::IamInstanceProfileSpecification::builder().name(&request.instance_profile)
        };
        let out = self
            .ec2
            .run_instances()
            .image_id(&request.image_id)
            .instance_type(ec2t::InstanceType::from(request.instance_type.as_str()))
            .min_count(1)
            .max_count(1)
            .client_token(&request.client_token)
            .iam_instance_profile(profile.build())
            .set_subnet_id(request.subnet_id.clone())
            .set_security_group_ids(
                (!request.security_group_ids.is_empty())
                    .then(|| request.security_group_ids.clone()),
            )
            .metadata_options(
                ec2t::InstanceMetadataOptionsRequest::builder()
                    .http_endpoint(ec2t::InstanceMetadataEndpointState::Enabled)
                    .http_tokens(ec2t::HttpTokensState::Required)
                    .http_put_response_hop_limit(2)
                    .build(),
            )
            .instance_initiated_shutdown_behavior(ec2t::ShutdownBehavior::Terminate)
            .set_block_device_mappings(Some(block_device_mappings(&request.block_devices, true)))
            .tag_specifications(tag_specification(
                ec2t::ResourceType::Instance,
                &request.tags,
            ))
            .tag_specifications(tag_specification(ec2t::ResourceType::Volume, &request.tags))
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ec2:RunInstances", e))?;
        out.instances()
            .first()
            .and_then(|i| i.instance_id())
            .map(str::to_owned)
            .ok_or_else(|| AwsError {
                operation: "ec2:RunInstances",
                code: None,
                message: "the answer named no instance".into(),
            })
    }

    /// Instances carrying every one of `tags`, with their state names.
    pub async fn instances_tagged(&self, tags: &BTreeMap<String, String>) -> Result<Vec<Instance>> {
        let out = self
            .ec2
            .describe_instances()
            .set_filters(Some(tag_filters(tags)))
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ec2:DescribeInstances", e))?;
        Ok(out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .filter_map(|i| {
                Some(Instance {
                    id: i.instance_id()?.to_owned(),
                    state: i
                        .state()
                        .and_then(|s| s.name())
                        .map(|n| n.as_str().to_owned())?,
                    launched_ms: i
                        .launch_time()
                        .and_then(|t| t.to_millis().ok())
                        .and_then(|ms| u64::try_from(ms).ok()),
                })
            })
            .collect())
    }

    /// The instance's state name, or None once EC2 no longer knows it.
    pub async fn instance_state(&self, instance_id: &str) -> Result<Option<String>> {
        Ok(self.instance_status(instance_id).await?.map(|s| s.state))
    }

    /// The instance's state and attached devices, or None once EC2 no longer knows it.
    pub async fn instance_status(&self, instance_id: &str) -> Result<Option<InstanceStatus>> {
        let out = self
            .ec2
            .describe_instances()
            .instance_ids(instance_id)
            .send()
            .await;
        match out {
            Ok(out) => Ok(out
                .reservations()
                .iter()
                .flat_map(|r| r.instances())
                .find(|i| i.instance_id() == Some(instance_id))
                .and_then(|i| {
                    let state = i.state().and_then(|s| s.name())?.as_str().to_owned();
                    Some(InstanceStatus {
                        state,
                        state_reason: i
                            .state_reason()
                            .and_then(|r| r.message().or(r.code()))
                            .filter(|m| !m.is_empty())
                            .map(str::to_owned),
                        root_device: i.root_device_name().map(str::to_owned),
                        devices: i
                            .block_device_mappings()
                            .iter()
                            .filter_map(|m| m.device_name().map(str::to_owned))
                            .collect(),
                    })
                })),
            Err(error) => {
                let error = AwsError::from_sdk("ec2:DescribeInstances", error);
                if error.is_not_found() {
                    Ok(None)
                } else {
                    Err(error)
                }
            }
        }
    }

    /// Whether the SSM agent on the instance reports Online; SendCommand fails before it does.
    pub async fn instance_online(&self, instance_id: &str) -> Result<bool> {
        let filter = ssmt::InstanceInformationStringFilter::builder()
            .key("InstanceIds")
            .values(instance_id)
            .build()
            .expect("key and values are set");
        let out = self
            .ssm
            .describe_instance_information()
            .filters(filter)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ssm:DescribeInstanceInformation", e))?;
        Ok(out.instance_information_list().iter().any(|info| {
            info.instance_id() == Some(instance_id)
                && info.ping_status() == Some(&ssmt::PingStatus::Online)
        }))
    }

    pub async fn run_step(
        &self,
        instance_id: &str,
        script: &str,
        timeout_seconds: u32,
        comment: &str,
    ) -> Result<String> {
        let lines: Vec<String> = script.lines().map(str::to_owned).collect();
        let out = self
            .ssm
            .send_command()
            .instance_ids(instance_id)
            .document_name("AWS-RunShellScript")
            .parameters("commands", lines)
            .parameters("executionTimeout", vec![timeout_seconds.to_string()])
            .comment(comment.chars().take(100).collect::<String>())
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ssm:SendCommand", e))?;
        out.command()
            .and_then(|c| c.command_id())
            .map(str::to_owned)
            .ok_or_else(|| AwsError {
                operation: "ssm:SendCommand",
                code: None,
                message: "the answer named no command".into(),
            })
    }

    pub async fn step_result(&self, command_id: &str, instance_id: &str) -> Result<StepResult> {
        let out = self
            .ssm
            .get_command_invocation()
            .command_id(command_id)
            .instance_id(instance_id)
            .send()
            .await;
        let out = match out {
            Ok(out) => out,
            Err(error) => {
                let error = AwsError::from_sdk("ssm:GetCommandInvocation", error);
                // Right after SendCommand the invocation may not be visible yet.
                if error.code.as_deref() == Some("InvocationDoesNotExist") {
                    return Ok(StepResult {
                        status: StepStatus::Running,
                        detail: "Pending".into(),
                        exit_code: -1,
                        stdout: String::new(),
                        stderr: String::new(),
                    });
                }
                return Err(error);
            }
        };
        use ssmt::CommandInvocationStatus as S;
        let status = match out.status() {
            Some(S::Success) => StepStatus::Success,
            Some(S::Failed) => StepStatus::Failed,
            Some(S::TimedOut) => StepStatus::TimedOut,
            Some(S::Cancelled) => StepStatus::Cancelled,
            _ => StepStatus::Running,
        };
        Ok(StepResult {
            status,
            detail: out.status_details().unwrap_or_default().to_owned(),
            exit_code: out.response_code(),
            stdout: out.standard_output_content().unwrap_or_default().to_owned(),
            stderr: out.standard_error_content().unwrap_or_default().to_owned(),
        })
    }

    /// The commands sent to an instance, in no particular order, as (command id, comment): how a resumed
    /// build learns which steps already ran.
    pub async fn commands_sent_to(&self, instance_id: &str) -> Result<Vec<(String, String)>> {
        let mut found = Vec::new();
        let mut pages = self
            .ssm
            .list_commands()
            .instance_id(instance_id)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| AwsError::from_sdk("ssm:ListCommands", e))?;
            found.extend(page.commands().iter().filter_map(|c| {
                Some((
                    c.command_id()?.to_owned(),
                    c.comment().unwrap_or_default().to_owned(),
                ))
            }));
        }
        Ok(found)
    }

    pub async fn cancel_step(&self, command_id: &str, instance_id: &str) -> Result<()> {
        self.ssm
            .cancel_command()
            .command_id(command_id)
            .instance_ids(instance_id)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ssm:CancelCommand", e))?;
        Ok(())
    }

    pub async fn stop_instance(&self, instance_id: &str) -> Result<()> {
        self.ec2
            .stop_instances()
            .instance_ids(instance_id)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ec2:StopInstances", e))?;
        Ok(())
    }

    /// NotFound is an error here: it may mean EC2 does not know a new instance yet (see
    /// `engine::terminate_builder`).
    pub async fn terminate_instance(&self, instance_id: &str) -> Result<()> {
        self.ec2
            .terminate_instances()
            .instance_ids(instance_id)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ec2:TerminateInstances", e))?;
        Ok(())
    }

    pub async fn create_image(&self, request: &ImageRequest) -> Result<String> {
        let out = self
            .ec2
            .create_image()
            .instance_id(&request.instance_id)
            .name(&request.name)
            .set_description(request.description.clone())
            .set_block_device_mappings(
                (!request.block_devices.is_empty())
                    .then(|| block_device_mappings(&request.block_devices, false)),
            )
            // The snapshots carry our tags from their creation: the role lets CreateImage create
            // only tagged images and snapshots, and lets later calls (CreateTags, DeleteSnapshot)
            // touch only resources that already carry them.
            .tag_specifications(tag_specification(ec2t::ResourceType::Image, &request.tags))
            .tag_specifications(tag_specification(
                ec2t::ResourceType::Snapshot,
                &request.tags,
            ))
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ec2:CreateImage", e))?;
        out.image_id().map(str::to_owned).ok_or_else(|| AwsError {
            operation: "ec2:CreateImage",
            code: None,
            message: "the answer named no image".into(),
        })
    }

    pub async fn tag(
        &self,
        resource_ids: &[String],
        tags: &BTreeMap<String, String>,
    ) -> Result<()> {
        if resource_ids.is_empty() || tags.is_empty() {
            return Ok(());
        }
        self.ec2
            .create_tags()
            .set_resources(Some(resource_ids.to_vec()))
            .set_tags(Some(to_tags(tags)))
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ec2:CreateTags", e))?;
        Ok(())
    }

    pub async fn untag(&self, resource_ids: &[String], keys: &[String]) -> Result<()> {
        if resource_ids.is_empty() || keys.is_empty() {
            return Ok(());
        }
        let tags = keys
            .iter()
            .map(|k| ec2t::Tag::builder().key(k).build())
            .collect();
        self.ec2
            .delete_tags()
            .set_resources(Some(resource_ids.to_vec()))
            .set_tags(Some(tags))
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ec2:DeleteTags", e))?;
        Ok(())
    }

    pub async fn set_image_description(&self, image_id: &str, description: &str) -> Result<()> {
        self.ec2
            .modify_image_attribute()
            .image_id(image_id)
            .description(ec2t::AttributeValue::builder().value(description).build())
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ec2:ModifyImageAttribute", e))?;
        Ok(())
    }

    /// Deregistering an image that is already gone is success.
    pub async fn deregister_image(&self, image_id: &str) -> Result<()> {
        gone_is_done(
            "ec2:DeregisterImage",
            self.ec2.deregister_image().image_id(image_id).send().await,
        )
    }

    /// Deleting a snapshot that is already gone is success.
    pub async fn delete_snapshot(&self, snapshot_id: &str) -> Result<()> {
        gone_is_done(
            "ec2:DeleteSnapshot",
            self.ec2
                .delete_snapshot()
                .snapshot_id(snapshot_id)
                .send()
                .await,
        )
    }

    pub async fn snapshots_tagged(&self, tags: &BTreeMap<String, String>) -> Result<Vec<String>> {
        let out = self
            .ec2
            .describe_snapshots()
            .owner_ids("self")
            .set_filters(Some(tag_filters(tags)))
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ec2:DescribeSnapshots", e))?;
        Ok(out
            .snapshots()
            .iter()
            .filter_map(|s| s.snapshot_id().map(str::to_owned))
            .collect())
    }

    /// Volumes carrying every one of `tags` that are not attached to anything.
    pub async fn detached_volumes_tagged(
        &self,
        tags: &BTreeMap<String, String>,
    ) -> Result<Vec<String>> {
        let out = self
            .ec2
            .describe_volumes()
            .set_filters(Some(tag_filters(tags)))
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ec2:DescribeVolumes", e))?;
        Ok(out
            .volumes()
            .iter()
            .filter(|v| v.state() == Some(&ec2t::VolumeState::Available))
            .filter_map(|v| v.volume_id().map(str::to_owned))
            .collect())
    }

    pub async fn delete_volume(&self, volume_id: &str) -> Result<()> {
        gone_is_done(
            "ec2:DeleteVolume",
            self.ec2.delete_volume().volume_id(volume_id).send().await,
        )
    }
}

/// For calls that remove something: it being gone already is success.
fn gone_is_done<T, E, R>(
    operation: &'static str,
    sent: std::result::Result<T, SdkError<E, R>>,
) -> Result<()>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match sent {
        Ok(_) => Ok(()),
        Err(error) => {
            let error = AwsError::from_sdk(operation, error);
            if error.is_not_found() {
                Ok(())
            } else {
                Err(error)
            }
        }
    }
}

fn to_image(image: &ec2t::Image) -> Image {
    Image {
        id: image.image_id().unwrap_or_default().to_owned(),
        name: image.name().unwrap_or_default().to_owned(),
        description: image.description().map(str::to_owned),
        state: image
            .state()
            .map(|s| s.as_str().to_owned())
            .unwrap_or_default(),
        state_reason: image
            .state_reason()
            .and_then(|r| r.message())
            .map(str::to_owned),
        architecture: image
            .architecture()
            .map(|a| a.as_str().to_owned())
            .unwrap_or_default(),
        root_device_name: image.root_device_name().map(str::to_owned),
        snapshot_ids: image
            .block_device_mappings()
            .iter()
            .filter_map(|m| m.ebs().and_then(|e| e.snapshot_id()).map(str::to_owned))
            .collect(),
        tags: image
            .tags()
            .iter()
            .filter_map(|t| {
                Some((
                    t.key()?.to_owned(),
                    t.value().unwrap_or_default().to_owned(),
                ))
            })
            .collect(),
    }
}

fn to_tags(tags: &BTreeMap<String, String>) -> Vec<ec2t::Tag> {
    tags.iter()
        .map(|(k, v)| ec2t::Tag::builder().key(k).value(v).build())
        .collect()
}

fn tag_specification(
    kind: ec2t::ResourceType,
    tags: &BTreeMap<String, String>,
) -> ec2t::TagSpecification {
    ec2t::TagSpecification::builder()
        .resource_type(kind)
        .set_tags(Some(to_tags(tags)))
        .build()
}

fn tag_filters(tags: &BTreeMap<String, String>) -> Vec<ec2t::Filter> {
    tags.iter()
        .map(|(k, v)| {
            ec2t::Filter::builder()
                .name(format!("tag:{k}"))
                .values(v)
                .build()
        })
        .collect()
}

/// `for_builder`: the builder's volumes are always deleted with it, whatever the AMI's mapping
/// says, so a failed build leaves no volume behind.
fn block_device_mappings(
    devices: &[BlockDevice],
    for_builder: bool,
) -> Vec<ec2t::BlockDeviceMapping> {
    devices
        .iter()
        .map(|device| {
            let ebs = &device.ebs;
            let delete = if for_builder {
                Some(true)
            } else {
                ebs.delete_on_termination.or(Some(true))
            };
            ec2t::BlockDeviceMapping::builder()
                .device_name(&device.device_name)
                .ebs(
                    ec2t::EbsBlockDevice::builder()
                        .set_volume_size(ebs.volume_size.map(|n| n as i32))
                        .set_volume_type(ebs.volume_type.as_deref().map(ec2t::VolumeType::from))
                        .set_iops(ebs.iops.map(|n| n as i32))
                        .set_throughput(ebs.throughput.map(|n| n as i32))
                        .set_encrypted(ebs.encrypted)
                        // EC2 takes KmsKeyId in RunInstances' mappings only: the builder's volume
                        // is encrypted with the key, and the image's snapshot inherits it.
                        .set_kms_key_id(if for_builder {
                            ebs.kms_key_id.clone()
                        } else {
                            None
                        })
                        .set_delete_on_termination(delete)
                        .build(),
                )
                .build()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::without_encoded_failure;

    #[test]
    fn the_encoded_authorization_message_is_dropped_and_the_readable_part_kept() {
        let ec2 = "You are not authorized to perform this operation. User: arn:aws:sts::1:assumed-role/r/f is not authorized to perform: ec2:CreateImage on resource: arn:aws:ec2:us-east-1::snapshot/* because no identity-based policy allows the ec2:CreateImage action. Encoded authorization failure message: AbC123xyz";
        let kept = without_encoded_failure(ec2);
        assert!(kept.contains("ec2:CreateImage on resource: arn:aws:ec2:us-east-1::snapshot/*"));
        assert!(!kept.contains("AbC123xyz"), "{kept}");
        assert!(kept.contains("(encoded authorization failure message omitted"));
        assert_eq!(without_encoded_failure("plain"), "plain");
    }
}
