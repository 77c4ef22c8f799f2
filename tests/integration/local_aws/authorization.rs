//! The function's role, as template.yaml writes it, against every call the product makes: the
//! local AWS evaluates each call made with the function's credentials with an IAM engine
//! (emulator/authorization.py, emulator/iam/). Resource types and condition keys per action
//! follow the Service Authorization Reference:
//! https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonec2.html and
//! https://docs.aws.amazon.com/service-authorization/latest/reference/list_awssystemsmanager.html
//! (CreateImage authorizes the image, the instance and the snapshots; RunInstances the image,
//! instance, volume, network interface, security group and subnet; SendCommand the instance and
//! the document). A refused EC2 call answers `UnauthorizedOperation` (HTTP 403), a refused SSM
//! call `AccessDeniedException`, as on AWS.

use crate::common;

use aws_sdk_ec2::types::{IamInstanceProfileSpecification, Tag};
use common::audit::Audit;
use common::report;
use common::{
    ECS_AL2023, LocalAws, PROFILE, event, invoke, launch_request, launched_id, parameter_value,
    stack_id,
};
use serde_json::{Value, json};

const SECTION: &str = "The function's role (template.yaml) on the local AWS's IAM engine";

fn properties(extra: Value) -> Value {
    let mut base = json!({
        "ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:ecs-ami",
        "SourceAmiParameter": ECS_AL2023,
        "IamInstanceProfile": PROFILE,
        "Tags": {"team": "platform"},
        "Steps": [
            {"Name": "config", "Path": "/etc/ecs/ecs.config", "Content": "ECS_CLUSTER=main\n"},
            {"Name": "check", "Commands": ["grep -q main /etc/ecs/ecs.config"]}
        ]
    });
    for (key, value) in extra.as_object().unwrap() {
        base[key] = value.clone();
    }
    base
}

