//! How much of the jobs is kept: records and output older than `exec.retention_secs`
//! go; per run-as user at most `exec.max_jobs_kept_per_user` records and
//! `exec.max_output_bytes_per_user` bytes of output are kept (the oldest go first:
//! output before records).

use std::collections::HashMap;
use std::sync::Mutex;

use crate::store::{JobRecord, Store};

use super::super::{Authority, Error};

/// Job ids read per page.
const PAGE: usize = 256;

/// Per run-as user: bytes of output kept and finished records kept, counted once (by a
/// walk of that user's jobs) and then kept up to date.
#[derive(Default)]
pub struct OutputTotals(Mutex<HashMap<String, Totals>>);

#[derive(Default, Clone, Copy)]
struct Totals {
    bytes: u64,
    jobs: u64,
}

impl OutputTotals {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Totals>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn finished(&self, run_as: &str, bytes: u64) {
        if let Some(totals) = self.lock().get_mut(run_as) {
            totals.bytes += bytes;
            totals.jobs += 1;
        }
    }

    fn get(&self, run_as: &str) -> Option<Totals> {
        self.lock().get(run_as).copied()
    }

    fn set(&self, run_as: &str, totals: Totals) {
        let mut all = self.lock();
        // Bounded: forget everyone when too many users were counted (recounted lazily).
        if all.len() >= 4096 {
            all.clear();
        }
        all.insert(run_as.to_string(), totals);
    }

    fn forget(&self) {
        self.lock().clear();
    }
}

fn kept_bytes(job: &JobRecord) -> u64 {
    if job.output_kept && !job.running() {
        job.stdout_bytes + job.stderr_bytes
    } else {
        0
    }
}

impl Authority {
    /// The totals of `run_as`, counting them if they are not known yet.
    fn totals(&self, run_as: &str) -> Result<Totals, Error> {
        if let Some(totals) = self.output_totals.get(run_as) {
            return Ok(totals);
        }
        let mut totals = Totals::default();
        let mut before: Option<Vec<u8>> = None;
        loop {
            let page = self.store.job_ids_of(run_as, before.as_deref(), PAGE)?;
            let Some((last, _)) = page.last() else { break };
            before = Some(last.clone());
            for (_, id) in &page {
                if let Some(job) = self.store.job(id)?
                    && !job.running()
                {
                    totals.bytes += kept_bytes(&job);
                    totals.jobs += 1;
                }
            }
        }
        self.output_totals.set(run_as, totals);
        Ok(totals)
    }

    /// Brings `run_as` within its per-user limits, oldest jobs first (best effort).
    pub(super) fn keep_within_limits(&self, run_as: &str) {
        if let Err(err) = self.try_keep_within_limits(run_as) {
            tracing::warn!("cannot apply the job limits of {run_as}: {err}");
        }
    }

    fn try_keep_within_limits(&self, run_as: &str) -> Result<(), Error> {
        let config = self.config();
        let limits = &config.exec;
        let (max_bytes, max_jobs) = (
            limits.max_output_bytes_per_user,
            limits.max_jobs_kept_per_user,
        );
        if max_bytes == 0 && max_jobs == 0 {
            return Ok(());
        }
        let mut totals = self.totals(run_as)?;
        let over = |t: &Totals| {
            (max_bytes > 0 && t.bytes > max_bytes) || (max_jobs > 0 && t.jobs > max_jobs)
        };
        while over(&totals) {
            let ids = self.store.oldest_job_ids_of(run_as, PAGE)?;
            if ids.is_empty() {
                break;
            }
            let mut writes = Vec::new();
            for id in ids {
                if !over(&totals) {
                    break;
                }
                let Some(mut job) = self.store.job(&id)? else {
                    continue;
                };
                if job.running() {
                    continue;
                }
                let freed = kept_bytes(&job);
                self.delete_output(&job.id);
                if max_jobs > 0 && totals.jobs > max_jobs {
                    writes.extend(Store::delete_job(&job));
                    totals.jobs -= 1;
                } else if job.output_kept {
                    job.output_kept = false;
                    writes.extend(Store::put_job(&job));
                } else {
                    continue;
                }
                totals.bytes = totals.bytes.saturating_sub(freed);
            }
            if writes.is_empty() {
                break;
            }
            let mut txn = self.begin()?;
            txn.apply(&writes)?;
            txn.commit()?;
        }
        self.output_totals.set(run_as, totals);
        Ok(())
    }

    fn delete_output(&self, id: &str) {
        let dir = self.job_dir(id);
        if let Err(err) = std::fs::remove_dir_all(&dir)
            && err.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!("cannot delete {}: {err}", dir.display());
        }
    }

    /// Deletes finished jobs (records and output) older than `exec.retention_secs`:
    /// found by a walk in pages, deleted in transactions of a bounded size.
    pub fn prune_jobs(&self) -> Result<usize, Error> {
        let retention = self.config().exec.retention_secs;
        if retention == 0 {
            return Ok(0);
        }
        let cutoff = self.now() - crate::time::secs(retention);
        let mut pruned = 0;
        let mut from = String::new();
        loop {
            let page = self.store.jobs_from(&from, PAGE)?;
            let Some(last) = page.last() else { break };
            from = format!("{}\0", last.id);
            let old: Vec<&JobRecord> = page
                .iter()
                .filter(|job| !job.running() && job.finished <= cutoff)
                .collect();
            if old.is_empty() {
                continue;
            }
            let mut writes = Vec::new();
            for job in &old {
                // Output first: a record without output says "gone", output without a
                // record would never be found again.
                self.delete_output(&job.id);
                writes.extend(Store::delete_job(job));
            }
            let mut txn = self.begin()?;
            txn.apply(&writes)?;
            txn.commit()?;
            pruned += old.len();
        }
        if pruned > 0 {
            self.output_totals.forget();
            tracing::info!(
                "pruned {pruned} {} older than {retention} s",
                crate::authority::rules::plural(pruned, "job", "jobs")
            );
        }
        Ok(pruned)
    }
}
