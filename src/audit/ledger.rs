//! The writer of the audit chain: one write transaction at a time appends records and
//! the state changes they describe; the store's group commit makes them durable.
//!
//! - A [`Txn`] holds the chain's head. Records and writes it applies are visible at once
//!   but durable only after [`Txn::commit`], which lets go of the head first, so that
//!   other transactions apply while this one waits for the flush they will share.
//! - Records that need no transaction of their own (denials) are queued with
//!   [`Ledger::record_later`] and appended by the committer before its next flush: that
//!   never takes the head, so a denial while a transaction is open cannot deadlock. The
//!   bus layer, which holds no transaction, waits for them ([`Ledger::settled`]) before
//!   it answers.
//! - Once durable, records are copied to journald and the head goes to the anchor file.

use std::collections::VecDeque;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use super::anchor::{self, Anchor};
use super::journal::Journal;
use super::{Draft, Event, GENESIS, HASH, Record, seal};
use crate::store::{AuditStats, Checkpoint, Hooks, Store, StoreError, Ticket, Tree, Write};
use crate::time::{Micros, now_micros};

#[derive(Debug)]
pub struct AuditUnavailable(pub StoreError);

impl fmt::Display for AuditUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the audit log cannot be written, so nothing was done ({})",
            self.0
        )
    }
}

impl std::error::Error for AuditUnavailable {}

impl From<StoreError> for AuditUnavailable {
    fn from(err: StoreError) -> Self {
        AuditUnavailable(err)
    }
}

/// Why the audit chain cannot be continued at start.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot open the audit anchor {}: {source}", path.display())]
    Anchor {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("no random bytes for the audit chain id: {0}")]
    Random(std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The gap the anchor shows cannot be recorded.
    #[error(transparent)]
    Record(#[from] AuditUnavailable),
}

/// The end of the chain, as far as it has been applied.
struct Head {
    next_seq: u64,
    last_hash: String,
    stats: AuditStats,
}

/// What the retained log is: its chain id, where it starts and where it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extent {
    pub chain: String,
    pub checkpoint: Checkpoint,
    pub head_seq: u64,
    pub head_hash: String,
    pub stats: AuditStats,
}

