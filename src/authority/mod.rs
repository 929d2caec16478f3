//! The host-local authority: every operation the bus offers, as plain Rust. Each one
//! reads as a pipeline: check the arguments → gather the facts (NSS, the store) →
//! ask the pure rules ([`crate::access`], [`crate::policy`]) → record the audit record
//! together with the state change in a write transaction → announce it.
//!
//! Writes go through one write transaction at a time ([`Authority::begin`]), which
//! keeps the hash chain in order and makes "check the rules, then change the
//! association" atomic with respect to a concurrent reload; its flush is shared with
//! the transactions after it (group commit). Facts that need NSS are gathered before the
//! transaction, never inside it. Denials are recorded without a transaction of their
//! own. Readers (`Resolve`, `CheckProxy`) take no lock: the compiled rules are swapped
//! atomically and the store is read directly.

mod jobs;
mod pam;
mod proxy;
mod rules;
mod sessions;
mod throttle;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::sync::{Notify, mpsc};

use crate::access::{self, AccountFacts, Caller};
use crate::accounts::{Account, AccountSource, Directory, LookupError, Nss};
use crate::audit::journal::Journal;
use crate::audit::{AuditUnavailable, Draft, Event, Ledger, Txn};
use crate::config::Config;
use crate::names::check_user_name;
use crate::policy::{CompiledRules, Micros, Subject};
use crate::store::{Store, StoreConfig, StoreError, Ticket};
use crate::time::{Clock, SystemClock};

pub use jobs::{JobPage, STREAMS, WaitFor, bytes};
pub use pam::PamPlace;
pub use proxy::Acting;
pub use rules::{RuleCheckError, RuleDirError, check_rule_dir};

/// What went wrong, one variant per D-Bus error of the contract. Messages name the
/// offending value and never another user's data. Conversions do not log: whoever
/// handles an error decides whether it is worth a log line.
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
    /// An internal failure (store, NSS, the service manager); the message says which.
    #[error("{0}")]
    Failed(String),
}

impl From<StoreError> for Error {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Unavailable(_) => Error::AuditUnavailable(err.to_string()),
            _ => Error::Failed(err.to_string()),
        }
    }
}

impl From<LookupError> for Error {
    fn from(err: LookupError) -> Self {
        Error::Failed(err.to_string())
    }
}

impl From<AuditUnavailable> for Error {
    fn from(err: AuditUnavailable) -> Self {
        Error::AuditUnavailable(err.to_string())
    }
}

/// Why the authority cannot open at start.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Audit(#[from] crate::audit::ledger::OpenError),
    #[error("cannot load the rules: {0}")]
    Rules(Error),
    #[error("cannot purge expired sessions: {0}")]
    Sessions(Error),
}

/// Something that bus clients are told about (signals), once it is durable.
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
        /// The login that submitted it.
        login: String,
        run_as: String,
        end: crate::store::JobEnd,
    },
}

/// What the authority asks of the host besides the store: the user database and the
/// time. The daemon's are NSS and the wall clock ([`Host::default`]); the in-process
/// tests bring a table of accounts and a clock they move by hand.
#[derive(Clone)]
pub struct Host {
    pub accounts: Arc<dyn AccountSource>,
    pub clock: Arc<dyn Clock>,
}

impl Default for Host {
    fn default() -> Self {
        Host {
            accounts: Arc::new(Nss),
            clock: Arc::new(SystemClock),
        }
    }
}

pub struct Authority {
    /// The running configuration; a reload swaps in what it applies
    /// ([`crate::config::reloaded`]).
    config: ArcSwap<Config>,
    clock: Arc<dyn Clock>,
    store: Arc<Store>,
    ledger: Arc<Ledger>,
    directory: Directory,
    rules: ArcSwap<CompiledRules>,
    generation: AtomicU64,
    notices: mpsc::UnboundedSender<Notice>,
    /// Woken when the rules change, so the expiry timer recomputes its deadline.
    rules_changed: Notify,
    running: Mutex<jobs::RunningJobs>,
    backend: crate::exec::Backend,
    /// Slows down users who cause denials, failed starts or writes too fast.
    throttle: throttle::Throttle,
    uid_min: u32,
    /// Parsed rule files by content, so a reload re-parses only what changed.
    parsed: rules::ParsedFiles,
    /// Held while a rule change is recorded and installed: one at a time.
    rule_changes: Mutex<()>,
    /// Held by a reload (configuration and rules): one at a time.
    reloading: Mutex<()>,
    /// Output and records kept per run-as user.
    output_totals: jobs::OutputTotals,
    /// The runtime jobs are supervised on and blocking work is handed to (taken at
    /// open, not from whatever thread is current).
    runtime: tokio::runtime::Handle,
    /// The configuration file, read again on reload to say what needs a restart.
    config_path: std::path::PathBuf,
    /// Since when (µs) and why the rule files on disk are refused (the last good set
    /// is served meanwhile); `None` while they are the active set.
    refused: Mutex<Option<(Micros, String)>>,
    /// Why the configuration file is refused (the daemon runs on the last good one);
    /// `None` while it is the one running.
    config_refused: Mutex<Option<String>>,
    /// Denials per second over the last minute: (second, count) by second % 60.
    denials: Mutex<[(u64, u32); 60]>,
}

