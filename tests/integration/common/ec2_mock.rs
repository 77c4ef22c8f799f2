//! EC2 answers scripted at the HTTP level: `aws-sdk-ec2` sends its real requests, signed and
//! retried, and each is answered by the first rule whose action (and condition) matches, with
//! XML shaped as EC2's API reference shows it, which the SDK's own deserializers then read. The
//! counterpart of `aws-smithy-mocks` (SSM's answers).

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use aws_config::{BehaviorVersion, Region};
use aws_sdk_ec2::config::Credentials;
use aws_smithy_async::rt::sleep::{SharedAsyncSleep, TokioSleep};
use aws_smithy_runtime_api::client::http::{
    HttpConnector, HttpConnectorFuture, SharedHttpConnector, http_client_fn,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_types::body::SdkBody;
use ecs_ami::aws::retry_config;

/// A request's form parameters, decoded.
#[derive(Debug, Clone, Default)]
pub struct Query(BTreeMap<String, String>);

impl Query {
    pub fn parse(body: &str) -> Query {
        Query(
            body.split('&')
                .filter_map(|pair| {
                    let (k, v) = pair.split_once('=')?;
                    Some((decode(k), decode(v)))
                })
                .collect(),
        )
    }
    pub fn action(&self) -> &str {
        self.get("Action").unwrap_or_default()
    }
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
    /// The members of the list `name` (`name.1`, `name.2`, ...).
    pub fn list(&self, name: &str) -> Vec<&str> {
        (1..)
            .map_while(|i| self.get(&format!("{name}.{i}")))
            .collect()
    }
    /// The parameters named `name` or under it (`name.…`).
    pub fn named(&self, name: &str) -> Vec<(&str, &str)> {
        self.0
            .iter()
            .filter(|(n, _)| *n == name || n.starts_with(&format!("{name}.")))
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect()
    }
    /// The names of the request's filters.
    pub fn filter_names(&self) -> Vec<&str> {
        self.list_of("Filter", "Name")
    }
    fn list_of(&self, name: &str, member: &str) -> Vec<&str> {
        (1..)
            .map_while(|i| self.get(&format!("{name}.{i}.{member}")))
            .collect()
    }
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

/// What a rule answers.
#[derive(Debug, Clone)]
pub enum Answer {
    /// 200 with this XML document.
    Xml(String),
    /// EC2's error document with this code and message, HTTP 400.
    Error(String, String),
    /// This HTTP status with an empty body (a 503 from a load balancer).
    Status(u16),
}

type Respond = dyn Fn(&Query) -> Answer + Send + Sync;
type Matches = dyn Fn(&Query) -> bool + Send + Sync;

struct Inner {
    action: String,
    when: Box<Matches>,
    /// Answered first, one per call, before `then`.
    sequence: Mutex<VecDeque<Answer>>,
    then: Box<Respond>,
    calls: AtomicUsize,
}

/// Answers the calls of one action (that `when` matches), counting them.
#[derive(Clone)]
pub struct Ec2Rule(Arc<Inner>);

impl std::fmt::Debug for Ec2Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ec2Rule({})", self.0.action)
    }
}

pub struct RuleBuilder {
    action: String,
    when: Box<Matches>,
    sequence: VecDeque<Answer>,
}

/// A rule for `action` (`RunInstances`).
pub fn on(action: &str) -> RuleBuilder {
    RuleBuilder {
        action: action.to_owned(),
        when: Box::new(|_| true),
        sequence: VecDeque::new(),
    }
}

impl RuleBuilder {
    pub fn when(mut self, when: impl Fn(&Query) -> bool + Send + Sync + 'static) -> Self {
        self.when = Box::new(when);
        self
    }
    /// `times` calls answered with `answer` before the rule's own answer.
    pub fn first(mut self, answer: Answer, times: usize) -> Self {
        self.sequence.extend(std::iter::repeat_n(answer, times));
        self
    }
    pub fn then(self, then: impl Fn(&Query) -> Answer + Send + Sync + 'static) -> Ec2Rule {
        Ec2Rule(Arc::new(Inner {
            action: self.action,
            when: self.when,
            sequence: Mutex::new(self.sequence),
            then: Box::new(then),
            calls: AtomicUsize::new(0),
        }))
    }
    pub fn then_xml(self, xml: impl Fn() -> String + Send + Sync + 'static) -> Ec2Rule {
        self.then(move |_| Answer::Xml(xml()))
    }
    pub fn then_error(self, code: &str, message: &str) -> Ec2Rule {
        let (code, message) = (code.to_owned(), message.to_owned());
        self.then(move |_| Answer::Error(code.clone(), message.clone()))
    }
    /// Answers with the action's empty success document (`<StopInstancesResponse/>`).
    pub fn then_ok(self) -> Ec2Rule {
        let action = self.action.clone();
        self.then(move |_| Answer::Xml(document(&action, "")))
    }
}

impl Ec2Rule {
    pub fn num_calls(&self) -> usize {
        self.0.calls.load(Ordering::SeqCst)
    }
    fn answer(&self, query: &Query) -> Option<Answer> {
        if query.action() != self.0.action || !(self.0.when)(query) {
            return None;
        }
        self.0.calls.fetch_add(1, Ordering::SeqCst);
        let next = self.0.sequence.lock().unwrap().pop_front();
        Some(next.unwrap_or_else(|| (self.0.then)(query)))
    }
}

#[derive(Debug, Clone)]
struct Connector(Vec<Ec2Rule>);

