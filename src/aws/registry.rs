//! Container registries other than ECR, through the OCI distribution API
//! (<https://github.com/opencontainers/distribution-spec/blob/main/spec.md>): a manifest read
//! by tag or digest, anonymously or with the anonymous bearer token a registry's challenge
//! offers (Docker Hub, `public.ecr.aws`, GitHub's and Quay's public images). A registry that
//! wants credentials is refused: private registries other than ECR are not supported.
//!
//! There is no AWS SDK for this protocol; it is plain HTTPS, made with reqwest.

use std::time::Duration;

use super::ecr::{MANIFEST_MEDIA_TYPES, Manifest, ManifestRef, media_type_in};

/// A registry refuses manifests larger than 4 MiB (the distribution spec's suggested limit); so
/// does the product.
const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;
/// The environment variable that sends every registry request to one endpoint instead
/// (`{endpoint}/{host}/v2/...`): the local AWS's registries, for the tests.
pub const REGISTRY_ENDPOINT_ENV: &str = "ECS_AMI_REGISTRY_ENDPOINT";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{problem}")]
pub struct RegistryError {
    /// The HTTP status the registry answered, if it answered.
    pub status: Option<u16>,
    pub problem: String,
}

/// The registries' HTTP client.
#[derive(Clone, Debug)]
pub struct Registries {
    client: reqwest::Client,
    endpoint: Option<String>,
    attempts: u32,
}

impl Default for Registries {
    fn default() -> Self {
        Registries::from_env()
    }
}

impl Registries {
    /// Real registries, unless `ECS_AMI_REGISTRY_ENDPOINT` names another endpoint.
    pub fn from_env() -> Registries {
        Registries::with_endpoint(
            std::env::var(REGISTRY_ENDPOINT_ENV)
                .ok()
                .filter(|e| !e.is_empty()),
        )
    }

    pub fn with_endpoint(endpoint: Option<String>) -> Registries {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .expect("the HTTP client builds with static settings");
        Registries {
            client,
            endpoint: endpoint.map(|e| e.trim_end_matches('/').to_owned()),
            attempts: 3,
        }
    }

    /// Where `host`'s API is: Docker Hub's is `registry-1.docker.io`.
    fn base(&self, host: &str) -> String {
        let host = if host == "docker.io" {
            "registry-1.docker.io"
        } else {
            host
        };
        match &self.endpoint {
            Some(endpoint) => format!("{endpoint}/{host}"),
            None => format!("https://{host}"),
        }
    }

    /// The manifest of `repository` on `host` by tag or digest, `None` when the registry does
    /// not have it (404).
    pub async fn manifest(
        &self,
        host: &str,
        repository: &str,
        reference: ManifestRef<'_>,
    ) -> Result<Option<Manifest>, RegistryError> {
        let url = format!(
            "{}/v2/{repository}/manifests/{}",
            self.base(host),
            reference.as_str()
        );
        let mut token: Option<String> = None;
        for round in 0..2 {
            let answer = self.get(&url, token.as_deref()).await?;
            let status = answer.status();
            if status == reqwest::StatusCode::UNAUTHORIZED && round == 0 {
                let challenge = answer
                    .headers()
                    .get(reqwest::header::WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                token = Some(self.anonymous_token(&challenge, repository).await?);
                continue;
            }
            if status == reqwest::StatusCode::NOT_FOUND {
                return Ok(None);
            }
            if !status.is_success() {
                let body = answer.text().await.unwrap_or_default();
                return Err(RegistryError {
                    status: Some(status.as_u16()),
                    problem: format!("the registry answered HTTP {status}{}", error_code(&body)),
                });
            }
            let media_type = answer
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.split(';').next().unwrap_or(v).trim().to_owned());
            let digest = answer
                .headers()
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let bytes = answer.bytes().await.map_err(|e| RegistryError {
                status: Some(status.as_u16()),
                problem: format!("the manifest could not be read: {}", e.without_url()),
            })?;
            if bytes.len() > MAX_MANIFEST_BYTES {
                return Err(RegistryError {
                    status: Some(status.as_u16()),
                    problem: format!("the manifest is {} bytes, over 4 MiB", bytes.len()),
                });
            }
            let body = String::from_utf8(bytes.to_vec()).map_err(|_| RegistryError {
                status: Some(status.as_u16()),
                problem: "the manifest is not UTF-8 JSON".into(),
            })?;
            let media_type = media_type_in(&body).or(media_type).unwrap_or_default();
            return Ok(Some(Manifest {
                media_type,
                body,
                digest,
            }));
        }
        Err(RegistryError {
            status: Some(401),
            problem: "the registry refused the anonymous token it issued (HTTP 401)".into(),
        })
    }

    /// One GET, tried again on a connection failure or a 5xx.
    async fn get(
        &self,
        url: &str,
        token: Option<&str>,
    ) -> Result<reqwest::Response, RegistryError> {
        let mut last = String::new();
        for attempt in 1..=self.attempts {
            let mut request = self
                .client
                .get(url)
                .header(reqwest::header::ACCEPT, MANIFEST_MEDIA_TYPES.join(", "));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            // A 429 is not tried again: Docker Hub's limits count pulls over hours.
            match request.send().await {
                Ok(answer) if answer.status().is_server_error() => {
                    last = format!("the registry answered HTTP {}", answer.status());
                    if attempt == self.attempts {
                        return Ok(answer);
                    }
                }
                Ok(answer) => return Ok(answer),
                Err(error) => {
                    last = format!("the registry could not be reached: {}", error.without_url())
                }
            }
            tokio::time::sleep(Duration::from_millis(500) * 2u32.pow(attempt - 1)).await;
        }
        Err(RegistryError {
            status: None,
            problem: last,
        })
    }

