//! The seed's goals and caller authorization, through a real bus as real users.

mod common;

use common::*;

const NOT_ALLOWED: &str = "org.proxyuserd1.Error.NotAllowed";
const ACCESS_DENIED: &str = "org.freedesktop.DBus.Error.AccessDenied";

#[test]
fn a_login_chooses_one_proxy_at_a_time_and_a_proxy_serves_many_logins() {
    let env = Env::start("seed");
    let (etl_uid, etl_gid) = ids(ETL);

    // Before choosing, alice acts as herself.
    let me = env.ctl_json(ALICE, &["resolve"]);
    assert_eq!(me["effective"], ALICE);
    assert_eq!(me["proxy"], "");
    assert_eq!(me["uid"], ids(ALICE).0);

    // alice may proxy to etl: Resolve then gives etl with etl's uid and gid.
    assert!(
        env.ctl_json(ALICE, &["proxy", "list"])
            .as_array()
            .unwrap()
            .contains(&ETL.into())
    );
    env.ctl_ok(ALICE, &["proxy", "set", ETL]);
    let me = env.ctl_json(ALICE, &["resolve"]);
    assert_eq!(
        (me["effective"].as_str(), me["proxy"].as_str()),
        (Some(ETL), Some(ETL))
    );
    assert_eq!(
        (me["uid"].as_u64(), me["gid"].as_u64()),
        (Some(etl_uid.into()), Some(etl_gid.into()))
    );

    // A second SetProxy replaces the first (pxt-report is proxy-type through its
    // primary group pxt-svc, which the data team may use).
    env.ctl_ok(ALICE, &["proxy", "set", REPORT]);
    assert_eq!(env.resolve(ALICE), (REPORT.to_string(), REPORT.to_string()));

    // bob and alice both proxy to etl at once.
    env.ctl_ok(ALICE, &["proxy", "set", ETL]);
    env.ctl_ok(BOB, &["proxy", "set", ETL]);
    assert_eq!(env.resolve(ALICE), (ETL.to_string(), ETL.to_string()));
    assert_eq!(env.resolve(BOB), (ETL.to_string(), ETL.to_string()));

    // ClearProxy: back to herself; bob keeps his proxy.
    env.ctl_ok(ALICE, &["proxy", "clear"]);
    assert_eq!(env.resolve(ALICE), (ALICE.to_string(), String::new()));
    assert_eq!(env.resolve(BOB).0, ETL);
}

#[test]
fn proxy_users_cannot_proxy_and_root_is_never_a_target() {
    let env = Env::start("noproxy");
    let err = env.ctl_err(ETL, &["proxy", "set", REPORT], NOT_ALLOWED);
    assert!(
        err.contains("pxt-etl is a proxy user and proxy users cannot proxy"),
        "{err}"
    );
    // Proxy-type through the primary group only.
    env.ctl_err(REPORT, &["proxy", "set", ETL], NOT_ALLOWED);

    let err = env.ctl_err(ALICE, &["proxy", "set", "root"], NOT_ALLOWED);
    assert!(err.contains("root is never a proxy user"), "{err}");
    // Admins and trusted callers are never proxy users, whatever a rule says.
    env.add_rule("[[allow]]\nlogins = [\"pxt-alice\"]\nproxies = [\"pxt-admin\", \"pxt-gw\"]\n");
    let err = env.ctl_err(ALICE, &["proxy", "set", ADMIN], NOT_ALLOWED);
    assert!(
        err.contains(
            "pxt-admin is a member of the privileged group pxt-admins and is never a proxy user"
        ),
        "{err}"
    );
    let err = env.ctl_err(ALICE, &["proxy", "set", GATEWAY], NOT_ALLOWED);
    assert!(err.contains("pxt-gw is a trusted caller"), "{err}");

    // Without a rule, no.
    let err = env.ctl_err(CAROL, &["proxy", "set", ETL], NOT_ALLOWED);
    assert!(err.contains("no rule allows it"), "{err}");
    // mallory is in the data team, but denied: deny beats allow.
    let err = env.ctl_err(MALLORY, &["proxy", "set", REPORT], NOT_ALLOWED);
    assert!(err.contains("denied by rule 10-base.toml#3"), "{err}");
    // Not even with a rule that allows everything to everyone.
    env.add_rule("[[allow]]\nlogins=[\"*\"]\nproxies=[\"*\"]\n");
    env.ctl_err(ALICE, &["proxy", "set", "root"], NOT_ALLOWED);
    let check = env.ctl(ROOT, &["--json", "check", ALICE, "root"]);
    assert_eq!(check.code, 1, "check exits 1 when not allowed");
    let check: serde_json::Value = serde_json::from_str(&check.stdout).unwrap();
    assert_eq!(check["allowed"], false);
    assert_eq!(check["reason"], "root is never a proxy user");
}

