//! `ContainerImages` resolved before anything is launched: task definitions expanded into the
//! images their containers name, every reference read from its registry (ECR through its API,
//! others through the OCI distribution API) and turned into the digest of the manifest for the
//! builder's platform, whose sizes are checked against the root volume. The digests go into the
//! fingerprint; the builder pulls by them ([`pull_step`]).

use serde_json::Value;

use crate::aws::{Aws, AwsError, Manifest, ManifestRef};
use crate::engine::failure::BuildError;
use crate::spec::{
    AmiSpec, BakedImage, ImageReference, MAX_CONTAINER_IMAGES, PULL_STEP_NAME, Step, is_digest,
    script,
};

const INDEX_TYPES: [&str; 2] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];
const IMAGE_TYPES: [&str; 2] = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];
/// How much larger the images are on disk than their compressed layers, for the check before
/// launch. Layers of typical images compress two to four times; the builder checks its actual
/// free space again before pulling ([`pull_step`]).
pub const EXTRACTION_FACTOR: u64 = 3;
const GIB: u64 = 1024 * 1024 * 1024;

/// Every image of `spec.container_images` for a builder of `architecture` (`x86_64`, `arm64`),
/// in order: the references given, then each task definition's containers' images not given
/// already. An image that cannot be baked is a [`BuildError::ContainerImageRefused`] naming
/// where it came from.
pub(crate) async fn resolve(
    aws: &Aws,
    spec: &AmiSpec,
    architecture: &str,
) -> Result<Vec<BakedImage>, BuildError> {
    let given = &spec.container_images;
    let mut wanted: Vec<(String, ImageReference)> = given
        .images
        .iter()
        .enumerate()
        .map(|(i, r)| (format!("ContainerImages.Images[{i}]"), r.clone()))
        .collect();
    for (i, task_definition) in given.task_definitions.iter().enumerate() {
        let at = format!("ContainerImages.TaskDefinitions[{i}]");
        let refused = |problem: String| BuildError::ContainerImageRefused {
            at: at.clone(),
            subject: task_definition.clone(),
            problem,
        };
        let found = aws
            .task_definition_images(task_definition)
            .await
            .map_err(|error| {
                refused(if error.code.as_deref() == Some("ClientException") {
                    format!(
                        "ECS refused it (ClientException: {}): a task definition that does not exist in this region (a family alone means its latest ACTIVE revision) is refused so",
                        error.message
                    )
                } else {
                    read_refused(&error, "ecs:DescribeTaskDefinition")
                })
            })?;
        if let Some(container) = found.with_credentials.first() {
            return Err(refused(format!(
                "container {container} pulls with repositoryCredentials (a private registry's secret): only ECR and public registries are supported"
            )));
        }
        if found.containers.is_empty() {
            return Err(refused(format!("{} names no container image", found.arn)));
        }
        for (container, image) in &found.containers {
            let reference = ImageReference::parse(image).map_err(|problem| {
                refused(format!(
                    "container {container}'s image cannot be read: {problem}"
                ))
            })?;
            if !wanted.iter().any(|(_, r)| r.given == reference.given) {
                wanted.push((format!("{at} (container {container})"), reference));
            }
        }
    }
    if wanted.len() > MAX_CONTAINER_IMAGES {
        return Err(BuildError::ContainerImageRefused {
            at: "ContainerImages".into(),
            subject: format!("{} images", wanted.len()),
            problem: format!(
                "at most {MAX_CONTAINER_IMAGES} can be baked into one AMI, task definitions' images included"
            ),
        });
    }
    let room = spec.container_image_tag_room();
    if wanted.len() > room {
        return Err(BuildError::ContainerImageRefused {
            at: "ContainerImages".into(),
            subject: format!("{} images", wanted.len()),
            problem: format!(
                "each is a tag of the AMI, and only {room} tags are left by Tags, OutputTags and the step outputs (EC2 allows 50 per resource, the product keeps 10)"
            ),
        });
    }
    let platform = platform_of(architecture);
    let mut baked = Vec::with_capacity(wanted.len());
    for (at, reference) in wanted {
        let image = resolve_one(aws, &reference, platform)
            .await
            .map_err(|problem| BuildError::ContainerImageRefused {
                at,
                subject: reference.given.clone(),
                problem,
            })?;
        tracing::info!(reference = %image.reference, digest = %image.digest, bytes = image.bytes, "container image resolved");
        baked.push(image);
    }
    Ok(baked)
}

