//! Create (and a rebuilding Update) as a resumable state machine. [`Build::run`] is the loop: it
//! holds the build lease, keeps to `TimeoutMinutes`, hands over before the invocation ends, reads
//! the request's record (a newer request may have cancelled it), and runs one phase at a time.
//! Each phase is one function in `phases`, does one thing against AWS and says what comes next,
//! so the whole build is a value that can be saved between phases. A re-delivered request picks
//! up what an earlier delivery made (`resume`); the source is resolved and checked in
//! `source`.

mod container_images;
mod phases;
mod resume;
mod source;
mod state;

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::time::Duration;

use crate::aws::{Aws, AwsError, Image};
use crate::cfn::Identity;
use crate::engine::Context;
use crate::engine::Done;
use crate::engine::cleanup::{Cleanup, Leftovers, clean_up, launched_within};
use crate::engine::failure::{BuildError, Failed, Failure};
use crate::engine::kept::{self, Keeping};
use crate::engine::tags::{
    ImageAnswer, TAG_FINGERPRINT, TAG_SOURCE, container_images_of, default_image_name,
    image_answer, outputs_of, unique_image_name,
};
use crate::engine::{Timing, lease, ledger, time};
use crate::spec::AmiSpec;

pub use source::default_instance_type;
pub(crate) use source::{check_where_it_runs, resolve};
pub use state::{
    Build, BuildState, ImageMade, Launched, On, Origin, Phase, Progress, Resolved, Tested,
};

/// What follows a phase: the next one at once, or after a pause (a wait polling again).
enum Next {
    Run(Phase),
    Sleep(Duration, Phase),
}

/// What [`Build::run`] counts within one invocation.
#[derive(Default)]
struct InvocationCounts {
    /// Phases changed so far.
    phases: u32,
    /// When the request's record was last read.
    record_checked: Option<tokio::time::Instant>,
    /// How often the current phase was tried again after AWS throttled it.
    throttled: u32,
}

/// How long to wait before trying again what AWS throttled: `max_poll` or up to half less, at
/// random, so that the builds throttled together do not come back together.
fn throttled_pause(timing: &Timing) -> Duration {
    timing.max_poll.mul_f64(0.5 + 0.5 * fastrand::f64())
}

/// Sleeps `pause`, but never past the moment this invocation must hand over, nor so long that the
/// lease runs out unrenewed.
async fn pause_within(pause: Duration, timing: &Timing) {
    let pause = pause.min(timing.lease_ttl / 4);
    let pause = match timing.hand_over_at {
        Some(at) => pause.min(at.saturating_duration_since(tokio::time::Instant::now())),
        None => pause,
    };
    tokio::time::sleep(pause).await;
}

impl Build {
    pub fn new(spec: AmiSpec, identity: &Identity) -> Build {
        let image_name = match &spec.ami_name {
            Some(prefix) => unique_image_name(prefix, identity, time::utc_stamp()),
            None => default_image_name(identity, time::utc_stamp()),
        };
        let now = time::now_ms();
        Build {
            fresh: false,
            spec,
            state: BuildState {
                phase: Phase::Resolve,
                image_name,
                started_at_ms: now,
                phase_started_at_ms: now,
                hand_overs: 0,
                lease: None,
                resolved: None,
                outputs: BTreeMap::new(),
                builder: None,
                image: None,
                test_instance: None,
                tested: None,
                copies: Default::default(),
            },
        }
    }

    /// Starts past Resolve with a source the caller already resolved (an Update does, to compare
    /// fingerprints), instead of asking AWS again.
    pub(crate) fn already_resolved(mut self, resolved: Resolved) -> Build {
        self.state.resolved = Some(resolved);
        self.state.phase = Phase::Launch;
        self
    }

    /// Starts at `start` (the tests, or the copies) for an existing, available image of the
    /// resource: an Update whose `Tests` changed, or whose `Regions` lack copies. The image stays
    /// whatever happens.
    pub(crate) fn distribute_existing(
        spec: AmiSpec,
        identity: &Identity,
        image: &Image,
        start: Phase,
    ) -> Build {
        let mut build = Build::new(spec, identity);
        let tag = |key: &str| image.tags.get(key).cloned().unwrap_or_default();
        build.state.image_name = image.name.clone();
        build.state.resolved = Some(Resolved {
            source_image: tag(TAG_SOURCE),
            architecture: image.architecture.clone(),
            instance_type: String::new(),
            fingerprint: tag(TAG_FINGERPRINT),
            container_images: container_images_of(image),
        });
        build.state.image = Some(ImageMade {
            id: image.id.clone(),
            snapshot_ids: image.snapshot_ids.clone(),
            origin: Origin::Existing,
        });
        build.state.outputs = outputs_of(image);
        build.state.phase = start;
        build
    }

