//! The cleanup every failed, cancelled or abandoned build ends with: terminate the builder,
//! deregister half-made images, delete their snapshots and detached volumes, found both from what
//! the build knows and from its request's tags; and the bounded retries of the calls that AWS's
//! eventual consistency makes fail for a while (NotFound after launch, InUse after deregister).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::aws::{Aws, AwsError, Code, Image, InstanceStateName};
use crate::cfn::Identity;
use crate::engine::tags::{TAG_REQUEST, identity_tags};
use crate::engine::time;
use crate::spec::ParameterNames;

/// Whether an instance launched at `launched_at_ms` (on the [clock](crate::engine::time::now_ms)) is younger than `window`.
pub(crate) fn launched_within(launched_at_ms: Option<u64>, window: Duration) -> bool {
    launched_at_ms
        .is_some_and(|at| u128::from(time::now_ms().saturating_sub(at)) < window.as_millis())
}

/// Why `terminate_builder` could not confirm that an instance (the builder or the test instance)
/// is terminated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotTerminated {
    /// EC2 answered NotFound all along: already gone, or not listed yet.
    #[error(
        "instance {instance} (EC2 answered NotFound for {} s: already gone, or not listed yet; not confirmed terminated)",
        .waited.as_secs()
    )]
    NotKnown { instance: String, waited: Duration },
    /// EC2 refused to terminate it.
    #[error("instance {instance} ({error})")]
    Refused { instance: String, error: AwsError },
}

/// Terminates the builder. EC2 answers `InvalidInstanceID.NotFound` for an instance it does not
/// know yet (eventual consistency), so NotFound is never taken for "terminated": the call is
/// repeated until EC2 accepts it or `grace` runs out, and then the builder is reported as not
/// confirmed terminated. (A terminated instance stays visible for about an hour, and terminating
/// it again succeeds.)
pub(crate) async fn terminate_builder(
    aws: &Aws,
    instance_id: &str,
    grace: Duration,
) -> Result<(), NotTerminated> {
    let (sent, waited) = retry_transient(
        grace,
        "EC2 does not know the builder yet: terminating again",
        AwsError::is_not_found,
        || aws.terminate_instance(instance_id),
    )
    .await;
    let instance = instance_id.to_owned();
    match sent {
        Ok(()) => Ok(()),
        // EC2 keeps a terminated instance visible for about an hour: a builder this request
        // made is never "long gone" by the time it is cleaned up.
        Err(error) if error.is_not_found() => Err(NotTerminated::NotKnown { instance, waited }),
        Err(error) => Err(NotTerminated::Refused { instance, error }),
    }
}

/// Repeats `call` while its error is `transient` (one that passes with time on AWS), pausing
/// 0.5 s, then twice as long each time up to 8 s, for at most `grace`, cut to what is left of
/// the invocation ([`RETRIES_UNTIL`]). Returns the last answer and how long it waited.
async fn retry_transient<F, Fut>(
    grace: Duration,
    retrying: &str,
    transient: impl Fn(&AwsError) -> bool,
    mut call: F,
) -> (Result<(), AwsError>, Duration)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), AwsError>>,
{
    let grace = within_invocation(grace);
    let mut waited = Duration::ZERO;
    let mut pause = Duration::from_millis(500);
    loop {
        match call().await {
            Err(error) if transient(&error) && waited < grace => {
                tracing::info!(problem = %error, "{retrying}");
                tokio::time::sleep(pause).await;
                waited += pause;
                pause = (pause * 2).min(Duration::from_secs(8));
            }
            other => return (other, waited),
        }
    }
}

/// How long `InvalidSnapshot.InUse` is retried after DeregisterImage, for all of an image's
/// snapshots together.
pub(crate) const SNAPSHOT_RELEASE_GRACE: Duration = Duration::from_secs(90);

tokio::task_local! {
    /// When the retries of cleanup must have stopped, so that CloudFormation is still answered
    /// within the invocation: set by the handler for each operation.
    pub static RETRIES_UNTIL: tokio::time::Instant;
}

/// `grace`, cut to what is left before [`RETRIES_UNTIL`] (none set: `grace`).
pub(crate) fn within_invocation(grace: Duration) -> Duration {
    RETRIES_UNTIL
        .try_with(|until| until.saturating_duration_since(tokio::time::Instant::now()))
        .map_or(grace, |left| grace.min(left))
}

