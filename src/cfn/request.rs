use aws_lambda_events::event::cloudformation::CloudFormationCustomResourceRequest as CfnRequest;
use serde_json::Value;

/// Who asked: the three values that tag every resource a build creates, so that a retried or
/// resumed invocation, a cleanup after a crash, and a later Delete can all find them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub stack_id: String,
    pub logical_id: String,
    pub request_id: String,
}

impl Identity {
    /// A hash of the whole identity: the same for every delivery of one request, different for
    /// any other request of any stack.
    pub fn digest(&self) -> String {
        crate::hash::sha256_hex(&format!(
            "{}\n{}\n{}",
            self.stack_id, self.logical_id, self.request_id
        ))
    }

    /// 32 hex digits naming the resource (stack and logical id) in parameter names.
    pub fn resource_key(&self) -> String {
        crate::hash::sha256_hex(&format!("{}\n{}", self.stack_id, self.logical_id))[..32].to_owned()
    }

    /// 16 hex digits naming the request among its resource's in parameter names.
    pub fn request_key(&self) -> String {
        crate::hash::sha256_hex(&self.request_id)[..16].to_owned()
    }

    /// The stack's name, read out of its ARN (`arn:...:stack/NAME/GUID`); the ARN itself when it
    /// has no such shape (local events often carry a made-up stack id).
    pub fn stack_name(&self) -> &str {
        self.stack_id
            .split_once(":stack/")
            .and_then(|(_, rest)| rest.split('/').next())
            .filter(|name| !name.is_empty())
            .unwrap_or(&self.stack_id)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Operation {
    Create,
    Update {
        physical_id: String,
        old_properties: Value,
    },
    Delete {
        physical_id: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub operation: Operation,
    pub identity: Identity,
    pub response_url: String,
    pub properties: Value,
}

impl Request {
    /// When CloudFormation issued the request: the signing time of its presigned ResponseURL
    /// (SigV4's `X-Amz-Date`, `YYYYMMDDTHHMMSSZ`, which sorts as time does). None when the URL
    /// carries none (a local event).
    pub fn issued_at(&self) -> Option<&str> {
        let query = self.response_url.split_once('?')?.1;
        query
            .split('&')
            .find_map(|pair| pair.strip_prefix("X-Amz-Date="))
            .filter(|date| {
                date.len() == 16
                    && date.ends_with('Z')
                    && date.as_bytes()[8] == b'T'
                    && date
                        .bytes()
                        .enumerate()
                        .all(|(i, b)| i == 8 || i == 15 || b.is_ascii_digit())
            })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// Nothing to answer: without a ResponseURL there is no way to tell CloudFormation anything.
    #[error("not a CloudFormation custom resource request: {0}")]
    NotCloudFormation(String),
    /// A ResponseURL is there, so the request can still be answered FAILED.
    #[error("malformed CloudFormation request: {problem}")]
    Malformed {
        problem: String,
        partial: Box<Request>,
    },
}

impl Request {
    pub fn parse(event: Value) -> Result<Request, RequestError> {
        match serde_json::from_value::<CfnRequest>(event.clone()) {
            Ok(parsed) => Ok(Self::from_parsed(parsed)),
            Err(error) => Err(Self::salvage(&event, error.to_string())),
        }
    }

    fn from_parsed(parsed: CfnRequest) -> Request {
        let (operation, identity, response_url, properties) = match parsed {
            CfnRequest::Create(r) => (
                Operation::Create,
                (r.stack_id, r.logical_resource_id, r.request_id),
                r.response_url,
                r.resource_properties,
            ),
            CfnRequest::Update(r) => (
                Operation::Update {
                    physical_id: r.physical_resource_id,
                    old_properties: r.old_resource_properties,
                },
                (r.stack_id, r.logical_resource_id, r.request_id),
                r.response_url,
                r.resource_properties,
            ),
            CfnRequest::Delete(r) => (
                Operation::Delete {
                    physical_id: r.physical_resource_id,
                },
                (r.stack_id, r.logical_resource_id, r.request_id),
                r.response_url,
                r.resource_properties,
            ),
            // The enum is non_exhaustive; a request type added later is answered FAILED by the
            // caller's validation rather than silently treated as one of the three.
            #[allow(unreachable_patterns)]
            _ => unreachable!("CloudFormation defines only Create, Update and Delete"),
        };
        let (stack_id, logical_id, request_id) = identity;
        Request {
            operation,
            identity: Identity {
                stack_id,
                logical_id,
                request_id,
            },
            response_url,
            properties,
        }
    }

    /// A request that does not parse can still be answered if it says where to answer; the
    /// response then echoes whatever identity fields it carried.
    fn salvage(event: &Value, problem: String) -> RequestError {
        let text = |key: &str| event.get(key).and_then(Value::as_str).map(str::to_owned);
        let Some(response_url) = text("ResponseURL").filter(|url| !url.is_empty()) else {
            return RequestError::NotCloudFormation(if event.is_object() {
                "it has no ResponseURL".into()
            } else {
                "it is not a JSON object".into()
            });
        };
        let physical_id = text("PhysicalResourceId").unwrap_or_default();
        let problem = match text("RequestType").as_deref() {
            Some("Create" | "Update" | "Delete") => problem,
            Some(other) => format!("unknown RequestType {other:?}"),
            None => "RequestType is missing".into(),
        };
        RequestError::Malformed {
            problem,
            partial: Box::new(Request {
                operation: Operation::Delete { physical_id },
                identity: Identity {
                    stack_id: text("StackId").unwrap_or_default(),
                    logical_id: text("LogicalResourceId").unwrap_or_default(),
                    request_id: text("RequestId").unwrap_or_default(),
                },
                response_url,
                properties: Value::Null,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base(kind: &str) -> Value {
        json!({
            "RequestType": kind,
            "ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:ecs-ami",
            "ResponseURL": "https://example.invalid/presigned",
            "StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/cluster-images/0a1b",
            "RequestId": "r-1",
            "ResourceType": "Custom::EcsAmi",
            "LogicalResourceId": "Ami",
            "PhysicalResourceId": "ami-0123456789abcdef0",
            "ResourceProperties": {"ServiceToken": "x", "SourceAmi": "ami-12345678"},
            "OldResourceProperties": {"SourceAmi": "ami-87654321"}
        })
    }

    #[test]
    fn parses_each_request_type() {
        let create = Request::parse(base("Create")).unwrap();
        assert_eq!(create.operation, Operation::Create);
        assert_eq!(create.identity.stack_name(), "cluster-images");
        assert_eq!(create.properties["SourceAmi"], "ami-12345678");

        let update = Request::parse(base("Update")).unwrap();
        match update.operation {
            Operation::Update {
                physical_id,
                old_properties,
            } => {
                assert_eq!(physical_id, "ami-0123456789abcdef0");
                assert_eq!(old_properties["SourceAmi"], "ami-87654321");
            }
            other => panic!("expected Update, got {other:?}"),
        }
        let delete = Request::parse(base("Delete")).unwrap();
        assert!(matches!(delete.operation, Operation::Delete { .. }));
    }

    #[test]
    fn malformed_request_with_response_url_can_still_be_answered() {
        let mut event = base("Create");
        event.as_object_mut().unwrap().remove("LogicalResourceId");
        match Request::parse(event) {
            Err(RequestError::Malformed { problem, partial }) => {
                assert!(problem.contains("LogicalResourceId"), "{problem}");
                assert_eq!(partial.identity.request_id, "r-1");
                assert_eq!(partial.response_url, "https://example.invalid/presigned");
            }
            other => panic!("expected Malformed, got {other:?}"),
        }
        let mut event = base("Resize");
        event["RequestType"] = json!("Resize");
        match Request::parse(event) {
            Err(RequestError::Malformed { problem, .. }) => {
                assert!(problem.contains("Resize"))
            }
            other => panic!("expected Malformed, got {other:?}"),
        }
    }

    #[test]
    fn events_without_response_url_are_not_cloudformation() {
        for event in [json!({"hello": "world"}), json!([1, 2]), json!("Create")] {
            assert!(matches!(
                Request::parse(event),
                Err(RequestError::NotCloudFormation(_))
            ));
        }
    }

    #[test]
    fn the_issue_time_is_read_from_a_presigned_url() {
        let request = |url: &str| Request {
            operation: Operation::Create,
            identity: Identity {
                stack_id: "s".into(),
                logical_id: "Ami".into(),
                request_id: "r".into(),
            },
            response_url: url.into(),
            properties: Value::Null,
        };
        let signed = request(
            "https://cloudformation-custom-resource-response-useast1.s3.amazonaws.com/x?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Date=20261125T221503Z&X-Amz-SignedHeaders=host&X-Amz-Expires=7200",
        );
        assert_eq!(signed.issued_at(), Some("20261125T221503Z"));
        assert_eq!(request("http://127.0.0.1:9/replaced").issued_at(), None);
        assert_eq!(
            request("https://x/y?X-Amz-Date=yesterday").issued_at(),
            None
        );
    }

    #[test]
    fn stack_name_falls_back_to_the_whole_id() {
        let identity = Identity {
            stack_id: "local-stack".into(),
            logical_id: "Ami".into(),
            request_id: "r".into(),
        };
        assert_eq!(identity.stack_name(), "local-stack");
    }
}
