//! `Regions`: the image copied to other regions (CopyImage), each copy tagged like the image and
//! distributed like it (launch permissions, deprecation, IMDSv2), kept in step by every Update
//! and removed with the image.
//!
//! A copy carries the image's tags, the identity of the request that made it (so that the
//! cleanup of a failed build or Update finds it in its region) and [`TAG_COPY_OF`] (so that the
//! resource's Update and Delete find it whatever request made it). CopyImage's ClientToken is
//! derived from the request, the image and the region: a retried or re-delivered request gets
//! the same copy. [CopyImage](https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_CopyImage.html)
//! is called in the destination region; it copies neither launch permissions nor deprecation,
//! which are set on each copy here.

use std::collections::BTreeMap;

use futures_util::future::join_all;

use crate::aws::{Aws, AwsError, CopyRequest, Image, ImageState};
use crate::cfn::Identity;
use crate::engine::Done;
use crate::engine::cleanup::{SNAPSHOT_RELEASE_GRACE, delete_released_snapshot};
use crate::engine::failure::BuildError;
use crate::engine::tags::{
    TAG_COPY_OF, TAG_COPY_REGIONS, TAG_REQUEST, identity_tags, image_outcome, resource_tags,
};
use crate::hash::sha256_hex;
use crate::spec::{AmiSpec, TAG_PREFIX};

/// Each region's copy: region -> image id.
pub type Copies = BTreeMap<String, String>;

/// The attribute naming the copy in `region`: `!GetAtt [Ami, ImageId.eu-west-1]`.
pub fn attribute(region: &str) -> String {
    format!("ImageId.{region}")
}

/// The answer with each copy's id as an attribute.
pub(crate) fn with_attributes(mut outcome: Done, copies: &Copies) -> Done {
    for (region, image) in copies {
        outcome.attributes.insert(attribute(region), image.clone());
    }
    outcome
}

/// The tags that find the copies of `home_id` made for this resource, whatever request made them.
fn copy_of(identity: &Identity, home_id: &str) -> BTreeMap<String, String> {
    let mut tags = resource_tags(identity);
    tags.insert(TAG_COPY_OF.into(), home_id.to_owned());
    tags
}

/// At most 64 ASCII characters (EC2's idempotency tokens).
fn copy_token(identity: &Identity, home_id: &str, region: &str) -> String {
    let digest = sha256_hex(&format!("{}|{home_id}|{region}", identity.digest()));
    format!("ecs-ami-copy-{}", &digest[..48])
}

/// The copy of `home_id` in the region `aws` calls, if one is there (not deregistered).
async fn find(aws: &Aws, identity: &Identity, home_id: &str) -> Result<Option<Image>, AwsError> {
    let mut found = aws.images_tagged(&copy_of(identity, home_id)).await?;
    // An available copy first, then a pending one; a failed one only when there is nothing else.
    found.sort_by_key(|i| match i.state {
        ImageState::Available => 0,
        ImageState::Pending => 1,
        _ => 2,
    });
    Ok(found
        .into_iter()
        .find(|i| i.state != ImageState::Deregistered))
}

fn in_region(region: &str) -> impl Fn(AwsError) -> BuildError + '_ {
    move |error| BuildError::InRegion {
        region: region.to_owned(),
        error,
    }
}

/// What `start` (the copies to `Regions`) has done so far: every region's copy, and the regions
/// whose copy this request made (which its failure removes). Kept as each copy is asked for, so
/// that a failure in a later region still knows the earlier ones by id (a listing by tags may not
/// show them yet). Part of the build's state, carried in a hand-over payload.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Copied {
    pub copies: Copies,
    pub made: Vec<String>,
}

impl Copied {
    /// The copies this request made, region and id: the ones its failure removes.
    pub fn made_here(&self) -> impl Iterator<Item = (&str, &str)> {
        self.copies
            .iter()
            .filter(|(region, _)| self.made.contains(region))
            .map(|(region, id)| (region.as_str(), id.as_str()))
    }
}

