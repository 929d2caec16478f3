//! What the bus accepts: the zbus interfaces. They translate and forward: the caller
//! comes from the bus credentials (cached per connection), the work is done by the
//! [`Authority`] on a blocking thread, and its errors become the contract's D-Bus errors.

mod admin;
mod admission;
mod callers;
mod identity;
mod jobs;
mod pam;
mod sessions;

use std::sync::Arc;

use tokio::sync::mpsc;
use zbus::message::{Header, Message};
use zbus::names::ErrorName;
use zbus::object_server::SignalEmitter;
use zbus::{Connection, DBusError};

use crate::authority::{Authority, Error, Notice};
use crate::identity::Caller;

pub use admin::Admin;
pub use admission::Admission;
pub use callers::Callers;
pub use identity::Identity;
pub use jobs::Jobs;
pub use pam::Pam;
pub use sessions::Sessions;

/// The well-known name and object path (contract).
pub const BUS_NAME: &str = "org.proxyuserd1";
pub const OBJECT_PATH: &str = "/org/proxyuserd1";

/// An [`Error`] as a D-Bus error reply.
#[derive(Debug)]
pub struct BusError {
    name: &'static str,
    message: String,
}

impl From<Error> for BusError {
    fn from(err: Error) -> Self {
        let name = match err {
            Error::AccessDenied(_) => "org.freedesktop.DBus.Error.AccessDenied",
            Error::InvalidArgs(_) => "org.freedesktop.DBus.Error.InvalidArgs",
            Error::NotAllowed(_) => "org.proxyuserd1.Error.NotAllowed",
            Error::NoSuchUser(_) => "org.proxyuserd1.Error.NoSuchUser",
            Error::NoSuchJob(_) => "org.proxyuserd1.Error.NoSuchJob",
            Error::NoSuchSession(_) => "org.proxyuserd1.Error.NoSuchSession",
            Error::InvalidRules(_) => "org.proxyuserd1.Error.InvalidRules",
            Error::AuditUnavailable(_) => "org.proxyuserd1.Error.AuditUnavailable",
            Error::LimitsExceeded(_) => "org.freedesktop.DBus.Error.LimitsExceeded",
            Error::Failed(_) => "org.freedesktop.DBus.Error.Failed",
        };
        BusError {
            name,
            message: err.to_string(),
        }
    }
}

impl DBusError for BusError {
    fn create_reply(&self, call: &Header<'_>) -> zbus::Result<Message> {
        Message::error(call, self.name()).build(&(self.message.as_str(),))
    }

    fn name(&self) -> ErrorName<'_> {
        ErrorName::from_static_str_unchecked(self.name)
    }

    fn description(&self) -> Option<&str> {
        Some(&self.message)
    }
}

/// What every interface holds.
#[derive(Clone)]
pub struct Shared {
    pub authority: Arc<Authority>,
    pub callers: Arc<Callers>,
    /// Held shared by every call in progress; shutdown takes it exclusively to wait for
    /// them (the lock is fair, so calls arriving after that wait until the process ends).
    pub in_flight: Arc<tokio::sync::RwLock<()>>,
    pub admission: Arc<Admission>,
}

impl Shared {
    /// Runs `fast` for the sender of `header` right here if it can answer without
    /// blocking, else `op` on a blocking thread.
    async fn call_fast<T, Q, F>(
        &self,
        connection: &Connection,
        header: &Header<'_>,
        fast: Q,
        op: F,
    ) -> Result<T, BusError>
    where
        T: Send + 'static,
        Q: FnOnce(&Authority, &Caller) -> Option<T>,
        F: FnOnce(&Authority, &Caller) -> Result<T, Error> + Send + 'static,
    {
        let caller = self.callers.get(connection, header).await?;
        // Outside `in_flight`: callers waiting to be admitted do not hold up shutdown.
        let _admitted = self.admission.admit(&self.authority, &caller).await?;
        let _in_flight = self.in_flight.read().await;
        if let Some(answer) = fast(&self.authority, &caller) {
            return Ok(answer);
        }
        let authority = self.authority.clone();
        blocking(move || op(&authority, &caller)).await
    }

    /// Runs `op` for the sender of `header` on a blocking thread.
    async fn call<T, F>(
        &self,
        connection: &Connection,
        header: &Header<'_>,
        op: F,
    ) -> Result<T, BusError>
    where
        T: Send + 'static,
        F: FnOnce(&Authority, &Caller) -> Result<T, Error> + Send + 'static,
    {
        self.call_fast(connection, header, |_, _| None, op).await
    }
}

/// Runs `op` on a blocking thread (store flushes and NSS lookups block).
async fn blocking<T: Send + 'static>(
    op: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, BusError> {
    tokio::task::spawn_blocking(op)
        .await
        .map_err(|e| BusError::from(Error::Failed(format!("internal error: {e}"))))?
        .map_err(BusError::from)
}

/// Turns the authority's notices into signals until the channel closes.
pub async fn forward_notices(connection: Connection, mut notices: mpsc::UnboundedReceiver<Notice>) {
    let emitter = match SignalEmitter::new(&connection, OBJECT_PATH) {
        Ok(emitter) => emitter,
        Err(err) => {
            tracing::error!("cannot emit signals: {err}");
            return;
        }
    };
    while let Some(notice) = notices.recv().await {
        let sent = match &notice {
            Notice::ProxyChanged { login, proxy, why } => {
                Identity::proxy_changed(&emitter, login, proxy, why).await
            }
            Notice::RulesChanged(generation) => {
                let changed = Admin::rules_changed(&emitter, *generation).await;
                let server = connection.object_server();
                if let Ok(admin) = server.interface::<_, Admin>(OBJECT_PATH).await {
                    let _ = admin.get().await.rules_generation_changed(&emitter).await;
                }
                changed
            }
            Notice::JobFinished {
                id,
                run_as,
                state,
                exit_code,
            } => Jobs::job_finished(&emitter, id, run_as, state, *exit_code).await,
        };
        if let Err(err) = sent {
            tracing::warn!("cannot emit {notice:?}: {err}");
        }
    }
}
