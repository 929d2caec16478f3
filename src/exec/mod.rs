//! How a job is started as another user, and how it ends.
//!
//! Two backends: under systemd each job is a transient service ([`systemd`]); without
//! it (containers, the tests' private bus) the daemon starts jobs itself. Whoever opens
//! the authority may also bring a [`Runner`] of its own (the in-process tests do).
//!
//! The direct backend forks the daemon: everything the child needs is computed before
//! the fork (supplementary groups from NSS, the environment, C strings, the job's
//! cgroup), and the child then only makes async-signal-safe system calls: it enters its
//! cgroup ([`contain`]), marks every descriptor above 2 close-on-exec, then setgroups →
//! setresgid → setresuid (std's `uid()`/`gid()` alone would drop the supplementary
//! groups), a check that the switch took, a new session, `umask 077`, the working
//! directory *after* the switch (so the job cannot start in a directory its user could
//! not enter), and exec. No shell. Whatever the job started is killed at its end, before
//! the end is recorded.

mod clone;
pub mod contain;
pub mod systemd;

use std::ffi::CString;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::signal::{SigHandler, Signal, kill, signal};
use nix::sys::stat::{Mode, umask};
use nix::unistd::{
    Gid, Pid, Uid, chdir, getegid, geteuid, getgid, getuid, setgroups, setresgid, setresuid, setsid,
};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use contain::{Cgroup, Containment};

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
    /// The caller's stdin, passed on (None: /dev/null).
    pub stdin: Option<OwnedFd>,
}

/// Where jobs run.
#[derive(Clone)]
pub enum Backend {
    /// Fork and switch identity in the daemon, each job contained as chosen at start.
    Direct(Arc<Containment>),
    /// Transient units of systemd, with per-user slices.
    Systemd(Arc<systemd::Systemd>, systemd::SliceLimits),
    /// A runner given by whoever opened the authority (never chosen by the daemon).
    Runner(Arc<dyn Runner>),
}

/// A future a [`Runner`] returns.
pub type RunnerFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// A job runner besides the two built in, which knows its jobs by their ids. The
/// authority records, supervises and ends them as any other job.
pub trait Runner: Send + Sync + 'static {
    /// What the logs call it.
    fn name(&self) -> &'static str;
    /// Starts `spec` as job `id`; `Ok` once it runs. Errors are read as [`spawn`]'s:
    /// [`is_request_error`] says whether the request was at fault.
    fn start<'a>(&'a self, id: &'a str, spec: JobSpec) -> RunnerFuture<'a, io::Result<()>>;
    /// Completes when job `id` has ended, and how. Cancel-safe.
    fn wait<'a>(&'a self, id: &'a str) -> RunnerFuture<'a, ProcessEnd>;
    /// Sends `signal` (SIGTERM or SIGKILL) to everything of job `id`; gone is fine.
    fn signal<'a>(&'a self, id: &'a str, signal: Signal) -> RunnerFuture<'a, ()>;
}

impl Backend {
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Direct(_) => "direct",
            Backend::Systemd(..) => "systemd",
            Backend::Runner(runner) => runner.name(),
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

    fn from_waitid(status: rustix::process::WaitIdStatus) -> Self {
        match (status.exit_status(), status.terminating_signal()) {
            (Some(code), _) if status.exited() => ProcessEnd::Exited(code),
            (_, Some(signal)) => ProcessEnd::Signaled(signal),
            _ => ProcessEnd::Failed("unexpected wait status".into()),
        }
    }
}

/// A started job, by backend.
pub enum Started {
    Direct(Box<Running>),
    Unit {
        systemd: Arc<systemd::Systemd>,
        name: String,
        watch: Box<systemd::UnitWatch>,
    },
    Runner {
        runner: Arc<dyn Runner>,
        id: String,
    },
}

/// Kills a started job: all of it, by its cgroup (direct backend with cgroups, or its
/// unit's), or by its process group (unless its leader has been reaped, after which the
/// group id could belong to somebody else), session and adopted orphans.
#[derive(Clone)]
pub enum Killer {
    Direct(DirectJob),
    Unit(Arc<systemd::Systemd>, String),
    Runner(Arc<dyn Runner>, String),
}

/// What it takes to kill a job of the direct backend.
#[derive(Clone)]
pub struct DirectJob {
    /// The leader's pid: its process group and session.
    pgid: u32,
    uid: u32,
    reaped: Reaped,
    cgroup: Option<Cgroup>,
    containment: Arc<Containment>,
}

impl DirectJob {
    fn new(pgid: u32, uid: u32, cgroup: Option<Cgroup>, containment: &Arc<Containment>) -> Self {
        DirectJob {
            pgid,
            uid,
            reaped: Reaped::default(),
            cgroup,
            containment: containment.clone(),
        }
    }

