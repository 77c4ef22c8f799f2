//! The cleanup every failed, cancelled or abandoned build ends with: terminate the builder,
//! deregister half-made images, delete their snapshots and detached volumes, found both from what
//! the build knows and from its request's tags; and the bounded retries of the calls that AWS's
//! eventual consistency makes fail for a while (NotFound after launch, InUse after deregister).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::aws::{Aws, AwsError, Image};
use crate::cfn::Identity;
use crate::engine::clock;
use crate::engine::tags::{TAG_REQUEST, identity_tags};
use crate::spec::ParameterNames;

/// Whether an instance launched at `launched_at_ms` (on the [`clock`]) is younger than `window`.
pub(crate) fn launched_within(launched_at_ms: Option<u64>, window: Duration) -> bool {
    launched_at_ms
        .is_some_and(|at| u128::from(clock::now_ms().saturating_sub(at)) < window.as_millis())
}

/// How [`terminate_builder`] says that EC2 answered NotFound.
pub(crate) const NOT_KNOWN: &str = "EC2 answered NotFound";

/// Terminates the builder. EC2 answers `InvalidInstanceID.NotFound` for an instance it does not
/// know yet (eventual consistency), so NotFound is never taken for "terminated": the call is
/// repeated until EC2 accepts it or `grace` runs out, and then the builder is reported as not
/// confirmed terminated. (A terminated instance stays visible for about an hour, and terminating
/// it again succeeds.)
pub(crate) async fn terminate_builder(
    aws: &Aws,
    instance_id: &str,
    grace: Duration,
) -> Result<(), String> {
    let (sent, waited) = retry_transient(
        grace,
        "EC2 does not know the builder yet: terminating again",
        AwsError::is_not_found,
        || aws.terminate_instance(instance_id),
    )
    .await;
    match sent {
        Ok(()) => Ok(()),
        // EC2 keeps a terminated instance visible for about an hour: a builder this request
        // made is never "long gone" by the time it is cleaned up.
        Err(error) if error.is_not_found() => Err(format!(
            "builder {instance_id} ({NOT_KNOWN} for {} s: already gone, or not listed yet; not confirmed terminated)",
            waited.as_secs()
        )),
        Err(error) => Err(format!("builder {instance_id} ({error})")),
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
        |error| error.code.as_deref() == Some("InvalidSnapshot.InUse"),
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
    /// When `instance_id` was launched, on the [`clock`].
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
}

pub(crate) const NOTHING_CREATED: &str = "Cleanup: nothing had been created";

/// Removes everything the request created and returns a sentence saying what was removed and what,
/// if anything, could not be.
pub async fn clean_up(
    aws: &Aws,
    identity: &Identity,
    known: &Leftovers,
    not_found_grace: Duration,
) -> String {
    clean_up_all(aws, identity, known, not_found_grace, None)
        .await
        .0
}

/// [`clean_up`], sparing the image `keep` (the resource's current one) and its snapshots, and
/// whether everything else could be removed.
pub(crate) async fn clean_up_all(
    aws: &Aws,
    identity: &Identity,
    known: &Leftovers,
    not_found_grace: Duration,
    keep: Option<&str>,
) -> (String, bool) {
    let tags = identity_tags(identity);
    let mut report = Report::default();
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
        let mut found = Report::default();
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
            && !found.done.iter().any(|d| d.ends_with(id.as_str()))
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
                Ok(()) => found
                    .done
                    .push(format!("deregistered half-made image {id}")),
                Err(error) if error.is_not_found() => {}
                Err(error) => found.left.push(format!("image {id} ({error})")),
            }
            // Its snapshots, if it had any yet, carry the request's tags.
            released.snapshots.clear();
        }
        delete_snapshots(&there, &tags, released, &mut found).await;
        report
            .done
            .extend(found.done.into_iter().map(|d| format!("{d} in {region}")));
        report
            .left
            .extend(found.left.into_iter().map(|l| format!("{l} in {region}")));
    }
    let complete = report.left.is_empty();
    (report.sentence(identity), complete)
}

