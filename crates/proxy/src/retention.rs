//! Audit retention: applies `[audit] retention_days` at start and then every hour, so that record
//! bodies (subject pseudonyms, purposes, who asked) are not kept longer than the registry's
//! retention rules allow and the audit volume stops growing. The tree's hashes stay, so every
//! checkpoint and proof still verifies. The logs named in `retired_dirs` (earlier generations on
//! the same volume) are swept too: their records have the same retention period. Reads the current
//! configuration on each sweep: a reload that changes the settings takes effect at the next one.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tollbu_audit::PruneReport;

use crate::live::Live;

/// Time between sweeps. Segments are removed whole, so a record outlives its period by at most
/// this plus the time its segment took to fill.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(3_600);

const SECONDS_PER_DAY: u64 = 86_400;

/// Pause between the prune calls of one sweep over a long backlog (each removes at most
/// [`tollbu_audit::MAX_SEGMENTS_PER_PRUNE`] segments).
const BACKLOG_PAUSE: Duration = Duration::from_secs(1);

/// Sweeps until `stop` flips.
pub async fn sweep_audit_log(live: Arc<Live>, mut stop: watch::Receiver<bool>) {
    let config = live.config();
    for dir in &config.audit.retired_dirs {
        let dir = config.resolve(dir.get_ref());
        if !dir.join("segments").is_dir() {
            tracing::warn!(
                dir = %dir.display(),
                "`audit.retired_dirs` names a directory without an audit log on this volume: nothing there is swept or shown in the citizen view (a replica created after the rotation has none; otherwise the path is wrong)"
            );
        }
    }
    loop {
        let more_due = match live.config().audit.retention_days.map(|d| *d.get_ref()) {
            Some(days) => sweep_once(&live, days, &stop).await,
            None => false,
        };
        let wait = if more_due {
            BACKLOG_PAUSE
        } else {
            SWEEP_INTERVAL
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
    }
}

/// One prune call on the active log and one on each retired log; true when any stopped at its
/// segment limit with more due. A shutdown stops it between calls (the next start sweeps again).
async fn sweep_once(live: &Live, days: u64, stop: &watch::Receiver<bool>) -> bool {
    let max_age = Duration::from_secs(days.saturating_mul(SECONDS_PER_DAY));
    let Some(cutoff) = SystemTime::now().checked_sub(max_age) else {
        return false;
    };
    let mut more_due = sweep_active_log(live, days, cutoff).await;
    let config = live.config();
    for dir in &config.audit.retired_dirs {
        if *stop.borrow() {
            return more_due;
        }
        more_due |= sweep_retired_log(live, days, cutoff, config.resolve(dir.get_ref())).await;
    }
    more_due
}

async fn sweep_active_log(live: &Live, days: u64, cutoff: SystemTime) -> bool {
    let audit = live.state().audit.clone();
    let dir = audit.dir().to_path_buf();
    run_prune(live, days, dir, move || audit.prune_older_than(cutoff))
        .await
        .is_some_and(|report| report.more_due)
}

/// Retention on a log this gateway no longer writes; true when more is due. A replica created
/// after the rotation has no such log on its volume, which is not a failure. The retention
/// statement is signed with the active log's key (the retired log's may be gone), so verifying the
/// retired log takes that verifier key with `--retention-key`. As on the active log,
/// at most [`tollbu_audit::MAX_SEGMENTS_PER_PRUNE`] segments go per call, deleted gently (the
/// active log's writer shares the disk), so a long backlog never holds a shutdown for long.
async fn sweep_retired_log(live: &Live, days: u64, cutoff: SystemTime, dir: PathBuf) -> bool {
    if !dir.join("segments").is_dir() {
        tracing::debug!(dir = %dir.display(), "audit retention: no retired log here");
        return false;
    }
    let target = dir.clone();
    let audit = live.state().audit.clone();
    run_prune(live, days, dir, move || {
        audit.prune_retired_log(&target, cutoff, tollbu_audit::MAX_SEGMENTS_PER_PRUNE)
    })
    .await
    .is_some_and(|report| report.more_due)
}

/// Runs one prune call and reports it; a failure is logged and counted on `/metrics`, and the
/// next sweep retries.
async fn run_prune(
    live: &Live,
    days: u64,
    dir: PathBuf,
    prune: impl FnOnce() -> Result<PruneReport, tollbu_audit::AuditError> + Send + 'static,
) -> Option<PruneReport> {
    // Reading the oldest segments and deleting them blocks; keep it off the runtime that accepts
    // connections. A shutdown waits for this call within its grace, a few seconds at most; past
    // the grace it goes on alone, and a prune cut short by the exit is finished by the next one
    // (the `pruned` marker is written before any segment goes).
    let failure = match tokio::task::spawn_blocking(prune).await {
        Ok(Ok(report)) => {
            if report.segments_removed > 0 {
                tracing::info!(
                    dir = %dir.display(),
                    retention_days = days,
                    segments_removed = report.segments_removed,
                    first_retained = report.first_retained,
                    more_due = report.more_due,
                    "audit retention removed record bodies; their hashes stay in the tree"
                );
            } else {
                tracing::debug!(dir = %dir.display(), retention_days = days, "audit retention: nothing due");
            }
            return Some(report);
        }
        Ok(Err(error)) => error.to_string(),
        Err(error) => format!("the sweep did not finish: {error}"),
    };
    live.retention_failures.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(
        dir = %dir.display(),
        retention_days = days,
        error = %failure,
        "audit retention sweep failed; retrying at the next sweep"
    );
    None
}
