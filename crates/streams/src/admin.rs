//! Operations on topics and groups: create a group at a position, move its cursor, look at
//! what is pending.

use fred::interfaces::ClientLike;
use fred::types::scan::ScanType;
use fred::types::{ClusterHash, CustomCommand, Value};
use futures::StreamExt;
use tributary_core::{Connection, EntryId, RedisError, Topic, TopicPattern};

use crate::position::Position;
use crate::redis::{call, call_sub, entry_id_of, pairs, Args};
use crate::retention::Retention;
use crate::StreamError;

/// Administrative operations. Cheap to clone.
///
/// Group operations (create, move, delete) on a partitioned topic apply to its own stream and
/// every partition (`docs/partitions.md`); the others look at the topic's own stream. Every
/// operation also takes one partition by its name, `<topic>#<p>` (`orders#3`): its length,
/// groups, pending entries, stats, trimming.
///
/// # Example
/// ```no_run
/// # async fn demo(conn: tributary_core::Connection) -> Result<(), tributary_streams::StreamError> {
/// use tributary_streams::{Admin, Position};
///
/// let admin = Admin::new(conn);
/// // Create the group at deploy time so nothing published before the first worker start is
/// // missed, then replay yesterday's traffic into a new group:
/// admin.create_group("orders", "billing", Position::End).await?;
/// let yesterday = std::time::SystemTime::now() - std::time::Duration::from_secs(86_400);
/// admin.create_group("orders", "audit", Position::Time(yesterday)).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Admin {
    conn: Connection,
}

/// State of one consumer group.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupInfo {
    /// Group name.
    pub name: String,
    /// Number of consumers.
    pub consumers: u64,
    /// Entries delivered and not yet acknowledged.
    pub pending: u64,
    /// The group's cursor: the last entry delivered to it.
    pub last_delivered: EntryId,
    /// Entries not yet delivered to the group, when Redis can tell.
    pub lag: Option<u64>,
    /// Entries the group has read (`entries-read`), when Redis can tell.
    pub entries_read: Option<u64>,
}

/// One entry of a group's pending entries list.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PendingInfo {
    /// Entry id.
    pub id: EntryId,
    /// Consumer holding it.
    pub consumer: String,
    /// Milliseconds since it was last delivered.
    pub idle_ms: u64,
    /// Times it was delivered.
    pub deliveries: u64,
}

/// State of one consumer of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumerInfo {
    /// Consumer name.
    pub name: String,
    /// Entries it holds unacknowledged.
    pub pending: u64,
    /// Milliseconds since it last read or claimed.
    pub idle_ms: u64,
}

impl Admin {
    /// Operations on `conn`.
    pub fn new(conn: Connection) -> Self {
        Self { conn }
    }

    pub(crate) fn connection(&self) -> &Connection {
        &self.conn
    }

    fn key(&self, topic: &str) -> Result<String, StreamError> {
        Ok(self.conn.namespace().topic_stream(&Topic::parse_stored(topic)?))
    }

    /// The stream of `topic` and, when it is a partitioned topic, of each of its partitions.
    async fn streams(&self, topic: &str) -> Result<Vec<String>, StreamError> {
        let topic = Topic::parse_stored(topic)?;
        let ns = self.conn.namespace();
        let mut keys = vec![ns.topic_stream(&topic)];
        if topic.partition_of().is_none() {
            let partitions = crate::partitions::stored(&self.conn, &topic).await?.unwrap_or(0);
            keys.extend((0..partitions).map(|p| ns.topic_stream(&topic.partition(p))));
        }
        Ok(keys)
    }

