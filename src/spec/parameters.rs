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
