//! What the engine writes on what it creates: the tags that find a request's builder, image and
//! snapshots again (after a crash, for cleanup, for an Update), the tags the user asked for, and
//! the names and tokens derived from the request.

use std::collections::BTreeMap;

use crate::aws::Image;
use crate::cfn::Identity;
use crate::engine::Done;
use crate::engine::create::Resolved;
use crate::hash::short_hash;
use crate::spec::{AmiSpec, BakedImage, SOURCE_IMAGE_ATTRIBUTE, fingerprint};

pub const TAG_STACK: &str = "ecs-ami:stack-id";
pub const TAG_LOGICAL: &str = "ecs-ami:logical-id";
pub const TAG_REQUEST: &str = "ecs-ami:request-id";
pub const TAG_FINGERPRINT: &str = "ecs-ami:fingerprint";
/// [`crate::spec::fingerprint::of_request`]: what a rollback looks for.
pub const TAG_PROPERTIES: &str = "ecs-ami:properties";
pub const TAG_SOURCE: &str = "ecs-ami:source-image";
pub const TAG_IMAGE: &str = "ecs-ami:image-id";
/// On the builder and the test instance: the build's `TimeoutMinutes`, for whoever watches the
/// build (`ecs-ami watch`). The same for every delivery of a request (a time would not be, and
/// RunInstances' ClientToken must see the same tags again).
pub const TAG_TIMEOUT_MINUTES: &str = "ecs-ami:timeout-minutes";
/// On the test instance (`Tests`): `test`. A resumed build never takes it for the builder.
pub const TAG_ROLE: &str = "ecs-ami:role";
pub const ROLE_TEST: &str = "test";
/// On an image that passed its tests: when (UTC), and on which test instance.
pub const TAG_TESTED_AT: &str = "ecs-ami:tested-at";
pub const TAG_TEST_INSTANCE: &str = "ecs-ami:test-instance";
/// On an image: the digests of the `Tests` it passed (comma-separated, the latest last).
pub const TAG_TESTS_PASSED: &str = "ecs-ami:tests-passed";
/// How many digests an image keeps (a tag value holds 256 characters).
const TESTS_PASSED_KEPT: usize = 20;

/// Whether `image` passed `tests` (by their digest).
pub(crate) fn passed(image: &Image, tests: &crate::spec::TestSpec) -> bool {
    let digest = tests.digest();
    image
        .tags
        .get(TAG_TESTS_PASSED)
        .is_some_and(|list| list.split(',').any(|d| d == digest))
}

/// The image's list of passed tests with `digest` added last.
pub(crate) fn with_passed(image_tags: &BTreeMap<String, String>, digest: &str) -> String {
    let mut list: Vec<&str> = image_tags
        .get(TAG_TESTS_PASSED)
        .map(|l| {
            l.split(',')
                .filter(|d| !d.is_empty() && *d != digest)
                .collect()
        })
        .unwrap_or_default();
    list.push(digest);
    let keep = list.len().saturating_sub(TESTS_PASSED_KEPT);
    list[keep..].join(",")
}
/// On a copy of the image in another region (`Regions`) and on its snapshots: the id of the
/// image it copies, by which the resource's Update and Delete find it.
pub const TAG_COPY_OF: &str = "ecs-ami:copy-of";
/// On the image: the regions its copies are in, comma-separated.
pub const TAG_COPY_REGIONS: &str = "ecs-ami:copy-regions";
/// Each step output is kept on the AMI under this prefix, so that an Update that keeps the AMI
/// (or a rollback that reuses one) answers with the same attributes.
pub const TAG_OUTPUT_PREFIX: &str = "ecs-ami:output:";
/// Each container image baked into the AMI (`ContainerImages`), numbered from 01:
/// `REFERENCE@DIGEST`, so that a person or a consuming stack sees exactly what an AMI holds.
pub const TAG_CONTAINER_IMAGE_PREFIX: &str = "ecs-ami:container-image:";
/// EC2's longest tag value.
const MAX_TAG_VALUE_CHARS: usize = 256;

/// Stack and logical id as the name's prefix: see [`unique_image_name`].
pub fn default_image_name(identity: &Identity, utc_stamp: String) -> String {
    let prefix = format!("{}-{}", identity.stack_name(), identity.logical_id);
    unique_image_name(&prefix, identity, utc_stamp)
}

/// `PREFIX-YYYYMMDDTHHMMSSZ-HASH`: readable in the console, and unique per build. EC2 refuses a
/// second image with a name in use in the account and region (`InvalidAMIName.Duplicate`), and
/// the image a rebuild replaces exists until CloudFormation deletes it after the update, so an
/// `AmiName` given by the user is a prefix too. The short request hash keeps two builds in the
/// same second apart. AMI names allow only a few punctuation marks.
pub fn unique_image_name(prefix: &str, identity: &Identity, utc_stamp: String) -> String {
    let raw = format!(
        "{prefix}-{utc_stamp}-{}",
        &short_hash(&identity.request_id)[..6]
    );
    let cleaned: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "()[] ./-'@_".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    if cleaned.len() <= 128 {
        cleaned
    } else {
        // Keep the distinguishing end (time and hash).
        cleaned[cleaned.len() - 128..].to_owned()
    }
}

