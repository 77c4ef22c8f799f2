//! One invocation at a time works on a request.
//!
//! Lambda may deliver an event twice, at the same time; two invocations driving one builder would
//! run every step twice. The build therefore holds a lease, kept in SSM Parameter Store as a
//! sequence of generations `/ecs-ami/leases/<resource hash>/<request hash>/<generation>`, each
//! holding `<holder token> <expiry ms> <request id>`. Creating a parameter that does not exist is
//! atomic, so:
//! - the first claimant creates generation 1;
//! - the holder renews by overwriting its own generation, which nobody else writes;
//! - a claimant that finds the latest generation expired (its holder died) creates the next one,
//!   and of several such claimants exactly one succeeds;
//! - a holder that finds a newer generation than its own was presumed dead and stops.
//!
//! The hand-over payload carries the holder's lease; the build's next invocation succeeds it
//! with the next generation and a token of its own ([`succeed`]), so a copy of the payload,
//! delivered twice or late, cannot drive the build beside it. Finishing the build deletes every generation. A lease therefore exists exactly
//! while a build of the request is in flight (or died unfinished), and the leases under one
//! resource's hash are how a newer request of that resource finds builds CloudFormation gave up
//! on ([`in_flight`]).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::time;
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
    /// `fresh`: no invocation held it before (a first claim), or it was handed over by its
    /// holder ([`succeed`]); not after a holder presumed dead, nor on a renewal.
    Held { lease: Lease, fresh: bool },
    /// Another live invocation holds it until then.
    Busy { until_ms: u64 },
    /// Another delivery took it at this very moment, or (for a hand-over payload) the build is
    /// over: there is nothing to wait for.
    Lost,
}

/// Where the leases of every request of `identity`'s resource (its stack and logical id) are.
pub fn resource_path(identity: &Identity) -> String {
    format!("{ROOT}/{}", identity.resource_key())
}

/// Where the lease of `identity`'s request is.
pub fn path(identity: &Identity) -> String {
    format!("{}/{}", resource_path(identity), identity.request_key())
}

/// Removes every lease of every resource: the function's own stack is being deleted, and with it
/// whatever it kept in Parameter Store. Answers how many generations went.
pub async fn remove_all(aws: &Aws) -> Result<usize, AwsError> {
    aws.delete_parameters_below(ROOT).await
}

pub fn new_token() -> String {
    format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}

fn encode(token: &str, expires_ms: u64, request_id: &str) -> String {
    format!("{token} {expires_ms} {request_id}")
}

/// (holder token, expiry, request id).
fn decode(value: &str) -> Option<(&str, u64, &str)> {
    let mut fields = value.splitn(3, ' ');
    let token = fields.next()?;
    let expires = fields.next()?.parse().ok()?;
    Some((token, expires, fields.next().unwrap_or_default()))
}

/// A generation of a lease: (number, holder, expiry, request id).
type Generation = (u32, String, u64, String);

fn generations(parameters: &[(String, String)]) -> impl Iterator<Item = (String, Generation)> {
    parameters.iter().filter_map(|(name, value)| {
        let (dir, number) = name.rsplit_once('/')?;
        let (token, expires, request_id) = decode(value)?;
        Some((
            dir.to_owned(),
            (
                number.parse().ok()?,
                token.to_owned(),
                expires,
                request_id.to_owned(),
            ),
        ))
    })
}

/// The latest generation of the lease at `path`.
async fn latest(aws: &Aws, path: &str) -> Result<Option<Generation>, AwsError> {
    let parameters = aws.parameters_under(path).await?;
    Ok(generations(&parameters)
        .map(|(_, generation)| generation)
        .max_by_key(|(number, ..)| *number))
}

/// When the lease at `path` runs out (ms on the [clock](crate::engine::time::now_ms)); None when there is none.
pub async fn expiry(aws: &Aws, path: &str) -> Result<Option<u64>, AwsError> {
    Ok(latest(aws, path).await?.map(|(_, _, expires, _)| expires))
}

/// The requests of `identity`'s resource, other than its own, that hold a lease: builds still in
/// flight, or that died without finishing. (request id, lease path).
pub async fn in_flight(aws: &Aws, identity: &Identity) -> Result<Vec<(String, String)>, AwsError> {
    let own = path(identity);
    let mut found: Vec<(String, String)> = holders(aws, identity)
        .await?
        .into_iter()
        .filter(|holder| holder.path != own)
        .map(|holder| (holder.request_id, holder.path))
        .collect();
    found.sort();
    Ok(found)
}

/// The latest generation of each lease of `identity`'s resource (every request's, its own
/// included), newest expiry first: what `ecs-ami watch` reads to know which build is in flight.
pub async fn holders(aws: &Aws, identity: &Identity) -> Result<Vec<Holder>, AwsError> {
    let parameters = aws
        .parameters_below(&resource_path(identity), true, usize::MAX)
        .await?;
    let mut latest: std::collections::BTreeMap<String, Holder> = Default::default();
    for (dir, (generation, _, expires_ms, request_id)) in generations(&parameters) {
        if request_id.is_empty() {
            continue;
        }
        let entry = latest.entry(dir.clone()).or_insert(Holder {
            request_id,
            path: dir,
            generation,
            expires_ms,
        });
        if generation > entry.generation {
            entry.generation = generation;
            entry.expires_ms = expires_ms;
        }
    }
    let mut holders: Vec<Holder> = latest.into_values().collect();
    holders.sort_by_key(|h| std::cmp::Reverse(h.expires_ms));
    Ok(holders)
}

/// A request's lease as [`holders`] reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub request_id: String,
    /// Where the lease's generations are.
    pub path: String,
    /// 1 at the build's start, one more at each hand-over or take-over.
    pub generation: u32,
    pub expires_ms: u64,
}

