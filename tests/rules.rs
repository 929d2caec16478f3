//! Rule changes: file reloads (SIGHUP and Admin.Reload), live rules, expiry, and the
//! revocation of associations the new rules no longer allow.

mod common;

use std::time::Duration;

use common::*;
use nix::sys::signal::Signal as Sig;

const INVALID_RULES: &str = "org.proxyuserd1.Error.InvalidRules";
const NOT_ALLOWED: &str = "org.proxyuserd1.Error.NotAllowed";

fn generation(env: &Env) -> u64 {
    env.ctl_json(ROOT, &["status"])["rules_generation"]
        .as_u64()
        .unwrap()
}

fn allowed(env: &Env, login: &str, proxy: &str) -> bool {
    let out = env.ctl(ROOT, &["--json", "check", login, proxy]);
    serde_json::from_str::<serde_json::Value>(&out.stdout).unwrap()["allowed"]
        .as_bool()
        .unwrap()
}

const CAROL_TO_ETL: &str = "[[allow]]\nlogins = [\"pxt-carol\"]\nproxies = [\"pxt-etl\"]\n";

#[test]
fn file_edits_take_effect_on_sighup_and_on_reload() {
    let mut env = Env::start("reload");
    let mut signals = env.signals();
    let g0 = generation(&env);
    assert!(!allowed(&env, CAROL, ETL));

    env.write_rules("20-carol.toml", CAROL_TO_ETL);
    env.signal(Sig::SIGHUP);
    eventually("SIGHUP reload", || allowed(&env, CAROL, ETL));
    let g1 = generation(&env);
    assert!(g1 > g0);
    signals.expect("RulesChanged", &[&g1.to_string()]);

    // Admin.Reload answers with the new generation.
    env.remove_rules("20-carol.toml");
    let out = env.ctl_json(ADMIN, &["rules", "reload"]);
    let g2 = out["generation"].as_u64().unwrap();
    assert!(g2 > g1);
    assert_eq!(generation(&env), g2);
    // A deleted rule is really gone (reload replaces, never merges).
    assert!(!allowed(&env, CAROL, ETL));
    assert!(
        env.rules()
            .iter()
            .all(|r| !r["source"].as_str().unwrap().contains("20-carol"))
    );

    // The generation survives a restart.
    env.restart();
    assert_eq!(generation(&env), g2);
}

#[test]
fn an_invalid_file_is_refused_with_its_location_and_the_old_rules_stay() {
    let env = Env::start("invalid");
    env.ctl_ok(ALICE, &["proxy", "set", ETL]);
    let g0 = generation(&env);

    env.write_rules(
        "20-bad.toml",
        "[[allow]]\nlogins = [\"pxt-carol\"]\nproxies = [\"pxt etl\"]\n",
    );
    let err = env.ctl_err(ROOT, &["rules", "reload"], INVALID_RULES);
    let path = env.rules_dir().join("20-bad.toml");
    assert!(
        err.contains(&format!(
            "{}:3:12: invalid user name \"pxt etl\"",
            path.display()
        )),
        "{err}"
    );
    // SIGHUP with the same file: refused too (logged), nothing changes.
    env.signal(Sig::SIGHUP);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(generation(&env), g0);
    assert!(allowed(&env, ALICE, ETL));
    assert_eq!(
        env.resolve(ALICE).0,
        ETL,
        "the association survived the failed reloads"
    );

    // A syntax error and a cross-file chaining error are located as well.
    env.write_rules("20-bad.toml", "[[allow]\n");
    let err = env.ctl_err(ROOT, &["rules", "reload"], INVALID_RULES);
    assert!(err.contains(&format!("{}:1:", path.display())), "{err}");
    env.write_rules(
        "20-bad.toml",
        "[[allow]]\nlogins = [\"pxt-etl\"]\nproxies = [\"pxt-carol\"]\n",
    );
    let err = env.ctl_err(ROOT, &["rules", "reload"], INVALID_RULES);
    assert!(
        err.contains(&format!("{}:2:11: pxt-etl is a proxy user", path.display())),
        "{err}"
    );
    assert_eq!(generation(&env), g0);
    assert!(
        env.audit_events("rules-reload").len() == 1,
        "failed reloads record nothing"
    );
}

