//! Audit records: what happened, for whom, by whom. Sequence-numbered and hash-chained
//! in the store (the system of record, durable before the action takes effect or anyone
//! is told) and copied to journald under `SYSLOG_IDENTIFIER=proxyuserd-audit`.
//!
//! This file is the pure part: events, records, the hash chain and its verification.
//! [`ledger`] writes the chain; [`journal`] speaks journald's protocol; [`anchor`]
//! keeps the head outside the store so that a lost tail is noticed.

pub mod anchor;
pub mod journal;
pub mod ledger;

pub use ledger::{AuditUnavailable, Ledger, Txn};

use std::collections::BTreeMap;
use std::fmt;

use sha2::{Digest, Sha256};

use crate::access::Caller;
use crate::time::Micros;

/// The kinds of audit events. Names and MESSAGE_IDs are stable: tools filter on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    ProxySet,
    ProxyCleared,
    ProxyRevoked,
    SessionOpen,
    SessionClose,
    SessionExpired,
    ExecStart,
    ExecEnd,
    Download,
    RulesReload,
    RuleAdded,
    RuleRemoved,
    Denied,
    /// Records the chain should have are missing (found at start).
    AuditGap,
    /// Old records were deleted (retention); names the checkpoint.
    AuditPruned,
    /// The PAM module let a requester switch to a proxy user without its password.
    PamAuth,
    PamSessionOpen,
    PamSessionClose,
}

impl Event {
    pub const ALL: [Event; 18] = [
        Event::ProxySet,
        Event::ProxyCleared,
        Event::ProxyRevoked,
        Event::SessionOpen,
        Event::SessionClose,
        Event::SessionExpired,
        Event::ExecStart,
        Event::ExecEnd,
        Event::Download,
        Event::RulesReload,
        Event::RuleAdded,
        Event::RuleRemoved,
        Event::Denied,
        Event::AuditGap,
        Event::AuditPruned,
        Event::PamAuth,
        Event::PamSessionOpen,
        Event::PamSessionClose,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Event::ProxySet => "proxy-set",
            Event::ProxyCleared => "proxy-cleared",
            Event::ProxyRevoked => "proxy-revoked",
            Event::SessionOpen => "session-open",
            Event::SessionClose => "session-close",
            Event::SessionExpired => "session-expired",
            Event::ExecStart => "exec-start",
            Event::ExecEnd => "exec-end",
            Event::Download => "download",
            Event::RulesReload => "rules-reload",
            Event::RuleAdded => "rule-added",
            Event::RuleRemoved => "rule-removed",
            Event::Denied => "denied",
            Event::AuditGap => "audit-gap",
            Event::AuditPruned => "audit-pruned",
            Event::PamAuth => "pam-auth",
            Event::PamSessionOpen => "pam-session-open",
            Event::PamSessionClose => "pam-session-close",
        }
    }

    /// The journald MESSAGE_ID; `systemd/catalog/proxyuserd.catalog` explains each.
    pub fn message_id(self) -> &'static str {
        match self {
            Event::ProxySet => "a902d1b020af09fff81ab88254794ca6",
            Event::ProxyCleared => "aba0e2375f140447f1ceea6240886d55",
            Event::ProxyRevoked => "0ba25fe4e9ab97b713874d4250c75a13",
            Event::SessionOpen => "d2a6395599271822803e5a50d487175d",
            Event::SessionClose => "597e46f9c1757b9a7dc5297f221bd604",
            Event::SessionExpired => "563730a5038837d35243b7611a1143d7",
            Event::ExecStart => "c88b482242e629db4e93d460a50f8ad8",
            Event::ExecEnd => "a087138989e0f67f5d314eccc55fee6a",
            Event::Download => "848396845c996827e68dd40c88b162dd",
            Event::RulesReload => "0bf29c05b417df3d9ca820b4acf586f7",
            Event::RuleAdded => "e0b9ad14babaca497b03c52339af3de3",
            Event::RuleRemoved => "6fc38a13a0338607ae34a3c9bb7d7da1",
            Event::Denied => "f02ba6b68cdac726bfaa059505dec338",
            Event::AuditGap => "5a004bb644a8402c964951c0b4dc77fe",
            Event::AuditPruned => "342b129625624a539d7bb3717eeaf972",
            Event::PamAuth => "c2fdc484bf6e4d4ca43f5e3818618e5c",
            Event::PamSessionOpen => "2c7d88b799414900b62ffffa204bca9d",
            Event::PamSessionClose => "7ced1adb2ace4c73bbfb523d6c4f9b8c",
        }
    }

    /// syslog priority: a lost record is an error, denials are warnings, the rest
    /// notices.
    fn priority(self) -> &'static str {
        match self {
            Event::AuditGap => "3",
            Event::Denied => "4",
            _ => "5",
        }
    }

    pub fn from_name(name: &str) -> Option<Event> {
        Event::ALL.into_iter().find(|e| e.name() == name)
    }
}

