//! The delivery layer: everything between a committed event (or a notice)
//! and the sockets that must get it, with no domain rule in it.
//!
//! - [`outbox`]: one bounded, prioritised queue per socket;
//! - [`hub`]: this node's live sockets, by user and device, and presence
//!   watchers;
//! - [`fanout`]: notices (receipts, typing, presence, kicks) to users'
//!   sockets on this node and, in cluster mode, on the others;
//! - [`dispatcher`]: committed events, in commit order, to the sockets of
//!   the conversation's members (with the cluster's gap fill and repeat
//!   drop);
//! - [`cluster`] (given the hub and the dispatcher's remote queue, never
//!   the services): the Redis bus, device registry and node liveness.
//!
//! Services push through [`fanout::Fanout`]; only the store's sink feeds the
//! dispatcher.

pub mod cluster;
pub mod dispatcher;
pub mod fanout;
pub mod hub;
pub mod outbox;