#[test]
fn a_daemon_started_with_broken_files_serves_the_last_good_rules() {
    let mut env = Env::start("bootbroken");
    env.stop_daemon();
    env.write_rules("10-base.toml", "this is not toml");
    env.start_daemon();
    assert!(allowed(&env, ALICE, ETL), "last good rules serve");
    eventually("the journal says why", || {
        let out = std::process::Command::new("journalctl")
            .args(["-o", "cat", "--no-pager", "SYSLOG_IDENTIFIER=proxyuserd"])
            .arg(format!("_PID={}", env.daemon_pid()))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).contains("are not valid, serving the last good rules")
    });
}

#[test]
fn associations_that_lose_their_rule_are_revoked() {
    let env = Env::start("revoke");
    env.write_rules("20-carol.toml", CAROL_TO_ETL);
    env.ctl_ok(ROOT, &["rules", "reload"]);
    env.ctl_ok(CAROL, &["proxy", "set", ETL]);
    env.ctl_ok(ALICE, &["proxy", "set", ETL]);
    let mut signals = env.signals();

    env.remove_rules("20-carol.toml");
    env.ctl_ok(ROOT, &["rules", "reload"]);
    signals.expect("ProxyChanged", &[CAROL, ETL, "revoked"]);
    assert_eq!(env.resolve(CAROL), (CAROL.to_string(), String::new()));
    assert_eq!(env.resolve(ALICE).0, ETL, "alice's rule is untouched");
    let revoked = env.audit_events("proxy-revoked");
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0]["login"], CAROL);
    assert_eq!(revoked[0]["proxy"], ETL);
    assert!(revoked[0]["reason"].contains("no rule allows it"));
    let unexpected: Vec<_> = signals
        .drain(Duration::from_millis(200))
        .into_iter()
        .filter(|s| s.member == "ProxyChanged" && s.args[0] == ALICE)
        .collect();
    assert!(unexpected.is_empty(), "{unexpected:?}");
}

