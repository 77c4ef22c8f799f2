//! `Steps`: command steps and file steps, with their outputs.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::*;

pub(super) fn parse_steps(items: Vec<Value>, problems: &mut Problems) -> Vec<Step> {
    parse_steps_at("Steps", items, problems)
}

/// The steps of the list at `path` (`Steps`, or `Tests.Steps`).
pub(super) fn parse_steps_at(path: &str, items: Vec<Value>, problems: &mut Problems) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut names = BTreeSet::new();
    let mut output_names = BTreeSet::new();
    for (i, item) in items.iter().enumerate() {
        let prefix = format!("{path}[{i}]");
        let Some(map) = item.as_object() else {
            problems.add(&prefix, "must be an object: a command step (Name, Commands) or a file step (Name, Path, Content)");
            continue;
        };
        let mut fields = Fields::new(&prefix, map, problems);
        let name = fields.string("Name");
        let timeout = fields.number("TimeoutSeconds", 1, MAX_STEP_TIMEOUT_SECONDS);
        let commands = fields.list("Commands");
        let environment = fields.take("Environment");
        let path = fields.string("Path");
        let content = fields.take("Content");
        let mode = fields.string("Mode");
        let owner = fields.string("Owner");
        let outputs = fields.list("Outputs");
        fields.finish();

        let name = match name {
            Some(name) if name.chars().count() <= 100 => {
                if name == PULL_STEP_NAME {
                    problems.add(
                        &format!("{prefix}.Name"),
                        format!("{name:?} is the name of the step that pulls ContainerImages; choose another"),
                    );
                } else if !names.insert(name.clone()) {
                    problems.add(
                        &format!("{prefix}.Name"),
                        format!("{name:?} is used by an earlier step; step names must be unique"),
                    );
                }
                name
            }
            Some(_) => {
                problems.add(&format!("{prefix}.Name"), "must be at most 100 characters");
                continue;
            }
            None => {
                problems.add(&format!("{prefix}.Name"), "required");
                continue;
            }
        };
        let is_file = path.is_some() || content.is_some() || mode.is_some() || owner.is_some();
        let action = match (commands, is_file) {
            (Some(_), true) => {
                problems.add(
                    &prefix,
                    "a step has either Commands or Path/Content, not both",
                );
                continue;
            }
            (None, false) => {
                problems.add(
                    &prefix,
                    "needs Commands (a command step) or Path and Content (a file step)",
                );
                continue;
            }
            (Some(commands), false) => parse_command_step(&prefix, commands, environment, problems),
            (None, true) => {
                for (key, given) in [
                    ("Environment", environment.is_some()),
                    ("Outputs", outputs.is_some()),
                ] {
                    if given {
                        problems.add(&format!("{prefix}.{key}"), "applies only to command steps");
                    }
                }
                parse_file_step(&prefix, path, content, mode, owner, problems)
            }
        };
        let Some(action) = action else { continue };
        let outputs = parse_outputs(&prefix, outputs, &mut output_names, problems);
        let step = Step {
            name,
            timeout_seconds: timeout.unwrap_or(DEFAULT_STEP_TIMEOUT_SECONDS),
            action,
            outputs,
        };
        let script_bytes = crate::spec::script::render(&step).len();
        if script_bytes > MAX_STEP_SCRIPT_BYTES {
            problems.add(
                &prefix,
                format!(
                    "is {script_bytes} bytes once rendered for SSM, more than the {MAX_STEP_SCRIPT_BYTES} one command accepts; split it into several steps"
                ),
            );
        }
        steps.push(step);
    }
    steps
}

