//! The hand-over payload: what one invocation hands the next, and what happens to a payload
//! this version cannot continue.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::aws::Aws;
use crate::cfn::Request;
use crate::engine::{BuildState, Failed, Failure, Progress};

use super::operate::remove_build;

/// The key that marks a hand-over payload, as opposed to a CloudFormation event.
pub const CONTINUATION_KEY: &str = "EcsAmiContinuation";

/// The version of the hand-over payload this code writes and reads. Bumped when [`BuildState`]
/// changes in a way the previous version cannot read; a payload of another version (a deploy
/// in the middle of a build) is not dropped: its build is cleaned up and the original request
/// it carries answered FAILED.
/// 2: the lease moved under its resource and is succeeded at each hand-over (a payload of
/// version 1 carries a lease this version cannot find).
/// 3: the phases that wait for SSM and run steps name the instance they work on
/// ([`On`](crate::engine::On)) instead of being separate phases for the test instance.
/// 4: what the build made is grouped, one value per thing, present once it exists (the builder
/// and the test instance as [`Launched`](crate::engine::Launched), the image as
/// [`ImageMade`](crate::engine::ImageMade), [`Tested`](crate::engine::Tested), the copies as
/// [`Copied`](crate::engine::copies::Copied)) instead of 13 loose fields.
pub const CONTINUATION_VERSION: u64 = 4;

/// What one invocation hands the next: the original request, untouched, and the build's state.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Continuation {
    /// Absent in payloads written before versions existed, which this version reads as 1.
    #[serde(default = "first_version")]
    pub version: u64,
    pub event: Value,
    pub build: BuildState,
}

pub(super) fn first_version() -> u64 {
    1
}

impl Continuation {
    pub fn payload(&self) -> Value {
        serde_json::json!({ CONTINUATION_KEY: self })
    }
}

/// A hand-over payload's original request, and its build state or why this version cannot
/// continue it. An error only when not even the request can be found in it.
pub(super) type Resumed = Option<Result<BuildState, String>>;

pub(super) fn split_continuation(event: Value) -> Result<(Value, Resumed), String> {
    match event {
        Value::Object(mut fields) if fields.contains_key(CONTINUATION_KEY) => {
            let Some(Value::Object(mut inner)) = fields.remove(CONTINUATION_KEY) else {
                return Err("unreadable hand-over payload: not an object".into());
            };
            let event = inner
                .remove("Event")
                .ok_or("unreadable hand-over payload: it carries no request")?;
            let version = inner
                .get("Version")
                .map_or(Some(1), Value::as_u64)
                .unwrap_or(u64::MAX);
            let build = if version != CONTINUATION_VERSION {
                Err(format!(
                    "the hand-over payload is of version {version}, this function reads version {CONTINUATION_VERSION}"
                ))
            } else {
                serde_json::from_value::<BuildState>(inner.remove("Build").unwrap_or_default())
                    .map_err(|e| format!("the build state handed over is unreadable here: {e}"))
            };
            Ok((event, Some(build)))
        }
        other => Ok((other, None)),
    }
}

/// A hand-over this version cannot continue (a deploy mid-build): the build is cleaned up by its
/// request's tags and the original request answered FAILED, instead of the event being dropped
/// and the stack waiting out its timeout.
pub(super) async fn cannot_continue(request: &Request, aws: &Aws, problem: &str) -> Progress {
    tracing::error!(
        problem,
        "a handed-over build cannot be continued by this version"
    );
    // The build is over: its lease goes too (it would otherwise stay in Parameter Store).
    let report = remove_build(aws, request, Duration::from_secs(60)).await;
    Progress::Failed(Box::new(Failed {
        failure: Failure::NotContinued {
            problem: problem.to_owned(),
        },
        cleanup: Some(report),
    }))
}