    /// SIGTERM to the job's cgroup, or to its process group while the leader is unreaped
    /// (orphans outside it get the SIGKILL of the end).
    fn terminate(&self) {
        if let Some(cgroup) = &self.cgroup {
            cgroup.signal(Signal::SIGTERM);
            return;
        }
        if !*lock(&self.reaped) {
            signal_group(self.pgid, Signal::SIGTERM);
        }
    }

    /// Kills everything of the job (the leader too, if it has not been reaped yet).
    async fn kill(&self) {
        if let Some(cgroup) = &self.cgroup {
            cgroup.kill();
            return;
        }
        {
            let reaped = lock(&self.reaped);
            if !*reaped {
                kill_group(self.pgid);
            }
        }
        let job = self.clone();
        let _ = tokio::task::spawn_blocking(move || {
            job.containment.sweep(job.pgid, job.uid, Some(job.pgid))
        })
        .await;
    }
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
            Killer::Direct(job) => job.kill().await,
            Killer::Unit(systemd, unit) => systemd.kill(unit).await,
            Killer::Runner(runner, id) => runner.signal(id, Signal::SIGKILL).await,
        }
    }

    /// SIGTERM to every process of the job, as `kill` reaches them.
    pub async fn terminate(&self) {
        match self {
            Killer::Direct(job) => job.terminate(),
            Killer::Unit(systemd, unit) => systemd.signal(unit, Signal::SIGTERM).await,
            Killer::Runner(runner, id) => runner.signal(id, Signal::SIGTERM).await,
        }
    }
}

impl Started {
    pub fn killer(&self) -> Killer {
        match self {
            Started::Direct(running) => Killer::Direct(running.job.clone()),
            Started::Unit { systemd, name, .. } => Killer::Unit(systemd.clone(), name.clone()),
            Started::Runner { runner, id } => Killer::Runner(runner.clone(), id.clone()),
        }
    }

