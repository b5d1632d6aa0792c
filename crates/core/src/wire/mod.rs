//! The wire format: how an [`Envelope`] maps to the fields of one Redis stream entry.
//!
//! Specified in `docs/wire-format.md`. Readers accept every version; producers write the
//! connection's [`Version`] (version 3 unless set otherwise).
//!
//! - **Version 1** ([`Version::V1`], `wire/v1.rs`): one stream field per part of the
//!   envelope (`v` `1`, `id`, `type`, `ct`, `ts`, optional `key`, `corr`, `reply`, `dl`,
//!   `exp`, `tp`, `h:<name>`, and `p`). Readable with `redis-cli` as it is.
//! - **Version 2** ([`Version::V2`], `wire/v2.rs`): three fields, `v` `2`, `m` (the same
//!   metadata as one MessagePack map with the same names, headers under `h`) and `p`. Redis
//!   and the client parse, store and send every field of every entry: an RPC request was
//!   eleven fields in version 1, and field count, not bytes, was most of what made a call
//!   dearer than a hand-written one (see `docs/performance-history.md`).
//! - **Version 3** ([`Version::V3`], `wire/v3.rs`): the lean envelope. `v` `3` and `p`, with
//!   `m` (version 2's map, every key optional) only when there is something to carry: the id
//!   and time are derived from the entry id where the writer leaves them out, a type name
//!   only when one was given, the content type only when it is not MessagePack. A typed
//!   publish without key, headers or trace is the payload plus `v` `3`. Decoding an entry
//!   without an id needs its topic and entry id: [`decode_entry`].
//!
//! Decoding never panics and never allocates more than the entry already occupies; each
//! kind of bad input has its own [`DecodeError`] variant.

use bytes::Bytes;

use crate::envelope::{from_millis, Envelope, EnvelopeRef, Headers};
use crate::id::{EntryId, MessageId};
use crate::trace::TraceParent;

mod v1;
mod v2;
mod v3;

/// The type name versions 1 and 2, which require one, write for a message that has none (a
/// version 3 message read back and published again on a connection set to an older version).
pub const UNNAMED: &str = "unnamed";

/// The newest wire format version this crate writes and reads.
pub const WIRE_VERSION: u32 = 3;

/// `v` of version 1 entries.
const VERSION_1: &str = "1";
/// `v` of version 2 entries.
const VERSION_2: &str = "2";
/// `v` of version 3 entries.
const VERSION_3: &str = "3";

/// A wire format version, for writers: readers accept every version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Version {
    /// One stream field per envelope part. Keep writing it while readers of an older
    /// Tributary (which know only version 1) still consume the topics.
    V1,
    /// The metadata packed into one MessagePack field, every part written. Keep writing it
    /// while readers of a Tributary that knows only versions 1 and 2 still consume the topics.
    V2,
    /// The lean envelope (the default): only the metadata a message has, the id and time
    /// taken from the entry id where the writer leaves them out.
    #[default]
    V3,
}

impl Version {
    /// The type name a message of type `T` is written with when none is given: none in
    /// version 3 (readers take an entry without one as unnamed), the type's short name in
    /// versions 1 and 2, which require one.
    pub fn default_type_name<T: ?Sized>(self) -> &'static str {
        match self {
            Version::V3 => "",
            Version::V1 | Version::V2 => crate::envelope::short_type_name::<T>(),
        }
    }

    /// The number this version is written as in `v`.
    pub fn number(self) -> u32 {
        match self {
            Version::V1 => 1,
            Version::V2 => 2,
            Version::V3 => 3,
        }
    }

    /// Encodes `env` in this version into stream entry fields.
    ///
    /// # Errors
    /// As [`encode`].
    pub fn encode(self, env: &Envelope, limits: &Limits) -> Result<Vec<(Bytes, Bytes)>, DecodeError> {
        let mut out = Vec::with_capacity(3);
        self.encode_fields(&env.view(), limits, |name, value| out.push((name, value)))?;
        Ok(out)
    }

    /// Encodes `env` in this version field by field: `emit(name, value)` for each.
    ///
    /// # Errors
    /// As [`encode`]; nothing is emitted then.
    #[doc(hidden)] // Takes the internal `EnvelopeRef` (#25).
    pub fn encode_fields(
        self,
        env: &EnvelopeRef<'_>,
        limits: &Limits,
        emit: impl FnMut(Bytes, Bytes),
    ) -> Result<(), DecodeError> {
        check_envelope(env, limits)?;
        match self {
            Version::V1 => v1::encode_fields(env, emit),
            Version::V2 => v2::encode_fields(env, emit),
            Version::V3 => v3::encode_fields(env, emit),
        }
        Ok(())
    }

    /// `env`'s fields in this version as the field list of fred's typed `XADD`: what
    /// producers write (a typed command, because fred flushes its socket after every custom
    /// command).
    ///
    /// # Errors
    /// As [`encode`].
    #[doc(hidden)] // For the producer: fred is not part of the supported API (#25).
    pub fn xadd_fields(
        self,
        env: &EnvelopeRef<'_>,
        limits: &Limits,
    ) -> Result<Vec<(fred::types::Key, fred::types::Value)>, DecodeError> {
        let mut fields = Vec::with_capacity(3);
        self.encode_fields(env, limits, |name, value| fields.push((name.into(), fred::types::Value::Bytes(value))))?;
        Ok(fields)
    }
}