pub struct Ledger {
    store: Arc<Store>,
    head: Mutex<Head>,
    chain: String,
    /// Drafts waiting for the committer (denials), with their time, and how many were
    /// ever queued.
    queued: Mutex<(Vec<(Draft, Micros)>, u64)>,
    /// How many queued drafts the committer has handled (appended, or given up on).
    handled: tokio::sync::watch::Sender<u64>,
    /// Applied records not yet durable, oldest first, for the journal and the anchor.
    unsent: Mutex<VecDeque<(Ticket, Record)>>,
    journal: Option<Journal>,
    anchor: Anchor,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Ledger {
    /// Continues the chain stored in `store`, checking it against the anchor at
    /// `anchor_path`: records the anchor names that the store lacks are recorded as an
    /// `audit-gap` (and logged as an error).
    pub fn open(
        store: Arc<Store>,
        journal: Option<Journal>,
        anchor_path: &Path,
    ) -> Result<Arc<Self>, OpenError> {
        let (anchor, anchored) = Anchor::open(anchor_path).map_err(|source| OpenError::Anchor {
            path: anchor_path.to_owned(),
            source,
        })?;
        let chain = match store.chain_id()? {
            Some(chain) => chain,
            None => {
                let id = crate::sys::random_bytes(16).map_err(OpenError::Random)?;
                let chain = crate::sys::hex(&id);
                store.commit(&[Store::put_chain_id(&chain)])?;
                chain
            }
        };
        let head = Self::load_head(&store)?;
        let ledger = Arc::new(Ledger {
            store: store.clone(),
            head: Mutex::new(head),
            chain,
            queued: Mutex::new((Vec::new(), 0)),
            handled: tokio::sync::watch::Sender::new(0),
            unsent: Mutex::new(VecDeque::new()),
            journal,
            anchor,
        });
        let weak = Arc::downgrade(&ledger);
        let after = weak.clone();
        store.set_hooks(Hooks {
            before_flush: Box::new(move || {
                if let Some(ledger) = Weak::upgrade(&weak) {
                    ledger.append_queued();
                }
            }),
            after_flush: Box::new(move |ticket| {
                if let Some(ledger) = Weak::upgrade(&after) {
                    ledger.durable(ticket);
                }
            }),
        });
        ledger.check_anchor(anchored)?;
        Ok(ledger)
    }

    fn load_head(store: &Store) -> Result<Head, StoreError> {
        let stats = store.audit_stats()?;
        let (next_seq, last_hash) = match store.last::<Record>(Tree::Audit)? {
            Some((key, record)) => {
                let seq = u64::from_be_bytes(key.as_slice().try_into().map_err(|_| {
                    StoreError::Corrupt {
                        tree: "audit",
                        key: format!("{key:?}"),
                        why: "key is not a sequence number".into(),
                    }
                })?);
                (seq + 1, record.get(HASH).cloned().unwrap_or_default())
            }
            None => match store.checkpoint()? {
                Some(checkpoint) => (checkpoint.seq + 1, checkpoint.hash),
                None => (1, GENESIS.to_string()),
            },
        };
        Ok(Head {
            next_seq,
            last_hash,
            stats,
        })
    }

    /// Compares the store's chain with the head the anchor kept.
    fn check_anchor(&self, anchored: Option<anchor::Head>) -> Result<(), AuditUnavailable> {
        let (last_seq, last_hash) = {
            let head = lock(&self.head);
            (head.next_seq - 1, head.last_hash.clone())
        };
        let Some(anchored) = anchored else {
            // A new store, or one from before anchors: the anchor starts here.
            self.write_anchor(last_seq, &last_hash);
            return Ok(());
        };
        let missing = if anchored.chain != self.chain {
            Some(format!(
                "the store holds chain {} but the anchor names chain {} (head {}): the store \
                 was replaced",
                self.chain, anchored.chain, anchored.seq
            ))
        } else if anchored.seq > last_seq {
            Some(format!(
                "records {}–{} (the store ends at {last_seq}, the anchor at {})",
                last_seq + 1,
                anchored.seq,
                anchored.seq
            ))
        } else {
            match self
                .store
                .get::<Record>(Tree::Audit, &anchored.seq.to_be_bytes())?
            {
                Some(record) if record.get(HASH) != Some(&anchored.hash) => Some(format!(
                    "record {} differs from the one the anchor names (hash {})",
                    anchored.seq, anchored.hash
                )),
                None if self.checkpoint().is_none_or(|c| c.seq < anchored.seq) => {
                    Some(format!("record {} (named by the anchor)", anchored.seq))
                }
                _ => None,
            }
        };
        match missing {
            Some(missing) => {
                tracing::error!(
                    "the audit log lost records: {missing}; recording an audit-gap and \
                     continuing the chain from record {last_seq}"
                );
                let draft = Draft::new(Event::AuditGap)
                    .with("missing", missing)
                    .with("anchor_seq", anchored.seq.to_string())
                    .with("anchor_hash", anchored.hash)
                    .with("anchor_chain", anchored.chain)
                    .with("store_seq", last_seq.to_string());
                let mut txn = self.begin()?;
                txn.record(draft, Vec::new(), now_micros())?;
                txn.commit()
            }
            None => {
                self.write_anchor(last_seq, &last_hash);
                Ok(())
            }
        }
    }

    fn write_anchor(&self, seq: u64, hash: &str) {
        let head = anchor::Head {
            chain: self.chain.clone(),
            seq,
            hash: hash.to_string(),
        };
        if let Err(err) = self.anchor.write(&head) {
            tracing::error!(
                "cannot write the audit anchor {}: {err}",
                self.anchor.path().display()
            );
        }
    }

    /// The chain's id (also in every journald copy as `PROXYUSERD_CHAIN`).
    pub fn chain(&self) -> &str {
        &self.chain
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Starts a write transaction; fails at once while the store takes no writes.
    pub fn begin(&self) -> Result<Txn<'_>, AuditUnavailable> {
        if let Some(why) = self.store.unavailable() {
            return Err(AuditUnavailable(StoreError::Unavailable(why)));
        }
        Ok(Txn {
            ledger: self,
            head: lock(&self.head),
            ticket: None,
            bytes: 0,
        })
    }

    /// Queues a record that needs no transaction of its own (a denial): the committer
    /// appends it before its next flush. Never blocks on the chain's head.
    pub fn record_later(&self, draft: Draft) {
        {
            let mut queued = lock(&self.queued);
            queued.0.push((draft, now_micros()));
            queued.1 += 1;
        }
        self.store.nudge();
    }

    fn append_queued(&self) {
        let (drafts, queued) = {
            let mut queued = lock(&self.queued);
            (std::mem::take(&mut queued.0), queued.1)
        };
        if !drafts.is_empty() {
            match self.begin() {
                Ok(mut txn) => {
                    for (draft, time) in drafts {
                        let event = draft.event.name();
                        if let Err(err) = txn.record(draft, Vec::new(), time) {
                            tracing::error!("{event} record not written: {err}");
                        }
                    }
                    // The committer flushes right after this: no wait here.
                    txn.release();
                }
                Err(err) => {
                    tracing::error!(
                        "{} audit {} (denials) not recorded: {err}",
                        drafts.len(),
                        if drafts.len() == 1 {
                            "record"
                        } else {
                            "records"
                        }
                    )
                }
            }
        }
        self.handled.send_if_modified(|handled| {
            let more = *handled < queued;
            *handled = queued;
            more
        });
    }

    /// Completes once every record queued so far is appended and everything applied
    /// is durable — or the store has failed, and reads see what is on disk anyway (the
    /// changes that failed were never acknowledged). Only for code that holds no
    /// transaction (the bus layer).
    pub async fn settled(&self) {
        let queued = lock(&self.queued).1;
        if *self.handled.borrow() < queued {
            let mut handled = self.handled.subscribe();
            let _ = handled.wait_for(|n| *n >= queued).await;
        }
        let ticket = self.store.applied_ticket();
        // A failure is the failed writers' to report.
        let _ = self.store.durable(ticket).await;
    }

    /// After a flush: copies what became durable to the journal, and moves the anchor.
    fn durable(&self, ticket: Ticket) {
        let mut done = Vec::new();
        {
            let mut unsent = lock(&self.unsent);
            while unsent.front().is_some_and(|(t, _)| *t <= ticket) {
                if let Some((_, record)) = unsent.pop_front() {
                    done.push(record);
                }
            }
        }
        let Some(last) = done.last() else {
            return;
        };
        let seq = last
            .get(super::SEQ)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        self.write_anchor(seq, last.get(HASH).map_or("", String::as_str));
        if let Some(journal) = &self.journal {
            for record in &done {
                journal.send_record(record, &self.chain);
            }
        }
    }

    /// Records from `since` (inclusive), at most `max`.
    pub fn read(&self, since: u64, max: usize) -> Result<Vec<Record>, StoreError> {
        Ok(self
            .store
            .scan::<Record>(Tree::Audit, &since.to_be_bytes(), max)?
            .into_iter()
            .map(|(_, record)| record)
            .collect())
    }

    /// Where the retained chain starts (genesis if nothing was pruned).
    pub fn checkpoint(&self) -> Option<Checkpoint> {
        self.store.checkpoint().ok().flatten()
    }

    /// The retained log's extent.
    pub fn extent(&self) -> Extent {
        let head = lock(&self.head);
        Extent {
            chain: self.chain.clone(),
            checkpoint: self.checkpoint().unwrap_or(Checkpoint {
                seq: 0,
                hash: GENESIS.into(),
                time: 0,
            }),
            head_seq: head.next_seq - 1,
            head_hash: head.last_hash.clone(),
            stats: head.stats.clone(),
        }
    }

    /// If the store takes no writes, tries to reopen it (when there is room again);
    /// true if it takes writes now.
    pub fn recover(&self) -> bool {
        if self.store.unavailable().is_none() {
            return true;
        }
        let mut head = lock(&self.head);
        if let Err(err) = self.store.reopen() {
            tracing::debug!("the state store cannot be reopened yet: {err}");
            return false;
        }
        match Self::load_head(&self.store) {
            Ok(fresh) => *head = fresh,
            Err(err) => {
                tracing::error!("cannot read the audit chain after reopening: {err}");
                return false;
            }
        }
        lock(&self.unsent).clear();
        tracing::warn!(
            "the state store takes writes again (the audit chain continues at record {})",
            head.next_seq
        );
        true
    }

    /// Deletes the oldest records while the log is over `max_bytes` (0: no limit) or
    /// they are older than `retention` µs (0: none), in batches, each leaving a
    /// checkpoint and an `audit-pruned` record. The number of records deleted.
    pub fn prune(&self, max_bytes: u64, retention: Micros, now: Micros) -> Result<u64, StoreError> {
        const BATCH: usize = 512;
        let mut pruned = 0;
        loop {
            let stats = lock(&self.head).stats.clone();
            if retention == 0 && (max_bytes == 0 || stats.bytes <= max_bytes) {
                return Ok(pruned);
            }
            let checkpoint = self.checkpoint();
            let from = checkpoint.as_ref().map_or(1, |c| c.seq + 1);
            let oldest = self
                .store
                .scan::<Record>(Tree::Audit, &from.to_be_bytes(), BATCH)?;
            // Keep a margin under the size limit so that pruning does not run per record.
            let target = max_bytes - max_bytes / 10;
            let mut bytes = stats.bytes;
            let mut cut = Vec::new();
            for (key, record) in &oldest {
                let time: Micros = record
                    .get(super::TIME)
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(0);
                let too_big = max_bytes > 0 && bytes > target && stats.bytes > max_bytes;
                let too_old = retention > 0 && time < now - retention;
                // Never the newest record: the chain's head stays in the store.
                if !(too_big || too_old) || cut.len() + 1 >= stats.records as usize {
                    break;
                }
                let size = key.len() + serde_json::to_vec(record).map_or(0, |v| v.len());
                bytes = bytes.saturating_sub(size as u64);
                cut.push((key.clone(), record, size as u64, time));
            }
            let (Some(first), Some(last)) = (cut.first(), cut.last()) else {
                return Ok(pruned);
            };
            let reason = if max_bytes > 0 && stats.bytes > max_bytes {
                format!("the log was over audit.max_bytes = {max_bytes}")
            } else {
                format!(
                    "older than audit.retention_secs = {}",
                    retention / 1_000_000
                )
            };
            let first_seq = first.1.get(super::SEQ).cloned().unwrap_or_default();
            let last_seq: u64 = last
                .1
                .get(super::SEQ)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let checkpoint = Checkpoint {
                seq: last_seq,
                hash: last.1.get(HASH).cloned().unwrap_or_default(),
                time: last.3,
            };
            let freed: u64 = cut.iter().map(|c| c.2).sum();
            let mut writes: Vec<Write> = cut
                .iter()
                .map(|(key, ..)| Write::delete(Tree::Audit, key.clone()))
                .collect();
            writes.push(Store::put_checkpoint(&checkpoint));
            let draft = Draft::new(Event::AuditPruned)
                .with("from_seq", first_seq)
                .with("to_seq", last_seq.to_string())
                .with("checkpoint_hash", checkpoint.hash.as_str())
                .with("records", cut.len().to_string())
                .with("bytes", freed.to_string())
                .with("reason", reason);
            let mut txn = self.begin().map_err(|e| e.0)?;
            txn.head.stats.bytes = txn.head.stats.bytes.saturating_sub(freed);
            txn.head.stats.records = txn.head.stats.records.saturating_sub(cut.len() as u64);
            txn.record(draft, writes, now).map_err(|e| e.0)?;
            txn.commit().map_err(|e| e.0)?;
            pruned += cut.len() as u64;
            tracing::info!(
                "pruned audit records {}–{last_seq}; the chain continues from the checkpoint",
                cut.first().map_or(String::new(), |c| c
                    .1
                    .get(super::SEQ)
                    .cloned()
                    .unwrap_or_default())
            );
        }
    }
}

/// A write transaction: holds the chain's head until [`commit`](Txn::commit).
#[must_use = "a transaction's changes are durable only after commit"]
pub struct Txn<'a> {
    ledger: &'a Ledger,
    head: MutexGuard<'a, Head>,
    ticket: Option<Ticket>,
    /// Bytes applied so far (for the caller's write budget).
    bytes: u64,
}

