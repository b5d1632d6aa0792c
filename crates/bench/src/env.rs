//! The Redis server a benchmark run uses, and the clients both sides connect with.
//!
//! Without `REDIS_URL` the test kit starts a private `redis-server` on a free loopback port,
//! killed when the run ends; with it, that server is used under a namespace unique to the
//! run. Every scenario deletes the keys it created.

use fred::clients::Client;
use fred::interfaces::{ClientLike, KeysInterface};
use fred::types::config::Config;
use fred::types::{Builder, Value};
use tributary::{BoxError, Connection, Topic};
use tributary_testkit::TestRedis;

use crate::cpu::CpuMeter;

/// The server of this run and the namespace every key of the run lives under.
#[derive(Debug)]
pub struct Env {
    redis: TestRedis,
}

impl Env {
    /// The server at `REDIS_URL`, or a private `redis-server` started through the test kit.
    ///
    /// # Panics
    /// When `REDIS_URL` is unset and `redis-server` cannot be started.
    pub async fn start() -> Self {
        Self { redis: TestRedis::start().await }
    }

    /// The server's URL.
    pub fn url(&self) -> String {
        self.redis.url()
    }

    /// The namespace of this run (`t<uuid>`).
    pub fn namespace(&self) -> String {
        self.redis.namespace()
    }

    /// A Tributary connection in this run's namespace, with default options.
    ///
    /// # Errors
    /// When the server cannot be reached.
    pub async fn connect(&self) -> Result<Connection, BoxError> {
        connect(&self.url(), &self.namespace()).await
    }

    /// A plain fred client with fred's default settings: what the baselines use.
    ///
    /// # Errors
    /// When the server cannot be reached.
    pub async fn fred(&self) -> Result<Client, BoxError> {
        fred_client(&self.url()).await
    }

    /// A CPU meter for this server (on a client of its own).
    ///
    /// # Errors
    /// When the server cannot be reached.
    pub async fn cpu_meter(&self) -> Result<CpuMeter, BoxError> {
        Ok(CpuMeter::new(self.fred().await?))
    }

    /// Key of a stream only the baselines use: `<ns>:raw:{<name>}`.
    pub fn raw_key(&self, name: &str) -> String {
        format!("{}:raw:{{{name}}}", self.namespace())
    }

    /// The stream key of a Tributary topic in this namespace.
    ///
    /// # Errors
    /// When `topic` is not a valid topic name.
    pub fn topic_key(&self, conn: &Connection, topic: &str) -> Result<String, BoxError> {
        Ok(conn.namespace().topic_stream(&Topic::new(topic)?))
    }

    /// The server's `redis_version`.
    ///
    /// # Errors
    /// When `INFO` fails.
    pub async fn redis_version(&self) -> Result<String, BoxError> {
        let client = self.fred().await?;
        let info: String = client.info(Some(fred::types::InfoKind::Server)).await?;
        let _ = client.quit().await;
        Ok(info
            .lines()
            .find_map(|l| l.strip_prefix("redis_version:"))
            .map(|v| v.trim().to_owned())
            .unwrap_or_else(|| "unknown".to_owned()))
    }
}

/// A Tributary connection to `url` in namespace `namespace`.
///
/// # Errors
/// When the server cannot be reached.
pub async fn connect(url: &str, namespace: &str) -> Result<Connection, BoxError> {
    Ok(Connection::options().namespace(namespace).connect(url).await?)
}

/// A plain fred client for `url`, fred's defaults (no reconnect policy, no command timeout).
///
/// # Errors
/// When the URL is invalid or the server cannot be reached.
pub async fn fred_client(url: &str) -> Result<Client, BoxError> {
    let client = Builder::from_config(Config::from_url(url)?).build()?;
    client.init().await?;
    Ok(client)
}

/// Deletes `keys` (best effort: a failed clean-up does not fail the benchmark).
pub async fn delete_keys(client: &Client, keys: &[String]) {
    for key in keys {
        let _: Result<Value, _> = client.del(key.as_str()).await;
    }
}

/// `XGROUP CREATE key group 0 MKSTREAM`; an existing group is fine.
///
/// # Errors
/// When Redis answers with another error.
pub async fn create_group(client: &Client, key: &str, group: &str) -> Result<(), BoxError> {
    use fred::interfaces::StreamsInterface;
    match client.xgroup_create::<Value, _, _, _>(key, group, "0", true).await {
        Ok(_) => Ok(()),
        Err(e) if e.details().starts_with("BUSYGROUP") => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Number of entries pending in `group` of stream `key` (`XPENDING key group`).
///
/// # Errors
/// When `XPENDING` fails.
pub async fn pending_count(client: &Client, key: &str, group: &str) -> Result<u64, BoxError> {
    use fred::interfaces::StreamsInterface;
    let summary: Value = client.xpending(key, group, ()).await?;
    Ok(match summary {
        Value::Array(items) => items.into_iter().next().and_then(|v| v.as_u64()).unwrap_or(0),
        _ => 0,
    })
}
