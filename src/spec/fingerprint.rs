//! What makes two builds produce the same image.
//!
//! The fingerprint covers every input that changes the image's content: the resolved source AMI
//! (not the parameter name, so a new ECS-optimized release rebuilds), the instance type, the
//! block devices, the steps, an explicit AMI name (names cannot be changed in place) and
//! `ImdsSupport` (EC2 cannot take it back from an image). Tags, the description, the sharing, the
//! deprecation, the subnet, security groups and the instance profile do not change what is on the
//! disk, so changing them alone never rebuilds.
//!
//! The hashed text is the JSON of `CanonicalV1`, a struct of its own whose every key is spelled
//! out here, not the serde shape of [`AmiSpec`]: renaming or adding a field of the spec cannot
//! change the fingerprint of an image already built (which would rebuild every user's AMI on its
//! next Update). A change of meaning gets a new version and a new struct; the golden values in
//! the tests below were computed by the code that built the first images, and must never move.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use super::{Action, AmiSpec, BakedImage, BlockDevice, Source, SourceFilter, Step};

/// The resolved fingerprint: what the image is built from, the source as the AMI id it resolved
/// to, and `ContainerImages` as the digests they resolved to (a new image pushed under the same
/// tag rebuilds, as a new source release does).
pub fn of(
    spec: &AmiSpec,
    source_image: &str,
    instance_type: &str,
    container_images: &[BakedImage],
) -> String {
    let mut canonical = CanonicalV1::new(
        spec,
        CanonicalSource::Resolved(source_image),
        Some(instance_type),
    );
    if !container_images.is_empty() {
        canonical.container_images = Some(
            container_images
                .iter()
                .map(|image| serde_json::json!({"reference": image.reference, "digest": image.digest}))
                .collect(),
        );
    }
    canonical.digest()
}

/// The properties that shape the image, as the request states them: the source as given (an
/// AMI id, or a parameter's *name*), the instance type as given. Unlike [`of`], it does not move
/// when a parameter starts naming a new release, so a rollback can find the image it returns to
/// without resolving the source again.
pub fn of_request(spec: &AmiSpec) -> String {
    let mut canonical = CanonicalV1::new(
        spec,
        CanonicalSource::AsGiven(&spec.source),
        spec.instance_type.as_deref(),
    );
    let given = &spec.container_images;
    if !given.is_empty() {
        canonical.container_images = Some(vec![serde_json::json!({
            "images": given.images.iter().map(|r| &r.given).collect::<Vec<_>>(),
            "task_definitions": given.task_definitions,
        })]);
    }
    canonical.digest()
}

/// Version 1 of the hashed text: images built since the first release carry a hash of its JSON,
/// with every object's keys sorted (see [`sorted`]); the keys are the serde names below.
#[derive(Serialize)]
struct CanonicalV1<'a> {
    #[serde(rename = "version")]
    version: &'static str,
    #[serde(flatten)]
    source: CanonicalSource<'a>,
    #[serde(rename = "instance_type")]
    instance_type: Option<&'a str>,
    #[serde(rename = "block_devices")]
    block_devices: Vec<CanonicalDevice<'a>>,
    #[serde(rename = "steps")]
    steps: Vec<CanonicalStep<'a>>,
    #[serde(rename = "ami_name")]
    ami_name: Option<&'a str>,
    /// Left out when not set, so images built before it existed keep their fingerprints. Part of
    /// the fingerprint because EC2 cannot take it back from an image: a change builds a new one.
    #[serde(rename = "imds_support", skip_serializing_if = "Option::is_none")]
    imds_support: Option<&'a str>,
    /// `ContainerImages`: resolved, each reference with its digest; as given, the references and
    /// task definitions as written. Left out when there are none, so images built before it
    /// existed keep their fingerprints.
    #[serde(rename = "container_images", skip_serializing_if = "Option::is_none")]
    container_images: Option<Vec<Value>>,
}