    /// Carries on a build that an earlier invocation handed over.
    pub fn resume(spec: AmiSpec, state: BuildState) -> Build {
        Build {
            spec,
            state,
            fresh: false,
        }
    }

    /// Runs phases until the build is done, fails, or this invocation should hand it over. On
    /// failure it cleans up and says what was left, so the caller only has to answer.
    pub async fn run(mut self, cx: &Context<'_>) -> Progress {
        match self.hold_lease(cx).await {
            Ok(true) => {}
            Ok(false) => return Progress::Yielded,
            Err(error) => {
                let failure = Failure::LeaseNotTaken(error);
                return self.fail_and_clean(cx, failure, true).await;
            }
        }
        let timing = cx.timing;
        let mut counts = InvocationCounts::default();
        loop {
            if self.state.phase == Phase::Done {
                // The lease stays until the answer is recorded (the handler then deletes it), so
                // that a request cancelling this one always finds it in flight or answered.
                match self.success_outcome() {
                    Ok(done) => return Progress::Finished(done),
                    Err(error) => {
                        let failure = Failure::In {
                            stage: self.state.phase.name(),
                            error,
                        };
                        return self.fail_and_clean(cx, failure, true).await;
                    }
                }
            }
            if let ControlFlow::Break(stop) = self.keep_lease(cx).await {
                return stop;
            }
            if let Some(failure) = self.past_timeout_minutes() {
                return self.fail_and_clean(cx, failure, true).await;
            }
            if self.hand_over_now(timing, &counts) {
                self.state.hand_overs += 1;
                tracing::info!(phase = ?self.state.phase, hand_overs = self.state.hand_overs, "handing the build over to a fresh invocation");
                return Progress::Paused(Box::new(self.state));
            }
            if let ControlFlow::Break(stop) = self.check_record(cx, &mut counts).await {
                return stop;
            }
            match self.take_step(cx, &mut counts).await {
                Ok(Some(pause)) => pause_within(pause, timing).await,
                Ok(None) => {}
                Err(failed) => return failed,
            }
        }
    }

    /// Renews the lease when half of it is left. Breaks with what to return when it was taken
    /// over (this invocation was presumed dead) or could not be renewed.
    async fn keep_lease(&mut self, cx: &Context<'_>) -> ControlFlow<Progress> {
        let timing = cx.timing;
        if self.lease_left_ms() >= timing.lease_ttl.as_millis() as u64 / 2 {
            return ControlFlow::Continue(());
        }
        match self.renew_lease(cx).await {
            Ok(true) => ControlFlow::Continue(()),
            Ok(false) => {
                tracing::warn!("another invocation took over this build: stopping here");
                ControlFlow::Break(Progress::Yielded)
            }
            // Throttled with a quarter of the lease or more still left (the SDK's retries took
            // time): the next turn renews it.
            Err(error)
                if error.is_throttled()
                    && self.lease_left_ms() >= timing.lease_ttl.as_millis() as u64 / 4 =>
            {
                tracing::warn!(problem = %error, "the build lease could not be renewed yet (throttled): trying again");
                ControlFlow::Continue(())
            }
            Err(error) => {
                let failure = Failure::LeaseNotRenewed(error);
                ControlFlow::Break(self.fail_and_clean(cx, failure, true).await)
            }
        }
    }

    /// How long the held lease has left, now.
    fn lease_left_ms(&self) -> u64 {
        self.state
            .lease
            .as_ref()
            .map_or(0, |l| l.expires_ms.saturating_sub(time::now_ms()))
    }

    /// `TimeoutMinutes` counts from the start, read each time: adopting an earlier delivery's
    /// builder moves the start back.
    fn past_timeout_minutes(&self) -> Option<Failure> {
        let now = time::now_ms();
        let deadline_ms = self.state.started_at_ms + u64::from(self.spec.timeout_minutes) * 60_000;
        (now >= deadline_ms).then(|| Failure::TimedOut {
            minutes: self.spec.timeout_minutes,
            stage: self.state.phase.name(),
            stage_ran: Duration::from_millis(now.saturating_sub(self.state.phase_started_at_ms)),
        })
    }

