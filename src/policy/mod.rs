//! Who may proxy to whom: the rule model, its parser and its evaluation.
//!
//! Pure: no I/O, no clock, no NSS. Callers hand in the names, groups and uid of the
//! users involved ([`Subject`]) and the current time; the answer is a [`Decision`].
//!
//! Semantics (docs/architecture.md, "Rules"): default deny; a matching active `deny`
//! beats any `allow`; proxy-type users never proxy; root is never a target; a rule with
//! `expires` in the past matches nothing. In `proxies`, `"*"` means "any proxy-type
//! user" for an allow rule and "anyone" for a deny rule; in `logins`, `"*"` means any
//! login.
//!
//! - [`model`]: parsed files, compact (names once, rules as indexes);
//! - [`parse`] (the full TOML reader, the reference) and [`fast`] (the plain form);
//! - [`compile`]: the whole set validated and indexed; [`index`]: what a decision reads;
//! - [`render`]: rules back into the file format.

mod compile;
mod fast;
mod index;
mod model;
mod parse;
mod render;

pub use compile::CompiledRules;
pub use model::{RuleFile, RuleName, RuleView, Source};
pub use parse::{days_from_civil, parse_live_rule, parse_with_toml};
pub use render::rfc3339 as format_time;

/// The plain-form reader alone (`None`: not the plain form, or not valid), for the fuzz
/// targets, which hold it to the full reader.
#[doc(hidden)]
pub fn parse_plain_form(path: &str, text: &str) -> Option<RuleFile> {
    fast::parse(path, text)
}

use std::fmt;
use std::sync::Arc;

pub use crate::time::Micros;

/// Parses one drop-in file. `path` is how the file is named in errors and rule sources;
/// rule ids are `<file name>#<n>`, n counting the file's rule tables from 1. The plain
/// form is read by [`fast`]; anything else, and every file with an error, by the full
/// TOML reader ([`parse`]), whose errors are the ones reported.
pub fn parse_rule_file(path: &str, text: &str) -> Result<RuleFile, RuleError> {
    match fast::parse(path, text) {
        Some(file) => Ok(file),
        None => parse_with_toml(path, text),
    }
}

/// Where something was written: `file:line:column`, 1-based.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: Arc<str>,
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// A rule source that does not validate: `file:line:column: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    pub at: Location,
    pub message: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.at, self.message)
    }
}

impl std::error::Error for RuleError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Allow,
    Deny,
}

impl Effect {
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Allow => "allow",
            Effect::Deny => "deny",
        }
    }
}

/// A user as far as a decision needs it: name, every group it is in (by name,
/// primary included) and its uid if it has a system account.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub name: &'a str,
    pub groups: &'a [String],
    pub uid: Option<u32>,
}

impl<'a> Subject<'a> {
    /// A user with no system account (e.g. a web login): no groups, no uid.
    pub fn nameless_account(name: &'a str) -> Self {
        Subject {
            name,
            groups: &[],
            uid: None,
        }
    }

    fn is_root(&self) -> bool {
        self.uid == Some(0) || self.name == "root"
    }
}

/// The answer to "may this login proxy to that user now?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allowed { rule: RuleName },
    Denied(Denial),
}

impl Decision {
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allowed { .. })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    SameUser,
    TargetIsRoot,
    LoginIsProxyUser,
    ByRule(RuleName),
    NoRule,
}

impl Decision {
    /// A sentence saying why, naming the users and the rule.
    pub fn reason(&self, login: &str, proxy: &str) -> String {
        match self {
            Decision::Allowed { rule } => format!("{login} may proxy to {proxy} (rule {rule})"),
            Decision::Denied(Denial::SameUser) => format!("{login} cannot proxy to itself"),
            Decision::Denied(Denial::TargetIsRoot) => "root is never a proxy user".to_string(),
            Decision::Denied(Denial::LoginIsProxyUser) => {
                format!("{login} is a proxy user and proxy users cannot proxy")
            }
            Decision::Denied(Denial::ByRule(rule)) => {
                format!("{login} may not proxy to {proxy} (denied by rule {rule})")
            }
            Decision::Denied(Denial::NoRule) => {
                format!("{login} may not proxy to {proxy} (no rule allows it)")
            }
        }
    }
}

#[cfg(test)]
mod tests;
