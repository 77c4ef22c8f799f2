//! The shapes of AWS identifiers and names that the properties must have.

use super::*;

pub(super) fn all_hex(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

pub fn is_ami_id(text: &str) -> bool {
    text.strip_prefix("ami-")
        .is_some_and(|hex| (hex.len() == 8 || hex.len() == 17) && all_hex(hex))
}

pub(super) fn is_resource_id(text: &str, prefix: &str) -> bool {
    text.strip_prefix(prefix)
        .is_some_and(|hex| (8..=17).contains(&hex.len()) && all_hex(hex))
}

pub(super) fn is_instance_type(text: &str) -> bool {
    let Some((family, size)) = text.split_once('.') else {
        return false;
    };
    let lower_alnum = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    family.len() >= 2
        && family.as_bytes()[0].is_ascii_lowercase()
        && lower_alnum(family)
        && !size.is_empty()
        && lower_alnum(size)
        && text.len() <= 32
}

/// A 12-digit AWS account id.
pub(super) fn is_account_id(text: &str) -> bool {
    text.len() == 12 && text.bytes().all(|b| b.is_ascii_digit())
}

/// The characters Parameter Store allows in a parameter name: letters, digits, `_ . - /`.
pub(super) fn parameter_name_chars(name: &str) -> bool {
    name.chars()
        .all(|c| c.is_ascii_alphanumeric() || "_.-/".contains(c))
}

pub(super) fn check_parameter_name(name: &str, problems: &mut Problems) {
    if name.len() > 2048 || !parameter_name_chars(name) {
        problems.add(
            "SourceAmiParameter",
            format!(
                "{name:?} is not an SSM parameter name (letters, digits, _ . - /, at most 2048)"
            ),
        );
    }
}

/// `arn:PARTITION:iam::ACCOUNT:instance-profile/[PATH/]NAME`, as IAM writes an instance
/// profile's ARN (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference-arns.html): no region,
/// a 12-digit account, path segments of printable characters, a name of up to 128 of
/// `[A-Za-z0-9+=,.@_-]`.
fn is_instance_profile_arn(arn: &str) -> bool {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let ["arn", partition, "iam", "", account, resource] = parts[..] else {
        return false;
    };
    let Some(path_and_name) = resource.strip_prefix("instance-profile/") else {
        return false;
    };
    let (path, name) = match path_and_name.rsplit_once('/') {
        Some((path, name)) => (Some(path), name),
        None => (None, path_and_name),
    };
    let name_char = |c: char| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c);
    let printable =
        |segment: &str| !segment.is_empty() && segment.bytes().all(|b| (b'!'..=b'~').contains(&b));
    !partition.is_empty()
        && partition
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && path.is_none_or(|path| path.split('/').all(printable))
        && (1..=128).contains(&name.len())
        && name.chars().all(name_char)
}

pub(super) fn check_instance_profile(profile: &str, problems: &mut Problems) {
    if profile.starts_with("arn:") {
        if !is_instance_profile_arn(profile) {
            problems.add("IamInstanceProfile", format!("{profile:?} is not an instance profile ARN (arn:aws:iam::ACCOUNT:instance-profile/NAME)"));
        }
        return;
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c);
    if profile.len() > 128 || !profile.chars().all(allowed) {
        problems.add(
            "IamInstanceProfile",
            format!("{profile:?} is not an instance profile name (letters, digits, +=,.@_-, at most 128)"),
        );
    }
}

pub(super) const MAX_AMI_NAME_PREFIX: usize = 104;

pub(super) fn check_ami_name(name: &str, problems: &mut Problems) {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "()[] ./-'@_".contains(c);
    // The build appends "-YYYYMMDDTHHMMSSZ-HASH" (24 characters) to keep names unique; EC2's
    // limit for the whole name is 128.
    if !(3..=MAX_AMI_NAME_PREFIX).contains(&name.len()) {
        problems.add(
            "AmiName",
            format!(
                "must be 3 to {MAX_AMI_NAME_PREFIX} characters (the build appends a 24-character time and hash)"
            ),
        );
    } else if let Some(bad) = name.chars().find(|c| !allowed(*c)) {
        problems.add(
            "AmiName",
            format!("{bad:?} is not allowed (letters, digits, spaces and ()[]./-'@_ only)"),
        );
    }
}

#[cfg(test)]
mod property_tests {
    use super::is_instance_profile_arn;

    #[test]
    fn instance_profile_arns_have_iams_shape() {
        for good in [
            "arn:aws:iam::123456789012:instance-profile/builder",
            "arn:aws-us-gov:iam::123456789012:instance-profile/builder",
            "arn:aws:iam::123456789012:instance-profile/division_abc/subdivision_xyz/Builder+1",
        ] {
            assert!(is_instance_profile_arn(good), "{good}");
        }
        for bad in [
            "arn:instance-profile/x:iam",
            "arn:aws:iam::123456789012:instance-profile/",
            "arn:aws:iam:us-east-1:123456789012:instance-profile/builder",
            "arn:aws:iam::1:instance-profile/builder",
            "arn:aws:iam::123456789012:role/builder",
            "arn:aws:iam::123456789012:instance-profile//builder",
            "arn:aws:iam::123456789012:instance-profile/path/",
            "arn:aws:ec2::123456789012:instance-profile/builder",
        ] {
            assert!(!is_instance_profile_arn(bad), "{bad}");
        }
    }
}
