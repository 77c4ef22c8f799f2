//! `ecs-ami watch`: where a deployed build stands, read from what AWS already holds and never
//! from a record of its own: the build's lease and its request's record (Parameter Store), the
//! builder's and test instance's tags and states (EC2), the images the request made (EC2), the
//! steps sent to each instance and how the last ones ended (Run Command). Every call is a read.
//!
//! The phase is worked out from those: the engine's own phase travels only in the hand-over
//! payload, which nobody else can read. Run Command gives a step's output only once the step has
//! ended (GetCommandInvocation's `StandardOutputContent` is empty until then), so the running
//! step shows how long it has run, and the last finished step its output's end.

use std::collections::BTreeMap;

use crate::aws::{Aws, AwsError, CommandSent, Instance, InstanceStateName};
use crate::cfn::{Identity, Status};
use crate::engine::kept::TAG_KEEP_UNTIL;
use crate::engine::tags::{
    ROLE_TEST, TAG_LOGICAL, TAG_REQUEST, TAG_ROLE, TAG_STACK, TAG_TIMEOUT_MINUTES, identity_tags,
};
use crate::engine::{lease, ledger, time};

/// Which build to follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A resource: its stack (the stack's ARN, or its name) and logical id.
    Resource { stack: String, logical_id: String },
    /// The resource that built this AMI.
    Image(String),
}

/// How the request followed stands in Parameter Store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// Its build holds a lease: in flight (or died, once the lease has run out).
    InFlight {
        generation: u32,
        expires_ms: u64,
    },
    Answered {
        status: Status,
        physical_id: String,
        reason: Option<String>,
        /// When the answer was recorded, on the [clock](time::now_ms).
        at_ms: u64,
    },
    Cancelled {
        by: String,
        at_ms: u64,
    },
    /// Neither a lease nor a record (not started yet, or the record swept after a day).
    Unknown,
}

/// A step (or test) sent to an instance, and how the last one ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepView {
    /// What the engine wrote in its comment: `ecs-ami step 2/3: install`.
    pub comment: String,
    pub status: String,
    pub sent_ms: Option<u64>,
    /// The end of its output, for the last step that ended.
    pub output_tail: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceView {
    pub id: String,
    /// `builder` or `test instance`.
    pub what: &'static str,
    pub state: String,
    pub launched_ms: Option<u64>,
    /// The build's `TimeoutMinutes`, from the instance's tag.
    pub timeout_minutes: Option<u32>,
    pub keep_until: Option<String>,
    pub steps: Vec<StepView>,
}

/// One look at a build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    pub stack_id: String,
    pub logical_id: String,
    /// The request followed: the one in flight, else the newest that left an instance or image.
    pub request_id: Option<String>,
    pub standing: Standing,
    pub instances: Vec<InstanceView>,
    /// The request's images (id, state).
    pub images: Vec<(String, String)>,
    pub now_ms: u64,
}

/// Why a look could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("{0}")]
    Aws(#[from] AwsError),
    #[error(
        "image {0} does not exist here, or carries no ecs-ami:stack-id and ecs-ami:logical-id tags"
    )]
    NotOurImage(String),
    #[error(
        "no build of {logical_id} in stack {stack} found: no instance or image carries its tags (give the stack's ARN to follow a build before its builder is launched)"
    )]
    NothingFound { stack: String, logical_id: String },
}

impl View {
    /// Whether the request has been answered or cancelled: there is nothing more to follow.
    pub fn is_over(&self) -> bool {
        self.over_at().is_some()
    }

    /// When the request was answered or cancelled, if it was.
    fn over_at(&self) -> Option<u64> {
        match self.standing {
            Standing::Answered { at_ms, .. } | Standing::Cancelled { at_ms, .. } => Some(at_ms),
            _ => None,
        }
    }

