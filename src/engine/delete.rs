//! Delete: deregister the image and delete its snapshots; and the answer repeated for a request
//! that already answered with an image.

use std::collections::BTreeMap;

use crate::aws::Aws;
use crate::cfn::Identity;
use crate::engine::Done;
use crate::engine::cleanup::{SNAPSHOT_RELEASE_GRACE, delete_released_snapshot};
use crate::engine::failure::DeleteError;
use crate::engine::tags::{TAG_IMAGE, image_outcome, owned_by, resource_tags};
use crate::spec::ParameterNames;

/// Delete: deregister the image and delete every snapshot it used. An id that is not an image, an
/// image already gone, and an image some other resource built all end in SUCCESS, and say so.
/// `parameters`: the request's `SsmParameters`; those still holding the image are removed first,
/// so that nothing resolves to an image about to be gone. `regions`: the request's `Regions`,
/// whose copies of the image go before it.
pub async fn delete(
    aws: &Aws,
    identity: &Identity,
    physical_id: &str,
    (parameters, regions): (&ParameterNames, &[String]),
) -> Result<Done, DeleteError> {
    if !crate::spec::is_ami_id(physical_id) {
        return Ok(Done::new(physical_id, BTreeMap::new())
            .with_note(format!("{physical_id} is not an AMI id (its Create failed, or was cancelled, before answering with an image): nothing to delete.")));
    }
    let image = aws
        .describe_image(physical_id)
        .await
        .map_err(|error| DeleteError::ReadImage {
            image: physical_id.to_owned(),
            error,
        })?;
    if let Some(image) = &image
        && !owned_by(image, identity)
    {
        return Ok(Done::new(physical_id, BTreeMap::new()).with_note(format!(
            "image {physical_id} was not built by {}/{}: left untouched",
            identity.stack_name(),
            identity.logical_id
        )));
    }
    let mut snapshots: Vec<String> = image
        .as_ref()
        .map(|i| i.snapshot_ids.clone())
        .unwrap_or_default();
    let mut by_tag = resource_tags(identity);
    by_tag.insert(TAG_IMAGE.into(), physical_id.to_owned());
    let found =
        aws.snapshots_tagged(&by_tag)
            .await
            .map_err(|error| DeleteError::ListSnapshots {
                image: physical_id.to_owned(),
                error,
            })?;
    snapshots.extend(found);
    snapshots.sort();
    snapshots.dedup();
    crate::engine::publish::unpublish(aws, physical_id, &parameters.home)
        .await
        .map_err(|error| DeleteError::Unpublish {
            image: physical_id.to_owned(),
            error,
        })?;
    let regions = crate::engine::copies::regions_of(image.as_ref(), regions);
    if !parameters.copies.is_empty() {
        let copies = crate::engine::copies::found(aws, identity, physical_id, &regions)
            .await
            .map_err(|error| DeleteError::Copies {
                image: physical_id.to_owned(),
                error,
            })?;
        for (region, names) in &parameters.copies {
            let Some(copy) = copies.get(region) else {
                continue;
            };
            crate::engine::publish::unpublish(&aws.in_region(region), copy, names)
                .await
                .map_err(|error| DeleteError::Unpublish {
                    image: format!("{copy} (its copy in {region})"),
                    error,
                })?;
        }
    }
    let copies = crate::engine::copies::remove(aws, identity, physical_id, &regions).await;
    if !copies.left.is_empty() {
        return Err(DeleteError::CopiesRemain {
            image: physical_id.to_owned(),
            remaining: copies.left,
        });
    }
    if image.is_some() {
        aws.deregister_image(physical_id)
            .await
            .map_err(|error| DeleteError::Deregister {
                image: physical_id.to_owned(),
                error,
            })?;
        tracing::info!(image_id = physical_id, "image deregistered");
    }
    let mut failures = Vec::new();
    let until = tokio::time::Instant::now() + SNAPSHOT_RELEASE_GRACE;
    for snapshot in &snapshots {
        match delete_released_snapshot(aws, snapshot, until).await {
            Ok(()) => tracing::info!(snapshot_id = %snapshot, "snapshot deleted"),
            Err(error) => failures.push((snapshot.clone(), error)),
        }
    }
    if !failures.is_empty() {
        return Err(DeleteError::SnapshotsRemain {
            image: physical_id.to_owned(),
            remaining: failures,
        });
    }
    let what = if image.is_some() {
        "deregistered"
    } else {
        "was already gone"
    };
    let copies = if copies.done.is_empty() {
        String::new()
    } else {
        format!("; in other regions: {}", copies.done.join(", "))
    };
    Ok(Done::new(physical_id, BTreeMap::new()).with_note(format!(
        "image {physical_id} {what}; {} snapshot(s) deleted{copies}",
        snapshots.len()
    )))
}

/// The answer for an image a SUCCESS already named, sent again to a later delivery of the same
/// request: its attributes as the image's tags keep them, or only its id when it is gone.
pub async fn answered_image(
    aws: &Aws,
    identity: &Identity,
    image_id: &str,
    regions: &[String],
) -> Done {
    if crate::spec::is_ami_id(image_id)
        && let Ok(Some(image)) = aws.describe_image(image_id).await
        && owned_by(&image, identity)
    {
        // Copies that cannot be looked for now are left out of the repeated answer.
        return match crate::engine::copies::answer_of(aws, identity, &image, regions).await {
            Ok(done) => done,
            Err(_) => image_outcome(&image),
        };
    }
    Done::new(image_id, BTreeMap::new())
}
