//! Narrow adapters over EC2, SSM, ECS and Lambda, named for what the build needs from them.
//!
//! The build engine sees no SDK type but the states it reads, which are the SDK's own enums
//! (`InstanceStateName`, `ImageState`, `ContainerInstanceStatus`): it asks to `launch_builder`,
//! whether an instance is `instance_online`, to `run_step`, and so on. Errors carry the operation and AWS's error code so
//! that a Reason says which call failed and why.
//!
//! Every call goes through the generated clients of the AWS SDK for Rust (`aws-sdk-ec2`,
//! `aws-sdk-ssm`, `aws-sdk-ecs`, `aws-sdk-lambda`): their typed requests, answers and enums,
//! paginators, endpoint rules, retry classifiers and interceptors.
//!
//! `mod.rs` holds the clients and the plain types the engine uses (the SDK's state enums among
//! them), `error.rs` the error type and the codes it tells apart; the calls are
//! grouped by what they touch: `instances.rs` (the builder and its network), `commands.rs` (SSM
//! Run Command), `images.rs` (AMIs and snapshots), `parameters.rs` (Parameter Store), `ecs.rs`
//! (a test instance in its cluster) and `lambda.rs` (the self-invocation of a hand-over).

mod commands;
mod ecr;
mod ecs;
mod error;
mod images;
mod instances;
mod lambda;
mod parameters;
mod registry;

/// The states the engine reads, as the SDK's enums: an instance's, an image's, a container
/// instance's.
pub use aws_sdk_ec2::types::{ImageState, InstanceStateName};
pub use aws_sdk_ecs::types::ContainerInstanceStatus;
pub use ecr::{MANIFEST_MEDIA_TYPES, Manifest, ManifestRef};
pub use ecs::{ContainerInstance, TaskDefinitionImages};
pub use error::{AwsError, Code};
pub use lambda::SelfInvoke;
pub use registry::{REGISTRY_ENDPOINT_ENV, Registries, RegistryError};

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_sdk_ssm::types as ssmt;

use crate::spec::BlockDevice;

/// Throttling and transient 5xx answers are retried by the SDK with exponential backoff; a build
/// makes few calls, so it can afford to wait longer than the SDK's default of 3 attempts.
pub fn retry_config() -> RetryConfig {
    RetryConfig::standard()
        .with_max_attempts(8)
        .with_initial_backoff(Duration::from_millis(500))
        .with_max_backoff(Duration::from_secs(20))
}

/// Every attempt of every call ends after this long, and the retry policy tries again: a response
/// that never arrives (a pooled connection that died while Lambda froze the sandbox) would
/// otherwise hold the build until the invocation's deadline. No call the product makes takes
/// near this long on AWS; DescribeImages with an owner filter, the slowest, takes seconds.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);

/// `config` with the product's per-attempt timeout where it sets none (a test may set a shorter
/// one), and the SDK's own connect timeout kept.
pub fn with_attempt_timeout(config: &aws_config::SdkConfig) -> aws_config::SdkConfig {
    let mut timeouts = config
        .timeout_config()
        .cloned()
        .unwrap_or_else(|| aws_config::timeout::TimeoutConfig::builder().build());
    timeouts.take_defaults_from(
        &aws_config::timeout::TimeoutConfig::builder()
            .operation_attempt_timeout(ATTEMPT_TIMEOUT)
            .build(),
    );
    config.to_builder().timeout_config(timeouts).build()
}

/// SDK configuration from the environment (`AWS_REGION`, credentials, and `AWS_ENDPOINT_URL` for a
/// local AWS), with the product's retry policy and per-attempt timeout.
pub async fn sdk_config_from_env() -> aws_config::SdkConfig {
    let config = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(retry_config())
        .load()
        .await;
    with_attempt_timeout(&config)
}

type Result<T> = std::result::Result<T, AwsError>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub state: ImageState,
    pub state_reason: Option<String>,
    pub architecture: String,
    pub root_device_name: Option<String>,
    /// The size of the root device's volume, in GiB, as the image maps it.
    pub root_volume_gib: Option<u32>,
    /// CreationDate.
    pub created: Option<aws_smithy_types::DateTime>,
    /// DeprecationTime: when the image is (or was) deprecated, if it is to be.
    pub deprecated_at: Option<aws_smithy_types::DateTime>,
    /// ImdsSupport: `v2.0` when instances launched from it require IMDSv2.
    pub imds_support: Option<String>,
    pub snapshot_ids: Vec<String>,
    /// Each EBS device of the image and its snapshot.
    pub device_snapshots: BTreeMap<String, String>,
    pub tags: BTreeMap<String, String>,
}

/// A Parameter Store parameter as GetParameter answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParameterState {
    pub version: i64,
    pub value: String,
    /// `text` or `aws:ec2:image` (or another of Parameter Store's data types).
    pub data_type: String,
}

