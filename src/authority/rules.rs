//! `org.proxyuserd1.Admin`: the rule set (files and live rules) and the audit log.
//!
//! A reload reads every file, re-parses only those whose content changed (parsed files
//! are kept by content hash), compiles the whole set outside any transaction (or keeps
//! the active one when no file and no live rule changed), and then records and
//! installs it in one. The text of the files that validated is kept in a snapshot file
//! beside the store (named by its hash, written only when it changed, while the new set
//! compiles), so a daemon that starts with broken files serves the last good set.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use sha2::{Digest, Sha256};

use crate::access::Caller;
use crate::audit::{Draft, Event, Record};
use crate::config::Config;
use crate::policy::{CompiledRules, RuleError, RuleFile, parse_live_rule, parse_rule_file};
use crate::store::{RuleSnapshot, Store, Tree, Write};

use super::{Authority, Error, Notice};

/// Most records one `AuditLog` call returns.
pub const AUDIT_PAGE_MAX: u32 = 10_000;

/// A rule file by path and the SHA-256 of its text.
type FileKey = (String, [u8; 32]);

/// Parsed rule files by content: a reload re-parses only what changed.
#[derive(Default)]
pub(super) struct ParsedFiles(Mutex<Parsed>);

#[derive(Default)]
struct Parsed {
    files: HashMap<FileKey, Arc<RuleFile>>,
    /// The files (in order) whose snapshot file was last written or found, and its
    /// hash: a reload of the same files need not serialize them again to name it.
    stored: Option<(Vec<FileKey>, String)>,
}

impl ParsedFiles {
    /// Parses `sources`, reusing what was parsed before; keeps only these files. The
    /// files and their keys, in order.
    fn parse(
        &self,
        sources: &[(String, String)],
    ) -> Result<(Vec<Arc<RuleFile>>, Vec<FileKey>), RuleError> {
        let keys = file_keys(sources);
        let mut parsed = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut kept = HashMap::with_capacity(sources.len());
        let mut files = Vec::with_capacity(sources.len());
        for ((path, text), key) in sources.iter().zip(&keys) {
            let file = match parsed.files.remove(key) {
                Some(file) => file,
                None => Arc::new(parse_rule_file(path, text)?),
            };
            files.push(file.clone());
            kept.insert(key.clone(), file);
        }
        parsed.files = kept;
        Ok((files, keys))
    }

    /// The hash of the snapshot of the files of `keys`, if it is known.
    fn stored(&self, keys: &[FileKey]) -> Option<String> {
        let parsed = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match &parsed.stored {
            Some((stored, sha256)) if stored == keys => Some(sha256.clone()),
            _ => None,
        }
    }

    fn set_stored(&self, keys: &[FileKey], sha256: &str) {
        let mut parsed = self.0.lock().unwrap_or_else(|e| e.into_inner());
        parsed.stored = Some((keys.to_vec(), sha256.to_string()));
    }
}

/// The rule files of a set: (path, text) and the key of each, in order.
#[derive(Clone, Copy)]
struct Sources<'a> {
    texts: &'a [(String, String)],
    keys: &'a [FileKey],
}

/// The key of each file of `sources`.
fn file_keys(sources: &[(String, String)]) -> Vec<FileKey> {
    sources
        .iter()
        .map(|(path, text)| (path.clone(), Sha256::digest(text.as_bytes()).into()))
        .collect()
}

/// Whether `a` and `b` are the same parsed files (the same `Arc`s: a reload that
/// found every file unchanged).
fn same_files(a: &[Arc<RuleFile>], b: &[Arc<RuleFile>]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(a, b)| Arc::ptr_eq(a, b))
}

/// Why the rule files cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum RuleDirError {
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{}: owned by uid {owner}, not root: refusing rules another user can change",
        path.display()
    )]
    Foreign { path: PathBuf, owner: u32 },
    #[error(
        "{}: writable by group or others (mode {mode:o}): refusing rules another user can \
         change",
        path.display()
    )]
    Writable { path: PathBuf, mode: u32 },
}