/// The OCI platform architecture of an EC2 architecture.
fn platform_of(architecture: &str) -> &str {
    match architecture {
        "x86_64" => "amd64",
        "arm64" => "arm64",
        other => other,
    }
}

/// One reference: its manifest for `platform`, checked against its digest.
async fn resolve_one(
    aws: &Aws,
    reference: &ImageReference,
    platform: &str,
) -> Result<BakedImage, String> {
    let asked = match &reference.digest {
        Some(digest) => ManifestRef::Digest(digest),
        None => ManifestRef::Tag(reference.tag_or_latest()),
    };
    let manifest = fetch(aws, reference, asked)
        .await?
        .ok_or_else(|| match asked {
            ManifestRef::Tag(tag) => {
                format!("the tag {tag} does not exist in {}", reference.name())
            }
            ManifestRef::Digest(digest) => {
                format!("the digest {digest} does not exist in {}", reference.name())
            }
        })?;
    let mut digest = checked_digest(&manifest, asked)?;
    let mut manifest = manifest;
    let mut index_digest = None;
    if INDEX_TYPES.contains(&manifest.media_type.as_str()) {
        let chosen = platform_manifest(&manifest.body, platform)?;
        let found = fetch(aws, reference, ManifestRef::Digest(&chosen))
            .await?
            .ok_or_else(|| {
                format!("its index lists {chosen} for linux/{platform}, which the registry does not have")
            })?;
        index_digest = Some(std::mem::replace(
            &mut digest,
            checked_digest(&found, ManifestRef::Digest(&chosen))?,
        ));
        manifest = found;
    }
    if !IMAGE_TYPES.contains(&manifest.media_type.as_str()) {
        return Err(format!(
            "its manifest is {}, not an image manifest Docker pulls ({})",
            if manifest.media_type.is_empty() {
                "of no media type"
            } else {
                &manifest.media_type
            },
            IMAGE_TYPES.join(" or ")
        ));
    }
    let bytes = image_bytes(&manifest.body)?;
    Ok(BakedImage {
        reference: reference.given.clone(),
        name: reference.name(),
        digest,
        index_digest,
        bytes,
    })
}

async fn fetch(
    aws: &Aws,
    reference: &ImageReference,
    asked: ManifestRef<'_>,
) -> Result<Option<Manifest>, String> {
    match reference.ecr() {
        Some(registry) => aws
            .ecr_manifest(&registry, &reference.repository, asked)
            .await
            .map_err(|error| {
                if error.is_not_found() {
                    format!(
                        "ECR has no repository {} in registry {} ({})",
                        reference.repository, registry.account, registry.region
                    )
                } else {
                    read_refused(&error, "ecr:BatchGetImage")
                }
            }),
        None => aws
            .registries()
            .manifest(&reference.registry, &reference.repository, asked)
            .await
            .map_err(|error| format!("{} refused: {error}", reference.registry)),
    }
}

/// A read that AWS refused, said with what to change when it is the role's permissions.
fn read_refused(error: &AwsError, action: &str) -> String {
    let denied = error
        .code
        .as_deref()
        .is_some_and(|c| c.starts_with("AccessDenied") || c == "UnauthorizedOperation");
    if !denied {
        return error.to_string();
    }
    let fix = if action.starts_with("ecs:") {
        "set the deployment's ReadTaskDefinitions parameter to true"
    } else {
        "add the repository to the deployment's ContainerImageRepositories parameter (a repository of another account must also allow the function's role in its repository policy)"
    };
    format!("the function's role may not {action} it: {fix} ({error})")
}

