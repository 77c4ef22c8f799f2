//! A build as a value: the phase it is in and what it has made, saved between phases and carried
//! in a hand-over payload (so its serde shape is part of `CONTINUATION_VERSION`), and where an
//! invocation leaves it ([`Progress`]).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::engine::Done;
use crate::engine::copies::Copied;
use crate::engine::failure::Failed;
use crate::engine::lease;
use crate::spec::AmiSpec;

/// The instance a phase works on: the phases that wait for SSM and run steps are the same for
/// both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum On {
    /// The builder, which runs the build's `Steps`.
    Builder,
    /// The test instance (`Tests`), launched from the image once the builder is gone, which runs
    /// the tests' steps.
    TestInstance,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    Resolve,
    Launch,
    /// Until SSM reports the instance Online.
    AwaitOnline {
        on: On,
        waited: Duration,
        /// When (in `waited` terms) EC2 was last asked whether the builder is still running.
        state_checked: Option<Duration>,
    },
    /// Sends step `index` (of the build's steps, or the tests'), or moves on when none is left.
    StartStep {
        on: On,
        index: usize,
    },
    AwaitStep {
        on: On,
        index: usize,
        command_id: String,
        waited: Duration,
        /// When (in `waited` terms) EC2 was last asked whether the instance is still running.
        state_checked: Option<Duration>,
    },
    Stop,
    AwaitStopped {
        waited: Duration,
    },
    CreateImage,
    AwaitImage {
        waited: Duration,
    },
    TagSnapshots,
    Finish,
    /// `Tests`: a test instance launched from the image (only when the spec has tests), once the
    /// builder is gone; its steps run as the build's do ([`On::TestInstance`]); then it is
    /// terminated.
    LaunchTest,
    /// `Tests.EcsCluster`: the test instance must join the cluster, its agent connected.
    AwaitEcs {
        waited: Duration,
    },
    FinishTest,
    /// The image copied to each of `Regions` (only when it names some), once the builder is gone.
    Copy,
    AwaitCopies {
        waited: Duration,
    },
    /// The AMI's id written to `SsmParameters` (only when it names some), once the builder is
    /// gone: nothing can fail after it but the answer.
    Publish,
    Done,
}

impl Phase {
    /// What the build does in this phase, as a Reason says it.
    pub fn name(&self) -> &'static str {
        match self {
            Phase::Resolve => "resolving the source AMI",
            Phase::Launch => "launching the builder",
            Phase::AwaitOnline {
                on: On::Builder, ..
            } => "waiting for SSM to report the builder Online",
            Phase::AwaitOnline {
                on: On::TestInstance,
                ..
            } => "waiting for SSM to report the test instance Online",
            Phase::StartStep {
                on: On::Builder, ..
            }
            | Phase::AwaitStep {
                on: On::Builder, ..
            } => "running a step",
            Phase::StartStep {
                on: On::TestInstance,
                ..
            }
            | Phase::AwaitStep {
                on: On::TestInstance,
                ..
            } => "testing the image",
            Phase::Stop | Phase::AwaitStopped { .. } => "stopping the builder",
            Phase::CreateImage | Phase::AwaitImage { .. } => "creating the image",
            Phase::TagSnapshots => "tagging the snapshots",
            Phase::Finish | Phase::Done => "cleaning up the builder",
            Phase::LaunchTest => "launching the test instance",
            Phase::AwaitEcs { .. } => "waiting for the test instance to join its ECS cluster",
            Phase::FinishTest => "terminating the test instance",
            Phase::Copy => "copying the image to its Regions",
            Phase::AwaitCopies { .. } => "waiting for the copies in other regions",
            Phase::Publish => "publishing the AMI id to SsmParameters",
        }
    }
}

/// A resolved source: the AMI id a parameter pointed at and what it implies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolved {
    pub source_image: String,
    pub architecture: String,
    pub instance_type: String,
    pub fingerprint: String,
    /// `ContainerImages`, each resolved to the digest of its manifest for `architecture`.
    /// Absent from the hand-overs of builds started before it existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub container_images: Vec<crate::spec::BakedImage>,
}

/// An instance a build launched, and when, on the [`clock`](crate::engine::time::now_ms): EC2
/// may not know it for a while after its launch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Launched {
    pub id: String,
    /// `None` when the instance was found again (a resumed build) and EC2 gave no launch time.
    pub at_ms: Option<u64>,
}

/// The build's image, once requested.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageMade {
    pub id: String,
    /// Known once the image is available.
    pub snapshot_ids: Vec<String>,
    pub origin: Origin,
}

/// Who the image belongs to, which says whether a failed build removes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Origin {
    /// This build made it: a failure removes it.
    Built,
    /// It was the resource's before this request (an Update that only tests it again or adds
    /// Regions starts after it): a failure removes the copies this request made, never the image.
    Existing,
}

/// The image passed its tests: when (UTC, `YYYY-MM-DDTHH:MM:SSZ`) and on which instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tested {
    pub at: String,
    pub instance: String,
}

/// What a build has done so far: everything needed to carry on in another invocation, given the
/// request it belongs to (the spec is re-read from the request, so the hand-over payload does not
/// carry the steps twice). Each thing the build makes is one value, present once it exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildState {
    pub phase: Phase,
    pub image_name: String,
    /// On the [`clock`](crate::engine::time::now_ms), for `TimeoutMinutes` and for saying how long a stage ran.
    pub started_at_ms: u64,
    pub phase_started_at_ms: u64,
    pub hand_overs: u32,
    /// The lease this build's invocations hold (see [`lease`](crate::engine::lease)); carried across hand-overs.
    pub lease: Option<lease::Lease>,
    /// The source, once resolved.
    pub resolved: Option<Resolved>,
    /// What the steps that finished handed back (their `Outputs`).
    pub outputs: BTreeMap<String, String>,
    /// The builder, once launched (or found again by a resumed build).
    pub builder: Option<Launched>,
    pub image: Option<ImageMade>,
    /// The test instance (`Tests`), once launched.
    pub test_instance: Option<Launched>,
    pub tested: Option<Tested>,
    /// The image's copies in other regions (`Regions`), and which of them this request made.
    pub copies: Copied,
}

/// One Create (or rebuilding Update): the validated spec and the state of its build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Build {
    pub spec: AmiSpec,
    pub state: BuildState,
    /// This invocation holds the lease as the first holder of the request, or as the successor
    /// its predecessor handed the build to: no earlier invocation can have done the phase it is
    /// at or any later one, so nothing is looked up to be adopted. False (look) until the lease
    /// says so, and after taking over from a holder presumed dead.
    pub(crate) fresh: bool,
}

/// Where a build stands when an invocation stops running it.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    /// The request succeeded: the handler answers SUCCESS with what this says.
    Finished(Done),
    /// Still building: hand the state to a fresh invocation.
    Paused(Box<BuildState>),
    /// The build failed and was cleaned up: the caller answers FAILED with what this says.
    Failed(Box<Failed>),
    /// Another invocation is working on this request and will answer: say nothing.
    Yielded,
    /// A newer request of the resource cancelled this one (CloudFormation gave up on it): what
    /// the build had made is removed (the report says what), and nothing is answered.
    Cancelled(crate::engine::cleanup::Cleanup),
}
