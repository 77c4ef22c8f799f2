//! Rules of EC2 that moto does not keep and the local AWS does (emulator/local_aws.py), each
//! checked against the local AWS directly, and the product shown to pass under them. Each rule
//! cites the AWS page it follows.

use crate::common;

use std::time::Duration;

use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_sdk_ec2::types::{BlockDeviceMapping, EbsBlockDevice, InstanceType, ResourceType};
use common::audit::{Audit, count_tagged, tags_of};
use common::report;
use common::{
    ECS_AL2023, LocalAws, PROFILE, event, invoke, launch_request, launched_id, one_step_properties,
    parameter_value, stack_id, tagged_as_ours,
};
use serde_json::{Value, json};

const SECTION: &str = "AWS's rules on the local AWS (eventual consistency, names, limits)";

fn properties(extra: Value) -> Value {
    let mut base = json!({
        "ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:ecs-ami",
        "SourceAmiParameter": ECS_AL2023,
        "IamInstanceProfile": PROFILE,
        "Steps": [{"Name": "check", "Commands": ["true"]}]
    });
    for (key, value) in extra.as_object().unwrap() {
        base[key] = value.clone();
    }
    base
}

fn code<E: ProvideErrorMetadata>(error: &E) -> String {
    error.code().unwrap_or("(none)").to_owned()
}

/// https://docs.aws.amazon.com/ec2/latest/devguide/eventual-consistency.html: right after
/// RunInstances, a call naming the new instance may answer InvalidInstanceID.NotFound. The build
/// waits for EC2 to know its builder instead of calling it gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_builder_ec2_does_not_know_yet_is_not_gone() {
    let local = LocalAws::start_with(&[("ECS_AMI_EMULATOR_CONSISTENCY_DELAY", "4")]).await;
    let function = aws_sdk_ec2::Client::new(&local.function_config().await);
    let source = parameter_value(&local, ECS_AL2023).await;
    let launched = launch_request(&function, &source, true)
        .send()
        .await
        .unwrap();
    let id = launched.instances()[0].instance_id().unwrap().to_owned();
    let error = function
        .describe_instances()
        .instance_ids(&id)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&error), "InvalidInstanceID.NotFound");
    let error = function
        .terminate_instances()
        .instance_ids(&id)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&error), "InvalidInstanceID.NotFound");
    // ... and the instance runs on: NotFound did not terminate it.
    let admin = local.ec2().await;
    let state = admin
        .describe_instances()
        .instance_ids(&id)
        .send()
        .await
        .unwrap()
        .reservations()[0]
        .instances()[0]
        .state()
        .unwrap()
        .name()
        .unwrap()
        .clone();
    assert_eq!(state.as_str(), "running");

    let aws = local.aws().await;
    let answer = invoke(
        &aws,
        event("Create", "consistency", "req", None, properties(json!({}))),
    )
    .await;
    assert_eq!(answer["Status"], "SUCCESS", "{answer}");
    report::record(
        "rule-01",
        SECTION,
        "EC2 answers InvalidInstanceID.NotFound for 4 s after RunInstances",
        "SUCCESS: the build waits for EC2 to know its builder",
        None,
    );
}

/// A build that fails right after launch: TerminateInstances answers NotFound while EC2 does not
/// know the builder yet. Cleanup repeats it until EC2 accepts it, and never reports a builder
/// terminated that still runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_does_not_take_not_found_for_terminated() {
    let local = LocalAws::start_with(&[("ECS_AMI_EMULATOR_CONSISTENCY_DELAY", "4")]).await;
    let audit = Audit {
        ec2: local.ec2().await,
        stack_id: stack_id("consistency-cleanup"),
    };
    reqwest::Client::new()
        .post(format!("{}/ecs-ami-local/faults", local.endpoint))
        .body(json!({"rules": [{"operation": "AmazonSSM.DescribeInstanceInformation", "code": "AccessDeniedException"}]}).to_string())
        .send()
        .await
        .unwrap();
    let aws = local.aws().await;
    let answer = invoke(
        &aws,
        event(
            "Create",
            "consistency-cleanup",
            "req",
            None,
            properties(json!({})),
        ),
    )
    .await;
    assert_eq!(answer["Status"], "FAILED", "{answer}");
    let reason = answer["Reason"].as_str().unwrap();
    assert!(reason.contains("terminated builder i-"), "{reason}");
    assert_eq!(
        audit.live_instances().await,
        Vec::<String>::new(),
        "{reason}"
    );
    audit.assert_only(&[]).await;
    report::record(
        "rule-02",
        SECTION,
        "The build fails right after launch, while TerminateInstances still answers NotFound",
        "FAILED; cleanup repeats TerminateInstances until EC2 takes it: no builder left",
        Some(audit.leftovers(&[]).await.len()),
    );
}

