//! Audit retention: applies `[audit] retention_days` at start and then every hour, so that record
//! bodies (subject pseudonyms, purposes, who asked) are not kept longer than the registry's
//! retention rules allow and the audit volume stops growing. The tree's hashes stay, so every
//! checkpoint and proof still verifies. Reads the current configuration on each sweep: a reload
//! that changes the setting takes effect at the next one.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use crate::live::Live;

/// Time between sweeps. Segments are removed whole, so a record outlives its period by at most
/// this plus the time its segment took to fill.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(3_600);

const SECONDS_PER_DAY: u64 = 86_400;

/// Sweeps until `stop` flips.
pub async fn sweep_audit_log(live: Arc<Live>, mut stop: watch::Receiver<bool>) {
    loop {
        if let Some(days) = live.config().audit.retention_days.map(|d| *d.get_ref()) {
            sweep_once(&live, days).await;
        }
        tokio::select! {
            _ = tokio::time::sleep(SWEEP_INTERVAL) => {}
            _ = stop.changed() => return,
        }
    }
}

async fn sweep_once(live: &Live, days: u64) {
    let max_age = Duration::from_secs(days.saturating_mul(SECONDS_PER_DAY));
    let Some(cutoff) = SystemTime::now().checked_sub(max_age) else {
        return;
    };
    let audit = live.state().audit.clone();
    // Reading the oldest segments blocks; keep it off the runtime that accepts connections.
    match tokio::task::spawn_blocking(move || audit.prune_older_than(cutoff)).await {
        Ok(Ok(report)) if report.segments_removed > 0 => tracing::info!(
            retention_days = days,
            segments_removed = report.segments_removed,
            first_retained = report.first_retained,
            "audit retention removed record bodies; their hashes stay in the tree"
        ),
        Ok(Ok(_)) => tracing::debug!(retention_days = days, "audit retention: nothing due"),
        Ok(Err(error)) => tracing::warn!(
            retention_days = days,
            %error,
            "audit retention sweep failed; retrying at the next sweep"
        ),
        Err(error) => tracing::warn!(%error, "audit retention sweep did not finish"),
    }
}
