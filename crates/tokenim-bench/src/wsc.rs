//! A minimal WebSocket client (RFC 6455) for the load generator: one read
//! buffer and one write buffer per connection, reused for its whole life,
//! so that sending and receiving a frame allocates nothing. Frames are
//! written masked into the write buffer and go out in one `write` per
//! flush; `next` is cancel safe (its only await is a socket read, and all
//! state lives in the buffers), so it can sit in a `select!`.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::scan;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Text,
    Binary,
    Close,
}

pub struct Ws {
    s: TcpStream,
    rbuf: Vec<u8>,
    rpos: usize,
    rlen: usize,
    wbuf: Vec<u8>,
    scratch: Vec<u8>,
    mask: u32,
}

fn err(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

impl Ws {
    /// Connects from `src`, performs the upgrade for `path` and returns the
    /// open socket. `rcap` is the initial read buffer (it grows for big
    /// frames such as sync results).
    pub async fn connect(
        addr: SocketAddr,
        src: IpAddr,
        host: &str,
        path: &str,
        rcap: usize,
    ) -> io::Result<Ws> {
        let s = super::net::connect(addr, src).await?;
        let mut ws = Ws {
            s,
            rbuf: vec![0; rcap.max(512)],
            rpos: 0,
            rlen: 0,
            wbuf: Vec::with_capacity(256),
            scratch: Vec::with_capacity(256),
            mask: 0x9e37_79b9 ^ (addr.port() as u32) ^ (super::net::now_us() as u32),
        };
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        ws.s.write_all(req.as_bytes()).await?;
        loop {
            if let Some(end) = scan::find(&ws.rbuf[..ws.rlen], b"\r\n\r\n", 0) {
                if !ws.rbuf.starts_with(b"HTTP/1.1 101") {
                    return Err(err("the server refused the websocket upgrade"));
                }
                ws.rpos = end;
                return Ok(ws);
            }
            if ws.rlen == ws.rbuf.len() {
                return Err(err("upgrade response too long"));
            }
            let n = ws.s.read(&mut ws.rbuf[ws.rlen..]).await?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            ws.rlen += n;
        }
    }

    /// Queues one text frame whose payload `f` writes.
    pub fn text(&mut self, f: impl FnOnce(&mut Vec<u8>)) {
        let mut p = std::mem::take(&mut self.scratch);
        p.clear();
        f(&mut p);
        self.frame(0x1, &p);
        self.scratch = p;
    }

    fn frame(&mut self, opcode: u8, payload: &[u8]) {
        let w = &mut self.wbuf;
        w.push(0x80 | opcode);
        let n = payload.len();
        if n < 126 {
            w.push(0x80 | n as u8);
        } else if n <= u16::MAX as usize {
            w.push(0x80 | 126);
            w.extend_from_slice(&(n as u16).to_be_bytes());
        } else {
            w.push(0x80 | 127);
            w.extend_from_slice(&(n as u64).to_be_bytes());
        }
        // xorshift32: a cheap, changing masking key
        let mut x = self.mask;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.mask = x;
        let key = x.to_be_bytes();
        w.extend_from_slice(&key);
        let start = w.len();
        w.extend_from_slice(payload);
        for (i, b) in w[start..].iter_mut().enumerate() {
            *b ^= key[i & 3];
        }
    }

    /// Whether frames wait in the write buffer.
    pub fn pending(&self) -> bool {
        !self.wbuf.is_empty()
    }

    /// Writes everything queued.
    pub async fn flush(&mut self) -> io::Result<()> {
        if !self.wbuf.is_empty() {
            self.s.write_all(&self.wbuf).await?;
            self.wbuf.clear();
        }
        Ok(())
    }

    /// The payload of a frame returned by `next`, valid until the next call.
    pub fn payload(&self, r: Range<usize>) -> &[u8] {
        &self.rbuf[r]
    }

    /// A complete frame header and payload at the start of the buffered
    /// bytes: (opcode, payload range, frame end).
    fn parse(&self) -> io::Result<Option<(u8, Range<usize>, usize)>> {
        let b = &self.rbuf[self.rpos..self.rlen];
        if b.len() < 2 {
            return Ok(None);
        }
        if b[0] & 0x80 == 0 {
            return Err(err("fragmented frames are not supported"));
        }
        let opcode = b[0] & 0x0f;
        if b[1] & 0x80 != 0 {
            return Err(err("the server masked a frame"));
        }
        let (len, hdr) = match b[1] & 0x7f {
            126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
            127 if b.len() >= 10 => {
                let mut a = [0u8; 8];
                a.copy_from_slice(&b[2..10]);
                (u64::from_be_bytes(a) as usize, 10)
            }
            126 | 127 => return Ok(None),
            n => (n as usize, 2),
        };
        if len > 64 << 20 {
            return Err(err("frame over 64 MiB"));
        }
        let start = self.rpos + hdr;
        let end = start + len;
        if end > self.rlen {
            return Ok(None);
        }
        Ok(Some((opcode, start..end, end)))
    }

    /// Bytes the frame at rpos needs in total, when its header is complete.
    fn needed(&self) -> Option<usize> {
        let b = &self.rbuf[self.rpos..self.rlen];
        if b.len() < 2 {
            return None;
        }
        match b[1] & 0x7f {
            126 if b.len() >= 4 => Some(4 + u16::from_be_bytes([b[2], b[3]]) as usize),
            127 if b.len() >= 10 => {
                let mut a = [0u8; 8];
                a.copy_from_slice(&b[2..10]);
                Some(10 + u64::from_be_bytes(a) as usize)
            }
            126 | 127 => None,
            n => Some(2 + n as usize),
        }
    }

    /// Whether a whole frame is already buffered (the next `next` will not
    /// wait).
    pub fn has_frame(&self) -> bool {
        matches!(self.parse(), Ok(Some(_)))
    }

    /// The next text, binary or close frame; answers pings itself (the pong
    /// is queued: flush after handling). Cancel safe.
    pub async fn next(&mut self) -> io::Result<(Op, Range<usize>)> {
        loop {
            if let Some((opcode, range, end)) = self.parse()? {
                self.rpos = end;
                match opcode {
                    0x1 => return Ok((Op::Text, range)),
                    0x2 => return Ok((Op::Binary, range)),
                    0x8 => return Ok((Op::Close, range)),
                    0x9 => {
                        let mut p = std::mem::take(&mut self.scratch);
                        p.clear();
                        p.extend_from_slice(&self.rbuf[range]);
                        self.frame(0xA, &p);
                        self.scratch = p;
                    }
                    0xA => {}
                    _ => return Err(err("unknown opcode")),
                }
                continue;
            }
            if self.rpos == self.rlen {
                self.rpos = 0;
                self.rlen = 0;
            }
            let need = self.needed().unwrap_or(16);
            if self.rpos + need > self.rbuf.len() || self.rlen == self.rbuf.len() {
                self.rbuf.copy_within(self.rpos..self.rlen, 0);
                self.rlen -= self.rpos;
                self.rpos = 0;
                if need > self.rbuf.len() {
                    self.rbuf.resize(need.next_power_of_two(), 0);
                }
            }
            let n = self.s.read(&mut self.rbuf[self.rlen..]).await?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.rlen += n;
        }
    }

    /// Sends a close frame (best effort) and drops the connection.
    pub async fn close(mut self) {
        self.frame(0x8, &1000u16.to_be_bytes());
        let _ = self.flush().await;
    }
}
