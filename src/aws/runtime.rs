//! The AWS SDK's own runtime for the services called without their generated crate (EC2 and
//! ECS; see `ec2.rs` and `ecs.rs` for why and how each encodes its requests).
//!
//! Everything around a request is the runtime the generated clients run on
//! (`aws-smithy-runtime`'s orchestrator): SigV4 signing with the SDK configuration's credentials
//! and identity cache, the same HTTP client, timeouts, the standard retry strategy with the SDK's
//! classifiers (throttling and transient error codes, HTTP 500/502/503/504, connection failures,
//! clock skew) under the product's retry policy, and the interceptors a generated client
//! installs. Only the encoding of requests and the reading of answers are the services' own.

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
use aws_smithy_runtime_api::client::runtime_plugin::{
    RuntimePlugin, SharedRuntimePlugin, StaticRuntimePlugin,
};
use aws_smithy_types::config_bag::Layer;
use aws_smithy_types::error::ErrorMetadata;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use aws_smithy_types::timeout::TimeoutConfig;
use aws_types::SdkConfig;
use aws_types::SigningName;
use aws_types::region::{Region, SigningRegion};
use aws_types::service_config::ServiceConfigKey;

use super::AwsError;

/// What tells one service from another here.
#[derive(Debug)]
pub(super) struct Service {
    /// The SDK's service id, for `AWS_ENDPOINT_URL_<ID>` and a profile's `services` section.
    pub id: &'static str,
    /// The signing name, which is also the endpoint's first label (`ec2`, `ecs`).
    pub name: &'static str,
    /// GovCloud's endpoints of the service are FIPS endpoints already, under its plain name (EC2).
    pub gov_fips_is_plain: bool,
}

