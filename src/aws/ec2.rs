//! EC2's Query API for the few EC2 actions the build uses, without the generated `aws-sdk-ec2`.
//!
//! Why: `aws-sdk-ec2` covers all of EC2's 700-odd actions, and rustc needs about 7 GB of memory
//! to compile it, which made a release build of the Lambda need a build server (README, "Deploy
//! to AWS"). The build uses about 25 actions. Each is a form-encoded POST
//! (`Action=…&Version=2016-11-15&…`) answered with XML
//! (<https://docs.aws.amazon.com/AWSEC2/latest/APIReference/Query-Requests.html>,
//! <https://docs.aws.amazon.com/AWSEC2/latest/APIReference/query-api-troubleshooting.html>).
//!
//! Everything around the request is the AWS SDK's own runtime (`runtime.rs`). Only the
//! encoding of parameters and the reading of answers are here.

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse, OrchestratorError};
use aws_smithy_types::body::SdkBody;
use aws_types::SdkConfig;

use super::AwsError;
use super::runtime::{Client, Service, ServiceError};
use super::xml::{self, Element};

/// The API version every EC2 Query request names.
const API_VERSION: &str = "2016-11-15";

/// The service, as the runtime tells it from others.
static EC2: Service = Service {
    id: "EC2",
    name: "ec2",
    gov_fips_is_plain: true,
};

/// A client of one region's EC2 endpoint.
#[derive(Clone, Debug)]
pub struct Ec2(Client);

impl Ec2 {
    /// A client with the configuration's region, credentials, HTTP client, retry policy,
    /// timeouts, sleep and time source, and its endpoint URL (a local AWS) if it has one.
    pub fn new(config: &SdkConfig) -> Ec2 {
        Ec2(Client::new(&EC2, config))
    }
    pub fn region(&self) -> Option<&str> {
        self.0.region()
    }
    /// The same client for another region.
    pub fn in_region(&self, region: &str) -> Ec2 {
        Ec2(self.0.in_region(region))
    }

    /// Sends `operation` (`ec2:RunInstances`) with `params` and returns the answer's root
    /// element, or the error as EC2 named it.
    pub(super) async fn call(&self, operation: &'static str, params: Params) -> Result<Element> {
        let action = operation.trim_start_matches("ec2:");
        self.0
            .invoke(
                operation,
                params,
                move |params: Params| params.request(action),
                read_answer,
            )
            .await
    }

    /// Every page of a Describe call: `nextToken` followed until a page carries none (a page may
    /// be empty and still carry one), as the SDK's paginators do; the same token twice ends it
    /// (<https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-pagination.html>).
    pub(super) async fn pages(
        &self,
        operation: &'static str,
        params: Params,
    ) -> Result<Vec<Element>> {
        let mut pages = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .call(
                    operation,
                    params.clone().set_opt("NextToken", token.as_ref()),
                )
                .await?;
            let next = page
                .text_of("nextToken")
                .filter(|t| !t.is_empty())
                .map(str::to_owned);
            pages.push(page);
            if next.is_none() || next == token {
                return Ok(pages);
            }
            token = next;
        }
    }
}

type Result<T> = std::result::Result<T, AwsError>;

/// The answer's XML, or EC2's error (`<Response><Errors><Error><Code>…`).
fn read_answer(
    response: &HttpResponse,
) -> std::result::Result<Element, OrchestratorError<ServiceError>> {
    let status = response.status().as_u16();
    let body = response
        .body()
        .bytes()
        .map(String::from_utf8_lossy)
        .unwrap_or_default();
    let parsed = xml::parse(&body);
    if response.status().is_success() {
        return parsed.map_err(|problem| {
            OrchestratorError::operation(ServiceError::new(
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
            Some(ServiceError::new(
                code.map(str::to_owned),
                error.text_of("Message").unwrap_or_default().to_owned(),
            ))
        })
        .unwrap_or_else(|| {
            let start: String = body.chars().take(200).collect();
            ServiceError::new(None, format!("HTTP {status}: {start}"))
        });
    Err(OrchestratorError::operation(error))
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
    use aws_smithy_types::error::metadata::ProvideErrorMetadata;
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
        let plain = SdkConfig::builder().build();
        let fips = SdkConfig::builder().use_fips(true).build();
        let dual = SdkConfig::builder().use_dual_stack(true).build();
        let dual_fips = SdkConfig::builder()
            .use_dual_stack(true)
            .use_fips(true)
            .build();
        let local = SdkConfig::builder()
            .endpoint_url("http://127.0.0.1:5000")
            .build();
        // As the SDK's endpoint rules and partition data give them.
        for (config, region, expected) in [
            (&plain, "eu-west-1", "https://ec2.eu-west-1.amazonaws.com"),
            (
                &plain,
                "cn-north-1",
                "https://ec2.cn-north-1.amazonaws.com.cn",
            ),
            (
                &plain,
                "eusc-de-east-1",
                "https://ec2.eusc-de-east-1.amazonaws.eu",
            ),
            (
                &plain,
                "us-isof-south-1",
                "https://ec2.us-isof-south-1.csp.hci.ic.gov",
            ),
            (
                &plain,
                "us-iso-east-1",
                "https://ec2.us-iso-east-1.c2s.ic.gov",
            ),
            (
                &fips,
                "us-east-1",
                "https://ec2-fips.us-east-1.amazonaws.com",
            ),
            (
                &fips,
                "us-gov-west-1",
                "https://ec2.us-gov-west-1.amazonaws.com",
            ),
            (&dual, "eu-west-1", "https://ec2.eu-west-1.api.aws"),
            (
                &dual_fips,
                "us-gov-east-1",
                "https://ec2-fips.us-gov-east-1.api.aws",
            ),
            (&local, "us-west-2", "http://127.0.0.1:5000"),
        ] {
            assert_eq!(Ec2::new(config).0.endpoint(region), expected, "{region}");
        }
    }
}
