//! EC2's Query API for the few EC2 actions the build uses, without the generated `aws-sdk-ec2`.
//!
//! Why: `aws-sdk-ec2` covers all of EC2's 700-odd actions, and rustc needs about 7 GB of memory
//! to compile it, which made a release build of the Lambda need a build server (README, "Deploy
//! to AWS"). The build uses about 25 actions. Each is a form-encoded POST
//! (`Action=…&Version=2016-11-15&…`) answered with XML
//! (<https://docs.aws.amazon.com/AWSEC2/latest/APIReference/Query-Requests.html>,
//! <https://docs.aws.amazon.com/AWSEC2/latest/APIReference/query-api-troubleshooting.html>).
//!
//! Everything around the request is still the AWS SDK's own runtime (`aws-smithy-runtime`'s
//! orchestrator, the same one the generated clients run on): SigV4 signing with the SDK
//! configuration's credentials and identity cache, the same HTTP client, timeouts, and the
//! standard retry strategy with the SDK's classifiers (throttling and transient error codes,
//! HTTP 500/502/503/504, connection failures) under the product's retry policy. Only the
//! encoding of parameters and the reading of answers are here.

use std::fmt;

use aws_runtime::auth::SigV4OperationSigningConfig;
use aws_runtime::auth::sigv4::{SCHEME_ID, SigV4AuthScheme};
use aws_runtime::invocation_id::InvocationIdInterceptor;
use aws_runtime::recursion_detection::RecursionDetectionInterceptor;
use aws_runtime::request_info::RequestInfoInterceptor;
use aws_runtime::retries::classifiers::AwsErrorCodeClassifier;
use aws_runtime::service_clock_skew::{ServiceClockSkewClassifier, ServiceClockSkewInterceptor};
use aws_runtime::user_agent::{ApiMetadata, UserAgentInterceptor};
use aws_smithy_runtime::client::defaults::default_http_client_plugin_v2;
use aws_smithy_runtime::client::identity::IdentityCache;
use aws_smithy_runtime::client::orchestrator::operation::Operation;
use aws_smithy_runtime::client::retries::RetryPartition;
use aws_smithy_runtime::client::retries::classifiers::{
    HttpStatusCodeClassifier, TransientErrorClassifier,
};
use aws_smithy_runtime::client::stalled_stream_protection::StalledStreamProtectionInterceptor;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::auth::static_resolver::StaticAuthSchemeOptionResolver;
use aws_smithy_runtime_api::client::auth::{
    AuthSchemeOptionResolverParams, SharedAuthSchemeOptionResolver,
};
use aws_smithy_runtime_api::client::http::SharedHttpClient;
use aws_smithy_runtime_api::client::identity::{SharedIdentityCache, SharedIdentityResolver};
use aws_smithy_runtime_api::client::interceptors::SharedInterceptor;
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse, OrchestratorError};
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponentsBuilder;
use aws_smithy_runtime_api::client::runtime_plugin::{RuntimePlugin, StaticRuntimePlugin};
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::config_bag::Layer;
use aws_smithy_types::error::ErrorMetadata;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use aws_smithy_types::timeout::TimeoutConfig;
use aws_types::SdkConfig;
use aws_types::SigningName;
use aws_types::region::{Region, SigningRegion};
use aws_types::service_config::ServiceConfigKey;

use super::AwsError;
use super::xml::{self, Element};

/// The API version every EC2 Query request names.
const API_VERSION: &str = "2016-11-15";

/// A client of one region's EC2 endpoint.
#[derive(Clone, Debug)]
pub struct Ec2 {
    config: SdkConfig,
    region: Option<String>,
    /// The configuration's HTTP client, or the SDK's default one, made once: its connections
    /// are reused from call to call (and from region to region).
    http: Option<SharedHttpClient>,
    /// What the clock-skew interceptor learned of the difference between this machine's clock
    /// and AWS's, kept from call to call as a generated client keeps it.
    clock_skew: SharedInterceptor,
    /// Shared by every call (and every region): credentials are resolved once and refreshed
    /// before they expire, not fetched for each request.
    identity_cache: SharedIdentityCache,
}

