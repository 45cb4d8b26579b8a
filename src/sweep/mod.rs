//! The expiry sweep (being built): on a cron schedule in the organisation's
//! time zone, find the passwords about to expire and queue one notice per
//! (user, password change time, threshold), never twice.
//!
//! The sweep keeps **what** apart from **when**. What is due for one user is
//! decided by the pure rules in `crate::policy` (`evaluate`, `ledger_key`);
//! when the sweep runs is [`schedule`], which turns the operator's crontab
//! line and time zone into the next run time, and [`engine`] is one run:
//! directory facts in, ledger rows and outbox messages out, one transaction
//! per notice.

pub mod engine;
pub mod routes;
pub mod schedule;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use engine::{SweepDeps, SweepError, SweepRequest, Trigger, run_once};
use schedule::SweepSchedule;

/// Sleeps until each scheduled time and sweeps, until `stop` is cancelled. Errors are
/// logged, never fatal: the next scheduled run tries again.
pub async fn run_scheduled(deps: SweepDeps, schedule: SweepSchedule, stop: CancellationToken) {
    loop {
        let now = Utc::now();
        let Some(next) = schedule.next_after(now) else {
            tracing::warn!(schedule = %schedule, "the sweep schedule has no next run");
            return;
        };
        let wait = (next - now).to_std().unwrap_or_default();
        tracing::debug!(next = %next, "next expiry sweep");
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        let request = SweepRequest::new(next, false, Trigger::Schedule);
        let sweep = run_once(&deps, request, &|_| {});
        tokio::select! {
            () = stop.cancelled() => return,
            result = sweep => match result {
                Ok(_) => {}
                Err(SweepError::AlreadyRunning) => {
                    tracing::info!("skipping the scheduled sweep: another instance is sweeping");
                }
                Err(e) => tracing::error!(error = %e, "the scheduled sweep failed"),
            },
        }
    }
}

/// Finishes a sweep that an instance left `running` (it was killed mid-sweep): waits
/// until that instance's lease lapses, then sweeps again as of the same time. The ledger
/// makes every notice the first run queued a no-op.
pub async fn resume_interrupted(deps: SweepDeps, stop: CancellationToken) {
    let interrupted = match deps.store.list_sweep_runs(10).await {
        Ok(runs) => runs
            .into_iter()
            .find(|r| r.status == "running" && !r.dry_run),
        Err(e) => {
            tracing::warn!(error = %e, "cannot look for interrupted sweeps");
            return;
        }
    };
    let Some(run) = interrupted else { return };
    tracing::warn!(sweep.id = %run.id, "a sweep was interrupted; resuming it once its lease lapses");
    loop {
        // Its owner may be alive after all and finish it.
        match deps.store.get_sweep_run(&run.id).await {
            Ok(Some(current)) if current.status != "running" => return,
            _ => {}
        }
        let request = SweepRequest::new(run.at, false, Trigger::Schedule);
        let attempt = run_once(&deps, request, &|_| {});
        let retry = tokio::select! {
            () = stop.cancelled() => return,
            result = attempt => match result {
                Ok(_) => false,
                Err(SweepError::AlreadyRunning) => true,
                Err(e) => {
                    tracing::error!(error = %e, "resuming the interrupted sweep failed; the next scheduled sweep catches up");
                    false
                }
            },
        };
        if !retry {
            return;
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(deps.settings.lease / 2) => {}
        }
    }
}
