// tokenim web client: plain JavaScript, no framework, no build step.
// Protocol: /v1 HTTP JSON API + one WebSocket at /v1/ws (see PROTOCOL.md).
'use strict';

(() => {
  // ------------------------------------------------------------------
  // Constants
  // ------------------------------------------------------------------
  const RESEND_MS = 5000; // resend an unacked request after this long
  const TYPING_SEND_MS = 3000; // send `typing` at most this often
  const TYPING_SHOW_MS = 5000; // show "X is typing…" this long
  const PAGE = 50; // history page size
  const UNREAD_REACH = 1000; // history loaded back to the first unread, at most this far
  const SYNC_LIMIT = 200;
  const ACK_DELAY_MS = 250; // batch cumulative acks
  const GAP_SYNC_DELAY_MS = 400;
  const RECALL_WINDOW_MS = 120000;
  const BACKOFF_BASE_MS = 500;
  const BACKOFF_MAX_MS = 15000;
  const PERMANENT_ERRORS = new Set(['bad_request', 'forbidden', 'not_found', 'conflict', 'too_large', 'rejected']);

  const K_DEVICE = 'tokenim.device_id';
  const K_SESSION = 'tokenim.session';
  const kCursors = () => `tokenim.${S.session.user_id}.cursors`;
  const kOutbox = () => `tokenim.${S.session.user_id}.outbox`;
  const kCache = () => `tokenim.${S.session.user_id}.cache`;

  // Static SVG icons (constant markup, never user content).
  const ICONS = {
    info: '<svg viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round"><circle cx="12" cy="12" r="9"/><path d="M12 11v6M12 7.5v.5"/></svg>',
    bell: '<svg viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round"><path d="M18 8a6 6 0 0 0-12 0c0 7-3 9-3 9h18s-3-2-3-9"/><path d="M13.7 21a2 2 0 0 1-3.4 0"/></svg>',
    plus: '<svg viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round"><path d="M12 5v14M5 12h14"/></svg>',
    logout: '<svg viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round"><path d="M9 21H5a2 2 0 0 1-2-2V5a2 2 0 0 1 2-2h4"/><path d="M16 17l5-5-5-5M21 12H9"/></svg>',
    back: '<svg viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2.2" stroke-linecap="round" stroke-linejoin="round"><path d="M15 18l-6-6 6-6"/></svg>',
    send: '<svg viewBox="0 0 24 24" fill="currentColor"><path d="M3.4 20.4l17.45-7.48a1 1 0 0 0 0-1.84L3.4 3.6a.99.99 0 0 0-1.39.91L2 9.12c0 .5.37.93.87.99L17 12 2.87 13.88c-.5.07-.87.5-.87 1l.01 4.61c0 .71.73 1.2 1.39.91z"/></svg>',
    x: '<svg viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round"><path d="M6 6l12 12M18 6L6 18"/></svg>',
    more: '<svg viewBox="0 0 24 24" fill="currentColor"><circle cx="12" cy="5" r="1.8"/><circle cx="12" cy="12" r="1.8"/><circle cx="12" cy="19" r="1.8"/></svg>',
    clock: '<svg viewBox="0 0 16 16" fill="none" stroke="currentColor" stroke-width="1.5" stroke-linecap="round"><circle cx="8" cy="8" r="6"/><path d="M8 4.8V8l2.2 1.4"/></svg>',
    check: '<svg viewBox="0 0 18 12" fill="none" stroke="currentColor" stroke-width="1.7" stroke-linecap="round" stroke-linejoin="round"><path d="M3.5 6.5l3 3 6.5-7"/></svg>',
    checks: '<svg viewBox="0 0 18 12" fill="none" stroke="currentColor" stroke-width="1.7" stroke-linecap="round" stroke-linejoin="round"><path d="M1 6.5l3 3 6.5-7M8 9.5l.5.5 6.5-7.5"/></svg>',
    alert: '<svg viewBox="0 0 16 16" fill="none" stroke="currentColor" stroke-width="1.6" stroke-linecap="round"><circle cx="8" cy="8" r="6.2"/><path d="M8 4.8v3.6M8 11.2v.01"/></svg>',
    group: '<svg viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round"><path d="M17 21v-2a4 4 0 0 0-4-4H5a4 4 0 0 0-4 4v2"/><circle cx="9" cy="7" r="4"/><path d="M23 21v-2a4 4 0 0 0-3-3.87M16 3.13a4 4 0 0 1 0 7.75"/></svg>',
  };

  // ------------------------------------------------------------------
  // Small helpers
  // ------------------------------------------------------------------
  const $ = (sel) => document.querySelector(sel);

  /** Create an element. Text children become text nodes (never parsed as HTML). */
  function h(tag, attrs, ...kids) {
    const el = document.createElement(tag);
    if (attrs) {
      for (const [k, v] of Object.entries(attrs)) {
        if (v == null || v === false) continue;
        if (k === 'class') el.className = v;
        else if (k === 'text') el.textContent = v;
        else if (k === 'dataset') Object.assign(el.dataset, v);
        else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
        else el.setAttribute(k, v === true ? '' : String(v));
      }
    }
    for (const kid of kids.flat()) {
      if (kid == null || kid === false) continue;
      el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
    }
    return el;
  }

  function icon(name, cls) {
    const t = document.createElement('template');
    t.innerHTML = ICONS[name]; // constant markup only
    const el = t.content.firstElementChild;
    el.classList.add('icon');
    if (cls) el.classList.add(cls);
    el.setAttribute('aria-hidden', 'true');
    return el;
  }

  function uuid() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    // crypto.randomUUID needs a secure context; getRandomValues does not.
    const b = crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const x = Array.from(b, (v) => v.toString(16).padStart(2, '0')).join('');
    return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`;
  }

  const LS = {
    get(k, d) {
      try {
        const v = localStorage.getItem(k);
        return v == null ? d : JSON.parse(v);
      } catch {
        return d;
      }
    },
    set(k, v) {
      try {
        localStorage.setItem(k, JSON.stringify(v));
      } catch {
        /* quota or disabled storage: keep going in memory */
      }
    },
    del(k) {
      try {
        localStorage.removeItem(k);
      } catch {
        /* ignore */
      }
    },
  };

  function deviceId() {
    let d = null;
    try {
      d = localStorage.getItem(K_DEVICE);
    } catch {
      /* ignore */
    }
    if (!d || !/^[A-Za-z0-9_.-]{1,64}$/.test(d)) {
      d = 'web-' + uuid();
      try {
        localStorage.setItem(K_DEVICE, d);
      } catch {
        /* ignore */
      }
    }
    return d;
  }

  function hashHue(s) {
    let x = 0;
    for (let i = 0; i < s.length; i++) x = (x * 31 + s.charCodeAt(i)) >>> 0;
    return x % 360;
  }

  function initials(name) {
    const parts = String(name || '?').trim().split(/\s+/).filter(Boolean);
    if (!parts.length) return '?';
    const first = Array.from(parts[0])[0] || '?';
    const second = parts.length > 1 ? Array.from(parts[parts.length - 1])[0] || '' : '';
    return (first + second).toUpperCase();
  }

  function sameDay(a, b) {
    const x = new Date(a);
    const y = new Date(b);
    return x.getFullYear() === y.getFullYear() && x.getMonth() === y.getMonth() && x.getDate() === y.getDate();
  }

  function fmtTime(ts) {
    return new Date(ts).toLocaleTimeString([], { hour: 'numeric', minute: '2-digit' });
  }

  function fmtListTime(ts) {
    if (!ts) return '';
    const now = Date.now();
    if (sameDay(ts, now)) return fmtTime(ts);
    if (Math.abs(now - ts) < 6 * 86400000) return new Date(ts).toLocaleDateString([], { weekday: 'short' });
    return new Date(ts).toLocaleDateString([], { day: 'numeric', month: 'short' });
  }

  function fmtDay(ts) {
    const now = Date.now();
    if (sameDay(ts, now)) return 'Today';
    if (sameDay(ts, now - 86400000)) return 'Yesterday';
    const d = new Date(ts);
    const opts = { weekday: 'long', day: 'numeric', month: 'long' };
    if (d.getFullYear() !== new Date(now).getFullYear()) opts.year = 'numeric';
    return d.toLocaleDateString([], opts);
  }

  function fmtLastSeen(ts) {
    if (!ts) return 'offline';
    if (sameDay(ts, Date.now())) return `last seen today at ${fmtTime(ts)}`;
    if (sameDay(ts, Date.now() - 86400000)) return `last seen yesterday at ${fmtTime(ts)}`;
    return `last seen ${new Date(ts).toLocaleDateString([], { day: 'numeric', month: 'short' })}`;
  }

  let toastTimer = null;
  function toast(msg, ms = 3500) {
    const el = $('#toast');
    el.textContent = msg;
    el.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => {
      el.hidden = true;
    }, ms);
  }

  // ------------------------------------------------------------------
  // State
  // ------------------------------------------------------------------
  const S = {
    session: null, // {token, user_id, device_id, me?}
    me: null, // {user_id, username, display_name}
    convs: new Map(), // conv_id -> conv (see newConv)
    users: new Map(), // user_id -> {user_id, username, display_name}
    userFetch: new Map(), // user_id -> Promise
    blocked: new Set(), // user IDs blocked from this page
    presence: new Map(), // user_id -> {online, last_seen}
    presenceKey: '',
    openId: null,
    outbox: [], // unacked send/edit/recall requests (persisted)
    cursors: {}, // conv_id -> highest contiguous seq (persisted)
    ws: null,
    conn: 'offline', // connecting | online | offline | replaced
    noReconnect: false,
    attempt: 0,
    reconnectAt: 0,
    heartbeatMs: 30000,
    clockSkew: 0, // server_time - Date.now()
    lastRecv: 0,
    reqId: 0,
    pending: new Map(), // request id -> {resolve?, reject?, cmid?}
    synced: false, // the first sync of the current connection is done
    syncing: false,
    syncAgain: false,
    listLoaded: false,
    editing: null, // {conv_id, seq}
    typingSentAt: 0,
    stickBottom: false,
    msgEls: new Map(), // key -> element, for the open conversation
    renderedConv: null,
    timers: {},
  };

  function newConv(id) {
    return {
      id,
      type: 'direct',
      title: null,
      members: [],
      member_count: 0,
      last_seq: 0,
      read_seq: 0,
      unread: 0,
      lastEvent: null,
      created_at: 0,
      only_admins_send: false,
      stub: true, // details not loaded yet
      // timeline state
      msgs: new Map(), // seq -> displayable event (messages and notices)
      histFrom: null, // lowest seq loaded in the chat view (null: not loaded)
      hasOlder: false,
      loadingHist: false,
      histError: null,
      contig: Object.prototype.hasOwnProperty.call(S.cursors, id) ? S.cursors[id] : null,
      above: new Set(), // seqs received above `contig` (a gap below them)
      early: [], // pushes received before the first sync (contig unknown)
      acked: 0,
      maxSeen: 0,
      // status of my messages
      readBy: new Map(), // user_id -> read_seq
      deliveredBy: new Map(), // user_id -> seq
      receiptsChecked: 0,
      typing: new Map(), // user_id -> expiry ms
      addedAt: Date.now(),
    };
  }

  function getConv(id) {
    let c = S.convs.get(id);
    if (!c) {
      c = newConv(id);
      S.convs.set(id, c);
    }
    return c;
  }

  /** Merge a server conversation object into local state. */
  function mergeConv(o) {
    const c = getConv(o.conv_id);
    c.stub = false;
    c.type = o.type || c.type;
    c.title = o.title ?? null;
    if (Array.isArray(o.members)) c.members = o.members;
    c.member_count = o.member_count ?? (Array.isArray(o.members) ? o.members.length : c.member_count);
    if (typeof o.last_seq === 'number') c.last_seq = Math.max(c.last_seq, o.last_seq);
    if (typeof o.read_seq === 'number') c.read_seq = Math.max(c.read_seq, o.read_seq);
    if (typeof o.unread === 'number') c.unread = o.unread;
    if (o.last_event && (!c.lastEvent || o.last_event.seq >= c.lastEvent.seq)) c.lastEvent = o.last_event;
    if (o.created_at) c.created_at = o.created_at;
    c.only_admins_send = !!o.only_admins_send;
    // direct peers now; group members lazily, when a name is shown
    if (c.type === 'direct') for (const m of c.members) if (m.user_id !== myId()) ensureUser(m.user_id);
    return c;
  }

  const myId = () => (S.session ? S.session.user_id : null);

  function otherMembers(c) {
    return c.members.map((m) => m.user_id).filter((u) => u !== myId());
  }

  function peerOf(c) {
    if (c.type !== 'direct') return null;
    return otherMembers(c)[0] || null;
  }

  function myRole(c) {
    const m = c.members.find((x) => x.user_id === myId());
    return m ? m.role : 'member';
  }

  // ------------------------------------------------------------------
  // Users
  // ------------------------------------------------------------------
  function ensureUser(id) {
    if (!id || S.users.has(id) || S.userFetch.has(id) || !S.session) return;
    const p = api('GET', `/users/${encodeURIComponent(id)}`)
      .then((u) => {
        S.users.set(id, u);
        saveCacheSoon();
        invalidate();
      })
      .catch(() => {})
      .finally(() => {
        // allow a retry later if it failed
        setTimeout(() => S.userFetch.delete(id), S.users.has(id) ? 0 : 10000);
      });
    S.userFetch.set(id, p);
  }

  function userName(id) {
    if (id === myId() && S.me && S.me.display_name) return S.me.display_name;
    const u = S.users.get(id);
    if (u) return u.display_name || u.username;
    ensureUser(id);
    return '…';
  }

  function whoName(id, mid) {
    return id === myId() ? (mid ? 'you' : 'You') : userName(id);
  }
  const whoMid = (id) => whoName(id, true);

  function convTitle(c) {
    if (c.type === 'direct') {
      const p = peerOf(c);
      return p ? userName(p) : 'Direct chat';
    }
    return c.title || 'Untitled group';
  }

  // ------------------------------------------------------------------
  // HTTP API
  // ------------------------------------------------------------------
  class ApiError extends Error {
    constructor(status, code, message, extra) {
      super(message || code);
      this.status = status;
      this.code = code;
      this.extra = extra || {};
    }
  }

  async function api(method, path, body) {
    const token = S.session ? S.session.token : null;
    const headers = {};
    if (token) headers.authorization = 'Bearer ' + token;
    if (body !== undefined) headers['content-type'] = 'application/json';
    let res;
    try {
      res = await fetch('/v1' + path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: 'no-store',
      });
    } catch {
      throw new ApiError(0, 'network', 'Cannot reach the server');
    }
    if (res.status === 204) return null;
    let data = null;
    try {
      data = await res.json();
    } catch {
      data = null;
    }
    if (!res.ok) {
      const err = (data && data.error) || {};
      if (res.status === 401 && token && S.session && S.session.token === token) {
        sessionEnded('Your session has ended. Please sign in again.');
      }
      throw new ApiError(res.status, err.code || `http_${res.status}`, err.message || res.statusText, err);
    }
    return data;
  }

  // ------------------------------------------------------------------
  // Persistence
  // ------------------------------------------------------------------
  function saveCursorsSoon() {
    if (S.timers.cursors) return;
    S.timers.cursors = setTimeout(() => {
      S.timers.cursors = null;
      if (!S.session) return;
      const out = { ...S.cursors };
      for (const c of S.convs.values()) if (c.contig != null) out[c.id] = c.contig;
      S.cursors = out;
      LS.set(kCursors(), out);
    }, 200);
  }

  function saveOutbox() {
    if (!S.session) return;
    LS.set(
      kOutbox(),
      S.outbox.map(({ cmid, conv_id, op, content, target_seq, ts, status, error }) => ({
        cmid, conv_id, op, content, target_seq, ts, status, error,
      })),
    );
  }

  function saveCacheSoon() {
    if (S.timers.cache) return;
    S.timers.cache = setTimeout(() => {
      S.timers.cache = null;
      if (!S.session) return;
      const convs = [];
      for (const c of S.convs.values()) {
        if (c.stub) continue;
        convs.push({
          conv_id: c.id, type: c.type, title: c.title, members: c.members.slice(0, 200),
          member_count: c.member_count, last_seq: c.last_seq, read_seq: c.read_seq, unread: c.unread,
          last_event: c.lastEvent, created_at: c.created_at, only_admins_send: c.only_admins_send,
        });
      }
      const users = Array.from(S.users.values()).slice(0, 500);
      LS.set(kCache(), { convs, users });
    }, 500);
  }

  // ------------------------------------------------------------------
  // Timeline: ingesting events
  // ------------------------------------------------------------------

  /**
   * An event from a push (`push`), a sync result (`sync`) or my own send_ack
   * (`own`). Deduplicated by (conv_id, seq); a hole below it triggers a sync.
   */
  function ingestLive(ev, source) {
    if (!ev || typeof ev.seq !== 'number' || !ev.conv_id) return false;
    const c = getConv(ev.conv_id);
    if (c.stub) fetchConvSoon(c.id);
    if (c.contig == null) {
      if (source !== 'sync' && !S.synced) {
        c.early.push([ev, source]);
        return false;
      }
      c.contig = ev.seq - 1;
    }
    if (ev.seq <= c.contig || c.above.has(ev.seq)) return false; // duplicate
    c.above.add(ev.seq);
    while (c.above.has(c.contig + 1)) {
      c.above.delete(c.contig + 1);
      c.contig += 1;
    }
    saveCursorsSoon();
    applyEvent(c, ev, 0);
    if (ev.kind === 'message' && ev.sender !== myId()) {
      if (ev.sender) c.typing.delete(ev.sender);
      if (source === 'push' && !isReading(c)) {
        c.unread += 1;
        notify(c, ev);
      }
    }
    if (c.above.size) scheduleGapSync();
    scheduleAck();
    if (source === 'push') afterChange(c);
    return true;
  }

  /** An event from the history endpoint: merged for display only. */
  function ingestHistory(c, ev, at) {
    applyEvent(c, ev, at);
  }

  /**
   * Apply an event to the in-memory timeline. `at` is 0 for live events;
   * for history events, the seq the server's state was at when it answered
   * (message contents then already include every edit up to it).
   */
  function applyEvent(c, ev, at) {
    if (ev.seq > c.last_seq) c.last_seq = ev.seq;
    if (!c.lastEvent || ev.seq > c.lastEvent.seq) c.lastEvent = ev;
    if (ev.seq > c.maxSeen) c.maxSeen = ev.seq;
    if (ev.sender === myId() && ev.client_msg_id) dropOutbox(ev.client_msg_id);
    switch (ev.kind) {
      case 'message': {
        const old = c.msgs.get(ev.seq);
        if (!old) {
          c.msgs.set(ev.seq, { ...ev, editSeq: at || 0 });
        } else if (at) {
          if (ev.recalled) {
            old.recalled = true;
            old.content = null;
          } else if (ev.edited && (old.editSeq || 0) < at && !old.recalled) {
            old.content = ev.content;
            old.edited = true;
            old.editSeq = at;
          }
        }
        break;
      }
      case 'edit': {
        const t = ev.content && c.msgs.get(ev.content.target_seq);
        if (t && !t.recalled && (t.editSeq || 0) < ev.seq) {
          t.content = ev.content.content;
          t.edited = true;
          t.editSeq = ev.seq;
        }
        break;
      }
      case 'recall': {
        const t = ev.content && c.msgs.get(ev.content.target_seq);
        if (t) {
          t.recalled = true;
          t.content = null;
        }
        break;
      }
      case 'conv_updated':
        if (!at && ev.content && 'title' in ev.content) c.title = ev.content.title;
        c.msgs.set(ev.seq, ev);
        break;
      case 'member_joined':
      case 'member_left':
      case 'member_removed':
      case 'role_changed':
        c.msgs.set(ev.seq, ev);
        if (!at) fetchConvSoon(c.id);
        break;
      default:
        break; // unknown kinds are kept out of the view
    }
  }

  function afterChange(c) {
    if (isReading(c)) maybeSendRead(c);
    saveCacheSoon();
    invalidate();
  }

  // ------------------------------------------------------------------
  // Conversation details: members and roles; for admins rename, add and
  // remove; for the owner roles; leave a group; block a direct peer.
  // ------------------------------------------------------------------
  let infoMembers = [];

  async function openInfo() {
    const c = S.openId ? S.convs.get(S.openId) : null;
    if (!c) return;
    $('#info-error').textContent = '';
    $('#info-add').value = '';
    const d = $('#info-dialog');
    if (!d.open) d.showModal();
    await refreshInfo(c);
  }

  async function refreshInfo(c) {
    try {
      const r = await api('GET', `/conversations/${encodeURIComponent(c.id)}/members?limit=1000`);
      infoMembers = r.members || [];
      for (const m of infoMembers) ensureUser(m.user_id);
      await Promise.all(infoMembers.map((m) => S.userFetch.get(m.user_id)).filter(Boolean));
    } catch (e) {
      $('#info-error').textContent = e.message;
    }
    renderInfo(c);
  }

  function renderInfo(c) {
    const me = infoMembers.find((m) => m.user_id === myId());
    const myRole = me ? me.role : 'member';
    const admin = c.type === 'group' && (myRole === 'admin' || myRole === 'owner');
    $('#info-title').textContent = convTitle(c);
    $('#info-rename-row').hidden = !admin;
    if (admin && document.activeElement !== $('#info-rename')) $('#info-rename').value = c.title || '';
    $('#info-add-row').hidden = !admin;
    $('#info-leave').hidden = c.type !== 'group';
    const peer = peerOf(c);
    $('#info-block').hidden = !peer;
    $('#info-block').textContent = peer && S.blocked.has(peer) ? 'Unblock' : 'Block';
    $('#info-members').replaceChildren(...infoMembers.map((m) => {
      const row = h('li', { class: 'info-member', dataset: { userId: m.user_id } },
        h('span', { class: 'name', dir: 'auto' }, m.user_id === myId() ? `${userName(m.user_id)} (you)` : userName(m.user_id)),
        h('span', { class: 'role' }, m.role));
      if (c.type === 'group' && m.user_id !== myId() && m.role !== 'owner') {
        if (myRole === 'owner') {
          const to = m.role === 'admin' ? 'member' : 'admin';
          row.append(h('button', { type: 'button', class: 'btn', onclick: () => infoAct(c, 'PUT', `/members/${encodeURIComponent(m.user_id)}/role`, { role: to }) }, to === 'admin' ? 'Make admin' : 'Make member'));
        }
        if (admin) row.append(h('button', { type: 'button', class: 'btn danger', onclick: () => infoAct(c, 'DELETE', `/members/${encodeURIComponent(m.user_id)}`) }, 'Remove'));
      }
      return row;
    }));
  }

  /** One management call on the conversation, then the details again. */
  async function infoAct(c, method, sub, body) {
    $('#info-error').textContent = '';
    try {
      await api(method, `/conversations/${encodeURIComponent(c.id)}${sub}`, body);
    } catch (e) {
      $('#info-error').textContent = e.message;
      return false;
    }
    await refreshInfo(c);
    return true;
  }

  async function infoRename() {
    const c = S.convs.get(S.openId);
    const title = $('#info-rename').value.trim();
    if (c && title) await infoAct(c, 'PATCH', '', { title });
  }

  async function infoAdd() {
    const c = S.convs.get(S.openId);
    const name = $('#info-add').value.trim().toLowerCase();
    if (!c || !name) return;
    $('#info-error').textContent = '';
    try {
      const r = await api('GET', `/users?username=${encodeURIComponent(name)}`);
      const u = (r.users || [])[0];
      if (!u) {
        $('#info-error').textContent = `No user named ${name}.`;
        return;
      }
      S.users.set(u.user_id, u);
      if (await infoAct(c, 'POST', '/members', { user_ids: [u.user_id] })) $('#info-add').value = '';
    } catch (e) {
      $('#info-error').textContent = e.message;
    }
  }

  async function infoLeave() {
    const c = S.convs.get(S.openId);
    if (!c || !confirm(`Leave ${convTitle(c)}?`)) return;
    if (await infoAct(c, 'DELETE', `/members/${encodeURIComponent(myId())}`)) $('#info-dialog').close();
  }

  async function infoBlock() {
    const c = S.convs.get(S.openId);
    const peer = c && peerOf(c);
    if (!peer) return;
    const on = !S.blocked.has(peer);
    try {
      await api(on ? 'PUT' : 'DELETE', `/blocks/${encodeURIComponent(peer)}`);
      if (on) S.blocked.add(peer);
      else S.blocked.delete(peer);
    } catch (e) {
      $('#info-error').textContent = e.message;
    }
    renderInfo(c);
  }

  // ------------------------------------------------------------------
  // Desktop notifications: asked for with the bell button (never on load),
  // shown for messages in conversations the user is not reading.
  // ------------------------------------------------------------------
  function notifySupported() {
    return typeof window.Notification === 'function';
  }

  function renderNotifyBtn() {
    $('#notify-btn').hidden = !notifySupported() || Notification.permission !== 'default';
  }

  async function askNotify() {
    if (!notifySupported()) return;
    try {
      await Notification.requestPermission();
    } finally {
      renderNotifyBtn();
    }
  }

  function notify(c, ev) {
    if (!notifySupported() || Notification.permission !== 'granted') return;
    if (c.notifications && c.notifications.level === 'none' && !(c.notifications.until && c.notifications.until < Date.now())) return;
    const text = contentText(ev.content);
    const body = c.type === 'group' && ev.sender ? `${userName(ev.sender)}: ${text}` : text;
    const n = new Notification(convTitle(c), { body: body.length > 200 ? body.slice(0, 199) + '…' : body, tag: c.id });
    n.onclick = () => {
      window.focus();
      location.hash = '#c=' + encodeURIComponent(c.id);
      n.close();
    };
  }

  function isReading(c) {
    return S.openId === c.id && document.visibilityState === 'visible' && c.histFrom != null;
  }

  function maybeSendRead(c) {
    if (!isReading(c) || S.conn !== 'online') return;
    const seq = Math.max(c.maxSeen, c.contig || 0);
    if (seq > c.read_seq || c.unread) {
      if (seq > 0) wsSend({ type: 'read', conv_id: c.id, seq });
      c.read_seq = Math.max(c.read_seq, seq);
      c.unread = 0;
      invalidate();
    }
  }

  function scheduleAck() {
    if (S.timers.ack) return;
    S.timers.ack = setTimeout(() => {
      S.timers.ack = null;
      if (S.conn !== 'online') return;
      for (const c of S.convs.values()) {
        if (c.contig != null && c.contig > c.acked) {
          wsSend({ type: 'ack', conv_id: c.id, seq: c.contig });
          c.acked = c.contig;
        }
      }
    }, ACK_DELAY_MS);
  }

  function scheduleGapSync() {
    if (S.timers.gap) return;
    S.timers.gap = setTimeout(() => {
      S.timers.gap = null;
      if (S.conn !== 'online' || !S.synced) return;
      const gap = Array.from(S.convs.values()).some((c) => c.above.size > 0);
      if (gap) runSync().catch(() => {});
    }, GAP_SYNC_DELAY_MS);
  }

  const convFetches = new Set();
  function fetchConvSoon(id) {
    if (convFetches.has(id)) return;
    convFetches.add(id);
    setTimeout(() => {
      api('GET', `/conversations/${encodeURIComponent(id)}`)
        .then((o) => {
          mergeConv(o);
          presenceSub();
          saveCacheSoon();
          invalidate();
        })
        .catch((e) => {
          if (e.code === 'not_found') removeConv(id, true);
        })
        .finally(() => convFetches.delete(id));
    }, 150);
  }

  function removeConv(id, notify) {
    const c = S.convs.get(id);
    if (!c) return;
    S.convs.delete(id);
    delete S.cursors[id];
    S.outbox = S.outbox.filter((i) => i.conv_id !== id);
    saveOutbox();
    saveCursorsSoon();
    saveCacheSoon();
    if (S.openId === id) {
      if (notify) toast(`You are no longer in “${convTitle(c)}”.`);
      closeChat();
    }
    invalidate();
  }

  // ------------------------------------------------------------------
  // Outbox: every timeline request is resent with the same client_msg_id
  // until a send_ack arrives.
  // ------------------------------------------------------------------
  function enqueue(item) {
    const it = { cmid: uuid(), ts: Date.now(), status: 'sending', lastTry: 0, ...item };
    S.outbox.push(it);
    saveOutbox();
    flushOutbox(true, it.cmid);
    invalidate();
    return it;
  }

  function dropOutbox(cmid) {
    const i = S.outbox.findIndex((x) => x.cmid === cmid);
    if (i < 0) return null;
    const [it] = S.outbox.splice(i, 1);
    saveOutbox();
    return it;
  }

  function flushOutbox(force, onlyCmid) {
    if (S.conn !== 'online' || !S.synced) return;
    const now = Date.now();
    for (const it of S.outbox) {
      if (onlyCmid && it.cmid !== onlyCmid) continue;
      if (it.status !== 'sending') continue;
      if (it.notBefore && now < it.notBefore) continue;
      if (!force && now - it.lastTry < RESEND_MS) continue;
      it.lastTry = now;
      const id = ++S.reqId;
      S.pending.set(id, { cmid: it.cmid });
      const f = { type: it.op, id, conv_id: it.conv_id, client_msg_id: it.cmid };
      if (it.op === 'send') f.content = it.content;
      if (it.op === 'edit') {
        f.target_seq = it.target_seq;
        f.content = it.content;
      }
      if (it.op === 'recall') f.target_seq = it.target_seq;
      wsSend(f);
    }
  }

  function onSendAck(f) {
    const it = dropOutbox(f.client_msg_id);
    if (!it) return;
    const ev = {
      conv_id: f.conv_id, seq: f.seq, msg_id: f.msg_id, ts: f.ts,
      sender: myId(), sender_device: S.session.device_id, client_msg_id: f.client_msg_id,
    };
    if (it.op === 'send') {
      ev.kind = 'message';
      ev.content = it.content;
    } else if (it.op === 'edit') {
      ev.kind = 'edit';
      ev.content = { target_seq: it.target_seq, content: it.content };
    } else {
      ev.kind = 'recall';
      ev.content = { target_seq: it.target_seq };
    }
    const c = getConv(f.conv_id);
    ingestLive(ev, 'own');
    // my own message moves my read marker
    if (ev.kind === 'message') c.read_seq = Math.max(c.read_seq, f.seq);
    afterChange(c);
  }

  function onRequestError(cmid, f) {
    const it = S.outbox.find((x) => x.cmid === cmid);
    if (!it) return;
    if (f.code === 'rate_limited') {
      it.notBefore = Date.now() + (f.retry_after_ms || 1000);
      it.lastTry = 0;
      return;
    }
    if (!PERMANENT_ERRORS.has(f.code)) return; // unavailable, internal: resend later
    const why = {
      forbidden: it.op === 'recall' ? 'It is too late to recall this message.' : 'You are not allowed to do that here.',
      too_large: 'The message is too long.',
      not_found: 'This conversation is no longer available.',
    }[f.code] || f.message || 'The server refused the request.';
    if (it.op === 'send') {
      it.status = 'failed';
      it.error = why;
      saveOutbox();
    } else {
      dropOutbox(cmid);
      toast(why);
    }
    invalidate();
  }

  // ------------------------------------------------------------------
  // WebSocket
  // ------------------------------------------------------------------
  function wsSend(f) {
    if (!S.ws || S.ws.readyState !== WebSocket.OPEN) return false;
    try {
      S.ws.send(JSON.stringify(f));
      return true;
    } catch {
      return false;
    }
  }

  function request(f) {
    return new Promise((resolve, reject) => {
      const id = ++S.reqId;
      S.pending.set(id, { resolve, reject });
      if (!wsSend({ ...f, id })) {
        S.pending.delete(id);
        reject(new ApiError(0, 'network', 'offline'));
      }
    });
  }

  function setConn(state) {
    S.conn = state;
    renderConn();
  }

  function connect() {
    clearTimeout(S.timers.reconnect);
    S.timers.reconnect = null;
    if (!S.session || S.ws) return;
    S.noReconnect = false;
    const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/v1/ws`;
    let ws;
    try {
      ws = new WebSocket(url);
    } catch {
      scheduleReconnect();
      return;
    }
    S.ws = ws;
    S.synced = false;
    setConn(S.attempt === 0 && S.conn !== 'offline' ? 'connecting' : 'offline');
    const openTimer = setTimeout(() => {
      if (S.ws === ws && S.conn !== 'online') dropSocket();
    }, 10000);
    ws.onopen = () => {
      if (S.ws !== ws) return;
      S.lastRecv = Date.now();
      ws.send(JSON.stringify({ type: 'auth', token: S.session.token }));
    };
    ws.onmessage = (e) => {
      if (S.ws !== ws) return;
      S.lastRecv = Date.now();
      let f;
      try {
        f = JSON.parse(e.data);
      } catch {
        return;
      }
      if (f && typeof f.type === 'string') onFrame(f);
    };
    ws.onclose = (e) => {
      clearTimeout(openTimer);
      if (S.ws !== ws) return;
      onSocketClosed(e.code);
    };
    ws.onerror = () => {
      /* onclose follows */
    };
  }

  /** Abandon the current socket (dead or timed out) and reconnect. */
  function dropSocket() {
    const ws = S.ws;
    if (!ws) return;
    S.ws = null;
    try {
      ws.close();
    } catch {
      /* ignore */
    }
    onSocketClosed(1006, ws);
  }

  function onSocketClosed(code, alreadyDetached) {
    if (!alreadyDetached) S.ws = null;
    clearInterval(S.timers.heartbeat);
    S.synced = false;
    for (const p of S.pending.values()) if (p.reject) p.reject(new ApiError(0, 'network', 'disconnected'));
    S.pending.clear();
    for (const c of S.convs.values()) c.typing.clear();
    S.presence.clear(); // unknown while offline; presence_sub refreshes it
    invalidate();
    if (!S.session) return;
    if (code === 4001) {
      sessionEnded('Your session has ended. Please sign in again.');
      return;
    }
    if (S.noReconnect) return;
    setConn('offline');
    scheduleReconnect();
  }

  function scheduleReconnect() {
    clearTimeout(S.timers.reconnect);
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** Math.min(S.attempt, 10));
    const delay = Math.round(base / 2 + Math.random() * (base / 2)); // exponential backoff + jitter
    S.attempt += 1;
    S.reconnectAt = Date.now() + delay;
    S.timers.reconnect = setTimeout(connect, delay);
    renderConn();
  }

  function reconnectNow() {
    if (!S.session || S.ws) return;
    S.attempt = 0;
    connect();
  }

  function useHere() {
    S.noReconnect = false;
    S.attempt = 0;
    connect();
  }

  function startHeartbeat() {
    clearInterval(S.timers.heartbeat);
    const every = Math.max(1000, Math.floor(S.heartbeatMs / 2));
    S.timers.heartbeat = setInterval(() => {
      if (!S.ws) return;
      if (Date.now() - S.lastRecv > S.heartbeatMs + every) {
        dropSocket(); // nothing heard for too long: the connection is dead
        return;
      }
      wsSend({ type: 'ping' });
    }, every);
  }

  function onFrame(f) {
    switch (f.type) {
      case 'auth_ok':
        S.attempt = 0;
        S.heartbeatMs = f.heartbeat_ms || 30000;
        if (f.max_content_bytes) S.maxContent = f.max_content_bytes;
        renderCount();
        if (f.server_time) S.clockSkew = f.server_time - Date.now();
        startHeartbeat();
        setConn('online');
        onConnected(S.ws);
        break;
      case 'pong':
        break;
      case 'event':
        ingestLive(f.event, 'push');
        break;
      case 'send_ack':
        if (f.id != null) S.pending.delete(f.id);
        onSendAck(f);
        break;
      case 'sync_result': {
        const p = S.pending.get(f.id);
        if (p) {
          S.pending.delete(f.id);
          if (p.resolve) p.resolve(f);
        }
        break;
      }
      case 'delivered': {
        const c = S.convs.get(f.conv_id);
        if (c && f.user_id !== myId()) {
          c.deliveredBy.set(f.user_id, Math.max(c.deliveredBy.get(f.user_id) || 0, f.seq));
          invalidate();
        }
        break;
      }
      case 'receipt': {
        const c = S.convs.get(f.conv_id);
        if (!c) break;
        if (f.user_id === myId()) {
          // read on another of my devices
          c.read_seq = Math.max(c.read_seq, f.read_seq);
          if (c.read_seq >= c.last_seq) c.unread = 0;
          else fetchConvSoon(c.id);
        } else {
          c.readBy.set(f.user_id, Math.max(c.readBy.get(f.user_id) || 0, f.read_seq));
        }
        invalidate();
        break;
      }
      case 'typing': {
        const c = S.convs.get(f.conv_id);
        if (!c || f.user_id === myId()) break;
        c.typing.set(f.user_id, Date.now() + TYPING_SHOW_MS);
        setTimeout(invalidate, TYPING_SHOW_MS + 50);
        invalidate();
        break;
      }
      case 'presence':
        S.presence.set(f.user_id, { online: !!f.online, last_seen: f.last_seen });
        invalidate();
        break;
      case 'conv_added': {
        const o = f.conversation;
        if (!o) break;
        const isNew = !S.convs.has(o.conv_id);
        const c = mergeConv(o);
        if (isNew && c.contig == null && S.synced) c.contig = c.last_seq;
        presenceSub();
        saveCacheSoon();
        invalidate();
        break;
      }
      case 'conv_removed':
        removeConv(f.conv_id, true);
        break;
      case 'kicked':
        if (f.reason === 'slow_consumer') break; // the close follows; reconnect and sync
        S.noReconnect = true;
        if (f.reason === 'replaced') setConn('replaced');
        else sessionEnded({
          revoked: 'This device was signed out.',
          deactivated: 'This account was deactivated.',
        }[f.reason] || 'You were signed out.');
        break;
      case 'error': {
        const p = f.id != null ? S.pending.get(f.id) : null;
        if (p) {
          S.pending.delete(f.id);
          if (p.reject) p.reject(new ApiError(0, f.code, f.message, f));
          if (p.cmid) onRequestError(p.cmid, f);
        }
        break;
      }
      default:
        break;
    }
  }

  async function onConnected(ws) {
    const alive = () => S.ws === ws && S.conn === 'online';
    try {
      await loadConversations();
    } catch {
      /* the sync below still brings events */
    }
    if (!alive()) return;
    for (const c of S.convs.values()) c.acked = 0; // re-ack once per connection
    try {
      await runSync();
    } catch (e) {
      if (e.code === 'network') {
        if (alive()) dropSocket();
        return;
      }
    }
    if (!alive()) return;
    S.synced = true;
    // Conversations the sync did not mention have nothing new for this device.
    for (const c of S.convs.values()) {
      if (c.contig == null) {
        const early = c.early.map(([e]) => e.seq);
        c.contig = early.length ? Math.min(...early) - 1 : c.last_seq;
        saveCursorsSoon();
      }
      const early = c.early;
      c.early = [];
      for (const [e, src] of early) ingestLive(e, src);
    }
    flushOutbox(true);
    presenceSub(true);
    scheduleAck();
    const open = S.convs.get(S.openId);
    if (open) {
      if (open.histFrom == null) loadHistory(open);
      maybeSendRead(open);
      checkReceipts(open);
    }
    invalidate();
  }

  async function runSync() {
    if (S.syncing) {
      S.syncAgain = true;
      return;
    }
    S.syncing = true;
    try {
      for (let round = 0; round < 100; round++) {
        S.syncAgain = false;
        const cursors = [];
        for (const c of S.convs.values()) if (c.contig != null) cursors.push({ conv_id: c.id, after_seq: c.contig });
        const r = await request({ type: 'sync', limit: SYNC_LIMIT, cursors });
        let progressed = false;
        for (const cr of r.conversations || []) {
          const c = getConv(cr.conv_id);
          if (c.stub) fetchConvSoon(c.id);
          for (const ev of cr.events || []) if (ingestLive(ev, 'sync')) progressed = true;
          if (typeof cr.last_seq === 'number') c.last_seq = Math.max(c.last_seq, cr.last_seq);
          if (typeof cr.read_seq === 'number') c.read_seq = Math.max(c.read_seq, cr.read_seq);
          if (typeof cr.unread === 'number') c.unread = cr.unread;
          if (isReading(c)) maybeSendRead(c);
        }
        invalidate();
        if (!(r.has_more || S.syncAgain)) break;
        if (r.has_more && !progressed) break; // avoid spinning on a misbehaving server
      }
    } finally {
      S.syncing = false;
    }
    saveCacheSoon();
    scheduleAck();
  }

  function presenceSub(force) {
    if (S.conn !== 'online') return;
    const ids = new Set();
    for (const c of S.convs.values()) for (const u of otherMembers(c)) ids.add(u);
    const list = Array.from(ids).sort().slice(0, 1000);
    const key = list.join(',');
    if (!force && key === S.presenceKey) return;
    S.presenceKey = key;
    wsSend({ type: 'presence_sub', user_ids: list });
  }

  // ------------------------------------------------------------------
  // Data loading over HTTP
  // ------------------------------------------------------------------
  async function loadConversations() {
    const started = Date.now();
    const r = await api('GET', '/conversations');
    const seen = new Set();
    for (const o of r.conversations || []) {
      mergeConv(o);
      seen.add(o.conv_id);
    }
    for (const [id, c] of S.convs) if (!seen.has(id) && !c.stub && c.addedAt < started) removeConv(id, true);
    S.listLoaded = true;
    saveCacheSoon();
    invalidate();
    checkListReceipts();
  }

  async function loadHistory(c, older) {
    if (c.loadingHist) return;
    if (older && (c.histFrom == null || !c.hasOlder)) return;
    c.loadingHist = true;
    c.histError = null;
    invalidate();
    try {
      const q = older ? `before_seq=${c.histFrom}&limit=${PAGE}` : `limit=${PAGE}`;
      const r = await api('GET', `/conversations/${encodeURIComponent(c.id)}/events?${q}`);
      const evs = r.events || [];
      let at = c.last_seq;
      for (const ev of evs) at = Math.max(at, ev.seq);
      for (const ev of evs) ingestHistory(c, ev, at);
      if (evs.length) c.histFrom = c.histFrom == null ? evs[0].seq : Math.min(c.histFrom, evs[0].seq);
      else if (c.histFrom == null) c.histFrom = c.last_seq + 1;
      c.hasOlder = c.histFrom > 1;
      if (!older) S.stickBottom = !S.scrollToUnread;
    } catch (e) {
      c.histError = e.code === 'network' ? 'offline' : e.message;
    } finally {
      c.loadingHist = false;
    }
    invalidate();
    if (S.openId === c.id) {
      maybeSendRead(c);
      checkReceipts(c);
      // Older pages until the first unread message is here (at most
      // UNREAD_REACH messages back).
      const want = c.unreadFrom;
      if (want != null && c.hasOlder && c.histFrom > want && c.last_seq - c.histFrom < UNREAD_REACH && !c.histError) {
        loadHistory(c, true);
      }
    }
  }

  /** Read markers of the others for my latest message (after a reload). */
  function checkReceipts(c) {
    if (c.member_count > 500 || !S.session) return;
    let seq = 0;
    for (const m of c.msgs.values()) if (m.kind === 'message' && m.sender === myId() && m.seq > seq) seq = m.seq;
    if (c.lastEvent && c.lastEvent.kind === 'message' && c.lastEvent.sender === myId()) seq = Math.max(seq, c.lastEvent.seq);
    if (!seq || seq <= c.receiptsChecked) return;
    c.receiptsChecked = seq;
    api('GET', `/conversations/${encodeURIComponent(c.id)}/events/${seq}/receipts`)
      .then((r) => {
        for (const u of r.read_by || []) if (u !== myId()) c.readBy.set(u, Math.max(c.readBy.get(u) || 0, seq));
        invalidate();
      })
      .catch(() => {
        c.receiptsChecked = 0;
      });
  }

  function checkListReceipts() {
    let n = 0;
    for (const c of S.convs.values()) {
      if (n >= 30) break;
      if (c.lastEvent && c.lastEvent.kind === 'message' && c.lastEvent.sender === myId()) {
        checkReceipts(c);
        n++;
      }
    }
  }

  // ------------------------------------------------------------------
  // Rendering
  // ------------------------------------------------------------------
  let renderQueued = false;
  function invalidate() {
    if (renderQueued) return;
    renderQueued = true;
    setTimeout(() => {
      renderQueued = false;
      render();
    }, 0);
  }

  function render() {
    if (!S.session) return;
    renderMe();
    renderList();
    renderChat();
  }

  function avatarEl(el, name, seed, opts = {}) {
    el.textContent = '';
    el.style.setProperty('--h', String(hashHue(seed || name || '')));
    if (opts.group) el.append(icon('group'));
    else el.append(initials(name));
    if (opts.presence) el.append(h('span', { class: 'presence-dot' + (opts.presence.online ? ' online' : ''), title: opts.presence.online ? 'online' : 'offline' }));
    return el;
  }

  function renderMe() {
    const name = (S.me && (S.me.display_name || S.me.username)) || '';
    const key = name + '|' + myId();
    const el = $('#me-avatar');
    if (el.dataset.key !== key) {
      avatarEl(el, name, myId());
      el.dataset.key = key;
    }
    $('#me-name').textContent = name;
  }

  function renderConn() {
    const st = $('#conn-status');
    const banner = $('#conn-banner');
    const text = $('#conn-banner-text');
    const btn = $('#conn-banner-btn');
    st.dataset.state = S.conn;
    document.body.dataset.conn = S.conn;
    btn.hidden = true;
    clearTimeout(S.timers.connTick);
    if (S.conn === 'online') {
      st.textContent = 'Online';
      banner.hidden = true;
      return;
    }
    banner.hidden = false;
    banner.dataset.state = S.conn;
    if (S.conn === 'connecting') {
      st.textContent = 'Connecting…';
      text.textContent = 'Connecting…';
    } else if (S.conn === 'replaced') {
      st.textContent = 'Paused';
      text.textContent = 'tokenim is open in another window.';
      btn.textContent = 'Use here';
      btn.hidden = false;
    } else {
      st.textContent = 'Offline';
      // Say whose side is down: this device's network, or the server.
      const why = navigator.onLine === false ? 'You are offline.' : 'Cannot reach the server.';
      const left = Math.ceil((S.reconnectAt - Date.now()) / 1000);
      if (S.ws || left <= 0) text.textContent = `${why} Reconnecting…`;
      else {
        text.textContent = `${why} Reconnecting in ${left} s…`;
        btn.textContent = 'Retry now';
        btn.hidden = false;
        S.timers.connTick = setTimeout(renderConn, 1000);
      }
    }
  }

  function contentText(content) {
    if (!content || typeof content !== 'object') return '';
    switch (content.type) {
      case 'text':
        return String(content.text ?? '');
      case 'image':
        return `📷 ${content.name || 'Image'}`;
      case 'file':
        return `📎 ${content.name || 'File'}`;
      case 'encrypted':
        return '🔒 Encrypted message';
      default:
        return `[${String(content.type || 'message')}]`;
    }
  }

  /** A list of users in a sentence's subject: "You, bob". */
  const whoList = (ids) => ids.map((u, i) => whoName(u, i > 0)).join(', ');
  const isAre = (id) => (id === myId() ? 'are' : 'is');

  function noticeText(ev) {
    const c = ev.content || {};
    // A system message (the app's backend, no sender): its text.
    if (ev.kind === 'message') return ev.recalled ? 'Message recalled' : contentText(ev.content);
    // Events the app's backend made carry no `by`.
    if (!c.by) {
      switch (ev.kind) {
        case 'member_joined':
          return `${whoList(c.user_ids || [])} joined`;
        case 'member_left':
          return `${whoName(c.user_id)} left`;
        case 'member_removed':
          return c.user_id === myId() ? 'You were removed' : `${whoName(c.user_id)} was removed`;
        case 'role_changed':
          return `${whoName(c.user_id)} ${isAre(c.user_id)} now ${c.role === 'admin' ? 'an admin' : 'a member'}`;
        case 'conv_updated':
          if ('title' in c) return `The group was renamed to “${c.title ?? ''}”`;
          if ('only_admins_send' in c) return c.only_admins_send ? 'Only admins can send messages now' : 'Everyone can send messages now';
          return 'The group settings changed';
        default:
          return '';
      }
    }
    switch (ev.kind) {
      case 'member_joined': {
        const ids = (c.user_ids || []).filter((u) => u !== c.by);
        if (!ids.length) return `${whoName(c.by)} created the group`;
        const names = ids.map(whoMid).join(', ');
        if (c.by && !(c.user_ids || []).includes(c.by)) return `${whoName(c.by)} added ${names}`;
        return `${whoName(c.by)} created the group with ${names}`;
      }
      case 'member_left':
        return `${whoName(c.user_id)} left`;
      case 'member_removed':
        return `${whoName(c.by)} removed ${whoMid(c.user_id)}`;
      case 'role_changed':
        return `${whoName(c.by)} made ${whoMid(c.user_id)} ${c.role === 'admin' ? 'an admin' : 'a member'}`;
      case 'conv_updated':
        if ('title' in c) return `${whoName(c.by)} renamed the group to “${c.title ?? ''}”`;
        if ('only_admins_send' in c) return c.only_admins_send ? 'Only admins can send messages now' : 'Everyone can send messages now';
        return `${whoName(c.by)} changed the group settings`;
      default:
        return '';
    }
  }

  function previewOf(c) {
    const pend = S.outbox.filter((i) => i.conv_id === c.id && i.op === 'send');
    const last = pend.length ? pend[pend.length - 1] : null;
    if (last) return { mine: true, text: contentText(last.content), status: last.status === 'failed' ? 'failed' : 'sending', ts: last.ts };
    const ev = c.lastEvent;
    if (!ev) return { text: c.type === 'group' ? 'Group created' : 'No messages yet', ts: c.created_at };
    const mine = ev.sender === myId();
    const m = c.msgs.get(ev.seq) || ev;
    let text;
    let status = null;
    if (ev.kind === 'message') {
      text = m.recalled ? 'Message recalled' : contentText(m.content);
      if (mine) status = statusOf(c, m);
    } else if (ev.kind === 'recall') text = 'Message recalled';
    else if (ev.kind === 'edit') text = '✎ ' + contentText(ev.content && ev.content.content);
    else text = noticeText(ev);
    const sender = ev.kind === 'message' && ev.sender && !mine && c.type === 'group' ? userName(ev.sender) : null;
    return { mine, text, status, ts: ev.ts, sender };
  }

  function statusOf(c, m) {
    if (!m.seq) return 'sending';
    const others = otherMembers(c);
    if (!others.length || c.member_count > 500) return 'sent';
    if (others.every((u) => (c.readBy.get(u) || 0) >= m.seq)) return 'read';
    if (others.every((u) => Math.max(c.deliveredBy.get(u) || 0, c.readBy.get(u) || 0) >= m.seq)) return 'delivered';
    return 'sent';
  }

  function tickEl(status) {
    const name = { sending: 'clock', sent: 'check', delivered: 'checks', read: 'checks', failed: 'alert' }[status];
    const label = { sending: 'Sending', sent: 'Sent', delivered: 'Delivered', read: 'Read', failed: 'Not sent' }[status];
    const el = h('span', { class: `tick ${status}`, title: label, 'aria-label': label, dataset: { status } });
    if (name) el.append(icon(name));
    return el;
  }

  function typingNames(c) {
    const now = Date.now();
    const out = [];
    for (const [u, exp] of c.typing) {
      if (exp > now) out.push(userName(u));
      else c.typing.delete(u);
    }
    return out;
  }

  function typingText(c, names) {
    if (!names.length) return '';
    if (c.type === 'direct') return 'typing…';
    if (names.length === 1) return `${names[0]} is typing…`;
    if (names.length === 2) return `${names[0]} and ${names[1]} are typing…`;
    return 'Several people are typing…';
  }

  function lastActivity(c) {
    let ts = (c.lastEvent && c.lastEvent.ts) || c.created_at || 0;
    for (const i of S.outbox) if (i.conv_id === c.id && i.op === 'send' && i.ts > ts) ts = i.ts;
    return ts;
  }

  const listEls = new Map(); // conv_id -> <li>
  function renderList() {
    const ul = $('#conv-list');
    const convs = Array.from(S.convs.values()).filter((c) => !c.stub);
    convs.sort((a, b) => lastActivity(b) - lastActivity(a) || (a.id < b.id ? -1 : 1));
    const keep = new Set();
    const nodes = [];
    for (const c of convs) {
      const title = convTitle(c);
      const p = previewOf(c);
      const peer = peerOf(c);
      const pres = peer ? S.presence.get(peer) || { online: false } : null;
      const typing = typingNames(c);
      const reading = S.openId === c.id && document.visibilityState === 'visible';
      const unread = c.unread > 0 && !reading ? c.unread : 0;
      const active = S.openId === c.id;
      const sig = JSON.stringify([title, p, pres && pres.online, typing, unread, active, c.type, fmtListTime(p.ts)]);
      keep.add(c.id);
      let li = listEls.get(c.id);
      if (!li || li._sig !== sig) {
        const av = avatarEl(h('div', { class: 'avatar' }), title, c.type === 'direct' ? peer || c.id : c.id, {
          group: c.type === 'group',
          presence: pres,
        });
        const preview = h('div', { class: 'conv-preview' + (typing.length ? ' typing' : '') });
        if (typing.length) preview.append(typingText(c, typing));
        else {
          if (p.status) preview.append(tickEl(p.status));
          if (p.mine && !p.status) preview.append(h('span', { class: 'you' }, 'You: '));
          if (p.sender) preview.append(h('span', { class: 'you' }, `${p.sender}: `));
          preview.append(h('span', { class: 'preview-text' }, p.text));
        }
        const fresh = h(
          'li',
          {
            class: 'conv-item' + (active ? ' active' : '') + (unread ? ' has-unread' : ''),
            dataset: { convId: c.id, type: c.type },
            tabindex: '0',
            role: 'button',
            'aria-current': active ? 'true' : null,
          },
          av,
          h(
            'div',
            { class: 'conv-main' },
            h('div', { class: 'conv-top' }, h('span', { class: 'conv-title', dir: 'auto' }, title), h('time', { class: 'conv-time' }, fmtListTime(p.ts))),
            h('div', { class: 'conv-bottom' }, preview, unread ? h('span', { class: 'badge', 'aria-label': `${unread} unread` }, unread > 99 ? '99+' : String(unread)) : null),
          ),
        );
        fresh._sig = sig;
        if (li) li.replaceWith(fresh);
        li = fresh;
        listEls.set(c.id, li);
      }
      nodes.push(li);
    }
    for (const [id, el] of listEls) {
      if (!keep.has(id)) {
        el.remove();
        listEls.delete(id);
      }
    }
    let cur = ul.firstChild;
    for (const n of nodes) {
      if (n === cur) cur = cur.nextSibling;
      else ul.insertBefore(n, cur);
    }
    $('#conv-empty').hidden = !(S.listLoaded && convs.length === 0);
    const total = convs.reduce((n, c) => n + (c.unread > 0 ? c.unread : 0), 0);
    document.title = total ? `(${total > 99 ? '99+' : total}) tokenim` : 'tokenim';
  }

  function closeChat() {
    if (location.hash) history.replaceState(null, '', location.pathname + location.search);
    applyRoute();
  }

  function openChat(id) {
    const target = '#c=' + encodeURIComponent(id);
    if (location.hash === target) applyRoute();
    else if (S.openId) {
      history.replaceState(null, '', target);
      applyRoute();
    } else {
      S.pushedRoute = true;
      location.hash = target;
    }
  }

  function applyRoute() {
    const m = /^#c=(.+)$/.exec(location.hash);
    const id = m ? decodeURIComponent(m[1]) : null;
    if (!id) S.pushedRoute = false;
    if (id === S.openId) {
      invalidate();
      return;
    }
    cancelEdit();
    hideMenu();
    S.openId = id;
    S.typingSentAt = 0;
    S.stickBottom = true;
    document.body.classList.toggle('chat-open', !!id);
    const c = id ? getConv(id) : null;
    if (c) {
      // Where the unread messages start (before opening marks them read):
      // a "New messages" divider goes there and the view opens on it.
      c.unreadFrom = c.unread > 0 ? c.read_seq + 1 : null;
      S.scrollToUnread = c.unreadFrom != null;
      if (c.stub && S.session) fetchConvSoon(id);
      if (c.histFrom == null) loadHistory(c);
      maybeSendRead(c);
      checkReceipts(c);
      $('#composer-input').value = '';
      autoGrow();
      if (!window.matchMedia('(max-width: 760px)').matches) setTimeout(() => $('#composer-input').focus(), 0);
    }
    render();
  }

  function renderChat() {
    const c = S.openId ? S.convs.get(S.openId) : null;
    $('#chat-empty').hidden = !!c;
    $('#chat-pane').hidden = !c;
    if (!c) {
      S.renderedConv = null;
      S.msgEls.clear();
      $('#msg-list').replaceChildren();
      return;
    }
    if (S.renderedConv !== c.id) {
      S.renderedConv = c.id;
      S.msgEls.clear();
      $('#msg-list').replaceChildren();
    }
    // header
    const title = c.stub ? '…' : convTitle(c);
    const peer = peerOf(c);
    const pres = peer ? S.presence.get(peer) : null;
    avatarEl($('#chat-avatar'), title, c.type === 'direct' ? peer || c.id : c.id, { group: c.type === 'group', presence: pres || (peer ? { online: false } : null) });
    $('#chat-title').textContent = title;
    const sub = $('#chat-sub');
    const tn = typingNames(c);
    sub.classList.toggle('typing', tn.length > 0);
    sub.classList.toggle('online', !tn.length && !!(pres && pres.online));
    if (tn.length) sub.textContent = typingText(c, tn);
    else if (c.type === 'direct') sub.textContent = pres ? (pres.online ? 'online' : fmtLastSeen(pres.last_seen)) : '';
    else {
      const n = c.member_count || c.members.length;
      let online = 0;
      for (const u of otherMembers(c)) if ((S.presence.get(u) || {}).online) online++;
      sub.textContent = `${n} member${n === 1 ? '' : 's'}` + (online ? `, ${online + 1} online` : '');
    }
    renderMessages(c);
    // composer availability
    const mayNotSend = c.only_admins_send && myRole(c) === 'member';
    $('#composer-input').disabled = mayNotSend;
    $('#composer-input').placeholder = mayNotSend ? 'Only admins can send messages' : 'Write a message…';
  }

  function linkify(text) {
    const out = [];
    const re = /\bhttps?:\/\/[^\s<>"']+/g;
    let last = 0;
    let m;
    while ((m = re.exec(text))) {
      let url = m[0].replace(/[.,;:!?)\]]+$/, '');
      if (m.index > last) out.push(text.slice(last, m.index));
      out.push(h('a', { href: url, target: '_blank', rel: 'noopener noreferrer' }, url));
      last = m.index + url.length;
      re.lastIndex = last;
    }
    if (last < text.length) out.push(text.slice(last));
    return out;
  }

  function messageItems(c) {
    const from = c.histFrom == null ? Infinity : c.histFrom;
    const evs = Array.from(c.msgs.values()).filter((m) => m.seq >= from).sort((a, b) => a.seq - b.seq);
    const pend = S.outbox.filter((i) => i.conv_id === c.id && i.op === 'send').sort((a, b) => a.ts - b.ts);
    const pendingEdits = new Map();
    const pendingRecalls = new Set();
    for (const i of S.outbox) {
      if (i.conv_id !== c.id) continue;
      if (i.op === 'edit') pendingEdits.set(i.target_seq, i.content);
      if (i.op === 'recall') pendingRecalls.add(i.target_seq);
    }
    const items = [];
    for (const m of evs) {
      if (m.kind === 'message' && !m.system) {
        items.push({
          kind: 'msg', key: m.sender === myId() && m.client_msg_id ? 'p' + m.client_msg_id : 's' + m.seq,
          seq: m.seq, cmid: m.client_msg_id, sender: m.sender, ts: m.ts, content: m.content,
          edited: !!m.edited, recalled: !!m.recalled, status: m.sender === myId() ? statusOf(c, m) : null,
          pendingEdit: pendingEdits.get(m.seq) || null, pendingRecall: pendingRecalls.has(m.seq),
        });
      } else {
        const t = noticeText(m);
        if (t) items.push({ kind: 'notice', key: 's' + m.seq, seq: m.seq, ts: m.ts, text: t });
      }
    }
    for (const i of pend) {
      items.push({
        kind: 'msg', key: 'p' + i.cmid, seq: 0, cmid: i.cmid, sender: myId(), ts: i.ts, content: i.content,
        status: i.status === 'failed' ? 'failed' : 'sending', error: i.error,
      });
    }
    return items;
  }

  function renderMessages(c) {
    const box = $('#messages');
    const list = $('#msg-list');
    const hs = $('#history-status');
    // history status line
    hs.textContent = '';
    if (c.loadingHist) hs.append(h('span', { class: 'spinner' }), 'Loading messages…');
    else if (c.histError) {
      hs.append(c.histError === 'offline' ? 'Messages will load when you are back online.' : `Could not load messages: ${c.histError}`);
      if (c.histError !== 'offline') hs.append(' ', h('button', { type: 'button', class: 'link-btn', onclick: () => loadHistory(c, c.histFrom != null) }, 'Retry'));
    } else if (c.histFrom != null && !c.hasOlder && c.msgs.size) hs.append(c.type === 'group' ? 'This is the beginning of the group.' : 'This is the beginning of your conversation.');
    else if (c.histFrom != null && !c.msgs.size && !S.outbox.some((i) => i.conv_id === c.id)) hs.append('No messages yet. Say hello!');

    // remember where the user is
    const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 60;
    let anchor = null;
    if (!atBottom && !S.stickBottom) {
      for (const el of list.children) {
        // anchor on a message (day separators move when older ones arrive)
        if (el.dataset.seq && el.offsetTop + el.offsetHeight > box.scrollTop) {
          anchor = { key: el.dataset.key, off: el.offsetTop - box.scrollTop };
          break;
        }
      }
    }

    const items = messageItems(c);
    const keep = new Set();
    const nodes = [];
    let prev = null;
    for (const it of items) {
      const dk = 'd' + new Date(it.ts).toDateString();
      if ((!prev || !sameDay(prev.ts, it.ts)) && !keep.has(dk)) {
        nodes.push(cachedEl(dk, fmtDay(it.ts), () => h('div', { class: 'day-sep' }, h('span', null, fmtDay(it.ts)))));
        keep.add(dk);
      }
      if (c.unreadFrom != null && !keep.has('unread-div') && it.seq >= c.unreadFrom && it.sender !== myId()) {
        nodes.push(cachedEl('unread-div', 'new', () => h('div', { class: 'unread-div', id: 'unread-divider', role: 'separator' }, h('span', null, 'New messages'))));
        keep.add('unread-div');
      }
      if (it.kind === 'notice') {
        nodes.push(cachedEl(it.key, it.text, () => h('div', { class: 'notice', dataset: { seq: it.seq } }, h('span', null, it.text))));
      } else {
        const cont = prev && prev.kind === 'msg' && prev.sender === it.sender && sameDay(prev.ts, it.ts) && it.ts - prev.ts < 5 * 60000;
        const showName = c.type === 'group' && it.sender !== myId() && !cont;
        const sig = JSON.stringify([it.seq, it.content, it.edited, it.recalled, it.status, it.pendingEdit, it.pendingRecall, cont, showName, showName ? userName(it.sender) : '', it.error]);
        nodes.push(cachedEl(it.key, sig, () => messageEl(c, it, cont, showName)));
      }
      keep.add(it.key);
      prev = it;
    }
    for (const [k, el] of S.msgEls) {
      if (!keep.has(k)) {
        el.remove();
        S.msgEls.delete(k);
      }
    }
    // put nodes in order, moving only what is out of place
    let cur = list.firstChild;
    for (const n of nodes) {
      if (n === cur) cur = cur.nextSibling;
      else list.insertBefore(n, cur);
    }

    const reaching = c.unreadFrom != null && c.hasOlder && c.histFrom > c.unreadFrom && c.last_seq - c.histFrom < UNREAD_REACH;
    const waiting = c.histFrom == null || c.loadingHist || (reaching && !c.histError);
    if (S.scrollToUnread && waiting) {
      // Still loading back to the first unread message: stay put.
    } else if (S.scrollToUnread) {
      // Opened with unread messages: the first of them at the top (or the
      // end, when they are gone or too far back).
      const divider = S.msgEls.get('unread-div');
      box.scrollTop = divider ? Math.max(0, divider.offsetTop - 8) : box.scrollHeight;
      S.scrollToUnread = false;
      S.stickBottom = false;
    } else if (S.stickBottom || atBottom) {
      box.scrollTop = box.scrollHeight;
      S.stickBottom = false;
    } else if (anchor && S.msgEls.get(anchor.key)) {
      box.scrollTop = S.msgEls.get(anchor.key).offsetTop - anchor.off;
    }
    // not enough to scroll yet: load older history right away
    if (c.hasOlder && !c.loadingHist && !c.histError && box.scrollHeight <= box.clientHeight + 40) loadHistory(c, true);
  }

  function cachedEl(key, sig, make) {
    const old = S.msgEls.get(key);
    if (old && old._sig === sig) return old;
    const el = make();
    el._sig = sig;
    el.dataset.key = key;
    if (old) old.replaceWith(el);
    S.msgEls.set(key, el);
    return el;
  }

  function messageEl(c, it, cont, showName) {
    const mine = it.sender === myId();
    const bubble = h('div', { class: 'bubble' });
    if (showName) {
      const nameEl = h('div', { class: 'sender-name', dir: 'auto' }, userName(it.sender));
      nameEl.style.setProperty('--h', String(hashHue(it.sender)));
      bubble.append(nameEl);
    }
    // dir=auto: right-to-left text keeps its punctuation on its own side.
    const body = h('div', { class: 'text', dir: 'auto' });
    if (it.recalled || it.pendingRecall) {
      body.classList.add('recalled');
      body.append(it.recalled ? (mine ? 'You recalled this message' : 'This message was recalled') : 'Recalling…');
    } else {
      const content = it.pendingEdit || it.content;
      if (content && content.type === 'text') body.append(...linkify(String(content.text ?? '')));
      else if (content && (content.type === 'image' || content.type === 'file') && /^https?:\/\//.test(String(content.url || ''))) {
        body.append(h('a', { href: String(content.url), target: '_blank', rel: 'noopener noreferrer' }, contentText(content)));
      } else body.append(h('span', { class: 'muted' }, contentText(content)));
    }
    bubble.append(body);
    const meta = h('span', { class: 'meta' });
    if (it.pendingEdit) meta.append(h('span', { class: 'edited' }, 'saving…'));
    else if (it.edited && !it.recalled) meta.append(h('span', { class: 'edited' }, 'edited'));
    meta.append(h('time', { datetime: new Date(it.ts).toISOString() }, fmtTime(it.ts)));
    if (mine && it.status) meta.append(tickEl(it.status));
    bubble.append(meta);
    const row = h('div', {
      class: `msg ${mine ? 'mine' : 'theirs'}${cont ? ' cont' : ''}`,
      dataset: { seq: it.seq || '', cmid: it.cmid || '', status: it.status || '', sender: it.sender || '' },
    });
    row.append(bubble);
    if (it.status === 'failed') {
      row.append(
        h(
          'div',
          { class: 'failed-row' },
          h('span', null, it.error || 'Not sent.'),
          h('button', { type: 'button', class: 'link-btn', onclick: () => retrySend(it.cmid) }, 'Retry'),
          h('button', { type: 'button', class: 'link-btn', onclick: () => discardSend(it.cmid) }, 'Delete'),
        ),
      );
    }
    const canEdit = mine && it.seq && !it.recalled && !it.pendingRecall && it.content && it.content.type === 'text';
    const canRecall = canRecallMsg(c, it);
    if (canEdit || canRecall) {
      const btn = h('button', { type: 'button', class: 'msg-more', title: 'Message actions', 'aria-label': 'Message actions' }, icon('more'));
      btn.addEventListener('click', (e) => {
        e.stopPropagation();
        showMenu(btn, c, it);
      });
      row.append(btn);
      row.classList.add('has-actions');
      // touch screens: tap the bubble (no hover button there)
      bubble.addEventListener('click', (e) => {
        if (!window.matchMedia('(hover: none)').matches || e.target.closest('a')) return;
        e.stopPropagation();
        showMenu(bubble, c, it);
      });
    }
    return row;
  }

  function canRecallMsg(c, it) {
    if (!it.seq || it.recalled || it.pendingRecall) return false;
    const admin = c.type === 'group' && (myRole(c) === 'admin' || myRole(c) === 'owner');
    if (admin) return true;
    return it.sender === myId() && Date.now() + S.clockSkew - it.ts < RECALL_WINDOW_MS;
  }

  // ------------------------------------------------------------------
  // Message actions: edit, recall, retry
  // ------------------------------------------------------------------
  let menuFor = null;
  function showMenu(btn, c, it) {
    const menu = $('#msg-menu');
    menuFor = { conv_id: c.id, seq: it.seq };
    $('#menu-edit').hidden = !(it.sender === myId() && it.content && it.content.type === 'text' && !it.recalled);
    $('#menu-recall').hidden = !canRecallMsg(c, it);
    menu.hidden = false;
    const r = btn.getBoundingClientRect();
    const mw = menu.offsetWidth;
    const mh = menu.offsetHeight;
    let left = Math.min(window.innerWidth - mw - 8, Math.max(8, r.right - mw));
    let top = r.bottom + 4;
    if (top + mh > window.innerHeight - 8) top = r.top - mh - 4;
    menu.style.left = `${left}px`;
    menu.style.top = `${top}px`;
    $('#menu-edit').hidden ? $('#menu-recall').focus() : $('#menu-edit').focus();
  }

  function hideMenu() {
    $('#msg-menu').hidden = true;
    menuFor = null;
  }

  function startEdit(convId, seq) {
    const c = S.convs.get(convId);
    const m = c && c.msgs.get(seq);
    if (!m || !m.content || m.content.type !== 'text') return;
    S.editing = { conv_id: convId, seq };
    const text = String(m.content.text ?? '');
    $('#edit-bar').hidden = false;
    $('#edit-bar-orig').textContent = text;
    const input = $('#composer-input');
    input.value = text;
    autoGrow();
    input.focus();
    input.setSelectionRange(text.length, text.length);
  }

  function cancelEdit() {
    if (!S.editing) return;
    S.editing = null;
    $('#edit-bar').hidden = true;
    $('#composer-input').value = '';
    autoGrow();
  }

  function recallMsg(convId, seq) {
    if (!window.confirm('Recall this message for everyone?')) return;
    enqueue({ conv_id: convId, op: 'recall', target_seq: seq });
  }

  function retrySend(cmid) {
    const it = S.outbox.find((x) => x.cmid === cmid);
    if (!it) return;
    it.status = 'sending';
    it.error = undefined;
    it.lastTry = 0;
    saveOutbox();
    flushOutbox(true, cmid);
    invalidate();
  }

  function discardSend(cmid) {
    dropOutbox(cmid);
    invalidate();
  }

  // ------------------------------------------------------------------
  // Composer
  // ------------------------------------------------------------------
  function autoGrow() {
    const t = $('#composer-input');
    t.style.height = 'auto';
    t.style.height = Math.min(t.scrollHeight, 160) + 'px';
  }

  function submitComposer() {
    const c = S.convs.get(S.openId);
    const input = $('#composer-input');
    const text = input.value.replace(/^\s*\n|\s+$/g, '');
    if (!c || !text.trim()) return;
    const bytes = contentBytes(text);
    if (bytes > maxContent()) {
      toast(`The message is too long: ${fmtNum(bytes)} bytes, at most ${fmtNum(maxContent())}.`);
      return;
    }
    if (S.editing && S.editing.conv_id === c.id) {
      const m = c.msgs.get(S.editing.seq);
      if (m && !(m.content && m.content.text === text)) {
        enqueue({ conv_id: c.id, op: 'edit', target_seq: S.editing.seq, content: { type: 'text', text } });
      }
      cancelEdit();
    } else {
      enqueue({ conv_id: c.id, op: 'send', content: { type: 'text', text } });
      c.unreadFrom = null;
      input.value = '';
      S.stickBottom = true;
    }
    S.typingSentAt = 0;
    autoGrow();
    renderCount();
    invalidate();
  }

  /** The server's content limit (from auth_ok), else its default. */
  function maxContent() {
    return S.maxContent || 16384;
  }

  /** The size the server counts: the content object as compact JSON. */
  function contentBytes(text) {
    return new TextEncoder().encode(JSON.stringify({ type: 'text', text })).length;
  }

  function fmtNum(n) {
    return n.toLocaleString('en-US');
  }

  /** Shows the size against the limit once a message nears it. */
  function renderCount() {
    const el = $('#composer-count');
    if (!el) return;
    const bytes = contentBytes($('#composer-input').value);
    const max = maxContent();
    el.hidden = bytes < max * 0.8;
    el.classList.toggle('over', bytes > max);
    el.textContent = bytes > max
      ? `Too long: ${fmtNum(bytes)} of at most ${fmtNum(max)} bytes`
      : `${fmtNum(bytes)} / ${fmtNum(max)} bytes`;
  }

  function onComposerInput() {
    autoGrow();
    renderCount();
    const c = S.convs.get(S.openId);
    if (!c || S.editing || !$('#composer-input').value.trim()) return;
    const now = Date.now();
    if (now - S.typingSentAt >= TYPING_SEND_MS && S.conn === 'online') {
      S.typingSentAt = now;
      wsSend({ type: 'typing', conv_id: c.id });
    }
  }

  // ------------------------------------------------------------------
  // New chat dialog
  // ------------------------------------------------------------------
  let ncMode = 'direct';
  let groupMembers = []; // [{user_id, username, display_name}]

  function openNewChat(mode) {
    ncMode = mode || 'direct';
    groupMembers = [];
    $('#direct-username').value = '';
    $('#group-title').value = '';
    $('#group-member-input').value = '';
    $('#new-chat-error').textContent = '';
    renderNewChat();
    const d = $('#new-chat-dialog');
    if (!d.open) d.showModal();
    (ncMode === 'direct' ? $('#direct-username') : $('#group-title')).focus();
  }

  function renderNewChat() {
    $('#tab-direct').classList.toggle('active', ncMode === 'direct');
    $('#tab-group').classList.toggle('active', ncMode === 'group');
    $('#direct-panel').hidden = ncMode !== 'direct';
    $('#group-panel').hidden = ncMode !== 'group';
    $('#new-chat-submit').textContent = ncMode === 'direct' ? 'Start chat' : 'Create group';
    const chips = $('#group-chips');
    chips.replaceChildren(
      ...groupMembers.map((u) =>
        h(
          'span',
          { class: 'chip', dataset: { username: u.username } },
          u.display_name && u.display_name !== u.username ? `${u.display_name} (@${u.username})` : `@${u.username}`,
          h('button', {
            type: 'button', class: 'chip-x', title: 'Remove', 'aria-label': `Remove ${u.username}`,
            onclick: () => {
              groupMembers = groupMembers.filter((x) => x.user_id !== u.user_id);
              renderNewChat();
            },
          }, icon('x')),
        ),
      ),
    );
  }

  function normUsername(s) {
    return String(s || '').trim().replace(/^@/, '').toLowerCase();
  }

  async function lookupUser(username) {
    if (!/^[a-z0-9_.-]{3,32}$/.test(username)) throw new Error(`“${username}” is not a valid username.`);
    const r = await api('GET', `/users?username=${encodeURIComponent(username)}`);
    const u = (r.users || [])[0];
    if (!u) throw new Error(`No user named “${username}”.`);
    S.users.set(u.user_id, u);
    return u;
  }

  async function addGroupMember() {
    const input = $('#group-member-input');
    const names = input.value.split(/[\s,]+/).map(normUsername).filter(Boolean);
    if (!names.length) return true;
    $('#new-chat-error').textContent = '';
    for (const n of names) {
      try {
        const u = await lookupUser(n);
        if (u.user_id === myId()) continue;
        if (!groupMembers.some((x) => x.user_id === u.user_id)) groupMembers.push(u);
      } catch (e) {
        $('#new-chat-error').textContent = e.message;
        renderNewChat();
        return false;
      }
    }
    input.value = '';
    renderNewChat();
    return true;
  }

  async function submitNewChat() {
    const btn = $('#new-chat-submit');
    const err = $('#new-chat-error');
    err.textContent = '';
    btn.disabled = true;
    try {
      let conv;
      if (ncMode === 'direct') {
        const name = normUsername($('#direct-username').value);
        if (!name) throw new Error('Enter a username.');
        const u = await lookupUser(name);
        if (u.user_id === myId()) throw new Error('That is you. Pick someone else.');
        conv = await api('POST', '/conversations', { type: 'direct', peer: u.user_id });
      } else {
        const title = $('#group-title').value.trim();
        if (!title) throw new Error('Give the group a name.');
        if (!(await addGroupMember())) return;
        if (!groupMembers.length) throw new Error('Add at least one member.');
        conv = await api('POST', '/conversations', { type: 'group', title, members: groupMembers.map((u) => u.user_id) });
      }
      const isNew = !S.convs.has(conv.conv_id);
      const c = mergeConv(conv);
      if (isNew && c.contig == null && S.synced) c.contig = c.last_seq;
      presenceSub();
      saveCacheSoon();
      $('#new-chat-dialog').close();
      openChat(c.id);
    } catch (e) {
      err.textContent = e.code === 'network' ? 'You are offline. Try again when connected.' : e.code === 'forbidden' ? 'You cannot start a chat with this user.' : e.message;
    } finally {
      btn.disabled = false;
    }
  }

  // ------------------------------------------------------------------
  // Sign in / sign out
  // ------------------------------------------------------------------
  let authMode = 'login';
  function setAuthMode(m) {
    authMode = m;
    $('#tab-login').classList.toggle('active', m === 'login');
    $('#tab-register').classList.toggle('active', m === 'register');
    $('#tab-login').setAttribute('aria-selected', String(m === 'login'));
    $('#tab-register').setAttribute('aria-selected', String(m === 'register'));
    $('#display-name-row').hidden = m !== 'register';
    $('#auth-hint').hidden = m !== 'register';
    $('#auth-submit').textContent = m === 'login' ? 'Sign in' : 'Create account';
    $('#auth-password').autocomplete = m === 'login' ? 'current-password' : 'new-password';
    $('#auth-error').textContent = '';
  }

  async function onAuthSubmit(e) {
    e.preventDefault();
    const username = normUsername($('#auth-username').value);
    const password = $('#auth-password').value;
    const displayName = $('#auth-display-name').value.trim();
    const errEl = $('#auth-error');
    errEl.textContent = '';
    if (!username || !password) {
      errEl.textContent = 'Enter your username and password.';
      return;
    }
    if (authMode === 'register') {
      if (!/^[a-z0-9_.-]{3,32}$/.test(username)) {
        errEl.textContent = 'Usernames are 3–32 characters: a–z, 0–9, “_”, “.” or “-”.';
        return;
      }
      if (Array.from(password).length < 8) {
        errEl.textContent = 'The password needs at least 8 characters.';
        return;
      }
    }
    const btn = $('#auth-submit');
    btn.disabled = true;
    btn.classList.add('busy');
    try {
      if (authMode === 'register') {
        await api('POST', '/accounts', { username, password, display_name: displayName || undefined });
      }
      const r = await api('POST', '/sessions', { username, password, device_id: deviceId(), platform: 'web' });
      S.session = { token: r.token, user_id: r.user_id, device_id: r.device_id };
      LS.set(K_SESSION, S.session);
      $('#auth-password').value = '';
      startApp();
    } catch (err) {
      const msgs = {
        unauthorized: 'Wrong username or password.',
        conflict: 'That username is already taken.',
        network: 'Cannot reach the server. Check your connection.',
        bad_request: err.message,
      };
      if (err.code === 'rate_limited') {
        const s = Math.ceil((err.extra.retry_after_ms || 1000) / 1000);
        errEl.textContent = `Too many attempts. Try again in ${s} s.`;
      } else errEl.textContent = msgs[err.code] || err.message || 'Something went wrong.';
    } finally {
      btn.disabled = false;
      btn.classList.remove('busy');
    }
  }

  function showLogin(message) {
    $('#app-view').hidden = true;
    $('#login-view').hidden = false;
    document.body.classList.remove('chat-open');
    document.body.dataset.view = 'login';
    document.title = 'tokenim';
    setAuthMode('login');
    if (message) $('#auth-error').textContent = message;
    setTimeout(() => $('#auth-username').focus(), 0);
  }

  function resetState() {
    if (S.ws) {
      const ws = S.ws;
      S.ws = null;
      try {
        ws.close();
      } catch {
        /* ignore */
      }
    }
    for (const t of Object.values(S.timers)) {
      clearTimeout(t);
      clearInterval(t);
    }
    S.timers = {};
    Object.assign(S, {
      session: null, me: null, convs: new Map(), users: new Map(), userFetch: new Map(), blocked: new Set(),
      presence: new Map(), presenceKey: '', openId: null, outbox: [], cursors: {}, conn: 'offline',
      attempt: 0, pending: new Map(), synced: false, syncing: false, listLoaded: false, editing: null,
      msgEls: new Map(), renderedConv: null,
    });
    $('#conv-list').replaceChildren();
    listEls.clear();
    $('#msg-list').replaceChildren();
    if (location.hash) history.replaceState(null, '', location.pathname + location.search);
  }

  /** The token no longer works (401, revoked, logged out elsewhere). */
  function sessionEnded(message) {
    if (!S.session) return;
    LS.del(K_SESSION);
    resetState();
    showLogin(message);
  }

  async function logout() {
    if (!window.confirm('Sign out of tokenim on this device?')) return;
    S.noReconnect = true;
    try {
      await api('DELETE', '/sessions/current');
    } catch {
      /* signing out locally anyway */
    }
    LS.del(K_SESSION);
    resetState();
    showLogin();
  }

  function startApp() {
    S.cursors = LS.get(kCursors(), {});
    S.outbox = (LS.get(kOutbox(), []) || []).filter((i) => i && i.cmid && i.conv_id && i.op);
    for (const i of S.outbox) {
      i.lastTry = 0;
      if (i.status !== 'failed') i.status = 'sending';
    }
    S.me = S.session.me || { user_id: S.session.user_id, username: '', display_name: '' };
    const cache = LS.get(kCache(), null);
    if (cache) {
      for (const u of cache.users || []) if (u && u.user_id) S.users.set(u.user_id, u);
      for (const o of cache.convs || []) if (o && o.conv_id) mergeConv(o).addedAt = 0;
    }
    $('#login-view').hidden = true;
    $('#app-view').hidden = false;
    document.body.dataset.view = 'app';
    S.conn = 'connecting';
    renderConn();
    applyRoute();
    render();
    api('GET', '/me')
      .then((me) => {
        if (!S.session) return;
        S.me = me;
        S.users.set(me.user_id, me);
        S.session.me = me;
        LS.set(K_SESSION, S.session);
        invalidate();
      })
      .catch(() => {});
    connect();
  }

  // ------------------------------------------------------------------
  // Wiring
  // ------------------------------------------------------------------
  function init() {
    $('#info-btn').append(icon('info'));
    $('#info-close').append(icon('x'));
    $('#info-btn').addEventListener('click', openInfo);
    $('#info-close').addEventListener('click', () => $('#info-dialog').close());
    $('#info-done').addEventListener('click', () => $('#info-dialog').close());
    $('#info-rename-btn').addEventListener('click', infoRename);
    $('#info-add-btn').addEventListener('click', infoAdd);
    $('#info-add').addEventListener('keydown', (e) => {
      if (e.key === 'Enter') {
        e.preventDefault();
        infoAdd();
      }
    });
    $('#info-leave').addEventListener('click', infoLeave);
    $('#info-block').addEventListener('click', infoBlock);
    $('#notify-btn').append(icon('bell'));
    $('#notify-btn').addEventListener('click', askNotify);
    renderNotifyBtn();
    $('#new-chat-btn').append(icon('plus'));
    $('#logout-btn').append(icon('logout'));
    $('#back-btn').append(icon('back'));
    $('#send-btn').append(icon('send'));
    $('#new-chat-close').append(icon('x'));
    $('#edit-cancel').append(icon('x'));

    // The banner says whose side is down; it changes with the device's network.
    window.addEventListener('online', renderConn);
    window.addEventListener('offline', renderConn);

    $('#tab-login').addEventListener('click', () => setAuthMode('login'));
    $('#tab-register').addEventListener('click', () => setAuthMode('register'));
    $('#auth-form').addEventListener('submit', onAuthSubmit);

    $('#new-chat-btn').addEventListener('click', () => openNewChat('direct'));
    $('#conv-empty-btn').addEventListener('click', () => openNewChat('direct'));
    $('#logout-btn').addEventListener('click', logout);
    $('#back-btn').addEventListener('click', () => {
      if (S.pushedRoute && location.hash) history.back(); // the hashchange closes the chat
      else closeChat();
    });
    $('#conn-banner-btn').addEventListener('click', () => {
      if (S.conn === 'replaced') useHere();
      else reconnectNow();
    });

    $('#composer').addEventListener('submit', (e) => {
      e.preventDefault();
      submitComposer();
    });
    const input = $('#composer-input');
    input.addEventListener('input', onComposerInput);
    input.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        submitComposer();
      } else if (e.key === 'Escape' && S.editing) cancelEdit();
      else if (e.key === 'ArrowUp' && !input.value) {
        // edit my last message
        const c = S.convs.get(S.openId);
        if (!c) return;
        const mine = Array.from(c.msgs.values()).filter((m) => m.kind === 'message' && m.sender === myId() && !m.recalled && m.content && m.content.type === 'text');
        if (mine.length) {
          e.preventDefault();
          startEdit(c.id, mine.sort((a, b) => b.seq - a.seq)[0].seq);
        }
      }
    });
    $('#edit-cancel').addEventListener('click', cancelEdit);

    const box = $('#messages');
    box.addEventListener('scroll', () => {
      const c = S.convs.get(S.openId);
      if (c && box.scrollTop < 120 && c.hasOlder && !c.loadingHist) loadHistory(c, true);
      hideMenu();
    }, { passive: true });

    $('#menu-edit').addEventListener('click', () => {
      const m = menuFor;
      hideMenu();
      if (m) startEdit(m.conv_id, m.seq);
    });
    $('#menu-recall').addEventListener('click', () => {
      const m = menuFor;
      hideMenu();
      if (m) recallMsg(m.conv_id, m.seq);
    });
    document.addEventListener('click', (e) => {
      if (!$('#msg-menu').hidden && !$('#msg-menu').contains(e.target)) hideMenu();
    });
    document.addEventListener('keydown', (e) => {
      if (e.key === 'Escape') hideMenu();
    });

    $('#tab-direct').addEventListener('click', () => {
      ncMode = 'direct';
      renderNewChat();
      $('#direct-username').focus();
    });
    $('#tab-group').addEventListener('click', () => {
      ncMode = 'group';
      renderNewChat();
      $('#group-title').focus();
    });
    $('#new-chat-close').addEventListener('click', () => $('#new-chat-dialog').close());
    $('#new-chat-cancel').addEventListener('click', () => $('#new-chat-dialog').close());
    $('#new-chat-submit').addEventListener('click', submitNewChat);
    $('#new-chat-form').addEventListener('submit', (e) => e.preventDefault());
    $('#direct-username').addEventListener('keydown', (e) => {
      if (e.key === 'Enter') {
        e.preventDefault();
        submitNewChat();
      }
    });
    $('#group-title').addEventListener('keydown', (e) => {
      if (e.key === 'Enter') {
        e.preventDefault();
        $('#group-member-input').focus();
      }
    });
    $('#group-member-input').addEventListener('keydown', (e) => {
      if (e.key === 'Enter' || e.key === ',') {
        e.preventDefault();
        if ($('#group-member-input').value.trim()) addGroupMember();
        else if (e.key === 'Enter') submitNewChat();
      } else if (e.key === 'Backspace' && !$('#group-member-input').value && groupMembers.length) {
        groupMembers.pop();
        renderNewChat();
      }
    });
    $('#group-chips-box').addEventListener('click', () => $('#group-member-input').focus());

    const ul = $('#conv-list');
    ul.addEventListener('click', (e) => {
      const li = e.target.closest('.conv-item');
      if (li) openChat(li.dataset.convId);
    });
    ul.addEventListener('keydown', (e) => {
      const li = e.target.closest('.conv-item');
      if (li && (e.key === 'Enter' || e.key === ' ')) {
        e.preventDefault();
        openChat(li.dataset.convId);
      }
    });
    window.addEventListener('hashchange', applyRoute);
    document.addEventListener('visibilitychange', () => {
      // a tab paused because another tab of this browser took the device's
      // socket takes it back when the user comes back to it
      if (document.visibilityState === 'visible' && S.conn === 'replaced') useHere();
      const c = S.convs.get(S.openId);
      if (c) maybeSendRead(c);
      invalidate();
    });
    window.addEventListener('focus', () => {
      const c = S.convs.get(S.openId);
      if (c) maybeSendRead(c);
    });
    window.addEventListener('online', reconnectNow);
    window.addEventListener('storage', (e) => {
      // signed out in another tab
      if (e.key === K_SESSION && !e.newValue && S.session) sessionEnded('You signed out in another window.');
    });

    // resend what is still unacked after the timeout
    setInterval(() => flushOutbox(false), 1000);
    // typing indicators expire
    setInterval(() => {
      const now = Date.now();
      for (const c of S.convs.values()) for (const exp of c.typing.values()) if (exp <= now) return invalidate();
    }, 1000);

    const saved = LS.get(K_SESSION, null);
    if (saved && saved.token && saved.user_id) {
      S.session = saved;
      startApp();
    } else showLogin();
  }

  init();
})();
