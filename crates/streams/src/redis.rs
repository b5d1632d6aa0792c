//! Thin helpers over fred: commands routed by their key's hash slot, replies parsed from
//! plain `Value`s (fred's typed stream helpers fail on nil replies and PEL tombstones).

use bytes::Bytes;
use fred::interfaces::ClientLike;
use fred::types::{FromValue, Value};
use tributary_core::{Connection, EntryId, RedisError};

/// One argument list under construction.
#[derive(Debug, Default)]
pub(crate) struct Args(pub(crate) Vec<Value>);

impl Args {
    pub(crate) fn new() -> Self {
        Self(Vec::with_capacity(16))
    }

    pub(crate) fn arg(mut self, v: impl Into<Value>) -> Self {
        self.0.push(v.into());
        self
    }

    pub(crate) fn push(&mut self, v: impl Into<Value>) {
        self.0.push(v.into());
    }
}

pub(crate) use tributary_core::connection::keyed_command as command;

/// `ids` as arguments of a typed stream command (`XACK`): all formatted into one buffer that
/// the arguments share, where `to_string` per id cost two allocations each.
pub(crate) fn id_args(ids: impl ExactSizeIterator<Item = EntryId>) -> Vec<fred::types::streams::XID> {
    let mut text = Vec::with_capacity(ids.len() * 28);
    let mut ends = Vec::with_capacity(ids.len());
    let (mut ms, mut seq) = (itoa::Buffer::new(), itoa::Buffer::new());
    for id in ids {
        text.extend_from_slice(ms.format(id.ms()).as_bytes());
        text.push(b'-');
        text.extend_from_slice(seq.format(id.seq()).as_bytes());
        ends.push(text.len());
    }
    let text = Bytes::from(text);
    let mut start = 0;
    ends.into_iter()
        .map(|end| {
            let id = text.slice(start..end);
            start = end;
            // Digits and a dash: always UTF-8.
            fred::types::streams::XID::Manual(fred::bytes_utils::Str::from_inner(id).unwrap_or_default())
        })
        .collect()
}

/// Sends `name key args...` and converts the reply.
pub(crate) async fn call<R: FromValue>(
    conn: &Connection,
    name: &'static str,
    key: &str,
    args: Args,
) -> Result<R, RedisError> {
    let mut all = Vec::with_capacity(args.0.len() + 1);
    all.push(Value::from(key));
    all.extend(args.0);
    let client = conn.client_for(key).await;
    client.custom(command(name, key, false), all).await.map_err(|e| noted(conn, RedisError::new(name, e)))
}

/// Sends `name sub key args...` (`XGROUP CREATE key ...`, `XINFO GROUPS key`), routed by `key`.
pub(crate) async fn call_sub<R: FromValue>(
    conn: &Connection,
    name: &'static str,
    sub: &'static str,
    key: &str,
    args: Args,
) -> Result<R, RedisError> {
    let mut all = Vec::with_capacity(args.0.len() + 2);
    all.push(Value::from(sub));
    all.push(Value::from(key));
    all.extend(args.0);
    let client = conn.client_for(key).await;
    client.custom(command(name, key, false), all).await.map_err(|e| noted(conn, RedisError::new(name, e)))
}

/// `err`, after telling `conn` about it (a cluster redirect makes it re-read its slot map).
pub(crate) fn noted(conn: &Connection, err: RedisError) -> RedisError {
    conn.note_error(&err);
    err
}

/// A stream entry as read: id and fields, or `None` fields for a PEL tombstone (the entry was
/// deleted or trimmed after delivery).
#[derive(Debug, Clone)]
pub(crate) struct RawEntry {
    pub(crate) id: EntryId,
    pub(crate) fields: Option<Vec<(Bytes, Bytes)>>,
}

fn bytes_of(v: Value) -> Option<Bytes> {
    match v {
        Value::String(s) => Some(s.inner().clone()),
        Value::Bytes(b) => Some(b),
        Value::Integer(i) => Some(Bytes::from(i.to_string())),
        _ => None,
    }
}

pub(crate) fn entry_id_of(command: &'static str, v: Value) -> Result<EntryId, RedisError> {
    bytes_of(v)
        .and_then(|b| EntryId::from_ascii(&b))
        .ok_or_else(|| RedisError::unexpected_reply(command, "expected a stream entry id"))
}