impl HttpConnector for Connector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let body = std::str::from_utf8(request.body().bytes().expect("an in-memory body"))
            .expect("a UTF-8 body");
        assert!(
            request.headers().get("authorization").is_some(),
            "every EC2 request is signed"
        );
        let query = Query::parse(body);
        let answer = self
            .0
            .iter()
            .find_map(|rule| rule.answer(&query))
            .unwrap_or_else(|| panic!("no EC2 rule answers {query:?}"));
        let (status, body) = match answer {
            Answer::Xml(xml) => (200, xml),
            Answer::Error(code, message) => (
                400,
                format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code><Message>{}</Message></Error></Errors><RequestID>mocked</RequestID></Response>",
                    escape(&message)
                ),
            ),
            Answer::Status(status) => (status, String::new()),
        };
        HttpConnectorFuture::ready(Ok(HttpResponse::new(
            status.try_into().unwrap(),
            SdkBody::from(body),
        )))
    }
}

/// An EC2 client whose calls are answered by `rules` (first matching rule wins).
pub fn ec2(rules: &[&Ec2Rule]) -> aws_sdk_ec2::Client {
    let connector = Connector(rules.iter().map(|r| (*r).clone()).collect());
    aws_sdk_ec2::Client::new(&config_answered_by(connector))
}

/// An SDK configuration whose every HTTP call `connector` answers: us-east-1, test credentials,
/// the product's retry policy and tokio's sleep, so retries back off on the (paused) test clock.
pub fn config_answered_by(
    connector: impl HttpConnector + Clone + 'static,
) -> aws_config::SdkConfig {
    aws_config::SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(aws_types::sdk_config::SharedCredentialsProvider::new(
            Credentials::new("test", "test", None, None, "mocks"),
        ))
        .http_client(http_client_fn(move |_, _| {
            SharedHttpConnector::new(connector.clone())
        }))
        .retry_config(retry_config())
        .sleep_impl(SharedAsyncSleep::new(TokioSleep::new()))
        .build()
}

pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `<{Action}Response>` around `inner`.
pub fn document(action: &str, inner: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<{action}Response xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\">\n  <requestId>mocked</requestId>{inner}\n</{action}Response>"
    )
}

/// A `tagSet` of the tags.
pub fn tag_set(tags: &[(String, String)]) -> String {
    let items: String = tags
        .iter()
        .map(|(k, v)| {
            format!(
                "<item><key>{}</key><value>{}</value></item>",
                escape(k),
                escape(v)
            )
        })
        .collect();
    format!("<tagSet>{items}</tagSet>")
}

/// An image as DescribeImages lists it.
#[derive(Debug, Clone)]
pub struct MockImage {
    pub id: String,
    pub state: String,
    pub tags: Vec<(String, String)>,
}

impl MockImage {
    pub fn new(id: &str, state: &str) -> MockImage {
        MockImage {
            id: id.to_owned(),
            state: state.to_owned(),
            tags: Vec::new(),
        }
    }
    fn xml(&self) -> String {
        format!(
            "<item><imageId>{}</imageId><name>built</name><imageState>{}</imageState>\
             <architecture>x86_64</architecture>\
             <stateReason><code>Client.InternalError</code><message>Client.InternalError: snapshot failed</message></stateReason>\
             <blockDeviceMapping><item><deviceName>/dev/xvda</deviceName><ebs><snapshotId>snap-0123456789abcdef0</snapshotId></ebs></item></blockDeviceMapping>\
             {}</item>",
            self.id,
            self.state,
            tag_set(&self.tags)
        )
    }
}

/// DescribeImages' answer listing `images`.
pub fn images(images: &[MockImage]) -> String {
    let items: String = images.iter().map(MockImage::xml).collect();
    document("DescribeImages", &format!("<imagesSet>{items}</imagesSet>"))
}

/// An instance as DescribeInstances lists it.
#[derive(Debug, Clone)]
pub struct MockInstance {
    pub id: String,
    pub state: String,
    /// launchTime, in EC2's format.
    pub launched: Option<String>,
}

impl MockInstance {
    pub fn new(id: &str, state: &str) -> MockInstance {
        MockInstance {
            id: id.to_owned(),
            state: state.to_owned(),
            launched: None,
        }
    }
}

/// DescribeInstances' answer: one reservation holding `instances`.
pub fn instances(instances: &[MockInstance]) -> String {
    let items: String = instances
        .iter()
        .map(|i| {
            format!(
                "<item><instanceId>{}</instanceId><instanceState><code>0</code><name>{}</name></instanceState>{}</item>",
                i.id,
                i.state,
                i.launched
                    .as_ref()
                    .map(|t| format!("<launchTime>{t}</launchTime>"))
                    .unwrap_or_default()
            )
        })
        .collect();
    let reservations = if instances.is_empty() {
        String::new()
    } else {
        format!(
            "<item><reservationId>r-1</reservationId><instancesSet>{items}</instancesSet></item>"
        )
    };
    document(
        "DescribeInstances",
        &format!("<reservationSet>{reservations}</reservationSet>"),
    )
}

/// RunInstances' answer: `id` was launched.
pub fn launched(id: &str) -> String {
    document(
        "RunInstances",
        &format!(
            "<reservationId>r-1</reservationId><instancesSet><item><instanceId>{id}</instanceId><instanceState><code>0</code><name>pending</name></instanceState></item></instancesSet>"
        ),
    )
}

/// CreateImage's (or CopyImage's) answer: `id`.
pub fn image_id(action: &str, id: &str) -> String {
    document(action, &format!("<imageId>{id}</imageId>"))
}
