//! The in-process decision: `CheckProxy` against a compiled set of 100 000 rules over
//! 10 000 logins (target ≤ 1 µs per decision).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use proxyuserd::policy::{CompiledRules, Subject, parse_rule_file};

const RULES: usize = 100_000;
const LOGINS: usize = 10_000;
const PROXIES: usize = 2_000;
const GROUPS: usize = 500;

/// A deterministic rule set: each rule names 1–3 logins or a login group, and 1–3
/// proxies or a proxy group; one in ten is a deny; one in twenty has expired.
fn rule_set() -> CompiledRules {
    let mut text = String::from("[proxy_users]\ngroups = [\"svc-0\"]\n");
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    for i in 0..RULES {
        let kind = if i % 10 == 9 { "deny" } else { "allow" };
        text.push_str(&format!("[[{kind}]]\n"));
        if i % 7 == 0 {
            text.push_str(&format!("login_groups = [\"team-{}\"]\n", next(GROUPS)));
        } else {
            let logins: Vec<String> = (0..1 + next(3))
                .map(|_| format!("\"user{}\"", next(LOGINS)))
                .collect();
            text.push_str(&format!("logins = [{}]\n", logins.join(", ")));
        }
        if i % 11 == 0 {
            text.push_str(&format!("proxy_groups = [\"svc-{}\"]\n", next(GROUPS)));
        } else {
            let proxies: Vec<String> = (0..1 + next(3))
                .map(|_| format!("\"svc{}\"", next(PROXIES)))
                .collect();
            text.push_str(&format!("proxies = [{}]\n", proxies.join(", ")));
        }
        if i % 20 == 0 {
            text.push_str("expires = 2020-01-01T00:00:00Z\n");
        }
    }
    let file = parse_rule_file("bench.toml", &text).expect("bench rules parse");
    CompiledRules::compile(vec![std::sync::Arc::new(file)], Vec::new())
        .expect("bench rules compile")
}

fn decision(c: &mut Criterion) {
    let rules = rule_set();
    assert_eq!(rules.len(), RULES);
    let now = 1_800_000_000_000_000;
    let login_groups: Vec<Vec<String>> = (0..LOGINS)
        .map(|i| {
            vec![
                format!("user{i}"),
                format!("team-{}", i % GROUPS),
                "staff".into(),
            ]
        })
        .collect();
    let proxy_groups: Vec<Vec<String>> = (0..PROXIES)
        .map(|i| vec![format!("svc-{}", i % GROUPS)])
        .collect();
    let logins: Vec<String> = (0..LOGINS).map(|i| format!("user{i}")).collect();
    let proxies: Vec<String> = (0..PROXIES).map(|i| format!("svc{i}")).collect();
    let mut allowed = 0usize;
    for i in 0..LOGINS {
        let login = Subject {
            name: &logins[i],
            groups: &login_groups[i],
            uid: Some(1000 + i as u32),
        };
        let p = (i * 7) % PROXIES;
        let proxy = Subject {
            name: &proxies[p],
            groups: &proxy_groups[p],
            uid: Some(50_000 + p as u32),
        };
        allowed += usize::from(rules.check(&login, &proxy, now).is_allowed());
    }
    eprintln!(
        "decision bench: {} rules, {allowed} of {LOGINS} sample pairs allowed",
        rules.len()
    );

    let mut i = 0usize;
    c.bench_function("check_proxy/100k_rules_10k_logins", |b| {
        b.iter(|| {
            i = (i + 1) % LOGINS;
            let p = (i * 7) % PROXIES;
            let login = Subject {
                name: &logins[i],
                groups: &login_groups[i],
                uid: Some(1000),
            };
            let proxy = Subject {
                name: &proxies[p],
                groups: &proxy_groups[p],
                uid: Some(50_000),
            };
            black_box(rules.check(black_box(&login), black_box(&proxy), now))
        })
    });
}

criterion_group!(benches, decision);
criterion_main!(benches);
