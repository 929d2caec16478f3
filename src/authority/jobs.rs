//! `org.proxyuserd1.Jobs`: running work as the login's effective user, job records,
//! results, and audited downloads.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};

use crate::access::Caller;
use crate::audit::{Draft, Event};
use crate::exec::{self, JobSpec, ProcessEnd};
use crate::store::{JobEnd, JobRecord, JobState, Store, Tree, Write};
use crate::sys::{process_start_time, random_bytes};
use crate::time::now_micros;

use super::{Authority, Error, Notice};

/// The streams of a job's output.
pub const STREAMS: [&str; 2] = ["stdout", "stderr"];

/// Bounds on what `Exec` accepts.
const MAX_ARGS: usize = 4096;
const MAX_ARGV_BYTES: usize = 256 * 1024;
const MAX_ENV: usize = 1024;

/// A job the daemon is supervising.
pub(super) struct RunningJob {
    run_as: String,
    /// None until the job has started (the slot is taken before, under the lock).
    killer: Option<exec::Killer>,
    cancel: Arc<Cancel>,
    done: watch::Receiver<Option<JobEnd>>,
}

/// A request to cancel a job, and who made it (for the exec-end record).
#[derive(Default)]
struct Cancel {
    requested: Notify,
    by: std::sync::Mutex<Option<String>>,
}

/// Running jobs by id.
pub(super) type RunningJobs = HashMap<String, RunningJob>;

/// What `Wait` waits for.
pub enum WaitFor {
    Finished(JobEnd),
    /// Gets the job's end once it is on disk; closed without one if it could not be
    /// recorded.
    Running(watch::Receiver<Option<JobEnd>>),
}

fn check_job_id(id: &str) -> Result<(), Error> {
    let valid = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(Error::InvalidArgs(format!(
            "invalid job id {id:?}: job ids are letters, digits, '-' and '_'"
        )))
    }
}

fn check_env_name(name: &str) -> Result<(), Error> {
    let valid = !name.is_empty() && !name.contains(['=', '\0']);
    if valid {
        Ok(())
    } else {
        Err(Error::InvalidArgs(format!(
            "invalid environment variable name {name:?}"
        )))
    }
}

impl Authority {
    fn job_dir(&self, id: &str) -> PathBuf {
        self.config.state_dir.join("jobs").join(id)
    }

