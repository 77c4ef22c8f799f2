//! What the tests of the properties share: a minimal valid resource, and the problems one gets.

use super::*;
use serde_json::json;

pub(crate) fn minimal() -> Value {
    json!({
        "ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:f",
        "SourceAmi": "ami-0aae19d30bab785d3",
        "IamInstanceProfile": "ecs-ami-builder"
    })
}

pub(crate) fn with(extra: Value) -> Value {
    let mut base = minimal();
    for (k, v) in extra.as_object().unwrap() {
        base[k] = v.clone();
    }
    base
}

pub(crate) fn problems(properties: Value) -> Vec<String> {
    AmiSpec::parse(&properties)
        .expect_err("expected invalid properties")
        .problems
}

pub(crate) fn assert_problem(properties: Value, path: &str, words: &str) {
    let found = problems(properties);
    assert!(
        found
            .iter()
            .any(|p| p.starts_with(&format!("{path}:")) && p.contains(words)),
        "no problem at {path} mentioning {words:?} in {found:?}"
    );
}
