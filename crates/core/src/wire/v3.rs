//! Version 3, the lean envelope: what a message needs and nothing else.
//!
//! An entry is `v` `3` and `p` (the payload), with `m` (version 2's metadata map, every key
//! optional) only when there is metadata to carry, and `o` after a dead-letter replay. What an
//! entry leaves out, readers take from where it already is:
//!
//! - no `id`: the message id is derived from the stream key and the entry id it was first written
//!   at ([`MessageId::of_entry`](crate::MessageId::of_entry)), `o` when a replay wrote it;
//! - no `ts`: the publish time is that entry id's milliseconds (Redis' clock);
//! - no `type`: none was given (an empty type name); no `ct`: `application/msgpack`.
//!
//! A typed publish with no key, header, trace or expiry is two fields, the payload and two
//! bytes more than the entry a user would write by hand (see `docs/wire-format.md`).

use bytes::Bytes;

use super::v2::{meta_map, read_meta, take_fields};
use super::{field, invalid, DecodeError, Limits, Parts, VERSION_3};
use crate::codec::MsgPack;
use crate::envelope::{Envelope, EnvelopeRef};
use crate::id::{EntryId, MessageId};

/// Emits `v`, `m` when there is metadata, and `p` (the envelope was checked already).
pub(super) fn encode_fields(env: &EnvelopeRef<'_>, mut emit: impl FnMut(Bytes, Bytes)) {
    let mut id_text = [0u8; 36];
    let id = env.id.map(|id| &*id.as_uuid().hyphenated().encode_lower(&mut id_text));
    let tp = env.traceparent.map(|t| t.to_ascii());
    let strings = [
        (field::ID, id.map(str::as_bytes)),
        (field::TYPE, Some(env.type_name.as_bytes()).filter(|t| !t.is_empty())),
        (field::CONTENT_TYPE, Some(env.content_type.as_bytes()).filter(|ct| *ct != MsgPack::CONTENT_TYPE.as_bytes())),
        (field::KEY, env.key.map(str::as_bytes)),
        (field::CORRELATION_ID, env.correlation_id.map(str::as_bytes)),
        (field::REPLY_TO, env.reply_to.map(str::as_bytes)),
        (field::TRACEPARENT, tp.as_ref().map(|t| &t[..])),
    ];
    let times =
        [(field::TIMESTAMP, env.published_at), (field::DEADLINE, env.deadline), (field::EXPIRES, env.expires_at)];
    let s = |k: &'static str| Bytes::from_static(k.as_bytes());
    emit(s(field::VERSION), s(VERSION_3));
    if let Some(m) = meta_map(&strings, &times, env.headers) {
        emit(s(field::META), Bytes::from(m));
    }
    emit(s(field::PAYLOAD), env.payload.clone());
}

/// Decodes version 3 `fields` (the caller checked the field count and the version). `at`:
/// the topic stream and entry id the fields were read at, for what the entry leaves out.
pub(super) fn decode(
    fields: &[(Bytes, Bytes)],
    limits: &Limits,
    at: Option<(&str, EntryId)>,
) -> Result<Envelope, DecodeError> {
    let [_, meta, payload, origin] = take_fields(fields, [b"v", b"m", b"p", b"o"])?;
    let mut parts = Parts { payload, lean: true, ..Parts::default() };
    if let Some(meta) = meta {
        read_meta(meta, &mut parts, limits)?;
    }
    // The entry the message was first written at: `o` once replayed, else where it is read.
    let origin = match origin {
        Some(o) => Some(EntryId::from_ascii(o).ok_or_else(|| invalid(field::ORIGIN, "not a stream entry id"))?),
        None => at.map(|(_, id)| id),
    };
    if parts.id.is_none() {
        let (Some((stream, _)), Some(origin)) = (at, origin) else {
            // Read without knowing where from (`wire::decode`): there is no id to derive.
            return Err(DecodeError::MissingField { field: field::ID });
        };
        parts.derived_id = Some(MessageId::of_entry(stream, origin));
    }
    if parts.published_at.is_none() {
        parts.published_at = Some(origin.ok_or(DecodeError::MissingField { field: field::TIMESTAMP })?.ms());
    }
    parts.into_envelope(limits)
}
