//! The bench's protocol clients behind one enum: tokenim's WebSocket
//! protocol (PROTOCOL.md section 3) and a minimal XMPP client (for the peer
//! comparison). Both queue outgoing frames into reused buffers and read
//! incoming ones in place, reporting only what the scenarios measure.

use std::io;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::frames;
use super::scan::{self, find, str_at, str_field, u64_at, u64_field};
use super::wsc::{Op, Ws};
use super::xmpp::Xmpp;

/// What a received frame meant to the scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum In {
    /// The server acknowledged (durably stored) message `n`, sent at
    /// `sent_us`.
    Ack { sent_us: u64, n: u64 },
    /// A message pushed to this connection: sent at `sent_us`, at position
    /// `order` (the conversation's `seq` for tokenim, n+1 for XMPP).
    Msg { sent_us: u64, order: u64 },
    /// The server refused a send.
    SendErr,
    /// Anything else (delivered, receipts, pongs, presence ...).
    Other,
}

static ERROR_SHOWN: AtomicBool = AtomicBool::new(false);

/// Prints the first server error of the run to stderr, once.
pub fn show_error_once(what: &str) {
    if !ERROR_SHOWN.swap(true, Ordering::Relaxed) {
        eprintln!("bench: first error from the server: {what}");
    }
}

/// Writes a message text: `T<sent_us>.<n>` padded with dots to `size`.
pub fn message_text(out: &mut Vec<u8>, sent_us: u64, n: u64, size: usize) {
    let start = out.len();
    let _ = write!(out, "T{sent_us}.{n}");
    while out.len() - start < size {
        out.push(b'.');
    }
}

/// Parses `T<sent_us>.<n>...`.
pub fn parse_text(t: &[u8]) -> Option<(u64, u64)> {
    let (sent, rest) = scan::leading_u64(t.strip_prefix(b"T")?)?;
    let (n, _) = scan::leading_u64(rest.strip_prefix(b".")?)?;
    Some((sent, n))
}

/// A tokenim WebSocket connection, authenticated.
pub struct Tim {
    pub ws: Ws,
    /// The conversation this connection sends into.
    conv: String,
    ack_conv: Vec<u8>,
    ack_seq: u64,
    unacked: u32,
    last_ack: Instant,
}

/// Cumulative acks go out every this many events, or when the socket has
/// nothing more to read and the last ack is older than `--ack-ms`.
const ACK_EVERY: u32 = 32;
static ACK_AFTER_MS: AtomicU64 = AtomicU64::new(20);

/// Sets the `--ack-ms` of the run.
pub fn set_ack_after(ms: u64) {
    ACK_AFTER_MS.store(ms, Ordering::Relaxed);
}

impl Tim {
    /// Connects, sends `auth` and waits for `auth_ok`.
    pub async fn open(
        addr: SocketAddr,
        src: IpAddr,
        host: &str,
        token: &str,
        rcap: usize,
    ) -> anyhow::Result<Tim> {
        let ws = Ws::connect(addr, src, host, "/v1/ws", rcap).await?;
        let mut t = Tim {
            ws,
            conv: String::new(),
            ack_conv: Vec::new(),
            ack_seq: 0,
            unacked: 0,
            last_ack: Instant::now(),
        };
        t.ws.text(|p| frames::auth(p, token));
        t.ws.flush().await?;
        loop {
            let (op, r) = t.ws.next().await?;
            if op == Op::Close {
                bail!("closed during auth");
            }
            let f = t.ws.payload(r);
            match str_field(f, b"\"type\":") {
                Some(b"auth_ok") => break,
                Some(b"error") => bail!("auth refused: {}", String::from_utf8_lossy(f)),
                _ => {}
            }
        }
        t.ws.flush().await?;
        Ok(t)
    }

    pub fn set_conv(&mut self, conv: &str) {
        self.conv.clear();
        self.conv.push_str(conv);
    }

    /// Sends a `sync` (with `cursors` when given as (conv_id, after_seq))
    /// and returns when its `sync_result` came back, having seen every
    /// event seq it listed through `on_seq`. Repeats while `has_more`.
    /// Once it returns, the socket is registered for pushes.
    pub async fn sync(
        &mut self,
        cursor: Option<(&str, u64)>,
        mut on_seq: impl FnMut(u64),
    ) -> anyhow::Result<()> {
        let mut after = cursor.map(|c| c.1);
        loop {
            let from = cursor.zip(after).map(|((conv, _), a)| (conv, a));
            self.ws.text(|p| frames::sync(p, from));
            self.ws.flush().await?;
            let more = loop {
                let (op, r) = self.ws.next().await?;
                if op == Op::Close {
                    bail!("closed during sync");
                }
                let f = self.ws.payload(r);
                match str_field(f, b"\"type\":") {
                    Some(b"sync_result") => {
                        let mut at = 0;
                        while let Some(p) = find(f, b"\"seq\":", at) {
                            let seq = u64_at(f, p).context("seq without a number")?;
                            on_seq(seq);
                            after = Some(after.unwrap_or(0).max(seq));
                            at = p;
                        }
                        break find(f, b"\"has_more\":true", 0).is_some();
                    }
                    Some(b"error") => bail!("sync refused: {}", String::from_utf8_lossy(f)),
                    _ => {}
                }
            };
            self.ws.flush().await?;
            if !more || cursor.is_none() {
                return Ok(());
            }
        }
    }

