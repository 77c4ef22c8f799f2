//! The product's EC2 and ECS requests, parameter for parameter, against what the generated
//! `aws-sdk-ec2` and `aws-sdk-ecs` send for the same call. The product encodes them by hand
//! (src/aws/ec2.rs: EC2's Query parameters; src/aws/ecs.rs: ECS's JSON); the SDK's serializers
//! are generated from the services' models, so they are the independent oracle for the names and
//! values (EC2 ignores or refuses a misspelled parameter:
//! <https://docs.aws.amazon.com/AWSEC2/latest/APIReference/Query-Requests.html>). Each SDK call
//! below is written as the product made it when it used the SDK (before 766d3f2 for EC2, 46cd95d
//! for ECS).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use aws_config::{BehaviorVersion, Region};
use aws_sdk_ec2::types as ec2t;
use aws_smithy_runtime_api::client::http::{HttpConnector, HttpConnectorFuture};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_types::body::SdkBody;
use common::ec2_mock::{Answer, Query, config_answered_by, document, ec2, on};
use ecs_ami::aws::{Aws, CopyRequest, ImageRequest, LaunchRequest};
use ecs_ami::spec::{BlockDevice, Ebs, LaunchPermissions, SourceFilter};

/// Each request's parameters, in the order sent.
type Seen = Arc<Mutex<Vec<BTreeMap<String, String>>>>;

/// Records each request's parameters and answers every call with an empty success document.
#[derive(Debug, Clone, Default)]
struct Recorder(Seen);

impl HttpConnector for Recorder {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let body = std::str::from_utf8(request.body().bytes().unwrap()).unwrap();
        let query = Query::parse(body);
        let action = query.action().to_owned();
        self.0.lock().unwrap().push(query.params().clone());
        HttpConnectorFuture::ready(Ok(HttpResponse::new(
            200.try_into().unwrap(),
            SdkBody::from(document(&action, "")),
        )))
    }
}

fn sdk() -> (aws_sdk_ec2::Client, Recorder) {
    let recorder = Recorder::default();
    let client = aws_sdk_ec2::Client::new(&config_answered_by(recorder.clone()));
    (client, recorder)
}

/// The product's client, answering `action` with `answer` and recording its parameters.
fn product(action: &str, answer: String) -> (Aws, Seen) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let rule = on(action)
        .when(move |q| {
            record.lock().unwrap().push(q.params().clone());
            true
        })
        .then(move |_| Answer::Xml(answer.clone()));
    let ssm = aws_sdk_ssm::Client::from_conf(
        aws_sdk_ssm::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .build(),
    );
    (Aws::from_clients(ec2(&[&rule]), ssm), seen)
}

fn the_only(seen: &Seen) -> BTreeMap<String, String> {
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1, "{seen:?}");
    seen[0].clone()
}

fn tags() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("ecs-ami:request-id".to_owned(), "req 1/2".to_owned()),
        ("team".to_owned(), "platform+ops".to_owned()),
    ])
}

fn sdk_tags(kind: ec2t::ResourceType) -> ec2t::TagSpecification {
    let tags = tags()
        .iter()
        .map(|(k, v)| ec2t::Tag::builder().key(k).value(v).build())
        .collect();
    ec2t::TagSpecification::builder()
        .resource_type(kind)
        .set_tags(Some(tags))
        .build()
}

fn devices() -> Vec<BlockDevice> {
    vec![
        BlockDevice {
            device_name: "/dev/xvda".into(),
            ebs: Ebs {
                volume_size: Some(30),
                volume_type: Some("gp3".into()),
                iops: Some(3000),
                throughput: Some(125),
                encrypted: Some(true),
                kms_key_id: Some("alias/builds".into()),
                delete_on_termination: Some(false),
            },
        },
        BlockDevice {
            device_name: "/dev/xvdb".into(),
            ebs: Ebs {
                volume_size: Some(20),
                volume_type: None,
                iops: None,
                throughput: None,
                encrypted: None,
                kms_key_id: None,
                delete_on_termination: None,
            },
        },
    ]
}

/// The mappings as the product built them with the SDK (`for_builder`: RunInstances).
fn sdk_mappings(for_builder: bool) -> Vec<ec2t::BlockDeviceMapping> {
    devices()
        .iter()
        .map(|device| {
            let ebs = &device.ebs;
            ec2t::BlockDeviceMapping::builder()
                .device_name(&device.device_name)
                .ebs(
                    ec2t::EbsBlockDevice::builder()
                        .set_volume_size(ebs.volume_size.map(|n| n as i32))
                        .set_volume_type(ebs.volume_type.as_deref().map(ec2t::VolumeType::from))
                        .set_iops(ebs.iops.map(|n| n as i32))
                        .set_throughput(ebs.throughput.map(|n| n as i32))
                        .set_encrypted(ebs.encrypted)
                        .set_kms_key_id(ebs.kms_key_id.clone().filter(|_| for_builder))
                        .delete_on_termination(
                            for_builder || ebs.delete_on_termination.unwrap_or(true),
                        )
                        .build(),
                )
                .build()
        })
        .collect()
}

