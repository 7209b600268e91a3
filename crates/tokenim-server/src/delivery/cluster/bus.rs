//! What nodes tell each other over Redis pub/sub: committed events, frames
//! for users and members, presence changes (on the broadcast channel
//! `{prefix}:bus`), and kicks (on the channel of the node holding the
//! socket, `{prefix}:node:{node_id}`). JSON, with events and frames embedded
//! as they are (no re-escaping).
//!
//! Every message names the node (`node|incarnation`) that sent it; a node
//! ignores its own broadcasts (it delivered locally already). Connection IDs are local to a
//! node, so the socket that sent an event is skipped only by its own node:
//! other nodes push to every socket.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokenim_proto::{Event, KickReason};

use crate::delivery::outbox::Priority;

/// A message as sent (borrowing what it carries).
#[derive(Serialize)]
pub enum Out<'a> {
    Events {
        node: &'a str,
        events: Vec<&'a Event>,
    },
    User {
        node: &'a str,
        user: &'a str,
        p: Prio,
        frame: &'a RawValue,
    },
    Members {
        node: &'a str,
        members: &'a [String],
        p: Prio,
        frame: &'a RawValue,
    },
    Presence {
        node: &'a str,
        user: &'a str,
        online: bool,
        last_seen: i64,
    },
    Kick {
        node: &'a str,
        inc: &'a str,
        conn: u64,
        user: &'a str,
        device: &'a str,
        reason: KickReason,
    },
}

/// A message as received.
#[derive(Deserialize)]
pub enum In {
    Events {
        node: String,
        /// Read with the content kept as the committing node's exact text.
        #[serde(deserialize_with = "tokenim_proto::deserialize_events")]
        events: Vec<Event>,
    },
    User {
        node: String,
        user: String,
        p: Prio,
        frame: Box<RawValue>,
    },
    Members {
        node: String,
        members: Vec<String>,
        p: Prio,
        frame: Box<RawValue>,
    },
    Presence {
        node: String,
        user: String,
        online: bool,
        last_seen: i64,
    },
    Kick {
        node: String,
        /// The incarnation of the node the socket is on, and its ID there.
        inc: String,
        conn: u64,
        user: String,
        device: String,
        reason: KickReason,
    },
}

impl In {
    /// The node that sent it.
    pub fn node(&self) -> &str {
        match self {
            In::Events { node, .. }
            | In::User { node, .. }
            | In::Members { node, .. }
            | In::Presence { node, .. }
            | In::Kick { node, .. } => node,
        }
    }
}

/// A queue priority on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Prio {
    Control,
    Event,
    Ephemeral,
}

impl From<Priority> for Prio {
    fn from(p: Priority) -> Self {
        match p {
            Priority::Control => Prio::Control,
            Priority::Event => Prio::Event,
            Priority::Ephemeral => Prio::Ephemeral,
        }
    }
}

impl From<Prio> for Priority {
    fn from(p: Prio) -> Self {
        match p {
            Prio::Control => Priority::Control,
            Prio::Event => Priority::Event,
            Prio::Ephemeral => Priority::Ephemeral,
        }
    }
}

pub fn encode(m: &Out<'_>) -> Vec<u8> {
    serde_json::to_vec(m).expect("bus messages serialize")
}

pub fn decode(bytes: &[u8]) -> serde_json::Result<In> {
    serde_json::from_slice(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenim_proto::EventKind;

    #[test]
    fn events_and_frames_round_trip_unescaped() {
        let e = Event {
            conv_id: "c_1".into(),
            seq: 3,
            msg_id: "m_1".into(),
            ts: 9,
            sender: Some("u_1".into()),
            sender_device: Some("d".into()),
            system: false,
            kind: EventKind::Message,
            client_msg_id: Some("x".into()),
            content: Some(
                RawValue::from_string(r#"{"type":"text","text":"hé \"q\""}"#.into()).unwrap(),
            ),
            recalled: false,
            edited: false,
        };
        let bytes = encode(&Out::Events {
            node: "n1",
            events: vec![&e],
        });
        let In::Events { node, events } = decode(&bytes).unwrap() else {
            panic!("not events")
        };
        assert_eq!(node, "n1");
        assert_eq!(
            events[0].content.as_ref().unwrap().get(),
            e.content.as_ref().unwrap().get()
        );
        assert_eq!(events[0].seq, 3);

        let frame = RawValue::from_string(r#"{"type":"typing","conv_id":"c"}"#.into()).unwrap();
        let bytes = encode(&Out::Members {
            node: "n2",
            members: &["u_1".to_owned()],
            p: Prio::Ephemeral,
            frame: &frame,
        });
        assert!(std::str::from_utf8(&bytes).unwrap().contains(frame.get()));
        let In::Members {
            members,
            p,
            frame: f,
            ..
        } = decode(&bytes).unwrap()
        else {
            panic!("not members")
        };
        assert_eq!(members, ["u_1"]);
        assert_eq!(p, Prio::Ephemeral);
        assert_eq!(f.get(), frame.get());
    }
}