/// Deletes a snapshot of an image just deregistered. For a while after DeregisterImage, EC2 may
/// still answer `InvalidSnapshot.InUse` for its snapshots: that answer is retried until `grace`
/// runs out, then reported with the last error.
pub(crate) async fn delete_released_snapshot(
    aws: &Aws,
    snapshot_id: &str,
    until: tokio::time::Instant,
) -> Result<(), AwsError> {
    retry_transient(
        until.saturating_duration_since(tokio::time::Instant::now()),
        "snapshot still in use by its deregistered image: retrying",
        |error| error.is(Code::SnapshotInUse),
        || aws.delete_snapshot(snapshot_id),
    )
    .await
    .0
}

/// What a failed build is known to have created. Cleanup also searches by the request's tags, so
/// it finds what a crash made it forget.
#[derive(Debug, Default, Clone)]
pub struct Leftovers {
    pub instance_id: Option<String>,
    /// When `instance_id` was launched, on the [clock](crate::engine::time::now_ms).
    pub launched_at_ms: Option<u64>,
    pub image_id: Option<String>,
    pub command_id: Option<String>,
    /// The other regions the build copies its image to (`Regions`): searched by the request's
    /// tags too.
    pub regions: Vec<String>,
    /// The copies the build made, by region: removed by id too (a listing by tags may not show
    /// a copy just asked for).
    pub copies: BTreeMap<String, String>,
    /// `SsmParameters` that may hold an image (or a copy) cleanup finds: put back before it is
    /// removed, so that nothing resolves to it (see `publish::put_back_all`).
    pub parameters: ParameterNames,
    /// The instance kept for debugging (`KeepFailedInstanceMinutes`): neither terminated nor
    /// its command cancelled.
    pub kept_instance: Option<String>,
}

/// Removes everything the request created (but the image `keep`, the resource's current one,
/// and its snapshots) and says what it removed and what it could not.
pub async fn clean_up(
    aws: &Aws,
    identity: &Identity,
    known: &Leftovers,
    not_found_grace: Duration,
    keep: Option<&str>,
) -> Cleanup {
    let tags = identity_tags(identity);
    let mut report = Cleanup {
        request_id: identity.request_id.clone(),
        ..Cleanup::default()
    };
    terminate_builders(aws, &tags, known, not_found_grace, &mut report).await;
    let released = deregister_images(
        aws,
        &tags,
        (known, &known.parameters.home),
        keep,
        &mut report,
    )
    .await;
    delete_snapshots(aws, &tags, released, &mut report).await;
    delete_volumes(aws, &tags, &mut report).await;
    for region in &known.regions {
        let there = aws.in_region(region);
        let mut found = Cleanup::default();
        let names = known
            .parameters
            .copies
            .get(region)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let copy = Leftovers {
            image_id: known.copies.get(region).cloned(),
            ..Leftovers::default()
        };
        let mut released = deregister_images(&there, &tags, (&copy, names), None, &mut found).await;
        if let Some(id) = &copy.image_id
            && !found.removed.iter().any(|r| &r.id == id)
        {
            // Asked for moments ago, EC2 may not know it yet: NotFound is retried for a while.
            let (sent, _) = retry_transient(
                not_found_grace,
                "EC2 does not know the copy yet: deregistering again",
                AwsError::is_not_found,
                || there.deregister_new_image(id),
            )
            .await;
            match sent {
                Ok(()) => found.removed.push(Resource::new(ResourceKind::Image, id)),
                Err(error) if error.is_not_found() => {}
                Err(error) => found
                    .remaining
                    .push((Resource::new(ResourceKind::Image, id), error)),
            }
            // Its snapshots, if it had any yet, carry the request's tags.
            released.snapshots.clear();
        }
        delete_snapshots(&there, &tags, released, &mut found).await;
        report.absorb(found, region);
    }
    report
}

/// What cleanup deals with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceKind {
    Builder,
    Image,
    Snapshot,
    Volume,
}

/// One resource cleanup dealt with, and the region it is in (none: the function's own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    pub kind: ResourceKind,
    pub id: String,
    pub region: Option<String>,
}

impl Resource {
    fn new(kind: ResourceKind, id: &str) -> Resource {
        Resource {
            kind,
            id: id.to_owned(),
            region: None,
        }
    }
    fn in_region(&self) -> String {
        in_region(&self.region)
    }
}

/// ` in REGION` for a region other than the function's own; nothing for its own.
fn in_region(region: &Option<String>) -> String {
    region
        .as_ref()
        .map(|region| format!(" in {region}"))
        .unwrap_or_default()
}