/// What `systemctl status` shows of the daemon (`STATUS=`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The configuration file is refused: why (the last good one runs).
    pub config_refused: Option<String>,
    pub generation: u64,
    pub refused: Option<(Micros, String)>,
    pub associations: usize,
    pub running_jobs: usize,
    pub denials_last_minute: u32,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(why) = &self.config_refused {
            let why: String = why.chars().take(200).collect();
            write!(
                f,
                "configuration file refused, running on the last good one ({why}); "
            )?;
        }
        write!(f, "rules generation {}", self.generation)?;
        if let Some((since, why)) = &self.refused {
            let why: String = why.chars().take(200).collect();
            write!(
                f,
                " (files on disk refused since {}: {why})",
                crate::policy::format_time(*since)
            )?;
        }
        let plural = rules::plural;
        let (a, j, d) = (
            self.associations,
            self.running_jobs,
            self.denials_last_minute as usize,
        );
        write!(
            f,
            "; {a} {}; {j} {} running; {d} {} in the last minute",
            plural(a, "association", "associations"),
            plural(j, "job", "jobs"),
            plural(d, "denial", "denials"),
        )
    }
}

impl Authority {
    /// Opens the store, continues the audit chain and loads the rules (falling back to
    /// the last good set if the files are broken), asking `host` for accounts and the
    /// time. Blocking; then [`Authority::recover_jobs`] before serving.
    pub fn open(
        config_path: &Path,
        config: Config,
        journal: Option<Journal>,
        backend: crate::exec::Backend,
        host: Host,
        runtime: tokio::runtime::Handle,
    ) -> Result<(Arc<Self>, mpsc::UnboundedReceiver<Notice>), OpenError> {
        let store = Arc::new(Store::open(
            &config.state_dir.join("db"),
            StoreConfig {
                cache_bytes: config.store.cache_bytes,
                reserve_bytes: config.store.reserve_bytes,
            },
        )?);
        let ledger = Ledger::open(
            store.clone(),
            journal,
            &config.state_dir.join("audit.anchor"),
        )?;
        let (notices, receiver) = mpsc::unbounded_channel();
        let authority = Arc::new(Authority {
            directory: Directory::with_source(
                Duration::from_secs(config.nss_cache_secs),
                Duration::from_millis(config.nss_timeout_ms),
                host.accounts,
            ),
            clock: host.clock,
            throttle: throttle::Throttle::new(&config),
            uid_min: config.uid_min(),
            config: ArcSwap::from_pointee(config),
            store,
            ledger,
            rules: ArcSwap::from_pointee(CompiledRules::default()),
            generation: AtomicU64::new(0),
            notices,
            rules_changed: Notify::new(),
            running: Mutex::new(Default::default()),
            backend,
            parsed: Default::default(),
            rule_changes: Mutex::new(()),
            reloading: Mutex::new(()),
            output_totals: Default::default(),
            runtime,
            config_path: config_path.to_path_buf(),
            refused: Mutex::new(None),
            config_refused: Mutex::new(None),
            denials: Mutex::new([(0, 0); 60]),
        });
        authority.load_rules_at_start().map_err(OpenError::Rules)?;
        authority.purge_sessions().map_err(OpenError::Sessions)?;
        Ok((authority, receiver))
    }