#[tokio::test]
async fn run_instances_sends_what_the_sdk_sends() {
    let request = LaunchRequest {
        image_id: "ami-1".into(),
        instance_type: "t3.medium".into(),
        instance_profile: "arn:aws:iam::123456789012:instance-profile/builder".into(),
        subnet_id: Some("subnet-1".into()),
        security_group_ids: vec!["sg-1".into(), "sg-2".into()],
        block_devices: devices(),
        tags: tags(),
        client_token: "token-1".into(),
        user_data: Some("#!/bin/bash\necho hi\n".into()),
    };
    let (aws, seen) = product(
        "RunInstances",
        common::ec2_mock::launched("i-0123456789abcdef0"),
    );
    assert_eq!(
        aws.launch_builder(&request).await.unwrap(),
        "i-0123456789abcdef0"
    );
    let (client, recorder) = sdk();
    use base64::Engine;
    let _ = client
        .run_instances()
        .image_id("ami-1")
        .instance_type(ec2t::InstanceType::from("t3.medium"))
        .min_count(1)
        .max_count(1)
        .client_token("token-1")
        .iam_instance_profile(
            ec2t::IamInstanceProfileSpecification::builder()
                .arn("arn:aws:iam::123456789012:instance-profile/builder")
                .build(),
        )
        .subnet_id("subnet-1")
        .security_group_ids("sg-1")
        .security_group_ids("sg-2")
        .metadata_options(
            ec2t::InstanceMetadataOptionsRequest::builder()
                .http_endpoint(ec2t::InstanceMetadataEndpointState::Enabled)
                .http_tokens(ec2t::HttpTokensState::Required)
                .http_put_response_hop_limit(2)
                .build(),
        )
        .instance_initiated_shutdown_behavior(ec2t::ShutdownBehavior::Terminate)
        .user_data(base64::engine::general_purpose::STANDARD.encode("#!/bin/bash\necho hi\n"))
        .set_block_device_mappings(Some(sdk_mappings(true)))
        .tag_specifications(sdk_tags(ec2t::ResourceType::Instance))
        .tag_specifications(sdk_tags(ec2t::ResourceType::Volume))
        .send()
        .await;
    assert_eq!(the_only(&seen), recorder.0.lock().unwrap()[0]);
}

#[tokio::test]
async fn create_and_copy_image_send_what_the_sdk_sends() {
    let request = ImageRequest {
        instance_id: "i-1".into(),
        name: "ecs-ami 2026-11-26".into(),
        description: Some("built & tested".into()),
        block_devices: devices(),
        tags: tags(),
    };
    let (aws, seen) = product(
        "CreateImage",
        common::ec2_mock::image_id("CreateImage", "ami-2"),
    );
    assert_eq!(aws.create_image(&request).await.unwrap(), "ami-2");
    let (client, recorder) = sdk();
    let _ = client
        .create_image()
        .instance_id("i-1")
        .name("ecs-ami 2026-11-26")
        .description("built & tested")
        .set_block_device_mappings(Some(sdk_mappings(false)))
        .tag_specifications(sdk_tags(ec2t::ResourceType::Image))
        .tag_specifications(sdk_tags(ec2t::ResourceType::Snapshot))
        .send()
        .await;
    assert_eq!(the_only(&seen), recorder.0.lock().unwrap()[0]);

    let copy = CopyRequest {
        source_image: "ami-2".into(),
        source_region: "us-east-1".into(),
        name: "ecs-ami copy".into(),
        description: None,
        kms_key_id: Some("arn:aws:kms:eu-west-1:123456789012:key/k".into()),
        tags: tags(),
        client_token: "copy-token".into(),
    };
    let (aws, seen) = product(
        "CopyImage",
        common::ec2_mock::image_id("CopyImage", "ami-3"),
    );
    assert_eq!(aws.copy_image(&copy).await.unwrap(), "ami-3");
    let (client, recorder) = sdk();
    let _ = client
        .copy_image()
        .source_image_id("ami-2")
        .source_region("us-east-1")
        .name("ecs-ami copy")
        .encrypted(true)
        .kms_key_id("arn:aws:kms:eu-west-1:123456789012:key/k")
        .client_token("copy-token")
        .tag_specifications(sdk_tags(ec2t::ResourceType::Image))
        .tag_specifications(sdk_tags(ec2t::ResourceType::Snapshot))
        .send()
        .await;
    assert_eq!(the_only(&seen), recorder.0.lock().unwrap()[0]);
}