    fn running_jobs(&self) -> std::sync::MutexGuard<'_, RunningJobs> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts `argv` as `login`'s effective user; the job id.
    pub fn exec(
        self: &Arc<Self>,
        caller: &Caller,
        login: &str,
        argv: Vec<String>,
        env: HashMap<String, String>,
        cwd: &str,
    ) -> Result<String, Error> {
        self.authorize(caller, "Exec", login)?;
        let Some(program) = argv.first() else {
            return Err(Error::InvalidArgs(
                "argv is empty: give the program to run".into(),
            ));
        };
        if !program.starts_with('/') {
            return Err(Error::InvalidArgs(format!(
                "program {program:?} is not an absolute path (there is no PATH search)"
            )));
        }
        if argv.len() > MAX_ARGS || argv.iter().map(String::len).sum::<usize>() > MAX_ARGV_BYTES {
            return Err(Error::InvalidArgs(format!(
                "argv is too long (at most {MAX_ARGS} arguments and {MAX_ARGV_BYTES} bytes)"
            )));
        }
        if !cwd.is_empty() && !cwd.starts_with('/') {
            return Err(Error::InvalidArgs(format!(
                "cwd {cwd:?} is not an absolute path"
            )));
        }
        if env.len() > MAX_ENV {
            return Err(Error::InvalidArgs(format!(
                "too many environment variables (at most {MAX_ENV})"
            )));
        }
        for name in env.keys() {
            check_env_name(name)?;
        }

        // Authorization is checked again here, whatever the client cached.
        let account = self.acting(login)?.account.ok_or_else(|| {
            Error::NoSuchUser(format!(
                "{login} has no proxy and no system account: there is no user to run as"
            ))
        })?;
        if account.uid == 0 {
            return Err(Error::NotAllowed(
                "proxyuserd never runs jobs as root".into(),
            ));
        }
        if let Some(what) = self.privileged(&account)
            && caller.name.as_deref() != Some(account.name.as_str())
        {
            return Err(Error::NotAllowed(format!(
                "{} is {what}: jobs run as it only when it asks itself",
                account.name
            )));
        }
        let cwd = if cwd.is_empty() {
            account.home.clone()
        } else {
            PathBuf::from(cwd)
        };
        let exec_config = &self.config.exec;
        let mut job_env: Vec<(String, String)> = env
            .into_iter()
            .filter(|(name, _)| exec_config.env_keep.contains(name))
            .collect();
        job_env.sort();
        let kept: Vec<String> = job_env.iter().map(|(n, _)| n.clone()).collect();
        let fixed = [
            ("PATH", exec_config.secure_path.clone()),
            ("HOME", account.home.display().to_string()),
            ("USER", account.name.clone()),
            ("LOGNAME", account.name.clone()),
            ("SHELL", account.shell.display().to_string()),
            ("PROXYUSERD_LOGIN_USER", login.to_string()),
        ];
        job_env.retain(|(name, _)| !fixed.iter().any(|(f, _)| f == name));
        job_env.extend(fixed.into_iter().map(|(n, v)| (n.to_string(), v)));

        let mut ledger = self.lock();
        // Who to run as was decided before the lock; a revocation or ClearProxy since
        // then wins.
        if self.acts_as(login)? != account.name {
            return Err(Error::NotAllowed(format!(
                "the proxy of {login} changed while the job was being started; try again"
            )));
        }
        let running_here = self
            .running_jobs()
            .values()
            .filter(|job| job.run_as == account.name)
            .count();
        if running_here >= exec_config.max_jobs_per_user as usize {
            return Err(Error::LimitsExceeded(format!(
                "{} already runs {running_here} jobs, the most exec.max_jobs_per_user allows",
                account.name
            )));
        }
        let id = format!("job-{}", self.store.unique_id()?);
        let dir = self.job_dir(&id);
        let output = |stream: &str| -> Result<File, Error> {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(dir.join(stream))
                .map_err(|e| {
                    Error::Failed(format!(
                        "cannot create job output {}: {e}",
                        dir.join(stream).display()
                    ))
                })
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| Error::Failed(format!("cannot create {}: {e}", dir.display())))?;
        output("stdout")?;
        output("stderr")?;
        let mut record = JobRecord {
            id: id.clone(),
            login: login.to_string(),
            run_as: account.name.clone(),
            uid: account.uid,
            argv: argv.clone(),
            cwd: cwd.display().to_string(),
            state: JobState::Running,
            started: now_micros(),
            finished: 0,
            exit_code: 0,
            signal: None,
            reason: String::new(),
            stdout_bytes: 0,
            stderr_bytes: 0,
            caller_uid: caller.uid,
            caller_pid: caller.pid,
            caller: caller.name.clone().unwrap_or_default(),
            pid: 0,
            pid_start: 0,
            unit: match &self.backend {
                exec::Backend::Direct => String::new(),
                exec::Backend::Systemd(..) => unit_name(&id)?,
            },
        };
        // The start is on disk before the process exists (else nothing runs).
        let draft = exec_draft(Event::ExecStart, &record)
            .with("env", kept.join(","))
            .caller(caller);
        if let Err(err) = self.record(&mut ledger, draft, vec![Store::put_job(&record)]) {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(err);
        }

        let spec = JobSpec {
            argv,
            env: job_env,
            cwd,
            user: account.name.clone(),
            uid: account.uid,
            gid: account.gid,
            gids: account.gids.clone(),
            stdout: dir.join("stdout"),
            stderr: dir.join("stderr"),
        };
        // Take the job's slot (for max_jobs_per_user) before letting go of the lock:
        // starting the process, or the unit, happens outside it.
        let cancel = Arc::new(Cancel::default());
        let (done_tx, done) = watch::channel(None);
        self.running_jobs().insert(
            id.clone(),
            RunningJob {
                run_as: record.run_as.clone(),
                killer: None,
                cancel: cancel.clone(),
                done,
            },
        );
        drop(ledger);

        let started = match self.start(&record.unit, spec) {
            Ok(started) => started,
            Err(err) => {
                let reason = format!(
                    "cannot start {} as {} in {}: {err}",
                    record.argv[0], record.run_as, record.cwd
                );
                self.finish_job(&id, ProcessEnd::Failed(reason.clone()), None)?;
                return Err(Error::InvalidArgs(reason));
            }
        };
        if let Some(job) = self.running_jobs().get_mut(&id) {
            job.killer = Some(started.killer());
        }
        // Remembering the pid (direct backend; a unit is in the record already) is best
        // effort, not flushed: it only helps to clean up after a crash.
        record.pid = started.pid();
        if record.pid > 0 {
            record.pid_start = process_start_time(record.pid).unwrap_or(0);
            if let Err(err) = self.store.commit_unflushed(&[Store::put_job(&record)]) {
                tracing::warn!("cannot record the pid of {id}: {err}");
            }
        }
        tracing::info!(
            "{id} started for {login} as {}: {:?}",
            record.run_as,
            record.argv
        );
        tokio::spawn(supervise(
            self.clone(),
            id.clone(),
            started,
            cancel,
            done_tx,
        ));
        Ok(id)
    }

