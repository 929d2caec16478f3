//! The attacks of issue 9 (a red-team review of the daemon as local users, as a gateway
//! and on disk), each reproduced as the issue describes it and shown to fail now. The
//! test names carry the item number (`attack_9_N_…`).
//!
//! Some attacks need accounts the shared test users do not give (an admin who leaves the
//! admin group, two names for one uid): those tests make their own users and groups
//! with unique names and remove them at the end, never changing the pxt-* users.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

use common::*;

const ACCESS_DENIED: &str = "org.freedesktop.DBus.Error.AccessDenied";
const INVALID_ARGS: &str = "org.freedesktop.DBus.Error.InvalidArgs";
const LIMITS_EXCEEDED: &str = "org.freedesktop.DBus.Error.LimitsExceeded";
const NOT_ALLOWED: &str = "org.proxyuserd1.Error.NotAllowed";
const NO_SUCH_JOB: &str = "org.proxyuserd1.Error.NoSuchJob";
const NO_SUCH_USER: &str = "org.proxyuserd1.Error.NoSuchUser";
const INVALID_RULES: &str = "org.proxyuserd1.Error.InvalidRules";

// ---------------------------------------------------------------------------------------
// Helpers

/// Users and groups made for one test, removed when it ends. Their names start with
/// `pxt-k` and this process's id, so parallel runs and leftovers never collide.
struct Accounts {
    users: Vec<String>,
    groups: Vec<String>,
}

/// useradd and its kin lock /etc/passwd: one change at a time in this process, and a
/// retry while another process holds the lock.
static ACCOUNT_CHANGES: Mutex<()> = Mutex::new(());

