//! From the last step to the image: stopping the builder, creating the image and awaiting it,
//! tagging its snapshots, terminating the builder.

use std::time::Duration;

use super::again_or_overdue;
use crate::aws::{Code, ImageRequest, ImageState, InstanceStateName};
use crate::engine::Context;
use crate::engine::cleanup::{NotTerminated, terminate_builder};
use crate::engine::create::{Build, ImageMade, Next, Origin, Phase, Tested};
use crate::engine::failure::BuildError;
use crate::engine::tags::{
    TAG_IMAGE, TAG_TEST_INSTANCE, TAG_TESTED_AT, identity_tags, image_tags, passed,
};
use crate::engine::wait::{Wait, keep_waiting};

impl Build {
    pub(super) async fn stop(&mut self, cx: &Context<'_>) -> Result<Next, BuildError> {
        let (aws, timing) = (cx.aws, cx.timing);
        let instance_id = self.builder()?.id.as_str();
        match aws.stop_instance(instance_id).await {
            Err(error) if error.is_not_found() && self.just_launched(timing) => {
                tracing::info!(
                    instance_id,
                    "EC2 does not know the builder yet: stopping again"
                );
                return Ok(Next::Sleep(timing.min_poll, Phase::Stop));
            }
            sent => sent?,
        }
        tracing::info!(instance_id, "stopping the builder");
        Ok(Next::Sleep(
            timing.first_poll,
            Phase::AwaitStopped {
                waited: timing.first_poll,
            },
        ))
    }

    pub(super) async fn await_stopped(
        &mut self,
        cx: &Context<'_>,
        waited: Duration,
    ) -> Result<Next, BuildError> {
        let (aws, timing) = (cx.aws, cx.timing);
        let instance_id = self.builder()?.id.as_str();
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
                Ok(Next::Run(Phase::CreateImage))
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
                again_or_overdue(
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

    pub(super) async fn create_image(&mut self, cx: &Context<'_>) -> Result<Next, BuildError> {
        let Context {
            aws,
            identity,
            timing,
        } = *cx;
        let resolved = self.resolved()?;
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
            self.state.image = Some(ImageMade {
                id: image.id,
                snapshot_ids: Vec::new(),
                origin: Origin::Built,
            });
            return Ok(Next::Run(Phase::AwaitImage {
                waited: Duration::ZERO,
            }));
        }
        let request = ImageRequest {
            instance_id: self.builder()?.id.clone(),
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
        self.state.image = Some(ImageMade {
            id: image_id,
            snapshot_ids: Vec::new(),
            origin: Origin::Built,
        });
        Ok(Next::Sleep(
            timing.first_poll,
            Phase::AwaitImage {
                waited: timing.first_poll,
            },
        ))
    }

    pub(super) async fn await_image(
        &mut self,
        cx: &Context<'_>,
        waited: Duration,
    ) -> Result<Next, BuildError> {
        let (aws, timing) = (cx.aws, cx.timing);
        let image_id = self.image()?.id.clone();
        match aws.describe_image(&image_id).await? {
            Some(image) if image.state == ImageState::Available => {
                tracing::info!(image_id = %image_id, snapshots = %image.snapshot_ids.join(","), "image available");
                if let Some(made) = &mut self.state.image {
                    made.snapshot_ids = image.snapshot_ids;
                }
                Ok(Next::Run(Phase::TagSnapshots))
            }
            Some(image) if image.state != ImageState::Pending => Err(BuildError::ImageFailed {
                image: image_id,
                state: image.state,
                reason: image.state_reason,
            }),
            // Pending, or not listed yet right after CreateImage (eventual consistency).
            _ => {
                let wait = Wait {
                    waited,
                    limit: timing.image_timeout,
                    poll_at_most: timing.image_max_poll,
                };
                again_or_overdue(
                    keep_waiting(aws, timing, wait, None).await?,
                    |waited| Phase::AwaitImage { waited },
                    || BuildError::ImageNeverAvailable {
                        image: image_id,
                        timeout: timing.image_timeout,
                    },
                )
            }
        }
    }

    pub(super) async fn tag_snapshots(&mut self, cx: &Context<'_>) -> Result<Next, BuildError> {
        let aws = cx.aws;
        let resolved = self.resolved()?;
        let made = self.image()?;
        let mut tags = image_tags(cx.identity, &self.spec, resolved, &self.state.outputs);
        tags.insert(TAG_IMAGE.into(), made.id.clone());
        aws.tag(&made.snapshot_ids, &tags).await?;
        if self.spec.deprecate_after_days.is_some()
            || !self.spec.launch_permissions.is_empty()
            || self.spec.imds_support.is_some()
        {
            // The deprecation counts from the image's CreationDate, as every later Update
            // counts it; the sharing covers the snapshots the image lists.
            let image_id = made.id.as_str();
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
        Ok(Next::Run(Phase::Finish))
    }

    pub(super) async fn finish(&mut self, cx: &Context<'_>) -> Result<Next, BuildError> {
        let (aws, timing) = (cx.aws, cx.timing);
        // A build resumed after its builder was terminated has none left to terminate.
        if let Some(instance_id) = self.state.builder.as_ref().map(|b| b.id.clone()) {
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
        let image_id = self.image()?.id.clone();
        match &self.spec.tests {
            Some(tests)
                if !aws
                    .describe_image(&image_id)
                    .await?
                    .is_some_and(|image| passed(&image, tests)) =>
            {
                Ok(Next::Run(Phase::LaunchTest))
            }
            Some(_) => {
                // Answered with when it passed them.
                if let Some(image) = aws.describe_image(&image_id).await? {
                    self.state.tested = image
                        .tags
                        .get(TAG_TESTED_AT)
                        .zip(image.tags.get(TAG_TEST_INSTANCE))
                        .map(|(at, instance)| Tested {
                            at: at.clone(),
                            instance: instance.clone(),
                        });
                }
                Ok(Next::Run(self.after_tests()))
            }
            None => Ok(Next::Run(self.after_tests())),
        }
    }
}