fn count(decisions: &Value, kind: &str) -> u64 {
    decisions["counts"][kind].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_role_allows_a_whole_lifecycle_and_nothing_is_left_unevaluated() {
    let local = LocalAws::start().await;
    let aws = local.aws().await;
    let audit = Audit {
        ec2: local.ec2().await,
        stack_id: stack_id("iam-lifecycle"),
    };
    let created = invoke(
        &aws,
        event(
            "Create",
            "iam-lifecycle",
            "req-1",
            None,
            properties(json!({})),
        ),
    )
    .await;
    assert_eq!(created["Status"], "SUCCESS", "{created}");
    let first = created["PhysicalResourceId"].as_str().unwrap().to_owned();
    // Retag in place (CreateTags, DeleteTags, ModifyImageAttribute on our image and snapshots).
    let retagged = invoke(
        &aws,
        event(
            "Update",
            "iam-lifecycle",
            "req-2",
            Some(&first),
            properties(json!({"Tags": {"team": "core"}, "AmiDescription": "retagged"})),
        ),
    )
    .await;
    assert_eq!(retagged["Status"], "SUCCESS", "{retagged}");
    assert_eq!(retagged["PhysicalResourceId"], json!(first));
    // Rebuild with an explicit AmiName twice: EC2's names are unique, and the old image still
    // exists when the new one is made.
    let named = properties(json!({"AmiName": "platform-ecs"}));
    let second = invoke(
        &aws,
        event(
            "Update",
            "iam-lifecycle",
            "req-3",
            Some(&first),
            named.clone(),
        ),
    )
    .await;
    assert_eq!(second["Status"], "SUCCESS", "{second}");
    let second_id = second["PhysicalResourceId"].as_str().unwrap().to_owned();
    let mut changed = named.clone();
    changed["Steps"][0]["Content"] = json!("ECS_CLUSTER=main2\n");
    let third = invoke(
        &aws,
        event(
            "Update",
            "iam-lifecycle",
            "req-4",
            Some(&second_id),
            changed,
        ),
    )
    .await;
    assert_eq!(third["Status"], "SUCCESS", "{third}");
    let third_id = third["PhysicalResourceId"].as_str().unwrap().to_owned();
    assert!(
        third["Data"]["ImageName"]
            .as_str()
            .unwrap()
            .starts_with("platform-ecs-")
    );
    assert_ne!(second["Data"]["ImageName"], third["Data"]["ImageName"]);
    // CloudFormation gives each request its own RequestId (a repeated one is a late delivery).
    for (request, id) in [
        ("req-d1", &first),
        ("req-d2", &second_id),
        ("req-d3", &third_id),
    ] {
        let deleted = invoke(
            &aws,
            event("Delete", "iam-lifecycle", request, Some(id), named.clone()),
        )
        .await;
        assert_eq!(deleted["Status"], "SUCCESS", "{deleted}");
    }
    audit.assert_only(&[]).await;

    let decisions = local.iam_decisions(false).await;
    assert_eq!(count(&decisions, "Denied"), 0, "{decisions:#}");
    assert_eq!(count(&decisions, "Error"), 0, "{decisions:#}");
    let evaluated = count(&decisions, "Allowed");
    assert!(evaluated > 60, "{evaluated} calls evaluated");
    // CreateImage was authorized on all three of its resource types, each by a statement.
    let create_image = decisions["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["operation"] == "EC2.CreateImage")
        .expect("CreateImage evaluated");
    let kinds: Vec<&str> = create_image["checks"][0]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["image", "instance", "snapshot"]);
    eprintln!("IAM decisions over the lifecycle: {}", decisions["counts"]);
    report::record(
        "iam-01",
        SECTION,
        "Create, retag, two rebuilds with one AmiName, three deletes, under the shipped role",
        "all SUCCESS; every call (over 60) evaluated, none refused or unevaluable",
        Some(audit.leftovers(&[]).await.len()),
    );
}

/// Each statement of the role, removed, makes a named call fail; the build answers FAILED naming
/// the call and AWS's error, and leaves nothing the remaining role could remove.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_statement_of_the_role_is_needed() {
    let local = LocalAws::start().await;
    let aws = local.aws().await;
    // (statement, the call the Reason names, the error code, whether the role without it can
    // still clean up everything)
    let cases = [
        ("ReadState", "ec2:Describe", "UnauthorizedOperation", true),
        (
            "BuildLeaseAndRequestRecords",
            "ssm:PutParameter",
            "AccessDeniedException",
            true,
        ),
        (
            "ReadSourceParameter",
            "ssm:GetParameter",
            "AccessDeniedException",
            true,
        ),
        (
            "LaunchFromAnyImageIntoAnySubnet",
            "ec2:RunInstances",
            "UnauthorizedOperation",
            true,
        ),
        (
            "LaunchOnlyTaggedBuilders",
            "ec2:RunInstances",
            "UnauthorizedOperation",
            true,
        ),
        (
            "TagOnCreate",
            "ec2:RunInstances",
            "UnauthorizedOperation",
            true,
        ),
        (
            "PassOnlyBuilderRoles",
            "iam:PassRole",
            "UnauthorizedOperation",
            true,
        ),
        (
            "ProvisionOnlyOurBuilders",
            "ssm:SendCommand",
            "AccessDeniedException",
            true,
        ),
        (
            "RunShellScriptOnly",
            "ssm:SendCommand",
            "AccessDeniedException",
            true,
        ),
        (
            "OperateOnlyOurResources",
            "ec2:StopInstances",
            "UnauthorizedOperation",
            false,
        ),
        (
            "ImageOnlyOurBuilders",
            "ec2:CreateImage",
            "UnauthorizedOperation",
            true,
        ),
        (
            "CreateOnlyTaggedImages",
            "ec2:CreateImage",
            "UnauthorizedOperation",
            true,
        ),
        // The last phase: the AMI's id read, then written, under ImageParameterPrefix.
        (
            "PublishImageParameters",
            "ssm:GetParameter",
            "AccessDeniedException",
            true,
        ),
        // Tests.EcsCluster: whether the test instance joined (it does: its user data starts
        // the simulated ECS agent, and the build wrote ECS_CLUSTER=main).
        (
            "CheckTestInstancesJoinClusters",
            "ecs:ListContainerInstances",
            "AccessDeniedException",
            true,
        ),
        (
            "DescribeTestContainerInstances",
            "ecs:DescribeContainerInstances",
            "AccessDeniedException",
            true,
        ),
    ];
    aws_sdk_ecs::Client::new(&local.sdk_config().await)
        .create_cluster()
        .cluster_name("main")
        .send()
        .await
        .unwrap();
    let joining = {
        let mut joining = properties(json!({
            "SsmParameters": [{"Name": "/ecs-ami/images/iam"}],
            "Tests": {"UserData": "#!/bin/bash\nsystemctl start ecs\n", "EcsCluster": "main"},
        }));
        joining["Steps"].as_array_mut().unwrap().insert(
            0,
            json!({"Name": "systemctl", "Path": "/usr/local/sbin/systemctl", "Content": common::SYSTEMCTL_STAND_IN, "Mode": "0755"}),
        );
        joining
    };
    // Not exercised here, and why: the hand-over invokes Lambda, which the tests run in-process
    // (offline/long_builds.rs); CancelCommand runs only on a step that overran or a cancelled
    // build, where the build fails either way (its refusal is logged, not answered).
    // ReportUnhandledEvents is used by Lambda, not the code (an on-failure destination).
    let not_exercised = [
        "HandOverToItself",
        "CancelOwnCommands",
        "ReportUnhandledEvents",
    ];
    let all = local.set_role(json!({})).await;
    let mut covered: Vec<&str> = cases.iter().map(|c| c.0).collect();
    covered.extend(not_exercised);
    covered.sort();
    let mut in_template: Vec<&str> = all.iter().map(String::as_str).collect();
    in_template.sort();
    assert_eq!(
        covered, in_template,
        "a case per statement of template.yaml"
    );

    for (index, (sid, call, code, cleans_up)) in cases.iter().enumerate() {
        let stack = format!("iam-without-{index}");
        let audit = Audit {
            ec2: local.ec2().await,
            stack_id: stack_id(&stack),
        };
        local.set_role(json!({ "without": [sid] })).await;
        local.iam_decisions(true).await;
        let requested = if call.starts_with("ecs:") {
            joining.clone()
        } else {
            properties(json!({"SsmParameters": [{"Name": "/ecs-ami/images/iam"}]}))
        };
        let answer = invoke(&aws, event("Create", &stack, "req", None, requested)).await;
        let reason = answer["Reason"].as_str().unwrap_or_default();
        assert_eq!(answer["Status"], "FAILED", "without {sid}: {answer}");
        assert!(reason.contains(call), "without {sid}: {reason}");
        assert!(reason.contains(code), "without {sid}: {reason}");
        let decisions = local.iam_decisions(true).await;
        assert!(count(&decisions, "Denied") >= 1, "without {sid}");
        assert_eq!(count(&decisions, "Error"), 0, "{decisions:#}");
        local.set_role(json!({})).await;
        let left = audit.leftovers(&[]).await;
        if *cleans_up {
            assert_eq!(left, Vec::<String>::new(), "without {sid}: {reason}");
        } else {
            // Without it the role may terminate nothing: the Reason names the builder left
            // (its volumes go with it when it is terminated by hand).
            let builders = audit.live_instances().await;
            assert_eq!(builders.len(), 1, "{left:?}");
            assert!(
                reason.contains(&builders[0]),
                "{builders:?} not named: {reason}"
            );
            assert!(reason.contains("NOT cleaned up"), "{reason}");
        }
        report::record(
            &format!("iam-{:02}", index + 2),
            SECTION,
            &format!("The role without its statement {sid}"),
            &format!("FAILED naming {call} and {code}"),
            Some(if *cleans_up { left.len() } else { 0 }),
        );
    }
}