/// What DescribeInstances says about the builder while the build watches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceStatus {
    pub state: InstanceStateName,
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
    pub state: InstanceStateName,
    /// When EC2 launched it, in milliseconds since the Unix epoch.
    pub launched_ms: Option<u64>,
    pub tags: BTreeMap<String, String>,
}

/// A command sent to an instance, as ListCommands gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandSent {
    pub command_id: String,
    pub comment: String,
    /// Run Command's status: Pending, InProgress, Success, Failed, TimedOut, Cancelled, ...
    pub status: String,
    pub requested_ms: Option<u64>,
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
    /// Run at the instance's first boot (base64-encoded here).
    pub user_data: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ImageRequest {
    pub instance_id: String,
    pub name: String,
    pub description: Option<String>,
    pub block_devices: Vec<BlockDevice>,
    pub tags: BTreeMap<String, String>,
}

/// Everything CopyImage needs, decided by the engine.
#[derive(Debug, Clone)]
pub struct CopyRequest {
    pub source_image: String,
    pub source_region: String,
    pub name: String,
    pub description: Option<String>,
    /// Encrypts the copy's snapshots with this key of the destination region.
    pub kms_key_id: Option<String>,
    pub tags: BTreeMap<String, String>,
    pub client_token: String,
}

#[derive(Clone, Debug)]
pub struct Aws {
    ec2: aws_sdk_ec2::Client,
    ssm: aws_sdk_ssm::Client,
    /// Only `Tests.EcsCluster` and `ContainerImages.TaskDefinitions` need it.
    ecs: Option<aws_sdk_ecs::Client>,
    /// Only `ContainerImages` of ECR need it.
    ecr: Option<aws_sdk_ecr::Client>,
    /// Registries other than ECR (`ContainerImages`).
    registries: Registries,
    /// The same clients for other regions ([`Aws::in_region`]), made once each and shared by
    /// every clone: a client made for each call would open its own connections every time.
    regions: std::sync::Arc<std::sync::Mutex<BTreeMap<String, Aws>>>,
}

impl Aws {
    /// Clients from the environment (`AWS_REGION`, credentials, and `AWS_ENDPOINT_URL` for a local
    /// AWS), with the product's retry policy.
    pub async fn from_env() -> Aws {
        Aws::from_config(&sdk_config_from_env().await)
    }
    /// Every client with the product's per-attempt timeout ([`with_attempt_timeout`]).
    pub fn from_config(config: &aws_config::SdkConfig) -> Aws {
        let config = &with_attempt_timeout(config);
        Aws::from_clients(
            aws_sdk_ec2::Client::new(config),
            aws_sdk_ssm::Client::new(config),
        )
        .with_ecs(aws_sdk_ecs::Client::new(config))
        .with_ecr(aws_sdk_ecr::Client::new(config))
    }
    pub fn from_clients(ec2: aws_sdk_ec2::Client, ssm: aws_sdk_ssm::Client) -> Aws {
        Aws {
            ec2,
            ssm,
            ecs: None,
            ecr: None,
            registries: Registries::from_env(),
            regions: Default::default(),
        }
    }
    pub fn with_ecr(mut self, ecr: aws_sdk_ecr::Client) -> Aws {
        self.ecr = Some(ecr);
        self.regions = Default::default();
        self
    }
    pub fn with_registries(mut self, registries: Registries) -> Aws {
        self.registries = registries;
        self
    }
    /// Registries other than ECR.
    pub fn registries(&self) -> &Registries {
        &self.registries
    }
    pub fn with_ecs(mut self, ecs: aws_sdk_ecs::Client) -> Aws {
        self.ecs = Some(ecs);
        // Other regions' clients made before had no ECS client: made again when asked for.
        self.regions = Default::default();
        self
    }
    /// The region this client's calls go to: the function's own (where AMIs are built).
    pub fn region(&self) -> Option<String> {
        self.ec2.config().region().map(|r| r.as_ref().to_owned())
    }
    /// The same clients (credentials, retries, endpoint) for another region: a copy's. Made at
    /// the first call for a region, then the same ones.
    pub fn in_region(&self, region: &str) -> Aws {
        let mut made = self.regions.lock().unwrap_or_else(|e| e.into_inner());
        made.entry(region.to_owned())
            .or_insert_with(|| {
                let region = aws_config::Region::new(region.to_owned());
                Aws {
                    ec2: aws_sdk_ec2::Client::from_conf(
                        self.ec2
                            .config()
                            .to_builder()
                            .region(region.clone())
                            .build(),
                    ),
                    ssm: aws_sdk_ssm::Client::from_conf(
                        self.ssm
                            .config()
                            .to_builder()
                            .region(region.clone())
                            .build(),
                    ),
                    ecs: self.ecs.as_ref().map(|ecs| {
                        aws_sdk_ecs::Client::from_conf(
                            ecs.config().to_builder().region(region.clone()).build(),
                        )
                    }),
                    ecr: self.ecr.as_ref().map(|ecr| {
                        aws_sdk_ecr::Client::from_conf(
                            ecr.config().to_builder().region(region).build(),
                        )
                    }),
                    registries: self.registries.clone(),
                    regions: Default::default(),
                }
            })
            .clone()
    }
}

