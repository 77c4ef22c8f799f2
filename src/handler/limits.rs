//! The time limits of one invocation, and the guard around an operation: a panic or a hung call
//! still ends in an answer.

use std::time::Duration;

use tokio::time::Instant;

use crate::aws::Aws;
use crate::cfn::{Operation, Outcome, Request};
use crate::engine::{self, BuildState, Timing};

use super::operate::{clean_up_by_tags, operate};
use super::{Turn, failure_physical_id};

/// Time limits of one invocation.
#[derive(Debug, Clone, Default)]
pub struct Limits {
    /// When the build must be handed over to a fresh invocation.
    pub hand_over_at: Option<Instant>,
    /// When any work still running is abandoned (a hung call), cleaned up and answered FAILED.
    pub abandon_at: Option<Instant>,
    pub hand_over_every_state: bool,
    /// The build lease's lifetime; `None` for the default (see `Timing::lease_ttl`).
    pub lease_ttl: Option<Duration>,
}

impl Limits {
    /// Lambda: hand over 90 s before the deadline. The engine checks between AWS calls, and one
    /// call retried through throttling can take tens of seconds; a hung one is abandoned 30 s
    /// before the deadline, which leaves time to terminate the builder and send the response. A
    /// function configured with a short timeout still gets half of it for work, so that every
    /// invocation makes progress.
    pub fn before_deadline(remaining: Duration) -> Limits {
        let now = Instant::now();
        let work = remaining
            .saturating_sub(Duration::from_secs(90))
            .max(remaining / 2);
        let abandon = remaining
            .saturating_sub(Duration::from_secs(30))
            .max(remaining * 3 / 4);
        Limits {
            hand_over_at: Some(now + work),
            abandon_at: Some(now + abandon),
            ..Limits::default()
        }
    }

    /// `ECS_AMI_HANDOVER_EVERY_STATE=1` forces a hand-over after every change of state;
    /// `ECS_AMI_LEASE_SECONDS` sets the build lease's lifetime (how soon a retry takes over from
    /// an invocation that died; default 300).
    pub fn with_env(mut self) -> Limits {
        self.hand_over_every_state = std::env::var("ECS_AMI_HANDOVER_EVERY_STATE")
            .is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
        if let Some(seconds) = std::env::var("ECS_AMI_LEASE_SECONDS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|s| *s > 0)
        {
            self.lease_ttl = Some(Duration::from_secs(seconds));
        }
        self
    }
}

/// Runs the operation on its own task, so that a panic is caught, and under a hard deadline, so
/// that a hung call cannot outlast the invocation.
pub(super) async fn guarded(
    request: &Request,
    state: Option<BuildState>,
    aws: &Aws,
    limits: &Limits,
) -> Turn {
    let defaults = Timing::default();
    let timing = Timing {
        hand_over_at: limits.hand_over_at,
        hand_over_every_state: limits.hand_over_every_state,
        lease_ttl: limits.lease_ttl.unwrap_or(defaults.lease_ttl),
        create_issued_at: match request.operation {
            Operation::Create => request.issued_at().map(str::to_owned),
            _ => None,
        },
        ..defaults
    };
    let work = operate(request.clone(), state, aws.clone(), timing);
    // Cleanup's retries (a builder EC2 does not know yet, snapshots not yet released) stop 10 s
    // before the work is abandoned, so that they never cost the answer.
    let task = match limits.abandon_at {
        Some(at) => tokio::spawn(engine::RETRIES_UNTIL.scope(at - Duration::from_secs(10), work)),
        None => tokio::spawn(work),
    };
    // If this invocation itself is dropped (killed), the work stops with it, as it would when a
    // Lambda dies; it must not go on unseen beside the retry.
    let abort = AbortOnDrop(task.abort_handle());
    let joined = match limits.abandon_at {
        Some(at) => match tokio::time::timeout_at(at, task).await {
            Ok(joined) => joined,
            Err(_) => {
                abort.0.abort();
                return after_crash(
                    request,
                    aws,
                    "did not finish before the invocation's deadline".into(),
                )
                .await;
            }
        },
        None => task.await,
    };
    match joined {
        Ok(turn) => turn,
        Err(error) => {
            let what = if error.is_panic() {
                let payload = error.into_panic();
                let text = payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "no message".into());
                format!("stopped by an internal error ({text})")
            } else {
                "was cancelled".into()
            };
            after_crash(request, aws, what).await
        }
    }
}

pub(super) struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub(super) async fn after_crash(request: &Request, aws: &Aws, what: String) -> Turn {
    tracing::error!(problem = %what, "operation did not complete");
    let report = match request.operation {
        Operation::Delete { .. } => String::new(),
        // About 30 s are left: only what the tags find, and retries for at most 5 s.
        _ => format!(
            " {}",
            clean_up_by_tags(aws, request, Duration::from_secs(5)).await
        ),
    };
    Turn::Answer(Outcome::failed(
        failure_physical_id(request),
        format!("the operation {what}.{report}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn limits_leave_time_to_answer_and_always_some_to_work() {
        let start = Instant::now();
        let lambda = Limits::before_deadline(Duration::from_secs(900));
        assert_eq!(lambda.hand_over_at, Some(start + Duration::from_secs(810)));
        assert_eq!(lambda.abandon_at, Some(start + Duration::from_secs(870)));
        let short = Limits::before_deadline(Duration::from_secs(60));
        assert_eq!(short.hand_over_at, Some(start + Duration::from_secs(30)));
        assert_eq!(short.abandon_at, Some(start + Duration::from_secs(45)));
    }
}