/// Derived from the request and the image tested, so a re-delivered event cannot launch a second
/// test instance, and a re-test of another image gets its own.
pub fn test_client_token(identity: &Identity, image_id: &str, attempt: &str) -> String {
    let digest =
        crate::hash::sha256_hex(&format!("{}|test|{image_id}|{attempt}", identity.digest()));
    format!("ecs-ami-test-{}", &digest[..48])
}

/// Derived from the request, so a re-delivered event cannot launch a second builder.
pub fn client_token(identity: &Identity) -> String {
    format!("ecs-ami-{}", &identity.digest()[..48])
}

pub fn identity_tags(identity: &Identity) -> BTreeMap<String, String> {
    BTreeMap::from([
        (TAG_STACK.to_owned(), identity.stack_id.clone()),
        (TAG_LOGICAL.to_owned(), identity.logical_id.clone()),
        (TAG_REQUEST.to_owned(), identity.request_id.clone()),
    ])
}

pub(crate) fn resource_tags(identity: &Identity) -> BTreeMap<String, String> {
    BTreeMap::from([
        (TAG_STACK.to_owned(), identity.stack_id.clone()),
        (TAG_LOGICAL.to_owned(), identity.logical_id.clone()),
    ])
}

pub(crate) fn image_tags(
    identity: &Identity,
    spec: &AmiSpec,
    resolved: &Resolved,
    outputs: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut tags = user_tags(spec, outputs, &resolved.source_image);
    for (name, value) in outputs {
        tags.insert(format!("{TAG_OUTPUT_PREFIX}{name}"), value.clone());
    }
    tags.extend(identity_tags(identity));
    tags.insert(TAG_FINGERPRINT.into(), resolved.fingerprint.clone());
    tags.insert(TAG_PROPERTIES.into(), fingerprint::of_request(spec));
    tags.insert(TAG_SOURCE.into(), resolved.source_image.clone());
    for (i, image) in resolved.container_images.iter().enumerate() {
        tags.insert(
            format!("{TAG_CONTAINER_IMAGE_PREFIX}{:02}", i + 1),
            container_image_tag(image),
        );
    }
    tags
}

/// `REFERENCE@DIGEST` within a tag value's 256 characters: the digest is kept whole, a reference
/// too long loses its start (the repository's end and the tag say most).
fn container_image_tag(image: &BakedImage) -> String {
    let room = MAX_TAG_VALUE_CHARS - image.digest.len() - 1;
    let chars: Vec<char> = image.reference.chars().collect();
    let reference = if chars.len() <= room {
        image.reference.clone()
    } else {
        let kept: String = chars[chars.len() - (room - 1)..].iter().collect();
        format!("…{kept}")
    };
    format!("{reference}@{}", image.digest)
}

/// The container images an image holds, from its tags, in their order (`name` and `bytes` are
/// not kept on the image: `name` is the reference's, `bytes` 0).
pub(crate) fn container_images_of(image: &Image) -> Vec<BakedImage> {
    image
        .tags
        .iter()
        .filter(|(key, _)| key.starts_with(TAG_CONTAINER_IMAGE_PREFIX))
        .filter_map(|(_, value)| {
            let (reference, digest) = value.rsplit_once('@')?;
            let name = crate::spec::ImageReference::parse(reference)
                .map(|r| r.name())
                .unwrap_or_default();
            Some(BakedImage {
                reference: reference.to_owned(),
                name,
                digest: digest.to_owned(),
                index_digest: None,
                bytes: 0,
            })
        })
        .collect()
}

/// The `ContainerImages` attribute: a JSON list of `{"Reference", "Digest"}`.
fn container_images_attribute(images: &[BakedImage]) -> String {
    let list: Vec<serde_json::Value> = images
        .iter()
        .map(|i| serde_json::json!({"Reference": i.reference, "Digest": i.digest}))
        .collect();
    serde_json::Value::Array(list).to_string()
}

/// The tags the user asked for: `Tags`, and `OutputTags` with the values the steps handed back
/// (or the source AMI's id, for `SourceImageId`).
pub(crate) fn user_tags(
    spec: &AmiSpec,
    outputs: &BTreeMap<String, String>,
    source_image: &str,
) -> BTreeMap<String, String> {
    let mut tags = spec.tags.clone();
    for (key, output) in &spec.output_tags {
        let value = if output == SOURCE_IMAGE_ATTRIBUTE {
            Some(source_image)
        } else {
            outputs.get(output).map(String::as_str)
        };
        if let Some(value) = value {
            tags.insert(key.clone(), value.to_owned());
        }
    }
    tags
}

