//! `SsmParameters` on the local AWS, through the function's role: the AMI's id is published with
//! data type `aws:ec2:image` (which Parameter Store validates after answering: the local AWS
//! does so a second later, and keeps the old value when it refuses one), follows the AMI through
//! rebuilds and in-place updates, is removed by the Delete of the AMI it holds and only then,
//! and a failed publication puts back what it wrote.
//!
//! https://docs.aws.amazon.com/systems-manager/latest/userguide/parameter-store-ec2-aliases.html

mod common;

use common::audit::Audit;
use common::report;
use common::{LocalAws, event, invoke, one_step_properties, stack_id, update_from};
use serde_json::{Value, json};

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

fn with_parameters(names: &[&str], extra: Value) -> Value {
    let mut properties = one_step_properties(extra);
    properties["SsmParameters"] = names.iter().map(|n| json!({"Name": n})).collect();
    properties
}

const BASE: &str = "/ecs-ami/images/base";
const TEAM: &str = "/ecs-ami/images/team/base";
const EXTRA: &str = "/ecs-ami/images/extra";

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
    let second = with_parameters(
        &[BASE],
        json!({"Steps": [{"Name": "hello", "Commands": ["echo again"]}]}),
    );
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
    let third = with_parameters(
        &[BASE, EXTRA],
        json!({"Steps": [{"Name": "hello", "Commands": ["echo again"]}]}),
    );
    let added = invoke(&aws, update_from(stack, "req-4", &b, &third, &second)).await;
    assert_eq!(added["Status"], "SUCCESS", "{added}");
    assert_eq!(added["PhysicalResourceId"], json!(b));
    assert_eq!(holds(&local, EXTRA).await, Some(b.clone()));
    let calls = local.take_calls().await;
    assert!(
        calls["by_operation"].get("EC2.RunInstances").is_none(),
        "{calls}"
    );

    // A parameter outside the deployment's ImageParameterPrefix: refused by the role; the one
    // written before it is put back (it held nothing: removed); the AMI stays.
    let outside = with_parameters(
        &[BASE, EXTRA, "/ecs-ami/images/new", "/elsewhere/ami"],
        json!({"Steps": [{"Name": "hello", "Commands": ["echo again"]}]}),
    );
    let refused = invoke(&aws, update_from(stack, "req-5", &b, &outside, &third)).await;
    assert_eq!(refused["Status"], "FAILED", "{refused}");
    assert_eq!(refused["PhysicalResourceId"], json!(b));
    let reason = refused["Reason"].as_str().unwrap();
    assert!(
        reason.contains("SsmParameters: /elsewhere/ami could not be written"),
        "{reason}"
    );
    assert!(reason.contains("AccessDenied"), "{reason}");
    assert_eq!(holds(&local, "/ecs-ami/images/new").await, None, "put back");
    assert_eq!(holds(&local, BASE).await, Some(b.clone()));
    let left = audit.leftovers(&[&b]).await;
    report::record(
        "update-parameters-refused",
        "Update",
        "SsmParameters naming one parameter outside the deployment's ImageParameterPrefix, after a new one under it",
        "FAILED naming the parameter and AccessDeniedException; the parameter written before it removed again (it held nothing before), the others still hold the current AMI, which stays",
        Some(left.len()),
    );
    assert!(left.is_empty(), "{left:?}");

    let deleted = invoke(&aws, event("Delete", stack, "req-6", Some(&b), third)).await;
    assert_eq!(deleted["Status"], "SUCCESS", "{deleted}");
    assert_eq!(holds(&local, BASE).await, None);
    assert_eq!(holds(&local, EXTRA).await, None);
    let decisions = local.iam_decisions(false).await;
    assert_eq!(
        decisions["counts"]["Denied"], 1,
        "only the parameter outside: {decisions}"
    );
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
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(holds(&local, BASE).await, Some(theirs.clone()));
    // A parameter of data type text cannot become aws:ec2:image.
    ssm.put_parameter()
        .name(EXTRA)
        .value("not an image")
        .r#type(aws_sdk_ssm::types::ParameterType::String)
        .send()
        .await
        .unwrap();

    let properties = with_parameters(&[BASE, "/ecs-ami/images/fresh", EXTRA], json!({}));
    let answer = invoke(&aws, event("Create", stack, "req-1", None, properties)).await;
    assert_eq!(answer["Status"], "FAILED", "{answer}");
    let reason = answer["Reason"].as_str().unwrap();
    assert!(
        reason.contains("SsmParameters: /ecs-ami/images/extra could not be written"),
        "{reason}"
    );
    assert_eq!(
        holds(&local, BASE).await,
        Some(theirs),
        "put back to the other AMI"
    );
    assert_eq!(
        holds(&local, "/ecs-ami/images/fresh").await,
        None,
        "removed: it held nothing"
    );
    assert_eq!(holds(&local, EXTRA).await, Some("not an image".into()));
    let left = audit.leftovers(&[]).await;
    report::record(
        "create-parameters-refused",
        "Unusable inputs found at build time",
        "SsmParameters whose third parameter exists with data type text, after one holding another resource's AMI and a new one",
        "FAILED naming the parameter; the AMI and its snapshots removed; the first parameter back to the other AMI, the new one removed, the text one untouched",
        Some(left.len()),
    );
    assert!(left.is_empty(), "{left:?}");
}
