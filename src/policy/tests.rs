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

const EXAMPLE_RULES: &str = r#"
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
    let rules = compile(&[EXAMPLE_RULES]);
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
    let rules = compile(&[EXAMPLE_RULES]);
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
    let err = CompiledRules::compile(vec![Arc::new(a)], vec![Arc::new(live)]).unwrap_err();
    assert!(
        err.to_string().starts_with("rule:2:9: etl is a proxy user"),
        "{err}"
    );
}

#[test]
fn live_rule_is_exactly_one_table() {
    let rule = parse_live_rule("live-7", "[[deny]]\nlogins=[\"m\"]\nproxies=[\"*\"]\n").unwrap();
    let only: Vec<RuleView<'_>> = rule.rules().collect();
    assert_eq!(only.len(), 1);
    assert_eq!(only[0].id(), "live-7");
    assert_eq!(rule.live_id(), Some("live-7"));
    assert_eq!(only[0].source().to_string(), "live");
    assert_eq!(only[0].effect(), Effect::Deny);
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
    let rules = compile(&[EXAMPLE_RULES]);
    let texts: Vec<String> = rules.rules().map(|r| r.to_toml()).collect();
    assert_eq!(
        texts[0],
        "[[allow]]\nlogins = [\"alice\", \"bob\"]\nlogin_groups = [\"data-eng\"]\nproxies = [\"etl\"]\nproxy_groups = [\"svc-accounts\"]\nexpires = 2027-06-30T00:00:00Z\n"
    );
    assert_eq!(
        texts[1],
        "[[deny]]\nlogins = [\"mallory\"]\nproxies = [\"*\"]\n"
    );
    for (text, original) in texts.iter().zip(rules.rules()) {
        let again = parse_live_rule(&original.id(), text).unwrap();
        let again = again.rules().next().unwrap();
        assert_eq!(again.to_toml(), *text);
        assert_eq!(again.expires(), original.expires());
    }
}

#[test]
fn offered_targets_list_allow_targets() {
    let rules = compile(&[EXAMPLE_RULES]);
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
    assert_eq!(r.rules().next().unwrap().expires(), Some(june_30_2027()));
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
    let rules = compile(&[EXAMPLE_RULES]);
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

/// A small deterministic generator for the property tests below.
struct Rng(u64);

impl Rng {
    fn next(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }

    fn pick<'a>(&mut self, from: &[&'a str], up_to: usize) -> Vec<&'a str> {
        let n = self.next(up_to + 1);
        (0..n).map(|_| from[self.next(from.len())]).collect()
    }
}

const LOGINS: [&str; 6] = ["ann", "ben", "cat", "dan", "eve", "fay"];
const LOGIN_GROUPS: [&str; 3] = ["team-a", "team-b", "staff"];
const PROXIES: [&str; 5] = ["etl", "rep", "ml", "ops", "web"];
const PROXY_GROUPS: [&str; 3] = ["svc-a", "svc-b", "svc-c"];

/// A random valid rule set as text: logins and proxies from separate pools, so that no
/// allow rule makes a login proxy-type.
fn random_rules(rng: &mut Rng, count: usize) -> String {
    let list = |names: &[&str]| {
        let quoted: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
        format!("[{}]", quoted.join(", "))
    };
    let mut text = String::new();
    if rng.next(2) == 0 {
        text.push_str(&format!(
            "[proxy_users]\nusers = {}\ngroups = {}\n",
            list(&rng.pick(&PROXIES, 2)),
            list(&rng.pick(&PROXY_GROUPS, 1))
        ));
    }
    for _ in 0..count {
        let deny = rng.next(4) == 0;
        text.push_str(if deny { "[[deny]]\n" } else { "[[allow]]\n" });
        let (mut logins, groups) = (rng.pick(&LOGINS, 2), rng.pick(&LOGIN_GROUPS, 1));
        if logins.is_empty() && groups.is_empty() {
            logins.push(LOGINS[rng.next(LOGINS.len())]);
        }
        if rng.next(8) == 0 {
            text.push_str("logins = [\"*\"]\n");
        } else if !logins.is_empty() {
            text.push_str(&format!("logins = {}\n", list(&logins)));
        }
        if !groups.is_empty() {
            text.push_str(&format!("login_groups = {}\n", list(&groups)));
        }
        let (mut proxies, pgroups) = (rng.pick(&PROXIES, 2), rng.pick(&PROXY_GROUPS, 1));
        if proxies.is_empty() && pgroups.is_empty() {
            proxies.push(PROXIES[rng.next(PROXIES.len())]);
        }
        if rng.next(6) == 0 {
            text.push_str("proxies = [\"*\"]\n");
        } else if !proxies.is_empty() {
            text.push_str(&format!("proxies = {}\n", list(&proxies)));
        }
        if !pgroups.is_empty() {
            text.push_str(&format!("proxy_groups = {}\n", list(&pgroups)));
        }
        if rng.next(5) == 0 {
            let year = 2020 + rng.next(15);
            text.push_str(&format!("expires = {year}-06-30T00:00:00Z\n"));
        }
    }
    text
}

