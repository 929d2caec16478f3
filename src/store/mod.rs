//! The durable state, in sled: one tree per kind of record. Nothing outside this module
//! sees sled; callers read typed records and hand in [`Write`]s that [`Store::commit`]
//! applies atomically and flushes to disk before returning.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use crate::time::Micros;

/// The trees of the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tree {
    /// Counters and the last good rule files.
    Meta,
    /// login → [`Association`].
    Associations,
    /// live rule id → rule TOML.
    Rules,
    /// big-endian sequence number → audit record.
    Audit,
    /// job id → job record.
    Jobs,
    /// ticket hash → session record.
    Sessions,
}

const TREES: [(Tree, &str); 6] = [
    (Tree::Meta, "meta"),
    (Tree::Associations, "associations"),
    (Tree::Rules, "rules"),
    (Tree::Audit, "audit"),
    (Tree::Jobs, "jobs"),
    (Tree::Sessions, "sessions"),
];

#[derive(Debug)]
pub enum StoreError {
    /// The database could not be opened, read or written.
    Io(String),
    /// A change that did not reach the disk could not be undone in memory either, so
    /// memory may be ahead of the disk: the store refuses all use until reopened.
    Failed,
    /// A record on disk does not decode.
    Corrupt {
        tree: &'static str,
        key: String,
        why: String,
    },
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Io(why) => write!(f, "state store: {why}"),
            StoreError::Failed => write!(
                f,
                "state store: a write failed and could not be undone; proxyuserd must be restarted"
            ),
            StoreError::Corrupt { tree, key, why } => {
                write!(
                    f,
                    "state store: record {key:?} in {tree} does not decode: {why}"
                )
            }
        }
    }
}

impl std::error::Error for StoreError {}

impl From<sled::Error> for StoreError {
    fn from(err: sled::Error) -> Self {
        StoreError::Io(err.to_string())
    }
}

/// One change to apply in a [`Store::commit`].
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

    pub fn delete(tree: Tree, key: impl Into<Vec<u8>>) -> Self {
        Write {
            tree,
            key: key.into(),
            value: None,
        }
    }

    /// The audit record with sequence number `seq`.
    pub fn audit(seq: u64, record: &BTreeMap<String, String>) -> Self {
        Write::put(Tree::Audit, seq.to_be_bytes(), record)
    }
}

/// A login's current proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Association {
    pub proxy: String,
    /// When it was set.
    pub since: Micros,
    /// uid of the caller that set it.
    pub by_uid: u32,
}

/// A job: what ran, for whom, as whom, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: String,
    /// The login that submitted it.
    pub login: String,
    /// The user it ran as (the login's effective user then).
    pub run_as: String,
    pub uid: u32,
    pub argv: Vec<String>,
    pub cwd: String,
    pub state: JobState,
    pub started: Micros,
    /// 0 while running.
    pub finished: Micros,
    /// The exit code (`exited`), 128 + signal (`killed`), -1 (`failed`).
    pub exit_code: i32,
    pub signal: Option<i32>,
    /// Why it was killed or failed.
    pub reason: String,
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    pub caller_uid: u32,
    pub caller_pid: u32,
    pub caller: String,
    /// Process id and its start time (clock ticks since boot), to recognize the job's
    /// process group after a daemon crash.
    pub pid: u32,
    pub pid_start: u64,
    /// The transient unit it ran in (systemd backend), else "".
    #[serde(default)]
    pub unit: String,
}

impl JobRecord {
    pub fn running(&self) -> bool {
        self.state == JobState::Running
    }

    /// How the job ended (meaningful once it is not running).
    pub fn end(&self) -> JobEnd {
        JobEnd {
            state: self.state,
            exit_code: self.exit_code,
        }
    }
}

/// How a job ended, as `Wait` answers: its final state and exit code (the exit status,
/// 128 + signal, or -1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobEnd {
    pub state: JobState,
    pub exit_code: i32,
}

/// Where a job is in its life; stored (and shown) as its lower-case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Running,
    /// Its program exited by itself; the exit code is its status.
    Exited,
    /// It was killed by a signal (by the daemon: cancel, timeout, output cap).
    Killed,
    /// It never ran, or its end is unknown (the daemon stopped while it ran).
    Failed,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Running => "running",
            JobState::Exited => "exited",
            JobState::Killed => "killed",
            JobState::Failed => "failed",
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a web session ticket is; stored as its lower-case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionKind {
    /// A login ticket: the login the gateway authenticated.
    Login,
    /// A proxy ticket, bound to a login ticket.
    Proxy,
}

impl SessionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionKind::Login => "login",
            SessionKind::Proxy => "proxy",
        }
    }
}

