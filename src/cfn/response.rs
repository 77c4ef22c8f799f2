use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::{Identity, Outcome};

/// CloudFormation rejects a response body larger than this.
pub const MAX_BODY_BYTES: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    Success,
    Failed,
}

impl Status {
    /// As CloudFormation spells it: `SUCCESS` or `FAILED`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Status::Success => "SUCCESS",
            Status::Failed => "FAILED",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Response {
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub physical_resource_id: String,
    pub stack_id: String,
    pub request_id: String,
    pub logical_resource_id: String,
    pub no_echo: bool,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, String>,
    /// What the body is: a custom resource's response, or a wait condition's signal.
    #[serde(skip)]
    pub form: Form,
}

/// Where an answer goes, and so the shape of its body.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Form {
    /// To the request's ResponseURL: the custom resource response.
    #[default]
    Response,
    /// To a wait condition handle's URL: the build's end, as the signal its wait condition
    /// counts (the EcsAmi macro's long builds).
    Signal,
}

/// A wait condition signal (the user guide's "Wait condition signal JSON format"): `Status`
/// SUCCESS or FAILURE, `UniqueId` the signal's id (a repeated one is ignored as a
/// retransmission), `Data` what `!GetAtt Wait.Data` gives under that id.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct SignalBody<'a> {
    status: &'static str,
    reason: &'a str,
    unique_id: &'a str,
    data: &'a str,
}

impl Response {
    pub fn new(identity: &Identity, outcome: Outcome) -> Response {
        let reason = match (outcome.status, outcome.reason) {
            (Status::Failed, None) => Some("failed without a reason".to_owned()),
            (_, reason) => reason,
        };
        Response {
            status: outcome.status,
            reason,
            // CloudFormation refuses an empty physical id; a request too broken to carry one
            // still needs an answer.
            physical_resource_id: if outcome.physical_id.is_empty() {
                super::failed_create_physical_id(identity)
            } else {
                outcome.physical_id
            },
            stack_id: identity.stack_id.clone(),
            request_id: identity.request_id.clone(),
            logical_resource_id: identity.logical_id.clone(),
            no_echo: false,
            data: outcome.data,
            form: Form::Response,
        }
    }

    /// The same answer as a wait condition's signal (see [`Form::Signal`]).
    pub fn into_signal(self) -> Response {
        Response {
            form: Form::Signal,
            ..self
        }
    }

    /// The JSON body, at most [`MAX_BODY_BYTES`]: the Reason is shortened (keeping its start,
    /// which names the cause, and its end, which holds the last output lines). Data that cannot
    /// fit is dropped, saying so. Ids are echoed as CloudFormation sent them; only a request that
    /// did not come from CloudFormation (whose ids are bounded: a physical id is at most 1 KB)
    /// can carry ids too long to fit, and those are cut.
    pub fn body(&self) -> Vec<u8> {
        if self.form == Form::Signal {
            return self.signal_body();
        }
        let full = serde_json::to_vec(self).expect("a response always serializes");
        if full.len() <= MAX_BODY_BYTES {
            return full;
        }
        let size = |r: &Response| serde_json::to_vec(r).expect("serializes").len();
        let mut shaped = self.clone();
        let mut reason = shaped.reason.take().unwrap_or_default();
        shaped.reason = Some(String::new());
        // Attributes are dropped one at a time until the body fits: step outputs first (the
        // longest first), then the built-in attributes other than ImageId, in an order that
        // keeps the most useful longest. ImageId (also `Ref`) always stays. The Reason names
        // what was dropped: a `!GetAtt` of it fails the stack, and must say why.
        let mut dropped: Vec<String> = Vec::new();
        let note = |dropped: &[String]| {
            format!(
                " (response Data dropped: {}; they exceeded the {MAX_BODY_BYTES}-byte response limit)",
                dropped.join(", ")
            )
        };
        while size(&shaped) + note(&dropped).len() + 1000.min(reason.len()) > MAX_BODY_BYTES {
            let Some(next) = next_to_drop(&shaped.data) else {
                break;
            };
            shaped.data.remove(&next);
            dropped.push(next);
        }
        if !dropped.is_empty() {
            reason = format!("{}{}", shorten_middle(&reason, 1000), note(&dropped));
        }
        if size(&shaped) > MAX_BODY_BYTES {
            for (field, most) in [
                (&mut shaped.physical_resource_id, 1024),
                (&mut shaped.stack_id, 512),
                (&mut shaped.request_id, 256),
                (&mut shaped.logical_resource_id, 256),
            ] {
                *field = shorten_escaped(field, most);
            }
        }
        // The empty Reason's two quotes are already counted; the shortened one brings its own.
        let room = MAX_BODY_BYTES.saturating_sub(size(&shaped)) + 2;
        shaped.reason = Some(shorten_escaped(&reason, room));
        serde_json::to_vec(&shaped).expect("serializes")
    }
}

