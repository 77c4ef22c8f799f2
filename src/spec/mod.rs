//! The resource's properties, typed and validated before anything is launched.
//!
//! CloudFormation sends every scalar as a string, so numbers and booleans are accepted either way.
//! Every problem names the property by its path (`Steps[2].Commands`) and says what is wrong; all
//! problems are reported together, so a user fixes a template in one round trip.

use std::collections::BTreeMap;

use serde_json::Value;

mod answering;
mod container_images;
mod devices;
mod fields;
pub mod fingerprint;
mod ids;
mod parameters;
mod regions;
pub mod script;
mod sharing;
mod source_filter;
mod steps;
mod tags;
mod tests_property;

pub use answering::{Answering, MAX_LONG_BUILD_MINUTES};
use container_images::parse_container_images;
pub use container_images::{
    BakedImage, ContainerImages, EcrRegistry, ImageReference, MAX_CONTAINER_IMAGES, PULL_STEP_NAME,
    ecr_api_endpoint, ecr_registry, is_digest,
};
use devices::parse_block_devices;
use fields::{Fields, Problems, kind_of, scalar_string};
pub use ids::is_ami_id;
use ids::{
    check_ami_name, check_instance_profile, check_parameter_name, is_instance_type, is_resource_id,
};
use parameters::parse_ssm_parameters;
pub use parameters::{MAX_SSM_PARAMETERS, ParameterNames, ssm_parameter_names};
use regions::parse_regions;
pub use regions::{CopyRegion, MAX_REGIONS, is_region_name, region_names};
pub use sharing::LaunchPermissions;
use sharing::parse_launch_permissions;
pub use source_filter::SourceFilter;
use source_filter::parse_source_filter;
pub use steps::is_output_name;
use steps::parse_steps;
use tags::{USER_TAG_BUDGET, check_tag_budget, distinct_outputs, parse_output_tags, parse_tags};
use tests_property::parse_tests;
pub use tests_property::{DEFAULT_TEST_MINUTES, MAX_USER_DATA_BYTES, TestSpec};

/// Tags this product puts on everything it creates; users may not set keys with this prefix.
pub const TAG_PREFIX: &str = "ecs-ami:";
/// EC2's limit of tags per resource (<https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/Using_Tags.html#tag-restrictions>).
pub const EC2_TAGS_PER_RESOURCE: usize = 50;
/// The product's own tags on the AMI, each snapshot and each copy, whatever the properties: the
/// identity (stack, logical and request id), fingerprint, properties and source image, and one
/// of image id (on a snapshot), copy regions (on the AMI) or copy of (on a copy).
pub const PRODUCT_TAGS: usize = 7;
/// Tested at, test instance and tests passed, on the AMI, its snapshots and its copies once the
/// AMI passed `Tests`. They stay when an Update drops `Tests` (the AMI is kept, and a rollback to
/// earlier Tests must find them), so they are counted whether or not `Tests` is given.
pub const PRODUCT_TEST_TAGS: usize = 3;
pub const DEFAULT_STEP_TIMEOUT_SECONDS: u32 = 1800;
/// A step's longest TimeoutSeconds: 12 hours, the longest build (through a wait condition, see
/// [`MAX_LONG_BUILD_MINUTES`]); AWS-RunShellScript's executionTimeout goes up to 172,800 s. A
/// build's TimeoutMinutes still bounds every step.
pub const MAX_STEP_TIMEOUT_SECONDS: u32 = 43_200;
/// SSM accepts a limited document parameter size; one step's rendered script must stay below it.
pub const MAX_STEP_SCRIPT_BYTES: usize = 64 * 1024;
/// CloudFormation waits at most ServiceTimeout seconds (default and maximum 3600) for an answer.
pub const MAX_SERVICE_TIMEOUT_SECONDS: u32 = 3600;
/// EnableImageDeprecation takes a time at most 10 years ahead (EC2 API reference).
pub const MAX_DEPRECATE_AFTER_DAYS: u32 = 3650;
/// The function's Timeout (template.yaml), Lambda's longest: an invocation's bound.
pub const LAMBDA_TIMEOUT_SECONDS: u32 = 900;
/// Kept free at the end of ServiceTimeout: terminating the builder, removing a half-made image,
/// a hand-over delayed by Lambda's queue, and the response PUT with its retries all fit in it.
pub const ANSWER_MARGIN_SECONDS: u32 = 300;
/// Step outputs become attributes (in a response of at most 4,096 bytes) and are kept on the AMI
/// as tags (values of at most 256 characters): a few short values, such as versions.
pub const MAX_OUTPUTS: usize = 10;
pub const MAX_OUTPUT_VALUE_CHARS: usize = 256;
/// The attribute naming the source AMI; `OutputTags` may tag the AMI with it, as with a step output.
pub const SOURCE_IMAGE_ATTRIBUTE: &str = "SourceImageId";
/// The attributes every build answers with; a step output may not take one of these names.
pub const BUILT_IN_ATTRIBUTES: [&str; 8] = [
    "ImageId",
    "ContainerImages",
    "ImageName",
    "SourceImageId",
    "SnapshotIds",
    "Fingerprint",
    "TestedAt",
    "TestInstanceId",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Ami(String),
    Parameter(String),
    Filter(SourceFilter),
}

