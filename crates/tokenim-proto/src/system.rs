//! Bodies of the server-written events (PROTOCOL.md 1.1): recall, edit and
//! the membership and settings events (`by` absent on system events,
//! PROTOCOL-INTEGRATION I-9). The store writes them through these
//! types and every reader (the push path, the SDK, the terminal client)
//! reads them back through [`System::decode`], so a change to a body is a
//! change to one type.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::{Content, Event, EventKind, Role};

/// `recall`: event `target_seq` reads `"content": null, "recalled": true`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recall {
    pub target_seq: u64,
}

/// `edit`: event `target_seq` reads with `content` and `"edited": true`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Edit {
    pub target_seq: u64,
    pub content: Content,
}

/// `member_joined`: `user_ids` were added by `by`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberJoined {
    pub user_ids: Vec<String>,
    /// Who did it; absent when the app's backend did (I-9).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// `member_left`: `user_id` left on their own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberLeft {
    pub user_id: String,
}

/// `member_removed`: `user_id` was removed by `by`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberRemoved {
    pub user_id: String,
    /// Who did it; absent when the app's backend did (I-9).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// `role_changed`: `user_id` now has `role`, set by `by`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoleChanged {
    pub user_id: String,
    pub role: Role,
    /// Who did it; absent when the app's backend did (I-9).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// `conv_updated`: only the fields that changed are present.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ConvUpdated {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub only_admins_send: Option<bool>,
    /// Who did it; absent when the app's backend did (I-9).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// The body of any event that is not a `message`.
#[derive(Debug, Clone)]
pub enum System {
    Recall(Recall),
    Edit(Edit),
    MemberJoined(MemberJoined),
    MemberLeft(MemberLeft),
    MemberRemoved(MemberRemoved),
    RoleChanged(RoleChanged),
    ConvUpdated(ConvUpdated),
}

impl System {
    /// The event kind this body belongs to.
    pub fn kind(&self) -> EventKind {
        match self {
            System::Recall(_) => EventKind::Recall,
            System::Edit(_) => EventKind::Edit,
            System::MemberJoined(_) => EventKind::MemberJoined,
            System::MemberLeft(_) => EventKind::MemberLeft,
            System::MemberRemoved(_) => EventKind::MemberRemoved,
            System::RoleChanged(_) => EventKind::RoleChanged,
            System::ConvUpdated(_) => EventKind::ConvUpdated,
        }
    }

    /// Reads the body of a `kind` event; `Ok(None)` for a `message`.
    pub fn decode(kind: EventKind, content: &RawValue) -> serde_json::Result<Option<System>> {
        let c = content.get();
        Ok(Some(match kind {
            EventKind::Message => return Ok(None),
            EventKind::Recall => System::Recall(serde_json::from_str(c)?),
            EventKind::Edit => System::Edit(serde_json::from_str(c)?),
            EventKind::MemberJoined => System::MemberJoined(serde_json::from_str(c)?),
            EventKind::MemberLeft => System::MemberLeft(serde_json::from_str(c)?),
            EventKind::MemberRemoved => System::MemberRemoved(serde_json::from_str(c)?),
            EventKind::RoleChanged => System::RoleChanged(serde_json::from_str(c)?),
            EventKind::ConvUpdated => System::ConvUpdated(serde_json::from_str(c)?),
        }))
    }

    /// The body of `e`, if it is a system event whose body reads.
    pub fn of(e: &Event) -> Option<System> {
        System::decode(e.kind, e.content.as_deref()?).ok().flatten()
    }

    /// The kind and content of the event this body makes.
    pub fn parts(&self) -> (EventKind, Content) {
        (self.kind(), self.to_content())
    }

    /// The body as event content.
    pub fn to_content(&self) -> Content {
        let text = match self {
            System::Recall(b) => serde_json::to_string(b),
            System::Edit(b) => serde_json::to_string(b),
            System::MemberJoined(b) => serde_json::to_string(b),
            System::MemberLeft(b) => serde_json::to_string(b),
            System::MemberRemoved(b) => serde_json::to_string(b),
            System::RoleChanged(b) => serde_json::to_string(b),
            System::ConvUpdated(b) => serde_json::to_string(b),
        }
        .expect("system bodies serialize");
        RawValue::from_string(text).expect("serde_json writes valid JSON")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    #[test]
    fn bodies_are_the_protocol_table() {
        let cases = [
            (
                System::Recall(Recall { target_seq: 4 }),
                r#"{"target_seq":4}"#,
            ),
            (
                System::Edit(Edit {
                    target_seq: 4,
                    content: raw(r#"{"type":"text","text":"x"}"#),
                }),
                r#"{"target_seq":4,"content":{"type":"text","text":"x"}}"#,
            ),
            (
                System::MemberJoined(MemberJoined {
                    user_ids: vec!["b".into(), "c".into()],
                    by: Some("a".into()),
                }),
                r#"{"user_ids":["b","c"],"by":"a"}"#,
            ),
            (
                System::MemberLeft(MemberLeft {
                    user_id: "b".into(),
                }),
                r#"{"user_id":"b"}"#,
            ),
            (
                System::MemberRemoved(MemberRemoved {
                    user_id: "b".into(),
                    by: Some("a".into()),
                }),
                r#"{"user_id":"b","by":"a"}"#,
            ),
            (
                System::RoleChanged(RoleChanged {
                    user_id: "b".into(),
                    role: Role::Admin,
                    by: Some("a".into()),
                }),
                r#"{"user_id":"b","role":"admin","by":"a"}"#,
            ),
            (
                System::ConvUpdated(ConvUpdated {
                    title: Some("t".into()),
                    only_admins_send: None,
                    by: Some("a".into()),
                }),
                r#"{"title":"t","by":"a"}"#,
            ),
        ];
        for (body, text) in cases {
            assert_eq!(body.to_content().get(), text);
            let back = System::decode(body.kind(), &raw(text)).unwrap().unwrap();
            assert_eq!(back.to_content().get(), text);
        }
        assert!(
            System::decode(EventKind::Message, &raw(r#"{"type":"text"}"#))
                .unwrap()
                .is_none()
        );
        assert!(System::decode(EventKind::MemberLeft, &raw(r#"{"by":"a"}"#)).is_err());

        // Bodies of system events (I-9) have no `by`, and read back so.
        let by_system = System::MemberRemoved(MemberRemoved {
            user_id: "b".into(),
            by: None,
        });
        assert_eq!(by_system.to_content().get(), r#"{"user_id":"b"}"#);
        let back = System::decode(EventKind::MemberJoined, &raw(r#"{"user_ids":["b"]}"#));
        assert!(matches!(back, Ok(Some(System::MemberJoined(b))) if b.by.is_none()));
    }
}
