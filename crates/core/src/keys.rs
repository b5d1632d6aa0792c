//! Every Redis key Tributary uses is built here, and nowhere else.
//!
//! All keys of one topic share the Redis Cluster hash tag `{<topic>}`, so scripts and
//! transactions that touch a topic's stream, dead-letter stream and de-duplication keys stay
//! in one slot. See `docs/keys.md`.

use std::fmt;

/// The namespace prefix of every key (default `tributary`).
///
/// Two applications sharing one Redis keep apart by using different namespaces; tests use a
/// unique namespace each.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Namespace(String);

impl Default for Namespace {
    fn default() -> Self {
        Self("tributary".to_owned())
    }
}

impl Namespace {
    /// A namespace.
    ///
    /// # Errors
    /// [`InvalidName`] when `name` is empty, longer than 100 bytes or contains characters
    /// outside `A-Z a-z 0-9 . _ - : /`.
    pub fn new(name: impl Into<String>) -> Result<Self, InvalidName> {
        let name = name.into();
        validate("namespace", &name, 100)?;
        Ok(Self(name))
    }

    /// The prefix as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The stream of `topic`: `<ns>:{<topic>}`.
    pub fn topic_stream(&self, topic: &Topic) -> String {
        format!("{}:{{{}}}", self.0, topic.0)
    }

    /// The dead-letter stream of `topic`: `<ns>:{<topic>}:dlq`.
    pub fn dead_letter_stream(&self, topic: &Topic) -> String {
        format!("{}:{{{}}}:dlq", self.0, topic.0)
    }

    /// The de-duplication key of an idempotent publish: `<ns>:{<topic>}:dedup:<key>`.
    pub fn dedup_key(&self, topic: &Topic, idempotency_key: &str) -> String {
        format!("{}:{{{}}}:dedup:{}", self.0, topic.0, idempotency_key)
    }

    /// Scheduled (delayed) messages of `topic`, by due time: `<ns>:{<topic>}:scheduled`
    /// (sorted set of schedule ids scored by due milliseconds).
    pub fn scheduled_set(&self, topic: &Topic) -> String {
        format!("{}:{{{}}}:scheduled", self.0, topic.0)
    }

    /// The entries of scheduled messages: `<ns>:{<topic>}:scheduled:data` (hash of schedule id
    /// to the packed entry fields).
    pub fn scheduled_data(&self, topic: &Topic) -> String {
        format!("{}:{{{}}}:scheduled:data", self.0, topic.0)
    }

    /// A `SCAN MATCH` pattern for the streams of topics matching the glob `pattern`.
    pub fn topic_stream_pattern(&self, pattern: &TopicPattern) -> String {
        format!("{}:{{{}}}", self.0, pattern.0)
    }

    /// The topic whose stream is `key`, if `key` is a topic stream of this namespace.
    pub fn topic_of_stream(&self, key: &str) -> Option<Topic> {
        let rest = key.strip_prefix(self.0.as_str())?.strip_prefix(":{")?;
        let name = rest.strip_suffix('}')?;
        Topic::new(name).ok()
    }

    /// The topic carrying the requests of RPC service `service`: `rpc.<service>`, whose
    /// stream is `<ns>:{rpc.<service>}`.
    ///
    /// # Errors
    /// [`InvalidName`] when the service name is not a valid topic name.
    pub fn rpc_topic(&self, service: &str) -> Result<Topic, InvalidName> {
        Topic::new(format!("{RPC_TOPIC_PREFIX}{service}"))
    }

    /// Prefix under which every RPC reply stream lives: `<ns>:reply:`.
    pub fn reply_prefix(&self) -> String {
        format!("{}{REPLY_SEGMENT}", self.0)
    }

    /// The reply stream of one RPC client instance: `<ns>:reply:{<client-id>}`.
    pub fn reply_stream(&self, client_id: &str) -> String {
        format!("{}{REPLY_SEGMENT}{{{}}}", self.0, client_id)
    }

    /// True when `key` is a reply stream of this namespace (`<ns>:reply:{<id>}` with an id of
    /// `A-Z a-z 0-9 -`): the only keys an RPC server writes replies to.
    pub fn is_reply_stream(&self, key: &str) -> bool {
        // `<ns>:reply:` checked piecewise: this runs for every RPC request.
        key.strip_prefix(self.0.as_str())
            .and_then(|rest| rest.strip_prefix(REPLY_SEGMENT))
            .and_then(|rest| rest.strip_prefix('{'))
            .and_then(|rest| rest.strip_suffix('}'))
            .is_some_and(|id| {
                !id.is_empty() && id.len() <= 64 && id.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
            })
    }
}