/// An audit record before it has a place in the chain.
#[derive(Debug, Clone)]
pub struct Draft {
    event: Event,
    fields: BTreeMap<String, String>,
}

impl Draft {
    pub fn new(event: Event) -> Self {
        Draft {
            event,
            fields: BTreeMap::new(),
        }
    }

    /// Sets a field; empty values are left out.
    pub fn with(mut self, key: &str, value: impl Into<String>) -> Self {
        let value = value.into();
        if !value.is_empty() {
            self.fields.insert(key.to_string(), value);
        }
        self
    }

    pub fn caller(self, caller: &Caller) -> Self {
        self.with("caller_uid", caller.uid.to_string())
            .with("caller_pid", caller.pid.to_string())
            .with("caller", caller.name.clone().unwrap_or_default())
    }
}

/// The fields every sealed record has; the rest depend on the event.
pub const SEQ: &str = "seq";
pub const TIME: &str = "time";
pub const EVENT: &str = "event";
pub const PREV: &str = "prev";
pub const HASH: &str = "hash";

/// The `prev` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// A sealed record: the draft's fields plus seq, time, event, prev and hash.
pub type Record = BTreeMap<String, String>;

/// The hash of a record: SHA-256 over every field but `hash`, in key order, each key and
/// value length-prefixed (so no choice of values can make two records hash alike).
pub fn record_hash(record: &Record) -> String {
    let mut hasher = Sha256::new();
    for (key, value) in record.iter().filter(|(k, _)| k.as_str() != HASH) {
        hasher.update((key.len() as u64).to_be_bytes());
        hasher.update(key.as_bytes());
        hasher.update((value.len() as u64).to_be_bytes());
        hasher.update(value.as_bytes());
    }
    crate::sys::hex(&hasher.finalize())
}

/// Gives `draft` its place in the chain: seq, time, event, prev and its hash.
pub fn seal(draft: Draft, seq: u64, time: Micros, prev: &str) -> Record {
    let mut record = draft.fields;
    record.insert(SEQ.into(), seq.to_string());
    record.insert(TIME.into(), time.to_string());
    record.insert(EVENT.into(), draft.event.name().into());
    record.insert(PREV.into(), prev.into());
    let hash = record_hash(&record);
    record.insert(HASH.into(), hash);
    record
}

/// Where a chain stops verifying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    pub seq: u64,
    pub why: String,
}

impl fmt::Display for Broken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "audit chain broken at record {}: {}", self.seq, self.why)
    }
}

/// Checks that `records` form an unbroken chain from the first record (seq 1, prev
/// GENESIS). Returns the number of records checked.
pub fn verify<'a>(records: impl IntoIterator<Item = &'a Record>) -> Result<u64, Broken> {
    verify_from(0, GENESIS, records)
}