/// The step outputs an image was built with, from its tags.
pub(crate) fn outputs_of(image: &Image) -> BTreeMap<String, String> {
    image
        .tags
        .iter()
        .filter_map(|(key, value)| {
            let name = key.strip_prefix(TAG_OUTPUT_PREFIX)?;
            Some((name.to_owned(), value.clone()))
        })
        .collect()
}

pub(crate) fn owned_by(image: &Image, identity: &Identity) -> bool {
    image.tags.get(TAG_STACK) == Some(&identity.stack_id)
        && image.tags.get(TAG_LOGICAL) == Some(&identity.logical_id)
}

pub(crate) fn image_outcome(image: &Image) -> Done {
    let tag = |key: &str| image.tags.get(key).map(String::as_str).unwrap_or_default();
    image_answer(ImageAnswer {
        image_id: &image.id,
        name: &image.name,
        source_image: tag(TAG_SOURCE),
        snapshot_ids: &image.snapshot_ids,
        fingerprint: tag(TAG_FINGERPRINT),
        outputs: outputs_of(image),
        container_images: &container_images_of(image),
        tested: image
            .tags
            .get(TAG_TESTED_AT)
            .zip(image.tags.get(TAG_TEST_INSTANCE))
            .map(|(at, instance)| (at.as_str(), instance.as_str())),
    })
}

/// What a SUCCESS says of an image: its id, and the attributes `!GetAtt` reads.
pub(crate) struct ImageAnswer<'a> {
    pub image_id: &'a str,
    pub name: &'a str,
    pub source_image: &'a str,
    pub snapshot_ids: &'a [String],
    pub fingerprint: &'a str,
    /// The steps' `Outputs`.
    pub outputs: BTreeMap<String, String>,
    /// `ContainerImages` as baked.
    pub container_images: &'a [BakedImage],
    /// When it passed its `Tests`, and on which test instance.
    pub tested: Option<(&'a str, &'a str)>,
}

/// The one place the attributes of an answer are named: for a build that just finished, and for
/// an image found again (retagged, reused, rolled back to, or answered again).
pub(crate) fn image_answer(answer: ImageAnswer<'_>) -> Done {
    let mut data = BTreeMap::from([
        ("ImageId".to_owned(), answer.image_id.to_owned()),
        ("ImageName".to_owned(), answer.name.to_owned()),
        ("SourceImageId".to_owned(), answer.source_image.to_owned()),
        ("SnapshotIds".to_owned(), answer.snapshot_ids.join(",")),
        ("Fingerprint".to_owned(), answer.fingerprint.to_owned()),
    ]);
    data.extend(answer.outputs);
    if !answer.container_images.is_empty() {
        data.insert(
            "ContainerImages".to_owned(),
            container_images_attribute(answer.container_images),
        );
    }
    if let Some((at, instance)) = answer.tested {
        data.insert("TestedAt".to_owned(), at.to_owned());
        data.insert("TestInstanceId".to_owned(), instance.to_owned());
    }
    Done::new(answer.image_id, data)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn identity() -> Identity {
        Identity {
            stack_id: "arn:aws:cloudformation:us-east-1:123456789012:stack/images/guid".into(),
            logical_id: "Ami".into(),
            request_id: "8f14e45f-ceea-467f-a0e6-ff4d5c6a2a10".into(),
        }
    }

    #[test]
    fn default_names_are_readable_unique_and_valid() {
        // An AmiName is a prefix: a rebuild (another request) never takes the name in use.
        let given = unique_image_name("team ecs (base)", &identity(), "20261125T083000Z".into());
        assert!(
            given.starts_with("team ecs (base)-20261125T083000Z-"),
            "{given}"
        );
        let mut rebuild = identity();
        rebuild.request_id = "another-request".into();
        let again = unique_image_name("team ecs (base)", &rebuild, "20261125T083000Z".into());
        assert_ne!(given, again);
        let name = default_image_name(&identity(), "20261125T083000Z".into());
        assert!(name.starts_with("images-Ami-20261125T083000Z-"), "{name}");
        let other = Identity {
            request_id: "another".into(),
            ..identity()
        };
        assert_ne!(name, default_image_name(&other, "20261125T083000Z".into()));
        let long = Identity {
            stack_id: format!(
                "arn:aws:cloudformation:us-east-1:1:stack/{}/g",
                "s".repeat(200)
            ),
            ..identity()
        };
        let long_name = default_image_name(&long, "20261125T083000Z".into());
        assert_eq!(long_name.len(), 128);
        assert!(long_name.contains("20261125T083000Z"));
    }

    #[test]
    fn client_tokens_are_per_request_and_within_ec2_limits() {
        let token = client_token(&identity());
        assert!(token.len() <= 64);
        assert_eq!(token, client_token(&identity()));
        let other = Identity {
            request_id: "r2".into(),
            ..identity()
        };
        assert_ne!(token, client_token(&other));
    }
}
