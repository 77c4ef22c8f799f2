//! `ContainerImages` on the local AWS: images pushed by the test (real OCI manifests and blobs,
//! small ones, one of them a multi-architecture index) to the local ECR and to a simulated public
//! registry, and a task definition naming another; the function resolves each to a digest before
//! launching, the builder pulls them by digest with its own role (the local AWS authorizes its
//! ECR calls against template.yaml's BuilderRole), and the test instance inspects them offline.
//!
//! BatchGetImage: https://docs.aws.amazon.com/AmazonECR/latest/APIReference/API_BatchGetImage.html
//! GetAuthorizationToken: https://docs.aws.amazon.com/AmazonECR/latest/APIReference/API_GetAuthorizationToken.html
//! DescribeTaskDefinition: https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_DescribeTaskDefinition.html
//! pulling from ECR (GetAuthorizationToken, BatchGetImage, GetDownloadUrlForLayer):
//! https://docs.aws.amazon.com/AmazonECR/latest/userguide/image-pull.html
//! the ECR actions' resource types:
//! https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonelasticcontainerregistry.html
//! the OCI distribution API: https://github.com/opencontainers/distribution-spec/blob/main/spec.md

use std::collections::BTreeMap;

use base64::Engine as _;
use ecs_ami::aws::{Aws, Registries};
use serde_json::{Value, json};

use crate::common;
use common::audit::{Audit, tags_of};
use common::report;
use common::{LocalAws, event, invoke, one_step_properties, stack_id, update_from};

const ECR: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";
const PUBLIC: &str = "public.ecr.aws";
/// The deployment's parameters for these tests: every repository of the account, and task
/// definitions.
const REPOSITORIES: &str = "arn:aws:ecr:us-east-1:123456789012:repository/*";

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", ecs_ami::hash::sha256_hex_bytes(bytes))
}

/// An image as pushed: its manifest's text and digest, and the blobs it names.
struct Pushed {
    manifest: String,
    media_type: &'static str,
    digest: String,
    blobs: BTreeMap<String, Vec<u8>>,
}

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// A one-layer OCI image for `architecture`, whose layer holds `content`; `claimed_layer_size`
/// replaces the layer's size in the manifest (an image too large for a volume, without pushing
/// gigabytes).
fn image(architecture: &str, content: &str, claimed_layer_size: Option<u64>) -> Pushed {
    let layer = format!("layer of {content}").into_bytes();
    let config = json!({
        "architecture": architecture,
        "os": "linux",
        "config": {"Cmd": ["/bin/true"]},
        "rootfs": {"type": "layers", "diff_ids": [sha256(&layer)]}
    })
    .to_string()
    .into_bytes();
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": sha256(&layer), "size": claimed_layer_size.unwrap_or(layer.len() as u64)}]
    })
    .to_string();
    Pushed {
        digest: sha256(manifest.as_bytes()),
        blobs: BTreeMap::from([(sha256(&config), config), (sha256(&layer), layer)]),
        manifest,
        media_type: OCI_MANIFEST,
    }
}

/// A multi-architecture index of `images` (each already pushed by digest).
fn index(images: &[(&str, &Pushed)]) -> Pushed {
    let manifests: Vec<Value> = images
        .iter()
        .map(|(architecture, image)| {
            json!({"mediaType": OCI_MANIFEST, "digest": image.digest, "size": image.manifest.len(),
                   "platform": {"os": "linux", "architecture": architecture}})
        })
        .collect();
    let manifest =
        json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}).to_string();
    Pushed {
        digest: sha256(manifest.as_bytes()),
        blobs: BTreeMap::new(),
        manifest,
        media_type: OCI_INDEX,
    }
}

async fn push(
    local: &LocalAws,
    registry: &str,
    repository: &str,
    tag: Option<&str>,
    pushed: &Pushed,
) {
    let blobs: BTreeMap<&String, String> = pushed
        .blobs
        .iter()
        .map(|(digest, bytes)| {
            (
                digest,
                base64::engine::general_purpose::STANDARD.encode(bytes),
            )
        })
        .collect();
    let answer = reqwest::Client::new()
        .post(format!("{}/ecs-ami-local/registry/push", local.endpoint))
        .body(
            json!({"registry": registry, "repository": repository, "tag": tag,
                   "manifest": pushed.manifest, "mediaType": pushed.media_type, "blobs": blobs})
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    let status = answer.status();
    let body: Value = serde_json::from_slice(&answer.bytes().await.unwrap()).unwrap_or_default();
    assert!(status.is_success(), "push refused: {status} {body}");
    assert_eq!(
        body["digest"],
        json!(pushed.digest),
        "the registry's digest is the manifest's SHA-256"
    );
}

async fn refuse(local: &LocalAws, registry: &str, status: Option<u16>) {
    let answer = reqwest::Client::new()
        .post(format!("{}/ecs-ami-local/registry/refuse", local.endpoint))
        .body(json!({"registry": registry, "status": status}).to_string())
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_success());
}