/// Parses `[[id, [f, v, ...] | nil], ...]` (XRANGE, XCLAIM, one stream of XREADGROUP).
pub(crate) fn parse_entries(command: &'static str, v: Value) -> Result<Vec<RawEntry>, RedisError> {
    let bad = || RedisError::unexpected_reply(command, "expected an array of stream entries");
    let items = match v {
        Value::Null => return Ok(Vec::new()),
        Value::Array(items) => items,
        _ => return Err(bad()),
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        // Redis 7 XCLAIM answers nil in place of an entry deleted meanwhile.
        let Value::Array(mut pair) = item else {
            if item.is_null() {
                continue;
            }
            return Err(bad());
        };
        if pair.len() != 2 {
            return Err(bad());
        }
        let fields_v = pair.pop().unwrap_or(Value::Null);
        let id = entry_id_of(command, pair.pop().unwrap_or(Value::Null))?;
        let fields = match fields_v {
            Value::Null => None,
            Value::Array(flat) => {
                if flat.len() % 2 != 0 {
                    return Err(bad());
                }
                let mut fields = Vec::with_capacity(flat.len() / 2);
                let mut it = flat.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    fields.push((bytes_of(k).ok_or_else(bad)?, bytes_of(v).ok_or_else(bad)?));
                }
                Some(fields)
            }
            _ => return Err(bad()),
        };
        out.push(RawEntry { id, fields });
    }
    Ok(out)
}

/// Parses an `XREAD`/`XREADGROUP` reply for a single stream (nil when BLOCK timed out).
pub(crate) fn parse_read_reply(command: &'static str, v: Value) -> Result<Vec<RawEntry>, RedisError> {
    Ok(parse_read_streams(command, v)?.into_iter().flat_map(|(_, entries)| entries).collect())
}

/// Parses an `XREAD`/`XREADGROUP` reply for several streams: each stream that had entries,
/// by key (nil, no stream at all, when BLOCK timed out).
pub(crate) fn parse_read_streams(command: &'static str, v: Value) -> Result<Vec<(Bytes, Vec<RawEntry>)>, RedisError> {
    let bad = || RedisError::unexpected_reply(command, "expected [stream, entries]");
    match v {
        Value::Null => Ok(Vec::new()),
        Value::Array(streams) => {
            let mut out = Vec::with_capacity(streams.len());
            for s in streams {
                let Value::Array(mut kv) = s else { return Err(bad()) };
                let entries = kv.pop().unwrap_or(Value::Null);
                let key = kv.pop().and_then(bytes_of).ok_or_else(bad)?;
                out.push((key, parse_entries(command, entries)?));
            }
            Ok(out)
        }
        // RESP3 servers answer a map of stream -> entries.
        Value::Map(map) => {
            let mut out = Vec::new();
            for (key, entries) in map.inner() {
                out.push((Bytes::copy_from_slice(key.as_bytes()), parse_entries(command, entries)?));
            }
            Ok(out)
        }
        _ => Err(RedisError::unexpected_reply(command, "expected an array of streams")),
    }
}

/// One row of `XPENDING key group [IDLE ms] start end count [consumer]`.
#[derive(Debug, Clone)]
pub(crate) struct PendingEntry {
    pub(crate) id: EntryId,
    pub(crate) consumer: String,
    pub(crate) deliveries: u64,
}

pub(crate) fn parse_pending(v: Value) -> Result<Vec<PendingEntry>, RedisError> {
    let bad = || RedisError::unexpected_reply("XPENDING", "expected [id, consumer, idle, deliveries] rows");
    let Value::Array(rows) = v else {
        return if v.is_null() { Ok(Vec::new()) } else { Err(bad()) };
    };
    rows.into_iter()
        .map(|row| {
            let Value::Array(cols) = row else { return Err(bad()) };
            let mut cols = cols.into_iter();
            let id = entry_id_of("XPENDING", cols.next().ok_or_else(bad)?)?;
            let consumer = cols.next().and_then(|v| v.into_string()).ok_or_else(bad)?;
            let _idle = cols.next();
            let deliveries = cols.next().and_then(|v| v.as_u64()).ok_or_else(bad)?;
            Ok(PendingEntry { id, consumer, deliveries })
        })
        .collect()
}

/// Flattens `[k1, v1, k2, v2, ...]` (or a RESP3 map) into pairs of text keys and values.
pub(crate) fn pairs(v: Value) -> Vec<(String, Value)> {
    match v {
        Value::Array(flat) => {
            let mut it = flat.into_iter();
            let mut out = Vec::new();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                out.push((k.into_string().unwrap_or_default(), v));
            }
            out
        }
        Value::Map(map) => {
            map.inner().into_iter().map(|(k, v)| (k.as_str().map(|s| s.to_string()).unwrap_or_default(), v)).collect()
        }
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_args_write_each_id_as_redis_does() {
        let ids = [EntryId::new(1_700_000_000_123, 0), EntryId::new(5, 42), EntryId::MAX];
        let args: Vec<String> = id_args(ids.into_iter())
            .into_iter()
            .map(|x| match x {
                fred::types::streams::XID::Manual(s) => s.to_string(),
                other => panic!("not a manual id: {other:?}"),
            })
            .collect();
        assert_eq!(args, ["1700000000123-0", "5-42", &format!("{}-{}", u64::MAX, u64::MAX)]);
        assert!(id_args(std::iter::empty()).is_empty());
    }
}
