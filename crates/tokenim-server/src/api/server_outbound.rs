//! Server API: what operators see of pushes and webhooks
//! (PROTOCOL-INTEGRATION I2.5, I3.4): a user's devices with their push
//! registration and last attempt, a test push, and the after-event
//! deliveries with a retry. Every route takes an API key ([`ServerKey`]).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use tokenim_core::Error;
use tokenim_proto::*;
use tokenim_store::JobStatus;

use crate::api::error::ApiResult;
use crate::api::http::query;
use crate::api::server::ServerKey;
use crate::state::AppState;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/server/users/{user_id}/push", get(user_push))
        .route("/v1/server/users/{user_id}/push/test", post(test_push))
        .route("/v1/server/webhooks/deliveries", get(deliveries))
        .route("/v1/server/webhooks/deliveries/{id}/retry", post(retry))
}

async fn user_push(
    State(app): State<Arc<AppState>>,
    _key: ServerKey,
    Path(user_id): Path<String>,
) -> ApiResult<axum::Json<PushDevices>> {
    Ok(axum::Json(app.outbound.user_push(&user_id).await?))
}

async fn test_push(
    State(app): State<Arc<AppState>>,
    _key: ServerKey,
    Path(user_id): Path<String>,
) -> ApiResult<axum::Json<PushTestResults>> {
    let results = app.outbound.test_push(&user_id).await?;
    Ok(axum::Json(PushTestResults { results }))
}

/// I-21: oldest first, `status` failed by default, `limit` 50 (at most
/// 500), after the delivery `after`.
async fn deliveries(
    State(app): State<Arc<AppState>>,
    _key: ServerKey,
    RawQuery(raw): RawQuery,
) -> ApiResult<axum::Json<Deliveries>> {
    let q = query(raw)?;
    let status = match q.get("status").map(String::as_str) {
        None => JobStatus::Failed,
        Some(s) => JobStatus::parse(s)
            .ok_or_else(|| Error::bad_request("status must be failed or pending"))?,
    };
    let limit = match q.get("limit") {
        None => 50,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=500).contains(l))
            .ok_or_else(|| Error::bad_request("limit must be 1..=500"))?,
    };
    let after = q.get("after").map(String::as_str);
    Ok(axum::Json(
        app.outbound.deliveries(status, after, limit).await?,
    ))
}

async fn retry(
    State(app): State<Arc<AppState>>,
    _key: ServerKey,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    app.outbound.retry_delivery(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}
