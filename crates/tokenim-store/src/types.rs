//! The records the `Store` trait takes and returns: users, sessions,
//! devices, conversations, members, dedup records, committed events.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokenim_proto::{Content, ConvType, Event, NotifyLevel, Role};

#[derive(Debug, Clone)]
pub struct NewUser {
    pub username: String,
    pub display_name: String,
    pub password_hash: String,
    pub now_ms: i64,
}

/// A user. Users the app's backend makes by ID (PROTOCOL-INTEGRATION I1.2)
/// may have no username and no password; the fields added for them read
/// back as absent from records written before they existed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub user_id: String,
    #[serde(default)]
    pub username: Option<String>,
    pub display_name: String,
    #[serde(default)]
    pub password_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar_url: Option<String>,
    /// The app's own data: compact JSON text of an object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deactivated: bool,
    pub created_at: i64,
}

/// One field of a user PUT (I-2): absent keeps it, `null` clears it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Patch<T> {
    #[default]
    Keep,
    Clear,
    Set(T),
}

impl<T: Clone> Patch<T> {
    /// The field after the patch, from its value before.
    pub fn apply(&self, old: Option<T>) -> Option<T> {
        match self {
            Patch::Keep => old,
            Patch::Clear => None,
            Patch::Set(v) => Some(v.clone()),
        }
    }
}

/// Create-or-update of a user by ID (PROTOCOL-INTEGRATION I1.2, I-2), its
/// fields already validated (the password already hashed).
#[derive(Debug, Clone)]
pub struct PutUser {
    pub user_id: String,
    pub username: Patch<String>,
    pub display_name: Patch<String>,
    pub password_hash: Patch<String>,
    pub avatar_url: Patch<String>,
    pub metadata: Patch<String>,
    pub now_ms: i64,
}

