//! Why a build failed, as values: a [`BuildError`] says what went wrong in a phase (which AWS
//! call and its error code, which step and how it ended, which property names something EC2
//! would refuse); a [`Failure`] says where the build stood; [`Failed`] adds what cleanup
//! removed. They become a CloudFormation Reason only at the handler's edge
//! (`handler::failed_outcome`), and tests match on the variants.

use std::time::Duration;

use crate::aws::{AwsError, ImageState, InstanceStateName};
use crate::engine::cleanup::{Cleanup, NotTerminated};

/// What went wrong in one phase of a build.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// An AWS call failed: the error names the operation and AWS's error code.
    #[error("{0}")]
    Aws(#[from] AwsError),
    #[error("SourceAmiParameter {name} could not be read: {error}")]
    SourceParameterUnreadable { name: String, error: AwsError },
    /// The value itself is never quoted: whoever holds the ServiceToken reads the Reason, and the
    /// parameter may hold something that is not theirs to read.
    #[error(
        "SourceAmiParameter {name} holds a value of {chars} characters that is not an AMI id (ami- and 8 or 17 hex digits)"
    )]
    SourceParameterNotAnImage { name: String, chars: usize },
    /// No image of the owners matched, was available and (unless asked for) not deprecated.
    #[error(
        "SourceAmiFilter: no available{deprecated} image owned by {owners} matches {filters}",
        deprecated = if *include_deprecated { "" } else { ", not deprecated," },
        owners = owners.join(" or ")
    )]
    SourceFilterMatchedNothing {
        owners: Vec<String>,
        filters: String,
        include_deprecated: bool,
    },
    /// `property` is the source property as the template writes it (`SourceAmi`,
    /// `SourceAmiParameter`, `SourceAmiFilter`), so the Reason says which one to fix.
    #[error(
        "{property}: {}{image} does not exist in this region or is not shared with this account",
        source_of(property)
    )]
    SourceMissing {
        property: &'static str,
        image: String,
    },
    #[error("{property}: {}{image} is {state}, not available", source_of(property))]
    SourceNotAvailable {
        property: &'static str,
        image: String,
        state: ImageState,
    },
    /// A `ContainerImages` image, or task definition, that cannot be baked, found before anything
    /// is launched: `at` says where it came from (`ContainerImages.Images[2]`, or a task
    /// definition and its container), `subject` is the reference or task definition.
    #[error("{at}: {subject}: {problem}")]
    ContainerImageRefused {
        at: String,
        subject: String,
        problem: String,
    },
    /// The images cannot fit on the root volume, where Docker keeps them.
    #[error(
        "ContainerImages: the images are {compressed_mib} MiB compressed, about {needed_gib} GiB once pulled, more than the {volume_gib} GiB root volume Docker keeps them on (the largest: {largest}); enlarge the root volume in BlockDeviceMappings"
    )]
    ContainerImagesTooLarge {
        compressed_mib: u64,
        needed_gib: u64,
        volume_gib: u32,
        largest: String,
    },
    /// A property names something EC2 would refuse at launch, found before anything is launched.
    #[error("{property}: {problem}")]
    WillNotLaunch {
        property: &'static str,
        problem: String,
    },
    /// EC2 reports the builder in a state other than those the phase expects.
    #[error(
        "builder {instance} is {} instead of running{}{}",
        .state.as_ref().map_or("gone", InstanceStateName::as_str),
        during_step(.step),
        state_reason_note(.reason)
    )]
    BuilderNotRunning {
        instance: String,
        /// `None`: EC2 no longer lists it.
        state: Option<InstanceStateName>,
        step: Option<StepAt>,
        /// EC2's StateReason: a KMS key the launch could not use, capacity, ...
        reason: Option<String>,
    },
    /// [`BuildError::BuilderNotRunning`], of the test instance.
    #[error(
        "test instance {instance} is {} instead of running{}{}",
        .state.as_ref().map_or("gone", InstanceStateName::as_str),
        during_step(.step),
        state_reason_note(.reason)
    )]
    TestInstanceNotRunning {
        instance: String,
        state: Option<InstanceStateName>,
        step: Option<StepAt>,
        reason: Option<String>,
    },
    #[error(
        "SSM did not report builder {instance} Online within {} s; check that IamInstanceProfile {profile} allows SSM (AmazonSSMManagedInstanceCore) and that the subnet reaches the SSM endpoints",
        .timeout.as_secs()
    )]
    NeverOnline {
        instance: String,
        /// How long the build waited: `Timing::online_timeout`.
        timeout: Duration,
        profile: String,
    },
    /// A step ended other than in success; the tails of its output are quoted.
    #[error("{step} {end}; stderr: {}; stdout: {}", quoted_tail(.stderr), quoted_tail(.stdout))]
    StepFailed {
        step: StepAt,
        end: StepEnd,
        stderr: String,
        stdout: String,
    },
    /// SSM still reports a step running well past its TimeoutSeconds.
    #[error(
        "{step} was still reported running {} s after it began, past its {timeout_seconds} s TimeoutSeconds; {agent}",
        .waited.as_secs()
    )]
    StepOverdue {
        step: StepAt,
        waited: Duration,
        timeout_seconds: u32,
        agent: &'static str,
    },
    #[error("{step} succeeded, but {problem}")]
    StepOutputsUnreadable { step: StepAt, problem: String },
    #[error(
        "resuming: step {name:?} finished earlier but its SSM command is no longer listed, so its outputs are lost"
    )]
    ResumedOutputsLost { name: String },
    #[error("resuming: step {name:?} finished earlier, but {problem}")]
    ResumedOutputsUnreadable { name: String, problem: String },
    /// A phase found the build without what an earlier phase makes (or its properties without
    /// what led to the phase): a hand-over payload this version did not write (edited, or written
    /// by a faulty version). The build fails, cleaned up, rather than guess or panic.
    #[error(
        "the build is at a phase that needs its {missing}, which it does not have; this version never hands over such a build"
    )]
    StateLacks { missing: &'static str },
    #[error(
        "volume {} was detached from builder {instance} during the build; the image would lack it",
        .devices.join(", ")
    )]
    VolumeDetached {
        instance: String,
        devices: Vec<String>,
    },
    #[error(
        "SSM did not report test instance {instance} Online within {} s; check that the test instance profile {profile} allows SSM (AmazonSSMManagedInstanceCore), and the user data",
        .timeout.as_secs()
    )]
    TestNeverOnline {
        instance: String,
        timeout: Duration,
        profile: String,
    },
    #[error(
        "the tests did not end within Tests.TimeoutMinutes ({minutes}) of the test instance's launch"
    )]
    TestsTimedOut { minutes: u32 },
    #[error(
        "the test instance {instance} did not join ECS cluster {cluster} within {} s: {seen}",
        .waited.as_secs()
    )]
    NotInCluster {
        instance: String,
        cluster: String,
        waited: Duration,
        /// What ECS last said of it.
        seen: String,
    },
    /// A test step failed on an instance booted with user data: what its console showed.
    #[error("{failed}; the test instance's console (its user data) ends: {}", quoted_tail(.console))]
    TestFailedAfterUserData {
        failed: Box<BuildError>,
        console: String,
    },
    #[error("builder {instance} did not stop within {} s", .timeout.as_secs())]
    NeverStopped { instance: String, timeout: Duration },
    #[error("builder {instance} is {} instead of stopping", .state.as_ref().map_or("gone", InstanceStateName::as_str))]
    NotStopping {
        instance: String,
        state: Option<InstanceStateName>,
    },
    #[error("image {image} was not available within {} s", .timeout.as_secs())]
    ImageNeverAvailable { image: String, timeout: Duration },
    #[error("image {image} ended {state}: {}", .reason.as_deref().unwrap_or("no reason given"))]
    ImageFailed {
        image: String,
        state: ImageState,
        reason: Option<String>,
    },
    /// A call to another region (`Regions`) failed.
    #[error("in {region}: {error}")]
    InRegion { region: String, error: AwsError },
    #[error("the copy {image} in {region} ended {state}: {}", .reason.as_deref().unwrap_or("no reason given"))]
    CopyFailed {
        region: String,
        image: String,
        state: ImageState,
        reason: Option<String>,
    },
    #[error("the copies in {} were not available within {} s", .regions.join(", "), .timeout.as_secs())]
    CopiesNeverAvailable {
        regions: Vec<String>,
        timeout: Duration,
    },
    #[error("{what} could not be removed: {error}")]
    CopyNotRemoved { what: String, error: AwsError },
    /// A copy's id could not be published to the `SsmParameters` of its region.
    #[error("in {region}: {error}")]
    PublishIn {
        region: String,
        error: crate::engine::publish::PublishError,
    },
    /// The AMI's id could not be published to `SsmParameters` (those written are put back).
    #[error("{0}")]
    Publish(#[from] crate::engine::publish::PublishError),
    /// The finished build's builder could not be terminated (see `cleanup::terminate_builder`).
    #[error("{0}")]
    BuilderNotTerminated(NotTerminated),
}

