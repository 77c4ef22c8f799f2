//! What a stack's builds left on the local AWS: builder instances not terminated, images,
//! snapshots and volumes carrying the stack's tag.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::Filter;

pub struct Audit {
    pub ec2: aws_sdk_ec2::Client,
    pub stack_id: String,
}

impl Audit {
    pub fn filter(&self) -> Filter {
        Filter::builder()
            .name("tag:ecs-ami:stack-id")
            .values(&self.stack_id)
            .build()
    }

    pub async fn instances(&self) -> Vec<(String, String)> {
        let out = self
            .ec2
            .describe_instances()
            .filters(self.filter())
            .send()
            .await
            .unwrap();
        out.reservations()
            .iter()
            .flat_map(|r| r.instances())
            .map(|i| {
                (
                    i.instance_id().unwrap().to_owned(),
                    i.state().unwrap().name().unwrap().as_str().to_owned(),
                )
            })
            .collect()
    }

    pub async fn live_instances(&self) -> Vec<String> {
        self.instances()
            .await
            .into_iter()
            .filter(|(_, s)| s != "terminated")
            .map(|(i, _)| i)
            .collect()
    }

    pub async fn images(&self) -> Vec<String> {
        let out = self
            .ec2
            .describe_images()
            .owners("self")
            .filters(self.filter())
            .send()
            .await
            .unwrap();
        out.images()
            .iter()
            .map(|i| i.image_id().unwrap().to_owned())
            .collect()
    }

    pub async fn image(&self, id: &str) -> Option<aws_sdk_ec2::types::Image> {
        match self.ec2.describe_images().image_ids(id).send().await {
            Ok(out) => out.images().first().cloned(),
            Err(_) => None,
        }
    }

    pub async fn snapshots(&self) -> Vec<String> {
        let out = self
            .ec2
            .describe_snapshots()
            .owner_ids("self")
            .filters(self.filter())
            .send()
            .await
            .unwrap();
        out.snapshots()
            .iter()
            .map(|s| s.snapshot_id().unwrap().to_owned())
            .collect()
    }

    pub async fn snapshot_tags(&self, id: &str) -> BTreeMap<String, String> {
        let out = self
            .ec2
            .describe_snapshots()
            .snapshot_ids(id)
            .send()
            .await
            .unwrap();
        tags_of(out.snapshots()[0].tags())
    }

    pub async fn volumes(&self) -> Vec<String> {
        let out = self
            .ec2
            .describe_volumes()
            .filters(self.filter())
            .send()
            .await
            .unwrap();
        out.volumes()
            .iter()
            .map(|v| v.volume_id().unwrap().to_owned())
            .collect()
    }

    /// What outlived the stack's builds besides `keep` (images) and their snapshots: each
    /// builder not terminated, image, snapshot and volume, by id.
    pub async fn leftovers(&self, keep: &[&str]) -> Vec<String> {
        let mut left = self.live_instances().await;
        left.extend(
            self.images()
                .await
                .into_iter()
                .filter(|i| !keep.contains(&i.as_str())),
        );
        for snapshot in self.snapshots().await {
            let owner = self
                .snapshot_tags(&snapshot)
                .await
                .get("ecs-ami:image-id")
                .cloned()
                .unwrap_or_default();
            if !keep.contains(&owner.as_str()) {
                left.push(snapshot);
            }
        }
        left.extend(self.volumes().await);
        left
    }

    /// Nothing of this stack's builds remains but `keep` and its snapshots.
    pub async fn assert_only(&self, keep: &[&str]) {
        assert_eq!(
            self.live_instances().await,
            Vec::<String>::new(),
            "builder instances left running"
        );
        let mut images = self.images().await;
        images.sort();
        let mut expected: Vec<String> = keep.iter().map(|s| s.to_string()).collect();
        expected.sort();
        assert_eq!(images, expected, "images of the stack");
        for snapshot in self.snapshots().await {
            let owner = self
                .snapshot_tags(&snapshot)
                .await
                .get("ecs-ami:image-id")
                .cloned()
                .unwrap_or_default();
            assert!(
                keep.contains(&owner.as_str()),
                "snapshot {snapshot} of {owner:?} left behind"
            );
        }
        assert_eq!(
            self.volumes().await,
            Vec::<String>::new(),
            "volumes left behind"
        );
    }
}

pub fn tags_of(tags: &[aws_sdk_ec2::types::Tag]) -> BTreeMap<String, String> {
    tags.iter()
        .map(|t| {
            (
                t.key().unwrap().to_owned(),
                t.value().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// What one request launched and made, found by its `ecs-ami:request-id` tag: how many
/// instances it launched, its images, and how many of its instances are not terminated.
pub async fn count_tagged(
    ec2: &aws_sdk_ec2::Client,
    request_id: &str,
) -> (usize, Vec<String>, usize) {
    let filter = Filter::builder()
        .name("tag:ecs-ami:request-id")
        .values(request_id)
        .build();
    let instances = ec2
        .describe_instances()
        .filters(filter.clone())
        .send()
        .await
        .unwrap();
    let launched = instances
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .count();
    let live = instances
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .filter(|i| i.state().and_then(|s| s.name()).map(|n| n.as_str()) != Some("terminated"))
        .count();
    let images = ec2
        .describe_images()
        .owners("self")
        .filters(filter)
        .send()
        .await
        .unwrap();
    let images = images
        .images()
        .iter()
        .map(|i| i.image_id().unwrap().to_owned())
        .collect();
    (launched, images, live)
}
