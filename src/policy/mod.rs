//! Who may proxy to whom: the rule model, its parser and its evaluation.
//!
//! Pure: no I/O, no clock, no NSS. Callers hand in the names, groups and uid of the
//! users involved ([`Subject`]) and the current time; the answer is a [`Decision`].
//!
//! Semantics (DESIGN §3): default deny; a matching active `deny` beats any `allow`;
//! proxy-type users never proxy; root is never a target; a rule with `expires` in the
//! past matches nothing. In `proxies`, `"*"` means "any proxy-type user" for an allow
//! rule and "anyone" for a deny rule; in `logins`, `"*"` means any login.

mod parse;
mod render;

pub use parse::{parse_live_rule, parse_rule_file};
pub use render::rfc3339 as format_time;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

/// Microseconds since the Unix epoch (wall clock).
pub type Micros = i64;

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

/// A value together with where it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located<T> {
    pub value: T,
    pub at: Location,
}

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

/// A list of user names, or `"*"` written as the whole list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Names {
    Any,
    Only(Vec<Located<String>>),
}

impl Names {
    fn is_empty(&self) -> bool {
        matches!(self, Names::Only(list) if list.is_empty())
    }

    fn iter(&self) -> impl Iterator<Item = &Located<String>> {
        match self {
            Names::Any => [].iter(),
            Names::Only(list) => list.iter(),
        }
    }
}

/// Where a rule came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A drop-in file, by path.
    File(String),
    /// Added through `Admin.AddRule`.
    Live,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File(path) => write!(f, "file:{path}"),
            Source::Live => f.write_str("live"),
        }
    }
}

/// One `[[allow]]` or `[[deny]]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub id: String,
    pub source: Source,
    pub effect: Effect,
    pub logins: Names,
    pub login_groups: Vec<Located<String>>,
    pub proxies: Names,
    pub proxy_groups: Vec<Located<String>>,
    pub expires: Option<Micros>,
    /// Where the table starts.
    pub at: Location,
}

impl Rule {
    /// The rule as a TOML table in the drop-in file format.
    pub fn to_toml(&self) -> String {
        render::rule(self)
    }

    fn active(&self, now: Micros) -> bool {
        self.expires.is_none_or(|t| now < t)
    }
}

/// One parsed drop-in file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleFile {
    pub path: String,
    pub proxy_users: Vec<Located<String>>,
    pub proxy_groups: Vec<Located<String>>,
    pub rules: Vec<Rule>,
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
    Allowed { rule: String },
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
    ByRule(String),
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

/// Rules indexed by the login side, so a decision only looks at rules that can apply.
#[derive(Debug, Default)]
struct LoginIndex {
    by_name: HashMap<String, Vec<u32>>,
    by_group: HashMap<String, Vec<u32>>,
    any: Vec<u32>,
}

impl LoginIndex {
    fn add(&mut self, idx: u32, rule: &Rule) {
        match &rule.logins {
            Names::Any => self.any.push(idx),
            Names::Only(list) => {
                for name in list {
                    self.by_name
                        .entry(name.value.clone())
                        .or_default()
                        .push(idx);
                }
            }
        }
        for group in &rule.login_groups {
            self.by_group
                .entry(group.value.clone())
                .or_default()
                .push(idx);
        }
    }

    fn candidates<'s>(&'s self, login: &Subject<'s>) -> impl Iterator<Item = u32> + 's {
        let by_name = self
            .by_name
            .get(login.name)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let by_group = login
            .groups
            .iter()
            .filter_map(|g| self.by_group.get(g.as_str()))
            .flat_map(|v| v.iter());
        by_name
            .iter()
            .chain(by_group)
            .chain(self.any.iter())
            .copied()
    }
}

/// The target side of a rule, laid out for matching.
#[derive(Debug)]
struct Target {
    any: bool,
    names: Box<[String]>,
    groups: Box<[String]>,
    expires: Option<Micros>,
}

impl Target {
    fn active(&self, now: Micros) -> bool {
        self.expires.is_none_or(|t| now < t)
    }
}

/// A validated, indexed rule set. Immutable: a change builds a new one.
#[derive(Debug, Default)]
pub struct CompiledRules {
    files: Vec<RuleFile>,
    live: Vec<Rule>,
    /// All rules, file rules first (in file order), then live rules.
    order: Vec<(usize, usize)>,
    targets: Vec<Target>,
    ids: Vec<String>,
    proxy_users: HashSet<String>,
    proxy_groups: HashSet<String>,
    allow: LoginIndex,
    deny: LoginIndex,
}

