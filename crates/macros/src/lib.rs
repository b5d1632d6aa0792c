//! Attribute macros for Tributary. Use them through the `tributary` crate
//! (`#[tributary::handler]`, `#[tributary::service]`); everything they generate is ordinary
//! code written against public traits, which you could write by hand.
//!
//! - [`macro@handler`] turns an `async fn(message, context)` into a route a worker registers:
//!   `Worker::builder(conn, "billing").register(place_order)`.
//! - [`macro@service`] turns a trait of async methods into an RPC service: a typed client
//!   (`OrdersClient`) and a server builder (`OrdersServer::builder(conn, impl)`).
//!
//! The generated code names the facade as `::tributary`. If you depend on it under another
//! name (`trib = { package = "tributary-redis", ... }`) or re-export it, say where it is with
//! `crate = "trib"` (any path) in either attribute.
//!
//! Set `TRIBUTARY_MACROS_DEBUG=1` to print every expansion to stderr.
//!
//! Docs of the traits involved: <https://docs.rs/tributary/0.1/tributary/trait.Route.html>,
//! <https://docs.rs/tributary/0.1/tributary/struct.RpcServer.html>.

use proc_macro::TokenStream;

mod attr;
mod handler;
mod service;

/// Registers an `async fn` as the handler of a topic.
///
/// ```no_run
/// use tributary::prelude::*;
/// # #[derive(serde::Deserialize)] struct OrderPlaced { id: u64 }
///
/// #[tributary::handler(topic = "orders", group = "billing", concurrency = 8, max_deliveries = 5)]
/// async fn place_order(order: OrderPlaced, ctx: Context) -> Result<(), HandlerError> {
///     let _ = (order.id, ctx.attempt());
///     Ok(())
/// }
///
/// # async fn demo(conn: Connection) -> Result<(), tributary::BoxError> {
/// let worker = Worker::builder(conn, "billing").register(place_order).build()?.start();
/// # Ok(()) }
/// ```
///
/// The function becomes a unit struct of the same name implementing `tributary::Route`; call
/// the original function as `place_order::call(order, ctx)`. Its first argument is the
/// message (any `serde::Deserialize` type); the second, optional, is the `Context`. It returns
/// `Result<(), E>` where `E` converts into `HandlerError` (an `Err` is retried, a
/// `HandlerError::reject` dead-lettered).
///
/// Keys: `topic` (required), `group` (the worker must be of this group), `concurrency`,
/// `max_deliveries`, `ordered = true` (one message at a time, strict order),
/// `retry_initial_ms` and `retry_max_ms` (exponential backoff bounds), and `crate` (see the
/// crate docs).
#[proc_macro_attribute]
pub fn handler(args: TokenStream, input: TokenStream) -> TokenStream {
    expand(handler::expand(args.into(), input.into()))
}

/// Turns a trait of async methods into an RPC service with a typed client and server.
///
/// ```no_run
/// use tributary::prelude::*;
/// # #[derive(serde::Serialize, serde::Deserialize)] struct PlaceOrder { sku: String }
/// # type OrderId = u64;
///
/// #[tributary::service(name = "orders")]
/// trait Orders {
///     async fn place_order(&self, req: PlaceOrder) -> Result<OrderId, RpcHandlerError>;
/// }
///
/// struct MyOrders;
/// impl Orders for MyOrders {
///     async fn place_order(&self, req: PlaceOrder) -> Result<OrderId, RpcHandlerError> {
///         Ok(req.sku.len() as u64)
///     }
/// }
///
/// # async fn demo(conn: Connection) -> Result<(), tributary::BoxError> {
/// let server = OrdersServer::builder(conn.clone(), MyOrders).build()?.start();
/// let orders = OrdersClient::new(RpcClient::new(conn));
/// let id = orders.place_order(PlaceOrder { sku: "A-1".into() }).await?;
/// # Ok(()) }
/// ```
///
/// Each method takes `&self` and one request argument and returns `Result<Response, E>` with
/// `E: Into<RpcHandlerError>`. The service name defaults to the trait name in snake case
/// (`name = "..."` sets it); `crate = "..."` as for `#[handler]`. Generated: the trait
/// (methods return `Send` futures), `<Trait>Client` and `<Trait>Server`. Needs the `rpc`
/// feature of `tributary`.
///
/// The request is taken **by value** on both sides, so the client's method has the trait
/// method's signature and the trait reads as the contract of both: the server owns what it
/// decoded and can move out of it; the client only serializes it (a caller that needs its
/// request afterwards passes a clone).
#[proc_macro_attribute]
pub fn service(args: TokenStream, input: TokenStream) -> TokenStream {
    expand(service::expand(args.into(), input.into()))
}

/// The one place where macro results become tokens: errors become `compile_error!`s with
/// their spans, and `TRIBUTARY_MACROS_DEBUG` prints the expansion.
fn expand(result: syn::Result<proc_macro2::TokenStream>) -> TokenStream {
    let tokens = match result {
        Ok(tokens) => tokens,
        Err(err) => err.into_compile_error(),
    };
    if std::env::var_os("TRIBUTARY_MACROS_DEBUG").is_some() {
        eprintln!("{tokens}");
    }
    tokens.into()
}
