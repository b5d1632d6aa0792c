#[tributary::service]
trait Orders {
    async fn place(&self, sku: String, quantity: u32) -> Result<u64, tributary::RpcHandlerError>;
}

fn main() {}
