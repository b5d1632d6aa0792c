//! The wire format: how an [`Envelope`] maps to the fields of one Redis stream entry.
//!
//! Version 1, specified in `docs/wire-format.md`. Every entry is a flat list of
//! field/value pairs, all values byte strings:
//!
//! | field | required | value |
//! |---|---|---|
//! | `v` | yes | format version, `1` |
//! | `id` | yes | message id, UUID text (36 chars) |
//! | `type` | yes | type name, 1..=256 bytes of UTF-8 |
//! | `ct` | yes | payload content type, 1..=128 bytes |
//! | `ts` | yes | publish time, decimal milliseconds since the Unix epoch |
//! | `key` | no | partition / ordering key |
//! | `corr` | no | correlation id (RPC) |
//! | `reply` | no | reply-to stream key (RPC) |
//! | `dl` | no | deadline, decimal milliseconds since the Unix epoch (RPC) |
//! | `exp` | no | expiry, decimal milliseconds since the Unix epoch |
//! | `tp` | no | W3C traceparent (ignored when invalid) |
//! | `h:<name>` | no, repeatable | header `<name>` |
//! | `p` | yes | payload bytes, encoded as `ct` says |
//!
//! Decoding never panics and never allocates more than the entry already occupies; each
//! kind of bad input has its own [`DecodeError`] variant.

use bytes::Bytes;

use crate::envelope::{from_millis, to_millis, Envelope, EnvelopeRef, Headers};
use crate::id::MessageId;

/// The wire format version this crate writes and reads.
pub const WIRE_VERSION: u32 = 1;

/// [`WIRE_VERSION`] as the `v` field carries it.
pub const WIRE_VERSION_TEXT: &str = "1";
const _: () = assert!(
    WIRE_VERSION < 10 && WIRE_VERSION_TEXT.len() == 1 && WIRE_VERSION_TEXT.as_bytes()[0] == b'0' + WIRE_VERSION as u8,
    "WIRE_VERSION_TEXT must be WIRE_VERSION written out"
);

/// Field names of the format, in the order they are written.
pub mod field {
    /// Format version.
    pub const VERSION: &str = "v";
    /// Message id.
    pub const ID: &str = "id";
    /// Type name.
    pub const TYPE: &str = "type";
    /// Content type.
    pub const CONTENT_TYPE: &str = "ct";
    /// Publish time (ms).
    pub const TIMESTAMP: &str = "ts";
    /// Partition key.
    pub const KEY: &str = "key";
    /// Correlation id.
    pub const CORRELATION_ID: &str = "corr";
    /// Reply-to stream.
    pub const REPLY_TO: &str = "reply";
    /// Deadline (ms).
    pub const DEADLINE: &str = "dl";
    /// Expiry (ms).
    pub const EXPIRES: &str = "exp";
    /// Trace context.
    pub const TRACEPARENT: &str = "tp";
    /// Prefix of header fields.
    pub const HEADER_PREFIX: &str = "h:";
    /// Payload.
    pub const PAYLOAD: &str = "p";
}

/// Size limits enforced when decoding (and encoding, so a producer cannot write what its
/// consumers would refuse).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest payload accepted. Defaults to 4 MiB.
    pub max_payload: usize,
    /// Most headers per message. Defaults to 64.
    pub max_headers: usize,
    /// Longest header name plus value. Defaults to 8 KiB.
    pub max_header_bytes: usize,
    /// Longest value of any other metadata field (type, key, ids, ...). Defaults to 1 KiB.
    pub max_meta_bytes: usize,
    /// Most fields in one entry, unknown ones included. Defaults to 128.
    pub max_fields: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_payload: 4 * 1024 * 1024,
            max_headers: 64,
            max_header_bytes: 8 * 1024,
            max_meta_bytes: 1024,
            max_fields: 128,
        }
    }
}

