//! The Redis keys of RPC (see `docs/keys.md`), built with the general rules of
//! [`tributary_core::keys`].
//!
//! - The requests of service `S` are the topic `rpc.S` (stream `<ns>:{rpc.S}`). `rpc.` is one
//!   of core's [`RESERVED_TOPIC_PREFIXES`], so a worker's `*` pattern never consumes requests.
//! - The replies to one client instance are the stream `<ns>:reply:{<client-id>}`, in the slot
//!   of the client id.
//!
//! ```
//! use tributary_core::Namespace;
//! use tributary_rpc::keys;
//!
//! let ns = Namespace::default();
//! let topic = keys::request_topic("billing")?;
//! assert_eq!(ns.topic_stream(&topic), "tributary:{rpc.billing}");
//! assert!(keys::is_reply_stream(&ns, &keys::reply_stream(&ns, "0193-abc")));
//! # Ok::<(), tributary_core::InvalidName>(())
//! ```
//!
//! [`RESERVED_TOPIC_PREFIXES`]: tributary_core::keys::RESERVED_TOPIC_PREFIXES

use tributary_core::{InvalidName, Namespace, Topic};

/// What the name of every request topic starts with: `rpc.` (the topic of service `S` is
/// `rpc.S`).
pub const REQUEST_TOPIC_PREFIX: &str = "rpc.";

/// The `kind` of reply streams in [`Namespace::tagged_key`]: `<ns>:reply:{<client-id>}`.
const REPLY_KIND: &str = "reply";

/// The topic carrying the requests of service `service`: `rpc.<service>`, whose stream is
/// `<ns>:{rpc.<service>}`.
///
/// # Errors
/// [`InvalidName`] when `rpc.<service>` is not a valid topic name.
pub fn request_topic(service: &str) -> Result<Topic, InvalidName> {
    Topic::new(format!("{REQUEST_TOPIC_PREFIX}{service}"))
}

/// True when `topic` carries the requests of a service (`rpc.<service>`).
pub fn is_request_topic(topic: &Topic) -> bool {
    topic.as_str().starts_with(REQUEST_TOPIC_PREFIX)
}

/// The reply stream of one client instance: `<ns>:reply:{<client-id>}`.
pub fn reply_stream(ns: &Namespace, client_id: &str) -> String {
    ns.tagged_key(REPLY_KIND, client_id)
}

/// True when `key` is a reply stream of namespace `ns`: `<ns>:reply:{<id>}` with an id of 1
/// to 64 characters of `A-Z a-z 0-9 -`. The only keys a server writes replies to.
pub fn is_reply_stream(ns: &Namespace, key: &str) -> bool {
    // Runs for every request: borrows, allocates nothing.
    ns.tag_of(REPLY_KIND, key)
        .is_some_and(|id| id.len() <= 64 && id.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-'))
}

#[cfg(test)]
mod tests {
    use tributary_core::keys::RESERVED_TOPIC_PREFIXES;

    use super::*;

    #[test]
    fn request_topics_are_reserved_topics_of_the_namespace() {
        let ns = Namespace::default();
        let topic = request_topic("billing").unwrap();
        assert_eq!(ns.topic_stream(&topic), "tributary:{rpc.billing}");
        assert!(is_request_topic(&topic));
        assert!(!is_request_topic(&Topic::new("billing").unwrap()));
        assert!(RESERVED_TOPIC_PREFIXES.contains(&REQUEST_TOPIC_PREFIX));
        assert_eq!(topic.reserved_prefix(), Some(REQUEST_TOPIC_PREFIX));
        assert!(request_topic("a b").is_err());
    }

    #[test]
    fn only_reply_streams_of_the_namespace_are_reply_streams() {
        let ns = Namespace::default();
        assert_eq!(reply_stream(&ns, "0193-abc"), "tributary:reply:{0193-abc}");
        assert!(is_reply_stream(&ns, &reply_stream(&ns, "0193-abc")));
        assert!(is_reply_stream(&ns, &reply_stream(&ns, &"a".repeat(64))));
        for forged in [
            "tributary:{orders}",
            "tributary:reply:{x}:more",
            "tributary:reply:{}",
            "other:reply:{x}",
            "tributary:reply:{a b}",
            "tributary:reply:{a}b}",
            &reply_stream(&ns, &"a".repeat(65)),
        ] {
            assert!(!is_reply_stream(&ns, forged), "{forged}");
        }
    }
}
