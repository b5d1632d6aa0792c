//! The shared reader: one blocking `XREADGROUP ... STREAMS k1 k2 ... kN` for all the topics
//! of a worker, on one connection per Redis node (on Redis Cluster, per hash slot: one command
//! may only read keys of one slot).
//!
//! A topic's loop (`topic.rs`) takes its slots, then *joins* the next read with as many
//! entries as it has room for and waits for its answer; the reader answers a topic when the
//! read brought it entries, and keeps the others in the read that follows. A topic that joins
//! while a read is blocked (or wants its slots back, or stops) wakes that read with
//! `CLIENT UNBLOCK`, so nobody waits out `block_for`. So connections do not grow with the
//! number of topics, and an idle worker sends one read per `block_for`, not one per topic.
//!
//! `COUNT` applies to every stream of one read: the read asks for the smallest room of the
//! topics in it (at most `batch_size`), which for topics with free slots is `batch_size`.
//!
//! Failures are kept apart: a missing group (`NOGROUP`) names its stream, and only that topic
//! re-creates its group; a key that is not a stream is found with `TYPE`, and only its topic
//! is told. A failure of the connection is retried here with backoff (one log line, not one
//! per topic), and the topics that were in the read recover their own pending entries (a
//! reply may have been lost with the connection) before they read again.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fred::interfaces::{ClientLike, EventInterface};
use fred::types::Value;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tributary_core::{Connection, Dedicated, ErrorKind, RedisError};

use super::doorbell::{self, Doorbell, Ring, Source};
use super::topic::{reconnected, STOP_STEP};
use crate::redis::{command, parse_read_streams, RawEntry};

/// How long the reader waits, after answering topics, for them to join again before it reads
/// on without them (they usually join within microseconds: a read that left them out would
/// have to be woken for them).
const REJOIN_WAIT: Duration = Duration::from_millis(2);

/// When a `CLIENT UNBLOCK` found the read not blocked yet (it was sent on another connection
/// and may overtake the read), it is sent again after these delays.
const UNBLOCK_RETRIES: [Duration; 4] =
    [Duration::from_millis(1), Duration::from_millis(5), Duration::from_millis(25), Duration::from_millis(125)];

/// Reads of many streams while messages flow. A blocking `XREADGROUP` over N streams costs
/// Redis about 1.8 µs per stream when it blocks and is woken (each key is registered as
/// blocked and unregistered: 18 ms for 10,000, measured on Redis 7.0), against 0.2 µs when it
/// does not block. So once a read brought entries, a worker reads without blocking, no more
/// often than once per `POLL_COST` × streams (10 ms for 10,000), until `HOT_READS` intervals
/// bring nothing; then it blocks again. Reads then cost Redis at most about a fifth of a core
/// whatever the rate, where a blocking read per message melted it (at 2,000 messages a second
/// over 10,000 topics: 62 % of its time in `XREADGROUP`, p99 84 ms); a message waits at most
/// one interval more. Below `MIN_POLL_INTERVAL` (under 500 streams), reads block as usual.
const POLL_COST: Duration = Duration::from_micros(1);

/// How long an idle read blocks, per stream it names, when that is longer than `block_for`
/// (up to `MAX_IDLE_BLOCK`): each read costs the worker and Redis about 2 µs per stream (the
/// command sent, each key registered as blocked), so a worker over 10,000 topics that re-read
/// every 2 s spent 1 % of a core on it, and Redis as much. A blocked read is woken
/// (`CLIENT UNBLOCK`) when a topic joins, leaves or stops, and ends when its connection or a
/// stream does; once a wake-up did not land (no answer, or the read never found blocked), reads
/// block for `block_for` only, and none blocks longer once the worker stops.
const BLOCK_PER_STREAM: Duration = Duration::from_millis(1);
const MAX_IDLE_BLOCK: Duration = Duration::from_secs(10);

/// How long beyond its `BLOCK` a read may take before it counts as lost (the connection's own
/// timeout is `block_for` plus this).
const READ_TIMEOUT_MARGIN: Duration = Duration::from_secs(10);

/// The longest a shared read of topics waiting with `block_for` may block: how long a topic
/// waits for the answer of a read it withdrew from before giving up on it.
pub(crate) fn longest_block(block_for: Duration) -> Duration {
    block_for.max(MAX_IDLE_BLOCK)
}
const MIN_POLL_INTERVAL: Duration = Duration::from_micros(500);
const HOT_READS: u32 = 10;

/// From how many streams a read names on, a worker without keyspace notifications listens to
/// producers' rings (`ring.rs`, on a single Redis): below, a read of every stream costs Redis
/// under a millisecond.
const RINGS_FROM_STREAMS: usize = 500;

/// With producers' rings: how often every stream is read while messages flow (for writers that
/// do not ring: other clients, or a producer that has not learnt yet that somebody listens), and
/// how long after the last read that brought entries messages count as flowing. Otherwise a
/// read blocks on every stream, which any write wakes.
const RINGS_FULL_READ_EVERY: Duration = Duration::from_secs(1);

/// With producers' rings: how soon after a read of every stream the first sweep comes (see
/// `read`).
const RINGS_FIRST_SWEEP: Duration = Duration::from_millis(50);

/// With a doorbell, the read of every stream goes in slices of this many streams, each with the
/// streams that rang: one read of 10,000 streams held up every rung read behind it for 40 to
/// 60 ms (with producers' rings, p99 44 ms at 2,000 messages a second over 10,000 topics,
/// 3.5 ms with that read every 5 s; with keyspace notifications, p999 73 ms), a slice about a
/// millisecond.
const SWEEP_SLICE: usize = 256;

/// How long a read blocks when this connection may not be woken (`CLIENT UNBLOCK` refused).
const BLOCK_WITHOUT_UNBLOCK: Duration = Duration::from_millis(100);

/// How asking Redis to end a blocked read went.
enum Unblock {
    Done,
    /// Redis refused (no permission), or the read was not blocked yet: it ends at `BLOCK`.
    Refused,
    /// No answer: Redis is unreachable.
    NoAnswer,
}

/// What a topic's turn in the shared read brought it.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Its new entries (none when it withdrew). `lost_reply`: a read it was part of may have
    /// been served by Redis with the reply lost (the connection dropped): recover own pending
    /// entries before reading again.
    Entries { entries: Vec<RawEntry>, lost_reply: bool },
    /// Its consumer group (or its stream) does not exist.
    GroupLost,
    /// Reading its stream fails (e.g. the key holds something else than a stream).
    Failed(String),
}

