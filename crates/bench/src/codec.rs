//! Envelope encode/decode workloads, shared by the `codec` scenario and the criterion bench
//! (`benches/codec.rs`).
//!
//! - Tributary: [`Envelope::encode`] with MessagePack (named fields), then
//!   [`wire::encode`] into stream entry fields; back with [`wire::decode`] and
//!   [`Envelope::decode`].
//! - serde_json: the same metadata (id, type, content type, time, key, trace context) and the
//!   message in one JSON document, as a hand-rolled JSON envelope would be.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tributary::{wire, Envelope, MessageId, MsgPack, TraceParent};

/// A typical event: an order with a few line items (~150 bytes as MessagePack).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderPlaced {
    /// Order number.
    pub id: u64,
    /// Customer reference.
    pub customer: String,
    /// Line items.
    pub items: Vec<Item>,
    /// Order total.
    pub total_cents: u64,
    /// Free text.
    pub note: Option<String>,
}

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    /// Article.
    pub sku: String,
    /// Quantity.
    pub qty: u32,
    /// Unit price.
    pub cents: u64,
}

/// The sample message.
pub fn sample() -> OrderPlaced {
    OrderPlaced {
        id: 1_234_567,
        customer: "customer-0042".to_owned(),
        items: (0..3).map(|i| Item { sku: format!("SKU-{i:05}"), qty: i + 1, cents: 1_990 }).collect(),
        total_cents: 11_940,
        note: Some("leave at the door".to_owned()),
    }
}

/// Tributary: a new envelope for `msg` (id, time, trace context, key) as stream entry fields.
///
/// # Panics
/// Never for the sample message (it is far below every limit).
pub fn tributary_encode(msg: &OrderPlaced, tp: TraceParent) -> Vec<(Bytes, Bytes)> {
    let env = Envelope::encode(&MsgPack, msg).expect("encodes").with_key("customer-0042").with_traceparent(tp);
    wire::encode(&env, &wire::Limits::default()).expect("within limits")
}

/// Tributary: stream entry fields back to the envelope and the message.
///
/// # Panics
/// When `fields` are not a valid envelope of an `OrderPlaced`.
pub fn tributary_decode(fields: &[(Bytes, Bytes)]) -> (Envelope, OrderPlaced) {
    let env = wire::decode(fields, &wire::Limits::default()).expect("valid envelope");
    let msg = env.decode().expect("valid payload");
    (env, msg)
}

/// The JSON envelope: the same metadata as Tributary's, the message inline.
#[derive(Debug, Serialize, Deserialize)]
pub struct JsonEnvelope<T> {
    /// Message id (UUID text).
    pub id: String,
    /// Type name.
    #[serde(rename = "type")]
    pub type_name: String,
    /// Content type.
    pub ct: String,
    /// Publish time, ms since the epoch.
    pub ts: u64,
    /// Partition key.
    pub key: Option<String>,
    /// W3C traceparent.
    pub tp: Option<String>,
    /// The message.
    pub payload: T,
}

/// serde_json: a new envelope for `msg` as one JSON document.
///
/// # Panics
/// Never for the sample message.
pub fn json_encode(msg: &OrderPlaced, tp: TraceParent) -> Vec<u8> {
    let env = JsonEnvelope {
        id: MessageId::new().to_string(),
        type_name: "OrderPlaced".to_owned(),
        ct: "application/json".to_owned(),
        ts: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
        key: Some("customer-0042".to_owned()),
        tp: Some(tp.to_string()),
        payload: msg,
    };
    serde_json::to_vec(&env).expect("encodes")
}

/// serde_json: the document back to the envelope and the message.
///
/// # Panics
/// When `bytes` are not a JSON envelope of an `OrderPlaced`.
pub fn json_decode(bytes: &[u8]) -> JsonEnvelope<OrderPlaced> {
    serde_json::from_slice(bytes).expect("valid JSON envelope")
}

/// Size of the Tributary fields (names and values).
pub fn fields_len(fields: &[(Bytes, Bytes)]) -> usize {
    fields.iter().map(|(k, v)| k.len() + v.len()).sum()
}

/// Nanoseconds per call of `f` over `iterations` calls.
pub fn time_per_op(iterations: u64, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..iterations {
        f();
    }
    start.elapsed().as_nanos() as f64 / iterations.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_codecs_round_trip_the_sample() {
        let tp = TraceParent::new_root();
        let (env, msg) = tributary_decode(&tributary_encode(&sample(), tp));
        assert_eq!(msg, sample());
        assert_eq!(env.traceparent, Some(tp));
        let json = json_decode(&json_encode(&sample(), tp));
        assert_eq!(json.payload, sample());
        assert_eq!(json.tp, Some(tp.to_string()));
    }
}
