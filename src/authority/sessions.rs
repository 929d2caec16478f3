//! `org.proxyuserd1.Sessions`: server-side login and proxy tickets for web gateways (the
//! seed's two cookies). A ticket is 256 random bits from the kernel CSPRNG as URL-safe
//! text; the store keeps only its SHA-256, audit records a short prefix of that hash.
//! A proxy ticket is bound to its login ticket and is valid only while that is open,
//! the login's association still names the proxy, and the rules still allow it.

use sha2::{Digest, Sha256};

use crate::access::Caller;
use crate::audit::{Draft, Event};
use crate::store::{SessionRecord, Tree, Write};
use crate::sys::{hex, random_bytes};
use crate::time::now_micros;

use super::{Authority, Error};
use crate::cookies;

use crate::wire::SessionIdentity;

use crate::store::SessionKind::{Login as LOGIN, Proxy as PROXY};

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
        if caller.trusted || caller.uid == 0 {
            return Ok(());
        }
        let err = Error::AccessDenied(format!(
            "{operation} is for trusted callers (gateways); {caller} is not one"
        ));
        Err(self.deny(caller, operation, Draft::new(Event::Denied), err))
    }

    /// Whether a session is within its lifetime and idle timeout at `now`.
    fn session_alive(&self, session: &SessionRecord, now: i64) -> bool {
        now < self.session_end(session)
    }

    /// When a session ends if it is not used again.
    fn session_end(&self, session: &SessionRecord) -> i64 {
        let idle = (self.config.sessions.idle_secs as i64).saturating_mul(1_000_000);
        session.expires.min(session.last_used.saturating_add(idle))
    }

    /// Deletions of `login`'s proxy sessions that are not for `keep`.
    pub(super) fn stale_proxy_sessions(
        &self,
        login: &str,
        keep: Option<&str>,
    ) -> Result<(Vec<Write>, Vec<String>), Error> {
        let mut writes = Vec::new();
        let mut ids = Vec::new();
        for (key, session) in self.store.sessions()? {
            if session.kind == PROXY
                && session.login == login
                && Some(session.proxy.as_str()) != keep
            {
                ids.push(session.id.clone());
                writes.push(Write::delete(Tree::Sessions, key.as_str()));
            }
        }
        Ok((writes, ids))
    }

    pub fn open_session(&self, caller: &Caller, login: &str) -> Result<String, Error> {
        self.require_gateway(caller, "OpenSession")?;
        crate::names::check_user_name(login)
            .map_err(|e| Error::InvalidArgs(format!("login: {e}")))?;
        let ticket = self.new_ticket()?;
        let key = ticket_key(&ticket);
        let now = now_micros();
        let ttl = (self.config.sessions.ttl_secs as i64).saturating_mul(1_000_000);
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
        let draft = Draft::new(Event::SessionOpen)
            .with("login", login)
            .with("session", session.id.as_str())
            .with("kind", LOGIN.as_str())
            .caller(caller);
        self.record(
            &mut self.lock(),
            draft,
            vec![Write::put(Tree::Sessions, key.as_str(), &session)],
        )?;
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
        let now = now_micros();
        let parent = match self.store.session(&parent_key)? {
            Some(s) if s.kind == LOGIN && self.session_alive(&s, now) => s,
            Some(s) if s.kind == PROXY => {
                return Err(Error::InvalidArgs(
                    "OpenProxySession takes a login ticket, not a proxy ticket".into(),
                ));
            }
            _ => return Err(no_session()),
        };
        let proxy_ticket = self.new_ticket()?;
        let key = ticket_key(&proxy_ticket);
        let session = SessionRecord {
            id: short_id(&key),
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
        let id = session.id.clone();
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
            vec![Write::put(Tree::Sessions, key.as_str(), &session)],
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

    /// The identity live session `session` (stored under `key`) gives, renewing its
    /// idle timer; `None` if it gives none (any more).
    fn session_identity(
        &self,
        key: &str,
        session: &SessionRecord,
        now: i64,
    ) -> Result<Option<SessionIdentity>, Error> {
        if !self.session_alive(session, now) {
            return Ok(None);
        }
        let mut renew = vec![key.to_string()];
        let identity = if session.kind == LOGIN {
            let account = self.login_account(&session.login)?;
            (
                session.login.clone(),
                session.login.clone(),
                String::new(),
                account.as_ref().map_or(u32::MAX, |a| a.uid),
                account.as_ref().map_or(u32::MAX, |a| a.gid),
            )
        } else {
            match self.store.session(&session.parent)? {
                Some(parent) if self.session_alive(&parent, now) => {}
                _ => return Ok(None),
            }
            // The association must still name this proxy, and the rules allow it.
            let acting = self.acting(&session.login)?;
            if acting.proxy != session.proxy {
                return Ok(None);
            }
            renew.push(session.parent.clone());
            let (uid, gid) = (acting.uid(), acting.gid());
            (
                session.login.clone(),
                acting.effective,
                acting.proxy,
                uid,
                gid,
            )
        };
        // Using a session keeps it (and its login session) from idling out. Not flushed:
        // losing a renewal in a crash only shortens an idle timeout. Under the lock, so
        // a session closed meanwhile is not written back to life.
        let _ledger = self.lock();
        let mut writes = Vec::new();
        for key in renew {
            if let Some(mut s) = self.store.session(&key)? {
                s.last_used = now;
                writes.push(Write::put(Tree::Sessions, key.as_str(), &s));
            }
        }
        self.store.commit_unflushed(&writes)?;
        Ok(Some(identity))
    }

    pub fn resolve_ticket(&self, caller: &Caller, ticket: &str) -> Result<SessionIdentity, Error> {
        self.require_gateway(caller, "ResolveTicket")?;
        let key = ticket_key(ticket);
        let identity = match self.store.session(&key)? {
            Some(session) => self.session_identity(&key, &session, now_micros())?,
            None => None,
        };
        match identity {
            Some(identity) => Ok(identity),
            None => Err(self.deny_resolution(caller, "ResolveTicket", &key, "", no_session())),
        }
    }

    /// Resolves the configured login and proxy cookies of an HTTP `Cookie` header. A
    /// proxy cookie that is not a live proxy ticket bound to the login ticket gives the
    /// login-only identity (and is recorded as a denied resolution).
    pub fn resolve_cookies(&self, caller: &Caller, header: &str) -> Result<SessionIdentity, Error> {
        self.require_gateway(caller, "ResolveCookies")?;
        let pairs = cookies::parse(header).map_err(|e| Error::InvalidArgs(e.to_string()))?;
        let config = &self.config.sessions;
        let now = now_micros();
        // Of duplicate cookies, the first that is a live session counts.
        let mut login = None;
        for ticket in cookie_values(&pairs, &config.login_cookie) {
            let key = ticket_key(ticket);
            if let Some(session) = self.store.session(&key)?
                && session.kind == LOGIN
                && let Some(identity) = self.session_identity(&key, &session, now)?
            {
                login = Some((key, identity));
                break;
            }
        }
        let Some((login_key, login_identity)) = login else {
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
                    if let Some(identity) = self.session_identity(&key, &s, now)? {
                        return Ok(identity);
                    }
                    refused.get_or_insert(key);
                }
                _ => {
                    refused.get_or_insert(key);
                }
            }
        }
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
        let mut ledger = self.lock();
        let Some(session) = self.store.session(key)? else {
            return Err(no_session());
        };
        let mut writes = vec![Write::delete(Tree::Sessions, key)];
        let mut closed = vec![session.id.clone()];
        if session.kind == LOGIN {
            for (child_key, child) in self.store.sessions()? {
                if child.parent == key {
                    closed.push(child.id.clone());
                    writes.push(Write::delete(Tree::Sessions, child_key.as_str()));
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
        self.record(&mut ledger, draft, writes)
    }

    /// Every session (admins): never the tickets, only their short ids.
    pub fn list_sessions(&self, caller: &Caller) -> Result<Vec<(SessionRecord, i64)>, Error> {
        self.require_admin(caller, "ListSessions")?;
        let now = now_micros();
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
    /// `session-expired` record.
    pub fn purge_sessions(&self) -> Result<usize, Error> {
        let now = now_micros();
        let mut ledger = self.lock();
        let sessions = self.store.sessions()?;
        let keys: std::collections::HashSet<&str> =
            sessions.iter().map(|(key, _)| key.as_str()).collect();
        let mut purged = 0;
        for (key, session) in &sessions {
            let orphan = session.kind == PROXY && !keys.contains(session.parent.as_str());
            if self.session_alive(session, now) && !orphan {
                continue;
            }
            let draft = Draft::new(Event::SessionExpired)
                .with("login", session.login.as_str())
                .with("proxy", session.proxy.as_str())
                .with("kind", session.kind.as_str())
                .with("session", session.id.as_str());
            self.record(
                &mut ledger,
                draft,
                vec![Write::delete(Tree::Sessions, key.as_str())],
            )?;
            purged += 1;
        }
        Ok(purged)
    }
}

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