#[test]
fn callers_act_for_themselves_unless_trusted_or_admin() {
    let env = Env::start("authz");

    // alice acting for bob: AccessDenied, and a denied record naming both.
    let err = env.ctl_err(ALICE, &["proxy", "set", "--login", BOB, ETL], ACCESS_DENIED);
    assert!(err.contains("may not act for login pxt-bob"), "{err}");
    env.ctl_err(ALICE, &["resolve", BOB], ACCESS_DENIED);
    env.ctl_err(ALICE, &["check", BOB, ETL], ACCESS_DENIED);
    env.ctl_err(ALICE, &["proxy", "list", "--login", BOB], ACCESS_DENIED);
    env.ctl_err(ALICE, &["proxy", "clear", "--login", BOB], ACCESS_DENIED);
    let denied = env.audit_events("denied");
    assert_eq!(denied.len(), 5, "{denied:?}");
    let first = &denied[0];
    assert_eq!(first["login"], BOB);
    assert_eq!(first["operation"], "SetProxy");
    assert_eq!(first["caller"], ALICE);
    assert_eq!(first["caller_uid"], ids(ALICE).0.to_string());
    assert!(first["caller_pid"].parse::<u32>().unwrap() > 1);
    assert_eq!(
        env.resolve(BOB).1,
        "",
        "the denied SetProxy changed nothing"
    );

    // A trusted caller (the gateway) acts for any login, web logins without accounts too.
    env.ctl_ok(GATEWAY, &["proxy", "set", "--login", BOB, ETL]);
    assert_eq!(env.resolve(BOB).0, ETL);
    let web = env.ctl_json(GATEWAY, &["resolve", "web-user-17"]);
    assert_eq!(web["effective"], "web-user-17");
    assert_eq!(web["uid"], serde_json::Value::Null);
    env.busctl(
        GATEWAY,
        &[
            "call",
            "org.proxyuserd1",
            "/org/proxyuserd1",
            "org.proxyuserd1.Identity",
            "Resolve",
            "s",
            "web-user-17",
        ],
    )
    .stdout
    .contains("4294967295")
    .then_some(())
    .expect("uid 4294967295 for a login without account");

    // An admin acts for any login and may use Admin; others may not.
    env.ctl_ok(ADMIN, &["proxy", "clear", "--login", BOB]);
    env.ctl_ok(ADMIN, &["rules", "list"]);
    env.ctl_ok(ADMIN, &["audit"]);
    for args in [
        &["rules", "list"][..],
        &["rules", "reload"],
        &["audit"],
        &["rules", "remove", "live-1"],
    ] {
        let err = env.ctl_err(ALICE, args, ACCESS_DENIED);
        assert!(
            err.contains("is not an admin (root or a member of pxt-admins)"),
            "{err}"
        );
        env.ctl_err(GATEWAY, args, ACCESS_DENIED);
    }
    let admin_denials = env
        .audit_events("denied")
        .into_iter()
        .filter(|r| r.get("login").is_none())
        .count();
    assert_eq!(admin_denials, 8);
}

#[test]
fn only_root_may_own_the_name() {
    let env = Env::start("own");
    let request = |user: &str| {
        let mut command = env.command_as(user, "dbus-send");
        command.args([
            &format!("--bus={}", env.address),
            "--print-reply",
            "--dest=org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus.RequestName",
            "string:org.proxyuserd1",
            "uint32:4",
        ]);
        command.output().unwrap()
    };
    let out = request(ALICE);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("org.freedesktop.DBus.Error.AccessDenied"),
        "{stderr}"
    );
    // root may (and is queued behind the daemon: reply 3, "exists", with DO_NOT_QUEUE).
    let out = request(ROOT);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("uint32 3"));
}
