//! A running job's supervision: its end, cancellation (SIGTERM, then SIGKILL after
//! `exec.kill_grace_secs`), its wall-clock limit and its output cap (SIGKILL at once);
//! then the end is recorded.

use std::fs::OpenOptions;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::{Cancel, STREAMS};
use crate::authority::Authority;
use crate::exec;
use crate::store::JobEnd;
use crate::time::Micros;

/// Waits for a job to end, enforcing its limits and cancellation, then records the end.
/// `since` is when the job started (earlier than now for a job adopted after a restart:
/// its wall-clock limit counts from then).
pub(super) async fn supervise(
    authority: Arc<Authority>,
    id: String,
    mut started: exec::Started,
    since: Micros,
    cancel: Arc<Cancel>,
    done: watch::Sender<Option<JobEnd>>,
) {
    let limits = authority.config().exec.clone();
    let dir = authority.job_dir(&id);
    let killer = started.killer();
    let elapsed = Duration::from_micros((authority.now() - since).max(0) as u64);
    let deadline = (limits.timeout_secs > 0).then(|| {
        let limit = Duration::from_secs(limits.timeout_secs).saturating_sub(elapsed);
        tokio::time::Instant::now() + limit
    });
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let mut reason: Option<String> = None;
    let mut over_cap = false;
    // When a cancelled job that has not ended by then is killed.
    let mut grace_end: Option<tokio::time::Instant> = None;
    let mut terminated = false;
    let ended = loop {
        tokio::select! {
            ended = started.wait() => break ended,
            _ = cancel.requested.notified() => {
                let by = cancel.by.lock().unwrap_or_else(|e| e.into_inner()).clone().unwrap_or_default();
                reason.get_or_insert_with(|| format!("cancelled by {by}"));
                if !terminated {
                    terminated = true;
                    grace_end = Some(tokio::time::Instant::now() + Duration::from_secs(limits.kill_grace_secs));
                    killer.terminate().await;
                }
            }
            _ = async { tokio::time::sleep_until(grace_end.expect("only polled with a grace end")).await }, if grace_end.is_some() => {
                tracing::info!("{id} did not end within {} s of SIGTERM (exec.kill_grace_secs): killed", limits.kill_grace_secs);
                grace_end = None;
                killer.kill().await;
            }
            _ = async { tokio::time::sleep_until(deadline.expect("only polled with a deadline")).await }, if deadline.is_some() && reason.is_none() => {
                reason = Some(format!("timed out after {} s (exec.timeout_secs)", limits.timeout_secs));
                killer.kill().await;
            }
            // Also while a cancelled job has its grace.
            _ = tick.tick(), if !over_cap => {
                let written = exec::output_size(&dir.join("stdout")).max(exec::output_size(&dir.join("stderr")));
                if written > limits.max_output_bytes {
                    over_cap = true;
                    reason.get_or_insert_with(|| format!("wrote more than {} bytes of output (exec.max_output_bytes)", limits.max_output_bytes));
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
            started.release().await;
        }
        // Dropping `done` without an end tells waiters to ask the store.
        Ok(Err(err)) => tracing::error!("cannot record the end of {id}: {err}"),
        Err(err) => tracing::error!("cannot record the end of {id}: {err}"),
    }
}
