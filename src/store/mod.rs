//! The durable state, in sled: one tree per kind of record. Nothing outside this module
//! sees sled; callers read typed records and hand in [`Write`]s that [`Store::apply`]
//! applies atomically.
//!
//! Durability is a group commit: `apply` changes memory and returns a [`Ticket`]; one
//! committer thread flushes whatever has been applied (sled's log, the blob files it
//! wrote, an `fdatasync`) and then wakes everyone whose ticket that flush covered, so
//! concurrent writers share one flush. Nobody may be told of a change before
//! [`Store::wait_durable`] (or [`Store::durable`]) has returned for its ticket.
//!
//! When a flush fails (a full disk), memory may be ahead of the disk and sled refuses
//! all further writes: the store then refuses writes (`Unavailable`) but keeps serving
//! reads, and [`Store::reopen`] (driven by the daemon, once there is room again) reopens
//! it on what is on disk. A small reserve file, released when the disk fills up, leaves
//! room to reopen and to go on recording.

mod commit;
mod error;
mod records;
mod schema;
mod typed;

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use std::cell::Cell;

use arc_swap::ArcSwapOption;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

pub use commit::{Hooks, Ticket};
pub use error::{IoFailure, StoreError, Unavailable};
pub use records::{
    Association, AuditStats, Checkpoint, JobEnd, JobRecord, JobState, RuleSnapshot, SessionKind,
    SessionRecord,
};
pub use schema::SCHEMA_VERSION;
pub use typed::keys;

thread_local! {
    /// Whether reads on this thread note the unflushed changes they see (see
    /// [`Store::noting_unflushed`]).
    static NOTING: Cell<bool> = const { Cell::new(false) };
    /// The newest unflushed change read while noting.
    static NOTED: Cell<Option<Ticket>> = const { Cell::new(None) };
}

/// The trees of the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tree {
    /// Schema version, counters, audit statistics and checkpoint, the rule snapshot.
    Meta,
    /// login → [`Association`].
    Associations,
    /// live rule id → rule TOML.
    Rules,
    /// big-endian sequence number → audit record.
    Audit,
    /// job id → [`JobRecord`].
    Jobs,
    /// run-as user, NUL, big-endian start time, job id → "" (a user's jobs in order).
    JobsByUser,
    /// ticket hash → [`SessionRecord`].
    Sessions,
    /// login, NUL, ticket hash → "" (a login's sessions).
    SessionsByLogin,
}

const TREES: [(Tree, &str); 8] = [
    (Tree::Meta, "meta"),
    (Tree::Associations, "associations"),
    (Tree::Rules, "rules"),
    (Tree::Audit, "audit"),
    (Tree::Jobs, "jobs"),
    (Tree::JobsByUser, "jobs-by-user"),
    (Tree::Sessions, "sessions"),
    (Tree::SessionsByLogin, "sessions-by-login"),
];

/// One change to apply in a [`Store::apply`].
#[derive(Debug, Clone)]
pub struct Write {
    tree: Tree,
    key: Vec<u8>,
    value: Option<Vec<u8>>,
}

impl Write {
    pub fn put(tree: Tree, key: impl Into<Vec<u8>>, value: &impl Serialize) -> Self {
        Write {
            tree,
            key: key.into(),
            // Serializing plain records into a Vec cannot fail.
            value: Some(serde_json::to_vec(value).expect("record serializes")),
        }
    }

    /// A key with an empty value (index entries).
    pub fn mark(tree: Tree, key: impl Into<Vec<u8>>) -> Self {
        Write {
            tree,
            key: key.into(),
            value: Some(Vec::new()),
        }
    }

    pub fn delete(tree: Tree, key: impl Into<Vec<u8>>) -> Self {
        Write {
            tree,
            key: key.into(),
            value: None,
        }
    }

    /// The audit record with sequence number `seq`, already serialized.
    pub fn audit(seq: u64, record: Vec<u8>) -> Self {
        Write {
            tree: Tree::Audit,
            key: seq.to_be_bytes().to_vec(),
            value: Some(record),
        }
    }

    /// Bytes this write adds to the store (its key and value).
    pub fn size(&self) -> usize {
        self.key.len() + self.value.as_ref().map_or(0, Vec::len)
    }
}

