//! The WebSocket gateway (PROTOCOL.md section 3): the auth handshake,
//! heartbeats, in-order request handling with pipelined commits, and the
//! writer that drains the connection's outbox with write coalescing.
//!
//! Rule 8 (a socket's requests are handled in arrival order) across request
//! types: writes are queued in order and answered in order while later
//! frames are read; a frame that reads a conversation the socket is still
//! writing to (an edit, recall, read or ack of it, or any sync) first waits
//! for those writes to commit, so its facts include them. A send or edit
//! waiting for `message.before_send` webhooks is handled before the next
//! frame is read (its write is queued only after the hooks answered), so
//! a later send never commits before it; the acks of earlier writes still
//! go out meanwhile.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use futures_util::stream::FuturesOrdered;
use futures_util::{SinkExt, StreamExt};
use serde::de::DeserializeOwned;
use tokenim_core::Error;
use tokenim_proto::*;
use tokio::time::Instant;

use std::collections::HashMap;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use serde_json::Value;
use tokenim_core::clock::now_ms;
use tokenim_proto::close;

use crate::api::error::ApiError;
use crate::delivery::hub::Conn;
use crate::delivery::outbox::{Close, Priority};
use crate::services::Actor;
use crate::services::timeline::TimelineReq;
use crate::state::AppState;

/// How long a new socket has to authenticate.
const AUTH_TIMEOUT: Duration = Duration::from_secs(10);
/// Most requests of one socket waiting for their commit; past it the socket
/// is not read until one finishes.
const MAX_IN_FLIGHT: usize = 256;

pub async fn upgrade(
    State(app): State<Arc<AppState>>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if app.shutting_down.load(Ordering::Relaxed) {
        return ApiError(Error::unavailable("shutting down")).into_response();
    }
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => {
            // Every /v1 body is JSON (section 2), this one too.
            let status = rejection.status();
            let mut r = ApiError(Error::bad_request(
                "this endpoint takes a WebSocket upgrade (GET with Upgrade: websocket)",
            ))
            .into_response();
            *r.status_mut() = status;
            return r;
        }
    };
    let max = app.limits.max_frame_bytes as usize;
    ws.max_message_size(max)
        .max_frame_size(max)
        .read_buffer_size(512)
        // Frames queue in the write buffer and go out in one write per
        // flush (a batch of frames); an idle socket's buffer stays tiny.
        .write_buffer_size(32 * 1024)
        .max_write_buffer_size(64 << 20)
        .on_upgrade(move |socket| serve(app, socket))
}

fn close_msg(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    }))
}

fn error_frame(id: Option<RequestId>, e: Error) -> ServerFrame {
    ServerFrame::Error {
        id,
        code: e.code,
        message: e.message,
        retry_after_ms: e.retry_after_ms,
    }
}

async fn serve(app: Arc<AppState>, mut socket: WebSocket) {
    let actor = match Box::pin(authenticate(&app, &mut socket)).await {
        Ok(a) => a,
        Err(frame) => {
            if let Some(f) = frame {
                let _ = socket.send(Message::Text(f.to_json().into())).await;
            }
            let _ = socket
                .send(close_msg(close::UNAUTHORIZED, "unauthorized"))
                .await;
            return;
        }
    };
    let conn = app.hub.new_conn(&actor.user_id, &actor.device_id);
    let actor = Actor {
        conn: conn.id,
        ..actor
    };
    app.metrics.ws_accepted.fetch_add(1, Ordering::Relaxed);
    conn.send(
        Priority::Control,
        &ServerFrame::AuthOk {
            user_id: actor.user_id.clone(),
            device_id: actor.device_id.clone(),
            heartbeat_ms: app.limits.heartbeat_ms,
            server_time: now_ms(),
            max_content_bytes: app.limits.max_content_bytes,
        },
    );
    // Unregisters however this task ends (also if it were to panic), so the
    // hub never keeps a dead socket.
    let _registered = Registered {
        app: app.clone(),
        conn: conn.clone(),
    };
    app.fanout.connected(&conn).await;
    app.devices.touch(&actor).await;

    let (sink, stream) = socket.split();
    let writer = tokio::spawn(write_loop(app.clone(), conn.clone(), sink));
    read_loop(&app, &actor, &conn, stream, writer).await;
    app.devices.touch(&actor).await;
}

/// A socket's place in the hub, given back on drop.
struct Registered {
    app: Arc<AppState>,
    conn: Arc<Conn>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.app.fanout.disconnected(&self.conn);
    }
}

