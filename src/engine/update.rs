//! Update: retag in place when the content is unchanged, reuse an earlier image of the resource
//! (a rollback), or rebuild.

use std::collections::BTreeMap;

use crate::aws::{Aws, AwsError, Image, ImageState};
use crate::cfn::Identity;
use crate::engine::copies::Settled;
use crate::engine::create::{Build, Progress, Resolved, check_where_it_runs, resolve};
use crate::engine::failure::{BuildError, Failed, Failure, UpdateError};
use crate::engine::tags::{
    TAG_FINGERPRINT, TAG_PROPERTIES, TAG_SOURCE, image_outcome, outputs_of, owned_by,
    resource_tags, user_tags,
};
use crate::engine::{Context, Done};
use crate::spec::{AmiSpec, TAG_PREFIX, fingerprint};

/// What the previous request (OldResourceProperties) asked for, as far as an Update needs it.
#[derive(Debug, Clone)]
pub struct Previous {
    /// `fingerprint::of_request` of its properties; `"unparsable"` for invalid ones; `None` for
    /// none at all.
    pub request: Option<String>,
    /// It asked for all the same but the sharing, the deprecation and the parameters.
    pub only_distribution_changed: bool,
    /// The `SsmParameters` it named.
    pub parameters: crate::spec::ParameterNames,
    /// The `Regions` it named.
    pub regions: Vec<String>,
}

/// Update: apply a change of sharing or deprecation alone to the existing image; otherwise keep
/// the image when nothing that shapes its content changed, reuse an earlier image of this
/// resource with the wanted content (a rollback), or build a new one.
pub async fn update(
    cx: &Context<'_>,
    physical_id: &str,
    spec: AmiSpec,
    previous: Previous,
) -> Progress {
    let in_place = if previous.only_distribution_changed {
        distribute_in_place(cx, physical_id, &spec).await
    } else {
        None
    };
    let (plan, rolled_back) = match in_place {
        Some(answer) => (UpdatePlan::from(answer), false),
        None => match roll_back(cx, physical_id, &spec, previous.request.clone()).await {
            Some(rolled_back) => (UpdatePlan::from(rolled_back), true),
            None => (retag_or_reuse(cx, physical_id, &spec).await, false),
        },
    };
    match plan {
        UpdatePlan::Answer(outcome) => {
            let answered = Answered {
                image: &outcome.id,
                current: physical_id,
                rolled_back,
            };
            if let Err(error) =
                settle_parameters(cx.aws, answered, &spec, &previous.parameters.home).await
            {
                return update_failed(error);
            }
            settle_copies(cx, outcome, physical_id, spec, &previous).await
        }
        UpdatePlan::Fail(failed) => Progress::Failed(Box::new(failed)),
        UpdatePlan::Rebuild(resolved) => {
            let build = Build::new(spec, cx.identity).already_resolved(resolved);
            build.run(cx).await
        }
    }
}

/// The image an Update answers with, the image CloudFormation held before it (its physical id),
/// and whether the Update is a rollback to an earlier image.
struct Answered<'a> {
    image: &'a str,
    current: &'a str,
    rolled_back: bool,
}

fn update_failed(error: UpdateError) -> Progress {
    Progress::Failed(Box::new(Failed {
        failure: Failure::Update(error),
        cleanup: None,
    }))
}

