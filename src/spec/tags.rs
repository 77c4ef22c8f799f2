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
    if tags.len() > MAX_USER_TAGS {
        problems.add(
            "Tags",
            format!(
                "{} tags given; at most {MAX_USER_TAGS} fit beside the product's own",
                tags.len()
            ),
        );
    }
    tags
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
/// builder) become the AMI's and its snapshots' tags; `SourceImageId` names the source AMI. Also checks that the tags, the output
/// tags and the outputs (each kept on the AMI as a tag) fit within EC2's limit together.
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
    let used = tags.len() + output_tags.len() + declared.len();
    if tags.len() <= MAX_USER_TAGS && used > MAX_USER_TAGS {
        problems.add(
            "OutputTags",
            format!(
                "{} Tags, {} OutputTags and {} step Outputs (each kept on the AMI as a tag) need {used} tags; at most {MAX_USER_TAGS} fit beside the product's own",
                tags.len(),
                output_tags.len(),
                declared.len()
            ),
        );
    }
    output_tags
}
