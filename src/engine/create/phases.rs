//! One function per phase of a build. Each does one thing against AWS and returns the next phase
//! (now, or after a pause), or a [`BuildError`] saying what went wrong; [`Build::run`] does the
//! rest (lease, deadlines, hand-over, cleanup). What happens when a step fails: [`Build::await_step`].

use std::time::Duration;

use super::source::check_where_it_runs;
use super::{Build, Next, Phase, resolve, step_comment, step_number, test_comment, test_number};
use crate::aws::{
    Aws, Code, ContainerInstanceStatus, ImageRequest, ImageState, InstanceStateName, LaunchRequest,
    StepResult, StepStatus,
};
use crate::cfn::Identity;
use crate::engine::cleanup::{NotTerminated, launched_within, terminate_builder};
use crate::engine::copies::{self, CopiesPoll};
use crate::engine::failure::{BuildError, StepAt, StepEnd, tail};
use crate::engine::tags::{
    ROLE_TEST, TAG_IMAGE, TAG_ROLE, TAG_TEST_INSTANCE, TAG_TESTED_AT, TAG_TESTS_PASSED,
    client_token, identity_tags, image_tags, passed, test_client_token, with_passed,
};
use crate::engine::wait::{Poll, Wait, Watch, keep_waiting};
use crate::engine::{Timing, clock};
use crate::spec::{Step, script};

/// Whose steps a step phase runs: the build's on the builder, or the tests' on the test instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Build,
    Test,
}

impl Stage {
    fn awaiting(
        self,
        index: usize,
        command_id: String,
        waited: Duration,
        state_checked: Option<Duration>,
    ) -> Phase {
        match self {
            Stage::Build => Phase::AwaitStep {
                index,
                command_id,
                waited,
                state_checked,
            },
            Stage::Test => Phase::AwaitTest {
                index,
                command_id,
                waited,
                state_checked,
            },
        }
    }
}

impl Build {
    /// Runs the phase the build is in.
    pub(super) async fn advance(
        &mut self,
        aws: &Aws,
        identity: &Identity,
        timing: &Timing,
    ) -> Result<Next, BuildError> {
        match self.state.phase.clone() {
            Phase::Resolve => self.resolve_source(aws, identity).await,
            Phase::Launch => self.launch(aws, identity, timing).await,
            Phase::AwaitOnline {
                waited,
                state_checked,
            } => {
                self.await_online(aws, timing, Stage::Build, (waited, state_checked))
                    .await
            }
            Phase::StartStep { index } => self.start_step(aws, timing, Stage::Build, index).await,
            Phase::AwaitStep {
                index,
                command_id,
                waited,
                state_checked,
            } => {
                let at = (Stage::Build, index, command_id);
                self.await_step(aws, timing, at, (waited, state_checked))
                    .await
            }
            Phase::LaunchTest => self.launch_test(aws, identity, timing).await,
            Phase::AwaitTestOnline {
                waited,
                state_checked,
            } => {
                self.within_test_minutes()?;
                self.await_online(aws, timing, Stage::Test, (waited, state_checked))
                    .await
                    .map_err(of_test_instance)
            }
            Phase::StartTest { index } => {
                self.within_test_minutes()?;
                self.start_step(aws, timing, Stage::Test, index).await
            }
            Phase::AwaitTest {
                index,
                command_id,
                waited,
                state_checked,
            } => {
                self.within_test_minutes()?;
                let at = (Stage::Test, index, command_id);
                self.await_step(aws, timing, at, (waited, state_checked))
                    .await
                    .map_err(of_test_instance)
            }
            Phase::AwaitEcs { waited } => {
                self.within_test_minutes()?;
                self.await_ecs(aws, timing, waited).await
            }
            Phase::FinishTest => self.finish_test(aws, identity, timing).await,
            Phase::Stop => self.stop(aws, timing).await,
            Phase::AwaitStopped { waited } => self.await_stopped(aws, timing, waited).await,
            Phase::CreateImage => self.create_image(aws, identity, timing).await,
            Phase::AwaitImage { waited } => self.await_image(aws, timing, waited).await,
            Phase::TagSnapshots => self.tag_snapshots(aws, identity).await,
            Phase::Finish => self.finish(aws, timing).await,
            Phase::Copy => self.copy(aws, identity).await,
            Phase::AwaitCopies { waited } => self.await_copies(aws, timing, waited).await,
            Phase::Publish => self.publish(aws).await,
            Phase::Done => Ok(Next::Now(Phase::Done)),
        }
    }

