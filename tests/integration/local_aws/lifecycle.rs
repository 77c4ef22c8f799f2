//! Whole lifecycles on the local AWS (moto server plus the project's SSM extension), driven
//! through the same handler the Lambda and `ecs-ami invoke` run. After each operation the tests
//! look at AWS itself: images, snapshots, builder instances, volumes, tags.

use crate::common;

use common::audit::{Audit, tags_of};
use common::{
    ECS_AL2023, LocalAws, PROFILE, assert_launched_nothing, event, invoke, invoke_with,
    launch_request, launched_id, stack_id, update_from,
};
use ecs_ami::handler::Limits;
use serde_json::{Value, json};

fn properties(extra: Value) -> Value {
    let mut base = json!({
        "ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:ecs-ami",
        "SourceAmiParameter": ECS_AL2023,
        "IamInstanceProfile": PROFILE,
        "AmiDescription": "first",
        "Tags": {"team": "platform", "stage": "test"},
        "Steps": [
            {"Name": "config", "Path": "/etc/ecs/ecs.config", "Content": "ECS_CLUSTER='main'\nLINE=\"$HOME\"\n", "Mode": "0600"},
            {"Name": "check", "Commands": [
                "test \"$(cat /etc/ecs/ecs.config | wc -l)\" -eq 2",
                "echo checked $GREETING",
                "echo \"ConfigLines=$(wc -l < /etc/ecs/ecs.config)\" >> \"$ECS_AMI_OUTPUTS\""
            ], "Environment": {"GREETING": "hello"}, "Outputs": ["ConfigLines"]}
        ],
        "OutputTags": {"config-lines": "ConfigLines", "source-ami": "SourceImageId"}
    });
    // Other steps have other outputs: the tag of this one's output goes with it.
    if extra.get("Steps").is_some() {
        base.as_object_mut().unwrap().remove("OutputTags");
    }
    for (key, value) in extra.as_object().unwrap() {
        base[key] = value.clone();
    }
    base
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_retag_rebuild_rollback_and_delete() {
    let local = LocalAws::start().await;
    let aws = local.aws().await;
    let audit = Audit {
        ec2: local.ec2().await,
        stack_id: stack_id("lifecycle"),
    };

    // Create.
    let created = invoke(
        &aws,
        event(
            "Create",
            "lifecycle",
            "req-create",
            None,
            properties(json!({})),
        ),
    )
    .await;
    assert_eq!(created["Status"], "SUCCESS", "{created}");
    let first = created["PhysicalResourceId"].as_str().unwrap().to_owned();
    assert!(first.starts_with("ami-"));
    assert_eq!(created["Data"]["ImageId"], json!(first));
    let source = local_source_image(&local).await;
    assert_eq!(created["Data"]["SourceImageId"], json!(source));
    let image = audit.image(&first).await.expect("the image exists");
    assert_eq!(image.state().unwrap().as_str(), "available");
    assert_eq!(created["Data"]["ImageName"], json!(image.name().unwrap()));
    let tags = tags_of(image.tags());
    assert_eq!(tags["team"], "platform");
    // A step's output, read on the builder: an attribute, a tag, and kept on the image.
    assert_eq!(created["Data"]["ConfigLines"], "2", "{created}");
    assert_eq!(tags["config-lines"], "2");
    assert_eq!(tags["ecs-ami:output:ConfigLines"], "2");
    assert_eq!(tags["source-ami"], source);
    assert_eq!(tags["ecs-ami:logical-id"], "Ami");
    assert_eq!(tags["ecs-ami:request-id"], "req-create");
    let snapshots: Vec<String> = created["Data"]["SnapshotIds"]
        .as_str()
        .unwrap()
        .split(',')
        .map(str::to_owned)
        .collect();
    assert!(!snapshots.is_empty());
    for snapshot in &snapshots {
        let tags = audit.snapshot_tags(snapshot).await;
        assert_eq!(tags["team"], "platform");
        assert_eq!(tags["config-lines"], "2");
        assert_eq!(tags["ecs-ami:image-id"], first);
    }
    let builders = audit.instances().await;
    assert_eq!(builders.len(), 1, "one builder launched: {builders:?}");
    assert_eq!(builders[0].1, "terminated");
    // The file step wrote the builder's own /etc, byte for byte, and never the host's.
    let written = local
        .state_dir
        .path()
        .join("instances")
        .join(&builders[0].0)
        .join("upper/etc/ecs/ecs.config");
    assert_eq!(
        std::fs::read_to_string(&written).unwrap(),
        "ECS_CLUSTER='main'\nLINE=\"$HOME\"\n"
    );
    assert!(
        !std::path::Path::new("/etc/ecs/ecs.config").exists()
            || std::fs::read_to_string("/etc/ecs/ecs.config").unwrap()
                != "ECS_CLUSTER='main'\nLINE=\"$HOME\"\n"
    );
    audit.assert_only(&[&first]).await;

    // Update of tags and description only: same image, retagged in place, nothing launched.
    let retagged_properties = properties(
        json!({"AmiDescription": "second", "Tags": {"team": "platform", "release": "2026.11"}}),
    );
    let retagged = invoke(
        &aws,
        event(
            "Update",
            "lifecycle",
            "req-retag",
            Some(&first),
            retagged_properties.clone(),
        ),
    )
    .await;
    assert_eq!(retagged["Status"], "SUCCESS", "{retagged}");
    assert_eq!(retagged["PhysicalResourceId"], json!(first));
    assert_eq!(
        retagged["Data"]["ConfigLines"], "2",
        "an Update in place answers with the outputs the image was built with: {retagged}"
    );
    let image = audit.image(&first).await.unwrap();
    let tags = tags_of(image.tags());
    assert_eq!(tags.get("config-lines").map(String::as_str), Some("2"));
    assert_eq!(tags.get("source-ami"), Some(&source), "kept by the retag");
    assert_eq!(tags.get("release").map(String::as_str), Some("2026.11"));
    assert!(
        !tags.contains_key("stage"),
        "a removed tag is removed: {tags:?}"
    );
    assert_eq!(image.description(), Some("second"));
    assert_eq!(
        audit
            .snapshot_tags(&snapshots[0])
            .await
            .get("release")
            .map(String::as_str),
        Some("2026.11")
    );
    assert_eq!(audit.instances().await.len(), 1, "a retag launches nothing");

    // Update of a step: a new image; the old one stays until CloudFormation deletes it.
    let mut rebuilt_properties = retagged_properties.clone();
    rebuilt_properties["Steps"][1]["Commands"][1] = json!("echo changed");
    let rebuilt = invoke(
        &aws,
        event(
            "Update",
            "lifecycle",
            "req-rebuild",
            Some(&first),
            rebuilt_properties,
        ),
    )
    .await;
    assert_eq!(rebuilt["Status"], "SUCCESS", "{rebuilt}");
    let second = rebuilt["PhysicalResourceId"].as_str().unwrap().to_owned();
    assert_ne!(second, first);
    assert!(
        audit.image(&first).await.is_some(),
        "the old image waits for its Delete"
    );
    audit.assert_only(&[&first, &second]).await;
    assert_eq!(audit.instances().await.len(), 2);

    // Rollback: an Update back to the first properties reuses the first image, no rebuild.
    let rolled_back = invoke(
        &aws,
        event(
            "Update",
            "lifecycle",
            "req-rollback",
            Some(&second),
            retagged_properties,
        ),
    )
    .await;
    assert_eq!(rolled_back["Status"], "SUCCESS", "{rolled_back}");
    assert_eq!(rolled_back["PhysicalResourceId"], json!(first));
    assert_eq!(rolled_back["Data"]["ConfigLines"], "2", "{rolled_back}");
    assert_eq!(
        audit.instances().await.len(),
        2,
        "a rollback launches nothing"
    );

    // Delete of both: images deregistered, snapshots deleted.
    let deleted = invoke(
        &aws,
        event(
            "Delete",
            "lifecycle",
            "req-delete-2",
            Some(&second),
            json!({}),
        ),
    )
    .await;
    assert_eq!(deleted["Status"], "SUCCESS", "{deleted}");
    assert!(audit.image(&second).await.is_none());
    audit.assert_only(&[&first]).await;
    let deleted = invoke(
        &aws,
        event(
            "Delete",
            "lifecycle",
            "req-delete-1",
            Some(&first),
            json!({}),
        ),
    )
    .await;
    assert_eq!(deleted["Status"], "SUCCESS", "{deleted}");
    assert!(audit.image(&first).await.is_none());
    audit.assert_only(&[]).await;
    for snapshot in &snapshots {
        let gone = audit
            .ec2
            .describe_snapshots()
            .snapshot_ids(snapshot)
            .send()
            .await;
        assert!(
            gone.map(|o| o.snapshots().is_empty()).unwrap_or(true),
            "{snapshot} deleted"
        );
    }

    // Deleting again (a re-delivered Delete) is still SUCCESS.
    let again = invoke(
        &aws,
        event(
            "Delete",
            "lifecycle",
            "req-delete-1",
            Some(&first),
            json!({}),
        ),
    )
    .await;
    assert_eq!(again["Status"], "SUCCESS", "{again}");
}

/// A step that exits 0 but does not hand back an output it declares fails the build: an image
/// whose attributes would be missing is not made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_output_not_written_fails_the_build() {
    let local = LocalAws::start().await;
    let aws = local.aws().await;
    let audit = Audit {
        ec2: local.ec2().await,
        stack_id: stack_id("no-output"),
    };
    let steps = json!([
        {"Name": "versions", "Commands": ["echo Docker=25.0 >> \"$ECS_AMI_OUTPUTS\""], "Outputs": ["Docker", "Agent"]}
    ]);
    let answer = invoke(
        &aws,
        event(
            "Create",
            "no-output",
            "req-no-output",
            None,
            properties(json!({"Steps": steps})),
        ),
    )
    .await;
    assert_eq!(answer["Status"], "FAILED", "{answer}");
    let reason = answer["Reason"].as_str().unwrap();
    assert!(
        reason.contains("step \"versions\" (1 of 1) succeeded, but it declares output \"Agent\" but did not write `Agent=...` to $ECS_AMI_OUTPUTS"),
        "{reason}"
    );
    assert!(reason.contains("terminated builder"), "{reason}");
    audit.assert_only(&[]).await;
}