    /// The look without its clock (the time, the lease's expiry): two looks that differ only
    /// in time give the same text, so a log shows a look only when the build moved.
    pub fn changes_only(&self) -> String {
        let standing = match &self.standing {
            Standing::InFlight { generation, .. } => format!("in flight {generation}"),
            other => format!("{other:?}"),
        };
        let instances: Vec<String> = self
            .instances
            .iter()
            .map(|i| {
                let steps: Vec<String> = i
                    .steps
                    .iter()
                    .map(|s| format!("{} {} {:?}", s.comment, s.status, s.output_tail))
                    .collect();
                format!("{} {} {:?} {steps:?}", i.id, i.state, i.keep_until)
            })
            .collect();
        format!(
            "{} {:?} {standing} {instances:?} {:?}",
            self.phase(),
            self.request_id,
            self.images
        )
    }

    /// What the build is doing, worked out from what AWS holds.
    pub fn phase(&self) -> String {
        match &self.standing {
            Standing::Answered { status, .. } => return format!("answered {}", status.as_str()),
            Standing::Cancelled { by, .. } => return format!("cancelled by request {by}"),
            _ => {}
        }
        let live = |what: &str| {
            self.instances
                .iter()
                .rev()
                .find(|i| i.what == what && i.state != "terminated")
        };
        let running_step = |instance: &InstanceView| {
            instance
                .steps
                .iter()
                .rev()
                .find(|s| matches!(s.status.as_str(), "Pending" | "InProgress"))
                .map(|s| s.comment.trim_start_matches("ecs-ami ").to_owned())
        };
        if let Some(test) = live("test instance") {
            return match running_step(test) {
                Some(step) => format!("testing the image: {step}"),
                None => "testing the image: waiting for the test instance".to_owned(),
            };
        }
        if let Some(builder) = live("builder") {
            return match (builder.state.as_str(), running_step(builder)) {
                ("pending", _) => "launching the builder".to_owned(),
                ("running", Some(step)) => format!("running {step}"),
                ("running", None) if builder.steps.is_empty() => {
                    "waiting for SSM to report the builder Online".to_owned()
                }
                ("running", None)
                    if builder
                        .steps
                        .last()
                        .is_some_and(|s| crate::engine::create::is_last_step(&s.comment)) =>
                {
                    "the steps are done: stopping the builder".to_owned()
                }
                ("running", None) => "between steps".to_owned(),
                ("stopping" | "stopped", _) if self.images.is_empty() => {
                    "stopping the builder".to_owned()
                }
                _ => match self.images.last() {
                    Some((_, state)) if state != "pending" => {
                        format!("the image is {state}: removing the builder")
                    }
                    _ => "creating the image".to_owned(),
                },
            };
        }
        match self.images.last() {
            Some((_, state)) if state == "pending" => "creating the image".to_owned(),
            Some(_) => "distributing the image (copies, parameters) and answering".to_owned(),
            None if self.instances.is_empty() => {
                "resolving the source and launching the builder".to_owned()
            }
            None => "cleaning up".to_owned(),
        }
    }
}

fn utc(ms: u64) -> String {
    time::utc_iso_at_ms(ms)
}

/// `1h 02m 03s`, `4m 05s`, `6s`.
fn duration(ms: u64) -> String {
    let s = ms / 1000;
    match (s / 3600, s / 60 % 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m {s:02}s"),
        (h, m, s) => format!("{h}h {m:02}m {s:02}s"),
    }
}

