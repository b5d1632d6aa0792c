//! Connection set-up, in one place: from a URL or from a fred configuration.
//!
//! A [`Connection`] holds one multiplexed client for ordinary commands (XADD, XACK, scripts)
//! and knows how to open *dedicated* clients for blocking reads: a blocking `XREADGROUP` on a
//! shared connection would stall every other command behind it.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use fred::clients::Client;
use fred::interfaces::{ClientLike, EventInterface};
use fred::types::config::{Config, ReconnectPolicy};
use fred::types::{Builder, Value};

use crate::error::{ErrorKind, RedisError};
use crate::keys::Namespace;
use crate::server::{ServerInfo, ServerKind, MINIMUM_REDIS};
use crate::slot_router::SlotRouter;
use crate::wire::{Limits, Version};

/// A connection to Redis (or Redis Cluster) plus the settings every Tributary component
/// shares: key namespace, wire-format limits and the wire-format version it writes.
///
/// Cheap to clone; clones share the command connection.
///
/// # Example
/// ```no_run
/// # async fn demo() -> Result<(), tributary_core::ConnectError> {
/// use tributary_core::Connection;
///
/// let conn = Connection::connect("redis://127.0.0.1:6379").await?;
/// let custom = Connection::options()
///     .namespace("billing")
///     .command_timeout(std::time::Duration::from_secs(2))
///     .connect("redis://user:secret@127.0.0.1:6379/0")
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Connection {
    inner: Arc<Inner>,
}

struct Inner {
    /// Shared with `with_namespace` copies; closed when the last of them is dropped.
    client: Arc<Dedicated>,
    /// On Redis Cluster: a client per primary, for commands on keys (see `slot_router`).
    router: Option<Arc<SlotRouter>>,
    builder: Builder,
    command_timeout: Duration,
    namespace: Namespace,
    limits: Limits,
    wire_version: Version,
    server: String,
    server_info: ServerInfo,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the fred config: it holds the password.
        f.debug_struct("Connection")
            .field("server", &self.inner.server)
            .field("namespace", &self.inner.namespace)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Connects with default options (namespace `tributary`, 5 s command timeout, reconnect
    /// forever with exponential backoff up to 5 s).
    ///
    /// # Errors
    /// [`ConnectError`] when the URL is invalid or the first connection fails.
    pub async fn connect(url: &str) -> Result<Self, ConnectError> {
        Self::options().connect(url).await
    }

    /// Options for a connection.
    pub fn options() -> ConnectOptions {
        ConnectOptions::default()
    }

    /// The fred client for ordinary (non-blocking) commands: an escape hatch for commands
    /// Tributary does not wrap. On Redis Cluster, fred's own cluster client (Tributary routes
    /// its commands on keys itself).
    ///
    /// Only with the `unstable-fred` feature: no stability promise, any Tributary release may
    /// upgrade fred.
    #[cfg(feature = "unstable-fred")]
    #[cfg_attr(docsrs, doc(cfg(feature = "unstable-fred")))]
    pub fn redis(&self) -> &Client {
        &self.inner.client
    }

    /// [`Self::redis`] for Tributary's own crates, whatever the features.
    #[doc(hidden)] // fred is not part of the supported API (#25).
    pub fn command_client(&self) -> &Client {
        &self.inner.client
    }

    /// The client for commands on `key`. On Redis Cluster, the client of the primary serving
    /// the key's slot, so that one primary's failover does not hold up commands on the others;
    /// when that primary is unreachable, this waits (up to the command timeout) for it to come
    /// back or for a replica to take over. Elsewhere, the command client.
    #[doc(hidden)] // For Tributary's own crates: fred is not part of the supported API.
    pub async fn client_for(&self, key: &str) -> Routed<'_> {
        self.client_for_slot(fred::util::redis_keyslot(key.as_bytes())).await
    }