/// Reads `dir/*.toml` in lexical order (hidden files skipped). A missing directory is
/// an empty rule set. Like sudoers, a file (or the directory) that a user other than
/// root could change is refused.
fn read_rule_dir(dir: &Path) -> Result<Vec<(String, String)>, RuleDirError> {
    let unreadable = |path: &Path| {
        let path = path.to_owned();
        move |source| RuleDirError::Read { path, source }
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(unreadable(dir)(err)),
    };
    check_owned_by_root(dir)?;
    let mut paths = Vec::new();
    for entry in entries {
        let entry = entry.map_err(unreadable(dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".toml") && !name.starts_with('.') {
            paths.push(entry.path());
        }
    }
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            check_owned_by_root(&path)?;
            let text = std::fs::read_to_string(&path).map_err(unreadable(&path))?;
            Ok((path.display().to_string(), text))
        })
        .collect()
}

/// A rule file or directory must belong to root (or the daemon's user) and not be
/// writable by group or others.
fn check_owned_by_root(path: &Path) -> Result<(), RuleDirError> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).map_err(|source| RuleDirError::Read {
        path: path.to_owned(),
        source,
    })?;
    let daemon = nix::unistd::geteuid().as_raw();
    if meta.uid() != 0 && meta.uid() != daemon {
        return Err(RuleDirError::Foreign {
            path: path.to_owned(),
            owner: meta.uid(),
        });
    }
    if meta.mode() & 0o022 != 0 {
        return Err(RuleDirError::Writable {
            path: path.to_owned(),
            mode: meta.mode() & 0o7777,
        });
    }
    Ok(())
}

/// Why the rule files would be refused.
#[derive(Debug, thiserror::Error)]
pub enum RuleCheckError {
    #[error(transparent)]
    Dir(#[from] RuleDirError),
    #[error(transparent)]
    Rules(#[from] RuleError),
}

/// The rule files of `dir` as a start or a reload would read them (without the live
/// rules, which are in the store): a summary, or the first error, located.
pub fn check_rule_dir(dir: &Path) -> Result<String, RuleCheckError> {
    let sources = read_rule_dir(dir)?;
    let files = sources
        .iter()
        .map(|(path, text)| parse_rule_file(path, text).map(Arc::new))
        .collect::<Result<Vec<_>, _>>()?;
    let compiled = CompiledRules::compile(files, Vec::new())?;
    let (n, rules) = (sources.len(), compiled.len());
    Ok(format!(
        "{n} rule {}, {rules} {}, valid",
        plural(n, "file", "files"),
        plural(rules, "rule", "rules")
    ))
}

fn live_rules(store: &Store) -> Result<Vec<Arc<RuleFile>>, Error> {
    let mut rules = Vec::new();
    for (id, text) in store.live_rules()? {
        match parse_live_rule(&id, &text) {
            Ok(rule) => rules.push(Arc::new(rule)),
            // Only reachable if the store was edited by hand: keep serving the rest.
            Err(err) => {
                tracing::error!("stored live rule {id} no longer parses, ignoring it: {err}")
            }
        }
    }
    Ok(rules)
}

/// What a rule change records and applies with the rules: more store writes (a live
/// rule), a reloaded configuration.
#[derive(Default)]
struct Alongside<'a> {
    extra: Vec<Write>,
    config: Option<&'a Config>,
}

/// The hash the snapshot file of `sources` is named by.
fn digest(sources: &[(String, String)]) -> String {
    if sources.is_empty() {
        return String::new();
    }
    let content = serde_json::to_vec(sources).expect("strings serialize");
    crate::sys::hex(&Sha256::digest(&content))
}

impl Authority {
    /// At start: the files if they validate, else the last good files, else none.
    pub(super) fn load_rules_at_start(&self) -> Result<(), Error> {
        let snapshot = self.store.rule_snapshot()?.unwrap_or_default();
        let live = live_rules(&self.store)?;
        let rules_dir = self.config().rules_dir.clone();
        let from_disk = read_rule_dir(&rules_dir)
            .map_err(|e| e.to_string())
            .and_then(|sources| {
                let (files, keys) = self.parsed.parse(&sources).map_err(|e| e.to_string())?;
                let compiled =
                    CompiledRules::compile(files, live.clone()).map_err(|e| e.to_string())?;
                Ok((sources, keys, compiled))
            });
        match from_disk {
            Ok((sources, keys, compiled))
                if digest(&sources) == snapshot.sha256 && snapshot.generation > 0 =>
            {
                self.parsed.set_stored(&keys, &snapshot.sha256);
                self.install(Arc::new(compiled), snapshot.generation);
            }
            Ok((sources, keys, compiled)) => {
                let _serial = self.rule_changes.lock().unwrap_or_else(|e| e.into_inner());
                let texts = &sources;
                self.commit_rules(
                    Arc::new(compiled),
                    Sources { texts, keys: &keys },
                    Draft::new(Event::RulesReload).with("trigger", "start"),
                    None,
                    Alongside::default(),
                )?;
            }
            Err(err) => {
                tracing::error!(
                    "rules in {} are not valid, serving the last good rules: {err}",
                    rules_dir.display()
                );
                self.set_refused(Some(err.clone()));
                let compiled = self
                    .store
                    .read_rule_files(&snapshot.sha256)
                    .map_err(|e| e.to_string())
                    .and_then(|sources| self.parsed.parse(&sources).map_err(|e| e.to_string()))
                    .and_then(|(files, _)| {
                        CompiledRules::compile(files, live.clone()).map_err(|e| e.to_string())
                    })
                    .unwrap_or_else(|err| {
                        tracing::error!(
                            "the last good rules do not compile with the live rules either \
                             ({err}); serving live rules only"
                        );
                        CompiledRules::compile(Vec::new(), live.clone()).unwrap_or_default()
                    });
                self.install(Arc::new(compiled), snapshot.generation.max(1));
            }
        }
        self.sweep();
        Ok(())
    }