/// Why a stream entry is not a valid envelope. Decode errors are permanent: retrying the same
/// bytes gives the same answer, so consumers dead-letter such entries at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The entry has no `v` field: it was not written in this format.
    #[error("entry has no format version field `v`")]
    MissingVersion,
    /// The entry was written in a format version this reader does not know.
    #[error("unsupported wire format version `{found}` (this reader knows {WIRE_VERSION})")]
    UnsupportedVersion {
        /// The version found (truncated to 32 characters).
        found: String,
    },
    /// A required field is absent.
    #[error("required field `{field}` is missing")]
    MissingField {
        /// Field name.
        field: &'static str,
    },
    /// A field occurs more than once.
    #[error("field `{field}` occurs more than once")]
    DuplicateField {
        /// Field name (truncated to 64 characters).
        field: String,
    },
    /// A field's value is not valid for that field.
    #[error("field `{field}` is invalid: {reason}")]
    InvalidField {
        /// Field name (truncated to 64 characters).
        field: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Something is larger than the configured [`Limits`].
    #[error("{what} is too large: {size} > {limit}")]
    TooLarge {
        /// What exceeded its limit.
        what: &'static str,
        /// Its size (bytes or count).
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The entry is not a list of field/value pairs (e.g. a deleted entry, or a reply of
    /// another shape).
    #[error("malformed stream entry: {reason}")]
    MalformedEntry {
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// Encodes `env` into stream entry fields, in the documented order.
///
/// # Errors
/// [`DecodeError::TooLarge`] or [`DecodeError::InvalidField`] when the envelope breaks
/// `limits`: a producer refuses to write what consumers would refuse to read.
pub fn encode(env: &Envelope, limits: &Limits) -> Result<Vec<(Bytes, Bytes)>, DecodeError> {
    let mut out = Vec::with_capacity(8 + env.headers.len());
    encode_fields(&env.view(), limits, |name, value| out.push((name, value)))?;
    Ok(out)
}

/// Encodes `env` field by field, in the documented order: `emit(name, value)` for each.
/// (What [`encode`] does without collecting; producers push straight into a command.)
///
/// # Errors
/// As [`encode`]; nothing is emitted then.
pub fn encode_fields(
    env: &EnvelopeRef<'_>,
    limits: &Limits,
    mut emit: impl FnMut(Bytes, Bytes),
) -> Result<(), DecodeError> {
    check_envelope(env, limits)?;
    // This runs once per published message: field names and common values are static, and
    // every other value is written into one buffer that the fields share (one allocation
    // instead of one per field, and no formatting machinery).
    let (mut ts, mut dl, mut exp) = (itoa::Buffer::new(), itoa::Buffer::new(), itoa::Buffer::new());
    let ts = ts.format(to_millis(env.published_at)).as_bytes();
    let dl = env.deadline.map(|t| dl.format(to_millis(t)).as_bytes());
    let exp = env.expires_at.map(|t| exp.format(to_millis(t)).as_bytes());
    let tp = env.traceparent.map(|t| t.to_ascii());
    let content_type = match env.content_type {
        crate::MsgPack::CONTENT_TYPE => Some(crate::MsgPack::CONTENT_TYPE),
        crate::Json::CONTENT_TYPE => Some(crate::Json::CONTENT_TYPE),
        _ => None,
    };
    let mut id = [0u8; 36];
    let id = env.id.as_uuid().hyphenated().encode_lower(&mut id).as_bytes();
    let opt = |v: Option<&[u8]>| v.map_or(0, <[u8]>::len);
    let len = id.len()
        + env.type_name.len()
        + content_type.map_or(env.content_type.len(), |_| 0)
        + ts.len()
        + opt(env.key.map(str::as_bytes))
        + opt(env.correlation_id.map(str::as_bytes))
        + opt(env.reply_to.map(str::as_bytes))
        + opt(dl)
        + opt(exp)
        + tp.map_or(0, |t| t.len())
        + env.headers.iter().map(|(k, v)| field::HEADER_PREFIX.len() + k.len() + v.len()).sum::<usize>();
    let mut buf = Vec::with_capacity(len);
    let mut put = |v: &[u8]| {
        buf.extend_from_slice(v);
        v.len()
    };
    // The lengths, in the order the values were put; fields are then cut from the buffer.
    let mut lens = [0usize; 11];
    lens[0] = put(id);
    lens[1] = put(env.type_name.as_bytes());
    lens[2] = if content_type.is_none() { put(env.content_type.as_bytes()) } else { 0 };
    lens[3] = put(ts);
    lens[4] = env.key.map_or(0, |k| put(k.as_bytes()));
    lens[5] = env.correlation_id.map_or(0, |c| put(c.as_bytes()));
    lens[6] = env.reply_to.map_or(0, |r| put(r.as_bytes()));
    lens[7] = dl.map_or(0, &mut put);
    lens[8] = exp.map_or(0, &mut put);
    lens[9] = tp.as_ref().map_or(0, |t| put(t));
    for (name, value) in env.headers.iter() {
        put(field::HEADER_PREFIX.as_bytes());
        put(name.as_bytes());
        put(value.as_bytes());
    }
    let buf = Bytes::from(buf);
    let mut at = 0;
    let mut cut = |n: usize| {
        at += n;
        buf.slice(at - n..at)
    };
    let s = |k: &'static str| Bytes::from_static(k.as_bytes());
    emit(s(field::VERSION), s(WIRE_VERSION_TEXT));
    emit(s(field::ID), cut(lens[0]));
    emit(s(field::TYPE), cut(lens[1]));
    let ct = cut(lens[2]);
    emit(s(field::CONTENT_TYPE), content_type.map_or(ct, s));
    emit(s(field::TIMESTAMP), cut(lens[3]));
    let optional = [
        (field::KEY, env.key.is_some()),
        (field::CORRELATION_ID, env.correlation_id.is_some()),
        (field::REPLY_TO, env.reply_to.is_some()),
        (field::DEADLINE, dl.is_some()),
        (field::EXPIRES, exp.is_some()),
        (field::TRACEPARENT, tp.is_some()),
    ];
    for (i, (name, present)) in optional.into_iter().enumerate() {
        let value = cut(lens[4 + i]);
        if present {
            emit(s(name), value);
        }
    }
    for (name, value) in env.headers.iter() {
        let name = cut(field::HEADER_PREFIX.len() + name.len());
        emit(name, cut(value.len()));
    }
    emit(s(field::PAYLOAD), env.payload.clone());
    Ok(())
}

/// `env`'s fields as the field list of fred's typed `XADD`: what producers and RPC servers
/// write (a typed command, because fred flushes its socket after every custom command).
///
/// # Errors
/// As [`encode`].
pub fn xadd_fields(
    env: &EnvelopeRef<'_>,
    limits: &Limits,
) -> Result<Vec<(fred::types::Key, fred::types::Value)>, DecodeError> {
    let mut fields = Vec::with_capacity(8 + env.headers.len());
    encode_fields(env, limits, |name, value| fields.push((name.into(), fred::types::Value::Bytes(value))))?;
    Ok(fields)
}

fn check_envelope(env: &EnvelopeRef<'_>, limits: &Limits) -> Result<(), DecodeError> {
    let too_large = |what, size, limit| {
        if size > limit {
            Err(DecodeError::TooLarge { what, size, limit })
        } else {
            Ok(())
        }
    };
    too_large("payload", env.payload.len(), limits.max_payload)?;
    too_large("header count", env.headers.len(), limits.max_headers)?;
    too_large("field count", 12 + env.headers.len(), limits.max_fields)?;
    check_type_name(env.type_name, limits)?;
    check_content_type(env.content_type, limits)?;
    for (field, value) in
        [(field::KEY, env.key), (field::CORRELATION_ID, env.correlation_id), (field::REPLY_TO, env.reply_to)]
    {
        if let Some(v) = value {
            too_large(field, v.len(), limits.max_meta_bytes)?;
        }
    }
    for (name, value) in env.headers.iter() {
        check_header_name(name)?;
        too_large("header", name.len() + value.len(), limits.max_header_bytes)?;
    }
    Ok(())
}

/// Decodes stream entry fields into an [`Envelope`].
///
/// Unknown fields are ignored (they count towards [`Limits::max_fields`]), so later minor
/// revisions of version 1 can add optional fields without breaking older readers.
///
/// # Errors
/// A [`DecodeError`] naming the first problem found.
pub fn decode(fields: &[(Bytes, Bytes)], limits: &Limits) -> Result<Envelope, DecodeError> {
    if fields.len() > limits.max_fields {
        return Err(DecodeError::TooLarge { what: "field count", size: fields.len(), limit: limits.max_fields });
    }
    let mut f = Fields::default();
    let mut headers = Headers::new();
    for (name, value) in fields {
        let slot = match name.as_ref() {
            b"v" => &mut f.version,
            b"id" => &mut f.id,
            b"type" => &mut f.type_name,
            b"ct" => &mut f.content_type,
            b"ts" => &mut f.timestamp,
            b"key" => &mut f.key,
            b"corr" => &mut f.correlation_id,
            b"reply" => &mut f.reply_to,
            b"dl" => &mut f.deadline,
            b"exp" => &mut f.expires,
            b"tp" => &mut f.traceparent,
            b"p" => &mut f.payload,
            n if n.starts_with(field::HEADER_PREFIX.as_bytes()) => {
                let raw_name = &n[field::HEADER_PREFIX.len()..];
                // Every name in `headers` is valid UTF-8; an invalid one fails below.
                if std::str::from_utf8(raw_name).is_ok_and(|name| headers.get(name).is_some()) {
                    return Err(DecodeError::DuplicateField { field: lossy(n, 64) });
                }
                if headers.len() >= limits.max_headers {
                    return Err(DecodeError::TooLarge {
                        what: "header count",
                        size: headers.len() + 1,
                        limit: limits.max_headers,
                    });
                }
                if raw_name.len() + value.len() > limits.max_header_bytes {
                    return Err(DecodeError::TooLarge {
                        what: "header",
                        size: raw_name.len() + value.len(),
                        limit: limits.max_header_bytes,
                    });
                }
                let header_name = utf8(n, raw_name)?;
                check_header_name(header_name)?;
                headers.insert(header_name, utf8(n, value)?);
                continue;
            }
            _ => continue,
        };
        if slot.replace(value).is_some() {
            return Err(DecodeError::DuplicateField { field: lossy(name, 64) });
        }
    }

    let version = f.version.ok_or(DecodeError::MissingVersion)?;
    if version.as_ref() != WIRE_VERSION_TEXT.as_bytes() {
        return Err(DecodeError::UnsupportedVersion { found: lossy(version, 32) });
    }
    let meta = |v: &Bytes, field: &'static str| -> Result<String, DecodeError> {
        if v.len() > limits.max_meta_bytes {
            return Err(DecodeError::TooLarge { what: field, size: v.len(), limit: limits.max_meta_bytes });
        }
        utf8(field.as_bytes(), v).map(str::to_owned)
    };

    let id_bytes = required(f.id, field::ID)?;
    if id_bytes.len() > limits.max_meta_bytes {
        return Err(DecodeError::TooLarge { what: field::ID, size: id_bytes.len(), limit: limits.max_meta_bytes });
    }
    let id: MessageId = utf8(field::ID.as_bytes(), id_bytes)?.parse().map_err(|_| invalid(field::ID, "not a UUID"))?;
    let type_name = meta(required(f.type_name, field::TYPE)?, field::TYPE)?;
    check_type_name(&type_name, limits)?;
    let content_type = meta(required(f.content_type, field::CONTENT_TYPE)?, field::CONTENT_TYPE)?;
    check_content_type(&content_type, limits)?;
    let published_at = from_millis(millis(required(f.timestamp, field::TIMESTAMP)?, field::TIMESTAMP)?);
    let payload = required(f.payload, field::PAYLOAD)?;
    if payload.len() > limits.max_payload {
        return Err(DecodeError::TooLarge { what: "payload", size: payload.len(), limit: limits.max_payload });
    }

    let optional = |v: Option<&Bytes>, field| v.map(|v| meta(v, field)).transpose();
    Ok(Envelope {
        id,
        type_name,
        content_type,
        published_at,
        headers,
        payload: payload.clone(),
        key: optional(f.key, field::KEY)?,
        correlation_id: optional(f.correlation_id, field::CORRELATION_ID)?,
        reply_to: optional(f.reply_to, field::REPLY_TO)?,
        deadline: f.deadline.map(|v| millis(v, field::DEADLINE).map(from_millis)).transpose()?,
        expires_at: f.expires.map(|v| millis(v, field::EXPIRES).map(from_millis)).transpose()?,
        // Trace context is advisory: a bad value is dropped, as W3C asks, rather than
        // dead-lettering an otherwise good message.
        traceparent: f.traceparent.and_then(|v| std::str::from_utf8(v).ok()).and_then(|s| s.parse().ok()),
    })
}

fn required<'a>(v: Option<&'a Bytes>, field: &'static str) -> Result<&'a Bytes, DecodeError> {
    v.ok_or(DecodeError::MissingField { field })
}

#[derive(Default)]
struct Fields<'a> {
    version: Option<&'a Bytes>,
    id: Option<&'a Bytes>,
    type_name: Option<&'a Bytes>,
    content_type: Option<&'a Bytes>,
    timestamp: Option<&'a Bytes>,
    key: Option<&'a Bytes>,
    correlation_id: Option<&'a Bytes>,
    reply_to: Option<&'a Bytes>,
    deadline: Option<&'a Bytes>,
    expires: Option<&'a Bytes>,
    traceparent: Option<&'a Bytes>,
    payload: Option<&'a Bytes>,
}

fn invalid(field: &str, reason: &'static str) -> DecodeError {
    DecodeError::InvalidField { field: field.to_owned(), reason }
}

fn lossy(b: &[u8], max_chars: usize) -> String {
    String::from_utf8_lossy(&b[..b.len().min(max_chars * 4)]).chars().take(max_chars).collect()
}

fn utf8<'b>(field: &[u8], value: &'b [u8]) -> Result<&'b str, DecodeError> {
    std::str::from_utf8(value)
        .map_err(|_| DecodeError::InvalidField { field: lossy(field, 64), reason: "not valid UTF-8" })
}

