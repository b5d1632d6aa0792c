//! `crate = "..."`: the generated code names Tributary by the given path, for a dependency
//! renamed or re-exported (here: a re-export under another name).

mod deps {
    pub use ::tributary as messaging;
}

use deps::messaging::prelude::*;

#[derive(serde::Serialize, serde::Deserialize)]
struct Ping {
    n: u64,
}

#[deps::messaging::handler(topic = "pings", crate = "crate::deps::messaging")]
async fn on_ping(ping: Ping) -> Result<(), HandlerError> {
    let _ = ping.n;
    Ok(())
}

#[deps::messaging::service(name = "echo", crate = "crate::deps::messaging")]
trait Echo {
    async fn echo(&self, ping: Ping) -> Result<u64, RpcHandlerError>;
}

struct Answer;

impl Echo for Answer {
    async fn echo(&self, ping: Ping) -> Result<u64, RpcHandlerError> {
        Ok(ping.n)
    }
}

async fn use_them(conn: Connection) -> Result<u64, Box<dyn std::error::Error>> {
    let _server = EchoServer::builder(conn.clone(), Answer).build()?.start();
    let worker = Worker::builder(conn.clone(), "g").register(on_ping).build()?;
    drop(worker);
    Ok(EchoClient::new(RpcClient::new(conn)).echo(Ping { n: 1 }).await?)
}

fn main() {
    use deps::messaging::Route;
    assert_eq!(on_ping.topic(), "pings");
    assert_eq!(EchoClient::SERVICE, "echo");
    let _ = use_them;
}
