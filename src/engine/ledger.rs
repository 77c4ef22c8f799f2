//! What became of each request, kept so that every later delivery of it honours the first.
//!
//! Lambda may deliver an event again, late (a retry, a duplicate, a hand-over sent twice), and
//! CloudFormation gives up on requests it cancelled. So each request of a resource leaves one
//! record in SSM Parameter Store, `/ecs-ami/requests/<resource hash>/<request hash>`, created
//! only if absent (the atomic step Parameter Store offers), so that exactly one of these wins:
//! - [`Record::Answered`]: written just before the response is sent. A later delivery sends the
//!   same answer again and touches nothing; in particular no path ever removes an image whose id
//!   went out in a SUCCESS.
//! - [`Record::Cancelled`]: written by a newer request of the same resource (a Delete or Update
//!   CloudFormation sent because it gave up on this one). The build stops at its next check,
//!   removes what it made and answers nothing.
//!
//! Records outlive any delivery (Lambda keeps an event at most 6 hours): the deployment's hourly
//! sweep ([`sweep_all`]) removes them after [`RETENTION`].

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::time;
use crate::aws::{Aws, AwsError};
use crate::cfn::{Identity, Status};

const ROOT: &str = "/ecs-ami/requests";

/// How long a record is kept: past the longest Lambda keeps an event (6 hours) with a margin.
pub const RETENTION: Duration = Duration::from_secs(24 * 3600);

/// How much of a Reason a record keeps, in bytes: a standard parameter holds 4 KB
/// (https://docs.aws.amazon.com/systems-manager/latest/userguide/parameter-store-advanced-parameters.html),
/// and JSON may escape some characters to six bytes each.
const REASON_BYTES: usize = 600;

/// The longest start of `text` of at most `max` bytes that ends on a character boundary.
fn within_bytes(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "Record", rename_all = "PascalCase")]
pub enum Record {
    #[serde(rename_all = "PascalCase")]
    Answered {
        status: Status,
        physical_id: String,
        reason: Option<String>,
        at_ms: u64,
    },
    #[serde(rename_all = "PascalCase")]
    Cancelled {
        /// The request that cancelled it.
        by: String,
        at_ms: u64,
    },
}

/// Kept for the resource, not for one request: CloudFormation cancelled a Create of it and sent
/// `by`, a Delete issued at `issued_at`. A Create issued before then whose build had not even
/// started (Lambda delivers asynchronous events in no guaranteed order) is one CloudFormation
/// gave up on: it must build nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreatesCancelled {
    by: String,
    issued_at: String,
    at_ms: u64,
}

impl Record {
    pub fn answered(status: Status, physical_id: &str, reason: Option<&str>) -> Record {
        Record::Answered {
            status,
            physical_id: physical_id.to_owned(),
            reason: reason.map(|r| within_bytes(r, REASON_BYTES).to_owned()),
            at_ms: time::now_ms(),
        }
    }

    pub fn cancelled(by: &Identity) -> Record {
        Record::Cancelled {
            by: by.request_id.clone(),
            at_ms: time::now_ms(),
        }
    }
}

fn resource_path(identity: &Identity) -> String {
    format!("{ROOT}/{}", identity.resource_key())
}

pub fn path(identity: &Identity) -> String {
    format!("{}/{}", resource_path(identity), identity.request_key())
}

/// What a request finds when it looks (one GetParameters call): its own record, and for a
/// Create, the Delete that cancelled it before it started, if one did.
#[derive(Debug, Default)]
pub struct Standing {
    pub record: Option<Record>,
    pub create_cancelled_by: Option<String>,
}

/// The record of `identity`'s request, if it has one. A value this version cannot read counts
/// as none.
pub async fn read(aws: &Aws, identity: &Identity) -> Result<Option<Record>, AwsError> {
    Ok(standing(aws, identity, None).await?.record)
}

/// The request's record and, for a Create issued at `create_issued_at`, the Delete that
/// cancelled the Creates of its resource issued before it (see [`cancel_creates_before`]).
pub async fn standing(
    aws: &Aws,
    identity: &Identity,
    create_issued_at: Option<&str>,
) -> Result<Standing, AwsError> {
    let own = path(identity);
    let cancelled_path = creates_cancelled_path(identity);
    let mut names = vec![own.clone()];
    if create_issued_at.is_some() {
        names.push(cancelled_path.clone());
    }
    let found = aws.parameters_named(&names).await?;
    let record = found
        .get(&own)
        .and_then(|value| serde_json::from_str(value).ok());
    let create_cancelled_by = create_issued_at.and_then(|issued_at| {
        found
            .get(&cancelled_path)
            .and_then(|value| serde_json::from_str::<CreatesCancelled>(value).ok())
            .filter(|r| issued_at <= r.issued_at.as_str())
            .map(|r| r.by)
    });
    Ok(Standing {
        record,
        create_cancelled_by,
    })
}

