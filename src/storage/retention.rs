//! Retention: delivered deliveries and call states older than the retention period are
//! removed, in small rounds so that hooks keep being written in between. Pending and dead
//! deliveries stay until they are delivered (or retried and delivered).

use std::sync::Arc;
use std::time::Duration;

use super::{Pruned, Storage, StorageError, now_ms};

/// Rows per round: a round is one short transaction of the writer.
const ROUND: usize = 1_000;
/// Pause between rounds, for the writes of hooks.
const BETWEEN_ROUNDS: Duration = Duration::from_millis(5);

/// Removes what is older than `before_ms`: rounds until no old delivered delivery is left
/// and one whole pass over the call states is done. Returns the totals.
pub async fn prune_before(store: &dyn Storage, before_ms: i64) -> Result<Pruned, StorageError> {
    let mut total = Pruned::default();
    loop {
        let r = store.prune(before_ms, ROUND).await?;
        total.deliveries += r.deliveries;
        total.calls += r.calls;
        total.calls_scanned += r.calls_scanned;
        total.calls_pass_done |= r.calls_pass_done;
        if !r.more_deliveries && total.calls_pass_done {
            return Ok(total);
        }
        tokio::time::sleep(BETWEEN_ROUNDS).await;
    }
}

/// Prunes what is older than `keep` now, and then every `every`, for as long as the runtime runs.
pub fn spawn(store: Arc<dyn Storage>, keep: Duration, every: Duration) {
    tokio::spawn(async move {
        loop {
            let before = now_ms() - keep.as_millis() as i64;
            match prune_before(store.as_ref(), before).await {
                Ok(p) if p.deliveries + p.calls > 0 => {
                    tracing::info!(deliveries = p.deliveries, calls = p.calls, "retention: removed old records")
                }
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "retention: pruning failed; trying again later"),
            }
            tokio::time::sleep(every).await;
        }
    });
}
