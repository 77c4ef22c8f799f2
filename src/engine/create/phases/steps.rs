//! The builder's launch, and the phases that work on an instance, the builder or the test
//! instance ([`On`]): waiting for SSM to report it Online, sending each step, awaiting each.

use std::borrow::Cow;
use std::time::Duration;

use super::again_or_overdue;
use crate::aws::{InstanceStateName, LaunchRequest, StepResult, StepStatus};
use crate::engine::Context;
use crate::engine::create::container_images;
use crate::engine::create::source::check_where_it_runs;
use crate::engine::create::{
    Build, Launched, Next, On, Phase, resolve, step_comment, step_number, test_comment, test_number,
};
use crate::engine::failure::{BuildError, StepAt, StepEnd, tail};
use crate::engine::tags::{TAG_TIMEOUT_MINUTES, client_token, identity_tags};
use crate::engine::time;
use crate::engine::wait::{Poll, Wait, Watch, keep_waiting};
use crate::spec::{MAX_STEP_TIMEOUT_SECONDS, Step, script};

impl Build {
    pub(super) async fn resolve_source(&mut self, cx: &Context<'_>) -> Result<Next, BuildError> {
        let resolved = resolve(cx.aws, &self.spec, cx.identity).await?;
        // Only a build launches: an Update in place or a rollback must not fail on a subnet
        // deleted since.
        check_where_it_runs(cx.aws, &self.spec, &resolved).await?;
        self.state.resolved = Some(resolved);
        Ok(Next::Run(Phase::Launch))
    }

    pub(super) async fn launch(&mut self, cx: &Context<'_>) -> Result<Next, BuildError> {
        let Context {
            aws,
            identity,
            timing,
        } = *cx;
        // A first holder of the lease has nothing to adopt (see `Build::fresh`).
        if !self.fresh
            && let Some(phase) = self.adopt(cx).await?
        {
            return Ok(Next::Run(phase));
        }
        let resolved = self.resolved()?;
        let mut tags = identity_tags(identity);
        tags.insert(
            TAG_TIMEOUT_MINUTES.into(),
            self.spec.timeout_minutes.to_string(),
        );
        tags.insert(
            "Name".into(),
            format!(
                "ecs-ami builder {}/{}",
                identity.stack_name(),
                identity.logical_id
            ),
        );
        let request = LaunchRequest {
            image_id: resolved.source_image.clone(),
            instance_type: resolved.instance_type.clone(),
            instance_profile: self.spec.iam_instance_profile.clone(),
            subnet_id: self.spec.subnet_id.clone(),
            security_group_ids: self.spec.security_group_ids.clone(),
            block_devices: self.spec.block_device_mappings.clone(),
            tags,
            client_token: client_token(identity),
            user_data: None,
        };
        let instance_id = aws.launch_builder(&request).await?;
        tracing::info!(instance_id = %instance_id, instance_type = %resolved.instance_type, source_image = %resolved.source_image, "builder launched");
        self.state.builder = Some(Launched {
            id: instance_id,
            at_ms: Some(time::now_ms()),
        });
        Ok(Next::Sleep(
            timing.first_poll,
            Phase::AwaitOnline {
                on: On::Builder,
                waited: timing.first_poll,
                state_checked: None,
            },
        ))
    }

    /// Until SSM reports the builder (or the test instance) Online; then its first step.
    pub(super) async fn await_online(
        &mut self,
        cx: &Context<'_>,
        on: On,
        waited: Duration,
        mut state_checked: Option<Duration>,
    ) -> Result<Next, BuildError> {
        let (aws, timing) = (cx.aws, cx.timing);
        let instance = self.instance_of(on)?;
        let instance_id = instance.id.as_str();
        if aws.instance_online(instance_id).await? {
            tracing::info!(
                instance_id,
                waited_s = waited.as_secs(),
                test = on == On::TestInstance,
                "instance is Online in SSM"
            );
            return Ok(Next::Run(Phase::StartStep { on, index: 0 }));
        }
        // An instance that dies while booting (capacity, a bad AMI) never comes Online.
        let watch = Watch {
            instance_id,
            expected: &[InstanceStateName::Pending, InstanceStateName::Running],
            step: None,
            state_checked: &mut state_checked,
            launched_at_ms: instance.at_ms,
        };
        let wait = Wait {
            waited,
            limit: timing.online_timeout,
            poll_at_most: timing.max_poll,
        };
        let test_profile = self
            .spec
            .tests
            .as_ref()
            .and_then(|t| t.iam_instance_profile.clone());
        again_or_overdue(
            keep_waiting(aws, timing, wait, Some(watch)).await?,
            |waited| Phase::AwaitOnline {
                on,
                waited,
                state_checked,
            },
            || match on {
                On::Builder => BuildError::NeverOnline {
                    instance: instance_id.to_owned(),
                    timeout: timing.online_timeout,
                    profile: self.spec.iam_instance_profile.clone(),
                },
                On::TestInstance => BuildError::TestNeverOnline {
                    instance: instance_id.to_owned(),
                    timeout: timing.online_timeout,
                    profile: test_profile.unwrap_or_else(|| self.spec.iam_instance_profile.clone()),
                },
            },
        )
    }

