//! Server API: conversations created, filled and posted into by the app's backend (I1.4). Every route takes an API key ([`ServerKey`]).

use std::sync::Arc;

use axum::Router;

#[allow(unused_imports)]
use crate::api::server::ServerKey;
use crate::state::AppState;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
}
