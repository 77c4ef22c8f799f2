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
    check_all(aws, names).await?;
    let mut written = Vec::new();
    let result = write_and_confirm(aws, image, names, &mut written).await;
    if result.is_err() {
        let until = tokio::time::Instant::now() + CONFIRM_WITHIN;
        for (name, version) in &written {
            if let Err(error) = put_back(aws, image, name, Some(*version), until).await {
                tracing::warn!(parameter = %name, error = %error, "could not put the parameter back");
            }
        }
    }
    result
}

/// Every name can be read and can take an `aws:ec2:image` value: found before anything is
/// written (a name outside the role's prefix is refused here, by GetParameter).
async fn check_all(aws: &Aws, names: &[String]) -> Result<(), PublishError> {
    for name in names {
        let state = aws
            .parameter_state(name)
            .await
            .map_err(|error| PublishError::Write {
                name: name.clone(),
                error,
            })?;
        if let Some(state) = state
            && state.data_type != "aws:ec2:image"
        {
            return Err(PublishError::DataType {
                name: name.clone(),
                data_type: state.data_type,
            });
        }
    }
    Ok(())
}

async fn write_and_confirm(
    aws: &Aws,
    image: &str,
    names: &[String],
    written: &mut Vec<(String, i64)>,
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
        let version = aws
            .put_image_parameter(name, image)
            .await
            .map_err(|error| PublishError::Write {
                name: name.clone(),
                error,
            })?;
        written.push((name.clone(), version));
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

/// Puts back every parameter in `names` that holds `image` (a build that failed or was
/// cancelled after publishing, or a resumed one); logs what it could not.
pub(crate) async fn put_back_all(aws: &Aws, image: &str, names: &[String]) {
    let until = tokio::time::Instant::now() + CONFIRM_WITHIN;
    for name in names {
        if let Err(error) = put_back(aws, image, name, None, until).await {
            tracing::warn!(parameter = %name, error = %error, "could not put the parameter back");
        }
    }
}

/// The parameter back to the latest value it held other than `image`, or removed when it held
/// no other; left alone when it does not hold `image`. `written`: the version a write of
/// `image` will create if Parameter Store takes it, waited for (until `until`) so that a write
/// still being validated does not land after the parameter was put back.
async fn put_back(
    aws: &Aws,
    image: &str,
    name: &str,
    written: Option<i64>,
    until: tokio::time::Instant,
) -> Result<(), AwsError> {
    loop {
        let state = aws.parameter_state(name).await?;
        let landed = match (&state, written) {
            (_, None) => true,
            (Some(state), Some(version)) => state.version >= version,
            (None, Some(_)) => false,
        };
        if landed || tokio::time::Instant::now() >= until {
            if state.is_none_or(|s| s.value != image) {
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
    // Validated like any other value: wait until it is taken (an image since removed is not).
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

/// Puts back the parameters in `names` that hold `image`, an image this request did not answer
/// with (a rollback's dropped parameters still naming the rebuild it rolls back from).
pub(crate) async fn restore(aws: &Aws, image: &str, names: &[String]) -> Result<(), AwsError> {
    let until = tokio::time::Instant::now() + CONFIRM_WITHIN;
    for name in names {
        put_back(aws, image, name, None, until).await?;
    }
    Ok(())
}
