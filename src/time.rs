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

/// Where the authority reads the time: the wall clock in the daemon, a clock the test
/// moves by hand in the in-process tests.
pub trait Clock: Send + Sync {
    fn now(&self) -> Micros;
}

/// The wall clock ([`now_micros`]).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Micros {
        now_micros()
    }
}
