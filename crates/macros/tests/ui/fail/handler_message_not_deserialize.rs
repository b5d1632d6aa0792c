struct NotSerde;

#[tributary::handler(topic = "orders")]
async fn opaque(msg: NotSerde) -> Result<(), tributary::HandlerError> {
    let _ = msg;
    Ok(())
}

fn main() {}
