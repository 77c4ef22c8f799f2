//! A re-delivered request (Lambda's retry after a crashed invocation, or a duplicate) finds what
//! an earlier delivery made, by the request's tags, and carries on from there.

use std::time::Duration;

use super::{Build, ImageMade, Launched, On, Origin, Phase, step_number};
use crate::aws::InstanceStateName;
use crate::engine::Context;
use crate::engine::failure::BuildError;
use crate::engine::tags::{TAG_ROLE, identity_tags, outputs_of};
use crate::spec::script;

impl Build {
    /// A re-delivered request (Lambda's retry after a crashed invocation, or a duplicate) finds
    /// what an earlier delivery created, by the request's tags, and carries on from there instead
    /// of launching a second builder. `None`: nothing to adopt, launch.
    pub(super) async fn adopt(&mut self, cx: &Context<'_>) -> Result<Option<Phase>, BuildError> {
        let aws = cx.aws;
        let tags = identity_tags(cx.identity);
        // The test instance is found again by its launch's ClientToken, never taken for the builder.
        let instances: Vec<_> = aws
            .instances_tagged(&tags)
            .await?
            .into_iter()
            .filter(|i| !i.tags.contains_key(TAG_ROLE))
            .collect();
        // The build began when its builder was launched, not when this delivery arrived:
        // TimeoutMinutes keeps counting from there.
        let first = instances.iter().filter_map(|i| i.launched_ms).min();
        if let Some(first) = first {
            self.state.started_at_ms = self.state.started_at_ms.min(first);
        }
        let live = instances.iter().find(|i| {
            !matches!(
                i.state,
                InstanceStateName::Terminated | InstanceStateName::ShuttingDown
            )
        });
        let found = live.map(|i| Launched {
            id: i.id.clone(),
            at_ms: i.launched_ms,
        });
        if let Some(image) = aws.images_tagged(&tags).await?.into_iter().next() {
            tracing::info!(image_id = %image.id, "resuming: this request's image already exists");
            self.state.outputs = outputs_of(&image);
            self.state.image = Some(ImageMade {
                id: image.id,
                snapshot_ids: Vec::new(),
                origin: Origin::Built,
            });
            self.state.image_name = image.name;
            self.state.builder = found;
            return Ok(Some(Phase::AwaitImage {
                waited: Duration::ZERO,
            }));
        }
        let Some(builder) = live else {
            return Ok(None);
        };
        tracing::info!(instance_id = %builder.id, state = %builder.state, "resuming: this request's builder already exists");
        self.state.builder = found;
        let stopping = matches!(
            builder.state,
            InstanceStateName::Stopping | InstanceStateName::Stopped
        );
        let sent = if !stopping || self.spec.steps.iter().any(|s| !s.outputs.is_empty()) {
            aws.commands_sent_to(&builder.id).await?
        } else {
            Vec::new()
        };
        let resume = if stopping {
            Phase::AwaitStopped {
                waited: Duration::ZERO,
            }
        } else {
            // StartStep finds the steps already sent; the earlier ones succeeded, or the build
            // would have failed on them.
            match sent.iter().filter_map(|(_, c)| step_number(c)).max() {
                Some(index) => Phase::StartStep {
                    on: On::Builder,
                    index,
                },
                None => Phase::AwaitOnline {
                    on: On::Builder,
                    waited: Duration::ZERO,
                    state_checked: None,
                },
            }
        };
        // The outputs of the steps before the one resumed at (all of them, once stopping).
        let finished = match &resume {
            Phase::StartStep { index, .. } => *index,
            Phase::AwaitStopped { .. } => self.spec.steps.len(),
            _ => 0,
        };
        for (index, step) in self.spec.steps.iter().enumerate().take(finished) {
            if step.outputs.is_empty() {
                continue;
            }
            let Some((command_id, _)) = sent.iter().find(|(_, c)| step_number(c) == Some(index))
            else {
                return Err(BuildError::ResumedOutputsLost {
                    name: step.name.clone(),
                });
            };
            let result = aws.step_result(command_id, &builder.id).await?;
            let outputs = script::read_outputs(step, &result.stdout).map_err(|problem| {
                BuildError::ResumedOutputsUnreadable {
                    name: step.name.clone(),
                    problem,
                }
            })?;
            self.state.outputs.extend(outputs);
        }
        Ok(Some(resume))
    }
}
