//! A failed build's instance kept for debugging (`KeepFailedInstanceMinutes`): tagged with the
//! time it is to go, left out of the build's cleanup, then terminated at that time by the
//! deployment's schedule ([`end_expired`]), or at once by the resource's next request
//! ([`end_for_request`]). Nothing but its tag remembers it, so nothing can lose it.

use std::collections::BTreeMap;

use crate::aws::{Aws, AwsError, InstanceStateName};
use crate::cfn::Identity;
use crate::engine::tags::{TAG_REQUEST, TAG_STACK, resource_tags};
use crate::engine::time;

/// On an instance kept for debugging: when it is to be terminated (`YYYY-MM-DDTHH:MM:SSZ`).
pub const TAG_KEEP_UNTIL: &str = "ecs-ami:keep-until";
/// On an instance kept for debugging: the failed request's
/// [`of_properties_as_sent`](crate::spec::fingerprint::of_properties_as_sent).
pub const TAG_FAILED_PROPERTIES: &str = "ecs-ami:failed-properties";

/// An instance a failed build left running for debugging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    pub instance: String,
    /// `builder` or `test instance`.
    pub what: &'static str,
    /// When it is terminated (UTC, as its tag says).
    pub until: String,
    pub minutes: u32,
}

/// What became of the instance a failed build was asked to keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Keeping {
    Kept(Kept),
    /// Not kept, and why (tagging it failed; it is in an ECS cluster): it was terminated with
    /// the rest, as if not asked.
    NotKept {
        instance: String,
        what: &'static str,
        why: String,
    },
}

impl Keeping {
    /// The instance kept, if it was.
    pub fn kept_instance(&self) -> Option<&str> {
        match self {
            Keeping::Kept(kept) => Some(&kept.instance),
            Keeping::NotKept { .. } => None,
        }
    }
}

impl std::fmt::Display for Keeping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Keeping::Kept(Kept {
                instance,
                what,
                until,
                minutes,
            }) => write!(
                f,
                "KEPT for debugging (KeepFailedInstanceMinutes {minutes}): the {what} {instance} runs until {until}; connect with: aws ssm start-session --target {instance}. It is terminated then, or sooner by a later Update or Delete of this resource (CloudFormation's rollback of this request leaves it)"
            ),
            Keeping::NotKept {
                instance,
                what,
                why,
            } => write!(
                f,
                "The {what} {instance} was not kept for debugging (KeepFailedInstanceMinutes): {why}"
            ),
        }
    }
}

/// Tags `instance` to be kept `minutes` from now. `properties`: the failed request's
/// [`of_properties_as_sent`](crate::spec::fingerprint::of_properties_as_sent), by which
/// CloudFormation's rollback of that request is told from a later request
/// ([`end_for_request`]).
pub(crate) async fn keep(
    aws: &Aws,
    (instance, what): (&str, &'static str),
    minutes: u32,
    properties: String,
) -> Keeping {
    let until = time::utc_iso_at_ms(time::now_ms() + u64::from(minutes) * 60_000);
    let tags = BTreeMap::from([
        (TAG_KEEP_UNTIL.to_owned(), until.clone()),
        (TAG_FAILED_PROPERTIES.to_owned(), properties),
    ]);
    match aws.tag(&[instance.to_owned()], &tags).await {
        Ok(()) => {
            tracing::warn!(
                instance,
                until,
                "keeping the failed build's instance for debugging"
            );
            Keeping::Kept(Kept {
                instance: instance.to_owned(),
                what,
                until,
                minutes,
            })
        }
        Err(error) => {
            tracing::warn!(instance, problem = %error, "the instance could not be tagged to be kept: terminating it with the rest");
            Keeping::NotKept {
                instance: instance.to_owned(),
                what,
                why: format!("tagging it failed ({error})"),
            }
        }
    }
}

/// Whether an instance in `state` still needs terminating.
fn alive(state: &InstanceStateName) -> bool {
    !matches!(
        state,
        InstanceStateName::Terminated | InstanceStateName::ShuttingDown
    )
}

/// What ending kept instances did: a sentence per instance terminated, and those EC2 refused.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Ended {
    pub terminated: Vec<String>,
    pub refused: Vec<(String, AwsError)>,
}

impl Ended {
    /// A sentence per instance, without its full stop; none when nothing was kept.
    pub fn sentences(&self) -> Vec<String> {
        let refused = self.refused.iter().map(|(instance, error)| {
            format!(
                "The instance {instance}, kept for debugging, could not be terminated ({error}); the deployment's schedule tries again every 5 minutes"
            )
        });
        self.terminated.iter().cloned().chain(refused).collect()
    }
}

async fn terminate_each(aws: &Aws, instances: Vec<(String, String)>) -> Ended {
    let mut ended = Ended::default();
    for (instance, sentence) in instances {
        match aws.terminate_instance(&instance).await {
            Ok(()) => ended.terminated.push(sentence),
            // Gone already (terminated by hand, and no longer listed): nothing is left.
            Err(error) if error.is_not_found() => {}
            Err(error) => ended.refused.push((instance, error)),
        }
    }
    ended
}

/// The deployment's schedule: terminates every kept instance whose time has come (or whose
/// `ecs-ami:keep-until` is not a time: kept by mistake is never kept for ever). `all`: every
/// kept instance, whatever its time (the deployment is being deleted, and its schedule with it).
pub async fn end_expired(aws: &Aws, all: bool) -> Result<Ended, AwsError> {
    let now = time::now_ms();
    let found = aws
        .instances_with_tags(&BTreeMap::new(), &[TAG_KEEP_UNTIL, TAG_STACK])
        .await?;
    let due: Vec<(String, String)> = found
        .into_iter()
        .filter(|i| alive(&i.state))
        .filter_map(|i| {
            let until = i.tags.get(TAG_KEEP_UNTIL)?;
            let due = all || time::parse_utc_iso_ms(until).is_none_or(|at| at <= now);
            due.then(|| {
                let sentence = format!("Terminated instance {}, kept until {until}", i.id);
                (i.id, sentence)
            })
        })
        .collect();
    Ok(terminate_each(aws, due).await)
}