    /// [`Self::client_for`] by hash slot.
    #[doc(hidden)]
    pub async fn client_for_slot(&self, slot: u16) -> Routed<'_> {
        match &self.inner.router {
            None => Routed::Shared(&self.inner.client),
            Some(router) => Routed::Node(router.client(slot, self.inner.command_timeout).await),
        }
    }

    /// Reconnections of the clients [`Self::client_for`] hands out (on Redis Cluster, of any
    /// primary's, and primaries replaced by a failover): a command in flight then may have run
    /// with its reply lost.
    #[doc(hidden)]
    pub fn reconnect_rx(&self) -> tokio::sync::broadcast::Receiver<fred::types::config::Server> {
        match &self.inner.router {
            None => self.inner.client.reconnect_rx(),
            Some(router) => router.reconnect_rx(),
        }
    }

    /// Tells the connection a command failed with `err`: on Redis Cluster, a `MOVED` or `ASK`
    /// redirect (slots moved: a resharding, or a failover the map has not caught up with) makes
    /// it re-read the map of slots now instead of at its next periodic refresh. Single-node
    /// clients return redirects as errors rather than follow them.
    #[doc(hidden)]
    pub fn note_error(&self, err: &RedisError) {
        if let Some(router) = &self.inner.router {
            if err.is_server_error("MOVED") || err.is_server_error("ASK") || err.is_server_error("CLUSTERDOWN") {
                router.refresh_soon();
            }
        }
    }

    /// Whether a reader (from [`Self::dedicated_for`]) whose read failed can read again: it
    /// reconnects on its own. Not on Redis Cluster, where it is connected to one node and a
    /// failover may have moved its keys to another: open a new one then, which waits for the
    /// keys' primary.
    #[doc(hidden)]
    pub fn readers_survive_errors(&self) -> bool {
        self.inner.router.is_none()
    }

    /// The key namespace.
    pub fn namespace(&self) -> &Namespace {
        &self.inner.namespace
    }

    /// Wire-format limits used when encoding and decoding.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// The wire-format version producers on this connection write (readers take every
    /// version).
    pub fn wire_version(&self) -> Version {
        self.inner.wire_version
    }

    /// Which server this connection talks to (Redis or Valkey, and its version), as it said
    /// when the connection was made. On Redis Cluster, the node that was asked.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), tributary_core::ConnectError> {
    /// use tributary_core::{Connection, ServerKind};
    ///
    /// let conn = Connection::connect("redis://127.0.0.1:6379").await?;
    /// if conn.server_info().kind() == ServerKind::Valkey {
    ///     println!("on {}", conn.server_info()); // "on Valkey 8.1.8"
    /// }
    /// # Ok(()) }
    /// ```
    pub fn server_info(&self) -> &ServerInfo {
        &self.inner.server_info
    }

    /// The same connection with another namespace (shares the command client).
    pub fn with_namespace(&self, namespace: Namespace) -> Self {
        Self {
            inner: Arc::new(Inner {
                client: self.inner.client.clone(),
                router: self.inner.router.clone(),
                builder: self.inner.builder.clone(),
                command_timeout: self.inner.command_timeout,
                namespace,
                limits: self.inner.limits,
                wire_version: self.inner.wire_version,
                server: self.inner.server.clone(),
                server_info: self.inner.server_info.clone(),
            }),
        }
    }

    /// Opens a new client on its own connection, for blocking reads. Its command timeout is
    /// `block + 10 s`, so a blocking read is never cut short by the client (which would leave
    /// the socket blocked). A read in flight when the connection drops fails instead of being
    /// sent again after the reconnect: its reply may have been lost, and the caller should
    /// recover what that read took before reading newer entries (the consumer loop does).
    ///
    /// # Errors
    /// [`ConnectError`] when the connection cannot be made.
    #[doc(hidden)] // For Tributary's own crates: fred is not part of the supported API (#25).
    pub async fn dedicated(&self, block: Duration) -> Result<Dedicated, ConnectError> {
        self.open_dedicated(self.inner.builder.clone(), block).await
    }

    /// [`Self::dedicated`] for a subscriber: its pub/sub messages (and keyspace events) are kept
    /// up to `backlog` deep for the task that takes them (fred keeps 32), so a burst does not
    /// make that task miss some.
    ///
    /// # Errors
    /// [`ConnectError`] when the connection cannot be made.
    #[doc(hidden)]
    pub async fn dedicated_subscriber(&self, backlog: usize) -> Result<Dedicated, ConnectError> {
        let mut builder = self.inner.builder.clone();
        builder.with_performance_config(|p| p.broadcast_channel_capacity = backlog.max(32));
        self.open_dedicated(builder, self.inner.command_timeout).await
    }

    /// [`Self::dedicated`] for reads of `key` only: on Redis Cluster, a connection to the primary
    /// serving the key (see [`Self::client_for`]), so another primary's failover does not hold it
    /// up. See [`Self::readers_survive_errors`].
    ///
    /// # Errors
    /// [`ConnectError`] when the connection cannot be made.
    #[doc(hidden)]
    pub async fn dedicated_for(&self, key: &str, block: Duration) -> Result<Dedicated, ConnectError> {
        let Some(router) = &self.inner.router else { return self.dedicated(block).await };
        let slot = fred::util::redis_keyslot(key.as_bytes());
        match router.server(slot, self.inner.command_timeout).await {
            Some(node) => self.open_dedicated(router.node_builder(node), block).await,
            None => self.dedicated(block).await,
        }
    }

    async fn open_dedicated(&self, mut builder: Builder, block: Duration) -> Result<Dedicated, ConnectError> {
        builder.with_performance_config(|p| p.default_command_timeout = block + Duration::from_secs(10));
        builder.with_connection_config(|c| c.max_command_attempts = 1);
        let client = builder.build().map_err(|e| ConnectError::redis(&self.inner.server, e))?;
        // Connected in a task of its own: a caller dropped while connecting (a worker stopped
        // or dropped meanwhile) must not leave the connection behind. fred ignores a `QUIT`
        // sent before the connection is up, so the task closes it once it is.
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let connected = match client.init().await {
                Ok(task) => Ok(Dedicated::new(client).with_task(task)),
                Err(e) => {
                    // Not connected: nothing to QUIT, but the task must not linger.
                    let _ = client.quit().await;
                    Err(e)
                }
            };
            // A receiver gone: the client is dropped here, connected, and so closed.
            let _ = tx.send(connected);
        });
        match rx.await {
            Ok(connected) => connected.map_err(|e| ConnectError::redis(&self.inner.server, e)),
            Err(_) => Err(ConnectError::redis(
                &self.inner.server,
                fred::error::Error::new(fred::error::ErrorKind::Canceled, "connecting was cancelled"),
            )),
        }
    }

    /// Closes the command connection (of every copy of this connection) now, rather than in
    /// the background when the last copy is dropped: a program about to exit calls this, so no
    /// close is left running as its runtime stops.
    pub async fn quit(&self) {
        if let Some(router) = &self.inner.router {
            router.close().await;
        }
        self.inner.client.quit_now().await;
    }
}