    pub(super) async fn start_step(
        &mut self,
        cx: &Context<'_>,
        on: On,
        index: usize,
    ) -> Result<Next, BuildError> {
        let (aws, timing) = (cx.aws, cx.timing);
        let steps = self.steps_of(on)?;
        let Some(step) = steps.get(index) else {
            let joins = self
                .spec
                .tests
                .as_ref()
                .is_some_and(|t| t.ecs_cluster.is_some());
            return Ok(Next::Run(match on {
                On::Builder => Phase::Stop,
                On::TestInstance if joins => Phase::AwaitEcs {
                    waited: Duration::ZERO,
                },
                On::TestInstance => Phase::FinishTest,
            }));
        };
        let instance = self.instance_of(on)?.id.as_str();
        // A retried invocation may have sent this step already: follow that command rather than
        // run the step twice. (A first holder of the lease has sent nothing before.)
        let sent = if self.fresh {
            Vec::new()
        } else {
            aws.commands_sent_to(instance).await?
        };
        let numbered = |comment: &str| match on {
            On::Builder => step_number(comment),
            On::TestInstance => test_number(comment),
        };
        if let Some((command_id, _)) = sent.iter().find(|(_, c)| numbered(c) == Some(index)) {
            tracing::info!(step = %step.name, command_id = %command_id, "step was already sent: following it");
            return Ok(Next::Run(Phase::AwaitStep {
                on,
                index,
                command_id: command_id.clone(),
                waited: Duration::ZERO,
                state_checked: None,
            }));
        }
        let comment = match on {
            On::Builder => step_comment(index, steps.len(), &step.name),
            On::TestInstance => test_comment(index, steps.len(), &step.name),
        };
        let command_id = aws
            .run_step(
                instance,
                &script::render(step),
                step.timeout_seconds,
                &comment,
            )
            .await?;
        tracing::info!(step = %step.name, number = index + 1, of = steps.len(), command_id = %command_id, test = on == On::TestInstance, "step started");
        Ok(Next::Sleep(
            timing.min_poll,
            Phase::AwaitStep {
                on,
                index,
                command_id,
                waited: timing.min_poll,
                state_checked: None,
            },
        ))
    }