impl std::fmt::Display for View {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let stack = self
            .stack_id
            .split_once(":stack/")
            .and_then(|(_, rest)| rest.split('/').next())
            .unwrap_or(&self.stack_id);
        writeln!(
            f,
            "{stack}/{} at {}: {}",
            self.logical_id,
            utc(self.now_ms),
            self.phase()
        )?;
        match &self.request_id {
            Some(request) => writeln!(f, "  request {request}")?,
            None => writeln!(f, "  no request found yet")?,
        }
        match &self.standing {
            Standing::InFlight {
                generation,
                expires_ms,
            } if *expires_ms >= self.now_ms => writeln!(
                f,
                "  in flight: lease generation {generation} ({} hand-overs or take-overs), held until {}",
                generation.saturating_sub(1),
                utc(*expires_ms)
            )?,
            Standing::InFlight { expires_ms, .. } => writeln!(
                f,
                "  the lease ran out at {}: the invocation holding it died; the resource's next request cleans up",
                utc(*expires_ms)
            )?,
            Standing::Answered {
                status,
                physical_id,
                reason,
                at_ms,
            } => {
                writeln!(
                    f,
                    "  answered {} with {physical_id} at {}",
                    status.as_str(),
                    utc(*at_ms)
                )?;
                if let Some(reason) = reason {
                    writeln!(f, "  reason: {reason}")?;
                }
            }
            Standing::Cancelled { by, .. } => writeln!(
                f,
                "  cancelled by request {by}: CloudFormation gave up on it, and it answers nothing"
            )?,
            Standing::Unknown => {}
        }
        // TimeoutMinutes counts from the build's start, a few seconds before its first launch.
        let started = self.instances.iter().filter_map(|i| i.launched_ms).min();
        let minutes = self.instances.iter().find_map(|i| i.timeout_minutes);
        if !self.is_over() {
            match (started, minutes) {
                (Some(at), Some(minutes)) => {
                    let end = at + u64::from(minutes) * 60_000;
                    writeln!(
                        f,
                        "  time: {} since the first launch; about {} left of TimeoutMinutes {minutes} (until about {})",
                        duration(self.now_ms.saturating_sub(at)),
                        duration(end.saturating_sub(self.now_ms)),
                        utc(end)
                    )?
                }
                (Some(at), None) => writeln!(
                    f,
                    "  time: {} since the first launch",
                    duration(self.now_ms.saturating_sub(at))
                )?,
                _ => {}
            }
        }
        for instance in &self.instances {
            write!(f, "  {} {}: {}", instance.what, instance.id, instance.state)?;
            if let Some(at) = instance.launched_ms {
                write!(f, ", launched {}", utc(at))?;
            }
            if let Some(until) = &instance.keep_until {
                write!(f, ", KEPT for debugging until {until}")?;
            }
            writeln!(f)?;
            for step in &instance.steps {
                let name = step.comment.trim_start_matches("ecs-ami ");
                match (step.status.as_str(), step.sent_ms) {
                    ("Pending" | "InProgress", Some(sent)) => writeln!(
                        f,
                        "    {name}: {} for {} (Run Command gives its output when it ends)",
                        step.status,
                        duration(self.now_ms.saturating_sub(sent))
                    )?,
                    (status, _) => writeln!(f, "    {name}: {status}")?,
                }
                if let Some(tail) = &step.output_tail {
                    for line in tail.lines() {
                        writeln!(f, "      | {line}")?;
                    }
                }
            }
        }
        for (image, state) in &self.images {
            writeln!(f, "  image {image}: {state}")?;
        }
        Ok(())
    }
}

/// How many of the last output lines the last finished step shows.
const TAIL_LINES: usize = 8;

/// The stack's ARN and the logical id `target` names, and the instances of the resource found
/// by their tags (every request's).
async fn resource_of(
    aws: &Aws,
    target: &Target,
) -> Result<(Option<String>, String, Vec<Instance>), WatchError> {
    let (stack, logical_id) = match target {
        Target::Resource { stack, logical_id } => (stack.clone(), logical_id.clone()),
        Target::Image(image) => {
            let found = aws
                .describe_image(image)
                .await?
                .ok_or_else(|| WatchError::NotOurImage(image.clone()))?;
            match (found.tags.get(TAG_STACK), found.tags.get(TAG_LOGICAL)) {
                (Some(stack), Some(logical)) => (stack.clone(), logical.clone()),
                _ => return Err(WatchError::NotOurImage(image.clone())),
            }
        }
    };
    let is_arn = stack.starts_with("arn:");
    // A stack's name: EC2's filter values take `*` wildcards.
    let stack_filter = if is_arn {
        stack.clone()
    } else {
        format!("arn:*:cloudformation:*:stack/{stack}/*")
    };
    let tags = BTreeMap::from([
        (TAG_STACK.to_owned(), stack_filter),
        (TAG_LOGICAL.to_owned(), logical_id.clone()),
    ]);
    let instances = aws.instances_with_tags(&tags, &[]).await?;
    let stack_id = if is_arn {
        Some(stack)
    } else {
        // By name, the stack of the newest instance: a deleted stack of the same name may have
        // left instances EC2 still lists.
        instances
            .iter()
            .max_by_key(|i| i.launched_ms)
            .and_then(|i| i.tags.get(TAG_STACK).cloned())
    };
    Ok((stack_id, logical_id, instances))
}

