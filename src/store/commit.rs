//! Group commit: one thread flushes for everybody.
//!
//! Every [`Store::apply`](super::Store::apply) gets the next [`Ticket`]; the committer
//! waits for applied-but-not-durable work, takes the newest ticket, flushes, and marks
//! every ticket up to it durable. A ticket carries the epoch of the database it was
//! applied to: after a failed flush the database is reopened on what is on disk (a new
//! epoch), and tickets of the old epoch that were not durable by then never will be.
//!
//! Until then, memory is ahead of the disk by the changes that failed. The committer
//! keeps what each applied change replaced until it is durable; after a failure those
//! values become an overlay through which reads see what is on disk.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;

use tokio::sync::watch;

use super::{Db, IoFailure, Tree, Unavailable};

/// What one applied change replaced: (tree, key, the value before; `None` for none).
pub(super) type Replaced = Vec<(Tree, Vec<u8>, Option<sled::IVec>)>;

/// The values on disk of the keys that changes which failed to reach it changed.
pub(super) type Overlay = HashMap<(Tree, Vec<u8>), Option<sled::IVec>>;

/// A point in the sequence of applied changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ticket {
    epoch: u64,
    n: u64,
}

/// What the committer does around each flush.
pub struct Hooks {
    /// Before each flush, with nothing locked: may apply more (queued records).
    pub before_flush: Box<dyn Fn() + Send + Sync>,
    /// After a successful flush that made everything up to `ticket` durable.
    pub after_flush: Box<dyn Fn(Ticket) + Send + Sync>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct State {
    epoch: u64,
    applied: u64,
    durable: u64,
    /// How far the previous epoch got before it failed.
    durable_before: u64,
    /// Why writes are refused, until the store is reopened.
    failure: Option<Unavailable>,
    /// Work for the hooks even without new applies.
    nudged: bool,
    stopping: bool,
}

impl State {
    /// Ok once `ticket` is durable; Err if it never will be; None to keep waiting.
    fn outcome(&self, ticket: Ticket) -> Option<Result<(), Unavailable>> {
        if ticket.epoch < self.epoch {
            return Some(if ticket.n <= self.durable_before {
                Ok(())
            } else {
                Err(Unavailable::Lost)
            });
        }
        if ticket.n <= self.durable {
            return Some(Ok(()));
        }
        if let Some(why) = &self.failure {
            return Some(Err(why.clone()));
        }
        if self.stopping {
            return Some(Err(Unavailable::Closing));
        }
        None
    }
}

pub(super) struct Commits {
    state: Mutex<State>,
    /// Wakes the committer (new work) and blocking waiters (progress).
    changed: Condvar,
    /// The same progress, for async waiters.
    progress: watch::Sender<State>,
    db: Mutex<Option<Arc<Db>>>,
    /// What not-yet-durable changes replaced, oldest first.
    pending: Mutex<VecDeque<(Ticket, Replaced)>>,
    /// Set when a flush failed: reads see the disk through it until the reopen.
    overlay: Mutex<Option<Arc<Overlay>>>,
    hooks: OnceLock<Hooks>,
    thread: Mutex<Option<JoinHandle<()>>>,
    dir: PathBuf,
}

impl Commits {
    pub(super) fn start(dir: PathBuf) -> Arc<Self> {
        let state = State {
            epoch: 1,
            applied: 0,
            durable: 0,
            durable_before: 0,
            failure: None,
            nudged: false,
            stopping: false,
        };
        let commits = Arc::new(Commits {
            progress: watch::Sender::new(state.clone()),
            state: Mutex::new(state),
            changed: Condvar::new(),
            db: Mutex::new(None),
            pending: Mutex::new(VecDeque::new()),
            overlay: Mutex::new(None),
            hooks: OnceLock::new(),
            thread: Mutex::new(None),
            dir,
        });
        let runner = commits.clone();
        let thread = std::thread::Builder::new()
            .name("proxyuserd-commit".into())
            .spawn(move || runner.run())
            .expect("a thread for the committer");
        *commits.thread.lock().unwrap_or_else(|e| e.into_inner()) = Some(thread);
        commits
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn publish(&self, state: &State) {
        self.changed.notify_all();
        self.progress.send_replace(state.clone());
    }

    pub(super) fn set_db(&self, db: Option<Arc<Db>>) {
        *self.db.lock().unwrap_or_else(|e| e.into_inner()) = db;
    }

    pub(super) fn set_hooks(&self, hooks: Hooks) {
        if self.hooks.set(hooks).is_err() {
            tracing::error!("store hooks set twice; keeping the first");
        }
    }

    /// Counts one more applied change, which replaced `replaced`; its ticket.
    pub(super) fn applied(&self, replaced: Replaced) -> Ticket {
        let mut state = self.lock();
        state.applied += 1;
        let ticket = Ticket {
            epoch: state.epoch,
            n: state.applied,
        };
        if state.failure.is_some() {
            // Applied to a store that has failed meanwhile: never durable.
            let mut overlay = self.overlay.lock().unwrap_or_else(|e| e.into_inner());
            let mut merged = overlay.as_deref().cloned().unwrap_or_default();
            for (tree, key, old) in replaced {
                merged.entry((tree, key)).or_insert(old);
            }
            *overlay = Some(Arc::new(merged));
        } else {
            // Under the state lock, so the queue stays in ticket order.
            self.pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push_back((ticket, replaced));
        }
        self.changed.notify_all();
        ticket
    }

    /// The overlay through which reads see the disk, while the store is failed.
    pub(super) fn overlay(&self) -> Option<Arc<Overlay>> {
        self.overlay
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Freezes what the failed changes replaced into the overlay (the first value
    /// replaced of each key is the one on disk).
    fn freeze_overlay(&self) {
        let pending = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        let mut overlay = match self.overlay() {
            Some(existing) => (*existing).clone(),
            None => Overlay::new(),
        };
        for (_, replaced) in pending {
            for (tree, key, old) in replaced {
                overlay.entry((tree, key)).or_insert(old);
            }
        }
        *self.overlay.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(overlay));
    }

    /// The newest change of `key` in `tree` that is applied but not yet durable.
    pub(super) fn unflushed(&self, tree: Tree, key: &[u8]) -> Option<Ticket> {
        let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending
            .iter()
            .rev()
            .find(|(_, replaced)| replaced.iter().any(|(t, k, _)| *t == tree && k == key))
            .map(|(ticket, _)| *ticket)
    }

    fn forget_durable(&self, ticket: Ticket) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        while pending.front().is_some_and(|(t, _)| *t <= ticket) {
            pending.pop_front();
        }
    }

    /// A ticket that no write stands behind (tests of lost tickets).
    #[cfg(test)]
    pub(super) fn phantom(&self) -> Ticket {
        self.applied(Vec::new())
    }

    pub(super) fn current(&self) -> Ticket {
        let state = self.lock();
        Ticket {
            epoch: state.epoch,
            n: state.applied,
        }
    }

    pub(super) fn nudge(&self) {
        self.lock().nudged = true;
        self.changed.notify_all();
    }

    pub(super) fn failure(&self) -> Option<Unavailable> {
        self.lock().failure.clone()
    }

    /// Refuses writes from now on (until [`recovered`](Self::recovered)).
    pub(super) fn fail(&self, why: Unavailable) {
        let mut state = self.lock();
        if state.failure.is_none() {
            tracing::error!("the state store takes no writes until it is reopened: {why}");
            state.failure = Some(why);
        }
        self.freeze_overlay();
        self.publish(&state);
    }

    /// The database was reopened on what is on disk: a new epoch.
    pub(super) fn recovered(&self) {
        let mut state = self.lock();
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        *self.overlay.lock().unwrap_or_else(|e| e.into_inner()) = None;
        state.durable_before = state.durable;
        state.epoch += 1;
        state.applied = 0;
        state.durable = 0;
        state.failure = None;
        self.publish(&state);
    }

    pub(super) fn wait(&self, ticket: Ticket) -> Result<(), Unavailable> {
        let mut state = self.lock();
        loop {
            if let Some(outcome) = state.outcome(ticket) {
                return outcome;
            }
            state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    pub(super) async fn wait_async(&self, ticket: Ticket) -> Result<(), Unavailable> {
        // Usually nothing is in flight: answer without a subscription.
        if let Some(outcome) = self.lock().outcome(ticket) {
            return outcome;
        }
        let mut progress = self.progress.subscribe();
        let state = progress
            .wait_for(|state| state.outcome(ticket).is_some())
            .await
            .map_err(|_| Unavailable::Closing)?;
        state.outcome(ticket).unwrap_or(Ok(()))
    }

    pub(super) fn stop(&self) {
        {
            let mut state = self.lock();
            state.stopping = true;
            self.publish(&state);
        }
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(thread) = thread
            && thread.thread().id() != std::thread::current().id()
        {
            let _ = thread.join();
        }
    }

    fn run(&self) {
        loop {
            {
                let mut state = self.lock();
                while state.applied == state.durable && !state.nudged && !state.stopping {
                    state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
                }
                if state.stopping && (state.applied == state.durable || state.failure.is_some()) {
                    return;
                }
                state.nudged = false;
            }
            if let Some(hooks) = self.hooks.get() {
                (hooks.before_flush)();
            }
            let (target, failed) = {
                let state = self.lock();
                (
                    Ticket {
                        epoch: state.epoch,
                        n: state.applied,
                    },
                    state.failure.is_some(),
                )
            };
            if failed {
                // Nothing can become durable until the store is reopened; wait for that.
                let mut state = self.lock();
                while state.failure.is_some() && !state.stopping {
                    state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
                }
                continue;
            }
            let db = self.db.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let flushed = match &db {
                Some(db) => db.flush(&self.dir),
                None => Err(IoFailure::other("the store", "not open")),
            };
            drop(db);
            let mut state = self.lock();
            if state.epoch != target.epoch {
                continue;
            }
            match flushed {
                Ok(()) => {
                    state.durable = state.durable.max(target.n);
                    self.forget_durable(target);
                    self.publish(&state);
                    drop(state);
                    if let Some(hooks) = self.hooks.get() {
                        (hooks.after_flush)(target);
                    }
                }
                Err(why) => {
                    if why.disk_full {
                        super::release_reserve(&self.dir);
                    }
                    tracing::error!("flushing the state store failed: {why}");
                    if state.failure.is_none() {
                        state.failure = Some(Unavailable::Flush(why));
                    }
                    self.freeze_overlay();
                    self.publish(&state);
                }
            }
        }
    }
}
