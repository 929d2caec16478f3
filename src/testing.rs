//! The in-process harness: the whole daemon (authority, store, audit chain, the bus
//! interfaces) in the test's own process, with a table of accounts instead of NSS, a
//! clock the test moves by hand, a job runner that starts nothing, and peer-to-peer
//! connections whose caller the test chooses instead of a bus daemon. No root, no bus,
//! no journald, no users: each harness has its own state directory, so tests run in
//! parallel.
//!
//! Only built with the `testing` feature, which only the tests turn on: nothing here is
//! in the daemon.
//!
//! ```no_run
//! # async fn example() {
//! use proxyuserd::testing::{Harness, ALICE, ETL};
//! let harness = Harness::start().await;
//! let alice = harness.client_as(ALICE).await;
//! alice.identity.set_proxy(ALICE, ETL).await.unwrap();
//! # }
//! ```

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::sync::{mpsc, watch};
use zbus::Connection;
use zbus::connection::Builder;
use zbus::message::Header;

use crate::accounts::{Account, AccountSource, LookupError};
use crate::authority::{Authority, Host, Notice};
use crate::bus::{self, Callers, CredentialFuture, CredentialSource, Shared};
use crate::client::{AdminProxy, IdentityProxy, JobsProxy, SessionsProxy};
use crate::config::Config;
use crate::exec::{JobSpec, ProcessEnd, Runner, RunnerFuture};
use crate::time::{Clock, Micros};

/// The accounts every harness starts with. `ALICE`, `BOB` and `MALLORY` are in the
/// data team (`data-eng`); `ETL` is a proxy user by name, `REPORT` by its group `svc`;
/// `ADMIN` is in the admin group; `GATEWAY` is a trusted caller; `CAROL` is in no team.
pub const ALICE: &str = "alice";
pub const BOB: &str = "bob";
pub const CAROL: &str = "carol";
pub const MALLORY: &str = "mallory";
pub const ETL: &str = "etl";
pub const REPORT: &str = "report";
pub const ADMIN: &str = "admin";
pub const GATEWAY: &str = "gateway";

/// The rules every harness starts with (`rules.d/10-base.toml`): the data team may
/// proxy to `etl` and to the `svc` group, except mallory.
pub const BASE_RULES: &str = r#"[proxy_users]
users = ["etl"]
groups = ["svc"]

[[allow]]
login_groups = ["data-eng"]
proxies = ["etl"]
proxy_groups = ["svc"]

[[deny]]
logins = ["mallory"]
proxies = ["*"]
"#;

/// A user database in a table.
#[derive(Default)]
pub struct Accounts {
    users: Mutex<Vec<Account>>,
    groups: Mutex<HashMap<String, u32>>,
}

impl Accounts {
    /// The harness's accounts (see [`ALICE`] and the rest) and root.
    pub fn standard() -> Self {
        let accounts = Accounts::default();
        accounts.add("root", 0, &["root"]);
        accounts.add(ALICE, 1001, &[ALICE, "data-eng"]);
        accounts.add(BOB, 1002, &[BOB, "data-eng"]);
        accounts.add(MALLORY, 1003, &[MALLORY, "data-eng"]);
        accounts.add(CAROL, 1004, &[CAROL]);
        accounts.add(ADMIN, 1100, &[ADMIN, "admins"]);
        accounts.add(GATEWAY, 1200, &[GATEWAY]);
        accounts.add(ETL, 2001, &[ETL]);
        accounts.add(REPORT, 2002, &["svc"]);
        accounts
    }

    /// Adds (or replaces) account `name` with uid `uid` in `groups`, the first its
    /// primary group. Groups get a gid when first named.
    pub fn add(&self, name: &str, uid: u32, groups: &[&str]) {
        let gids: Vec<u32> = groups.iter().map(|g| self.gid(g)).collect();
        let account = Account {
            name: name.to_string(),
            uid,
            gid: gids.first().copied().unwrap_or(uid),
            home: PathBuf::from(format!("/home/{name}")),
            shell: PathBuf::from("/bin/sh"),
            gids,
            groups: groups.iter().map(|g| g.to_string()).collect(),
        };
        let mut users = self.lock_users();
        users.retain(|a| a.name != name);
        users.push(account);
    }