/// A step's `Outputs`: names unique across all steps, usable as attribute names, and few.
pub(super) fn parse_outputs(
    prefix: &str,
    items: Option<Vec<Value>>,
    seen: &mut BTreeSet<String>,
    problems: &mut Problems,
) -> Vec<String> {
    let mut outputs = Vec::new();
    for (i, item) in items.unwrap_or_default().iter().enumerate() {
        let path = format!("{prefix}.Outputs[{i}]");
        let Some(name) = item.as_str() else {
            problems.add(&path, format!("must be a string, not {}", kind_of(item)));
            continue;
        };
        if !is_output_name(name) {
            problems.add(
                &path,
                format!("{name:?} is not an output name (a letter, then up to 63 letters and digits, as CloudFormation attribute names are)"),
            );
        } else if BUILT_IN_ATTRIBUTES.contains(&name) {
            problems.add(
                &path,
                format!(
                    "{name:?} is one of the resource's own attributes ({})",
                    BUILT_IN_ATTRIBUTES.join(", ")
                ),
            );
        } else if !seen.insert(name.to_owned()) {
            problems.add(
                &path,
                format!("{name:?} is already declared; output names must be unique across steps"),
            );
        } else if seen.len() > MAX_OUTPUTS {
            problems.add(&path, format!("more than {MAX_OUTPUTS} outputs in all; they are meant for a few short values such as versions"));
        } else {
            outputs.push(name.to_owned());
        }
    }
    outputs
}

pub fn is_output_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric())
}

pub(super) fn parse_command_step(
    prefix: &str,
    commands: Vec<Value>,
    environment: Option<&Value>,
    problems: &mut Problems,
) -> Option<Action> {
    if commands.is_empty() {
        problems.add(
            &format!("{prefix}.Commands"),
            "must list at least one command",
        );
    }
    let mut lines = Vec::new();
    for (i, command) in commands.iter().enumerate() {
        match scalar_string(command) {
            Some(line) => lines.push(line),
            None => problems.add(
                &format!("{prefix}.Commands[{i}]"),
                format!("must be a string, not {}", kind_of(command)),
            ),
        }
    }
    let mut variables = BTreeMap::new();
    match environment {
        None => {}
        Some(Value::Object(map)) => {
            for (key, value) in map {
                let path = format!("{prefix}.Environment.{key}");
                if !is_variable_name(key) {
                    problems.add(&path, "is not a shell variable name (letters, digits and _, not starting with a digit)");
                }
                match scalar_string(value) {
                    Some(text) if !text.contains('\0') => {
                        variables.insert(key.clone(), text);
                    }
                    Some(_) => problems.add(&path, "must not contain a NUL character"),
                    None => {
                        problems.add(&path, format!("must be a string, not {}", kind_of(value)))
                    }
                }
            }
        }
        Some(other) => problems.add(
            &format!("{prefix}.Environment"),
            format!("must be a map of names to values, not {}", kind_of(other)),
        ),
    }
    Some(Action::Command {
        commands: lines,
        environment: variables,
    })
}

pub(super) fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

pub(super) fn parse_file_step(
    prefix: &str,
    path: Option<String>,
    content: Option<&Value>,
    mode: Option<String>,
    owner: Option<String>,
    problems: &mut Problems,
) -> Option<Action> {
    let path_key = format!("{prefix}.Path");
    let path = match path {
        None => {
            problems.add(
                &path_key,
                "required for a file step: the absolute path to write",
            );
            None
        }
        Some(p) if !p.starts_with('/') => {
            problems.add(&path_key, format!("{p:?} is not an absolute path"));
            None
        }
        Some(p)
            if p.ends_with('/')
                || p.split('/').any(|part| part == ".." || part == ".")
                || p.contains('\0') =>
        {
            problems.add(
                &path_key,
                format!("{p:?} must name a file, without . or .. components"),
            );
            None
        }
        Some(p) => Some(p),
    };
    let content = match content {
        None => {
            problems.add(
                &format!("{prefix}.Content"),
                "required for a file step (may be empty)",
            );
            None
        }
        Some(value) => {
            let text = scalar_string(value);
            if text.is_none() {
                problems.add(
                    &format!("{prefix}.Content"),
                    format!("must be a string, not {}", kind_of(value)),
                );
            }
            text
        }
    };
    let mode = mode.unwrap_or_else(|| "0644".into());
    if !(3..=4).contains(&mode.len()) || !mode.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        problems.add(
            &format!("{prefix}.Mode"),
            format!("{mode:?} is not an octal file mode such as 0644 or 755"),
        );
    }
    let owner = owner.unwrap_or_else(|| "root:root".into());
    let names_valid = owner.split(':').count() <= 2
        && owner.split(':').all(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
                && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-".contains(c))
                && part.len() <= 32
        });
    if !names_valid {
        problems.add(
            &format!("{prefix}.Owner"),
            format!("{owner:?} is not USER or USER:GROUP (lower-case names)"),
        );
    }
    Some(Action::File {
        path: path?,
        content: content?,
        mode,
        owner,
    })
}

