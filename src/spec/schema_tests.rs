//! The JSON Schema of the properties (`cfn/lint/Custom-EcsAmi.schema.json`, which cfn-lint checks
//! templates with) against the parser: the same property names at every level, and the same
//! verdict on every value at a limit the schema states. A property added to one and not the
//! other, or a limit changed in one, fails here.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use super::AmiSpec;
use super::fields::vocabulary;

const SCHEMA: &str = include_str!("../../cfn/lint/Custom-EcsAmi.schema.json");

fn schema() -> Value {
    serde_json::from_str(SCHEMA).expect("the schema is JSON")
}

/// The schema `node` stands for, its `$ref` followed.
fn resolve<'a>(root: &'a Value, node: &'a Value) -> &'a Value {
    match node.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let name = reference
                .strip_prefix("#/definitions/")
                .unwrap_or_else(|| panic!("only local definitions are used: {reference}"));
            resolve(root, &root["definitions"][name])
        }
        None => node,
    }
}

/// Every property path the schema names (list items as `[]`: `Steps[].Name`), with the schemas
/// it has there (one per alternative shape that names it).
fn named_paths(root: &Value) -> BTreeMap<String, Vec<Value>> {
    fn walk(root: &Value, node: &Value, path: &str, out: &mut BTreeMap<String, Vec<Value>>) {
        let node = resolve(root, node);
        for alternatives in ["oneOf", "anyOf", "allOf"] {
            for branch in node
                .get(alternatives)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                walk(root, branch, path, out);
            }
        }
        for (name, property) in node
            .get("properties")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            let at = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}.{name}")
            };
            out.entry(at.clone())
                .or_default()
                .push(resolve(root, property).clone());
            walk(root, property, &at, out);
        }
        if let Some(items) = node.get("items") {
            walk(root, items, &format!("{path}[]"), out);
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, "", &mut out);
    out
}

fn example(root: &Value, which: usize) -> Value {
    root["examples"][which].clone()
}

#[test]
fn the_schema_names_exactly_the_properties_the_parser_reads() {
    let root = schema();
    let named: BTreeSet<String> = named_paths(&root).into_keys().collect();
    // Between them, the examples hold every property at every level in each of its shapes (the
    // parser reads SourceAmiFilter only when it is the one source, Tags as a map or a list), so
    // the parser visits every object.
    let read = vocabulary::of(|| {
        for which in 0..root["examples"].as_array().unwrap().len() {
            let _ = AmiSpec::parse(&example(&root, which));
        }
    });
    let only_read: Vec<&String> = read.difference(&named).collect();
    let only_named: Vec<&String> = named.difference(&read).collect();
    assert!(
        only_read.is_empty() && only_named.is_empty(),
        "read by the parser, not in the schema: {only_read:?}; in the schema, not read by the parser: {only_named:?}"
    );
}

#[test]
fn the_schemas_examples_are_what_the_parser_says() {
    let root = schema();
    for which in [0, 2, 3] {
        if let Err(errors) = AmiSpec::parse(&example(&root, which)) {
            panic!("examples[{which}] is refused: {errors:?}");
        }
    }
    // Every value of the example with every property is valid on its own (only rules across
    // properties, such as one source, may refuse it).
    let every = example(&root, 1);
    if let Err(errors) = AmiSpec::parse(&every) {
        for problem in &errors.problems {
            assert!(
                problem.starts_with("SourceAmi"),
                "examples[1]: a value is refused on its own: {problem}"
            );
        }
    }
}

/// One step of a property path: a key, or any item of a list.
enum Segment<'a> {
    Key(&'a str),
    Item,
}

fn segments(path: &str) -> Vec<Segment<'_>> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let (key, items) = match part.find("[]") {
            Some(at) => (&part[..at], part[at..].matches("[]").count()),
            None => (part, 0),
        };
        out.push(Segment::Key(key));
        out.extend((0..items).map(|_| Segment::Item));
    }
    out
}