/// Delay between reconnection attempts on Redis Cluster (constant, plus up to 20 ms jitter).
const CLUSTER_RECONNECT_MS: u32 = 100;

/// The client [`Connection::client_for`] chose: the shared command client, or (on Redis
/// Cluster) the client of one primary.
#[doc(hidden)]
#[derive(Debug)]
pub enum Routed<'a> {
    /// The shared command client.
    Shared(&'a Client),
    /// The client of the primary serving the key.
    Node(Client),
}

impl std::ops::Deref for Routed<'_> {
    type Target = Client;

    fn deref(&self) -> &Client {
        match self {
            Self::Shared(client) => client,
            Self::Node(client) => client,
        }
    }
}

/// A client on a connection of its own, closed when this is dropped.
///
/// A fred client keeps its connection open (and reconnects for ever) until `QUIT`, however many
/// of its handles are gone: a reader dropped without closing would leak a server connection.
/// Dropping this sends `QUIT` from a background task (bounded by 5 s); nothing is sent when
/// no Tokio runtime is running.
#[doc(hidden)] // For Tributary's own crates: it derefs to a fred client (#25).
pub struct Dedicated {
    client: Client,
    /// False once closed explicitly: nothing to do at drop.
    open: std::sync::atomic::AtomicBool,
    /// fred's connection task. Aborted after the `QUIT`: fred loses a `QUIT` sent while it is
    /// in the middle of a reconnection attempt, and would then reconnect (to a node that may be
    /// gone for good) for ever.
    task: std::sync::Mutex<Option<fred::types::ConnectHandle>>,
}

impl Dedicated {
    pub(crate) fn new(client: Client) -> Self {
        Self { client, open: std::sync::atomic::AtomicBool::new(true), task: std::sync::Mutex::new(None) }
    }

    /// Takes charge of the client's connection task (`connect()` or `init()`'s handle).
    pub(crate) fn with_task(self, task: fred::types::ConnectHandle) -> Self {
        *self.task.lock().expect("task lock") = Some(task);
        self
    }

    /// True once the connection task has ended: the client will not connect again (its first
    /// connection failed, or it was closed).
    pub(crate) fn task_ended(&self) -> bool {
        self.task.lock().expect("task lock").as_ref().is_some_and(tokio::task::JoinHandle::is_finished)
    }

    /// Closes the connection now (`QUIT`, bounded by 5 s), instead of in the background at drop.
    pub async fn close(self) {
        self.quit_now().await;
    }

    /// Closes the connection now (bounded by 5 s) unless it was closed already.
    pub(crate) async fn quit_now(&self) {
        self.quit_within(Duration::from_secs(5)).await;
    }

    /// Closes the connection unless it was closed already: `QUIT` when connected, so that the
    /// commands in flight get their replies first, waiting at most `bound` (a frozen server
    /// never answers); then the connection task is aborted, which fails every command still
    /// waiting (a `QUIT` sent while fred reconnects is not read until it has reconnected, which
    /// to a node gone for good is never).
    pub(crate) async fn quit_within(&self, bound: Duration) {
        if self.open.swap(false, std::sync::atomic::Ordering::SeqCst) {
            if self.client.is_connected() {
                let _ = tokio::time::timeout(bound, self.client.quit()).await;
            }
            if let Some(task) = self.task.lock().expect("task lock").take() {
                task.abort();
            }
        }
    }
}

