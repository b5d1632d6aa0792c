//! The metric a connection records (see `tributary_streams::metrics` for the others).

use fred::types::config::Server;
use tokio::sync::broadcast;

/// Times a connection got its link to Redis back after losing it (counter): on Redis
/// Cluster, the link to any primary. Label: `messaging.system` (`redis_streams`). Dedicated
/// connections (a worker's blocking reads) are not counted: they follow the shared one.
pub const RECONNECTS: &str = "tributary.reconnects";

/// Counts the reconnections `rx` announces, until its connection is gone.
pub(crate) fn count_reconnects(mut rx: broadcast::Receiver<Server>) {
    let counter = ::metrics::counter!(RECONNECTS, "messaging.system" => "redis_streams");
    tokio::spawn(async move {
        loop {
            match rx.recv().await {
                Ok(_) => counter.increment(1),
                // Missed announcements are reconnections all the same.
                Err(broadcast::error::RecvError::Lagged(n)) => counter.increment(n),
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
    });
}