impl Source {
    /// The property that gave the source, as a template writes it.
    pub fn property(&self) -> &'static str {
        match self {
            Source::Ami(_) => "SourceAmi",
            Source::Parameter(_) => "SourceAmiParameter",
            Source::Filter(_) => "SourceAmiFilter",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ebs {
    pub volume_size: Option<u32>,
    pub volume_type: Option<String>,
    pub iops: Option<u32>,
    pub throughput: Option<u32>,
    pub encrypted: Option<bool>,
    pub kms_key_id: Option<String>,
    /// For the AMI's mapping. The builder's copy is always deleted on termination, so a failed
    /// build cannot leave a volume behind.
    pub delete_on_termination: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockDevice {
    pub device_name: String,
    pub ebs: Ebs,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Command {
        commands: Vec<String>,
        environment: BTreeMap<String, String>,
    },
    File {
        path: String,
        content: String,
        mode: String,
        owner: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub name: String,
    pub timeout_seconds: u32,
    pub action: Action,
    /// Names of the values this (command) step hands back by writing `NAME=value` lines to the
    /// file named by `$ECS_AMI_OUTPUTS`.
    pub outputs: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmiSpec {
    pub source: Source,
    pub iam_instance_profile: String,
    pub instance_type: Option<String>,
    pub subnet_id: Option<String>,
    pub security_group_ids: Vec<String>,
    pub ami_name: Option<String>,
    pub ami_description: Option<String>,
    pub block_device_mappings: Vec<BlockDevice>,
    pub tags: BTreeMap<String, String>,
    /// Tags whose values a step reads on the builder: tag key -> output name.
    pub output_tags: BTreeMap<String, String>,
    pub steps: Vec<Step>,
    /// The whole build's bound; past it the build is stopped, cleaned up and answered FAILED.
    pub timeout_minutes: u32,
    /// The image is deprecated this many days after its creation. Not part of the fingerprint:
    /// a change is applied to the existing image.
    pub deprecate_after_days: Option<u32>,
    /// Who the AMI is shared with. Not part of the fingerprint: a change is applied to the
    /// existing image. Empty when not given.
    pub launch_permissions: LaunchPermissions,
    /// `v2.0`: instances launched from the image require IMDSv2.
    pub imds_support: Option<String>,
    /// Parameters that hold the AMI's id. Not part of the fingerprint: a change is applied to
    /// the existing image's parameters.
    pub ssm_parameters: Vec<String>,
    /// Parameters in other regions (`Region` given), each holding the id of the AMI's copy
    /// there: region -> names. Not part of the fingerprint.
    pub copy_parameters: BTreeMap<String, Vec<String>>,
    /// The other regions the AMI is copied to. Not part of the fingerprint: a change adds or
    /// removes copies of the existing image.
    pub regions: Vec<CopyRegion>,
    /// What the new AMI must pass, on a test instance launched from it, before it is answered.
    /// Not part of the fingerprint: a change alone re-tests the existing AMI.
    pub tests: Option<TestSpec>,
    /// Container images pulled on the builder after the steps, by the digests they resolve to
    /// (part of the fingerprint, resolved). Empty when not given.
    pub container_images: ContainerImages,
    /// Minutes a failed build's builder (or test instance) is kept running for debugging,
    /// 0 (the default) to [`MAX_KEEP_FAILED_INSTANCE_MINUTES`]. Not part of the fingerprint.
    pub keep_failed_instance_minutes: u32,
    /// [`fingerprint::of_properties_as_sent`] of the properties parsed: what an instance kept
    /// after a failure carries, to tell CloudFormation's rollback of its request.
    pub properties_as_sent: String,
    /// Whether the build answers CloudFormation itself or through a wait condition (the EcsAmi
    /// macro's `SignalUrl`, `ImageResource` and `Signal`). Not part of the fingerprint: each
    /// deployment of a macro's template has a new wait condition handle.
    pub answering: Answering,
}

/// The longest `KeepFailedInstanceMinutes`: four hours.
pub const MAX_KEEP_FAILED_INSTANCE_MINUTES: u32 = 240;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid properties: {}", .problems.join("; "))]
pub struct PropertyErrors {
    pub problems: Vec<String>,
}

impl AmiSpec {
    /// Whether `self` asks for what `other` asks for but its sharing, deprecation, parameters,
    /// copies, tests and `KeepFailedInstanceMinutes`: what an Update applies to the existing image without resolving the source again.
    pub fn differs_only_in_distribution(&self, other: &AmiSpec) -> bool {
        let without = |spec: &AmiSpec| AmiSpec {
            launch_permissions: LaunchPermissions::default(),
            deprecate_after_days: None,
            ssm_parameters: Vec::new(),
            copy_parameters: BTreeMap::new(),
            regions: Vec::new(),
            tests: None,
            keep_failed_instance_minutes: 0,
            properties_as_sent: String::new(),
            answering: Answering::Itself,
            ..spec.clone()
        };
        without(self) == without(other)
    }

    /// The `SsmParameters` outside `prefix` (the deployment's `ImageParameterPrefix`, the only
    /// parameters its role may write), refused before anything is built rather than after.
    pub fn check_parameter_prefix(&self, prefix: &str) -> Result<(), PropertyErrors> {
        let problems: Vec<String> = self
            .ssm_parameters
            .iter()
            .chain(self.copy_parameters.values().flatten())
            .filter(|name| !name.starts_with(prefix))
            .map(|name| {
                format!("SsmParameters: {name} is outside this deployment's ImageParameterPrefix {prefix}, the only parameters the function may write")
            })
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(PropertyErrors { problems })
        }
    }

    /// How many container images the AMI has tags left for, once `Tags`, `OutputTags` and the
    /// step outputs have theirs (task definitions may name more images than the parse counted).
    pub fn container_image_tag_room(&self) -> usize {
        USER_TAG_BUDGET.saturating_sub(
            self.tags.len() + self.output_tags.len() + distinct_outputs(&self.steps),
        )
    }

    /// `ContainerImages` this deployment's role cannot read or pull: ECR images outside
    /// `repositories` (its ContainerImageRepositories), task definitions unless
    /// `read_task_definitions` (its ReadTaskDefinitions). Refused before anything is built.
    pub fn check_container_image_access(
        &self,
        repositories: &[&str],
        read_task_definitions: bool,
    ) -> Result<(), PropertyErrors> {
        let mut problems = Problems::default();
        self.container_images
            .check_access(repositories, read_task_definitions, &mut problems);
        problems.into_result(|| ())
    }

    /// `Regions` outside `allowed` (the deployment's `AmiCopyRegions`, the only regions its role
    /// may copy to) are refused before anything is built rather than after.
    pub fn check_copy_regions(&self, allowed: &[&str]) -> Result<(), PropertyErrors> {
        let problems: Vec<String> = self
            .regions
            .iter()
            .enumerate()
            .filter(|(_, r)| !allowed.contains(&r.region.as_str()))
            .map(|(i, r)| {
                format!(
                    "Regions[{i}].Region: {} is not in this deployment's AmiCopyRegions ({}), the only regions the function may copy to",
                    r.region,
                    if allowed.is_empty() { "none".to_owned() } else { allowed.join(", ") }
                )
            })
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(PropertyErrors { problems })
        }
    }

    /// A region's `KmsKeyId` is its copy's: an Update that changes it for a region the previous
    /// properties also name would leave the copy as it is, so it is refused.
    pub fn check_copy_keys(&self, previous: &AmiSpec) -> Result<(), PropertyErrors> {
        let problems: Vec<String> = self
            .regions
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                let before = previous.regions.iter().find(|p| p.region == r.region)?;
                (before.kms_key_id != r.kms_key_id).then(|| {
                    format!(
                        "Regions[{i}].KmsKeyId: the copy in {} exists with {}; a copy's key cannot change in place: remove the region in one update and add it back with the new key in the next",
                        r.region,
                        before.kms_key_id.as_deref().unwrap_or("no KmsKeyId")
                    )
                })
            })
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(PropertyErrors { problems })
        }
    }