    /// The process id to remember (direct backend only).
    pub fn pid(&self) -> u32 {
        match self {
            Started::Direct(running) => running.job.pgid,
            Started::Unit { .. } | Started::Runner { .. } => 0,
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
    /// left behind is killed with it, and this returns only once all of it is gone.
    /// Cancel-safe.
    pub async fn wait(&mut self) -> ProcessEnd {
        match self {
            Started::Direct(running) => {
                let job = running.job.clone();
                if let Some(exited) = &running.exited {
                    // Fails only when the runtime shuts down (the job is killed then).
                    let _ = exited.readable().await;
                    // The leader has ended but is not reaped yet, so no other process
                    // can have taken its id as a process group id: kill the rest, then
                    // reap, under the lock that other kills take.
                    job.kill().await;
                    if let Some(cgroup) = &job.cgroup {
                        cgroup.empty().await;
                    }
                    let mut reaped = lock(&job.reaped);
                    match running.try_reap() {
                        Ok(Some(end)) => {
                            *reaped = true;
                            drop(reaped);
                            running.reaped();
                            return end;
                        }
                        Ok(None) => {}
                        Err(err) => {
                            *reaped = true;
                            drop(reaped);
                            running.reaped();
                            return ProcessEnd::Failed(format!("cannot wait for the job: {err}"));
                        }
                    }
                }
                let end = running.reap().await;
                *lock(&job.reaped) = true;
                // Without a pidfd the group can only be killed after the reap.
                job.kill().await;
                if let Some(cgroup) = &job.cgroup {
                    cgroup.empty().await;
                }
                running.reaped();
                end.unwrap_or_else(|err| {
                    ProcessEnd::Failed(format!("cannot wait for the job: {err}"))
                })
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
            Started::Runner { runner, id } => runner.wait(id).await,
        }
    }
}

/// A started job.
pub struct Running {
    leader: Leader,
    /// Its leader (which leads a new session), cgroup and containment.
    job: DirectJob,
    /// A pidfd of the job's main process: readable once it has ended, before it is
    /// reaped. `None` if the kernel has no pidfd_open (before Linux 5.3); the group is
    /// then killed after the reap.
    exited: Option<AsyncFd<OwnedFd>>,
}

/// How a job's leader was started, which says how it is reaped.
enum Leader {
    /// By `std`'s spawn: the runtime reaps it.
    Child(tokio::process::Child),
    /// By [`clone::spawn`], into its cgroup: reaped through its pidfd (`exited`).
    Cloned,
}

impl Drop for Running {
    /// A cloned leader dropped before it was waited for (a start whose record failed)
    /// is killed with everything of its job and reaped: nothing else would reap it.
    fn drop(&mut self) {
        if !matches!(self.leader, Leader::Cloned) {
            return;
        }
        let mut reaped = lock(&self.job.reaped);
        if *reaped {
            return;
        }
        if let Some(cgroup) = &self.job.cgroup {
            cgroup.kill();
        }
        let _ = nix::sys::wait::waitpid(Pid::from_raw(self.job.pgid as i32), None);
        *reaped = true;
    }
}

impl Running {
    /// The leader's end if it has ended (then it is reaped), without waiting.
    fn try_reap(&mut self) -> io::Result<Option<ProcessEnd>> {
        match &mut self.leader {
            Leader::Child(child) => Ok(child.try_wait()?.map(ProcessEnd::from_status)),
            Leader::Cloned => {
                let Some(exited) = &self.exited else {
                    return Err(io::Error::other("a cloned job without its pidfd"));
                };
                let status = rustix::process::waitid(
                    rustix::process::WaitId::PidFd(exited.get_ref().as_fd()),
                    rustix::process::WaitIdOptions::EXITED | rustix::process::WaitIdOptions::NOHANG,
                )?;
                Ok(status.map(ProcessEnd::from_waitid))
            }
        }
    }

    /// Waits for the leader's end and reaps it.
    async fn reap(&mut self) -> io::Result<ProcessEnd> {
        if let Leader::Child(child) = &mut self.leader {
            return child.wait().await.map(ProcessEnd::from_status);
        }
        loop {
            if let Some(end) = self.try_reap()? {
                return Ok(end);
            }
            let Some(exited) = &self.exited else {
                return Err(io::Error::other("a cloned job without its pidfd"));
            };
            exited.readable().await?.clear_ready();
        }
    }

    /// After the leader was reaped and everything of the job is gone: forgets the
    /// leader (subreaper containment), removes the job's cgroup.
    fn reaped(&self) {
        if let Some(mut leaders) = self.job.containment.leaders() {
            leaders.remove(&self.job.pgid);
        }
        if let Some(cgroup) = &self.job.cgroup {
            cgroup.remove();
        }
    }
}

/// Whether processes can be started in their cgroup (until the kernel says no).
static CLONE_INTO_CGROUP: AtomicBool = AtomicBool::new(true);

/// Starts `spec` as its user (direct backend) as job `id`, contained by `containment`.
/// An `Err` means nothing runs: the job's cgroup could not be made, or the identity
/// switch, the working directory or the exec failed, as the job's user.
pub fn spawn(spec: JobSpec, id: &str, containment: &Arc<Containment>) -> io::Result<Running> {
    let (program, args) = spec
        .argv
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty argv"))?;
    let cwd = CString::new(spec.cwd.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in cwd"))?;
    let gids: Vec<Gid> = spec.gids.iter().map(|&g| Gid::from_raw(g)).collect();
    let (uid, gid) = (Uid::from_raw(spec.uid), Gid::from_raw(spec.gid));

    let output = |path: &Path| OpenOptions::new().write(true).open(path);
    // Everything that can fail before the cgroup exists, so that a failure leaves none.
    let (stdout, stderr) = (output(&spec.stdout)?, output(&spec.stderr)?);
    let null = std::fs::File::open("/dev/null")?;
    let job_cgroup = containment
        .create(id)
        .map_err(|e| io::Error::other(format!("cannot create the job's cgroup: {e}")))?;
    if let Some(cgroup) = &job_cgroup
        && CLONE_INTO_CGROUP.load(Ordering::Relaxed)
    {
        let stdin = spec.stdin.as_ref().map_or(null.as_fd(), |fd| fd.as_fd());
        let stdio = [stdin, stdout.as_fd(), stderr.as_fd()];
        let prepared =
            clone::Prepared::new(&spec.argv, &spec.env, cwd.clone(), &gids, uid, gid, stdio)
                .inspect_err(|_| cgroup.cgroup().remove())?;
        if let Some(running) = spawn_in_cgroup(&prepared, spec.uid, cgroup, containment)? {
            return Ok(running);
        }
    }
    let mut command = tokio::process::Command::new(Path::new(program));
    command
        .args(args)
        .env_clear()
        .envs(spec.env)
        .stdin(spec.stdin.map_or_else(|| Stdio::from(null), Stdio::from))
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(stderr))
        .kill_on_drop(false);
    let procs = job_cgroup.as_ref().map(|c| c.procs().as_raw_fd());
    // Runs in the forked child before exec. It only makes async-signal-safe system
    // calls (no allocation, no locks: `gids`, `cwd` and the cgroup's descriptor were made
    // before the fork and are only read), and returns errors, which std reports to the
    // parent as the spawn result.
    let in_child = move || {
        // Into the job's cgroup first ("0": the writing process), while still root.
        if let Some(procs) = procs {
            // SAFETY: write(2) of a 1-byte static buffer to a descriptor we own.
            if unsafe { libc::write(procs, b"0".as_ptr().cast(), 1) } != 1 {
                return Err(io::Error::last_os_error());
            }
        }
        close_on_exec_from(3)?;
        // The daemon ignores SIGXFSZ; ignored signals stay ignored across exec.
        // SAFETY: restores the default disposition; no handler is installed.
        unsafe { signal(Signal::SIGXFSZ, SigHandler::SigDfl) }?;
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
    };
    // SAFETY: `in_child` is async-signal-safe, as said above.
    unsafe { command.pre_exec(in_child) };
    // Registered before any sweep can see the new child (subreaper containment).
    let mut leaders = containment.leaders();
    let child = match command.spawn() {
        Ok(child) => child,
        Err(err) => {
            // The child, if it got that far, has been reaped: the cgroup is empty.
            if let Some(cgroup) = &job_cgroup {
                cgroup.cgroup().remove();
            }
            return Err(err);
        }
    };
    let pgid = child.id().unwrap_or(0);
    if let Some(leaders) = leaders.as_mut() {
        leaders.insert(pgid);
    }
    drop(leaders);
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
        leader: Leader::Child(child),
        job: DirectJob::new(pgid, spec.uid, job_cgroup.map(|c| c.cgroup()), containment),
        exited,
    })
}

/// [`clone::spawn`] of `prepared` in `cgroup`, as job leader `uid` runs it; `None` if
/// this kernel cannot (said once: from then on the caller's fallback is used). An `Err`
/// leaves no process and no cgroup behind.
fn spawn_in_cgroup(
    prepared: &clone::Prepared,
    uid: u32,
    cgroup: &contain::JobCgroup,
    containment: &Arc<Containment>,
) -> io::Result<Option<Running>> {
    let (pgid, pidfd) = match clone::spawn(prepared, cgroup.dir().as_fd()) {
        Ok(Some(started)) => started,
        Ok(None) => {
            tracing::info!(
                "this kernel cannot start a process in a cgroup (clone3 CLONE_INTO_CGROUP): \
                 jobs move into theirs, which is slower"
            );
            CLONE_INTO_CGROUP.store(false, Ordering::Relaxed);
            return Ok(None);
        }
        Err(err) => {
            cgroup.cgroup().remove();
            return Err(err);
        }
    };
    // SAFETY: the AsyncFd owns `pidfd`, open and the same until dropped.
    match unsafe { AsyncFd::register_with_interest(pidfd, Interest::READABLE) } {
        Ok(exited) => Ok(Some(Running {
            leader: Leader::Cloned,
            job: DirectJob::new(pgid, uid, Some(cgroup.cgroup()), containment),
            exited: Some(exited),
        })),
        Err(err) => {
            let cgroup = cgroup.cgroup();
            cgroup.kill();
            let _ = nix::sys::wait::waitpid(Pid::from_raw(pgid as i32), None);
            cgroup.remove();
            Err(err.into())
        }
    }
}

/// Marks every descriptor from `first` on close-on-exec, so that a job inherits none
/// but its stdin, stdout and stderr (whatever the daemon itself inherited included).
/// Close-on-exec rather than closed: std reports a failed exec through a descriptor of
/// its own. Async-signal-safe (for `pre_exec`).
fn close_on_exec_from(first: u32) -> io::Result<()> {
    // SAFETY: close_range(2) only changes flags of this process's descriptors.
    let done = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if done == 0 {
        return Ok(());
    }
    // Before Linux 5.11: each descriptor up to the limit.
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into `limit`, a valid rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let last = RawFd::try_from(limit.rlim_cur.min(1 << 20)).unwrap_or(1 << 20);
    for fd in first as RawFd..last {
        // SAFETY: fcntl on a descriptor number that may not be open fails with EBADF,
        // which is fine; an open one only gets its close-on-exec flag.
        unsafe {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        }
    }
    Ok(())
}

/// A pidfd for our own unreaped child `pid` (close-on-exec, as pidfd_open makes it).
fn pidfd_open(pid: u32) -> io::Result<AsyncFd<OwnedFd>> {
    let pid = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "pid out of range"))?;
    let fd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())?;
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
    signal_group(pgid, Signal::SIGKILL);
}

/// `signal` to a job's whole process group. Gone already is fine.
fn signal_group(pgid: u32, signal: Signal) {
    if pgid > 1 {
        let _ = kill(Pid::from_raw(-(pgid as i32)), signal);
    }
}

/// The sizes of a job's output files.
pub fn output_size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}
