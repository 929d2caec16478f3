//! A whole rule set, validated and indexed: drop-in files in their order, then the live
//! rules. Immutable: a change builds a new one.

use std::collections::HashSet;
use std::sync::Arc;

use super::index::{ANY, DENY, FastMap, Keys, NameTable, PairIndex, Symbols};
use super::model::{RuleFile, RuleView, Side, Span};
use super::{Decision, Denial, Effect, Micros, RuleError, Subject};

/// A validated, indexed rule set.
#[derive(Debug, Default)]
pub struct CompiledRules {
    files: Vec<Arc<RuleFile>>,
    live: Vec<Arc<RuleFile>>,
    /// By rule index (file rules first, then live rules): source index (files, then
    /// live) and table number within it.
    origins: Vec<(u32, u32)>,
    expires: Vec<Option<Micros>>,
    symbols: Symbols,
    index: PairIndex,
}

impl CompiledRules {
    /// Validates the whole set (files in the given order, then live rules) and indexes it.
    pub fn compile(files: Vec<Arc<RuleFile>>, live: Vec<Arc<RuleFile>>) -> Result<Self, RuleError> {
        let sources: Vec<&RuleFile> = files.iter().chain(live.iter()).map(|f| &**f).collect();

        // Each proxy-type name with where it was first made one: files' [proxy_users]
        // first, then every allow target.
        let mut proxy_users: FastMap<&str, (usize, usize)> = FastMap::default();
        let mut proxy_groups: FastMap<&str, (usize, usize)> = FastMap::default();
        for (s, file) in sources.iter().enumerate() {
            declare(&mut proxy_users, file, s, file.proxy_users);
            declare(&mut proxy_groups, file, s, file.proxy_groups);
        }
        for (s, file) in sources.iter().enumerate() {
            for rule in file.rules.iter().filter(|r| r.effect == Effect::Allow) {
                if let Side::Only(span) = rule.proxies {
                    declare(&mut proxy_users, file, s, span);
                }
                declare(&mut proxy_groups, file, s, rule.proxy_groups);
            }
        }
        let made_at = |(s, m): (usize, usize)| {
            let file = sources[s];
            file.at(&file.mentions[m])
        };
        for file in &sources {
            for rule in file.rules.iter().filter(|r| r.effect == Effect::Allow) {
                if let Side::Only(span) = rule.logins {
                    for login in file.mentions(span) {
                        let name = file.name(login.name);
                        if let Some(&declared) = proxy_users.get(name) {
                            return Err(RuleError {
                                at: file.at(login),
                                message: format!(
                                    "{name} is a proxy user (made one at {}) and proxy users \
                                     cannot proxy",
                                    made_at(declared)
                                ),
                            });
                        }
                    }
                }
                for group in file.mentions(rule.login_groups) {
                    let name = file.name(group.name);
                    if let Some(&declared) = proxy_groups.get(name) {
                        return Err(RuleError {
                            at: file.at(group),
                            message: format!(
                                "group {name} holds proxy users (made so at {}) and proxy users \
                                 cannot proxy",
                                made_at(declared)
                            ),
                        });
                    }
                }
            }
        }

        let mut compiled = CompiledRules::default();
        // Room for every distinct name of every source as a user (the usual case: names
        // of logins and proxies, few groups), so the table is not rebuilt as it grows.
        let names: usize = sources.iter().map(|f| f.ends.len()).sum();
        compiled.symbols.users.reserve(names);
        for name in proxy_users.keys() {
            compiled.symbols.mark_proxy_type(name, false);
        }
        for name in proxy_groups.keys() {
            compiled.symbols.mark_proxy_type(name, true);
        }
        drop((proxy_users, proxy_groups));
        let total: usize = sources.iter().map(|f| f.rules.len()).sum();
        if total >= DENY as usize {
            let file = sources.last().copied().unwrap_or_else(|| sources[0]);
            return Err(RuleError {
                at: file.location(1, 1),
                message: "too many rules (at most 2^31)".into(),
            });
        }
        compiled.origins.reserve_exact(total);
        compiled.expires.reserve_exact(total);
        let mut triples = Vec::with_capacity(total);
        let (mut login_keys, mut proxy_keys) = (Vec::new(), Vec::new());
        for (s, file) in sources.iter().enumerate() {
            // Each of the file's names is looked up in the symbol tables once, however
            // often its rules mention it.
            let mut interned = Interned::new(file);
            for (n, rule) in file.rules.iter().enumerate() {
                let idx = compiled.origins.len() as u32;
                let symbols = &mut compiled.symbols;
                interned.keys(symbols, rule.logins, rule.login_groups, &mut login_keys);
                interned.keys(symbols, rule.proxies, rule.proxy_groups, &mut proxy_keys);
                symbols.any_login |= rule.logins == Side::Any;
                symbols.any_proxy |= rule.proxies == Side::Any;
                let entry = match rule.effect {
                    Effect::Allow => idx,
                    Effect::Deny => idx | DENY,
                };
                for &l in &login_keys {
                    triples.extend(proxy_keys.iter().map(|&p| (l, p, entry)));
                }
                compiled.origins.push((s as u32, n as u32));
                compiled.expires.push(rule.expires);
            }
        }
        compiled.symbols.users.shrink_to_fit();
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

    /// The live rules of this set (one per `RuleFile`).
    pub fn live(&self) -> &[Arc<RuleFile>] {
        &self.live
    }

    fn source(&self, s: u32) -> &RuleFile {
        let s = s as usize;
        match self.files.get(s) {
            Some(file) => file,
            None => &self.live[s - self.files.len()],
        }
    }

    /// Every rule, file rules first.
    pub fn rules(&self) -> impl Iterator<Item = RuleView<'_>> {
        self.files
            .iter()
            .chain(self.live.iter())
            .flat_map(|file| file.rules())
    }

