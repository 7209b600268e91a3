//! The `[push]` tables of the configuration file as written
//! (PROTOCOL-INTEGRATION I2.2, I2.4): text and paths only. Every field a
//! provider needs is optional here so that [`super::credentials`] can name
//! a missing or empty one in its own words; nothing is read from disk here.

use std::path::PathBuf;

use serde::Deserialize;

/// `--push-preview`, `[push] preview`: how much of a message a push shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PushPreview {
    /// Title and body.
    #[default]
    Full,
    /// The title; every body is "New message".
    Sender,
    /// Neither: the title is `app_name`, the body "New message".
    None,
}

impl std::str::FromStr for PushPreview {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<PushPreview> {
        match s {
            "full" => Ok(PushPreview::Full),
            "sender" => Ok(PushPreview::Sender),
            "none" => Ok(PushPreview::None),
            _ => anyhow::bail!("push preview must be full, sender or none"),
        }
    }
}

/// `[push]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PushConfig {
    pub preview: PushPreview,
    pub app_name: String,
    pub apns: Option<ApnsConfig>,
    pub fcm: Option<FcmConfig>,
    pub webpush: Option<WebPushConfig>,
    pub webhook: Option<WebhookConfig>,
}

impl Default for PushConfig {
    fn default() -> Self {
        PushConfig {
            preview: PushPreview::Full,
            app_name: "tokenim".to_owned(),
            apns: None,
            fcm: None,
            webpush: None,
            webhook: None,
        }
    }
}

pub const APNS_ENDPOINT: &str = "https://api.push.apple.com";
pub const APNS_SANDBOX_ENDPOINT: &str = "https://api.sandbox.push.apple.com";
pub const FCM_ENDPOINT: &str = "https://fcm.googleapis.com";

/// `[push.apns]`: token-based authentication with a .p8 key.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApnsConfig {
    pub key_file: Option<PathBuf>,
    pub key_id: Option<String>,
    pub team_id: Option<String>,
    pub topic: Option<String>,
    pub endpoint: Option<String>,
    pub sandbox_endpoint: Option<String>,
}

/// `[push.fcm]`: FCM HTTP v1 with a Google service account.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FcmConfig {
    pub service_account_file: Option<PathBuf>,
    pub endpoint: Option<String>,
}

/// `[push.webpush]`: VAPID (RFC 8292).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebPushConfig {
    pub vapid_private_key_file: Option<PathBuf>,
    pub subject: Option<String>,
    /// Accept subscriptions whose endpoint is a loopback or private address
    /// (and plain `http:`), for tests and closed networks.
    #[serde(default)]
    pub allow_private: bool,
}

/// `[push.webhook]`: pushes posted to the app's backend, signed as I3.3.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: Option<String>,
    pub secret: Option<String>,
    /// Several secrets while rotating: every one signs.
    pub secrets: Option<Vec<String>>,
}

impl std::fmt::Debug for WebhookConfig {
    /// Never prints a secret, nor the URL (it may carry credentials).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.secret.iter().count() + self.secrets.as_ref().map_or(0, Vec::len);
        f.debug_struct("WebhookConfig")
            .field("url", &self.url.as_ref().map(|_| "<hidden>"))
            .field("secrets", &format_args!("<{n} hidden>"))
            .finish()
    }
}