impl PutUser {
    /// The user after this PUT, from the one stored (`None`: created), by
    /// the rules both engines share: a deactivated user is not changed
    /// (`conflict`, I-4), only existing `u_...` users may be written, a
    /// password needs a username, and a display name that is absent or
    /// cleared is the username, else the user ID. Username uniqueness is
    /// the engine's to check, atomically with the write.
    pub fn applied_to(&self, old: Option<&User>) -> Result<User, tokenim_core::Error> {
        use tokenim_core::Error;
        if let Some(old) = old
            && old.deactivated
        {
            return Err(Error::conflict("the user is deactivated"));
        }
        if old.is_none() && self.user_id.starts_with("u_") {
            return Err(Error::bad_request(
                "user IDs u_... are the server's own: a PUT cannot create one",
            ));
        }
        let username = self.username.apply(old.and_then(|u| u.username.clone()));
        let password_hash = self
            .password_hash
            .apply(old.and_then(|u| u.password_hash.clone()));
        if password_hash.is_some() && username.is_none() {
            return Err(Error::bad_request("a password needs a username"));
        }
        let fallback = || username.clone().unwrap_or_else(|| self.user_id.clone());
        let display_name = match (&self.display_name, old) {
            (Patch::Set(v), _) => v.clone(),
            (Patch::Keep, Some(o)) => o.display_name.clone(),
            _ => fallback(),
        };
        Ok(User {
            user_id: self.user_id.clone(),
            username,
            display_name,
            password_hash,
            avatar_url: self
                .avatar_url
                .apply(old.and_then(|u| u.avatar_url.clone())),
            metadata: self.metadata.apply(old.and_then(|u| u.metadata.clone())),
            deactivated: false,
            created_at: old.map_or(self.now_ms, |u| u.created_at),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub session_id: String,
    pub user_id: String,
    pub device_id: String,
    pub created_at: i64,
    pub expires_at: i64,
}

/// A device's push registration (PROTOCOL-INTEGRATION I2.1). Fields
/// added after the first release read back from old records as `None`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushTarget {
    /// `apns`, `fcm`, `webpush` or `webhook`.
    pub provider: String,
    /// The provider's device token; for Web Push the subscription's
    /// endpoint URL.
    pub token: String,
    /// APNs: `production` or `sandbox`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// Web Push: the subscription's `keys.p256dh` and `keys.auth`
    /// (base64url, as the browser gave them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p256dh: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<String>,
}

impl PushTarget {
    /// A target with only a provider and a token.
    pub fn new(provider: &str, token: &str) -> PushTarget {
        PushTarget {
            provider: provider.to_owned(),
            token: token.to_owned(),
            environment: None,
            p256dh: None,
            auth: None,
        }
    }

    /// The index key of I-11 (a token belongs to one device): the SHA-256
    /// of `provider:token`, in hex, so it fits an indexed 64-byte column
    /// however long the token is.
    pub fn token_key(&self) -> String {
        token_key(&self.provider, &self.token)
    }

    /// The token's last 6 characters, for logs and the visibility route.
    pub fn token_tail(&self) -> &str {
        let start = self.token.char_indices().rev().nth(5).map_or(0, |(i, _)| i);
        &self.token[start..]
    }
}

/// [`PushTarget::token_key`] of a provider and token.
pub fn token_key(provider: &str, token: &str) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(provider.as_bytes());
    h.update(b":");
    h.update(token.as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

impl std::fmt::Debug for PushTarget {
    /// Tokens are credentials of a sort: only their tail is shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushTarget")
            .field("provider", &self.provider)
            .field("token_tail", &self.token_tail())
            .field("environment", &self.environment)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    pub user_id: String,
    pub device_id: String,
    pub platform: String,
    pub last_seen: i64,
    pub synced_before: bool,
    #[serde(default)]
    pub push: Option<PushTarget>,
    /// The last push attempt (I2.5); `None` before the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_last: Option<crate::PushAttempt>,
}

/// A conversation's metadata and timeline position.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConvMeta {
    pub conv_id: String,
    pub ty: ConvType,
    pub title: Option<String>,
    pub created_at: i64,
    pub only_admins_send: bool,
    /// The two users of a direct conversation, in sorted order.
    pub pair: Option<(String, String)>,
    pub last_seq: u64,
    /// `ts` of the last event (the creation time before the first).
    pub last_ts: i64,
    /// How many `message` events the timeline holds (for unread counts).
    pub msg_count: u64,
    pub member_count: u64,
    #[serde(skip)]
    pub last_event: Option<Arc<Event>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub user_id: String,
    pub role: Role,
    pub muted_until: Option<i64>,
    /// The seq just before the user joined.
    pub joined_after: u64,
    pub read_seq: u64,
    /// `msg_count` of the timeline at `read_seq`.
    pub read_count: u64,
    /// The member's notification level (I2.1) and when it ends; `all`
    /// for records written before there were levels.
    #[serde(default)]
    pub notify_level: NotifyLevel,
    #[serde(default)]
    pub notify_until: Option<i64>,
}

impl Member {
    /// Unread messages: messages after the read marker (PROTOCOL.md 1).
    pub fn unread(&self, conv: &ConvMeta) -> u64 {
        conv.msg_count.saturating_sub(self.read_count)
    }
}

#[derive(Debug, Clone)]
pub struct NewGroup {
    /// The group's ID; `None` for a new server-made one (`c_...`). A
    /// given ID that exists answers that conversation if it is a group
    /// (not created), else `conflict`.
    pub conv_id: Option<String>,
    pub owner: String,
    /// Who creates it: the owner (from a device) or the app's backend.
    pub by: Author,
    pub title: Option<String>,
    /// Other members (without the owner), already deduplicated.
    pub members: Vec<String>,
    pub now_ms: i64,
    pub origin: u64,
}

/// What a timeline write does.
#[derive(Debug, Clone)]
pub enum Op {
    Message {
        content: Content,
    },
    Recall {
        target_seq: u64,
    },
    Edit {
        target_seq: u64,
        content: Content,
    },
    /// Adds users; when the write creates a group, the first of them is
    /// its owner.
    AddMembers {
        user_ids: Vec<String>,
        max_members: u64,
    },
    Leave,
    Remove {
        user_id: String,
    },
    SetRole {
        user_id: String,
        role: Role,
    },
    Update {
        title: Option<String>,
        only_admins_send: Option<bool>,
    },
}

/// The request kinds that share the dedup key space (rule 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestKind {
    Send,
    Recall,
    Edit,
}

/// Who makes a timeline write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Author {
    /// A user, from one of their devices, or through the server API
    /// (`device_id: None`).
    User {
        user_id: String,
        device_id: Option<String>,
    },
    /// The app's backend without a user (PROTOCOL-INTEGRATION I-9): the
    /// event has no sender and no `by`, and is marked `system`.
    /// `dedup_key` is what its `client_msg_id`s are deduplicated under: it
    /// must be a string no user ID can equal.
    System { dedup_key: String },
}

