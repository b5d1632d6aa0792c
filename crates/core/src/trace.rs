//! W3C Trace Context (`traceparent`) carried in envelopes, so one trace follows a message
//! from the publisher through every consumer and the messages they publish in turn.

use std::fmt;
use std::str::FromStr;

/// A parsed W3C `traceparent` value: `00-<trace-id>-<parent-id>-<flags>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    trace_id: u128,
    parent_id: u64,
    flags: u8,
}

impl TraceParent {
    /// Starts a new trace (random trace id and parent id, sampled).
    pub fn new_root() -> Self {
        Self { trace_id: nonzero(fastrand::u128(..)), parent_id: nonzero(fastrand::u64(..)), flags: 1 }
    }

    /// The same trace, with a new parent id: what a hop (a handler publishing onwards)
    /// writes into the messages it sends.
    pub fn child(&self) -> Self {
        Self { parent_id: nonzero(fastrand::u64(..)), ..*self }
    }

    /// The 128-bit trace id.
    pub fn trace_id(&self) -> u128 {
        self.trace_id
    }

    /// The 64-bit id of the parent span.
    pub fn parent_id(&self) -> u64 {
        self.parent_id
    }

    /// Trace flags (bit 0: sampled).
    pub fn flags(&self) -> u8 {
        self.flags
    }

    /// The trace id as 32 lowercase hex digits, as tracing backends show it.
    pub fn trace_id_hex(&self) -> String {
        format!("{:032x}", self.trace_id)
    }
}

impl TraceParent {
    /// The 55 ASCII bytes of the header value, written without allocating.
    pub fn to_ascii(&self) -> [u8; 55] {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        // Two digits per byte, most significant first.
        fn put(out: &mut [u8], bytes: &[u8]) {
            for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
                pair[0] = HEX[usize::from(b >> 4)];
                pair[1] = HEX[usize::from(b & 0xf)];
            }
        }
        let mut out = [b'-'; 55];
        out[0] = b'0';
        out[1] = b'0';
        put(&mut out[3..35], &self.trace_id.to_be_bytes());
        put(&mut out[36..52], &self.parent_id.to_be_bytes());
        put(&mut out[53..55], &[self.flags]);
        out
    }
}

/// `value`, or 1 in its place when it is 0 (all-zero ids are invalid). Cheaper than drawing
/// from `1..`, which takes a 128-bit division; the bias (one value in 2^64 or 2^128) is nil.
fn nonzero<T: Default + PartialEq + From<u8>>(value: T) -> T {
    if value == T::default() {
        T::from(1)
    } else {
        value
    }
}

impl TraceParent {
    /// Parses the 55 bytes of a version-00 value (`00-<32 hex>-<16 hex>-<2 hex>`, lowercase
    /// hex, ids not all zero) from a field's bytes: what decoding an envelope does for every
    /// message, so it reads the fixed positions directly.
    pub fn from_ascii(s: &[u8]) -> Option<Self> {
        /// The value of each lowercase hex digit; 0xff for every other byte.
        const HEX: [u8; 256] = {
            let mut t = [0xff; 256];
            let mut i = 0;
            while i < 16 {
                t[b"0123456789abcdef"[i] as usize] = i as u8;
                i += 1;
            }
            t
        };
        // Up to 16 digits: one table load and one check per digit.
        fn hex(digits: &[u8]) -> Option<u64> {
            let mut n = 0u64;
            for &b in digits {
                let v = HEX[usize::from(b)];
                if v == 0xff {
                    return None;
                }
                n = (n << 4) | u64::from(v);
            }
            Some(n)
        }
        if s.len() != 55 || &s[..3] != b"00-" || s[35] != b'-' || s[52] != b'-' {
            return None;
        }
        let trace_id = (u128::from(hex(&s[3..19])?) << 64) | u128::from(hex(&s[19..35])?);
        let parent_id = hex(&s[36..52])?;
        // Two digits: always within a u8.
        let flags = hex(&s[53..55])? as u8;
        // All-zero ids are invalid by the specification.
        if trace_id == 0 || parent_id == 0 {
            return None;
        }
        Some(Self { trace_id, parent_id, flags })
    }
}

