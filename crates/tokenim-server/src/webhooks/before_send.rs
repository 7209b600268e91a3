//! `message.before_send` (PROTOCOL-INTEGRATION I3.2, I-17..I-19): before a
//! send or an edit is queued, every webhook subscribed to it is asked in
//! config order. The first `reject` wins (`rejected`, nothing stored); a
//! `replace` is what the next hook sees and what is stored. A hook that
//! fails (not `200`, no answer within `timeout_ms`, an answer over 64 KiB
//! or unreadable, a replacement over the content limits) is skipped with a
//! warning under `on_failure = "allow"`, or refuses the message with `503
//! unavailable` under `"reject"`.
//!
//! The caller awaits this before it queues the write: nothing here runs on
//! the commit path, and no lock is held while a hook answers.

use std::time::Duration;

use serde_json::value::RawValue;
use tokenim_core::clock::now_ms;
use tokenim_core::{Error, Result, validate};
use tokenim_proto::{
    BeforeSendAnswer, BeforeSendData, Content, ConvType, DELIVERY_HEADER, ErrorCode, HookKind,
    SIGNATURE_HEADER, WebhookRequest,
};
use tokenim_store::ids;

use super::config::{OnFailure, Webhook, WebhookEvent};
use crate::webhooks::sign::Signer;

/// The largest answer read from a hook.
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// The longest `reason` passed on to the client, in characters.
const MAX_REASON_CHARS: usize = 256;

/// One subscribed webhook.
struct Hook {
    name: String,
    url: reqwest::Url,
    signer: Signer,
    timeout: Duration,
    on_failure: OnFailure,
}

/// The `message.before_send` hooks, in config order.
pub struct BeforeSend {
    client: reqwest::Client,
    hooks: Vec<Hook>,
    max_content_bytes: u64,
}

/// What the hooks are asked about, besides the content.
pub struct Ask<'a> {
    pub conv_id: &'a str,
    pub conv_type: ConvType,
    pub sender: &'a str,
    pub sender_device: &'a str,
    pub client_msg_id: &'a str,
    pub kind: HookKind,
    pub target_seq: Option<u64>,
}

impl BeforeSend {
    /// The hooks among `webhooks`; `None` when no webhook subscribes to
    /// `message.before_send` (the timeline then asks nothing).
    pub fn new(
        webhooks: &[Webhook],
        client: reqwest::Client,
        max_content_bytes: u64,
    ) -> Option<BeforeSend> {
        let hooks: Vec<Hook> = webhooks
            .iter()
            .filter(|w| w.subscribes(WebhookEvent::BeforeSend))
            .map(|w| Hook {
                name: w.name.clone(),
                url: w.url.clone(),
                signer: Signer::new(&w.secrets),
                timeout: Duration::from_millis(w.timeout_ms),
                on_failure: w.on_failure,
            })
            .collect();
        (!hooks.is_empty()).then_some(BeforeSend {
            client,
            hooks,
            max_content_bytes,
        })
    }

    /// Asks every hook in order about `content`. `Ok(None)`: store it as
    /// sent; `Ok(Some(c))`: a hook replaced it with `c` (checked against the
    /// limits); `Err`: `rejected`, or `unavailable` from a failed hook with
    /// `on_failure = "reject"`.
    pub async fn run(&self, ask: &Ask<'_>, content: &RawValue) -> Result<Option<Content>> {
        let mut replaced: Option<Content> = None;
        for hook in &self.hooks {
            let current = replaced.as_deref().unwrap_or(content);
            let failure = match self.ask(hook, ask, current).await {
                Ok(BeforeSendAnswer::Allow) => continue,
                Ok(BeforeSendAnswer::Reject { reason }) => {
                    let reason = reason
                        .filter(|r| !r.is_empty())
                        .map(|r| r.chars().take(MAX_REASON_CHARS).collect::<String>())
                        .unwrap_or_else(|| "rejected".to_owned());
                    return Err(Error::new(ErrorCode::Rejected, reason));
                }
                Ok(BeforeSendAnswer::Replace { content }) => {
                    match validate::content(&content, self.max_content_bytes) {
                        Ok(c) => {
                            replaced = Some(c);
                            continue;
                        }
                        Err(e) => format!("invalid replacement: {}", e.message),
                    }
                }
                Err(why) => why,
            };
            tracing::warn!(
                webhook = %hook.name,
                reason = %failure,
                on_failure = ?hook.on_failure,
                "message.before_send webhook failed"
            );
            if hook.on_failure == OnFailure::Reject {
                return Err(Error::unavailable(
                    "a message.before_send webhook failed; retry later",
                ));
            }
        }
        Ok(replaced)
    }

    /// One request to one hook, within its timeout: its answer, or why
    /// there is none.
    async fn ask(
        &self,
        hook: &Hook,
        ask: &Ask<'_>,
        content: &RawValue,
    ) -> std::result::Result<BeforeSendAnswer, String> {
        let ts = now_ms();
        let id = ids::delivery_id(ts);
        let body = serde_json::to_vec(&WebhookRequest {
            ty: WebhookEvent::BeforeSend.as_str(),
            id: &id,
            ts,
            data: BeforeSendData {
                conv_id: ask.conv_id,
                conv_type: ask.conv_type,
                sender: ask.sender,
                sender_device: ask.sender_device,
                client_msg_id: ask.client_msg_id,
                kind: ask.kind,
                target_seq: ask.target_seq,
                content,
            },
        })
        .map_err(|e| format!("encoding the request: {e}"))?;
        let signature = hook.signer.signature(ts, &body);
        let call = async {
            let mut resp = self
                .client
                .post(hook.url.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(DELIVERY_HEADER, &id)
                .header(SIGNATURE_HEADER, signature)
                .body(body)
                .send()
                .await
                .map_err(|e| format!("request failed: {}", e.without_url()))?;
            if resp.status() != reqwest::StatusCode::OK {
                return Err(format!("answered {}", resp.status()));
            }
            if resp
                .content_length()
                .is_some_and(|n| n > MAX_ANSWER_BYTES as u64)
            {
                return Err("answer over 64 KiB".to_owned());
            }
            let mut answer = Vec::new();
            while let Some(chunk) = resp
                .chunk()
                .await
                .map_err(|e| format!("reading the answer: {}", e.without_url()))?
            {
                if answer.len() + chunk.len() > MAX_ANSWER_BYTES {
                    return Err("answer over 64 KiB".to_owned());
                }
                answer.extend_from_slice(&chunk);
            }
            serde_json::from_slice::<BeforeSendAnswer>(&answer)
                .map_err(|e| format!("unreadable answer: {e}"))
        };
        match tokio::time::timeout(hook.timeout, call).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {} ms", hook.timeout.as_millis())),
        }
    }
}