/// The digest of a manifest's bytes, which must be the one asked for and the one the registry
/// gave.
fn checked_digest(manifest: &Manifest, asked: ManifestRef<'_>) -> Result<String, String> {
    let digest = format!("sha256:{}", crate::hash::sha256_hex(&manifest.body));
    if let ManifestRef::Digest(wanted) = asked
        && wanted != digest
    {
        return Err(format!(
            "the registry answered a manifest whose digest is {digest}, not {wanted}"
        ));
    }
    if let Some(given) = &manifest.digest
        && is_digest(given)
        && *given != digest
    {
        return Err(format!(
            "the registry says its manifest is {given}, but its bytes are {digest}"
        ));
    }
    Ok(digest)
}

/// The digest of the manifest an index lists for `linux/PLATFORM` (arm64's variant `v8` or
/// none), attestation manifests (platform `unknown`) skipped.
fn platform_manifest(index: &str, platform: &str) -> Result<String, String> {
    let value: Value =
        serde_json::from_str(index).map_err(|e| format!("its index is not JSON: {e}"))?;
    let entries = value
        .get("manifests")
        .and_then(Value::as_array)
        .ok_or("its index lists no manifests")?;
    let mut listed = Vec::new();
    for entry in entries {
        let field = |name: &str| {
            entry
                .get("platform")
                .and_then(|p| p.get(name))
                .and_then(Value::as_str)
                .unwrap_or("")
        };
        let (os, architecture, variant) = (field("os"), field("architecture"), field("variant"));
        if os == "unknown" || architecture == "unknown" {
            continue;
        }
        // arm64 is v8; an amd64 variant above v1 needs a newer CPU than the instance may have.
        let matches = os == "linux"
            && architecture == platform
            && (variant.is_empty() || variant == if platform == "arm64" { "v8" } else { "v1" });
        if matches
            && let Some(digest) = entry.get("digest").and_then(Value::as_str)
            && is_digest(digest)
        {
            return Ok(digest.to_owned());
        }
        listed.push(if variant.is_empty() {
            format!("{os}/{architecture}")
        } else {
            format!("{os}/{architecture}/{variant}")
        });
    }
    Err(format!(
        "it has no linux/{platform} image (its index lists {})",
        if listed.is_empty() {
            "none".to_owned()
        } else {
            listed.join(", ")
        }
    ))
}

/// The config's and layers' sizes, as the image manifest gives them.
fn image_bytes(manifest: &str) -> Result<u64, String> {
    let value: Value =
        serde_json::from_str(manifest).map_err(|e| format!("its manifest is not JSON: {e}"))?;
    let size = |descriptor: &Value| descriptor.get("size").and_then(Value::as_u64);
    let config = value
        .get("config")
        .and_then(size)
        .ok_or("its manifest has no config size")?;
    let layers = value
        .get("layers")
        .and_then(Value::as_array)
        .ok_or("its manifest lists no layers")?;
    layers.iter().try_fold(config, |sum, layer| {
        size(layer)
            .map(|s| sum.saturating_add(s))
            .ok_or_else(|| "a layer of its manifest has no size".to_owned())
    })
}

/// The images do not fit on the root volume, where Docker keeps them (`/var/lib/docker`): their
/// compressed size times [`EXTRACTION_FACTOR`] is more than the volume.
pub(crate) fn check_fits(
    images: &[BakedImage],
    root_volume_gib: Option<u32>,
) -> Result<(), BuildError> {
    let Some(volume_gib) = root_volume_gib else {
        return Ok(());
    };
    let compressed: u64 = images.iter().map(|i| i.bytes).sum();
    let needed = compressed.saturating_mul(EXTRACTION_FACTOR);
    if needed <= u64::from(volume_gib) * GIB {
        return Ok(());
    }
    Err(BuildError::ContainerImagesTooLarge {
        compressed_mib: compressed.div_ceil(1024 * 1024),
        needed_gib: needed.div_ceil(GIB),
        volume_gib,
        largest: images
            .iter()
            .max_by_key(|i| i.bytes)
            .map(|i| format!("{} ({} MiB)", i.reference, i.bytes.div_ceil(1024 * 1024)))
            .unwrap_or_default(),
    })
}

