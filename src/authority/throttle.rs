//! Users who cause denials faster than `denial_rate` per second (after a burst of
//! `denial_burst`) have their calls slowed down. Every denial is still recorded, and each
//! record is an fsync under the audit lock, so without this one local user could keep the
//! disk and the lock busy for everybody. Root, admins and trusted callers are not slowed.
//!
//! The rate is a generic cell rate algorithm: each denial moves the user's theoretical
//! arrival time (`tat`) one interval into the future; a call waits until `tat` is no more
//! than the burst's worth of intervals ahead of now.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The longest a call waits (well under the usual 25 s D-Bus reply timeout); a user who
/// overdid it is forgiven after at most this long without denials.
pub const MAX_WAIT: Duration = Duration::from_secs(10);

/// Past this many tracked users, those with nothing owed are forgotten.
const TRACKED: usize = 4096;

pub struct Throttle {
    /// Time per denial at the sustained rate; `None` when there is no limit.
    interval: Option<Duration>,
    /// How far ahead `tat` may be before calls wait: the burst.
    tolerance: Duration,
    users: Mutex<HashMap<u32, User>>,
}

struct User {
    /// The theoretical arrival time of the next denial.
    tat: Instant,
    /// Slowed down since `tat` was last in the past (its whole burst back).
    slowed: bool,
}

impl Throttle {
    /// `rate` denials per second after a burst of `burst`; a `rate` of 0 means no limit.
    pub fn new(rate: u32, burst: u32) -> Self {
        let interval = (rate > 0).then(|| Duration::from_secs(1) / rate);
        Throttle {
            interval,
            tolerance: interval.map_or(Duration::ZERO, |i| i * burst.max(1)),
            users: Mutex::new(HashMap::new()),
        }
    }

    /// How long a call under `key` waits before it is served (usually zero).
    pub fn delay(&self, key: u32, now: Instant) -> Duration {
        if self.interval.is_none() {
            return Duration::ZERO;
        }
        let users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        users.get(&key).map_or(Duration::ZERO, |user| {
            user.tat.saturating_duration_since(now + self.tolerance)
        })
    }

    /// Counts a denial under `key`; true if it is what starts slowing the user down
    /// (again only once the user has had its whole burst back).
    pub fn denied(&self, key: u32, now: Instant) -> bool {
        let Some(interval) = self.interval else {
            return false;
        };
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        if users.len() >= TRACKED {
            users.retain(|_, user| user.tat > now);
        }
        let user = users.entry(key).or_insert(User {
            tat: now,
            slowed: false,
        });
        if user.tat <= now {
            user.slowed = false;
        }
        user.tat = (user.tat.max(now) + interval).min(now + self.tolerance + MAX_WAIT);
        let starts = !user.slowed && user.tat > now + self.tolerance;
        user.slowed |= starts;
        starts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_free_and_then_calls_wait_one_interval_per_denial() {
        let throttle = Throttle::new(10, 3);
        let now = Instant::now();
        for _ in 0..3 {
            assert!(!throttle.denied(7, now));
            assert_eq!(throttle.delay(7, now), Duration::ZERO);
        }
        assert!(throttle.denied(7, now), "the fourth denial starts the wait");
        assert_eq!(throttle.delay(7, now), Duration::from_millis(100));
        assert!(
            !throttle.denied(7, now),
            "only the first denial over says so"
        );
        assert_eq!(throttle.delay(7, now), Duration::from_millis(200));
        // Others are not affected, and the wait passes with time.
        assert_eq!(throttle.delay(8, now), Duration::ZERO);
        let later = now + Duration::from_millis(200);
        assert_eq!(throttle.delay(7, later), Duration::ZERO);
        // Denials at the pace of the waits do not say so again...
        assert!(!throttle.denied(7, later));
        // ...until the whole burst is back.
        let recovered = later + Duration::from_secs(1);
        for _ in 0..3 {
            assert!(!throttle.denied(7, recovered));
        }
        assert!(throttle.denied(7, recovered));
    }

    #[test]
    fn the_wait_is_bounded_and_no_rate_means_no_wait() {
        let throttle = Throttle::new(1, 1);
        let now = Instant::now();
        for _ in 0..10_000 {
            throttle.denied(7, now);
        }
        assert_eq!(throttle.delay(7, now), MAX_WAIT);
        let unlimited = Throttle::new(0, 1);
        for _ in 0..100 {
            assert!(!unlimited.denied(7, now));
        }
        assert_eq!(unlimited.delay(7, now), Duration::ZERO);
    }
}
