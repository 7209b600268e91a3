//! The background task behind a [`Messenger`](crate::Messenger): owns the
//! socket, the outbox, the cursors and the statuses, and is the only one to
//! touch them (the handles talk to it by message).
//!
//! long: one state machine (socket, outbox, cursors, statuses) whose parts
//! share the actor's fields; split, each part would need all of them.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use serde_json::value::RawValue;
use tokenim_proto::system::{Edit, Recall, System};
use tokenim_proto::{
    AckFrame, AuthFrame, ClientFrame, EditFrame, ErrorCode, Event, EventKind, KickReason,
    PingFrame, PresenceSubFrame, ReadFrame, RecallFrame, SendAck, SendFrame, ServerFrame,
    SyncCursor, SyncFrame, TypingFrame,
};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::messenger::{Config, MessageStatus, StatusChange, StopReason, Update};
use crate::order::Sequencer;
use crate::store::{OutboxEntry, Request, State, StateStore};
use crate::wire::{self, Incoming};
use crate::{Error, Session};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How often the connected loop does its housekeeping (acks, resends,
/// gaps).
const TICK: Duration = Duration::from_millis(50);
/// Attempts of a request answered `internal` before it is `failed`.
const MAX_INTERNAL_ERRORS: u32 = 3;
/// Most cursors in one `sync` frame (keeps it far below the server's
/// 64 KiB frame limit); the others start from the stored `ack_seq`.
const MAX_SYNC_CURSORS: usize = 400;
/// Wait before retrying a request answered `unavailable`, or a failed sync.
const RETRY_DELAY: Duration = Duration::from_secs(1);

pub(crate) enum Command {
    Enqueue {
        entry: OutboxEntry,
        reply: oneshot::Sender<crate::Result<()>>,
    },
    Read {
        conv_id: String,
        seq: u64,
    },
    Typing {
        conv_id: String,
    },
    Presence {
        user_ids: Vec<String>,
    },
    Status {
        id: String,
        reply: oneshot::Sender<Option<MessageStatus>>,
    },
    Outbox {
        reply: oneshot::Sender<Vec<OutboxEntry>>,
    },
    Cursor {
        conv_id: String,
        reply: oneshot::Sender<Option<u64>>,
    },
    Close {
        reply: oneshot::Sender<()>,
    },
}

/// Why a connection ended.
#[derive(Debug)]
enum End {
    /// Lost: reconnect.
    Lost(String),
    /// Stop for good.
    Stop(StopReason, Option<oneshot::Sender<()>>),
}

fn lost(e: impl std::fmt::Display) -> End {
    End::Lost(e.to_string())
}

/// One outbox entry and where it stands on the current connection.
struct Pending {
    entry: OutboxEntry,
    /// When it was last sent on the current connection.
    sent_at: Option<Instant>,
    /// Not to be sent before (after `rate_limited` or `unavailable`).
    not_before: Option<Instant>,
    internal_errors: u32,
}

struct Tracked {
    conv_id: String,
    seq: Option<u64>,
    status: MessageStatus,
}

/// The statuses of the messages sent through this messenger.
struct Statuses {
    map: HashMap<String, Tracked>,
    order: VecDeque<String>,
    /// Per conversation, seq -> client_msg_id of messages not yet `read`.
    open: HashMap<String, BTreeMap<u64, String>>,
    /// Per conversation, the highest seq reported delivered / read by others.
    delivered: HashMap<String, u64>,
    read: HashMap<String, u64>,
    cap: usize,
}

impl Statuses {
    fn new(cap: usize) -> Statuses {
        Statuses {
            map: HashMap::new(),
            order: VecDeque::new(),
            open: HashMap::new(),
            delivered: HashMap::new(),
            read: HashMap::new(),
            cap: cap.max(1),
        }
    }

    fn get(&self, id: &str) -> Option<MessageStatus> {
        self.map.get(id).map(|t| t.status)
    }

    fn change(id: &str, t: &Tracked) -> StatusChange {
        StatusChange {
            conv_id: t.conv_id.clone(),
            client_msg_id: id.to_owned(),
            status: t.status,
            seq: t.seq,
            error: None,
        }
    }

    fn sending(&mut self, id: &str, conv_id: &str) -> StatusChange {
        if !self.map.contains_key(id) {
            self.order.push_back(id.to_owned());
            while self.order.len() > self.cap {
                if let Some(old) = self.order.pop_front()
                    && let Some(t) = self.map.remove(&old)
                    && let (Some(seq), Some(o)) = (t.seq, self.open.get_mut(&t.conv_id))
                {
                    o.remove(&seq);
                }
            }
        }
        let t = Tracked {
            conv_id: conv_id.to_owned(),
            seq: None,
            status: MessageStatus::Sending,
        };
        let c = Self::change(id, &t);
        self.map.insert(id.to_owned(), t);
        c
    }

    /// The request was stored at `seq`: `sent`, or further along when the
    /// others' markers already cover it.
    fn sent(&mut self, id: &str, conv_id: &str, seq: u64) -> Vec<StatusChange> {
        let read = self.read.get(conv_id).is_some_and(|r| *r >= seq);
        let delivered = self.delivered.get(conv_id).is_some_and(|d| *d >= seq);
        if !self.map.contains_key(id) {
            self.sending(id, conv_id);
        }
        let t = self.map.get_mut(id).expect("inserted above");
        t.seq = Some(seq);
        let mut out = Vec::new();
        for s in [
            (true, MessageStatus::Sent),
            (delivered, MessageStatus::Delivered),
            (read, MessageStatus::Read),
        ] {
            if s.0 && t.status < s.1 {
                t.status = s.1;
                out.push(Self::change(id, t));
            }
        }
        if t.status < MessageStatus::Read {
            self.open
                .entry(conv_id.to_owned())
                .or_default()
                .insert(seq, id.to_owned());
        }
        out
    }

    fn failed(&mut self, id: &str, conv_id: &str, code: ErrorCode, msg: String) -> StatusChange {
        if !self.map.contains_key(id) {
            self.sending(id, conv_id);
        }
        let t = self.map.get_mut(id).expect("inserted above");
        t.status = MessageStatus::Failed;
        let mut c = Self::change(id, t);
        c.error = Some((code, msg));
        c
    }

    /// Others acknowledged (`Delivered`) or read (`Read`) up to `seq`.
    fn advance(&mut self, conv_id: &str, seq: u64, to: MessageStatus) -> Vec<StatusChange> {
        let mark = match to {
            MessageStatus::Read => &mut self.read,
            _ => &mut self.delivered,
        };
        let m = mark.entry(conv_id.to_owned()).or_default();
        *m = (*m).max(seq);
        let mut out = Vec::new();
        let Some(open) = self.open.get_mut(conv_id) else {
            return out;
        };
        let covered: Vec<u64> = open.range(..=seq).map(|(s, _)| *s).collect();
        for s in covered {
            let id = open.get(&s).expect("listed above").clone();
            if let Some(t) = self.map.get_mut(&id)
                && t.status < to
            {
                t.status = to;
                out.push(Self::change(&id, t));
            }
            if to == MessageStatus::Read {
                open.remove(&s);
            }
        }
        out
    }
}

struct SyncState {
    /// The `id` of the sync in flight.
    in_flight: Option<String>,
    /// Sync again when the one in flight ends.
    again: bool,
    /// Retry a failed sync at.
    retry_at: Option<Instant>,
    counter: u64,
}

pub(crate) struct Actor {
    cfg: Config,
    ws_url: String,
    token: String,
    user_id: String,
    device_id: String,
    tls: Option<Arc<rustls::ClientConfig>>,
    store: Arc<dyn StateStore>,
    seq: Sequencer,
    outbox: Vec<Pending>,
    statuses: Statuses,
    /// Per conversation, the last seq acknowledged to the server.
    acked: HashMap<String, u64>,
    /// Events delivered since the last acknowledgement.
    unacked: usize,
    last_ack_flush: Instant,
    /// The state changed since it was last saved.
    dirty: bool,
    /// Read markers not yet sent.
    reads: BTreeMap<String, u64>,
    presence: Option<Vec<String>>,
    /// When each conversation with waiting events was first seen so.
    gap_seen: HashMap<String, Instant>,
    sync: SyncState,
    cmd_rx: mpsc::Receiver<Command>,
    up_tx: mpsc::Sender<Update>,
}

impl Actor {
    pub(crate) fn new(
        session: &Session,
        store: Arc<dyn StateStore>,
        cfg: Config,
        state: State,
        cmd_rx: mpsc::Receiver<Command>,
        up_tx: mpsc::Sender<Update>,
    ) -> Actor {
        let mut statuses = Statuses::new(cfg.status_capacity);
        for e in &state.outbox {
            statuses.sending(&e.client_msg_id, &e.conv_id);
        }
        Actor {
            ws_url: cfg
                .ws_url
                .clone()
                .unwrap_or_else(|| session.client().ws_url()),
            token: session.token().to_owned(),
            user_id: session.user_id().to_owned(),
            device_id: session.device_id().to_owned(),
            tls: session.client().ws_tls(),
            store,
            seq: Sequencer::new(&state.cursors),
            acked: state.cursors.clone().into_iter().collect(),
            outbox: state
                .outbox
                .into_iter()
                .map(|entry| Pending {
                    entry,
                    sent_at: None,
                    not_before: None,
                    internal_errors: 0,
                })
                .collect(),
            statuses,
            unacked: 0,
            last_ack_flush: Instant::now(),
            dirty: false,
            reads: BTreeMap::new(),
            presence: None,
            gap_seen: HashMap::new(),
            sync: SyncState {
                in_flight: None,
                again: false,
                retry_at: None,
                counter: 0,
            },
            cmd_rx,
            up_tx,
            cfg,
        }
    }

    pub(crate) async fn run(mut self) {
        let mut attempt: u32 = 0;
        let end = loop {
            let connect = connect(
                self.ws_url.clone(),
                self.token.clone(),
                self.tls.clone(),
                self.cfg.connect_timeout,
            );
            tokio::pin!(connect);
            let connected = loop {
                tokio::select! {
                    r = &mut connect => break r,
                    cmd = self.cmd_rx.recv() => {
                        if let Err(end) = self.on_command(cmd, None).await {
                            break Err(Ok(end));
                        }
                    }
                }
            };
            let reason = match connected {
                Err(Ok(end)) => break end,
                Err(Err(e)) => {
                    if e.code() == Some(ErrorCode::Unauthorized) {
                        break End::Stop(StopReason::Unauthorized, None);
                    }
                    e.to_string()
                }
                Ok((ws, heartbeat_ms)) => {
                    attempt = 0;
                    match self.connected(ws, heartbeat_ms).await {
                        End::Lost(reason) => reason,
                        stop => break stop,
                    }
                }
            };
            let delay = backoff(&self.cfg, attempt);
            attempt = attempt.saturating_add(1);
            tracing::debug!(%reason, ?delay, "tokenim connection lost");
            if let Err(end) = self
                .emit(Update::Disconnected {
                    reason,
                    retry_in: delay,
                })
                .await
            {
                break end;
            }
            let wake = Instant::now() + delay;
            let waited = loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(wake) => break Ok(()),
                    cmd = self.cmd_rx.recv() => {
                        if let Err(end) = self.on_command(cmd, None).await {
                            break Err(end);
                        }
                    }
                }
            };
            if let Err(end) = waited {
                break end;
            }
        };
        let End::Stop(reason, reply) = end else {
            unreachable!("the loop breaks only on a stop")
        };
        if let Err(e) = self.save().await {
            tracing::warn!(error = %e, "saving the tokenim state failed");
        }
        match reply {
            // The application may not be reading any more: never wait on it.
            Some(r) => {
                let _ = self.up_tx.try_send(Update::Stopped(reason));
                let _ = r.send(());
            }
            None => {
                let _ = self.up_tx.send(Update::Stopped(reason)).await;
            }
        }
    }

    /// Runs one authenticated connection until it ends.
    async fn connected(&mut self, mut ws: Ws, heartbeat_ms: u64) -> End {
        let end = self.connected_inner(&mut ws, heartbeat_ms).await;
        if let End::Stop(..) = end {
            // Leave cleanly: what was delivered is acknowledged.
            let _ = self.flush_acks(&mut ws, true).await;
            let _ = ws.close(None).await;
        }
        end
    }

    async fn connected_inner(&mut self, ws: &mut Ws, heartbeat_ms: u64) -> End {
        for p in &mut self.outbox {
            p.sent_at = None;
        }
        self.sync = SyncState {
            in_flight: None,
            again: false,
            retry_at: None,
            counter: self.sync.counter,
        };
        if let Err(e) = self.emit(Update::Connected { heartbeat_ms }).await {
            return e;
        }
        let heartbeat = Duration::from_millis(heartbeat_ms.max(200));
        let mut ping = tokio::time::interval_at(Instant::now() + heartbeat / 2, heartbeat / 2);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_rx = Instant::now();
        let start = async {
            self.start_sync(ws).await?;
            self.send_due(ws).await?;
            let reads = std::mem::take(&mut self.reads);
            for (conv_id, seq) in reads {
                send_read(ws, conv_id, seq).await?;
            }
            if let Some(user_ids) = self.presence.clone() {
                send_frame(
                    ws,
                    &ClientFrame::PresenceSub(PresenceSubFrame { id: None, user_ids }),
                )
                .await?;
            }
            Ok::<(), End>(())
        };
        if let Err(e) = start.await {
            return e;
        }
        loop {
            let step = tokio::select! {
                msg = ws.next() => {
                    last_rx = Instant::now();
                    match msg {
                        Some(Ok(Message::Text(t))) => self.on_frame(&t, ws).await,
                        Some(Ok(Message::Close(c))) => Err(End::Lost(match c {
                            Some(c) => format!("closed by the server ({}: {})", u16::from(c.code), c.reason),
                            None => "closed by the server".to_owned(),
                        })),
                        Some(Ok(_)) => Ok(()),
                        Some(Err(e)) => Err(lost(e)),
                        None => Err(lost("the connection ended")),
                    }
                }
                cmd = self.cmd_rx.recv() => self.on_command(cmd, Some(ws)).await,
                _ = ping.tick() => {
                    if last_rx.elapsed() > heartbeat {
                        Err(lost("no sign of life from the server"))
                    } else {
                        send_frame(ws, &ClientFrame::Ping(PingFrame::default())).await
                    }
                }
                _ = tick.tick() => self.housekeeping(ws).await,
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    async fn emit(&self, u: Update) -> Result<(), End> {
        self.up_tx
            .send(u)
            .await
            .map_err(|_| End::Stop(StopReason::Closed, None))
    }

    async fn emit_status(&self, changes: Vec<StatusChange>) -> Result<(), End> {
        for c in changes {
            self.emit(Update::Status(c)).await?;
        }
        Ok(())
    }

    async fn deliver(&mut self, events: Vec<Event>) -> Result<(), End> {
        for e in events {
            self.unacked += 1;
            self.emit(Update::Event(e)).await?;
        }
        Ok(())
    }

    fn state(&self) -> State {
        State {
            user_id: Some(self.user_id.clone()),
            device_id: Some(self.device_id.clone()),
            cursors: self.seq.cursors(),
            outbox: self.outbox.iter().map(|p| p.entry.clone()).collect(),
        }
    }

    async fn save(&mut self) -> crate::Result<()> {
        let state = self.state();
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.save(&state))
            .await
            .map_err(|e| Error::Store(e.to_string()))??;
        self.dirty = false;
        Ok(())
    }

    async fn save_or_stop(&mut self) -> Result<(), End> {
        self.save()
            .await
            .map_err(|e| End::Stop(StopReason::Store(e.to_string()), None))
    }

    async fn on_command(&mut self, cmd: Option<Command>, ws: Option<&mut Ws>) -> Result<(), End> {
        let Some(cmd) = cmd else {
            return Err(End::Stop(StopReason::Closed, None));
        };
        match cmd {
            Command::Enqueue { entry, reply } => {
                if self
                    .outbox
                    .iter()
                    .any(|p| p.entry.client_msg_id == entry.client_msg_id)
                {
                    let _ = reply.send(Ok(()));
                    return Ok(());
                }
                let change = self.statuses.sending(&entry.client_msg_id, &entry.conv_id);
                self.outbox.push(Pending {
                    entry,
                    sent_at: None,
                    not_before: None,
                    internal_errors: 0,
                });
                match self.save().await {
                    Ok(()) => {
                        let _ = reply.send(Ok(()));
                    }
                    Err(e) => {
                        self.outbox.pop();
                        let _ = reply.send(Err(e));
                        return Ok(());
                    }
                }
                self.emit(Update::Status(change)).await?;
                if let Some(ws) = ws {
                    self.send_due(ws).await?;
                }
            }
            Command::Read { conv_id, seq } => match ws {
                Some(ws) => {
                    self.reads.remove(&conv_id);
                    send_read(ws, conv_id, seq).await?;
                }
                None => {
                    let r = self.reads.entry(conv_id).or_default();
                    *r = (*r).max(seq);
                }
            },
            Command::Typing { conv_id } => {
                if let Some(ws) = ws {
                    send_frame(ws, &ClientFrame::Typing(TypingFrame { id: None, conv_id })).await?;
                }
            }
            Command::Presence { user_ids } => {
                self.presence = Some(user_ids.clone());
                if let Some(ws) = ws {
                    send_frame(
                        ws,
                        &ClientFrame::PresenceSub(PresenceSubFrame { id: None, user_ids }),
                    )
                    .await?;
                }
            }
            Command::Status { id, reply } => {
                let _ = reply.send(self.statuses.get(&id));
            }
            Command::Outbox { reply } => {
                let _ = reply.send(self.outbox.iter().map(|p| p.entry.clone()).collect());
            }
            Command::Cursor { conv_id, reply } => {
                let _ = reply.send(self.seq.cursor(&conv_id));
            }
            Command::Close { reply } => return Err(End::Stop(StopReason::Closed, Some(reply))),
        }
        Ok(())
    }

    /// Sends every outbox entry not sent on this connection whose time has
    /// come, oldest first.
    async fn send_due(&mut self, ws: &mut Ws) -> Result<(), End> {
        let now = Instant::now();
        let mut in_flight = self.outbox.iter().filter(|p| p.sent_at.is_some()).count();
        for p in &mut self.outbox {
            // An entry told to wait holds back the newer ones, so that they
            // do not overtake it.
            if p.not_before.is_some_and(|t| t > now) {
                break;
            }
            match p.sent_at {
                Some(t) if now.duration_since(t) >= self.cfg.resend_after => {}
                Some(_) => continue,
                None if in_flight >= self.cfg.max_in_flight.max(1) => break,
                None => in_flight += 1,
            }
            let e = &p.entry;
            let id = Some(Value::String(e.client_msg_id.clone()));
            let frame = match &e.request {
                Request::Send { content } => ClientFrame::Send(SendFrame {
                    id,
                    conv_id: e.conv_id.clone(),
                    client_msg_id: e.client_msg_id.clone(),
                    content: content.clone(),
                }),
                Request::Recall { target_seq } => ClientFrame::Recall(RecallFrame {
                    id,
                    conv_id: e.conv_id.clone(),
                    client_msg_id: e.client_msg_id.clone(),
                    target_seq: *target_seq,
                }),
                Request::Edit {
                    target_seq,
                    content,
                } => ClientFrame::Edit(EditFrame {
                    id,
                    conv_id: e.conv_id.clone(),
                    client_msg_id: e.client_msg_id.clone(),
                    target_seq: *target_seq,
                    content: content.clone(),
                }),
            };
            send_frame(ws, &frame).await?;
            p.sent_at = Some(now);
            p.not_before = None;
        }
        Ok(())
    }

    async fn start_sync(&mut self, ws: &mut Ws) -> Result<(), End> {
        self.sync.counter += 1;
        let id = format!("sync-{}", self.sync.counter);
        // A conversation not listed starts after the device's stored
        // ack_seq, which is this cursor once acknowledged: list only the
        // others (and the gaps), which keeps the frame small. An ack the
        // server did not record only repeats events, dropped here.
        let waiting: Vec<&str> = self.seq.waiting().collect();
        let cursors = self
            .seq
            .cursors()
            .into_iter()
            .filter(|(c, s)| self.acked.get(c) != Some(s) || waiting.contains(&c.as_str()))
            .take(MAX_SYNC_CURSORS)
            .map(|(conv_id, after_seq)| SyncCursor { conv_id, after_seq })
            .collect::<Vec<_>>();
        let frame = ClientFrame::Sync(SyncFrame {
            id: Some(Value::String(id.clone())),
            limit: Some(self.cfg.sync_limit),
            cursors: (!cursors.is_empty()).then_some(cursors),
        });
        send_frame(ws, &frame).await?;
        self.sync.in_flight = Some(id);
        self.sync.again = false;
        self.sync.retry_at = None;
        Ok(())
    }

    async fn request_sync(&mut self, ws: &mut Ws) -> Result<(), End> {
        if self.sync.in_flight.is_some() {
            self.sync.again = true;
            Ok(())
        } else {
            self.start_sync(ws).await
        }
    }

    async fn housekeeping(&mut self, ws: &mut Ws) -> Result<(), End> {
        let now = Instant::now();
        if now.duration_since(self.last_ack_flush) >= self.cfg.ack_interval {
            self.flush_acks(ws, false).await?;
        }
        self.send_due(ws).await?;
        if self.sync.in_flight.is_none() && self.sync.retry_at.is_some_and(|t| t <= now) {
            self.start_sync(ws).await?;
        }
        // Gaps: a conversation whose events wait for a missing one, with no
        // own request in flight that could be it, gets a sync.
        let waiting: Vec<String> = self.seq.waiting().map(str::to_owned).collect();
        self.gap_seen.retain(|c, _| waiting.contains(c));
        let mut need_sync = false;
        for conv in waiting {
            let seen = *self.gap_seen.entry(conv.clone()).or_insert(now);
            let own_in_flight = self
                .outbox
                .iter()
                .any(|p| p.entry.conv_id == conv && p.sent_at.is_some());
            if !own_in_flight && now.duration_since(seen) >= self.cfg.gap_grace {
                tracing::debug!(conv_id = %conv, "gap: syncing");
                self.gap_seen.insert(conv, now);
                need_sync = true;
            }
        }
        if need_sync {
            self.request_sync(ws).await?;
        }
        Ok(())
    }

    /// Saves the state, then acknowledges every conversation whose cursor
    /// moved (cumulative, one frame per conversation).
    async fn flush_acks(&mut self, ws: &mut Ws, force: bool) -> Result<(), End> {
        self.last_ack_flush = Instant::now();
        let due: Vec<(String, u64)> = self
            .seq
            .cursors()
            .into_iter()
            .filter(|(c, s)| self.acked.get(c).is_none_or(|a| a < s))
            .collect();
        if due.is_empty() && !self.dirty && !force {
            return Ok(());
        }
        if self.dirty || !due.is_empty() {
            self.save_or_stop().await?;
        }
        for (conv_id, seq) in due {
            send_frame(
                ws,
                &ClientFrame::Ack(AckFrame {
                    conv_id: conv_id.clone(),
                    seq,
                }),
            )
            .await?;
            self.acked.insert(conv_id, seq);
        }
        self.unacked = 0;
        Ok(())
    }

    async fn maybe_flush(&mut self, ws: &mut Ws) -> Result<(), End> {
        if self.unacked >= self.cfg.ack_batch {
            self.flush_acks(ws, false).await?;
        }
        Ok(())
    }

    /// The event the server made of an own request, as other devices see it.
    fn own_event(&self, entry: &OutboxEntry, ack: &SendAck) -> Event {
        let as_raw =
            |v: &Value| RawValue::from_string(v.to_string()).expect("a JSON value is valid JSON");
        // A before_send webhook may have replaced the content: the ack then
        // carries what was stored (PROTOCOL-INTEGRATION I-19).
        let (kind, content) = match &entry.request {
            Request::Send { content } => (
                EventKind::Message,
                as_raw(ack.content.as_ref().unwrap_or(content)),
            ),
            Request::Recall { target_seq } => System::Recall(Recall {
                target_seq: *target_seq,
            })
            .parts(),
            Request::Edit {
                target_seq,
                content,
            } => System::Edit(Edit {
                target_seq: *target_seq,
                content: as_raw(ack.content.as_ref().unwrap_or(content)),
            })
            .parts(),
        };
        Event {
            conv_id: ack.conv_id.clone(),
            seq: ack.seq,
            msg_id: ack.msg_id.clone(),
            ts: ack.ts,
            sender: Some(self.user_id.clone()),
            sender_device: Some(self.device_id.clone()),
            system: false,
            kind,
            client_msg_id: Some(entry.client_msg_id.clone()),
            content: Some(content),
            recalled: false,
            edited: false,
        }
    }

    /// Takes an outbox entry out once the server stored it at `seq`.
    fn complete(
        &mut self,
        client_msg_id: &str,
        seq: u64,
    ) -> Option<(OutboxEntry, Vec<StatusChange>)> {
        let i = self
            .outbox
            .iter()
            .position(|p| p.entry.client_msg_id == client_msg_id)?;
        let p = self.outbox.remove(i);
        self.dirty = true;
        let changes = self.statuses.sent(client_msg_id, &p.entry.conv_id, seq);
        Some((p.entry, changes))
    }

    /// Offers an event from a push or a sync; an own request that it
    /// completes leaves the outbox.
    async fn take_event(&mut self, ev: Event, from_sync: bool) -> Result<(), End> {
        if ev.sent_by(&self.user_id)
            && let Some(id) = ev.client_msg_id.as_deref()
            && let Some((_, changes)) = self.complete(id, ev.seq)
        {
            self.emit_status(changes).await?;
        }
        let by_other = ev.sender.as_deref().is_some_and(|s| s != self.user_id);
        if by_other && ev.kind == EventKind::Message {
            // Sending moves the sender's read marker to the message
            // (PROTOCOL.md 1), and no receipt says so: whoever wrote at
            // `seq` has read everything before it. A system message
            // (no sender) was written by no member and says nothing.
            let changes = self
                .statuses
                .advance(&ev.conv_id, ev.seq, MessageStatus::Read);
            self.emit_status(changes).await?;
        }
        let ready = self.seq.offer(ev, from_sync);
        self.deliver(ready).await
    }

    async fn on_frame(&mut self, text: &str, ws: &mut Ws) -> Result<(), End> {
        let frame = match wire::parse(text) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %e, "unreadable tokenim frame");
                return Ok(());
            }
        };
        match frame {
            Incoming::Event(ev) => {
                self.take_event(ev, false).await?;
                self.maybe_flush(ws).await?;
            }
            Incoming::SyncResult {
                id,
                conversations,
                has_more,
            } => {
                let ours = matches!((&id, &self.sync.in_flight), (Some(Value::String(a)), Some(b)) if a == b);
                if !ours {
                    return Ok(());
                }
                self.sync.in_flight = None;
                for c in conversations {
                    for ev in c.events {
                        self.take_event(ev, true).await?;
                    }
                }
                if has_more || self.sync.again {
                    self.start_sync(ws).await?;
                } else {
                    let ready = self.seq.settle_unknown();
                    self.deliver(ready).await?;
                    self.emit(Update::Synced).await?;
                }
                self.maybe_flush(ws).await?;
            }
            Incoming::ConvAdded(c) => self.emit(Update::ConversationAdded(Box::new(c))).await?,
            Incoming::Unknown(ty) => tracing::debug!(%ty, "unknown tokenim frame type"),
            Incoming::Frame(f) => self.on_server_frame(f, ws).await?,
        }
        Ok(())
    }

    async fn on_server_frame(&mut self, f: ServerFrame, ws: &mut Ws) -> Result<(), End> {
        match f {
            ServerFrame::SendAck(ack) => {
                if let Some((entry, changes)) = self.complete(&ack.client_msg_id, ack.seq) {
                    self.emit_status(changes).await?;
                    let ev = self.own_event(&entry, &ack);
                    let ready = self.seq.offer(ev, false);
                    self.deliver(ready).await?;
                    self.maybe_flush(ws).await?;
                }
            }
            ServerFrame::Error {
                id,
                code,
                message,
                retry_after_ms,
            } => {
                let id = match id {
                    Some(Value::String(s)) => Some(s),
                    Some(v) => Some(v.to_string()),
                    None => None,
                };
                if id.is_some() && id == self.sync.in_flight {
                    tracing::warn!(%code, %message, "tokenim sync refused");
                    self.sync.in_flight = None;
                    self.sync.retry_at = Some(Instant::now() + RETRY_DELAY);
                    return Ok(());
                }
                let pos = id
                    .as_deref()
                    .and_then(|id| self.outbox.iter().position(|p| p.entry.client_msg_id == id));
                let Some(i) = pos else {
                    return self.emit(Update::Error { code, message }).await;
                };
                let p = &mut self.outbox[i];
                let retry = match code {
                    ErrorCode::RateLimited => {
                        Some(Duration::from_millis(retry_after_ms.unwrap_or(1000)))
                    }
                    ErrorCode::Unavailable => Some(RETRY_DELAY),
                    ErrorCode::Internal if p.internal_errors + 1 < MAX_INTERNAL_ERRORS => {
                        p.internal_errors += 1;
                        Some(RETRY_DELAY)
                    }
                    _ => None,
                };
                match retry {
                    Some(d) => {
                        p.sent_at = None;
                        p.not_before = Some(Instant::now() + d);
                    }
                    None => {
                        let p = self.outbox.remove(i);
                        self.dirty = true;
                        let c = self.statuses.failed(
                            &p.entry.client_msg_id,
                            &p.entry.conv_id,
                            code,
                            message,
                        );
                        self.emit(Update::Status(c)).await?;
                    }
                }
            }
            ServerFrame::Receipt {
                conv_id,
                user_id,
                read_seq,
            } => {
                if user_id != self.user_id {
                    let changes = self
                        .statuses
                        .advance(&conv_id, read_seq, MessageStatus::Read);
                    self.emit_status(changes).await?;
                }
                self.emit(Update::Receipt {
                    conv_id,
                    user_id,
                    read_seq,
                })
                .await?;
            }
            ServerFrame::Delivered {
                conv_id,
                user_id,
                seq,
            } => {
                if user_id != self.user_id {
                    let changes = self
                        .statuses
                        .advance(&conv_id, seq, MessageStatus::Delivered);
                    self.emit_status(changes).await?;
                }
            }
            ServerFrame::Typing { conv_id, user_id } => {
                self.emit(Update::Typing { conv_id, user_id }).await?
            }
            ServerFrame::Presence {
                user_id,
                online,
                last_seen,
            } => {
                self.emit(Update::Presence {
                    user_id,
                    online,
                    last_seen,
                })
                .await?
            }
            ServerFrame::ConvRemoved { conv_id } => {
                self.emit(Update::ConversationRemoved { conv_id }).await?
            }
            ServerFrame::Kicked { reason } => {
                return Err(match reason {
                    KickReason::SlowConsumer => lost("kicked as a slow consumer"),
                    r => End::Stop(StopReason::Kicked(r), None),
                });
            }
            ServerFrame::AuthOk { .. }
            | ServerFrame::Pong { .. }
            | ServerFrame::Event { .. }
            | ServerFrame::SyncResult { .. }
            | ServerFrame::ConvAdded { .. }
            | ServerFrame::Unknown => {}
        }
        Ok(())
    }
}