/// One look at the build `target` names.
pub async fn look(aws: &Aws, target: &Target) -> Result<View, WatchError> {
    look_again(aws, target, &mut Outputs::new()).await
}

/// The output's end of each command that ended, by command id: it no longer changes, so a
/// watch reads it once.
pub type Outputs = BTreeMap<String, Option<String>>;

/// [`look`], reading only the output of commands `outputs` does not hold yet.
pub async fn look_again(
    aws: &Aws,
    target: &Target,
    outputs: &mut Outputs,
) -> Result<View, WatchError> {
    let (stack_id, logical_id, instances) = resource_of(aws, target).await?;
    let Some(stack_id) = stack_id else {
        let stack = match target {
            Target::Resource { stack, .. } => stack.clone(),
            Target::Image(image) => image.clone(),
        };
        return Err(WatchError::NothingFound { stack, logical_id });
    };
    let resource = Identity {
        stack_id: stack_id.clone(),
        logical_id: logical_id.clone(),
        request_id: String::new(),
    };
    // The request in flight, else the one whose instance was launched last.
    let holders = lease::holders(aws, &resource).await?;
    let request_id = holders.first().map(|h| h.request_id.clone()).or_else(|| {
        instances
            .iter()
            .max_by_key(|i| i.launched_ms)
            .and_then(|i| i.tags.get(TAG_REQUEST).cloned())
    });
    let now_ms = time::now_ms();
    let Some(request_id) = request_id else {
        return Ok(View {
            stack_id,
            logical_id,
            request_id: None,
            standing: Standing::Unknown,
            instances: Vec::new(),
            images: Vec::new(),
            now_ms,
        });
    };
    let identity = Identity {
        request_id: request_id.clone(),
        ..resource
    };
    let standing = match ledger::read(aws, &identity).await? {
        Some(ledger::Record::Answered {
            status,
            physical_id,
            reason,
            at_ms,
        }) => Standing::Answered {
            status,
            physical_id,
            reason,
            at_ms,
        },
        Some(ledger::Record::Cancelled { by, at_ms }) => Standing::Cancelled { by, at_ms },
        None => {
            holders
                .iter()
                .find(|h| h.request_id == request_id)
                .map_or(Standing::Unknown, |h| Standing::InFlight {
                    generation: h.generation,
                    expires_ms: h.expires_ms,
                })
        }
    };
    let mut mine: Vec<Instance> = instances
        .into_iter()
        .filter(|i| i.tags.get(TAG_REQUEST) == Some(&request_id))
        .collect();
    mine.sort_by_key(|i| i.launched_ms);
    let mut views = Vec::new();
    for instance in mine {
        let steps = if instance.state == InstanceStateName::Terminated {
            Vec::new()
        } else {
            steps_on(aws, &instance.id, outputs).await?
        };
        views.push(InstanceView {
            what: if instance.tags.get(TAG_ROLE).map(String::as_str) == Some(ROLE_TEST) {
                "test instance"
            } else {
                "builder"
            },
            state: instance.state.as_str().to_owned(),
            launched_ms: instance.launched_ms,
            timeout_minutes: instance
                .tags
                .get(TAG_TIMEOUT_MINUTES)
                .and_then(|m| m.parse().ok()),
            keep_until: instance.tags.get(TAG_KEEP_UNTIL).cloned(),
            id: instance.id,
            steps,
        });
    }
    let images = aws
        .images_tagged(&identity_tags(&identity))
        .await?
        .into_iter()
        .map(|image| (image.id, image.state.as_str().to_owned()))
        .collect();
    Ok(View {
        stack_id,
        logical_id,
        request_id: Some(request_id),
        standing,
        instances: views,
        images,
        now_ms,
    })
}

