//! Builds under AWS's request rates: the local AWS enforces EC2's token buckets and Parameter
//! Store's throughput as AWS documents them (emulator/throttling.py;
//! <https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-throttling.html>, and the Parameter
//! Store throughput quota of <https://docs.aws.amazon.com/general/latest/gr/ssm.html>), and
//! throttled calls are answered `RequestLimitExceeded` and `ThrottlingException`. A build retries
//! them (the SDK's retries, then the phase again), so that many builds in one account all finish.
//!
//! Each build runs as its own `ecs-ami` process, as each Lambda invocation has its own sandbox
//! (and its own SDK retry quota).

use crate::common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::audit::Audit;
use common::{LocalAws, event, one_step_properties, report, stack_id};
use serde_json::{Value, json};

const SECTION: &str = "Request rates";

/// Starts one Create per stack at once, each in its own `ecs-ami` process; answers each
/// response body and how long its process ran.
async fn build_at_once(local: &LocalAws, stacks: &[String]) -> Vec<(Value, Duration, String)> {
    let scratch = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut children = Vec::new();
    for (n, stack) in stacks.iter().enumerate() {
        let created = event(
            "Create",
            stack,
            &format!("req-{n}"),
            None,
            one_step_properties(json!({})),
        );
        let path = scratch.path().join(format!("{stack}.json"));
        std::fs::write(&path, created.to_string()).unwrap();
        let log = scratch.path().join(format!("{stack}.log"));
        let child = local
            .ecs_ami_command(env!("CARGO_BIN_EXE_ecs-ami"))
            // The Lambda's own lease, not the short one the crash tests use.
            .env_remove("ECS_AMI_LEASE_SECONDS")
            .arg("invoke")
            .arg(&path)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        children.push((child, log));
    }
    let mut answers = Vec::new();
    for (child, log) in children {
        let (output, ended) = tokio::task::spawn_blocking(move || {
            let output = child.wait_with_output().unwrap();
            (output, started.elapsed())
        })
        .await
        .unwrap();
        let log = std::fs::read_to_string(&log).unwrap_or_default();
        let answer = serde_json::from_slice(&output.stdout).unwrap_or_else(|_| {
            panic!(
                "no answer ({}): {}",
                output.status,
                &log[log.len().saturating_sub(3000)..]
            )
        });
        answers.push((answer, ended, log));
    }
    answers
}

/// What this local AWS holds besides `amis` and their snapshots: instances not terminated,
/// other images of the account, snapshots of the builds of no image of `amis`, volumes. (The
/// local AWS is the test's own, so every instance, image and volume in it is the builds'.)
async fn everything_but(ec2: &aws_sdk_ec2::Client, amis: &[&str]) -> Vec<String> {
    let mut left = Vec::new();
    let instances = ec2.describe_instances().send().await.unwrap();
    for instance in instances.reservations().iter().flat_map(|r| r.instances()) {
        let state = instance.state().and_then(|s| s.name()).map(|n| n.as_str());
        if state != Some("terminated") {
            left.push(format!("{} ({state:?})", instance.instance_id().unwrap()));
        }
    }
    let images = ec2.describe_images().owners("self").send().await.unwrap();
    left.extend(
        images
            .images()
            .iter()
            .filter_map(|i| i.image_id())
            .filter(|id| !amis.contains(id))
            .map(str::to_owned),
    );
    // The builds' snapshots: moto's own images come with snapshots of the account too.
    let ours = aws_sdk_ec2::types::Filter::builder()
        .name("tag-key")
        .values("ecs-ami:stack-id")
        .build();
    let snapshots = ec2
        .describe_snapshots()
        .owner_ids("self")
        .filters(ours)
        .send()
        .await
        .unwrap();
    for snapshot in snapshots.snapshots() {
        let owner = common::audit::tags_of(snapshot.tags())
            .get("ecs-ami:image-id")
            .cloned()
            .unwrap_or_default();
        if !amis.contains(&owner.as_str()) {
            left.push(snapshot.snapshot_id().unwrap().to_owned());
        }
    }
    let volumes = ec2.describe_volumes().send().await.unwrap();
    left.extend(
        volumes
            .volumes()
            .iter()
            .filter_map(|v| v.volume_id())
            .map(str::to_owned),
    );
    left
}

