//! How the direct backend keeps a job inside its bounds: nothing a job starts outlives
//! the job's end, so its output cap, `timeout_secs` and `max_jobs_per_user` hold for
//! everything it started, and its output files are written by nobody after the end is
//! recorded.
//!
//! - **cgroup v2**, where the daemon can write below its own cgroup: each job runs in
//!   `<daemon's cgroup>/proxyuserd.jobs/<job id>`, which the child enters before its
//!   identity switch. The job's user cannot leave it (moving a process needs write access
//!   to root-owned `cgroup.procs` files) nor create cgroups in it. At the end, and on
//!   cancel, timeout or cap, the whole cgroup is killed (`cgroup.kill`, or each process
//!   of a frozen cgroup before Linux 5.14); the end is recorded only once it is empty.
//!   Named by job id, a crash's leftovers are found without a stored pid.
//! - **child subreaper** otherwise: the daemon adopts every orphan of its jobs. At a
//!   job's end it kills the job's process group and session, and every adopted orphan of
//!   the job's user, round after round until none is left, reaping them.

use std::collections::HashSet;
use std::fs::{self, OpenOptions};
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;

/// How the direct backend contains jobs (`exec.containment`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainmentChoice {
    /// A cgroup v2 per job where the daemon can create one, else `subreaper`.
    Auto,
    /// A cgroup v2 per job; the daemon does not start without a writable cgroup v2.
    Cgroup,
    /// The daemon as child subreaper kills every process a job leaves.
    Subreaper,
}

/// `exec.containment = "cgroup"` on a host that gives the daemon no cgroup v2 subtree.
#[derive(Debug, thiserror::Error)]
#[error("exec.containment = \"cgroup\" but there is no writable cgroup v2: {0}")]
pub struct NoCgroup(pub std::io::Error);

/// The directory below the daemon's cgroup that holds one cgroup per job.
const JOBS_CGROUP: &str = "proxyuserd.jobs";

/// How often an emptying cgroup, or a sweep, looks again.
const POLL: Duration = Duration::from_millis(10);

/// How the direct backend contains jobs; chosen once at start.
pub enum Containment {
    /// A cgroup per job below `base`.
    Cgroup { base: PathBuf },
    /// The daemon is the child subreaper (`why`: there is no cgroup); the pids of job
    /// leaders (they are reaped by the runtime, never by a sweep).
    Subreaper {
        why: String,
        leaders: Mutex<HashSet<u32>>,
    },
}

impl Containment {
    /// A cgroup v2 subtree if the daemon can create one below its own cgroup, else
    /// (or if `choice` says so) the daemon becomes the child subreaper. Says which,
    /// once, in the log. An error if `choice` asks for cgroups and there are none.
    pub fn choose(choice: ContainmentChoice) -> Result<Containment, NoCgroup> {
        if choice == ContainmentChoice::Subreaper {
            return Ok(Self::subreaper("exec.containment = \"subreaper\""));
        }
        match cgroup_base().and_then(|base| {
            fs::create_dir_all(&base)?;
            // A test cgroup: creating and removing one is all a job needs of the tree.
            let probe = base.join(format!("probe-{}", std::process::id()));
            fs::create_dir(&probe)?;
            fs::remove_dir(&probe)?;
            Ok(base)
        }) {
            Ok(base) => Ok(Containment::Cgroup { base }),
            Err(err) if choice == ContainmentChoice::Cgroup => Err(NoCgroup(err)),
            Err(err) => Ok(Self::subreaper(&format!("no writable cgroup v2 ({err})"))),
        }
    }

    /// The daemon as child subreaper (`why`: the reason there is no cgroup).
    pub fn subreaper(why: &str) -> Containment {
        if let Err(err) = nix::sys::prctl::set_child_subreaper(true) {
            tracing::error!(
                "{why}, and cannot become child subreaper ({err}): processes a job \
                 detaches from its session can outlive it"
            );
        }
        Containment::Subreaper {
            why: why.to_string(),
            leaders: Mutex::default(),
        }
    }

    /// How, for the log.
    pub fn describe(&self) -> String {
        match self {
            Containment::Cgroup { base } => format!("a cgroup each below {}", base.display()),
            Containment::Subreaper { why, .. } => format!(
                "the daemon as child subreaper ({why}; a job that leaves its session and \
                 outlives a crash of the daemon is not found after it)"
            ),
        }
    }

