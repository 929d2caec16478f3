//! Test harness: each test gets its own dbus-daemon (configured like the system bus,
//! default deny, with our policy file included), its own proxyuserd with its own state
//! directory, and runs clients as the real test users made by `tests/setup`.
//!
//! Prerequisites are checked loudly: root, the pxt-* users, a running journald.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const ALICE: &str = "pxt-alice";
pub const BOB: &str = "pxt-bob";
pub const CAROL: &str = "pxt-carol";
pub const MALLORY: &str = "pxt-mallory";
pub const ETL: &str = "pxt-etl";
pub const REPORT: &str = "pxt-report";
pub const GATEWAY: &str = "pxt-gw";
pub const ADMIN: &str = "pxt-admin";
pub const ROOT: &str = "root";

/// The rules most tests start from: alice and bob may proxy to etl; the pxt-svc group
/// (pxt-report's primary group) is proxy-type and offered to the data team.
pub const BASE_RULES: &str = r#"
[proxy_users]
groups = ["pxt-svc"]

[[allow]]
logins = ["pxt-alice", "pxt-bob"]
proxies = ["pxt-etl"]

[[allow]]
login_groups = ["pxt-data"]
proxy_groups = ["pxt-svc"]

[[deny]]
logins = ["pxt-mallory"]
proxies = ["*"]
"#;

/// How long to wait for something that is expected to happen (not a speed assertion).
pub const PATIENCE: Duration = Duration::from_secs(30);

pub fn bin(name: &str) -> PathBuf {
    match name {
        "proxyuserd" => PathBuf::from(env!("CARGO_BIN_EXE_proxyuserd")),
        "proxyuserctl" => PathBuf::from(env!("CARGO_BIN_EXE_proxyuserctl")),
        other => panic!("unknown binary {other}"),
    }
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// uid and gid of a test user.
pub fn ids(user: &str) -> (u32, u32) {
    let entry = nix::unistd::User::from_name(user)
        .expect("NSS lookup")
        .unwrap_or_else(|| panic!("test user {user} is missing: run `sudo tests/setup` first"));
    (entry.uid.as_raw(), entry.gid.as_raw())
}

fn check_prerequisites() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the integration tests must run as root (they switch users): use `sudo tests/run`"
    );
    for user in [ALICE, BOB, CAROL, MALLORY, ETL, REPORT, GATEWAY, ADMIN] {
        ids(user);
    }
    // A socket file alone proves nothing: /run can keep it after journald is gone.
    let probe = std::os::unix::net::UnixDatagram::unbound().expect("a datagram socket");
    if let Err(e) = probe.connect(JOURNAL_SOCKET) {
        panic!(
            "systemd-journald is not listening on {JOURNAL_SOCKET} ({e}): run `sudo tests/setup`"
        );
    }
}

const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// What a command printed and how it ended.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn from(output: Output) -> Self {
        Out {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    pub fn ok(&self) -> bool {
        self.code == 0
    }

    /// The D-Bus error name `proxyuserctl` printed, e.g. `org.proxyuserd1.Error.NotAllowed`.
    pub fn error_name(&self) -> Option<&str> {
        let line = self
            .stderr
            .lines()
            .find(|l| l.starts_with("proxyuserctl: "))?;
        let start = line.rfind('[')? + 1;
        line[start..].strip_suffix(']')
    }
}

pub struct Env {
    pub dir: PathBuf,
    pub address: String,
    bus: Child,
    daemon: Option<Child>,
    /// Every pid the daemon had (it changes on restart), for journal queries.
    pub pids: Vec<u32>,
    config_path: PathBuf,
    /// The daemon program `start_daemon` runs (a baseline build in benchmarks).
    pub daemon_binary: PathBuf,
    /// A file system mounted for this test (unmounted when it ends).
    mounted: Option<PathBuf>,
    /// A descriptor number the daemon inherits open on /dev/null (as from a careless
    /// parent), if any.
    pub inherited_fd: Option<i32>,
}

impl Env {
    /// A bus and a daemon with the base rules and `extra_config` appended to the config.
    pub fn start(name: &str) -> Env {
        Self::with(name, "", &[("10-base.toml", BASE_RULES)])
    }

    pub fn with(name: &str, extra_config: &str, rules: &[(&str, &str)]) -> Env {
        let mut env = Self::prepare(name, extra_config, rules);
        env.start_daemon();
        env
    }

