// End-to-end tests of the tokenim web client, run by `node --test` (see run.sh).
//
// Each test drives real headless Chromium pages (playwright-core) against a real
// `tokenim serve` started here on a free port with a temporary data directory.
// Every wait is for an element or a condition, with a timeout; none is a fixed sleep.
'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { chromium } = require('playwright-core');

const ROOT = path.resolve(__dirname, '..', '..');
const BIN = process.env.TOKENIM_BIN || path.join(ROOT, 'target', 'debug', 'tokenim');
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const WEB_DIR = path.join(ROOT, 'crates', 'tokenim-server', 'web');
// Screenshots go to a temporary folder unless SCREENSHOT_DIR says where
// (`SCREENSHOT_DIR=docs/screenshots tests/web/run.sh` refreshes the docs).
const SHOTS = process.env.SCREENSHOT_DIR
  ? path.resolve(ROOT, process.env.SCREENSHOT_DIR)
  : fs.mkdtempSync(path.join(os.tmpdir(), 'tokenim-shots-'));
const PASSWORD = 'correct-horse-9';
const API_KEY = 'web-test-backend-key'; // the app backend's key (server API)
const T = 15000; // ordinary UI wait
const T_RECONNECT = 45000; // reconnect waits (backoff grows while the server is down)

const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };

// ---------------------------------------------------------------------------
// Server processes
// ---------------------------------------------------------------------------
const tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'tokenim-web-test-'));
const servers = new Set();

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.unref();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