    /// The cgroup of job `id`, created empty (cgroup containment only).
    pub fn create(&self, id: &str) -> io::Result<Option<JobCgroup>> {
        let Containment::Cgroup { base } = self else {
            return Ok(None);
        };
        let dir = base.join(id);
        fs::create_dir(&dir)?;
        let procs = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(dir.join("cgroup.procs"));
        let dir_fd = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_CLOEXEC | libc::O_DIRECTORY)
            .open(&dir);
        match procs.and_then(|procs| Ok((procs, dir_fd?))) {
            Ok((procs, dir_fd)) => Ok(Some(JobCgroup {
                dir,
                dir_fd: dir_fd.into(),
                procs: procs.into(),
            })),
            Err(err) => {
                let _ = fs::remove_dir(&dir);
                Err(err)
            }
        }
    }

    /// The job leaders' registry (subreaper containment), locked: hold it from before a
    /// job's fork until its pid is registered, so no sweep takes the new child for an
    /// orphan.
    pub fn leaders(&self) -> Option<MutexGuard<'_, HashSet<u32>>> {
        match self {
            Containment::Subreaper { leaders, .. } => {
                Some(leaders.lock().unwrap_or_else(|e| e.into_inner()))
            }
            Containment::Cgroup { .. } => None,
        }
    }

    /// Kills what is left of job `id` whose leader was `pid` (its session) running as
    /// `uid`, and waits until it is gone (blocking; at start, before any job runs).
    pub fn kill_leftovers(&self, id: &str, pid: u32, uid: u32) {
        match self {
            Containment::Cgroup { base } => {
                let cgroup = Cgroup(base.join(id));
                if cgroup.0.exists() {
                    loop {
                        cgroup.kill();
                        if !cgroup.populated() {
                            break;
                        }
                        std::thread::sleep(POLL);
                    }
                    cgroup.remove();
                }
            }
            Containment::Subreaper { .. } => {
                if pid > 1 {
                    self.sweep(pid, uid, None);
                }
            }
        }
    }

    /// The ids of the job cgroups that exist (cgroup containment; at start all are
    /// leftovers of jobs of this or another daemon).
    pub fn leftovers(&self) -> Vec<String> {
        let Containment::Cgroup { base } = self else {
            return Vec::new();
        };
        let Ok(entries) = fs::read_dir(base) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .collect()
    }

    /// Subreaper containment: kills, round after round, every process of session `sid`
    /// and every adopted orphan running as `uid` (job leaders aside: `leader` is killed
    /// with its group by the caller), and reaps the adopted ones, until none is left.
    /// Blocking, but short: SIGKILLed processes die at once.
    pub fn sweep(&self, sid: u32, uid: u32, leader: Option<u32>) {
        let Containment::Subreaper { leaders, .. } = self else {
            return;
        };
        let me = std::process::id();
        for _ in 0..1000 {
            let mut found = false;
            {
                let leaders = leaders.lock().unwrap_or_else(|e| e.into_inner());
                for process in processes() {
                    if leaders.contains(&process.pid) || Some(process.pid) == leader {
                        continue;
                    }
                    let adopted = process.ppid == me;
                    let ours = process.session == sid || (adopted && process.uid == uid);
                    if ours && !process.zombie {
                        let _ = kill(Pid::from_raw(process.pid as i32), Signal::SIGKILL);
                        found = true;
                    }
                    if adopted && process.zombie {
                        let _ = waitpid(
                            Pid::from_raw(process.pid as i32),
                            Some(WaitPidFlag::WNOHANG),
                        );
                    }
                }
            }
            if !found {
                return;
            }
            std::thread::sleep(POLL);
        }
        tracing::error!("processes of session {sid} (uid {uid}) do not die");
    }

    /// Subreaper containment: reaps adopted orphans that have ended (not job leaders).
    pub fn reap_orphans(&self) {
        let Containment::Subreaper { leaders, .. } = self else {
            return;
        };
        let me = std::process::id();
        let leaders = leaders.lock().unwrap_or_else(|e| e.into_inner());
        for process in processes() {
            if process.ppid == me && process.zombie && !leaders.contains(&process.pid) {
                let _ = waitpid(
                    Pid::from_raw(process.pid as i32),
                    Some(WaitPidFlag::WNOHANG),
                );
            }
        }
    }
}

/// The cgroup of one job: created before the fork, entered by the child, killed and
/// removed at the job's end.
pub struct JobCgroup {
    dir: PathBuf,
    /// The directory, open, for a process to be started in it (close-on-exec).
    dir_fd: OwnedFd,
    /// Its `cgroup.procs`, open for the child to write itself into (close-on-exec).
    procs: OwnedFd,
}

impl JobCgroup {
    pub fn procs(&self) -> &OwnedFd {
        &self.procs
    }

    pub fn dir(&self) -> &OwnedFd {
        &self.dir_fd
    }

    pub fn cgroup(&self) -> Cgroup {
        Cgroup(self.dir.clone())
    }
}

/// A job's cgroup directory.
#[derive(Clone)]
pub struct Cgroup(PathBuf);

