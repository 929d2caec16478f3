//! Behaviour through the D-Bus API, in process: the daemon's authority, store and
//! interfaces over peer-to-peer connections, with a table of accounts, a clock moved by
//! hand and a fake job runner (`proxyuserd::testing`). No root, no bus daemon, no
//! journald; each test has its own state directory, so they run in parallel. What only
//! real parts show (the bus policy, identity switches, systemd, journald) stays in the
//! other suites.

use std::collections::HashMap;
use std::time::Duration;

use nix::sys::signal::Signal;
use proxyuserd::authority::Notice;
use proxyuserd::testing::{
    ADMIN, ALICE, BOB, CAROL, ETL, GATEWAY, Harness, MALLORY, REPORT, START,
};
use proxyuserd::wire::errors;

/// The D-Bus error name and message of a failed call.
fn error_name(result: zbus::Result<impl std::fmt::Debug>) -> (String, String) {
    use zbus::DBusError;
    match result {
        Err(zbus::Error::MethodError(name, message, _)) => {
            (name.to_string(), message.unwrap_or_default())
        }
        // zbus reads the freedesktop names (AccessDenied, InvalidArgs, …) as its own.
        Err(zbus::Error::FDO(err)) => (
            err.name().to_string(),
            err.description().unwrap_or_default().to_string(),
        ),
        other => panic!("expected a D-Bus error, got {other:?}"),
    }
}

/// The next change of an association the daemon announced (other notices skipped).
async fn next_proxy_change(harness: &Harness) -> Notice {
    let mut notices = harness.notices.lock().await;
    loop {
        let notice = tokio::time::timeout(Duration::from_secs(5), notices.recv())
            .await
            .expect("a notice within 5 s")
            .expect("the notice channel is open");
        if matches!(notice, Notice::ProxyChanged { .. }) {
            return notice;
        }
    }
}

fn no_env() -> HashMap<&'static str, &'static str> {
    HashMap::new()
}

#[tokio::test]
async fn a_login_sets_resolves_and_clears_its_proxy() {
    let harness = Harness::start().await;
    let alice = harness.client_as(ALICE).await;
    let alice_uid = harness.accounts.uid(ALICE);

    let (effective, proxy, uid, _) = alice.identity.resolve(ALICE).await.unwrap();
    assert_eq!(
        (effective.as_str(), proxy.as_str(), uid),
        (ALICE, "", alice_uid)
    );

    alice.identity.set_proxy(ALICE, ETL).await.unwrap();
    let (effective, proxy, uid, _) = alice.identity.resolve(ALICE).await.unwrap();
    assert_eq!((effective.as_str(), proxy.as_str()), (ETL, ETL));
    assert_eq!(uid, harness.accounts.uid(ETL));

    // A second SetProxy replaces the first; `report` is a proxy user by its group.
    alice.identity.set_proxy(ALICE, REPORT).await.unwrap();
    assert_eq!(alice.identity.resolve(ALICE).await.unwrap().1, REPORT);

    alice.identity.clear_proxy(ALICE).await.unwrap();
    let (effective, proxy, ..) = alice.identity.resolve(ALICE).await.unwrap();
    assert_eq!((effective.as_str(), proxy.as_str()), (ALICE, ""));
    let proxy_change = |proxy: &str, why: &'static str| Notice::ProxyChanged {
        login: ALICE.into(),
        proxy: proxy.into(),
        why,
    };
    assert_eq!(next_proxy_change(&harness).await, proxy_change(ETL, "set"));
    assert_eq!(
        next_proxy_change(&harness).await,
        proxy_change(REPORT, "set")
    );
    assert_eq!(
        next_proxy_change(&harness).await,
        proxy_change(REPORT, "cleared")
    );
}

#[tokio::test]
async fn check_proxy_follows_allow_and_deny_rules() {
    let harness = Harness::start().await;
    let alice = harness.client_as(ALICE).await;
    let (allowed, reason) = alice.identity.check_proxy(ALICE, ETL).await.unwrap();
    assert!(allowed, "{reason}");

    // mallory is in the data team, but a deny rule beats the allow rule.
    let mallory = harness.client_as(MALLORY).await;
    let (allowed, reason) = mallory.identity.check_proxy(MALLORY, ETL).await.unwrap();
    assert!(!allowed);
    assert!(reason.contains("denied by rule 10-base.toml#2"), "{reason}");
    let (name, _) = error_name(mallory.identity.set_proxy(MALLORY, ETL).await);
    assert_eq!(name, errors::NOT_ALLOWED);

    // carol is in no team: no rule allows her.
    let carol = harness.client_as(CAROL).await;
    let (allowed, reason) = carol.identity.check_proxy(CAROL, ETL).await.unwrap();
    assert!(!allowed);
    assert!(reason.contains("no rule allows it"), "{reason}");
    assert_eq!(
        alice.identity.list_proxies(ALICE).await.unwrap(),
        vec![ETL.to_string(), REPORT.to_string()]
    );
    assert!(carol.identity.list_proxies(CAROL).await.unwrap().is_empty());
}

