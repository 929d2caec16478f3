//! State survives restarts, including SIGKILL right after a successful reply.

mod common;

use common::*;

#[test]
fn associations_and_rules_survive_a_clean_restart() {
    let mut env = Env::start("restart");
    env.ctl_ok(ALICE, &["proxy", "set", ETL]);
    env.ctl_ok(BOB, &["proxy", "set", REPORT]);
    let id = env.add_rule("[[allow]]\nlogins = [\"pxt-carol\"]\nproxies = [\"pxt-etl\"]\n");
    env.ctl_ok(CAROL, &["proxy", "set", ETL]);
    let audit_before = env.audit().len();

    env.restart();
    assert_eq!(env.resolve(ALICE), (ETL.to_string(), ETL.to_string()));
    assert_eq!(env.resolve(BOB), (REPORT.to_string(), REPORT.to_string()));
    assert_eq!(env.resolve(CAROL), (ETL.to_string(), ETL.to_string()));
    assert!(env.rules().iter().any(|r| r["id"] == id.as_str()));
    let audit = env.audit();
    assert_eq!(
        audit.len(),
        audit_before,
        "a restart with unchanged files records nothing"
    );
    assert!(env.ctl(ROOT, &["audit", "--verify"]).ok());
}

#[test]
fn nothing_a_client_was_told_is_lost_to_sigkill() {
    let mut env = Env::start("kill9");
    let rounds = [(ALICE, ETL), (BOB, REPORT), (ALICE, REPORT), (BOB, ETL)];
    for (i, (login, proxy)) in rounds.iter().enumerate() {
        env.ctl_ok(login, &["proxy", "set", proxy]);
        let id = env.add_rule(&format!(
            "[[deny]]\nlogins = [\"web-{i}\"]\nproxies = [\"*\"]\n"
        ));
        // SIGKILL right after the replies: no shutdown, no flush but the one before replying.
        env.kill_daemon();
        env.start_daemon();
        assert_eq!(env.resolve(login).0, *proxy, "round {i}");
        assert!(
            env.rules().iter().any(|r| r["id"] == id.as_str()),
            "round {i}"
        );
    }
    env.ctl_ok(ALICE, &["proxy", "clear"]);
    env.kill_daemon();
    env.start_daemon();
    assert_eq!(env.resolve(ALICE).1, "");
    let verify = env.ctl(ROOT, &["audit", "--verify"]);
    assert!(verify.ok(), "{}", verify.stdout);
    // 1 start reload + per round: proxy-set + rule-added; then proxy-cleared.
    assert_eq!(env.audit().len(), 1 + 2 * rounds.len() + 1);
}
