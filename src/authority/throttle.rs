//! Users who cost the daemon too much have their calls slowed down. Two budgets per
//! user, each a generic cell rate algorithm: refusals (denials, requests over a limit,
//! failed starts; `denial_rate` per second after a burst of `denial_burst`) and bytes
//! of state written on their behalf (`write_rate_bytes` per second after a burst of
//! `write_burst_bytes`). Every refusal is still answered (and a denial still recorded):
//! this only bounds how fast one local user can make the daemon work and write, so that
//! everybody else stays served. Root, admins and trusted callers are not slowed.
//!
//! Each cost moves the user's theoretical arrival time (`tat`) into the future by its
//! share of the rate; a call waits until `tat` is no more than the burst ahead of now.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::Config;

/// The longest a call waits (well under the usual 25 s D-Bus reply timeout); a user who
/// overdid it is forgiven after at most this long without costs.
pub const MAX_WAIT: Duration = Duration::from_secs(10);

/// Past this many tracked users, those with nothing owed are forgotten.
const TRACKED: usize = 4096;

/// One budget: `interval` of time per unit, `tolerance` ahead before calls wait.
#[derive(Clone, Copy)]
struct Rate {
    /// Nanoseconds per unit (fractional for bytes); `None`: no limit.
    per_unit: Option<f64>,
    tolerance: Duration,
}

impl Rate {
    fn new(per_second: u64, burst: u64) -> Self {
        let per_unit = (per_second > 0).then(|| 1e9 / per_second as f64);
        Rate {
            per_unit,
            tolerance: per_unit.map_or(Duration::ZERO, |ns| {
                Duration::from_nanos((ns * burst.max(1) as f64) as u64)
            }),
        }
    }
}

pub struct Throttle {
    users: Mutex<Users>,
}

/// The budgets of the users who spent some, and the rates they are spent at (a reload
/// may change them).
struct Users {
    refusals: Rate,
    writes: Rate,
    by_key: HashMap<u32, User>,
}

#[derive(Clone, Copy)]
struct Budget {
    /// The theoretical arrival time of the next cost.
    tat: Instant,
    /// Slowed down since `tat` was last in the past (its whole burst back).
    slowed: bool,
}

#[derive(Clone, Copy)]
struct User {
    refusals: Budget,
    writes: Budget,
}

impl Throttle {
    pub fn new(config: &Config) -> Self {
        Self::with_rates(
            u64::from(config.denial_rate),
            u64::from(config.denial_burst),
            config.write_rate_bytes,
            config.write_burst_bytes,
        )
    }

    /// `rate` refusals per second after a burst of `burst`, and `write_rate` bytes per
    /// second after `write_burst`; a rate of 0 means no limit.
    pub fn with_rates(rate: u64, burst: u64, write_rate: u64, write_burst: u64) -> Self {
        Throttle {
            users: Mutex::new(Users {
                refusals: Rate::new(rate, burst),
                writes: Rate::new(write_rate, write_burst),
                by_key: HashMap::new(),
            }),
        }
    }

    /// The rates of a reloaded configuration; what users spent so far stays spent.
    pub fn set_rates(&self, config: &Config) {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        users.refusals = Rate::new(
            u64::from(config.denial_rate),
            u64::from(config.denial_burst),
        );
        users.writes = Rate::new(config.write_rate_bytes, config.write_burst_bytes);
    }

    /// How long a call under `key` waits before it is served (usually zero).
    pub fn delay(&self, key: u32, now: Instant) -> Duration {
        let users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        users.by_key.get(&key).map_or(Duration::ZERO, |user| {
            let wait = |budget: &Budget, rate: &Rate| {
                if rate.per_unit.is_none() {
                    return Duration::ZERO;
                }
                budget.tat.saturating_duration_since(now + rate.tolerance)
            };
            wait(&user.refusals, &users.refusals).max(wait(&user.writes, &users.writes))
        })
    }

