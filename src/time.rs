//! Time as the daemon keeps it: wall-clock microseconds since the Unix epoch.

use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch (wall clock).
pub type Micros = i64;

/// Wall-clock microseconds since the Unix epoch.
pub fn now_micros() -> Micros {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_micros()).unwrap_or(i64::MAX)
}

/// `secs` seconds in microseconds, saturating.
pub fn secs(secs: u64) -> Micros {
    i64::try_from(secs)
        .unwrap_or(i64::MAX)
        .saturating_mul(1_000_000)
}
