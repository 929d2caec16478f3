//! `org.proxyuserd1.Jobs`: running work as the login's effective user, job records,
//! results, and audited downloads.
//!
//! - [`request`]: what an `Exec` may ask (bounds checked before anything is written);
//! - this file: the way in (`Exec` → facts → access rules → record → start), the
//!   registry of running jobs, and the calls about a job (`Wait`, `Cancel`, `ListJobs`,
//!   `OpenResult`);
//! - [`supervise`]: a running job until its end is recorded;
//! - [`recovery`]: jobs the daemon finds running at start, or leaves at shutdown;
//! - [`retention`]: how much of the jobs' records and output is kept.

mod recovery;
mod request;
mod retention;
mod supervise;

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{Notify, watch};

use crate::access::{self, Caller};
use crate::audit::{Draft, Event};
use crate::exec::{self, JobSpec, ProcessEnd};
use crate::store::{JobEnd, JobRecord, JobState, Store, keys};
use crate::sys::{process_start_time, random_bytes};

use super::{Authority, Error, Notice};

pub use request::check_job_id;
pub use retention::OutputTotals;

/// The streams of a job's output.
pub const STREAMS: [&str; 2] = ["stdout", "stderr"];

/// Most jobs one `ListJobs` returns (the newest); `ListJobsPage` pages through all.
pub const LIST_MAX: usize = 1000;

/// A job the daemon is supervising.
pub(super) struct RunningJob {
    run_as: String,
    /// None until the job has started (the slot is taken before, in the transaction).
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

/// A page of jobs, newest first, and where the next page starts ("" at the end).
pub struct JobPage {
    pub jobs: Vec<JobRecord>,
    pub next: String,
}

/// An `Exec` checked and recorded, ready to start.
struct PreparedJob {
    record: JobRecord,
    spec: JobSpec,
    cancel: Arc<Cancel>,
    done: watch::Sender<Option<JobEnd>>,
    /// The names of the caller's variables the job does not get as given.
    dropped: Vec<String>,
}

/// Why a job did not start: the request's fault (a program that does not exist, a
/// directory the user cannot enter), or the system's.
pub(super) struct StartError {
    caller_fault: bool,
    message: String,
}

impl Authority {
    fn job_dir(&self, id: &str) -> PathBuf {
        self.config().state_dir.join("jobs").join(id)
    }

    /// How many jobs the daemon supervises now.
    pub fn running_jobs_count(&self) -> usize {
        self.running_jobs().len()
    }

    fn running_jobs(&self) -> std::sync::MutexGuard<'_, RunningJobs> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts `argv` as `login`'s effective user, with `stdin` as its standard input
    /// (else /dev/null); the job id and the names of the variables of `env` the job
    /// does not get as given (not in exec.env_keep, or set by the daemon), sorted. The
    /// checks and the records run on blocking threads, the start itself (a fork, or a
    /// call to the service manager) is awaited here.
    #[allow(clippy::too_many_arguments)] // Exec's arguments, and the descriptor
    pub async fn exec(
        self: &Arc<Self>,
        caller: Caller,
        login: String,
        argv: Vec<String>,
        env: HashMap<String, String>,
        cwd: String,
        stdin: Option<std::os::fd::OwnedFd>,
    ) -> Result<(String, Vec<String>), Error> {
        let prepared = {
            let caller = caller.clone();
            self.blocking(move |a| a.prepare_job(&caller, &login, argv, env, &cwd, stdin))
                .await?
        };
        let PreparedJob {
            mut record,
            spec,
            cancel,
            done,
            dropped,
        } = prepared;
        let id = record.id.clone();
        let started = match self.start(&id, &record.unit, spec).await {
            Ok(started) => started,
            Err(StartError {
                caller_fault,
                message,
            }) => {
                let reason = format!(
                    "cannot start {} as {} in {}: {message}",
                    record.argv[0], record.run_as, record.cwd
                );
                // A failed start costs the caller like a denial, and leaves no output.
                self.count_refusal(&caller);
                let failed = reason.clone();
                self.blocking(move |a| {
                    let _ = std::fs::remove_dir_all(a.job_dir(&id));
                    a.finish_job(&id, ProcessEnd::Failed(failed), None)
                })
                .await?;
                return Err(if caller_fault {
                    Error::InvalidArgs(reason)
                } else {
                    Error::Failed(reason)
                });
            }
        };
        if let Some(job) = self.running_jobs().get_mut(&id) {
            job.killer = Some(started.killer());
        }
        // The pid (direct backend; a unit is in the record already). Without cgroups it
        // is how a crash's leftovers are found, so it is durable before the caller
        // learns of the job (else a crash right after Exec leaves the job running);
        // with them it is for people, and written without waiting.
        record.pid = started.pid();
        let started_at = record.started;
        let login = record.login.clone();
        let run_as = record.run_as.clone();
        let argv = record.argv.clone();
        if record.pid > 0 {
            let durable = matches!(
                &self.backend,
                exec::Backend::Direct(c) if matches!(**c, exec::contain::Containment::Subreaper { .. })
            );
            self.blocking(move |a| {
                record.pid_start = process_start_time(record.pid).unwrap_or(0);
                let written = a.begin().and_then(|mut txn| {
                    txn.apply(&Store::put_job(&record))?;
                    if durable {
                        a.commit(None, txn)
                    } else {
                        txn.release();
                        Ok(())
                    }
                });
                if let Err(err) = written {
                    tracing::warn!("cannot record the pid of {}: {err}", record.id);
                }
                Ok(())
            })
            .await?;
        }
        tracing::info!("{id} started for {login} as {run_as}: {argv:?}");
        self.runtime.spawn(supervise::supervise(
            self.clone(),
            id.clone(),
            started,
            started_at,
            cancel,
            done,
        ));
        Ok((id, dropped))
    }