    /// Removes account `name` (as if it was deleted from the directory).
    pub fn remove(&self, name: &str) {
        self.lock_users().retain(|a| a.name != name);
    }

    /// The uid of account `name`. Panics if there is none.
    pub fn uid(&self, name: &str) -> u32 {
        self.lock_users()
            .iter()
            .find(|a| a.name == name)
            .unwrap_or_else(|| panic!("no account {name} in the table"))
            .uid
    }

    fn gid(&self, group: &str) -> u32 {
        let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        let next = if group == "root" {
            0
        } else {
            5000 + groups.len() as u32
        };
        *groups.entry(group.to_string()).or_insert(next)
    }

    fn lock_users(&self) -> std::sync::MutexGuard<'_, Vec<Account>> {
        self.users.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl AccountSource for Accounts {
    fn user(&self, name: &str) -> Result<Option<Account>, LookupError> {
        Ok(self.lock_users().iter().find(|a| a.name == name).cloned())
    }

    fn user_by_uid(&self, uid: u32) -> Result<Option<Account>, LookupError> {
        Ok(self.lock_users().iter().find(|a| a.uid == uid).cloned())
    }

    fn group_members(&self, group: &str) -> Result<Vec<String>, LookupError> {
        let mut members: Vec<String> = self
            .lock_users()
            .iter()
            .filter(|a| a.groups.iter().any(|g| g == group))
            .map(|a| a.name.clone())
            .collect();
        members.sort();
        Ok(members)
    }

    fn uid_shared(&self, uid: u32) -> bool {
        self.lock_users().iter().filter(|a| a.uid == uid).count() > 1
    }
}

/// A clock that stands still until the test moves it.
pub struct ManualClock(AtomicI64);

impl ManualClock {
    /// A clock at `now` µs since the epoch.
    pub fn at(now: Micros) -> Self {
        ManualClock(AtomicI64::new(now))
    }

    pub fn advance(&self, by: Duration) {
        let by = i64::try_from(by.as_micros()).unwrap_or(i64::MAX);
        self.0.fetch_add(by, Ordering::AcqRel);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Micros {
        self.0.load(Ordering::Acquire)
    }
}

/// A job as the fake runner was asked to start it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartedJob {
    pub argv: Vec<String>,
    pub user: String,
    pub uid: u32,
    pub gids: Vec<u32>,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
}

struct FakeJob {
    started: StartedJob,
    end: watch::Sender<Option<ProcessEnd>>,
    signals: Vec<Signal>,
}

/// A job runner that starts no process. What a job does is its program's file name:
/// - `exit CODE`: ends at once with exit status CODE;
/// - `missing`: cannot be started (no such program, the caller's fault);
/// - `stubborn`: runs until SIGKILL;
/// - anything else: runs until a signal (SIGTERM ends it too) or [`FakeRunner::finish`].
#[derive(Default)]
pub struct FakeRunner {
    jobs: Mutex<HashMap<String, FakeJob>>,
}

impl FakeRunner {
    /// What job `id` was started as, if it was.
    pub fn started(&self, id: &str) -> Option<StartedJob> {
        self.lock().get(id).map(|job| job.started.clone())
    }

    /// The signals job `id` got, in order.
    pub fn signals(&self, id: &str) -> Vec<Signal> {
        self.lock()
            .get(id)
            .map(|job| job.signals.clone())
            .unwrap_or_default()
    }

