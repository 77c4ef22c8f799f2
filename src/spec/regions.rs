//! `Regions`: the other regions the AMI is copied to (CopyImage, in `engine::copies`), each
//! optionally encrypted with a KMS key of that region.

use serde_json::Value;

use super::*;

/// A destination of the AMI: a region other than the function's, and the key its copy's
/// snapshots are encrypted with (none: as the source's are).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyRegion {
    pub region: String,
    pub kms_key_id: Option<String>,
}

/// Each copy is an attribute of the answer (at most 4,096 bytes in all) and a wait the build
/// polls; more regions than this are better served by a pipeline of their own.
pub const MAX_REGIONS: usize = 16;

/// A region name: `us-east-1`, `eu-central-2`, `us-gov-west-1`, `ap-southeast-5`,
/// `eusc-de-east-1` (the European Sovereign Cloud)... The number is written as AWS writes it: no
/// sign, no leading zero.
pub fn is_region_name(text: &str) -> bool {
    let parts: Vec<&str> = text.split('-').collect();
    let number = parts[parts.len() - 1];
    parts.len() >= 3
        && (2..=4).contains(&parts[0].len())
        && parts[0].bytes().all(|b| b.is_ascii_lowercase())
        && number.bytes().all(|b| b.is_ascii_digit())
        && !number.starts_with('0')
        && parts[1..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts[parts.len() - 1]
            .parse::<u8>()
            .is_ok_and(|n| (1..=20).contains(&n))
        && text.len() <= 25
}

/// A KMS key as CopyImage takes it: a key id, a key ARN, an alias name or an alias ARN; an ARN
/// must name `region`, the copy's own (a key is regional).
fn kms_key_problem(key: &str, region: &str) -> Option<String> {
    if let Some(rest) = key.strip_prefix("arn:") {
        let parts: Vec<&str> = rest.splitn(5, ':').collect();
        let fits = parts.len() == 5
            && parts[1] == "kms"
            && ids::is_account_id(parts[3])
            && (parts[4].starts_with("key/") || parts[4].starts_with("alias/"));
        if !fits {
            return Some(format!(
                "{key:?} is not a KMS key or alias ARN (arn:aws:kms:{region}:111122223333:key/...)"
            ));
        }
        if parts[2] != region {
            return Some(format!(
                "{key} is a key of {}, not of {region}: a copy is encrypted with a key of its own region",
                parts[2]
            ));
        }
        return None;
    }
    let valid_chars = key
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_/".contains(c));
    if key.starts_with("alias/") && key.len() > 6 && key.len() <= 256 && valid_chars {
        return None;
    }
    let is_key_id = key.len() == 36
        && key.split('-').map(str::len).eq([8, 4, 4, 4, 12])
        && key.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
    let is_multi_region = key.starts_with("mrk-")
        && key.len() == 36
        && key[4..].bytes().all(|b| b.is_ascii_hexdigit());
    if is_key_id || is_multi_region {
        None
    } else {
        Some(format!(
            "{key:?} is not a KMS key id, key ARN, alias name (alias/...) or alias ARN"
        ))
    }
}

pub(super) fn parse_regions(items: Vec<Value>, problems: &mut Problems) -> Vec<CopyRegion> {
    if items.len() > MAX_REGIONS {
        problems.add(
            "Regions",
            format!("at most {MAX_REGIONS} regions, not {}", items.len()),
        );
    }
    let mut regions: Vec<CopyRegion> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let path = format!("Regions[{i}]");
        let Some(map) = item.as_object() else {
            problems.add(
                &path,
                format!(
                    "must be an object with a Region (and optionally a KmsKeyId), not {}",
                    kind_of(item)
                ),
            );
            continue;
        };
        let mut fields = Fields::new(&path, map, problems);
        let region = fields.string("Region");
        let kms_key_id = fields.string("KmsKeyId");
        fields.finish();
        let Some(region) = region else {
            problems.add(
                &path,
                "needs a Region: where to copy the AMI, such as eu-west-1",
            );
            continue;
        };
        if !is_region_name(&region) {
            problems.add(
                &format!("{path}.Region"),
                format!("{region:?} is not a region name such as eu-west-1"),
            );
            continue;
        }
        if regions.iter().any(|r| r.region == region) {
            problems.add(
                &format!("{path}.Region"),
                format!("{region} is given twice"),
            );
            continue;
        }
        if let Some(problem) = kms_key_id
            .as_deref()
            .and_then(|key| kms_key_problem(key, &region))
        {
            problems.add(&format!("{path}.KmsKeyId"), problem);
        }
        regions.push(CopyRegion { region, kms_key_id });
    }
    regions
}

