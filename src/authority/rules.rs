//! `org.proxyuserd1.Admin`: the rule set (files and live rules) and the audit log.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::access::Caller;
use crate::audit::{Draft, Event, Ledger, Record};
use crate::policy::{CompiledRules, Rule, RuleError, RuleFile, parse_live_rule, parse_rule_file};
use crate::store::{RuleSnapshot, Store, Tree, Write};

use super::{Authority, Error, Notice};

/// Most records one `AuditLog` call returns.
pub const AUDIT_PAGE_MAX: u32 = 10_000;

/// Reads `dir/*.toml` in lexical order (hidden files skipped). A missing directory is
/// an empty rule set.
fn read_rule_dir(dir: &Path) -> Result<Vec<(String, String)>, String> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(format!("{}: {err}", dir.display())),
    };
    let mut paths = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
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
            let text =
                std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            Ok((path.display().to_string(), text))
        })
        .collect()
}

fn parse_files(sources: &[(String, String)]) -> Result<Vec<RuleFile>, RuleError> {
    sources
        .iter()
        .map(|(path, text)| parse_rule_file(path, text))
        .collect()
}

fn live_rules(store: &Store) -> Result<Vec<Rule>, Error> {
    let mut rules = Vec::new();
    for (id, text) in store.live_rules()? {
        match parse_live_rule(&id, &text) {
            Ok(rule) => rules.push(rule),
            // Only reachable if the store was edited by hand: keep serving the rest.
            Err(err) => {
                tracing::error!("stored live rule {id} no longer parses, ignoring it: {err}")
            }
        }
    }
    Ok(rules)
}

impl Authority {
    /// At start: the files if they validate, else the last good files, else none.
    pub(super) fn load_rules_at_start(&self) -> Result<(), String> {
        let snapshot = self
            .store
            .rule_snapshot()
            .map_err(|e| e.to_string())?
            .unwrap_or_default();
        let live = live_rules(&self.store).map_err(|e| e.to_string())?;
        let from_disk = read_rule_dir(&self.config.rules_dir).and_then(|sources| {
            let files = parse_files(&sources).map_err(|e| e.to_string())?;
            let compiled =
                CompiledRules::compile(files, live.clone()).map_err(|e| e.to_string())?;
            Ok((sources, compiled))
        });
        let mut ledger = self.lock();
        match from_disk {
            Ok((sources, compiled)) if sources == snapshot.files && snapshot.generation > 0 => {
                self.install(compiled, snapshot.generation);
            }
            Ok((sources, compiled)) => {
                self.commit_rules(
                    &mut ledger,
                    compiled,
                    sources,
                    Draft::new(Event::RulesReload).with("trigger", "start"),
                    Vec::new(),
                )
                .map_err(|e| e.to_string())?;
            }
            Err(err) => {
                tracing::error!(
                    "rules in {} are not valid, serving the last good rules: {err}",
                    self.config.rules_dir.display()
                );
                let compiled = parse_files(&snapshot.files)
                    .map_err(|e| e.to_string())
                    .and_then(|files| CompiledRules::compile(files, live.clone()).map_err(|e| e.to_string()))
                    .unwrap_or_else(|err| {
                        tracing::error!("the last good rules do not compile with the live rules either ({err}); serving live rules only");
                        CompiledRules::compile(Vec::new(), live.clone()).unwrap_or_default()
                    });
                self.install(compiled, snapshot.generation.max(1));
            }
        }
        self.sweep_locked(&mut ledger);
        Ok(())
    }

    /// Makes `compiled` the active rule set.
    fn install(&self, compiled: CompiledRules, generation: u64) {
        self.rules.store(Arc::new(compiled));
        self.generation.store(generation, Ordering::Release);
        self.directory.forget();
        self.rules_changed.notify_waiters();
    }

    /// Records a rule change durably (audit record, snapshot, generation, `extra`), then
    /// installs the new set, revokes what it no longer allows and announces it.
    fn commit_rules(
        &self,
        ledger: &mut Ledger,
        compiled: CompiledRules,
        sources: Vec<(String, String)>,
        draft: Draft,
        mut extra: Vec<Write>,
    ) -> Result<u64, Error> {
        let generation = self.generation() + 1;
        let draft = draft
            .with("generation", generation.to_string())
            .with("rules", compiled.len().to_string());
        extra.push(Store::put_rule_snapshot(&RuleSnapshot {
            generation,
            files: sources,
        }));
        self.record(ledger, draft, extra)?;
        self.install(compiled, generation);
        let revoked = self.sweep_locked(ledger);
        tracing::info!("rules generation {generation} active ({revoked} associations revoked)");
        self.notify(Notice::RulesChanged(generation));
        Ok(generation)
    }

