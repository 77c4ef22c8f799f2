//! `ecs-ami watch` on the local AWS: a build followed from launch to answer by someone whose one
//! policy is template.yaml's WatchBuildsPolicy (every call authorized against it by the IAM
//! engine), by the stack's name while a Create runs, then by the AMI it answered.
//!
//! GetCommandInvocation (StandardOutputContent empty until the command ends):
//! https://docs.aws.amazon.com/systems-manager/latest/APIReference/API_GetCommandInvocation.html
//! ListCommands: https://docs.aws.amazon.com/systems-manager/latest/APIReference/API_ListCommands.html
//! DescribeInstances' filters take `*` wildcards:
//! https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DescribeInstances.html

use std::time::Duration;

use crate::common;

use common::report;
use common::{LocalAws, event, invoke, one_step_properties};
use ecs_ami::cfn::Status;
use ecs_ami::watch::{Standing, Target, follow, look};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_is_followed_from_launch_to_answer_with_read_permissions_only() {
    let local = LocalAws::start().await;
    let aws = local.aws().await;
    let watcher = local.watcher_aws().await;
    let stack = "watched";
    let properties = one_step_properties(json!({
        "Steps": [
            {"Name": "update", "Commands": ["echo 'packages up to date'", "echo 'nothing to do' >&2"]},
            {"Name": "slow", "Commands": ["sleep 3", "echo 'slow step done'"]},
        ],
    }));
    local.iam_decisions(true).await;
    let since = ecs_ami::engine::time::now_ms();
    let build = tokio::spawn({
        let aws = aws.clone();
        async move {
            invoke(
                &aws,
                event("Create", stack, "req-watched", None, properties),
            )
            .await
        }
    });
    // Followed by the stack's name, as a person would: nothing is found until the builder is
    // launched, then a look every 200 ms; each look that differs from the last is kept.
    let target = Target::Resource {
        stack: stack.to_owned(),
        logical_id: "Ami".to_owned(),
    };
    let mut frames: Vec<String> = Vec::new();
    let mut phases: Vec<String> = Vec::new();
    let mut last = String::new();
    let mut nothing_yet = 0;
    let end = tokio::time::timeout(
        Duration::from_secs(120),
        follow(
            &watcher,
            &target,
            (Duration::from_millis(200), since),
            |look| {
                match look {
                    Ok(view) => {
                        let changes = view.changes_only();
                        if changes != last {
                            frames.push(view.to_string());
                            if phases.last() != Some(&view.phase()) {
                                phases.push(view.phase());
                            }
                            last = changes;
                        }
                    }
                    Err(_) => nothing_yet += 1,
                }
                false
            },
        ),
    )
    .await
    .expect("the watch ends with the build")
    .expect("every look is allowed");
    let answer = build.await.unwrap();
    assert_eq!(answer["Status"], "SUCCESS", "{answer}");
    let ami = answer["PhysicalResourceId"].as_str().unwrap();
    println!("phases seen: {phases:#?}");
    println!("{}", frames.join("\n"));

    // The last look is the answer, as CloudFormation got it.
    match &end.standing {
        Standing::Answered {
            status: Status::Success,
            physical_id,
            ..
        } => assert_eq!(physical_id, ami),
        other => panic!("ended with {other:?}"),
    }
    assert_eq!(end.request_id.as_deref(), Some("req-watched"));
    assert!(
        end.stack_id
            .ends_with(":stack/watched/00000000-0000-0000-0000-000000000000"),
        "the stack's ARN, found from its name: {}",
        end.stack_id
    );
    // The running step was seen running, with the time it has run and no output yet (Run
    // Command gives none before the end), and the one before it with its output's end.
    let running = frames
        .iter()
        .find(|f| f.contains("running step 2/2: slow"))
        .unwrap_or_else(|| panic!("the slow step seen running: {phases:?}"));
    assert!(
        running.contains("step 2/2: slow: InProgress for"),
        "{running}"
    );
    assert!(running.contains("step 1/2: update: Success"), "{running}");
    assert!(running.contains("| packages up to date"), "{running}");
    assert!(running.contains("| nothing to do"), "{running}");
    assert!(
        running.contains("left of TimeoutMinutes 55 (until about "),
        "the time left, from the builder's ecs-ami:timeout-minutes tag: {running}"
    );
    assert!(
        running.contains("in flight: lease generation 1"),
        "{running}"
    );
    // The phases came in the build's order (a phase of an instant, such as the first step, or
    // the image the local AWS makes at once, may come and go between two looks).
    let after_steps = phases
        .iter()
        .position(|p| {
            p.contains("stopping the builder")
                || p == "creating the image"
                || p.ends_with("removing the builder")
        })
        .unwrap_or_else(|| panic!("no phase between the steps and the answer: {phases:?}"));
    let order = ["running step 2/2: slow", "answered SUCCESS"];
    let positions: Vec<usize> = order
        .iter()
        .map(|p| {
            phases
                .iter()
                .position(|seen| seen == p)
                .unwrap_or_else(|| panic!("{p} not seen in {phases:?}"))
        })
        .collect();
    assert!(
        positions[0] < after_steps && after_steps < positions[1],
        "{phases:?}"
    );

    // By the AMI, after the fact: the same request, answered.
    let by_image = look(&watcher, &Target::Image(ami.to_owned()))
        .await
        .unwrap();
    assert_eq!(by_image.request_id.as_deref(), Some("req-watched"));
    assert!(by_image.is_over());
    assert!(
        by_image
            .to_string()
            .contains(&format!("answered SUCCESS with {ami}"))
    );

    // Every call the watcher made was a read its policy allows; none was refused.
    let decisions = local.iam_decisions(true).await;
    let watched: Vec<&serde_json::Value> = decisions["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| {
            d["principal"]
                .as_str()
                .unwrap_or_default()
                .ends_with(":user/watcher")
        })
        .collect();
    assert!(!watched.is_empty());
    let mut operations: Vec<&str> = watched
        .iter()
        .map(|d| {
            assert_eq!(d["decision"], "Allowed", "{d}");
            d["operation"].as_str().unwrap()
        })
        .collect();
    operations.sort();
    operations.dedup();
    assert_eq!(
        operations,
        [
            "AmazonSSM.GetCommandInvocation",
            "AmazonSSM.GetParameters",
            "AmazonSSM.GetParametersByPath",
            "AmazonSSM.ListCommands",
            "EC2.DescribeImages",
            "EC2.DescribeInstances",
        ]
    );
    println!(
        "watch: {} looks kept of the build, {} before the builder was launched, {} calls by the watcher",
        frames.len(),
        nothing_yet,
        watched.len()
    );
    report::record(
        "watch-build",
        "Debugging and following builds",
        "A Create followed with ecs-ami watch by the stack's name, as a user with WatchBuildsPolicy only; then by its AMI",
        "each phase seen in order, the running step with its time and the last step's output, the time left, the answer; every call an allowed read",
        None,
    );
}

/// An AMI no build made, and a stack with no build of the resource, are named in the error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_of_no_build_is_refused_by_name() {
    let local = LocalAws::start().await;
    let watcher = local.watcher_aws().await;
    let error = look(&watcher, &Target::Image("ami-0123456789abcdef0".into()))
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("ami-0123456789abcdef0 does not exist here"),
        "{error}"
    );
    let error = look(
        &watcher,
        &Target::Resource {
            stack: "nothing-here".into(),
            logical_id: "Ami".into(),
        },
    )
    .await
    .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("no build of Ami in stack nothing-here found"),
        "{error}"
    );
}
