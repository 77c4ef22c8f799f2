//! What makes two builds produce the same image.
//!
//! The fingerprint covers every input that changes the image's content: the resolved source AMI
//! (not the parameter name, so a new ECS-optimized release rebuilds), the instance type, the
//! block devices, the steps, and an explicit AMI name (names cannot be changed in place). Tags,
//! the description, the subnet, security groups and the instance profile do not change what is
//! on the disk, so changing them alone never rebuilds.

use serde_json::{Value, json};

use crate::spec::AmiSpec;

/// Bumped when the meaning of a fingerprint changes, so old images are rebuilt rather than
/// wrongly reused.
const VERSION: &str = "v1";

pub fn of(spec: &AmiSpec, source_image: &str, instance_type: &str) -> String {
    digest(
        spec,
        ("source_image", json!(source_image)),
        json!(instance_type),
    )
}

/// The hash of what shapes the content: the source and instance type as the caller names them,
/// and the spec's block devices, steps and AMI name.
fn digest(spec: &AmiSpec, (source_key, source): (&str, Value), instance_type: Value) -> String {
    let canonical = json!({
        "version": VERSION,
        source_key: source,
        "instance_type": instance_type,
        "block_devices": spec.block_device_mappings,
        "steps": spec.steps,
        "ami_name": spec.ami_name,
    });
    format!(
        "{VERSION}-{}",
        crate::hash::sha256_hex(&canonical.to_string())
    )
}

/// The properties that shape the image, as the request states them: the source as given (an
/// AMI id, or a parameter's *name*), the instance type as given. Unlike [`of`], it does not move
/// when a parameter starts naming a new release, so a rollback can find the image it returns to
/// without resolving the source again.
pub fn of_request(spec: &AmiSpec) -> String {
    digest(
        spec,
        ("source", json!(spec.source)),
        json!(spec.instance_type),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

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

    #[test]
    fn fingerprints_of_existing_images_keep_their_value() {
        // Images built by earlier versions carry fingerprints of exactly this form; a change of
        // it would rebuild every AMI on its next Update.
        let spec = spec(json!({}));
        let canonical = json!({
            "version": "v1",
            "source_image": "ami-12345678",
            "instance_type": "t3.medium",
            "block_devices": spec.block_device_mappings,
            "steps": spec.steps,
            "ami_name": spec.ami_name,
        });
        assert_eq!(
            of(&spec, "ami-12345678", "t3.medium"),
            format!("v1-{}", crate::hash::sha256_hex(&canonical.to_string()))
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
        let step = &spec(json!({})).steps[0];
        let value = serde_json::to_value(step).unwrap();
        assert_eq!(value.as_object().unwrap().len(), 3, "{value}");
        assert!(value.get("outputs").is_none());
    }

    #[test]
    fn fingerprints_fit_in_a_tag_value() {
        assert!(of(&spec(json!({})), "ami-12345678", "t3.medium").len() <= 256);
    }
}
