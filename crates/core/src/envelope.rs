//! The message envelope: identity, metadata and payload of one message.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::Serialize;

use crate::codec::{Codec, CodecError};
use crate::id::MessageId;
use crate::trace::TraceParent;

/// String headers of a message, ordered by name.
///
/// Names are case-sensitive. On the wire each header is one field `h:<name>`
/// (see `docs/wire-format.md`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(BTreeMap<String, String>);

impl Headers {
    /// No headers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `name` to `value`, returning the previous value.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) -> Option<String> {
        self.0.insert(name.into(), value.into())
    }

    /// The value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// Removes `name`, returning its value.
    pub fn remove(&mut self, name: &str) -> Option<String> {
        self.0.remove(name)
    }

    /// Number of headers.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are no headers.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Iterates over `(name, value)` in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Self(iter.into_iter().map(|(k, v)| (k.into(), v.into())).collect())
    }
}

/// An envelope's parts, borrowed: what [`wire::encode_fields`](crate::wire::encode_fields)
/// writes. A producer fills one from what it already holds (static type and content type
/// names, its own key and headers), so publishing does not build an owned [`Envelope`] first.
///
/// ```
/// use bytes::Bytes;
/// use tributary_core::{envelope::EnvelopeRef, wire, Limits};
///
/// let payload = Bytes::from_static(b"\x81\xa2id\x01");
/// let env = EnvelopeRef::new("", "application/msgpack", &payload);
/// let mut names = Vec::new();
/// // Version 3: no id, time, type or default content type to write.
/// wire::encode_fields(&env, &Limits::default(), |name, _value| names.push(name))?;
/// assert_eq!(names, ["v", "p"]);
/// names.clear();
/// let env = EnvelopeRef::new("OrderPlaced", "application/msgpack", &payload);
/// wire::Version::V2.encode_fields(&env, &Limits::default(), |name, _value| names.push(name))?;
/// assert_eq!(names, ["v", "m", "p"]);
/// names.clear();
/// wire::Version::V1.encode_fields(&env, &Limits::default(), |name, _value| names.push(name))?;
/// assert_eq!(names, ["v", "id", "type", "ct", "ts", "p"]);
/// # Ok::<(), tributary_core::DecodeError>(())
/// ```
// Used by Tributary's own crates; not part of the supported API (#25).
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct EnvelopeRef<'a> {
    /// See [`Envelope::id`]. `None`: version 3 writes none (readers derive it from the
    /// entry), versions 1 and 2 make a new one.
    pub id: Option<MessageId>,
    /// See [`Envelope::type_name`]. Empty: none given (version 3 writes none; versions 1 and
    /// 2 write [`wire::UNNAMED`](crate::wire::UNNAMED)).
    pub type_name: &'a str,
    /// See [`Envelope::content_type`].
    pub content_type: &'a str,
    /// See [`Envelope::published_at`]. `None`: version 3 writes none (readers take the entry
    /// id's time), versions 1 and 2 write the id's time.
    pub published_at: Option<SystemTime>,
    /// See [`Envelope::headers`].
    pub headers: &'a Headers,
    /// See [`Envelope::payload`].
    pub payload: &'a Bytes,
    /// See [`Envelope::key`].
    pub key: Option<&'a str>,
    /// See [`Envelope::correlation_id`].
    pub correlation_id: Option<&'a str>,
    /// See [`Envelope::reply_to`].
    pub reply_to: Option<&'a str>,
    /// See [`Envelope::deadline`].
    pub deadline: Option<SystemTime>,
    /// See [`Envelope::expires_at`].
    pub expires_at: Option<SystemTime>,
    /// See [`Envelope::traceparent`].
    pub traceparent: Option<TraceParent>,
}

/// No headers, for envelopes that have none.
static NO_HEADERS: Headers = Headers(BTreeMap::new());

impl<'a> EnvelopeRef<'a> {
    /// A new message (its id and time left to the wire format: see [`Self::id`]) with no
    /// optional parts; set them through the public fields.
    pub fn new(type_name: &'a str, content_type: &'a str, payload: &'a Bytes) -> Self {
        Self {
            id: None,
            type_name,
            content_type,
            published_at: None,
            headers: &NO_HEADERS,
            payload,
            key: None,
            correlation_id: None,
            reply_to: None,
            deadline: None,
            expires_at: None,
            traceparent: None,
        }
    }