/// Field names of the format. Version 1 entries have a field for each; version 2 entries
/// have `v`, [`META`](field::META) and `p`, with the others as keys of the metadata map
/// (headers under [`HEADERS`](field::HEADERS)).
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
    /// The entry id a message was first written at (version 3, written by dead-letter
    /// replay): what its id and time are derived from when it carries none.
    pub const ORIGIN: &str = "o";
    /// Prefix of header fields (version 1).
    pub const HEADER_PREFIX: &str = "h:";
    /// The metadata map (version 2).
    pub const META: &str = "m";
    /// The headers map inside the metadata (version 2).
    pub const HEADERS: &str = "h";
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
    #[error("unsupported wire format version `{found}` (this reader knows 1 to {WIRE_VERSION})")]
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

/// Encodes `env` into stream entry fields, in the current [`Version`].
///
/// # Errors
/// [`DecodeError::TooLarge`] or [`DecodeError::InvalidField`] when the envelope breaks
/// `limits`: a producer refuses to write what consumers would refuse to read.
pub fn encode(env: &Envelope, limits: &Limits) -> Result<Vec<(Bytes, Bytes)>, DecodeError> {
    Version::default().encode(env, limits)
}

/// Encodes `env` field by field in the current [`Version`]: `emit(name, value)` for each.
/// (What [`encode`] does without collecting; producers push straight into a command.)
///
/// # Errors
/// As [`encode`]; nothing is emitted then.
#[doc(hidden)] // Takes the internal `EnvelopeRef` (#25).
pub fn encode_fields(
    env: &EnvelopeRef<'_>,
    limits: &Limits,
    emit: impl FnMut(Bytes, Bytes),
) -> Result<(), DecodeError> {
    Version::default().encode_fields(env, limits, emit)
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
    // Version 3 writes no type name where none was given; the others write `UNNAMED`.
    if !env.type_name.is_empty() {
        check_type_name(env.type_name, limits)?;
    }
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

/// Decodes stream entry fields, of any version, into an [`Envelope`], without knowing where
/// they were read: a version 3 entry that carries no id (or time) fails with
/// [`DecodeError::MissingField`]. Use [`decode_entry`] for entries read from a topic.
///
/// Unknown fields (and unknown metadata keys) are ignored: they count towards
/// [`Limits::max_fields`], and later revisions of a version can add optional ones without
/// breaking older readers.
///
/// # Errors
/// A [`DecodeError`] naming the first problem found.
pub fn decode(fields: &[(Bytes, Bytes)], limits: &Limits) -> Result<Envelope, DecodeError> {
    decode_at(fields, limits, None)
}

/// Decodes the fields of the entry `entry_id` of the topic stream `stream` (its key,
/// `<namespace>:{<topic>}`), of any version: what a version 3 entry leaves out is derived from
/// them (the id with [`MessageId::of_entry`], the publish time from the entry id's
/// milliseconds; from the entry id in its `o` field instead when a dead-letter replay wrote
/// one).
///
/// # Errors
/// As [`decode`].
pub fn decode_entry(
    fields: &[(Bytes, Bytes)],
    stream: &str,
    entry_id: EntryId,
    limits: &Limits,
) -> Result<Envelope, DecodeError> {
    decode_at(fields, limits, Some((stream, entry_id)))
}

fn decode_at(fields: &[(Bytes, Bytes)], limits: &Limits, at: Option<(&str, EntryId)>) -> Result<Envelope, DecodeError> {
    if fields.len() > limits.max_fields {
        return Err(DecodeError::TooLarge { what: "field count", size: fields.len(), limit: limits.max_fields });
    }
    // Writers put `v` first: this finds it at once.
    let version = fields.iter().find(|(name, _)| name.as_ref() == field::VERSION.as_bytes()).map(|(_, v)| v);
    match version.map(Bytes::as_ref) {
        None => Err(DecodeError::MissingVersion),
        Some(v) if v == VERSION_1.as_bytes() => v1::decode(fields, limits),
        Some(v) if v == VERSION_2.as_bytes() => v2::decode(fields, limits),
        Some(v) if v == VERSION_3.as_bytes() => v3::decode(fields, limits, at),
        Some(v) => Err(DecodeError::UnsupportedVersion { found: lossy(v, 32) }),
    }
}

/// An entry's envelope parts as a reader found them, before they are checked: what both
/// versions' readers collect, and turn into an envelope the same way.
#[derive(Default)]
struct Parts<'a> {
    id: Option<&'a [u8]>,
    type_name: Option<&'a [u8]>,
    content_type: Option<&'a [u8]>,
    published_at: Option<u64>,
    key: Option<&'a [u8]>,
    correlation_id: Option<&'a [u8]>,
    reply_to: Option<&'a [u8]>,
    deadline: Option<u64>,
    expires: Option<u64>,
    traceparent: Option<&'a [u8]>,
    headers: Headers,
    payload: Option<&'a Bytes>,
    /// Version 3: the type name and content type may be absent (none given; MessagePack).
    lean: bool,
    /// Version 3: the id derived from the entry, for an entry that carries none.
    derived_id: Option<MessageId>,
}

