//! The handler against an AWS that refuses every connection: what the fuzz test
//! (`tests/fuzz_requests.rs`) and the cargo-fuzz target (`fuzz/`) check any input against. Both
//! include this file.

use std::sync::Arc;

/// Keeps every response instead of sending it.
#[derive(Default, Clone)]
pub struct CollectingSink(Arc<std::sync::Mutex<Vec<ecs_ami::cfn::Response>>>);

impl CollectingSink {
    pub fn responses(&self) -> Vec<ecs_ami::cfn::Response> {
        self.0.lock().expect("not poisoned").clone()
    }
}

impl ecs_ami::handler::ResponseSink for CollectingSink {
    fn send(
        &self,
        _url: &str,
        response: &ecs_ami::cfn::Response,
    ) -> impl std::future::Future<Output = Result<(), ecs_ami::cfn::SinkError>> + Send {
        self.0.lock().expect("not poisoned").push(response.clone());
        async { Ok(()) }
    }
}

/// An AWS that refuses every connection at once, without retries: for running the handler
/// where no AWS call should happen or succeed.
pub async fn offline_aws() -> ecs_ami::aws::Aws {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url("http://127.0.0.1:1")
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_ec2::config::Credentials::new(
            "offline", "offline", None, None, "offline",
        ))
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .load()
        .await;
    ecs_ami::aws::Aws::from_config(&config)
}

/// Runs the whole handler on `event` against an AWS that refuses every connection at once (no
/// retries), collecting what would be sent to the ResponseURL. For the fuzz targets: whatever
/// the event, this must not panic, and a CloudFormation request must get exactly one response.
pub async fn handle_offline(
    event: serde_json::Value,
) -> (
    Result<ecs_ami::handler::Handled, ecs_ami::handler::HandleError>,
    Vec<ecs_ami::cfn::Response>,
) {
    let aws = offline_aws().await;
    let sink = CollectingSink::default();
    let handled = ecs_ami::handler::handle(
        event,
        &aws,
        &sink,
        &Discarding,
        ecs_ami::handler::Limits::default(),
    )
    .await;
    (handled, sink.responses())
}

/// What the fuzz targets require of any event run through [`handle_offline`]: no panic (the
/// caller's harness sees that), every response at most 4,096 bytes, and an event with a
/// ResponseURL answered exactly once, unless it is a hand-over envelope (refused when
/// unreadable). `None` when that holds, otherwise what broke.
pub async fn offline_answer_problem(event: serde_json::Value) -> Option<String> {
    use ecs_ami::handler::{CONTINUATION_KEY, HandleError, Handled};
    let has_url = event.get("ResponseURL").is_some_and(|u| u.is_string());
    let envelope = event.get(CONTINUATION_KEY).is_some();
    let (handled, responses) = handle_offline(event).await;
    if let Some(size) = responses
        .iter()
        .map(|r| r.body().len())
        .find(|size| *size > ecs_ami::cfn::MAX_BODY_BYTES)
    {
        return Some(format!("a response of {size} bytes"));
    }
    match handled {
        Ok(Handled::Answered(_)) if responses.len() == 1 => None,
        Ok(Handled::Answered(_)) => Some(format!("{} responses", responses.len())),
        Ok(other) => Some(format!("{other:?} with AWS unreachable")),
        Err(HandleError::NotCloudFormation(_)) if !responses.is_empty() => {
            Some("a refused event was answered".into())
        }
        Err(HandleError::NotCloudFormation(_)) if has_url && !envelope => {
            Some("a request with a ResponseURL was not answered".into())
        }
        Err(HandleError::NotCloudFormation(_)) => None,
        Err(error) => Some(error.to_string()),
    }
}

/// A scheduler that accepts a hand-over and drops it: offline, a build fails before it could
/// hand over, and nothing here would run the next invocation anyway.
struct Discarding;

impl ecs_ami::handler::Scheduler for Discarding {
    async fn hand_over(&self, _payload: serde_json::Value) -> Result<(), String> {
        Ok(())
    }
}
