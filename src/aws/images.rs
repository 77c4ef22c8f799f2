//! AMIs and their snapshots: describe, create, tag, deregister, delete.
//!
//! The answers' element names are those of the EC2 API reference's response examples
//! (`imagesSet`, `blockDeviceMapping`, `tagSet`, ...), shared by every EC2 Query answer.

use aws_smithy_types::DateTime;
use aws_smithy_types::date_time::Format as DateTimeFormat;

use super::ec2::Params;
use super::instances::block_device_mappings;
use super::xml::Element;
use super::*;
use crate::spec::{LaunchPermissions, SourceFilter};

impl Aws {
    pub async fn describe_image(&self, image_id: &str) -> Result<Option<Image>> {
        let out = self
            .ec2
            .call(
                "ec2:DescribeImages",
                Params::new().set("ImageId.1", image_id),
            )
            .await;
        Ok(not_found_is_none(out)?.and_then(|out| {
            out.items("imagesSet")
                .find(|i| i.text_of("imageId") == Some(image_id))
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
        let available = ["available".to_owned()];
        let filters = filter
            .filters
            .iter()
            .map(|(name, values)| (name.as_str(), values.as_slice()))
            .chain([("state", &available[..])]);
        let query = Params::new()
            .list("Owner", &filter.owners)
            .filters(filters)
            .set("IncludeDeprecated", filter.include_deprecated)
            .set("MaxResults", 1000);
        let mut newest: Option<(DateTime, String)> = None;
        for page in self.ec2.pages("ec2:DescribeImages", query).await? {
            for image in page.items("imagesSet") {
                let (Some(id), Some(created)) =
                    (image.text_of("imageId"), image.text_of("creationDate"))
                else {
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
                    .text_of("deprecationTime")
                    .and_then(parse_time)
                    .is_some_and(|at| at <= now);
                if deprecated && !filter.include_deprecated {
                    continue;
                }
                let tags: BTreeMap<&str, &str> = image.tags().collect();
                if !not_of.is_empty()
                    && not_of
                        .iter()
                        .all(|(k, v)| tags.get(k.as_str()) == Some(&v.as_str()))
                {
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
        let pages = self
            .ec2
            .pages(
                "ec2:DescribeImages",
                Params::new()
                    .set("Owner.1", "self")
                    .filters([("name", &[name.to_owned()][..])])
                    .set("MaxResults", 1000),
            )
            .await?;
        Ok(pages
            .iter()
            .flat_map(|p| p.items("imagesSet"))
            .next()
            .map(to_image))
    }
    /// Images this account owns that carry every one of `tags`.
    pub async fn images_tagged(&self, tags: &BTreeMap<String, String>) -> Result<Vec<Image>> {
        let pages = self
            .ec2
            .pages(
                "ec2:DescribeImages",
                Params::new()
                    .set("Owner.1", "self")
                    .tag_filters(tags)
                    .set("MaxResults", 1000),
            )
            .await?;
        Ok(pages
            .iter()
            .flat_map(|p| p.items("imagesSet"))
            .map(to_image)
            .collect())
    }
    pub async fn create_image(&self, request: &ImageRequest) -> Result<String> {
        let out = self
            .ec2
            .call(
                "ec2:CreateImage",
                block_device_mappings(
                    Params::new()
                        .set("InstanceId", &request.instance_id)
                        .set("Name", &request.name)
                        .set_opt("Description", request.description.as_ref()),
                    &request.block_devices,
                    false,
                )
                // The snapshots carry our tags from their creation: the role lets CreateImage
                // create only tagged images and snapshots, and lets later calls (CreateTags,
                // DeleteSnapshot) touch only resources that already carry them.
                .tag_specifications(&["image", "snapshot"], &request.tags),
            )
            .await?;
        new_image_id("ec2:CreateImage", &out)
    }
    /// CopyImage, sent to this client's region (the destination) for `request.source_image` of
    /// `request.source_region`. The copy and its snapshots carry `request.tags` from the start;
    /// the ClientToken makes a repeated call (a retried or re-delivered request) answer the same
    /// copy (<https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_CopyImage.html>).
    pub async fn copy_image(&self, request: &CopyRequest) -> Result<String> {
        let out = self
            .ec2
            .call(
                "ec2:CopyImage",
                Params::new()
                    .set("SourceImageId", &request.source_image)
                    .set("SourceRegion", &request.source_region)
                    .set("Name", &request.name)
                    .set_opt("Description", request.description.as_ref())
                    .set_opt("Encrypted", request.kms_key_id.as_ref().map(|_| true))
                    .set_opt("KmsKeyId", request.kms_key_id.as_ref())
                    .set("ClientToken", &request.client_token)
                    .tag_specifications(&["image", "snapshot"], &request.tags),
            )
            .await?;
        new_image_id("ec2:CopyImage", &out)
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
            .call(
                "ec2:CreateTags",
                Params::new()
                    .list("ResourceId", resource_ids)
                    .tags("Tag", tags),
            )
            .await?;
        Ok(())
    }
    pub async fn untag(&self, resource_ids: &[String], keys: &[String]) -> Result<()> {
        if resource_ids.is_empty() || keys.is_empty() {
            return Ok(());
        }
        // A tag named without a value is deleted whatever its value.
        let keys = keys.iter().enumerate().fold(Params::new(), |p, (i, k)| {
            p.set(format!("Tag.{}.Key", i + 1), k)
        });
        self.ec2
            .call("ec2:DeleteTags", keys.list("ResourceId", resource_ids))
            .await?;
        Ok(())
    }
    pub async fn set_image_description(&self, image_id: &str, description: &str) -> Result<()> {
        self.ec2
            .call(
                "ec2:ModifyImageAttribute",
                Params::new()
                    .set("ImageId", image_id)
                    .set("Description.Value", description),
            )
            .await?;
        Ok(())
    }
    /// Deprecates the image at `at` (EnableImageDeprecation, which rounds to the minute and
    /// refuses a time in the past), or cancels its deprecation (`None`: DisableImageDeprecation).
    pub async fn set_image_deprecation(&self, image_id: &str, at: Option<DateTime>) -> Result<()> {
        let image = Params::new().set("ImageId", image_id);
        match at {
            Some(at) => {
                let at = at.fmt(DateTimeFormat::DateTime).map_err(|e| AwsError {
                    operation: "ec2:EnableImageDeprecation",
                    code: None,
                    message: format!("unwritable time: {e}"),
                })?;
                self.ec2
                    .call("ec2:EnableImageDeprecation", image.set("DeprecateAt", at))
                    .await
            }
            None => self.ec2.call("ec2:DisableImageDeprecation", image).await,
        }
        .map(drop)
    }
    /// Instances launched from the image require IMDSv2 (ImdsSupport `v2.0`). EC2 cannot take
    /// this back.
    pub async fn require_imds_v2(&self, image_id: &str) -> Result<()> {
        self.ec2
            .call(
                "ec2:ModifyImageAttribute",
                Params::new()
                    .set("ImageId", image_id)
                    .set("ImdsSupport.Value", "v2.0"),
            )
            .await?;
        Ok(())
    }
    /// Who may launch the image: accounts, organizations, organizational units. A public image's
    /// `all` group is not among them (this product never makes an image public).
    pub async fn launch_permissions(&self, image_id: &str) -> Result<LaunchPermissions> {
        let out = self
            .ec2
            .call(
                "ec2:DescribeImageAttribute",
                Params::new()
                    .set("ImageId", image_id)
                    .set("Attribute", "launchPermission"),
            )
            .await?;
        let mut found = LaunchPermissions::default();
        for permission in out.items("launchPermission") {
            if let Some(user) = permission.text_of("userId") {
                found.user_ids.insert(user.to_owned());
            }
            if let Some(arn) = permission.text_of("organizationArn") {
                found.organization_arns.insert(arn.to_owned());
            }
            if let Some(arn) = permission.text_of("organizationalUnitArn") {
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
        let list = |params: Params, prefix: &str, permissions: &LaunchPermissions| {
            let members = permissions
                .user_ids
                .iter()
                .map(|id| ("UserId", id))
                .chain(
                    permissions
                        .organization_arns
                        .iter()
                        .map(|arn| ("OrganizationArn", arn)),
                )
                .chain(
                    permissions
                        .organizational_unit_arns
                        .iter()
                        .map(|arn| ("OrganizationalUnitArn", arn)),
                );
            members.enumerate().fold(params, |p, (i, (member, value))| {
                p.set(format!("{prefix}.{}.{member}", i + 1), value)
            })
        };
        let params = Params::new().set("ImageId", image_id);
        let params = list(params, "LaunchPermission.Add", add);
        let params = list(params, "LaunchPermission.Remove", remove);
        self.ec2.call("ec2:ModifyImageAttribute", params).await?;
        Ok(())
    }
    /// The accounts that may create volumes from the snapshot.
    pub async fn snapshot_volume_users(&self, snapshot_id: &str) -> Result<BTreeSet<String>> {
        let out = self
            .ec2
            .call(
                "ec2:DescribeSnapshotAttribute",
                Params::new()
                    .set("SnapshotId", snapshot_id)
                    .set("Attribute", "createVolumePermission"),
            )
            .await?;
        Ok(out
            .items("createVolumePermission")
            .filter_map(|p| p.text_of("userId").map(str::to_owned))
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
        let users: Vec<&String> = users.iter().collect();
        for batch in users.chunks(500) {
            self.ec2
                .call(
                    "ec2:ModifySnapshotAttribute",
                    Params::new()
                        .set("SnapshotId", snapshot_id)
                        .set("Attribute", "createVolumePermission")
                        .set("OperationType", if add { "add" } else { "remove" })
                        .list("UserId", batch),
                )
                .await?;
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
            .call(
                "ec2:DeregisterImage",
                Params::new().set("ImageId", image_id),
            )
            .await
            .map(drop)
    }
    /// Deleting a snapshot that is already gone is success.
    pub async fn delete_snapshot(&self, snapshot_id: &str) -> Result<()> {
        gone_is_done(
            self.ec2
                .call(
                    "ec2:DeleteSnapshot",
                    Params::new().set("SnapshotId", snapshot_id),
                )
                .await,
        )
    }
    pub async fn snapshots_tagged(&self, tags: &BTreeMap<String, String>) -> Result<Vec<String>> {
        let pages = self
            .ec2
            .pages(
                "ec2:DescribeSnapshots",
                Params::new()
                    .set("Owner.1", "self")
                    .tag_filters(tags)
                    .set("MaxResults", 1000),
            )
            .await?;
        Ok(pages
            .iter()
            .flat_map(|p| p.items("snapshotSet"))
            .filter_map(|s| s.text_of("snapshotId").map(str::to_owned))
            .collect())
    }
}

/// The `imageId` of a CreateImage or CopyImage answer.
fn new_image_id(operation: &'static str, answer: &Element) -> Result<String> {
    answer
        .text_of("imageId")
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| AwsError {
            operation,
            code: None,
            message: "the answer named no image".into(),
        })
}

/// EC2's timestamps (`2026-11-01T12:00:00.000Z`); `None` for anything else.
pub(super) fn parse_time(text: &str) -> Option<DateTime> {
    DateTime::from_str(text, DateTimeFormat::DateTime).ok()
}

/// An `imagesSet` item.
pub(super) fn to_image(image: &Element) -> Image {
    let text = |name: &str| image.text_of(name).map(str::to_owned);
    let mappings: Vec<(Option<&str>, Option<&str>)> = image
        .items("blockDeviceMapping")
        .map(|m| (m.text_of("deviceName"), m.text_at(&["ebs", "snapshotId"])))
        .collect();
    Image {
        id: text("imageId").unwrap_or_default(),
        name: text("name").unwrap_or_default(),
        description: text("description"),
        state: text("imageState").unwrap_or_default(),
        state_reason: image
            .text_at(&["stateReason", "message"])
            .map(str::to_owned),
        architecture: text("architecture").unwrap_or_default(),
        root_device_name: text("rootDeviceName"),
        created: image.text_of("creationDate").and_then(parse_time),
        deprecated_at: image.text_of("deprecationTime").and_then(parse_time),
        imds_support: text("imdsSupport"),
        snapshot_ids: mappings
            .iter()
            .filter_map(|(_, snapshot)| snapshot.map(str::to_owned))
            .collect(),
        device_snapshots: mappings
            .iter()
            .filter_map(|&(device, snapshot)| Some((device?.to_owned(), snapshot?.to_owned())))
            .collect(),
        tags: image
            .tags()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
    }
}
