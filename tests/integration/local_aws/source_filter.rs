//! `SourceAmiFilter` on the local AWS: the newest available image of the owners that matches is
//! the source, deprecated images are passed over unless asked for (as DescribeImages hides other
//! owners' deprecated images but shows the caller its own), a rollback returns the image built
//! from the filter as written without resolving it again, and a newer match rebuilds at the next
//! update that is not a rollback.
//!
//! DescribeImages: https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DescribeImages.html
//! Deprecation: https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/ami-deprecate.html

use crate::common;

use common::audit::Audit;
use common::report;
use common::{LocalAws, PROFILE, assert_launched_nothing, event, invoke, stack_id, update_from};
use serde_json::{Value, json};

/// Adds an image with a history to the local AWS (`POST /ecs-ami-local/images`).
async fn add_image(
    local: &LocalAws,
    name: &str,
    architecture: &str,
    owner: &str,
    created: &str,
    deprecated_at: Option<&str>,
) -> String {
    let answer = reqwest::Client::new()
        .post(format!("{}/ecs-ami-local/images", local.endpoint))
        .body(
            json!({"name": name, "architecture": architecture, "owner": owner, "created": created, "deprecated_at": deprecated_at})
                .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_success());
    let body: Value = serde_json::from_slice(&answer.bytes().await.unwrap()).unwrap();
    body["ImageId"].as_str().unwrap().to_owned()
}

fn properties(filter: Value, extra: Value) -> Value {
    let mut properties = json!({
        "ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:ecs-ami",
        "SourceAmiFilter": filter,
        // The product's own images match the filter too: a filter never chooses an image of
        // the resource it builds.
        "AmiName": "team-base-built",
        "IamInstanceProfile": PROFILE,
        "Steps": [{"Name": "hello", "Commands": ["echo hello"]}]
    });
    for (key, value) in extra.as_object().unwrap() {
        properties[key] = value.clone();
    }
    properties
}

