#!/usr/bin/env python3
"""WebSocket half of scripts/nginx-check.sh (standard library only).

Opens tokenim WebSocket sessions through the balancer, authenticates, syncs,
sends a message and waits for its send_ack and for the push to the other
user; with --restart, also stops the node holding the receiver's socket
(SIGTERM), checks that the socket is closed with 1001, reconnects through
the balancer and syncs what was sent meanwhile.

  nginx-check.py --url http://127.0.0.1:18080 --token-a T --token-b T \
      --conv CONV [--nodes URL=PID,URL=PID,...] [--restart]

Exits non-zero on the first failed check; prints one line per check.
"""
import argparse
import base64
import hashlib
import json
import os
import re
import signal
import socket
import struct
import sys
import time
import urllib.request
from urllib.parse import urlparse

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class Closed(Exception):
    def __init__(self, code, reason):
        super().__init__(f"closed {code} {reason!r}")
        self.code = code
        self.reason = reason


class WS:
    """A minimal RFC 6455 client: text frames, pings answered, close."""

    def __init__(self, url, path="/v1/ws", timeout=10.0):
        u = urlparse(url)
        self.host_header = u.netloc
        self.sock = socket.create_connection((u.hostname, u.port or 80), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        req = (
            f"GET {path} HTTP/1.1\r\nHost: {self.host_header}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        self.sock.sendall(req.encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise RuntimeError(f"upgrade: connection closed after {buf!r}")
            buf += chunk
        head, self.buf = buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        if not lines[0].startswith("HTTP/1.1 101"):
            raise RuntimeError(f"upgrade refused: {lines[0]}")
        headers = {k.strip().lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:])}
        want = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
        if headers.get("sec-websocket-accept") != want:
            raise RuntimeError("upgrade: bad Sec-WebSocket-Accept")
        self.headers = headers

    def _send_frame(self, opcode, payload):
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 65536:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(head + mask + body)

    def send(self, obj):
        self._send_frame(0x1, json.dumps(obj).encode())

    def _read(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise Closed(1006, "connection lost")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv(self, timeout=10.0):
        """The next JSON frame; raises Closed on a close frame."""
        self.sock.settimeout(timeout)
        message = b""
        while True:
            b0, b1 = self._read(2)
            fin, opcode, n = b0 & 0x80, b0 & 0x0F, b1 & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", self._read(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", self._read(8))
            mask = self._read(4) if b1 & 0x80 else None
            data = self._read(n)
            if mask:
                data = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
            if opcode == 0x8:
                code = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else 1005
                raise Closed(code, data[2:].decode(errors="replace"))
            if opcode == 0x9:
                self._send_frame(0xA, data)
                continue
            if opcode == 0xA:
                continue
            message += data
            if fin:
                return json.loads(message)

    def wait_for(self, pred, what, timeout=10.0):
        """Frames until pred(frame); fails on an error frame or a timeout."""
        end = time.time() + timeout
        while True:
            left = end - time.time()
            if left <= 0:
                raise RuntimeError(f"no {what} within {timeout} s")
            f = self.recv(left)
            if pred(f):
                return f
            if f.get("type") == "error":
                raise RuntimeError(f"waiting for {what}: {f}")

    def close(self):
        try:
            self._send_frame(0x8, struct.pack("!H", 1000))
            self.sock.close()
        except OSError:
            pass


def check(name, cond, detail=""):
    if not cond:
        print(f"FAIL {name} {detail}".rstrip())
        sys.exit(1)
    print(f"ok   {name} {detail}".rstrip())


def connections(node_url):
    """tokenim_ws_connections of one node (read directly, not through nginx)."""
    with urllib.request.urlopen(node_url.rstrip("/") + "/metrics", timeout=5) as r:
        m = re.search(r"^tokenim_ws_connections (\d+)", r.read().decode(), re.M)
        return int(m.group(1)) if m else 0


def snapshot(nodes):
    out = {}
    for url in nodes:
        try:
            out[url] = connections(url)
        except OSError:
            out[url] = None
    return out