/// What topics tell their reader.
enum Message {
    /// Read up to `count` entries for `key` and answer on `reply`.
    Join { key: Arc<str>, arg: Value, count: usize, reply: oneshot::Sender<Outcome> },
    /// Answer `key` now (with what the read under way brings it): it needs its slots back, or
    /// stops.
    Withdraw { key: Arc<str> },
    /// `key` will not join again soon (it waits for slots, or recovers): read on without it.
    Pass { key: Arc<str> },
}

/// The shared readers of one worker, by hash slot (one for all on a single Redis).
pub(crate) struct Readers {
    conn: Connection,
    group: Arc<str>,
    consumer: Arc<str>,
    block_for: Duration,
    /// The worker's graceful stop: no read starts after it, and the read under way is woken.
    stop: CancellationToken,
    /// By slot (`None` on a single Redis): the way to the reader, and its task.
    readers: Mutex<HashMap<Option<u16>, Running>>,
}

/// A running shared reader: its channel, and its task (aborted with the worker's `Readers`).
type Running = (mpsc::UnboundedSender<Message>, AbortOnDropHandle<()>);

impl Readers {
    pub(crate) fn new(
        conn: Connection,
        group: &str,
        consumer: &str,
        block_for: Duration,
        stop: CancellationToken,
    ) -> Self {
        Self {
            conn,
            group: group.into(),
            consumer: consumer.into(),
            block_for,
            stop,
            readers: Mutex::new(HashMap::new()),
        }
    }

    /// The reader for the stream `key`, started on first use.
    pub(crate) fn link(&self, key: &str) -> ReaderLink {
        // On a cluster, one read may only name keys of one slot.
        let slot = (!self.conn.readers_survive_errors()).then(|| fred::util::redis_keyslot(key.as_bytes()));
        let mut readers = self.readers.lock().expect("readers lock");
        let (tx, _) = readers.entry(slot).or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            let reader = SharedReader {
                conn: self.conn.clone(),
                group: self.group.clone(),
                consumer: self.consumer.clone(),
                block_for: self.block_for,
                stop: self.stop.clone(),
                unblock_allowed: true,
                long_blocks: true,
                rx,
                command_reconnects: self.conn.reconnect_rx(),
                waiting: HashMap::new(),
                all_streams: None,
                lost: HashSet::new(),
                expecting: HashSet::new(),
                unnamed_losses: 0,
                withdrawn: Vec::new(),
                hot_until: None,
                doorbell: None,
                doorbell_checked: false,
                doorbell_refused: false,
                rings_wanted: false,
                sweep: Vec::new(),
                unrung_seen: false,
                rings_refused: false,
                next_rings_try: Instant::now(),
                ready: HashSet::new(),
                known: HashSet::new(),
                next_full: Instant::now(),
                next_check: Instant::now(),
                next_doorbell_check: Instant::now() + doorbell::FULL_READ_EVERY,
                hot_interval: Duration::ZERO,
                last_read_at: Instant::now(),
                said_polling: false,
                suspects: HashSet::new(),
            };
            (tx, AbortOnDropHandle::new(tokio::spawn(reader.run())))
        });
        ReaderLink { tx: tx.clone(), key: key.into(), arg: Value::from(key) }
    }
}

/// A topic's way to its shared reader.
#[derive(Clone)]
pub(crate) struct ReaderLink {
    tx: mpsc::UnboundedSender<Message>,
    key: Arc<str>,
    /// The key as an argument of `XREADGROUP`.
    arg: Value,
}

impl ReaderLink {
    /// Joins the next read for up to `count` entries.
    pub(crate) fn join(&self, count: usize) -> Ticket {
        let (reply, answer) = oneshot::channel();
        let _ = self.tx.send(Message::Join { key: self.key.clone(), arg: self.arg.clone(), count, reply });
        Ticket { answer, link: self.clone(), answered: false }
    }

    /// True when the reader task has ended (only when the worker is being dropped, or after a
    /// bug made it panic).
    pub(crate) fn is_gone(&self) -> bool {
        self.tx.is_closed()
    }

    /// Tells the reader not to wait for this topic before its next read.
    pub(crate) fn pass(&self) {
        let _ = self.tx.send(Message::Pass { key: self.key.clone() });
    }
}

/// A topic's place in a shared read.
pub(crate) struct Ticket {
    answer: oneshot::Receiver<Outcome>,
    link: ReaderLink,
    answered: bool,
}

impl Ticket {
    /// The answer (`None` if the reader is gone: the worker is stopping at once).
    pub(crate) async fn answer(&mut self) -> Option<Outcome> {
        let answer = (&mut self.answer).await.ok();
        self.answered = true;
        answer
    }

    /// Asks for the answer now (the read under way is woken); then await [`Self::answer`].
    pub(crate) fn withdraw(&self) {
        let _ = self.link.tx.send(Message::Withdraw { key: self.link.key.clone() });
    }
}

impl Drop for Ticket {
    /// A ticket given up unanswered (its topic stopped waiting, or stopped at once) leaves the
    /// reads: what Redis would deliver to it would wait for `claim_idle`. (The reader does not
    /// look at each waiting topic before each read: see `AllStreams`.)
    fn drop(&mut self) {
        if !self.answered {
            self.withdraw();
        }
    }
}

/// The streams part of a read of every waiting topic, `k1 .. kN > .. >`, kept while no topic
/// joins or leaves: an idle worker reads all its topics every `block_for`, and building the
/// read anew for 10,000 topics each time was most of its idle CPU.
struct AllStreams {
    keys: Arc<[Arc<str>]>,
    args: Vec<Value>,
    /// The smallest room of the topics (`COUNT`).
    count: usize,
}

/// A topic waiting for entries.
struct Waiting {
    arg: Value,
    count: usize,
    reply: oneshot::Sender<Outcome>,
    withdrawn: bool,
}

