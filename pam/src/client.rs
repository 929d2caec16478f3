//! One blocking D-Bus method call over a unix socket, within a deadline: connect,
//! authenticate (SASL `EXTERNAL`, as the process's effective uid), `Hello`, the call,
//! the reply, close. No threads, no event loop, nothing left behind: the socket is
//! close-on-exec and closed when the call returns.

use std::fmt;
use std::io::{self, Read};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::message::{self, Call, ERROR, METHOD_RETURN, Message, Value};

/// Why a call got no answer from the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// No bus, no service on it, or no answer in time: the service is unavailable.
    Unavailable(String),
    /// The service (or the bus) answered with an error.
    Refused { name: String, message: String },
    /// The bus spoke something this client does not understand.
    Protocol(String),
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Unavailable(why) => write!(f, "unavailable: {why}"),
            CallError::Refused { name, message } => write!(f, "{name}: {message}"),
            CallError::Protocol(why) => write!(f, "D-Bus protocol error: {why}"),
        }
    }
}

impl From<message::WireError> for CallError {
    fn from(err: message::WireError) -> Self {
        CallError::Protocol(err.0)
    }
}

/// Error replies that mean "nobody answered", as opposed to "the service said no".
pub fn is_unavailable(error_name: &str) -> bool {
    matches!(
        error_name,
        "org.freedesktop.DBus.Error.ServiceUnknown"
            | "org.freedesktop.DBus.Error.NameHasNoOwner"
            | "org.freedesktop.DBus.Error.NoReply"
            | "org.freedesktop.DBus.Error.Timeout"
            | "org.freedesktop.DBus.Error.TimedOut"
            | "org.freedesktop.DBus.Error.Disconnected"
            | "org.freedesktop.DBus.Error.NoServer"
    ) || error_name.starts_with("org.freedesktop.DBus.Error.Spawn.")
}

fn unavailable(what: &str, err: io::Error) -> CallError {
    match err.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            CallError::Unavailable(format!("no answer in time ({what})"))
        }
        _ => CallError::Unavailable(format!("{what}: {err}")),
    }
}

/// Calls `call` on the bus listening at `socket` and returns the reply's values.
pub fn call(socket: &Path, timeout: Duration, call: &Call<'_>) -> Result<Vec<Value>, CallError> {
    let deadline = Instant::now() + timeout;
    let mut bus = Bus::connect(socket, deadline)?;
    bus.authenticate()?;
    // Pipelined: BEGIN, Hello (serial 1) and the call (serial 2) in one write.
    let hello = message::method_call(
        1,
        &Call {
            destination: "org.freedesktop.DBus",
            path: "/org/freedesktop/DBus",
            interface: "org.freedesktop.DBus",
            member: "Hello",
            args: &[],
        },
    )?;
    let mut out = b"BEGIN\r\n".to_vec();
    out.extend_from_slice(&hello);
    out.extend_from_slice(&message::method_call(2, call)?);
    bus.send(&out)?;
    bus.reply_to(1)?;
    bus.reply_to(2)?.values().map_err(CallError::from)
}

struct Bus {
    stream: UnixStream,
    deadline: Instant,
    /// Bytes received and not yet consumed.
    received: Vec<u8>,
}

impl Bus {
    fn connect(path: &Path, deadline: Instant) -> Result<Self, CallError> {
        let stream = crate::sys::connect_unix(path, remaining(deadline)?)
            .map_err(|e| unavailable(&format!("cannot connect to {}", path.display()), e))?;
        Ok(Bus {
            stream,
            deadline,
            received: Vec::new(),
        })
    }

    /// SASL EXTERNAL: the bus checks the claimed uid against the socket's credentials.
    fn authenticate(&mut self) -> Result<(), CallError> {
        let uid = crate::sys::effective_uid().to_string();
        let hex: String = uid.bytes().map(|b| format!("{b:02x}")).collect();
        self.send(format!("\0AUTH EXTERNAL {hex}\r\n").as_bytes())?;
        let line = self.line()?;
        if !line.starts_with("OK ") {
            return Err(CallError::Refused {
                name: "org.freedesktop.DBus.Error.AuthFailed".into(),
                message: format!("the bus answered {line:?} to AUTH EXTERNAL"),
            });
        }
        Ok(())
    }