fn account_tool(program: &str, args: &[&str]) {
    let _one = ACCOUNT_CHANGES.lock().unwrap_or_else(|e| e.into_inner());
    let deadline = Instant::now() + PATIENCE;
    loop {
        let out = Command::new(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{program}: {e} (run `sudo tests/setup`)"));
        if out.status.success() {
            return;
        }
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("lock") && Instant::now() < deadline,
            "{program} {args:?} failed: {err}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Accounts {
    fn new() -> Self {
        Accounts {
            users: Vec::new(),
            groups: Vec::new(),
        }
    }

    /// A name unique to this process: `pxt-k<pid><tag>`.
    fn name(tag: &str) -> String {
        format!("pxt-k{}{tag}", std::process::id())
    }

    /// A new group with `members`.
    fn group(&mut self, tag: &str, members: &[&str]) -> String {
        let name = Self::name(tag);
        account_tool("groupadd", &[&name]);
        self.groups.push(name.clone());
        for member in members {
            account_tool("gpasswd", &["-a", member, &name]);
        }
        name
    }

    /// A new user (no home, no login shell) with `useradd` options `extra`.
    fn user(&mut self, tag: &str, extra: &[&str]) -> String {
        let name = Self::name(tag);
        let mut args = vec!["-M", "-N", "-g", "nogroup", "-s", "/usr/sbin/nologin"];
        args.extend_from_slice(extra);
        args.push(&name);
        account_tool("useradd", &args);
        self.users.push(name.clone());
        name
    }
}

impl Drop for Accounts {
    fn drop(&mut self) {
        for user in self.users.iter().rev() {
            let _ = Command::new("userdel").arg(user).output();
        }
        for group in &self.groups {
            let _ = Command::new("groupdel").arg(group).output();
        }
    }
}

/// Replaces `old` by `new` in the daemon's configuration file (before it starts).
fn edit_config(env: &Env, old: &str, new: &str) {
    let path = env.dir.join("proxyuserd.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(old), "{old:?} not in the config:\n{text}");
    std::fs::write(&path, text.replace(old, new)).unwrap();
}

/// `tests/attack_client.py` run as `user` (a long-lived connection of its own): its
/// output lines, as they come.
struct Client {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Client {
    fn start(env: &Env, user: &str, args: &[&str]) -> Client {
        let mut child = env
            .command_as(user, "/usr/bin/python3")
            .arg(repo().join("tests/attack_client.py"))
            .arg(&env.address)
            .arg(user)
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 (run `sudo tests/setup`)");
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut client = Client {
            child,
            lines: rx,
            seen: Vec::new(),
        };
        client.wait_for("the client's READY", |l| l == "READY");
        client
    }

    /// Waits for a line that satisfies `wanted`; panics with what was seen otherwise.
    fn wait_for(&mut self, what: &str, wanted: impl Fn(&str) -> bool) -> String {
        if let Some(line) = self.seen.iter().find(|l| wanted(l)) {
            return line.clone();
        }
        let deadline = Instant::now() + PATIENCE;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if wanted(&line) {
                        return line;
                    }
                }
                Err(_) => break,
            }
        }
        panic!("never saw {what}; the client printed {:?}", self.seen);
    }

    /// Forgets what was seen so far.
    fn clear(&mut self) {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        self.seen.clear();
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The daemon's operational log entries (journald, `proxyuserd`) of priority `priority`
/// or more urgent, as (PRIORITY, MESSAGE), waiting until one contains `until`.
fn log_entries(env: &Env, priority: u8, until: &str) -> Vec<(String, String)> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let mut found = Vec::new();
        for pid in &env.pids {
            let out = Command::new("journalctl")
                .args(["-o", "json", "--no-pager", "SYSLOG_IDENTIFIER=proxyuserd"])
                .arg(format!("_PID={pid}"))
                .arg(format!("--priority={priority}"))
                .output()
                .expect("journalctl");
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                let entry: serde_json::Value = serde_json::from_str(line).unwrap();
                found.push((
                    entry["PRIORITY"].as_str().unwrap_or_default().to_string(),
                    entry["MESSAGE"].as_str().unwrap_or_default().to_string(),
                ));
            }
        }
        if found.iter().any(|(_, m)| m.contains(until)) || Instant::now() > deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Starts the daemon expecting it to refuse: its exit code and log (a daemon that
/// starts instead is stopped after PATIENCE, and the test fails).
fn start_refused(env: &Env) -> (i32, String) {
    let log = env.dir.join("refused.log");
    let mut child = Command::new(&env.daemon_binary)
        .arg("--config")
        .arg(env.dir.join("proxyuserd.toml"))
        .env("DBUS_SYSTEM_BUS_ADDRESS", &env.address)
        .stderr(std::fs::File::create(&log).unwrap())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the daemon started and served:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (
        status.code().unwrap_or(-1),
        std::fs::read_to_string(log).unwrap_or_default(),
    )
}

/// Every file and directory under `dir` (itself included).
fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut all = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < all.len() {
        if all[i].is_dir() && !all[i].is_symlink() {
            for entry in std::fs::read_dir(&all[i]).unwrap() {
                all.push(entry.unwrap().path());
            }
        }
        i += 1;
    }
    all
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn chown(path: &Path, user: &str) {
    let (uid, gid) = ids(user);
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
}

fn jobs(env: &Env, user: &str) -> Vec<serde_json::Value> {
    env.ctl_json(user, &["jobs"]).as_array().unwrap().clone()
}

// ---------------------------------------------------------------------------------------
// 9.2: the audit log loses its tail on disk.

#[test]
fn attack_9_2_an_audit_log_that_lost_its_tail_is_caught_at_start_and_by_verify() {
    let mut env = Env::start("atk-tail");
    // 15 records: the rules loaded at start, then alice choosing and dropping etl.
    while env.audit().len() < 15 {
        if env.resolve(ALICE).1.is_empty() {
            env.ctl_ok(ALICE, &["proxy", "set", ETL]);
        } else {
            env.ctl_ok(ALICE, &["proxy", "clear"]);
        }
    }
    let before = env.audit();
    assert_eq!(before.len(), 15);
    assert!(env.ctl(ROOT, &["audit", "--verify"]).ok());
    // journald got its copy of every record (sent once the record was durable).
    let copy = env.journal_audit(&[("PROXYUSERD_SEQ", "15")], 1);
    assert_eq!(copy.len(), 1, "record 15 never reached journald");
    assert_eq!(env.stop_daemon(), 0);

    // Flip one byte of record 13 where sled keeps it: sled reads the damaged entry of
    // its log as a torn write and drops it and all that follows (records 13–15).
    let db = env.state_dir().join("db/db");
    let mut bytes = std::fs::read(&db).unwrap();
    let needle = format!("\"hash\":\"{}\"", before[12]["hash"]);
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle.as_bytes())
        .unwrap_or_else(|| panic!("record 13 is not in {} as plain JSON", db.display()));
    bytes[at + 8] ^= 0x01;
    std::fs::write(&db, bytes).unwrap();

    env.start_daemon();
    let after = env.audit();
    // The store now ends at 12: the chain continued from there with an audit-gap record
    // naming what is missing.
    let gaps: Vec<_> = after.iter().filter(|r| r["event"] == "audit-gap").collect();
    assert_eq!(gaps.len(), 1, "{after:?}");
    let gap = gaps[0];
    assert_eq!(gap["seq"], "13", "{gap:?}");
    assert_eq!(gap["store_seq"], "12", "{gap:?}");
    assert_eq!(gap["anchor_seq"], "15", "{gap:?}");
    assert_eq!(gap["anchor_hash"], before[14]["hash"], "{gap:?}");
    assert!(gap["missing"].contains("records 13–15"), "{gap:?}");
    // Loudly: an error in the daemon's log and an error-priority audit record.
    let errors = log_entries(&env, 3, "the audit log lost records");
    assert!(
        errors
            .iter()
            .any(|(p, m)| p == "3" && m.contains("the audit log lost records: records 13–15")),
        "{errors:?}"
    );
    let copies = env.journal_audit(&[("PROXYUSERD_EVENT", "audit-gap")], 1);
    assert_eq!(copies.len(), 1, "{copies:?}");
    assert_eq!(copies[0]["PRIORITY"], "3");

    // verify does not say "intact": it names the recorded loss, and journald's copies
    // of the lost records.
    let verify = env.ctl(ROOT, &["audit", "--verify"]);
    assert_eq!(verify.code, 1, "{}", verify.stdout);
    assert!(!verify.stdout.contains("intact"), "{}", verify.stdout);
    assert!(
        verify
            .stdout
            .contains("record 13 says audit records were lost: records 13–15"),
        "{}",
        verify.stdout
    );
    assert!(
        verify
            .stdout
            .contains("record 13 differs from its journald copy"),
        "{}",
        verify.stdout
    );
    for seq in ["14", "15"] {
        assert!(
            verify
                .stdout
                .contains(&format!("record {seq} is in journald")),
            "{}",
            verify.stdout
        );
    }
    let json: serde_json::Value =
        serde_json::from_str(&env.ctl(ROOT, &["--json", "audit", "--verify"]).stdout).unwrap();
    assert_eq!(json["intact"], false, "{json}");

    // The gap is reported once: a clean restart finds store and anchor agreeing.
    env.restart();
    let gaps = env.audit_events("audit-gap");
    assert_eq!(gaps.len(), 1, "{gaps:?}");
}

// ---------------------------------------------------------------------------------------
// 9.3: the state directory, readable (or writable) by everyone.

#[test]
fn attack_9_3_the_state_directory_is_root_only_and_no_other_user_reads_the_store() {
    let mut env = Env::start("atk-state");
    env.ctl_ok(ALICE, &["proxy", "set", ETL]);
    env.ctl_ok(ALICE, &["exec", "--", "/bin/echo", "secret output"]);
    // A clean stop writes sled's last files too.
    env.restart();
    env.ctl_ok(BOB, &["proxy", "set", ETL]);
    assert_eq!(env.stop_daemon(), 0);

    let state = env.state_dir();
    let meta = std::fs::metadata(&state).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o700, "{}", state.display());
    assert_eq!(meta.uid(), 0);
    let entries = tree(&state);
    assert!(entries.len() > 5, "{entries:?}");
    for path in &entries {
        let meta = std::fs::symlink_metadata(path).unwrap();
        assert_eq!(meta.uid(), 0, "{}", path.display());
        assert_eq!(
            meta.mode() & 0o077,
            0,
            "{} is mode {:o}",
            path.display(),
            meta.mode() & 0o7777
        );
    }
    // The attack: any user reading the store (`strings state/db/db`).
    for path in [state.join("db/db"), state.join("db/conf")] {
        let out = Out::from(
            env.command_as(MALLORY, "/bin/cat")
                .arg(&path)
                .output()
                .unwrap(),
        );
        assert!(!out.ok(), "mallory read {}", path.display());
        assert!(out.stderr.contains("Permission denied"), "{}", out.stderr);
    }
}

#[test]
fn attack_9_3_a_state_directory_readable_by_others_is_made_private_at_start() {
    let mut env = Env::start("atk-staterepair");
    env.ctl_ok(ALICE, &["proxy", "set", ETL]);
    assert_eq!(env.stop_daemon(), 0);
    // As an older version or a manual start with umask 022 left it.
    for path in tree(&env.state_dir()) {
        let dir = path.is_dir();
        chmod(&path, if dir { 0o755 } else { 0o644 });
    }
    env.start_daemon();
    for path in tree(&env.state_dir()) {
        let mode = std::fs::metadata(&path).unwrap().mode() & 0o7777;
        assert_eq!(mode & 0o077, 0, "{} is mode {mode:o}", path.display());
    }
    let warnings = env.log_messages("made it 0700");
    assert!(
        warnings
            .iter()
            .any(|m| m.contains("had mode 755: made it 0700")),
        "{warnings:?}"
    );
    assert_eq!(env.resolve(ALICE).1, ETL);
}

#[test]
fn attack_9_3_the_daemon_refuses_a_state_directory_another_user_can_write() {
    let mut env = Env::start("atk-statewrite");
    env.ctl_ok(ALICE, &["proxy", "set", ETL]);
    assert_eq!(env.stop_daemon(), 0);
    let state = env.state_dir();
    let (mallory_uid, _) = ids(MALLORY);

    // Another user's directory.
    chown(&state, MALLORY);
    let (code, log) = start_refused(&env);
    assert_ne!(code, 0, "{log}");
    assert!(
        log.contains(&format!(
            "state directory {} belongs to uid {mallory_uid}",
            state.display()
        )),
        "{log}"
    );
    chown(&state, ROOT);

    // root's, but writable by everyone: someone may have put their own files in it.
    for (path, mode) in [
        (state.clone(), 0o777),
        (state.clone(), 0o770),
        (state.join("db"), 0o777),
        (state.join("db/db"), 0o666),
    ] {
        let old = std::fs::metadata(&path).unwrap().mode() & 0o7777;
        chmod(&path, mode);
        let (code, log) = start_refused(&env);
        assert_ne!(
            code,
            0,
            "mode {mode:o} of {} accepted: {log}",
            path.display()
        );
        assert!(
            log.contains(&format!("{}", path.display()))
                && log.contains("writable by")
                && log.contains(&format!("{mode:o}")),
            "{log}"
        );
        // Not repaired behind the admin's back either.
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o7777, mode);
        chmod(&path, old);
    }
    // A file of another user in it.
    let planted = state.join("db/planted");
    std::fs::write(&planted, "x").unwrap();
    chown(&planted, MALLORY);
    let (code, log) = start_refused(&env);
    assert_ne!(code, 0, "{log}");
    assert!(log.contains(&planted.display().to_string()), "{log}");
    std::fs::remove_file(&planted).unwrap();

    // Put right, it starts with the state it had.
    env.start_daemon();
    assert_eq!(env.resolve(ALICE).1, ETL);
}

