//! The real-time connection as the application sees it: a handle to send
//! with ([`Messenger`]) and one stream of updates ([`Updates`]).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokenim_proto::{Conversation, ErrorCode, Event, KickReason};
use tokio::sync::{mpsc, oneshot};

use crate::actor::{Actor, Command};
use crate::store::{OutboxEntry, Request, StateStore};
use crate::{Error, MessageContent, Result, Session};

/// Tuning of a [`Messenger`]. The defaults suit an interactive client.
#[derive(Debug, Clone)]
pub struct Config {
    /// The WebSocket URL; by default derived from the session's server URL
    /// (`ws://HOST/v1/ws` or `wss://HOST/v1/ws`).
    pub ws_url: Option<String>,
    /// How long a request may wait for its `send_ack` on a live connection
    /// before it is sent again with the same `client_msg_id` (default 10 s).
    /// Every unacknowledged request is also sent again after each reconnect.
    pub resend_after: Duration,
    /// Most requests sent and not yet acknowledged at once (default 32);
    /// the rest wait in the outbox, in order. Keeps a long outbox flushed
    /// after a reconnect from tripping the server's send rate limit.
    pub max_in_flight: usize,
    /// How often delivered events are acknowledged, at most (default 250 ms).
    pub ack_interval: Duration,
    /// Acknowledge at once when this many events were delivered since the
    /// last acknowledgement (default 200).
    pub ack_batch: usize,
    /// The first reconnect delay (default 250 ms); it doubles on each failed
    /// attempt, with jitter (half of it is random), up to `backoff_max`.
    pub backoff_min: Duration,
    /// The longest reconnect delay (default 30 s).
    pub backoff_max: Duration,
    /// How long connecting and authenticating may take (default 10 s).
    pub connect_timeout: Duration,
    /// How long a gap may wait to be filled by the socket itself before a
    /// sync is asked for (default 500 ms). A gap behind one of the
    /// messenger's own unacknowledged sends waits for its `send_ack`.
    pub gap_grace: Duration,
    /// Events per conversation asked for in one `sync` page (default 200,
    /// the server clamps it to 500).
    pub sync_limit: u64,
    /// Capacity of the [`Updates`] queue (default 1024). When it is full
    /// the messenger waits for the application, reads nothing from the
    /// socket meanwhile, and may be disconnected by the server; it then
    /// reconnects and syncs, losing nothing.
    pub updates_capacity: usize,
    /// How many message statuses are remembered for
    /// [`Messenger::status`] (default 10 000, oldest forgotten first).
    pub status_capacity: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            ws_url: None,
            resend_after: Duration::from_secs(10),
            max_in_flight: 32,
            ack_interval: Duration::from_millis(250),
            ack_batch: 200,
            backoff_min: Duration::from_millis(250),
            backoff_max: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            gap_grace: Duration::from_millis(500),
            sync_limit: 200,
            updates_capacity: 1024,
            status_capacity: 10_000,
        }
    }
}

/// Where a message the application sent stands (PROTOCOL.md 3.4). Only
/// moves forward: `Sending` < `Sent` < `Delivered` < `Read`; `Failed` is
/// final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MessageStatus {
    /// Queued in the outbox, no `send_ack` yet.
    Sending,
    /// Stored by the server (`send_ack`): it has its `seq`.
    Sent,
    /// A recipient's device acknowledged it.
    Delivered,
    /// A recipient read it.
    Read,
    /// The server refused it for good (not a member, muted, too large,
    /// ...); it is no longer in the outbox.
    Failed,
}

impl MessageStatus {
    /// The status in lower case, as the protocol names it.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageStatus::Sending => "sending",
            MessageStatus::Sent => "sent",
            MessageStatus::Delivered => "delivered",
            MessageStatus::Read => "read",
            MessageStatus::Failed => "failed",
        }
    }
}

impl std::fmt::Display for MessageStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A message's status changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusChange {
    /// The conversation of the message.
    pub conv_id: String,
    /// The application's ID of the request.
    pub client_msg_id: String,
    /// The new status.
    pub status: MessageStatus,
    /// The event's seq, once the server stored it.
    pub seq: Option<u64>,
    /// Why it failed, for `Failed`.
    pub error: Option<(ErrorCode, String)>,
}

/// Why a messenger stopped for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// [`Messenger::close`] was called, every handle was dropped, or the
    /// [`Updates`] were dropped.
    Closed,
    /// The server kicked the device (`replaced`, `logged_out`, `revoked`,
    /// `deactivated`).
    Kicked(KickReason),
    /// The token was refused: log in again.
    Unauthorized,
    /// The state store failed; nothing more can be kept durably.
    Store(String),
}

