//! The daemon: configuration, logging, the bus connection, signals, timers, shutdown.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::prelude::*;
use zbus::connection::Builder;

use crate::audit::journal::{self, Journal};
use crate::authority::{Authority, Host, StateDirError, next_check};
use crate::bus::{self, BUS_NAME, Callers, Shared};
use crate::config::{self, BackendChoice, Config, ConfigError};
use crate::exec::Backend;
use crate::exec::contain::Containment;
use crate::exec::systemd::{SliceLimits, Systemd};
use crate::store::StoreError;
use crate::sys;

/// Operational logs: journald under `proxyuserd` when it runs, else stderr.
/// `PROXYUSERD_LOG` sets the level (error, warn, info, debug, trace; default info).
pub fn init_logging() {
    let level = std::env::var("PROXYUSERD_LOG")
        .ok()
        .and_then(|l| l.parse::<LevelFilter>().ok())
        .unwrap_or(LevelFilter::INFO);
    let journald = std::path::Path::new(journal::SOCKET)
        .exists()
        .then(|| tracing_journald::layer().ok())
        .flatten()
        .map(|layer| layer.with_syslog_identifier("proxyuserd".into()));
    let stderr = journald.is_none().then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .without_time()
            .with_target(false)
    });
    tracing_subscriber::registry()
        .with(journald.with_filter(level))
        .with(stderr.with_filter(level))
        .init();
}

