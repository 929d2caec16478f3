//! `pam_proxyuserd.so` in the real `/usr/bin/su` and `pamtester`, against the real
//! daemon on a test bus.
//!
//! The module only ever talks to `/run/dbus/system_bus_socket`, and PAM reads
//! `/etc/pam.d`. So every PAM program here runs in a private mount namespace (`unshare
//! --mount`) where a copy of `/etc/pam.d` with the module's lines is bind-mounted over
//! `/etc/pam.d` and the test bus's socket over the standard path (and, for the password
//! tests, a copy of `/etc/shadow` that gives pxt-etl a password). The host's own PAM
//! configuration, `/run/dbus` and shadow file are never touched.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::*;

type Record = BTreeMap<String, String>;

/// The module cargo built for these tests (the test crate depends on it).
fn module() -> PathBuf {
    let deps = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let module = deps.join("libpam_proxyuserd.so");
    assert!(
        module.exists(),
        "{} is missing: the pam crate was not built (cargo test builds it with the tests)",
        module.display()
    );
    module
}

fn check_tools() {
    for tool in [
        "/usr/bin/su",
        "/usr/bin/pamtester",
        "/usr/bin/unshare",
        "/usr/bin/setpriv",
    ] {
        assert!(
            Path::new(tool).exists(),
            "{tool} is missing: run `sudo tests/setup`"
        );
    }
}

/// Inside the namespace: the copies over the real paths, then the command with a clean
/// environment (plus the `VAR=value` words the command starts with).
const NAMESPACE: &str = r#"set -eu
mount --bind "$PXT_PAM_D" /etc/pam.d
if [ -d /run/dbus ]; then
    mount -t tmpfs -o mode=755 tmpfs /run/dbus
else
    mount -t tmpfs -o mode=755 tmpfs /run
    mkdir /run/dbus
fi
if [ -n "$PXT_BUS" ]; then
    touch /run/dbus/system_bus_socket
    mount --bind "$PXT_BUS" /run/dbus/system_bus_socket
fi
if [ -n "$PXT_SHADOW" ]; then
    mount --bind "$PXT_SHADOW" /etc/shadow
fi
exec env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"
"#;

/// The password pxt-etl has in the shadow copy of the password tests.
const ETL_PASSWORD: &str = "pxt-etl-secret";

/// A private PAM world for one test.
struct Host {
    pam_d: PathBuf,
    /// What the standard system bus path shows (none: no bus there).
    bus: Option<PathBuf>,
    shadow: Option<PathBuf>,
}

impl Host {
    /// A copy of /etc/pam.d (as `env`'s directory/`name`), the test bus at the
    /// standard path.
    fn new(env: &Env, name: &str) -> Host {
        check_tools();
        let pam_d = env.dir.join(name);
        let copied = Command::new("cp")
            .args(["-a", "/etc/pam.d"])
            .arg(&pam_d)
            .status()
            .unwrap();
        assert!(copied.success());
        Host {
            pam_d,
            bus: Some(env.dir.join("bus")),
            shadow: None,
        }
    }

    /// Adds our lines to /etc/pam.d/su (and so su-l, which includes it): `auth` right
    /// after pam_rootok, as the README recommends, and `session` after the common ones.
    fn su_lines(&self, auth_args: &str, more: &str) {
        let path = self.pam_d.join("su");
        let su = std::fs::read_to_string(&path).unwrap();
        let rootok = su
            .lines()
            .position(|l| l.contains("pam_rootok.so"))
            .expect("/etc/pam.d/su has a pam_rootok line");
        let mut lines: Vec<String> = su.lines().map(str::to_string).collect();
        lines.insert(
            rootok + 1,
            format!(
                "auth [success=done default=ignore] {} {auth_args}",
                module().display()
            ),
        );
        let mut text = lines.join("\n");
        text.push('\n');
        text.push_str(&more.replace("MODULE", module().to_str().unwrap()));
        std::fs::write(path, text).unwrap();
    }

    /// Writes service `name` (MODULE stands for the module's path).
    fn service(&self, name: &str, text: &str) {
        std::fs::write(
            self.pam_d.join(name),
            text.replace("MODULE", module().to_str().unwrap()),
        )
        .unwrap();
    }

