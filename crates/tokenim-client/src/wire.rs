//! Reading server frames: through [`ServerFrame`] itself (the protocol's one
//! definition), with the frames the actor handles apart picked out.

#[cfg(test)]
use serde_json::Value;
use tokenim_proto::{Conversation, Event, RequestId, ServerFrame, SyncConversation};

use crate::{Error, Result};

/// One frame from the server.
#[derive(Debug)]
pub(crate) enum Incoming {
    /// A frame without events.
    Frame(ServerFrame),
    /// `{"type": "event"}`.
    Event(Event),
    /// `{"type": "sync_result"}`.
    SyncResult {
        id: Option<RequestId>,
        conversations: Vec<SyncConversation>,
        has_more: bool,
    },
    /// `{"type": "conv_added"}`.
    ConvAdded(Conversation),
    /// A type this SDK does not know (a newer server): ignored.
    Unknown(String),
}

pub(crate) fn parse(text: &str) -> Result<Incoming> {
    let f: ServerFrame =
        serde_json::from_str(text).map_err(|e| Error::Protocol(format!("frame: {e}")))?;
    Ok(match f {
        ServerFrame::Event { event } => Incoming::Event(event),
        ServerFrame::SyncResult {
            id,
            conversations,
            has_more,
        } => Incoming::SyncResult {
            id,
            conversations,
            has_more,
        },
        ServerFrame::ConvAdded { conversation } => Incoming::ConvAdded(conversation),
        ServerFrame::Unknown => {
            #[derive(serde::Deserialize)]
            struct Type {
                #[serde(rename = "type")]
                ty: String,
            }
            let t: Type = serde_json::from_str(text).map_err(|e| Error::Protocol(e.to_string()))?;
            Incoming::Unknown(t.ty)
        }
        f => Incoming::Frame(f),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_frames_with_events() {
        let t = r#"{"type":"event","event":{"conv_id":"c","seq":1,"msg_id":"m","ts":1,
            "sender":"u","sender_device":"d","kind":"message","client_msg_id":"x",
            "content":{"type":"text","text":"hi"}}}"#;
        let Incoming::Event(e) = parse(t).unwrap() else {
            panic!("not an event")
        };
        assert_eq!(e.seq, 1);
        let c: Value = serde_json::from_str(e.content.unwrap().get()).unwrap();
        assert_eq!(c["text"], "hi");

        let t = r#"{"type":"sync_result","id":"s1","conversations":[{"conv_id":"c",
            "last_seq":2,"read_seq":0,"unread":2,"has_more":false,"events":[
            {"conv_id":"c","seq":2,"msg_id":"m","ts":1,"sender":"u","sender_device":"d",
             "kind":"recall","content":null,"recalled":true}]}],"has_more":true}"#;
        let Incoming::SyncResult {
            id,
            conversations,
            has_more,
        } = parse(t).unwrap()
        else {
            panic!("not a sync result")
        };
        assert_eq!(id, Some(Value::from("s1")));
        assert!(has_more);
        assert_eq!(conversations[0].events[0].seq, 2);

        let t = r#"{"type":"send_ack","id":"x","client_msg_id":"x","conv_id":"c",
            "msg_id":"m","seq":3,"ts":5}"#;
        assert!(matches!(
            parse(t).unwrap(),
            Incoming::Frame(ServerFrame::SendAck(_))
        ));
        assert!(matches!(
            parse(r#"{"type":"future_thing"}"#).unwrap(),
            Incoming::Unknown(_)
        ));
    }
}
