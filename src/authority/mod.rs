//! The host-local authority: every operation the bus offers, as plain Rust. Each one
//! reads as a pipeline: check the arguments → authorize the caller → decide → record the
//! audit record together with the state change → announce it.
//!
//! Mutations (and every audit append) happen under one lock, which keeps the hash chain
//! in order and makes "check the rules, then change the association" atomic with respect
//! to a concurrent reload. Readers (`Resolve`, `CheckProxy`) take no lock: the compiled
//! rules are swapped atomically and the store is read directly.

pub(crate) mod cookies;
mod jobs;
mod pam;
mod proxy;
mod rules;
mod sessions;
mod throttle;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::sync::{Notify, mpsc};

use crate::audit::{AuditUnavailable, Draft, Event, Ledger, journal::Journal};
use crate::daemon::config::Config;
use crate::identity::name::check_user_name;
use crate::identity::{Account, Caller, Directory, LookupError};
use crate::policy::{CompiledRules, Micros, Subject};
use crate::store::{Store, StoreError, Write};
use crate::sys::now_micros;

pub use jobs::{STREAMS, WaitFor};
pub use pam::PamPlace;
pub use proxy::Identity;
pub use sessions::SessionIdentity;

/// What went wrong, one variant per D-Bus error of the contract. Messages name the
/// offending value and never another user's data.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    AccessDenied(String),
    #[error("{0}")]
    InvalidArgs(String),
    #[error("{0}")]
    NotAllowed(String),
    #[error("{0}")]
    NoSuchUser(String),
    #[error("{0}")]
    NoSuchJob(String),
    #[error("{0}")]
    NoSuchSession(String),
    #[error("{0}")]
    InvalidRules(String),
    #[error("{0}")]
    AuditUnavailable(String),
    /// A configured limit (e.g. running jobs per user) is reached.
    #[error("{0}")]
    LimitsExceeded(String),
    /// An internal failure (store, NSS); the message says which.
    #[error("{0}")]
    Failed(String),
}

impl From<StoreError> for Error {
    fn from(err: StoreError) -> Self {
        tracing::error!("{err}");
        match err {
            StoreError::Failed => Error::AuditUnavailable(err.to_string()),
            _ => Error::Failed(err.to_string()),
        }
    }
}

impl From<LookupError> for Error {
    fn from(err: LookupError) -> Self {
        tracing::error!("{err}");
        Error::Failed(err.to_string())
    }
}

impl From<AuditUnavailable> for Error {
    fn from(err: AuditUnavailable) -> Self {
        tracing::error!("{err}");
        Error::AuditUnavailable(err.to_string())
    }
}

/// Something that bus clients are told about (signals).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    ProxyChanged {
        login: String,
        proxy: String,
        why: &'static str,
    },
    RulesChanged(u64),
    JobFinished {
        id: String,
        run_as: String,
        state: String,
        exit_code: i32,
    },
}

pub struct Authority {
    config: Config,
    store: Store,
    directory: Directory,
    rules: ArcSwap<CompiledRules>,
    generation: AtomicU64,
    ledger: Mutex<Ledger>,
    notices: mpsc::UnboundedSender<Notice>,
    /// Woken when the rules change, so the expiry timer recomputes its deadline.
    rules_changed: Notify,
    running: Mutex<jobs::RunningJobs>,
    backend: crate::exec::Backend,
    /// Slows down users who cause denials too fast.
    throttle: throttle::Throttle,
}

impl Authority {
    /// Opens the store, continues the audit chain and loads the rules (falling back to
    /// the last good set if the files are broken).
    pub fn open(
        config: Config,
        journal: Option<Journal>,
        backend: crate::exec::Backend,
    ) -> Result<(Arc<Self>, mpsc::UnboundedReceiver<Notice>), String> {
        let db_dir = config.state_dir.join("db");
        let store = Store::open(&db_dir).map_err(|e| e.to_string())?;
        let ledger = Ledger::open(&store, journal).map_err(|e| e.to_string())?;
        let (notices, receiver) = mpsc::unbounded_channel();
        let authority = Arc::new(Authority {
            directory: Directory::new(Duration::from_secs(config.nss_cache_secs)),
            throttle: throttle::Throttle::new(config.denial_rate, config.denial_burst),
            config,
            store,
            rules: ArcSwap::from_pointee(CompiledRules::default()),
            generation: AtomicU64::new(0),
            ledger: Mutex::new(ledger),
            notices,
            rules_changed: Notify::new(),
            running: Mutex::new(Default::default()),
            backend,
        });
        authority.load_rules_at_start()?;
        authority.fail_stale_jobs().map_err(|e| e.to_string())?;
        authority.purge_sessions().map_err(|e| e.to_string())?;
        Ok((authority, receiver))
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Whose denial budget `caller` spends: its uid; one shared budget for callers
    /// without an account (so that a range of unmapped uids buys nothing); `None` for
    /// root, admins and trusted callers, who are never slowed down.
    pub fn throttle_key(&self, caller: &Caller) -> Option<u32> {
        // `admin` includes root.
        if caller.admin || caller.trusted {
            None
        } else if caller.name.is_some() {
            Some(caller.uid)
        } else {
            Some(u32::MAX)
        }
    }

    /// How long a call under throttle key `key` waits before it is served: zero unless
    /// its callers have caused denials faster than `denial_rate`.
    pub fn call_delay(&self, key: u32) -> Duration {
        self.throttle.delay(key, Instant::now())
    }

    /// The current rule generation; it grows with every change of the rule set.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Resolves a bus peer's credentials into a caller.
    pub fn caller(&self, uid: u32, pid: u32) -> Result<Caller, Error> {
        let account = self.directory.user_by_uid(uid)?;
        Ok(Caller::new(
            uid,
            pid,
            account.as_deref(),
            self.config.admin_group.as_deref(),
            &self.config.trusted_callers,
        ))
    }

    /// True once the store refuses all use (a failed write could not be undone); the
    /// daemon then exits so that it is restarted with the state that is on disk.
    pub fn store_failed(&self) -> bool {
        self.store.failed()
    }

    /// Flushes the store (at shutdown).
    pub fn flush(&self) -> Result<(), String> {
        self.store.flush().map_err(|e| e.to_string())
    }

    /// Completes when the rule set changes after this call.
    pub fn rules_changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.rules_changed.notified()
    }

