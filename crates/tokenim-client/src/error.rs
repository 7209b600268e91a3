//! The SDK's error type.

use tokenim_proto::ErrorCode;

/// Everything that can go wrong in the SDK.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server answered with a protocol error (PROTOCOL.md section 5).
    #[error("{code}: {message}")]
    Api {
        /// The protocol error code.
        code: ErrorCode,
        /// The server's message, for humans.
        message: String,
        /// For `rate_limited`: when to try again, in milliseconds.
        retry_after_ms: Option<u64>,
        /// The HTTP status, when the error came over HTTP.
        status: Option<u16>,
    },
    /// An HTTP transport error (connection refused, timeout, TLS, ...).
    #[error("http: {0}")]
    Http(#[from] reqwest::Error),
    /// A WebSocket transport error.
    #[error("websocket: {0}")]
    WebSocket(#[from] Box<tokio_tungstenite::tungstenite::Error>),
    /// The server said something the protocol does not allow.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The caller passed something the protocol would reject.
    #[error("invalid input: {0}")]
    Invalid(String),
    /// Reading or writing the state file failed.
    #[error("state store: {0}")]
    Store(String),
    /// The connection's background task has stopped (after
    /// [`Messenger::close`](crate::Messenger::close), a kick or a rejected
    /// token).
    #[error("the messenger is stopped")]
    Stopped,
}

/// The SDK's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The protocol error code, when the server sent one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Api { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether repeating the same request unchanged may succeed: transport
    /// errors, `rate_limited` and `unavailable`.
    pub fn retryable(&self) -> bool {
        match self {
            Error::Api { code, .. } => code.retryable(),
            Error::Http(e) => e.is_connect() || e.is_timeout() || e.is_request(),
            Error::WebSocket(_) => true,
            _ => false,
        }
    }

    pub(crate) fn api(code: ErrorCode, message: impl Into<String>) -> Error {
        Error::Api {
            code,
            message: message.into(),
            retry_after_ms: None,
            status: None,
        }
    }
}

impl From<tokio_tungstenite::tungstenite::Error> for Error {
    fn from(e: tokio_tungstenite::tungstenite::Error) -> Self {
        Error::WebSocket(Box::new(e))
    }
}

impl From<tokenim_core::Error> for Error {
    fn from(e: tokenim_core::Error) -> Self {
        Error::Invalid(e.message)
    }
}
