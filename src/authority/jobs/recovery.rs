//! Jobs the daemon finds recorded as running when it starts (it was stopped, restarted
//! or crashed while they ran), and the jobs it leaves when it stops.
//!
//! Under systemd a job is a transient unit of its own, which does not need the daemon:
//! at start the daemon adopts the units still running (supervised as if it had started
//! them: limits, `Wait`, `Cancel`, the exec-end record) and records the end of those
//! that ended while it was down, as systemd kept it. A job of the direct backend is a
//! child of the daemon and cannot outlive it: what is left of it is killed (by its
//! cgroup, or by its session) and it is failed.

use std::sync::Arc;

use tokio::sync::watch;

use super::{Cancel, RunningJob, supervise};
use crate::exec::systemd::UnitState;
use crate::exec::{self, ProcessEnd};
use crate::store::JobRecord;
use crate::sys::process_start_time;
use nix::sys::signal::Signal;

use super::super::{Authority, Error};

/// Job records read per page when looking for running ones.
const PAGE: usize = 1000;

/// Why a job that could not be adopted failed.
const STOPPED: &str = "proxyuserd stopped while the job ran";

impl Authority {
    /// At start, before serving: every job recorded as running is adopted (its unit
    /// still runs), finished (its unit ended meanwhile) or failed once what is left of
    /// it is killed and gone (anything else). Job cgroups of this store's jobs that are
    /// still there, and units of jobs whose end is recorded, go too.
    pub async fn recover_jobs(self: &Arc<Self>) -> Result<(), Error> {
        match &self.backend {
            exec::Backend::Direct(containment) => {
                for id in containment.leftovers() {
                    if let Some(job) = self.store.job(&id)? {
                        tracing::warn!("killing what is left of {id} in its cgroup");
                        self.kill_leftovers(&job).await;
                    }
                }
            }
            exec::Backend::Systemd(systemd, _) => {
                for unit in systemd.job_units().await {
                    let recorded_end = job_of_unit(&unit)
                        .map(|id| self.store.job(id))
                        .transpose()?
                        .flatten()
                        .is_some_and(|job| job.unit == unit && !job.running());
                    if recorded_end {
                        tracing::warn!("stopping the leftover unit {unit}");
                        systemd.stop(&unit).await;
                    }
                }
            }
            exec::Backend::Runner(_) => {}
        }
        let mut from = String::new();
        let (mut adopted, mut ended) = (0, 0);
        loop {
            let start = from.clone();
            let page = self
                .blocking(move |a| Ok(a.store.jobs_from(&start, PAGE)?))
                .await?;
            let Some(last) = page.last() else {
                break;
            };
            from = format!("{}\0", last.id);
            for job in page.into_iter().filter(|job| job.running()) {
                match self.unit_state(&job).await {
                    Some(UnitState::Running) => {
                        self.adopt(&job).await;
                        adopted += 1;
                    }
                    Some(UnitState::Ended(end, at)) => {
                        let id = job.id.clone();
                        self.blocking(move |a| a.finish_job_at(&id, end, None, at))
                            .await?;
                        if let exec::Backend::Systemd(systemd, _) = &self.backend {
                            systemd.release(&job.unit).await;
                        }
                        ended += 1;
                    }
                    Some(UnitState::Unknown) | None => {
                        self.kill_leftovers(&job).await;
                        self.blocking(move |a| {
                            a.finish_job(&job.id, ProcessEnd::Failed(STOPPED.into()), None)
                        })
                        .await?;
                    }
                }
            }
        }
        if adopted + ended > 0 {
            tracing::info!(
                "jobs from before the restart: {adopted} still running (supervised again), \
                 {ended} ended meanwhile (recorded)"
            );
        }
        Ok(())
    }

    /// What systemd knows of a job's unit; `None` without a unit or the systemd backend.
    async fn unit_state(&self, job: &JobRecord) -> Option<UnitState> {
        match &self.backend {
            exec::Backend::Systemd(systemd, _) if !job.unit.is_empty() => {
                Some(systemd.state(&job.unit).await)
            }
            _ => None,
        }
    }

    /// Supervises a job whose unit an earlier daemon started.
    async fn adopt(self: &Arc<Self>, job: &JobRecord) {
        let exec::Backend::Systemd(systemd, _) = &self.backend else {
            return;
        };
        let watch = systemd.adopt(&job.unit).await;
        let started = exec::Started::Unit {
            systemd: systemd.clone(),
            name: job.unit.clone(),
            watch: Box::new(watch),
        };
        let cancel = Arc::new(Cancel::default());
        let (done_tx, done) = watch::channel(None);
        self.running_jobs().insert(
            job.id.clone(),
            RunningJob {
                run_as: job.run_as.clone(),
                killer: Some(started.killer()),
                cancel: cancel.clone(),
                done,
            },
        );
        tracing::info!(
            "{} of {} as {}: running, supervised again",
            job.id,
            job.login,
            job.run_as
        );
        self.runtime.spawn(supervise::supervise(
            self.clone(),
            job.id.clone(),
            started,
            job.started,
            cancel,
            done_tx,
        ));
    }

    async fn kill_leftovers(&self, job: &JobRecord) {
        match &self.backend {
            exec::Backend::Systemd(systemd, _) => {
                if !job.unit.is_empty() {
                    systemd.stop(&job.unit).await;
                }
            }
            exec::Backend::Direct(containment) => {
                // The recorded pid leads the job's session, unless it names another
                // process by now.
                let leader = process_start_time(job.pid);
                let pid = if job.pid > 1
                    && job.pid_start != 0
                    && (leader.is_none() || leader == Some(job.pid_start))
                {
                    if leader.is_some() {
                        exec::kill_group(job.pid);
                    }
                    job.pid
                } else {
                    0
                };
                containment.kill_leftovers(&job.id, pid, job.uid);
            }
            exec::Backend::Runner(runner) => runner.signal(&job.id, Signal::SIGKILL).await,
        }
    }

    /// At shutdown: jobs of the direct backend (children of the daemon) are killed and
    /// failed. Units of the systemd backend run on, to be adopted by the next start.
    pub async fn stop_jobs(self: &Arc<Self>) {
        if let exec::Backend::Systemd(..) = &self.backend {
            let running = self.running_jobs().len();
            if running > 0 {
                tracing::info!("{running} running jobs continue as their own units");
            }
            return;
        }
        let running: Vec<(String, Option<exec::Killer>)> = self
            .running_jobs()
            .iter()
            .map(|(id, job)| (id.clone(), job.killer.clone()))
            .collect();
        for (id, killer) in running {
            if let Some(killer) = killer {
                killer.kill().await;
            }
            let finished = self
                .blocking({
                    let id = id.clone();
                    move |a| a.finish_job(&id, ProcessEnd::Failed(STOPPED.into()), None)
                })
                .await;
            if let Err(err) = finished {
                tracing::error!("cannot record the end of {id}: {err}");
            }
        }
    }
}

/// The job id in a job's unit name (`proxyuserd-<job id>-<salt>.service`).
fn job_of_unit(unit: &str) -> Option<&str> {
    let name = unit.strip_prefix("proxyuserd-")?.strip_suffix(".service")?;
    Some(&name[..name.rfind('-')?])
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_unit_name_gives_its_job_id() {
        assert_eq!(
            super::job_of_unit("proxyuserd-job-0011223344556677-8899aabb.service"),
            Some("job-0011223344556677")
        );
        assert_eq!(super::job_of_unit("proxyuserd-pxt\\x2detl.slice"), None);
        assert_eq!(super::job_of_unit("ssh.service"), None);
    }
}
