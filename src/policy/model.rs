//! The rule model, compact: a parsed file keeps every name once in an arena, and its
//! rules refer to names by index, so 100 000 rules cost a few megabytes and no heap
//! allocation each. Where each name was written is kept (line and column) for the
//! errors that validation of the whole set may report.

use std::fmt;
use std::sync::Arc;

use super::index::{FastHasher, FastMap};
use super::{Effect, Location, Micros};

/// A range of a file's name mentions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Span {
    pub start: u32,
    pub len: u32,
}

impl Span {
    pub fn range(self) -> std::ops::Range<usize> {
        self.start as usize..(self.start + self.len) as usize
    }

    pub fn is_empty(self) -> bool {
        self.len == 0
    }
}

/// One side of a rule's names: `"*"` written as the whole list, or some names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Side {
    Any,
    Only(Span),
}

impl Side {
    pub fn is_empty(self) -> bool {
        matches!(self, Side::Only(span) if span.is_empty())
    }
}

/// A mention of a name: which name, and where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Mention {
    pub name: u32,
    pub line: u32,
    pub column: u32,
}

/// One `[[allow]]` or `[[deny]]` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RuleEntry {
    pub effect: Effect,
    pub logins: Side,
    pub login_groups: Span,
    pub proxies: Side,
    pub proxy_groups: Span,
    pub expires: Option<Micros>,
    /// Where the table starts.
    pub line: u32,
    pub column: u32,
}

/// Where a parsed file came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A drop-in file, by path.
    File(Arc<str>),
    /// A rule added through `Admin.AddRule`, by its id.
    Live(Arc<str>),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File(path) => write!(f, "file:{path}"),
            Source::Live(_) => f.write_str("live"),
        }
    }
}

/// A parsed drop-in file, or one live rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleFile {
    /// How errors name it (the path; "rule" for a live rule).
    pub(super) shown: Arc<str>,
    pub(super) source: Source,
    /// What rule ids start with: the file's name (`10-data.toml#3`), or the live id.
    pub(super) base: Arc<str>,
    /// Every distinct name, end to end; `ends[i]` is where name `i` ends.
    pub(super) text: String,
    pub(super) ends: Vec<u32>,
    pub(super) mentions: Vec<Mention>,
    pub(super) proxy_users: Span,
    pub(super) proxy_groups: Span,
    pub(super) rules: Vec<RuleEntry>,
}

impl RuleFile {
    /// Number of rule tables.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn source(&self) -> &Source {
        &self.source
    }

    /// The id of a live rule.
    pub fn live_id(&self) -> Option<&str> {
        match &self.source {
            Source::Live(id) => Some(id),
            Source::File(_) => None,
        }
    }

    pub(super) fn name(&self, index: u32) -> &str {
        let index = index as usize;
        let start = if index == 0 {
            0
        } else {
            self.ends[index - 1] as usize
        };
        &self.text[start..self.ends[index] as usize]
    }

    pub(super) fn mentions(&self, span: Span) -> &[Mention] {
        &self.mentions[span.range()]
    }

    pub(super) fn names(&self, span: Span) -> impl Iterator<Item = &str> + '_ {
        self.mentions(span).iter().map(|m| self.name(m.name))
    }

    pub(super) fn location(&self, line: u32, column: u32) -> Location {
        Location {
            file: self.shown.clone(),
            line: line as usize,
            column: column as usize,
        }
    }

    pub(super) fn at(&self, mention: &Mention) -> Location {
        self.location(mention.line, mention.column)
    }

    /// The rules of this file, in order.
    pub fn rules(&self) -> impl Iterator<Item = RuleView<'_>> {
        (0..self.rules.len()).map(|n| RuleView { file: self, n })
    }

    pub(super) fn rule_name(&self, n: usize) -> RuleName {
        RuleName {
            base: self.base.clone(),
            n: match self.source {
                Source::File(_) => n as u32 + 1,
                Source::Live(_) => 0,
            },
        }
    }
}

/// A rule's id, cheap to hand out: `<file name>#<n>` for file rules, the id for live
/// rules.
#[derive(Debug, Clone, Eq)]
pub struct RuleName {
    base: Arc<str>,
    /// 1-based table number; 0 for a live rule.
    n: u32,
}

/// Ids are equal when they read the same.
impl PartialEq for RuleName {
    fn eq(&self, other: &Self) -> bool {
        self.to_string() == other.to_string()
    }
}