async fn send_frame(ws: &mut Ws, f: &ClientFrame) -> Result<(), End> {
    let text = serde_json::to_string(f).expect("client frames always serialize");
    ws.send(Message::Text(text.into())).await.map_err(lost)
}

async fn send_read(ws: &mut Ws, conv_id: String, seq: u64) -> Result<(), End> {
    let f = ClientFrame::Read(ReadFrame {
        id: None,
        conv_id,
        seq,
    });
    send_frame(ws, &f).await
}

/// Connects and authenticates; answers the socket and `heartbeat_ms`.
/// `Err(Ok(end))` is never produced here; the shape lets the caller mix in
/// commands that stop the messenger.
async fn connect(
    url: String,
    token: String,
    tls: Option<Arc<rustls::ClientConfig>>,
    timeout: Duration,
) -> Result<(Ws, u64), Result<End, Error>> {
    let attempt = async {
        let (mut ws, _) = match tls {
            Some(cfg) => {
                tokio_tungstenite::connect_async_tls_with_config(
                    url.as_str(),
                    None,
                    false,
                    Some(tokio_tungstenite::Connector::Rustls(cfg)),
                )
                .await?
            }
            None => tokio_tungstenite::connect_async(url.as_str()).await?,
        };
        let auth = serde_json::to_string(&ClientFrame::Auth(AuthFrame { token }))
            .expect("client frames always serialize");
        ws.send(Message::Text(auth.into())).await?;
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => match wire::parse(&t)? {
                    Incoming::Frame(ServerFrame::AuthOk { heartbeat_ms, .. }) => {
                        return Ok((ws, heartbeat_ms));
                    }
                    Incoming::Frame(ServerFrame::Error {
                        code,
                        message,
                        retry_after_ms,
                        ..
                    }) => {
                        return Err(Error::Api {
                            code,
                            message,
                            retry_after_ms,
                            status: None,
                        });
                    }
                    _ => continue,
                },
                Some(Ok(Message::Close(c))) => {
                    let code = c.as_ref().map(|c| u16::from(c.code));
                    if code == Some(tokenim_proto::close::UNAUTHORIZED) {
                        return Err(Error::api(ErrorCode::Unauthorized, "token refused"));
                    }
                    return Err(Error::Protocol(format!(
                        "closed before auth_ok (code {code:?})"
                    )));
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e.into()),
                None => return Err(Error::Protocol("closed before auth_ok".into())),
            }
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(r) => r.map_err(Err),
        Err(_) => Err(Err(Error::Protocol("timed out connecting".into()))),
    }
}

