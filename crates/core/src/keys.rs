//! Every Redis key Tributary uses is built here, and nowhere else. Keys that belong to one
//! feature (tributary-rpc's reply streams) are built with the general [`Namespace::tagged_key`]
//! by that feature's crate, which states its own rules; topics a feature creates live under
//! the [`RESERVED_TOPIC_PREFIXES`].
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
        // `<ns>:<kind>:{<tag>}` (a tagged key) is the stream of topic `<tag>` in namespace
        // `<ns>:<kind>`: such a namespace could read or write another namespace's keys.
        if let Some((_, last)) = name.rsplit_once(':') {
            if KEY_KINDS.contains(&last) {
                return Err(InvalidName {
                    what: "namespace",
                    name: truncate(&name),
                    rule:
                        "it must not end with `:reply`, `:topics` or `:scheduled` (the kinds of a namespace's own keys)",
                });
            }
        }
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

    /// The namespace's registry of topics: `<ns>:topics:{all}` (sorted set of topic names
    /// scored by the order they were first registered in), so that workers subscribed to
    /// topic patterns learn of new topics without scanning the keyspace.
    pub fn topic_registry(&self) -> String {
        self.tagged_key("topics", "all")
    }

    /// The registry's counter (see [`Self::topic_registry`]): `<ns>:topics:{all}:seq`, in the
    /// registry's hash slot.
    pub fn topic_registry_seq(&self) -> String {
        format!("{}:seq", self.tagged_key("topics", "all"))
    }

    /// The registry's epoch (see [`Self::topic_registry`]): `<ns>:topics:{all}:epoch`, set when
    /// the registry starts afresh, in the registry's hash slot.
    pub fn topic_registry_epoch(&self) -> String {
        format!("{}:epoch", self.tagged_key("topics", "all"))
    }

    /// The namespace's mark of the last partitioning: `<ns>:topics:{all}:partitioned`, a value
    /// `Admin::create_topic` sets anew each time (the topic and the time), which running workers
    /// read (one `GET` each `pattern_refresh`) to find, when it changed, the topics of one
    /// stream they consume that were partitioned since. In the registry's hash slot.
    pub fn partitioning_mark(&self) -> String {
        format!("{}:partitioned", self.tagged_key("topics", "all"))
    }

    /// The namespace's index of topics with scheduled messages, by their earliest due time:
    /// `<ns>:scheduled:{due}` (sorted set of topic names scored by due milliseconds), so that
    /// movers wake when something is due instead of polling every topic.
    pub fn schedule_index(&self) -> String {
        self.tagged_key("scheduled", "due")
    }

    /// The pub/sub channel on which producers ring for a worker over many topics (a channel,
    /// not a key): `<ns>:rings`, each message the stream key that got an entry. Used on a
    /// single Redis where keyspace notifications are off (`docs/delivery.md`, "Many topics").
    pub fn rings_channel(&self) -> String {
        format!("{}:rings", self.0)
    }

    /// The retention of `topic`, as `Admin::set_retention` stores it and producers read it:
    /// `<ns>:{<topic>}:retention` (hash; fields in `docs/keys.md`).
    pub fn retention_key(&self, topic: &Topic) -> String {
        format!("{}:{{{}}}:retention", self.0, topic.0)
    }

    /// The partition count of a partitioned topic: `<ns>:{<topic>}:partitions` (a whole
    /// number, set once by `Admin::create_topic`; absent for a topic of one stream).
    pub fn partitions_key(&self, topic: &Topic) -> String {
        format!("{}:{{{}}}:partitions", self.0, topic.0)
    }

    /// The live members of `group` on partitioned `topic`, for assigning its partitions:
    /// `<ns>:{<topic>}:members:<group>` (sorted set of consumer names scored by the
    /// millisecond time their membership runs out).
    pub fn partition_members(&self, topic: &Topic, group: &str) -> String {
        format!("{}:{{{}}}:members:{group}", self.0, topic.0)
    }

    /// The lease of `group` on a partition (see [`Topic::partition`]):
    /// `<ns>:{<topic>#<p>}:lease:<group>` (string: the owner's fencing token, with an
    /// expiry), in the partition's hash slot so the scripts that settle its entries check it
    /// atomically.
    pub fn partition_lease(&self, partition: &Topic, group: &str) -> String {
        format!("{}:{{{}}}:lease:{group}", self.0, partition.0)
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

    /// As [`Namespace::topic_of_stream`], and the partition (`orders#3`, see
    /// [`Topic::parse_stored`]) when `key` is a partition's stream.
    pub fn stored_topic_of_stream(&self, key: &str) -> Option<Topic> {
        let rest = key.strip_prefix(self.0.as_str())?.strip_prefix(":{")?;
        let name = rest.strip_suffix('}')?;
        Topic::parse_stored(name).ok()
    }

    /// A key of this namespace that is not a topic's: `<ns>:<kind>:{<tag>}`, in the Redis
    /// Cluster slot of `tag`. For Tributary's own crates, e.g. tributary-rpc's reply streams
    /// (`<ns>:reply:{<client-id>}`).
    ///
    /// `kind` is one of [`KEY_KINDS`], so the key never reads as a topic key (`<ns>:{<topic>}…`,
    /// of this namespace or another); `tag` is text without braces (it would end the hash tag
    /// early). [`Namespace::tag_of`] is the inverse.
    pub fn tagged_key(&self, kind: &str, tag: &str) -> String {
        debug_assert!(KEY_KINDS.contains(&kind), "kind `{kind}` is not in KEY_KINDS");
        format!("{}:{kind}:{{{tag}}}", self.0)
    }

    /// The tag of `key` when `key` is `<ns>:<kind>:{<tag>}` of this namespace (the shape
    /// [`Namespace::tagged_key`] builds) with a tag that is not empty and has no braces;
    /// `None` otherwise. Borrows from `key`, allocates nothing.
    pub fn tag_of<'k>(&self, kind: &str, key: &'k str) -> Option<&'k str> {
        let tag = key
            .strip_prefix(self.0.as_str())?
            .strip_prefix(':')?
            .strip_prefix(kind)?
            .strip_prefix(":{")?
            .strip_suffix('}')?;
        (!tag.is_empty() && !tag.contains(['{', '}'])).then_some(tag)
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The `kind`s of [`Namespace::tagged_key`]: `reply` (tributary-rpc's reply streams), `topics`
/// (the registry of topics), `scheduled` (the due index). A namespace must not end with
/// `:<kind>` ([`Namespace::new`] refuses it), so no tagged key is another namespace's topic key.
pub const KEY_KINDS: &[&str] = &["reply", "topics", "scheduled"];

/// Prefixes of the topics Tributary's own crates create: `rpc.` (tributary-rpc's request
/// topics, `rpc.<service>`). A topic under one of them is *reserved*: it belongs to that
/// feature, and a [`TopicPattern`] reaches it only when the pattern itself starts with its
/// prefix (see [`TopicPattern::permits`]), so a worker of `*` never consumes RPC requests
/// while `rpc.*` still finds every request topic.
///
/// A fixed list rather than something a crate registers at run time: every process must
/// agree on the rule, including a worker that does not link the crate owning the topics.
/// Adding a prefix changes what existing patterns match, so it is a breaking change.
pub const RESERVED_TOPIC_PREFIXES: &[&str] = &["rpc."];

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

    /// Partition `index` of this topic: the topic `<name>#<index>`, whose keys have a hash tag
    /// of their own (so a topic's partitions spread over a cluster's shards). `#` is not a
    /// character of topic names, so no topic a user names is a partition.
    pub fn partition(&self, index: u32) -> Topic {
        Topic(format!("{}#{index}", self.0))
    }

    /// The topic and index of a partition ([`Topic::partition`]); `None` for a topic.
    pub fn partition_of(&self) -> Option<(&str, u32)> {
        let (name, index) = self.0.rsplit_once('#')?;
        Some((name, index.parse().ok()?))
    }

    /// The topic a partition belongs to, or this topic when it is not a partition.
    pub fn parent(&self) -> Topic {
        match self.partition_of() {
            Some((name, _)) => Topic(name.to_owned()),
            None => self.clone(),
        }
    }

    /// A topic or a partition (`<topic>#<index>`) as Tributary stores its name (in the due
    /// index of scheduled messages, in dead letters): [`Topic::new`], which refuses partitions,
    /// is for names users give.
    ///
    /// # Errors
    /// [`InvalidName`] when the name is neither.
    pub fn parse_stored(name: impl Into<String>) -> Result<Self, InvalidName> {
        let name = name.into();
        if let Some((topic, index)) = name.rsplit_once('#') {
            // The name `Topic::partition` gives: no leading zero, below the most partitions.
            let canonical =
                index.parse::<u32>().is_ok_and(|p| p < crate::partition::MAX_PARTITIONS && p.to_string() == index);
            if canonical {
                validate("topic", topic, 200)?;
                return Ok(Self(name));
            }
        }
        Self::new(name)
    }

    /// The entry of [`RESERVED_TOPIC_PREFIXES`] this topic's name starts with, if any.
    pub fn reserved_prefix(&self) -> Option<&'static str> {
        RESERVED_TOPIC_PREFIXES.iter().copied().find(|p| self.0.starts_with(p))
    }

    /// True when the topic is under one of the [`RESERVED_TOPIC_PREFIXES`].
    pub fn is_reserved(&self) -> bool {
        self.reserved_prefix().is_some()
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
            return Err(InvalidName { what: "topic pattern", name: truncate(&pattern), rule: CHARACTERS });
        }
        // Redis matches the pattern inside `<ns>:{...}`: an unclosed set, or a range ending
        // in `]`, would take in the closing brace there and match differently from here.
        if !sets_are_closed(pattern.as_bytes()) {
            return Err(InvalidName {
                what: "topic pattern",
                name: truncate(&pattern),
                rule: "close every `[` set with `]`, and do not end a range with `]`",
            });
        }
        Ok(Self(pattern))
    }

    /// The pattern as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the rule for reserved topics lets this pattern reach `topic`: true for a topic
    /// under none of the [`RESERVED_TOPIC_PREFIXES`], and for one under a prefix this pattern
    /// itself starts with (`rpc.*` reaches `rpc.billing`, `*` and `rpc*` do not).
    ///
    /// The glob is not evaluated here: Redis does that (`SCAN MATCH` with
    /// [`Namespace::topic_stream_pattern`]), and of the topics it finds, those this permits
    /// are the pattern's topics. Per topic rather than per pattern, so each reserved prefix
    /// stays reachable only by patterns written for it.
    pub fn permits(&self, topic: &Topic) -> bool {
        topic.reserved_prefix().map_or(true, |prefix| self.0.starts_with(prefix))
    }

    /// Whether `topic` matches this glob, as Redis' `SCAN MATCH` would match its stream key:
    /// `*` any run of characters, `?` one, `[abc]`, `[a-z]` and `[^abc]` one of (or not of) a
    /// set. (The reserved-topics rule is [`Self::permits`]; a pattern's topics are those that
    /// match and that it permits.)
    pub fn matches(&self, topic: &Topic) -> bool {
        glob_matches(self.0.as_bytes(), topic.0.as_bytes())
    }
}

