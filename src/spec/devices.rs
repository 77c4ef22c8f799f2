//! `BlockDeviceMappings`: the builder's volumes, and the AMI's.

use std::collections::BTreeSet;

use serde_json::Value;

use super::*;

pub(super) fn parse_block_devices(items: Vec<Value>, problems: &mut Problems) -> Vec<BlockDevice> {
    const TYPES: [&str; 7] = ["gp2", "gp3", "io1", "io2", "st1", "sc1", "standard"];
    let mut devices = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, item) in items.iter().enumerate() {
        let prefix = format!("BlockDeviceMappings[{i}]");
        let Some(map) = item.as_object() else {
            problems.add(&prefix, "must be an object with DeviceName and Ebs");
            continue;
        };
        let mut fields = Fields::new(&prefix, map, problems);
        let device_name = fields.string("DeviceName");
        let ebs = fields.take("Ebs");
        fields.finish();
        let Some(device_name) = device_name else {
            problems.add(
                &format!("{prefix}.DeviceName"),
                "required, such as /dev/xvdb",
            );
            continue;
        };
        if !is_device_name(&device_name) {
            problems.add(
                &format!("{prefix}.DeviceName"),
                format!("{device_name:?} is not a device name such as /dev/xvda or /dev/sdf"),
            );
        }
        if !seen.insert(device_name.clone()) {
            problems.add(
                &format!("{prefix}.DeviceName"),
                format!("{device_name} is mapped twice"),
            );
        }
        let ebs_path = format!("{prefix}.Ebs");
        let Some(ebs_map) = ebs.and_then(Value::as_object) else {
            problems.add(
                &ebs_path,
                "required: an object such as {VolumeSize: 20, VolumeType: gp3}",
            );
            continue;
        };
        let mut fields = Fields::new(&ebs_path, ebs_map, problems);
        let volume_type = fields.string("VolumeType");
        let volume_size = fields.number("VolumeSize", 1, 65536);
        let iops = fields.number("Iops", 100, 256_000);
        let throughput = fields.number("Throughput", 125, 2000);
        let encrypted = fields.boolean("Encrypted");
        let kms_key_id = fields.string("KmsKeyId");
        let delete_on_termination = fields.boolean("DeleteOnTermination");
        fields.finish();
        if let Some(kind) = &volume_type
            && !TYPES.contains(&kind.as_str())
        {
            problems.add(
                &format!("{ebs_path}.VolumeType"),
                format!("{kind:?} is not one of {}", TYPES.join(", ")),
            );
        }
        let kind = volume_type.as_deref().unwrap_or("gp3");
        // Each volume type's sizes and IOPS, as the EC2 API Reference gives them for
        // EbsBlockDevice and CreateVolume
        // (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_EbsBlockDevice.html).
        if let Some(size) = volume_size {
            let (min, max) = match kind {
                "gp3" => (1, 65536),
                "io2" => (4, 65536),
                "io1" => (4, 16384),
                "st1" | "sc1" => (125, 16384),
                "standard" => (1, 1024),
                _ => (1, 16384),
            };
            if !(min..=max).contains(&size) {
                problems.add(
                    &format!("{ebs_path}.VolumeSize"),
                    format!("{size} GiB is out of range {min}..={max} for {kind}"),
                );
            }
        }
        let iops_range = match kind {
            "gp3" => Some((3000, 80_000)),
            "io1" => Some((100, 64_000)),
            "io2" => Some((100, 256_000)),
            _ => None,
        };
        match (iops, iops_range) {
            (Some(_), None) => problems.add(
                &format!("{ebs_path}.Iops"),
                format!("applies only to io1, io2 and gp3 volumes, not {kind}"),
            ),
            (Some(n), Some((min, max))) if !(min..=max).contains(&n) => problems.add(
                &format!("{ebs_path}.Iops"),
                format!("{n} is out of range {min}..={max} for {kind}"),
            ),
            (None, Some(_)) if matches!(kind, "io1" | "io2") => problems.add(
                &format!("{ebs_path}.Iops"),
                format!("required for {kind} volumes (100 to 64000 for io1, 256000 for io2)"),
            ),
            _ => {}
        }
        if throughput.is_some() && kind != "gp3" {
            problems.add(
                &format!("{ebs_path}.Throughput"),
                format!("applies only to gp3 volumes, not {kind}"),
            );
        }
        if kms_key_id.is_some() && encrypted != Some(true) {
            problems.add(&format!("{ebs_path}.KmsKeyId"), "requires Encrypted: true");
        }
        devices.push(BlockDevice {
            device_name,
            ebs: Ebs {
                volume_size,
                volume_type,
                iops,
                throughput,
                encrypted,
                kms_key_id,
                delete_on_termination,
            },
        });
    }
    devices
}

