//! The producer: typed, batched and idempotent publishing to topics.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use fred::clients::Client;
use fred::interfaces::{ClientLike, EventInterface, StreamsInterface};
use fred::types::streams::XCap;
use fred::types::{Key, Value};
use serde::Serialize;
use tokio::sync::broadcast::error::TryRecvError;
use tributary_core::cache::NameCache;
use tributary_core::connection::slot_command;
use tributary_core::envelope::short_type_name;
use tributary_core::{
    Codec, Connection, EntryId, Envelope, EnvelopeRef, Headers, MessageId, MsgPack, RedisError, Topic,
};

use crate::metrics::PublishMetrics;
use crate::redis::entry_id_of;
use crate::retention::Retention;
use crate::ring::Ringer;
use crate::schedule::{due_score, index_at};
use crate::scripts::{PUBLISH_IDEMPOTENT, SCHEDULE};
use crate::trace::{current_trace, next_traceparent, publish_span, record_failure, stamp};
use crate::{BuildError, StreamError};
use tributary_core::trace::{follow_unless_traced, span_traceparent};

/// Publishes messages to topics.
///
/// A publish returns only after Redis stored the entry and answered with its id; any failure
/// (connection lost, timeout, error reply) is returned as an error. Clones share the
/// connection.
///
/// # Example
/// ```no_run
/// # async fn demo(conn: tributary_core::Connection) -> Result<(), tributary_streams::StreamError> {
/// use tributary_streams::Producer;
///
/// #[derive(serde::Serialize)]
/// struct OrderPlaced { id: u64 }
///
/// let producer = Producer::new(conn);
/// let id = producer.publish("orders", &OrderPlaced { id: 1 }).await?;
/// let again = producer
///     .message("orders", &OrderPlaced { id: 2 })
///     .key("customer-7")                 // same key: handled in order
///     .header("source", "checkout")
///     .idempotency_key("order-2")        // a retried publish returns the first id
///     .send()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Producer<C: Codec = MsgPack> {
    conn: Connection,
    codec: C,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    retention_refresh: Duration,
    dedup_ttl: Duration,
    safe_trim_every: u64,
    /// What a publish to each topic needs, computed on its first publish.
    targets: NameCache<Target>,
    /// Rings for a worker over many topics (`ring.rs`).
    ringer: Arc<Ringer>,
    /// See [`ProducerBuilder::start_traces`].
    start_traces: bool,
    /// See [`ProducerBuilder::type_names`].
    type_names: bool,
    /// See [`ProducerBuilder::message_ids`].
    message_ids: bool,
}

/// Everything about one topic (or partition) that a publish needs: validating the name,
/// formatting the stream key and hashing its slot once per topic instead of on every publish,
/// and the topic's stored settings as last read.
#[derive(Debug)]
struct Target {
    topic: Topic,
    key: String,
    /// The key as a command argument; cloning it only counts a reference.
    key_arg: Key,
    slot: u16,
    /// The topic's stored settings, shared by its partitions' targets.
    retention: Arc<CachedRetention>,
    /// Entries this producer published to the topic: safe retention trims every
    /// `safe_trim_every` of them (counted per topic, so every topic gets its turn).
    publishes: AtomicU64,
    metrics: PublishMetrics,
    /// A partitioned topic's partitions, made on their first use.
    partitions: RwLock<Vec<Arc<Target>>>,
    /// Where the next message without a key goes, of a partitioned topic.
    next: AtomicU32,
}

impl Target {
    fn new(conn: &Connection, topic: Topic, retention: Arc<CachedRetention>) -> Self {
        let key = conn.namespace().topic_stream(&topic);
        Target {
            key_arg: Key::from(Bytes::from(key.clone())),
            slot: fred::util::redis_keyslot(key.as_bytes()),
            retention,
            publishes: AtomicU64::new(0),
            metrics: PublishMetrics::new(topic.parent().as_str()),
            topic,
            key,
            partitions: RwLock::new(Vec::new()),
            next: AtomicU32::new(0),
        }
    }

    /// Partition `index` of this topic, which has `count` of them.
    fn partition(&self, conn: &Connection, index: u32, count: u32) -> Arc<Target> {
        if let Some(t) = self.partitions.read().expect("partitions lock").get(index as usize) {
            return t.clone();
        }
        let mut parts = self.partitions.write().expect("partitions lock");
        if parts.len() != count as usize {
            *parts = (0..count)
                .map(|p| Arc::new(Target::new(conn, self.topic.partition(p), self.retention.clone())))
                .collect();
        }
        parts[index as usize].clone()
    }
}

/// The trimming arguments of an `XADD` with `retention` now (none without plain retention;
/// the clock is read only with retention).
fn cap(retention: Option<Retention>) -> XCap {
    retention.map_or_else(|| XCap::from(None), |r| r.xadd_cap(SystemTime::now()))
}

/// A topic's stored retention as this producer last read it (see `Producer::retention`).
#[derive(Debug, Default)]
struct CachedRetention {
    /// The retention and when it was read; `None` before the first read.
    last: RwLock<Option<(Option<Retention>, Instant)>>,
    /// A background read of it is under way.
    refreshing: AtomicBool,
    /// The topic's partition count as last read; 0 for a topic of one stream.
    partitions: AtomicU32,
    /// Since when a count read before has been found gone (see `look_up`).
    partitions_gone_since: std::sync::Mutex<Option<Instant>>,
}

