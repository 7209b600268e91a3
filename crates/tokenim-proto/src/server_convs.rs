//! Bodies of the server API (PROTOCOL-INTEGRATION I1): users of the app's
//! own IDs and the sessions minted for them (I1.2), and conversations the
//! app's backend creates, fills and posts into (I1.4).

use serde::{Deserialize, Deserializer, Serialize};
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

/// `PUT /v1/server/users/{user_id}` (I-2): each field absent (`None`: kept),
/// `null` (`Some(None)`: cleared) or a value.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ServerPutUser {
    #[serde(default, deserialize_with = "present")]
    pub display_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    pub username: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    pub password: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    pub avatar_url: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    pub metadata: Option<Option<Value>>,
}

/// A field that is present, as `null` or a value (absent fields take the
/// `default`, `None`).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// The user object of the server API (I1.2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerUser {
    pub user_id: String,
    pub username: Option<String>,
    pub display_name: String,
    pub avatar_url: Option<String>,
    /// The app's own data, a JSON object (`{}` when none).
    pub metadata: Value,
    pub has_password: bool,
    pub deactivated: bool,
    pub created_at: i64,
}

/// `POST /v1/server/users/{user_id}/sessions`: a session minted for the
/// user's device, answered as a password login.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MintSession {
    pub device_id: String,
    pub platform: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
}
