//! A request's operation: its properties validated first, builds CloudFormation gave up on
//! stopped, then Create, Update or Delete.

use std::time::Duration;

use crate::aws::Aws;
use crate::cfn::{self, Operation, Outcome, Request};
use crate::engine::{self, BuildState, Cleanup, Leftovers, Progress, Timing};
use crate::spec::AmiSpec;

use super::deliveries::note_cancelled_creates;
use super::{Turn, failure_physical_id, turn_of};
use crate::engine::Failed;

pub(super) async fn operate(
    request: Request,
    state: Option<BuildState>,
    aws: Aws,
    timing: Timing,
) -> Turn {
    // The properties first: a request refused for them calls no AWS at all.
    let spec = match validated(&request, aws.region().as_deref()) {
        Ok(spec) => spec,
        Err(refused) => return refused,
    };
    note_cancelled_creates(&request, &aws).await;
    let superseded = match supersede_abandoned(&request, state.is_some(), &aws, &timing).await {
        Ok(superseded) => superseded,
        Err(failed) => return failed,
    };
    // The edge: a result becomes its answer here, so that the report above is added to it.
    let progress = operate_alone(request.clone(), spec, state, &aws, timing).await;
    match turn_of(&request, progress) {
        Turn::Answer(outcome) if !superseded.stopped.is_empty() => {
            let reason = format!(
                "{}{}",
                outcome.reason.as_deref().unwrap_or_default(),
                superseded.report()
            );
            Turn::Answer(outcome.with_reason(reason.trim_start().to_owned()))
        }
        other => other,
    }
}

/// The spec of a Create or Update (none for a Delete), or the FAILED answer naming every
/// property problem.
pub(super) fn validated(request: &Request, home: Option<&str>) -> Result<Option<AmiSpec>, Turn> {
    if let Operation::Delete { .. } = request.operation {
        return Ok(None);
    }
    // template.yaml passes its ImageParameterPrefix; without it (the local command line, the
    // tests) the role alone decides.
    let prefix = std::env::var("ECS_AMI_IMAGE_PARAMETER_PREFIX").ok();
    AmiSpec::parse(&request.properties)
        .and_then(|spec| match prefix.as_deref() {
            Some(prefix) if !prefix.is_empty() => {
                spec.check_parameter_prefix(prefix).map(|()| spec)
            }
            _ => Ok(spec),
        })
        .and_then(|spec| match home {
            Some(home) => spec.check_regions(home),
            None => Ok(spec),
        })
        // template.yaml passes its AmiCopyRegions (possibly none); without it the role decides.
        .and_then(|spec| match std::env::var("ECS_AMI_COPY_REGIONS") {
            Ok(list) => {
                let allowed: Vec<&str> = list.split(',').filter(|r| !r.is_empty()).collect();
                spec.check_copy_regions(&allowed).map(|()| spec)
            }
            Err(_) => Ok(spec),
        })
        // template.yaml passes its ContainerImageRepositories and ReadTaskDefinitions; without
        // them the roles decide.
        .and_then(
            |spec| match std::env::var("ECS_AMI_CONTAINER_IMAGE_REPOSITORIES") {
                Ok(list) => {
                    let repositories: Vec<&str> =
                        list.split(',').filter(|r| !r.is_empty()).collect();
                    let read =
                        std::env::var("ECS_AMI_READ_TASK_DEFINITIONS").is_ok_and(|v| v == "true");
                    spec.check_container_image_access(&repositories, read)
                        .map(|()| spec)
                }
                Err(_) => Ok(spec),
            },
        )
        .and_then(|spec| match &request.operation {
            Operation::Update { old_properties, .. } => match AmiSpec::parse(old_properties) {
                Ok(old) => spec.check_copy_keys(&old).map(|()| spec),
                Err(_) => Ok(spec),
            },
            _ => Ok(spec),
        })
        .map(Some)
        .map_err(|errors| {
            let unchanged = match &request.operation {
                Operation::Update { physical_id, .. } => {
                    format!("; the existing image {physical_id} is unchanged")
                }
                _ => String::new(),
            };
            Turn::Answer(Outcome::failed(
                failure_physical_id(request),
                format!("{errors}. Nothing was launched{unchanged}."),
            ))
        })
}