/// Claims or renews the lease for `token`, on behalf of `identity`'s request.
pub async fn claim(
    aws: &Aws,
    identity: &Identity,
    token: &str,
    ttl: Duration,
) -> Result<Claim, AwsError> {
    let path = &path(identity);
    let now = time::now_ms();
    let expires_ms = now + ttl.as_millis() as u64;
    let next = match latest(aws, path).await? {
        Some((generation, holder, ..)) if holder == token => {
            aws.overwrite_parameter(
                &format!("{path}/{generation}"),
                &encode(token, expires_ms, &identity.request_id),
            )
            .await?;
            return Ok(Claim::Held {
                lease: Lease {
                    token: token.to_owned(),
                    generation,
                    expires_ms,
                },
                fresh: false,
            });
        }
        Some((_, _, until_ms, _)) if until_ms > now => return Ok(Claim::Busy { until_ms }),
        Some((generation, ..)) => generation + 1,
        None => 1,
    };
    if aws
        .create_parameter(
            &format!("{path}/{next}"),
            &encode(token, expires_ms, &identity.request_id),
        )
        .await?
    {
        Ok(Claim::Held {
            lease: Lease {
                token: token.to_owned(),
                generation: next,
                expires_ms,
            },
            // Even a generation 1 made here may follow a holder that released the lease.
            fresh: false,
        })
    } else {
        // Another claimant created this generation first.
        Ok(Claim::Lost)
    }
}

/// The first claim of a delivery: most requests have no lease yet, so generation 1 is created
/// straight away (one call); only when it exists is the lease read ([`claim`]).
pub async fn claim_first(
    aws: &Aws,
    identity: &Identity,
    token: &str,
    ttl: Duration,
) -> Result<Claim, AwsError> {
    let expires_ms = time::now_ms() + ttl.as_millis() as u64;
    if aws
        .create_parameter(
            &format!("{}/1", path(identity)),
            &encode(token, expires_ms, &identity.request_id),
        )
        .await?
    {
        return Ok(Claim::Held {
            lease: Lease {
                token: token.to_owned(),
                generation: 1,
                expires_ms,
            },
            fresh: true,
        });
    }
    claim(aws, identity, token, ttl).await
}

/// Takes the lease over from the invocation that handed the build on (`handed`, carried in the
/// hand-over payload) by creating the next generation with a fresh token: of several deliveries
/// of one payload exactly one can, and an older payload (a hand-over delivered again, late) finds
/// a newer generation than its own. Such a delivery is told the lease is busy while its holder
/// lives, and takes over with the next generation once it has expired (its invocation died).
pub async fn succeed(
    aws: &Aws,
    identity: &Identity,
    handed: &Lease,
    ttl: Duration,
) -> Result<Claim, AwsError> {
    let path = path(identity);
    let now = time::now_ms();
    let (next, fresh) = match latest(aws, &path).await? {
        Some((generation, holder, ..))
            if generation == handed.generation && holder == handed.token =>
        {
            (generation + 1, true)
        }
        Some((_, _, until_ms, _)) if until_ms > now => return Ok(Claim::Busy { until_ms }),
        Some((generation, ..)) => (generation + 1, false),
        // The lease goes only when the build is over (answered, cancelled or cleaned up): a
        // payload of it must not start it again.
        None => return Ok(Claim::Lost),
    };
    let token = new_token();
    let expires_ms = now + ttl.as_millis() as u64;
    if aws
        .create_parameter(
            &format!("{path}/{next}"),
            &encode(&token, expires_ms, &identity.request_id),
        )
        .await?
    {
        Ok(Claim::Held {
            lease: Lease {
                token,
                generation: next,
                expires_ms,
            },
            fresh,
        })
    } else {
        // Another delivery of the same payload took it first.
        Ok(Claim::Lost)
    }
}

/// Extends a lease that is still comfortably valid: a claimant only creates a newer generation
/// after this one expires, so overwriting our own generation before then needs no check.
/// Returns None when too little of it is left to skip the check; then [`claim`] it instead.
pub async fn extend(
    aws: &Aws,
    identity: &Identity,
    lease: &Lease,
    ttl: Duration,
) -> Result<Option<Lease>, AwsError> {
    let path = path(identity);
    let now = time::now_ms();
    if lease.expires_ms < now + 10_000 {
        return Ok(None);
    }
    let expires_ms = now + ttl.as_millis() as u64;
    let name = format!("{path}/{}", lease.generation);
    aws.overwrite_parameter(
        &name,
        &encode(&lease.token, expires_ms, &identity.request_id),
    )
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
    // Generations are numbered from 1, one per invocation that held the lease: the first ten go
    // by name in one call (DeleteParameters reports names that do not exist, without failing),
    // and the lease is listed only when the tenth was there (later ones may be too).
    let first: Vec<String> = (1..=10).map(|g| format!("{path}/{g}")).collect();
    let deleted = aws.delete_parameters_named(&first).await?;
    if !deleted.contains(&first[9]) {
        return Ok(());
    }
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
        assert_eq!(decode(&encode("abc", 42, "r 1")), Some(("abc", 42, "r 1")));
        // Written before leases named their request.
        assert_eq!(decode("abc 42"), Some(("abc", 42, "")));
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
        assert!(path(&identity).starts_with(&format!("{}/", resource_path(&identity))));
        assert_eq!(resource_path(&identity), resource_path(&other));
        assert!(path(&identity).starts_with("/ecs-ami/leases/"));
        assert_eq!(path(&identity).matches('/').count(), 4);
        assert_ne!(new_token(), new_token());
    }
}