/// The function, with registries other than ECR reached through the local AWS.
async fn function(local: &LocalAws) -> Aws {
    local
        .aws()
        .await
        .with_registries(Registries::with_endpoint(Some(format!(
            "{}/ecs-ami-local/registry",
            local.endpoint
        ))))
}

/// The deployment's ContainerImageRepositories and ReadTaskDefinitions, for the function's role
/// and BuilderRole alike.
async fn deploy_with_images(local: &LocalAws) {
    let statements = local
        .set_role(json!({"parameters": {"ContainerImageRepositories": REPOSITORIES, "ReadTaskDefinitions": "true"}}))
        .await;
    assert!(
        statements.contains(&"ResolveContainerImages".to_owned()),
        "{statements:?}"
    );
    assert!(
        statements.contains(&"ReadTaskDefinitions".to_owned()),
        "{statements:?}"
    );
}

async fn register_task_definition(local: &LocalAws, family: &str, images: &[&str]) {
    let ecs = aws_sdk_ecs::Client::new(&local.sdk_config().await);
    let mut request = ecs.register_task_definition().family(family);
    for (i, image) in images.iter().enumerate() {
        request = request.container_definitions(
            aws_sdk_ecs::types::ContainerDefinition::builder()
                .name(format!("c{i}"))
                .image(*image)
                .memory(128)
                .build(),
        );
    }
    request.send().await.unwrap();
}

fn runs(calls: &Value, operation: &str) -> u64 {
    calls["by_operation"][operation].as_u64().unwrap_or(0)
}

