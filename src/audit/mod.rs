//! Audit records: what happened, for whom, by whom. Sequence-numbered and hash-chained
//! in the store (the system of record, written before the action takes effect) and
//! copied to journald under `SYSLOG_IDENTIFIER=proxyuserd-audit`.

pub mod journal;

use std::collections::BTreeMap;
use std::fmt;

use sha2::{Digest, Sha256};

use crate::identity::Caller;
use crate::policy::Micros;
use crate::store::{Store, StoreError, Tree, Write};

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
    /// The PAM module let a requester switch to a proxy user without its password.
    PamAuth,
    PamSessionOpen,
    PamSessionClose,
}

impl Event {
    pub const ALL: [Event; 16] = [
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
            Event::PamAuth => "c2fdc484bf6e4d4ca43f5e3818618e5c",
            Event::PamSessionOpen => "2c7d88b799414900b62ffffa204bca9d",
            Event::PamSessionClose => "7ced1adb2ace4c73bbfb523d6c4f9b8c",
        }
    }

    /// syslog priority: denials are warnings, the rest notices.
    fn priority(self) -> &'static str {
        match self {
            Event::Denied => "4",
            _ => "5",
        }
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

fn seal(draft: Draft, seq: u64, time: Micros, prev: &str) -> Record {
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
    let mut expected_seq = 1u64;
    let mut prev = GENESIS.to_string();
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
    Ok(expected_seq - 1)
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

#[derive(Debug)]
pub struct AuditUnavailable(pub StoreError);

impl fmt::Display for AuditUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the audit log cannot be written, so nothing was done ({})",
            self.0
        )
    }
}

impl std::error::Error for AuditUnavailable {}

/// The head of the chain and where records go. Appends must be serialized by the owner
/// (one `&mut` at a time), which also orders them with the state changes they describe.
pub struct Ledger {
    next_seq: u64,
    last_hash: String,
    journal: Option<journal::Journal>,
}

impl Ledger {
    /// Continues the chain stored in `store`.
    pub fn open(store: &Store, journal: Option<journal::Journal>) -> Result<Self, StoreError> {
        let (next_seq, last_hash) = match store.last::<Record>(Tree::Audit)? {
            Some((key, record)) => {
                let seq = u64::from_be_bytes(key.as_slice().try_into().map_err(|_| {
                    StoreError::Corrupt {
                        tree: "audit",
                        key: format!("{key:?}"),
                        why: "key is not a sequence number".into(),
                    }
                })?);
                (seq + 1, record.get(HASH).cloned().unwrap_or_default())
            }
            None => (1, GENESIS.to_string()),
        };
        Ok(Ledger {
            next_seq,
            last_hash,
            journal,
        })
    }

    /// Seals `draft`, commits it together with `writes` (atomically, flushed), then
    /// copies it to the journal. Nothing is changed if the commit fails.
    pub fn append(
        &mut self,
        store: &Store,
        draft: Draft,
        mut writes: Vec<Write>,
        now: Micros,
    ) -> Result<Record, AuditUnavailable> {
        let record = seal(draft, self.next_seq, now, &self.last_hash);
        writes.push(Write::audit(self.next_seq, &record));
        store.commit(&writes).map_err(AuditUnavailable)?;
        self.next_seq += 1;
        self.last_hash = record[HASH].clone();
        if let Some(journal) = &self.journal {
            journal.send_record(&record);
        }
        Ok(record)
    }

    /// Records from `since` (inclusive), at most `max`.
    pub fn read(store: &Store, since: u64, max: usize) -> Result<Vec<Record>, StoreError> {
        store
            .scan::<Record>(Tree::Audit, &since.to_be_bytes())?
            .take(max)
            .map(|r| r.map(|(_, record)| record))
            .collect()
    }
}

/// The fields journald gets for a record.
pub fn journal_fields(record: &Record) -> Vec<(String, String)> {
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
        let fields = journal_fields(record);
        let get = |k: &str| fields.iter().find(|(f, _)| f == k).map(|(_, v)| v.as_str());
        assert_eq!(get("SYSLOG_IDENTIFIER"), Some("proxyuserd-audit"));
        assert_eq!(get("MESSAGE_ID"), Some(Event::ProxySet.message_id()));
        assert_eq!(get("PROXYUSERD_LOGIN"), Some("alice"));
        assert_eq!(get("PROXYUSERD_PROXY"), Some("etl"));
        assert_eq!(get("PROXYUSERD_SEQ"), Some("1"));
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
