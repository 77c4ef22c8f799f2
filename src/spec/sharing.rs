//! `LaunchPermissions`: the accounts, organizations and organizational units the AMI is shared
//! with (applied in `engine::sharing`).

use std::collections::BTreeSet;

use serde_json::Value;

use super::ids::is_account_id;
use super::*;

/// Who may launch the AMI. The accounts may also create volumes from its snapshots.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LaunchPermissions {
    pub user_ids: BTreeSet<String>,
    pub organization_arns: BTreeSet<String>,
    pub organizational_unit_arns: BTreeSet<String>,
}

impl LaunchPermissions {
    pub fn is_empty(&self) -> bool {
        self.user_ids.is_empty()
            && self.organization_arns.is_empty()
            && self.organizational_unit_arns.is_empty()
    }
}

pub(super) fn parse_launch_permissions(
    value: &Value,
    problems: &mut Problems,
) -> Option<LaunchPermissions> {
    let Some(map) = value.as_object() else {
        problems.add(
            "LaunchPermissions",
            format!(
                "must be an object with UserIds, OrganizationArns or OrganizationalUnitArns, not {}",
                kind_of(value)
            ),
        );
        return None;
    };
    let mut fields = Fields::new("LaunchPermissions", map, problems);
    let users = fields.list("UserIds");
    let organizations = fields.list("OrganizationArns");
    let units = fields.list("OrganizationalUnitArns");
    fields.finish();
    Some(LaunchPermissions {
        user_ids: each(
            "UserIds",
            users,
            is_account_id,
            "a 12-digit account id",
            problems,
        ),
        organization_arns: each(
            "OrganizationArns",
            organizations,
            is_organization_arn,
            "an organization ARN (arn:aws:organizations::111122223333:organization/o-exampleorgid)",
            problems,
        ),
        organizational_unit_arns: each(
            "OrganizationalUnitArns",
            units,
            is_unit_arn,
            "an organizational unit ARN (arn:aws:organizations::111122223333:ou/o-exampleorgid/ou-examplerootid-exampleouid)",
            problems,
        ),
    })
}

fn each(
    key: &str,
    items: Option<Vec<Value>>,
    valid: fn(&str) -> bool,
    what: &str,
    problems: &mut Problems,
) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (i, item) in items.unwrap_or_default().iter().enumerate() {
        let path = format!("LaunchPermissions.{key}[{i}]");
        match scalar_string(item) {
            Some(text) if valid(&text) => {
                if !found.insert(text.clone()) {
                    problems.add(&path, format!("{text} is given twice"));
                }
            }
            Some(text) => problems.add(&path, format!("{text:?} is not {what}")),
            None => problems.add(&path, format!("must be a string, not {}", kind_of(item))),
        }
    }
    found
}

