//! The daemon's `org.proxyuserd1.Pam` interface, as typed calls. Each call is one
//! connection to the bus, made and closed within the timeout.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::client::{self, CallError};
use crate::message::{Call, Value};

/// The system bus, at its standard path. The module never takes a bus address from
/// its environment: inside setuid `su` that environment is the requester's.
pub const SYSTEM_BUS: &str = "/run/dbus/system_bus_socket";

const DESTINATION: &str = "org.proxyuserd1";
const PATH: &str = "/org/proxyuserd1";
const INTERFACE: &str = "org.proxyuserd1.Pam";

/// Where a PAM transaction happens, for the audit record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Place {
    pub service: String,
    pub tty: String,
    pub rhost: String,
}

pub struct Daemon {
    socket: PathBuf,
    timeout: Duration,
}

impl Daemon {
    /// The daemon on the system bus.
    pub fn system(timeout: Duration) -> Daemon {
        Daemon::at(Path::new(SYSTEM_BUS), timeout)
    }

    /// The daemon on the bus at `socket`.
    fn at(socket: &Path, timeout: Duration) -> Daemon {
        Daemon {
            socket: socket.to_path_buf(),
            timeout,
        }
    }

    fn call(&self, member: &str, args: &[&str]) -> Result<Vec<Value>, CallError> {
        let call = Call {
            destination: DESTINATION,
            path: PATH,
            interface: INTERFACE,
            member,
            args,
        };
        client::call(&self.socket, self.timeout, &call)
    }

    /// May `requester` become `target` without `target`'s password, by the rules?
    /// `(allowed, reason)`; the daemon has audited the answer.
    pub fn authorize(
        &self,
        requester: &str,
        target: &str,
        place: &Place,
    ) -> Result<(bool, String), CallError> {
        let args = [requester, target, &place.service, &place.tty, &place.rhost];
        decision(self.call("Authorize", &args)?)
    }

    /// May `user` be logged into directly? `(allowed, reason)`: not if it is a proxy user.
    pub fn account(&self, user: &str, place: &Place) -> Result<(bool, String), CallError> {
        let args = [user, &place.service, &place.tty, &place.rhost];
        decision(self.call("Account", &args)?)
    }

    /// Records the opening of `login`'s session as `target` if it is a proxy use; its
    /// session id then.
    pub fn open_session(
        &self,
        login: &str,
        target: &str,
        place: &Place,
    ) -> Result<Option<String>, CallError> {
        let args = [login, target, &place.service, &place.tty, &place.rhost];
        match self.call("OpenSession", &args)?.as_slice() {
            [Value::Bool(true), Value::Str(id)] => Ok(Some(id.clone())),
            [Value::Bool(false), Value::Str(_)] => Ok(None),
            other => Err(unexpected(other)),
        }
    }

    /// Records the end of session `session`.
    pub fn close_session(
        &self,
        session: &str,
        login: &str,
        target: &str,
        place: &Place,
    ) -> Result<(), CallError> {
        let args = [
            session,
            login,
            target,
            &place.service,
            &place.tty,
            &place.rhost,
        ];
        match self.call("CloseSession", &args)?.as_slice() {
            [] => Ok(()),
            other => Err(unexpected(other)),
        }
    }
}

fn decision(values: Vec<Value>) -> Result<(bool, String), CallError> {
    match values.as_slice() {
        [Value::Bool(allowed), Value::Str(reason)] => Ok((*allowed, reason.clone())),
        other => Err(unexpected(other)),
    }
}

fn unexpected(values: &[Value]) -> CallError {
    CallError::Protocol(format!("unexpected reply {values:?}"))
}