#[test]
fn an_expired_rule_stops_allowing_without_a_reload() {
    let env = Env::start("expiry");
    let expires = std::time::SystemTime::now() + Duration::from_secs(3);
    let secs = expires
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // Formatted by date(1), not by the daemon's own code.
    let stamp = std::process::Command::new("date")
        .args(["-u", "-d", &format!("@{secs}"), "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .unwrap();
    let stamp = String::from_utf8(stamp.stdout).unwrap().trim().to_string();
    env.write_rules(
        "20-carol.toml",
        &format!(
            "[[allow]]\nlogins = [\"pxt-carol\"]\nproxies = [\"pxt-etl\"]\nexpires = {stamp}\n"
        ),
    );
    env.ctl_ok(ROOT, &["rules", "reload"]);
    let mut signals = env.signals();
    env.ctl_ok(CAROL, &["proxy", "set", ETL]);
    let g = generation(&env);

    signals.expect("ProxyChanged", &[CAROL, ETL, "revoked"]);
    assert!(std::time::SystemTime::now() >= expires - Duration::from_millis(1100));
    assert!(!allowed(&env, CAROL, ETL));
    assert_eq!(env.resolve(CAROL).0, CAROL);
    env.ctl_err(CAROL, &["proxy", "set", ETL], NOT_ALLOWED);
    assert_eq!(generation(&env), g, "no reload happened");
}

#[test]
fn live_rules_survive_restart_and_reload_and_removal_revokes() {
    let mut env = Env::start("live");
    let id = env.add_rule(CAROL_TO_ETL);
    assert!(id.starts_with("live-"), "{id}");
    env.ctl_ok(CAROL, &["proxy", "set", ETL]);

    env.restart();
    env.ctl_ok(ROOT, &["rules", "reload"]);
    let live: Vec<_> = env
        .rules()
        .into_iter()
        .filter(|r| r["source"] == "live")
        .collect();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0]["id"], id.as_str());
    assert_eq!(
        live[0]["rule"],
        CAROL_TO_ETL.replace("=", " = ").replace("  ", " ")
    );
    assert_eq!(env.resolve(CAROL).0, ETL);

    let mut signals = env.signals();
    env.ctl_ok(ADMIN, &["rules", "remove", &id]);
    signals.expect("ProxyChanged", &[CAROL, ETL, "revoked"]);
    assert!(!allowed(&env, CAROL, ETL));
    env.restart();
    assert!(!allowed(&env, CAROL, ETL), "removal is durable");

    // A live deny revokes at once too; ids are never reused. (Signals go to the peers
    // the new daemon knows: listen anew.)
    let mut signals = env.signals();
    env.ctl_ok(ALICE, &["proxy", "set", ETL]);
    let deny = env.add_rule("[[deny]]\nlogins = [\"pxt-alice\"]\nproxies = [\"*\"]\n");
    assert_ne!(deny, id);
    signals.expect("ProxyChanged", &[ALICE, ETL, "revoked"]);

    // Invalid live rules are refused with their location, and change nothing.
    let out = env.ctl_input(
        ROOT,
        &["rules", "add", "-"],
        "[[allow]]\nlogins = [\"pxt-carol\"]\nproxies = [\"root\"]\n",
    );
    assert_eq!(out.error_name(), Some(INVALID_RULES));
    assert!(
        out.stderr
            .contains("rule:3:12: root can never be a proxy user"),
        "{}",
        out.stderr
    );
    let out = env.ctl_input(
        ROOT,
        &["rules", "add", "-"],
        "[[allow]]\nlogins = [\"pxt-etl\"]\nproxies = [\"pxt-carol\"]\n",
    );
    assert!(
        out.stderr.contains("rule:2:11: pxt-etl is a proxy user"),
        "{}",
        out.stderr
    );
    let out = env.ctl_input(
        ROOT,
        &["rules", "add", "-"],
        "[proxy_users]\nusers = [\"x\"]\n",
    );
    assert_eq!(out.error_name(), Some(INVALID_RULES));
    let out = env.ctl_input(ALICE, &["rules", "add", "-"], CAROL_TO_ETL);
    assert_eq!(
        out.error_name(),
        Some("org.freedesktop.DBus.Error.AccessDenied")
    );

    // File rules are not removed through the API.
    let err = env.ctl_err(
        ROOT,
        &["rules", "remove", "10-base.toml#1"],
        "org.freedesktop.DBus.Error.InvalidArgs",
    );
    assert!(err.contains("edit that file and reload"), "{err}");
    assert_eq!(env.audit_events("rule-added").len(), 2);
    assert_eq!(env.audit_events("rule-removed").len(), 1);
}

