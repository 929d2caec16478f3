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
pub use parse::{days_from_civil, parse_live_rule, parse_rule_file, parse_with_toml};
pub use render::rfc3339 as format_time;

use std::fmt;
use std::sync::Arc;

pub use crate::time::Micros;

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
