//! `Tests`: the test instance launched from the image, its membership of an ECS cluster, and
//! what the image records once it passed (its steps run as the build's do, in `steps.rs`).

use std::time::Duration;

use super::again_or_overdue;
use crate::aws::{ContainerInstanceStatus, InstanceStateName, LaunchRequest};
use crate::engine::Context;
use crate::engine::cleanup::{launched_within, terminate_builder};
use crate::engine::create::{Build, Launched, Next, On, Phase, Tested, made};
use crate::engine::failure::BuildError;
use crate::engine::tags::{
    ROLE_TEST, TAG_ROLE, TAG_TEST_INSTANCE, TAG_TESTED_AT, TAG_TESTS_PASSED, TAG_TIMEOUT_MINUTES,
    identity_tags, test_client_token, with_passed,
};
use crate::engine::time;
use crate::engine::wait::{Wait, keep_waiting};

impl Build {
    /// The copies, if the spec names regions; otherwise what comes after them.
    pub(super) fn after_tests(&self) -> Phase {
        if self.spec.regions.is_empty() {
            self.after_copies()
        } else {
            Phase::Copy
        }
    }

    /// Launches the test instance from the image: where the builder ran, tagged as the build's
    /// (with `ecs-ami:role` `test`, so that a resumed build never takes it for the builder), with
    /// the tests' user data; a retried launch (same ClientToken) answers the same instance.
    pub(super) async fn launch_test(&mut self, cx: &Context<'_>) -> Result<Next, BuildError> {
        let Context {
            aws,
            identity,
            timing,
        } = *cx;
        let tests = self.tests()?;
        let image_id = self.image()?.id.clone();
        let resolved = self.resolved()?;
        let instance_type = tests
            .instance_type
            .clone()
            .or_else(|| self.spec.instance_type.clone())
            .unwrap_or_else(|| {
                crate::engine::create::default_instance_type(&resolved.architecture).to_owned()
            });
        let mut tags = identity_tags(identity);
        tags.insert(
            TAG_TIMEOUT_MINUTES.into(),
            self.spec.timeout_minutes.to_string(),
        );
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
        // Tests.TimeoutMinutes counts from this launch. (A delivery retried after a crash launches
        // again and counts afresh; the build's own TimeoutMinutes still bounds it.)
        self.state.test_instance = Some(Launched {
            id: instance_id,
            at_ms: Some(time::now_ms()),
        });
        Ok(Next::Sleep(
            timing.first_poll,
            Phase::AwaitOnline {
                on: On::TestInstance,
                waited: timing.first_poll,
                state_checked: None,
            },
        ))
    }

    /// The test instance must be an ACTIVE container instance of the cluster with its agent
    /// connected; the wait lasts as long as SSM's Online may (the agent starts at boot, or when
    /// the user data starts it), within `Tests.TimeoutMinutes`.
    pub(super) async fn await_ecs(
        &mut self,
        cx: &Context<'_>,
        waited: Duration,
    ) -> Result<Next, BuildError> {
        let (aws, timing) = (cx.aws, cx.timing);
        let tests = self.tests()?;
        let cluster = made(tests.ecs_cluster.as_ref(), "Tests.EcsCluster")?.clone();
        let instance = self.test_instance()?;
        let instance_id = instance.id.clone();
        let launched_at_ms = instance.at_ms.unwrap_or(0);
        let seen = aws.container_instance(&cluster, &instance_id).await?;
        if let Some(member) = &seen
            && member.status == ContainerInstanceStatus::Active
            && member.agent_connected
        {
            tracing::info!(instance_id = %instance_id, cluster = %cluster, container_instance = %member.arn, "test instance joined its ECS cluster");
            return Ok(Next::Run(Phase::FinishTest));
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
        let left = (u64::from(tests.timeout_minutes) * 60_000)
            .saturating_sub(time::now_ms().saturating_sub(launched_at_ms));
        let wait = Wait {
            waited,
            limit: timing
                .online_timeout
                .min(waited + Duration::from_millis(left).saturating_sub(timing.max_poll)),
            poll_at_most: timing.max_poll,
        };
        again_or_overdue(
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

    /// The limits of the work on `on`: `Tests.TimeoutMinutes` on the test instance (the build's
    /// `TimeoutMinutes` is checked for every phase by `Build::run`).
    pub(super) fn within_limits(&self, on: On) -> Result<(), BuildError> {
        match on {
            On::Builder => Ok(()),
            On::TestInstance => self.within_test_minutes(),
        }
    }

    /// `Tests.TimeoutMinutes`, from the test instance's launch.
    pub(super) fn within_test_minutes(&self) -> Result<(), BuildError> {
        let minutes = self
            .spec
            .tests
            .as_ref()
            .map_or(crate::spec::DEFAULT_TEST_MINUTES, |t| t.timeout_minutes);
        match self.state.test_instance.as_ref().and_then(|t| t.at_ms) {
            Some(at) if time::now_ms().saturating_sub(at) > u64::from(minutes) * 60_000 => {
                Err(BuildError::TestsTimedOut { minutes })
            }
            _ => Ok(()),
        }
    }

    /// The tests passed: the test instance goes, and the image records when it passed them.
    pub(super) async fn finish_test(&mut self, cx: &Context<'_>) -> Result<Next, BuildError> {
        let (aws, timing) = (cx.aws, cx.timing);
        let instance = self.test_instance()?;
        let instance_id = instance.id.clone();
        let grace = if launched_within(instance.at_ms, timing.not_found_grace) {
            timing.not_found_grace
        } else {
            Duration::ZERO
        };
        terminate_builder(aws, &instance_id, grace)
            .await
            .map_err(BuildError::BuilderNotTerminated)?;
        tracing::info!(instance_id = %instance_id, "test instance terminated");
        let tested_at = crate::engine::time::utc_iso();
        let image = self.image()?;
        let mut resources = vec![image.id.clone()];
        resources.extend(image.snapshot_ids.iter().cloned());
        let tests = self.tests()?;
        let current = aws
            .describe_image(&resources[0])
            .await?
            .map(|image| image.tags)
            .unwrap_or_default();
        let tags = std::collections::BTreeMap::from([
            (TAG_TESTED_AT.to_owned(), tested_at.clone()),
            (TAG_TEST_INSTANCE.to_owned(), instance_id.clone()),
            (
                TAG_TESTS_PASSED.to_owned(),
                with_passed(&current, &tests.digest()),
            ),
        ]);
        aws.tag(&resources, &tags).await?;
        self.state.tested = Some(Tested {
            at: tested_at,
            instance: instance_id,
        });
        Ok(Next::Run(self.after_tests()))
    }
}
