//! The local command line: runs the Lambda's handler in-process against whatever AWS endpoint the
//! environment names (`AWS_ENDPOINT_URL` for the local AWS), catching the response itself.
//!
//! Exit codes: 0 SUCCESS, 1 FAILED (or the response could not be delivered), 2 unusable input,
//! 3 another invocation is already building this request (it answers, this one does not).

use std::process::ExitCode;
use std::time::Duration;

use ecs_ami::aws::Aws;
use ecs_ami::cfn::{HttpSink, Status};
use ecs_ami::handler::{HandleError, Limits};
use ecs_ami::local::{ResponseCatcher, invoke_until_answered};
use serde_json::Value;

const USAGE: &str = "usage: ecs-ami invoke [--physical-resource-id ID] EVENT.json   (- reads stdin)

Runs a CloudFormation custom resource event through the same handler the Lambda runs, against the
AWS endpoint the environment names (AWS_ENDPOINT_URL, AWS_REGION, credentials), following
hand-overs in-process (ECS_AMI_HANDOVER_EVERY_STATE=1 forces one after every state). Progress goes to
stderr; the response body CloudFormation would receive goes to stdout. --physical-resource-id
replaces the event's PhysicalResourceId (Update and Delete events name the AMI a Create made).";

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["invoke", path] => invoke(path, None).await,
        ["invoke", "--physical-resource-id", id, path] => invoke(path, Some(id)).await,
        ["-h" | "--help" | "help"] => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

async fn invoke(path: &str, physical_id: Option<&str>) -> ExitCode {
    ecs_ami::logging::init_cli();
    let text = if path == "-" {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(path)
    };
    let mut event: Value = match text
        .map_err(|e| e.to_string())
        .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
    {
        Ok(event) => event,
        Err(problem) => {
            eprintln!("ecs-ami: cannot use {path}: {problem}");
            return ExitCode::from(2);
        }
    };
    let mut catcher = match ResponseCatcher::start().await {
        Ok(catcher) => catcher,
        Err(error) => {
            eprintln!("ecs-ami: cannot listen on 127.0.0.1: {error}");
            return ExitCode::from(2);
        }
    };
    if let Some(url) = event.get_mut("ResponseURL") {
        *url = Value::String(catcher.url.clone());
    }
    if let (Some(id), Some(fields)) = (physical_id, event.as_object_mut()) {
        fields.insert("PhysicalResourceId".into(), Value::String(id.to_owned()));
    }
    let aws = Aws::from_env().await;
    let sink = HttpSink::with_retries(3, Duration::from_millis(200));
    // Each hand-over starts a fresh "invocation" in this process, with the same payload Lambda
    // would carry; ECS_AMI_HANDOVER_EVERY_STATE=1 forces one after every change of state.
    match invoke_until_answered(event, &aws, &sink, || Limits::default().with_env()).await {
        Ok(None) => {
            eprintln!("ecs-ami: another invocation is building this request and will answer it");
            ExitCode::from(3)
        }
        Ok(Some((response, _))) => {
            let body = catcher
                .next(Duration::from_secs(5))
                .await
                .unwrap_or_else(|| response.body());
            println!("{}", String::from_utf8_lossy(&body));
            if response.status == Status::Success {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(error @ HandleError::NotCloudFormation(_)) => {
            eprintln!("ecs-ami: {error}");
            ExitCode::from(2)
        }
        Err(error) => {
            eprintln!("ecs-ami: {error}");
            ExitCode::from(1)
        }
    }
}