impl From<&str> for RuleName {
    fn from(id: &str) -> Self {
        RuleName {
            base: Arc::from(id),
            n: 0,
        }
    }
}

impl fmt::Display for RuleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.n == 0 {
            f.write_str(&self.base)
        } else {
            write!(f, "{}#{}", self.base, self.n)
        }
    }
}

/// One rule of a file, to show it.
#[derive(Clone, Copy)]
pub struct RuleView<'a> {
    pub(super) file: &'a RuleFile,
    pub(super) n: usize,
}

impl<'a> RuleView<'a> {
    pub(super) fn entry(&self) -> &'a RuleEntry {
        &self.file.rules[self.n]
    }

    pub fn id(&self) -> String {
        self.file.rule_name(self.n).to_string()
    }

    pub fn source(&self) -> &'a Source {
        &self.file.source
    }

    pub fn effect(&self) -> Effect {
        self.entry().effect
    }

    pub fn expires(&self) -> Option<Micros> {
        self.entry().expires
    }

    pub(super) fn side(&self, side: Side) -> Option<Vec<&'a str>> {
        match side {
            Side::Any => None,
            Side::Only(span) => Some(self.file.names(span).collect()),
        }
    }

    pub(super) fn list(&self, span: Span) -> Vec<&'a str> {
        self.file.names(span).collect()
    }
}

/// Builds a [`RuleFile`]: names are interned as they come.
pub(super) struct Builder {
    file: RuleFile,
    /// Names by their hash (the arena holds the text); the rare second name of a hash
    /// goes to `collided`.
    index: FastMap<u64, u32>,
    collided: FastMap<Box<str>, u32>,
}

fn hash(name: &str) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault};
    BuildHasherDefault::<FastHasher>::default().hash_one(name)
}

impl Builder {
    pub fn new(shown: &str, source: Source, base: &str) -> Self {
        Self::with_capacity(shown, source, base, 0, 0)
    }

    /// A builder with room for `rules` rules and `mentions` mentions of names (so a big
    /// file is not copied over and over as it grows).
    pub fn with_capacity(
        shown: &str,
        source: Source,
        base: &str,
        rules: usize,
        mentions: usize,
    ) -> Self {
        Builder {
            file: RuleFile {
                shown: Arc::from(shown),
                source,
                base: Arc::from(base),
                text: String::new(),
                ends: Vec::new(),
                mentions: Vec::with_capacity(mentions),
                proxy_users: Span::default(),
                proxy_groups: Span::default(),
                rules: Vec::with_capacity(rules),
            },
            index: FastMap::with_capacity_and_hasher(mentions, Default::default()),
            collided: FastMap::default(),
        }
    }

    fn intern(&mut self, name: &str) -> u32 {
        let file = &mut self.file;
        let add = |file: &mut RuleFile| {
            let i = file.ends.len() as u32;
            file.text.push_str(name);
            file.ends.push(file.text.len() as u32);
            i
        };
        match self.index.entry(hash(name)) {
            std::collections::hash_map::Entry::Vacant(slot) => *slot.insert(add(file)),
            std::collections::hash_map::Entry::Occupied(slot) => {
                let i = *slot.get();
                if file.name(i) == name {
                    i
                } else if let Some(&i) = self.collided.get(name) {
                    i
                } else {
                    let i = add(file);
                    self.collided.insert(name.into(), i);
                    i
                }
            }
        }
    }

    /// Records a mention of `name` at `line`:`column`.
    pub fn mention(&mut self, name: &str, line: u32, column: u32) {
        let index = self.intern(name);
        self.file.mentions.push(Mention {
            name: index,
            line,
            column,
        });
    }

    /// Where the next mention will go.
    pub fn mark(&self) -> u32 {
        self.file.mentions.len() as u32
    }

    /// The mentions since `mark`.
    pub fn since(&self, mark: u32) -> Span {
        Span {
            start: mark,
            len: self.mark() - mark,
        }
    }

    pub fn proxy_users(&mut self, users: Span, groups: Span) {
        self.file.proxy_users = users;
        self.file.proxy_groups = groups;
    }

    pub fn rule(&mut self, rule: RuleEntry) {
        self.file.rules.push(rule);
    }

    pub fn finish(mut self) -> RuleFile {
        self.file.text.shrink_to_fit();
        self.file.ends.shrink_to_fit();
        self.file.mentions.shrink_to_fit();
        self.file.rules.shrink_to_fit();
        self.file
    }
}
