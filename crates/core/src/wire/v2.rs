//! Version 2: the envelope's metadata packed into one MessagePack map.
//!
//! An entry is three fields: `v` `2`, `m` and `p`. `m` is a MessagePack map whose keys are
//! the names of version 1's fields: `id`, `type`, `ct` (strings) and `ts` (unsigned integer,
//! milliseconds) always; `key`, `corr`, `reply`, `tp` (strings), `dl`, `exp` (unsigned
//! integers) when set; `h`, a map of header names to values (strings), when there are
//! headers. A reader ignores keys it does not know and treats `nil` as absent.
//!
//! The reader below walks the bytes of `m` itself: it allocates nothing until a value has
//! passed its limit, and a claimed length can never make it allocate or loop beyond what the
//! bytes hold.

use bytes::Bytes;

use super::{field, invalid, lossy, DecodeError, Limits, Parts, VERSION_2};
use std::time::SystemTime;

use crate::envelope::{to_millis, Envelope, EnvelopeRef, Headers};

/// Emits `v`, `m` and `p` (the envelope was checked already).
pub(super) fn encode_fields(env: &EnvelopeRef<'_>, mut emit: impl FnMut(Bytes, Bytes)) {
    let (id, published_at) = env.id_and_time();
    let type_name = if env.type_name.is_empty() { super::UNNAMED } else { env.type_name };
    let mut id_text = [0u8; 36];
    let id = &*id.as_uuid().hyphenated().encode_lower(&mut id_text);
    let tp = env.traceparent.map(|t| t.to_ascii());
    let strings = [
        (field::ID, Some(id.as_bytes())),
        (field::TYPE, Some(type_name.as_bytes())),
        (field::CONTENT_TYPE, Some(env.content_type.as_bytes())),
        (field::KEY, env.key.map(str::as_bytes)),
        (field::CORRELATION_ID, env.correlation_id.map(str::as_bytes)),
        (field::REPLY_TO, env.reply_to.map(str::as_bytes)),
        (field::TRACEPARENT, tp.as_ref().map(|t| &t[..])),
    ];
    let times =
        [(field::TIMESTAMP, Some(published_at)), (field::DEADLINE, env.deadline), (field::EXPIRES, env.expires_at)];
    let m = meta_map(&strings, &times, env.headers).unwrap_or_default();
    let s = |k: &'static str| Bytes::from_static(k.as_bytes());
    emit(s(field::VERSION), s(VERSION_2));
    emit(s(field::META), Bytes::from(m));
    emit(s(field::PAYLOAD), env.payload.clone());
}

/// The metadata map of versions 2 and 3: the `strings` and `times` that are present, in that
/// order, then the headers; `None` when nothing is.
pub(super) fn meta_map(
    strings: &[(&str, Option<&[u8]>)],
    times: &[(&str, Option<SystemTime>)],
    headers: &Headers,
) -> Option<Vec<u8>> {
    let present = strings.iter().filter(|(_, v)| v.is_some()).count()
        + times.iter().filter(|(_, v)| v.is_some()).count()
        + usize::from(!headers.is_empty());
    if present == 0 {
        return None;
    }
    // Every key and value with its longest header (5 bytes for strings, 9 for integers).
    let len = 1
        + strings.iter().map(|(_, v)| v.map_or(0, |v| 11 + v.len())).sum::<usize>()
        + 13 * times.len()
        + 6
        + headers.iter().map(|(k, v)| 10 + k.len() + v.len()).sum::<usize>();
    let mut m = Vec::with_capacity(len);
    put_map_len(&mut m, present);
    for (name, value) in strings {
        if let Some(value) = value {
            put_str(&mut m, name);
            put_str_bytes(&mut m, value);
        }
    }
    for (name, value) in times {
        if let Some(value) = value {
            put_str(&mut m, name);
            put_uint(&mut m, to_millis(*value));
        }
    }
    if !headers.is_empty() {
        put_str(&mut m, field::HEADERS);
        put_map_len(&mut m, headers.len());
        for (name, value) in headers.iter() {
            put_str(&mut m, name);
            put_str(&mut m, value);
        }
    }
    Some(m)
}

/// Decodes version 2 `fields` (the caller checked the field count and the version).
pub(super) fn decode(fields: &[(Bytes, Bytes)], limits: &Limits) -> Result<Envelope, DecodeError> {
    let [_, meta, payload] = take_fields(fields, [b"v", b"m", b"p"])?;
    let meta = meta.ok_or(DecodeError::MissingField { field: field::META })?;
    let mut parts = Parts { payload, ..Parts::default() };
    read_meta(meta, &mut parts, limits)?;
    parts.into_envelope(limits)
}