/// The step that pulls `images` on the builder, after the user's steps: it logs in to each ECR
/// registry with the builder's own role (a token from ecr:GetAuthorizationToken, signed by curl
/// with the credentials of the instance profile, kept in a Docker configuration of its own that
/// is removed at the end), checks the free space, pulls each image by digest, tags it as Docker
/// lists the reference's tag, checks it with `docker image inspect`, lists the images it baked in
/// `ECS_EXCLUDE_UNTRACKED_IMAGE` (so that the agent's untracked-image cleanup, if turned on,
/// keeps them), and fails if any registry credential is left in root's Docker configuration.
pub(crate) fn pull_step(images: &[BakedImage], timeout_seconds: u32) -> Step {
    let mut lines: Vec<String> = vec![
        "set -euo pipefail".into(),
        "work=\"$(mktemp -d)\"".into(),
        // Docker's configuration for this step only: the registry tokens never reach
        // /root/.docker, and are gone when the step ends, however it ends.
        "export DOCKER_CONFIG=\"$work/docker\"".into(),
        "trap 'rm -rf \"$work\"' EXIT".into(),
        "mkdir -p \"$DOCKER_CONFIG\"".into(),
        format!(
            "needed_kib={}",
            images
                .iter()
                .map(|i| i.bytes)
                .sum::<u64>()
                .saturating_mul(EXTRACTION_FACTOR)
                .div_ceil(1024)
        ),
        "docker_dir=/var/lib/docker; [ -d \"$docker_dir\" ] || docker_dir=/var/lib".into(),
        "free_kib=\"$(df -Pk \"$docker_dir\" | awk 'NR==2 {print $4}')\"".into(),
        "if [ \"$free_kib\" -lt \"$needed_kib\" ]; then echo \"ecs-ami: the images need about $((needed_kib / 1024)) MiB on $docker_dir, which has $((free_kib / 1024)) MiB free: enlarge the root volume (BlockDeviceMappings)\" >&2; exit 1; fi".into(),
        // Docker must run to pull; a step may have stopped and disabled it (as the ECS-optimized
        // AMI is imaged). It is started for the pulls and stopped again as the step found it.
        "started_docker=''".into(),
        "if command -v systemctl > /dev/null && ! systemctl is-active --quiet docker.service; then if systemctl start docker.service; then started_docker=1; else echo 'ecs-ami: docker.service could not be started; trying the pulls anyway' >&2; fi; fi".into(),
    ];
    // Each image's reference, read once (it was read at resolution, so it reads again).
    let references: Vec<Option<ImageReference>> = images
        .iter()
        .map(|i| ImageReference::parse(&i.reference).ok())
        .collect();
    // Docker pulls by digest untagged: the tag the reference names (`latest` when it names none)
    // is what a task naming it looks for, and what the agent's cleanup compares.
    let familiar_tags: Vec<Option<String>> = references
        .iter()
        .map(|r| r.as_ref().and_then(ImageReference::familiar_tag))
        .collect();
    let mut registries: Vec<(String, String, String)> = references
        .iter()
        .flatten()
        .filter_map(|reference| {
            let ecr = reference.ecr()?;
            let endpoint = crate::spec::ecr_api_endpoint(&reference.registry)?;
            Some((reference.registry.clone(), ecr.region, endpoint))
        })
        .collect();
    registries.sort();
    registries.dedup();
    if !registries.is_empty() {
        lines.extend(ECR_LOGIN.lines().map(str::to_owned));
        for (host, region, endpoint) in &registries {
            lines.push(format!(
                "ecr_login {} {} {}",
                script::single_quote(host),
                script::single_quote(region),
                script::single_quote(endpoint)
            ));
        }
    }
    for (image, familiar_tag) in images.iter().zip(&familiar_tags) {
        // By the index's digest when there is one, as docker pulls a multi-platform image: it
        // takes the builder's platform (the manifest resolved before launch) and knows the image
        // by the index's digest.
        let by_digest = format!(
            "{}@{}",
            image.name,
            image.index_digest.as_deref().unwrap_or(&image.digest)
        );
        lines.push(format!(
            "echo {}",
            script::single_quote(&format!(
                "ecs-ami: pulling {} as {by_digest}",
                image.reference
            ))
        ));
        lines.push(format!(
            "docker pull {} || {{ echo {} >&2; exit 1; }}",
            script::single_quote(&by_digest),
            script::single_quote(&format!(
                "ecs-ami: could not pull {} ({})",
                image.reference, image.digest
            ))
        ));
        if let Some(tag) = familiar_tag {
            lines.push(format!(
                "docker tag {} {}",
                script::single_quote(&by_digest),
                script::single_quote(tag)
            ));
        }
        lines.push(format!(
            "docker image inspect {} > /dev/null",
            script::single_quote(&by_digest)
        ));
    }
    for (host, _, _) in &registries {
        lines.push(format!(
            "docker logout {} > /dev/null",
            script::single_quote(host)
        ));
    }
    // The agent keeps images listed here even when untracked-image cleanup is on
    // (https://docs.aws.amazon.com/AmazonECS/latest/developerguide/ecs-agent-config.html): it
    // compares each `name:tag` with Docker's RepoTags, so Docker's own form is written. An image
    // named by digest alone has no tag and cannot be listed.
    let excluded: Vec<&str> = familiar_tags.iter().flatten().map(String::as_str).collect();
    lines.push("mkdir -p /etc/ecs && touch /etc/ecs/ecs.config".into());
    lines.push(format!(
        "baked={}",
        script::single_quote(&excluded.join(","))
    ));
    lines.push("current=\"$(sed -n 's/^ECS_EXCLUDE_UNTRACKED_IMAGE=//p' /etc/ecs/ecs.config | tail -n 1)\"".into());
    lines.push("sed -i '/^ECS_EXCLUDE_UNTRACKED_IMAGE=/d' /etc/ecs/ecs.config".into());
    lines.push(
        "echo \"ECS_EXCLUDE_UNTRACKED_IMAGE=${current:+$current,}$baked\" >> /etc/ecs/ecs.config"
            .into(),
    );
    // Nothing of the registries' credentials stays in the image.
    lines.push("for config in /root/.docker/config.json \"${HOME:-/root}/.docker/config.json\"; do if [ -f \"$config\" ] && grep -q '\"auth\"' \"$config\"; then echo \"ecs-ami: $config holds registry credentials; remove them before the image is made\" >&2; exit 1; fi; done".into());
    lines.push(
        "if [ -n \"$started_docker\" ]; then systemctl stop docker.service docker.socket; fi"
            .into(),
    );
    lines.push(format!(
        "echo 'ecs-ami: {} container image(s) baked'",
        images.len()
    ));
    Step {
        name: PULL_STEP_NAME.into(),
        timeout_seconds,
        action: crate::spec::Action::Command {
            commands: lines,
            environment: Default::default(),
        },
        outputs: Vec::new(),
    }
}

