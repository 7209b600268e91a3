//! The push providers' credentials, read and checked once at start from
//! the `[push]` tables: every key file is parsed and a probe token signed,
//! so a bad file stops `tokenim serve` instead of failing the first push.
//! Errors name the table, the field and the file, never key material; the
//! `Debug` of every type here hides keys and secrets.
//!
//! The delivery engine signs with what is kept here: [`Apns::jwt`],
//! [`Fcm::assertion`], [`WebPush::vapid_jwt`] (ES256/RS256 through
//! `jsonwebtoken`'s RustCrypto backend) and the webhook's secrets.

use std::path::Path;

use anyhow::{Context, anyhow, bail};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::elliptic_curve::sec1::ToSec1Point;
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use serde_json::{Value, json};

use super::config::{
    APNS_ENDPOINT, APNS_SANDBOX_ENDPOINT, ApnsConfig, FCM_ENDPOINT, FcmConfig, PushConfig,
    PushPreview, WebPushConfig, WebhookConfig,
};

/// Every configured provider; `None` where a table is absent.
#[derive(Debug, Default)]
pub struct PushProviders {
    pub preview: PushPreview,
    pub app_name: String,
    pub apns: Option<Apns>,
    pub fcm: Option<Fcm>,
    pub webpush: Option<WebPush>,
    pub webhook: Option<PushWebhook>,
}

/// APNs with token-based authentication.
pub struct Apns {
    pub key_id: String,
    pub team_id: String,
    pub topic: String,
    pub endpoint: String,
    pub sandbox_endpoint: String,
    key: EncodingKey,
}

/// FCM HTTP v1 through a service account.
pub struct Fcm {
    pub project_id: String,
    pub private_key_id: String,
    pub client_email: String,
    pub token_uri: String,
    pub endpoint: String,
    key: EncodingKey,
}

/// Web Push with a VAPID key.
pub struct WebPush {
    pub subject: String,
    pub allow_private: bool,
    /// The VAPID public key: base64url (no padding) of the uncompressed
    /// P-256 point, as `GET /v1/push/webpush-key` and the `k=` of the
    /// `Authorization` header give it.
    pub public_key: String,
    key: EncodingKey,
}

/// Pushes posted to the app's backend.
pub struct PushWebhook {
    pub url: String,
    /// Every active secret (each signs, I3.3).
    pub secrets: Vec<String>,
}

impl PushProviders {
    /// Reads and checks every configured provider.
    pub fn load(cfg: &PushConfig) -> anyhow::Result<PushProviders> {
        if cfg.app_name.trim().is_empty() {
            bail!("[push] app_name must not be empty");
        }
        Ok(PushProviders {
            preview: cfg.preview,
            app_name: cfg.app_name.clone(),
            apns: cfg.apns.as_ref().map(Apns::load).transpose()?,
            fcm: cfg.fcm.as_ref().map(Fcm::load).transpose()?,
            webpush: cfg.webpush.as_ref().map(WebPush::load).transpose()?,
            webhook: cfg.webhook.as_ref().map(PushWebhook::load).transpose()?,
        })
    }

    /// The providers configured, for the start-up log.
    pub fn names(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        for (on, name) in [
            (self.apns.is_some(), "apns"),
            (self.fcm.is_some(), "fcm"),
            (self.webpush.is_some(), "webpush"),
            (self.webhook.is_some(), "webhook"),
        ] {
            if on {
                out.push(name);
            }
        }
        out
    }
}

/// A required text field of `table`: present and not blank.
fn required(table: &str, field: &str, v: &Option<String>) -> anyhow::Result<String> {
    match v.as_deref().map(str::trim) {
        Some(s) if !s.is_empty() => Ok(s.to_owned()),
        _ => bail!("[{table}] {field} is missing or empty"),
    }
}

fn required_file<'a>(
    table: &str,
    field: &str,
    v: &'a Option<std::path::PathBuf>,
) -> anyhow::Result<&'a Path> {
    match v {
        Some(p) if !p.as_os_str().is_empty() => Ok(p),
        _ => bail!("[{table}] {field} is missing or empty"),
    }
}

fn read(table: &str, field: &str, path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path)
        .with_context(|| format!("[{table}] {field} {}: cannot read the file", path.display()))
}

/// An `http(s)://` base URL (the endpoints, which tests point at a mock).
fn base_url(table: &str, field: &str, v: &Option<String>, default: &str) -> anyhow::Result<String> {
    let s = match v {
        None => return Ok(default.to_owned()),
        Some(s) => s.trim(),
    };
    let ok = reqwest::Url::parse(s)
        .ok()
        .is_some_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
    if !ok {
        bail!("[{table}] {field} must be an http or https URL");
    }
    Ok(s.trim_end_matches('/').to_owned())
}