/// The source under one of two keys: `source_image` for the resolved id, `source` for the
/// request's own `{"Ami": id}` or `{"Parameter": name}`.
#[derive(Serialize)]
enum CanonicalSource<'a> {
    #[serde(rename = "source_image")]
    Resolved(&'a str),
    #[serde(rename = "source")]
    AsGiven(#[serde(serialize_with = "given_source")] &'a Source),
}

fn given_source<S: serde::Serializer>(source: &&Source, serializer: S) -> Result<S::Ok, S::Error> {
    match source {
        Source::Ami(id) => BTreeMap::from([("Ami", id)]).serialize(serializer),
        Source::Parameter(name) => BTreeMap::from([("Parameter", name)]).serialize(serializer),
        Source::Filter(filter) => {
            BTreeMap::from([("Filter", CanonicalFilter::from(filter))]).serialize(serializer)
        }
    }
}

/// A `SourceAmiFilter` as written: its owners sorted, its filters by name. (A key of its own,
/// `Filter`, so the hashes of the other two sources are what they were before it existed.)
#[derive(Serialize)]
struct CanonicalFilter<'a> {
    #[serde(rename = "owners")]
    owners: &'a [String],
    #[serde(rename = "filters")]
    filters: &'a BTreeMap<String, Vec<String>>,
    #[serde(rename = "include_deprecated")]
    include_deprecated: bool,
}

impl<'a> From<&'a SourceFilter> for CanonicalFilter<'a> {
    fn from(filter: &'a SourceFilter) -> Self {
        CanonicalFilter {
            owners: &filter.owners,
            filters: &filter.filters,
            include_deprecated: filter.include_deprecated,
        }
    }
}

#[derive(Serialize)]
struct CanonicalDevice<'a> {
    device_name: &'a str,
    ebs: CanonicalEbs<'a>,
}

/// Every EBS setting, absent ones as `null`.
#[derive(Serialize)]
struct CanonicalEbs<'a> {
    volume_size: Option<u32>,
    volume_type: Option<&'a str>,
    iops: Option<u32>,
    throughput: Option<u32>,
    encrypted: Option<bool>,
    kms_key_id: Option<&'a str>,
    delete_on_termination: Option<bool>,
}

#[derive(Serialize)]
struct CanonicalStep<'a> {
    name: &'a str,
    timeout_seconds: u32,
    action: CanonicalAction<'a>,
    /// Left out when empty, so steps without outputs hash as they did before outputs existed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    outputs: Vec<&'a str>,
}

#[derive(Serialize)]
enum CanonicalAction<'a> {
    Command {
        commands: Vec<&'a str>,
        environment: BTreeMap<&'a str, &'a str>,
    },
    File {
        path: &'a str,
        content: &'a str,
        mode: &'a str,
        owner: &'a str,
    },
}

const VERSION_1: &str = "v1";

impl<'a> CanonicalV1<'a> {
    fn new(spec: &'a AmiSpec, source: CanonicalSource<'a>, instance_type: Option<&'a str>) -> Self {
        CanonicalV1 {
            version: VERSION_1,
            source,
            instance_type,
            block_devices: spec.block_device_mappings.iter().map(device).collect(),
            steps: spec.steps.iter().map(step).collect(),
            ami_name: spec.ami_name.as_deref(),
            imds_support: spec.imds_support.as_deref(),
            container_images: None,
        }
    }

    fn digest(&self) -> String {
        let value = serde_json::to_value(self).expect("the canonical struct is plain data");
        let text = sorted(value).to_string();
        format!("{VERSION_1}-{}", crate::hash::sha256_hex(&text))
    }
}

/// A digest of a request's properties exactly as CloudFormation sent them (keys sorted): how
/// an instance kept after a failed request knows CloudFormation's rollback of that request,
/// whose `OldResourceProperties` are the failed request's `ResourceProperties`.
pub fn of_properties_as_sent(properties: &Value) -> String {
    let text = sorted(properties.clone()).to_string();
    format!("sent-{}", crate::hash::sha256_hex(&text))
}

