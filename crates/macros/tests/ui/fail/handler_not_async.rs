#[tributary::handler(topic = "orders")]
fn not_async(msg: String) -> Result<(), tributary::HandlerError> {
    let _ = msg;
    Ok(())
}

fn main() {}