impl Cgroup {
    /// SIGKILL to every process in it. Gone already is fine.
    pub fn kill(&self) {
        if fs::write(self.0.join("cgroup.kill"), "1").is_ok() {
            return;
        }
        // Before Linux 5.14: freeze, so nothing forks while the pids are read, kill each
        // (a frozen process dies of SIGKILL) and thaw; callers repeat until it is empty.
        let frozen = fs::write(self.0.join("cgroup.freeze"), "1").is_ok();
        for pid in read(&self.0.join("cgroup.procs")).lines() {
            if let Ok(pid) = pid.parse() {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        if frozen {
            let _ = fs::write(self.0.join("cgroup.freeze"), "0");
        }
    }

    /// `signal` to every process in it now (a polite signal: no freeze needed).
    pub fn signal(&self, signal: Signal) {
        for pid in read(&self.0.join("cgroup.procs")).lines() {
            if let Ok(pid) = pid.parse() {
                let _ = kill(Pid::from_raw(pid), signal);
            }
        }
    }

    /// Whether a process (not a zombie) is still in it; `false` once it is gone.
    pub fn populated(&self) -> bool {
        read(&self.0.join("cgroup.events"))
            .lines()
            .any(|l| l == "populated 1")
    }

    /// Kills everything in it and completes once it is empty.
    pub async fn empty(&self) {
        let mut waited = Duration::ZERO;
        loop {
            self.kill();
            if !self.populated() {
                return;
            }
            tokio::time::sleep(POLL).await;
            waited += POLL;
            if waited == Duration::from_secs(10) {
                tracing::warn!(
                    "{} still has processes 10 s after SIGKILL",
                    self.0.display()
                );
            }
        }
    }

    /// Removes it (empty); a failure is logged, and it is retried at the next start.
    pub fn remove(&self) {
        if let Err(err) = fs::remove_dir(&self.0)
            && err.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!("cannot remove {}: {err}", self.0.display());
        }
    }
}

/// The whole of a small kernel file, "" if it cannot be read.
fn read(path: &Path) -> String {
    let mut text = String::new();
    if let Ok(mut file) = fs::File::open(path) {
        let _ = file.read_to_string(&mut text);
    }
    text
}

/// `<cgroup2 mount><the daemon's cgroup>/proxyuserd.jobs`.
fn cgroup_base() -> io::Result<PathBuf> {
    let mount = cgroup2_mount(&fs::read_to_string("/proc/self/mountinfo")?)
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no cgroup2 file system"))?;
    let own = fs::read_to_string("/proc/self/cgroup")?
        .lines()
        .find_map(|l| l.strip_prefix("0::").map(str::to_string))
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no cgroup v2 membership"))?;
    let own = own.trim_start_matches('/');
    if own.contains("..") || own.ends_with(" (deleted)") {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unusable own cgroup {own:?}"),
        ));
    }
    Ok(mount.join(own).join(JOBS_CGROUP))
}

/// The mount point of the (first) cgroup2 file system in a mountinfo text.
fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (mount, fstype) = line.split_once(" - ")?;
        if fstype.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        // Field 5 is the mount point, with spaces etc. as octal escapes.
        let point = mount.split_whitespace().nth(4)?;
        Some(PathBuf::from(unescape_octal(point)))
    })
}

fn unescape_octal(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && let Some(digits) = bytes.get(i + 1..i + 4)
            && let Ok(digits) = std::str::from_utf8(digits)
            && let Ok(n) = u8::from_str_radix(digits, 8)
        {
            out.push(n);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What a sweep needs to know of a process.
struct Process {
    pid: u32,
    ppid: u32,
    session: u32,
    uid: u32,
    zombie: bool,
}

/// Every process, as far as it can be read (processes come and go meanwhile).
fn processes() -> Vec<Process> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let after_name = &stat[stat.rfind(')')? + 1..];
            // state ppid pgrp session …
            let fields: Vec<&str> = after_name.split_whitespace().take(4).collect();
            let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let uid = status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))?
                .split_whitespace()
                .next()?
                .parse()
                .ok()?;
            Some(Process {
                pid,
                ppid: fields.get(1)?.parse().ok()?,
                session: fields.get(3)?.parse().ok()?,
                uid,
                zombie: *fields.first()? == "Z",
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cgroup2_mount_is_found_in_mountinfo() {
        let hybrid = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
                      32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
                      41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        assert_eq!(
            cgroup2_mount(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let unified =
            "30 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            cgroup2_mount(unified),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        let spaced = "30 23 0:26 / /mnt/c\\040g rw - cgroup2 none rw\n";
        assert_eq!(cgroup2_mount(spaced), Some(PathBuf::from("/mnt/c g")));
        assert_eq!(
            cgroup2_mount("31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n"),
            None
        );
    }
}