/// A session ticket, stored under the SHA-256 of the ticket (never the ticket).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// A short, non-reversible id (a prefix of the key hash) for audit and admins.
    pub id: String,
    pub kind: SessionKind,
    pub login: String,
    /// The proxy of a proxy ticket; "" for a login ticket.
    pub proxy: String,
    /// The key of the login ticket a proxy ticket is bound to; "" for a login ticket.
    pub parent: String,
    pub created: Micros,
    pub last_used: Micros,
    /// Absolute end (created + ttl).
    pub expires: Micros,
    pub by_uid: u32,
}

/// The rule files of the last rule set that validated, so a daemon that starts with
/// broken files keeps serving the rules it had.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleSnapshot {
    pub generation: u64,
    /// (path, text) in load order.
    pub files: Vec<(String, String)>,
}

const SNAPSHOT_KEY: &[u8] = b"rule-files";
const LIVE_COUNTER_KEY: &[u8] = b"live-rule-counter";

pub struct Store {
    db: sled::Db,
    trees: Vec<sled::Tree>,
    /// sled's log file. sled 0.34 makes its writes stable with `sync_file_range`, which
    /// neither commits the file's metadata (its growing size) nor flushes the disk's
    /// cache: a power loss could still lose them. An `fdatasync` of the file after
    /// sled's flush makes a commit durable.
    log: std::fs::File,
    failed: AtomicBool,
}