    fn send(&mut self, n: u64, sent_us: u64, size: usize) {
        let conv = &self.conv;
        self.ws.text(|p| frames::send(p, conv, sent_us, n, size));
    }

    fn ping(&mut self) {
        self.ws.text(frames::ping);
    }

    async fn recv(&mut self) -> anyhow::Result<In> {
        let (op, r) = self.ws.next().await?;
        if op == Op::Close {
            let f = self.ws.payload(r);
            let code = if f.len() >= 2 {
                u16::from_be_bytes([f[0], f[1]])
            } else {
                0
            };
            bail!("the server closed the socket (code {code})");
        }
        let f = self.ws.payload(r.clone());
        Ok(match str_field(f, b"\"type\":") {
            Some(b"send_ack") => {
                let sent_us = u64_field(f, b"\"id\":").context("send_ack without id")?;
                let n = str_field(f, b"\"client_msg_id\":")
                    .and_then(|c| scan::leading_u64(c.strip_prefix(b"m")?))
                    .map(|x| x.0)
                    .context("send_ack without client_msg_id")?;
                In::Ack { sent_us, n }
            }
            Some(b"event") => {
                let seq = u64_field(f, b"\"seq\":").context("event without seq")?;
                let sent_us = str_field(f, b"\"text\":").and_then(parse_text).map(|x| x.0);
                let conv =
                    find(f, b"\"conv_id\":", 0).and_then(|at| Some((at + 1, str_at(f, at)?.len())));
                if let Some((at, len)) = conv
                    && f[at..at + len] != *self.ack_conv.as_slice()
                {
                    self.flush_ack();
                    let f = self.ws.payload(r.clone());
                    self.ack_conv.clear();
                    self.ack_conv.extend_from_slice(&f[at..at + len]);
                }
                self.ack_seq = self.ack_seq.max(seq);
                self.unacked += 1;
                if self.unacked >= ACK_EVERY
                    || (!self.ws.has_frame()
                        && self.last_ack.elapsed()
                            >= Duration::from_millis(ACK_AFTER_MS.load(Ordering::Relaxed)))
                {
                    self.flush_ack();
                }
                match sent_us {
                    Some(sent_us) => In::Msg {
                        sent_us,
                        order: seq,
                    },
                    None => In::Other, // not one of ours (member_joined ...)
                }
            }
            Some(b"error") => {
                show_error_once(&String::from_utf8_lossy(f));
                if find(f, b"\"id\":", 0).is_some() {
                    In::SendErr
                } else {
                    In::Other
                }
            }
            Some(b"kicked") => bail!("kicked: {}", String::from_utf8_lossy(f)),
            _ => In::Other,
        })
    }

    /// Queues the cumulative `ack` of what was received so far.
    fn flush_ack(&mut self) {
        if self.unacked == 0 || self.ack_conv.is_empty() {
            return;
        }
        let seq = self.ack_seq;
        let conv = &self.ack_conv;
        self.ws.text(|p| frames::ack(p, conv, seq));
        self.unacked = 0;
        self.last_ack = Instant::now();
    }
}

/// One bench connection to either server.
pub enum Conn {
    Tim(Tim),
    Xmpp(Xmpp),
}

impl Conn {
    /// Queues message `n` (timestamped `sent_us`) to this connection's peer
    /// or conversation.
    pub fn send(&mut self, n: u64, sent_us: u64, size: usize) {
        match self {
            Conn::Tim(c) => c.send(n, sent_us, size),
            Conn::Xmpp(c) => c.send(n, sent_us, size),
        }
    }

    /// Queues a heartbeat.
    pub fn ping(&mut self) {
        match self {
            Conn::Tim(c) => c.ping(),
            Conn::Xmpp(c) => c.ping(),
        }
    }

    /// The next meaningful frame. Cancel safe.
    pub async fn recv(&mut self) -> anyhow::Result<In> {
        match self {
            Conn::Tim(c) => c.recv().await,
            Conn::Xmpp(c) => c.recv().await,
        }
    }

    pub fn pending(&self) -> bool {
        match self {
            Conn::Tim(c) => c.ws.pending(),
            Conn::Xmpp(c) => c.pending(),
        }
    }

    pub async fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Tim(c) => c.ws.flush().await,
            Conn::Xmpp(c) => c.flush().await,
        }
    }

    /// Closes politely.
    pub async fn close(self) {
        match self {
            Conn::Tim(c) => c.ws.close().await,
            Conn::Xmpp(c) => c.close().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trip() {
        let mut v = Vec::new();
        message_text(&mut v, 123456, 7, 32);
        assert_eq!(v.len(), 32);
        assert_eq!(parse_text(&v), Some((123456, 7)));
        v.clear();
        message_text(&mut v, 1, 2, 0);
        assert_eq!(v, b"T1.2");
    }
}