    /// Makes `compiled` the active rule set. The old one is freed here unless a reader
    /// still holds it (then the reader frees it), and the memory it took is given back
    /// to the system.
    fn install(&self, compiled: Arc<CompiledRules>, generation: u64) {
        let old = self.rules.swap(compiled);
        self.generation.store(generation, Ordering::Release);
        self.directory.forget();
        self.rules_changed.notify_waiters();
        if Arc::into_inner(old).is_some() {
            crate::sys::trim_heap();
        }
    }

    /// Records a rule change durably (audit record, snapshot pointer, generation,
    /// `extra` writes), then installs the new set, revokes what it no longer allows and
    /// announces it. The snapshot file is written first (outside the transaction).
    fn commit_rules(
        &self,
        compiled: Arc<CompiledRules>,
        sources: Sources<'_>,
        draft: Draft,
        caller: Option<&Caller>,
        alongside: Alongside<'_>,
    ) -> Result<u64, Error> {
        let Alongside { extra, config } = alongside;
        let sha256 = self.write_snapshot(sources)?;
        let rules = compiled.len();
        let mut txn = self.begin()?;
        let generation = self.generation() + 1;
        let mut writes = extra;
        writes.push(Store::put_rule_snapshot(&RuleSnapshot {
            generation,
            sha256: sha256.clone(),
        }));
        let draft = draft
            .with("generation", generation.to_string())
            .with("rules", rules.to_string());
        txn.record(draft, writes, self.now())?;
        self.commit(caller, txn)?;
        // A reload's configuration takes effect with its rules: no caller is judged by
        // the new rules under the old configuration, and the sweep below sees both.
        if let Some(config) = config {
            self.apply_config(config.clone());
        }
        // Rule changes are serialized (`rule_changes`), so nothing came in between.
        self.install(compiled, generation);
        self.store.forget_rule_files(&sha256);
        let revoked = self.sweep();
        tracing::info!(
            "rules generation {generation} active: {rules} {}, {revoked} {} revoked",
            plural(rules, "rule", "rules"),
            plural(revoked, "association", "associations")
        );
        self.notify(Notice::RulesChanged(generation));
        Ok(generation)
    }