/// One shared reader's loop and state.
struct SharedReader {
    conn: Connection,
    group: Arc<str>,
    consumer: Arc<str>,
    block_for: Duration,
    stop: CancellationToken,
    /// False once Redis refused `CLIENT UNBLOCK` (or `CLIENT ID`): reads then block for at
    /// most [`BLOCK_WITHOUT_UNBLOCK`], so a topic that joins late waits no longer than that.
    unblock_allowed: bool,
    /// False once a wake-up of a blocked read did not land: reads then block for `block_for`
    /// at most, not longer when idle (see `BLOCK_PER_STREAM`).
    long_blocks: bool,
    rx: mpsc::UnboundedReceiver<Message>,
    /// Reconnections of the command connection: a claim in flight may have lost its reply, so
    /// the topics waiting here recover their own pending entries (those not waiting do when
    /// they come back).
    command_reconnects: tokio::sync::broadcast::Receiver<fred::types::config::Server>,
    waiting: HashMap<Arc<str>, Waiting>,
    /// The read of every waiting topic, while `waiting` is unchanged.
    all_streams: Option<AllStreams>,
    /// Topics that were in a read whose reply may have been lost: told so with their answer.
    lost: HashSet<Arc<str>>,
    /// Topics just answered, expected to join again at once: the next read waits a little
    /// for them (see `REJOIN_WAIT`).
    expecting: HashSet<Arc<str>>,
    /// Keys found holding something else than a stream: checked alone before they are read.
    suspects: HashSet<Arc<str>>,
    /// While messages flow on a worker with many topics, reads poll until then (see
    /// `POLL_COST`).
    hot_until: Option<Instant>,
    /// When the last read was sent.
    last_read_at: Instant,
    /// Whether polling without keyspace notifications was said (`say_polling`).
    said_polling: bool,
    /// Reads in a row that ended in a `NOGROUP` naming no key.
    unnamed_losses: u32,
    /// Topics that withdrew since they were last answered.
    withdrawn: Vec<Arc<str>>,
    /// Keyspace notifications, where the server sends them (`doorbell.rs`): reads then name
    /// only the streams that rang (`ready`), and every stream every `block_for`.
    doorbell: Option<Doorbell>,
    /// Whether the server was asked about keyspace notifications yet.
    doorbell_checked: bool,
    /// The subscription was refused (no `+psubscribe`, or a RESP3 connection): not tried again.
    doorbell_refused: bool,
    /// A read named many streams without a doorbell: listen to producers' rings (see
    /// `RINGS_FROM_STREAMS`).
    rings_wanted: bool,
    /// With producers' rings: the streams the read of every stream under way has yet to read
    /// (see `SWEEP_SLICE`).
    sweep: Vec<Arc<str>>,
    /// A read of the sweep under way found entries of streams that did not ring.
    unrung_seen: bool,
    /// Subscribing to producers' rings was refused: not tried again.
    rings_refused: bool,
    /// Not before then (after a try that could not connect, or a doorbell that ended).
    next_rings_try: Instant,
    /// Streams that may have entries (rang, read full, new): read next.
    ready: HashSet<Arc<str>>,
    /// Topics seen joining: a topic's first join is read at once.
    known: HashSet<Arc<str>>,
    /// When the next read of every stream is due (with a doorbell).
    next_full: Instant,
    /// When to ask again whether the server still sends keyspace notifications.
    next_check: Instant,
    /// Without a doorbell: when to ask whether notifications were turned on.
    next_doorbell_check: Instant,
    /// The interval between reads while they poll, fixed when polling starts (see
    /// `POLL_COST`): counted from the topics waiting then, not from those waiting at each read
    /// (fewer while most are busy, which would make reads follow each other at once).
    hot_interval: Duration,
}

/// The reader connection and its id (to wake its blocked read).
struct Link {
    client: Dedicated,
    id: Option<i64>,
    reconnects: tokio::sync::broadcast::Receiver<fred::types::config::Server>,
    /// A key it reads (routes `CLIENT UNBLOCK` to its node on a cluster).
    key: Arc<str>,
}

impl SharedReader {
    async fn run(mut self) {
        let mut link: Option<Link> = None;
        let mut backoff = Duration::from_millis(100);
        loop {
            if !self.gather().await {
                return;
            }
            if self.waiting.is_empty() {
                continue;
            }
            if link.is_none() {
                let key = self.waiting.keys().next().cloned().expect("a topic waits");
                match self.conn.dedicated_for(&key, self.block_for).await {
                    Ok(client) => {
                        let id =
                            client.custom::<i64, _>(command("CLIENT", &key, false), vec![Value::from("ID")]).await.ok();
                        match id {
                            None => self.cannot_unblock("CLIENT ID refused"),
                            // Is waking it allowed? (It is not blocked now: 0 if so.) Asked once
                            // per connection, so the first late joiner does not find out.
                            // (`unblock` notes a refusal by permission.)
                            Some(id) if self.unblock_allowed => {
                                let _ = self.unblock(Some(id), &key).await;
                            }
                            Some(_) => {}
                        }
                        let reconnects = client.reconnect_rx();
                        if !std::mem::replace(&mut self.doorbell_checked, true) {
                            self.check_doorbell(&key).await;
                        }
                        link = Some(Link { client, id, reconnects, key });
                        // Connecting may have taken a while: take what topics said meanwhile.
                        self.take_queued();
                        if self.waiting.is_empty() {
                            continue;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, topics = self.waiting.len(), "cannot open the read connection; retrying");
                        self.pause(&mut backoff).await;
                        continue;
                    }
                }
            }
            let Some(current) = link.as_mut() else { continue };
            if reconnected(&mut current.reconnects) | reconnected(&mut self.command_reconnects) {
                // Reads (or claims) before the reconnection may have been served with their
                // replies lost: the next read (of every stream) tells them.
                self.after_reconnection();
            }
            if self.source() != Some(Source::Keyspace)
                && self.doorbell_checked
                && Instant::now() >= self.next_doorbell_check
            {
                // Notifications may have been turned on (again) since the last look.
                let key = current.key.clone();
                self.check_doorbell(&key).await;
            }
            if self.rings_wanted && self.doorbell.is_none() && Instant::now() >= self.next_rings_try {
                self.start_rings().await;
            }
            let mut only = None;
            // With producers' rings and no messages flowing, the read blocks on every stream.
            let rings_idle = self.source() == Some(Source::Rings) && !self.is_hot();
            if self.doorbell.is_some() && !rings_idle {
                match self.wait_for_ring(&mut current.reconnects).await {
                    Some(keys) => only = keys,
                    // Every topic went (answered, withdrew): gather again.
                    None => continue,
                }
            } else if self.hot_until.is_some_and(|t| Instant::now() < t) {
                // Messages flow: the next read polls, no sooner than the interval after the last.
                // (Never shorter than what the topics waiting now call for: more may have joined.)
                let at = self.last_read_at + self.hot_interval.max(self.poll_interval());
                if Instant::now() < at {
                    self.wait_until(at).await;
                    if self.waiting.is_empty() {
                        continue;
                    }
                }
            }
            match self.read(current, only).await {
                Ok(()) => backoff = Duration::from_millis(100),
                Err(e) => {
                    self.conn.note_error(&e);
                    tracing::warn!(error = %e, topics = self.waiting.len(), "shared read failed; retrying");
                    if !self.conn.readers_survive_errors() {
                        // On Redis Cluster a failover may have moved the slot: read from its new
                        // primary (the old connection would reconnect to a node that is gone).
                        link = None;
                    }
                    self.pause(&mut backoff).await;
                }
            }
        }
    }

