//! Server API: conversations created, filled and posted into by the app's
//! backend (PROTOCOL-INTEGRATION I1.4). Every route takes an API key
//! ([`ServerKey`]); none checks a user's roles or membership (I-10).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use tokenim_proto::*;

use crate::api::error::ApiResult;
use crate::api::http::{JsonBody, created_or_ok, history_query};
use crate::api::server::ServerKey;
use crate::state::AppState;

pub fn routes() -> Router<Arc<AppState>> {
    let conv = "/v1/server/conversations/{conv_id}";
    Router::new()
        .route("/v1/server/conversations", post(create))
        .route(&format!("{conv}/members"), post(add_members))
        .route(
            &format!("{conv}/members/{{user_id}}"),
            delete(remove_member),
        )
        .route(&format!("{conv}/messages"), post(post_message))
        .route(&format!("{conv}/events"), get(events))
}

async fn create(
    State(app): State<Arc<AppState>>,
    ServerKey(key): ServerKey,
    JsonBody(body): JsonBody<ServerCreateConversation>,
) -> ApiResult<(StatusCode, axum::Json<ServerConversation>)> {
    let (c, created) = app.convs.server_create(&key, body).await?;
    Ok((created_or_ok(created), axum::Json(c)))
}

/// `200` with the conversation, also when everyone was a member already.
async fn add_members(
    State(app): State<Arc<AppState>>,
    ServerKey(key): ServerKey,
    Path(conv_id): Path<String>,
    JsonBody(body): JsonBody<AddMembers>,
) -> ApiResult<axum::Json<ServerConversation>> {
    Ok(axum::Json(
        app.convs.server_add(&key, &conv_id, &body.user_ids).await?,
    ))
}

async fn remove_member(
    State(app): State<Arc<AppState>>,
    ServerKey(key): ServerKey,
    Path((conv_id, user_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    app.convs.server_remove(&key, &conv_id, &user_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn post_message(
    State(app): State<Arc<AppState>>,
    ServerKey(key): ServerKey,
    Path(conv_id): Path<String>,
    JsonBody(body): JsonBody<ServerPostMessage>,
) -> ApiResult<(StatusCode, axum::Json<MessagePosted>)> {
    let ack = app.timeline.server_post(&key, &conv_id, body).await?;
    Ok((
        created_or_ok(ack.created),
        axum::Json(MessagePosted {
            msg_id: ack.msg_id,
            seq: ack.seq,
            ts: ack.ts,
            content: ack.content,
        }),
    ))
}

async fn events(
    State(app): State<Arc<AppState>>,
    _key: ServerKey,
    Path(conv_id): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult<axum::Json<EventPage>> {
    let (after, before, limit) = history_query(raw)?;
    Ok(axum::Json(
        app.timeline
            .server_history(&conv_id, after, before, limit)
            .await?,
    ))
}