impl Store {
    /// Opens (creating if needed) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(64 * 1024 * 1024)
            .open()
            .map_err(|e| StoreError::Io(format!("cannot open {}: {e}", dir.display())))?;
        let trees = TREES
            .iter()
            .map(|(_, name)| db.open_tree(name))
            .collect::<Result<_, _>>()?;
        let log = std::fs::File::open(dir.join("db")).map_err(|e| {
            StoreError::Io(format!("cannot open {}: {e}", dir.join("db").display()))
        })?;
        Ok(Store {
            db,
            trees,
            log,
            failed: AtomicBool::new(false),
        })
    }

    /// True once a failed write could not be undone (see [`StoreError::Failed`]).
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    fn tree(&self, tree: Tree) -> Result<&sled::Tree, StoreError> {
        if self.failed() {
            return Err(StoreError::Failed);
        }
        Ok(&self.trees[tree as usize])
    }

    fn decode<T: DeserializeOwned>(tree: Tree, key: &[u8], value: &[u8]) -> Result<T, StoreError> {
        serde_json::from_slice(value).map_err(|e| StoreError::Corrupt {
            tree: TREES[tree as usize].1,
            key: String::from_utf8_lossy(key).into_owned(),
            why: e.to_string(),
        })
    }

    /// The record at `key` in `tree`.
    pub fn get<T: DeserializeOwned>(
        &self,
        tree: Tree,
        key: &[u8],
    ) -> Result<Option<T>, StoreError> {
        match self.tree(tree)?.get(key)? {
            Some(value) => Self::decode(tree, key, &value).map(Some),
            None => Ok(None),
        }
    }

    /// Every record of `tree` in key order, starting at `from`.
    pub fn scan<T: DeserializeOwned>(
        &self,
        tree: Tree,
        from: &[u8],
    ) -> Result<impl Iterator<Item = Result<(Vec<u8>, T), StoreError>> + '_, StoreError> {
        Ok(self.tree(tree)?.range(from.to_vec()..).map(move |item| {
            let (key, value) = item?;
            Ok((key.to_vec(), Self::decode(tree, &key, &value)?))
        }))
    }

    /// The record with the greatest key in `tree`.
    pub fn last<T: DeserializeOwned>(
        &self,
        tree: Tree,
    ) -> Result<Option<(Vec<u8>, T)>, StoreError> {
        match self.tree(tree)?.last()? {
            Some((key, value)) => Ok(Some((key.to_vec(), Self::decode(tree, &key, &value)?))),
            None => Ok(None),
        }
    }

    pub fn association(&self, login: &str) -> Result<Option<Association>, StoreError> {
        self.get(Tree::Associations, login.as_bytes())
    }

    pub fn associations(&self) -> Result<Vec<(String, Association)>, StoreError> {
        self.scan_named(Tree::Associations)
    }

    /// Every record of `tree` with its key as text.
    fn scan_named<T: DeserializeOwned>(&self, tree: Tree) -> Result<Vec<(String, T)>, StoreError> {
        self.scan(tree, b"")?
            .map(|r| r.map(|(k, v)| (String::from_utf8_lossy(&k).into_owned(), v)))
            .collect()
    }

    pub fn job(&self, id: &str) -> Result<Option<JobRecord>, StoreError> {
        self.get(Tree::Jobs, id.as_bytes())
    }

    pub fn jobs(&self) -> Result<Vec<JobRecord>, StoreError> {
        self.scan(Tree::Jobs, b"")?
            .map(|r| r.map(|(_, v)| v))
            .collect()
    }

    pub fn put_job(job: &JobRecord) -> Write {
        Write::put(Tree::Jobs, job.id.as_str(), job)
    }

    pub fn session(&self, key: &str) -> Result<Option<SessionRecord>, StoreError> {
        self.get(Tree::Sessions, key.as_bytes())
    }

    /// Every session with its key.
    pub fn sessions(&self) -> Result<Vec<(String, SessionRecord)>, StoreError> {
        self.scan_named(Tree::Sessions)
    }

    pub fn live_rules(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.scan_named(Tree::Rules)
    }

    pub fn rule_snapshot(&self) -> Result<Option<RuleSnapshot>, StoreError> {
        self.get(Tree::Meta, SNAPSHOT_KEY)
    }

    pub fn put_rule_snapshot(snapshot: &RuleSnapshot) -> Write {
        Write::put(Tree::Meta, SNAPSHOT_KEY, snapshot)
    }

    /// The number the next live rule id is made from; bumped with [`Self::put_live_counter`].
    pub fn live_counter(&self) -> Result<u64, StoreError> {
        Ok(self.get(Tree::Meta, LIVE_COUNTER_KEY)?.unwrap_or(0))
    }

    pub fn put_live_counter(value: u64) -> Write {
        Write::put(Tree::Meta, LIVE_COUNTER_KEY, &value)
    }

    /// Applies `writes` atomically, leaving them to sled's periodic flush (for data whose
    /// loss in a crash is harmless).
    pub fn commit_unflushed(&self, writes: &[Write]) -> Result<(), StoreError> {
        self.apply(writes).map(drop)
    }

    /// Applies `writes` atomically; the values they replaced.
    fn apply(&self, writes: &[Write]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        if self.failed() {
            return Err(StoreError::Failed);
        }
        self.trees
            .as_slice()
            .transaction(|tx| {
                let mut previous = Vec::with_capacity(writes.len());
                for w in writes {
                    let t = &tx[w.tree as usize];
                    let old = match &w.value {
                        Some(v) => t.insert(w.key.as_slice(), v.as_slice())?,
                        None => t.remove(w.key.as_slice())?,
                    };
                    previous.push(old.map(|o| o.to_vec()));
                }
                Ok::<_, ConflictableTransactionError<()>>(previous)
            })
            .map_err(|e| match e {
                TransactionError::Storage(e) => StoreError::from(e),
                TransactionError::Abort(()) => StoreError::Io("transaction aborted".into()),
            })
    }

    /// Applies `writes` atomically and flushes them to disk. If the flush fails the
    /// writes are undone in memory as well, so nobody sees a change that is not durable.
    pub fn commit(&self, writes: &[Write]) -> Result<(), StoreError> {
        let previous = self.apply(writes)?;
        let flushed = self
            .db
            .flush()
            .map_err(|e| e.to_string())
            .and_then(|_| self.log.sync_data().map_err(|e| e.to_string()));
        if let Err(err) = flushed {
            let undo = writes.iter().zip(previous).rev().try_for_each(|(w, old)| {
                let t = &self.trees[w.tree as usize];
                match old {
                    Some(v) => t.insert(w.key.as_slice(), v).map(drop),
                    None => t.remove(w.key.as_slice()).map(drop),
                }
            });
            if let Err(undo) = undo {
                tracing::error!("cannot undo a change that did not reach the disk: {undo}");
                self.failed.store(true, Ordering::Release);
            }
            return Err(StoreError::Io(format!("flush to disk failed: {err}")));
        }
        Ok(())
    }

    /// A fresh unique number (sled's monotonic id generator; survives restarts).
    pub fn unique_id(&self) -> Result<u64, StoreError> {
        Ok(self.db.generate_id()?)
    }

    /// Flushes anything outstanding (at shutdown).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        self.log
            .sync_data()
            .map_err(|e| StoreError::Io(format!("fdatasync failed: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("proxyuserd-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn commits_survive_reopen() {
        let dir = temp_dir("reopen");
        {
            let store = Store::open(&dir).unwrap();
            let assoc = Association {
                proxy: "etl".into(),
                since: 7,
                by_uid: 1000,
            };
            store
                .commit(&[
                    Write::put(Tree::Associations, "alice", &assoc),
                    Write::put(Tree::Associations, "bob", &assoc),
                ])
                .unwrap();
            store
                .commit(&[Write::delete(Tree::Associations, "bob")])
                .unwrap();
        }
        let store = Store::open(&dir).unwrap();
        let all = store.associations().unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].0, "alice");
        assert_eq!(all[0].1.proxy, "etl");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn corrupt_record_is_named() {
        let dir = temp_dir("corrupt");
        let store = Store::open(&dir).unwrap();
        store
            .tree(Tree::Associations)
            .unwrap()
            .insert("alice", b"{not json".to_vec())
            .unwrap();
        let err = store.association("alice").unwrap_err().to_string();
        assert!(
            err.contains("\"alice\" in associations does not decode"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