/// The property as a user writes it, valid and not (the helpers are `spec::test_support`).
#[cfg(test)]
mod property_tests {
    use crate::spec::test_support::*;

    use serde_json::{Value, json};

    #[test]
    fn steps_are_checked() {
        let step = |s: Value| with(json!({"Steps": [s]}));
        assert_problem(
            step(json!({"Commands": ["x"]})),
            "Steps[0].Name",
            "required",
        );
        assert_problem(
            step(json!({"Name": "a", "Commands": []})),
            "Steps[0].Commands",
            "at least one",
        );
        assert_problem(
            step(json!({"Name": "a", "Commands": [["nested"]]})),
            "Steps[0].Commands[0]",
            "must be a string",
        );
        assert_problem(step(json!({"Name": "a"})), "Steps[0]", "needs Commands");
        assert_problem(
            step(json!({"Name": "a", "Commands": ["x"], "Path": "/x", "Content": ""})),
            "Steps[0]",
            "not both",
        );
        assert_problem(
            step(json!({"Name": "a", "Commands": ["x"], "TimeoutSeconds": 0})),
            "Steps[0].TimeoutSeconds",
            "out of range",
        );
        assert_problem(
            step(json!({"Name": "a", "Commands": ["x"], "TimeoutSeconds": 43_201})),
            "Steps[0].TimeoutSeconds",
            "out of range",
        );
        assert_problem(
            step(json!({"Name": "a", "Commands": ["x"], "Environment": {"1BAD": "v"}})),
            "Steps[0].Environment.1BAD",
            "shell variable",
        );
        assert_problem(
            step(json!({"Name": "a", "Commands": ["x"], "Environment": ["A=b"]})),
            "Steps[0].Environment",
            "map",
        );
        assert_problem(
            step(json!({"Name": "a", "Path": "etc/x", "Content": "c"})),
            "Steps[0].Path",
            "absolute",
        );
        assert_problem(
            step(json!({"Name": "a", "Path": "/etc/../x", "Content": "c"})),
            "Steps[0].Path",
            "..",
        );
        assert_problem(
            step(json!({"Name": "a", "Path": "/etc/x"})),
            "Steps[0].Content",
            "required",
        );
        assert_problem(
            step(json!({"Name": "a", "Path": "/etc/x", "Content": "c", "Mode": "rw"})),
            "Steps[0].Mode",
            "octal",
        );
        assert_problem(
            step(json!({"Name": "a", "Path": "/etc/x", "Content": "c", "Mode": "0999"})),
            "Steps[0].Mode",
            "octal",
        );
        assert_problem(
            step(json!({"Name": "a", "Path": "/etc/x", "Content": "c", "Owner": "Root"})),
            "Steps[0].Owner",
            "USER:GROUP",
        );
        assert_problem(
            step(json!({"Name": "a", "Path": "/etc/x", "Content": "c", "Environment": {}})),
            "Steps[0].Environment",
            "only to command",
        );
        assert_problem(
            with(
                json!({"Steps": [{"Name": "a", "Commands": ["x"]}, {"Name": "a", "Commands": ["y"]}]}),
            ),
            "Steps[1].Name",
            "unique",
        );
        assert_problem(
            step(json!({"Name": "big", "Path": "/x", "Content": "x".repeat(60_000)})),
            "Steps[0]",
            "split it",
        );
        assert_problem(
            with(json!({"Steps": ["echo"]})),
            "Steps[0]",
            "must be an object",
        );
    }
}
