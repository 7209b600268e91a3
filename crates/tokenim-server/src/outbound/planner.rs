//! What a commit records for the delivery engine (the store's
//! [`JobPlanner`]): for every committed `message`, one job that decides
//! its pushes (when a push provider is configured), and for every event a
//! webhook subscribes to, one delivery per webhook (PROTOCOL-INTEGRATION
//! I-20: recorded in the event's commit, for the webhooks subscribed then).
//! Called on the store's writer: no IO, no locks.

use std::sync::Arc;

use serde_json::{Value, json};
use tokenim_proto::{Event, EventKind};
use tokenim_store::{ConvMeta, JobKind, JobPlanner, NewJob};

use crate::webhooks::config::{Webhook, WebhookEvent};

pub struct Planner {
    /// Whether any push provider is configured.
    pub push: bool,
    pub push_ttl_ms: i64,
    pub webhook_retry_ms: i64,
    /// The after-event webhooks: name and the events each takes.
    pub hooks: Vec<(String, Vec<WebhookEvent>)>,
}

/// The webhook event a timeline event is (I3.1).
pub fn webhook_event(kind: EventKind) -> WebhookEvent {
    match kind {
        EventKind::Message => WebhookEvent::MessageCreated,
        EventKind::Edit => WebhookEvent::MessageEdited,
        EventKind::Recall => WebhookEvent::MessageRecalled,
        EventKind::MemberJoined => WebhookEvent::MemberJoined,
        EventKind::MemberLeft => WebhookEvent::MemberLeft,
        EventKind::MemberRemoved => WebhookEvent::MemberRemoved,
        EventKind::RoleChanged => WebhookEvent::MemberRoleChanged,
        EventKind::ConvUpdated => WebhookEvent::ConversationUpdated,
    }
}

/// The order key of one webhook's deliveries of one conversation.
pub fn order_key(webhook: &str, conv_id: &str) -> String {
    format!("{webhook}\n{conv_id}")
}

impl Planner {
    pub fn new(push: bool, limits: &tokenim_core::Limits, webhooks: &[Webhook]) -> Planner {
        let hooks = webhooks
            .iter()
            .filter_map(|w| {
                let after: Vec<WebhookEvent> = w
                    .events
                    .iter()
                    .copied()
                    .filter(|e| *e != WebhookEvent::BeforeSend)
                    .collect();
                (!after.is_empty()).then(|| (w.name.clone(), after))
            })
            .collect();
        Planner {
            push,
            push_ttl_ms: limits.push_ttl_ms.min(i64::MAX as u64) as i64,
            webhook_retry_ms: limits.webhook_retry_ms.min(i64::MAX as u64) as i64,
            hooks,
        }
    }

    /// Whether commits record anything at all.
    pub fn active(&self) -> bool {
        self.push || !self.hooks.is_empty()
    }

    fn deliveries(
        &self,
        ev: WebhookEvent,
        conv_id: &str,
        seq: u64,
        data: impl Fn() -> Value,
        now_ms: i64,
    ) -> Vec<NewJob> {
        let mut out = Vec::new();
        for (name, events) in &self.hooks {
            if !events.contains(&ev) {
                continue;
            }
            let body = json!({"type": ev.as_str(), "ts": now_ms, "data": data()});
            out.push(NewJob {
                kind: JobKind::Webhook,
                dest: name.clone(),
                order_key: Some(order_key(name, conv_id)),
                coalesce_key: None,
                conv_id: Some(conv_id.to_owned()),
                seq,
                payload: body.to_string(),
                due_at: now_ms,
                expires_at: now_ms.saturating_add(self.webhook_retry_ms),
            });
        }
        out
    }
}

/// The payload of a push decision: the message, and when its pushes end.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Decide {
    pub conv_id: String,
    pub seq: u64,
    pub msg_id: String,
    pub sender: Option<String>,
    pub ts: i64,
}

impl JobPlanner for Planner {
    fn event(&self, event: &Arc<Event>, conv: &ConvMeta, now_ms: i64) -> Vec<NewJob> {
        let mut out = Vec::new();
        if self.push && event.kind == EventKind::Message {
            let d = Decide {
                conv_id: event.conv_id.clone(),
                seq: event.seq,
                msg_id: event.msg_id.clone(),
                sender: event.sender.clone(),
                ts: event.ts,
            };
            out.push(NewJob {
                kind: JobKind::PushDecide,
                dest: "push".into(),
                order_key: None,
                coalesce_key: None,
                conv_id: Some(event.conv_id.clone()),
                seq: event.seq,
                payload: serde_json::to_string(&d).expect("decisions serialize"),
                due_at: now_ms,
                expires_at: event.ts.saturating_add(self.push_ttl_ms),
            });
        }
        if !self.hooks.is_empty() {
            let data = || {
                let mut v = serde_json::to_value(&**event).expect("events serialize");
                if let Some(o) = v.as_object_mut() {
                    o.insert("conv_type".into(), json!(conv.ty));
                    o.insert("member_count".into(), json!(conv.member_count));
                }
                v
            };
            out.extend(self.deliveries(
                webhook_event(event.kind),
                &event.conv_id,
                event.seq,
                data,
                now_ms,
            ));
        }
        out
    }

    fn read(&self, conv: &ConvMeta, user_id: &str, read_seq: u64, now_ms: i64) -> Vec<NewJob> {
        if self.hooks.is_empty() {
            return Vec::new();
        }
        let data = || {
            json!({
                "conv_id": conv.conv_id,
                "conv_type": conv.ty,
                "member_count": conv.member_count,
                "user_id": user_id,
                "read_seq": read_seq,
            })
        };
        self.deliveries(
            WebhookEvent::ReadUpdated,
            &conv.conv_id,
            read_seq,
            data,
            now_ms,
        )
    }
}