// ---------------------------------------------------------------------------------------
// 9.4: a trusted gateway running jobs as almost any account.

/// An extra rule that would offer alice the admins and the gateway as proxies.
const OFFERS_PRIVILEGED: &str = r#"
[[allow]]
logins = ["pxt-alice"]
proxy_groups = ["pxt-admins", "pxt-gw"]
"#;

#[test]
fn attack_9_4_a_gateway_runs_jobs_only_as_proxies_or_ordinary_logins() {
    let env = Env::with(
        "atk-gwexec",
        "",
        &[
            ("10-base.toml", BASE_RULES),
            ("20-privileged.toml", OFFERS_PRIVILEGED),
        ],
    );
    // The attack: Exec(login=X, ["/usr/bin/id"]) as the gateway, for system accounts,
    // privileged ones, the gateway itself and proxy users without an association.
    let refused = [
        ("www-data", "a system account (uid 33 is below UID_MIN"),
        ("messagebus", "a system account (uid"),
        ("postgres", "a system account (uid"),
        ("polkitd", "a system account (uid"),
        ("root", "root"),
        (ADMIN, "a member of the privileged group pxt-admins"),
        (GATEWAY, "a trusted caller"),
        (ETL, "a proxy user"),
        (REPORT, "a proxy user"),
    ];
    for (login, why) in refused {
        if nix::unistd::User::from_name(login).unwrap().is_none() {
            panic!("account {login} is missing on this machine: the attack needs it");
        }
        let err = env.ctl_err(
            GATEWAY,
            &["exec", "--login", login, "--", "/usr/bin/id"],
            NOT_ALLOWED,
        );
        assert!(
            err.contains(&format!("jobs do not run as {login} itself")) && err.contains(why),
            "{login}: {err}"
        );
    }
    assert!(
        env.audit_events("exec-start").is_empty(),
        "{:?}",
        env.audit_events("exec-start")
    );
    let denied = env.audit_events("denied");
    assert!(
        denied.iter().any(|r| r["login"] == "www-data"),
        "{denied:?}"
    );

    // (a) a login's proxy, allowed by the rules now; (b) an ordinary login itself.
    env.ctl_ok(GATEWAY, &["proxy", "set", "--login", ALICE, ETL]);
    let out = env.ctl_ok(
        GATEWAY,
        &["exec", "--login", ALICE, "--", "/usr/bin/id", "-un"],
    );
    assert_eq!(out.trim(), ETL);
    let out = env.ctl_ok(
        GATEWAY,
        &["exec", "--login", CAROL, "--", "/usr/bin/id", "-un"],
    );
    assert_eq!(out.trim(), CAROL);
    // A proxy the rules no longer allow is not used: alice's job runs as alice.
    env.reload_without_alice();
    let out = env.ctl_ok(
        GATEWAY,
        &["exec", "--login", ALICE, "--", "/usr/bin/id", "-un"],
    );
    assert_eq!(out.trim(), ALICE);
}

