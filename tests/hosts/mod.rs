//! Simulated hosts that get their accounts from a directory, for the LDAP and fleet tests.
//!
//! A [`Network`] is a network namespace of its own holding what a fleet shares: a real
//! `slapd` serving `directory.ldif` (users and groups as posixAccount/posixGroup), and
//! for a fleet the central journal collector (`systemd-journal-remote`). Each [`Host`] is
//! `host.sh` as PID 1 of its own mount, PID, network and UTS namespaces, plugged into the
//! network by a veth pair: its own `/run` (system bus, journald, nslcd sockets where a
//! real host has them), NSS `passwd: files ldap` / `group: files ldap` through its own
//! `nslcd`, its own `dbus-daemon` with our policy, `proxyuserd` and state, and optionally
//! its own `systemd-journald` forwarding with `systemd-journal-upload`. The machine's
//! nsswitch.conf, /etc/passwd and journal are never touched: everything is bind-mounted
//! inside the namespaces and disappears with them.
//!
//! The directory's accounts (uids 71001…): logins `alice`, `bob` (group `data-eng`) and
//! `carol`; proxy accounts `etl` (groups `svc-accounts`, `etl-operators`) and `reporting`
//! (`svc-accounts`); the gateway `gateway`, a trusted caller on every host.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::common::{Out, PATIENCE, bin, repo};

/// The directory's accounts: name, uid, primary gid.
pub const ACCOUNTS: &[(&str, u32, u32)] = &[
    ("alice", 71001, 71001),
    ("bob", 71002, 71001),
    ("carol", 71003, 71001),
    ("etl", 71101, 71101),
    ("reporting", 71102, 71101),
    ("gateway", 71201, 71201),
];

/// The directory's groups (names), hidden from the hosts' local files if the machine has
/// them too.
const GROUPS: &[&str] = &[
    "people",
    "services",
    "gateway",
    "data-eng",
    "svc-accounts",
    "etl-operators",
];

pub const BASE_DN: &str = "dc=example,dc=test";
const ADMIN_DN: &str = "cn=admin,dc=example,dc=test";
const ADMIN_PASSWORD: &str = "secret";

/// The collector's port in the network namespace (which has nothing else listening).
const COLLECTOR_PORT: u16 = 19532;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn check_prerequisites() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the directory tests must run as root (namespaces, mounts, users): use `sudo tests/run`"
    );
    let packages = [
        "slapd",
        "ldap-utils",
        "nslcd",
        "libnss-ldapd",
        "systemd-journal-remote",
        "iproute2",
        "util-linux",
        "dbus-daemon",
    ];
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| {
            let out = Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output()
                .expect("dpkg-query");
            !String::from_utf8_lossy(&out.stdout).contains("ok installed")
        })
        .collect();
    assert!(
        missing.is_empty(),
        "packages missing for the directory tests: {}: run `sudo tests/setup`",
        missing.join(" ")
    );
}

/// The environment every command of the harness gets: nothing of the caller's.
fn clean(command: &mut Command) -> &mut Command {
    command
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("LANG", "C.UTF-8")
        .current_dir("/")
}

/// Runs `command`, which must succeed; its stdout.
fn run_ok(command: &mut Command) -> String {
    let out = Out::from(
        clean(command)
            .output()
            .unwrap_or_else(|e| panic!("{command:?}: {e}")),
    );
    assert!(
        out.ok(),
        "{command:?} failed ({}): {}",
        out.code,
        out.stderr
    );
    out.stdout
}

fn log_file(dir: &Path, name: &str) -> std::fs::File {
    std::fs::create_dir_all(dir.join("log")).unwrap();
    std::fs::File::create(dir.join("log").join(name)).unwrap()
}

/// Every file in `dir/log`, for a failure message.
fn logs(dir: &Path) -> String {
    let mut all = String::new();
    let Ok(entries) = std::fs::read_dir(dir.join("log")) else {
        return all;
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        all.push_str(&format!("--- {}\n", path.display()));
        for line in tail.into_iter().rev() {
            all.push_str(line);
            all.push('\n');
        }
    }
    all
}