/// Sizes of the store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// sled's page cache.
    pub cache_bytes: u64,
    /// The reserve file kept beside the store, released when the disk fills up.
    pub reserve_bytes: u64,
}

/// An open sled database and its trees.
struct Db {
    sled: sled::Db,
    trees: Vec<sled::Tree>,
    /// sled's log file. sled 0.34 makes its writes stable with `sync_file_range`, which
    /// neither commits the file's metadata (its growing size) nor flushes the disk's
    /// cache: an `fdatasync` of the file after sled's flush makes a commit durable.
    log: File,
    /// Blob files (large pages, written beside the log without a sync) already synced.
    synced_blobs: Mutex<HashSet<OsString>>,
}

impl Db {
    fn open(dir: &Path, config: &StoreConfig) -> Result<Self, StoreError> {
        let open = || {
            sled::Config::new()
                .path(dir)
                .cache_capacity(config.cache_bytes)
                .open()
        };
        // A database closed a moment ago may still hold its file lock while its
        // background thread ends.
        let mut opened = open();
        for _ in 0..100 {
            match &opened {
                Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    opened = open();
                }
                _ => break,
            }
        }
        let sled = opened.map_err(|e| {
            StoreError::Io(IoFailure::sled(
                format!("cannot open {}", dir.display()),
                &e,
            ))
        })?;
        let trees = TREES
            .iter()
            .map(|(_, name)| sled.open_tree(name))
            .collect::<Result<_, _>>()?;
        let log = File::open(dir.join("db")).map_err(|e| {
            StoreError::Io(IoFailure::io(
                format!("cannot open {}", dir.join("db").display()),
                &e,
            ))
        })?;
        Ok(Db {
            sled,
            trees,
            log,
            synced_blobs: Mutex::new(HashSet::new()),
        })
    }

    fn tree(&self, tree: Tree) -> &sled::Tree {
        &self.trees[tree as usize]
    }

    /// Makes everything applied so far durable: sled's flush, the blob files it wrote
    /// since the last time (and their directory), then the log's `fdatasync`.
    fn flush(&self, dir: &Path) -> Result<(), IoFailure> {
        self.sled
            .flush()
            .map_err(|e| IoFailure::sled("sled's flush", &e))?;
        self.sync_blobs(&dir.join("blobs"))?;
        self.log
            .sync_data()
            .map_err(|e| IoFailure::io("fdatasync of the log", &e))
    }

    fn sync_blobs(&self, blobs: &Path) -> Result<(), IoFailure> {
        let entries = match std::fs::read_dir(blobs) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(err) => return Err(IoFailure::io(blobs.display().to_string(), &err)),
        };
        let mut synced = self.synced_blobs.lock().unwrap_or_else(|e| e.into_inner());
        let mut present = HashSet::new();
        let mut new = false;
        for entry in entries {
            let name = entry
                .map_err(|e| IoFailure::io(blobs.display().to_string(), &e))?
                .file_name();
            if !synced.contains(&name) {
                let path = blobs.join(&name);
                match File::open(&path) {
                    Ok(file) => file
                        .sync_all()
                        .map_err(|e| IoFailure::io(format!("fsync of {}", path.display()), &e))?,
                    // Collected by sled meanwhile.
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(err) => return Err(IoFailure::io(path.display().to_string(), &err)),
                }
                new = true;
            }
            present.insert(name);
        }
        *synced = present;
        if new {
            File::open(blobs)
                .and_then(|d| d.sync_all())
                .map_err(|e| IoFailure::io(format!("fsync of {}", blobs.display()), &e))?;
        }
        Ok(())
    }
}

pub struct Store {
    dir: PathBuf,
    config: StoreConfig,
    db: ArcSwapOption<Db>,
    commits: Arc<commit::Commits>,
}