    /// Re-reads the rule files. `caller` is `None` for SIGHUP.
    pub fn reload(&self, caller: Option<&Caller>) -> Result<u64, Error> {
        if let Some(caller) = caller {
            self.require_admin(caller, "Reload")?;
        }
        let sources = read_rule_dir(&self.config.rules_dir).map_err(Error::InvalidRules)?;
        let files = parse_files(&sources).map_err(|e| Error::InvalidRules(e.to_string()))?;
        let mut ledger = self.lock();
        let current = self.rules.load();
        let compiled = CompiledRules::compile(files, current.live().to_vec())
            .map_err(|e| Error::InvalidRules(e.to_string()))?;
        let mut draft = Draft::new(Event::RulesReload)
            .with(
                "trigger",
                if caller.is_some() { "Reload" } else { "SIGHUP" },
            )
            .with("files", sources.len().to_string());
        if let Some(caller) = caller {
            draft = draft.caller(caller);
        }
        self.commit_rules(&mut ledger, compiled, sources, draft, Vec::new())
    }

    /// (id, source, rule as TOML) of every rule, file rules first.
    pub fn list_rules(&self, caller: &Caller) -> Result<Vec<(String, String, String)>, Error> {
        self.require_admin(caller, "ListRules")?;
        Ok(self
            .rules
            .load()
            .rules()
            .map(|r| (r.id.clone(), r.source.to_string(), r.to_toml()))
            .collect())
    }

    pub fn add_rule(&self, caller: &Caller, text: &str) -> Result<String, Error> {
        self.require_admin(caller, "AddRule")?;
        let mut ledger = self.lock();
        let counter = self.store.live_counter()? + 1;
        let id = format!("live-{counter}");
        let rule = parse_live_rule(&id, text).map_err(|e| Error::InvalidRules(e.to_string()))?;
        let current = self.rules.load();
        let mut live = current.live().to_vec();
        live.push(rule.clone());
        let compiled = CompiledRules::compile(current.files().to_vec(), live)
            .map_err(|e| Error::InvalidRules(e.to_string()))?;
        let sources = self.store.rule_snapshot()?.unwrap_or_default().files;
        let draft = Draft::new(Event::RuleAdded)
            .with("rule", id.as_str())
            .with("text", rule.to_toml())
            .caller(caller);
        let writes = vec![
            Write::put(Tree::Rules, id.as_str(), &rule.to_toml()),
            Store::put_live_counter(counter),
        ];
        self.commit_rules(&mut ledger, compiled, sources, draft, writes)?;
        Ok(id)
    }

    pub fn remove_rule(&self, caller: &Caller, id: &str) -> Result<(), Error> {
        self.require_admin(caller, "RemoveRule")?;
        let mut ledger = self.lock();
        let current = self.rules.load();
        if !current.live().iter().any(|r| r.id == id) {
            return Err(match current.rules().find(|r| r.id == id) {
                Some(rule) => Error::InvalidArgs(format!(
                    "rule {id} comes from {}; edit that file and reload",
                    rule.source
                )),
                None => Error::InvalidArgs(format!("no rule {id:?}")),
            });
        }
        let live = current
            .live()
            .iter()
            .filter(|r| r.id != id)
            .cloned()
            .collect();
        let compiled = CompiledRules::compile(current.files().to_vec(), live)
            .map_err(|e| Error::InvalidRules(e.to_string()))?;
        let sources = self.store.rule_snapshot()?.unwrap_or_default().files;
        let draft = Draft::new(Event::RuleRemoved)
            .with("rule", id)
            .caller(caller);
        self.commit_rules(
            &mut ledger,
            compiled,
            sources,
            draft,
            vec![Write::delete(Tree::Rules, id)],
        )?;
        Ok(())
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
        Ok(Ledger::read(&self.store, since, max as usize)?)
    }
}