#[tokio::test]
async fn attribute_and_tag_changes_send_what_the_sdk_sends() {
    let set =
        |items: &[&str]| -> BTreeSet<String> { items.iter().map(|s| s.to_string()).collect() };
    let add = LaunchPermissions {
        user_ids: set(&["111111111111", "222222222222"]),
        organization_arns: set(&["arn:aws:organizations::123456789012:organization/o-1"]),
        organizational_unit_arns: BTreeSet::new(),
    };
    let remove = LaunchPermissions {
        user_ids: BTreeSet::new(),
        organization_arns: BTreeSet::new(),
        organizational_unit_arns: set(&["arn:aws:organizations::123456789012:ou/o-1/ou-1"]),
    };
    let (aws, seen) = product("ModifyImageAttribute", document("ModifyImageAttribute", ""));
    aws.change_launch_permissions("ami-1", &add, &remove)
        .await
        .unwrap();
    aws.require_imds_v2("ami-1").await.unwrap();
    aws.set_image_description("ami-1", "a b&c").await.unwrap();
    let (client, recorder) = sdk();
    let permission =
        |f: fn(
            ec2t::builders::LaunchPermissionBuilder,
            &str,
        ) -> ec2t::builders::LaunchPermissionBuilder,
         value: &str| { f(ec2t::LaunchPermission::builder(), value).build() };
    let _ = client
        .modify_image_attribute()
        .image_id("ami-1")
        .launch_permission(
            ec2t::LaunchPermissionModifications::builder()
                .add(permission(|b, v| b.user_id(v), "111111111111"))
                .add(permission(|b, v| b.user_id(v), "222222222222"))
                .add(permission(
                    |b, v| b.organization_arn(v),
                    "arn:aws:organizations::123456789012:organization/o-1",
                ))
                .remove(permission(
                    |b, v| b.organizational_unit_arn(v),
                    "arn:aws:organizations::123456789012:ou/o-1/ou-1",
                ))
                .build(),
        )
        .send()
        .await;
    let _ = client
        .modify_image_attribute()
        .image_id("ami-1")
        .imds_support(ec2t::AttributeValue::builder().value("v2.0").build())
        .send()
        .await;
    let _ = client
        .modify_image_attribute()
        .image_id("ami-1")
        .description(ec2t::AttributeValue::builder().value("a b&c").build())
        .send()
        .await;
    assert_eq!(*seen.lock().unwrap(), *recorder.0.lock().unwrap());

    let users = set(&["111111111111"]);
    let (aws, seen) = product(
        "ModifySnapshotAttribute",
        document("ModifySnapshotAttribute", ""),
    );
    aws.change_snapshot_volume_users("snap-1", false, &users)
        .await
        .unwrap();
    let (client, recorder) = sdk();
    let _ = client
        .modify_snapshot_attribute()
        .snapshot_id("snap-1")
        .attribute(ec2t::SnapshotAttributeName::CreateVolumePermission)
        .operation_type(ec2t::OperationType::Remove)
        .user_ids("111111111111")
        .send()
        .await;
    assert_eq!(the_only(&seen), recorder.0.lock().unwrap()[0]);

    let at = aws_smithy_types::DateTime::from_secs(1_800_000_000);
    let (aws, seen) = product(
        "EnableImageDeprecation",
        document("EnableImageDeprecation", "<return>true</return>"),
    );
    aws.set_image_deprecation("ami-1", Some(at)).await.unwrap();
    let (client, recorder) = sdk();
    let _ = client
        .enable_image_deprecation()
        .image_id("ami-1")
        .deprecate_at(at)
        .send()
        .await;
    assert_eq!(the_only(&seen), recorder.0.lock().unwrap()[0]);

    let ids = vec!["ami-1".to_owned(), "snap-1".to_owned()];
    let (aws, seen) = product("DeleteTags", document("DeleteTags", ""));
    aws.untag(&ids, &["ecs-ami:tested-at".to_owned()])
        .await
        .unwrap();
    let (client, recorder) = sdk();
    let _ = client
        .delete_tags()
        .set_resources(Some(ids.clone()))
        .tags(ec2t::Tag::builder().key("ecs-ami:tested-at").build())
        .send()
        .await;
    assert_eq!(the_only(&seen), recorder.0.lock().unwrap()[0]);
}

