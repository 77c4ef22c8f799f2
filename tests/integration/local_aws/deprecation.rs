//! `DeprecateAfterDays` on the local AWS, through the function's role: the AMI is deprecated that
//! many days after its creation, and an Update that changes or removes only that moves or cancels
//! the deprecation on the same AMI, launching nothing.
//!
//! EnableImageDeprecation: https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_EnableImageDeprecation.html
//! (UTC, rounded to the minute, not in the past, at most 10 years ahead);
//! the role's actions: https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonec2.html
//! (both deprecation actions take the `image` resource type and `aws:ResourceTag/${TagKey}`).

use crate::common;

use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_smithy_types::DateTime;
use aws_smithy_types::date_time::Format;
use common::audit::Audit;
use common::report;
use common::{
    ECS_AL2023, LocalAws, assert_launched_nothing, event, invoke, one_step_properties, stack_id,
    update_from,
};
use serde_json::json;

/// The image's CreationDate and DeprecationTime, in seconds since the epoch.
async fn times(local: &LocalAws, image: &str) -> (i64, Option<i64>) {
    let out = local
        .ec2()
        .await
        .describe_images()
        .image_ids(image)
        .send()
        .await
        .unwrap();
    let image = &out.images()[0];
    let seconds = |text: &str| DateTime::from_str(text, Format::DateTime).unwrap().secs();
    (
        seconds(image.creation_date().unwrap()),
        image.deprecation_time().map(seconds),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deprecation_is_set_moved_and_cancelled_on_the_same_ami() {
    let local = LocalAws::start().await;
    let aws = local.aws().await;
    let stack = "retire";
    let audit = Audit {
        ec2: local.ec2().await,
        stack_id: stack_id(stack),
    };
    let day = 86_400;
    let thirty = one_step_properties(json!({"DeprecateAfterDays": 30}));
    let created = invoke(&aws, event("Create", stack, "req-1", None, thirty.clone())).await;
    assert_eq!(created["Status"], "SUCCESS", "{created}");
    let ami = created["PhysicalResourceId"].as_str().unwrap().to_owned();
    let (born, deprecated) = times(&local, &ami).await;
    let deprecated = deprecated.expect("deprecated in 30 days");
    assert!(
        (deprecated - (born + 30 * day)).abs() <= 60,
        "{born} {deprecated}"
    );

    // Only the days change: the same AMI, nothing launched, the time moved.
    local.take_calls().await;
    let sixty = one_step_properties(json!({"DeprecateAfterDays": "60"}));
    let moved = invoke(&aws, update_from(stack, "req-2", &ami, &sixty, &thirty)).await;
    assert_eq!(moved["Status"], "SUCCESS", "{moved}");
    assert_eq!(moved["PhysicalResourceId"], json!(ami));
    let calls = local.take_calls().await;
    assert_launched_nothing(&calls);
    assert_eq!(
        calls["by_operation"]["EC2.EnableImageDeprecation"], 1,
        "{calls}"
    );
    let (_, deprecated) = times(&local, &ami).await;
    assert!((deprecated.unwrap() - (born + 60 * day)).abs() <= 60);

    // Another change (a tag) leaves the deprecation as it is: no call to set it again.
    let tagged =
        one_step_properties(json!({"DeprecateAfterDays": 60, "Tags": {"team": "platform"}}));
    let retagged = invoke(&aws, update_from(stack, "req-3", &ami, &tagged, &sixty)).await;
    assert_eq!(retagged["Status"], "SUCCESS", "{retagged}");
    assert_eq!(retagged["PhysicalResourceId"], json!(ami), "{retagged}");
    let calls = local.take_calls().await;
    assert!(
        calls["by_operation"]
            .get("EC2.EnableImageDeprecation")
            .is_none(),
        "{calls}"
    );

    // The property removed: the deprecation is cancelled.
    let none = one_step_properties(json!({}));
    let cancelled = invoke(&aws, update_from(stack, "req-4", &ami, &none, &tagged)).await;
    assert_eq!(cancelled["Status"], "SUCCESS", "{cancelled}");
    assert_eq!(cancelled["PhysicalResourceId"], json!(ami));
    assert_eq!(times(&local, &ami).await.1, None);
    let calls = local.take_calls().await;
    assert_launched_nothing(&calls);

    let decisions = local.iam_decisions(false).await;
    assert_eq!(decisions["counts"].get("Denied"), None, "{decisions}");
    let deleted = invoke(&aws, event("Delete", stack, "req-5", Some(&ami), none)).await;
    assert_eq!(deleted["Status"], "SUCCESS", "{deleted}");
    report::record_clean(
        "update-deprecation",
        "Update",
        "DeprecateAfterDays set at Create (30), changed alone (60), a tag changed, then DeprecateAfterDays removed",
        "the same AMI throughout, nothing launched: deprecated at creation + 30 days, then + 60 (one EnableImageDeprecation), untouched by the retag, then cancelled",
        &audit.leftovers(&[]).await,
    );
}

/// The local AWS keeps EnableImageDeprecation's rules: not in the past, at most 10 years ahead,
/// rounded to the minute; and the function's role may deprecate only this product's images.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deprecation_times_follow_ec2s_rules_and_the_role_scopes_them() {
    let local = LocalAws::start().await;
    let admin = local.ec2().await;
    let instance = common::launched_id(common::launch_request(
        &admin,
        &common::parameter_value(&local, ECS_AL2023).await,
        false,
    ))
    .await;
    let image = admin
        .create_image()
        .instance_id(&instance)
        .name("not-ours")
        .send()
        .await
        .unwrap()
        .image_id
        .unwrap();
    let now = std::time::SystemTime::now();
    let past = admin
        .enable_image_deprecation()
        .image_id(&image)
        .deprecate_at(DateTime::from(now - std::time::Duration::from_secs(3600)))
        .send()
        .await
        .unwrap_err();
    assert_eq!(past.code().unwrap_or_default(), "InvalidParameterValue");
    let too_late = admin
        .enable_image_deprecation()
        .image_id(&image)
        .deprecate_at(DateTime::from(
            now + std::time::Duration::from_secs(11 * 365 * 86_400),
        ))
        .send()
        .await
        .unwrap_err();
    assert_eq!(too_late.code().unwrap_or_default(), "InvalidParameterValue");
    let soon = now + std::time::Duration::from_secs(3600 + 20);
    admin
        .enable_image_deprecation()
        .image_id(&image)
        .deprecate_at(DateTime::from(soon))
        .send()
        .await
        .unwrap();
    let (_, at) = times(&local, &image).await;
    assert_eq!(at.unwrap() % 60, 0, "rounded to the minute");

    // The function may not deprecate an image without the product's tags.
    let function = aws_sdk_ec2::Client::new(&local.function_config().await);
    let refused = function
        .enable_image_deprecation()
        .image_id(&image)
        .deprecate_at(DateTime::from(soon))
        .send()
        .await
        .unwrap_err();
    assert_eq!(refused.code().unwrap_or_default(), "UnauthorizedOperation");
    report::record(
        "rules-deprecation",
        "AWS's rules on the local AWS (eventual consistency, names, limits)",
        "EnableImageDeprecation in the past, more than 10 years ahead, and by the function on an image without the product's tags",
        "InvalidParameterValue, InvalidParameterValue, UnauthorizedOperation; a valid time is kept rounded to the minute",
        None,
    );
}