impl BuildError {
    /// An AWS call of the phase was throttled past the SDK's retries: the phase can run again
    /// later (every phase may be run again: a crashed invocation's retry does the same).
    pub fn throttled(&self) -> bool {
        use crate::engine::publish::PublishError;
        match self {
            BuildError::Aws(error)
            | BuildError::SourceParameterUnreadable { error, .. }
            | BuildError::InRegion { error, .. }
            | BuildError::CopyNotRemoved { error, .. }
            | BuildError::Publish(PublishError::Write { error, .. })
            | BuildError::PublishIn {
                error: PublishError::Write { error, .. },
                ..
            } => error.is_throttled(),
            _ => false,
        }
    }

    /// Whether the phase's SSM command, if any, has ended by itself: there is nothing to cancel.
    pub fn command_ended(&self) -> bool {
        matches!(
            self,
            BuildError::StepFailed { .. }
                | BuildError::TestFailedAfterUserData { .. }
                | BuildError::BuilderNotTerminated(_)
        )
    }
}

/// Which step: its name and position, as a Reason names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepAt {
    pub name: String,
    /// From 0.
    pub index: usize,
    pub of: usize,
    /// A step of `Tests`, on the test instance.
    pub test: bool,
}

impl std::fmt::Display for StepAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}step {:?} ({} of {})",
            if self.test { "test " } else { "" },
            self.name,
            self.index + 1,
            self.of
        )
    }
}

