//! How a job is started as another user, and how it ends.
//!
//! Two backends: under systemd each job is a transient service ([`systemd`]); without
//! it (containers, the tests' private bus) the daemon starts jobs itself.
//!
//! The direct backend forks the daemon: everything the child needs is computed before
//! the fork (supplementary groups from NSS, the environment, C strings), and the child
//! then only makes async-signal-safe system calls: setgroups → setresgid → setresuid
//! (std's `uid()`/`gid()` alone would drop the supplementary groups), a check that the
//! switch took, a new session, `umask 077`, the working directory *after* the switch (so
//! the job cannot start in a directory its user could not enter), and exec. No shell.

pub mod systemd;

use std::ffi::CString;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;

use nix::sys::signal::{SigHandler, Signal, kill, signal};
use nix::sys::stat::{Mode, umask};
use nix::unistd::{
    Gid, Pid, Uid, chdir, getegid, geteuid, getgid, getuid, setgroups, setresgid, setresuid, setsid,
};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// Everything needed to start a job.
#[derive(Debug)]
pub struct JobSpec {
    pub argv: Vec<String>,
    /// The complete environment of the job.
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    pub user: String,
    pub uid: u32,
    pub gid: u32,
    /// Every group of the run-as user, primary included.
    pub gids: Vec<u32>,
    /// Output files, created (root-owned, 0600) before the job starts.
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

/// Where jobs run.
#[derive(Clone)]
pub enum Backend {
    /// Fork and switch identity in the daemon.
    Direct,
    /// Transient units of systemd, with per-user slices.
    Systemd(Arc<systemd::Systemd>, systemd::SliceLimits),
}

impl Backend {
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Direct => "direct",
            Backend::Systemd(..) => "systemd",
        }
    }
}

/// How a job's main process ended, as its backend saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessEnd {
    Exited(i32),
    Signaled(i32),
    Failed(String),
}

impl ProcessEnd {
    fn from_status(status: ExitStatus) -> Self {
        match (status.code(), status.signal()) {
            (Some(code), _) => ProcessEnd::Exited(code),
            (None, Some(signal)) => ProcessEnd::Signaled(signal),
            _ => ProcessEnd::Failed(format!("unexpected wait status {status}")),
        }
    }
}

/// A started job, by backend.
pub enum Started {
    Direct(Running),
    Unit {
        systemd: Arc<systemd::Systemd>,
        name: String,
        watch: Box<systemd::UnitWatch>,
    },
}

/// Kills a started job: its process group (unless its leader has been reaped, after
/// which the group id could belong to somebody else), or its unit's cgroup.
#[derive(Clone)]
pub enum Killer {
    Group(u32, Reaped),
    Unit(Arc<systemd::Systemd>, String),
}

/// Whether a job's leader has been reaped; held while reaping and while killing, so a
/// kill never comes after the reap.
pub type Reaped = Arc<std::sync::Mutex<bool>>;

fn lock(reaped: &Reaped) -> std::sync::MutexGuard<'_, bool> {
    reaped.lock().unwrap_or_else(|e| e.into_inner())
}

impl Killer {
    pub async fn kill(&self) {
        match self {
            Killer::Group(pgid, reaped) => {
                let reaped = lock(reaped);
                if !*reaped {
                    kill_group(*pgid);
                }
            }
            Killer::Unit(systemd, unit) => systemd.kill(unit).await,
        }
    }
}

impl Started {
    pub fn killer(&self) -> Killer {
        match self {
            Started::Direct(running) => Killer::Group(running.pgid, running.reaped.clone()),
            Started::Unit { systemd, name, .. } => Killer::Unit(systemd.clone(), name.clone()),
        }
    }

    /// The process id to remember (direct backend only).
    pub fn pid(&self) -> u32 {
        match self {
            Started::Direct(running) => running.pgid,
            Started::Unit { .. } => 0,
        }
    }

    /// Once the job's end is recorded: lets systemd forget its unit (kept until then,
    /// so that the end survives a daemon restart). Nothing for a direct job.
    pub async fn release(&self) {
        if let Started::Unit { systemd, name, .. } = self {
            systemd.release(name).await;
        }
    }