/// `value` with the keys of every object in sorted order, whatever the build. The first release
/// hashed `serde_json::Value`'s text, whose key order depends on a cargo feature: sorted in the
/// Lambda, but in declaration order in test builds, where a dev-dependency (`aws-smithy-mocks`)
/// turns on `preserve_order`. Images in users' accounts carry the Lambda's, sorted, hashes.
fn sorted(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let entries: BTreeMap<String, Value> =
                map.into_iter().map(|(k, v)| (k, sorted(v))).collect();
            Value::Object(entries.into_iter().collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

fn device(device: &BlockDevice) -> CanonicalDevice<'_> {
    let ebs = &device.ebs;
    CanonicalDevice {
        device_name: &device.device_name,
        ebs: CanonicalEbs {
            volume_size: ebs.volume_size,
            volume_type: ebs.volume_type.as_deref(),
            iops: ebs.iops,
            throughput: ebs.throughput,
            encrypted: ebs.encrypted,
            kms_key_id: ebs.kms_key_id.as_deref(),
            delete_on_termination: ebs.delete_on_termination,
        },
    }
}

fn step(step: &Step) -> CanonicalStep<'_> {
    let action = match &step.action {
        Action::Command {
            commands,
            environment,
        } => CanonicalAction::Command {
            commands: commands.iter().map(String::as_str).collect(),
            environment: environment
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
        },
        Action::File {
            path,
            content,
            mode,
            owner,
        } => CanonicalAction::File {
            path,
            content,
            mode,
            owner,
        },
    };
    CanonicalStep {
        name: &step.name,
        timeout_seconds: step.timeout_seconds,
        action,
        outputs: step.outputs.iter().map(String::as_str).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn spec(extra: Value) -> AmiSpec {
        let mut base = json!({
            "SourceAmiParameter": "/aws/service/ecs/optimized-ami/amazon-linux-2023/recommended/image_id",
            "IamInstanceProfile": "builder",
            "Steps": [{"Name": "a", "Commands": ["echo a"]}]
        });
        for (k, v) in extra.as_object().unwrap() {
            base[k] = v.clone();
        }
        AmiSpec::parse(&base).unwrap()
    }

    /// A spec with every field the fingerprint reads.
    fn rich() -> AmiSpec {
        AmiSpec::parse(&json!({
            "SourceAmiParameter": "/aws/service/ecs/optimized-ami/amazon-linux-2023/recommended/image_id",
            "IamInstanceProfile": "builder",
            "AmiName": "team-ecs",
            "BlockDeviceMappings": [
                {"DeviceName": "/dev/xvda", "Ebs": {"VolumeSize": 40, "VolumeType": "gp3", "Iops": 4000, "Throughput": 250, "Encrypted": true, "KmsKeyId": "alias/ami", "DeleteOnTermination": true}},
                {"DeviceName": "/dev/xvdb", "Ebs": {"VolumeSize": 20}}
            ],
            "Steps": [
                {"Name": "packages", "Commands": ["dnf -y update", "echo VERSION=1 >> \"$ECS_AMI_OUTPUTS\""], "Environment": {"A": "1"}, "TimeoutSeconds": 900, "Outputs": ["VERSION"]},
                {"Name": "config", "Path": "/etc/ecs/ecs.config", "Content": "ECS_LOGLEVEL=info\n", "Mode": "600", "Owner": "root:root"},
                {"Name": "plain", "Commands": ["true"]}
            ]
        }))
        .unwrap()
    }

    #[test]
    fn fingerprints_of_existing_images_keep_their_value() {
        // Computed by the release that hashed serde's shape of the spec (commit 28c7219), before
        // the canonical struct existed, built as the Lambda is (without dev-dependencies, so
        // serde_json sorted the keys). Images in users' accounts carry these values: a change
        // here rebuilds every AMI on its next Update.
        let rich = rich();
        assert_eq!(
            of(&rich, "ami-12345678", "t3.medium", &[]),
            "v1-12bbf449844aea0580c5c2ff6084caac6a7fa06a61d157e4dd20d9fb680f8959"
        );
        assert_eq!(
            of_request(&rich),
            "v1-3de7d9a8838ad2bc7567832eb358170ff5611e86fa30dff44775a2d75e9dfe49"
        );
        let simple = AmiSpec::parse(&json!({
            "SourceAmi": "ami-0123456789abcdef0",
            "IamInstanceProfile": "b",
            "InstanceType": "m7g.large",
            "Steps": [{"Name": "a", "Commands": ["echo a"]}]
        }))
        .unwrap();
        assert_eq!(
            of(&simple, "ami-0123456789abcdef0", "m7g.large", &[]),
            "v1-cec5ae49fc986da3bf82fb383f80d69c2ef332484515693bd3b4e3b40f6d93d1"
        );
        assert_eq!(
            of_request(&simple),
            "v1-72b2a5b18e9adc82e8db61a5ce774ab35b8acfc16a67f0ec4d7c748dd2dfe042"
        );
    }

    #[test]
    fn the_hashed_text_is_spelled_out_here_with_sorted_keys() {
        // Renaming a spec field changes nothing here: the canonical text names every field by
        // its version-1 key, and sorts the keys of every object whatever the build.
        let rich = rich();
        let canonical = CanonicalV1::new(&rich, CanonicalSource::AsGiven(&rich.source), None);
        let text = sorted(serde_json::to_value(&canonical).unwrap()).to_string();
        assert!(
            text.starts_with(
                "{\"ami_name\":\"team-ecs\",\"block_devices\":[{\"device_name\":\"/dev/xvda\",\"ebs\":{\"delete_on_termination\":true,\"encrypted\":true,\"iops\":4000,\"kms_key_id\":\"alias/ami\","
            ),
            "{text}"
        );
        for key in [
            "\"instance_type\":null,\"source\":{\"Parameter\":",
            "\"volume_type\":null",
            "\"File\":{\"content\":\"ECS_LOGLEVEL=info\\n\",\"mode\":\"600\",\"owner\":\"root:root\",\"path\":\"/etc/ecs/ecs.config\"}",
            "\"outputs\":[\"VERSION\"],\"timeout_seconds\":900",
        ] {
            assert!(text.contains(key), "{key} not in {text}");
        }
        assert!(text.ends_with(",\"version\":\"v1\"}"), "{text}");
    }

    #[test]
    fn keys_are_sorted_even_where_serde_json_keeps_insertion_order() {
        // Test builds have serde_json's preserve_order on (through aws-smithy-mocks), the Lambda
        // does not: the text must be the same in both.
        let mut inner = serde_json::Map::new();
        inner.insert("z".into(), json!(1));
        inner.insert("a".into(), json!([{"y": 1, "b": 2}]));
        let mut outer = serde_json::Map::new();
        outer.insert("m".into(), Value::Object(inner));
        outer.insert("c".into(), json!(null));
        assert_eq!(
            sorted(Value::Object(outer)).to_string(),
            r#"{"c":null,"m":{"a":[{"b":2,"y":1}],"z":1}}"#
        );
    }

    #[test]
    fn the_request_fingerprint_follows_the_properties_not_the_release() {
        let base = of_request(&spec(json!({})));
        assert!(base.starts_with("v1-"));
        assert_eq!(base, of_request(&spec(json!({"Tags": {"team": "x"}}))));
        assert_ne!(
            base,
            of_request(&spec(
                json!({"Steps": [{"Name": "a", "Commands": ["echo b"]}]})
            ))
        );
        assert_ne!(
            base,
            of_request(&spec(
                json!({"SourceAmiParameter": "/ecs-ami/source/other"})
            ))
        );
        // The resolved fingerprint moves with the release; this one cannot see it.
        assert_ne!(
            of(&spec(json!({})), "ami-12345678", "t3.medium", &[]),
            of(&spec(json!({})), "ami-87654321", "t3.medium", &[])
        );
    }

    #[test]
    fn metadata_changes_keep_the_fingerprint() {
        let base = of(&spec(json!({})), "ami-12345678", "t3.medium", &[]);
        for extra in [
            json!({"Tags": {"team": "x"}}),
            json!({"AmiDescription": "new words"}),
            json!({"SubnetId": "subnet-12345678"}),
            json!({"SecurityGroupIds": ["sg-12345678"]}),
            json!({"IamInstanceProfile": "other"}),
        ] {
            assert_eq!(
                of(&spec(extra.clone()), "ami-12345678", "t3.medium", &[]),
                base,
                "{extra}"
            );
        }
    }

    #[test]
    fn content_changes_change_the_fingerprint() {
        let base = of(&spec(json!({})), "ami-12345678", "t3.medium", &[]);
        assert_ne!(of(&spec(json!({})), "ami-87654321", "t3.medium", &[]), base);
        assert_ne!(of(&spec(json!({})), "ami-12345678", "t3.large", &[]), base);
        for extra in [
            json!({"Steps": [{"Name": "a", "Commands": ["echo b"]}]}),
            json!({"Steps": [{"Name": "a", "Commands": ["echo a"], "Environment": {"X": "1"}}]}),
            json!({"Steps": [{"Name": "a", "Commands": ["echo a"], "TimeoutSeconds": 60}]}),
            json!({"BlockDeviceMappings": [{"DeviceName": "/dev/xvdb", "Ebs": {"VolumeSize": 20}}]}),
            json!({"AmiName": "fixed-name"}),
            // Declaring an output changes the attributes the image must answer with.
            json!({"Steps": [{"Name": "a", "Commands": ["echo a"], "Outputs": ["V"]}]}),
        ] {
            assert_ne!(
                of(&spec(extra.clone()), "ami-12345678", "t3.medium", &[]),
                base,
                "{extra}"
            );
        }
    }

    #[test]
    fn steps_without_outputs_hash_as_before_outputs_existed() {
        // Images built before step outputs existed keep their fingerprints (no mass rebuild).
        let spec = spec(json!({}));
        let value = serde_json::to_value(step(&spec.steps[0])).unwrap();
        assert_eq!(value.as_object().unwrap().len(), 3, "{value}");
        assert!(value.get("outputs").is_none());
    }

    #[test]
    fn a_source_filter_is_hashed_as_written_and_its_image_as_resolved() {
        let with_filter = |filter: Value| {
            AmiSpec::parse(&json!({"SourceAmiFilter": filter, "IamInstanceProfile": "b"})).unwrap()
        };
        let a = with_filter(json!({"Owners": ["amazon", "self"], "Name": "al2023-*"}));
        let same = with_filter(json!({"Owners": ["self", "amazon"], "Name": "al2023-*"}));
        let other = with_filter(
            json!({"Owners": ["amazon", "self"], "Name": "al2023-*", "IncludeDeprecated": true}),
        );
        assert_eq!(
            of_request(&a),
            of_request(&same),
            "the owners' order is not a change"
        );
        assert_ne!(of_request(&a), of_request(&other));
        let by_id =
            AmiSpec::parse(&json!({"SourceAmi": "ami-12345678", "IamInstanceProfile": "b"}))
                .unwrap();
        assert_ne!(of_request(&a), of_request(&by_id));
        // The image is what was built from: the same resolved AMI is the same content, however
        // it was chosen.
        assert_eq!(
            of(&a, "ami-12345678", "t3.medium", &[]),
            of(&by_id, "ami-12345678", "t3.medium", &[])
        );
    }

    #[test]
    fn imds_support_rebuilds_and_leaves_other_images_alone() {
        let plain = spec(json!({}));
        let required = spec(json!({"ImdsSupport": "v2.0"}));
        assert_ne!(
            of(&plain, "ami-12345678", "t3.medium", &[]),
            of(&required, "ami-12345678", "t3.medium", &[])
        );
        assert_ne!(of_request(&plain), of_request(&required));
        // Without it, the hashed text has no key for it (the golden values above hold too).
        let text = serde_json::to_value(CanonicalV1::new(
            &plain,
            CanonicalSource::AsGiven(&plain.source),
            None,
        ))
        .unwrap();
        assert!(text.get("imds_support").is_none(), "{text}");
    }

    #[test]
    fn fingerprints_fit_in_a_tag_value() {
        assert!(of(&spec(json!({})), "ami-12345678", "t3.medium", &[]).len() <= 256);
    }

    #[test]
    fn container_images_rebuild_when_a_digest_moves_and_leave_other_images_alone() {
        let plain = spec(json!({}));
        let baking = spec(json!({"ContainerImages": {"Images": ["nginx:1.27"]}}));
        let image = |digit: char| BakedImage {
            reference: "nginx:1.27".into(),
            name: "docker.io/library/nginx".into(),
            digest: format!("sha256:{}", digit.to_string().repeat(64)),
            index_digest: None,
            bytes: 1000,
        };
        let at = |images: &[BakedImage]| of(&baking, "ami-12345678", "t3.medium", images);
        assert_ne!(
            at(&[image('a')]),
            at(&[image('b')]),
            "a new push under the tag rebuilds"
        );
        assert_eq!(
            at(&[image('a')]),
            at(&[BakedImage {
                bytes: 5,
                ..image('a')
            }]),
            "sizes are not content"
        );
        assert_ne!(
            at(&[image('a')]),
            of(&plain, "ami-12345678", "t3.medium", &[])
        );
        // As given (a rollback's lookup), the references as written, not their digests.
        assert_ne!(of_request(&plain), of_request(&baking));
        // Without ContainerImages the hashed text has no key for it (the golden values hold).
        assert_eq!(
            of(&baking, "ami-12345678", "t3.medium", &[]),
            of(&plain, "ami-12345678", "t3.medium", &[])
        );
    }
}
