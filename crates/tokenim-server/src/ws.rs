//! The WebSocket gateway (PROTOCOL.md section 3): the auth handshake,
//! heartbeats, in-order request handling with pipelined commits, and the
//! writer that drains the connection's outbox with write coalescing.

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

use crate::app::{Actor, App, TimelineReq, now_ms};
use crate::hub::Conn;
use crate::outbox::{Close, Priority};

/// How long a new socket has to authenticate.
const AUTH_TIMEOUT: Duration = Duration::from_secs(10);
/// Most requests of one socket waiting for their commit; past it the socket
/// is not read until one finishes.
const MAX_IN_FLIGHT: usize = 256;

pub async fn upgrade(State(app): State<Arc<App>>, ws: WebSocketUpgrade) -> Response {
    if app.shutting_down.load(Ordering::Relaxed) {
        return crate::http::ApiError(Error::unavailable("shutting down")).into_response();
    }
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

async fn serve(app: Arc<App>, mut socket: WebSocket) {
    let actor = match Box::pin(authenticate(&app, &mut socket)).await {
        Ok(a) => a,
        Err(frame) => {
            if let Some(f) = frame {
                let _ = socket.send(Message::Text(f.to_json().into())).await;
            }
            let _ = socket.send(close_msg(4001, "unauthorized")).await;
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
        },
    );
    // Unregisters however this task ends (also if it were to panic), so the
    // hub never keeps a dead socket.
    let _registered = Registered {
        app: app.clone(),
        conn: conn.clone(),
    };
    app.fanout.connected(&conn).await;
    let _ = app
        .store
        .touch_device(&actor.user_id, &actor.device_id, now_ms(), false)
        .await;

    let (sink, stream) = socket.split();
    let writer = tokio::spawn(write_loop(app.clone(), conn.clone(), sink));
    read_loop(&app, &actor, &conn, stream, writer).await;

    let _ = app
        .store
        .touch_device(&actor.user_id, &actor.device_id, now_ms(), false)
        .await;
}

/// A socket's place in the hub, given back on drop.
struct Registered {
    app: Arc<App>,
    conn: Arc<Conn>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.app.fanout.disconnected(&self.conn);
    }
}

/// Reads the first frame: it must be a valid `auth`.
async fn authenticate(app: &App, socket: &mut WebSocket) -> Result<Actor, Option<ServerFrame>> {
    let unauthorized = |id, msg: &str| Some(error_frame(id, Error::unauthorized(msg)));
    let first = match tokio::time::timeout(AUTH_TIMEOUT, socket.recv()).await {
        Err(_) => return Err(unauthorized(None, "no auth frame in time")),
        Ok(None) | Ok(Some(Err(_))) => return Err(None),
        Ok(Some(Ok(m))) => m,
    };
    let Message::Text(text) = first else {
        return Err(unauthorized(None, "the first frame must be auth"));
    };
    let env: Envelope = match serde_json::from_str(&text) {
        Ok(e) => e,
        Err(_) => return Err(unauthorized(None, "the first frame must be auth")),
    };
    if env.ty != "auth" {
        return Err(unauthorized(env.id, "the first frame must be auth"));
    }
    let auth: AuthFrame = match serde_json::from_str(&text) {
        Ok(a) => a,
        Err(_) => return Err(unauthorized(env.id, "auth needs a token")),
    };
    app.authenticate(&auth.token)
        .await
        .map_err(|e| Some(error_frame(env.id, e)))
}

/// How long a closing socket may take to take its last frames.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