function until(what, fn, timeoutMs, everyMs = 100) {
  const deadline = Date.now() + timeoutMs;
  return new Promise((resolve, reject) => {
    const tick = async () => {
      let v;
      try {
        v = await fn();
      } catch {
        v = undefined;
      }
      if (v) return resolve(v);
      if (Date.now() > deadline) return reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`));
      setTimeout(tick, everyMs);
    };
    tick();
  });
}

class Server {
  constructor(port, dataDir) {
    this.port = port;
    this.dataDir = dataDir;
    this.base = `http://127.0.0.1:${port}`;
    this.proc = null;
    this.log = path.join(tmpRoot, `server-${port}.log`);
  }

  async start() {
    const out = fs.openSync(this.log, 'a');
    this.proc = spawn(
      BIN,
      [
        'serve',
        '--listen', `127.0.0.1:${this.port}`,
        '--data-dir', this.dataDir,
        '--argon2-memory-kib', '8',
        '--argon2-iterations', '1',
        '--limit', 'login_rate_per_min=100000',
        '--limit', 'login_burst=100000',
        '--limit', 'send_rate_per_sec=10000',
        '--limit', 'send_burst=10000',
        '--api-key', `backend=${API_KEY}`,
      ],
      { stdio: ['ignore', out, out] },
    );
    fs.closeSync(out);
    const proc = this.proc;
    servers.add(proc);
    if (process.env.TOKENIM_TEST_PIDFILE) fs.appendFileSync(process.env.TOKENIM_TEST_PIDFILE, `${proc.pid}\n`);
    let exited = false;
    proc.once('exit', () => {
      exited = true;
      servers.delete(proc);
    });
    await until(`${this.base}/healthz`, async () => {
      if (exited) throw new Error('exited');
      const r = await fetch(`${this.base}/healthz`);
      return r.ok;
    }, 30000).catch((e) => {
      throw new Error(`server did not start (${e.message}); log:\n${fs.readFileSync(this.log, 'utf8').slice(-2000)}`);
    });
    if (exited) throw new Error(`server exited at start; log:\n${fs.readFileSync(this.log, 'utf8').slice(-2000)}`);
  }

  async stop() {
    const proc = this.proc;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    const gone = new Promise((resolve) => proc.once('exit', resolve));
    proc.kill('SIGTERM');
    const t = setTimeout(() => proc.kill('SIGKILL'), 15000);
    await gone;
    clearTimeout(t);
  }
}

async function api(server, method, p, token, body) {
  const headers = {};
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const r = await fetch(`${server.base}/v1${p}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await r.text();
  const data = text ? JSON.parse(text) : null;
  if (!r.ok) throw new Error(`${method} ${p}: ${r.status} ${text}`);
  return data;
}

// ---------------------------------------------------------------------------
// Browser helpers
// ---------------------------------------------------------------------------
let browser;
let server;
const pageErrors = [];

async function newPage(viewport = DESKTOP, opts = {}) {
  const ctx = await browser.newContext({ viewport, deviceScaleFactor: opts.scale || 1, isMobile: !!opts.mobile, hasTouch: !!opts.mobile });
  if (opts.beforeLoad) await opts.beforeLoad(ctx);
  const page = await ctx.newPage();
  page.setDefaultTimeout(T);
  page.on('pageerror', (e) => pageErrors.push(`${opts.name || 'page'}: ${e.message}`));
  // The page must pass its own Content-Security-Policy: any violation
  // (an inline style or script, a connection elsewhere) fails the run.
  page.on('console', (m) => {
    if (m.type() === 'error' && /Content Security Policy/i.test(m.text())) {
      pageErrors.push(`${opts.name || 'page'}: CSP: ${m.text()}`);
    }
  });
  page.on('dialog', (d) => d.accept()); // "recall this message?" confirmations
  return page;
}

async function register(page, username, displayName) {
  await page.goto(server.base + '/');
  await page.locator('#auth-form').waitFor();
  await page.click('#tab-register');
  await page.fill('#auth-username', username);
  await page.fill('#auth-display-name', displayName);
  await page.fill('#auth-password', PASSWORD);
  await page.click('#auth-submit');
  await waitOnline(page);
  await page.locator('#me-name', { hasText: displayName }).waitFor();
}

async function login(page, username) {
  await page.goto(server.base + '/');
  await page.locator('#auth-form').waitFor();
  await page.fill('#auth-username', username);
  await page.fill('#auth-password', PASSWORD);
  await page.click('#auth-submit');
  await waitOnline(page);
}

function waitOnline(page, timeout = T) {
  return page.locator('#conn-status[data-state="online"]').waitFor({ timeout });
}

// The browser's network is up in these tests: the banner blames the
// server, not the user's connection.
async function waitOffline(page) {
  await page.locator('#conn-status[data-state="offline"]').waitFor({ timeout: T });
  await page.locator('#conn-banner', { hasText: 'Cannot reach the server' }).waitFor({ timeout: T });
}

async function openDirectByUsername(page, username, peerDisplayName) {
  await page.click('#new-chat-btn');
  await page.locator('#new-chat-dialog[open]').waitFor();
  await page.click('#tab-direct');
  await page.fill('#direct-username', username);
  await page.click('#new-chat-submit');
  await page.locator('#chat-title', { hasText: peerDisplayName }).waitFor();
}

async function openFromList(page, title) {
  await page.locator('.conv-item', { has: page.locator('.conv-title', { hasText: title }) }).click();
  await page.locator('#chat-title', { hasText: title }).waitFor();
}

async function sendText(page, text) {
  await page.fill('#composer-input', text);
  await page.press('#composer-input', 'Enter');
  // shown at once (sending or already acked)
  await myMsg(page, text).waitFor();
}

const myMsg = (page, text, status) => page.locator(`.msg.mine${status ? `[data-status="${status}"]` : ''}`, { has: page.locator('.text', { hasText: text }) });
const theirMsg = (page, text) => page.locator('.msg.theirs', { has: page.locator('.text', { hasText: text }) });

async function tokenOf(page) {
  return page.evaluate(() => JSON.parse(localStorage.getItem('tokenim.session')).token);
}

async function shot(page, name) {
  fs.mkdirSync(SHOTS, { recursive: true });
  await page.evaluate(() => document.activeElement && document.activeElement.blur && document.activeElement.blur());
  const vp = page.viewportSize();
  await page.mouse.move(vp.width - 1, vp.height - 1); // no hover highlight
  await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
  await page.screenshot({ path: path.join(SHOTS, name) });
}

// ---------------------------------------------------------------------------
// Shared cast
// ---------------------------------------------------------------------------
const U = {
  alice: { username: 'alice', name: 'Alice Martin' },
  bob: { username: 'bob', name: 'Bob Chen' },
  carol: { username: 'carol', name: 'Carol Diaz' },
};
let pa; // alice, desktop
let pb; // bob, desktop
let pc; // carol, desktop
let directConvId;

before(async () => {
  assert.ok(fs.existsSync(BIN), `server binary not found at ${BIN} (build it: cargo build -p tokenim)`);
  assert.ok(fs.existsSync(CHROMIUM), `chromium not found at ${CHROMIUM}`);
  server = new Server(await freePort(), path.join(tmpRoot, 'data'));
  await server.start();
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
});

after(async () => {
  if (browser) await browser.close().catch(() => {});
  for (const p of servers) p.kill('SIGKILL');
  fs.rmSync(tmpRoot, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------
test('the server serves the embedded client assets', async () => {
  for (const [route, file, type] of [
    ['/', 'index.html', 'text/html'],
    ['/app.js', 'app.js', 'text/javascript'],
    ['/style.css', 'style.css', 'text/css'],
  ]) {
    const r = await fetch(server.base + route);
    assert.equal(r.status, 200, route);
    assert.match(r.headers.get('content-type') || '', new RegExp(type), route);
    const body = await r.text();
    assert.equal(body, fs.readFileSync(path.join(WEB_DIR, file), 'utf8'), `${route} differs from ${file}: is the binary stale? rebuild it`);
    const csp = r.headers.get('content-security-policy') || '';
    for (const d of ["default-src 'none'", "script-src 'self'", "style-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"]) {
      assert.ok(csp.includes(d), `${route}: CSP lacks ${d}: ${csp}`);
    }
    assert.ok(!/unsafe-inline|unsafe-eval/.test(csp), csp);
    assert.equal(r.headers.get('x-content-type-options'), 'nosniff', route);
    assert.equal(r.headers.get('referrer-policy'), 'no-referrer', route);
    assert.equal(r.headers.get('x-frame-options'), 'DENY', route);
  }
});

test('direct chat: two users exchange messages and see delivery and read ticks', async () => {
  pa = await newPage(DESKTOP, { name: 'alice' });
  pb = await newPage(DESKTOP, { name: 'bob' });

  await pa.goto(server.base + '/');
  await pa.locator('#auth-form').waitFor();
  await shot(pa, 'login.png');

  await register(pa, U.alice.username, U.alice.name);
  await register(pb, U.bob.username, U.bob.name);

  // Alice opens a direct chat with Bob by username and writes first.
  await openDirectByUsername(pa, U.bob.username, U.bob.name);
  directConvId = await pa.evaluate(() => decodeURIComponent(location.hash.slice(3)));
  assert.match(directConvId, /\S/);
  await sendText(pa, 'Hi Bob! Are we still on for lunch tomorrow?');
  // Bob's page is online but not in the chat: his device acks, so "delivered", not yet "read".
  await myMsg(pa, 'Are we still on for lunch', 'delivered').waitFor();

  // Bob's list shows the new conversation with an unread badge and Alice's last message.
  const bobItem = pb.locator('.conv-item', { has: pb.locator('.conv-title', { hasText: U.alice.name }) });
  await bobItem.locator('.badge', { hasText: '1' }).waitFor();
  await bobItem.locator('.conv-preview', { hasText: 'Are we still on for lunch' }).waitFor();
  // and Alice is shown online
  await bobItem.locator('.presence-dot.online').waitFor();
  await pa.locator('.conv-item .presence-dot.online').waitFor();

  // Bob opens the same direct chat by username: same conversation.
  await openDirectByUsername(pb, U.alice.username, U.alice.name);
  assert.equal(await pb.evaluate(() => decodeURIComponent(location.hash.slice(3))), directConvId);
  await theirMsg(pb, 'Are we still on for lunch').waitFor();
  await bobItem.locator('.badge').waitFor({ state: 'detached' });

  // Alice sees that Bob read her message.
  await myMsg(pa, 'Are we still on for lunch', 'read').waitFor();

  // Typing indicator
  await pb.type('#composer-input', 'Yes');
  await pa.locator('#chat-sub.typing', { hasText: 'typing' }).waitFor();

  await pb.fill('#composer-input', '');
  await sendText(pb, 'Yes! 12:30 at the usual place?');
  await theirMsg(pa, '12:30 at the usual place').waitFor();
  await myMsg(pb, '12:30 at the usual place', 'read').waitFor();

  await sendText(pa, 'Perfect, see you there.');
  await sendText(pa, 'I will bring the slides for Thursday, too.');
  await theirMsg(pb, 'see you there').waitFor();
  await theirMsg(pb, 'bring the slides').waitFor();
  await myMsg(pa, 'bring the slides', 'read').waitFor();
  await myMsg(pa, 'see you there', 'read').waitFor();
  await sendText(pb, 'Great, thanks! Here is the agenda: https://example.com/agenda');
  await myMsg(pb, 'Here is the agenda', 'read').waitFor();
  await theirMsg(pa, 'Here is the agenda').locator('a[href="https://example.com/agenda"]').waitFor();

  // The typing notice disappears after a few seconds without typing.
  await pa.locator('#chat-sub.typing').waitFor({ state: 'detached', timeout: 10000 });
  await shot(pa, 'chat-desktop.png');
});

test('group chat: three users each see every message', async () => {
  pc = await newPage(DESKTOP, { name: 'carol' });
  await register(pc, U.carol.username, U.carol.name);

  await pa.click('#new-chat-btn');
  await pa.click('#tab-group');
  await pa.fill('#group-title', 'Weekend hike');
  await pa.fill('#group-member-input', U.bob.username);
  await pa.press('#group-member-input', 'Enter');
  await pa.locator('.chip', { hasText: 'bob' }).waitFor();
  await pa.fill('#group-member-input', U.carol.username);
  await pa.press('#group-member-input', 'Enter');
  await pa.locator('.chip', { hasText: 'carol' }).waitFor();
  await shot(pa, 'new-group-dialog.png');
  await pa.click('#new-chat-submit');
  await pa.locator('#chat-title', { hasText: 'Weekend hike' }).waitFor();
  await pa.locator('#chat-sub', { hasText: '3 members' }).waitFor();

  // the group appears in the others' lists by itself
  await openFromList(pb, 'Weekend hike');
  await openFromList(pc, 'Weekend hike');

  const lines = [
    [pa, 'Who is in for Saturday? Forecast says 24 °C and sunny.'],
    [pb, 'Count me in! I can drive, 3 free seats.'],
    [pc, 'Me too. I will bring snacks and coffee.'],
  ];
  for (const [p, text] of lines) await sendText(p, text);
  for (const p of [pa, pb, pc]) {
    for (const [sender, text] of lines) {
      if (sender === p) await myMsg(p, text).waitFor();
      else await theirMsg(p, text).waitFor();
    }
  }
  // sender names are shown in groups
  await theirMsg(pa, 'Count me in').locator('.sender-name', { hasText: U.bob.name }).waitFor();
  await theirMsg(pb, 'snacks').locator('.sender-name', { hasText: U.carol.name }).waitFor();
  // a message read by both others shows as read
  await myMsg(pa, 'Who is in for Saturday', 'read').waitFor();
  await shot(pa, 'group-desktop.png');
});

test('a reload keeps the session and shows the history; old history scrolls back', async () => {
  await pa.reload();
  await waitOnline(pa);
  await pa.locator('#me-name', { hasText: U.alice.name }).waitFor();
  // the open chat stays open, with its history
  await pa.locator('#chat-title', { hasText: 'Weekend hike' }).waitFor();
  await theirMsg(pa, 'snacks').waitFor();
  await myMsg(pa, 'Who is in for Saturday', 'read').waitFor();

  // a fresh tab (no chat in the URL) lands on the list, logged in
  const tab = await pa.context().newPage();
  tab.on('pageerror', (e) => pageErrors.push(`alice tab: ${e.message}`));
  await tab.goto(server.base + '/');
  await waitOnline(tab);
  await tab.locator('.conv-item', { hasText: 'Weekend hike' }).waitFor();
  await openFromList(tab, U.bob.name);
  await theirMsg(tab, 'Here is the agenda').waitFor();
  await myMsg(tab, 'Are we still on for lunch', 'read').waitFor();

  // Long history: Bob writes 130 messages into a new group over HTTP, then
  // adds Alice (so they are history to her, not unread: unread messages
  // open at their first one, tested below).
  const bobToken = await tokenOf(pb);
  const me = await api(server, 'GET', '/me', await tokenOf(pa));
  const conv = await api(server, 'POST', '/conversations', bobToken, { type: 'group', title: 'Archive', members: [] });
  for (let i = 1; i <= 130; i++) {
    await api(server, 'POST', `/conversations/${conv.conv_id}/messages`, bobToken, { client_msg_id: `hist-${i}`, content: { type: 'text', text: `history line ${i}.` } });
  }
  await api(server, 'POST', `/conversations/${conv.conv_id}/members`, bobToken, { user_ids: [me.user_id] });
  await openFromList(tab, 'Archive');
  await theirMsg(tab, 'history line 130.').waitFor();
  assert.equal(await theirMsg(tab, 'history line 1.').count(), 0, 'the first page is not the whole history');
  // scroll to the top until the first message has been loaded
  await until('history line 1 after scrolling back', async () => {
    await tab.evaluate(() => {
      document.querySelector('#messages').scrollTop = 0;
    });
    return (await theirMsg(tab, 'history line 1.').count()) === 1;
  }, T, 250);
  await tab.locator('#history-status', { hasText: 'beginning' }).waitFor();
  const seqs = await tab.$$eval('.msg[data-seq]', (els) => els.map((e) => Number(e.dataset.seq)));
  for (let i = 1; i < seqs.length; i++) assert.ok(seqs[i] > seqs[i - 1], 'messages in seq order');
  await tab.close();

  // The tab shared Alice's device (one browser), so the server replaced the
  // first tab's socket: that tab says so and takes the connection back on request.
  await pa.locator('#conn-status[data-state="replaced"]').waitFor();
  await pa.locator('#conn-banner', { hasText: 'another window' }).waitFor();
  await pa.click('#conn-banner-btn');
  await waitOnline(pa);
});

test('server restart: offline shown, reconnects by itself, resyncs, resends the outbox', async () => {
  await openFromList(pa, U.bob.name);
  await openFromList(pb, U.alice.name);

  await server.stop();
  await waitOffline(pa);
  await waitOffline(pb);

  // sent while the server is down: shown as sending, kept in the outbox
  await sendText(pa, 'Sent while the server was down');
  await myMsg(pa, 'Sent while the server was down', 'sending').waitFor();
  const stored = await pa.evaluate(() => Object.keys(localStorage).filter((k) => k.endsWith('.outbox')).map((k) => localStorage.getItem(k)).join(''));
  assert.match(stored, /Sent while the server was down/);
  await shot(pa, 'offline-desktop.png');

  await server.start(); // same port, same data dir
  await waitOnline(pa, T_RECONNECT);
  await waitOnline(pb, T_RECONNECT);
  await pa.locator('#conn-banner').waitFor({ state: 'hidden' });

  // the outbox message is delivered exactly once and then read by Bob
  await theirMsg(pb, 'Sent while the server was down').waitFor();
  await myMsg(pa, 'Sent while the server was down', 'read').waitFor();
  assert.equal(await theirMsg(pb, 'Sent while the server was down').count(), 1);

  // a message Bob sends over the HTTP API reaches Alice's page
  await api(server, 'POST', `/conversations/${directConvId}/messages`, await tokenOf(pb), {
    client_msg_id: 'http-after-restart',
    content: { type: 'text', text: 'Sent over HTTP after the restart' },
  });
  await theirMsg(pa, 'Sent over HTTP after the restart').waitFor();
  const after = await pa.evaluate(() => Object.keys(localStorage).filter((k) => k.endsWith('.outbox')).map((k) => JSON.parse(localStorage.getItem(k)).length));
  assert.deepEqual(after, [0], 'outbox empty once acked');
});

test('network drop: missed messages arrive by sync; the outbox survives a reload', async () => {
  // A second device of Alice whose WebSocket the test can cut.
  const live = new Set();
  let blocked = false;
  let dropAcks = false; // swallow send_acks from the server (a lost reply)
  let droppedAcks = 0;
  const pa2 = await newPage(DESKTOP, {
    name: 'alice-2',
    beforeLoad: (ctx) =>
      ctx.routeWebSocket(/\/v1\/ws$/, (ws) => {
        if (blocked) {
          ws.close({ code: 1006 });
          return;
        }
        const up = ws.connectToServer();
        up.onMessage((m) => {
          if (dropAcks && typeof m === 'string' && JSON.parse(m).type === 'send_ack') {
            droppedAcks++;
            return;
          }
          ws.send(m);
        });
        live.add({ ws, up });
      }),
  });
  const cut = async () => {
    blocked = true;
    for (const l of live) {
      await l.ws.close({ code: 1006 }).catch(() => {});
      await l.up.close().catch(() => {});
    }
    live.clear();
  };
  await login(pa2, U.alice.username);
  await openFromList(pa2, U.bob.name);
  await theirMsg(pa2, 'Sent over HTTP after the restart').waitFor();

  // 1. messages sent while the page is disconnected come back through sync
  await cut();
  await waitOffline(pa2);
  const bobToken = await tokenOf(pb);
  for (let i = 1; i <= 3; i++) {
    await api(server, 'POST', `/conversations/${directConvId}/messages`, bobToken, {
      client_msg_id: `while-cut-${i}`,
      content: { type: 'text', text: `Missed while offline #${i}` },
    });
  }
  blocked = false;
  await waitOnline(pa2, T_RECONNECT);
  for (let i = 1; i <= 3; i++) await theirMsg(pa2, `Missed while offline #${i}`).waitFor();
  assert.equal(await theirMsg(pa2, 'Missed while offline #2').count(), 1, 'no duplicates');

  // 2. a message written while offline survives a reload and is sent on reconnect
  await cut();
  await waitOffline(pa2);
  await sendText(pa2, 'Written offline, then the page was reloaded');
  await myMsg(pa2, 'Written offline, then the page was reloaded', 'sending').waitFor();
  await pa2.reload();
  await waitOffline(pa2);
  await myMsg(pa2, 'Written offline, then the page was reloaded', 'sending').waitFor();
  blocked = false;
  await waitOnline(pa2, T_RECONNECT);
  await theirMsg(pb, 'Written offline, then the page was reloaded').waitFor();
  await myMsg(pa2, 'Written offline, then the page was reloaded', 'read').waitFor();
  // Alice's other page gets it too (pushed to the sender's other devices)
  await myMsg(pa, 'Written offline, then the page was reloaded').waitFor();
  assert.equal(await theirMsg(pb, 'Written offline, then the page was reloaded').count(), 1);

  // 3. the send_ack is lost: the message stays `sending` and is resent with the
  //    same client_msg_id after the timeout; the server's dedup keeps one copy
  dropAcks = true;
  await sendText(pa2, 'My first ack got lost');
  await theirMsg(pb, 'My first ack got lost').waitFor();
  await until('a dropped send_ack', () => droppedAcks >= 1, T);
  await myMsg(pa2, 'My first ack got lost', 'sending').waitFor();
  dropAcks = false;
  await myMsg(pa2, 'My first ack got lost', 'read').waitFor();
  assert.equal(await theirMsg(pb, 'My first ack got lost').count(), 1, 'resend created no duplicate');
  assert.equal(await myMsg(pa2, 'My first ack got lost').count(), 1);
  await pa2.context().close();
});

