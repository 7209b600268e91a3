//! Domain rules of tokenim: input validation, the limits, group permissions,
//! where a sync starts, unread arithmetic and rate limiting.
//!
//! Everything here is pure: no IO, no clocks in the rules (time is passed
//! in; [`clock`] is the one place the other crates read the wall clock), no
//! async, nothing about sockets, HTTP or storage engines.

pub mod clock;
mod error;
mod limits;
pub mod perms;
pub mod push;
mod rate;
pub mod sync;
pub mod timeline;
pub mod validate;

pub use error::{Error, Result};
pub use limits::Limits;
pub use rate::TokenBucket;
