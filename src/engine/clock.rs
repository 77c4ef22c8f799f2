//! Milliseconds since the Unix epoch that advance with tokio's clock.
//!
//! A build spans invocations (and processes), so its start time must be a wall-clock value that
//! can be saved. Reading it through tokio's clock keeps it consistent with every sleep and poll
//! interval: in tests on a paused clock, a simulated 40-minute build sees 40 minutes pass.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

static ANCHOR: OnceLock<(u64, std::time::Instant)> = OnceLock::new();

pub fn now_ms() -> u64 {
    let (epoch_ms, instant) = *ANCHOR.get_or_init(|| {
        let epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        (epoch, std::time::Instant::now())
    });
    let elapsed = tokio::time::Instant::now()
        .into_std()
        .saturating_duration_since(instant);
    epoch_ms + elapsed.as_millis() as u64
}
