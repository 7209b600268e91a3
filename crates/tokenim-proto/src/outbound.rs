//! The operator's view of offline pushes and webhook deliveries
//! (PROTOCOL-INTEGRATION I2.5, I3.4): `GET /v1/server/users/{id}/push`,
//! `POST /v1/server/users/{id}/push/test`, and the deliveries list.

use serde::{Deserialize, Serialize};

/// `GET /v1/server/users/{user_id}/push`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushDevices {
    pub devices: Vec<PushDevice>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushDevice {
    pub device_id: String,
    pub platform: String,
    pub online: bool,
    pub push: Option<PushInfo>,
    pub last_attempt_at: Option<i64>,
    /// `sent`, `retry`, `failed`, `dead_token`, `expired` or `skipped`.
    pub last_result: Option<String>,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushInfo {
    pub provider: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// The token's (Web Push: the endpoint's) last 6 characters.
    pub token_tail: String,
}

/// `POST /v1/server/users/{user_id}/push/test`: each registered device's
/// provider answer to a test notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushTestResults {
    pub results: Vec<PushTestResult>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushTestResult {
    pub device_id: String,
    pub provider: String,
    /// `sent`, `dead_token`, `retry` or `failed`.
    pub result: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `GET /v1/server/webhooks/deliveries`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deliveries {
    pub deliveries: Vec<Delivery>,
    pub has_more: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub id: String,
    pub webhook: String,
    #[serde(rename = "type")]
    pub ty: String,
    pub conv_id: Option<String>,
    pub seq: u64,
    /// `pending` or `failed`.
    pub status: String,
    pub attempts: u32,
    pub last_attempt_at: Option<i64>,
    /// When the next attempt is due; `null` for a failed one.
    pub next_attempt_at: Option<i64>,
    pub last_error: Option<String>,
}
