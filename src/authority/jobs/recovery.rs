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
    /// stopped. What is left of them is killed, and gone, before they are failed: their
    /// unit (systemd backend), their cgroup (found by job id), or their session (by the
    /// recorded pid, if it still names the same process or none). Job cgroups of this
    /// store's jobs that are still there go too.
    pub async fn fail_stale_jobs(self: &Arc<Self>) -> Result<(), Error> {
        if let exec::Backend::Direct(containment) = &self.backend {
            for id in containment.leftovers() {
                if let Some(job) = self.store.job(&id)? {
                    tracing::warn!("killing what is left of {id} in its cgroup");
                    self.kill_leftovers(&job).await;
                }
            }
        }
        if let exec::Backend::Systemd(systemd, _) = &self.backend {
            for unit in systemd.job_units().await {
                let ours = job_of_unit(&unit)
                    .map(|id| self.store.job(id))
                    .transpose()?
                    .flatten()
                    .is_some_and(|job| job.unit == unit);
                if ours {
                    tracing::warn!("stopping the leftover unit {unit}");
                    systemd.stop(&unit).await;
                }
            }
        }
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