async fn local_source_image(local: &LocalAws) -> String {
    let ssm = aws_sdk_ssm::Client::new(&local.sdk_config().await);
    let out = ssm.get_parameter().name(ECS_AL2023).send().await.unwrap();
    out.parameter().unwrap().value().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_step_reports_its_output_and_leaves_nothing() {
    let local = LocalAws::start().await;
    let aws = local.aws().await;
    let audit = Audit {
        ec2: local.ec2().await,
        stack_id: stack_id("failing"),
    };
    let steps = json!([
        {"Name": "fine", "Commands": ["echo ok"]},
        {"Name": "install", "Commands": ["echo 'resolving packages'", "echo 'E: package ecs-agent-extras not found' >&2", "exit 7"]},
        {"Name": "never", "Commands": ["touch /never-ran"]}
    ]);
    let answer = invoke(
        &aws,
        event(
            "Create",
            "failing",
            "req-fail",
            None,
            properties(json!({"Steps": steps})),
        ),
    )
    .await;
    assert_eq!(answer["Status"], "FAILED", "{answer}");
    let reason = answer["Reason"].as_str().unwrap();
    assert!(
        reason.contains("step \"install\" (2 of 3) exited 7"),
        "{reason}"
    );
    assert!(
        reason.contains("E: package ecs-agent-extras not found"),
        "{reason}"
    );
    assert!(reason.contains("resolving packages"), "{reason}");
    assert!(reason.contains("terminated builder"), "{reason}");
    assert!(
        !answer["PhysicalResourceId"]
            .as_str()
            .unwrap()
            .starts_with("ami-")
    );
    let builders = audit.instances().await;
    assert_eq!(builders.len(), 1);
    assert_eq!(builders[0].1, "terminated");
    assert!(
        !local
            .state_dir
            .path()
            .join("instances")
            .join(&builders[0].0)
            .join("upper/never-ran")
            .exists()
    );
    audit.assert_only(&[]).await;

    // CloudFormation then deletes the failed resource: SUCCESS without touching anything.
    let failed_id = answer["PhysicalResourceId"].as_str().unwrap();
    let deleted = invoke(
        &aws,
        event(
            "Delete",
            "failing",
            "req-fail-delete",
            Some(failed_id),
            json!({}),
        ),
    )
    .await;
    assert_eq!(deleted["Status"], "SUCCESS", "{deleted}");
    assert_eq!(deleted["PhysicalResourceId"], json!(failed_id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_properties_fail_before_anything_is_launched() {
    let local = LocalAws::start().await;
    let aws = local.aws().await;
    let audit = Audit {
        ec2: local.ec2().await,
        stack_id: stack_id("invalid"),
    };
    local.take_calls().await;
    let bad = properties(
        json!({"SourceAmi": "ami-12345678", "InstanceTyp": "t3.small", "Steps": [{"Name": "x", "Path": "relative", "Content": ""}]}),
    );
    let answer = invoke(&aws, event("Create", "invalid", "req-invalid", None, bad)).await;
    assert_eq!(answer["Status"], "FAILED", "{answer}");
    let reason = answer["Reason"].as_str().unwrap();
    assert!(
        reason.contains("SourceAmi: give only one source, not SourceAmi and SourceAmiParameter"),
        "{reason}"
    );
    assert!(reason.contains("InstanceTyp: unknown property"), "{reason}");
    assert!(
        reason.contains("Steps[0].Path: \"relative\" is not an absolute path"),
        "{reason}"
    );
    assert_eq!(local.take_calls().await["total"], 0, "no AWS call at all");
    assert!(audit.instances().await.is_empty());

    // An invalid Update is refused the same way and keeps the existing physical id.
    let answer = invoke(
        &aws,
        event(
            "Update",
            "invalid",
            "req-invalid-update",
            Some("ami-0123456789abcdef0"),
            json!({"IamInstanceProfile": PROFILE}),
        ),
    )
    .await;
    assert_eq!(answer["Status"], "FAILED");
    assert_eq!(answer["PhysicalResourceId"], "ami-0123456789abcdef0");
    assert!(
        answer["Reason"]
            .as_str()
            .unwrap()
            .contains("SourceAmi: required")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_leaves_images_it_did_not_build() {
    let local = LocalAws::start().await;
    let aws = local.aws().await;
    let audit = Audit {
        ec2: local.ec2().await,
        stack_id: stack_id("foreign"),
    };
    let source = local_source_image(&local).await;
    let answer = invoke(
        &aws,
        event("Delete", "foreign", "req-foreign", Some(&source), json!({})),
    )
    .await;
    assert_eq!(answer["Status"], "SUCCESS", "{answer}");
    assert!(
        answer["Reason"]
            .as_str()
            .unwrap()
            .contains("left untouched")
    );
    assert!(
        audit.image(&source).await.is_some(),
        "a foreign image survives"
    );

    let answer = invoke(
        &aws,
        event(
            "Delete",
            "foreign",
            "req-gone",
            Some("ami-0000000000000000f"),
            json!({}),
        ),
    )
    .await;
    assert_eq!(answer["Status"], "SUCCESS", "{answer}");
    assert!(answer["Reason"].as_str().unwrap().contains("already gone"));
}

/// The cost of a one-step build in AWS API calls, as the local AWS counts them (reported in
/// docs/internals/measurements.md; the bound guards against polling getting out of hand).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_step_build_api_calls() {
    // Counted as on AWS, where a filtered Describe of a few items comes in one page: the local
    // AWS's paging (an empty first page before every answer) is off here.
    let local = LocalAws::start_with(&[("ECS_AMI_EMULATOR_PAGE_SIZE", "0")]).await;
    let aws = local.aws().await;
    local.take_calls().await;
    let started = std::time::Instant::now();
    let properties = properties(json!({"Steps": [{"Name": "hello", "Commands": ["echo hello"]}]}));
    let answer = invoke(
        &aws,
        event("Create", "counted", "req-counted", None, properties),
    )
    .await;
    let elapsed = started.elapsed();
    assert_eq!(answer["Status"], "SUCCESS", "{answer}");
    let calls = local.take_calls().await;
    println!(
        "one-step build: {} API calls in {:.1} s: {}",
        calls["total"],
        elapsed.as_secs_f64(),
        calls["by_operation"]
    );
    for (n, call) in calls["sequence"].as_array().unwrap().iter().enumerate() {
        println!("  {:>2} {}", n + 1, call.as_str().unwrap());
    }
    // The same figures for scripts/bench, which records them for docs/internals/measurements.md.
    println!(
        "measured: {}",
        json!({"one_step": {"calls": calls["total"], "wall_s": elapsed.as_secs_f64(), "by_operation": calls["by_operation"]}})
    );
    let total = calls["total"].as_u64().unwrap();
    // 18 seen, each for something: the request's record read (a repeated delivery), the lease
    // created, the record read again under it (with, for a signed Create, whether its Delete ran
    // first); the source parameter, image and instance type; RunInstances; SSM Online; the step
    // sent and its end; the stop and its end; CreateImage and its end; the snapshots tagged with
    // the image's id; the builder terminated; the answer recorded; the lease deleted. (36 before
    // the leases and records were read in fewer calls and a first holder of the lease stopped
    // looking for what an earlier delivery made.)
    assert!(
        total <= 20,
        "{total} calls exceed the budget of 20: {calls}"
    );
    assert_eq!(calls["by_operation"]["EC2.RunInstances"], 1);
    assert_eq!(calls["by_operation"]["AmazonSSM.SendCommand"], 1);
    assert_eq!(calls["by_operation"]["EC2.CreateImage"], 1);
}

/// A build handed over after every change of state (as `ECS_AMI_HANDOVER_EVERY_STATE=1` does)
/// ends like one that is not, with about 100 KB of step content carried in every hand-over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_over_after_every_state_gives_the_same_image() {
    let local = LocalAws::start().await;
    let aws = local.aws().await;
    let audit = Audit {
        ec2: local.ec2().await,
        stack_id: stack_id("handover"),
    };
    // Three file steps of 34 KiB each: each fits one SSM command once base64-encoded.
    let part = |c: char| c.to_string().repeat(34 * 1024);
    let steps = json!([
        {"Name": "part-a", "Path": "/opt/payload/a", "Content": part('a')},
        {"Name": "part-b", "Path": "/opt/payload/b", "Content": part('b')},
        {"Name": "part-c", "Path": "/opt/payload/c", "Content": part('c')},
        {"Name": "check", "Commands": ["test \"$(cat /opt/payload/a /opt/payload/b /opt/payload/c | wc -c)\" -eq 104448"]}
    ]);
    let properties = properties(json!({ "Steps": steps }));
    let (plain, plain_hand_overs) = invoke_with(
        &aws,
        event("Create", "handover", "req-plain", None, properties.clone()),
        Limits::default,
    )
    .await;
    let (handed, hand_overs) = invoke_with(
        &aws,
        event("Create", "handover", "req-handed", None, properties),
        || Limits {
            hand_over_every_state: true,
            ..Limits::default()
        },
    )
    .await;
    assert_eq!(plain["Status"], "SUCCESS", "{plain}");
    assert_eq!(handed["Status"], "SUCCESS", "{handed}");
    assert_eq!(plain_hand_overs, 0);
    assert!(hand_overs >= 15, "{hand_overs} hand-overs");
    for key in ["Fingerprint", "SourceImageId"] {
        assert_eq!(plain["Data"][key], handed["Data"][key], "{key}");
    }
    let instances = audit.instances().await;
    assert_eq!(instances.len(), 2, "one builder per build: {instances:?}");
    let plain_id = plain["PhysicalResourceId"].as_str().unwrap();
    let handed_id = handed["PhysicalResourceId"].as_str().unwrap();
    audit.assert_only(&[plain_id, handed_id]).await;
}

/// CloudFormation's rollbacks while the source parameter moved on to a new release
/// (https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/crpg-ref-requesttypes-update.html:
/// a rollback is an Update back to the previous properties, with the failed ones as old).
/// A rollback returns the image built from those very properties without resolving the source
/// again or launching anything; a real update after the release builds from the new release.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollbacks_after_a_new_source_release_launch_nothing() {
    let local = LocalAws::start().await;
    let aws = local.aws().await;
    let admin = local.ec2().await;
    let admin_ssm = aws_sdk_ssm::Client::new(&local.sdk_config().await);
    let stack = "release";
    let audit = Audit {
        ec2: local.ec2().await,
        stack_id: stack_id(stack),
    };
    let first_release = local_source_image(&local).await;
    let publish = |value: String| {
        let ssm = admin_ssm.clone();
        async move {
            ssm.put_parameter()
                .name("/ecs-ami/source/ecs-al2023")
                .value(value)
                .overwrite(true)
                .r#type(aws_sdk_ssm::types::ParameterType::String)
                .send()
                .await
                .unwrap();
        }
    };
    publish(first_release.clone()).await;
    let props = |version: &str, command: &str| {
        json!({
            "ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:ecs-ami",
            "SourceAmiParameter": "/ecs-ami/source/ecs-al2023",
            "IamInstanceProfile": PROFILE,
            "Steps": [{"Name": "version", "Commands": [format!("echo {version}"), command.to_owned()]}]
        })
    };
    let (v1, v2, v3) = (
        props("v1", "true"),
        props("v2", "true"),
        props("v3", "false"),
    );
    let created = invoke(&aws, event("Create", stack, "req-1", None, v1.clone())).await;
    assert_eq!(created["Status"], "SUCCESS", "{created}");
    let a = created["PhysicalResourceId"].as_str().unwrap().to_owned();
    let updated = invoke(&aws, update_from(stack, "req-2", &a, &v2, &v1)).await;
    assert_eq!(updated["Status"], "SUCCESS", "{updated}");
    let b = updated["PhysicalResourceId"].as_str().unwrap().to_owned();
    assert_ne!(a, b);

    // AWS publishes a new release: an image of its own, which the parameter now names.
    let instance = launched_id(launch_request(&admin, &first_release, false)).await;
    let second_release = admin
        .create_image()
        .instance_id(&instance)
        .name("al2023-ami-ecs-hvm-2023.0.20261201-kernel-6.1-x86_64")
        .send()
        .await
        .unwrap()
        .image_id
        .unwrap();
    publish(second_release.clone()).await;
    // A release is published well after its image exists: past EC2's consistency window.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;

    // 1. Another resource fails after this one's update: back to v1, from image b.
    local.take_calls().await;
    local.iam_decisions(true).await;
    let rolled = invoke(&aws, update_from(stack, "req-3", &b, &v1, &v2)).await;
    assert_eq!(rolled["Status"], "SUCCESS", "{rolled}");
    assert_eq!(rolled["PhysicalResourceId"], json!(a));
    assert_eq!(rolled["Data"]["SourceImageId"], json!(first_release));
    let calls = local.take_calls().await;
    assert_launched_nothing(&calls);
    // The source parameter is not read (the function's own request record is).
    let decisions = local.iam_decisions(false).await.to_string();
    assert!(
        !decisions.contains("parameter/ecs-ami/source/"),
        "{decisions}"
    );
    assert!(
        decisions.contains("parameter/ecs-ami/requests/"),
        "{decisions}"
    );

    // 2. This resource's own update fails (a step exits 1): the image stays a; the rollback
    // back to v1 keeps it.
    let failed = invoke(&aws, update_from(stack, "req-4", &a, &v3, &v1)).await;
    assert_eq!(failed["Status"], "FAILED", "{failed}");
    assert_eq!(failed["PhysicalResourceId"], json!(a));
    local.take_calls().await;
    let rolled = invoke(&aws, update_from(stack, "req-5", &a, &v1, &v3)).await;
    assert_eq!(rolled["Status"], "SUCCESS", "{rolled}");
    assert_eq!(rolled["PhysicalResourceId"], json!(a));
    let calls = local.take_calls().await;
    assert_launched_nothing(&calls);

    // 2b. An update with invalid properties fails at once; its rollback names them as old.
    let invalid = json!({"ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:ecs-ami", "Steps": "not a list"});
    let refused = invoke(&aws, update_from(stack, "req-4b", &a, &invalid, &v1)).await;
    assert_eq!(refused["Status"], "FAILED", "{refused}");
    local.take_calls().await;
    let rolled = invoke(&aws, update_from(stack, "req-5b", &a, &v1, &invalid)).await;
    assert_eq!(rolled["Status"], "SUCCESS", "{rolled}");
    assert_eq!(rolled["PhysicalResourceId"], json!(a));
    let calls = local.take_calls().await;
    assert_launched_nothing(&calls);

    // 3. A real update after the release builds from it.
    let v4 = props("v4", "true");
    let rebuilt = invoke(&aws, update_from(stack, "req-6", &a, &v4, &v1)).await;
    assert_eq!(rebuilt["Status"], "SUCCESS", "{rebuilt}");
    assert_eq!(rebuilt["Data"]["SourceImageId"], json!(second_release));
    let c = rebuilt["PhysicalResourceId"].as_str().unwrap().to_owned();

    for (request, id) in [("req-d1", &a), ("req-d2", &b), ("req-d3", &c)] {
        let deleted = invoke(&aws, event("Delete", stack, request, Some(id), v4.clone())).await;
        assert_eq!(deleted["Status"], "SUCCESS", "{deleted}");
    }
    audit.assert_only(&[]).await;
    common::report::record(
        "update-03",
        "Update",
        "Rollbacks (after another resource failed, and after this one's own update failed) once the source parameter names a new release",
        "the image built from the same properties returned, the source not resolved again, nothing launched; a real update builds from the new release",
        Some(audit.leftovers(&[]).await.len()),
    );
}
