//! How long each wait of the engine may last, how often it polls, and when an invocation hands
//! over: one struct, read by every phase.

use std::time::Duration;

/// How long each wait may last and how often it polls. Polls start at one second and slow down
/// in proportion to the time already waited, up to `max_poll` (`image_max_poll` for images,
/// which take minutes), so quick emulator builds finish quickly while a 25-minute snapshot costs
/// about 60 calls. EC2 asks for exactly this: "use an appropriate sleep interval between
/// successive requests ... an increasing or variable sleep interval"
/// (<https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-throttling.html>, Retries and
/// exponential backoff).
#[derive(Debug, Clone)]
pub struct Timing {
    pub online_timeout: Duration,
    pub stop_timeout: Duration,
    pub image_timeout: Duration,
    pub min_poll: Duration,
    pub max_poll: Duration,
    /// The longest pause between two looks at an image being made or copied.
    pub image_max_poll: Duration,
    /// The pause before the first look after a launch, a stop or CreateImage: none of them is
    /// over sooner on AWS, and a look at once would only cost a call.
    pub first_poll: Duration,
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
    /// builder (eventual consistency: <https://docs.aws.amazon.com/ec2/latest/devguide/eventual-consistency.html>),
    /// and how long a TerminateInstances answered NotFound is retried before the builder is
    /// reported as not confirmed terminated.
    pub not_found_grace: Duration,
    /// How often a build reads its request's record (see [`crate::engine::ledger`]) to find out
    /// whether a newer request cancelled it.
    pub record_check_every: Duration,
    /// Before a phase that creates something, the record is read again unless it was read
    /// this recently.
    pub record_fresh_for: Duration,
    /// How often a phase whose call AWS throttled past the SDK's retries (8 attempts) is tried
    /// again, after a pause, before the build fails naming the call: many builds in one account
    /// share its request rates.
    pub throttled_tries: u32,
    /// How long a request waits for a build it cancelled to stop and clean up after itself
    /// before removing what is left itself (see [`crate::engine::supersede()`]).
    pub supersede_wait: Duration,
    /// For a Create: when CloudFormation issued it (see [`crate::cfn::Request::issued_at`]). Read
    /// again before the launch, once the lease is held, against a Delete that cancelled the
    /// Creates issued before it (see `ledger::create_cancelled_by`).
    pub create_issued_at: Option<String>,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            online_timeout: Duration::from_secs(600),
            stop_timeout: Duration::from_secs(600),
            image_timeout: Duration::from_secs(3000),
            min_poll: Duration::from_secs(1),
            max_poll: Duration::from_secs(15),
            image_max_poll: Duration::from_secs(30),
            first_poll: Duration::from_secs(2),
            hand_over_at: None,
            hand_over_every_state: false,
            lease_ttl: Duration::from_secs(300),
            state_check_every: Duration::from_secs(60),
            step_grace: Duration::from_secs(120),
            not_found_grace: Duration::from_secs(60),
            record_check_every: Duration::from_secs(30),
            record_fresh_for: Duration::from_secs(10),
            throttled_tries: 3,
            supersede_wait: Duration::from_secs(120),
            create_issued_at: None,
        }
    }
}

impl Timing {
    /// The pause before the next poll: a third of the time already waited, between `min_poll`
    /// and `longest`, less up to 10 % at random so that many builds started together do not poll
    /// in lockstep. Jitter only shortens the pause, so a change is still seen within `longest`.
    pub(crate) fn next_poll(&self, waited: Duration, longest: Duration) -> Duration {
        let base = (waited / 3).clamp(self.min_poll, longest.max(self.min_poll));
        base.mul_f64(1.0 - 0.1 * fastrand::f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polling_slows_down_with_waiting_within_bounds() {
        let timing = Timing::default();
        let within = |waited: u64, low_ms: u64, high_ms: u64| {
            for _ in 0..100 {
                let pause = timing.next_poll(Duration::from_secs(waited), timing.max_poll);
                assert!(
                    pause >= Duration::from_millis(low_ms)
                        && pause <= Duration::from_millis(high_ms),
                    "{waited} s waited: {pause:?}"
                );
            }
        };
        within(0, 900, 1000);
        within(15, 4500, 5000);
        within(600, 13_500, 15_000);
    }
}