    /// This invocation's time is up (or every state is to be handed over, for the tests).
    fn hand_over_now(&self, timing: &Timing, counts: &InvocationCounts) -> bool {
        // Publishing may wait for Parameter Store, and put parameters back, for up to
        // `publish::LONGEST`: it starts only with that much time before the hand-over.
        let reserve = if self.state.phase == Phase::Publish {
            // Each region's parameters are published in turn.
            crate::engine::publish::LONGEST * (1 + self.spec.copy_parameters.len() as u32)
        } else {
            Duration::ZERO
        };
        let out_of_time = timing
            .hand_over_at
            .is_some_and(|at| tokio::time::Instant::now() + reserve >= at);
        out_of_time || (timing.hand_over_every_state && counts.phases > 0)
    }

    /// Reads the request's record once the lease is held (a newer request may have cancelled
    /// this one, or another delivery answered it, between the handler's read and the lease),
    /// then every `record_check_every`, and before a phase that creates something unless it was
    /// read within `record_fresh_for`. The first read of a Create's first invocation also asks
    /// whether a Delete cancelled it before it started (see [`ledger::Standing`]).
    async fn check_record(
        &mut self,
        cx: &Context<'_>,
        counts: &mut InvocationCounts,
    ) -> ControlFlow<Progress> {
        let Context {
            aws,
            identity,
            timing,
        } = *cx;
        let creates_something = matches!(
            self.state.phase,
            Phase::Launch
                | Phase::StartStep { .. }
                | Phase::CreateImage
                | Phase::LaunchTest
                | Phase::Copy
                | Phase::Publish
        );
        let since = counts.record_checked.map(|at| at.elapsed());
        let due = match since {
            None => true,
            Some(since) if creates_something => since >= timing.record_fresh_for,
            Some(since) => since >= timing.record_check_every,
        };
        if !due {
            return ControlFlow::Continue(());
        }
        counts.record_checked = Some(tokio::time::Instant::now());
        // A Create's first look: its cancelling Delete may have run before it took the lease
        // (and so not found it in flight). Nothing is launched until it got an answer.
        let issued_at = timing
            .create_issued_at
            .as_deref()
            .filter(|_| since.is_none() && self.state.hand_overs == 0);
        let mut standing = ledger::standing(aws, identity, issued_at).await;
        if issued_at.is_some() {
            for _ in 0..timing.throttled_tries {
                let Err(error) = &standing else { break };
                tracing::warn!(problem = %error, "could not read the request's record yet: trying again before launching anything");
                tokio::time::sleep(throttled_pause(timing)).await;
                standing = ledger::standing(aws, identity, issued_at).await;
            }
            if let Err(error) = standing {
                let failure = Failure::RecordUnreadable(error);
                return ControlFlow::Break(self.fail_and_clean(cx, failure, true).await);
            }
        }
        if let Ok(ledger::Standing {
            create_cancelled_by: Some(by),
            ..
        }) = &standing
        {
            ledger::record_create_cancelled(aws, identity, by).await;
            return ControlFlow::Break(self.stop_cancelled(cx, by).await);
        }
        match standing.map(|s| s.record) {
            Ok(None) => ControlFlow::Continue(()),
            Ok(Some(ledger::Record::Cancelled { by, .. })) => {
                ControlFlow::Break(self.stop_cancelled(cx, &by).await)
            }
            Ok(Some(ledger::Record::Answered { .. })) => {
                tracing::warn!("another delivery of this request has answered it: stopping here");
                self.release_lease(aws, &lease::path(identity)).await;
                ControlFlow::Break(Progress::Yielded)
            }
            Err(error) => {
                tracing::warn!(problem = %error, "could not read the request's record; carrying on");
                ControlFlow::Continue(())
            }
        }
    }