impl Ec2 {
    /// A client with the configuration's region, credentials, HTTP client, retry policy,
    /// timeouts, sleep and time source, and its endpoint URL (a local AWS) if it has one.
    pub fn new(config: &SdkConfig) -> Ec2 {
        let http = config.http_client().or_else(|| {
            // What an SDK client without one uses (aws_config's loader leaves it to them).
            let behavior = config
                .behavior_version()
                .unwrap_or_else(aws_config::BehaviorVersion::latest);
            default_http_client_plugin_v2(behavior)?
                .runtime_components(&RuntimeComponentsBuilder::new("ec2-http"))
                .http_client()
        });
        Ec2 {
            region: config.region().map(|r| r.as_ref().to_owned()),
            http,
            clock_skew: SharedInterceptor::new(ServiceClockSkewInterceptor::new()),
            identity_cache: config
                .identity_cache()
                .unwrap_or_else(|| IdentityCache::lazy().build()),
            config: config.clone(),
        }
    }
    pub fn region(&self) -> Option<&str> {
        self.region.as_deref()
    }
    /// The same client for another region.
    pub fn in_region(&self, region: &str) -> Ec2 {
        Ec2 {
            region: Some(region.to_owned()),
            ..self.clone()
        }
    }
    /// The endpoint the configuration names for EC2 (`AWS_ENDPOINT_URL_EC2`, or the profile's
    /// `services` section), or for every service (`AWS_ENDPOINT_URL`, a local AWS), or else
    /// EC2's own in the region's partition
    /// (<https://docs.aws.amazon.com/general/latest/gr/ec2-service.html>), with FIPS and
    /// dual-stack as configured.
    fn endpoint(&self, region: &str) -> String {
        let for_ec2 = self.config.service_config().and_then(|c| {
            let key = ServiceConfigKey::builder()
                .service_id("EC2")
                .env("AWS_ENDPOINT_URL")
                .profile("endpoint_url")
                .build()
                .ok()?;
            c.load_config(key)
        });
        if let Some(url) = for_ec2.as_deref().or(self.config.endpoint_url()) {
            return url.to_owned();
        }
        // The partitions' DNS suffixes (plain, dual-stack), as the AWS SDKs' partition data
        // gives them.
        let (suffix, dual_stack_suffix) = [
            ("cn-", "amazonaws.com.cn", "api.amazonwebservices.com.cn"),
            ("eusc-", "amazonaws.eu", "api.amazonwebservices.eu"),
            ("us-isob-", "sc2s.sgov.gov", "api.aws.scloud"),
            ("us-isof-", "csp.hci.ic.gov", "api.aws.hci.ic.gov"),
            ("us-iso-", "c2s.ic.gov", "api.aws.ic.gov"),
            ("eu-isoe-", "cloud.adc-e.uk", "api.cloud-aws.adc-e.uk"),
        ]
        .iter()
        .find(|(prefix, ..)| region.starts_with(prefix))
        .map(|&(_, plain, dual)| (plain, dual))
        .unwrap_or(("amazonaws.com", "api.aws"));
        let dual_stack = self.config.use_dual_stack() == Some(true);
        // GovCloud's EC2 endpoints are FIPS endpoints already, under EC2's own name (but its
        // dual-stack ones are not).
        let fips =
            self.config.use_fips() == Some(true) && (dual_stack || !region.starts_with("us-gov-"));
        format!(
            "https://ec2{}.{region}.{}",
            if fips { "-fips" } else { "" },
            if dual_stack {
                dual_stack_suffix
            } else {
                suffix
            }
        )
    }

    /// Sends `operation` (`ec2:RunInstances`) with `params` and returns the answer's root
    /// element, or the error as EC2 named it.
    pub(super) async fn call(&self, operation: &'static str, params: Params) -> Result<Element> {
        self.send(operation, params)
            .await
            .map_err(|e| AwsError::from_sdk(operation, e))
    }

