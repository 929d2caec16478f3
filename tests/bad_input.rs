//! Bad input gets a clear error naming what was wrong, and never hurts the daemon.

mod common;

use common::*;

const INVALID_ARGS: &str = "org.freedesktop.DBus.Error.InvalidArgs";
const NO_SUCH_USER: &str = "org.proxyuserd1.Error.NoSuchUser";
const INVALID_RULES: &str = "org.proxyuserd1.Error.InvalidRules";

#[test]
fn each_bad_argument_gets_its_error_naming_the_value() {
    let env = Env::start("badargs");
    let long = "a".repeat(129);
    // (proxyuserctl arguments, expected error, text the message must contain)
    let table: Vec<(Vec<&str>, &str, String)> = vec![
        (
            vec!["resolve", ""],
            INVALID_ARGS,
            "login: invalid user name \"\": it is empty".into(),
        ),
        (
            vec!["resolve", "--", "-rf"],
            INVALID_ARGS,
            "invalid user name \"-rf\": it starts with '-'".into(),
        ),
        (
            vec!["resolve", "a/b"],
            INVALID_ARGS,
            "\"a/b\": it contains '/'".into(),
        ),
        (
            vec!["resolve", "a b"],
            INVALID_ARGS,
            "\"a b\": it contains whitespace".into(),
        ),
        (
            vec!["resolve", "a\nb"],
            INVALID_ARGS,
            "\"a\\nb\": it contains whitespace".into(),
        ),
        (
            vec!["resolve", "a\x01b"],
            INVALID_ARGS,
            "it contains a control character".into(),
        ),
        (
            vec!["resolve", "1000"],
            INVALID_ARGS,
            "it is all digits".into(),
        ),
        (
            vec!["resolve", ".."],
            INVALID_ARGS,
            "it is a path component".into(),
        ),
        (
            vec!["resolve", &long],
            INVALID_ARGS,
            "it is longer than 128 bytes".into(),
        ),
        (
            vec!["resolve", "ålice"],
            INVALID_ARGS,
            "it contains a non-ASCII character".into(),
        ),
        (
            vec!["proxy", "set", "--login", "a:b", ETL],
            INVALID_ARGS,
            "login: invalid user name \"a:b\"".into(),
        ),
        (
            vec!["proxy", "set", "--login", ALICE, "et l"],
            INVALID_ARGS,
            "proxy: invalid user name \"et l\"".into(),
        ),
        (
            vec!["proxy", "set", "--login", ALICE, "pxt-nobody"],
            NO_SUCH_USER,
            "no system user pxt-nobody".into(),
        ),
        (
            vec!["check", ALICE, "pxt-nobody"],
            NO_SUCH_USER,
            "no system user pxt-nobody".into(),
        ),
        (
            vec!["check", ALICE, "*"],
            INVALID_ARGS,
            "proxy: invalid user name \"*\"".into(),
        ),
        (
            vec!["rules", "remove", "live-999"],
            INVALID_ARGS,
            "no rule \"live-999\"".into(),
        ),
        (
            vec!["rules", "remove", "10-base.toml#1"],
            INVALID_ARGS,
            "comes from file:".into(),
        ),
    ];
    for (args, name, text) in &table {
        let err = env.ctl_err(ROOT, args, name);
        assert!(err.contains(text.as_str()), "{args:?}: {err}");
    }
    let bad_rules = [
        (
            "",
            "rule:1:1: a rule is exactly one [[allow]] or [[deny]] table, this text has 0",
        ),
        (
            "[[allow]]\nlogins = [\"a\"]\n",
            "rule:1:1: [[allow]] names no proxy",
        ),
        (
            "[[allow]]\nlogins = [\"a\"]\nproxies = [\"b\"]\nextra = 1\n",
            "rule:4:1: unknown field `extra`",
        ),
        (
            "[[allow]]\nlogins = [\"a\", \"*\"]\nproxies = [\"b\"]\n",
            "rule:2:16: \"*\" must be the whole logins list",
        ),
        ("not toml at all", "rule:1:"),
    ];
    for (text, want) in bad_rules {
        let out = env.ctl_input(ROOT, &["rules", "add", "-"], text);
        assert_eq!(
            out.error_name(),
            Some(INVALID_RULES),
            "{text:?}: {}",
            out.stderr
        );
        assert!(out.stderr.contains(want), "{text:?}: {}", out.stderr);
    }
    // Nothing above changed any state.
    assert_eq!(env.audit_events("rule-added").len(), 0);
    assert_eq!(env.audit_events("proxy-set").len(), 0);
}

#[test]
fn malformed_calls_are_refused_by_type() {
    let env = Env::start("badcalls");
    let call = |args: &[&str]| {
        let mut all = vec!["call", "org.proxyuserd1", "/org/proxyuserd1"];
        all.extend_from_slice(args);
        env.busctl(ALICE, &all)
    };
    // Wrong argument types and counts.
    let out = call(&["org.proxyuserd1.Identity", "Resolve", "u", "7"]);
    assert!(
        !out.ok() && out.stderr.contains("Call failed"),
        "{}",
        out.stderr
    );
    let out = env.dbus_send(ALICE, "org.proxyuserd1.Identity.Resolve", &["uint32:7"]);
    assert!(out.stderr.contains(INVALID_ARGS), "{}", out.stderr);
    let out = env.dbus_send(
        ALICE,
        "org.proxyuserd1.Identity.SetProxy",
        &["string:pxt-alice"],
    );
    assert!(out.stderr.contains(INVALID_ARGS), "{}", out.stderr);
    let out = env.dbus_send(ALICE, "org.proxyuserd1.Identity.Nope", &[]);
    assert!(
        out.stderr
            .contains("org.freedesktop.DBus.Error.UnknownMethod"),
        "{}",
        out.stderr
    );
    // The bus refuses strings that are not UTF-8 before they reach the daemon; a byte
    // array where a string belongs is refused by the daemon.
    let out = env.dbus_send(
        ALICE,
        "org.proxyuserd1.Identity.Resolve",
        &["array:byte:255,254"],
    );
    assert!(out.stderr.contains(INVALID_ARGS), "{}", out.stderr);
    assert!(env.ctl(ALICE, &["resolve"]).ok());
}

#[test]
fn a_garbage_run_leaves_the_daemon_serving() {
    let env = Env::start("garbage");
    let out = env
        .command_as(ALICE, "/usr/bin/python3")
        .arg(repo().join("tests/garbage_client.py"))
        .args([&env.address, "20"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "garbage client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let replies: Vec<&str> = stdout.lines().collect();
    assert_eq!(replies.len(), 20 * 12, "every call got a reply");
    // Everything is refused with a D-Bus error of the contract (alice acting for
    // junk logins is denied, junk is invalid), never a dropped connection. Past
    // denial_burst alice is slowed down (this test takes seconds), yet every call is
    // answered.
    for reply in &replies {
        assert!(
            [
                INVALID_ARGS,
                "org.freedesktop.DBus.Error.AccessDenied",
                "org.freedesktop.DBus.Error.UnknownMethod",
                "OK",
            ]
            .contains(reply),
            "unexpected reply {reply}"
        );
    }
    assert!(replies.contains(&"org.freedesktop.DBus.Error.AccessDenied"));
    // Still serving, still the same process.
    assert!(std::path::Path::new(&format!("/proc/{}", env.daemon_pid())).exists());
    env.ctl_ok(ALICE, &["proxy", "set", ETL]);
    assert_eq!(env.resolve(ALICE).0, ETL);
}
