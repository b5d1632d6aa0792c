#[tributary::handler(topic = "orders")]
async fn no_message() -> Result<(), tributary::HandlerError> {
    Ok(())
}

fn main() {}