/// Starts the copy to each of `spec.regions` that has none yet (one already there, made by this
/// request's earlier delivery or by an earlier request, is taken as it is). `home` is the
/// image, in the region `aws` calls.
pub(crate) async fn start(
    aws: &Aws,
    identity: &Identity,
    home: &Image,
    spec: &AmiSpec,
    started: &mut Copied,
) -> Result<(), BuildError> {
    let source_region = aws.region().unwrap_or_default();
    let mut tags = home.tags.clone();
    tags.extend(identity_tags(identity));
    tags.insert(TAG_COPY_OF.into(), home.id.clone());
    tags.remove(TAG_COPY_REGIONS);
    for wanted in &spec.regions {
        let region = wanted.region.as_str();
        let there = aws.in_region(region);
        let existing = find(&there, identity, &home.id)
            .await
            .map_err(in_region(region))?;
        // A failed copy holds the name (it has no snapshots to delete); the next copy gets a
        // token of its own, or EC2 would answer the failed one again.
        let mut attempt = String::new();
        if let Some(failed) = existing.as_ref().filter(|c| c.state == ImageState::Failed) {
            there
                .deregister_image(&failed.id)
                .await
                .map_err(in_region(region))?;
            attempt = failed.id.clone();
        }
        let id = match existing {
            Some(copy) if copy.state != ImageState::Failed => {
                if copy.tags.get(TAG_REQUEST) == Some(&identity.request_id) {
                    started.made.push(region.to_owned());
                }
                copy.id
            }
            _ => {
                started.made.push(region.to_owned());
                let request = CopyRequest {
                    source_image: home.id.clone(),
                    source_region: source_region.clone(),
                    name: home.name.clone(),
                    description: home.description.clone(),
                    kms_key_id: wanted.kms_key_id.clone(),
                    tags: tags.clone(),
                    client_token: copy_token(identity, &home.id, &format!("{region}{attempt}")),
                };
                there
                    .copy_image(&request)
                    .await
                    .map_err(in_region(region))?
            }
        };
        tracing::info!(region, image_id = %id, source = %home.id, "copy requested");
        started.copies.insert(region.to_owned(), id);
    }
    Ok(())
}

