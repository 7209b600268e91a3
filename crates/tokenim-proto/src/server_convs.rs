//! Bodies of the server API's conversation routes (PROTOCOL-INTEGRATION
//! I1.4): conversations the app's backend creates, fills and posts into.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{ConvType, Event, MemberInfo};

/// `POST /v1/server/conversations`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerCreateConversation {
    /// The direct conversation of exactly two users.
    Direct {
        members: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        conv_id: Option<String>,
    },
    /// A group owned by `owner`; `members` may include the owner.
    Group {
        #[serde(default)]
        title: Option<String>,
        owner: String,
        #[serde(default)]
        members: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        conv_id: Option<String>,
    },
}

/// The conversation object of the server API: the user route's without
/// the per-user `read_seq`, `unread` and `notifications`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerConversation {
    pub conv_id: String,
    #[serde(rename = "type")]
    pub ty: ConvType,
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<Vec<MemberInfo>>,
    pub member_count: u64,
    pub last_seq: u64,
    pub last_event: Option<Event>,
    pub created_at: i64,
    pub only_admins_send: bool,
}

/// `POST /v1/server/conversations/{conv_id}/messages`: a member's message
/// when `as` names one, else a system message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerPostMessage {
    #[serde(rename = "as", default, skip_serializing_if = "Option::is_none")]
    pub as_user: Option<String>,
    pub client_msg_id: String,
    pub content: Value,
}
