//! A tiny scanner that pulls single fields out of the server's compact JSON
//! frames without parsing or allocating. It relies on what the server
//! writes: compact JSON, the frame's `type` first, and keys that cannot be
//! confused (`"seq":` never matches `"last_seq":` because the quote is part
//! of the pattern). Text the bench itself sends is digits and dots only.

/// Position just after the first occurrence of `pat` in `buf` at or after
/// `from`.
pub fn find(buf: &[u8], pat: &[u8], from: usize) -> Option<usize> {
    if pat.is_empty() || buf.len() < pat.len() || from > buf.len() - pat.len() {
        return None;
    }
    let first = pat[0];
    let mut i = from;
    let last = buf.len() - pat.len();
    while i <= last {
        match buf[i..=last].iter().position(|&b| b == first) {
            None => return None,
            Some(p) => i += p,
        }
        if &buf[i..i + pat.len()] == pat {
            return Some(i + pat.len());
        }
        i += 1;
    }
    None
}

/// The string value at `at` (just after `"key":`), without its quotes.
/// Escapes are not decoded (the bench's own ids and texts have none).
pub fn str_at(buf: &[u8], at: usize) -> Option<&[u8]> {
    let rest = buf.get(at..)?;
    let rest = rest.strip_prefix(b"\"")?;
    let mut i = 0;
    while i < rest.len() {
        match rest[i] {
            b'\\' => i += 2,
            b'"' => return Some(&rest[..i]),
            _ => i += 1,
        }
    }
    None
}

/// The unsigned integer at `at`.
pub fn u64_at(buf: &[u8], at: usize) -> Option<u64> {
    let rest = buf.get(at..)?;
    let mut v: u64 = 0;
    let mut n = 0;
    for &b in rest {
        if !b.is_ascii_digit() {
            break;
        }
        v = v.checked_mul(10)?.checked_add((b - b'0') as u64)?;
        n += 1;
    }
    (n > 0).then_some(v)
}

/// The string field `key` (given with quotes and colon: `b"\"type\":"`).
pub fn str_field<'a>(buf: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    str_at(buf, find(buf, key, 0)?)
}

/// The number field `key` (given with quotes and colon).
pub fn u64_field(buf: &[u8], key: &[u8]) -> Option<u64> {
    u64_at(buf, find(buf, key, 0)?)
}

/// Parses leading decimal digits of `s` and returns the value and the rest.
pub fn leading_u64(s: &[u8]) -> Option<(u64, &[u8])> {
    let n = s.iter().take_while(|b| b.is_ascii_digit()).count();
    if n == 0 {
        return None;
    }
    Some((u64_at(s, 0)?, &s[n..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields() {
        let f = br#"{"type":"event","event":{"conv_id":"c_1","seq":42,"last_seq":7,"client_msg_id":"m9","content":{"text":"T123.5","type":"text"}}}"#;
        assert_eq!(str_field(f, b"\"type\":"), Some(&b"event"[..]));
        assert_eq!(u64_field(f, b"\"seq\":"), Some(42));
        assert_eq!(str_field(f, b"\"client_msg_id\":"), Some(&b"m9"[..]));
        assert_eq!(str_field(f, b"\"text\":"), Some(&b"T123.5"[..]));
        assert_eq!(u64_field(f, b"\"nope\":"), None);
        let t = str_field(f, b"\"text\":").unwrap();
        assert_eq!(leading_u64(&t[1..]), Some((123, &b".5"[..])));
    }

    #[test]
    fn find_at_edges() {
        assert_eq!(find(b"abc", b"abc", 0), Some(3));
        assert_eq!(find(b"ab", b"abc", 0), None);
        assert_eq!(find(b"xxabab", b"ab", 3), Some(6));
        assert_eq!(str_at(br#""a\"b""#, 0), Some(&br#"a\"b"#[..]));
    }
}
