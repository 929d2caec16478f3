//! The audit log: one record per operation, a verifiable hash chain, the same records
//! in journald, tamper detection, and fail-closed when the store cannot be written.

mod common;

use std::collections::BTreeMap;

use common::*;

type Record = BTreeMap<String, String>;

/// Records appended by `op`.
fn records_of(env: &Env, op: impl FnOnce()) -> Vec<Record> {
    let before = env.audit().len();
    op();
    env.audit().split_off(before)
}

#[test]
fn each_operation_leaves_exactly_one_record_with_both_identities() {
    let env = Env::start("audit1");
    let (alice_uid, _) = ids(ALICE);

    let r = records_of(&env, || {
        env.ctl_ok(ALICE, &["proxy", "set", ETL]);
    });
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0]["event"], "proxy-set");
    assert_eq!(
        (
            r[0]["login"].as_str(),
            r[0]["proxy"].as_str(),
            r[0]["effective"].as_str()
        ),
        (ALICE, ETL, ETL)
    );
    assert_eq!(r[0]["caller_uid"], alice_uid.to_string());
    assert!(r[0]["caller_pid"].parse::<u32>().unwrap() > 1);
    assert_eq!(r[0]["rule"], "10-base.toml#1");

    let r = records_of(&env, || {
        env.ctl_ok(GATEWAY, &["proxy", "set", "--login", ALICE, REPORT]);
    });
    assert_eq!(r.len(), 1);
    assert_eq!(
        (
            r[0]["event"].as_str(),
            r[0]["proxy"].as_str(),
            r[0]["previous"].as_str()
        ),
        ("proxy-set", REPORT, ETL)
    );
    assert_eq!(
        r[0]["caller"], GATEWAY,
        "the acting caller is recorded, not the login"
    );

    let r = records_of(&env, || {
        env.ctl_ok(ALICE, &["proxy", "clear"]);
    });
    assert_eq!(r.len(), 1);
    assert_eq!(
        (
            r[0]["event"].as_str(),
            r[0]["login"].as_str(),
            r[0]["proxy"].as_str()
        ),
        ("proxy-cleared", ALICE, REPORT)
    );

    let r = records_of(&env, || {
        env.ctl(CAROL, &["proxy", "set", ETL]);
    });
    assert_eq!(r.len(), 1);
    assert_eq!(
        (r[0]["event"].as_str(), r[0]["operation"].as_str()),
        ("denied", "SetProxy")
    );
    assert_eq!(
        (r[0]["login"].as_str(), r[0]["proxy"].as_str()),
        (CAROL, ETL)
    );
    assert!(r[0]["reason"].contains("no rule allows it"));

    let mut id = String::new();
    let r = records_of(&env, || {
        id = env.add_rule("[[allow]]\nlogins = [\"pxt-carol\"]\nproxies = [\"pxt-etl\"]\n");
    });
    assert_eq!(r.len(), 1);
    assert_eq!(
        (r[0]["event"].as_str(), r[0]["rule"].as_str()),
        ("rule-added", id.as_str())
    );
    assert_eq!(r[0]["caller_uid"], "0");

    env.ctl_ok(CAROL, &["proxy", "set", ETL]);
    let r = records_of(&env, || {
        env.ctl_ok(ROOT, &["rules", "remove", &id]);
    });
    let events: Vec<&str> = r.iter().map(|r| r["event"].as_str()).collect();
    assert_eq!(
        events,
        ["rule-removed", "proxy-revoked"],
        "the revocation is its own record"
    );
    assert_eq!(
        (r[1]["login"].as_str(), r[1]["proxy"].as_str()),
        (CAROL, ETL)
    );

    let r = records_of(&env, || {
        env.ctl_ok(ADMIN, &["rules", "reload"]);
    });
    assert_eq!(r.len(), 1);
    assert_eq!(
        (r[0]["event"].as_str(), r[0]["trigger"].as_str()),
        ("rules-reload", "Reload")
    );

    // Reads leave no record.
    let r = records_of(&env, || {
        env.ctl_ok(ALICE, &["resolve"]);
        env.ctl_ok(ALICE, &["proxy", "list"]);
        env.ctl(ALICE, &["check", ALICE, ETL]);
    });
    assert!(r.is_empty(), "{r:?}");

    let verify = env.ctl(ROOT, &["audit", "--verify"]);
    assert!(
        verify.ok() && verify.stdout.starts_with("audit chain intact"),
        "{}",
        verify.stdout
    );
}