    /// Gives pxt-etl the password [`ETL_PASSWORD`] in a copy of /etc/shadow.
    fn with_etl_password(&mut self, dir: &Path) {
        let hash = Command::new("openssl")
            .args(["passwd", "-6", ETL_PASSWORD])
            .output()
            .expect("openssl (run `sudo tests/setup`)");
        assert!(hash.status.success());
        let hash = String::from_utf8(hash.stdout).unwrap();
        let shadow: String = std::fs::read_to_string("/etc/shadow")
            .unwrap()
            .lines()
            .map(|line| {
                let mut fields: Vec<&str> = line.split(':').collect();
                if fields[0] == ETL {
                    fields[1] = hash.trim();
                }
                fields.join(":") + "\n"
            })
            .collect();
        let path = dir.join("shadow");
        std::fs::write(&path, shadow).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        self.shadow = Some(path);
    }

    /// Runs `argv` in the namespace with `input` on stdin.
    fn run(&self, argv: &[&str], input: &str) -> Out {
        let path = |p: &Option<PathBuf>| {
            p.as_ref()
                .map(|p| p.to_str().unwrap().to_string())
                .unwrap_or_default()
        };
        let mut child = Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "/bin/sh",
                "-c",
                NAMESPACE,
                "sh",
            ])
            .args(argv)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("PXT_PAM_D", &self.pam_d)
            .env("PXT_BUS", path(&self.bus))
            .env("PXT_SHADOW", path(&self.shadow))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // A failed su may not read its input: a closed pipe is fine.
        let _ = child.stdin.take().unwrap().write_all(input.as_bytes());
        Out::from(child.wait_with_output().unwrap())
    }

    /// `su ARGS` run by `user` (real uid and groups of `user`, no tty), with `env`
    /// (`VAR=value` words) as its whole environment besides PATH.
    fn su_with_env(&self, user: &str, env: &[&str], args: &[&str], input: &str) -> Out {
        let user_arg = format!("--reuid={user}");
        let group_arg = format!("--regid={user}");
        let mut argv: Vec<&str> = env.to_vec();
        argv.extend(["setpriv", &user_arg, &group_arg, "--init-groups", "su"]);
        argv.extend_from_slice(args);
        self.run(&argv, input)
    }

    fn su(&self, user: &str, args: &[&str], input: &str) -> Out {
        self.su_with_env(user, &[], args, input)
    }

    /// `pamtester` as root.
    fn pamtester(&self, args: &[&str]) -> Out {
        let mut argv = vec!["pamtester", "-v"];
        argv.extend_from_slice(args);
        self.run(&argv, "")
    }

    /// `pamtester` run by `user` (not root).
    fn pamtester_as(&self, user: &str, args: &[&str]) -> Out {
        let user_arg = format!("--reuid={user}");
        let group_arg = format!("--regid={user}");
        let mut argv = vec![
            "setpriv",
            &user_arg,
            &group_arg,
            "--init-groups",
            "pamtester",
            "-v",
        ];
        argv.extend_from_slice(args);
        self.run(&argv, "")
    }
}

fn assert_switched(out: &Out, to: &str) {
    assert!(
        out.ok(),
        "su failed ({}): {}{}",
        out.code,
        out.stdout,
        out.stderr
    );
    assert_eq!(out.stdout.lines().next(), Some(to), "{out:?}");
}

fn assert_refused(out: &Out) {
    assert_eq!(out.code, 1, "su did not fail: {out:?}");
    assert!(
        out.stderr.contains("Authentication failure"),
        "{}",
        out.stderr
    );
}

/// Records of kind `event` whose fields include `fields`.
fn records(env: &Env, event: &str, fields: &[(&str, &str)]) -> Vec<Record> {
    env.audit_events(event)
        .into_iter()
        .filter(|r| {
            fields
                .iter()
                .all(|(k, v)| r.get(*k).map(String::as_str) == Some(*v))
        })
        .collect()
}