/// Puts `value` at `path` in `document` where that key already exists (in the first list item
/// that has it), and says where: `Steps[1].TimeoutSeconds`. `None`: no such place.
fn set_at(document: &mut Value, path: &[Segment], value: &Value, at: String) -> Option<String> {
    match path.split_first() {
        None => {
            *document = value.clone();
            Some(at)
        }
        Some((Segment::Key(key), rest)) => {
            let next = document.as_object_mut()?.get_mut(*key)?;
            let at = if at.is_empty() {
                (*key).to_owned()
            } else {
                format!("{at}.{key}")
            };
            set_at(next, rest, value, at)
        }
        Some((Segment::Item, rest)) => {
            let items = document.as_array_mut()?;
            for (index, item) in items.iter_mut().enumerate() {
                let mut tried = item.clone();
                if let Some(at) = set_at(&mut tried, rest, value, format!("{at}[{index}]")) {
                    *item = tried;
                    return Some(at);
                }
            }
            None
        }
    }
}

/// What the schema says of `value` where `schema` applies (the keywords a single value is checked
/// with; cfn-lint takes a number or a boolean written as a string, as the parser does).
fn schema_accepts(schema: &Value, value: &Value) -> bool {
    let number = match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    let ok = |key: &str, check: &dyn Fn(&Value) -> bool| schema.get(key).is_none_or(check);
    let types_ok = match schema.get("type").and_then(Value::as_str) {
        Some("integer") => number.is_some_and(|n| n.fract() == 0.0),
        Some("number") => number.is_some(),
        Some("boolean") => {
            matches!(value, Value::Bool(_))
                || value.as_str().is_some_and(|s| {
                    s.eq_ignore_ascii_case("true") || s.eq_ignore_ascii_case("false")
                })
        }
        Some("string") => value.is_string() || value.is_number() || value.is_boolean(),
        Some("array") => value.is_array(),
        Some("object") => value.is_object(),
        _ => true,
    };
    let text = match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(_) | Value::Bool(_) => Some(value.to_string()),
        _ => None,
    };
    let length = text.as_ref().map(|t| t.chars().count() as f64);
    let items = value.as_array().map(|a| a.len() as f64);
    types_ok
        && ok("enum", &|allowed| {
            allowed
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a == value || (a.as_str().is_some() && a.as_str() == text.as_deref()))
        })
        && ok("minimum", &|m| {
            number.is_none_or(|n| n >= m.as_f64().unwrap())
        })
        && ok("maximum", &|m| {
            number.is_none_or(|n| n <= m.as_f64().unwrap())
        })
        && ok("minLength", &|m| {
            length.is_none_or(|l| l >= m.as_f64().unwrap())
        })
        && ok("maxLength", &|m| {
            length.is_none_or(|l| l <= m.as_f64().unwrap())
        })
        && ok("minItems", &|m| {
            items.is_none_or(|l| l >= m.as_f64().unwrap())
        })
        && ok("maxItems", &|m| {
            items.is_none_or(|l| l <= m.as_f64().unwrap())
        })
        && ok("pattern", &|p| {
            let pattern =
                regex_lite::Regex::new(p.as_str().unwrap()).expect("a pattern regex-lite reads");
            text.as_deref().is_none_or(|t| pattern.is_match(t))
        })
}

/// Values at and past each limit `schema` states, from a valid `current` value.
fn cases(schema: &Value, current: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        out.extend(allowed.iter().cloned());
        out.push(json!("not-one-of-these"));
    }
    let bound = |key: &str| schema.get(key).and_then(Value::as_i64);
    if let Some(min) = bound("minimum") {
        out.extend([json!(min), json!(min - 1)]);
    }
    if let Some(max) = bound("maximum") {
        out.extend([json!(max), json!(max + 1)]);
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("integer") => out.push(json!("12x")),
        Some("boolean") => out.push(json!("maybe")),
        Some("string") => {
            let text = current.as_str().unwrap_or("a").to_owned();
            out.push(json!(""));
            out.push(json!(format!("{text}!")));
            if let Some(max) = bound("maxLength") {
                let max = max as usize;
                // At and past the limit, keeping the value's own start where it has a shape.
                let filled = |n: usize| {
                    let mut t: String = text.chars().take(n).collect();
                    while t.chars().count() < n {
                        t.push('a');
                    }
                    t
                };
                out.extend([json!(filled(max)), json!(filled(max + 1))]);
            }
        }
        Some("array") => {
            if let (Some(max), Some(first)) = (bound("maxItems"), current.get(0)) {
                out.push(Value::Array(vec![first.clone(); max as usize + 1]));
            }
            if bound("minItems").is_some_and(|m| m > 0) {
                out.push(json!([]));
            }
        }
        _ => {}
    }
    out
}

