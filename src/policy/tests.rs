use super::*;
use std::sync::Arc;

const NOW: Micros = 1_800_000_000_000_000; // 2027-01-15

fn file(path: &str, text: &str) -> RuleFile {
    parse_rule_file(path, text).unwrap_or_else(|e| panic!("{e}"))
}

fn compile(texts: &[&str]) -> CompiledRules {
    let files = texts
        .iter()
        .enumerate()
        .map(|(i, t)| Arc::new(file(&format!("/etc/r/{i:02}.toml"), t)))
        .collect();
    CompiledRules::compile(files, Vec::new()).unwrap_or_else(|e| panic!("{e}"))
}

fn user<'a>(name: &'a str, groups: &'a [String]) -> Subject<'a> {
    Subject {
        name,
        groups,
        uid: Some(1000),
    }
}

fn error_of(text: &str) -> String {
    parse_rule_file("f.toml", text).unwrap_err().to_string()
}

const DESIGN_EXAMPLE: &str = r#"
# rules.d/10-data-team.toml
[proxy_users]                 # declares proxy-type users (optional)
users  = ["etl", "reporting"]
groups = ["svc-accounts"]     # every member is proxy-type

[[allow]]
logins       = ["alice", "bob"]
login_groups = ["data-eng"]   # NSS group membership of the login user
proxies      = ["etl"]
proxy_groups = ["svc-accounts"]
expires      = 2027-06-30T00:00:00Z   # optional: the rule lapses by itself

[[deny]]                      # deny always beats allow
logins  = ["mallory"]
proxies = ["*"]               # "*" only as the whole list
"#;

#[test]
fn design_example_parses_and_decides() {
    let rules = compile(&[DESIGN_EXAMPLE]);
    assert_eq!(rules.len(), 2);
    let none: Vec<String> = vec![];
    let data_eng = vec!["data-eng".to_string()];
    let svc = vec!["svc-accounts".to_string()];
    let alice = user("alice", &none);
    let etl = user("etl", &none);
    assert!(rules.check(&alice, &etl, NOW).is_allowed());
    assert!(rules.check(&user("bob", &none), &etl, NOW).is_allowed());
    // By login group, and to a member of the proxy group.
    assert!(
        rules
            .check(&user("carol", &data_eng), &user("svc7", &svc), NOW)
            .is_allowed()
    );
    // Not named anywhere.
    assert_eq!(
        rules.check(&user("carol", &none), &etl, NOW),
        Decision::Denied(Denial::NoRule)
    );
    // Deny beats allow even with a matching allow (mallory in data-eng).
    assert_eq!(
        rules.check(&user("mallory", &data_eng), &etl, NOW),
        Decision::Denied(Denial::ByRule("00.toml#2".into()))
    );
    // Proxy-type users cannot proxy, whether declared by name or group.
    assert_eq!(
        rules.check(&etl, &user("reporting", &none), NOW),
        Decision::Denied(Denial::LoginIsProxyUser)
    );
    assert_eq!(
        rules.check(&user("svc7", &svc), &etl, NOW),
        Decision::Denied(Denial::LoginIsProxyUser)
    );
}

#[test]
fn expiry_ends_a_rule_by_itself() {
    let rules = compile(&[DESIGN_EXAMPLE]);
    let none: Vec<String> = vec![];
    let expires = june_30_2027();
    assert!(
        rules
            .check(&user("alice", &none), &user("etl", &none), expires - 1)
            .is_allowed()
    );
    assert_eq!(
        rules.check(&user("alice", &none), &user("etl", &none), expires),
        Decision::Denied(Denial::NoRule)
    );
    assert_eq!(rules.next_expiry(NOW), Some(expires));
    assert_eq!(rules.next_expiry(expires), None);
    assert_eq!(rules.expired_count(expires), 1);
}

fn june_30_2027() -> Micros {
    // 2027-06-30T00:00:00Z
    parse::days_from_civil(2027, 6, 30) * 86_400 * 1_000_000
}

#[test]
fn root_is_never_a_target() {
    let rules = compile(&[
        "[[allow]]\nlogins = [\"*\"]\nproxies = [\"*\"]\n[proxy_users]\nusers=[\"toor\"]\n",
    ]);
    let none: Vec<String> = vec![];
    let toor = Subject {
        name: "toor",
        groups: &none,
        uid: Some(0),
    };
    assert_eq!(
        rules.check(&user("alice", &none), &toor, NOW),
        Decision::Denied(Denial::TargetIsRoot)
    );
    assert!(
        error_of("[[allow]]\nlogins=[\"a\"]\nproxies=[\"root\"]\n")
            .starts_with("f.toml:3:10: root can never")
    );
    assert!(
        error_of("[proxy_users]\nusers=[\"root\"]\n").starts_with("f.toml:2:8: root can never")
    );
    // Denying root is harmless.
    parse_rule_file("f.toml", "[[deny]]\nlogins=[\"a\"]\nproxies=[\"root\"]\n").unwrap();
}

