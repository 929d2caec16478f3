//! The thin layer over libc calls that nix does not wrap. Every `unsafe` block of the
//! crate outside job spawning lives here, each with the reason it holds.

use std::ffi::CStr;
use std::sync::Mutex;

/// `getpwent` walks process-global state; this lock makes the walk exclusive.
static PASSWD_WALK: Mutex<()> = Mutex::new(());

/// The names of all accounts whose primary group is `gid`. Directory services may not
/// enumerate (SSSD's default); then only local accounts are found.
pub fn users_with_primary_gid(gid: u32) -> Vec<String> {
    walk_passwd(|entry| entry.pw_gid == gid)
}

/// The names of all accounts with uid `uid` (more than one: a shared uid).
pub fn users_with_uid(uid: u32) -> Vec<String> {
    walk_passwd(|entry| entry.pw_uid == uid)
}

/// The names of the accounts `wanted` picks, walking the whole user database.
fn walk_passwd(wanted: impl Fn(&libc::passwd) -> bool) -> Vec<String> {
    let _walk = PASSWD_WALK.lock().unwrap_or_else(|e| e.into_inner());
    let mut names = Vec::new();
    // setpwent/getpwent/endpwent touch process-global state, which the lock above
    // serializes within this process; no other code here calls them.
    // SAFETY: see above.
    unsafe { libc::setpwent() };
    loop {
        // SAFETY: see above.
        let entry = unsafe { libc::getpwent() };
        // SAFETY: a non-null entry points at getpwent's static record, valid until the
        // next getpwent call; it is read (the name copied out) before that.
        let Some(entry) = (unsafe { entry.as_ref() }) else {
            break;
        };
        if wanted(entry) && !entry.pw_name.is_null() {
            // SAFETY: a non-null pw_name is a NUL-terminated string in the same record.
            let name = unsafe { CStr::from_ptr(entry.pw_name) };
            names.push(name.to_string_lossy().into_owned());
        }
    }
    // SAFETY: see above.
    unsafe { libc::endpwent() };
    names
}

/// Gives memory that malloc holds but no longer uses back to the system (after a big
/// rule set was replaced, for example).
pub fn trim_heap() {
    // SAFETY: malloc_trim only walks and shrinks glibc's own arenas; it takes their locks
    // and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Caps glibc's malloc arenas at two: with one arena per thread that ever allocated,
/// memory freed after a reload on one blocking thread stays in that thread's arena and
/// RSS climbs reload after reload; two arenas keep it level (the daemon's work is
/// short calls, not allocation-heavy threads).
///
/// And fixes the size from which an allocation gets its own mapping at 128 KiB (glibc's
/// initial value). Left alone, glibc raises it to the size of each big block freed (up
/// to 32 MiB), so that the next rule set's big tables and the rule files' text come
/// from the heap, between small long-lived blocks, and stay in RSS after they are
/// freed: 20 reloads of 100 000 rules left RSS anywhere between 35 and 70 MiB. With
/// the size fixed, a replaced rule set's tables go back to the system when freed.
pub fn limit_malloc_arenas() {
    // SAFETY: mallopt only sets a glibc tunable; called at start, before other threads.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    // SAFETY: as above.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// With RLIMIT_FSIZE reached, writes should fail with EFBIG (and be refused as
/// `AuditUnavailable`) instead of SIGXFSZ killing the daemon.
pub fn ignore_sigxfsz() {
    // SAFETY: installing SIG_IGN runs no handler code, so it cannot violate
    // async-signal-safety; it is done once at start.
    let _ = unsafe {
        nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGXFSZ,
            nix::sys::signal::SigHandler::SigIgn,
        )
    };
}

/// The start time of process `pid` (field 22 of `/proc/PID/stat`, clock ticks after
/// boot): with the pid it names one process for good, as pids are reused.
pub fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

/// `len` bytes from the kernel's CSPRNG (`getrandom(2)`, blocking until it is seeded).
pub fn random_bytes(len: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut filled = 0;
    while filled < len {
        match rustix::rand::getrandom(&mut buf[filled..], rustix::rand::GetRandomFlags::empty()) {
            Ok(n) => filled += n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(err) => return Err(err.into()),
        }
    }
    Ok(buf)
}

/// Sends `state` to the service manager (`sd_notify`), if it asked for notifications.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(socket) = std::os::unix::net::UnixDatagram::unbound() else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    let sent = match bytes.strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(name)
                .and_then(|addr| socket.send_to_addr(state.as_bytes(), &addr))
        }
        None => socket.send_to(state.as_bytes(), std::path::Path::new(&path)),
    };
    if let Err(err) = sent {
        tracing::debug!("sd_notify {state:?}: {err}");
    }
}

/// Whether the service manager watches this process (`WatchdogSec=`).
pub fn watchdog_enabled() -> bool {
    let for_us = std::env::var("WATCHDOG_PID")
        .map(|pid| pid == std::process::id().to_string())
        .unwrap_or(true);
    for_us && std::env::var_os("WATCHDOG_USEC").is_some()
}

/// Writes `path` whole or not at all: a temporary file beside it, synced, renamed over
/// it, and the directory synced.
pub fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    // Its own temporary name, so that writers of the same file never share one.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("{n}.tmp"));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(parent) = path.parent() {
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_is_lower_case_two_digits_a_byte() {
        assert_eq!(super::hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(super::hex(&[]), "");
    }
}