/// How a step that did not succeed ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepEnd {
    /// By SSM's TimeoutSeconds, or by the wrapper script just short of it.
    #[error("timed out after its {timeout_seconds} s TimeoutSeconds")]
    TimedOut { timeout_seconds: u32 },
    #[error("was cancelled")]
    Cancelled,
    #[error("exited {code}")]
    Exited { code: i32 },
}

/// Where a build stood when it failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    #[error("could not take the build lease: {0}")]
    LeaseNotTaken(AwsError),
    #[error("could not renew the build lease: {0}")]
    LeaseNotRenewed(AwsError),
    /// A Create's first read of its record, which also says whether a Delete cancelled it
    /// before it started, failed: nothing is launched without it.
    #[error("could not read the request's record before launching anything: {0}")]
    RecordUnreadable(AwsError),
    #[error(
        "the build exceeded its TimeoutMinutes ({minutes}) while {stage} (that stage had run {} s)",
        .stage_ran.as_secs()
    )]
    TimedOut {
        minutes: u32,
        stage: &'static str,
        stage_ran: Duration,
    },
    /// A phase failed.
    #[error("failed while {stage}: {error}")]
    In {
        stage: &'static str,
        error: BuildError,
    },
    /// The invocation ran out of time and the next one could not be scheduled.
    #[error("could not hand the build over to a fresh invocation while {stage}: {why}")]
    NotHandedOver { stage: &'static str, why: String },
    /// An Update that could not find out whether to rebuild, or could not retag.
    #[error("{0}")]
    Update(#[from] UpdateError),
    /// A Delete that could not remove the image or its snapshots.
    #[error("{0}")]
    Delete(#[from] DeleteError),
    /// The image a long build signalled could not be answered with.
    #[error("{0}")]
    Signalled(#[from] SignalledError),
    /// A handed-over build this version cannot continue (a deploy mid-build).
    #[error(
        "the build could not be continued after a hand-over ({problem}; was the function updated during the build?)"
    )]
    NotContinued { problem: String },
}

/// Why the image a long build's signal names cannot be the resource's (the EcsAmi macro's `X`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignalledError {
    #[error("could not read image {image}, which the build signalled: {error}")]
    Read { image: String, error: AwsError },
    #[error("image {image}, which the build signalled, is no longer listed")]
    Gone { image: String },
    #[error(
        "image {image}, which the signal names, was not built by {resource}: not answered with"
    )]
    NotOwned { image: String, resource: String },
    #[error("image {image}, which the build signalled, is {state}, not available")]
    NotAvailable { image: String, state: String },
    #[error("could not read the copies of image {image}, which the build signalled: {error}")]
    Copies { image: String, error: BuildError },
}