test('phone-sized screen: login, list, chat and back', async () => {
  const pp = await newPage(PHONE, { name: 'bob-phone', mobile: true, scale: 2 });
  await pp.goto(server.base + '/');
  await pp.locator('#auth-form').waitFor();
  await shot(pp, 'phone-login.png');
  await login(pp, U.bob.username);
  await pp.locator('.conv-item', { has: pp.locator('.conv-title', { hasText: U.alice.name }) }).waitFor();
  await pp.locator('.conv-item', { hasText: 'Weekend hike' }).waitFor();
  assert.equal(await pp.locator('.chat').isVisible(), false, 'only the list on a phone');
  await shot(pp, 'phone-conversations.png');

  await openFromList(pp, U.alice.name);
  assert.equal(await pp.locator('.sidebar').isVisible(), false, 'only the chat on a phone');
  await theirMsg(pp, 'Written offline').waitFor();
  await sendText(pp, 'Sent from my phone');
  await theirMsg(pa, 'Sent from my phone').waitFor();
  await myMsg(pp, 'Sent from my phone', 'read').waitFor();
  // nothing overflows horizontally
  assert.ok(await pp.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth));
  // touch screens: tapping my own message opens its menu
  await myMsg(pp, 'Sent from my phone').locator('.bubble').tap();
  await pp.locator('#msg-menu #menu-edit').waitFor();
  await pp.keyboard.press('Escape');
  await pp.locator('#msg-menu').waitFor({ state: 'hidden' });

  await pp.click('#back-btn');
  await pp.locator('.sidebar').waitFor();
  await pp.locator('.conv-item', { has: pp.locator('.conv-title', { hasText: U.alice.name }) }).waitFor();
  await openFromList(pp, 'Weekend hike');
  await theirMsg(pp, 'snacks and coffee').waitFor();
  await shot(pp, 'phone-chat.png');
  await pp.click('#back-btn');
  await pp.locator('.conv-item', { hasText: 'Weekend hike' }).waitFor();
  await pp.context().close();
});