    /// The `[proxy_users]` of every file: (path, users, groups).
    pub fn declared_proxy_users(&self) -> impl Iterator<Item = (&str, Vec<&str>, Vec<&str>)> {
        self.files.iter().filter_map(|file| {
            let users: Vec<&str> = file.names(file.proxy_users).collect();
            let groups: Vec<&str> = file.names(file.proxy_groups).collect();
            (!users.is_empty() || !groups.is_empty()).then_some((&*file.shown, users, groups))
        })
    }

    pub fn len(&self) -> usize {
        self.origins.len()
    }

    pub fn is_empty(&self) -> bool {
        self.origins.is_empty()
    }

    fn rule_name(&self, i: u32) -> super::RuleName {
        let (s, n) = self.origins[i as usize];
        self.source(s).rule_name(n as usize)
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
        match (found.deny, found.allow) {
            (Some(i), _) => Decision::Denied(Denial::ByRule(self.rule_name(i))),
            (None, Some(i)) => Decision::Allowed {
                rule: self.rule_name(i),
            },
            _ => Decision::Denied(Denial::NoRule),
        }
    }

    /// Whether the rules make `subject` proxy-type (named as a proxy user or target, or
    /// in a group that is). root never is.
    pub fn is_proxy_type(&self, subject: &Subject<'_>) -> bool {
        !subject.is_root() && self.symbols.keys(subject, false, &mut Keys::default())
    }

    /// The targets that active allow rules offer `login`: user names and group names
    /// (whose members must be looked up). Each must still pass [`check`](Self::check).
    pub fn offered_targets(&self, login: &Subject<'_>, now: Micros) -> (Vec<String>, Vec<String>) {
        let mut users = HashSet::new();
        let mut groups = HashSet::new();
        let mut any_offered = false;
        for rule in self.rules() {
            let entry = rule.entry();
            let file = rule.file;
            if entry.effect != Effect::Allow || entry.expires.is_some_and(|t| now >= t) {
                continue;
            }
            let names_login = match entry.logins {
                Side::Any => true,
                Side::Only(span) => file.names(span).any(|n| n == login.name),
            };
            let in_group = file
                .names(entry.login_groups)
                .any(|g| login.groups.iter().any(|lg| lg == g));
            if !(names_login || in_group) {
                continue;
            }
            match entry.proxies {
                Side::Any => any_offered = true,
                Side::Only(span) => users.extend(file.names(span).map(str::to_string)),
            }
            groups.extend(file.names(entry.proxy_groups).map(str::to_string));
        }
        if any_offered {
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
        let mut users: Vec<String> = users.into_iter().collect();
        let mut groups: Vec<String> = groups.into_iter().collect();
        users.sort();
        groups.sort();
        (users, groups)
    }

    /// The earliest expiry after `now`, when decisions change without a reload.
    pub fn next_expiry(&self, now: Micros) -> Option<Micros> {
        self.expires
            .iter()
            .flatten()
            .copied()
            .filter(|&t| t > now)
            .min()
    }

    /// Number of rules whose expiry has passed.
    pub fn expired_count(&self, now: Micros) -> usize {
        self.expires.iter().flatten().filter(|&&t| t <= now).count()
    }
}

/// Makes the names of `span` of `file` (source `s`) proxy-type where not yet.
fn declare<'a>(
    names: &mut FastMap<&'a str, (usize, usize)>,
    file: &'a RuleFile,
    s: usize,
    span: super::model::Span,
) {
    for m in span.range() {
        let name = file.name(file.mentions[m].name);
        names.entry(name).or_insert((s, m));
    }
}

/// The symbol keys of one file's names (by name index, as users and as groups), looked
/// up as rules mention them.
struct Interned<'a> {
    file: &'a RuleFile,
    users: Vec<u32>,
    groups: Vec<u32>,
}

/// Not looked up yet.
const UNSET: u32 = u32::MAX;

impl<'a> Interned<'a> {
    fn new(file: &'a RuleFile) -> Self {
        Interned {
            file,
            users: vec![UNSET; file.ends.len()],
            groups: Vec::new(),
        }
    }

    fn key(&mut self, symbols: &mut Symbols, name: u32, group: bool) -> u32 {
        let table = if group {
            if self.groups.is_empty() {
                self.groups = vec![UNSET; self.file.ends.len()];
            }
            &mut self.groups
        } else {
            &mut self.users
        };
        let slot = &mut table[name as usize];
        if *slot == UNSET {
            *slot = symbols.intern(self.file.name(name), group);
        }
        *slot
    }

    /// The keys of one side of a rule: its names (or `*`) and its groups.
    fn keys(&mut self, symbols: &mut Symbols, names: Side, groups: Span, out: &mut Vec<u32>) {
        out.clear();
        let file = self.file;
        match names {
            Side::Any => out.push(ANY),
            Side::Only(span) => {
                for m in file.mentions(span) {
                    out.push(self.key(symbols, m.name, false));
                }
            }
        }
        for m in file.mentions(groups) {
            out.push(self.key(symbols, m.name, true));
        }
    }
}