#[test]
fn su_needs_no_password_exactly_when_the_rules_allow_the_switch() {
    let env = Env::start("pam-su");
    let host = Host::new(&env, "pam.d");
    host.su_lines(
        "timeout=30",
        "account required MODULE\nsession required MODULE timeout=30\n",
    );
    let show = "id -un; printenv PROXYUSERD_LOGIN_USER";

    // alice → etl is allowed: no password (stdin is empty), for su and su -.
    let out = host.su(ALICE, &["-c", show, ETL], "");
    assert_switched(&out, ETL);
    assert_eq!(out.stdout.lines().nth(1), Some(ALICE), "{out:?}");
    assert_switched(&host.su(ALICE, &["-", ETL, "-c", "id -un"], ""), ETL);
    // By group: alice is in pxt-data, whose proxy group holds pxt-report.
    assert_switched(&host.su(ALICE, &["-c", "id -un", REPORT], ""), REPORT);

    // Each grant and each session is in the audit log, with both identities and where.
    let (root_uid, alice) = ("0", [("login", ALICE), ("proxy", ETL)]);
    for service in ["su", "su-l"] {
        let fields = [alice[0], alice[1], ("service", service)];
        let granted = records(&env, "pam-auth", &fields);
        assert_eq!(granted.len(), 1, "{service}: {:?}", env.audit());
        assert_eq!(granted[0]["rule"], "10-base.toml#1");
        assert_eq!(
            granted[0]["caller_uid"], root_uid,
            "the module asks as root"
        );
        let opened = records(&env, "pam-session-open", &fields);
        let closed = records(&env, "pam-session-close", &fields);
        assert_eq!((opened.len(), closed.len()), (1, 1), "{service}");
        assert_eq!(opened[0]["session"], closed[0]["session"]);
        assert!(opened[0]["seq"].parse::<u64>().unwrap() > granted[0]["seq"].parse().unwrap());
    }
    // ... and in journald.
    let journal = env.journal_audit(
        &[
            ("PROXYUSERD_EVENT", "pam-auth"),
            ("PROXYUSERD_LOGIN", ALICE),
        ],
        3,
    );
    assert_eq!(journal.len(), 3, "{journal:?}");
    let sessions = env.journal_audit(
        &[
            ("PROXYUSERD_EVENT", "pam-session-open"),
            ("PROXYUSERD_PROXY", REPORT),
        ],
        1,
    );
    assert_eq!(sessions[0]["PROXYUSERD_SERVICE"], "su");
    assert_eq!(sessions[0]["PROXYUSERD_LOGIN"], ALICE);

    // A granted switch is a proxy use without an association.
    assert_eq!(env.resolve(ALICE), (ALICE.to_string(), String::new()));
}

#[test]
fn su_falls_back_to_the_password_when_the_rules_say_no() {
    let env = Env::start("pam-su-no");
    let mut host = Host::new(&env, "pam.d");
    host.with_etl_password(&env.dir);
    host.su_lines("timeout=30", "");

    // No rule for carol, a deny rule for mallory, bob is no proxy user, root never is.
    for (user, target) in [(CAROL, ETL), (MALLORY, ETL), (ALICE, BOB), (ALICE, ROOT)] {
        assert_refused(&host.su(user, &["-c", "id -un", target], ""));
    }
    // The refusals fell through to the password: with it, carol becomes etl.
    assert_switched(
        &host.su(CAROL, &["-c", "id -un", ETL], &format!("{ETL_PASSWORD}\n")),
        ETL,
    );

    let denied = |login: &str, target: &str| {
        records(
            &env,
            "denied",
            &[
                ("login", login),
                ("proxy", target),
                ("operation", "Pam.Authorize"),
            ],
        )
    };
    assert_eq!(denied(CAROL, ETL).len(), 2, "{:?}", env.audit());
    assert!(denied(CAROL, ETL)[0]["reason"].contains("no rule allows it"));
    assert!(denied(MALLORY, ETL)[0]["reason"].contains("denied by rule"));
    assert!(denied(ALICE, BOB)[0]["reason"].contains("no rule allows it"));
    // A switch to root is not the module's business: nothing asked, nothing recorded.
    assert!(denied(ALICE, ROOT).is_empty());
    assert!(env.audit_events("pam-auth").is_empty());
    let journal = env.journal_audit(
        &[
            ("PROXYUSERD_EVENT", "denied"),
            ("PROXYUSERD_OPERATION", "Pam.Authorize"),
            ("PROXYUSERD_LOGIN", MALLORY),
        ],
        1,
    );
    assert_eq!(journal[0]["PROXYUSERD_SERVICE"], "su");
}

