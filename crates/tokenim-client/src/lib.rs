//! Rust SDK for tokenim, an instant-messaging
//! server: log in, connect, and get one ordered stream of events per
//! conversation.
//!
//! Two parts:
//!
//! - [`Client`] and [`Session`]: the HTTP API (register, log in, users,
//!   direct and group conversations, history, sending over HTTP). An app
//!   whose backend mints session tokens skips the password login with
//!   [`Client::session_from_token`].
//! - [`Messenger`] and [`Updates`]: the real-time connection, which does the
//!   reliability work of the protocol for the application. A local outbox
//!   resends unacknowledged requests with the same `client_msg_id` after a
//!   timeout and across reconnects; it reconnects with exponential backoff
//!   and jitter, syncs from its own cursors after every reconnect (following
//!   `has_more`), drops events it already delivered, notices gaps and syncs
//!   to fill them, acknowledges in batches, sends heartbeats, and tracks each
//!   message's status (`sending`, `sent`, `delivered`, `read`, `failed`).
//!   Cursors and the outbox live in a [`StateStore`]: [`MemoryStore`] or
//!   [`FileStore`], so a restarted application resumes where it was.
//!
//! ```no_run
//! use std::sync::Arc;
//! use tokenim_client::{Client, Config, MemoryStore, Messenger, Update};
//!
//! # async fn demo() -> tokenim_client::Result<()> {
//! let client = Client::new("http://127.0.0.1:8080")?;
//! let alice = client.login("alice", "password1", "laptop", "cli").await?;
//! let bob = alice.find_user("bob").await?;
//! let conv = alice.create_direct(&bob.user_id).await?.conv_id;
//!
//! let (messenger, mut updates) =
//!     Messenger::start(&alice, Arc::new(MemoryStore::new()), Config::default()).await?;
//! messenger.send_text(&conv, "hi bob").await?;
//! while let Some(update) = updates.recv().await {
//!     if let Update::Event(e) = update {
//!         let from = e.sender.as_deref().unwrap_or("the system");
//!         println!("{}#{} from {from}", e.conv_id, e.seq);
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! The SDK holds no protocol types of its own: events, conversations and
//! bodies are those of [`tokenim_proto`], re-exported as [`proto`]. It must
//! not depend on the server crates.
//!
//! A process using the SDK must install a rustls crypto provider (`ring`)
//! before connecting over TLS, or let rustls pick the one built in.

#![deny(missing_docs)]

mod actor;
mod content;
mod error;
mod http;
mod messenger;
mod order;
mod store;
mod wire;

pub use content::MessageContent;
pub use error::{Error, Result};
pub use http::{Client, ClientBuilder, DEFAULT_HTTP_TIMEOUT, HistoryPage, Session};
pub use messenger::{
    Config, MessageStatus, Messenger, StatusChange, StopReason, Update, Updates, new_client_msg_id,
};
pub use store::{FileStore, MemoryStore, OutboxEntry, Request, State, StateStore};

/// The wire types of the protocol (events, conversations, HTTP bodies).
pub use tokenim_proto as proto;
pub use tokenim_proto::{Conversation, ErrorCode, Event, EventKind};

/// The text of a `{"type": "text", "text": ...}` event, if it is one.
pub fn event_text(e: &Event) -> Option<String> {
    let c: serde_json::Value = serde_json::from_str(e.content.as_ref()?.get()).ok()?;
    if c["type"] == "text" {
        c["text"].as_str().map(str::to_owned)
    } else {
        None
    }
}