async fn write_loop(
    app: Arc<App>,
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
                        conn.outbox.close(Close::Code(1006, "write failed"));
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
                vec![Message::Text(f.into()), close_msg(4002, "kicked")]
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

type Reply = Pin<Box<dyn Future<Output = ServerFrame> + Send>>;

async fn read_loop(
    app: &Arc<App>,
    actor: &Actor,
    conn: &Arc<Conn>,
    mut stream: futures_util::stream::SplitStream<WebSocket>,
    mut writer: tokio::task::JoinHandle<()>,
) {
    let silence = Duration::from_millis(app.limits.heartbeat_ms * 2);
    let mut deadline = Instant::now() + silence;
    let mut in_flight: FuturesOrdered<Reply> = FuturesOrdered::new();
    let mut writer_done = false;
    loop {
        tokio::select! {
            biased;
            _ = &mut writer, if !writer_done => {
                writer_done = true;
                break;
            }
            Some(reply) = in_flight.next(), if !in_flight.is_empty() => {
                conn.send(Priority::Control, &reply);
            }
            msg = stream.next(), if in_flight.len() < MAX_IN_FLIGHT => {
                deadline = Instant::now() + silence;
                match msg {
                    None => break,
                    Some(Err(e)) => {
                        // tungstenite's capacity error: the message or a frame
                        // is over max_frame_bytes.
                        let text = e.to_string();
                        let too_big = text.contains("too long") || text.contains("Space limit");
                        if too_big {
                            conn.outbox.close(Close::Code(1009, "frame too large"));
                        } else {
                            conn.outbox.close(Close::Code(1002, "protocol error"));
                        }
                        break;
                    }
                    Some(Ok(Message::Text(t))) => {
                        app.metrics.ws_frames_in.fetch_add(1, Ordering::Relaxed);
                        // Boxed: a request's state lives only while it is handled,
                        // not in every idle socket's task.
                        if let Some(r) = Box::pin(handle(app, actor, conn, &t)).await {
                            in_flight.push_back(r);
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
                conn.outbox.close(Close::Code(4003, "heartbeat timeout"));
                break;
            }
        }
    }
    // Answer what is still committing, so a clean close loses no ack.
    while let Some(reply) = in_flight.next().await {
        conn.send(Priority::Control, &reply);
    }
    conn.outbox.close(Close::Code(1000, "bye"));
    if !writer_done {
        let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
    }
}

fn parse<T: DeserializeOwned>(text: &str) -> Result<T, Error> {
    serde_json::from_str(text).map_err(|e| Error::bad_request(format!("bad frame: {e}")))
}

/// Handles one frame in arrival order. Requests that wait for a commit are
/// returned as futures, which the caller answers in order as they finish.
async fn handle(app: &Arc<App>, actor: &Actor, conn: &Arc<Conn>, text: &str) -> Option<Reply> {
    let env: Envelope = match serde_json::from_str(text) {
        Ok(e) => e,
        Err(e) => {
            let err = Error::bad_request(format!("bad frame: {e}"));
            conn.send(Priority::Control, &error_frame(None, err));
            return None;
        }
    };
    let id = env.id.clone();
    if let Some(i) = &id
        && !(i.is_string() || i.is_number())
    {
        let err = Error::bad_request("id must be a string or a number");
        conn.send(Priority::Control, &error_frame(None, err));
        return None;
    }
    match handle_typed(app, actor, conn, &env.ty, text).await {
        Ok(r) => r,
        Err(e) => {
            app.metrics.errors_sent.fetch_add(1, Ordering::Relaxed);
            conn.send(Priority::Control, &error_frame(id, e));
            None
        }
    }
}

async fn handle_typed(
    app: &Arc<App>,
    actor: &Actor,
    conn: &Arc<Conn>,
    ty: &str,
    text: &str,
) -> Result<Option<Reply>, Error> {
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
            match app.ack(actor, &f.conv_id, f.seq).await {
                Err(e) if e.code == ErrorCode::NotFound => {} // acks have no reply
                r => r?,
            }
        }
        "sync" => {
            let f: SyncFrame = parse(text)?;
            let r = app.sync(actor, &f).await?;
            conn.send(Priority::Control, &r);
        }
        "read" => {
            let f: ReadFrame = parse(text)?;
            app.read(actor, &f.conv_id, f.seq).await?;
        }
        "typing" => {
            let f: TypingFrame = parse(text)?;
            app.typing(actor, &f.conv_id).await?;
        }
        "presence_sub" => {
            let f: PresenceSubFrame = parse(text)?;
            let allowed = app.presence_allowed(actor, &f.user_ids).await?;
            app.hub.set_subs(conn, allowed.clone());
            for p in app.presences(&allowed).await {
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
    app: &Arc<App>,
    actor: &Actor,
    conn: &Arc<Conn>,
    id: Option<RequestId>,
    conv_id: String,
    cmid: String,
    req: TimelineReq,
) -> Result<Option<Reply>, Error> {
    // Until its event is pushed (or the request fails), this socket is the
    // event's sender: it is not pushed its own event.
    conn.sending.lock().insert(cmid.clone());
    let p = match app.prepare(actor, &conv_id, &cmid, req).await {
        Ok(p) => p,
        Err(e) => {
            conn.sending.lock().remove(&cmid);
            return Err(e);
        }
    };
    let app = app.clone();
    let conn = conn.clone();
    Ok(Some(Box::pin(async move {
        let done = app.complete(&conv_id, &cmid, p).await;
        if !done.as_ref().is_ok_and(|a| a.created) {
            // A repeat or a failure: no event of this request comes.
            conn.sending.lock().remove(&cmid);
        }
        match done {
            Ok(a) => ServerFrame::SendAck(SendAck {
                id,
                client_msg_id: a.client_msg_id,
                conv_id: a.conv_id,
                msg_id: a.msg_id,
                seq: a.seq,
                ts: a.ts,
            }),
            Err(e) => error_frame(id, e),
        }
    })))
}