#[test]
fn a_reload_that_removes_the_rule_turns_a_granted_su_into_a_refused_one() {
    let env = Env::start("pam-reload");
    let host = Host::new(&env, "pam.d");
    host.su_lines("timeout=30", "");
    assert_switched(&host.su(ALICE, &["-c", "id -un", ETL], ""), ETL);
    env.reload_without_alice();
    assert_refused(&host.su(ALICE, &["-c", "id -un", ETL], ""));
    let denied = records(
        &env,
        "denied",
        &[
            ("login", ALICE),
            ("proxy", ETL),
            ("operation", "Pam.Authorize"),
        ],
    );
    assert_eq!(denied.len(), 1, "{:?}", env.audit());
    assert_eq!(env.audit_events("pam-auth").len(), 1);
}

#[test]
fn without_the_daemon_the_stack_goes_on_to_the_password() {
    let mut env = Env::start("pam-down");
    let mut host = Host::new(&env, "pam.d");
    host.with_etl_password(&env.dir);
    host.su_lines("timeout=30", "");
    let mut lenient_su = Host::new(&env, "pam.d-lenient");
    lenient_su.with_etl_password(&env.dir);
    lenient_su.su_lines("timeout=30 ignore_unavailable", "");
    // Whether the module said PAM_AUTHINFO_UNAVAIL or PAM_IGNORE: as the only `required`
    // module before pam_permit, only PAM_IGNORE lets the stack succeed.
    host.service(
        "pxt-strict",
        "auth required MODULE timeout=30\nauth required pam_permit.so\n",
    );
    host.service(
        "pxt-lenient",
        "auth required MODULE timeout=30 ignore_unavailable\nauth required pam_permit.so\n",
    );
    let password = format!("{ETL_PASSWORD}\n");
    assert_switched(&host.su(ALICE, &["-c", "id -un", ETL], ""), ETL);

    env.stop_daemon();
    // alice is allowed, but nobody can say so now: the password prompt decides.
    assert_refused(&host.su(ALICE, &["-c", "id -un", ETL], ""));
    assert_switched(&host.su(ALICE, &["-c", "id -un", ETL], &password), ETL);
    // The same with ignore_unavailable.
    assert_refused(&lenient_su.su(ALICE, &["-c", "id -un", ETL], ""));
    assert_switched(
        &lenient_su.su(ALICE, &["-c", "id -un", ETL], &password),
        ETL,
    );

    // No bus at all at the standard path: the same.
    let no_bus = Host {
        pam_d: host.pam_d.clone(),
        bus: None,
        shadow: host.shadow.clone(),
    };
    assert_refused(&no_bus.su(ALICE, &["-c", "id -un", ETL], ""));
    assert_switched(&no_bus.su(ALICE, &["-c", "id -un", ETL], &password), ETL);

    // The codes: PAM_AUTHINFO_UNAVAIL by default, PAM_IGNORE with ignore_unavailable.
    let strict = host.pamtester_as(ALICE, &["pxt-strict", ETL, "authenticate"]);
    assert!(!strict.ok(), "{strict:?}");
    let lenient = host.pamtester_as(ALICE, &["pxt-lenient", ETL, "authenticate"]);
    assert!(lenient.ok(), "{lenient:?}");
    let strict = no_bus.pamtester_as(ALICE, &["pxt-strict", ETL, "authenticate"]);
    assert!(!strict.ok(), "{strict:?}");
    let lenient = no_bus.pamtester_as(ALICE, &["pxt-lenient", ETL, "authenticate"]);
    assert!(lenient.ok(), "{lenient:?}");
}

