//! Distribution: the copies in other `Regions`, then the AMI's id published to `SsmParameters`.

use std::time::Duration;

use super::again_or_overdue;
use crate::engine::Context;
use crate::engine::copies::{self, CopiesPoll};
use crate::engine::create::{Build, Next, Phase};
use crate::engine::failure::BuildError;
use crate::engine::wait::{Wait, keep_waiting};

impl Build {
    /// Publishing, if the spec names parameters; otherwise the end.
    pub(super) fn after_copies(&self) -> Phase {
        if self.spec.ssm_parameters.is_empty() && self.spec.copy_parameters.is_empty() {
            Phase::Done
        } else {
            Phase::Publish
        }
    }

    pub(super) async fn copy(&mut self, cx: &Context<'_>) -> Result<Next, BuildError> {
        let aws = cx.aws;
        let image_id = self.image()?.id.clone();
        let Some(image) = aws.describe_image(&image_id).await? else {
            return Err(BuildError::ImageFailed {
                image: image_id,
                state: "gone".into(),
                reason: Some("it was available, then no longer listed".into()),
            });
        };
        copies::start(aws, cx.identity, &image, &self.spec, &mut self.state.copies).await?;
        Ok(Next::Run(Phase::AwaitCopies {
            waited: Duration::ZERO,
        }))
    }

    /// Every copy is awaited at once; when all are available, each is distributed like the image.
    pub(super) async fn await_copies(
        &mut self,
        cx: &Context<'_>,
        waited: Duration,
    ) -> Result<Next, BuildError> {
        let (aws, timing) = (cx.aws, cx.timing);
        match copies::poll(aws, &self.state.copies.copies).await? {
            CopiesPoll::Ready(ready) => {
                copies::distribute(aws, &ready, &self.spec).await?;
                if let Some(image) = aws.describe_image(&self.image()?.id).await? {
                    let mut regions = copies::recorded_regions(&image);
                    regions.extend(self.state.copies.copies.keys().cloned());
                    copies::record_regions(aws, &image, &regions).await?;
                }
                tracing::info!(copies = ?self.state.copies.copies, "copies available");
                Ok(Next::Run(self.after_copies()))
            }
            CopiesPoll::Pending(regions) => {
                let wait = Wait {
                    waited,
                    limit: timing.image_timeout,
                    poll_at_most: timing.image_max_poll,
                };
                again_or_overdue(
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

    pub(super) async fn publish(&mut self, cx: &Context<'_>) -> Result<Next, BuildError> {
        let aws = cx.aws;
        crate::engine::publish::publish(aws, &self.image()?.id, &self.spec.ssm_parameters).await?;
        crate::engine::publish::publish_copies(
            aws,
            &self.state.copies.copies,
            &self.spec.copy_parameters,
            true,
        )
        .await?;
        Ok(Next::Run(Phase::Done))
    }
}