impl std::ops::Deref for Dedicated {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

impl fmt::Debug for Dedicated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dedicated")
            .field("id", &self.client.id())
            .field("open", &self.open.load(std::sync::atomic::Ordering::Relaxed))
            .finish()
    }
}

impl Drop for Dedicated {
    fn drop(&mut self) {
        if !self.open.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let client = self.client.clone();
        let task = self.task.lock().map(|mut t| t.take()).unwrap_or(None);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if client.is_connected() {
                    let _ = tokio::time::timeout(Duration::from_secs(5), client.quit()).await;
                }
                if let Some(task) = task {
                    task.abort();
                }
            });
        }
    }
}

/// Options for [`Connection`]. Created by [`Connection::options`].
#[derive(Debug, Clone)]
#[must_use = "options do nothing until `.connect(..)` is called"]
pub struct ConnectOptions {
    namespace: Option<String>,
    command_timeout: Duration,
    connect_timeout: Duration,
    limits: Limits,
    wire_version: Version,
    reconnect_max_delay: Duration,
    #[cfg(feature = "tls")]
    tls_roots: Option<Vec<u8>>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            namespace: None,
            command_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            limits: Limits::default(),
            wire_version: Version::default(),
            reconnect_max_delay: Duration::from_secs(5),
            #[cfg(feature = "tls")]
            tls_roots: None,
        }
    }
}

impl ConnectOptions {
    /// Key namespace. Defaults to `tributary`.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// How long a command may take before it fails with a timeout, including time spent
    /// waiting for a reconnect. Defaults to 5 s. A publish that times out returns an error:
    /// nothing is reported sent that Redis did not confirm.
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// How long one connection attempt may take. Defaults to 5 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Longest pause between reconnection attempts (they never stop). Defaults to 5 s.
    pub fn reconnect_max_delay(mut self, delay: Duration) -> Self {
        self.reconnect_max_delay = delay;
        self
    }

    /// The wire-format version to write. Defaults to the newest ([`Version::V3`]); set
    /// [`Version::V2`] (or [`Version::V1`]) while consumers of an older Tributary, which read
    /// only the older versions, still consume the topics (upgrade every reader first, then
    /// switch).
    pub fn wire_version(mut self, version: Version) -> Self {
        self.wire_version = version;
        self
    }

    /// Wire-format limits. Defaults to [`Limits::default`].
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// For `rediss://` URLs: trust the CA certificates in `pem` (PEM text) instead of the
    /// system's roots, e.g. a private CA. Needs the `tls` feature. `connect` refuses a URL
    /// without TLS when this is set.
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn tls_root_certificates(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls_roots = Some(pem.into());
        self
    }

    /// Connects to `url`: `redis://[user:password@]host:port[/db]`, `rediss://` for TLS
    /// (with the `tls` feature), `redis-cluster://host:port?node=host:port`,
    /// `redis-sentinel://...`.
    ///
    /// # Errors
    /// [`ConnectError`] when the URL or namespace is invalid or the first connection fails.
    /// The error text never contains the password.
    pub async fn connect(self, url: &str) -> Result<Connection, ConnectError> {
        let server = redact_url(url);
        // fred takes any scheme for a plain connection: `http://host:6379` would be tried as Redis.
        let scheme = url.split_once("://").map_or("", |(scheme, _)| scheme);
        if !matches!(
            scheme,
            "redis" | "rediss" | "redis-cluster" | "rediss-cluster" | "redis-sentinel" | "rediss-sentinel"
        ) {
            return Err(ConnectError::InvalidUrl {
                url: server,
                reason: format!(
                    "unsupported scheme `{scheme}`: use redis://, rediss:// (TLS), redis-cluster:// or redis-sentinel://"
                ),
            });
        }
        #[allow(unused_mut)]
        let mut config = Config::from_url(url)
            .map_err(|e| ConnectError::InvalidUrl { url: server.clone(), reason: scrub(e.details(), url) })?;
        #[cfg(feature = "tls")]
        if let Some(pem) = &self.tls_roots {
            if config.tls.is_none() {
                // Not silently ignored: the caller meant to encrypt and would talk in the clear.
                return Err(ConnectError::InvalidTls {
                    reason: format!(
                        "a CA certificate was given, but `{server}` does not use TLS: use `rediss://` \
                         (or `redis-cluster://` with TLS), or give no certificate"
                    ),
                });
            }
            config.tls = Some(tls::connector(pem).map_err(|reason| ConnectError::InvalidTls { reason })?.into());
        }
        self.connect_builder(Builder::from_config(config), server).await
    }