/// The value at `path` in `document`, if the path exists there.
fn value_at<'a>(document: &'a Value, path: &[Segment]) -> Option<&'a Value> {
    match path.split_first() {
        None => Some(document),
        Some((Segment::Key(key), rest)) => value_at(document.get(*key)?, rest),
        Some((Segment::Item, rest)) => document
            .as_array()?
            .iter()
            .find_map(|item| value_at(item, rest)),
    }
}

/// `BlockDeviceMappings[0].Ebs.Iops` as its object's path and its key.
fn parent_of(at: &str) -> (Option<&str>, &str) {
    match at.rsplit_once('.') {
        Some((parent, leaf)) => (Some(parent), leaf),
        None => (None, at),
    }
}

/// The value at a concrete path (`Steps[1].Ebs`), the whole document for `None`.
fn value_at_concrete<'a>(document: &'a Value, path: Option<&str>) -> &'a Value {
    let Some(path) = path else { return document };
    let mut here = document;
    for part in path.split('.') {
        let (key, indices) = part
            .split_once('[')
            .map_or((part, ""), |(k, rest)| (k, rest));
        here = &here[key];
        for index in indices.split('[').filter(|i| !i.is_empty()) {
            here = &here[index.trim_end_matches(']').parse::<usize>().unwrap()];
        }
    }
    here
}

/// The schemas of the object holding the property at `path` (the root for a top-level one).
fn parent_schemas(root: &Value, named: &BTreeMap<String, Vec<Value>>, path: &str) -> Vec<Value> {
    match path.rsplit_once('.') {
        None => vec![root.clone()],
        Some((parent, _)) => named
            .get(parent.trim_end_matches("[]"))
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .flat_map(|s| match s.get("items") {
                Some(items) => vec![resolve(root, items).clone()],
                None => vec![s],
            })
            .collect(),
    }
}

/// The schema's rules across an object's properties, in the forms it uses (`allOf` of `if` with
/// `properties`/`enum`, `required` or `not`/`required`, `then` with `properties`, `required` or
/// `not`/`required`), as they bear on `leaf` with the object's values `object`.
fn conditions_hold(parents: &[Value], object: &Value, leaf: &str) -> bool {
    let has = |key: &Value| key.as_str().is_some_and(|k| object.get(k).is_some());
    let matches = |condition: &Value| -> bool {
        let required = condition["required"]
            .as_array()
            .is_none_or(|r| r.iter().all(has));
        let excluded = condition["not"]["required"]
            .as_array()
            .is_none_or(|r| !r.iter().all(has));
        let enums = condition["properties"]
            .as_object()
            .is_none_or(|properties| {
                properties.iter().all(|(key, rule)| {
                    object.get(key).is_none_or(|value| {
                        rule["enum"]
                            .as_array()
                            .is_none_or(|allowed| allowed.contains(value))
                    })
                })
            });
        required && excluded && enums
    };
    parents.is_empty()
        || parents.iter().any(|parent| {
            parent["allOf"]
                .as_array()
                .into_iter()
                .flatten()
                .all(|rule| {
                    if !matches(&rule["if"]) {
                        return true;
                    }
                    let then = &rule["then"];
                    let value = &object[leaf];
                    let leaf_ok = then["properties"]
                        .get(leaf)
                        .is_none_or(|constraint| schema_accepts(constraint, value));
                    let required_ok = then["required"]
                        .as_array()
                        .is_none_or(|r| r.iter().all(has));
                    let not_required_ok = then["not"]["required"]
                        .as_array()
                        .is_none_or(|r| !r.iter().all(has));
                    leaf_ok && required_ok && not_required_ok
                })
        })
}

