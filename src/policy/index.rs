//! The index a decision reads: every name the rules mention as a small key (short names
//! inline), and the rules by login key and proxy key, so that a decision touches only
//! the rules that name both users, in a few cache lines.

use std::collections::HashMap;

use super::{Micros, Subject};

/// `"*"` on either side of a rule.
pub(super) const ANY: u32 = u32::MAX;
/// Set on the keys of group names, so users and groups of the same name stay apart.
pub(super) const GROUP: u32 = 1 << 31;

/// A user or group name that some rule mentions, as a small key.
#[derive(Debug, Clone, Copy)]
pub(super) struct Symbol {
    pub(super) key: u32,
    /// Naming this user (or being in this group) makes one proxy-type.
    pub(super) proxy_type: bool,
}

/// Up to 31 bytes of name kept inline, so that looking a name up compares bytes in the
/// table itself instead of chasing a pointer to a heap string (a cache miss each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct ShortName {
    len: u8,
    bytes: [u8; 31],
}

impl ShortName {
    pub(super) fn new(name: &str) -> Option<Self> {
        let mut bytes = [0u8; 31];
        bytes
            .get_mut(..name.len())?
            .copy_from_slice(name.as_bytes());
        Some(ShortName {
            len: name.len() as u8,
            bytes,
        })
    }

    pub(super) fn as_str(&self) -> &str {
        // Built from a &str, cut at its own length.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }
}

/// Names to symbols; short names inline.
#[derive(Debug, Default)]
pub(super) struct NameTable {
    short: FastMap<ShortName, Symbol>,
    long: FastMap<String, Symbol>,
}

impl NameTable {
    pub(super) fn len(&self) -> usize {
        self.short.len() + self.long.len()
    }

    pub(super) fn get(&self, name: &str) -> Option<&Symbol> {
        match ShortName::new(name) {
            Some(short) => self.short.get(&short),
            None => self.long.get(name),
        }
    }

    pub(super) fn get_or_insert(&mut self, name: &str, symbol: Symbol) -> &mut Symbol {
        match ShortName::new(name) {
            Some(short) => self.short.entry(short).or_insert(symbol),
            None => self.long.entry(name.to_string()).or_insert(symbol),
        }
    }

    /// Makes room for `more` names (short ones: a long name is rare).
    pub(super) fn reserve(&mut self, more: usize) {
        self.short.reserve(more);
    }

    /// Gives back the room [`reserve`](Self::reserve) made and no name took.
    pub(super) fn shrink_to_fit(&mut self) {
        self.short.shrink_to_fit();
        self.long.shrink_to_fit();
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&str, &Symbol)> {
        let short = self.short.iter().map(|(n, s)| (n.as_str(), s));
        short.chain(self.long.iter().map(|(n, s)| (n.as_str(), s)))
    }
}

#[derive(Debug, Default)]
pub(super) struct Symbols {
    pub(super) users: NameTable,
    pub(super) groups: NameTable,
    /// Whether any rule has `"*"` on the login side, on the proxy side.
    pub(super) any_login: bool,
    pub(super) any_proxy: bool,
}

impl Symbols {
    pub(super) fn symbol(&mut self, name: &str, group: bool) -> &mut Symbol {
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

    pub(super) fn intern(&mut self, name: &str, group: bool) -> u32 {
        self.symbol(name, group).key
    }

    pub(super) fn mark_proxy_type(&mut self, name: &str, group: bool) {
        self.symbol(name, group).proxy_type = true;
    }

    /// The keys a subject matches rules by (its name, its groups, and `*` if `any`),
    /// and whether it is proxy-type.
    pub(super) fn keys(&self, subject: &Subject<'_>, any: bool, keys: &mut Keys) -> bool {
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
pub(super) struct Keys {
    inline: [u32; 8],
    len: usize,
    spill: Vec<u32>,
}

impl Keys {
    pub(super) fn push(&mut self, key: u32) {
        if self.len < self.inline.len() {
            self.inline[self.len] = key;
            self.len += 1;
        } else {
            self.spill.push(key);
        }
    }

    pub(super) fn as_slices(&self) -> [&[u32]; 2] {
        [&self.inline[..self.len], &self.spill]
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.as_slices().into_iter().flatten().copied()
    }
}

/// A multiply-rotate hash (as in rustc's FxHash) for the decision's lookups, where the
/// standard SipHash would cost more than the rest of a decision. The tables hold only
/// names from the rules, so no caller-chosen key can fill them with collisions.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct FastHasher(u64);

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

pub(super) type FastMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<FastHasher>>;

/// Marks deny rules in a [`PairIndex`] entry.
pub(super) const DENY: u32 = 1 << 31;

/// Rules by login key, then proxy key: for each login key, a contiguous run of
/// (proxy key, entry) sorted by proxy key and rule order. A decision reads the run of
/// each of the login's keys and binary-searches it for each of the proxy's keys, so it
/// touches only rules that name both users, in a few cache lines. Entries are rule
/// indexes, deny rules marked with [`DENY`].
#[derive(Debug, Default)]
pub(super) struct PairIndex {
    /// Run of each user key, each group key (without [`GROUP`]), and of `*`.
    users: Vec<(u32, u32)>,
    groups: Vec<(u32, u32)>,
    any: (u32, u32),
    runs: Vec<(u32, u32)>,
}

/// The first active allow and deny rules that apply.
#[derive(Default)]
pub(super) struct Found {
    pub(super) allow: Option<u32>,
    pub(super) deny: Option<u32>,
}

impl PairIndex {
    /// Builds the index from (login key, proxy key, entry) triples.
    pub(super) fn build(mut triples: Vec<(u32, u32, u32)>, users: usize, groups: usize) -> Self {
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

    pub(super) fn run(&self, login_key: u32) -> &[(u32, u32)] {
        let (start, len) = match login_key {
            ANY => self.any,
            key if key & GROUP != 0 => self.groups[(key & !GROUP) as usize],
            key => self.users[key as usize],
        };
        &self.runs[start as usize..(start + len) as usize]
    }

    /// Looks at every pair of `login` × `proxy` keys. An allow rule with `proxies =
    /// ["*"]` applies only if `proxy_type` (in a deny rule `"*"` is anyone).
    pub(super) fn find(
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
