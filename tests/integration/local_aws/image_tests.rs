//! `Tests` on the local AWS, through the function's role: a test instance launched from the new
//! AMI (which starts with the file system the build left), its user data run at boot, the test
//! steps run through SSM Run Command; a failing test refuses the AMI (removed, with its
//! snapshots and the test instance); an Update that changes only `Tests` tests the same AMI
//! again and keeps its id.
//!
//! RunInstances with UserData: https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_RunInstances.html
//! GetConsoleOutput: https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_GetConsoleOutput.html
//! the role's actions: https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonec2.html

use crate::common;

use common::audit::{Audit, tags_of};
use common::report;
use common::{
    LocalAws, SYSTEMCTL_STAND_IN, event, invoke, one_step_properties, stack_id, update_from,
};
use serde_json::{Value, json};

const BUILD: &str = "mkdir -p /opt/ecs-ami-tested && echo ready > /opt/ecs-ami-tested/first-run.sh && chmod 0755 /opt/ecs-ami-tested/first-run.sh";

fn properties(tests: Value) -> Value {
    one_step_properties(json!({
        "Steps": [{"Name": "first-run", "Commands": [BUILD]}],
        "Tests": tests,
    }))
}

fn runs(calls: &Value, operation: &str) -> u64 {
    calls["by_operation"][operation].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ami_is_answered_only_once_its_tests_pass_and_a_tests_change_tests_it_again() {
    let local = LocalAws::start().await;
    let aws = local.aws().await;
    let stack = "tested";
    let audit = Audit {
        ec2: local.ec2().await,
        stack_id: stack_id(stack),
    };
    // The user data runs at boot, in the test instance's own file system; the tests see what
    // the build wrote and what the user data wrote.
    let first = properties(json!({
        "UserData": "#!/bin/bash\necho booted > /var/tmp/user-data-ran\necho 'user data says hello'\n",
        "Steps": [
            {"Name": "first-run script", "Commands": ["test -x /opt/ecs-ami-tested/first-run.sh"]},
            {"Name": "user data ran", "Commands": ["grep -q booted /var/tmp/user-data-ran"]},
        ],
    }));
    local.take_calls().await;
    let created = invoke(&aws, event("Create", stack, "req-1", None, first.clone())).await;
    assert_eq!(created["Status"], "SUCCESS", "{created}");
    let calls = local.take_calls().await;
    assert_eq!(
        runs(&calls, "EC2.RunInstances"),
        2,
        "the builder and the test instance: {calls}"
    );
    let ami = created["PhysicalResourceId"].as_str().unwrap().to_owned();
    let tested_at = created["Data"]["TestedAt"]
        .as_str()
        .expect("TestedAt")
        .to_owned();
    let test_instance = created["Data"]["TestInstanceId"]
        .as_str()
        .expect("TestInstanceId")
        .to_owned();
    assert!(
        tested_at.ends_with('Z') && tested_at.len() == 20,
        "{tested_at}"
    );
    let instances = audit.instances().await;
    assert!(
        instances
            .iter()
            .any(|(id, state)| id == &test_instance && state == "terminated"),
        "the test instance is terminated: {instances:?}"
    );
    assert!(audit.live_instances().await.is_empty());
    let image = audit.image(&ami).await.unwrap();
    let tags = tags_of(image.tags());
    assert_eq!(tags.get("ecs-ami:tested-at"), Some(&tested_at));
    assert_eq!(tags.get("ecs-ami:test-instance"), Some(&test_instance));
    // The test instance never leaves its view on this machine.
    assert!(!std::path::Path::new("/var/tmp/user-data-ran").exists());

    // Tests changed alone: the same AMI, tested again on a new test instance.
    let second = properties(json!({
        "Steps": [{"Name": "first-run script", "Commands": ["test \"$(cat /opt/ecs-ami-tested/first-run.sh)\" = ready"]}],
    }));
    local.take_calls().await;
    let retested = invoke(&aws, update_from(stack, "req-2", &ami, &second, &first)).await;
    assert_eq!(retested["Status"], "SUCCESS", "{retested}");
    assert_eq!(retested["PhysicalResourceId"], json!(ami));
    let calls = local.take_calls().await;
    assert_eq!(
        runs(&calls, "EC2.RunInstances"),
        1,
        "a test instance only: {calls}"
    );
    assert_eq!(runs(&calls, "EC2.CreateImage"), 0, "{calls}");
    assert_ne!(retested["Data"]["TestInstanceId"], json!(test_instance));

    // Tests changed alone, and failing: the Update fails, the AMI stays (CloudFormation rolls
    // back to it), the test instance goes.
    let third = properties(json!({
        "Steps": [{"Name": "time zone", "Commands": ["echo 'expected Europe/Paris' >&2", "exit 4"]}],
    }));
    let refused = invoke(&aws, update_from(stack, "req-3", &ami, &third, &second)).await;
    assert_eq!(refused["Status"], "FAILED", "{refused}");
    let reason = refused["Reason"].as_str().unwrap();
    assert!(
        reason.contains(
            "test step \"time zone\" (1 of 1) exited 4; stderr: \"expected Europe/Paris\""
        ),
        "{reason}"
    );
    assert!(audit.image(&ami).await.is_some(), "the AMI stays");
    assert!(
        audit.live_instances().await.is_empty(),
        "the test instance is gone"
    );

    // CloudFormation rolls that Update back: the AMI passed those Tests already (it keeps the
    // digests of the tests it passed), so nothing is launched.
    local.take_calls().await;
    let rolled_back = invoke(&aws, update_from(stack, "req-3r", &ami, &second, &third)).await;
    assert_eq!(rolled_back["Status"], "SUCCESS", "{rolled_back}");
    assert_eq!(rolled_back["PhysicalResourceId"], json!(ami));
    let calls = local.take_calls().await;
    assert_eq!(runs(&calls, "EC2.RunInstances"), 0, "{calls}");

    let deleted = invoke(&aws, event("Delete", stack, "req-4", Some(&ami), second)).await;
    assert_eq!(deleted["Status"], "SUCCESS", "{deleted}");
    let decisions = local.iam_decisions(false).await;
    assert_eq!(decisions["counts"].get("Denied"), None, "{decisions}");
    report::record_clean(
        "tests-pass",
        "Update",
        "Tests: a Create whose test instance boots with user data and runs two test steps (one reading what the build wrote, one what the user data wrote); an Update changing only Tests; another whose test fails; then Delete",
        "SUCCESS only after the tests passed on a test instance launched from the new AMI (TestedAt, TestInstanceId, tags on the AMI), the test instance terminated; the Tests-only Update tests the same AMI again (one RunInstances, no CreateImage) and keeps its id; the failing one answers FAILED naming the test step, its exit code and stderr, and keeps the AMI; its rollback tests nothing again",
        &audit.leftovers(&[]).await,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_test_refuses_the_ami_and_leaves_nothing() {
    let local = LocalAws::start().await;
    let aws = local.aws().await;
    let stack = "test-fails";
    let audit = Audit {
        ec2: local.ec2().await,
        stack_id: stack_id(stack),
    };
    let broken = properties(json!({
        "UserData": "#!/bin/bash\necho 'mounting /data'\necho 'mount: /data: no such device' >&2\n",
        "Steps": [{"Name": "data volume", "Commands": ["findmnt /data-that-is-not-there"]}],
    }));
    let failed = invoke(&aws, event("Create", stack, "req-1", None, broken)).await;
    assert_eq!(failed["Status"], "FAILED", "{failed}");
    let reason = failed["Reason"].as_str().unwrap();
    assert!(
        reason.contains(
            "failed while testing the image: test step \"data volume\" (1 of 1) exited 1"
        ),
        "{reason}"
    );
    assert!(
        reason.contains("the test instance's console (its user data) ends:"),
        "{reason}"
    );
    // The user data printed it after boot: only the latest console output has it (GetConsoleOutput
    // with Latest; the buffered output is what EC2 posted shortly after the instance started:
    // https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_GetConsoleOutput.html).
    assert!(reason.contains("mount: /data: no such device"), "{reason}");
    assert!(reason.contains("deregistered half-made image"), "{reason}");
    // A test instance type on Xen (t2) has no latest output: the buffered one is quoted instead.
    let on_xen = properties(json!({
        "UserData": "#!/bin/bash
echo 'mount: /data: no such device' >&2
",
        "InstanceType": "t2.medium",
        "Steps": [{"Name": "data volume", "Commands": ["findmnt /data-that-is-not-there"]}],
    }));
    let failed = invoke(&aws, event("Create", stack, "req-2", None, on_xen)).await;
    let reason = failed["Reason"].as_str().unwrap();
    assert!(
        reason.contains("the test instance's console (its user data) ends:")
            && reason.contains("booting"),
        "{reason}"
    );
    assert!(!reason.contains("no such device"), "{reason}");
    report::record_clean(
        "tests-fail",
        "Unusable inputs found at build time",
        "Tests: a test step that fails on the test instance, booted with user data that printed an error",
        "FAILED naming the test step and its exit code, quoting the end of the test instance's latest console output (the user data's output; on a Xen instance type, which has none, the buffered output); the new AMI, its snapshots, the builder and the test instance removed",
        &audit.leftovers(&[]).await,
    );
}

/// An invocation killed (SIGKILL) while a test step runs, then the event delivered again: the
/// retry finds the same test instance (its launch's ClientToken) and the step already sent
/// (its command's comment), so there is one test instance and each test step runs once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_killed_while_testing_is_resumed_with_one_test_instance() {
    let local = LocalAws::start().await;
    let stack = "test-crash";
    let audit = Audit {
        ec2: local.ec2().await,
        stack_id: stack_id(stack),
    };
    let tests = properties(json!({"Steps": [
        {"Name": "count", "Commands": ["echo run >> /var/tmp/test-runs", "sleep 3"]},
        {"Name": "once", "Commands": ["test \"$(wc -l < /var/tmp/test-runs)\" -eq 1"]},
    ]}));
    let answer = local
        .killed_then_retried(
            env!("CARGO_BIN_EXE_ecs-ami"),
            &event("Create", stack, "req-1", None, tests),
            |line| line.contains("step started") && line.contains("test=true"),
        )
        .await;
    assert_eq!(answer["Status"], "SUCCESS", "{answer}");
    let ami = answer["PhysicalResourceId"].as_str().unwrap().to_owned();
    // The builder and one test instance, both terminated.
    let instances = audit.instances().await;
    assert_eq!(instances.len(), 2, "{instances:?}");
    assert!(
        instances.iter().all(|(_, state)| state == "terminated"),
        "{instances:?}"
    );
    report::record_clean(
        "tests-crash",
        "Crashes and duplicate deliveries",
        "Tests: `ecs-ami invoke` SIGKILLed while a test step runs on the test instance, then the event delivered again",
        "SUCCESS from the retry: one test instance (the same launch token), the running test step followed rather than sent again (the next test checks it ran once), one AMI",
        &audit.leftovers(&[&ami]).await,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ami_whose_test_instance_joins_the_cluster_passes_and_one_that_does_not_is_refused() {
    let local = LocalAws::start().await;
    let aws = local.aws().await;
    let admin = local.sdk_config().await;
    let ecs = aws_sdk_ecs::Client::new(&admin);
    ecs.create_cluster()
        .cluster_name("ecs-ami-acceptance")
        .send()
        .await
        .unwrap();
    let stack = "joins";
    let audit = Audit {
        ec2: local.ec2().await,
        stack_id: stack_id(stack),
    };
    let build = json!([
        {"Name": "systemctl", "Path": "/usr/local/sbin/systemctl", "Content": SYSTEMCTL_STAND_IN, "Mode": "0755"},
        {"Name": "agent config", "Commands": ["mkdir -p /etc/ecs", "echo 'ECS_LOGLEVEL=info' > /etc/ecs/ecs.config"]},
    ]);
    let with_user_data = |user_data: &str, minutes: u32| {
        one_step_properties(json!({
            "Steps": build.clone(),
            "Tests": {
                "UserData": user_data,
                "EcsCluster": "ecs-ami-acceptance",
                "TimeoutMinutes": minutes,
                "Steps": [{"Name": "agent config", "Commands": ["grep -q '^ECS_CLUSTER=ecs-ami-acceptance$' /etc/ecs/ecs.config"]}],
            },
        }))
    };
    let joining = with_user_data(
        "#!/bin/bash\necho ECS_CLUSTER=ecs-ami-acceptance >> /etc/ecs/ecs.config\nsystemctl enable --now ecs\n",
        10,
    );
    let joined = invoke(&aws, event("Create", stack, "req-1", None, joining)).await;
    assert_eq!(joined["Status"], "SUCCESS", "{joined}");
    let ami = joined["PhysicalResourceId"].as_str().unwrap().to_owned();
    // The test instance is terminated, and so deregistered from the cluster, as ECS does.
    let members = ecs
        .list_container_instances()
        .cluster("ecs-ami-acceptance")
        .send()
        .await
        .unwrap();
    assert!(members.container_instance_arns().is_empty(), "{members:?}");

    // The cluster is configured, but the user data never starts the agent.
    let stack_b = "does-not-join";
    let audit_b = Audit {
        ec2: local.ec2().await,
        stack_id: stack_id(stack_b),
    };
    let silent = with_user_data(
        "#!/bin/bash\necho ECS_CLUSTER=ecs-ami-acceptance >> /etc/ecs/ecs.config\n",
        1,
    );
    let refused = invoke(&aws, event("Create", stack_b, "req-1", None, silent)).await;
    assert_eq!(refused["Status"], "FAILED", "{refused}");
    let reason = refused["Reason"].as_str().unwrap();
    assert!(
        reason.contains("did not join ECS cluster ecs-ami-acceptance within")
            && reason.contains("not registered as a container instance"),
        "{reason}"
    );
    assert!(reason.contains("deregistered half-made image"), "{reason}");
    let decisions = local.iam_decisions(false).await;
    assert_eq!(decisions["counts"].get("Denied"), None, "{decisions}");
    assert!(decisions.to_string().contains("ecs:ListContainerInstances"));
    let mut left = audit.leftovers(&[&ami]).await;
    left.extend(audit_b.leftovers(&[]).await);
    report::record_clean(
        "tests-ecs",
        "Unusable inputs found at build time",
        "Tests.EcsCluster: a test instance whose user data names the cluster and starts the ECS agent; then one whose user data never starts it (Tests.TimeoutMinutes 1)",
        "the first AMI is answered once its test instance is an ACTIVE container instance of the cluster with its agent connected (and deregistered with its termination); the second is refused: FAILED saying it did not join the cluster and what ECS saw, its AMI and snapshots removed",
        &left,
    );
}

/// EC2 takes at most 50 tags per resource and refuses a 51st with TagLimitExceeded, on CreateTags
/// as on the TagSpecifications of a launch or an image
/// (https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/Using_Tags.html#tag-restrictions). With
/// `Tests`, the product keeps 10 of them for itself on each snapshot (9 on the AMI, which carries
/// no image id; its 10th is the copy regions, with `Regions`), so 40 user tags is the most a build
/// can carry: it fills the snapshots to exactly 50 and succeeds, and validation refuses a 41st
/// before anything is launched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_with_every_tag_ec2_leaves_fills_the_ami_to_fifty() {
    let local = LocalAws::start().await;
    let aws = local.aws().await;
    let stack = "fifty-tags";
    let audit = Audit {
        ec2: local.ec2().await,
        stack_id: stack_id(stack),
    };
    let tags = |n: usize| -> Value {
        Value::Object(
            (0..n)
                .map(|i| (format!("team-tag-{i}"), json!("x")))
                .collect(),
        )
    };
    let mut full = properties(
        json!({"Steps": [{"Name": "built", "Commands": ["test -x /opt/ecs-ami-tested/first-run.sh"]}]}),
    );
    full["Tags"] = tags(40);
    let created = invoke(&aws, event("Create", stack, "req-1", None, full.clone())).await;
    assert_eq!(created["Status"], "SUCCESS", "{created}");
    let ami = created["PhysicalResourceId"].as_str().unwrap().to_owned();
    let image = audit.image(&ami).await.expect("the AMI");
    assert_eq!(image.tags().len(), 49, "{:?}", tags_of(image.tags()));
    let snapshots: Vec<String> = image
        .block_device_mappings()
        .iter()
        .filter_map(|m| m.ebs()?.snapshot_id().map(str::to_owned))
        .collect();
    assert!(!snapshots.is_empty());
    for snapshot in &snapshots {
        assert_eq!(audit.snapshot_tags(snapshot).await.len(), 50, "{snapshot}");
    }
    // One more, on a snapshot that holds 50: refused as EC2 refuses it.
    let more = audit
        .ec2
        .create_tags()
        .resources(&snapshots[0])
        .tags(
            aws_sdk_ec2::types::Tag::builder()
                .key("one-more")
                .value("x")
                .build(),
        )
        .send()
        .await;
    use aws_sdk_ec2::error::ProvideErrorMetadata;
    assert_eq!(
        more.expect_err("a 51st tag").code(),
        Some("TagLimitExceeded")
    );
    // A 41st user tag with Tests is refused before anything is launched, naming Tags.
    let mut over = full.clone();
    over["Tags"] = tags(41);
    local.take_calls().await;
    let refused = invoke(&aws, event("Create", "fifty-one-tags", "req-2", None, over)).await;
    assert_eq!(refused["Status"], "FAILED", "{refused}");
    assert!(
        refused["Reason"]
            .as_str()
            .unwrap()
            .contains("Tags: 41 tags given; at most 40 fit"),
        "{refused}"
    );
    let calls = local.take_calls().await;
    assert_eq!(runs(&calls, "EC2.RunInstances"), 0, "{calls}");
    let deleted = invoke(&aws, event("Delete", stack, "req-3", Some(&ami), full)).await;
    assert_eq!(deleted["Status"], "SUCCESS", "{deleted}");
    report::record_clean(
        "tags-fifty",
        "AWS's rules on the local AWS (eventual consistency, names, limits)",
        "EC2's 50 tags per resource: a build with Tests and 40 user tags, a 51st tag on its AMI, and a build with 41",
        "SUCCESS with each snapshot at exactly 50 tags (the AMI 49); a 51st refused with TagLimitExceeded; 41 refused before launch, naming Tags (at most 40 with Tests); then Delete",
        &audit.leftovers(&[]).await,
    );
}