    /// Connects with a fred [`Builder`] you configured yourself, for fred settings Tributary
    /// does not wrap. Tributary still sets a reconnect policy if the builder has none. `server`
    /// names the server in errors and logs: give it without a password.
    ///
    /// Only with the `unstable-fred` feature: no stability promise, any Tributary release may
    /// upgrade fred.
    ///
    /// # Errors
    /// [`ConnectError`] when the namespace is invalid or the first connection fails.
    #[cfg(feature = "unstable-fred")]
    #[cfg_attr(docsrs, doc(cfg(feature = "unstable-fred")))]
    pub async fn connect_with(self, builder: Builder, server: String) -> Result<Connection, ConnectError> {
        self.connect_builder(builder, server).await
    }

    async fn connect_builder(self, mut builder: Builder, server: String) -> Result<Connection, ConnectError> {
        let namespace = match self.namespace {
            Some(ns) => Namespace::new(ns).map_err(|e| ConnectError::InvalidNamespace(e.to_string()))?,
            None => Namespace::default(),
        };
        let clustered = builder.get_config().is_some_and(|c| c.server.is_clustered());
        if builder.get_policy().is_none() {
            builder.set_policy(if clustered {
                // fred stops sending to *every* node while it reconnects one, and it retries
                // (re-reading the cluster map) only after each backoff: with an exponential
                // backoff, one primary's failover paused every topic 3.5-6.7 s. A short
                // constant delay resumes within a step of the failover (docs/reliability.md).
                let mut policy = ReconnectPolicy::new_constant(0, CLUSTER_RECONNECT_MS);
                policy.set_jitter(20);
                policy
            } else {
                let max = u32::try_from(self.reconnect_max_delay.as_millis()).unwrap_or(u32::MAX);
                ReconnectPolicy::new_exponential(0, 50, max, 2)
            });
        }
        let (command_timeout, connect_timeout) = (self.command_timeout, self.connect_timeout);
        builder.with_performance_config(|p| p.default_command_timeout = command_timeout);
        builder.with_connection_config(|c| {
            c.connection_timeout = connect_timeout;
            c.internal_command_timeout = connect_timeout;
            if clustered {
                // Each attempt of the reconnect loop is bounded by these, and every node waits
                // for it: keep one attempt short. No CLUSTER INFO check per new connection (a
                // node reporting `fail` during the failover would refuse it) and no delay
                // before following a MOVED.
                c.connection_timeout = connect_timeout.min(Duration::from_secs(1));
                c.internal_command_timeout = connect_timeout.min(Duration::from_secs(1));
                c.disable_cluster_health_check = true;
                c.cluster_cache_update_delay = Duration::ZERO;
            }
        });
        let client = builder.build().map_err(|e| ConnectError::redis(&server, e))?;
        let task = client.init().await.map_err(|e| ConnectError::redis(&server, e))?;
        // Closed (QUIT, task aborted) if anything below fails.
        let client = Dedicated::new(client).with_task(task);
        let server_info = match hello(&client).await.and_then(|info| info.check().map(|()| info)) {
            Ok(info) => info,
            Err(reason) => {
                client.quit_now().await;
                return Err(ConnectError::UnsupportedServer { server, reason });
            }
        };
        match server_info.kind() {
            ServerKind::Redis | ServerKind::Valkey => tracing::info!(%server, "connected to {server_info}"),
            _ => tracing::warn!(%server, "connected to {server_info}, which Tributary is not tested on"),
        }
        let router = if clustered {
            let mut nodes = builder.clone();
            // A command in flight when its node's connection drops fails at once, rather than
            // being sent again to a node that may be gone for good (a failover moves its slots).
            nodes.with_connection_config(|c| c.max_command_attempts = 1);
            match SlotRouter::start(nodes, (*client).clone()).await {
                Ok(router) => Some(router),
                Err(e) => {
                    client.quit_now().await;
                    return Err(ConnectError::redis(&server, e));
                }
            }
        } else {
            None
        };
        let (limits, wire_version) = (self.limits, self.wire_version);
        let client = Arc::new(client);
        crate::metrics::count_reconnects(match &router {
            None => client.reconnect_rx(),
            Some(router) => router.reconnect_rx(),
        });
        Ok(Connection {
            inner: Arc::new(Inner {
                client,
                router,
                builder,
                command_timeout,
                namespace,
                limits,
                wire_version,
                server,
                server_info,
            }),
        })
    }
}