/// A request of the resource other than a Create or the Delete of a Create that failed (which
/// answered, so CloudFormation may already have sent a newer Create) first stops builds
/// CloudFormation gave up on ([`engine::supersede`]). A hand-over continues a request that did
/// this in its first invocation. `Err`: the FAILED answer.
async fn supersede_abandoned(
    request: &Request,
    resumed: bool,
    aws: &Aws,
    timing: &Timing,
) -> Result<engine::Superseded, Turn> {
    let failed =
        |reason: String| Turn::Answer(Outcome::failed(failure_physical_id(request), reason));
    let mut superseded = match &request.operation {
        _ if resumed => return Ok(engine::Superseded::default()),
        Operation::Delete { physical_id } if cfn::is_failed_create_physical_id(physical_id) => {
            return Ok(engine::Superseded::default());
        }
        Operation::Create => return Ok(engine::Superseded::default()),
        _ => engine::supersede(
            aws,
            &request.identity,
            (current_image(request), &distributed_by(request, aws)),
            timing,
        )
        .await
        .map_err(|error| {
            failed(format!(
                "could not look for builds of this resource CloudFormation gave up on: {error}"
            ))
        })?,
    };
    // Instances earlier failed requests kept for debugging go now, but after CloudFormation's
    // rollback of the failed request itself (its previous properties are the failed ones).
    let rollback_of = match &request.operation {
        Operation::Update { old_properties, .. } => Some(
            crate::spec::fingerprint::of_properties_as_sent(old_properties),
        ),
        // A long build's resource that builds, deleted by the rollback of the Create whose build
        // signalled FAILURE (it had answered CloudFormation SUCCESS at its first hand-over): the
        // failed request's properties are the Delete's own.
        Operation::Delete { physical_id }
            if super::long_build::is_build_physical_id(physical_id) =>
        {
            Some(crate::spec::fingerprint::of_properties_as_sent(
                &request.properties,
            ))
        }
        _ => None,
    };
    // The deployment's schedule ends them on time whatever happens here: a failure to look or
    // to terminate is said, and fails nothing.
    match engine::kept::end_for_request(aws, &request.identity, rollback_of.as_deref()).await {
        Ok(ended) => superseded.stopped.extend(ended.sentences()),
        Err(error) => superseded.stopped.push(format!(
            "Instances of this resource kept for debugging could not be looked for ({error}); the deployment's schedule terminates them on time"
        )),
    }
    // A Delete that leaves something fails, so that CloudFormation's retry finds it again; an
    // Update (a rollback) goes on, naming it, rather than leaving the stack in
    // UPDATE_ROLLBACK_FAILED.
    if superseded.left_something && matches!(request.operation, Operation::Delete { .. }) {
        return Err(failed(format!(
            "A build of this resource that CloudFormation gave up on could not be removed completely; retry to try again.{}",
            superseded.report()
        )));
    }
    Ok(superseded)
}

/// The AMI CloudFormation holds for the resource, if the request names one: never removed as a
/// leftover of another request's build.
pub(super) fn current_image(request: &Request) -> Option<&str> {
    match &request.operation {
        Operation::Update { physical_id, .. } | Operation::Delete { physical_id }
            if crate::spec::is_ami_id(physical_id) =>
        {
            Some(physical_id)
        }
        _ => None,
    }
}

