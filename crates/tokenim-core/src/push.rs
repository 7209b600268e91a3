//! Whether a message pushes to a member, by their notification level
//! (PROTOCOL-INTEGRATION I2.1, I-12). Pure: the caller passes the time and
//! the message's `mentions`; the delivery engine calls [`wants`] for each
//! member it considers, after the checks that need IO (live sockets, the
//! read marker).

use tokenim_proto::NotifyLevel;

/// The level in force at `now_ms`: `level` until `until` (exclusive),
/// then `all`; no `until` holds for ever.
pub fn effective(level: NotifyLevel, until: Option<i64>, now_ms: i64) -> NotifyLevel {
    match until {
        Some(t) if now_ms >= t => NotifyLevel::All,
        _ => level,
    }
}

/// Whether a message with `mentions` (the content's, if any) pushes to
/// `user_id`, whose level is `level` until `until`, at `now_ms`.
pub fn wants(
    level: NotifyLevel,
    until: Option<i64>,
    now_ms: i64,
    mentions: &[&str],
    user_id: &str,
) -> bool {
    match effective(level, until, now_ms) {
        NotifyLevel::All => true,
        NotifyLevel::Mentions => mentions.contains(&user_id),
        NotifyLevel::None => false,
    }
}

/// The `mentions` of a message's content, as [`wants`] takes them: empty
/// when absent or not a list of strings (validation refused those on send).
pub fn mentions_of(content: &serde_json::Value) -> Vec<&str> {
    content
        .get("mentions")
        .and_then(|m| m.as_array())
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use NotifyLevel::{All, Mentions};
    const MUTED: NotifyLevel = NotifyLevel::None;

    #[test]
    fn levels_decide() {
        let none: &[&str] = &[];
        assert!(wants(All, None, 10, none, "u_a"));
        assert!(!wants(MUTED, None, 10, &["u_a"], "u_a"));
        assert!(wants(Mentions, None, 10, &["u_b", "u_a"], "u_a"));
        assert!(!wants(Mentions, None, 10, &["u_b"], "u_a"));
        assert!(!wants(Mentions, None, 10, none, "u_a"));
    }

    #[test]
    fn a_level_holds_until_until_then_all() {
        assert!(!wants(MUTED, Some(100), 99, &[], "u_a"));
        assert!(wants(MUTED, Some(100), 100, &[], "u_a"));
        assert!(wants(Mentions, Some(100), 101, &[], "u_a"));
        assert!(!wants(Mentions, Some(100), 50, &["u_b"], "u_a"));
        assert_eq!(effective(MUTED, Some(100), 100), All);
        assert_eq!(effective(Mentions, None, i64::MAX), Mentions);
    }

    #[test]
    fn mentions_are_read_from_content() {
        let c = serde_json::json!({"type": "text", "mentions": ["u_a", 3, "u_b"]});
        assert_eq!(mentions_of(&c), ["u_a", "u_b"]);
        assert!(mentions_of(&serde_json::json!({"type": "text"})).is_empty());
        assert!(mentions_of(&serde_json::json!({"mentions": "u_a"})).is_empty());
    }
}