/// Asks the server who it is (`HELLO` without arguments: every user may, and it changes
/// nothing). An error for a server too old for that: Redis before 6.0 does not know `HELLO`,
/// 6.0 requires its protocol argument (both are refused unless `INFO server`, asked then, says
/// otherwise: a proxy may not pass `HELLO` on). Any other failure leaves the server unknown,
/// with a warning.
async fn hello(client: &Client) -> Result<ServerInfo, String> {
    let cmd = fred::types::CustomCommand::new_static("HELLO", fred::types::ClusterHash::Random, false);
    let too_old = |what: &str| {
        format!(
            "{what}: Tributary needs Redis {}.{} or later (or any Valkey)",
            MINIMUM_REDIS.major, MINIMUM_REDIS.minor
        )
    };
    let err = match client.custom::<Value, Value>(cmd, vec![]).await {
        Ok(reply) => return Ok(ServerInfo::from_hello(&reply)),
        Err(e) => e,
    };
    let details = err.details().to_ascii_lowercase();
    let old = if details.contains("unknown command") {
        "the server does not know HELLO, so it is older than Redis 6.0"
    } else if details.contains("wrong number of arguments") {
        "the server requires HELLO's protocol argument, so it is Redis 6.0"
    } else {
        tracing::warn!(error = %err, "the server did not say which it is (HELLO failed); going on");
        return Ok(ServerInfo::unknown());
    };
    let cmd = fred::types::CustomCommand::new_static("INFO", fred::types::ClusterHash::Random, false);
    match client.custom::<Value, Value>(cmd, vec![Value::from("server")]).await {
        Ok(info) => match info.as_string().as_deref().and_then(ServerInfo::from_info) {
            Some(info) => Ok(info),
            None => Err(too_old(old)),
        },
        Err(_) => Err(too_old(old)),
    }
}

/// A connection could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The URL could not be parsed.
    #[error("invalid redis url `{url}`: {reason}")]
    InvalidUrl {
        /// The URL with any password replaced by `***`.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The namespace is not a valid key prefix.
    #[error("{0}")]
    InvalidNamespace(String),
    /// The TLS settings could not be used.
    #[error("invalid TLS settings: {reason}")]
    InvalidTls {
        /// What is wrong.
        reason: String,
    },
    /// The server is older than Tributary supports (see [`crate::server::MINIMUM_REDIS`]).
    #[error("cannot use `{server}`: {reason}")]
    UnsupportedServer {
        /// The server URL with any password replaced by `***`.
        server: String,
        /// Which server it is, the minimum, and why.
        reason: String,
    },
    /// Connecting or authenticating failed.
    #[error("cannot connect to `{server}`: {reason}")]
    Redis {
        /// The server URL with any password replaced by `***`.
        server: String,
        /// What went wrong, in words that suggest what to check.
        reason: String,
        /// The failure.
        #[source]
        source: RedisError,
    },
}

impl ConnectError {
    fn redis(server: &str, err: fred::error::Error) -> Self {
        let reason = connect_failure(&err);
        Self::Redis { server: server.to_owned(), reason, source: RedisError::new("CONNECT", err) }
    }

    /// Classification of the failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::InvalidUrl { .. }
            | Self::InvalidNamespace(_)
            | Self::InvalidTls { .. }
            | Self::UnsupportedServer { .. } => ErrorKind::Config,
            Self::Redis { source, .. } => source.kind(),
        }
    }
}

/// Why a connection failed, in words an operator can act on (fred's own are `IO Error: Os {...}`
/// or `Decode Error: frame_type`).
fn connect_failure(err: &fred::error::Error) -> String {
    use fred::error::ErrorKind as F;
    let details = err.details();
    let has = |s: &str| details.contains(s);
    if has("ConnectionRefused") || has("Connection refused") {
        "connection refused: is redis-server running there?".to_owned()
    } else if has("failed to lookup") || has("Name or service not known") || has("No address") {
        format!("cannot resolve the host name ({details})")
    } else if *err.kind() == F::Protocol || has("Decode") || has("frame") {
        "the server does not answer as Redis: is that a Redis port?".to_owned()
    } else if *err.kind() == F::Timeout || has("timed out") {
        "no answer within the connect timeout".to_owned()
    } else if *err.kind() == F::Auth || has("WRONGPASS") || has("NOAUTH") || has("NOPERM") {
        format!("authentication refused: {details}")
    } else if has("certificate") || has("TLS") || has("Tls") {
        format!("TLS failed: {details}")
    } else {
        details.to_owned()
    }
}

#[cfg(feature = "tls")]
mod tls {
    use std::sync::Arc;

    use rustls::{ClientConfig, RootCertStore};
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;

