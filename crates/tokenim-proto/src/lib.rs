//! Wire types of the tokenim protocol (`docs/protocol.md`): HTTP request and
//! response bodies, WebSocket frames, events and error codes.
//!
//! This is the only crate that derives serde for the protocol. It holds no
//! logic beyond (de)serialization and must not depend on any other tokenim
//! crate.

mod error;
mod event;
mod frames;
mod http;
mod outbound;
mod server_convs;
pub mod system;
mod webhook;

pub use error::{ErrorBody, ErrorCode, ErrorResponse, close};
pub use event::{Content, Event, EventKind, decode_event, deserialize_events, event_frame_json};
pub use frames::*;
pub use http::*;
pub use outbound::*;
pub use server_convs::*;
pub use webhook::*;

/// Version of the wire protocol this crate describes.
pub const PROTOCOL_VERSION: u32 = 1;
