//! On Redis Cluster: one client per primary, chosen by a key's hash slot.
//!
//! fred's cluster client sends every command through one router task, and that task sends
//! nothing to *any* node while it reconnects one: one primary's failover paused the topics of
//! every primary for the length of the failover (docs/reliability.md). Here each primary has
//! a client of its own (a single-node fred client, with its own reconnect loop), and a map of
//! slots to primaries says which one serves a key. The map is read with `CLUSTER SLOTS` from
//! the nodes that answer: every second, and every 100 ms while a node is unreachable or silent,
//! so a promoted replica takes over its slots within a step of the cluster's own failover.
//!
//! A command for a slot whose primary is unreachable waits (up to the command timeout) for
//! the primary to come back or for the map to name another one; commands for other slots go
//! on meanwhile.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use fred::clients::Client;
use fred::interfaces::{ClientLike, EventInterface};
use fred::types::cluster::ClusterRouting;
use fred::types::config::{Server, ServerConfig};
use fred::types::{Builder, Value};
use tokio::sync::{broadcast, Notify};

use crate::connection::Dedicated;

/// How often the map is re-read while every primary is reachable.
const REFRESH_EVERY: Duration = Duration::from_secs(1);
/// How often while one is not (a failover is under way, or a node restarts).
const REFRESH_WHILE_DOWN: Duration = Duration::from_millis(100);
/// Bound of one `CLUSTER SLOTS` question to one node.
const ASK_TIMEOUT: Duration = Duration::from_secs(1);
/// How often a silent primary (its last `CLUSTER SLOTS` timed out) is asked again.
const ASK_SILENT_EVERY: Duration = Duration::from_secs(5);
/// How long a replaced primary's client waits for replies to the commands in flight on it
/// before they fail: a live node answers within milliseconds, a frozen one never.
const REPLACED_QUIT_BOUND: Duration = Duration::from_millis(250);

pub(crate) struct SlotRouter {
    /// The cluster's builder: credentials, TLS, timeouts and reconnect policy for node clients.
    builder: Builder,
    /// fred's own cluster client: asked for the map when no node client answers.
    cluster: Client,
    routes: RwLock<Arc<Routes>>,
    /// Notified when the map was re-read.
    refreshed: Notify,
    /// Notified to re-read the map now (a command found its primary unreachable).
    wake: Notify,
    /// Reconnections of any node client, and replaced primaries: a command in flight on them
    /// may have run with its reply lost.
    reconnects: broadcast::Sender<Server>,
    /// Primaries connected but silent, and when they were last asked: their last `CLUSTER SLOTS`
    /// timed out (a frozen process or host keeps its connections open and answers nothing).
    /// While any is, the map is re-read at the pace of a failover; they are asked again only
    /// every [`ASK_SILENT_EVERY`].
    silent: Arc<Mutex<HashMap<Server, Instant>>>,
}

/// Which primary serves which slot, and the client of each.
struct Routes {
    routing: ClusterRouting,
    nodes: HashMap<Server, Arc<Dedicated>>,
}

impl Routes {
    fn client(&self, slot: u16) -> Option<(&Server, &Arc<Dedicated>)> {
        self.nodes.get_key_value(owner(&self.routing, slot)?)
    }
}

/// The primary serving `slot`, if the map covers it. Not fred's `ClusterRouting::get_server`:
/// its binary search underflows (a panic in debug builds) for a slot below the first range,
/// which a map with gaps (read mid-failover) has.
fn owner(routing: &ClusterRouting, slot: u16) -> Option<&Server> {
    let ranges = routing.slots(); // sorted by start
    let at = ranges.partition_point(|r| r.end < slot);
    ranges.get(at).filter(|r| r.start <= slot).map(|r| &r.primary)
}