/// What the administrator's DescribeImages lists for the filter, in id order.
async fn listed(local: &LocalAws, name: &str, include_deprecated: bool) -> Vec<String> {
    let out = local
        .ec2()
        .await
        .describe_images()
        .owners("amazon")
        .owners("self")
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("name")
                .values(name)
                .build(),
        )
        .include_deprecated(include_deprecated)
        .send()
        .await
        .unwrap();
    let mut ids: Vec<String> = out
        .images()
        .iter()
        .map(|i| i.image_id().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_newest_match_is_the_source_until_a_newer_one_and_rollbacks_keep_theirs() {
    let local = LocalAws::start().await;
    let aws = local.aws().await;
    let stack = "filtered";
    let audit = Audit {
        ec2: local.ec2().await,
        stack_id: stack_id(stack),
    };
    let long_ago = Some("2021-01-01T00:00:00.000Z");
    let older = add_image(
        &local,
        "team-base-2020.09-x86_64",
        "x86_64",
        "amazon",
        "2020-09-01T00:00:00.000Z",
        None,
    )
    .await;
    let chosen = add_image(
        &local,
        "team-base-2020.10-x86_64",
        "x86_64",
        "amazon",
        "2020-10-01T00:00:00.000Z",
        None,
    )
    .await;
    let theirs_deprecated = add_image(
        &local,
        "team-base-2020.11-x86_64",
        "x86_64",
        "amazon",
        "2020-11-01T00:00:00.000Z",
        long_ago,
    )
    .await;
    let own_deprecated = add_image(
        &local,
        "team-base-2020.11b-x86_64",
        "x86_64",
        "self",
        "2020-11-10T00:00:00.000Z",
        long_ago,
    )
    .await;
    let other_architecture = add_image(
        &local,
        "team-base-2020.12-arm64",
        "arm64",
        "amazon",
        "2020-12-01T00:00:00.000Z",
        None,
    )
    .await;
    add_image(
        &local,
        "other-2020.12-x86_64",
        "x86_64",
        "amazon",
        "2020-12-05T00:00:00.000Z",
        None,
    )
    .await;
    // Listed last, yet older: the newest is chosen by CreationDate, not by the answer's order.
    let oldest = add_image(
        &local,
        "team-base-2020.08-x86_64",
        "x86_64",
        "amazon",
        "2020-08-01T00:00:00.000Z",
        None,
    )
    .await;

    // The local AWS keeps DescribeImages' rule: another owner's deprecated image is listed only
    // when asked for; the caller's own always is.
    let mut without = vec![
        older.clone(),
        chosen.clone(),
        own_deprecated.clone(),
        other_architecture.clone(),
        oldest,
    ];
    without.sort();
    assert_eq!(listed(&local, "team-base-*", false).await, without);
    let mut with = [without.clone(), vec![theirs_deprecated.clone()]].concat();
    with.sort();
    assert_eq!(listed(&local, "team-base-*", true).await, with);

    // 1. The newest available x86_64 match, passing over both deprecated ones.
    let filter =
        json!({"Owners": ["amazon", "self"], "Name": "team-base-*", "Architecture": "x86_64"});
    let first = properties(filter.clone(), json!({}));
    let created = invoke(&aws, event("Create", stack, "req-1", None, first.clone())).await;
    assert_eq!(created["Status"], "SUCCESS", "{created}");
    assert_eq!(created["Data"]["SourceImageId"], json!(chosen));
    let a = created["PhysicalResourceId"].as_str().unwrap().to_owned();

    // 2. A newer release appears; an update of the steps builds from it.
    let newer = add_image(
        &local,
        "team-base-2020.12-x86_64",
        "x86_64",
        "amazon",
        "2020-12-01T00:00:00.000Z",
        None,
    )
    .await;
    let second = properties(
        filter.clone(),
        json!({"Steps": [{"Name": "hello", "Commands": ["echo hello again"]}]}),
    );
    let updated = invoke(&aws, update_from(stack, "req-2", &a, &second, &first)).await;
    assert_eq!(updated["Status"], "SUCCESS", "{updated}");
    assert_eq!(updated["Data"]["SourceImageId"], json!(newer));
    let b = updated["PhysicalResourceId"].as_str().unwrap().to_owned();

    // 3. A rollback to the first properties returns image a as it is: nothing launched, the
    // filter not resolved again (it would now choose the newer release).
    local.take_calls().await;
    let rolled = invoke(&aws, update_from(stack, "req-3", &b, &first, &second)).await;
    assert_eq!(rolled["Status"], "SUCCESS", "{rolled}");
    assert_eq!(rolled["PhysicalResourceId"], json!(a));
    assert_eq!(rolled["Data"]["SourceImageId"], json!(chosen));
    let calls = local.take_calls().await;
    assert_launched_nothing(&calls);

    // 4. The next update, even one of tags only, resolves the filter again: a new image from
    // the newer release.
    let tagged = properties(filter.clone(), json!({"Tags": {"team": "platform"}}));
    let retagged = invoke(&aws, update_from(stack, "req-4", &a, &tagged, &first)).await;
    assert_eq!(retagged["Status"], "SUCCESS", "{retagged}");
    assert_eq!(retagged["Data"]["SourceImageId"], json!(newer));
    let c = retagged["PhysicalResourceId"].as_str().unwrap().to_owned();
    assert!(c != a && c != b, "{a} {b} {c}");

    // 5. Yet another release; an update of the sharing and deprecation alone is applied to
    // image c as it is: nothing resolved, nothing launched.
    add_image(
        &local,
        "team-base-2021.01-x86_64",
        "x86_64",
        "amazon",
        "2021-01-01T00:00:00.000Z",
        None,
    )
    .await;
    local.take_calls().await;
    let shared = properties(
        filter.clone(),
        json!({"Tags": {"team": "platform"}, "DeprecateAfterDays": 90, "LaunchPermissions": {"UserIds": ["111122223333"]}}),
    );
    let distributed = invoke(&aws, update_from(stack, "req-8", &c, &shared, &tagged)).await;
    assert_eq!(distributed["Status"], "SUCCESS", "{distributed}");
    assert_eq!(distributed["PhysicalResourceId"], json!(c));
    assert_eq!(distributed["Data"]["SourceImageId"], json!(newer));
    let calls = local.take_calls().await;
    assert_launched_nothing(&calls);
    assert_eq!(
        calls["by_operation"]["EC2.EnableImageDeprecation"], 1,
        "{calls}"
    );

    for (request, image) in [("req-5", &c), ("req-6", &b), ("req-7", &a)] {
        let deleted = invoke(
            &aws,
            event("Delete", stack, request, Some(image), tagged.clone()),
        )
        .await;
        assert_eq!(deleted["Status"], "SUCCESS", "{deleted}");
    }
    audit.assert_only(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deprecated_images_are_the_source_only_when_asked_for() {
    let local = LocalAws::start().await;
    let aws = local.aws().await;
    let stack = "deprecated";
    let audit = Audit {
        ec2: local.ec2().await,
        stack_id: stack_id(stack),
    };
    let long_ago = Some("2021-01-01T00:00:00.000Z");
    // The newest is another owner's, which DescribeImages lists only when asked to.
    let theirs = add_image(
        &local,
        "legacy-2020.12-x86_64",
        "x86_64",
        "amazon",
        "2020-12-01T00:00:00.000Z",
        long_ago,
    )
    .await;
    add_image(
        &local,
        "legacy-2020.11-x86_64",
        "x86_64",
        "self",
        "2020-11-01T00:00:00.000Z",
        long_ago,
    )
    .await;
    let filter = json!({"Owners": ["amazon", "self"], "Name": "legacy-*"});

    local.take_calls().await;
    let refused = invoke(
        &aws,
        event(
            "Create",
            stack,
            "req-1",
            None,
            properties(filter.clone(), json!({})),
        ),
    )
    .await;
    assert_eq!(refused["Status"], "FAILED", "{refused}");
    let reason = refused["Reason"].as_str().unwrap();
    assert!(
        reason.contains("SourceAmiFilter: no available, not deprecated, image owned by amazon or self matches name=legacy-*"),
        "{reason}"
    );
    let calls = local.take_calls().await;
    assert_launched_nothing(&calls);
    report::record_clean(
        "source-filter-01",
        "Unusable inputs found at build time",
        "SourceAmiFilter whose only matches are deprecated (another owner's, hidden by DescribeImages, and the account's own, listed)",
        "FAILED before any launch: `SourceAmiFilter: no available, not deprecated, image owned by amazon or self matches name=legacy-*`",
        &audit.leftovers(&[]).await,
    );

    let asked = properties(
        json!({"Owners": ["amazon", "self"], "Name": "legacy-*", "IncludeDeprecated": true}),
        json!({}),
    );
    let created = invoke(&aws, event("Create", stack, "req-2", None, asked.clone())).await;
    assert_eq!(created["Status"], "SUCCESS", "{created}");
    assert_eq!(
        created["Data"]["SourceImageId"],
        json!(theirs),
        "the newest, deprecated or not"
    );
    let image = created["PhysicalResourceId"].as_str().unwrap().to_owned();
    let deleted = invoke(&aws, event("Delete", stack, "req-3", Some(&image), asked)).await;
    assert_eq!(deleted["Status"], "SUCCESS", "{deleted}");
    audit.assert_only(&[]).await;
}