fn throttled_total(calls: &Value) -> u64 {
    calls["throttled"]
        .as_object()
        .map_or(0, |t| t.values().filter_map(Value::as_u64).sum())
}

/// With every bucket at 2 % of AWS's size and rate, one build's calls are throttled; each is
/// retried and the build succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_under_tight_rates_retries_every_throttled_call() {
    let local = LocalAws::start_with(&[("ECS_AMI_EMULATOR_RATE_SCALE", "0.02")]).await;
    local.take_calls().await;
    let stacks = vec!["tight-rates".to_owned()];
    let answers = build_at_once(&local, &stacks).await;
    let (answer, _, log) = &answers[0];
    assert_eq!(answer["Status"], "SUCCESS", "{answer}\n{log}");
    let calls = local.take_calls().await;
    let throttled = throttled_total(&calls);
    println!(
        "tight rates: {} calls, {throttled} throttled: {}",
        calls["total"], calls["throttled"]
    );
    assert!(throttled > 0, "the rates were meant to throttle: {calls}");
    let audit = Audit {
        ec2: local.ec2().await,
        stack_id: stack_id(&stacks[0]),
    };
    let ami = answer["PhysicalResourceId"].as_str().unwrap();
    let left = audit.leftovers(&[ami]).await;
    report::record_clean(
        "rates-01",
        SECTION,
        "One build with every EC2 bucket and Parameter Store's throughput at 2 % of AWS's",
        // The table is compared with each run's rows: no figure that moves from run to run.
        "SUCCESS; its throttled calls (some each run) all retried",
        &left,
    );
}

/// 100 builds started at the same moment in one account and region, at AWS's own rates: every
/// one succeeds and leaves nothing but its image.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_builds_at_once_all_succeed() {
    const BUILDS: usize = 100;
    let local = LocalAws::start_with(&[("ECS_AMI_EMULATOR_PAGE_SIZE", "0")]).await;
    local.take_calls().await;
    let stacks: Vec<String> = (0..BUILDS).map(|n| format!("fleet-{n:03}")).collect();
    let started = Instant::now();
    let answers = build_at_once(&local, &stacks).await;
    let wall = started.elapsed();
    let calls = local.take_calls().await;
    let failed: Vec<String> = answers
        .iter()
        .filter(|(answer, ..)| answer["Status"] != "SUCCESS")
        .map(|(answer, _, log)| format!("{answer}\n{}", &log[log.len().saturating_sub(2000)..]))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {BUILDS} failed:\n{}",
        failed.len(),
        failed.join("\n---\n")
    );
    let amis: Vec<&str> = answers
        .iter()
        .map(|(answer, ..)| answer["PhysicalResourceId"].as_str().unwrap())
        .collect();
    let left = everything_but(&local.ec2().await, &amis).await;
    let total = calls["total"].as_u64().unwrap();
    let throttled = throttled_total(&calls);
    let slowest = answers.iter().map(|(_, took, _)| *took).max().unwrap();
    let retried_phases: usize = answers
        .iter()
        .map(|(.., log)| log.matches("trying the phase again").count())
        .sum();
    println!(
        "{BUILDS} builds at once: all SUCCESS in {:.1} s (slowest answer {:.1} s); {total} calls, {:.1} per build; {throttled} throttled: {}; {retried_phases} phases tried again after the SDK's retries",
        wall.as_secs_f64(),
        slowest.as_secs_f64(),
        total as f64 / BUILDS as f64,
        calls["throttled"]
    );
    println!(
        "measured: {}",
        json!({"hundred_builds": {
            "builds": BUILDS, "wall_s": wall.as_secs_f64(), "calls": total,
            "calls_per_build": total as f64 / BUILDS as f64, "throttled": throttled,
            "throttled_by_operation": calls["throttled"], "phases_retried": retried_phases,
        }})
    );
    report::record_clean(
        "rates-02",
        SECTION,
        "100 one-step builds started at once in one account, at AWS's request rates",
        "all 100 SUCCESS; their throttled calls (about 1,000 a run) all retried",
        &left,
    );
}