    /// Starts a job with the configured backend. Returns once the program runs (or
    /// could not be started).
    fn start(&self, unit: &str, spec: JobSpec) -> Result<exec::Started, String> {
        match &self.backend {
            exec::Backend::Direct => exec::spawn(spec)
                .map(exec::Started::Direct)
                .map_err(|e| e.to_string()),
            exec::Backend::Systemd(systemd, limits) => {
                let unit = unit.to_string();
                let watch = tokio::runtime::Handle::current().block_on(systemd.start(
                    &unit,
                    &spec,
                    limits,
                    self.config.exec.timeout_secs,
                ))?;
                Ok(exec::Started::Unit {
                    systemd: systemd.clone(),
                    name: unit,
                    watch: Box::new(watch),
                })
            }
        }
    }

    /// The job `id` if `caller` acting for `login` may see it: its run-as user is the
    /// login's effective user, or the caller is an admin.
    fn visible_job(
        &self,
        caller: &Caller,
        operation: &str,
        login: &str,
        id: &str,
    ) -> Result<JobRecord, Error> {
        self.authorize(caller, operation, login)?;
        check_job_id(id)?;
        let job = self
            .store
            .job(id)?
            .ok_or_else(|| Error::NoSuchJob(format!("no job {id}")))?;
        let effective = self.acting(login)?.effective;
        if job.run_as == effective || caller.admin {
            return Ok(job);
        }
        let err = Error::AccessDenied(format!(
            "job {id} did not run as {effective}, the user {login} acts as"
        ));
        let draft = Draft::new(Event::Denied)
            .with("login", login)
            .with("effective", effective)
            .with("job", id);
        Err(self.deny(caller, operation, draft, err))
    }

    /// What `Wait` has to wait for.
    pub fn wait_for(&self, caller: &Caller, login: &str, id: &str) -> Result<WaitFor, Error> {
        self.visible_job(caller, "Wait", login, id)?;
        if let Some(running) = self.running_jobs().get(id) {
            return Ok(WaitFor::Running(running.done.clone()));
        }
        // Not running (any more): the record has its end.
        Ok(WaitFor::Finished(self.job_result(id)?))
    }

    /// The final state of a job that has finished.
    pub fn job_result(&self, id: &str) -> Result<JobEnd, Error> {
        let job = self
            .store
            .job(id)?
            .ok_or_else(|| Error::NoSuchJob(format!("no job {id}")))?;
        Ok(job.end())
    }

    pub fn cancel(&self, caller: &Caller, login: &str, id: &str) -> Result<(), Error> {
        self.visible_job(caller, "Cancel", login, id)?;
        if let Some(running) = self.running_jobs().get(id) {
            tracing::info!("{id} cancelled by {caller}");
            *running.cancel.by.lock().unwrap_or_else(|e| e.into_inner()) = Some(caller.to_string());
            running.cancel.requested.notify_one();
        }
        Ok(())
    }

    /// The jobs that ran as `login`'s effective user, oldest first.
    pub fn list_jobs(&self, caller: &Caller, login: &str) -> Result<Vec<JobRecord>, Error> {
        self.authorize(caller, "ListJobs", login)?;
        let effective = self.acting(login)?.effective;
        let mut jobs: Vec<JobRecord> = self
            .store
            .jobs()?
            .into_iter()
            .filter(|job| job.run_as == effective)
            .collect();
        jobs.sort_by_key(|job| (job.started, job.id.clone()));
        Ok(jobs)
    }