/// For a while after DeregisterImage, DeleteSnapshot of its snapshots answers
/// InvalidSnapshot.InUse. Delete waits it out instead of answering FAILED and leaking them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_waits_for_the_snapshots_to_be_released() {
    let local = LocalAws::start_with(&[("ECS_AMI_EMULATOR_SNAPSHOT_RELEASE_DELAY", "3")]).await;
    let audit = Audit {
        ec2: local.ec2().await,
        stack_id: stack_id("snapshot-release"),
    };
    let aws = local.aws().await;
    let created = invoke(
        &aws,
        event(
            "Create",
            "snapshot-release",
            "req",
            None,
            properties(json!({})),
        ),
    )
    .await;
    assert_eq!(created["Status"], "SUCCESS", "{created}");
    let image = created["PhysicalResourceId"].as_str().unwrap().to_owned();
    let deleted = invoke(
        &aws,
        event(
            "Delete",
            "snapshot-release",
            "req-del",
            Some(&image),
            properties(json!({})),
        ),
    )
    .await;
    assert_eq!(deleted["Status"], "SUCCESS", "{deleted}");
    audit.assert_only(&[]).await;
    report::record(
        "rule-03",
        SECTION,
        "DeleteSnapshot answers InvalidSnapshot.InUse for 3 s after DeregisterImage",
        "Delete SUCCESS once EC2 releases them: no snapshot left",
        Some(audit.leftovers(&[]).await.len()),
    );
}

/// CreateImage (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_CreateImage.html):
/// TagSpecifications tag the image and its snapshots; an AMI name is unique per account and
/// region; KmsKeyId belongs to RunInstances' mappings, not CreateImage's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_image_follows_ec2() {
    let local = LocalAws::start().await;
    let admin = local.ec2().await;
    let source = parameter_value(&local, ECS_AL2023).await;
    let instance = launched_id(launch_request(&admin, &source, false)).await;
    let image = admin
        .create_image()
        .instance_id(&instance)
        .name("rules-image")
        .tag_specifications(tagged_as_ours(ResourceType::Image))
        .tag_specifications(tagged_as_ours(ResourceType::Snapshot))
        .send()
        .await
        .expect("CreateImage takes a snapshot TagSpecification")
        .image_id
        .unwrap();
    let described = admin
        .describe_images()
        .image_ids(&image)
        .send()
        .await
        .unwrap();
    let snapshot = described.images()[0].block_device_mappings()[0]
        .ebs()
        .unwrap()
        .snapshot_id()
        .unwrap()
        .to_owned();
    let snapshots = admin
        .describe_snapshots()
        .snapshot_ids(&snapshot)
        .send()
        .await
        .unwrap();
    assert_eq!(
        tags_of(snapshots.snapshots()[0].tags())["ecs-ami:logical-id"],
        "Ami"
    );
    let duplicate = admin
        .create_image()
        .instance_id(&instance)
        .name("rules-image")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&duplicate), "InvalidAMIName.Duplicate");
    let with_key = admin
        .create_image()
        .instance_id(&instance)
        .name("rules-image-2")
        .block_device_mappings(
            BlockDeviceMapping::builder()
                .device_name("/dev/xvda")
                .ebs(
                    EbsBlockDevice::builder()
                        .encrypted(true)
                        .kms_key_id("alias/aws/ebs")
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&with_key), "InvalidParameter");
    report::record(
        "rule-04",
        SECTION,
        "CreateImage: snapshot TagSpecification, a name in use, KmsKeyId in its mappings",
        "snapshot tagged; InvalidAMIName.Duplicate; InvalidParameter",
        None,
    );
}