#[test]
fn only_root_may_ask_the_daemon() {
    let env = Env::start("pam-root");
    let host = Host::new(&env, "pam.d");
    // Straight to the bus as alice: AccessDenied, and the attempt is recorded.
    for (method, args) in [
        ("Authorize", &[ALICE, ETL, "su", "", ""][..]),
        ("Account", &[ETL, "sshd", "", ""][..]),
    ] {
        let args: Vec<String> = args.iter().map(|a| format!("string:{a}")).collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = env.dbus_send(ALICE, &format!("org.proxyuserd1.Pam.{method}"), &args);
        assert!(
            !out.ok()
                && out
                    .stderr
                    .contains("org.freedesktop.DBus.Error.AccessDenied")
                && out.stderr.contains("not root"),
            "{out:?}"
        );
    }
    let denied = records(&env, "denied", &[("operation", "Pam.Authorize")]);
    assert_eq!(denied.len(), 1, "{:?}", env.audit());
    assert_eq!(denied[0]["caller"], ALICE);
    // Root gets the answer.
    let answer = env
        .call(
            ROOT,
            "Pam.Authorize",
            "sssss",
            &[ALICE, ETL, "su", "pts/3", ""],
        )
        .unwrap();
    assert_eq!(answer[0], true);

    // Through the module in a program that is not setuid: it reaches the bus as alice,
    // so the daemon does not answer and the stack goes on (here to pam_deny), although
    // the rules allow alice → etl.
    host.service(
        "pxt-user",
        "auth [success=done default=ignore] MODULE timeout=30\nauth required pam_deny.so\n",
    );
    let out = host.pamtester_as(ALICE, &["pxt-user", ETL, "authenticate"]);
    assert!(!out.ok(), "{out:?}");
    assert_eq!(
        records(
            &env,
            "denied",
            &[("operation", "Pam.Authorize"), ("caller", ALICE)]
        )
        .len(),
        2
    );
    // As root (the real uid of su is the requester: here root), nothing is asked.
    let out = host.pamtester(&["-I", "ruser=pxt-alice", "pxt-user", ETL, "authenticate"]);
    assert!(
        !out.ok(),
        "a root program's PAM_RUSER is not a requester: {out:?}"
    );
    assert_eq!(
        env.audit_events("pam-auth").len(),
        1,
        "only the busctl call as root"
    );
}

#[test]
fn direct_logins_to_proxy_users_are_refused_with_named_exceptions() {
    let env = Env::start("pam-account");
    let host = Host::new(&env, "pam.d");
    host.service(
        "pxt-login",
        "account required MODULE timeout=30\naccount required pam_permit.so\n\
         session required MODULE timeout=30\nsession required pam_permit.so\n",
    );
    host.service(
        "pxt-login-exempt",
        "account required MODULE timeout=30 exempt=pxt-report\naccount required pam_permit.so\n\
         session required MODULE timeout=30\nsession required pam_permit.so\n",
    );
    let account = |service: &str, user: &str| {
        host.pamtester(&[
            "-I",
            "rhost=198.51.100.7",
            "-I",
            "tty=pts/9",
            service,
            user,
            "acct_mgmt",
        ])
    };
    // etl (named) and report (by its group) are proxy users; alice and root are not.
    for user in [ETL, REPORT] {
        let out = account("pxt-login", user);
        assert!(!out.ok(), "{user}: {out:?}");
        assert!(out.stderr.contains("Permission denied"), "{out:?}");
    }
    assert!(account("pxt-login", ALICE).ok());
    assert!(account("pxt-login", ROOT).ok());
    assert!(account("pxt-login-exempt", REPORT).ok());
    assert!(!account("pxt-login-exempt", ETL).ok());

    let refused = records(
        &env,
        "denied",
        &[
            ("operation", "Pam.Account"),
            ("login", ETL),
            ("service", "pxt-login"),
        ],
    );
    assert_eq!(refused.len(), 1, "{:?}", env.audit());
    assert_eq!(refused[0]["rhost"], "198.51.100.7");
    assert_eq!(refused[0]["tty"], "pts/9");
    assert!(refused[0]["reason"].contains("never logged into directly"));
    let journal = env.journal_audit(
        &[
            ("PROXYUSERD_OPERATION", "Pam.Account"),
            ("PROXYUSERD_LOGIN", REPORT),
        ],
        1,
    );
    assert_eq!(journal[0]["PROXYUSERD_SERVICE"], "pxt-login");

    // The exempt direct login's session is a recorded proxy use; alice's is none.
    let session = |user: &str| {
        host.pamtester(&[
            "-I",
            "rhost=198.51.100.7",
            "-I",
            "tty=pts/9",
            "pxt-login-exempt",
            user,
            "acct_mgmt",
            "open_session",
            "close_session",
        ])
    };
    assert!(session(REPORT).ok());
    assert!(session(ALICE).ok());
    let opened = records(&env, "pam-session-open", &[]);
    assert_eq!(opened.len(), 1, "{opened:?}");
    let r = &opened[0];
    assert_eq!(
        (
            r["login"].as_str(),
            r["proxy"].as_str(),
            r["service"].as_str()
        ),
        (REPORT, REPORT, "pxt-login-exempt")
    );
    assert_eq!(
        (r["tty"].as_str(), r["rhost"].as_str()),
        ("pts/9", "198.51.100.7")
    );
    let closed = records(&env, "pam-session-close", &[("session", &r["session"])]);
    assert_eq!(closed.len(), 1);
}