/// A P-256 private key from PEM, SEC1 (`EC PRIVATE KEY`) or PKCS#8
/// (`PRIVATE KEY`) as `allowed` says. The parser's error text never holds
/// key material, but it is left out anyway: only the kind of failure shows.
fn p256_key(pem: &str, sec1_too: bool) -> Result<p256::SecretKey, &'static str> {
    let label = pem
        .lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix("-----BEGIN "))
        .and_then(|l| l.strip_suffix("-----"));
    match label {
        Some("PRIVATE KEY") => p256::SecretKey::from_pkcs8_pem(pem).map_err(
            |_| "not a PKCS#8 P-256 private key (malformed, or another curve or algorithm)",
        ),
        Some("EC PRIVATE KEY") if sec1_too => p256::SecretKey::from_sec1_pem(pem)
            .map_err(|_| "not a SEC1 P-256 private key (malformed, or another curve)"),
        Some("EC PRIVATE KEY") => Err("a SEC1 key: a .p8 key is PKCS#8 (BEGIN PRIVATE KEY)"),
        Some(_) => Err("an unknown key format (expected a P-256 private key PEM)"),
        None => Err("not a PEM file"),
    }
}

/// The key in the form `jsonwebtoken` signs ES256 with (PKCS#8 DER).
fn es256_key(key: &p256::SecretKey) -> anyhow::Result<EncodingKey> {
    let der = key
        .to_pkcs8_der()
        .map_err(|_| anyhow!("re-encoding the P-256 key"))?;
    Ok(EncodingKey::from_ec_der(der.as_bytes()))
}

fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value, key: &EncodingKey) -> String {
    let mut h = Header::new(alg);
    h.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&h, claims, key).expect("the key was checked by signing at load")
}

/// Signs a probe: the one check that the key really signs.
fn probe(
    table: &str,
    field: &str,
    path: &Path,
    alg: Algorithm,
    key: &EncodingKey,
) -> anyhow::Result<()> {
    jsonwebtoken::encode(&Header::new(alg), &json!({"probe": true}), key)
        .map(|_| ())
        .map_err(|_| {
            anyhow!(
                "[{table}] {field} {}: the key does not sign {alg:?}",
                path.display()
            )
        })
}

impl Apns {
    fn load(c: &ApnsConfig) -> anyhow::Result<Apns> {
        const T: &str = "push.apns";
        let path = required_file(T, "key_file", &c.key_file)?;
        let pem = read(T, "key_file", path)?;
        let key = p256_key(&pem, false)
            .map_err(|why| anyhow!("[{T}] key_file {}: {why}", path.display()))?;
        let key = es256_key(&key)?;
        probe(T, "key_file", path, Algorithm::ES256, &key)?;
        Ok(Apns {
            key_id: required(T, "key_id", &c.key_id)?,
            team_id: required(T, "team_id", &c.team_id)?,
            topic: required(T, "topic", &c.topic)?,
            endpoint: base_url(T, "endpoint", &c.endpoint, APNS_ENDPOINT)?,
            sandbox_endpoint: base_url(
                T,
                "sandbox_endpoint",
                &c.sandbox_endpoint,
                APNS_SANDBOX_ENDPOINT,
            )?,
            key,
        })
    }

    /// The provider token: ES256, `kid` the key ID, `{"iss": team_id,
    /// "iat"}` (I2.4; the caller renews it every 40 minutes).
    pub fn jwt(&self, iat_s: i64) -> String {
        let claims = json!({"iss": self.team_id, "iat": iat_s});
        sign(Algorithm::ES256, Some(&self.key_id), &claims, &self.key)
    }

    /// The base URL for a registration's environment.
    pub fn endpoint_for(&self, sandbox: bool) -> &str {
        if sandbox {
            &self.sandbox_endpoint
        } else {
            &self.endpoint
        }
    }
}

impl Fcm {
    fn load(c: &FcmConfig) -> anyhow::Result<Fcm> {
        const T: &str = "push.fcm";
        const F: &str = "service_account_file";
        let path = required_file(T, F, &c.service_account_file)?;
        let text = read(T, F, path)?;
        let at = || format!("[{T}] {F} {}", path.display());
        // Read as a tree, not into a struct: serde's messages may quote a
        // value, and no value of this file is printed.
        let doc: Value = serde_json::from_str(&text).map_err(|e| {
            anyhow!(
                "{}: not JSON (line {}, column {})",
                at(),
                e.line(),
                e.column()
            )
        })?;
        let field = |name: &str| -> anyhow::Result<String> {
            match doc.get(name).and_then(Value::as_str).map(str::trim) {
                Some(s) if !s.is_empty() => Ok(s.to_owned()),
                _ => bail!("{}: {name} is missing or empty", at()),
            }
        };
        if let Some(ty) = doc.get("type").and_then(Value::as_str)
            && ty != "service_account"
        {
            bail!("{}: type is {ty:?}, not \"service_account\"", at());
        }
        let pem = field("private_key")?;
        if !pem.contains("-----BEGIN PRIVATE KEY-----")
            && !pem.contains("-----BEGIN RSA PRIVATE KEY-----")
        {
            bail!("{}: private_key is not an RSA private key PEM", at());
        }
        let key = EncodingKey::from_rsa_pem(pem.as_bytes())
            .map_err(|_| anyhow!("{}: private_key is not an RSA private key", at()))?;
        jsonwebtoken::encode(
            &Header::new(Algorithm::RS256),
            &json!({"probe": true}),
            &key,
        )
        .map_err(|_| anyhow!("{}: private_key is not a usable RSA private key", at()))?;
        let token_uri = field("token_uri")?;
        if !reqwest::Url::parse(&token_uri)
            .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
        {
            bail!("{}: token_uri must be an http or https URL", at());
        }
        Ok(Fcm {
            project_id: field("project_id")?,
            private_key_id: field("private_key_id")?,
            client_email: field("client_email")?,
            token_uri,
            endpoint: base_url(T, "endpoint", &c.endpoint, FCM_ENDPOINT)?,
            key,
        })
    }