    fn lock(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn notify(&self, notice: Notice) {
        // The receiver only goes away at shutdown.
        let _ = self.notices.send(notice);
    }

    /// Appends an audit record with the state changes it describes.
    fn record(&self, ledger: &mut Ledger, draft: Draft, writes: Vec<Write>) -> Result<(), Error> {
        ledger.append(&self.store, draft, writes, now_micros())?;
        Ok(())
    }

    /// Records a denial. The caller gets `err` either way: if even the denial cannot be
    /// recorded, that is logged (the operation is refused regardless).
    fn deny(&self, caller: &Caller, operation: &str, draft: Draft, err: Error) -> Error {
        if let Some(key) = self.throttle_key(caller)
            && self.throttle.denied(key, Instant::now())
        {
            tracing::warn!(
                "{caller} causes denials faster than denial_rate ({}/s): its calls wait from now on",
                self.config.denial_rate
            );
        }
        let draft = draft
            .with("operation", operation)
            .with("reason", err.to_string())
            .caller(caller);
        if let Err(audit) = self.record(&mut self.lock(), draft, Vec::new()) {
            tracing::error!("denial of {operation} to {caller} not recorded: {audit}");
        }
        err
    }

    /// Checks that `login` is a valid name and that `caller` may act for it.
    fn authorize(&self, caller: &Caller, operation: &str, login: &str) -> Result<(), Error> {
        check_user_name(login).map_err(|e| Error::InvalidArgs(format!("login: {e}")))?;
        if caller.may_act_for(login) {
            return Ok(());
        }
        let err = Error::AccessDenied(format!("{caller} may not act for login {login}"));
        Err(self.deny(
            caller,
            operation,
            Draft::new(Event::Denied).with("login", login),
            err,
        ))
    }

    /// Admin operations: uid 0 or the admin group.
    fn require_admin(&self, caller: &Caller, operation: &str) -> Result<(), Error> {
        if caller.admin {
            return Ok(());
        }
        let group = match &self.config.admin_group {
            Some(group) => format!("root or a member of {group}"),
            None => "root".to_string(),
        };
        let err = Error::AccessDenied(format!(
            "{operation} is for admins ({group}); {caller} is not one"
        ));
        Err(self.deny(caller, operation, Draft::new(Event::Denied), err))
    }

    /// The account of a proxy target, which must exist.
    fn proxy_account(&self, proxy: &str) -> Result<Arc<Account>, Error> {
        check_user_name(proxy).map_err(|e| Error::InvalidArgs(format!("proxy: {e}")))?;
        self.directory
            .user(proxy)?
            .ok_or_else(|| Error::NoSuchUser(format!("no system user {proxy}")))
    }

    /// Why an account must not be used by others (as a proxy user, or to run jobs for
    /// another caller): its holder is an admin or a trusted caller, so running as it
    /// would hand out those powers.
    fn privileged(&self, account: &Account) -> Option<String> {
        // root has its own, stricter answers (never a proxy, never runs jobs).
        if let Some(group) = &self.config.admin_group
            && account.groups.iter().any(|g| g == group)
        {
            return Some(format!("an admin (member of {group})"));
        }
        if self.config.trusted_callers.contains(&account.name) {
            return Some("a trusted caller".into());
        }
        None
    }

    /// Whom `login` acts as according to the store (its proxy, else itself).
    fn acts_as(&self, login: &str) -> Result<String, Error> {
        Ok(self
            .store
            .association(login)?
            .map_or_else(|| login.to_string(), |a| a.proxy))
    }

    /// The account of a login, if it has one (web logins need not).
    fn login_account(&self, login: &str) -> Result<Option<Arc<Account>>, Error> {
        Ok(self.directory.user(login)?)
    }
}

fn subject<'a>(name: &'a str, account: Option<&'a Account>) -> Subject<'a> {
    match account {
        Some(account) => account.subject(),
        None => Subject::nameless_account(name),
    }
}

/// When the expiry timer next has to look: the earliest rule expiry or the periodic
/// revalidation, whichever comes first.
pub fn next_check(authority: &Authority, now: Micros) -> Micros {
    let periodic = now + (authority.config.revalidate_secs.max(1) as i64) * 1_000_000;
    authority
        .rules
        .load()
        .next_expiry(now)
        .map_or(periodic, |t| t.min(periodic))
}
