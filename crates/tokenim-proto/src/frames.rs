//! WebSocket frames (PROTOCOL.md section 3).
//!
//! Client frames are one struct per `type` so that the server can parse the
//! envelope first (to echo `id` even for bad frames) and then the body.
//! [`ClientFrame`] wraps them for clients that serialize.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Conversation, ErrorCode, Event};

/// A request `id`: a string or a number chosen by the client, echoed back.
pub type RequestId = Value;

/// The part of every client frame read before anything else.
#[derive(Debug, Deserialize)]
pub struct Envelope {
    #[serde(rename = "type")]
    pub ty: String,
    #[serde(default)]
    pub id: Option<RequestId>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuthFrame {
    pub token: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PingFrame {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<RequestId>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SendFrame {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<RequestId>,
    pub conv_id: String,
    pub client_msg_id: String,
    pub content: Value,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecallFrame {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<RequestId>,
    pub conv_id: String,
    pub client_msg_id: String,
    pub target_seq: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EditFrame {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<RequestId>,
    pub conv_id: String,
    pub client_msg_id: String,
    pub target_seq: u64,
    pub content: Value,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AckFrame {
    pub conv_id: String,
    pub seq: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SyncCursor {
    pub conv_id: String,
    pub after_seq: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SyncFrame {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<RequestId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursors: Option<Vec<SyncCursor>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReadFrame {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<RequestId>,
    pub conv_id: String,
    pub seq: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TypingFrame {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<RequestId>,
    pub conv_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PresenceSubFrame {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<RequestId>,
    pub user_ids: Vec<String>,
}

/// Every frame a client sends, for clients that build frames.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    Auth(AuthFrame),
    Ping(PingFrame),
    Send(SendFrame),
    Recall(RecallFrame),
    Edit(EditFrame),
    Ack(AckFrame),
    Sync(SyncFrame),
    Read(ReadFrame),
    Typing(TypingFrame),
    PresenceSub(PresenceSubFrame),
}

/// Reasons a socket is kicked (PROTOCOL.md 3.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KickReason {
    Replaced,
    LoggedOut,
    Revoked,
    SlowConsumer,
    /// The app's backend deactivated the user (PROTOCOL-INTEGRATION I1.2).
    Deactivated,
}

/// One conversation in a `sync_result`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SyncConversation {
    pub conv_id: String,
    pub last_seq: u64,
    pub read_seq: u64,
    pub unread: u64,
    pub events: Vec<Event>,
    pub has_more: bool,
}

/// The acknowledgement of a request that created (or had created) an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendAck {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<RequestId>,
    pub client_msg_id: String,
    pub conv_id: String,
    pub msg_id: String,
    pub seq: u64,
    pub ts: i64,
    /// The stored content, present only when a `message.before_send`
    /// webhook replaced the content sent (PROTOCOL-INTEGRATION I-19).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Value>,
}

/// Every frame the server sends.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    AuthOk {
        user_id: String,
        device_id: String,
        heartbeat_ms: u64,
        server_time: i64,
        /// The server's `max_content_bytes`, so a client can show the limit
        /// before a send is refused (docs/protocol.md decision 33).
        #[serde(default)]
        max_content_bytes: u64,
    },
    Error {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        code: ErrorCode,
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
    Pong {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
    },
    SendAck(SendAck),
    Event {
        event: Event,
    },
    SyncResult {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        conversations: Vec<SyncConversation>,
        has_more: bool,
    },
    Receipt {
        conv_id: String,
        user_id: String,
        read_seq: u64,
    },
    Delivered {
        conv_id: String,
        user_id: String,
        seq: u64,
    },
    Typing {
        conv_id: String,
        user_id: String,
    },
    Presence {
        user_id: String,
        online: bool,
        last_seen: i64,
    },
    ConvAdded {
        conversation: Conversation,
    },
    ConvRemoved {
        conv_id: String,
    },
    Kicked {
        reason: KickReason,
    },
    /// A frame type newer than this crate: clients read it and ignore it;
    /// the server never sends it.
    #[serde(other)]
    Unknown,
}

impl ServerFrame {
    /// Serializes the frame as compact JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("server frames always serialize")
    }
}