impl Response {
    /// The signal: `UniqueId` the request's id (the build's: a later delivery's repeat of it is
    /// ignored), `Data` the physical id (the AMI's id on SUCCESS), the Reason shortened so that
    /// the body keeps to [`MAX_BODY_BYTES`] (no limit is documented for a signal; a response's
    /// is kept).
    fn signal_body(&self) -> Vec<u8> {
        let status = match self.status {
            Status::Success => "SUCCESS",
            Status::Failed => "FAILURE",
        };
        let reason = self.reason.as_deref().unwrap_or(match self.status {
            Status::Success => "built",
            Status::Failed => "failed without a reason",
        });
        let body = |reason: &str| {
            serde_json::to_vec(&SignalBody {
                status,
                reason,
                unique_id: &self.request_id,
                data: &self.physical_resource_id,
            })
            .expect("a signal always serializes")
        };
        let without_reason = body("").len();
        let room = MAX_BODY_BYTES.saturating_sub(without_reason) + 2;
        body(&shorten_escaped(reason, room))
    }
}

/// Built-in attributes other than ImageId, in the order they are given up when a response is too
/// large (the last is kept longest).
const BUILT_IN_DROP_ORDER: [&str; 6] = [
    "TestInstanceId",
    "TestedAt",
    "SnapshotIds",
    "Fingerprint",
    "ImageName",
    "SourceImageId",
];

/// Whether an attribute is never dropped: ImageId, and each copy's `ImageId.<region>` (a
/// `!GetAtt` of a missing attribute fails the stack; at most 16 of them fit easily).
fn never_dropped(name: &str) -> bool {
    name == "ImageId" || name.starts_with("ImageId.")
}

/// The next attribute to drop: the longest step output, else the next built-in; never ImageId
/// nor a copy's id.
fn next_to_drop(data: &BTreeMap<String, String>) -> Option<String> {
    let outputs = data
        .iter()
        .filter(|(k, _)| !never_dropped(k) && !BUILT_IN_DROP_ORDER.contains(&k.as_str()));
    if let Some((name, _)) = outputs.max_by_key(|(k, v)| k.len() + v.len()) {
        return Some(name.clone());
    }
    BUILT_IN_DROP_ORDER
        .iter()
        .find(|k| data.contains_key(**k))
        .map(|k| (*k).to_owned())
}

/// Like [`shorten_middle`], within `max` bytes once escaped as a JSON string (control
/// characters take six bytes there).
fn shorten_escaped(text: &str, max: usize) -> String {
    let escaped = |t: &str| serde_json::to_string(t).expect("a string serializes").len();
    let mut budget = max;
    loop {
        let candidate = shorten_middle(text, budget);
        let over = escaped(&candidate).saturating_sub(max);
        if over == 0 || budget == 0 {
            return candidate;
        }
        budget = budget.saturating_sub(over.max(1));
    }
}

