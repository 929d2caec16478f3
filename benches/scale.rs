//! Every figure of "proxyuserd stays bounded" (issue 8), measured side by side: the
//! current daemon and, with `--baseline PATH`, another build of it (the README names
//! the commit the "now" column comes from), on the same private bus set-up, the same
//! rule file, the same users, one run. Needs root and the test users (`sudo tests/setup`).
//!
//! ```text
//! cargo bench --bench scale -- [--baseline PATH] [--rules N] [--reloads N]
//!     [--soak-secs S] [--soak-clients N] [--mix-secs S] [--mix-clients N] [--secs S]
//!     [--only SECTION,...]
//! ```
//!
//! Sections: `argv` (a refused-argv flood: store growth), `soak` (a flood of jobs that
//! start, state on a 64 MiB file system, while another user calls `SetProxy` every 50
//! ms), `mix` (the soak of many clients on their own connections, a mix of every kind
//! of call: latencies per kind, errors, RSS), `listjobs` (`ListJobs` with a long job
//! history), `rules` (RSS and `Admin.Reload` with N rules, Resolve latency during reloads),
//! `writes` (`SetProxy` by a gateway, 1/8/32 in flight), `reads` (`ResolveTicket` vs
//! `Resolve`, `CheckProxy` vs `Peer.Ping`), `exec` (`Exec` latency).
//!
//! Load comes from this same program re-run as the test users (`--client ...`), so
//! every caller is a real unix user on the bus. Without `--bench` (as `cargo test
//! --all-targets` runs it) every section runs once, small, against the current daemon
//! only: a check that the bench works, not a measurement.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

const DEST: &str = "org.proxyuserd1";
const PATH: &str = "/org/proxyuserd1";

// ---------------------------------------------------------------------------------
// Options

struct Options {
    measuring: bool,
    baseline: Option<PathBuf>,
    rules: usize,
    reloads: usize,
    soak_secs: u64,
    soak_clients: usize,
    secs: f64,
    mix_secs: u64,
    mix_clients: usize,
    only: Option<Vec<String>>,
}

impl Options {
    fn parse(args: &[String]) -> Options {
        let measuring = args.iter().any(|a| a == "--bench");
        let mut o = Options {
            measuring,
            baseline: None,
            rules: if measuring { 100_000 } else { 2_000 },
            reloads: if measuring { 20 } else { 3 },
            soak_secs: if measuring { 15 } else { 2 },
            soak_clients: 2,
            secs: if measuring { 3.0 } else { 0.3 },
            mix_secs: if measuring { 60 } else { 2 },
            mix_clients: if measuring { 64 } else { 8 },
            only: None,
        };
        let mut i = 0;
        while i < args.len() {
            let value = || {
                args.get(i + 1)
                    .unwrap_or_else(|| panic!("{} needs a value", args[i]))
                    .clone()
            };
            match args[i].as_str() {
                "--baseline" => o.baseline = Some(PathBuf::from(value())),
                "--rules" => o.rules = value().parse().expect("--rules N"),
                "--reloads" => o.reloads = value().parse().expect("--reloads N"),
                "--soak-secs" => o.soak_secs = value().parse().expect("--soak-secs S"),
                "--soak-clients" => o.soak_clients = value().parse().expect("--soak-clients N"),
                "--secs" => o.secs = value().parse().expect("--secs S"),
                "--mix-secs" => o.mix_secs = value().parse().expect("--mix-secs S"),
                "--mix-clients" => o.mix_clients = value().parse().expect("--mix-clients N"),
                "--only" => o.only = Some(value().split(',').map(String::from).collect()),
                _ => {
                    i += 1;
                    continue;
                }
            }
            i += 2;
        }
        if let Some(baseline) = &o.baseline {
            assert!(
                baseline.is_file(),
                "--baseline {}: no such file",
                baseline.display()
            );
        }
        o
    }

    fn wants(&self, section: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|only| only.iter().any(|s| s == section))
    }

    /// (label, daemon binary) of each daemon measured, baseline first.
    fn daemons(&self) -> Vec<(&'static str, PathBuf)> {
        let mut all = Vec::new();
        if let Some(baseline) = &self.baseline {
            all.push(("baseline", baseline.clone()));
        }
        all.push(("current", bin("proxyuserd")));
        all
    }
}

// ---------------------------------------------------------------------------------
// Load clients: this program re-run as a test user.

/// Runs `--client ARGS` as `user` and returns the JSON line it prints.
fn client(env: &Env, user: &str, args: &[String]) -> std::process::Child {
    let mut command = env.command_as(user, std::env::current_exe().unwrap());
    command
        .arg("--client")
        .arg(&env.address)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit());
    command.spawn().expect("spawn load client")
}

fn client_result(child: std::process::Child) -> Value {
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "load client printed no result ({}, {e}): {text}",
            out.status
        )
    })
}

fn run_client(env: &Env, user: &str, args: &[&str]) -> Value {
    client_result(client(
        env,
        user,
        &args.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
    ))
}

