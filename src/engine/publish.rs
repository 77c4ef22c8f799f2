//! `SsmParameters`: the AMI's id published in Parameter Store parameters (data type
//! `aws:ec2:image`), kept in step by every Update, and removed by the Delete of the AMI they hold.
//!
//! Parameter Store validates an `aws:ec2:image` value after PutParameter has answered, and
//! neither creates nor updates the parameter when the value is refused
//! (<https://docs.aws.amazon.com/systems-manager/latest/userguide/parameter-store-ec2-aliases.html>),
//! and a parameter cannot change to or from that data type. So every name is checked first (it
//! can be read, and it is absent or already of that data type), before anything is written; each
//! write is then read back until the parameter holds the AMI. When a write is not taken, or
//! fails, each parameter written is put back, once its pending write has landed or is known not
//! to, to the value it held before (from its history), or removed if it had none; a build that
//! fails or is cancelled later does the same (`put_back_all`), so nothing is left resolving to an
//! image about to be removed.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::aws::{Aws, AwsError};
use crate::engine::failure::BuildError;

/// How long Parameter Store's validation is waited for, and how often a parameter is read back.
const CONFIRM_WITHIN: Duration = Duration::from_secs(45);
const CONFIRM_EVERY: Duration = Duration::from_secs(2);
/// The longest a publication takes, failing: its writes confirmed, then put back.
pub(crate) const LONGEST: Duration = Duration::from_secs(2 * 45 + 30);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    #[error("SsmParameters: {name} could not be written: {error}")]
    Write { name: String, error: AwsError },
    #[error(
        "SsmParameters: {name} has data type {data_type}: Parameter Store cannot change a parameter to aws:ec2:image (name another one, or delete it)"
    )]
    DataType { name: String, data_type: String },
    #[error(
        "SsmParameters: {name} did not take {image} within {} s (Parameter Store validates an aws:ec2:image value after answering, and keeps the old value when it refuses one)",
        CONFIRM_WITHIN.as_secs()
    )]
    NotTaken { name: String, image: String },
}

/// Makes every parameter in `names` hold `image`, and waits until each does. On failure, puts
/// back those it changed (see the module's documentation) before answering the error.
pub(crate) async fn publish(aws: &Aws, image: &str, names: &[String]) -> Result<(), PublishError> {
    let current = check_all(aws, names).await?;
    let mut written = Vec::new();
    let result = write_and_confirm(aws, image, &current, &mut written).await;
    if result.is_err() {
        let until = tokio::time::Instant::now() + CONFIRM_WITHIN;
        for (name, version) in &written {
            if let Err(error) = put_back(aws, image, name, *version, until).await {
                tracing::warn!(parameter = %name, error = %error, "could not put the parameter back");
            }
        }
    }
    result
}

/// Every name can be read and can take an `aws:ec2:image` value: found before anything is
/// written (a name outside the role's prefix is refused here, by GetParameter). Answers each
/// name with the value it holds.
async fn check_all<'n>(
    aws: &Aws,
    names: &'n [String],
) -> Result<Vec<(&'n String, Option<String>)>, PublishError> {
    let mut current = Vec::new();
    for name in names {
        let state = aws.parameter_state(name).await.map_err(write_error(name))?;
        if let Some(state) = &state
            && state.data_type != "aws:ec2:image"
        {
            return Err(PublishError::DataType {
                name: name.clone(),
                data_type: state.data_type.clone(),
            });
        }
        current.push((name, state.map(|s| s.value)));
    }
    Ok(current)
}

fn write_error(name: &str) -> impl FnOnce(AwsError) -> PublishError + '_ {
    move |error| PublishError::Write {
        name: name.to_owned(),
        error,
    }
}

/// Writes `image` to each parameter that does not hold it yet (`current`: each name with its
/// value, from [`check_all`]), then reads each back until it does.
async fn write_and_confirm(
    aws: &Aws,
    image: &str,
    current: &[(&String, Option<String>)],
    written: &mut Vec<(String, Written)>,
) -> Result<(), PublishError> {
    let mut pending = Vec::new();
    for (name, value) in current {
        if value.as_deref() == Some(image) {
            continue;
        }
        // Recorded before the call: a write that answers an error may still have been taken.
        written.push(((*name).clone(), Written::Unknown));
        let version = aws
            .put_image_parameter(name, image)
            .await
            .map_err(write_error(name))?;
        if let Some(last) = written.last_mut() {
            last.1 = Written::Version(version);
        }
        pending.push((*name).clone());
    }
    let until = tokio::time::Instant::now() + CONFIRM_WITHIN;
    while let Some(name) = pending.first().cloned() {
        let value = aws
            .parameter_if_exists(&name)
            .await
            .map_err(write_error(&name))?;
        if value.as_deref() == Some(image) {
            tracing::info!(parameter = %name, image_id = image, "parameter published");
            pending.remove(0);
        } else if tokio::time::Instant::now() >= until {
            return Err(PublishError::NotTaken {
                name,
                image: image.to_owned(),
            });
        } else {
            tokio::time::sleep(CONFIRM_EVERY).await;
        }
    }
    Ok(())
}