pub(super) fn is_device_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("/dev/") else {
        return false;
    };
    let letters = rest.strip_prefix("xvd").or_else(|| rest.strip_prefix("sd"));
    letters.is_some_and(|tail| {
        let alpha_len = tail.bytes().take_while(u8::is_ascii_lowercase).count();
        (1..=2).contains(&alpha_len) && tail[alpha_len..].bytes().all(|b| b.is_ascii_digit())
    })
}

/// The property as a user writes it, valid and not (the helpers are `spec::test_support`).
#[cfg(test)]
mod property_tests {
    use crate::spec::test_support::*;

    use serde_json::{Value, json};

    #[test]
    fn block_devices_are_checked() {
        let bdm = |m: Value| with(json!({"BlockDeviceMappings": [m]}));
        assert_problem(
            bdm(json!({"DeviceName": "xvdb", "Ebs": {}})),
            "BlockDeviceMappings[0].DeviceName",
            "not a device name",
        );
        assert_problem(
            bdm(json!({"DeviceName": "/dev/xvdb"})),
            "BlockDeviceMappings[0].Ebs",
            "required",
        );
        assert_problem(
            bdm(json!({"DeviceName": "/dev/xvdb", "Ebs": {"VolumeSize": 0}})),
            "BlockDeviceMappings[0].Ebs.VolumeSize",
            "out of range",
        );
        // The EC2 API Reference (EbsBlockDevice, CreateVolume): gp3 and io2 up to 65,536 GiB,
        // gp2 and io1 up to 16,384; IOPS 3,000-80,000 for gp3, 100-64,000 for io1, 100-256,000
        // for io2, required for io1 and io2.
        assert_problem(
            bdm(json!({"DeviceName": "/dev/xvdb", "Ebs": {"VolumeSize": 65537}})),
            "BlockDeviceMappings[0].Ebs.VolumeSize",
            "out of range 1..=65536",
        );
        assert_problem(
            bdm(
                json!({"DeviceName": "/dev/xvdb", "Ebs": {"VolumeType": "gp2", "VolumeSize": 20000}}),
            ),
            "BlockDeviceMappings[0].Ebs.VolumeSize",
            "for gp2",
        );
        assert!(
            crate::spec::AmiSpec::parse(&bdm(
                json!({"DeviceName": "/dev/xvdb", "Ebs": {"VolumeType": "io2", "VolumeSize": 65536, "Iops": 256000}})
            ))
            .is_ok()
        );
        assert_problem(
            bdm(json!({"DeviceName": "/dev/xvdb", "Ebs": {"Iops": 2000}})),
            "BlockDeviceMappings[0].Ebs.Iops",
            "3000..=80000 for gp3",
        );
        assert_problem(
            bdm(
                json!({"DeviceName": "/dev/xvdb", "Ebs": {"VolumeType": "io1", "VolumeSize": 100, "Iops": 64001}}),
            ),
            "BlockDeviceMappings[0].Ebs.Iops",
            "for io1",
        );
        assert_problem(
            bdm(
                json!({"DeviceName": "/dev/xvdb", "Ebs": {"VolumeType": "io2", "VolumeSize": 100}}),
            ),
            "BlockDeviceMappings[0].Ebs.Iops",
            "required for io2",
        );
        assert_problem(
            bdm(json!({"DeviceName": "/dev/xvdb", "Ebs": {"VolumeSize": "big"}})),
            "BlockDeviceMappings[0].Ebs.VolumeSize",
            "whole number",
        );
        assert_problem(
            bdm(json!({"DeviceName": "/dev/xvdb", "Ebs": {"VolumeType": "ssd"}})),
            "BlockDeviceMappings[0].Ebs.VolumeType",
            "not one of",
        );
        assert_problem(
            bdm(
                json!({"DeviceName": "/dev/xvdb", "Ebs": {"VolumeType": "gp2", "Throughput": 200}}),
            ),
            "BlockDeviceMappings[0].Ebs.Throughput",
            "only to gp3",
        );
        assert_problem(
            bdm(
                json!({"DeviceName": "/dev/xvdb", "Ebs": {"VolumeType": "st1", "VolumeSize": 500, "Iops": 3000}}),
            ),
            "BlockDeviceMappings[0].Ebs.Iops",
            "io1, io2 and gp3",
        );
        assert_problem(
            bdm(json!({"DeviceName": "/dev/xvdb", "Ebs": {"KmsKeyId": "k"}})),
            "BlockDeviceMappings[0].Ebs.KmsKeyId",
            "Encrypted",
        );
        assert_problem(
            bdm(json!({"DeviceName": "/dev/xvdb", "Ebs": {"Encrypted": "yes"}})),
            "BlockDeviceMappings[0].Ebs.Encrypted",
            "true or false",
        );
        assert_problem(
            with(
                json!({"BlockDeviceMappings": [{"DeviceName": "/dev/xvdb", "Ebs": {}}, {"DeviceName": "/dev/xvdb", "Ebs": {}}]}),
            ),
            "BlockDeviceMappings[1].DeviceName",
            "mapped twice",
        );
    }
}