/// RunInstances (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_RunInstances.html):
/// the instance type must exist and match the image's architecture; ClientToken makes the call
/// idempotent (https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-idempotency.html).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_instances_follows_ec2() {
    let local = LocalAws::start().await;
    let admin = local.ec2().await;
    let x86 = parameter_value(&local, ECS_AL2023).await;
    let launch = |image: &str, kind: &str, token: &str| {
        launch_request(&admin, image, false)
            .instance_type(InstanceType::from(kind))
            .client_token(token)
            .send()
    };
    let unknown = launch(&x86, "t3.gigantic", "a").await.unwrap_err();
    assert_eq!(code(&unknown), "InvalidParameterValue");
    let mismatch = launch(&x86, "t4g.medium", "b").await.unwrap_err();
    assert_eq!(code(&mismatch), "InvalidParameterValue");
    assert!(
        mismatch
            .message()
            .unwrap()
            .contains("does not match the architecture 'x86_64'")
    );
    let first = launch(&x86, "t3.micro", "c").await.unwrap();
    let again = launch(&x86, "t3.micro", "c").await.unwrap();
    assert_eq!(
        first.instances()[0].instance_id(),
        again.instances()[0].instance_id()
    );
    let other = launch(&x86, "t3.small", "c").await.unwrap_err();
    assert_eq!(code(&other), "IdempotentParameterMismatch");

    // The product: an instance type that does not match the source image fails the build with
    // EC2's refusal and launches nothing.
    let audit = Audit {
        ec2: local.ec2().await,
        stack_id: stack_id("rules-type"),
    };
    let aws = local.aws().await;
    let answer = invoke(
        &aws,
        event(
            "Create",
            "rules-type",
            "req",
            None,
            properties(json!({"InstanceType": "t4g.medium"})),
        ),
    )
    .await;
    assert_eq!(answer["Status"], "FAILED", "{answer}");
    let reason = answer["Reason"].as_str().unwrap();
    assert!(
        reason.contains("InstanceType: t4g.medium is arm64, SourceAmi ami-"),
        "{reason}"
    );
    audit.assert_only(&[]).await;
    report::record(
        "rule-05",
        SECTION,
        "RunInstances: unknown instance type, architecture mismatch, ClientToken reused",
        "InvalidParameterValue twice; same instance; IdempotentParameterMismatch; the build FAILED naming InstanceType",
        Some(0),
    );
}

/// An encrypted builder volume whose KMS key the role may not use: EC2 takes the launch, then
/// the instance goes pending -> terminated with StateReason Client.InternalError
/// (https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/troubleshooting-launch.html). The
/// Reason quotes EC2's StateReason; with the key in BuilderKmsKeyArns the build succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kms_key_the_role_may_not_use_is_reported_with_ec2s_reason() {
    let local = LocalAws::start().await;
    let kms = kms_key(&local).await;
    let audit = Audit {
        ec2: local.ec2().await,
        stack_id: stack_id("rules-kms"),
    };
    let aws = local.aws().await;
    let encrypted = properties(json!({"BlockDeviceMappings": [
        {"DeviceName": "/dev/xvdb", "Ebs": {"VolumeSize": "10", "Encrypted": "true", "KmsKeyId": kms}}
    ]}));
    let refused = invoke(
        &aws,
        event("Create", "rules-kms", "req-1", None, encrypted.clone()),
    )
    .await;
    assert_eq!(refused["Status"], "FAILED", "{refused}");
    let reason = refused["Reason"].as_str().unwrap();
    assert!(
        reason.contains("is terminated instead of running")
            && reason.contains("Client.InternalError"),
        "{reason}"
    );
    audit.assert_only(&[]).await;
    local
        .set_role(json!({"parameters": {"BuilderKmsKeyArns": kms}}))
        .await;
    let built = invoke(&aws, event("Create", "rules-kms", "req-2", None, encrypted)).await;
    assert_eq!(built["Status"], "SUCCESS", "{built}");
    report::record(
        "rule-06",
        SECTION,
        "A builder volume encrypted with a KMS key the role may not use",
        "FAILED quoting EC2's StateReason (Client.InternalError); SUCCESS once the key is in BuilderKmsKeyArns",
        Some(0),
    );
}

/// A customer managed key, made by the local AWS's administrator (KMS's JSON API).
async fn kms_key(local: &LocalAws) -> String {
    let answer = reqwest::Client::new()
        .post(&local.endpoint)
        .header("X-Amz-Target", "TrentService.CreateKey")
        .header("Content-Type", "application/x-amz-json-1.1")
        .header(
            "Authorization",
            "AWS4-HMAC-SHA256 Credential=local-admin/20261125/us-east-1/kms/aws4_request, SignedHeaders=host, Signature=0",
        )
        .body("{}")
        .send()
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&answer.bytes().await.unwrap()).unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    body["KeyMetadata"]["Arn"].as_str().unwrap().to_owned()
}