impl SlotRouter {
    /// Reads the map through `cluster` (connected), connects to every primary and starts the
    /// task that keeps the map current (it ends when the router is dropped).
    pub(crate) async fn start(builder: Builder, cluster: Client) -> Result<Arc<Self>, fred::error::Error> {
        let routing = ask(&cluster, seed_host(&builder)).await?;
        let (reconnects, _) = broadcast::channel(64);
        let router = Arc::new(Self {
            builder,
            cluster,
            routes: RwLock::new(Arc::new(Routes { routing: ClusterRouting::new(), nodes: HashMap::new() })),
            refreshed: Notify::new(),
            wake: Notify::new(),
            reconnects,
            silent: Arc::default(),
        });
        router.install(routing).await;
        tokio::spawn(keep_current(Arc::downgrade(&router)));
        Ok(router)
    }

    fn routes(&self) -> Arc<Routes> {
        self.routes.read().expect("routes lock").clone()
    }

    /// The client of the primary serving `slot`: at once when it is connected; otherwise after
    /// waiting, up to `patience`, for it to reconnect or for the map to name a new primary.
    /// After that, the client as it is (the command then fails or waits as fred decides).
    pub(crate) async fn client(&self, slot: u16, patience: Duration) -> Client {
        let deadline = Instant::now() + patience;
        loop {
            let routes = self.routes();
            let found = routes.client(slot).map(|(_, c)| c);
            if let Some(client) = found {
                if client.is_connected() {
                    return (**client).clone();
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                // An operator sees why commands on these slots fail or time out.
                tracing::warn!(slot, waited = ?patience, "no reachable primary for this slot; sending anyway");
                return found.map_or_else(|| self.cluster.clone(), |c| (**c).clone());
            }
            let refreshed = self.refreshed.notified();
            self.wake.notify_one();
            tokio::select! {
                _ = refreshed => {}
                // The node client may reconnect without the map changing.
                _ = tokio::time::sleep(left.min(Duration::from_millis(20))) => {}
            }
        }
    }

    /// Re-reads the map at once (a command was redirected).
    pub(crate) fn refresh_soon(&self) {
        self.wake.notify_one();
    }

    /// The primary serving `slot` in the current map, once it is connected (waiting as
    /// [`Self::client`] does).
    pub(crate) async fn server(&self, slot: u16, patience: Duration) -> Option<Server> {
        let _ = self.client(slot, patience).await;
        owner(&self.routes().routing, slot).cloned()
    }

    /// A builder for clients of the single node `server`, with the cluster's settings.
    pub(crate) fn node_builder(&self, server: Server) -> Builder {
        let mut builder = self.builder.clone();
        builder.with_config(|c| c.server = ServerConfig::Centralized { server });
        builder
    }

    /// Closes every primary's client now (see [`crate::Connection::quit`]).
    pub(crate) async fn close(&self) {
        for client in self.routes().nodes.values() {
            client.quit_now().await;
        }
    }

    pub(crate) fn reconnect_rx(&self) -> broadcast::Receiver<Server> {
        self.reconnects.subscribe()
    }

    /// Whether every primary is connected and answers.
    fn all_up(&self) -> bool {
        let routes = self.routes();
        // Only primaries of the map count: an ask that timed out after its node was replaced
        // leaves an entry behind, dropped at the next refresh.
        let silent = self.silent.lock().expect("silent lock");
        silent.keys().all(|s| !routes.nodes.contains_key(s)) && routes.nodes.values().all(|c| c.is_connected())
    }

    /// Re-reads the map from the nodes that answer, connects to new primaries and closes
    /// the clients of nodes that are no longer primaries.
    async fn refresh(&self) {
        let current = self.routes();
        // Up to three nodes, in random order, asked at once, and the map most of them report: a
        // primary cut off from the rest of the cluster (but not from us) still claims its old
        // slots. A frozen node answers nothing: the others' answers are not held up by it.
        let asked: Vec<_> = {
            // A silent node is asked again once in a while: it may have come back.
            let mut silent = self.silent.lock().expect("silent lock");
            silent.retain(|s, _| current.nodes.contains_key(s));
            let mut asked: Vec<_> = current
                .nodes
                .iter()
                .filter(|(s, c)| c.is_connected() && silent.get(*s).map_or(true, |at| at.elapsed() >= ASK_SILENT_EVERY))
                .collect();
            fastrand::shuffle(&mut asked);
            asked.truncate(3);
            for (server, _) in &asked {
                if let Some(at) = silent.get_mut(*server) {
                    *at = Instant::now();
                }
            }
            asked
        };
        let majority = asked.len() / 2 + 1;
        let (answered, mut answers_rx) = tokio::sync::mpsc::unbounded_channel();
        for (server, client) in &asked {
            let (server, client, answered, silent) =
                ((*server).clone(), (***client).clone(), answered.clone(), self.silent.clone());
            // A task each, so a silent node is still found out (and skipped from then on) after
            // the others' answers made this refresh go on.
            tokio::spawn(async move {
                let found = ask(&client, server.host.to_string()).await;
                let mut silent = silent.lock().expect("silent lock");
                match &found {
                    Err(e) if *e.kind() == fred::error::ErrorKind::Timeout => {
                        silent.insert(server, Instant::now());
                    }
                    _ => {
                        silent.remove(&server);
                    }
                }
                drop(silent);
                let _ = answered.send(found);
            });
        }
        drop(answered);
        let mut answers: Vec<(ClusterRouting, usize)> = Vec::new();
        while let Some(found) = answers_rx.recv().await {
            let Ok(found) = found else { continue };
            let votes = match answers.iter_mut().find(|(r, _)| r.slots() == found.slots()) {
                Some((_, votes)) => {
                    *votes += 1;
                    *votes
                }
                None => {
                    answers.push((found, 1));
                    1
                }
            };
            if votes >= majority {
                break;
            }
        }
        let routing = answers.into_iter().max_by_key(|(_, votes)| *votes).map(|(r, _)| r);
        let routing = match routing {
            Some(r) => r,
            None => match ask(&self.cluster, seed_host(&self.builder)).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(error = %e, "no cluster node answered CLUSTER SLOTS; keeping the map");
                    return;
                }
            },
        };
        // A client whose first connection failed has no connection task left (fred gives up
        // on a first connection): it is replaced even when the map is the same.
        if routing.slots() == current.routing.slots() && !current.nodes.values().any(|c| c.task_ended()) {
            return;
        }
        self.install(routing).await;
    }

    /// Makes `routing` the map: clients for its primaries (kept where they exist), others closed.
    async fn install(&self, routing: ClusterRouting) {
        let current = self.routes();
        let mut nodes = HashMap::new();
        for server in routing.unique_primary_nodes() {
            let client = match current.nodes.get(&server).filter(|c| !c.task_ended()) {
                Some(client) => client.clone(),
                None => {
                    let client = self.connect_node(server.clone()).await;
                    // Commands routed to the slots' old primary may have run with the reply lost.
                    let _ = self.reconnects.send(server.clone());
                    client
                }
            };
            nodes.insert(server, client);
        }
        let gone: Vec<_> = current.nodes.keys().filter(|s| !nodes.contains_key(*s)).cloned().collect();
        if !current.nodes.is_empty() {
            tracing::info!(
                primaries = ?nodes.keys().map(ToString::to_string).collect::<Vec<_>>(),
                replaced = ?gone.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "cluster map changed"
            );
        }
        let replaced: Vec<_> = gone.iter().filter_map(|s| current.nodes.get(s).cloned()).collect();
        *self.routes.write().expect("routes lock") = Arc::new(Routes { routing, nodes });
        self.refreshed.notify_waiters();
        // Commands in flight on a replaced primary end now: a dead node's client would wait for
        // a reconnection that never comes, a frozen one's for a reply, each up to the command
        // timeout. A live one (a planned failover) usually answers them (`MOVED`) before `QUIT`;
        // one still holding writes for its failover after the bound fails them unanswered.
        for client in replaced {
            tokio::spawn(async move { client.quit_within(REPLACED_QUIT_BOUND).await });
        }
    }

    /// A client of the primary `server`. Not waited for beyond one attempt: an unreachable one
    /// keeps reconnecting on its own, and commands wait for it in [`Self::client`].
    async fn connect_node(&self, server: Server) -> Arc<Dedicated> {
        let builder = self.node_builder(server.clone());
        let client = match builder.build() {
            Ok(client) => client,
            // The cluster's own settings built a client: a single node's cannot fail.
            Err(e) => {
                tracing::error!(node = %server, error = %e, "cannot build a client for a cluster node");
                self.cluster.clone()
            }
        };
        let mut rx = client.reconnect_rx();
        let tx = self.reconnects.clone();
        let node = server.clone();
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(server) => {
                        let _ = tx.send(server);
                    }
                    // Missed reconnections are reconnections all the same.
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let _ = tx.send(node.clone());
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        });
        // The connection task reconnects on its own once connected; the client keeps its handle
        // to end it when the node leaves the map, and to see whether a first connection failed.
        let task = client.connect();
        let client = Dedicated::new(client).with_task(task);
        let _ = tokio::time::timeout(ASK_TIMEOUT, client.wait_for_connect()).await;
        Arc::new(client)
    }
}