    /// Once the function's own region (`home`, where the AMI is built) is known: `Regions` naming
    /// it are refused (there is nothing to copy there); `SsmParameters` naming it join those
    /// without a Region; those naming a region that is neither it nor one of `Regions` are
    /// refused (no copy of the AMI is there).
    pub fn check_regions(mut self, home: &str) -> Result<AmiSpec, PropertyErrors> {
        let mut problems: Vec<String> = self
            .regions
            .iter()
            .enumerate()
            .filter(|(_, r)| r.region == home)
            .map(|(i, r)| {
                format!("Regions[{i}].Region: {} is the region the AMI is built in (the function's); list only the regions to copy it to", r.region)
            })
            .collect();
        // The role may read the container instances of this region's clusters only.
        if let Some(cluster) = self.tests.as_ref().and_then(|t| t.ecs_cluster.as_deref())
            && let Some(region) = cluster
                .strip_prefix("arn:")
                .and_then(|rest| rest.split(':').nth(2))
            && region != home
        {
            problems.push(format!(
                "Tests.EcsCluster: {cluster} is a cluster of {region}; the test instance is launched in {home}, the function's region, and can join only a cluster there"
            ));
        }
        if let Some(names) = self.copy_parameters.remove(home) {
            for name in names {
                if !self.ssm_parameters.contains(&name) {
                    self.ssm_parameters.push(name);
                }
            }
        }
        for (region, names) in &self.copy_parameters {
            if !self.regions.iter().any(|r| &r.region == region) {
                problems.push(format!(
                    "SsmParameters: {} names Region {region}, which is neither this function's region ({home}) nor one of Regions: no copy of the AMI is there",
                    names.join(", ")
                ));
            }
        }
        if problems.is_empty() {
            Ok(self)
        } else {
            Err(PropertyErrors { problems })
        }
    }

