//! The image a long build signalled (the EcsAmi macro's `X` resource): answered as the build
//! would have answered it, read from the image and its copies, building and changing nothing.

use crate::aws::{Aws, ImageState};
use crate::cfn::Identity;
use crate::engine::copies::answer_of;
use crate::engine::failure::{Failed, Failure, SignalledError};
use crate::engine::tags::owned_by;
use crate::engine::{Done, Progress};

/// The answer for `image_id`, which the wait condition's signal names: the resource's (its tags
/// name `identity`'s stack and logical id, which the build ran under), available, with its
/// attributes from its tags and the copies in `regions` and those its tags record. Fails, naming
/// why, rather than answer with an image the build did not make or that is not usable.
pub async fn signalled_image(
    aws: &Aws,
    identity: &Identity,
    image_id: &str,
    regions: &[String],
) -> Progress {
    match answer(aws, identity, image_id, regions).await {
        Ok(done) => Progress::Finished(done),
        Err(error) => Progress::Failed(Box::new(Failed {
            failure: Failure::Signalled(error),
            cleanup: None,
        })),
    }
}

async fn answer(
    aws: &Aws,
    identity: &Identity,
    image_id: &str,
    regions: &[String],
) -> Result<Done, SignalledError> {
    let image = aws
        .describe_image(image_id)
        .await
        .map_err(|error| SignalledError::Read {
            image: image_id.to_owned(),
            error,
        })?
        .ok_or_else(|| SignalledError::Gone {
            image: image_id.to_owned(),
        })?;
    if !owned_by(&image, identity) {
        return Err(SignalledError::NotOwned {
            image: image.id,
            resource: format!("{}/{}", identity.stack_name(), identity.logical_id),
        });
    }
    if image.state != ImageState::Available {
        return Err(SignalledError::NotAvailable {
            image: image.id,
            state: format!("{:?}", image.state),
        });
    }
    answer_of(aws, identity, &image, regions)
        .await
        .map_err(|error| SignalledError::Copies {
            image: image.id.clone(),
            error,
        })
}
