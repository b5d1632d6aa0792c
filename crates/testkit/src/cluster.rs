//! A local Redis Cluster of real `redis-server --cluster-enabled yes` processes, created with
//! `redis-cli --cluster create`, for tests that must hold on a cluster (and survive a
//! failover).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{unique_namespace, Process, ServerOptions};

/// A running cluster: `masters` primaries, each with `replicas` replicas.
#[derive(Debug)]
pub struct TestCluster {
    nodes: Vec<Process>,
    namespace: String,
}

impl TestCluster {
    /// Starts `masters` primaries with `replicas` replicas each and waits until the cluster
    /// state is `ok` on every node. Nodes use AOF (`appendfsync always`) and a 1 s node
    /// timeout, so a killed primary's replica takes over within a few seconds.
    ///
    /// # Panics
    /// When the processes or the cluster do not come up within 30 s.
    pub async fn start(masters: usize, replicas: usize) -> Self {
        let count = masters * (1 + replicas);
        let mut nodes = Vec::with_capacity(count);
        let options = ServerOptions::new()
            .durable()
            .arg("cluster-enabled", "yes")
            .arg("cluster-config-file", "nodes.conf")
            .arg("cluster-node-timeout", "1000")
            .arg("cluster-require-full-coverage", "no");
        while nodes.len() < count {
            let port = free_cluster_port();
            let dir = tempfile::Builder::new().prefix("tributary-cluster-").tempdir().expect("create temp dir");
            let process =
                Process { port, tls_port: None, dir, options: options.clone(), child: std::sync::Mutex::new(None) };
            if process.spawn().await {
                nodes.push(process);
            }
        }
        let mut create = Command::new(crate::cli_binary());
        create.arg("--cluster").arg("create");
        for n in &nodes {
            create.arg(format!("127.0.0.1:{}", n.port));
        }
        let out = create
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli --cluster create");
        assert!(out.status.success(), "cluster create failed: {}", String::from_utf8_lossy(&out.stdout));
        let cluster = Self { nodes, namespace: unique_namespace() };
        cluster.wait_until_ok(Duration::from_secs(30)).await;
        // Cluster state `ok` does not mean replicas finished their first sync.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let synced = replicas == 0
                || cluster.nodes.iter().all(|n| {
                    let info = node_cli(n.port, &["INFO", "replication"]);
                    if info.contains("role:master") {
                        info.matches("state=online").count() >= replicas
                    } else {
                        info.contains("master_link_status:up")
                    }
                });
            if synced {
                break;
            }
            assert!(Instant::now() < deadline, "replicas did not sync within 30 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        cluster
    }

    /// A `redis-cluster://` URL naming every node.
    pub fn url(&self) -> String {
        let mut nodes = self.nodes.iter().filter(|n| n.is_running());
        let first = nodes.next().expect("a running node");
        let rest: Vec<String> = nodes.map(|n| format!("node=127.0.0.1:{}", n.port)).collect();
        if rest.is_empty() {
            format!("redis-cluster://127.0.0.1:{}", first.port)
        } else {
            format!("redis-cluster://127.0.0.1:{}?{}", first.port, rest.join("&"))
        }
    }

    /// A key namespace unique to this cluster.
    pub fn namespace(&self) -> String {
        self.namespace.clone()
    }

    /// Ports of all nodes.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// Runs `redis-cli -c -p <port of a running node>` with `args` and returns its output.
    ///
    /// # Panics
    /// When no node runs or `redis-cli` fails.
    pub fn cli(&self, args: &[&str]) -> String {
        let node = self.nodes.iter().find(|n| n.is_running()).expect("a running node");
        node_cli(node.port, args)
    }

    /// Runs `redis-cli -p <port>` with `args` and returns its output.
    pub fn cli_on(&self, port: u16, args: &[&str]) -> String {
        node_cli(port, args)
    }

    /// The port of the primary serving `key` now.
    ///
    /// # Panics
    /// When no running primary owns the key's slot.
    pub fn primary_of(&self, key: &str) -> u16 {
        // Without `-c`, a node that does not own the slot answers MOVED.
        self.nodes
            .iter()
            .filter(|n| n.is_running())
            .find(|n| {
                let out = Command::new(crate::cli_binary()).args(["-p", &n.port.to_string(), "EXISTS", key]).output();
                out.is_ok_and(|o| {
                    let text = String::from_utf8_lossy(&o.stdout);
                    !text.contains("MOVED") && node_cli(n.port, &["ROLE"]).starts_with("master")
                })
            })
            .map(|n| n.port)
            .expect("a running primary owning the key's slot")
    }

    /// Kills the node on `port` with SIGKILL.
    ///
    /// # Panics
    /// When no node has that port.
    pub fn kill(&self, port: u16) {
        let node = self.nodes.iter().find(|n| n.port == port).expect("a node on that port");
        node.kill();
    }

    /// Freezes the node on `port` with SIGSTOP: its connections stay open and nothing is
    /// answered (a hung host); the other nodes soon count it as failed.
    ///
    /// # Panics
    /// When no node has that port or it is not running.
    pub fn pause(&self, port: u16) {
        let node = self.nodes.iter().find(|n| n.port == port).expect("a node on that port");
        node.signal("STOP");
    }

    /// Waits until every running node reports `cluster_state:ok` and agrees on the slots.
    ///
    /// # Panics
    /// When that does not happen within `timeout`.
    pub async fn wait_until_ok(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let ok = self.nodes.iter().filter(|n| n.is_running()).all(|n| {
                let info = node_cli(n.port, &["CLUSTER", "INFO"]);
                info.contains("cluster_state:ok") && info.contains("cluster_slots_ok:16384")
            });
            if ok {
                return;
            }
            assert!(Instant::now() < deadline, "cluster not ok after {timeout:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn node_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new(crate::cli_binary())
        .args(["-c", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("run redis-cli");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A port whose cluster bus port (port + 10000) is free too.
fn free_cluster_port() -> u16 {
    loop {
        let port = fastrand_port();
        let ok = std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
            && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok();
        if ok {
            return port;
        }
    }
}

fn fastrand_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    // Ports 20000..40000, so the bus port stays below 50000.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    20_000 + (h.finish() % 20_000) as u16
}
