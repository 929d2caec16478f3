//! Server-side login and proxy tickets for web gateways.

mod common;

use std::time::Duration;

use common::*;

const LOGIN_COOKIE: &str = "linkis_user_session_ticket_id_v1";
const PROXY_COOKIE: &str = "linkis_user_session_proxy_ticket_id_v1";

fn open(env: &Env, login: &str) -> String {
    let reply = env
        .call(GATEWAY, "Sessions.OpenSession", "s", &[login])
        .unwrap();
    reply[0].as_str().unwrap().to_string()
}

fn open_proxy(env: &Env, ticket: &str, proxy: &str) -> Result<String, String> {
    env.call(GATEWAY, "Sessions.OpenProxySession", "ss", &[ticket, proxy])
        .map(|r| r[0].as_str().unwrap().to_string())
}

/// (login, effective, proxy, uid, gid) or the error text.
fn resolve(env: &Env, ticket: &str) -> Result<(String, String, String, u64, u64), String> {
    env.call(GATEWAY, "Sessions.ResolveTicket", "s", &[ticket])
        .map(tuple)
}

fn resolve_cookies(env: &Env, header: &str) -> Result<(String, String, String, u64, u64), String> {
    env.call(GATEWAY, "Sessions.ResolveCookies", "s", &[header])
        .map(tuple)
}

fn tuple(r: Vec<serde_json::Value>) -> (String, String, String, u64, u64) {
    let s = |i: usize| r[i].as_str().unwrap().to_string();
    (
        s(0),
        s(1),
        s(2),
        r[3].as_u64().unwrap(),
        r[4].as_u64().unwrap(),
    )
}

fn error_name(env: &Env, user: &str, method: &str, args: &[&str]) -> String {
    let out = env.dbus_send(user, &format!("org.proxyuserd1.Sessions.{method}"), args);
    assert!(!out.ok(), "{method} succeeded: {}", out.stdout);
    out.stderr
}

