//! The drop-in rule file format (contract: README, "Rules") into the rule model, with
//! every error located as `file:line:column`.
//!
//! Two readers give the same model: [`fast`](super::fast) reads the plain form these
//! files have in practice (one table header or `key = [...]` per line) without building
//! a document first, and hands anything else — or any file with an error — to the full
//! TOML reader here, which is the reference: its errors are the ones reported.

use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;
use toml::value::{Datetime, Offset};

use super::model::{Builder, RuleEntry, RuleFile, Side as NameSide, Source, Span};
use super::{Effect, Location, Micros, RuleError};
use crate::names::{check_group_name, check_user_name};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    proxy_users: Option<Spanned<ProxyUsersDoc>>,
    #[serde(default)]
    allow: Vec<Spanned<RuleDoc>>,
    #[serde(default)]
    deny: Vec<Spanned<RuleDoc>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LiveDoc {
    #[serde(default)]
    allow: Vec<Spanned<RuleDoc>>,
    #[serde(default)]
    deny: Vec<Spanned<RuleDoc>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProxyUsersDoc {
    #[serde(default)]
    users: Vec<Spanned<String>>,
    #[serde(default)]
    groups: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleDoc {
    #[serde(default)]
    logins: Vec<Spanned<String>>,
    #[serde(default)]
    login_groups: Vec<Spanned<String>>,
    #[serde(default)]
    proxies: Vec<Spanned<String>>,
    #[serde(default)]
    proxy_groups: Vec<Spanned<String>>,
    expires: Option<Spanned<Datetime>>,
}

/// Maps byte offsets of one source text to locations.
pub(super) struct Text<'a> {
    file: std::sync::Arc<str>,
    text: &'a str,
    /// Byte offset of the start of each line.
    line_starts: Vec<usize>,
}

impl<'a> Text<'a> {
    pub fn new(file: &str, text: &'a str) -> Self {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Text {
            file: std::sync::Arc::from(file),
            text,
            line_starts,
        }
    }

    /// (line, column) of a byte offset, both from 1, columns in characters.
    fn line_column(&self, offset: usize) -> (u32, u32) {
        let offset = self.text.floor_char_boundary(offset.min(self.text.len()));
        let line = self.line_starts.partition_point(|&start| start <= offset);
        let line_start = self.line_starts[line - 1];
        let column = self.text[line_start..offset].chars().count() + 1;
        (line as u32, column as u32)
    }

    fn at(&self, offset: usize) -> Location {
        let (line, column) = self.line_column(offset);
        Location {
            file: self.file.clone(),
            line: line as usize,
            column: column as usize,
        }
    }

    fn error(&self, span: Range<usize>, message: impl Into<String>) -> RuleError {
        RuleError {
            at: self.at(span.start),
            message: message.into(),
        }
    }

    fn syntax(&self, err: toml::de::Error) -> RuleError {
        let span = err.span().unwrap_or(0..0);
        self.error(span, err.message().trim_end().to_string())
    }
}

