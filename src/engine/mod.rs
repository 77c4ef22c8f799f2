//! The build, independent of Lambda: Create as a resumable state machine, Update's three ways
//! (retag in place, reuse, rebuild), Delete, and the cleanup that every failure ends with.
//!
//! Each phase of [`Build`] does one thing against AWS and says what comes next, so the whole
//! build is a value that can be saved between phases (the hand-over to a fresh invocation builds
//! on this). Every resource a build creates carries the request's identity tags, so cleanup can
//! find it even when the in-memory state was lost to a panic or a timeout.

pub mod clock;
pub mod lease;
pub mod ledger;
mod time;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::aws::{Aws, AwsError, Image, ImageRequest, LaunchRequest, StepStatus};
use crate::cfn::{Identity, Outcome};
use crate::hash::short_hash;
use crate::spec::{AmiSpec, SOURCE_IMAGE_ATTRIBUTE, Source, TAG_PREFIX};

pub const TAG_STACK: &str = "ecs-ami:stack-id";
pub const TAG_LOGICAL: &str = "ecs-ami:logical-id";
pub const TAG_REQUEST: &str = "ecs-ami:request-id";
pub const TAG_FINGERPRINT: &str = "ecs-ami:fingerprint";
/// [`crate::spec::fingerprint::of_request`]: what a rollback looks for.
pub const TAG_PROPERTIES: &str = "ecs-ami:properties";
pub const TAG_SOURCE: &str = "ecs-ami:source-image";
pub const TAG_IMAGE: &str = "ecs-ami:image-id";
/// Each step output is kept on the AMI under this prefix, so that an Update that keeps the AMI
/// (or a rollback that reuses one) answers with the same attributes.
pub const TAG_OUTPUT_PREFIX: &str = "ecs-ami:output:";

/// How long each wait may last and how often it polls. Polls start at one second and slow down
/// in proportion to the time already waited, up to `max_poll`, so quick emulator builds finish
/// quickly while a 25-minute snapshot costs a few dozen calls.
#[derive(Debug, Clone)]
pub struct Timing {
    pub online_timeout: Duration,
    pub stop_timeout: Duration,
    pub image_timeout: Duration,
    pub min_poll: Duration,
    pub max_poll: Duration,
    /// When this invocation must stop and hand the build over to a fresh one.
    pub hand_over_at: Option<tokio::time::Instant>,
    /// Hand over after every change of state (ECS_AMI_HANDOVER_EVERY_STATE=1), to prove that a
    /// build survives any number of hand-overs.
    pub hand_over_every_state: bool,
    /// How long a build lease lasts unrenewed: how soon a retry takes over from an invocation
    /// that died. Renewed when half of it is left.
    pub lease_ttl: Duration,
    /// While waiting for SSM or a step, how often EC2 is asked whether the builder still runs
    /// (someone may stop or terminate it).
    pub state_check_every: Duration,
    /// How long past its TimeoutSeconds a step may still be reported running (delivery, an
    /// agent that went offline) before the build gives up on it.
    pub step_grace: Duration,
    /// How long after RunInstances EC2 may still answer `InvalidInstanceID.NotFound` for the new
    /// builder (eventual consistency: https://docs.aws.amazon.com/ec2/latest/devguide/eventual-consistency.html),
    /// and how long a TerminateInstances answered NotFound is retried before the builder is
    /// reported as not confirmed terminated.
    pub not_found_grace: Duration,
    /// How often a build reads its request's record (see [`ledger`]) to find out whether a newer
    /// request cancelled it; also read before each phase that creates something.
    pub record_check_every: Duration,
    /// How long a request waits for a build it cancelled to stop and clean up after itself
    /// before removing what is left itself (see [`supersede`]).
    pub supersede_wait: Duration,
    /// For a Create: when CloudFormation issued it (see [`crate::cfn::Request::issued_at`]). Read
    /// again before the launch, once the lease is held, against a Delete that cancelled the
    /// Creates issued before it (see [`ledger::create_cancelled_by`]).
    pub create_issued_at: Option<String>,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            online_timeout: Duration::from_secs(600),
            stop_timeout: Duration::from_secs(600),
            image_timeout: Duration::from_secs(3000),
            min_poll: Duration::from_secs(1),
            max_poll: Duration::from_secs(10),
            hand_over_at: None,
            hand_over_every_state: false,
            lease_ttl: Duration::from_secs(300),
            state_check_every: Duration::from_secs(30),
            step_grace: Duration::from_secs(120),
            not_found_grace: Duration::from_secs(60),
            record_check_every: Duration::from_secs(10),
            supersede_wait: Duration::from_secs(120),
            create_issued_at: None,
        }
    }
}