/// `ecr_login HOST REGION ENDPOINT`: a registry token for the builder's own role, from
/// ecr:GetAuthorizationToken (<https://docs.aws.amazon.com/AmazonECR/latest/APIReference/API_GetAuthorizationToken.html>),
/// handed to `docker login` on its standard input. The builder has no AWS CLI (the ECS-optimized
/// AMI is built from the minimal Amazon Linux 2023): curl (`--aws-sigv4`, 7.75 or later) signs
/// the request with the instance profile's credentials from IMDSv2, given to curl through its
/// standard input rather than its command line. `AWS_EC2_METADATA_SERVICE_ENDPOINT` and
/// `AWS_ENDPOINT_URL_ECR`, the AWS SDKs' own overrides, are honoured.
const ECR_LOGIN: &str = r#"ecr_login() {
  local host="$1" region="$2" endpoint="$3" imds token role credentials answer password
  imds="${AWS_EC2_METADATA_SERVICE_ENDPOINT:-http://169.254.169.254/}"
  imds="${imds%/}"
  token="$(curl -fsS -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 300' "$imds/latest/api/token")"
  role="$(curl -fsS -H "X-aws-ec2-metadata-token: $token" "$imds/latest/meta-data/iam/security-credentials/" | head -n 1)"
  if [ -z "$role" ]; then echo "ecs-ami: the builder has no instance profile role to pull from $host with" >&2; return 1; fi
  credentials="$(curl -fsS -H "X-aws-ec2-metadata-token: $token" "$imds/latest/meta-data/iam/security-credentials/$role")"
  endpoint="${AWS_ENDPOINT_URL_ECR:-$endpoint}"
  answer="$(printf '%s' "$credentials" | python3 -c '
