//! The `[[webhooks]]` tables of the configuration (PROTOCOL-INTEGRATION
//! I3.1): as written in the file ([`WebhookConfig`], a field of
//! [`crate::config::Config`]), and checked at startup ([`check`]) into the
//! [`Webhook`]s the webhook services are built from. Nothing here prints a
//! secret.

use anyhow::{Context, bail};
use serde::Deserialize;

/// One `[[webhooks]]` table of the config file, as written
/// (PROTOCOL-INTEGRATION I3.1); [`check`] makes it a
/// [`Webhook`]. Its `Debug` never prints a secret.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: String,
    #[serde(default)]
    pub secret: Option<String>,
    /// Several secrets while rotating: each request is signed with all.
    #[serde(default)]
    pub secrets: Option<Vec<String>>,
    #[serde(default)]
    pub events: Vec<String>,
    /// Default: the URL.
    #[serde(default)]
    pub name: Option<String>,
    /// `message.before_send` only: how long to wait for the answer.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// `message.before_send` only: `allow` (default) or `reject`.
    #[serde(default)]
    pub on_failure: Option<String>,
}

impl std::fmt::Debug for WebhookConfig {
    /// Never prints a secret (only how many there are).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.secret.iter().count() + self.secrets.as_ref().map_or(0, Vec::len);
        f.debug_struct("WebhookConfig")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("secrets", &format_args!("<{n} hidden>"))
            .field("events", &self.events)
            .field("timeout_ms", &self.timeout_ms)
            .field("on_failure", &self.on_failure)
            .finish()
    }
}

/// The events a webhook may subscribe to (PROTOCOL-INTEGRATION I3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WebhookEvent {
    BeforeSend,
    MessageCreated,
    MessageEdited,
    MessageRecalled,
    MemberJoined,
    MemberLeft,
    MemberRemoved,
    MemberRoleChanged,
    ConversationUpdated,
    ReadUpdated,
}

impl WebhookEvent {
    pub const ALL: [WebhookEvent; 10] = [
        WebhookEvent::BeforeSend,
        WebhookEvent::MessageCreated,
        WebhookEvent::MessageEdited,
        WebhookEvent::MessageRecalled,
        WebhookEvent::MemberJoined,
        WebhookEvent::MemberLeft,
        WebhookEvent::MemberRemoved,
        WebhookEvent::MemberRoleChanged,
        WebhookEvent::ConversationUpdated,
        WebhookEvent::ReadUpdated,
    ];

    /// The event's name, in the config and in a request's `type`.
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookEvent::BeforeSend => "message.before_send",
            WebhookEvent::MessageCreated => "message.created",
            WebhookEvent::MessageEdited => "message.edited",
            WebhookEvent::MessageRecalled => "message.recalled",
            WebhookEvent::MemberJoined => "member.joined",
            WebhookEvent::MemberLeft => "member.left",
            WebhookEvent::MemberRemoved => "member.removed",
            WebhookEvent::MemberRoleChanged => "member.role_changed",
            WebhookEvent::ConversationUpdated => "conversation.updated",
            WebhookEvent::ReadUpdated => "read.updated",
        }
    }

    pub fn parse(name: &str) -> Option<WebhookEvent> {
        Self::ALL.into_iter().find(|e| e.as_str() == name)
    }
}

/// What a failed `message.before_send` hook means for the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// Let it through unchanged (and log a warning).
    Allow,
    /// Refuse it with `503 unavailable`.
    Reject,
}

/// A checked webhook: what the webhook services are built from.
#[derive(Clone)]
pub struct Webhook {
    pub name: String,
    pub url: reqwest::Url,
    /// 1-256 bytes each, at least one.
    pub secrets: Vec<String>,
    pub events: Vec<WebhookEvent>,
    /// For `message.before_send`: 1..=30000 ms, default 2000.
    pub timeout_ms: u64,
    pub on_failure: OnFailure,
}

impl Webhook {
    pub fn subscribes(&self, e: WebhookEvent) -> bool {
        self.events.contains(&e)
    }
}

impl std::fmt::Debug for Webhook {
    /// Never prints a secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("name", &self.name)
            .field("url", &self.url.as_str())
            .field("events", &self.events)
            .field("timeout_ms", &self.timeout_ms)
            .field("on_failure", &self.on_failure)
            .finish_non_exhaustive()
    }
}

/// Every `[[webhooks]]` table, checked (I3.1): an http or https URL
/// with a host and no credentials, `secret` or `secrets` (exactly one;
/// each 1-256 bytes), known and at least one event, unique names, and
/// for `message.before_send` `timeout_ms` 1..=30000 (default 2000) and
/// `on_failure` `allow` (default) or `reject`. Errors name the webhook,
/// never a secret.
pub fn check(tables: &[WebhookConfig]) -> anyhow::Result<Vec<Webhook>> {
    let mut out: Vec<Webhook> = Vec::new();
    for (i, w) in tables.iter().enumerate() {
        let name = w.name.clone().unwrap_or_else(|| w.url.clone());
        let which = format!("webhook {name:?} ([[webhooks]] number {})", i + 1);
        if name.is_empty() || name.len() > 256 || name.chars().any(char::is_control) {
            bail!("{which}: name must be 1-256 characters without control characters");
        }
        let url = reqwest::Url::parse(&w.url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
            .with_context(|| format!("{which}: url must be an http or https URL with a host"))?;
        if !url.username().is_empty() || url.password().is_some() {
            bail!("{which}: url must not carry credentials (requests are signed)");
        }
        let secrets = match (&w.secret, &w.secrets) {
            (Some(s), None) => vec![s.clone()],
            (None, Some(list)) if !list.is_empty() => list.clone(),
            (None, Some(_)) => bail!("{which}: secrets must list at least one secret"),
            (None, None) => bail!("{which}: needs a secret (or secrets while rotating)"),
            (Some(_), Some(_)) => bail!("{which}: give secret or secrets, not both"),
        };
        if secrets.iter().any(|s| s.is_empty() || s.len() > 256) {
            bail!("{which}: each secret must be 1-256 bytes");
        }
        if w.events.is_empty() {
            bail!("{which}: events must name at least one event");
        }
        let mut events = Vec::new();
        for e in &w.events {
            let Some(ev) = WebhookEvent::parse(e) else {
                let known: Vec<&str> = WebhookEvent::ALL.iter().map(|e| e.as_str()).collect();
                bail!("{which}: unknown event {e:?} (known: {})", known.join(", "));
            };
            if !events.contains(&ev) {
                events.push(ev);
            }
        }
        let before_send = events.contains(&WebhookEvent::BeforeSend);
        if !before_send && (w.timeout_ms.is_some() || w.on_failure.is_some()) {
            bail!("{which}: timeout_ms and on_failure apply only to message.before_send");
        }
        let timeout_ms = w.timeout_ms.unwrap_or(2000);
        if !(1..=30_000).contains(&timeout_ms) {
            bail!("{which}: timeout_ms must be 1..=30000");
        }
        let on_failure = match w.on_failure.as_deref() {
            None | Some("allow") => OnFailure::Allow,
            Some("reject") => OnFailure::Reject,
            Some(_) => bail!("{which}: on_failure must be allow or reject"),
        };
        if out.iter().any(|o| o.name == name) {
            bail!("{which}: another webhook has this name (names must be unique)");
        }
        out.push(Webhook {
            name,
            url,
            secrets,
            events,
            timeout_ms,
            on_failure,
        });
    }
    Ok(out)
}
