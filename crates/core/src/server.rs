//! Which server a [`Connection`](crate::Connection) talks to: Redis, Valkey or another server
//! that speaks the protocol, and its version, as `HELLO` tells at connect (every user may run
//! `HELLO`, whatever its ACL; `INFO` needs a permission the least-privilege user lacks).
//!
//! Tributary refuses a server older than [`MINIMUM_REDIS`]: it would fail later, on the first
//! command it does not know, in the middle of a deploy.

use std::fmt;

use fred::types::Value;

/// The oldest Redis release Tributary runs on, and the one the whole test suite runs against.
///
/// Older releases lack commands and replies the framework relies on: `XPENDING ... IDLE`
/// (reclaiming a dead consumer's messages) and `XADD ... NOMKSTREAM`/`MINID` (RPC replies,
/// retention by age) came in 6.2; `XINFO GROUPS`' `lag` and `entries-read` and `XINFO STREAM`'s
/// `entries-added` (the lag an operator watches) in 7.0.
pub const MINIMUM_REDIS: ServerVersion = ServerVersion::new(7, 0, 0);

/// What answered a connection's `HELLO`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    kind: ServerKind,
    name: String,
    version: Option<ServerVersion>,
}

/// The server family, from `HELLO`'s `server` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ServerKind {
    /// Redis (`server: redis`).
    Redis,
    /// Valkey (`server: valkey`), the Linux Foundation's fork of Redis 7.2.4.
    Valkey,
    /// Another server that speaks the protocol (a proxy, a managed service's own build), or
    /// one that did not answer `HELLO`: not tested; refused only when the version it gives is
    /// below [`MINIMUM_REDIS`].
    Other,
}

impl ServerInfo {
    /// Reads `HELLO`'s reply (a map, or the flat list of names and values RESP2 sends).
    pub(crate) fn from_hello(reply: &Value) -> Self {
        let field = |name: &str| -> Option<String> {
            match reply {
                Value::Map(map) => map.iter().find(|(k, _)| k.as_str() == Some(name)).and_then(|(_, v)| v.as_string()),
                Value::Array(items) => items
                    .chunks(2)
                    .find(|kv| kv[0].as_str().as_deref() == Some(name))
                    .and_then(|kv| kv.get(1)?.as_string()),
                _ => None,
            }
        };
        let name = field("server").unwrap_or_default();
        let kind = match name.to_ascii_lowercase().as_str() {
            "redis" => ServerKind::Redis,
            "valkey" => ServerKind::Valkey,
            _ => ServerKind::Other,
        };
        let version = field("version").as_deref().and_then(ServerVersion::parse);
        Self { kind, name, version }
    }

    /// Reads `INFO server`'s text (asked when `HELLO` was not answered): `None` when it names
    /// no version.
    pub(crate) fn from_info(text: &str) -> Option<Self> {
        let field = |name: &str| {
            text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(':')).map(|v| v.trim().to_owned())
        };
        let name = field("server_name").unwrap_or_else(|| "redis".to_owned());
        let kind = if name == "valkey" { ServerKind::Valkey } else { ServerKind::Redis };
        let version = match kind {
            ServerKind::Valkey => field("valkey_version"),
            _ => field("redis_version"),
        };
        let version = Some(ServerVersion::parse(&version?)?);
        Some(Self { kind, name, version })
    }

    /// A server that would not say (`HELLO` failed for a reason other than age).
    pub(crate) fn unknown() -> Self {
        Self { kind: ServerKind::Other, name: String::new(), version: None }
    }

    /// The server family.
    pub fn kind(&self) -> ServerKind {
        self.kind
    }

    /// The server's name as it gave it (`redis`, `valkey`, ...); empty when it gave none.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The server's own version (Valkey's, for Valkey), when it gave one.
    pub fn version(&self) -> Option<ServerVersion> {
        self.version
    }

    /// The Redis release whose commands the server answers: Redis' own version; for Valkey,
    /// 7.2 (every Valkey release implements Redis 7.2.4's commands); for other servers, the
    /// version they gave, taken as a Redis version.
    pub fn redis_compatible(&self) -> Option<ServerVersion> {
        match self.kind {
            ServerKind::Valkey => Some(ServerVersion::new(7, 2, 4)),
            _ => self.version,
        }
    }

    /// Whether Tributary can run on this server: an error naming the minimum and why when it
    /// is older than [`MINIMUM_REDIS`]. A server whose version is unknown is given the benefit
    /// of the doubt.
    pub(crate) fn check(&self) -> Result<(), String> {
        match self.redis_compatible() {
            Some(v) if v < MINIMUM_REDIS => Err(format!(
                "{self} is too old: Tributary needs Redis {}.{} or later (or any Valkey); it reads \
                 consumer-group lag from XINFO GROUPS (Redis 7.0) and relies on XPENDING ... IDLE and \
                 XADD ... NOMKSTREAM and MINID (Redis 6.2)",
                MINIMUM_REDIS.major, MINIMUM_REDIS.minor
            )),
            _ => Ok(()),
        }
    }
}

