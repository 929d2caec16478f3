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
    Allowed { rule: Arc<str> },
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
    ByRule(Arc<str>),
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

/// `"*"` on either side of a rule.
const ANY: u32 = u32::MAX;
/// Set on the keys of group names, so users and groups of the same name stay apart.
const GROUP: u32 = 1 << 31;

/// A user or group name that some rule mentions, as a small key.
#[derive(Debug, Clone, Copy)]
struct Symbol {
    key: u32,
    /// Naming this user (or being in this group) makes one proxy-type.
    proxy_type: bool,
}

/// Up to 31 bytes of name kept inline, so that looking a name up compares bytes in the
/// table itself instead of chasing a pointer to a heap string (a cache miss each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct ShortName {
    len: u8,
    bytes: [u8; 31],
}

impl ShortName {
    fn new(name: &str) -> Option<Self> {
        let mut bytes = [0u8; 31];
        bytes
            .get_mut(..name.len())?
            .copy_from_slice(name.as_bytes());
        Some(ShortName {
            len: name.len() as u8,
            bytes,
        })
    }

    fn as_str(&self) -> &str {
        // Built from a &str, cut at its own length.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }
}

/// Names to symbols; short names inline.
#[derive(Debug, Default)]
struct NameTable {
    short: FastMap<ShortName, Symbol>,
    long: FastMap<String, Symbol>,
}

impl NameTable {
    fn len(&self) -> usize {
        self.short.len() + self.long.len()
    }

    fn get(&self, name: &str) -> Option<&Symbol> {
        match ShortName::new(name) {
            Some(short) => self.short.get(&short),
            None => self.long.get(name),
        }
    }

    fn get_or_insert(&mut self, name: &str, symbol: Symbol) -> &mut Symbol {
        match ShortName::new(name) {
            Some(short) => self.short.entry(short).or_insert(symbol),
            None => self.long.entry(name.to_string()).or_insert(symbol),
        }
    }

    fn iter(&self) -> impl Iterator<Item = (&str, &Symbol)> {
        let short = self.short.iter().map(|(n, s)| (n.as_str(), s));
        short.chain(self.long.iter().map(|(n, s)| (n.as_str(), s)))
    }
}

#[derive(Debug, Default)]
struct Symbols {
    users: NameTable,
    groups: NameTable,
    /// Whether any rule has `"*"` on the login side, on the proxy side.
    any_login: bool,
    any_proxy: bool,
}

impl Symbols {
    fn symbol(&mut self, name: &str, group: bool) -> &mut Symbol {
        let table = if group {
            &mut self.groups
        } else {
            &mut self.users
        };
        let key = table.len() as u32 | if group { GROUP } else { 0 };
        table.get_or_insert(
            name,
            Symbol {
                key,
                proxy_type: false,
            },
        )
    }

    fn intern(&mut self, name: &str, group: bool) -> u32 {
        self.symbol(name, group).key
    }

    fn mark_proxy_type(&mut self, name: &str, group: bool) {
        self.symbol(name, group).proxy_type = true;
    }

    /// The keys a subject matches rules by (its name, its groups, and `*` if `any`),
    /// and whether it is proxy-type.
    fn keys(&self, subject: &Subject<'_>, any: bool, keys: &mut Keys) -> bool {
        let mut proxy_type = false;
        let found = std::iter::once(self.users.get(subject.name))
            .chain(subject.groups.iter().map(|g| self.groups.get(g)));
        for symbol in found.flatten() {
            keys.push(symbol.key);
            proxy_type |= symbol.proxy_type;
        }
        if any {
            keys.push(ANY);
        }
        proxy_type
    }
}

/// A subject's keys, inline for the usual few (a decision allocates nothing then).
#[derive(Default)]
struct Keys {
    inline: [u32; 8],
    len: usize,
    spill: Vec<u32>,
}

impl Keys {
    fn push(&mut self, key: u32) {
        if self.len < self.inline.len() {
            self.inline[self.len] = key;
            self.len += 1;
        } else {
            self.spill.push(key);
        }
    }

    fn as_slices(&self) -> [&[u32]; 2] {
        [&self.inline[..self.len], &self.spill]
    }

    fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.as_slices().into_iter().flatten().copied()
    }
}

/// A multiply-rotate hash (as in rustc's FxHash) for the decision's lookups, where the
/// standard SipHash would cost more than the rest of a decision. The tables hold only
/// names from the rules, so no caller-chosen key can fill them with collisions.
#[derive(Debug, Default, Clone, Copy)]
struct FastHasher(u64);

