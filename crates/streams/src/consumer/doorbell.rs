//! Keyspace notifications as a doorbell for the shared reader (`reader.rs`), where the server
//! sends them.
//!
//! A read over N streams costs Redis a look at each of them (about 2 µs a stream under load
//! on Redis 7.0: 20 ms for 10,000 topics), whether they have entries or not. When the server
//! publishes keyspace events for stream commands (`notify-keyspace-events` with `K` and `t`,
//! or `A`), Redis names each stream that got an entry on `__keyspace@<db>__:<key>`: the
//! worker subscribes to its namespace's topic streams, and its reads name only the streams
//! that rang. Pub/sub may lose a notification (a reconnection, an output buffer limit), so a
//! read of every stream still runs every 30 s, and at once after a reconnection (then every
//! topic is read at its next join); a subscription that cannot be made again, or a connection
//! that stops answering, ends the doorbell and the reader blocks on every topic again.
//! Nothing changes for producers, and without such events the reader works as before.
//!
//! Where the server sends no such events, a worker over many topics listens to producers'
//! rings instead (`ring.rs`, [`Source::Rings`]): the same doorbell on `<ns>:rings`, which only
//! Tributary's own writers ring. So the reader then also reads every stream once a second
//! while messages flow, and blocks on every stream when they do not (see `reader.rs`).

use std::sync::Arc;
use std::time::Duration;

use fred::interfaces::{ClientLike, EventInterface, PubsubInterface};
use fred::types::Value;
use tokio::sync::mpsc;
use tokio_util::task::AbortOnDropHandle;
use tributary_core::{Connection, Dedicated};

use crate::redis::command;

/// How often the subscription's connection is asked whether it is alive.
const PING_EVERY: Duration = Duration::from_secs(10);

/// Rings kept for the listener task before it misses some (and a full read is needed): a
/// second of 2,000 messages a second, over a hundred milliseconds at 20,000. The listener only
/// moves them on, so it falls behind only when its thread is starved. Not more: fred allocates
/// this many slots up front in each of its nine event channels (16,384 took 10 MiB).
const RINGS_BACKLOG: usize = 2_048;

/// How often every stream is read while the doorbell works: a net for a notification lost
/// otherwise than by a reconnection (which triggers a full read at once). A full read of
/// 10,000 streams takes Redis about 20 ms, which every command waits behind.
pub(crate) const FULL_READ_EVERY: Duration = Duration::from_secs(30);

/// Where rings come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// Keyspace notifications: every write to a stream rings, whoever writes.
    Keyspace,
    /// Producers' rings on `<ns>:rings` (`ring.rs`): only Tributary's writers ring.
    Rings,
}

/// What the doorbell says.
#[derive(Debug)]
pub(crate) enum Ring {
    /// This stream got an entry.
    Key(Arc<str>),
    /// Notifications may have been missed (the subscription was re-established): read all.
    Missed,
}

/// A running doorbell: its rings, and its listener task (stopped when dropped).
pub(crate) struct Doorbell {
    pub(crate) source: Source,
    pub(crate) rings: mpsc::UnboundedReceiver<Ring>,
    _listener: AbortOnDropHandle<()>,
}

/// True when the server publishes keyspace events for stream commands; `None` when it cannot
/// be asked (`CONFIG GET` not permitted).
pub(crate) async fn enabled(conn: &Connection, key: &str) -> Option<bool> {
    let args = vec![Value::from("GET"), Value::from("notify-keyspace-events")];
    let client = conn.client_for(key).await;
    let reply: Value = client.custom(command("CONFIG", key, false), args).await.ok()?;
    let flags = match reply {
        Value::Array(mut pair) if pair.len() == 2 => pair.pop()?.into_string()?,
        Value::Map(map) => map.inner().into_values().next()?.into_string()?,
        _ => return None,
    };
    Some(flags.contains('K') && (flags.contains('t') || flags.contains('A')))
}

/// Why the doorbell did not start: the reader works without it.
#[derive(Debug)]
pub(crate) enum NotStarted {
    /// The subscription was refused, or could not be confirmed: not asked again.
    Refused,
    /// Its connection could not be opened now: asked again later.
    Unavailable,
}

/// The subscription's events, by source.
enum Events {
    Keyspace(tokio::sync::broadcast::Receiver<fred::types::KeyspaceEvent>),
    Rings(tokio::sync::broadcast::Receiver<fred::types::Message>),
}

impl Events {
    /// The next stream that rang (`None`: an event naming none).
    async fn next(&mut self) -> Result<Option<Arc<str>>, tokio::sync::broadcast::error::RecvError> {
        match self {
            Self::Keyspace(rx) => rx.recv().await.map(|e| e.key.as_str().map(Arc::from)),
            Self::Rings(rx) => rx.recv().await.map(|m| m.value.as_str().map(|k| Arc::from(&*k))),
        }
    }
}

