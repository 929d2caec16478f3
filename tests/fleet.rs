//! A simulated fleet: three hosts (each its own namespaces, system bus, journald,
//! proxyuserd and state) sharing one directory (slapd, read through each host's nslcd)
//! and one central journal collector (systemd-journal-remote; each host forwards with
//! systemd-journal-upload). One rule file is pushed to all three the way configuration
//! management does it; see docs/fleet.md. Built by `hosts/mod.rs`.

mod common;
mod hosts;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::{PATIENCE, repo};
use hosts::{Host, HostOptions, NSLCD_TIMEOUTS, Network, wait_for};

type Record = BTreeMap<String, String>;

const HOSTS: [&str; 3] = ["fleet-a", "fleet-b", "fleet-c"];
const RULE_FILE: &str = "20-data-platform.toml";
const CACHE_SECS: u64 = 2;
const REVALIDATE_SECS: u64 = 3;

/// An audit record as the collector holds it, turned back into the record it copies:
/// every `PROXYUSERD_<KEY>` field is the record's `key`.
fn record_of(entry: &serde_json::Value) -> Record {
    entry
        .as_object()
        .unwrap()
        .iter()
        // PROXYUSERD_CHAIN names the chain a copy belongs to; it is not in the record.
        .filter(|(k, _)| k.as_str() != "PROXYUSERD_CHAIN")
        .filter_map(|(k, v)| {
            let key = k.strip_prefix("PROXYUSERD_")?.to_ascii_lowercase();
            Some((
                key,
                v.as_str().unwrap_or_else(|| panic!("{k}: {v}")).to_string(),
            ))
        })
        .collect()
}