/// The name rule ids of a file start with: its file name.
pub(super) fn base_of(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// [`parse_rule_file`](super::parse_rule_file) with the full TOML reader only (the
/// reference).
pub fn parse_with_toml(path: &str, text: &str) -> Result<RuleFile, RuleError> {
    let src = Text::new(path, text);
    let doc: FileDoc = toml::from_str(text).map_err(|e| src.syntax(e))?;
    let mut out = Builder::new(
        path,
        Source::File(std::sync::Arc::from(path)),
        base_of(path),
    );
    if let Some(section) = doc.proxy_users {
        let section = section.into_inner();
        let start = out.mark();
        for user in &section.users {
            check_name(&src, user, NameKind::ProxyUser)?;
            mention(&src, &mut out, user);
        }
        let users = out.since(start);
        let groups = groups(&src, &mut out, "proxy_users.groups", &section.groups)?;
        out.proxy_users(users, groups);
    }
    rules(&src, &mut out, doc.allow, doc.deny)?;
    Ok(out.finish())
}

/// Parses the text given to `Admin.AddRule`: exactly one `[[allow]]` or `[[deny]]` table.
pub fn parse_live_rule(id: &str, text: &str) -> Result<RuleFile, RuleError> {
    let src = Text::new("rule", text);
    let doc: LiveDoc = toml::from_str(text).map_err(|e| src.syntax(e))?;
    let count = doc.allow.len() + doc.deny.len();
    if count != 1 {
        return Err(src.error(
            0..0,
            format!("a rule is exactly one [[allow]] or [[deny]] table, this text has {count}"),
        ));
    }
    let mut out = Builder::new("rule", Source::Live(std::sync::Arc::from(id)), id);
    rules(&src, &mut out, doc.allow, doc.deny)?;
    Ok(out.finish())
}

fn mention(src: &Text<'_>, out: &mut Builder, name: &Spanned<String>) {
    let (line, column) = src.line_column(name.span().start);
    out.mention(name.get_ref(), line, column);
}

fn rules(
    src: &Text<'_>,
    out: &mut Builder,
    allow: Vec<Spanned<RuleDoc>>,
    deny: Vec<Spanned<RuleDoc>>,
) -> Result<(), RuleError> {
    let mut tables: Vec<(Effect, Spanned<RuleDoc>)> = allow
        .into_iter()
        .map(|t| (Effect::Allow, t))
        .chain(deny.into_iter().map(|t| (Effect::Deny, t)))
        .collect();
    tables.sort_by_key(|(_, t)| t.span().start);
    for (effect, table) in tables {
        rule(src, out, effect, table)?;
    }
    Ok(())
}

/// What a name in a rule stands for, for its checks.
#[derive(Clone, Copy)]
pub(super) enum NameKind {
    Login,
    Proxy,
    ProxyUser,
    Group(&'static str),
}

/// The check of one name; the message if it fails.
pub(super) fn name_problem(value: &str, kind: NameKind) -> Option<String> {
    let result = match kind {
        NameKind::Group(_) => check_group_name(value),
        _ => check_user_name(value),
    };
    if let Err(err) = result {
        return Some(match kind {
            NameKind::Group(key) if value == "*" => format!("\"*\" is not allowed in {key}"),
            _ => err.to_string(),
        });
    }
    if value == "root" && matches!(kind, NameKind::Proxy | NameKind::ProxyUser) {
        return Some("root can never be a proxy user".into());
    }
    None
}

fn check_name(src: &Text<'_>, name: &Spanned<String>, kind: NameKind) -> Result<(), RuleError> {
    match name_problem(name.get_ref(), kind) {
        Some(message) => Err(src.error(name.span(), message)),
        None => Ok(()),
    }
}

fn names(
    src: &Text<'_>,
    out: &mut Builder,
    key: &str,
    list: &[Spanned<String>],
    kind: NameKind,
) -> Result<NameSide, RuleError> {
    if let Some(star) = list.iter().find(|n| n.get_ref() == "*") {
        if list.len() > 1 {
            return Err(src.error(star.span(), format!("\"*\" must be the whole {key} list")));
        }
        return Ok(NameSide::Any);
    }
    let start = out.mark();
    for name in list {
        check_name(src, name, kind)?;
        mention(src, out, name);
    }
    Ok(NameSide::Only(out.since(start)))
}

fn groups(
    src: &Text<'_>,
    out: &mut Builder,
    key: &'static str,
    list: &[Spanned<String>],
) -> Result<Span, RuleError> {
    let start = out.mark();
    for group in list {
        check_name(src, group, NameKind::Group(key))?;
        mention(src, out, group);
    }
    Ok(out.since(start))
}

fn rule(
    src: &Text<'_>,
    out: &mut Builder,
    effect: Effect,
    table: Spanned<RuleDoc>,
) -> Result<(), RuleError> {
    let span = table.span();
    let doc = table.into_inner();
    let proxy_kind = match effect {
        Effect::Allow => NameKind::Proxy,
        // Naming root in a deny rule is harmless and may be deliberate.
        Effect::Deny => NameKind::Login,
    };
    let logins = names(src, out, "logins", &doc.logins, NameKind::Login)?;
    let login_groups = groups(src, out, "login_groups", &doc.login_groups)?;
    let proxies = names(src, out, "proxies", &doc.proxies, proxy_kind)?;
    let proxy_groups = groups(src, out, "proxy_groups", &doc.proxy_groups)?;
    if let Some(message) = missing_side(effect, logins, login_groups, proxies, proxy_groups) {
        return Err(src.error(span, message));
    }
    let expires = match doc.expires {
        None => None,
        Some(dt) => Some(micros(dt.get_ref()).ok_or_else(|| {
            src.error(
                dt.span(),
                format!(
                    "expires = {} is not a date-time with an offset, e.g. 2027-06-30T00:00:00Z",
                    dt.get_ref()
                ),
            )
        })?),
    };
    let (line, column) = src.line_column(span.start);
    out.rule(RuleEntry {
        effect,
        logins,
        login_groups,
        proxies,
        proxy_groups,
        expires,
        line,
        column,
    });
    Ok(())
}

/// A rule needs a login side and a proxy side: the message if it lacks one.
pub(super) fn missing_side(
    effect: Effect,
    logins: NameSide,
    login_groups: Span,
    proxies: NameSide,
    proxy_groups: Span,
) -> Option<String> {
    let kind = effect.as_str();
    if logins.is_empty() && login_groups.is_empty() {
        return Some(format!(
            "[[{kind}]] names no login: give logins or login_groups"
        ));
    }
    if proxies.is_empty() && proxy_groups.is_empty() {
        return Some(format!(
            "[[{kind}]] names no proxy: give proxies or proxy_groups"
        ));
    }
    None
}

/// An offset date-time as microseconds since the epoch; `None` for local or partial ones.
fn micros(dt: &Datetime) -> Option<Micros> {
    let (date, time, offset) = (dt.date?, dt.time?, dt.offset?);
    let days = days_from_civil(i64::from(date.year), date.month.into(), date.day.into());
    let offset_secs = match offset {
        Offset::Z => 0,
        Offset::Custom { minutes } => i64::from(minutes) * 60,
    };
    let secs = days * 86_400
        + i64::from(time.hour) * 3600
        + i64::from(time.minute) * 60
        + i64::from(time.second.unwrap_or(0))
        - offset_secs;
    Some(secs * 1_000_000 + i64::from(time.nanosecond.unwrap_or(0) / 1000))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}
