//! `ContainerImages`: container images baked into the AMI, so that a container instance launched
//! from it starts its tasks without pulling. Images are named by reference (a tag or a digest)
//! and by ECS task definition (every image its containers name); the engine resolves each to a
//! digest before anything is launched (`engine::create::container_images`) and pulls it on the
//! builder by that digest.

use serde_json::Value;

use super::*;

/// At most this many images after task definitions are expanded: each is a pull on the builder
/// and a line of the `ContainerImages` attribute (in a response of at most 4,096 bytes).
pub const MAX_CONTAINER_IMAGES: usize = 20;
/// At most this many task definitions (each is a DescribeTaskDefinition call before launch).
pub const MAX_TASK_DEFINITIONS: usize = 10;
/// The name of the step that pulls the images on the builder, after the user's steps; no step of
/// the user's may take it.
pub const PULL_STEP_NAME: &str = "ecs-ami-container-images";
/// Docker's limit on a reference's repository name, and a little more for the host and tag.
const MAX_REFERENCE_CHARS: usize = 512;

/// What `ContainerImages` asks for, as written.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContainerImages {
    pub images: Vec<ImageReference>,
    /// A family (its latest ACTIVE revision), `family:revision`, or a task definition ARN.
    pub task_definitions: Vec<String>,
}

impl ContainerImages {
    pub fn is_empty(&self) -> bool {
        self.images.is_empty() && self.task_definitions.is_empty()
    }
}

/// An image as resolved before the build: what the builder pulls, by digest, and tags as the
/// user wrote it. Part of the fingerprint, of the build's saved state, and of the
/// `ContainerImages` attribute and tags.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BakedImage {
    /// The reference as written in `Images`, or as a task definition's container names it.
    pub reference: String,
    /// `registry/repository`: what `docker pull NAME@DIGEST` takes.
    pub name: String,
    /// The digest of the manifest for the builder's platform (an index resolved to it): what the
    /// fingerprint, the attribute and the AMI's tags hold.
    pub digest: String,
    /// The index's digest, when the reference resolved through one: the builder pulls by it, as
    /// docker pulls a multi-platform image, so that the image is known by it (a task that pins
    /// the index's digest finds it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_digest: Option<String>,
    /// The config and layers' sizes as the manifest gives them (compressed).
    pub bytes: u64,
}

/// An image reference, as Docker reads one
/// (<https://github.com/distribution/reference/blob/main/reference.go>): an optional registry
/// host, a repository path, and a tag, a digest or both. Without a host the image is Docker
/// Hub's (`nginx` is `docker.io/library/nginx:latest`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageReference {
    /// As the user wrote it: what the pulled image is tagged with on the builder, so that a task
    /// naming it finds it.
    pub given: String,
    /// The registry's host (and port), `docker.io` for Docker Hub.
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

/// An ECR private registry's host: `ACCOUNT.dkr.ecr.REGION.amazonaws.com` (`.com.cn` in China,
/// `dkr.ecr-fips` for FIPS endpoints)
/// (<https://docs.aws.amazon.com/AmazonECR/latest/userguide/Registries.html>).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcrRegistry {
    pub account: String,
    pub region: String,
}

impl ImageReference {
    /// The tag a pull by tag resolves, `latest` when neither tag nor digest is given.
    pub fn tag_or_latest(&self) -> &str {
        self.tag.as_deref().unwrap_or("latest")
    }

    /// The ECR registry the image is in, if it is an ECR private registry's.
    pub fn ecr(&self) -> Option<EcrRegistry> {
        ecr_registry(&self.registry)
    }

    /// `registry/repository`, as `docker pull` takes it before `@digest`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The name Docker shows for the repository (`RepoTags`): Docker Hub's without its host, and
    /// its official images without `library/`.
    pub fn familiar_name(&self) -> String {
        if self.registry == "docker.io" {
            self.repository
                .strip_prefix("library/")
                .unwrap_or(&self.repository)
                .to_owned()
        } else {
            self.name()
        }
    }

