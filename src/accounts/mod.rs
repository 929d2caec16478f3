//! System accounts: NSS lookups (so LDAP/SSSD accounts work) behind a short cache.
//!
//! The lookups themselves are an [`AccountSource`]: [`Nss`] in the daemon, a table in the
//! in-process tests; the cache, the timeout and the sharing of lookups are the same for
//! both.

use std::collections::HashMap;
use std::ffi::CString;
use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use nix::unistd::{Gid, Group, Uid, User, getgrouplist};

use crate::policy::Subject;
use crate::sys;

/// A system account as NSS reports it, with every group it is in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
    pub shell: PathBuf,
    /// Every group id, primary first, as `getgrouplist` gives them.
    pub gids: Vec<u32>,
    /// The names of `gids` that have a name.
    pub groups: Vec<String>,
}

impl Account {
    pub fn subject(&self) -> Subject<'_> {
        Subject {
            name: &self.name,
            groups: &self.groups,
            uid: Some(self.uid),
        }
    }
}

/// A failed NSS lookup (not "no such user": that is `Ok(None)`).
#[derive(Debug)]
pub struct LookupError {
    pub what: String,
    pub source: io::Error,
}

impl LookupError {
    /// The same error again (for every caller a shared lookup answers).
    fn duplicate(&self) -> LookupError {
        LookupError {
            what: self.what.clone(),
            source: io::Error::new(self.source.kind(), self.source.to_string()),
        }
    }
}

impl fmt::Display for LookupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "user database lookup of {} failed: {}",
            self.what, self.source
        )
    }
}

impl std::error::Error for LookupError {}

fn lookup_error(what: impl Into<String>, err: nix::Error) -> LookupError {
    // glibc answers ENOENT when a source (nss_ldap, sss) reported itself unavailable:
    // "not found" is a null result, never an error.
    let source = if err == nix::Error::ENOENT {
        io::Error::new(
            io::ErrorKind::NotConnected,
            "the user directory is unavailable (NSS answered ENOENT)",
        )
    } else {
        io::Error::from(err)
    };
    LookupError {
        what: what.into(),
        source,
    }
}

/// Where a [`Directory`] gets its answers: the raw lookups, uncached. A call may block
/// for as long as the user database takes (the directory bounds the wait).
pub trait AccountSource: Send + Sync + 'static {
    /// The account named `name` with all its groups; `Ok(None)` if there is none.
    fn user(&self, name: &str) -> Result<Option<Account>, LookupError>;
    /// The account with uid `uid`; `Ok(None)` if there is none.
    fn user_by_uid(&self, uid: u32) -> Result<Option<Account>, LookupError>;
    /// The user names in group `group`: its member list plus the accounts whose primary
    /// group it is, sorted, each once; empty if there is no such group.
    fn group_members(&self, group: &str) -> Result<Vec<String>, LookupError>;
    /// Whether more than one account name has uid `uid`.
    fn uid_shared(&self, uid: u32) -> bool;
}

/// The system's user database through NSS (`getpwnam`, `getgrouplist`, …).
#[derive(Debug, Default, Clone, Copy)]
pub struct Nss;

impl AccountSource for Nss {
    fn user(&self, name: &str) -> Result<Option<Account>, LookupError> {
        User::from_name(name)
            .map_err(|e| lookup_error(name, e))?
            .map(account)
            .transpose()
    }

    fn user_by_uid(&self, uid: u32) -> Result<Option<Account>, LookupError> {
        User::from_uid(Uid::from_raw(uid))
            .map_err(|e| lookup_error(format!("uid {uid}"), e))?
            .map(account)
            .transpose()
    }

    fn group_members(&self, group: &str) -> Result<Vec<String>, LookupError> {
        let Some(entry) = Group::from_name(group).map_err(|e| lookup_error(group, e))? else {
            return Ok(Vec::new());
        };
        let mut members = entry.mem;
        members.extend(sys::users_with_primary_gid(entry.gid.as_raw()));
        members.sort();
        members.dedup();
        Ok(members)
    }

    fn uid_shared(&self, uid: u32) -> bool {
        sys::users_with_uid(uid).len() > 1
    }
}

/// Accounts by key, each with the time it was looked up.
type Cache<K> = Mutex<HashMap<K, (Instant, Option<Arc<Account>>)>>;