#[test]
fn the_journal_has_the_same_records_by_their_fields() {
    let env = Env::start("journal");
    env.ctl_ok(ALICE, &["proxy", "set", ETL]);
    env.ctl(ALICE, &["proxy", "set", "--login", BOB, ETL]);
    let records = env.audit();
    assert_eq!(records.len(), 3);
    for record in &records {
        let seq = record["seq"].as_str();
        let found = env.journal_audit(&[("PROXYUSERD_SEQ", seq)], 1);
        assert_eq!(found.len(), 1, "record {seq} in the journal: {found:?}");
        let entry = &found[0];
        for (key, value) in record {
            let field = format!("PROXYUSERD_{}", key.to_uppercase());
            assert_eq!(
                entry[&field].as_str(),
                Some(value.as_str()),
                "{field} of record {seq}"
            );
        }
    }
    let set = env.journal_audit(
        &[
            ("PROXYUSERD_EVENT", "proxy-set"),
            ("PROXYUSERD_LOGIN", ALICE),
            ("PROXYUSERD_PROXY", ETL),
        ],
        1,
    );
    assert_eq!(set.len(), 1);
    assert_eq!(
        set[0]["MESSAGE"],
        "pxt-alice now proxies to pxt-etl by pxt-alice"
    );
    assert_eq!(set[0]["PRIORITY"], "5");
    let denied = env.journal_audit(&[("PROXYUSERD_EVENT", "denied")], 1);
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0]["PROXYUSERD_CALLER_UID"], ids(ALICE).0.to_string());
    assert_eq!(denied[0]["PROXYUSERD_LOGIN"], BOB);
    assert_eq!(denied[0]["PRIORITY"], "4");
    // One MESSAGE_ID per event kind.
    assert_ne!(set[0]["MESSAGE_ID"], denied[0]["MESSAGE_ID"]);
    assert_eq!(set[0]["MESSAGE_ID"].as_str().unwrap().len(), 32);
}

#[test]
fn a_record_altered_on_disk_is_found_by_verify() {
    let mut env = Env::start("tamper");
    env.ctl_ok(ALICE, &["proxy", "set", ETL]);
    env.ctl_ok(BOB, &["proxy", "set", ETL]);
    env.ctl_ok(ALICE, &["proxy", "clear"]);
    assert!(env.ctl(ROOT, &["audit", "--verify"]).ok());
    assert_eq!(env.stop_daemon(), 0);

    // Someone with access to the state directory rewrites who record 3 was about.
    {
        let db = sled::open(env.state_dir().join("db")).unwrap();
        let audit = db.open_tree("audit").unwrap();
        let key = 3u64.to_be_bytes();
        let mut record: Record = serde_json::from_slice(&audit.get(key).unwrap().unwrap()).unwrap();
        assert_eq!(record["login"], BOB);
        record.insert("login".into(), MALLORY.into());
        audit
            .insert(key, serde_json::to_vec(&record).unwrap())
            .unwrap();
        db.flush().unwrap();
    }
    env.start_daemon();
    let verify = env.ctl(ROOT, &["audit", "--verify"]);
    assert_eq!(verify.code, 1, "{}", verify.stdout);
    assert_eq!(
        verify.stdout.lines().next(),
        Some("audit chain broken at record 3: its content does not match its hash"),
        "{}",
        verify.stdout
    );
    // The journald copy of record 3 is the one written before the edit.
    assert!(
        verify
            .stdout
            .contains("record 3 differs from its journald copy"),
        "{}",
        verify.stdout
    );
    let json = env.ctl(ROOT, &["--json", "audit", "--verify"]);
    let json: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(json["intact"], false);
    assert_eq!(json["broken_at"], 3);
}

