//! The NATS request/reply baseline: a private `nats-server` child process on a free loopback
//! port, an echo responder and a requester on connections of their own (async-nats).

use std::net::TcpListener;
use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tributary::BoxError;

const SUBJECT: &str = "bench.echo";

/// A private `nats-server` process with an echo responder; both stop when dropped.
#[derive(Debug)]
pub struct Nats {
    _child: Child,
    responder: JoinHandle<()>,
    client: async_nats::Client,
    port: u16,
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.responder.abort();
    }
}

impl Nats {
    /// Starts `nats-server` (from `PATH`, or `NATS_SERVER`) and the echo responder. `Ok(None)`
    /// when the binary is not installed.
    ///
    /// # Errors
    /// When the server starts but cannot be reached within 10 s.
    pub async fn start() -> Result<Option<Self>, BoxError> {
        let bin = std::env::var("NATS_SERVER").unwrap_or_else(|_| "nats-server".to_owned());
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = match Command::new(&bin)
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
        {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let url = format!("nats://127.0.0.1:{port}");
        // Ready once it accepts a client; retried until then (bounded).
        let deadline = Instant::now() + Duration::from_secs(10);
        let server_side = loop {
            match async_nats::connect(url.as_str()).await {
                Ok(c) => break c,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => return Err(format!("nats-server on port {port} did not come up: {e}").into()),
            }
        };
        let mut requests = server_side.subscribe(SUBJECT).await?;
        server_side.flush().await?;
        let responder = tokio::spawn(async move {
            while let Some(msg) = requests.next().await {
                if let Some(reply) = msg.reply {
                    if server_side.publish(reply, msg.payload).await.is_err() {
                        return;
                    }
                }
            }
        });
        let client = async_nats::connect(url.as_str()).await?;
        Ok(Some(Self { _child: child, responder, client, port }))
    }

    /// The requester's client (cheap to clone; clones share its connection).
    pub fn client(&self) -> async_nats::Client {
        self.client.clone()
    }

    /// Port of the private server.
    pub fn port(&self) -> u16 {
        self.port
    }
}

/// One request/reply round trip to the echo responder.
///
/// # Errors
/// When the request fails or times out (async-nats' default, 10 s).
pub async fn call(client: &async_nats::Client, payload: Bytes) -> Result<Bytes, BoxError> {
    Ok(client.request(SUBJECT, payload).await?.payload)
}
