//! `org.proxyuserd1.Sessions`: server-side login and proxy tickets for web gateways (the
//! seed's two cookies). A ticket is 256 random bits from the kernel CSPRNG as URL-safe
//! text; the store keeps only its SHA-256, audit records a short prefix of that hash.
//! A proxy ticket is bound to its login ticket and is valid only while that is open,
//! the login's association still names the proxy, and the rules still allow it.

use sha2::{Digest, Sha256};

use super::{Authority, Error};
use crate::access::{self, Caller};
use crate::audit::{Draft, Event};
use crate::cookies;
use crate::store::SessionKind::{Login as LOGIN, Proxy as PROXY};
use crate::store::{SessionRecord, Store, Write};
use crate::sys::{hex, random_bytes};
use crate::wire::{NO_ID, SessionIdentity};

/// The store key of a ticket: the hex SHA-256 of its text.
fn ticket_key(ticket: &str) -> String {
    hex(&Sha256::digest(ticket.as_bytes()))
}

/// What audit and admins see of a ticket: 64 bits of its hash.
fn short_id(key: &str) -> String {
    key[..16].to_string()
}

/// 32 bytes as unpadded base64url (RFC 4648 §5): cookie- and URL-safe, 43 characters.
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// The values of every cookie named `name`, in header order.
fn cookie_values<'a>(
    pairs: &'a [(&'a str, &'a str)],
    name: &'a str,
) -> impl Iterator<Item = &'a str> + 'a {
    pairs
        .iter()
        .filter(move |(n, _)| *n == name)
        .map(|(_, v)| *v)
}

fn no_session() -> Error {
    Error::NoSuchSession("no such session (unknown, expired or closed)".into())
}

impl Authority {
    fn new_ticket(&self) -> Result<String, Error> {
        let bytes = random_bytes(32).map_err(|e| Error::Failed(format!("no random bytes: {e}")))?;
        Ok(base64url(&bytes))
    }

    /// Tickets are for gateways: trusted callers (and root).
    fn require_gateway(&self, caller: &Caller, operation: &str) -> Result<(), Error> {
        access::gateway(caller, operation).map_err(|refusal| {
            self.deny(
                caller,
                operation,
                Draft::new(Event::Denied),
                Error::AccessDenied(refusal.to_string()),
            )
        })
    }

    /// Whether a session is within its lifetime and idle timeout at `now`.
    fn session_alive(&self, session: &SessionRecord, now: i64) -> bool {
        now < self.session_end(session)
    }

    /// When a session ends if it is not used again.
    fn session_end(&self, session: &SessionRecord) -> i64 {
        let idle = crate::time::secs(self.config().sessions.idle_secs);
        session.expires.min(session.last_used.saturating_add(idle))
    }

    /// How stale a stored `last_used` may get before a use writes it again: a sixteenth
    /// of the idle timeout (a session may end that much early), at most a minute.
    fn renewal_interval(&self) -> i64 {
        (crate::time::secs(self.config().sessions.idle_secs) / 16).min(60_000_000)
    }

    /// Deletions of `login`'s proxy sessions that are not for `keep` (a bounded read
    /// of the login's own sessions).
    pub(super) fn stale_proxy_sessions(
        &self,
        store: &Store,
        login: &str,
        keep: Option<&str>,
    ) -> Result<(Vec<Write>, Vec<String>), Error> {
        let mut writes = Vec::new();
        let mut ids = Vec::new();
        for (key, session) in store.sessions_of(login, self.session_cap())? {
            if session.kind == PROXY && Some(session.proxy.as_str()) != keep {
                ids.push(session.id.clone());
                writes.extend(Store::delete_session(&key, &session));
            }
        }
        Ok((writes, ids))
    }

    /// Most sessions one login can have (login and proxy tickets together).
    fn session_cap(&self) -> usize {
        2 * self.config().sessions.max_per_login as usize + 2
    }