/// Keep the head and tail of `text` within `max` bytes, joined by a marker, on char boundaries.
fn shorten_middle(text: &str, max: usize) -> String {
    const MARKER: &str = " […] ";
    if text.len() <= max {
        return text.to_owned();
    }
    if max <= MARKER.len() {
        return text.chars().take(max).filter(char::is_ascii).collect();
    }
    let keep = max - MARKER.len();
    let head_len = floor_char_boundary(text, keep * 2 / 3);
    let tail_start = ceil_char_boundary(text, text.len() - (keep - head_len));
    format!("{}{MARKER}{}", &text[..head_len], &text[tail_start..])
}

fn floor_char_boundary(text: &str, mut index: usize) -> usize {
    while !text.is_char_boundary(index) {
        index -= 1;
    }
    index
}

fn ceil_char_boundary(text: &str, mut index: usize) -> usize {
    while !text.is_char_boundary(index) {
        index += 1;
    }
    index
}

#[derive(Debug, thiserror::Error)]
#[error(
    "CloudFormation's ResponseURL did not accept the response after {attempts} attempts: {last}"
)]
pub struct SinkError {
    pub attempts: u32,
    pub last: String,
}

/// Sends the response with a PUT to the presigned ResponseURL.
///
/// The URL is a credential for the stack operation: it appears in no log line and no error.
#[derive(Clone)]
pub struct HttpSink {
    client: reqwest::Client,
    attempts: u32,
    first_backoff: Duration,
}

impl HttpSink {
    pub fn new() -> HttpSink {
        HttpSink::with_retries(6, Duration::from_millis(500))
    }

    pub fn with_retries(attempts: u32, first_backoff: Duration) -> HttpSink {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .expect("the HTTP client builds with static settings");
        HttpSink {
            client,
            attempts: attempts.max(1),
            first_backoff,
        }
    }

    pub async fn send(&self, url: &str, response: &Response) -> Result<(), SinkError> {
        let body = response.body();
        let mut last = String::new();
        for attempt in 1..=self.attempts {
            let sent = self
                .client
                .put(url)
                // The presigned URL is signed for an empty content type.
                .header(reqwest::header::CONTENT_TYPE, "")
                .body(body.clone())
                .send()
                .await;
            match sent {
                Ok(answer) if answer.status().is_success() => {
                    tracing::info!(status = ?response.status, attempt, "response delivered to CloudFormation");
                    return Ok(());
                }
                Ok(answer) => last = format!("HTTP {}", answer.status()),
                // without_url: reqwest errors embed the URL, which must not be logged.
                Err(error) => last = error.without_url().to_string(),
            }
            tracing::warn!(attempt, problem = %last, "response PUT failed");
            if attempt < self.attempts {
                tokio::time::sleep(self.first_backoff * 2u32.saturating_pow(attempt - 1)).await;
            }
        }
        Err(SinkError {
            attempts: self.attempts,
            last,
        })
    }
}

