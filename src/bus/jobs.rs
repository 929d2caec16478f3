//! `org.proxyuserd1.Jobs` (contract: README, "D-Bus API").

use std::collections::HashMap;
use std::time::Duration;

use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::{Connection, OwnedVariant, interface};

use super::{BusError, Shared};
use crate::authority::WaitFor;
use crate::wire::JobRow;

pub struct JobsInterface(pub Shared);

/// Work run as the login's effective user: its proxy if it has one, else itself.
#[interface(name = "org.proxyuserd1.Jobs")]
impl JobsInterface {
    /// Runs argv (no shell; argv[0] an absolute path) as the login's effective user.
    /// env holds the caller's variables, of which only those in exec.env_keep are
    /// passed; cwd "" means the user's home. Returns the job id.
    #[zbus(out_args("job_id"))]
    async fn exec(
        &self,
        #[zbus(connection)] connection: &Connection,
        #[zbus(header)] header: Header<'_>,
        login: String,
        argv: Vec<String>,
        env: HashMap<String, String>,
        cwd: String,
    ) -> Result<String, BusError> {
        let (id, _) = self
            .0
            .call_async(connection, &header, move |authority, caller| async move {
                authority.exec(caller, login, argv, env, cwd, None).await
            })
            .await?;
        Ok(id)
    }

    /// Exec with options: "stdin" (h), a descriptor the job gets as its standard
    /// input (else /dev/null). Also returns the names of the variables of env the job
    /// does not get as given (not in exec.env_keep, or set by the daemon).
    #[zbus(out_args("job_id", "dropped_env"))]
    #[allow(clippy::too_many_arguments)] // the D-Bus signature's
    async fn exec_with_options(
        &self,
        #[zbus(connection)] connection: &Connection,
        #[zbus(header)] header: Header<'_>,
        login: String,
        argv: Vec<String>,
        env: HashMap<String, String>,
        cwd: String,
        options: HashMap<String, OwnedVariant>,
    ) -> Result<(String, Vec<String>), BusError> {
        let stdin = exec_options(options)?;
        self.0
            .call_async(connection, &header, move |authority, caller| async move {
                authority.exec(caller, login, argv, env, cwd, stdin).await
            })
            .await
    }

    /// Bytes of each of stdout and stderr a job keeps (exec.max_output_bytes).
    #[zbus(property(emits_changed_signal = "const"))]
    async fn max_output_bytes(&self) -> u64 {
        self.0.authority.config().exec.max_output_bytes
    }

    /// Waits until the job has ended; state is exited, killed or failed, exit_code the
    /// exit status, 128 + signal, or -1.
    #[zbus(out_args("state", "exit_code"))]
    async fn wait(
        &self,
        #[zbus(connection)] connection: &Connection,
        #[zbus(header)] header: Header<'_>,
        login: String,
        job_id: String,
    ) -> Result<(String, i32), BusError> {
        let id = job_id.clone();
        let waiting = self
            .0
            .call(connection, &header, move |a, c| a.wait_for(c, &login, &id))
            .await?;
        let end = match waiting {
            WaitFor::Finished(end) => end,
            WaitFor::Running(mut done) => {
                // The end arrives once it is on disk; without one, the store says.
                let end = done.wait_for(Option::is_some).await.ok().and_then(|e| *e);
                match end {
                    Some(end) => end,
                    None => {
                        let authority = self.0.authority.clone();
                        super::blocking(move || authority.job_result(&job_id)).await?
                    }
                }
            }
        };
        Ok((end.state.to_string(), end.exit_code))
    }

    /// Ends a running job: SIGTERM to all its processes, SIGKILL after
    /// exec.kill_grace_secs. Returns once the job's end is recorded, or, should that
    /// take 5 s longer than the grace, while it is ending. A job that has ended is
    /// left as it is.
    async fn cancel(
        &self,
        #[zbus(connection)] connection: &Connection,
        #[zbus(header)] header: Header<'_>,
        login: String,
        job_id: String,
    ) -> Result<(), BusError> {
        let ending = self
            .0
            .call(connection, &header, move |a, c| {
                a.cancel(c, &login, &job_id)
            })
            .await?;
        if let Some(mut done) = ending {
            let grace = self.0.authority.config().exec.kill_grace_secs;
            let patience = Duration::from_secs(grace.saturating_add(5));
            // Closed without an end (not recorded) is an end too, as far as waiting goes.
            let _ = tokio::time::timeout(patience, done.wait_for(Option::is_some)).await;
        }
        Ok(())
    }

