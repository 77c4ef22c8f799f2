//! `KeepFailedInstanceMinutes` on the local AWS, through the function's role: a failed build's
//! builder (or test instance) stays running, reachable through SSM, tagged with its time; the
//! FAILED Reason names it; everything else is removed; the deployment's schedule terminates it
//! once its time has passed (and not before); CloudFormation's rollback of the failed request
//! leaves it; the resource's next Update or Delete terminates it at once.
//!
//! TerminateInstances: https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_TerminateInstances.html
//! CreateTags: https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_CreateTags.html
//! DescribeInstances (its `tag-key` filter): https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DescribeInstances.html
//! the role's actions: https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonec2.html
//! (CreateTags and TerminateInstances authorize the instance by its ecs-ami tags,
//! template.yaml `OperateOnlyOurResources`)

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common;

use common::audit::{Audit, tags_of};
use common::report;
use common::{
    LocalAws, event, invoke, invoke_maintenance, one_step_properties, stack_id, update_from,
};
use ecs_ami::engine::time::{now_ms, parse_utc_iso_ms};
use serde_json::{Value, json};

const KEEP_UNTIL: &str = "ecs-ami:keep-until";

async fn instance_tags(local: &LocalAws, id: &str) -> (String, BTreeMap<String, String>) {
    let out = local
        .ec2()
        .await
        .describe_instances()
        .instance_ids(id)
        .send()
        .await
        .unwrap();
    let instance = &out.reservations()[0].instances()[0];
    (
        instance
            .state()
            .unwrap()
            .name()
            .unwrap()
            .as_str()
            .to_owned(),
        tags_of(instance.tags()),
    )
}

