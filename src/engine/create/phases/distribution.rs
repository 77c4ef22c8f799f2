//! Distribution: the copies in other `Regions`, then the AMI's id published to `SsmParameters`.

use std::time::Duration;

use super::again_or_overdue;
use crate::aws::Aws;
use crate::cfn::Identity;
use crate::engine::Timing;
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

    pub(super) async fn copy(
        &mut self,
        aws: &Aws,
        identity: &Identity,
    ) -> Result<Next, BuildError> {
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
        Ok(Next::Run(Phase::AwaitCopies {
            waited: Duration::ZERO,
        }))
    }

    /// Every copy is awaited at once; when all are available, each is distributed like the image.
    pub(super) async fn await_copies(
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

    pub(super) async fn publish(&mut self, aws: &Aws) -> Result<Next, BuildError> {
        let image_id = self.state.image_id.as_deref().expect("image exists");
        crate::engine::publish::publish(aws, image_id, &self.spec.ssm_parameters).await?;
        crate::engine::publish::publish_copies(
            aws,
            &self.state.copies,
            &self.spec.copy_parameters,
            true,
        )
        .await?;
        Ok(Next::Run(Phase::Done))
    }
}
