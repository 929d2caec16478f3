//! `org.proxyuserd1.Admin` (contract: README, "D-Bus API"): for root and the admin group.

use std::collections::HashMap;

use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::{Connection, interface};

use super::{BusError, Shared};

pub struct AdminInterface(pub Shared);

/// Rules and audit log administration. Methods are for admins only.
#[interface(name = "org.proxyuserd1.Admin")]
impl AdminInterface {
    /// Re-reads the rule files; fails with InvalidRules (file:line:column) and keeps the
    /// old rules if one does not validate.
    #[zbus(out_args("generation"))]
    async fn reload(
        &self,
        #[zbus(connection)] connection: &Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<u64, BusError> {
        let generation = self
            .0
            .call(connection, &header, |a, c| a.reload(Some(c)))
            .await?;
        self.0.callers.forget_all();
        Ok(generation)
    }

    /// Every rule: id, source (file:PATH or live) and the rule as TOML.
    #[zbus(out_args("rules"))]
    async fn list_rules(
        &self,
        #[zbus(connection)] connection: &Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<Vec<(String, String, String)>, BusError> {
        self.0
            .call(connection, &header, |a, c| a.list_rules(c))
            .await
    }

    /// The [proxy_users] tables of the rule files: source (file:PATH), the users and
    /// the groups they declare proxy-type.
    #[zbus(out_args("declarations"))]
    async fn list_proxy_users(
        &self,
        #[zbus(connection)] connection: &Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<Vec<(String, Vec<String>, Vec<String>)>, BusError> {
        self.0
            .call(connection, &header, |a, c| a.list_proxy_users(c))
            .await
    }

    /// Adds a live rule: one [[allow]] or [[deny]] table in the rule file format.
    #[zbus(out_args("id"))]
    async fn add_rule(
        &self,
        #[zbus(connection)] connection: &Connection,
        #[zbus(header)] header: Header<'_>,
        rule_toml: String,
    ) -> Result<String, BusError> {
        self.0
            .call(connection, &header, move |a, c| a.add_rule(c, &rule_toml))
            .await
    }

    /// Removes a live rule by id.
    async fn remove_rule(
        &self,
        #[zbus(connection)] connection: &Connection,
        #[zbus(header)] header: Header<'_>,
        id: String,
    ) -> Result<(), BusError> {
        self.0
            .call(connection, &header, move |a, c| a.remove_rule(c, &id))
            .await
    }

    /// Audit records with seq at least since_seq, at most max (0: a full page).
    #[zbus(out_args("records"))]
    async fn audit_log(
        &self,
        #[zbus(connection)] connection: &Connection,
        #[zbus(header)] header: Header<'_>,
        since_seq: u64,
        max: u32,
    ) -> Result<Vec<(u64, HashMap<String, String>)>, BusError> {
        let records = self
            .0
            .call(connection, &header, move |a, c| {
                a.audit_log(c, since_seq, max)
            })
            .await?;
        Ok(records
            .into_iter()
            .map(|r| {
                let seq = r
                    .get(crate::audit::SEQ)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                (seq, r.into_iter().collect())
            })
            .collect())
    }

    /// Where the retained audit log starts and ends: the chain's id (journald copies
    /// carry it as PROXYUSERD_CHAIN), the checkpoint pruning left (seq and hash of the
    /// last deleted record; 0 and the all-zero hash if none) and the head (seq, hash).
    #[zbus(out_args("chain", "checkpoint_seq", "checkpoint_hash", "head_seq", "head_hash"))]
    async fn audit_head(
        &self,
        #[zbus(connection)] connection: &Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<(String, u64, String, u64, String), BusError> {
        let extent = self
            .0
            .call(connection, &header, |a, c| a.audit_extent(c))
            .await?;
        Ok((
            extent.chain,
            extent.checkpoint.seq,
            extent.checkpoint.hash,
            extent.head_seq,
            extent.head_hash,
        ))
    }

    /// Open sessions: short id, kind (login or proxy), login, proxy, created, last
    /// used and end (µs since the epoch). Never the tickets.
    #[zbus(out_args("sessions"))]
    async fn list_sessions(
        &self,
        #[zbus(connection)] connection: &Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<Vec<(String, String, String, String, u64, u64, u64)>, BusError> {
        let sessions = self
            .0
            .call(connection, &header, |a, c| a.list_sessions(c))
            .await?;
        let micros = |t: i64| u64::try_from(t).unwrap_or(0);
        Ok(sessions
            .into_iter()
            .map(|(s, end)| {
                (
                    s.id,
                    s.kind.as_str().to_string(),
                    s.login,
                    s.proxy,
                    micros(s.created),
                    micros(s.last_used),
                    micros(end),
                )
            })
            .collect())
    }

    /// Closes a session by its short id (and the proxy sessions of a login session).
    async fn close_session_by_id(
        &self,
        #[zbus(connection)] connection: &Connection,
        #[zbus(header)] header: Header<'_>,
        id: String,
    ) -> Result<(), BusError> {
        self.0
            .call(connection, &header, move |a, c| {
                a.close_session_by_id(c, &id)
            })
            .await
    }

    /// The daemon's version.
    #[zbus(property(emits_changed_signal = "const"))]
    async fn version(&self) -> String {
        env!("CARGO_PKG_VERSION").to_string()
    }

    /// Grows with every change of the rule set.
    #[zbus(property)]
    async fn rules_generation(&self) -> u64 {
        self.0.authority.generation()
    }

    /// The rule set changed; generation is the new RulesGeneration.
    #[zbus(signal)]
    pub async fn rules_changed(emitter: &SignalEmitter<'_>, generation: u64) -> zbus::Result<()>;
}
