//! `Tags` and `OutputTags`: what goes on the AMI and its snapshots, within EC2's limits.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::*;

pub(super) fn parse_tags(
    value: Option<&Value>,
    problems: &mut Problems,
) -> BTreeMap<String, String> {
    let mut tags = BTreeMap::new();
    let mut insert =
        |path: String, key: Option<String>, value: Option<String>, problems: &mut Problems| {
            let (Some(key), Some(value)) = (key, value) else {
                problems.add(&path, "each tag needs a string Key and Value");
                return;
            };
            if !tag_key_is_valid(&path, &key, problems) {
                return;
            }
            if value.chars().count() > 256 {
                problems.add(
                    &path,
                    format!("the value of tag {key:?} is longer than 256 characters"),
                );
            } else if tags.insert(key.clone(), value).is_some() {
                problems.add(&path, format!("tag {key:?} is given twice"));
            }
        };
    match value {
        None => {}
        Some(Value::Object(map)) => {
            for (key, value) in map {
                insert(
                    format!("Tags.{key}"),
                    Some(key.clone()),
                    scalar_string(value),
                    problems,
                );
            }
        }
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let path = format!("Tags[{i}]");
                let Some(map) = item.as_object() else {
                    problems.add(&path, "must be an object with Key and Value");
                    continue;
                };
                let mut fields = Fields::new(&path, map, problems);
                let key = fields.take("Key").and_then(scalar_string);
                let value = fields.take("Value").and_then(scalar_string);
                fields.finish();
                insert(path, key, value, problems);
            }
        }
        Some(other) => problems.add(
            "Tags",
            format!(
                "must be a map or a list of Key/Value pairs, not {}",
                kind_of(other)
            ),
        ),
    }
    tags
}

/// `Tags`, `OutputTags` and the step outputs (each kept on the AMI as a tag) against what EC2
/// leaves beside the product's own tags ([`PRODUCT_TAGS`] and [`PRODUCT_TEST_TAGS`], which an
/// AMI keeps once tested, with or without `Tests` in a later Update), so that a build or an
/// Update is refused before anything is done rather than failing with TagLimitExceeded once the
/// image exists.
pub(super) fn check_tag_budget(
    tags: &BTreeMap<String, String>,
    output_tags: &BTreeMap<String, String>,
    steps: &[Step],
    problems: &mut Problems,
) {
    let ours = PRODUCT_TAGS + PRODUCT_TEST_TAGS;
    let budget = EC2_TAGS_PER_RESOURCE - ours;
    let why = format!(
        "EC2 allows {EC2_TAGS_PER_RESOURCE} per resource; the product keeps {ours} of its own on the AMI, its snapshots and copies, {PRODUCT_TEST_TAGS} of them once the AMI passed Tests"
    );
    let outputs: BTreeSet<&str> = steps
        .iter()
        .flat_map(|s| s.outputs.iter().map(String::as_str))
        .collect();
    let used = tags.len() + output_tags.len() + outputs.len();
    if tags.len() > budget {
        problems.add(
            "Tags",
            format!("{} tags given; at most {budget} fit ({why})", tags.len()),
        );
    } else if used > budget {
        problems.add(
            "OutputTags",
            format!(
                "{} Tags, {} OutputTags and {} step Outputs (each kept on the AMI as a tag) need {used} tags; at most {budget} fit ({why})",
                tags.len(),
                output_tags.len(),
                outputs.len()
            ),
        );
    }
}

/// EC2's rules for a tag key, and the prefixes nobody but AWS and this product may use.
pub(super) fn tag_key_is_valid(path: &str, key: &str, problems: &mut Problems) -> bool {
    if key.is_empty() || key.chars().count() > 128 {
        problems.add(path, format!("tag key {key:?} must be 1 to 128 characters"));
        false
    } else if key.to_ascii_lowercase().starts_with("aws:") || key.starts_with(TAG_PREFIX) {
        problems.add(
            path,
            format!("tag key {key:?} uses a reserved prefix (aws: or {TAG_PREFIX})"),
        );
        false
    } else {
        true
    }
}

/// `OutputTags`: a map of tag keys to the names of step outputs, whose values (read on the
/// builder) become the AMI's and its snapshots' tags; `SourceImageId` names the source AMI.
pub(super) fn parse_output_tags(
    value: Option<&Value>,
    tags: &BTreeMap<String, String>,
    steps: &[Step],
    problems: &mut Problems,
) -> BTreeMap<String, String> {
    let declared: BTreeSet<&str> = steps
        .iter()
        .flat_map(|s| s.outputs.iter().map(String::as_str))
        .collect();
    let mut output_tags = BTreeMap::new();
    match value {
        None => {}
        Some(Value::Object(map)) => {
            for (key, value) in map {
                let path = format!("OutputTags.{key}");
                if !tag_key_is_valid(&path, key, problems) {
                    continue;
                }
                if tags.contains_key(key) {
                    problems.add(&path, format!("tag {key:?} is also given in Tags"));
                    continue;
                }
                match scalar_string(value) {
                    Some(name)
                        if declared.contains(name.as_str()) || name == SOURCE_IMAGE_ATTRIBUTE =>
                    {
                        output_tags.insert(key.clone(), name);
                    }
                    Some(name) => problems.add(
                        &path,
                        format!(
                            "{name:?} is neither {SOURCE_IMAGE_ATTRIBUTE} nor an output of any step (declared: {})",
                            if declared.is_empty() {
                                "none; a command step declares them in Outputs".to_owned()
                            } else {
                                declared.iter().copied().collect::<Vec<_>>().join(", ")
                            }
                        ),
                    ),
                    None => problems.add(
                        &path,
                        format!("must be the name of a step output, not {}", kind_of(value)),
                    ),
                }
            }
        }
        Some(other) => problems.add(
            "OutputTags",
            format!(
                "must be a map of tag keys to step output names, not {}",
                kind_of(other)
            ),
        ),
    }
    output_tags
}
