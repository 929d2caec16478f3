//! Typed reads and writes of the records, and the keys they live under.

use std::path::PathBuf;

use sha2::{Digest, Sha256};

use super::{
    Association, AuditStats, Checkpoint, IoFailure, JobRecord, RuleSnapshot, SessionRecord, Store,
    StoreError, Tree, Write,
};

/// Keys of the meta tree and of the index trees.
pub mod keys {
    use crate::time::Micros;

    pub const SCHEMA: &[u8] = b"schema";
    pub const AUDIT_STATS: &[u8] = b"audit-stats";
    pub const CHECKPOINT: &[u8] = b"audit-checkpoint";
    pub const CHAIN_ID: &[u8] = b"audit-chain-id";
    pub const RULE_SNAPSHOT: &[u8] = b"rule-snapshot";
    pub const LIVE_COUNTER: &[u8] = b"live-rule-counter";

    /// `run_as` NUL start-time (big-endian) job id: a user's jobs in start order.
    pub fn job_by_user(run_as: &str, started: Micros, id: &str) -> Vec<u8> {
        let mut key = user_prefix(run_as);
        key.extend_from_slice(&(started.max(0) as u64).to_be_bytes());
        key.extend_from_slice(id.as_bytes());
        key
    }

    /// The prefix of every index key of `name` (user names have no NUL).
    pub fn user_prefix(name: &str) -> Vec<u8> {
        let mut key = name.as_bytes().to_vec();
        key.push(0);
        key
    }

    /// The job id of a `job_by_user` key.
    pub fn job_id_of(key: &[u8]) -> Option<&str> {
        let at = key.iter().position(|&b| b == 0)?;
        std::str::from_utf8(key.get(at + 9..)?).ok()
    }

    /// `login` NUL ticket hash.
    pub fn session_by_login(login: &str, key: &str) -> Vec<u8> {
        let mut k = user_prefix(login);
        k.extend_from_slice(key.as_bytes());
        k
    }

    /// The ticket hash of a `session_by_login` key.
    pub fn session_key_of(key: &[u8]) -> Option<&str> {
        let at = key.iter().position(|&b| b == 0)?;
        std::str::from_utf8(&key[at + 1..]).ok()
    }
}

impl Store {
    pub fn association(&self, login: &str) -> Result<Option<Association>, StoreError> {
        self.get(Tree::Associations, login.as_bytes())
    }

    /// Every association (a walk: never under the write lock).
    pub fn associations(&self) -> Result<Vec<(String, Association)>, StoreError> {
        self.scan_named(Tree::Associations)
    }

    fn scan_named<T: serde::de::DeserializeOwned>(
        &self,
        tree: Tree,
    ) -> Result<Vec<(String, T)>, StoreError> {
        Ok(self
            .scan(tree, b"", usize::MAX)?
            .into_iter()
            .map(|(k, v)| (String::from_utf8_lossy(&k).into_owned(), v))
            .collect())
    }

    pub fn job(&self, id: &str) -> Result<Option<JobRecord>, StoreError> {
        self.get(Tree::Jobs, id.as_bytes())
    }

    /// Up to `limit` job ids of `run_as`, newest first, older than the job whose index
    /// key is `before` (a cursor from a previous page).
    pub fn job_ids_of(
        &self,
        run_as: &str,
        before: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, String)>, StoreError> {
        let keys = self.keys(
            Tree::JobsByUser,
            &keys::user_prefix(run_as),
            before,
            true,
            limit,
        )?;
        Ok(keys
            .into_iter()
            .filter_map(|k| {
                let id = keys::job_id_of(&k)?.to_string();
                Some((k, id))
            })
            .collect())
    }

    /// Up to `limit` job ids of `run_as`, oldest first.
    pub fn oldest_job_ids_of(&self, run_as: &str, limit: usize) -> Result<Vec<String>, StoreError> {
        let keys = self.keys(
            Tree::JobsByUser,
            &keys::user_prefix(run_as),
            None,
            false,
            limit,
        )?;
        Ok(keys
            .iter()
            .filter_map(|k| keys::job_id_of(k).map(str::to_string))
            .collect())
    }

    /// Up to `limit` job records from job id `from` on, in id order (a walk in pages).
    pub fn jobs_from(&self, from: &str, limit: usize) -> Result<Vec<JobRecord>, StoreError> {
        Ok(self
            .scan::<JobRecord>(Tree::Jobs, from.as_bytes(), limit)?
            .into_iter()
            .map(|(_, job)| job)
            .collect())
    }

    /// The writes that store `job` (and index it).
    pub fn put_job(job: &JobRecord) -> Vec<Write> {
        vec![
            Write::put(Tree::Jobs, job.id.as_str(), job),
            Write::mark(
                Tree::JobsByUser,
                keys::job_by_user(&job.run_as, job.started, &job.id),
            ),
        ]
    }

    /// The writes that delete `job` (and its index entry).
    pub fn delete_job(job: &JobRecord) -> Vec<Write> {
        vec![
            Write::delete(Tree::Jobs, job.id.as_str()),
            Write::delete(
                Tree::JobsByUser,
                keys::job_by_user(&job.run_as, job.started, &job.id),
            ),
        ]
    }

    pub fn session(&self, key: &str) -> Result<Option<SessionRecord>, StoreError> {
        self.get(Tree::Sessions, key.as_bytes())
    }

    /// Every session with its key (a walk: never under the write lock).
    pub fn sessions(&self) -> Result<Vec<(String, SessionRecord)>, StoreError> {
        self.scan_named(Tree::Sessions)
    }

