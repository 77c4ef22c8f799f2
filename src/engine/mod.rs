//! The engine: everything a request does against AWS, independent of Lambda and of the protocol.
//! It answers in its own terms, [`Done`] or [`Failed`]; the handler makes them CloudFormation's
//! SUCCESS or FAILED.
//!
//! | Module | What it does |
//! |---|---|
//! | [`mod@create`] | Create (and a rebuilding Update) as a resumable state machine: its state in `create/state.rs`, the run loop in `create/mod.rs`, one function per phase in `create/phases/` (by the work it does), resuming a re-delivered request in `create/resume.rs`, the source AMI and pre-launch checks in `create/source.rs` |
//! | `wait` | the one wait every waiting phase uses: still-running check, limit, next poll |
//! | [`failure`] | typed failures: [`BuildError`] (what went wrong in a phase), [`Failure`] (where the build stood), [`Failed`] (and what cleanup did), [`UpdateError`], [`DeleteError`] |
//! | [`mod@update`] | Update: retag in place, reuse (a rollback), or rebuild |
//! | `publish` | `SsmParameters`: the AMI's id written to Parameter Store, confirmed, put back on failure, removed with the AMI |
//! | `sharing` | `LaunchPermissions`: who may launch the image and create volumes from its snapshots, set at creation and kept in step by every Update |
//! | [`copies`] | `Regions`: the image copied to other regions, each copy distributed like it, kept in step by every Update and removed with it |
//! | `deprecation` | `DeprecateAfterDays`: the image's deprecation time, set at creation and kept in step by every Update |
//! | [`mod@delete`] | Delete: deregister the image and delete its snapshots |
//! | [`cleanup`] | removing what a build made, and the retries eventual consistency needs |
//! | [`mod@supersede`] | stopping builds CloudFormation gave up on |
//! | `signalled` | the image a long build signalled, answered by the resource that holds it (the EcsAmi macro's) |
//! | [`kept`] | `KeepFailedInstanceMinutes`: a failed build's instance kept for debugging, and ended on time |
//! | [`lease`], [`ledger`] | one build per request at a time; one recorded answer (or cancellation) per request |
//! | [`Context`] | what every part of a request's work is given: the AWS clients, the request's identity, the timing |
//! | [`tags`] | the tags, names and tokens that tie AWS resources to a request |
//! | [`time`] | the clock builds are timed on, UTC stamps, and [`Timing`]: how long each wait lasts and how often it polls |
//!
//! Every resource a build creates carries the request's identity tags, so cleanup can find it
//! even when the in-memory state was lost to a panic or a timeout.

pub mod cleanup;
mod context;
pub mod copies;
pub mod create;
pub mod delete;
mod deprecation;
mod done;
pub mod failure;
pub mod kept;
pub mod lease;
pub mod ledger;
pub mod publish;
mod sharing;
mod signalled;
pub mod supersede;
pub mod tags;
pub mod time;
pub mod update;
mod wait;

pub use cleanup::{
    Cleanup, Leftovers, NotTerminated, RETRIES_UNTIL, Resource, ResourceKind, Unknown, clean_up,
};
pub use context::Context;
pub use create::{
    Build, BuildState, ImageMade, Launched, On, Origin, Phase, Progress, Resolved, Tested, abandon,
    create,
};
pub use delete::{answered_image, delete};
pub use done::Done;
pub use failure::{
    BuildError, DeleteError, Failed, Failure, SignalledError, StepAt, StepEnd, UpdateError,
};
pub use signalled::signalled_image;
pub use supersede::{Superseded, supersede};
pub use tags::{
    TAG_FINGERPRINT, TAG_IMAGE, TAG_LOGICAL, TAG_PROPERTIES, TAG_REQUEST, TAG_SOURCE, TAG_STACK,
};
pub use time::Timing;
pub use update::Previous;
pub use update::update;
