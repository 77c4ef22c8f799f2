//! AMIs and their snapshots: describe, create, tag, deregister, delete.

use aws_sdk_ec2::types as ec2t;
use aws_smithy_types::DateTime;
use aws_smithy_types::date_time::Format as DateTimeFormat;

use super::instances::block_device_mappings;
use super::*;
use crate::spec::{LaunchPermissions, SourceFilter};

impl Aws {
    pub async fn describe_image(&self, image_id: &str) -> Result<Option<Image>> {
        let out = self
            .ec2
            .describe_images()
            .image_ids(image_id)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ec2:DescribeImages", e));
        Ok(not_found_is_none(out)?.and_then(|out| {
            out.images()
                .iter()
                .find(|i| i.image_id() == Some(image_id))
                .map(to_image)
        }))
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
        let filters = filter
            .filters
            .iter()
            .map(|(name, values)| ec2_filter(name, values))
            .chain([ec2_filter("state", [ImageState::Available.as_str()])]);
        let mut pages = self
            .ec2
            .describe_images()
            .set_owners(Some(filter.owners.clone()))
            .set_filters(Some(filters.collect()))
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
                let tags = tags_of(image.tags());
                if !not_of.is_empty() && not_of.iter().all(|(k, v)| tags.get(k) == Some(v)) {
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
        Ok(self
            .own_images(vec![ec2_filter("name", [name])])
            .await?
            .into_iter()
            .next())
    }
    /// Images this account owns that carry every one of `tags`.
    pub async fn images_tagged(&self, tags: &BTreeMap<String, String>) -> Result<Vec<Image>> {
        self.own_images(tag_filters(tags)).await
    }
    /// The account's own images that match `filters`, every page.
    async fn own_images(&self, filters: Vec<ec2t::Filter>) -> Result<Vec<Image>> {
        let images: Vec<ec2t::Image> = self
            .ec2
            .describe_images()
            .owners("self")
            .set_filters(Some(filters))
            .max_results(1000)
            .into_paginator()
            .items()
            .send()
            .collect::<std::result::Result<_, _>>()
            .await
            .map_err(|e| AwsError::from_sdk("ec2:DescribeImages", e))?;
        Ok(images.iter().map(to_image).collect())
    }
    pub async fn create_image(&self, request: &ImageRequest) -> Result<String> {
        let out = self
            .ec2
            .create_image()
            .instance_id(&request.instance_id)
            .name(&request.name)
            .set_description(request.description.clone())
            .set_block_device_mappings(Some(block_device_mappings(&request.block_devices, false)))
            // The snapshots carry our tags from their creation: the role lets CreateImage
            // create only tagged images and snapshots, and lets later calls (CreateTags,
            // DeleteSnapshot) touch only resources that already carry them.
            .set_tag_specifications(Some(tag_specifications(
                &[ec2t::ResourceType::Image, ec2t::ResourceType::Snapshot],
                &request.tags,
            )))
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ec2:CreateImage", e))?;
        new_image_id("ec2:CreateImage", out.image_id())
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
            .set_tag_specifications(Some(tag_specifications(
                &[ec2t::ResourceType::Image, ec2t::ResourceType::Snapshot],
                &request.tags,
            )))
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ec2:CopyImage", e))?;
        new_image_id("ec2:CopyImage", out.image_id())
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
            .set_tags(Some(ec2_tags(tags)))
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ec2:CreateTags", e))?;
        Ok(())
    }
    pub async fn untag(&self, resource_ids: &[String], keys: &[String]) -> Result<()> {
        if resource_ids.is_empty() || keys.is_empty() {
            return Ok(());
        }
        // A tag named without a value is deleted whatever its value.
        let keys = keys.iter().map(|k| ec2t::Tag::builder().key(k).build());
        self.ec2
            .delete_tags()
            .set_resources(Some(resource_ids.to_vec()))
            .set_tags(Some(keys.collect()))
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
        let list = |permissions: &LaunchPermissions| -> Option<Vec<ec2t::LaunchPermission>> {
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
            self.ec2
                .modify_snapshot_attribute()
                .snapshot_id(snapshot_id)
                .attribute(ec2t::SnapshotAttributeName::CreateVolumePermission)
                .operation_type(if add {
                    ec2t::OperationType::Add
                } else {
                    ec2t::OperationType::Remove
                })
                .set_user_ids(Some(batch.to_vec()))
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("ec2:ModifySnapshotAttribute", e))?;
        }
        Ok(())
    }
    /// Deregistering an image that is already gone is success.
    pub async fn deregister_image(&self, image_id: &str) -> Result<()> {
        gone_is_done(self.deregister_new_image(image_id).await)
    }
    /// DeregisterImage with NotFound answered as an error: for an image asked for moments ago,
    /// which EC2 may not know yet (eventual consistency), NotFound does not mean gone.
    pub async fn deregister_new_image(&self, image_id: &str) -> Result<()> {
        self.ec2
            .deregister_image()
            .image_id(image_id)
            .send()
            .await
            .map(drop)
            .map_err(|e| AwsError::from_sdk("ec2:DeregisterImage", e))
    }
    /// Deleting a snapshot that is already gone is success.
    pub async fn delete_snapshot(&self, snapshot_id: &str) -> Result<()> {
        gone_is_done(
            self.ec2
                .delete_snapshot()
                .snapshot_id(snapshot_id)
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("ec2:DeleteSnapshot", e)),
        )
    }
    pub async fn snapshots_tagged(&self, tags: &BTreeMap<String, String>) -> Result<Vec<String>> {
        let snapshots: Vec<ec2t::Snapshot> = self
            .ec2
            .describe_snapshots()
            .owner_ids("self")
            .set_filters(Some(tag_filters(tags)))
            .max_results(1000)
            .into_paginator()
            .items()
            .send()
            .collect::<std::result::Result<_, _>>()
            .await
            .map_err(|e| AwsError::from_sdk("ec2:DescribeSnapshots", e))?;
        Ok(snapshots
            .iter()
            .filter_map(|s| s.snapshot_id().map(str::to_owned))
            .collect())
    }
}

