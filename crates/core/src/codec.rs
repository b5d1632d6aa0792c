//! Payload codecs: how a typed message becomes the bytes of an envelope's payload.
//!
//! [`MsgPack`] (MessagePack with named fields, so structs can gain and lose fields without
//! breaking old readers) is the default; [`Json`] is the readable alternative. A consumer
//! picks the codec from the envelope's content type, see [`decode_payload`].

use std::fmt::Debug;

use bytes::Bytes;
use serde::{de::DeserializeOwned, Serialize};

/// Turns values into payload bytes and back.
///
/// # Example
/// ```
/// use tributary_core::codec::{Codec, MsgPack};
///
/// #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
/// struct OrderPlaced { id: u64 }
///
/// let bytes = MsgPack.encode(&OrderPlaced { id: 7 })?;
/// assert_eq!(MsgPack.decode::<OrderPlaced>(&bytes)?, OrderPlaced { id: 7 });
/// # Ok::<(), tributary_core::CodecError>(())
/// ```
pub trait Codec: Debug + Clone + Send + Sync + 'static {
    /// MIME type written into the envelope's `ct` field.
    fn content_type(&self) -> &str;

    /// Encodes `value`.
    ///
    /// # Errors
    /// [`CodecError::Encode`] when the value cannot be represented.
    fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<Bytes, CodecError>;

    /// Decodes a `T` from `bytes`.
    ///
    /// # Errors
    /// [`CodecError::Decode`] when the bytes are not a valid `T`.
    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, CodecError>;
}

/// MessagePack via rmp-serde, structs encoded as maps (named fields). The default codec.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MsgPack;

impl MsgPack {
    /// Content type of MessagePack payloads.
    pub const CONTENT_TYPE: &'static str = "application/msgpack";
}

impl Codec for MsgPack {
    fn content_type(&self) -> &str {
        Self::CONTENT_TYPE
    }

    fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<Bytes, CodecError> {
        // Encoded into a reused per-thread buffer, then copied into an allocation of exactly
        // the right size: one allocation per message, where growing a fresh `Vec` took several
        // and a `Bytes` made from a `Vec` with spare capacity allocates a second header.
        thread_local! {
            static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let encode = |buf: &mut Vec<u8>| {
            buf.clear();
            let done = rmp_serde::encode::write_named(buf, value).map(|()| Bytes::copy_from_slice(buf));
            if buf.capacity() > 64 * 1024 {
                // Do not keep a large message's buffer around.
                *buf = Vec::new();
            }
            done
        };
        let done = BUF.with(|cell| match cell.try_borrow_mut() {
            Ok(mut buf) => encode(&mut buf),
            // Re-entered (a `Serialize` impl encoding with MsgPack itself): use a fresh one.
            Err(_) => encode(&mut Vec::new()),
        });
        done.map_err(|e| CodecError::encode::<T>(Self::CONTENT_TYPE, e))
    }

    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, CodecError> {
        rmp_serde::from_slice(bytes).map_err(|e| CodecError::decode::<T>(Self::CONTENT_TYPE, e))
    }
}

/// JSON via serde_json.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Json;

impl Json {
    /// Content type of JSON payloads.
    pub const CONTENT_TYPE: &'static str = "application/json";
}

impl Codec for Json {
    fn content_type(&self) -> &str {
        Self::CONTENT_TYPE
    }

    fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<Bytes, CodecError> {
        serde_json::to_vec(value).map(Bytes::from).map_err(|e| CodecError::encode::<T>(Self::CONTENT_TYPE, e))
    }

    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, CodecError> {
        serde_json::from_slice(bytes).map_err(|e| CodecError::decode::<T>(Self::CONTENT_TYPE, e))
    }
}

/// Decodes a payload with the built-in codec named by `content_type`.
///
/// # Errors
/// [`CodecError::UnsupportedContentType`] for a content type other than MessagePack or JSON
/// (decode those with your own [`Codec`]); [`CodecError::Decode`] for bad bytes.
pub fn decode_payload<T: DeserializeOwned>(content_type: &str, bytes: &[u8]) -> Result<T, CodecError> {
    // Parameters such as `; charset=utf-8` do not change the codec.
    let base = content_type.split(';').next().unwrap_or("").trim();
    match base {
        MsgPack::CONTENT_TYPE | "application/x-msgpack" => MsgPack.decode(bytes),
        Json::CONTENT_TYPE => Json.decode(bytes),
        other => Err(CodecError::UnsupportedContentType { content_type: other.chars().take(128).collect() }),
    }
}

/// A payload could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The value could not be encoded.
    #[error("`{type_name}` does not encode as {content_type}: {source}")]
    Encode {
        /// Content type of the codec.
        content_type: &'static str,
        /// The type that was encoded, without module paths (`Payment`, `Vec<Order>`).
        type_name: String,
        /// The serializer's error.
        #[source]
        source: crate::BoxError,
    },
    /// The bytes are not a valid value of the requested type.
    #[error("{content_type} payload does not decode as `{type_name}`: {source}")]
    Decode {
        /// Content type of the codec.
        content_type: &'static str,
        /// The type asked for, without module paths (`Payment`, `Vec<Order>`).
        type_name: String,
        /// The deserializer's error (`missing field `amount``).
        #[source]
        source: crate::BoxError,
    },
    /// No built-in codec handles this content type.
    #[error("unsupported content type `{content_type}`")]
    UnsupportedContentType {
        /// The content type found in the envelope (truncated to 128 characters).
        content_type: String,
    },
}

