//! The resource's properties, typed and validated before anything is launched.
//!
//! CloudFormation sends every scalar as a string, so numbers and booleans are accepted either way.
//! Every problem names the property by its path (`Steps[2].Commands`) and says what is wrong; all
//! problems are reported together, so a user fixes a template in one round trip.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

pub mod fingerprint;
pub mod script;

/// Tags this product puts on everything it creates; users may not set keys with this prefix.
pub const TAG_PREFIX: &str = "ecs-ami:";
/// EC2 allows 50 tags per resource; the product's own identity tags take some of them.
pub const MAX_USER_TAGS: usize = 42;
pub const DEFAULT_STEP_TIMEOUT_SECONDS: u32 = 1800;
pub const MAX_STEP_TIMEOUT_SECONDS: u32 = 3600;
/// SSM accepts a limited document parameter size; one step's rendered script must stay below it.
pub const MAX_STEP_SCRIPT_BYTES: usize = 64 * 1024;
/// CloudFormation waits at most ServiceTimeout seconds (default and maximum 3600) for an answer.
pub const MAX_SERVICE_TIMEOUT_SECONDS: u32 = 3600;
/// Kept free at the end of ServiceTimeout: terminating the builder, removing a half-made image,
/// a hand-over delayed by Lambda's queue, and the response PUT with its retries all fit in it.
pub const ANSWER_MARGIN_SECONDS: u32 = 300;
/// Step outputs become attributes (in a response of at most 4,096 bytes) and are kept on the AMI
/// as tags (values of at most 256 characters): a few short values, such as versions.
pub const MAX_OUTPUTS: usize = 10;
pub const MAX_OUTPUT_VALUE_CHARS: usize = 256;
/// The attribute naming the source AMI; `OutputTags` may tag the AMI with it, as with a step output.
pub const SOURCE_IMAGE_ATTRIBUTE: &str = "SourceImageId";
/// The attributes every build answers with; a step output may not take one of these names.
pub const BUILT_IN_ATTRIBUTES: [&str; 5] = [
    "ImageId",
    "ImageName",
    "SourceImageId",
    "SnapshotIds",
    "Fingerprint",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Ami(String),
    Parameter(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ebs {
    pub volume_size: Option<u32>,
    pub volume_type: Option<String>,
    pub iops: Option<u32>,
    pub throughput: Option<u32>,
    pub encrypted: Option<bool>,
    pub kms_key_id: Option<String>,
    /// For the AMI's mapping. The builder's copy is always deleted on termination, so a failed
    /// build cannot leave a volume behind.
    pub delete_on_termination: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockDevice {
    pub device_name: String,
    pub ebs: Ebs,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Command {
        commands: Vec<String>,
        environment: BTreeMap<String, String>,
    },
    File {
        path: String,
        content: String,
        mode: String,
        owner: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub name: String,
    pub timeout_seconds: u32,
    pub action: Action,
    /// Names of the values this (command) step hands back by writing `NAME=value` lines to the
    /// file named by `$ECS_AMI_OUTPUTS`.
    pub outputs: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmiSpec {
    pub source: Source,
    pub iam_instance_profile: String,
    pub instance_type: Option<String>,
    pub subnet_id: Option<String>,
    pub security_group_ids: Vec<String>,
    pub ami_name: Option<String>,
    pub ami_description: Option<String>,
    pub block_device_mappings: Vec<BlockDevice>,
    pub tags: BTreeMap<String, String>,
    /// Tags whose values a step reads on the builder: tag key -> output name.
    pub output_tags: BTreeMap<String, String>,
    pub steps: Vec<Step>,
    /// The whole build's bound; past it the build is stopped, cleaned up and answered FAILED.
    pub timeout_minutes: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid properties: {}", .problems.join("; "))]
pub struct PropertyErrors {
    pub problems: Vec<String>,
}

impl AmiSpec {
    pub fn parse(properties: &Value) -> Result<AmiSpec, PropertyErrors> {
        let mut problems = Problems::default();
        let Some(map) = properties.as_object() else {
            return Err(PropertyErrors {
                problems: vec!["ResourceProperties: must be an object of properties".into()],
            });
        };
        let mut top = Fields::new("", map, &mut problems);
        top.ignore("ServiceToken");
        let source_ami = top.string("SourceAmi");
        let source_parameter = top.string("SourceAmiParameter");
        let iam_instance_profile = top.string("IamInstanceProfile");
        let instance_type = top.string("InstanceType");
        let subnet_id = top.string("SubnetId");
        let security_groups = top.list("SecurityGroupIds");
        let ami_name = top.string("AmiName");
        let ami_description = top.string("AmiDescription");
        let block_devices = top.list("BlockDeviceMappings");
        let tags = top.take("Tags");
        let output_tags = top.take("OutputTags");
        let steps = top.list("Steps");
        let service_timeout = top.number("ServiceTimeout", 1, MAX_SERVICE_TIMEOUT_SECONDS);
        let timeout_minutes = top.number("TimeoutMinutes", 1, MAX_SERVICE_TIMEOUT_SECONDS / 60);
        top.finish();
        let timeout_minutes = check_timeouts(service_timeout, timeout_minutes, &mut problems);

        let source = match (source_ami, source_parameter) {
            (Some(ami), None) => {
                if !is_ami_id(&ami) {
                    problems.add(
                        "SourceAmi",
                        format!("{ami:?} is not an AMI id (ami- followed by 8 or 17 hex digits)"),
                    );
                }
                Some(Source::Ami(ami))
            }
            (None, Some(name)) => {
                check_parameter_name(&name, &mut problems);
                Some(Source::Parameter(name))
            }
            (Some(_), Some(_)) => {
                problems.add(
                    "SourceAmi",
                    "give SourceAmi or SourceAmiParameter, not both",
                );
                None
            }
            (None, None) => {
                problems.add(
                    "SourceAmi",
                    "required: give SourceAmi (an AMI id) or SourceAmiParameter (an SSM parameter holding one)",
                );
                None
            }
        };
        match &iam_instance_profile {
            None => problems.add(
                "IamInstanceProfile",
                "required: the builder's instance profile (name or ARN); it must allow SSM (AmazonSSMManagedInstanceCore)",
            ),
            Some(profile) => check_instance_profile(profile, &mut problems),
        }
        if let Some(kind) = &instance_type
            && !is_instance_type(kind)
        {
            problems.add(
                "InstanceType",
                format!("{kind:?} is not an EC2 instance type such as t3.medium"),
            );
        }
        if let Some(subnet) = &subnet_id
            && !is_resource_id(subnet, "subnet-")
        {
            problems.add(
                "SubnetId",
                format!("{subnet:?} is not a subnet id (subnet- followed by hex digits)"),
            );
        }
        let mut security_group_ids = Vec::new();
        for (i, group) in security_groups.unwrap_or_default().iter().enumerate() {
            let path = format!("SecurityGroupIds[{i}]");
            match scalar_string(group) {
                Some(id) if is_resource_id(&id, "sg-") => security_group_ids.push(id),
                Some(id) => problems.add(
                    &path,
                    format!("{id:?} is not a security group id (sg- followed by hex digits)"),
                ),
                None => problems.add(&path, "must be a string"),
            }
        }
        if let Some(name) = &ami_name {
            check_ami_name(name, &mut problems);
        }
        if let Some(description) = &ami_description
            && description.chars().count() > 255
        {
            problems.add("AmiDescription", "must be at most 255 characters");
        }
        let block_device_mappings =
            parse_block_devices(block_devices.unwrap_or_default(), &mut problems);
        let tags = parse_tags(tags, &mut problems);
        let steps = parse_steps(steps.unwrap_or_default(), &mut problems);
        let output_tags = parse_output_tags(output_tags, &tags, &steps, &mut problems);

        problems.into_result(|| AmiSpec {
            source: source.expect("a missing source is a reported problem"),
            iam_instance_profile: iam_instance_profile
                .expect("a missing profile is a reported problem"),
            instance_type,
            subnet_id,
            security_group_ids,
            ami_name,
            ami_description,
            block_device_mappings,
            tags,
            output_tags,
            steps,
            timeout_minutes,
        })
    }
}

/// TimeoutMinutes defaults to, and may not exceed, what ServiceTimeout leaves after the margin
/// for cleanup and the answer.
fn check_timeouts(
    service_timeout: Option<u32>,
    timeout_minutes: Option<u32>,
    problems: &mut Problems,
) -> u32 {
    let service = service_timeout.unwrap_or(MAX_SERVICE_TIMEOUT_SECONDS);
    let most = service.saturating_sub(ANSWER_MARGIN_SECONDS) / 60;
    if most == 0 {
        problems.add(
            "ServiceTimeout",
            format!(
                "{service} s leaves no time to build: at least {} s are needed ({ANSWER_MARGIN_SECONDS} s are kept for cleanup and the answer)",
                ANSWER_MARGIN_SECONDS + 60
            ),
        );
        return 1;
    }
    match timeout_minutes {
        Some(minutes) if minutes > most => {
            problems.add(
                "TimeoutMinutes",
                format!(
                    "{minutes} is more than the {most} minutes that ServiceTimeout ({service} s) leaves after {} minutes for cleanup and the answer",
                    ANSWER_MARGIN_SECONDS / 60
                ),
            );
            most
        }
        Some(minutes) => minutes,
        None => most,
    }
}

#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn add(&mut self, path: &str, problem: impl std::fmt::Display) {
        self.0.push(format!("{path}: {problem}"));
    }

    fn into_result<T>(self, build: impl FnOnce() -> T) -> Result<T, PropertyErrors> {
        if self.0.is_empty() {
            Ok(build())
        } else {
            Err(PropertyErrors { problems: self.0 })
        }
    }
}

/// Reads one object's fields, remembering which were read so that the rest can be reported as
/// unknown: a typo such as `Command` for `Commands` must not be silently ignored.
struct Fields<'a, 'p> {
    prefix: String,
    map: &'a Map<String, Value>,
    known: BTreeSet<&'static str>,
    problems: &'p mut Problems,
}

impl<'a, 'p> Fields<'a, 'p> {
    fn new(prefix: &str, map: &'a Map<String, Value>, problems: &'p mut Problems) -> Self {
        Fields {
            prefix: prefix.to_owned(),
            map,
            known: BTreeSet::new(),
            problems,
        }
    }

    fn path(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.prefix)
        }
    }

    fn ignore(&mut self, key: &'static str) {
        self.known.insert(key);
    }

    fn take(&mut self, key: &'static str) -> Option<&'a Value> {
        self.known.insert(key);
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn string(&mut self, key: &'static str) -> Option<String> {
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

    fn number(&mut self, key: &'static str, min: u32, max: u32) -> Option<u32> {
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

    fn boolean(&mut self, key: &'static str) -> Option<bool> {
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

    fn list(&mut self, key: &'static str) -> Option<Vec<Value>> {
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

    fn finish(self) {
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

fn kind_of(value: &Value) -> &'static str {
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
fn scalar_string(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn all_hex(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

pub fn is_ami_id(text: &str) -> bool {
    text.strip_prefix("ami-")
        .is_some_and(|hex| (hex.len() == 8 || hex.len() == 17) && all_hex(hex))
}

fn is_resource_id(text: &str, prefix: &str) -> bool {
    text.strip_prefix(prefix)
        .is_some_and(|hex| (8..=17).contains(&hex.len()) && all_hex(hex))
}

fn is_instance_type(text: &str) -> bool {
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

fn check_parameter_name(name: &str, problems: &mut Problems) {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "_.-/".contains(c);
    if name.len() > 2048 || !name.chars().all(allowed) {
        problems.add(
            "SourceAmiParameter",
            format!(
                "{name:?} is not an SSM parameter name (letters, digits, _ . - /, at most 2048)"
            ),
        );
    }
}

fn check_instance_profile(profile: &str, problems: &mut Problems) {
    if profile.starts_with("arn:") {
        let valid =
            profile.split(':').nth(2) == Some("iam") && profile.contains(":instance-profile/");
        if !valid {
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

const MAX_AMI_NAME_PREFIX: usize = 104;

fn check_ami_name(name: &str, problems: &mut Problems) {
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

fn parse_block_devices(items: Vec<Value>, problems: &mut Problems) -> Vec<BlockDevice> {
    const TYPES: [&str; 7] = ["gp2", "gp3", "io1", "io2", "st1", "sc1", "standard"];
    let mut devices = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, item) in items.iter().enumerate() {
        let prefix = format!("BlockDeviceMappings[{i}]");
        let Some(map) = item.as_object() else {
            problems.add(&prefix, "must be an object with DeviceName and Ebs");
            continue;
        };
        let mut fields = Fields::new(&prefix, map, problems);
        let device_name = fields.string("DeviceName");
        let ebs = fields.take("Ebs");
        fields.finish();
        let Some(device_name) = device_name else {
            problems.add(
                &format!("{prefix}.DeviceName"),
                "required, such as /dev/xvdb",
            );
            continue;
        };
        if !is_device_name(&device_name) {
            problems.add(
                &format!("{prefix}.DeviceName"),
                format!("{device_name:?} is not a device name such as /dev/xvda or /dev/sdf"),
            );
        }
        if !seen.insert(device_name.clone()) {
            problems.add(
                &format!("{prefix}.DeviceName"),
                format!("{device_name} is mapped twice"),
            );
        }
        let ebs_path = format!("{prefix}.Ebs");
        let Some(ebs_map) = ebs.and_then(Value::as_object) else {
            problems.add(
                &ebs_path,
                "required: an object such as {VolumeSize: 20, VolumeType: gp3}",
            );
            continue;
        };
        let mut fields = Fields::new(&ebs_path, ebs_map, problems);
        let volume_type = fields.string("VolumeType");
        let volume_size = fields.number("VolumeSize", 1, 65536);
        let iops = fields.number("Iops", 100, 256_000);
        let throughput = fields.number("Throughput", 125, 2000);
        let encrypted = fields.boolean("Encrypted");
        let kms_key_id = fields.string("KmsKeyId");
        let delete_on_termination = fields.boolean("DeleteOnTermination");
        fields.finish();
        if let Some(kind) = &volume_type
            && !TYPES.contains(&kind.as_str())
        {
            problems.add(
                &format!("{ebs_path}.VolumeType"),
                format!("{kind:?} is not one of {}", TYPES.join(", ")),
            );
        }
        let kind = volume_type.as_deref().unwrap_or("gp3");
        if let Some(size) = volume_size {
            let (min, max) = match kind {
                "io1" | "io2" => (4, 16384),
                "st1" | "sc1" => (125, 16384),
                "standard" => (1, 1024),
                _ => (1, 16384),
            };
            if !(min..=max).contains(&size) {
                problems.add(
                    &format!("{ebs_path}.VolumeSize"),
                    format!("{size} GiB is out of range {min}..={max} for {kind}"),
                );
            }
        }
        if iops.is_some() && !matches!(kind, "io1" | "io2" | "gp3") {
            problems.add(
                &format!("{ebs_path}.Iops"),
                format!("applies only to io1, io2 and gp3 volumes, not {kind}"),
            );
        }
        if throughput.is_some() && kind != "gp3" {
            problems.add(
                &format!("{ebs_path}.Throughput"),
                format!("applies only to gp3 volumes, not {kind}"),
            );
        }
        if kms_key_id.is_some() && encrypted != Some(true) {
            problems.add(&format!("{ebs_path}.KmsKeyId"), "requires Encrypted: true");
        }
        devices.push(BlockDevice {
            device_name,
            ebs: Ebs {
                volume_size,
                volume_type,
                iops,
                throughput,
                encrypted,
                kms_key_id,
                delete_on_termination,
            },
        });
    }
    devices
}

fn is_device_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("/dev/") else {
        return false;
    };
    let letters = rest.strip_prefix("xvd").or_else(|| rest.strip_prefix("sd"));
    letters.is_some_and(|tail| {
        let alpha_len = tail.bytes().take_while(u8::is_ascii_lowercase).count();
        (1..=2).contains(&alpha_len) && tail[alpha_len..].bytes().all(|b| b.is_ascii_digit())
    })
}

fn parse_tags(value: Option<&Value>, problems: &mut Problems) -> BTreeMap<String, String> {
    let mut tags = BTreeMap::new();
    let mut insert =
        |path: String, key: Option<String>, value: Option<String>, problems: &mut Problems| {
            let (Some(key), Some(value)) = (key, value) else {
                problems.add(&path, "each tag needs a string Key and Value");
                return;
            };
            if !tag_key_is_valid(&path, &key, problems) {
                return;
            }
            if value.chars().count() > 256 {
                problems.add(
                    &path,
                    format!("the value of tag {key:?} is longer than 256 characters"),
                );
            } else if tags.insert(key.clone(), value).is_some() {
                problems.add(&path, format!("tag {key:?} is given twice"));
            }
        };
    match value {
        None => {}
        Some(Value::Object(map)) => {
            for (key, value) in map {
                insert(
                    format!("Tags.{key}"),
                    Some(key.clone()),
                    scalar_string(value),
                    problems,
                );
            }
        }
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let path = format!("Tags[{i}]");
                let Some(map) = item.as_object() else {
                    problems.add(&path, "must be an object with Key and Value");
                    continue;
                };
                let mut fields = Fields::new(&path, map, problems);
                let key = fields.take("Key").and_then(scalar_string);
                let value = fields.take("Value").and_then(scalar_string);
                fields.finish();
                insert(path, key, value, problems);
            }
        }
        Some(other) => problems.add(
            "Tags",
            format!(
                "must be a map or a list of Key/Value pairs, not {}",
                kind_of(other)
            ),
        ),
    }
    if tags.len() > MAX_USER_TAGS {
        problems.add(
            "Tags",
            format!(
                "{} tags given; at most {MAX_USER_TAGS} fit beside the product's own",
                tags.len()
            ),
        );
    }
    tags
}

/// EC2's rules for a tag key, and the prefixes nobody but AWS and this product may use.
fn tag_key_is_valid(path: &str, key: &str, problems: &mut Problems) -> bool {
    if key.is_empty() || key.chars().count() > 128 {
        problems.add(path, format!("tag key {key:?} must be 1 to 128 characters"));
        false
    } else if key.to_ascii_lowercase().starts_with("aws:") || key.starts_with(TAG_PREFIX) {
        problems.add(
            path,
            format!("tag key {key:?} uses a reserved prefix (aws: or {TAG_PREFIX})"),
        );
        false
    } else {
        true
    }
}

/// `OutputTags`: a map of tag keys to the names of step outputs, whose values (read on the
/// builder) become the AMI's and its snapshots' tags; `SourceImageId` names the source AMI. Also checks that the tags, the output
/// tags and the outputs (each kept on the AMI as a tag) fit within EC2's limit together.
fn parse_output_tags(
    value: Option<&Value>,
    tags: &BTreeMap<String, String>,
    steps: &[Step],
    problems: &mut Problems,
) -> BTreeMap<String, String> {
    let declared: BTreeSet<&str> = steps
        .iter()
        .flat_map(|s| s.outputs.iter().map(String::as_str))
        .collect();
    let mut output_tags = BTreeMap::new();
    match value {
        None => {}
        Some(Value::Object(map)) => {
            for (key, value) in map {
                let path = format!("OutputTags.{key}");
                if !tag_key_is_valid(&path, key, problems) {
                    continue;
                }
                if tags.contains_key(key) {
                    problems.add(&path, format!("tag {key:?} is also given in Tags"));
                    continue;
                }
                match scalar_string(value) {
                    Some(name)
                        if declared.contains(name.as_str()) || name == SOURCE_IMAGE_ATTRIBUTE =>
                    {
                        output_tags.insert(key.clone(), name);
                    }
                    Some(name) => problems.add(
                        &path,
                        format!(
                            "{name:?} is neither {SOURCE_IMAGE_ATTRIBUTE} nor an output of any step (declared: {})",
                            if declared.is_empty() {
                                "none; a command step declares them in Outputs".to_owned()
                            } else {
                                declared.iter().copied().collect::<Vec<_>>().join(", ")
                            }
                        ),
                    ),
                    None => problems.add(
                        &path,
                        format!("must be the name of a step output, not {}", kind_of(value)),
                    ),
                }
            }
        }
        Some(other) => problems.add(
            "OutputTags",
            format!(
                "must be a map of tag keys to step output names, not {}",
                kind_of(other)
            ),
        ),
    }
    let used = tags.len() + output_tags.len() + declared.len();
    if tags.len() <= MAX_USER_TAGS && used > MAX_USER_TAGS {
        problems.add(
            "OutputTags",
            format!(
                "{} Tags, {} OutputTags and {} step Outputs (each kept on the AMI as a tag) need {used} tags; at most {MAX_USER_TAGS} fit beside the product's own",
                tags.len(),
                output_tags.len(),
                declared.len()
            ),
        );
    }
    output_tags
}

fn parse_steps(items: Vec<Value>, problems: &mut Problems) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut names = BTreeSet::new();
    let mut output_names = BTreeSet::new();
    for (i, item) in items.iter().enumerate() {
        let prefix = format!("Steps[{i}]");
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
                if !names.insert(name.clone()) {
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
fn parse_outputs(
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

fn parse_command_step(
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

fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_file_step(
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn minimal() -> Value {
        json!({
            "ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:f",
            "SourceAmi": "ami-0aae19d30bab785d3",
            "IamInstanceProfile": "ecs-ami-builder"
        })
    }

    fn with(extra: Value) -> Value {
        let mut base = minimal();
        for (k, v) in extra.as_object().unwrap() {
            base[k] = v.clone();
        }
        base
    }

    fn problems(properties: Value) -> Vec<String> {
        AmiSpec::parse(&properties)
            .expect_err("expected invalid properties")
            .problems
    }

    fn assert_problem(properties: Value, path: &str, words: &str) {
        let found = problems(properties);
        assert!(
            found
                .iter()
                .any(|p| p.starts_with(&format!("{path}:")) && p.contains(words)),
            "no problem at {path} mentioning {words:?} in {found:?}"
        );
    }

    #[test]
    fn minimal_properties_parse_with_defaults() {
        let spec = AmiSpec::parse(&minimal()).unwrap();
        assert_eq!(spec.source, Source::Ami("ami-0aae19d30bab785d3".into()));
        assert!(spec.steps.is_empty() && spec.tags.is_empty() && spec.instance_type.is_none());
    }

    #[test]
    fn full_properties_parse_with_strings_for_numbers_and_booleans() {
        let spec = AmiSpec::parse(&json!({
            "SourceAmiParameter": "/aws/service/ecs/optimized-ami/amazon-linux-2023/recommended/image_id",
            "IamInstanceProfile": "arn:aws:iam::123456789012:instance-profile/builder",
            "InstanceType": "t4g.medium",
            "SubnetId": "subnet-0123456789abcdef0",
            "SecurityGroupIds": ["sg-0123abcd"],
            "AmiName": "ecs node (2026.11) [al2023]",
            "AmiDescription": "ECS node",
            "BlockDeviceMappings": [{"DeviceName": "/dev/xvdb", "Ebs": {"VolumeSize": "20", "VolumeType": "gp3", "Throughput": 250, "Encrypted": "true", "DeleteOnTermination": "false"}}],
            "Tags": [{"Key": "team", "Value": "platform"}, {"Key": "cost", "Value": 42}],
            "Steps": [
                {"Name": "update", "Commands": ["dnf -y update"], "Environment": {"HTTP_PROXY": ""}, "TimeoutSeconds": "900"},
                {"Name": "config", "Path": "/etc/ecs/ecs.config", "Content": "ECS_CLUSTER=x\n", "Mode": "600", "Owner": "root:root"}
            ]
        }))
        .unwrap();
        assert_eq!(spec.block_device_mappings[0].ebs.volume_size, Some(20));
        assert_eq!(
            spec.block_device_mappings[0].ebs.delete_on_termination,
            Some(false)
        );
        assert_eq!(spec.tags["cost"], "42");
        assert_eq!(spec.steps[0].timeout_seconds, 900);
        assert_eq!(spec.steps[1].timeout_seconds, DEFAULT_STEP_TIMEOUT_SECONDS);
        assert!(matches!(&spec.steps[1].action, Action::File { mode, .. } if mode == "600"));
    }

    #[test]
    fn tags_as_a_map_are_accepted() {
        let spec = AmiSpec::parse(&with(json!({"Tags": {"team": "platform"}}))).unwrap();
        assert_eq!(spec.tags["team"], "platform");
    }

    #[test]
    fn source_must_be_exactly_one() {
        assert_problem(json!({"IamInstanceProfile": "p"}), "SourceAmi", "required");
        assert_problem(
            with(json!({"SourceAmiParameter": "/a/b"})),
            "SourceAmi",
            "not both",
        );
        assert_problem(
            with(json!({"SourceAmi": "ami-xyz"})),
            "SourceAmi",
            "not an AMI id",
        );
        assert_problem(
            json!({"SourceAmiParameter": "bad name!", "IamInstanceProfile": "p"}),
            "SourceAmiParameter",
            "not an SSM parameter name",
        );
    }

    #[test]
    fn each_scalar_property_is_checked() {
        assert_problem(
            json!({"SourceAmi": "ami-12345678"}),
            "IamInstanceProfile",
            "required",
        );
        assert_problem(
            with(json!({"IamInstanceProfile": "arn:aws:iam::1:role/x"})),
            "IamInstanceProfile",
            "ARN",
        );
        assert_problem(
            with(json!({"IamInstanceProfile": "has space"})),
            "IamInstanceProfile",
            "not an instance profile name",
        );
        assert_problem(
            with(json!({"InstanceType": "large"})),
            "InstanceType",
            "not an EC2 instance type",
        );
        assert_problem(
            with(json!({"SubnetId": "vpc-12345678"})),
            "SubnetId",
            "not a subnet id",
        );
        assert_problem(
            with(json!({"SecurityGroupIds": ["sg-1"]})),
            "SecurityGroupIds[0]",
            "not a security group id",
        );
        assert_problem(
            with(json!({"SecurityGroupIds": "sg-12345678"})),
            "SecurityGroupIds",
            "must be a list",
        );
        assert_problem(with(json!({"AmiName": "ab"})), "AmiName", "3 to 104");
        assert_problem(
            with(json!({"AmiName": "name#1"})),
            "AmiName",
            "'#' is not allowed",
        );
        assert_problem(
            with(json!({"AmiDescription": "d".repeat(256)})),
            "AmiDescription",
            "255",
        );
        assert_problem(
            with(json!({"InstanceType": ["t3.small"]})),
            "InstanceType",
            "must be a string",
        );
        assert_problem(with(json!({"AmiName": ""})), "AmiName", "must not be empty");
    }

    #[test]
    fn unknown_properties_are_named_at_every_level() {
        assert_problem(
            with(json!({"SourceAMI": "ami-12345678"})),
            "SourceAMI",
            "unknown property",
        );
        assert_problem(
            with(json!({"Steps": [{"Name": "a", "Command": ["x"]}]})),
            "Steps[0].Command",
            "unknown property",
        );
        assert_problem(
            with(json!({"BlockDeviceMappings": [{"DeviceName": "/dev/xvdb", "Ebs": {"Size": 3}}]})),
            "BlockDeviceMappings[0].Ebs.Size",
            "unknown property",
        );
    }

    #[test]
    fn block_devices_are_checked() {
        let bdm = |m: Value| with(json!({"BlockDeviceMappings": [m]}));
        assert_problem(
            bdm(json!({"DeviceName": "xvdb", "Ebs": {}})),
            "BlockDeviceMappings[0].DeviceName",
            "not a device name",
        );
        assert_problem(
            bdm(json!({"DeviceName": "/dev/xvdb"})),
            "BlockDeviceMappings[0].Ebs",
            "required",
        );
        assert_problem(
            bdm(json!({"DeviceName": "/dev/xvdb", "Ebs": {"VolumeSize": 0}})),
            "BlockDeviceMappings[0].Ebs.VolumeSize",
            "out of range",
        );
        assert_problem(
            bdm(json!({"DeviceName": "/dev/xvdb", "Ebs": {"VolumeSize": 20000}})),
            "BlockDeviceMappings[0].Ebs.VolumeSize",
            "for gp3",
        );
        assert_problem(
            bdm(json!({"DeviceName": "/dev/xvdb", "Ebs": {"VolumeSize": "big"}})),
            "BlockDeviceMappings[0].Ebs.VolumeSize",
            "whole number",
        );
        assert_problem(
            bdm(json!({"DeviceName": "/dev/xvdb", "Ebs": {"VolumeType": "ssd"}})),
            "BlockDeviceMappings[0].Ebs.VolumeType",
            "not one of",
        );
        assert_problem(
            bdm(
                json!({"DeviceName": "/dev/xvdb", "Ebs": {"VolumeType": "gp2", "Throughput": 200}}),
            ),
            "BlockDeviceMappings[0].Ebs.Throughput",
            "only to gp3",
        );
        assert_problem(
            bdm(
                json!({"DeviceName": "/dev/xvdb", "Ebs": {"VolumeType": "st1", "VolumeSize": 500, "Iops": 3000}}),
            ),
            "BlockDeviceMappings[0].Ebs.Iops",
            "io1, io2 and gp3",
        );
        assert_problem(
            bdm(json!({"DeviceName": "/dev/xvdb", "Ebs": {"KmsKeyId": "k"}})),
            "BlockDeviceMappings[0].Ebs.KmsKeyId",
            "Encrypted",
        );
        assert_problem(
            bdm(json!({"DeviceName": "/dev/xvdb", "Ebs": {"Encrypted": "yes"}})),
            "BlockDeviceMappings[0].Ebs.Encrypted",
            "true or false",
        );
        assert_problem(
            with(
                json!({"BlockDeviceMappings": [{"DeviceName": "/dev/xvdb", "Ebs": {}}, {"DeviceName": "/dev/xvdb", "Ebs": {}}]}),
            ),
            "BlockDeviceMappings[1].DeviceName",
            "mapped twice",
        );
    }

    #[test]
    fn tags_are_checked() {
        assert_problem(
            with(json!({"Tags": {"aws:x": "1"}})),
            "Tags.aws:x",
            "reserved prefix",
        );
        assert_problem(
            with(json!({"Tags": {"ecs-ami:fingerprint": "1"}})),
            "Tags.ecs-ami:fingerprint",
            "reserved prefix",
        );
        assert_problem(
            with(json!({"Tags": {"k": "v".repeat(257)}})),
            "Tags.k",
            "256",
        );
        assert_problem(
            with(json!({"Tags": {"k".repeat(129): "v"}})),
            &format!("Tags.{}", "k".repeat(129)),
            "1 to 128",
        );
        assert_problem(
            with(json!({"Tags": [{"Key": "a", "Value": "1"}, {"Key": "a", "Value": "2"}]})),
            "Tags[1]",
            "given twice",
        );
        assert_problem(
            with(json!({"Tags": [{"Key": "a"}]})),
            "Tags[0]",
            "Key and Value",
        );
        assert_problem(
            with(json!({"Tags": "team=platform"})),
            "Tags",
            "map or a list",
        );
        let many: Map<String, Value> = (0..43).map(|i| (format!("k{i}"), json!("v"))).collect();
        assert_problem(with(json!({"Tags": many})), "Tags", "at most 42");
    }

    #[test]
    fn outputs_and_output_tags_parse() {
        let spec = AmiSpec::parse(&with(json!({
            "Steps": [
                {"Name": "a", "Commands": ["x"], "Outputs": ["DockerVersion", "AgentVersion"]},
                {"Name": "b", "Commands": ["y"]}
            ],
            "OutputTags": {"docker-version": "DockerVersion", "source-ami": "SourceImageId"}
        })))
        .unwrap();
        assert_eq!(spec.steps[0].outputs, ["DockerVersion", "AgentVersion"]);
        assert!(spec.steps[1].outputs.is_empty());
        assert_eq!(
            spec.output_tags,
            BTreeMap::from([
                ("docker-version".into(), "DockerVersion".into()),
                ("source-ami".into(), "SourceImageId".into())
            ])
        );
    }

    #[test]
    fn outputs_and_output_tags_are_checked() {
        let outputs = |names: Value| {
            with(json!({"Steps": [{"Name": "a", "Commands": ["x"], "Outputs": names}]}))
        };
        assert_problem(outputs(json!("One")), "Steps[0].Outputs", "must be a list");
        assert_problem(
            outputs(json!([1])),
            "Steps[0].Outputs[0]",
            "must be a string",
        );
        assert_problem(
            outputs(json!(["has-dash"])),
            "Steps[0].Outputs[0]",
            "not an output name",
        );
        assert_problem(
            outputs(json!(["9lives"])),
            "Steps[0].Outputs[0]",
            "not an output name",
        );
        assert_problem(
            outputs(json!(["ImageId"])),
            "Steps[0].Outputs[0]",
            "resource's own attributes",
        );
        assert_problem(
            outputs(json!(["A", "A"])),
            "Steps[0].Outputs[1]",
            "already declared",
        );
        let eleven: Vec<String> = (0..11).map(|i| format!("O{i}")).collect();
        assert_problem(
            outputs(json!(eleven)),
            "Steps[0].Outputs[10]",
            "more than 10",
        );
        assert_problem(
            with(json!({"Steps": [
                {"Name": "a", "Commands": ["x"], "Outputs": ["V"]},
                {"Name": "b", "Commands": ["y"], "Outputs": ["V"]}
            ]})),
            "Steps[1].Outputs[0]",
            "unique across steps",
        );
        assert_problem(
            with(json!({"Steps": [{"Name": "f", "Path": "/x", "Content": "", "Outputs": ["V"]}]})),
            "Steps[0].Outputs",
            "only to command steps",
        );
        let tagged = |output_tags: Value, tags: Value| {
            with(json!({
                "Steps": [{"Name": "a", "Commands": ["x"], "Outputs": ["V"]}],
                "OutputTags": output_tags,
                "Tags": tags
            }))
        };
        assert_problem(
            tagged(json!({"v": "W"}), json!({})),
            "OutputTags.v",
            "\"W\" is neither SourceImageId nor an output of any step (declared: V)",
        );
        assert_problem(
            tagged(json!({"v": "V"}), json!({"v": "1"})),
            "OutputTags.v",
            "also given in Tags",
        );
        assert_problem(
            tagged(json!({"ecs-ami:v": "V"}), json!({})),
            "OutputTags.ecs-ami:v",
            "reserved prefix",
        );
        assert_problem(
            tagged(json!({"v": ["V"]}), json!({})),
            "OutputTags.v",
            "must be the name of a step output",
        );
        assert_problem(
            tagged(json!(["V"]), json!({})),
            "OutputTags",
            "must be a map",
        );
        assert_problem(
            with(json!({"OutputTags": {"v": "V"}})),
            "OutputTags.v",
            "declared: none",
        );
        // 41 tags, one output kept as a tag and one output tag: 43 > 42.
        let tags: serde_json::Map<String, Value> =
            (0..41).map(|i| (format!("t{i}"), json!("x"))).collect();
        assert_problem(
            tagged(json!({"v": "V"}), Value::Object(tags)),
            "OutputTags",
            "need 43 tags",
        );
    }

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
            step(json!({"Name": "a", "Commands": ["x"], "TimeoutSeconds": 3601})),
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

    #[test]
    fn timeouts_follow_service_timeout() {
        assert_eq!(AmiSpec::parse(&minimal()).unwrap().timeout_minutes, 55);
        assert_eq!(
            AmiSpec::parse(&with(json!({"ServiceTimeout": "1200"})))
                .unwrap()
                .timeout_minutes,
            15
        );
        assert_eq!(
            AmiSpec::parse(&with(json!({"TimeoutMinutes": "30"})))
                .unwrap()
                .timeout_minutes,
            30
        );
        assert_problem(
            with(json!({"TimeoutMinutes": 56})),
            "TimeoutMinutes",
            "more than the 55 minutes",
        );
        assert_problem(
            with(json!({"ServiceTimeout": 1200, "TimeoutMinutes": 20})),
            "TimeoutMinutes",
            "more than the 15 minutes",
        );
        assert_problem(
            with(json!({"ServiceTimeout": 300})),
            "ServiceTimeout",
            "leaves no time to build",
        );
        assert_problem(
            with(json!({"ServiceTimeout": 4000})),
            "ServiceTimeout",
            "out of range",
        );
        assert_problem(
            with(json!({"TimeoutMinutes": 0})),
            "TimeoutMinutes",
            "out of range",
        );
    }

    #[test]
    fn all_problems_are_reported_together() {
        let found = problems(json!({"SourceAmi": "bad", "InstanceType": "x", "Bogus": 1}));
        assert!(found.len() >= 4, "{found:?}");
    }

    #[test]
    fn non_object_properties_are_refused() {
        assert_problem(json!("SourceAmi"), "ResourceProperties", "object");
    }
}