    /// Writes the snapshot file of `sources` unless it is there; its hash.
    fn write_snapshot(&self, sources: Sources<'_>) -> Result<String, Error> {
        if let Some(sha256) = self.parsed.stored(sources.keys)
            && self.store.has_rule_files(&sha256)
        {
            return Ok(sha256);
        }
        let sha256 = self.store.write_rule_files(sources.texts)?;
        self.parsed.set_stored(sources.keys, &sha256);
        Ok(sha256)
    }

    /// Re-reads the configuration file and the rule files (those of the `rules_dir` it
    /// names), and applies both or neither: a file that is not valid refuses the whole
    /// reload. The keys that need a restart keep their running values (and are named in
    /// the journal). `caller` is `None` for SIGHUP.
    pub fn reload(&self, caller: Option<&Caller>) -> Result<u64, Error> {
        if let Some(caller) = caller {
            self.require_admin(caller, "Reload")?;
        }
        // One reload at a time, so that the configuration swapped in is the one whose
        // rules were committed.
        let _reloading = self.reloading.lock().unwrap_or_else(|e| e.into_inner());
        let (read, text) = Config::load_text(&self.config_path).map_err(|e| {
            self.set_config_refused(Some(e.to_string()));
            Error::InvalidRules(format!(
                "{e}; nothing reloaded, the running configuration stays"
            ))
        })?;
        let running = self.config();
        let reloaded = crate::config::reloaded(&running, read);
        let result = self.reload_rules(caller, &reloaded);
        match &result {
            Ok(_) => self.set_refused(None),
            Err(Error::InvalidRules(why)) => self.set_refused(Some(why.clone())),
            Err(_) => {}
        }
        let generation = result?;
        self.set_config_refused(None);
        if !reloaded.need_restart.is_empty() {
            tracing::warn!(
                "{}: {} changed; needs a restart to take effect (systemctl restart proxyuserd)",
                self.config_path.display(),
                reloaded.need_restart.join(", ")
            );
        }
        if !reloaded.applied.is_empty() {
            // Applied with the rules (`commit_rules`), whose sweep checked the
            // associations against both.
            tracing::info!(
                "{}: {} applied",
                self.config_path.display(),
                reloaded.applied.join(", ")
            );
        }
        self.save_last_good(&text);
        Ok(generation)
    }

    /// Swaps in a reloaded configuration and what is built from it.
    fn apply_config(&self, config: Config) {
        self.throttle.set_rates(&config);
        self.config.store(Arc::new(config));
        // The expiry timer's period (`revalidate_secs`) may have changed.
        self.rules_changed.notify_waiters();
    }

    fn reload_rules(
        &self,
        caller: Option<&Caller>,
        reloaded: &crate::config::Reloaded,
    ) -> Result<u64, Error> {
        let rules_dir = &reloaded.config.rules_dir;
        let config_applied = &reloaded.applied;
        let config = (!config_applied.is_empty()).then_some(&reloaded.config);
        let started = Instant::now();
        let sources = read_rule_dir(rules_dir).map_err(|e| Error::InvalidRules(e.to_string()))?;
        let (files, keys) = self
            .parsed
            .parse(&sources)
            .map_err(|e| Error::InvalidRules(e.to_string()))?;
        let parsed = started.elapsed();
        let sources = Sources {
            texts: &sources,
            keys: &keys,
        };
        let trigger = if caller.is_some() { "Reload" } else { "SIGHUP" };
        let mut current = self.rules.load_full();
        let mut compiled = if self.parsed.stored(&keys).is_some() {
            self.compile_reload(&files, &current)
        } else {
            // New files: their snapshot file is written while they compile (and again,
            // under the lock, should a concurrent change have removed it meanwhile).
            std::thread::scope(|scope| {
                let writer = scope.spawn(|| self.write_snapshot(sources));
                let compiled = self.compile_reload(&files, &current);
                if let Ok(Err(err)) = writer.join() {
                    tracing::debug!("writing the rule snapshot ahead failed: {err}");
                }
                compiled
            })
        };
        loop {
            let compiled_in = started.elapsed();
            let built = match compiled {
                Ok(built) => built,
                Err(err) => {
                    self.forget_unused_snapshots();
                    return Err(err);
                }
            };
            let mut draft = Draft::new(Event::RulesReload)
                .with("trigger", trigger)
                .with("files", sources.texts.len().to_string());
            if !config_applied.is_empty() {
                draft = draft.with("config", config_applied.join(","));
            }
            if let Some(caller) = caller {
                draft = draft.caller(caller);
            }
            if let Some(generation) = self.commit_if_unchanged(
                current,
                built,
                sources,
                draft,
                caller,
                Alongside {
                    extra: Vec::new(),
                    config,
                },
            )? {
                tracing::debug!(
                    "reload: read and parsed in {parsed:?}, compiled by {compiled_in:?}, \
                     committed and swept by {:?}",
                    started.elapsed()
                );
                return Ok(generation);
            }
            // A live rule changed meanwhile: again, on top of it.
            current = self.rules.load_full();
            compiled = self.compile_reload(&files, &current);
        }
    }

