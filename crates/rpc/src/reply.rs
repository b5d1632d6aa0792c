//! The reply record: what a server writes to a caller's reply stream and the caller reads.
//!
//! A reply is a short record, not a full envelope: the format version `v`, the request's
//! `corr`, the content type `ct`, the payload `p`, and `h:rpc-status` `error` on a failure
//! (no status means `ok`). A message id, type name and publish time would tell the caller
//! nothing it uses, and cost a UUID, a clock read and three more fields for Redis to parse,
//! store and send with every call. Clients read replies by field name and ignore other
//! fields, so they accept both this record and the full envelopes servers wrote before.

use bytes::Bytes;
use fred::types::{Key, Value};
use serde::de::DeserializeOwned;
use tributary_core::codec::decode_payload;
use tributary_core::wire::field;
use tributary_core::Limits;

use crate::protocol::STATUS_ERROR;

/// The reply record's version (`v`): a record of its own, versioned apart from envelopes.
const REPLY_VERSION: &str = "1";

/// The status header as a field name: `h:` + [`STATUS_HEADER`](crate::protocol::STATUS_HEADER).
pub(crate) const STATUS_FIELD: &str = "h:rpc-status";

/// What a call needs of its reply, taken from the entry's fields without decoding a whole
/// envelope (the reader does this for every reply).
#[derive(Debug)]
pub(crate) struct Reply {
    content_type: Bytes,
    pub(crate) is_error: bool,
    payload: Bytes,
}

impl Reply {
    /// The correlation id and the reply in `fields`, or why they are not a reply.
    pub(crate) fn from_fields<'f>(
        fields: &'f [(Bytes, Bytes)],
        limits: &Limits,
    ) -> Result<(&'f str, Self), &'static str> {
        let get = |name: &str| fields.iter().find(|(n, _)| n.as_ref() == name.as_bytes()).map(|(_, v)| v);
        if get(field::VERSION).map(Bytes::as_ref) != Some(REPLY_VERSION.as_bytes()) {
            return Err("missing or unsupported wire format version");
        }
        let correlation_id = get(field::CORRELATION_ID).ok_or("no correlation id")?;
        let correlation_id = std::str::from_utf8(correlation_id).map_err(|_| "correlation id is not UTF-8")?;
        let content_type = get(field::CONTENT_TYPE).ok_or("no content type")?.clone();
        let payload = get(field::PAYLOAD).ok_or("no payload")?.clone();
        if payload.len() > limits.max_payload {
            return Err("payload larger than the wire-format limit");
        }
        let is_error = get(STATUS_FIELD).is_some_and(|v| v.as_ref() == STATUS_ERROR.as_bytes());
        Ok((correlation_id, Self { content_type, is_error, payload }))
    }

    /// The payload as `T`, by its content type.
    pub(crate) fn decode<T: DeserializeOwned>(&self) -> Result<T, tributary_core::CodecError> {
        let content_type = std::str::from_utf8(&self.content_type).unwrap_or_default();
        decode_payload(content_type, &self.payload)
    }
}

/// The fields of a reply, as fred's typed `XADD` takes them (a typed command: fred flushes
/// its socket after every custom one).
pub(crate) fn reply_fields(
    correlation_id: &str,
    content_type: &'static str,
    is_error: bool,
    payload: Bytes,
) -> Vec<(Key, Value)> {
    let mut fields = Vec::with_capacity(5);
    fields.push((Key::from_static_str(field::VERSION), Value::from_static_str(REPLY_VERSION)));
    fields.push((Key::from_static_str(field::CORRELATION_ID), Value::from(correlation_id)));
    fields.push((Key::from_static_str(field::CONTENT_TYPE), Value::from_static_str(content_type)));
    fields.push((Key::from_static_str(field::PAYLOAD), Value::Bytes(payload)));
    if is_error {
        fields.push((Key::from_static_str(STATUS_FIELD), Value::from_static_str(STATUS_ERROR)));
    }
    fields
}

#[cfg(test)]
mod tests {
    use tributary_core::{Envelope, Json};

    use super::*;
    use crate::protocol::{STATUS_HEADER, STATUS_OK};

    #[derive(Debug, serde::Deserialize)]
    struct N {
        n: u32,
    }

    /// A reply as servers write it now, in the form a stream read returns.
    fn record(is_error: bool) -> Vec<(Bytes, Bytes)> {
        let bytes = |v: Value| v.as_bytes().expect("a bulk string").to_vec().into();
        reply_fields("corr-1", Json::CONTENT_TYPE, is_error, Bytes::from_static(b"{\"n\":7}"))
            .into_iter()
            .map(|(k, v)| (Bytes::copy_from_slice(k.as_bytes()), bytes(v)))
            .collect()
    }

    /// A reply as earlier servers wrote it: a full (version 1) envelope with the status header.
    fn envelope(status: &str) -> Vec<(Bytes, Bytes)> {
        let env = Envelope::new("RpcReply", Json::CONTENT_TYPE, Bytes::from_static(b"{\"n\":7}"))
            .with_correlation_id("corr-1")
            .with_header(STATUS_HEADER, status);
        tributary_core::wire::Version::V1.encode(&env, &Limits::default()).expect("encodes")
    }

    #[test]
    fn the_status_field_is_the_status_header() {
        assert_eq!(STATUS_FIELD, format!("{}{STATUS_HEADER}", field::HEADER_PREFIX));
    }

    #[test]
    fn replies_are_read_in_both_shapes() {
        for (fields, is_error) in
            [(record(false), false), (record(true), true), (envelope(STATUS_OK), false), (envelope(STATUS_ERROR), true)]
        {
            let (corr, reply) = Reply::from_fields(&fields, &Limits::default()).expect("a reply");
            assert_eq!(corr, "corr-1");
            assert_eq!(reply.is_error, is_error, "{fields:?}");
            assert_eq!(reply.decode::<N>().expect("decodes").n, 7);
        }
        assert_eq!(record(false).len(), 4, "an ok reply is four fields");
    }

    #[test]
    fn malformed_replies_are_refused_with_a_reason() {
        let without = |name: &str| -> Vec<(Bytes, Bytes)> {
            record(false).into_iter().filter(|(n, _)| n.as_ref() != name.as_bytes()).collect()
        };
        for (name, reason) in [
            (field::VERSION, "missing or unsupported wire format version"),
            (field::CORRELATION_ID, "no correlation id"),
            (field::CONTENT_TYPE, "no content type"),
            (field::PAYLOAD, "no payload"),
        ] {
            assert_eq!(Reply::from_fields(&without(name), &Limits::default()).unwrap_err(), reason);
        }
        let tiny = Limits { max_payload: 2, ..Limits::default() };
        assert!(Reply::from_fields(&record(false), &tiny).is_err());
    }
}