    /// The build's steps (and the pull of `ContainerImages` after them), or the tests'.
    pub(super) fn steps_of(&self, on: On) -> Result<Cow<'_, [Step]>, BuildError> {
        match on {
            On::Builder => {
                let images = &self.resolved()?.container_images;
                if images.is_empty() {
                    return Ok(Cow::Borrowed(&self.spec.steps));
                }
                let mut steps = self.spec.steps.clone();
                steps.push(container_images::pull_step(
                    images,
                    MAX_STEP_TIMEOUT_SECONDS,
                ));
                Ok(Cow::Owned(steps))
            }
            On::TestInstance => Ok(Cow::Borrowed(&self.tests()?.steps)),
        }
    }

    /// The builder, or the test instance.
    pub(super) fn instance_of(&self, on: On) -> Result<&Launched, BuildError> {
        match on {
            On::Builder => self.builder(),
            On::TestInstance => self.test_instance(),
        }
    }

    /// A step's command: still running (the builder must still run too, and the step must end
    /// within its TimeoutSeconds plus a grace), succeeded (its outputs are read), or failed (the
    /// build fails with [`BuildError::StepFailed`]: how it ended and the tails of its output;
    /// `Build::run` then cleans up).
    pub(super) async fn await_step(
        &mut self,
        cx: &Context<'_>,
        StepSent {
            on,
            index,
            command_id,
        }: StepSent,
        waited: Duration,
        mut state_checked: Option<Duration>,
    ) -> Result<Next, BuildError> {
        let (aws, timing) = (cx.aws, cx.timing);
        let steps = self.steps_of(on)?;
        let step = crate::engine::create::made(steps.get(index), "step at this index")?;
        let instance = self.instance_of(on)?.clone();
        let result = aws.step_result(&command_id, &instance.id).await?;
        let at = StepAt {
            name: step.name.clone(),
            index,
            of: steps.len(),
            test: on == On::TestInstance,
        };
        match result.status {
            StepStatus::Running => {
                let instance_id = instance.id.as_str();
                // Someone may stop or terminate the builder under a long step; SSM would only say
                // so when the step's timeout runs out.
                let watch = Watch {
                    instance_id,
                    expected: &[InstanceStateName::Running],
                    step: Some(at.clone()),
                    state_checked: &mut state_checked,
                    launched_at_ms: instance.at_ms,
                };
                // SSM enforces the step's own timeout; the grace covers delivery.
                let wait = Wait {
                    waited,
                    limit: Duration::from_secs(u64::from(step.timeout_seconds)) + timing.step_grace,
                    poll_at_most: timing.max_poll,
                };
                match keep_waiting(aws, timing, wait, Some(watch)).await? {
                    Poll::Again { pause, waited } => Ok(Next::Sleep(
                        pause,
                        Phase::AwaitStep {
                            on,
                            index,
                            command_id,
                            waited,
                            state_checked,
                        },
                    )),
                    Poll::Overdue => Err(BuildError::StepOverdue {
                        step: at,
                        waited,
                        timeout_seconds: step.timeout_seconds,
                        agent: match aws.instance_online(instance_id).await {
                            Ok(true) => "SSM reports its agent Online",
                            Ok(false) => "SSM reports its agent not Online (it went offline?)",
                            Err(_) => "SSM's view of its agent is unknown",
                        },
                    }),
                }
            }
            StepStatus::Success => {
                tracing::info!(step = %step.name, status = "Success", stdout = %tail(&result.stdout, 20, 2000), "step finished");
                if !step.outputs.is_empty() {
                    let outputs =
                        script::read_outputs(step, &result.stdout).map_err(|problem| {
                            BuildError::StepOutputsUnreadable { step: at, problem }
                        })?;
                    tracing::info!(step = %step.name, outputs = %outputs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" "), "step outputs");
                    self.state.outputs.extend(outputs);
                }
                Ok(Next::Run(Phase::StartStep {
                    on,
                    index: index + 1,
                }))
            }
            StepStatus::Failed | StepStatus::TimedOut | StepStatus::Cancelled => {
                tracing::warn!(step = %step.name, status = ?result.status, exit_code = result.exit_code, stdout = %tail(&result.stdout, 20, 2000), stderr = %tail(&result.stderr, 20, 2000), "step failed");
                let failed = BuildError::StepFailed {
                    step: at,
                    end: step_end(&result, step.timeout_seconds),
                    stderr: result.stderr,
                    stdout: result.stdout,
                };
                let booted_with_user_data = on == On::TestInstance
                    && self
                        .spec
                        .tests
                        .as_ref()
                        .is_some_and(|t| t.user_data.is_some());
                if booted_with_user_data && let Ok(console) = aws.console_output(&instance.id).await
                {
                    return Err(BuildError::TestFailedAfterUserData {
                        failed: Box::new(failed),
                        console,
                    });
                }
                Err(failed)
            }
        }
    }
}

/// The step whose command [`Build::await_step`] awaits: which instance's, which step, and its
/// SSM command.
pub(super) struct StepSent {
    pub on: On,
    pub index: usize,
    pub command_id: String,
}

/// A wait's "builder is not running" said of the instance it is about.
pub(super) fn said_of(on: On, error: BuildError) -> BuildError {
    match error {
        BuildError::BuilderNotRunning {
            instance,
            state,
            step,
            reason,
        } if on == On::TestInstance => BuildError::TestInstanceNotRunning {
            instance,
            state,
            step,
            reason,
        },
        other => other,
    }
}

/// How a step that did not succeed ended, as SSM and the step's wrapper script report it.
pub(super) fn step_end(result: &StepResult, timeout_seconds: u32) -> StepEnd {
    match result.status {
        StepStatus::TimedOut => StepEnd::TimedOut { timeout_seconds },
        StepStatus::Cancelled => StepEnd::Cancelled,
        // The wrapper stopped it short of SSM's timeout, to show its end.
        _ if result.exit_code == 124
            && result.stderr.trim_end().ends_with(script::TIMEOUT_NOTE) =>
        {
            StepEnd::TimedOut { timeout_seconds }
        }
        _ => StepEnd::Exited {
            code: result.exit_code,
        },
    }
}
