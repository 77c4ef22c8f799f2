//! The CloudFormation side of the handler: delivery, retries, malformed requests. None of these
//! reach AWS, so the clients point at a port where nothing listens.

use crate::common;

use std::time::Duration;

use common::report;

use common::local::{InProcessScheduler, ResponseCatcher};
use common::offline::offline_aws;
use ecs_ami::cfn::HttpSink;
use ecs_ami::handler::{self, HandleError, Handled, Limits};
use serde_json::{Value, json};

async fn run(event: Value, sink: &HttpSink) -> Result<Handled, HandleError> {
    let scheduler = InProcessScheduler::default();
    handler::handle(
        event,
        &offline_aws().await,
        sink,
        &scheduler,
        Limits::default(),
    )
    .await
}

fn delete_of_failed_create(url: &str) -> Value {
    json!({
        "RequestType": "Delete",
        "ResponseURL": url,
        "StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/s/g",
        "RequestId": "req-delete",
        "ResourceType": "Custom::EcsAmi",
        "LogicalResourceId": "Ami",
        "PhysicalResourceId": "ecs-ami-not-built-12345678",
        "ResourceProperties": {}
    })
}

#[tokio::test]
async fn a_refused_put_is_retried_until_accepted() {
    let mut catcher = ResponseCatcher::refusing(2).await.unwrap();
    let sink = HttpSink::with_retries(4, Duration::from_millis(10));
    let Handled::Answered(response) = run(delete_of_failed_create(&catcher.url), &sink)
        .await
        .unwrap()
    else {
        panic!("a Delete is answered at once")
    };
    let body: Value =
        serde_json::from_slice(&catcher.next(Duration::from_secs(5)).await.unwrap()).unwrap();
    assert_eq!(body["Status"], "SUCCESS");
    assert_eq!(body["PhysicalResourceId"], "ecs-ami-not-built-12345678");
    assert!(
        body["Reason"]
            .as_str()
            .unwrap()
            .contains("nothing to delete")
    );
    assert_eq!(
        catcher.attempts.load(std::sync::atomic::Ordering::SeqCst),
        3
    );
    assert_eq!(response.request_id, "req-delete");
    report::record(
        "cfn-01",
        "The CloudFormation side",
        "The ResponseURL refuses the PUT twice, then accepts it",
        "one response delivered, on the third attempt",
        None,
    );
}

#[tokio::test]
async fn a_put_refused_for_good_is_reported_without_the_url() {
    let catcher = ResponseCatcher::refusing(usize::MAX).await.unwrap();
    let sink = HttpSink::with_retries(3, Duration::from_millis(10));
    let error = run(delete_of_failed_create(&catcher.url), &sink)
        .await
        .unwrap_err();
    let text = error.to_string();
    assert!(matches!(error, HandleError::Undeliverable { .. }), "{text}");
    assert!(
        text.contains("after 3 attempts") && text.contains("503"),
        "{text}"
    );
    assert!(
        !text.contains(&catcher.url) && !text.contains("X-Amz-Signature"),
        "{text}"
    );
    report::record(
        "cfn-02",
        "The CloudFormation side",
        "The ResponseURL refuses the PUT for good",
        "the failure is reported after the last attempt without the URL or its signature",
        None,
    );
}

#[tokio::test]
async fn an_unreachable_response_url_is_reported_without_the_url() {
    let url = "http://127.0.0.1:1/presigned?X-Amz-Signature=secret";
    let sink = HttpSink::with_retries(2, Duration::from_millis(10));
    let error = run(delete_of_failed_create(url), &sink).await.unwrap_err();
    let text = error.to_string();
    assert!(
        !text.contains("secret") && !text.contains("127.0.0.1:1"),
        "{text}"
    );
    report::record(
        "cfn-03",
        "The CloudFormation side",
        "The ResponseURL is unreachable",
        "reported without the URL or its signature",
        None,
    );
}

#[tokio::test]
async fn a_malformed_request_is_still_answered() {
    let mut catcher = ResponseCatcher::start().await.unwrap();
    let event = json!({"RequestType": "Create", "ResponseURL": catcher.url, "RequestId": "r", "StackId": "s"});
    let sink = HttpSink::with_retries(2, Duration::from_millis(10));
    run(event, &sink).await.unwrap();
    let body: Value =
        serde_json::from_slice(&catcher.next(Duration::from_secs(5)).await.unwrap()).unwrap();
    assert_eq!(body["Status"], "FAILED");
    assert!(
        body["Reason"]
            .as_str()
            .unwrap()
            .contains("malformed CloudFormation request")
    );
    assert!(!body["PhysicalResourceId"].as_str().unwrap().is_empty());
    assert_eq!(body["RequestId"], "r");
    report::record(
        "cfn-04",
        "The CloudFormation side",
        "A request with a ResponseURL but missing fields",
        "FAILED, saying the request is malformed",
        None,
    );
}

#[tokio::test]
async fn an_event_that_is_not_cloudformation_is_refused() {
    let sink = HttpSink::with_retries(1, Duration::from_millis(10));
    let error = run(json!({"detail-type": "Scheduled Event"}), &sink)
        .await
        .unwrap_err();
    assert!(matches!(error, HandleError::NotCloudFormation(_)));
    report::record(
        "cfn-05",
        "The CloudFormation side",
        "An event that is not a CloudFormation request at all",
        "refused with an error, nothing sent anywhere",
        None,
    );
}