/// The pid of the only child of `parent` (what `unshare --fork` started).
fn only_child(parent: u32) -> u32 {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let children = std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children"))
            .unwrap_or_default();
        if let Some(pid) = children.split_whitespace().next() {
            return pid.parse().unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "process {parent} never started its child"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The fleet's shared network: a namespace with the directory and the journal collector.
pub struct Network {
    pub dir: PathBuf,
    /// `unshare --net sleep infinity`: its pid names the namespace.
    holder: Child,
    slapd: Option<Child>,
    collector: Option<Child>,
    hosts: AtomicUsize,
}

impl Network {
    /// A network namespace with slapd serving the test directory.
    pub fn start(name: &str) -> Network {
        check_prerequisites();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = PathBuf::from(format!("/tmp/pxh-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("db")).unwrap();
        // nslcd and the test users reach files in here.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(
            dir.join("slapd.conf"),
            format!(
                "include /etc/ldap/schema/core.schema\n\
                 include /etc/ldap/schema/cosine.schema\n\
                 include /etc/ldap/schema/nis.schema\n\
                 include /etc/ldap/schema/inetorgperson.schema\n\
                 modulepath /usr/lib/ldap\n\
                 moduleload back_mdb\n\
                 database mdb\n\
                 suffix \"{BASE_DN}\"\n\
                 rootdn \"{ADMIN_DN}\"\n\
                 rootpw {ADMIN_PASSWORD}\n\
                 directory {}\n",
                dir.join("db").display()
            ),
        )
        .unwrap();
        run_ok(Command::new("slapadd").args([
            "-q",
            "-f",
            dir.join("slapd.conf").to_str().unwrap(),
            "-l",
            repo().join("tests/hosts/directory.ldif").to_str().unwrap(),
        ]));
        let holder = clean(Command::new("unshare").args(["--net", "sleep", "infinity"]))
            .spawn()
            .expect("unshare");
        let mut network = Network {
            dir,
            holder,
            slapd: None,
            collector: None,
            hosts: AtomicUsize::new(0),
        };
        let ours = std::fs::read_link("/proc/self/ns/net").unwrap();
        let deadline = Instant::now() + PATIENCE;
        while std::fs::read_link(network.netns()).ok().as_ref() == Some(&ours)
            || !std::fs::read_to_string(format!("/proc/{}/cmdline", network.holder.id()))
                .unwrap_or_default()
                .starts_with("sleep")
        {
            assert!(Instant::now() < deadline, "unshare --net did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        network.ip(&["link", "set", "lo", "up"]);
        network.start_directory();
        network
    }

    fn netns(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/net", self.holder.id()))
    }

    /// A command in the network namespace.
    fn inside(&self, program: &str) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net={}", self.netns().display()))
            .arg("--")
            .arg(program);
        command
    }

    fn ip(&self, args: &[&str]) {
        run_ok(self.inside("ip").args(args));
    }

    fn ldapi(&self) -> String {
        let path = self.dir.join("ldapi");
        format!("ldapi://{}", path.to_str().unwrap().replace('/', "%2F"))
    }

    /// Starts slapd (again), listening on the network and on a local socket for the
    /// harness's own ldapmodify, and waits until it answers.
    pub fn start_directory(&mut self) {
        assert!(self.slapd.is_none(), "slapd is running");
        let mut command = self.inside("slapd");
        command
            .arg("-f")
            .arg(self.dir.join("slapd.conf"))
            .arg("-h")
            .arg(format!("ldap:/// {}", self.ldapi()))
            // In the foreground, logging to stderr.
            .args(["-d", "0"])
            .stdout(Stdio::null())
            .stderr(log_file(&self.dir, "slapd"));
        self.slapd = Some(clean(&mut command).spawn().expect("slapd"));
        let deadline = Instant::now() + PATIENCE;
        loop {
            let out = Out::from(
                clean(Command::new("ldapsearch").args([
                    "-x",
                    "-H",
                    &self.ldapi(),
                    "-b",
                    BASE_DN,
                    "-s",
                    "base",
                ]))
                .output()
                .unwrap(),
            );
            if out.ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "slapd does not answer: {}\n{}",
                out.stderr,
                logs(&self.dir)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops slapd: the directory is down (connections are refused).
    pub fn stop_directory(&mut self) {
        let mut slapd = self.slapd.take().expect("slapd running");
        let _ = slapd.kill();
        slapd.wait().unwrap();
    }

    /// Freezes slapd: the directory accepts connections and never answers, like a server
    /// that hangs or a network that drops its answers.
    pub fn freeze_directory(&self) {
        self.signal_slapd(nix::sys::signal::Signal::SIGSTOP);
    }

    pub fn thaw_directory(&self) {
        self.signal_slapd(nix::sys::signal::Signal::SIGCONT);
    }

    fn signal_slapd(&self, signal: nix::sys::signal::Signal) {
        let pid = self.slapd.as_ref().expect("slapd running").id();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal).unwrap();
    }

    /// Applies an LDIF change to the directory, as an admin's `ldapmodify` does.
    pub fn ldapmodify(&self, ldif: &str) {
        let mut child = clean(Command::new("ldapmodify").args([
            "-x",
            "-H",
            &self.ldapi(),
            "-D",
            ADMIN_DN,
            "-w",
            ADMIN_PASSWORD,
        ]))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ldapmodify");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(ldif.as_bytes())
            .unwrap();
        let out = Out::from(child.wait_with_output().unwrap());
        assert!(out.ok(), "ldapmodify failed: {}", out.stderr);
    }

    /// Removes `user` from `group` in the directory.
    pub fn remove_from_group(&self, user: &str, group: &str) {
        self.ldapmodify(&format!(
            "dn: cn={group},ou=groups,{BASE_DN}\nchangetype: modify\ndelete: memberUid\nmemberUid: {user}\n"
        ));
    }

    /// Starts the central journal collector (`systemd-journal-remote` over HTTP) writing
    /// to the returned directory.
    pub fn start_collector(&mut self) -> PathBuf {
        assert!(self.collector.is_none(), "collector running");
        let output = self.dir.join("collector");
        std::fs::create_dir_all(&output).unwrap();
        let mut command = self.inside("/lib/systemd/systemd-journal-remote");
        command
            .arg(format!("--listen-http=0.0.0.0:{COLLECTOR_PORT}"))
            .arg(format!("--output={}/", output.display()))
            .arg("--split-mode=host")
            .stdout(Stdio::null())
            .stderr(log_file(&self.dir, "journal-remote"));
        self.collector = Some(clean(&mut command).spawn().expect("systemd-journal-remote"));
        let deadline = Instant::now() + PATIENCE;
        let listening = format!(":{COLLECTOR_PORT:04X} 00000000:0000 0A");
        loop {
            let tcp = run_ok(self.inside("cat").arg("/proc/net/tcp"));
            if tcp.contains(&listening) {
                return output;
            }
            assert!(
                Instant::now() < deadline,
                "systemd-journal-remote does not listen:\n{}",
                logs(&self.dir)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Entries of the collector's journal files matching `fields`, as journalctl's JSON.
    pub fn collected(&self, fields: &[&str]) -> Vec<serde_json::Value> {
        let out = run_ok(
            Command::new("journalctl")
                .arg(format!(
                    "--directory={}",
                    self.dir.join("collector").display()
                ))
                .args(["--no-pager", "-o", "json"])
                .args(fields),
        );
        out.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    /// Every log of the network and its hosts, for a failure message.
    pub fn logs(&self) -> String {
        let mut all = logs(&self.dir);
        if let Ok(hosts) = std::fs::read_dir(self.dir.join("hosts")) {
            for host in hosts.flatten() {
                all.push_str(&logs(&host.path()));
            }
        }
        all
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for child in [self.slapd.as_mut(), self.collector.as_mut()]
            .into_iter()
            .flatten()
        {
            // A frozen slapd dies of SIGKILL too.
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = self.holder.kill();
        let _ = self.holder.wait();
        if std::thread::panicking() {
            eprintln!(
                "test state kept in {}; logs:\n{}",
                self.dir.display(),
                self.logs()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// How a host is set up.
pub struct HostOptions<'a> {
    /// Lines appended to proxyuserd.toml.
    pub config: &'a str,
    /// nslcd.conf's timeout settings.
    pub nslcd: &'a str,
    /// Rule files in rules.d at start.
    pub rules: &'a [(&'a str, &'a str)],
    /// Run systemd-journald on the host and forward it to the network's collector.
    pub journal: bool,
}

/// nslcd timeouts for a fleet, as docs/fleet.md recommends: nslcd gives up (and tries
/// again) before proxyuserd's `nss_timeout_ms` does.
pub const NSLCD_TIMEOUTS: &str =
    "bind_timelimit 2\ntimelimit 2\nreconnect_sleeptime 1\nreconnect_retrytime 2\n";

/// One simulated host.
pub struct Host {
    pub name: String,
    pub dir: PathBuf,
    /// `unshare … host.sh`.
    unshare: Child,
    /// host.sh, PID 1 of the host's namespaces (as this process sees it).
    pub pid: u32,
}

impl Host {
    pub fn start(network: &Network, name: &str, options: HostOptions) -> Host {
        let index = network.hosts.fetch_add(1, Ordering::Relaxed) + 1;
        assert!(index < 250);
        let dir = network.dir.join("hosts").join(name);
        let etc = dir.join("etc");
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::create_dir_all(dir.join("rules.d")).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(
            dir.parent().unwrap(),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();

        let nsswitch = std::fs::read_to_string("/etc/nsswitch.conf").unwrap();
        let nsswitch: String = nsswitch
            .lines()
            .map(|line| match line.split(':').next().unwrap_or("") {
                "passwd" => "passwd: files ldap".to_string(),
                "group" => "group: files ldap".to_string(),
                _ => line.to_string(),
            })
            .map(|line| line + "\n")
            .collect();
        std::fs::write(etc.join("nsswitch.conf"), nsswitch).unwrap();
        // The machine's accounts, minus any that would shadow the directory's.
        let users: Vec<&str> = ACCOUNTS.iter().map(|a| a.0).collect();
        for (file, names) in [("passwd", &users[..]), ("group", GROUPS)] {
            let text = std::fs::read_to_string(Path::new("/etc").join(file)).unwrap();
            let kept: String = text
                .lines()
                .filter(|line| !names.contains(&line.split(':').next().unwrap_or("")))
                .map(|line| format!("{line}\n"))
                .collect();
            std::fs::write(etc.join(file), kept).unwrap();
        }
        let nslcd = etc.join("nslcd.conf");
        std::fs::write(
            &nslcd,
            format!(
                "uid nslcd\ngid nslcd\nuri ldap://10.77.{index}.1/\nbase {BASE_DN}\n\
                 base passwd ou=people,{BASE_DN}\nbase group ou=groups,{BASE_DN}\n{}",
                options.nslcd
            ),
        )
        .unwrap();
        let nslcd_gid = nix::unistd::Group::from_name("nslcd")
            .unwrap()
            .expect("group nslcd (run `sudo tests/setup`)")
            .gid;
        nix::unistd::chown(&nslcd, Some(nix::unistd::Uid::from_raw(0)), Some(nslcd_gid)).unwrap();
        std::fs::set_permissions(&nslcd, std::fs::Permissions::from_mode(0o640)).unwrap();
        // Each host its own machine id, as journald and the collector tell hosts apart by it.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        std::fs::write(
            etc.join("machine-id"),
            format!("{nanos:016x}{:08x}{index:08x}\n", std::process::id()),
        )
        .unwrap();
        std::fs::write(
            etc.join("journald.conf"),
            "[Journal]\nStorage=volatile\nRateLimitIntervalSec=0\nReadKMsg=no\n",
        )
        .unwrap();

        let bus_conf = std::fs::read_to_string(repo().join("tests/bus.conf.in"))
            .unwrap()
            .replace("@SOCKET@", "/run/dbus/system_bus_socket")
            .replace(
                "@POLICY@",
                repo().join("dbus/org.proxyuserd1.conf").to_str().unwrap(),
            );
        std::fs::write(dir.join("bus.conf"), bus_conf).unwrap();
        for (file, text) in options.rules {
            std::fs::write(dir.join("rules.d").join(file), text).unwrap();
        }
        std::fs::write(
            dir.join("proxyuserd.toml"),
            format!(
                "state_dir = \"{d}/state\"\nrules_dir = \"{d}/rules.d\"\n\
                 trusted_callers = [\"gateway\"]\n{}\n[exec]\nbackend = \"direct\"\n",
                options.config,
                d = dir.display()
            ),
        )
        .unwrap();
        if options.journal {
            std::fs::write(dir.join("journal"), "").unwrap();
            assert!(network.collector.is_some(), "start the collector first");
            std::fs::write(
                dir.join("upload-url"),
                format!("http://10.77.{index}.1:{COLLECTOR_PORT}"),
            )
            .unwrap();
        }

        let mut command = Command::new("unshare");
        command
            .args([
                "--mount",
                "--propagation",
                "private",
                "--pid",
                "--fork",
                "--mount-proc",
                "--net",
                "--uts",
                "--",
                "sh",
            ])
            .arg(repo().join("tests/hosts/host.sh"))
            .arg(&dir)
            .arg(name);
        clean(&mut command)
            .env("PROXYUSERD", bin("proxyuserd"))
            .stdout(log_file(&dir, "host"))
            .stderr(log_file(&dir, "host.err"));
        let unshare = command.spawn().expect("unshare");
        let pid = only_child(unshare.id());
        let mut host = Host {
            name: name.to_string(),
            dir,
            unshare,
            pid,
        };

        // Plug the host into the network: hostN there, eth0 here.
        let link = format!("host{index}");
        network.ip(&[
            "link",
            "add",
            &link,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &pid.to_string(),
        ]);
        network.ip(&["addr", "add", &format!("10.77.{index}.1/24"), "dev", &link]);
        network.ip(&["link", "set", &link, "up"]);
        host.root(&[
            "ip",
            "addr",
            "add",
            &format!("10.77.{index}.2/24"),
            "dev",
            "eth0",
        ]);
        host.root(&["ip", "link", "set", "eth0", "up"]);
        std::fs::write(host.dir.join("link-up"), "").unwrap();

        let deadline = Instant::now() + PATIENCE * 2;
        while !host.dir.join("ready").exists() {
            let failed = std::fs::read_to_string(host.dir.join("failed")).ok();
            let exited = host.unshare.try_wait().unwrap();
            if failed.is_some() || exited.is_some() || Instant::now() > deadline {
                panic!(
                    "host {name} did not start ({}):\n{}",
                    failed.unwrap_or_else(|| format!("{exited:?}")),
                    logs(&host.dir)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        host
    }

    /// A command inside the host as `user` (root, or a directory account with its
    /// groups), with a clean environment.
    pub fn command(&self, user: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("nsenter");
        command.args(["-t", &self.pid.to_string(), "-m", "-u", "-n", "-p", "--"]);
        if user != "root" {
            let (_, uid, gid) = ACCOUNTS
                .iter()
                .find(|a| a.0 == user)
                .unwrap_or_else(|| panic!("{user} is not a directory account"));
            command.args([
                "setpriv",
                &format!("--reuid={uid}"),
                &format!("--regid={gid}"),
                "--init-groups",
                "--",
            ]);
        }
        command.arg(program);
        clean(&mut command);
        command
    }

    /// Runs `argv` inside as `user`.
    pub fn run(&self, user: &str, argv: &[&str]) -> Out {
        Out::from(
            self.command(user, argv[0])
                .args(&argv[1..])
                .output()
                .unwrap(),
        )
    }

    /// Runs `argv` inside as root, which must succeed.
    pub fn root(&self, argv: &[&str]) -> String {
        let out = self.run("root", argv);
        assert!(
            out.ok(),
            "{argv:?} on {} failed ({}): {}",
            self.name,
            out.code,
            out.stderr
        );
        out.stdout
    }

    /// `proxyuserctl ARGS` as `user` on this host.
    pub fn ctl(&self, user: &str, args: &[&str]) -> Out {
        Out::from(
            self.command(user, bin("proxyuserctl"))
                .args(args)
                .output()
                .unwrap(),
        )
    }

    pub fn ctl_ok(&self, user: &str, args: &[&str]) -> String {
        let out = self.ctl(user, args);
        assert!(
            out.ok(),
            "proxyuserctl {args:?} as {user} on {} failed ({}): {}",
            self.name,
            out.code,
            out.stderr
        );
        out.stdout
    }

    /// `proxyuserctl ARGS` as `user`, which must fail with D-Bus error `name`; stderr.
    pub fn ctl_err(&self, user: &str, args: &[&str], name: &str) -> String {
        let out = self.ctl(user, args);
        assert!(
            !out.ok(),
            "proxyuserctl {args:?} as {user} on {} succeeded: {}",
            self.name,
            out.stdout
        );
        assert_eq!(
            out.error_name(),
            Some(name),
            "proxyuserctl {args:?} as {user} on {}: {}",
            self.name,
            out.stderr
        );
        out.stderr
    }

    pub fn ctl_json(&self, user: &str, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.ctl_ok(user, &all);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    }

    /// `CheckProxy` as root: (allowed, reason).
    pub fn check(&self, login: &str, proxy: &str) -> (bool, String) {
        let out = self.ctl("root", &["--json", "check", login, proxy]);
        let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "check {login} {proxy} on {}: {e}: {} {}",
                self.name, out.stdout, out.stderr
            )
        });
        (
            v["allowed"].as_bool().unwrap(),
            v["reason"].as_str().unwrap().to_string(),
        )
    }

    /// A method call on proxyuserd as `user` through busctl: the reply's values as JSON,
    /// or busctl's error message.
    pub fn call(
        &self,
        user: &str,
        interface_method: &str,
        signature: &str,
        args: &[&str],
    ) -> Result<Vec<serde_json::Value>, String> {
        let (interface, method) = interface_method.rsplit_once('.').unwrap();
        let interface = format!("org.proxyuserd1.{interface}");
        let mut command = self.command(user, "busctl");
        command.args([
            "--system",
            "--json=short",
            "call",
            "--",
            "org.proxyuserd1",
            "/org/proxyuserd1",
            &interface,
            method,
        ]);
        if !signature.is_empty() {
            command.arg(signature).args(args);
        }
        let out = Out::from(command.output().unwrap());
        if !out.ok() {
            return Err(out.stderr);
        }
        let reply: serde_json::Value =
            serde_json::from_str(&out.stdout).unwrap_or(serde_json::Value::Null);
        Ok(reply["data"].as_array().cloned().unwrap_or_default())
    }

    /// Every audit record of this host, through the API.
    pub fn audit(&self) -> Vec<BTreeMap<String, String>> {
        serde_json::from_value(self.ctl_json("root", &["audit"])).unwrap()
    }

    /// Installs a rule file the way configuration management does: copied next to the
    /// rules, checked with `proxyuserctl rules check` (the validate step), renamed into
    /// place, then the daemon reloads. A file that does not check is not installed;
    /// the error is returned.
    pub fn push_rules(&self, file: &str, text: &str) -> Result<(), String> {
        let staged = self.dir.join("rules.d").join(format!(".{file}.new"));
        std::fs::write(&staged, text).unwrap();
        let check = self.ctl("root", &["rules", "check", staged.to_str().unwrap()]);
        if !check.ok() {
            std::fs::remove_file(&staged).unwrap();
            return Err(check.stdout + &check.stderr);
        }
        std::fs::rename(&staged, self.dir.join("rules.d").join(file)).unwrap();
        self.ctl_ok("root", &["rules", "reload"]);
        Ok(())
    }

    /// The pid of proxyuserd as the host sees it.
    fn daemon_pid(&self) -> String {
        self.root(&["pidof", "proxyuserd"]).trim().to_string()
    }

    /// The names of proxyuserd's threads.
    pub fn daemon_threads(&self) -> Vec<String> {
        let pid = self.daemon_pid();
        // Threads come and go while they are listed: a vanished one is not an error.
        let list =
            format!("for t in /proc/{pid}/task/*/comm; do cat \"$t\" 2>/dev/null; done; true");
        self.root(&["sh", "-c", &list])
            .lines()
            .map(str::to_string)
            .collect()
    }

    pub fn logs(&self) -> String {
        logs(&self.dir)
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        // SIGKILL to a PID namespace's init ends everything in it.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.unshare.wait();
        if std::thread::panicking() {
            eprintln!("host {} logs:\n{}", self.name, self.logs());
        }
    }
}

/// Waits until `condition` gives a value, for at most `limit`; `None` if it never does.
pub fn wait_for<T>(limit: Duration, mut condition: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = condition() {
            return Some(value);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
