//! The tokenim frames the bench writes, straight into a socket's reused
//! buffer (no serde on the hot path). They are hand-written, so the tests
//! below hold them to `tokenim-proto`: each must read as the protocol's
//! type for its frame, and the scanner must read what the protocol's types
//! write.

use std::io::Write as _;

use crate::client::message_text;

/// `{"type":"auth","token":...}`.
pub fn auth(p: &mut Vec<u8>, token: &str) {
    let _ = write!(p, r#"{{"type":"auth","token":"{token}"}}"#);
}

/// `sync` of one page of 500: from `(conv_id, after_seq)`, or every
/// conversation from its cursor.
pub fn sync(p: &mut Vec<u8>, cursor: Option<(&str, u64)>) {
    let _ = match cursor {
        Some((conv, a)) => write!(
            p,
            r#"{{"type":"sync","id":"s","limit":500,"cursors":[{{"conv_id":"{conv}","after_seq":{a}}}]}}"#
        ),
        None => write!(p, r#"{{"type":"sync","id":"s","limit":500}}"#),
    };
}

/// `send` of message `n`, its request id the send time `sent_us`, its text
/// `size` bytes (see [`message_text`]).
pub fn send(p: &mut Vec<u8>, conv: &str, sent_us: u64, n: u64, size: usize) {
    let _ = write!(
        p,
        r#"{{"type":"send","id":{sent_us},"conv_id":"{conv}","client_msg_id":"m{n}","content":{{"type":"text","text":""#
    );
    message_text(p, sent_us, n, size);
    p.extend_from_slice(br#""}}"#);
}

/// `{"type":"ping"}`.
pub fn ping(p: &mut Vec<u8>) {
    p.extend_from_slice(br#"{"type":"ping"}"#);
}

/// The cumulative `ack` of `conv` (as read from a frame) up to `seq`.
pub fn ack(p: &mut Vec<u8>, conv: &[u8], seq: u64) {
    p.extend_from_slice(br#"{"type":"ack","conv_id":""#);
    p.extend_from_slice(conv);
    let _ = write!(p, r#"","seq":{seq}}}"#);
}

#[cfg(test)]
mod tests {
    use serde::de::DeserializeOwned;
    use serde_json::value::RawValue;
    use tokenim_proto::{
        AckFrame, AuthFrame, Envelope, Event, EventKind, PingFrame, SendAck, SendFrame,
        ServerFrame, SyncFrame, event_frame_json,
    };

    use super::*;
    use crate::client::parse_text;
    use crate::scan::{find, str_at, str_field, u64_field};

    /// Writes one frame and reads it back as the protocol's type for it.
    fn read<T: DeserializeOwned>(ty: &str, write: impl FnOnce(&mut Vec<u8>)) -> T {
        let mut p = Vec::new();
        write(&mut p);
        let env: Envelope = serde_json::from_slice(&p).expect("an envelope");
        assert_eq!(env.ty, ty);
        serde_json::from_slice(&p)
            .unwrap_or_else(|e| panic!("{} is not a {ty} frame: {e}", String::from_utf8_lossy(&p)))
    }

    #[test]
    fn written_frames_are_protocol_frames() {
        let a: AuthFrame = read("auth", |p| auth(p, "tok.en"));
        assert_eq!(a.token, "tok.en");

        let s: SyncFrame = read("sync", |p| sync(p, Some(("c_1", 41))));
        assert_eq!(s.limit, Some(500));
        let c = &s.cursors.expect("cursors")[0];
        assert_eq!((c.conv_id.as_str(), c.after_seq), ("c_1", 41));
        let s: SyncFrame = read("sync", |p| sync(p, None));
        assert!(s.cursors.is_none());

        let m: SendFrame = read("send", |p| send(p, "c_1", 123456, 7, 64));
        assert_eq!(m.id, Some(123456.into()));
        assert_eq!(
            (m.conv_id.as_str(), m.client_msg_id.as_str()),
            ("c_1", "m7")
        );
        assert_eq!(m.content["type"], "text");
        let text = m.content["text"].as_str().unwrap();
        assert_eq!(
            (text.len(), parse_text(text.as_bytes())),
            (64, Some((123456, 7)))
        );
        // What the server's own checks say of it.
        tokenim_core::validate::client_msg_id(&m.client_msg_id).unwrap();
        tokenim_core::validate::content(&m.content, 16 * 1024).unwrap();

        let _: PingFrame = read("ping", ping);
        let k: AckFrame = read("ack", |p| ack(p, b"c_1", 9));
        assert_eq!((k.conv_id.as_str(), k.seq), ("c_1", 9));
    }

    #[test]
    fn the_scanner_reads_protocol_frames() {
        let ack = ServerFrame::SendAck(SendAck {
            id: Some(123456.into()),
            client_msg_id: "m7".into(),
            conv_id: "c_1".into(),
            msg_id: "x".into(),
            seq: 5,
            ts: 1,
            content: None,
        })
        .to_json();
        let f = ack.as_bytes();
        assert_eq!(str_field(f, b"\"type\":"), Some(&b"send_ack"[..]));
        assert_eq!(u64_field(f, b"\"id\":"), Some(123456));
        assert_eq!(str_field(f, b"\"client_msg_id\":"), Some(&b"m7"[..]));

        let mut text = Vec::new();
        message_text(&mut text, 99, 3, 16);
        let content = format!(
            r#"{{"type":"text","text":"{}"}}"#,
            String::from_utf8(text).unwrap()
        );
        let e = Event {
            conv_id: "c_2".into(),
            seq: 42,
            msg_id: "x".into(),
            ts: 1,
            sender: Some("u".into()),
            sender_device: Some("d".into()),
            system: false,
            kind: EventKind::Message,
            client_msg_id: Some("m3".into()),
            content: Some(RawValue::from_string(content).unwrap()),
            recalled: false,
            edited: false,
        };
        let frame = event_frame_json(&e);
        let f = frame.as_bytes();
        assert_eq!(str_field(f, b"\"type\":"), Some(&b"event"[..]));
        assert_eq!(u64_field(f, b"\"seq\":"), Some(42));
        let text = str_field(f, b"\"text\":").unwrap();
        assert_eq!(parse_text(text), Some((99, 3)));
        let at = find(f, b"\"conv_id\":", 0).unwrap();
        assert_eq!(str_at(f, at), Some(&b"c_2"[..]));
    }
}
