//! Version 1: one stream field per envelope part.
//!
//! Readable with `redis-cli` as it is, and the simplest format to write from another
//! language; what producers write when a connection is set to
//! [`Version::V1`](super::Version::V1), and what older Tributary versions read.

use bytes::Bytes;

use super::{field, invalid, lossy, DecodeError, Limits, Parts, VERSION_1};
use crate::envelope::{to_millis, Envelope, EnvelopeRef};

/// Emits `env`'s fields in the documented order (the envelope was checked already).
pub(super) fn encode_fields(env: &EnvelopeRef<'_>, mut emit: impl FnMut(Bytes, Bytes)) {
    // This runs once per published message: field names and common values are static, and
    // every other value is written into one buffer that the fields share (one allocation
    // instead of one per field, and no formatting machinery).
    let (id, published_at) = env.id_and_time();
    let type_name = if env.type_name.is_empty() { super::UNNAMED } else { env.type_name };
    let (mut ts, mut dl, mut exp) = (itoa::Buffer::new(), itoa::Buffer::new(), itoa::Buffer::new());
    let ts = ts.format(to_millis(published_at)).as_bytes();
    let dl = env.deadline.map(|t| dl.format(to_millis(t)).as_bytes());
    let exp = env.expires_at.map(|t| exp.format(to_millis(t)).as_bytes());
    let tp = env.traceparent.map(|t| t.to_ascii());
    let content_type = match env.content_type {
        crate::MsgPack::CONTENT_TYPE => Some(crate::MsgPack::CONTENT_TYPE),
        crate::Json::CONTENT_TYPE => Some(crate::Json::CONTENT_TYPE),
        _ => None,
    };
    let mut id_text = [0u8; 36];
    let id = id.as_uuid().hyphenated().encode_lower(&mut id_text).as_bytes();
    let opt = |v: Option<&[u8]>| v.map_or(0, <[u8]>::len);
    let len = id.len()
        + type_name.len()
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
    lens[1] = put(type_name.as_bytes());
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
    emit(s(field::VERSION), s(VERSION_1));
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
}

/// Decodes version 1 `fields` (the caller checked the field count and the version).
pub(super) fn decode(fields: &[(Bytes, Bytes)], limits: &Limits) -> Result<Envelope, DecodeError> {
    let mut f = Fields::default();
    let mut parts = Parts::default();
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
                parts.add_header(n, &n[field::HEADER_PREFIX.len()..], value, limits)?;
                continue;
            }
            _ => continue,
        };
        if slot.replace(value).is_some() {
            return Err(DecodeError::DuplicateField { field: lossy(name, 64) });
        }
    }
    let time = |v: Option<&Bytes>, field| v.map(|v| millis(v, field)).transpose();
    parts.id = bytes_of(f.id);
    parts.type_name = bytes_of(f.type_name);
    parts.content_type = bytes_of(f.content_type);
    parts.published_at = time(f.timestamp, field::TIMESTAMP)?;
    parts.key = bytes_of(f.key);
    parts.correlation_id = bytes_of(f.correlation_id);
    parts.reply_to = bytes_of(f.reply_to);
    parts.deadline = time(f.deadline, field::DEADLINE)?;
    parts.expires = time(f.expires, field::EXPIRES)?;
    parts.traceparent = bytes_of(f.traceparent);
    parts.payload = f.payload;
    parts.into_envelope(limits)
}

fn bytes_of(v: Option<&Bytes>) -> Option<&[u8]> {
    v.map(Bytes::as_ref)
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

fn millis(v: &[u8], field: &'static str) -> Result<u64, DecodeError> {
    if v.is_empty() || v.len() > 20 || !v.iter().all(u8::is_ascii_digit) {
        return Err(invalid(field, "not a decimal number of milliseconds"));
    }
    // At most 20 ASCII digits: the parse can only fail on overflow.
    std::str::from_utf8(v).ok().and_then(|s| s.parse().ok()).ok_or_else(|| invalid(field, "out of range"))
}