#[test]
fn three_hosts_share_the_directory_pushed_rules_and_a_central_audit_journal() {
    let started = Instant::now();
    let mut network = Network::start("fleet");
    let collector = network.start_collector();
    let config = format!("nss_cache_secs = {CACHE_SECS}\nrevalidate_secs = {REVALIDATE_SECS}\n");
    let hosts: Vec<Host> = HOSTS
        .iter()
        .map(|name| {
            Host::start(
                &network,
                name,
                HostOptions {
                    config: &config,
                    nslcd: NSLCD_TIMEOUTS,
                    rules: &[],
                    journal: true,
                },
            )
        })
        .collect();

    // Configuration management pushes the rules: a broken version fails the validate
    // step on every host and is not installed …
    let rules = std::fs::read_to_string(repo().join("examples/fleet").join(RULE_FILE)).unwrap();
    let broken = rules.replace("proxy_groups", "proxy_gruops");
    for host in &hosts {
        let err = host.push_rules(RULE_FILE, &broken).unwrap_err();
        assert!(
            err.contains(&format!("{RULE_FILE}.new:12:1")) && err.contains("proxy_gruops"),
            "{err}"
        );
        assert!(
            host.ctl_json("root", &["rules", "list"])
                .as_array()
                .unwrap()
                .is_empty()
        );
    }
    // … the fixed one checks, is installed and reloaded on all three.
    for host in &hosts {
        host.push_rules(RULE_FILE, &rules).unwrap();
    }
    // The same rules (id and text) everywhere; only the path of the file is the host's.
    let listed: Vec<Vec<(String, String)>> = hosts
        .iter()
        .map(|h| {
            let rules = h.ctl_json("root", &["rules", "list"]);
            rules
                .as_array()
                .unwrap()
                .iter()
                .map(|r| (r["id"].to_string(), r["rule"].to_string()))
                .collect()
        })
        .collect();
    assert_eq!(listed[0].len(), 1, "{:?}", listed[0]);
    assert!(listed.iter().all(|l| l == &listed[0]), "{listed:?}");

    // The same decision on every host, from the same directory groups.
    for (login, proxy, allowed) in [
        ("alice", "etl", true),
        ("bob", "reporting", true),
        ("carol", "etl", false),
        ("alice", "bob", false),
        ("etl", "reporting", false),
    ] {
        let answers: Vec<(bool, String)> = hosts.iter().map(|h| h.check(login, proxy)).collect();
        assert_eq!(answers[0].0, allowed, "{login} → {proxy}: {answers:?}");
        assert!(
            answers.iter().all(|a| a == &answers[0]),
            "{login} → {proxy}: {answers:?}"
        );
    }

    // alice works on every host, each time differently; associations, jobs and tickets
    // are per host.
    let (a, b, c) = (&hosts[0], &hosts[1], &hosts[2]);
    let ticket = a
        .call("gateway", "Sessions.OpenSession", "s", &["alice"])
        .unwrap()[0]
        .as_str()
        .unwrap()
        .to_string();
    let proxy_ticket = a
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
    b.ctl_ok("alice", &["proxy", "set", "etl"]);
    let out = b.ctl("alice", &["exec", "--", "/usr/bin/id", "-un"]);
    assert_eq!((out.code, out.stdout.trim()), (0, "etl"), "{}", out.stderr);
    c.ctl_ok(
        "gateway",
        &["proxy", "set", "--login", "alice", "reporting"],
    );
    a.ctl_ok("bob", &["proxy", "set", "etl"]);
    assert_eq!(b.ctl_json("root", &["resolve", "bob"])["proxy"], "");
    assert!(
        b.call("gateway", "Sessions.ResolveTicket", "s", &[&proxy_ticket])
            .is_err(),
        "a ticket of fleet-a resolved on fleet-b"
    );

    // One change in the directory revokes alice on all three hosts.
    let changed = Instant::now();
    network.remove_from_group("alice", "data-eng");
    let bound = Duration::from_secs(CACHE_SECS + REVALIDATE_SECS);
    for host in &hosts {
        let revoked = wait_for(bound + Duration::from_secs(20), || {
            host.audit()
                .into_iter()
                .find(|r| r["event"] == "proxy-revoked" && r["login"] == "alice")
        })
        .unwrap_or_else(|| panic!("{}: alice not revoked", host.name));
        assert!(revoked["reason"].contains("no rule allows"), "{revoked:?}");
    }
    eprintln!(
        "alice revoked on all three hosts {:.1} s after the ldapmodify (bound {} s)",
        changed.elapsed().as_secs_f64(),
        bound.as_secs()
    );
    assert!(
        a.call("gateway", "Sessions.ResolveTicket", "s", &[&proxy_ticket])
            .is_err()
    );
    for host in &hosts {
        assert_eq!(host.ctl_json("root", &["resolve", "alice"])["proxy"], "");
    }
    assert_eq!(a.ctl_json("root", &["resolve", "bob"])["proxy"], "etl");

    // Each host's chain verifies on the host …
    let chains: Vec<Vec<Record>> = hosts
        .iter()
        .map(|host| {
            host.ctl_ok("root", &["audit", "--verify"]);
            host.audit()
        })
        .collect();

    // … and the collector holds all of it: every record of every host, every field, a
    // MESSAGE_ID per event kind, and alice's trail found by her name.
    let complete = wait_for(PATIENCE, || {
        let entries = network.collected(&["SYSLOG_IDENTIFIER=proxyuserd-audit"]);
        (entries.len() >= chains.iter().map(Vec::len).sum()).then_some(entries)
    });
    let entries = complete.unwrap_or_else(|| {
        panic!(
            "the collector in {} never got every record:\n{}",
            collector.display(),
            network.logs()
        )
    });
    let mut message_ids: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut chain_ids = BTreeSet::new();
    for (host, chain) in hosts.iter().zip(&chains) {
        // Each host's copies carry its own chain id.
        let ids: BTreeSet<&str> = entries
            .iter()
            .filter(|e| e["_HOSTNAME"] == host.name.as_str())
            .map(|e| e["PROXYUSERD_CHAIN"].as_str().unwrap_or_default())
            .collect();
        assert_eq!(ids.len(), 1, "{}: chain ids {ids:?}", host.name);
        chain_ids.extend(ids);
        let mut copied: Vec<Record> = entries
            .iter()
            .filter(|e| e["_HOSTNAME"] == host.name.as_str())
            .map(|e| {
                let id = e["MESSAGE_ID"].as_str().unwrap_or_default().to_string();
                assert_eq!(id.len(), 32, "{e}");
                message_ids
                    .entry(e["PROXYUSERD_EVENT"].as_str().unwrap().to_string())
                    .or_default()
                    .insert(id);
                record_of(e)
            })
            .collect();
        copied.sort_by_key(|r| r["seq"].parse::<u64>().unwrap());
        assert_eq!(
            &copied, chain,
            "{}: the collector's copy differs",
            host.name
        );
        let verified = proxyuserd::audit::verify(&copied)
            .unwrap_or_else(|e| panic!("{}: the collector's copy: {e}", host.name));
        assert_eq!(verified as usize, chain.len());
    }
    assert_eq!(
        chain_ids.len(),
        hosts.len(),
        "one chain per host: {chain_ids:?}"
    );
    for (event, ids) in &message_ids {
        assert_eq!(ids.len(), 1, "{event} has MESSAGE_IDs {ids:?}");
    }
    let distinct: BTreeSet<_> = message_ids.values().flatten().collect();
    assert_eq!(distinct.len(), message_ids.len(), "{message_ids:?}");
    for event in [
        "proxy-set",
        "proxy-revoked",
        "session-open",
        "exec-start",
        "rules-reload",
    ] {
        assert!(message_ids.contains_key(event), "no {event} collected");
    }

    // What an auditor types: one login's trail across the fleet.
    let alice = network.collected(&["PROXYUSERD_LOGIN=alice"]);
    let on: BTreeSet<&str> = alice
        .iter()
        .map(|e| e["_HOSTNAME"].as_str().unwrap())
        .collect();
    assert_eq!(
        on,
        BTreeSet::from(HOSTS),
        "alice's trail is from every host"
    );
    let revocations = alice
        .iter()
        .filter(|e| e["PROXYUSERD_EVENT"] == "proxy-revoked")
        .count();
    assert_eq!(revocations, 3);
    let want: usize = chains
        .iter()
        .map(|c| {
            c.iter()
                .filter(|r| r.get("login").is_some_and(|l| l == "alice"))
                .count()
        })
        .sum();
    assert_eq!(alice.len(), want);
    eprintln!(
        "fleet test: {} audit records from 3 hosts collected; {:.1} s in all",
        entries.len(),
        started.elapsed().as_secs_f64()
    );
}
