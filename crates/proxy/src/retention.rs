//! Audit retention: applies `[audit] retention_days` at start and then every hour, so that record
//! bodies (subject pseudonyms, purposes, who asked) are not kept longer than the registry's
//! retention rules allow and the audit volume stops growing. The tree's hashes stay, so every
//! checkpoint and proof still verifies. Reads the current configuration on each sweep: a reload
//! that changes the setting takes effect at the next one.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

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
    loop {
        let more_due = match live.config().audit.retention_days.map(|d| *d.get_ref()) {
            Some(days) => sweep_once(&live, days).await,
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

/// One prune call; true when it stopped at its segment limit with more due.
async fn sweep_once(live: &Live, days: u64) -> bool {
    let max_age = Duration::from_secs(days.saturating_mul(SECONDS_PER_DAY));
    let Some(cutoff) = SystemTime::now().checked_sub(max_age) else {
        return false;
    };
    let audit = live.state().audit.clone();
    // Reading the oldest segments and deleting them blocks; keep it off the runtime that accepts
    // connections. A shutdown waits for this call, a few seconds at most.
    match tokio::task::spawn_blocking(move || audit.prune_older_than(cutoff)).await {
        Ok(Ok(report)) if report.segments_removed > 0 => {
            tracing::info!(
                retention_days = days,
                segments_removed = report.segments_removed,
                first_retained = report.first_retained,
                more_due = report.more_due,
                "audit retention removed record bodies; their hashes stay in the tree"
            );
            report.more_due
        }
        Ok(Ok(_)) => {
            tracing::debug!(retention_days = days, "audit retention: nothing due");
            false
        }
        Ok(Err(error)) => {
            live.retention_failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                retention_days = days,
                %error,
                "audit retention sweep failed; retrying at the next sweep"
            );
            false
        }
        Err(error) => {
            live.retention_failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%error, "audit retention sweep did not finish");
            false
        }
    }
}