/// The regions the image's copies were made in, as its [`TAG_COPY_REGIONS`] tag keeps them.
pub(crate) fn recorded_regions(home: &Image) -> Vec<String> {
    home.tags
        .get(TAG_COPY_REGIONS)
        .map(|regions| {
            regions
                .split(',')
                .filter(|r| crate::spec::is_region_name(r))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// The regions to look for `home`'s copies in: those `named` (a request's `Regions`, which may
/// be an earlier or later version's) and those the image records.
pub(crate) fn regions_of(home: Option<&Image>, named: &[String]) -> Vec<String> {
    let mut regions = named.to_vec();
    regions.extend(home.map(recorded_regions).unwrap_or_default());
    regions.sort();
    regions.dedup();
    regions
}

/// An existing image's answer, as a build gives it: its attributes as its tags keep them, and
/// its copies in [`regions_of`] it and `named`.
pub(crate) async fn answer_of(
    aws: &Aws,
    identity: &Identity,
    home: &Image,
    named: &[String],
) -> Result<Done, BuildError> {
    let copies = found(aws, identity, &home.id, &regions_of(Some(home), named)).await?;
    Ok(with_attributes(image_outcome(home), &copies))
}

/// Records on the image the regions its copies are in (so that a Delete or an Update finds them
/// even when its properties do not name them all): `regions`, or none.
pub(crate) async fn record_regions(
    aws: &Aws,
    home: &Image,
    regions: &[String],
) -> Result<(), AwsError> {
    let mut sorted = regions.to_vec();
    sorted.sort();
    sorted.dedup();
    let value = sorted.join(",");
    if home
        .tags
        .get(TAG_COPY_REGIONS)
        .map(String::as_str)
        .unwrap_or_default()
        == value
    {
        return Ok(());
    }
    if value.is_empty() {
        aws.untag(
            std::slice::from_ref(&home.id),
            &[TAG_COPY_REGIONS.to_owned()],
        )
        .await
    } else {
        let tags = BTreeMap::from([(TAG_COPY_REGIONS.to_owned(), value)]);
        aws.tag(std::slice::from_ref(&home.id), &tags).await
    }
}

/// Where the copies stand.
#[derive(Debug)]
pub(crate) enum CopiesPoll {
    /// Every copy is available: each region with its image.
    Ready(Vec<(String, Image)>),
    /// These regions' copies are still pending (or not listed yet: eventual consistency).
    Pending(Vec<String>),
}

/// Asks every region at once how its copy stands; a copy that failed fails the build.
pub(crate) async fn poll(aws: &Aws, copies: &Copies) -> Result<CopiesPoll, BuildError> {
    let asked = join_all(copies.iter().map(|(region, id)| async move {
        let answer = aws.in_region(region).describe_image(id).await;
        (region.clone(), id.clone(), answer)
    }))
    .await;
    let mut ready = Vec::new();
    let mut pending = Vec::new();
    for (region, id, answer) in asked {
        match answer.map_err(in_region(&region))? {
            Some(image) if image.state == ImageState::Available => ready.push((region, image)),
            None => pending.push(region),
            Some(image) if image.state == ImageState::Pending => pending.push(region),
            Some(image) => {
                return Err(BuildError::CopyFailed {
                    region,
                    image: id,
                    state: image.state,
                    reason: image.state_reason,
                });
            }
        }
    }
    Ok(if pending.is_empty() {
        CopiesPoll::Ready(ready)
    } else {
        CopiesPoll::Pending(pending)
    })
}

/// Brings each available copy to what the spec says of the image: IMDSv2, launch permissions and
/// deprecation (CopyImage copies none of them).
pub(crate) async fn distribute(
    aws: &Aws,
    ready: &[(String, Image)],
    spec: &AmiSpec,
) -> Result<(), BuildError> {
    for (region, copy) in ready {
        let there = aws.in_region(region);
        if spec.imds_support.is_some() && copy.imds_support.as_deref() != Some("v2.0") {
            there
                .require_imds_v2(&copy.id)
                .await
                .map_err(in_region(region))?;
        }
        crate::engine::sharing::distribute(&there, copy, spec)
            .await
            .map_err(in_region(region))?;
    }
    Ok(())
}

/// What an Update finds of the image's copies.
#[derive(Debug)]
pub(crate) enum Settled {
    /// Every region has its copy, retagged and distributed as the spec says.
    Complete(Copies),
    /// Some regions have no available copy yet: a build that starts at the copy makes them.
    Incomplete,
}

/// For an Update that keeps (or returns to) `home`: removes its copies in `dropped` (regions
/// the previous properties named and these do not), then brings the copies in `spec.regions` to
/// the image's tags, description and distribution. `home` was just retagged.
pub(crate) async fn settle(
    aws: &Aws,
    identity: &Identity,
    home: &Image,
    spec: &AmiSpec,
    dropped: &[String],
) -> Result<Settled, BuildError> {
    let removed = remove(aws, identity, &home.id, dropped).await;
    if let Some((what, error)) = removed.left.into_iter().next() {
        return Err(BuildError::CopyNotRemoved { what, error });
    }
    let wanted: Vec<String> = spec.regions.iter().map(|r| r.region.clone()).collect();
    let left: Vec<String> = recorded_regions(home)
        .into_iter()
        .filter(|r| !dropped.contains(r))
        .chain(wanted.iter().cloned())
        .collect();
    record_regions(aws, home, &left).await?;
    let mut copies = Copies::new();
    let mut ready = Vec::new();
    for wanted in &spec.regions {
        let region = wanted.region.as_str();
        let there = aws.in_region(region);
        let copy = find(&there, identity, &home.id)
            .await
            .map_err(in_region(region))?;
        let Some(copy) = copy.filter(|c| c.state == ImageState::Available) else {
            return Ok(Settled::Incomplete);
        };
        retag(&there, home, &copy)
            .await
            .map_err(in_region(region))?;
        copies.insert(region.to_owned(), copy.id.clone());
        ready.push((region.to_owned(), copy));
    }
    distribute(aws, &ready, spec).await?;
    Ok(Settled::Complete(copies))
}

/// The copy and its snapshots get the image's tags (but the identity of the request that made
/// the copy, and the home image's list of copy regions, which is the home image's alone), and its
/// description.
async fn retag(there: &Aws, home: &Image, copy: &Image) -> Result<(), AwsError> {
    let own = identity_keys();
    let wanted: BTreeMap<String, String> = home
        .tags
        .iter()
        .filter(|(k, _)| !own.contains(&k.as_str()) && k.as_str() != TAG_COPY_REGIONS)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let stale: Vec<String> = copy
        .tags
        .keys()
        .filter(|k| {
            !wanted.contains_key(*k)
                && (!k.starts_with(TAG_PREFIX) || is_image_tag(k) || k.as_str() == TAG_COPY_REGIONS)
                && !own.contains(&k.as_str())
        })
        .cloned()
        .collect();
    let mut resources = vec![copy.id.clone()];
    resources.extend(copy.snapshot_ids.iter().cloned());
    there.untag(&resources, &stale).await?;
    let changed: BTreeMap<String, String> = wanted
        .into_iter()
        .filter(|(k, v)| copy.tags.get(k) != Some(v))
        .collect();
    there.tag(&resources, &changed).await?;
    if let Some(description) = &home.description
        && copy.description.as_ref() != Some(description)
    {
        there.set_image_description(&copy.id, description).await?;
    }
    Ok(())
}

/// The tags a copy keeps as its own: who made it, and what it copies.
fn identity_keys() -> [&'static str; 4] {
    use crate::engine::tags::{TAG_LOGICAL, TAG_REQUEST, TAG_STACK};
    [TAG_STACK, TAG_LOGICAL, TAG_REQUEST, TAG_COPY_OF]
}

/// The product's tags that describe the image's content (and follow it onto its copies).
fn is_image_tag(key: &str) -> bool {
    use crate::engine::tags::TAG_OUTPUT_PREFIX;
    key.starts_with(TAG_OUTPUT_PREFIX)
}

/// What [`remove`] did and could not do.
#[derive(Debug, Default)]
pub(crate) struct Removed {
    pub done: Vec<String>,
    pub left: Vec<(String, AwsError)>,
}

/// Deregisters the copies of `home_id` in each of `regions` and deletes their snapshots.
pub(crate) async fn remove(
    aws: &Aws,
    identity: &Identity,
    home_id: &str,
    regions: &[String],
) -> Removed {
    let mut removed = Removed::default();
    let tags = copy_of(identity, home_id);
    for region in regions {
        let there = aws.in_region(region);
        let images = match there.images_tagged(&tags).await {
            Ok(images) => images,
            Err(error) => {
                removed
                    .left
                    .push((format!("the copies in {region} (not listed)"), error));
                continue;
            }
        };
        for image in images
            .iter()
            .filter(|i| i.state != ImageState::Deregistered)
        {
            match there.deregister_image(&image.id).await {
                Ok(()) => removed
                    .done
                    .push(format!("deregistered copy {} in {region}", image.id)),
                Err(error) => removed
                    .left
                    .push((format!("copy {} in {region}", image.id), error)),
            }
        }
        let mut snapshots: Vec<String> = images
            .iter()
            .flat_map(|i| i.snapshot_ids.iter().cloned())
            .collect();
        match there.snapshots_tagged(&tags).await {
            Ok(found) => snapshots.extend(found),
            Err(error) => removed.left.push((
                format!("the copies' snapshots in {region} (not listed)"),
                error,
            )),
        }
        snapshots.sort();
        snapshots.dedup();
        let until = tokio::time::Instant::now() + SNAPSHOT_RELEASE_GRACE;
        for snapshot in &snapshots {
            match delete_released_snapshot(&there, snapshot, until).await {
                Ok(()) => removed
                    .done
                    .push(format!("deleted snapshot {snapshot} in {region}")),
                Err(error) => removed
                    .left
                    .push((format!("snapshot {snapshot} in {region}"), error)),
            }
        }
    }
    removed
}

/// The copies of `home_id` found in `regions` (available or not).
pub(crate) async fn found(
    aws: &Aws,
    identity: &Identity,
    home_id: &str,
    regions: &[String],
) -> Result<Copies, BuildError> {
    let mut copies = Copies::new();
    for region in regions {
        if let Some(copy) = find(&aws.in_region(region), identity, home_id)
            .await
            .map_err(in_region(region))?
        {
            copies.insert(region.clone(), copy.id);
        }
    }
    Ok(copies)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_token_is_per_request_image_and_region_and_fits_ec2() {
        let identity = crate::engine::tags::tests::identity();
        let a = copy_token(&identity, "ami-1", "eu-west-1");
        assert_eq!(a, copy_token(&identity, "ami-1", "eu-west-1"));
        assert_ne!(a, copy_token(&identity, "ami-1", "eu-west-2"));
        assert_ne!(a, copy_token(&identity, "ami-2", "eu-west-1"));
        assert!(a.len() <= 64 && a.is_ascii(), "{a}");
    }
}