/// Puts back every parameter in `names` that holds `image` (a build that failed or was
/// cancelled after publishing, or a resumed one; a rollback's dropped names still holding the
/// rebuild it rolls back from); logs what it could not, so that the caller never fails on it.
pub(crate) async fn put_back_all(aws: &Aws, image: &str, names: &[String]) {
    let until = tokio::time::Instant::now() + CONFIRM_WITHIN;
    for name in names {
        if let Err(error) = put_back(aws, image, name, Written::Unknown, until).await {
            tracing::warn!(parameter = %name, error = %error, "could not put the parameter back");
        }
    }
}

/// What is known of a write of the image to a parameter that is to be put back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Written {
    /// PutParameter answered this version: it lands or is refused soon.
    Version(i64),
    /// It may have been sent (an error answer, a crash, another invocation): given a short grace
    /// to land.
    Unknown,
}

/// How long a write of unknown fate is given to land before the parameter is read.
const UNKNOWN_GRACE: Duration = Duration::from_secs(6);

/// The parameter back to the latest value it held other than `image`, or removed when it held
/// no other, or when that value is not taken back by `until` (an image since removed):
/// nothing is left naming `image`. Left alone when it does not hold `image`. A write of `image`
/// still being validated is waited for first (see [`Written`]), so that it cannot land after.
async fn put_back(
    aws: &Aws,
    image: &str,
    name: &str,
    written: Written,
    until: tokio::time::Instant,
) -> Result<(), AwsError> {
    let grace = tokio::time::Instant::now() + UNKNOWN_GRACE;
    loop {
        let state = aws.parameter_state(name).await?;
        let holds = state.as_ref().is_some_and(|s| s.value == image);
        let settled = match (&state, written) {
            (Some(state), Written::Version(version)) => state.version >= version,
            (None, Written::Version(_)) => false,
            (_, Written::Unknown) => holds || tokio::time::Instant::now() >= grace,
        };
        if settled || tokio::time::Instant::now() >= until {
            if !holds {
                return Ok(());
            }
            break;
        }
        tokio::time::sleep(CONFIRM_EVERY).await;
    }
    let history = aws.parameter_history(name).await?;
    let Some(previous) = history.iter().rev().find(|value| *value != image) else {
        return aws.delete_parameters(&[name.to_owned()]).await;
    };
    aws.put_image_parameter(name, previous).await?;
    // Validated like any other value: wait until it is taken. An image since removed is not:
    // then the parameter goes, rather than name the image about to be removed.
    while aws.parameter_if_exists(name).await?.as_deref() == Some(image) {
        if tokio::time::Instant::now() >= until {
            tracing::warn!(parameter = %name, previous = %previous, "the previous value was not taken back: parameter removed");
            return aws.delete_parameters(&[name.to_owned()]).await;
        }
        tokio::time::sleep(CONFIRM_EVERY).await;
    }
    Ok(())
}

/// Removes the parameters in `names` that still hold `image` (a Delete, or parameters an Update
/// no longer names); others are someone else's now and stay.
pub(crate) async fn unpublish(aws: &Aws, image: &str, names: &[String]) -> Result<(), AwsError> {
    for name in names {
        if aws.parameter_if_exists(name).await?.as_deref() == Some(image) {
            aws.delete_parameters(std::slice::from_ref(name)).await?;
            tracing::info!(parameter = %name, image_id = image, "parameter removed");
        }
    }
    Ok(())
}

/// Publishes (or, `put` false, unpublishes) each region's parameters with its copy's id.
pub(crate) async fn publish_copies(
    aws: &Aws,
    copies: &BTreeMap<String, String>,
    parameters: &BTreeMap<String, Vec<String>>,
    put: bool,
) -> Result<(), BuildError> {
    for (region, names) in parameters {
        let Some(copy) = copies.get(region) else {
            continue;
        };
        let there = aws.in_region(region);
        if put {
            publish(&there, copy, names)
                .await
                .map_err(|error| BuildError::PublishIn {
                    region: region.clone(),
                    error,
                })?;
        } else {
            unpublish(&there, copy, names)
                .await
                .map_err(|error| BuildError::InRegion {
                    region: region.clone(),
                    error,
                })?;
        }
    }
    Ok(())
}
