//! A reader for the plain form rule files have in practice — a table header or a
//! `key = [ "name", ... ]` (or `expires = <date-time>`) per line, comments and blank
//! lines — that builds the model directly, without a TOML document in between: a
//! 100 000-rule file reads in tens of milliseconds instead of hundreds.
//!
//! It only ever says yes: anything outside that form, and any file with an error, is
//! `None`, and the full TOML reader (the reference, whose errors are reported) reads it
//! instead. A property test and a fuzz target hold the two readers to the same model.

use super::model::{Builder, RuleEntry, RuleFile, Side, Source, Span};
use super::parse::{NameKind, base_of, days_from_civil, missing_side, name_problem};
use super::{Effect, Micros};

/// A name as written: the text and its line and column.
#[derive(Clone, Copy)]
struct Written<'a> {
    value: &'a str,
    line: u32,
    column: u32,
}

/// A table's keys as read: no allocation of its own (a 100 000-rule file has 100 000
/// of them); its names are a range of the one list of every name written.
#[derive(Default, Clone, Copy)]
struct Table {
    /// Keys seen, by slot (a key twice is an error of the file).
    seen: u8,
    /// The names of each list key, as a range of `Written`s.
    lists: [Option<(u32, u32)>; 4],
    expires: Option<Micros>,
}

/// The slot of `expires` in [`Table::seen`].
const EXPIRES: usize = 4;

/// The keys of a rule table, in the order the model takes them.
const RULE_KEYS: [&str; 4] = ["logins", "login_groups", "proxies", "proxy_groups"];
/// The keys of `[proxy_users]`.
const PROXY_USERS_KEYS: [&str; 2] = ["users", "groups"];

enum Section {
    Top,
    ProxyUsers,
    Rule {
        effect: Effect,
        line: u32,
        column: u32,
        table: Table,
    },
}

/// The model of `text`, if it is in the plain form and valid; `None` otherwise.
pub(super) fn parse(path: &str, text: &str) -> Option<RuleFile> {
    // TOML allows no control character but tab outside strings (comments included),
    // and none is valid in a name: such a file is the full reader's to refuse.
    if has_control(text) {
        return None;
    }
    let mut proxy_users: Option<Table> = None;
    // Sized for the plain form's usual rule: a header, two lists of a name, a blank line.
    let mut rules: Vec<(Effect, u32, u32, Table)> = Vec::with_capacity(text.len() / 50);
    let mut written: Vec<Written<'_>> = Vec::with_capacity(text.len() / 25);
    let mut section = Section::Top;
    for (n, line) in text.split('\n').enumerate() {
        let number = u32::try_from(n + 1).ok()?;
        let trimmed = line.trim_start_matches([' ', '\t']);
        let indent = (line.len() - trimmed.len()) as u32;
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if trimmed.starts_with('[') {
            let header = trimmed.split('#').next()?.trim_end_matches([' ', '\t']);
            let next = match header {
                "[proxy_users]" if proxy_users.is_none() => Section::ProxyUsers,
                "[[allow]]" | "[[deny]]" => Section::Rule {
                    effect: if header == "[[allow]]" {
                        Effect::Allow
                    } else {
                        Effect::Deny
                    },
                    line: number,
                    column: indent + 1,
                    table: Table::default(),
                },
                _ => return None,
            };
            close(&mut section, &mut proxy_users, &mut rules);
            if matches!(next, Section::ProxyUsers) {
                proxy_users = Some(Table::default());
            }
            section = next;
            continue;
        }
        let (key, rest) = trimmed.split_once('=')?;
        let key = key.trim_end_matches([' ', '\t']);
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
            return None;
        }
        let value_at = line.len() - rest.trim_start_matches([' ', '\t']).len();
        let (keys, table): (&[&str], &mut Table) = match &mut section {
            Section::Top => return None,
            Section::ProxyUsers => (&PROXY_USERS_KEYS, proxy_users.as_mut()?),
            Section::Rule { table, .. } => (&RULE_KEYS, table),
        };
        // An unknown key is the full reader's to refuse, as is a key given twice.
        let slot = if key == "expires" && keys.len() == RULE_KEYS.len() {
            EXPIRES
        } else {
            keys.iter().position(|k| *k == key)?
        };
        if table.seen & (1 << slot) != 0 {
            return None;
        }
        table.seen |= 1 << slot;
        if slot == EXPIRES {
            table.expires = Some(date_time(&line[value_at..])?);
            continue;
        }
        let start = written.len() as u32;
        array(line, value_at, number, &mut written)?;
        table.lists[slot] = Some((start, written.len() as u32));
    }
    close(&mut section, &mut proxy_users, &mut rules);

    let mut out = Builder::with_capacity(
        path,
        Source::File(std::sync::Arc::from(path)),
        base_of(path),
        rules.len(),
        written.len(),
    );
    let list = |table: &Table, slot: usize| {
        table.lists[slot].map(|(start, end)| &written[start as usize..end as usize])
    };
    if let Some(table) = &proxy_users {
        let users = mention_all(&mut out, list(table, 0), NameKind::ProxyUser)?;
        let groups = mention_all(
            &mut out,
            list(table, 1),
            NameKind::Group("proxy_users.groups"),
        )?;
        out.proxy_users(users, groups);
    }
    for (effect, line, column, table) in &rules {
        let proxy_kind = match effect {
            Effect::Allow => NameKind::Proxy,
            Effect::Deny => NameKind::Login,
        };
        let logins = side(&mut out, list(table, 0), NameKind::Login)?;
        let login_groups = mention_all(&mut out, list(table, 1), NameKind::Group("login_groups"))?;
        let proxies = side(&mut out, list(table, 2), proxy_kind)?;
        let proxy_groups = mention_all(&mut out, list(table, 3), NameKind::Group("proxy_groups"))?;
        if missing_side(*effect, logins, login_groups, proxies, proxy_groups).is_some() {
            return None;
        }
        out.rule(RuleEntry {
            effect: *effect,
            logins,
            login_groups,
            proxies,
            proxy_groups,
            expires: table.expires,
            line: *line,
            column: *column,
        });
    }
    Some(out.finish())
}