    /// Ends job `id` as `end`.
    pub fn finish(&self, id: &str, end: ProcessEnd) {
        if let Some(job) = self.lock().get(id) {
            job.end.send_if_modified(|current| {
                let first = current.is_none();
                if first {
                    *current = Some(end);
                }
                first
            });
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, FakeJob>> {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Runner for FakeRunner {
    fn name(&self) -> &'static str {
        "the in-process tests' fake runner"
    }

    fn start<'a>(&'a self, id: &'a str, spec: JobSpec) -> RunnerFuture<'a, io::Result<()>> {
        Box::pin(async move {
            let program = program(&spec.argv);
            if program == "missing" {
                return Err(io::Error::from_raw_os_error(libc::ENOENT));
            }
            let end = match (program, spec.argv.get(1).map(|a| a.parse::<i32>())) {
                ("exit", Some(Ok(code))) => Some(ProcessEnd::Exited(code)),
                _ => None,
            };
            let started = StartedJob {
                argv: spec.argv,
                user: spec.user,
                uid: spec.uid,
                gids: spec.gids,
                env: spec.env,
                cwd: spec.cwd,
            };
            let (end, _) = watch::channel(end);
            self.lock().insert(
                id.to_string(),
                FakeJob {
                    started,
                    end,
                    signals: Vec::new(),
                },
            );
            Ok(())
        })
    }

    fn wait<'a>(&'a self, id: &'a str) -> RunnerFuture<'a, ProcessEnd> {
        Box::pin(async move {
            let Some(mut end) = self.lock().get(id).map(|job| job.end.subscribe()) else {
                return ProcessEnd::Failed(format!("the fake runner has no job {id}"));
            };
            match end.wait_for(Option::is_some).await {
                Ok(end) => end.clone().expect("waited for an end"),
                Err(_) => ProcessEnd::Failed("the fake runner went away".into()),
            }
        })
    }

    fn signal<'a>(&'a self, id: &'a str, signal: Signal) -> RunnerFuture<'a, ()> {
        Box::pin(async move {
            let stubborn = {
                let mut jobs = self.lock();
                let Some(job) = jobs.get_mut(id) else {
                    return;
                };
                job.signals.push(signal);
                program(&job.started.argv) == "stubborn"
            };
            if signal == Signal::SIGKILL || !stubborn {
                self.finish(id, ProcessEnd::Signaled(signal as i32));
            }
        })
    }
}

/// The file name of a job's program.
fn program(argv: &[String]) -> &str {
    argv.first()
        .and_then(|p| Path::new(p).file_name())
        .and_then(|name| name.to_str())
        .unwrap_or_default()
}

/// Callers of peer-to-peer connections: each connection is the caller the test made it
/// for (known by the connection's GUID).
#[derive(Default)]
pub struct Peers {
    by_guid: Mutex<HashMap<String, (u32, u32)>>,
}

impl Peers {
    fn key(connection: &Connection) -> String {
        format!("p2p-{}", connection.server_guid())
    }
}

impl CredentialSource for Peers {
    fn peer(
        &self,
        connection: &Connection,
        _: &Header<'_>,
    ) -> Result<String, crate::authority::Error> {
        Ok(Peers::key(connection))
    }

    fn credentials<'a>(&'a self, _: &'a Connection, peer: &'a str) -> CredentialFuture<'a> {
        let known = self
            .by_guid
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(peer)
            .copied();
        Box::pin(async move {
            known.ok_or_else(|| {
                crate::authority::Error::AccessDenied(format!("unknown peer {peer}"))
            })
        })
    }
}

/// The client proxies of one connection.
pub struct Client {
    pub connection: Connection,
    pub identity: IdentityProxy<'static>,
    pub admin: AdminProxy<'static>,
    pub jobs: JobsProxy<'static>,
    pub sessions: SessionsProxy<'static>,
}

/// A daemon in this process, with its own state directory (removed at drop).
pub struct Harness {
    pub authority: Arc<Authority>,
    pub accounts: Arc<Accounts>,
    pub clock: Arc<ManualClock>,
    pub runner: Arc<FakeRunner>,
    /// What the daemon would announce as signals.
    pub notices: tokio::sync::Mutex<mpsc::UnboundedReceiver<Notice>>,
    shared: Shared,
    peers: Arc<Peers>,
    /// The daemon's ends of the connections made so far.
    servers: Mutex<Vec<Connection>>,
    dir: PathBuf,
}

/// Where the harness's clock starts: 2030-01-01T00:00:00Z.
pub const START: Micros = 1_893_456_000_000_000;

impl Harness {
    /// A harness with the standard accounts and [`BASE_RULES`].
    pub async fn start() -> Harness {
        Harness::configured(|_| {}).await
    }

    /// A harness with [`BASE_RULES`] and the configuration `adjust` makes of the
    /// harness's.
    pub async fn configured(adjust: impl FnOnce(&mut Config)) -> Harness {
        Harness::with(&[("10-base.toml", BASE_RULES)], adjust).await
    }