    /// The daemon's state in one line, for `systemctl status`.
    pub fn status(&self) -> Status {
        let second = (self.now() / 1_000_000) as u64;
        let denials_last_minute = self
            .denials
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(at, _)| second.saturating_sub(*at) < 60)
            .map(|(_, n)| *n)
            .sum();
        Status {
            config_refused: self
                .config_refused
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            generation: self.generation(),
            refused: self
                .refused
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            associations: self
                .store
                .count(crate::store::Tree::Associations)
                .unwrap_or(0),
            running_jobs: self.running_jobs_count(),
            denials_last_minute,
        }
    }

    /// Records whether the rule files on disk are refused (`Some(why)`) or active.
    fn set_refused(&self, why: Option<String>) {
        let mut refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        match why {
            None => *refused = None,
            Some(why) => {
                let since = refused.as_ref().map_or_else(|| self.now(), |r| r.0);
                *refused = Some((since, why));
            }
        }
    }

    /// Records that the configuration file is refused (`Some(why)`: the daemon runs on
    /// the last good one), or that it is the one running (`None`).
    pub fn set_config_refused(&self, why: Option<String>) {
        *self
            .config_refused
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = why;
    }

    /// The time, as the authority's clock has it.
    pub fn now(&self) -> Micros {
        self.clock.now()
    }

    /// Keeps `text`, the configuration file the daemon runs on, as the last good one
    /// (`state_dir/config.last-good`, written whole or not at all).
    pub fn save_last_good(&self, text: &str) {
        let path = self.config().state_dir.join(crate::config::LAST_GOOD);
        if std::fs::read_to_string(&path).is_ok_and(|kept| kept == text) {
            return;
        }
        if let Err(err) = crate::sys::write_atomically(&path, text.as_bytes()) {
            tracing::warn!(
                "cannot keep the configuration as the last good one in {}: {err}",
                path.display()
            );
        }
    }

    /// The running configuration (a reload may swap it for the next call).
    pub fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }

    /// The access rules' view of `config` (one [`Authority::config`], so that one
    /// decision sees one configuration).
    fn policy<'a>(&self, config: &'a Config) -> access::Policy<'a> {
        access::Policy {
            admin_group: config.admin_group.as_deref(),
            trusted_callers: &config.trusted_callers,
            uid_min: self.uid_min,
            privileged_groups: &config.privileged_groups,
            gateway_runs_as_login: config.exec.gateway_runs_as_login,
        }
    }

    /// What the access rules need of `account`, with what the current rules say of it.
    fn facts<'a>(&self, account: &'a Account) -> AccountFacts<'a> {
        AccountFacts {
            name: &account.name,
            uid: account.uid,
            groups: &account.groups,
            gids: &account.gids,
            proxy_type: self.rules.load().is_proxy_type(&account.subject()),
        }
    }

    /// Whose budget `caller` spends: its uid; one shared budget for callers without an
    /// account (so that a range of unmapped uids buys nothing); `None` for root, admins
    /// and trusted callers, who are never slowed down.
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
    /// its callers have caused denials (or writes) faster than allowed.
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
        let facts = account.as_deref().map(|a| self.facts(a));
        let config = self.config();
        let policy = self.policy(&config);
        let caller = access::classify(uid, pid, facts.as_ref(), false, &policy);
        // Only a uid with powers is worth the walk that finds whether it is shared.
        if uid != 0 && (caller.admin || caller.trusted) && self.directory.uid_shared(uid)? {
            tracing::warn!(
                "uid {uid} has more than one account name: none of them is trusted or an admin"
            );
            return Ok(access::classify(uid, pid, facts.as_ref(), true, &policy));
        }
        Ok(caller)
    }

    /// Why the store takes no writes, if it does not.
    pub fn store_unavailable(&self) -> Option<crate::store::Unavailable> {
        self.store.unavailable()
    }

    /// Reopens a failed store once there is room again; true if it takes writes.
    pub fn recover_store(&self) -> bool {
        let recovered = self.ledger.recover();
        if recovered {
            self.store.keep_reserve();
        }
        recovered
    }

    /// Flushes the store and stops its committer (at shutdown).
    pub fn close(&self) -> Result<(), StoreError> {
        self.store.close()
    }

    /// Completes once everything applied (and every denial recorded) so far is
    /// durable: a call answers only after what it saw or caused is on disk.
    pub async fn settle(&self) {
        self.ledger.settled().await
    }

    /// Runs `read`, a path that only reads (and records nothing), noting the newest
    /// change it read that is not durable yet: the one [`settle_read`](Self::settle_read)
    /// waits for. A read of durable data waits for nobody's flush.
    pub fn read_noting<T>(&self, read: impl FnOnce() -> T) -> (T, Option<Ticket>) {
        self.store.noting_unflushed(read)
    }

    /// Completes once the change a read saw (if any) is durable, or its flush failed
    /// (a failure is its writer's to report).
    pub async fn settle_read(&self, seen: Option<Ticket>) {
        if let Some(ticket) = seen {
            let _ = self.store.durable(ticket).await;
        }
    }

    /// Completes when the rule set changes after this call.
    pub fn rules_changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.rules_changed.notified()
    }

    /// Runs blocking `op` (store flushes, NSS) on a blocking thread of the daemon's
    /// runtime, from async code.
    pub(crate) async fn blocking<T: Send + 'static>(
        self: &Arc<Self>,
        op: impl FnOnce(&Authority) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let authority = self.clone();
        self.runtime
            .spawn_blocking(move || op(&authority))
            .await
            .map_err(|e| Error::Failed(format!("internal error: {e}")))?
    }

    /// Starts a write transaction.
    fn begin(&self) -> Result<Txn<'_>, Error> {
        Ok(self.ledger.begin()?)
    }

    fn notify(&self, notice: Notice) {
        // The receiver only goes away at shutdown.
        let _ = self.notices.send(notice);
    }

    /// Commits `txn`, charging what it wrote to `caller`'s write budget.
    fn commit(&self, caller: Option<&Caller>, txn: Txn<'_>) -> Result<(), Error> {
        let bytes = txn.bytes();
        txn.commit()?;
        if let Some(key) = caller.and_then(|c| self.throttle_key(c)) {
            self.throttle.wrote(key, bytes, Instant::now());
        }
        Ok(())
    }

    /// Charges `bytes` written on `caller`'s behalf outside `commit` to its budget.
    fn charge_writes(&self, caller: &Caller, bytes: u64) {
        if let Some(key) = self.throttle_key(caller) {
            self.throttle.wrote(key, bytes, Instant::now());
        }
    }

    /// Records a denial (without a transaction: it never waits for the chain's head, so
    /// it cannot deadlock with one) and counts it against the caller's budget. The
    /// caller gets `err` either way.
    fn deny(&self, caller: &Caller, operation: &str, draft: Draft, err: Error) -> Error {
        self.count_refusal(caller);
        {
            let second = (self.now() / 1_000_000) as u64;
            let mut denials = self.denials.lock().unwrap_or_else(|e| e.into_inner());
            let slot = &mut denials[(second % 60) as usize];
            if slot.0 != second {
                *slot = (second, 0);
            }
            slot.1 = slot.1.saturating_add(1);
        }
        let draft = draft
            .with("operation", operation)
            .with("reason", err.to_string())
            .caller(caller);
        self.ledger.record_later(draft);
        err
    }

    /// Counts a refused request (a denial, a request over a limit, a failed start)
    /// against the caller's budget.
    fn count_refusal(&self, caller: &Caller) {
        if let Some(key) = self.throttle_key(caller)
            && self.throttle.denied(key, Instant::now())
        {
            tracing::warn!(
                "{caller} causes refusals faster than denial_rate ({}/s): its calls wait from now on",
                self.config().denial_rate
            );
        }
    }

    /// A request refused for its arguments or a limit: counted, not recorded.
    fn refuse(&self, caller: &Caller, err: Error) -> Error {
        self.count_refusal(caller);
        err
    }

    /// Checks that `login` is a valid name and that `caller` may act for it.
    fn authorize(&self, caller: &Caller, operation: &str, login: &str) -> Result<(), Error> {
        check_user_name(login)
            .map_err(|e| self.refuse(caller, Error::InvalidArgs(format!("login: {e}"))))?;
        access::act_for(caller, login).map_err(|refusal| {
            self.deny(
                caller,
                operation,
                Draft::new(Event::Denied).with("login", login),
                Error::AccessDenied(refusal.to_string()),
            )
        })
    }

    /// Admin operations: uid 0 or the admin group.
    fn require_admin(&self, caller: &Caller, operation: &str) -> Result<(), Error> {
        access::admin(caller, operation, &self.policy(&self.config())).map_err(|refusal| {
            self.deny(
                caller,
                operation,
                Draft::new(Event::Denied),
                Error::AccessDenied(refusal.to_string()),
            )
        })
    }

    /// The account of a proxy target, which must exist.
    fn proxy_account(&self, caller: &Caller, proxy: &str) -> Result<Arc<Account>, Error> {
        check_user_name(proxy)
            .map_err(|e| self.refuse(caller, Error::InvalidArgs(format!("proxy: {e}"))))?;
        self.directory.user(proxy)?.ok_or_else(|| {
            // Unknown names cost an NSS (maybe LDAP) query each: they count.
            self.refuse(caller, Error::NoSuchUser(format!("no system user {proxy}")))
        })
    }

    /// Whom `login` acts as according to the store (its proxy, else itself).
    fn acts_as(&self, store: &Store, login: &str) -> Result<String, Error> {
        Ok(store
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
    let periodic = now + crate::time::secs(authority.config().revalidate_secs.max(1));
    authority
        .rules
        .load()
        .next_expiry(now)
        .map_or(periodic, |t| t.min(periodic))
}

/// Why the state directory cannot hold the daemon's state.
#[derive(Debug, thiserror::Error)]
pub enum StateDirError {
    #[error("cannot create state directory {}: {source}", dir.display())]
    Create {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("state directory {}: {source}", dir.display())]
    Inspect {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("state directory {} is not a directory (a symbolic link?)", dir.display())]
    NotADirectory { dir: PathBuf },
    #[error(
        "state directory {} belongs to uid {owner}, not to the daemon (uid {daemon}): \
         refusing to keep state where another user can write",
        dir.display()
    )]
    Foreign {
        dir: PathBuf,
        owner: u32,
        daemon: u32,
    },
    #[error(
        "{} in the state directory belongs to uid {owner}, not to the daemon (uid {daemon}): \
         refusing state another user may have written",
        path.display()
    )]
    ForeignEntry {
        path: PathBuf,
        owner: u32,
        daemon: u32,
    },
    #[error(
        "{} is writable by group or others (mode {mode:o}): refusing state another user \
         may have changed (if its content is trusted, `chmod go-w` it)",
        path.display()
    )]
    Writable { path: PathBuf, mode: u32 },
    #[error("cannot make {} mode 0700: {source}", dir.display())]
    Mode {
        dir: PathBuf,
        source: std::io::Error,
    },
}