/// A request of the resource ends the instances earlier failed requests kept, at once: but for
/// CloudFormation's rollback of the failed request itself, which would otherwise end what the
/// user was just given to debug. `rollback_of`: the `of_properties_as_sent` of an Update's
/// `OldResourceProperties` (a rollback's are the failed request's `ResourceProperties`, as
/// CloudFormation sent them).
pub async fn end_for_request(
    aws: &Aws,
    identity: &Identity,
    rollback_of: Option<&str>,
) -> Result<Ended, AwsError> {
    let found = aws
        .instances_with_tags(&resource_tags(identity), &[TAG_KEEP_UNTIL])
        .await?;
    let ended = ended_by_request(found, &identity.request_id, rollback_of);
    Ok(terminate_each(aws, ended).await)
}

/// Of the resource's kept instances, those a request ends, each with its sentence: the live
/// ones, but those of the request itself (a repeated delivery of the failed request) and those
/// whose failed request this one rolls back.
fn ended_by_request(
    found: Vec<crate::aws::Instance>,
    request_id: &str,
    rollback_of: Option<&str>,
) -> Vec<(String, String)> {
    found
        .into_iter()
        .filter(|i| alive(&i.state))
        .filter(|i| i.tags.get(TAG_REQUEST).map(String::as_str) != Some(request_id))
        .filter(|i| {
            rollback_of.is_none()
                || i.tags.get(TAG_FAILED_PROPERTIES).map(String::as_str) != rollback_of
        })
        .map(|i| {
            let request = i.tags.get(TAG_REQUEST).cloned().unwrap_or_default();
            let sentence = format!(
                "Terminated instance {}, kept for debugging after the failed request {request}",
                i.id
            );
            (i.id, sentence)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_ends_what_others_kept_but_not_its_own_nor_what_it_rolls_back() {
        let kept = |id: &str, request: &str, failed: &str, state| crate::aws::Instance {
            id: id.into(),
            state,
            launched_ms: None,
            tags: BTreeMap::from([
                (TAG_KEEP_UNTIL.to_owned(), "2026-12-07T16:00:00Z".to_owned()),
                (TAG_REQUEST.to_owned(), request.to_owned()),
                (TAG_FAILED_PROPERTIES.to_owned(), failed.to_owned()),
            ]),
        };
        let found = || {
            vec![
                kept("i-1", "req-1", "sent-a", InstanceStateName::Running),
                kept("i-2", "req-2", "sent-b", InstanceStateName::Stopped),
                kept("i-3", "req-3", "sent-c", InstanceStateName::Terminated),
            ]
        };
        let ids = |ended: Vec<(String, String)>| -> Vec<String> {
            ended.into_iter().map(|(id, _)| id).collect()
        };
        // A Delete or an ordinary Update ends every live one (a stopped one too).
        let all = ended_by_request(found(), "req-9", None);
        assert_eq!(
            all[0].1,
            "Terminated instance i-1, kept for debugging after the failed request req-1"
        );
        assert_eq!(ids(all), ["i-1", "i-2"]);
        // The rollback of req-2 (its OldResourceProperties digest to req-2's) leaves i-2.
        assert_eq!(
            ids(ended_by_request(found(), "req-9", Some("sent-b"))),
            ["i-1"]
        );
        // A repeated delivery of req-1 leaves what req-1 kept.
        assert_eq!(ids(ended_by_request(found(), "req-1", None)), ["i-2"]);
    }

    fn refused(operation: &'static str, code: &str) -> AwsError {
        AwsError {
            operation,
            code: Some(code.into()),
            message: "refused".into(),
        }
    }

    #[test]
    fn the_reason_names_the_instance_the_time_and_how_to_connect() {
        let kept = Keeping::Kept(Kept {
            instance: "i-0123456789abcdef0".into(),
            what: "builder",
            until: "2026-12-07T16:00:00Z".into(),
            minutes: 30,
        });
        assert_eq!(kept.kept_instance(), Some("i-0123456789abcdef0"));
        let text = kept.to_string();
        for part in [
            "KeepFailedInstanceMinutes 30",
            "builder i-0123456789abcdef0 runs until 2026-12-07T16:00:00Z",
            "connect with: aws ssm start-session --target i-0123456789abcdef0",
            "sooner by a later Update or Delete of this resource",
        ] {
            assert!(text.contains(part), "{part} in {text}");
        }
        let not = Keeping::NotKept {
            instance: "i-1".into(),
            what: "test instance",
            why: format!(
                "tagging it failed ({})",
                refused("ec2:CreateTags", "UnauthorizedOperation")
            ),
        };
        assert_eq!(not.kept_instance(), None);
        assert!(
            not.to_string()
                .starts_with("The test instance i-1 was not kept")
        );
    }

    #[test]
    fn ended_reports_each_instance() {
        let ended = Ended {
            terminated: vec!["Terminated instance i-1, kept until T".into()],
            refused: vec![(
                "i-2".into(),
                refused("ec2:TerminateInstances", "RequestLimitExceeded"),
            )],
        };
        let sentences = ended.sentences();
        assert_eq!(sentences[0], "Terminated instance i-1, kept until T");
        assert!(
            sentences[1]
                .starts_with("The instance i-2, kept for debugging, could not be terminated")
        );
        assert_eq!(sentences.len(), 2);
        assert!(Ended::default().sentences().is_empty());
    }
}