#[test]
fn a_gateway_resolves_both_cookies_to_the_login_and_its_proxy() {
    let env = Env::start("sessions");
    let ticket = open(&env, ALICE);
    assert_eq!(ticket.len(), 43, "256 bits as unpadded base64url");
    assert!(
        ticket
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    );
    let proxy_ticket = open_proxy(&env, &ticket, ETL).unwrap();
    assert_ne!(ticket, proxy_ticket);

    let header = format!(
        "theme=dark; {LOGIN_COOKIE}={ticket};  lang=\"en\" ;{PROXY_COOKIE}=\"{proxy_ticket}\"; empty="
    );
    let (etl_uid, etl_gid) = ids(ETL);
    let want = (
        ALICE.to_string(),
        ETL.to_string(),
        ETL.to_string(),
        etl_uid as u64,
        etl_gid as u64,
    );
    assert_eq!(resolve_cookies(&env, &header).unwrap(), want);
    assert_eq!(resolve(&env, &proxy_ticket).unwrap(), want);
    // The login ticket alone is the login alone.
    let (alice_uid, alice_gid) = ids(ALICE);
    let alone = (
        ALICE.to_string(),
        ALICE.to_string(),
        String::new(),
        alice_uid as u64,
        alice_gid as u64,
    );
    assert_eq!(resolve(&env, &ticket).unwrap(), alone);
    assert_eq!(
        resolve_cookies(&env, &format!("{LOGIN_COOKIE}={ticket}")).unwrap(),
        alone
    );
    // Opening the proxy session set alice's association (one proxy per login).
    assert_eq!(env.resolve(ALICE), (ETL.to_string(), ETL.to_string()));

    let opened = env.audit_events("session-open");
    assert_eq!(opened.len(), 1);
    assert_eq!(opened[0]["login"], ALICE);
    assert_eq!(opened[0]["caller"], GATEWAY);
    let set = env.audit_events("proxy-set");
    assert_eq!(set.len(), 1);
    assert_eq!(
        (set[0]["login"].as_str(), set[0]["proxy"].as_str()),
        (ALICE, ETL)
    );
    assert_eq!(set[0]["login_session"], opened[0]["session"]);
    assert_eq!(set[0]["session"].len(), 16);

    // Admins see the sessions, never the tickets, and can close them.
    let list = env.ctl_json(ADMIN, &["sessions"]);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert!(
        list.iter()
            .any(|s| s["kind"] == "proxy" && s["proxy"] == ETL && s["login"] == ALICE)
    );
    let text = env.ctl_ok(ADMIN, &["sessions"]);
    assert!(!text.contains(&ticket) && !text.contains(&proxy_ticket));
    env.ctl_err(
        ALICE,
        &["sessions"],
        "org.freedesktop.DBus.Error.AccessDenied",
    );
    let login_id = opened[0]["session"].clone();
    env.ctl_ok(ADMIN, &["sessions", "close", &login_id]);
    assert!(resolve(&env, &proxy_ticket).is_err());
    assert!(
        env.ctl_json(ADMIN, &["sessions"])
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[test]
fn untrusted_callers_forged_tickets_and_foreign_proxy_tickets_get_nothing() {
    let env = Env::start("sessbad");
    let err = error_name(&env, ALICE, "OpenSession", &["string:pxt-alice"]);
    assert!(
        err.contains("org.freedesktop.DBus.Error.AccessDenied"),
        "{err}"
    );
    assert!(
        err.contains("is not a trusted caller (gateway): OpenSession is for gateways"),
        "{err}"
    );
    let alice = open(&env, ALICE);
    let err = error_name(&env, ALICE, "ResolveTicket", &[&format!("string:{alice}")]);
    assert!(
        err.contains("AccessDenied"),
        "a ticket is no use to an untrusted caller: {err}"
    );

    let forged = [
        alice[..42].to_string(),
        // The last character changed (to one it is not).
        format!(
            "{}{}",
            &alice[..42],
            if alice.ends_with('A') { 'B' } else { 'A' }
        ),
        "A".repeat(43),
        String::new(),
        format!("{alice}{alice}"),
    ];
    for ticket in &forged {
        let err = error_name(
            &env,
            GATEWAY,
            "ResolveTicket",
            &[&format!("string:{ticket}")],
        );
        assert!(
            err.contains("org.proxyuserd1.Error.NoSuchSession"),
            "{ticket}: {err}"
        );
    }

    // alice's proxy ticket with bob's login cookie does not give bob alice's proxy.
    let alice_proxy = open_proxy(&env, &alice, ETL).unwrap();
    let bob = open(&env, BOB);
    let header = format!("{LOGIN_COOKIE}={bob}; {PROXY_COOKIE}={alice_proxy}");
    let got = resolve_cookies(&env, &header).unwrap();
    assert_eq!(
        (got.0.as_str(), got.1.as_str(), got.2.as_str()),
        (BOB, BOB, "")
    );
    let denied = env.audit_events("denied");
    let foreign = denied
        .iter()
        .find(|r| r["operation"] == "ResolveCookies")
        .expect("denied resolution recorded");
    assert_eq!(foreign["login"], BOB);
    // A proxy ticket cannot open a proxy session, nor can a login the rules refuse.
    let err = open_proxy(&env, &alice_proxy, ETL).unwrap_err();
    assert!(err.contains("takes a login ticket"), "{err}");
    let carol = open(&env, CAROL);
    let err = error_name(
        &env,
        GATEWAY,
        "OpenProxySession",
        &[&format!("string:{carol}"), "string:pxt-etl"],
    );
    assert!(err.contains("org.proxyuserd1.Error.NotAllowed"), "{err}");
    // Unknown tickets cannot be closed either.
    let err = error_name(&env, GATEWAY, "CloseSession", &["string:nope"]);
    assert!(err.contains("NoSuchSession"), "{err}");
}

#[test]
fn proxy_tickets_end_with_their_rule_their_login_session_and_their_time() {
    let env = Env::start("sessend");
    // Removing the rule ends the proxy ticket at once.
    let alice = open(&env, ALICE);
    let proxy = open_proxy(&env, &alice, ETL).unwrap();
    env.reload_without_alice();
    let err = resolve(&env, &proxy).unwrap_err();
    assert!(err.contains("no such session"), "{err}");
    assert_eq!(
        resolve(&env, &alice).unwrap().1,
        ALICE,
        "the login ticket still works"
    );
    let revoked = env.audit_events("proxy-revoked");
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0]["ended_sessions"].len(), 16);

    // Closing the login ticket ends its proxy tickets.
    let bob = open(&env, BOB);
    let bob_proxy = open_proxy(&env, &bob, ETL).unwrap();
    assert!(resolve(&env, &bob_proxy).is_ok());
    env.call(GATEWAY, "Sessions.CloseSession", "s", &[&bob])
        .unwrap();
    assert!(resolve(&env, &bob).is_err());
    assert!(resolve(&env, &bob_proxy).is_err());
    let closed = env.audit_events("session-close");
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0]["sessions"].split(',').count(), 2);

    // A proxy ticket also ends when the login's association moves elsewhere.
    let bob = open(&env, BOB);
    let bob_proxy = open_proxy(&env, &bob, ETL).unwrap();
    env.ctl_ok(BOB, &["proxy", "set", REPORT]);
    assert!(resolve(&env, &bob_proxy).is_err());
}

