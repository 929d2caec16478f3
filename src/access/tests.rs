//! The access rules as tables: every caller kind × every operation, every caller kind ×
//! every kind of target account, in the manner of sudo-rs's policy tests.

use super::*;

const LOGIN: &str = "alice";

struct Account {
    name: &'static str,
    uid: u32,
    groups: Vec<String>,
    gids: Vec<u32>,
    proxy_type: bool,
}

impl Account {
    fn new(name: &'static str, uid: u32, groups: &[(&str, u32)]) -> Self {
        Account {
            name,
            uid,
            groups: groups.iter().map(|(g, _)| g.to_string()).collect(),
            gids: groups.iter().map(|(_, gid)| *gid).collect(),
            proxy_type: false,
        }
    }

    fn proxy_type(mut self) -> Self {
        self.proxy_type = true;
        self
    }

    fn facts(&self) -> AccountFacts<'_> {
        AccountFacts {
            name: self.name,
            uid: self.uid,
            groups: &self.groups,
            gids: &self.gids,
            proxy_type: self.proxy_type,
        }
    }
}

fn trusted() -> Vec<String> {
    vec!["gw".into()]
}

fn privileged() -> Vec<String> {
    vec!["sudo".into(), "wheel".into(), "admin".into()]
}

fn policy<'a>(
    trusted: &'a [String],
    privileged: &'a [String],
    gateway_as_login: bool,
) -> Policy<'a> {
    Policy {
        admin_group: Some("pxadmins"),
        trusted_callers: trusted,
        uid_min: 1000,
        privileged_groups: privileged,
        gateway_runs_as_login: gateway_as_login,
    }
}

/// The kinds of callers: (label, caller).
fn callers() -> Vec<(&'static str, Caller)> {
    let (t, p) = (trusted(), privileged());
    let policy = policy(&t, &p, true);
    let alice = Account::new("alice", 1001, &[("alice", 1001)]);
    let bob = Account::new("bob", 1002, &[("bob", 1002)]);
    let gw = Account::new("gw", 1003, &[("gw", 1003)]);
    let admin = Account::new("ada", 1004, &[("ada", 1004), ("pxadmins", 1100)]);
    vec![
        ("root", classify(0, 1, None, false, &policy)),
        (
            "admin",
            classify(1004, 1, Some(&admin.facts()), false, &policy),
        ),
        (
            "gateway",
            classify(1003, 1, Some(&gw.facts()), false, &policy),
        ),
        (
            "self",
            classify(1001, 1, Some(&alice.facts()), false, &policy),
        ),
        (
            "other",
            classify(1002, 1, Some(&bob.facts()), false, &policy),
        ),
        ("no-account", classify(4242, 1, None, false, &policy)),
        // gw's uid with a second name: no name of a shared uid is trusted or admin.
        (
            "shared-uid",
            classify(1003, 1, Some(&gw.facts()), true, &policy),
        ),
        (
            "shared-admin",
            classify(1004, 1, Some(&admin.facts()), true, &policy),
        ),
    ]
}

fn verdict(v: Verdict) -> &'static str {
    if v.is_ok() { "pass" } else { "FAIL" }
}

#[test]
fn who_may_make_which_call() {
    let (t, p) = (trusted(), privileged());
    let policy = policy(&t, &p, true);
    // caller → act for alice, admin call, gateway call, PAM call
    let table = [
        ("root", ["pass", "pass", "pass", "pass"]),
        ("admin", ["pass", "pass", "FAIL", "FAIL"]),
        ("gateway", ["pass", "FAIL", "pass", "FAIL"]),
        ("self", ["pass", "FAIL", "FAIL", "FAIL"]),
        ("other", ["FAIL", "FAIL", "FAIL", "FAIL"]),
        ("no-account", ["FAIL", "FAIL", "FAIL", "FAIL"]),
        ("shared-uid", ["FAIL", "FAIL", "FAIL", "FAIL"]),
        ("shared-admin", ["FAIL", "FAIL", "FAIL", "FAIL"]),
    ];
    let callers = callers();
    assert_eq!(callers.len(), table.len());
    for (label, want) in table {
        let caller = &callers.iter().find(|(l, _)| *l == label).unwrap().1;
        let got = [
            verdict(act_for(caller, LOGIN)),
            verdict(admin(caller, "Reload", &policy)),
            verdict(gateway(caller, "OpenSession")),
            verdict(pam_client(caller, "Authorize")),
        ];
        assert_eq!(got, want, "caller {label}");
    }
}

/// The kinds of accounts a job could run as or a proxy could be.
fn targets() -> Vec<(&'static str, Account)> {
    vec![
        (
            "ordinary",
            Account::new("carol", 1010, &[("carol", 1010), ("data", 2000)]),
        ),
        ("system", Account::new("www-data", 33, &[("www-data", 33)])),
        ("root", Account::new("root", 0, &[("root", 0)])),
        (
            "gid-0",
            Account::new("toor", 1011, &[("toor", 1011), ("root", 0)]),
        ),
        (
            "sudoer",
            Account::new("sam", 1012, &[("sam", 1012), ("sudo", 27)]),
        ),
        (
            "admin",
            Account::new("ada", 1004, &[("ada", 1004), ("pxadmins", 1100)]),
        ),
        ("gateway", Account::new("gw", 1003, &[("gw", 1003)])),
        (
            "proxy-type",
            Account::new("etl", 1020, &[("etl", 1020)]).proxy_type(),
        ),
    ]
}

