#[tributary::service]
trait Orders {
    async fn place(&self, req: String) -> u64;
}

fn main() {}