    /// Runs the current phase and moves to the next: `Ok` with the pause before it, if any; `Err`
    /// with the failed build, cleaned up.
    async fn take_step(
        &mut self,
        cx: &Context<'_>,
        counts: &mut InvocationCounts,
    ) -> Result<Option<Duration>, Progress> {
        let timing = cx.timing;
        let (next, pause) = match self.advance(cx).await {
            Ok(Next::Run(phase)) => (phase, None),
            Ok(Next::Sleep(pause, phase)) => (phase, Some(pause)),
            // Many builds in one account share its request rates: the phase is tried again
            // (within TimeoutMinutes) rather than the build failed.
            Err(error) if error.throttled() && counts.throttled < timing.throttled_tries => {
                counts.throttled += 1;
                // What the throttled attempt did before its refused call is not known: the
                // phase looks again for what it may have made (see `Build::fresh`).
                self.fresh = false;
                tracing::warn!(phase = ?self.state.phase, problem = %error, tries = counts.throttled, "throttled by AWS past the SDK's retries: trying the phase again");
                return Ok(Some(throttled_pause(timing)));
            }
            Err(error) => {
                let cancel_command = !error.command_ended();
                let failure = Failure::In {
                    stage: self.state.phase.name(),
                    error,
                };
                return Err(self.fail_and_clean(cx, failure, cancel_command).await);
            }
        };
        // The phase got through: a later throttle starts its tries afresh.
        counts.throttled = 0;
        let changed = std::mem::discriminant(&next) != std::mem::discriminant(&self.state.phase)
            || matches!((&self.state.phase, &next), (Phase::StartStep { on: x, index: a }, Phase::StartStep { on: y, index: b }) if (x, a) != (y, b));
        self.state.phase = next;
        if changed {
            self.state.phase_started_at_ms = time::now_ms();
            counts.phases += 1;
        }
        Ok(pause)
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
    async fn hold_lease(&mut self, cx: &Context<'_>) -> Result<bool, AwsError> {
        let Context {
            aws,
            identity,
            timing,
        } = *cx;
        let token = self.lease_token();
        // Carried in a hand-over payload: succeeded rather than shared.
        let handed = self.state.lease.clone();
        let mut seen_until = None;
        loop {
            let claim = match (&handed, seen_until) {
                (Some(handed), _) => lease::succeed(aws, identity, handed, timing.lease_ttl).await,
                (None, None) => lease::claim_first(aws, identity, &token, timing.lease_ttl).await,
                (None, Some(_)) => lease::claim(aws, identity, &token, timing.lease_ttl).await,
            };
            let claim = match claim {
                // Many builds starting together share Parameter Store's rate: try again.
                Err(error)
                    if error.is_throttled()
                        && timing.hand_over_at.is_none_or(|at| {
                            tokio::time::Instant::now() + timing.max_poll * 2 < at
                        }) =>
                {
                    tracing::warn!(problem = %error, "the build lease could not be taken yet (throttled): trying again");
                    tokio::time::sleep(throttled_pause(timing)).await;
                    continue;
                }
                other => other?,
            };
            match claim {
                lease::Claim::Held { lease, fresh } => {
                    self.state.lease = Some(lease);
                    self.fresh = fresh;
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
                        until_ms.saturating_sub(time::now_ms()) + 500 + fastrand::u64(..500),
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
    async fn renew_lease(&mut self, cx: &Context<'_>) -> Result<bool, AwsError> {
        let Context {
            aws,
            identity,
            timing,
        } = *cx;
        if let Some(held) = &self.state.lease
            && let Some(extended) = lease::extend(aws, identity, held, timing.lease_ttl).await?
        {
            self.state.lease = Some(extended);
            return Ok(true);
        }
        let token = self.lease_token();
        match lease::claim(aws, identity, &token, timing.lease_ttl).await? {
            lease::Claim::Held { lease, .. } => {
                self.state.lease = Some(lease);
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

    /// Ends a failed build: cleanup, then the failure and what cleanup did.
    async fn fail_and_clean(
        &self,
        cx: &Context<'_>,
        failure: Failure,
        cancel_command: bool,
    ) -> Progress {
        tracing::error!(problem = %failure, "build failed; cleaning up");
        let keeping = self.keep_for_debugging(cx, &failure).await;
        let cleanup = self.clean_up_and_release(cx, cancel_command, keeping).await;
        Progress::Failed(Box::new(Failed {
            failure,
            cleanup: Some(cleanup),
        }))
    }

    /// The instance a failure leaves running for debugging (`KeepFailedInstanceMinutes`), and
    /// what it is: the one running the build's steps or tests (or awaited in the ECS cluster)
    /// when a step or test failed or time ran out. An instance SSM never reported Online (Session
    /// Manager could not reach it either), a builder already stopping, a cancelled build and a
    /// build that could not carry on keep nothing (`None`). A test instance that joined
    /// `Tests.EcsCluster` is refused (`Err`, to be said): ECS could place the cluster's tasks on
    /// an instance of the failed image while it is kept.
    fn instance_to_keep(&self, failure: &Failure) -> Option<Result<(&str, &'static str), Keeping>> {
        if self.spec.keep_failed_instance_minutes == 0
            || !matches!(failure, Failure::In { .. } | Failure::TimedOut { .. })
        {
            return None;
        }
        let (on, joined) = match &self.state.phase {
            Phase::StartStep { on, .. } | Phase::AwaitStep { on, .. } => (*on, true),
            Phase::AwaitEcs { .. } => (On::TestInstance, false),
            _ => return None,
        };
        match on {
            On::Builder => Some(Ok((self.state.builder.as_ref()?.id.as_str(), "builder"))),
            On::TestInstance => {
                let instance = self.state.test_instance.as_ref()?.id.as_str();
                let cluster = self
                    .spec
                    .tests
                    .as_ref()
                    .and_then(|t| t.ecs_cluster.as_deref());
                Some(match cluster {
                    Some(cluster) if joined => Err(Keeping::NotKept {
                        instance: instance.to_owned(),
                        what: "test instance",
                        why: format!(
                            "it had joined ECS cluster {cluster}, where services could place tasks on it"
                        ),
                    }),
                    _ => Ok((instance, "test instance")),
                })
            }
        }
    }

    /// Keeps the instance [`Build::instance_to_keep`] names, if any.
    async fn keep_for_debugging(&self, cx: &Context<'_>, failure: &Failure) -> Option<Keeping> {
        match self.instance_to_keep(failure)? {
            Ok(instance) => Some(
                kept::keep(
                    cx.aws,
                    instance,
                    self.spec.keep_failed_instance_minutes,
                    self.spec.properties_as_sent.clone(),
                )
                .await,
            ),
            Err(refused) => Some(refused),
        }
    }

    /// Ends the build: removes what it made ([`clean_up`], from what it knows and from its
    /// request's tags) but an instance kept for debugging, then deletes its lease. Returns the
    /// cleanup's report.
    async fn clean_up_and_release(
        &self,
        cx: &Context<'_>,
        cancel_command: bool,
        keeping: Option<Keeping>,
    ) -> Cleanup {
        let aws = cx.aws;
        // Parameters written to the image go back first: nothing may resolve to it once removed.
        // (An image this build did not make keeps what was published to it.)
        if let Some(image) = self.image_built()
            && !self.spec.ssm_parameters.is_empty()
        {
            crate::engine::publish::put_back_all(aws, &image.id, &self.spec.ssm_parameters).await;
        }
        // A copy this build made goes with it: so do the parameters it may have been published to.
        let made: BTreeMap<&str, &str> = self.state.copies.made_here().collect();
        for (region, names) in &self.spec.copy_parameters {
            if let Some(copy) = made.get(region.as_str()) {
                crate::engine::publish::put_back_all(&aws.in_region(region), copy, names).await;
            }
        }
        let known = Leftovers {
            kept_instance: keeping
                .as_ref()
                .and_then(Keeping::kept_instance)
                .map(str::to_owned),
            ..self.leftovers(cancel_command)
        };
        let mut report = clean_up(aws, cx.identity, &known, cx.timing.not_found_grace, None).await;
        report.keeping = keeping.map(Box::new);
        self.release_lease(aws, &lease::path(cx.identity)).await;
        report
    }

    /// What the build knows it made; `cancel_command`: the running step, if any, is to be
    /// cancelled (it has not ended by itself).
    fn leftovers(&self, cancel_command: bool) -> Leftovers {
        let running_command = match &self.state.phase {
            Phase::AwaitStep { command_id, .. } if cancel_command => Some(command_id.clone()),
            _ => None,
        };
        // Once the test instance is launched, the builder is gone: the instance to remove (and
        // whose command to cancel) is the test instance.
        let instance = self
            .state
            .test_instance
            .as_ref()
            .or(self.state.builder.as_ref());
        Leftovers {
            instance_id: instance.map(|i| i.id.clone()),
            launched_at_ms: instance.and_then(|i| i.at_ms),
            image_id: self.image_built().map(|image| image.id.clone()),
            command_id: running_command,
            regions: self.spec.regions.iter().map(|r| r.region.clone()).collect(),
            copies: self
                .state
                .copies
                .made_here()
                .map(|(region, id)| (region.to_owned(), id.to_owned()))
                .collect(),
            // Put back by `clean_up_and_release`, which knows which copies this build made.
            parameters: Default::default(),
            kept_instance: None,
        }
    }

    /// A newer request of the resource cancelled this one: remove what the build made, and
    /// answer nothing (CloudFormation no longer waits for it).
    async fn stop_cancelled(&self, cx: &Context<'_>, by: &str) -> Progress {
        tracing::warn!(
            cancelled_by = by,
            phase = ?self.state.phase,
            "CloudFormation gave up on this request (a newer request of the resource cancelled it): stopping and cleaning up"
        );
        let report = self.clean_up_and_release(cx, true, None).await;
        tracing::info!(report = %report, "cancelled build cleaned up");
        Progress::Cancelled(report)
    }

    fn success_outcome(&self) -> Result<Done, BuildError> {
        let resolved = self.resolved()?;
        let image = self.image()?;
        let answer = image_answer(ImageAnswer {
            image_id: &image.id,
            name: &self.state.image_name,
            source_image: &resolved.source_image,
            snapshot_ids: &image.snapshot_ids,
            fingerprint: &resolved.fingerprint,
            outputs: self.state.outputs.clone(),
            container_images: &resolved.container_images,
            tested: self
                .state
                .tested
                .as_ref()
                .map(|t| (t.at.as_str(), t.instance.as_str())),
        });
        Ok(crate::engine::copies::with_attributes(
            answer,
            &self.state.copies.copies,
        ))
    }

    /// EC2 may not know the builder yet (eventual consistency): see [`Timing::not_found_grace`].
    fn just_launched(&self, timing: &Timing) -> bool {
        launched_within(
            self.state.builder.as_ref().and_then(|b| b.at_ms),
            timing.not_found_grace,
        )
    }

    /// The source, resolved by the first phase.
    fn resolved(&self) -> Result<&Resolved, BuildError> {
        made(self.state.resolved.as_ref(), "resolved source")
    }

    /// The builder, launched (or found again) before the phases that work on it.
    fn builder(&self) -> Result<&Launched, BuildError> {
        made(self.state.builder.as_ref(), "builder")
    }

    /// The test instance, launched before the phases that work on it.
    fn test_instance(&self) -> Result<&Launched, BuildError> {
        made(self.state.test_instance.as_ref(), "test instance")
    }

    /// The image, requested before the phases that await, test, copy or publish it.
    fn image(&self) -> Result<&ImageMade, BuildError> {
        made(self.state.image.as_ref(), "image")
    }

    /// `Tests`, which a build has when it is at a phase of the tests.
    fn tests(&self) -> Result<&crate::spec::TestSpec, BuildError> {
        made(self.spec.tests.as_ref(), "Tests")
    }

    /// The image, if this build made it (a failure removes it; never one the resource had).
    fn image_built(&self) -> Option<&ImageMade> {
        self.state
            .image
            .as_ref()
            .filter(|image| image.origin == Origin::Built)
    }
}

/// What a phase needs that an earlier phase made, or the spec has when the build is at that
/// phase; see [`BuildError::StateLacks`].
pub(super) fn made<'a, T>(
    thing: Option<&'a T>,
    missing: &'static str,
) -> Result<&'a T, BuildError> {
    thing.ok_or(BuildError::StateLacks { missing })
}

/// The comment a step's SSM command carries; it is how a resumed build recognises the step.
fn test_comment(index: usize, total: usize, name: &str) -> String {
    format!("ecs-ami test {}/{total}: {name}", index + 1)
}

/// The test index a command's comment names, if it is one of ours.
fn test_number(comment: &str) -> Option<usize> {
    position(comment, "test").map(|(index, _)| index)
}

fn step_comment(index: usize, total: usize, name: &str) -> String {
    format!("ecs-ami step {}/{total}: {name}", index + 1)
}

/// The step index a command's comment names, if it is one of ours.
fn step_number(comment: &str) -> Option<usize> {
    position(comment, "step").map(|(index, _)| index)
}

/// The index a comment of [`step_comment`]'s or [`test_comment`]'s form names for `kind`
/// (`step`, `test`), and the rest after its `/` (the total, then the name).
fn position<'a>(comment: &'a str, kind: &str) -> Option<(usize, &'a str)> {
    let rest = comment.strip_prefix("ecs-ami ")?.strip_prefix(kind)?;
    let (number, rest) = rest.strip_prefix(' ')?.split_once('/')?;
    Some((number.parse::<usize>().ok()?.checked_sub(1)?, rest))
}

/// Whether a command's comment names the last of its build's steps or of its tests
/// (`ecs-ami step 3/3: name`): what `ecs-ami watch` reads to say the steps are done.
pub fn is_last_step(comment: &str) -> bool {
    ["step", "test"]
        .iter()
        .find_map(|kind| position(comment, kind))
        .is_some_and(|(index, rest)| {
            rest.split(':').next().and_then(|t| t.parse::<usize>().ok()) == Some(index + 1)
        })
}

pub async fn create(cx: &Context<'_>, spec: AmiSpec) -> Progress {
    Build::new(spec, cx.identity).run(cx).await
}

/// Ends a build that an invocation could not hand over: cleanup, and why it failed.
pub async fn abandon(
    aws: &Aws,
    identity: &Identity,
    spec: AmiSpec,
    state: BuildState,
    why: &str,
) -> Failed {
    let build = Build::resume(spec, state);
    let failure = Failure::NotHandedOver {
        stage: build.state.phase.name(),
        why: why.to_owned(),
    };
    // Called when the invocation's time is up: the caller bounds the retries.
    let timing = Timing::default();
    match build
        .fail_and_clean(&Context::new(aws, identity, &timing), failure, true)
        .await
    {
        Progress::Failed(failed) => *failed,
        _ => unreachable!("cleanup always ends in Failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::tags::tests::identity;

    #[test]
    fn step_comments_round_trip() {
        let comment = step_comment(2, 5, "install agents");
        assert_eq!(comment, "ecs-ami step 3/5: install agents");
        assert_eq!(step_number(&comment), Some(2));
        assert_eq!(step_number("someone else's command"), None);
        assert_eq!(step_number("ecs-ami step 0/1: x"), None);
        let comment = test_comment(0, 2, "data volume");
        assert_eq!(comment, "ecs-ami test 1/2: data volume");
        assert_eq!(test_number(&comment), Some(0));
        assert_eq!(step_number(&comment), None);
        assert_eq!(test_number(&step_comment(0, 2, "x")), None);
        assert!(is_last_step(&step_comment(4, 5, "last")));
        assert!(is_last_step(&test_comment(1, 2, "last")));
        assert!(!is_last_step(&step_comment(2, 5, "install agents")));
        assert!(!is_last_step("someone else's command 5/5: x"));
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
            on: On::TestInstance,
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

    fn spec_with_regions() -> AmiSpec {
        AmiSpec::parse(&serde_json::json!({
            "SourceAmi": "ami-12345678", "IamInstanceProfile": "p",
            "Steps": [{"Name": "a", "Commands": ["true"]}],
            "Regions": [{"Region": "eu-west-1"}, {"Region": "us-west-2"}]
        }))
        .unwrap()
    }

    #[test]
    fn a_phase_without_what_it_needs_is_an_error_not_a_panic() {
        let mut build = Build::new(spec_with_regions(), &identity());
        build.state.phase = Phase::AwaitImage {
            waited: Duration::ZERO,
        };
        let missing = |result: Result<(), BuildError>| match result {
            Err(BuildError::StateLacks { missing }) => missing,
            other => panic!("expected StateLacks, got {other:?}"),
        };
        assert_eq!(missing(build.image().map(drop)), "image");
        assert_eq!(missing(build.builder().map(drop)), "builder");
        assert_eq!(missing(build.resolved().map(drop)), "resolved source");
        assert_eq!(missing(build.test_instance().map(drop)), "test instance");
        assert_eq!(missing(build.tests().map(drop)), "Tests");
        assert_eq!(
            missing(build.success_outcome().map(drop)),
            "resolved source"
        );
        assert!(
            BuildError::StateLacks { missing: "image" }
                .to_string()
                .contains("needs its image, which it does not have")
        );
    }

    #[test]
    fn leftovers_are_what_this_build_made() {
        let launched = |id: &str, at_ms| Launched {
            id: id.into(),
            at_ms: Some(at_ms),
        };
        let mut build = Build::new(spec_with_regions(), &identity());
        build.state.builder = Some(launched("i-builder", 1));
        build.state.image = Some(ImageMade {
            id: "ami-0123456789abcdef0".into(),
            snapshot_ids: vec!["snap-1".into()],
            origin: Origin::Built,
        });
        build.state.copies.copies = BTreeMap::from([
            ("eu-west-1".to_owned(), "ami-eu".to_owned()),
            ("us-west-2".to_owned(), "ami-us".to_owned()),
        ]);
        build.state.copies.made = vec!["us-west-2".into()];
        let known = build.leftovers(false);
        assert_eq!(known.instance_id.as_deref(), Some("i-builder"));
        assert_eq!(known.launched_at_ms, Some(1));
        assert_eq!(known.image_id.as_deref(), Some("ami-0123456789abcdef0"));
        assert_eq!(
            known.copies,
            BTreeMap::from([("us-west-2".to_owned(), "ami-us".to_owned())])
        );

        // Once the test instance runs, it is the instance to remove; an image the resource had
        // before the request is never removed.
        build.state.test_instance = Some(launched("i-test", 2));
        if let Some(image) = &mut build.state.image {
            image.origin = Origin::Existing;
        }
        let known = build.leftovers(false);
        assert_eq!(known.instance_id.as_deref(), Some("i-test"));
        assert_eq!(known.launched_at_ms, Some(2));
        assert_eq!(known.image_id, None);
    }

    #[test]
    fn the_instance_kept_is_the_one_running_the_failed_work() {
        let step_failed = Failure::In {
            stage: "running a step",
            error: BuildError::StateLacks { missing: "x" },
        };
        let spec = |extra: serde_json::Value| {
            let mut properties = serde_json::json!({
                "SourceAmi": "ami-12345678", "IamInstanceProfile": "p",
                "Steps": [{"Name": "a", "Commands": ["true"]}],
                "KeepFailedInstanceMinutes": 30
            });
            for (key, value) in extra.as_object().unwrap() {
                properties[key] = value.clone();
            }
            AmiSpec::parse(&properties).unwrap()
        };
        let mut build = Build::new(spec(serde_json::json!({})), &identity());
        build.state.builder = Some(Launched {
            id: "i-builder".into(),
            at_ms: Some(1),
        });
        let await_step = |on| Phase::AwaitStep {
            on,
            index: 0,
            command_id: "c".into(),
            waited: Duration::ZERO,
            state_checked: None,
        };
        build.state.phase = await_step(On::Builder);
        assert_eq!(
            build.instance_to_keep(&step_failed),
            Some(Ok(("i-builder", "builder")))
        );
        // Not for a cancelled build or one that could not be handed over, not while stopping,
        // not before SSM reported it Online, and not when not asked.
        let not_handed_over = Failure::NotHandedOver {
            stage: "running a step",
            why: "x".into(),
        };
        assert_eq!(build.instance_to_keep(&not_handed_over), None);
        for phase in [
            Phase::Stop,
            Phase::AwaitOnline {
                on: On::Builder,
                waited: Duration::ZERO,
                state_checked: None,
            },
        ] {
            build.state.phase = phase;
            assert_eq!(build.instance_to_keep(&step_failed), None);
        }
        build.spec.keep_failed_instance_minutes = 0;
        build.state.phase = await_step(On::Builder);
        assert_eq!(build.instance_to_keep(&step_failed), None);

        // A test instance: kept, but not once it joined an ECS cluster (refused, and said).
        let tests = serde_json::json!({"Steps": [{"Name": "t", "Commands": ["true"]}]});
        let mut build = Build::new(spec(serde_json::json!({"Tests": tests})), &identity());
        build.state.test_instance = Some(Launched {
            id: "i-test".into(),
            at_ms: Some(2),
        });
        build.state.phase = await_step(On::TestInstance);
        assert_eq!(
            build.instance_to_keep(&step_failed),
            Some(Ok(("i-test", "test instance")))
        );
        let mut in_cluster = tests.clone();
        in_cluster["EcsCluster"] =
            serde_json::json!("arn:aws:ecs:us-east-1:123456789012:cluster/main");
        build.spec = spec(serde_json::json!({"Tests": in_cluster}));
        match build.instance_to_keep(&step_failed) {
            Some(Err(Keeping::NotKept { instance, why, .. })) => {
                assert_eq!(instance, "i-test");
                assert!(why.contains("joined ECS cluster"), "{why}");
            }
            other => panic!("{other:?}"),
        }
        // Still waiting for it to join: nothing can be placed on it yet; kept.
        build.state.phase = Phase::AwaitEcs {
            waited: Duration::ZERO,
        };
        assert_eq!(
            build.instance_to_keep(&step_failed),
            Some(Ok(("i-test", "test instance")))
        );
    }
}