    /// Everything of an `Exec` before the start: the checks, the output files, and the
    /// start recorded (durable on return).
    fn prepare_job(
        &self,
        caller: &Caller,
        login: &str,
        argv: Vec<String>,
        env: HashMap<String, String>,
        cwd: &str,
        stdin: Option<std::os::fd::OwnedFd>,
    ) -> Result<PreparedJob, Error> {
        self.authorize(caller, "Exec", login)?;
        request::check(&self.config().exec, &argv, &env, cwd)
            .map_err(|e| self.refuse(caller, e))?;

        // Whom to run as: authorization is checked again here, whatever the client
        // cached, and the access rules decide which account that may be.
        let acting = self.acting(login)?;
        let facts = acting.account.as_deref().map(|a| self.facts(a));
        let asked = match (&acting.proxy.is_empty(), facts) {
            (false, Some(facts)) => access::Acting::Proxy(facts),
            (_, facts) => access::Acting::Itself(facts),
        };
        if let Err(refusal) = access::run_as(caller, login, &asked, &self.policy(&self.config())) {
            let draft = Draft::new(Event::Denied)
                .with("login", login)
                .with("effective", acting.effective.as_str());
            let err = match refusal {
                access::Refusal::NoAccount { .. } => Error::NoSuchUser(refusal.to_string()),
                _ => Error::NotAllowed(refusal.to_string()),
            };
            return Err(self.deny(caller, "Exec", draft, err));
        }
        let account = acting
            .account
            .expect("run_as refuses a login without an account");
        let config = self.config();
        let exec_config = &config.exec;
        if let Some(free) = self.store.free_bytes()
            && free < config.store.min_free_bytes
        {
            return Err(self.refuse(
                caller,
                Error::LimitsExceeded(format!(
                    "the state file system has {} free, less than store.min_free_bytes ({}): \
                     new jobs are refused until space is freed",
                    bytes(free),
                    bytes(config.store.min_free_bytes)
                )),
            ));
        }
        let cwd = if cwd.is_empty() {
            account.home.clone()
        } else {
            PathBuf::from(cwd)
        };
        let home = account.home.display().to_string();
        let shell = account.shell.display().to_string();
        let job_env = access::job_env(
            &env,
            &exec_config.env_keep,
            &exec_config.secure_path,
            &access::RunAsEnv {
                name: &account.name,
                home: &home,
                shell: &shell,
            },
            login,
        );
        let mut dropped: Vec<String> = env
            .into_keys()
            .filter(|name| !job_env.kept.contains(name))
            .collect();
        dropped.sort();

        // Output files before the transaction (file system work stays out of it).
        let id = new_job_id()?;
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
        let remove_dir = || {
            let _ = std::fs::remove_dir_all(&dir);
        };
        if let Err(err) = output("stdout").and_then(|_| output("stderr")) {
            remove_dir();
            return Err(err);
        }
        let record = JobRecord {
            id: id.clone(),
            login: login.to_string(),
            run_as: account.name.clone(),
            uid: account.uid,
            argv,
            cwd: cwd.display().to_string(),
            state: JobState::Running,
            started: self.now(),
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
                exec::Backend::Direct(_) | exec::Backend::Runner(_) => String::new(),
                exec::Backend::Systemd(..) => unit_name(&id)?,
            },
            output_kept: true,
        };
        let cancel = Arc::new(Cancel::default());
        let (done_tx, done) = watch::channel(None);
        let started =
            self.record_start(caller, login, &record, &job_env.kept, cancel.clone(), done);
        if let Err(err) = started {
            remove_dir();
            return Err(err);
        }
        // The record is written twice more on the caller's behalf (its pid, its end):
        // charged now, so that the write budget bounds what a flood of jobs stores.
        self.charge_writes(caller, 2 * record_size(&record));