    pub fn open_session(&self, caller: &Caller, login: &str) -> Result<String, Error> {
        self.require_gateway(caller, "OpenSession")?;
        crate::names::check_user_name(login)
            .map_err(|e| self.refuse(caller, Error::InvalidArgs(format!("login: {e}"))))?;
        let account = self.login_account(login)?;
        let facts = account.as_deref().map(|a| self.facts(a));
        if let Err(refusal) = access::session_login(facts.as_ref(), &self.policy(&self.config())) {
            let draft = Draft::new(Event::Denied).with("login", login);
            return Err(self.deny(
                caller,
                "OpenSession",
                draft,
                Error::NotAllowed(refusal.to_string()),
            ));
        }
        let ticket = self.new_ticket()?;
        let key = ticket_key(&ticket);
        let now = self.now();
        let ttl = crate::time::secs(self.config().sessions.ttl_secs);
        let session = SessionRecord {
            id: short_id(&key),
            kind: LOGIN,
            login: login.into(),
            proxy: String::new(),
            parent: String::new(),
            created: now,
            last_used: now,
            expires: now.saturating_add(ttl),
            by_uid: caller.uid,
        };
        let mut txn = self.begin()?;
        let store = txn.store();
        // One login's sessions are bounded: the oldest login session (and its proxy
        // sessions) makes room.
        let mut writes = Store::put_session(&key, &session);
        let mut evicted = Vec::new();
        let own = store.sessions_of(login, self.session_cap())?;
        let logins: Vec<_> = own.iter().filter(|(_, s)| s.kind == LOGIN).collect();
        if logins.len() >= self.config().sessions.max_per_login as usize
            && let Some((oldest_key, oldest)) = logins.iter().min_by_key(|(_, s)| s.created)
        {
            evicted.push(oldest.id.clone());
            writes.extend(Store::delete_session(oldest_key, oldest));
            for (child_key, child) in own.iter().filter(|(_, s)| &s.parent == oldest_key) {
                evicted.push(child.id.clone());
                writes.extend(Store::delete_session(child_key, child));
            }
        }
        let draft = Draft::new(Event::SessionOpen)
            .with("login", login)
            .with("session", session.id.as_str())
            .with("kind", LOGIN.as_str())
            .with("ended_sessions", evicted.join(","))
            .caller(caller);
        txn.record(draft, writes, now)?;
        self.commit(Some(caller), txn)?;
        Ok(ticket)
    }

    pub fn open_proxy_session(
        &self,
        caller: &Caller,
        ticket: &str,
        proxy: &str,
    ) -> Result<String, Error> {
        self.require_gateway(caller, "OpenProxySession")?;
        let parent_key = ticket_key(ticket);
        let now = self.now();
        let parent = match self.store.session(&parent_key)? {
            Some(s) if s.kind == LOGIN && self.session_alive(&s, now) => s,
            Some(s) if s.kind == PROXY => {
                return Err(self.refuse(
                    caller,
                    Error::InvalidArgs(
                        "OpenProxySession takes a login ticket, not a proxy ticket".into(),
                    ),
                ));
            }
            _ => return Err(self.refuse(caller, no_session())),
        };
        let proxy_ticket = self.new_ticket()?;
        let key = ticket_key(&proxy_ticket);
        let id = short_id(&key);
        let session = |proxy: &str| SessionRecord {
            id: id.clone(),
            kind: PROXY,
            login: parent.login.clone(),
            proxy: proxy.into(),
            parent: parent_key.clone(),
            created: now,
            last_used: now,
            // A proxy session cannot outlive its login session.
            expires: parent.expires,
            by_uid: caller.uid,
        };
        self.associate(
            caller,
            "OpenProxySession",
            &parent.login,
            proxy,
            |draft| {
                draft
                    .with("session", id.as_str())
                    .with("login_session", parent.id.as_str())
            },
            |proxy| Store::put_session(&key, &session(proxy)),
        )?;
        Ok(proxy_ticket)
    }

    /// Records a refused resolution and returns `err`.
    fn deny_resolution(
        &self,
        caller: &Caller,
        operation: &str,
        key: &str,
        login: &str,
        err: Error,
    ) -> Error {
        let draft = Draft::new(Event::Denied)
            .with("session", short_id(key))
            .with("login", login);
        self.deny(caller, operation, draft, err)
    }

    /// The identity live session `session` (stored under `key`) gives, and the keys of
    /// the sessions to renew; `None` if it gives none (any more). `cached_only` answers
    /// from memory only: `Err(None)` when that cannot be done.
    fn session_identity(
        &self,
        key: &str,
        session: &SessionRecord,
        now: i64,
        cached_only: bool,
    ) -> Result<Option<(SessionIdentity, Vec<String>)>, Option<Error>> {
        if !self.session_alive(session, now) {
            return Ok(None);
        }
        let mut renew = Vec::new();
        let stale = |s: &SessionRecord| now - s.last_used > self.renewal_interval();
        if stale(session) {
            renew.push(key.to_string());
        }
        let identity = if session.kind == LOGIN {
            let account = if cached_only {
                self.directory.cached_user(&session.login).ok_or(None)?
            } else {
                self.login_account(&session.login).map_err(Some)?
            };
            (
                session.login.clone(),
                session.login.clone(),
                String::new(),
                account.as_ref().map_or(NO_ID, |a| a.uid),
                account.as_ref().map_or(NO_ID, |a| a.gid),
            )
        } else {
            match self
                .store
                .session(&session.parent)
                .map_err(|e| Some(e.into()))?
            {
                Some(parent) if self.session_alive(&parent, now) => {
                    if stale(&parent) {
                        renew.push(session.parent.clone());
                    }
                }
                _ => return Ok(None),
            }
            // The association must still name this proxy, and the rules allow it.
            let acting = if cached_only {
                let caller = Caller {
                    uid: 0,
                    pid: 0,
                    name: None,
                    admin: true,
                    trusted: false,
                };
                self.resolve_cached(&caller, &session.login).ok_or(None)?
            } else {
                self.acting(&session.login).map_err(Some)?
            };
            if acting.proxy != session.proxy {
                return Ok(None);
            }
            let (uid, gid) = (acting.uid(), acting.gid());
            (
                session.login.clone(),
                acting.effective,
                acting.proxy,
                uid,
                gid,
            )
        };
        Ok(Some((identity, renew)))
    }