    /// A harness with rule files `rules` (name, text) and the configuration `adjust`
    /// makes of the harness's (admin group `admins`, trusted caller `gateway`).
    pub async fn with(rules: &[(&str, &str)], adjust: impl FnOnce(&mut Config)) -> Harness {
        let dir = state_dir();
        let rules_dir = dir.join("rules.d");
        std::fs::create_dir_all(&rules_dir).expect("create the rules directory");
        for (name, text) in rules {
            std::fs::write(rules_dir.join(name), text).expect("write a rule file");
        }
        let mut config = Config {
            state_dir: dir.join("state"),
            rules_dir,
            trusted_callers: vec![GATEWAY.into()],
            admin_group: Some("admins".into()),
            uid_min: Some(1000),
            // Every lookup asks the table: a test that changes it sees the change.
            nss_cache_secs: 0,
            ..Config::default()
        };
        adjust(&mut config);
        crate::authority::secure_state_dir(&config.state_dir).expect("make the state directory");

        let accounts = Arc::new(Accounts::standard());
        let clock = Arc::new(ManualClock::at(START));
        let runner = Arc::new(FakeRunner::default());
        let host = Host {
            accounts: accounts.clone(),
            clock: clock.clone(),
        };
        let backend = crate::exec::Backend::Runner(runner.clone());
        let runtime = tokio::runtime::Handle::current();
        // The file a reload reads again.
        let config_path = dir.join("proxyuserd.toml");
        let text = toml::to_string(&config).expect("the configuration as TOML");
        std::fs::write(&config_path, text).expect("write the configuration file");
        let (authority, notices) = tokio::task::spawn_blocking(move || {
            Authority::open(&config_path, config, None, backend, host, runtime)
        })
        .await
        .expect("open the authority")
        .expect("open the authority");
        authority
            .recover_jobs()
            .await
            .expect("recover the jobs of the last run");
        let peers = Arc::new(Peers::default());
        let callers = Arc::new(Callers::with_source(authority.clone(), peers.clone()));
        let shared = Shared {
            authority: authority.clone(),
            callers,
            in_flight: Arc::default(),
            admission: Arc::default(),
        };
        Harness {
            authority,
            accounts,
            clock,
            runner,
            notices: tokio::sync::Mutex::new(notices),
            shared,
            peers,
            servers: Mutex::default(),
            dir,
        }
    }

    /// The state and rules directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A connection to the daemon whose caller is `uid` (and a made-up pid).
    pub async fn connect(&self, uid: u32) -> Connection {
        let (server, client) = std::os::unix::net::UnixStream::pair().expect("a socket pair");
        let guid = zbus::Guid::generate();
        let pid = 100_000 + (NEXT.fetch_add(1, Ordering::Relaxed) as u32);
        self.peers
            .by_guid
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(format!("p2p-{guid}"), (uid, pid));
        let (server, client) = tokio::try_join!(
            Builder::unix_stream(server).server(guid).p2p().build(),
            Builder::unix_stream(client).p2p().build(),
        )
        .expect("a peer-to-peer connection");
        bus::serve(&server, &self.shared)
            .await
            .expect("serve the interfaces");
        self.servers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(server);
        client
    }

    /// The client proxies of a new connection whose caller is account `name`.
    pub async fn client_as(&self, name: &str) -> Client {
        self.client_of(self.accounts.uid(name)).await
    }

    /// The client proxies of a new connection whose caller is `uid`.
    pub async fn client_of(&self, uid: u32) -> Client {
        let connection = self.connect(uid).await;
        Client {
            identity: IdentityProxy::new(&connection).await.expect("a proxy"),
            admin: AdminProxy::new(&connection).await.expect("a proxy"),
            jobs: JobsProxy::new(&connection).await.expect("a proxy"),
            sessions: SessionsProxy::new(&connection).await.expect("a proxy"),
            connection,
        }
    }

    /// Writes rule file `name` (the next Reload reads it).
    pub fn write_rules(&self, name: &str, text: &str) {
        std::fs::write(self.dir.join("rules.d").join(name), text).expect("write a rule file");
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = self.authority.close();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

static NEXT: AtomicU64 = AtomicU64::new(0);

/// A new private directory under the system's temporary directory.
fn state_dir() -> PathBuf {
    use std::os::unix::fs::DirBuilderExt;
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("proxyuserd-inproc-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .expect("create the harness directory");
    dir
}
