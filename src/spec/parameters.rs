//! `SsmParameters`: Parameter Store parameters that hold the AMI's id (published in
//! `engine::publish`), so that other stacks chain with `{{resolve:ssm:NAME}}` or a parameter of
//! type `AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>` instead of an export.

use serde_json::Value;

use super::*;

/// Parameter Store's limits on a name (Systems Manager User Guide, "Requirements and constraints
/// for parameter names"): at most 1011 characters with its ARN, at most 15 levels.
const MAX_NAME_CHARS: usize = 900;
const MAX_LEVELS: usize = 15;
/// More would be a distribution list, not a few well-known names.
pub const MAX_SSM_PARAMETERS: usize = 20;
/// The function's own records, which no user parameter may overwrite.
const RESERVED: [&str; 2] = ["/ecs-ami/leases", "/ecs-ami/requests"];

/// Each parameter's name and, for one in another region (holding that region's copy), the
/// region. Which region is the function's own is known only when the request is handled:
/// [`AmiSpec::check_regions`] sorts them.
pub(super) fn parse_ssm_parameters(
    items: Vec<Value>,
    problems: &mut Problems,
) -> Vec<(String, Option<String>)> {
    if items.len() > MAX_SSM_PARAMETERS {
        problems.add(
            "SsmParameters",
            format!(
                "at most {MAX_SSM_PARAMETERS} parameters, not {}",
                items.len()
            ),
        );
    }
    let mut names: Vec<(String, Option<String>)> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let path = format!("SsmParameters[{i}]");
        let Some(map) = item.as_object() else {
            problems.add(
                &path,
                format!("must be an object with a Name, not {}", kind_of(item)),
            );
            continue;
        };
        let mut fields = Fields::new(&path, map, problems);
        let name = fields.string("Name");
        let region = fields.string("Region");
        fields.finish();
        let Some(name) = name else {
            problems.add(
                &path,
                "needs a Name: the parameter to hold the AMI id, such as /ecs-ami/images/base",
            );
            continue;
        };
        if let Some(region) = region.as_ref().filter(|r| !is_region_name(r)) {
            problems.add(
                &format!("{path}.Region"),
                format!("{region:?} is not a region name such as eu-west-1"),
            );
            continue;
        }
        let path = format!("{path}.Name");
        let target = (name, region);
        if let Some(problem) = name_problem(&target.0) {
            problems.add(&path, problem);
        } else if names.contains(&target) {
            let place = target
                .1
                .as_deref()
                .map(|r| format!(" in {r}"))
                .unwrap_or_default();
            problems.add(&path, format!("{}{place} is given twice", target.0));
        } else {
            names.push(target);
        }
    }
    names
}

fn name_problem(name: &str) -> Option<String> {
    if !name.starts_with('/') || name.ends_with('/') || name.contains("//") {
        return Some(format!(
            "{name:?} is not a full parameter path such as /ecs-ami/images/base"
        ));
    }
    if name.chars().count() > MAX_NAME_CHARS || !ids::parameter_name_chars(name) {
        return Some(format!(
            "{name:?} is not a parameter name (letters, digits, _ . - /, at most {MAX_NAME_CHARS} characters)"
        ));
    }
    if name.split('/').count() - 1 > MAX_LEVELS {
        return Some(format!("{name} has more than {MAX_LEVELS} levels"));
    }
    let lower = name.to_ascii_lowercase();
    if lower.starts_with("/aws") || lower.starts_with("/ssm") {
        return Some(format!(
            "{name}: names beginning with aws or ssm are reserved by AWS"
        ));
    }
    if RESERVED
        .iter()
        .any(|r| name == *r || name.starts_with(&format!("{r}/")))
    {
        return Some(format!(
            "{name} is under the function's own records ({})",
            RESERVED.join(", ")
        ));
    }
    None
}

/// The parameter names of a request's properties, read leniently: a Delete removes what its
/// resource published even when its properties would not validate any more. Those of the
/// function's region (`home`), and those of each other region.
pub fn ssm_parameter_names(properties: &Value, home: Option<&str>) -> ParameterNames {
    let mut names = ParameterNames::default();
    let items = properties
        .get("SsmParameters")
        .and_then(Value::as_array)
        .into_iter()
        .flatten();
    for item in items {
        let Some(name) = item.get("Name").and_then(Value::as_str) else {
            continue;
        };
        if name_problem(name).is_some() {
            continue;
        }
        match item.get("Region").and_then(Value::as_str) {
            None => names.home.push(name.to_owned()),
            Some(region) if Some(region) == home => names.home.push(name.to_owned()),
            Some(region) if is_region_name(region) => names
                .copies
                .entry(region.to_owned())
                .or_default()
                .push(name.to_owned()),
            Some(_) => {}
        }
    }
    names
}

/// `SsmParameters` by where they are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParameterNames {
    /// In the function's region, holding the AMI's id.
    pub home: Vec<String>,
    /// In another region of `Regions`, holding the id of the AMI's copy there.
    pub copies: BTreeMap<String, Vec<String>>,
}

/// The property as a user writes it, valid and not (the helpers are `spec::test_support`).
#[cfg(test)]
mod property_tests {
    use crate::spec::test_support::*;
    use crate::spec::*;
    use serde_json::{Value, json};