/// What the messenger tells the application, in order.
///
/// Per conversation, [`Update::Event`]s come in `seq` order, each exactly
/// once, with no gap from the conversation's starting point on: the
/// messenger drops what it already delivered, holds back what comes early,
/// and syncs to fetch what is missing. The application's own messages sent
/// through this messenger are in the stream too, at their place.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Update {
    /// The socket is authenticated; a sync follows.
    Connected {
        /// The server's heartbeat interval.
        heartbeat_ms: u64,
    },
    /// A sync finished (`has_more: false`): every event up to now was
    /// delivered.
    Synced,
    /// The socket was lost; the messenger reconnects by itself.
    Disconnected {
        /// What happened.
        reason: String,
        /// When the next attempt is.
        retry_in: Duration,
    },
    /// The next event of a conversation.
    Event(Event),
    /// A message's status changed.
    Status(StatusChange),
    /// A user's read marker moved (another member, or this user on another
    /// device).
    Receipt {
        /// The conversation.
        conv_id: String,
        /// Whose marker it is.
        user_id: String,
        /// The new read marker.
        read_seq: u64,
    },
    /// A member is typing.
    Typing {
        /// The conversation.
        conv_id: String,
        /// Who.
        user_id: String,
    },
    /// A subscribed user's presence.
    Presence {
        /// Who.
        user_id: String,
        /// Whether any device of theirs is connected.
        online: bool,
        /// When they were last seen (ms since the epoch).
        last_seen: i64,
    },
    /// The user was added to a conversation.
    ConversationAdded(Box<Conversation>),
    /// The user left or was removed from a conversation.
    ConversationRemoved {
        /// The conversation.
        conv_id: String,
    },
    /// The server refused a request that has no message status (`read`,
    /// `typing`, `presence_sub`).
    Error {
        /// The protocol error code.
        code: ErrorCode,
        /// The server's message.
        message: String,
    },
    /// The messenger stopped; this is the last update.
    Stopped(StopReason),
}

/// The stream of [`Update`]s of one messenger. Also a
/// [`futures_util::Stream`].
#[derive(Debug)]
pub struct Updates {
    rx: mpsc::Receiver<Update>,
}

impl Updates {
    /// The next update; `None` once the messenger has stopped and every
    /// update was read.
    pub async fn recv(&mut self) -> Option<Update> {
        self.rx.recv().await
    }

    /// The next update if one is ready.
    pub fn try_recv(&mut self) -> Option<Update> {
        self.rx.try_recv().ok()
    }
}

impl futures_util::Stream for Updates {
    type Item = Update;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Update>> {
        self.rx.poll_recv(cx)
    }
}

/// A fresh `client_msg_id`: 32 random hex digits.
pub fn new_client_msg_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// The application's handle on the real-time connection. Cheap to clone;
/// the connection stops when [`close`](Self::close) is called or every
/// handle is dropped.
///
/// It keeps a local outbox: a request is written to the [`StateStore`]
/// before [`send`](Self::send) returns, then sent, and sent again with the
/// same `client_msg_id` after `resend_after` or a reconnect until the server
/// acknowledges it (exactly once in the timeline: the server deduplicates).
/// It reconnects with exponential backoff and jitter, syncs from its own
/// cursors after each reconnect, acknowledges delivered events in batches,
/// and sends heartbeats.
///
/// ```no_run
/// # async fn demo(session: tokenim_client::Session) -> tokenim_client::Result<()> {
/// use std::sync::Arc;
/// use tokenim_client::{Config, FileStore, Messenger, Update};
///
/// let store = Arc::new(FileStore::new("alice-laptop.json"));
/// let (messenger, mut updates) = Messenger::start(&session, store, Config::default()).await?;
/// let conv = session.create_direct("u_bob").await?.conv_id;
/// messenger.send_text(&conv, "hello").await?;
/// while let Some(u) = updates.recv().await {
///     match u {
///         Update::Event(e) => println!("{} #{}", e.conv_id, e.seq),
///         Update::Status(s) => println!("{} is {}", s.client_msg_id, s.status),
///         _ => {}
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Messenger {
    tx: mpsc::Sender<Command>,
    user_id: Arc<str>,
    device_id: Arc<str>,
}

impl Messenger {
    /// Loads the state from `store` and starts connecting in the
    /// background. Fails only when the state cannot be read or belongs to
    /// another user or device; connection problems are retried and reported
    /// as [`Update::Disconnected`].
    pub async fn start(
        session: &Session,
        store: Arc<dyn StateStore>,
        config: Config,
    ) -> Result<(Messenger, Updates)> {
        let s = store.clone();
        let state = tokio::task::spawn_blocking(move || s.load())
            .await
            .map_err(|e| Error::Store(e.to_string()))??;
        for (what, have, want) in [
            ("user", &state.user_id, session.user_id()),
            ("device", &state.device_id, session.device_id()),
        ] {
            if let Some(h) = have
                && h != want
            {
                return Err(Error::Store(format!(
                    "the state belongs to {what} {h:?}, not {want:?}"
                )));
            }
        }
        let (tx, cmd_rx) = mpsc::channel(256);
        let (up_tx, rx) = mpsc::channel(config.updates_capacity.max(1));
        let actor = Actor::new(session, store, config, state, cmd_rx, up_tx);
        tokio::spawn(actor.run());
        Ok((
            Messenger {
                tx,
                user_id: session.user_id().into(),
                device_id: session.device_id().into(),
            },
            Updates { rx },
        ))
    }

