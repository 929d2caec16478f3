//! The drop-in rule file format (contract, DESIGN §3) into the rule model, with every
//! error located as `file:line:column`.

use std::ops::Range;
use std::sync::Arc;

use serde::Deserialize;
use toml::Spanned;
use toml::value::{Datetime, Offset};

use super::{Effect, Located, Location, Micros, Names, Rule, RuleError, RuleFile, Source};
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
struct Text<'a> {
    file: Arc<str>,
    text: &'a str,
    /// Byte offset of the start of each line.
    line_starts: Vec<usize>,
}

impl<'a> Text<'a> {
    fn new(file: &str, text: &'a str) -> Self {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Text {
            file: Arc::from(file),
            text,
            line_starts,
        }
    }

    fn at(&self, offset: usize) -> Location {
        let offset = self.text.floor_char_boundary(offset.min(self.text.len()));
        let line = self.line_starts.partition_point(|&start| start <= offset);
        let line_start = self.line_starts[line - 1];
        Location {
            file: self.file.clone(),
            line,
            column: self.text[line_start..offset].chars().count() + 1,
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

    fn located(&self, value: Spanned<String>) -> Located<String> {
        let at = self.at(value.span().start);
        Located {
            value: value.into_inner(),
            at,
        }
    }
}

/// Parses one drop-in file. `path` is how the file is named in errors and rule sources;
/// rule ids are `<file name>#<n>`, n counting the file's rule tables from 1.
pub fn parse_rule_file(path: &str, text: &str) -> Result<RuleFile, RuleError> {
    let src = Text::new(path, text);
    let doc: FileDoc = toml::from_str(text).map_err(|e| src.syntax(e))?;
    let mut proxy_users = Vec::new();
    let mut proxy_groups = Vec::new();
    if let Some(section) = doc.proxy_users {
        let section = section.into_inner();
        for user in section.users {
            check_name(&src, &user, Side::ProxyUser)?;
            proxy_users.push(src.located(user));
        }
        proxy_groups = groups(&src, "proxy_users.groups", section.groups)?;
    }
    let base = path.rsplit('/').next().unwrap_or(path);
    let rules = rules(
        &src,
        doc.allow,
        doc.deny,
        |n| format!("{base}#{n}"),
        || Source::File(path.to_string()),
    )?;
    Ok(RuleFile {
        path: path.to_string(),
        proxy_users,
        proxy_groups,
        rules,
    })
}

/// Parses the text given to `Admin.AddRule`: exactly one `[[allow]]` or `[[deny]]` table.
pub fn parse_live_rule(id: &str, text: &str) -> Result<Rule, RuleError> {
    let src = Text::new("rule", text);
    let doc: LiveDoc = toml::from_str(text).map_err(|e| src.syntax(e))?;
    let count = doc.allow.len() + doc.deny.len();
    if count != 1 {
        return Err(src.error(
            0..0,
            format!("a rule is exactly one [[allow]] or [[deny]] table, this text has {count}"),
        ));
    }
    let mut rules = rules(
        &src,
        doc.allow,
        doc.deny,
        |_| id.to_string(),
        || Source::Live,
    )?;
    Ok(rules.remove(0))
}

fn rules(
    src: &Text<'_>,
    allow: Vec<Spanned<RuleDoc>>,
    deny: Vec<Spanned<RuleDoc>>,
    id: impl Fn(usize) -> String,
    source: impl Fn() -> Source,
) -> Result<Vec<Rule>, RuleError> {
    let mut tables: Vec<(Effect, Spanned<RuleDoc>)> = allow
        .into_iter()
        .map(|t| (Effect::Allow, t))
        .chain(deny.into_iter().map(|t| (Effect::Deny, t)))
        .collect();
    tables.sort_by_key(|(_, t)| t.span().start);
    tables
        .into_iter()
        .enumerate()
        .map(|(i, (effect, table))| rule(src, effect, table, id(i + 1), source()))
        .collect()
}

#[derive(Clone, Copy)]
enum Side {
    Login,
    Proxy,
    ProxyUser,
    Group(&'static str),
}

fn check_name(src: &Text<'_>, name: &Spanned<String>, side: Side) -> Result<(), RuleError> {
    let value = name.get_ref();
    let result = match side {
        Side::Group(_) => check_group_name(value),
        _ => check_user_name(value),
    };
    if let Err(err) = result {
        let message = match side {
            Side::Group(key) if value == "*" => format!("\"*\" is not allowed in {key}"),
            _ => err.to_string(),
        };
        return Err(src.error(name.span(), message));
    }
    if value == "root" && matches!(side, Side::Proxy | Side::ProxyUser) {
        return Err(src.error(name.span(), "root can never be a proxy user"));
    }
    Ok(())
}

fn names(
    src: &Text<'_>,
    key: &str,
    list: Vec<Spanned<String>>,
    side: Side,
) -> Result<Names, RuleError> {
    if let Some(star) = list.iter().find(|n| n.get_ref() == "*") {
        if list.len() > 1 {
            return Err(src.error(star.span(), format!("\"*\" must be the whole {key} list")));
        }
        return Ok(Names::Any);
    }
    let mut out = Vec::with_capacity(list.len());
    for name in list {
        check_name(src, &name, side)?;
        out.push(src.located(name));
    }
    Ok(Names::Only(out))
}

fn groups(
    src: &Text<'_>,
    key: &'static str,
    list: Vec<Spanned<String>>,
) -> Result<Vec<Located<String>>, RuleError> {
    list.into_iter()
        .map(|g| {
            check_name(src, &g, Side::Group(key))?;
            Ok(src.located(g))
        })
        .collect()
}

fn rule(
    src: &Text<'_>,
    effect: Effect,
    table: Spanned<RuleDoc>,
    id: String,
    source: Source,
) -> Result<Rule, RuleError> {
    let span = table.span();
    let doc = table.into_inner();
    let proxy_side = match effect {
        Effect::Allow => Side::Proxy,
        // Naming root in a deny rule is harmless and may be deliberate.
        Effect::Deny => Side::Login,
    };
    let logins = names(src, "logins", doc.logins, Side::Login)?;
    let login_groups = groups(src, "login_groups", doc.login_groups)?;
    let proxies = names(src, "proxies", doc.proxies, proxy_side)?;
    let proxy_groups = groups(src, "proxy_groups", doc.proxy_groups)?;
    let kind = effect.as_str();
    if logins.is_empty() && login_groups.is_empty() {
        return Err(src.error(
            span,
            format!("[[{kind}]] names no login: give logins or login_groups"),
        ));
    }
    if proxies.is_empty() && proxy_groups.is_empty() {
        return Err(src.error(
            span,
            format!("[[{kind}]] names no proxy: give proxies or proxy_groups"),
        ));
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
    Ok(Rule {
        id,
        source,
        effect,
        logins,
        login_groups,
        proxies,
        proxy_groups,
        expires,
        at: src.at(span.start),
    })
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
pub(super) fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}
