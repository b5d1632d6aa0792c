//! Running `tributary dashboard` (and chromedriver) as child processes for tests.
// Each test binary uses a part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use std::time::Duration;

use tributary::prelude::*;
use tributary::WorkerBuilder;
use tributary_testkit::TestRedis;

/// A connection to `redis`, in its namespace.
pub(crate) async fn connect(redis: &TestRedis) -> Connection {
    Connection::options().namespace(redis.namespace()).connect(&redis.url()).await.unwrap()
}

/// What the dashboard tests publish.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct Order {
    pub(crate) id: u64,
}

/// Runs a `billing` worker over `orders` until `count` entries are settled, refusing order 1
/// (a dead letter, reason `rejected`), then stops it.
pub(crate) async fn drain_refusing_order_1(conn: &Connection, count: u64) {
    let billing = Worker::builder(conn.clone(), "billing").on("orders", |o: Order, _ctx: Context| async move {
        if o.id == 1 {
            return Err(HandlerError::reject("order 1 is refused"));
        }
        Ok(())
    });
    run_until_settled(billing, count).await;
}

/// Starts the worker `builder` describes, waits (up to 30 s) until it settled `count` entries,
/// and stops it.
pub(crate) async fn run_until_settled(builder: WorkerBuilder, count: u64) {
    let worker = builder.build().unwrap().start();
    tokio::time::timeout(Duration::from_secs(30), worker.settled(count)).await.expect("settled");
    worker.shutdown().await;
}

/// A child process (and the processes it started, in its process group) killed when the test
/// is done with it, or fails.
pub(crate) struct Process(pub(crate) Child);

impl Drop for Process {
    fn drop(&mut self) {
        // The whole group: chromedriver's Chromium goes with it.
        // `--`: without it, procps' kill may read the negative id as an option.
        let _ = Command::new("kill").args(["-s", "KILL", "--", &format!("-{}", self.0.id())]).status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `command` in a process group of its own.
pub(crate) fn spawn_group(command: &mut Command) -> std::io::Result<Child> {
    use std::os::unix::process::CommandExt;
    command.process_group(0).spawn()
}

/// A running dashboard: its process, its address (`127.0.0.1:port`, the port it was given by
/// the system), and what it wrote on standard error.
pub(crate) struct Dashboard {
    pub(crate) addr: String,
    pub(crate) stderr: Arc<Mutex<String>>,
    _process: Process,
}

/// Starts `tributary dashboard` with `args` on a free port, and returns once it listens.
pub(crate) fn dashboard(redis: &TestRedis, args: &[&str]) -> Dashboard {
    dashboard_at(&redis.url(), &redis.namespace(), args)
}

/// [`dashboard`] for the server at `url`.
pub(crate) fn dashboard_at(url: &str, namespace: &str, args: &[&str]) -> Dashboard {
    let child = spawn_group(
        Command::new(env!("CARGO_BIN_EXE_tributary"))
            .env("REDIS_URL", url)
            .env("TRIBUTARY_NAMESPACE", namespace)
            .env_remove("TRIBUTARY_DASHBOARD_TOKEN")
            .args(["dashboard", "--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    )
    .expect("run tributary");
    let mut process = Process(child);
    let mut lines = BufReader::new(process.0.stderr.take().expect("stderr")).lines();
    let stderr = Arc::new(Mutex::new(String::new()));
    let mut addr = None;
    for line in lines.by_ref() {
        let line = line.expect("stderr");
        stderr.lock().unwrap().push_str(&line);
        if let Some(rest) = line.split_once("dashboard on http://").map(|(_, r)| r) {
            addr = rest.split_whitespace().next().map(str::to_owned);
            break;
        }
    }
    let addr = addr.unwrap_or_else(|| panic!("the dashboard did not start: {}", stderr.lock().unwrap()));
    // Drained for as long as it runs, and kept for the test to read.
    let kept = stderr.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            kept.lock().unwrap().push_str(&line);
        }
    });
    Dashboard { addr, stderr, _process: process }
}