impl fmt::Display for ServerInfo {
    /// `Redis 7.0.15`, `Valkey 8.1.8`, or the name and version another server gave.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.kind {
            ServerKind::Redis => "Redis",
            ServerKind::Valkey => "Valkey",
            ServerKind::Other if self.name.is_empty() => "an unknown server",
            ServerKind::Other => &self.name,
        };
        match self.version {
            Some(v) => write!(f, "{name} {v}"),
            None => f.write_str(name),
        }
    }
}

/// A server version, `major.minor.patch`; ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub struct ServerVersion {
    /// Major version.
    pub major: u16,
    /// Minor version.
    pub minor: u16,
    /// Patch level.
    pub patch: u16,
}

impl ServerVersion {
    /// `major.minor.patch`.
    pub const fn new(major: u16, minor: u16, patch: u16) -> Self {
        Self { major, minor, patch }
    }

    /// Parses `7.0.15` (missing parts are 0; a suffix such as `-rc1` is ignored).
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.trim().split('.').map(|p| {
            let digits: String = p.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<u16>().ok()
        });
        let major = parts.next()??;
        let minor = parts.next().unwrap_or(Some(0))?;
        let patch = parts.next().unwrap_or(Some(0)).unwrap_or(0);
        Some(Self { major, minor, patch })
    }
}

impl fmt::Display for ServerVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(pairs: &[(&str, &str)]) -> Value {
        Value::Array(pairs.iter().flat_map(|(k, v)| [Value::from(*k), Value::from(*v)]).collect())
    }

    #[test]
    fn hello_replies_name_the_server() {
        let redis = ServerInfo::from_hello(&hello(&[("server", "redis"), ("version", "7.0.15"), ("proto", "2")]));
        assert_eq!((redis.kind(), redis.version()), (ServerKind::Redis, Some(ServerVersion::new(7, 0, 15))));
        assert_eq!(redis.to_string(), "Redis 7.0.15");
        assert!(redis.check().is_ok());

        let valkey = ServerInfo::from_hello(&hello(&[("server", "valkey"), ("version", "8.1.8")]));
        assert_eq!(valkey.kind(), ServerKind::Valkey);
        assert_eq!(valkey.redis_compatible(), Some(ServerVersion::new(7, 2, 4)));
        assert_eq!(valkey.to_string(), "Valkey 8.1.8");
        assert!(valkey.check().is_ok());

        let other = ServerInfo::from_hello(&hello(&[("server", "KeyDB"), ("version", "6.3.4")]));
        assert_eq!((other.kind(), other.to_string()), (ServerKind::Other, "KeyDB 6.3.4".to_owned()));
        assert!(other.check().is_err(), "an older protocol version is refused whatever the name");
        assert_eq!(ServerInfo::unknown().to_string(), "an unknown server");
        assert!(ServerInfo::unknown().check().is_ok());
    }

    #[test]
    fn info_server_names_the_server_when_hello_cannot() {
        let redis = ServerInfo::from_info("# Server\r\nredis_version:6.0.16\r\nredis_mode:standalone\r\n").unwrap();
        assert_eq!((redis.kind(), redis.to_string()), (ServerKind::Redis, "Redis 6.0.16".to_owned()));
        assert!(redis.check().is_err());
        let valkey = "# Server\r\nredis_version:7.2.4\r\nserver_name:valkey\r\nvalkey_version:8.1.8\r\n";
        assert_eq!(ServerInfo::from_info(valkey).unwrap().to_string(), "Valkey 8.1.8");
        assert_eq!(ServerInfo::from_info("# Server\r\n"), None);
    }

    #[test]
    fn an_old_redis_is_refused_with_the_minimum_and_the_reason() {
        let old = ServerInfo::from_hello(&hello(&[("server", "redis"), ("version", "6.2.14")]));
        let err = old.check().unwrap_err();
        assert!(err.starts_with("Redis 6.2.14 is too old: Tributary needs Redis 7.0 or later"), "{err}");
        assert!(err.contains("XINFO GROUPS"), "{err}");
    }

    #[test]
    fn versions_parse_and_order() {
        assert_eq!(ServerVersion::parse("7.0.15"), Some(ServerVersion::new(7, 0, 15)));
        assert_eq!(ServerVersion::parse("8.2"), Some(ServerVersion::new(8, 2, 0)));
        assert_eq!(ServerVersion::parse("7.4.0-rc1"), Some(ServerVersion::new(7, 4, 0)));
        assert_eq!(ServerVersion::parse("x"), None);
        assert!(ServerVersion::new(6, 2, 14) < MINIMUM_REDIS);
        assert!(ServerVersion::new(7, 0, 0) >= MINIMUM_REDIS);
        assert!(ServerVersion::new(10, 0, 0) > ServerVersion::new(7, 10, 3));
    }
}