/// What cleanup could not find out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unknown {
    /// The resources of a kind the request's tags would find could not be listed.
    NotListed {
        kind: ResourceKind,
        region: Option<String>,
        error: AwsError,
    },
    /// An instance EC2 did not confirm terminating.
    NotTerminated(NotTerminated),
}

/// What cleanup removed, what it could not (and why), and what it could not find out: a value
/// until a Reason is written (its `Display`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cleanup {
    /// The request whose resources these are: what is left carries its id in a tag.
    pub request_id: String,
    pub removed: Vec<Resource>,
    pub remaining: Vec<(Resource, AwsError)>,
    pub unknown: Vec<Unknown>,
    /// The instance a failed build was asked to keep for debugging, and whether it was.
    pub keeping: Option<Box<crate::engine::kept::Keeping>>,
}

impl Cleanup {
    /// Nothing was removed and nothing is left or unknown.
    pub fn found_nothing(&self) -> bool {
        self.removed.is_empty() && self.is_complete()
    }
    /// Nothing is left and nothing unknown.
    pub fn is_complete(&self) -> bool {
        self.remaining.is_empty() && self.unknown.is_empty()
    }
    /// `other`, found in `region`, added to this.
    fn absorb(&mut self, other: Cleanup, region: &str) {
        let here = |mut item: Resource| {
            item.region = Some(region.to_owned());
            item
        };
        self.removed.extend(other.removed.into_iter().map(here));
        self.remaining
            .extend(other.remaining.into_iter().map(|(item, e)| (here(item), e)));
        self.unknown
            .extend(other.unknown.into_iter().map(|unknown| match unknown {
                Unknown::NotListed { kind, error, .. } => Unknown::NotListed {
                    kind,
                    region: Some(region.to_owned()),
                    error,
                },
                other => other,
            }));
    }
    /// What was removed, as a Reason or a log says it: `Cleanup: terminated builder i-1, ...`.
    pub fn removed_sentence(&self) -> String {
        if self.removed.is_empty() {
            let kept = self
                .keeping
                .as_ref()
                .is_some_and(|k| k.kept_instance().is_some());
            return if kept { NOTHING_ELSE } else { NOTHING_CREATED }.to_owned();
        }
        let removed: Vec<String> = self
            .removed
            .iter()
            .map(|item| {
                let what = match item.kind {
                    ResourceKind::Builder => "terminated builder",
                    ResourceKind::Image => "deregistered half-made image",
                    ResourceKind::Snapshot => "deleted snapshot",
                    ResourceKind::Volume => "deleted volume",
                };
                format!("{what} {}{}", item.id, item.in_region())
            })
            .collect();
        format!("Cleanup: {}", removed.join(", "))
    }
}

/// The whole report for a Reason: what was removed, then what is left, to be removed by hand,
/// with the tag that finds it.
impl std::fmt::Display for Cleanup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.removed_sentence())?;
        let mut left: Vec<String> = self
            .remaining
            .iter()
            .map(|(item, error)| {
                let what = match item.kind {
                    ResourceKind::Builder => "builder",
                    ResourceKind::Image => "image",
                    ResourceKind::Snapshot => "snapshot",
                    ResourceKind::Volume => "volume",
                };
                format!("{what} {} ({error}){}", item.id, item.in_region())
            })
            .collect();
        left.extend(self.unknown.iter().map(|unknown| match unknown {
            Unknown::NotListed {
                kind,
                region,
                error,
            } => {
                let what = match kind {
                    ResourceKind::Builder => "builder instances",
                    ResourceKind::Image => "images",
                    ResourceKind::Snapshot => "snapshots",
                    ResourceKind::Volume => "volumes",
                };
                format!("{what} could not be listed ({error}){}", in_region(region))
            }
            Unknown::NotTerminated(not) => not.to_string(),
        }));
        if !left.is_empty() {
            write!(
                f,
                ". NOT cleaned up, remove by hand (tagged {TAG_REQUEST}={}): {}",
                self.request_id,
                left.join(", ")
            )?;
        }
        if let Some(keeping) = &self.keeping {
            write!(f, ". {keeping}")?;
        }
        Ok(())
    }
}

const NOTHING_CREATED: &str = "Cleanup: nothing had been created";
const NOTHING_ELSE: &str = "Cleanup: nothing else had been created";