#[tokio::test]
async fn a_source_filter_search_sends_what_the_sdk_sends() {
    let filter = SourceFilter {
        owners: vec!["amazon".into(), "123456789012".into()],
        filters: BTreeMap::from([
            ("architecture".to_owned(), vec!["arm64".to_owned()]),
            (
                "name".to_owned(),
                vec!["al2023-ami-ecs-hvm-*".to_owned(), "other*".to_owned()],
            ),
        ]),
        include_deprecated: false,
    };
    let (aws, seen) = product("DescribeImages", document("DescribeImages", "<imagesSet/>"));
    assert_eq!(
        aws.newest_image(&filter, &BTreeMap::new()).await.unwrap(),
        None
    );
    let (client, recorder) = sdk();
    let mut filters: Vec<ec2t::Filter> = filter
        .filters
        .iter()
        .map(|(name, values)| {
            ec2t::Filter::builder()
                .name(name)
                .set_values(Some(values.clone()))
                .build()
        })
        .collect();
    filters.push(
        ec2t::Filter::builder()
            .name("state")
            .values("available")
            .build(),
    );
    let _ = client
        .describe_images()
        .set_owners(Some(filter.owners.clone()))
        .set_filters(Some(filters))
        .include_deprecated(false)
        .max_results(1000)
        .send()
        .await;
    assert_eq!(the_only(&seen), recorder.0.lock().unwrap()[0]);
}

/// One ECS request: its URI (the endpoint), its SigV4 credential scope (region and signing
/// name), its target and its JSON body.
type EcsRequest = (String, String, String, serde_json::Value);

/// Records each ECS request, and answers as ECS would for one joined instance.
#[derive(Debug, Clone, Default)]
struct EcsRecorder(Arc<Mutex<Vec<EcsRequest>>>);

impl HttpConnector for EcsRecorder {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let target = request
            .headers()
            .get("x-amz-target")
            .unwrap_or_default()
            .to_owned();
        assert_eq!(
            request.headers().get("content-type"),
            Some("application/x-amz-json-1.1")
        );
        let body: serde_json::Value =
            serde_json::from_slice(request.body().bytes().unwrap()).unwrap();
        // `Credential=KEY/DATE/REGION/SERVICE/aws4_request`: the scope without key and date.
        let authorization = request.headers().get("authorization").unwrap_or_default();
        let scope = authorization
            .split("Credential=")
            .nth(1)
            .and_then(|c| c.split(',').next())
            .map(|c| c.splitn(3, '/').nth(2).unwrap_or_default().to_owned())
            .unwrap_or_default();
        assert_eq!(scope, "us-east-1/ecs/aws4_request");
        self.0
            .lock()
            .unwrap()
            .push((request.uri().to_owned(), scope, target.clone(), body));
        let answer = if target.ends_with(".ListContainerInstances") {
            serde_json::json!({"containerInstanceArns": ["arn:aws:ecs:us-east-1:123456789012:container-instance/c/1"]})
        } else {
            serde_json::json!({"containerInstances": [{
                "containerInstanceArn": "arn:aws:ecs:us-east-1:123456789012:container-instance/c/1",
                "ec2InstanceId": "i-1", "status": "ACTIVE", "agentConnected": true}], "failures": []})
        };
        HttpConnectorFuture::ready(Ok(HttpResponse::new(
            200.try_into().unwrap(),
            SdkBody::from(answer.to_string()),
        )))
    }
}

/// The product's two ECS calls (src/aws/ecs.rs, ECS's JSON API) against aws-sdk-ecs's for the
/// same inputs: the same X-Amz-Target and the same JSON.
#[tokio::test]
async fn ecs_calls_send_what_the_sdk_sends() {
    let product = EcsRecorder::default();
    let aws = Aws::from_config(&config_answered_by(product.clone()));
    let found = aws
        .container_instance("c", "i-1")
        .await
        .unwrap()
        .expect("the instance joined");
    assert_eq!(found.status, "ACTIVE");
    assert!(found.agent_connected);
    let sdk = EcsRecorder::default();
    let client = aws_sdk_ecs::Client::new(&config_answered_by(sdk.clone()));
    let _ = client
        .list_container_instances()
        .cluster("c")
        .filter("ec2InstanceId == i-1")
        .send()
        .await;
    let _ = client
        .describe_container_instances()
        .cluster("c")
        .container_instances("arn:aws:ecs:us-east-1:123456789012:container-instance/c/1")
        .send()
        .await;
    assert_eq!(*product.0.lock().unwrap(), *sdk.0.lock().unwrap());
    assert_eq!(product.0.lock().unwrap().len(), 2);
}