    /// A rustls connector trusting the certificates in `pem`. The crypto provider is named
    /// explicitly: another crate enabling a second provider must not change this one.
    pub(super) fn connector(pem: &[u8]) -> Result<fred::types::config::TlsConnector, String> {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| format!("bad PEM certificate: {e}"))?;
            roots.add(cert).map_err(|e| format!("unusable CA certificate: {e}"))?;
        }
        if roots.is_empty() {
            return Err("no certificate in the PEM text".to_owned());
        }
        let config = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(config.into())
    }
}

/// A custom command routed to the cluster slot of `key`.
///
/// fred's default routing hashes the first argument, which for `XREADGROUP GROUP ...` or
/// `XGROUP CREATE key ...` is not the key. Every Tributary command goes through this.
// Used by Tributary's own crates; not part of the supported API (#25).
#[doc(hidden)]
pub fn keyed_command(name: &'static str, key: &str, blocking: bool) -> fred::types::CustomCommand {
    slot_command(name, fred::util::redis_keyslot(key.as_bytes()), blocking)
}

/// A custom command routed to cluster slot `slot` (for callers that computed a key's slot
/// once, with [`fred::util::redis_keyslot`], and send many commands to it).
// Used by Tributary's own crates; not part of the supported API (#25).
#[doc(hidden)]
pub fn slot_command(name: &'static str, slot: u16, blocking: bool) -> fred::types::CustomCommand {
    fred::types::CustomCommand::new_static(name, fred::types::ClusterHash::Custom(slot), blocking)
}

/// `url` with its secrets replaced by `***`: the password of the user information (or the
/// whole user information when it has no `:`), and the values of query parameters whose
/// name contains `password` (`sentinelPassword=...`).
///
/// Passwords are often written into URLs raw, with characters a URL reserves (`/ ? # @ :`,
/// common in generated base64 passwords). So the user information is taken to end at the
/// **last** `@` that has something after it, wherever the first `/` or `?` is: a raw
/// `pa/ss` or `pa?ss` is redacted too. When in doubt this redacts more than the password
/// (an `@` in a query), never less.
pub fn redact_url(url: &str) -> String {
    if !url.contains("://") {
        // Not a URL: nothing to tell the password from; show no more than its start.
        return if url.contains('@') { "***".to_owned() } else { url.chars().take(256).collect() };
    }
    // A password parameter's value runs to the end (a raw `&`, `#` or `@` may be part of it):
    // cut it off before anything else is looked at.
    let cut;
    let url = match secret_param(url) {
        Some(value_at) => {
            cut = format!("{}***", &url[..value_at]);
            cut.as_str()
        }
        None => url,
    };
    // Found again in what is left: a password parameter may come before the `://`.
    let Some(start) = url.find("://").map(|at| at + 3) else {
        return url.to_owned();
    };
    let rest = &url[start..];
    let at = userinfo_end(rest);
    let (userinfo, after) = match at {
        Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
        None => (None, rest),
    };
    let mut out = String::with_capacity(url.len());
    out.push_str(&url[..start]);
    if let Some(userinfo) = userinfo {
        // `redis://secret@host` puts the password where the user usually is.
        match userinfo.split_once(':') {
            Some((user, _)) => {
                out.push_str(user);
                out.push_str(":***@");
            }
            None => out.push_str("***@"),
        }
    }
    out.push_str(after);
    out
}

/// The last `@` of `rest` (a URL after `scheme://`): where the user information ends,
/// whatever raw characters a password holds (an `@` at the very end too: `user:pw@` with the
/// host left out).
fn userinfo_end(rest: &str) -> Option<usize> {
    rest.rfind('@')
}

/// Where the value of a query parameter named like `*password` starts (`sentinelPassword=`),
/// if `url` has one.
fn secret_param(url: &str) -> Option<usize> {
    let lower = url.to_ascii_lowercase();
    let query = lower.find('?')?;
    lower[query..].find("password=").map(|at| query + at + "password=".len())
}

/// `text` with every secret of `url` (the password as written and percent-decoded, secret
/// query values) replaced by `***`: for messages of other libraries that may quote the URL.
fn scrub(text: &str, url: &str) -> String {
    let mut text = text.to_owned();
    for secret in secrets(url) {
        if secret.len() >= 3 {
            text = text.replace(&secret, "***");
        }
    }
    text
}

