//! `SsmParameters` on the local AWS, through the function's role: the AMI's id is published with
//! data type `aws:ec2:image` (which Parameter Store validates after answering: the local AWS
//! does so a second later, and keeps the old value when it refuses one), follows the AMI through
//! rebuilds and in-place updates, is removed by the Delete of the AMI it holds and only then,
//! and a failed publication puts back what it wrote, once Parameter Store has taken or refused
//! it. Each check waits past the local AWS's validation delay, so that a write still being
//! validated cannot land afterwards unseen.
//!
//! https://docs.aws.amazon.com/systems-manager/latest/userguide/parameter-store-ec2-aliases.html

use crate::common;

use common::audit::Audit;
use common::report;
use common::{
    LocalAws, assert_launched_nothing, event, invoke, invoke_sweep, one_step_properties, stack_id,
    update_from,
};
use serde_json::{Value, json};

const BASE: &str = "/ecs-ami/images/base";
const TEAM: &str = "/ecs-ami/images/team/base";
const EXTRA: &str = "/ecs-ami/images/extra";
const NEW: &str = "/ecs-ami/images/new";
const NEWER: &str = "/ecs-ami/images/newer";

/// The parameter's value and data type, as the administrator reads them; None when it does not
/// exist.
async fn parameter(local: &LocalAws, name: &str) -> Option<(String, String)> {
    let ssm = aws_sdk_ssm::Client::new(&local.sdk_config().await);
    let out = ssm.get_parameter().name(name).send().await.ok()?;
    let p = out.parameter()?;
    Some((
        p.value()?.to_owned(),
        p.data_type().unwrap_or_default().to_owned(),
    ))
}

async fn holds(local: &LocalAws, name: &str) -> Option<String> {
    parameter(local, name).await.map(|(value, _)| value)
}

/// Past the local AWS's validation delay (ECS_AMI_EMULATOR_IMAGE_PARAMETER_DELAY, 1 s).
async fn after_validation() {
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
}

/// Makes the local AWS refuse, once, the PutParameter of a parameter under `/ecs-ami/images/`
/// that follows `after` of them (the function's lease and records pass, and so do the writes
/// that put parameters back).
async fn fail_put_after(local: &LocalAws, after: u32) {
    let rule = json!({"rules": [{"operation": "AmazonSSM.PutParameter", "code": "ParameterLimitExceeded",
        "status": 400, "body_contains": "/ecs-ami/images/", "after": after, "times": 1}]});
    let answer = reqwest::Client::new()
        .post(format!("{}/ecs-ami-local/faults", local.endpoint))
        .body(rule.to_string())
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_success());
}

async fn no_faults(local: &LocalAws) {
    reqwest::Client::new()
        .delete(format!("{}/ecs-ami-local/faults", local.endpoint))
        .send()
        .await
        .unwrap();
}

fn with_parameters(names: &[&str], extra: Value) -> Value {
    let mut properties = one_step_properties(extra);
    properties["SsmParameters"] = names.iter().map(|n| json!({"Name": n})).collect();
    properties
}

