//! Jobs the daemon finds recorded as running when it starts (it stopped or crashed
//! while they ran), and the jobs it leaves when it stops.

use std::sync::Arc;

use crate::exec::{self, ProcessEnd};
use crate::store::JobRecord;
use crate::sys::process_start_time;

use super::super::{Authority, Error};

/// Why a job that ran while the daemon stopped failed.
const STOPPED: &str = "proxyuserd stopped while the job ran";

/// Job records read per page when looking for running ones.
const PAGE: usize = 1000;

impl Authority {
    /// At start, before serving: jobs recorded as running did so when the daemon
    /// stopped. They are failed, and what is left of them is killed: their unit (systemd
    /// backend), or a process group still alive from them (same pid *and* start time).
    pub async fn fail_stale_jobs(self: &Arc<Self>) -> Result<(), Error> {
        let mut from = String::new();
        loop {
            let start = from.clone();
            let page = self
                .blocking(move |a| Ok(a.store.jobs_from(&start, PAGE)?))
                .await?;
            let Some(last) = page.last() else {
                return Ok(());
            };
            from = format!("{}\0", last.id);
            for job in page.into_iter().filter(|job| job.running()) {
                self.kill_leftovers(&job).await;
                self.blocking(move |a| {
                    a.finish_job(&job.id, ProcessEnd::Failed(STOPPED.into()), None)
                })
                .await?;
            }
        }
    }

    async fn kill_leftovers(&self, job: &JobRecord) {
        if let (exec::Backend::Systemd(systemd, _), false) = (&self.backend, job.unit.is_empty()) {
            systemd.kill(&job.unit).await;
        }
        if job.pid > 1 && job.pid_start != 0 && process_start_time(job.pid) == Some(job.pid_start) {
            exec::kill_group(job.pid);
        }
    }

    /// At shutdown: kills and fails every running job.
    pub async fn stop_jobs(self: &Arc<Self>) {
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