impl Timing {
    /// The pause before the next poll: a third of the time already waited, within bounds, less up
    /// to 10 % at random so that many builds started together do not poll in lockstep. Jitter only
    /// shortens the pause, so a change is still seen within `max_poll`.
    fn next_poll(&self, waited: Duration) -> Duration {
        let base = (waited / 3).clamp(self.min_poll, self.max_poll);
        base.mul_f64(1.0 - 0.1 * fastrand::f64())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    Resolve,
    Launch,
    AwaitOnline {
        waited: Duration,
        /// When (in `waited` terms) EC2 was last asked whether the builder is still running.
        state_checked: Option<Duration>,
    },
    StartStep {
        index: usize,
    },
    AwaitStep {
        index: usize,
        command_id: String,
        waited: Duration,
        /// When (in `waited` terms) EC2 was last asked whether the builder is still running.
        #[serde(default)]
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
    Done,
}

impl Phase {
    fn name(&self) -> &'static str {
        match self {
            Phase::Resolve => "resolving the source AMI",
            Phase::Launch => "launching the builder",
            Phase::AwaitOnline { .. } => "waiting for SSM to report the builder Online",
            Phase::StartStep { .. } | Phase::AwaitStep { .. } => "running a step",
            Phase::Stop | Phase::AwaitStopped { .. } => "stopping the builder",
            Phase::CreateImage | Phase::AwaitImage { .. } => "creating the image",
            Phase::TagSnapshots => "tagging the snapshots",
            Phase::Finish | Phase::Done => "cleaning up the builder",
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
}

/// What a build has done so far: everything needed to carry on in another invocation, given the
/// request it belongs to (the spec is re-read from the request, so the hand-over payload does not
/// carry the steps twice).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildState {
    pub phase: Phase,
    pub image_name: String,
    pub resolved: Option<Resolved>,
    pub instance_id: Option<String>,
    pub image_id: Option<String>,
    pub snapshot_ids: Vec<String>,
    /// On the [`clock`], for `TimeoutMinutes` and for saying how long a stage ran.
    pub started_at_ms: u64,
    pub phase_started_at_ms: u64,
    pub hand_overs: u32,
    /// The lease this build's invocations hold (see [`lease`]); carried across hand-overs.
    pub lease: Option<lease::Lease>,
    /// What the steps that finished handed back (their `Outputs`).
    #[serde(default)]
    pub outputs: BTreeMap<String, String>,
    /// When the builder was launched, on the [`clock`]: EC2 may not know it yet for a while.
    #[serde(default)]
    pub launched_at_ms: Option<u64>,
}

/// One Create (or rebuilding Update): the validated spec and the state of its build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Build {
    pub spec: AmiSpec,
    pub state: BuildState,
}

/// Where a build stands when an invocation stops running it.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    /// SUCCESS or FAILED (after cleanup): the response can be sent.
    Finished(Outcome),
    /// Still building: hand the state to a fresh invocation.
    Paused(Box<BuildState>),
    /// Another invocation is working on this request and will answer: say nothing.
    Yielded,
    /// A newer request of the resource cancelled this one (CloudFormation gave up on it): what
    /// the build had made is removed (the report says what), and nothing is answered.
    Cancelled(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct BuildError {
    pub message: String,
    /// The running SSM command, if any, has ended by itself: there is nothing to cancel.
    pub command_ended: bool,
}

impl From<AwsError> for BuildError {
    fn from(error: AwsError) -> Self {
        BuildError {
            message: error.to_string(),
            command_ended: false,
        }
    }
}

fn fail<T>(message: impl Into<String>) -> Result<T, BuildError> {
    Err(BuildError {
        message: message.into(),
        command_ended: false,
    })
}

enum Next {
    Now(Phase),
    After(Duration, Phase),
}

impl Build {
    pub fn new(spec: AmiSpec, identity: &Identity) -> Build {
        let image_name = match &spec.ami_name {
            Some(prefix) => unique_image_name(prefix, identity, time::utc_stamp()),
            None => default_image_name(identity, time::utc_stamp()),
        };
        let now = clock::now_ms();
        Build {
            spec,
            state: BuildState {
                phase: Phase::Resolve,
                image_name,
                resolved: None,
                instance_id: None,
                image_id: None,
                snapshot_ids: Vec::new(),
                started_at_ms: now,
                phase_started_at_ms: now,
                hand_overs: 0,
                lease: None,
                outputs: BTreeMap::new(),
                launched_at_ms: None,
            },
        }
    }

    /// Starts past Resolve with a source the caller already resolved (an Update does, to compare
    /// fingerprints), instead of asking AWS again.
    fn already_resolved(mut self, resolved: Resolved) -> Build {
        self.state.resolved = Some(resolved);
        self.state.phase = Phase::Launch;
        self
    }

    /// Carries on a build that an earlier invocation handed over.
    pub fn resume(spec: AmiSpec, state: BuildState) -> Build {
        Build { spec, state }
    }

    /// Runs phases until the build is done, fails, or this invocation should hand it over. On
    /// failure it cleans up and says what was left, so the caller only has to answer.
    pub async fn run(mut self, aws: &Aws, identity: &Identity, timing: &Timing) -> Progress {
        let failed_id = crate::cfn::failed_create_physical_id(identity);
        let mut phases_this_invocation = 0u32;
        // Read again once the lease is held: another delivery may have answered, or a newer
        // request cancelled it, between the handler's read and the lease.
        let mut record_checked: Option<tokio::time::Instant> = None;
        match self.hold_lease(aws, identity, timing).await {
            Ok(true) => {}
            Ok(false) => return Progress::Yielded,
            Err(error) => {
                let message = format!("could not take the build lease: {error}");
                return self
                    .fail_and_clean(
                        aws,
                        identity,
                        &failed_id,
                        message,
                        true,
                        timing.not_found_grace,
                    )
                    .await;
            }
        }
        loop {
            if self.state.phase == Phase::Done {
                // The lease stays until the answer is recorded (the handler then deletes it), so
                // that a request cancelling this one always finds it in flight or answered.
                return Progress::Finished(self.success_outcome());
            }
            let lease_left = self
                .state
                .lease
                .as_ref()
                .map_or(0, |l| l.expires_ms.saturating_sub(clock::now_ms()));
            if lease_left < timing.lease_ttl.as_millis() as u64 / 2 {
                match self.renew_lease(aws, identity, timing).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!("another invocation took over this build: stopping here");
                        return Progress::Yielded;
                    }
                    Err(error) => {
                        let message = format!("could not renew the build lease: {error}");
                        return self
                            .fail_and_clean(
                                aws,
                                identity,
                                &failed_id,
                                message,
                                true,
                                timing.not_found_grace,
                            )
                            .await;
                    }
                }
            }
            let now = clock::now_ms();
            // Read each time: adopting an earlier delivery's builder moves the start back.
            let build_deadline_ms =
                self.state.started_at_ms + u64::from(self.spec.timeout_minutes) * 60_000;
            if now >= build_deadline_ms {
                let message = format!(
                    "the build exceeded its TimeoutMinutes ({}) while {} (that stage had run {} s)",
                    self.spec.timeout_minutes,
                    self.state.phase.name(),
                    now.saturating_sub(self.state.phase_started_at_ms) / 1000
                );
                return self
                    .fail_and_clean(
                        aws,
                        identity,
                        &failed_id,
                        message,
                        true,
                        timing.not_found_grace,
                    )
                    .await;
            }
            let out_of_time = timing
                .hand_over_at
                .is_some_and(|at| tokio::time::Instant::now() >= at);
            if out_of_time || (timing.hand_over_every_state && phases_this_invocation > 0) {
                self.state.hand_overs += 1;
                tracing::info!(phase = ?self.state.phase, hand_overs = self.state.hand_overs, "handing the build over to a fresh invocation");
                return Progress::Paused(Box::new(self.state));
            }
            let creates_something = matches!(
                self.state.phase,
                Phase::Launch | Phase::StartStep { .. } | Phase::CreateImage
            );
            if creates_something
                || record_checked.is_none_or(|at| at.elapsed() >= timing.record_check_every)
            {
                record_checked = Some(tokio::time::Instant::now());
                // The launch of a Create: its cancelling Delete may have run before it took the
                // lease (and so not found it in flight).
                if self.state.phase == Phase::Launch
                    && let Some(issued_at) = &timing.create_issued_at
                    && let Ok(Some(by)) =
                        ledger::cancel_if_create_cancelled(aws, identity, issued_at).await
                {
                    return self.stop_cancelled(aws, identity, &by, timing).await;
                }
                match ledger::read(aws, identity).await {
                    Ok(None) => {}
                    Ok(Some(ledger::Record::Cancelled { by, .. })) => {
                        return self.stop_cancelled(aws, identity, &by, timing).await;
                    }
                    Ok(Some(ledger::Record::Answered { .. })) => {
                        tracing::warn!(
                            "another delivery of this request has answered it: stopping here"
                        );
                        self.release_lease(aws, &lease::path(identity)).await;
                        return Progress::Yielded;
                    }
                    Err(error) => {
                        tracing::warn!(problem = %error, "could not read the request's record; carrying on");
                    }
                }
            }
            let before = std::mem::discriminant(&self.state.phase);
            let step = self.advance(aws, identity, timing).await;
            let (next, pause) = match step {
                Ok(Next::Now(phase)) => (phase, None),
                Ok(Next::After(pause, phase)) => (phase, Some(pause)),
                Err(error) => {
                    let message = format!(
                        "failed while {}: {}",
                        self.state.phase.name(),
                        error.message
                    );
                    return self
                        .fail_and_clean(
                            aws,
                            identity,
                            &failed_id,
                            message,
                            !error.command_ended,
                            timing.not_found_grace,
                        )
                        .await;
                }
            };
            let changed = std::mem::discriminant(&next) != before
                || matches!((&self.state.phase, &next), (Phase::StartStep { index: a }, Phase::StartStep { index: b }) if a != b);
            self.state.phase = next;
            if changed {
                self.state.phase_started_at_ms = clock::now_ms();
                phases_this_invocation += 1;
            }
            if let Some(pause) = pause {
                // Never sleep past the moment this invocation must hand over, nor so long that
                // the lease runs out unrenewed.
                let pause = pause.min(timing.lease_ttl / 4);
                let pause = match timing.hand_over_at {
                    Some(at) => {
                        pause.min(at.saturating_duration_since(tokio::time::Instant::now()))
                    }
                    None => pause,
                };
                tokio::time::sleep(pause).await;
            }
        }
    }

    /// The token this build's invocations hold the lease with: kept across hand-overs, new for a
    /// fresh delivery.
    fn lease_token(&self) -> String {
        self.state
            .lease
            .as_ref()
            .map_or_else(lease::new_token, |l| l.token.clone())
    }

