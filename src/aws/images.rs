//! AMIs and their snapshots: describe, create, tag, deregister, delete.

use aws_smithy_types::DateTime;
use aws_smithy_types::date_time::Format as DateTimeFormat;

use super::instances::block_device_mappings;
use super::*;
use crate::spec::{LaunchPermissions, SourceFilter};

impl Aws {
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
    /// The newest image (by CreationDate) of the filter's owners that matches it and is
    /// available. Deprecated images are passed over unless the filter includes them:
    /// DescribeImages leaves out other owners' deprecated images unless IncludeDeprecated is
    /// set, but always lists the caller's own
    /// (<https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DescribeImages.html>), so
    /// their DeprecationTime is checked here as well. Images that carry every one of `not_of`'s
    /// tags are passed over. Every page is read: the order of the answer is not defined.
    pub async fn newest_image(
        &self,
        filter: &SourceFilter,
        not_of: &BTreeMap<String, String>,
    ) -> Result<Option<String>> {
        let now = DateTime::from(std::time::SystemTime::now());
        let mut filters: Vec<ec2t::Filter> = filter
            .filters
            .iter()
            .map(|(name, values)| {
                ec2t::Filter::builder()
                    .name(name)
                    .set_values(Some(values.clone()))
                    .build()
            })
            .collect();
        filters.push(
            ec2t::Filter::builder()
                .name("state")
                .values("available")
                .build(),
        );
        let mut pages = self
            .ec2
            .describe_images()
            .set_owners(Some(filter.owners.clone()))
            .set_filters(Some(filters))
            .include_deprecated(filter.include_deprecated)
            .max_results(1000)
            .into_paginator()
            .send();
        let mut newest: Option<(DateTime, String)> = None;
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| AwsError::from_sdk("ec2:DescribeImages", e))?;
            for image in page.images() {
                let (Some(id), Some(created)) = (image.image_id(), image.creation_date()) else {
                    continue;
                };
                let Some(created) = parse_time(created) else {
                    tracing::warn!(
                        image = id,
                        created,
                        "an image's CreationDate is unreadable; passed over"
                    );
                    continue;
                };
                let deprecated = image
                    .deprecation_time()
                    .and_then(parse_time)
                    .is_some_and(|at| at <= now);
                if deprecated && !filter.include_deprecated {
                    continue;
                }
                let tagged = |key: &str, value: &str| {
                    image
                        .tags()
                        .iter()
                        .any(|t| t.key() == Some(key) && t.value() == Some(value))
                };
                if !not_of.is_empty() && not_of.iter().all(|(k, v)| tagged(k, v)) {
                    continue;
                }
                let candidate = (created, id.to_owned());
                if newest.as_ref().is_none_or(|best| candidate > *best) {
                    newest = Some(candidate);
                }
            }
        }
        Ok(newest.map(|(_, id)| id))
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
    pub async fn create_image(&self, request: &ImageRequest) -> Result<String> {
        let out =
            self.ec2
                .create_image()
                .instance_id(&request.instance_id)
                .name(&request.name)
                .set_description(request.description.clone())
                .set_block_device_mappings((!request.block_devices.is_empty()).then(|| {
                    block_device_mappings(&request.block_devices, false, &BTreeMap::new())
                }))
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
    /// CopyImage, sent to this client's region (the destination) for `request.source_image` of
    /// `request.source_region`. The copy and its snapshots carry `request.tags` from the start;
    /// the ClientToken makes a repeated call (a retried or re-delivered request) answer the same
    /// copy (<https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_CopyImage.html>).
    pub async fn copy_image(&self, request: &CopyRequest) -> Result<String> {
        let out = self
            .ec2
            .copy_image()
            .source_image_id(&request.source_image)
            .source_region(&request.source_region)
            .name(&request.name)
            .set_description(request.description.clone())
            .set_encrypted(request.kms_key_id.as_ref().map(|_| true))
            .set_kms_key_id(request.kms_key_id.clone())
            .client_token(&request.client_token)
            .tag_specifications(tag_specification(ec2t::ResourceType::Image, &request.tags))
            .tag_specifications(tag_specification(
                ec2t::ResourceType::Snapshot,
                &request.tags,
            ))
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ec2:CopyImage", e))?;
        out.image_id().map(str::to_owned).ok_or_else(|| AwsError {
            operation: "ec2:CopyImage",
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
    /// Deprecates the image at `at` (EnableImageDeprecation, which rounds to the minute and
    /// refuses a time in the past), or cancels its deprecation (`None`: DisableImageDeprecation).
    pub async fn set_image_deprecation(&self, image_id: &str, at: Option<DateTime>) -> Result<()> {
        match at {
            Some(at) => self
                .ec2
                .enable_image_deprecation()
                .image_id(image_id)
                .deprecate_at(at)
                .send()
                .await
                .map(drop)
                .map_err(|e| AwsError::from_sdk("ec2:EnableImageDeprecation", e)),
            None => self
                .ec2
                .disable_image_deprecation()
                .image_id(image_id)
                .send()
                .await
                .map(drop)
                .map_err(|e| AwsError::from_sdk("ec2:DisableImageDeprecation", e)),
        }
    }
    /// Instances launched from the image require IMDSv2 (ImdsSupport `v2.0`). EC2 cannot take
    /// this back.
    pub async fn require_imds_v2(&self, image_id: &str) -> Result<()> {
        self.ec2
            .modify_image_attribute()
            .image_id(image_id)
            .imds_support(ec2t::AttributeValue::builder().value("v2.0").build())
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ec2:ModifyImageAttribute", e))?;
        Ok(())
    }
    /// Who may launch the image: accounts, organizations, organizational units. A public image's
    /// `all` group is not among them (this product never makes an image public).
    pub async fn launch_permissions(&self, image_id: &str) -> Result<LaunchPermissions> {
        let out = self
            .ec2
            .describe_image_attribute()
            .image_id(image_id)
            .attribute(ec2t::ImageAttributeName::LaunchPermission)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ec2:DescribeImageAttribute", e))?;
        let mut found = LaunchPermissions::default();
        for permission in out.launch_permissions() {
            if let Some(user) = permission.user_id() {
                found.user_ids.insert(user.to_owned());
            }
            if let Some(arn) = permission.organization_arn() {
                found.organization_arns.insert(arn.to_owned());
            }
            if let Some(arn) = permission.organizational_unit_arn() {
                found.organizational_unit_arns.insert(arn.to_owned());
            }
        }
        Ok(found)
    }
    /// Grants `add` and revokes `remove` in one ModifyImageAttribute.
    pub async fn change_launch_permissions(
        &self,
        image_id: &str,
        add: &LaunchPermissions,
        remove: &LaunchPermissions,
    ) -> Result<()> {
        let list = |permissions: &LaunchPermissions| {
            let users = permissions
                .user_ids
                .iter()
                .map(|id| ec2t::LaunchPermission::builder().user_id(id).build());
            let organizations = permissions.organization_arns.iter().map(|arn| {
                ec2t::LaunchPermission::builder()
                    .organization_arn(arn)
                    .build()
            });
            let units = permissions.organizational_unit_arns.iter().map(|arn| {
                ec2t::LaunchPermission::builder()
                    .organizational_unit_arn(arn)
                    .build()
            });
            let all: Vec<_> = users.chain(organizations).chain(units).collect();
            (!all.is_empty()).then_some(all)
        };
        let changes = ec2t::LaunchPermissionModifications::builder()
            .set_add(list(add))
            .set_remove(list(remove))
            .build();
        self.ec2
            .modify_image_attribute()
            .image_id(image_id)
            .launch_permission(changes)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ec2:ModifyImageAttribute", e))?;
        Ok(())
    }
    /// The accounts that may create volumes from the snapshot.
    pub async fn snapshot_volume_users(&self, snapshot_id: &str) -> Result<BTreeSet<String>> {
        let out = self
            .ec2
            .describe_snapshot_attribute()
            .snapshot_id(snapshot_id)
            .attribute(ec2t::SnapshotAttributeName::CreateVolumePermission)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ec2:DescribeSnapshotAttribute", e))?;
        Ok(out
            .create_volume_permissions()
            .iter()
            .filter_map(|p| p.user_id().map(str::to_owned))
            .collect())
    }
    /// Grants (`add`) or revokes the accounts' CreateVolumePermission on the snapshot, at most
    /// 500 accounts a call (ModifySnapshotAttribute's limit).
    pub async fn change_snapshot_volume_users(
        &self,
        snapshot_id: &str,
        add: bool,
        users: &BTreeSet<String>,
    ) -> Result<()> {
        let users: Vec<String> = users.iter().cloned().collect();
        for batch in users.chunks(500) {
            let operation = if add {
                ec2t::OperationType::Add
            } else {
                ec2t::OperationType::Remove
            };
            self.ec2
                .modify_snapshot_attribute()
                .snapshot_id(snapshot_id)
                .attribute(ec2t::SnapshotAttributeName::CreateVolumePermission)
                .operation_type(operation)
                .set_user_ids(Some(batch.to_vec()))
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("ec2:ModifySnapshotAttribute", e))?;
        }
        Ok(())
    }
    /// Deregistering an image that is already gone is success.
    pub async fn deregister_image(&self, image_id: &str) -> Result<()> {
        gone_is_done(
            "ec2:DeregisterImage",
            self.ec2.deregister_image().image_id(image_id).send().await,
        )
    }
    /// DeregisterImage with NotFound answered as an error: for an image asked for moments ago,
    /// which EC2 may not know yet (eventual consistency), NotFound does not mean gone.
    pub async fn deregister_new_image(&self, image_id: &str) -> Result<()> {
        self.ec2
            .deregister_image()
            .image_id(image_id)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| AwsError::from_sdk("ec2:DeregisterImage", e))
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
}

/// EC2's timestamps (`2026-11-01T12:00:00.000Z`); `None` for anything else.
fn parse_time(text: &str) -> Option<DateTime> {
    DateTime::from_str(text, DateTimeFormat::DateTime).ok()
}

pub(super) fn to_image(image: &ec2t::Image) -> Image {
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
        created: image.creation_date().and_then(parse_time),
        deprecated_at: image.deprecation_time().and_then(parse_time),
        imds_support: image.imds_support().map(|v| v.as_str().to_owned()),
        snapshot_ids: image
            .block_device_mappings()
            .iter()
            .filter_map(|m| m.ebs().and_then(|e| e.snapshot_id()).map(str::to_owned))
            .collect(),
        device_snapshots: image
            .block_device_mappings()
            .iter()
            .filter_map(|m| {
                Some((
                    m.device_name()?.to_owned(),
                    m.ebs()?.snapshot_id()?.to_owned(),
                ))
            })
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