    /// Takes what topics said; waits for the first when none waits, and briefly for topics just
    /// answered. Answers withdrawn topics. False when every topic is gone.
    async fn gather(&mut self) -> bool {
        while self.waiting.is_empty() && self.expecting.is_empty() {
            // Rings are taken meanwhile, so they do not pile up while every topic is busy.
            let ring = async {
                match self.doorbell.as_mut() {
                    Some(bell) => bell.rings.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                m = self.rx.recv() => match m {
                    Some(m) => {
                        self.take(m);
                    }
                    None => return false,
                },
                Some(ring) = ring => self.ring(ring),
            }
        }
        let deadline = Instant::now() + REJOIN_WAIT;
        loop {
            while let Ok(m) = self.rx.try_recv() {
                self.take(m);
            }
            if self.expecting.is_empty() {
                break;
            }
            tokio::select! {
                m = self.rx.recv() => match m {
                    Some(m) => {
                        self.take(m);
                    }
                    None => return false,
                },
                _ = tokio::time::sleep_until(deadline) => {
                    self.expecting.clear();
                    break;
                }
            }
        }
        self.take_queued();
        true
    }

    /// Takes the queued messages of topics, then answers the topics that withdrew (all of
    /// them once the worker stops: no read starts after that) and forgets those that no
    /// longer listen (they gave up waiting, or stopped at once).
    fn take_queued(&mut self) {
        while let Ok(m) = self.rx.try_recv() {
            self.take(m);
        }
        // Only the topics that withdrew: a worker may have thousands waiting.
        let withdrawn: Vec<Arc<str>> = if self.stop.is_cancelled() {
            self.waiting.keys().cloned().collect()
        } else {
            std::mem::take(&mut self.withdrawn)
        };
        for key in withdrawn {
            if self.stop.is_cancelled() || self.waiting.get(&key).is_some_and(|w| w.withdrawn) {
                self.answer(&key, Vec::new());
            }
        }
    }

    /// Notes that this connection's reads cannot be woken; says so once.
    fn cannot_unblock(&mut self, why: &str) {
        if std::mem::replace(&mut self.unblock_allowed, false) {
            tracing::warn!(reason = why, block = ?BLOCK_WITHOUT_UNBLOCK.min(self.block_for),
                "the shared read cannot be woken (grant +client|id +client|unblock): it blocks briefly and \
                 re-reads instead, which costs more reads at idle");
        }
    }

    /// Notes one message. True when it concerns a topic not in the read under way (joined,
    /// or withdrew from it): that read has to be woken.
    fn take(&mut self, m: Message) -> bool {
        match m {
            Message::Join { key, arg, count, reply } => {
                self.expecting.remove(&key);
                if self.known.insert(key.clone()) {
                    // Its first read: what it holds was not rung for this reader. (`ready` only
                    // counts with a doorbell.)
                    self.ready.insert(key.clone());
                }
                // A topic that gave up on its answer joins anew: the old reply goes nowhere.
                self.waiting.insert(key, Waiting { arg, count: count.max(1), reply, withdrawn: false });
                self.all_streams = None;
                true
            }
            Message::Withdraw { key } => match self.waiting.get_mut(&key) {
                Some(w) => {
                    w.withdrawn = true;
                    self.withdrawn.push(key);
                    true
                }
                None => false,
            },
            Message::Pass { key } => {
                self.expecting.remove(&key);
                false
            }
        }
    }

    /// Answers `key` with `entries` (and whether a reply may have been lost).
    fn answer(&mut self, key: &Arc<str>, entries: Vec<RawEntry>) {
        if let Some(w) = self.waiting.remove(key) {
            self.all_streams = None;
            let lost_reply = self.lost.remove(key);
            // A topic that stopped at once no longer listens: what it was given stays pending
            // under this consumer and is recovered at its next start (or taken over).
            let _ = w.reply.send(Outcome::Entries { entries, lost_reply });
        }
    }

    /// The read of `keys`: those of topics still listening (one that gave up waiting, or
    /// stopped at once, is not read for: what Redis would deliver to it would wait for
    /// `claim_idle`), with their arguments and the smallest room among them.
    fn streams_of(&mut self, keys: Vec<Arc<str>>) -> AllStreams {
        let keys: Vec<Arc<str>> = keys
            .into_iter()
            .filter(|k| match self.waiting.get(k) {
                Some(w) if w.reply.is_closed() => {
                    self.waiting.remove(k);
                    self.all_streams = None;
                    false
                }
                Some(_) => true,
                None => false,
            })
            .collect();
        let count = keys.iter().filter_map(|k| self.waiting.get(k)).map(|w| w.count).min().unwrap_or(1);
        // Each key's argument was built once (cloning it counts a reference).
        let mut args = Vec::with_capacity(keys.len() * 2);
        args.extend(keys.iter().map(|k| self.waiting.get(k).map_or_else(|| Value::from(&**k), |w| w.arg.clone())));
        args.extend(keys.iter().map(|_| Value::from_static_str(">")));
        AllStreams { keys: keys.into(), args, count }
    }

    /// Answers the waiting topics told of a lost reply: they recover, then join again.
    fn answer_lost(&mut self) {
        let lost: Vec<Arc<str>> = self.lost.iter().filter(|k| self.waiting.contains_key(*k)).cloned().collect();
        for key in lost {
            self.answer(&key, Vec::new());
        }
        self.lost.retain(|k| self.waiting.contains_key(k));
    }

    fn answer_with(&mut self, key: &Arc<str>, outcome: Outcome) {
        // Whatever went wrong, read it at its next join.
        self.ready.insert(key.clone());
        if let Some(w) = self.waiting.remove(key) {
            self.all_streams = None;
            self.lost.remove(key);
            let _ = w.reply.send(outcome);
        }
    }

    /// One blocking read for every waiting topic; answers those it brought entries, and
    /// those that withdrew meanwhile. Errors of the connection (or of Redis as a whole) are
    /// returned; errors of one topic's stream are answered to that topic.
    async fn read(&mut self, link: &mut Link, only: Option<Vec<Arc<str>>>) -> Result<(), RedisError> {
        // A key found not to be a stream is checked alone before it is read again, so it does
        // not fail the reads of every other topic each time its topic retries.
        let suspects: Vec<Arc<str>> = self.suspects.iter().filter(|k| self.waiting.contains_key(*k)).cloned().collect();
        for key in suspects {
            if self.is_stream_or_none(&key).await {
                self.suspects.remove(&key);
            } else {
                self.answer_with(
                    &key,
                    Outcome::Failed("WRONGTYPE: the topic's key holds something else than a stream".into()),
                );
            }
        }
        if self.waiting.is_empty() {
            return Ok(());
        }
        let reads_all = only.is_none();
        let all = match only {
            Some(keys) => self.streams_of(keys),
            None => match self.all_streams.take() {
                Some(all) => all,
                None => self.streams_of(self.waiting.keys().cloned().collect()),
            },
        };
        if all.keys.is_empty() {
            return Ok(());
        }
        let (keys, count) = (all.keys.clone(), all.count);
        // Streams in this read are not ready any more: taken out before it is sent, so a ring
        // that comes while it is under way (for an entry it may not see) makes them ready again.
        // Given back if the read fails.
        let was_ready: Vec<Arc<str>> = if self.ready.is_empty() {
            Vec::new()
        } else {
            keys.iter().filter(|k| self.ready.remove(*k)).cloned().collect()
        };
        if reads_all
            && keys.len() >= RINGS_FROM_STREAMS
            && self.doorbell.is_none()
            && !self.rings_refused
            && self.conn.readers_survive_errors()
        {
            self.rings_wanted = true;
        }
        // Topics told of a lost reply are answered after this read, which then does not block:
        // they recover as soon as Redis answers again.
        let lost_waiting = !self.lost.is_empty() && self.waiting.keys().any(|k| self.lost.contains(k));
        let block_for = if self.unblock_allowed && self.long_blocks && !self.stop.is_cancelled() {
            let longer = (BLOCK_PER_STREAM * u32::try_from(keys.len()).unwrap_or(u32::MAX)).min(MAX_IDLE_BLOCK);
            self.block_for.max(longer)
        } else if self.unblock_allowed {
            self.block_for
        } else {
            self.block_for.min(BLOCK_WITHOUT_UNBLOCK)
        };
        // With keyspace notifications, reads never block: the doorbell says when to read. With
        // producers' rings, they block while no messages flow, and only when they name every
        // stream (a read of some would not wake for the others).
        let polling = !reads_all || self.source() == Some(Source::Keyspace) || self.is_hot();
        let block_ms =
            if lost_waiting || polling { 0 } else { i64::try_from(block_for.as_millis()).unwrap_or(i64::MAX).max(1) };
        self.last_read_at = Instant::now();
        let mut args: Vec<Value> = Vec::with_capacity(8 + all.args.len());
        args.extend([
            Value::from_static_str("GROUP"),
            Value::from(&*self.group),
            Value::from(&*self.consumer),
            Value::from_static_str("COUNT"),
            Value::from(count as i64),
        ]);
        if block_ms > 0 {
            args.extend([Value::from_static_str("BLOCK"), Value::from(block_ms)]);
        }
        args.push(Value::from_static_str("STREAMS"));
        args.extend(all.args.iter().cloned());
        if reads_all {
            // Kept for the next read, unless a topic joins or leaves meanwhile (which clears it).
            self.all_streams = Some(all);
        }
        let Link { client, id, reconnects, key: link_key } = link;
        let options = fred::types::config::Options {
            timeout: Some(Duration::from_millis(u64::try_from(block_ms).unwrap_or(0)) + READ_TIMEOUT_MARGIN),
            ..Default::default()
        };
        let client = client.with_options(&options);
        let read = client.custom::<Value, _>(command("XREADGROUP", &keys[0], block_ms > 0), args);
        tokio::pin!(read);
        // Set while the read must be woken (a topic joined or withdrew), with when to try again
        // if it was not blocked yet.
        let mut wake: Option<(usize, Instant)> = None;
        // (A closed event channel would answer at once for ever.)
        let (mut link_events, mut command_events, mut stop_seen) = (true, true, false);
        // Rings that come while the read blocks are noted (not left to pile up while nothing
        // flows on this worker's topics and others ring on the namespace's channel).
        let mut rings_open = self.doorbell.is_some();
        let reply = loop {
            let retry_at = wake.map(|(_, at)| at);
            tokio::select! {
                biased;
                r = &mut read => break r,
                m = self.rx.recv() => {
                    // `None`: every topic is gone; the read ends at its BLOCK timeout.
                    if let Some(m) = m {
                        if self.take(m) && wake.is_none() && block_ms > 0 {
                            wake = Some((0, Instant::now()));
                        }
                    }
                }
                _ = self.stop.cancelled(), if !stop_seen => {
                    // The worker stops: its topics withdraw, and this read ends now.
                    stop_seen = true;
                    wake.get_or_insert((0, Instant::now()));
                }
                ring = async {
                    match self.doorbell.as_mut() {
                        Some(bell) => bell.rings.recv().await,
                        None => std::future::pending().await,
                    }
                }, if rings_open => match ring {
                    Some(ring) => self.ring(ring),
                    None => {
                        rings_open = false;
                        self.doorbell_closed();
                    }
                },
                r = reconnects.recv(), if link_events => {
                    link_events = !matches!(r, Err(broadcast::error::RecvError::Closed));
                    if link_events {
                        // This connection reconnected under the read: an earlier reply may be lost.
                        self.lost.extend(keys.iter().cloned());
                        wake.get_or_insert((0, Instant::now()));
                    }
                }
                r = self.command_reconnects.recv(), if command_events => {
                    command_events = !matches!(r, Err(broadcast::error::RecvError::Closed));
                    if command_events {
                        // A claim's reply may be lost: the topics waiting here recover first.
                        self.lost.extend(self.waiting.keys().cloned());
                        wake.get_or_insert((0, Instant::now()));
                    }
                }
                _ = async { tokio::time::sleep_until(retry_at.expect("checked")).await }, if retry_at.is_some() => {
                    let Some((tries, _)) = wake else { continue };
                    wake = match self.unblock(*id, link_key).await {
                        Unblock::Done => None,
                        Unblock::Refused if !self.unblock_allowed => None,
                        Unblock::Refused if tries < UNBLOCK_RETRIES.len() => {
                            Some((tries + 1, Instant::now() + UNBLOCK_RETRIES[tries]))
                        }
                        // No answer, or still not blocked: it ends at its BLOCK timeout, and
                        // later reads block no longer than `block_for`.
                        Unblock::NoAnswer | Unblock::Refused => {
                            if std::mem::replace(&mut self.long_blocks, false) && block_ms > self.block_for.as_millis() as i64 {
                                tracing::warn!(block_ms, "a blocked shared read could not be woken; it ends at its timeout, \
                                    and reads block for block_for from now on");
                            }
                            None
                        }
                    };
                }
            }
        };
        let reply = match reply {
            Ok(v) => parse_read_streams("XREADGROUP", v).inspect_err(|_| {
                // Redis served the read: what it delivered is pending here, unseen.
                self.lost.extend(keys.iter().cloned());
            }),
            Err(e) => Err(RedisError::new("XREADGROUP", e)),
        };
        if reply.is_ok() {
            self.unnamed_losses = 0;
        } else {
            self.ready.extend(was_ready.iter().cloned());
        }
        match reply {
            Ok(streams) => {
                if self.source() == Some(Source::Rings) {
                    if reads_all {
                        // Every stream was just read. The next sweep is soon all the same:
                        // messages start to flow, and a producer that has not heard of this
                        // worker yet learns of it with its next ring, writing unrung meanwhile
                        // (before, such a message waited a second at 10,000 topics).
                        self.sweep.clear();
                        self.next_full = Instant::now() + RINGS_FIRST_SWEEP;
                    } else if !streams.is_empty() && was_ready.len() < keys.len() {
                        // (Nothing to look for when nothing came, or every stream read rang.)
                        // Entries of streams that did not ring (rings that came meanwhile taken
                        // first): a writer that does not ring is at work, and sweeps follow
                        // each other (see `sweep_period`).
                        while let Some(ring) = self.doorbell.as_mut().and_then(|d| d.rings.try_recv().ok()) {
                            self.ring(ring);
                        }
                        // Rung: before the read (taken out of `ready` for it) or while it ran.
                        let rung_before: HashSet<&str> = was_ready.iter().map(|k| &**k).collect();
                        let unrung = |k: &[u8]| {
                            std::str::from_utf8(k).is_ok_and(|k| !rung_before.contains(k) && !self.ready.contains(k))
                        };
                        if streams.iter().any(|(k, _)| unrung(k)) {
                            self.unrung_seen = true;
                        }
                    }
                }
                let interval = self.poll_interval();
                if !streams.is_empty() && self.source() == Some(Source::Rings) {
                    self.hot_until = Some(Instant::now() + RINGS_FULL_READ_EVERY);
                } else if !streams.is_empty() && interval >= MIN_POLL_INTERVAL {
                    if !self.is_hot() {
                        self.hot_interval = interval;
                        self.say_polling(keys.len(), interval);
                    }
                    self.hot_until = Some(Instant::now() + self.hot_interval * HOT_READS);
                }
                // Streams that filled the count are ready again (more may be there).
                for (key, entries) in &streams {
                    if entries.len() >= count {
                        if let Some(key) = std::str::from_utf8(key).ok().and_then(|k| self.known.get(k)) {
                            self.ready.insert(key.clone());
                        }
                    }
                }
                for (key, entries) in streams {
                    let Some(key) = std::str::from_utf8(&key)
                        .ok()
                        .and_then(|k| self.waiting.get_key_value(k))
                        .map(|(k, _)| k.clone())
                    else {
                        tracing::error!(key = %String::from_utf8_lossy(&key), entries = entries.len(),
                            "the shared read returned entries of a stream no topic waits for; they stay pending until recovered");
                        continue;
                    };
                    self.answer(&key, entries);
                    self.expecting.insert(key);
                }
                self.answer_lost();
                Ok(())
            }
            Err(e) if e.is_server_error("UNBLOCKED") => {
                // A blocked read is woken with an error when one of its streams is deleted:
                // read again, which names what is missing.
                // Redis answered: topics told of a lost reply recover now.
                self.answer_lost();
                Ok(())
            }
            Err(e) if e.is_server_error("NOGROUP") => {
                // "NOGROUP No such key '<key>' or consumer group '<group>' in XREADGROUP ...":
                // only that topic's group is gone. A blocked read woken because a group was
                // destroyed does not say which: the next read does. If twice no key can be
                // told, every topic of the read checks its own (re-creating a group that
                // exists is a no-op).
                let named = nogroup_key(&e.to_string())
                    .and_then(|k| self.waiting.get_key_value(k.as_str()))
                    .map(|(k, _)| k.clone());
                match named {
                    Some(key) => {
                        self.unnamed_losses = 0;
                        self.answer_with(&key, Outcome::GroupLost);
                    }
                    None if self.unnamed_losses == 0 => self.unnamed_losses += 1,
                    None => {
                        self.unnamed_losses = 0;
                        for key in keys.iter() {
                            self.answer_with(key, Outcome::GroupLost);
                        }
                    }
                }
                // Redis answered: topics told of a lost reply recover now.
                self.answer_lost();
                Ok(())
            }
            // Errors of Redis as a whole (or of the connection) concern every topic; any other
            // error reply (`WRONGTYPE`, ...) may be one stream's.
            Err(e) if !matches!(e.kind(), ErrorKind::Connection | ErrorKind::Timeout | ErrorKind::Unavailable) => {
                // A key that is not a stream (an operator's mistake), or that the user may no
                // longer read (`NOPERM`), fails the whole read: find
                // which, and tell only its topic.
                let mut found = false;
                for key in keys.iter() {
                    if !self.is_stream_or_none(key).await {
                        self.answer_with(key, Outcome::Failed(e.to_string()));
                        self.suspects.insert(key.clone());
                        found = true;
                    }
                }
                if !found {
                    return Err(e);
                }
                // Redis answered: topics told of a lost reply recover now.
                self.answer_lost();
                Ok(())
            }
            Err(e) => {
                // The connection (or Redis as a whole) failed: a reply may have been lost. The
                // next read is of every stream (with a doorbell, it would otherwise wait for a
                // ring), after which the topics told of it recover.
                self.lost.extend(keys.iter().cloned());
                self.next_full = Instant::now();
                Err(e)
            }
        }
    }

    /// False when `key` holds something else than a stream (`TYPE`; true when it could not be
    /// asked).
    async fn is_stream_or_none(&self, key: &str) -> bool {
        let client = self.conn.client_for(key).await;
        match client.custom::<String, _>(command("TYPE", key, false), vec![Value::from(key)]).await {
            Ok(kind) => matches!(kind.as_str(), "stream" | "none"),
            // A key this user may not touch (`NOPERM`) is as bad as one of the wrong type.
            Err(e) => !e.details().starts_with("NOPERM"),
        }
    }

    /// Sends `CLIENT UNBLOCK` for the reader connection.
    async fn unblock(&mut self, id: Option<i64>, key: &str) -> Unblock {
        let Some(id) = id else { return Unblock::Refused };
        let args = vec![Value::from("UNBLOCK"), Value::from(id)];
        let unblock = async {
            let client = self.conn.client_for(key).await;
            client.custom::<Value, _>(command("CLIENT", key, false), args).await
        };
        match tokio::time::timeout(STOP_STEP, unblock).await {
            // 1: it was blocked and is woken now; 0: it was not blocked (yet).
            Ok(Ok(Value::Integer(1))) => Unblock::Done,
            Ok(Ok(_)) => Unblock::Refused,
            Ok(Err(e)) if e.kind() == &fred::error::ErrorKind::IO || e.kind() == &fred::error::ErrorKind::Timeout => {
                Unblock::NoAnswer
            }
            Ok(Err(e)) => {
                self.cannot_unblock(&e.to_string());
                Unblock::Refused
            }
            Err(_) => Unblock::NoAnswer,
        }
    }

    /// Waits `backoff` (doubling it up to 5 s), taking messages meanwhile: topics that withdraw
    /// are answered at once.
    async fn pause(&mut self, backoff: &mut Duration) {
        let until = Instant::now() + *backoff;
        *backoff = (*backoff * 2).min(Duration::from_secs(5));
        self.wait_until(until).await;
    }

    /// Waits until `until`, taking messages meanwhile: topics that withdraw (or all, once the
    /// worker stops) are answered at once.
    async fn wait_until(&mut self, until: Instant) {
        loop {
            tokio::select! {
                m = self.rx.recv() => match m {
                    Some(m) => {
                        self.take(m);
                        self.take_queued();
                    }
                    None => return,
                },
                _ = self.stop.cancelled(), if !self.waiting.is_empty() => self.take_queued(),
                _ = tokio::time::sleep_until(until) => return,
            }
        }
    }

    /// Asks the server whether it sends keyspace notifications, and subscribes if so (standalone
    /// Redis only: on a cluster each node sends its own).
    async fn check_doorbell(&mut self, key: &str) {
        if !self.conn.readers_survive_errors() {
            return;
        }
        self.next_doorbell_check = Instant::now() + doorbell::FULL_READ_EVERY;
        if self.doorbell_refused || doorbell::enabled(&self.conn, key).await != Some(true) {
            return;
        }
        match doorbell::start(&self.conn, Source::Keyspace).await {
            Ok(bell) => {
                tracing::info!("keyspace notifications on: the shared read names only streams that got entries");
                self.doorbell = Some(bell);
                // Rings of what came before are not to be had: every topic is read, busy ones
                // at their next join.
                self.read_everything_again();
            }
            // Not permitted, or not on this protocol: said once, not asked again.
            Err(doorbell::NotStarted::Refused) => self.doorbell_refused = true,
            Err(doorbell::NotStarted::Unavailable) => {}
        }
    }

    /// Subscribes to producers' rings (see `RINGS_FROM_STREAMS`).
    async fn start_rings(&mut self) {
        self.rings_wanted = false;
        self.next_rings_try = Instant::now() + doorbell::FULL_READ_EVERY;
        match doorbell::start(&self.conn, Source::Rings).await {
            Ok(bell) => {
                tracing::info!(
                    topics = self.known.len(),
                    "many topics and no keyspace notifications: reads name the topics producers ring for, and every \
                     topic once a second while messages flow (docs/delivery.md, \"Many topics\")"
                );
                self.doorbell = Some(bell);
                self.next_full = Instant::now() + RINGS_FULL_READ_EVERY;
            }
            // Not permitted, or not on this protocol: said once, not asked again.
            Err(doorbell::NotStarted::Refused) => self.rings_refused = true,
            Err(doorbell::NotStarted::Unavailable) => {}
        }
    }

    /// Where the doorbell's rings come from (`None`: no doorbell).
    fn source(&self) -> Option<Source> {
        self.doorbell.as_ref().map(|d| d.source)
    }

    /// True while messages flow on a worker with many topics (see `POLL_COST` and
    /// `RINGS_FULL_READ_EVERY`).
    fn is_hot(&self) -> bool {
        self.hot_until.is_some_and(|t| Instant::now() < t)
    }

    /// Ends the doorbell: the reader blocks on every topic again, and reads each once (rings
    /// may have been missed before it ended).
    fn end_doorbell(&mut self) {
        self.doorbell = None;
        self.next_rings_try = Instant::now() + doorbell::FULL_READ_EVERY;
        self.next_doorbell_check = Instant::now() + doorbell::FULL_READ_EVERY;
        self.read_everything_again();
    }

    /// The next read is of every waiting topic, and each busy one is read at its next join.
    fn read_everything_again(&mut self) {
        // Those waiting now in a sweep that starts at once (a slice at a time), the others
        // when they join again.
        self.next_full = Instant::now();
        self.sweep.clear();
        let busy: Vec<Arc<str>> = self.known.iter().filter(|k| !self.waiting.contains_key(*k)).cloned().collect();
        self.ready.extend(busy);
    }

    /// The doorbell's rings stopped (its subscription could not be made again, or stopped
    /// answering): the reader blocks on every topic again.
    fn doorbell_closed(&mut self) {
        tracing::warn!(source = ?self.source(), "the doorbell stopped: the shared read blocks on every topic again");
        self.end_doorbell();
    }

    /// With producers' rings: how long from the end of one sweep of every stream to the next.
    /// A second, or, when the last sweep found entries of streams that did not ring (a writer
    /// that does not ring is at work: an older producer, another client), as often as reads
    /// of every topic polled before rings (see `POLL_COST`), so such a writer's messages wait
    /// about a sweep, not a second.
    fn sweep_period(&mut self) -> Duration {
        if std::mem::take(&mut self.unrung_seen) {
            self.poll_interval().max(MIN_POLL_INTERVAL)
        } else {
            RINGS_FULL_READ_EVERY
        }
    }

    /// With a doorbell: waits until a waiting topic's stream rang (or is otherwise ready), or
    /// until every stream is due to be read (then returns them a slice at a time, see
    /// `SWEEP_SLICE`). Returns the streams to read (`Some(None)`: all, in one read that blocks
    /// when it may), or `None` when no topic waits any more.
    async fn wait_for_ring(
        &mut self,
        reconnects: &mut tokio::sync::broadcast::Receiver<fred::types::config::Server>,
    ) -> Option<Option<Vec<Arc<str>>>> {
        // (A closed event channel would answer at once for ever.)
        let (mut link_events, mut command_events) = (true, true);
        loop {
            while let Some(ring) = self.doorbell.as_mut().and_then(|d| d.rings.try_recv().ok()) {
                self.ring(ring);
            }
            self.take_queued();
            if self.waiting.is_empty() {
                return None;
            }
            let rings = self.source() == Some(Source::Rings);
            if rings && !self.is_hot() {
                // Messages stopped flowing: block on every stream.
                return Some(None);
            }
            if !rings && Instant::now() >= self.next_check {
                // Notifications may have been turned off meanwhile: fall back to blocking reads
                // of every stream.
                self.next_check = Instant::now() + self.block_for;
                if let Some(key) = self.waiting.keys().next().cloned() {
                    if doorbell::enabled(&self.conn, &key).await == Some(false) {
                        tracing::info!("keyspace notifications off: the shared read blocks on every topic again");
                        self.end_doorbell();
                        return Some(None);
                    }
                }
            }
            let mut due: Vec<Arc<str>> = self.ready.iter().filter(|k| self.waiting.contains_key(*k)).cloned().collect();
            if Instant::now() >= self.next_full {
                // Every stream, a slice at a time, with those that rang.
                if self.sweep.is_empty() {
                    self.sweep = self.waiting.keys().cloned().collect();
                }
                let slice_end = due.len() + SWEEP_SLICE;
                while due.len() < slice_end {
                    let Some(key) = self.sweep.pop() else { break };
                    if self.waiting.contains_key(&key) && !self.ready.contains(&key) {
                        due.push(key);
                    }
                }
                if self.sweep.is_empty() {
                    let every = if rings { self.sweep_period() } else { doorbell::FULL_READ_EVERY };
                    self.next_full = Instant::now() + every;
                }
            }
            if !due.is_empty() {
                return Some(Some(due));
            }
            let Some(bell) = self.doorbell.as_mut() else { return Some(None) };
            tokio::select! {
                ring = bell.rings.recv() => match ring {
                    Some(ring) => self.ring(ring),
                    None => {
                        self.doorbell_closed();
                        return Some(None);
                    }
                },
                m = self.rx.recv() => match m {
                    Some(m) => {
                        self.take(m);
                    }
                    None => return None,
                },
                _ = self.stop.cancelled(), if !self.waiting.is_empty() => self.take_queued(),
                _ = tokio::time::sleep_until(match (rings, self.hot_until) {
                    (true, Some(hot)) => self.next_full.min(hot),
                    _ => self.next_full.min(self.next_check),
                }) => {}
                // A reconnection while nothing rings: replies may be lost, and so may rings.
                r = reconnects.recv(), if link_events => {
                    link_events = !matches!(r, Err(broadcast::error::RecvError::Closed));
                    if link_events {
                        self.after_reconnection();
                    }
                }
                r = self.command_reconnects.recv(), if command_events => {
                    command_events = !matches!(r, Err(broadcast::error::RecvError::Closed));
                    if command_events {
                        self.after_reconnection();
                    }
                }
            }
        }
    }

    /// After the read or the command connection reconnected: the waiting topics are told their
    /// replies may be lost (with the next read, of every stream), and every topic is read at
    /// its next join (a ring may have been lost with the subscriber's connection too).
    fn after_reconnection(&mut self) {
        self.lost.extend(self.waiting.keys().cloned());
        self.read_everything_again();
    }

    fn ring(&mut self, ring: Ring) {
        match ring {
            Ring::Key(key) => {
                if let Some(key) = self.known.get(&key) {
                    self.ready.insert(key.clone());
                }
            }
            // Busy topics (not waiting now, so not in the full read) are read at their next join.
            Ring::Missed => self.read_everything_again(),
        }
    }

    /// Says once, at `warn`, that reads name every topic while messages flow, where the
    /// server could name those that got entries: latency then grows with the topics.
    fn say_polling(&mut self, topics: usize, interval: Duration) {
        // (About to listen to producers' rings, or does: see `start_rings`.)
        if self.doorbell.is_some()
            || (self.rings_wanted && !self.rings_refused)
            || !self.conn.readers_survive_errors()
            || std::mem::replace(&mut self.said_polling, true)
        {
            return;
        }
        tracing::warn!(topics, interval = ?interval, keyspace_refused = self.doorbell_refused, rings_refused = self.rings_refused,
            "every read names all the topics waiting, so a message waits for the next such read (each costs Redis about \
             2 µs a topic): subscribing to keyspace notifications or to producers' rings was refused or is not possible \
             (the user needs +subscribe, +psubscribe and the channels; RESP3 connections do not use them; \
             docs/delivery.md, \"Many topics\")");
    }

    /// Between reads of a worker with many topics while messages flow: see `POLL_COST`.
    fn poll_interval(&self) -> Duration {
        POLL_COST * u32::try_from(self.waiting.len()).unwrap_or(u32::MAX)
    }
}

/// The key a `NOGROUP` error of `XREADGROUP` names.
fn nogroup_key(message: &str) -> Option<String> {
    let rest = &message[message.find("No such key '")? + "No such key '".len()..];
    Some(rest[..rest.rfind("' or consumer group '")?].to_owned())
}

#[cfg(test)]
mod tests {
    use super::nogroup_key;

    #[test]
    fn the_key_of_a_nogroup_error_is_found() {
        let e =
            "redis command `XREADGROUP` failed (NotFound): NOGROUP No such key 'ns:{a.b}' or consumer group 'g' in \
                 XREADGROUP with GROUP option";
        assert_eq!(nogroup_key(e).as_deref(), Some("ns:{a.b}"));
        assert_eq!(nogroup_key("NOGROUP something else"), None);
    }
}