impl Txn<'_> {
    /// The store, to read under the transaction.
    pub fn store(&self) -> &Store {
        &self.ledger.store
    }

    /// Seals `draft` at time `now` and applies it together with `writes`, atomically.
    /// Nothing is changed if that fails.
    pub fn record(
        &mut self,
        draft: Draft,
        mut writes: Vec<Write>,
        now: Micros,
    ) -> Result<Record, AuditUnavailable> {
        let head = &mut *self.head;
        let record = seal(draft, head.next_seq, now, &head.last_hash);
        let value = serde_json::to_vec(&record).expect("records serialize");
        let mut stats = head.stats.clone();
        stats.bytes += (8 + value.len()) as u64;
        stats.records += 1;
        writes.push(Write::audit(head.next_seq, value));
        writes.push(Store::put_audit_stats(&stats));
        // The record joins `unsent` in the same step that gives it its ticket: a flush
        // that covered the ticket and finished in between would never copy it to the
        // journal or move the anchor to it (the committer takes `unsent` only after it
        // flushed, never while a write waits for it).
        let mut unsent = lock(&self.ledger.unsent);
        let ticket = self.ledger.store.apply(&writes)?;
        unsent.push_back((ticket, record.clone()));
        drop(unsent);
        self.bytes += writes.iter().map(|w| w.size() as u64).sum::<u64>();
        head.next_seq += 1;
        head.last_hash = record[HASH].clone();
        head.stats = stats;
        self.ticket = Some(ticket);
        Ok(record)
    }

    /// Applies `writes` that need no record of their own (e.g. a session's renewal).
    pub fn apply(&mut self, writes: &[Write]) -> Result<(), AuditUnavailable> {
        if writes.is_empty() {
            return Ok(());
        }
        self.ticket = Some(self.ledger.store.apply(writes)?);
        self.bytes += writes.iter().map(|w| w.size() as u64).sum::<u64>();
        Ok(())
    }

    /// Bytes this transaction has applied.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Lets go of the head, then waits until everything applied is durable.
    pub fn commit(self) -> Result<(), AuditUnavailable> {
        let Txn {
            ledger,
            head,
            ticket,
            ..
        } = self;
        drop(head);
        match ticket {
            Some(ticket) => Ok(ledger.store.wait_durable(ticket)?),
            None => Ok(()),
        }
    }

    /// Lets go of the head without waiting: what was applied becomes durable with the
    /// next flush (for writes whose loss in a crash is harmless).
    pub fn release(self) {}
}