#[test]
fn sessions_expire_by_ttl_and_idle_time_also_across_a_restart() {
    let mut env = Env::with(
        "sessexpiry",
        "[sessions]\nttl_secs = 4\nidle_secs = 2\n",
        &[("10-base.toml", BASE_RULES)],
    );
    // Idle: unused for 2 s.
    let idle = open(&env, ALICE);
    std::thread::sleep(Duration::from_millis(2300));
    assert!(resolve(&env, &idle).is_err(), "idle session ended");
    // TTL: used every second, still over after 4 s.
    let busy = open(&env, BOB);
    let busy_proxy = open_proxy(&env, &busy, ETL).unwrap();
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_millis(3500) {
        assert!(
            resolve(&env, &busy_proxy).is_ok(),
            "renewed by use at {:?}",
            start.elapsed()
        );
        std::thread::sleep(Duration::from_millis(700));
    }
    std::thread::sleep(Duration::from_millis(700));
    assert!(resolve(&env, &busy).is_err(), "past its ttl");
    assert!(resolve(&env, &busy_proxy).is_err());
    eventually("expired sessions are purged with a record", || {
        env.audit_events("session-expired").len() >= 3
    });

    // Sessions survive a restart, and expire while the daemon is down.
    let kept = open(&env, CAROL);
    env.restart();
    assert!(resolve(&env, &kept).is_ok(), "a session survives a restart");
    env.stop_daemon();
    std::thread::sleep(Duration::from_millis(2300));
    env.start_daemon();
    assert!(
        resolve(&env, &kept).is_err(),
        "it idled out while the daemon was down"
    );
    let expired = env.audit_events("session-expired");
    assert!(expired.iter().any(|r| r["login"] == CAROL), "{expired:?}");
}

#[test]
fn the_store_and_the_logs_never_hold_a_ticket() {
    let mut env = Env::start("sessclear");
    let ticket = open(&env, ALICE);
    let proxy = open_proxy(&env, &ticket, ETL).unwrap();
    resolve(&env, &proxy).unwrap();
    resolve_cookies(
        &env,
        &format!("{LOGIN_COOKIE}={ticket}; {PROXY_COOKIE}={proxy}"),
    )
    .unwrap();
    let _ = resolve(&env, "forged-ticket-value-that-is-not-a-session");
    env.call(GATEWAY, "Sessions.CloseSession", "s", &[&proxy])
        .unwrap();
    assert!(!env.audit().iter().any(|r| {
        r.values()
            .any(|v| v.contains(&ticket) || v.contains(&proxy))
    }));
    assert_eq!(env.stop_daemon(), 0);

    let mut files = vec![env.state_dir()];
    let mut scanned = 0;
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        scanned += bytes.len();
        for secret in [&ticket, &proxy] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{} holds a ticket in clear",
                path.display()
            );
        }
    }
    assert!(scanned > 0);
    // Nor the journal (operational log and audit records).
    for pid in &env.pids {
        let out = std::process::Command::new("journalctl")
            .args(["-o", "json", "--no-pager"])
            .arg(format!("_PID={pid}"))
            .output()
            .unwrap();
        let journal = String::from_utf8_lossy(&out.stdout);
        assert!(
            journal.contains("session-open"),
            "the journal has the records"
        );
        assert!(
            !journal.contains(&ticket) && !journal.contains(&proxy),
            "a ticket reached the journal"
        );
    }
}

#[test]
fn malformed_cookie_headers_are_refused_or_find_no_session() {
    let env = Env::start("sesscookies");
    let ticket = open(&env, ALICE);
    for header in [
        "",
        "no-equals-sign",
        ";;;",
        "=value",
        &format!("{LOGIN_COOKIE}="),
    ] {
        let err = resolve_cookies(&env, header).unwrap_err();
        assert!(err.contains("no such session"), "{header:?}: {err}");
    }
    let big = format!("{LOGIN_COOKIE}={ticket}; pad={}", "x".repeat(100_000));
    let out = env.dbus_send(
        GATEWAY,
        "org.proxyuserd1.Sessions.ResolveCookies",
        &[&format!("string:{big}")],
    );
    assert!(
        out.stderr
            .contains("org.freedesktop.DBus.Error.InvalidArgs"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("longer than 65536"), "{}", out.stderr);
    // 1 MiB does not fit a command line: a python3-dbus client sends it.
    let script = "import dbus, sys\n\
                  bus = dbus.bus.BusConnection(sys.argv[1])\n\
                  s = dbus.Interface(bus.get_object('org.proxyuserd1', '/org/proxyuserd1'), 'org.proxyuserd1.Sessions')\n\
                  try:\n    s.ResolveCookies(sys.argv[2] + 'x' * (1024 * 1024))\nexcept dbus.DBusException as e:\n    print(e.get_dbus_name(), e.get_dbus_message())\n";
    let out = env
        .command_as(GATEWAY, "/usr/bin/python3")
        .args([
            "-c",
            script,
            &env.address,
            &format!("{LOGIN_COOKIE}={ticket}; pad="),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("org.freedesktop.DBus.Error.InvalidArgs"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("longer than 65536"),
        "1 MiB header: {stdout}"
    );
    let err =
        resolve_cookies(&env, &format!("{LOGIN_COOKIE}={ticket}\r\nX-Injected: 1")).unwrap_err();
    assert!(err.contains("control character"), "{err}");
    let out = env.dbus_send(
        GATEWAY,
        "org.proxyuserd1.Sessions.ResolveCookies",
        &["array:byte:108,105,110,107,255,254"],
    );
    assert!(
        out.stderr
            .contains("org.freedesktop.DBus.Error.InvalidArgs"),
        "{}",
        out.stderr
    );
    // Still serving.
    assert_eq!(
        resolve_cookies(&env, &format!("{LOGIN_COOKIE}={ticket}"))
            .unwrap()
            .0,
        ALICE
    );
}
