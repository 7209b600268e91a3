//! Error codes (PROTOCOL.md section 5) beside their HTTP statuses, the
//! error body, and the WebSocket close codes.

use serde::{Deserialize, Serialize};

/// Error codes of PROTOCOL.md section 5.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    Conflict,
    TooLarge,
    RateLimited,
    Unavailable,
    Internal,
    /// The app's `message.before_send` webhook refused the message
    /// (PROTOCOL-INTEGRATION I3.2).
    Rejected,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
            ErrorCode::Rejected => "rejected",
        }
    }

    /// The HTTP status that goes with the code (the one mapping, section 5).
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::Conflict => 409,
            ErrorCode::TooLarge => 413,
            ErrorCode::RateLimited => 429,
            ErrorCode::Unavailable => 503,
            ErrorCode::Internal => 500,
            ErrorCode::Rejected => 403,
        }
    }

    /// The code an HTTP status stands for, where the table of section 5 has
    /// one (the inverse of [`ErrorCode::http_status`]; 403 is `forbidden`,
    /// though `rejected` shares it: a body names which).
    pub fn from_http_status(status: u16) -> Option<ErrorCode> {
        Some(match status {
            400 => ErrorCode::BadRequest,
            401 => ErrorCode::Unauthorized,
            403 => ErrorCode::Forbidden,
            404 => ErrorCode::NotFound,
            409 => ErrorCode::Conflict,
            413 => ErrorCode::TooLarge,
            429 => ErrorCode::RateLimited,
            503 => ErrorCode::Unavailable,
            500 => ErrorCode::Internal,
            _ => return None,
        })
    }

    /// Whether a client may retry the same request unchanged.
    pub fn retryable(self) -> bool {
        matches!(self, ErrorCode::RateLimited | ErrorCode::Unavailable)
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `{"error": {...}}`, the body of every HTTP error.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorResponse {
    pub error: ErrorBody,
}

/// The error object inside an HTTP error body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

/// WebSocket close codes of PROTOCOL.md section 3, beside the HTTP status
/// table above: the one place the numbers are written.
pub mod close {
    /// A clean close (the client said goodbye, or the server's last frame).
    pub const NORMAL: u16 = 1000;
    /// The server is shutting down: reconnect (to another node) and sync.
    pub const GOING_AWAY: u16 = 1001;
    /// The peer broke the WebSocket protocol.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// Abnormal end: the write failed (never sent on the wire).
    pub const ABNORMAL: u16 = 1006;
    /// A frame over `max_frame_bytes`.
    pub const TOO_BIG: u16 = 1009;
    /// No valid `auth` frame first, or its token was refused.
    pub const UNAUTHORIZED: u16 = 4001;
    /// Kicked (`kicked` frame first: replaced, logged out, revoked, slow).
    pub const KICKED: u16 = 4002;
    /// Silent for two heartbeats.
    pub const HEARTBEAT_TIMEOUT: u16 = 4003;
}