/// NSS lookups behind a short-lived cache, so a hot path (every `Resolve`, every new
/// bus connection) does not reread `/etc/passwd` or ask SSSD each time. `ttl` zero
/// disables the cache. Every lookup is bounded by `timeout` (see [`Directory::bounded`]).
pub struct Directory {
    source: Arc<dyn AccountSource>,
    ttl: Duration,
    timeout: Duration,
    /// NSS lookups started and not yet returned, abandoned ones included.
    lookups: Arc<AtomicUsize>,
    by_name: Cache<String>,
    by_uid: Cache<u32>,
    /// Whether a uid has more than one account name, by uid.
    shared: Mutex<HashMap<u32, (Instant, bool)>>,
    /// Lookups under way, by what they look up: callers that miss the cache for the same
    /// account at once share one lookup instead of each starting its own.
    flights: Mutex<HashMap<String, Arc<Flight>>>,
}

type Answer = Result<Option<Arc<Account>>, LookupError>;

/// One lookup that several callers wait for.
#[derive(Default)]
struct Flight {
    answer: Mutex<Option<Answer>>,
    landed: std::sync::Condvar,
}

impl Flight {
    fn land(&self, answer: &Answer) {
        *self.answer.lock().unwrap_or_else(|e| e.into_inner()) = Some(copy(answer));
        self.landed.notify_all();
    }

    /// The answer, once the lookup has one; `None` after `timeout`.
    fn wait(&self, timeout: Duration) -> Option<Answer> {
        let answer = self.answer.lock().unwrap_or_else(|e| e.into_inner());
        let (answer, _) = self
            .landed
            .wait_timeout_while(answer, timeout, |a| a.is_none())
            .unwrap_or_else(|e| e.into_inner());
        answer.as_ref().map(copy)
    }
}

/// The same answer again, for another caller of a shared lookup.
fn copy(answer: &Answer) -> Answer {
    match answer {
        Ok(found) => Ok(found.clone()),
        Err(err) => Err(err.duplicate()),
    }
}

/// Bound on cached entries; past it the cache starts over rather than grow without end.
const CACHE_LIMIT: usize = 16_384;

/// Bound on NSS lookups running at once, those given up on included: a directory that
/// stopped answering holds at most this many threads, and lookups past it fail at once.
pub const MAX_LOOKUPS: usize = 16;

/// How long a lookup waits for NSS unless the configuration says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

impl Directory {
    pub fn new(ttl: Duration) -> Self {
        Self::with_timeout(ttl, DEFAULT_TIMEOUT)
    }

    pub fn with_timeout(ttl: Duration, timeout: Duration) -> Self {
        Self::with_source(ttl, timeout, Arc::new(Nss))
    }

    /// A directory that asks `source` instead of NSS.
    pub fn with_source(ttl: Duration, timeout: Duration, source: Arc<dyn AccountSource>) -> Self {
        Directory {
            source,
            ttl,
            timeout,
            lookups: Arc::new(AtomicUsize::new(0)),
            by_name: Mutex::new(HashMap::new()),
            by_uid: Mutex::new(HashMap::new()),
            shared: Mutex::new(HashMap::new()),
            flights: Mutex::new(HashMap::new()),
        }
    }

    /// The account named `name`, `None` if there is none.
    pub fn user(&self, name: &str) -> Result<Option<Arc<Account>>, LookupError> {
        let (source, owned) = (self.source.clone(), name.to_string());
        self.cached(&self.by_name, name, name.to_string(), move || {
            source.user(&owned)
        })
    }

    /// The account with uid `uid`, `None` if there is none.
    pub fn user_by_uid(&self, uid: u32) -> Result<Option<Arc<Account>>, LookupError> {
        let source = self.source.clone();
        self.cached(&self.by_uid, &uid, format!("uid {uid}"), move || {
            source.user_by_uid(uid)
        })
    }