impl CodecError {
    /// An [`Encode`](Self::Encode) error of a `T`, for codecs of your own.
    pub fn encode<T: ?Sized>(content_type: &'static str, source: impl Into<crate::BoxError>) -> Self {
        Self::Encode { content_type, type_name: short_type_name::<T>(), source: source.into() }
    }

    /// A [`Decode`](Self::Decode) error of a `T`, for codecs of your own.
    pub fn decode<T: ?Sized>(content_type: &'static str, source: impl Into<crate::BoxError>) -> Self {
        Self::Decode { content_type, type_name: short_type_name::<T>(), source: source.into() }
    }
}

/// `T`'s name with module paths left out: `Vec<Payment>` for `alloc::vec::Vec<shop::Payment>`.
fn short_type_name<T: ?Sized>() -> String {
    let full = std::any::type_name::<T>();
    let mut out = String::with_capacity(full.len());
    let mut segment_start = 0;
    for (i, c) in full.char_indices() {
        if !(c.is_alphanumeric() || c == '_' || c == ':') {
            out.push_str(last_segment(&full[segment_start..i]));
            out.push(c);
            segment_start = i + c.len_utf8();
        }
    }
    out.push_str(last_segment(&full[segment_start..]));
    out
}

fn last_segment(path: &str) -> &str {
    path.rsplit("::").next().unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct V1 {
        id: u64,
        name: String,
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct V2 {
        name: String,
        id: u64,
        #[serde(default)]
        note: Option<String>,
    }

    #[test]
    fn msgpack_uses_named_fields_so_structs_can_evolve() {
        let old = MsgPack.encode(&V1 { id: 1, name: "a".into() }).unwrap();
        let new: V2 = MsgPack.decode(&old).unwrap();
        assert_eq!(new, V2 { name: "a".into(), id: 1, note: None });

        let newer = MsgPack.encode(&V2 { name: "b".into(), id: 2, note: Some("x".into()) }).unwrap();
        let back: V1 = MsgPack.decode(&newer).unwrap();
        assert_eq!(back, V1 { id: 2, name: "b".into() });
    }

    #[test]
    fn decode_payload_picks_codec_by_content_type() {
        let json = Json.encode(&V1 { id: 3, name: "j".into() }).unwrap();
        let v: V1 = decode_payload("application/json; charset=utf-8", &json).unwrap();
        assert_eq!(v.id, 3);
        let err = decode_payload::<V1>("text/csv", b"1,2").unwrap_err();
        assert!(matches!(err, CodecError::UnsupportedContentType { .. }));
        let err = decode_payload::<V1>(MsgPack::CONTENT_TYPE, b"\xc1garbage").unwrap_err();
        assert!(matches!(err, CodecError::Decode { .. }));
    }

    #[test]
    fn decode_errors_name_the_type_and_what_is_wrong() {
        #[derive(Serialize)]
        struct Partial {
            id: u64,
        }
        let bytes = MsgPack.encode(&Partial { id: 1 }).unwrap();
        let err = MsgPack.decode::<V1>(&bytes).unwrap_err().to_string();
        assert_eq!(err, "application/msgpack payload does not decode as `V1`: missing field `name`");
        let err = Json.decode::<Vec<V1>>(br#"[{"id":1}]"#).unwrap_err().to_string();
        assert!(
            err.starts_with("application/json payload does not decode as `Vec<V1>`: missing field `name`"),
            "{err}"
        );
        assert_eq!(short_type_name::<std::collections::HashMap<String, V1>>(), "HashMap<String, V1>");
    }
}
