//! The source AMI resolved (from an SSM parameter, or as the newest image a filter matches) and
//! checked, and what EC2 would refuse at launch found before anything is launched.

use std::collections::BTreeSet;

use super::{Resolved, container_images};
use crate::aws::{Aws, ImageState};
use crate::cfn::Identity;
use crate::engine::failure::BuildError;
use crate::engine::tags::resource_tags;
use crate::spec::{AmiSpec, Source, fingerprint};

/// `identity`: the resource being built. A filter never chooses an image of this very resource
/// (its output would become its next input); another resource's image it may.
pub(crate) async fn resolve(
    aws: &Aws,
    spec: &AmiSpec,
    identity: &Identity,
) -> Result<Resolved, BuildError> {
    let source_image = match &spec.source {
        Source::Ami(id) => id.clone(),
        Source::Parameter(name) => {
            let value = aws.parameter_value(name).await.map_err(|error| {
                BuildError::SourceParameterUnreadable {
                    name: name.clone(),
                    error,
                }
            })?;
            if !crate::spec::is_ami_id(&value) {
                return Err(BuildError::SourceParameterNotAnImage {
                    name: name.clone(),
                    chars: value.chars().count(),
                });
            }
            value
        }
        Source::Filter(filter) => match aws.newest_image(filter, &resource_tags(identity)).await? {
            Some(id) => id,
            None => {
                return Err(BuildError::SourceFilterMatchedNothing {
                    owners: filter.owners.clone(),
                    filters: filter.describe(),
                    include_deprecated: filter.include_deprecated,
                });
            }
        },
    };
    let property = spec.source.property();
    let Some(image) = aws.describe_image(&source_image).await? else {
        return Err(BuildError::SourceMissing {
            property,
            image: source_image,
        });
    };
    if image.state != ImageState::Available {
        return Err(BuildError::SourceNotAvailable {
            property,
            image: source_image,
            state: image.state,
        });
    }
    let architecture = image.architecture.clone();
    let instance_type = spec
        .instance_type
        .clone()
        .unwrap_or_else(|| default_instance_type(&architecture).into());
    let container_images = if spec.container_images.is_empty() {
        Vec::new()
    } else {
        let images = container_images::resolve(aws, spec, &architecture).await?;
        let root_volume = image.root_device_name.as_deref().and_then(|root| {
            spec.block_device_mappings
                .iter()
                .find(|d| d.device_name == root)
                .and_then(|d| d.ebs.volume_size)
        });
        container_images::check_fits(&images, root_volume.or(image.root_volume_gib))?;
        images
    };
    let fingerprint = fingerprint::of(spec, &source_image, &instance_type, &container_images);
    tracing::info!(source_image = %source_image, architecture = %architecture, container_images = container_images.len(), "source resolved");
    Ok(Resolved {
        source_image,
        architecture,
        instance_type,
        fingerprint,
        container_images,
    })
}

/// What EC2 would refuse at launch, found before anything is launched, each naming its property:
/// the instance type exists and runs the source AMI's architecture, the subnet and the security
/// groups exist, and the groups are in the subnet's VPC. (The instance profile is left to
/// RunInstances, which names it: reading IAM would need one more permission.)
pub(crate) async fn check_where_it_runs(
    aws: &Aws,
    spec: &AmiSpec,
    resolved: &Resolved,
) -> Result<(), BuildError> {
    check_instance_type(aws, resolved).await?;
    let subnet_vpc = match &spec.subnet_id {
        Some(subnet) => match aws.subnet_vpc(subnet).await? {
            Some(vpc) => Some(vpc),
            None => {
                return refused(
                    "SubnetId",
                    format!("{subnet} does not exist in this region"),
                );
            }
        },
        None => None,
    };
    if spec.security_group_ids.is_empty() {
        return Ok(());
    }
    check_security_groups(aws, spec, subnet_vpc.as_deref()).await
}

fn refused(property: &'static str, problem: String) -> Result<(), BuildError> {
    Err(BuildError::WillNotLaunch { property, problem })
}

/// The instance type exists here and runs the source AMI's architecture.
async fn check_instance_type(aws: &Aws, resolved: &Resolved) -> Result<(), BuildError> {
    let Resolved {
        source_image,
        architecture,
        instance_type,
        ..
    } = resolved;
    match aws.instance_type_architectures(instance_type).await? {
        None => refused(
            "InstanceType",
            format!("{instance_type} does not exist in this region"),
        ),
        Some(supported) if !supported.iter().any(|a| a == architecture) => refused(
            "InstanceType",
            format!(
                "{instance_type} is {}, SourceAmi {source_image} is {architecture}",
                supported.join("/")
            ),
        ),
        Some(_) => Ok(()),
    }
}

/// The security groups exist, in one VPC, and in the subnet's when a subnet is given.
async fn check_security_groups(
    aws: &Aws,
    spec: &AmiSpec,
    subnet_vpc: Option<&str>,
) -> Result<(), BuildError> {
    let groups = aws.security_group_vpcs(&spec.security_group_ids).await?;
    let missing: Vec<&str> = spec
        .security_group_ids
        .iter()
        .filter(|g| !groups.contains_key(*g))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return refused(
            "SecurityGroupIds",
            format!("{} does not exist in this region", missing.join(", ")),
        );
    }
    let vpcs: BTreeSet<&str> = groups.values().map(String::as_str).collect();
    if vpcs.len() > 1 {
        return refused(
            "SecurityGroupIds",
            format!(
                "the groups are in different VPCs ({})",
                groups
                    .iter()
                    .map(|(g, v)| format!("{g} in {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
    }
    if let (Some(subnet_vpc), Some(group_vpc)) = (subnet_vpc, vpcs.first())
        && subnet_vpc != *group_vpc
    {
        return refused(
            "SecurityGroupIds",
            format!(
                "{} is in {group_vpc}, SubnetId {} is in {subnet_vpc}",
                spec.security_group_ids.join(", "),
                spec.subnet_id.as_deref().unwrap_or_default()
            ),
        );
    }
    Ok(())
}

/// Burstable general-purpose types: enough memory for `dnf update` and Docker pulls, cheap for
/// the few minutes a build runs.
pub fn default_instance_type(architecture: &str) -> &'static str {
    if architecture == "arm64" {
        "t4g.medium"
    } else {
        "t3.medium"
    }
}
