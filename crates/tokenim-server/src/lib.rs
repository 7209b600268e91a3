//! The tokenim server: the HTTP API, the WebSocket gateway, authentication,
//! the registry of online devices and the push of committed events, on one
//! node or as a node of a cluster sharing a database and a Redis
//! ([`cluster`]).
//!
//! It enforces the protocol's rules through [`app::App`], stores through the
//! `tokenim-store` trait (never an engine directly) and must not contain
//! domain rules that belong in `tokenim-core`.

pub mod app;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod fanout;
pub mod http;
pub mod hub;
pub mod metrics;
pub mod outbox;
pub mod serve;
pub mod web;
pub mod ws;

pub use config::Config;
pub use serve::{Server, open_store, start};