    #[test]
    fn ssm_parameters_are_full_names_outside_aws_and_the_functions_records() {
        let spec = AmiSpec::parse(&with(
            json!({"SsmParameters": [{"Name": "/ecs-ami/images/base"}, {"Name": "/team/x.y_z-1"}]}),
        ))
        .unwrap();
        assert_eq!(
            spec.ssm_parameters,
            ["/ecs-ami/images/base", "/team/x.y_z-1"]
        );
        let case = |parameters: Value, path: &str, words: &str| {
            assert_problem(with(json!({ "SsmParameters": parameters })), path, words)
        };
        case(json!({"Name": "/a"}), "SsmParameters", "must be a list");
        case(
            json!(["/a"]),
            "SsmParameters[0]",
            "must be an object with a Name",
        );
        case(
            json!([{"Nme": "/a"}]),
            "SsmParameters[0].Nme",
            "unknown property",
        );
        case(
            json!([{"Name": "relative/name"}]),
            "SsmParameters[0].Name",
            "not a full parameter path",
        );
        case(
            json!([{"Name": "/a b"}]),
            "SsmParameters[0].Name",
            "not a parameter name",
        );
        case(
            json!([{"Name": "/aws/service/x"}]),
            "SsmParameters[0].Name",
            "reserved by AWS",
        );
        case(
            json!([{"Name": "/SSM/x"}]),
            "SsmParameters[0].Name",
            "reserved by AWS",
        );
        case(
            json!([{"Name": "/ecs-ami/requests/x"}]),
            "SsmParameters[0].Name",
            "the function's own records",
        );
        case(
            json!([{"Name": "/ecs-ami/leases"}]),
            "SsmParameters[0].Name",
            "the function's own records",
        );
        case(
            json!([{"Name": "/a".repeat(16)}]),
            "SsmParameters[0].Name",
            "more than 15 levels",
        );
        case(
            json!([{"Name": "/a/b"}, {"Name": "/a/b"}]),
            "SsmParameters[1].Name",
            "given twice",
        );
        let many: Vec<Value> = (0..21)
            .map(|i| json!({"Name": format!("/p/{i}")}))
            .collect();
        case(json!(many), "SsmParameters", "at most 20");
        // Read leniently for a Delete: the valid names of whatever the properties hold.
        let names = ssm_parameter_names(
            &json!({"SsmParameters": [{"Name": "/ok/a"}, {"Name": "bad"}, 7, {"Name": "/aws/x"}]}),
            Some("us-east-1"),
        );
        assert_eq!(names.home, ["/ok/a"]);
        assert!(names.copies.is_empty());
    }

    #[test]
    fn ssm_parameters_outside_the_deployments_prefix_are_named() {
        let spec = AmiSpec::parse(&with(
            json!({"Regions": [{"Region": "eu-west-1"}], "SsmParameters": [
                {"Name": "/ecs-ami/images/a"},
                {"Name": "/other/b"},
                {"Name": "/other/c", "Region": "eu-west-1"},
            ]}),
        ))
        .unwrap();
        let refused = spec.check_parameter_prefix("/ecs-ami/images/").unwrap_err();
        assert_eq!(refused.problems.len(), 2, "{refused}");
        assert!(
            refused.problems[0].starts_with("SsmParameters: /other/b is outside"),
            "{refused}"
        );
        assert!(
            refused.problems[1].starts_with("SsmParameters: /other/c is outside"),
            "{refused}"
        );
        assert!(spec.check_parameter_prefix("/").is_ok());
    }

    #[test]
    fn ssm_parameters_with_a_region_hold_that_regions_copy() {
        let properties = with(json!({
            "Regions": [{"Region": "eu-west-1"}],
            "SsmParameters": [
                {"Name": "/ecs-ami/images/base"},
                {"Name": "/ecs-ami/images/base", "Region": "eu-west-1"},
                {"Name": "/ecs-ami/images/home", "Region": "us-east-1"},
            ],
        }));
        let spec = AmiSpec::parse(&properties)
            .unwrap()
            .check_regions("us-east-1")
            .unwrap();
        // The function's own region named explicitly is the same as no Region.
        assert_eq!(
            spec.ssm_parameters,
            ["/ecs-ami/images/base", "/ecs-ami/images/home"]
        );
        assert_eq!(
            spec.copy_parameters,
            BTreeMap::from([(
                "eu-west-1".to_owned(),
                vec!["/ecs-ami/images/base".to_owned()]
            )])
        );
        let names = ssm_parameter_names(&properties, Some("us-east-1"));
        assert_eq!(names.home, ["/ecs-ami/images/base", "/ecs-ami/images/home"]);
        assert_eq!(names.copies, spec.copy_parameters);
        // A region without a copy of the AMI.
        let nowhere = AmiSpec::parse(&with(json!({"SsmParameters": [
            {"Name": "/ecs-ami/images/base", "Region": "ap-south-1"},
        ]})))
        .unwrap()
        .check_regions("us-east-1")
        .unwrap_err();
        assert!(
            nowhere.problems[0].contains("names Region ap-south-1, which is neither this function's region (us-east-1) nor one of Regions"),
            "{nowhere:?}"
        );
        assert_problem(
            with(json!({"SsmParameters": [{"Name": "/a", "Region": "Mars"}]})),
            "SsmParameters[0].Region",
            "not a region name",
        );
        assert_problem(
            with(json!({"SsmParameters": [
                {"Name": "/a", "Region": "eu-west-1"},
                {"Name": "/a", "Region": "eu-west-1"},
            ]})),
            "SsmParameters[1].Name",
            "/a in eu-west-1 is given twice",
        );
    }
}
