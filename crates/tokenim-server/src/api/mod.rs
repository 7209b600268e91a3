//! The adapters between the network and the services: the HTTP JSON API
//! (`http`), the WebSocket gateway (`ws`) and the embedded web client
//! (`web`). They parse and bound input, call one service each, and map
//! errors through the one code→status table of `tokenim-proto` (`error`).
//! [`router`] puts them together.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokenim_core::Error;
use tokenim_proto::ErrorCode;

use crate::state::AppState;
use error::ApiError;

pub mod cors;
pub mod error;
pub mod http;
pub mod server;
pub mod server_convs;
pub mod server_outbound;
pub mod server_users;
pub mod web;
pub mod ws;

/// Every route of a node: the JSON API, the socket and the web client,
/// with the protocol's JSON errors for whatever the framework rejects, and
/// CORS outside everything (`cors`), so errors carry its headers too.
pub fn router(app: Arc<AppState>) -> Router {
    Router::new()
        .merge(http::routes())
        .merge(server::routes())
        .merge(server_users::routes())
        .merge(server_convs::routes())
        .merge(server_outbound::routes())
        .route("/v1/ws", get(ws::upgrade))
        .merge(web::routes())
        .fallback(|| async { ApiError(Error::not_found("no such route")) })
        .method_not_allowed_fallback(|| async {
            let mut r = ApiError(Error::bad_request("method not allowed")).into_response();
            *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
            r
        })
        .layer(middleware::from_fn_with_state(app.clone(), json_errors))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            |_: Box<dyn std::any::Any + Send>| {
                tracing::error!("a request handler panicked");
                ApiError(Error::internal("internal error")).into_response()
            },
        ))
        .layer(middleware::from_fn_with_state(app.clone(), cors::layer))
        .with_state(app)
}

/// Turns any error the framework produced as plain text into the protocol's
/// JSON error body, so every `/v1` error is JSON.
async fn json_errors(State(app): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    app.metrics.http_requests.fetch_add(1, Ordering::Relaxed);
    let is_ws = req.uri().path() == "/v1/ws";
    let r = next.run(req).await;
    let s = r.status();
    let is_json = r
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if (s.is_client_error() || s.is_server_error()) && !is_json && !is_ws {
        let code = ErrorCode::from_http_status(s.as_u16()).unwrap_or(if s.is_server_error() {
            ErrorCode::Internal
        } else {
            ErrorCode::BadRequest
        });
        let msg = s.canonical_reason().unwrap_or("error").to_lowercase();
        let mut out = ApiError(Error::new(code, msg)).into_response();
        *out.status_mut() = s;
        return out;
    }
    r
}