/// What follows the namespace in a reply stream's key.
const REPLY_SEGMENT: &str = ":reply:";

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Topics whose names start with this carry RPC requests; topic patterns skip them unless
/// the pattern itself starts with it.
pub const RPC_TOPIC_PREFIX: &str = "rpc.";

/// A validated topic name: 1..=200 bytes of `A-Z a-z 0-9 . _ - : /`.
///
/// Braces are excluded because they would break the hash tag, glob characters because topic
/// patterns use them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Topic(String);

impl Topic {
    /// A topic name.
    ///
    /// # Errors
    /// [`InvalidName`] when the name breaks the rules above.
    pub fn new(name: impl Into<String>) -> Result<Self, InvalidName> {
        let name = name.into();
        validate("topic", &name, 200)?;
        Ok(Self(name))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<&str> for Topic {
    type Error = InvalidName;
    fn try_from(value: &str) -> Result<Self, Self::Error> {
        Topic::new(value)
    }
}

impl TryFrom<String> for Topic {
    type Error = InvalidName;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Topic::new(value)
    }
}

impl TryFrom<&Topic> for Topic {
    type Error = InvalidName;
    fn try_from(value: &Topic) -> Result<Self, Self::Error> {
        Ok(value.clone())
    }
}

/// A glob over topic names, the durable counterpart of `PSUBSCRIBE`: `orders.*`,
/// `sensor.?.temp`, `audit.[ab]*`. Same characters as a topic plus `* ? [ ] ^`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TopicPattern(String);

impl TopicPattern {
    /// A topic pattern.
    ///
    /// # Errors
    /// [`InvalidName`] when the pattern is empty, too long or has other characters.
    pub fn new(pattern: impl Into<String>) -> Result<Self, InvalidName> {
        let pattern = pattern.into();
        let ok = !pattern.is_empty()
            && pattern.len() <= 200
            && pattern.chars().all(|c| is_name_char(c) || matches!(c, '*' | '?' | '[' | ']' | '^'));
        if !ok {
            return Err(InvalidName { what: "topic pattern", name: truncate(&pattern) });
        }
        Ok(Self(pattern))
    }

    /// The pattern as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TopicPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A name that cannot be used in a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} name `{name}`: use 1 to 200 characters of A-Z a-z 0-9 . _ - : /")]
pub struct InvalidName {
    what: &'static str,
    name: String,
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '/')
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

fn validate(what: &'static str, name: &str, max: usize) -> Result<(), InvalidName> {
    if name.is_empty() || name.len() > max || !name.chars().all(is_name_char) {
        return Err(InvalidName { what, name: truncate(name) });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_a_topic_share_one_hash_tag() {
        let ns = Namespace::default();
        let t = Topic::new("orders").unwrap();
        assert_eq!(ns.topic_stream(&t), "tributary:{orders}");
        assert_eq!(ns.dead_letter_stream(&t), "tributary:{orders}:dlq");
        assert_eq!(ns.dedup_key(&t, "k1"), "tributary:{orders}:dedup:k1");
        assert_eq!(ns.topic_of_stream("tributary:{orders}"), Some(t));
        assert_eq!(ns.topic_of_stream("tributary:{orders}:dlq"), None);
        assert_eq!(ns.topic_of_stream("other:{orders}"), None);
        assert_eq!(ns.topic_stream(&ns.rpc_topic("billing").unwrap()), "tributary:{rpc.billing}");
        assert!(ns.is_reply_stream(&ns.reply_stream("0193-abc")));
        for forged in [
            "tributary:{orders}",
            "tributary:reply:{x}:more",
            "tributary:reply:{}",
            "other:reply:{x}",
            "tributary:reply:{a b}",
        ] {
            assert!(!ns.is_reply_stream(forged), "{forged}");
        }
    }

    #[test]
    fn names_that_would_break_keys_are_rejected() {
        for bad in ["", "a{b", "a}b", "a b", "a*", "ä", &"x".repeat(201)] {
            assert!(Topic::new(bad).is_err(), "{bad}");
        }
        assert!(Topic::new("orders.eu-west/v2:created_at").is_ok());
        assert!(TopicPattern::new("orders.*").is_ok());
        assert!(TopicPattern::new("orders.{x}").is_err());
        assert!(Namespace::new("my app").is_err());
    }
}
