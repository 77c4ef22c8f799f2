//! ECS, for `Tests.EcsCluster`: whether the test instance became a container instance of the
//! cluster, with its agent connected.
//!
//! Two calls of ECS's JSON API (`awsJson1_1`: a POST of a JSON object naming the action in
//! `X-Amz-Target`, answered with JSON; errors carry `__type`), sent through the SDK's runtime
//! (`runtime.rs`) rather than the generated `aws-sdk-ecs`, which rustc needs 1.6 GB to compile
//! (README, "Deploy to AWS").

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse, OrchestratorError};
use aws_smithy_types::body::SdkBody;
use aws_types::SdkConfig;
use serde_json::{Value, json};

use super::runtime::{Client, Service, ServiceError};
use super::*;

static ECS: Service = Service {
    id: "ECS",
    name: "ecs",
    gov_fips_is_plain: false,
};

/// ECS's JSON API's target prefix (the service's Smithy name and version).
const TARGET: &str = "AmazonEC2ContainerServiceV20141113";

/// A client of one region's ECS endpoint.
#[derive(Clone, Debug)]
pub struct Ecs(Client);

impl Ecs {
    pub fn new(config: &SdkConfig) -> Ecs {
        Ecs(Client::new(&ECS, config))
    }
    pub fn in_region(&self, region: &str) -> Ecs {
        Ecs(self.0.in_region(region))
    }
    /// Sends `operation` (`ecs:ListContainerInstances`) with the JSON `input`.
    async fn call(&self, operation: &'static str, input: Value) -> Result<Value> {
        let target = format!("{TARGET}.{}", operation.trim_start_matches("ecs:"));
        self.0
            .invoke(
                operation,
                input,
                move |input: Value| json_request(&target, &input),
                read_json,
            )
            .await
    }
}

/// The POST of `input` to the endpoint's root, for `target`.
fn json_request(target: &str, input: &Value) -> std::result::Result<HttpRequest, BoxError> {
    let mut request = HttpRequest::new(SdkBody::from(serde_json::to_vec(input)?));
    request.set_method("POST")?;
    request.set_uri("/")?;
    let headers = request.headers_mut();
    headers.insert("Content-Type", "application/x-amz-json-1.1");
    headers.insert("X-Amz-Target", target.to_owned());
    Ok(request)
}

/// The answer's JSON, or the error: its code from `x-amzn-ErrorType`, or the body's `code` or
/// `__type` (the shape's name, without its namespace `…#` or a `:…` suffix), its message from
/// `message`, `Message` or `errorMessage`.
fn read_json(
    response: &HttpResponse,
) -> std::result::Result<Value, OrchestratorError<ServiceError>> {
    let body = response.body().bytes().unwrap_or_default();
    let parsed: Option<Value> = if body.is_empty() {
        Some(json!({}))
    } else {
        serde_json::from_slice(body).ok()
    };
    if response.status().is_success() {
        return parsed.ok_or_else(|| {
            OrchestratorError::operation(ServiceError::new(
                None,
                "the answer is not JSON".to_owned(),
            ))
        });
    }
    let parsed = parsed.unwrap_or(Value::Null);
    // The header first, then the body's `code`, then its `__type`, as the SDK's JSON protocols
    // read them.
    let field = |key: &str| parsed.get(key).and_then(Value::as_str).map(str::to_owned);
    let code = response
        .headers()
        .get("x-amzn-errortype")
        .map(str::to_owned)
        .or_else(|| field("code"))
        .or_else(|| field("__type"))
        .map(|code| {
            let code = code.split(':').next().unwrap_or_default();
            code.rsplit('#').next().unwrap_or_default().to_owned()
        })
        .filter(|code| !code.is_empty());
    // What AWS Support asks for; the Reason has no room for it.
    tracing::debug!(
        code,
        request_id = response.headers().get("x-amzn-requestid"),
        status = response.status().as_u16(),
        "ECS refused a request"
    );
    let message = ["message", "Message", "errorMessage"]
        .iter()
        .find_map(|key| parsed.get(key).and_then(Value::as_str))
        .map(str::to_owned)
        .unwrap_or_else(|| format!("HTTP {}", response.status().as_u16()));
    Err(OrchestratorError::operation(ServiceError::new(
        code, message,
    )))
}

/// A container instance as DescribeContainerInstances answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInstance {
    pub arn: String,
    /// `ACTIVE`, `DRAINING`, `REGISTERING`, ...
    pub status: String,
    pub agent_connected: bool,
}