test('user text is escaped, never interpreted as HTML', async () => {
  const evil = '<img src=x onerror="window.__pwned=1"><b>bold?</b>';
  await sendText(pa, evil);
  await theirMsg(pb, '<b>bold?</b>').waitFor();
  assert.equal(await pb.locator('.msg .text img, .msg .text b').count(), 0);
  assert.equal(await pb.evaluate(() => window.__pwned), undefined);
  await myMsg(pa, 'bold?', 'read').waitFor();
});

test('right-to-left text is laid out by its own direction', async () => {
  const rtl = 'مرحبا، كيف حالك؟';
  await sendText(pa, rtl);
  const got = theirMsg(pb, rtl);
  await got.waitFor();
  const text = got.locator('.text');
  assert.equal(await text.getAttribute('dir'), 'auto');
  // The browser resolves it to rtl: the question mark ends up on the left.
  assert.equal(await text.evaluate((el) => getComputedStyle(el).direction), 'rtl');
  await myMsg(pa, rtl, 'read').waitFor();
});

test('a message over the limit shows the limit and is not sent', async () => {
  const before = await pa.locator('.msg').count();
  const long = 'x'.repeat(20000);
  await pa.fill('#composer-input', long);
  const count = pa.locator('#composer-count.over');
  await count.waitFor();
  assert.match(await count.textContent(), /at most 16,384 bytes/);
  await pa.press('#composer-input', 'Enter');
  await pa.locator('#toast', { hasText: 'at most 16,384' }).waitFor();
  assert.equal(await pa.locator('.msg').count(), before, 'nothing was sent');
  // Shortened to fit: the count goes away and it sends.
  await pa.fill('#composer-input', 'short again');
  await pa.locator('#composer-count').waitFor({ state: 'hidden' });
  await pa.press('#composer-input', 'Enter');
  await myMsg(pa, 'short again').waitFor();
});

