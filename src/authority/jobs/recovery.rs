//! Jobs the daemon finds recorded as running when it starts (it stopped or crashed
//! while they ran), and the jobs it leaves when it stops.

use crate::exec::{self, ProcessEnd};
use crate::store::JobRecord;
use crate::sys::process_start_time;

use super::super::{Authority, Error};

/// Job records read per page when looking for running ones.
const PAGE: usize = 1000;

impl Authority {
    /// At start: jobs recorded as running did so when the daemon stopped. They are
    /// failed, and what is left of them is killed: their unit (systemd backend), or a
    /// process group still alive from them (same pid *and* start time).
    pub(in crate::authority) fn fail_stale_jobs(&self) -> Result<(), Error> {
        let mut from = String::new();
        loop {
            let page = self.store.jobs_from(&from, PAGE)?;
            let Some(last) = page.last() else {
                return Ok(());
            };
            from = format!("{}\0", last.id);
            for job in page.iter().filter(|job| job.running()) {
                self.kill_leftovers(job);
                self.finish_job(
                    &job.id,
                    ProcessEnd::Failed("proxyuserd stopped while the job ran".into()),
                    None,
                )?;
            }
        }
    }

    fn kill_leftovers(&self, job: &JobRecord) {
        if let (exec::Backend::Systemd(systemd, _), false) = (&self.backend, job.unit.is_empty()) {
            self.runtime.block_on(systemd.kill(&job.unit));
        }
        if job.pid > 1 && job.pid_start != 0 && process_start_time(job.pid) == Some(job.pid_start) {
            exec::kill_group(job.pid);
        }
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
                self.runtime.block_on(killer.kill());
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
}
