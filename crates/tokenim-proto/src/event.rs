//! Timeline events (PROTOCOL.md 1.1) and their one codec: the `event`
//! frame, and reading an event with its content kept as raw text.

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
    /// The user who made the event; absent on events the app's backend
    /// made without a user (`system`, PROTOCOL-INTEGRATION I-9).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
    /// The device it was made from; absent when no device made it (the
    /// server API, with or without a user).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender_device: Option<String>,
    /// Made by the app's backend without a user (I-9); omitted when false.
    #[serde(default, skip_serializing_if = "is_false")]
    pub system: bool,
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

impl Event {
    /// Whether `user_id` made this event (never true of a system event).
    pub fn sent_by(&self, user_id: &str) -> bool {
        self.sender.as_deref() == Some(user_id)
    }
}

/// The event frame `{"type":"event","event":...}` for `e`: the same text as
/// `ServerFrame::Event { event }.to_json()`, without cloning the event.
pub fn event_frame_json(e: &Event) -> String {
    #[derive(Serialize)]
    struct Frame<'a> {
        #[serde(rename = "type")]
        ty: &'static str,
        event: &'a Event,
    }
    serde_json::to_string(&Frame {
        ty: "event",
        event: e,
    })
    .expect("events serialize")
}

/// An event read from JSON text that is already an event (a stored record,
/// a message from another node): like [`Event`], with `content` taken as
/// its exact text instead of being parsed again.
#[derive(Deserialize)]
struct RawEvent {
    conv_id: String,
    seq: u64,
    msg_id: String,
    ts: i64,
    #[serde(default)]
    sender: Option<String>,
    #[serde(default)]
    sender_device: Option<String>,
    #[serde(default)]
    system: bool,
    kind: EventKind,
    #[serde(default)]
    client_msg_id: Option<String>,
    #[serde(default)]
    content: Option<Content>,
    #[serde(default)]
    recalled: bool,
    #[serde(default)]
    edited: bool,
}

/// Reads one event from its JSON (as [`Event`] serializes it), keeping the
/// content unparsed. The storage engines and the cluster bus read events
/// through this; it is the inverse of `serde_json::to_vec(&event)`.
pub fn decode_event(json: &[u8]) -> serde_json::Result<Event> {
    let e: RawEvent = serde_json::from_slice(json)?;
    Ok(e.into())
}

impl From<RawEvent> for Event {
    fn from(e: RawEvent) -> Event {
        Event {
            conv_id: e.conv_id,
            seq: e.seq,
            msg_id: e.msg_id,
            ts: e.ts,
            sender: e.sender,
            sender_device: e.sender_device,
            system: e.system,
            kind: e.kind,
            client_msg_id: e.client_msg_id,
            content: e.content,
            recalled: e.recalled,
            edited: e.edited,
        }
    }
}

/// A list of events read as [`decode_event`] reads one, for messages that
/// carry several (the cluster bus).
pub fn deserialize_events<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Event>, D::Error> {
    let raw: Vec<RawEvent> = Vec::deserialize(d)?;
    Ok(raw.into_iter().map(Event::from).collect())
}

/// Reads `content` through a `Value`, so that an `Event` also deserializes
/// inside buffered (internally tagged) enums such as `ServerFrame`, where a
/// `RawValue` cannot be read directly. (The server reads its stored events
/// with [`decode_event`] and does not pay for this.)
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
    use super::*;
    use crate::ServerFrame;

    #[test]
    fn one_codec_for_frames_and_records() {
        let text = r#"{"conv_id":"c","seq":7,"msg_id":"m","ts":3,"sender":"u",
            "sender_device":"d","kind":"edit","client_msg_id":"x",
            "content":{"type":"text", "text":"hi"},"edited":true}"#;
        let e = decode_event(text.as_bytes()).unwrap();
        // The content is kept as its exact text, spacing and key order too.
        assert_eq!(
            e.content.as_ref().unwrap().get(),
            r#"{"type":"text", "text":"hi"}"#
        );
        assert_eq!(
            (e.seq, e.kind, e.edited, e.recalled),
            (7, EventKind::Edit, true, false)
        );
        let again = decode_event(&serde_json::to_vec(&e).unwrap()).unwrap();
        assert_eq!(
            serde_json::to_string(&again).unwrap(),
            serde_json::to_string(&e).unwrap()
        );

        let frame = ServerFrame::Event { event: e.clone() }.to_json();
        assert_eq!(event_frame_json(&e), frame);

        let recalled = decode_event(
            br#"{"conv_id":"c","seq":1,"msg_id":"m","ts":1,"sender":"u",
                "sender_device":"d","kind":"message","content":null,"recalled":true}"#,
        )
        .unwrap();
        assert!(recalled.content.is_none() && recalled.recalled);
        assert!(event_frame_json(&recalled).contains(r#""content":null"#));
        assert!(decode_event(b"{}").is_err());
    }

    #[test]
    fn system_events_have_no_sender_and_old_events_still_read() {
        let text = r#"{"conv_id":"c","seq":2,"msg_id":"m","ts":3,"system":true,
            "kind":"message","client_msg_id":"x","content":{"type":"text","text":"hi"}}"#;
        let e = decode_event(text.as_bytes()).unwrap();
        assert!(e.system && e.sender.is_none() && e.sender_device.is_none());
        assert!(!e.sent_by(""));
        let out = serde_json::to_string(&e).unwrap();
        assert!(out.contains(r#""system":true"#), "{out}");
        assert!(!out.contains("sender"), "{out}");
        let frame = ServerFrame::Event { event: e.clone() }.to_json();
        assert_eq!(event_frame_json(&e), frame);
        let f: ServerFrame = serde_json::from_str(&frame).unwrap();
        assert!(
            matches!(f, ServerFrame::Event { event } if event.system && event.sender.is_none())
        );

        // An event stored before `system` existed: a sender, no flag.
        let old = decode_event(
            br#"{"conv_id":"c","seq":1,"msg_id":"m","ts":1,"sender":"u",
                "sender_device":"d","kind":"message","content":{"type":"text","text":"a"}}"#,
        )
        .unwrap();
        assert!(!old.system && old.sent_by("u"));
        assert_eq!(old.sender_device.as_deref(), Some("d"));
        assert!(!serde_json::to_string(&old).unwrap().contains("system"));

        // A member's message posted by the backend: a sender, no device.
        let as_member = decode_event(
            br#"{"conv_id":"c","seq":3,"msg_id":"m","ts":1,"sender":"u",
                "kind":"message","content":{"type":"text","text":"a"}}"#,
        )
        .unwrap();
        assert!(as_member.sent_by("u") && as_member.sender_device.is_none());
    }

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