/// The image an Update answers with has its copies in the `Regions` this request names: those
/// in regions the previous request named and this one does not are removed (only from the image
/// CloudFormation holds: another image's go with its Delete), the others retagged and
/// distributed like the image; regions without an available copy get one from a build that
/// starts at the copy.
async fn settle_copies(
    cx: &Context<'_>,
    outcome: Done,
    physical_id: &str,
    spec: AmiSpec,
    previous: &Previous,
) -> Progress {
    let (aws, identity) = (cx.aws, cx.identity);
    let image_id = outcome.id.clone();
    let dropped: Vec<String> = previous
        .regions
        .iter()
        .filter(|r| image_id == physical_id && !spec.regions.iter().any(|w| &w.region == *r))
        .cloned()
        .collect();
    if spec.regions.is_empty()
        && dropped.is_empty()
        && previous.parameters.copies.is_empty()
        && spec.tests.is_none()
    {
        return Progress::Finished(outcome);
    }
    let copies_failed = |error: BuildError| {
        update_failed(UpdateError::Copies {
            image: image_id.clone(),
            error,
        })
    };
    let image = match aws.describe_image(&image_id).await {
        Ok(Some(image)) => image,
        Ok(None) => {
            return copies_failed(BuildError::ImageFailed {
                image: image_id.clone(),
                state: "gone".into(),
                reason: Some("no longer listed".into()),
            });
        }
        Err(error) => return copies_failed(error.into()),
    };
    // And the regions the image records copies in that these properties do not name (it may be
    // an image a rollback or reuse returned to).
    let mut dropped = dropped;
    dropped.extend(
        crate::engine::copies::recorded_regions(&image)
            .into_iter()
            .filter(|r| !spec.regions.iter().any(|w| &w.region == r)),
    );
    dropped.sort();
    dropped.dedup();
    // Parameters in other regions that this request no longer names go first (those of a
    // dropped region too, before its copy): only if they still hold the copy.
    let unnamed: BTreeMap<String, Vec<String>> = previous
        .parameters
        .copies
        .iter()
        .map(|(region, names)| {
            let kept = spec.copy_parameters.get(region);
            let gone = names
                .iter()
                .filter(|n| kept.is_none_or(|k| !k.contains(n)))
                .cloned()
                .collect();
            (region.clone(), gone)
        })
        .collect();
    let regions: Vec<String> = unnamed.keys().cloned().collect();
    let before = match crate::engine::copies::found(aws, identity, &image.id, &regions).await {
        Ok(before) => before,
        Err(error) => return copies_failed(error),
    };
    if let Err(error) = crate::engine::publish::publish_copies(aws, &before, &unnamed, false).await
    {
        return copies_failed(error);
    }
    // `Tests` the image has not passed (they changed, or it was never tested): it is tested
    // again on a test instance launched from it, whatever else changed; a rollback's or a
    // reuse's image passed its own already.
    let retest = spec
        .tests
        .as_ref()
        .is_some_and(|tests| !crate::engine::tags::passed(&image, tests));
    match crate::engine::copies::settle(aws, identity, &image, &spec, &dropped).await {
        Ok(Settled::Complete(_)) if retest => {
            tracing::info!(image_id = %image.id, "Tests the image has not passed: testing it again");
            Build::distribute_existing(spec, identity, &image, crate::engine::Phase::LaunchTest)
                .run(cx)
                .await
        }
        Ok(Settled::Complete(copies)) => {
            if let Err(error) =
                crate::engine::publish::publish_copies(aws, &copies, &spec.copy_parameters, true)
                    .await
            {
                return copies_failed(error);
            }
            Progress::Finished(crate::engine::copies::with_attributes(outcome, &copies))
        }
        Ok(Settled::Incomplete) => {
            tracing::info!(image_id = %image.id, "copies missing in some Regions: copying");
            let start = if retest {
                crate::engine::Phase::LaunchTest
            } else {
                crate::engine::Phase::Copy
            };
            Build::distribute_existing(spec, identity, &image, start)
                .run(cx)
                .await
        }
        Err(error) => copies_failed(error),
    }
}

/// What an Update comes to before any build.
enum UpdatePlan {
    /// Retagged in place, or reused an earlier image: answer now.
    Answer(Done),
    /// Could not find out what to do, or do it: nothing was built, nothing to clean up.
    Fail(Failed),
    /// The content changed: build, from the source already resolved here.
    Rebuild(Resolved),
}

impl From<Result<Done, UpdateError>> for UpdatePlan {
    fn from(answer: Result<Done, UpdateError>) -> Self {
        match answer {
            Ok(outcome) => UpdatePlan::Answer(outcome),
            Err(error) => UpdatePlan::Fail(Failed {
                failure: Failure::Update(error),
                cleanup: None,
            }),
        }
    }
}