test('a conversation with 150 unread opens at a "New messages" divider', async () => {
  // Alice looks at the list, not the chat, while Bob writes 150 messages.
  await pa.evaluate(() => { location.hash = ''; });
  await pa.locator('body:not(.chat-open)').waitFor();
  const bobToken = await tokenOf(pb);
  for (let i = 1; i <= 150; i++) {
    await api(server, 'POST', `/conversations/${directConvId}/messages`, bobToken, {
      client_msg_id: `unread-${i}`,
      content: { type: 'text', text: `Unread number ${i}.` },
    });
  }
  await pa.locator('.conv-item', { has: pa.locator('.badge', { hasText: '99+' }) }).waitFor();
  await openFromList(pa, U.bob.name);
  const divider = pa.locator('#unread-divider');
  await divider.waitFor();
  const inView = (loc) => loc.evaluate((el) => {
    const box = document.querySelector('#messages').getBoundingClientRect();
    const r = el.getBoundingClientRect();
    return r.bottom > box.top && r.top < box.bottom;
  });
  const first = theirMsg(pa, 'Unread number 1.');
  await first.waitFor();
  assert.ok(await inView(divider), 'the divider is in view');
  assert.ok(await inView(first), 'the first unread message is in view');
  assert.ok(!(await inView(theirMsg(pa, 'Unread number 150.'))), 'it opens at the first unread, not the end');
  // The divider sits right above the first unread message.
  assert.equal(await divider.evaluate((el) => el.nextElementSibling.textContent.includes('Unread number 1.')), true);
  // Answering clears it.
  await sendText(pa, 'Read them all');
  await divider.waitFor({ state: 'detached' });
});