/// Checks that `records` form an unbroken chain that continues the record `after_seq`
/// whose hash is `after_hash` (0 and GENESIS for the start of the log; the checkpoint
/// left by pruning otherwise). Returns the number of records checked.
pub fn verify_from<'a>(
    after_seq: u64,
    after_hash: &str,
    records: impl IntoIterator<Item = &'a Record>,
) -> Result<u64, Broken> {
    let mut expected_seq = after_seq + 1;
    let mut prev = after_hash.to_string();
    for record in records {
        let seq_text = record.get(SEQ).map(String::as_str).unwrap_or("");
        let broken = |why: String| Broken {
            seq: seq_text.parse().unwrap_or(expected_seq),
            why,
        };
        if seq_text != expected_seq.to_string() {
            return Err(broken(format!(
                "expected record {expected_seq}, found seq {seq_text:?}"
            )));
        }
        if record.get(PREV) != Some(&prev) {
            return Err(broken(
                "its prev does not match the hash of the record before".into(),
            ));
        }
        let hash = record_hash(record);
        if record.get(HASH) != Some(&hash) {
            return Err(broken("its content does not match its hash".into()));
        }
        prev = hash;
        expected_seq += 1;
    }
    Ok(expected_seq - 1 - after_seq)
}

/// A record as one line for people (journald MESSAGE, `proxyuserctl audit`).
pub fn describe(record: &Record) -> String {
    let get = |k: &str| record.get(k).map(String::as_str).unwrap_or("");
    let by = match (get("caller"), get("caller_uid")) {
        ("", "") => String::new(),
        ("", uid) => format!(" by uid {uid}"),
        (name, _) => format!(" by {name}"),
    };
    let (login, proxy) = (get("login"), get("proxy"));
    let what = match get(EVENT) {
        "proxy-set" => format!("{login} now proxies to {proxy}"),
        "proxy-cleared" => format!("{login} no longer proxies to {proxy}"),
        "proxy-revoked" => format!("{login} lost proxy {proxy}: {}", get("reason")),
        "session-open" => format!("session {} opened for {login}", get("session")),
        "session-close" => format!("session {} of {login} closed", get("session")),
        "session-expired" => format!("session {} of {login} expired", get("session")),
        "exec-start" => format!(
            "job {} started for {login} as {}: {}",
            get("job"),
            get("effective"),
            get("argv")
        ),
        "exec-end" => format!(
            "job {} of {login} as {} ended: {}",
            get("job"),
            get("effective"),
            get("status")
        ),
        "download" => format!(
            "{login} downloaded {} of job {} ({} bytes)",
            get("stream"),
            get("job"),
            get("bytes")
        ),
        "rules-reload" => format!("rules reloaded, generation {}", get("generation")),
        "rule-added" => format!(
            "rule {} added, generation {}",
            get("rule"),
            get("generation")
        ),
        "rule-removed" => format!(
            "rule {} removed, generation {}",
            get("rule"),
            get("generation")
        ),
        "denied" => format!("denied {}: {}", get("operation"), get("reason")),
        "audit-gap" => format!("audit records missing: {}", get("missing")),
        "audit-pruned" => format!(
            "audit records {} to {} deleted ({}); the chain continues from record {} (hash {})",
            get("from_seq"),
            get("to_seq"),
            get("reason"),
            get("to_seq"),
            get("checkpoint_hash")
        ),
        "pam-auth" => format!("{login} may become {proxy} through {}", get("service")),
        "pam-session-open" => format!(
            "{} session {} of {login} as {proxy} opened",
            get("service"),
            get("session")
        ),
        "pam-session-close" => format!(
            "{} session {} of {login} as {proxy} closed",
            get("service"),
            get("session")
        ),
        other => other.to_string(),
    };
    format!("{what}{by}")
}

