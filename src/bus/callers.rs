//! Callers by bus connection. The bus daemon vouches for a connection's uid and pid
//! (`GetConnectionCredentials`); they cannot change while it lives and unique names are
//! never reused, so they are kept until the connection goes away. What the uid is
//! worth (admin, trusted) can change with the user database: that is decided again
//! once it is older than `nss_cache_secs`, like any other lookup.
//!
//! Where the uid and pid come from is a [`CredentialSource`]: the bus daemon
//! ([`BusDaemon`]) in the daemon; the in-process tests, which serve on peer-to-peer
//! connections without a bus, bring their own.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_core::Stream;
use zbus::Connection;
use zbus::fdo::DBusProxy;
use zbus::message::Header;
use zbus::names::{BusName, UniqueName};

use super::BusError;
use crate::access::Caller;
use crate::authority::{Authority, Error};

/// A future a [`CredentialSource`] returns.
pub type CredentialFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(u32, u32), Error>> + Send + 'a>>;

/// Who is on the other end of a connection.
pub trait CredentialSource: Send + Sync + 'static {
    /// The name the sender of `header` on `connection` is known by while it is
    /// connected (the key of the caller cache and the destination of its signals).
    fn peer(&self, connection: &Connection, header: &Header<'_>) -> Result<String, Error>;
    /// The uid and pid of `peer`, as somebody the daemon trusts vouches for them.
    fn credentials<'a>(&'a self, connection: &'a Connection, peer: &'a str)
    -> CredentialFuture<'a>;
}

/// The bus daemon: the sender's unique name, and `GetConnectionCredentials`.
#[derive(Debug, Default, Clone, Copy)]
pub struct BusDaemon;

impl CredentialSource for BusDaemon {
    fn peer(&self, _: &Connection, header: &Header<'_>) -> Result<String, Error> {
        header
            .sender()
            .map(|sender| sender.to_string())
            .ok_or_else(|| Error::AccessDenied("message has no sender".into()))
    }

    fn credentials<'a>(
        &'a self,
        connection: &'a Connection,
        peer: &'a str,
    ) -> CredentialFuture<'a> {
        Box::pin(async move {
            let failed = |e: zbus::Error| {
                Error::Failed(format!("cannot get the credentials of {peer}: {e}"))
            };
            let sender = UniqueName::try_from(peer).map_err(failed)?;
            let credentials = DBusProxy::new(connection)
                .await
                .map_err(failed)?
                .get_connection_credentials(BusName::Unique(sender))
                .await
                .map_err(|e| failed(e.into()))?;
            let (Some(uid), Some(pid)) = (credentials.unix_user_id(), credentials.process_id())
            else {
                return Err(Error::AccessDenied(format!(
                    "the bus does not know the uid and pid of {peer}"
                )));
            };
            Ok((uid, pid))
        })
    }
}

pub struct Callers {
    authority: Arc<Authority>,
    source: Arc<dyn CredentialSource>,
    known: Mutex<HashMap<String, Known>>,
}

struct Known {
    caller: Arc<Caller>,
    /// When it was decided; `None`: decide again at the next call.
    decided: Option<Instant>,
}

impl Callers {
    /// Callers as the bus daemon vouches for them.
    pub fn new(authority: Arc<Authority>) -> Self {
        Self::with_source(authority, Arc::new(BusDaemon))
    }

    /// Callers as `source` vouches for them.
    pub fn with_source(authority: Arc<Authority>, source: Arc<dyn CredentialSource>) -> Self {
        Callers {
            authority,
            source,
            known: Mutex::new(HashMap::new()),
        }
    }

    /// The caller that sent `header`.
    pub async fn get(
        &self,
        connection: &Connection,
        header: &Header<'_>,
    ) -> Result<Arc<Caller>, BusError> {
        let sender = self.source.peer(connection, header)?;
        let ttl = Duration::from_secs(self.authority.config().nss_cache_secs);
        let known = self
            .known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(sender.as_str())
            .map(|k| {
                (
                    k.caller.clone(),
                    k.decided.is_some_and(|at| at.elapsed() < ttl),
                )
            });
        if let Some((caller, fresh)) = known {
            if fresh {
                return Ok(caller);
            }
            let (uid, pid) = (caller.uid, caller.pid);
            return self.decide(sender.as_str(), uid, pid).await;
        }
        let (uid, pid) = self.source.credentials(connection, &sender).await?;
        self.decide(sender.as_str(), uid, pid).await
    }

    /// Decides who `uid` is now and remembers it for `sender`.
    async fn decide(&self, sender: &str, uid: u32, pid: u32) -> Result<Arc<Caller>, BusError> {
        let authority = self.authority.clone();
        let caller = Arc::new(super::blocking(move || authority.caller(uid, pid)).await?);
        self.known.lock().unwrap_or_else(|e| e.into_inner()).insert(
            sender.to_string(),
            Known {
                caller: caller.clone(),
                decided: Some(Instant::now()),
            },
        );
        Ok(caller)
    }

    /// The peers that have called, with who they are now: one decided longer ago than
    /// `nss_cache_secs` is decided again first (an admin who left the admin group hears
    /// no more than anyone else). A peer that cannot be decided now is left out.
    pub async fn peers(&self) -> Vec<(String, Arc<Caller>)> {
        let ttl = Duration::from_secs(self.authority.config().nss_cache_secs);
        let mut current = Vec::new();
        let mut stale = Vec::new();
        for (name, known) in self.known.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            if known.decided.is_some_and(|at| at.elapsed() < ttl) {
                current.push((name.clone(), known.caller.clone()));
            } else {
                stale.push((name.clone(), known.caller.uid, known.caller.pid));
            }
        }
        for (name, uid, pid) in stale {
            let authority = self.authority.clone();
            let Ok(caller) = super::blocking(move || authority.caller(uid, pid)).await else {
                continue;
            };
            let caller = Arc::new(caller);
            // Only if it is still there: a peer that left meanwhile stays forgotten.
            if let Some(known) = self
                .known
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_mut(&name)
            {
                known.caller = caller.clone();
                known.decided = Some(Instant::now());
                current.push((name, caller));
            }
        }
        current
    }

    /// Decides every caller anew at its next call (after a reload, so admin group
    /// changes count at once). The peers stay known, for signals.
    pub fn forget_all(&self) {
        for known in self
            .known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values_mut()
        {
            known.decided = None;
        }
    }

    /// Drops callers whose connection closed, until the bus goes away.
    pub async fn forget_departed(self: Arc<Self>, connection: Connection) {
        let mut changes = match DBusProxy::new(&connection).await {
            Ok(proxy) => match proxy.receive_name_owner_changed().await {
                Ok(stream) => stream,
                Err(err) => {
                    tracing::error!(
                        "cannot watch bus peers, the caller cache will only grow: {err}"
                    );
                    return;
                }
            },
            Err(err) => {
                tracing::error!("cannot watch bus peers: {err}");
                return;
            }
        };
        while let Some(change) =
            std::future::poll_fn(|cx| Pin::new(&mut changes).poll_next(cx)).await
        {
            let Ok(args) = change.args() else { continue };
            if args.new_owner().is_none() && args.name().starts_with(':') {
                self.known
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(args.name().as_str());
            }
        }
    }
}
