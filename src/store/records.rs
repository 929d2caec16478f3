//! The typed records the store keeps, as they are serialized (JSON) in its trees.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::time::Micros;

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
    /// processes after a daemon crash (direct backend).
    pub pid: u32,
    pub pid_start: u64,
    /// The transient unit it ran in (systemd backend), else "".
    #[serde(default)]
    pub unit: String,
    /// Whether its output files are still kept (they are deleted before the record
    /// when the run-as user's output goes over `exec.max_output_bytes_per_user`).
    #[serde(default = "yes")]
    pub output_kept: bool,
}

fn yes() -> bool {
    true
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

/// How a job ended, as `Wait` answers: its final state and exit code (the exit status,
/// 128 + signal, or -1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobEnd {
    pub state: JobState,
    pub exit_code: i32,
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
    /// When it was last used, as stored: renewals are written at most every few
    /// seconds, so the live value may be newer (see the authority's sessions).
    pub last_used: Micros,
    /// Absolute end (created + ttl).
    pub expires: Micros,
    pub by_uid: u32,
}

/// The last rule set that validated, so a daemon that starts with broken files keeps
/// serving the rules it had: the generation and the SHA-256 of the snapshot file that
/// holds the files' text (kept beside the store, not in it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleSnapshot {
    pub generation: u64,
    /// Hex SHA-256 of the snapshot file's content; "" for no files.
    pub sha256: String,
}

/// What the audit tree holds, kept up to date with every append and prune.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditStats {
    /// Bytes of the records in the tree (their serialized size).
    pub bytes: u64,
    /// Records in the tree.
    pub records: u64,
}

/// Where the retained audit chain starts: the seq and hash of the last pruned record
/// (the first retained one's `prev`). `seq` 0 with the genesis hash: nothing pruned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub seq: u64,
    pub hash: String,
    /// When that record was written.
    pub time: Micros,
}