#[test]
fn attack_9_4_with_gateway_runs_as_login_off_gateways_run_jobs_only_as_proxies() {
    let env = Env::with(
        "atk-gwswitch",
        "[exec]\ngateway_runs_as_login = false\n",
        &[("10-base.toml", BASE_RULES)],
    );
    let err = env.ctl_err(
        GATEWAY,
        &["exec", "--login", CAROL, "--", "/usr/bin/id", "-un"],
        NOT_ALLOWED,
    );
    assert!(
        err.contains("gateways run jobs only as proxy users")
            && err.contains("exec.gateway_runs_as_login = false"),
        "{err}"
    );
    // Proxies still work for the gateway, and a login still runs its own jobs itself.
    env.ctl_ok(GATEWAY, &["proxy", "set", "--login", ALICE, ETL]);
    let out = env.ctl_ok(
        GATEWAY,
        &["exec", "--login", ALICE, "--", "/usr/bin/id", "-un"],
    );
    assert_eq!(out.trim(), ETL);
    let out = env.ctl_ok(CAROL, &["exec", "--", "/usr/bin/id", "-un"]);
    assert_eq!(out.trim(), CAROL);
}

#[test]
fn attack_9_4_privileged_accounts_are_never_offered_chosen_or_given_a_session() {
    let env = Env::with(
        "atk-offers",
        "",
        &[
            ("10-base.toml", BASE_RULES),
            ("20-privileged.toml", OFFERS_PRIVILEGED),
        ],
    );
    // ListProxies offers only what SetProxy then accepts.
    let offered = env.ctl_json(ALICE, &["proxy", "list"]);
    let offered: Vec<&str> = offered
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(offered, [ETL, REPORT], "{offered:?}");
    for proxy in [ADMIN, GATEWAY] {
        let err = env.ctl_err(ALICE, &["proxy", "set", proxy], NOT_ALLOWED);
        assert!(err.contains("is never a proxy user"), "{err}");
    }
    for proxy in offered {
        env.ctl_ok(ALICE, &["proxy", "set", proxy]);
    }

    // OpenSession("root") and the like, as the gateway: refused, nothing stored.
    for login in ["root", "www-data", ADMIN, GATEWAY, ETL] {
        let out = env.dbus_send(
            GATEWAY,
            "org.proxyuserd1.Sessions.OpenSession",
            &[&format!("string:{login}")],
        );
        assert!(!out.ok(), "a session for {login}: {}", out.stdout);
        assert!(out.stderr.contains(NOT_ALLOWED), "{login}: {}", out.stderr);
    }
    let sessions = env.ctl_json(ROOT, &["sessions"]);
    assert_eq!(sessions.as_array().unwrap().len(), 0, "{sessions}");
    // Ordinary logins and web logins without an account get theirs.
    for login in [CAROL, "web-only-user"] {
        let reply = env
            .call(GATEWAY, "Sessions.OpenSession", "s", &[login])
            .unwrap();
        let ticket = reply[0].as_str().unwrap();
        let resolved = env
            .call(GATEWAY, "Sessions.ResolveTicket", "s", &[ticket])
            .unwrap();
        assert_eq!(resolved[0], login);
        assert_ne!(resolved[3], 0, "{resolved:?}");
    }
}