    /// `name:tag` as Docker lists it in `RepoTags` (`latest` when the reference names neither
    /// tag nor digest); `None` for a reference by digest alone, which Docker keeps untagged.
    pub fn familiar_tag(&self) -> Option<String> {
        match (&self.tag, &self.digest) {
            (Some(tag), _) => Some(format!("{}:{tag}", self.familiar_name())),
            (None, None) => Some(format!("{}:latest", self.familiar_name())),
            (None, Some(_)) => None,
        }
    }

    /// Parses `text` as Docker does; an error says what is wrong.
    pub fn parse(text: &str) -> Result<ImageReference, String> {
        if text.is_empty() {
            return Err("is empty".into());
        }
        if text.chars().count() > MAX_REFERENCE_CHARS {
            return Err(format!("must be at most {MAX_REFERENCE_CHARS} characters"));
        }
        if text.chars().any(|c| c.is_whitespace()) {
            return Err(format!("{text:?} contains white space"));
        }
        let (rest, digest) = match text.split_once('@') {
            Some((rest, digest)) => {
                if !is_digest(digest) {
                    return Err(format!(
                        "{text}: the digest {digest:?} is not sha256: and 64 lowercase hexadecimal digits"
                    ));
                }
                (rest, Some(digest.to_owned()))
            }
            None => (text, None),
        };
        // A tag follows the last ':' after the last '/' (a ':' before it is a registry's port).
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (path, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let at = last_slash + i;
                (&rest[..at], Some(rest[at + 1..].to_owned()))
            }
            None => (rest, None),
        };
        if let Some(tag) = &tag
            && !is_tag(tag)
        {
            return Err(format!(
                "{text}: the tag {tag:?} must be 1 to 128 letters, digits, '_', '.' and '-', not starting with '.' or '-'"
            ));
        }
        let (registry, repository) = match path.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_owned(), rest.to_owned())
            }
            _ if path.contains('/') => ("docker.io".to_owned(), path.to_owned()),
            _ => ("docker.io".to_owned(), format!("library/{path}")),
        };
        if !is_host(&registry) {
            return Err(format!("{text}: {registry:?} is not a registry host name"));
        }
        if !repository.split('/').all(is_path_component) {
            return Err(format!(
                "{text}: the repository {repository:?} must be lowercase letters and digits, separated by '.', '_', '__', '-' or '/'"
            ));
        }
        Ok(ImageReference {
            given: text.to_owned(),
            registry,
            repository,
            tag,
            digest,
        })
    }
}

