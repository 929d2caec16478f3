//! Jobs the daemon finds recorded as running when it starts (it was stopped, restarted
//! or crashed while they ran), and the jobs it leaves when it stops.
//!
//! Under systemd a job is a transient unit of its own, which does not need the daemon:
//! at start the daemon adopts the units still running (supervised as if it had started
//! them: limits, `Wait`, `Cancel`, the exec-end record) and records the end of those
//! that ended while it was down, as systemd kept it. A job of the direct backend is a
//! child of the daemon and cannot outlive it: it is killed and failed.

use std::sync::Arc;

use tokio::sync::watch;

use super::{Cancel, RunningJob, supervise};
use crate::exec::systemd::UnitState;
use crate::exec::{self, ProcessEnd};
use crate::store::JobRecord;
use crate::sys::process_start_time;

use super::super::{Authority, Error};

/// Job records read per page when looking for running ones.
const PAGE: usize = 1000;

/// Why a job that could not be adopted failed.
const STOPPED: &str = "proxyuserd stopped while the job ran";

impl Authority {
    /// At start: every job recorded as running is adopted (its unit still runs),
    /// finished (its unit ended meanwhile) or failed (anything else; what is left of it
    /// is killed).
    pub(in crate::authority) fn recover_jobs(self: &Arc<Self>) -> Result<(), Error> {
        let mut from = String::new();
        let (mut adopted, mut ended) = (0, 0);
        loop {
            let page = self.store.jobs_from(&from, PAGE)?;
            let Some(last) = page.last() else {
                break;
            };
            from = format!("{}\0", last.id);
            for job in page.iter().filter(|job| job.running()) {
                match self.unit_state(job) {
                    Some(UnitState::Running) => {
                        self.adopt(job);
                        adopted += 1;
                    }
                    Some(UnitState::Ended(end, at)) => {
                        self.finish_job_at(&job.id, end, None, at)?;
                        if let exec::Backend::Systemd(systemd, _) = &self.backend {
                            self.runtime.block_on(systemd.release(&job.unit));
                        }
                        ended += 1;
                    }
                    Some(UnitState::Unknown) | None => {
                        self.kill_leftovers(job);
                        self.finish_job(&job.id, ProcessEnd::Failed(STOPPED.into()), None)?;
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
    fn unit_state(&self, job: &JobRecord) -> Option<UnitState> {
        match &self.backend {
            exec::Backend::Systemd(systemd, _) if !job.unit.is_empty() => {
                Some(self.runtime.block_on(systemd.state(&job.unit)))
            }
            _ => None,
        }
    }

    /// Supervises a job whose unit an earlier daemon started.
    fn adopt(self: &Arc<Self>, job: &JobRecord) {
        let exec::Backend::Systemd(systemd, _) = &self.backend else {
            return;
        };
        let watch = self.runtime.block_on(systemd.adopt(&job.unit));
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

    fn kill_leftovers(&self, job: &JobRecord) {
        if let (exec::Backend::Systemd(systemd, _), false) = (&self.backend, job.unit.is_empty()) {
            self.runtime.block_on(async {
                systemd.kill(&job.unit).await;
                systemd.release(&job.unit).await;
            });
        }
        if job.pid > 1 && job.pid_start != 0 && process_start_time(job.pid) == Some(job.pid_start) {
            exec::kill_group(job.pid);
        }
    }

    /// At shutdown: jobs of the direct backend (children of the daemon) are killed and
    /// failed. Units of the systemd backend run on, to be adopted by the next start.
    pub fn stop_jobs(&self) {
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
                self.runtime.block_on(killer.kill());
            }
            if let Err(err) = self.finish_job(&id, ProcessEnd::Failed(STOPPED.into()), None) {
                tracing::error!("cannot record the end of {id}: {err}");
            }
        }
    }
}
