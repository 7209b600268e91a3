//! The tokenim server: the HTTP API and the WebSocket gateway (`api`), the
//! services that enforce the protocol's rules (`services`), the delivery
//! of committed events and notices to sockets, across nodes too in cluster
//! mode over Redis (`delivery`), authentication, configuration, metrics and
//! the serving loop.
//!
//! Layers, each using only the ones below it: `api` → `services` →
//! `delivery` → the store (through the `tokenim-store` trait,
//! never an engine directly). Domain rules belong in `tokenim-core`, the
//! wire format in `tokenim-proto`; `state` wires one node together.

pub mod api;
pub mod auth;
pub mod config;
pub mod delivery;
pub mod jwt;
pub mod metrics;
pub mod outbound;
pub mod push;
pub mod serve;
pub mod services;
pub mod state;
pub mod views;
pub mod webhooks;

pub use config::Config;
pub use serve::{Server, open_store, start};