#[test]
fn when_the_audit_store_cannot_be_written_nothing_happens() {
    let env = Env::start("failclosed");
    env.ctl_ok(ALICE, &["proxy", "set", ETL]);
    let records = env.audit().len();

    // Every write of the daemon that grows a file now fails (EFBIG): the store cannot
    // take the audit record, so the operation must be refused and have no effect.
    let pid = env.daemon_pid().to_string();
    let limit = std::process::Command::new("prlimit")
        .args(["--pid", &pid, "--fsize=1:unlimited"])
        .status()
        .unwrap();
    assert!(limit.success());
    let err = env.ctl_err(
        BOB,
        &["proxy", "set", ETL],
        "org.proxyuserd1.Error.AuditUnavailable",
    );
    assert!(
        err.contains("the audit log cannot be written, so nothing was done"),
        "{err}"
    );

    // Reads go on meanwhile, and show what is on disk.
    assert_eq!(env.resolve(ALICE).0, ETL, "earlier state is intact");
    env.ctl_err(
        ALICE,
        &["proxy", "clear"],
        "org.proxyuserd1.Error.AuditUnavailable",
    );

    // Once the daemon can write again, it reopens the store on what is on disk and
    // takes writes by itself, without a restart.
    let limit = std::process::Command::new("prlimit")
        .args(["--pid", &pid, "--fsize=unlimited:unlimited"])
        .status()
        .unwrap();
    assert!(limit.success());
    eventually("the store takes writes again", || {
        env.ctl(ALICE, &["resolve"]).ok() && env.ctl(ROOT, &["rules", "reload"]).ok()
    });
    assert_eq!(env.daemon_pid(), pid.parse::<u32>().unwrap(), "no restart");
    assert_eq!(
        env.resolve(BOB).1,
        "",
        "the refused SetProxy left no association"
    );
    assert_eq!(env.resolve(ALICE).0, ETL, "earlier state is intact");
    let audit = env.audit();
    assert_eq!(
        audit.len(),
        records + 1,
        "no record of the refused operations, one of the reload: {audit:?}"
    );
    assert_eq!(audit.last().unwrap()["event"], "rules-reload");
    assert!(env.ctl(ROOT, &["audit", "--verify"]).ok());
    // And it works again.
    env.ctl_ok(BOB, &["proxy", "set", ETL]);
    assert_eq!(env.resolve(BOB).1, ETL);
}

#[test]
fn a_user_causing_denials_in_a_loop_is_slowed_and_every_denial_is_recorded() {
    // One denial a second after a burst of one.
    let env = Env::with(
        "throttle",
        "denial_rate = 1\ndenial_burst = 1\n",
        &[("10-base.toml", BASE_RULES)],
    );
    let before = env.audit().len();
    // Mallory asks for alice's identity three times in a row, then ten times at once.
    let out = env
        .command_as(MALLORY, "/usr/bin/python3")
        .arg(repo().join("tests/flood_client.py"))
        .args([&env.address, ALICE, "1", "1", "1", "10"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "flood client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let count = |burst: &str, name: &str| {
        stdout
            .lines()
            .filter(|l| l.split_once(' ') == Some((burst, name)))
            .count()
    };
    const DENIED: &str = "org.freedesktop.DBus.Error.AccessDenied";
    const LIMITS: &str = "org.freedesktop.DBus.Error.LimitsExceeded";
    for burst in ["1", "2", "3"] {
        assert_eq!(count(burst, DENIED), 1, "{stdout}");
    }
    // The second denial made mallory wait, so of the ten at once four wait for their
    // turns and are denied one by one, and the rest are refused at once.
    assert_eq!(count("4", DENIED), 4, "{stdout}");
    assert_eq!(count("4", LIMITS), 6, "{stdout}");

    // Every denial is recorded, and those that waited were served a second apart (a
    // lower bound: a deliberate wait cannot be shorter on a slow machine).
    let records = env.audit().split_off(before);
    assert_eq!(records.len(), 7, "{records:?}");
    let (mallory_uid, _) = ids(MALLORY);
    assert!(
        records
            .iter()
            .all(|r| r["event"] == "denied" && r["caller_uid"] == mallory_uid.to_string())
    );
    let times: Vec<u64> = records[3..]
        .iter()
        .map(|r| r["time"].parse().unwrap())
        .collect();
    for pair in times.windows(2) {
        assert!(pair[1] - pair[0] >= 500_000, "{times:?}");
    }

    const SLOWED: &str = "causes refusals faster than denial_rate";
    let slowed = |messages: &[String]| -> Vec<String> {
        messages
            .iter()
            .filter(|m| m.contains(SLOWED))
            .cloned()
            .collect()
    };
    let warnings = slowed(&env.log_messages(SLOWED));
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains(MALLORY), "{}", warnings[0]);

    // Others are served as before, and the gateway is never slowed.
    assert!(env.ctl_ok(ALICE, &["resolve"]).contains(ALICE));
    for _ in 0..5 {
        env.ctl_err(GATEWAY, &["sessions"], DENIED);
    }
    // A reload logs a line after whatever the gateway's denials logged.
    env.ctl_ok("root", &["rules", "reload"]);
    let messages = env.log_messages("rules generation 2 active");
    assert!(
        messages
            .iter()
            .any(|m| m.contains("rules generation 2 active")),
        "{messages:?}"
    );
    assert_eq!(slowed(&messages).len(), 1, "{messages:?}");
}

