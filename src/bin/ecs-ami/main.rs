//! The local command line: runs the Lambda's handler in-process against whatever AWS endpoint the
//! environment names (`AWS_ENDPOINT_URL` for the local AWS), catching the response itself.
//!
//! Exit codes: 0 SUCCESS, 1 FAILED (or the response could not be delivered), 2 unusable input,
//! 3 another invocation is already building this request (it answers, this one does not).

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use ecs_ami::aws::Aws;
use ecs_ami::cfn::{HttpSink, Status};
use ecs_ami::handler::{HandleError, Limits};
use ecs_ami::local::{ResponseCatcher, invoke_until_answered};
use ecs_ami::watch::{Standing, Target, WatchError};
use serde_json::Value;

const USAGE: &str = "usage: ecs-ami invoke [--physical-resource-id ID] EVENT.json   (- reads stdin)
       ecs-ami watch (--stack STACK --logical-id ID | --image AMI) [--every SECONDS] [--once]

Runs a CloudFormation custom resource event through the same handler the Lambda runs, against the
AWS endpoint the environment names (AWS_ENDPOINT_URL, AWS_REGION, credentials), following
hand-overs in-process (ECS_AMI_HANDOVER_EVERY_STATE=1 forces one after every state). Progress goes to
stderr; the response body CloudFormation would receive goes to stdout. --physical-resource-id
replaces the event's PhysicalResourceId (Update and Delete events name the AMI a Create made).

watch follows a deployed build until a request answers after the watch began: the phase, the
steps sent and how the last one ended, the instances, the time spent and left, the answer. It
only reads (Parameter Store, EC2, Run Command). STACK is the stack's name or ARN; --image follows
the resource that built AMI. Every 10 s unless --every; --once looks once (whatever answered
last). Exit codes: 0 answered SUCCESS (or, with --once, still in flight), 1 FAILED or cancelled,
2 unusable input, 4 AWS calls failed 5 looks in a row.";

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
        ["watch", rest @ ..] => match watch_arguments(rest) {
            Some((target, every, once)) => watch(target, every, once).await,
            None => {
                eprintln!("{USAGE}");
                ExitCode::from(2)
            }
        },
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

/// `watch`'s arguments: what to follow, how often, whether once.
fn watch_arguments(args: &[&str]) -> Option<(Target, Duration, bool)> {
    let (mut stack, mut logical_id, mut image) = (None, None, None);
    let (mut every, mut once) = (Duration::from_secs(10), false);
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match *arg {
            "--stack" => stack = Some(args.next()?.to_string()),
            "--logical-id" => logical_id = Some(args.next()?.to_string()),
            "--image" => image = Some(args.next()?.to_string()),
            "--every" => every = Duration::from_secs(args.next()?.parse().ok().filter(|s| *s > 0)?),
            "--once" => once = true,
            _ => return None,
        }
    }
    let target = match (stack, logical_id, image) {
        (Some(stack), Some(logical_id), None) => Target::Resource { stack, logical_id },
        (None, None, Some(image)) => Target::Image(image),
        _ => return None,
    };
    Some((target, every, once))
}

async fn watch(target: Target, every: Duration, once: bool) -> ExitCode {
    let aws = Aws::from_env().await;
    let terminal = std::io::stdout().is_terminal();
    let mut last_shown = String::new();
    let mut said_waiting = false;
    // A build answered before the watch began is shown, and waited past: the request just sent
    // may not hold its lease yet.
    let since = ecs_ami::engine::time::now_ms();
    let followed = ecs_ami::watch::follow(&aws, &target, (every, since), |look| {
        match look {
            Ok(view) => {
                let text = view.to_string();
                // On a terminal, each look replaces the last; otherwise a look is printed when
                // something other than the clock changed.
                let without_clock = view.changes_only();
                if terminal {
                    print!("\x1b[H\x1b[2J{text}");
                } else if without_clock != last_shown {
                    println!("{text}");
                }
                last_shown = without_clock;
            }
            Err(error @ WatchError::NothingFound { .. }) if !said_waiting => {
                eprintln!(
                    "ecs-ami: {error}; looking again every {} s",
                    every.as_secs()
                );
                said_waiting = true;
            }
            Err(WatchError::NothingFound { .. }) => {}
            Err(error) => eprintln!("ecs-ami: this look failed ({error}); looking again"),
        }
        once
    })
    .await;
    match followed {
        Ok(view) => match view.standing {
            Standing::Answered {
                status: Status::Success,
                ..
            } => ExitCode::SUCCESS,
            Standing::Answered { .. } | Standing::Cancelled { .. } => ExitCode::from(1),
            _ => ExitCode::SUCCESS,
        },
        Err(error @ (WatchError::NotOurImage(_) | WatchError::NothingFound { .. })) => {
            eprintln!("ecs-ami: {error}");
            ExitCode::from(2)
        }
        Err(error) => {
            eprintln!("ecs-ami: {error}");
            ExitCode::from(4)
        }
    }
}