impl Default for HttpSink {
    fn default() -> Self {
        HttpSink::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> Identity {
        Identity {
            stack_id: "arn:aws:cloudformation:us-east-1:123456789012:stack/s/guid".into(),
            logical_id: "Ami".into(),
            request_id: "5b7d".into(),
        }
    }

    /// The user guide's "Wait condition signal JSON format": Status SUCCESS or FAILURE, Reason,
    /// UniqueId, Data.
    #[test]
    fn a_signal_carries_the_request_as_its_id_and_the_image_as_its_data() {
        let mut data = BTreeMap::new();
        data.insert("ImageId".into(), "ami-0123456789abcdef0".into());
        let done = Response::new(&identity(), Outcome::success("ami-0123456789abcdef0", data));
        let body: serde_json::Value =
            serde_json::from_slice(&done.clone().into_signal().body()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"Status": "SUCCESS", "Reason": "built", "UniqueId": "5b7d", "Data": "ami-0123456789abcdef0"})
        );
        // The response itself is unchanged.
        assert_eq!(done.body(), serde_json::to_vec(&done).unwrap());
        let long = format!("step 2 failed: {}", "x".repeat(9000));
        let failed = Response::new(&identity(), Outcome::failed("ecs-ami-not-built-1", long))
            .into_signal()
            .body();
        assert!(failed.len() <= MAX_BODY_BYTES, "{}", failed.len());
        let body: serde_json::Value = serde_json::from_slice(&failed).unwrap();
        assert_eq!(body["Status"], "FAILURE");
        assert!(
            body["Reason"]
                .as_str()
                .unwrap()
                .starts_with("step 2 failed: xxx")
        );
    }

    #[test]
    fn small_responses_are_sent_whole_with_echoed_ids() {
        let mut data = BTreeMap::new();
        data.insert("ImageId".into(), "ami-0123456789abcdef0".into());
        let response = Response::new(&identity(), Outcome::success("ami-0123456789abcdef0", data));
        let body: serde_json::Value = serde_json::from_slice(&response.body()).unwrap();
        assert_eq!(body["Status"], "SUCCESS");
        assert_eq!(body["PhysicalResourceId"], "ami-0123456789abcdef0");
        assert_eq!(body["StackId"], identity().stack_id);
        assert_eq!(body["RequestId"], "5b7d");
        assert_eq!(body["LogicalResourceId"], "Ami");
        assert_eq!(body["Data"]["ImageId"], "ami-0123456789abcdef0");
        assert!(body.get("Reason").is_none());
    }

    #[test]
    fn long_reasons_are_cut_in_the_middle_to_fit() {
        let reason = format!(
            "step \"install\" exited 1: {} LAST-LINE",
            "\"quoted\" ünïcode line\n".repeat(800)
        );
        let response = Response::new(
            &identity(),
            Outcome::failed("ami-0123456789abcdef0", reason),
        );
        let body = response.body();
        assert!(body.len() <= MAX_BODY_BYTES, "{} bytes", body.len());
        let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let kept = parsed["Reason"].as_str().unwrap();
        assert!(kept.starts_with("step \"install\" exited 1"));
        assert!(kept.ends_with("LAST-LINE"));
        assert!(kept.contains("[…]"));
        assert_eq!(parsed["PhysicalResourceId"], "ami-0123456789abcdef0");
    }

    #[test]
    fn oversized_data_is_dropped_and_said() {
        let mut data = BTreeMap::new();
        data.insert("Big".into(), "x".repeat(5000));
        let response = Response::new(&identity(), Outcome::success("ami-12345678", data));
        let body = response.body();
        assert!(body.len() <= MAX_BODY_BYTES);
        let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(parsed["Reason"].as_str().unwrap().contains("Data dropped"));
    }

    #[test]
    fn step_outputs_are_dropped_before_built_ins_and_image_id_always_stays() {
        let built_ins = |data: &mut BTreeMap<String, String>| {
            data.insert("ImageId".into(), "ami-0123456789abcdef0".into());
            data.insert(
                "ImageName".into(),
                "stack-Ami-20261125T083000Z-abcdef".into(),
            );
            data.insert("SourceImageId".into(), "ami-0aae19d30bab785d3".into());
            data.insert("SnapshotIds".into(), "snap-0123456789abcdef0".into());
            data.insert("Fingerprint".into(), format!("v1-{}", "f".repeat(64)));
        };
        // The most step outputs a resource may have: ten of 256 characters with 64-character
        // names. As JSON, quotes take two bytes each: about 5.8 KB of them.
        let mut data = BTreeMap::new();
        built_ins(&mut data);
        for i in 0..10 {
            data.insert(
                format!("Output{i:02}{}", "N".repeat(56)),
                format!("\"{i}").repeat(128),
            );
        }
        let response = Response::new(&identity(), Outcome::success("ami-0123456789abcdef0", data));
        let body = response.body();
        assert!(body.len() <= MAX_BODY_BYTES, "{} bytes", body.len());
        let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let kept = parsed["Data"].as_object().unwrap();
        for name in [
            "ImageId",
            "ImageName",
            "SourceImageId",
            "SnapshotIds",
            "Fingerprint",
        ] {
            assert!(kept.contains_key(name), "{name} dropped: {parsed}");
        }
        let reason = parsed["Reason"].as_str().unwrap();
        let names: Vec<String> = (0..10)
            .map(|i| format!("Output{i:02}{}", "N".repeat(56)))
            .collect();
        let dropped: Vec<&String> = names.iter().filter(|n| !kept.contains_key(*n)).collect();
        assert!(!dropped.is_empty());
        for name in dropped {
            assert!(reason.contains(name.as_str()), "{name} not named: {reason}");
        }

        // With 16 copies in other regions (Regions' most), every copy's id stays too.
        let mut data = BTreeMap::new();
        built_ins(&mut data);
        for i in 1..=16 {
            data.insert(
                format!("ImageId.ap-southeast-{i}"),
                "ami-0123456789abcdef0".into(),
            );
            data.insert(format!("Output{i:02}{}", "N".repeat(48)), "v".repeat(256));
        }
        let body =
            Response::new(&identity(), Outcome::success("ami-0123456789abcdef0", data)).body();
        assert!(body.len() <= MAX_BODY_BYTES, "{} bytes", body.len());
        let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap();
        for i in 1..=16 {
            let name = format!("ImageId.ap-southeast-{i}");
            assert_eq!(parsed["Data"][&name], "ami-0123456789abcdef0", "{name}");
        }

        // Built-ins go only once no output is left, and ImageId never.
        let mut data = BTreeMap::new();
        built_ins(&mut data);
        data.insert("SnapshotIds".into(), "snap-0123456789abcdef0,".repeat(200));
        let body =
            Response::new(&identity(), Outcome::success("ami-0123456789abcdef0", data)).body();
        assert!(body.len() <= MAX_BODY_BYTES);
        let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(parsed["Data"]["ImageId"], "ami-0123456789abcdef0");
        assert_eq!(
            parsed["Data"]["ImageName"],
            "stack-Ami-20261125T083000Z-abcdef"
        );
        assert!(parsed["Data"].get("SnapshotIds").is_none());
        assert!(
            parsed["Reason"]
                .as_str()
                .unwrap()
                .contains("Data dropped: SnapshotIds")
        );
    }

    #[test]
    fn failed_without_physical_id_gets_a_stable_one_and_a_reason() {
        let response = Response::new(
            &identity(),
            Outcome {
                status: Status::Failed,
                physical_id: String::new(),
                reason: None,
                data: BTreeMap::new(),
            },
        );
        assert!(!response.physical_resource_id.is_empty());
        assert!(response.reason.is_some());
    }

    #[test]
    fn shorten_middle_respects_char_boundaries() {
        let text = "é".repeat(100);
        for max in [0, 3, 7, 10, 51, 199] {
            let cut = shorten_middle(&text, max);
            assert!(cut.len() <= max, "{max}: {}", cut.len());
        }
    }

    #[test]
    fn ids_too_long_for_any_cloudformation_request_are_cut_to_fit() {
        for id in ["x".repeat(5000), "\u{1}".repeat(5000), "é".repeat(3000)] {
            let identity = Identity {
                stack_id: id.clone(),
                logical_id: id.clone(),
                request_id: id.clone(),
            };
            let mut data = BTreeMap::new();
            data.insert("A".to_owned(), "b".repeat(3000));
            let response = Response::new(&identity, Outcome::success(id.clone(), data));
            let body = response.body();
            assert!(body.len() <= MAX_BODY_BYTES, "{} bytes", body.len());
            let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert!(parsed["Reason"].as_str().unwrap().contains("Data dropped"));
        }
    }
}
