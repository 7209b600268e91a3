//! Errors as HTTP responses: the status from the code (the one table in
//! `tokenim-proto`), the JSON body, and `Retry-After` for `rate_limited`.
//! Shared by the JSON API, the socket's upgrade and the router's fallbacks.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokenim_core::Error;
use tokenim_proto::{ErrorBody, ErrorResponse};

/// An error as an HTTP response: status from the code, JSON body, and
/// `Retry-After` for `rate_limited`.
pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let e = self.0;
        let status = StatusCode::from_u16(e.code.http_status()).expect("valid status");
        let body = ErrorResponse {
            error: ErrorBody {
                code: e.code,
                message: e.message,
                retry_after_ms: e.retry_after_ms,
            },
        };
        let mut r = (status, axum::Json(body)).into_response();
        if let Some(ms) = e.retry_after_ms {
            let secs = ms.div_ceil(1000).max(1);
            r.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_str(&secs.to_string()).expect("digits"),
            );
        }
        r
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
