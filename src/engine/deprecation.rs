//! `DeprecateAfterDays`: the image is deprecated that many days after its creation
//! (EnableImageDeprecation), and kept so on every Update without rebuilding: a new number of days
//! moves the time, removing the property cancels the deprecation.
//!
//! EC2 rounds the time to the minute and refuses one in the past
//! (<https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_EnableImageDeprecation.html>): an
//! image already older than the days asked for is deprecated a minute from now, and one already
//! deprecated is left so.

use std::time::{Duration, SystemTime};

use aws_smithy_types::DateTime;

use crate::aws::{Aws, AwsError, Image};
use crate::spec::AmiSpec;

/// Closer than this to the wanted time counts as the same (EC2 keeps whole minutes).
const SAME: Duration = Duration::from_secs(60);
/// The soonest time EC2 takes, with room for the request's own delay.
const SOONEST: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    Keep,
    DeprecateAt(SystemTime),
    Cancel,
}

/// What the image's deprecation must become for `days` (`None`: not to be deprecated).
pub(crate) fn change(
    days: Option<u32>,
    created: Option<SystemTime>,
    current: Option<SystemTime>,
    now: SystemTime,
) -> Change {
    let Some(days) = days else {
        return if current.is_some() {
            Change::Cancel
        } else {
            Change::Keep
        };
    };
    let target = created.unwrap_or(now) + Duration::from_secs(u64::from(days) * 86_400);
    if target <= now {
        // Due already: deprecated it stays; otherwise as soon as EC2 allows.
        return match current {
            Some(at) if at <= now + SOONEST => Change::Keep,
            _ => Change::DeprecateAt(now + SOONEST),
        };
    }
    match current {
        Some(at) if distance(at, target) < SAME => Change::Keep,
        _ => Change::DeprecateAt(target),
    }
}

fn distance(a: SystemTime, b: SystemTime) -> Duration {
    a.duration_since(b)
        .or_else(|_| b.duration_since(a))
        .unwrap_or_default()
}

/// Brings the image's deprecation to what the spec asks for; no call when it already is.
pub(crate) async fn apply(aws: &Aws, image: &Image, spec: &AmiSpec) -> Result<(), AwsError> {
    let as_time = |at: Option<DateTime>| at.and_then(|at| SystemTime::try_from(at).ok());
    let change = change(
        spec.deprecate_after_days,
        as_time(image.created),
        as_time(image.deprecated_at),
        SystemTime::now(),
    );
    match change {
        Change::Keep => Ok(()),
        Change::Cancel => {
            tracing::info!(image_id = %image.id, "deprecation cancelled");
            aws.set_image_deprecation(&image.id, None).await
        }
        Change::DeprecateAt(at) => {
            let at = DateTime::from(at);
            tracing::info!(image_id = %image.id, deprecate_at = %at, "deprecation set");
            aws.set_image_deprecation(&image.id, Some(at)).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    fn at(days: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000) + DAY * days as u32
    }

    #[test]
    fn the_deprecation_follows_the_days_from_the_creation() {
        let created = Some(at(0));
        let now = at(1);
        assert_eq!(
            change(Some(30), created, None, now),
            Change::DeprecateAt(at(30))
        );
        // Already at the time (to the minute EC2 keeps): nothing to do.
        let rounded = at(30) + Duration::from_secs(29);
        assert_eq!(change(Some(30), created, Some(rounded), now), Change::Keep);
        // Another number of days moves it; none cancels it; none and none is nothing.
        assert_eq!(
            change(Some(60), created, Some(at(30)), now),
            Change::DeprecateAt(at(60))
        );
        assert_eq!(change(None, created, Some(at(30)), now), Change::Cancel);
        assert_eq!(change(None, created, None, now), Change::Keep);
    }

    #[test]
    fn an_image_past_its_days_is_deprecated_as_soon_as_ec2_allows_and_then_left() {
        let created = Some(at(0));
        let now = at(10);
        // EC2 refuses a time in the past.
        assert_eq!(
            change(Some(5), created, None, now),
            Change::DeprecateAt(now + SOONEST)
        );
        assert_eq!(
            change(Some(5), created, Some(at(40)), now),
            Change::DeprecateAt(now + SOONEST)
        );
        // Deprecated already (or about to be): left as it is, not pushed later at every update.
        assert_eq!(change(Some(5), created, Some(at(5)), now), Change::Keep);
        assert_eq!(
            change(Some(5), created, Some(now + SOONEST), now),
            Change::Keep
        );
    }

    #[test]
    fn an_unreadable_creation_date_counts_from_now() {
        let now = at(3);
        assert_eq!(
            change(Some(7), None, None, now),
            Change::DeprecateAt(at(10))
        );
    }
}
