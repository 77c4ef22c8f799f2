//! The Lambda `bootstrap`: logging, AWS clients, and the runtime loop. The work is in the library.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ecs_ami::aws::Aws;
use ecs_ami::cfn::HttpSink;
use ecs_ami::handler::{self, HandleError, Limits};
use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> Result<(), Error> {
    ecs_ami::logging::init_lambda();
    let aws = Aws::from_env().await;
    let sink = HttpSink::new();
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| {
        let (aws, sink) = (aws.clone(), sink.clone());
        async move {
            let now_ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as u64;
            let remaining = Duration::from_millis(event.context.deadline.saturating_sub(now_ms));
            match handler::handle(event.payload, &aws, &sink, Limits::before_deadline(remaining)).await {
                Ok(response) => Ok(json!({"Status": response.status, "PhysicalResourceId": response.physical_resource_id})),
                // Returning an error would make Lambda retry the event and redo the work; the
                // failure to deliver is already logged.
                Err(HandleError::Undeliverable { status, physical_id, .. }) => {
                    Ok(json!({"Status": status, "PhysicalResourceId": physical_id, "Delivered": false}))
                }
                Err(error @ HandleError::NotCloudFormation(_)) => Err(Error::from(error.to_string())),
            }
        }
    }))
    .await
}