/// Reads the first frame: it must be a valid `auth`.
async fn authenticate(
    app: &AppState,
    socket: &mut WebSocket,
) -> Result<Actor, Option<ServerFrame>> {
    let unauthorized = |id, msg: &str| Some(error_frame(id, Error::unauthorized(msg)));
    let first = match tokio::time::timeout(AUTH_TIMEOUT, socket.recv()).await {
        Err(_) => return Err(unauthorized(None, "no auth frame in time")),
        Ok(None) | Ok(Some(Err(_))) => return Err(None),
        Ok(Some(Ok(m))) => m,
    };
    let Message::Text(text) = first else {
        return Err(unauthorized(None, "the first frame must be auth"));
    };
    let Ok(peek) = serde_json::from_str::<Peek>(&text) else {
        return Err(unauthorized(None, "the first frame must be auth"));
    };
    let id = peek.id.filter(|i| i.is_string() || i.is_number());
    if peek.ty.as_ref().and_then(Value::as_str) != Some("auth") {
        return Err(unauthorized(id, "the first frame must be auth"));
    }
    let auth: AuthFrame = match serde_json::from_str(&text) {
        Ok(a) => a,
        Err(_) => return Err(unauthorized(id, "auth needs a token")),
    };
    app.accounts
        .authenticate(&auth.token)
        .await
        .map_err(|e| Some(error_frame(id, e)))
}

/// How long a closing socket may take to take its last frames.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

async fn write_loop(
    app: Arc<AppState>,
    conn: Arc<Conn>,
    mut sink: futures_util::stream::SplitSink<WebSocket, Message>,
) {
    loop {
        let d = conn.outbox.drain().await;
        let mut close = d.close;
        if close.is_none() {
            // Write the batch (several frames, one flush), unless the
            // connection is told to close meanwhile: a client that does not
            // read must not hold its writer forever.
            let write = async {
                for f in d.frames {
                    sink.feed(Message::Text(f)).await?;
                }
                sink.flush().await
            };
            tokio::select! {
                r = write => {
                    if r.is_err() {
                        conn.outbox.close(Close::Code(close::ABNORMAL, "write failed"));
                        return;
                    }
                    continue;
                }
                _ = conn.outbox.wait_closing() => {
                    close = conn.outbox.drain().await.close;
                }
            }
        } else {
            for f in d.frames {
                if sink.feed(Message::Text(f)).await.is_err() {
                    return;
                }
            }
        }
        let Some(c) = close else { continue };
        let last = match c {
            Close::Kick(reason) => {
                if reason == KickReason::SlowConsumer {
                    app.metrics
                        .slow_consumer_kicks
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(user_id = %conn.user_id, device_id = %conn.device_id, "slow consumer kicked");
                }
                let f = ServerFrame::Kicked { reason }.to_json();
                vec![Message::Text(f.into()), close_msg(close::KICKED, "kicked")]
            }
            Close::Code(code, reason) => vec![close_msg(code, reason)],
        };
        let _ = tokio::time::timeout(CLOSE_GRACE, async {
            for m in last {
                sink.feed(m).await?;
            }
            sink.flush().await?;
            sink.close().await
        })
        .await;
        return;
    }
}

/// A request waiting for its commit: the conversation it writes to and,
/// once committed, its answer.
type Reply = Pin<Box<dyn Future<Output = (String, ServerFrame)> + Send>>;

/// The socket's requests waiting for commits, answered in arrival order,
/// with how many write to each conversation.
#[derive(Default)]
struct InFlight {
    replies: FuturesOrdered<Reply>,
    writing: HashMap<String, usize>,
}

impl InFlight {
    fn push(&mut self, conv_id: String, r: Reply) {
        *self.writing.entry(conv_id).or_insert(0) += 1;
        self.replies.push_back(r);
    }

    fn done(&mut self, conv_id: &str) {
        if let Some(n) = self.writing.get_mut(conv_id) {
            *n -= 1;
            if *n == 0 {
                self.writing.remove(conv_id);
            }
        }
    }

    /// Whether a frame must wait for this socket's writes before it is
    /// handled: it reads a conversation being written to, or syncs.
    fn must_wait(&self, peek: &Peek) -> bool {
        if self.replies.is_empty() {
            return false;
        }
        match peek.ty.as_ref().and_then(Value::as_str) {
            Some("sync") => true,
            Some("edit" | "recall" | "read" | "ack") => peek
                .conv_id
                .as_ref()
                .and_then(Value::as_str)
                .is_some_and(|c| self.writing.contains_key(c)),
            _ => false,
        }
    }

    /// Awaits `fut` (a frame being handled, which may wait for
    /// before_send webhooks) while answering the earlier requests as their
    /// commits finish: a hook holds back this socket's later frames (rule
    /// 8), never the acks of its earlier ones.
    async fn answering<T>(&mut self, conn: &Conn, fut: impl Future<Output = T>) -> T {
        tokio::pin!(fut);
        loop {
            tokio::select! {
                biased;
                r = &mut fut => return r,
                Some((conv_id, reply)) = self.replies.next(), if !self.replies.is_empty() => {
                    self.done(&conv_id);
                    conn.send(Priority::Control, &reply);
                }
            }
        }
    }

