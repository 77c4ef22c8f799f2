//! The hand-over payload: what one invocation hands the next, and what happens to a payload
//! this version cannot continue.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::aws::Aws;
use crate::cfn::Request;
use std::collections::BTreeMap;

use crate::engine::copies::Copied;
use crate::engine::lease::Lease;
use crate::engine::{
    BuildState, Failed, Failure, ImageMade, Launched, Origin, Phase, Progress, Resolved, Tested,
};

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
/// and the test instance as [`Launched`], the image as
/// [`ImageMade`], [`Tested`], the copies as
/// [`Copied`]) instead of 13 loose fields. Version 3 is still read
/// (`BuildStateV3`), so that this release does not fail the builds in flight when it is deployed.
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
            let state = inner.remove("Build").unwrap_or_default();
            let unreadable = |e: serde_json::Error| {
                format!("the build state handed over is unreadable here: {e}")
            };
            let build = match version {
                CONTINUATION_VERSION => {
                    serde_json::from_value::<BuildState>(state).map_err(unreadable)
                }
                // Written by the previous release: the same build, its parts not yet grouped.
                3 => serde_json::from_value::<BuildStateV3>(state)
                    .map(BuildState::from)
                    .map_err(unreadable),
                _ => Err(format!(
                    "the hand-over payload is of version {version}, this function reads versions 3 and {CONTINUATION_VERSION}"
                )),
            };
            Ok((event, Some(build)))
        }
        other => Ok((other, None)),
    }
}

/// The build state of a version-3 payload, which the release before this one wrote: what the
/// build made as loose fields. Read so that a deploy of this version does not fail the builds in
/// flight; it can go once no such payload can be in flight (a hand-over is delivered within
/// minutes).
#[derive(Debug, Deserialize)]
struct BuildStateV3 {
    phase: Phase,
    image_name: String,
    resolved: Option<Resolved>,
    instance_id: Option<String>,
    image_id: Option<String>,
    snapshot_ids: Vec<String>,
    started_at_ms: u64,
    phase_started_at_ms: u64,
    hand_overs: u32,
    lease: Option<Lease>,
    #[serde(default)]
    outputs: BTreeMap<String, String>,
    #[serde(default)]
    launched_at_ms: Option<u64>,
    #[serde(default)]
    copies: BTreeMap<String, String>,
    #[serde(default)]
    copies_made: Vec<String>,
    #[serde(default)]
    test_instance_id: Option<String>,
    #[serde(default)]
    test_launched_at_ms: Option<u64>,
    #[serde(default)]
    tested_at: Option<String>,
    #[serde(default)]
    kept_image: bool,
}

impl From<BuildStateV3> for BuildState {
    fn from(old: BuildStateV3) -> BuildState {
        // A test instance this build launched has its launch time; one named only by the image's
        // tags (tests passed by an earlier delivery) is what the image passed them on.
        let test_instance = old
            .test_launched_at_ms
            .and(old.test_instance_id.clone())
            .map(|id| Launched {
                id,
                at_ms: old.test_launched_at_ms,
            });
        BuildState {
            phase: old.phase,
            image_name: old.image_name,
            started_at_ms: old.started_at_ms,
            phase_started_at_ms: old.phase_started_at_ms,
            hand_overs: old.hand_overs,
            lease: old.lease,
            resolved: old.resolved,
            outputs: old.outputs,
            builder: old.instance_id.map(|id| Launched {
                id,
                at_ms: old.launched_at_ms,
            }),
            image: old.image_id.map(|id| ImageMade {
                id,
                snapshot_ids: old.snapshot_ids,
                origin: if old.kept_image {
                    Origin::Existing
                } else {
                    Origin::Built
                },
            }),
            test_instance,
            tested: old
                .tested_at
                .zip(old.test_instance_id)
                .map(|(at, instance)| Tested { at, instance }),
            copies: Copied {
                copies: old.copies,
                made: old.copies_made,
            },
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::On;
    use serde_json::json;

    #[test]
    fn a_version_3_payload_is_read_as_the_same_build() {
        let payload = json!({CONTINUATION_KEY: {
            "Version": 3,
            "Event": {"RequestType": "Create"},
            "Build": {
                "phase": {"AwaitStep": {"on": "TestInstance", "index": 0, "command_id": "c-1",
                                        "waited": {"secs": 3, "nanos": 0}, "state_checked": null}},
                "image_name": "stack-Ami-20261207T000000Z-abc",
                "resolved": {"source_image": "ami-0aae19d30bab785d3", "architecture": "x86_64",
                             "instance_type": "t3.medium", "fingerprint": "f"},
                "instance_id": "i-builder", "image_id": "ami-0123456789abcdef0",
                "snapshot_ids": ["snap-1"], "started_at_ms": 10, "phase_started_at_ms": 20,
                "hand_overs": 2,
                "lease": {"token": "t", "generation": 3, "expires_ms": 30},
                "outputs": {"Version": "1"}, "launched_at_ms": 11,
                "copies": {"eu-west-1": "ami-eu", "us-west-2": "ami-us"},
                "copies_made": ["us-west-2"],
                "test_instance_id": "i-test", "test_launched_at_ms": 40,
                "tested_at": null, "kept_image": true
            }
        }});
        let (_, resumed) = split_continuation(payload).unwrap();
        let state = resumed.unwrap().unwrap();
        assert_eq!(
            state.phase,
            Phase::AwaitStep {
                on: On::TestInstance,
                index: 0,
                command_id: "c-1".into(),
                waited: Duration::from_secs(3),
                state_checked: None,
            }
        );
        assert_eq!(
            state.builder,
            Some(Launched {
                id: "i-builder".into(),
                at_ms: Some(11)
            })
        );
        let image = state.image.unwrap();
        assert_eq!(image.id, "ami-0123456789abcdef0");
        assert_eq!(image.snapshot_ids, ["snap-1"]);
        // kept_image: the resource's existing image, never removed by a failure.
        assert_eq!(image.origin, Origin::Existing);
        assert_eq!(state.test_instance.unwrap().at_ms, Some(40));
        assert_eq!(state.tested, None);
        assert_eq!(
            state.copies.made_here().collect::<Vec<_>>(),
            [("us-west-2", "ami-us")]
        );
        assert_eq!(state.lease.unwrap().generation, 3);
        assert_eq!((state.started_at_ms, state.hand_overs), (10, 2));
    }

    #[test]
    fn other_versions_are_refused_with_their_version() {
        for version in [1, 2, CONTINUATION_VERSION + 1] {
            let payload = json!({CONTINUATION_KEY: {"Version": version, "Event": {}, "Build": {}}});
            let (_, resumed) = split_continuation(payload).unwrap();
            let problem = resumed.unwrap().unwrap_err();
            assert!(
                problem.contains(&format!("of version {version}")),
                "{problem}"
            );
        }
    }
}
