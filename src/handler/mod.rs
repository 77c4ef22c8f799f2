//! One CloudFormation event in, exactly one response out, possibly several invocations later.
//!
//! This is the top-level guard: whatever happens below (invalid properties, an AWS error, a panic,
//! the invocation running out of time) ends in a response with a readable Reason, and anything the
//! request created is cleaned up first. A build that outlasts the invocation is handed to a fresh
//! one through the [`Scheduler`]; only the invocation that finishes it answers.
//!
//! | Module | What it does |
//! |---|---|
//! | `mod.rs` | [`handle`]: one event to one answer; `Turn`, where the engine's result becomes an answer: [`success_outcome`] for a `Done`, [`failed_outcome`], where a typed failure becomes a Reason |
//! | [`continuation`] | the hand-over payload, and a payload this version cannot continue |
//! | [`limits`] | the invocation's time limits, and the guard that turns a panic or a hung call into an answer |
//! | `deliveries.rs` | repeated and cancelled deliveries, by the request's record: a repeated one answers the same, a cancelled one nothing |
//! | `operate.rs` | validation, superseding abandoned builds, then the operation itself |
//! | `long_build.rs` | the EcsAmi macro's resources: the one that builds acknowledges and signals, the one that holds the image answers with it |
//! | `maintenance.rs` | the scheduled sweep of old records, and the deployment's store resource |

pub mod continuation;
mod deliveries;
pub mod limits;
mod long_build;
mod maintenance;
mod operate;

use std::future::Future;
use std::time::Duration;

use serde_json::Value;

use crate::aws::Aws;
use crate::cfn::{self, HttpSink, Operation, Outcome, Request, RequestError, Response, SinkError};
use crate::engine::ledger::{self, Record};
use crate::engine::{self, BuildState, Failed, Failure, Progress};
use crate::spec::AmiSpec;

pub use continuation::{CONTINUATION_KEY, CONTINUATION_VERSION, Continuation};
use continuation::{cannot_continue, split_continuation};
use deliveries::{already_recorded, cancelled_now, leaves_a_record};
pub use limits::Limits;
use limits::guarded;
pub use maintenance::{END_KEPT_INSTANCES, STORE_RESOURCE_TYPE, SWEEP_EVENT_KEY};
use operate::{release_lease_of, remove_build};

