//! One CloudFormation event in, exactly one response out.
//!
//! This is the top-level guard: whatever happens below (invalid properties, an AWS error, a panic,
//! the invocation running out of time) ends in a response with a readable Reason, and anything the
//! request created is cleaned up first.

use serde_json::Value;
use tokio::time::Instant;

use crate::aws::Aws;
use crate::build::{self, Leftovers, Timing};
use crate::cfn::properties::AmiSpec;
use crate::cfn::{
    self, HttpSink, Identity, Operation, Outcome, Request, RequestError, Response, SinkError,
};

/// Time limits of one invocation.
#[derive(Debug, Clone, Default)]
pub struct Limits {
    /// When the work must stop at the latest, leaving enough time to clean up and answer.
    pub stop_work_at: Option<Instant>,
}

impl Limits {
    /// From a Lambda deadline: stop building 90 s before it, which leaves time for cleanup (a
    /// handful of calls, each retried on throttling) and for the response PUT with its retries.
    pub fn before_deadline(remaining: std::time::Duration) -> Limits {
        let margin = std::time::Duration::from_secs(90);
        Limits {
            stop_work_at: Some(Instant::now() + remaining.saturating_sub(margin)),
        }
    }
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

/// Handles one event and sends its response. Returns the response that was delivered.
pub async fn handle(
    event: Value,
    aws: &Aws,
    sink: &HttpSink,
    limits: Limits,
) -> Result<Response, HandleError> {
    let (request, outcome) = match Request::parse(event) {
        Ok(request) => {
            let outcome = guarded(&request, aws, &limits).await;
            (request, outcome)
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
    let response = Response::new(&request.identity, outcome);
    tracing::info!(
        status = ?response.status,
        physical_id = %response.physical_resource_id,
        reason = response.reason.as_deref().unwrap_or(""),
        "answering CloudFormation"
    );
    match sink.send(&request.response_url, &response).await {
        Ok(()) => Ok(response),
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

/// Runs the operation on its own task, so that a panic is caught, and under a hard deadline, so
/// that a hung call cannot outlast the invocation.
async fn guarded(request: &Request, aws: &Aws, limits: &Limits) -> Outcome {
    let identity = request.identity.clone();
    let fallback_id = match &request.operation {
        Operation::Create => cfn::failed_create_physical_id(&identity),
        Operation::Update { physical_id, .. } | Operation::Delete { physical_id } => {
            physical_id.clone()
        }
    };
    let timing = Timing {
        deadline: limits.stop_work_at,
        ..Timing::default()
    };
    let task = tokio::spawn(operate(request.clone(), aws.clone(), timing));
    let abort = task.abort_handle();
    // The engine stops itself at the deadline and cleans up; this backstop only fires when a
    // single AWS call hangs past it.
    let backstop = limits
        .stop_work_at
        .map(|at| at + std::time::Duration::from_secs(30));
    let joined = match backstop {
        Some(at) => match tokio::time::timeout_at(at, task).await {
            Ok(joined) => joined,
            Err(_) => {
                abort.abort();
                return after_crash(
                    request,
                    aws,
                    &identity,
                    fallback_id,
                    "did not finish before the invocation's deadline".into(),
                )
                .await;
            }
        },
        None => task.await,
    };
    match joined {
        Ok(outcome) => outcome,
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
            after_crash(request, aws, &identity, fallback_id, what).await
        }
    }
}

async fn after_crash(
    request: &Request,
    aws: &Aws,
    identity: &Identity,
    physical_id: String,
    what: String,
) -> Outcome {
    tracing::error!(problem = %what, "operation did not complete");
    let report = match request.operation {
        Operation::Delete { .. } => String::new(),
        _ => format!(
            " {}",
            build::clean_up(aws, identity, &Leftovers::default()).await
        ),
    };
    Outcome::failed(physical_id, format!("the operation {what}.{report}"))
}

async fn operate(request: Request, aws: Aws, timing: Timing) -> Outcome {
    let identity = &request.identity;
    match &request.operation {
        Operation::Create => match AmiSpec::parse(&request.properties) {
            Ok(spec) => build::create(&aws, identity, spec, &timing).await,
            Err(errors) => Outcome::failed(
                cfn::failed_create_physical_id(identity),
                format!("{errors}. Nothing was launched."),
            ),
        },
        Operation::Update { physical_id, .. } => match AmiSpec::parse(&request.properties) {
            Ok(spec) => build::update(&aws, identity, physical_id, spec, &timing).await,
            Err(errors) => Outcome::failed(
                physical_id.clone(),
                format!(
                    "{errors}. Nothing was launched; the existing image {physical_id} is unchanged."
                ),
            ),
        },
        Operation::Delete { physical_id } => build::delete(&aws, identity, physical_id).await,
    }
}