impl Author {
    /// A user acting from `device_id`.
    pub fn device(user_id: &str, device_id: &str) -> Author {
        Author::User {
            user_id: user_id.to_owned(),
            device_id: Some(device_id.to_owned()),
        }
    }

    /// The user who acts, if any.
    pub fn user(&self) -> Option<&str> {
        match self {
            Author::User { user_id, .. } => Some(user_id),
            Author::System { .. } => None,
        }
    }

    /// The device the user acts from, if any.
    pub fn device_id(&self) -> Option<&str> {
        match self {
            Author::User { device_id, .. } => device_id.as_deref(),
            Author::System { .. } => None,
        }
    }

    /// The first half of the dedup key (rule 7): the user, or the system
    /// author's own key.
    pub fn dedup_key(&self) -> &str {
        match self {
            Author::User { user_id, .. } => user_id,
            Author::System { dedup_key } => dedup_key,
        }
    }
}

/// One timeline write, checked by the caller against the rules; the store
/// re-checks membership and dedup atomically with the commit.
#[derive(Debug, Clone)]
pub struct Append {
    pub conv_id: String,
    pub actor: Author,
    /// Present for client requests that are deduplicated.
    pub client_msg_id: Option<String>,
    pub op: Op,
    /// The connection that asked (opaque to the store), so the pusher can
    /// skip it; 0 for HTTP.
    pub origin: u64,
    pub now_ms: i64,
}

impl Append {
    pub fn request_kind(&self) -> Option<RequestKind> {
        match self.op {
            Op::Message { .. } => Some(RequestKind::Send),
            Op::Recall { .. } => Some(RequestKind::Recall),
            Op::Edit { .. } => Some(RequestKind::Edit),
            _ => None,
        }
    }
}

/// What a dedup record remembers: enough to answer a repeat exactly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DedupRecord {
    pub conv_id: String,
    pub kind: RequestKind,
    pub msg_id: String,
    pub seq: u64,
    pub ts: i64,
}

#[derive(Debug, Clone)]
pub enum AppendOutcome {
    Created(Arc<Event>),
    /// A repeat of an earlier request: its original result.
    Duplicate(DedupRecord),
}

impl AppendOutcome {
    pub fn msg_id(&self) -> &str {
        match self {
            AppendOutcome::Created(e) => &e.msg_id,
            AppendOutcome::Duplicate(d) => &d.msg_id,
        }
    }
    pub fn seq(&self) -> u64 {
        match self {
            AppendOutcome::Created(e) => e.seq,
            AppendOutcome::Duplicate(d) => d.seq,
        }
    }
    pub fn ts(&self) -> i64 {
        match self {
            AppendOutcome::Created(e) => e.ts,
            AppendOutcome::Duplicate(d) => d.ts,
        }
    }
    pub fn created(&self) -> bool {
        matches!(self, AppendOutcome::Created(_))
    }
}

/// A committed event as handed to the [`crate::EventSink`].
#[derive(Debug, Clone)]
pub struct Committed {
    pub event: Arc<Event>,
    pub origin: u64,
    /// Users who became members with this event.
    pub added: Vec<String>,
    /// A user who stopped being a member with this event.
    pub removed: Option<String>,
    /// The conversation's members (sorted) right after this event, when the
    /// engine knows them without a read (the SQL engine does: it read them
    /// under the commit's lock), so pushing costs no round trip.
    pub members: Option<Arc<[String]>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckRecord {
    pub user_id: String,
    pub device_id: String,
    pub conv_id: String,
    pub seq: u64,
}