    /// Creates `group` on `topic` (and the stream if needed), starting at `start`; on a
    /// partitioned topic, on every partition too. Returns false if the group already existed
    /// everywhere (it is left unchanged).
    ///
    /// # Errors
    /// [`StreamError`] for a bad name or a failed command.
    pub async fn create_group(&self, topic: &str, group: &str, start: Position) -> Result<bool, StreamError> {
        let mut created = false;
        for key in self.streams(topic).await? {
            let args = Args::new().arg(group).arg(start.group_cursor()).arg("MKSTREAM");
            match call_sub::<Value>(&self.conn, "XGROUP", "CREATE", &key, args).await {
                Ok(_) => created = true,
                Err(e) if e.is_server_error("BUSYGROUP") => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(created)
    }

    /// Moves the cursor of `group` so its next new entry is the one at `position`: a
    /// deliberate replay (backwards) or skip (forwards). Pending entries are unaffected.
    ///
    /// # Errors
    /// [`StreamError`] for a bad name, a missing group, or a failed command.
    pub async fn set_group_position(&self, topic: &str, group: &str, position: Position) -> Result<(), StreamError> {
        for key in self.streams(topic).await? {
            let args = Args::new().arg(group).arg(position.group_cursor());
            call_sub::<Value>(&self.conn, "XGROUP", "SETID", &key, args).await?;
        }
        Ok(())
    }

    /// Deletes `group` from `topic`, with its pending entries list.
    ///
    /// # Errors
    /// [`StreamError`] for a bad name or a failed command.
    pub async fn delete_group(&self, topic: &str, group: &str) -> Result<bool, StreamError> {
        let mut deleted = false;
        for key in self.streams(topic).await? {
            let n: i64 = match call_sub(&self.conn, "XGROUP", "DESTROY", &key, Args::new().arg(group)).await {
                Ok(n) => n,
                // A partition never written to has no stream yet.
                Err(e) if e.is_server_error("ERR The XGROUP subcommand requires the key to exist") => 0,
                Err(e) => return Err(e.into()),
            };
            deleted |= n == 1;
        }
        Ok(deleted)
    }

    /// The groups of `topic`.
    ///
    /// # Errors
    /// [`StreamError`] for a bad name or a failed command (a missing stream has no groups).
    pub async fn groups(&self, topic: &str) -> Result<Vec<GroupInfo>, StreamError> {
        let key = self.key(topic)?;
        let reply = match call_sub::<Value>(&self.conn, "XINFO", "GROUPS", &key, Args::new()).await {
            Ok(v) => v,
            Err(e) if e.is_server_error("ERR no such key") => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        for g in reply.into_array() {
            let mut info = GroupInfo {
                name: String::new(),
                consumers: 0,
                pending: 0,
                last_delivered: EntryId::MIN,
                lag: None,
                entries_read: None,
            };
            for (k, v) in pairs(g) {
                match k.as_str() {
                    "name" => info.name = v.into_string().unwrap_or_default(),
                    "consumers" => info.consumers = v.as_u64().unwrap_or(0),
                    "pending" => info.pending = v.as_u64().unwrap_or(0),
                    "last-delivered-id" => info.last_delivered = entry_id_of("XINFO GROUPS", v)?,
                    "lag" => info.lag = v.as_u64(),
                    "entries-read" => info.entries_read = v.as_u64(),
                    _ => {}
                }
            }
            out.push(info);
        }
        Ok(out)
    }

    /// The consumers of `group` on `topic`.
    ///
    /// # Errors
    /// [`StreamError`] for a bad name, a missing group, or a failed command.
    pub async fn consumers(&self, topic: &str, group: &str) -> Result<Vec<ConsumerInfo>, StreamError> {
        let key = self.key(topic)?;
        let reply: Value = call_sub(&self.conn, "XINFO", "CONSUMERS", &key, Args::new().arg(group)).await?;
        Ok(reply
            .into_array()
            .into_iter()
            .map(|c| {
                let mut info = ConsumerInfo { name: String::new(), pending: 0, idle_ms: 0 };
                for (k, v) in pairs(c) {
                    match k.as_str() {
                        "name" => info.name = v.into_string().unwrap_or_default(),
                        "pending" => info.pending = v.as_u64().unwrap_or(0),
                        "idle" => info.idle_ms = v.as_u64().unwrap_or(0),
                        _ => {}
                    }
                }
                info
            })
            .collect())
    }

    /// The oldest `count` pending entries of `group`.
    ///
    /// # Errors
    /// [`StreamError`] for a bad name, a missing group, or a failed command.
    pub async fn pending(&self, topic: &str, group: &str, count: usize) -> Result<Vec<PendingInfo>, StreamError> {
        let key = self.key(topic)?;
        let args = Args::new().arg(group).arg("-").arg("+").arg(count as i64);
        let rows: Value = call(&self.conn, "XPENDING", &key, args).await?;
        let mut out = Vec::new();
        for row in rows.into_array() {
            let mut cols = row.into_array().into_iter();
            let (Some(id), Some(consumer), Some(idle), Some(deliveries)) =
                (cols.next(), cols.next(), cols.next(), cols.next())
            else {
                continue;
            };
            out.push(PendingInfo {
                id: entry_id_of("XPENDING", id)?,
                consumer: consumer.into_string().unwrap_or_default(),
                idle_ms: idle.as_u64().unwrap_or(0),
                deliveries: deliveries.as_u64().unwrap_or(0),
            });
        }
        Ok(out)
    }

    /// Topics of this namespace, reserved topics (such as RPC requests' `rpc.*`) included,
    /// sorted.
    ///
    /// # Errors
    /// [`StreamError`] when the scan fails.
    pub async fn topics(&self) -> Result<Vec<Topic>, StreamError> {
        self.scan_topics(&TopicPattern::new("*")?, true).await
    }

    /// Topics of this namespace matching the glob `pattern`, sorted. Reserved topics (such as
    /// RPC requests' `rpc.*`, see [`RESERVED_TOPIC_PREFIXES`]) match only a pattern that
    /// starts with their prefix ([`TopicPattern::permits`]): `*` leaves them out, `rpc.*`
    /// finds them. Worker patterns find their topics here.
    ///
    /// [`RESERVED_TOPIC_PREFIXES`]: tributary_core::keys::RESERVED_TOPIC_PREFIXES
    ///
    /// # Errors
    /// [`StreamError`] when the scan fails.
    pub async fn topics_matching(&self, pattern: &TopicPattern) -> Result<Vec<Topic>, StreamError> {
        self.scan_topics(pattern, false).await
    }

    /// Topics of this namespace with scheduled messages waiting (see
    /// [`Scheduler`](crate::Scheduler)), whether or not their stream exists yet, sorted.
    ///
    /// # Errors
    /// [`StreamError`] when the scan fails.
    pub async fn scheduled_topics(&self) -> Result<Vec<Topic>, StreamError> {
        let ns = self.conn.namespace();
        let matcher = format!("{}:{{*}}:scheduled", ns.as_str());
        let keys = self.scan(&matcher, ScanType::ZSet, "zset").await?;
        let mut found: Vec<Topic> = keys
            .iter()
            .filter_map(|k| k.strip_suffix(":scheduled"))
            // A partition's scheduled messages wait in the partition's set.
            .filter_map(|stream| ns.stored_topic_of_stream(stream))
            .collect();
        found.sort();
        found.dedup();
        Ok(found)
    }

    async fn scan_topics(&self, pattern: &TopicPattern, with_reserved: bool) -> Result<Vec<Topic>, StreamError> {
        let ns = self.conn.namespace();
        let matcher = ns.topic_stream_pattern(pattern);
        let mut keys = self.scan(&matcher, ScanType::Stream, "stream").await?;
        // Partitioned topics, whose own stream may not exist (`partitions.rs`).
        let counts = self.scan(&format!("{matcher}:partitions"), ScanType::String, "string").await?;
        keys.extend(counts.iter().filter_map(|k| k.strip_suffix(":partitions")).map(str::to_owned));
        let mut found: Vec<Topic> = keys
            .into_iter()
            .filter_map(|k| ns.topic_of_stream(&k))
            .filter(|t| with_reserved || pattern.permits(t))
            .collect();
        found.sort();
        found.dedup();
        Ok(found)
    }

    /// Keys matching `matcher` of one type, on every primary.
    async fn scan(&self, matcher: &str, kind: ScanType, kind_name: &'static str) -> Result<Vec<String>, StreamError> {
        Ok(if self.conn.command_client().is_clustered() {
            // Every primary holds its own part of the keyspace.
            let scan = self.conn.command_client().scan_cluster_buffered(matcher, Some(1000), Some(kind));
            let keys: Vec<Result<fred::types::Key, fred::error::Error>> = scan.collect().await;
            let mut out = Vec::with_capacity(keys.len());
            for key in keys {
                out.extend(key.map_err(|e| RedisError::new("SCAN", e))?.into_string());
            }
            out
        } else {
            self.scan_one_node(matcher, kind_name).await?
        })
    }

    async fn scan_one_node(&self, matcher: &str, kind_name: &'static str) -> Result<Vec<String>, StreamError> {
        let mut cursor = "0".to_owned();
        let mut found = Vec::new();
        loop {
            let args: Vec<Value> = vec![
                cursor.as_str().into(),
                "MATCH".into(),
                matcher.into(),
                "COUNT".into(),
                1000.into(),
                "TYPE".into(),
                kind_name.into(),
            ];
            let reply: Vec<Value> = self
                .conn
                .command_client()
                .custom(CustomCommand::new_static("SCAN", ClusterHash::Random, false), args)
                .await
                .map_err(|e| RedisError::new("SCAN", e))?;
            let mut it = reply.into_iter();
            cursor = it.next().and_then(|v| v.into_string()).unwrap_or_else(|| "0".to_owned());
            if let Some(Value::Array(keys)) = it.next() {
                found.extend(keys.into_iter().filter_map(|k| k.into_string()));
            }
            if cursor == "0" {
                return Ok(found);
            }
        }
    }

    /// Number of pending entries of `group` (all consumers).
    ///
    /// # Errors
    /// [`StreamError`] for a bad name or a failed command.
    pub async fn pending_count(&self, topic: &str, group: &str) -> Result<u64, StreamError> {
        let key = self.key(topic)?;
        let reply: Value = call(&self.conn, "XPENDING", &key, Args::new().arg(group)).await?;
        Ok(reply.into_array().into_iter().next().and_then(|v| v.as_u64()).unwrap_or(0))
    }

    /// Whether `topic`'s stream exists (a topic exists from its first publish or group; it is
    /// gone once deleted, or on a Redis that lost its data).
    ///
    /// # Errors
    /// [`StreamError`] for a bad name or a failed command.
    pub async fn topic_exists(&self, topic: &str) -> Result<bool, StreamError> {
        let key = self.key(topic)?;
        let n: i64 = call(&self.conn, "EXISTS", &key, Args::new()).await?;
        Ok(n == 1)
    }

    /// The ids of the oldest and the newest entry of `topic`, or `None` when it has none.
    ///
    /// # Errors
    /// [`StreamError`] for a bad name or a failed command.
    pub async fn first_and_last(&self, topic: &str) -> Result<Option<(EntryId, EntryId)>, StreamError> {
        let key = self.key(topic)?;
        let end = |cmd: &'static str, from: &'static str, to: &'static str| {
            let key = key.clone();
            async move {
                let args = Args::new().arg(from).arg(to).arg("COUNT").arg(1);
                let reply = call::<Value>(&self.conn, cmd, &key, args).await?;
                Ok::<_, StreamError>(crate::redis::parse_entries(cmd, reply)?.first().map(|e| e.id))
            }
        };
        let (first, last) = (end("XRANGE", "-", "+").await?, end("XREVRANGE", "+", "-").await?);
        Ok(first.zip(last))
    }

    /// Number of entries in `topic`'s stream.
    ///
    /// # Errors
    /// [`StreamError`] for a bad name or a failed command.
    pub async fn len(&self, topic: &str) -> Result<u64, StreamError> {
        let key = self.key(topic)?;
        Ok(call(&self.conn, "XLEN", &key, Args::new()).await?)
    }

    /// Makes `topic` a partitioned topic of `partitions` streams (1 to
    /// [`MAX_PARTITIONS`](tributary_core::partition::MAX_PARTITIONS)): a message with a key goes
    /// to the partition of its key, and each partition is consumed by one member of a group at
    /// a time, so a key's messages are handled in order across every instance of a service
    /// (`docs/partitions.md`). Returns false when the topic already had this count; another
    /// count is refused, since keys would change partitions.
    ///
    /// Producers learn of it at their next look-up of the topic (within
    /// [`ProducerBuilder::retention_refresh`](crate::ProducerBuilder::retention_refresh)),
    /// workers when they start the topic or, running, within
    /// [`pattern_refresh`](crate::WorkerBuilder::pattern_refresh): best create it before
    /// deploying either. Of a topic in use, the groups it has are created on every partition at
    /// its beginning, so nothing published to the partitions before the workers look is skipped.
    ///
    /// ```no_run
    /// # async fn demo(admin: tributary_streams::Admin) -> Result<(), tributary_streams::StreamError> {
    /// admin.create_topic("orders", 16).await?;
    /// assert_eq!(admin.partitions("orders").await?, Some(16));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`StreamError::Partitions`] for a count out of range or unlike the stored one;
    /// [`StreamError`] for a bad name or a failed command.
    pub async fn create_topic(&self, topic: &str, partitions: u32) -> Result<bool, StreamError> {
        crate::partitions::create(&self.conn, &Topic::new(topic)?, partitions).await
    }

    /// The partition count of `topic` (see [`Admin::create_topic`]); `None` for a topic of one
    /// stream.
    ///
    /// # Errors
    /// [`StreamError`] for a bad name, a failed command, or a stored count that is not one.
    pub async fn partitions(&self, topic: &str) -> Result<Option<u32>, StreamError> {
        crate::partitions::stored(&self.conn, &Topic::new(topic)?).await
    }

    /// Deletes `topic`: its stream (with every group), its dead-letter stream, its stored
    /// retention and, for a partitioned topic, its partitions (each stream and dead-letter
    /// stream) and its count. Returns the number of keys removed. Idempotency keys and
    /// partition leases expire on their own.
    ///
    /// # Errors
    /// [`StreamError`] for a bad name or a failed command.
    pub async fn delete_topic(&self, topic: &str) -> Result<u64, StreamError> {
        let topic = Topic::new(topic)?;
        let ns = self.conn.namespace();
        let partitions = match crate::partitions::stored(&self.conn, &topic).await {
            Ok(n) => n.unwrap_or(0),
            // A count that is not one (written by hand): every partition there may be.
            Err(StreamError::Partitions { .. }) => tributary_core::partition::MAX_PARTITIONS,
            // Not knowing them, deleting the rest would leave the partitions behind unlisted.
            Err(e) => return Err(e),
        };
        let (stream, dlq, retention) =
            (ns.topic_stream(&topic), ns.dead_letter_stream(&topic), ns.retention_key(&topic));
        // The keys share the topic's hash tag, so one DEL works on Redis Cluster too.
        let mut deleted =
            call(&self.conn, "DEL", &stream, Args::new().arg(dlq).arg(retention).arg(ns.partitions_key(&topic)))
                .await?;
        // Each partition has a hash tag of its own: a command each.
        for p in 0..partitions {
            let part = topic.partition(p);
            let n: u64 =
                call(&self.conn, "DEL", &ns.topic_stream(&part), Args::new().arg(ns.dead_letter_stream(&part))).await?;
            deleted += n;
        }
        // The registry is in another slot: a second command.
        let _: i64 = call(&self.conn, "ZREM", &ns.topic_registry(), Args::new().arg(topic.as_str())).await?;
        Ok(deleted)
    }

    /// Stores `retention` as `topic`'s retention, replacing any before it: every producer
    /// publishing to `topic` applies it from its next look-up (producers cache a topic's
    /// retention for [`ProducerBuilder::retention_refresh`](crate::ProducerBuilder::retention_refresh),
    /// 5 s by default). The topic need not exist yet; set it before the first publish for the
    /// stream never to grow past it.
    ///
    /// Plain retention trims as part of every publish and can remove entries a group has not
    /// read; [`Retention::safe`] never does (see [`Retention`]).
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo(admin: tributary_streams::Admin) -> Result<(), tributary_streams::StreamError> {
    /// use std::time::Duration;
    /// use tributary_streams::Retention;
    ///
    /// admin.set_retention("audit", Retention::max_age(Duration::from_secs(7 * 86_400)).safe()).await?;
    /// assert!(admin.retention("audit").await?.is_some_and(|r| r.is_safe()));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`StreamError`] for a bad name or a failed command.
    pub async fn set_retention(&self, topic: &str, retention: Retention) -> Result<(), StreamError> {
        crate::retention::store(&self.conn, &Topic::new(topic)?, &retention).await
    }

    /// The retention stored for `topic`, or `None` when it has none (its stream is then not
    /// trimmed by publishes).
    ///
    /// # Errors
    /// [`StreamError`] for a bad name or a failed command; [`StreamError::InvalidRetention`]
    /// when what is stored cannot be read (written by a newer Tributary, or changed by hand).
    pub async fn retention(&self, topic: &str) -> Result<Option<Retention>, StreamError> {
        crate::retention::stored(&self.conn, &Topic::new(topic)?).await
    }

    /// Removes `topic`'s stored retention: producers stop trimming it once they look it up
    /// again (within [`ProducerBuilder::retention_refresh`](crate::ProducerBuilder::retention_refresh)).
    /// Returns false if it had none.
    ///
    /// # Errors
    /// [`StreamError`] for a bad name or a failed command.
    pub async fn clear_retention(&self, topic: &str) -> Result<bool, StreamError> {
        crate::retention::clear(&self.conn, &Topic::new(topic)?).await
    }

    /// Trims `topic` now with `retention` (exactly, unless [`Retention::approximate`]), whatever
    /// its stored retention. Returns what was removed, what remains and, for safe retention,
    /// which group kept entries.
    ///
    /// # Errors
    /// [`StreamError`] for a bad name or a failed command.
    pub async fn trim(&self, topic: &str, retention: Retention) -> Result<crate::Trimmed, StreamError> {
        retention.trim(&self.conn, &Topic::parse_stored(topic)?).await
    }
}