fn again(names: &[&str]) -> Value {
    with_parameters(
        names,
        json!({"Steps": [{"Name": "hello", "Commands": ["echo again"]}]}),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_parameters_follow_the_ami_and_go_with_its_delete() {
    let local = LocalAws::start().await;
    let aws = local.aws().await;
    let stack = "published";
    let audit = Audit {
        ec2: local.ec2().await,
        stack_id: stack_id(stack),
    };
    let first = with_parameters(&[BASE, TEAM], json!({}));
    let created = invoke(&aws, event("Create", stack, "req-1", None, first.clone())).await;
    assert_eq!(created["Status"], "SUCCESS", "{created}");
    let a = created["PhysicalResourceId"].as_str().unwrap().to_owned();
    assert_eq!(
        parameter(&local, BASE).await,
        Some((a.clone(), "aws:ec2:image".into()))
    );
    assert_eq!(holds(&local, TEAM).await, Some(a.clone()));

    // A rebuild: the parameters it names hold the new AMI; the one it no longer names keeps the
    // old AMI until CloudFormation deletes that (with the old properties).
    let second = again(&[BASE]);
    let updated = invoke(&aws, update_from(stack, "req-2", &a, &second, &first)).await;
    assert_eq!(updated["Status"], "SUCCESS", "{updated}");
    let b = updated["PhysicalResourceId"].as_str().unwrap().to_owned();
    assert_ne!(a, b);
    assert_eq!(holds(&local, BASE).await, Some(b.clone()));
    assert_eq!(holds(&local, TEAM).await, Some(a.clone()));
    let cleanup = invoke(
        &aws,
        event("Delete", stack, "req-3", Some(&a), first.clone()),
    )
    .await;
    assert_eq!(cleanup["Status"], "SUCCESS", "{cleanup}");
    assert_eq!(
        holds(&local, TEAM).await,
        None,
        "removed with the AMI it held"
    );
    assert_eq!(
        holds(&local, BASE).await,
        Some(b.clone()),
        "holds another AMI: kept"
    );

    // A parameter added alone: written in place, nothing launched.
    local.take_calls().await;
    let third = again(&[BASE, EXTRA]);
    let added = invoke(&aws, update_from(stack, "req-4", &b, &third, &second)).await;
    assert_eq!(added["Status"], "SUCCESS", "{added}");
    assert_eq!(added["PhysicalResourceId"], json!(b));
    assert_eq!(holds(&local, EXTRA).await, Some(b.clone()));
    let calls = local.take_calls().await;
    assert_launched_nothing(&calls);

    // A parameter outside the deployment's ImageParameterPrefix: refused by the role when the
    // names are checked, before anything is written; the AMI stays.
    let outside = again(&[BASE, EXTRA, NEW, "/elsewhere/ami"]);
    local.iam_decisions(true).await;
    let refused = invoke(&aws, update_from(stack, "req-5", &b, &outside, &third)).await;
    assert_eq!(refused["Status"], "FAILED", "{refused}");
    assert_eq!(refused["PhysicalResourceId"], json!(b));
    let reason = refused["Reason"].as_str().unwrap();
    assert!(
        reason.contains("SsmParameters: /elsewhere/ami could not be written"),
        "{reason}"
    );
    assert!(reason.contains("AccessDenied"), "{reason}");
    let decisions = local.iam_decisions(true).await;
    assert_eq!(
        decisions["counts"]["Denied"], 1,
        "the name outside: {decisions}"
    );
    let wrote_new = decisions["decisions"].as_array().unwrap().iter().any(|d| {
        d["operation"] == "AmazonSSM.PutParameter" && d.to_string().contains("images/new")
    });
    assert!(!wrote_new, "checked before any write");
    after_validation().await;
    assert_eq!(holds(&local, NEW).await, None, "nothing written");

    // A write refused after another new one was written: that one is put back (it held
    // nothing: removed) once its own write has landed.
    fail_put_after(&local, 1).await;
    let two_new = again(&[BASE, EXTRA, NEW, NEWER]);
    let failed = invoke(&aws, update_from(stack, "req-6", &b, &two_new, &third)).await;
    no_faults(&local).await;
    assert_eq!(failed["Status"], "FAILED", "{failed}");
    let reason = failed["Reason"].as_str().unwrap();
    assert!(
        reason.contains("SsmParameters: /ecs-ami/images/newer could not be written"),
        "{reason}"
    );
    after_validation().await;
    assert_eq!(holds(&local, NEW).await, None, "put back");
    assert_eq!(holds(&local, NEWER).await, None);
    assert_eq!(holds(&local, BASE).await, Some(b.clone()));
    assert_eq!(holds(&local, EXTRA).await, Some(b.clone()));
    report::record_clean(
        "update-parameters-refused",
        "Update",
        "SsmParameters naming one parameter outside the deployment's ImageParameterPrefix; then a write refused after another new one was written",
        "FAILED naming the parameter (AccessDeniedException when the names are checked, before any write; then the refused write's error); the new parameter written before it removed once its write had landed; the others still hold the current AMI, which stays",
        &audit.leftovers(&[&b]).await,
    );

    let deleted = invoke(&aws, event("Delete", stack, "req-7", Some(&b), third)).await;
    assert_eq!(deleted["Status"], "SUCCESS", "{deleted}");
    after_validation().await;
    for name in [BASE, TEAM, EXTRA, NEW, NEWER] {
        assert_eq!(holds(&local, name).await, None, "{name} left");
    }
    let decisions = local.iam_decisions(false).await;
    assert_eq!(decisions["counts"].get("Denied"), None, "{decisions}");
    audit.assert_only(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_that_cannot_publish_removes_its_ami_and_puts_back_the_parameters() {
    let local = LocalAws::start().await;
    let aws = local.aws().await;
    let stack = "unpublished";
    let audit = Audit {
        ec2: local.ec2().await,
        stack_id: stack_id(stack),
    };
    // Another resource's AMI already published under one of the names.
    let ssm = aws_sdk_ssm::Client::new(&local.sdk_config().await);
    let theirs = common::parameter_value(&local, common::ECS_AL2023).await;
    ssm.put_parameter()
        .name(BASE)
        .value(&theirs)
        .r#type(aws_sdk_ssm::types::ParameterType::String)
        .data_type("aws:ec2:image")
        .send()
        .await
        .unwrap();
    after_validation().await;
    assert_eq!(holds(&local, BASE).await, Some(theirs.clone()));
    // A parameter of data type text cannot become aws:ec2:image.
    ssm.put_parameter()
        .name(EXTRA)
        .value("not an image")
        .r#type(aws_sdk_ssm::types::ParameterType::String)
        .send()
        .await
        .unwrap();

    // Checked before anything is written: the text parameter is refused at once.
    let properties = with_parameters(&[BASE, NEW, EXTRA], json!({}));
    let answer = invoke(&aws, event("Create", stack, "req-1", None, properties)).await;
    assert_eq!(answer["Status"], "FAILED", "{answer}");
    let reason = answer["Reason"].as_str().unwrap();
    assert!(
        reason.contains("SsmParameters: /ecs-ami/images/extra has data type text"),
        "{reason}"
    );
    after_validation().await;
    assert_eq!(holds(&local, BASE).await, Some(theirs.clone()), "untouched");
    assert_eq!(holds(&local, NEW).await, None, "never written");
    assert_eq!(holds(&local, EXTRA).await, Some("not an image".into()));

    // A third write refused after two were: the first back to the other AMI, the second removed,
    // the AMI removed.
    fail_put_after(&local, 2).await;
    let properties = with_parameters(&[BASE, NEW, NEWER], json!({}));
    let answer = invoke(&aws, event("Create", stack, "req-2", None, properties)).await;
    no_faults(&local).await;
    assert_eq!(answer["Status"], "FAILED", "{answer}");
    let reason = answer["Reason"].as_str().unwrap();
    assert!(
        reason.contains("SsmParameters: /ecs-ami/images/newer could not be written"),
        "{reason}"
    );
    after_validation().await;
    assert_eq!(
        holds(&local, BASE).await,
        Some(theirs),
        "put back to the other AMI"
    );
    assert_eq!(holds(&local, NEW).await, None, "removed: it held nothing");
    assert_eq!(holds(&local, NEWER).await, None);
    report::record_clean(
        "create-parameters-refused",
        "Unusable inputs found at build time",
        "SsmParameters naming an existing text parameter; then a third write refused after one over another resource's AMI and one new",
        "FAILED naming the parameter, the first time before any write; the second time the AMI and its snapshots removed, the first parameter back to the other AMI, the new one removed",
        &audit.leftovers(&[]).await,
    );
}

/// CloudFormation rolls back an Update that rebuilt and published to a parameter the previous
/// properties did not name: the rollback returns the previous AMI, and that parameter, which
/// holds the rebuild's AMI, is put back (it held nothing before: removed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_takes_back_what_the_rebuild_published() {
    let local = LocalAws::start().await;
    let aws = local.aws().await;
    let stack = "rolled";
    let first = with_parameters(&[BASE], json!({}));
    let created = invoke(&aws, event("Create", stack, "req-1", None, first.clone())).await;
    assert_eq!(created["Status"], "SUCCESS", "{created}");
    let a = created["PhysicalResourceId"].as_str().unwrap().to_owned();
    let second = again(&[BASE, NEW]);
    let updated = invoke(&aws, update_from(stack, "req-2", &a, &second, &first)).await;
    assert_eq!(updated["Status"], "SUCCESS", "{updated}");
    let b = updated["PhysicalResourceId"].as_str().unwrap().to_owned();
    assert_eq!(holds(&local, NEW).await, Some(b.clone()));

    let rolled = invoke(&aws, update_from(stack, "req-3", &b, &first, &second)).await;
    assert_eq!(rolled["Status"], "SUCCESS", "{rolled}");
    assert_eq!(rolled["PhysicalResourceId"], json!(a));
    after_validation().await;
    assert_eq!(
        holds(&local, BASE).await,
        Some(a.clone()),
        "back to the previous AMI"
    );
    assert_eq!(
        holds(&local, NEW).await,
        None,
        "put back: it held nothing before"
    );
    report::record(
        "rollback-parameters",
        "CloudFormation's lifecycle: cancellation, rollback, late deliveries",
        "A rollback of an Update that rebuilt and published the new AMI to an added SsmParameters name",
        "the rollback returns the previous AMI; the parameters it names hold it again; the added one, holding the rebuild's AMI, is put back (removed: it held nothing before)",
        None,
    );
}

/// The function's own records go without another request: the hourly sweep (template.yaml
/// `SweepRecords`, EventBridge Scheduler) removes request records past their day, and deleting the
/// function's stack (its `Custom::EcsAmiStore` resource) removes every record and lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_functions_records_go_on_a_schedule_and_with_its_stack() {
    let local = LocalAws::start().await;
    let aws = local.aws().await;
    let ssm = aws_sdk_ssm::Client::new(&local.sdk_config().await);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let record = |at_ms: u64| {
        json!({"Record": "Answered", "Status": "SUCCESS", "PhysicalId": "ami-0123456789abcdef0", "Reason": null, "AtMs": at_ms}).to_string()
    };
    let old = "/ecs-ami/requests/gone-stack/old-request";
    let fresh = "/ecs-ami/requests/live-stack/fresh-request";
    let lease = "/ecs-ami/leases/live-stack/fresh-request/1";
    for (name, value) in [
        (old, record(now_ms - 2 * 24 * 3600 * 1000)),
        (fresh, record(now_ms)),
        (lease, format!("token {} fresh-request", now_ms + 60_000)),
    ] {
        ssm.put_parameter()
            .name(name)
            .value(value)
            .r#type(aws_sdk_ssm::types::ParameterType::String)
            .send()
            .await
            .unwrap();
    }
    invoke_sweep(&aws).await;
    assert_eq!(holds(&local, old).await, None, "a record past its day goes");
    assert!(holds(&local, fresh).await.is_some(), "a fresh record stays");
    assert!(holds(&local, lease).await.is_some(), "a lease stays");

    let store = |kind: &str, request: &str| {
        let mut store = event(
            kind,
            "ecs-ami",
            request,
            (kind != "Create").then_some("ecs-ami-store"),
            json!({"ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:ecs-ami"}),
        );
        store["ResourceType"] = json!("Custom::EcsAmiStore");
        store["LogicalResourceId"] = json!("Store");
        store
    };
    let created = invoke(&aws, store("Create", "store-1")).await;
    assert_eq!(created["Status"], "SUCCESS", "{created}");
    assert_eq!(created["PhysicalResourceId"], "ecs-ami-store");
    let deleted = invoke(&aws, store("Delete", "store-2")).await;
    assert_eq!(deleted["Status"], "SUCCESS", "{deleted}");
    assert_eq!(
        deleted["Reason"],
        "removed 1 request records and 1 lease generations from Parameter Store; terminated 0 instances kept for debugging"
    );
    for root in ["/ecs-ami/requests", "/ecs-ami/leases"] {
        let left = ssm
            .get_parameters_by_path()
            .path(root)
            .recursive(true)
            .send()
            .await
            .unwrap();
        assert!(left.parameters().is_empty(), "{root}: {left:?}");
    }
    report::record(
        "store-sweep",
        "CloudFormation's lifecycle: cancellation, rollback, late deliveries",
        "Request records past their day in a stack that gets no further request; then the function's own stack deleted",
        "the hourly sweep removes the old record and keeps a fresh one and a lease; the store resource's Delete removes every record and lease",
        None,
    );
}