        let spec = JobSpec {
            argv: record.argv.clone(),
            env: job_env.vars,
            cwd,
            user: account.name.clone(),
            uid: account.uid,
            gid: account.gid,
            gids: account.gids.clone(),
            stdout: dir.join("stdout"),
            stderr: dir.join("stderr"),
            stdin,
        };
        Ok(PreparedJob {
            record,
            spec,
            cancel,
            done: done_tx,
            dropped,
        })
    }

    /// Records the start (exec-start and the job record) and takes the job's slot
    /// among the run-as user's running jobs, in one transaction; durable on return.
    fn record_start(
        &self,
        caller: &Caller,
        login: &str,
        record: &JobRecord,
        kept: &[String],
        cancel: Arc<Cancel>,
        done: watch::Receiver<Option<JobEnd>>,
    ) -> Result<(), Error> {
        let mut txn = self.begin()?;
        // Whom to run as was decided before the transaction; a revocation or ClearProxy
        // since then wins.
        if self.acts_as(txn.store(), login)? != record.run_as {
            return Err(Error::NotAllowed(format!(
                "the proxy of {login} changed while the job was being started; try again"
            )));
        }
        {
            let mut running = self.running_jobs();
            let here = running
                .values()
                .filter(|job| job.run_as == record.run_as)
                .count();
            let max = self.config().exec.max_jobs_per_user as usize;
            if here >= max {
                drop(running);
                drop(txn);
                return Err(self.refuse(
                    caller,
                    Error::LimitsExceeded(format!(
                        "{} already runs {here} {}, the most exec.max_jobs_per_user allows",
                        record.run_as,
                        crate::authority::rules::plural(here, "job", "jobs")
                    )),
                ));
            }
            running.insert(
                record.id.clone(),
                RunningJob {
                    run_as: record.run_as.clone(),
                    killer: None,
                    cancel,
                    done,
                },
            );
        }
        // The start is on disk before the process exists (else nothing runs).
        let draft = exec_draft(Event::ExecStart, record)
            .with("env", kept.join(","))
            .caller(caller);
        let recorded = txn
            .record(draft, Store::put_job(record), self.now())
            .map_err(Error::from)
            .and_then(|_| self.commit(Some(caller), txn));
        if recorded.is_err() {
            self.running_jobs().remove(&record.id);
        }
        recorded
    }

    /// Starts a job with the configured backend. Returns once the program runs (or
    /// could not be started).
    async fn start(
        &self,
        id: &str,
        unit: &str,
        spec: JobSpec,
    ) -> Result<exec::Started, StartError> {
        match &self.backend {
            exec::Backend::Direct(containment) => {
                // The fork copies the daemon's page tables: off the async threads.
                let (id, containment) = (id.to_string(), containment.clone());
                let spawned = self
                    .runtime
                    .spawn_blocking(move || exec::spawn(spec, &id, &containment))
                    .await;
                match spawned {
                    Ok(spawned) => spawned
                        .map(|running| exec::Started::Direct(Box::new(running)))
                        .map_err(|e| StartError {
                            caller_fault: exec::is_request_error(&e),
                            message: e.to_string(),
                        }),
                    Err(e) => Err(StartError {
                        caller_fault: false,
                        message: format!("internal error: {e}"),
                    }),
                }
            }
            exec::Backend::Systemd(systemd, limits) => {
                let unit = unit.to_string();
                let watch = systemd
                    .start(&unit, &spec, limits, self.config().exec.timeout_secs)
                    .await
                    .map_err(|e| StartError {
                        caller_fault: e.caller_fault,
                        message: e.message,
                    })?;
                Ok(exec::Started::Unit {
                    systemd: systemd.clone(),
                    name: unit,
                    watch: Box::new(watch),
                })
            }
            exec::Backend::Runner(runner) => {
                runner.start(id, spec).await.map_err(|e| StartError {
                    caller_fault: exec::is_request_error(&e),
                    message: e.to_string(),
                })?;
                Ok(exec::Started::Runner {
                    runner: runner.clone(),
                    id: id.to_string(),
                })
            }
        }
    }

