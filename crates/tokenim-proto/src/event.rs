use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Message content: a JSON object with a string `type`, kept as the compact
/// JSON text the server validated, so it is stored and relayed unparsed.
pub type Content = Box<RawValue>;

/// Kinds of timeline events (PROTOCOL.md 1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Message,
    Recall,
    Edit,
    MemberJoined,
    MemberLeft,
    MemberRemoved,
    RoleChanged,
    ConvUpdated,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Message => "message",
            EventKind::Recall => "recall",
            EventKind::Edit => "edit",
            EventKind::MemberJoined => "member_joined",
            EventKind::MemberLeft => "member_left",
            EventKind::MemberRemoved => "member_removed",
            EventKind::RoleChanged => "role_changed",
            EventKind::ConvUpdated => "conv_updated",
        }
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// One timeline event as it appears in pushes, sync and history.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    pub conv_id: String,
    pub seq: u64,
    pub msg_id: String,
    pub ts: i64,
    pub sender: String,
    pub sender_device: String,
    pub kind: EventKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_msg_id: Option<String>,
    /// `None` (JSON `null`) once the event was recalled.
    pub content: Option<Content>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub recalled: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub edited: bool,
}
