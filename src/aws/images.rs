//! AMIs and their snapshots: describe, create, tag, deregister, delete.

use super::instances::block_device_mappings;
use super::*;

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
