//! Business webhooks (PROTOCOL-INTEGRATION I3): the signatures every
//! webhook request carries (`sign`), the one HTTP client they share, and
//! the synchronous `message.before_send` hooks (`before_send`), which the
//! timeline asks before it queues a send or an edit.
//!
//! Reads only the checked configuration ([`config::Webhook`]); knows
//! nothing of sockets, the store or the other services. The asynchronous
//! after-events (I3.4) and push webhooks are to reuse `sign` and
//! [`client`].

pub mod before_send;
pub mod config;
pub mod sign;

use anyhow::Context;

/// The HTTP client every webhook request goes through (one connection
/// pool). Redirects are not followed: a webhook answers where it is
/// configured. Timeouts are per request, set by the caller.
pub fn client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("tokenim/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("building the webhook client")
}