async fn expect_refused<T, E>(
    what: &str,
    code: &str,
    sent: Result<T, aws_sdk_ec2::error::SdkError<E>>,
) where
    E: aws_sdk_ec2::error::ProvideErrorMetadata + std::fmt::Debug,
{
    match sent {
        Ok(_) => panic!("{what}: allowed"),
        Err(error) => assert_eq!(
            aws_sdk_ec2::error::ProvideErrorMetadata::code(&error),
            Some(code),
            "{what}: {error:?}"
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_role_refuses_what_is_not_the_builds() {
    let local = LocalAws::start().await;
    let admin = local.ec2().await;
    let admin_ssm = aws_sdk_ssm::Client::new(&local.sdk_config().await);
    let function = aws_sdk_ec2::Client::new(&local.function_config().await);
    let function_ssm = aws_sdk_ssm::Client::new(&local.function_config().await);
    let source = parameter_value(&local, ECS_AL2023).await;
    // An instance that is not ours (no ecs-ami tags), launched by someone else.
    let theirs = launched_id(launch_request(&admin, &source, false)).await;
    expect_refused(
        "terminating an instance that is not ours",
        "UnauthorizedOperation",
        function
            .terminate_instances()
            .instance_ids(&theirs)
            .send()
            .await,
    )
    .await;
    expect_refused(
        "tagging an instance that is not ours (as if it were)",
        "UnauthorizedOperation",
        function
            .create_tags()
            .resources(&theirs)
            .tags(
                Tag::builder()
                    .key("ecs-ami:logical-id")
                    .value("Ami")
                    .build(),
            )
            .send()
            .await,
    )
    .await;
    expect_refused(
        "SendCommand to an instance without our tags",
        "AccessDeniedException",
        function_ssm
            .send_command()
            .instance_ids(&theirs)
            .document_name("AWS-RunShellScript")
            .parameters("commands", vec!["id".into()])
            .send()
            .await,
    )
    .await;
    // A builder of ours, tagged as the product tags it: another document is refused.
    let ours = launch_request(&function, &source, true)
        .send()
        .await
        .expect("our builder, tagged, with the builder profile, is allowed")
        .instances()[0]
        .instance_id()
        .unwrap()
        .to_owned();
    expect_refused(
        "SendCommand with another document",
        "AccessDeniedException",
        function_ssm
            .send_command()
            .instance_ids(&ours)
            .document_name("AWS-RunPowerShellScript")
            .parameters("commands", vec!["id".into()])
            .send()
            .await,
    )
    .await;
    // Launching without our tags.
    expect_refused(
        "RunInstances without our tags",
        "UnauthorizedOperation",
        launch_request(&function, &source, false).send().await,
    )
    .await;
    // Passing another role: an instance profile of someone else's.
    let iam = aws_sdk_iam_like(&local).await;
    iam(
        "CreateRole",
        &[
            ("RoleName", "admin-role"),
            ("AssumeRolePolicyDocument", "{}"),
        ],
    )
    .await;
    iam(
        "CreateInstanceProfile",
        &[("InstanceProfileName", "admin-profile")],
    )
    .await;
    iam(
        "AddRoleToInstanceProfile",
        &[
            ("InstanceProfileName", "admin-profile"),
            ("RoleName", "admin-role"),
        ],
    )
    .await;
    expect_refused(
        "RunInstances passing another role",
        "UnauthorizedOperation",
        launch_request(&function, &source, true)
            .iam_instance_profile(
                IamInstanceProfileSpecification::builder()
                    .name("admin-profile")
                    .build(),
            )
            .send()
            .await,
    )
    .await;
    // Reading an application's parameter; the deployer's prefix and AWS's public ones are fine.
    for (name, value) in [
        ("/app/db-password", "s3cret"),
        ("/ecs-ami/source/base", "ami-12345678"),
    ] {
        admin_ssm
            .put_parameter()
            .name(name)
            .value(value)
            .r#type(aws_sdk_ssm::types::ParameterType::String)
            .send()
            .await
            .unwrap();
    }
    expect_refused(
        "reading an application's parameter",
        "AccessDeniedException",
        function_ssm
            .get_parameter()
            .name("/app/db-password")
            .send()
            .await,
    )
    .await;
    for allowed in ["/ecs-ami/source/base", ECS_AL2023] {
        function_ssm
            .get_parameter()
            .name(allowed)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{allowed}: {e:?}"));
    }
    let decisions = local.iam_decisions(false).await;
    assert_eq!(count(&decisions, "Denied"), 7, "{decisions:#}");
    assert_eq!(count(&decisions, "Error"), 0, "{decisions:#}");
    report::record(
        // Its own id: the statement rows take iam-01 to iam-NN.
        "iam-refusals",
        SECTION,
        "Calls the role must refuse: terminate, tag or SendCommand to an instance not ours, another document, RunInstances untagged or passing another role, an application's parameter",
        "each refused with UnauthorizedOperation or AccessDeniedException",
        None,
    );
}

/// Every resource a request names is authorized as a resource type of the action, optional types
/// included (https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonec2.html:
/// ec2:RunInstances lists `snapshot` as optional, with ec2:Owner, ec2:ParentVolume and the
/// snapshot's tags as condition keys), and a parameter the local AWS cannot place is refused
/// rather than let through. A snapshot named in a block device mapping is what the test
/// instance's launch once named, and the role grants RunInstances on no snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_resource_a_request_names_is_authorized_or_the_request_refused() {
    use aws_sdk_ec2::types::{BlockDeviceMapping, EbsBlockDevice};
    let local = LocalAws::start().await;
    let admin = local.ec2().await;
    let function = aws_sdk_ec2::Client::new(&local.function_config().await);
    let source = parameter_value(&local, ECS_AL2023).await;
    let image = admin
        .describe_images()
        .image_ids(&source)
        .send()
        .await
        .unwrap()
        .images()[0]
        .clone();
    let root = image.root_device_name().unwrap().to_owned();
    let snapshot = image.block_device_mappings()[0]
        .ebs()
        .and_then(|e| e.snapshot_id())
        .unwrap()
        .to_owned();
    let device = |snapshot: Option<&str>| {
        BlockDeviceMapping::builder()
            .device_name(&root)
            .ebs(
                EbsBlockDevice::builder()
                    .set_snapshot_id(snapshot.map(str::to_owned))
                    .delete_on_termination(true)
                    .build(),
            )
            .build()
    };
    local.iam_decisions(true).await;
    expect_refused(
        "RunInstances naming the image's snapshot",
        "UnauthorizedOperation",
        launch_request(&function, &source, true)
            .block_device_mappings(device(Some(&snapshot)))
            .send()
            .await,
    )
    .await;
    let decisions = local.iam_decisions(true).await;
    let refused: Vec<&Value> = decisions["decisions"][0]["checks"][0]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["result"] != "Allowed")
        .collect();
    assert_eq!(
        refused.len(),
        1,
        "only the snapshot is refused: {decisions:#}"
    );
    assert_eq!(
        refused[0]["arn"],
        format!("arn:aws:ec2:us-east-1::snapshot/{snapshot}")
    );
    assert_eq!(refused[0]["type"], "snapshot");
    // The same device without its snapshot: EC2 takes it from the image, and names nothing more.
    launch_request(&function, &source, true)
        .block_device_mappings(device(None))
        .send()
        .await
        .expect("a device named without its snapshot is allowed");
    // A parameter the local AWS does not classify (a key pair by name) is refused, not allowed.
    local.expect_iam_errors(1).await;
    expect_refused(
        "RunInstances with a parameter the local AWS cannot place",
        "LocalAwsCannotAuthorize",
        launch_request(&function, &source, true)
            .key_name("someones-key")
            .send()
            .await,
    )
    .await;
    let decisions = local.iam_decisions(true).await;
    assert_eq!(count(&decisions, "Allowed"), 1, "{decisions:#}");
    assert_eq!(count(&decisions, "Error"), 1, "{decisions:#}");
    assert!(
        decisions["decisions"][1]["error"]
            .as_str()
            .unwrap()
            .contains("the parameter KeyName is not classified"),
        "{decisions:#}"
    );
    report::record(
        "iam-named-resources",
        SECTION,
        "A request names a resource of an optional type (a snapshot in RunInstances' block device mapping), or a parameter the local AWS cannot place",
        "the snapshot is evaluated and refused (UnauthorizedOperation); the unplaced parameter answers LocalAwsCannotAuthorize",
        None,
    );
}

/// IAM set-up as someone else (the local AWS's administrator), by IAM's query API.
async fn aws_sdk_iam_like(
    local: &LocalAws,
) -> impl Fn(&'static str, &[(&str, &str)]) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>
{
    let endpoint = local.endpoint.clone();
    move |action: &'static str, params: &[(&str, &str)]| {
        // The values here need no escaping but for the JSON braces of the trust policy.
        let mut form = format!("Action={action}&Version=2010-05-08");
        for (key, value) in params {
            form.push_str(&format!(
                "&{key}={}",
                value.replace('{', "%7B").replace('}', "%7D")
            ));
        }
        let endpoint = endpoint.clone();
        Box::pin(async move {
            let answer = reqwest::Client::new()
                .post(&endpoint)
                .header(
                    "Authorization",
                    "AWS4-HMAC-SHA256 Credential=local-admin/20261125/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=0",
                )
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(form)
                .send()
                .await
                .unwrap();
            assert!(
                answer.status().is_success(),
                "IAM {action}: {}",
                answer.text().await.unwrap()
            );
        })
    }
}