#[test]
fn audit_is_read_by_login_kind_and_time_and_followed() {
    let env = Env::start("audit-read");
    env.ctl_ok(ALICE, &["proxy", "set", ETL]);
    env.ctl_ok(BOB, &["proxy", "set", ETL]);
    env.ctl_ok(ALICE, &["proxy", "clear"]);
    let shown = |args: &[&str]| {
        let mut all = vec!["audit"];
        all.extend_from_slice(args);
        match env.ctl_json(ROOT, &all) {
            serde_json::Value::Array(records) => records,
            other => panic!("not an array: {other}"),
        }
    };
    let alice_sets = shown(&["--login", ALICE, "--kind", "proxy-set"]);
    assert_eq!(alice_sets.len(), 1, "{alice_sets:?}");
    assert_eq!(alice_sets[0]["login"], ALICE);
    let alice = shown(&[
        "--login",
        ALICE,
        "--kind",
        "proxy-set",
        "--kind",
        "proxy-cleared",
    ]);
    assert_eq!(alice.len(), 2, "{alice:?}");
    assert_eq!(shown(&["--since", "-1h", "--kind", "proxy-set"]).len(), 2);
    assert!(shown(&["--until", "2000-01-01"]).is_empty());
    assert_eq!(
        env.ctl_ok(ROOT, &["audit", "--until", "2000-01-01"]).trim(),
        "no audit records match"
    );
    let err = env.ctl(ROOT, &["audit", "--kind", "exec"]);
    assert!(
        !err.ok()
            && err
                .stderr
                .contains("--kind exec: no such kind of record (kinds: proxy-set"),
        "{}",
        err.stderr
    );
    let err = env.ctl(ROOT, &["audit", "--since", "yesterday"]);
    assert!(
        !err.ok() && err.stderr.contains("--since \"yesterday\""),
        "{}",
        err.stderr
    );
    let denied = env.ctl_err(ALICE, &["audit"], "org.freedesktop.DBus.Error.AccessDenied");
    assert!(
        denied.contains("pxt-alice is not an admin")
            && denied.contains("proxyuserctl audit is for admins"),
        "{denied}"
    );

    // --follow prints what was there, then each new record as it is written.
    let mut follow = env
        .command_as(ROOT, bin("proxyuserctl"))
        .args(["--json", "audit", "--follow", "--kind", "proxy-cleared"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(follow.stdout.take().unwrap()));
    let first: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(
        (first["event"].as_str(), first["login"].as_str()),
        (Some("proxy-cleared"), Some(ALICE))
    );
    env.ctl_ok(BOB, &["proxy", "clear"]);
    let next: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(
        (next["event"].as_str(), next["login"].as_str()),
        (Some("proxy-cleared"), Some(BOB))
    );
    follow.kill().unwrap();
    follow.wait().unwrap();

    // A short log is verified without progress lines (they come every 100 000 records
    // when stderr is no terminal).
    let verify = env.ctl(ROOT, &["audit", "--verify"]);
    assert!(verify.ok(), "{}", verify.stdout);
    assert!(
        !verify.stderr.contains("audit --verify: read"),
        "{}",
        verify.stderr
    );
}