    /// The jobs of the login's effective user: id, submitted-by login, run-as user,
    /// argv, state (running, exited, killed, failed), started and finished (µs since the
    /// epoch, finished 0 while running), exit code.
    #[zbus(out_args("jobs"))]
    async fn list_jobs(
        &self,
        #[zbus(connection)] connection: &Connection,
        #[zbus(header)] header: Header<'_>,
        login: String,
    ) -> Result<Vec<JobRow>, BusError> {
        let jobs = self
            .0
            .call(connection, &header, move |a, c| a.list_jobs(c, &login))
            .await?;
        Ok(jobs.into_iter().map(row).collect())
    }

    /// A page of the jobs of the login's effective user, newest first: at most limit
    /// (1 to 1000) from cursor on ("" for the newest), and the cursor of the next page
    /// ("" after the last). Rows as ListJobs.
    #[zbus(out_args("jobs", "next_cursor"))]
    async fn list_jobs_page(
        &self,
        #[zbus(connection)] connection: &Connection,
        #[zbus(header)] header: Header<'_>,
        login: String,
        limit: u32,
        cursor: String,
    ) -> Result<(Vec<JobRow>, String), BusError> {
        let page = self
            .0
            .call(connection, &header, move |a, c| {
                a.list_jobs_page(c, &login, limit, &cursor)
            })
            .await?;
        Ok((page.jobs.into_iter().map(row).collect(), page.next))
    }

    /// A read-only file descriptor of the job's stdout or stderr; audited as a download.
    #[zbus(out_args("fd"))]
    async fn open_result(
        &self,
        #[zbus(connection)] connection: &Connection,
        #[zbus(header)] header: Header<'_>,
        login: String,
        job_id: String,
        stream: String,
    ) -> Result<zbus::OwnedFd, BusError> {
        let file = self
            .0
            .call(connection, &header, move |a, c| {
                a.open_result(c, &login, &job_id, &stream)
            })
            .await?;
        Ok(zbus::OwnedFd::from(std::os::fd::OwnedFd::from(file)))
    }

    /// A job ended.
    #[zbus(signal)]
    pub async fn job_finished(
        emitter: &SignalEmitter<'_>,
        job_id: &str,
        run_as: &str,
        state: &str,
        exit_code: i32,
    ) -> zbus::Result<()>;
}

/// The options of `ExecWithOptions`: the job's stdin, if given.
fn exec_options(
    options: HashMap<String, OwnedVariant>,
) -> Result<Option<std::os::fd::OwnedFd>, BusError> {
    let mut stdin = None;
    for (name, value) in options {
        match name.as_str() {
            "stdin" => {
                let fd = zbus::Fd::try_from(&*value)
                    .and_then(|fd| fd.try_to_owned())
                    .map_err(|e| {
                        crate::authority::Error::InvalidArgs(format!(
                            "option stdin must be a file descriptor (h): {e}"
                        ))
                    })?;
                stdin = Some(std::os::fd::OwnedFd::from(zbus::OwnedFd::from(fd)));
            }
            other => {
                return Err(crate::authority::Error::InvalidArgs(format!(
                    "unknown option {:?}: ExecWithOptions knows stdin",
                    other.chars().take(40).collect::<String>()
                ))
                .into());
            }
        }
    }
    Ok(stdin)
}

/// A job as the wire has it.
fn row(j: crate::store::JobRecord) -> JobRow {
    let micros = |t: i64| u64::try_from(t).unwrap_or(0);
    (
        j.id,
        j.login,
        j.run_as,
        j.argv,
        j.state.to_string(),
        micros(j.started),
        micros(j.finished),
        j.exit_code,
    )
}
