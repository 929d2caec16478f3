//! journald's native protocol (systemd `JOURNAL_NATIVE_PROTOCOL`): one datagram of
//! `KEY=value` lines per entry, binary-safe framing for values with newlines, and a
//! sealed memfd passed as the datagram when an entry is too big for one.

use std::io::{self, Write as _};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::fcntl::{FcntlArg, SealFlag, fcntl};
use nix::sys::memfd::{MFdFlags, memfd_create};
use nix::sys::socket::{ControlMessage, MsgFlags, UnixAddr, sendmsg};

use super::{Record, journal_fields};

/// Where journald listens for native entries.
pub const SOCKET: &str = "/run/systemd/journal/socket";

pub struct Journal {
    socket: UnixDatagram,
    path: PathBuf,
    warned: AtomicBool,
}

impl Journal {
    /// Connects to journald if its socket exists.
    pub fn connect(path: &Path) -> Option<Self> {
        if !path.exists() {
            return None;
        }
        let socket = UnixDatagram::unbound().ok()?;
        Some(Journal {
            socket,
            path: path.to_path_buf(),
            warned: AtomicBool::new(false),
        })
    }

    /// Sends an audit record of chain `chain`. The store already holds it, so a journal
    /// failure is reported once in the operational log and does not fail the operation.
    pub fn send_record(&self, record: &Record, chain: &str) {
        if let Err(err) = self.send(&journal_fields(record, chain)) {
            if !self.warned.swap(true, Ordering::Relaxed) {
                tracing::warn!("cannot copy audit records to the journal: {err}");
            }
        } else {
            self.warned.store(false, Ordering::Relaxed);
        }
    }

    fn send(&self, fields: &[(impl AsRef<str>, impl AsRef<str>)]) -> io::Result<()> {
        let payload = encode(fields);
        match self.socket.send_to(&payload, &self.path) {
            Ok(_) => Ok(()),
            Err(err)
                if err.raw_os_error() == Some(libc::EMSGSIZE)
                    || err.raw_os_error() == Some(libc::ENOBUFS) =>
            {
                self.send_as_memfd(&payload)
            }
            Err(err) => Err(err),
        }
    }

    fn send_as_memfd(&self, payload: &[u8]) -> io::Result<()> {
        let fd = memfd_create(
            "proxyuserd-journal",
            MFdFlags::MFD_ALLOW_SEALING | MFdFlags::MFD_CLOEXEC,
        )?;
        let mut file = std::fs::File::from(fd);
        file.write_all(payload)?;
        // journald only accepts a memfd that nobody can change any more.
        fcntl(
            &file,
            FcntlArg::F_ADD_SEALS(
                SealFlag::F_SEAL_SHRINK
                    | SealFlag::F_SEAL_GROW
                    | SealFlag::F_SEAL_WRITE
                    | SealFlag::F_SEAL_SEAL,
            ),
        )?;
        let addr = UnixAddr::new(&self.path)?;
        let fds = [file.as_raw_fd()];
        sendmsg(
            self.socket.as_raw_fd(),
            &[],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            Some(&addr),
        )?;
        Ok(())
    }
}

/// Encodes fields in the native protocol. Field names are already valid journal
/// field names (upper case, digits, underscore).
fn encode(fields: &[(impl AsRef<str>, impl AsRef<str>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (key, value) in fields {
        let (key, value) = (key.as_ref(), value.as_ref());
        out.extend_from_slice(key.as_bytes());
        if value.contains('\n') {
            out.push(b'\n');
            out.extend_from_slice(&(value.len() as u64).to_le_bytes());
            out.extend_from_slice(value.as_bytes());
        } else {
            out.push(b'=');
            out.extend_from_slice(value.as_bytes());
        }
        out.push(b'\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_with_newlines_are_length_framed() {
        let out = encode(&[("A", "x"), ("B", "1\n2")]);
        let mut want = b"A=x\nB\n".to_vec();
        want.extend_from_slice(&3u64.to_le_bytes());
        want.extend_from_slice(b"1\n2\n");
        assert_eq!(out, want);
    }
}
