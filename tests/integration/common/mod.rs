//! The local AWS as a child process of the test, and helpers to drive the handler against it.

/// The command line's helpers (catching responses, following hand-overs): the tests drive the
/// handler exactly as `ecs-ami invoke` does.
pub use ecs_ami::local;
pub mod offline;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use aws_config::{BehaviorVersion, Region};
use aws_sdk_ec2::config::Credentials;
use ecs_ami::aws::{Aws, retry_config};
use ecs_ami::cfn::{HttpSink, Response};
use ecs_ami::handler::Limits;
use ecs_ami::local::{ResponseCatcher, invoke_until_answered};
use serde_json::{Value, json};

/// A local AWS, the function's view of it, and an audit of `stack`'s resources on it.
pub async fn on_local_aws(stack: &str) -> (LocalAws, Aws, audit::Audit) {
    let local = LocalAws::start().await;
    let aws = local.aws().await;
    let audit = audit::Audit {
        ec2: local.ec2().await,
        stack_id: stack_id(stack),
    };
    (local, aws, audit)
}

/// `python3 tests/templates/cfn_template.py ARGS` (a template read with cfn-lint's loader, as
/// CloudFormation reads it), its JSON output.
pub fn cfn_template(args: &[&str]) -> Value {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("python3")
        .arg(repo.join("tests/templates/cfn_template.py"))
        .args(args)
        .current_dir(&repo)
        .output()
        .expect("python3 runs (scripts/test installs cfn-lint, whose loader it uses)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

pub struct LocalAws {
    child: Child,
    pub endpoint: String,
    pub state_dir: tempfile::TempDir,
}

impl LocalAws {
    /// Starts the local AWS the way users do (`scripts/local-aws PORT`), on a free port, with its
    /// own instance state directory.
    pub async fn start() -> LocalAws {
        LocalAws::start_with(&[]).await
    }

    /// Starts it with extra `ECS_AMI_EMULATOR_*` settings, such as an image delay. It listens on
    /// a port the system picks (port 0) and says which in its state directory: a port picked
    /// here and released could be taken by another test's listener before it binds it.
    pub async fn start_with(settings: &[(&str, &str)]) -> LocalAws {
        let state_dir = tempfile::tempdir().unwrap();
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/local-aws");
        let log = std::fs::File::create(state_dir.path().join("local-aws.log")).unwrap();
        let child = Command::new(script)
            .arg("0")
            .env("ECS_AMI_EMULATOR_STATE", state_dir.path())
            .env("ECS_AMI_EMULATOR_ONLINE_DELAY", "1")
            .envs(settings.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("scripts/local-aws starts (scripts/test installs what it needs)");
        let mut local = LocalAws {
            child,
            endpoint: String::new(),
            state_dir,
        };
        for _ in 0..300 {
            if let Ok(port) = std::fs::read_to_string(local.state_dir.path().join("port")) {
                local.endpoint = format!("http://127.0.0.1:{}", port.trim());
                if reqwest::get(format!("{}/ecs-ami-local/calls", local.endpoint))
                    .await
                    .is_ok()
                {
                    return local;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let log = std::fs::read_to_string(local.state_dir.path().join("local-aws.log"))
            .unwrap_or_default();
        panic!("the local AWS did not start:\n{log}");
    }

    /// The test harness's own view (set-up, audits): the local AWS's administrator, whose calls
    /// are not authorized against the function's role.
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        self.config_for(ADMIN_KEY).await
    }

    /// The function's view: every call is authorized against template.yaml's role.
    pub async fn function_config(&self) -> aws_config::SdkConfig {
        self.config_for("local").await
    }

    async fn config_for(&self, access_key: &str) -> aws_config::SdkConfig {
        aws_config::defaults(BehaviorVersion::latest())
            .endpoint_url(&self.endpoint)
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new(access_key, "local", None, None, "tests"))
            .retry_config(retry_config())
            .load()
            .await
    }

    pub async fn aws(&self) -> Aws {
        let config = self.function_config().await;
        Aws::from_config(&config)
    }

    /// Someone following builds with `ecs-ami watch`, with template.yaml's WatchBuildsPolicy as
    /// their one policy: every call is authorized against it.
    pub async fn watcher_aws(&self) -> Aws {
        Aws::from_config(&self.config_for("local-watcher").await)
    }

    pub async fn ec2(&self) -> aws_sdk_ec2::Client {
        aws_sdk_ec2::Client::new(&self.sdk_config().await)
    }

    /// `ecs-ami` (the binary at `path`: `env!("CARGO_BIN_EXE_ecs-ami")`) as the function, on this
    /// local AWS, with a build lease of 3 s, so that the retry of a killed invocation takes over
    /// at once rather than after 5 minutes.
    pub fn ecs_ami_command(&self, path: &str) -> Command {
        let mut command = Command::new(path);
        command
            .env("AWS_ENDPOINT_URL", &self.endpoint)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "local")
            .env("AWS_SECRET_ACCESS_KEY", "local")
            .env_remove("ECS_AMI_HANDOVER_EVERY_STATE")
            .env("ECS_AMI_LEASE_SECONDS", "3")
            .env("NO_COLOR", "1");
        command
    }

    /// `event` through `ecs-ami invoke` (the binary at `path`), SIGKILLed (as Lambda ends an
    /// invocation that timed out) as soon as a line of its log satisfies `reached`, then
    /// delivered again: the retry's answer. Panics if the first never reached that point.
    pub async fn killed_then_retried(
        &self,
        path: &str,
        event: &Value,
        reached: impl Fn(&str) -> bool,
    ) -> Value {
        let scratch = tempfile::tempdir().unwrap();
        let event_path = scratch.path().join("event.json");
        std::fs::write(&event_path, event.to_string()).unwrap();
        let log_path = scratch.path().join("killed.log");
        let mut first = self
            .ecs_ami_command(path)
            .arg("invoke")
            .arg(&event_path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap();
        let mut got_there = false;
        for _ in 0..1200 {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            if log.lines().any(&reached) {
                got_there = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        first.kill().unwrap();
        first.wait().unwrap();
        assert!(
            got_there,
            "the first invocation never logged the moment to kill it"
        );
        let retry = self
            .ecs_ami_command(path)
            .arg("invoke")
            .arg(&event_path)
            .output()
            .unwrap();
        serde_json::from_slice(&retry.stdout)
            .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&retry.stderr)))
    }

    /// The administrator's EC2 in another region (a copy's): each region is its own EC2.
    pub async fn ec2_in(&self, region: &str) -> aws_sdk_ec2::Client {
        let config = aws_sdk_ec2::config::Builder::from(&self.sdk_config().await)
            .region(Region::new(region.to_owned()))
            .build();
        aws_sdk_ec2::Client::from_conf(config)
    }

    /// The IAM decisions on the function's calls since the last `take`: `counts` by decision
    /// (`Allowed`, `Denied`, `Error`, `NotFound`) and each decision (emulator/authorization.py).
    pub async fn iam_decisions(&self, take: bool) -> Value {
        let client = reqwest::Client::new();
        let url = format!("{}/ecs-ami-local/iam", self.endpoint);
        let request = if take {
            client.delete(url)
        } else {
            client.get(url)
        };
        let answer = request.send().await.unwrap();
        serde_json::from_slice(&answer.bytes().await.unwrap()).unwrap()
    }

    /// Changes the role the function's calls are authorized against: `{"without": [Sid, ...]}`
    /// drops statements of template.yaml's, `{"parameters": {...}}` resolves it with other
    /// template parameters, `{}` restores it. Answers the Sids in force.
    pub async fn set_role(&self, body: Value) -> Vec<String> {
        let answer = reqwest::Client::new()
            .post(format!("{}/ecs-ami-local/iam/policy", self.endpoint))
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert!(answer.status().is_success(), "the local AWS took the role");
        let body: Value = serde_json::from_slice(&answer.bytes().await.unwrap()).unwrap();
        serde_json::from_value(body["statements"].clone()).unwrap()
    }

    /// The next `count` requests the local AWS cannot authorize are ones a test provokes: they
    /// are tallied apart, so that scripts/test still fails on any other.
    pub async fn expect_iam_errors(&self, count: u32) {
        let answer = reqwest::Client::new()
            .post(format!("{}/ecs-ami-local/iam/expect-errors", self.endpoint))
            .body(serde_json::json!({ "count": count }).to_string())
            .send()
            .await
            .unwrap();
        assert!(answer.status().is_success());
    }

    /// API calls received since the last call of this function, by operation.
    pub async fn take_calls(&self) -> Value {
        let client = reqwest::Client::new();
        let answer = client
            .delete(format!("{}/ecs-ami-local/calls", self.endpoint))
            .send()
            .await
            .unwrap();
        serde_json::from_slice(&answer.bytes().await.unwrap()).unwrap()
    }
}

impl Drop for LocalAws {
    fn drop(&mut self) {
        // A failing test shows every IAM decision the local AWS made (emulator/authorization.py).
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.state_dir.path().join("iam-decisions.log"))
                .unwrap_or_default();
            eprintln!("--- IAM decisions of the local AWS (function's calls)\n{log}");
        }
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// A TagSpecification with the product's identity tags, as the build's own launches carry them.
pub fn tagged_as_ours(
    kind: aws_sdk_ec2::types::ResourceType,
) -> aws_sdk_ec2::types::TagSpecification {
    use aws_sdk_ec2::types::{Tag, TagSpecification};
    TagSpecification::builder()
        .resource_type(kind)
        .tags(
            Tag::builder()
                .key("ecs-ami:stack-id")
                .value(stack_id("tagged-by-hand"))
                .build(),
        )
        .tags(
            Tag::builder()
                .key("ecs-ami:logical-id")
                .value("Ami")
                .build(),
        )
        .tags(Tag::builder().key("ecs-ami:request-id").value("r").build())
        .build()
}

/// RunInstances of one t3.micro from `image`; with the builder profile and the product's tags on
/// the instance and its volumes when `ours`, as the build launches its builders.
pub fn launch_request(
    client: &aws_sdk_ec2::Client,
    image: &str,
    ours: bool,
) -> aws_sdk_ec2::operation::run_instances::builders::RunInstancesFluentBuilder {
    use aws_sdk_ec2::types::{IamInstanceProfileSpecification, InstanceType, ResourceType};
    let request = client
        .run_instances()
        .image_id(image)
        .instance_type(InstanceType::T3Micro)
        .min_count(1)
        .max_count(1);
    if !ours {
        return request;
    }
    request
        .iam_instance_profile(
            IamInstanceProfileSpecification::builder()
                .name(PROFILE)
                .build(),
        )
        .tag_specifications(tagged_as_ours(ResourceType::Instance))
        .tag_specifications(tagged_as_ours(ResourceType::Volume))
}

/// Sends `request` and returns the id of the instance it launched.
pub async fn launched_id(
    request: aws_sdk_ec2::operation::run_instances::builders::RunInstancesFluentBuilder,
) -> String {
    request.send().await.unwrap().instances()[0]
        .instance_id()
        .unwrap()
        .to_owned()
}

/// The AMI id an SSM parameter of the local AWS holds (read as its administrator).
pub async fn parameter_value(local: &LocalAws, name: &str) -> String {
    aws_sdk_ssm::Client::new(&local.sdk_config().await)
        .get_parameter()
        .name(name)
        .send()
        .await
        .unwrap()
        .parameter
        .unwrap()
        .value
        .unwrap()
}

/// The access key id the local AWS does not authorize (emulator/authorization.py).
pub const ADMIN_KEY: &str = "local-admin";

pub const PROFILE: &str = "ecs-ami-builder";
pub const ECS_AL2023: &str =
    "/aws/service/ecs/optimized-ami/amazon-linux-2023/recommended/image_id";

/// A CloudFormation event for `stack`, as CloudFormation would send it.
pub fn event(
    kind: &str,
    stack: &str,
    request_id: &str,
    physical_id: Option<&str>,
    properties: Value,
) -> Value {
    let mut event = json!({
        "RequestType": kind,
        "ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:ecs-ami",
        "ResponseURL": "http://127.0.0.1:9/replaced",
        "StackId": stack_id(stack),
        "RequestId": request_id,
        "ResourceType": "Custom::EcsAmi",
        "LogicalResourceId": "Ami",
        "ResourceProperties": properties,
    });
    if let Some(id) = physical_id {
        event["PhysicalResourceId"] = json!(id);
    }
    if kind == "Update" {
        event["OldResourceProperties"] = json!({});
    }
    event
}

/// The calls `calls` counts (`LocalAws::take_calls`) launched no builder.
pub fn assert_launched_nothing(calls: &Value) {
    assert!(
        calls["by_operation"].get("EC2.RunInstances").is_none(),
        "{calls}"
    );
}

/// An Update whose OldResourceProperties are `old` (a rollback's are the failed update's).
pub fn update_from(stack: &str, request: &str, physical: &str, new: &Value, old: &Value) -> Value {
    let mut update = event("Update", stack, request, Some(physical), new.clone());
    update["OldResourceProperties"] = old.clone();
    update
}

/// A one-step build from the public ECS-optimized parameter, with `extra`'s properties set.
pub fn one_step_properties(extra: Value) -> Value {
    let mut properties = json!({
        "ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:ecs-ami",
        "SourceAmiParameter": ECS_AL2023,
        "IamInstanceProfile": PROFILE,
        "Steps": [{"Name": "hello", "Commands": ["echo hello"]}]
    });
    for (key, value) in extra.as_object().unwrap() {
        properties[key] = value.clone();
    }
    properties
}

pub fn stack_id(stack: &str) -> String {
    format!(
        "arn:aws:cloudformation:us-east-1:123456789012:stack/{stack}/00000000-0000-0000-0000-000000000000"
    )
}

/// Sends `event` through the handler, as `ecs-ami invoke` does, and returns the body that reached
/// the ResponseURL (which must be the only one).
pub async fn invoke(aws: &Aws, event: Value) -> Value {
    invoke_with(aws, event, Limits::default).await.0
}

/// Like [`invoke`], with the limits each invocation gets; also returns the number of hand-overs.
pub async fn invoke_with(aws: &Aws, mut event: Value, limits: impl Fn() -> Limits) -> (Value, u32) {
    let mut catcher = ResponseCatcher::start().await.unwrap();
    event["ResponseURL"] = json!(catcher.url);
    let sink = HttpSink::with_retries(3, Duration::from_millis(50));
    let (response, hand_overs): (Response, u32) = invoke_until_answered(event, aws, &sink, limits)
        .await
        .expect("answered")
        .expect("no other invocation holds the build");
    let body = catcher
        .next(Duration::from_secs(5))
        .await
        .expect("a response reached the ResponseURL");
    assert!(catcher.try_next().is_none(), "exactly one response");
    let parsed: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        parsed["PhysicalResourceId"],
        json!(response.physical_resource_id)
    );
    (parsed, hand_overs)
}
/// The deployment's scheduled sweep (template.yaml `SweepRecords`): an invocation that answers
/// nobody.
pub async fn invoke_sweep(aws: &Aws) {
    invoke_maintenance(aws, "sweep").await;
}

/// One of the deployment's scheduled invocations (`{"EcsAmiMaintenance": what}`): it answers
/// nobody.
pub async fn invoke_maintenance(aws: &Aws, what: &str) {
    let sink = HttpSink::with_retries(1, Duration::from_millis(50));
    let answered = invoke_until_answered(
        json!({"EcsAmiMaintenance": what}),
        aws,
        &sink,
        Limits::default,
    )
    .await
    .expect("handled");
    assert!(answered.is_none(), "a scheduled invocation answers nobody");
}

/// A stand-in for systemd's `systemctl` in the image (this machine's overlay has no systemd):
/// `start ecs` (or `enable --now ecs`, `restart ecs`) starts the ECS agent, which the local AWS
/// simulates: it reads the instance's /etc/ecs/ecs.config and registers the instance in the
/// cluster it names (`POST /ecs-ami-local/ecs/agent-started`).
pub const SYSTEMCTL_STAND_IN: &str = r#"#!/bin/bash
echo "systemctl $*" >> /var/log/stand-ins.log
case " $* " in
  *" ecs "*|*" ecs.service "*)
    case "$1" in start|restart|enable)
      if [ "$1" != enable ] || [ "$2" = --now ]; then
        curl -fsS -X POST "$ECS_AMI_LOCAL_AWS/ecs-ami-local/ecs/agent-started" -d "{\"instance\": \"$ECS_AMI_INSTANCE_ID\"}"
      fi;;
    esac;;
esac
exit 0
"#;

pub mod audit;
pub mod ec2_mock;
pub mod mocks;
pub mod report;
