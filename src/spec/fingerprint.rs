//! What makes two builds produce the same image.
//!
//! The fingerprint covers every input that changes the image's content: the resolved source AMI
//! (not the parameter name, so a new ECS-optimized release rebuilds), the instance type, the
//! block devices, the steps, and an explicit AMI name (names cannot be changed in place). Tags,
//! the description, the subnet, security groups and the instance profile do not change what is
//! on the disk, so changing them alone never rebuilds.
//!
//! The hashed text is the JSON of `CanonicalV1`, a struct of its own whose every key is spelled
//! out here, not the serde shape of [`AmiSpec`]: renaming or adding a field of the spec cannot
//! change the fingerprint of an image already built (which would rebuild every user's AMI on its
//! next Update). A change of meaning gets a new version and a new struct; the golden values in
//! the tests below were computed by the code that built the first images, and must never move.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{Action, AmiSpec, BlockDevice, Source, Step};

/// The resolved fingerprint: what the image is built from, the source as the AMI id it resolved
/// to.
pub fn of(spec: &AmiSpec, source_image: &str, instance_type: &str) -> String {
    CanonicalV1::new(
        spec,
        CanonicalSource::Resolved(source_image),
        Some(instance_type),
    )
    .digest()
}

/// The properties that shape the image, as the request states them: the source as given (an
/// AMI id, or a parameter's *name*), the instance type as given. Unlike [`of`], it does not move
/// when a parameter starts naming a new release, so a rollback can find the image it returns to
/// without resolving the source again.
pub fn of_request(spec: &AmiSpec) -> String {
    CanonicalV1::new(
        spec,
        CanonicalSource::AsGiven(&spec.source),
        spec.instance_type.as_deref(),
    )
    .digest()
}

/// Version 1 of the hashed text: images built since the first release carry a hash of its JSON.
/// The JSON keeps the order of the fields as declared here (and of each struct below), so that
/// order is part of version 1: never reorder them.
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
    let (key, value) = match source {
        Source::Ami(id) => ("Ami", id),
        Source::Parameter(name) => ("Parameter", name),
    };
    BTreeMap::from([(key, value)]).serialize(serializer)
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
        }
    }

    fn digest(&self) -> String {
        // Through `Value`, whose objects sort their keys: the text does not depend on the order
        // of the fields above.
        let value = serde_json::to_value(self).expect("the canonical struct is plain data");
        format!(
            "{VERSION_1}-{}",
            crate::hash::sha256_hex(&value.to_string())
        )
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
        // the canonical struct existed. Images in users' accounts carry these values: a change
        // here rebuilds every AMI on its next Update.
        let rich = rich();
        assert_eq!(
            of(&rich, "ami-12345678", "t3.medium"),
            "v1-5494d7c84b2b61af007c128bbe65623833e23058b24e452e1f75c5a4042296de"
        );
        assert_eq!(
            of_request(&rich),
            "v1-c201793c4cf378842e188a281a35c2256c0702931a1c0dc5d91c80562dd620c9"
        );
        let simple = AmiSpec::parse(&json!({
            "SourceAmi": "ami-0123456789abcdef0",
            "IamInstanceProfile": "b",
            "InstanceType": "m7g.large",
            "Steps": [{"Name": "a", "Commands": ["echo a"]}]
        }))
        .unwrap();
        assert_eq!(
            of(&simple, "ami-0123456789abcdef0", "m7g.large"),
            "v1-b874b2375e76e1870656a0354c98b2ab5e6cb832cc4a882041cd0eebe8563861"
        );
        assert_eq!(
            of_request(&simple),
            "v1-787e9325749b1df189ab0ec1ceb391a604546b705c1adab7f4c34180318bbfeb"
        );
    }

    #[test]
    fn the_spec_serde_shape_is_not_what_is_hashed() {
        // Renaming a spec field changes its serialization; the canonical text is spelled out
        // independently, so it still names every field by its version-1 key.
        let rich = rich();
        let text = serde_json::to_string(&CanonicalV1::new(
            &rich,
            CanonicalSource::AsGiven(&rich.source),
            None,
        ))
        .unwrap();
        assert!(
            text.starts_with("{\"version\":\"v1\",\"source\":"),
            "{text}"
        );
        for key in [
            "\"source\":{\"Parameter\":",
            "\"instance_type\":null",
            "\"ami_name\":\"team-ecs\"",
            "\"kms_key_id\":\"alias/ami\"",
            "\"volume_type\":null",
            "\"File\":{\"path\":\"/etc/ecs/ecs.config\",\"content\":",
            "\"outputs\":[\"VERSION\"]",
        ] {
            assert!(text.contains(key), "{key} not in {text}");
        }
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
            of(&spec(json!({})), "ami-12345678", "t3.medium"),
            of(&spec(json!({})), "ami-87654321", "t3.medium")
        );
    }

    #[test]
    fn metadata_changes_keep_the_fingerprint() {
        let base = of(&spec(json!({})), "ami-12345678", "t3.medium");
        for extra in [
            json!({"Tags": {"team": "x"}}),
            json!({"AmiDescription": "new words"}),
            json!({"SubnetId": "subnet-12345678"}),
            json!({"SecurityGroupIds": ["sg-12345678"]}),
            json!({"IamInstanceProfile": "other"}),
        ] {
            assert_eq!(
                of(&spec(extra.clone()), "ami-12345678", "t3.medium"),
                base,
                "{extra}"
            );
        }
    }

    #[test]
    fn content_changes_change_the_fingerprint() {
        let base = of(&spec(json!({})), "ami-12345678", "t3.medium");
        assert_ne!(of(&spec(json!({})), "ami-87654321", "t3.medium"), base);
        assert_ne!(of(&spec(json!({})), "ami-12345678", "t3.large"), base);
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
                of(&spec(extra.clone()), "ami-12345678", "t3.medium"),
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
    fn fingerprints_fit_in_a_tag_value() {
        assert!(of(&spec(json!({})), "ami-12345678", "t3.medium").len() <= 256);
    }
}