/// The rules' meaning, evaluated the plain way: every rule in order.
fn naive(rules: &CompiledRules, login: &Subject<'_>, proxy: &Subject<'_>, now: Micros) -> Decision {
    if proxy.is_root() {
        return Decision::Denied(Denial::TargetIsRoot);
    }
    if login.name == proxy.name {
        return Decision::Denied(Denial::SameUser);
    }
    let mut declared_users = std::collections::HashSet::new();
    let mut declared_groups = std::collections::HashSet::new();
    for (_, users, groups) in rules.declared_proxy_users() {
        declared_users.extend(users.into_iter().map(str::to_string));
        declared_groups.extend(groups.into_iter().map(str::to_string));
    }
    let all: Vec<RuleView<'_>> = rules.rules().collect();
    for rule in all.iter().filter(|r| r.effect() == Effect::Allow) {
        let e = rule.entry();
        if let Some(list) = rule.side(e.proxies) {
            declared_users.extend(list.into_iter().map(str::to_string));
        }
        declared_groups.extend(rule.list(e.proxy_groups).into_iter().map(str::to_string));
    }
    let is_proxy = |s: &Subject<'_>| {
        declared_users.contains(s.name) || s.groups.iter().any(|g| declared_groups.contains(g))
    };
    if is_proxy(login) {
        return Decision::Denied(Denial::LoginIsProxyUser);
    }
    let proxy_type = is_proxy(proxy);
    let matches = |rule: &RuleView<'_>| {
        let e = rule.entry();
        let active = e.expires.is_none_or(|t| now < t);
        let login_side = match rule.side(e.logins) {
            None => true,
            Some(list) => list.contains(&login.name),
        } || rule
            .list(e.login_groups)
            .iter()
            .any(|g| login.groups.iter().any(|lg| lg == g));
        let proxy_side = match rule.side(e.proxies) {
            None => rule.effect() == Effect::Deny || proxy_type,
            Some(list) => list.contains(&proxy.name),
        } || rule
            .list(e.proxy_groups)
            .iter()
            .any(|g| proxy.groups.iter().any(|pg| pg == g));
        active && login_side && proxy_side
    };
    if let Some(rule) = all
        .iter()
        .find(|r| r.effect() == Effect::Deny && matches(r))
    {
        return Decision::Denied(Denial::ByRule(rule.id().as_str().into()));
    }
    match all
        .iter()
        .find(|r| r.effect() == Effect::Allow && matches(r))
    {
        Some(rule) => Decision::Allowed {
            rule: rule.id().as_str().into(),
        },
        None => Decision::Denied(Denial::NoRule),
    }
}

#[test]
fn the_index_decides_as_the_plain_evaluation_of_the_same_rules() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut decisions = 0;
    for round in 0..300 {
        let rules = compile(&[&random_rules(&mut rng, 1 + round % 12)]);
        for _ in 0..40 {
            let login_groups: Vec<String> = rng
                .pick(&LOGIN_GROUPS, 2)
                .into_iter()
                .map(str::to_string)
                .collect();
            let proxy_groups: Vec<String> = rng
                .pick(&PROXY_GROUPS, 2)
                .into_iter()
                .map(str::to_string)
                .collect();
            let login = user(LOGINS[rng.next(LOGINS.len())], &login_groups);
            let proxy = user(PROXIES[rng.next(PROXIES.len())], &proxy_groups);
            let now = crate::time::secs(1_600_000_000 + 31_536_000 * rng.next(12) as u64);
            assert_eq!(
                rules.check(&login, &proxy, now),
                naive(&rules, &login, &proxy, now),
                "{login:?} → {proxy:?} at {now} with\n{}",
                rules.rules().map(|r| r.to_toml()).collect::<String>()
            );
            decisions += 1;
        }
    }
    assert_eq!(decisions, 12_000);
}

#[test]
fn both_readers_read_generated_files_alike() {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let spacing = ["", " ", "  ", "\t"];
    for round in 0..300 {
        let plain = random_rules(&mut rng, 1 + round % 8);
        // Vary what the plain form allows: spacing, comments, blank lines, quotes.
        let mut text = String::new();
        for line in plain.lines() {
            let pad = spacing[rng.next(spacing.len())];
            let line = if rng.next(3) == 0 {
                line.replace(" = ", "=").replace("\"", "'")
            } else {
                line.to_string()
            };
            text.push_str(pad);
            text.push_str(&line);
            if rng.next(4) == 0 {
                text.push_str(" # note");
            }
            text.push('\n');
            if rng.next(6) == 0 {
                text.push_str("\n# comment\n");
            }
        }
        let fast = fast::parse("/r/gen.toml", &text)
            .unwrap_or_else(|| panic!("the plain form was not read fast:\n{text}"));
        let full = parse_with_toml("/r/gen.toml", &text).unwrap();
        assert_eq!(fast, full, "{text}");
    }
}