    /// The set of `files` with the live rules of `current`: `current` itself if its
    /// files are these (the same files and live rules compile to the same set; the
    /// reload is recorded and swept all the same, under a new generation).
    fn compile_reload(
        &self,
        files: &[Arc<RuleFile>],
        current: &Arc<CompiledRules>,
    ) -> Result<Arc<CompiledRules>, Error> {
        if same_files(files, current.files()) {
            return Ok(current.clone());
        }
        CompiledRules::compile(files.to_vec(), current.live().to_vec())
            .map(Arc::new)
            .map_err(|e| Error::InvalidRules(e.to_string()))
    }

    /// Deletes snapshot files other than the active set's (one written ahead for files
    /// that then did not compile).
    fn forget_unused_snapshots(&self) {
        let _serial = self.rule_changes.lock().unwrap_or_else(|e| e.into_inner());
        if let Ok(snapshot) = self.store.rule_snapshot() {
            self.store
                .forget_rule_files(&snapshot.unwrap_or_default().sha256);
        }
    }

    /// [`commit_rules`](Self::commit_rules) unless the active set is no longer
    /// `based_on` (then `None`: compile again).
    fn commit_if_unchanged(
        &self,
        based_on: Arc<CompiledRules>,
        compiled: Arc<CompiledRules>,
        sources: Sources<'_>,
        draft: Draft,
        caller: Option<&Caller>,
        alongside: Alongside<'_>,
    ) -> Result<Option<u64>, Error> {
        let _serial = self.rule_changes.lock().unwrap_or_else(|e| e.into_inner());
        if !Arc::ptr_eq(&based_on, &self.rules.load_full()) {
            return Ok(None);
        }
        // The old set is freed when it is swapped out (unless a reader still holds it).
        drop(based_on);
        self.commit_rules(compiled, sources, draft, caller, alongside)
            .map(Some)
    }

    /// (id, source, rule as TOML) of every rule, file rules first.
    pub fn list_rules(&self, caller: &Caller) -> Result<Vec<(String, String, String)>, Error> {
        self.require_admin(caller, "ListRules")?;
        Ok(self
            .rules
            .load()
            .rules()
            .map(|r| (r.id(), r.source().to_string(), r.to_toml()))
            .collect())
    }

    /// The `[proxy_users]` declarations of the rule files.
    pub fn list_proxy_users(&self, caller: &Caller) -> Result<Vec<ProxyUsers>, Error> {
        self.require_admin(caller, "ListProxyUsers")?;
        let rules = self.rules.load();
        Ok(rules
            .declared_proxy_users()
            .map(|(file, users, groups)| {
                let owned = |names: Vec<&str>| names.into_iter().map(String::from).collect();
                (format!("file:{file}"), owned(users), owned(groups))
            })
            .collect())
    }

    pub fn add_rule(&self, caller: &Caller, text: &str) -> Result<String, Error> {
        self.require_admin(caller, "AddRule")?;
        loop {
            let current = self.rules.load_full();
            let counter = self.store.live_counter()? + 1;
            let id = format!("live-{counter}");
            let rule = Arc::new(
                parse_live_rule(&id, text).map_err(|e| Error::InvalidRules(e.to_string()))?,
            );
            let toml = rule.rules().map(|r| r.to_toml()).collect::<String>();
            let mut live = current.live().to_vec();
            live.push(rule);
            let draft = Draft::new(Event::RuleAdded)
                .with("rule", id.as_str())
                .with("text", toml.as_str())
                .caller(caller);
            let writes = vec![
                Write::put(Tree::Rules, id.as_str(), &toml),
                Store::put_live_counter(counter),
            ];
            if self.commit_live_change(current, live, draft, caller, writes)? {
                return Ok(id);
            }
        }
    }