    pub fn parse(properties: &Value) -> Result<AmiSpec, PropertyErrors> {
        let mut problems = Problems::default();
        let Some(map) = properties.as_object() else {
            return Err(PropertyErrors {
                problems: vec!["ResourceProperties: must be an object of properties".into()],
            });
        };
        let mut top = Fields::new("", map, &mut problems);
        top.ignore("ServiceToken");
        let source_ami = top.string("SourceAmi");
        let source_parameter = top.string("SourceAmiParameter");
        let source_filter = top.take("SourceAmiFilter");
        let iam_instance_profile = top.string("IamInstanceProfile");
        let instance_type = top.string("InstanceType");
        let subnet_id = top.string("SubnetId");
        let security_groups = top.list("SecurityGroupIds");
        let ami_name = top.string("AmiName");
        let ami_description = top.string("AmiDescription");
        let block_devices = top.list("BlockDeviceMappings");
        let tags = top.take("Tags");
        let output_tags = top.take("OutputTags");
        let steps = top.list("Steps");
        let service_timeout = top.number("ServiceTimeout", 1, MAX_SERVICE_TIMEOUT_SECONDS);
        let timeout_minutes = top.number("TimeoutMinutes", 1, MAX_LONG_BUILD_MINUTES);
        let deprecate_after_days = top.number("DeprecateAfterDays", 1, MAX_DEPRECATE_AFTER_DAYS);
        let launch_permissions = top.take("LaunchPermissions");
        let imds_support = top.string("ImdsSupport");
        let ssm_parameters = top.list("SsmParameters");
        let regions = top.list("Regions");
        let tests = top.take("Tests");
        let container_images = top.take("ContainerImages");
        let keep_failed_instance_minutes = top.number(
            "KeepFailedInstanceMinutes",
            0,
            MAX_KEEP_FAILED_INSTANCE_MINUTES,
        );
        let signal_url = top.string("SignalUrl");
        let image_resource = top.string("ImageResource");
        let signal = top.string("Signal");
        top.finish();
        let answering = answering::parse(signal_url, image_resource, signal, &mut problems);
        // The resource that builds answers CloudFormation at the latest at its first hand-over,
        // before the function's 15 minutes end.
        if let (Answering::Signal { .. }, Some(seconds)) = (&answering, service_timeout)
            && seconds < LAMBDA_TIMEOUT_SECONDS
        {
            problems.add(
                "ServiceTimeout",
                format!("{seconds} s is too short for a build through the EcsAmi macro's wait condition: the resource that builds answers at the latest before its first hand-over, within the function's {LAMBDA_TIMEOUT_SECONDS} s; leave it out or give at least that"),
            );
        }
        let timeout_minutes = match answering.is_long() {
            // The wait condition's Timeout bounds it, not ServiceTimeout (which bounds only
            // the acknowledgement).
            true => timeout_minutes.unwrap_or(MAX_LONG_BUILD_MINUTES),
            false => check_timeouts(service_timeout, timeout_minutes, &mut problems),
        };

        let source = parse_source(source_ami, source_parameter, source_filter, &mut problems);
        match &iam_instance_profile {
            None => problems.add(
                "IamInstanceProfile",
                "required: the builder's instance profile (name or ARN); it must allow SSM (AmazonSSMManagedInstanceCore)",
            ),
            Some(profile) => check_instance_profile(profile, &mut problems),
        }
        if let Some(kind) = &instance_type
            && !is_instance_type(kind)
        {
            problems.add(
                "InstanceType",
                format!("{kind:?} is not an EC2 instance type such as t3.medium"),
            );
        }
        check_subnet(subnet_id.as_deref(), &mut problems);
        let security_group_ids =
            parse_security_groups(security_groups.unwrap_or_default(), &mut problems);
        if let Some(name) = &ami_name {
            check_ami_name(name, &mut problems);
        }
        if let Some(description) = &ami_description
            && description.chars().count() > 255
        {
            problems.add("AmiDescription", "must be at most 255 characters");
        }
        let block_device_mappings =
            parse_block_devices(block_devices.unwrap_or_default(), &mut problems);
        let tags = parse_tags(tags, &mut problems);
        let steps = parse_steps(steps.unwrap_or_default(), &mut problems);
        let output_tags = parse_output_tags(output_tags, &tags, &steps, &mut problems);
        let launch_permissions = launch_permissions
            .and_then(|value| parse_launch_permissions(value, &mut problems))
            .unwrap_or_default();
        let mut copy_parameters: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut home_parameters = Vec::new();
        for (name, region) in
            parse_ssm_parameters(ssm_parameters.unwrap_or_default(), &mut problems)
        {
            match region {
                Some(region) => copy_parameters.entry(region).or_default().push(name),
                None => home_parameters.push(name),
            }
        }
        let ssm_parameters = home_parameters;
        let regions = parse_regions(regions.unwrap_or_default(), &mut problems);
        let tests = tests.and_then(|value| parse_tests(value, &mut problems));
        let container_images = container_images
            .and_then(|value| parse_container_images(value, &mut problems))
            .unwrap_or_default();
        // Each image is a tag of the AMI; a task definition names at least one.
        let least_images = container_images.images.len() + container_images.task_definitions.len();
        check_tag_budget(&tags, &output_tags, &steps, least_images, &mut problems);
        check_sharable(
            &launch_permissions,
            (&block_device_mappings, &regions),
            &mut problems,
        );
        if let Some(value) = &imds_support
            && value != "v2.0"
        {
            problems.add(
                "ImdsSupport",
                format!("{value:?} is not v2.0, the one value EC2 takes (leave it out for none)"),
            );
        }

        problems.into_result(|| AmiSpec {
            source: source.expect("a missing source is a reported problem"),
            iam_instance_profile: iam_instance_profile
                .expect("a missing profile is a reported problem"),
            instance_type,
            subnet_id,
            security_group_ids,
            ami_name,
            ami_description,
            block_device_mappings,
            tags,
            output_tags,
            steps,
            timeout_minutes,
            deprecate_after_days,
            launch_permissions,
            imds_support,
            ssm_parameters,
            copy_parameters,
            regions,
            tests,
            container_images,
            keep_failed_instance_minutes: keep_failed_instance_minutes.unwrap_or(0),
            properties_as_sent: fingerprint::of_properties_as_sent(properties),
            answering,
        })
    }
}