/// The values of the fields `names` (each may occur once; other fields are ignored), for the
/// versions whose entries are a few fixed fields (2 and 3).
pub(super) fn take_fields<'a, const N: usize>(
    fields: &'a [(Bytes, Bytes)],
    names: [&[u8]; N],
) -> Result<[Option<&'a Bytes>; N], DecodeError> {
    let mut found = [None; N];
    for (name, value) in fields {
        let Some(i) = names.iter().position(|n| *n == name.as_ref()) else { continue };
        if found[i].replace(value).is_some() {
            return Err(DecodeError::DuplicateField { field: lossy(name, 64) });
        }
    }
    Ok(found)
}

/// Reads the metadata map `meta` (version 2's, and version 3's) into `parts`.
pub(super) fn read_meta<'a>(meta: &'a [u8], parts: &mut Parts<'a>, limits: &Limits) -> Result<(), DecodeError> {
    let mut r = Reader(meta);
    let entries = match r.next()? {
        Token::Map(n) => n,
        _ => return Err(invalid(field::META, "not a MessagePack map")),
    };
    if entries > limits.max_fields {
        return Err(DecodeError::TooLarge { what: "metadata entry count", size: entries, limit: limits.max_fields });
    }
    let mut seen = 0u16;
    for _ in 0..entries {
        let Token::Str(name) = r.next()? else {
            return Err(invalid(field::META, "a key is not a string"));
        };
        let (bit, name) = match KEYS.iter().position(|k| k.as_bytes() == name) {
            Some(i) => (1 << i, KEYS[i]),
            None => {
                r.skip_value()?;
                continue;
            }
        };
        if seen & bit != 0 {
            return Err(DecodeError::DuplicateField { field: name.to_owned() });
        }
        seen |= bit;
        match name {
            field::ID => parts.id = r.string(name)?,
            field::TYPE => parts.type_name = r.string(name)?,
            field::CONTENT_TYPE => parts.content_type = r.string(name)?,
            field::KEY => parts.key = r.string(name)?,
            field::CORRELATION_ID => parts.correlation_id = r.string(name)?,
            field::REPLY_TO => parts.reply_to = r.string(name)?,
            field::TRACEPARENT => parts.traceparent = r.string(name)?,
            field::TIMESTAMP => parts.published_at = r.millis(name)?,
            field::DEADLINE => parts.deadline = r.millis(name)?,
            field::EXPIRES => parts.expires = r.millis(name)?,
            _ => {
                let headers = match r.next()? {
                    Token::Nil => 0,
                    Token::Map(n) => n,
                    _ => return Err(invalid(field::HEADERS, "not a map")),
                };
                for _ in 0..headers {
                    match (r.next()?, r.next()?) {
                        (Token::Str(name), Token::Str(value)) => parts.add_header(name, name, value, limits)?,
                        // As for metadata keys: a header whose value is nil is absent.
                        (Token::Str(_), Token::Nil) => {}
                        _ => return Err(invalid(field::HEADERS, "a header name or value is not a string")),
                    }
                }
            }
        }
    }
    Ok(())
}

/// The metadata keys a reader knows (the last one, `h`, holds the headers).
const KEYS: [&str; 11] = [
    field::ID,
    field::TYPE,
    field::CONTENT_TYPE,
    field::TIMESTAMP,
    field::KEY,
    field::CORRELATION_ID,
    field::REPLY_TO,
    field::DEADLINE,
    field::EXPIRES,
    field::TRACEPARENT,
    field::HEADERS,
];

pub(super) fn put_map_len(out: &mut Vec<u8>, len: usize) {
    // At most 11 keys, or `Limits::max_headers` headers: a u32 always holds it.
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    match len {
        0..=15 => out.push(0x80 | len as u8),
        16..=0xffff => put_head(out, 0xde, &(len as u16).to_be_bytes()),
        _ => put_head(out, 0xdf, &len.to_be_bytes()),
    }
}

pub(super) fn put_str(out: &mut Vec<u8>, s: &str) {
    put_str_bytes(out, s.as_bytes());
}

/// [`put_str`] for text known to be UTF-8 (ASCII the encoder wrote itself).
pub(super) fn put_str_bytes(out: &mut Vec<u8>, s: &[u8]) {
    // Checked lengths (metadata 1 KiB, headers 8 KiB by default) never reach u32::MAX.
    let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
    match len {
        0..=31 => out.push(0xa0 | len as u8),
        32..=0xff => put_head(out, 0xd9, &[len as u8]),
        0x100..=0xffff => put_head(out, 0xda, &(len as u16).to_be_bytes()),
        _ => put_head(out, 0xdb, &len.to_be_bytes()),
    }
    out.extend_from_slice(s);
}

pub(super) fn put_uint(out: &mut Vec<u8>, v: u64) {
    match v {
        0..=0x7f => out.push(v as u8),
        0x80..=0xff => put_head(out, 0xcc, &[v as u8]),
        0x100..=0xffff => put_head(out, 0xcd, &(v as u16).to_be_bytes()),
        0x1_0000..=0xffff_ffff => put_head(out, 0xce, &(v as u32).to_be_bytes()),
        _ => put_head(out, 0xcf, &v.to_be_bytes()),
    }
}