/// Why the daemon could not start, or not stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot change to /: {0}")]
    WorkingDirectory(std::io::Error),
    #[error(transparent)]
    StateDir(#[from] StateDirError),
    #[error("exec.backend = \"systemd\" but systemd cannot be reached: {0}")]
    NoSystemd(zbus::Error),
    /// Opening the store, the audit chain or the rules failed.
    #[error(transparent)]
    Open(#[from] crate::authority::OpenError),
    #[error("cannot recover the jobs of the last run: {0}")]
    Recovery(crate::authority::Error),
    /// `exec.containment` asks for what the host cannot give.
    #[error(transparent)]
    Containment(#[from] crate::exec::contain::NoCgroup),
    #[error("cannot serve {BUS_NAME} on the system bus: {0}")]
    Serve(zbus::Error),
    #[error("cannot handle signals: {0}")]
    Signals(std::io::Error),
    #[error("cannot close the store: {0}")]
    Close(StoreError),
    #[error("internal error: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(
    config_path: PathBuf,
    config: Config,
    source: ConfigSource,
) -> Result<(), DaemonError> {
    sys::ignore_sigxfsz();
    // Nothing the daemon creates is for others, and nothing should reach its working
    // directory through /proc/PID/cwd.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    std::env::set_current_dir("/").map_err(DaemonError::WorkingDirectory)?;
    crate::authority::secure_state_dir(&config.state_dir)?;
    let journal = Journal::connect(std::path::Path::new(journal::SOCKET));
    if journal.is_none() {
        tracing::warn!(
            "no journal at {}: audit records go to the store only",
            journal::SOCKET
        );
    }
    let backend = exec_backend(&config.exec).await?;
    match &backend {
        Backend::Direct(containment) => tracing::info!(
            "jobs run with the direct backend, contained by {}",
            containment.describe()
        ),
        Backend::Systemd(..) => tracing::info!(
            "jobs run with the systemd backend, contained by their transient units' cgroups"
        ),
        Backend::Runner(runner) => tracing::info!("jobs run with {}", runner.name()),
    }
    if let Backend::Direct(containment) = &backend
        && let Containment::Subreaper { .. } = **containment
    {
        tokio::spawn(reap_orphans(containment.clone()));
    }
    let runtime = tokio::runtime::Handle::current();
    let (authority, notices) = tokio::task::spawn_blocking(move || {
        Authority::open(
            &config_path,
            config,
            journal,
            backend,
            Host::default(),
            runtime,
        )
    })
    .await??;
    match source {
        ConfigSource::File(text) => authority.save_last_good(&text),
        ConfigSource::LastGood { refused } => {
            authority.set_config_refused(Some(refused.to_string()))
        }
    }
    authority
        .recover_jobs()
        .await
        .map_err(DaemonError::Recovery)?;
    let callers = Arc::new(Callers::new(authority.clone()));
    let in_flight = Arc::new(tokio::sync::RwLock::new(()));
    let shared = Shared {
        authority: authority.clone(),
        callers: callers.clone(),
        in_flight: in_flight.clone(),
        admission: Arc::default(),
    };

    // Every object is served before the name is requested, so a client that sees the
    // name finds the whole API.
    let connection = Builder::system()
        .build()
        .await
        .map_err(DaemonError::Serve)?;
    bus::serve(&connection, &shared)
        .await
        .map_err(DaemonError::Serve)?;
    connection
        .request_name(BUS_NAME)
        .await
        .map_err(DaemonError::Serve)?;
    tokio::spawn(bus::forward_notices(
        connection.clone(),
        callers.clone(),
        notices,
    ));
    tokio::spawn(callers.clone().forget_departed(connection.clone()));
    tokio::spawn(watch_expiry(authority.clone()));
    tokio::spawn(prune_jobs(authority.clone()));
    tokio::spawn(purge_sessions(authority.clone()));
    tokio::spawn(prune_audit(authority.clone()));
    tokio::spawn(report_status(authority.clone()));
    tracing::info!(
        "proxyuserd {} serving {BUS_NAME}, rules generation {}",
        env!("CARGO_PKG_VERSION"),
        authority.generation()
    );

    let mut hangup = signal(SignalKind::hangup()).map_err(DaemonError::Signals)?;
    let mut terminate = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?;
    let mut health = tokio::time::interval(Duration::from_secs(1));
    let recovering = Arc::new(AtomicBool::new(false));
    let watchdog = sys::watchdog_enabled();
    loop {
        tokio::select! {
            _ = health.tick() => {
                // Pinged from the main loop: a wedged runtime stops the pings.
                if watchdog {
                    sys::notify("WATCHDOG=1");
                }
                // A store that failed (a full disk) takes writes again once it can
                // be reopened: tried each second, off the main loop.
                if authority.store_unavailable().is_some() && !recovering.swap(true, Ordering::AcqRel) {
                    let (authority, recovering) = (authority.clone(), recovering.clone());
                    tokio::task::spawn_blocking(move || {
                        authority.recover_store();
                        recovering.store(false, Ordering::Release);
                    });
                }
            }
            _ = hangup.recv() => {
                // Off the main loop: a reload waits for the store lock, and the loop
                // feeds the watchdog.
                let (authority, callers) = (authority.clone(), callers.clone());
                tokio::spawn(async move {
                    match tokio::task::spawn_blocking(move || authority.reload(None)).await {
                        Ok(Ok(generation)) => {
                            callers.forget_all();
                            tracing::info!("SIGHUP: rules reloaded, generation {generation}");
                        }
                        Ok(Err(err)) => tracing::error!("SIGHUP: rules not reloaded, the old rules stay: {err}"),
                        Err(err) => tracing::error!("SIGHUP: reload failed: {err}"),
                    }
                });
            }
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }

    tracing::info!("stopping");
    sys::notify("STOPPING=1");
    // Stop new calls from arriving, then let calls in progress finish their writes.
    let _ = connection.release_name(BUS_NAME).await;
    if tokio::time::timeout(SHUTDOWN_GRACE, in_flight.write())
        .await
        .is_err()
    {
        tracing::warn!("calls still running after {SHUTDOWN_GRACE:?}, stopping anyway");
    }
    authority.stop_jobs().await;
    tokio::task::spawn_blocking(move || authority.close())
        .await?
        .map_err(DaemonError::Close)?;
    tracing::info!("stopped");
    Ok(())
}

/// The job backend the configuration asks for: transient units when systemd runs the
/// machine (`/run/systemd/system` exists), else the daemon's own fork.
async fn exec_backend(config: &config::ExecConfig) -> Result<Backend, DaemonError> {
    let booted = std::path::Path::new("/run/systemd/system").exists();
    let direct = || {
        Containment::choose(config.containment)
            .map(|c| Backend::Direct(Arc::new(c)))
            .map_err(DaemonError::Containment)
    };
    if config.backend == BackendChoice::Direct || (config.backend == BackendChoice::Auto && !booted)
    {
        return direct();
    }
    let limits = SliceLimits {
        cpu_quota_percent: config.slice_cpu_quota_percent,
        memory_max_bytes: config.slice_memory_max_bytes,
        tasks_max: config.slice_tasks_max,
    };
    match Systemd::connect().await {
        Ok(systemd) => Ok(Backend::Systemd(Arc::new(systemd), limits)),
        Err(err) if config.backend == BackendChoice::Auto => {
            tracing::warn!("systemd is PID 1 but cannot be reached ({err}); jobs run without it");
            direct()
        }
        Err(err) => Err(DaemonError::NoSystemd(err)),
    }
}

/// Reaps the orphans the daemon adopts as child subreaper once they end (the rest of a
/// job is reaped at its end).
async fn reap_orphans(containment: Arc<Containment>) {
    let mut every = tokio::time::interval(Duration::from_secs(5));
    loop {
        every.tick().await;
        let containment = containment.clone();
        let _ = tokio::task::spawn_blocking(move || containment.reap_orphans()).await;
    }
}

/// How long shutdown waits for calls in progress.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// Revokes associations when a rule expires, and periodically rechecks them against
/// NSS (an account deleted, a group membership gone).
async fn watch_expiry(authority: Arc<Authority>) {
    loop {
        let changed = authority.rules_changed();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let now = authority.now();
        let wait = Duration::from_micros((next_check(&authority, now) - now).max(0) as u64);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {
                let authority = authority.clone();
                if let Err(err) = tokio::task::spawn_blocking(move || authority.sweep()).await {
                    tracing::error!("revalidating associations failed: {err}");
                }
            }
            _ = &mut changed => {}
        }
    }
}

/// Keeps the daemon's state in `systemctl status` (sd_notify `STATUS=`): sent when it
/// changes (looked at every 2 s) and every 30 s regardless.
async fn report_status(authority: Arc<Authority>) {
    let mut every = tokio::time::interval(Duration::from_secs(2));
    let mut last = (String::new(), tokio::time::Instant::now());
    loop {
        every.tick().await;
        let authority = authority.clone();
        let Ok(status) = tokio::task::spawn_blocking(move || authority.status().to_string()).await
        else {
            continue;
        };
        if status != last.0 || last.1.elapsed() >= Duration::from_secs(30) {
            sys::notify(&format!("STATUS={status}"));
            last = (status, tokio::time::Instant::now());
        }
    }
}

/// Deletes old jobs now and then (exec.retention_secs; 0 keeps them).
async fn prune_jobs(authority: Arc<Authority>) {
    let period = {
        let authority = authority.clone();
        move || match authority.config().exec.retention_secs {
            0 => None,
            retention => Some(Duration::from_secs(retention.clamp(1, 600))),
        }
    };
    periodically(period, "pruning old jobs", move || authority.prune_jobs()).await
}

/// Keeps the audit log within `audit.max_bytes` and `audit.retention_secs`.
/// Often enough that a flood of records (bounded by the write budgets) cannot carry the
/// log far past its limit; a check under the limit costs nothing.
async fn prune_audit(authority: Arc<Authority>) {
    let period = || Some(Duration::from_secs(5));
    periodically(period, "pruning the audit log", move || {
        authority.prune_audit().map(|n| n as usize)
    })
    .await
}

/// Ends expired sessions soon after they expire.
async fn purge_sessions(authority: Arc<Authority>) {
    let period = {
        let authority = authority.clone();
        move || {
            let config = authority.config();
            let sessions = &config.sessions;
            let every = (sessions.idle_secs.min(sessions.ttl_secs) / 4).clamp(1, 60);
            Some(Duration::from_secs(every))
        }
    };
    periodically(period, "purging expired sessions", move || {
        authority.purge_sessions()
    })
    .await
}

/// Runs blocking `work` at once and then every `period()` (read again each time: a
/// reload may change it; `None`: not now, look again in a minute), logging its failures
/// as `what` failing.
async fn periodically(
    period: impl Fn() -> Option<Duration>,
    what: &'static str,
    work: impl Fn() -> Result<usize, crate::authority::Error> + Clone + Send + 'static,
) {
    loop {
        let Some(every) = period() else {
            tokio::time::sleep(Duration::from_secs(60)).await;
            continue;
        };
        let work = work.clone();
        match tokio::task::spawn_blocking(work).await {
            Ok(Err(err)) => tracing::error!("{what} failed: {err}"),
            Err(err) => tracing::error!("{what} failed: {err}"),
            Ok(Ok(_)) => {}
        }
        tokio::time::sleep(every).await;
    }
}

/// Command line of `proxyuserd`.
#[derive(clap::Parser, Debug)]
#[command(
    name = "proxyuserd",
    version,
    about = "The proxy user authority (a system D-Bus service)"
)]
pub struct Args {
    /// Configuration file; a missing file means safe defaults.
    #[arg(long, value_name = "PATH", default_value = config::DEFAULT_PATH)]
    pub config: PathBuf,
    /// Check the configuration file and the rule files it names, print what is wrong
    /// (file:line:column) and exit: 0 if the daemon would start with them, 1 if not.
    #[arg(long)]
    pub check_config: bool,
}