    /// The OAuth assertion exchanged at `token_uri` for an access token:
    /// RS256, `kid` the private key ID, valid an hour (I2.4).
    pub fn assertion(&self, iat_s: i64) -> String {
        let claims = json!({
            "iss": self.client_email,
            "scope": "https://www.googleapis.com/auth/firebase.messaging",
            "aud": self.token_uri,
            "iat": iat_s,
            "exp": iat_s + 3600,
        });
        sign(
            Algorithm::RS256,
            Some(&self.private_key_id),
            &claims,
            &self.key,
        )
    }
}

impl WebPush {
    fn load(c: &WebPushConfig) -> anyhow::Result<WebPush> {
        const T: &str = "push.webpush";
        const F: &str = "vapid_private_key_file";
        let path = required_file(T, F, &c.vapid_private_key_file)?;
        let pem = read(T, F, path)?;
        let secret =
            p256_key(&pem, true).map_err(|why| anyhow!("[{T}] {F} {}: {why}", path.display()))?;
        let key = es256_key(&secret)?;
        probe(T, F, path, Algorithm::ES256, &key)?;
        let subject = required(T, "subject", &c.subject)?;
        if !(subject.starts_with("mailto:") || subject.starts_with("https:")) {
            bail!("[{T}] subject must start with mailto: or https:");
        }
        let point = secret.public_key().to_sec1_point(false);
        Ok(WebPush {
            subject,
            allow_private: c.allow_private,
            public_key: URL_SAFE_NO_PAD.encode(point.as_bytes()),
            key,
        })
    }

    /// The VAPID token for a push service: ES256, `{"aud": origin, "exp",
    /// "sub": subject}` (RFC 8292).
    pub fn vapid_jwt(&self, audience: &str, exp_s: i64) -> String {
        let claims = json!({"aud": audience, "exp": exp_s, "sub": self.subject});
        sign(Algorithm::ES256, None, &claims, &self.key)
    }
}

impl PushWebhook {
    fn load(c: &WebhookConfig) -> anyhow::Result<PushWebhook> {
        const T: &str = "push.webhook";
        let url = required(T, "url", &c.url)?;
        if !reqwest::Url::parse(&url)
            .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
        {
            bail!("[{T}] url must be an http or https URL");
        }
        let secrets = match (&c.secret, &c.secrets) {
            (Some(_), Some(_)) => bail!("[{T}] give secret or secrets, not both"),
            (Some(s), None) => vec![s.clone()],
            (None, Some(list)) => list.clone(),
            (None, None) => bail!("[{T}] secret is missing or empty"),
        };
        if secrets.is_empty() {
            bail!("[{T}] secrets is empty");
        }
        for (i, s) in secrets.iter().enumerate() {
            if s.trim().is_empty() {
                if c.secret.is_some() {
                    bail!("[{T}] secret is missing or empty");
                }
                bail!("[{T}] secrets[{i}] is empty");
            }
        }
        Ok(PushWebhook { url, secrets })
    }
}

/// Only the origin of a URL, for `Debug` (a path or query may carry a
/// credential).
fn origin(url: &str) -> String {
    reqwest::Url::parse(url)
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_else(|_| "<unparsed>".to_owned())
}

impl std::fmt::Debug for Apns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Apns")
            .field("key_id", &self.key_id)
            .field("team_id", &self.team_id)
            .field("topic", &self.topic)
            .field("endpoint", &self.endpoint)
            .field("sandbox_endpoint", &self.sandbox_endpoint)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Fcm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fcm")
            .field("project_id", &self.project_id)
            .field("client_email", &self.client_email)
            .field("token_uri", &self.token_uri)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for WebPush {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebPush")
            .field("subject", &self.subject)
            .field("allow_private", &self.allow_private)
            .field("public_key", &self.public_key)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for PushWebhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushWebhook")
            .field("url", &origin(&self.url))
            .field("secrets", &format_args!("<{} hidden>", self.secrets.len()))
            .finish()
    }
}