/// The fields journald gets for a record of chain `chain` (the store's chain id, so
/// that copies of several daemons or hosts in one journal stay apart).
pub fn journal_fields(record: &Record, chain: &str) -> Vec<(String, String)> {
    let event = Event::ALL
        .iter()
        .find(|e| record.get(EVENT).map(String::as_str) == Some(e.name()));
    let mut fields = vec![
        ("MESSAGE".to_string(), describe(record)),
        (
            "SYSLOG_IDENTIFIER".to_string(),
            "proxyuserd-audit".to_string(),
        ),
    ];
    if let Some(event) = event {
        fields.push(("MESSAGE_ID".into(), event.message_id().into()));
        fields.push(("PRIORITY".into(), event.priority().into()));
    }
    if !chain.is_empty() {
        fields.push(("PROXYUSERD_CHAIN".into(), chain.into()));
    }
    for (key, value) in record {
        fields.push((
            format!("PROXYUSERD_{}", key.to_ascii_uppercase()),
            value.clone(),
        ));
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: u64) -> Vec<Record> {
        let mut prev = GENESIS.to_string();
        (1..=n)
            .map(|seq| {
                let draft = Draft::new(Event::ProxySet)
                    .with("login", "alice")
                    .with("proxy", "etl");
                let record = seal(draft, seq, 1000 + seq as i64, &prev);
                prev = record[HASH].clone();
                record
            })
            .collect()
    }

    #[test]
    fn an_intact_chain_verifies() {
        assert_eq!(verify(&chain(5)), Ok(5));
        assert_eq!(verify(&Vec::new()), Ok(0));
    }

    #[test]
    fn any_change_is_detected_at_the_changed_record() {
        let mut records = chain(5);
        records[2].insert("proxy".into(), "root".into());
        let broken = verify(&records).unwrap_err();
        assert_eq!(broken.seq, 3);
        assert!(broken.why.contains("does not match its hash"));

        // Rehashing the altered record breaks the link of the next one.
        let hash = record_hash(&records[2]);
        records[2].insert(HASH.into(), hash);
        assert_eq!(verify(&records).unwrap_err().seq, 4);

        let mut records = chain(5);
        records.remove(1);
        assert_eq!(verify(&records).unwrap_err().seq, 3);
    }

    #[test]
    fn field_boundaries_matter_to_the_hash() {
        let mut a = Record::new();
        a.insert("ab".into(), "c".into());
        let mut b = Record::new();
        b.insert("a".into(), "bc".into());
        assert_ne!(record_hash(&a), record_hash(&b));
    }

    #[test]
    fn journal_fields_carry_identities_and_message_id() {
        let record = &chain(1)[0];
        let fields = journal_fields(record, "c0ffee");
        let get = |k: &str| fields.iter().find(|(f, _)| f == k).map(|(_, v)| v.as_str());
        assert_eq!(get("SYSLOG_IDENTIFIER"), Some("proxyuserd-audit"));
        assert_eq!(get("MESSAGE_ID"), Some(Event::ProxySet.message_id()));
        assert_eq!(get("PROXYUSERD_LOGIN"), Some("alice"));
        assert_eq!(get("PROXYUSERD_PROXY"), Some("etl"));
        assert_eq!(get("PROXYUSERD_SEQ"), Some("1"));
        assert_eq!(get("PROXYUSERD_CHAIN"), Some("c0ffee"));
        assert_eq!(get("MESSAGE"), Some("alice now proxies to etl"));
    }

    #[test]
    fn message_ids_are_distinct_128_bit_hex() {
        let mut ids: Vec<&str> = Event::ALL.iter().map(|e| e.message_id()).collect();
        assert!(
            ids.iter()
                .all(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        );
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), Event::ALL.len());
    }
}

#[cfg(test)]
mod catalog_tests {
    use super::Event;

    /// Every MESSAGE_ID has its catalog entry, and the catalog has no others.
    #[test]
    fn the_catalog_explains_every_event() {
        let catalog = include_str!("../../systemd/catalog/proxyuserd.catalog");
        let ids: Vec<&str> = catalog
            .lines()
            .filter_map(|l| l.strip_prefix("-- "))
            .collect();
        let mut want: Vec<&str> = Event::ALL.iter().map(|e| e.message_id()).collect();
        let mut got = ids.clone();
        want.sort();
        got.sort();
        assert_eq!(got, want);
        for id in ids {
            let entry = catalog.split(&format!("-- {id}\n")).nth(1).unwrap();
            assert!(entry.starts_with("Subject: proxyuserd: "), "{id}");
        }
    }
}