/// What an Update could not do before any build; the resource keeps its image.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpdateError {
    #[error("Update could not look for the image to roll back to: {0}")]
    RollbackSearch(AwsError),
    #[error("Update could not retag image {image} to roll back to it: {error}")]
    RollbackRetag { image: String, error: AwsError },
    #[error("Update could not read the existing image: {0}")]
    ReadCurrent(AwsError),
    #[error("Update could not retag image {image}: {error}")]
    Retag { image: String, error: AwsError },
    #[error("Update could not retag reused image {image}: {error}")]
    RetagReused { image: String, error: AwsError },
    #[error("Update could not look for earlier images: {0}")]
    SearchEarlier(AwsError),
    #[error("Update could not publish image {image}: {error}")]
    Publish {
        image: String,
        error: crate::engine::publish::PublishError,
    },
    #[error(
        "Update could not remove the parameters it no longer names from image {image}: {error}"
    )]
    Unpublish { image: String, error: AwsError },
    #[error(
        "Update could not bring the copies of image {image} in other regions to its Regions: {error}"
    )]
    Copies { image: String, error: BuildError },
}

/// What a Delete could not do; CloudFormation retries it, and this Reason says what is left.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeleteError {
    #[error("Delete could not read image {image}: {error}")]
    ReadImage { image: String, error: AwsError },
    #[error("Delete could not list the snapshots of {image}: {error}")]
    ListSnapshots { image: String, error: AwsError },
    #[error("Delete could not deregister {image}: {error}")]
    Deregister { image: String, error: AwsError },
    #[error(
        "Delete could not remove every copy of {image} in other regions: {}",
        .remaining.iter().map(|(what, error)| format!("{what} ({error})")).collect::<Vec<_>>().join(", ")
    )]
    CopiesRemain {
        image: String,
        remaining: Vec<(String, AwsError)>,
    },
    #[error("Delete could not look for the copies of {image} in other regions: {error}")]
    Copies { image: String, error: BuildError },
    #[error("Delete could not remove the SsmParameters that hold {image}: {error}")]
    Unpublish { image: String, error: AwsError },
    #[error(
        "image {image} deregistered but snapshots remain: {}",
        .remaining.iter().map(|(id, error)| format!("{id} ({error})")).collect::<Vec<_>>().join(", ")
    )]
    SnapshotsRemain {
        image: String,
        remaining: Vec<(String, AwsError)>,
    },
}