/// A client of one service in one region.
#[derive(Clone, Debug)]
pub(super) struct Client {
    service: &'static Service,
    config: SdkConfig,
    /// None without a configured region: every call then fails, naming it.
    regional: Option<Regional>,
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

/// What depends on the region only, worked out once for all the client's calls.
#[derive(Clone, Debug)]
struct Regional {
    region: String,
    endpoint: String,
    signing: SharedRuntimePlugin,
}

impl Client {
    /// A client with the configuration's region, credentials, HTTP client, retry policy,
    /// timeouts, sleep and time source, and its endpoint URL (a local AWS) if it has one.
    pub(super) fn new(service: &'static Service, config: &SdkConfig) -> Client {
        let http = config.http_client().or_else(|| {
            // What an SDK client without one uses (aws_config's loader leaves it to them).
            let behavior = config
                .behavior_version()
                .unwrap_or_else(aws_config::BehaviorVersion::latest);
            default_http_client_plugin_v2(behavior)?
                .runtime_components(&RuntimeComponentsBuilder::new("http"))
                .http_client()
        });
        let client = Client {
            service,
            regional: None,
            http,
            clock_skew: SharedInterceptor::new(ServiceClockSkewInterceptor::new()),
            identity_cache: config
                .identity_cache()
                .unwrap_or_else(|| IdentityCache::lazy().build()),
            config: config.clone(),
        };
        match config.region() {
            Some(region) => client.in_region(region.as_ref()),
            None => client,
        }
    }
    pub(super) fn region(&self) -> Option<&str> {
        self.regional.as_ref().map(|r| r.region.as_str())
    }
    /// The same client for another region.
    pub(super) fn in_region(&self, region: &str) -> Client {
        let regional = Regional {
            region: region.to_owned(),
            endpoint: self.endpoint(region),
            signing: SharedRuntimePlugin::new(self.signing(region)),
        };
        Client {
            regional: Some(regional),
            ..self.clone()
        }
    }
    /// The endpoint the configuration names for the service (`AWS_ENDPOINT_URL_EC2` for EC2, or the
    /// profile's `services` section), or for every service (`AWS_ENDPOINT_URL`, a local AWS), or
    /// else the service's own in the region's partition
    /// (<https://docs.aws.amazon.com/general/latest/gr/ec2-service.html>,
    /// <https://docs.aws.amazon.com/general/latest/gr/ecs-service.html>), with FIPS and
    /// dual-stack as configured.
    pub(super) fn endpoint(&self, region: &str) -> String {
        let for_service = self.config.service_config().and_then(|c| {
            let key = ServiceConfigKey::builder()
                .service_id(self.service.id)
                .env("AWS_ENDPOINT_URL")
                .profile("endpoint_url")
                .build()
                .ok()?;
            c.load_config(key)
        });
        if let Some(url) = for_service.as_deref().or(self.config.endpoint_url()) {
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
        let fips = self.config.use_fips() == Some(true)
            && (dual_stack || !self.service.gov_fips_is_plain || !region.starts_with("us-gov-"));
        format!(
            "https://{}{}.{region}.{}",
            self.service.name,
            if fips { "-fips" } else { "" },
            if dual_stack {
                dual_stack_suffix
            } else {
                suffix
            }
        )
    }

    /// Sends `input` as `operation` (`ec2:RunInstances`), encoded by `serialize`, and reads the
    /// answer with `read`; an error names the operation and the code the service answered.
    pub(super) async fn invoke<I, O>(
        &self,
        operation: &'static str,
        input: I,
        serialize: impl Fn(I) -> Result<HttpRequest, BoxError> + Send + Sync + 'static,
        read: impl Fn(&HttpResponse) -> Result<O, OrchestratorError<ServiceError>>
        + Send
        + Sync
        + 'static,
    ) -> Result<O, AwsError>
    where
        I: fmt::Debug + Send + Sync + 'static,
        O: fmt::Debug + Send + Sync + 'static,
    {
        self.send(operation, input, serialize, read)
            .await
            .map_err(|e| AwsError::from_sdk(operation, e))
    }

    async fn send<I, O>(
        &self,
        operation: &'static str,
        input: I,
        serialize: impl Fn(I) -> Result<HttpRequest, BoxError> + Send + Sync + 'static,
        read: impl Fn(&HttpResponse) -> Result<O, OrchestratorError<ServiceError>>
        + Send
        + Sync
        + 'static,
    ) -> Result<O, SdkError<ServiceError, HttpResponse>>
    where
        I: fmt::Debug + Send + Sync + 'static,
        O: fmt::Debug + Send + Sync + 'static,
    {
        let Some(regional) = &self.regional else {
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
            .service_name(self.service.name)
            .operation_name(
                operation
                    .split_once(':')
                    .map_or(operation, |(_, action)| action),
            )
            .behavior_version(
                self.config
                    .behavior_version()
                    .unwrap_or_else(aws_config::BehaviorVersion::latest),
            )
            .http_client(http)
            .endpoint_url(&regional.endpoint)
            .standard_retry(&retry)
            .retry_classifier(HttpStatusCodeClassifier::default())
            .retry_classifier(TransientErrorClassifier::<ServiceError>::new())
            .retry_classifier(AwsErrorCodeClassifier::<ServiceError>::new())
            .retry_classifier(ServiceClockSkewClassifier::<ServiceError>::new())
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
            .runtime_plugin(regional.signing.clone());
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
            .serializer(serialize)
            .deserializer(read)
            .build()
            .invoke(input)
            .await
    }

    /// SigV4 for the service in the region, with the configuration's credentials.
    fn signing(&self, region: &str) -> StaticRuntimePlugin {
        let mut layer = Layer::new("signing");
        layer.store_put(AuthSchemeOptionResolverParams::new(()));
        // Retries are budgeted per region, as the generated clients do (`ec2-us-east-1`), so
        // throttling in one copy region does not spend another's.
        let name = self.service.name;
        layer.store_put(RetryPartition::new(format!("{name}-{region}")));
        // The user agent names the API (`api/ec2#…` for EC2) and, if configured, the application.
        layer.store_put(ApiMetadata::new(name, env!("CARGO_PKG_VERSION")));
        if let Some(app) = self.config.app_name() {
            layer.store_put(app.clone());
        }
        layer.store_put(SigV4OperationSigningConfig {
            region: Some(SigningRegion::from(Region::new(region.to_owned()))),
            name: Some(SigningName::from_static(name)),
            ..SigV4OperationSigningConfig::default()
        });
        let mut components = RuntimeComponentsBuilder::new("signing")
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

/// An error the service answered: its code (`InvalidAMIID.NotFound`) and message.
#[derive(Debug)]
pub struct ServiceError {
    meta: ErrorMetadata,
}

impl ServiceError {
    pub(super) fn new(code: Option<String>, message: String) -> ServiceError {
        let mut meta = ErrorMetadata::builder().message(message);
        if let Some(code) = code {
            meta = meta.code(code);
        }
        ServiceError { meta: meta.build() }
    }
}

impl fmt::Display for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.meta.code() {
            Some(code) => write!(f, "{code}: {}", self.meta.message().unwrap_or_default()),
            None => f.write_str(self.meta.message().unwrap_or_default()),
        }
    }
}

impl std::error::Error for ServiceError {}

impl ProvideErrorMetadata for ServiceError {
    fn meta(&self) -> &ErrorMetadata {
        &self.meta
    }
}
