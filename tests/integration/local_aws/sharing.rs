//! `LaunchPermissions` on the local AWS, through the function's role: the AMI is shared with the
//! accounts, organizations and organizational units named, its snapshots with the accounts, and an
//! Update that changes only the sharing grants and revokes on the same AMI, launching nothing.
//!
//! ModifyImageAttribute: https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_ModifyImageAttribute.html
//! ModifySnapshotAttribute: https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_ModifySnapshotAttribute.html
//! the role's actions: https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonec2.html

use crate::common;

use std::collections::BTreeSet;

use aws_sdk_ec2::types::{ImageAttributeName, SnapshotAttributeName};
use common::audit::Audit;
use common::report;
use common::{
    LocalAws, assert_launched_nothing, event, invoke, one_step_properties, stack_id, update_from,
};
use serde_json::json;

const ORGANIZATION: &str = "arn:aws:organizations::111122223333:organization/o-exampleorg1";
const UNIT: &str = "arn:aws:organizations::111122223333:ou/o-exampleorg1/ou-ab12-cdefgh34";

/// What the administrator sees: the image's launch permissions (as `user:`, `org:`, `ou:`
/// entries) and each snapshot's CreateVolumePermission accounts.
async fn shared(local: &LocalAws, image: &str) -> (BTreeSet<String>, Vec<BTreeSet<String>>) {
    let ec2 = local.ec2().await;
    let out = ec2
        .describe_image_attribute()
        .image_id(image)
        .attribute(ImageAttributeName::LaunchPermission)
        .send()
        .await
        .unwrap();
    let mut entries = BTreeSet::new();
    for p in out.launch_permissions() {
        if let Some(id) = p.user_id() {
            entries.insert(format!("user:{id}"));
        }
        if let Some(arn) = p.organization_arn() {
            entries.insert(format!("org:{arn}"));
        }
        if let Some(arn) = p.organizational_unit_arn() {
            entries.insert(format!("ou:{arn}"));
        }
    }
    let described = ec2.describe_images().image_ids(image).send().await.unwrap();
    let mut snapshots = Vec::new();
    for mapping in described.images()[0].block_device_mappings() {
        let Some(snapshot) = mapping.ebs().and_then(|e| e.snapshot_id()) else {
            continue;
        };
        let out = ec2
            .describe_snapshot_attribute()
            .snapshot_id(snapshot)
            .attribute(SnapshotAttributeName::CreateVolumePermission)
            .send()
            .await
            .unwrap();
        snapshots.push(
            out.create_volume_permissions()
                .iter()
                .filter_map(|p| p.user_id().map(str::to_owned))
                .collect(),
        );
    }
    assert!(!snapshots.is_empty(), "the image lists its snapshots");
    (entries, snapshots)
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharing_is_granted_changed_and_revoked_on_the_same_ami() {
    let local = LocalAws::start().await;
    let aws = local.aws().await;
    let stack = "sharing";
    let audit = Audit {
        ec2: local.ec2().await,
        stack_id: stack_id(stack),
    };
    let first = one_step_properties(json!({"LaunchPermissions": {
        "UserIds": ["111122223333", "444455556666"],
        "OrganizationArns": [ORGANIZATION],
    }}));
    let created = invoke(&aws, event("Create", stack, "req-1", None, first.clone())).await;
    assert_eq!(created["Status"], "SUCCESS", "{created}");
    let ami = created["PhysicalResourceId"].as_str().unwrap().to_owned();
    let (image, snapshots) = shared(&local, &ami).await;
    assert_eq!(
        image,
        set(&[
            "user:111122223333",
            "user:444455556666",
            &format!("org:{ORGANIZATION}")
        ])
    );
    for users in &snapshots {
        assert_eq!(*users, set(&["111122223333", "444455556666"]));
    }

    // One account and the organization out, an organizational unit in: the same AMI.
    local.take_calls().await;
    let second = one_step_properties(json!({"LaunchPermissions": {
        "UserIds": ["111122223333"],
        "OrganizationalUnitArns": [UNIT],
    }}));
    let changed = invoke(&aws, update_from(stack, "req-2", &ami, &second, &first)).await;
    assert_eq!(changed["Status"], "SUCCESS", "{changed}");
    assert_eq!(changed["PhysicalResourceId"], json!(ami));
    let calls = local.take_calls().await;
    assert_launched_nothing(&calls);
    let (image, snapshots) = shared(&local, &ami).await;
    assert_eq!(image, set(&["user:111122223333", &format!("ou:{UNIT}")]));
    for users in &snapshots {
        assert_eq!(*users, set(&["111122223333"]));
    }

    // The property removed: nothing shared any more.
    let none = one_step_properties(json!({}));
    let revoked = invoke(&aws, update_from(stack, "req-3", &ami, &none, &second)).await;
    assert_eq!(revoked["Status"], "SUCCESS", "{revoked}");
    assert_eq!(revoked["PhysicalResourceId"], json!(ami));
    let (image, snapshots) = shared(&local, &ami).await;
    assert!(image.is_empty(), "{image:?}");
    assert!(snapshots.iter().all(BTreeSet::is_empty), "{snapshots:?}");

    let decisions = local.iam_decisions(false).await;
    assert_eq!(decisions["counts"].get("Denied"), None, "{decisions}");
    let deleted = invoke(&aws, event("Delete", stack, "req-4", Some(&ami), none)).await;
    assert_eq!(deleted["Status"], "SUCCESS", "{deleted}");
    report::record_clean(
        "update-sharing",
        "Update",
        "LaunchPermissions set at Create (two accounts, an organization), changed alone (an account and the organization out, an organizational unit in), then removed",
        "the same AMI throughout, nothing launched: the image's launch permissions and its snapshots' CreateVolumePermission follow each time, then are all revoked",
        &audit.leftovers(&[]).await,
    );
}
