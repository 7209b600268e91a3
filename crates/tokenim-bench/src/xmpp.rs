//! A minimal XMPP client (RFC 6120/6121) for comparing tokenim with a peer
//! server: plain TCP c2s, SASL PLAIN, resource binding, initial presence,
//! in-band registration (XEP-0077) for bulk accounts, and stream management
//! (XEP-0198) acks as the equivalent of tokenim's `send_ack`: every
//! `<message>` is followed by `<r/>`, and the server's `<a h='N'/>` says it
//! has handled (routed and, with mod_mam, archived) the first N stanzas.
//!
//! Like the WebSocket client it reuses one read and one write buffer per
//! connection and finds stanza boundaries by counting tags in place, which is
//! enough for a server that escapes `<` and `>` in attribute values.

use std::io;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::client::{In, message_text, parse_text, show_error_once};
use super::scan::{find, leading_u64};

const RING: usize = 1 << 17;

pub struct Xmpp {
    s: TcpStream,
    domain: String,
    rbuf: Vec<u8>,
    rpos: usize,
    rlen: usize,
    wbuf: Vec<u8>,
    /// The bare JID messages go to.
    to: String,
    sm: bool,
    /// The server's `h` before message 0 was sent.
    msg_base: u64,
    acked_h: u64,
    next_ack: u64,
    sent: u64,
    sent_us: Vec<u64>,
    inbound: u64,
}

fn closed() -> io::Error {
    io::ErrorKind::UnexpectedEof.into()
}

/// The end of the first complete top-level element of `b` (after the
/// stream header), or None when more bytes are needed. `<?xml ...?>`,
/// the `<stream:stream ...>` opening tag and its closing tag count as
/// elements of their own.
fn element_end(b: &[u8]) -> Option<usize> {
    let start = b.iter().position(|c| !c.is_ascii_whitespace())?;
    let b0 = &b[start..];
    if b0.starts_with(b"<?") {
        return find(b0, b"?>", 0).map(|e| start + e);
    }
    if b0.starts_with(b"<stream:stream") {
        return find(b0, b">", 0).map(|e| start + e);
    }
    let mut depth: i64 = 0;
    let mut i = start;
    loop {
        let lt = i + b[i..].iter().position(|&c| c == b'<')?;
        let gt = lt + b[lt..].iter().position(|&c| c == b'>')?;
        let tag = &b[lt..=gt];
        if tag.starts_with(b"</") {
            depth -= 1;
        } else if tag.ends_with(b"/>") || tag.starts_with(b"<?") || tag.starts_with(b"<!") {
        } else {
            depth += 1;
        }
        i = gt + 1;
        if depth <= 0 {
            return Some(i);
        }
    }
}

/// The value of attribute `name` (given as `b" h="`) in the first tag.
fn attr<'a>(el: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let tag_end = el.iter().position(|&c| c == b'>')?;
    let tag = &el[..tag_end];
    let at = find(tag, name, 0)?;
    let q = *tag.get(at)?;
    let rest = &tag[at + 1..];
    let end = rest.iter().position(|&c| c == q)?;
    Some(&rest[..end])
}

