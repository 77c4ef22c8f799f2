//! Time, for the engine: the clock a build's times are read on ([`now_ms`]), the UTC stamps of
//! image names and tags ([`utc_iso`], [`utc_stamp`]), and how long each wait lasts ([`Timing`]).
//!
//! A build spans invocations (and processes), so its start time must be a wall-clock value that
//! can be saved. Reading it through tokio's clock keeps it consistent with every sleep and poll
//! interval: in tests on a paused clock, a simulated 40-minute build sees 40 minutes pass.

mod timing;

pub use timing::Timing;

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_smithy_types::DateTime;
use aws_smithy_types::date_time::Format;

static ANCHOR: OnceLock<(u64, std::time::Instant)> = OnceLock::new();

/// Milliseconds since the Unix epoch, advancing with tokio's clock.
pub fn now_ms() -> u64 {
    let (epoch_ms, instant) = *ANCHOR.get_or_init(|| {
        let epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        (epoch, std::time::Instant::now())
    });
    let elapsed = tokio::time::Instant::now()
        .into_std()
        .saturating_duration_since(instant);
    epoch_ms + u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
}

/// `YYYY-MM-DDTHH:MM:SSZ` for now (RFC 3339, whole seconds).
pub fn utc_iso() -> String {
    iso(DateTime::from(SystemTime::now()))
}

/// `YYYY-MM-DDTHH:MM:SSZ` for a time on the [clock](now_ms).
pub fn utc_iso_at_ms(ms: u64) -> String {
    iso(DateTime::from_millis(i64::try_from(ms).unwrap_or(i64::MAX)))
}

/// The time an RFC 3339 value (as [`utc_iso_at_ms`] writes it) names, in milliseconds since the
/// Unix epoch; `None` for anything else.
pub fn parse_utc_iso_ms(value: &str) -> Option<u64> {
    let at = DateTime::from_str(value, Format::DateTime).ok()?;
    u64::try_from(at.to_millis().ok()?).ok()
}

/// `YYYYMMDDTHHMMSSZ` for now.
pub fn utc_stamp() -> String {
    stamp(DateTime::from(SystemTime::now()))
}

/// RFC 3339 in whole seconds, as the SDK formats it.
fn iso(at: DateTime) -> String {
    DateTime::from_secs(at.secs())
        .fmt(Format::DateTime)
        .unwrap_or_default()
}

/// [`iso`] without its separators.
fn stamp(at: DateTime) -> String {
    iso(at).replace(['-', ':'], "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants_format_correctly() {
        for (seconds, iso_form, stamp_form) in [
            (0, "1970-01-01T00:00:00Z", "19700101T000000Z"),
            (951_782_400, "2000-02-29T00:00:00Z", "20000229T000000Z"),
            (1_795_595_400, "2026-11-25T08:30:00Z", "20261125T083000Z"),
            (4_102_444_799, "2099-12-31T23:59:59Z", "20991231T235959Z"),
        ] {
            let at = DateTime::from_fractional_secs(seconds, 0.75);
            assert_eq!(iso(at), iso_form);
            assert_eq!(stamp(at), stamp_form);
            let ms = seconds as u64 * 1000;
            assert_eq!(utc_iso_at_ms(ms + 999), iso_form);
            assert_eq!(parse_utc_iso_ms(iso_form), Some(ms));
        }
        for not_a_time in ["", "soon", "2026-13-01T00:00:00Z", "1795595400"] {
            assert_eq!(parse_utc_iso_ms(not_a_time), None, "{not_a_time}");
        }
    }
}