impl Parts<'_> {
    /// Adds header `name` (as written in the entry: `shown`) with `value`, checking the
    /// limits before anything is allocated.
    fn add_header(&mut self, shown: &[u8], name: &[u8], value: &[u8], limits: &Limits) -> Result<(), DecodeError> {
        // Every name in `headers` is valid UTF-8; an invalid one fails below.
        if std::str::from_utf8(name).is_ok_and(|name| self.headers.get(name).is_some()) {
            return Err(DecodeError::DuplicateField { field: lossy(shown, 64) });
        }
        if self.headers.len() >= limits.max_headers {
            return Err(DecodeError::TooLarge {
                what: "header count",
                size: self.headers.len() + 1,
                limit: limits.max_headers,
            });
        }
        if name.len() + value.len() > limits.max_header_bytes {
            return Err(DecodeError::TooLarge {
                what: "header",
                size: name.len() + value.len(),
                limit: limits.max_header_bytes,
            });
        }
        let header_name = utf8(shown, name)?;
        check_header_name(header_name)?;
        self.headers.insert(header_name, utf8(shown, value)?);
        Ok(())
    }

    /// Checks the parts against the format's rules and `limits`.
    fn into_envelope(self, limits: &Limits) -> Result<Envelope, DecodeError> {
        let meta = |v: &[u8], field: &'static str| -> Result<String, DecodeError> {
            if v.len() > limits.max_meta_bytes {
                return Err(DecodeError::TooLarge { what: field, size: v.len(), limit: limits.max_meta_bytes });
            }
            utf8(field.as_bytes(), v).map(str::to_owned)
        };
        let id = match (self.id, self.derived_id) {
            (Some(id), _) => {
                if id.len() > limits.max_meta_bytes {
                    return Err(DecodeError::TooLarge {
                        what: field::ID,
                        size: id.len(),
                        limit: limits.max_meta_bytes,
                    });
                }
                // One text form only: de-duplication compares ids as text, in any language.
                let text = utf8(field::ID.as_bytes(), id)?;
                let id: MessageId = text.parse().map_err(|_| invalid(field::ID, "not a UUID"))?;
                if text.len() != 36 || text != id.to_string() {
                    return Err(invalid(field::ID, "not a UUID in its 36-character lowercase hyphenated form"));
                }
                id
            }
            (None, Some(derived)) => derived,
            (None, None) => return Err(DecodeError::MissingField { field: field::ID }),
        };
        let type_name = match self.type_name {
            None if self.lean => String::new(),
            type_name => {
                let type_name = meta(required(type_name, field::TYPE)?, field::TYPE)?;
                check_type_name(&type_name, limits)?;
                type_name
            }
        };
        let content_type = match self.content_type {
            None if self.lean => crate::MsgPack::CONTENT_TYPE.to_owned(),
            content_type => meta(required(content_type, field::CONTENT_TYPE)?, field::CONTENT_TYPE)?,
        };
        check_content_type(&content_type, limits)?;
        let published_at = from_millis(required(self.published_at, field::TIMESTAMP)?);
        let payload = required(self.payload, field::PAYLOAD)?;
        if payload.len() > limits.max_payload {
            return Err(DecodeError::TooLarge { what: "payload", size: payload.len(), limit: limits.max_payload });
        }
        let optional = |v: Option<&[u8]>, field| v.map(|v| meta(v, field)).transpose();
        Ok(Envelope {
            id,
            type_name,
            content_type,
            published_at,
            headers: self.headers,
            payload: payload.clone(),
            key: optional(self.key, field::KEY)?,
            correlation_id: optional(self.correlation_id, field::CORRELATION_ID)?,
            reply_to: optional(self.reply_to, field::REPLY_TO)?,
            deadline: self.deadline.map(from_millis),
            expires_at: self.expires.map(from_millis),
            // Trace context is advisory: a bad value is dropped, as W3C asks, rather than
            // dead-lettering an otherwise good message.
            traceparent: self.traceparent.and_then(TraceParent::from_ascii),
        })
    }
}