/// What one client call is.
#[derive(Clone)]
enum Call {
    Ping,
    Resolve(String),
    CheckProxy(String, String),
    /// Alternately `SetProxy(login, proxy)` and `ClearProxy(login)`: each a real write.
    Toggle(String, String),
    ResolveTicket(String),
    /// `Exec(login, argv, {}, "/")`.
    Exec(String, Vec<String>),
    ListJobs(String),
}

impl Call {
    fn parse(words: &[String]) -> Call {
        let arg = |n: usize| words.get(n).cloned().unwrap_or_default();
        match words[0].as_str() {
            "ping" => Call::Ping,
            "resolve" => Call::Resolve(arg(1)),
            "check" => Call::CheckProxy(arg(1), arg(2)),
            "toggle" => Call::Toggle(arg(1), arg(2)),
            "ticket" => Call::ResolveTicket(arg(1)),
            // exec LOGIN ARGS_COUNT ARG_BYTES: /bin/true and that many big arguments
            "exec" => {
                let count: usize = arg(2).parse().unwrap_or(0);
                let bytes: usize = arg(3).parse().unwrap_or(0);
                let mut argv = vec!["/bin/true".to_string()];
                argv.extend((0..count).map(|_| "x".repeat(bytes)));
                Call::Exec(arg(1), argv)
            }
            "list" => Call::ListJobs(arg(1)),
            other => panic!("unknown call {other}"),
        }
    }

    async fn send(&self, connection: &zbus::Connection, turn: u64) -> Result<(), String> {
        let call = |interface: &'static str, method: &'static str| {
            (Some(DEST), PATH, Some(interface), method)
        };
        let result = match self {
            Call::Ping => {
                let (d, p, i, m) = call("org.freedesktop.DBus.Peer", "Ping");
                connection.call_method(d, p, i, m, &()).await
            }
            Call::Resolve(login) => {
                let (d, p, i, m) = call("org.proxyuserd1.Identity", "Resolve");
                connection.call_method(d, p, i, m, &(login,)).await
            }
            Call::CheckProxy(login, proxy) => {
                let (d, p, i, m) = call("org.proxyuserd1.Identity", "CheckProxy");
                connection.call_method(d, p, i, m, &(login, proxy)).await
            }
            Call::Toggle(login, proxy) if turn.is_multiple_of(2) => {
                let (d, p, i, m) = call("org.proxyuserd1.Identity", "SetProxy");
                connection.call_method(d, p, i, m, &(login, proxy)).await
            }
            Call::Toggle(login, _) => {
                let (d, p, i, m) = call("org.proxyuserd1.Identity", "ClearProxy");
                connection.call_method(d, p, i, m, &(login,)).await
            }
            Call::ResolveTicket(ticket) => {
                let (d, p, i, m) = call("org.proxyuserd1.Sessions", "ResolveTicket");
                connection.call_method(d, p, i, m, &(ticket,)).await
            }
            Call::ListJobs(login) => return list_jobs(connection, login).await,
            Call::Exec(login, argv) => {
                let (d, p, i, m) = call("org.proxyuserd1.Jobs", "Exec");
                let env: BTreeMap<String, String> = BTreeMap::new();
                connection
                    .call_method(d, p, i, m, &(login, argv, env, "/"))
                    .await
            }
        };
        result.map(drop).map_err(error_name)
    }
}

/// `--client ADDRESS MODE ...`:
/// - `drive IN_FLIGHT SECS CALL...`: as many calls as IN_FLIGHT workers manage in SECS;
/// - `count CALLS CALL...`: CALLS calls one after the other;
/// - `tick PERIOD_MS SECS CALL...`: one call every PERIOD_MS for SECS.
///
/// Prints `{"calls", "secs", "rate", "ok", "errors": {name: n}, "p50_ms", "p95_ms",
/// "p99_ms", "max_ms"}`.
fn client_main(args: &[String]) {
    let address = args[0].clone();
    let mode = args[1].clone();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let result = runtime.block_on(async move {
        let connection = zbus::connection::Builder::address(address.as_str())
            .build()
            .await
            .expect("connect to the bus");
        let (workers, limit, period, call) = match mode.as_str() {
            "drive" => (
                args[2].parse::<usize>().unwrap(),
                Limit::Secs(args[3].parse().unwrap()),
                None,
                Call::parse(&args[4..]),
            ),
            "count" => (
                1,
                Limit::Calls(args[2].parse().unwrap()),
                None,
                Call::parse(&args[3..]),
            ),
            "tick" => (
                1,
                Limit::Secs(args[3].parse().unwrap()),
                Some(Duration::from_millis(args[2].parse().unwrap())),
                Call::parse(&args[4..]),
            ),
            "mix" => {
                return mix(
                    &address,
                    args[2].parse().unwrap(),
                    args[3].parse().unwrap(),
                    &args[4],
                    &args[5],
                    args.get(6).unwrap_or(&args[4]),
                )
                .await;
            }
            other => panic!("unknown client mode {other}"),
        };
        drive(&connection, workers, limit, period, call).await
    });
    println!("{result}");
}

