//! Reading a JSON object of properties: every problem noted with its path, unknown keys reported.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use super::*;

#[derive(Default, Debug)]
pub(super) struct Problems(Vec<String>);

impl Problems {
    pub(super) fn add(&mut self, path: &str, problem: impl std::fmt::Display) {
        self.0.push(format!("{path}: {problem}"));
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(super) fn into_result<T>(self, build: impl FnOnce() -> T) -> Result<T, PropertyErrors> {
        if self.0.is_empty() {
            Ok(build())
        } else {
            Err(PropertyErrors { problems: self.0 })
        }
    }
}

/// Reads one object's fields, remembering which were read so that the rest can be reported as
/// unknown: a typo such as `Command` for `Commands` must not be silently ignored.
pub(super) struct Fields<'a, 'p> {
    prefix: String,
    map: &'a Map<String, Value>,
    known: BTreeSet<&'static str>,
    problems: &'p mut Problems,
}

impl<'a, 'p> Fields<'a, 'p> {
    pub(super) fn new(
        prefix: &str,
        map: &'a Map<String, Value>,
        problems: &'p mut Problems,
    ) -> Self {
        Fields {
            prefix: prefix.to_owned(),
            map,
            known: BTreeSet::new(),
            problems,
        }
    }

    pub(super) fn path(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.prefix)
        }
    }

    pub(super) fn ignore(&mut self, key: &'static str) {
        self.known.insert(key);
    }

    pub(super) fn take(&mut self, key: &'static str) -> Option<&'a Value> {
        self.known.insert(key);
        self.map.get(key).filter(|v| !v.is_null())
    }

    pub(super) fn string(&mut self, key: &'static str) -> Option<String> {
        let value = self.take(key)?;
        match scalar_string(value) {
            Some(text) if !text.is_empty() => Some(text),
            Some(_) => {
                let path = self.path(key);
                self.problems.add(&path, "must not be empty");
                None
            }
            None => {
                let path = self.path(key);
                self.problems
                    .add(&path, format!("must be a string, not {}", kind_of(value)));
                None
            }
        }
    }

    pub(super) fn number(&mut self, key: &'static str, min: u32, max: u32) -> Option<u32> {
        let value = self.take(key)?;
        let parsed = match value {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse::<u64>().ok(),
            _ => None,
        };
        let path = self.path(key);
        match parsed {
            Some(n) if (min as u64..=max as u64).contains(&n) => Some(n as u32),
            Some(n) => {
                self.problems
                    .add(&path, format!("{n} is out of range {min}..={max}"));
                None
            }
            None => {
                self.problems
                    .add(&path, format!("must be a whole number, not {value}"));
                None
            }
        }
    }

    pub(super) fn boolean(&mut self, key: &'static str) -> Option<bool> {
        let value = self.take(key)?;
        match value {
            Value::Bool(b) => Some(*b),
            Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
            Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
            _ => {
                let path = self.path(key);
                self.problems
                    .add(&path, format!("must be true or false, not {value}"));
                None
            }
        }
    }

    pub(super) fn list(&mut self, key: &'static str) -> Option<Vec<Value>> {
        let value = self.take(key)?;
        match value {
            Value::Array(items) => Some(items.clone()),
            _ => {
                let path = self.path(key);
                self.problems
                    .add(&path, format!("must be a list, not {}", kind_of(value)));
                None
            }
        }
    }

    pub(super) fn finish(self) {
        #[cfg(test)]
        vocabulary::record(&self.prefix, &self.known);
        let unknown: Vec<&String> = self
            .map
            .keys()
            .filter(|k| !self.known.contains(k.as_str()))
            .collect();
        for key in unknown {
            let path = self.path(key);
            let known: Vec<&str> = self
                .known
                .iter()
                .copied()
                .filter(|k| *k != "ServiceToken")
                .collect();
            self.problems.add(
                &path,
                format!("unknown property (expected one of: {})", known.join(", ")),
            );
        }
    }
}

pub(super) fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// CloudFormation turns numbers and booleans into strings; accept them either way.
pub(super) fn scalar_string(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The property names the parser asks for, recorded while a test parses (`schema_tests` compares
/// them with the schema's).
#[cfg(test)]
pub(super) mod vocabulary {
    use std::cell::RefCell;
    use std::collections::BTreeSet;

    thread_local! {
        static RECORDED: RefCell<Option<BTreeSet<String>>> = const { RefCell::new(None) };
    }

    /// Every property path `parse` asks for, list indices written `[]`: `Steps[].Name`.
    pub(in crate::spec) fn of(parse: impl FnOnce()) -> BTreeSet<String> {
        RECORDED.with(|r| *r.borrow_mut() = Some(BTreeSet::new()));
        parse();
        RECORDED.with(|r| r.borrow_mut().take().unwrap_or_default())
    }

    pub(super) fn record(prefix: &str, known: &BTreeSet<&'static str>) {
        RECORDED.with(|r| {
            if let Some(recorded) = r.borrow_mut().as_mut() {
                let prefix = without_indices(prefix);
                for key in known {
                    recorded.insert(if prefix.is_empty() {
                        (*key).to_owned()
                    } else {
                        format!("{prefix}.{key}")
                    });
                }
            }
        });
    }

    /// `Steps[2].Outputs` as `Steps[].Outputs`.
    pub(in crate::spec) fn without_indices(path: &str) -> String {
        let mut out = String::with_capacity(path.len());
        let mut in_index = false;
        for c in path.chars() {
            match c {
                '[' => {
                    in_index = true;
                    out.push_str("[]");
                }
                ']' => in_index = false,
                _ if in_index => {}
                _ => out.push(c),
            }
        }
        out
    }
}