// ---------------------------------------------------------------------------------------
// 9.6: a job's cwd through the daemon's own cwd.

#[test]
fn attack_9_6_proc_paths_are_refused_and_the_daemons_cwd_is_root() {
    let env = Env::start("atk-proc");
    env.ctl_ok(ALICE, &["proxy", "set", ETL]);
    let daemon_cwd = std::fs::read_link(format!("/proc/{}/cwd", env.daemon_pid())).unwrap();
    assert_eq!(daemon_cwd, Path::new("/"));

    for cwd in [
        "/proc/self/cwd",
        "/proc/1/cwd",
        "/proc/self/root/tmp",
        "/tmp/../proc/self/cwd",
        "//proc/self/cwd",
        "/proc",
    ] {
        let err = env.ctl_err(
            ALICE,
            &["exec", "--cwd", cwd, "--", "/bin/pwd"],
            INVALID_ARGS,
        );
        assert!(err.contains("is under /proc"), "{cwd}: {err}");
    }
    for program in [
        "/proc/self/exe",
        "/proc/self/cwd/bin/sh",
        "/proc/1/root/bin/sh",
    ] {
        let err = env.ctl_err(ALICE, &["exec", "--", program, "-c", "pwd"], INVALID_ARGS);
        assert!(err.contains("is under /proc"), "{program}: {err}");
    }
    // A path outside /proc that leads there (alice's symlink) reaches only "/": the
    // daemon's working directory is no longer anything worth reaching.
    let links = env.dir.join("links");
    std::fs::create_dir(&links).unwrap();
    chmod(&links, 0o755);
    let link = links.join("cwd");
    std::os::unix::fs::symlink("/proc/self/cwd", &link).unwrap();
    let out = env.ctl(
        ALICE,
        &[
            "exec",
            "--cwd",
            link.to_str().unwrap(),
            "--",
            "/bin/pwd",
            "-P",
        ],
    );
    if out.ok() {
        assert_eq!(out.stdout.trim(), "/", "{out:?}");
    } else {
        assert_eq!(out.error_name(), Some(INVALID_ARGS), "{out:?}");
    }
}

// ---------------------------------------------------------------------------------------
// 9.7: signals telling every local user about every login.

