//! `SsmParameters`: the AMI's id published in Parameter Store parameters (data type
//! `aws:ec2:image`), kept in step by every Update, and removed by the Delete of the AMI they hold.
//!
//! Parameter Store validates an `aws:ec2:image` value after PutParameter has answered, and
//! neither creates nor updates the parameter when the value is refused
//! (<https://docs.aws.amazon.com/systems-manager/latest/userguide/parameter-store-ec2-aliases.html>):
//! each write is read back until the parameter holds the AMI. When a write is not taken, or
//! fails, the parameters already written are put back to the value each held before (from
//! their history), or removed if they had none, so a failed build leaves no parameter pointing
//! at the image it is about to remove.

use std::time::Duration;

use crate::aws::{Aws, AwsError};

/// How long Parameter Store's validation is waited for, and how often a parameter is read back.
const CONFIRM_WITHIN: Duration = Duration::from_secs(45);
const CONFIRM_EVERY: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    #[error("SsmParameters: {name} could not be written: {error}")]
    Write { name: String, error: AwsError },
    #[error(
        "SsmParameters: {name} did not take {image} within {} s (Parameter Store validates an aws:ec2:image value after answering, and keeps the old value when it refuses one)",
        CONFIRM_WITHIN.as_secs()
    )]
    NotTaken { name: String, image: String },
}

/// Makes every parameter in `names` hold `image`, and waits until each does. On failure, puts
/// back those it changed (see the module's documentation) before answering the error.
pub(crate) async fn publish(aws: &Aws, image: &str, names: &[String]) -> Result<(), PublishError> {
    let mut written = Vec::new();
    let result = write_and_confirm(aws, image, names, &mut written).await;
    if result.is_err() {
        for name in &written {
            if let Err(error) = put_back(aws, image, name).await {
                tracing::warn!(parameter = %name, error = %error, "could not put the parameter back");
            }
        }
    }
    result
}

async fn write_and_confirm(
    aws: &Aws,
    image: &str,
    names: &[String],
    written: &mut Vec<String>,
) -> Result<(), PublishError> {
    let mut pending = Vec::new();
    for name in names {
        let current = aws
            .parameter_if_exists(name)
            .await
            .map_err(|error| PublishError::Write {
                name: name.clone(),
                error,
            })?;
        if current.as_deref() == Some(image) {
            continue;
        }
        written.push(name.clone());
        aws.put_image_parameter(name, image)
            .await
            .map_err(|error| PublishError::Write {
                name: name.clone(),
                error,
            })?;
        pending.push(name.clone());
    }
    let until = tokio::time::Instant::now() + CONFIRM_WITHIN;
    while let Some(name) = pending.first().cloned() {
        let value = aws
            .parameter_if_exists(&name)
            .await
            .map_err(|error| PublishError::Write {
                name: name.clone(),
                error,
            })?;
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

/// The parameter back to the latest value it held other than `image`, or removed when it held
/// no other; left alone when it no longer holds `image`.
async fn put_back(aws: &Aws, image: &str, name: &str) -> Result<(), AwsError> {
    if aws.parameter_if_exists(name).await?.as_deref() != Some(image) {
        return Ok(());
    }
    let history = aws.parameter_history(name).await?;
    let Some(previous) = history.iter().rev().find(|value| *value != image) else {
        return aws.delete_parameters(&[name.to_owned()]).await;
    };
    aws.put_image_parameter(name, previous).await?;
    // Validated like any other value: wait until it is taken (an image since removed is not).
    let until = tokio::time::Instant::now() + CONFIRM_WITHIN;
    while aws.parameter_if_exists(name).await?.as_deref() == Some(image) {
        if tokio::time::Instant::now() >= until {
            tracing::warn!(parameter = %name, previous = %previous, "the previous value was not taken back");
            break;
        }
        tokio::time::sleep(CONFIRM_EVERY).await;
    }
    Ok(())
}

/// Removes the parameters in `names` that still hold `image` (a Delete, or parameters an Update
/// no longer names); others are someone else's now and stay. Answers what it removed.
pub(crate) async fn unpublish(
    aws: &Aws,
    image: &str,
    names: &[String],
) -> Result<Vec<String>, AwsError> {
    let mut removed = Vec::new();
    for name in names {
        if aws.parameter_if_exists(name).await?.as_deref() == Some(image) {
            aws.delete_parameters(std::slice::from_ref(name)).await?;
            tracing::info!(parameter = %name, image_id = image, "parameter removed");
            removed.push(name.clone());
        }
    }
    Ok(removed)
}
