//! The CloudFormation custom resource protocol: what arrives, what must go back, and the PUT.
//!
//! Nothing here knows about EC2 or SSM. The handler makes the engine's result an [`Outcome`];
//! this module turns it into the one response CloudFormation waits for.

mod request;
mod response;
pub mod transform;

pub use request::{Identity, Operation, Request, RequestError};
pub use response::{Form, HttpSink, MAX_BODY_BYTES, Response, SinkError, Status};

use std::collections::BTreeMap;

/// What an operation on the resource came to, before it is shaped into a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub status: Status,
    pub physical_id: String,
    /// Required by CloudFormation on FAILED; on SUCCESS it is shown in the stack's events.
    pub reason: Option<String>,
    pub data: BTreeMap<String, String>,
}

impl Outcome {
    pub fn success(physical_id: impl Into<String>, data: BTreeMap<String, String>) -> Self {
        Outcome {
            status: Status::Success,
            physical_id: physical_id.into(),
            reason: None,
            data,
        }
    }

    pub fn failed(physical_id: impl Into<String>, reason: impl Into<String>) -> Self {
        Outcome {
            status: Status::Failed,
            physical_id: physical_id.into(),
            reason: Some(reason.into()),
            data: BTreeMap::new(),
        }
    }

    pub fn with_reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }
}

const FAILED_CREATE_PREFIX: &str = "ecs-ami-not-built-";

/// The physical id answered when a Create fails before an AMI exists.
///
/// CloudFormation sends a Delete for it later; the prefix lets that Delete recognise that there
/// is nothing to remove without calling AWS. It is derived from the request so that a retried
/// delivery of the same Create answers with the same id.
pub fn failed_create_physical_id(identity: &Identity) -> String {
    format!(
        "{FAILED_CREATE_PREFIX}{}",
        crate::hash::short_hash(&identity.request_id)
    )
}

/// Whether `physical_id` is one [`failed_create_physical_id`] made.
pub fn is_failed_create_physical_id(physical_id: &str) -> bool {
    physical_id.starts_with(FAILED_CREATE_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_create_ids_are_stable_and_not_image_ids() {
        let identity = Identity {
            stack_id: "arn:aws:cloudformation:us-east-1:123456789012:stack/s/1".into(),
            logical_id: "Ami".into(),
            request_id: "req-1".into(),
        };
        let first = failed_create_physical_id(&identity);
        assert_eq!(first, failed_create_physical_id(&identity));
        assert!(first.starts_with("ecs-ami-not-built-"));
        assert!(!crate::spec::is_ami_id(&first));
        assert!(crate::spec::is_ami_id("ami-0aae19d30bab785d3"));
    }
}
