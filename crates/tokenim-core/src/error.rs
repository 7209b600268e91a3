//! The one error type of the domain: a PROTOCOL.md section 5 code and a
//! message for humans, with constructors per code.

use tokenim_proto::ErrorCode;

/// A protocol-level error: a code from PROTOCOL.md section 5 and a message
/// for humans. Everything a client can be told goes through this type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Error {
    pub code: ErrorCode,
    pub message: String,
    /// For `rate_limited`: when to try again.
    pub retry_after_ms: Option<u64>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Error {
            code,
            message: message.into(),
            retry_after_ms: None,
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthorized, message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, message)
    }
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::TooLarge, message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }
    pub fn rate_limited(retry_after_ms: u64) -> Self {
        Error {
            code: ErrorCode::RateLimited,
            message: "rate limit exceeded".into(),
            retry_after_ms: Some(retry_after_ms),
        }
    }
    /// The conversation error that never reveals whether it exists.
    pub fn no_conversation() -> Self {
        Self::not_found("no such conversation")
    }
    pub fn code(&self) -> ErrorCode {
        self.code
    }
    pub fn retryable(&self) -> bool {
        self.code.retryable()
    }
}