fn millis(v: &[u8], field: &'static str) -> Result<u64, DecodeError> {
    if v.is_empty() || v.len() > 20 || !v.iter().all(u8::is_ascii_digit) {
        return Err(invalid(field, "not a decimal number of milliseconds"));
    }
    // At most 20 ASCII digits: the parse can only fail on overflow.
    std::str::from_utf8(v).ok().and_then(|s| s.parse().ok()).ok_or_else(|| invalid(field, "out of range"))
}

fn check_type_name(name: &str, limits: &Limits) -> Result<(), DecodeError> {
    if name.is_empty() {
        return Err(invalid(field::TYPE, "empty"));
    }
    if name.len() > limits.max_meta_bytes.min(256) {
        return Err(DecodeError::TooLarge {
            what: "type name",
            size: name.len(),
            limit: limits.max_meta_bytes.min(256),
        });
    }
    Ok(())
}

fn check_content_type(ct: &str, limits: &Limits) -> Result<(), DecodeError> {
    if ct.is_empty() {
        return Err(invalid(field::CONTENT_TYPE, "empty"));
    }
    if ct.len() > limits.max_meta_bytes.min(128) {
        return Err(DecodeError::TooLarge {
            what: "content type",
            size: ct.len(),
            limit: limits.max_meta_bytes.min(128),
        });
    }
    Ok(())
}

