//! An RPC service declared as a trait with `#[tributary::service]`: the macro generates the
//! typed client (`InventoryClient`) and the server builder (`InventoryServer`).
//! `REDIS_URL=redis://127.0.0.1:6379 cargo run --example macros_service`
#![allow(clippy::print_stdout)]

use std::collections::HashMap;
use std::sync::Mutex;

use tributary::prelude::*;

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Reserve {
    sku: String,
    quantity: u32,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Reservation {
    sku: String,
    left: u32,
}

#[tributary::service(name = "inventory")]
trait Inventory {
    /// Takes `quantity` items out of stock.
    async fn reserve(&self, req: Reserve) -> Result<Reservation, RpcHandlerError>;
    /// Items in stock.
    async fn stock(&self, sku: String) -> Result<u32, RpcHandlerError>;
}

struct Warehouse {
    stock: Mutex<HashMap<String, u32>>,
}

impl Inventory for Warehouse {
    async fn reserve(&self, req: Reserve) -> Result<Reservation, RpcHandlerError> {
        let mut stock = self.stock.lock().expect("stock lock");
        let left = stock.get_mut(&req.sku).ok_or_else(|| RpcHandlerError::new("unknown_sku", req.sku.clone()))?;
        if *left < req.quantity {
            return Err(RpcHandlerError::new("out_of_stock", format!("only {left} left of {}", req.sku))
                .with_details(serde_json::json!({ "left": *left })));
        }
        *left -= req.quantity;
        Ok(Reservation { sku: req.sku, left: *left })
    }

    async fn stock(&self, sku: String) -> Result<u32, RpcHandlerError> {
        Ok(self.stock.lock().expect("stock lock").get(&sku).copied().unwrap_or(0))
    }
}

#[tokio::main]
async fn main() -> Result<(), tributary::BoxError> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let namespace = format!("macros-service-{}", MessageId::new());
    let conn = Connection::options().namespace(namespace.as_str()).connect(&url).await?;

    let warehouse = Warehouse { stock: Mutex::new(HashMap::from([("apple".to_owned(), 5)])) };
    let server = InventoryServer::builder(conn.clone(), warehouse).build()?.start();

    let inventory = InventoryClient::new(RpcClient::new(conn.clone()));
    let r = inventory.reserve(Reserve { sku: "apple".into(), quantity: 3 }).await?;
    println!("reserved 3 {}, {} left", r.sku, r.left);
    match inventory.reserve(Reserve { sku: "apple".into(), quantity: 3 }).await {
        Err(RpcError::Remote { code, message, details, .. }) => {
            let details = details.map(|d| format!(" {d}")).unwrap_or_default();
            println!("second reservation refused: {code}: {message}{details}");
            assert_eq!(code, "out_of_stock");
        }
        other => return Err(format!("expected out_of_stock, got {other:?}").into()),
    }
    assert_eq!(inventory.stock("apple".to_owned()).await?, 2);
    println!("{} apples in stock", inventory.stock("apple".to_owned()).await?);

    inventory.rpc().close().await?;
    server.shutdown().await;
    Admin::new(conn).delete_topic("rpc.inventory").await?;
    println!("macros_service finished");
    Ok(())
}