/// An Update back to properties this resource already built an image from, while the previous
/// request wanted other content: CloudFormation rolling back (after a failed update, or after
/// another resource failed). The image built from exactly these properties is returned, as they
/// state it: the source parameter is not resolved again, so a release published meanwhile does
/// not turn the rollback into a rebuild (which could fail and leave the stack in
/// UPDATE_ROLLBACK_FAILED). `None`: not a rollback, or no such image left; the Update goes on.
async fn roll_back(
    cx: &Context<'_>,
    physical_id: &str,
    spec: &AmiSpec,
    old_request: Option<String>,
) -> Option<Result<Done, UpdateError>> {
    let (aws, identity) = (cx.aws, cx.identity);
    let wanted = fingerprint::of_request(spec);
    if old_request.is_none_or(|old| old == wanted) {
        return None;
    }
    let mut available = match built_from(aws, identity, wanted).await {
        Ok(images) => images,
        Err(error) => return Some(Err(UpdateError::RollbackSearch(error))),
    };
    // The current image first, if it is one of them (a rollback after this resource's own
    // failed update keeps it); then the newest: the same properties may have built several
    // images (a source parameter or a container image tag that moved between builds), and the
    // newest is the one the stack last had.
    available.sort_by_key(|i| (i.id != physical_id, std::cmp::Reverse(i.created)));
    let image = available.into_iter().next()?;
    tracing::info!(image_id = %image.id, "rolling back to the image built from these properties");
    Some(match retag(aws, &image, spec).await {
        Ok(()) => Ok(image_outcome(&image)),
        Err(error) => Err(UpdateError::RollbackRetag {
            image: image.id,
            error,
        }),
    })
}

/// The resource's available images built from (or last retagged to) the properties whose
/// [`fingerprint::of_request`] is `wanted`: their `ecs-ami:properties` tag.
pub async fn built_from(
    aws: &Aws,
    identity: &Identity,
    wanted: String,
) -> Result<Vec<Image>, AwsError> {
    let mut tags = resource_tags(identity);
    tags.insert(TAG_PROPERTIES.into(), wanted);
    let images = aws.images_tagged(&tags).await?;
    Ok(images
        .into_iter()
        .filter(|i| i.state == ImageState::Available)
        .collect())
}

/// The image an Update answers with is the one its `SsmParameters` hold. Those the previous
/// request named and this one does not are removed if they hold that image; in a rollback, those
/// holding the request's current image (the rebuild it rolls back from, which published them)
/// are put back from their history. After a forward rebuild or reuse, those left holding the old
/// image go with CloudFormation's Delete of it.
async fn settle_parameters(
    aws: &Aws,
    Answered {
        image,
        current,
        rolled_back,
    }: Answered<'_>,
    spec: &AmiSpec,
    previous: &[String],
) -> Result<(), UpdateError> {
    crate::engine::publish::publish(aws, image, &spec.ssm_parameters)
        .await
        .map_err(|error| UpdateError::Publish {
            image: image.to_owned(),
            error,
        })?;
    let dropped: Vec<String> = previous
        .iter()
        .filter(|name| !spec.ssm_parameters.contains(name))
        .cloned()
        .collect();
    crate::engine::publish::unpublish(aws, image, &dropped)
        .await
        .map_err(|error| UpdateError::Unpublish {
            image: image.to_owned(),
            error,
        })?;
    if rolled_back && current != image && crate::spec::is_ami_id(current) {
        // Logged, never failing the rollback: CloudFormation's Delete of that image removes
        // what is left.
        crate::engine::publish::put_back_all(aws, current, &dropped).await;
    }
    Ok(())
}

/// Only the sharing or the deprecation changed (or nothing at all: a new ServiceToken): applied
/// to the current image as it is, without resolving the source, so that such a change never
/// rebuilds, even when the source has a newer release. `None`: the current image is not this
/// resource's available AMI; the Update goes on as any other.
async fn distribute_in_place(
    cx: &Context<'_>,
    physical_id: &str,
    spec: &AmiSpec,
) -> Option<Result<Done, UpdateError>> {
    let (aws, identity) = (cx.aws, cx.identity);
    if !crate::spec::is_ami_id(physical_id) {
        return None;
    }
    let image = match aws.describe_image(physical_id).await {
        Ok(image) => image?,
        Err(error) => return Some(Err(UpdateError::ReadCurrent(error))),
    };
    // The image must be the one built for (or last retagged to) these properties as written:
    // not one a rebuild made for other content that this request would roll back from.
    // (Images built before that tag existed have none: taken as they are.)
    let properties = image.tags.get(TAG_PROPERTIES);
    if !owned_by(&image, identity)
        || image.state != ImageState::Available
        || properties.is_some_and(|p| *p != fingerprint::of_request(spec))
    {
        return None;
    }
    tracing::info!(image_id = %image.id, "only sharing or deprecation changed: applied in place");
    Some(match retag(aws, &image, spec).await {
        Ok(()) => Ok(image_outcome(&image)),
        Err(error) => Err(UpdateError::Retag {
            image: image.id,
            error,
        }),
    })
}