/// `--client ADDRESS mix CONNECTIONS SECS LOGIN PROXY [JOBS_LOGIN]`: CONNECTIONS
/// connections of their own, each a loop of the soak's mix for LOGIN (the caller's own
/// name when it is a login): out of 20 calls, 12 `Resolve`, 3 `CheckProxy`, 2 writes, 1
/// `ListJobs` and 1 `Exec`+`Wait` for JOBS_LOGIN, 1 `OpenSession`+`ResolveCookies` (a
/// `Resolve` for callers that are not gateways). A gateway's writes alternate
/// `SetProxy`/`ClearProxy`; a login's are all `SetProxy`, so that its jobs' user stays
/// the same between `Exec` and `Wait`. Prints, per kind, the latencies and errors like
/// `drive`, plus the calls per second of all kinds together.
async fn mix(
    address: &str,
    connections: usize,
    secs: f64,
    login: &str,
    proxy: &str,
    jobs_login: &str,
) -> Value {
    const KINDS: [&str; 20] = [
        "read", "read", "read", "check", "read", "read", "write", "read", "read", "list", "read",
        "check", "read", "exec", "read", "read", "write", "read", "check", "session",
    ];
    let gateway = nix::unistd::getuid().as_raw() != ids(login).0;
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for c in 0..connections {
        let connection = zbus::connection::Builder::address(address)
            .build()
            .await
            .expect("connect to the bus");
        let (login, proxy, jobs_login) =
            (login.to_string(), proxy.to_string(), jobs_login.to_string());
        tasks.push(tokio::spawn(async move {
            let mut seen: BTreeMap<&'static str, (Vec<Duration>, BTreeMap<String, u64>)> =
                BTreeMap::new();
            let mut turn = c * 7;
            let mut toggles = 0u64;
            while Instant::now() < deadline {
                let kind = KINDS[turn % KINDS.len()];
                turn += 1;
                let sent = Instant::now();
                let result = timed(async {
                    match kind {
                        "read" => Call::Resolve(login.clone()).send(&connection, 0).await,
                        "check" => {
                            Call::CheckProxy(login.clone(), proxy.clone())
                                .send(&connection, 0)
                                .await
                        }
                        "write" => {
                            toggles += if gateway { 1 } else { 2 };
                            Call::Toggle(login.clone(), proxy.clone())
                                .send(&connection, toggles)
                                .await
                        }
                        "list" => list_jobs(&connection, &jobs_login).await,
                        "exec" => exec_and_wait(&connection, &jobs_login).await,
                        _ if gateway => session(&connection, &login).await,
                        _ => Call::Resolve(login.clone()).send(&connection, 0).await,
                    }
                })
                .await;
                let entry = seen.entry(kind).or_default();
                entry.0.push(sent.elapsed());
                if let Err(name) = result {
                    *entry.1.entry(name).or_default() += 1;
                }
            }
            seen
        }));
    }
    let mut all: BTreeMap<&'static str, (Vec<Duration>, BTreeMap<String, u64>)> = BTreeMap::new();
    for task in tasks {
        for (kind, (l, e)) in task.await.unwrap() {
            let entry = all.entry(kind).or_default();
            entry.0.extend(l);
            for (k, v) in e {
                *entry.1.entry(k).or_default() += v;
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let total: usize = all.values().map(|(l, _)| l.len()).sum();
    let kinds: serde_json::Map<String, Value> = all
        .into_iter()
        .map(|(kind, (mut l, e))| (kind.to_string(), summary(&mut l, e, secs)))
        .collect();
    json!({ "calls": total, "secs": secs, "rate": total as f64 / secs, "kinds": kinds })
}

/// A call that has no answer after 25 s (libdbus's default) is an error, `Timeout`: a
/// daemon that hangs (as one did on a full disk) must not hang the bench.
async fn timed(call: impl std::future::Future<Output = Result<(), String>>) -> Result<(), String> {
    tokio::time::timeout(Duration::from_secs(25), call)
        .await
        .unwrap_or_else(|_| Err("Timeout".into()))
}

async fn list_jobs(connection: &zbus::Connection, login: &str) -> Result<(), String> {
    connection
        .call_method(
            Some(DEST),
            PATH,
            Some("org.proxyuserd1.Jobs"),
            "ListJobs",
            &(login,),
        )
        .await
        .map(drop)
        .map_err(error_name)
}

async fn exec_and_wait(connection: &zbus::Connection, login: &str) -> Result<(), String> {
    let jobs = Some("org.proxyuserd1.Jobs");
    let env: BTreeMap<String, String> = BTreeMap::new();
    let reply = connection
        .call_method(
            Some(DEST),
            PATH,
            jobs,
            "Exec",
            &(login, vec!["/bin/true"], env, "/"),
        )
        .await
        .map_err(error_name)?;
    let job: String = reply.body().deserialize().map_err(|e| e.to_string())?;
    connection
        .call_method(Some(DEST), PATH, jobs, "Wait", &(login, job))
        .await
        .map(drop)
        .map_err(error_name)
}

async fn session(connection: &zbus::Connection, login: &str) -> Result<(), String> {
    let sessions = Some("org.proxyuserd1.Sessions");
    let reply = connection
        .call_method(Some(DEST), PATH, sessions, "OpenSession", &(login,))
        .await
        .map_err(error_name)?;
    let ticket: String = reply.body().deserialize().map_err(|e| e.to_string())?;
    let header = format!("linkis_user_session_ticket_id_v1={ticket}");
    connection
        .call_method(Some(DEST), PATH, sessions, "ResolveCookies", &(header,))
        .await
        .map(drop)
        .map_err(error_name)
}

fn error_name(e: zbus::Error) -> String {
    match e {
        zbus::Error::MethodError(name, _, _) => name.to_string(),
        other => other.to_string(),
    }
}

/// Count, rate, errors and percentiles of one kind of call.
fn summary(latencies: &mut [Duration], errors: BTreeMap<String, u64>, secs: f64) -> Value {
    latencies.sort();
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let i = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[i].as_secs_f64() * 1000.0
    };
    let failed: u64 = errors.values().sum();
    json!({
        "calls": latencies.len(),
        "secs": secs,
        "rate": latencies.len() as f64 / secs,
        "ok": latencies.len() as u64 - failed,
        "errors": errors,
        "p50_ms": pct(0.50),
        "p95_ms": pct(0.95),
        "p99_ms": pct(0.99),
        "max_ms": pct(1.0),
    })
}

#[derive(Clone, Copy)]
enum Limit {
    Secs(f64),
    Calls(u64),
}

async fn drive(
    connection: &zbus::Connection,
    workers: usize,
    limit: Limit,
    period: Option<Duration>,
    call: Call,
) -> Value {
    let start = Instant::now();
    let deadline = match limit {
        Limit::Secs(s) => Some(start + Duration::from_secs_f64(s)),
        Limit::Calls(_) => None,
    };
    let max_calls = match limit {
        Limit::Calls(n) => n,
        Limit::Secs(_) => u64::MAX,
    };
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let connection = connection.clone();
            let call = call.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors: BTreeMap<String, u64> = BTreeMap::new();
                let mut turn = w as u64;
                let mut next = Instant::now();
                while latencies.len() as u64 * workers as u64 + (w as u64) < max_calls
                    && deadline.is_none_or(|d| Instant::now() < d)
                {
                    if let Some(period) = period {
                        tokio::time::sleep_until(next.into()).await;
                        next += period;
                    }
                    let sent = Instant::now();
                    if let Err(name) = timed(call.send(&connection, turn)).await {
                        *errors.entry(name).or_default() += 1;
                    }
                    latencies.push(sent.elapsed());
                    turn += 1;
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for task in tasks {
        let (l, e) = task.await.unwrap();
        latencies.extend(l);
        for (k, v) in e {
            *errors.entry(k).or_default() += v;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    summary(&mut latencies, errors, secs)
}

// ---------------------------------------------------------------------------------
// Measuring helpers

/// Bytes allocated on disk under `dir` (what a full disk counts).
fn disk_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            total += disk_bytes(&entry.path());
        }
        total += meta.blocks() * 512;
    }
    total
}

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn alive(env: &Env) -> bool {
    process_alive(env.daemon_pid())
        && std::process::Command::new("busctl")
            .arg(format!("--address={}", env.address))
            .args(["call", DEST, PATH, "org.freedesktop.DBus.Peer", "Ping"])
            .output()
            .is_ok_and(|o| o.status.success())
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn errors_text(v: &Value) -> String {
    let errors = v["errors"].as_object().cloned().unwrap_or_default();
    if errors.is_empty() {
        return "0 failed".into();
    }
    errors
        .iter()
        .map(|(k, n)| format!("{n}× {}", k.rsplit('.').next().unwrap_or(k)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One printed row: what, and one value per daemon.
struct Table {
    daemons: Vec<&'static str>,
    rows: Vec<(String, Vec<String>)>,
}

impl Table {
    fn row(&mut self, what: impl Into<String>, values: Vec<String>) {
        self.rows.push((what.into(), values));
    }

    fn print(&self) {
        let width = self.rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
        let col = 34;
        print!("{:width$}", "");
        for d in &self.daemons {
            print!("  {d:col$}");
        }
        println!();
        for (what, values) in &self.rows {
            print!("{what:width$}");
            for v in values {
                print!("  {v:col$}");
            }
            println!();
        }
    }
}

fn env_for(name: &str, daemon: &(&str, PathBuf), current_config: &str) -> Env {
    // A baseline build knows only the keys it had: give it none of the new ones.
    let config = if daemon.0 == "current" {
        current_config
    } else {
        ""
    };
    let mut env = Env::prepare(name, config, &[("10-base.toml", BASE_RULES)]);
    env.daemon_binary = daemon.1.clone();
    env
}

// ---------------------------------------------------------------------------------
// Sections

/// Any user, no rule needed, loops `Exec(self, ["/bin/true", <262 000 bytes>])`.
fn argv_flood(o: &Options, table: &mut Table) {
    let calls = if o.measuring { 50 } else { 3 };
    let mut growth = Vec::new();
    let mut outcome = Vec::new();
    for daemon in o.daemons() {
        let mut env = env_for("scale-argv", &daemon, "");
        env.mount_state_tmpfs(2 << 30);
        env.start_daemon();
        let before = disk_bytes(&env.state_dir());
        let r = run_client(
            &env,
            CAROL,
            &["count", &calls.to_string(), "exec", CAROL, "1", "262000"],
        );
        std::thread::sleep(Duration::from_secs(1));
        let after = disk_bytes(&env.state_dir());
        growth.push(format!(
            "+{} ({})",
            mib(after.saturating_sub(before)),
            mib(after)
        ));
        outcome.push(format!("{} ok, {}", r["ok"], errors_text(&r)));
    }
    table.row(
        format!("argv flood: store growth after {calls} calls (total)"),
        growth,
    );
    table.row("argv flood: outcome of the calls", outcome);
}

/// Jobs that do start, state on 64 MiB, while another user calls SetProxy every 50 ms.
fn soak(o: &Options, table: &mut Table) {
    let secs = o.soak_secs.to_string();
    let (mut growth, mut other, mut flood, mut state) = (vec![], vec![], vec![], vec![]);
    for daemon in o.daemons() {
        // 64 MiB holds neither the default free-space floor nor reserve: sized for it;
        // and the 200 000 bytes of arguments are allowed, so that the jobs do start.
        let mut env = env_for(
            "scale-soak",
            &daemon,
            "[exec]\nmax_argv_bytes = 262144\n[store]\nmin_free_bytes = 8388608\nreserve_bytes = 4194304\n",
        );
        env.mount_state_tmpfs(64 << 20);
        env.start_daemon();
        let before = disk_bytes(&env.state_dir());
        let flooders: Vec<_> = (0..o.soak_clients)
            .map(|_| {
                client(
                    &env,
                    CAROL,
                    &["drive", "1", &secs, "exec", CAROL, "2", "100000"].map(String::from),
                )
            })
            .collect();
        let ticker = client(
            &env,
            ALICE,
            &["tick", "50", &secs, "toggle", ALICE, ETL].map(String::from),
        );
        let mut max_growth = 0;
        let until = Instant::now() + Duration::from_secs(o.soak_secs);
        while Instant::now() < until {
            max_growth = max_growth.max(disk_bytes(&env.state_dir()).saturating_sub(before));
            std::thread::sleep(Duration::from_millis(250));
        }
        let t = client_result(ticker);
        let mut ok = 0;
        let mut errors = BTreeMap::new();
        for f in flooders {
            let r = client_result(f);
            ok += r["ok"].as_u64().unwrap_or(0);
            for (k, v) in r["errors"].as_object().cloned().unwrap_or_default() {
                *errors.entry(k).or_insert(0) += v.as_u64().unwrap_or(0);
            }
        }
        let after = disk_bytes(&env.state_dir()).saturating_sub(before);
        growth.push(format!(
            "+{} (peak +{})",
            mib(after),
            mib(max_growth.max(after))
        ));
        other.push(format!(
            "p95 {:.1} ms, max {:.0} ms, {}",
            t["p95_ms"].as_f64().unwrap_or(0.0),
            t["max_ms"].as_f64().unwrap_or(0.0),
            errors_text(&t)
        ));
        flood.push(format!(
            "{ok} started, {}",
            errors_text(&json!({ "errors": errors }))
        ));
        state.push(if alive(&env) {
            "serving".into()
        } else {
            "DEAD".into()
        });
    }
    let label = format!("soak {}×{}s", o.soak_clients, o.soak_secs);
    table.row(format!("{label}: store growth on 64 MiB"), growth);
    table.row(format!("{label}: other user's SetProxy/50ms"), other);
    table.row(format!("{label}: the flood's calls"), flood);
    table.row(format!("{label}: daemon afterwards"), state);
}

fn rule_file(n: usize, variant: usize) -> String {
    let mut text = String::with_capacity(n * 56);
    for i in 0..n {
        // The last rule differs between variants: every reload really has new text.
        let name = if i + 1 == n { n + variant } else { i };
        text.push_str(&format!(
            "[[allow]]\nlogins = [\"web-{name}\"]\nproxies = [\"{ETL}\"]\n\n"
        ));
    }
    text
}

/// RSS and `Admin.Reload` with N rules; Resolve latency while reloading.
fn rules(o: &Options, table: &mut Table) {
    let variants = [rule_file(o.rules, 0), rule_file(o.rules, 1)];
    let mut rows: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for daemon in o.daemons() {
        let mut env = env_for("scale-rules", &daemon, "");
        env.start_daemon();
        env.ctl_ok(ALICE, &["proxy", "set", ETL]);
        let base = rss_bytes(env.daemon_pid());
        let reload = |env: &Env| -> (f64, Result<(), String>) {
            let start = Instant::now();
            let r = env.call(ROOT, "Admin.Reload", "", &[]).map(drop);
            (start.elapsed().as_secs_f64() * 1000.0, r)
        };
        env.write_rules("20-big.toml", &variants[0]);
        let (first, r) = reload(&env);
        r.expect("reload with the big rule file");
        let loaded = rss_bytes(env.daemon_pid());
        // Resolve latency without reloads, then while reloading.
        let quiet = run_client(&env, ALICE, &["drive", "1", "2", "resolve", ALICE]);
        let mut times = Vec::new();
        let mut failed = 0;
        let mut rss = Vec::new();
        let (resolver, stop) = spawn_resolver(&env);
        for k in 0..o.reloads {
            env.write_rules("20-big.toml", &variants[(k + 1) % 2]);
            let (ms, r) = reload(&env);
            times.push(ms);
            if r.is_err() {
                failed += 1;
            }
            rss.push(rss_bytes(env.daemon_pid()));
        }
        stop.store(true, Ordering::Relaxed);
        let during = resolver.join().unwrap();
        // Unchanged files: a reload needs not parse them again.
        let mut unchanged = Vec::new();
        for _ in 0..3 {
            unchanged.push(reload(&env).0);
        }
        times.sort_by(f64::total_cmp);
        unchanged.sort_by(f64::total_cmp);
        let median = |v: &[f64]| v[v.len() / 2];
        let after5 = rss.get(4).copied().unwrap_or(*rss.first().unwrap());
        let last = *rss.last().unwrap();
        let steady = rss[rss.len() / 2..].to_vec();
        let (lo, hi) = (*steady.iter().min().unwrap(), *steady.iter().max().unwrap());
        rows.entry("a RSS after start").or_default().push(mib(base));
        rows.entry("b RSS with the rules loaded")
            .or_default()
            .push(mib(loaded));
        rows.entry("c RSS after reload 5 → last")
            .or_default()
            .push(format!("{} → {}", mib(after5), mib(last)));
        rows.entry("d RSS spread, second half of reloads")
            .or_default()
            .push(format!(
                "{:.1} % ({} .. {})",
                (hi - lo) as f64 * 100.0 / lo as f64,
                mib(lo),
                mib(hi)
            ));
        rows.entry("e Admin.Reload, files changed")
            .or_default()
            .push(format!(
                "median {:.0} ms, max {:.0} ms (first {first:.0})",
                median(&times),
                times.last().unwrap()
            ));
        rows.entry("f Admin.Reload, files unchanged")
            .or_default()
            .push(format!("median {:.0} ms", median(&unchanged)));
        rows.entry("g failed reloads")
            .or_default()
            .push(failed.to_string());
        rows.entry("h Resolve p99 quiet → while reloading")
            .or_default()
            .push(format!(
                "{:.2} → {:.2} ms, {}",
                quiet["p99_ms"].as_f64().unwrap_or(0.0),
                during["p99_ms"].as_f64().unwrap_or(0.0),
                errors_text(&during)
            ));
    }
    for (what, values) in rows {
        table.row(format!("{} rules: {}", o.rules, &what[2..]), values);
    }
}

/// A Resolve client that runs until `stop` (its own thread, in-process: root's
/// Resolve of alice).
fn spawn_resolver(env: &Env) -> (std::thread::JoinHandle<Value>, Arc<AtomicBool>) {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let address = env.address.clone();
    let handle = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let connection = zbus::connection::Builder::address(address.as_str())
                .build()
                .await
                .unwrap();
            let call = Call::Resolve(ALICE.into());
            let mut latencies = Vec::new();
            let mut errors: BTreeMap<String, u64> = BTreeMap::new();
            while !flag.load(Ordering::Relaxed) {
                let sent = Instant::now();
                if let Err(e) = call.send(&connection, 0).await {
                    *errors.entry(e).or_default() += 1;
                }
                latencies.push(sent.elapsed());
            }
            latencies.sort();
            let p99 = latencies
                .get((latencies.len() * 99 / 100).min(latencies.len().saturating_sub(1)))
                .map_or(0.0, |d| d.as_secs_f64() * 1000.0);
            json!({ "p99_ms": p99, "errors": errors, "calls": latencies.len() })
        })
    });
    (handle, stop)
}

/// The 60 s soak: 64 clients on their own connections, three in four as a gateway
/// (choosing bob's proxy, running carol's jobs), one in four as alice herself, each
/// running the mix of `mix`.
fn mix_soak(o: &Options, table: &mut Table) {
    let secs = o.mix_secs.to_string();
    let gateway_connections = o.mix_clients * 3 / 4;
    let login_connections = o.mix_clients - gateway_connections;
    let mut rows: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for daemon in o.daemons() {
        let mut env = env_for("scale-mix", &daemon, "");
        env.start_daemon();
        env.ctl_ok(ALICE, &["proxy", "set", ETL]);
        let pid = env.daemon_pid();
        let base = rss_bytes(pid);
        // Processes of at most 12 connections each.
        let mut clients = Vec::new();
        for (user, login, jobs_login, total) in [
            (GATEWAY, BOB, CAROL, gateway_connections),
            (ALICE, ALICE, ALICE, login_connections),
        ] {
            let mut left = total;
            while left > 0 {
                let n = left.min(12);
                left -= n;
                let n = n.to_string();
                let args = ["mix", &n, &secs, login, ETL, jobs_login].map(String::from);
                clients.push(client(&env, user, &args));
            }
        }
        let started = Instant::now();
        let warm = Duration::from_secs((o.mix_secs / 6).max(1));
        let mut rss = Vec::new();
        while started.elapsed() < Duration::from_secs(o.mix_secs) {
            std::thread::sleep(Duration::from_millis(500));
            if started.elapsed() >= warm {
                rss.push(rss_bytes(pid));
            }
        }
        let results: Vec<Value> = clients.into_iter().map(client_result).collect();
        let after = rss_bytes(pid);
        let rate: f64 = results
            .iter()
            .map(|r| r["rate"].as_f64().unwrap_or(0.0))
            .sum();
        // Merged per kind: counts and errors add up; percentiles are the worst client's.
        let mut kinds: BTreeMap<String, (u64, BTreeMap<String, u64>, f64, f64)> = BTreeMap::new();
        for r in &results {
            for (kind, v) in r["kinds"].as_object().cloned().unwrap_or_default() {
                let entry = kinds.entry(kind).or_default();
                entry.0 += v["calls"].as_u64().unwrap_or(0);
                for (k, n) in v["errors"].as_object().cloned().unwrap_or_default() {
                    *entry.1.entry(k).or_default() += n.as_u64().unwrap_or(0);
                }
                entry.2 = entry.2.max(v["p50_ms"].as_f64().unwrap_or(0.0));
                entry.3 = entry.3.max(v["p99_ms"].as_f64().unwrap_or(0.0));
            }
        }
        let errors: u64 = kinds.values().map(|k| k.1.values().sum::<u64>()).sum();
        rows.entry("a all calls".into()).or_default().push(format!(
            "{rate:.0}/s, {errors} errors{}",
            if alive(&env) { "" } else { ", daemon DEAD" }
        ));
        let names = [
            ("read", "b Resolve"),
            ("check", "c CheckProxy"),
            ("session", "d OpenSession+ResolveCookies"),
            ("write", "e SetProxy/ClearProxy"),
            ("list", "f ListJobs"),
            ("exec", "g Exec+Wait"),
        ];
        for (kind, label) in names {
            let (calls, errors, p50, p99) = kinds.remove(kind).unwrap_or_default();
            rows.entry(format!("{label} p50/p99 (worst client)"))
                .or_default()
                .push(format!(
                    "{p50:.1}/{p99:.1} ms, {calls} calls, {}",
                    errors_text(&json!({ "errors": errors }))
                ));
        }
        let high = rss.iter().copied().max().unwrap_or(after);
        rows.entry("h RSS start → after warm-up → end (max)".into())
            .or_default()
            .push(format!(
                "{} → {} → {} ({})",
                mib(base),
                mib(rss.first().copied().unwrap_or(after)),
                mib(after),
                mib(high)
            ));
    }
    let label = format!("mix {}×{}s", o.mix_clients, o.mix_secs);
    for (what, values) in rows {
        table.row(format!("{label}: {}", &what[2..]), values);
    }
}

/// `ListJobs` of a user with a long history of jobs.
fn list_jobs_history(o: &Options, table: &mut Table) {
    let jobs = if o.measuring { 2_500 } else { 20 };
    let mut row = Vec::new();
    for daemon in o.daemons() {
        let mut env = env_for("scale-listjobs", &daemon, "");
        env.start_daemon();
        let made = run_client(
            &env,
            CAROL,
            &["count", &jobs.to_string(), "exec", CAROL, "0", "0"],
        );
        let listed = run_client(&env, CAROL, &["count", "200", "list", CAROL]);
        row.push(format!(
            "p50 {:.2} ms, p99 {:.2} ms ({} jobs made, {})",
            listed["p50_ms"].as_f64().unwrap_or(0.0),
            listed["p99_ms"].as_f64().unwrap_or(0.0),
            made["ok"],
            errors_text(&listed)
        ));
    }
    table.row(format!("ListJobs with {jobs} jobs in the history"), row);
}

/// `SetProxy`/`ClearProxy` by a trusted gateway, 1/8/32 in flight.
fn writes(o: &Options, table: &mut Table) {
    let secs = o.secs.to_string();
    let mut rows: Vec<Vec<String>> = vec![Vec::new(); 3];
    for daemon in o.daemons() {
        let mut env = env_for("scale-writes", &daemon, "");
        env.start_daemon();
        for (row, in_flight) in [1, 8, 32].iter().enumerate() {
            let r = run_client(
                &env,
                GATEWAY,
                &["drive", &in_flight.to_string(), &secs, "toggle", ALICE, ETL],
            );
            rows[row].push(format!(
                "{:.0}/s, p99 {:.1} ms, {}",
                r["rate"].as_f64().unwrap_or(0.0),
                r["p99_ms"].as_f64().unwrap_or(0.0),
                errors_text(&r)
            ));
        }
    }
    for (row, in_flight) in [1, 8, 32].iter().enumerate() {
        table.row(
            format!("SetProxy/ClearProxy by a gateway, {in_flight} in flight"),
            rows[row].clone(),
        );
    }
}

/// `ResolveTicket` vs `Resolve`, and `CheckProxy` vs `Peer.Ping`, one daemon each.
fn reads(o: &Options, table: &mut Table) {
    let secs = o.secs.to_string();
    let mut rows: Vec<Vec<String>> = vec![Vec::new(); 3];
    for daemon in o.daemons() {
        let mut env = env_for("scale-reads", &daemon, "");
        env.start_daemon();
        env.ctl_ok(ALICE, &["proxy", "set", ETL]);
        let ticket = env
            .call(GATEWAY, "Sessions.OpenSession", "s", &[ALICE])
            .expect("OpenSession")[0]
            .as_str()
            .unwrap()
            .to_string();
        let rate = |args: &[&str]| -> f64 {
            // Median of three rounds, the two calls interleaved.
            run_client(&env, GATEWAY, args)["rate"]
                .as_f64()
                .unwrap_or(0.0)
        };
        for (row, in_flight) in [1, 8].iter().enumerate() {
            let n = in_flight.to_string();
            let (mut t, mut r) = (Vec::new(), Vec::new());
            for _ in 0..3 {
                t.push(rate(&["drive", &n, &secs, "ticket", &ticket]));
                r.push(rate(&["drive", &n, &secs, "resolve", ALICE]));
            }
            t.sort_by(f64::total_cmp);
            r.sort_by(f64::total_cmp);
            rows[row].push(format!(
                "{:.0} vs {:.0}/s = {:.2} ×",
                t[1],
                r[1],
                t[1] / r[1]
            ));
        }
        let (mut c, mut p) = (Vec::new(), Vec::new());
        for _ in 0..3 {
            c.push(rate(&["drive", "8", &secs, "check", ALICE, ETL]));
            p.push(rate(&["drive", "8", &secs, "ping"]));
        }
        c.sort_by(f64::total_cmp);
        p.sort_by(f64::total_cmp);
        rows[2].push(format!(
            "{:.0} vs {:.0}/s = {:.2} ×",
            c[1],
            p[1],
            c[1] / p[1]
        ));
    }
    table.row("ResolveTicket vs Resolve, 1 in flight", rows[0].clone());
    table.row("ResolveTicket vs Resolve, 8 in flight", rows[1].clone());
    table.row("CheckProxy vs Peer.Ping, 8 in flight", rows[2].clone());
}

/// `Exec(["/bin/true"])` as alice proxying to etl, one at a time.
fn exec(o: &Options, table: &mut Table) {
    let calls = if o.measuring { "300" } else { "5" };
    let mut row = Vec::new();
    for daemon in o.daemons() {
        let mut env = env_for("scale-exec", &daemon, "");
        env.start_daemon();
        env.ctl_ok(ALICE, &["proxy", "set", ETL]);
        let r = run_client(&env, ALICE, &["count", calls, "exec", ALICE, "0", "0"]);
        row.push(format!(
            "p50 {:.2} ms, p99 {:.2} ms, {}",
            r["p50_ms"].as_f64().unwrap_or(0.0),
            r["p99_ms"].as_f64().unwrap_or(0.0),
            errors_text(&r)
        ));
    }
    table.row("Exec([/bin/true]) reply, sequential", row);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(at) = args.iter().position(|a| a == "--client") {
        client_main(&args[at + 1..]);
        return;
    }
    let o = Options::parse(&args);
    let mut table = Table {
        daemons: o.daemons().iter().map(|d| d.0).collect(),
        rows: Vec::new(),
    };
    type Section = fn(&Options, &mut Table);
    let sections: [(&str, Section); 8] = [
        ("argv", argv_flood),
        ("soak", soak),
        ("mix", mix_soak),
        ("listjobs", list_jobs_history),
        ("rules", rules),
        ("writes", writes),
        ("reads", reads),
        ("exec", exec),
    ];
    for (name, section) in sections {
        if o.wants(name) {
            eprintln!("scale: {name} ...");
            section(&o, &mut table);
        }
    }
    println!(
        "scale: {} rules, {} reloads, soak {}×{} s, mix {} clients × {} s, {} s per throughput round",
        o.rules, o.reloads, o.soak_clients, o.soak_secs, o.mix_clients, o.mix_secs, o.secs
    );
    table.print();
}