/// Creates `dir` as a root-only directory, or makes an existing one private (a mode
/// that lets others read is repaired). Refuses a state directory another user could
/// have written: one that it, or anything in it, belongs to another user, or is
/// writable by group or others — its content may not be the daemon's own.
pub fn secure_state_dir(dir: &Path) -> Result<(), StateDirError> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| StateDirError::Create {
            dir: dir.to_owned(),
            source,
        })?;
    let meta = std::fs::symlink_metadata(dir).map_err(|source| StateDirError::Inspect {
        dir: dir.to_owned(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(StateDirError::NotADirectory {
            dir: dir.to_owned(),
        });
    }
    let daemon = nix::unistd::geteuid().as_raw();
    if meta.uid() != daemon {
        return Err(StateDirError::Foreign {
            dir: dir.to_owned(),
            owner: meta.uid(),
            daemon,
        });
    }
    let entries: Vec<(std::path::PathBuf, std::fs::Metadata)> = walk(dir)
        .into_iter()
        .filter_map(|path| std::fs::symlink_metadata(&path).ok().map(|m| (path, m)))
        .collect();
    let everything = std::iter::once((dir.to_path_buf(), meta.clone())).chain(entries.clone());
    for (path, meta) in everything {
        if meta.uid() != daemon {
            return Err(StateDirError::ForeignEntry {
                path,
                owner: meta.uid(),
                daemon,
            });
        }
        // A symbolic link's own mode means nothing.
        if !meta.file_type().is_symlink() && meta.mode() & 0o022 != 0 {
            return Err(StateDirError::Writable {
                path,
                mode: meta.mode() & 0o7777,
            });
        }
    }
    if meta.mode() & 0o7777 != 0o700 {
        tracing::warn!(
            "state directory {} had mode {:o}: made it 0700",
            dir.display(),
            meta.mode() & 0o7777
        );
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(
            |source| StateDirError::Mode {
                dir: dir.to_owned(),
                source,
            },
        )?;
    }
    // What older versions (or a looser umask) made readable stays private too.
    for (path, meta) in entries {
        if !meta.file_type().is_symlink() && meta.mode() & 0o077 != 0 {
            let private = if meta.is_dir() { 0o700 } else { 0o600 };
            let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(private));
        }
    }
    Ok(())
}

/// The entries of `dir`, of its `db` subdirectory (where sled keeps its files) and of
/// `jobs` (a directory per job's output).
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let list = |d: &Path| -> Vec<std::path::PathBuf> {
        std::fs::read_dir(d)
            .map(|entries| entries.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    };
    let mut all = list(dir);
    all.extend(list(&dir.join("db")));
    all.extend(list(&dir.join("db/blobs")));
    all.extend(list(&dir.join("jobs")));
    all
}
