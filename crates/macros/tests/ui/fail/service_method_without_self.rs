#[tributary::service]
trait Orders {
    async fn place(req: String) -> Result<u64, tributary::RpcHandlerError>;
}

fn main() {}