/// Runs `command` on `instance` as its administrator would through SSM, and returns its output.
async fn run_on(local: &LocalAws, instance: &str, command: &str) -> String {
    let ssm = aws_sdk_ssm::Client::new(&local.sdk_config().await);
    let sent = ssm
        .send_command()
        .instance_ids(instance)
        .document_name("AWS-RunShellScript")
        .parameters("commands", vec![command.to_owned()])
        .send()
        .await
        .expect("the kept instance takes commands");
    let command_id = sent.command().unwrap().command_id().unwrap().to_owned();
    for _ in 0..100 {
        if let Ok(out) = ssm
            .get_command_invocation()
            .command_id(&command_id)
            .instance_id(instance)
            .send()
            .await
            && out.status_details() == Some("Success")
        {
            return out.standard_output_content().unwrap_or_default().to_owned();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{command} did not succeed on {instance}");
}

/// The instance the Reason says is kept, and the time it says.
fn kept_in(reason: &str, what: &str) -> (String, String) {
    let start = format!("the {what} ");
    let rest = &reason[reason.find(&start).unwrap_or_else(|| panic!("{reason}")) + start.len()..];
    let (instance, rest) = rest.split_once(" runs until ").expect(reason);
    let until = rest.split(';').next().unwrap().to_owned();
    (instance.to_owned(), until)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_step_keeps_the_builder_reachable_until_its_time_and_no_longer() {
    let local = LocalAws::start().await;
    let aws = local.aws().await;
    let stack = "kept";
    let audit = Audit {
        ec2: local.ec2().await,
        stack_id: stack_id(stack),
    };
    let properties = one_step_properties(json!({
        "KeepFailedInstanceMinutes": 30,
        "Steps": [
            {"Name": "prepare", "Commands": ["echo 'half-done state' > /var/tmp/debug-me"]},
            {"Name": "install", "Commands": ["echo 'E: no such package' >&2", "exit 7"]},
        ],
    }));
    let answer = invoke(
        &aws,
        event("Create", stack, "req-keep", None, properties.clone()),
    )
    .await;
    assert_eq!(answer["Status"], "FAILED", "{answer}");
    let reason = answer["Reason"].as_str().unwrap();
    assert!(
        reason.contains("step \"install\" (2 of 2) exited 7"),
        "{reason}"
    );
    assert!(
        reason.contains("KEPT for debugging (KeepFailedInstanceMinutes 30)"),
        "{reason}"
    );
    let (builder, until) = kept_in(reason, "builder");
    assert!(
        reason.contains(&format!("aws ssm start-session --target {builder}")),
        "{reason}"
    );
    assert!(!reason.contains("terminated builder"), "{reason}");
    // Kept 30 minutes from the failure, as its tag says.
    let until_ms = parse_utc_iso_ms(&until).expect("a UTC time");
    let from_now = until_ms as i64 - now_ms() as i64;
    assert!(
        (29 * 60_000..=30 * 60_000).contains(&from_now),
        "kept until {until}: {from_now} ms from now"
    );
    let (state, tags) = instance_tags(&local, &builder).await;
    assert_eq!(state, "running");
    assert_eq!(tags.get(KEEP_UNTIL), Some(&until));
    assert_eq!(tags.get("ecs-ami:request-id").unwrap(), "req-keep");
    // Reachable, as the failure left it.
    assert_eq!(
        run_on(&local, &builder, "cat /var/tmp/debug-me")
            .await
            .trim(),
        "half-done state"
    );
    // Nothing else is left: the builder is the one live instance, with its own volumes only,
    // and no image.
    assert_eq!(audit.live_instances().await, vec![builder.clone()]);
    assert!(audit.images().await.is_empty());
    let attached = local
        .ec2()
        .await
        .describe_volumes()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("attachment.instance-id")
                .values(&builder)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let mut its_own: Vec<String> = attached
        .volumes()
        .iter()
        .map(|v| v.volume_id().unwrap().to_owned())
        .collect();
    let mut volumes = audit.volumes().await;
    its_own.sort();
    volumes.sort();
    assert!(!its_own.is_empty());
    assert_eq!(
        volumes, its_own,
        "the stack's volumes are the kept builder's"
    );

    // CloudFormation's rollback deletes the failed resource: the kept builder stays.
    let failed_id = answer["PhysicalResourceId"].as_str().unwrap();
    let deleted = invoke(
        &aws,
        event(
            "Delete",
            stack,
            "req-keep-rollback",
            Some(failed_id),
            json!({}),
        ),
    )
    .await;
    assert_eq!(deleted["Status"], "SUCCESS", "{deleted}");
    assert_eq!(instance_tags(&local, &builder).await.0, "running");

    // The schedule before its time leaves it.
    invoke_maintenance(&aws, "end-kept-instances").await;
    assert_eq!(instance_tags(&local, &builder).await.0, "running");

    // Once its time has passed (the schedule reads nothing but the tag: set a minute back),
    // the schedule terminates it, and nothing of the stack is left.
    let past = ecs_ami::engine::time::utc_iso_at_ms(now_ms() - 60_000);
    local
        .ec2()
        .await
        .create_tags()
        .resources(&builder)
        .tags(
            aws_sdk_ec2::types::Tag::builder()
                .key(KEEP_UNTIL)
                .value(&past)
                .build(),
        )
        .send()
        .await
        .unwrap();
    invoke_maintenance(&aws, "end-kept-instances").await;
    let (state, _) = instance_tags(&local, &builder).await;
    assert!(
        state == "shutting-down" || state == "terminated",
        "{builder} is {state}"
    );
    audit.assert_only(&[]).await;

    // Deleting the function's own stack takes the schedule with it: its Store resource's Delete
    // terminates every instance still kept, whatever its time.
    let again = invoke(
        &aws,
        event("Create", stack, "req-keep-again", None, properties.clone()),
    )
    .await;
    assert_eq!(again["Status"], "FAILED", "{again}");
    let (second, _) = kept_in(again["Reason"].as_str().unwrap(), "builder");
    assert_eq!(instance_tags(&local, &second).await.0, "running");
    let mut store = event(
        "Delete",
        "ecs-ami",
        "store-delete",
        Some("ecs-ami-store"),
        json!({"ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:ecs-ami"}),
    );
    store["ResourceType"] = json!("Custom::EcsAmiStore");
    store["LogicalResourceId"] = json!("Store");
    let deleted = invoke(&aws, store).await;
    assert_eq!(deleted["Status"], "SUCCESS", "{deleted}");
    assert!(
        deleted["Reason"]
            .as_str()
            .unwrap()
            .ends_with("terminated 1 instances kept for debugging"),
        "{deleted}"
    );
    assert_ne!(instance_tags(&local, &second).await.0, "running");
    audit.assert_only(&[]).await;
    report::record_clean(
        "kept-builder",
        "Debugging and following builds",
        "A step fails with KeepFailedInstanceMinutes 30; CloudFormation deletes the failed resource; the 5-minute schedule runs before and after the time; another is kept, then the function's own stack is deleted",
        "FAILED names the builder, its time and the session command; the builder runs, reachable by Run Command, with nothing else left; the rollback's Delete and the early schedule leave it; the schedule past its time terminates it; the Store resource's Delete terminates the other at once",
        &audit.leftovers(&[]).await,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rollback_leaves_a_kept_instance_and_the_next_update_or_delete_ends_it() {
    let local = LocalAws::start().await;
    let aws = local.aws().await;
    let stack = "kept-updates";
    let audit = Audit {
        ec2: local.ec2().await,
        stack_id: stack_id(stack),
    };
    let good = one_step_properties(json!({}));
    let created = invoke(&aws, event("Create", stack, "req-1", None, good.clone())).await;
    assert_eq!(created["Status"], "SUCCESS", "{created}");
    let ami = created["PhysicalResourceId"].as_str().unwrap().to_owned();

    // An Update whose step fails keeps its builder; the AMI is unchanged.
    let failing = one_step_properties(json!({
        "KeepFailedInstanceMinutes": 15,
        "Steps": [{"Name": "broken", "Commands": ["exit 3"]}],
    }));
    let failed = invoke(&aws, update_from(stack, "req-2", &ami, &failing, &good)).await;
    assert_eq!(failed["Status"], "FAILED", "{failed}");
    let (builder, _) = kept_in(failed["Reason"].as_str().unwrap(), "builder");
    assert_eq!(instance_tags(&local, &builder).await.0, "running");

    // CloudFormation rolls the resource back (its old properties are the failed ones): the
    // builder stays, for the user to look at.
    let rolled_back = invoke(
        &aws,
        update_from(stack, "req-2-rollback", &ami, &good, &failing),
    )
    .await;
    assert_eq!(rolled_back["Status"], "SUCCESS", "{rolled_back}");
    assert_eq!(rolled_back["PhysicalResourceId"], json!(ami));
    assert_eq!(instance_tags(&local, &builder).await.0, "running");

    // The next deployment (a test of the same AMI, which fails and keeps its test instance)
    // terminates the kept builder first.
    let tested = one_step_properties(json!({
        "KeepFailedInstanceMinutes": 15,
        "Tests": {"Steps": [{"Name": "health", "Commands": ["echo 'unhealthy' >&2", "exit 1"]}]},
    }));
    let test_failed = invoke(&aws, update_from(stack, "req-3", &ami, &tested, &good)).await;
    assert_eq!(test_failed["Status"], "FAILED", "{test_failed}");
    let reason = test_failed["Reason"].as_str().unwrap();
    assert!(
        reason.contains(&format!(
            "Terminated instance {builder}, kept for debugging after the failed request req-2"
        )),
        "{reason}"
    );
    assert_ne!(instance_tags(&local, &builder).await.0, "running");
    let (test_instance, _) = kept_in(reason, "test instance");
    let (state, tags) = instance_tags(&local, &test_instance).await;
    assert_eq!(state, "running");
    assert_eq!(tags.get("ecs-ami:role").map(String::as_str), Some("test"));
    assert!(
        run_on(&local, &test_instance, "echo reachable")
            .await
            .contains("reachable")
    );
    // The AMI the resource holds is untouched by the failed test.
    assert_eq!(audit.images().await, vec![ami.clone()]);

    let rolled_back = invoke(
        &aws,
        update_from(stack, "req-3-rollback", &ami, &good, &tested),
    )
    .await;
    assert_eq!(rolled_back["Status"], "SUCCESS", "{rolled_back}");
    assert_eq!(instance_tags(&local, &test_instance).await.0, "running");

    // The next deployment changes the tests again (properties that build the same image, so only
    // the properties as sent tell it from the rollback): it ends the kept test instance, and
    // keeps its own failed one.
    let tested_again = one_step_properties(json!({
        "KeepFailedInstanceMinutes": 15,
        "Tests": {"Steps": [{"Name": "health", "Commands": ["exit 2"]}]},
    }));
    let failed_again = invoke(
        &aws,
        update_from(stack, "req-4", &ami, &tested_again, &good),
    )
    .await;
    assert_eq!(failed_again["Status"], "FAILED", "{failed_again}");
    let reason = failed_again["Reason"].as_str().unwrap();
    assert!(
        reason.contains(&format!(
            "Terminated instance {test_instance}, kept for debugging after the failed request req-3"
        )),
        "{reason}"
    );
    assert_ne!(instance_tags(&local, &test_instance).await.0, "running");
    let (second_test_instance, _) = kept_in(reason, "test instance");
    assert_eq!(
        instance_tags(&local, &second_test_instance).await.0,
        "running"
    );
    let rolled_back = invoke(
        &aws,
        update_from(stack, "req-4-rollback", &ami, &good, &tested_again),
    )
    .await;
    assert_eq!(rolled_back["Status"], "SUCCESS", "{rolled_back}");

    // The stack's deletion ends the kept test instance at once, and removes the AMI.
    let deleted = invoke(&aws, event("Delete", stack, "req-5", Some(&ami), good)).await;
    assert_eq!(deleted["Status"], "SUCCESS", "{deleted}");
    assert_ne!(
        instance_tags(&local, &second_test_instance).await.0,
        "running"
    );
    audit.assert_only(&[]).await;
    report::record_clean(
        "kept-until-next-request",
        "Debugging and following builds",
        "KeepFailedInstanceMinutes: an Update's step fails and is rolled back; two Updates' tests fail, each rolled back; the stack is deleted",
        "each rollback leaves the kept instance; each next Update terminates the instance kept before and says so; the Delete terminates the last kept test instance; nothing is left",
        &audit.leftovers(&[]).await,
    );
}

/// What the Reason of a kept instance is, for [`kept_in`]'s sake: checked against a Reason the
/// engine writes, so that the parsing above follows the product.
#[test]
fn the_reason_is_parsed_as_the_engine_writes_it() {
    let keeping = ecs_ami::engine::kept::Keeping::Kept(ecs_ami::engine::kept::Kept {
        instance: "i-0abc".into(),
        what: "test instance",
        until: "2026-12-07T16:00:00Z".into(),
        minutes: 15,
    });
    let reason: Value = json!(format!("Step failed. Cleanup: nothing. {keeping}"));
    assert_eq!(
        kept_in(reason.as_str().unwrap(), "test instance"),
        ("i-0abc".to_owned(), "2026-12-07T16:00:00Z".to_owned())
    );
}