/// An AMI whose snapshots are encrypted with the AWS managed key `aws/ebs` cannot be shared with
/// another account (<https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/sharingamis-explicit.html>):
/// a volume `Encrypted` without a `KmsKeyId` (or with that key's alias) would make
/// `LaunchPermissions` fail after the build, so it is refused before.
///
/// So is a copy of an encrypted AMI made without a `KmsKeyId`: CopyImage then encrypts it with
/// the destination's default key, normally `aws/ebs`
/// (<https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_CopyImage.html>).
fn check_sharable(
    permissions: &LaunchPermissions,
    (devices, regions): (&[BlockDevice], &[CopyRegion]),
    problems: &mut Problems,
) {
    if permissions.is_empty() {
        return;
    }
    if devices.iter().any(|d| d.ebs.encrypted == Some(true)) {
        for (i, region) in regions.iter().enumerate() {
            if region.kms_key_id.is_none() {
                problems.add(
                    &format!("Regions[{i}].KmsKeyId"),
                    format!("required to share an encrypted AMI (LaunchPermissions): without it the copy in {} is encrypted with that region's default key, normally aws/ebs, which cannot be shared", region.region),
                );
            }
        }
    }
    for (i, device) in devices.iter().enumerate() {
        let managed = device.ebs.encrypted == Some(true)
            && device
                .ebs
                .kms_key_id
                .as_deref()
                .is_none_or(|key| key == "alias/aws/ebs" || key.ends_with(":alias/aws/ebs"));
        if managed {
            problems.add(
                &format!("BlockDeviceMappings[{i}].Ebs.KmsKeyId"),
                "an AMI encrypted with the AWS managed key aws/ebs cannot be shared (LaunchPermissions): give a customer managed key whose key policy lets those accounts use it",
            );
        }
    }
}