    /// Writes the use of the sessions under `keys` (not flushed: losing a renewal in a
    /// crash only shortens an idle timeout). In a transaction, so a session closed
    /// meanwhile is not written back to life.
    fn renew(&self, keys: &[String], now: i64) -> Result<(), Error> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut txn = self.begin()?;
        let mut writes = Vec::new();
        for key in keys {
            if let Some(mut s) = txn.store().session(key)? {
                s.last_used = now;
                writes.extend(Store::put_session(key, &s));
            }
        }
        txn.apply(&writes)?;
        txn.release();
        Ok(())
    }

    pub fn resolve_ticket(&self, caller: &Caller, ticket: &str) -> Result<SessionIdentity, Error> {
        self.require_gateway(caller, "ResolveTicket")?;
        let key = ticket_key(ticket);
        let now = self.now();
        let found = match self.store.session(&key)? {
            Some(session) => self
                .session_identity(&key, &session, now, false)
                .map_err(|e| e.unwrap_or_else(|| Error::Failed("no answer".into())))?,
            None => None,
        };
        match found {
            Some((identity, renew)) => {
                self.renew(&renew, now)?;
                Ok(identity)
            }
            None => Err(self.deny_resolution(caller, "ResolveTicket", &key, "", no_session())),
        }
    }

    /// `ResolveTicket` from memory, for the hot path: `None` when it needs NSS, a
    /// renewal or a denial record (then [`resolve_ticket`](Self::resolve_ticket)).
    pub fn resolve_ticket_cached(&self, caller: &Caller, ticket: &str) -> Option<SessionIdentity> {
        access::gateway(caller, "ResolveTicket").ok()?;
        let key = ticket_key(ticket);
        let session = self.store.session(&key).ok()??;
        match self.session_identity(&key, &session, self.now(), true) {
            Ok(Some((identity, renew))) if renew.is_empty() => Some(identity),
            _ => None,
        }
    }

    /// Resolves the configured login and proxy cookies of an HTTP `Cookie` header. A
    /// proxy cookie that is not a live proxy ticket bound to the login ticket gives the
    /// login-only identity (and is recorded as a denied resolution).
    pub fn resolve_cookies(&self, caller: &Caller, header: &str) -> Result<SessionIdentity, Error> {
        self.require_gateway(caller, "ResolveCookies")?;
        let pairs = cookies::parse(header)
            .map_err(|e| self.refuse(caller, Error::InvalidArgs(e.to_string())))?;
        let config = self.config();
        let config = &config.sessions;
        let now = self.now();
        let resolved = |key: &str, session: &SessionRecord| {
            self.session_identity(key, session, now, false)
                .map_err(|e| e.unwrap_or_else(|| Error::Failed("no answer".into())))
        };
        // Of duplicate cookies, the first that is a live session counts.
        let mut login = None;
        for ticket in cookie_values(&pairs, &config.login_cookie) {
            let key = ticket_key(ticket);
            if let Some(session) = self.store.session(&key)?
                && session.kind == LOGIN
                && let Some(found) = resolved(&key, &session)?
            {
                login = Some((key, found));
                break;
            }
        }
        let Some((login_key, (login_identity, login_renew))) = login else {
            let key = cookie_values(&pairs, &config.login_cookie)
                .next()
                .map(ticket_key)
                .unwrap_or_else(|| "0".repeat(64));
            return Err(self.deny_resolution(caller, "ResolveCookies", &key, "", no_session()));
        };
        let mut refused = None;
        for ticket in cookie_values(&pairs, &config.proxy_cookie) {
            let key = ticket_key(ticket);
            match self.store.session(&key)? {
                Some(s) if s.kind == PROXY && s.parent == login_key => {
                    if let Some((identity, renew)) = resolved(&key, &s)? {
                        self.renew(&renew, now)?;
                        return Ok(identity);
                    }
                    refused.get_or_insert(key);
                }
                _ => {
                    refused.get_or_insert(key);
                }
            }
        }
        self.renew(&login_renew, now)?;
        if let Some(key) = refused {
            let err = Error::NoSuchSession(
                "the proxy ticket is not a live proxy session of this login session".into(),
            );
            self.deny_resolution(caller, "ResolveCookies", &key, &login_identity.0, err);
        }
        Ok(login_identity)
    }

    pub fn close_session(&self, caller: &Caller, ticket: &str) -> Result<(), Error> {
        self.require_gateway(caller, "CloseSession")?;
        self.close_session_key(caller, &ticket_key(ticket))
    }

    fn close_session_key(&self, caller: &Caller, key: &str) -> Result<(), Error> {
        let mut txn = self.begin()?;
        let store = txn.store();
        let Some(session) = store.session(key)? else {
            drop(txn);
            return Err(self.refuse(caller, no_session()));
        };
        let mut writes = Store::delete_session(key, &session);
        let mut closed = vec![session.id.clone()];
        if session.kind == LOGIN {
            for (child_key, child) in store.sessions_of(&session.login, self.session_cap())? {
                if child.parent == key {
                    closed.push(child.id.clone());
                    writes.extend(Store::delete_session(&child_key, &child));
                }
            }
        }
        let draft = Draft::new(Event::SessionClose)
            .with("login", session.login.as_str())
            .with("proxy", session.proxy.as_str())
            .with("kind", session.kind.as_str())
            .with("session", session.id.as_str())
            .with("sessions", closed.join(","))
            .caller(caller);
        txn.record(draft, writes, self.now())?;
        self.commit(Some(caller), txn)
    }

    /// Every session (admins), at most [`LIST_MAX`]: never the tickets, only their
    /// short ids.
    pub fn list_sessions(&self, caller: &Caller) -> Result<Vec<(SessionRecord, i64)>, Error> {
        self.require_admin(caller, "ListSessions")?;
        let now = self.now();
        let mut sessions: Vec<(SessionRecord, i64)> = self
            .store
            .sessions()?
            .into_iter()
            .map(|(_, s)| {
                let end = self.session_end(&s);
                (s, end)
            })
            .filter(|(_, end)| *end > now)
            .collect();
        sessions.sort_by_key(|(s, _)| (s.created, s.id.clone()));
        sessions.truncate(LIST_MAX);
        Ok(sessions)
    }

    /// Closes a session by its short id (admins).
    pub fn close_session_by_id(&self, caller: &Caller, id: &str) -> Result<(), Error> {
        self.require_admin(caller, "CloseSessionById")?;
        let key = self
            .store
            .sessions()?
            .into_iter()
            .find(|(_, s)| s.id == id)
            .map(|(key, _)| key)
            .ok_or_else(|| Error::NoSuchSession(format!("no session {id:?}")))?;
        self.close_session_key(caller, &key)
    }

    /// Deletes sessions past their lifetime or idle timeout, each with a
    /// `session-expired` record: found by a walk outside any transaction, deleted in
    /// transactions of a bounded size (each checks the session again).
    pub fn purge_sessions(&self) -> Result<usize, Error> {
        let now = self.now();
        let sessions = self.store.sessions()?;
        let keys: std::collections::HashSet<&str> =
            sessions.iter().map(|(key, _)| key.as_str()).collect();
        let expired: Vec<&(String, SessionRecord)> = sessions
            .iter()
            .filter(|(_, session)| {
                let orphan = session.kind == PROXY && !keys.contains(session.parent.as_str());
                orphan || !self.session_alive(session, now)
            })
            .collect();
        let mut purged = 0;
        for batch in expired.chunks(64) {
            let mut txn = self.begin()?;
            for (key, _) in batch {
                let Some(session) = txn.store().session(key)? else {
                    continue;
                };
                let orphan =
                    session.kind == PROXY && txn.store().session(&session.parent)?.is_none();
                if self.session_alive(&session, now) && !orphan {
                    continue;
                }
                let draft = Draft::new(Event::SessionExpired)
                    .with("login", session.login.as_str())
                    .with("proxy", session.proxy.as_str())
                    .with("kind", session.kind.as_str())
                    .with("session", session.id.as_str());
                txn.record(draft, Store::delete_session(key, &session), now)?;
                purged += 1;
            }
            txn.commit()?;
        }
        Ok(purged)
    }
}

/// Most sessions `ListSessions` returns.
pub const LIST_MAX: usize = 10_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_matches_rfc4648() {
        assert_eq!(base64url(b""), "");
        assert_eq!(base64url(b"f"), "Zg");
        assert_eq!(base64url(b"fo"), "Zm8");
        assert_eq!(base64url(b"foo"), "Zm9v");
        assert_eq!(base64url(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
        assert_eq!(base64url(&[0u8; 32]).len(), 43);
    }

    #[test]
    fn keys_are_hashes_and_ids_their_prefix() {
        let key = ticket_key("abc");
        assert_eq!(
            key,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(short_id(&key), "ba7816bf8f01cfea");
    }
}