/// `Filter` NAME = any of VALUES, for EC2's Describe calls.
pub(super) fn ec2_filter<V: Into<String>>(
    name: &str,
    values: impl IntoIterator<Item = V>,
) -> aws_sdk_ec2::types::Filter {
    aws_sdk_ec2::types::Filter::builder()
        .name(name)
        .set_values(Some(values.into_iter().map(Into::into).collect()))
        .build()
}

/// `tag:KEY` = VALUE for each tag: resources that carry all of them.
pub(super) fn tag_filters(tags: &BTreeMap<String, String>) -> Vec<aws_sdk_ec2::types::Filter> {
    tags.iter()
        .map(|(k, v)| ec2_filter(&format!("tag:{k}"), [v.as_str()]))
        .collect()
}

pub(super) fn ec2_tags(tags: &BTreeMap<String, String>) -> Vec<aws_sdk_ec2::types::Tag> {
    tags.iter()
        .map(|(k, v)| aws_sdk_ec2::types::Tag::builder().key(k).value(v).build())
        .collect()
}

/// The tags the resources of each of `kinds` get as they are created.
pub(super) fn tag_specifications(
    kinds: &[aws_sdk_ec2::types::ResourceType],
    tags: &BTreeMap<String, String>,
) -> Vec<aws_sdk_ec2::types::TagSpecification> {
    kinds
        .iter()
        .map(|kind| {
            aws_sdk_ec2::types::TagSpecification::builder()
                .resource_type(kind.clone())
                .set_tags(Some(ec2_tags(tags)))
                .build()
        })
        .collect()
}

/// An EC2 resource's tags, by key.
pub(super) fn tags_of(tags: &[aws_sdk_ec2::types::Tag]) -> BTreeMap<String, String> {
    tags.iter()
        .filter_map(|t| {
            Some((
                t.key()?.to_owned(),
                t.value().unwrap_or_default().to_owned(),
            ))
        })
        .collect()
}

/// For calls that remove something: it being gone already is success.
pub(super) fn gone_is_done<T>(sent: Result<T>) -> Result<()> {
    not_found_is_none(sent).map(drop)
}

/// For calls that describe something by id: EC2 answers NotFound for an id it does not know,
/// which is none found, not a failure.
pub(super) fn not_found_is_none<T>(sent: Result<T>) -> Result<Option<T>> {
    match sent {
        Ok(found) => Ok(Some(found)),
        Err(error) if error.is_not_found() => Ok(None),
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_clients_of_a_region_are_made_once() {
        let config = aws_config::SdkConfig::builder()
            .region(aws_config::Region::new("us-east-1"))
            .behavior_version(aws_config::BehaviorVersion::latest())
            .build();
        let aws = super::Aws::from_config(&config);
        let there = aws.in_region("eu-west-1");
        assert_eq!(there.region().as_deref(), Some("eu-west-1"));
        let again = aws.clone().in_region("eu-west-1");
        assert_eq!(again.region().as_deref(), Some("eu-west-1"));
        aws.in_region("ap-south-1");
        let made = aws.regions.lock().unwrap();
        assert_eq!(made.keys().collect::<Vec<_>>(), ["ap-south-1", "eu-west-1"]);
        assert_eq!(aws.region().as_deref(), Some("us-east-1"));
    }

    #[test]
    fn every_attempt_has_a_timeout_unless_the_config_sets_its_own() {
        use aws_config::timeout::TimeoutConfig;
        use std::time::Duration;
        let plain = aws_config::SdkConfig::builder().build();
        let ours = super::with_attempt_timeout(&plain);
        let timeouts = ours.timeout_config().unwrap();
        assert_eq!(
            timeouts.operation_attempt_timeout(),
            Some(super::ATTEMPT_TIMEOUT)
        );
        let connect = TimeoutConfig::builder()
            .connect_timeout(Duration::from_millis(3100))
            .operation_attempt_timeout(Duration::from_secs(2))
            .build();
        let theirs = aws_config::SdkConfig::builder()
            .timeout_config(connect)
            .build();
        let kept = super::with_attempt_timeout(&theirs);
        let timeouts = kept.timeout_config().unwrap();
        assert_eq!(
            timeouts.operation_attempt_timeout(),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            timeouts.connect_timeout(),
            Some(Duration::from_millis(3100))
        );
    }
}