fn b64(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in input.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        out.push(T[(n >> 18) as usize & 63] as char);
        out.push(T[(n >> 12) as usize & 63] as char);
        out.push(if c.len() > 1 {
            T[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if c.len() > 2 {
            T[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

impl Xmpp {
    async fn raw(addr: SocketAddr, src: IpAddr, domain: &str) -> io::Result<Xmpp> {
        let s = super::net::connect(addr, src).await?;
        Ok(Xmpp {
            s,
            domain: domain.to_string(),
            rbuf: vec![0; 4096],
            rpos: 0,
            rlen: 0,
            wbuf: Vec::with_capacity(512),
            to: String::new(),
            sm: false,
            msg_base: 0,
            acked_h: 0,
            next_ack: 0,
            sent: 0,
            sent_us: Vec::new(),
            inbound: 0,
        })
    }

    fn stream_header(&mut self) {
        let _ = write!(
            self.wbuf,
            "<?xml version='1.0'?><stream:stream to='{}' xmlns='jabber:client' \
             xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>",
            self.domain
        );
    }

    /// The next complete top-level element. Cancel safe.
    async fn element(&mut self) -> io::Result<std::ops::Range<usize>> {
        loop {
            if let Some(end) = element_end(&self.rbuf[self.rpos..self.rlen]) {
                let r = self.rpos..self.rpos + end;
                self.rpos += end;
                return Ok(r);
            }
            if self.rpos == self.rlen {
                self.rpos = 0;
                self.rlen = 0;
            } else if self.rlen == self.rbuf.len() {
                self.rbuf.copy_within(self.rpos..self.rlen, 0);
                self.rlen -= self.rpos;
                self.rpos = 0;
                if self.rlen == self.rbuf.len() {
                    let n = self.rbuf.len() * 2;
                    self.rbuf.resize(n, 0);
                }
            }
            let n = self.s.read(&mut self.rbuf[self.rlen..]).await?;
            if n == 0 {
                return Err(closed());
            }
            self.rlen += n;
        }
    }

    /// Reads elements until one starts with `prefix`; errors on a stream
    /// error.
    async fn expect(&mut self, prefixes: &[&[u8]]) -> anyhow::Result<std::ops::Range<usize>> {
        loop {
            let r = self.element().await?;
            let el = self.rbuf[r.clone()].trim_ascii_start();
            if el.starts_with(b"<stream:error") || el.starts_with(b"</stream:stream") {
                bail!("xmpp stream error: {}", String::from_utf8_lossy(el));
            }
            if prefixes.iter().any(|p| el.starts_with(p)) {
                return Ok(r);
            }
        }
    }

    fn el(&self, r: std::ops::Range<usize>) -> &[u8] {
        self.rbuf[r].trim_ascii_start()
    }

    /// Registers `user` in band (XEP-0077); an existing account is fine.
    pub async fn register(
        addr: SocketAddr,
        src: IpAddr,
        domain: &str,
        user: &str,
        pass: &str,
    ) -> anyhow::Result<()> {
        let mut x = Xmpp::raw(addr, src, domain).await?;
        x.stream_header();
        x.flush().await?;
        x.expect(&[b"<stream:features"]).await?;
        let _ = write!(
            x.wbuf,
            "<iq type='set' id='reg1'><query xmlns='jabber:iq:register'><username>{user}</username>\
             <password>{pass}</password></query></iq>"
        );
        x.flush().await?;
        let r = x.expect(&[b"<iq"]).await?;
        let el = x.el(r);
        let ok = attr(el, b" type=") == Some(b"result") || find(el, b"<conflict", 0).is_some();
        if !ok {
            bail!("registering {user}: {}", String::from_utf8_lossy(el));
        }
        x.close().await;
        Ok(())
    }

    /// Logs in with SASL PLAIN, binds a resource, optionally enables stream
    /// management, and sends initial presence.
    pub async fn open(
        addr: SocketAddr,
        src: IpAddr,
        domain: &str,
        user: &str,
        pass: &str,
        sm: bool,
    ) -> anyhow::Result<Xmpp> {
        let mut x = Xmpp::raw(addr, src, domain).await?;
        x.stream_header();
        x.flush().await?;
        let r = x.expect(&[b"<stream:features"]).await?;
        if find(x.el(r), b">PLAIN<", 0).is_none() {
            bail!("the xmpp server offers no PLAIN mechanism without TLS");
        }
        let mut cred = Vec::with_capacity(user.len() + pass.len() + 2);
        cred.push(0);
        cred.extend_from_slice(user.as_bytes());
        cred.push(0);
        cred.extend_from_slice(pass.as_bytes());
        let _ = write!(
            x.wbuf,
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{}</auth>",
            b64(&cred)
        );
        x.flush().await?;
        let r = x.expect(&[b"<success", b"<failure"]).await?;
        if x.el(r).starts_with(b"<failure") {
            bail!("xmpp login of {user} failed");
        }
        x.stream_header();
        x.flush().await?;
        x.expect(&[b"<stream:features"]).await?;
        x.wbuf.extend_from_slice(
            b"<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
              <resource>bench</resource></bind></iq>",
        );
        x.flush().await?;
        let r = x.expect(&[b"<iq"]).await?;
        if attr(x.el(r.clone()), b" type=") != Some(b"result") {
            bail!("bind failed: {}", String::from_utf8_lossy(x.el(r)));
        }
        if sm {
            x.wbuf.extend_from_slice(b"<enable xmlns='urn:xmpp:sm:3'/>");
            x.flush().await?;
            let r = x.expect(&[b"<enabled", b"<failed"]).await?;
            if x.el(r).starts_with(b"<failed") {
                bail!("the xmpp server refused stream management");
            }
            x.sm = true;
            x.sent_us = vec![0; RING];
        }
        x.wbuf.extend_from_slice(b"<presence/>");
        if sm {
            // learn the stanza count before the first message
            x.wbuf.extend_from_slice(b"<r xmlns='urn:xmpp:sm:3'/>");
        }
        x.flush().await?;
        if sm {
            let r = x.expect(&[b"<a "]).await?;
            let h = attr(x.el(r), b" h=")
                .and_then(leading_u64)
                .map(|v| v.0)
                .context("sm ack without h")?;
            x.msg_base = h;
            x.acked_h = h;
        }
        Ok(x)
    }

    /// Sets the bare JID that `send` addresses.
    pub fn set_peer(&mut self, user: &str) {
        self.to = format!("{user}@{}", self.domain);
    }

    pub fn send(&mut self, n: u64, sent_us: u64, size: usize) {
        let _ = write!(
            self.wbuf,
            "<message to='{}' type='chat' id='m{n}'><body>",
            self.to
        );
        message_text(&mut self.wbuf, sent_us, n, size);
        self.wbuf.extend_from_slice(b"</body></message>");
        if self.sm {
            self.wbuf.extend_from_slice(b"<r xmlns='urn:xmpp:sm:3'/>");
            self.sent_us[n as usize % RING] = sent_us;
            self.sent = self.sent.max(n + 1);
        }
    }

    pub fn ping(&mut self) {
        self.wbuf.push(b' ');
    }

    pub async fn recv(&mut self) -> anyhow::Result<In> {
        loop {
            if self.next_ack < self.sent && self.acked_h > self.msg_base + self.next_ack {
                let n = self.next_ack;
                self.next_ack += 1;
                return Ok(In::Ack {
                    sent_us: self.sent_us[n as usize % RING],
                    n,
                });
            }
            let r = self.element().await?;
            let el = self.rbuf[r].trim_ascii_start();
            if el.starts_with(b"<message") {
                self.inbound += 1;
                if find(el, b"type='error'", 0).is_some() {
                    show_error_once(&String::from_utf8_lossy(el));
                    return Ok(In::SendErr);
                }
                let body = find(el, b"<body>", 0)
                    .and_then(|at| parse_text(&el[at..]))
                    .map(|(sent_us, n)| In::Msg {
                        sent_us,
                        order: n + 1,
                    });
                return Ok(body.unwrap_or(In::Other));
            } else if el.starts_with(b"<a ") || el.starts_with(b"<a\n") {
                if let Some((h, _)) = attr(el, b" h=").and_then(leading_u64) {
                    self.acked_h = self.acked_h.max(h);
                }
            } else if el.starts_with(b"<r ") || el.starts_with(b"<r/") {
                let _ = write!(self.wbuf, "<a xmlns='urn:xmpp:sm:3' h='{}'/>", self.inbound);
                return Ok(In::Other);
            } else if el.starts_with(b"<presence") || el.starts_with(b"<iq") {
                self.inbound += 1;
                return Ok(In::Other);
            } else if el.starts_with(b"<stream:error") || el.starts_with(b"</stream:stream") {
                bail!("xmpp stream closed: {}", String::from_utf8_lossy(el));
            }
        }
    }

    pub fn pending(&self) -> bool {
        !self.wbuf.is_empty()
    }

    pub async fn flush(&mut self) -> io::Result<()> {
        if !self.wbuf.is_empty() {
            self.s.write_all(&self.wbuf).await?;
            self.wbuf.clear();
        }
        Ok(())
    }

    pub async fn close(mut self) {
        self.wbuf.extend_from_slice(b"</stream:stream>");
        let _ = self.flush().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elements() {
        let s = b"<?xml version='1.0'?><stream:stream id='x' version='1.0'><stream:features><mechanisms><mechanism>PLAIN</mechanism></mechanisms></stream:features><a xmlns='urn:xmpp:sm:3' h='5'/><message";
        let e1 = element_end(s).unwrap();
        assert_eq!(&s[..e1], b"<?xml version='1.0'?>");
        let e2 = e1 + element_end(&s[e1..]).unwrap();
        assert!(s[e1..e2].starts_with(b"<stream:stream"));
        let e3 = e2 + element_end(&s[e2..]).unwrap();
        assert!(s[e2..e3].ends_with(b"</stream:features>"));
        let e4 = e3 + element_end(&s[e3..]).unwrap();
        assert_eq!(attr(&s[e3..e4], b" h="), Some(&b"5"[..]));
        assert_eq!(element_end(&s[e4..]), None);
    }

    #[test]
    fn base64() {
        assert_eq!(b64(b"\0u\0p"), "AHUAcA==");
        assert_eq!(b64(b"abc"), "YWJj");
        assert_eq!(b64(b"ab"), "YWI=");
    }
}
