//! The Lambda `bootstrap`: logging, AWS clients, and the runtime loop. The work is in the library.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ecs_ami::aws::{Aws, SelfInvoke, sdk_config_from_env};
use ecs_ami::cfn::HttpSink;
use ecs_ami::handler::{self, HandleError, Handled, Limits};
use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> Result<(), Error> {
    // Each stage of the cold start, logged at debug level (RUST_LOG=bootstrap=debug) for
    // scripts/bench.
    let start = Instant::now();
    ecs_ami::logging::init_lambda();
    let logging = start.elapsed();
    let config = sdk_config_from_env().await;
    let sdk_config = start.elapsed();
    let aws = Aws::from_config(&config);
    let scheduler = SelfInvoke::from_env(&config)
        .ok_or("AWS_LAMBDA_FUNCTION_NAME is not set: not running in Lambda")?;
    let clients = start.elapsed();
    let sink = HttpSink::new();
    let response_client = start.elapsed();
    tracing::debug!(
        logging_us = logging.as_micros() as u64,
        sdk_config_us = (sdk_config - logging).as_micros() as u64,
        clients_us = (clients - sdk_config).as_micros() as u64,
        response_client_us = (response_client - clients).as_micros() as u64,
        "initialised"
    );
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| {
        let (aws, sink, scheduler) = (aws.clone(), sink.clone(), scheduler.clone());
        async move {
            let now_ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as u64;
            let remaining = Duration::from_millis(event.context.deadline.saturating_sub(now_ms));
            let limits = Limits::before_deadline(remaining).with_env();
            match handler::handle(event.payload, &aws, &sink, &scheduler, limits).await {
                Ok(Handled::Answered(response)) => Ok(json!({"Status": response.status, "PhysicalResourceId": response.physical_resource_id})),
                Ok(Handled::HandedOver { hand_overs }) => Ok(json!({"HandedOver": hand_overs})),
                Ok(Handled::Yielded) => Ok(json!({"Yielded": "another invocation is building this request"})),
                Ok(Handled::Repeated(response)) => Ok(json!({"Repeated": response.status, "PhysicalResourceId": response.physical_resource_id})),
                Ok(Handled::Cancelled { by }) => Ok(json!({"CancelledBy": by})),
                Ok(Handled::Swept { removed }) => Ok(json!({"RecordsRemoved": removed})),
                Ok(Handled::EndedKept { terminated, refused }) => Ok(json!({"KeptInstancesTerminated": terminated, "KeptInstancesRefused": refused})),
                // The EcsAmi macro: CloudFormation reads the answer itself.
                Ok(Handled::Expanded(answer)) => Ok(answer),
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
