//! Directory-backed identities: users and groups served by a real slapd through nslcd
//! (NSS `passwd: files ldap`, `group: files ldap`), visible only inside each test's own
//! namespaces (see `hosts/mod.rs`). Rules name LDAP groups, jobs run with LDAP groups,
//! directory changes revoke, and a directory that stops answering fails closed.

mod common;
mod hosts;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::PATIENCE;

use hosts::{HostOptions, NSLCD_TIMEOUTS, Network, wait_for};

/// Logins of the data-eng group may proxy to the members of svc-accounts.
const GROUP_RULES: &str = r#"
[proxy_users]
groups = ["svc-accounts"]

[[allow]]
login_groups = ["data-eng"]
proxy_groups = ["svc-accounts"]
"#;

fn options<'a>(config: &'a str, nslcd: &'a str) -> HostOptions<'a> {
    HostOptions {
        config,
        nslcd,
        rules: &[("10-groups.toml", GROUP_RULES)],
        journal: false,
    }
}

#[test]
fn ldap_groups_decide_on_both_sides_and_jobs_run_with_ldap_groups() {
    let network = Network::start("ldap-decide");
    let host = hosts::Host::start(&network, "ldap1", options("", NSLCD_TIMEOUTS));

    // The accounts exist only in the directory, and only this host sees them.
    assert_eq!(
        host.root(&["id", "etl"]).trim(),
        "uid=71101(etl) gid=71101(services) groups=71101(services),71302(svc-accounts),71303(etl-operators)"
    );
    assert!(nix::unistd::User::from_name("etl").unwrap().is_none());

    let rule = "10-groups.toml#1";
    for (login, proxy, allowed, reason) in [
        ("alice", "etl", true, rule),
        ("alice", "reporting", true, rule),
        ("bob", "etl", true, rule),
        // carol is not in data-eng.
        ("carol", "etl", false, "no rule allows"),
        // bob is not in svc-accounts.
        ("alice", "bob", false, "no rule allows"),
        // etl is proxy-type through its LDAP group: it never proxies.
        ("etl", "reporting", false, "proxy user"),
    ] {
        let (got, why) = host.check(login, proxy);
        assert_eq!(got, allowed, "{login} → {proxy}: {why}");
        assert!(why.contains(reason), "{login} → {proxy}: {why:?}");
    }
    let listed = host.ctl_json("alice", &["proxy", "list"]);
    assert_eq!(listed, serde_json::json!(["etl", "reporting"]));
    host.ctl_err(
        "carol",
        &["proxy", "set", "etl"],
        "org.proxyuserd1.Error.NotAllowed",
    );

    // alice works as etl: the job has etl's LDAP groups, primary first.
    host.ctl_ok("alice", &["proxy", "set", "etl"]);
    let out = host.ctl("alice", &["exec", "--", "/usr/bin/id"]);
    assert!(out.ok(), "{}", out.stderr);
    assert_eq!(
        out.stdout.trim(),
        "uid=71101(etl) gid=71101(services) groups=71101(services),71302(svc-accounts),71303(etl-operators)"
    );
    let starts: Vec<_> = host
        .audit()
        .into_iter()
        .filter(|r| r["event"] == "exec-start")
        .collect();
    assert_eq!(starts.len(), 1, "{starts:?}");
    assert_eq!(
        (
            starts[0]["login"].as_str(),
            starts[0]["effective"].as_str(),
            starts[0]["caller_uid"].as_str()
        ),
        ("alice", "etl", "71001")
    );
}

/// The documented bound on how long a directory change takes to revoke, with the
/// settings below: `nss_cache_secs` + `revalidate_secs`.
const CACHE_SECS: u64 = 2;
const REVALIDATE_SECS: u64 = 3;

/// Slack on top of a documented bound for a loaded machine (a bounded wait, not a
/// speed assertion: the event is expected long before).
const SLACK: Duration = Duration::from_secs(20);