#[tokio::test]
async fn callers_act_only_for_themselves_unless_trusted() {
    let harness = Harness::start().await;
    let bob = harness.client_as(BOB).await;
    let (name, message) = error_name(bob.identity.set_proxy(ALICE, ETL).await);
    assert_eq!(name, errors::ACCESS_DENIED, "{message}");
    let (name, _) = error_name(bob.identity.resolve(ALICE).await);
    assert_eq!(name, errors::ACCESS_DENIED);

    // The gateway acts for its web users.
    let gateway = harness.client_as(GATEWAY).await;
    gateway.identity.set_proxy(ALICE, ETL).await.unwrap();
    assert_eq!(bob.identity.resolve(BOB).await.unwrap().0, BOB);
    assert_eq!(gateway.identity.resolve(ALICE).await.unwrap().0, ETL);

    // The refusals are in the audit log.
    let admin = harness.client_as(ADMIN).await;
    let denied: Vec<_> = admin
        .admin
        .audit_log(0, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|(_, r)| r["event"] == "denied")
        .map(|(_, r)| r["operation"].clone())
        .collect();
    assert_eq!(denied, ["SetProxy", "Resolve"]);
}

#[tokio::test]
async fn a_proxy_user_cannot_proxy_further() {
    let harness = Harness::start().await;
    let etl = harness.client_as(ETL).await;
    let (name, message) = error_name(etl.identity.set_proxy(ETL, REPORT).await);
    assert_eq!(name, errors::NOT_ALLOWED);
    assert!(
        message.contains("etl is a proxy user and proxy users cannot proxy"),
        "{message}"
    );
    assert_eq!(etl.identity.resolve(ETL).await.unwrap().1, "");
}

#[tokio::test]
async fn an_unknown_account_is_no_such_user() {
    let harness = Harness::start().await;
    let alice = harness.client_as(ALICE).await;
    let (name, message) = error_name(alice.identity.set_proxy(ALICE, "ghost").await);
    assert_eq!(name, errors::NO_SUCH_USER);
    assert!(message.contains("no system user ghost"), "{message}");

    // An account deleted from the directory is gone at once (no cache here).
    harness.accounts.remove(ETL);
    let (name, _) = error_name(alice.identity.set_proxy(ALICE, ETL).await);
    assert_eq!(name, errors::NO_SUCH_USER);
}

#[tokio::test]
async fn only_admins_reload_and_add_rules() {
    let harness = Harness::start().await;
    let carol = harness.client_as(CAROL).await;
    let (name, _) = error_name(carol.admin.reload().await);
    assert_eq!(name, errors::ACCESS_DENIED);
    let rule = "[[allow]]\nlogins = [\"carol\"]\nproxies = [\"etl\"]\n";
    let (name, _) = error_name(carol.admin.add_rule(rule).await);
    assert_eq!(name, errors::ACCESS_DENIED);
    assert!(!carol.identity.check_proxy(CAROL, ETL).await.unwrap().0);

    // An admin's rule counts at once; a reload keeps it (it is not from a file).
    let admin = harness.client_as(ADMIN).await;
    let before = admin.admin.rules_generation().await.unwrap();
    admin.admin.add_rule(rule).await.unwrap();
    assert!(carol.identity.check_proxy(CAROL, ETL).await.unwrap().0);
    carol.identity.set_proxy(CAROL, ETL).await.unwrap();
    let generation = admin.admin.reload().await.unwrap();
    assert!(generation > before, "{generation} after {before}");
    assert!(carol.identity.check_proxy(CAROL, ETL).await.unwrap().0);
}

#[tokio::test]
async fn a_reload_that_drops_a_rule_revokes_its_associations() {
    let harness = Harness::start().await;
    let alice = harness.client_as(ALICE).await;
    alice.identity.set_proxy(ALICE, ETL).await.unwrap();
    // The file now lets the data team use `svc` only.
    harness.write_rules(
        "10-base.toml",
        "[proxy_users]\ngroups = [\"svc\"]\n\n[[allow]]\nlogin_groups = [\"data-eng\"]\nproxy_groups = [\"svc\"]\n",
    );
    let admin = harness.client_as(ADMIN).await;
    admin.admin.reload().await.unwrap();
    assert_eq!(alice.identity.resolve(ALICE).await.unwrap().0, ALICE);
    assert!(!alice.identity.check_proxy(ALICE, ETL).await.unwrap().0);
    assert!(alice.identity.check_proxy(ALICE, REPORT).await.unwrap().0);
}