/// Each builder, known or found by its tags, with its command cancelled first.
async fn terminate_builders(
    aws: &Aws,
    tags: &BTreeMap<String, String>,
    known: &Leftovers,
    not_found_grace: Duration,
    report: &mut Cleanup,
) {
    // Each builder, with when it was launched where known.
    let mut instances: BTreeMap<String, Option<u64>> = known
        .instance_id
        .iter()
        .map(|id| (id.clone(), known.launched_at_ms))
        .collect();
    match aws.instances_tagged(tags).await {
        Ok(found) => {
            for instance in found
                .into_iter()
                .filter(|i| i.state != InstanceStateName::Terminated)
            {
                let launched = instance.launched_ms;
                let entry = instances.entry(instance.id).or_insert(launched);
                *entry = entry.or(launched);
            }
        }
        Err(error) => report.unknown.push(Unknown::NotListed {
            kind: ResourceKind::Builder,
            region: None,
            error,
        }),
    }
    if let Some(kept) = &known.kept_instance {
        instances.remove(kept);
    }
    if let (Some(command), Some(instance)) = (&known.command_id, &known.instance_id)
        && known.kept_instance.as_ref() != Some(instance)
    {
        aws.cancel_step(command, instance).await.ok();
    }
    for (instance, launched_at_ms) in &instances {
        // Only a builder launched moments ago may be unknown to EC2 yet: NotFound is retried
        // for it, and for no other.
        let grace = if launched_within(*launched_at_ms, not_found_grace) {
            not_found_grace
        } else {
            Duration::ZERO
        };
        match terminate_builder(aws, instance, grace).await {
            Ok(()) => report
                .removed
                .push(Resource::new(ResourceKind::Builder, instance)),
            Err(NotTerminated::Refused { instance, error }) => report
                .remaining
                .push((Resource::new(ResourceKind::Builder, &instance), error)),
            Err(not) => report.unknown.push(Unknown::NotTerminated(not)),
        }
    }
}

/// Deregisters the request's images but `keep`; returns the snapshots they released, less
/// those of `keep`.
async fn deregister_images(
    aws: &Aws,
    tags: &BTreeMap<String, String>,
    (known, parameters): (&Leftovers, &[String]),
    keep: Option<&str>,
    report: &mut Cleanup,
) -> Released {
    let mut images: Vec<Image> = Vec::new();
    match aws.images_tagged(tags).await {
        Ok(found) => images.extend(found),
        Err(error) => report.unknown.push(Unknown::NotListed {
            kind: ResourceKind::Image,
            region: None,
            error,
        }),
    }
    if let Some(id) = &known.image_id
        && !images.iter().any(|i| &i.id == id)
    {
        match aws.describe_image(id).await {
            Ok(Some(image)) => images.push(image),
            Ok(None) => {}
            Err(error) => report
                .remaining
                .push((Resource::new(ResourceKind::Image, id), error)),
        }
    }
    let mut released = Released {
        snapshots: Vec::new(),
        kept: images
            .iter()
            .filter(|i| Some(i.id.as_str()) == keep)
            .flat_map(|i| i.snapshot_ids.iter().cloned())
            .collect(),
    };
    images.retain(|i| Some(i.id.as_str()) != keep);
    for image in &images {
        if !parameters.is_empty() {
            crate::engine::publish::put_back_all(aws, &image.id, parameters).await;
        }
        match aws.deregister_image(&image.id).await {
            Ok(()) => {
                report
                    .removed
                    .push(Resource::new(ResourceKind::Image, &image.id));
                released
                    .snapshots
                    .extend(image.snapshot_ids.iter().cloned());
            }
            Err(error) => report
                .remaining
                .push((Resource::new(ResourceKind::Image, &image.id), error)),
        }
    }
    released
}

/// Snapshots of deregistered images, and those of the image kept (never deleted).
struct Released {
    snapshots: Vec<String>,
    kept: Vec<String>,
}

/// The released snapshots and those the request's tags find, but the kept image's.
async fn delete_snapshots(
    aws: &Aws,
    tags: &BTreeMap<String, String>,
    released: Released,
    report: &mut Cleanup,
) {
    let Released {
        mut snapshots,
        kept,
    } = released;
    match aws.snapshots_tagged(tags).await {
        Ok(found) => snapshots.extend(found),
        Err(error) => report.unknown.push(Unknown::NotListed {
            kind: ResourceKind::Snapshot,
            region: None,
            error,
        }),
    }
    snapshots.sort();
    snapshots.dedup();
    snapshots.retain(|snapshot| !kept.contains(snapshot));
    let until = tokio::time::Instant::now() + SNAPSHOT_RELEASE_GRACE;
    for snapshot in &snapshots {
        match delete_released_snapshot(aws, snapshot, until).await {
            Ok(()) => report
                .removed
                .push(Resource::new(ResourceKind::Snapshot, snapshot)),
            Err(error) => report
                .remaining
                .push((Resource::new(ResourceKind::Snapshot, snapshot), error)),
        }
    }
}

