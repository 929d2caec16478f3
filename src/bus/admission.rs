//! Which calls of an ordinary caller are served, and when. Root, admins and trusted
//! callers are always served at once. Everybody else has at most [`MAX_IN_FLIGHT`] calls
//! in progress; once slowed down for causing denials (see
//! [`Authority::call_delay`]) its calls go one at a time, each after its wait, with at
//! most [`MAX_WAITING`] waiting. Calls beyond either bound are refused at once with
//! `LimitsExceeded`, so a flood costs the daemon neither memory nor fsyncs.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::access::Caller;
use crate::authority::{Authority, Error};

/// Calls of one throttle key in progress at once.
pub const MAX_IN_FLIGHT: usize = 32;
/// Calls of one slowed-down throttle key waiting for their turn.
pub const MAX_WAITING: usize = 4;

/// Per throttle key (see [`Authority::throttle_key`]).
#[derive(Default)]
struct Key {
    in_flight: AtomicUsize,
    waiting: AtomicUsize,
    turn: Arc<tokio::sync::Mutex<()>>,
}

#[derive(Default)]
pub struct Admission(Mutex<HashMap<u32, Arc<Key>>>);

/// Held while an admitted call runs.
pub struct Admitted {
    _in_flight: Option<Counted>,
    _turn: Option<tokio::sync::OwnedMutexGuard<()>>,
}

/// One count of a counter, given back on drop (also when the call is dropped).
struct Counted(Arc<Key>, fn(&Key) -> &AtomicUsize);

impl Counted {
    /// Counts one more unless `limit` are counted already.
    fn take(key: &Arc<Key>, counter: fn(&Key) -> &AtomicUsize, limit: usize) -> Option<Self> {
        counter(key)
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()
            .map(|_| Counted(key.clone(), counter))
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        (self.1)(&self.0).fetch_sub(1, Ordering::AcqRel);
    }
}

impl Admission {
    /// Waits until `caller` may make its call, or refuses it.
    pub async fn admit(&self, authority: &Authority, caller: &Caller) -> Result<Admitted, Error> {
        let Some(throttle_key) = authority.throttle_key(caller) else {
            return Ok(Admitted {
                _in_flight: None,
                _turn: None,
            });
        };
        let key = self.key(throttle_key);
        let in_flight = Counted::take(&key, |k| &k.in_flight, MAX_IN_FLIGHT).ok_or_else(|| {
            Error::LimitsExceeded(format!(
                "{caller} has {MAX_IN_FLIGHT} calls in progress already"
            ))
        })?;
        if authority.call_delay(throttle_key).is_zero() {
            return Ok(Admitted {
                _in_flight: Some(in_flight),
                _turn: None,
            });
        }
        let waiting = Counted::take(&key, |k| &k.waiting, MAX_WAITING).ok_or_else(|| {
            Error::LimitsExceeded(format!(
                "{caller} is slowed down for causing denials and has {MAX_WAITING} calls \
                 waiting already"
            ))
        })?;
        let turn = key.turn.clone().lock_owned().await;
        // Measured again: the call before this one may have been denied.
        tokio::time::sleep(authority.call_delay(throttle_key)).await;
        drop(waiting);
        Ok(Admitted {
            _in_flight: Some(in_flight),
            _turn: Some(turn),
        })
    }

    fn key(&self, key: u32) -> Arc<Key> {
        let mut keys = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if keys.len() >= 1024 {
            // Only keys with calls in progress are worth keeping.
            keys.retain(|_, key| Arc::strong_count(key) > 1);
        }
        keys.entry(key).or_default().clone()
    }
}