    /// Runs `lookup` (blocking NSS calls) on a thread of its own and waits for it at most
    /// `timeout`. A directory that does not answer (LDAP server gone, network down) then
    /// gives an error naming the wait instead of holding the caller for as long as the
    /// NSS module likes; the abandoned thread ends when NSS gives up, and at most
    /// [`MAX_LOOKUPS`] such threads exist at once.
    fn bounded<T: Send + 'static>(
        &self,
        what: &str,
        lookup: impl FnOnce() -> Result<T, LookupError> + Send + 'static,
    ) -> Result<T, LookupError> {
        let slot = LookupSlot::take(&self.lookups);
        let waited = |detail: String| LookupError {
            what: what.to_string(),
            source: io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the user directory did not answer within {} s{detail}",
                    self.timeout.as_secs_f64()
                ),
            ),
        };
        if slot.running > MAX_LOOKUPS {
            return Err(waited(format!(
                " ({} lookups are still waiting for it)",
                slot.running - 1
            )));
        }
        let (answer, answered) = mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("nss-lookup".into())
            .spawn(move || {
                let _slot = slot;
                // The waiter may have given up; then the answer is dropped.
                let _ = answer.send(lookup());
            })
            .map_err(|source| LookupError {
                what: what.to_string(),
                source,
            })?;
        answered
            .recv_timeout(self.timeout)
            .unwrap_or_else(|_| Err(waited(String::new())))
    }

    /// The cached account under `key` if it is fresh, else `lookup`'s (then cached).
    fn cached<K, Q>(
        &self,
        cache: &Cache<K>,
        key: &Q,
        what: String,
        lookup: impl FnOnce() -> Result<Option<Account>, LookupError> + Send + 'static,
    ) -> Result<Option<Arc<Account>>, LookupError>
    where
        K: std::borrow::Borrow<Q> + std::hash::Hash + Eq,
        Q: ToOwned<Owned = K> + std::hash::Hash + Eq + ?Sized,
    {
        if let Some(hit) = self.fresh(cache, key) {
            return Ok(hit);
        }
        let (flight, mine) = {
            let mut flights = self.flights.lock().unwrap_or_else(|e| e.into_inner());
            match flights.get(&what) {
                Some(flight) => (flight.clone(), false),
                None => {
                    let flight = Arc::new(Flight::default());
                    flights.insert(what.clone(), flight.clone());
                    (flight, true)
                }
            }
        };
        if !mine {
            // Somebody looks this account up already: its answer is ours.
            return flight.wait(self.timeout).unwrap_or_else(|| {
                Err(LookupError {
                    what: what.clone(),
                    source: io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "the user directory did not answer within {} s",
                            self.timeout.as_secs_f64()
                        ),
                    ),
                })
            });
        }
        let answer = self.bounded(&what, move || Ok(lookup()?.map(Arc::new)));
        if let Ok(found) = &answer
            && !self.ttl.is_zero()
        {
            let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
            if cache.len() >= CACHE_LIMIT {
                cache.clear();
            }
            cache.insert(key.to_owned(), (Instant::now(), found.clone()));
        }
        flight.land(&answer);
        self.flights
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&what);
        answer
    }

    /// The account named `name` if the cache has a fresh answer (never blocks on NSS):
    /// `None` when the cache cannot say.
    pub fn cached_user(&self, name: &str) -> Option<Option<Arc<Account>>> {
        self.fresh(&self.by_name, name)
    }

    /// The answer cached under `key`, if there is one younger than the TTL.
    fn fresh<K, Q>(&self, cache: &Cache<K>, key: &Q) -> Option<Option<Arc<Account>>>
    where
        K: std::borrow::Borrow<Q> + std::hash::Hash + Eq,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        if self.ttl.is_zero() {
            return None;
        }
        let cache = cache.lock().unwrap_or_else(|e| e.into_inner());
        match cache.get(key) {
            Some((at, hit)) if at.elapsed() < self.ttl => Some(hit.clone()),
            _ => None,
        }
    }

    /// The user names in group `group`: its member list plus the accounts whose primary
    /// group it is.
    pub fn group_members(&self, group: &str) -> Result<Vec<String>, LookupError> {
        let (source, owned) = (self.source.clone(), group.to_string());
        self.bounded(&format!("group {group}"), move || {
            source.group_members(&owned)
        })
    }

    /// Whether more than one account has uid `uid` (a walk of the user database, so
    /// asked only for uids with powers, and cached like the rest).
    pub fn uid_shared(&self, uid: u32) -> Result<bool, LookupError> {
        let mut cache = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, shared)) = cache.get(&uid)
            && at.elapsed() < self.ttl
        {
            return Ok(*shared);
        }
        let shared = self.source.uid_shared(uid);
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(uid, (Instant::now(), shared));
        Ok(shared)
    }

    /// Forgets every cached lookup (on reload, so an admin can make NSS changes count now).
    pub fn forget(&self) {
        self.by_name
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.by_uid
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.shared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

/// One of [`Directory::bounded`]'s lookups: counted while it lives.
struct LookupSlot {
    lookups: Arc<AtomicUsize>,
    /// Lookups running with this one.
    running: usize,
}

impl LookupSlot {
    fn take(lookups: &Arc<AtomicUsize>) -> Self {
        let running = lookups.fetch_add(1, Ordering::AcqRel) + 1;
        LookupSlot {
            lookups: lookups.clone(),
            running,
        }
    }
}

impl Drop for LookupSlot {
    fn drop(&mut self) {
        self.lookups.fetch_sub(1, Ordering::AcqRel);
    }
}

fn account(user: User) -> Result<Account, LookupError> {
    let cname = CString::new(user.name.as_bytes()).map_err(|_| LookupError {
        what: user.name.clone(),
        source: io::Error::new(io::ErrorKind::InvalidData, "NUL in user name"),
    })?;
    let gids = getgrouplist(&cname, user.gid).map_err(|e| lookup_error(&user.name, e))?;
    let mut groups = Vec::with_capacity(gids.len());
    for gid in &gids {
        if let Some(group) =
            Group::from_gid(*gid).map_err(|e| lookup_error(format!("gid {gid}"), e))?
        {
            groups.push(group.name);
        }
    }
    Ok(Account {
        name: user.name,
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
        home: user.dir,
        shell: user.shell,
        gids: gids.into_iter().map(Gid::as_raw).collect(),
        groups,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_found_through_nss() {
        let dir = Directory::new(Duration::from_secs(5));
        let root = dir.user("root").unwrap().unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        assert!(root.groups.contains(&"root".to_string()));
        assert_eq!(dir.user("no-such-user-here").unwrap(), None);
        assert_eq!(dir.user_by_uid(0).unwrap().unwrap().name, "root");
    }

    #[test]
    fn lookups_are_reused_within_the_ttl_and_forgotten_on_request() {
        let same = |a: Option<Arc<Account>>, b: Option<Arc<Account>>| {
            Arc::ptr_eq(&a.unwrap(), &b.unwrap())
        };
        let dir = Directory::new(Duration::from_secs(60));
        assert!(same(
            dir.user_by_uid(0).unwrap(),
            dir.user_by_uid(0).unwrap()
        ));
        assert!(same(dir.user("root").unwrap(), dir.user("root").unwrap()));
        let before = dir.user_by_uid(0).unwrap();
        dir.forget();
        assert!(!same(before, dir.user_by_uid(0).unwrap()));
        let uncached = Directory::new(Duration::ZERO);
        assert!(!same(
            uncached.user_by_uid(0).unwrap(),
            uncached.user_by_uid(0).unwrap()
        ));
    }

    #[test]
    fn a_lookup_that_never_returns_fails_after_the_timeout_and_holds_a_bounded_number_of_threads() {
        let dir = Directory::with_timeout(Duration::ZERO, Duration::from_millis(50));
        // Lookups that hang until `release` is dropped, like NSS on a dead directory.
        let (release, hang) = mpsc::channel::<()>();
        let hang = Arc::new(Mutex::new(hang));
        for _ in 0..MAX_LOOKUPS {
            let hang = hang.clone();
            let err = dir
                .bounded("alice", move || {
                    let _ = hang.lock().unwrap().recv();
                    Ok(())
                })
                .unwrap_err();
            assert_eq!(err.source.kind(), io::ErrorKind::TimedOut);
            assert_eq!(
                err.to_string(),
                "user database lookup of alice failed: the user directory did not answer within 0.05 s"
            );
        }
        // Every slot is held by a stuck lookup: the next one fails without a thread.
        let err = dir.bounded("bob", || Ok(())).unwrap_err();
        assert!(
            err.to_string()
                .ends_with(&format!("({MAX_LOOKUPS} lookups are still waiting for it)")),
            "{err}"
        );
        drop(release);
        let deadline = Instant::now() + Duration::from_secs(30);
        while dir.lookups.load(Ordering::Acquire) != 0 {
            assert!(Instant::now() < deadline, "stuck lookups never ended");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(dir.bounded("carol", || Ok(7)).unwrap(), 7);
    }

    #[test]
    fn callers_that_miss_the_cache_at_once_share_one_lookup() {
        let dir = Arc::new(Directory::new(Duration::from_secs(60)));
        let started = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..3 * MAX_LOOKUPS)
            .map(|_| {
                let (dir, started) = (dir.clone(), started.clone());
                std::thread::spawn(move || {
                    dir.cached(&dir.by_name, "pxt-nobody", "pxt-nobody".into(), move || {
                        started.fetch_add(1, Ordering::AcqRel);
                        std::thread::sleep(Duration::from_millis(200));
                        Ok(None)
                    })
                })
            })
            .collect();
        for thread in threads {
            // More callers than MAX_LOOKUPS, and none is refused.
            assert!(thread.join().unwrap().unwrap().is_none());
        }
        // Late arrivals may find the answer cached; at most a few lookups ever ran.
        let ran = started.load(Ordering::Acquire);
        assert!((1..=2).contains(&ran), "{ran} lookups for one account");
    }
}