fn required<T>(v: Option<T>, field: &'static str) -> Result<T, DecodeError> {
    v.ok_or(DecodeError::MissingField { field })
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

fn check_type_name(name: &str, limits: &Limits) -> Result<(), DecodeError> {
    check_name(name, field::TYPE, "type name", limits.max_meta_bytes.min(256))
}

fn check_content_type(ct: &str, limits: &Limits) -> Result<(), DecodeError> {
    check_name(ct, field::CONTENT_TYPE, "content type", limits.max_meta_bytes.min(128))
}

/// `value` of `field` is not empty and at most `limit` bytes (`what` names it in the error).
fn check_name(value: &str, field: &str, what: &'static str, limit: usize) -> Result<(), DecodeError> {
    if value.is_empty() {
        return Err(invalid(field, "empty"));
    }
    if value.len() > limit {
        return Err(DecodeError::TooLarge { what, size: value.len(), limit });
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

    const VERSIONS: [Version; 3] = [Version::V1, Version::V2, Version::V3];

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

    fn names(fields: &[(Bytes, Bytes)]) -> Vec<&[u8]> {
        fields.iter().map(|(k, _)| k.as_ref()).collect()
    }

    #[test]
    fn round_trip_keeps_every_part_in_both_versions() {
        let env = sample();
        for version in VERSIONS {
            let fields = version.encode(&env, &Limits::default()).unwrap();
            assert_eq!(fields[0], (Bytes::from("v"), Bytes::from(version.number().to_string())));
            assert_eq!(fields.last().unwrap().0.as_ref(), b"p");
            assert_eq!(decode(&fields, &Limits::default()).unwrap(), env, "{version:?}");
        }
        let minimal = Envelope::new("T", Json::CONTENT_TYPE, "{}");
        assert_eq!(decode(&encode(&minimal, &Limits::default()).unwrap(), &Limits::default()).unwrap(), minimal);
    }

    #[test]
    fn version_2_is_three_fields_whatever_the_envelope_holds() {
        let fields = Version::V2.encode(&sample(), &Limits::default()).unwrap();
        assert_eq!(names(&fields), [&b"v"[..], b"m", b"p"]);
        assert_eq!(fields[0].1.as_ref(), b"2");
        assert_eq!(names(&Version::V1.encode(&sample(), &Limits::default()).unwrap()).len(), 14);
    }

    #[test]
    fn a_message_id_has_one_text_form() {
        let entry = |id: &str| -> Vec<(Bytes, Bytes)> {
            [("v", "1"), ("id", id), ("type", "T"), ("ct", "application/json"), ("ts", "1"), ("p", "{}")]
                .into_iter()
                .map(|(k, v)| (Bytes::from(k.to_owned()), Bytes::from(v.to_owned())))
                .collect()
        };
        assert!(decode(&entry("01932c07-a5d8-7c3e-9d4f-0123456789ab"), &Limits::default()).is_ok());
        for other in [
            "01932c07a5d87c3e9d4f0123456789ab",
            "01932C07-A5D8-7C3E-9D4F-0123456789AB",
            "{01932c07-a5d8-7c3e-9d4f-0123456789ab}",
        ] {
            let err = decode(&entry(other), &Limits::default()).unwrap_err();
            assert!(err.to_string().contains("hyphenated") || err.to_string().contains("UUID"), "{other}: {err}");
        }
    }

    #[test]
    fn minimal_version_1_entry_decodes() {
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

    /// A version 2 entry whose `m` another MessagePack encoder (rmp-serde, as Python's
    /// `msgpack.packb` would) made of `meta`.
    fn v2_entry(meta: &serde_json::Value) -> Vec<(Bytes, Bytes)> {
        vec![
            (Bytes::from("v"), Bytes::from("2")),
            (Bytes::from("m"), Bytes::from(rmp_serde::to_vec(meta).unwrap())),
            (Bytes::from("p"), Bytes::from("{}")),
        ]
    }

    fn v2_meta() -> serde_json::Value {
        serde_json::json!({
            "id": "01932c07-a5d8-7c3e-9d4f-0123456789ab",
            "type": "Ping",
            "ct": "application/json",
            "ts": 1_700_000_000_000u64,
        })
    }

    fn v2_with(key: &str, value: serde_json::Value) -> Vec<(Bytes, Bytes)> {
        let mut meta = v2_meta();
        if value.is_null() && key != "nil" {
            meta.as_object_mut().unwrap().remove(key);
        } else {
            meta[key] = value;
        }
        v2_entry(&meta)
    }

    #[test]
    fn version_2_entry_from_another_encoder_decodes() {
        let mut meta = v2_meta();
        meta["h"] = serde_json::json!({"lang": "en", "gone": null}); // a nil header value: absent
        meta["dl"] = serde_json::json!(1_700_000_001_000u64);
        meta["key"] = serde_json::Value::Null; // nil: absent
        meta["future"] = serde_json::json!({"nested": [1, -2, 3.5, true, "x", {"deep": null}]});
        let env = decode(&v2_entry(&meta), &Limits::default()).unwrap();
        assert_eq!(env.type_name, "Ping");
        assert_eq!(env.id.to_string(), "01932c07-a5d8-7c3e-9d4f-0123456789ab");
        assert_eq!(env.published_at, UNIX_EPOCH + Duration::from_millis(1_700_000_000_000));
        assert_eq!(env.deadline, Some(UNIX_EPOCH + Duration::from_millis(1_700_000_001_000)));
        assert_eq!(env.headers.get("lang"), Some("en"));
        assert_eq!(env.headers.len(), 1, "the nil header counts as absent");
        assert!(env.key.is_none());
    }

    #[test]
    fn each_kind_of_bad_input_has_its_own_error() {
        let l = Limits::default();
        for version in VERSIONS {
            let good = version.encode(&sample(), &l).unwrap();
            let set = |name: &str, value: Option<&[u8]>| {
                let mut out: Vec<_> = good.iter().filter(|(k, _)| k.as_ref() != name.as_bytes()).cloned().collect();
                if let Some(v) = value {
                    out.insert(0, (Bytes::from(name.to_owned()), Bytes::copy_from_slice(v)));
                }
                out
            };
            assert_eq!(decode(&set("v", None), &l), Err(DecodeError::MissingVersion));
            assert!(
                matches!(decode(&set("v", Some(b"4")), &l), Err(DecodeError::UnsupportedVersion { found }) if found == "4")
            );
            assert_eq!(decode(&set("p", None), &l), Err(DecodeError::MissingField { field: "p" }));
            let mut dup = good.clone();
            dup.push(good[good.len() - 2].clone());
            assert!(matches!(decode(&dup, &l), Err(DecodeError::DuplicateField { .. })), "{version:?}");
            let small = Limits { max_payload: 4, ..Limits::default() };
            assert!(matches!(decode(&good, &small), Err(DecodeError::TooLarge { what: "payload", .. })));
            let few = Limits { max_headers: 1, ..Limits::default() };
            assert!(matches!(decode(&good, &few), Err(DecodeError::TooLarge { what: "header count", .. })));
        }

        // Version 1: one field per part.
        let good = Version::V1.encode(&sample(), &l).unwrap();
        let with = |name: &str, value: Option<&[u8]>| {
            let mut out: Vec<_> = good.iter().filter(|(k, _)| k.as_ref() != name.as_bytes()).cloned().collect();
            if let Some(v) = value {
                out.insert(1, (Bytes::from(name.to_owned()), Bytes::copy_from_slice(v)));
            }
            out
        };
        assert_eq!(decode(&with("id", None), &l), Err(DecodeError::MissingField { field: "id" }));
        assert!(matches!(decode(&with("id", Some(b"nope")), &l), Err(DecodeError::InvalidField { .. })));
        assert!(matches!(decode(&with("ts", Some(b"12a")), &l), Err(DecodeError::InvalidField { .. })));
        assert!(matches!(
            decode(&with("type", Some(b"\xff\xfe")), &l),
            Err(DecodeError::InvalidField { reason: "not valid UTF-8", .. })
        ));
        let mut dup = good.clone();
        dup.push((Bytes::from("key"), Bytes::from("again")));
        assert!(matches!(decode(&dup, &l), Err(DecodeError::DuplicateField { field }) if field == "key"));
        // A bad traceparent is dropped, not fatal.
        let env = decode(&with("tp", Some(b"garbage")), &l).unwrap();
        assert!(env.traceparent.is_none());

        // Version 2: the same rules inside `m`.
        use serde_json::json;
        let invalid = |fields: Vec<(Bytes, Bytes)>, field: &str| {
            let got = decode(&fields, &l);
            assert!(matches!(&got, Err(DecodeError::InvalidField { field: f, .. }) if f == field), "{got:?}");
        };
        assert_eq!(decode(&v2_with("id", json!(null)), &l), Err(DecodeError::MissingField { field: "id" }));
        assert_eq!(decode(&v2_with("ts", json!(null)), &l), Err(DecodeError::MissingField { field: "ts" }));
        invalid(v2_with("id", json!("nope")), "id");
        invalid(v2_with("ts", json!("1700000000000")), "ts");
        invalid(v2_with("ts", json!(-5)), "ts");
        invalid(v2_with("type", json!(7)), "type");
        invalid(v2_with("h", json!(["a"])), "h");
        invalid(v2_with("h", json!({"a": 1})), "h");
        assert!(matches!(
            decode(&v2_with("h", json!({"a\u{7}": "x"})), &l),
            Err(DecodeError::InvalidField { field, .. }) if field == "h:"
        ));
        let no_meta: Vec<_> = v2_entry(&v2_meta()).into_iter().filter(|(k, _)| k.as_ref() != b"m").collect();
        assert_eq!(decode(&no_meta, &l), Err(DecodeError::MissingField { field: "m" }));
        let mut raw = v2_entry(&v2_meta());
        for bad in [&b"\x93\x01\x02\x03"[..], b"", b"\xc1", b"\x81\x01\x02"] {
            raw[1].1 = Bytes::copy_from_slice(bad);
            invalid(raw.clone(), "m");
        }
        let m = rmp_serde::to_vec(&v2_meta()).unwrap();
        raw[1].1 = Bytes::copy_from_slice(&m[..m.len() - 3]);
        invalid(raw.clone(), "m");
        // A key written twice (the map claims one entry more and repeats `type`).
        let mut twice = m.clone();
        twice[0] += 1;
        twice.extend_from_slice(b"\xa4type\xa1X");
        raw[1].1 = Bytes::from(twice);
        assert!(matches!(decode(&raw, &l), Err(DecodeError::DuplicateField { field }) if field == "type"));
        // A map claiming more entries than the bytes hold ends at the bytes, without
        // allocating for the claim.
        raw[1].1 = Bytes::from_static(b"\xdf\xff\xff\xff\xff");
        assert!(matches!(decode(&raw, &l), Err(DecodeError::TooLarge { .. })));
        let mut skipped = m[..].to_vec();
        skipped[0] += 1;
        skipped.extend_from_slice(b"\xa1x\xdd\xff\xff\xff\xff");
        raw[1].1 = Bytes::from(skipped);
        invalid(raw.clone(), "m");
    }

    #[test]
    fn encode_refuses_what_decode_would_refuse() {
        for version in VERSIONS {
            let env = Envelope::new("T", Json::CONTENT_TYPE, vec![0u8; 100]);
            let small = Limits { max_payload: 10, ..Limits::default() };
            assert!(matches!(version.encode(&env, &small), Err(DecodeError::TooLarge { .. })));
            let env = Envelope::new("", Json::CONTENT_TYPE, "{}");
            // Version 3 writes no type name where none was given; the others write `UNNAMED`.
            let read = decode(&version.encode(&env, &Limits::default()).unwrap(), &Limits::default()).unwrap();
            assert_eq!(read.type_name, if version == Version::V3 { "" } else { UNNAMED }, "{version:?}");
            let env = Envelope::new("T", "", "{}");
            assert!(version.encode(&env, &Limits::default()).is_err());
        }
    }

    /// What a typed publish writes in version 3: the payload, and metadata only for what it has.
    fn lean() -> EnvelopeRef<'static> {
        static PAYLOAD: Bytes = Bytes::from_static(b"\x81\xa1n\x07");
        EnvelopeRef::new("", MsgPack::CONTENT_TYPE, &PAYLOAD)
    }

    fn fields_of(version: Version, env: &EnvelopeRef<'_>) -> Vec<(Bytes, Bytes)> {
        let mut out = Vec::new();
        version.encode_fields(env, &Limits::default(), |k, v| out.push((k, v))).unwrap();
        out
    }

    #[test]
    fn version_3_writes_the_payload_and_only_the_metadata_there_is() {
        let env = lean();
        let fields = fields_of(Version::V3, &env);
        assert_eq!(fields, [(Bytes::from("v"), Bytes::from("3")), (Bytes::from("p"), env.payload.clone())]);
        // Read where it was written: the id and time come from the topic and the entry id.
        let at = EntryId::new(1_732_540_000_000, 5);
        let read = decode_entry(&fields, "orders", at, &Limits::default()).unwrap();
        assert_eq!(read.id, MessageId::of_entry("orders", at));
        assert_eq!(read.published_at, from_millis(1_732_540_000_000));
        assert_eq!((read.type_name.as_str(), read.content_type.as_str()), ("", MsgPack::CONTENT_TYPE));
        assert_eq!(read.payload, env.payload.clone());
        assert_eq!(read.traceparent, None);
        // Without knowing where it was read, there is no id.
        assert_eq!(decode(&fields, &Limits::default()), Err(DecodeError::MissingField { field: "id" }));
        // A key, a JSON payload and a type name given: `m` carries those and nothing else.
        let mut keyed = lean();
        keyed.key = Some("customer-1");
        keyed.type_name = "Order";
        keyed.content_type = Json::CONTENT_TYPE;
        let fields = fields_of(Version::V3, &keyed);
        assert_eq!(names(&fields), [&b"v"[..], b"m", b"p"]);
        let meta: std::collections::BTreeMap<String, String> = rmp_serde::from_slice(&fields[1].1).unwrap();
        assert_eq!(meta.keys().collect::<Vec<_>>(), ["ct", "key", "type"]);
        let read = decode_entry(&fields, "orders", at, &Limits::default()).unwrap();
        assert_eq!(
            (read.key.as_deref(), read.type_name.as_str(), read.content_type.as_str()),
            (Some("customer-1"), "Order", Json::CONTENT_TYPE)
        );
    }

    #[test]
    fn the_version_3_entries_of_the_documentation_are_what_is_written() {
        // docs/wire-format.md, "Version 3", byte by byte.
        #[derive(serde::Serialize)]
        struct Greeting {
            text: &'static str,
            count: u32,
        }
        let payload = Bytes::from(rmp_serde::to_vec_named(&Greeting { text: "hello", count: 3 }).unwrap());
        let hex = |b: &[u8]| b.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ");
        let env = EnvelopeRef::new("", MsgPack::CONTENT_TYPE, &payload);
        let fields = fields_of(Version::V3, &env);
        assert_eq!(names(&fields), [&b"v"[..], b"p"]);
        assert_eq!(fields[0].1.as_ref(), b"3");
        assert_eq!(hex(&fields[1].1), "82 a4 74 65 78 74 a5 68 65 6c 6c 6f a5 63 6f 75 6e 74 03");
        let headers: Headers = [("lang".to_owned(), "en".to_owned())].into_iter().collect();
        let mut keyed = env;
        keyed.key = Some("user-7");
        keyed.headers = &headers;
        let fields = fields_of(Version::V3, &keyed);
        assert_eq!(names(&fields), [&b"v"[..], b"m", b"p"]);
        assert_eq!(hex(&fields[1].1), "82 a3 6b 65 79 a6 75 73 65 72 2d 37 a1 68 81 a4 6c 61 6e 67 a2 65 6e");
    }

    #[test]
    fn a_version_3_entry_keeps_its_id_and_time_where_it_is_written_again() {
        let first = EntryId::new(1_732_540_000_000, 5);
        let mut fields = fields_of(Version::V3, &lean());
        let original = decode_entry(&fields, "orders", first, &Limits::default()).unwrap();
        // Dead-letter replay writes the fields again, with `o`: the entry id they came from.
        fields.push((Bytes::from("o"), Bytes::from(first.to_string())));
        let replayed = decode_entry(&fields, "orders", EntryId::new(1_732_540_999_000, 0), &Limits::default()).unwrap();
        assert_eq!((replayed.id, replayed.published_at), (original.id, original.published_at));
        // An id and time the writer gave win over what the entry would derive.
        let given = Envelope::new("T", MsgPack::CONTENT_TYPE, "x");
        let fields = Version::V3.encode(&given, &Limits::default()).unwrap();
        assert_eq!(decode_entry(&fields, "orders", first, &Limits::default()).unwrap(), given);
        // A bad `o`, and a second one, are errors of their own.
        let mut bad = fields_of(Version::V3, &lean());
        bad.push((Bytes::from("o"), Bytes::from("yesterday")));
        assert!(
            matches!(decode_entry(&bad, "orders", first, &Limits::default()), Err(DecodeError::InvalidField { field, .. }) if field == "o")
        );
        bad.pop();
        bad.push((Bytes::from("o"), Bytes::from("1-1")));
        bad.push((Bytes::from("o"), Bytes::from("1-2")));
        assert!(matches!(
            decode_entry(&bad, "orders", first, &Limits::default()),
            Err(DecodeError::DuplicateField { .. })
        ));
    }

    #[test]
    fn versions_1_and_2_still_write_every_part_of_a_lean_envelope() {
        for version in [Version::V1, Version::V2] {
            let read = decode(&fields_of(version, &lean()), &Limits::default()).unwrap();
            assert_eq!(read.type_name, UNNAMED, "no type name: {version:?}");
            let mut typed = lean();
            typed.type_name = "Order";
            let fields = fields_of(version, &typed);
            let read = decode(&fields, &Limits::default()).unwrap();
            assert_eq!(read.id.as_uuid().get_version_num(), 7, "a new id: {version:?}");
            assert_eq!(Some(read.published_at), read.id.created_at(), "its own time: {version:?}");
        }
    }

    #[test]
    fn unknown_fields_are_ignored_but_counted() {
        for version in VERSIONS {
            let mut fields = version.encode(&sample(), &Limits::default()).unwrap();
            fields.push((Bytes::from("future"), Bytes::from("x")));
            assert!(decode(&fields, &Limits::default()).is_ok());
            let tight = Limits { max_fields: fields.len() - 1, ..Limits::default() };
            assert!(matches!(decode(&fields, &tight), Err(DecodeError::TooLarge { what: "field count", .. })));
        }
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
        fn arbitrary_metadata_bytes_never_panic(m in proptest::collection::vec(any::<u8>(), 0..256)) {
            let fields = [("v", Bytes::from("2")), ("m", Bytes::from(m)), ("p", Bytes::new())]
                .map(|(k, v)| (Bytes::from(k), v));
            let _ = decode(&fields, &Limits::default());
        }

        #[test]
        fn cut_or_flipped_metadata_never_panics(cut in 0usize..400, at in 0usize..400, bit in 0u8..8) {
            let mut fields = encode(&sample(), &Limits::default()).unwrap();
            let mut m = fields[1].1.to_vec();
            let at = at % m.len();
            m[at] ^= 1 << bit;
            m.truncate(cut.min(m.len()));
            fields[1].1 = Bytes::from(m);
            let _ = decode(&fields, &Limits::default());
        }

        #[test]
        fn round_trip_arbitrary_envelopes(
            type_name in "[A-Za-z][A-Za-z0-9_.]{0,40}",
            key in proptest::option::of("[ -~]{0,40}"),
            headers in proptest::collection::btree_map("[a-z][a-z0-9-]{0,20}", "\\PC{0,300}", 0..20),
            payload in proptest::collection::vec(any::<u8>(), 0..512),
            ts in 0u64..u64::MAX / 2,
            version in 0usize..3,
        ) {
            let mut env = Envelope::new(type_name, MsgPack::CONTENT_TYPE, payload);
            env.published_at = UNIX_EPOCH + Duration::from_millis(ts);
            env.key = key;
            for (k, v) in headers { env.headers.insert(k, v); }
            let version = VERSIONS[version];
            let fields = version.encode(&env, &Limits::default()).unwrap();
            prop_assert_eq!(decode(&fields, &Limits::default()).unwrap(), env);
        }
    }
}
