//! `Regions` on the local AWS, through the function's role: the AMI is copied to other regions
//! (each region its own EC2, chosen by the request's signature), each copy tagged and distributed
//! like the AMI; an Update that changes only the regions adds and removes copies of the same AMI
//! without launching anything; Delete removes every copy; a copy that fails, or that IAM
//! refuses, fails the build and leaves nothing in any region.
//!
//! CopyImage: https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_CopyImage.html
//! Its permissions (the source image since October 2024, the new image and snapshots, tags on
//! create): https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/copy-ami-permissions.html and
//! https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonec2.html

use crate::common;

use aws_sdk_ec2::types::ImageAttributeName;
use common::audit::{Audit, tags_of};
use common::report;
use common::{
    LocalAws, assert_launched_nothing, event, invoke, invoke_with, one_step_properties, stack_id,
    update_from,
};
use ecs_ami::handler::Limits;
use serde_json::{Value, json};

const WEST: &str = "us-west-2";
const EUROPE: &str = "eu-west-1";

async fn audits(local: &LocalAws, stack: &str) -> Vec<(String, Audit)> {
    let mut audits = Vec::new();
    for region in ["us-east-1", WEST, EUROPE] {
        audits.push((
            region.to_owned(),
            Audit {
                ec2: local.ec2_in(region).await,
                stack_id: stack_id(stack),
            },
        ));
    }
    audits
}

/// The audit of `region`'s EC2.
fn in_region<'a>(audits: &'a [(String, Audit)], region: &str) -> &'a Audit {
    &audits
        .iter()
        .find(|(r, _)| r == region)
        .expect("an audited region")
        .1
}

/// What is left of the stack in every region, but `keep`.
async fn left_anywhere(audits: &[(String, Audit)], keep: &[&str]) -> Vec<String> {
    let mut left = Vec::new();
    for (region, audit) in audits {
        let mut found = audit.leftovers(keep).await;
        // A copy's snapshots name the image they copy, not the copy (see engine::copies).
        let mut kept_snapshots = Vec::new();
        for snapshot in found.iter().filter(|r| r.starts_with("snap-")) {
            let tags = audit.snapshot_tags(snapshot).await;
            if tags
                .get("ecs-ami:copy-of")
                .is_some_and(|home| keep.contains(&home.as_str()))
            {
                kept_snapshots.push(snapshot.clone());
            }
        }
        found.retain(|r| !kept_snapshots.contains(r) && !keep.contains(&r.as_str()));
        left.extend(found.into_iter().map(|r| format!("{r} in {region}")));
    }
    left
}

/// A parameter's value in a region, as the administrator reads it.
async fn parameter(local: &LocalAws, region: &str, name: &str) -> Option<String> {
    let config = aws_sdk_ssm::config::Builder::from(&local.sdk_config().await)
        .region(aws_sdk_ssm::config::Region::new(region.to_owned()))
        .build();
    let ssm = aws_sdk_ssm::Client::from_conf(config);
    match ssm.get_parameter().name(name).send().await {
        Ok(out) => out.parameter().and_then(|p| p.value()).map(str::to_owned),
        Err(error) => {
            let text = format!("{error:?}");
            assert!(text.contains("ParameterNotFound"), "{text}");
            None
        }
    }
}