#[test]
fn attack_9_7_another_local_user_hears_nothing_about_other_logins() {
    let env = Env::start("atk-signals");
    let mut root = env.signals();
    // Mallory listens on a connection the daemon knows (it made a call), and asks the
    // bus to let it eavesdrop; `dbus-monitor` as mallory tries to become a monitor.
    let mut mallory = Client::start(&env, MALLORY, &[]);
    let mut monitor = env
        .command_as(MALLORY, "dbus-monitor")
        .arg(format!("--address={}", env.address))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("dbus-monitor");
    // Bob proxies too: he is not involved in alice's doings either.
    env.ctl_ok(BOB, &["proxy", "set", ETL]);
    let mut bob = Client::start(&env, BOB, &[]);

    env.ctl_ok(ALICE, &["proxy", "set", ETL]);
    let job = env
        .ctl_ok(ALICE, &["exec", "--detach", "--", "/bin/true"])
        .trim()
        .to_string();
    env.ctl_ok(ALICE, &["proxy", "clear"]);
    root.expect("ProxyChanged", &[ALICE, ETL, "set"]);
    root.expect("JobFinished", &[&job, ETL, "exited", "0"]);
    root.expect("ProxyChanged", &[ALICE, ETL, "cleared"]);

    // Mallory's own job: its signal reaches mallory (the listener works) after all of
    // alice's, which were sent before it on the same connection.
    let own = env
        .ctl_ok(MALLORY, &["exec", "--detach", "--", "/bin/true"])
        .trim()
        .to_string();
    mallory.wait_for("mallory's own JobFinished", |l| {
        l.starts_with("SIGNAL JobFinished") && l.contains(&own)
    });
    let bob_own = env
        .ctl_ok(BOB, &["exec", "--detach", "--", "/bin/true"])
        .trim()
        .to_string();
    bob.wait_for("bob's own JobFinished", |l| {
        l.starts_with("SIGNAL JobFinished") && l.contains(&bob_own)
    });
    for (who, client) in [(MALLORY, &mallory), (BOB, &bob)] {
        let leaked: Vec<&String> = client
            .seen
            .iter()
            .filter(|l| l.contains(ALICE) || l.contains(&job))
            .collect();
        assert!(leaked.is_empty(), "{who} heard about alice: {leaked:?}");
    }
    let _ = monitor.kill();
    let out = monitor.wait_with_output().unwrap();
    let seen = String::from_utf8_lossy(&out.stdout);
    assert!(
        !seen.contains(ALICE) && !seen.contains(&job),
        "dbus-monitor as mallory saw alice: {seen}"
    );
}

// ---------------------------------------------------------------------------------------
// 9.8: admin status kept per connection.

#[test]
fn attack_9_8_an_admin_removed_from_the_group_loses_admin_on_an_open_connection() {
    let mut accounts = Accounts::new();
    let admins = accounts.group("adm", &[CAROL]);
    let mut env = Env::prepare(
        "atk-adminleft",
        "nss_cache_secs = 1\n",
        &[("10-base.toml", BASE_RULES)],
    );
    edit_config(
        &env,
        "admin_group = \"pxt-admins\"",
        &format!("admin_group = \"{admins}\""),
    );
    env.start_daemon();

    // Carol, an admin, keeps one connection open and uses admin calls on it.
    let mut carol = Client::start(&env, CAROL, &["--poll-admin"]);
    carol.wait_for("ListRules allowed", |l| l == "ADMIN OK");
    account_tool("gpasswd", &["-d", CAROL, &admins]);
    carol.clear();
    // No reload: the same connection is refused once nss_cache_secs have passed.
    carol.wait_for("ListRules refused", |l| {
        l == format!("ADMIN {ACCESS_DENIED}")
    });
}

#[test]
fn attack_9_8_a_removed_admin_stops_hearing_about_other_logins() {
    let mut accounts = Accounts::new();
    let admins = accounts.group("sig", &[CAROL]);
    let mut env = Env::prepare(
        "atk-adminsignals",
        "nss_cache_secs = 1\n",
        &[("10-base.toml", BASE_RULES)],
    );
    edit_config(
        &env,
        "admin_group = \"pxt-admins\"",
        &format!("admin_group = \"{admins}\""),
    );
    env.start_daemon();

    // As an admin, carol's listener hears alice's change (it may read it).
    let mut carol = Client::start(&env, CAROL, &[]);
    env.ctl_ok(ALICE, &["proxy", "set", ETL]);
    carol.wait_for("alice's ProxyChanged", |l| {
        l == format!("SIGNAL ProxyChanged {ALICE} {ETL} set")
    });
    account_tool("gpasswd", &["-d", CAROL, &admins]);
    // Past nss_cache_secs (the bound the daemon promises, with a margin).
    std::thread::sleep(Duration::from_secs(3));
    carol.clear();
    env.ctl_ok(ALICE, &["proxy", "clear"]);
    let own = env
        .ctl_ok(CAROL, &["exec", "--detach", "--", "/bin/true"])
        .trim()
        .to_string();
    carol.wait_for("carol's own JobFinished", |l| {
        l.starts_with("SIGNAL JobFinished") && l.contains(&own)
    });
    let leaked: Vec<&String> = carol.seen.iter().filter(|l| l.contains(ALICE)).collect();
    assert!(
        leaked.is_empty(),
        "carol still hears about alice: {leaked:?}"
    );
}

// ---------------------------------------------------------------------------------------
// 9.9: the smaller ones.

