//! Directory-backed identities: users and groups served by a real slapd through nslcd
//! (NSS `passwd: files ldap`, `group: files ldap`), visible only inside each test's own
//! namespaces (see `hosts/mod.rs`). Rules name LDAP groups, jobs run with LDAP groups,
//! directory changes revoke, and a directory that stops answering fails closed.

mod common;
mod hosts;

use std::time::{Duration, Instant};

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