import json, sys
c = json.load(sys.stdin)
print("user = \"%s:%s\"" % (c["AccessKeyId"], c["SecretAccessKey"]))
print("header = \"x-amz-security-token: %s\"" % c["Token"])
' | curl -sS --config - --aws-sigv4 "aws:amz:$region:ecr" \
      -H 'Content-Type: application/x-amz-json-1.1' \
      -H 'X-Amz-Target: AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken' \
      --data '{}' -w '\n%{http_code}' "$endpoint/")"
  if [ "${answer##*$'\n'}" != 200 ]; then echo "ecs-ami: ecr:GetAuthorizationToken for $host failed with the builder's role $role: ${answer%$'\n'*}" >&2; return 1; fi
  password="$(printf '%s' "${answer%$'\n'*}" | python3 -c '
import base64, json, sys
token = json.load(sys.stdin)["authorizationData"][0]["authorizationToken"]
print(base64.b64decode(token).decode().split(":", 1)[1])
')"
  printf '%s' "$password" | docker login --username AWS --password-stdin "$host" > /dev/null
  echo "ecs-ami: logged in to $host as $role"
}"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    #[test]
    fn an_index_resolves_to_the_builders_platform() {
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {"digest": digest('a'), "size": 1, "platform": {"os": "linux", "architecture": "amd64"}},
                {"digest": digest('b'), "size": 1, "platform": {"os": "linux", "architecture": "arm", "variant": "v7"}},
                {"digest": digest('c'), "size": 1, "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
                {"digest": digest('d'), "size": 1, "platform": {"os": "unknown", "architecture": "unknown"}},
            ]
        })
        .to_string();
        assert_eq!(platform_manifest(&index, "amd64").unwrap(), digest('a'));
        assert_eq!(platform_manifest(&index, "arm64").unwrap(), digest('c'));
        let none = platform_manifest(&index, "s390x").unwrap_err();
        assert!(
            none.contains(
                "no linux/s390x image (its index lists linux/amd64, linux/arm/v7, linux/arm64/v8)"
            ),
            "{none}"
        );
    }

    #[test]
    fn sizes_are_the_config_and_layers() {
        let manifest = serde_json::json!({
            "config": {"size": 100},
            "layers": [{"size": 1000}, {"size": 24}]
        })
        .to_string();
        assert_eq!(image_bytes(&manifest).unwrap(), 1124);
        assert!(image_bytes(r#"{"config": {"size": 1}}"#).is_err());
    }

    #[test]
    fn a_digest_must_be_the_bytes_and_the_one_asked_for() {
        let body = r#"{"schemaVersion":2}"#.to_owned();
        let real = format!("sha256:{}", crate::hash::sha256_hex(&body));
        let manifest = |digest: Option<String>| Manifest {
            media_type: IMAGE_TYPES[0].into(),
            body: body.clone(),
            digest,
        };
        assert_eq!(
            checked_digest(&manifest(None), ManifestRef::Tag("1")).unwrap(),
            real
        );
        assert!(checked_digest(&manifest(None), ManifestRef::Digest(&digest('f'))).is_err());
        let lying =
            checked_digest(&manifest(Some(digest('e'))), ManifestRef::Tag("1")).unwrap_err();
        assert!(lying.contains("but its bytes are"), "{lying}");
    }

    #[test]
    fn images_that_cannot_fit_on_the_root_volume_are_refused() {
        let image = |bytes: u64| BakedImage {
            reference: "nginx:1.27".into(),
            name: "docker.io/library/nginx".into(),
            digest: digest('a'),
            index_digest: None,
            bytes,
        };
        assert!(check_fits(&[image(GIB)], Some(30)).is_ok());
        let error = check_fits(&[image(GIB), image(10 * GIB)], Some(30)).unwrap_err();
        let text = error.to_string();
        assert!(text.contains("33 GiB") && text.contains("30 GiB"), "{text}");
        assert!(
            check_fits(&[image(100 * GIB)], None).is_ok(),
            "an unknown volume is the builder's to check"
        );
    }

    #[test]
    fn the_pull_step_logs_in_to_each_ecr_registry_once_and_pulls_by_digest() {
        let ecr = |repo: &str, c: char| BakedImage {
            reference: format!("123456789012.dkr.ecr.eu-west-1.amazonaws.com/{repo}:1"),
            name: format!("123456789012.dkr.ecr.eu-west-1.amazonaws.com/{repo}"),
            digest: digest(c),
            index_digest: None,
            bytes: 10,
        };
        let public = BakedImage {
            reference: "public.ecr.aws/docker/library/nginx:1.27".into(),
            name: "public.ecr.aws/docker/library/nginx".into(),
            digest: digest('c'),
            index_digest: Some(digest('d')),
            bytes: 10,
        };
        let step = pull_step(&[ecr("app", 'a'), ecr("worker", 'b'), public], 1800);
        let crate::spec::Action::Command { commands, .. } = &step.action else {
            panic!("a command step");
        };
        let text = commands.join("\n");
        assert_eq!(text.matches("\necr_login ").count(), 1, "{text}");
        // A multi-platform image is pulled by its index's digest, and tagged as docker lists it.
        assert!(text.contains(&format!(
            "docker pull 'public.ecr.aws/docker/library/nginx@{}'",
            digest('d')
        )));
        assert!(text.contains(&format!(
            "docker tag 'public.ecr.aws/docker/library/nginx@{}' 'public.ecr.aws/docker/library/nginx:1.27'",
            digest('d')
        )));
        assert!(text.contains(
            "ecr_login '123456789012.dkr.ecr.eu-west-1.amazonaws.com' 'eu-west-1' 'https://api.ecr.eu-west-1.amazonaws.com'"
        ));
        assert!(text.contains("baked='123456789012.dkr.ecr.eu-west-1.amazonaws.com/app:1,123456789012.dkr.ecr.eu-west-1.amazonaws.com/worker:1,public.ecr.aws/docker/library/nginx:1.27'"), "{text}");
        assert!(text.contains("ECS_EXCLUDE_UNTRACKED_IMAGE"));
        assert_eq!(step.name, PULL_STEP_NAME);
        // A step's script is within what SSM takes, whatever it holds.
        assert!(script::render(&step).len() < crate::spec::MAX_STEP_SCRIPT_BYTES);
    }

    /// The generated step passes shellcheck as SSM runs it (scripts/test installs shellcheck;
    /// without it, the test fails under CI and says so elsewhere).
    #[test]
    fn the_pull_step_passes_shellcheck() {
        let ecr = BakedImage {
            reference: "123456789012.dkr.ecr.eu-west-1.amazonaws.com/app:1".into(),
            name: "123456789012.dkr.ecr.eu-west-1.amazonaws.com/app".into(),
            digest: digest('a'),
            index_digest: None,
            bytes: 10,
        };
        // The step's own commands, as the wrapper runs them (the rendered step holds them in a
        // quoted heredoc, which shellcheck reads as data).
        let crate::spec::Action::Command { commands, .. } = pull_step(&[ecr], 1800).action else {
            panic!("a command step");
        };
        let rendered = format!("#!/bin/bash\n{}\n", commands.join("\n"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pull.sh");
        std::fs::write(&path, &rendered).unwrap();
        match std::process::Command::new("shellcheck")
            .args(["--shell=bash", "--severity=warning"])
            .arg(&path)
            .output()
        {
            Ok(out) => assert!(
                out.status.success(),
                "{}\n{rendered}",
                String::from_utf8_lossy(&out.stdout)
            ),
            Err(_) if std::env::var("CI").is_err() => {
                eprintln!("shellcheck is not installed: the pull step was not checked")
            }
            Err(error) => panic!("shellcheck must run under CI: {error}"),
        }
    }
}