/// How many looks in a row may fail (throttling, a network error) before the watch gives up.
pub const FAILED_LOOKS: u32 = 5;

/// Looks at the build every `every` until a request of the resource is answered or cancelled
/// at or after `since_ms` (an earlier request's answer is shown, and waited past: the request
/// just sent may not hold its lease yet), giving each look (or the error of one) to `frame`,
/// which answers `true` to stop there. Nothing found yet (the stack given by name, no instance
/// launched) and up to [`FAILED_LOOKS`] failed looks in a row are looked at again. Returns the
/// last look.
pub async fn follow(
    aws: &Aws,
    target: &Target,
    (every, since_ms): (std::time::Duration, u64),
    mut frame: impl FnMut(Result<&View, &WatchError>) -> bool,
) -> Result<View, WatchError> {
    let mut outputs = Outputs::new();
    let mut failed = 0;
    loop {
        match look_again(aws, target, &mut outputs).await {
            Ok(view) => {
                failed = 0;
                let stop = frame(Ok(&view));
                if stop || view.over_at().is_some_and(|at| at >= since_ms) {
                    return Ok(view);
                }
            }
            Err(error @ WatchError::NotOurImage(_)) => return Err(error),
            Err(error) => {
                if !matches!(error, WatchError::NothingFound { .. }) {
                    failed += 1;
                }
                if frame(Err(&error)) || failed >= FAILED_LOOKS {
                    return Err(error);
                }
            }
        }
        tokio::time::sleep(every).await;
    }
}