impl Store {
    /// Opens (creating if needed) the store in `dir`, migrating an older schema. On a
    /// full disk it releases its reserve to be able to open.
    pub fn open(dir: &Path, config: StoreConfig) -> Result<Self, StoreError> {
        let db = match Db::open(dir, &config) {
            Err(err) if err.disk_full() => {
                release_reserve(dir);
                Db::open(dir, &config)?
            }
            opened => opened?,
        };
        let db = Arc::new(db);
        let store = Store {
            dir: dir.to_path_buf(),
            config,
            db: ArcSwapOption::from(Some(db.clone())),
            commits: commit::Commits::start(dir.to_path_buf()),
        };
        schema::migrate(&store, &db)?;
        store.commits.set_db(Some(db));
        store.keep_reserve();
        Ok(store)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Installs what the committer does around each flush.
    pub fn set_hooks(&self, hooks: Hooks) {
        self.commits.set_hooks(hooks);
    }

    fn db(&self) -> Result<Arc<Db>, StoreError> {
        self.db.load_full().ok_or_else(|| {
            StoreError::Unavailable(self.commits.failure().unwrap_or(Unavailable::Closing))
        })
    }

    /// Why the store takes no writes, if it does not.
    pub fn unavailable(&self) -> Option<Unavailable> {
        self.commits.failure()
    }

    fn decode<T: DeserializeOwned>(tree: Tree, key: &[u8], value: &[u8]) -> Result<T, StoreError> {
        serde_json::from_slice(value).map_err(|e| StoreError::Corrupt {
            tree: TREES[tree as usize].1,
            key: String::from_utf8_lossy(key).into_owned(),
            why: e.to_string(),
        })
    }

    /// The value at `key` in `tree` as it is on disk when the store failed (through
    /// the overlay), else as it is.
    fn raw(&self, tree: Tree, key: &[u8]) -> Result<Option<sled::IVec>, StoreError> {
        if let Some(overlay) = self.commits.overlay()
            && let Some(old) = overlay.get(&(tree, key.to_vec()))
        {
            return Ok(old.clone());
        }
        let value = self.db()?.tree(tree).get(key)?;
        if NOTING.get()
            && let Some(ticket) = self.commits.unflushed(tree, key)
        {
            NOTED.set(Some(NOTED.get().map_or(ticket, |noted| noted.max(ticket))));
        }
        Ok(value)
    }

    /// Runs `read` (point reads with [`get`](Self::get), on this thread) and returns with
    /// its result the newest not-yet-durable change it read, if any: what must be
    /// durable before an answer built on the read is given. Readers of durable data need
    /// not wait for anybody's flush.
    pub fn noting_unflushed<T>(&self, read: impl FnOnce() -> T) -> (T, Option<Ticket>) {
        let (was_noting, before) = (NOTING.replace(true), NOTED.take());
        let result = read();
        let noted = NOTED.take();
        NOTING.set(was_noting);
        // An enclosing reader saw what this one saw.
        NOTED.set(before.max(noted).filter(|_| was_noting));
        (result, noted)
    }

    /// The record at `key` in `tree`.
    pub fn get<T: DeserializeOwned>(
        &self,
        tree: Tree,
        key: &[u8],
    ) -> Result<Option<T>, StoreError> {
        match self.raw(tree, key)? {
            Some(value) => Self::decode(tree, key, &value).map(Some),
            None => Ok(None),
        }
    }

    /// Whether `key` is in `tree`.
    pub fn contains(&self, tree: Tree, key: &[u8]) -> Result<bool, StoreError> {
        Ok(self.raw(tree, key)?.is_some())
    }

    /// Up to `limit` entries of `tree` in the key range `range`, in key order (or the
    /// reverse) — as they are on disk while the store is failed.
    fn entries(
        &self,
        tree: Tree,
        range: (std::ops::Bound<Vec<u8>>, std::ops::Bound<Vec<u8>>),
        reverse: bool,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, sled::IVec)>, StoreError> {
        let db = self.db()?;
        let overlay = self.commits.overlay();
        // Fetch more while an overlay may take some away.
        let fetch = limit.saturating_add(overlay.as_ref().map_or(0, |o| o.len()));
        let iter = db.tree(tree).range::<Vec<u8>, _>(range.clone());
        let items: Vec<(Vec<u8>, sled::IVec)> = if reverse {
            iter.rev()
                .take(fetch)
                .map(|kv| kv.map(|(k, v)| (k.to_vec(), v)))
                .collect::<Result<_, _>>()?
        } else {
            iter.take(fetch)
                .map(|kv| kv.map(|(k, v)| (k.to_vec(), v)))
                .collect::<Result<_, _>>()?
        };
        let Some(overlay) = overlay else {
            return Ok(items);
        };
        let mut merged: std::collections::BTreeMap<Vec<u8>, sled::IVec> =
            items.into_iter().collect();
        for ((t, key), old) in overlay.iter() {
            if *t != tree || !std::ops::RangeBounds::contains(&range, key) {
                continue;
            }
            match old {
                Some(old) => merged.insert(key.clone(), old.clone()),
                None => merged.remove(key),
            };
        }
        Ok(if reverse {
            merged.into_iter().rev().take(limit).collect()
        } else {
            merged.into_iter().take(limit).collect()
        })
    }

    /// Up to `limit` records of `tree` in key order, from `from` on.
    pub fn scan<T: DeserializeOwned>(
        &self,
        tree: Tree,
        from: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, T)>, StoreError> {
        use std::ops::Bound::{Included, Unbounded};
        self.entries(tree, (Included(from.to_vec()), Unbounded), false, limit)?
            .into_iter()
            .map(|(key, value)| {
                let record = Self::decode(tree, &key, &value)?;
                Ok((key, record))
            })
            .collect()
    }

    /// Up to `limit` keys of `tree` that start with `prefix`, in key order (or the
    /// reverse), strictly after (before, in reverse) `after` if given.
    pub fn keys(
        &self,
        tree: Tree,
        prefix: &[u8],
        after: Option<&[u8]>,
        reverse: bool,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        use std::ops::Bound::{Excluded, Included, Unbounded};
        let end = prefix_end(prefix).map_or(Unbounded, Excluded);
        let range = match (after, reverse) {
            (None, _) => (Included(prefix.to_vec()), end),
            (Some(after), false) => (Excluded(after.to_vec()), end),
            (Some(after), true) => (Included(prefix.to_vec()), Excluded(after.to_vec())),
        };
        Ok(self
            .entries(tree, range, reverse, limit)?
            .into_iter()
            .map(|(k, _)| k)
            .collect())
    }

    /// The record with the greatest key in `tree`.
    pub fn last<T: DeserializeOwned>(
        &self,
        tree: Tree,
    ) -> Result<Option<(Vec<u8>, T)>, StoreError> {
        use std::ops::Bound::Unbounded;
        match self.entries(tree, (Unbounded, Unbounded), true, 1)?.pop() {
            Some((key, value)) => {
                let record = Self::decode(tree, &key, &value)?;
                Ok(Some((key, record)))
            }
            None => Ok(None),
        }
    }

    /// Number of records in `tree` (walks it: for tests and migrations).
    pub fn count(&self, tree: Tree) -> Result<usize, StoreError> {
        Ok(self.db()?.tree(tree).len())
    }

    /// Applies `writes` atomically in memory; durable once the returned ticket is.
    pub fn apply(&self, writes: &[Write]) -> Result<Ticket, StoreError> {
        if let Some(why) = self.commits.failure() {
            return Err(StoreError::Unavailable(why));
        }
        let db = self.db()?;
        let applied = db
            .trees
            .as_slice()
            .transaction(|tx| {
                let mut replaced = Vec::with_capacity(writes.len());
                for w in writes {
                    let t = &tx[w.tree as usize];
                    let old = match &w.value {
                        Some(v) => t.insert(w.key.as_slice(), v.as_slice())?,
                        None => t.remove(w.key.as_slice())?,
                    };
                    replaced.push((w.tree, w.key.clone(), old));
                }
                Ok::<_, ConflictableTransactionError<()>>(replaced)
            })
            .map_err(|e| match e {
                TransactionError::Storage(e) => StoreError::from(e),
                TransactionError::Abort(()) => {
                    StoreError::Io(IoFailure::other("a transaction", "aborted"))
                }
            });
        match applied {
            Ok(replaced) => Ok(self.commits.applied(replaced)),
            Err(err) => {
                // sled refuses everything after an I/O error: reopen once possible.
                let failure = match err {
                    StoreError::Io(failure) => failure,
                    other => IoFailure::other("a write", other),
                };
                let why = Unavailable::Write(failure);
                self.failed(why.clone());
                Err(StoreError::Unavailable(why))
            }
        }
    }

    /// Applies `writes` and waits until they are durable.
    pub fn commit(&self, writes: &[Write]) -> Result<(), StoreError> {
        let ticket = self.apply(writes)?;
        self.wait_durable(ticket)
    }

    fn failed(&self, why: Unavailable) {
        if why.disk_full() {
            release_reserve(&self.dir);
        }
        self.commits.fail(why);
    }

    /// The ticket of everything applied so far.
    pub fn applied_ticket(&self) -> Ticket {
        self.commits.current()
    }

    /// Blocks until `ticket` is durable, or its flush failed.
    pub fn wait_durable(&self, ticket: Ticket) -> Result<(), StoreError> {
        self.commits.wait(ticket).map_err(StoreError::Unavailable)
    }

    /// Completes when `ticket` is durable, or its flush failed.
    pub async fn durable(&self, ticket: Ticket) -> Result<(), StoreError> {
        self.commits
            .wait_async(ticket)
            .await
            .map_err(StoreError::Unavailable)
    }

    /// Asks the committer for a flush soon (its hooks have work, e.g. queued records).
    pub fn nudge(&self) {
        self.commits.nudge();
    }

    /// Reopens the database on what is on disk after a failure. Only the owner of all
    /// writers (the audit ledger's lock) may call it: nothing may be applied meanwhile.
    pub fn reopen(&self) -> Result<(), StoreError> {
        let old = self.db.swap(None);
        self.commits.set_db(None);
        if let Some(old) = old {
            // Readers hold the old database for microseconds; sled's lock on its files
            // is released with the last of them.
            let mut old = old;
            for _ in 0..2000 {
                match Arc::try_unwrap(old) {
                    Ok(db) => {
                        drop(db);
                        break;
                    }
                    Err(still) => {
                        old = still;
                        std::thread::sleep(std::time::Duration::from_millis(1));
                    }
                }
            }
        }
        let db = Arc::new(Db::open(&self.dir, &self.config).map_err(|e| {
            if e.disk_full() {
                release_reserve(&self.dir);
            }
            let failure = match e {
                StoreError::Io(failure) => failure,
                other => IoFailure::other("opening the database", other),
            };
            StoreError::Unavailable(Unavailable::Reopen(failure))
        })?);
        schema::migrate(self, &db)?;
        self.db.store(Some(db.clone()));
        self.commits.set_db(Some(db));
        self.commits.recovered();
        Ok(())
    }

    /// Free bytes of the state file system (for a root writer).
    pub fn free_bytes(&self) -> Option<u64> {
        let stat = nix::sys::statvfs::statvfs(&self.dir).ok()?;
        Some(stat.blocks_free().saturating_mul(stat.fragment_size()))
    }

    /// Keeps the reserve file at its size when there is room for it (best effort).
    pub fn keep_reserve(&self) {
        let size = self.config.reserve_bytes;
        if size == 0 {
            return;
        }
        let path = reserve_path(&self.dir);
        if std::fs::metadata(&path).is_ok_and(|m| m.len() >= size) {
            return;
        }
        // Leave as much free as the reserve itself, or the reserve would fill the disk.
        if self
            .free_bytes()
            .is_none_or(|free| free < size.saturating_mul(2))
        {
            return;
        }
        let made = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .and_then(|file| {
                nix::fcntl::posix_fallocate(&file, 0, size as i64)
                    .map_err(std::io::Error::from)
                    .and_then(|_| file.sync_all())
            });
        if let Err(err) = made {
            tracing::warn!("cannot keep the reserve {}: {err}", path.display());
            let _ = std::fs::remove_file(&path);
        }
    }

    /// Flushes anything outstanding (at shutdown) and stops the committer.
    pub fn close(&self) -> Result<(), StoreError> {
        let ticket = self.applied_ticket();
        let result = self.wait_durable(ticket);
        self.commits.stop();
        result
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.commits.stop();
    }
}

/// The first key after every key that starts with `prefix` (`None`: there is none).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

fn reserve_path(dir: &Path) -> PathBuf {
    dir.with_file_name(format!(
        "{}.reserve",
        dir.file_name().map_or("db".into(), |n| n.to_string_lossy())
    ))
}

/// Deletes the reserve file, making room on a full disk.
fn release_reserve(dir: &Path) {
    let path = reserve_path(dir);
    if std::fs::remove_file(&path).is_ok() {
        tracing::error!(
            "the state file system is full: released the reserve {} to go on recording",
            path.display()
        );
    }
}

#[cfg(test)]
mod tests;
