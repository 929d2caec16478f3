//! The store's schema version and the migrations from older ones, run at open.
//!
//! - 1 (no version key, proxyuserd 0.1): meta, associations, rules, audit, jobs,
//!   sessions; the last good rule files' text inside the meta tree.
//! - 2: adds the `jobs-by-user` and `sessions-by-login` indexes, audit statistics, a
//!   chain id, and moves the rule files' text out of the store into a snapshot file.

use serde::{Deserialize, Serialize};

use super::{AuditStats, Db, IoFailure, RuleSnapshot, Store, StoreError, Tree, Write, keys};

/// The schema this build writes.
pub const SCHEMA_VERSION: u32 = 2;

/// The rule snapshot as version 1 kept it, inside the meta tree.
#[derive(Deserialize, Serialize)]
pub struct RuleSnapshotV1 {
    pub generation: u64,
    pub files: Vec<(String, String)>,
}

const SNAPSHOT_V1_KEY: &[u8] = b"rule-files";

pub(super) fn migrate(store: &Store, db: &Db) -> Result<(), StoreError> {
    let meta = db.tree(Tree::Meta);
    let version: Option<u32> = match meta.get(keys::SCHEMA)? {
        Some(v) => Some(Store::decode(Tree::Meta, keys::SCHEMA, &v)?),
        None => None,
    };
    let fresh = version.is_none() && db.trees.iter().all(sled::Tree::is_empty);
    match version {
        Some(SCHEMA_VERSION) => Ok(()),
        Some(newer) if newer > SCHEMA_VERSION => Err(StoreError::Newer {
            found: newer,
            known: SCHEMA_VERSION,
        }),
        _ if fresh => write(db, &[Write::put(Tree::Meta, keys::SCHEMA, &SCHEMA_VERSION)]),
        _ => {
            let from = version.unwrap_or(1);
            tracing::info!("migrating the store from schema {from} to {SCHEMA_VERSION}");
            from_1_to_2(store, db)
        }
    }
}

/// Writes and flushes directly (migrations run before the committer has a database).
fn write(db: &Db, writes: &[Write]) -> Result<(), StoreError> {
    for w in writes {
        let tree = db.tree(w.tree);
        match &w.value {
            Some(v) => tree.insert(w.key.as_slice(), v.as_slice())?,
            None => tree.remove(w.key.as_slice())?,
        };
    }
    db.sled.flush()?;
    db.log
        .sync_data()
        .map_err(|e| StoreError::Io(IoFailure::io("fdatasync of the log", &e)))
}

fn from_1_to_2(store: &Store, db: &Db) -> Result<(), StoreError> {
    let mut writes = Vec::new();
    for item in db.tree(Tree::Jobs).iter() {
        let (key, value) = item?;
        let job: super::JobRecord = Store::decode(Tree::Jobs, &key, &value)?;
        writes.push(Write::mark(
            Tree::JobsByUser,
            keys::job_by_user(&job.run_as, job.started, &job.id),
        ));
    }
    for item in db.tree(Tree::Sessions).iter() {
        let (key, value) = item?;
        let session: super::SessionRecord = Store::decode(Tree::Sessions, &key, &value)?;
        let key = String::from_utf8_lossy(&key);
        writes.push(Write::mark(
            Tree::SessionsByLogin,
            keys::session_by_login(&session.login, &key),
        ));
    }
    let mut stats = AuditStats::default();
    for item in db.tree(Tree::Audit).iter() {
        let (key, value) = item?;
        stats.bytes += (key.len() + value.len()) as u64;
        stats.records += 1;
    }
    writes.push(Write::put(Tree::Meta, keys::AUDIT_STATS, &stats));
    if let Some(old) = db.tree(Tree::Meta).get(SNAPSHOT_V1_KEY)? {
        let old: RuleSnapshotV1 = Store::decode(Tree::Meta, SNAPSHOT_V1_KEY, &old)?;
        let sha256 = store.write_rule_files(&old.files)?;
        writes.push(Write::put(
            Tree::Meta,
            keys::RULE_SNAPSHOT,
            &RuleSnapshot {
                generation: old.generation,
                sha256,
            },
        ));
        writes.push(Write::delete(Tree::Meta, SNAPSHOT_V1_KEY));
    }
    writes.push(Write::put(Tree::Meta, keys::SCHEMA, &SCHEMA_VERSION));
    write(db, &writes)
}
