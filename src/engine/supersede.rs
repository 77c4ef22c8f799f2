//! Builds CloudFormation gave up on: an Update or Delete stops those still in flight for its
//! resource, and removes what they made.

use crate::aws::{Aws, AwsError};
use crate::cfn::Identity;
use crate::engine::cleanup::{Leftovers, clean_up, within_invocation};
use crate::engine::{Timing, lease, ledger, time};

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
    (current_image, distributed): (Option<&str>, &Leftovers),
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
                expires + (ledger::RETENTION.as_millis() as u64) < time::now_ms()
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
                // The build reads its record every `record_check_every`: a look every few
                // seconds sees it stop soon enough, without spending Parameter Store's rate.
                Some(expires) if expires > time::now_ms() => {
                    tokio::time::sleep(timing.max_poll / 3).await;
                }
                _ => break,
            }
        }
        let stopped_in = started.elapsed().as_secs();
        let report = clean_up(
            aws,
            &target,
            distributed,
            timing.not_found_grace,
            current_image,
        )
        .await;
        if report.is_complete() {
            lease::release_all(aws, &lease_path).await?;
        } else {
            result.left_something = true;
        }
        let what = if report.found_nothing() {
            "it had removed what it made".to_owned()
        } else {
            format!(
                "left over and removed here: {}",
                report.to_string().trim_start_matches("Cleanup: ")
            )
        };
        result.stopped.push(format!(
            "Stopped the build of request {request_id}, which CloudFormation gave up on, in {stopped_in} s; {what}"
        ));
    }
    Ok(result)
}
