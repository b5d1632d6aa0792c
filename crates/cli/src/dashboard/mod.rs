//! `tributary dashboard`: a web page over the topics of a namespace. The server samples every
//! topic every `--interval` (`history.rs`), serves the page (`page/`, embedded in the binary)
//! and a JSON API (`api.rs`) the page reads.
//!
//! Safe by default: read-only unless `--allow-actions`; beyond loopback only with a token; an
//! action needs a header a cross-site form cannot send; the Redis URL never reaches the page.

mod api;
mod history;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use tributary::{BoxError, Connection};

use crate::cli::DashboardArgs;
use history::History;

/// What every request sees.
pub(crate) struct Dashboard {
    pub(crate) conn: Connection,
    pub(crate) allow_actions: bool,
    token: Option<String>,
    pub(crate) claim_idle: std::time::Duration,
    pub(crate) history: History,
}

type Shared = Arc<Dashboard>;

/// The header an action must carry: a form or an image on another site cannot set it, and a
/// script there cannot without the server's consent (CORS), which it never gives.
pub(crate) const ACTION_HEADER: &str = "x-tributary-action";

pub(crate) async fn run(conn: Connection, args: DashboardArgs) -> Result<(), BoxError> {
    let token = args.token.filter(|t| !t.is_empty());
    if !args.listen.ip().is_loopback() && token.is_none() {
        return Err(format!(
            "listening on {} (beyond this machine) needs a token: --token or TRIBUTARY_DASHBOARD_TOKEN",
            args.listen
        )
        .into());
    }
    if args.interval.is_zero() {
        return Err("--interval must be longer than 0".into());
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let dashboard = Arc::new(Dashboard {
        conn: conn.clone(),
        allow_actions: args.allow_actions,
        token,
        claim_idle: args.claim_idle,
        history: History::new(args.interval),
    });
    let sampling = tokio::spawn(history::sample_forever(dashboard.clone()));
    let mode = if args.allow_actions { "actions allowed" } else { "read-only" };
    // On standard error with the logs; standard output stays empty.
    eprintln!("tributary: dashboard on http://{} ({mode}); Ctrl-C to stop", listener.local_addr()?);
    let served = axum::serve(listener, router(dashboard))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await;
    sampling.abort();
    served.map_err(Into::into)
}

fn router(dashboard: Shared) -> Router {
    let api = Router::new()
        .route("/config", get(api::config))
        .route("/overview", get(api::overview))
        .route("/topics/{topic}/history", get(api::topic_history))
        .route("/topics/{topic}/dead-letters", get(api::dead_letters))
        .route("/topics/{topic}/dead-letters/{id}", get(api::dead_letter))
        .route("/topics/{topic}/dead-letters/replay", post(api::replay))
        .route("/topics/{topic}/dead-letters/purge", post(api::purge))
        .route_layer(middleware::from_fn_with_state(dashboard.clone(), authorize));
    Router::new()
        .route("/", get(|| async { page("text/html; charset=utf-8", include_str!("page/index.html")) }))
        .route("/app.js", get(|| async { page("text/javascript; charset=utf-8", include_str!("page/app.js")) }))
        .route("/style.css", get(|| async { page("text/css; charset=utf-8", include_str!("page/style.css")) }))
        .nest("/api", api)
        .with_state(dashboard)
}

/// An embedded asset; the page holds no data, so it needs no token.
fn page(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

/// With a token, every API call presents it (`Authorization: Bearer ...`).
async fn authorize(State(dashboard): State<Shared>, headers: HeaderMap, request: Request, next: Next) -> Response {
    if let Some(token) = &dashboard.token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        if !same(given.as_bytes(), token.as_bytes()) {
            return error(StatusCode::UNAUTHORIZED, "a token is needed (the one the dashboard was started with)");
        }
    }
    next.run(request).await
}

/// Equality that takes as long whatever the first difference (tokens are secrets).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A JSON error the page shows as it is.
pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

#[cfg(test)]
mod tests {
    use super::same;

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"secret", b"secret"));
        assert!(!same(b"secret", b"secreT"));
        assert!(!same(b"secret", b"secret-and-more"));
        assert!(!same(b"", b"secret"));
    }
}