    /// The job `id` if `caller` acting for `login` may see it: its run-as user is the
    /// login's effective user, or the caller is an admin. Another's job and no job get
    /// the same answer (the former is recorded as a denial).
    fn visible_job(
        &self,
        caller: &Caller,
        operation: &str,
        login: &str,
        id: &str,
    ) -> Result<JobRecord, Error> {
        self.authorize(caller, operation, login)?;
        check_job_id(id).map_err(|e| self.refuse(caller, e))?;
        let effective = self.acting(login)?.effective;
        let Some(job) = self.store.job(id)? else {
            return Err(self.refuse(caller, Error::NoSuchJob(format!("no job {id}"))));
        };
        if let Err(refusal) = access::job_visible(caller, &effective, &job.run_as, id) {
            let draft = Draft::new(Event::Denied)
                .with("login", login)
                .with("effective", effective)
                .with("job", id);
            return Err(self.deny(
                caller,
                operation,
                draft,
                Error::NoSuchJob(refusal.to_string()),
            ));
        }
        Ok(job)
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

    /// Asks a running job to end (SIGTERM, SIGKILL after exec.kill_grace_secs): what
    /// `Wait` would wait for, or None if it is not running.
    pub fn cancel(
        &self,
        caller: &Caller,
        login: &str,
        id: &str,
    ) -> Result<Option<watch::Receiver<Option<JobEnd>>>, Error> {
        self.visible_job(caller, "Cancel", login, id)?;
        let running = self.running_jobs();
        let Some(running) = running.get(id) else {
            return Ok(None);
        };
        tracing::info!("{id} cancelled by {caller}");
        *running.cancel.by.lock().unwrap_or_else(|e| e.into_inner()) = Some(caller.to_string());
        running.cancel.requested.notify_one();
        Ok(Some(running.done.clone()))
    }

    /// The newest jobs (at most [`LIST_MAX`]) that ran as `login`'s effective user,
    /// oldest first.
    pub fn list_jobs(&self, caller: &Caller, login: &str) -> Result<Vec<JobRecord>, Error> {
        let mut page = self.list_jobs_page(caller, login, LIST_MAX as u32, "")?;
        page.jobs.reverse();
        Ok(page.jobs)
    }

    /// A page of the jobs that ran as `login`'s effective user, newest first, from
    /// `cursor` on ("" for the newest); its cost does not grow with the history.
    pub fn list_jobs_page(
        &self,
        caller: &Caller,
        login: &str,
        limit: u32,
        cursor: &str,
    ) -> Result<JobPage, Error> {
        self.authorize(caller, "ListJobs", login)?;
        let effective = self.acting(login)?.effective;
        let limit = (limit as usize).clamp(1, LIST_MAX);
        let before = if cursor.is_empty() {
            None
        } else {
            let key = unhex(cursor)
                .filter(|k| k.starts_with(&keys::user_prefix(&effective)))
                .ok_or_else(|| {
                    self.refuse(
                        caller,
                        Error::InvalidArgs(format!(
                            "cursor {:?} is not one ListJobsPage gave for {effective}",
                            cursor.chars().take(80).collect::<String>()
                        )),
                    )
                })?;
            Some(key)
        };
        let ids = self
            .store
            .job_ids_of(&effective, before.as_deref(), limit + 1)?;
        let mut jobs = Vec::with_capacity(limit);
        let mut next = String::new();
        for (i, (key, id)) in ids.iter().enumerate() {
            if i == limit {
                break;
            }
            if let Some(job) = self.store.job(id)? {
                jobs.push(job);
            }
            if i + 1 == limit && ids.len() > limit {
                next = crate::sys::hex(key);
            }
        }
        Ok(JobPage { jobs, next })
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
            return Err(self.refuse(
                caller,
                Error::InvalidArgs(format!(
                    "unknown stream {:?}: use stdout or stderr",
                    stream.chars().take(20).collect::<String>()
                )),
            ));
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
        let mut txn = self.begin()?;
        // The download is decided in the transaction, so a revocation just before wins.
        if !caller.admin && self.acts_as(txn.store(), login)? != job.run_as {
            drop(txn);
            let err = Error::NoSuchJob(format!("no job {id}"));
            let draft = Draft::new(Event::Denied)
                .with("login", login)
                .with("effective", job.run_as.as_str())
                .with("job", id)
                .with("stream", stream);
            return Err(self.deny(caller, "OpenResult", draft, err));
        }
        txn.record(draft, Vec::new(), self.now())?;
        self.commit(Some(caller), txn)?;
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
        self.finish_job_at(id, ended, killed_because, 0)
    }

    /// [`finish_job`](Self::finish_job) for a job that ended at `at` (µs since the
    /// epoch; 0: now), e.g. while the daemon was down.
    pub(crate) fn finish_job_at(
        &self,
        id: &str,
        ended: ProcessEnd,
        killed_because: Option<String>,
        at: i64,
    ) -> Result<JobEnd, Error> {
        let dir = self.job_dir(id);
        let stdout_bytes = exec::output_size(&dir.join("stdout"));
        let stderr_bytes = exec::output_size(&dir.join("stderr"));
        let mut txn = self.begin()?;
        let Some(mut job) = txn.store().job(id)? else {
            return Err(Error::NoSuchJob(format!("no job {id}")));
        };
        if !job.running() {
            return Ok(job.end());
        }
        job.finished = if at > 0 {
            at.max(job.started)
        } else {
            self.now()
        };
        job.stdout_bytes = stdout_bytes;
        job.stderr_bytes = stderr_bytes;
        job.output_kept = dir.exists();
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
        let result = txn
            .record(draft, Store::put_job(&job), self.now())
            .map_err(Error::from)
            .and_then(|_| self.commit(None, txn));
        self.running_jobs().remove(id);
        result?;
        tracing::info!("{id} of {} as {}: {}", job.login, job.run_as, job.state);
        self.notify(Notice::JobFinished {
            id: id.to_string(),
            login: job.login.clone(),
            run_as: job.run_as.clone(),
            end: job.end(),
        });
        self.output_totals
            .finished(&job.run_as, job.stdout_bytes + job.stderr_bytes);
        self.keep_within_limits(&job.run_as);
        Ok(job.end())
    }
}

/// A new job id: 64 random bits, so ids say nothing about other users' jobs.
fn new_job_id() -> Result<String, Error> {
    let bytes = random_bytes(8).map_err(|e| Error::Failed(format!("no random bytes: {e}")))?;
    Ok(format!("job-{}", crate::sys::hex(&bytes)))
}

/// The transient unit of a job (systemd backend): the job id, unique across state
/// directories (a reinstall, the tests) that may meet in one service manager.
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
    let draft = Draft::new(event)
        .with("login", job.login.as_str())
        .with("proxy", proxy_field(&job.login, &job.run_as))
        .with("effective", job.run_as.as_str())
        .with("job", job.id.as_str());
    audited_argv(draft, &job.argv).with("cwd", job.cwd.as_str())
}