#[test]
fn attack_9_9_job_ids_are_random_and_others_jobs_look_absent() {
    let env = Env::start("atk-jobids");
    env.ctl_ok(ALICE, &["proxy", "set", ETL]);
    let ids: Vec<String> = (0..4)
        .map(|_| {
            env.ctl_ok(ALICE, &["exec", "--detach", "--", "/bin/true"])
                .trim()
                .to_string()
        })
        .collect();
    let numbers: Vec<u64> = ids
        .iter()
        .map(|id| {
            let hex = id.strip_prefix("job-").unwrap_or_else(|| panic!("{id}"));
            assert_eq!(hex.len(), 16, "{id}");
            u64::from_str_radix(hex, 16).unwrap_or_else(|e| panic!("{id}: {e}"))
        })
        .collect();
    for pair in numbers.windows(2) {
        assert!(
            pair[1].abs_diff(pair[0]) > 1_000_000,
            "ids close to each other: {ids:?}"
        );
    }
    eventually("alice's jobs end", || {
        jobs(&env, ALICE)
            .iter()
            .filter(|j| j["state"] == "exited")
            .count()
            == ids.len()
    });

    // Mallory probes alice's real id and an absent one: one answer for both, for every
    // operation on a job id.
    let absent = "job-0123456789abcdef";
    for (args, name) in [
        (vec!["result"], NO_SUCH_JOB),
        (vec!["result", "--stderr"], NO_SUCH_JOB),
        (vec!["cancel"], NO_SUCH_JOB),
    ] {
        let ask = |id: &str| {
            let mut all = args.clone();
            all.push(id);
            env.ctl_err(MALLORY, &all, name).replace(id, "ID")
        };
        assert_eq!(ask(&ids[0]), ask(absent), "{args:?}");
    }
    let wait = |id: &str| {
        env.dbus_send(
            MALLORY,
            "org.proxyuserd1.Jobs.Wait",
            &[&format!("string:{MALLORY}"), &format!("string:{id}")],
        )
        .stderr
        .replace(id, "ID")
    };
    let real = wait(&ids[0]);
    assert!(real.contains(NO_SUCH_JOB), "{real}");
    assert_eq!(real, wait(absent));
    assert!(
        jobs(&env, MALLORY).iter().all(|j| j["login"] != ALICE),
        "mallory lists alice's jobs"
    );
}

#[test]
fn attack_9_9_rule_files_another_user_can_change_are_refused() {
    let mut env = Env::start("atk-rulefiles");
    env.ctl_ok(ALICE, &["proxy", "set", ETL]);
    let generation = |env: &Env| env.ctl_json(ROOT, &["status"])["rules_generation"].as_u64();
    let before = generation(&env);
    // A file that would let carol proxy to etl.
    const CAROL_RULE: &str = "[[allow]]\nlogins = [\"pxt-carol\"]\nproxies = [\"pxt-etl\"]\n";
    let file = env.rules_dir().join("20-carol.toml");
    std::fs::write(&file, CAROL_RULE).unwrap();
    let elsewhere = env.dir.join("mallorys.toml");
    std::fs::write(&elsewhere, CAROL_RULE).unwrap();
    chown(&elsewhere, MALLORY);

    let refused = |env: &Env, path: &Path, what: &str| {
        let err = env.ctl_err(ROOT, &["rules", "reload"], INVALID_RULES);
        assert!(
            err.contains(&path.display().to_string()) && err.contains(what),
            "{err}"
        );
        // The old rules stay: carol still may not choose etl, alice keeps it.
        env.ctl_err(CAROL, &["proxy", "set", ETL], NOT_ALLOWED);
        assert_eq!(env.resolve(ALICE).1, ETL);
        assert_eq!(generation(env), before);
    };
    chmod(&file, 0o666);
    refused(&env, &file, "writable by group or others (mode 666)");
    chmod(&file, 0o664);
    refused(&env, &file, "writable by group or others (mode 664)");
    chmod(&file, 0o644);
    chown(&file, MALLORY);
    refused(
        &env,
        &file,
        &format!("owned by uid {}, not root", ids(MALLORY).0),
    );
    // Through a symlink to mallory's file.
    std::fs::remove_file(&file).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &file).unwrap();
    refused(
        &env,
        &file,
        &format!("owned by uid {}, not root", ids(MALLORY).0),
    );
    std::fs::remove_file(&file).unwrap();
    std::fs::write(&file, CAROL_RULE).unwrap();
    // The directory itself.
    chmod(&env.rules_dir(), 0o777);
    refused(
        &env,
        &env.rules_dir(),
        "writable by group or others (mode 777)",
    );
    chmod(&env.rules_dir(), 0o755);

    // SIGHUP keeps the old rules too, and says why.
    chmod(&file, 0o666);
    env.signal(nix::sys::signal::Signal::SIGHUP);
    let messages = env.log_messages("SIGHUP: rules not reloaded");
    assert!(
        messages
            .iter()
            .any(|m| m.contains("SIGHUP: rules not reloaded")
                && m.contains(&file.display().to_string())),
        "{messages:?}"
    );
    env.ctl_err(CAROL, &["proxy", "set", ETL], NOT_ALLOWED);
    // And so does a start with such a file.
    env.restart();
    let errors = log_entries(&env, 3, "serving the last good rules");
    assert!(
        errors
            .iter()
            .any(|(_, m)| m.contains("serving the last good rules")
                && m.contains(&file.display().to_string())),
        "{errors:?}"
    );
    env.ctl_err(CAROL, &["proxy", "set", ETL], NOT_ALLOWED);
    assert_eq!(env.resolve(ALICE).1, ETL);

    // Made root's and private, the file is read.
    chmod(&file, 0o644);
    env.ctl_ok(ROOT, &["rules", "reload"]);
    env.ctl_ok(CAROL, &["proxy", "set", ETL]);
}

