//! Business webhook bodies (PROTOCOL-INTEGRATION I3): the envelope every
//! webhook request carries, the data of `message.before_send` and its
//! answer. The signature headers are named here too; how they are computed
//! is the server's business.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::ConvType;

/// The header carrying the request's `id` (I3.3).
pub const DELIVERY_HEADER: &str = "Tokenim-Delivery";
/// The header carrying `t=<unix ms>,v1=<hex>[,v1=<hex>...]` (I3.3).
pub const SIGNATURE_HEADER: &str = "Tokenim-Signature";

/// `{"type", "id", "ts", "data"}`: the body of every webhook request.
#[derive(Debug, Serialize)]
pub struct WebhookRequest<'a, T> {
    #[serde(rename = "type")]
    pub ty: &'a str,
    pub id: &'a str,
    pub ts: i64,
    pub data: T,
}

/// What a `message.before_send` hook is asked about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HookKind {
    Message,
    Edit,
}

/// The `data` of `message.before_send` (I3.2).
#[derive(Debug, Serialize)]
pub struct BeforeSendData<'a> {
    pub conv_id: &'a str,
    pub conv_type: ConvType,
    pub sender: &'a str,
    pub sender_device: &'a str,
    pub client_msg_id: &'a str,
    pub kind: HookKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_seq: Option<u64>,
    pub content: &'a RawValue,
}

/// A `message.before_send` hook's answer (a `200` body).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum BeforeSendAnswer {
    Allow,
    Reject {
        #[serde(default)]
        reason: Option<String>,
    },
    Replace {
        content: Value,
    },
}
