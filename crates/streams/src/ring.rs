//! Producers' rings: the doorbell of a worker over many topics where the server sends no
//! keyspace notifications.
//!
//! A read that names N streams costs Redis about 2 µs per stream, so a worker over 10,000
//! topics cannot read them all for every message. Such a worker subscribes to the namespace's
//! rings channel (`<ns>:rings`, `consumer/doorbell.rs`), and every writer of a topic stream in
//! this crate (producers, the scheduled-message mover, dead-letter replay) publishes the
//! stream's key there after its write: the worker then reads only the streams that rang.
//!
//! Ringing costs nothing where nobody listens: `PUBLISH` answers how many received it, and a
//! writer that heard "nobody" rings again only with one write a second (to learn of a worker
//! that started since). While somebody listens, a ring goes in the same pipeline as the write,
//! after it (after a script's write, it is sent without waiting for it). A user whose ACL
//! refuses `PUBLISH` on the channel is told once at `info` and asked again every 10 minutes.
//! Standalone Redis only: on a cluster every `PUBLISH` travels to every node, and workers
//! there read per slot anyway.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fred::bytes_utils::Str;
use fred::clients::{Client, Pipeline};
use fred::interfaces::PubsubInterface;
use fred::types::Value;
use tributary_core::Connection;

/// How often a writer that heard nobody listening rings again with a write, to learn of a
/// worker that started listening since. Until then that worker finds the writer's entries with
/// its reads of every stream (at most one second apart while messages flow).
const ASK_AGAIN_EVERY: Duration = Duration::from_secs(1);

/// How often a writer whose rings the server refused (`NOPERM`) tries again.
const ASK_AGAIN_AFTER_REFUSAL: Duration = Duration::from_secs(600);

/// One writer's rings (cheap: a producer, a mover and a dead-letter stream each hold one).
#[derive(Debug)]
pub(crate) struct Ringer {
    /// `None` on Redis Cluster: no rings.
    channel: Option<Str>,
    /// The last ring reached somebody: every write rings.
    listened: AtomicBool,
    /// While nobody listened: when the next write rings (milliseconds since `epoch`).
    next_ask_ms: AtomicU64,
    epoch: Instant,
    /// A refusal was said.
    said_refused: AtomicBool,
}

impl Ringer {
    pub(crate) fn new(conn: &Connection) -> Self {
        Self {
            channel: conn.readers_survive_errors().then(|| Str::from(conn.namespace().rings_channel())),
            listened: AtomicBool::new(false),
            next_ask_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            said_refused: AtomicBool::new(false),
        }
    }

    /// Whether the write about to be sent rings. While nobody listened, only one caller a
    /// second is told yes.
    pub(crate) fn due(&self) -> bool {
        if self.channel.is_none() {
            return false;
        }
        if self.listened.load(Ordering::Relaxed) {
            return true;
        }
        let now = self.now_ms();
        let next = self.next_ask_ms.load(Ordering::Relaxed);
        now >= next
            && self
                .next_ask_ms
                .compare_exchange(next, now + ASK_AGAIN_EVERY.as_millis() as u64, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// Queues the ring for the stream `key` in `pipeline`, after the write (call when [`Self::due`]).
    pub(crate) async fn queue(&self, pipeline: &Pipeline<Client>, key: &str) {
        if let Some(channel) = &self.channel {
            let _: Result<(), _> = pipeline.publish(channel.clone(), key).await;
        }
    }

    /// Rings for the stream `key` when due, after a write that could not carry it (a script's),
    /// without waiting: the write is done, and its caller should not wait for a ring. A ring
    /// that fails is only noted: the worker's reads of every stream find the entry.
    pub(crate) fn ring_soon(self: &Arc<Self>, conn: &Connection, key: &str) {
        if !self.due() {
            return;
        }
        let Some(channel) = self.channel.clone() else { return };
        let (this, conn, key) = (self.clone(), conn.clone(), key.to_owned());
        tokio::spawn(async move {
            let reply = conn.client_for(&key).await.publish::<Value, _, _>(channel, key.as_str()).await;
            this.answered(reply.as_ref());
        });
    }

    /// Notes the reply of a ring's `PUBLISH`: how many received it, or why it failed.
    pub(crate) fn answered(&self, reply: Result<&Value, &fred::error::Error>) {
        match reply {
            Ok(reply) => self.heard(reply),
            Err(e) if e.details().starts_with("NOPERM") => {
                self.listened.store(false, Ordering::Relaxed);
                let next = self.now_ms() + ASK_AGAIN_AFTER_REFUSAL.as_millis() as u64;
                self.next_ask_ms.store(next, Ordering::Relaxed);
                if !self.said_refused.swap(true, Ordering::Relaxed) {
                    tracing::info!(error = %e, "rings for workers over many topics are refused (the ACL user needs +publish \
                        and the channel <ns>:rings); such workers read every topic instead. Asked again every 10 minutes");
                }
            }
            Err(e) => tracing::debug!(error = %e, "ring not sent"),
        }
    }

    /// Notes the reply of a ring's `PUBLISH` (how many received it).
    fn heard(&self, reply: &Value) {
        let listened = matches!(reply, Value::Integer(n) if *n > 0);
        if self.listened.swap(listened, Ordering::Relaxed) != listened && !listened {
            // Nobody listens any more: ask again in a while.
            let next = self.now_ms() + ASK_AGAIN_EVERY.as_millis() as u64;
            self.next_ask_ms.store(next, Ordering::Relaxed);
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ringer() -> Ringer {
        Ringer {
            channel: Some(Str::from("ns:rings")),
            listened: AtomicBool::new(false),
            next_ask_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            said_refused: AtomicBool::new(false),
        }
    }

    #[test]
    fn nobody_listening_rings_once_a_second_and_a_listener_makes_every_write_ring() {
        let r = ringer();
        assert!(r.due(), "the first write asks");
        r.heard(&Value::Integer(0));
        assert!(!r.due() && !r.due(), "nobody listened: no ring before a second has passed");
        r.heard(&Value::Integer(1));
        assert!(r.due() && r.due(), "somebody listens: every write rings");
        r.heard(&Value::Integer(0));
        assert!(!r.due(), "nobody any more: quiet again");
    }

    #[test]
    fn on_a_cluster_nothing_rings() {
        let r = Ringer { channel: None, ..ringer() };
        assert!(!r.due());
    }
}