/// The id a CreateImage or CopyImage answer names.
fn new_image_id(operation: &'static str, id: Option<&str>) -> Result<String> {
    id.filter(|id| !id.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| AwsError::in_answer(operation, "the answer named no image"))
}

/// EC2's timestamps given as text (`2026-11-01T12:00:00.000Z`: an image's CreationDate and
/// DeprecationTime); `None` for anything else.
pub(super) fn parse_time(text: &str) -> Option<DateTime> {
    DateTime::from_str(text, DateTimeFormat::DateTime).ok()
}

fn to_image(image: &ec2t::Image) -> Image {
    let mappings: Vec<(Option<&str>, Option<&str>)> = image
        .block_device_mappings()
        .iter()
        .map(|m| (m.device_name(), m.ebs().and_then(|e| e.snapshot_id())))
        .collect();
    Image {
        id: image.image_id().unwrap_or_default().to_owned(),
        name: image.name().unwrap_or_default().to_owned(),
        description: image.description().map(str::to_owned),
        // An answer without a state is taken as not usable: `Unknown` matches no state the
        // engine waits for.
        state: image
            .state()
            .cloned()
            .unwrap_or_else(|| ImageState::from("")),
        state_reason: image
            .state_reason()
            .and_then(|r| r.message())
            .map(str::to_owned),
        architecture: image
            .architecture()
            .map(|a| a.as_str().to_owned())
            .unwrap_or_default(),
        root_device_name: image.root_device_name().map(str::to_owned),
        root_volume_gib: image
            .block_device_mappings()
            .iter()
            .find(|m| m.device_name().is_some() && m.device_name() == image.root_device_name())
            .and_then(|m| m.ebs()?.volume_size())
            .and_then(|size| u32::try_from(size).ok()),
        created: image.creation_date().and_then(parse_time),
        deprecated_at: image.deprecation_time().and_then(parse_time),
        imds_support: image.imds_support().map(|s| s.as_str().to_owned()),
        snapshot_ids: mappings
            .iter()
            .filter_map(|(_, snapshot)| snapshot.map(str::to_owned))
            .collect(),
        device_snapshots: mappings
            .iter()
            .filter_map(|&(device, snapshot)| Some((device?.to_owned(), snapshot?.to_owned())))
            .collect(),
        tags: tags_of(image.tags()),
    }
}