test('desktop notifications: asked with the bell, shown for a chat not being read, open it', async () => {
  // A recording stand-in for the browser's Notification (headless Chromium
  // shows none): permission starts undecided, the bell grants it.
  const pn = await newPage(DESKTOP, {
    name: 'alice-notify',
    beforeLoad: (ctx) => ctx.addInitScript(() => {
      window.__notes = [];
      class FakeNotification {
        constructor(title, opts) {
          this.title = title;
          this.body = opts.body;
          this.tag = opts.tag;
          window.__notes.push(this);
        }
        close() { this.closed = true; }
      }
      FakeNotification.permission = 'default';
      FakeNotification.requestPermission = async () => {
        FakeNotification.permission = 'granted';
        return 'granted';
      };
      window.Notification = FakeNotification;
    }),
  });
  await login(pn, U.alice.username);
  const bell = pn.locator('#notify-btn');
  await bell.waitFor();
  await bell.click();
  await bell.waitFor({ state: 'hidden' });
  // Alice reads the list, not the chat; Bob writes.
  assert.equal(await pn.evaluate(() => window.__notes.length), 0);
  await api(server, 'POST', `/conversations/${directConvId}/messages`, await tokenOf(pb), {
    client_msg_id: 'notify-1',
    content: { type: 'text', text: 'Are you coming?' },
  });
  await pn.waitForFunction(() => window.__notes.length === 1);
  const note = await pn.evaluate(() => ({ title: window.__notes[0].title, body: window.__notes[0].body, tag: window.__notes[0].tag }));
  assert.deepEqual(note, { title: U.bob.name, body: 'Are you coming?', tag: directConvId });
  // Clicking it opens the conversation.
  await pn.evaluate(() => window.__notes[0].onclick());
  await pn.locator('#chat-title', { hasText: U.bob.name }).waitFor();
  // While she reads it, new messages raise none.
  await api(server, 'POST', `/conversations/${directConvId}/messages`, await tokenOf(pb), {
    client_msg_id: 'notify-2',
    content: { type: 'text', text: 'See you there' },
  });
  await theirMsg(pn, 'See you there').waitFor();
  assert.equal(await pn.evaluate(() => window.__notes.length), 1);
  await pn.context().close();
});