/// Keeps the map current until the router is gone.
async fn keep_current(router: Weak<SlotRouter>) {
    loop {
        let Some(r) = router.upgrade() else { return };
        let wait = if r.all_up() { REFRESH_EVERY } else { REFRESH_WHILE_DOWN };
        // Holding the router while waiting keeps it (and its node clients) alive up to `wait`
        // after the connection is dropped: no longer.
        tokio::select! {
            _ = r.wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
        if Arc::strong_count(&r) == 1 {
            return;
        }
        r.refresh().await;
        drop(r);
        // Woken by many waiting commands at once: one refresh per step is enough.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The host of the first node the configuration names.
fn seed_host(builder: &Builder) -> String {
    match builder.get_config().map(|c| &c.server) {
        Some(ServerConfig::Clustered { hosts, .. }) => hosts.first().map(|s| s.host.to_string()).unwrap_or_default(),
        _ => String::new(),
    }
}

/// `CLUSTER SLOTS` of the node(s) behind `client`, bounded by [`ASK_TIMEOUT`]. `host` stands for
/// nodes that announce no address of their own (the one the question went to).
async fn ask(client: &Client, host: String) -> Result<ClusterRouting, fred::error::Error> {
    let cmd = fred::types::CustomCommand::new_static("CLUSTER", fred::types::ClusterHash::Random, false);
    let reply: Value = tokio::time::timeout(ASK_TIMEOUT, client.custom(cmd, vec![Value::from("SLOTS")]))
        .await
        .map_err(|_| fred::error::Error::new(fred::error::ErrorKind::Timeout, "CLUSTER SLOTS timed out"))??;
    ClusterRouting::from_cluster_slots(reply, host)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A map with gaps, as one node may report mid-failover: slots outside every range have no
    /// owner (fred's own lookup panicked on the first case).
    #[test]
    fn slots_outside_the_map_have_no_owner() {
        let node = |port: u16| {
            Value::Array(vec![Value::from("127.0.0.1"), Value::from(i64::from(port)), Value::from(format!("id{port}"))])
        };
        let range = |start: i64, end: i64, port: u16| Value::Array(vec![start.into(), end.into(), node(port)]);
        let reply = Value::Array(vec![range(100, 200, 7001), range(5000, 16383, 7002)]);
        let routing = ClusterRouting::from_cluster_slots(reply, "127.0.0.1").unwrap();
        assert_eq!(owner(&routing, 0), None);
        assert_eq!(owner(&routing, 99), None);
        assert_eq!(owner(&routing, 100).map(|s| s.port), Some(7001));
        assert_eq!(owner(&routing, 200).map(|s| s.port), Some(7001));
        assert_eq!(owner(&routing, 201), None);
        assert_eq!(owner(&routing, 16383).map(|s| s.port), Some(7002));
        assert_eq!(owner(&ClusterRouting::new(), 5), None);
    }
}
