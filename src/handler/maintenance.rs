//! What the function keeps in Parameter Store goes on its own: a scheduled sweep removes request
//! records past their retention, and deleting the function's own stack removes every record and
//! lease (its `Custom::EcsAmiStore` resource).
//!
//! Records stay a day after their request so that a late delivery does nothing. Answers do not
//! sweep (that would cost every build a listing of its resource's records): the deployment
//! schedules an invocation with [`SWEEP_EVENT_KEY`] every hour (EventBridge Scheduler,
//! template.yaml `SweepRecords`), which removes every resource's old records.
//!
//! Instances failed builds kept for debugging (`KeepFailedInstanceMinutes`) go on time whatever
//! else happens: every 5 minutes the deployment invokes the function with
//! `{"EcsAmiMaintenance": "end-kept-instances"}` (template.yaml `EndKeptInstances`), which
//! terminates those whose `ecs-ami:keep-until` has passed.

use serde_json::Value;

use super::{HandleError, Handled, ResponseSink};
use crate::aws::Aws;
use crate::cfn::{Operation, Outcome, Request, Response};
use crate::engine::{lease, ledger};

/// The scheduled sweep's event: `{"EcsAmiMaintenance": "sweep"}`.
pub const SWEEP_EVENT_KEY: &str = "EcsAmiMaintenance";
/// The resource type of the deployment's own store resource, whose Delete removes everything.
pub const STORE_RESOURCE_TYPE: &str = "Custom::EcsAmiStore";
const STORE_PHYSICAL_ID: &str = "ecs-ami-store";

/// The scheduled event's value that ends kept instances whose time has come.
pub const END_KEPT_INSTANCES: &str = "end-kept-instances";

pub(super) fn is_sweep(event: &Value) -> bool {
    event.get(SWEEP_EVENT_KEY).and_then(Value::as_str) == Some("sweep")
}

pub(super) fn is_end_kept_instances(event: &Value) -> bool {
    event.get(SWEEP_EVENT_KEY).and_then(Value::as_str) == Some(END_KEPT_INSTANCES)
}

/// Terminates the instances kept for debugging whose time has come.
pub(super) async fn end_kept_instances(aws: &Aws) -> Handled {
    match crate::engine::kept::end_expired(aws, false).await {
        Ok(ended) => {
            for sentence in ended.sentences() {
                tracing::info!("{sentence}");
            }
            Handled::EndedKept {
                terminated: ended.terminated.len(),
                refused: ended.refused.len(),
            }
        }
        Err(error) => {
            tracing::warn!(problem = %error, "instances kept for debugging could not be listed; the next run tries again");
            Handled::EndedKept {
                terminated: 0,
                refused: 0,
            }
        }
    }
}

pub(super) fn is_store_request(event: &Value) -> bool {
    event.get("ResourceType").and_then(Value::as_str) == Some(STORE_RESOURCE_TYPE)
}

/// Removes every resource's records past their retention.
pub(super) async fn sweep(aws: &Aws) -> Handled {
    match ledger::sweep_all(aws).await {
        Ok(removed) => {
            tracing::info!(removed, "old request records removed");
            Handled::Swept { removed }
        }
        Err(error) => {
            tracing::warn!(problem = %error, "old request records could not be removed");
            Handled::Swept { removed: 0 }
        }
    }
}

/// The stack the function was deployed with (template.yaml sets it): only its own store resource
/// may remove everything. Unset outside Lambda (the local command line and tests).
const OWN_STACK_ENV: &str = "ECS_AMI_STACK_ID";

/// Whether the store request comes from the deployment's own stack. Another stack that declares
/// a `Custom::EcsAmiStore` with the exported ServiceToken must not remove every build's records.
fn is_own(request: &Request, own_stack: Option<&str>) -> bool {
    own_stack.is_none_or(|own| own == request.identity.stack_id)
}