#[test]
fn check_config_reports_what_a_start_would_refuse_and_reload_refuses_a_broken_file() {
    let mut env = Env::prepare("checkconfig", "", &[("10-base.toml", BASE_RULES)]);
    let config = env.dir.join("proxyuserd.toml");
    let check = |path: &std::path::Path| {
        Out::from(
            std::process::Command::new(bin("proxyuserd"))
                .args(["--check-config", "--config"])
                .arg(path)
                .output()
                .unwrap(),
        )
    };
    let good = check(&config);
    assert_eq!(good.code, 0, "{good:?}");
    assert!(good.stdout.contains("configuration valid"), "{good:?}");
    assert!(good.stdout.contains("1 rule file"), "{good:?}");

    // A typo in the configuration: located, said once, exit 1.
    let text = std::fs::read_to_string(&config).unwrap();
    let typo = env.dir.join("typo.toml");
    std::fs::write(&typo, format!("{text}admin_gruop = \"x\"\n")).unwrap();
    let bad = check(&typo);
    assert_eq!(bad.code, 1, "{bad:?}");
    let line = text.lines().count() + 1;
    let at = format!("{}:{line}:1: unknown field `admin_gruop`", typo.display());
    assert_eq!(bad.stderr.matches(&at).count(), 1, "{bad:?}");

    // A broken rule file in the rules directory the configuration names.
    env.write_rules("20-broken.toml", "[[allow]]\nlogins = [\"pxt-carol\"\n");
    let bad = check(&config);
    assert_eq!(bad.code, 1, "{bad:?}");
    assert!(bad.stderr.contains("20-broken.toml:"), "{bad:?}");
    env.remove_rules("20-broken.toml");

    // A running daemon keeps its configuration when the file breaks: the reload is
    // refused, with the located error, and the daemon serves on.
    env.start_daemon();
    let before = generation(&env);
    std::fs::write(&config, format!("{text}admin_gruop = \"x\"\n")).unwrap();
    let refused = env.ctl_err(ROOT, &["rules", "reload"], INVALID_RULES);
    assert!(refused.contains("unknown field `admin_gruop`"), "{refused}");
    assert_eq!(generation(&env), before);
    std::fs::write(&config, &text).unwrap();
    env.ctl_ok(ROOT, &["rules", "reload"]);
    assert_eq!(generation(&env), before + 1);
}

