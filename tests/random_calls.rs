//! Random but well-typed calls of every method of every interface, from every kind of
//! caller at once, leave the daemon serving, its audit chain intact, no job running and
//! no panic behind.

mod common;

use std::collections::BTreeMap;
use std::process::{Child, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use common::*;

/// Calls per client; seven clients.
const CALLS: usize = 500;

/// Replies a well-typed call may get: a result or an error of the contract. Anything
/// else (no reply, an unknown method, a vanished name) is a finding.
fn expected_reply(reply: &str) -> bool {
    reply == "OK"
        || reply.starts_with("org.proxyuserd1.Error.")
        || [
            "org.freedesktop.DBus.Error.InvalidArgs",
            "org.freedesktop.DBus.Error.AccessDenied",
            "org.freedesktop.DBus.Error.LimitsExceeded",
        ]
        .contains(&reply)
}

/// The processes whose environment holds `marker` (every job of this run has it).
fn marked_processes(marker: &str) -> Vec<u32> {
    let needle = format!("PXT_RANDOM_RUN={marker}");
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|&b| b == 0).any(|var| var == needle.as_bytes()))
                && process_alive(*pid)
        })
        .collect()
}

#[test]
fn random_calls_of_every_method_leave_the_daemon_whole() {
    let seed: u64 = std::env::var("PXT_SEED")
        .ok()
        .map(|s| s.parse().expect("PXT_SEED is a number"))
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                % 1_000_000_007
        });
    eprintln!("random_calls: seed {seed} (rerun with PXT_SEED={seed})");
    let marker = format!("random-{seed}-{}", std::process::id());
    // Denials are not slowed down here: the run is about what the calls do, and a
    // throttled client would take minutes (tests/limits.rs covers the throttle).
    let env = Env::with(
        "random",
        "denial_rate = 0\n[exec]\nenv_keep = [\"PXT_RANDOM_RUN\"]\ntimeout_secs = 20\n",
        &[("10-base.toml", BASE_RULES)],
    );
    // The marker reaches jobs, so the check for leftovers at the end can see them.
    env.ctl_ok(ALICE, &["proxy", "set", ETL]);
    let marked = format!("PXT_RANDOM_RUN={marker}");
    env.ctl_ok(
        ALICE,
        &[
            "exec",
            "--detach",
            "--env",
            &marked,
            "--",
            "/bin/sleep",
            "2",
        ],
    );
    eventually("the probe job is seen by its marker", || {
        !marked_processes(&marker).is_empty()
    });

    let xml = repo().join("dbus/org.proxyuserd1.xml");
    let callers = [ROOT, ADMIN, GATEWAY, ALICE, MALLORY, CAROL, ETL];
    let clients: Vec<(&str, Child)> = callers
        .iter()
        .enumerate()
        .map(|(i, &user)| {
            let child = env
                .command_as(user, "/usr/bin/python3")
                .arg(repo().join("tests/random_client.py"))
                .arg(&env.address)
                .arg(&xml)
                .arg((seed + i as u64).to_string())
                .arg(CALLS.to_string())
                .arg(&marker)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("python3 (python3-dbus, run `sudo tests/setup`)");
            (user, child)
        })
        .collect();

    let mut totals: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for (user, child) in clients {
        let out = Out::from(child.wait_with_output().unwrap());
        assert!(
            out.ok(),
            "random client as {user} failed (seed {seed}): {}",
            out.stderr
        );
        let report: serde_json::Value =
            serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout));
        let mut calls = 0;
        for (method, outcomes) in report["replies"].as_object().unwrap() {
            for (reply, count) in outcomes.as_object().unwrap() {
                let count = count.as_u64().unwrap();
                assert!(
                    expected_reply(reply),
                    "{user} got {reply} from {method} (seed {seed}):\n{}",
                    env.daemon_log()
                );
                calls += count;
                *totals
                    .entry(method.clone())
                    .or_default()
                    .entry(reply.clone())
                    .or_default() += count;
            }
        }
        assert_eq!(calls, CALLS as u64, "every call of {user} was answered");
    }
    eprintln!("random_calls: replies by method: {totals:#?}");

    // Every method of the introspection file was called, and the run did real work.
    let introspection = std::fs::read_to_string(&xml).unwrap();
    for (interface, method) in methods(&introspection) {
        assert!(
            totals.contains_key(&format!("{interface}.{method}")),
            "{interface}.{method} was never called"
        );
    }
    for method in [
        "Jobs.Exec",
        "Identity.SetProxy",
        "Admin.AddRule",
        "Jobs.Wait",
    ] {
        assert!(
            totals[method].contains_key("OK"),
            "no call of {method} succeeded (seed {seed}): {:?}",
            totals[method]
        );
    }

    // Still serving, the same process, nothing panicked.
    assert!(
        process_alive(env.daemon_pid()),
        "the daemon died (seed {seed})"
    );
    let ping = env.busctl(
        ROOT,
        &[
            "call",
            "org.proxyuserd1",
            "/org/proxyuserd1",
            "org.freedesktop.DBus.Peer",
            "Ping",
        ],
    );
    assert!(ping.ok(), "Ping: {}", ping.stderr);
    env.ctl_ok(ROOT, &["resolve", ALICE]);
    let verify = env.ctl(ROOT, &["audit", "--verify"]);
    assert!(
        verify.ok() && verify.stdout.starts_with("audit chain intact"),
        "audit --verify (seed {seed}): {} {}",
        verify.stdout,
        verify.stderr
    );
    // No job left running: each ends by itself within a second or two.
    eventually("every job of the run has ended", || {
        marked_processes(&marker).is_empty()
    });
    let log = env.daemon_log();
    assert!(
        !log.contains("panicked"),
        "the daemon panicked (seed {seed}):\n{log}"
    );
}

/// (interface suffix, method) of every method in the introspection XML.
fn methods(xml: &str) -> Vec<(String, String)> {
    let mut interface = String::new();
    let mut found = Vec::new();
    for line in xml.lines().map(str::trim) {
        let name = || line.split('"').nth(1).unwrap_or_default().to_string();
        if line.starts_with("<interface ") {
            interface = name().rsplit('.').next().unwrap().to_string();
        } else if line.starts_with("<method ") {
            found.push((interface.clone(), name()));
        }
    }
    assert!(found.len() > 20, "the introspection file lists {found:?}");
    found
}
