//! `SourceAmiFilter`: the source is the newest available image of the given owners that matches,
//! as Packer's `source_ami_filter` with `most_recent` (resolved in `engine::create::source`).

use std::collections::BTreeMap;

use serde_json::Value;

use super::*;

/// Owner aliases DescribeImages accepts beside account ids (EC2 API reference, DescribeImages:
/// `Owners`).
const OWNER_ALIASES: [&str; 4] = ["self", "amazon", "aws-marketplace", "aws-backup-vault"];
/// EC2's architecture values for images.
const ARCHITECTURES: [&str; 5] = ["i386", "x86_64", "arm64", "x86_64_mac", "arm64_mac"];
/// Filters the resource sets itself or takes from their own properties.
const RESERVED_FILTERS: [(&str, &str); 3] = [
    (
        "state",
        "the image must be available: the resource always filters on state=available",
    ),
    ("name", "give the name as SourceAmiFilter.Name"),
    (
        "architecture",
        "give the architecture as SourceAmiFilter.Architecture",
    ),
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFilter {
    /// Account ids, or the aliases of `OWNER_ALIASES`; sorted, without repeats.
    pub owners: Vec<String>,
    /// DescribeImages filters by name (`name`, `architecture` and those of `Filters`), each with
    /// the values any of which may match.
    pub filters: BTreeMap<String, Vec<String>>,
    /// Deprecated images are passed over unless this is set.
    pub include_deprecated: bool,
}

impl SourceFilter {
    /// `architecture=arm64, name=al2023-ami-ecs-*`, for Reasons and logs.
    pub fn describe(&self) -> String {
        self.filters
            .iter()
            .map(|(name, values)| format!("{name}={}", values.join("|")))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

pub(super) fn parse_source_filter(value: &Value, problems: &mut Problems) -> Option<SourceFilter> {
    let Some(map) = value.as_object() else {
        problems.add(
            "SourceAmiFilter",
            format!(
                "must be an object with Owners and Name or Filters, not {}",
                kind_of(value)
            ),
        );
        return None;
    };
    let mut fields = Fields::new("SourceAmiFilter", map, problems);
    let owners = fields.list("Owners");
    let name = fields.string("Name");
    let architecture = fields.string("Architecture");
    let extra = fields.list("Filters");
    let include_deprecated = fields.boolean("IncludeDeprecated").unwrap_or(false);
    fields.finish();

    let owners = parse_owners(owners, problems);
    let mut filters = BTreeMap::new();
    if let Some(name) = name {
        if name.chars().count() > 128 {
            problems.add(
                "SourceAmiFilter.Name",
                "must be at most 128 characters (AMI names are)",
            );
        }
        filters.insert("name".to_owned(), vec![name]);
    }
    if let Some(architecture) = architecture {
        if !ARCHITECTURES.contains(&architecture.as_str()) {
            problems.add(
                "SourceAmiFilter.Architecture",
                format!(
                    "{architecture:?} is not one of {}",
                    ARCHITECTURES.join(", ")
                ),
            );
        }
        filters.insert("architecture".to_owned(), vec![architecture]);
    }
    let given_extra = extra.as_ref().is_some_and(|list| !list.is_empty());
    for (i, item) in extra.unwrap_or_default().iter().enumerate() {
        parse_extra_filter(i, item, &mut filters, problems);
    }
    if !filters.contains_key("name") && !given_extra {
        problems.add(
            "SourceAmiFilter",
            "give Name or Filters: the owners alone would match every image they publish",
        );
    }
    Some(SourceFilter {
        owners: owners?,
        filters,
        include_deprecated,
    })
}

fn parse_owners(owners: Option<Vec<Value>>, problems: &mut Problems) -> Option<Vec<String>> {
    let Some(owners) = owners.filter(|list| !list.is_empty()) else {
        problems.add(
            "SourceAmiFilter.Owners",
            "required: account ids or amazon, aws-marketplace, self (whose images may be the source)",
        );
        return None;
    };
    let mut found = Vec::new();
    for (i, owner) in owners.iter().enumerate() {
        let path = format!("SourceAmiFilter.Owners[{i}]");
        match scalar_string(owner) {
            Some(owner)
                if OWNER_ALIASES.contains(&owner.as_str()) || ids::is_account_id(&owner) =>
            {
                found.push(owner)
            }
            Some(owner) => problems.add(
                &path,
                format!(
                    "{owner:?} is neither a 12-digit account id nor one of {}",
                    OWNER_ALIASES.join(", ")
                ),
            ),
            None => problems.add(&path, format!("must be a string, not {}", kind_of(owner))),
        }
    }
    found.sort();
    found.dedup();
    Some(found)
}

fn parse_extra_filter(
    i: usize,
    item: &Value,
    filters: &mut BTreeMap<String, Vec<String>>,
    problems: &mut Problems,
) {
    let path = format!("SourceAmiFilter.Filters[{i}]");
    let Some(map) = item.as_object() else {
        problems.add(&path, "must be an object with Name and Values");
        return;
    };
    let mut fields = Fields::new(&path, map, problems);
    let name = fields.string("Name");
    let values = fields.list("Values");
    fields.finish();
    let Some(name) = name else {
        problems.add(
            &path,
            "needs a Name: a DescribeImages filter such as owner-alias or tag:Team",
        );
        return;
    };
    if let Some((_, why)) = RESERVED_FILTERS
        .iter()
        .find(|(reserved, _)| *reserved == name)
    {
        problems.add(&path, format!("filter {name:?} is not taken here: {why}"));
        return;
    }
    let mut strings = Vec::new();
    for (j, value) in values.iter().flatten().enumerate() {
        match scalar_string(value) {
            Some(text) => strings.push(text),
            None => problems.add(
                &format!("{path}.Values[{j}]"),
                format!("must be a string, not {}", kind_of(value)),
            ),
        }
    }
    let values = strings;
    if values.is_empty() {
        problems.add(
            &format!("{path}.Values"),
            format!("filter {name:?} needs Values: a list of strings"),
        );
    } else if filters.insert(name.clone(), values).is_some() {
        problems.add(&path, format!("filter {name:?} is given twice"));
    }
}

/// The property as a user writes it, valid and not (the helpers are `spec::test_support`).
#[cfg(test)]
mod property_tests {
    use crate::spec::test_support::*;
    use crate::spec::*;
    use serde_json::{Value, json};

    fn filtered(filter: Value) -> Value {
        json!({"SourceAmiFilter": filter, "IamInstanceProfile": "p"})
    }

    #[test]
    fn a_source_filter_parses_into_owners_and_describe_images_filters() {
        let spec = AmiSpec::parse(&filtered(json!({
            "Owners": ["amazon", "123456789012", "amazon"],
            "Name": "al2023-ami-ecs-hvm-*",
            "Architecture": "arm64",
            "Filters": [{"Name": "tag:Team", "Values": ["platform", 7]}, {"Name": "root-device-type", "Values": ["ebs"]}],
            "IncludeDeprecated": "true"
        })))
        .unwrap();
        let Source::Filter(filter) = spec.source else {
            panic!("not a filter: {:?}", spec.source)
        };
        assert_eq!(filter.owners, ["123456789012", "amazon"]);
        assert!(filter.include_deprecated);
        assert_eq!(
            filter.describe(),
            "architecture=arm64, name=al2023-ami-ecs-hvm-*, root-device-type=ebs, tag:Team=platform|7"
        );
        let plain =
            AmiSpec::parse(&filtered(json!({"Owners": ["self"], "Name": "team-*"}))).unwrap();
        assert!(matches!(plain.source, Source::Filter(f) if !f.include_deprecated));
    }

    #[test]
    fn a_source_filter_is_refused_where_it_would_match_too_much_or_nothing_valid() {
        let case =
            |filter: Value, path: &str, words: &str| assert_problem(filtered(filter), path, words);
        case(json!("al2023-*"), "SourceAmiFilter", "must be an object");
        case(json!({"Name": "x"}), "SourceAmiFilter.Owners", "required");
        case(
            json!({"Owners": [], "Name": "x"}),
            "SourceAmiFilter.Owners",
            "required",
        );
        case(
            json!({"Owners": ["amazn"], "Name": "x"}),
            "SourceAmiFilter.Owners[0]",
            "neither a 12-digit account id",
        );
        case(
            json!({"Owners": ["self"]}),
            "SourceAmiFilter",
            "give Name or Filters",
        );
        case(
            json!({"Owners": ["self"], "Architecture": "arm64"}),
            "SourceAmiFilter",
            "give Name or Filters",
        );
        case(
            json!({"Owners": ["self"], "Name": "x", "Architecture": "aarch64"}),
            "SourceAmiFilter.Architecture",
            "not one of",
        );
        case(
            json!({"Owners": ["self"], "Name": "x".repeat(129)}),
            "SourceAmiFilter.Name",
            "at most 128",
        );
        case(
            json!({"Owners": ["self"], "Filters": [{"Name": "state", "Values": ["available"]}]}),
            "SourceAmiFilter.Filters[0]",
            "always filters on state=available",
        );
        case(
            json!({"Owners": ["self"], "Name": "x", "Filters": [{"Name": "name", "Values": ["y"]}]}),
            "SourceAmiFilter.Filters[0]",
            "give the name as SourceAmiFilter.Name",
        );
        case(
            json!({"Owners": ["self"], "Filters": [{"Name": "tag:a", "Values": []}]}),
            "SourceAmiFilter.Filters[0].Values",
            "needs Values",
        );
        case(
            json!({"Owners": ["self"], "Filters": [{"Name": "tag:a", "Values": [["x"]]}]}),
            "SourceAmiFilter.Filters[0].Values[0]",
            "must be a string",
        );
        case(
            json!({"Owners": ["self"], "Filters": [{"Name": "tag:a", "Values": ["1"]}, {"Name": "tag:a", "Values": ["2"]}]}),
            "SourceAmiFilter.Filters[1]",
            "given twice",
        );
        case(
            json!({"Owners": ["self"], "Filters": [{"Values": ["1"]}]}),
            "SourceAmiFilter.Filters[0]",
            "needs a Name",
        );
        case(
            json!({"Owners": ["self"], "Name": "x", "MostRecent": true}),
            "SourceAmiFilter.MostRecent",
            "unknown property",
        );
    }
}