impl CompiledRules {
    /// Validates the whole set (files in the given order, then live rules) and indexes it.
    pub fn compile(files: Vec<RuleFile>, live: Vec<Rule>) -> Result<Self, RuleError> {
        let mut proxy_users: HashMap<String, Location> = HashMap::new();
        let mut proxy_groups: HashMap<String, Location> = HashMap::new();
        let all_rules = files.iter().flat_map(|f| f.rules.iter()).chain(live.iter());
        for file in &files {
            for user in &file.proxy_users {
                proxy_users
                    .entry(user.value.clone())
                    .or_insert_with(|| user.at.clone());
            }
            for group in &file.proxy_groups {
                proxy_groups
                    .entry(group.value.clone())
                    .or_insert_with(|| group.at.clone());
            }
        }
        for rule in all_rules.clone().filter(|r| r.effect == Effect::Allow) {
            for user in rule.proxies.iter() {
                proxy_users
                    .entry(user.value.clone())
                    .or_insert_with(|| user.at.clone());
            }
            for group in &rule.proxy_groups {
                proxy_groups
                    .entry(group.value.clone())
                    .or_insert_with(|| group.at.clone());
            }
        }
        for rule in all_rules.clone().filter(|r| r.effect == Effect::Allow) {
            for login in rule.logins.iter() {
                if let Some(declared) = proxy_users.get(&login.value) {
                    return Err(RuleError {
                        at: login.at.clone(),
                        message: format!(
                            "{} is a proxy user (made one at {declared}) and proxy users cannot proxy",
                            login.value
                        ),
                    });
                }
            }
            for group in &rule.login_groups {
                if let Some(declared) = proxy_groups.get(&group.value) {
                    return Err(RuleError {
                        at: group.at.clone(),
                        message: format!(
                            "group {} holds proxy users (made so at {declared}) and proxy users cannot proxy",
                            group.value
                        ),
                    });
                }
            }
        }

        let mut compiled = CompiledRules {
            proxy_users: proxy_users.into_keys().collect(),
            proxy_groups: proxy_groups.into_keys().collect(),
            ..Default::default()
        };
        let positions = files
            .iter()
            .enumerate()
            .flat_map(|(f, file)| (0..file.rules.len()).map(move |r| (f, r)))
            .chain((0..live.len()).map(|r| (usize::MAX, r)));
        for (idx, (f, r)) in positions.enumerate() {
            let rule = if f == usize::MAX {
                &live[r]
            } else {
                &files[f].rules[r]
            };
            let idx = u32::try_from(idx).expect("fewer than 2^32 rules");
            match rule.effect {
                Effect::Allow => compiled.allow.add(idx, rule),
                Effect::Deny => compiled.deny.add(idx, rule),
            }
            compiled.targets.push(Target {
                any: rule.proxies == Names::Any,
                names: rule.proxies.iter().map(|n| n.value.clone()).collect(),
                groups: rule.proxy_groups.iter().map(|g| g.value.clone()).collect(),
                expires: rule.expires,
            });
            compiled.ids.push(rule.id.clone());
            compiled.order.push((f, r));
        }
        compiled.files = files;
        compiled.live = live;
        Ok(compiled)
    }

    /// The drop-in files this set was built from.
    pub fn files(&self) -> &[RuleFile] {
        &self.files
    }

    /// The live rules of this set.
    pub fn live(&self) -> &[Rule] {
        &self.live
    }

    /// Every rule, file rules first.
    pub fn rules(&self) -> impl Iterator<Item = &Rule> {
        self.order.iter().map(|&(f, r)| {
            if f == usize::MAX {
                &self.live[r]
            } else {
                &self.files[f].rules[r]
            }
        })
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Proxy-type users can never proxy themselves.
    pub fn is_proxy_user(&self, user: &Subject<'_>) -> bool {
        self.proxy_users.contains(user.name)
            || user
                .groups
                .iter()
                .any(|g| self.proxy_groups.contains(g.as_str()))
    }

    /// May `login` proxy to `proxy` at time `now`?
    pub fn check(&self, login: &Subject<'_>, proxy: &Subject<'_>, now: Micros) -> Decision {
        if proxy.is_root() {
            return Decision::Denied(Denial::TargetIsRoot);
        }
        if login.name == proxy.name {
            return Decision::Denied(Denial::SameUser);
        }
        if self.is_proxy_user(login) {
            return Decision::Denied(Denial::LoginIsProxyUser);
        }
        let proxy_type = self.is_proxy_user(proxy);
        let matches = |idx: u32, effect: Effect| {
            let target = &self.targets[idx as usize];
            target.active(now)
                && ((target.any && (effect == Effect::Deny || proxy_type))
                    || target.names.iter().any(|n| n == proxy.name)
                    || target.groups.iter().any(|g| proxy.groups.contains(g)))
        };
        if let Some(idx) = self
            .deny
            .candidates(login)
            .find(|&i| matches(i, Effect::Deny))
        {
            return Decision::Denied(Denial::ByRule(self.ids[idx as usize].clone()));
        }
        match self
            .allow
            .candidates(login)
            .find(|&i| matches(i, Effect::Allow))
        {
            Some(idx) => Decision::Allowed {
                rule: self.ids[idx as usize].clone(),
            },
            None => Decision::Denied(Denial::NoRule),
        }
    }

    /// The targets that active allow rules offer `login`: user names and group names
    /// (whose members must be looked up). Each must still pass [`check`](Self::check).
    pub fn offered_targets(&self, login: &Subject<'_>, now: Micros) -> (Vec<String>, Vec<String>) {
        let mut users = HashSet::new();
        let mut groups = HashSet::new();
        for idx in self.allow.candidates(login) {
            let target = &self.targets[idx as usize];
            if !target.active(now) {
                continue;
            }
            if target.any {
                users.extend(self.proxy_users.iter().cloned());
                groups.extend(self.proxy_groups.iter().cloned());
            }
            users.extend(target.names.iter().cloned());
            groups.extend(target.groups.iter().cloned());
        }
        let mut users: Vec<String> = users.into_iter().collect();
        let mut groups: Vec<String> = groups.into_iter().collect();
        users.sort();
        groups.sort();
        (users, groups)
    }

    /// The earliest expiry after `now`, when decisions change without a reload.
    pub fn next_expiry(&self, now: Micros) -> Option<Micros> {
        self.rules()
            .filter_map(|r| r.expires)
            .filter(|&t| t > now)
            .min()
    }

    /// Number of rules whose expiry has passed.
    pub fn expired_count(&self, now: Micros) -> usize {
        self.rules().filter(|r| !r.active(now)).count()
    }
}

#[cfg(test)]
mod tests;