    /// The sessions of `login` with their keys (at most `limit`).
    pub fn sessions_of(
        &self,
        login: &str,
        limit: usize,
    ) -> Result<Vec<(String, SessionRecord)>, StoreError> {
        let mut sessions = Vec::new();
        for k in self.keys(
            Tree::SessionsByLogin,
            &keys::user_prefix(login),
            None,
            false,
            limit,
        )? {
            let Some(key) = keys::session_key_of(&k) else {
                continue;
            };
            if let Some(session) = self.session(key)? {
                sessions.push((key.to_string(), session));
            }
        }
        Ok(sessions)
    }

    pub fn put_session(key: &str, session: &SessionRecord) -> Vec<Write> {
        vec![
            Write::put(Tree::Sessions, key, session),
            Write::mark(
                Tree::SessionsByLogin,
                keys::session_by_login(&session.login, key),
            ),
        ]
    }

    pub fn delete_session(key: &str, session: &SessionRecord) -> Vec<Write> {
        vec![
            Write::delete(Tree::Sessions, key),
            Write::delete(
                Tree::SessionsByLogin,
                keys::session_by_login(&session.login, key),
            ),
        ]
    }

    pub fn live_rules(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.scan_named(Tree::Rules)
    }

    pub fn rule_snapshot(&self) -> Result<Option<RuleSnapshot>, StoreError> {
        self.get(Tree::Meta, keys::RULE_SNAPSHOT)
    }

    pub fn put_rule_snapshot(snapshot: &RuleSnapshot) -> Write {
        Write::put(Tree::Meta, keys::RULE_SNAPSHOT, snapshot)
    }

    /// The number the next live rule id is made from; bumped with [`Self::put_live_counter`].
    pub fn live_counter(&self) -> Result<u64, StoreError> {
        Ok(self.get(Tree::Meta, keys::LIVE_COUNTER)?.unwrap_or(0))
    }

    pub fn put_live_counter(value: u64) -> Write {
        Write::put(Tree::Meta, keys::LIVE_COUNTER, &value)
    }

    pub fn audit_stats(&self) -> Result<AuditStats, StoreError> {
        Ok(self.get(Tree::Meta, keys::AUDIT_STATS)?.unwrap_or_default())
    }

    pub fn put_audit_stats(stats: &AuditStats) -> Write {
        Write::put(Tree::Meta, keys::AUDIT_STATS, stats)
    }

    pub fn checkpoint(&self) -> Result<Option<Checkpoint>, StoreError> {
        self.get(Tree::Meta, keys::CHECKPOINT)
    }

    pub fn put_checkpoint(checkpoint: &Checkpoint) -> Write {
        Write::put(Tree::Meta, keys::CHECKPOINT, checkpoint)
    }

    pub fn chain_id(&self) -> Result<Option<String>, StoreError> {
        self.get(Tree::Meta, keys::CHAIN_ID)
    }

    pub fn put_chain_id(id: &str) -> Write {
        Write::put(Tree::Meta, keys::CHAIN_ID, &id)
    }

    /// Where the rule snapshot with content hash `sha256` is kept.
    fn rule_files_path(&self, sha256: &str) -> PathBuf {
        self.dir().with_file_name(format!("rules-{sha256}.json"))
    }

    /// Writes the text of rule files to a snapshot file named by its content (durably,
    /// before anything in the store points to it); its hash. Two writers of the same
    /// snapshot at once each write a temporary file of their own ([`crate::sys::write_atomically`]).
    pub fn write_rule_files(&self, files: &[(String, String)]) -> Result<String, StoreError> {
        let content = serde_json::to_vec(files).expect("strings serialize");
        let sha256 = crate::sys::hex(&Sha256::digest(&content));
        let path = self.rule_files_path(&sha256);
        if path.exists() {
            return Ok(sha256);
        }
        crate::sys::write_atomically(&path, &content)
            .map_err(|e| StoreError::Io(IoFailure::io(path.display().to_string(), &e)))?;
        Ok(sha256)
    }

    /// Whether the snapshot file `sha256` is there.
    pub fn has_rule_files(&self, sha256: &str) -> bool {
        self.rule_files_path(sha256).exists()
    }

    /// The rule files of snapshot `sha256` ("" is no files).
    pub fn read_rule_files(&self, sha256: &str) -> Result<Vec<(String, String)>, StoreError> {
        if sha256.is_empty() {
            return Ok(Vec::new());
        }
        let path = self.rule_files_path(sha256);
        let content = std::fs::read(&path)
            .map_err(|e| StoreError::Io(IoFailure::io(path.display().to_string(), &e)))?;
        if crate::sys::hex(&Sha256::digest(&content)) != sha256 {
            return Err(StoreError::Corrupt {
                tree: "rule snapshot",
                key: path.display().to_string(),
                why: "its content does not match its hash".into(),
            });
        }
        serde_json::from_slice(&content).map_err(|e| StoreError::Corrupt {
            tree: "rule snapshot",
            key: path.display().to_string(),
            why: e.to_string(),
        })
    }

    /// Deletes rule snapshots other than `keep` (after the store points to `keep`).
    pub fn forget_rule_files(&self, keep: &str) {
        let Some(dir) = self.dir().parent() else {
            return;
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with("rules-")
                && (name.ends_with(".json") || name.ends_with(".tmp"))
                && name != format!("rules-{keep}.json")
            {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}
