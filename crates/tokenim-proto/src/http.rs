//! HTTP JSON bodies (PROTOCOL.md section 2).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Event;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateAccount {
    pub username: String,
    pub password: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccountCreated {
    pub user_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateSession {
    pub username: String,
    pub password: String,
    pub device_id: String,
    pub platform: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionCreated {
    pub token: String,
    pub user_id: String,
    pub device_id: String,
    pub expires_at: i64,
}

/// `POST /v1/sessions` with the app's own JWT instead of a password
/// (PROTOCOL-INTEGRATION I1.3).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JwtSession {
    pub jwt: String,
    pub device_id: String,
    pub platform: String,
}

/// A user as devices see them (PROTOCOL-INTEGRATION I-3): `username` is
/// `null` for users without one; `deactivated` only appears when true.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    pub user_id: String,
    pub username: Option<String>,
    pub display_name: String,
    #[serde(default)]
    pub avatar_url: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deactivated: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserList {
    pub users: Vec<UserInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContactList {
    pub contacts: Vec<UserInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceInfo {
    pub device_id: String,
    pub platform: String,
    pub online: bool,
    pub last_seen: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceList {
    pub devices: Vec<DeviceInfo>,
}

/// `POST /v1/conversations`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CreateConversation {
    Direct {
        peer: String,
    },
    Group {
        #[serde(default)]
        title: Option<String>,
        #[serde(default)]
        members: Vec<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConvType {
    Direct,
    Group,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Member,
    Admin,
    Owner,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Member => "member",
            Role::Admin => "admin",
            Role::Owner => "owner",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    pub user_id: String,
    pub role: Role,
    pub muted_until: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberPage {
    pub members: Vec<MemberInfo>,
    pub has_more: bool,
}

/// The conversation object (PROTOCOL.md 2).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Conversation {
    pub conv_id: String,
    #[serde(rename = "type")]
    pub ty: ConvType,
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<Vec<MemberInfo>>,
    pub member_count: u64,
    pub last_seq: u64,
    pub read_seq: u64,
    pub unread: u64,
    pub last_event: Option<Event>,
    pub created_at: i64,
    pub only_admins_send: bool,
    /// The caller's notification level (PROTOCOL-INTEGRATION I2.1).
    #[serde(default)]
    pub notifications: Notifications,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConversationList {
    pub conversations: Vec<Conversation>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PatchConversation {
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub only_admins_send: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AddMembers {
    pub user_ids: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SetRole {
    pub role: Role,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SetMute {
    pub until: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventPage {
    pub events: Vec<Event>,
    pub has_more: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PostMessage {
    pub client_msg_id: String,
    pub content: Value,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessagePosted {
    pub msg_id: String,
    pub seq: u64,
    pub ts: i64,
    /// The stored content, present only when a `message.before_send`
    /// webhook replaced the content posted (PROTOCOL-INTEGRATION I-19).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Receipts {
    pub read_by: Vec<String>,
    pub unread_by: Vec<String>,
}

/// `PUT /v1/push-token`, the alias of [`PushRegistration`] without Web Push.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PushToken {
    pub provider: String,
    pub token: String,
}

/// `PUT /v1/devices/current/push` (PROTOCOL-INTEGRATION I2.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "provider", rename_all = "snake_case")]
pub enum PushRegistration {
    Apns {
        token: String,
        #[serde(default)]
        environment: ApnsEnvironment,
    },
    Fcm {
        token: String,
    },
    Webpush {
        subscription: WebPushSubscription,
    },
    Webhook {
        token: String,
    },
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApnsEnvironment {
    #[default]
    Production,
    Sandbox,
}

impl ApnsEnvironment {
    pub fn as_str(self) -> &'static str {
        match self {
            ApnsEnvironment::Production => "production",
            ApnsEnvironment::Sandbox => "sandbox",
        }
    }
}

/// A browser's `PushSubscription.toJSON()`; other fields (such as
/// `expirationTime`) are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebPushSubscription {
    pub endpoint: String,
    pub keys: WebPushKeys,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebPushKeys {
    pub p256dh: String,
    pub auth: String,
}

/// `GET /v1/push/webpush-key`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WebPushKey {
    pub public_key: String,
}

/// Which messages of a conversation push to a member's offline devices.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyLevel {
    #[default]
    All,
    Mentions,
    None,
}

/// `"notifications"` of the conversation object, and the body of
/// `PUT /v1/conversations/{conv_id}/notifications`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Notifications {
    pub level: NotifyLevel,
    #[serde(default)]
    pub until: Option<i64>,
}