/// The secrets in `url`, longest first, raw and percent-decoded.
fn secrets(url: &str) -> Vec<String> {
    let mut found = Vec::new();
    if let Some(scheme_end) = url.find("://") {
        let rest = &url[scheme_end + 3..];
        if let Some(at) = userinfo_end(rest) {
            let userinfo = &rest[..at];
            found.push(userinfo.split_once(':').map_or(userinfo, |(_, pw)| pw).to_owned());
        }
        if let Some(value_at) = secret_param(url) {
            // The value runs to the end: a raw `&` may be part of it.
            found.push(url[value_at..].to_owned());
        }
    }
    let decoded: Vec<String> = found.iter().map(|s| percent_decode(s)).collect();
    found.extend(decoded);
    found.sort_by_key(|s| std::cmp::Reverse(s.len()));
    found
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `s` with every byte but letters and digits percent-encoded.
    fn percent_encode(s: &str) -> String {
        s.bytes()
            .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
            .collect()
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2_000))]

        /// Any printable password (`/ ? # @ : % &` included), raw or percent-encoded, in any
        /// URL shape: neither redaction nor an invalid-URL error shows it.
        #[test]
        fn no_password_survives_redaction(pw in "[ -~]{6,32}", shape in 0usize..8, encoded: bool) {
            let written = if encoded { percent_encode(&pw) } else { pw.clone() };
            let url = match shape {
                0 => format!("redis://app:{written}@127.0.0.1:6379"),
                1 => format!("redis://app:{written}@127.0.0.1:6379/0"),
                2 => format!("rediss://:{written}@cache.internal:6380?x=y"),
                3 => format!("redis-cluster://app:{written}@10.0.0.1:7000?node=10.0.0.2:7000"),
                4 => format!("redis://{written}@h:1"),
                5 => format!("redis-sentinel://h:26379?sentinelServiceName=m&sentinelPassword={written}"),
                6 => format!("redis://user:{written}@h:1/2?protocol=resp3"),
                _ => format!("redis://app:{written}@"), // the host left out
            };
            // A password that also occurs in the rest of the URL cannot be told apart; and in
            // `redis://X@h` an X with a `:` is, by URL syntax, a user name and a password.
            let rest = url.replacen(&written, "", 1);
            proptest::prop_assume!(shape != 4 || !written.contains(':'));
            proptest::prop_assume!(!rest.contains(&pw) && !rest.contains(&written));
            let redacted = redact_url(&url);
            proptest::prop_assert!(!redacted.contains(&pw), "{url} -> {redacted}");
            proptest::prop_assert!(!redacted.contains(&written), "{url} -> {redacted}");
            if let Err(e) = Config::from_url(&url) {
                let err = ConnectError::InvalidUrl { url: redacted, reason: scrub(e.details(), &url) };
                let text = format!("{err} {err:?}");
                proptest::prop_assert!(!text.contains(&pw) && !text.contains(&written), "{text}");
            }
        }
    }

    #[test]
    fn passwords_with_reserved_characters_are_redacted() {
        assert_eq!(redact_url("redis://app:pa/ss@127.0.0.1:6379"), "redis://app:***@127.0.0.1:6379");
        // A password parameter before the `://` (a malformed URL) is cut off, not a panic.
        assert_eq!(redact_url("redis?password=x://h"), "redis?password=***");
        assert_eq!(redact_url("redis://app:pa?ss@127.0.0.1:6379"), "redis://app:***@127.0.0.1:6379");
        assert_eq!(redact_url("redis://app:p#a@s?s/@h:1/0"), "redis://app:***@h:1/0");
        assert_eq!(
            redact_url("redis-sentinel://h:1?a=b&sentinelPassword=x&y=z"),
            "redis-sentinel://h:1?a=b&sentinelPassword=***"
        );
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact_url("redis://user:pw@h:1/0"), "redis://user:***@h:1/0");
        assert_eq!(redact_url("rediss://:pw@h:1"), "rediss://:***@h:1");
        assert_eq!(redact_url("redis://pw@h:1"), "redis://***@h:1");
        assert_eq!(redact_url("redis://h:1"), "redis://h:1");
        // An `@` in the query: more is hidden than the password, never less.
        assert_eq!(redact_url("redis://u:p@ss@h:1?x=@"), "redis://u:***@");
        assert_eq!(redact_url("redis://app:s3cret@"), "redis://app:***@");
    }

    #[tokio::test]
    async fn invalid_url_error_hides_the_password() {
        let err = Connection::connect("redis://user:hunter2@[::1").await.unwrap_err();
        assert!(!format!("{err} {err:?}").contains("hunter2"), "{err:?}");
        assert_eq!(err.kind(), ErrorKind::Config);
    }

    #[tokio::test]
    async fn refused_connection_is_a_connection_error() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let err = Connection::options()
            .connect_timeout(Duration::from_secs(1))
            .connect(&format!("redis://u:hunter2@127.0.0.1:{port}"))
            .await
            .unwrap_err();
        assert!(!format!("{err} {err:?}").contains("hunter2"), "{err:?}");
        assert_eq!(err.kind(), ErrorKind::Connection, "{err:?}");
    }
}