/// For how many `retention_refresh` (60 s by default) a producer keeps partitioning a topic
/// whose count it read before and now finds gone. Running members of the topic put a lost count
/// back within a tick (a third of their `partition_lease`); one gone this long was deleted with
/// its topic (or nothing consumes the topic now): its messages go to the topic's own stream
/// again, where a worker finds them, rather than to partitions nobody may consume.
const PARTITIONS_KEPT_WHEN_GONE: u32 = 12;

/// Clears [`CachedRetention::refreshing`] when the background read ends, however it ends.
struct Refreshing<'a>(&'a AtomicBool);

impl Drop for Refreshing<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// Topics remembered per producer; beyond this the cache starts over (a producer that
/// publishes to ever new topic names must not grow without bound). A few hundred bytes each:
/// large enough that a producer over tens of thousands of topics does not start over (and
/// read each topic's retention again) all the time.
const MAX_TARGETS: usize = 65_536;

impl Producer<MsgPack> {
    /// A producer with default settings: MessagePack, topics' stored retention read again
    /// every 5 s, idempotency keys kept 24 h.
    pub fn new(conn: Connection) -> Self {
        Self::builder(conn).build().expect("the default settings are valid")
    }

    /// Configures a producer.
    pub fn builder(conn: Connection) -> ProducerBuilder<MsgPack> {
        ProducerBuilder {
            conn,
            codec: MsgPack,
            retention_refresh: Duration::from_secs(5),
            dedup_ttl: Duration::from_secs(24 * 3600),
            safe_trim_every: 100,
            start_traces: false,
            type_names: false,
            message_ids: false,
        }
    }
}

/// Configures a [`Producer`]. Created by [`Producer::builder`].
#[derive(Debug)]
#[must_use = "builders do nothing until `.build()` is called"]
pub struct ProducerBuilder<C> {
    conn: Connection,
    codec: C,
    retention_refresh: Duration,
    dedup_ttl: Duration,
    safe_trim_every: u64,
    start_traces: bool,
    type_names: bool,
    message_ids: bool,
}

impl<C: Codec> ProducerBuilder<C> {
    /// Encodes payloads with `codec` instead of MessagePack.
    pub fn codec<C2: Codec>(self, codec: C2) -> ProducerBuilder<C2> {
        ProducerBuilder {
            conn: self.conn,
            codec,
            retention_refresh: self.retention_refresh,
            dedup_ttl: self.dedup_ttl,
            safe_trim_every: self.safe_trim_every,
            start_traces: self.start_traces,
            type_names: self.type_names,
            message_ids: self.message_ids,
        }
    }

    /// How long a topic's retention, read from Redis, is used before it is read again.
    /// Defaults to 5 s.
    ///
    /// Retention is the topic's, stored with it by
    /// [`Admin::set_retention`](crate::Admin::set_retention); every producer applies it. A
    /// publish uses the value read at most this long ago, so a change reaches every producer
    /// within this bound (plus one round trip), without a read per publish: the first publish
    /// to a topic, and one after a quiet spell longer than this, reads it before its `XADD`;
    /// past half of it, a publish starts a read in the background, so a topic published to
    /// more often never waits for one. A topic with no stored retention is not trimmed.
    pub fn retention_refresh(mut self, every: Duration) -> Self {
        self.retention_refresh = every;
        self
    }

    /// How long an idempotency key is remembered. Defaults to 24 h.
    pub fn dedup_ttl(mut self, ttl: Duration) -> Self {
        self.dedup_ttl = ttl;
        self
    }

    /// With safe retention (the topic's, see [`retention_refresh`](Self::retention_refresh)),
    /// trim once every `n` publishes (per producer and topic). Defaults to 100.
    pub fn safe_trim_every(mut self, n: u64) -> Self {
        self.safe_trim_every = n.max(1);
        self
    }

    /// A message published outside any trace starts one of its own (a new root
    /// `traceparent`). Off by default: a message carries a trace context only when it is
    /// published inside one (a handler's, or [`in_trace`](crate::trace::in_trace)'s), which
    /// keeps 55 bytes and their making off every other message.
    pub fn start_traces(mut self, on: bool) -> Self {
        self.start_traces = on;
        self
    }

    /// Every message carries its type's name (the Rust type's last path segment, e.g.
    /// `OrderPlaced`), for consumers that tell message types apart by
    /// `Envelope::type_name`. Off by default in wire format version 3, where a message
    /// carries a type name only when one is given (`Publish::type_name`); versions 1 and 2
    /// always write it.
    pub fn type_names(mut self, on: bool) -> Self {
        self.type_names = on;
        self
    }

    /// Every message carries a message id of its own (a UUIDv7, 41 bytes) instead of the one
    /// derived from its entry (wire format version 3, `MessageId::of_entry`): for ids unique
    /// across Redis deployments that use the same namespace and topics (one de-duplication
    /// store for two regions). Off by default; versions 1 and 2 always write one.
    pub fn message_ids(mut self, on: bool) -> Self {
        self.message_ids = on;
        self
    }