/// A bus and a daemon run by the requester herself (carol), whose rules let carol become
/// etl, with her environment pointing at them.
struct OwnDaemon {
    dir: PathBuf,
    address: String,
    bus: Child,
    daemon: Child,
}

impl OwnDaemon {
    fn start(user: &str, test_dir: &Path) -> OwnDaemon {
        let (uid, gid) = ids(user);
        let dir = test_dir.join("own");
        std::fs::create_dir_all(dir.join("rules.d")).unwrap();
        std::fs::write(
            dir.join("rules.d/10-mine.toml"),
            format!("[[allow]]\nlogins = [\"{user}\"]\nproxies = [\"{ETL}\"]\n"),
        )
        .unwrap();
        let socket = dir.join("bus");
        std::fs::write(
            dir.join("bus.conf"),
            format!(
                "<busconfig><type>custom</type><auth>EXTERNAL</auth>\
                 <listen>unix:path={}</listen><policy context=\"default\">\
                 <allow user=\"*\"/><allow own=\"*\"/><allow send_destination=\"*\"/>\
                 <allow receive_type=\"method_call\"/><allow receive_type=\"method_return\"/>\
                 <allow receive_type=\"error\"/><allow receive_type=\"signal\"/>\
                 </policy></busconfig>",
                socket.display()
            ),
        )
        .unwrap();
        std::fs::write(
            dir.join("proxyuserd.toml"),
            format!(
                "state_dir = \"{d}/state\"\nrules_dir = \"{d}/rules.d\"\n",
                d = dir.display()
            ),
        )
        .unwrap();
        let chown = Command::new("chown")
            .arg("-R")
            .arg(format!("{uid}:{gid}"))
            .arg(&dir)
            .status()
            .unwrap();
        assert!(chown.success());
        let as_user = |program: &str| {
            let mut command = Command::new(program);
            command.uid(uid).gid(gid).env_clear().current_dir(&dir);
            command
        };
        let bus = as_user("dbus-daemon")
            .arg(format!("--config-file={}", dir.join("bus.conf").display()))
            .args(["--nofork", "--nopidfile"])
            .stderr(std::fs::File::create(test_dir.join("own-bus.log")).unwrap())
            .spawn()
            .unwrap();
        let address = format!("unix:path={}", socket.display());
        eventually("the requester's bus listens", || socket.exists());
        let daemon = as_user(bin("proxyuserd").to_str().unwrap())
            .arg("--config")
            .arg(dir.join("proxyuserd.toml"))
            .env("DBUS_SYSTEM_BUS_ADDRESS", &address)
            .stderr(std::fs::File::create(test_dir.join("own-daemon.log")).unwrap())
            .spawn()
            .unwrap();
        let own = OwnDaemon {
            dir,
            address,
            bus,
            daemon,
        };
        eventually("the requester's daemon takes its name", || {
            own.busctl(&[
                "call",
                "org.proxyuserd1",
                "/org/proxyuserd1",
                "org.freedesktop.DBus.Peer",
                "Ping",
            ])
            .ok()
        });
        own
    }

