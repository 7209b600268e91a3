//! Server API: users of the app's own IDs, sessions minted for them (I1.2). Every route takes an API key ([`ServerKey`]).

use std::sync::Arc;

use axum::Router;

#[allow(unused_imports)]
use crate::api::server::ServerKey;
use crate::state::AppState;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
}
