//! Push setup (PROTOCOL-INTEGRATION I2.1, I2.4): the `[push]`
//! configuration (`config`), the providers' credentials read and checked at
//! start (`credentials`), and the checks of a device's registration
//! (`register`). Delivering pushes is not here: a delivery engine takes
//! [`PushProviders`] and the store's registrations and levels.

pub mod config;
pub mod credentials;
pub mod register;
pub mod send;

#[cfg(test)]
mod tests;

pub use config::{PushConfig, PushPreview};
pub use credentials::{Apns, Fcm, PushProviders, PushWebhook, WebPush};