impl Aws {
    /// The container instance that EC2 instance `instance_id` is in `cluster`, if it joined.
    /// ListContainerInstances filtered by the instance (the cluster query language's
    /// `ec2InstanceId`), then DescribeContainerInstances; the answer is checked for the
    /// instance too
    /// (<https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_ListContainerInstances.html>,
    /// <https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_DescribeContainerInstances.html>).
    pub async fn container_instance(
        &self,
        cluster: &str,
        instance_id: &str,
    ) -> Result<Option<ContainerInstance>> {
        let Some(ecs) = &self.ecs else {
            return Err(AwsError {
                operation: "ecs:ListContainerInstances",
                code: None,
                message: "no ECS client configured".into(),
            });
        };
        // Every page: a filtered list may come as empty pages that carry a nextToken.
        let mut arns: Vec<String> = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut input =
                json!({"cluster": cluster, "filter": format!("ec2InstanceId == {instance_id}")});
            if let Some(token) = &token {
                input["nextToken"] = json!(token);
            }
            let listed = ecs.call("ecs:ListContainerInstances", input).await?;
            arns.extend(
                listed["containerInstanceArns"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(str::to_owned),
            );
            let next = listed["nextToken"]
                .as_str()
                .filter(|t| !t.is_empty())
                .map(str::to_owned);
            if next.is_none() || next == token {
                break;
            }
            token = next;
        }
        if arns.is_empty() {
            return Ok(None);
        }
        let described = ecs
            .call(
                "ecs:DescribeContainerInstances",
                json!({"cluster": cluster, "containerInstances": arns}),
            )
            .await?;
        // A container instance ECS could not describe is in `failures` (reason MISSING when it
        // is gone); the instance is then taken as not (or no longer) in the cluster.
        if let Some(failures) = described["failures"].as_array().filter(|f| !f.is_empty()) {
            tracing::info!(cluster, instance_id, ?failures, "ECS could not describe");
        }
        let text = |c: &Value, key: &str| c[key].as_str().unwrap_or_default().to_owned();
        Ok(described["containerInstances"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["ec2InstanceId"].as_str() == Some(instance_id))
            .map(|c| ContainerInstance {
                arn: text(c, "containerInstanceArn"),
                status: text(c, "status"),
                agent_connected: c["agentConnected"].as_bool().unwrap_or(false),
            }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_smithy_types::error::metadata::ProvideErrorMetadata;

    fn answer(status: u16, body: &str, error_type: Option<&str>) -> HttpResponse {
        let mut response =
            HttpResponse::new(status.try_into().unwrap(), SdkBody::from(body.to_owned()));
        if let Some(kind) = error_type {
            response
                .headers_mut()
                .insert("x-amzn-ErrorType", kind.to_owned());
        }
        response
    }

    #[test]
    fn errors_are_named_as_ecs_names_them() {
        let refused = read_json(&answer(
            400,
            r#"{"__type":"com.amazonaws.ecs#ClusterNotFoundException","message":"Cluster not found."}"#,
            None,
        ))
        .unwrap_err();
        let refused = refused.as_operation_error().unwrap();
        assert_eq!(refused.code(), Some("ClusterNotFoundException"));
        assert_eq!(refused.message(), Some("Cluster not found."));
        let by_header = read_json(&answer(
            400,
            r#"{"Message":"User: x is not authorized"}"#,
            Some(
                "AccessDeniedException:http://internal.amazon.com/coral/com.amazon.coral.service/",
            ),
        ))
        .unwrap_err();
        let by_header = by_header.as_operation_error().unwrap();
        assert_eq!(by_header.code(), Some("AccessDeniedException"));
        assert_eq!(by_header.message(), Some("User: x is not authorized"));
        let throttled =
            read_json(&answer(400, r#"{"__type":"ThrottlingException"}"#, None)).unwrap_err();
        assert_eq!(
            throttled.as_operation_error().unwrap().code(),
            Some("ThrottlingException")
        );
        assert_eq!(read_json(&answer(200, "", None)).unwrap(), json!({}));
        assert_eq!(
            read_json(&answer(200, r#"{"containerInstanceArns":[]}"#, None)).unwrap(),
            json!({"containerInstanceArns": []})
        );
    }

    #[test]
    fn ecs_keeps_its_fips_name_in_govcloud() {
        let fips = SdkConfig::builder().use_fips(true).build();
        assert_eq!(
            Ecs::new(&fips).0.endpoint("us-gov-west-1"),
            "https://ecs-fips.us-gov-west-1.amazonaws.com"
        );
        assert_eq!(
            Ecs::new(&SdkConfig::builder().build())
                .0
                .endpoint("eu-west-1"),
            "https://ecs.eu-west-1.amazonaws.com"
        );
    }

    #[test]
    fn requests_name_their_action_in_the_target_header() {
        let request = json_request(
            "AmazonEC2ContainerServiceV20141113.ListContainerInstances",
            &json!({"cluster": "c"}),
        )
        .unwrap();
        assert_eq!(
            request.headers().get("x-amz-target"),
            Some("AmazonEC2ContainerServiceV20141113.ListContainerInstances")
        );
        assert_eq!(
            request.headers().get("content-type"),
            Some("application/x-amz-json-1.1")
        );
        assert_eq!(request.body().bytes(), Some(&br#"{"cluster":"c"}"#[..]));
    }
}