impl std::hash::Hasher for FastHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            self.write_u64(u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
        }
        let mut tail = [0u8; 8];
        tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
        self.write_u64(u64::from_le_bytes(tail));
    }

    fn write_u8(&mut self, n: u8) {
        self.write_u64(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type FastMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<FastHasher>>;

/// Marks deny rules in a [`PairIndex`] entry.
const DENY: u32 = 1 << 31;

/// Rules by login key, then proxy key: for each login key, a contiguous run of
/// (proxy key, entry) sorted by proxy key and rule order. A decision reads the run of
/// each of the login's keys and binary-searches it for each of the proxy's keys, so it
/// touches only rules that name both users, in a few cache lines. Entries are rule
/// indexes, deny rules marked with [`DENY`].
#[derive(Debug, Default)]
struct PairIndex {
    /// Run of each user key, each group key (without [`GROUP`]), and of `*`.
    users: Vec<(u32, u32)>,
    groups: Vec<(u32, u32)>,
    any: (u32, u32),
    runs: Vec<(u32, u32)>,
}

/// The first active allow and deny rules that apply.
#[derive(Default)]
struct Found {
    allow: Option<u32>,
    deny: Option<u32>,
}

impl PairIndex {
    /// Builds the index from (login key, proxy key, entry) triples.
    fn build(mut triples: Vec<(u32, u32, u32)>, users: usize, groups: usize) -> Self {
        triples.sort_unstable_by_key(|&(l, p, e)| (l, p, e & !DENY));
        let mut index = PairIndex {
            users: vec![(0, 0); users],
            groups: vec![(0, 0); groups],
            ..Default::default()
        };
        let mut start = 0;
        while start < triples.len() {
            let login = triples[start].0;
            let end = start + triples[start..].partition_point(|t| t.0 == login);
            let run = (index.runs.len() as u32, (end - start) as u32);
            index
                .runs
                .extend(triples[start..end].iter().map(|&(_, p, e)| (p, e)));
            match login {
                ANY => index.any = run,
                key if key & GROUP != 0 => index.groups[(key & !GROUP) as usize] = run,
                key => index.users[key as usize] = run,
            }
            start = end;
        }
        index
    }

    fn run(&self, login_key: u32) -> &[(u32, u32)] {
        let (start, len) = match login_key {
            ANY => self.any,
            key if key & GROUP != 0 => self.groups[(key & !GROUP) as usize],
            key => self.users[key as usize],
        };
        &self.runs[start as usize..(start + len) as usize]
    }

    /// Looks at every pair of `login` × `proxy` keys. An allow rule with `proxies =
    /// ["*"]` applies only if `proxy_type` (in a deny rule `"*"` is anyone).
    fn find(
        &self,
        login: &Keys,
        proxy: &Keys,
        proxy_type: bool,
        expires: &[Option<Micros>],
        now: Micros,
    ) -> Found {
        let mut found = Found::default();
        for l in login.iter() {
            let run = self.run(l);
            if run.is_empty() {
                continue;
            }
            for p in proxy.iter() {
                let first = run.partition_point(|&(key, _)| key < p);
                for &(_, entry) in run[first..].iter().take_while(|&&(key, _)| key == p) {
                    let (i, deny) = (entry & !DENY, entry & DENY != 0);
                    let slot = if deny {
                        &mut found.deny
                    } else {
                        &mut found.allow
                    };
                    if slot.is_some_and(|best| best <= i) || (!deny && p == ANY && !proxy_type) {
                        continue;
                    }
                    if expires[i as usize].is_none_or(|t| now < t) {
                        *slot = Some(i);
                    }
                }
            }
        }
        found
    }
}

/// A validated, indexed rule set. Immutable: a change builds a new one.
#[derive(Debug, Default)]
pub struct CompiledRules {
    files: Vec<Arc<RuleFile>>,
    live: Vec<Rule>,
    /// By rule index: file rules first (in file order), then live rules.
    ids: Vec<Arc<str>>,
    expires: Vec<Option<Micros>>,
    symbols: Symbols,
    index: PairIndex,
}

impl CompiledRules {
    /// Validates the whole set (files in the given order, then live rules) and indexes it.
    pub fn compile(files: Vec<Arc<RuleFile>>, live: Vec<Rule>) -> Result<Self, RuleError> {
        let mut proxy_users: HashMap<String, Location> = HashMap::new();
        let mut proxy_groups: HashMap<String, Location> = HashMap::new();
        let all_rules = files.iter().flat_map(|f| f.rules.iter()).chain(live.iter());
        // Each proxy-type name with where it was first made one.
        let declare = |names: &mut HashMap<String, Location>, name: &Located<String>| {
            names
                .entry(name.value.clone())
                .or_insert_with(|| name.at.clone());
        };
        for file in &files {
            file.proxy_users
                .iter()
                .for_each(|u| declare(&mut proxy_users, u));
            file.proxy_groups
                .iter()
                .for_each(|g| declare(&mut proxy_groups, g));
        }
        for rule in all_rules.clone().filter(|r| r.effect == Effect::Allow) {
            rule.proxies
                .iter()
                .for_each(|u| declare(&mut proxy_users, u));
            rule.proxy_groups
                .iter()
                .for_each(|g| declare(&mut proxy_groups, g));
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

        let mut compiled = CompiledRules::default();
        let mut triples = Vec::new();
        for name in proxy_users.keys() {
            compiled.symbols.mark_proxy_type(name, false);
        }
        for name in proxy_groups.keys() {
            compiled.symbols.mark_proxy_type(name, true);
        }
        for (idx, rule) in all_rules.enumerate() {
            let idx = u32::try_from(idx)
                .ok()
                .filter(|&i| i < DENY)
                .ok_or_else(|| RuleError {
                    at: rule.at.clone(),
                    message: "too many rules (at most 2^31)".into(),
                })?;
            let symbols = &mut compiled.symbols;
            let keys = |symbols: &mut Symbols, names: &Names, groups: &[Located<String>]| {
                let mut keys: Vec<u32> = match names {
                    Names::Any => vec![ANY],
                    Names::Only(list) => list
                        .iter()
                        .map(|n| symbols.intern(&n.value, false))
                        .collect(),
                };
                keys.extend(groups.iter().map(|g| symbols.intern(&g.value, true)));
                keys
            };
            let login_keys = keys(symbols, &rule.logins, &rule.login_groups);
            let proxy_keys = keys(symbols, &rule.proxies, &rule.proxy_groups);
            symbols.any_login |= rule.logins == Names::Any;
            symbols.any_proxy |= rule.proxies == Names::Any;
            let entry = match rule.effect {
                Effect::Allow => idx,
                Effect::Deny => idx | DENY,
            };
            for &l in &login_keys {
                triples.extend(proxy_keys.iter().map(|&p| (l, p, entry)));
            }
            compiled.ids.push(Arc::from(rule.id.as_str()));
            compiled.expires.push(rule.expires);
        }
        compiled.index = PairIndex::build(
            triples,
            compiled.symbols.users.len(),
            compiled.symbols.groups.len(),
        );
        compiled.files = files;
        compiled.live = live;
        Ok(compiled)
    }

    /// The drop-in files this set was built from.
    pub fn files(&self) -> &[Arc<RuleFile>] {
        &self.files
    }

    /// The live rules of this set.
    pub fn live(&self) -> &[Rule] {
        &self.live
    }

    /// Every rule, file rules first.
    pub fn rules(&self) -> impl Iterator<Item = &Rule> {
        self.files
            .iter()
            .flat_map(|f| f.rules.iter())
            .chain(self.live.iter())
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// May `login` proxy to `proxy` at time `now`?
    pub fn check(&self, login: &Subject<'_>, proxy: &Subject<'_>, now: Micros) -> Decision {
        if proxy.is_root() {
            return Decision::Denied(Denial::TargetIsRoot);
        }
        if login.name == proxy.name {
            return Decision::Denied(Denial::SameUser);
        }
        let mut login_keys = Keys::default();
        if self
            .symbols
            .keys(login, self.symbols.any_login, &mut login_keys)
        {
            return Decision::Denied(Denial::LoginIsProxyUser);
        }
        let mut proxy_keys = Keys::default();
        let proxy_is_proxy = self
            .symbols
            .keys(proxy, self.symbols.any_proxy, &mut proxy_keys);
        let found = self
            .index
            .find(&login_keys, &proxy_keys, proxy_is_proxy, &self.expires, now);
        match found {
            Found { deny: Some(i), .. } => {
                Decision::Denied(Denial::ByRule(self.ids[i as usize].clone()))
            }
            Found { allow: Some(i), .. } => Decision::Allowed {
                rule: self.ids[i as usize].clone(),
            },
            _ => Decision::Denied(Denial::NoRule),
        }
    }

    /// Whether `user` is proxy-type: named as a proxy user (or in a proxy group) by
    /// the rules. Such accounts are reached by proxying, not logged into directly.
    pub fn is_proxy_type(&self, user: &Subject<'_>) -> bool {
        !user.is_root() && self.symbols.keys(user, false, &mut Keys::default())
    }

    /// The targets that active allow rules offer `login`: user names and group names
    /// (whose members must be looked up). Each must still pass [`check`](Self::check).
    pub fn offered_targets(&self, login: &Subject<'_>, now: Micros) -> (Vec<String>, Vec<String>) {
        let mut users = HashSet::new();
        let mut groups = HashSet::new();
        let names_login = |rule: &Rule| match &rule.logins {
            Names::Any => true,
            Names::Only(list) => list.iter().any(|n| n.value == login.name),
        };
        let in_group = |rule: &Rule| {
            rule.login_groups
                .iter()
                .any(|g| login.groups.contains(&g.value))
        };
        for rule in self.rules() {
            if rule.effect != Effect::Allow
                || !rule.active(now)
                || !(names_login(rule) || in_group(rule))
            {
                continue;
            }
            match &rule.proxies {
                Names::Any => {
                    let proxy_type = |table: &NameTable| -> Vec<String> {
                        table
                            .iter()
                            .filter(|(_, s)| s.proxy_type)
                            .map(|(n, _)| n.to_string())
                            .collect()
                    };
                    users.extend(proxy_type(&self.symbols.users));
                    groups.extend(proxy_type(&self.symbols.groups));
                }
                Names::Only(list) => users.extend(list.iter().map(|n| n.value.clone())),
            }
            groups.extend(rule.proxy_groups.iter().map(|g| g.value.clone()));
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
