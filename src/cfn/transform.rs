//! The EcsAmi template macro (`AWS::CloudFormation::Macro`).
//!
//! A custom resource must answer within an hour, so a `Custom::EcsAmi` resource `X` whose
//! `TimeoutMinutes` is over 55 is answered through a wait condition, which waits up to 12 hours.
//! The macro expands `X` into four resources (`N`: 12 hex digits, new for each stack operation):
//!
//! - `XBuild` builds the image and signals the end of the build to the handle's URL;
//! - `XHandle<N>`, the wait condition handle;
//! - `XWait<N>`, the wait condition, created after `XBuild`;
//! - `X`, with every key it had, answers with the image named in the wait condition's data.
//!
//! Every other resource, and everything outside `Resources`, is returned as it came.

use serde_json::{Map, Value, json};

/// The resource type the macro expands.
pub const RESOURCE_TYPE: &str = "Custom::EcsAmi";
pub use crate::spec::MAX_LONG_BUILD_MINUTES;
/// Builds of up to this many minutes are answered by the custom resource itself (left as they
/// are): what the longest `ServiceTimeout` leaves after the answer's margin.
pub const MAX_SHORT_BUILD_MINUTES: u32 =
    (crate::spec::MAX_SERVICE_TIMEOUT_SECONDS - crate::spec::ANSWER_MARGIN_SECONDS) / 60;
/// Minutes of the wait condition's `Timeout` beyond `TimeoutMinutes`.
pub const WAIT_MARGIN_MINUTES: u32 = 10;

const HANDLE_TYPE: &str = "AWS::CloudFormation::WaitConditionHandle";
const WAIT_TYPE: &str = "AWS::CloudFormation::WaitCondition";
/// The longest logical id CloudFormation accepts.
const MAX_LOGICAL_ID_CHARS: usize = 255;
/// Hex digits of the hash that end the handle's and the wait condition's ids.
const ID_HASH_DIGITS: usize = 12;
/// The properties the macro adds, which the template may not set.
const SET_BY_MACRO: [&str; 3] = ["SignalUrl", "Signal", "ImageResource"];

/// Whether `event` is a macro invocation: an object with `fragment` and `transformId`.
pub fn is_macro_event(event: &Value) -> bool {
    event
        .as_object()
        .is_some_and(|event| event.contains_key("fragment") && event.contains_key("transformId"))
}

/// The answer to a macro invocation: the expanded template, or the reason it cannot be expanded.
///
/// The event's `requestId` is echoed, and names the deployment the generated ids depend on.
pub fn respond(event: &Value) -> Value {
    let request_id = event.get("requestId").cloned().unwrap_or(Value::Null);
    let deployment = request_id.as_str().unwrap_or("");
    match expand(
        &event["fragment"],
        &event["templateParameterValues"],
        deployment,
    ) {
        Ok(fragment) => json!({
            "requestId": request_id,
            "status": "success",
            "fragment": fragment,
        }),
        Err(message) => json!({
            "requestId": request_id,
            "status": "failure",
            "errorMessage": message,
        }),
    }
}

/// The template with each long-build `Custom::EcsAmi` resource expanded.
///
/// `parameter_values` (parameter name to value) resolves a `TimeoutMinutes` given as a `Ref`.
/// `deployment` is hashed into the ids of the handle and the wait condition. The problems of all
/// resources are reported together, in logical-id order, joined with "; ".
pub fn expand(
    fragment: &Value,
    parameter_values: &Value,
    deployment: &str,
) -> Result<Value, String> {
    let Some(template) = fragment.as_object() else {
        return Err("the template is not a JSON object".to_owned());
    };
    let Some(resources) = template.get("Resources") else {
        return Ok(fragment.clone());
    };
    let Some(resources) = resources.as_object() else {
        return Err("the template's Resources is not a JSON object".to_owned());
    };

    let mut entries: Vec<(&String, &Value)> = resources.iter().collect();
    entries.sort_by_key(|(logical_id, _)| *logical_id);
    let mut expanded = resources.clone();
    let mut problems = Vec::new();
    for (logical_id, resource) in entries {
        match expansion(
            logical_id,
            resource,
            resources,
            parameter_values,
            deployment,
        ) {
            Ok(generated) => expanded.extend(generated),
            Err(found) => problems.extend(found),
        }
    }
    if !problems.is_empty() {
        return Err(problems.join("; "));
    }

    let mut template = template.clone();
    template.insert("Resources".to_owned(), Value::Object(expanded));
    Ok(Value::Object(template))
}