fn check_header_name(name: &str) -> Result<(), DecodeError> {
    if name.is_empty() || name.len() > 256 || name.chars().any(char::is_control) {
        return Err(invalid(field::HEADER_PREFIX, "header name must be 1..=256 bytes without control characters"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Json, MsgPack};
    use crate::trace::TraceParent;
    use proptest::prelude::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn sample() -> Envelope {
        Envelope::encode(&MsgPack, &serde_json::json!({"order": 7, "items": ["a", "b"]}))
            .unwrap()
            .with_type_name("OrderPlaced")
            .with_key("customer-1")
            .with_header("source", "web")
            .with_header("x-empty", "")
            .with_correlation_id("c-1")
            .with_reply_to("tributary:rpc:reply:{abc}")
            .with_deadline(UNIX_EPOCH + Duration::from_millis(1_700_000_000_123))
            .with_expires_at(UNIX_EPOCH + Duration::from_millis(1_700_000_600_000))
            .with_traceparent(TraceParent::new_root())
    }

    #[test]
    fn round_trip_keeps_every_part() {
        let env = sample();
        let fields = encode(&env, &Limits::default()).unwrap();
        assert_eq!(fields[0].0.as_ref(), b"v");
        assert_eq!(fields.last().unwrap().0.as_ref(), b"p");
        assert_eq!(decode(&fields, &Limits::default()).unwrap(), env);
    }

    #[test]
    fn minimal_entry_decodes() {
        let fields: Vec<(Bytes, Bytes)> = [
            ("v", "1"),
            ("id", "01932c07-a5d8-7c3e-9d4f-0123456789ab"),
            ("type", "Ping"),
            ("ct", "application/json"),
            ("ts", "1700000000000"),
            ("p", "{}"),
        ]
        .into_iter()
        .map(|(k, v)| (Bytes::from(k), Bytes::from(v)))
        .collect();
        let env = decode(&fields, &Limits::default()).unwrap();
        assert_eq!(env.type_name, "Ping");
        assert!(env.key.is_none() && env.headers.is_empty());
        let v: serde_json::Value = env.decode().unwrap();
        assert_eq!(v, serde_json::json!({}));
    }

    fn with(fields: &[(Bytes, Bytes)], name: &str, value: Option<&[u8]>) -> Vec<(Bytes, Bytes)> {
        let mut out: Vec<_> = fields.iter().filter(|(k, _)| k.as_ref() != name.as_bytes()).cloned().collect();
        if let Some(v) = value {
            out.insert(0, (Bytes::from(name.to_owned()), Bytes::copy_from_slice(v)));
        }
        out
    }

    #[test]
    fn each_kind_of_bad_input_has_its_own_error() {
        let good = encode(&sample(), &Limits::default()).unwrap();
        let l = Limits::default();
        assert_eq!(decode(&with(&good, "v", None), &l), Err(DecodeError::MissingVersion));
        assert!(
            matches!(decode(&with(&good, "v", Some(b"2")), &l), Err(DecodeError::UnsupportedVersion { found }) if found == "2")
        );
        assert_eq!(decode(&with(&good, "p", None), &l), Err(DecodeError::MissingField { field: "p" }));
        assert_eq!(decode(&with(&good, "id", None), &l), Err(DecodeError::MissingField { field: "id" }));
        assert!(matches!(decode(&with(&good, "id", Some(b"nope")), &l), Err(DecodeError::InvalidField { .. })));
        assert!(matches!(decode(&with(&good, "ts", Some(b"12a")), &l), Err(DecodeError::InvalidField { .. })));
        assert!(matches!(
            decode(&with(&good, "type", Some(b"\xff\xfe")), &l),
            Err(DecodeError::InvalidField { reason: "not valid UTF-8", .. })
        ));
        let mut dup = good.clone();
        dup.push((Bytes::from("key"), Bytes::from("again")));
        assert!(matches!(decode(&dup, &l), Err(DecodeError::DuplicateField { field }) if field == "key"));
        let small = Limits { max_payload: 4, ..Limits::default() };
        assert!(matches!(decode(&good, &small), Err(DecodeError::TooLarge { what: "payload", .. })));
        // A bad traceparent is dropped, not fatal.
        let env = decode(&with(&good, "tp", Some(b"garbage")), &l).unwrap();
        assert!(env.traceparent.is_none());
    }

    #[test]
    fn encode_refuses_what_decode_would_refuse() {
        let env = Envelope::new("T", Json::CONTENT_TYPE, vec![0u8; 100]);
        let small = Limits { max_payload: 10, ..Limits::default() };
        assert!(matches!(encode(&env, &small), Err(DecodeError::TooLarge { .. })));
        let env = Envelope::new("", Json::CONTENT_TYPE, "{}");
        assert!(encode(&env, &Limits::default()).is_err());
    }

    #[test]
    fn unknown_fields_are_ignored_but_counted() {
        let mut fields = encode(&sample(), &Limits::default()).unwrap();
        fields.push((Bytes::from("future"), Bytes::from("x")));
        assert!(decode(&fields, &Limits::default()).is_ok());
        let tight = Limits { max_fields: fields.len() - 1, ..Limits::default() };
        assert!(matches!(decode(&fields, &tight), Err(DecodeError::TooLarge { what: "field count", .. })));
    }

    proptest! {
        #[test]
        fn arbitrary_fields_never_panic(fields in proptest::collection::vec(
            (proptest::collection::vec(any::<u8>(), 0..12), proptest::collection::vec(any::<u8>(), 0..64)), 0..20)) {
            let fields: Vec<(Bytes, Bytes)> = fields.into_iter().map(|(k, v)| (Bytes::from(k), Bytes::from(v))).collect();
            let _ = decode(&fields, &Limits::default());
        }

        #[test]
        fn known_field_names_with_arbitrary_values_never_panic(values in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..48), 12)) {
            let names = ["v", "id", "type", "ct", "ts", "key", "corr", "reply", "dl", "exp", "tp", "p"];
            let fields: Vec<(Bytes, Bytes)> = names.iter().zip(values).map(|(k, v)| (Bytes::from(*k), Bytes::from(v))).collect();
            let _ = decode(&fields, &Limits::default());
        }

        #[test]
        fn round_trip_arbitrary_envelopes(
            type_name in "[A-Za-z][A-Za-z0-9_.]{0,40}",
            key in proptest::option::of("[ -~]{0,40}"),
            headers in proptest::collection::btree_map("[a-z][a-z0-9-]{0,20}", "\\PC{0,40}", 0..8),
            payload in proptest::collection::vec(any::<u8>(), 0..512),
            ts in 0u64..4_000_000_000_000,
        ) {
            let mut env = Envelope::new(type_name, MsgPack::CONTENT_TYPE, payload);
            env.published_at = UNIX_EPOCH + Duration::from_millis(ts);
            env.key = key;
            for (k, v) in headers { env.headers.insert(k, v); }
            let fields = encode(&env, &Limits::default()).unwrap();
            prop_assert_eq!(decode(&fields, &Limits::default()).unwrap(), env);
        }
    }
}
