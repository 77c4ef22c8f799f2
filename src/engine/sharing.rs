//! `LaunchPermissions`: the AMI shared with the accounts, organizations and organizational units
//! the spec names, and its snapshots' CreateVolumePermission with the accounts (so they can copy
//! the AMI); kept in step on every Update without rebuilding: what is no longer named is revoked.
//!
//! [ModifyImageAttribute](https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_ModifyImageAttribute.html),
//! [ModifySnapshotAttribute](https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_ModifySnapshotAttribute.html).
//! Snapshots take account ids only: organizations reach the AMI, not its snapshots.

use std::collections::BTreeSet;

use crate::aws::{Aws, AwsError, Image};
use crate::spec::{AmiSpec, LaunchPermissions};

/// What to grant and what to revoke for `current` to become `wanted`.
pub(crate) fn changes(
    wanted: &LaunchPermissions,
    current: &LaunchPermissions,
) -> (LaunchPermissions, LaunchPermissions) {
    let minus = |a: &LaunchPermissions, b: &LaunchPermissions| LaunchPermissions {
        user_ids: a.user_ids.difference(&b.user_ids).cloned().collect(),
        organization_arns: a
            .organization_arns
            .difference(&b.organization_arns)
            .cloned()
            .collect(),
        organizational_unit_arns: a
            .organizational_unit_arns
            .difference(&b.organizational_unit_arns)
            .cloned()
            .collect(),
    };
    (minus(wanted, current), minus(current, wanted))
}

/// The image's distribution as the spec states it: who may launch it (this module), then when it
/// is deprecated (`deprecation`). Applied when a build's image is ready and by every Update that
/// keeps or returns an image.
pub(crate) async fn distribute(aws: &Aws, image: &Image, spec: &AmiSpec) -> Result<(), AwsError> {
    apply(aws, image, spec).await?;
    crate::engine::deprecation::apply(aws, image, spec).await
}

/// Brings the image's and its snapshots' permissions to what the spec says; reads them first and
/// changes only what differs.
async fn apply(aws: &Aws, image: &Image, spec: &AmiSpec) -> Result<(), AwsError> {
    let wanted = &spec.launch_permissions;
    let current = aws.launch_permissions(&image.id).await?;
    let (grant, revoke) = changes(wanted, &current);
    if !grant.is_empty() || !revoke.is_empty() {
        tracing::info!(image_id = %image.id, grant = ?grant, revoke = ?revoke, "launch permissions changed");
        aws.change_launch_permissions(&image.id, &grant, &revoke)
            .await?;
    }
    for snapshot in &image.snapshot_ids {
        let users = aws.snapshot_volume_users(snapshot).await?;
        let grant: BTreeSet<String> = wanted.user_ids.difference(&users).cloned().collect();
        let revoke: BTreeSet<String> = users.difference(&wanted.user_ids).cloned().collect();
        if !grant.is_empty() {
            aws.change_snapshot_volume_users(snapshot, true, &grant)
                .await?;
        }
        if !revoke.is_empty() {
            aws.change_snapshot_volume_users(snapshot, false, &revoke)
                .await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn permissions(users: &[&str], organizations: &[&str]) -> LaunchPermissions {
        LaunchPermissions {
            user_ids: users.iter().map(|s| s.to_string()).collect(),
            organization_arns: organizations.iter().map(|s| s.to_string()).collect(),
            organizational_unit_arns: BTreeSet::new(),
        }
    }

    #[test]
    fn only_what_differs_is_granted_or_revoked() {
        let wanted = permissions(&["111122223333", "444455556666"], &[]);
        let current = permissions(&["111122223333", "777788889999"], &["org"]);
        let (grant, revoke) = changes(&wanted, &current);
        assert_eq!(grant, permissions(&["444455556666"], &[]));
        assert_eq!(revoke, permissions(&["777788889999"], &["org"]));
        let (grant, revoke) = changes(&wanted, &wanted);
        assert!(grant.is_empty() && revoke.is_empty());
    }
}