/// A MessagePack marker byte followed by its big-endian length or value.
fn put_head(out: &mut Vec<u8>, marker: u8, be_bytes: &[u8]) {
    out.push(marker);
    out.extend_from_slice(be_bytes);
}

/// One MessagePack value's head: scalars whole, strings as their bytes, containers as their
/// length (their elements follow).
#[derive(Debug)]
enum Token<'a> {
    Nil,
    UInt(u64),
    Int(i64),
    Str(&'a [u8]),
    Array(usize),
    Map(usize),
    /// Booleans, floats, binary and extension values: nothing the format uses.
    Other,
}

/// Reads MessagePack values off the front of a slice.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.0.len() {
            return Err(invalid(field::META, "truncated MessagePack"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    /// A big-endian unsigned integer of `n` (1, 2, 4 or 8) bytes.
    fn be(&mut self, n: usize) -> Result<u64, DecodeError> {
        Ok(self.take(n)?.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
    }

    /// A length of `n` bytes (a `usize` on every platform Tributary runs on).
    fn len(&mut self, n: usize) -> Result<usize, DecodeError> {
        usize::try_from(self.be(n)?).map_err(|_| invalid(field::META, "length out of range"))
    }

    fn next(&mut self) -> Result<Token<'a>, DecodeError> {
        let marker = self.take(1)?[0];
        Ok(match marker {
            0x00..=0x7f => Token::UInt(u64::from(marker)),
            0x80..=0x8f => Token::Map(usize::from(marker & 0x0f)),
            0x90..=0x9f => Token::Array(usize::from(marker & 0x0f)),
            0xa0..=0xbf => Token::Str(self.take(usize::from(marker & 0x1f))?),
            0xc0 => Token::Nil,
            0xc1 => return Err(invalid(field::META, "reserved MessagePack marker 0xc1")),
            0xc2 | 0xc3 => Token::Other,
            0xc4..=0xc6 => {
                let n = self.len(1 << (marker - 0xc4))?;
                self.take(n)?;
                Token::Other
            }
            0xc7..=0xc9 => {
                let n = self.len(1 << (marker - 0xc7))?;
                self.take(n.saturating_add(1))?;
                Token::Other
            }
            0xca => {
                self.take(4)?;
                Token::Other
            }
            0xcb => {
                self.take(8)?;
                Token::Other
            }
            0xcc..=0xcf => Token::UInt(self.be(1 << (marker - 0xcc))?),
            0xd0..=0xd3 => {
                let n = 1usize << (marker - 0xd0);
                let raw = self.be(n)?;
                // Sign-extend the n-byte two's-complement value.
                let shift = 64 - 8 * n as u32;
                Token::Int(((raw << shift) as i64) >> shift)
            }
            0xd4..=0xd8 => {
                self.take(1 + (1 << (marker - 0xd4)))?;
                Token::Other
            }
            0xd9..=0xdb => {
                let n = self.len(1 << (marker - 0xd9))?;
                Token::Str(self.take(n)?)
            }
            0xdc | 0xdd => Token::Array(self.len(2 << (marker - 0xdc))?),
            0xde | 0xdf => Token::Map(self.len(2 << (marker - 0xde))?),
            0xe0..=0xff => Token::Int(i64::from(marker as i8)),
        })
    }

    /// Skips one value, containers with everything in them. Every value takes at least a
    /// byte, so a claimed length cannot keep this going past the end of the bytes.
    fn skip_value(&mut self) -> Result<(), DecodeError> {
        let mut left: u64 = 1;
        while left > 0 {
            left -= 1;
            match self.next()? {
                Token::Array(n) => left = left.saturating_add(n as u64),
                Token::Map(n) => left = left.saturating_add(2 * n as u64),
                _ => {}
            }
        }
        Ok(())
    }

    /// A string value, or `None` for `nil`.
    fn string(&mut self, name: &'static str) -> Result<Option<&'a [u8]>, DecodeError> {
        match self.next()? {
            Token::Nil => Ok(None),
            Token::Str(s) => Ok(Some(s)),
            _ => Err(invalid(name, "not a string")),
        }
    }

    /// An unsigned integer of milliseconds, or `None` for `nil`.
    fn millis(&mut self, name: &'static str) -> Result<Option<u64>, DecodeError> {
        match self.next()? {
            Token::Nil => Ok(None),
            Token::UInt(v) => Ok(Some(v)),
            Token::Int(v) => u64::try_from(v).map(Some).map_err(|_| invalid(name, "negative milliseconds")),
            _ => Err(invalid(name, "not an integer number of milliseconds")),
        }
    }
}
