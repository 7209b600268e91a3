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
    #[serde(deserialize_with = "content_any")]
    pub content: Option<Content>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub recalled: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub edited: bool,
}

/// Reads `content` through a `Value`, so that an `Event` also deserializes
/// inside buffered (internally tagged) enums such as `ServerFrame`, where a
/// `RawValue` cannot be read directly. (The server reads its stored events
/// with its own raw record type and does not pay for this.)
fn content_any<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Content>, D::Error> {
    let v: Option<serde_json::Value> = Option::deserialize(d)?;
    match v {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => RawValue::from_string(v.to_string())
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    use crate::ServerFrame;

    #[test]
    fn server_frames_with_events_read_back() {
        let text = r#"{"type":"event","event":{"conv_id":"c","seq":1,"msg_id":"m","ts":1,
            "sender":"u","sender_device":"d","kind":"message","content":{"type":"text","text":"hi"}}}"#;
        let f: ServerFrame = serde_json::from_str(text).unwrap();
        let ServerFrame::Event { event } = f else {
            panic!("not an event frame")
        };
        assert_eq!(
            event.content.unwrap().get(),
            r#"{"text":"hi","type":"text"}"#
        );
        let recalled = text.replace(r#"{"type":"text","text":"hi"}"#, "null");
        let f: ServerFrame = serde_json::from_str(&recalled).unwrap();
        assert!(matches!(f, ServerFrame::Event { event } if event.content.is_none()));
    }
}