    /// The anonymous pull token a `Bearer` challenge offers
    /// (<https://distribution.github.io/distribution/spec/auth/token/>). A `Basic` challenge, or
    /// none, means the registry wants credentials.
    async fn anonymous_token(
        &self,
        challenge: &str,
        repository: &str,
    ) -> Result<String, RegistryError> {
        let refused = |problem: String| RegistryError {
            status: Some(401),
            problem,
        };
        let Some(params) = challenge
            .strip_prefix("Bearer ")
            .or_else(|| challenge.strip_prefix("bearer "))
        else {
            return Err(refused(format!(
                "the registry wants credentials (HTTP 401, {}); only ECR and public registries are supported",
                if challenge.is_empty() {
                    "no challenge"
                } else {
                    challenge.split(' ').next().unwrap_or("")
                }
            )));
        };
        let params = challenge_params(params);
        let Some(realm) = params.iter().find(|(k, _)| k == "realm").map(|(_, v)| v) else {
            return Err(refused(
                "the registry's challenge names no token realm".into(),
            ));
        };
        let scope = params
            .iter()
            .find(|(k, _)| k == "scope")
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| format!("repository:{repository}:pull"));
        let mut query = vec![("scope", scope)];
        if let Some((_, service)) = params.iter().find(|(k, _)| k == "service") {
            query.push(("service", service.clone()));
        }
        let mut url = reqwest::Url::parse(realm)
            .map_err(|_| refused(format!("the registry's token realm {realm:?} is not a URL")))?;
        for (key, value) in &query {
            url.query_pairs_mut().append_pair(key, value);
        }
        let answer = self.client.get(url).send().await.map_err(|e| {
            refused(format!(
                "the registry's token service could not be reached: {}",
                e.without_url()
            ))
        })?;
        let status = answer.status();
        if !status.is_success() {
            return Err(RegistryError {
                status: Some(status.as_u16()),
                problem: format!(
                    "the registry's token service refused an anonymous token (HTTP {status})"
                ),
            });
        }
        let body: serde_json::Value = answer
            .text()
            .await
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok())
            .ok_or_else(|| refused("the registry's token service answered no JSON".into()))?;
        body.get("token")
            .or_else(|| body.get("access_token"))
            .and_then(|t| t.as_str())
            .map(str::to_owned)
            .ok_or_else(|| refused("the registry's token service answered no token".into()))
    }
}

/// `key="value"` pairs of a challenge, commas inside quotes kept.
fn challenge_params(text: &str) -> Vec<(String, String)> {
    let mut params = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key.trim().trim_start_matches(',').trim().to_owned();
        let after = after.trim_start();
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.find('"') {
                Some(end) => (quoted[..end].to_owned(), &quoted[end + 1..]),
                None => (quoted.to_owned(), ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (after[..end].trim().to_owned(), &after[end..]),
                None => (after.trim().to_owned(), ""),
            }
        };
        params.push((key, value));
        rest = remaining.trim_start().trim_start_matches(',').trim_start();
    }
    params
}

/// `: CODE: message` from a distribution-spec error body, if it has one.
fn error_code(body: &str) -> String {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(body) else {
        return String::new();
    };
    let Some(first) = value.get("errors").and_then(|e| e.get(0)) else {
        return String::new();
    };
    let code = first.get("code").and_then(|c| c.as_str()).unwrap_or("");
    let message = first.get("message").and_then(|c| c.as_str()).unwrap_or("");
    format!(
        ": {code}{}{message}",
        if message.is_empty() { "" } else { ": " }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_are_read_with_quoted_commas() {
        let params = challenge_params(
            r#"realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull,push""#,
        );
        assert_eq!(
            params,
            [
                (
                    "realm".to_owned(),
                    "https://auth.docker.io/token".to_owned()
                ),
                ("service".to_owned(), "registry.docker.io".to_owned()),
                (
                    "scope".to_owned(),
                    "repository:library/nginx:pull,push".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn docker_hub_is_its_registry_host_and_an_endpoint_takes_every_host() {
        let real = Registries::with_endpoint(None);
        assert_eq!(real.base("docker.io"), "https://registry-1.docker.io");
        assert_eq!(real.base("public.ecr.aws"), "https://public.ecr.aws");
        let local = Registries::with_endpoint(Some("http://127.0.0.1:5000/r/".into()));
        assert_eq!(local.base("quay.io"), "http://127.0.0.1:5000/r/quay.io");
    }

    #[test]
    fn error_bodies_give_their_code() {
        assert_eq!(
            error_code(r#"{"errors":[{"code":"DENIED","message":"no"}]}"#),
            ": DENIED: no"
        );
        assert_eq!(error_code("not json"), "");
    }
}