    /// The id and publish time versions 1 and 2 write: the envelope's, or a new id and its
    /// own time (one clock read per message, and the two always agree).
    pub(crate) fn id_and_time(&self) -> (MessageId, SystemTime) {
        let id = self.id.unwrap_or_default();
        let at = self.published_at.or_else(|| id.created_at()).unwrap_or_else(SystemTime::now);
        (id, at)
    }
}

/// One message: what a producer writes to a stream entry and a consumer reads back.
///
/// Build one with [`Envelope::encode`] (typed, through a codec) or [`Envelope::new`] (raw
/// bytes), then chain the `with_*` methods for the optional parts.
///
/// # Example
/// ```
/// use tributary_core::{codec::MsgPack, Envelope};
///
/// #[derive(serde::Serialize)]
/// struct OrderPlaced { id: u64 }
///
/// let env = Envelope::encode(&MsgPack, &OrderPlaced { id: 1 })?
///     .with_key("customer-42")
///     .with_header("source", "web");
/// assert_eq!(env.type_name, "OrderPlaced");
/// assert_eq!(env.content_type, "application/msgpack");
/// # Ok::<(), tributary_core::CodecError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Envelope {
    /// Unique, sortable message id: chosen by the publisher, or, for an entry that carries
    /// none (wire format version 3), derived from its topic's stream key and entry id
    /// ([`MessageId::of_entry`]). Either way it stays the same through retries,
    /// dead-lettering and replay.
    pub id: MessageId,
    /// Name of the message type, e.g. `OrderPlaced`; empty when the publisher gave none
    /// (version 3 entries written by a typed `publish` carry none unless one was set, or the
    /// producer writes type names: `ProducerBuilder::type_names`). Versions 1 and 2 write
    /// [`wire::UNNAMED`](crate::wire::UNNAMED) for an empty one.
    pub type_name: String,
    /// MIME type of the payload, e.g. `application/msgpack`.
    pub content_type: String,
    /// When the message was published (millisecond precision on the wire): written by the
    /// publisher, or, for an entry that carries none, the time of its first entry id.
    pub published_at: SystemTime,
    /// Free-form string headers.
    pub headers: Headers,
    /// The encoded message.
    pub payload: Bytes,
    /// Partition / ordering key: messages with the same key are handled in order.
    pub key: Option<String>,
    /// RPC: id that ties a reply to its request.
    pub correlation_id: Option<String>,
    /// RPC: stream the reply must be written to.
    pub reply_to: Option<String>,
    /// RPC: absolute time after which the request must not be executed.
    pub deadline: Option<SystemTime>,
    /// Time after which the message must not be handled (it is skipped and recorded).
    pub expires_at: Option<SystemTime>,
    /// W3C trace context of the publisher.
    pub traceparent: Option<TraceParent>,
}

impl Envelope {
    /// An envelope around an already encoded payload, with a new id and the current time.
    pub fn new(type_name: impl Into<String>, content_type: impl Into<String>, payload: impl Into<Bytes>) -> Self {
        let id = MessageId::new();
        Self {
            id,
            type_name: type_name.into(),
            content_type: content_type.into(),
            published_at: truncate_to_millis(id.created_at().unwrap_or_else(SystemTime::now)),
            headers: Headers::new(),
            payload: payload.into(),
            key: None,
            correlation_id: None,
            reply_to: None,
            deadline: None,
            expires_at: None,
            traceparent: None,
        }
    }

    /// Encodes `message` with `codec`; the type name is the last segment of the Rust type's
    /// path (`my_app::events::OrderPlaced` becomes `OrderPlaced`).
    ///
    /// # Errors
    /// [`CodecError::Encode`] when the codec cannot encode the value.
    pub fn encode<C: Codec, T: Serialize + ?Sized>(codec: &C, message: &T) -> Result<Self, CodecError> {
        let payload = codec.encode(message)?;
        Ok(Self::new(short_type_name::<T>(), codec.content_type(), payload))
    }