test('group details: rename, add, roles, remove, leave; block in a direct chat', async () => {
  const aliceToken = await tokenOf(pa);
  const bob = await api(server, 'GET', '/me', await tokenOf(pb));
  await api(server, 'POST', '/conversations', aliceToken, { type: 'group', title: 'Book club', members: [bob.user_id] });
  await openFromList(pa, 'Book club');
  await pa.click('#info-btn');
  const members = pa.locator('#info-members');
  const row = (name) => members.locator('.info-member', { hasText: name });
  await row(U.bob.name).waitFor();
  assert.match(await row(U.alice.name).textContent(), /owner/);

  await pa.fill('#info-rename', 'Book club II');
  await pa.click('#info-rename-btn');
  await pb.locator('.conv-item .conv-title', { hasText: 'Book club II' }).waitFor();

  await pa.fill('#info-add', U.carol.username);
  await pa.press('#info-add', 'Enter');
  await row(U.carol.name).waitFor();
  await pc.locator('.conv-item .conv-title', { hasText: 'Book club II' }).waitFor();

  await row(U.bob.name).locator('button', { hasText: 'Make admin' }).click();
  await row(U.bob.name).locator('.role', { hasText: 'admin' }).waitFor();

  await row(U.carol.name).locator('button', { hasText: 'Remove' }).click();
  await row(U.carol.name).waitFor({ state: 'detached' });
  await pc.locator('.conv-item .conv-title', { hasText: 'Book club II' }).waitFor({ state: 'detached' });
  // A refused action says why (the owner cannot be removed by anyone).
  await pa.click('#info-done');

  // Bob leaves from his own details.
  await openFromList(pb, 'Book club II');
  await pb.click('#info-btn');
  await pb.locator('#info-leave').click();
  await pb.locator('#info-dialog').waitFor({ state: 'hidden' });
  await pb.locator('.conv-item .conv-title', { hasText: 'Book club II' }).waitFor({ state: 'detached' });

  // Alice blocks Bob in their direct chat: his sends are refused until she unblocks.
  await openFromList(pa, U.bob.name);
  await pa.click('#info-btn');
  await pa.locator('#info-block', { hasText: 'Block' }).click();
  await pa.locator('#info-block', { hasText: 'Unblock' }).waitFor();
  const post = (id) => fetch(`${server.base}/v1/conversations/${directConvId}/messages`, {
    method: 'POST',
    headers: { authorization: `Bearer ${bobToken}`, 'content-type': 'application/json' },
    body: JSON.stringify({ client_msg_id: id, content: { type: 'text', text: 'blocked?' } }),
  });
  const bobToken = await tokenOf(pb);
  assert.equal((await post('blocked-1')).status, 403);
  await pa.locator('#info-block', { hasText: 'Unblock' }).click();
  await pa.locator('#info-block', { hasText: /^Block$/ }).waitFor();
  assert.equal((await post('blocked-2')).status, 201);
  await pa.click('#info-done');
  // Both back in their direct chat, as the next tests expect.
  await openFromList(pb, U.alice.name);
  await theirMsg(pa, 'blocked?').waitFor();
});

