//! Starting a job's process inside its cgroup: `clone3(CLONE_INTO_CGROUP | CLONE_PIDFD)`.
//!
//! A process that writes itself into a cgroup (`cgroup.procs`) takes the kernel's cgroup
//! migration lock for writing, which waits for an RCU grace period: measured here, ~16 ms
//! when jobs start now and then (4 ms back to back), most of an `Exec`. A process created
//! in its cgroup takes only the read side. The child then does what `std`'s spawn would
//! (descriptors, signals, identity, directory, exec) with async-signal-safe system calls
//! only, on what was prepared before the clone, and reports a failure through a
//! close-on-exec pipe, as `std` does.
//!
//! `None` from [`spawn`] means the kernel cannot do this (before Linux 5.7): the caller
//! falls back to `std`'s spawn and lets the child move itself.

use std::ffi::{CString, c_char};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::stat::{Mode, umask};
use nix::unistd::{Gid, Uid, chdir, getegid, geteuid, getgid, getuid, setsid};

/// `struct clone_args` of clone3(2), as the kernel defines it (version 2, 88 bytes).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Everything the child needs, made before the clone (the child allocates nothing).
pub struct Prepared {
    program: CString,
    /// Keep the strings `argv` and `envp` point into.
    _strings: Vec<CString>,
    argv: Vec<*const c_char>,
    envp: Vec<*const c_char>,
    cwd: CString,
    gids: Vec<libc::gid_t>,
    uid: Uid,
    gid: Gid,
    /// stdin, stdout, stderr, each at a descriptor ≥ 3 (close-on-exec), so that putting
    /// them in place never overwrites one not yet moved.
    stdio: [OwnedFd; 3],
}

// SAFETY: the raw pointers in `argv` and `envp` point into `_strings`, owned by the same
// value and never changed; nothing else is shared.
unsafe impl Send for Prepared {}

impl Prepared {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        argv: &[String],
        env: &[(String, String)],
        cwd: CString,
        gids: &[Gid],
        uid: Uid,
        gid: Gid,
        stdio: [BorrowedFd<'_>; 3],
    ) -> io::Result<Prepared> {
        let nul = || io::Error::new(io::ErrorKind::InvalidInput, "NUL in an argument");
        let program = CString::new(argv.first().ok_or_else(nul)?.as_str()).map_err(|_| nul())?;
        let mut strings = Vec::with_capacity(argv.len() + env.len());
        for arg in argv {
            strings.push(CString::new(arg.as_str()).map_err(|_| nul())?);
        }
        for (name, value) in env {
            strings.push(CString::new(format!("{name}={value}")).map_err(|_| nul())?);
        }
        let pointers = |from: &[CString]| {
            let mut p: Vec<*const c_char> = from.iter().map(|s| s.as_ptr()).collect();
            p.push(std::ptr::null());
            p
        };
        let argv_p = pointers(&strings[..argv.len()]);
        let envp_p = pointers(&strings[argv.len()..]);
        let stdio = stdio.map(|fd| {
            // Above 2, close-on-exec; the child's dup2 into 0–2 clears the flag there.
            let high = rustix::io::fcntl_dupfd_cloexec(fd, 3);
            high.map_err(io::Error::from)
        });
        let [a, b, c] = stdio;
        Ok(Prepared {
            program,
            _strings: strings,
            argv: argv_p,
            envp: envp_p,
            cwd,
            gids: gids.iter().map(|g| g.as_raw()).collect(),
            uid,
            gid,
            stdio: [a?, b?, c?],
        })
    }
}

