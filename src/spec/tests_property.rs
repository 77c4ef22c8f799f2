//! `Tests`: what the new AMI must pass before the stack gets it: steps run through SSM Run
//! Command on a test instance launched from it, after user data of its own (run in `engine`).

use serde_json::Value;

use super::steps::parse_steps_at;
use super::*;

/// EC2 takes at most 16 KB of user data, before base64
/// (<https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/instancedata-add-user-data.html>).
pub const MAX_USER_DATA_BYTES: usize = 16 * 1024;
/// The test phase's own bound when `Tests.TimeoutMinutes` is not given.
pub const DEFAULT_TEST_MINUTES: u32 = 20;

/// The tests of an AMI: a test instance launched from it, its user data run at boot, then the
/// steps in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestSpec {
    pub steps: Vec<Step>,
    pub user_data: Option<String>,
    /// The test instance must become an ACTIVE container instance of this cluster (name or
    /// ARN), its agent connected, after the steps passed.
    pub ecs_cluster: Option<String>,
    /// Default: the builder's.
    pub instance_type: Option<String>,
    /// Default: the builder's.
    pub iam_instance_profile: Option<String>,
    /// From the test instance's launch to the end of its last step.
    pub timeout_minutes: u32,
}

/// A cluster name (up to 255 letters, digits, hyphens and underscores) or a cluster ARN
/// (<https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_CreateCluster.html>).
fn is_cluster(text: &str) -> bool {
    let name = |n: &str| {
        !n.is_empty()
            && n.len() <= 255
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    match text.strip_prefix("arn:") {
        Some(rest) => {
            let parts: Vec<&str> = rest.splitn(5, ':').collect();
            parts.len() == 5
                && parts[1] == "ecs"
                && parts[4].strip_prefix("cluster/").is_some_and(name)
        }
        None => name(text),
    }
}

impl TestSpec {
    /// Eight hex digits that tell these tests from others: an image records the digests of the
    /// tests it passed, so that it is tested again only with tests it has not passed.
    pub fn digest(&self) -> String {
        crate::hash::short_hash(&format!("{self:?}"))
    }
}

pub(super) fn parse_tests(value: &Value, problems: &mut Problems) -> Option<TestSpec> {
    let Some(map) = value.as_object() else {
        problems.add(
            "Tests",
            format!(
                "must be an object with Steps (and optionally UserData, InstanceType, IamInstanceProfile, TimeoutMinutes), not {}",
                kind_of(value)
            ),
        );
        return None;
    };
    let mut fields = Fields::new("Tests", map, problems);
    let steps = fields.list("Steps");
    let user_data = fields.string("UserData");
    let ecs_cluster = fields.string("EcsCluster");
    let instance_type = fields.string("InstanceType");
    let iam_instance_profile = fields.string("IamInstanceProfile");
    let timeout_minutes = fields.number("TimeoutMinutes", 1, 60);
    fields.finish();
    let steps = parse_steps_at("Tests.Steps", steps.unwrap_or_default(), problems);
    if steps.is_empty() && ecs_cluster.is_none() {
        problems.add(
            "Tests.Steps",
            "required (or EcsCluster): at least one test step (a command that exits non-zero fails the AMI)",
        );
    }
    if let Some(cluster) = &ecs_cluster
        && !is_cluster(cluster)
    {
        problems.add(
            "Tests.EcsCluster",
            format!("{cluster:?} is not an ECS cluster name (letters, digits, - and _, at most 255) or cluster ARN"),
        );
    }
    for (i, step) in steps.iter().enumerate() {
        if !step.outputs.is_empty() {
            problems.add(
                &format!("Tests.Steps[{i}].Outputs"),
                "a test hands nothing back: Outputs belong to the build's Steps",
            );
        }
    }
    if let Some(data) = &user_data
        && !(data.starts_with("#!") || data.starts_with("#cloud-config"))
    {
        problems.add(
            "Tests.UserData",
            "must begin with #! (a script) or #cloud-config: cloud-init runs nothing else",
        );
    }
    if let Some(data) = &user_data
        && data.len() > MAX_USER_DATA_BYTES
    {
        problems.add(
            "Tests.UserData",
            format!(
                "{} bytes: EC2 takes at most {MAX_USER_DATA_BYTES}",
                data.len()
            ),
        );
    }
    if let Some(kind) = &instance_type
        && !ids::is_instance_type(kind)
    {
        problems.add(
            "Tests.InstanceType",
            format!("{kind:?} is not an EC2 instance type such as t3.medium"),
        );
    }
    if let Some(profile) = &iam_instance_profile {
        let mut own = Problems::default();
        ids::check_instance_profile(profile, &mut own);
        if !own.is_empty() {
            problems.add(
                "Tests.IamInstanceProfile",
                format!("{profile:?} is not an instance profile name or ARN"),
            );
        }
    }
    Some(TestSpec {
        steps,
        user_data,
        ecs_cluster,
        instance_type,
        iam_instance_profile,
        timeout_minutes: timeout_minutes.unwrap_or(DEFAULT_TEST_MINUTES),
    })
}

/// The property as a user writes it, valid and not (the helpers are `spec::test_support`).
#[cfg(test)]
mod property_tests {
    use crate::spec::test_support::*;
    use crate::spec::*;
    use serde_json::{Value, json};

    #[test]
    fn tests_are_checked() {
        let tests = |value: Value| with(json!({ "Tests": value }));
        let spec = AmiSpec::parse(&tests(json!({
            "UserData": "#!/bin/bash\necho hi\n",
            "EcsCluster": "arn:aws:ecs:us-east-1:123456789012:cluster/main",
            "Steps": [{"Name": "mounted", "Commands": ["findmnt /data"]}],
        })))
        .unwrap();
        let parsed = spec.tests.clone().unwrap();
        assert_eq!(parsed.timeout_minutes, DEFAULT_TEST_MINUTES);
        assert_eq!(parsed.steps.len(), 1);
        assert!(spec.clone().check_regions("us-east-1").is_ok());
        let elsewhere = spec.check_regions("eu-west-1").unwrap_err();
        assert!(
            elsewhere.problems[0].starts_with("Tests.EcsCluster: arn:aws:ecs:us-east-1:123456789012:cluster/main is a cluster of us-east-1"),
            "{elsewhere:?}"
        );
        assert_problem(tests(json!({})), "Tests.Steps", "required (or EcsCluster)");
        assert_problem(tests(json!("yes")), "Tests", "must be an object with Steps");
        assert_problem(
            tests(json!({"UserData": "echo hi", "EcsCluster": "main"})),
            "Tests.UserData",
            "must begin with #!",
        );
        assert_problem(
            tests(json!({"UserData": format!("#!/bin/bash\n{}", "x".repeat(MAX_USER_DATA_BYTES))})),
            "Tests.UserData",
            "EC2 takes at most 16384",
        );
        assert_problem(
            tests(json!({"EcsCluster": "no spaces allowed"})),
            "Tests.EcsCluster",
            "not an ECS cluster name",
        );
        assert_problem(
            tests(json!({"Steps": [{"Name": "v", "Commands": ["true"], "Outputs": ["V"]}]})),
            "Tests.Steps[0].Outputs",
            "a test hands nothing back",
        );
        assert_problem(
            tests(json!({"EcsCluster": "main", "TimeoutMinutes": 61})),
            "Tests.TimeoutMinutes",
            "",
        );
        assert_problem(
            tests(json!({"EcsCluster": "main", "InstanceType": "big"})),
            "Tests.InstanceType",
            "not an EC2 instance type",
        );
        // Not part of the fingerprint: a change of Tests alone never rebuilds.
        let other = AmiSpec::parse(&tests(json!({"EcsCluster": "other"}))).unwrap();
        let none = AmiSpec::parse(&minimal()).unwrap();
        assert!(other.differs_only_in_distribution(&none));
    }
}