/// Writes `record` for `identity`'s request unless it has one. None: written. Some: the record
/// that was there first, which stands.
pub async fn write(
    aws: &Aws,
    identity: &Identity,
    record: &Record,
) -> Result<Option<Record>, AwsError> {
    let value = serde_json::to_string(record).expect("a record serializes");
    if aws.create_parameter(&path(identity), &value).await? {
        return Ok(None);
    }
    // There but unreadable (another version wrote it): it decides nothing, and the caller goes
    // on as if it had written its own.
    read(aws, identity).await
}

fn creates_cancelled_path(identity: &Identity) -> String {
    format!("{}/creates-cancelled", resource_path(identity))
}

/// Notes that CloudFormation cancelled the Creates of `identity`'s resource issued before
/// `issued_at` (when it issued `identity`'s Delete).
pub async fn cancel_creates_before(
    aws: &Aws,
    identity: &Identity,
    issued_at: &str,
) -> Result<(), AwsError> {
    let record = CreatesCancelled {
        by: identity.request_id.clone(),
        issued_at: issued_at.to_owned(),
        at_ms: time::now_ms(),
    };
    let value = serde_json::to_string(&record).expect("a record serializes");
    aws.overwrite_parameter(&creates_cancelled_path(identity), &value)
        .await
}

/// A Create found cancelled by the Delete `by` ([`Standing::create_cancelled_by`]): its own record
/// says so, so that a later delivery of it does nothing either.
pub async fn record_create_cancelled(aws: &Aws, identity: &Identity, by: &str) {
    let record = Record::Cancelled {
        by: by.to_owned(),
        at_ms: time::now_ms(),
    };
    if let Err(error) = write(aws, identity, &record).await {
        tracing::warn!(problem = %error, "could not record the cancellation");
    }
}

/// Removes every resource's records older than [`RETENTION`]. The scheduled sweep calls it, so
/// that a deleted stack's records go even when no other request comes.
pub async fn sweep_all(aws: &Aws) -> Result<usize, AwsError> {
    let found = aws.parameters_below(ROOT, true, usize::MAX).await?;
    remove_written_before(aws, found, retention_cutoff()).await
}

/// Removes every record of every resource: the function's own stack is being deleted.
pub async fn remove_all(aws: &Aws) -> Result<usize, AwsError> {
    aws.delete_parameters_below(ROOT).await
}

fn retention_cutoff() -> u64 {
    time::now_ms().saturating_sub(RETENTION.as_millis() as u64)
}

async fn remove_written_before(
    aws: &Aws,
    found: Vec<(String, String)>,
    cutoff: u64,
) -> Result<usize, AwsError> {
    let mut old: Vec<String> = found
        .into_iter()
        .filter(|(_, value)| {
            // Every kind of record says when it was written.
            serde_json::from_str::<serde_json::Value>(value)
                .ok()
                .and_then(|v| v.get("AtMs")?.as_u64())
                .is_some_and(|at_ms| at_ms < cutoff)
        })
        .map(|(name, _)| name)
        .collect();
    old.sort();
    old.dedup();
    aws.delete_parameters(&old).await?;
    Ok(old.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(request_id: &str) -> Identity {
        Identity {
            stack_id: "arn:aws:cloudformation:us-east-1:1:stack/s/g".into(),
            logical_id: "Ami".into(),
            request_id: request_id.into(),
        }
    }

    #[test]
    fn records_round_trip_and_fit_a_standard_parameter() {
        // The worst case for size: characters JSON escapes to six bytes each.
        let long = "\u{1}é".repeat(5_000);
        let answered = Record::answered(Status::Failed, "ecs-ami-not-built-1", Some(&long));
        let value = serde_json::to_string(&answered).unwrap();
        assert!(value.len() < 4096, "{} bytes", value.len());
        assert!(value.contains("\"Record\":\"Answered\""), "{value}");
        let back: Record = serde_json::from_str(&value).unwrap();
        assert_eq!(back, answered);
        let cancelled = Record::cancelled(&identity("r2"));
        let value = serde_json::to_string(&cancelled).unwrap();
        assert_eq!(serde_json::from_str::<Record>(&value).unwrap(), cancelled);
    }

    #[test]
    fn each_request_of_a_resource_has_its_own_record_under_the_resource() {
        let (one, two) = (identity("r1"), identity("r2"));
        assert_ne!(path(&one), path(&two));
        assert_eq!(resource_path(&one), resource_path(&two));
        assert!(path(&one).starts_with(&format!("{}/", resource_path(&one))));
        assert!(path(&one).starts_with("/ecs-ami/requests/"));
    }
}