    async fn send(
        &self,
        operation: &'static str,
        params: Params,
    ) -> std::result::Result<Element, SdkError<Ec2Error, HttpResponse>> {
        let action = operation.trim_start_matches("ec2:");
        let Some(region) = self.region.clone() else {
            return Err(SdkError::construction_failure(
                "no AWS region is configured (AWS_REGION)",
            ));
        };
        let Some(http) = self.http.clone() else {
            return Err(SdkError::construction_failure(
                "no HTTP client is configured",
            ));
        };
        let retry = self
            .config
            .retry_config()
            .cloned()
            .unwrap_or_else(super::retry_config);
        let mut builder = Operation::builder()
            .service_name("ec2")
            .operation_name(action)
            .behavior_version(
                self.config
                    .behavior_version()
                    .unwrap_or_else(aws_config::BehaviorVersion::latest),
            )
            .http_client(http)
            .endpoint_url(&self.endpoint(&region))
            .standard_retry(&retry)
            .retry_classifier(HttpStatusCodeClassifier::default())
            .retry_classifier(TransientErrorClassifier::<Ec2Error>::new())
            .retry_classifier(AwsErrorCodeClassifier::<Ec2Error>::new())
            .retry_classifier(ServiceClockSkewClassifier::<Ec2Error>::new())
            // What the generated clients install for every call: clock-skew correction, the
            // SDK's request headers and user agent, Lambda's trace id passed on, dropping a
            // connection that failed, and stalled-stream protection.
            .interceptor(self.clock_skew.clone())
            .interceptor(RequestInfoInterceptor::new())
            .interceptor(UserAgentInterceptor::new())
            .interceptor(InvocationIdInterceptor::new())
            .interceptor(RecursionDetectionInterceptor::new())
            .interceptor(StalledStreamProtectionInterceptor::default())
            .with_connection_poisoning()
            .timeout_config(
                self.config
                    .timeout_config()
                    .cloned()
                    .unwrap_or_else(TimeoutConfig::disabled),
            )
            .runtime_plugin(self.signing(region));
        if let Some(config) = self.config.stalled_stream_protection() {
            builder = builder.stalled_stream_protection(config);
        }
        if let Some(sleep) = self.config.sleep_impl() {
            builder = builder.sleep_impl(sleep);
        }
        if let Some(time) = self.config.time_source() {
            builder = builder.time_source(time);
        }
        builder
            .serializer(move |params: Params| params.request(action))
            .deserializer(read_answer)
            .build()
            .invoke(params)
            .await
    }

    /// SigV4 for `ec2` in the region, with the configuration's credentials.
    fn signing(&self, region: String) -> StaticRuntimePlugin {
        let mut layer = Layer::new("ec2-signing");
        layer.store_put(AuthSchemeOptionResolverParams::new(()));
        // Retries are budgeted per region, as the generated client does (`ec2-us-east-1`), so
        // throttling in one copy region does not spend another's.
        layer.store_put(RetryPartition::new(format!("ec2-{region}")));
        // The user agent names the API (`api/ec2#…`) and, if configured, the application.
        layer.store_put(ApiMetadata::new("ec2", env!("CARGO_PKG_VERSION")));
        if let Some(app) = self.config.app_name() {
            layer.store_put(app.clone());
        }
        layer.store_put(SigV4OperationSigningConfig {
            region: Some(SigningRegion::from(Region::new(region))),
            name: Some(SigningName::from_static("ec2")),
            ..SigV4OperationSigningConfig::default()
        });
        let mut components = RuntimeComponentsBuilder::new("ec2-signing")
            .with_auth_scheme_option_resolver(Some(SharedAuthSchemeOptionResolver::new(
                StaticAuthSchemeOptionResolver::new(vec![SCHEME_ID]),
            )))
            .with_auth_scheme(SigV4AuthScheme::new())
            .with_identity_cache(Some(self.identity_cache.clone()));
        if let Some(credentials) = self.config.credentials_provider() {
            components = components
                .with_identity_resolver(SCHEME_ID, SharedIdentityResolver::new(credentials));
        }
        StaticRuntimePlugin::new()
            .with_config(layer.freeze())
            .with_runtime_components(components)
    }
}

type Result<T> = std::result::Result<T, AwsError>;

/// The answer's XML, or EC2's error (`<Response><Errors><Error><Code>…`).
fn read_answer(
    response: &HttpResponse,
) -> std::result::Result<Element, OrchestratorError<Ec2Error>> {
    let status = response.status().as_u16();
    let body = response
        .body()
        .bytes()
        .map(String::from_utf8_lossy)
        .unwrap_or_default();
    let parsed = xml::parse(&body);
    if response.status().is_success() {
        return parsed.map_err(|problem| {
            OrchestratorError::operation(Ec2Error::new(
                None,
                format!("the answer is not EC2's XML ({problem})"),
            ))
        });
    }
    let error = parsed
        .ok()
        .and_then(|root| {
            let error = root.at(&["Errors", "Error"])?;
            let code = error.text_of("Code");
            // What AWS Support asks for; the Reason has no room for it.
            tracing::debug!(
                code,
                request_id = root.text_of("RequestID"),
                status,
                "EC2 refused a request"
            );
            Some(Ec2Error::new(
                code.map(str::to_owned),
                error.text_of("Message").unwrap_or_default().to_owned(),
            ))
        })
        .unwrap_or_else(|| {
            let start: String = body.chars().take(200).collect();
            Ec2Error::new(None, format!("HTTP {status}: {start}"))
        });
    Err(OrchestratorError::operation(error))
}