fn lower_alnum(text: &str, min: usize, max: usize) -> bool {
    (min..=max).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// `o-` and 10 to 32 lowercase letters or digits (AWS Organizations' id format).
fn is_organization_id(text: &str) -> bool {
    text.strip_prefix("o-")
        .is_some_and(|rest| lower_alnum(rest, 10, 32))
}

/// `arn:PARTITION:organizations::ACCOUNT:`, then what follows.
fn organizations_resource(arn: &str) -> Option<&str> {
    let mut parts = arn.splitn(6, ':');
    let (Some("arn"), Some(partition), Some("organizations"), Some(""), Some(account), Some(rest)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    (partition.starts_with("aws") && is_account_id(account)).then_some(rest)
}

fn is_organization_arn(arn: &str) -> bool {
    organizations_resource(arn)
        .and_then(|rest| rest.strip_prefix("organization/"))
        .is_some_and(is_organization_id)
}

/// `ou/o-…/ou-` then 4 to 32 and 8 to 32 lowercase letters or digits, joined by `-`.
fn is_unit_arn(arn: &str) -> bool {
    let Some(rest) = organizations_resource(arn).and_then(|r| r.strip_prefix("ou/")) else {
        return false;
    };
    let Some((organization, unit)) = rest.split_once('/') else {
        return false;
    };
    let Some((root, id)) = unit.strip_prefix("ou-").and_then(|u| u.split_once('-')) else {
        return false;
    };
    is_organization_id(organization) && lower_alnum(root, 4, 32) && lower_alnum(id, 8, 32)
}

/// The property as a user writes it, valid and not (the helpers are `spec::test_support`).
#[cfg(test)]
mod property_tests {
    use crate::spec::test_support::*;
    use crate::spec::*;
    use serde_json::{Value, json};

    #[test]
    fn launch_permissions_take_accounts_organizations_and_units() {
        let spec = AmiSpec::parse(&with(json!({"LaunchPermissions": {
            "UserIds": ["111122223333", 444455556666_u64],
            "OrganizationArns": ["arn:aws:organizations::111122223333:organization/o-exampleorg1"],
            "OrganizationalUnitArns": ["arn:aws:organizations::111122223333:ou/o-exampleorg1/ou-ab12-cdefgh34"]
        }})))
        .unwrap();
        let shared = spec.launch_permissions;
        assert_eq!(
            shared.user_ids.iter().collect::<Vec<_>>(),
            ["111122223333", "444455556666"]
        );
        assert_eq!(shared.organization_arns.len(), 1);
        assert_eq!(shared.organizational_unit_arns.len(), 1);
        assert!(
            AmiSpec::parse(&minimal())
                .unwrap()
                .launch_permissions
                .is_empty()
        );
    }

    #[test]
    fn launch_permissions_name_what_is_not_an_account_or_an_organization() {
        let case = |shared: Value, path: &str, words: &str| {
            assert_problem(with(json!({ "LaunchPermissions": shared })), path, words)
        };
        case(
            json!(["111122223333"]),
            "LaunchPermissions",
            "must be an object",
        );
        case(
            json!({"UserIds": ["11112222333"]}),
            "LaunchPermissions.UserIds[0]",
            "not a 12-digit account id",
        );
        case(
            json!({"UserIds": ["111122223333", "111122223333"]}),
            "LaunchPermissions.UserIds[1]",
            "given twice",
        );
        case(
            json!({"UserIds": "111122223333"}),
            "LaunchPermissions.UserIds",
            "must be a list",
        );
        case(
            json!({"OrganizationArns": ["o-exampleorg1"]}),
            "LaunchPermissions.OrganizationArns[0]",
            "not an organization ARN",
        );
        case(
            json!({"OrganizationArns": ["arn:aws:organizations::111122223333:organization/o-SHORT"]}),
            "LaunchPermissions.OrganizationArns[0]",
            "not an organization ARN",
        );
        case(
            json!({"OrganizationalUnitArns": ["arn:aws:organizations::111122223333:organization/o-exampleorg1"]}),
            "LaunchPermissions.OrganizationalUnitArns[0]",
            "not an organizational unit ARN",
        );
        case(
            json!({"Accounts": ["111122223333"]}),
            "LaunchPermissions.Accounts",
            "unknown property",
        );
    }

    #[test]
    fn an_ami_encrypted_with_the_aws_managed_key_cannot_be_shared() {
        let encrypted = |key: Value| {
            let mut ebs = json!({"VolumeSize": 20, "Encrypted": true});
            if !key.is_null() {
                ebs["KmsKeyId"] = key;
            }
            with(json!({
                "BlockDeviceMappings": [{"DeviceName": "/dev/xvdb", "Ebs": ebs}],
                "LaunchPermissions": {"UserIds": ["111122223333"]},
            }))
        };
        for key in [Value::Null, json!("alias/aws/ebs")] {
            assert_problem(
                encrypted(key),
                "BlockDeviceMappings[0].Ebs.KmsKeyId",
                "AWS managed key aws/ebs cannot be shared",
            );
        }
        let customer =
            "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";
        assert!(AmiSpec::parse(&encrypted(json!(customer))).is_ok());
    }

    #[test]
    fn copies_of_an_encrypted_shared_ami_need_a_key() {
        let properties = |key: Option<&str>| {
            let mut region = json!({"Region": "eu-west-1"});
            if let Some(key) = key {
                region["KmsKeyId"] = json!(key);
            }
            with(json!({
                "BlockDeviceMappings": [{"DeviceName": "/dev/xvdb", "Ebs": {"VolumeSize": 20, "Encrypted": true,
                    "KmsKeyId": "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"}}],
                "LaunchPermissions": {"UserIds": ["111122223333"]},
                "Regions": [region],
            }))
        };
        assert_problem(
            properties(None),
            "Regions[0].KmsKeyId",
            "required to share an encrypted AMI",
        );
        assert!(AmiSpec::parse(&properties(Some("alias/copies"))).is_ok());
    }
}