    /// Counts a refusal under `key`; true if it is what starts slowing the user down
    /// (again only once the user has had its whole burst back).
    pub fn denied(&self, key: u32, now: Instant) -> bool {
        self.spend(
            key,
            now,
            1,
            |user| &mut user.refusals,
            |users| users.refusals,
        )
    }

    /// Counts `bytes` written on behalf of `key`; true if that starts slowing it down.
    pub fn wrote(&self, key: u32, bytes: u64, now: Instant) -> bool {
        if bytes == 0 {
            return false;
        }
        let starts = self.spend(
            key,
            now,
            bytes,
            |user| &mut user.writes,
            |users| users.writes,
        );
        if starts {
            tracing::warn!(
                "uid {key} makes the daemon write faster than write_rate_bytes: its calls wait \
                 from now on"
            );
        }
        starts
    }

    fn spend(
        &self,
        key: u32,
        now: Instant,
        units: u64,
        budget: impl Fn(&mut User) -> &mut Budget,
        rate: impl Fn(&Users) -> Rate,
    ) -> bool {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        let rate = rate(&users);
        let Some(per_unit) = rate.per_unit else {
            return false;
        };
        let users = &mut users.by_key;
        if users.len() >= TRACKED {
            users.retain(|_, user| user.refusals.tat > now || user.writes.tat > now);
        }
        let fresh = Budget {
            tat: now,
            slowed: false,
        };
        let user = users.entry(key).or_insert(User {
            refusals: fresh,
            writes: fresh,
        });
        let budget = budget(user);
        if budget.tat <= now {
            budget.slowed = false;
        }
        let cost = Duration::from_nanos((per_unit * units as f64).min(u64::MAX as f64) as u64);
        budget.tat = (budget.tat.max(now) + cost).min(now + rate.tolerance + MAX_WAIT);
        let starts = !budget.slowed && budget.tat > now + rate.tolerance;
        budget.slowed |= starts;
        starts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_free_and_then_calls_wait_one_interval_per_denial() {
        let throttle = Throttle::with_rates(10, 3, 0, 0);
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
        let throttle = Throttle::with_rates(1, 1, 0, 0);
        let now = Instant::now();
        for _ in 0..10_000 {
            throttle.denied(7, now);
        }
        assert_eq!(throttle.delay(7, now), MAX_WAIT);
        let unlimited = Throttle::with_rates(0, 1, 0, 0);
        for _ in 0..100 {
            assert!(!unlimited.denied(7, now));
        }
        assert_eq!(unlimited.delay(7, now), Duration::ZERO);
    }

    #[test]
    fn new_rates_apply_to_the_next_cost_and_what_was_spent_stays_spent() {
        let throttle = Throttle::with_rates(0, 1, 0, 0);
        let now = Instant::now();
        assert!(!throttle.denied(7, now), "no limit");
        let config = Config {
            denial_rate: 10,
            denial_burst: 1,
            ..Config::default()
        };
        throttle.set_rates(&config);
        assert!(!throttle.denied(7, now));
        assert!(throttle.denied(7, now), "the new burst is spent");
        assert_eq!(throttle.delay(7, now), Duration::from_millis(100));
    }

    #[test]
    fn bytes_written_past_the_burst_slow_a_user_down() {
        // 1000 bytes/s after 4000 bytes.
        let throttle = Throttle::with_rates(0, 1, 1000, 4000);
        let now = Instant::now();
        assert!(!throttle.wrote(7, 4000, now));
        assert_eq!(throttle.delay(7, now), Duration::ZERO);
        assert!(throttle.wrote(7, 500, now));
        assert_eq!(throttle.delay(7, now), Duration::from_millis(500));
        // Refusals are a budget of their own (unlimited here).
        assert!(!throttle.denied(7, now));
        assert_eq!(throttle.delay(8, now), Duration::ZERO);
        assert_eq!(
            throttle.delay(7, now + Duration::from_millis(500)),
            Duration::ZERO
        );
    }
}
