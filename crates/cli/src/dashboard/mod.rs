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
    if args.interval < std::time::Duration::from_millis(100) {
        return Err("--interval must be at least 100ms".into());
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
    let served = axum::serve(listener, router(dashboard)).with_graceful_shutdown(stopped()).await;
    sampling.abort();
    served.map_err(Into::into)
}

/// Ctrl-C, or SIGTERM (what systemd and Kubernetes send).
async fn stopped() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
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
        .route("/topics/{topic}/messages/{id}", get(api::message))
        .route("/topics/{topic}/groups/{group}", get(api::group))
        .route("/topics/{topic}/scheduled", get(api::scheduled))
        .route("/topics/{topic}/scheduled/cancel", post(api::cancel_scheduled))
        .route_layer(middleware::from_fn_with_state(dashboard.clone(), authorize));
    Router::new()
        .route("/", get(|| async { page("text/html; charset=utf-8", include_str!("page/index.html")) }))
        .route("/app.js", get(|| async { page("text/javascript; charset=utf-8", include_str!("page/app.js")) }))
        .route("/style.css", get(|| async { page("text/css; charset=utf-8", include_str!("page/style.css")) }))
        .nest("/api", api)
        .layer(middleware::from_fn_with_state(dashboard.clone(), guard))
        .with_state(dashboard)
}

/// Every response: no framing (clickjacking), nothing from elsewhere, no sniffing, no
/// referrer. Without a token, only requests addressed to this machine by IP or `localhost`: a
/// page on another site that rebinds its own name to 127.0.0.1 would otherwise be the page's
/// origin, and could read and act as the page does.
async fn guard(State(dashboard): State<Shared>, request: Request, next: Next) -> Response {
    if dashboard.token.is_none() {
        let host = request.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
        if !addressed_here(host) {
            return error(StatusCode::FORBIDDEN, "without a token, open the dashboard at 127.0.0.1 or localhost");
        }
    }
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let set = [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ];
    for (name, value) in set {
        headers.insert(name, header::HeaderValue::from_static(value));
    }
    response
}

/// Whether a `Host` header names this machine by address (an IP literal) or `localhost`, not a
/// domain someone else controls.
fn addressed_here(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        // `[::1]:8080`
        Some(v6) => return v6.split_once(']').is_some_and(|(ip, _)| ip.parse::<std::net::Ipv6Addr>().is_ok()),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::Ipv4Addr>().is_ok()
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
    fn only_addresses_and_localhost_count_as_this_machine() {
        for ok in ["127.0.0.1:8080", "localhost:8080", "LOCALHOST", "[::1]:8080", "10.0.0.7:80"] {
            assert!(super::addressed_here(ok), "{ok}");
        }
        for bad in ["evil.example:8080", "localhost.evil.example", "", "127.0.0.1.nip.io:8080", "[::1"] {
            assert!(!super::addressed_here(bad), "{bad}");
        }
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"secret", b"secret"));
        assert!(!same(b"secret", b"secreT"));
        assert!(!same(b"secret", b"secret-and-more"));
        assert!(!same(b"", b"secret"));
    }
}