/// The delay before reconnect attempt `attempt` (0-based): exponential,
/// capped, half of it random.
fn backoff(cfg: &Config, attempt: u32) -> Duration {
    let exp = cfg
        .backoff_min
        .saturating_mul(1u32 << attempt.min(20))
        .min(cfg.backoff_max);
    let half = exp / 2;
    half + half.mul_f64(rand::random::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let cfg = Config {
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            ..Config::default()
        };
        for attempt in 0..30 {
            let d = backoff(&cfg, attempt);
            let exp = Duration::from_millis(100)
                .saturating_mul(1 << attempt.min(20))
                .min(Duration::from_secs(2));
            assert!(d >= exp / 2 && d <= exp, "attempt {attempt}: {d:?}");
        }
    }

    #[test]
    fn statuses_move_forward_only() {
        let mut s = Statuses::new(10);
        s.sending("a", "c");
        s.advance("c", 5, MessageStatus::Delivered);
        // Stored below the delivered mark: sent then delivered at once.
        let ch: Vec<_> = s.sent("a", "c", 4).into_iter().map(|c| c.status).collect();
        assert_eq!(ch, vec![MessageStatus::Sent, MessageStatus::Delivered]);
        s.sending("b", "c");
        s.sent("b", "c", 6);
        assert_eq!(s.get("b"), Some(MessageStatus::Sent));
        let ch = s.advance("c", 6, MessageStatus::Read);
        assert_eq!(ch.len(), 2);
        assert_eq!(s.get("a"), Some(MessageStatus::Read));
        assert!(s.advance("c", 6, MessageStatus::Delivered).is_empty());
        assert_eq!(s.get("b"), Some(MessageStatus::Read));
    }
}
