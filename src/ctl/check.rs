//! `proxyuserctl rules check FILE...`: rule files validated offline, like `visudo -c`.
//! Every error is reported, not only the first, and names of users and groups this host
//! does not know are warned about.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::json;
use toml::Spanned;

use super::print_json;
use crate::policy::{CompiledRules, parse_rule_file};

/// Validates each file on its own and all of them together (cross-file rules such as
/// "a proxy user cannot proxy" span files).
pub fn check_files(paths: &[PathBuf], json: bool) -> ExitCode {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let mut files = Vec::new();
    for path in paths {
        let shown = path.display().to_string();
        match std::fs::read_to_string(path) {
            Err(err) => errors.push(format!("{shown}: {err}")),
            Ok(text) => match parse_rule_file(&shown, &text) {
                Ok(file) => {
                    warnings.extend(unknown_names(&shown, &text));
                    files.push(file);
                }
                Err(first) => errors.extend(every_error(&shown, &text, first.to_string())),
            },
        }
    }
    let rules = files.iter().map(|f| f.len()).sum::<usize>();
    let files = files.into_iter().map(Arc::new).collect();
    if errors.is_empty()
        && let Err(err) = CompiledRules::compile(files, Vec::new())
    {
        errors.push(err.to_string());
    }
    if json {
        print_json(&json!({
            "valid": errors.is_empty(), "rules": rules, "errors": errors, "warnings": warnings,
        }));
    } else {
        warnings.iter().for_each(|w| eprintln!("{w}"));
        if errors.is_empty() {
            println!(
                "{} {}, {rules} {}: valid",
                paths.len(),
                if paths.len() == 1 { "file" } else { "files" },
                if rules == 1 { "rule" } else { "rules" }
            );
        } else {
            errors.iter().for_each(|e| eprintln!("{e}"));
        }
    }
    if errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The errors of a file that does not parse: the parser stops at the first, so each
/// table (`[proxy_users]`, `[[allow]]`, `[[deny]]`, and what comes before the first) is
/// parsed again on its own, the other lines blanked so that locations stay true.
fn every_error(shown: &str, text: &str, first: String) -> Vec<String> {
    let lines: Vec<&str> = text.split('\n').collect();
    let mut starts: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, line)| line.trim_start().starts_with('['))
        .map(|(i, _)| i)
        .collect();
    if starts.first() != Some(&0) {
        starts.insert(0, 0);
    }
    let mut errors = vec![first];
    for (n, &start) in starts.iter().enumerate() {
        let end = starts.get(n + 1).copied().unwrap_or(lines.len());
        let alone: Vec<&str> = lines
            .iter()
            .enumerate()
            .map(|(i, line)| if (start..end).contains(&i) { *line } else { "" })
            .collect();
        if let Err(err) = parse_rule_file(shown, &alone.join("\n")) {
            let err = err.to_string();
            if !errors.contains(&err) {
                errors.push(err);
            }
        }
    }
    // In file order.
    errors.sort_by_key(|e| location(shown, e));
    errors
}

/// (line, column) of an error `FILE:LINE:COLUMN: …`, for ordering.
fn location(shown: &str, error: &str) -> (usize, usize) {
    let mut numbers = error
        .strip_prefix(shown)
        .and_then(|rest| rest.strip_prefix(':'))
        .unwrap_or("")
        .split(':')
        .map(|n| n.parse().unwrap_or(usize::MAX));
    (
        numbers.next().unwrap_or(usize::MAX),
        numbers.next().unwrap_or(usize::MAX),
    )
}

#[derive(Deserialize)]
struct Names {
    proxy_users: Option<ProxyUsers>,
    #[serde(default)]
    allow: Vec<Rule>,
    #[serde(default)]
    deny: Vec<Rule>,
}

#[derive(Deserialize)]
struct ProxyUsers {
    #[serde(default)]
    users: Vec<Spanned<String>>,
    #[serde(default)]
    groups: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
struct Rule {
    #[serde(default)]
    login_groups: Vec<Spanned<String>>,
    #[serde(default)]
    proxies: Vec<Spanned<String>>,
    #[serde(default)]
    proxy_groups: Vec<Spanned<String>>,
}

/// Warnings for the users and groups of a valid file that this host's NSS does not know.
/// Logins are not looked up: they need not be accounts (web users of a gateway); proxy
/// users must be.
fn unknown_names(shown: &str, text: &str) -> Vec<String> {
    let Ok(names) = toml::from_str::<Names>(text) else {
        return Vec::new();
    };
    let mut users = Vec::new();
    let mut groups = Vec::new();
    if let Some(declared) = names.proxy_users {
        users.extend(declared.users);
        groups.extend(declared.groups);
    }
    for rule in names.allow.into_iter().chain(names.deny) {
        users.extend(rule.proxies.into_iter().filter(|p| p.get_ref() != "*"));
        groups.extend(rule.login_groups);
        groups.extend(rule.proxy_groups);
    }
    let at = |span: std::ops::Range<usize>| {
        let before = &text[..text.floor_char_boundary(span.start.min(text.len()))];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
        format!("{shown}:{line}:{column}")
    };
    let mut warnings = Vec::new();
    for user in users {
        if matches!(nix::unistd::User::from_name(user.get_ref()), Ok(None)) {
            warnings.push(format!(
                "{}: warning: no user {} on this host (a proxy user is a system account)",
                at(user.span()),
                user.get_ref()
            ));
        }
    }
    for group in groups {
        if matches!(nix::unistd::Group::from_name(group.get_ref()), Ok(None)) {
            warnings.push(format!(
                "{}: warning: no group {} on this host",
                at(group.span()),
                group.get_ref()
            ));
        }
    }
    warnings.sort_by_key(|w| location(shown, w));
    warnings
}