    /// The logged-in user's ID.
    pub fn user_id(&self) -> &str {
        &self.user_id
    }

    /// The device's ID.
    pub fn device_id(&self) -> &str {
        &self.device_id
    }

    async fn call<T>(&self, f: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(f(reply)).await.map_err(|_| Error::Stopped)?;
        rx.await.map_err(|_| Error::Stopped)
    }

    async fn enqueue(&self, conv_id: &str, client_msg_id: &str, request: Request) -> Result<()> {
        tokenim_core::validate::opaque_id("conv_id", conv_id)?;
        tokenim_core::validate::client_msg_id(client_msg_id)?;
        if let Request::Send { content } | Request::Edit { content, .. } = &request {
            tokenim_core::validate::content(content, u64::MAX)?;
        }
        let entry = OutboxEntry {
            client_msg_id: client_msg_id.to_owned(),
            conv_id: conv_id.to_owned(),
            request,
            created_at: now_ms(),
        };
        self.call(|reply| Command::Enqueue { entry, reply }).await?
    }

    /// Queues a message with `content` (a [`MessageContent`], text, or a
    /// JSON object with a string `type`) and answers its new
    /// `client_msg_id` once the outbox holds it durably. Progress comes as
    /// [`Update::Status`].
    pub async fn send(&self, conv_id: &str, content: impl Into<MessageContent>) -> Result<String> {
        let id = new_client_msg_id();
        let content = content.into().to_value();
        self.enqueue(conv_id, &id, Request::Send { content })
            .await?;
        Ok(id)
    }

    /// Queues `{"type": "text", "text": text}`; see [`send`](Self::send).
    pub async fn send_text(&self, conv_id: &str, text: &str) -> Result<String> {
        self.send(conv_id, MessageContent::text(text)).await
    }

    /// Like [`send`](Self::send) with the application's own
    /// `client_msg_id` (1-64 of `[A-Za-z0-9_.:-]`, unique per user).
    pub async fn send_with_id(
        &self,
        conv_id: &str,
        client_msg_id: &str,
        content: impl Into<MessageContent>,
    ) -> Result<()> {
        let content = content.into().to_value();
        self.enqueue(conv_id, client_msg_id, Request::Send { content })
            .await
    }

    /// Queues a recall of the message at `target_seq`; answers the
    /// request's `client_msg_id`.
    pub async fn recall(&self, conv_id: &str, target_seq: u64) -> Result<String> {
        let id = new_client_msg_id();
        self.enqueue(conv_id, &id, Request::Recall { target_seq })
            .await?;
        Ok(id)
    }

    /// Queues an edit of the message at `target_seq`; answers the request's
    /// `client_msg_id`.
    pub async fn edit(
        &self,
        conv_id: &str,
        target_seq: u64,
        content: impl Into<MessageContent>,
    ) -> Result<String> {
        let id = new_client_msg_id();
        let content = content.into().to_value();
        self.enqueue(
            conv_id,
            &id,
            Request::Edit {
                target_seq,
                content,
            },
        )
        .await?;
        Ok(id)
    }

    /// Moves the user's read marker in `conv_id` to `seq` (sent now, or on
    /// the next connection).
    pub async fn read(&self, conv_id: &str, seq: u64) -> Result<()> {
        self.tx
            .send(Command::Read {
                conv_id: conv_id.to_owned(),
                seq,
            })
            .await
            .map_err(|_| Error::Stopped)
    }

    /// Tells the other members the user is typing (dropped when offline).
    pub async fn typing(&self, conv_id: &str) -> Result<()> {
        self.tx
            .send(Command::Typing {
                conv_id: conv_id.to_owned(),
            })
            .await
            .map_err(|_| Error::Stopped)
    }

    /// Subscribes to the presence of `user_ids` (contacts or co-members),
    /// replacing the previous subscription, also after reconnects.
    pub async fn subscribe_presence(&self, user_ids: Vec<String>) -> Result<()> {
        self.tx
            .send(Command::Presence { user_ids })
            .await
            .map_err(|_| Error::Stopped)
    }

    /// The status of a message sent through this messenger (or left in the
    /// outbox by a previous run), if remembered.
    pub async fn status(&self, client_msg_id: &str) -> Result<Option<MessageStatus>> {
        let id = client_msg_id.to_owned();
        self.call(|reply| Command::Status { id, reply }).await
    }

    /// The requests still waiting for their `send_ack`, oldest first.
    pub async fn outbox(&self) -> Result<Vec<OutboxEntry>> {
        self.call(|reply| Command::Outbox { reply }).await
    }

    /// The highest seq of `conv_id` delivered to the application.
    pub async fn cursor(&self, conv_id: &str) -> Result<Option<u64>> {
        let conv_id = conv_id.to_owned();
        self.call(|reply| Command::Cursor { conv_id, reply }).await
    }

    /// Acknowledges what was delivered, saves the state and closes the
    /// socket. Requests still in the outbox stay there for the next start.
    pub async fn close(self) -> Result<()> {
        self.call(|reply| Command::Close { reply }).await
    }
}

pub(crate) use tokenim_core::clock::now_ms;