/// `--check-config`: the errors a start would meet, without starting.
pub fn check_config(path: &std::path::Path) -> Result<String, CheckError> {
    let config = Config::load(path)?;
    let rules = crate::authority::check_rule_dir(&config.rules_dir)?;
    Ok(format!(
        "{}: configuration valid; {}: {rules}",
        path.display(),
        config.rules_dir.display()
    ))
}

/// Exit status of a start without a usable configuration (`EX_CONFIG`): the unit does
/// not restart on it (`RestartPreventExitStatus=`), as nothing would change.
pub const EXIT_CONFIG: u8 = 78;

/// Why `--check-config` says a start would fail.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Rules(#[from] crate::authority::RuleCheckError),
}

/// Where the configuration a start runs on comes from.
pub enum ConfigSource {
    /// The configuration file, with its text (kept as the last good one once the
    /// daemon has started).
    File(String),
    /// The last good copy the daemon kept ([`config::LAST_GOOD`]), because the file is
    /// refused.
    LastGood { refused: ConfigError },
}

/// The configuration a start runs on: the file or, when the file is refused, the last
/// good copy, so that a typo does not turn a restart into an outage. `Err` when neither
/// can be used.
fn start_config(path: &Path) -> Result<(Config, ConfigSource), ConfigError> {
    let refused = match Config::load_text(path) {
        Ok((config, text)) => return Ok((config, ConfigSource::File(text))),
        Err(err) => err,
    };
    let dir = Config::state_dir_of(path);
    let last_good = dir.join(config::LAST_GOOD);
    // Only a copy the daemon's user alone could have written is trusted: it and its
    // directory are the daemon's and writable by nobody else. Nothing is created or
    // changed on the word of a file that did not validate.
    let daemon = nix::unistd::geteuid().as_raw();
    let private = |p: &Path| {
        use std::os::unix::fs::MetadataExt;
        std::fs::symlink_metadata(p).is_ok_and(|m| m.uid() == daemon && m.mode() & 0o022 == 0)
    };
    let kept = (private(&dir) && private(&last_good))
        .then(|| std::fs::read_to_string(&last_good).ok())
        .flatten();
    let Some(text) = kept else {
        return Err(refused);
    };
    match Config::parse(&last_good.display().to_string(), &text) {
        Ok(config) => {
            report(&format!(
                "{refused}; running on the last good configuration ({}) until the file is \
                 fixed and reloaded (systemctl reload proxyuserd)",
                last_good.display()
            ));
            Ok((config, ConfigSource::LastGood { refused }))
        }
        Err(_) => Err(refused),
    }
}

/// Reports a fatal error once: to the journal when the daemon logs there, else to
/// stderr (which systemd would copy into the journal a second time).
fn report(err: &str) {
    eprintln!("proxyuserd: {err}");
    if std::env::var_os("JOURNAL_STREAM").is_none() && journald_running() {
        tracing::error!("{err}");
    }
}

fn journald_running() -> bool {
    std::path::Path::new(journal::SOCKET).exists()
}

/// `proxyuserd`'s main.
pub fn main() -> std::process::ExitCode {
    use clap::Parser;
    sys::limit_malloc_arenas();
    let args = Args::parse();
    if args.check_config {
        return match check_config(&args.config) {
            Ok(summary) => {
                println!("{summary}");
                std::process::ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("proxyuserd: {err}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    init_logging();
    let (config, source) = match start_config(&args.config) {
        Ok(start) => start,
        Err(err) => {
            report(&err.to_string());
            return std::process::ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("proxyuserd: cannot start the runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(args.config.clone(), config, source));
    // Background tasks (signal forwarding, timers) end with the runtime.
    runtime.shutdown_timeout(Duration::from_secs(2));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            report(&err.to_string());
            std::process::ExitCode::FAILURE
        }
    }
}