    /// Like `with`, but the daemon is not started yet: mount a small state file system,
    /// pick another daemon binary, then `start_daemon`.
    pub fn prepare(name: &str, extra_config: &str, rules: &[(&str, &str)]) -> Env {
        check_prerequisites();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = PathBuf::from(format!("/tmp/pxt-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("rules.d")).unwrap();
        // Test users must reach the bus socket in here.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let socket = dir.join("bus");
        let bus_conf = std::fs::read_to_string(repo().join("tests/bus.conf.in"))
            .unwrap()
            .replace("@SOCKET@", socket.to_str().unwrap())
            .replace(
                "@POLICY@",
                repo().join("dbus/org.proxyuserd1.conf").to_str().unwrap(),
            );
        std::fs::write(dir.join("bus.conf"), bus_conf).unwrap();
        let mut bus = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", dir.join("bus.conf").display()))
            .args(["--nofork", "--print-address"])
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.join("bus.log")).unwrap())
            .spawn()
            .expect("dbus-daemon (run `sudo tests/setup`)");
        let mut line = String::new();
        BufReader::new(bus.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(
            line.starts_with("unix:"),
            "dbus-daemon did not start: {line:?}"
        );
        let address = format!("unix:path={}", socket.display());
        for (file, text) in rules {
            std::fs::write(dir.join("rules.d").join(file), text).unwrap();
        }
        let config_path = dir.join("proxyuserd.toml");
        let config = format!(
            "state_dir = \"{d}/state\"\nrules_dir = \"{d}/rules.d\"\ntrusted_callers = [\"{GATEWAY}\"]\nadmin_group = \"pxt-admins\"\n{extra_config}\n",
            d = dir.display()
        );
        std::fs::write(&config_path, config).unwrap();
        Env {
            dir,
            address,
            bus,
            daemon: None,
            pids: Vec::new(),
            config_path,
            daemon_binary: bin("proxyuserd"),
            mounted: None,
            inherited_fd: None,
        }
    }

    /// Puts the state directory on its own tmpfs of `bytes` (before the daemon starts),
    /// so a test can fill it.
    pub fn mount_state_tmpfs(&mut self, bytes: u64) {
        let state = self.state_dir();
        std::fs::create_dir_all(&state).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={bytes},mode=0700"))
            .arg("tmpfs")
            .arg(&state)
            .status()
            .expect("mount");
        assert!(status.success(), "mount tmpfs on {}", state.display());
        self.mounted = Some(state);
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    pub fn rules_dir(&self) -> PathBuf {
        self.dir.join("rules.d")
    }

    pub fn daemon_pid(&self) -> u32 {
        *self.pids.last().unwrap()
    }

    /// Starts proxyuserd and waits until it owns its name.
    pub fn start_daemon(&mut self) {
        assert!(self.daemon.is_none(), "daemon already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("daemon.log"))
            .unwrap();
        let mut command = Command::new(&self.daemon_binary);
        command
            .arg("--config")
            .arg(&self.config_path)
            .env("DBUS_SYSTEM_BUS_ADDRESS", &self.address)
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if let Some(fd) = self.inherited_fd {
            let null = std::fs::File::open("/dev/null").unwrap();
            let in_child = move || {
                // SAFETY: dup2 is async-signal-safe; `null` stays open in the parent
                // until the spawn returns. The copy at `fd` has no close-on-exec flag.
                if unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), fd) } < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            };
            // SAFETY: `in_child` only calls dup2, which is async-signal-safe.
            unsafe { command.pre_exec(in_child) };
        }
        let child = command.spawn().expect("spawn proxyuserd");
        self.pids.push(child.id());
        self.daemon = Some(child);
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.daemon.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "proxyuserd exited at start ({status}):\n{}",
                    self.daemon_log()
                );
            }
            let ping = Command::new("busctl")
                .arg(format!("--address={}", self.address))
                .args([
                    "call",
                    "org.proxyuserd1",
                    "/org/proxyuserd1",
                    "org.freedesktop.DBus.Peer",
                    "Ping",
                ])
                .output()
                .unwrap();
            if ping.status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "proxyuserd never took its name:\n{}",
                self.daemon_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    /// SIGTERM and wait; returns the exit code.
    pub fn stop_daemon(&mut self) -> i32 {
        let mut child = self.daemon.take().expect("daemon running");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        child.wait().unwrap().code().unwrap_or(-1)
    }

    /// Waits for the daemon to exit by itself; its exit code.
    pub fn wait_daemon_exit(&mut self) -> i32 {
        let mut child = self.daemon.take().expect("daemon running");
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not exit:\n{}",
                self.daemon_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill_daemon(&mut self) {
        let mut child = self.daemon.take().expect("daemon running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    pub fn restart(&mut self) {
        assert_eq!(
            self.stop_daemon(),
            0,
            "daemon did not exit cleanly:\n{}",
            self.daemon_log()
        );
        self.start_daemon();
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.daemon_pid() as i32), signal)
            .unwrap();
    }

    pub fn write_rules(&self, file: &str, text: &str) {
        // Written under another name and renamed, as configuration management does.
        let tmp = self.rules_dir().join(format!(".{file}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(tmp, self.rules_dir().join(file)).unwrap();
    }

    /// Takes alice out of the base rules (she may no longer proxy to etl) and reloads.
    pub fn reload_without_alice(&self) {
        self.write_rules(
            "10-base.toml",
            &BASE_RULES.replace(
                "logins = [\"pxt-alice\", \"pxt-bob\"]",
                "logins = [\"pxt-bob\"]",
            ),
        );
        self.ctl_ok(ROOT, &["rules", "reload"]);
    }

    pub fn remove_rules(&self, file: &str) {
        std::fs::remove_file(self.rules_dir().join(file)).unwrap();
    }

    /// A command run as `user` (uid, gid, no supplementary groups) on this bus.
    pub fn command_as(&self, user: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let (uid, gid) = ids(user);
        let mut command = Command::new(program);
        command
            .uid(uid)
            .gid(gid)
            .env_clear()
            .env("PATH", "/usr/bin:/bin:/usr/sbin:/sbin")
            .env("DBUS_SYSTEM_BUS_ADDRESS", &self.address)
            .current_dir("/");
        command
    }

    /// `proxyuserctl ARGS` as `user`.
    pub fn ctl(&self, user: &str, args: &[&str]) -> Out {
        Out::from(
            self.command_as(user, bin("proxyuserctl"))
                .args(args)
                .output()
                .unwrap(),
        )
    }

    /// `proxyuserctl ARGS` as `user`, which must succeed; its stdout.
    pub fn ctl_ok(&self, user: &str, args: &[&str]) -> String {
        let out = self.ctl(user, args);
        assert!(
            out.ok(),
            "proxyuserctl {args:?} as {user} failed ({}): {}",
            out.code,
            out.stderr
        );
        out.stdout
    }

    /// `proxyuserctl ARGS` as `user`, which must fail with D-Bus error `name`; its stderr.
    pub fn ctl_err(&self, user: &str, args: &[&str], name: &str) -> String {
        let out = self.ctl(user, args);
        assert!(
            !out.ok(),
            "proxyuserctl {args:?} as {user} succeeded: {}",
            out.stdout
        );
        assert_eq!(
            out.error_name(),
            Some(name),
            "proxyuserctl {args:?} as {user}: {}",
            out.stderr
        );
        out.stderr
    }

    /// `proxyuserctl ARGS` as `user` with extra environment variables.
    pub fn ctl_env(&self, user: &str, args: &[&str], vars: &[(&str, &str)]) -> Out {
        let mut command = self.command_as(user, bin("proxyuserctl"));
        command.args(args).envs(vars.iter().copied());
        Out::from(command.output().unwrap())
    }

    /// `proxyuserctl ARGS` as `user` with `input` on stdin.
    pub fn ctl_input(&self, user: &str, args: &[&str], input: &str) -> Out {
        use std::io::Write;
        let mut child = self
            .command_as(user, bin("proxyuserctl"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        Out::from(child.wait_with_output().unwrap())
    }

    /// Adds a live rule as root; its id.
    pub fn add_rule(&self, rule: &str) -> String {
        let out = self.ctl_input(ROOT, &["rules", "add", "-"], rule);
        assert!(out.ok(), "rules add failed: {}", out.stderr);
        out.stdout.trim().to_string()
    }

    /// `proxyuserctl --json ARGS` as `user`, parsed.
    pub fn ctl_json(&self, user: &str, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.ctl_ok(user, &all);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    }

    /// `proxyuserctl rules list` as root: one object per rule (id, source, rule).
    pub fn rules(&self) -> Vec<serde_json::Value> {
        match self.ctl_json(ROOT, &["rules", "list"]) {
            serde_json::Value::Array(rules) => rules,
            other => panic!("rules list is not an array: {other}"),
        }
    }

    /// `busctl --address=… ARGS` as `user`.
    pub fn busctl(&self, user: &str, args: &[&str]) -> Out {
        let mut command = self.command_as(user, "busctl");
        command.arg(format!("--address={}", self.address));
        Out::from(command.args(args).output().unwrap())
    }

    /// A method call on our object as `user` through busctl: the reply's values as JSON,
    /// or the error message busctl printed.
    pub fn call(
        &self,
        user: &str,
        interface_method: &str,
        signature: &str,
        args: &[&str],
    ) -> Result<Vec<serde_json::Value>, String> {
        let (interface, method) = interface_method.rsplit_once('.').unwrap();
        let interface = format!("org.proxyuserd1.{interface}");
        let mut all = vec![
            "--json=short",
            "call",
            // Arguments may start with '-' (tickets do, now and then).
            "--",
            "org.proxyuserd1",
            "/org/proxyuserd1",
            &interface,
            method,
        ];
        if !signature.is_empty() {
            all.push(signature);
            all.extend_from_slice(args);
        }
        let out = self.busctl(user, &all);
        if !out.ok() {
            return Err(out.stderr);
        }
        let reply: serde_json::Value =
            serde_json::from_str(&out.stdout).unwrap_or(serde_json::Value::Null);
        Ok(reply["data"].as_array().cloned().unwrap_or_default())
    }

    /// `dbus-send --print-reply` of METHOD on our object as `user`; stderr names errors.
    pub fn dbus_send(&self, user: &str, method: &str, args: &[&str]) -> Out {
        let mut command = self.command_as(user, "dbus-send");
        command
            .arg(format!("--bus={}", self.address))
            .args([
                "--print-reply",
                "--dest=org.proxyuserd1",
                "/org/proxyuserd1",
                method,
            ])
            .args(args);
        Out::from(command.output().unwrap())
    }

    /// (effective, proxy) of `login`, asked as root.
    pub fn resolve(&self, login: &str) -> (String, String) {
        let v = self.ctl_json(ROOT, &["resolve", login]);
        (
            v["effective"].as_str().unwrap().into(),
            v["proxy"].as_str().unwrap().into(),
        )
    }

    /// Every audit record, via the API as root.
    pub fn audit(&self) -> Vec<BTreeMap<String, String>> {
        serde_json::from_value(self.ctl_json(ROOT, &["audit"])).unwrap()
    }

    /// Audit records of one event kind.
    pub fn audit_events(&self, event: &str) -> Vec<BTreeMap<String, String>> {
        self.audit()
            .into_iter()
            .filter(|r| r["event"] == event)
            .collect()
    }

    /// journald entries of this env's daemons with `SYSLOG_IDENTIFIER=proxyuserd-audit`
    /// that match `fields`, waiting until at least `want` are there.
    pub fn journal_audit(&self, fields: &[(&str, &str)], want: usize) -> Vec<serde_json::Value> {
        self.journal("proxyuserd-audit", fields, want)
    }

    /// The `MESSAGE`s of the daemons' operational log (journald, `proxyuserd`), waiting
    /// until one contains `until`.
    pub fn log_messages(&self, until: &str) -> Vec<String> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let messages: Vec<String> = self
                .journal("proxyuserd", &[], 0)
                .iter()
                .filter_map(|e| e["MESSAGE"].as_str().map(str::to_string))
                .collect();
            if messages.iter().any(|m| m.contains(until)) || Instant::now() > deadline {
                return messages;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// journald entries of this env's daemons with `SYSLOG_IDENTIFIER=identifier` that
    /// match `fields`, waiting until at least `want` are there.
    fn journal(
        &self,
        identifier: &str,
        fields: &[(&str, &str)],
        want: usize,
    ) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let mut found = Vec::new();
            for pid in &self.pids {
                let mut command = Command::new("journalctl");
                command.args(["-o", "json", "--no-pager"]);
                command.arg(format!("SYSLOG_IDENTIFIER={identifier}"));
                command.arg(format!("_PID={pid}"));
                for (k, v) in fields {
                    command.arg(format!("{k}={v}"));
                }
                let out = command.output().expect("journalctl");
                for line in String::from_utf8_lossy(&out.stdout).lines() {
                    found.push(serde_json::from_str::<serde_json::Value>(line).unwrap());
                }
            }
            if found.len() >= want || Instant::now() > deadline {
                return found;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts listening to the daemon's signals (as root, on this bus).
    pub fn signals(&self) -> Signals {
        Signals::listen(&self.address)
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = self.bus.kill();
        let _ = self.bus.wait();
        if let Some(mounted) = self.mounted.take() {
            let _ = Command::new("umount").arg("-l").arg(mounted).status();
        }
        if std::thread::panicking() {
            eprintln!(
                "test state kept in {} ; daemon log:\n{}",
                self.dir.display(),
                self.daemon_log()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A signal the daemon emitted: member name and its arguments as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signal {
    pub member: String,
    pub args: Vec<String>,
}

/// Signals received from org.proxyuserd1, collected by a background thread.
pub struct Signals {
    received: mpsc::Receiver<Signal>,
    seen: Vec<Signal>,
}

impl Signals {
    fn listen(address: &str) -> Signals {
        let (tx, rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let address = address.to_string();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let connection = zbus::connection::Builder::address(address.as_str())
                    .build()
                    .await
                    .unwrap();
                let rule = zbus::MatchRule::builder()
                    .msg_type(zbus::message::Type::Signal)
                    .path("/org/proxyuserd1")
                    .build()
                    .unwrap();
                let mut stream = zbus::MessageStream::for_match_rule(rule, &connection, None)
                    .await
                    .unwrap();
                // Signals about logins go to the peers that may see them: a call makes
                // this connection known to the daemon (as root, it may see them all).
                connection
                    .call_method(
                        Some("org.proxyuserd1"),
                        "/org/proxyuserd1",
                        Some("org.proxyuserd1.Identity"),
                        "Resolve",
                        &("root",),
                    )
                    .await
                    .unwrap();
                ready_tx.send(()).unwrap();
                use futures_core::Stream;
                while let Some(Ok(message)) =
                    std::future::poll_fn(|cx| std::pin::Pin::new(&mut stream).poll_next(cx)).await
                {
                    let header = message.header();
                    let member = header.member().map(|m| m.to_string()).unwrap_or_default();
                    let body = message.body();
                    let args = match member.as_str() {
                        "ProxyChanged" => {
                            let (a, b, c): (String, String, String) = body.deserialize().unwrap();
                            vec![a, b, c]
                        }
                        "RulesChanged" => vec![body.deserialize::<u64>().unwrap().to_string()],
                        "JobFinished" => {
                            let (a, b, c, d): (String, String, String, i32) =
                                body.deserialize().unwrap();
                            vec![a, b, c, d.to_string()]
                        }
                        _ => Vec::new(),
                    };
                    if tx.send(Signal { member, args }).is_err() {
                        break;
                    }
                }
            });
        });
        ready_rx
            .recv_timeout(PATIENCE)
            .expect("signal listener did not start");
        Signals {
            received: rx,
            seen: Vec::new(),
        }
    }

    /// Waits for a signal `member` with `args`; panics with what was seen otherwise.
    pub fn expect(&mut self, member: &str, args: &[&str]) {
        let wanted = Signal {
            member: member.into(),
            args: args.iter().map(|s| s.to_string()).collect(),
        };
        if self.seen.contains(&wanted) {
            return;
        }
        let deadline = Instant::now() + PATIENCE;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.received.recv_timeout(left) {
                Ok(signal) => {
                    let hit = signal == wanted;
                    self.seen.push(signal);
                    if hit {
                        return;
                    }
                }
                Err(_) => break,
            }
        }
        panic!("no signal {wanted:?}; seen {:?}", self.seen);
    }

    /// Everything received so far (waiting `settle` for stragglers).
    pub fn drain(&mut self, settle: Duration) -> Vec<Signal> {
        while let Ok(signal) = self.received.recv_timeout(settle) {
            self.seen.push(signal);
        }
        self.seen.clone()
    }
}

/// Whether process `pid` exists (zombies count as gone).
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

/// Polls `condition` until it holds.
pub fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !condition() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