#[test]
fn which_accounts_may_be_proxies_and_run_jobs_for_themselves() {
    let (t, p) = (trusted(), privileged());
    let policy = policy(&t, &p, true);
    // target → may be a proxy user; a job as it when it is the proxy; a job as the
    // login itself (asked by itself); a web session for it
    let table = [
        ("ordinary", ["pass", "pass", "pass", "pass"]),
        ("system", ["pass", "pass", "FAIL", "FAIL"]),
        ("root", ["FAIL", "FAIL", "FAIL", "FAIL"]),
        ("gid-0", ["FAIL", "FAIL", "FAIL", "FAIL"]),
        ("sudoer", ["FAIL", "FAIL", "FAIL", "FAIL"]),
        ("admin", ["FAIL", "FAIL", "FAIL", "FAIL"]),
        ("gateway", ["FAIL", "FAIL", "FAIL", "FAIL"]),
        ("proxy-type", ["pass", "pass", "FAIL", "FAIL"]),
    ];
    let targets = targets();
    assert_eq!(targets.len(), table.len());
    for (label, want) in table {
        let account = &targets.iter().find(|(l, _)| *l == label).unwrap().1;
        let facts = account.facts();
        let itself = classify(account.uid, 1, Some(&facts), false, &policy);
        let proxy = Acting::Proxy(facts.clone());
        let own = Acting::Itself(Some(facts.clone()));
        let got = [
            verdict(proxy_target(&facts, &policy)),
            verdict(run_as(&itself, "someone", &proxy, &policy).map(drop)),
            verdict(run_as(&itself, account.name, &own, &policy).map(drop)),
            verdict(session_login(Some(&facts), &policy)),
        ];
        assert_eq!(got, want, "target {label}");
    }
}

#[test]
fn who_may_run_a_job_as_an_ordinary_login_itself() {
    let (t, p) = (trusted(), privileged());
    let carol = Account::new("carol", 1010, &[("carol", 1010)]);
    let facts = carol.facts();
    let own = Acting::Itself(Some(facts.clone()));
    let gw = Account::new("gw", 1003, &[("gw", 1003)]);
    for (gateway_as_login, want) in [(true, "pass"), (false, "FAIL")] {
        let policy = policy(&t, &p, gateway_as_login);
        let gateway = classify(1003, 1, Some(&gw.facts()), false, &policy);
        let itself = classify(1010, 1, Some(&facts), false, &policy);
        assert_eq!(
            verdict(run_as(&gateway, "carol", &own, &policy).map(drop)),
            want,
            "gateway_runs_as_login = {gateway_as_login}"
        );
        // The login asking for itself is never a gateway's request.
        assert_eq!(
            verdict(run_as(&itself, "carol", &own, &policy).map(drop)),
            "pass"
        );
    }
    let policy = policy(&t, &p, true);
    let root = classify(0, 1, None, false, &policy);
    let nobody = Acting::Itself(None);
    let err = run_as(&root, "web-user", &nobody, &policy).unwrap_err();
    assert_eq!(
        err.to_string(),
        "web-user has no proxy and no system account: there is no user to run as"
    );
}

#[test]
fn jobs_are_visible_to_their_effective_user_and_admins_alike_absent() {
    let callers = callers();
    let get = |label: &str| &callers.iter().find(|(l, _)| *l == label).unwrap().1;
    assert!(job_visible(get("self"), "etl", "etl", "j1").is_ok());
    assert!(job_visible(get("admin"), "alice", "etl", "j1").is_ok());
    assert!(job_visible(get("root"), "alice", "etl", "j1").is_ok());
    let err = job_visible(get("gateway"), "alice", "etl", "j1").unwrap_err();
    // Another user's job gets the answer of a job that does not exist.
    assert_eq!(err.to_string(), "no job j1");
}

#[test]
fn refusals_read_as_sentences() {
    let (t, p) = (trusted(), privileged());
    let policy = policy(&t, &p, true);
    let callers = callers();
    let other = &callers.iter().find(|(l, _)| *l == "other").unwrap().1;
    assert_eq!(
        admin(other, "AuditLog", &policy).unwrap_err().to_string(),
        "bob is not an admin (root or a member of pxadmins): AuditLog is for admins"
    );
    assert_eq!(
        act_for(other, "alice").unwrap_err().to_string(),
        "bob may not act for login alice"
    );
    let sam = Account::new("sam", 1012, &[("sam", 1012), ("sudo", 27)]);
    assert_eq!(
        proxy_target(&sam.facts(), &policy).unwrap_err().to_string(),
        "sam is a member of the privileged group sudo and is never a proxy user"
    );
}
