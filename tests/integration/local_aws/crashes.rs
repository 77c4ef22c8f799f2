//! Invocations killed mid-build (SIGKILL of `ecs-ami invoke`, as a Lambda dies of a timeout or
//! out of memory), then the event delivered again, as Lambda's retry does. The retry must carry
//! on with the same builder and end with one image, and nothing may be left behind.

use crate::common;

use common::audit::count_tagged;
use common::{ECS_AL2023, LocalAws, PROFILE, event, report};
use serde_json::{Value, json};
use std::process::{Command, Stdio};
use std::time::Duration;

fn ecs_ami(local: &LocalAws) -> Command {
    local.ecs_ami_command(env!("CARGO_BIN_EXE_ecs-ami"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_invocation_is_resumed_by_the_retry() {
    // Images stay pending for 2 s, so that a kill can land while the build waits for one.
    let local = LocalAws::start_with(&[("ECS_AMI_EMULATOR_IMAGE_DELAY", "2")]).await;
    let ec2 = local.ec2().await;
    let scratch = tempfile::tempdir().unwrap();
    let properties = json!({
        "SourceAmiParameter": ECS_AL2023,
        "IamInstanceProfile": PROFILE,
        "OutputTags": {"runs": "Runs"},
        "Steps": [
            {"Name": "count", "Commands": [
                "echo run >> /var/tmp/step-runs",
                "echo \"Runs=$(wc -l < /var/tmp/step-runs)\" >> \"$ECS_AMI_OUTPUTS\"",
                "sleep 1"
            ], "Outputs": ["Runs"]},
            {"Name": "once", "Commands": ["test \"$(wc -l < /var/tmp/step-runs)\" -eq 1"]}
        ]
    });
    let mut left = 0;
    // From before the launch to the wait for the image: the build takes about seven seconds here.
    for (n, kill_ms) in [100u64, 800, 2600, 4600, 5300, 6000]
        .into_iter()
        .enumerate()
    {
        let request_id = format!("req-crash-{n}");
        let path = scratch.path().join(format!("event-{n}.json"));
        let event = event(
            "Create",
            &format!("crash-{n}"),
            &request_id,
            None,
            properties.clone(),
        );
        std::fs::write(&path, event.to_string()).unwrap();
        let log = std::fs::File::create(scratch.path().join(format!("killed-{n}.log"))).unwrap();
        let mut first = ecs_ami(&local)
            .arg("invoke")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(kill_ms)).await;
        first.kill().unwrap();
        first.wait().unwrap();
        let progress =
            std::fs::read_to_string(scratch.path().join(format!("killed-{n}.log"))).unwrap();
        let last = progress
            .lines()
            .last()
            .unwrap_or("(nothing yet)")
            .to_owned();

        let retry = ecs_ami(&local).arg("invoke").arg(&path).output().unwrap();
        let answer: Value = serde_json::from_slice(&retry.stdout).unwrap_or_else(|_| {
            panic!(
                "kill at {kill_ms} ms: {}",
                String::from_utf8_lossy(&retry.stderr)
            )
        });
        assert_eq!(
            answer["Status"], "SUCCESS",
            "kill at {kill_ms} ms (last: {last}): {answer}"
        );
        // The step's output survives the kill: recovered from SSM (or from the image's tags)
        // when the retry adopts the build.
        assert_eq!(
            answer["Data"]["Runs"], "1",
            "kill at {kill_ms} ms (last: {last}): {answer}"
        );
        let (launched, images, live) = count_tagged(&ec2, &request_id).await;
        left += live + images.len().saturating_sub(1);
        println!(
            "killed at {kill_ms} ms after: {last}\n  -> retry: {} with {launched} builder(s) launched",
            answer["PhysicalResourceId"]
        );
        assert_eq!(
            launched, 1,
            "kill at {kill_ms} ms: one builder for the request"
        );
        assert_eq!(live, 0, "kill at {kill_ms} ms: the builder is terminated");
        assert_eq!(
            images,
            vec![answer["PhysicalResourceId"].as_str().unwrap().to_owned()],
            "kill at {kill_ms} ms: one image"
        );
    }
    report::record(
        "crash-01",
        "Crashes and duplicate deliveries",
        "`ecs-ami invoke` SIGKILLed at 6 moments (before launch, waiting for SSM, during a step, waiting for the image), then the event delivered again",
        "SUCCESS from the retry: one builder, the step run once, one image, its outputs kept",
        Some(left),
    );
}

/// The same Create delivered twice at once: one `ecs-ami invoke` builds and answers (exit 0), the
/// other sees a live holder of the build lease and leaves the build to it (exit 3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_deliveries_make_one_build() {
    let local = LocalAws::start().await;
    let ec2 = local.ec2().await;
    let scratch = tempfile::tempdir().unwrap();
    let properties = json!({
        "SourceAmiParameter": ECS_AL2023,
        "IamInstanceProfile": PROFILE,
        "Steps": [{"Name": "once", "Commands": ["sleep 2", "echo run >> /var/tmp/runs", "test \"$(wc -l < /var/tmp/runs)\" -eq 1"]}]
    });
    let path = scratch.path().join("event.json");
    let event = event("Create", "twice", "req-twice", None, properties);
    std::fs::write(&path, event.to_string()).unwrap();
    let spawn = || {
        ecs_ami(&local)
            .arg("invoke")
            .arg(&path)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (first, second) = (spawn(), spawn());
    let (first, second) = (
        first.wait_with_output().unwrap(),
        second.wait_with_output().unwrap(),
    );
    let mut codes = [first.status.code(), second.status.code()];
    codes.sort();
    assert_eq!(
        codes,
        [Some(0), Some(3)],
        "one answers, one yields:\n{}\n{}",
        String::from_utf8_lossy(&first.stderr),
        String::from_utf8_lossy(&second.stderr)
    );
    let answered = if first.status.success() {
        &first
    } else {
        &second
    };
    let answer: Value = serde_json::from_slice(&answered.stdout).unwrap();
    assert_eq!(answer["Status"], "SUCCESS", "{answer}");
    let (launched, images, live) = count_tagged(&ec2, "req-twice").await;
    assert_eq!((launched, live), (1, 0), "one builder, terminated");
    assert_eq!(
        images,
        vec![answer["PhysicalResourceId"].as_str().unwrap().to_owned()]
    );
    report::record(
        "crash-04",
        "Crashes and duplicate deliveries",
        "The same Create delivered twice at once",
        "one invocation builds and answers, the other yields to its lease: one builder, one image",
        Some(live + images.len().saturating_sub(1)),
    );
}

/// A deploy of a new version in the middle of a build: the hand-over payload reaches code that
/// cannot continue it (another payload version, or a build state it cannot read). The original
/// request it carries is answered FAILED once the builder is cleaned up by its tags, instead of
/// the event being refused and dropped while the stack waits out its timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_over_this_version_cannot_continue_is_answered_and_cleaned_up() {
    use common::local::InProcessScheduler;
    use common::offline::CollectingSink;
    use ecs_ami::handler::{CONTINUATION_KEY, CONTINUATION_VERSION, Handled, Limits, handle};
    let local = LocalAws::start().await;
    let ec2 = local.ec2().await;
    let aws = local.aws().await;
    for (case, mangle) in [
        ("req-newer", json!({"Version": CONTINUATION_VERSION + 1})),
        // Written before the lease moved under its resource.
        ("req-older", json!({"Version": 1})),
        // Written before the phases on the builder and the test instance became one.
        ("req-before-on", json!({"Version": 2})),
        ("req-unreadable", json!({"Build": {"Phase": "Teleporting"}})),
    ] {
        let properties = json!({
            "SourceAmiParameter": ECS_AL2023,
            "IamInstanceProfile": PROFILE,
            "Steps": [{"Name": "a", "Commands": ["true"]}]
        });
        let mut payload = event("Create", "deployed", case, None, properties);
        let scheduler = InProcessScheduler::default();
        let sink = CollectingSink::default();
        let every_state = || Limits {
            hand_over_every_state: true,
            ..Limits::default()
        };
        // Follow hand-overs until the builder has been launched.
        loop {
            match handle(payload.clone(), &aws, &sink, &scheduler, every_state())
                .await
                .unwrap()
            {
                Handled::HandedOver { .. } => {}
                other => panic!("expected a hand-over: {other:?}"),
            }
            payload = serde_json::from_str(&scheduler.take().unwrap()).unwrap();
            if !payload[CONTINUATION_KEY]["Build"]["builder"].is_null() {
                break;
            }
        }
        for (key, value) in mangle.as_object().unwrap() {
            payload[CONTINUATION_KEY][key] = value.clone();
        }
        let handled = handle(payload, &aws, &sink, &scheduler, Limits::default())
            .await
            .unwrap();
        assert!(matches!(handled, Handled::Answered(_)), "{handled:?}");
        let responses = sink.responses();
        assert_eq!(responses.len(), 1, "{responses:?}");
        let reason = responses[0].reason.clone().unwrap_or_default();
        assert_eq!(responses[0].status, ecs_ami::cfn::Status::Failed);
        assert!(
            reason.contains("could not be continued after a hand-over"),
            "{reason}"
        );
        assert!(reason.contains("terminated builder i-"), "{reason}");
        let (launched, images, live) = count_tagged(&ec2, case).await;
        assert_eq!((launched, images.len(), live), (1, 0, 0), "{reason}");
    }
    report::record(
        "crash-05",
        "Crashes and duplicate deliveries",
        "A hand-over payload the running version cannot continue (a newer or an older payload version, an unreadable build state), as after a deploy mid-build",
        "FAILED from the original request it carries, the builder terminated by its tags",
        Some(0),
    );
}

/// `payload`'s build state as version 3 wrote it: what the build made as loose fields.
fn as_version_3(mut payload: Value) -> Value {
    let build = &mut payload[ecs_ami::handler::CONTINUATION_KEY]["Build"];
    let grouped = build.as_object().unwrap().clone();
    let mut old = serde_json::Map::new();
    for key in [
        "phase",
        "image_name",
        "resolved",
        "started_at_ms",
        "phase_started_at_ms",
        "hand_overs",
        "lease",
        "outputs",
    ] {
        old.insert(key.into(), grouped[key].clone());
    }
    old.insert("instance_id".into(), grouped["builder"]["id"].clone());
    old.insert("launched_at_ms".into(), grouped["builder"]["at_ms"].clone());
    old.insert("image_id".into(), grouped["image"]["id"].clone());
    old.insert(
        "snapshot_ids".into(),
        grouped["image"]
            .get("snapshot_ids")
            .cloned()
            .unwrap_or(json!([])),
    );
    old.insert("copies".into(), grouped["copies"]["copies"].clone());
    old.insert("copies_made".into(), grouped["copies"]["made"].clone());
    *build = Value::Object(old);
    payload[ecs_ami::handler::CONTINUATION_KEY]["Version"] = json!(3);
    payload
}

/// A deploy of this version in the middle of a build the previous release handed over: its
/// version-3 payload is continued, not refused, and the build ends with its one builder and one
/// image.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_over_of_the_previous_version_is_continued() {
    use common::local::InProcessScheduler;
    use common::offline::CollectingSink;
    use ecs_ami::handler::{CONTINUATION_KEY, Handled, Limits, handle};
    let local = LocalAws::start().await;
    let ec2 = local.ec2().await;
    let aws = local.aws().await;
    let properties = json!({
        "SourceAmiParameter": ECS_AL2023,
        "IamInstanceProfile": PROFILE,
        "Steps": [{"Name": "a", "Commands": ["true"]}]
    });
    let mut payload = event("Create", "deployed", "req-v3", None, properties);
    let scheduler = InProcessScheduler::default();
    let sink = CollectingSink::default();
    let every_state = || Limits {
        hand_over_every_state: true,
        ..Limits::default()
    };
    let mut converted = false;
    for _ in 0..200 {
        match handle(payload.clone(), &aws, &sink, &scheduler, every_state())
            .await
            .unwrap()
        {
            Handled::HandedOver { .. } => {}
            Handled::Answered(_) => break,
            other => panic!("expected a hand-over or an answer: {other:?}"),
        }
        payload = serde_json::from_str(&scheduler.take().unwrap()).unwrap();
        // Once the builder is launched, the payload is rewritten, once, as the previous release
        // wrote it: the deploy happens while that release's build waits for its builder.
        let build = &payload[CONTINUATION_KEY]["Build"];
        if !build["builder"].is_null() && !converted {
            payload = as_version_3(payload);
            converted = true;
        }
    }
    assert!(converted, "the build never launched its builder");
    let responses = sink.responses();
    assert_eq!(responses.len(), 1, "{responses:?}");
    assert_eq!(
        responses[0].status,
        ecs_ami::cfn::Status::Success,
        "{:?}",
        responses[0].reason
    );
    let (launched, images, live) = count_tagged(&ec2, "req-v3").await;
    assert_eq!((launched, images.len(), live), (1, 1, 0));
}