/// The regions of a request's properties, read leniently: a Delete removes the copies its
/// resource made even when its properties would not validate any more.
pub fn region_names(properties: &Value) -> Vec<String> {
    let mut names: Vec<String> = properties
        .get("Regions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|item| item.get("Region")?.as_str())
        .filter(|name| is_region_name(name))
        .map(str::to_owned)
        .collect();
    names.sort();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_names_have_aws_shape() {
        for good in [
            "us-east-1",
            "eu-central-2",
            "us-gov-west-1",
            "ap-southeast-5",
            "eusc-de-east-1",
        ] {
            assert!(is_region_name(good), "{good}");
        }
        for bad in [
            "us-east",
            "useast1",
            "US-EAST-1",
            "us-east-0",
            "u-east-1",
            "us--1",
            "eu-west-+1",
            "eu-west-01",
            "toolong-west-1",
            "",
        ] {
            assert!(!is_region_name(bad), "{bad}");
        }
    }

    #[test]
    fn keys_are_ids_aliases_or_arns_of_the_copy_region() {
        let region = "eu-west-1";
        for good in [
            "1234abcd-12ab-34cd-56ef-1234567890ab",
            "mrk-1234abcd12ab34cd56ef1234567890ab",
            "alias/ami-copies",
            "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
            "arn:aws:kms:eu-west-1:111122223333:alias/ami-copies",
        ] {
            assert_eq!(kms_key_problem(good, region), None, "{good}");
        }
        let other = kms_key_problem(
            "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
            region,
        )
        .unwrap();
        assert!(
            other.contains("is a key of us-east-1, not of eu-west-1"),
            "{other}"
        );
        for bad in ["key", "alias/", "arn:aws:s3:::bucket", "1234"] {
            assert!(kms_key_problem(bad, region).is_some(), "{bad}");
        }
    }
}

/// The property as a user writes it, valid and not (the helpers are `spec::test_support`).
#[cfg(test)]
mod property_tests {
    use crate::spec::test_support::*;
    use crate::spec::*;
    use serde_json::{Value, json};

    #[test]
    fn regions_are_other_regions_each_with_an_optional_key_of_its_own() {
        let spec = AmiSpec::parse(&with(json!({"Regions": [
            {"Region": "eu-west-1"},
            {"Region": "us-west-2", "KmsKeyId": "alias/ami-copies"},
        ]})))
        .unwrap();
        assert_eq!(
            spec.regions,
            [
                CopyRegion {
                    region: "eu-west-1".into(),
                    kms_key_id: None
                },
                CopyRegion {
                    region: "us-west-2".into(),
                    kms_key_id: Some("alias/ami-copies".into())
                },
            ]
        );
        let case = |regions: Value, path: &str, words: &str| {
            assert_problem(with(json!({ "Regions": regions })), path, words)
        };
        case(json!("eu-west-1"), "Regions", "must be a list");
        case(
            json!(["eu-west-1"]),
            "Regions[0]",
            "must be an object with a Region",
        );
        case(
            json!([{"KmsKeyId": "alias/x"}]),
            "Regions[0]",
            "needs a Region",
        );
        case(
            json!([{"Region": "Europe"}]),
            "Regions[0].Region",
            "not a region name",
        );
        case(
            json!([{"Region": "eu-west-1"}, {"Region": "eu-west-1"}]),
            "Regions[1].Region",
            "given twice",
        );
        case(
            json!([{"Region": "eu-west-1", "KmsKeyId": "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"}]),
            "Regions[0].KmsKeyId",
            "a key of us-east-1, not of eu-west-1",
        );
        case(
            json!([{"Region": "eu-west-1", "Kms": "x"}]),
            "Regions[0].Kms",
            "unknown property",
        );
        let many: Vec<Value> = (1..=17)
            .map(|i| json!({"Region": format!("eu-west-{}", i.min(20))}))
            .collect();
        case(json!(many), "Regions", "at most 16");
        // Only another region than the function's: known when the request is handled.
        let home = AmiSpec::parse(&with(json!({"Regions": [{"Region": "us-east-1"}]})))
            .unwrap()
            .check_regions("us-east-1")
            .unwrap_err();
        assert!(
            home.problems[0]
                .starts_with("Regions[0].Region: us-east-1 is the region the AMI is built in"),
            "{home:?}"
        );
        // Regions are distribution: a change of them alone never rebuilds.
        let other = AmiSpec::parse(&with(json!({"Regions": [{"Region": "ap-south-1"}]}))).unwrap();
        assert!(spec.differs_only_in_distribution(&other));
    }

    #[test]
    fn copy_regions_outside_the_deployment_and_key_changes_are_refused() {
        let spec = AmiSpec::parse(&with(json!({"Regions": [
            {"Region": "eu-west-1", "KmsKeyId": "alias/new"},
            {"Region": "us-west-2"},
        ]})))
        .unwrap();
        assert!(spec.check_copy_regions(&["eu-west-1", "us-west-2"]).is_ok());
        let refused = spec.check_copy_regions(&["eu-west-1"]).unwrap_err();
        assert_eq!(refused.problems.len(), 1);
        assert!(
            refused.problems[0].starts_with(
                "Regions[1].Region: us-west-2 is not in this deployment's AmiCopyRegions (eu-west-1)"
            ),
            "{refused:?}"
        );
        let none = spec.check_copy_regions(&[]).unwrap_err();
        assert!(
            none.problems[0].contains("AmiCopyRegions (none)"),
            "{none:?}"
        );
        let before = AmiSpec::parse(&with(json!({"Regions": [
            {"Region": "eu-west-1", "KmsKeyId": "alias/old"},
        ]})))
        .unwrap();
        let changed = spec.check_copy_keys(&before).unwrap_err();
        assert!(
            changed.problems[0]
                .starts_with("Regions[0].KmsKeyId: the copy in eu-west-1 exists with alias/old"),
            "{changed:?}"
        );
        assert!(spec.check_copy_keys(&spec).is_ok());
    }
}