/// The store resource: nothing to do on Create and Update; on Delete every record and lease goes.
/// A failure to remove them fails the Delete, so the stack says what it left. Another stack's
/// store resource is refused at Create and removes nothing at Delete.
pub(super) async fn store(
    request: &Request,
    aws: &Aws,
    sink: &impl ResponseSink,
) -> Result<Handled, HandleError> {
    let own_stack = std::env::var(OWN_STACK_ENV).ok().filter(|s| !s.is_empty());
    let own = is_own(request, own_stack.as_deref());
    let outcome = match request.operation {
        Operation::Create | Operation::Update { .. } if !own => Outcome::failed(
            STORE_PHYSICAL_ID,
            format!(
                "{STORE_RESOURCE_TYPE} is the function's own stack's resource ({}); another stack may not declare one",
                own_stack.unwrap_or_default()
            ),
        ),
        Operation::Delete { .. } if !own => Outcome::success(STORE_PHYSICAL_ID, Default::default()),
        Operation::Create | Operation::Update { .. } => {
            Outcome::success(STORE_PHYSICAL_ID, Default::default())
        }
        Operation::Delete { .. } => match remove_everything(aws).await {
            // The schedule that ends kept instances goes with this stack: every instance still
            // kept for debugging goes now.
            Ok((records, leases)) => match crate::engine::kept::end_expired(aws, true).await {
                Ok(ended) if ended.refused.is_empty() => {
                    let mut outcome = Outcome::success(STORE_PHYSICAL_ID, Default::default());
                    outcome.reason = Some(format!(
                        "removed {records} request records and {leases} lease generations from Parameter Store; terminated {} instances kept for debugging",
                        ended.terminated.len()
                    ));
                    outcome
                }
                Ok(ended) => Outcome::failed(
                    STORE_PHYSICAL_ID,
                    format!("{}.", ended.sentences().join(". ")),
                ),
                Err(error) => Outcome::failed(
                    STORE_PHYSICAL_ID,
                    format!("the instances kept for debugging could not be looked for: {error}"),
                ),
            },
            Err(error) => Outcome::failed(
                STORE_PHYSICAL_ID,
                format!(
                    "the function's records and leases (/ecs-ami/requests, /ecs-ami/leases) could not all be removed: {error}"
                ),
            ),
        },
    };
    let response = Response::new(&request.identity, outcome);
    match sink.send(&request.response_url, &response).await {
        Ok(()) => Ok(Handled::Answered(response)),
        Err(error) => Err(HandleError::Undeliverable {
            status: response.status,
            physical_id: response.physical_resource_id,
            error,
        }),
    }
}

async fn remove_everything(aws: &Aws) -> Result<(usize, usize), crate::aws::AwsError> {
    let records = ledger::remove_all(aws).await?;
    let leases = lease::remove_all(aws).await?;
    Ok((records, leases))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_the_deployments_own_stack_may_remove_everything() {
        let event = json!({
            "RequestType": "Delete", "ResourceType": "Custom::EcsAmiStore",
            "ResponseURL": "https://example.invalid/r", "RequestId": "r",
            "StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/other/1",
            "LogicalResourceId": "Store", "PhysicalResourceId": "ecs-ami-store",
            "ResourceProperties": {"ServiceToken": "x"}
        });
        let request = Request::parse(event).unwrap();
        let own = "arn:aws:cloudformation:us-east-1:123456789012:stack/ecs-ami/2";
        assert!(!is_own(&request, Some(own)));
        assert!(is_own(&request, Some(&request.identity.stack_id)));
        assert!(
            is_own(&request, None),
            "outside Lambda, no stack to compare with"
        );
    }

    #[test]
    fn the_sweep_and_the_store_are_told_apart_from_builds() {
        assert!(is_sweep(&json!({"EcsAmiMaintenance": "sweep"})));
        assert!(!is_sweep(&json!({"EcsAmiMaintenance": "other"})));
        assert!(!is_sweep(&json!({"RequestType": "Create"})));
        assert!(is_store_request(
            &json!({"RequestType": "Delete", "ResourceType": "Custom::EcsAmiStore"})
        ));
        assert!(!is_store_request(
            &json!({"RequestType": "Delete", "ResourceType": "Custom::EcsAmi"})
        ));
    }
}
