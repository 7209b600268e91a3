//! Input validation (PROTOCOL.md 1, 2, 6 and 7): every client-supplied
//! string and object is checked here before it reaches storage.

use serde_json::Value;
use serde_json::value::RawValue;
use tokenim_proto::Content;

use crate::{Error, Result};

/// Longest display name or group title, in characters.
pub const MAX_NAME_CHARS: usize = 128;
/// Longest opaque ID a client may send (user, conversation, message IDs).
pub const MAX_ID_BYTES: usize = 64;
/// Most user IDs in one request (group creation, adding members).
pub const MAX_USER_IDS_PER_REQUEST: usize = 1000;

pub fn username(name: &str) -> Result<()> {
    let ok_len = (3..=32).contains(&name.len());
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b));
    if ok_len && ok_chars {
        Ok(())
    } else {
        Err(Error::bad_request(
            "username must be 3-32 characters of a-z, 0-9, '_', '.', '-'",
        ))
    }
}

pub fn password(pw: &str) -> Result<()> {
    let n = pw.chars().count();
    if (8..=128).contains(&n) {
        Ok(())
    } else {
        Err(Error::bad_request("password must be 8-128 characters"))
    }
}

pub fn display_name(name: &str) -> Result<()> {
    let n = name.chars().count();
    if n == 0 || n > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(Error::bad_request(format!(
            "display_name must be 1-{MAX_NAME_CHARS} characters without control characters"
        )));
    }
    Ok(())
}

pub fn title(title: &str) -> Result<()> {
    let n = title.chars().count();
    if n > MAX_NAME_CHARS || title.chars().any(char::is_control) {
        return Err(Error::bad_request(format!(
            "title must be at most {MAX_NAME_CHARS} characters without control characters"
        )));
    }
    Ok(())
}

pub fn device_id(id: &str) -> Result<()> {
    let ok = (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::bad_request(
            "device_id must be 1-64 characters of A-Z, a-z, 0-9, '_', '.', '-'",
        ))
    }
}

pub const PLATFORMS: [&str; 6] = ["web", "ios", "android", "desktop", "cli", "bot"];

pub fn platform(p: &str) -> Result<()> {
    if PLATFORMS.contains(&p) {
        Ok(())
    } else {
        Err(Error::bad_request(format!(
            "platform must be one of {}",
            PLATFORMS.join(", ")
        )))
    }
}

pub fn client_msg_id(id: &str) -> Result<()> {
    let ok = (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::bad_request(
            "client_msg_id must be 1-64 characters of A-Z, a-z, 0-9, '_', '.', ':', '-'",
        ))
    }
}

/// An opaque ID given by a client (`conv_id`, `user_id`): bounded, printable.
/// An ID the app chooses (`user_id`, `conv_id`; PROTOCOL-INTEGRATION
/// I1.2): 1-64 of `[A-Za-z0-9_.:-]`. Whether it may take the server's own
/// prefix (`u_`, `c_`) is the caller's to say.
pub fn app_id(what: &str, id: &str) -> Result<()> {
    let ok = (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b));
    if !ok {
        return Err(Error::bad_request(format!(
            "{what} must be 1-64 characters of A-Z, a-z, 0-9, '_', '.', ':', '-'"
        )));
    }
    Ok(())
}

pub fn opaque_id(what: &str, id: &str) -> Result<()> {
    if id.is_empty() || id.len() > MAX_ID_BYTES || id.bytes().any(|b| !b.is_ascii_graphic()) {
        return Err(Error::bad_request(format!(
            "{what} must be 1-{MAX_ID_BYTES} printable bytes"
        )));
    }
    Ok(())
}

/// Checks message content (an object with a string `type`, at most
/// `max_bytes` as compact JSON) and returns its compact form.
pub fn content(value: &Value, max_bytes: u64) -> Result<Content> {
    let Some(obj) = value.as_object() else {
        return Err(Error::bad_request("content must be a JSON object"));
    };
    match obj.get("type") {
        Some(Value::String(t)) if !t.is_empty() => {}
        _ => {
            return Err(Error::bad_request(
                "content.type must be a non-empty string",
            ));
        }
    }
    if let Some(m) = obj.get("mentions") {
        mentions(m)?;
    }
    let compact = serde_json::to_string(value).expect("a JSON value serializes");
    if compact.len() as u64 > max_bytes {
        return Err(Error::too_large(format!(
            "content is {} bytes, the limit is {max_bytes}",
            compact.len()
        )));
    }
    Ok(RawValue::from_string(compact).expect("compact JSON is valid JSON"))
}