    async fn resolve_source(&mut self, aws: &Aws, identity: &Identity) -> Result<Next, BuildError> {
        let resolved = resolve(aws, &self.spec, identity).await?;
        // Only a build launches: an Update in place or a rollback must not fail on a subnet
        // deleted since.
        check_where_it_runs(aws, &self.spec, &resolved).await?;
        self.state.resolved = Some(resolved);
        Ok(Next::Now(Phase::Launch))
    }

    async fn launch(
        &mut self,
        aws: &Aws,
        identity: &Identity,
        timing: &Timing,
    ) -> Result<Next, BuildError> {
        // A first holder of the lease has nothing to adopt (see `Build::fresh`).
        if !self.fresh
            && let Some(phase) = self.adopt(aws, identity).await?
        {
            return Ok(Next::Now(phase));
        }
        let resolved = self
            .state
            .resolved
            .as_ref()
            .expect("resolved before launch");
        let mut tags = identity_tags(identity);
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
        self.state.instance_id = Some(instance_id);
        self.state.launched_at_ms = Some(clock::now_ms());
        Ok(Next::After(
            timing.first_poll,
            Phase::AwaitOnline {
                waited: timing.first_poll,
                state_checked: None,
            },
        ))
    }

    /// Until SSM reports the builder (or the test instance) Online; then its first step.
    async fn await_online(
        &mut self,
        aws: &Aws,
        timing: &Timing,
        stage: Stage,
        (waited, mut state_checked): (Duration, Option<Duration>),
    ) -> Result<Next, BuildError> {
        let instance_id = self.instance_of(stage);
        if aws.instance_online(instance_id).await? {
            tracing::info!(
                instance_id,
                waited_s = waited.as_secs(),
                test = stage == Stage::Test,
                "instance is Online in SSM"
            );
            return Ok(Next::Now(match stage {
                Stage::Build => Phase::StartStep { index: 0 },
                Stage::Test => Phase::StartTest { index: 0 },
            }));
        }
        // An instance that dies while booting (capacity, a bad AMI) never comes Online.
        let watch = Watch {
            instance_id,
            expected: &[InstanceStateName::Pending, InstanceStateName::Running],
            step: None,
            state_checked: &mut state_checked,
            launched_at_ms: self.launched_at_of(stage),
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
        go_on(
            keep_waiting(aws, timing, wait, Some(watch)).await?,
            |waited| match stage {
                Stage::Build => Phase::AwaitOnline {
                    waited,
                    state_checked,
                },
                Stage::Test => Phase::AwaitTestOnline {
                    waited,
                    state_checked,
                },
            },
            || match stage {
                Stage::Build => BuildError::NeverOnline {
                    instance: instance_id.to_owned(),
                    timeout: timing.online_timeout,
                    profile: self.spec.iam_instance_profile.clone(),
                },
                Stage::Test => BuildError::TestNeverOnline {
                    instance: instance_id.to_owned(),
                    timeout: timing.online_timeout,
                    profile: test_profile.unwrap_or_else(|| self.spec.iam_instance_profile.clone()),
                },
            },
        )
    }

    async fn start_step(
        &mut self,
        aws: &Aws,
        timing: &Timing,
        stage: Stage,
        index: usize,
    ) -> Result<Next, BuildError> {
        let steps = self.steps_of(stage);
        let Some(step) = steps.get(index) else {
            let joins = self
                .spec
                .tests
                .as_ref()
                .is_some_and(|t| t.ecs_cluster.is_some());
            return Ok(Next::Now(match stage {
                Stage::Build => Phase::Stop,
                Stage::Test if joins => Phase::AwaitEcs {
                    waited: Duration::ZERO,
                },
                Stage::Test => Phase::FinishTest,
            }));
        };
        let instance = self.instance_of(stage);
        // A retried invocation may have sent this step already: follow that command rather than
        // run the step twice. (A first holder of the lease has sent nothing before.)
        let sent = if self.fresh {
            Vec::new()
        } else {
            aws.commands_sent_to(instance).await?
        };
        let numbered = |comment: &str| match stage {
            Stage::Build => step_number(comment),
            Stage::Test => test_number(comment),
        };
        if let Some((command_id, _)) = sent.iter().find(|(_, c)| numbered(c) == Some(index)) {
            tracing::info!(step = %step.name, command_id = %command_id, "step was already sent: following it");
            return Ok(Next::Now(stage.awaiting(
                index,
                command_id.clone(),
                Duration::ZERO,
                None,
            )));
        }
        let comment = match stage {
            Stage::Build => step_comment(index, steps.len(), &step.name),
            Stage::Test => test_comment(index, steps.len(), &step.name),
        };
        let command_id = aws
            .run_step(
                instance,
                &script::render(step),
                step.timeout_seconds,
                &comment,
            )
            .await?;
        tracing::info!(step = %step.name, number = index + 1, of = steps.len(), command_id = %command_id, test = stage == Stage::Test, "step started");
        Ok(Next::After(
            timing.min_poll,
            stage.awaiting(index, command_id, timing.min_poll, None),
        ))
    }

    /// The build's steps, or the tests'.
    fn steps_of(&self, stage: Stage) -> &[Step] {
        match stage {
            Stage::Build => &self.spec.steps,
            Stage::Test => {
                &self
                    .spec
                    .tests
                    .as_ref()
                    .expect("a test phase has tests")
                    .steps
            }
        }
    }

    /// The builder, or the test instance.
    fn instance_of(&self, stage: Stage) -> &str {
        match stage {
            Stage::Build => self.instance(),
            Stage::Test => self
                .state
                .test_instance_id
                .as_deref()
                .expect("launched before testing"),
        }
    }

    fn launched_at_of(&self, stage: Stage) -> Option<u64> {
        match stage {
            Stage::Build => self.state.launched_at_ms,
            Stage::Test => self.state.test_launched_at_ms,
        }
    }

    /// A step's command: still running (the builder must still run too, and the step must end
    /// within its TimeoutSeconds plus a grace), succeeded (its outputs are read), or failed (the
    /// build fails with [`BuildError::StepFailed`]: how it ended and the tails of its output;
    /// `Build::run` then cleans up).
    async fn await_step(
        &mut self,
        aws: &Aws,
        timing: &Timing,
        (stage, index, command_id): (Stage, usize, String),
        (waited, mut state_checked): (Duration, Option<Duration>),
    ) -> Result<Next, BuildError> {
        let steps = self.steps_of(stage);
        let step = &steps[index];
        let result = aws
            .step_result(&command_id, self.instance_of(stage))
            .await?;
        let at = StepAt {
            name: step.name.clone(),
            index,
            of: steps.len(),
            test: stage == Stage::Test,
        };
        match result.status {
            StepStatus::Running => {
                let instance_id = self.instance_of(stage);
                // Someone may stop or terminate the builder under a long step; SSM would only say
                // so when the step's timeout runs out.
                let watch = Watch {
                    instance_id,
                    expected: &[InstanceStateName::Running],
                    step: Some(at.clone()),
                    state_checked: &mut state_checked,
                    launched_at_ms: self.launched_at_of(stage),
                };
                // SSM enforces the step's own timeout; the grace covers delivery.
                let wait = Wait {
                    waited,
                    limit: Duration::from_secs(u64::from(step.timeout_seconds)) + timing.step_grace,
                    poll_at_most: timing.max_poll,
                };
                match keep_waiting(aws, timing, wait, Some(watch)).await? {
                    Poll::Again { pause, waited } => Ok(Next::After(
                        pause,
                        stage.awaiting(index, command_id, waited, state_checked),
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
                Ok(Next::Now(match stage {
                    Stage::Build => Phase::StartStep { index: index + 1 },
                    Stage::Test => Phase::StartTest { index: index + 1 },
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
                let booted_with_user_data = stage == Stage::Test
                    && self
                        .spec
                        .tests
                        .as_ref()
                        .is_some_and(|t| t.user_data.is_some());
                if booted_with_user_data
                    && let Ok(console) = aws.console_output(self.instance_of(stage)).await
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

    async fn stop(&mut self, aws: &Aws, timing: &Timing) -> Result<Next, BuildError> {
        match aws.stop_instance(self.instance()).await {
            Err(error) if error.is_not_found() && self.just_launched(timing) => {
                tracing::info!(
                    instance_id = self.instance(),
                    "EC2 does not know the builder yet: stopping again"
                );
                return Ok(Next::After(timing.min_poll, Phase::Stop));
            }
            sent => sent?,
        }
        tracing::info!(instance_id = self.instance(), "stopping the builder");
        Ok(Next::After(
            timing.first_poll,
            Phase::AwaitStopped {
                waited: timing.first_poll,
            },
        ))
    }

    async fn await_stopped(
        &mut self,
        aws: &Aws,
        timing: &Timing,
        waited: Duration,
    ) -> Result<Next, BuildError> {
        let instance_id = self.instance();
        let status = aws.instance_status(instance_id).await?;
        match status {
            Some(status) if status.state == InstanceStateName::Stopped => {
                // A volume detached under the build (only data volumes can be, while the builder
                // runs) would silently be missing from the image.
                let missing: Vec<String> = status
                    .root_device
                    .iter()
                    .chain(
                        self.spec
                            .block_device_mappings
                            .iter()
                            .map(|b| &b.device_name),
                    )
                    .filter(|device| !status.devices.contains(device))
                    .cloned()
                    .collect();
                if !missing.is_empty() {
                    return Err(BuildError::VolumeDetached {
                        instance: instance_id.to_owned(),
                        devices: missing,
                    });
                }
                Ok(Next::Now(Phase::CreateImage))
            }
            Some(status)
                if matches!(
                    status.state,
                    InstanceStateName::Stopping
                        | InstanceStateName::Running
                        | InstanceStateName::Pending
                ) =>
            {
                let wait = Wait {
                    waited,
                    limit: timing.stop_timeout,
                    poll_at_most: timing.max_poll,
                };
                go_on(
                    keep_waiting(aws, timing, wait, None).await?,
                    |waited| Phase::AwaitStopped { waited },
                    || BuildError::NeverStopped {
                        instance: instance_id.to_owned(),
                        timeout: timing.stop_timeout,
                    },
                )
            }
            other => Err(BuildError::NotStopping {
                instance: instance_id.to_owned(),
                state: other.map(|s| s.state),
            }),
        }
    }

    async fn create_image(
        &mut self,
        aws: &Aws,
        identity: &Identity,
        timing: &Timing,
    ) -> Result<Next, BuildError> {
        let resolved = self
            .state
            .resolved
            .as_ref()
            .expect("resolved before imaging");
        // A retried invocation may have requested the image already (not before a first holder
        // of the lease).
        let earlier = if self.fresh {
            None
        } else {
            aws.images_tagged(&identity_tags(identity))
                .await?
                .into_iter()
                .next()
        };
        if let Some(image) = earlier {
            tracing::info!(image_id = %image.id, "image was already requested: following it");
            self.state.image_id = Some(image.id);
            return Ok(Next::Now(Phase::AwaitImage {
                waited: Duration::ZERO,
            }));
        }
        let request = ImageRequest {
            instance_id: self.instance().to_owned(),
            name: self.state.image_name.clone(),
            description: self.spec.ami_description.clone(),
            block_devices: self.spec.block_device_mappings.clone(),
            tags: image_tags(identity, &self.spec, resolved, &self.state.outputs),
        };
        let image_id = match aws.create_image(&request).await {
            Ok(image_id) => image_id,
            // An earlier delivery's CreateImage went through, and the tag search above did not
            // list its image yet (eventual consistency): the name finds it.
            Err(error) if error.is(Code::ImageNameTaken) => {
                match aws.image_named(&request.name).await? {
                    Some(image)
                        if identity_tags(identity)
                            .iter()
                            .all(|(k, v)| image.tags.get(k) == Some(v)) =>
                    {
                        tracing::info!(image_id = %image.id, "image was already requested (found by name): following it");
                        image.id
                    }
                    _ => return Err(error.into()),
                }
            }
            Err(error) => return Err(error.into()),
        };
        tracing::info!(image_id = %image_id, name = %self.state.image_name, "image requested");
        self.state.image_id = Some(image_id);
        Ok(Next::After(
            timing.first_poll,
            Phase::AwaitImage {
                waited: timing.first_poll,
            },
        ))
    }

    async fn await_image(
        &mut self,
        aws: &Aws,
        timing: &Timing,
        waited: Duration,
    ) -> Result<Next, BuildError> {
        let image_id = self.state.image_id.clone().expect("image requested");
        match aws.describe_image(&image_id).await? {
            Some(image) if image.state == ImageState::Available => {
                tracing::info!(image_id = %image_id, snapshots = %image.snapshot_ids.join(","), "image available");
                self.state.snapshot_ids = image.snapshot_ids;
                Ok(Next::Now(Phase::TagSnapshots))
            }
            // Not listed yet, right after CreateImage: eventual consistency.
            image
                if image
                    .as_ref()
                    .is_none_or(|i| i.state == ImageState::Pending) =>
            {
                let wait = Wait {
                    waited,
                    limit: timing.image_timeout,
                    poll_at_most: timing.image_max_poll,
                };
                go_on(
                    keep_waiting(aws, timing, wait, None).await?,
                    |waited| Phase::AwaitImage { waited },
                    || BuildError::ImageNeverAvailable {
                        image: image_id,
                        timeout: timing.image_timeout,
                    },
                )
            }
            image => {
                let image = image.expect("a missing image is still pending");
                Err(BuildError::ImageFailed {
                    image: image_id,
                    state: image.state,
                    reason: image.state_reason,
                })
            }
        }
    }

    async fn tag_snapshots(&mut self, aws: &Aws, identity: &Identity) -> Result<Next, BuildError> {
        let resolved = self.state.resolved.as_ref().expect("resolved");
        let mut tags = image_tags(identity, &self.spec, resolved, &self.state.outputs);
        tags.insert(
            TAG_IMAGE.into(),
            self.state.image_id.clone().expect("image exists"),
        );
        aws.tag(&self.state.snapshot_ids, &tags).await?;
        if self.spec.deprecate_after_days.is_some()
            || !self.spec.launch_permissions.is_empty()
            || self.spec.imds_support.is_some()
        {
            // The deprecation counts from the image's CreationDate, as every later Update
            // counts it; the sharing covers the snapshots the image lists.
            let image_id = self.state.image_id.as_deref().expect("image exists");
            let Some(image) = aws.describe_image(image_id).await? else {
                return Err(BuildError::ImageFailed {
                    image: image_id.to_owned(),
                    state: "gone".into(),
                    reason: Some("it was available, then no longer listed".into()),
                });
            };
            if self.spec.imds_support.is_some() && image.imds_support.as_deref() != Some("v2.0") {
                aws.require_imds_v2(&image.id).await?;
            }
            crate::engine::sharing::distribute(aws, &image, &self.spec).await?;
        }
        Ok(Next::Now(Phase::Finish))
    }

    async fn finish(&mut self, aws: &Aws, timing: &Timing) -> Result<Next, BuildError> {
        // A build resumed after its builder was terminated has none left to terminate.
        if let Some(instance_id) = self.state.instance_id.clone() {
            let grace = if self.just_launched(timing) {
                timing.not_found_grace
            } else {
                Duration::ZERO
            };
            match terminate_builder(aws, &instance_id, grace).await {
                Ok(()) => tracing::info!(instance_id = %instance_id, "builder terminated"),
                // It was seen stopped moments ago; an image that is done is not thrown away
                // because EC2 does not list its builder right now.
                Err(problem @ NotTerminated::NotKnown { .. }) => {
                    tracing::warn!(instance_id = %instance_id, problem = %problem, "builder not confirmed terminated");
                }
                Err(problem) => return Err(BuildError::BuilderNotTerminated(problem)),
            }
        }
        // An image that passed these tests already (a delivery that crashed after them) is not
        // tested again.
        let image_id = self.state.image_id.clone().expect("image exists");
        match &self.spec.tests {
            Some(tests)
                if !aws
                    .describe_image(&image_id)
                    .await?
                    .is_some_and(|image| passed(&image, tests)) =>
            {
                Ok(Next::Now(Phase::LaunchTest))
            }
            Some(_) => {
                // Answered with when it passed them.
                if let Some(image) = aws.describe_image(&image_id).await? {
                    self.state.tested_at = image.tags.get(TAG_TESTED_AT).cloned();
                    self.state.test_instance_id = image.tags.get(TAG_TEST_INSTANCE).cloned();
                }
                Ok(Next::Now(self.after_tests()))
            }
            None => Ok(Next::Now(self.after_tests())),
        }
    }

    /// The copies, if the spec names regions; otherwise what comes after them.
    fn after_tests(&self) -> Phase {
        if self.spec.regions.is_empty() {
            self.after_copies()
        } else {
            Phase::Copy
        }
    }

    /// Launches the test instance from the image: where the builder ran, tagged as the build's
    /// (with `ecs-ami:role` `test`, so that a resumed build never takes it for the builder), with
    /// the tests' user data; a retried launch (same ClientToken) answers the same instance.
    async fn launch_test(
        &mut self,
        aws: &Aws,
        identity: &Identity,
        timing: &Timing,
    ) -> Result<Next, BuildError> {
        let tests = self.spec.tests.as_ref().expect("a test phase has tests");
        let image_id = self.state.image_id.clone().expect("image exists");
        let resolved = self.state.resolved.as_ref().expect("resolved");
        let instance_type = tests
            .instance_type
            .clone()
            .or_else(|| self.spec.instance_type.clone())
            .unwrap_or_else(|| {
                crate::engine::create::default_instance_type(&resolved.architecture).to_owned()
            });
        let mut tags = identity_tags(identity);
        tags.insert(TAG_ROLE.into(), ROLE_TEST.into());
        tags.insert(
            "Name".into(),
            format!(
                "ecs-ami test {}/{}",
                identity.stack_name(),
                identity.logical_id
            ),
        );
        // The image's own block device mappings, as a user's launch gets them, but every volume
        // deleted with the instance (the AMI may keep one a user wants kept). A device is named
        // without its snapshot: EC2 takes the rest of the mapping from the AMI, and a snapshot
        // named in RunInstances is authorized as a `snapshot` resource (optional in the Service
        // Authorization Reference for ec2:RunInstances), which the role does not grant.
        let device_snapshots = aws
            .describe_image(&image_id)
            .await?
            .map(|image| image.device_snapshots)
            .unwrap_or_default();
        let block_devices = self
            .spec
            .block_device_mappings
            .iter()
            .filter(|device| device_snapshots.contains_key(&device.device_name))
            .map(|device| crate::spec::BlockDevice {
                device_name: device.device_name.clone(),
                ebs: crate::spec::Ebs {
                    volume_size: None,
                    volume_type: None,
                    iops: None,
                    throughput: None,
                    encrypted: None,
                    kms_key_id: None,
                    delete_on_termination: Some(true),
                },
            })
            .collect();
        let mut request = LaunchRequest {
            image_id: image_id.clone(),
            instance_type,
            instance_profile: tests
                .iam_instance_profile
                .clone()
                .unwrap_or_else(|| self.spec.iam_instance_profile.clone()),
            subnet_id: self.spec.subnet_id.clone(),
            security_group_ids: self.spec.security_group_ids.clone(),
            block_devices,
            tags,
            client_token: test_client_token(identity, &image_id, &tests.digest()),
            user_data: tests.user_data.clone(),
        };
        let mut instance_id = aws.launch_builder(&request).await?;
        // EC2 answers a token with its instance for a long while, terminated or not: one that is
        // gone (a delivery that crashed after terminating it) gets a launch of its own.
        for _ in 0..2 {
            use InstanceStateName as S;
            let gone = matches!(
                aws.instance_state(&instance_id).await?,
                Some(S::Terminated | S::ShuttingDown | S::Stopping | S::Stopped)
            );
            if !gone {
                break;
            }
            request.client_token = test_client_token(
                identity,
                &image_id,
                &format!("{}|{instance_id}", tests.digest()),
            );
            instance_id = aws.launch_builder(&request).await?;
        }
        tracing::info!(instance_id = %instance_id, image_id = %image_id, "test instance launched");
        self.state.test_instance_id = Some(instance_id);
        if self.state.test_launched_at_ms.is_none() {
            self.state.test_launched_at_ms = Some(clock::now_ms());
        }
        Ok(Next::After(
            timing.first_poll,
            Phase::AwaitTestOnline {
                waited: timing.first_poll,
                state_checked: None,
            },
        ))
    }

    /// The test instance must be an ACTIVE container instance of the cluster with its agent
    /// connected; the wait lasts as long as SSM's Online may (the agent starts at boot, or when
    /// the user data starts it), within `Tests.TimeoutMinutes`.
    async fn await_ecs(
        &mut self,
        aws: &Aws,
        timing: &Timing,
        waited: Duration,
    ) -> Result<Next, BuildError> {
        let tests = self.spec.tests.as_ref().expect("a test phase has tests");
        let cluster = tests.ecs_cluster.clone().expect("a cluster to join");
        let instance_id = self.instance_of(Stage::Test).to_owned();
        let seen = aws.container_instance(&cluster, &instance_id).await?;
        if let Some(member) = &seen
            && member.status == ContainerInstanceStatus::Active
            && member.agent_connected
        {
            tracing::info!(instance_id = %instance_id, cluster = %cluster, container_instance = %member.arn, "test instance joined its ECS cluster");
            return Ok(Next::Now(Phase::FinishTest));
        }
        let said = match &seen {
            None => "not registered as a container instance".to_owned(),
            Some(member) => format!(
                "container instance {} is {} with its agent {}",
                member.arn,
                member.status,
                if member.agent_connected {
                    "connected"
                } else {
                    "disconnected"
                }
            ),
        };
        // Said as such, not as the tests' timeout, when Tests.TimeoutMinutes ends first.
        let left = (u64::from(tests.timeout_minutes) * 60_000).saturating_sub(
            clock::now_ms().saturating_sub(self.state.test_launched_at_ms.unwrap_or(0)),
        );
        let wait = Wait {
            waited,
            limit: timing
                .online_timeout
                .min(waited + Duration::from_millis(left).saturating_sub(timing.max_poll)),
            poll_at_most: timing.max_poll,
        };
        go_on(
            keep_waiting(aws, timing, wait, None).await?,
            |waited| Phase::AwaitEcs { waited },
            || BuildError::NotInCluster {
                instance: instance_id.clone(),
                cluster: cluster.clone(),
                waited,
                seen: said,
            },
        )
    }

    /// `Tests.TimeoutMinutes`, from the test instance's launch.
    fn within_test_minutes(&self) -> Result<(), BuildError> {
        let minutes = self
            .spec
            .tests
            .as_ref()
            .map_or(crate::spec::DEFAULT_TEST_MINUTES, |t| t.timeout_minutes);
        match self.state.test_launched_at_ms {
            Some(at) if clock::now_ms().saturating_sub(at) > u64::from(minutes) * 60_000 => {
                Err(BuildError::TestsTimedOut { minutes })
            }
            _ => Ok(()),
        }
    }

    /// The tests passed: the test instance goes, and the image records when it passed them.
    async fn finish_test(
        &mut self,
        aws: &Aws,
        identity: &Identity,
        timing: &Timing,
    ) -> Result<Next, BuildError> {
        let instance_id = self.instance_of(Stage::Test).to_owned();
        let grace = if launched_within(self.state.test_launched_at_ms, timing.not_found_grace) {
            timing.not_found_grace
        } else {
            Duration::ZERO
        };
        terminate_builder(aws, &instance_id, grace)
            .await
            .map_err(BuildError::BuilderNotTerminated)?;
        tracing::info!(instance_id = %instance_id, "test instance terminated");
        let tested_at = crate::engine::time::utc_iso();
        let image_id = self.state.image_id.clone().expect("image exists");
        let mut resources = vec![image_id];
        resources.extend(self.state.snapshot_ids.iter().cloned());
        let tests = self.spec.tests.as_ref().expect("a test phase has tests");
        let current = aws
            .describe_image(&resources[0])
            .await?
            .map(|image| image.tags)
            .unwrap_or_default();
        let tags = std::collections::BTreeMap::from([
            (TAG_TESTED_AT.to_owned(), tested_at.clone()),
            (TAG_TEST_INSTANCE.to_owned(), instance_id),
            (
                TAG_TESTS_PASSED.to_owned(),
                with_passed(&current, &tests.digest()),
            ),
        ]);
        aws.tag(&resources, &tags).await?;
        self.state.tested_at = Some(tested_at);
        let _ = identity;
        Ok(Next::Now(self.after_tests()))
    }

    /// Publishing, if the spec names parameters; otherwise the end.
    fn after_copies(&self) -> Phase {
        if self.spec.ssm_parameters.is_empty() && self.spec.copy_parameters.is_empty() {
            Phase::Done
        } else {
            Phase::Publish
        }
    }

    async fn copy(&mut self, aws: &Aws, identity: &Identity) -> Result<Next, BuildError> {
        let image_id = self.state.image_id.clone().expect("image exists");
        let Some(image) = aws.describe_image(&image_id).await? else {
            return Err(BuildError::ImageFailed {
                image: image_id,
                state: "gone".into(),
                reason: Some("it was available, then no longer listed".into()),
            });
        };
        let mut started = copies::Started {
            copies: std::mem::take(&mut self.state.copies),
            made: std::mem::take(&mut self.state.copies_made),
        };
        let result = copies::start(aws, identity, &image, &self.spec, &mut started).await;
        self.state.copies = started.copies;
        self.state.copies_made = started.made;
        result?;
        Ok(Next::Now(Phase::AwaitCopies {
            waited: Duration::ZERO,
        }))
    }

    /// Every copy is awaited at once; when all are available, each is distributed like the image.
    async fn await_copies(
        &mut self,
        aws: &Aws,
        timing: &Timing,
        waited: Duration,
    ) -> Result<Next, BuildError> {
        match copies::poll(aws, &self.state.copies).await? {
            CopiesPoll::Ready(ready) => {
                copies::distribute(aws, &ready, &self.spec).await?;
                let image_id = self.state.image_id.clone().expect("image exists");
                if let Some(image) = aws.describe_image(&image_id).await? {
                    let mut regions = copies::recorded_regions(&image);
                    regions.extend(self.state.copies.keys().cloned());
                    copies::record_regions(aws, &image, &regions).await?;
                }
                tracing::info!(copies = ?self.state.copies, "copies available");
                Ok(Next::Now(self.after_copies()))
            }
            CopiesPoll::Pending(regions) => {
                let wait = Wait {
                    waited,
                    limit: timing.image_timeout,
                    poll_at_most: timing.image_max_poll,
                };
                go_on(
                    keep_waiting(aws, timing, wait, None).await?,
                    |waited| Phase::AwaitCopies { waited },
                    || BuildError::CopiesNeverAvailable {
                        regions,
                        timeout: timing.image_timeout,
                    },
                )
            }
        }
    }

    async fn publish(&mut self, aws: &Aws) -> Result<Next, BuildError> {
        let image_id = self.state.image_id.as_deref().expect("image exists");
        crate::engine::publish::publish(aws, image_id, &self.spec.ssm_parameters).await?;
        crate::engine::update::publish_copies(
            aws,
            &self.state.copies,
            &self.spec.copy_parameters,
            true,
        )
        .await?;
        Ok(Next::Now(Phase::Done))
    }
}

/// The wait's "builder is not running" said of the test instance.
fn of_test_instance(error: BuildError) -> BuildError {
    match error {
        BuildError::BuilderNotRunning {
            instance,
            state,
            step,
            reason,
        } => BuildError::TestInstanceNotRunning {
            instance,
            state,
            step,
            reason,
        },
        other => other,
    }
}

/// A wait that goes on: the same phase, polled again after the pause; or its limit reached.
fn go_on(
    poll: Poll,
    phase: impl FnOnce(Duration) -> Phase,
    overdue: impl FnOnce() -> BuildError,
) -> Result<Next, BuildError> {
    match poll {
        Poll::Again { pause, waited } => Ok(Next::After(pause, phase(waited))),
        Poll::Overdue => Err(overdue()),
    }
}

/// How a step that did not succeed ended, as SSM and the step's wrapper script report it.
fn step_end(result: &StepResult, timeout_seconds: u32) -> StepEnd {
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