/// The request's own operation, once no other build of the resource is in flight; `spec`: its
/// validated properties (none for a Delete).
pub(super) async fn operate_alone(
    request: Request,
    spec: Option<AmiSpec>,
    state: Option<BuildState>,
    aws: &Aws,
    timing: Timing,
) -> Progress {
    let (aws, identity) = (aws.clone(), &request.identity);
    let spec = match (&request.operation, spec) {
        (Operation::Delete { physical_id }, _) => {
            let parameters =
                crate::spec::ssm_parameter_names(&request.properties, aws.region().as_deref());
            let regions = crate::spec::region_names(&request.properties);
            let distributed = (&parameters, regions.as_slice());
            if super::long_build::is_build_physical_id(physical_id) {
                // The resource that builds a long build: the image is the other resource's,
                // and goes with its Delete; a build in flight was stopped above.
                return Progress::Finished(engine::Done::new(physical_id, Default::default()).with_note(format!(
                    "{physical_id} builds the image of {}, which holds it: nothing to delete here.",
                    identity.logical_id
                )));
            }
            return match engine::delete(&aws, identity, physical_id, distributed).await {
                Ok(outcome) => Progress::Finished(outcome),
                Err(error) => Progress::Failed(Box::new(Failed {
                    failure: error.into(),
                    cleanup: None,
                })),
            };
        }
        (_, Some(spec)) => spec,
        (_, None) => unreachable!("a Create or Update has its properties validated"),
    };
    // The resource that holds a long build's image answers with the image its wait condition's
    // signal names, building nothing.
    if let crate::spec::Answering::Signalled { image_id, .. } = &spec.answering {
        let regions: Vec<String> = spec.regions.iter().map(|r| r.region.clone()).collect();
        return engine::signalled_image(&aws, identity, image_id, &regions).await;
    }
    let cx = engine::Context::new(&aws, identity, &timing);
    match (&request.operation, state) {
        (Operation::Create, None) => engine::create(&cx, spec).await,
        (
            Operation::Update {
                physical_id,
                old_properties,
            },
            None,
        ) => {
            // What the previous request asked for (a rollback's are the failed update's).
            // Properties that do not parse (a rollback after invalid ones) asked for something
            // else; none at all (not from CloudFormation) ask for nothing.
            let old = AmiSpec::parse(old_properties);
            let previous = engine::Previous {
                request: match &old {
                    Ok(old) => Some(crate::spec::fingerprint::of_request(old)),
                    Err(_) if old_properties.as_object().is_some_and(|o| !o.is_empty()) => {
                        Some("unparsable".to_owned())
                    }
                    Err(_) => None,
                },
                only_distribution_changed: old
                    .is_ok_and(|old| spec.differs_only_in_distribution(&old)),
                parameters: crate::spec::ssm_parameter_names(
                    old_properties,
                    aws.region().as_deref(),
                ),
                regions: crate::spec::region_names(old_properties),
            };
            engine::update(&cx, physical_id, spec, previous).await
        }
        (Operation::Create | Operation::Update { .. }, Some(state)) => {
            engine::Build::resume(spec, state).run(&cx).await
        }
        (Operation::Delete { .. }, _) => unreachable!("Delete returned above"),
    }
}

/// Deletes every generation of the request's build lease, whoever holds it: the build is over.
pub(super) async fn release_lease_of(aws: &Aws, identity: &cfn::Identity) {
    if let Err(error) = engine::lease::release_all(aws, &engine::lease::path(identity)).await {
        tracing::warn!(problem = %error, "the build lease could not be deleted; it expires by itself");
    }
}

/// Ends a request's build that no invocation of it will carry on: removes what its tags find
/// ([`clean_up_by_tags`]), then its lease. Returns the cleanup's report.
pub(super) async fn remove_build(aws: &Aws, request: &Request, retries_for: Duration) -> Cleanup {
    let report = clean_up_by_tags(aws, request, retries_for).await;
    release_lease_of(aws, &request.identity).await;
    report
}

/// Removes what the request's tags find, retrying transient errors for at most `retries_for`.
pub(super) async fn clean_up_by_tags(
    aws: &Aws,
    request: &Request,
    retries_for: Duration,
) -> Cleanup {
    engine::RETRIES_UNTIL
        .scope(
            tokio::time::Instant::now() + retries_for,
            engine::clean_up(
                aws,
                &request.identity,
                &distributed_by(request, aws),
                Timing::default().not_found_grace,
                None,
            ),
        )
        .await
}

/// Where a build of the resource may have distributed its image, as far as the request tells:
/// the `Regions` its properties (and an Update's previous ones) name, searched by tags too, and
/// the `SsmParameters` to put back before an image found there is removed. For a cleanup that
/// knows nothing but the request (a crash, a cancellation, a build CloudFormation gave up on).
fn distributed_by(request: &Request, aws: &Aws) -> Leftovers {
    let home = aws.region();
    let mut regions = crate::spec::region_names(&request.properties);
    let mut parameters = crate::spec::ssm_parameter_names(&request.properties, home.as_deref());
    if let Operation::Update { old_properties, .. } = &request.operation {
        regions.extend(crate::spec::region_names(old_properties));
        let old = crate::spec::ssm_parameter_names(old_properties, home.as_deref());
        parameters.home.extend(old.home);
        for (region, names) in old.copies {
            parameters.copies.entry(region).or_default().extend(names);
        }
    }
    regions.sort();
    regions.dedup();
    parameters.home.sort();
    parameters.home.dedup();
    for names in parameters.copies.values_mut() {
        names.sort();
        names.dedup();
    }
    Leftovers {
        regions,
        parameters,
        ..Leftovers::default()
    }
}