/// Subscribes to what rings for the namespace's topic streams: their keyspace events, or
/// producers' rings. `Err` when the subscription cannot be made or confirmed (then the reader
/// works without, and does not ask again); a connection that cannot be opened now is not a
/// refusal (asked again later).
pub(crate) async fn start(conn: &Connection, source: Source) -> Result<Doorbell, NotStarted> {
    let channel = match source {
        // Topic streams are `<ns>:{<topic>}`; dead-letter and other keys of a topic end otherwise.
        Source::Keyspace => format!("__keyspace@*__:{}:{{*}}", glob_escape(conn.namespace().as_str())),
        Source::Rings => conn.namespace().rings_channel(),
    };
    let client = match conn.dedicated_subscriber(RINGS_BACKLOG).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, ?source, "cannot open the doorbell's connection; reading every topic instead");
            return Err(NotStarted::Unavailable);
        }
    };
    // fred parses keyspace channels into events of their own.
    let mut events = match source {
        Source::Keyspace => Events::Keyspace(client.keyspace_event_rx()),
        Source::Rings => Events::Rings(client.message_rx()),
    };
    let mut reconnects = client.reconnect_rx();
    let subscribed = subscribe(&client, source, &channel).await;
    if subscribed == Subscribed::NoAnswer {
        tracing::warn!(channel = %channel, ?source, "the doorbell's subscription got no answer; reading every topic, and asking again later");
        return Err(NotStarted::Unavailable);
    }
    if subscribed == Subscribed::Refused {
        let needs = match source {
            Source::Keyspace => {
                "keyspace notifications are on, but the subscription was refused or could not be confirmed \
                (the user needs +psubscribe and the channel pattern; on a RESP3 connection it is not used)"
            }
            Source::Rings => {
                "the subscription to producers' rings was refused or could not be confirmed \
                (the user needs +subscribe and the channel; on a RESP3 connection it is not used)"
            }
        };
        match source {
            Source::Keyspace => tracing::warn!(channel = %channel, "{needs}; reading every topic instead"),
            // Said at `warn` once messages flow (`reader.rs`, `say_polling`).
            Source::Rings => tracing::info!(channel = %channel, "{needs}; reading every topic instead"),
        }
        return Err(NotStarted::Refused);
    }
    let (tx, rings) = mpsc::unbounded_channel();
    let listener = tokio::spawn(async move {
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                // A reconnection first: a ping on the new, not yet subscribed connection would
                // end the doorbell for nothing.
                biased;
                r = reconnects.recv() => {
                    if matches!(r, Err(tokio::sync::broadcast::error::RecvError::Closed)) {
                        return;
                    }
                    // A new connection has no subscription: subscribe again, then read all
                    // (after: what comes between is rung).
                    if subscribe(&client, source, &channel).await != Subscribed::Yes {
                        // Closing the rings makes the reader block on every topic again.
                        tracing::warn!(?source, "cannot subscribe to the doorbell again; reading every topic instead");
                        return;
                    }
                    let _ = tx.send(Ring::Missed);
                    ping.reset();
                }
                _ = ping.tick() => {
                    // A connection that died silently never reconnects, and would ring no more:
                    // without an answer as a subscriber, the doorbell closes and the reader
                    // reads every topic.
                    if subscription(&client).await != Subscribed::Yes {
                        tracing::warn!(?source, "the doorbell's subscription does not answer; reading every topic instead");
                        return;
                    }
                }
                e = events.next() => match e {
                    Ok(key) => {
                        let Some(key) = key else { continue };
                        if tx.send(Ring::Key(key)).is_err() {
                            return;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        let _ = tx.send(Ring::Missed);
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    });
    Ok(Doorbell { source, rings, _listener: AbortOnDropHandle::new(listener) })
}

/// Whether a connection is subscribed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Subscribed {
    Yes,
    /// Redis answered, but not as a subscriber: `NOPERM`, or a RESP3 connection.
    Refused,
    /// No answer (a timeout, a connection that failed): not a refusal.
    NoAnswer,
}

/// `PSUBSCRIBE pattern` (keyspace events) or `SUBSCRIBE channel` (rings), then checks that it
/// took: fred reports success even when Redis refused it (`NOPERM`).
async fn subscribe(client: &Dedicated, source: Source, channel: &str) -> Subscribed {
    let subscribed = match source {
        Source::Keyspace => tokio::time::timeout(PING_EVERY, client.psubscribe(channel.to_owned())).await,
        Source::Rings => tokio::time::timeout(PING_EVERY, client.subscribe(channel.to_owned())).await,
    };
    match subscribed {
        Ok(Ok(())) => subscription(client).await,
        Ok(Err(e)) if e.details().starts_with("NOPERM") => Subscribed::Refused,
        _ => Subscribed::NoAnswer,
    }
}

/// `Yes` when the connection answers `PING` as a subscriber does (`["pong", ""]`, where a
/// connection that is not subscribed answers `PONG`). On RESP3, where both answer `PONG`, this
/// says `Refused`: the reader then reads every topic, as without a doorbell.
async fn subscription(client: &Dedicated) -> Subscribed {
    let ping = client.custom::<Value, _>(
        fred::types::CustomCommand::new_static("PING", fred::types::ClusterHash::Random, false),
        Vec::<Value>::new(),
    );
    match tokio::time::timeout(PING_EVERY, ping).await {
        Ok(Ok(Value::Array(_))) => Subscribed::Yes,
        Ok(Ok(_)) => Subscribed::Refused,
        _ => Subscribed::NoAnswer,
    }
}

/// `s` with the characters a Redis glob pattern treats specially escaped.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_characters_of_a_namespace_are_escaped() {
        assert_eq!(glob_escape("a*b[c]?"), "a\\*b\\[c\\]\\?");
    }
}
