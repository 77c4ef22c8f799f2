//! One invocation at a time works on a request.
//!
//! Lambda may deliver an event twice, at the same time; two invocations driving one builder would
//! run every step twice. The build therefore holds a lease, kept in SSM Parameter Store as a
//! sequence of generations `/ecs-ami/leases/<request hash>/<generation>`, each holding
//! `<holder token> <expiry ms>`. Creating a parameter that does not exist is atomic, so:
//! - the first claimant creates generation 1;
//! - the holder renews by overwriting its own generation, which nobody else writes;
//! - a claimant that finds the latest generation expired (its holder died) creates the next one,
//!   and of several such claimants exactly one succeeds;
//! - a holder that finds a newer generation than its own was presumed dead and stops.
//!
//! The hand-over payload carries the holder's token, so the build's next invocation holds the
//! same lease. Finishing the build deletes every generation.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::clock;
use crate::aws::{Aws, AwsError};
use crate::cfn::Identity;

const ROOT: &str = "/ecs-ami/leases";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub token: String,
    pub generation: u32,
    pub expires_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    Held(Lease),
    /// Another live invocation holds it until then.
    Busy {
        until_ms: u64,
    },
}

pub fn path(identity: &Identity) -> String {
    format!("{ROOT}/{}", &identity.digest()[..32])
}

pub fn new_token() -> String {
    format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}

fn encode(token: &str, expires_ms: u64) -> String {
    format!("{token} {expires_ms}")
}

fn decode(value: &str) -> Option<(&str, u64)> {
    let (token, expires) = value.split_once(' ')?;
    Some((token, expires.parse().ok()?))
}

/// The latest generation: (number, holder, expiry).
async fn latest(aws: &Aws, path: &str) -> Result<Option<(u32, String, u64)>, AwsError> {
    let generations = aws.parameters_under(path).await?;
    Ok(generations
        .iter()
        .filter_map(|(name, value)| {
            let generation = name.rsplit('/').next()?.parse::<u32>().ok()?;
            let (token, expires) = decode(value)?;
            Some((generation, token.to_owned(), expires))
        })
        .max_by_key(|(generation, ..)| *generation))
}

/// Claims or renews the lease for `token`.
pub async fn claim(aws: &Aws, path: &str, token: &str, ttl: Duration) -> Result<Claim, AwsError> {
    let now = clock::now_ms();
    let expires_ms = now + ttl.as_millis() as u64;
    let next = match latest(aws, path).await? {
        Some((generation, holder, _)) if holder == token => {
            aws.overwrite_parameter(&format!("{path}/{generation}"), &encode(token, expires_ms))
                .await?;
            return Ok(Claim::Held(Lease {
                token: token.to_owned(),
                generation,
                expires_ms,
            }));
        }
        Some((_, _, until_ms)) if until_ms > now => return Ok(Claim::Busy { until_ms }),
        Some((generation, ..)) => generation + 1,
        None => 1,
    };
    if aws
        .create_parameter(&format!("{path}/{next}"), &encode(token, expires_ms))
        .await?
    {
        Ok(Claim::Held(Lease {
            token: token.to_owned(),
            generation: next,
            expires_ms,
        }))
    } else {
        // Another claimant created this generation first.
        Ok(Claim::Busy {
            until_ms: expires_ms,
        })
    }
}

/// Extends a lease that is still comfortably valid: a claimant only creates a newer generation
/// after this one expires, so overwriting our own generation before then needs no check.
/// Returns None when too little of it is left to skip the check; then [`claim`] it instead.
pub async fn extend(
    aws: &Aws,
    path: &str,
    lease: &Lease,
    ttl: Duration,
) -> Result<Option<Lease>, AwsError> {
    let now = clock::now_ms();
    if lease.expires_ms < now + 10_000 {
        return Ok(None);
    }
    let expires_ms = now + ttl.as_millis() as u64;
    let name = format!("{path}/{}", lease.generation);
    aws.overwrite_parameter(&name, &encode(&lease.token, expires_ms))
        .await?;
    Ok(Some(Lease {
        expires_ms,
        ..lease.clone()
    }))
}

/// Deletes every generation up to the holder's: the build is over.
pub async fn release(aws: &Aws, path: &str, lease: &Lease) -> Result<(), AwsError> {
    let names: Vec<String> = (1..=lease.generation)
        .map(|generation| format!("{path}/{generation}"))
        .collect();
    aws.delete_parameters(&names).await
}

/// Deletes every generation there is, whoever held them: for a build ended by an invocation that
/// could not read the lease it was handed.
pub async fn release_all(aws: &Aws, path: &str) -> Result<(), AwsError> {
    let names: Vec<String> = aws
        .parameters_under(path)
        .await?
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    aws.delete_parameters(&names).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip() {
        assert_eq!(decode(&encode("abc", 42)), Some(("abc", 42)));
        assert_eq!(decode("garbage"), None);
    }

    #[test]
    fn paths_are_per_request_and_valid_parameter_names() {
        let identity = Identity {
            stack_id: "arn:aws:cloudformation:us-east-1:1:stack/s/g".into(),
            logical_id: "Ami".into(),
            request_id: "r1".into(),
        };
        let other = Identity {
            request_id: "r2".into(),
            ..identity.clone()
        };
        assert_ne!(path(&identity), path(&other));
        assert!(path(&identity).starts_with("/ecs-ami/leases/"));
        assert_eq!(path(&identity).matches('/').count(), 3);
        assert_ne!(new_token(), new_token());
    }
}