/// Where responses go: the presigned ResponseURL in production.
pub trait ResponseSink: Send + Sync {
    fn send(
        &self,
        url: &str,
        response: &Response,
    ) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// Called before each hand-over: what the answer's destination needs to hear while the build
    /// goes on (nothing, but for a long build's first invocation: see `long_build.rs`).
    fn before_hand_over(&self) -> impl Future<Output = ()> + Send {
        async {}
    }
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
    /// The scheduled sweep (not a CloudFormation request): how many old records went.
    Swept {
        removed: usize,
    },
    /// The scheduled end of kept instances (not a CloudFormation request): how many instances
    /// kept for debugging were terminated, and how many EC2 refused to terminate.
    EndedKept {
        terminated: usize,
        refused: usize,
    },
    /// A template macro's invocation (not a CloudFormation request): the EcsAmi macro's answer,
    /// the expanded template or why not (`crate::cfn::transform`).
    Expanded(Value),
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
    if crate::cfn::transform::is_macro_event(&event) {
        return Ok(Handled::Expanded(crate::cfn::transform::respond(&event)));
    }
    if maintenance::is_sweep(&event) {
        return Ok(maintenance::sweep(aws).await);
    }
    if maintenance::is_end_kept_instances(&event) {
        return Ok(maintenance::end_kept_instances(aws).await);
    }
    if maintenance::is_store_request(&event)
        && let Ok(request) = Request::parse(event.clone())
    {
        return maintenance::store(&request, aws, sink).await;
    }
    let (event, state) = match split_continuation(event) {
        Ok(parts) => parts,
        Err(problem) => {
            return Err(HandleError::NotCloudFormation(
                RequestError::NotCloudFormation(problem),
            ));
        }
    };
    let (request, outcome) = match Request::parse(event.clone()) {
        Ok(request) => match long_build::signalling(&request) {
            Some((url, image_resource)) => {
                return start_long_build(
                    request,
                    (&url, &image_resource),
                    (event, state),
                    (aws, sink, scheduler),
                    limits,
                )
                .await;
            }
            None => return run(request, event, state, (aws, sink, scheduler), limits).await,
        },
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

/// A request of the resource that builds a long build (the EcsAmi macro's, see `long_build.rs`):
/// refused properties are refused to CloudFormation, then the build runs as the request of the
/// resource that holds the image, its answer signalled to the wait condition's handle, and
/// CloudFormation told the outcome, or that the build goes on at its first hand-over.
async fn start_long_build(
    request: Request,
    (url, image_resource): (&str, &str),
    (event, state): (Value, Option<Result<BuildState, String>>),
    (aws, sink, scheduler): (&Aws, &impl ResponseSink, &impl Scheduler),
    limits: Limits,
) -> Result<Handled, HandleError> {
    let builds = !matches!(request.operation, Operation::Delete { .. });
    if builds
        && state.is_none()
        && let Err(Turn::Answer(refused)) = operate::validated(&request, aws.region().as_deref())
    {
        return answer(&request, refused, aws, sink, false).await;
    }
    let build = long_build::as_build(&request, (url, image_resource), aws).await;
    let reply = long_build::Reply::new(sink, &request, image_resource, state.is_none());
    run(build, event, state, (aws, &reply, scheduler), limits).await
}

/// One request, parsed: a later delivery of an answered one answers the same; otherwise its
/// operation runs (or goes on, `state`) until it is answered, handed over or cancelled. `event`:
/// what a hand-over carries, the request as CloudFormation sent it.
async fn run(
    request: Request,
    event: Value,
    state: Option<Result<BuildState, String>>,
    (aws, sink, scheduler): (&Aws, &impl ResponseSink, &impl Scheduler),
    limits: Limits,
) -> Result<Handled, HandleError> {
    let recorded = leaves_a_record(&request);
    if recorded && let Some(handled) = already_recorded(&request, aws, sink).await {
        return Ok(handled);
    }
    let turn = match state {
        Some(Err(problem)) => turn_of(&request, cannot_continue(&request, aws, &problem).await),
        Some(Ok(state)) => guarded(&request, Some(state), aws, &limits).await,
        None => guarded(&request, None, aws, &limits).await,
    };
    let outcome = match turn {
        Turn::Answer(outcome) => outcome,
        Turn::Yielded => return Ok(Handled::Yielded),
        Turn::Cancelled(report) => {
            tracing::info!(report = %report, "cancelled: nothing answered");
            return Ok(cancelled_now(&request, aws).await);
        }
        Turn::Paused(state) => {
            sink.before_hand_over().await;
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
    answer(&request, outcome, aws, sink, recorded).await
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
            let report = remove_build(aws, request, Duration::from_secs(120)).await;
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

/// Where a request stands when this invocation stops, in the handler's terms: an answer for
/// CloudFormation (the engine's result made one, or one the handler decided itself, such as
/// invalid properties), or what the engine left to do.
#[derive(Debug)]
pub(super) enum Turn {
    Answer(Outcome),
    Paused(Box<BuildState>),
    Yielded,
    Cancelled(engine::Cleanup),
}

/// The engine's progress in the handler's terms: a result becomes an answer here.
pub(super) fn turn_of(request: &Request, progress: Progress) -> Turn {
    match progress {
        Progress::Finished(done) => Turn::Answer(success_outcome(done)),
        Progress::Failed(failed) => Turn::Answer(failed_outcome(request, &failed)),
        Progress::Paused(state) => Turn::Paused(state),
        Progress::Yielded => Turn::Yielded,
        Progress::Cancelled(report) => Turn::Cancelled(report),
    }
}

/// The handler's edge for a success: the resource's id, its attributes, and the note (shown in
/// the stack's events) as the Reason.
pub fn success_outcome(done: engine::Done) -> Outcome {
    let outcome = Outcome::success(done.id, done.attributes);
    match done.note {
        Some(note) => outcome.with_reason(note),
        None => outcome,
    }
}

/// The handler's edge, where a failure becomes CloudFormation's Reason. A failed Create answers
/// with a physical id of its own ([`cfn::failed_create_physical_id`]); a failed Update keeps the
/// resource's image (a different physical id would make CloudFormation take the failure for a
/// replacement) and says so.
pub fn failed_outcome(request: &Request, failed: &Failed) -> Outcome {
    let reason = match (&request.operation, &failed.failure) {
        // An Update's own failures already say they are the Update's.
        (Operation::Update { physical_id, .. }, failure)
            if !matches!(failure, Failure::Update(_)) =>
        {
            format!("Update {failed}; the existing image {physical_id} is unchanged")
        }
        _ => failed.to_string(),
    };
    Outcome::failed(failure_physical_id(request), reason)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::AwsError;
    use crate::engine::{BuildError, DeleteError, UpdateError};

    fn request(operation: Operation) -> Request {
        Request {
            operation,
            identity: cfn::Identity {
                stack_id: "arn:aws:cloudformation:us-east-1:123456789012:stack/s/1".into(),
                logical_id: "Ami".into(),
                request_id: "r-1".into(),
            },
            response_url: "http://127.0.0.1/r".into(),
            properties: Value::Null,
        }
    }

    fn throttled(operation: &'static str) -> AwsError {
        AwsError {
            operation,
            code: Some("RequestLimitExceeded".into()),
            message: "slow down".into(),
        }
    }

    #[test]
    fn a_failure_becomes_a_reason_only_here() {
        let in_a_phase = Failed {
            failure: Failure::In {
                stage: "launching the builder",
                error: BuildError::Aws(throttled("ec2:RunInstances")),
            },
            cleanup: Some(crate::engine::Cleanup::default()),
        };
        // A Create answers with its own marker id, never an image id.
        let create = failed_outcome(&request(Operation::Create), &in_a_phase);
        assert_eq!(
            create.physical_id,
            cfn::failed_create_physical_id(&request(Operation::Create).identity)
        );
        assert_eq!(
            create.reason.as_deref(),
            Some(in_a_phase.to_string().as_str())
        );
        // An Update keeps the image it has, and says so.
        let update = Operation::Update {
            physical_id: "ami-0123456789abcdef0".into(),
            old_properties: Value::Null,
        };
        let rebuilt = failed_outcome(&request(update.clone()), &in_a_phase);
        assert_eq!(rebuilt.physical_id, "ami-0123456789abcdef0");
        let reason = rebuilt.reason.unwrap();
        assert!(
            reason.starts_with("Update failed while launching the builder: ")
                && reason.ends_with(
                    "Cleanup: nothing had been created; the existing image ami-0123456789abcdef0 is unchanged"
                ),
            "{reason}"
        );
        // An Update's own failure already names it.
        let retag = Failed {
            failure: UpdateError::Retag {
                image: "ami-0123456789abcdef0".into(),
                error: throttled("ec2:CreateTags"),
            }
            .into(),
            cleanup: None,
        };
        let reason = failed_outcome(&request(update), &retag).reason.unwrap();
        assert!(
            reason.starts_with("Update could not retag image ami-0123456789abcdef0: "),
            "{reason}"
        );
        // A Delete keeps its physical id, and lists what remains.
        let remains = Failed {
            failure: DeleteError::SnapshotsRemain {
                image: "ami-0123456789abcdef0".into(),
                remaining: vec![
                    ("snap-1".into(), throttled("ec2:DeleteSnapshot")),
                    ("snap-2".into(), throttled("ec2:DeleteSnapshot")),
                ],
            }
            .into(),
            cleanup: None,
        };
        let delete = Operation::Delete {
            physical_id: "ami-0123456789abcdef0".into(),
        };
        let answer = failed_outcome(&request(delete), &remains);
        assert_eq!(answer.physical_id, "ami-0123456789abcdef0");
        let reason = answer.reason.unwrap();
        assert!(
            reason.starts_with(
                "image ami-0123456789abcdef0 deregistered but snapshots remain: snap-1 ("
            ) && reason.contains("), snap-2 ("),
            "{reason}"
        );
    }
}
