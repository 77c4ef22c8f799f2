//! The request's record (see [`ledger`]): a later delivery of an answered request answers the
//! same, a cancelled one answers nothing, and a Create whose Delete ran first builds nothing.

use std::time::Duration;

use crate::aws::Aws;
use crate::cfn::{self, Operation, Outcome, Request, Response};
use crate::engine;
use crate::engine::ledger::{self, Record};
use crate::spec::AmiSpec;

use super::operate::remove_build;
use super::{Handled, ResponseSink};

/// Whether a request leaves a record (see [`ledger`]) and honours one. Not a request refused for
/// its properties (it touches no AWS at all, and answers any delivery the same), nor the Delete
/// of a Create that failed (there is nothing it could do twice).
pub(super) fn leaves_a_record(request: &Request) -> bool {
    match &request.operation {
        Operation::Delete { physical_id } => !cfn::is_failed_create_physical_id(physical_id),
        Operation::Create | Operation::Update { .. } => AmiSpec::parse(&request.properties).is_ok(),
    }
}

/// How a request found cancelled by its record is handled: the newer request that cancelled it
/// is named.
pub(super) async fn cancelled_now(request: &Request, aws: &Aws) -> Handled {
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
pub(super) async fn already_recorded(
    request: &Request,
    aws: &Aws,
    sink: &impl ResponseSink,
) -> Option<Handled> {
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
                    let regions = crate::spec::region_names(&request.properties);
                    super::success_outcome(
                        engine::answered_image(aws, &request.identity, &physical_id, &regions)
                            .await,
                    )
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
                let report = remove_build(aws, request, Duration::from_secs(120)).await;
                tracing::info!(report = %report, "cancelled request cleaned up");
            }
            Some(Handled::Cancelled { by })
        }
    }
}

/// Lambda delivers asynchronous events in no guaranteed order, so the Delete of a Create that
/// CloudFormation cancelled (one with a physical id CloudFormation made up, neither an AMI nor a
/// failed Create's) may run before the Create itself. Such a Delete notes when CloudFormation
/// issued it; a Create issued before then, arriving afterwards, finds the note once it holds its
/// build's lease (`Build::check_record`), and builds nothing and answers nothing. Both times are
/// CloudFormation's (the signing time of each ResponseURL).
pub(super) async fn note_cancelled_creates(request: &Request, aws: &Aws) {
    let Some(issued_at) = request.issued_at() else {
        return;
    };
    if let Operation::Delete { physical_id } = &request.operation
        && !crate::spec::is_ami_id(physical_id)
        && !cfn::is_failed_create_physical_id(physical_id)
        && let Err(error) = ledger::cancel_creates_before(aws, &request.identity, issued_at).await
    {
        tracing::warn!(problem = %error, "could not note the cancelled Create for a late delivery of it");
    }
}