/// Volumes of the request's builders left detached (a data volume detached during the build).
async fn delete_volumes(aws: &Aws, tags: &BTreeMap<String, String>, report: &mut Cleanup) {
    match aws.detached_volumes_tagged(tags).await {
        Ok(volumes) => {
            for volume in volumes {
                match aws.delete_volume(&volume).await {
                    Ok(()) => report
                        .removed
                        .push(Resource::new(ResourceKind::Volume, &volume)),
                    Err(error) => report
                        .remaining
                        .push((Resource::new(ResourceKind::Volume, &volume), error)),
                }
            }
        }
        Err(error) => report.unknown.push(Unknown::NotListed {
            kind: ResourceKind::Volume,
            region: None,
            error,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(operation: &'static str) -> AwsError {
        AwsError {
            operation,
            code: Some("UnauthorizedOperation".into()),
            message: "no".into(),
        }
    }

    #[test]
    fn a_cleanup_is_a_value_until_a_reason_is_written() {
        let mut home = Cleanup {
            request_id: "r-1".into(),
            ..Cleanup::default()
        };
        assert!(home.found_nothing());
        assert_eq!(home.to_string(), NOTHING_CREATED);
        home.removed
            .push(Resource::new(ResourceKind::Builder, "i-1"));
        home.unknown
            .push(Unknown::NotTerminated(NotTerminated::NotKnown {
                instance: "i-2".into(),
                waited: Duration::from_secs(30),
            }));
        let mut there = Cleanup::default();
        there
            .removed
            .push(Resource::new(ResourceKind::Image, "ami-1"));
        there.remaining.push((
            Resource::new(ResourceKind::Snapshot, "snap-1"),
            refused("ec2:DeleteSnapshot"),
        ));
        there.unknown.push(Unknown::NotListed {
            kind: ResourceKind::Volume,
            region: None,
            error: refused("ec2:DescribeVolumes"),
        });
        home.absorb(there, "eu-west-1");
        assert!(!home.is_complete() && !home.found_nothing());
        assert_eq!(home.removed[1].region.as_deref(), Some("eu-west-1"));
        assert_eq!(
            home.to_string(),
            "Cleanup: terminated builder i-1, deregistered half-made image ami-1 in eu-west-1. \
             NOT cleaned up, remove by hand (tagged ecs-ami:request-id=r-1): \
             snapshot snap-1 (ec2:DeleteSnapshot failed: UnauthorizedOperation: no) in eu-west-1, \
             instance i-2 (EC2 answered NotFound for 30 s: already gone, or not listed yet; not confirmed terminated), \
             volumes could not be listed (ec2:DescribeVolumes failed: UnauthorizedOperation: no) in eu-west-1"
        );
    }

    #[test]
    fn a_kept_instance_ends_the_report_and_is_not_called_nothing() {
        use crate::engine::kept::{Keeping, Kept};
        let kept = Keeping::Kept(Kept {
            instance: "i-1".into(),
            what: "builder",
            until: "2026-12-07T16:00:00Z".into(),
            minutes: 30,
        });
        let mut report = Cleanup {
            request_id: "r-1".into(),
            keeping: Some(Box::new(kept.clone())),
            ..Cleanup::default()
        };
        assert_eq!(
            report.to_string(),
            format!("Cleanup: nothing else had been created. {kept}")
        );
        report
            .removed
            .push(Resource::new(ResourceKind::Image, "ami-1"));
        assert_eq!(
            report.to_string(),
            format!("Cleanup: deregistered half-made image ami-1. {kept}")
        );
        // Not kept after all: terminated with the rest, and said so.
        let not = Keeping::NotKept {
            instance: "i-1".into(),
            what: "builder",
            why: format!("tagging it failed ({})", refused("ec2:CreateTags")),
        };
        report.removed = vec![Resource::new(ResourceKind::Builder, "i-1")];
        report.keeping = Some(Box::new(not));
        assert!(report.to_string().starts_with(
            "Cleanup: terminated builder i-1. The builder i-1 was not kept for debugging"
        ));
    }
}