    /// Sets the type name.
    pub fn with_type_name(mut self, name: impl Into<String>) -> Self {
        self.type_name = name.into();
        self
    }

    /// Sets the partition / ordering key.
    pub fn with_key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Adds a header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name, value);
        self
    }

    /// Sets the trace context.
    pub fn with_traceparent(mut self, tp: TraceParent) -> Self {
        self.traceparent = Some(tp);
        self
    }

    /// Sets the correlation id (RPC).
    pub fn with_correlation_id(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }

    /// Sets the reply-to stream (RPC).
    pub fn with_reply_to(mut self, stream: impl Into<String>) -> Self {
        self.reply_to = Some(stream.into());
        self
    }

    /// Sets the absolute deadline (RPC).
    pub fn with_deadline(mut self, deadline: SystemTime) -> Self {
        self.deadline = Some(truncate_to_millis(deadline));
        self
    }

    /// The envelope's parts, borrowed (for `wire::encode_fields`).
    #[doc(hidden)] // `EnvelopeRef` is internal (#25).
    pub fn view(&self) -> EnvelopeRef<'_> {
        EnvelopeRef {
            id: Some(self.id),
            type_name: &self.type_name,
            content_type: &self.content_type,
            published_at: Some(self.published_at),
            headers: &self.headers,
            payload: &self.payload,
            key: self.key.as_deref(),
            correlation_id: self.correlation_id.as_deref(),
            reply_to: self.reply_to.as_deref(),
            deadline: self.deadline,
            expires_at: self.expires_at,
            traceparent: self.traceparent,
        }
    }

    /// Decodes the payload into a `T` with the built-in codec named by the content type.
    ///
    /// # Errors
    /// See [`crate::codec::decode_payload`].
    pub fn decode<T: serde::de::DeserializeOwned>(&self) -> Result<T, CodecError> {
        crate::codec::decode_payload(&self.content_type, &self.payload)
    }

    /// Sets the expiry time: consumers skip the message after it.
    pub fn with_expires_at(mut self, at: SystemTime) -> Self {
        self.expires_at = Some(truncate_to_millis(at));
        self
    }

    /// True when the expiry is set and has passed at `now`.
    pub fn is_expired(&self, now: SystemTime) -> bool {
        self.expires_at.is_some_and(|t| t <= now)
    }

    /// True when the deadline is set and has passed at `now`.
    pub fn is_past_deadline(&self, now: SystemTime) -> bool {
        self.deadline.is_some_and(|d| d <= now)
    }
}

/// `std::any::type_name` without the module path (generic arguments keep theirs): the
/// default type name of a message of type `T`.
pub fn short_type_name<T: ?Sized>() -> &'static str {
    let full = std::any::type_name::<T>();
    let base_end = full.find('<').unwrap_or(full.len());
    // Paths are separated by `::`, and `:` appears nowhere else in a type's path: searching
    // for the one byte is a `memrchr`, where searching for "::" sets up a substring search
    // on every publish.
    match full[..base_end].rfind(':') {
        Some(i) => &full[i + 1..],
        None => full,
    }
}

/// Milliseconds since the Unix epoch, as the wire format stores times.
pub(crate) fn to_millis(t: SystemTime) -> u64 {
    let ms = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_millis();
    u64::try_from(ms).unwrap_or(u64::MAX)
}

/// The time `ms` milliseconds after the Unix epoch.
pub(crate) fn from_millis(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

fn truncate_to_millis(t: SystemTime) -> SystemTime {
    from_millis(to_millis(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_type_name_drops_module_path() {
        struct Local;
        assert_eq!(short_type_name::<Local>(), "Local");
        assert_eq!(short_type_name::<u64>(), "u64");
        assert_eq!(short_type_name::<Vec<String>>(), "Vec<alloc::string::String>");
    }

    #[test]
    fn deadline_check() {
        let now = SystemTime::now();
        let env = Envelope::new("T", "application/json", "{}").with_deadline(now);
        assert!(env.is_past_deadline(now + Duration::from_millis(1)));
        assert!(!env.is_past_deadline(now - Duration::from_secs(1)));
    }
}