#[test]
fn star_means_proxy_type_users_in_allow_and_anyone_in_deny() {
    let rules = compile(&[
        "[proxy_users]\nusers=[\"etl\"]\n[[allow]]\nlogins=[\"alice\"]\nproxies=[\"*\"]\n",
    ]);
    let none: Vec<String> = vec![];
    assert!(
        rules
            .check(&user("alice", &none), &user("etl", &none), NOW)
            .is_allowed()
    );
    assert_eq!(
        rules.check(&user("alice", &none), &user("bob", &none), NOW),
        Decision::Denied(Denial::NoRule)
    );
    assert_eq!(
        rules.check(&user("x", &none), &user("x", &none), NOW),
        Decision::Denied(Denial::SameUser)
    );
}

#[test]
fn errors_are_located_and_name_the_value() {
    let cases = [
        (
            "[[allow]]\nlogins = [\"al ice\"]\nproxies=[\"etl\"]\n",
            "f.toml:2:11: invalid user name \"al ice\": it contains whitespace",
        ),
        (
            "[[allow]]\nlogins = [\"a\", \"*\"]\nproxies=[\"etl\"]\n",
            "f.toml:2:16: \"*\" must be the whole logins list",
        ),
        (
            "[[allow]]\nlogins = [\"a\"]\nproxy_groups=[\"*\"]\n",
            "f.toml:3:15: \"*\" is not allowed in proxy_groups",
        ),
        (
            "[[allow]]\nproxies=[\"etl\"]\n",
            "f.toml:1:1: [[allow]] names no login: give logins or login_groups",
        ),
        (
            "[[deny]]\nlogins=[\"a\"]\n",
            "f.toml:1:1: [[deny]] names no proxy: give proxies or proxy_groups",
        ),
        (
            "[[allow]]\nlogins=[\"a\"]\nproxies=[\"b\"]\nexpires=2027-01-01T00:00:00\n",
            "f.toml:4:9: expires = 2027-01-01T00:00:00 is not a date-time with an offset, e.g. 2027-06-30T00:00:00Z",
        ),
    ];
    for (text, want) in cases {
        assert_eq!(error_of(text), want, "{text}");
    }
    // Unknown keys and syntax errors are located too.
    assert!(
        error_of("[[allow]]\nlogin = [\"a\"]\n").starts_with("f.toml:2:1: unknown field `login`"),
        "{}",
        error_of("[[allow]]\nlogin = [\"a\"]\n")
    );
    assert!(
        error_of("[[allow]\n").starts_with("f.toml:1:"),
        "{}",
        error_of("[[allow]\n")
    );
    assert!(
        error_of("[[allow]]\nlogins = \"a\"\n").starts_with("f.toml:2:10: invalid type"),
        "{}",
        error_of("[[allow]]\nlogins = \"a\"\n")
    );
}

#[test]
fn chaining_is_a_validation_error_across_files() {
    let a = file(
        "/r/10.toml",
        "[[allow]]\nlogins=[\"alice\"]\nproxies=[\"etl\"]\n",
    );
    let b = file(
        "/r/20.toml",
        "[[allow]]\nlogins=[\"bob\", \"etl\"]\nproxies=[\"other\"]\n",
    );
    let err =
        CompiledRules::compile(vec![Arc::new(a.clone()), Arc::new(b)], Vec::new()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "/r/20.toml:2:16: etl is a proxy user (made one at /r/10.toml:3:10) and proxy users cannot proxy"
    );
    let c = file(
        "/r/30.toml",
        "[proxy_users]\ngroups=[\"svc\"]\n[[allow]]\nlogin_groups=[\"svc\"]\nproxies=[\"x\"]\n",
    );
    let err = CompiledRules::compile(vec![Arc::new(c)], Vec::new()).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("/r/30.toml:4:15: group svc holds proxy users"),
        "{err}"
    );
    // A live rule is checked against the files as well.
    let live = parse_live_rule("live-1", "[[allow]]\nlogins=[\"etl\"]\nproxies=[\"x\"]\n").unwrap();
    let err = CompiledRules::compile(vec![Arc::new(a)], vec![live]).unwrap_err();
    assert!(
        err.to_string().starts_with("rule:2:9: etl is a proxy user"),
        "{err}"
    );
}

#[test]
fn live_rule_is_exactly_one_table() {
    let rule = parse_live_rule("live-7", "[[deny]]\nlogins=[\"m\"]\nproxies=[\"*\"]\n").unwrap();
    assert_eq!(rule.id, "live-7");
    assert_eq!(rule.source, Source::Live);
    assert_eq!(rule.effect, Effect::Deny);
    let two =
        "[[deny]]\nlogins=[\"m\"]\nproxies=[\"*\"]\n[[allow]]\nlogins=[\"a\"]\nproxies=[\"b\"]\n";
    assert_eq!(
        parse_live_rule("x", two).unwrap_err().to_string(),
        "rule:1:1: a rule is exactly one [[allow]] or [[deny]] table, this text has 2"
    );
    assert!(parse_live_rule("x", "[proxy_users]\nusers=[\"e\"]\n").is_err());
    assert!(parse_live_rule("x", "").is_err());
}

