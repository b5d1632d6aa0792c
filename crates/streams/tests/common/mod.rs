//! Shared set-up for the streams integration tests.
#![allow(dead_code, unreachable_pub)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tributary_core::Connection;
pub use tributary_testkit::{wait_until, TestRedis};

/// How long a test waits for a condition before failing.
pub const PATIENCE: Duration = Duration::from_secs(30);

pub async fn connect(redis: &TestRedis) -> Connection {
    Connection::options().namespace(redis.namespace()).connect(&redis.url()).await.expect("connect to test redis")
}

/// A list shared between a test and its handlers.
#[derive(Clone, Default)]
pub struct Seen<T>(pub Arc<Mutex<Vec<T>>>);

impl<T: Clone> Seen<T> {
    pub fn new() -> Self {
        Self(Arc::new(Mutex::new(Vec::new())))
    }
    pub fn push(&self, v: T) {
        self.0.lock().unwrap().push(v);
    }
    pub fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
    pub fn get(&self) -> Vec<T> {
        self.0.lock().unwrap().clone()
    }
    pub async fn wait_for(&self, n: usize, what: &str) {
        let this = self.clone();
        wait_until(PATIENCE, what, move || {
            let ok = this.len() >= n;
            async move { ok }
        })
        .await;
    }
}

/// A handler that records the number of each order it gets.
pub fn record(
    seen: &Seen<u64>,
) -> impl Fn(Order, tributary_streams::Context) -> std::future::Ready<Result<(), tributary_streams::HandlerError>>
       + Clone
       + Send
       + Sync
       + 'static {
    let seen = seen.clone();
    move |o: Order, _ctx| {
        seen.push(o.n);
        std::future::ready(Ok(()))
    }
}

#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq)]
pub struct Order {
    pub n: u64,
    pub key: String,
}

/// `calls=` of one command in `INFO commandstats` (commands run inside scripts count too).
pub fn command_calls(redis: &TestRedis, command: &str) -> u64 {
    let info = redis.cli(&["INFO", "commandstats"]);
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

/// Client connections open on the server (`CLIENT LIST TYPE normal`), not counting the
/// `redis-cli` that asks. Only meaningful on a private server (`TestRedis::start_private`).
pub fn client_connections(redis: &TestRedis) -> usize {
    redis.cli(&["CLIENT", "LIST", "TYPE", "normal"]).lines().count().saturating_sub(1)
}

/// Clients blocked in a command (`INFO clients`): a worker's shared read, while it blocks.
pub fn blocked_clients(redis: &TestRedis) -> u64 {
    let info = redis.cli(&["INFO", "clients"]);
    info.lines().find_map(|l| l.strip_prefix("blocked_clients:")).map_or(0, |n| n.trim().parse().unwrap())
}
