//! RPC without macros: a pricing service and a client calling it, in one program.
//!
//! The server's methods are plain async closures; the client calls them by service and method
//! name with a typed request and response. A method's error comes back to the caller as a typed
//! error, and a call without an answer ends at its timeout instead of hanging.
//!
//! Run with `cargo xtask demo` (starts its own redis-server), or against a server you run:
//! `REDIS_URL=redis://127.0.0.1:6379 cargo run --example rpc`.
#![allow(clippy::print_stdout)]

use std::time::Duration;

use tributary::prelude::*;

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Quote {
    sku: String,
    quantity: u32,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Price {
    sku: String,
    total_cents: u64,
}

#[tokio::main]
async fn main() -> Result<(), tributary::BoxError> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        // Logs on standard error, coloured only on a terminal: standard output is the example's.
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    // A namespace of its own, so the demo never touches other data on the server.
    let namespace = format!("rpc-demo-{}", MessageId::new());
    let conn = Connection::options().namespace(namespace.as_str()).connect(&url).await?;

    // The server: one method. Its instances share the service's request stream, so start as
    // many as you like; each request is answered by one of them.
    let server = RpcServer::builder(conn.clone(), "pricing")
        .method("quote", |q: Quote, _ctx| async move {
            if q.quantity == 0 {
                return Err(RpcHandlerError::new("bad_quantity", "quantity must be at least 1"));
            }
            Ok(Price { total_cents: u64::from(q.quantity) * 1_250, sku: q.sku })
        })
        .build()?
        .start();
    tokio::time::timeout(Duration::from_secs(10), server.ready()).await?;

    // The client: one reply stream for all its calls, each with a timeout.
    let client = RpcClient::builder(conn.clone()).default_timeout(Duration::from_secs(2)).build()?;
    let price: Price = client.call("pricing", "quote", &Quote { sku: "A-1".into(), quantity: 3 }).await?;
    println!("3 x {} cost {} cents", price.sku, price.total_cents);

    // A method's error arrives as a typed error, not as a timeout.
    match client.call::<_, Price>("pricing", "quote", &Quote { sku: "A-1".into(), quantity: 0 }).await {
        Err(RpcError::Remote { code, message, .. }) => println!("refused: {code}: {message}"),
        other => return Err(format!("expected a remote error, got {other:?}").into()),
    }

    // Nobody serves `inventory`: the call ends at its timeout (the request waits in the stream
    // for a server that starts before its deadline).
    let err = client
        .call_with_timeout::<_, Price>(
            "inventory",
            "count",
            &Quote { sku: "A-1".into(), quantity: 1 },
            Duration::from_millis(300),
        )
        .await
        .unwrap_err();
    println!("no inventory service: {err}");

    client.close().await?;
    server.shutdown().await;
    Ok(())
}