#[test]
fn rules_render_back_to_equivalent_toml() {
    let rules = compile(&[DESIGN_EXAMPLE]);
    let texts: Vec<String> = rules.rules().map(Rule::to_toml).collect();
    assert_eq!(
        texts[0],
        "[[allow]]\nlogins = [\"alice\", \"bob\"]\nlogin_groups = [\"data-eng\"]\nproxies = [\"etl\"]\nproxy_groups = [\"svc-accounts\"]\nexpires = 2027-06-30T00:00:00Z\n"
    );
    assert_eq!(
        texts[1],
        "[[deny]]\nlogins = [\"mallory\"]\nproxies = [\"*\"]\n"
    );
    for (text, original) in texts.iter().zip(rules.rules()) {
        let again = parse_live_rule(&original.id, text).unwrap();
        assert_eq!(again.to_toml(), *text);
        assert_eq!(again.expires, original.expires);
    }
}

#[test]
fn offered_targets_list_allow_targets() {
    let rules = compile(&[DESIGN_EXAMPLE]);
    let none: Vec<String> = vec![];
    let (users, groups) = rules.offered_targets(&user("alice", &none), NOW);
    assert_eq!(users, vec!["etl".to_string()]);
    assert_eq!(groups, vec!["svc-accounts".to_string()]);
    let (users, _) = rules.offered_targets(&user("nobody", &none), NOW);
    assert!(users.is_empty());
}

#[test]
fn datetime_conversion_matches_known_instants() {
    assert_eq!(parse::days_from_civil(1970, 1, 1), 0);
    assert_eq!(parse::days_from_civil(2000, 3, 1), 11_017);
    assert_eq!(render::rfc3339(0), "1970-01-01T00:00:00Z");
    assert_eq!(
        render::rfc3339(951_868_800_000_001),
        "2000-03-01T00:00:00.000001Z"
    );
    let r = parse_live_rule(
        "x",
        "[[allow]]\nlogins=[\"a\"]\nproxies=[\"b\"]\nexpires=2027-06-30T02:00:00+02:00\n",
    )
    .unwrap();
    assert_eq!(r.expires, Some(june_30_2027()));
}

#[test]
fn deny_wins_whatever_the_order_and_expired_rules_are_skipped() {
    let rules = compile(&["[[allow]]\nlogin_groups=[\"team\"]\nproxies=[\"etl\"]\n\
         [[allow]]\nlogins=[\"alice\"]\nproxies=[\"etl\"]\nexpires=2020-01-01T00:00:00Z\n\
         [[allow]]\nlogins=[\"alice\"]\nproxy_groups=[\"svc\"]\n\
         [[deny]]\nlogins=[\"bob\"]\nproxies=[\"etl\"]\n\
         [[deny]]\nlogins=[\"carol\"]\nproxies=[\"etl\"]\nexpires=2020-01-01T00:00:00Z\n"]);
    let team = vec!["team".to_string()];
    let svc = vec!["svc".to_string()];
    let none: Vec<String> = vec![];
    // The expired allow (#2) is skipped; the group allow (#1) and #3 both match, #1 wins.
    assert_eq!(
        rules.check(&user("alice", &team), &user("etl", &svc), NOW),
        Decision::Allowed {
            rule: "00.toml#1".into()
        }
    );
    assert_eq!(
        rules.check(&user("alice", &none), &user("etl", &svc), NOW),
        Decision::Allowed {
            rule: "00.toml#3".into()
        }
    );
    // A deny later in the file beats an earlier allow.
    assert_eq!(
        rules.check(&user("bob", &team), &user("etl", &none), NOW),
        Decision::Denied(Denial::ByRule("00.toml#4".into()))
    );
    // An expired deny denies nothing.
    assert!(
        rules
            .check(&user("carol", &team), &user("etl", &none), NOW)
            .is_allowed()
    );
    // Users and groups of the same name are different things.
    assert_eq!(
        rules.check(&user("team", &none), &user("etl", &none), NOW),
        Decision::Denied(Denial::NoRule)
    );
}

#[test]
fn proxy_type_users_are_those_the_rules_make_proxy_users() {
    let rules = compile(&[DESIGN_EXAMPLE]);
    let none: Vec<String> = vec![];
    let svc = vec!["svc-accounts".to_string()];
    assert!(rules.is_proxy_type(&user("etl", &none)));
    assert!(rules.is_proxy_type(&user("reporting", &none)));
    assert!(rules.is_proxy_type(&user("batch", &svc)));
    assert!(!rules.is_proxy_type(&user("alice", &none)));
    // Named in a deny rule only: not a proxy user.
    assert!(!rules.is_proxy_type(&user("mallory", &none)));
    let root = Subject {
        name: "root",
        groups: &none,
        uid: Some(0),
    };
    assert!(!rules.is_proxy_type(&root));
}