test('edit and recall own messages', async () => {
  await sendText(pa, 'The meeting is at 3pm');
  await theirMsg(pb, 'The meeting is at 3pm').waitFor();

  // edit through the message menu
  const m = myMsg(pa, 'The meeting is at 3pm');
  await m.hover();
  await m.locator('.msg-more').click();
  await pa.click('#menu-edit');
  await pa.locator('#edit-bar').waitFor();
  await pa.fill('#composer-input', 'The meeting is at 4pm');
  await pa.press('#composer-input', 'Enter');
  const edited = theirMsg(pb, 'The meeting is at 4pm');
  await edited.waitFor();
  await edited.locator('.edited').waitFor();
  assert.equal(await theirMsg(pb, 'The meeting is at 3pm').count(), 0);
  await myMsg(pa, 'The meeting is at 4pm').locator('.edited', { hasText: 'edited' }).waitFor();

  // recall
  await sendText(pa, 'Oops, wrong chat');
  await theirMsg(pb, 'Oops, wrong chat').waitFor();
  const r = myMsg(pa, 'Oops, wrong chat');
  await r.hover();
  await r.locator('.msg-more').click();
  await pa.click('#menu-recall');
  await theirMsg(pb, 'This message was recalled').waitFor();
  await theirMsg(pb, 'Oops, wrong chat').waitFor({ state: 'detached' });
  await myMsg(pa, 'You recalled this message').waitFor();
});

test('messages from the app backend: a system notice, and one posted as a member', async () => {
  const ids = {};
  for (const p of [pa, pb]) {
    const me = await api(server, 'GET', '/me', await tokenOf(p));
    ids[me.username] = me.user_id;
  }
  const conv = await api(server, 'POST', '/server/conversations', API_KEY, {
    type: 'group', title: 'Announcements', owner: ids.alice, members: [ids.bob],
  });
  await openFromList(pb, 'Announcements');
  await openFromList(pa, 'Announcements');
  const post = (body) => api(server, 'POST', `/server/conversations/${conv.conv_id}/messages`, API_KEY, body);
  await post({ client_msg_id: 'sys-1', content: { type: 'text', text: 'Maintenance tonight at 22:00' } });
  await post({ as: ids.bob, client_msg_id: 'as-1', content: { type: 'text', text: 'Thanks for the heads-up' } });
  for (const p of [pa, pb]) {
    // the system message is a centered notice, without a sender or a menu
    await p.locator('.notice', { hasText: 'Maintenance tonight at 22:00' }).waitFor();
    assert.equal(await p.locator('.msg', { hasText: 'Maintenance tonight' }).count(), 0);
    // the members joined without anyone adding them
    await p.locator('.notice', { hasText: 'joined' }).waitFor();
  }
  // the message posted as bob is bob's own on his side, and his for alice
  await myMsg(pb, 'Thanks for the heads-up').waitFor();
  await theirMsg(pa, 'Thanks for the heads-up').locator('.sender-name', { hasText: U.bob.name }).waitFor();
  // a reload shows the same from history
  await pa.reload();
  await waitOnline(pa);
  await openFromList(pa, 'Announcements');
  await pa.locator('.notice', { hasText: 'Maintenance tonight at 22:00' }).waitFor();
  await theirMsg(pa, 'Thanks for the heads-up').waitFor();
});

test('sign out returns to the login screen', async () => {
  await pc.click('#logout-btn');
  await pc.locator('#auth-form').waitFor();
  assert.equal(await pc.evaluate(() => localStorage.getItem('tokenim.session')), null);
  await pc.reload();
  await pc.locator('#auth-form').waitFor();
});

test('no uncaught errors in any page', () => {
  assert.deepEqual(pageErrors, []);
});
