use tributary::prelude::*;

#[derive(serde::Deserialize)]
struct Ping {
    n: u64,
}

#[derive(Debug)]
struct MyError;
impl std::fmt::Display for MyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("my error")
    }
}
impl std::error::Error for MyError {}

#[tributary::handler(topic = "pings", group = "g", concurrency = 4, max_deliveries = 3, retry_initial_ms = 10, retry_max_ms = 100)]
async fn with_context(ping: Ping, ctx: Context) -> Result<(), HandlerError> {
    let _ = (ping.n, ctx.attempt());
    Ok(())
}

#[tributary::handler(topic = "pings.other", ordered = true)]
pub(crate) async fn without_context(_ping: Ping) -> Result<(), MyError> {
    Err(MyError)
}

fn main() {
    use tributary::Route;
    assert_eq!(with_context.topic(), "pings");
    assert_eq!(with_context.group(), Some("g"));
    assert_eq!(with_context.options().concurrency, Some(4));
    assert_eq!(without_context.options().concurrency, Some(1));
    let _ = with_context.handler();
    // The original function stays callable.
    let _call = |ctx: Context| with_context::call(Ping { n: 1 }, ctx);
}