    /// Builds the producer. No I/O.
    ///
    /// # Errors
    /// None with the settings there are today; the `Result` is every builder's (see
    /// [`BuildError`]).
    pub fn build(self) -> Result<Producer<C>, BuildError> {
        Ok(Producer {
            codec: self.codec,
            shared: Arc::new(Shared {
                retention_refresh: self.retention_refresh,
                dedup_ttl: self.dedup_ttl,
                safe_trim_every: self.safe_trim_every,
                targets: NameCache::new(MAX_TARGETS),
                ringer: Arc::new(Ringer::new(&self.conn)),
                start_traces: self.start_traces,
                type_names: self.type_names,
                message_ids: self.message_ids,
            }),
            conn: self.conn,
        })
    }
}

impl<C: Codec> Producer<C> {
    /// The connection this producer uses.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Publishes `message` to `topic` and returns the id Redis gave the entry.
    ///
    /// # Errors
    /// [`StreamError::InvalidName`], [`StreamError::Encode`], [`StreamError::Limits`], or
    /// [`StreamError::Redis`] when Redis did not confirm the entry.
    pub async fn publish<T: Serialize + ?Sized>(&self, topic: &str, message: &T) -> Result<EntryId, StreamError> {
        // What `self.message(topic, message).send()` does without options, one future less
        // deep: every level copies the fred command future it holds (about 5 KiB).
        let payload = self.encode_payload(topic, message)?;
        self.publish_ref(topic, &self.new_envelope(self.default_type::<T>(), &payload), None).await
    }

    /// `message` encoded with this producer's codec.
    fn encode_payload<T: Serialize + ?Sized>(&self, topic: &str, message: &T) -> Result<Bytes, StreamError> {
        self.codec.encode(message).map_err(|source| StreamError::Encode { topic: topic.to_owned(), source })
    }