/// Every `[` set closed by a `]` that does not end a range (`[a-]` is not closed).
fn sets_are_closed(pattern: &[u8]) -> bool {
    let mut i = 0;
    while i < pattern.len() {
        if pattern[i] == b'[' {
            i += 1;
            if pattern.get(i) == Some(&b'^') {
                i += 1;
            }
            loop {
                match pattern.get(i) {
                    None => return false,
                    Some(b']') => break,
                    Some(_) if pattern.get(i + 1) == Some(&b'-') => {
                        if matches!(pattern.get(i + 2), None | Some(b']')) {
                            return false;
                        }
                        i += 3;
                    }
                    Some(_) => i += 1,
                }
            }
        }
        i += 1;
    }
    true
}

/// Redis' glob (`stringmatchlen`, case-sensitive) over the characters a pattern may have (no
/// `\` escapes): `*` with backtracking to the last star, the rest one character at a time.
fn glob_matches(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // Where the last `*` was, and the text position it is currently matched up to.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if pattern.get(p) == Some(&b'*') {
            star = Some((p, t));
            p += 1;
            continue;
        }
        if p < pattern.len() {
            let (matched, next) = match_one(pattern, p, text[t]);
            if matched {
                p = next;
                t += 1;
                continue;
            }
        }
        match star {
            // Let the last star take one more character, and try again after it.
            Some((star_p, star_t)) => {
                star = Some((star_p, star_t + 1));
                p = star_p + 1;
                t = star_t + 1;
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Whether the pattern element at `p` (a literal, `?` or a `[...]` set) matches `c`, and where
/// the next element starts.
fn match_one(pattern: &[u8], p: usize, c: u8) -> (bool, usize) {
    match pattern[p] {
        b'?' => (true, p + 1),
        b'[' => {
            let mut i = p + 1;
            let negate = pattern.get(i) == Some(&b'^');
            if negate {
                i += 1;
            }
            let mut matched = false;
            // An unclosed set runs to the end of the pattern, as in Redis.
            while i < pattern.len() {
                if pattern[i] == b']' {
                    i += 1;
                    break;
                }
                if i + 2 < pattern.len() && pattern[i + 1] == b'-' {
                    let (a, b) = (pattern[i].min(pattern[i + 2]), pattern[i].max(pattern[i + 2]));
                    matched |= (a..=b).contains(&c);
                    i += 3;
                } else {
                    matched |= pattern[i] == c;
                    i += 1;
                }
            }
            (matched != negate, i)
        }
        literal => (literal == c, p + 1),
    }
}

impl fmt::Display for TopicPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A name that cannot be used in a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} name `{name}`: {rule}")]
pub struct InvalidName {
    what: &'static str,
    name: String,
    rule: &'static str,
}

/// The rule most names break.
const CHARACTERS: &str = "use 1 to 200 characters of A-Z a-z 0-9 . _ - : /";

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '/')
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