/// What cleanup removed, and what it could not.
#[derive(Default)]
struct Report {
    done: Vec<String>,
    left: Vec<String>,
}

impl Report {
    fn sentence(&self, identity: &Identity) -> String {
        let mut report = if self.done.is_empty() {
            NOTHING_CREATED.to_owned()
        } else {
            format!("Cleanup: {}", self.done.join(", "))
        };
        if !self.left.is_empty() {
            report.push_str(&format!(
                ". NOT cleaned up, remove by hand (tagged {TAG_REQUEST}={}): {}",
                identity.request_id,
                self.left.join(", ")
            ));
        }
        report
    }
}

/// Each builder, known or found by its tags, with its command cancelled first.
async fn terminate_builders(
    aws: &Aws,
    tags: &BTreeMap<String, String>,
    known: &Leftovers,
    not_found_grace: Duration,
    report: &mut Report,
) {
    // Each builder, with when it was launched where known.
    let mut instances: BTreeMap<String, Option<u64>> = known
        .instance_id
        .iter()
        .map(|id| (id.clone(), known.launched_at_ms))
        .collect();
    match aws.instances_tagged(tags).await {
        Ok(found) => {
            for instance in found.into_iter().filter(|i| i.state != "terminated") {
                let launched = instance.launched_ms;
                let entry = instances.entry(instance.id).or_insert(launched);
                *entry = entry.or(launched);
            }
        }
        Err(error) => report
            .left
            .push(format!("builder instances could not be listed ({error})")),
    }
    if let (Some(command), Some(instance)) = (&known.command_id, &known.instance_id) {
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
            Ok(()) => report.done.push(format!("terminated builder {instance}")),
            Err(error) => report.left.push(error),
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
    report: &mut Report,
) -> Released {
    let mut images: Vec<Image> = Vec::new();
    match aws.images_tagged(tags).await {
        Ok(found) => images.extend(found),
        Err(error) => report
            .left
            .push(format!("images could not be listed ({error})")),
    }
    if let Some(id) = &known.image_id
        && !images.iter().any(|i| &i.id == id)
    {
        match aws.describe_image(id).await {
            Ok(Some(image)) => images.push(image),
            Ok(None) => {}
            Err(error) => report.left.push(format!("image {id} ({error})")),
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
                    .done
                    .push(format!("deregistered half-made image {}", image.id));
                released
                    .snapshots
                    .extend(image.snapshot_ids.iter().cloned());
            }
            Err(error) => report.left.push(format!("image {} ({error})", image.id)),
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
    report: &mut Report,
) {
    let Released {
        mut snapshots,
        kept,
    } = released;
    if let Ok(found) = aws.snapshots_tagged(tags).await {
        snapshots.extend(found);
    }
    snapshots.sort();
    snapshots.dedup();
    snapshots.retain(|snapshot| !kept.contains(snapshot));
    let until = tokio::time::Instant::now() + SNAPSHOT_RELEASE_GRACE;
    for snapshot in &snapshots {
        match delete_released_snapshot(aws, snapshot, until).await {
            Ok(()) => report.done.push(format!("deleted snapshot {snapshot}")),
            Err(error) => report.left.push(format!("snapshot {snapshot} ({error})")),
        }
    }
}

/// Volumes of the request's builders left detached (a data volume detached during the build).
async fn delete_volumes(aws: &Aws, tags: &BTreeMap<String, String>, report: &mut Report) {
    match aws.detached_volumes_tagged(tags).await {
        Ok(volumes) => {
            for volume in volumes {
                match aws.delete_volume(&volume).await {
                    Ok(()) => report.done.push(format!("deleted volume {volume}")),
                    Err(error) => report.left.push(format!("volume {volume} ({error})")),
                }
            }
        }
        Err(error) => report
            .left
            .push(format!("volumes could not be listed ({error})")),
    }
}
