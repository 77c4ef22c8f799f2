//! `ImdsSupport: v2.0` on the local AWS, through the function's role: the AMI is marked so that
//! instances launched from it require IMDSv2. EC2 cannot take the mark back
//! (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_ModifyImageAttribute.html: "After you
//! set the value to v2.0, you can't undo it"), so adding or removing it builds a new AMI and a
//! rollback returns the previous one untouched.

use crate::common;

use aws_sdk_ec2::error::ProvideErrorMetadata;
use common::audit::Audit;
use common::report;
use common::{
    LocalAws, assert_launched_nothing, event, invoke, one_step_properties, stack_id, update_from,
};
use serde_json::json;

async fn imds_support(local: &LocalAws, image: &str) -> Option<String> {
    let out = local
        .ec2()
        .await
        .describe_images()
        .image_ids(image)
        .send()
        .await
        .unwrap();
    out.images()[0]
        .imds_support()
        .map(|v| v.as_str().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imds_v2_is_set_on_a_new_ami_and_never_taken_back_from_one() {
    let local = LocalAws::start().await;
    let aws = local.aws().await;
    let stack = "imds";
    let audit = Audit {
        ec2: local.ec2().await,
        stack_id: stack_id(stack),
    };
    let required = one_step_properties(json!({"ImdsSupport": "v2.0"}));
    let created = invoke(
        &aws,
        event("Create", stack, "req-1", None, required.clone()),
    )
    .await;
    assert_eq!(created["Status"], "SUCCESS", "{created}");
    let a = created["PhysicalResourceId"].as_str().unwrap().to_owned();
    assert_eq!(imds_support(&local, &a).await.as_deref(), Some("v2.0"));

    // Removed: a new AMI without it; the first keeps it (EC2 cannot take it back).
    let plain = one_step_properties(json!({}));
    let updated = invoke(&aws, update_from(stack, "req-2", &a, &plain, &required)).await;
    assert_eq!(updated["Status"], "SUCCESS", "{updated}");
    let b = updated["PhysicalResourceId"].as_str().unwrap().to_owned();
    assert_ne!(a, b);
    assert_eq!(imds_support(&local, &b).await, None);
    assert_eq!(imds_support(&local, &a).await.as_deref(), Some("v2.0"));

    // A rollback returns the first AMI as it is, launching nothing.
    local.take_calls().await;
    let rolled = invoke(&aws, update_from(stack, "req-3", &b, &required, &plain)).await;
    assert_eq!(rolled["Status"], "SUCCESS", "{rolled}");
    assert_eq!(rolled["PhysicalResourceId"], json!(a));
    let calls = local.take_calls().await;
    assert_launched_nothing(&calls);

    // The local AWS refuses any other value, as EC2 does.
    let refused = local
        .ec2()
        .await
        .modify_image_attribute()
        .image_id(&a)
        .imds_support(
            aws_sdk_ec2::types::AttributeValue::builder()
                .value("v1.0")
                .build(),
        )
        .send()
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some("InvalidParameterValue"));

    for (request, image) in [("req-4", &b), ("req-5", &a)] {
        let deleted = invoke(
            &aws,
            event("Delete", stack, request, Some(image), plain.clone()),
        )
        .await;
        assert_eq!(deleted["Status"], "SUCCESS", "{deleted}");
    }
    report::record_clean(
        "update-imds",
        "Update",
        "ImdsSupport v2.0 at Create, removed by an Update, then the rollback",
        "the first AMI requires IMDSv2; the Update builds a new AMI without it and leaves the first as it is (EC2 cannot undo it); the rollback returns the first AMI, launching nothing",
        &audit.leftovers(&[]).await,
    );
}