    fn send(&mut self, mut bytes: &[u8]) -> Result<(), CallError> {
        while !bytes.is_empty() {
            let timeout = remaining(self.deadline)?;
            // MSG_NOSIGNAL: a bus that hangs up must not kill the host process (su,
            // sshd) with SIGPIPE.
            match crate::sys::send_nosignal(&self.stream, bytes, timeout) {
                Ok(n) => bytes = &bytes[n..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(unavailable("cannot write to the bus", e)),
            }
        }
        Ok(())
    }

    /// Reads more bytes; end of stream is an error (the bus went away).
    fn fill(&mut self) -> Result<(), CallError> {
        let mut buf = [0u8; 4096];
        loop {
            let timeout = remaining(self.deadline)?;
            self.stream
                .set_read_timeout(Some(timeout))
                .map_err(|e| unavailable("cannot set a timeout", e))?;
            match self.stream.read(&mut buf) {
                Ok(0) => {
                    return Err(CallError::Unavailable(
                        "the bus closed the connection".into(),
                    ));
                }
                Ok(n) => {
                    self.received.extend_from_slice(&buf[..n]);
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(unavailable("cannot read from the bus", e)),
            }
        }
    }

    /// One SASL line, without its CR LF.
    fn line(&mut self) -> Result<String, CallError> {
        loop {
            if let Some(end) = self.received.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.received[..end]).into_owned();
                self.received.drain(..end + 2);
                return Ok(line);
            }
            if self.received.len() > 1024 {
                return Err(CallError::Protocol("SASL line too long".into()));
            }
            self.fill()?;
        }
    }

    fn message(&mut self) -> Result<Message, CallError> {
        while self.received.len() < 16 {
            self.fill()?;
        }
        let start: [u8; 16] = self.received[..16].try_into().expect("16 bytes");
        let len = message::message_len(&start)?;
        while self.received.len() < len {
            self.fill()?;
        }
        let message = message::parse(&self.received[..len])?;
        self.received.drain(..len);
        Ok(message)
    }

    /// The reply to our call `serial`, skipping signals (the bus sends `NameAcquired`).
    fn reply_to(&mut self, serial: u32) -> Result<Message, CallError> {
        loop {
            let message = self.message()?;
            if message.reply_serial != Some(serial) {
                continue;
            }
            return match message.kind {
                METHOD_RETURN => Ok(message),
                ERROR => {
                    let name = message.error_name.clone().unwrap_or_default();
                    let text = match message.values().ok().as_deref() {
                        Some([Value::Str(text), ..]) => text.clone(),
                        _ => String::new(),
                    };
                    if is_unavailable(&name) {
                        Err(CallError::Unavailable(format!("{name}: {text}")))
                    } else {
                        Err(CallError::Refused {
                            name,
                            message: text,
                        })
                    }
                }
                other => Err(CallError::Protocol(format!(
                    "a message of type {other} answered call {serial}"
                ))),
            };
        }
    }
}

/// Time left before `deadline`; none left is "no answer in time".
fn remaining(deadline: Instant) -> Result<Duration, CallError> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| CallError::Unavailable("no answer in time".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_no_answer_errors_count_as_unavailable() {
        assert!(is_unavailable("org.freedesktop.DBus.Error.ServiceUnknown"));
        assert!(is_unavailable("org.freedesktop.DBus.Error.NoReply"));
        assert!(is_unavailable(
            "org.freedesktop.DBus.Error.Spawn.ChildExited"
        ));
        assert!(!is_unavailable("org.freedesktop.DBus.Error.AccessDenied"));
        assert!(!is_unavailable("org.proxyuserd1.Error.AuditUnavailable"));
        assert!(!is_unavailable("org.freedesktop.DBus.Error.InvalidArgs"));
    }

    #[test]
    fn nothing_listening_is_unavailable() {
        let err = call(
            Path::new("/nonexistent/bus"),
            Duration::from_secs(1),
            &Call {
                destination: "d.e",
                path: "/",
                interface: "d.e",
                member: "M",
                args: &[],
            },
        )
        .unwrap_err();
        assert!(matches!(err, CallError::Unavailable(_)), "{err}");
    }
}
