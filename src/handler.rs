//! One CloudFormation event in, exactly one response out, possibly several invocations later.
//!
//! This is the top-level guard: whatever happens below (invalid properties, an AWS error, a panic,
//! the invocation running out of time) ends in a response with a readable Reason, and anything the
//! request created is cleaned up first. A build that outlasts the invocation is handed to a fresh
//! one through the [`Scheduler`]; only the invocation that finishes it answers.

use std::future::Future;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::time::Instant;

use crate::aws::Aws;
use crate::cfn::{self, HttpSink, Operation, Outcome, Request, RequestError, Response, SinkError};
use crate::engine::ledger::{self, Record};
use crate::engine::{self, BuildState, Failed, Failure, Leftovers, Progress, Timing};
use crate::spec::AmiSpec;

/// Where responses go: the presigned ResponseURL in production.
pub trait ResponseSink: Send + Sync {
    fn send(
        &self,
        url: &str,
        response: &Response,
    ) -> impl Future<Output = Result<(), SinkError>> + Send;
}

impl ResponseSink for HttpSink {
    fn send(
        &self,
        url: &str,
        response: &Response,
    ) -> impl Future<Output = Result<(), SinkError>> + Send {
        HttpSink::send(self, url, response)
    }
}

/// Starts a fresh invocation with a hand-over payload: an asynchronous self-invocation in
/// Lambda, the next turn of a loop in the local command line and in tests.
pub trait Scheduler: Send + Sync {
    fn hand_over(&self, payload: Value) -> impl Future<Output = Result<(), String>> + Send;
}

/// The key that marks a hand-over payload, as opposed to a CloudFormation event.
pub const CONTINUATION_KEY: &str = "EcsAmiContinuation";

/// The version of the hand-over payload this code writes and reads. Bumped when [`BuildState`]
/// changes in a way the previous version cannot read; a payload of another version (a deploy
/// in the middle of a build) is not dropped: its build is cleaned up and the original request
/// it carries answered FAILED.
/// 2: the lease moved under its resource and is succeeded at each hand-over (a payload of
/// version 1 carries a lease this version cannot find).
pub const CONTINUATION_VERSION: u64 = 2;

/// What one invocation hands the next: the original request, untouched, and the build's state.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Continuation {
    /// Absent in payloads written before versions existed, which this version reads as 1.
    #[serde(default = "first_version")]
    pub version: u64,
    pub event: Value,
    pub build: BuildState,
}

fn first_version() -> u64 {
    1
}

impl Continuation {
    pub fn payload(&self) -> Value {
        serde_json::json!({ CONTINUATION_KEY: self })
    }
}

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