    /// Takes the build lease for this invocation, waiting for the lease of an invocation that
    /// died to run out. False: a live invocation holds it, and this one should leave the build
    /// to it.
    async fn hold_lease(
        &mut self,
        aws: &Aws,
        identity: &Identity,
        timing: &Timing,
    ) -> Result<bool, AwsError> {
        let token = self.lease_token();
        // Carried in a hand-over payload: succeeded rather than shared.
        let handed = self.state.lease.clone();
        let mut seen_until = None;
        loop {
            let claim = match &handed {
                Some(handed) => lease::succeed(aws, identity, handed, timing.lease_ttl).await?,
                None => lease::claim(aws, identity, &token, timing.lease_ttl).await?,
            };
            match claim {
                lease::Claim::Held(held) => {
                    self.state.lease = Some(held);
                    return Ok(true);
                }
                lease::Claim::Lost => {
                    tracing::info!("another delivery took this build, or it is over: leaving it");
                    return Ok(false);
                }
                lease::Claim::Busy { until_ms } => {
                    // A holder that renewed while this one waited is alive.
                    if seen_until.is_some_and(|seen| until_ms > seen) {
                        tracing::info!(
                            "another invocation is building this request: leaving it the build"
                        );
                        return Ok(false);
                    }
                    seen_until = Some(until_ms);
                    let wait = Duration::from_millis(
                        until_ms.saturating_sub(clock::now_ms()) + 500 + fastrand::u64(..500),
                    );
                    if timing
                        .hand_over_at
                        .is_some_and(|at| tokio::time::Instant::now() + wait >= at)
                    {
                        return Ok(false);
                    }
                    tracing::info!(
                        wait_s = wait.as_secs(),
                        "another invocation holds this build's lease: waiting to see whether it is alive"
                    );
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// False: the lease was taken over (this invocation was presumed dead).
    async fn renew_lease(
        &mut self,
        aws: &Aws,
        identity: &Identity,
        timing: &Timing,
    ) -> Result<bool, AwsError> {
        if let Some(held) = &self.state.lease
            && let Some(extended) = lease::extend(aws, identity, held, timing.lease_ttl).await?
        {
            self.state.lease = Some(extended);
            return Ok(true);
        }
        let token = self.lease_token();
        match lease::claim(aws, identity, &token, timing.lease_ttl).await? {
            lease::Claim::Held(held) => {
                self.state.lease = Some(held);
                Ok(true)
            }
            lease::Claim::Busy { .. } | lease::Claim::Lost => Ok(false),
        }
    }

    async fn release_lease(&self, aws: &Aws, path: &str) {
        let Some(held) = &self.state.lease else {
            return;
        };
        if let Err(error) = lease::release(aws, path, held).await {
            tracing::warn!(problem = %error, "the build lease could not be deleted; it expires by itself");
        }
    }

    async fn fail_and_clean(
        &self,
        aws: &Aws,
        identity: &Identity,
        failed_id: &str,
        message: String,
        cancel_command: bool,
        not_found_grace: Duration,
    ) -> Progress {
        tracing::error!(problem = %message, "build failed; cleaning up");
        let report = self
            .clean_up_and_release(aws, identity, cancel_command, not_found_grace)
            .await;
        Progress::Finished(Outcome::failed(failed_id, format!("{message}. {report}")))
    }

    /// Ends the build: removes what it made ([`clean_up`], from what it knows and from its
    /// request's tags), then deletes its lease. Returns the cleanup's report.
    async fn clean_up_and_release(
        &self,
        aws: &Aws,
        identity: &Identity,
        cancel_command: bool,
        not_found_grace: Duration,
    ) -> String {
        let known = self.leftovers(cancel_command);
        let report = clean_up(aws, identity, &known, not_found_grace).await;
        self.release_lease(aws, &lease::path(identity)).await;
        report
    }

    /// What the build knows it made; `cancel_command`: the running step, if any, is to be
    /// cancelled (it has not ended by itself).
    fn leftovers(&self, cancel_command: bool) -> Leftovers {
        let running_command = match &self.state.phase {
            Phase::AwaitStep { command_id, .. } if cancel_command => Some(command_id.clone()),
            _ => None,
        };
        Leftovers {
            instance_id: self.state.instance_id.clone(),
            launched_at_ms: self.state.launched_at_ms,
            image_id: self.state.image_id.clone(),
            command_id: running_command,
        }
    }

    /// A newer request of the resource cancelled this one: remove what the build made, and
    /// answer nothing (CloudFormation no longer waits for it).
    async fn stop_cancelled(
        &self,
        aws: &Aws,
        identity: &Identity,
        by: &str,
        timing: &Timing,
    ) -> Progress {
        tracing::warn!(
            cancelled_by = by,
            phase = ?self.state.phase,
            "CloudFormation gave up on this request (a newer request of the resource cancelled it): stopping and cleaning up"
        );
        let report = self
            .clean_up_and_release(aws, identity, true, timing.not_found_grace)
            .await;
        tracing::info!(report = %report, "cancelled build cleaned up");
        Progress::Cancelled(report)
    }

    fn success_outcome(&self) -> Outcome {
        let resolved = self
            .state
            .resolved
            .as_ref()
            .expect("a finished build was resolved");
        let image_id = self
            .state
            .image_id
            .clone()
            .expect("a finished build has an image");
        let mut data = BTreeMap::new();
        data.insert("ImageId".into(), image_id.clone());
        data.insert("ImageName".into(), self.state.image_name.clone());
        data.insert("SourceImageId".into(), resolved.source_image.clone());
        data.insert("SnapshotIds".into(), self.state.snapshot_ids.join(","));
        data.insert("Fingerprint".into(), resolved.fingerprint.clone());
        data.extend(self.state.outputs.clone());
        Outcome::success(image_id, data)
    }

    /// EC2 may not know the builder yet (eventual consistency): see [`Timing::not_found_grace`].
    fn just_launched(&self, timing: &Timing) -> bool {
        launched_within(self.state.launched_at_ms, timing.not_found_grace)
    }

    async fn advance(
        &mut self,
        aws: &Aws,
        identity: &Identity,
        timing: &Timing,
    ) -> Result<Next, BuildError> {
        match self.state.phase.clone() {
            Phase::Resolve => {
                let resolved = resolve(aws, &self.spec).await?;
                // Only a build launches: an Update in place or a rollback must not fail on a
                // subnet deleted since.
                check_where_it_runs(
                    aws,
                    &self.spec,
                    &resolved.source_image,
                    &resolved.architecture,
                    &resolved.instance_type,
                )
                .await?;
                self.state.resolved = Some(resolved);
                Ok(Next::Now(Phase::Launch))
            }
            Phase::Launch => {
                if let Some(phase) = self.adopt(aws, identity).await? {
                    return Ok(Next::Now(phase));
                }
                let resolved = self
                    .state
                    .resolved
                    .as_ref()
                    .expect("resolved before launch");
                let mut tags = identity_tags(identity);
                tags.insert(
                    "Name".into(),
                    format!(
                        "ecs-ami builder {}/{}",
                        identity.stack_name(),
                        identity.logical_id
                    ),
                );
                let request = LaunchRequest {
                    image_id: resolved.source_image.clone(),
                    instance_type: resolved.instance_type.clone(),
                    instance_profile: self.spec.iam_instance_profile.clone(),
                    subnet_id: self.spec.subnet_id.clone(),
                    security_group_ids: self.spec.security_group_ids.clone(),
                    block_devices: self.spec.block_device_mappings.clone(),
                    tags,
                    client_token: client_token(identity),
                };
                let instance_id = aws.launch_builder(&request).await?;
                tracing::info!(instance_id = %instance_id, instance_type = %resolved.instance_type, source_image = %resolved.source_image, "builder launched");
                self.state.instance_id = Some(instance_id);
                self.state.launched_at_ms = Some(clock::now_ms());
                Ok(Next::Now(Phase::AwaitOnline {
                    waited: Duration::ZERO,
                    state_checked: None,
                }))
            }
            Phase::AwaitOnline {
                waited,
                mut state_checked,
            } => {
                let instance_id = self.instance();
                if aws.instance_online(instance_id).await? {
                    tracing::info!(
                        instance_id,
                        waited_s = waited.as_secs(),
                        "builder is Online in SSM"
                    );
                    return Ok(Next::Now(Phase::StartStep { index: 0 }));
                }
                // A builder that dies while booting (capacity, a bad AMI) never comes Online.
                check_still_running(
                    aws,
                    instance_id,
                    &["pending", "running"],
                    "",
                    (waited, &mut state_checked),
                    self.state.launched_at_ms,
                    timing,
                )
                .await?;
                if waited >= timing.online_timeout {
                    return fail(format!(
                        "SSM did not report builder {instance_id} Online within {} s; check that IamInstanceProfile {} allows SSM (AmazonSSMManagedInstanceCore) and that the subnet reaches the SSM endpoints",
                        timing.online_timeout.as_secs(),
                        self.spec.iam_instance_profile
                    ));
                }
                let pause = timing.next_poll(waited);
                Ok(Next::After(
                    pause,
                    Phase::AwaitOnline {
                        waited: waited + pause,
                        state_checked,
                    },
                ))
            }
            Phase::StartStep { index } => {
                let Some(step) = self.spec.steps.get(index) else {
                    return Ok(Next::Now(Phase::Stop));
                };
                // A retried invocation may have sent this step already: follow that command
                // rather than run the step twice.
                let sent = aws.commands_sent_to(self.instance()).await?;
                if let Some((command_id, _)) =
                    sent.iter().find(|(_, c)| step_number(c) == Some(index))
                {
                    tracing::info!(step = %step.name, command_id = %command_id, "step was already sent: following it");
                    return Ok(Next::Now(Phase::AwaitStep {
                        index,
                        command_id: command_id.clone(),
                        waited: Duration::ZERO,
                        state_checked: None,
                    }));
                }
                let command_id = aws
                    .run_step(
                        self.instance(),
                        &crate::spec::script::render(step),
                        step.timeout_seconds,
                        &step_comment(index, self.spec.steps.len(), &step.name),
                    )
                    .await?;
                tracing::info!(step = %step.name, number = index + 1, of = self.spec.steps.len(), command_id = %command_id, "step started");
                Ok(Next::After(
                    timing.min_poll,
                    Phase::AwaitStep {
                        index,
                        command_id,
                        waited: timing.min_poll,
                        state_checked: None,
                    },
                ))
            }
            Phase::AwaitStep {
                index,
                command_id,
                waited,
                mut state_checked,
            } => {
                let step = &self.spec.steps[index];
                let result = aws.step_result(&command_id, self.instance()).await?;
                let position = format!(
                    "step {:?} ({} of {})",
                    step.name,
                    index + 1,
                    self.spec.steps.len()
                );
                match result.status {
                    StepStatus::Running => {
                        let instance_id = self.instance();
                        // Someone may stop or terminate the builder under a long step; SSM
                        // would only say so when the step's timeout runs out.
                        check_still_running(
                            aws,
                            instance_id,
                            &["running"],
                            &format!(", during {position}"),
                            (waited, &mut state_checked),
                            self.state.launched_at_ms,
                            timing,
                        )
                        .await?;
                        // SSM enforces the step's own timeout; the grace covers delivery.
                        let limit = Duration::from_secs(u64::from(step.timeout_seconds))
                            + timing.step_grace;
                        if waited >= limit {
                            let agent = match aws.instance_online(instance_id).await {
                                Ok(true) => "SSM reports its agent Online",
                                Ok(false) => "SSM reports its agent not Online (it went offline?)",
                                Err(_) => "SSM's view of its agent is unknown",
                            };
                            return fail(format!(
                                "{position} was still reported running {} s after it began, past its {} s TimeoutSeconds; {agent}",
                                waited.as_secs(),
                                step.timeout_seconds
                            ));
                        }
                        let pause = timing.next_poll(waited);
                        Ok(Next::After(
                            pause,
                            Phase::AwaitStep {
                                index,
                                command_id,
                                waited: waited + pause,
                                state_checked,
                            },
                        ))
                    }
                    StepStatus::Success => {
                        tracing::info!(step = %step.name, status = "Success", stdout = %tail(&result.stdout, 20, 2000), "step finished");
                        if !step.outputs.is_empty() {
                            let outputs = crate::spec::script::read_outputs(step, &result.stdout)
                                .or_else(|problem| {
                                fail(format!("{position} succeeded, but {problem}"))
                            })?;
                            tracing::info!(step = %step.name, outputs = %outputs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" "), "step outputs");
                            self.state.outputs.extend(outputs);
                        }
                        Ok(Next::Now(Phase::StartStep { index: index + 1 }))
                    }
                    StepStatus::Failed | StepStatus::TimedOut | StepStatus::Cancelled => {
                        tracing::warn!(step = %step.name, status = ?result.status, exit_code = result.exit_code, stdout = %tail(&result.stdout, 20, 2000), stderr = %tail(&result.stderr, 20, 2000), "step failed");
                        let how = match result.status {
                            StepStatus::TimedOut => format!(
                                "timed out after its {} s TimeoutSeconds",
                                step.timeout_seconds
                            ),
                            StepStatus::Cancelled => "was cancelled".to_owned(),
                            // The wrapper stopped it short of SSM's timeout, to show its end.
                            _ if result.exit_code == 124
                                && result
                                    .stderr
                                    .trim_end()
                                    .ends_with(crate::spec::script::TIMEOUT_NOTE) =>
                            {
                                format!(
                                    "timed out after its {} s TimeoutSeconds",
                                    step.timeout_seconds
                                )
                            }
                            _ => format!("exited {}", result.exit_code),
                        };
                        Err(BuildError {
                            message: format!(
                                "{position} {how}; stderr: {}; stdout: {}",
                                quoted_tail(&result.stderr),
                                quoted_tail(&result.stdout)
                            ),
                            command_ended: true,
                        })
                    }
                }
            }
            Phase::Stop => {
                match aws.stop_instance(self.instance()).await {
                    Err(error) if error.is_not_found() && self.just_launched(timing) => {
                        tracing::info!(
                            instance_id = self.instance(),
                            "EC2 does not know the builder yet: stopping again"
                        );
                        return Ok(Next::After(timing.min_poll, Phase::Stop));
                    }
                    sent => sent?,
                }
                tracing::info!(instance_id = self.instance(), "stopping the builder");
                Ok(Next::Now(Phase::AwaitStopped {
                    waited: Duration::ZERO,
                }))
            }
            Phase::AwaitStopped { waited } => {
                let instance_id = self.instance();
                let status = aws.instance_status(instance_id).await?;
                match status.as_ref().map(|s| s.state.as_str()) {
                    Some("stopped") => {
                        // A volume detached under the build (only data volumes can be, while
                        // the builder runs) would silently be missing from the image.
                        let status = status.as_ref().expect("matched Some");
                        let missing: Vec<&str> = status
                            .root_device
                            .iter()
                            .map(String::as_str)
                            .chain(
                                self.spec
                                    .block_device_mappings
                                    .iter()
                                    .map(|b| b.device_name.as_str()),
                            )
                            .filter(|device| !status.devices.iter().any(|d| d == device))
                            .collect();
                        if !missing.is_empty() {
                            return fail(format!(
                                "volume {} was detached from builder {instance_id} during the build; the image would lack it",
                                missing.join(", ")
                            ));
                        }
                        Ok(Next::Now(Phase::CreateImage))
                    }
                    Some("stopping" | "running" | "pending") if waited < timing.stop_timeout => {
                        let pause = timing.next_poll(waited);
                        Ok(Next::After(
                            pause,
                            Phase::AwaitStopped {
                                waited: waited + pause,
                            },
                        ))
                    }
                    Some("stopping" | "running" | "pending") => fail(format!(
                        "builder {instance_id} did not stop within {} s",
                        timing.stop_timeout.as_secs()
                    )),
                    other => fail(format!(
                        "builder {instance_id} is {} instead of stopping",
                        other.unwrap_or("gone")
                    )),
                }
            }
            Phase::CreateImage => {
                let resolved = self
                    .state
                    .resolved
                    .as_ref()
                    .expect("resolved before imaging");
                // A retried invocation may have requested the image already.
                if let Some(image) = aws
                    .images_tagged(&identity_tags(identity))
                    .await?
                    .into_iter()
                    .next()
                {
                    tracing::info!(image_id = %image.id, "image was already requested: following it");
                    self.state.image_id = Some(image.id);
                    return Ok(Next::Now(Phase::AwaitImage {
                        waited: Duration::ZERO,
                    }));
                }
                let request = ImageRequest {
                    instance_id: self.instance().to_owned(),
                    name: self.state.image_name.clone(),
                    description: self.spec.ami_description.clone(),
                    block_devices: self.spec.block_device_mappings.clone(),
                    tags: image_tags(identity, &self.spec, resolved, &self.state.outputs),
                };
                let image_id = match aws.create_image(&request).await {
                    Ok(image_id) => image_id,
                    // An earlier delivery's CreateImage went through, and the tag search above
                    // did not list its image yet (eventual consistency): the name finds it.
                    Err(error) if error.code.as_deref() == Some("InvalidAMIName.Duplicate") => {
                        match aws.image_named(&request.name).await? {
                            Some(image)
                                if identity_tags(identity)
                                    .iter()
                                    .all(|(k, v)| image.tags.get(k) == Some(v)) =>
                            {
                                tracing::info!(image_id = %image.id, "image was already requested (found by name): following it");
                                image.id
                            }
                            _ => return Err(error.into()),
                        }
                    }
                    Err(error) => return Err(error.into()),
                };
                tracing::info!(image_id = %image_id, name = %self.state.image_name, "image requested");
                self.state.image_id = Some(image_id);
                Ok(Next::Now(Phase::AwaitImage {
                    waited: Duration::ZERO,
                }))
            }
            Phase::AwaitImage { waited } => {
                let image_id = self.state.image_id.clone().expect("image requested");
                let image = aws.describe_image(&image_id).await?;
                let state = image.as_ref().map(|i| i.state.clone());
                match state.as_deref() {
                    Some("available") => {
                        let image = image.expect("matched Some");
                        tracing::info!(image_id = %image_id, snapshots = %image.snapshot_ids.join(","), "image available");
                        self.state.snapshot_ids = image.snapshot_ids;
                        Ok(Next::Now(Phase::TagSnapshots))
                    }
                    Some("pending") | None if waited < timing.image_timeout => {
                        let pause = timing.next_poll(waited);
                        Ok(Next::After(
                            pause,
                            Phase::AwaitImage {
                                waited: waited + pause,
                            },
                        ))
                    }
                    Some("pending") | None => fail(format!(
                        "image {image_id} was not available within {} s",
                        timing.image_timeout.as_secs()
                    )),
                    Some(state) => fail(format!(
                        "image {image_id} ended {state}: {}",
                        image
                            .and_then(|i| i.state_reason.clone())
                            .unwrap_or_else(|| "no reason given".into())
                    )),
                }
            }
            Phase::TagSnapshots => {
                let resolved = self.state.resolved.as_ref().expect("resolved");
                let mut tags = image_tags(identity, &self.spec, resolved, &self.state.outputs);
                tags.insert(
                    TAG_IMAGE.into(),
                    self.state.image_id.clone().expect("image exists"),
                );
                aws.tag(&self.state.snapshot_ids, &tags).await?;
                Ok(Next::Now(Phase::Finish))
            }
            Phase::Finish => {
                // A build resumed after its builder was terminated has none left to terminate.
                if let Some(instance_id) = self.state.instance_id.clone() {
                    let grace = if self.just_launched(timing) {
                        timing.not_found_grace
                    } else {
                        Duration::ZERO
                    };
                    match terminate_builder(aws, &instance_id, grace).await {
                        Ok(()) => tracing::info!(instance_id = %instance_id, "builder terminated"),
                        // It was seen stopped moments ago; an image that is done is not
                        // thrown away because EC2 does not list its builder right now.
                        Err(problem) if problem.contains(NOT_KNOWN) => {
                            tracing::warn!(instance_id = %instance_id, problem = %problem, "builder not confirmed terminated");
                        }
                        Err(message) => {
                            return Err(BuildError {
                                message,
                                command_ended: true,
                            });
                        }
                    }
                }
                Ok(Next::Now(Phase::Done))
            }
            Phase::Done => Ok(Next::Now(Phase::Done)),
        }
    }

    /// A re-delivered request (Lambda's retry after a crashed invocation, or a duplicate) finds
    /// what an earlier delivery created, by the request's tags, and carries on from there instead
    /// of launching a second builder. `None`: nothing to adopt, launch.
    async fn adopt(&mut self, aws: &Aws, identity: &Identity) -> Result<Option<Phase>, BuildError> {
        let tags = identity_tags(identity);
        let instances = aws.instances_tagged(&tags).await?;
        // The build began when its builder was launched, not when this delivery arrived:
        // TimeoutMinutes keeps counting from there.
        if let Some(first) = instances.iter().filter_map(|i| i.launched_ms).min() {
            self.state.started_at_ms = self.state.started_at_ms.min(first);
            self.state.launched_at_ms = Some(first);
        }
        let live = instances
            .iter()
            .find(|i| !matches!(i.state.as_str(), "terminated" | "shutting-down"));
        if let Some(image) = aws.images_tagged(&tags).await?.into_iter().next() {
            tracing::info!(image_id = %image.id, "resuming: this request's image already exists");
            self.state.outputs = outputs_of(&image);
            self.state.image_id = Some(image.id);
            self.state.image_name = image.name;
            self.state.instance_id = live.map(|i| i.id.clone());
            return Ok(Some(Phase::AwaitImage {
                waited: Duration::ZERO,
            }));
        }
        let Some(builder) = live else {
            return Ok(None);
        };
        tracing::info!(instance_id = %builder.id, state = %builder.state, "resuming: this request's builder already exists");
        self.state.instance_id = Some(builder.id.clone());
        let stopping = matches!(builder.state.as_str(), "stopping" | "stopped");
        let sent = if !stopping || self.spec.steps.iter().any(|s| !s.outputs.is_empty()) {
            aws.commands_sent_to(&builder.id).await?
        } else {
            Vec::new()
        };
        let resume = if stopping {
            Phase::AwaitStopped {
                waited: Duration::ZERO,
            }
        } else {
            // StartStep finds the steps already sent; the earlier ones succeeded, or the build
            // would have failed on them.
            match sent.iter().filter_map(|(_, c)| step_number(c)).max() {
                Some(index) => Phase::StartStep { index },
                None => Phase::AwaitOnline {
                    waited: Duration::ZERO,
                    state_checked: None,
                },
            }
        };
        // The outputs of the steps before the one resumed at (all of them, once stopping).
        let finished = match &resume {
            Phase::StartStep { index } => *index,
            Phase::AwaitStopped { .. } => self.spec.steps.len(),
            _ => 0,
        };
        for (index, step) in self.spec.steps.iter().enumerate().take(finished) {
            if step.outputs.is_empty() {
                continue;
            }
            let Some((command_id, _)) = sent.iter().find(|(_, c)| step_number(c) == Some(index))
            else {
                return fail(format!(
                    "resuming: step {:?} finished earlier but its SSM command is no longer listed, so its outputs are lost",
                    step.name
                ));
            };
            let result = aws.step_result(command_id, &builder.id).await?;
            let outputs =
                crate::spec::script::read_outputs(step, &result.stdout).or_else(|problem| {
                    fail(format!(
                        "resuming: step {:?} finished earlier, but {problem}",
                        step.name
                    ))
                })?;
            self.state.outputs.extend(outputs);
        }
        Ok(Some(resume))
    }

    fn instance(&self) -> &str {
        self.state
            .instance_id
            .as_deref()
            .expect("launched before this phase")
    }
}

/// While a wait lasts, asks EC2 every `state_check_every` (not at every poll) whether the
/// builder is still in one of the `expected` states; fails the build if it is not.
/// `polled`: how long the phase has waited, and when it last asked EC2. A builder EC2 does not
/// know yet, shortly after its launch, is not gone: eventual consistency.
async fn check_still_running(
    aws: &Aws,
    instance_id: &str,
    expected: &[&str],
    during: &str,
    (waited, state_checked): (Duration, &mut Option<Duration>),
    launched_at_ms: Option<u64>,
    timing: &Timing,
) -> Result<(), BuildError> {
    if state_checked.is_some_and(|at| waited < at + timing.state_check_every) {
        return Ok(());
    }
    *state_checked = Some(waited);
    let status = aws.instance_status(instance_id).await?;
    let state = status.as_ref().map(|s| s.state.clone());
    if state.is_none() && launched_within(launched_at_ms, timing.not_found_grace) {
        tracing::info!(instance_id, "EC2 does not list the new builder yet");
        // Ask again at the next poll.
        *state_checked = None;
        return Ok(());
    }
    match state.as_deref() {
        Some(state) if expected.contains(&state) => Ok(()),
        other => {
            // EC2's StateReason says why: a KMS key the launch could not use, capacity, ...
            let why = status
                .and_then(|s| s.state_reason)
                .map(|r| format!(" ({r})"))
                .unwrap_or_default();
            fail(format!(
                "builder {instance_id} is {} instead of running{during}{why}",
                other.unwrap_or("gone")
            ))
        }
    }
}

async fn resolve(aws: &Aws, spec: &AmiSpec) -> Result<Resolved, BuildError> {
    let source_image = match &spec.source {
        Source::Ami(id) => id.clone(),
        Source::Parameter(name) => {
            let value = aws.parameter_value(name).await.map_err(|e| BuildError {
                message: format!("SourceAmiParameter {name} could not be read: {e}"),
                command_ended: false,
            })?;
            // The value itself is never quoted: whoever holds the ServiceToken reads the
            // Reason, and the parameter may hold something that is not theirs to read.
            if !crate::spec::is_ami_id(&value) {
                return fail(format!(
                    "SourceAmiParameter {name} holds a value of {} characters that is not an AMI id (ami- and 8 or 17 hex digits)",
                    value.chars().count()
                ));
            }
            value
        }
    };
    let Some(image) = aws.describe_image(&source_image).await? else {
        return fail(format!(
            "source AMI {source_image} does not exist in this region or is not shared with this account"
        ));
    };
    if image.state != "available" {
        return fail(format!(
            "source AMI {source_image} is {}, not available",
            image.state
        ));
    }
    let architecture = image.architecture.clone();
    let instance_type = spec
        .instance_type
        .clone()
        .unwrap_or_else(|| default_instance_type(&architecture).into());
    let fingerprint = crate::spec::fingerprint::of(spec, &source_image, &instance_type);
    tracing::info!(source_image = %source_image, architecture = %architecture, "source resolved");
    Ok(Resolved {
        source_image,
        architecture,
        instance_type,
        fingerprint,
    })
}

/// What EC2 would refuse at launch, found before anything is launched, each naming its property:
/// the instance type exists and runs the source AMI's architecture, the subnet and the security
/// groups exist, and the groups are in the subnet's VPC. (The instance profile is left to
/// RunInstances, which names it: reading IAM would need one more permission.)
async fn check_where_it_runs(
    aws: &Aws,
    spec: &AmiSpec,
    source_image: &str,
    architecture: &str,
    instance_type: &str,
) -> Result<(), BuildError> {
    match aws.instance_type_architectures(instance_type).await? {
        None => {
            return fail(format!(
                "InstanceType: {instance_type} does not exist in this region"
            ));
        }
        Some(supported) if !supported.iter().any(|a| a == architecture) => {
            return fail(format!(
                "InstanceType: {instance_type} is {}, SourceAmi {source_image} is {architecture}",
                supported.join("/")
            ));
        }
        Some(_) => {}
    }
    let subnet_vpc = match &spec.subnet_id {
        Some(subnet) => match aws.subnet_vpc(subnet).await? {
            Some(vpc) => Some(vpc),
            None => return fail(format!("SubnetId: {subnet} does not exist in this region")),
        },
        None => None,
    };
    if spec.security_group_ids.is_empty() {
        return Ok(());
    }
    let groups = aws.security_group_vpcs(&spec.security_group_ids).await?;
    let missing: Vec<&str> = spec
        .security_group_ids
        .iter()
        .filter(|g| !groups.contains_key(*g))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return fail(format!(
            "SecurityGroupIds: {} does not exist in this region",
            missing.join(", ")
        ));
    }
    let vpcs: BTreeSet<&str> = groups.values().map(String::as_str).collect();
    if vpcs.len() > 1 {
        return fail(format!(
            "SecurityGroupIds: the groups are in different VPCs ({})",
            groups
                .iter()
                .map(|(g, v)| format!("{g} in {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if let (Some(subnet_vpc), Some(group_vpc)) = (&subnet_vpc, vpcs.first())
        && subnet_vpc != group_vpc
    {
        return fail(format!(
            "SecurityGroupIds: {} is in {group_vpc}, SubnetId {} is in {subnet_vpc}",
            spec.security_group_ids.join(", "),
            spec.subnet_id.as_deref().unwrap_or_default()
        ));
    }
    Ok(())
}

/// The comment a step's SSM command carries; it is how a resumed build recognises the step.
fn step_comment(index: usize, total: usize, name: &str) -> String {
    format!("ecs-ami step {}/{total}: {name}", index + 1)
}

/// The step index a command's comment names, if it is one of ours.
fn step_number(comment: &str) -> Option<usize> {
    let rest = comment.strip_prefix("ecs-ami step ")?;
    let (number, _) = rest.split_once('/')?;
    number.parse::<usize>().ok()?.checked_sub(1)
}

/// Burstable general-purpose types: enough memory for `dnf update` and Docker pulls, cheap for
/// the few minutes a build runs.
pub fn default_instance_type(architecture: &str) -> &'static str {
    if architecture == "arm64" {
        "t4g.medium"
    } else {
        "t3.medium"
    }
}

/// Stack and logical id as the name's prefix: see [`unique_image_name`].
pub fn default_image_name(identity: &Identity, utc_stamp: String) -> String {
    let prefix = format!("{}-{}", identity.stack_name(), identity.logical_id);
    unique_image_name(&prefix, identity, utc_stamp)
}

/// `PREFIX-YYYYMMDDTHHMMSSZ-HASH`: readable in the console, and unique per build. EC2 refuses a
/// second image with a name in use in the account and region (`InvalidAMIName.Duplicate`), and
/// the image a rebuild replaces exists until CloudFormation deletes it after the update, so an
/// `AmiName` given by the user is a prefix too. The short request hash keeps two builds in the
/// same second apart. AMI names allow only a few punctuation marks.
pub fn unique_image_name(prefix: &str, identity: &Identity, utc_stamp: String) -> String {
    let raw = format!(
        "{prefix}-{utc_stamp}-{}",
        &short_hash(&identity.request_id)[..6]
    );
    let cleaned: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "()[] ./-'@_".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    if cleaned.len() <= 128 {
        cleaned
    } else {
        // Keep the distinguishing end (time and hash).
        cleaned[cleaned.len() - 128..].to_owned()
    }
}

/// Derived from the request, so a re-delivered event cannot launch a second builder.
pub fn client_token(identity: &Identity) -> String {
    format!("ecs-ami-{}", &identity.digest()[..48])
}

pub fn identity_tags(identity: &Identity) -> BTreeMap<String, String> {
    BTreeMap::from([
        (TAG_STACK.to_owned(), identity.stack_id.clone()),
        (TAG_LOGICAL.to_owned(), identity.logical_id.clone()),
        (TAG_REQUEST.to_owned(), identity.request_id.clone()),
    ])
}

fn resource_tags(identity: &Identity) -> BTreeMap<String, String> {
    BTreeMap::from([
        (TAG_STACK.to_owned(), identity.stack_id.clone()),
        (TAG_LOGICAL.to_owned(), identity.logical_id.clone()),
    ])
}

fn image_tags(
    identity: &Identity,
    spec: &AmiSpec,
    resolved: &Resolved,
    outputs: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut tags = user_tags(spec, outputs, &resolved.source_image);
    for (name, value) in outputs {
        tags.insert(format!("{TAG_OUTPUT_PREFIX}{name}"), value.clone());
    }
    tags.extend(identity_tags(identity));
    tags.insert(TAG_FINGERPRINT.into(), resolved.fingerprint.clone());
    tags.insert(
        TAG_PROPERTIES.into(),
        crate::spec::fingerprint::of_request(spec),
    );
    tags.insert(TAG_SOURCE.into(), resolved.source_image.clone());
    tags
}

/// The tags the user asked for: `Tags`, and `OutputTags` with the values the steps handed back
/// (or the source AMI's id, for `SourceImageId`).
fn user_tags(
    spec: &AmiSpec,
    outputs: &BTreeMap<String, String>,
    source_image: &str,
) -> BTreeMap<String, String> {
    let mut tags = spec.tags.clone();
    for (key, output) in &spec.output_tags {
        let value = if output == SOURCE_IMAGE_ATTRIBUTE {
            Some(source_image)
        } else {
            outputs.get(output).map(String::as_str)
        };
        if let Some(value) = value {
            tags.insert(key.clone(), value.to_owned());
        }
    }
    tags
}

/// The step outputs an image was built with, from its tags.
fn outputs_of(image: &Image) -> BTreeMap<String, String> {
    image
        .tags
        .iter()
        .filter_map(|(key, value)| {
            let name = key.strip_prefix(TAG_OUTPUT_PREFIX)?;
            Some((name.to_owned(), value.clone()))
        })
        .collect()
}

fn owned_by(image: &Image, identity: &Identity) -> bool {
    image.tags.get(TAG_STACK) == Some(&identity.stack_id)
        && image.tags.get(TAG_LOGICAL) == Some(&identity.logical_id)
}

fn image_outcome(image: &Image) -> Outcome {
    let mut data = BTreeMap::new();
    data.insert("ImageId".into(), image.id.clone());
    data.insert("ImageName".into(), image.name.clone());
    data.insert(
        "SourceImageId".into(),
        image.tags.get(TAG_SOURCE).cloned().unwrap_or_default(),
    );
    data.insert("SnapshotIds".into(), image.snapshot_ids.join(","));
    data.insert(
        "Fingerprint".into(),
        image.tags.get(TAG_FINGERPRINT).cloned().unwrap_or_default(),
    );
    data.extend(outputs_of(image));
    Outcome::success(image.id.clone(), data)
}

/// The last `lines` lines of `text`, at most `max` bytes.
fn tail(text: &str, lines: usize, max: usize) -> String {
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

pub async fn create(aws: &Aws, identity: &Identity, spec: AmiSpec, timing: &Timing) -> Progress {
    Build::new(spec, identity).run(aws, identity, timing).await
}

/// Ends a build that an invocation could not hand over: cleanup, and a FAILED outcome saying why.
pub async fn abandon(
    aws: &Aws,
    identity: &Identity,
    spec: AmiSpec,
    state: BuildState,
    why: &str,
) -> Outcome {
    let build = Build::resume(spec, state);
    let message = format!(
        "could not hand the build over to a fresh invocation while {}: {why}",
        build.state.phase.name()
    );
    match build
        .fail_and_clean(
            aws,
            identity,
            &crate::cfn::failed_create_physical_id(identity),
            message,
            true,
            // Called when the invocation's time is up: the caller bounds the retries.
            Timing::default().not_found_grace,
        )
        .await
    {
        Progress::Finished(outcome) => outcome,
        Progress::Paused(_) | Progress::Yielded | Progress::Cancelled(_) => {
            unreachable!("cleanup always finishes")
        }
    }
}

/// A rebuilding Update that fails keeps the resource on its existing image: a different physical
/// id here would make CloudFormation treat the failure as a replacement.
pub fn keep_existing_image_on_failure(physical_id: &str, progress: Progress) -> Progress {
    match progress {
        Progress::Finished(outcome) if outcome.status == crate::cfn::Status::Failed => {
            Progress::Finished(Outcome {
                physical_id: physical_id.to_owned(),
                reason: outcome
                    .reason
                    .map(|r| format!("Update {r}; the existing image {physical_id} is unchanged")),
                ..outcome
            })
        }
        other => other,
    }
}

/// Update: keep the image when nothing that shapes its content changed, reuse an earlier image of
/// this resource with the wanted content (a rollback), or build a new one.
pub async fn update(
    aws: &Aws,
    identity: &Identity,
    physical_id: &str,
    (spec, old_request): (AmiSpec, Option<String>),
    timing: &Timing,
) -> Progress {
    if let Some(plan) = roll_back(aws, identity, physical_id, &spec, old_request).await {
        return Progress::Finished(plan);
    }
    match retag_or_reuse(aws, identity, physical_id, &spec).await {
        UpdatePlan::Answer(outcome) => Progress::Finished(outcome),
        UpdatePlan::Rebuild(resolved) => {
            let build = Build::new(spec, identity).already_resolved(resolved);
            keep_existing_image_on_failure(physical_id, build.run(aws, identity, timing).await)
        }
    }
}

/// What an Update comes to before any build.
enum UpdatePlan {
    /// Retagged in place, reused an earlier image, or failed: answer now.
    Answer(Outcome),
    /// The content changed: build, from the source already resolved here.
    Rebuild(Resolved),
}

/// An Update back to properties this resource already built an image from, while the previous
/// request wanted other content: CloudFormation rolling back (after a failed update, or after
/// another resource failed). The image built from exactly these properties is returned, as they
/// state it: the source parameter is not resolved again, so a release published meanwhile does
/// not turn the rollback into a rebuild (which could fail and leave the stack in
/// UPDATE_ROLLBACK_FAILED). `None`: not a rollback, or no such image left; the Update goes on.
async fn roll_back(
    aws: &Aws,
    identity: &Identity,
    physical_id: &str,
    spec: &AmiSpec,
    old_request: Option<String>,
) -> Option<Outcome> {
    let wanted = crate::spec::fingerprint::of_request(spec);
    if old_request.is_none_or(|old| old == wanted) {
        return None;
    }
    let mut tags = resource_tags(identity);
    tags.insert(TAG_PROPERTIES.into(), wanted);
    let images = match aws.images_tagged(&tags).await {
        Ok(images) => images,
        Err(error) => {
            return Some(Outcome::failed(
                physical_id,
                format!("Update could not look for the image to roll back to: {error}"),
            ));
        }
    };
    let mut available: Vec<Image> = images
        .into_iter()
        .filter(|i| i.state == "available")
        .collect();
    // The current image first, if it is one of them (a rollback after this resource's own
    // failed update keeps it).
    available.sort_by_key(|i| i.id != physical_id);
    let image = available.into_iter().next()?;
    tracing::info!(image_id = %image.id, "rolling back to the image built from these properties");
    Some(match retag(aws, &image, spec).await {
        Ok(()) => image_outcome(&image),
        Err(error) => Outcome::failed(
            physical_id,
            format!(
                "Update could not retag image {} to roll back to it: {error}",
                image.id
            ),
        ),
    })
}

/// Decides the Update: retag in place, reuse an earlier image of this resource (a rollback), or
/// rebuild.
async fn retag_or_reuse(
    aws: &Aws,
    identity: &Identity,
    physical_id: &str,
    spec: &AmiSpec,
) -> UpdatePlan {
    let resolved = match resolve(aws, spec).await {
        Ok(resolved) => resolved,
        Err(error) => {
            return UpdatePlan::Answer(Outcome::failed(
                physical_id,
                format!(
                    "Update failed while resolving the source AMI: {}; the existing image {physical_id} is unchanged",
                    error.message
                ),
            ));
        }
    };
    let current = if crate::spec::is_ami_id(physical_id) {
        match aws.describe_image(physical_id).await {
            Ok(image) => image,
            Err(error) => {
                return UpdatePlan::Answer(Outcome::failed(
                    physical_id,
                    format!("Update could not read the existing image: {error}"),
                ));
            }
        }
    } else {
        None
    };
    if let Some(image) = current.filter(|i| owned_by(i, identity) && i.state == "available")
        && image.tags.get(TAG_FINGERPRINT) == Some(&resolved.fingerprint)
    {
        return UpdatePlan::Answer(match retag(aws, &image, spec).await {
            Ok(()) => {
                tracing::info!(image_id = %image.id, "content unchanged: tags and description updated in place");
                let refreshed = aws
                    .describe_image(&image.id)
                    .await
                    .ok()
                    .flatten()
                    .unwrap_or(image);
                image_outcome(&refreshed)
            }
            Err(error) => Outcome::failed(
                physical_id,
                format!("Update could not retag image {physical_id}: {error}"),
            ),
        });
    }
    let mut wanted = resource_tags(identity);
    wanted.insert(TAG_FINGERPRINT.into(), resolved.fingerprint.clone());
    match aws.images_tagged(&wanted).await {
        Ok(images) => {
            if let Some(image) = images.into_iter().find(|i| i.state == "available") {
                tracing::info!(image_id = %image.id, "an earlier image of this resource has the wanted content: reusing it");
                if let Err(error) = retag(aws, &image, spec).await {
                    return UpdatePlan::Answer(Outcome::failed(
                        physical_id,
                        format!("Update could not retag reused image {}: {error}", image.id),
                    ));
                }
                return UpdatePlan::Answer(image_outcome(&image));
            }
        }
        Err(error) => {
            return UpdatePlan::Answer(Outcome::failed(
                physical_id,
                format!("Update could not look for earlier images: {error}"),
            ));
        }
    }
    UpdatePlan::Rebuild(resolved)
}

/// Bring the image's and its snapshots' user tags and description to what the spec says.
async fn retag(aws: &Aws, image: &Image, spec: &AmiSpec) -> Result<(), AwsError> {
    let mut resources = vec![image.id.clone()];
    resources.extend(image.snapshot_ids.iter().cloned());
    let source = image.tags.get(TAG_SOURCE).map(String::as_str);
    let mut wanted = user_tags(spec, &outputs_of(image), source.unwrap_or_default());
    // The image now stands for these properties: a later rollback looks them up, and a later
    // return to the properties it was first built from must not find it (it may be an older
    // release than they would resolve to now).
    wanted.insert(
        TAG_PROPERTIES.into(),
        crate::spec::fingerprint::of_request(spec),
    );
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
    Ok(())
}

/// Delete: deregister the image and delete every snapshot it used. An id that is not an image, an
/// image already gone, and an image some other resource built all end in SUCCESS, and say so.
pub async fn delete(aws: &Aws, identity: &Identity, physical_id: &str) -> Outcome {
    if !crate::spec::is_ami_id(physical_id) {
        return Outcome::success(physical_id, BTreeMap::new())
            .with_reason(format!("{physical_id} is not an AMI id (its Create failed, or was cancelled, before answering with an image): nothing to delete."));
    }
    let image = match aws.describe_image(physical_id).await {
        Ok(image) => image,
        Err(error) => {
            return Outcome::failed(
                physical_id,
                format!("Delete could not read image {physical_id}: {error}"),
            );
        }
    };
    if let Some(image) = &image
        && !owned_by(image, identity)
    {
        return Outcome::success(physical_id, BTreeMap::new()).with_reason(format!(
            "image {physical_id} was not built by {}/{}: left untouched",
            identity.stack_name(),
            identity.logical_id
        ));
    }
    let mut snapshots: Vec<String> = image
        .as_ref()
        .map(|i| i.snapshot_ids.clone())
        .unwrap_or_default();
    let mut by_tag = resource_tags(identity);
    by_tag.insert(TAG_IMAGE.into(), physical_id.to_owned());
    match aws.snapshots_tagged(&by_tag).await {
        Ok(found) => snapshots.extend(found),
        Err(error) => {
            return Outcome::failed(
                physical_id,
                format!("Delete could not list the snapshots of {physical_id}: {error}"),
            );
        }
    }
    snapshots.sort();
    snapshots.dedup();
    if image.is_some() {
        if let Err(error) = aws.deregister_image(physical_id).await {
            return Outcome::failed(
                physical_id,
                format!("Delete could not deregister {physical_id}: {error}"),
            );
        }
        tracing::info!(image_id = physical_id, "image deregistered");
    }
    let mut failures = Vec::new();
    let until = tokio::time::Instant::now() + SNAPSHOT_RELEASE_GRACE;
    for snapshot in &snapshots {
        match delete_released_snapshot(aws, snapshot, until).await {
            Ok(()) => tracing::info!(snapshot_id = %snapshot, "snapshot deleted"),
            Err(error) => failures.push(format!("{snapshot} ({error})")),
        }
    }
    if !failures.is_empty() {
        return Outcome::failed(
            physical_id,
            format!(
                "image {physical_id} deregistered but snapshots remain: {}",
                failures.join(", ")
            ),
        );
    }
    let what = if image.is_some() {
        "deregistered"
    } else {
        "was already gone"
    };
    Outcome::success(physical_id, BTreeMap::new()).with_reason(format!(
        "image {physical_id} {what}; {} snapshot(s) deleted",
        snapshots.len()
    ))
}

/// The answer for an image a SUCCESS already named, sent again to a later delivery of the same
/// request: its attributes as the image's tags keep them, or only its id when it is gone.
pub async fn answered_image(aws: &Aws, identity: &Identity, image_id: &str) -> Outcome {
    if crate::spec::is_ami_id(image_id)
        && let Ok(Some(image)) = aws.describe_image(image_id).await
        && owned_by(&image, identity)
    {
        return image_outcome(&image);
    }
    Outcome::success(image_id, BTreeMap::new())
}

/// What a request did about builds of its resource that other requests left in flight.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Superseded {
    /// A sentence per build stopped: which request, and what was removed.
    pub stopped: Vec<String>,
    /// Something of those builds could not be removed (the sentences say what). Their leases
    /// are kept, so that a retry of the request finds them again.
    pub left_something: bool,
}

impl Superseded {
    /// The sentences, to append to a Reason; empty when no build was stopped.
    pub fn report(&self) -> String {
        self.stopped
            .iter()
            .map(|s| format!(" {s}."))
            .collect::<String>()
    }
}

/// Stops the builds of `identity`'s resource that other requests still have in flight, and
/// removes what they made.
///
/// CloudFormation sends one request at a time for a resource, so a build of another request
/// that still holds its lease is one CloudFormation gave up on: a Create or Update it cancelled
/// because another resource failed (it then sends a Delete with a physical id of its own making,
/// or rolls the Update back with another Update), or a delivery that died unfinished. Each is
/// marked cancelled in its record (one that answered first is left alone: its answer stands),
/// given `timing.supersede_wait` to notice (it reads its record every
/// `timing.record_check_every`), stop and clean up after itself; then whatever still carries its
/// request's tags is removed here.
pub async fn supersede(
    aws: &Aws,
    identity: &Identity,
    current_image: Option<&str>,
    timing: &Timing,
) -> Result<Superseded, AwsError> {
    let mut result = Superseded::default();
    for (request_id, lease_path) in lease::in_flight(aws, identity).await? {
        let target = Identity {
            request_id: request_id.clone(),
            ..identity.clone()
        };
        // A lease that ran out more than a day ago outlived its request's record (see
        // `ledger::RETENTION`): whether that request answered can no longer be told, so nothing
        // of it is touched; only the lease goes.
        let expired_long_ago = lease::expiry(aws, &lease_path)
            .await?
            .is_some_and(|expires| {
                expires + (ledger::RETENTION.as_millis() as u64) < clock::now_ms()
            });
        if expired_long_ago {
            tracing::warn!(request = %request_id, "a lease over a day old: removing only the lease");
            lease::release_all(aws, &lease_path).await?;
            continue;
        }
        let cancel = ledger::Record::cancelled(identity);
        if let Some(ledger::Record::Answered { .. }) = ledger::write(aws, &target, &cancel).await? {
            // Answered before this request came, and its invocation died before deleting the
            // lease: CloudFormation has its answer; only the lease is left.
            lease::release_all(aws, &lease_path).await?;
            continue;
        }
        tracing::info!(cancelled = %request_id, "a build CloudFormation gave up on is in flight: cancelling it");
        let started = tokio::time::Instant::now();
        let until = started + within_invocation(timing.supersede_wait);
        while tokio::time::Instant::now() < until {
            match lease::expiry(aws, &lease_path).await? {
                Some(expires) if expires > clock::now_ms() => {
                    tokio::time::sleep(timing.min_poll).await;
                }
                _ => break,
            }
        }
        let stopped_in = started.elapsed().as_secs();
        let (report, complete) = clean_up_all(
            aws,
            &target,
            &Leftovers::default(),
            timing.not_found_grace,
            current_image,
        )
        .await;
        if complete {
            lease::release_all(aws, &lease_path).await?;
        } else {
            result.left_something = true;
        }
        let what = if report == NOTHING_CREATED {
            "it had removed what it made".to_owned()
        } else {
            format!(
                "left over and removed here: {}",
                report.trim_start_matches("Cleanup: ")
            )
        };
        result.stopped.push(format!(
            "Stopped the build of request {request_id}, which CloudFormation gave up on, in {stopped_in} s; {what}"
        ));
    }
    Ok(result)
}

/// Whether an instance launched at `launched_at_ms` (on the [`clock`]) is younger than `window`.
fn launched_within(launched_at_ms: Option<u64>, window: Duration) -> bool {
    launched_at_ms
        .is_some_and(|at| u128::from(clock::now_ms().saturating_sub(at)) < window.as_millis())
}

/// How [`terminate_builder`] says that EC2 answered NotFound.
const NOT_KNOWN: &str = "EC2 answered NotFound";

/// Terminates the builder. EC2 answers `InvalidInstanceID.NotFound` for an instance it does not
/// know yet (eventual consistency), so NotFound is never taken for "terminated": the call is
/// repeated until EC2 accepts it or `grace` runs out, and then the builder is reported as not
/// confirmed terminated. (A terminated instance stays visible for about an hour, and terminating
/// it again succeeds.)
async fn terminate_builder(aws: &Aws, instance_id: &str, grace: Duration) -> Result<(), String> {
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
const SNAPSHOT_RELEASE_GRACE: Duration = Duration::from_secs(90);

tokio::task_local! {
    /// When the retries of cleanup must have stopped, so that CloudFormation is still answered
    /// within the invocation: set by the handler for each operation.
    pub static RETRIES_UNTIL: tokio::time::Instant;
}

/// `grace`, cut to what is left before [`RETRIES_UNTIL`] (none set: `grace`).
fn within_invocation(grace: Duration) -> Duration {
    RETRIES_UNTIL
        .try_with(|until| until.saturating_duration_since(tokio::time::Instant::now()))
        .map_or(grace, |left| grace.min(left))
}

/// Deletes a snapshot of an image just deregistered. For a while after DeregisterImage, EC2 may
/// still answer `InvalidSnapshot.InUse` for its snapshots: that answer is retried until `grace`
/// runs out, then reported with the last error.
async fn delete_released_snapshot(
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
}

const NOTHING_CREATED: &str = "Cleanup: nothing had been created";

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
async fn clean_up_all(
    aws: &Aws,
    identity: &Identity,
    known: &Leftovers,
    not_found_grace: Duration,
    keep: Option<&str>,
) -> (String, bool) {
    let tags = identity_tags(identity);
    let mut done = Vec::new();
    let mut left = Vec::new();

    // Each builder, with when it was launched where known.
    let mut instances: BTreeMap<String, Option<u64>> = known
        .instance_id
        .iter()
        .map(|id| (id.clone(), known.launched_at_ms))
        .collect();
    match aws.instances_tagged(&tags).await {
        Ok(found) => {
            for instance in found.into_iter().filter(|i| i.state != "terminated") {
                let launched = instance.launched_ms;
                let entry = instances.entry(instance.id).or_insert(launched);
                *entry = entry.or(launched);
            }
        }
        Err(error) => left.push(format!("builder instances could not be listed ({error})")),
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
            Ok(()) => done.push(format!("terminated builder {instance}")),
            Err(error) => left.push(error),
        }
    }

    let mut images: Vec<Image> = Vec::new();
    match aws.images_tagged(&tags).await {
        Ok(found) => images.extend(found),
        Err(error) => left.push(format!("images could not be listed ({error})")),
    }
    if let Some(id) = &known.image_id
        && !images.iter().any(|i| &i.id == id)
    {
        match aws.describe_image(id).await {
            Ok(Some(image)) => images.push(image),
            Ok(None) => {}
            Err(error) => left.push(format!("image {id} ({error})")),
        }
    }
    let mut snapshots = Vec::new();
    let kept: Vec<String> = images
        .iter()
        .filter(|i| Some(i.id.as_str()) == keep)
        .flat_map(|i| i.snapshot_ids.iter().cloned())
        .collect();
    images.retain(|i| Some(i.id.as_str()) != keep);
    for image in &images {
        match aws.deregister_image(&image.id).await {
            Ok(()) => {
                done.push(format!("deregistered half-made image {}", image.id));
                snapshots.extend(image.snapshot_ids.iter().cloned());
            }
            Err(error) => left.push(format!("image {} ({error})", image.id)),
        }
    }
    if let Ok(found) = aws.snapshots_tagged(&tags).await {
        snapshots.extend(found);
    }
    snapshots.sort();
    snapshots.dedup();
    snapshots.retain(|snapshot| !kept.contains(snapshot));
    let until = tokio::time::Instant::now() + SNAPSHOT_RELEASE_GRACE;
    for snapshot in &snapshots {
        match delete_released_snapshot(aws, snapshot, until).await {
            Ok(()) => done.push(format!("deleted snapshot {snapshot}")),
            Err(error) => left.push(format!("snapshot {snapshot} ({error})")),
        }
    }
    match aws.detached_volumes_tagged(&tags).await {
        Ok(volumes) => {
            for volume in volumes {
                match aws.delete_volume(&volume).await {
                    Ok(()) => done.push(format!("deleted volume {volume}")),
                    Err(error) => left.push(format!("volume {volume} ({error})")),
                }
            }
        }
        Err(error) => left.push(format!("volumes could not be listed ({error})")),
    }

    let mut report = if done.is_empty() {
        NOTHING_CREATED.to_owned()
    } else {
        format!("Cleanup: {}", done.join(", "))
    };
    if !left.is_empty() {
        report.push_str(&format!(
            ". NOT cleaned up, remove by hand (tagged {TAG_REQUEST}={}): {}",
            identity.request_id,
            left.join(", ")
        ));
    }
    (report, left.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> Identity {
        Identity {
            stack_id: "arn:aws:cloudformation:us-east-1:123456789012:stack/images/guid".into(),
            logical_id: "Ami".into(),
            request_id: "8f14e45f-ceea-467f-a0e6-ff4d5c6a2a10".into(),
        }
    }

    #[test]
    fn default_names_are_readable_unique_and_valid() {
        // An AmiName is a prefix: a rebuild (another request) never takes the name in use.
        let given = unique_image_name("team ecs (base)", &identity(), "20261125T083000Z".into());
        assert!(
            given.starts_with("team ecs (base)-20261125T083000Z-"),
            "{given}"
        );
        let mut rebuild = identity();
        rebuild.request_id = "another-request".into();
        let again = unique_image_name("team ecs (base)", &rebuild, "20261125T083000Z".into());
        assert_ne!(given, again);
        let name = default_image_name(&identity(), "20261125T083000Z".into());
        assert!(name.starts_with("images-Ami-20261125T083000Z-"), "{name}");
        let other = Identity {
            request_id: "another".into(),
            ..identity()
        };
        assert_ne!(name, default_image_name(&other, "20261125T083000Z".into()));
        let long = Identity {
            stack_id: format!(
                "arn:aws:cloudformation:us-east-1:1:stack/{}/g",
                "s".repeat(200)
            ),
            ..identity()
        };
        let long_name = default_image_name(&long, "20261125T083000Z".into());
        assert_eq!(long_name.len(), 128);
        assert!(long_name.contains("20261125T083000Z"));
    }

    #[test]
    fn client_tokens_are_per_request_and_within_ec2_limits() {
        let token = client_token(&identity());
        assert!(token.len() <= 64);
        assert_eq!(token, client_token(&identity()));
        let other = Identity {
            request_id: "r2".into(),
            ..identity()
        };
        assert_ne!(token, client_token(&other));
    }

    #[test]
    fn polling_slows_down_with_waiting_within_bounds() {
        let timing = Timing::default();
        let within = |waited: u64, low_ms: u64, high_ms: u64| {
            for _ in 0..100 {
                let pause = timing.next_poll(Duration::from_secs(waited));
                assert!(
                    pause >= Duration::from_millis(low_ms)
                        && pause <= Duration::from_millis(high_ms),
                    "{waited} s waited: {pause:?}"
                );
            }
        };
        within(0, 900, 1000);
        within(15, 4500, 5000);
        within(600, 9000, 10_000);
    }

    #[test]
    fn step_comments_round_trip() {
        let comment = step_comment(2, 5, "install agents");
        assert_eq!(comment, "ecs-ami step 3/5: install agents");
        assert_eq!(step_number(&comment), Some(2));
        assert_eq!(step_number("someone else's command"), None);
        assert_eq!(step_number("ecs-ami step 0/1: x"), None);
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

    #[test]
    fn build_states_survive_serialization() {
        let spec = AmiSpec::parse(&serde_json::json!({
            "SourceAmi": "ami-12345678", "IamInstanceProfile": "p",
            "Steps": [{"Name": "a", "Commands": ["true"]}]
        }))
        .unwrap();
        let mut build = Build::new(spec, &identity());
        build.state.phase = Phase::AwaitStep {
            index: 0,
            command_id: "c".into(),
            waited: Duration::from_secs(3),
            state_checked: Some(Duration::from_secs(1)),
        };
        let saved = serde_json::to_string(&build.state).unwrap();
        assert_eq!(
            serde_json::from_str::<BuildState>(&saved).unwrap(),
            build.state
        );
    }
}