    /// Compiles the active set's files with `live` as the live rules and commits that
    /// with `writes`, unless the active set is no longer `current` (then `false`: the
    /// caller starts again).
    fn commit_live_change(
        &self,
        current: Arc<CompiledRules>,
        live: Vec<Arc<RuleFile>>,
        draft: Draft,
        caller: &Caller,
        writes: Vec<Write>,
    ) -> Result<bool, Error> {
        let compiled = CompiledRules::compile(current.files().to_vec(), live)
            .map_err(|e| Error::InvalidRules(e.to_string()))?;
        let texts = self.current_sources()?;
        let keys = file_keys(&texts);
        let committed = self.commit_if_unchanged(
            current,
            Arc::new(compiled),
            Sources {
                texts: &texts,
                keys: &keys,
            },
            draft,
            Some(caller),
            Alongside {
                extra: writes,
                config: None,
            },
        )?;
        Ok(committed.is_some())
    }

    /// The text of the rule files of the active set.
    fn current_sources(&self) -> Result<Vec<(String, String)>, Error> {
        let snapshot = self.store.rule_snapshot()?.unwrap_or_default();
        Ok(self.store.read_rule_files(&snapshot.sha256)?)
    }

    pub fn remove_rule(&self, caller: &Caller, id: &str) -> Result<(), Error> {
        self.require_admin(caller, "RemoveRule")?;
        loop {
            let current = self.rules.load_full();
            if !current.live().iter().any(|r| r.live_id() == Some(id)) {
                return Err(match current.rules().find(|r| r.id() == id) {
                    Some(rule) => Error::InvalidArgs(format!(
                        "rule {id} comes from {}; edit that file and reload",
                        rule.source()
                    )),
                    None => Error::InvalidArgs(format!("no rule {id:?}")),
                });
            }
            let live = current
                .live()
                .iter()
                .filter(|r| r.live_id() != Some(id))
                .cloned()
                .collect();
            let draft = Draft::new(Event::RuleRemoved)
                .with("rule", id)
                .caller(caller);
            let writes = vec![Write::delete(Tree::Rules, id)];
            if self.commit_live_change(current, live, draft, caller, writes)? {
                return Ok(());
            }
        }
    }

    /// Audit records from `since` on, at most `max` (0 or more than the page size means
    /// a full page).
    pub fn audit_log(&self, caller: &Caller, since: u64, max: u32) -> Result<Vec<Record>, Error> {
        self.require_admin(caller, "AuditLog")?;
        let max = if max == 0 {
            AUDIT_PAGE_MAX
        } else {
            max.min(AUDIT_PAGE_MAX)
        };
        Ok(self.ledger.read(since, max as usize)?)
    }

    /// The retained audit log's extent: chain id, checkpoint and head (admins).
    pub fn audit_extent(&self, caller: &Caller) -> Result<crate::audit::ledger::Extent, Error> {
        self.require_admin(caller, "AuditHead")?;
        Ok(self.ledger.extent())
    }

    /// Deletes audit records past `audit.max_bytes` / `audit.retention_secs`.
    pub fn prune_audit(&self) -> Result<u64, Error> {
        let config = self.config();
        let audit = &config.audit;
        Ok(self.ledger.prune(
            audit.max_bytes,
            crate::time::secs(audit.retention_secs),
            self.now(),
        )?)
    }
}

/// A file's `[proxy_users]`: its source (`file:PATH`), the users and the groups it
/// declares proxy-type.
pub type ProxyUsers = (String, Vec<String>, Vec<String>);

/// `one` or `many` by `n` ("1 association", "2 associations").
pub fn plural<'a>(n: usize, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 { one } else { many }
}