/// Whether `text` has a control character other than tab and newline. In blocks
/// without an early exit, so that the compiler checks many bytes at once (a 5 MB file
/// in a fraction of a millisecond).
fn has_control(text: &str) -> bool {
    text.as_bytes().chunks(64).any(|block| {
        block.iter().fold(false, |found, &b| {
            found | (b.is_ascii_control() & (b != b'\t') & (b != b'\n'))
        })
    })
}

/// Ends the current section: a finished rule joins `rules`.
fn close(
    section: &mut Section,
    _proxy_users: &mut Option<Table>,
    rules: &mut Vec<(Effect, u32, u32, Table)>,
) {
    if let Section::Rule {
        effect,
        line,
        column,
        table,
    } = std::mem::replace(section, Section::Top)
    {
        rules.push((effect, line, column, table));
    }
}

/// Mentions every name of `list` (each must pass its check).
fn mention_all(out: &mut Builder, list: Option<&[Written<'_>]>, kind: NameKind) -> Option<Span> {
    let start = out.mark();
    for name in list.unwrap_or_default() {
        if name_problem(name.value, kind).is_some() {
            return None;
        }
        out.mention(name.value, name.line, name.column);
    }
    Some(out.since(start))
}

/// A logins or proxies list: `"*"` alone, or names.
fn side(out: &mut Builder, list: Option<&[Written<'_>]>, kind: NameKind) -> Option<Side> {
    let list = list.unwrap_or_default();
    if list.iter().any(|n| n.value == "*") {
        return (list.len() == 1).then_some(Side::Any);
    }
    mention_all(out, Some(list), kind).map(Side::Only)
}

/// A one-line array of strings starting at byte `at` of `line`, then only a comment:
/// its names are pushed to `names`.
fn array<'a>(line: &'a str, at: usize, number: u32, names: &mut Vec<Written<'a>>) -> Option<()> {
    let bytes = line.as_bytes();
    let mut i = at;
    if bytes.get(i) != Some(&b'[') {
        return None;
    }
    i += 1;
    let skip = |i: &mut usize| {
        while matches!(bytes.get(*i), Some(b' ' | b'\t')) {
            *i += 1;
        }
    };
    loop {
        skip(&mut i);
        match bytes.get(i)? {
            b']' => {
                i += 1;
                break;
            }
            quote @ (b'"' | b'\'') => {
                let open = i;
                let end = open + 1 + line[open + 1..].find(*quote as char)?;
                let value = &line[open + 1..end];
                // Escapes and control characters are the full reader's business.
                if value.contains('\\') || value.chars().any(char::is_control) {
                    return None;
                }
                names.push(Written {
                    value,
                    line: number,
                    column: column_of(line, open),
                });
                i = end + 1;
                skip(&mut i);
                match bytes.get(i)? {
                    b',' => i += 1,
                    b']' => {
                        i += 1;
                        break;
                    }
                    _ => return None,
                }
            }
            _ => return None,
        }
    }
    skip(&mut i);
    match bytes.get(i) {
        None | Some(b'#') => Some(()),
        _ => None,
    }
}

/// The column (in characters, from 1) of byte `at` of `line`.
fn column_of(line: &str, at: usize) -> u32 {
    let before = &line[..at];
    let chars = if before.is_ascii() {
        before.len()
    } else {
        before.chars().count()
    };
    chars as u32 + 1
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`, then only a comment; microseconds since
/// the epoch.
fn date_time(value: &str) -> Option<Micros> {
    let value = value.split('#').next()?.trim_end_matches([' ', '\t']);
    let b = value.as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(range)?;
        part.iter()
            .all(u8::is_ascii_digit)
            .then(|| std::str::from_utf8(part).ok()?.parse().ok())?
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let (hour, minute, second) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&month)
        || day < 1
        || day > month_days[month as usize - 1]
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let mut i = 19;
    let mut nanos = 0i64;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        let end = start + b[start..].iter().take_while(|c| c.is_ascii_digit()).count();
        if end == start || end - start > 9 {
            return None;
        }
        let fraction = digits(start..end)?;
        nanos = fraction * 10i64.pow((9 - (end - start)) as u32);
        i = end;
    }
    let offset_secs = match b.get(i..)? {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let hours = digits(i + 1..i + 3)?;
            let minutes = digits(i + 4..i + 6)?;
            let _ = (h1, h2, m1, m2);
            if hours > 23 || minutes > 59 {
                return None;
            }
            let secs = hours * 3600 + minutes * 60;
            if *sign == b'-' { -secs } else { secs }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    Some(secs * 1_000_000 + nanos / 1000)
}

#[cfg(test)]
mod tests {
    use super::super::parse::parse_with_toml;
    use super::*;

    /// The fast reader, where it reads, gives exactly what the full reader gives.
    fn same(text: &str) {
        let fast = parse("/r/10.toml", text).unwrap_or_else(|| panic!("not read fast:\n{text}"));
        let full = parse_with_toml("/r/10.toml", text).unwrap();
        assert_eq!(fast, full, "{text}");
    }

    #[test]
    fn the_plain_form_reads_the_same_as_with_the_full_reader() {
        same("");
        same("# nothing\n\n");
        same(
            "[proxy_users]\nusers = [\"etl\", 'rep']\ngroups=[\"svc\"] # c\n\n  [[allow]] # x\n\
             proxies = [\"etl\"]\nlogins = [ \"alice\" , \"bob\", ]\n\
             expires = 2027-06-30T00:00:00.5+02:00\n[[deny]]\nlogins=[\"mallory\"]\nproxies=[\"*\"]\n",
        );
        // The proxy users come first in the model wherever the table stands.
        same("[[allow]]\nlogins=[\"a\"]\nproxies=[\"b\"]\n[proxy_users]\ngroups=[\"g\"]\n");
        same("# é\n[[allow]]\nlogin_groups=[\"g-group\"] # é\nproxy_groups=[\"svc\"]\n");
    }

    #[test]
    fn anything_else_goes_to_the_full_reader() {
        for text in [
            "[[allow]]\nlogins=[\"a\",\n \"b\"]\nproxies=[\"c\"]\n",
            "[[allow]]\nlogins=[\"a\\u0062\"]\nproxies=[\"c\"]\n",
            "[[allow]]\nlogins=[\"a\"]\nlogins=[\"b\"]\nproxies=[\"c\"]\n",
            "[[allow]]\nlogins=[\"a\"]\nproxies=[\"root\"]\n",
            "[[allow]]\nlogins=[\"a\"]\n",
            "[[allow]]\nlogins=[\"a\"]\nproxies=[\"c\"]\nexpires=2027-06-30T00:00:00\n",
            "[[allow]]\nlogins=[\"a\", \"*\"]\nproxies=[\"c\"]\n",
            "[[ allow ]]\nlogins=[\"a\"]\nproxies=[\"c\"]\n",
            "[[allow]]\r\nlogins=[\"a\"]\r\nproxies=[\"c\"]\r\n",
            "[[allow]]\nlogins=[\"a\"]\nproxies=[\"c\"]\ncomment=\"x\"\n",
            "logins=[\"a\"]\n",
            "[proxy_users]\nusers=[\"a\"]\n[proxy_users]\nusers=[\"b\"]\n",
            "[[allow]]\nlogins=[\"a\"] x\nproxies=[\"c\"]\n",
        ] {
            assert!(parse("/r/10.toml", text).is_none(), "{text}");
        }
    }

    #[test]
    fn control_characters_are_found_anywhere_but_tab_and_newline_are_not() {
        let plain = "[[allow]]\tlogins = [\"a\"]\n".repeat(10);
        assert!(!has_control(&plain));
        for c in ['\0', '\r', '\x0b', '\x1f', '\x7f'] {
            for at in [0, 63, 64, 65, plain.len()] {
                let mut text = plain.clone();
                text.insert(at, c);
                assert!(has_control(&text), "{c:?} at {at}");
            }
        }
    }

    #[test]
    fn date_times_read_as_the_full_reader_reads_them() {
        for (text, want) in [
            ("2027-06-30T00:00:00Z", Some(1_814_313_600_000_000)),
            ("2027-06-30 02:00:00+02:00", Some(1_814_313_600_000_000)),
            (
                "2027-06-30t00:00:00.000001z # c",
                Some(1_814_313_600_000_001),
            ),
            ("2027-02-29T00:00:00Z", None),
            ("2027-06-30T00:00Z", None),
        ] {
            assert_eq!(date_time(text), want, "{text}");
        }
    }
}
