use tributary::prelude::*;

#[derive(serde::Serialize, serde::Deserialize)]
struct Add {
    a: i64,
    b: i64,
}

#[tributary::service]
trait Calculator {
    async fn add(&self, req: Add) -> Result<i64, RpcHandlerError>;
    async fn negate(&self, n: i64) -> Result<i64, std::io::Error>;
}

struct Calc;

impl Calculator for Calc {
    async fn add(&self, req: Add) -> Result<i64, RpcHandlerError> {
        Ok(req.a + req.b)
    }
    async fn negate(&self, n: i64) -> Result<i64, std::io::Error> {
        Ok(-n)
    }
}

async fn use_it(conn: Connection) -> Result<i64, RpcError> {
    let _server = CalculatorServer::builder(conn.clone(), Calc);
    let client = CalculatorClient::new(RpcClient::new(conn));
    assert_eq!(CalculatorClient::SERVICE, "calculator");
    let sum = client.add(Add { a: 1, b: 2 }).await?;
    client.negate(sum).await
}

fn main() {
    let _ = use_it;
}
