#[tributary::handler(group = "billing")]
async fn where_from(msg: String) -> Result<(), tributary::HandlerError> {
    let _ = msg;
    Ok(())
}

fn main() {}