#[derive(Debug)]
pub enum Handled {
    Answered(Response),
    HandedOver {
        hand_overs: u32,
    },
    /// Another invocation is working on this request (a duplicate delivery); it will answer.
    Yielded,
    /// The request was answered before (this is a later delivery of it): the same answer was
    /// sent again, and nothing else done.
    Repeated(Response),
    /// A newer request of the resource cancelled this one: what its build made is removed, and
    /// nothing is answered (CloudFormation no longer waits for it).
    Cancelled {
        by: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    #[error(transparent)]
    NotCloudFormation(RequestError),
    #[error("{error} (the response was {status:?} for {physical_id})")]
    Undeliverable {
        status: cfn::Status,
        physical_id: String,
        error: SinkError,
    },
}

/// Handles one event (a CloudFormation request or a hand-over payload): either sends its response
/// or hands the build over.
pub async fn handle(
    event: Value,
    aws: &Aws,
    sink: &impl ResponseSink,
    scheduler: &impl Scheduler,
    limits: Limits,
) -> Result<Handled, HandleError> {
    let (event, state) = match split_continuation(event) {
        Ok(parts) => parts,
        Err(problem) => {
            return Err(HandleError::NotCloudFormation(
                RequestError::NotCloudFormation(problem),
            ));
        }
    };
    let (request, outcome) = match Request::parse(event.clone()) {
        Ok(request) => {
            let recorded = leaves_a_record(&request);
            if recorded && let Some(handled) = honour_record(&request, aws, sink).await {
                return Ok(handled);
            }
            let progress = match state {
                Some(Err(problem)) => cannot_continue(&request, aws, &problem).await,
                Some(Ok(state)) => guarded(&request, Some(state), aws, &limits).await,
                None => guarded(&request, None, aws, &limits).await,
            };
            let outcome = match progress {
                Progress::Finished(outcome) => outcome,
                Progress::Failed(failed) => failed_outcome(&request, &failed),
                Progress::Yielded => return Ok(Handled::Yielded),
                Progress::Cancelled(report) => {
                    tracing::info!(report = %report, "cancelled: nothing answered");
                    return Ok(cancelled_now(&request, aws).await);
                }
                Progress::Paused(state) => {
                    let hand_overs = state.hand_overs;
                    let continuation = Continuation {
                        version: CONTINUATION_VERSION,
                        event,
                        build: (*state).clone(),
                    };
                    match scheduler.hand_over(continuation.payload()).await {
                        Ok(()) => return Ok(Handled::HandedOver { hand_overs }),
                        Err(why) => {
                            tracing::error!(problem = %why, "hand-over failed");
                            abandon(&request, aws, *state, &why).await
                        }
                    }
                }
            };
            return answer(&request, outcome, aws, sink, recorded).await;
        }
        Err(RequestError::Malformed { problem, partial }) => {
            let physical_id = match &partial.operation {
                Operation::Delete { physical_id } => physical_id.clone(),
                _ => String::new(),
            };
            let outcome = Outcome::failed(
                physical_id,
                format!("malformed CloudFormation request: {problem}"),
            );
            (*partial, outcome)
        }
        Err(error @ RequestError::NotCloudFormation(_)) => {
            tracing::error!(problem = %error, "event ignored");
            return Err(HandleError::NotCloudFormation(error));
        }
    };
    answer(&request, outcome, aws, sink, false).await
}

/// Whether a request leaves a record (see [`ledger`]) and honours one. Not a request refused for
/// its properties (it touches no AWS at all, and answers any delivery the same), nor the Delete
/// of a Create that failed (there is nothing it could do twice).
fn leaves_a_record(request: &Request) -> bool {
    match &request.operation {
        Operation::Delete { physical_id } => !cfn::is_failed_create_physical_id(physical_id),
        Operation::Create | Operation::Update { .. } => AmiSpec::parse(&request.properties).is_ok(),
    }
}

/// How a request found cancelled by its record is handled: the newer request that cancelled it
/// is named.
async fn cancelled_now(request: &Request, aws: &Aws) -> Handled {
    let by = match ledger::read(aws, &request.identity).await {
        Ok(Some(Record::Cancelled { by, .. })) => by,
        _ => "a newer request".to_owned(),
    };
    Handled::Cancelled { by }
}

/// A request that already has a record (see [`ledger`]) is not handled again. Answered: this is
/// a later delivery (a retry, a duplicate, a hand-over sent twice), and the recorded answer is
/// sent again, touching nothing. Cancelled: what a build of it may still have is removed (a
/// hand-over that was on its way when it was cancelled), and nothing is answered. None: no
/// record (or none readable now), handle the request.
async fn honour_record(request: &Request, aws: &Aws, sink: &impl ResponseSink) -> Option<Handled> {
    let record = match ledger::read(aws, &request.identity).await {
        Ok(record) => record?,
        Err(error) => {
            tracing::warn!(problem = %error, "could not read the request's record; handling it");
            return None;
        }
    };
    match record {
        Record::Answered {
            status,
            physical_id,
            reason,
            ..
        } => {
            tracing::warn!(?status, %physical_id, "this request was answered before: sending the same answer again, nothing else");
            let outcome = match status {
                cfn::Status::Success => {
                    engine::answered_image(aws, &request.identity, &physical_id).await
                }
                cfn::Status::Failed => {
                    Outcome::failed(physical_id, reason.clone().unwrap_or_default())
                }
            };
            let outcome = Outcome { reason, ..outcome };
            let response = Response::new(&request.identity, outcome);
            // The first answer was sent (or its invocation died sending it): a failure to send
            // it again is not worth a retry of the event.
            if let Err(error) = sink.send(&request.response_url, &response).await {
                tracing::warn!(problem = %error, "the repeated answer could not be delivered");
            }
            Some(Handled::Repeated(response))
        }
        Record::Cancelled { by, .. } => {
            tracing::warn!(cancelled_by = %by, "this request was cancelled by a newer one: removing what its build left, answering nothing");
            if !matches!(request.operation, Operation::Delete { .. }) {
                let report = remove_build(aws, &request.identity, Duration::from_secs(120)).await;
                tracing::info!(report = %report, "cancelled request cleaned up");
            }
            Some(Handled::Cancelled { by })
        }
    }
}

/// A hand-over payload's original request, and its build state or why this version cannot
/// continue it. An error only when not even the request can be found in it.
type Resumed = Option<Result<BuildState, String>>;

fn split_continuation(event: Value) -> Result<(Value, Resumed), String> {
    match event {
        Value::Object(mut fields) if fields.contains_key(CONTINUATION_KEY) => {
            let Some(Value::Object(mut inner)) = fields.remove(CONTINUATION_KEY) else {
                return Err("unreadable hand-over payload: not an object".into());
            };
            let event = inner
                .remove("Event")
                .ok_or("unreadable hand-over payload: it carries no request")?;
            let version = inner
                .get("Version")
                .map_or(Some(1), Value::as_u64)
                .unwrap_or(u64::MAX);
            let build = if version != CONTINUATION_VERSION {
                Err(format!(
                    "the hand-over payload is of version {version}, this function reads version {CONTINUATION_VERSION}"
                ))
            } else {
                serde_json::from_value::<BuildState>(inner.remove("Build").unwrap_or_default())
                    .map_err(|e| format!("the build state handed over is unreadable here: {e}"))
            };
            Ok((event, Some(build)))
        }
        other => Ok((other, None)),
    }
}

/// Records the answer (see [`ledger`]), then sends it. When the record shows that a newer request
/// cancelled this one meanwhile, nothing is sent and what the build made is removed (an image
/// made for a request CloudFormation gave up on belongs to no stack); when another delivery
/// answered first, its answer stands.
async fn answer(
    request: &Request,
    outcome: Outcome,
    aws: &Aws,
    sink: &impl ResponseSink,
    recorded: bool,
) -> Result<Handled, HandleError> {
    let record = Record::answered(
        outcome.status,
        &outcome.physical_id,
        outcome.reason.as_deref(),
    );
    let written = match recorded {
        true => ledger::write(aws, &request.identity, &record).await,
        false => Ok(None),
    };
    match written {
        Ok(None) if recorded && !matches!(request.operation, Operation::Delete { .. }) => {
            // A finished build kept its lease until now (see `Build::run`).
            release_lease_of(aws, &request.identity).await;
        }
        Ok(None) => {}
        Ok(Some(Record::Cancelled { by, .. })) => {
            tracing::warn!(cancelled_by = %by, "cancelled while finishing: removing what the build made, answering nothing");
            // The finished build kept its lease for this moment (see `Build::run`).
            let report = remove_build(aws, &request.identity, Duration::from_secs(120)).await;
            tracing::info!(report = %report, "cancelled request cleaned up");
            return Ok(Handled::Cancelled { by });
        }
        Ok(Some(first @ Record::Answered { .. })) => {
            tracing::warn!(
                ?first,
                "another delivery of this request answered first: its answer stands"
            );
            return Ok(Handled::Yielded);
        }
        Err(error) => {
            tracing::warn!(problem = %error, "the answer could not be recorded; sending it anyway");
            // Without the lease, no newer request takes the answered build for one in flight.
            if !matches!(request.operation, Operation::Delete { .. }) {
                release_lease_of(aws, &request.identity).await;
            }
        }
    }
    if recorded {
        // Each answer removes its resource's records older than a day; a Delete (the last
        // request a resource gets) also some of stacks deleted long ago.
        let pages = match request.operation {
            Operation::Delete { .. } => 3,
            _ => 0,
        };
        if let Err(error) = ledger::sweep(aws, &request.identity, pages).await {
            tracing::warn!(problem = %error, "old request records could not be removed");
        }
    }
    let response = Response::new(&request.identity, outcome);
    tracing::info!(
        status = ?response.status,
        physical_id = %response.physical_resource_id,
        reason = response.reason.as_deref().unwrap_or(""),
        "answering CloudFormation"
    );
    match sink.send(&request.response_url, &response).await {
        Ok(()) => Ok(Handled::Answered(response)),
        Err(error) => {
            tracing::error!(problem = %error, "CloudFormation could not be told the outcome");
            Err(HandleError::Undeliverable {
                status: response.status,
                physical_id: response.physical_resource_id,
                error,
            })
        }
    }
}

/// The physical id a FAILED answer must carry: the existing one for Update and Delete, a marker
/// for a Create that made no image.
fn failure_physical_id(request: &Request) -> String {
    match &request.operation {
        Operation::Create => cfn::failed_create_physical_id(&request.identity),
        Operation::Update { physical_id, .. } | Operation::Delete { physical_id } => {
            physical_id.clone()
        }
    }
}

async fn abandon(request: &Request, aws: &Aws, state: BuildState, why: &str) -> Outcome {
    let spec = AmiSpec::parse(&request.properties).expect("a paused build had valid properties");
    // The hand-over failed near the end of the invocation: retries for at most 5 s.
    let failed = engine::RETRIES_UNTIL
        .scope(
            tokio::time::Instant::now() + Duration::from_secs(5),
            engine::abandon(aws, &request.identity, spec, state, why),
        )
        .await;
    failed_outcome(request, &failed)
}

/// The handler's edge, where a failure becomes CloudFormation's Reason. A failed Create answers
/// with a physical id of its own ([`cfn::failed_create_physical_id`]); a failed Update keeps the
/// resource's image (a different physical id would make CloudFormation take the failure for a
/// replacement) and says so.
pub fn failed_outcome(request: &Request, failed: &Failed) -> Outcome {
    match (&request.operation, &failed.failure) {
        // Its own sentence already says it is the Update's.
        (Operation::Update { physical_id, .. }, Failure::Update(_)) => {
            Outcome::failed(physical_id, failed.to_string())
        }
        (Operation::Update { physical_id, .. }, _) => Outcome::failed(
            physical_id,
            format!("Update {failed}; the existing image {physical_id} is unchanged"),
        ),
        _ => Outcome::failed(failure_physical_id(request), failed.to_string()),
    }
}

/// Runs the operation on its own task, so that a panic is caught, and under a hard deadline, so
/// that a hung call cannot outlast the invocation.
async fn guarded(
    request: &Request,
    state: Option<BuildState>,
    aws: &Aws,
    limits: &Limits,
) -> Progress {
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
        Ok(progress) => progress,
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

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A hand-over this version cannot continue (a deploy mid-build): the build is cleaned up by its
/// request's tags and the original request answered FAILED, instead of the event being dropped
/// and the stack waiting out its timeout.
async fn cannot_continue(request: &Request, aws: &Aws, problem: &str) -> Progress {
    tracing::error!(
        problem,
        "a handed-over build cannot be continued by this version"
    );
    // The build is over: its lease goes too (it would otherwise stay in Parameter Store).
    let report = remove_build(aws, &request.identity, Duration::from_secs(60)).await;
    Progress::Failed(Box::new(Failed {
        failure: Failure::NotContinued {
            problem: problem.to_owned(),
        },
        cleanup: Some(report),
    }))
}

/// Deletes every generation of the request's build lease, whoever holds it: the build is over.
async fn release_lease_of(aws: &Aws, identity: &cfn::Identity) {
    if let Err(error) = engine::lease::release_all(aws, &engine::lease::path(identity)).await {
        tracing::warn!(problem = %error, "the build lease could not be deleted; it expires by itself");
    }
}

/// Ends a request's build that no invocation of it will carry on: removes what its tags find
/// ([`clean_up_by_tags`]), then its lease. Returns the cleanup's report.
async fn remove_build(aws: &Aws, identity: &cfn::Identity, retries_for: Duration) -> String {
    let report = clean_up_by_tags(aws, identity, retries_for).await;
    release_lease_of(aws, identity).await;
    report
}

/// Removes what the request's tags find, retrying transient errors for at most `retries_for`.
async fn clean_up_by_tags(aws: &Aws, identity: &cfn::Identity, retries_for: Duration) -> String {
    engine::RETRIES_UNTIL
        .scope(
            tokio::time::Instant::now() + retries_for,
            engine::clean_up(
                aws,
                identity,
                &Leftovers::default(),
                Timing::default().not_found_grace,
            ),
        )
        .await
}

async fn after_crash(request: &Request, aws: &Aws, what: String) -> Progress {
    tracing::error!(problem = %what, "operation did not complete");
    let report = match request.operation {
        Operation::Delete { .. } => String::new(),
        // About 30 s are left: only what the tags find, and retries for at most 5 s.
        _ => format!(
            " {}",
            clean_up_by_tags(aws, &request.identity, Duration::from_secs(5)).await
        ),
    };
    Progress::Finished(Outcome::failed(
        failure_physical_id(request),
        format!("the operation {what}.{report}"),
    ))
}

async fn operate(
    request: Request,
    state: Option<BuildState>,
    aws: Aws,
    timing: Timing,
) -> Progress {
    let identity = &request.identity;
    // The properties first: a request refused for them calls no AWS at all.
    let spec = match &request.operation {
        Operation::Delete { .. } => None,
        _ => match AmiSpec::parse(&request.properties) {
            Ok(spec) => Some(spec),
            Err(errors) => {
                let unchanged = match &request.operation {
                    Operation::Update { physical_id, .. } => {
                        format!("; the existing image {physical_id} is unchanged")
                    }
                    _ => String::new(),
                };
                return Progress::Finished(Outcome::failed(
                    failure_physical_id(&request),
                    format!("{errors}. Nothing was launched{unchanged}."),
                ));
            }
        },
    };
    if let Some(progress) = cancelled_before_it_started(&request, state.is_some(), &aws).await {
        return progress;
    }
    // A request of the resource other than a Delete of a Create that failed (which answered, so
    // CloudFormation may already have sent a newer Create) first stops builds CloudFormation gave
    // up on.
    let superseded = match &request.operation {
        // A hand-over continues a request that did this in its first invocation.
        _ if state.is_some() => engine::Superseded::default(),
        Operation::Delete { physical_id } if cfn::is_failed_create_physical_id(physical_id) => {
            engine::Superseded::default()
        }
        Operation::Create => engine::Superseded::default(),
        _ => match engine::supersede(&aws, identity, current_image(&request), &timing).await {
            Ok(superseded) => superseded,
            Err(error) => {
                return Progress::Finished(Outcome::failed(
                    failure_physical_id(&request),
                    format!(
                        "could not look for builds of this resource CloudFormation gave up on: {error}"
                    ),
                ));
            }
        },
    };
    // A Delete that leaves something fails, so that CloudFormation's retry finds it again; an
    // Update (a rollback) goes on, naming it, rather than leaving the stack in
    // UPDATE_ROLLBACK_FAILED.
    if superseded.left_something && matches!(request.operation, Operation::Delete { .. }) {
        return Progress::Finished(Outcome::failed(
            failure_physical_id(&request),
            format!(
                "A build of this resource that CloudFormation gave up on could not be removed completely; retry to try again.{}",
                superseded.report()
            ),
        ));
    }
    // The edge: a failure becomes its Reason here, so that the report above is added to it.
    let progress = match operate_alone(request.clone(), spec, state, &aws, timing).await {
        Progress::Failed(failed) => Progress::Finished(failed_outcome(&request, &failed)),
        other => other,
    };
    match progress {
        Progress::Finished(outcome) if !superseded.stopped.is_empty() => {
            let reason = format!(
                "{}{}",
                outcome.reason.as_deref().unwrap_or_default(),
                superseded.report()
            );
            Progress::Finished(outcome.with_reason(reason.trim_start().to_owned()))
        }
        other => other,
    }
}

/// Lambda delivers asynchronous events in no guaranteed order, so the Delete of a Create that
/// CloudFormation cancelled (one with a physical id CloudFormation made up, neither an AMI nor a
/// failed Create's) may run before the Create itself. Such a Delete notes when CloudFormation
/// issued it; a Create issued before then, arriving afterwards, builds nothing and answers
/// nothing. Both times are CloudFormation's (the signing time of each ResponseURL).
async fn cancelled_before_it_started(
    request: &Request,
    resumed: bool,
    aws: &Aws,
) -> Option<Progress> {
    let issued_at = request.issued_at()?;
    match &request.operation {
        Operation::Delete { physical_id }
            if !crate::spec::is_ami_id(physical_id)
                && !cfn::is_failed_create_physical_id(physical_id) =>
        {
            if let Err(error) =
                ledger::cancel_creates_before(aws, &request.identity, issued_at).await
            {
                tracing::warn!(problem = %error, "could not note the cancelled Create for a late delivery of it");
            }
            None
        }
        // Its properties are valid: `operate` refused it otherwise.
        Operation::Create if !resumed => {
            let by = match ledger::cancel_if_create_cancelled(aws, &request.identity, issued_at)
                .await
            {
                Ok(by) => by?,
                Err(error) => {
                    tracing::warn!(problem = %error, "could not read whether this Create was cancelled");
                    return None;
                }
            };
            Some(Progress::Cancelled(format!(
                "CloudFormation cancelled this Create (its Delete {by} was issued later, and ran first) before its build started: nothing was made"
            )))
        }
        _ => None,
    }
}

/// The AMI CloudFormation holds for the resource, if the request names one: never removed as a
/// leftover of another request's build.
fn current_image(request: &Request) -> Option<&str> {
    match &request.operation {
        Operation::Update { physical_id, .. } | Operation::Delete { physical_id }
            if crate::spec::is_ami_id(physical_id) =>
        {
            Some(physical_id)
        }
        _ => None,
    }
}

/// The request's own operation, once no other build of the resource is in flight; `spec`: its
/// validated properties (none for a Delete).
async fn operate_alone(
    request: Request,
    spec: Option<AmiSpec>,
    state: Option<BuildState>,
    aws: &Aws,
    timing: Timing,
) -> Progress {
    let (aws, identity) = (aws.clone(), &request.identity);
    let spec = match (&request.operation, spec) {
        (Operation::Delete { physical_id }, _) => {
            return Progress::Finished(engine::delete(&aws, identity, physical_id).await);
        }
        (_, Some(spec)) => spec,
        (_, None) => unreachable!("a Create or Update has its properties validated"),
    };
    match (&request.operation, state) {
        (Operation::Create, None) => engine::create(&aws, identity, spec, &timing).await,
        (
            Operation::Update {
                physical_id,
                old_properties,
            },
            None,
        ) => {
            // What the previous request asked for (a rollback's are the failed update's).
            // Properties that do not parse (a rollback after invalid ones) asked for something
            // else; none at all (not from CloudFormation) ask for nothing.
            let old_request = match AmiSpec::parse(old_properties) {
                Ok(old) => Some(crate::spec::fingerprint::of_request(&old)),
                Err(_) if old_properties.as_object().is_some_and(|o| !o.is_empty()) => {
                    Some("unparsable".to_owned())
                }
                Err(_) => None,
            };
            engine::update(&aws, identity, physical_id, (spec, old_request), &timing).await
        }
        (Operation::Create, Some(state)) => {
            engine::Build::resume(spec, state)
                .run(&aws, identity, &timing)
                .await
        }
        (Operation::Update { .. }, Some(state)) => {
            engine::Build::resume(spec, state)
                .run(&aws, identity, &timing)
                .await
        }
        (Operation::Delete { .. }, _) => unreachable!("Delete returned above"),
    }
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