#[test]
fn removing_a_login_from_its_ldap_group_revokes_its_proxy_and_tickets_within_the_bound() {
    let network = Network::start("ldap-revoke");
    let config = format!("nss_cache_secs = {CACHE_SECS}\nrevalidate_secs = {REVALIDATE_SECS}\n");
    let host = hosts::Host::start(&network, "ldap2", options(&config, NSLCD_TIMEOUTS));

    // The gateway signs alice in and she picks etl; bob proxies to etl himself.
    let ticket = host
        .call("gateway", "Sessions.OpenSession", "s", &["alice"])
        .unwrap()[0]
        .as_str()
        .unwrap()
        .to_string();
    let proxy_ticket = host
        .call(
            "gateway",
            "Sessions.OpenProxySession",
            "ss",
            &[&ticket, "etl"],
        )
        .unwrap()[0]
        .as_str()
        .unwrap()
        .to_string();
    let resolve_ticket = |t: &str| host.call("gateway", "Sessions.ResolveTicket", "s", &[t]);
    let as_etl = serde_json::json!(["alice", "etl", "etl", 71101, 71101]);
    assert_eq!(
        serde_json::Value::from(resolve_ticket(&proxy_ticket).unwrap()),
        as_etl
    );
    host.ctl_ok("bob", &["proxy", "set", "etl"]);

    // An admin takes alice out of data-eng in the directory; nobody tells proxyuserd.
    let changed = Instant::now();
    network.remove_from_group("alice", "data-eng");
    let bound = Duration::from_secs(CACHE_SECS + REVALIDATE_SECS);
    let revoked = wait_for(bound + SLACK, || {
        host.audit()
            .into_iter()
            .find(|r| r["event"] == "proxy-revoked")
    })
    .unwrap_or_else(|| panic!("no proxy-revoked within {:?}", bound + SLACK));
    eprintln!(
        "alice's association was revoked {:.1} s after the ldapmodify (bound {} s)",
        changed.elapsed().as_secs_f64(),
        bound.as_secs()
    );
    assert_eq!(
        (revoked["login"].as_str(), revoked["proxy"].as_str()),
        ("alice", "etl")
    );
    assert!(
        revoked["reason"].contains("no rule allows"),
        "{}",
        revoked["reason"]
    );
    assert!(
        !revoked["ended_sessions"].is_empty(),
        "the proxy ticket ended with it: {revoked:?}"
    );

    // The proxy ticket is gone, the login ticket is alice alone, bob is untouched.
    let err = resolve_ticket(&proxy_ticket).unwrap_err();
    assert!(err.contains("session"), "{err}");
    assert_eq!(
        serde_json::Value::from(resolve_ticket(&ticket).unwrap()),
        serde_json::json!(["alice", "alice", "", 71001, 71001])
    );
    let bob = host.ctl_json("root", &["resolve", "bob"]);
    assert_eq!(bob["proxy"], "etl");
    let (allowed, reason) = host.check("alice", "etl");
    assert!(!allowed, "{reason}");
    host.ctl_err(
        "alice",
        &["proxy", "set", "etl"],
        "org.proxyuserd1.Error.NotAllowed",
    );
}

/// How long a lookup waits for the directory in the outage test.
const NSS_TIMEOUT: &str = "1.5 s";

/// nslcd that waits long for a directory that does not answer (the worst case: the
/// daemon's own bound has to hold), and reconnects quickly once it is back.
const NSLCD_PATIENT: &str =
    "bind_timelimit 30\ntimelimit 30\nreconnect_sleeptime 1\nreconnect_retrytime 2\n";

