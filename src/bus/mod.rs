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

use crate::access::Caller;
use crate::authority::{Authority, Error, Notice};

pub use admin::AdminInterface;
pub use admission::Admission;
pub use callers::{BusDaemon, Callers, CredentialFuture, CredentialSource};
pub use identity::IdentityInterface;
pub use jobs::JobsInterface;
pub use pam::PamInterface;
pub use sessions::SessionsInterface;

use crate::wire::errors;
pub use crate::wire::{BUS_NAME, OBJECT_PATH};

/// An [`Error`] as a D-Bus error reply.
#[derive(Debug)]
pub struct BusError {
    name: &'static str,
    message: String,
}

impl From<Error> for BusError {
    fn from(err: Error) -> Self {
        let name = match err {
            Error::AccessDenied(_) => errors::ACCESS_DENIED,
            Error::InvalidArgs(_) => errors::INVALID_ARGS,
            Error::NotAllowed(_) => errors::NOT_ALLOWED,
            Error::NoSuchUser(_) => errors::NO_SUCH_USER,
            Error::NoSuchJob(_) => errors::NO_SUCH_JOB,
            Error::NoSuchSession(_) => errors::NO_SUCH_SESSION,
            Error::InvalidRules(_) => errors::INVALID_RULES,
            Error::AuditUnavailable(_) => errors::AUDIT_UNAVAILABLE,
            Error::LimitsExceeded(_) => errors::LIMITS_EXCEEDED,
            Error::Failed(_) => errors::FAILED,
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
        // The fast path reads and records nothing: its answer waits only for the flush
        // of a change it read, if that is not on disk yet.
        let (fast, seen) = self
            .authority
            .read_noting(|| fast(&self.authority, &caller));
        if let Some(answer) = fast {
            self.authority.settle_read(seen).await;
            return Ok(answer);
        }
        let authority = self.authority.clone();
        let answer = blocking(move || op(&authority, &caller)).await;
        // Whatever the call saw or caused (a denial too) is on disk before the caller
        // hears of it.
        self.authority.settle().await;
        answer
    }

    /// Runs async `op` for the sender of `header` (an operation that awaits, and hands
    /// its blocking parts to blocking threads itself).
    async fn call_async<T, F, Fut>(
        &self,
        connection: &Connection,
        header: &Header<'_>,
        op: F,
    ) -> Result<T, BusError>
    where
        F: FnOnce(Arc<Authority>, Caller) -> Fut,
        Fut: std::future::Future<Output = Result<T, Error>>,
    {
        let caller = self.callers.get(connection, header).await?;
        let _admitted = self.admission.admit(&self.authority, &caller).await?;
        let _in_flight = self.in_flight.read().await;
        let caller = Caller::clone(&caller);
        let answer = op(self.authority.clone(), caller)
            .await
            .map_err(BusError::from);
        self.authority.settle().await;
        answer
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

/// Serves every interface of the API at [`OBJECT_PATH`] on `connection`, each backed by
/// `shared`: on the system bus in the daemon, on peer-to-peer connections in the
/// in-process tests.
pub async fn serve(connection: &Connection, shared: &Shared) -> zbus::Result<()> {
    let server = connection.object_server();
    let added = [
        server
            .at(OBJECT_PATH, IdentityInterface(shared.clone()))
            .await?
            .is_none(),
        server
            .at(OBJECT_PATH, AdminInterface(shared.clone()))
            .await?
            .is_none(),
        server
            .at(OBJECT_PATH, JobsInterface(shared.clone()))
            .await?
            .is_none(),
        server
            .at(OBJECT_PATH, SessionsInterface(shared.clone()))
            .await?
            .is_none(),
        server
            .at(OBJECT_PATH, PamInterface(shared.clone()))
            .await?
            .is_none(),
    ];
    if added.contains(&false) {
        return Err(zbus::Error::Failure(format!(
            "the interfaces are served at {OBJECT_PATH} already"
        )));
    }
    Ok(())
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

/// Turns the authority's notices into signals until the channel closes. Signals about a
/// login go only to the peers that could read the same with their own calls: those that
/// may act for the login (itself, gateways, admins) and, for a job, its run-as user.
/// Peers are known by the calls they made on their connection.
pub async fn forward_notices(
    connection: Connection,
    callers: Arc<Callers>,
    mut notices: mpsc::UnboundedReceiver<Notice>,
) {
    let emitter = match SignalEmitter::new(&connection, OBJECT_PATH) {
        Ok(emitter) => emitter,
        Err(err) => {
            tracing::error!("cannot emit signals: {err}");
            return;
        }
    };
    while let Some(notice) = notices.recv().await {
        let mut sent = Ok(());
        match &notice {
            Notice::ProxyChanged { login, proxy, why } => {
                for (peer, caller) in callers.peers().await {
                    if crate::access::act_for(&caller, login).is_ok() {
                        let Ok(peer) = zbus::names::BusName::try_from(peer.as_str()) else {
                            continue;
                        };
                        let to = emitter.clone().set_destination(peer);
                        sent = sent
                            .and(IdentityInterface::proxy_changed(&to, login, proxy, why).await);
                    }
                }
            }
            Notice::RulesChanged(generation) => {
                // The generation is public (the RulesGeneration property).
                sent = AdminInterface::rules_changed(&emitter, *generation).await;
                let server = connection.object_server();
                if let Ok(admin) = server.interface::<_, AdminInterface>(OBJECT_PATH).await {
                    let _ = admin.get().await.rules_generation_changed(&emitter).await;
                }
            }
            Notice::JobFinished {
                id,
                login,
                run_as,
                end,
            } => {
                for (peer, caller) in callers.peers().await {
                    let involved = crate::access::act_for(&caller, login).is_ok()
                        || caller.name.as_deref() == Some(run_as.as_str());
                    if involved {
                        let Ok(peer) = zbus::names::BusName::try_from(peer.as_str()) else {
                            continue;
                        };
                        let to = emitter.clone().set_destination(peer);
                        let state = end.state.as_str();
                        sent = sent.and(
                            JobsInterface::job_finished(&to, id, run_as, state, end.exit_code)
                                .await,
                        );
                    }
                }
            }
        }
        if let Err(err) = sent {
            tracing::debug!("cannot emit {notice:?}: {err}");
        }
    }
}