#[tokio::test]
async fn an_expired_rule_ends_its_associations_at_the_next_revalidation() {
    let rules = "[proxy_users]\nusers = [\"etl\"]\n\n[[allow]]\nlogins = [\"alice\"]\nproxies = [\"etl\"]\nexpires = 2030-01-02T00:00:00Z\n";
    let harness = Harness::with(&[("10-until.toml", rules)], |_| {}).await;
    let alice = harness.client_as(ALICE).await;
    alice.identity.set_proxy(ALICE, ETL).await.unwrap();

    // Before the expiry the sweep keeps it.
    harness.clock.advance(Duration::from_secs(3600));
    assert_eq!(harness.authority.sweep(), 0);
    assert_eq!(alice.identity.resolve(ALICE).await.unwrap().0, ETL);

    harness.clock.advance(Duration::from_secs(24 * 3600));
    assert_eq!(harness.authority.sweep(), 1);
    assert_eq!(alice.identity.resolve(ALICE).await.unwrap().0, ALICE);
    let (allowed, _) = alice.identity.check_proxy(ALICE, ETL).await.unwrap();
    assert!(!allowed);
    let _set = next_proxy_change(&harness).await;
    assert_eq!(
        next_proxy_change(&harness).await,
        Notice::ProxyChanged {
            login: ALICE.into(),
            proxy: ETL.into(),
            why: "revoked"
        }
    );
}

#[tokio::test]
async fn a_session_ends_when_the_clock_passes_its_idle_timeout() {
    let harness = Harness::configured(|c| {
        c.sessions.idle_secs = 600;
    })
    .await;
    let gateway = harness.client_as(GATEWAY).await;
    let ticket = gateway.sessions.open_session(ALICE).await.unwrap();
    let (login, effective, proxy, ..) = gateway.sessions.resolve_ticket(&ticket).await.unwrap();
    assert_eq!(
        (login.as_str(), effective.as_str(), proxy.as_str()),
        (ALICE, ALICE, "")
    );

    // A proxy ticket on top of it acts as etl.
    let proxied = gateway
        .sessions
        .open_proxy_session(&ticket, ETL)
        .await
        .unwrap();
    assert_eq!(
        gateway.sessions.resolve_ticket(&proxied).await.unwrap().1,
        ETL
    );

    // Only gateways hold tickets.
    let alice = harness.client_as(ALICE).await;
    let (name, _) = error_name(alice.sessions.resolve_ticket(&ticket).await);
    assert_eq!(name, errors::ACCESS_DENIED);

    harness.clock.advance(Duration::from_secs(599));
    gateway.sessions.resolve_ticket(&ticket).await.unwrap();
    harness.clock.advance(Duration::from_secs(601));
    let (name, _) = error_name(gateway.sessions.resolve_ticket(&ticket).await);
    assert_eq!(name, errors::NO_SUCH_SESSION);
    let (name, _) = error_name(gateway.sessions.resolve_ticket(&proxied).await);
    assert_eq!(name, errors::NO_SUCH_SESSION);
    assert_eq!(harness.authority.now(), START + 1_200_000_000);
}

#[tokio::test]
async fn a_job_runs_as_the_proxy_and_its_exit_status_is_waited_for() {
    let harness = Harness::start().await;
    let alice = harness.client_as(ALICE).await;
    alice.identity.set_proxy(ALICE, ETL).await.unwrap();
    let mut env = no_env();
    env.insert("SECRET", "not passed on");
    let id = alice
        .jobs
        .exec(ALICE, &["/fake/exit", "3"], &env, "")
        .await
        .unwrap();
    let (state, code) = alice.jobs.wait(ALICE, &id).await.unwrap();
    assert_eq!((state.as_str(), code), ("exited", 3));

    let started = harness.runner.started(&id).expect("the runner was asked");
    assert_eq!((started.user.as_str(), started.uid), (ETL, 2001));
    assert_eq!(started.cwd, std::path::Path::new("/home/etl"));
    let vars: HashMap<_, _> = started.env.into_iter().collect();
    assert_eq!(vars.get("USER").map(String::as_str), Some(ETL));
    assert!(!vars.contains_key("SECRET"), "{vars:?}");

    // The job is etl's: bob does not see it, nor can he name it.
    let bob = harness.client_as(BOB).await;
    let (name, _) = error_name(bob.jobs.wait(BOB, &id).await);
    assert_eq!(name, errors::NO_SUCH_JOB);
    let jobs = alice.jobs.list_jobs(ALICE).await.unwrap();
    assert_eq!(jobs.len(), 1);
    let (job, login, run_as, _, state, started, _, code) = &jobs[0];
    assert_eq!(
        (
            job.as_str(),
            login.as_str(),
            run_as.as_str(),
            state.as_str(),
            *code
        ),
        (id.as_str(), ALICE, ETL, "exited", 3)
    );
    // Times are the harness clock's.
    assert_eq!(*started, START as u64);
}

