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

/// The tags of an AMI left to the user: what EC2 allows less the product's own.
pub(super) const USER_TAG_BUDGET: usize = EC2_TAGS_PER_RESOURCE - PRODUCT_TAGS - PRODUCT_TEST_TAGS;

/// How many step outputs the steps declare (each name once: it is one tag of the AMI).
pub(super) fn distinct_outputs(steps: &[Step]) -> usize {
    steps
        .iter()
        .flat_map(|s| s.outputs.iter().map(String::as_str))
        .collect::<BTreeSet<&str>>()
        .len()
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
    container_images: usize,
    problems: &mut Problems,
) {
    let ours = PRODUCT_TAGS + PRODUCT_TEST_TAGS;
    let budget = USER_TAG_BUDGET;
    let why = format!(
        "EC2 allows {EC2_TAGS_PER_RESOURCE} per resource; the product keeps {ours} of its own on the AMI, its snapshots and copies, {PRODUCT_TEST_TAGS} of them once the AMI passed Tests"
    );
    let outputs = distinct_outputs(steps);
    let used = tags.len() + output_tags.len() + outputs + container_images;
    if tags.len() > budget {
        problems.add(
            "Tags",
            format!("{} tags given; at most {budget} fit ({why})", tags.len()),
        );
    } else if used > budget {
        problems.add(
            "OutputTags",
            format!(
                "{} Tags, {} OutputTags, {} step Outputs and {container_images} ContainerImages (each kept on the AMI as a tag) need {used} tags; at most {budget} fit ({why})",
                tags.len(),
                output_tags.len(),
                outputs
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

/// The property as a user writes it, valid and not (the helpers are `spec::test_support`).
#[cfg(test)]
mod property_tests {
    use crate::spec::test_support::*;
    use crate::spec::*;
    use serde_json::{Map, Value, json};

    #[test]
    fn tags_as_a_map_are_accepted() {
        let spec = AmiSpec::parse(&with(json!({"Tags": {"team": "platform"}}))).unwrap();
        assert_eq!(spec.tags["team"], "platform");
    }

    #[test]
    fn tags_are_checked() {
        assert_problem(
            with(json!({"Tags": {"aws:x": "1"}})),
            "Tags.aws:x",
            "reserved prefix",
        );
        assert_problem(
            with(json!({"Tags": {"ecs-ami:fingerprint": "1"}})),
            "Tags.ecs-ami:fingerprint",
            "reserved prefix",
        );
        assert_problem(
            with(json!({"Tags": {"k": "v".repeat(257)}})),
            "Tags.k",
            "256",
        );
        assert_problem(
            with(json!({"Tags": {"k".repeat(129): "v"}})),
            &format!("Tags.{}", "k".repeat(129)),
            "1 to 128",
        );
        assert_problem(
            with(json!({"Tags": [{"Key": "a", "Value": "1"}, {"Key": "a", "Value": "2"}]})),
            "Tags[1]",
            "given twice",
        );
        assert_problem(
            with(json!({"Tags": [{"Key": "a"}]})),
            "Tags[0]",
            "Key and Value",
        );
        assert_problem(
            with(json!({"Tags": "team=platform"})),
            "Tags",
            "map or a list",
        );
        // EC2's 50 per resource less the product's 10 (https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/Using_Tags.html#tag-restrictions),
        // with or without Tests: an AMI keeps its test tags when an Update drops Tests.
        let tags = |n: usize| -> Map<String, Value> {
            (0..n).map(|i| (format!("k{i}"), json!("v"))).collect()
        };
        let tests = json!({"Steps": [{"Name": "t", "Commands": ["true"]}]});
        assert!(AmiSpec::parse(&with(json!({"Tags": tags(40)}))).is_ok());
        assert!(AmiSpec::parse(&with(json!({"Tags": tags(40), "Tests": tests}))).is_ok());
        assert_problem(
            with(json!({"Tags": tags(41)})),
            "Tags",
            "41 tags given; at most 40 fit (EC2 allows 50 per resource; the product keeps 10 of its own on the AMI, its snapshots and copies, 3 of them once the AMI passed Tests)",
        );
        assert_problem(
            with(json!({"Tags": tags(41), "Tests": tests})),
            "Tags",
            "41 tags given; at most 40 fit",
        );
    }

    #[test]
    fn outputs_and_output_tags_parse() {
        let spec = AmiSpec::parse(&with(json!({
            "Steps": [
                {"Name": "a", "Commands": ["x"], "Outputs": ["DockerVersion", "AgentVersion"]},
                {"Name": "b", "Commands": ["y"]}
            ],
            "OutputTags": {"docker-version": "DockerVersion", "source-ami": "SourceImageId"}
        })))
        .unwrap();
        assert_eq!(spec.steps[0].outputs, ["DockerVersion", "AgentVersion"]);
        assert!(spec.steps[1].outputs.is_empty());
        assert_eq!(
            spec.output_tags,
            BTreeMap::from([
                ("docker-version".into(), "DockerVersion".into()),
                ("source-ami".into(), "SourceImageId".into())
            ])
        );
    }

    #[test]
    fn outputs_and_output_tags_are_checked() {
        let outputs = |names: Value| {
            with(json!({"Steps": [{"Name": "a", "Commands": ["x"], "Outputs": names}]}))
        };
        assert_problem(outputs(json!("One")), "Steps[0].Outputs", "must be a list");
        assert_problem(
            outputs(json!([1])),
            "Steps[0].Outputs[0]",
            "must be a string",
        );
        assert_problem(
            outputs(json!(["has-dash"])),
            "Steps[0].Outputs[0]",
            "not an output name",
        );
        assert_problem(
            outputs(json!(["9lives"])),
            "Steps[0].Outputs[0]",
            "not an output name",
        );
        assert_problem(
            outputs(json!(["ImageId"])),
            "Steps[0].Outputs[0]",
            "resource's own attributes",
        );
        assert_problem(
            outputs(json!(["A", "A"])),
            "Steps[0].Outputs[1]",
            "already declared",
        );
        let eleven: Vec<String> = (0..11).map(|i| format!("O{i}")).collect();
        assert_problem(
            outputs(json!(eleven)),
            "Steps[0].Outputs[10]",
            "more than 10",
        );
        assert_problem(
            with(json!({"Steps": [
                {"Name": "a", "Commands": ["x"], "Outputs": ["V"]},
                {"Name": "b", "Commands": ["y"], "Outputs": ["V"]}
            ]})),
            "Steps[1].Outputs[0]",
            "unique across steps",
        );
        assert_problem(
            with(json!({"Steps": [{"Name": "f", "Path": "/x", "Content": "", "Outputs": ["V"]}]})),
            "Steps[0].Outputs",
            "only to command steps",
        );
        let tagged = |output_tags: Value, tags: Value| {
            with(json!({
                "Steps": [{"Name": "a", "Commands": ["x"], "Outputs": ["V"]}],
                "OutputTags": output_tags,
                "Tags": tags
            }))
        };
        assert_problem(
            tagged(json!({"v": "W"}), json!({})),
            "OutputTags.v",
            "\"W\" is neither SourceImageId nor an output of any step (declared: V)",
        );
        assert_problem(
            tagged(json!({"v": "V"}), json!({"v": "1"})),
            "OutputTags.v",
            "also given in Tags",
        );
        assert_problem(
            tagged(json!({"ecs-ami:v": "V"}), json!({})),
            "OutputTags.ecs-ami:v",
            "reserved prefix",
        );
        assert_problem(
            tagged(json!({"v": ["V"]}), json!({})),
            "OutputTags.v",
            "must be the name of a step output",
        );
        assert_problem(
            tagged(json!(["V"]), json!({})),
            "OutputTags",
            "must be a map",
        );
        assert_problem(
            with(json!({"OutputTags": {"v": "V"}})),
            "OutputTags.v",
            "declared: none",
        );
        // 39 tags, one output kept as a tag and one output tag: 41 > 40.
        let tags: serde_json::Map<String, Value> =
            (0..39).map(|i| (format!("t{i}"), json!("x"))).collect();
        assert_problem(
            tagged(json!({"v": "V"}), Value::Object(tags)),
            "OutputTags",
            "need 41 tags; at most 40 fit",
        );
    }
}