/// GetCommandInvocation keeps the first 24,000 characters of stdout and 8,000 of stderr
/// (https://docs.aws.amazon.com/systems-manager/latest/APIReference/API_GetCommandInvocation.html):
/// a failing step's Reason must still end with its last lines, where the cause is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_steps_reason_quotes_its_last_lines() {
    let local = LocalAws::start().await;
    let audit = Audit {
        ec2: local.ec2().await,
        stack_id: stack_id("rules-output"),
    };
    let aws = local.aws().await;
    let answer = invoke(
        &aws,
        event(
            "Create",
            "rules-output",
            "req",
            None,
            properties(json!({"Steps": [{"Name": "chatty", "Commands": [
                "for i in $(seq 1 5000); do echo \"stdout line $i\"; echo \"stderr line $i\" >&2; done",
                "echo 'the real cause' >&2",
                "exit 3"
            ]}]})),
        ),
    )
    .await;
    assert_eq!(answer["Status"], "FAILED", "{answer}");
    let reason = answer["Reason"].as_str().unwrap();
    assert!(reason.contains("exited 3"), "{reason}");
    assert!(reason.contains("the real cause"), "{reason}");
    assert!(reason.contains("stdout line 5000"), "{reason}");
    audit.assert_only(&[]).await;
    report::record(
        "rule-07",
        SECTION,
        "A failing step writes 100 KB to stdout and stderr (SSM keeps their first 24,000 and 8,000 characters)",
        "FAILED quoting the step's last lines of both",
        Some(0),
    );
}

/// An AMI is the file system its builder had when it was imaged, and an instance launched from
/// it starts with that file system: a build from an AMI this product built sees what that AMI's
/// steps wrote (and not what they removed), and a build from the ECS-optimized AMI sees none of
/// it. (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_CreateImage.html: the image
/// is made of the instance's volumes.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ami_keeps_what_its_steps_wrote_and_amis_built_from_each_other_stack() {
    let local = LocalAws::start().await;
    let aws = local.aws().await;
    let stack = "layers";
    let audit = Audit {
        ec2: local.ec2().await,
        stack_id: stack_id(stack),
    };
    let marker = format!("/etc/ecs-ami-layer-{}", std::process::id());
    let build = |request: &str, source: Option<&str>, commands: Vec<String>| {
        let mut properties = one_step_properties(json!({
            "Steps": [{"Name": "layer", "Commands": commands}],
        }));
        if let Some(ami) = source {
            properties
                .as_object_mut()
                .unwrap()
                .remove("SourceAmiParameter");
            properties["SourceAmi"] = json!(ami);
        }
        event("Create", stack, request, None, properties)
    };
    let first = invoke(
        &aws,
        build("req-a", None, vec![format!("echo a > {marker}-a")]),
    )
    .await;
    assert_eq!(first["Status"], "SUCCESS", "{first}");
    let a = first["PhysicalResourceId"].as_str().unwrap().to_owned();
    let second = invoke(
        &aws,
        build(
            "req-b",
            Some(&a),
            vec![
                format!("test \"$(cat {marker}-a)\" = a"),
                format!("echo b > {marker}-b"),
                format!("rm {marker}-a"),
            ],
        ),
    )
    .await;
    assert_eq!(second["Status"], "SUCCESS", "{second}");
    let b = second["PhysicalResourceId"].as_str().unwrap().to_owned();
    let third = invoke(
        &aws,
        build(
            "req-c",
            Some(&b),
            vec![
                format!("test -f {marker}-b"),
                format!("test ! -e {marker}-a"),
            ],
        ),
    )
    .await;
    assert_eq!(third["Status"], "SUCCESS", "{third}");
    let c = third["PhysicalResourceId"].as_str().unwrap().to_owned();
    // From the ECS-optimized AMI: none of it; and nothing of it on this machine.
    let plain = invoke(
        &aws,
        build("req-d", None, vec![format!("test ! -e {marker}-a")]),
    )
    .await;
    assert_eq!(plain["Status"], "SUCCESS", "{plain}");
    let d = plain["PhysicalResourceId"].as_str().unwrap().to_owned();
    assert!(!std::path::Path::new(&format!("{marker}-a")).exists());
    assert!(!std::path::Path::new(&format!("{marker}-b")).exists());
    report::record_clean(
        "aws-rules-layers",
        "AWS's rules on the local AWS (eventual consistency, names, limits)",
        "An AMI built from an AMI built from another (each step writing or removing a file), and one from the ECS-optimized AMI",
        "each build sees exactly what its source AMI's builds left (a file written, a file removed), the one from the ECS-optimized AMI none of it, and the machine running the local AWS nothing",
        &audit.leftovers(&[&a, &b, &c, &d]).await,
    );
}