    /// Waits for the job's main process to end. Under the direct backend whatever it
    /// left behind in its process group is killed with it. Cancel-safe.
    pub async fn wait(&mut self) -> ProcessEnd {
        match self {
            Started::Direct(running) => {
                if let Some(exited) = &running.exited {
                    // Fails only when the runtime shuts down (the job is killed then).
                    let _ = exited.readable().await;
                    // The leader has ended but is not reaped yet, so no other process
                    // can have taken its id as a process group id: kill the group, then
                    // reap, under the lock that other kills take.
                    let mut reaped = lock(&running.reaped);
                    kill_group(running.pgid);
                    match running.child.try_wait() {
                        Ok(Some(status)) => {
                            *reaped = true;
                            return ProcessEnd::from_status(status);
                        }
                        Ok(None) => {}
                        Err(err) => {
                            *reaped = true;
                            return ProcessEnd::Failed(format!("cannot wait for the job: {err}"));
                        }
                    }
                }
                let status = running.child.wait().await;
                let mut reaped = lock(&running.reaped);
                *reaped = true;
                if running.exited.is_none() {
                    // Without a pidfd the group can only be killed after the reap.
                    kill_group(running.pgid);
                }
                match status {
                    Ok(status) => ProcessEnd::from_status(status),
                    Err(err) => ProcessEnd::Failed(format!("cannot wait for the job: {err}")),
                }
            }
            Started::Unit {
                systemd,
                name,
                watch,
            } => loop {
                if let Some(ended) = systemd.ended(name).await {
                    return ended;
                }
                // A change signal, or a second at most: the watch may have missed one.
                let _ =
                    tokio::time::timeout(std::time::Duration::from_secs(1), watch.changed()).await;
            },
        }
    }
}

/// A started job.
pub struct Running {
    pub child: tokio::process::Child,
    /// The job's process group (it leads a new session).
    pub pgid: u32,
    /// A pidfd of the job's main process: readable once it has ended, before it is
    /// reaped. `None` if the kernel has no pidfd_open (before Linux 5.3); the group is
    /// then killed after the reap.
    exited: Option<AsyncFd<OwnedFd>>,
    reaped: Reaped,
}

/// Starts `spec` as its user (direct backend). An `Err` means nothing runs: the
/// identity switch, the working directory or the exec failed, as the job's user.
pub fn spawn(spec: JobSpec) -> io::Result<Running> {
    let (program, args) = spec
        .argv
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty argv"))?;
    let cwd = CString::new(spec.cwd.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in cwd"))?;
    let gids: Vec<Gid> = spec.gids.iter().map(|&g| Gid::from_raw(g)).collect();
    let (uid, gid) = (Uid::from_raw(spec.uid), Gid::from_raw(spec.gid));

    let output = |path: &Path| OpenOptions::new().write(true).open(path);
    let mut command = tokio::process::Command::new(Path::new(program));
    command
        .args(args)
        .env_clear()
        .envs(spec.env)
        .stdin(Stdio::null())
        .stdout(Stdio::from(output(&spec.stdout)?))
        .stderr(Stdio::from(output(&spec.stderr)?))
        .kill_on_drop(false);
    // SAFETY: the closure runs in the forked child before exec. It only makes
    // async-signal-safe system calls (no allocation, no locks: `gids` and `cwd` were
    // built before the fork and are only read), and returns errors, which std reports
    // to the parent as the spawn result.
    unsafe {
        command.pre_exec(move || {
            // The daemon ignores SIGXFSZ; ignored signals stay ignored across exec.
            signal(Signal::SIGXFSZ, SigHandler::SigDfl)?;
            setgroups(&gids)?;
            setresgid(gid, gid, gid)?;
            setresuid(uid, uid, uid)?;
            if getuid() != uid || geteuid() != uid || getgid() != gid || getegid() != gid {
                return Err(io::Error::from_raw_os_error(libc::EPERM));
            }
            setsid()?;
            umask(Mode::from_bits_truncate(0o077));
            chdir(cwd.as_c_str())?;
            Ok(())
        });
    }
    let child = command.spawn()?;
    let pgid = child.id().unwrap_or(0);
    let exited = match pidfd_open(pgid) {
        Ok(fd) => Some(fd),
        Err(err) => {
            tracing::warn!(
                "no pidfd for job process {pgid} ({err}): its group is killed after it is reaped"
            );
            None
        }
    };
    Ok(Running {
        child,
        pgid,
        exited,
        reaped: Reaped::default(),
    })
}

/// A pidfd for our own unreaped child `pid` (close-on-exec, as pidfd_open makes it).
fn pidfd_open(pid: u32) -> io::Result<AsyncFd<OwnedFd>> {
    let pid = libc::pid_t::try_from(pid)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "pid out of range"))?;
    // SAFETY: pidfd_open(2) takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = RawFd::try_from(fd).map_err(|_| io::Error::other("pidfd out of range"))?;
    // SAFETY: `fd` was just returned by the kernel and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: the AsyncFd owns `fd`, which stays open and the same until it is dropped.
    Ok(unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }?)
}

/// Whether a failed spawn was the request's fault (a program or working directory that
/// is not there or not allowed, an argument list too long) rather than the system's.
pub fn is_request_error(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(
            libc::ENOENT
                | libc::EACCES
                | libc::ENOTDIR
                | libc::ENOEXEC
                | libc::E2BIG
                | libc::ELOOP
                | libc::ENAMETOOLONG
                | libc::EISDIR
                | libc::ETXTBSY
        )
    )
}

/// SIGKILL to a job's whole process group. Gone already is fine.
pub fn kill_group(pgid: u32) {
    if pgid > 1 {
        let _ = kill(Pid::from_raw(-(pgid as i32)), Signal::SIGKILL);
    }
}

/// The sizes of a job's output files.
pub fn output_size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}