/// Bytes of a job's argv (as JSON) an audit record holds in full.
const AUDIT_ARGV_BYTES: usize = 4096;

/// `argv` as JSON; a longer one is cut to `AUDIT_ARGV_BYTES` (at a character boundary)
/// and `argv_bytes` and `argv_sha256` name the whole, so that a record stays small in
/// the store and in the journal whatever a caller sends, and still identifies it.
fn audited_argv(draft: Draft, argv: &[String]) -> Draft {
    use sha2::Digest;
    let json = serde_json::to_string(argv).unwrap_or_default();
    if json.len() <= AUDIT_ARGV_BYTES {
        return draft.with("argv", json);
    }
    let mut cut = AUDIT_ARGV_BYTES;
    while !json.is_char_boundary(cut) {
        cut -= 1;
    }
    let hash: String = sha2::Sha256::digest(json.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    draft
        .with("argv", format!("{}…", &json[..cut]))
        .with("argv_bytes", json.len().to_string())
        .with("argv_sha256", hash)
}

/// Bytes of a job record as the store keeps it.
fn record_size(record: &JobRecord) -> u64 {
    serde_json::to_vec(record).map_or(0, |v| v.len() as u64)
}

/// Bytes for people: "512 B", "3.0 MiB".
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || text.len() > 1024 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}