/// `sha256:` and 64 lowercase hex digits: the only digest algorithm registries use.
pub fn is_digest(text: &str) -> bool {
    text.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

/// `[\w][\w.-]{0,127}`.
fn is_tag(tag: &str) -> bool {
    let mut chars = tag.chars();
    tag.len() <= 128
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn is_path_component(part: &str) -> bool {
    let bytes = part.as_bytes();
    if bytes.is_empty() || !is_alnum(bytes[0]) || !is_alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if is_alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !is_alnum(bytes[i]) {
            i += 1;
        }
        let separator = &part[start..i];
        let ok = separator == "."
            || separator == "_"
            || separator == "__"
            || separator.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// A host name (labels of letters, digits and '-') with an optional port, or `localhost`.
fn is_host(host: &str) -> bool {
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    };
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    port_ok
        && !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// The account and region of an ECR private registry's host, if `host` is one.
pub fn ecr_registry(host: &str) -> Option<EcrRegistry> {
    let (account, rest) = host.split_once('.')?;
    if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let rest = rest
        .strip_prefix("dkr.ecr.")
        .or_else(|| rest.strip_prefix("dkr.ecr-fips."))?;
    let region = rest
        .strip_suffix(".amazonaws.com")
        .or_else(|| rest.strip_suffix(".amazonaws.com.cn"))?;
    is_region_name(region).then(|| EcrRegistry {
        account: account.to_owned(),
        region: region.to_owned(),
    })
}

/// The ECR API's endpoint for the registry at `host`, by its partition's DNS suffix and FIPS
/// (<https://docs.aws.amazon.com/general/latest/gr/ecr.html>): `api.ecr.REGION.amazonaws.com`
/// (`.com.cn` in China), `ecr-fips.REGION.amazonaws.com`.
pub fn ecr_api_endpoint(host: &str) -> Option<String> {
    let registry = ecr_registry(host)?;
    let region = &registry.region;
    let suffix = if host.ends_with(".amazonaws.com.cn") {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    };
    Some(if host.contains(".dkr.ecr-fips.") {
        format!("https://ecr-fips.{region}.{suffix}")
    } else {
        format!("https://api.ecr.{region}.{suffix}")
    })
}

/// A task definition as `DescribeTaskDefinition` takes it: `family`, `family:revision` or an
/// ARN (<https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_DescribeTaskDefinition.html>).
/// A family is up to 255 letters, digits, hyphens and underscores.
pub fn is_task_definition(text: &str) -> bool {
    let family_revision = |text: &str| {
        let (family, revision) = match text.split_once(':') {
            Some((family, revision)) => (family, Some(revision)),
            None => (text, None),
        };
        !family.is_empty()
            && family.len() <= 255
            && family
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && revision.is_none_or(|r| {
                !r.is_empty() && r.len() <= 10 && r.bytes().all(|b| b.is_ascii_digit()) && r != "0"
            })
    };
    match text.strip_prefix("arn:") {
        Some(rest) => {
            let parts: Vec<&str> = rest.splitn(5, ':').collect();
            parts.len() == 5
                && parts[1] == "ecs"
                && is_region_name(parts[2])
                && parts[3].len() == 12
                && parts[4]
                    .strip_prefix("task-definition/")
                    .is_some_and(|fr| fr.contains(':') && family_revision(fr))
        }
        None => family_revision(text),
    }
}

impl EcrRegistry {
    /// The ARN of `repository` in this registry, as IAM names it.
    pub fn repository_arn(&self, repository: &str) -> String {
        let partition = if self.region.starts_with("cn-") {
            "aws-cn"
        } else if self.region.starts_with("us-gov-") {
            "aws-us-gov"
        } else {
            "aws"
        };
        format!(
            "arn:{partition}:ecr:{}:{}:repository/{repository}",
            self.region, self.account
        )
    }
}

/// Whether the ARN `text` matches the IAM resource pattern `pattern`: each of the first five
/// segments (between `:`) separately, then the resource; `*` any run of characters, `?` any one.
pub fn matches_pattern(pattern: &str, text: &str) -> bool {
    let pattern_parts: Vec<&str> = pattern.splitn(6, ':').collect();
    let text_parts: Vec<&str> = text.splitn(6, ':').collect();
    if pattern_parts.len() != 6 || text_parts.len() != 6 {
        return glob(pattern, text);
    }
    pattern_parts
        .iter()
        .zip(&text_parts)
        .all(|(p, t)| glob(p, t))
}

fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    // The classic two-pointer match with backtracking to the last `*`.
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

impl ContainerImages {
    /// What this deployment's role cannot do, found before anything is launched: an ECR image
    /// outside `repositories` (the deployment's ContainerImageRepositories), task definitions
    /// when `read_task_definitions` is off. Images that task definitions name are checked by
    /// the role when they are read.
    pub(super) fn check_access(
        &self,
        repositories: &[&str],
        read_task_definitions: bool,
        problems: &mut Problems,
    ) {
        for (i, image) in self.images.iter().enumerate() {
            let Some(registry) = image.ecr() else {
                continue;
            };
            let arn = registry.repository_arn(&image.repository);
            if !repositories.iter().any(|p| matches_pattern(p, &arn)) {
                problems.add(
                    &format!("ContainerImages.Images[{i}]"),
                    format!(
                        "{} is in {arn}, which is not in this deployment's ContainerImageRepositories ({}), the only repositories the function may read and builders may pull from",
                        image.given,
                        if repositories.is_empty() { "none".to_owned() } else { repositories.join(", ") }
                    ),
                );
            }
        }
        if !self.task_definitions.is_empty() && !read_task_definitions {
            problems.add(
                "ContainerImages.TaskDefinitions",
                "this deployment's ReadTaskDefinitions is false: the function may not read task definitions (set it to true, or list the images in ContainerImages.Images)",
            );
        }
    }
}

pub(super) fn parse_container_images(
    value: &Value,
    problems: &mut Problems,
) -> Option<ContainerImages> {
    let Some(map) = value.as_object() else {
        problems.add(
            "ContainerImages",
            format!(
                "must be an object with Images and/or TaskDefinitions, not {}",
                kind_of(value)
            ),
        );
        return None;
    };
    let mut fields = Fields::new("ContainerImages", map, problems);
    let images = fields.list("Images");
    let task_definitions = fields.list("TaskDefinitions");
    fields.finish();
    let mut parsed = ContainerImages::default();
    for (i, item) in images.unwrap_or_default().iter().enumerate() {
        let path = format!("ContainerImages.Images[{i}]");
        match scalar_string(item) {
            None => problems.add(
                &path,
                format!(
                    "must be an image reference (a string), not {}",
                    kind_of(item)
                ),
            ),
            Some(text) => match ImageReference::parse(&text) {
                Ok(reference) => {
                    if parsed.images.iter().any(|r| r.given == reference.given) {
                        problems.add(&path, format!("{text} is listed twice"));
                    } else {
                        parsed.images.push(reference);
                    }
                }
                Err(problem) => problems.add(&path, problem),
            },
        }
    }
    for (i, item) in task_definitions.unwrap_or_default().iter().enumerate() {
        let path = format!("ContainerImages.TaskDefinitions[{i}]");
        match scalar_string(item) {
            Some(text) if is_task_definition(&text) => {
                if parsed.task_definitions.contains(&text) {
                    problems.add(&path, format!("{text} is listed twice"));
                } else {
                    parsed.task_definitions.push(text);
                }
            }
            Some(text) => problems.add(
                &path,
                format!(
                    "{text:?} is not a task definition: a family (letters, digits, '-' and '_', up to 255), family:revision, or a task definition ARN with its revision"
                ),
            ),
            None => problems.add(
                &path,
                format!("must be a task definition (a string), not {}", kind_of(item)),
            ),
        }
    }
    if parsed.images.len() > MAX_CONTAINER_IMAGES {
        problems.add(
            "ContainerImages.Images",
            format!(
                "lists {} images; at most {MAX_CONTAINER_IMAGES} can be baked into one AMI",
                parsed.images.len()
            ),
        );
    }
    if parsed.task_definitions.len() > MAX_TASK_DEFINITIONS {
        problems.add(
            "ContainerImages.TaskDefinitions",
            format!(
                "lists {} task definitions; at most {MAX_TASK_DEFINITIONS}",
                parsed.task_definitions.len()
            ),
        );
    }
    if parsed.is_empty() && map.keys().all(|k| k == "Images" || k == "TaskDefinitions") {
        problems.add(
            "ContainerImages",
            "lists no image: give Images, TaskDefinitions or both, or leave ContainerImages out",
        );
    }
    Some(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> ImageReference {
        ImageReference::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn references_are_read_as_docker_reads_them() {
        let ecr = parsed("123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/app:1.4");
        assert_eq!(ecr.registry, "123456789012.dkr.ecr.eu-west-1.amazonaws.com");
        assert_eq!(ecr.repository, "team/app");
        assert_eq!(ecr.tag.as_deref(), Some("1.4"));
        assert_eq!(
            ecr.ecr(),
            Some(EcrRegistry {
                account: "123456789012".into(),
                region: "eu-west-1".into()
            })
        );
        let public = parsed("public.ecr.aws/docker/library/nginx:1.27");
        assert_eq!(
            (public.registry.as_str(), public.repository.as_str()),
            ("public.ecr.aws", "docker/library/nginx")
        );
        assert_eq!(public.ecr(), None);
        let hub = parsed("nginx");
        assert_eq!(
            (
                hub.registry.as_str(),
                hub.repository.as_str(),
                hub.tag_or_latest()
            ),
            ("docker.io", "library/nginx", "latest")
        );
        let user = parsed("grafana/grafana:11.0.0");
        assert_eq!(user.repository, "grafana/grafana");
        let port = parsed("localhost:5000/app");
        assert_eq!(
            (port.registry.as_str(), port.tag.as_deref()),
            ("localhost:5000", None)
        );
        let digest = format!("sha256:{}", "a".repeat(64));
        let both = parsed(&format!("registry.example.com:443/app:2@{digest}"));
        assert_eq!(both.registry, "registry.example.com:443");
        assert_eq!(both.tag.as_deref(), Some("2"));
        assert_eq!(both.digest.as_deref(), Some(digest.as_str()));
    }

    #[test]
    fn malformed_references_say_what_is_wrong() {
        for (text, says) in [
            ("", "is empty"),
            ("Nginx", "lowercase"),
            ("nginx:-bad", "the tag"),
            ("nginx@sha256:abc", "64 lowercase"),
            ("nginx@md5:0123", "not sha256"),
            ("nginx latest", "white space"),
            ("registry.example.com/app//x", "lowercase"),
            ("-bad.example.com/app", "registry host"),
        ] {
            let error = ImageReference::parse(text).unwrap_err();
            assert!(error.contains(says), "{text}: {error}");
        }
    }

    #[test]
    fn docker_names_images_as_it_lists_them() {
        let tag = |text: &str| parsed(text).familiar_tag();
        assert_eq!(tag("nginx:1.27").as_deref(), Some("nginx:1.27"));
        assert_eq!(
            tag("docker.io/library/nginx").as_deref(),
            Some("nginx:latest")
        );
        assert_eq!(
            tag("grafana/grafana:11").as_deref(),
            Some("grafana/grafana:11")
        );
        assert_eq!(
            tag("public.ecr.aws/docker/library/nginx:1.27").as_deref(),
            Some("public.ecr.aws/docker/library/nginx:1.27")
        );
        let digest = format!("sha256:{}", "a".repeat(64));
        assert_eq!(tag(&format!("nginx@{digest}")), None);
        assert_eq!(
            tag(&format!("nginx:1.27@{digest}")).as_deref(),
            Some("nginx:1.27")
        );
    }

    #[test]
    fn the_ecr_api_is_the_registrys_partitions_and_fips_when_it_is() {
        assert_eq!(
            ecr_api_endpoint("123456789012.dkr.ecr.eu-west-1.amazonaws.com").as_deref(),
            Some("https://api.ecr.eu-west-1.amazonaws.com")
        );
        assert_eq!(
            ecr_api_endpoint("123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn").as_deref(),
            Some("https://api.ecr.cn-north-1.amazonaws.com.cn")
        );
        assert_eq!(
            ecr_api_endpoint("123456789012.dkr.ecr-fips.us-east-1.amazonaws.com").as_deref(),
            Some("https://ecr-fips.us-east-1.amazonaws.com")
        );
        assert_eq!(ecr_api_endpoint("public.ecr.aws"), None);
    }

    #[test]
    fn ecr_hosts_are_told_from_others() {
        assert!(ecr_registry("123456789012.dkr.ecr.us-east-1.amazonaws.com").is_some());
        assert!(ecr_registry("123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn").is_some());
        assert!(ecr_registry("123456789012.dkr.ecr-fips.us-east-1.amazonaws.com").is_some());
        assert!(ecr_registry("12345678901.dkr.ecr.us-east-1.amazonaws.com").is_none());
        assert!(ecr_registry("123456789012.dkr.ecr.nowhere.amazonaws.com").is_none());
        assert!(ecr_registry("public.ecr.aws").is_none());
    }

    #[test]
    fn task_definitions_are_families_revisions_or_arns() {
        for good in [
            "web",
            "web:12",
            "my_family-2",
            "arn:aws:ecs:eu-west-1:123456789012:task-definition/batch:3",
        ] {
            assert!(is_task_definition(good), "{good}");
        }
        for bad in [
            "",
            "web:",
            "web:0",
            "web:x",
            "we b",
            "arn:aws:ecs:eu-west-1:123456789012:task-definition/batch",
            "arn:aws:ecs:eu-west-1:123456789012:cluster/batch:3",
        ] {
            assert!(!is_task_definition(bad), "{bad}");
        }
    }

    #[test]
    fn the_property_names_each_problem() {
        let mut problems = Problems::default();
        let value = serde_json::json!({
            "Images": ["nginx:1.27", "nginx:1.27", "Bad", {"a": 1}],
            "TaskDefinitions": ["web", "web:x"],
            "Other": 1
        });
        let parsed = parse_container_images(&value, &mut problems).unwrap();
        assert_eq!(parsed.images.len(), 1);
        assert_eq!(parsed.task_definitions, ["web"]);
        let text = format!("{problems:?}");
        for says in [
            "ContainerImages.Images[1]: nginx:1.27 is listed twice",
            "ContainerImages.Images[2]",
            "ContainerImages.Images[3]: must be an image reference (a string), not an object",
            "ContainerImages.TaskDefinitions[1]",
            "ContainerImages.Other",
        ] {
            assert!(text.contains(says), "{says} not in {text}");
        }
        let mut problems = Problems::default();
        parse_container_images(&serde_json::json!({}), &mut problems);
        assert!(format!("{problems:?}").contains("lists no image"));
    }

    #[test]
    fn iam_patterns_match_as_iam_does() {
        assert!(matches_pattern(
            "arn:aws:ecr:*:123456789012:repository/*",
            "arn:aws:ecr:eu-west-1:123456789012:repository/team/app"
        ));
        assert!(matches_pattern(
            "arn:aws:ecr:eu-west-1:123456789012:repository/app",
            "arn:aws:ecr:eu-west-1:123456789012:repository/app"
        ));
        assert!(!matches_pattern(
            "arn:aws:ecr:eu-west-1:123456789012:repository/app",
            "arn:aws:ecr:eu-west-1:123456789012:repository/app2"
        ));
        assert!(matches_pattern(
            "arn:aws:ecr:eu-west-?:*:repository/a*p",
            "arn:aws:ecr:eu-west-1:1:repository/aXXp"
        ));
        assert!(!matches_pattern("", "x"));
    }

    #[test]
    fn the_deployment_decides_which_repositories_and_whether_task_definitions() {
        let mut problems = Problems::default();
        let value = serde_json::json!({
            "Images": ["123456789012.dkr.ecr.eu-west-1.amazonaws.com/app:1", "123456789012.dkr.ecr.eu-west-1.amazonaws.com/other:1", "nginx"],
            "TaskDefinitions": ["web"]
        });
        let images = parse_container_images(&value, &mut problems).unwrap();
        images.check_access(
            &["arn:aws:ecr:eu-west-1:123456789012:repository/app"],
            false,
            &mut problems,
        );
        let text = format!("{problems:?}");
        assert!(!text.contains("Images[0]"), "{text}");
        assert!(text.contains("ContainerImages.Images[1]: 123456789012.dkr.ecr.eu-west-1.amazonaws.com/other:1 is in arn:aws:ecr:eu-west-1:123456789012:repository/other, which is not in this deployment's ContainerImageRepositories"), "{text}");
        assert!(
            !text.contains("Images[2]"),
            "public images need no permission: {text}"
        );
        assert!(
            text.contains(
                "ContainerImages.TaskDefinitions: this deployment's ReadTaskDefinitions is false"
            ),
            "{text}"
        );
    }

    #[test]
    fn at_most_twenty_images() {
        let images: Vec<String> = (0..=MAX_CONTAINER_IMAGES)
            .map(|i| format!("app{i}"))
            .collect();
        let mut problems = Problems::default();
        parse_container_images(&serde_json::json!({ "Images": images }), &mut problems);
        assert!(format!("{problems:?}").contains("at most 20"));
    }
}