#[test]
fn a_directory_that_stops_answering_fails_decisions_closed_within_the_timeout_and_they_return_with_it()
 {
    let mut network = Network::start("ldap-down");
    // A long cache: what the daemon already knows (root, the caller here) keeps being
    // served while the directory is away; `rules reload` forgets it between phases.
    let config = "nss_cache_secs = 600\nrevalidate_secs = 3600\nnss_timeout_ms = 1500\n";
    let host = hosts::Host::start(&network, "ldap3", options(config, NSLCD_PATIENT));
    let lookups = |host: &hosts::Host| {
        host.daemon_threads()
            .iter()
            .filter(|t| *t == "nss-lookup")
            .count()
    };
    let check_fails = |login: &str, proxy: &str| {
        let out = host.ctl("root", &["check", login, proxy]);
        assert!(
            !out.ok() && out.error_name() == Some("org.freedesktop.DBus.Error.Failed"),
            "check {login} {proxy} while the directory is away: {} {}",
            out.stdout,
            out.stderr
        );
        out.stderr
    };

    // 1. The directory hangs (slapd frozen: connections accepted, never answered).
    // Many decisions at once, each needing it: every one fails with the reason, none
    // waits for nslcd's 30 s, and the threads left waiting on NSS stay bounded.
    host.ctl_ok("root", &["status"]);
    network.freeze_directory();
    let children: Vec<_> = (0..24)
        .map(|_| {
            host.command("root", common::bin("proxyuserctl"))
                .args(["check", "bob", "reporting"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = common::Out::from(child.wait_with_output().unwrap());
        assert_eq!(
            out.error_name(),
            Some("org.freedesktop.DBus.Error.Failed"),
            "check bob reporting with the directory frozen: {} {}",
            out.stdout,
            out.stderr
        );
        assert!(
            out.stderr.contains(&format!(
                "user database lookup of reporting failed: the user directory did not answer within {NSS_TIMEOUT}"
            )),
            "{}",
            out.stderr
        );
    }
    // nslcd still waits for slapd (30 s): so do the daemon's lookup threads, at most 16.
    let waiting = lookups(&host);
    eprintln!("{waiting} lookup threads wait on the frozen directory");
    assert!(
        (1..=16).contains(&waiting),
        "{waiting} lookup threads wait on the directory"
    );
    // The 24 decisions about one account shared lookups, so slots are left: the next
    // decision (another account) waits its own timeout and fails, saying why. (That
    // lookups past the 16 fail at once is a unit test of the account cache.)
    let err = check_fails("alice", "etl");
    assert!(
        err.contains(&format!("did not answer within {NSS_TIMEOUT}")),
        "{err}"
    );
    // Calls that need no lookup are served meanwhile.
    host.ctl_ok("root", &["status"]);
    assert_eq!(
        host.ctl_json("root", &["rules", "list"])
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert!(
        lookups(&host) >= 1,
        "the directory answered: the test proves nothing"
    );
    // Nothing was set: a failed lookup is never an allow.
    host.ctl_err(
        "root",
        &["proxy", "set", "reporting", "--login", "bob"],
        "org.freedesktop.DBus.Error.Failed",
    );

    // 2. The directory answers again: the stuck lookups end, decisions are right.
    network.thaw_directory();
    assert!(
        wait_for(PATIENCE, || (lookups(&host) == 0).then_some(())).is_some(),
        "lookup threads still waiting after the directory came back"
    );
    let (allowed, reason) = host.check("bob", "reporting");
    assert!(allowed, "{reason}");
    assert_eq!(host.ctl_json("root", &["resolve", "bob"])["proxy"], "");

    // 3. The directory goes down (slapd gone: connections refused), with a fresh cache.
    host.ctl_ok("root", &["rules", "reload"]);
    host.ctl_ok("root", &["status"]);
    network.stop_directory();
    let err = check_fails("alice", "etl");
    assert!(
        err.contains("user database lookup of etl failed: the user directory"),
        "{err}"
    );
    let err = check_fails("carol", "etl");
    assert!(err.contains("the user directory"), "{err}");

    // 4. It comes back: decisions follow the directory again once nslcd reconnects.
    network.start_directory();
    let back = wait_for(PATIENCE, || {
        let out = host.ctl("root", &["--json", "check", "alice", "etl"]);
        out.ok().then_some(out.stdout)
    })
    .expect("decisions never came back with the directory");
    let back: serde_json::Value = serde_json::from_str(&back).unwrap();
    assert_eq!(back["allowed"], true, "{back}");
    let (allowed, reason) = host.check("carol", "etl");
    assert!(!allowed && reason.contains("no rule allows"), "{reason}");
}
