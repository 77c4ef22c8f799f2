//! The one wait every waiting phase uses (SSM Online, a step, the builder stopping, the image):
//! a poll that did not yet see what it waits for asks [`keep_waiting`] whether to poll again and
//! after how long. It checks, in this order: that the builder still runs (every
//! `state_check_every`, not at every poll; a builder EC2 does not list yet shortly after its
//! launch is not gone: eventual consistency), that the wait is within its limit, and the pause
//! before the next poll ([`Timing::next_poll`]).

use std::time::Duration;

use crate::aws::{Aws, InstanceStateName};
use crate::engine::Timing;
use crate::engine::cleanup::launched_within;
use crate::engine::failure::{BuildError, StepAt};

/// A wait, as far as it has come.
pub(super) struct Wait {
    pub waited: Duration,
    /// How long it may last.
    pub limit: Duration,
    /// The longest pause between two polls (`Timing::max_poll`, or `image_max_poll`).
    pub poll_at_most: Duration,
}

/// For a wait while the builder should be running: which builder, in which states, and when (in
/// `waited` terms) EC2 was last asked.
pub(super) struct Watch<'a> {
    pub instance_id: &'a str,
    pub expected: &'a [InstanceStateName],
    /// The step that runs, if any: named when the builder is found gone.
    pub step: Option<StepAt>,
    pub state_checked: &'a mut Option<Duration>,
    pub launched_at_ms: Option<u64>,
}

/// What a wait does next.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Poll {
    /// Poll again after `pause`; the wait will then have lasted `waited`.
    Again { pause: Duration, waited: Duration },
    /// The wait reached its limit: the phase fails, saying what it waited for.
    Overdue,
}

/// The next move of a wait that has not seen what it waits for; an error when the watched
/// builder is no longer running.
pub(super) async fn keep_waiting(
    aws: &Aws,
    timing: &Timing,
    wait: Wait,
    watch: Option<Watch<'_>>,
) -> Result<Poll, BuildError> {
    if let Some(watch) = watch {
        check_still_running(aws, timing, wait.waited, watch).await?;
    }
    if wait.waited >= wait.limit {
        return Ok(Poll::Overdue);
    }
    let pause = timing.next_poll(wait.waited, wait.poll_at_most);
    Ok(Poll::Again {
        pause,
        waited: wait.waited + pause,
    })
}

/// Asks EC2 every `state_check_every` whether the builder is still in one of the expected states,
/// the first time once the wait has lasted that long (a wait shorter than that makes no call).
async fn check_still_running(
    aws: &Aws,
    timing: &Timing,
    waited: Duration,
    watch: Watch<'_>,
) -> Result<(), BuildError> {
    let last = watch.state_checked.unwrap_or(Duration::ZERO);
    if waited < last + timing.state_check_every {
        return Ok(());
    }
    *watch.state_checked = Some(waited);
    let status = aws.instance_status(watch.instance_id).await?;
    let state = status.as_ref().map(|s| s.state.clone());
    if state.is_none() && launched_within(watch.launched_at_ms, timing.not_found_grace) {
        tracing::info!(
            instance_id = watch.instance_id,
            "EC2 does not list the new builder yet"
        );
        // Ask again at the next poll.
        *watch.state_checked = Some(waited.saturating_sub(timing.state_check_every));
        return Ok(());
    }
    match state {
        Some(state) if watch.expected.contains(&state) => Ok(()),
        state => Err(BuildError::BuilderNotRunning {
            instance: watch.instance_id.to_owned(),
            state,
            step: watch.step,
            reason: status.and_then(|s| s.state_reason),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_wait_polls_again_until_its_limit() {
        // No watched builder: no AWS call is made, so an unreachable client will do.
        let config = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .build();
        let aws = Aws::from_config(&config);
        let timing = Timing::default();
        let wait = |waited| Wait {
            waited: Duration::from_secs(waited),
            limit: Duration::from_secs(60),
            poll_at_most: timing.max_poll,
        };
        match keep_waiting(&aws, &timing, wait(30), None).await.unwrap() {
            Poll::Again { pause, waited } => {
                assert!(pause <= timing.max_poll && pause > Duration::ZERO);
                assert_eq!(waited, Duration::from_secs(30) + pause);
            }
            Poll::Overdue => panic!("30 s of 60 is not overdue"),
        }
        assert_eq!(
            keep_waiting(&aws, &timing, wait(60), None).await.unwrap(),
            Poll::Overdue
        );
    }
}