/// Most user IDs in a message's `mentions`.
pub const MAX_MENTIONS: usize = 100;

/// `content.mentions` (PROTOCOL-INTEGRATION I-12): an array of at most
/// [`MAX_MENTIONS`] user IDs (repeats allowed; they count once when
/// deciding a push).
pub fn mentions(value: &Value) -> Result<()> {
    let Some(list) = value.as_array() else {
        return Err(Error::bad_request(
            "content.mentions must be an array of user IDs",
        ));
    };
    if list.len() > MAX_MENTIONS {
        return Err(Error::bad_request(format!(
            "content.mentions holds at most {MAX_MENTIONS} user IDs"
        )));
    }
    for v in list {
        match v.as_str() {
            Some(id) if opaque_id("user_id", id).is_ok() => {}
            _ => {
                return Err(Error::bad_request(
                    "content.mentions must be an array of user IDs",
                ));
            }
        }
    }
    Ok(())
}

/// Checks a list of user IDs in a request and removes duplicates, keeping
/// the first occurrence's order.
pub fn user_ids(ids: &[String]) -> Result<Vec<String>> {
    if ids.len() > MAX_USER_IDS_PER_REQUEST {
        return Err(Error::too_large(format!(
            "at most {MAX_USER_IDS_PER_REQUEST} user_ids per request"
        )));
    }
    let mut seen = std::collections::HashSet::with_capacity(ids.len());
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        opaque_id("user_id", id)?;
        if seen.insert(id.as_str()) {
            out.push(id.clone());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn usernames() {
        assert!(username("alice").is_ok());
        assert!(username("a.b_c-9").is_ok());
        assert!(username("Alice").is_err());
        assert!(username("al").is_err());
        assert!(username(&"a".repeat(33)).is_err());
        assert!(username("al ice").is_err());
    }

    #[test]
    fn passwords_count_characters() {
        assert!(password("ééééééé").is_err());
        assert!(password("éééééééé").is_ok());
        assert!(password(&"x".repeat(129)).is_err());
    }

    #[test]
    fn content_rules() {
        assert!(content(&json!({"type": "text", "text": "hi"}), 100).is_ok());
        assert_eq!(
            content(&json!({"text": "hi"}), 100).unwrap_err().code,
            tokenim_proto::ErrorCode::BadRequest
        );
        assert_eq!(
            content(&json!("x"), 100).unwrap_err().code,
            tokenim_proto::ErrorCode::BadRequest
        );
        let big = json!({"type": "text", "text": "x".repeat(200)});
        assert_eq!(
            content(&big, 100).unwrap_err().code,
            tokenim_proto::ErrorCode::TooLarge
        );
        assert!(content(&json!({"type": "text", "mentions": ["u_a", "bob.1"]}), 100).is_ok());
        assert!(content(&json!({"type": "text", "mentions": []}), 100).is_ok());
        for bad in [
            json!({"type": "text", "mentions": "u_a"}),
            json!({"type": "text", "mentions": [1]}),
            json!({"type": "text", "mentions": ["a b"]}),
            json!({"type": "text", "mentions": [""]}),
            json!({"type": "text", "mentions": null}),
            json!({"type": "text", "mentions": vec!["u_a"; MAX_MENTIONS + 1]}),
        ] {
            let e = content(&bad, 10_000).expect_err(&bad.to_string());
            assert_eq!(e.code, tokenim_proto::ErrorCode::BadRequest, "{bad}");
            assert!(e.message.contains("mentions"), "{}", e.message);
        }
        let c = content(&json!({"type" : "text",  "text": "a b"}), 100).unwrap();
        assert_eq!(c.get(), r#"{"text":"a b","type":"text"}"#);
    }

    #[test]
    fn client_msg_ids() {
        assert!(client_msg_id("7f3c1a9e-0:x.y_z").is_ok());
        assert!(client_msg_id("").is_err());
        assert!(client_msg_id("a b").is_err());
        assert!(client_msg_id(&"a".repeat(65)).is_err());
    }
}