/// A build that failed and was cleaned up: why, and what cleanup did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed {
    pub failure: Failure,
    /// What was removed, and what could not be. `None`: nothing had been started that could
    /// need it.
    pub cleanup: Option<Cleanup>,
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.cleanup {
            Some(cleanup) => write!(f, "{}. {cleanup}", self.failure),
            None => write!(f, "{}", self.failure),
        }
    }
}

fn during_step(step: &Option<StepAt>) -> String {
    step.as_ref()
        .map(|step| format!(", during {step}"))
        .unwrap_or_default()
}

fn state_reason_note(reason: &Option<String>) -> String {
    reason
        .as_ref()
        .map(|r| format!(" ({r})"))
        .unwrap_or_default()
}

/// The last `lines` lines of `text`, at most `max` bytes.
pub fn tail(text: &str, lines: usize, max: usize) -> String {
    let all: Vec<&str> = text.trim_end().lines().collect();
    let kept = all[all.len().saturating_sub(lines)..].join("\n");
    if kept.len() <= max {
        return kept;
    }
    let mut start = kept.len() - max;
    while !kept.is_char_boundary(start) {
        start += 1;
    }
    kept[start..].to_owned()
}

fn quoted_tail(text: &str) -> String {
    let kept = tail(text, 10, 1200);
    if kept.is_empty() {
        "(empty)".into()
    } else {
        format!("{kept:?}")
    }
}

/// How a Reason introduces the image a source property gave: `SourceAmi` is the image itself.
fn source_of(property: &str) -> &'static str {
    match property {
        "SourceAmi" => "",
        "SourceAmiParameter" => "the image it holds, ",
        _ => "the image it matched, ",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step() -> StepAt {
        StepAt {
            name: "packages".into(),
            index: 1,
            of: 3,
            test: false,
        }
    }

    #[test]
    fn reasons_read_as_before_the_failures_were_typed() {
        // The Reasons CloudFormation shows, pinned: the end-to-end tests match parts of them.
        let failed = BuildError::StepFailed {
            step: step(),
            end: StepEnd::Exited { code: 3 },
            stderr: "a\nb\n".into(),
            stdout: String::new(),
        };
        assert_eq!(
            failed.to_string(),
            "step \"packages\" (2 of 3) exited 3; stderr: \"a\\nb\"; stdout: (empty)"
        );
        assert!(failed.command_ended());
        let gone = BuildError::BuilderNotRunning {
            instance: "i-1".into(),
            state: None,
            step: Some(step()),
            reason: Some("Client.InternalError: KMS".into()),
        };
        assert_eq!(
            gone.to_string(),
            "builder i-1 is gone instead of running, during step \"packages\" (2 of 3) (Client.InternalError: KMS)"
        );
        assert!(!gone.command_ended());
        let failure = Failure::In {
            stage: "running a step",
            error: gone,
        };
        assert!(
            failure
                .to_string()
                .starts_with("failed while running a step: builder i-1")
        );
        let timed_out = Failure::TimedOut {
            minutes: 5,
            stage: "creating the image",
            stage_ran: Duration::from_millis(61_900),
        };
        assert_eq!(
            timed_out.to_string(),
            "the build exceeded its TimeoutMinutes (5) while creating the image (that stage had run 61 s)"
        );
    }

    #[test]
    fn tails_keep_the_last_lines() {
        let text = (1..=30)
            .map(|i| format!("line {i}"))
            .collect::<Vec<_>>()
            .join("\n");
        let kept = tail(&text, 3, 1000);
        assert_eq!(kept, "line 28\nline 29\nline 30");
        assert_eq!(tail(&"é".repeat(100), 1, 9).len(), 8);
        assert_eq!(quoted_tail(""), "(empty)");
    }
}