    /// Answers every request waiting, in order.
    async fn drain(&mut self, conn: &Conn) {
        while let Some((conv_id, reply)) = self.replies.next().await {
            self.done(&conv_id);
            conn.send(Priority::Control, &reply);
        }
    }
}

async fn read_loop(
    app: &Arc<AppState>,
    actor: &Actor,
    conn: &Arc<Conn>,
    mut stream: futures_util::stream::SplitStream<WebSocket>,
    mut writer: tokio::task::JoinHandle<()>,
) {
    let silence = Duration::from_millis(app.limits.heartbeat_ms * 2);
    let mut deadline = Instant::now() + silence;
    let mut in_flight = InFlight::default();
    let mut writer_done = false;
    loop {
        tokio::select! {
            biased;
            _ = &mut writer, if !writer_done => {
                writer_done = true;
                break;
            }
            Some((conv_id, reply)) = in_flight.replies.next(), if !in_flight.replies.is_empty() => {
                in_flight.done(&conv_id);
                conn.send(Priority::Control, &reply);
            }
            msg = stream.next(), if in_flight.replies.len() < MAX_IN_FLIGHT => {
                deadline = Instant::now() + silence;
                match msg {
                    None => break,
                    Some(Err(e)) => {
                        // tungstenite's capacity error: the message or a frame
                        // is over max_frame_bytes.
                        let text = e.to_string();
                        let too_big = text.contains("too long") || text.contains("Space limit");
                        if too_big {
                            conn.outbox.close(Close::Code(close::TOO_BIG, "frame too large"));
                        } else {
                            conn.outbox.close(Close::Code(close::PROTOCOL_ERROR, "protocol error"));
                        }
                        break;
                    }
                    Some(Ok(Message::Text(t))) => {
                        app.metrics.ws_frames_in.fetch_add(1, Ordering::Relaxed);
                        let Some(peek) = envelope(app, conn, &t) else { continue };
                        if in_flight.must_wait(&peek) {
                            in_flight.drain(conn).await;
                        }
                        // Boxed: a request's state lives only while it is handled,
                        // not in every idle socket's task.
                        let handling = Box::pin(handle(app, actor, conn, peek, &t));
                        let handled = if in_flight.replies.is_empty() || !app.timeline.has_hooks() {
                            handling.await
                        } else {
                            in_flight.answering(conn, handling).await
                        };
                        if let Some((conv_id, r)) = handled {
                            in_flight.push(conv_id, r);
                        }
                    }
                    Some(Ok(Message::Binary(_))) => {
                        conn.send(Priority::Control, &error_frame(None, Error::bad_request("frames must be JSON text")));
                    }
                    Some(Ok(Message::Close(_))) => break,
                    Some(Ok(_)) => {} // ping/pong: a sign of life
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                conn.outbox.close(Close::Code(close::HEARTBEAT_TIMEOUT, "heartbeat timeout"));
                break;
            }
        }
    }
    // Answer what is still committing, so a clean close loses no ack.
    in_flight.drain(conn).await;
    conn.outbox.close(Close::Code(close::NORMAL, "bye"));
    if !writer_done {
        let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
    }
}

fn parse<T: DeserializeOwned>(text: &str) -> Result<T, Error> {
    serde_json::from_str(text).map_err(|e| Error::bad_request(format!("bad frame: {e}")))
}

/// What is read of a frame before its type is known, leniently, so that an
/// error can echo the frame's `id` whatever else is wrong with it (rule 21).
#[derive(serde::Deserialize)]
struct Peek {
    #[serde(default)]
    id: Option<Value>,
    #[serde(default, rename = "type")]
    ty: Option<Value>,
    #[serde(default)]
    conv_id: Option<Value>,
}

/// Reads a frame's envelope; answers the error itself (with the frame's
/// `id` where it has a usable one) and gives `None` when the frame is not
/// a JSON object with a valid `id`.
fn envelope(app: &AppState, conn: &Conn, text: &str) -> Option<Peek> {
    let refuse = |id: Option<Value>, e: Error| {
        app.metrics.errors_sent.fetch_add(1, Ordering::Relaxed);
        conn.send(Priority::Control, &error_frame(id, e));
    };
    let peek: Peek = match serde_json::from_str(text) {
        Ok(p) => p,
        Err(e) => {
            refuse(None, Error::bad_request(format!("bad frame: {e}")));
            return None;
        }
    };
    if let Some(i) = &peek.id
        && !(i.is_string() || i.is_number())
    {
        refuse(None, Error::bad_request("id must be a string or a number"));
        return None;
    }
    Some(peek)
}

/// Handles one frame in arrival order. Requests that wait for a commit are
/// returned as futures (with the conversation they write to), which the
/// caller answers in order as they finish.
async fn handle(
    app: &Arc<AppState>,
    actor: &Actor,
    conn: &Arc<Conn>,
    peek: Peek,
    text: &str,
) -> Option<(String, Reply)> {
    let id = peek.id;
    let r = match peek.ty.as_ref().map(|t| t.as_str()) {
        Some(Some(ty)) => handle_typed(app, actor, conn, ty, text).await,
        Some(None) => Err(Error::bad_request("type must be a string")),
        None => Err(Error::bad_request("a frame needs a type")),
    };
    match r {
        Ok(r) => r,
        Err(e) => {
            app.metrics.errors_sent.fetch_add(1, Ordering::Relaxed);
            conn.send(Priority::Control, &error_frame(id, e));
            None
        }
    }
}

async fn handle_typed(
    app: &Arc<AppState>,
    actor: &Actor,
    conn: &Arc<Conn>,
    ty: &str,
    text: &str,
) -> Result<Option<(String, Reply)>, Error> {
    match ty {
        "ping" => {
            let f: PingFrame = parse(text)?;
            conn.send(Priority::Control, &ServerFrame::Pong { id: f.id });
        }
        "send" => {
            let f: SendFrame = parse(text)?;
            let req = TimelineReq::Send(f.content);
            return timeline(app, actor, conn, f.id, f.conv_id, f.client_msg_id, req).await;
        }
        "recall" => {
            let f: RecallFrame = parse(text)?;
            let req = TimelineReq::Recall(f.target_seq);
            return timeline(app, actor, conn, f.id, f.conv_id, f.client_msg_id, req).await;
        }
        "edit" => {
            let f: EditFrame = parse(text)?;
            let req = TimelineReq::Edit(f.target_seq, f.content);
            return timeline(app, actor, conn, f.id, f.conv_id, f.client_msg_id, req).await;
        }
        "ack" => {
            let f: AckFrame = parse(text)?;
            tokenim_core::validate::opaque_id("conv_id", &f.conv_id)?;
            match app.marks.ack(actor, &f.conv_id, f.seq).await {
                Err(e) if e.code == ErrorCode::NotFound => {} // acks have no reply
                r => r?,
            }
        }
        "sync" => {
            let f: SyncFrame = parse(text)?;
            let r = app.sync.sync(actor, &f).await?;
            conn.send(Priority::Control, &r);
        }
        "read" => {
            let f: ReadFrame = parse(text)?;
            app.marks.read(actor, &f.conv_id, f.seq).await?;
        }
        "typing" => {
            let f: TypingFrame = parse(text)?;
            app.presence.typing(actor, &f.conv_id).await?;
        }
        "presence_sub" => {
            let f: PresenceSubFrame = parse(text)?;
            let allowed = app.presence.allowed(actor, &f.user_ids).await?;
            app.hub.set_subs(conn, allowed.clone());
            for p in app.presence.frames(&allowed).await {
                conn.send(Priority::Control, &p);
            }
        }
        "auth" => return Err(Error::bad_request("already authenticated")),
        other => {
            let shown: String = other.chars().take(32).collect();
            return Err(Error::bad_request(format!("unknown frame type {shown:?}")));
        }
    }
    Ok(None)
}

async fn timeline(
    app: &Arc<AppState>,
    actor: &Actor,
    conn: &Arc<Conn>,
    id: Option<RequestId>,
    conv_id: String,
    cmid: String,
    req: TimelineReq,
) -> Result<Option<(String, Reply)>, Error> {
    // Until its event is pushed (or the request fails), this socket is the
    // event's sender: it is not pushed its own event.
    conn.sending.lock().insert(cmid.clone());
    let p = match app.timeline.prepare(actor, &conv_id, &cmid, req).await {
        Ok(p) => p,
        Err(e) => {
            conn.sending.lock().remove(&cmid);
            return Err(e);
        }
    };
    let app = app.clone();
    let conn = conn.clone();
    let writes_to = conv_id.clone();
    let reply: Reply = Box::pin(async move {
        let done = app.timeline.complete(&conv_id, &cmid, p).await;
        if !done.as_ref().is_ok_and(|a| a.created) {
            // A repeat or a failure: no event of this request comes.
            conn.sending.lock().remove(&cmid);
        }
        let frame = match done {
            Ok(a) => ServerFrame::SendAck(SendAck {
                id,
                client_msg_id: a.client_msg_id,
                conv_id: a.conv_id,
                msg_id: a.msg_id,
                seq: a.seq,
                ts: a.ts,
                content: a.content,
            }),
            Err(e) => error_frame(id, e),
        };
        (conv_id, frame)
    });
    Ok(Some((writes_to, reply)))
}
