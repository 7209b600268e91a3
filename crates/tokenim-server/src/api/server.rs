//! The server API for the app's backend (PROTOCOL-INTEGRATION I1):
//! `/v1/server/...` and `/v1/admin/...`, authenticated by an API key
//! ([`ServerKey`]), never by a user's token.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequestParts, State};
use axum::http::{header, request::Parts};
use axum::routing::post;
use tokenim_core::Error;
use tokenim_proto::*;

use crate::api::error::{ApiError, ApiResult};
use crate::api::http::parse_json;
use crate::state::AppState;

/// The app's backend, by the name of the API key it presented.
pub struct ServerKey(pub String);

impl FromRequestParts<Arc<AppState>> for ServerKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<AppState>) -> ApiResult<Self> {
        let given = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| Error::unauthorized("an API key is required"))?;
        match app.api_keys.find(given) {
            Some(name) => Ok(ServerKey(name.to_owned())),
            None => Err(Error::unauthorized("an API key is required").into()),
        }
    }
}

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/server/users", post(bulk_users))
        .route("/v1/admin/users", post(bulk_users))
}

/// `POST /v1/server/users` (alias `/v1/admin/users`): bulk account
/// creation (benchmarks, imports).
#[derive(serde::Deserialize)]
struct BulkUsers {
    users: Vec<CreateAccount>,
}

#[derive(serde::Serialize)]
struct BulkCreated {
    user_ids: Vec<Option<String>>,
}

async fn bulk_users(
    State(app): State<Arc<AppState>>,
    _key: ServerKey,
    body: Body,
) -> ApiResult<axum::Json<BulkCreated>> {
    let bytes = axum::body::to_bytes(body, 64 << 20)
        .await
        .map_err(|_| Error::too_large("the body is over 64 MiB"))?;
    let req: BulkUsers = parse_json(&bytes)?;
    if req.users.len() > 100_000 {
        return Err(Error::too_large("at most 100000 users per request").into());
    }
    Ok(axum::Json(BulkCreated {
        user_ids: app.accounts.bulk_register(req.users).await?,
    }))
}