def session(url, token, name):
    ws = WS(url)
    ws.send({"type": "auth", "token": token})
    ok = ws.wait_for(lambda f: f.get("type") == "auth_ok", f"{name}: auth_ok")
    check(f"{name}: WebSocket upgrade and auth through the balancer", True, f"(heartbeat_ms {ok.get('heartbeat_ms')})")
    return ws


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--token-a", required=True)
    ap.add_argument("--token-b", required=True)
    ap.add_argument("--conv", required=True)
    ap.add_argument("--nodes", default="", help="URL=PID,... of the nodes, read directly")
    ap.add_argument("--restart", action="store_true")
    a = ap.parse_args()
    nodes = {}
    for part in filter(None, a.nodes.split(",")):
        u, _, pid = part.partition("=")
        nodes[u] = int(pid) if pid else None

    before = snapshot(nodes)
    wa = session(a.url, a.token_a, "alice")
    after_a = snapshot(nodes)
    wb = session(a.url, a.token_b, "bob")
    after_b = snapshot(nodes)
    node_a = [u for u in nodes if (after_a[u] or 0) > (before[u] or 0)]
    node_b = [u for u in nodes if (after_b[u] or 0) > (after_a[u] or 0)]
    if nodes:
        print(f"     alice's socket is on {node_a or '?'}, bob's on {node_b or '?'}")

    wa.send({"type": "ping", "id": "p1"})
    wa.wait_for(lambda f: f.get("type") == "pong", "pong")
    check("alice: ping -> pong", True)

    wb.send({"type": "sync", "id": "s1", "limit": 50})
    r = wb.wait_for(lambda f: f.get("type") == "sync_result", "sync_result")
    seqs = [e["seq"] for c in r.get("conversations", []) if c["conv_id"] == a.conv for e in c["events"]]
    check("bob: sync returns the message sent over HTTP", len(seqs) >= 1, f"(seqs {seqs})")

    cmid = f"nginx-check-{os.getpid()}-{time.time_ns()}"
    t = time.time()
    wa.send({"type": "send", "id": 7, "conv_id": a.conv, "client_msg_id": cmid,
             "content": {"type": "text", "text": "hello over the balancer"}})
    ack = wa.wait_for(lambda f: f.get("type") == "send_ack" and f.get("id") == 7, "send_ack")
    check("alice: send -> send_ack", ack.get("client_msg_id") == cmid,
          f"(seq {ack.get('seq')}, {1000 * (time.time() - t):.1f} ms)")
    ev = wb.wait_for(lambda f: f.get("type") == "event" and f["event"].get("seq") == ack["seq"], "the push")
    cross = bool(node_a and node_b and node_a != node_b)
    check("bob: receives alice's message" + (" across nodes" if cross else ""),
          ev["event"]["content"]["text"] == "hello over the balancer")
    wb.send({"type": "ack", "conv_id": a.conv, "seq": ack["seq"]})

    if a.restart:
        if len(node_b) != 1 or not nodes.get(node_b[0]):
            check("restart: found the node holding bob's socket", False, f"({node_b})")
        victim = node_b[0]
        os.kill(nodes[victim], signal.SIGTERM)
        try:
            wb.wait_for(lambda f: False, "close", timeout=15)
        except Closed as c:
            check("restart: SIGTERM closes bob's socket with 1001", c.code == 1001, f"(got {c.code} {c.reason!r})")
        # alice sends while bob is away (alice is on another node)
        cmid2 = cmid + "-2"
        wa.send({"type": "send", "id": 8, "conv_id": a.conv, "client_msg_id": cmid2,
                 "content": {"type": "text", "text": "sent while bob reconnects"}})
        ack2 = wa.wait_for(lambda f: f.get("type") == "send_ack" and f.get("id") == 8, "send_ack")
        # the node takes a moment to stop listening; nginx skips it
        mid = snapshot(nodes)
        deadline = time.time() + 20
        while True:
            try:
                wb = session(a.url, a.token_b, "bob (reconnected)")
                break
            except (OSError, RuntimeError, Closed) as e:
                if time.time() > deadline:
                    check("restart: bob reconnects through the balancer", False, str(e))
                time.sleep(0.5)
        wb.send({"type": "sync", "id": "s2", "limit": 50, "cursors": [{"conv_id": a.conv, "after_seq": ack["seq"]}]})
        r = wb.wait_for(lambda f: f.get("type") == "sync_result", "sync_result")
        seqs = [e["seq"] for c in r.get("conversations", []) if c["conv_id"] == a.conv for e in c["events"]]
        check("restart: bob's sync returns what was sent meanwhile", ack2["seq"] in seqs, f"(seqs {seqs})")
        after = snapshot(nodes)
        moved = [u for u in nodes if u != victim and (after[u] or 0) > (mid[u] or 0)]
        print(f"     bob's new socket is on {moved or '?'} ({victim} was stopped)")

    wa.close()
    wb.close()


if __name__ == "__main__":
    try:
        main()
    except (Closed, RuntimeError, OSError, KeyError, ValueError) as e:
        print(f"FAIL {type(e).__name__}: {e}")
        sys.exit(1)