async fn allow_copies_to(local: &LocalAws, regions: &str) {
    let statements = local
        .set_role(json!({"parameters": {"AmiCopyRegions": regions}}))
        .await;
    assert!(statements.contains(&"CopyOnlyTaggedImages".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_follow_the_ami_through_create_updates_and_delete() {
    let local = LocalAws::start().await;
    allow_copies_to(&local, &format!("{WEST},{EUROPE}")).await;
    let aws = local.aws().await;
    let stack = "regions";
    let audits = audits(&local, stack).await;
    let distribution = |regions: Value, team: &str, parameters: Value| {
        one_step_properties(json!({
            "Regions": regions,
            "SsmParameters": parameters,
            "Tags": {"team": team},
            "LaunchPermissions": {"UserIds": ["111122223333"]},
            "DeprecateAfterDays": 30,
            "ImdsSupport": "v2.0",
        }))
    };
    let first = distribution(
        json!([{"Region": WEST}]),
        "platform",
        json!([{"Name": "/ecs-ami/images/base"}, {"Name": "/ecs-ami/images/base", "Region": WEST}]),
    );
    // Every state handed over to a fresh invocation: the copy and its wait are resumable.
    let (created, hand_overs) = invoke_with(
        &aws,
        event("Create", stack, "req-1", None, first.clone()),
        || Limits {
            hand_over_every_state: true,
            ..Limits::default()
        },
    )
    .await;
    assert_eq!(created["Status"], "SUCCESS", "{created}");
    assert!(hand_overs >= 10, "{hand_overs} hand-overs");
    let ami = created["PhysicalResourceId"].as_str().unwrap().to_owned();
    let west_copy = created["Data"][format!("ImageId.{WEST}")]
        .as_str()
        .expect("the copy's id is an attribute")
        .to_owned();
    assert_ne!(west_copy, ami);

    let west = local.ec2_in(WEST).await;
    let copy = &in_region(&audits, WEST)
        .image(&west_copy)
        .await
        .expect("the copy is listed in its region");
    assert_eq!(copy.state().unwrap().as_str(), "available");
    let tags = tags_of(copy.tags());
    assert_eq!(tags.get("ecs-ami:copy-of"), Some(&ami), "{tags:?}");
    assert_eq!(tags.get("team").map(String::as_str), Some("platform"));
    assert_eq!(
        tags.get("ecs-ami:request-id").map(String::as_str),
        Some("req-1")
    );
    assert_eq!(copy.imds_support().map(|s| s.as_str()), Some("v2.0"));
    assert!(copy.deprecation_time().is_some(), "deprecated like the AMI");
    let launch = west
        .describe_image_attribute()
        .image_id(&west_copy)
        .attribute(ImageAttributeName::LaunchPermission)
        .send()
        .await
        .unwrap();
    let users: Vec<&str> = launch
        .launch_permissions()
        .iter()
        .filter_map(|p| p.user_id())
        .collect();
    assert_eq!(users, ["111122223333"]);
    // Each region's parameter holds the AMI of that region.
    assert_eq!(
        parameter(&local, "us-east-1", "/ecs-ami/images/base").await,
        Some(ami.clone())
    );
    assert_eq!(
        parameter(&local, WEST, "/ecs-ami/images/base").await,
        Some(west_copy.clone())
    );
    // The AMI itself stays in the function's region only.
    let home = local.ec2().await;
    let listed = home.describe_images().image_ids(&west_copy).send().await;
    assert!(
        listed.map_or(true, |out| out.images().is_empty()),
        "the copy is not in us-east-1"
    );

    // The region moved and the team renamed: the same AMI, nothing launched; the old copy goes,
    // a new one comes, both tagged as the AMI now is.
    local.take_calls().await;
    let second = distribution(
        json!([{"Region": EUROPE}]),
        "core",
        json!([{"Name": "/ecs-ami/images/base"}, {"Name": "/ecs-ami/images/eu", "Region": EUROPE}]),
    );
    let moved = invoke(&aws, update_from(stack, "req-2", &ami, &second, &first)).await;
    assert_eq!(moved["Status"], "SUCCESS", "{moved}");
    assert_eq!(moved["PhysicalResourceId"], json!(ami));
    assert_launched_nothing(&local.take_calls().await);
    assert!(
        moved["Data"].get(format!("ImageId.{WEST}")).is_none(),
        "{moved}"
    );
    let europe_copy = moved["Data"][format!("ImageId.{EUROPE}")]
        .as_str()
        .expect("the new copy's id is an attribute")
        .to_owned();
    let west_audit = &audits[1].1;
    assert_eq!(
        west_audit.images().await,
        Vec::<String>::new(),
        "the copy in {WEST} is gone"
    );
    assert_eq!(west_audit.snapshots().await, Vec::<String>::new());
    let copy = &in_region(&audits, EUROPE)
        .image(&europe_copy)
        .await
        .expect("the copy is listed in its region");
    assert_eq!(
        tags_of(copy.tags()).get("team").map(String::as_str),
        Some("core")
    );
    assert_eq!(
        parameter(&local, WEST, "/ecs-ami/images/base").await,
        None,
        "removed with its copy"
    );
    assert_eq!(
        parameter(&local, EUROPE, "/ecs-ami/images/eu").await,
        Some(europe_copy.clone())
    );

    // A tag changed alone: retagged in place, the copy too, with the same id.
    let third = distribution(
        json!([{"Region": EUROPE}]),
        "infra",
        json!([{"Name": "/ecs-ami/images/base"}, {"Name": "/ecs-ami/images/eu", "Region": EUROPE}]),
    );
    let retagged = invoke(&aws, update_from(stack, "req-3", &ami, &third, &second)).await;
    assert_eq!(retagged["Status"], "SUCCESS", "{retagged}");
    assert_eq!(
        retagged["Data"][format!("ImageId.{EUROPE}")],
        json!(europe_copy)
    );
    let copy = &in_region(&audits, EUROPE)
        .image(&europe_copy)
        .await
        .expect("the copy is listed in its region");
    assert_eq!(
        tags_of(copy.tags()).get("team").map(String::as_str),
        Some("infra")
    );
    let snapshot = copy.block_device_mappings()[0]
        .ebs()
        .and_then(|e| e.snapshot_id())
        .unwrap()
        .to_owned();
    let snapshot_tags = audits[2].1.snapshot_tags(&snapshot).await;
    assert_eq!(snapshot_tags.get("team").map(String::as_str), Some("infra"));

    let decisions = local.iam_decisions(false).await;
    assert_eq!(decisions["counts"].get("Denied"), None, "{decisions}");
    assert_eq!(decisions["counts"].get("Error"), None, "{decisions}");
    assert!(
        decisions.to_string().contains("ec2:CopyImage"),
        "CopyImage went through the role"
    );

    // The audit sees every region: before the Delete, the copy is there.
    let before = left_anywhere(&audits, &[&ami]).await;
    assert!(
        before.contains(&format!("{europe_copy} in {EUROPE}")),
        "{before:?}"
    );

    let deleted = invoke(&aws, event("Delete", stack, "req-4", Some(&ami), third)).await;
    assert_eq!(deleted["Status"], "SUCCESS", "{deleted}");
    assert!(
        deleted["Reason"]
            .as_str()
            .unwrap()
            .contains(&format!("deregistered copy {europe_copy} in {EUROPE}")),
        "{deleted}"
    );
    for (region, name) in [
        ("us-east-1", "/ecs-ami/images/base"),
        (EUROPE, "/ecs-ami/images/eu"),
    ] {
        assert_eq!(
            parameter(&local, region, name).await,
            None,
            "{name} in {region}"
        );
    }
    report::record_clean(
        "regions-lifecycle",
        "Update",
        "Regions: a Create copying to one region with an SsmParameters name in each region (every state handed over), an Update moving the copy and its parameter to another region with a tag changed, an Update changing the tag alone, then Delete",
        "the copy is available, tagged, shared, deprecated and IMDSv2 like the AMI and named by ImageId.<region>, each region's parameter holding its own AMI; Updates keep the AMI, launch nothing, remove the dropped region's copy and snapshots, add the new one and retag it; Delete removes the AMI, every copy and every parameter in every region",
        &left_anywhere(&audits, &[]).await,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_or_refused_copy_fails_the_build_and_leaves_nothing_in_any_region() {
    let local = LocalAws::start().await;
    let aws = local.aws().await;

    // The role as deployed without AmiCopyRegions: IAM refuses the copy.
    let stack = "regions-refused";
    let audits_refused = audits(&local, stack).await;
    let properties = one_step_properties(json!({"Regions": [{"Region": WEST}]}));
    let refused = invoke(
        &aws,
        event("Create", stack, "req-1", None, properties.clone()),
    )
    .await;
    assert_eq!(refused["Status"], "FAILED", "{refused}");
    let reason = refused["Reason"].as_str().unwrap();
    assert!(
        reason.contains("copying the image to its Regions: in us-west-2: ec2:CopyImage failed: UnauthorizedOperation"),
        "{reason}"
    );
    assert!(reason.contains("deregistered half-made image"), "{reason}");
    let left = left_anywhere(&audits_refused, &[]).await;
    assert_eq!(left, Vec::<String>::new());

    // Allowed to copy, but only this account's images: an Amazon image, copied with our tags
    // (which satisfy the tag condition for every resource, aws:RequestTag being request-wide),
    // is refused by the role's Deny on other owners' images.
    allow_copies_to(&local, WEST).await;
    let config = aws_sdk_ec2::config::Builder::from(&local.function_config().await)
        .region(aws_sdk_ec2::config::Region::new(WEST))
        .build();
    let function_in_west = aws_sdk_ec2::Client::from_conf(config);
    let amazon = local
        .ec2()
        .await
        .describe_images()
        .owners("amazon")
        .send()
        .await
        .unwrap()
        .images()[0]
        .image_id()
        .unwrap()
        .to_owned();
    let ours = aws_sdk_ec2::types::Tag::builder()
        .key("ecs-ami:logical-id")
        .value("Ami")
        .build();
    let tagged = |kind| {
        aws_sdk_ec2::types::TagSpecification::builder()
            .resource_type(kind)
            .tags(ours.clone())
            .build()
    };
    let foreign = function_in_west
        .copy_image()
        .source_image_id(&amazon)
        .source_region("us-east-1")
        .name("not-ours")
        .tag_specifications(tagged(aws_sdk_ec2::types::ResourceType::Image))
        .tag_specifications(tagged(aws_sdk_ec2::types::ResourceType::Snapshot))
        .send()
        .await
        .expect_err("another owner's image is not copied");
    let text = format!("{foreign:?}");
    assert!(text.contains("UnauthorizedOperation"), "{text}");
    assert!(
        text.contains(&format!("arn:aws:ec2:us-east-1::image/{amazon}")),
        "{text}"
    );

    // Allowed, but the copy ends failed (as a copy whose key cannot be used does).
    let stack = "regions-failed";
    let audits_failed = audits(&local, stack).await;
    let rules = json!({"rules": [{"operation": "EC2.CopyImage", "image": "failed"}]});
    reqwest::Client::new()
        .post(format!("{}/ecs-ami-local/faults", local.endpoint))
        .body(rules.to_string())
        .send()
        .await
        .unwrap();
    let failed = invoke(&aws, event("Create", stack, "req-1", None, properties)).await;
    assert_eq!(failed["Status"], "FAILED", "{failed}");
    let reason = failed["Reason"].as_str().unwrap();
    assert!(
        reason.contains("waiting for the copies in other regions: the copy ami-"),
        "{reason}"
    );
    assert!(reason.contains("in us-west-2 ended failed"), "{reason}");
    assert!(reason.contains("in us-west-2"), "{reason}");
    let left_failed = left_anywhere(&audits_failed, &[]).await;

    // The function's own region in Regions: refused before anything is launched.
    local.take_calls().await;
    let home = one_step_properties(json!({"Regions": [{"Region": "us-east-1"}]}));
    let bad = invoke(&aws, event("Create", "regions-home", "req-1", None, home)).await;
    assert_eq!(bad["Status"], "FAILED", "{bad}");
    assert!(
        bad["Reason"]
            .as_str()
            .unwrap()
            .contains("Regions[0].Region: us-east-1 is the region the AMI is built in"),
        "{bad}"
    );
    assert_launched_nothing(&local.take_calls().await);

    let mut left = left;
    left.extend(left_failed);
    report::record_clean(
        "regions-copy-fails",
        "AWS errors during a build",
        "Regions: the copy refused by IAM (a region not in AmiCopyRegions), then a copy that ends failed; and Regions naming the function's own region",
        "FAILED naming the region and the copy; the AMI, its snapshots and the copy removed in every region; the function's own region refused before anything is launched",
        &left,
    );
}

/// `UpdateReplacePolicy: Retain`: CloudFormation sends no Delete for the AMI a rebuild replaced
/// (https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/aws-attribute-updatereplacepolicy.html).
/// The resource must not remove it on its own: the rebuild leaves it, its copies and its
/// deprecation as they were, and the stack's later Delete (of the new AMI) leaves it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retained_ami_outlives_its_replacement_and_the_stack() {
    let local = LocalAws::start().await;
    allow_copies_to(&local, WEST).await;
    let aws = local.aws().await;
    let stack = "regions-retain";
    let audits = audits(&local, stack).await;
    let properties = |greeting: &str| {
        json!({
            "ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:ecs-ami",
            "SourceAmiParameter": "/aws/service/ecs/optimized-ami/amazon-linux-2023/recommended/image_id",
            "IamInstanceProfile": "ecs-ami-builder",
            "Steps": [{"Name": "hello", "Commands": [format!("echo {greeting}")]}],
            "Regions": [{"Region": WEST}],
            "DeprecateAfterDays": 7,
            "SsmParameters": [{"Name": "/ecs-ami/images/retained"}],
        })
    };
    let first = properties("hello");
    let created = invoke(&aws, event("Create", stack, "req-1", None, first.clone())).await;
    assert_eq!(created["Status"], "SUCCESS", "{created}");
    let old = created["PhysicalResourceId"].as_str().unwrap().to_owned();
    let old_copy = created["Data"][format!("ImageId.{WEST}")]
        .as_str()
        .unwrap()
        .to_owned();

    // New content: a new AMI. With Retain, no Delete of the old one follows.
    let second = properties("bonjour");
    let rebuilt = invoke(&aws, update_from(stack, "req-2", &old, &second, &first)).await;
    assert_eq!(rebuilt["Status"], "SUCCESS", "{rebuilt}");
    let new = rebuilt["PhysicalResourceId"].as_str().unwrap().to_owned();
    assert_ne!(new, old, "a rebuild answers a new AMI");
    assert_eq!(
        parameter(&local, "us-east-1", "/ecs-ami/images/retained").await,
        Some(new.clone())
    );

    let deleted = invoke(&aws, event("Delete", stack, "req-3", Some(&new), second)).await;
    assert_eq!(deleted["Status"], "SUCCESS", "{deleted}");

    for (region, image) in [("us-east-1", &old), (WEST, &old_copy)] {
        let found = &in_region(&audits, region)
            .image(image)
            .await
            .expect("kept in its region");
        assert_eq!(
            found.state().unwrap().as_str(),
            "available",
            "{image} in {region}"
        );
        assert!(
            found.deprecation_time().is_some(),
            "{image} in {region} keeps its deprecation"
        );
    }
    report::record_clean(
        "regions-retain",
        "Update",
        "UpdateReplacePolicy: Retain (no Delete for the replaced AMI): a rebuild of an AMI copied to another region and deprecated after 7 days, then the stack's Delete of the new AMI",
        "the replaced AMI and its copy stay available and keep their deprecation (the retention story); the parameter moves to the new AMI; the Delete removes the new AMI and its copy only",
        &left_anywhere(&audits, &[&old, &old_copy]).await,
    );
}

/// An invocation killed (SIGKILL, as Lambda ends one that timed out) once it has asked for the
/// copy, then the event delivered again: the retry finds the copy by its tags (or CopyImage's
/// ClientToken answers it again) and waits for it; one copy, not two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_killed_while_copying_is_resumed_with_one_copy() {
    let local = LocalAws::start_with(&[("ECS_AMI_EMULATOR_COPY_DELAY", "4")]).await;
    allow_copies_to(&local, WEST).await;
    let stack = "regions-crash";
    let audits = audits(&local, stack).await;
    let properties = one_step_properties(json!({"Regions": [{"Region": WEST}]}));
    let answer = local
        .killed_then_retried(
            env!("CARGO_BIN_EXE_ecs-ami"),
            &event("Create", stack, "req-1", None, properties),
            |line| line.contains("copy requested"),
        )
        .await;
    assert_eq!(answer["Status"], "SUCCESS", "{answer}");
    let ami = answer["PhysicalResourceId"].as_str().unwrap().to_owned();
    let copy = answer["Data"][format!("ImageId.{WEST}")]
        .as_str()
        .unwrap()
        .to_owned();
    let west_images = audits[1].1.images().await;
    assert_eq!(west_images, vec![copy.clone()], "one copy in {WEST}");
    report::record_clean(
        "regions-crash",
        "Crashes and duplicate deliveries",
        "Regions: `ecs-ami invoke` SIGKILLed right after it asked for the copy to another region, then the event delivered again",
        "SUCCESS from the retry with the copy the first invocation asked for: one AMI, one copy, nothing else in any region",
        &left_anywhere(&audits, &[&ami, &copy]).await,
    );
}
