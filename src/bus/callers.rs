//! Callers by bus connection. The bus daemon vouches for a connection's uid and pid
//! (`GetConnectionCredentials`); they cannot change while it lives and unique names are
//! never reused, so the answer is kept until the connection goes away.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use futures_core::Stream;
use zbus::Connection;
use zbus::fdo::DBusProxy;
use zbus::message::Header;
use zbus::names::BusName;

use super::BusError;
use crate::access::Caller;
use crate::authority::{Authority, Error};

pub struct Callers {
    authority: Arc<Authority>,
    known: Mutex<HashMap<String, Arc<Caller>>>,
}

impl Callers {
    pub fn new(authority: Arc<Authority>) -> Self {
        Callers {
            authority,
            known: Mutex::new(HashMap::new()),
        }
    }

    /// The caller that sent `header`.
    pub async fn get(
        &self,
        connection: &Connection,
        header: &Header<'_>,
    ) -> Result<Arc<Caller>, BusError> {
        let sender = header
            .sender()
            .ok_or_else(|| BusError::from(Error::AccessDenied("message has no sender".into())))?;
        if let Some(caller) = self
            .known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(sender.as_str())
        {
            return Ok(caller.clone());
        }
        let failed = |e: zbus::Error| {
            BusError::from(Error::Failed(format!(
                "cannot get the credentials of {sender}: {e}"
            )))
        };
        let credentials = DBusProxy::new(connection)
            .await
            .map_err(failed)?
            .get_connection_credentials(BusName::Unique(sender.clone()))
            .await
            .map_err(|e| failed(e.into()))?;
        let (Some(uid), Some(pid)) = (credentials.unix_user_id(), credentials.process_id()) else {
            return Err(Error::AccessDenied(format!(
                "the bus does not know the uid and pid of {sender}"
            ))
            .into());
        };
        let authority = self.authority.clone();
        let caller = super::blocking(move || authority.caller(uid, pid)).await?;
        let caller = Arc::new(caller);
        self.known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(sender.to_string(), caller.clone());
        Ok(caller)
    }

    /// Forgets every caller (after a reload, so admin group changes count at once).
    pub fn forget_all(&self) {
        self.known.lock().unwrap_or_else(|e| e.into_inner()).clear();
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
