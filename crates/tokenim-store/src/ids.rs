//! Server-made identifiers: a prefix and a time-ordered random part.

use rand::Rng;

const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// `prefix` + 10 base32 characters of time (ms) + `random_chars` of randomness.
fn make(prefix: &str, now_ms: i64, random_chars: usize) -> String {
    let mut s = String::with_capacity(prefix.len() + 10 + random_chars);
    s.push_str(prefix);
    let t = now_ms.max(0) as u64;
    for i in (0..10).rev() {
        s.push(ALPHABET[((t >> (i * 5)) & 31) as usize] as char);
    }
    let mut rng = rand::thread_rng();
    for _ in 0..random_chars {
        s.push(ALPHABET[rng.gen_range(0..32)] as char);
    }
    s
}

pub fn user_id(now_ms: i64) -> String {
    make("u_", now_ms, 8)
}
pub fn conv_id(now_ms: i64) -> String {
    make("c_", now_ms, 8)
}
pub fn msg_id(now_ms: i64) -> String {
    make("m_", now_ms, 16)
}
/// A webhook request's `id` (`Tokenim-Delivery`, PROTOCOL-INTEGRATION I3.3).
pub fn delivery_id(now_ms: i64) -> String {
    make("wh_", now_ms, 16)
}
pub fn session_id(now_ms: i64) -> String {
    make("s_", now_ms, 16)
}