#[test]
fn a_reload_applies_live_keys_and_a_broken_file_at_start_runs_on_the_last_good_one() {
    let mut env = Env::start("liveconfig");
    let config = env.dir.join("proxyuserd.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    env.ctl_ok(ADMIN, &["rules", "list"]);

    // A live key takes effect at the reload (audited), one that needs a restart is named.
    let changed = text
        .replace(
            "admin_group = \"pxt-admins\"",
            "admin_group = \"pxt-nosuchgroup\"",
        )
        .replace("state_dir", "nss_cache_secs = 9\nstate_dir");
    assert_ne!(changed, text);
    std::fs::write(&config, &changed).unwrap();
    env.ctl_ok(ROOT, &["rules", "reload"]);
    let denied = env.ctl_err(
        ADMIN,
        &["rules", "list"],
        "org.freedesktop.DBus.Error.AccessDenied",
    );
    assert!(denied.contains("not an admin"), "{denied}");
    let reloads = env.audit_events("rules-reload");
    let last = reloads.last().unwrap();
    assert_eq!(
        last.get("config").map(String::as_str),
        Some("admin_group"),
        "{last:?}"
    );
    let messages = env.log_messages("needs a restart");
    assert!(
        messages
            .iter()
            .any(|m| m.contains("nss_cache_secs changed; needs a restart")),
        "{messages:?}"
    );
    std::fs::write(&config, &text).unwrap();
    env.ctl_ok(ROOT, &["rules", "reload"]);
    env.ctl_ok(ADMIN, &["rules", "list"]);

    // A restart with a typo runs on the last good file (admins stay admins), and says
    // so once.
    env.stop_daemon();
    std::fs::write(&config, format!("{text}admin_gruop = \"x\"\n")).unwrap();
    let before = env.daemon_log();
    env.start_daemon();
    env.ctl_ok(ADMIN, &["rules", "list"]);
    let log = env.daemon_log();
    let since = log.strip_prefix(before.as_str()).unwrap();
    assert_eq!(
        since.matches("unknown field `admin_gruop`").count(),
        1,
        "{since}"
    );
    assert!(
        since.contains("running on the last good configuration"),
        "{since}"
    );
    // A reload with the file still broken changes nothing; fixed, it is applied.
    env.ctl_err(ROOT, &["rules", "reload"], INVALID_RULES);
    std::fs::write(&config, &text).unwrap();
    env.ctl_ok(ROOT, &["rules", "reload"]);

    // No last good file (a first start) and a broken one: the daemon does not start,
    // with the status the unit does not restart on.
    env.stop_daemon();
    std::fs::remove_file(env.state_dir().join("config.last-good")).unwrap();
    std::fs::write(&config, format!("{text}admin_gruop = \"x\"\n")).unwrap();
    let start = Out::from(
        std::process::Command::new(bin("proxyuserd"))
            .arg("--config")
            .arg(&config)
            .env("DBUS_SYSTEM_BUS_ADDRESS", &env.address)
            .output()
            .unwrap(),
    );
    assert_eq!(start.code, 78, "{start:?}");
    assert!(
        start.stderr.contains("unknown field `admin_gruop`"),
        "{start:?}"
    );
    std::fs::write(&config, &text).unwrap();
    env.start_daemon();
    env.ctl_ok(ADMIN, &["rules", "list"]);
}

#[test]
fn rules_check_reports_every_error_and_warns_of_names_this_host_lacks() {
    let env = Env::start("check");
    let dir = env.state_dir().join("check");
    std::fs::create_dir_all(&dir).unwrap();
    let unknown = dir.join("10-unknown.toml");
    std::fs::write(
        &unknown,
        "[[allow]]\nlogins = [\"web-anna\"]\nproxies = [\"pxt-nosuchuser\"]\n\
         login_groups = [\"pxt-nosuchgroup\"]\n",
    )
    .unwrap();
    let broken = dir.join("20-broken.toml");
    std::fs::write(
        &broken,
        "[[allow]]\nlogins = [\"pxt-alice\"]\nproxys = [\"pxt-etl\"]\n\n\
         [[deny]]\nlogins = [\"a b\"]\nproxies = [\"*\"]\n",
    )
    .unwrap();
    let (unknown, broken) = (unknown.to_str().unwrap(), broken.to_str().unwrap());

    // Valid, with a warning for each name NSS does not know (logins need no account).
    let out = env.ctl(ROOT, &["rules", "check", unknown]);
    assert!(out.ok(), "{}", out.stderr);
    assert_eq!(out.stdout.trim(), "1 file, 1 rule: valid");
    assert!(
        out.stderr
            .contains(&format!("{unknown}:3:12: warning: no user pxt-nosuchuser")),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(&format!(
            "{unknown}:4:17: warning: no group pxt-nosuchgroup"
        )),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("web-anna"), "{}", out.stderr);

    // Both errors of the broken file, in file order, not only the first.
    let out = env.ctl(ROOT, &["rules", "check", unknown, broken]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    let errors: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with(broken))
        .collect();
    assert_eq!(errors.len(), 2, "{}", out.stderr);
    assert!(
        errors[0].starts_with(&format!("{broken}:3:1: unknown field `proxys`")),
        "{errors:?}"
    );
    assert!(errors[1].starts_with(&format!("{broken}:6:")), "{errors:?}");
    assert!(errors[1].contains("\"a b\""), "{errors:?}");
    let json = env.ctl(ROOT, &["--json", "rules", "check", unknown, broken]);
    let json: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(json["errors"].as_array().unwrap().len(), 2);
    assert_eq!(json["warnings"].as_array().unwrap().len(), 2);
}

#[test]
fn rules_list_shows_the_proxy_users_and_says_when_there_are_no_rules() {
    let env = Env::start("list");
    let listed = env.ctl_ok(ROOT, &["rules", "list"]);
    assert!(
        listed.contains("[proxy_users]\ngroups = [\"pxt-svc\"]\n"),
        "{listed}"
    );
    assert!(listed.contains("[[deny]]"), "{listed}");
    let empty = Env::with("list-empty", "", &[]);
    assert_eq!(
        empty.ctl_ok(ROOT, &["rules", "list"]).trim(),
        "no rules: every proxy request is denied"
    );
    // Not an admin: the message names the command, not the D-Bus method.
    let err = env.ctl_err(
        ALICE,
        &["rules", "list"],
        "org.freedesktop.DBus.Error.AccessDenied",
    );
    assert!(
        err.contains("pxt-alice is not an admin")
            && err.contains("proxyuserctl rules list is for admins"),
        "{err}"
    );
}