/// Decides the Update: retag in place, reuse an earlier image of this resource (a rollback), or
/// rebuild.
async fn retag_or_reuse(cx: &Context<'_>, physical_id: &str, spec: &AmiSpec) -> UpdatePlan {
    let (aws, identity) = (cx.aws, cx.identity);
    let resolved = match resolve(aws, spec, identity).await {
        Ok(resolved) => resolved,
        Err(error) => {
            return UpdatePlan::Fail(Failed {
                failure: Failure::In {
                    stage: crate::engine::Phase::Resolve.name(),
                    error,
                },
                cleanup: None,
            });
        }
    };
    let current = if crate::spec::is_ami_id(physical_id) {
        match aws.describe_image(physical_id).await {
            Ok(image) => image,
            Err(error) => return Err(UpdateError::ReadCurrent(error)).into(),
        }
    } else {
        None
    };
    if let Some(image) =
        current.filter(|i| owned_by(i, identity) && i.state == ImageState::Available)
        && image.tags.get(TAG_FINGERPRINT) == Some(&resolved.fingerprint)
    {
        return UpdatePlan::from(match retag(aws, &image, spec).await {
            Ok(()) => {
                tracing::info!(image_id = %image.id, "content unchanged: tags and description updated in place");
                let refreshed = aws
                    .describe_image(&image.id)
                    .await
                    .ok()
                    .flatten()
                    .unwrap_or(image);
                Ok(image_outcome(&refreshed))
            }
            Err(error) => Err(UpdateError::Retag {
                image: physical_id.to_owned(),
                error,
            }),
        });
    }
    let mut wanted = resource_tags(identity);
    wanted.insert(TAG_FINGERPRINT.into(), resolved.fingerprint.clone());
    match aws.images_tagged(&wanted).await {
        Ok(images) => {
            if let Some(image) = images
                .into_iter()
                .find(|i| i.state == ImageState::Available)
            {
                tracing::info!(image_id = %image.id, "an earlier image of this resource has the wanted content: reusing it");
                if let Err(error) = retag(aws, &image, spec).await {
                    let image = image.id;
                    return Err(UpdateError::RetagReused { image, error }).into();
                }
                return UpdatePlan::Answer(image_outcome(&image));
            }
        }
        Err(error) => return Err(UpdateError::SearchEarlier(error)).into(),
    }
    // A rebuild launches: what EC2 would refuse (the instance type where it runs, the subnet and
    // security groups) is found first, as a Create finds it, naming the property.
    if let Err(error) = check_where_it_runs(aws, spec, &resolved).await {
        return UpdatePlan::Fail(Failed {
            failure: Failure::In {
                stage: crate::engine::Phase::Resolve.name(),
                error,
            },
            cleanup: None,
        });
    }
    UpdatePlan::Rebuild(resolved)
}

/// Bring the image's and its snapshots' user tags, description, launch permissions and
/// deprecation to what the spec says.
async fn retag(aws: &Aws, image: &Image, spec: &AmiSpec) -> Result<(), AwsError> {
    let mut resources = vec![image.id.clone()];
    resources.extend(image.snapshot_ids.iter().cloned());
    let source = image.tags.get(TAG_SOURCE).map(String::as_str);
    let mut wanted = user_tags(spec, &outputs_of(image), source.unwrap_or_default());
    // The image now stands for these properties: a later rollback looks them up, and a later
    // return to the properties it was first built from must not find it (it may be an older
    // release than they would resolve to now).
    wanted.insert(TAG_PROPERTIES.into(), fingerprint::of_request(spec));
    let stale: Vec<String> = image
        .tags
        .keys()
        .filter(|k| !k.starts_with(TAG_PREFIX) && !wanted.contains_key(*k))
        .cloned()
        .collect();
    aws.untag(&resources, &stale).await?;
    aws.tag(&resources, &wanted).await?;
    if let Some(description) = &spec.ami_description
        && image.description.as_ref() != Some(description)
    {
        aws.set_image_description(&image.id, description).await?;
    }
    crate::engine::sharing::distribute(aws, image, spec).await
}