/// The engine's steps and tests sent to `instance`, the last one that ended with its output's
/// end (Run Command keeps the first 24,000 characters of each output, and gives none for a
/// command that timed out or was cancelled).
async fn steps_on(
    aws: &Aws,
    instance: &str,
    outputs: &mut Outputs,
) -> Result<Vec<StepView>, AwsError> {
    let sent: Vec<CommandSent> = aws
        .commands_on(instance)
        .await?
        .into_iter()
        .filter(|c| c.comment.starts_with("ecs-ami "))
        .collect();
    let last_ended = sent
        .iter()
        .rposition(|c| !matches!(c.status.as_str(), "Pending" | "InProgress"));
    let mut steps = Vec::new();
    for (index, command) in sent.into_iter().enumerate() {
        let output_tail = match outputs.get(&command.command_id) {
            _ if Some(index) != last_ended => None,
            Some(known) => known.clone(),
            None => {
                let result = aws.step_result(&command.command_id, instance).await?;
                let text = [result.stdout.trim_end(), result.stderr.trim_end()]
                    .iter()
                    .filter(|t| !t.is_empty())
                    .copied()
                    .collect::<Vec<_>>()
                    .join("\n");
                let tail = (!text.is_empty())
                    .then(|| crate::engine::failure::tail(&text, TAIL_LINES, 2_000));
                outputs.insert(command.command_id.clone(), tail.clone());
                tail
            }
        };
        steps.push(StepView {
            comment: command.comment,
            status: command.status,
            sent_ms: command.requested_ms,
            output_tail,
        });
    }
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(instances: Vec<InstanceView>, images: Vec<(&str, &str)>, standing: Standing) -> View {
        View {
            stack_id: "arn:aws:cloudformation:us-east-1:123456789012:stack/nodes/guid".into(),
            logical_id: "Ami".into(),
            request_id: Some("req-1".into()),
            standing,
            instances,
            images: images
                .into_iter()
                .map(|(i, s)| (i.to_owned(), s.to_owned()))
                .collect(),
            now_ms: 1_795_596_000_000,
        }
    }

    fn instance(what: &'static str, state: &str, steps: &[(&str, &str)]) -> InstanceView {
        InstanceView {
            id: format!("i-{}", what.len()),
            what,
            state: state.into(),
            launched_ms: Some(1_795_595_400_000),
            timeout_minutes: Some(55),
            keep_until: None,
            steps: steps
                .iter()
                .map(|(comment, status)| StepView {
                    comment: (*comment).into(),
                    status: (*status).into(),
                    sent_ms: Some(1_795_595_700_000),
                    output_tail: None,
                })
                .collect(),
        }
    }

    const IN_FLIGHT: Standing = Standing::InFlight {
        generation: 3,
        expires_ms: 1_795_596_060_000,
    };

    #[test]
    fn the_phase_follows_what_aws_holds() {
        let phase = |instances, images| view(instances, images, IN_FLIGHT).phase();
        assert_eq!(
            phase(vec![], vec![]),
            "resolving the source and launching the builder"
        );
        assert_eq!(
            phase(vec![instance("builder", "running", &[])], vec![]),
            "waiting for SSM to report the builder Online"
        );
        assert_eq!(
            phase(
                vec![instance(
                    "builder",
                    "running",
                    &[
                        ("ecs-ami step 1/2: update", "Success"),
                        ("ecs-ami step 2/2: install", "InProgress")
                    ]
                )],
                vec![]
            ),
            "running step 2/2: install"
        );
        assert_eq!(
            phase(
                vec![instance(
                    "builder",
                    "running",
                    &[("ecs-ami step 1/2: update", "Success")]
                )],
                vec![]
            ),
            "between steps"
        );
        assert_eq!(
            phase(
                vec![instance(
                    "builder",
                    "running",
                    &[("ecs-ami step 2/2: install", "Success")]
                )],
                vec![]
            ),
            "the steps are done: stopping the builder"
        );
        assert_eq!(
            phase(vec![instance("builder", "stopping", &[])], vec![]),
            "stopping the builder"
        );
        assert_eq!(
            phase(
                vec![instance("builder", "terminated", &[])],
                vec![("ami-1", "pending")]
            ),
            "creating the image"
        );
        assert_eq!(
            phase(
                vec![
                    instance("builder", "terminated", &[]),
                    instance(
                        "test instance",
                        "running",
                        &[("ecs-ami test 1/1: health", "InProgress")]
                    )
                ],
                vec![("ami-1", "available")]
            ),
            "testing the image: test 1/1: health"
        );
        assert_eq!(
            phase(
                vec![instance("builder", "terminated", &[])],
                vec![("ami-1", "available")]
            ),
            "distributing the image (copies, parameters) and answering"
        );
        let answered = view(
            vec![],
            vec![],
            Standing::Answered {
                status: Status::Failed,
                physical_id: "ecs-ami-not-built-1".into(),
                reason: Some("failed while running a step".into()),
                at_ms: 1_795_596_000_000,
            },
        );
        assert!(answered.is_over());
        assert_eq!(answered.phase(), "answered FAILED");
        assert!(!view(vec![], vec![], IN_FLIGHT).is_over());
    }

    #[test]
    fn the_view_shows_time_spent_and_left_and_the_running_step() {
        let text = view(
            vec![instance(
                "builder",
                "running",
                &[("ecs-ami step 1/1: install", "InProgress")],
            )],
            vec![],
            IN_FLIGHT,
        )
        .to_string();
        for part in [
            "nodes/Ami at 2026-11-25T08:40:00Z: running step 1/1: install",
            "request req-1",
            "lease generation 3 (2 hand-overs or take-overs), held until 2026-11-25T08:41:00Z",
            "time: 10m 00s since the first launch; about 45m 00s left of TimeoutMinutes 55 (until about 2026-11-25T09:25:00Z)",
            "builder i-7: running, launched 2026-11-25T08:30:00Z",
            "step 1/1: install: InProgress for 5m 00s",
        ] {
            assert!(text.contains(part), "{part}\n{text}");
        }
        assert_eq!(duration(3_723_000), "1h 02m 03s");
        assert_eq!(duration(6_000), "6s");
    }
}