/// A filtered Describe answer may come in pages, the first of them empty, each carrying the token
/// of the next (https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-pagination.html): the
/// local AWS answers the function's filtered DescribeInstances, DescribeImages,
/// DescribeSnapshots, DescribeVolumes, SSM's DescribeInstanceInformation and ECS's
/// ListContainerInstances so (one item a page), and the product, which reads every page, builds,
/// tests and deletes under it as every other local-AWS test shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filtered_describe_calls_come_in_pages() {
    let local = LocalAws::start().await;
    let admin = local.ec2().await;
    let function = aws_sdk_ec2::Client::new(&local.function_config().await);
    let source = parameter_value(&local, ECS_AL2023).await;
    let mut launched = Vec::new();
    for _ in 0..2 {
        launched.push(launched_id(launch_request(&function, &source, true)).await);
    }
    let filter = aws_sdk_ec2::types::Filter::builder()
        .name("tag:ecs-ami:logical-id")
        .values("Ami")
        .build();
    let first = function
        .describe_instances()
        .filters(filter.clone())
        .send()
        .await
        .unwrap();
    assert!(first.reservations().is_empty(), "{first:?}");
    assert!(
        first.next_token().is_some(),
        "an empty first page carries a token"
    );
    let mut pages = function
        .describe_instances()
        .filters(filter.clone())
        .into_paginator()
        .send();
    let mut found = Vec::new();
    let mut count = 0;
    while let Some(page) = pages.next().await {
        count += 1;
        for reservation in page.unwrap().reservations() {
            for instance in reservation.instances() {
                found.push(instance.instance_id().unwrap().to_owned());
            }
        }
    }
    found.sort();
    launched.sort();
    assert_eq!(found, launched);
    assert_eq!(count, 3, "an empty page, then one instance a page");
    // The harness's own view is not paged; nor is a call by id (EC2 takes no MaxResults with ids).
    let whole = admin
        .describe_instances()
        .filters(filter)
        .send()
        .await
        .unwrap();
    assert!(whole.next_token().is_none());
    // (Past EC2's eventual consistency window for a new instance, ECS_AMI_EMULATOR_CONSISTENCY_DELAY.)
    tokio::time::sleep(Duration::from_secs(3)).await;
    let by_id = function
        .describe_instances()
        .instance_ids(&launched[0])
        .send()
        .await
        .unwrap();
    assert_eq!(by_id.reservations().len(), 1);
    report::record(
        "pages",
        SECTION,
        "The function's filtered Describe calls answered in pages of one, the first empty with a token",
        "every page read by following NextToken; by id, one answer",
        None,
    );
}

/// An Update that rebuilds launches a builder as a Create does, so it checks first what EC2 would
/// refuse (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_RunInstances.html:
/// InvalidSubnetID.NotFound): a subnet that does not exist fails the Update naming SubnetId,
/// before anything is launched, and the stack keeps its AMI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_that_rebuilds_checks_where_it_runs_before_launching() {
    let local = LocalAws::start().await;
    let aws = local.aws().await;
    let created = invoke(
        &aws,
        event(
            "Create",
            "rebuild-checks",
            "req-1",
            None,
            properties(json!({})),
        ),
    )
    .await;
    assert_eq!(created["Status"], "SUCCESS", "{created}");
    let ami = created["PhysicalResourceId"].as_str().unwrap().to_owned();
    let rebuild = properties(json!({
        "Steps": [{"Name": "check", "Commands": ["true", "true"]}],
        "SubnetId": "subnet-0123456789abcdef0"
    }));
    let updated = invoke(
        &aws,
        event("Update", "rebuild-checks", "req-2", Some(&ami), rebuild),
    )
    .await;
    assert_eq!(updated["Status"], "FAILED", "{updated}");
    assert_eq!(updated["PhysicalResourceId"], json!(ami));
    let reason = updated["Reason"].as_str().unwrap();
    assert!(
        reason.contains("SubnetId: subnet-0123456789abcdef0 does not exist"),
        "{reason}"
    );
    let (launched, _, _) = count_tagged(&local.ec2().await, "req-2").await;
    assert_eq!(launched, 0, "an instance was launched");
}