/// Starts `prepared` as a new process inside the cgroup `cgroup` (a directory
/// descriptor): its pid and pidfd once it has exec'd, the exec's (or an identity switch's)
/// error if it could not, `Ok(None)` if this kernel cannot clone into a cgroup.
pub fn spawn(prepared: &Prepared, cgroup: BorrowedFd<'_>) -> io::Result<Option<(u32, OwnedFd)>> {
    let (report_read, report_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let mut pidfd: RawFd = -1;
    let mut args = CloneArgs {
        flags: libc::CLONE_PIDFD as u64 | CLONE_INTO_CGROUP,
        pidfd: std::ptr::addr_of_mut!(pidfd) as u64,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cgroup.as_raw_fd() as u64,
        ..CloneArgs::default()
    };
    // SAFETY: clone3 without CLONE_VM is a fork: the child gets a copy of this address
    // space and returns 0 here; it then runs only `child`, which makes async-signal-safe
    // system calls on `prepared` (read-only) and never returns. `args` outlives the call.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            std::ptr::addr_of_mut!(args),
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if pid == 0 {
        child(prepared, report_write.as_raw_fd());
    }
    if pid < 0 {
        let err = io::Error::last_os_error();
        return match err.raw_os_error() {
            // No clone3, or no CLONE_INTO_CGROUP, or a sandbox (seccomp) that refuses
            // clone3 with EPERM (a cgroup the daemon may not use is EACCES): the
            // caller's fallback.
            Some(libc::ENOSYS | libc::E2BIG | libc::EINVAL | libc::EPERM) => Ok(None),
            _ => Err(err),
        };
    }
    drop(report_write);
    // SAFETY: the kernel stored a new pidfd (CLONE_PIDFD, close-on-exec) in `pidfd`; it is
    // ours alone.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    // EOF: the exec closed the pipe. Four bytes: the errno of the step that failed.
    let mut report = [0u8; 4];
    let mut got = 0;
    while got < report.len() {
        match nix::unistd::read(&report_read, &mut report[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(err) => {
                // Cannot tell whether it exec'd: it must not run unrecorded.
                kill_and_reap(&pidfd, pid as u32);
                return Err(err.into());
            }
        }
    }
    if got == 0 {
        return Ok(Some((pid as u32, pidfd)));
    }
    // The child has _exit'ed or is about to: reap it, so that it is not left a zombie.
    reap(&pidfd);
    Err(io::Error::from_raw_os_error(i32::from_ne_bytes(report)))
}

/// Waits for the process of `pidfd` (our child) to end and reaps it.
fn reap(pidfd: &OwnedFd) {
    let _ = rustix::process::waitid(
        rustix::process::WaitId::PidFd(std::os::fd::AsFd::as_fd(pidfd)),
        rustix::process::WaitIdOptions::EXITED,
    );
}

/// SIGKILL to our child `pid` (not yet reaped, so the pid is still its own), then
/// reaps it.
pub fn kill_and_reap(pidfd: &OwnedFd, pid: u32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    reap(pidfd);
}

/// The child: becomes the job, or reports why not and exits.
fn child(p: &Prepared, report: RawFd) -> ! {
    let errno = match become_job(p) {
        Ok(never) => match never {},
        Err(err) => err.raw_os_error().unwrap_or(libc::EINVAL),
    };
    let bytes = errno.to_ne_bytes();
    // SAFETY: write(2) of a 4-byte stack buffer to the report pipe, then _exit(2): both
    // async-signal-safe; nothing of the copied address space is unwound or freed.
    unsafe {
        libc::write(report, bytes.as_ptr().cast(), bytes.len());
    }
    // SAFETY: see above.
    unsafe { libc::_exit(127) }
}

/// What `std`'s spawn and the job's identity switch do, in the child. Async-signal-safe:
/// no allocation, no locks (nix's wrappers here only call the system).
fn become_job(p: &Prepared) -> io::Result<std::convert::Infallible> {
    // The daemon blocks nothing, but a clone from a thread that did would pass it on.
    let mut none = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initializes the set it is given.
    unsafe { libc::sigemptyset(none.as_mut_ptr()) };
    // SAFETY: `none` was initialized just above.
    let none = unsafe { none.assume_init() };
    // SAFETY: sigprocmask with a valid set and no old set.
    if unsafe { libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // The daemon ignores SIGPIPE (as Rust programs do) and SIGXFSZ; ignored signals stay
    // ignored across exec.
    for signal in [libc::SIGPIPE, libc::SIGXFSZ] {
        // SAFETY: restores the default disposition; no handler is installed.
        unsafe { libc::signal(signal, libc::SIG_DFL) };
    }
    for (fd, target) in p.stdio.iter().zip(0..) {
        // SAFETY: dup2 of a descriptor we own onto 0, 1 or 2.
        if unsafe { libc::dup2(fd.as_raw_fd(), target) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    super::close_on_exec_from(3)?;
    // The system calls themselves, not glibc's wrappers: those change the ids of every
    // thread glibc knows of, and in this child (not made by glibc's fork) it still
    // believes the daemon's threads are here, and would wait for them forever.
    let (uid, gid) = (p.uid.as_raw(), p.gid.as_raw());
    // SAFETY: setgroups(2) reads `gids.len()` gid_t values from `gids`.
    check(unsafe { libc::syscall(libc::SYS_setgroups, p.gids.len(), p.gids.as_ptr()) })?;
    // SAFETY: setresgid(2) with plain ids.
    check(unsafe { libc::syscall(libc::SYS_setresgid, gid, gid, gid) })?;
    // SAFETY: setresuid(2) with plain ids.
    check(unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, uid) })?;
    if getuid() != p.uid || geteuid() != p.uid || getgid() != p.gid || getegid() != p.gid {
        return Err(io::Error::from_raw_os_error(libc::EPERM));
    }
    setsid()?;
    umask(Mode::from_bits_truncate(0o077));
    chdir(p.cwd.as_c_str())?;
    // SAFETY: `program`, `argv` and `envp` are NUL-terminated strings and null-terminated
    // pointer arrays that live in `p`.
    unsafe { libc::execve(p.program.as_ptr(), p.argv.as_ptr(), p.envp.as_ptr()) };
    Err(io::Error::last_os_error())
}

/// A raw system call's result: -1 is the errno.
fn check(ret: libc::c_long) -> io::Result<()> {
    if ret == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
