//! Server API: users of the app's own IDs and sessions minted for them
//! (PROTOCOL-INTEGRATION I1.2). Every route takes an API key
//! ([`ServerKey`]).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{post, put};
use tokenim_proto::*;

use crate::api::error::ApiResult;
use crate::api::http::{JsonBody, created_or_ok};
use crate::api::server::ServerKey;
use crate::state::AppState;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route(
            "/v1/server/users/{user_id}",
            put(put_user).get(get_user).delete(deactivate),
        )
        .route("/v1/server/users/{user_id}/sessions", post(mint))
}

/// `201` when created, `200` when updated (I-2).
async fn put_user(
    State(app): State<Arc<AppState>>,
    _key: ServerKey,
    Path(user_id): Path<String>,
    JsonBody(body): JsonBody<ServerPutUser>,
) -> ApiResult<(StatusCode, axum::Json<ServerUser>)> {
    let (user, created) = app.accounts.server_put(&user_id, body).await?;
    Ok((created_or_ok(created), axum::Json(user)))
}

async fn get_user(
    State(app): State<Arc<AppState>>,
    _key: ServerKey,
    Path(user_id): Path<String>,
) -> ApiResult<axum::Json<ServerUser>> {
    Ok(axum::Json(app.accounts.server_get(&user_id).await?))
}

async fn deactivate(
    State(app): State<Arc<AppState>>,
    _key: ServerKey,
    Path(user_id): Path<String>,
) -> ApiResult<StatusCode> {
    app.accounts.deactivate(&user_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn mint(
    State(app): State<Arc<AppState>>,
    _key: ServerKey,
    Path(user_id): Path<String>,
    JsonBody(body): JsonBody<MintSession>,
) -> ApiResult<(StatusCode, axum::Json<SessionCreated>)> {
    Ok((
        StatusCode::CREATED,
        axum::Json(app.accounts.mint(&user_id, body).await?),
    ))
}
