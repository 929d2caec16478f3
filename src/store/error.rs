//! What goes wrong in the store, typed: a caller tells a full disk, a failed flush or a
//! record that does not decode apart without reading messages.

use std::fmt;

/// A failure of the store.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database or a file beside it could not be opened, read or written.
    #[error("state store: {0}")]
    Io(IoFailure),
    /// The store takes no writes now (it is reopened once that can work again), or a
    /// change did not become durable.
    #[error("state store takes no writes: {0}")]
    Unavailable(Unavailable),
    /// A record on disk does not decode.
    #[error("state store: record {key:?} in {tree} does not decode: {why}")]
    Corrupt {
        tree: &'static str,
        key: String,
        why: String,
    },
    /// The store was written by a newer release (schema version).
    #[error(
        "state store: schema version {found}, newer than this proxyuserd knows ({known}): use a \
         newer proxyuserd or restore a backup"
    )]
    Newer { found: u32, known: u32 },
}

impl StoreError {
    /// The disk (or the quota) is full.
    pub fn disk_full(&self) -> bool {
        match self {
            StoreError::Io(failure) => failure.disk_full,
            StoreError::Unavailable(why) => why.disk_full(),
            StoreError::Corrupt { .. } | StoreError::Newer { .. } => false,
        }
    }
}

impl From<sled::Error> for StoreError {
    fn from(err: sled::Error) -> Self {
        StoreError::Io(IoFailure::sled("the database", &err))
    }
}

/// An operating-system failure: what was being done, and the system's word for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoFailure {
    /// E.g. "fsync of /var/lib/proxyuserd/db/blobs/12".
    pub what: String,
    pub message: String,
    /// ENOSPC or EDQUOT.
    pub disk_full: bool,
}

impl fmt::Display for IoFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.what, self.message)
    }
}

impl IoFailure {
    pub fn io(what: impl Into<String>, err: &std::io::Error) -> Self {
        let message = err.to_string();
        // sled hands an error of its background writer to every later caller as a copy
        // that keeps the kind and the text, not the errno.
        let disk_full = matches!(err.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
            || matches!(
                err.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            )
            || message.contains("os error 28")
            || message.contains("No space left on device");
        IoFailure {
            what: what.into(),
            message,
            disk_full,
        }
    }

    pub fn sled(what: impl Into<String>, err: &sled::Error) -> Self {
        match err {
            sled::Error::Io(io) => Self::io(what, io),
            other => Self::other(what, other),
        }
    }

    /// A failure that is not the disk's.
    pub fn other(what: impl Into<String>, message: impl fmt::Display) -> Self {
        IoFailure {
            what: what.into(),
            message: message.to_string(),
            disk_full: false,
        }
    }
}

/// Why the store takes no writes, or why a change did not become durable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unavailable {
    /// A write to the database failed; sled takes none after an I/O error.
    #[error("a write failed: {0}")]
    Write(IoFailure),
    /// Making the applied changes durable failed: memory may be ahead of the disk.
    #[error("flush to disk failed: {0}")]
    Flush(IoFailure),
    /// Reopening the database after a failure did not work (yet).
    #[error("cannot reopen the store: {0}")]
    Reopen(IoFailure),
    /// The change was applied before a failure and never reached the disk.
    #[error("the store failed before this change reached the disk")]
    Lost,
    /// The store is closing or closed.
    #[error("the store is closing")]
    Closing,
}

impl Unavailable {
    /// The disk (or the quota) is full.
    pub fn disk_full(&self) -> bool {
        match self {
            Unavailable::Write(f) | Unavailable::Flush(f) | Unavailable::Reopen(f) => f.disk_full,
            Unavailable::Lost | Unavailable::Closing => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_told_by_errno_kind_or_the_text_of_a_copy() {
        let errno = std::io::Error::from_raw_os_error(libc::ENOSPC);
        assert!(IoFailure::io("write", &errno).disk_full);
        // What sled gives later callers: kind and text, no errno.
        let copy = std::io::Error::new(errno.kind(), format!("{errno:?}"));
        assert_eq!(copy.raw_os_error(), None);
        assert!(IoFailure::io("write", &copy).disk_full);
        let other = std::io::Error::from_raw_os_error(libc::EIO);
        assert!(!IoFailure::io("write", &other).disk_full);
        assert!(!IoFailure::other("write", "No such thing").disk_full);
    }
}
