//! Message content, typed (PROTOCOL.md 1.1): text (with optional
//! mentions), images and files, and anything else as JSON (`encrypted`, an
//! application's own types). What the server stores is always the JSON
//! object; these types only build and read it.

use serde_json::{Map, Value, json};

use crate::Event;

/// A message's content.
#[derive(Debug, Clone, PartialEq)]
pub enum MessageContent {
    /// `{"type": "text", "text", "mentions"?}`.
    Text {
        /// The text.
        text: String,
        /// User IDs the text mentions (omitted from the JSON when empty).
        mentions: Vec<String>,
    },
    /// `{"type": "image", "url", "name"?, "size"?}`.
    Image {
        /// Where the image is.
        url: String,
        /// Its file name.
        name: Option<String>,
        /// Its size in bytes.
        size: Option<u64>,
    },
    /// `{"type": "file", "url", "name"?, "size"?}`.
    File {
        /// Where the file is.
        url: String,
        /// Its file name.
        name: Option<String>,
        /// Its size in bytes.
        size: Option<u64>,
    },
    /// Any other object with a string `type`, as it is.
    Other(Value),
}

impl MessageContent {
    /// Plain text.
    pub fn text(text: impl Into<String>) -> MessageContent {
        MessageContent::Text {
            text: text.into(),
            mentions: Vec::new(),
        }
    }

    /// Text that mentions `user_ids` (who then get it at the `mentions`
    /// notification level).
    pub fn text_mentioning(text: impl Into<String>, user_ids: &[&str]) -> MessageContent {
        MessageContent::Text {
            text: text.into(),
            mentions: user_ids.iter().map(|u| (*u).to_owned()).collect(),
        }
    }

    /// The JSON object sent and stored.
    pub fn to_value(&self) -> Value {
        let attachment = |ty: &str, url: &str, name: &Option<String>, size: &Option<u64>| {
            let mut m = Map::new();
            m.insert("type".into(), json!(ty));
            m.insert("url".into(), json!(url));
            if let Some(n) = name {
                m.insert("name".into(), json!(n));
            }
            if let Some(s) = size {
                m.insert("size".into(), json!(s));
            }
            Value::Object(m)
        };
        match self {
            MessageContent::Text { text, mentions } if mentions.is_empty() => {
                json!({"type": "text", "text": text})
            }
            MessageContent::Text { text, mentions } => {
                json!({"type": "text", "text": text, "mentions": mentions})
            }
            MessageContent::Image { url, name, size } => attachment("image", url, name, size),
            MessageContent::File { url, name, size } => attachment("file", url, name, size),
            MessageContent::Other(v) => v.clone(),
        }
    }

    /// Reads a content object; what is not a well-formed text, image or
    /// file is [`MessageContent::Other`].
    pub fn from_value(v: &Value) -> MessageContent {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        let attachment = || Some((s("url")?, s("name"), v.get("size").and_then(Value::as_u64)));
        let typed = match v.get("type").and_then(Value::as_str) {
            Some("text") => s("text").map(|text| MessageContent::Text {
                text,
                mentions: v
                    .get("mentions")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|m| m.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default(),
            }),
            Some("image") => {
                attachment().map(|(url, name, size)| MessageContent::Image { url, name, size })
            }
            Some("file") => {
                attachment().map(|(url, name, size)| MessageContent::File { url, name, size })
            }
            _ => None,
        };
        typed.unwrap_or_else(|| MessageContent::Other(v.clone()))
    }

    /// The content of a message event (`None` for other kinds and for
    /// recalled messages).
    pub fn of(e: &Event) -> Option<MessageContent> {
        if e.kind != crate::EventKind::Message {
            return None;
        }
        let v: Value = serde_json::from_str(e.content.as_ref()?.get()).ok()?;
        Some(MessageContent::from_value(&v))
    }
}

impl From<&str> for MessageContent {
    fn from(t: &str) -> Self {
        MessageContent::text(t)
    }
}

impl From<String> for MessageContent {
    fn from(t: String) -> Self {
        MessageContent::text(t)
    }
}

/// A JSON object, as it is (checked by the server: a string `type`, within
/// the size limit).
impl From<Value> for MessageContent {
    fn from(v: Value) -> Self {
        MessageContent::from_value(&v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_round_trips_through_json() {
        let cases = [
            (
                MessageContent::text("hi"),
                json!({"type": "text", "text": "hi"}),
            ),
            (
                MessageContent::text_mentioning("hi @b", &["b"]),
                json!({"type": "text", "text": "hi @b", "mentions": ["b"]}),
            ),
            (
                MessageContent::Image {
                    url: "https://x/a.png".into(),
                    name: Some("a.png".into()),
                    size: Some(3),
                },
                json!({"type": "image", "url": "https://x/a.png", "name": "a.png", "size": 3}),
            ),
            (
                MessageContent::File {
                    url: "https://x/f".into(),
                    name: None,
                    size: None,
                },
                json!({"type": "file", "url": "https://x/f"}),
            ),
            (
                MessageContent::Other(json!({"type": "encrypted", "ciphertext": "AAA"})),
                json!({"type": "encrypted", "ciphertext": "AAA"}),
            ),
        ];
        for (c, v) in cases {
            assert_eq!(c.to_value(), v);
            assert_eq!(MessageContent::from_value(&v), c);
            assert_eq!(MessageContent::from(v), c);
        }
        // A malformed text stays as it came.
        let odd = json!({"type": "text", "text": 7});
        assert_eq!(
            MessageContent::from_value(&odd),
            MessageContent::Other(odd.clone())
        );
        assert_eq!(MessageContent::from("x"), MessageContent::text("x"));
    }
}