/// The OpenTelemetry context of `span`, as a `traceparent`: what a message published inside it
/// carries. `None` without the `opentelemetry` feature, or when no `tracing-opentelemetry`
/// layer records the span.
#[doc(hidden)]
pub fn span_traceparent(span: &tracing::Span) -> Option<TraceParent> {
    #[cfg(feature = "opentelemetry")]
    if !span.is_disabled() {
        use opentelemetry::trace::TraceContextExt;
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        let cx = span.context();
        let sc = cx.span().span_context().clone();
        // Not `is_sampled`: a span a sampler dropped still carries its trace onwards.
        if sc.is_valid() {
            return Some(TraceParent {
                trace_id: u128::from_be_bytes(sc.trace_id().to_bytes()),
                parent_id: u64::from_be_bytes(sc.span_id().to_bytes()),
                flags: sc.trace_flags().to_u8(),
            });
        }
    }
    let _ = span;
    None
}

/// Makes `span` (not yet entered) continue the trace of `parent`, a remote span: as its child,
/// or with `link`, in a trace of its own that links to it. Nothing without the `opentelemetry`
/// feature or a `tracing-opentelemetry` layer.
#[doc(hidden)]
pub fn follow_remote(span: &tracing::Span, parent: TraceParent, link: bool) {
    #[cfg(feature = "opentelemetry")]
    if !span.is_disabled() {
        use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        let sc = SpanContext::new(
            TraceId::from(parent.trace_id),
            SpanId::from(parent.parent_id),
            TraceFlags::new(parent.flags),
            true,
            TraceState::default(),
        );
        if link {
            span.add_link(sc);
        } else {
            // Fails only without a layer, or for a span nobody records: nothing to follow then.
            let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(sc));
        }
    }
    let _ = (span, parent, link);
}

/// Makes `span` (not yet entered) a child of `parent` unless the span it was created in has an
/// OpenTelemetry context of its own (then `tracing`'s parent stands): what a publish span does
/// inside `in_trace`, or for an envelope that names its trace. Nothing without the
/// `opentelemetry` feature or a layer.
#[doc(hidden)]
pub fn follow_unless_traced(span: &tracing::Span, parent: Option<TraceParent>) {
    #[cfg(feature = "opentelemetry")]
    if let Some(parent) = parent.filter(|_| !span.is_disabled()) {
        use opentelemetry::trace::TraceContextExt;
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        if !tracing::Span::current().context().span().span_context().is_valid() {
            follow_remote(span, parent, false);
        }
    }
    let _ = (span, parent);
}

/// Marks `span` failed: `otel.status_code` `error` and `error.type` (fields the span declared).
#[doc(hidden)]
pub fn record_failure(span: &tracing::Span, error_type: &str) {
    span.record("otel.status_code", "error");
    span.record("error.type", error_type);
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ascii = self.to_ascii();
        // Only ASCII hex digits and dashes were written.
        f.write_str(std::str::from_utf8(&ascii).map_err(|_| fmt::Error)?)
    }
}

/// The text is not a valid version-00 `traceparent`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid traceparent")]
pub struct ParseTraceParentError;

impl FromStr for TraceParent {
    type Err = ParseTraceParentError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_ascii(s.as_bytes()).ok_or(ParseTraceParentError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_form_matches_the_formatted_one() {
        for _ in 0..100 {
            let tp = TraceParent::new_root();
            let expected = format!("00-{:032x}-{:016x}-{:02x}", tp.trace_id(), tp.parent_id(), tp.flags());
            assert_eq!(tp.to_string(), expected);
        }
    }

    #[test]
    fn round_trips_and_children_keep_the_trace() {
        let root = TraceParent::new_root();
        let text = root.to_string();
        assert_eq!(text.len(), 55);
        assert_eq!(text.parse::<TraceParent>().unwrap(), root);
        let child = root.child();
        assert_eq!(child.trace_id(), root.trace_id());
        assert_ne!(child.parent_id(), root.parent_id());
    }

    #[test]
    fn rejects_malformed_values() {
        for bad in [
            "",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-",
            "00-0af7651916cd43dd8448eb211c80319cb-7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333g-01",
            "00-+af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00_0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ] {
            assert!(bad.parse::<TraceParent>().is_err(), "{bad}");
        }
        let ok = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        assert_eq!(ok.parse::<TraceParent>().unwrap().to_string(), ok);
    }
}