#[test]
fn attack_9_9_unknown_names_are_answered_from_a_negative_cache() {
    let mut accounts = Accounts::new();
    let env = Env::with(
        "atk-negcache",
        "nss_cache_secs = 3600\n",
        &[("10-base.toml", BASE_RULES)],
    );
    let late = Accounts::name("late");
    let check = |env: &Env| env.call(MALLORY, "Identity.CheckProxy", "ss", &[MALLORY, &late]);
    let err = check(&env).unwrap_err();
    assert!(err.contains(&format!("no system user {late}")), "{err}");
    // The name now exists, but repeated questions about it do not reach NSS again
    // within nss_cache_secs: the daemon's answer stays the cached "no such user".
    accounts.user("late", &[]);
    for _ in 0..3 {
        let err = check(&env).unwrap_err();
        assert!(err.contains(&format!("no system user {late}")), "{err}");
    }
    // An admin's reload forgets the cache.
    env.ctl_ok(ROOT, &["rules", "reload"]);
    let answer = check(&env).unwrap();
    assert_eq!(answer[0], false, "{answer:?}");
}

#[test]
fn attack_9_9_a_flood_of_unknown_names_is_throttled_like_denials() {
    let env = Env::with(
        "atk-unknownflood",
        "denial_rate = 1\ndenial_burst = 1\n",
        &[("10-base.toml", BASE_RULES)],
    );
    let out = env
        .command_as(MALLORY, "/usr/bin/python3")
        .arg(repo().join("tests/attack_client.py"))
        .args([
            &env.address,
            MALLORY,
            "--unknown-names",
            "1",
            "1",
            "1",
            "10",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Three names one after the other, then ten at once: the second refusal made mallory
    // wait, so of the ten some wait their turn (and get their answer) and the rest are
    // refused at once, without a lookup.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let count = |burst: &str, name: &str| {
        stdout
            .lines()
            .filter(|l| l.split_once(' ') == Some((burst, name)))
            .count()
    };
    for burst in ["1", "2", "3"] {
        assert_eq!(count(burst, NO_SUCH_USER), 1, "{stdout}");
    }
    assert!(count("4", NO_SUCH_USER) >= 1, "{stdout}");
    assert!(count("4", LIMITS_EXCEEDED) >= 1, "{stdout}");
    assert_eq!(
        count("4", NO_SUCH_USER) + count("4", LIMITS_EXCEEDED),
        10,
        "{stdout}"
    );
    const SLOWED: &str = "causes refusals faster than denial_rate";
    let messages = env.log_messages(SLOWED);
    assert!(
        messages
            .iter()
            .any(|m| m.contains(SLOWED) && m.contains(MALLORY)),
        "{messages:?}"
    );
    // Others are served as before.
    assert_eq!(env.resolve(ALICE).0, ALICE);
}

#[test]
fn attack_9_9_two_names_for_one_uid_earn_neither_admin_nor_trust() {
    let mut accounts = Accounts::new();
    let gateway = accounts.user("gw", &[]);
    let admins = accounts.group("gwadm", &[&gateway]);
    let mut env = Env::prepare(
        "atk-shareduid",
        "nss_cache_secs = 1\n",
        &[("10-base.toml", BASE_RULES)],
    );
    edit_config(
        &env,
        "admin_group = \"pxt-admins\"",
        &format!("admin_group = \"{admins}\""),
    );
    edit_config(
        &env,
        &format!("trusted_callers = [\"{GATEWAY}\"]"),
        &format!("trusted_callers = [\"{gateway}\"]"),
    );
    env.start_daemon();
    // While the uid has one name, that name is a gateway and an admin.
    env.call(&gateway, "Sessions.OpenSession", "s", &[CAROL])
        .unwrap();
    env.ctl_ok(&gateway, &["rules", "list"]);

    // A second account with the same uid (as a careless `useradd -o` makes): the bus
    // reports the uid, so the name the daemon finds for it proves nothing.
    let (uid, _) = ids(&gateway);
    let twin = accounts.user("twin", &["-o", "-u", &uid.to_string()]);
    assert_eq!(ids(&twin).0, uid);
    eventually("the shared uid loses its powers", || {
        env.ctl(&gateway, &["rules", "list"]).error_name() == Some(ACCESS_DENIED)
    });
    env.ctl_err(&twin, &["rules", "list"], ACCESS_DENIED);
    let out = env.dbus_send(
        &twin,
        "org.proxyuserd1.Sessions.OpenSession",
        &[&format!("string:{CAROL}")],
    );
    assert!(out.stderr.contains(ACCESS_DENIED), "{out:?}");
    env.ctl_err(&twin, &["resolve", ALICE], ACCESS_DENIED);
    let warnings = env.log_messages("has more than one account name");
    assert!(
        warnings
            .iter()
            .any(|m| m.contains(&format!("uid {uid} has more than one account name"))),
        "{warnings:?}"
    );
}