    /// busctl as root on the requester's bus.
    fn busctl(&self, args: &[&str]) -> Out {
        Out::from(
            Command::new("busctl")
                .arg(format!("--address={}", self.address))
                .args(args)
                .output()
                .unwrap(),
        )
    }
}

impl Drop for OwnDaemon {
    fn drop(&mut self) {
        for child in [&mut self.daemon, &mut self.bus] {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn su_asks_only_the_system_bus_never_one_the_requester_points_to() {
    let env = Env::start("pam-redirect");
    let host = Host::new(&env, "pam.d");
    host.su_lines("timeout=30", "session required MODULE timeout=30\n");
    let own = OwnDaemon::start(CAROL, &env.dir);

    // The requester's daemon would say yes to whoever asks as root, as the module does.
    let yes = own.busctl(&[
        "call",
        "org.proxyuserd1",
        "/org/proxyuserd1",
        "org.proxyuserd1.Pam",
        "Authorize",
        "sssss",
        CAROL,
        ETL,
        "su",
        "",
        "",
    ]);
    assert!(yes.ok() && yes.stdout.starts_with("bs true"), "{yes:?}");

    // Her environment names her bus in every way a D-Bus library would look.
    let env_words = [
        format!("DBUS_SYSTEM_BUS_ADDRESS={}", own.address),
        format!("DBUS_SESSION_BUS_ADDRESS={}", own.address),
        format!("DBUS_STARTER_ADDRESS={}", own.address),
        "DBUS_STARTER_BUS_TYPE=system".to_string(),
    ];
    let env_words: Vec<&str> = env_words.iter().map(String::as_str).collect();
    let out = host.su_with_env(CAROL, &env_words, &["-c", "id -un", ETL], "");
    assert_refused(&out);

    // The system bus's daemon was asked and said no; hers was never asked.
    let denied = records(
        &env,
        "denied",
        &[
            ("login", CAROL),
            ("proxy", ETL),
            ("operation", "Pam.Authorize"),
        ],
    );
    assert_eq!(denied.len(), 1, "{:?}", env.audit());
    let hers = own.busctl(&[
        "call",
        "org.proxyuserd1",
        "/org/proxyuserd1",
        "org.proxyuserd1.Admin",
        "AuditLog",
        "tu",
        "0",
        "0",
    ]);
    assert!(hers.ok(), "{hers:?}");
    assert_eq!(
        hers.stdout.matches("pam-auth").count(),
        1,
        "only the probe above: {}",
        hers.stdout
    );
}

#[test]
fn the_module_links_libpam_exports_the_hooks_and_can_start_no_thread() {
    let module = module();
    let dynamic = Command::new("readelf")
        .arg("-d")
        .arg(&module)
        .output()
        .expect("readelf (binutils)");
    let dynamic = String::from_utf8_lossy(&dynamic.stdout);
    assert!(dynamic.contains("[libpam.so.0]"), "{dynamic}");
    let symbols = |kind: &str| {
        let out = Command::new("nm")
            .args(["-D", kind])
            .arg(&module)
            .output()
            .expect("nm");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                l.split_whitespace()
                    .last()
                    .map(|s| s.split('@').next().unwrap().to_string())
            })
            .collect::<Vec<String>>()
    };
    let exported = symbols("--defined-only");
    for hook in [
        "pam_sm_authenticate",
        "pam_sm_setcred",
        "pam_sm_acct_mgmt",
        "pam_sm_open_session",
        "pam_sm_close_session",
        "pam_sm_chauthtok",
    ] {
        assert!(exported.iter().any(|s| s == hook), "{hook} not exported");
    }
    // Nothing that could leave a thread, a child or a signal handler in su or sshd.
    let imported = symbols("--undefined-only");
    for forbidden in [
        "pthread_create",
        "fork",
        "clone",
        "sigaction",
        "signal",
        "system",
        "popen",
    ] {
        assert!(
            !imported.iter().any(|s| s == forbidden),
            "the module imports {forbidden}"
        );
    }
    assert!(imported.iter().any(|s| s == "pam_syslog"));
}