/// An error EC2 answered: its code (`InvalidAMIID.NotFound`) and message.
#[derive(Debug)]
pub struct Ec2Error {
    meta: ErrorMetadata,
}

impl Ec2Error {
    fn new(code: Option<String>, message: String) -> Ec2Error {
        let mut meta = ErrorMetadata::builder().message(message);
        if let Some(code) = code {
            meta = meta.code(code);
        }
        Ec2Error { meta: meta.build() }
    }
}

impl fmt::Display for Ec2Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.meta.code() {
            Some(code) => write!(f, "{code}: {}", self.meta.message().unwrap_or_default()),
            None => f.write_str(self.meta.message().unwrap_or_default()),
        }
    }
}

impl std::error::Error for Ec2Error {}

impl ProvideErrorMetadata for Ec2Error {
    fn meta(&self) -> &ErrorMetadata {
        &self.meta
    }
}

/// A request's parameters, in EC2's Query encoding: a list member is `Name.1`, `Name.2`, …; a
/// structure's member `Name.Member` (<https://docs.aws.amazon.com/AWSEC2/latest/APIReference/Query-Requests.html>).
#[derive(Debug, Clone, Default)]
pub struct Params(Vec<(String, String)>);

impl Params {
    pub fn new() -> Params {
        Params::default()
    }
    pub fn set(mut self, name: impl Into<String>, value: impl ToString) -> Params {
        self.0.push((name.into(), value.to_string()));
        self
    }
    pub fn set_opt(self, name: impl Into<String>, value: Option<impl ToString>) -> Params {
        match value {
            Some(value) => self.set(name, value),
            None => self,
        }
    }
    /// `name.1`, `name.2`, … for each value.
    pub fn list<T: ToString>(mut self, name: &str, values: impl IntoIterator<Item = T>) -> Params {
        for (i, value) in values.into_iter().enumerate() {
            self = self.set(format!("{name}.{}", i + 1), value);
        }
        self
    }
    /// `Filter.N.Name` and `Filter.N.Value.M`.
    pub fn filters<'a>(
        mut self,
        filters: impl IntoIterator<Item = (&'a str, &'a [String])>,
    ) -> Params {
        for (i, (name, values)) in filters.into_iter().enumerate() {
            let prefix = format!("Filter.{}", i + 1);
            self = self
                .set(format!("{prefix}.Name"), name)
                .list(&format!("{prefix}.Value"), values);
        }
        self
    }
    /// `Filter.N` of `tag:KEY` = VALUE for each tag: resources that carry all of them.
    pub fn tag_filters(self, tags: &std::collections::BTreeMap<String, String>) -> Params {
        let filters: Vec<(String, [String; 1])> = tags
            .iter()
            .map(|(k, v)| (format!("tag:{k}"), [v.clone()]))
            .collect();
        self.filters(filters.iter().map(|(n, v)| (n.as_str(), &v[..])))
    }
    /// `{name}.N.Key` and `{name}.N.Value` for each tag (`Tag` in CreateTags).
    pub fn tags(mut self, name: &str, tags: &std::collections::BTreeMap<String, String>) -> Params {
        for (i, (key, value)) in tags.iter().enumerate() {
            self = self
                .set(format!("{name}.{}.Key", i + 1), key)
                .set(format!("{name}.{}.Value", i + 1), value);
        }
        self
    }
    /// `TagSpecification.N`: the tags the resources of each type get as they are created.
    pub fn tag_specifications(
        mut self,
        kinds: &[&str],
        tags: &std::collections::BTreeMap<String, String>,
    ) -> Params {
        for (i, kind) in kinds.iter().enumerate() {
            let prefix = format!("TagSpecification.{}", i + 1);
            self = self
                .set(format!("{prefix}.ResourceType"), kind)
                .tags(&format!("{prefix}.Tag"), tags);
        }
        self
    }

    /// The form-encoded POST to the endpoint's root.
    fn request(self, action: &str) -> std::result::Result<HttpRequest, BoxError> {
        let mut body = String::new();
        let mut writer = aws_smithy_query::QueryWriter::new(&mut body, action, API_VERSION);
        for (name, value) in &self.0 {
            writer.prefix(name).string(value);
        }
        writer.finish();
        let mut request = HttpRequest::new(SdkBody::from(body));
        request.set_method("POST")?;
        request.set_uri("/")?;
        request.headers_mut().insert(
            "Content-Type",
            "application/x-www-form-urlencoded; charset=utf-8",
        );
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn parameters_are_encoded_as_ec2_names_them() {
        let tags = BTreeMap::from([("a b".to_owned(), "x&y".to_owned())]);
        let request = Params::new()
            .list("ImageId", ["ami-1", "ami-2"])
            .filters([("name", &["n1".to_owned(), "n2".to_owned()][..])])
            .tag_specifications(&["image", "snapshot"], &tags)
            .request("DescribeImages")
            .unwrap();
        let body = std::str::from_utf8(request.body().bytes().unwrap()).unwrap();
        assert_eq!(
            body,
            "Action=DescribeImages&Version=2016-11-15&ImageId.1=ami-1&ImageId.2=ami-2\
             &Filter.1.Name=name&Filter.1.Value.1=n1&Filter.1.Value.2=n2\
             &TagSpecification.1.ResourceType=image&TagSpecification.1.Tag.1.Key=a%20b\
             &TagSpecification.1.Tag.1.Value=x%26y&TagSpecification.2.ResourceType=snapshot\
             &TagSpecification.2.Tag.1.Key=a%20b&TagSpecification.2.Tag.1.Value=x%26y"
        );
        assert_eq!(request.method(), "POST");
    }

    fn answer(status: u16, body: &str) -> HttpResponse {
        HttpResponse::new(status.try_into().unwrap(), SdkBody::from(body.to_owned()))
    }

    #[test]
    fn errors_are_read_from_ec2s_error_document() {
        let refused = answer(
            400,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>InvalidAMIID.NotFound</Code><Message>The image id '[ami-1]' does not exist</Message></Error></Errors><RequestID>ea966190-f9aa-478e-9ede-example</RequestID></Response>",
        );
        let Err(OrchestratorError { .. }) = read_answer(&refused) else {
            panic!("an error")
        };
        let error = read_answer(&refused).unwrap_err();
        let error = error.as_operation_error().unwrap();
        assert_eq!(error.code(), Some("InvalidAMIID.NotFound"));
        assert_eq!(
            error.message(),
            Some("The image id '[ami-1]' does not exist")
        );
        // A proxy's page in front of EC2: no code, the status and the start of the page.
        let page = read_answer(&answer(503, "<html>busy</html>")).unwrap_err();
        let page = page.as_operation_error().unwrap();
        assert_eq!(page.code(), None);
        assert_eq!(page.message(), Some("HTTP 503: <html>busy</html>"));
        let ok = read_answer(&answer(
            200,
            "<RunInstancesResponse><x>1</x></RunInstancesResponse>",
        ))
        .unwrap();
        assert_eq!(ok.text_of("x"), Some("1"));
        assert!(read_answer(&answer(200, "not xml")).is_err());
    }

    #[test]
    fn endpoints_follow_ec2s_pattern_unless_one_is_configured() {
        let ec2 = |config: SdkConfig| Ec2::new(&config);
        let plain = ec2(SdkConfig::builder().build());
        assert_eq!(
            plain.endpoint("eu-west-1"),
            "https://ec2.eu-west-1.amazonaws.com"
        );
        assert_eq!(
            plain.endpoint("cn-north-1"),
            "https://ec2.cn-north-1.amazonaws.com.cn"
        );
        let fips = ec2(SdkConfig::builder().use_fips(true).build());
        assert_eq!(
            fips.endpoint("us-east-1"),
            "https://ec2-fips.us-east-1.amazonaws.com"
        );
        let local = ec2(SdkConfig::builder()
            .endpoint_url("http://127.0.0.1:5000")
            .build());
        assert_eq!(local.endpoint("us-west-2"), "http://127.0.0.1:5000");
        assert_eq!(
            plain.endpoint("eusc-de-east-1"),
            "https://ec2.eusc-de-east-1.amazonaws.eu"
        );
        assert_eq!(
            plain.endpoint("us-isof-south-1"),
            "https://ec2.us-isof-south-1.csp.hci.ic.gov"
        );
        assert_eq!(
            plain.endpoint("us-iso-east-1"),
            "https://ec2.us-iso-east-1.c2s.ic.gov"
        );
        assert_eq!(
            fips.endpoint("us-gov-west-1"),
            "https://ec2.us-gov-west-1.amazonaws.com"
        );
        let dual = ec2(SdkConfig::builder().use_dual_stack(true).build());
        let gov_dual_fips = ec2(SdkConfig::builder()
            .use_dual_stack(true)
            .use_fips(true)
            .build());
        assert_eq!(
            gov_dual_fips.endpoint("us-gov-east-1"),
            "https://ec2-fips.us-gov-east-1.api.aws"
        );
        assert_eq!(dual.endpoint("eu-west-1"), "https://ec2.eu-west-1.api.aws");
    }
}