    /// A new message of `type_name` around `payload`, in this producer's content type and
    /// the task's trace (its id and time are left to the wire format: with version 3, the
    /// entry id stands for them).
    fn new_envelope<'a>(&'a self, type_name: &'a str, payload: &'a Bytes) -> EnvelopeRef<'a> {
        let mut env = EnvelopeRef::new(type_name, self.codec.content_type(), payload);
        env.traceparent =
            if self.shared.start_traces { Some(next_traceparent()) } else { current_trace().map(|t| t.child()) };
        if self.shared.message_ids {
            env.id = Some(MessageId::new());
        }
        env
    }

    /// The type name a publish of a `T` writes when none is given: none in wire format
    /// version 3 (`Envelope::type_name` is empty) unless the producer writes type names, the
    /// type's name in older versions, which require one.
    fn default_type<T: ?Sized>(&self) -> &'static str {
        if self.shared.type_names {
            short_type_name::<T>()
        } else {
            self.conn.wire_version().default_type_name::<T>()
        }
    }

    /// A publish with options (key, headers, idempotency key); finish with `.send()`.
    pub fn message<'a, T: Serialize + ?Sized>(&'a self, topic: &'a str, message: &'a T) -> Publish<'a, C, T> {
        Publish {
            producer: self,
            topic,
            message,
            key: None,
            headers: Vec::new(),
            idempotency_key: None,
            type_name: None,
            expires_at: None,
            replicated: None,
        }
    }

    /// Publishes an envelope you built yourself (keeps its id, headers and trace context).
    ///
    /// # Errors
    /// As [`publish`](Self::publish).
    pub async fn publish_envelope(
        &self,
        topic: &str,
        envelope: &Envelope,
        idempotency_key: Option<&str>,
    ) -> Result<EntryId, StreamError> {
        self.publish_ref(topic, &envelope.view(), idempotency_key).await
    }

    /// Publishes an envelope given by its borrowed parts (see [`EnvelopeRef`]): what
    /// [`publish`](Self::publish) does after encoding the payload.
    ///
    /// # Errors
    /// As [`publish`](Self::publish).
    // Used by Tributary's own crates; not part of the supported API (#25).
    #[doc(hidden)]
    pub async fn publish_ref(
        &self,
        topic: &str,
        envelope: &EnvelopeRef<'_>,
        idempotency_key: Option<&str>,
    ) -> Result<EntryId, StreamError> {
        let target = self.route(self.target(topic)?, envelope.key.or(idempotency_key)).await;
        let client = self.conn.client_for_slot(target.slot).await;
        self.publish_on(&client, &target, envelope, idempotency_key).await
    }

    /// Where a message with `key` goes: `target` itself, or for a partitioned topic the
    /// partition of `key`, and each partition in turn without one (an idempotent publish is
    /// routed by its idempotency key, so that a retry lands where the first try did).
    async fn route(&self, target: Arc<Target>, key: Option<&str>) -> Arc<Target> {
        // Reads the topic's settings, the partition count with them, when they are due.
        self.retention(&target).await;
        let count = target.retention.partitions.load(Ordering::Relaxed);
        if count == 0 {
            return target;
        }
        let index = match key {
            Some(key) => tributary_core::partition::of_key(key, count),
            None => target.next.fetch_add(1, Ordering::Relaxed) % count,
        };
        target.partition(&self.conn, index, count)
    }

    /// Publishes over `client` (the topic's node's): a replicated publish sends its `WAIT` over
    /// the same connection.
    async fn publish_on(
        &self,
        client: &Client,
        target: &Arc<Target>,
        envelope: &EnvelopeRef<'_>,
        idempotency_key: Option<&str>,
    ) -> Result<EntryId, StreamError> {
        let started = Instant::now();
        let span = publish_span(&target.topic, 1);
        // Outside an OpenTelemetry span, the publish continues the task's trace (`in_trace`), or
        // the one the envelope names.
        follow_unless_traced(&span, current_trace().or(envelope.traceparent));
        let mut envelope = *envelope;
        envelope.traceparent = stamp(span_traceparent(&span), envelope.traceparent);
        // Not entered (`instrument`): its times are its creation and its drop, and wrapping the
        // command's future cost a tenth of the publish benchmark's throughput.
        let stored = self.store_on(client, target, &envelope, idempotency_key).await;
        target.metrics.published(started, u64::from(stored.is_ok()), stored.as_ref().err().map(|e| (1, e.kind())));
        if let Err(e) = &stored {
            record_failure(&span, e.kind());
        }
        stored
    }

    /// Stores `envelope` (see `publish_on`).
    async fn store_on(
        &self,
        client: &Client,
        target: &Arc<Target>,
        envelope: &EnvelopeRef<'_>,
        idempotency_key: Option<&str>,
    ) -> Result<EntryId, StreamError> {
        let limits_err = |source| StreamError::Limits { topic: target.topic.to_string(), source };
        let retention = self.retention(target).await;
        let id = match idempotency_key {
            None => {
                let pairs = self.conn.wire_version().xadd_fields(envelope, self.conn.limits()).map_err(limits_err)?;
                let ringer = &self.shared.ringer;
                let reply: Result<Value, _> = if ringer.due() {
                    // The ring goes after the entry, in the same round trip.
                    let pipeline = client.pipeline();
                    let _: () = pipeline
                        .xadd(target.key_arg.clone(), false, cap(retention), "*", pairs)
                        .await
                        .map_err(|e| RedisError::new("XADD", e))?;
                    ringer.queue(&pipeline, &target.key).await;
                    let mut replies = pipeline.try_all::<Value>().await;
                    if replies.len() == 2 {
                        let rang = replies.pop().expect("two replies");
                        ringer.answered(rang.as_ref());
                    }
                    // One reply: the pipeline failed as a whole (its error).
                    replies.into_iter().next().unwrap_or(Ok(Value::Null))
                } else {
                    client.xadd(target.key_arg.clone(), false, cap(retention), "*", pairs).await
                };
                let reply = reply.map_err(|e| crate::redis::noted(&self.conn, RedisError::new("XADD", e)))?;
                entry_id_of("XADD", reply)?
            }
            Some(idem) => {
                let trim = retention.map(|r| r.xadd_args(SystemTime::now())).unwrap_or_default();
                let dedup = self.conn.namespace().dedup_key(&target.topic, idem);
                let ttl = i64::try_from(self.shared.dedup_ttl.as_millis()).unwrap_or(i64::MAX).max(1);
                // Names and values of `v`, `m` and `p` (version 2; version 1 grows the vector).
                let mut args = Vec::with_capacity(2 + trim.len() + 2 * 3);
                args.push(Value::from(ttl));
                args.push(Value::from(trim.len() as i64));
                args.extend(trim);
                self.conn
                    .wire_version()
                    .encode_fields(envelope, self.conn.limits(), push_field(&mut args))
                    .map_err(limits_err)?;
                let keys = vec![target.key.clone(), dedup];
                let reply: Vec<Value> = PUBLISH_IDEMPOTENT
                    .run_on(client, keys, args)
                    .await
                    .map_err(|e| crate::redis::noted(&self.conn, e))?;
                let first = reply.into_iter().next().unwrap_or(Value::Null);
                let id = entry_id_of("EVALSHA publish_idempotent", first)?;
                // (A duplicate rings too: rarely, and harmless.)
                self.shared.ringer.ring_soon(&self.conn, &target.key);
                id
            }
        };
        self.after_publish(target, retention.as_ref(), 1).await;
        Ok(id)
    }

    /// The cached [`Target`] of `topic`, computed on first use.
    fn target(&self, topic: &str) -> Result<Arc<Target>, StreamError> {
        self.shared
            .targets
            .get_or_try_insert(topic, |name| Ok(Target::new(&self.conn, Topic::new(name)?, Arc::default())))
    }

    /// The stored retention of `target`'s topic, never older than
    /// [`ProducerBuilder::retention_refresh`]: as last read while it is younger than half of
    /// that (no I/O, the hot path); past half, the publish starts a read in the background and
    /// goes on with the value it has (so a busy topic never waits); past the whole of it (the
    /// first publish to a topic, or after a quiet spell), the publish reads it itself. A failed
    /// read is logged and counts as a read: the topic keeps the retention it had, none before
    /// the first read succeeds, and none when what is stored cannot be read (a retention this
    /// producer does not understand must not make it remove entries).
    async fn retention(&self, target: &Arc<Target>) -> Option<Retention> {
        let cache = &target.retention;
        let last = *cache.last.read().expect("retention cache lock");
        let refresh = self.shared.retention_refresh;
        match last {
            Some((retention, read_at)) if read_at.elapsed() < refresh => {
                if read_at.elapsed() >= refresh / 2 && !cache.refreshing.swap(true, Ordering::AcqRel) {
                    match tokio::runtime::Handle::try_current() {
                        Ok(runtime) => {
                            let (conn, target) = (self.conn.clone(), target.clone());
                            runtime.spawn(async move {
                                let _refreshing = Refreshing(&target.retention.refreshing);
                                look_up(&conn, &target, retention, refresh).await;
                            });
                        }
                        // Polled outside a Tokio runtime: read it here, next time.
                        Err(_) => cache.refreshing.store(false, Ordering::Release),
                    }
                }
                retention
            }
            Some((retention, _)) => look_up(&self.conn, target, retention, refresh).await,
            None => look_up(&self.conn, target, None, refresh).await,
        }
    }

    /// Waits until `replicas` replicas have everything `client`'s connection wrote, up to
    /// `timeout` (`WAIT`).
    async fn wait_for_replicas(
        client: &Client,
        target: &Target,
        id: EntryId,
        replicas: u32,
        timeout: Duration,
    ) -> Result<(), StreamError> {
        let ms = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
        let acked: i64 = client
            .custom(slot_command("WAIT", target.slot, false), vec![Value::from(i64::from(replicas)), Value::from(ms)])
            .await
            .map_err(|e| RedisError::new("WAIT", e))?;
        if acked < i64::from(replicas) {
            return Err(StreamError::NotReplicated { id, acked: acked.max(0) as u32, wanted: replicas });
        }
        Ok(())
    }

    /// Schedules `message` for `topic` at `at`: it becomes visible to consumer groups then.
    /// Returns the schedule id.
    ///
    /// # Errors
    /// As [`publish`](Self::publish).
    pub async fn publish_at<T: Serialize + ?Sized>(
        &self,
        topic: &str,
        message: &T,
        at: SystemTime,
    ) -> Result<String, StreamError> {
        self.message(topic, message).schedule_at(at).await
    }

    /// Schedules `message` for `topic` `delay` from now. Returns the schedule id.
    ///
    /// # Errors
    /// As [`publish`](Self::publish).
    pub async fn publish_in<T: Serialize + ?Sized>(
        &self,
        topic: &str,
        message: &T,
        delay: Duration,
    ) -> Result<String, StreamError> {
        self.message(topic, message).schedule_at(SystemTime::now() + delay).await
    }

    /// Schedules an envelope you built (see [`publish_at`](Self::publish_at)); the schedule id
    /// is the envelope's message id.
    ///
    /// # Errors
    /// As [`publish`](Self::publish).
    pub async fn schedule_envelope(
        &self,
        topic: &str,
        envelope: &Envelope,
        at: SystemTime,
        idempotency_key: Option<&str>,
    ) -> Result<String, StreamError> {
        self.schedule_ref(topic, &envelope.view(), at, idempotency_key).await
    }

    async fn schedule_ref(
        &self,
        topic: &str,
        envelope: &EnvelopeRef<'_>,
        at: SystemTime,
        idempotency_key: Option<&str>,
    ) -> Result<String, StreamError> {
        // Registers the topic, for pattern workers to consume it once its messages move.
        let target = self.route(self.target(topic)?, envelope.key.or(idempotency_key)).await;
        let topic = target.topic.clone();
        let ns = self.conn.namespace();
        let dedup = idempotency_key.map(|k| ns.dedup_key(&topic, k));
        let ttl = i64::try_from(self.shared.dedup_ttl.as_millis()).unwrap_or(i64::MAX).max(1);
        // Names and values of `v`, `m` and `p` (version 2; version 1 grows the vector).
        let mut args: Vec<Value> = Vec::with_capacity(3 + 2 * 3);
        args.push(Value::from(due_score(at)));
        // A scheduled message carries its id (the schedule's id) and the time it was scheduled:
        // it is listed before it has an entry to derive them from.
        let mut envelope = *envelope;
        let id = *envelope.id.get_or_insert_with(MessageId::new);
        envelope.published_at = envelope.published_at.or_else(|| id.created_at());
        let envelope = &envelope;
        args.push(Value::from(id.to_string()));
        args.push(Value::from(ttl));
        self.conn
            .wire_version()
            .encode_fields(envelope, self.conn.limits(), push_field(&mut args))
            .map_err(|source| StreamError::Limits { topic: topic.to_string(), source })?;
        let mut keys = vec![ns.scheduled_set(&topic), ns.scheduled_data(&topic)];
        keys.extend(dedup);
        let reply: Vec<Value> = SCHEDULE.run(&self.conn, keys, args).await?;
        let id = reply
            .into_iter()
            .next()
            .and_then(|v| v.into_string())
            .ok_or_else(|| RedisError::unexpected_reply("EVALSHA schedule", "expected a schedule id"))?;
        // After the message is stored, never before: a mover that takes the topic off the
        // index before this sees the message when it moves (see `take_due_topics.lua`). On
        // Redis Cluster the index is in another slot, so this cannot be part of the script.
        if let Err(e) = index_at(&self.conn, &ns.schedule_index(), &topic, due_score(at)).await {
            // Stored all the same: movers find it when they next look for unindexed topics.
            tracing::warn!(topic = %topic, error = %e, "could not index a scheduled message; movers find it within 10 min");
        }
        Ok(id)
    }

    /// Publishes many messages to `topic` in one pipelined round trip.
    ///
    /// # Errors
    /// [`StreamError::PartialBatch`] lists what was stored when some entries failed; encode
    /// errors are returned before anything is sent.
    pub async fn publish_batch<'m, T, I>(&self, topic: &str, messages: I) -> Result<Vec<EntryId>, StreamError>
    where
        T: Serialize + 'm,
        I: IntoIterator<Item = &'m T>,
    {
        let payloads = messages.into_iter().map(|m| self.encode_payload(topic, m)).collect::<Result<Vec<_>, _>>()?;
        let type_name = self.default_type::<T>();
        let envelopes: Vec<EnvelopeRef<'_>> = payloads.iter().map(|p| self.new_envelope(type_name, p)).collect();
        self.publish_refs(topic, &envelopes).await
    }

    /// Publishes many envelopes to `topic` in one pipelined round trip.
    ///
    /// # Errors
    /// As [`publish_batch`](Self::publish_batch).
    pub async fn publish_envelopes(&self, topic: &str, envelopes: &[Envelope]) -> Result<Vec<EntryId>, StreamError> {
        let envelopes: Vec<EnvelopeRef<'_>> = envelopes.iter().map(Envelope::view).collect();
        self.publish_refs(topic, &envelopes).await
    }

    async fn publish_refs(&self, topic: &str, envelopes: &[EnvelopeRef<'_>]) -> Result<Vec<EntryId>, StreamError> {
        let target = self.target(topic)?;
        let started = Instant::now();
        let span = publish_span(&target.topic, envelopes.len());
        follow_unless_traced(&span, current_trace());
        // The messages of the batch carry the batch's span, when a layer records it (those that
        // name a trace of their own keep it).
        let stamped: Vec<EnvelopeRef<'_>>;
        let envelopes = match span_traceparent(&span) {
            None => envelopes,
            Some(tp) => {
                stamped = envelopes
                    .iter()
                    .map(|e| {
                        let mut e = *e;
                        e.traceparent = stamp(Some(tp), e.traceparent);
                        e
                    })
                    .collect();
                &stamped
            }
        };
        let stored = self.store_batch_routed(&target, envelopes).await;
        let (n, failed) = match &stored {
            Ok(ids) => (ids.len() as u64, None),
            Err(e @ StreamError::PartialBatch { failed, total, .. }) => {
                ((total - failed) as u64, Some((*failed as u64, e.kind())))
            }
            Err(e) => (0, Some((envelopes.len() as u64, e.kind()))),
        };
        target.metrics.published(started, n, failed);
        if let Some((_, kind)) = failed {
            record_failure(&span, kind);
        }
        stored
    }

    /// Stores `envelopes` in `target`, or for a partitioned topic each in its partition (a
    /// pipeline per partition, all at once).
    async fn store_batch_routed(
        &self,
        target: &Arc<Target>,
        envelopes: &[EnvelopeRef<'_>],
    ) -> Result<Vec<EntryId>, StreamError> {
        self.retention(target).await;
        if target.retention.partitions.load(Ordering::Relaxed) == 0 {
            return self.store_batch(target, envelopes).await;
        }
        // Encode errors before anything is sent, as for a topic of one stream.
        for env in envelopes {
            self.conn
                .wire_version()
                .xadd_fields(env, self.conn.limits())
                .map_err(|source| StreamError::Limits { topic: target.topic.to_string(), source })?;
        }
        let mut groups: Vec<(Arc<Target>, Vec<usize>, Vec<EnvelopeRef<'_>>)> = Vec::new();
        for (i, env) in envelopes.iter().enumerate() {
            let part = self.route(target.clone(), env.key).await;
            match groups.iter_mut().find(|(t, _, _)| Arc::ptr_eq(t, &part)) {
                Some((_, at, envs)) => {
                    at.push(i);
                    envs.push(*env);
                }
                None => groups.push((part, vec![i], vec![*env])),
            }
        }
        let results =
            futures::future::join_all(groups.iter().map(|(part, _, envs)| self.store_batch(part, envs))).await;
        let mut stored: Vec<Option<EntryId>> = vec![None; envelopes.len()];
        let mut first_error = None;
        for ((_, at, _), result) in groups.iter().zip(results) {
            match result {
                Ok(ids) => at.iter().zip(ids).for_each(|(i, id)| stored[*i] = Some(id)),
                Err(StreamError::PartialBatch { stored: some, source, .. }) => {
                    at.iter().zip(some).for_each(|(i, id)| stored[*i] = id);
                    first_error.get_or_insert(source);
                }
                Err(StreamError::Redis(e)) => {
                    first_error.get_or_insert(e);
                }
                Err(other) => return Err(other),
            }
        }
        match first_error {
            None => Ok(stored.into_iter().flatten().collect()),
            Some(source) => Err(StreamError::PartialBatch {
                topic: target.topic.to_string(),
                failed: stored.iter().filter(|s| s.is_none()).count(),
                total: envelopes.len(),
                stored,
                source,
            }),
        }
    }

    /// Stores `envelopes` in one pipeline (see `publish_refs`).
    async fn store_batch(
        &self,
        target: &Arc<Target>,
        envelopes: &[EnvelopeRef<'_>],
    ) -> Result<Vec<EntryId>, StreamError> {
        let retention = self.retention(target).await;
        let cap = cap(retention);
        let pipeline = self.conn.client_for_slot(target.slot).await.pipeline();
        for env in envelopes {
            let pairs = self
                .conn
                .wire_version()
                .xadd_fields(env, self.conn.limits())
                .map_err(|source| StreamError::Limits { topic: target.topic.to_string(), source })?;
            let _: () = pipeline
                .xadd(target.key_arg.clone(), false, cap.clone(), "*", pairs)
                .await
                .map_err(|e| RedisError::new("XADD", e))?;
        }
        let ringer = &self.shared.ringer;
        let rings = ringer.due();
        if rings {
            ringer.queue(&pipeline, &target.key).await;
        }
        let mut results = pipeline.try_all::<Value>().await;
        if results.len() == envelopes.len() + usize::from(rings) {
            if rings {
                let rang = results.pop().expect("the ring's reply");
                ringer.answered(rang.as_ref());
            }
        } else {
            // The pipeline failed as a whole (fred answers its one error): nothing is known to
            // be stored.
            let error = results.into_iter().find_map(Result::err).unwrap_or_else(|| {
                fred::error::Error::new(
                    fred::error::ErrorKind::Unknown,
                    "a pipeline answered fewer replies than commands",
                )
            });
            results = envelopes.iter().map(|_| Err(error.clone())).collect();
        }
        let total = results.len();
        let mut stored = Vec::with_capacity(total);
        let mut first_error = None;
        for r in results {
            match r.map_err(|e| RedisError::new("XADD", e)).and_then(|v| entry_id_of("XADD", v)) {
                Ok(id) => stored.push(Some(id)),
                Err(e) => {
                    stored.push(None);
                    first_error.get_or_insert(e);
                }
            }
        }
        self.after_publish(target, retention.as_ref(), total as u64).await;
        match first_error {
            None => Ok(stored.into_iter().flatten().collect()),
            Some(source) => Err(StreamError::PartialBatch {
                topic: target.topic.to_string(),
                failed: stored.iter().filter(|s| s.is_none()).count(),
                total,
                stored,
                source,
            }),
        }
    }

    /// Safe retention trims every `safe_trim_every` publishes; a failed trim is only logged
    /// (the message is stored, and the next trim catches up).
    async fn after_publish(&self, target: &Target, retention: Option<&Retention>, count: u64) {
        let Some(r) = retention.filter(|r| r.is_safe()) else {
            return;
        };
        let before = target.publishes.fetch_add(count, Ordering::Relaxed);
        let every = self.shared.safe_trim_every;
        if before / every != (before + count) / every {
            if let Err(e) = r.trim(&self.conn, &target.topic).await {
                tracing::warn!(topic = %target.topic, error = %e, "safe trim failed");
            }
        }
    }
}

/// Reads `target`'s stored retention into its cache and returns it (`previous` is kept when
/// the read fails). The topic is registered (for workers' topic patterns) at the same moments,
/// in parallel: on the first publish, and again at each refresh, so a registry lost with
/// Redis' data is filled again.
async fn look_up(
    conn: &Connection,
    target: &Target,
    previous: Option<Retention>,
    refresh: Duration,
) -> Option<Retention> {
    // The bound counts from when the read was asked for, not from its answer.
    let asked_at = Instant::now();
    // A partition's settings are its topic's.
    let topic = target.topic.parent();
    let topics = [&topic];
    let (stored, partitions, registered) = tokio::join!(
        crate::retention::stored(conn, &topic),
        crate::partitions::stored(conn, &topic),
        crate::registry::register(conn, &topics)
    );
    let gone_since = || target.retention.partitions_gone_since.lock().expect("partitions gone lock");
    match partitions {
        Ok(Some(n)) => {
            target.retention.partitions.store(n, Ordering::Relaxed);
            *gone_since() = None;
        }
        // Gone after it was read: kept a while (Redis restarted without persistence, and the
        // topic's workers put it back), then forgotten (the topic was deleted).
        Ok(None) if target.retention.partitions.load(Ordering::Relaxed) > 0 => {
            let since = *gone_since().get_or_insert(asked_at);
            if since.elapsed() < refresh * PARTITIONS_KEPT_WHEN_GONE {
                tracing::warn!(topic = %topic, "the topic's partition count is gone; keeping the one last read a while");
            } else {
                tracing::warn!(topic = %topic, gone_for = ?since.elapsed(),
                    "the topic's partition count has been gone for long: publishing to its own stream again");
                target.retention.partitions.store(0, Ordering::Relaxed);
                *gone_since() = None;
            }
        }
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(topic = %topic, error = %e, "cannot read the topic's partition count; keeping what it was")
        }
    }
    if let Err(e) = registered {
        tracing::warn!(topic = %target.topic, error = %e, "could not register the topic; pattern workers find it by their next scan");
    }
    let retention = match stored {
        Ok(stored) => stored,
        Err(e @ StreamError::InvalidRetention { .. }) => {
            tracing::warn!(topic = %target.topic, error = %e, "not trimming the topic");
            None
        }
        Err(e) => {
            tracing::warn!(topic = %target.topic, error = %e, "cannot read the topic's retention; keeping what it was");
            previous
        }
    };
    let mut last = target.retention.last.write().expect("retention cache lock");
    // Concurrent first reads may answer out of order: the newest read wins.
    if last.map_or(true, |(_, read_at)| read_at <= asked_at) {
        *last = Some((retention, asked_at));
    }
    retention
}

/// Appends each encoded field to a command's arguments (for [`Version::encode_fields`](tributary_core::wire::Version::encode_fields)).
fn push_field(args: &mut Vec<Value>) -> impl FnMut(Bytes, Bytes) + '_ {
    |name, value| {
        args.push(Value::Bytes(name));
        args.push(Value::Bytes(value));
    }
}

/// One publish with options. Created by [`Producer::message`]; send it with
/// [`send`](Self::send).
#[derive(Debug)]
#[must_use = "nothing is published until `.send()` is awaited"]
pub struct Publish<'a, C: Codec, T: ?Sized> {
    producer: &'a Producer<C>,
    topic: &'a str,
    message: &'a T,
    key: Option<String>,
    headers: Vec<(String, String)>,
    idempotency_key: Option<String>,
    type_name: Option<String>,
    expires_at: Option<SystemTime>,
    replicated: Option<(u32, Duration)>,
}

