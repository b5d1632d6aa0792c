#[tributary::handler(topic = "orders", concurency = 4)]
async fn typo(msg: String) -> Result<(), tributary::HandlerError> {
    let _ = msg;
    Ok(())
}

fn main() {}
