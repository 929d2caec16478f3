//! System accounts: NSS lookups (so LDAP/SSSD accounts work) behind a short cache.

use std::collections::HashMap;
use std::ffi::CString;
use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
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
    LookupError {
        what: what.into(),
        source: io::Error::from(err),
    }
}

/// Accounts by key, each with the time it was looked up.
type Cache<K> = Mutex<HashMap<K, (Instant, Option<Arc<Account>>)>>;

/// NSS lookups behind a short-lived cache, so a hot path (every `Resolve`, every new
/// bus connection) does not reread `/etc/passwd` or ask SSSD each time. `ttl` zero
/// disables the cache.
pub struct Directory {
    ttl: Duration,
    by_name: Cache<String>,
    by_uid: Cache<u32>,
    /// Whether a uid has more than one account name, by uid.
    shared: Mutex<HashMap<u32, (Instant, bool)>>,
}

/// Bound on cached entries; past it the cache starts over rather than grow without end.
const CACHE_LIMIT: usize = 16_384;

impl Directory {
    pub fn new(ttl: Duration) -> Self {
        Directory {
            ttl,
            by_name: Mutex::new(HashMap::new()),
            by_uid: Mutex::new(HashMap::new()),
            shared: Mutex::new(HashMap::new()),
        }
    }

    /// The account named `name`, `None` if there is none.
    pub fn user(&self, name: &str) -> Result<Option<Arc<Account>>, LookupError> {
        self.cached(&self.by_name, name, || {
            User::from_name(name).map_err(|e| lookup_error(name, e))
        })
    }

    /// The account with uid `uid`, `None` if there is none.
    pub fn user_by_uid(&self, uid: u32) -> Result<Option<Arc<Account>>, LookupError> {
        self.cached(&self.by_uid, &uid, || {
            User::from_uid(Uid::from_raw(uid)).map_err(|e| lookup_error(format!("uid {uid}"), e))
        })
    }

    /// The cached account under `key` if it is fresh, else `lookup`'s (then cached).
    fn cached<K, Q>(
        &self,
        cache: &Cache<K>,
        key: &Q,
        lookup: impl FnOnce() -> Result<Option<User>, LookupError>,
    ) -> Result<Option<Arc<Account>>, LookupError>
    where
        K: std::borrow::Borrow<Q> + std::hash::Hash + Eq,
        Q: ToOwned<Owned = K> + std::hash::Hash + Eq + ?Sized,
    {
        if let Some(hit) = self.fresh(cache, key) {
            return Ok(hit);
        }
        let found = match lookup()? {
            Some(user) => Some(Arc::new(account(user)?)),
            None => None,
        };
        if !self.ttl.is_zero() {
            let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
            if cache.len() >= CACHE_LIMIT {
                cache.clear();
            }
            cache.insert(key.to_owned(), (Instant::now(), found.clone()));
        }
        Ok(found)
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
        let Some(entry) = Group::from_name(group).map_err(|e| lookup_error(group, e))? else {
            return Ok(Vec::new());
        };
        let mut members = entry.mem;
        members.extend(sys::users_with_primary_gid(entry.gid.as_raw()));
        members.sort();
        members.dedup();
        Ok(members)
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
        let shared = sys::users_with_uid(uid).len() > 1;
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
}
