//! Secrets and exposure. The logs Lambda would write (the product's own subscriber, captured)
//! and every Reason must never hold the ResponseURL, a step's Environment values or a file's
//! Content; and the builder is launched with IMDSv2 required, no key pair, and no security group
//! the user did not ask for.

use crate::common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::local::{ResponseCatcher, invoke_until_answered};
use common::mocks::{World, launched, on, spec};
use common::report;
use common::{ECS_AL2023, LocalAws, PROFILE, event};
use ecs_ami::cfn::{HttpSink, Status};
use ecs_ami::engine::Timing;
use ecs_ami::handler::Limits;
use serde_json::{Value, json};

const SECTION: &str = "Secrets and the builder's exposure";

/// Everything written, shared with the test.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

const ENV_SECRET: &str = "env-secret-7f3a91";
const FILE_SECRET: &str = "file-secret-c04e2b";
const URL_SECRET: &str = "url-secret-5d8e06";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_the_logs_or_the_reason() {
    let logs = Captured::default();
    tracing::subscriber::set_global_default(ecs_ami::logging::lambda_subscriber(logs.clone()))
        .unwrap();
    let local = LocalAws::start().await;
    let aws = local.aws().await;
    let steps = |last: &str| {
        json!([
            {"Name": "credentials", "Path": "/etc/app/credentials", "Content": format!("token={FILE_SECRET}\n"), "Mode": "0600"},
            {"Name": "use", "Commands": ["test -n \"$TOKEN\"", "grep -q token= /etc/app/credentials", "echo configured", last], "Environment": {"TOKEN": ENV_SECRET}}
        ])
    };
    let mut reasons = Vec::new();
    // A build that succeeds, handed over after every state (the payload carries the request),
    // one whose step fails, and one whose properties are invalid.
    for (n, (last, every_state)) in [("true", true), ("exit 3", false), ("true", false)]
        .into_iter()
        .enumerate()
    {
        let mut properties = json!({
            "ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:ecs-ami",
            "SourceAmiParameter": ECS_AL2023,
            "IamInstanceProfile": PROFILE,
            "Steps": steps(last)
        });
        if n == 2 {
            properties["Steps"][1]["Environment"]["bad name"] = json!(ENV_SECRET);
            properties["Steps"][0]["Mode"] = json!("999");
        }
        let mut catcher = ResponseCatcher::start().await.unwrap();
        let mut request = event(
            "Create",
            "secrets",
            &format!("req-secret-{n}"),
            None,
            properties,
        );
        request["ResponseURL"] = json!(format!("{}&token={URL_SECRET}", catcher.url));
        let sink = HttpSink::with_retries(3, std::time::Duration::from_millis(50));
        let limits = move || Limits {
            hand_over_every_state: every_state,
            ..Limits::default()
        };
        let (response, _) = invoke_until_answered(request, &aws, &sink, limits)
            .await
            .unwrap()
            .unwrap();
        let body: Value = serde_json::from_slice(
            &catcher
                .next(std::time::Duration::from_secs(5))
                .await
                .unwrap(),
        )
        .unwrap();
        reasons.push(body["Reason"].as_str().unwrap_or_default().to_owned());
        let expected = if n == 0 {
            Status::Success
        } else {
            Status::Failed
        };
        assert_eq!(response.status, expected, "{body}");
    }
    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    // The capture works: the builds' progress is there, as Lambda would log it.
    assert!(logs.contains("\"step finished\""), "{logs}");
    assert!(
        logs.contains("handing the build over to a fresh invocation"),
        "{logs}"
    );
    assert!(reasons[1].contains("exited 3"), "{}", reasons[1]);
    assert!(
        reasons[2].contains("Steps[1].Environment.bad name"),
        "{}",
        reasons[2]
    );
    assert!(reasons[2].contains("Steps[0].Mode"), "{}", reasons[2]);
    for secret in [ENV_SECRET, FILE_SECRET, URL_SECRET, "X-Amz-Signature"] {
        assert!(!logs.contains(secret), "{secret} in the logs");
        for reason in &reasons {
            assert!(!reason.contains(secret), "{secret} in a Reason: {reason}");
        }
    }
    report::record(
        "secret-01",
        SECTION,
        "A step's Environment value, a file step's Content and the ResponseURL, as marker values, through a build handed over after every state, a failing build and an invalid one",
        "none of them in the logs (Lambda's JSON, captured) or any Reason",
        None,
    );
}

#[tokio::test(start_paused = true)]
async fn the_builder_requires_imdsv2_and_has_no_key_pair_or_extra_group() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut world = World::happy();
    let record = seen.clone();
    world.run_instances = on("RunInstances")
        .when(move |query| {
            record.lock().unwrap().push(query.clone());
            true
        })
        .then_xml(launched);
    let outcome = world
        .create(
            spec(json!([{"Name": "a", "Commands": ["true"]}])),
            Timing::default(),
        )
        .await
        .expect("the build succeeds");
    assert!(outcome.id.starts_with("ami-"), "{outcome:?}");
    let requests = seen.lock().unwrap();
    let launch = requests.last().unwrap();
    // The parameters as EC2's RunInstances reference names them
    // (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_RunInstances.html).
    assert_eq!(launch.get("MetadataOptions.HttpTokens"), Some("required"));
    assert_eq!(launch.get("MetadataOptions.HttpEndpoint"), Some("enabled"));
    assert!(launch.named("KeyName").is_empty(), "no key pair");
    assert!(
        launch.named("SecurityGroupId").is_empty() && launch.named("SecurityGroup").is_empty(),
        "{launch:?}"
    );
    assert!(
        launch.named("NetworkInterface").is_empty(),
        "no public address asked for"
    );
    assert_eq!(
        launch.get("InstanceInitiatedShutdownBehavior"),
        Some("terminate")
    );
    assert!(
        launch.named("UserData").is_empty(),
        "nothing runs at boot but the AMI's own"
    );
    report::record(
        "secret-02",
        SECTION,
        "The RunInstances request of a build",
        "IMDSv2 required, no key pair, no user data, no security group beyond SecurityGroupIds (none given: the VPC's default group), shutdown terminates",
        None,
    );
}