impl<C: Codec, T: Serialize + ?Sized> Publish<'_, C, T> {
    /// Returns only once `replicas` replicas acknowledged the write (`WAIT`), or fails with
    /// [`StreamError::NotReplicated`] after `timeout`. Redis replicates asynchronously: without
    /// this, a primary that fails right after answering can lose an acknowledged publish.
    pub fn replicated(mut self, replicas: u32, timeout: Duration) -> Self {
        self.replicated = Some((replicas, timeout));
        self
    }

    /// The message expires `ttl` after now: consumers never run a handler on it after that
    /// (they acknowledge it and record it as expired).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.expires_at = Some(SystemTime::now() + ttl);
        self
    }

    /// The message expires at `at` (see [`ttl`](Self::ttl)).
    pub fn expires_at(mut self, at: SystemTime) -> Self {
        self.expires_at = Some(at);
        self
    }

    /// Schedules the message instead of publishing it now: it becomes visible to consumer
    /// groups at `at` (not before). Returns the schedule id, for
    /// [`Scheduler::cancel`](crate::Scheduler::cancel). With an idempotency key, scheduling
    /// again returns the first id.
    ///
    /// # Errors
    /// As [`Producer::publish`].
    pub async fn schedule_at(self, at: SystemTime) -> Result<String, StreamError> {
        let parts = self.parts()?;
        let env = self.envelope(&parts);
        self.producer.schedule_ref(self.topic, &env, at, self.idempotency_key.as_deref()).await
    }

    /// The encoded payload and the headers, which the envelope borrows.
    fn parts(&self) -> Result<(Bytes, Headers), StreamError> {
        let payload = self.producer.encode_payload(self.topic, self.message)?;
        Ok((payload, self.headers.iter().cloned().collect()))
    }

    fn envelope<'s>(&'s self, (payload, headers): &'s (Bytes, Headers)) -> EnvelopeRef<'s> {
        let type_name = self.type_name.as_deref().unwrap_or(self.producer.default_type::<T>());
        let mut env = self.producer.new_envelope(type_name, payload);
        env.headers = headers;
        env.key = self.key.as_deref();
        env.expires_at = self.expires_at;
        env
    }

    /// Schedules the message for `delay` from now (see [`schedule_at`](Self::schedule_at)).
    ///
    /// # Errors
    /// As [`Producer::publish`].
    pub async fn schedule_in(self, delay: Duration) -> Result<String, StreamError> {
        self.schedule_at(SystemTime::now() + delay).await
    }

    /// Partition / ordering key: a worker handles messages with the same key one at a time,
    /// in publish order.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Makes the publish idempotent: while the key is remembered (the producer's
    /// `dedup_ttl`), publishing with the same key again stores nothing and returns the first
    /// entry's id.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// Sets the type name the message carries. Without it: none in wire format version 3
    /// (unless [`ProducerBuilder::type_names`]), the Rust type's name without its path in
    /// versions 1 and 2.
    pub fn type_name(mut self, name: impl Into<String>) -> Self {
        self.type_name = Some(name.into());
        self
    }

    /// Publishes and returns the entry id.
    ///
    /// # Errors
    /// As [`Producer::publish`].
    pub async fn send(self) -> Result<EntryId, StreamError> {
        let parts = self.parts()?;
        // `WAIT` counts the replicas that have this *connection's* writes: after a reconnection
        // between the `XADD` and the `WAIT`, the new connection has written nothing and every
        // replica would seem to have it. Any reconnection in between makes the answer
        // "not confirmed" (acked 0): a false alarm costs a retry, a false confirmation a loss.
        //
        // Both go over one client, the topic's node's, whose own reconnections are watched: on
        // Redis Cluster the map could otherwise send them to two nodes.
        let key = self.key.as_deref().or(self.idempotency_key.as_deref());
        let target = self.producer.route(self.producer.target(self.topic)?, key).await;
        let client = self.producer.conn.client_for_slot(target.slot).await;
        let mut reconnects = self.replicated.map(|_| client.reconnect_rx());
        let id =
            self.producer.publish_on(&client, &target, &self.envelope(&parts), self.idempotency_key.as_deref()).await?;
        if let Some((replicas, timeout)) = self.replicated {
            Producer::<C>::wait_for_replicas(&client, &target, id, replicas, timeout).await?;
            if reconnects.as_mut().is_some_and(|rx| !matches!(rx.try_recv(), Err(TryRecvError::Empty))) {
                tracing::warn!(topic = self.topic, entry_id = %id,
                    "the connection reconnected between the write and WAIT: replication not confirmed");
                return Err(StreamError::NotReplicated { id, acked: 0, wanted: replicas });
            }
        }
        Ok(id)
    }
}