#[test]
fn the_schema_and_the_parser_agree_at_every_limit() {
    let root = schema();
    let valid = example(&root, 2);
    let every = example(&root, 1);
    let exclusive: Vec<Vec<String>> = root
        .get("requiredXor")
        .map(|group| vec![serde_json::from_value(group.clone()).unwrap()])
        .unwrap_or_default();
    let mut disagreements = Vec::new();
    let mut tried = 0;
    let named = named_paths(&root);
    for (path, schemas) in named.clone() {
        let steps = segments(&path);
        // A top-level property the valid example leaves out (another source) is taken from the
        // example with every property, in place of the ones it excludes.
        let mut base = valid.clone();
        let Segment::Key(top) = steps[0] else {
            unreachable!()
        };
        if base.get(top).is_none() {
            let Some(value) = every.get(top) else {
                continue;
            };
            for group in exclusive.iter().filter(|g| g.iter().any(|k| k == top)) {
                for other in group {
                    base.as_object_mut().unwrap().remove(other);
                }
            }
            base[top] = value.clone();
        }
        let Some(current) = value_at(&base, &steps).cloned() else {
            continue;
        };
        for schema in &schemas {
            for case in cases(schema, &current) {
                let mut document = base.clone();
                let Some(at) = set_at(&mut document, &steps, &case, String::new()) else {
                    continue;
                };
                tried += 1;
                let (parent, leaf) = parent_of(&at);
                let siblings = value_at_concrete(&document, parent);
                let schema_says = schemas.iter().any(|s| schema_accepts(s, &case))
                    && conditions_hold(&parent_schemas(&root, &named, &path), siblings, leaf);
                let parser_says = AmiSpec::parse(&document);
                match (schema_says, parser_says) {
                    // The one rule the schema cannot state: over 55 minutes, TimeoutMinutes
                    // needs the EcsAmi macro, which the template's Transform names (a lint rule
                    // sees the properties alone, and the template as written, before the macro
                    // adds SignalUrl or Signal). The parser refuses it there, saying so.
                    (true, Err(errors))
                        if at == "TimeoutMinutes"
                            && errors.problems.iter().all(|p| {
                                p.starts_with("TimeoutMinutes: ") && p.contains("EcsAmi macro")
                            }) => {}
                    (true, Err(errors)) => disagreements.push(format!(
                        "{at} = {case}: the schema accepts it, the parser says {:?}",
                        errors.problems
                    )),
                    (false, Ok(_)) => disagreements.push(format!(
                        "{at} = {case}: the schema refuses it, the parser accepts it"
                    )),
                    // A rule across the object's properties (Iops required for io1) may name a
                    // sibling.
                    (false, Err(errors))
                        if !errors.problems.iter().any(|p| p.starts_with(&at))
                            && parent.is_none_or(|parent| {
                                !errors.problems.iter().any(|p| p.starts_with(parent))
                            }) =>
                    {
                        disagreements.push(format!(
                            "{at} = {case}: refused, but the parser does not name {at}: {:?}",
                            errors.problems
                        ))
                    }
                    _ => {}
                }
            }
        }
    }
    assert!(tried > 150, "only {tried} values were tried");
    assert!(
        disagreements.is_empty(),
        "{} disagreements:\n{}",
        disagreements.len(),
        disagreements.join("\n")
    );
}

#[test]
fn list_indices_are_read_as_any_item() {
    assert_eq!(
        vocabulary::without_indices("Tests.Steps[12].Commands"),
        "Tests.Steps[].Commands"
    );
    let mut document = json!({"Steps": [{"Name": "a"}, {"Name": "b", "Path": "/x"}]});
    let at = set_at(
        &mut document,
        &segments("Steps[].Path"),
        &json!("/y"),
        String::new(),
    );
    assert_eq!(at.as_deref(), Some("Steps[1].Path"));
    assert_eq!(document["Steps"][1]["Path"], "/y");
}
