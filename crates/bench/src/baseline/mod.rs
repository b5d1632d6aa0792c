//! The hand-written fred code Tributary is compared with: what a careful engineer would write
//! without the framework.
//!
//! - [`RawFields`]: the entry a user would write, their payload alone in one field
//!   ([`RawFields::payload_only`], the primary baseline of the publish scenarios), or fields
//!   shaped like a Tributary envelope ([`RawFields::like_envelope`], a secondary figure that
//!   shows what the rest of Tributary's work costs beside the envelope's bytes); built once and
//!   re-sent as they are.
//! - [`consume`]: `XREADGROUP COUNT n` on a dedicated connection, with the `XACK` of one
//!   batch overlapping the read of the next.
//! - [`rpc`]: request/reply over streams with one reply stream per client and one pipeline
//!   (replies + one `XACK`) per server read.

use bytes::Bytes;
use fred::clients::Client;
use fred::interfaces::StreamsInterface;
use fred::types::Value;
use tributary::{wire, BoxError, MsgPack};

pub mod pubsub_rpc;
pub mod rpc;

/// Entry fields with constant values.
#[derive(Debug, Clone)]
pub struct RawFields {
    fields: Vec<(Bytes, Bytes)>,
}

impl RawFields {
    /// What a user would write without Tributary: `payload` (already encoded) in one field,
    /// `p`. No id, type, time or trace context: what the comparison is about is what those
    /// cost.
    pub fn payload_only(payload: Bytes) -> Self {
        Self { fields: vec![(Bytes::from_static(b"p"), payload)] }
    }

    /// The fields a producer writes for `payload` (already encoded) published outside any
    /// trace, in the current wire format version (version 3: `v p`, the id and time left to
    /// the entry id). Built once; every XADD re-sends the same bytes.
    ///
    /// # Panics
    /// When the payload breaks the default wire-format limits (4 MiB).
    pub fn like_envelope(payload: Bytes) -> Self {
        let env = tributary::envelope::EnvelopeRef::new("", MsgPack::CONTENT_TYPE, &payload);
        let mut fields = Vec::with_capacity(2);
        wire::encode_fields(&env, &wire::Limits::default(), |name, value| fields.push((name, value)))
            .expect("payload within limits");
        Self { fields }
    }

    /// The fields with the payload replaced by `payload`.
    pub fn with_payload(&self, payload: Bytes) -> Vec<(Bytes, Bytes)> {
        let mut fields = self.fields.clone();
        if let Some(last) = fields.last_mut() {
            last.1 = payload;
        }
        fields
    }

    /// The fields, to pass to `XADD`.
    pub fn fields(&self) -> Vec<(Bytes, Bytes)> {
        self.fields.clone()
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// True when there are no fields.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Bytes of names and values together.
    pub fn bytes(&self) -> usize {
        self.fields.iter().map(|(k, v)| k.len() + v.len()).sum()
    }
}

/// `XADD key * fields...` through fred's typed API.
///
/// # Errors
/// When Redis does not store the entry.
pub async fn xadd(client: &Client, key: &str, fields: Vec<(Bytes, Bytes)>) -> Result<Value, BoxError> {
    Ok(client.xadd::<Value, _, _, _, _>(key, false, None, "*", fields).await?)
}

/// One stream entry as read: id and fields.
pub type Entry = (Bytes, Vec<(Bytes, Bytes)>);

/// Parses an `XREAD`/`XREADGROUP` reply for one stream (nil when `BLOCK` timed out), the way a
/// hand-written loop has to: fred's typed stream helpers fail on the nil reply.
pub fn parse_read_reply(reply: Value) -> Vec<Entry> {
    let streams = match reply {
        Value::Array(streams) => streams,
        Value::Map(map) => map.inner().into_values().collect(),
        _ => return Vec::new(),
    };
    let mut out = Vec::new();
    for stream in streams {
        let entries = match stream {
            Value::Array(mut kv) if kv.len() == 2 => kv.pop().unwrap_or(Value::Null),
            // A RESP3 map's values are the entry lists themselves.
            other @ Value::Array(_) => other,
            _ => continue,
        };
        let Value::Array(entries) = entries else { continue };
        for entry in entries {
            let Value::Array(mut pair) = entry else { continue };
            if pair.len() != 2 {
                continue;
            }
            let fields = pair.pop().unwrap_or(Value::Null);
            let Some(id) = pair.pop().and_then(bytes_of) else { continue };
            let Value::Array(flat) = fields else { continue };
            let mut fields = Vec::with_capacity(flat.len() / 2);
            let mut it = flat.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                if let (Some(k), Some(v)) = (bytes_of(k), bytes_of(v)) {
                    fields.push((k, v));
                }
            }
            out.push((id, fields));
        }
    }
    out
}

/// The value of field `name`.
pub fn field<'a>(fields: &'a [(Bytes, Bytes)], name: &str) -> Option<&'a Bytes> {
    fields.iter().find(|(k, _)| k.as_ref() == name.as_bytes()).map(|(_, v)| v)
}

fn bytes_of(v: Value) -> Option<Bytes> {
    match v {
        Value::Bytes(b) => Some(b),
        Value::String(s) => Some(s.into_inner()),
        _ => None,
    }
}

/// Settings of the hand-written consumer loop.
#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    /// Stream key.
    pub key: String,
    /// Consumer group (must exist).
    pub group: String,
    /// Consumer name.
    pub consumer: String,
    /// `COUNT` of each read.
    pub count: u64,
    /// `BLOCK` of each read, in milliseconds.
    pub block_ms: u64,
}

/// The hand-written consumer: `XREADGROUP GROUP g c COUNT n BLOCK b STREAMS key >` on
/// `reader` (a connection of its own: the read blocks), `on_entry` for each entry, then one
/// `XACK` for the batch on `acker`, sent without waiting so it overlaps the next read (at most
/// one ack in flight). Stops when `done()` holds after a batch, once the last ack is confirmed.
///
/// # Errors
/// The first failed read or ack.
pub async fn consume(
    reader: &Client,
    acker: &Client,
    settings: &ConsumerSettings,
    mut on_entry: impl FnMut(&Entry),
    done: impl Fn() -> bool,
) -> Result<u64, BoxError> {
    let mut consumed = 0u64;
    let mut ack_in_flight: Option<tokio::task::JoinHandle<Result<Value, fred::error::Error>>> = None;
    while !done() {
        let reply: Value = reader
            .xreadgroup(
                settings.group.as_str(),
                settings.consumer.as_str(),
                Some(settings.count),
                Some(settings.block_ms),
                false,
                settings.key.as_str(),
                ">",
            )
            .await?;
        let entries = parse_read_reply(reply);
        if entries.is_empty() {
            continue;
        }
        let mut ids = Vec::with_capacity(entries.len());
        for entry in &entries {
            on_entry(entry);
            ids.push(String::from_utf8_lossy(&entry.0).into_owned());
        }
        consumed += entries.len() as u64;
        if let Some(previous) = ack_in_flight.take() {
            previous.await??;
        }
        let (acker, key, group) = (acker.clone(), settings.key.clone(), settings.group.clone());
        ack_in_flight = Some(tokio::spawn(async move { acker.xack::<Value, _, _, _>(key, group, ids).await }));
    }
    if let Some(last) = ack_in_flight {
        last.await??;
    }
    Ok(consumed)
}