    /// A read-only descriptor of a job's output, recorded as a download.
    pub fn open_result(
        &self,
        caller: &Caller,
        login: &str,
        id: &str,
        stream: &str,
    ) -> Result<File, Error> {
        if !STREAMS.contains(&stream) {
            return Err(Error::InvalidArgs(format!(
                "unknown stream {stream:?}: use stdout or stderr"
            )));
        }
        let job = self.visible_job(caller, "OpenResult", login, id)?;
        let path = self.job_dir(id).join(stream);
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| Error::NoSuchJob(format!("the {stream} of job {id} is gone: {e}")))?;
        let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
        let draft = Draft::new(Event::Download)
            .with("login", login)
            .with("proxy", proxy_field(login, &job.run_as))
            .with("effective", job.run_as.as_str())
            .with("job", id)
            .with("stream", stream)
            .with("bytes", bytes.to_string())
            .caller(caller);
        let mut ledger = self.lock();
        // The download is decided under the lock, so a revocation just before it wins.
        if !caller.admin && self.acts_as(login)? != job.run_as {
            drop(ledger);
            let err =
                Error::AccessDenied(format!("job {id} did not run as the user {login} acts as"));
            let draft = Draft::new(Event::Denied)
                .with("login", login)
                .with("effective", job.run_as.as_str())
                .with("job", id)
                .with("stream", stream);
            return Err(self.deny(caller, "OpenResult", draft, err));
        }
        self.record(&mut ledger, draft, Vec::new())?;
        Ok(file)
    }

    /// Records how job `id` ended (exec-end), unless it already has; the end on record.
    /// `killed_because` says why the daemon killed it, if it did.
    pub(crate) fn finish_job(
        &self,
        id: &str,
        ended: ProcessEnd,
        killed_because: Option<String>,
    ) -> Result<JobEnd, Error> {
        let mut ledger = self.lock();
        let Some(mut job) = self.store.job(id)? else {
            return Err(Error::NoSuchJob(format!("no job {id}")));
        };
        if !job.running() {
            return Ok(job.end());
        }
        let dir = self.job_dir(id);
        job.finished = now_micros();
        job.stdout_bytes = exec::output_size(&dir.join("stdout"));
        job.stderr_bytes = exec::output_size(&dir.join("stderr"));
        let status = match ended {
            ProcessEnd::Exited(code) => {
                (job.state, job.exit_code) = (JobState::Exited, code);
                format!("exited with {code}")
            }
            ProcessEnd::Signaled(signal) => {
                let reason =
                    killed_because.unwrap_or_else(|| format!("terminated by signal {signal}"));
                (job.state, job.exit_code) = (JobState::Killed, 128 + signal);
                job.signal = Some(signal);
                let status = format!("killed by signal {signal} ({reason})");
                job.reason = reason;
                status
            }
            ProcessEnd::Failed(reason) => {
                (job.state, job.exit_code) = (JobState::Failed, -1);
                let status = format!("failed: {reason}");
                job.reason = reason;
                status
            }
        };
        let draft = exec_draft(Event::ExecEnd, &job)
            .with("state", job.state.as_str())
            .with("exit_code", job.exit_code.to_string())
            .with("status", status)
            .with(
                "duration_us",
                (job.finished - job.started).max(0).to_string(),
            )
            .with("stdout_bytes", job.stdout_bytes.to_string())
            .with("stderr_bytes", job.stderr_bytes.to_string())
            .with("caller_uid", job.caller_uid.to_string())
            .with("caller_pid", job.caller_pid.to_string())
            .with("caller", job.caller.as_str());
        let result = self.record(&mut ledger, draft, vec![Store::put_job(&job)]);
        self.running_jobs().remove(id);
        drop(ledger);
        result?;
        tracing::info!("{id} of {} as {}: {}", job.login, job.run_as, job.state);
        self.notify(Notice::JobFinished {
            id: id.to_string(),
            run_as: job.run_as.clone(),
            end: job.end(),
        });
        Ok(job.end())
    }

    /// At start: jobs recorded as running did so when the daemon stopped. They are
    /// failed, and a process group still alive from them (same pid *and* start time) is
    /// killed.
    pub(super) fn fail_stale_jobs(&self) -> Result<(), Error> {
        for job in self.store.jobs()?.into_iter().filter(JobRecord::running) {
            if let (exec::Backend::Systemd(systemd, _), false) =
                (&self.backend, job.unit.is_empty())
            {
                tokio::runtime::Handle::current().block_on(systemd.kill(&job.unit));
            }
            if job.pid > 1
                && job.pid_start != 0
                && process_start_time(job.pid) == Some(job.pid_start)
            {
                exec::kill_group(job.pid);
            }
            self.finish_job(
                &job.id,
                ProcessEnd::Failed("proxyuserd stopped while the job ran".into()),
                None,
            )?;
        }
        Ok(())
    }

    /// At shutdown: kills and fails every running job.
    pub fn stop_jobs(&self) {
        let running: Vec<(String, Option<exec::Killer>)> = self
            .running_jobs()
            .iter()
            .map(|(id, job)| (id.clone(), job.killer.clone()))
            .collect();
        for (id, killer) in running {
            if let Some(killer) = killer {
                tokio::runtime::Handle::current().block_on(killer.kill());
            }
            if let Err(err) = self.finish_job(
                &id,
                ProcessEnd::Failed("proxyuserd stopped while the job ran".into()),
                None,
            ) {
                tracing::error!("cannot record the end of {id}: {err}");
            }
        }
    }

    /// Deletes finished jobs (records and output) older than `exec.retention_secs`.
    pub fn prune_jobs(&self) -> Result<usize, Error> {
        let retention = self.config.exec.retention_secs;
        if retention == 0 {
            return Ok(0);
        }
        let cutoff = now_micros() - (retention as i64) * 1_000_000;
        let mut pruned = 0;
        for job in self.store.jobs()? {
            if job.running() || job.finished > cutoff {
                continue;
            }
            // Output first: a record without output says "gone", output without a
            // record would never be found again.
            let dir = self.job_dir(&job.id);
            if let Err(err) = std::fs::remove_dir_all(&dir)
                && err.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!("cannot delete {}: {err}", dir.display());
                continue;
            }
            self.store
                .commit(&[Write::delete(Tree::Jobs, job.id.as_str())])?;
            pruned += 1;
        }
        if pruned > 0 {
            tracing::info!("pruned {pruned} jobs older than {retention} s");
        }
        Ok(pruned)
    }
}

