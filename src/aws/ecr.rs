//! ECR, for `ContainerImages`: an image's manifest read by tag or digest, before anything is
//! launched, with the ECR API's BatchGetImage
//! (<https://docs.aws.amazon.com/AmazonECR/latest/APIReference/API_BatchGetImage.html>).

use aws_sdk_ecr::types::{ImageFailureCode, ImageIdentifier};

use super::*;
use crate::spec::EcrRegistry;

/// The manifest media types the builder's Docker can pull, images and indexes (multi-platform),
/// OCI's and Docker's: BatchGetImage answers the manifest as pushed when its type is among them.
/// (The API reference lists only the three image manifest types as values; ECR answers indexes
/// when asked for them, as Docker clients do.)
pub const MANIFEST_MEDIA_TYPES: [&str; 4] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// A manifest as a registry answered it: its bytes (its digest is their SHA-256) and media type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub media_type: String,
    pub body: String,
    /// The digest the registry gave (ECR's `imageId.imageDigest`, a registry's
    /// `Docker-Content-Digest`), checked against the bytes by the caller.
    pub digest: Option<String>,
}

/// What a manifest is asked for by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestRef<'a> {
    Tag(&'a str),
    Digest(&'a str),
}

impl ManifestRef<'_> {
    pub fn as_str(&self) -> &str {
        match self {
            ManifestRef::Tag(t) | ManifestRef::Digest(t) => t,
        }
    }
}

impl Aws {
    /// The manifest of `repository` in the ECR registry `registry` (its account and region; a
    /// repository of another account is read with `registryId`, and the repository policy must
    /// allow this function's role), or `None` when the tag or digest does not exist
    /// (`ImageNotFound`). A missing repository is an error (`RepositoryNotFoundException`), as is
    /// any other failure ECR reports for the image.
    pub async fn ecr_manifest(
        &self,
        registry: &EcrRegistry,
        repository: &str,
        reference: ManifestRef<'_>,
    ) -> Result<Option<Manifest>> {
        let there = self.in_region(&registry.region);
        let Some(ecr) = &there.ecr else {
            return Err(AwsError::in_answer(
                "ecr:BatchGetImage",
                "no ECR client configured",
            ));
        };
        let id = match reference {
            ManifestRef::Tag(tag) => ImageIdentifier::builder().image_tag(tag),
            ManifestRef::Digest(digest) => ImageIdentifier::builder().image_digest(digest),
        }
        .build();
        let answer = ecr
            .batch_get_image()
            .registry_id(&registry.account)
            .repository_name(repository)
            .image_ids(id)
            .set_accepted_media_types(Some(
                MANIFEST_MEDIA_TYPES
                    .iter()
                    .map(|t| (*t).to_owned())
                    .collect(),
            ))
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ecr:BatchGetImage", e))?;
        if let Some(image) = answer.images().first() {
            let Some(body) = image.image_manifest() else {
                return Err(AwsError::in_answer(
                    "ecr:BatchGetImage",
                    "the image came without its manifest",
                ));
            };
            return Ok(Some(Manifest {
                media_type: image
                    .image_manifest_media_type()
                    .map(str::to_owned)
                    .or_else(|| media_type_in(body))
                    .unwrap_or_default(),
                body: body.to_owned(),
                digest: image
                    .image_id()
                    .and_then(|id| id.image_digest())
                    .map(str::to_owned),
            }));
        }
        match answer.failures().first() {
            Some(failure) if failure.failure_code() == Some(&ImageFailureCode::ImageNotFound) => {
                Ok(None)
            }
            Some(failure) => Err(AwsError {
                operation: "ecr:BatchGetImage",
                code: failure.failure_code().map(|c| c.as_str().to_owned()),
                message: failure.failure_reason().unwrap_or_default().to_owned(),
            }),
            None => Err(AwsError::in_answer(
                "ecr:BatchGetImage",
                "the answer has neither the image nor a failure",
            )),
        }
    }
}

/// The `mediaType` a manifest states of itself, if any.
pub(super) fn media_type_in(body: &str) -> Option<String> {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()?
        .get("mediaType")?
        .as_str()
        .map(str::to_owned)
}