#[tokio::test]
async fn a_cancelled_job_gets_sigterm_and_ends_killed() {
    let harness = Harness::start().await;
    let alice = harness.client_as(ALICE).await;
    let id = alice
        .jobs
        .exec(ALICE, &["/fake/sleep", "infinity"], &no_env(), "/tmp")
        .await
        .unwrap();
    // Without a proxy, alice's job runs as alice.
    assert_eq!(harness.runner.started(&id).unwrap().user, ALICE);
    alice.jobs.cancel(ALICE, &id).await.unwrap();
    let (state, code) = alice.jobs.wait(ALICE, &id).await.unwrap();
    assert_eq!(
        (state.as_str(), code),
        ("killed", 128 + Signal::SIGTERM as i32)
    );
    assert_eq!(harness.runner.signals(&id), [Signal::SIGTERM]);
}

#[tokio::test]
async fn a_job_that_ignores_sigterm_is_killed_after_the_grace() {
    let harness = Harness::configured(|c| {
        c.exec.kill_grace_secs = 1;
    })
    .await;
    let alice = harness.client_as(ALICE).await;
    let id = alice
        .jobs
        .exec(ALICE, &["/fake/stubborn"], &no_env(), "")
        .await
        .unwrap();
    alice.jobs.cancel(ALICE, &id).await.unwrap();
    let (state, code) = alice.jobs.wait(ALICE, &id).await.unwrap();
    assert_eq!(
        (state.as_str(), code),
        ("killed", 128 + Signal::SIGKILL as i32)
    );
    assert_eq!(
        harness.runner.signals(&id),
        [Signal::SIGTERM, Signal::SIGKILL]
    );
}

#[tokio::test]
async fn a_program_that_cannot_start_is_the_callers_fault_and_recorded_failed() {
    let harness = Harness::start().await;
    let alice = harness.client_as(ALICE).await;
    let (name, message) = error_name(
        alice
            .jobs
            .exec(ALICE, &["/fake/missing"], &no_env(), "")
            .await,
    );
    assert_eq!(name, errors::INVALID_ARGS, "{message}");
    let jobs = alice.jobs.list_jobs(ALICE).await.unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!((jobs[0].2.as_str(), jobs[0].4.as_str()), (ALICE, "failed"));
    // Nor may anybody start jobs for a login it cannot act for.
    let carol = harness.client_as(CAROL).await;
    let (name, _) = error_name(
        carol
            .jobs
            .exec(ALICE, &["/fake/exit", "0"], &no_env(), "")
            .await,
    );
    assert_eq!(name, errors::ACCESS_DENIED);
}

#[tokio::test]
async fn the_running_job_limit_holds_per_run_as_user() {
    let harness = Harness::configured(|c| {
        c.exec.max_jobs_per_user = 1;
    })
    .await;
    let alice = harness.client_as(ALICE).await;
    let bob = harness.client_as(BOB).await;
    alice.identity.set_proxy(ALICE, ETL).await.unwrap();
    bob.identity.set_proxy(BOB, ETL).await.unwrap();
    let first = alice
        .jobs
        .exec(ALICE, &["/fake/sleep"], &no_env(), "")
        .await
        .unwrap();
    let (name, _) = error_name(bob.jobs.exec(BOB, &["/fake/sleep"], &no_env(), "").await);
    assert_eq!(name, errors::LIMITS_EXCEEDED);
    harness
        .runner
        .finish(&first, proxyuserd::exec::ProcessEnd::Exited(0));
    assert_eq!(alice.jobs.wait(ALICE, &first).await.unwrap().0, "exited");
    // etl's slot is free again: bob (acting as etl too) sees alice's job and may start.
    let second = bob
        .jobs
        .exec(BOB, &["/fake/exit", "0"], &no_env(), "")
        .await
        .unwrap();
    assert_eq!(
        bob.jobs.wait(BOB, &second).await.unwrap(),
        ("exited".into(), 0)
    );
}
