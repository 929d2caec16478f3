//! The libc calls of the module that std does not wrap, each as a small safe function.

use std::ffi::{CStr, CString, c_char, c_int};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// The real uid: who ran the (setuid) program the module is loaded in.
pub fn real_uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

/// The effective uid: whom the bus sees on our socket.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Connects a close-on-exec unix stream socket to `path`, waiting at most `timeout`
/// (a listener with a full backlog makes `connect` wait, for the send timeout).
pub fn connect_unix(path: &Path, timeout: Duration) -> io::Result<UnixStream> {
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: socket(2) with constant arguments; the result is checked below.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor that nothing else owns.
    let stream = UnixStream::from(unsafe { OwnedFd::from_raw_fd(fd) });
    stream.set_write_timeout(Some(timeout))?;
    // SAFETY: sockaddr_un is plain data for which all zeroes is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    if bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a usable socket path",
        ));
    }
    for (to, from) in addr.sun_path.iter_mut().zip(bytes) {
        *to = *from as c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    loop {
        // SAFETY: `addr` is an initialized sockaddr_un and `len` does not exceed its size
        // (the path is shorter than sun_path, checked above).
        let rc = unsafe {
            libc::connect(
                stream.as_raw_fd(),
                (&raw const addr).cast::<libc::sockaddr>(),
                len as libc::socklen_t,
            )
        };
        if rc == 0 {
            return Ok(stream);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// `send(2)` with `MSG_NOSIGNAL`, waiting at most `timeout`: a peer that went away is an
/// `EPIPE` error, never a SIGPIPE for the host process.
pub fn send_nosignal(stream: &UnixStream, bytes: &[u8], timeout: Duration) -> io::Result<usize> {
    stream.set_write_timeout(Some(timeout))?;
    // SAFETY: the pointer and length describe `bytes`, valid for reads for the call.
    let n = unsafe {
        libc::send(
            stream.as_raw_fd(),
            bytes.as_ptr().cast(),
            bytes.len(),
            libc::MSG_NOSIGNAL,
        )
    };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// The name of the account with uid `uid`, through NSS.
pub fn user_name(uid: u32) -> io::Result<Option<String>> {
    passwd_entry(|pwd, buf, result| {
        // SAFETY: every pointer is valid for the call: `pwd` and `result` point to
        // locals of `passwd_entry`, `buf` to a buffer of `buf.len()` bytes.
        unsafe { libc::getpwuid_r(uid, pwd, buf.as_mut_ptr(), buf.len(), result) }
    })
    .map(|entry| entry.map(|(name, _)| name))
}

/// The uid of the account named `name`, through NSS.
pub fn user_uid(name: &str) -> io::Result<Option<u32>> {
    let Ok(cname) = CString::new(name) else {
        return Ok(None);
    };
    passwd_entry(|pwd, buf, result| {
        // SAFETY: as in `user_name`; `cname` is a NUL-terminated string that outlives
        // the call.
        unsafe { libc::getpwnam_r(cname.as_ptr(), pwd, buf.as_mut_ptr(), buf.len(), result) }
    })
    .map(|entry| entry.map(|(_, uid)| uid))
}

/// Runs a `getpw*_r` lookup with a growing buffer; the entry's name and uid.
fn passwd_entry(
    lookup: impl Fn(*mut libc::passwd, &mut [c_char], *mut *mut libc::passwd) -> c_int,
) -> io::Result<Option<(String, u32)>> {
    let mut size = 1024;
    loop {
        let mut buf = vec![0 as c_char; size];
        // SAFETY: passwd is plain data for which all zeroes is a valid value.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = lookup(&mut pwd, &mut buf, &mut result);
        if rc == libc::ERANGE && size < 1 << 20 {
            size *= 4;
            continue;
        }
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        if result.is_null() || pwd.pw_name.is_null() {
            return Ok(None);
        }
        // SAFETY: on success pw_name points to a NUL-terminated string inside `buf`,
        // which is still alive here.
        let name = unsafe { CStr::from_ptr(pwd.pw_name) };
        let name = name
            .to_str()
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "user name is not UTF-8"))?;
        return Ok(Some((name.to_string(), pwd.pw_uid)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_uid_zero_both_ways() {
        assert_eq!(user_name(0).unwrap().as_deref(), Some("root"));
        assert_eq!(user_uid("root").unwrap(), Some(0));
        assert_eq!(user_uid("no-such-user-here").unwrap(), None);
        assert_eq!(user_uid("nul\0inside").unwrap(), None);
    }
}