/// The transient unit of a job (systemd backend): the job id and 32 random bits, as
/// job ids of different state directories (a reinstall, the tests) may meet in one
/// service manager.
fn unit_name(id: &str) -> Result<String, Error> {
    let salt = random_bytes(4).map_err(|e| Error::Failed(format!("no random bytes: {e}")))?;
    Ok(format!(
        "proxyuserd-{id}-{}.service",
        crate::sys::hex(&salt)
    ))
}

/// The audit `proxy` of `login` running as `run_as`: the run-as user, or "" if that is
/// the login itself.
fn proxy_field<'a>(login: &str, run_as: &'a str) -> &'a str {
    if run_as != login { run_as } else { "" }
}

fn exec_draft(event: Event, job: &JobRecord) -> Draft {
    Draft::new(event)
        .with("login", job.login.as_str())
        .with("proxy", proxy_field(&job.login, &job.run_as))
        .with("effective", job.run_as.as_str())
        .with("job", job.id.as_str())
        .with("argv", serde_json::to_string(&job.argv).unwrap_or_default())
        .with("cwd", job.cwd.as_str())
}

/// Waits for a job to end, enforcing its limits and cancellation, then records the end.
async fn supervise(
    authority: Arc<Authority>,
    id: String,
    mut started: exec::Started,
    cancel: Arc<Cancel>,
    done: watch::Sender<Option<JobEnd>>,
) {
    let limits = &authority.config.exec;
    let dir = authority.job_dir(&id);
    let killer = started.killer();
    let deadline = (limits.timeout_secs > 0)
        .then(|| tokio::time::Instant::now() + Duration::from_secs(limits.timeout_secs));
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let mut reason: Option<String> = None;
    let mut over_cap = false;
    let ended = loop {
        tokio::select! {
            ended = started.wait() => break ended,
            _ = cancel.requested.notified() => {
                let by = cancel.by.lock().unwrap_or_else(|e| e.into_inner()).clone().unwrap_or_default();
                reason.get_or_insert_with(|| format!("cancelled by {by}"));
                killer.kill().await;
            }
            _ = async { tokio::time::sleep_until(deadline.expect("only polled with a deadline")).await }, if deadline.is_some() && reason.is_none() => {
                reason = Some(format!("timed out after {} s (exec.timeout_secs)", limits.timeout_secs));
                killer.kill().await;
            }
            _ = tick.tick(), if reason.is_none() => {
                let written = exec::output_size(&dir.join("stdout")).max(exec::output_size(&dir.join("stderr")));
                if written > limits.max_output_bytes {
                    over_cap = true;
                    reason = Some(format!("wrote more than {} bytes of output (exec.max_output_bytes)", limits.max_output_bytes));
                    killer.kill().await;
                }
            }
        }
    };
    // Whatever the job left behind went with it: its process group (killed by
    // `wait`), or its unit's cgroup (emptied by systemd itself).
    if over_cap {
        for stream in STREAMS {
            if let Ok(file) = OpenOptions::new().write(true).open(dir.join(stream))
                && let Ok(meta) = file.metadata()
            {
                let _ = file.set_len(limits.max_output_bytes.min(meta.len()));
            }
        }
    }
    let finisher = authority.clone();
    let finished_id = id.clone();
    match tokio::task::spawn_blocking(move || finisher.finish_job(&finished_id, ended, reason))
        .await
    {
        Ok(Ok(end)) => {
            let _ = done.send(Some(end));
        }
        // Dropping `done` without an end tells waiters to ask the store.
        Ok(Err(err)) => tracing::error!("cannot record the end of {id}: {err}"),
        Err(err) => tracing::error!("cannot record the end of {id}: {err}"),
    }
}