fn validate(what: &'static str, name: &str, max: usize) -> Result<(), InvalidName> {
    if name.is_empty() || name.len() > max || !name.chars().all(is_name_char) {
        return Err(InvalidName { what, name: truncate(name), rule: CHARACTERS });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_topics_as_redis_globs_do() {
        let m = |p: &str, t: &str| TopicPattern::new(p).unwrap().matches(&Topic::new(t).unwrap());
        assert!(m("orders.*", "orders.eu"));
        assert!(m("orders.*", "orders."));
        assert!(!m("orders.*", "orders"));
        assert!(m("*", "x"));
        assert!(m("*.*.temp", "a.b.temp"));
        assert!(!m("*.*.temp", "a.temp"));
        assert!(m("sensor.?.temp", "sensor.1.temp"));
        assert!(!m("sensor.?.temp", "sensor.12.temp"));
        assert!(m("audit.[ab]*", "audit.b-2"));
        assert!(!m("audit.[ab]*", "audit.c"));
        assert!(m("audit.[^ab]*", "audit.c"));
        assert!(!m("audit.[^ab]*", "audit.a"));
        assert!(m("v[0-9]", "v7"));
        assert!(m("v[9-0]", "v7"), "a reversed range is the same range, as in Redis");
        assert!(!m("v[0-9]", "vx"));
        assert!(m("*a*b", "xxaxxbxb"));
        assert!(!m("*a*b", "xxaxxbx"));
        assert!(m("a**", "a"));
        for unclosed in ["[ab", "a.[^b", "v[a-]", "v[a-"] {
            assert!(TopicPattern::new(unclosed).is_err(), "{unclosed}");
        }
    }

    #[test]
    fn keys_of_a_topic_share_one_hash_tag() {
        let ns = Namespace::default();
        let t = Topic::new("orders").unwrap();
        assert_eq!(ns.topic_stream(&t), "tributary:{orders}");
        assert_eq!(ns.dead_letter_stream(&t), "tributary:{orders}:dlq");
        assert_eq!(ns.dedup_key(&t, "k1"), "tributary:{orders}:dedup:k1");
        assert_eq!(ns.retention_key(&t), "tributary:{orders}:retention");
        assert_eq!(ns.topic_of_stream("tributary:{orders}:retention"), None);
        assert_eq!(ns.topic_of_stream("tributary:{orders}"), Some(t));
        assert_eq!(ns.topic_of_stream("tributary:{orders}:dlq"), None);
        assert_eq!(ns.topic_of_stream("other:{orders}"), None);
    }

    #[test]
    fn a_tagged_key_gives_back_its_tag_and_nothing_else_does() {
        let ns = Namespace::default();
        let key = ns.tagged_key("reply", "0193-abc");
        assert_eq!(key, "tributary:reply:{0193-abc}");
        assert_eq!(ns.tag_of("reply", &key), Some("0193-abc"));
        for other in [
            "tributary:{orders}",
            "tributary:reply:{x}:more",
            "tributary:reply:{}",
            "tributary:reply:{a}b}",
            "tributary:replys:{x}",
            "tributary:other:{x}",
            "other:lease:{x}",
            "tributary:reply:x",
        ] {
            assert_eq!(ns.tag_of("reply", other), None, "{other}");
        }
    }

    #[test]
    fn a_namespace_cannot_end_with_the_kind_of_a_tagged_key() {
        for kind in KEY_KINDS {
            // `a:<kind>:{x}` would be both a tagged key of `a` and topic `x` of `a:<kind>`.
            let err = Namespace::new(format!("a:{kind}")).unwrap_err();
            assert!(err.to_string().contains("must not end with"), "{err}");
            assert!(Namespace::new(*kind).is_ok(), "alone, `{kind}` is a name like any other");
            assert!(Namespace::new(format!("a:{kind}s")).is_ok());
        }
    }

    #[test]
    fn patterns_reach_reserved_topics_only_when_they_start_with_the_prefix() {
        let prefix = RESERVED_TOPIC_PREFIXES[0];
        let reserved = Topic::new(format!("{prefix}billing")).unwrap();
        let plain = Topic::new("orders").unwrap();
        assert_eq!(reserved.reserved_prefix(), Some(prefix));
        assert!(reserved.is_reserved());
        assert!(!plain.is_reserved());
        let everything = TopicPattern::new("*").unwrap();
        assert!(everything.permits(&plain));
        assert!(!everything.permits(&reserved));
        // The whole prefix, not a pattern that would also match it.
        let almost = &prefix[..prefix.len() - 1];
        assert!(!TopicPattern::new(format!("{almost}*")).unwrap().permits(&reserved));
        let under_prefix = TopicPattern::new(format!("{prefix}*")).unwrap();
        assert!(under_prefix.permits(&reserved));
        assert!(under_prefix.permits(&plain));
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

    #[test]
    fn partitions_are_topics_no_user_can_name_with_keys_of_their_own() {
        let orders = Topic::new("orders").unwrap();
        let p3 = orders.partition(3);
        assert_eq!(p3.as_str(), "orders#3");
        assert!(Topic::new("orders#3").is_err(), "users cannot name a partition");
        assert_eq!(p3.partition_of(), Some(("orders", 3)));
        assert_eq!(orders.partition_of(), None);
        assert_eq!(p3.parent(), orders);
        assert_eq!(Topic::parse_stored("orders#3").unwrap(), p3);
        assert_eq!(Topic::parse_stored("orders").unwrap(), orders);
        for bad in ["orders#", "orders#x", "or{d}ers#1", "#1", "orders#12345", "orders#01", "orders#1024"] {
            assert!(Topic::parse_stored(bad).is_err(), "{bad}");
        }
        let ns = Namespace::default();
        assert_eq!(ns.topic_stream(&p3), "tributary:{orders#3}");
        assert_eq!(ns.partition_lease(&p3, "billing"), "tributary:{orders#3}:lease:billing");
        assert_eq!(ns.partitions_key(&orders), "tributary:{orders}:partitions");
        assert_eq!(ns.partition_members(&orders, "billing"), "tributary:{orders}:members:billing");
        assert_eq!(ns.topic_of_stream("tributary:{orders#3}"), None, "a partition is not a topic of its own");
        assert_eq!(ns.stored_topic_of_stream("tributary:{orders#3}"), Some(p3));
        assert_eq!(ns.stored_topic_of_stream("tributary:{orders}"), Some(orders));
        assert_eq!(ns.stored_topic_of_stream("tributary:{orders#3}:scheduled"), None);
    }
}