/// `SourceAmi`, `SourceAmiParameter` or `SourceAmiFilter`: exactly one of them.
fn parse_source(
    source_ami: Option<String>,
    source_parameter: Option<String>,
    source_filter: Option<&Value>,
    problems: &mut Problems,
) -> Option<Source> {
    let given: Vec<&str> = [
        ("SourceAmi", source_ami.is_some()),
        ("SourceAmiParameter", source_parameter.is_some()),
        ("SourceAmiFilter", source_filter.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, present)| present.then_some(name))
    .collect();
    if given.len() > 1 {
        problems.add(
            given[0],
            format!("give only one source, not {}", given.join(" and ")),
        );
        return None;
    }
    if let Some(ami) = source_ami {
        if !is_ami_id(&ami) {
            problems.add(
                "SourceAmi",
                format!("{ami:?} is not an AMI id (ami- followed by 8 or 17 hex digits)"),
            );
        }
        Some(Source::Ami(ami))
    } else if let Some(name) = source_parameter {
        check_parameter_name(&name, problems);
        Some(Source::Parameter(name))
    } else if let Some(filter) = source_filter {
        parse_source_filter(filter, problems).map(Source::Filter)
    } else {
        problems.add(
            "SourceAmi",
            "required: give SourceAmi (an AMI id), SourceAmiParameter (an SSM parameter holding one) or SourceAmiFilter (the newest image that matches)",
        );
        None
    }
}

