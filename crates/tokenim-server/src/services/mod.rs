//! The services: one owner per concern, each with its own caches, called
//! alike by the HTTP handlers and the WebSocket gateway (`crate::api`), so
//! every rule is enforced once for both. They decide with the pure rules of
//! `tokenim-core`, store through the `Store` trait and push through
//! `crate::delivery`.
//!
//! Dependencies point one way: `rate` and `commits` are used by the others;
//! `conversations` (membership) by `timeline`, `marks`, `sync` and
//! `presence`; `marks` (acks) by `sync` and `devices`.

pub mod accounts;
pub mod commits;
pub mod contacts;
pub mod conversations;
pub mod devices;
pub mod marks;
pub mod presence;
pub mod rate;
pub mod sync;
pub mod timeline;

/// Who is acting: the authenticated user and device, and the socket (0 for
/// HTTP) that asked.
#[derive(Debug, Clone)]
pub struct Actor {
    pub user_id: String,
    pub device_id: String,
    pub session_id: String,
    pub conn: u64,
}