/// The resources that `logical_id` expands into (empty if it is left as it is), `logical_id`
/// itself among them, or its problems.
fn expansion(
    logical_id: &str,
    resource: &Value,
    resources: &Map<String, Value>,
    parameter_values: &Value,
    deployment: &str,
) -> Result<Vec<(String, Value)>, Vec<String>> {
    let Some(resource) = resource.as_object() else {
        return Ok(Vec::new());
    };
    if resource.get("Type").and_then(Value::as_str) != Some(RESOURCE_TYPE) {
        return Ok(Vec::new());
    }
    let Some(properties) = resource.get("Properties").and_then(Value::as_object) else {
        return Ok(Vec::new());
    };
    let Some(timeout) = properties.get("TimeoutMinutes") else {
        return Ok(Vec::new());
    };
    let minutes = match long_build_minutes(timeout, parameter_values) {
        Ok(Some(minutes)) => minutes,
        Ok(None) => return Ok(Vec::new()),
        Err(problem) => return Err(vec![format!("{logical_id}: {problem}")]),
    };

    let ids = Ids::new(logical_id, deployment);
    let mut problems = Vec::new();
    if SET_BY_MACRO.iter().any(|key| properties.contains_key(*key)) {
        problems.push(format!(
            "{logical_id}: SignalUrl, Signal and ImageResource are set by the EcsAmi macro, not in the template"
        ));
    }
    // The handle's id is the longest of the three.
    if ids.handle.chars().count() > MAX_LOGICAL_ID_CHARS {
        problems.push(format!(
            "{logical_id}: the EcsAmi macro adds {}, which is longer than the {MAX_LOGICAL_ID_CHARS} characters of a logical id",
            ids.handle
        ));
    }
    // Ids generated for two different resources never meet: they differ in their tails.
    for id in [&ids.build, &ids.handle, &ids.wait] {
        if resources.contains_key(id) {
            problems.push(format!(
                "{logical_id}: the EcsAmi macro adds {id}, which the template already declares"
            ));
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(ids.resources(logical_id, resource, properties, minutes))
}

/// The minutes of a build through a wait condition, or `None` for a resource left as it is.
fn long_build_minutes(value: &Value, parameter_values: &Value) -> Result<Option<u32>, String> {
    let unreadable = || {
        format!(
            "TimeoutMinutes must be a number or a Ref to a parameter for the EcsAmi macro, which reads it before CloudFormation resolves other functions (got {value})"
        )
    };
    let whole = match value {
        Value::Object(function) => {
            let parameter = match function.get("Ref") {
                Some(Value::String(parameter)) if function.len() == 1 => parameter,
                _ => return Err(unreadable()),
            };
            let given = parameter_values.get(parameter).ok_or_else(unreadable)?;
            whole_number(given).ok_or_else(|| {
                format!(
                    "TimeoutMinutes is a Ref to the parameter {parameter}, whose value {given} is not a whole number"
                )
            })?
        }
        other => whole_number(other).ok_or_else(unreadable)?,
    };
    match whole {
        Whole::NotPositive => Ok(None),
        Whole::Positive(digits) => match digits.parse::<u32>() {
            Ok(minutes) if minutes <= MAX_SHORT_BUILD_MINUTES => Ok(None),
            Ok(minutes) if minutes <= MAX_LONG_BUILD_MINUTES => Ok(Some(minutes)),
            _ => Err(format!(
                "TimeoutMinutes {digits} is more than {MAX_LONG_BUILD_MINUTES}, the most a wait condition's 12 hours leave after {WAIT_MARGIN_MINUTES} minutes for cleanup"
            )),
        },
    }
}

/// A whole number as the function reads `TimeoutMinutes`.
enum Whole {
    /// Zero or less: the function refuses it, the macro leaves it alone.
    NotPositive,
    /// Its decimal digits, without leading zeros (possibly too many for any integer type).
    Positive(String),
}

/// `value` read as a whole number: a JSON integer, or a string of decimal digits with an
/// optional sign and spaces around (as the function reads it); `None` for anything else.
fn whole_number(value: &Value) -> Option<Whole> {
    let text = match value {
        Value::Number(number) => match (number.as_i64(), number.as_u64()) {
            (Some(signed), _) => signed.to_string(),
            (None, Some(unsigned)) => unsigned.to_string(),
            (None, None) => return None,
        },
        Value::String(text) => text.clone(),
        _ => return None,
    };
    let text = text.trim();
    let (negative, digits) = match text.strip_prefix('-') {
        Some(digits) => (true, digits),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits = digits.trim_start_matches('0');
    if negative || digits.is_empty() {
        Some(Whole::NotPositive)
    } else {
        Some(Whole::Positive(digits.to_owned()))
    }
}

/// The logical ids the macro adds for one resource.
struct Ids {
    build: String,
    handle: String,
    wait: String,
}

impl Ids {
    fn new(logical_id: &str, deployment: &str) -> Ids {
        let hash = crate::hash::sha256_hex(&format!("{deployment}/{logical_id}"));
        let n = &hash[..ID_HASH_DIGITS];
        Ids {
            build: format!("{logical_id}Build"),
            handle: format!("{logical_id}Handle{n}"),
            wait: format!("{logical_id}Wait{n}"),
        }
    }

    /// The four resources of the expansion, `logical_id` (the resource as it was, plus
    /// `Signal`) last.
    fn resources(
        self,
        logical_id: &str,
        resource: &Map<String, Value>,
        properties: &Map<String, Value>,
        minutes: u32,
    ) -> Vec<(String, Value)> {
        let copied = |keys: &[&str]| -> Map<String, Value> {
            keys.iter()
                .filter_map(|key| Some(((*key).to_owned(), resource.get(*key)?.clone())))
                .collect()
        };

        let mut build_properties = properties.clone();
        build_properties.insert("SignalUrl".to_owned(), json!({ "Ref": self.handle }));
        build_properties.insert("ImageResource".to_owned(), json!(logical_id));
        let mut build = copied(&["Condition", "DependsOn"]);
        build.insert("Type".to_owned(), json!(RESOURCE_TYPE));
        build.insert("Properties".to_owned(), Value::Object(build_properties));

        let mut handle = copied(&["Condition"]);
        handle.insert("Type".to_owned(), json!(HANDLE_TYPE));

        let timeout_seconds = (minutes + WAIT_MARGIN_MINUTES) * 60;
        let mut wait = copied(&["Condition"]);
        wait.insert("Type".to_owned(), json!(WAIT_TYPE));
        wait.insert(
            "Properties".to_owned(),
            json!({
                "Handle": { "Ref": self.handle },
                "Timeout": timeout_seconds.to_string(),
                "Count": 1,
            }),
        );
        wait.insert("DependsOn".to_owned(), json!(self.build));

        let mut holder_properties = properties.clone();
        holder_properties.insert(
            "Signal".to_owned(),
            json!({ "Fn::GetAtt": [self.wait, "Data"] }),
        );
        let mut holder = resource.clone();
        holder.insert("Properties".to_owned(), Value::Object(holder_properties));

        vec![
            (self.build, Value::Object(build)),
            (self.handle, Value::Object(handle)),
            (self.wait, Value::Object(wait)),
            (logical_id.to_owned(), Value::Object(holder)),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVICE_TOKEN: &str = "arn:aws:lambda:us-east-1:123456789012:function:ecs-ami";

    /// A template with `resources`, and something in each other section.
    fn template(resources: Value) -> Value {
        json!({
            "AWSTemplateFormatVersion": "2010-09-09",
            "Transform": "ecs-ami-EcsAmi",
            "Parameters": { "BuildMinutes": { "Type": "Number", "Default": 600 } },
            "Conditions": { "Build": { "Fn::Equals": [{ "Ref": "AWS::Region" }, "us-east-1"] } },
            "Resources": resources,
            "Outputs": { "Image": { "Value": { "Ref": "Ami" } } },
        })
    }

    fn ami(timeout_minutes: Value) -> Value {
        json!({
            "Type": RESOURCE_TYPE,
            "Properties": {
                "ServiceToken": SERVICE_TOKEN,
                "TimeoutMinutes": timeout_minutes,
                "Steps": ["echo hello"],
            },
        })
    }

    /// The 12 hex digits ending the ids generated for `logical_id` in `deployment`.
    fn n(deployment: &str, logical_id: &str) -> String {
        crate::hash::sha256_hex(&format!("{deployment}/{logical_id}"))[..12].to_owned()
    }

    fn expanded(resources: Value) -> Map<String, Value> {
        let out = expand(&template(resources), &json!({}), "req-1").expect("expands");
        out["Resources"].as_object().expect("an object").clone()
    }

    fn error(resources: Value, parameter_values: Value) -> String {
        expand(&template(resources), &parameter_values, "req-1").expect_err("fails")
    }

    #[test]
    fn a_long_build_expands_into_four_resources() {
        let mut user = ami(json!(600));
        let fields = user.as_object_mut().unwrap();
        fields.insert("Condition".into(), json!("Build"));
        fields.insert("DependsOn".into(), json!(["Network"]));
        fields.insert("DeletionPolicy".into(), json!("Retain"));
        fields.insert("UpdateReplacePolicy".into(), json!("Retain"));
        fields.insert("Metadata".into(), json!({ "Owner": "ops" }));
        let network =
            json!({ "Type": "AWS::EC2::VPC", "Properties": { "CidrBlock": "10.0.0.0/16" } });
        let original = template(json!({ "Ami": user.clone(), "Network": network.clone() }));

        let out = expand(&original, &json!({}), "req-1").unwrap();
        let resources = out["Resources"].as_object().unwrap();
        let n = n("req-1", "Ami");
        assert_eq!(n, "ed6f1c14d2f6");
        let (build_id, handle_id, wait_id) = (
            "AmiBuild".to_owned(),
            format!("AmiHandle{n}"),
            format!("AmiWait{n}"),
        );
        let mut ids: Vec<&str> = resources.keys().map(String::as_str).collect();
        ids.sort();
        let mut expected = vec!["Ami", &build_id, &handle_id, &wait_id, "Network"];
        expected.sort();
        assert_eq!(ids, expected);
        assert_eq!(resources["Network"], network);

        let mut build_properties = user["Properties"].clone();
        build_properties["SignalUrl"] = json!({ "Ref": handle_id });
        build_properties["ImageResource"] = json!("Ami");
        assert_eq!(
            resources[&build_id],
            json!({
                "Type": "Custom::EcsAmi",
                "Condition": "Build",
                "DependsOn": ["Network"],
                "Properties": build_properties,
            })
        );

        assert_eq!(
            resources[&handle_id],
            json!({ "Type": "AWS::CloudFormation::WaitConditionHandle", "Condition": "Build" })
        );

        assert_eq!(
            resources[&wait_id],
            json!({
                "Type": "AWS::CloudFormation::WaitCondition",
                "Condition": "Build",
                "DependsOn": "AmiBuild",
                "Properties": {
                    "Handle": { "Ref": handle_id },
                    "Timeout": "36600",
                    "Count": 1,
                },
            })
        );

        let mut holder = user.clone();
        holder["Properties"]["Signal"] = json!({ "Fn::GetAtt": [wait_id, "Data"] });
        assert_eq!(resources["Ami"], holder);

        // Everything outside Resources, Transform included, is as it came.
        let mut rest = out.clone();
        rest["Resources"] = original["Resources"].clone();
        assert_eq!(rest, original);
    }

    #[test]
    fn the_longest_build_waits_twelve_hours() {
        let resources = expanded(json!({ "Ami": ami(json!(710)) }));
        let wait = &resources[&format!("AmiWait{}", n("req-1", "Ami"))];
        assert_eq!(wait["Properties"]["Timeout"], json!("43200"));
    }

    #[test]
    fn short_builds_and_other_resources_are_untouched() {
        let mut no_timeout = ami(json!(0));
        no_timeout["Properties"]
            .as_object_mut()
            .unwrap()
            .remove("TimeoutMinutes");
        let original = template(json!({
            "Short": ami(json!(30)),
            "Edge": ami(json!("55")),
            "Zero": ami(json!(0)),
            "Negative": ami(json!(-5)),
            "NegativeText": ami(json!("-600")),
            "NoTimeout": no_timeout,
            "NoProperties": { "Type": RESOURCE_TYPE },
            "OtherType": { "Type": "Custom::Other", "Properties": { "TimeoutMinutes": 600 } },
            "NotAnObject": "text",
        }));
        assert_eq!(expand(&original, &json!({}), "req-1"), Ok(original.clone()));
    }

    #[test]
    fn a_template_without_resources_is_unchanged() {
        let original = json!({ "Transform": "ecs-ami-EcsAmi", "Outputs": {} });
        assert_eq!(expand(&original, &json!({}), "req-1"), Ok(original.clone()));
    }

    #[test]
    fn resources_that_are_not_an_object_fail() {
        let original = json!({ "Resources": [] });
        assert_eq!(
            expand(&original, &json!({}), "req-1"),
            Err("the template's Resources is not a JSON object".to_owned())
        );
    }

    #[test]
    fn string_and_parameter_timeouts_expand() {
        let parameters = json!({ "BuildMinutes": "600", "Hours": 600, "Padded": " +0600 " });
        for timeout in [
            json!("600"),
            json!({ "Ref": "BuildMinutes" }),
            json!({ "Ref": "Hours" }),
            json!({ "Ref": "Padded" }),
        ] {
            let out = expand(
                &template(json!({ "Ami": ami(timeout.clone()) })),
                &parameters,
                "req-1",
            )
            .unwrap_or_else(|e| panic!("{timeout} fails: {e}"));
            let wait = &out["Resources"][format!("AmiWait{}", n("req-1", "Ami"))];
            assert_eq!(wait["Properties"]["Timeout"], json!("36600"), "{timeout}");
            assert_eq!(
                out["Resources"]["Ami"]["Properties"]["TimeoutMinutes"],
                timeout
            );
        }
    }

    #[test]
    fn a_ref_to_a_missing_parameter_fails_naming_the_resource() {
        let message = error(
            json!({ "Ami": ami(json!({ "Ref": "Missing" })) }),
            json!({ "BuildMinutes": "600" }),
        );
        assert_eq!(
            message,
            r#"Ami: TimeoutMinutes must be a number or a Ref to a parameter for the EcsAmi macro, which reads it before CloudFormation resolves other functions (got {"Ref":"Missing"})"#
        );
    }

    #[test]
    fn other_functions_fail_naming_the_resource() {
        let message = error(
            json!({ "Ami": ami(json!({ "Fn::Sub": "${BuildMinutes}" })) }),
            json!({ "BuildMinutes": "600" }),
        );
        assert_eq!(
            message,
            r#"Ami: TimeoutMinutes must be a number or a Ref to a parameter for the EcsAmi macro, which reads it before CloudFormation resolves other functions (got {"Fn::Sub":"${BuildMinutes}"})"#
        );
        for other in [json!(600.5), json!("ten"), json!(true), json!([600])] {
            let message = error(json!({ "Ami": ami(other.clone()) }), json!({}));
            assert!(
                message.starts_with("Ami: TimeoutMinutes must be a number"),
                "{other}: {message}"
            );
        }
    }

    #[test]
    fn a_list_parameter_fails() {
        let message = error(
            json!({ "Ami": ami(json!({ "Ref": "Minutes" })) }),
            json!({ "Minutes": ["600", "700"] }),
        );
        assert_eq!(
            message,
            r#"Ami: TimeoutMinutes is a Ref to the parameter Minutes, whose value ["600","700"] is not a whole number"#
        );
    }

    #[test]
    fn more_than_710_minutes_fails() {
        let expected = "Ami: TimeoutMinutes 711 is more than 710, the most a wait condition's 12 hours leave after 10 minutes for cleanup";
        assert_eq!(
            error(json!({ "Ami": ami(json!(711)) }), json!({})),
            expected
        );
        assert_eq!(
            error(
                json!({ "Ami": ami(json!({ "Ref": "M" })) }),
                json!({ "M": "711" })
            ),
            expected
        );
        let huge = "123456789012345678901234567890";
        assert_eq!(
            error(json!({ "Ami": ami(json!(huge)) }), json!({})),
            format!(
                "Ami: TimeoutMinutes {huge} is more than 710, the most a wait condition's 12 hours leave after 10 minutes for cleanup"
            )
        );
    }

    #[test]
    fn ids_change_with_the_deployment_only() {
        let original = template(json!({ "Ami": ami(json!(600)) }));
        let ids = |deployment: &str| -> Vec<String> {
            let out = expand(&original, &json!({}), deployment).unwrap();
            out["Resources"]
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect()
        };
        let first = ids("req-1");
        assert_eq!(first, ids("req-1"));
        let second = ids("req-2");
        assert_ne!(first, second);
        assert_eq!(n("req-2", "Ami"), "c5f34fc2169b");
        assert!(second.contains(&"AmiHandlec5f34fc2169b".to_owned()));
        assert!(second.contains(&"AmiWaitc5f34fc2169b".to_owned()));
        assert!(second.contains(&"AmiBuild".to_owned()));
    }

    #[test]
    fn an_id_collision_fails() {
        let message = error(
            json!({
                "Ami": ami(json!(600)),
                "AmiBuild": { "Type": "AWS::SNS::Topic" },
            }),
            json!({}),
        );
        assert_eq!(
            message,
            "Ami: the EcsAmi macro adds AmiBuild, which the template already declares"
        );
        let wait = format!("AmiWait{}", n("req-1", "Ami"));
        let message = error(
            json!({ "Ami": ami(json!(600)), wait.clone(): { "Type": "AWS::SNS::Topic" } }),
            json!({}),
        );
        assert_eq!(
            message,
            format!("Ami: the EcsAmi macro adds {wait}, which the template already declares")
        );
    }

    #[test]
    fn properties_set_by_the_macro_fail() {
        for key in ["SignalUrl", "Signal", "ImageResource"] {
            let mut user = ami(json!(600));
            user["Properties"][key] = json!("x");
            assert_eq!(
                error(json!({ "Ami": user }), json!({})),
                "Ami: SignalUrl, Signal and ImageResource are set by the EcsAmi macro, not in the template"
            );
        }
    }

    #[test]
    fn a_logical_id_too_long_for_the_added_ids_fails() {
        // "Handle" and 12 hex digits: 18 characters after the logical id.
        let fits = "A".repeat(255 - 18);
        assert!(
            expand(
                &template(json!({ fits.clone(): ami(json!(600)) })),
                &json!({}),
                "r"
            )
            .is_ok()
        );
        let long = "A".repeat(255 - 17);
        let message = error(json!({ long.clone(): ami(json!(600)) }), json!({}));
        let handle = format!("{long}Handle{}", n("req-1", &long));
        assert_eq!(
            message,
            format!(
                "{long}: the EcsAmi macro adds {handle}, which is longer than the 255 characters of a logical id"
            )
        );
    }

    #[test]
    fn all_problems_are_reported_in_logical_id_order() {
        let message = error(
            json!({
                "Zeta": ami(json!(800)),
                "Alpha": ami(json!({ "Fn::Sub": "600" })),
                "Middle": ami(json!(600)),
            }),
            json!({}),
        );
        let problems: Vec<&str> = message.split("; ").collect();
        assert_eq!(problems.len(), 2, "{message}");
        assert!(problems[0].starts_with("Alpha: TimeoutMinutes must be a number"));
        assert!(problems[1].starts_with("Zeta: TimeoutMinutes 800 is more than 710"));
    }

    #[test]
    fn respond_expands_and_echoes_the_request_id() {
        let event = json!({
            "region": "us-east-1",
            "accountId": "123456789012",
            "fragment": template(json!({ "Ami": ami(json!({ "Ref": "BuildMinutes" })) })),
            "transformId": "123456789012::ecs-ami-EcsAmi",
            "params": {},
            "requestId": "req-2",
            "templateParameterValues": { "BuildMinutes": "600" },
        });
        assert!(is_macro_event(&event));
        let answer = respond(&event);
        assert_eq!(answer["requestId"], json!("req-2"));
        assert_eq!(answer["status"], json!("success"));
        let resources = answer["fragment"]["Resources"].as_object().unwrap();
        assert!(resources.contains_key("AmiWaitc5f34fc2169b"));
        assert_eq!(answer.as_object().unwrap().len(), 3);
    }

    #[test]
    fn respond_fails_for_a_fragment_that_is_not_an_object() {
        let event = json!({
            "fragment": "Resources: {}",
            "transformId": "123456789012::ecs-ami-EcsAmi",
            "requestId": "req-3",
        });
        assert_eq!(
            respond(&event),
            json!({
                "requestId": "req-3",
                "status": "failure",
                "errorMessage": "the template is not a JSON object",
            })
        );
        assert_eq!(respond(&json!(null))["status"], json!("failure"));
        assert_eq!(respond(&json!([1, 2]))["status"], json!("failure"));
    }

    #[test]
    fn respond_reports_every_bad_resource() {
        let event = json!({
            "fragment": template(json!({
                "First": ami(json!(900)),
                "Second": ami(json!({ "Ref": "Unknown" })),
            })),
            "transformId": "123456789012::ecs-ami-EcsAmi",
            "requestId": "req-4",
            "templateParameterValues": {},
        });
        let answer = respond(&event);
        assert_eq!(answer["status"], json!("failure"));
        assert_eq!(answer["requestId"], json!("req-4"));
        let message = answer["errorMessage"].as_str().unwrap();
        let problems: Vec<&str> = message.split("; ").collect();
        assert_eq!(problems.len(), 2, "{message}");
        assert!(problems[0].starts_with("First: TimeoutMinutes 900 is more than 710"));
        assert!(problems[1].starts_with("Second: TimeoutMinutes must be a number or a Ref"));
    }

    #[test]
    fn macro_events_are_recognised() {
        assert!(is_macro_event(
            &json!({ "fragment": {}, "transformId": "x", "requestId": "r" })
        ));
        assert!(!is_macro_event(&json!({ "fragment": {} })));
        assert!(!is_macro_event(&json!({ "transformId": "x" })));
        assert!(!is_macro_event(
            &json!({ "RequestType": "Create", "ResourceProperties": {} })
        ));
        assert!(!is_macro_event(&json!("fragment")));
    }
}