fn check_subnet(subnet_id: Option<&str>, problems: &mut Problems) {
    if let Some(subnet) = subnet_id
        && !is_resource_id(subnet, "subnet-")
    {
        problems.add(
            "SubnetId",
            format!("{subnet:?} is not a subnet id (subnet- followed by hex digits)"),
        );
    }
}

fn parse_security_groups(groups: Vec<Value>, problems: &mut Problems) -> Vec<String> {
    let mut security_group_ids = Vec::new();
    for (i, group) in groups.iter().enumerate() {
        let path = format!("SecurityGroupIds[{i}]");
        match scalar_string(group) {
            Some(id) if is_resource_id(&id, "sg-") => security_group_ids.push(id),
            Some(id) => problems.add(
                &path,
                format!("{id:?} is not a security group id (sg- followed by hex digits)"),
            ),
            None => problems.add(&path, "must be a string"),
        }
    }
    security_group_ids
}

/// TimeoutMinutes defaults to, and may not exceed, what ServiceTimeout leaves after the margin
/// for cleanup and the answer.
fn check_timeouts(
    service_timeout: Option<u32>,
    timeout_minutes: Option<u32>,
    problems: &mut Problems,
) -> u32 {
    let service = service_timeout.unwrap_or(MAX_SERVICE_TIMEOUT_SECONDS);
    let most = service.saturating_sub(ANSWER_MARGIN_SECONDS) / 60;
    if most == 0 {
        problems.add(
            "ServiceTimeout",
            format!(
                "{service} s leaves no time to build: at least {} s are needed ({ANSWER_MARGIN_SECONDS} s are kept for cleanup and the answer)",
                ANSWER_MARGIN_SECONDS + 60
            ),
        );
        return 1;
    }
    match timeout_minutes {
        Some(minutes) if minutes > most => {
            problems.add(
                "TimeoutMinutes",
                format!(
                    "{minutes} is more than the {most} minutes that ServiceTimeout ({service} s) leaves after {} minutes for cleanup and the answer{}",
                    ANSWER_MARGIN_SECONDS / 60,
                    if minutes <= MAX_LONG_BUILD_MINUTES {
                        format!("; builds of up to {MAX_LONG_BUILD_MINUTES} minutes go through a wait condition: add the deployment's EcsAmi macro to the template's Transform, which expands resources of Type Custom::EcsAmi (docs/guides/long-builds.md)")
                    } else {
                        String::new()
                    }
                ),
            );
            most
        }
        Some(minutes) => minutes,
        None => most,
    }
}

#[cfg(test)]
mod schema_tests;
#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests;