/// `docker image inspect` of every image by the digest it was pulled by (`NAME@DIGEST`: an
/// index's for a multi-platform image) and by the reference as written, on the test instance (the
/// image's docker never fetches on inspect); no registry credential left; each tagged image
/// listed, as Docker lists it, for the agent's untracked-image cleanup.
fn inspect_step(images: &[(&str, String, Option<&str>)]) -> Value {
    let mut commands: Vec<String> = Vec::new();
    for (reference, by_digest, listed) in images {
        commands.push(format!(
            "docker image inspect '{by_digest}' '{reference}' > /dev/null"
        ));
        if let Some(listed) = listed {
            commands.push(format!(
                "grep -q '^ECS_EXCLUDE_UNTRACKED_IMAGE=.*{listed}' /etc/ecs/ecs.config"
            ));
        }
    }
    commands.push("! grep -qs '\"auth\"' /root/.docker/config.json".into());
    json!({"Steps": [{"Name": "images are there", "Commands": commands}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_are_baked_by_digest_rebuilt_on_a_new_push_and_kept_on_rollback() {
    let local = LocalAws::start().await;
    let aws = function(&local).await;
    deploy_with_images(&local).await;
    let stack = "baked";
    let audit = Audit {
        ec2: local.ec2().await,
        stack_id: stack_id(stack),
    };
    let app = image("amd64", "app 1.4", None);
    push(&local, ECR, "app", Some("1.4"), &app).await;
    let worker = image("amd64", "worker 2", None);
    push(&local, ECR, "worker", Some("2"), &worker).await;
    // nginx for two platforms behind one index: the x86_64 builder gets the amd64 manifest.
    let (nginx_amd64, nginx_arm64) = (
        image("amd64", "nginx amd64", None),
        image("arm64", "nginx arm64", None),
    );
    push(&local, PUBLIC, "docker/library/nginx", None, &nginx_amd64).await;
    push(&local, PUBLIC, "docker/library/nginx", None, &nginx_arm64).await;
    let nginx = index(&[("amd64", &nginx_amd64), ("arm64", &nginx_arm64)]);
    push(&local, PUBLIC, "docker/library/nginx", Some("1.27"), &nginx).await;
    register_task_definition(&local, "web", &[&format!("{ECR}/worker:2")]).await;

    // And one named by digest alone, untagged on the AMI.
    let tool = image("amd64", "tool 0.1", None);
    push(&local, ECR, "tool", Some("0.1"), &tool).await;

    let app_ref = format!("{ECR}/app:1.4");
    let nginx_ref = format!("{PUBLIC}/docker/library/nginx:1.27");
    let tool_ref = format!("{ECR}/tool@{}", tool.digest);
    let worker_ref = format!("{ECR}/worker:2");
    let first = one_step_properties(json!({
        "ContainerImages": {"Images": [&app_ref, &nginx_ref, &tool_ref], "TaskDefinitions": ["web"]},
        "Tests": inspect_step(&[
            (&app_ref, format!("{ECR}/app@{}", app.digest), Some(&app_ref)),
            (&nginx_ref, format!("{PUBLIC}/docker/library/nginx@{}", nginx.digest), Some(&nginx_ref)),
            (&tool_ref, tool_ref.clone(), None),
            (&worker_ref, format!("{ECR}/worker@{}", worker.digest), Some(&worker_ref)),
        ]),
    }));
    local.take_calls().await;
    let created = invoke(&aws, event("Create", stack, "req-1", None, first.clone())).await;
    assert_eq!(created["Status"], "SUCCESS", "{created}");
    let ami = created["PhysicalResourceId"].as_str().unwrap().to_owned();
    let listed: Value = serde_json::from_str(
        created["Data"]["ContainerImages"]
            .as_str()
            .expect("the attribute"),
    )
    .unwrap();
    assert_eq!(
        listed,
        json!([
            {"Reference": app_ref, "Digest": app.digest},
            {"Reference": nginx_ref, "Digest": nginx_amd64.digest},
            {"Reference": tool_ref, "Digest": tool.digest},
            {"Reference": worker_ref, "Digest": worker.digest},
        ]),
        "each reference with its digest, the index resolved to the builder's platform"
    );
    let calls = local.take_calls().await;
    println!("calls of a Create with three images: {calls}");
    assert_eq!(
        runs(&calls, "AmazonEC2ContainerRegistry_V20150921.BatchGetImage"),
        3,
        "{calls}"
    );
    assert_eq!(
        runs(
            &calls,
            "AmazonEC2ContainerServiceV20141113.DescribeTaskDefinition"
        ),
        1,
        "{calls}"
    );
    let tags = tags_of(audit.image(&ami).await.unwrap().tags());
    assert_eq!(
        tags.get("ecs-ami:container-image:01"),
        Some(&format!("{app_ref}@{}", app.digest))
    );
    // A reference by digest keeps its own digest: the platform's follows it.
    assert_eq!(
        tags.get("ecs-ami:container-image:03"),
        Some(&format!("{tool_ref}@{}", tool.digest))
    );
    assert_eq!(
        tags.get("ecs-ami:container-image:04"),
        Some(&format!("{worker_ref}@{}", worker.digest))
    );
    // The builder pulled with BuilderRole's own credentials, authorized by the IAM engine.
    let decisions = local.iam_decisions(false).await.to_string();
    assert!(
        decisions.contains("ecr:GetAuthorizationToken"),
        "{decisions}"
    );
    assert!(
        decisions.contains("ecr:GetDownloadUrlForLayer"),
        "{decisions}"
    );
    audit.assert_only(&[&ami]).await;

    // A new image pushed under app:1.4: the next Update that resolves builds a new AMI with it.
    let app_new = image("amd64", "app 1.4, rebuilt", None);
    push(&local, ECR, "app", Some("1.4"), &app_new).await;
    let mut second = first.clone();
    second["Tags"] = json!({"team": "platform"});
    second["Tests"] = json!({"Steps": [{"Name": "tagged", "Commands": [format!("docker image inspect '{app_ref}' > /dev/null")]}]});
    let rebuilt = invoke(&aws, update_from(stack, "req-2", &ami, &second, &first)).await;
    assert_eq!(rebuilt["Status"], "SUCCESS", "{rebuilt}");
    let second_ami = rebuilt["PhysicalResourceId"].as_str().unwrap().to_owned();
    assert_ne!(second_ami, ami, "a new push under the tag rebuilds");
    assert!(
        rebuilt["Data"]["ContainerImages"]
            .as_str()
            .unwrap()
            .contains(&app_new.digest)
    );
    // CloudFormation's cleanup after the replacement: the first AMI is deleted.
    let deleted = invoke(
        &aws,
        event("Delete", stack, "req-del-1", Some(&ami), first.clone()),
    )
    .await;
    assert_eq!(deleted["Status"], "SUCCESS", "{deleted}");

    // Another push, then an Update that changes a step (a new AMI, with the newest image), and a
    // later resource fails: CloudFormation rolls back to the second properties and gets the
    // newest AMI built from them, with the image it was built with, without a build nor a
    // registry read.
    let app_newer = image("amd64", "app 1.4, rebuilt again", None);
    push(&local, ECR, "app", Some("1.4"), &app_newer).await;
    let mut third = second.clone();
    third["Steps"] = json!([{"Name": "hello", "Commands": ["echo hello again"]}]);
    let changed = invoke(
        &aws,
        update_from(stack, "req-3", &second_ami, &third, &second),
    )
    .await;
    assert_eq!(changed["Status"], "SUCCESS", "{changed}");
    let third_ami = changed["PhysicalResourceId"].as_str().unwrap().to_owned();
    assert!(
        changed["Data"]["ContainerImages"]
            .as_str()
            .unwrap()
            .contains(&app_newer.digest)
    );
    local.take_calls().await;
    let rolled_back = invoke(
        &aws,
        update_from(stack, "req-rollback", &third_ami, &second, &third),
    )
    .await;
    assert_eq!(rolled_back["Status"], "SUCCESS", "{rolled_back}");
    assert_eq!(rolled_back["PhysicalResourceId"], json!(second_ami));
    assert!(
        rolled_back["Data"]["ContainerImages"]
            .as_str()
            .unwrap()
            .contains(&app_new.digest)
    );
    let calls = local.take_calls().await;
    assert_eq!(runs(&calls, "EC2.RunInstances"), 0, "{calls}");
    assert_eq!(
        runs(&calls, "AmazonEC2ContainerRegistry_V20150921.BatchGetImage"),
        0,
        "{calls}"
    );

    // CloudFormation deletes the AMI the rollback left behind, then the stack's (the retained
    // one is the user's to remove: here, as a Delete would).
    for (request, id, properties) in [
        ("req-del-1", &ami, &first),
        ("req-del-2", &third_ami, &third),
        ("req-del-3", &second_ami, &second),
    ] {
        let deleted = invoke(
            &aws,
            event("Delete", stack, request, Some(id), properties.clone()),
        )
        .await;
        assert_eq!(deleted["Status"], "SUCCESS", "{deleted}");
    }
    report::record_clean(
        "container-images",
        "Update",
        "ContainerImages: a Create baking an ECR image by tag, a public multi-architecture index and a task definition's ECR image; a push under the same tag and an Update changing Tags; another push and an Update changing a step; a rollback to the second properties; Delete of each AMI",
        "SUCCESS with each reference resolved to its digest before launch (the index to its linux/amd64 manifest), pulled by the builder with BuilderRole's own token (ecr:GetAuthorizationToken, ecr:BatchGetImage, ecr:GetDownloadUrlForLayer on the IAM engine), inspected by digest and by tag on the test instance without the network, no credential left, listed in ECS_EXCLUDE_UNTRACKED_IMAGE, the ContainerImages attribute and one tag per image; the push rebuilds at the next resolving Update; the rollback returns the newest AMI of those properties with its image, without a launch or a registry read",
        &audit.leftovers(&[]).await,
    );
    audit.assert_only(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_that_cannot_be_baked_fail_with_the_reference_named_and_nothing_left() {
    let local = LocalAws::start().await;
    let aws = function(&local).await;
    deploy_with_images(&local).await;
    let stack = "unbakeable";
    let audit = Audit {
        ec2: local.ec2().await,
        stack_id: stack_id(stack),
    };
    let app = image("amd64", "app", None);
    push(&local, ECR, "app", Some("1.4"), &app).await;
    let huge = image("amd64", "huge", Some(40 * 1024 * 1024 * 1024));
    push(&local, ECR, "huge", Some("1"), &huge).await;
    let quay = image("amd64", "quay", None);
    push(&local, "quay.io", "team/tool", Some("3"), &quay).await;
    refuse(&local, "quay.io", Some(403)).await;
    let arm_only = image("arm64", "arm only", None);
    push(&local, PUBLIC, "team/arm", None, &arm_only).await;
    push(
        &local,
        PUBLIC,
        "team/arm",
        Some("1"),
        &index(&[("arm64", &arm_only)]),
    )
    .await;

    // Each before anything is launched, the property and the reference named.
    for (n, reference, says) in [
        (
            1,
            format!("{ECR}/app:9.9"),
            "the tag 9.9 does not exist".to_owned(),
        ),
        (
            2,
            format!("{ECR}/missing:1"),
            "ECR has no repository missing".to_owned(),
        ),
        (
            3,
            "quay.io/team/tool:3".to_owned(),
            "quay.io refused: the registry answered HTTP 403".to_owned(),
        ),
        (
            4,
            format!("{PUBLIC}/team/arm:1"),
            "has no linux/amd64 image (its index lists linux/arm64)".to_owned(),
        ),
        (
            5,
            format!("{ECR}/huge:1"),
            "root volume Docker keeps them on".to_owned(),
        ),
    ] {
        let properties = one_step_properties(json!({"ContainerImages": {"Images": [reference]}}));
        local.take_calls().await;
        let failed = invoke(
            &aws,
            event("Create", stack, &format!("req-{n}"), None, properties),
        )
        .await;
        assert_eq!(failed["Status"], "FAILED", "{failed}");
        let reason = failed["Reason"].as_str().unwrap();
        assert!(
            reason.contains(&reference) && reason.contains(&says),
            "{reference}: {reason}"
        );
        let calls = local.take_calls().await;
        assert_eq!(
            runs(&calls, "EC2.RunInstances"),
            0,
            "{reference}: nothing launched: {calls}"
        );
    }
    refuse(&local, "quay.io", None).await;
    // A task definition ECS does not know.
    let properties =
        one_step_properties(json!({"ContainerImages": {"TaskDefinitions": ["missing-family"]}}));
    local.take_calls().await;
    let failed = invoke(&aws, event("Create", stack, "req-td", None, properties)).await;
    let reason = failed["Reason"].as_str().unwrap();
    assert!(
        reason.contains(
            "ContainerImages.TaskDefinitions[0]: missing-family: ECS refused it (ClientException"
        ),
        "{reason}"
    );
    assert_eq!(runs(&local.take_calls().await, "EC2.RunInstances"), 0);

    // The function's role without its statements for images: each read is refused by IAM, and
    // the Reason says which deployment parameter grants it.
    local
        .set_role(json!({"parameters": {"ContainerImageRepositories": REPOSITORIES, "ReadTaskDefinitions": "true"}, "without": ["ResolveContainerImages", "ReadTaskDefinitions"]}))
        .await;
    for (request, images, says) in [
        (
            "req-role-ecr",
            json!({"Images": [format!("{ECR}/app:1.4")]}),
            "the function's role may not ecr:BatchGetImage it: add the repository to the deployment's ContainerImageRepositories parameter",
        ),
        (
            "req-role-ecs",
            json!({"TaskDefinitions": ["web"]}),
            "the function's role may not ecs:DescribeTaskDefinition it: set the deployment's ReadTaskDefinitions parameter to true",
        ),
    ] {
        let properties = one_step_properties(json!({ "ContainerImages": images }));
        local.take_calls().await;
        let failed = invoke(&aws, event("Create", stack, request, None, properties)).await;
        let reason = failed["Reason"].as_str().unwrap();
        assert!(reason.contains(says), "{reason}");
        assert_eq!(runs(&local.take_calls().await, "EC2.RunInstances"), 0);
    }

    // A builder role without ECR access: the function may read the manifest, the builder may not
    // pull it. The pull step fails on the builder, the Reason names the image, nothing is left.
    local
        .set_role(json!({"parameters": {"ContainerImageRepositories": REPOSITORIES}, "without": ["PullContainerImages"]}))
        .await;
    let properties =
        one_step_properties(json!({"ContainerImages": {"Images": [format!("{ECR}/app:1.4")]}}));
    let failed = invoke(
        &aws,
        event("Create", stack, "req-builder-role", None, properties),
    )
    .await;
    assert_eq!(failed["Status"], "FAILED", "{failed}");
    let reason = failed["Reason"].as_str().unwrap();
    assert!(
        reason.contains("step \"ecs-ami-container-images\""),
        "{reason}"
    );
    assert!(
        reason.contains(&format!("could not pull {ECR}/app:1.4")),
        "{reason}"
    );
    audit.assert_only(&[]).await;
    report::record_clean(
        "container-images-refused",
        "Unusable inputs found at build time",
        "ContainerImages: a tag that does not exist, an ECR repository that does not exist, a registry answering 403, an index without the builder's platform, an image too large for the root volume, a task definition ECS does not know; the function's role without ResolveContainerImages or ReadTaskDefinitions; then a builder role without ECR pull permissions (template.yaml's PullContainerImages removed)",
        "each FAILED before anything is launched, naming ContainerImages.Images[0] (or TaskDefinitions[0]), the reference and the cause (no RunInstances); the last FAILED in the step ecs-ami-container-images, naming the image that could not be pulled, the builder terminated",
        &audit.leftovers(&[]).await,
    );
}
