//! Sign-in with a JWT from the app's own identity provider
//! (PROTOCOL-INTEGRATION I1.3, I-6, I-7): the keys from the `auth_jwt_*`
//! settings (an HS256 secret, a PEM public key, a JWKS URL), and the checks
//! of a token in the protocol's order, each failure named `jwt: <check>`.
//!
//! Signatures are checked by `jsonwebtoken` (RustCrypto backend); the header,
//! the claims and their order are read here, so the first failing check is
//! the one reported. The JWKS is fetched lazily, cached, refetched on an
//! unknown `kid` at most once per `refetch_min`, and kept when a fetch fails.
//! A token is never logged nor echoed. Who the subject is (deactivated,
//! created on first sign-in) is the caller's business.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::{Map, Value};
use tokenim_core::Error;

/// Longest token accepted; a longer one is `jwt: malformed`.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Clock skew allowed on `exp` and `nbf`, in seconds.
pub const CLOCK_SKEW_SECS: f64 = 60.0;
/// Largest JWKS document read.
pub const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// Who a valid token names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtIdentity {
    /// The `user_id` (I1.2 rules, never `u_...`).
    pub sub: String,
    /// The `name` claim when it is a valid display name, else `None`.
    pub name: Option<String>,
}

/// How the JWKS is cached and fetched (defaults: I-7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JwksTiming {
    /// A key set older than this is fetched again before use (1 h).
    pub max_age: Duration,
    /// At most one fetch per this interval, whatever asks for it (1 min).
    pub refetch_min: Duration,
    /// One fetch, connect to last byte (5 s).
    pub fetch_timeout: Duration,
}

impl Default for JwksTiming {
    fn default() -> Self {
        JwksTiming {
            max_age: Duration::from_secs(3600),
            refetch_min: Duration::from_secs(60),
            fetch_timeout: Duration::from_secs(5),
        }
    }
}

/// A verification key and the one algorithm it is used with.
struct Key {
    alg: Algorithm,
    key: DecodingKey,
}

type KeySet = HashMap<String, Arc<Key>>;

/// The JWT verifier of one node, built once from the configuration.
pub struct JwtAuth {
    secret: Option<Arc<Key>>,
    public_key: Option<Arc<Key>>,
    jwks: Option<Jwks>,
    issuer: Option<String>,
    audience: Option<String>,
}

impl std::fmt::Debug for JwtAuth {
    /// Never prints a key or the JWKS URL (it may carry credentials).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtAuth")
            .field("secret", &self.secret.is_some())
            .field("public_key", &self.public_key.as_ref().map(|k| k.alg))
            .field("jwks", &self.jwks.is_some())
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish()
    }
}

/// `POST /v1/sessions` with a `jwt` while none of the key settings is set.
pub fn not_configured() -> Error {
    fail("not configured")
}

fn fail(check: &str) -> Error {
    Error::unauthorized(format!("jwt: {check}"))
}

impl JwtAuth {
    /// `None` when no key setting (`auth_jwt_secret`, `auth_jwt_public_key`,
    /// `auth_jwt_jwks_url`) is set; an error, to stop startup, on a key or URL
    /// that cannot be used.
    pub fn from_config(cfg: &crate::config::Config) -> anyhow::Result<Option<Arc<JwtAuth>>> {
        Self::from_config_with(cfg, JwksTiming::default())
    }

    /// As [`JwtAuth::from_config`], with the JWKS timing given (tests).
    pub fn from_config_with(
        cfg: &crate::config::Config,
        timing: JwksTiming,
    ) -> anyhow::Result<Option<Arc<JwtAuth>>> {
        let issuer = non_empty("auth_jwt_issuer", &cfg.auth_jwt_issuer)?;
        let audience = non_empty("auth_jwt_audience", &cfg.auth_jwt_audience)?;
        if cfg.auth_jwt_secret.is_none()
            && cfg.auth_jwt_public_key.is_none()
            && cfg.auth_jwt_jwks_url.is_none()
        {
            if issuer.is_some() || audience.is_some() {
                bail!(
                    "auth_jwt_issuer and auth_jwt_audience need a key: auth_jwt_secret, \
                     auth_jwt_public_key or auth_jwt_jwks_url"
                );
            }
            return Ok(None);
        }
        let secret = match &cfg.auth_jwt_secret {
            None => None,
            Some(s) => {
                if s.is_empty() {
                    bail!("auth_jwt_secret must not be empty");
                }
                if s.len() < 32 {
                    tracing::warn!(
                        bytes = s.len(),
                        "auth_jwt_secret is shorter than 32 bytes, which HS256 asks for"
                    );
                }
                let key = DecodingKey::from_secret(s.as_bytes())
                    .context("auth_jwt_secret is not a usable HS256 key")?;
                Some(Arc::new(Key {
                    alg: Algorithm::HS256,
                    key,
                }))
            }
        };
        let public_key = match &cfg.auth_jwt_public_key {
            None => None,
            Some(path) => Some(Arc::new(load_public_key(path)?)),
        };
        let jwks = match &cfg.auth_jwt_jwks_url {
            None => None,
            Some(url) => Some(Jwks::new(url, timing)?),
        };
        if issuer.is_none() || audience.is_none() {
            tracing::warn!(
                "auth_jwt_issuer or auth_jwt_audience is unset: tokens are not checked for it"
            );
        }
        Ok(Some(Arc::new(JwtAuth {
            secret,
            public_key,
            jwks,
            issuer,
            audience,
        })))
    }

    /// The identity a token names, after every check of I1.3 in order; the
    /// first to fail is `401 unauthorized` `jwt: <check>`. A JWKS that has
    /// never been fetched is `503 unavailable`.
    pub async fn verify(&self, token: &str) -> Result<JwtIdentity, Error> {
        let token = Parsed::new(token).ok_or_else(|| fail("malformed"))?;
        let alg = match token.alg.as_str() {
            "HS256" => Algorithm::HS256,
            "RS256" => Algorithm::RS256,
            "ES256" => Algorithm::ES256,
            "EdDSA" => Algorithm::EdDSA,
            _ => return Err(fail("algorithm")),
        };
        let key = self.key_for(alg, token.kid.as_deref()).await?;
        if key.alg != alg {
            return Err(fail("algorithm"));
        }
        // Ok(false) is a wrong signature, Err one that cannot be a signature
        // for this key: both are `signature`.
        let signed =
            jsonwebtoken::crypto::verify(token.signature, token.message.as_bytes(), &key.key, alg)
                .unwrap_or(false);
        if !signed {
            return Err(fail("signature"));
        }
        self.check_claims(&token.claims, unix_now())
    }

    /// The key a token of `alg` (and `kid`) is checked with (I-7): HS256 only
    /// with the secret; the others with the JWKS key when the token has a
    /// `kid` and a JWKS is configured, else with the PEM key.
    async fn key_for(&self, alg: Algorithm, kid: Option<&str>) -> Result<Arc<Key>, Error> {
        if alg == Algorithm::HS256 {
            return self.secret.clone().ok_or_else(|| fail("algorithm"));
        }
        match (kid, &self.jwks, &self.public_key) {
            (Some(kid), Some(jwks), _) => jwks.key(kid).await?.ok_or_else(|| fail("unknown kid")),
            (_, _, Some(key)) => Ok(key.clone()),
            // Only a JWKS, and the token names no key in it.
            (None, Some(_), None) => Err(fail("unknown kid")),
            (_, None, None) => Err(fail("algorithm")),
        }
    }

    /// `exp`, `nbf`, `iss`, `aud`, `sub`, in this order; then `name`.
    fn check_claims(&self, claims: &Map<String, Value>, now: f64) -> Result<JwtIdentity, Error> {
        // `exp` is required: a token without one (or not a number) is expired.
        match claims.get("exp").and_then(Value::as_f64) {
            Some(exp) if now <= exp + CLOCK_SKEW_SECS => {}
            _ => return Err(fail("expired")),
        }
        if let Some(nbf) = claims.get("nbf") {
            match nbf.as_f64() {
                Some(nbf) if nbf <= now + CLOCK_SKEW_SECS => {}
                _ => return Err(fail("not yet valid")),
            }
        }
        if let Some(issuer) = &self.issuer
            && claims.get("iss").and_then(Value::as_str) != Some(issuer.as_str())
        {
            return Err(fail("issuer"));
        }
        if let Some(audience) = &self.audience {
            let ok = match claims.get("aud") {
                Some(Value::String(aud)) => aud == audience,
                Some(Value::Array(auds)) => auds.iter().any(|a| a.as_str() == Some(audience)),
                _ => false,
            };
            if !ok {
                return Err(fail("audience"));
            }
        }
        let sub = claims
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| valid_subject(s))
            .ok_or_else(|| fail("subject"))?;
        let name = claims
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| tokenim_core::validate::display_name(n).is_ok())
            .map(str::to_owned);
        Ok(JwtIdentity {
            sub: sub.to_owned(),
            name,
        })
    }
}

/// A `sub` is a `user_id` (I1.2): 1-64 of `[A-Za-z0-9_.:-]`, and not one of
/// the server's own `u_...`.
pub fn valid_subject(sub: &str) -> bool {
    (1..=64).contains(&sub.len())
        && sub
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b))
        && !sub.starts_with("u_")
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn non_empty(name: &str, value: &Option<String>) -> anyhow::Result<Option<String>> {
    match value {
        Some(v) if v.is_empty() => bail!("{name} must not be empty"),
        v => Ok(v.clone()),
    }
}

/// A token split and decoded, before any check but `malformed`.
struct Parsed<'a> {
    alg: String,
    kid: Option<String>,
    claims: Map<String, Value>,
    /// `header.payload`, what the signature covers.
    message: &'a str,
    signature: &'a str,
}

impl<'a> Parsed<'a> {
    /// Three base64url parts (no padding), a JSON object header with a
    /// string `alg` (and, if any, a string `kid`, no `crit`), a JSON object
    /// payload; at most [`MAX_TOKEN_BYTES`].
    fn new(token: &'a str) -> Option<Parsed<'a>> {
        if token.len() > MAX_TOKEN_BYTES {
            return None;
        }
        let mut parts = token.split('.');
        let (header, payload, signature) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || header.is_empty() || payload.is_empty() {
            return None;
        }
        // Decoded here so a bad signature encoding is malformed, not a
        // failed signature; an empty one (`alg: none`) gets to `algorithm`.
        URL_SAFE_NO_PAD.decode(signature).ok()?;
        let head = decode_object(header)?;
        let claims = decode_object(payload)?;
        let alg = head.get("alg")?.as_str()?.to_owned();
        let kid = match head.get("kid") {
            None => None,
            Some(kid) => Some(kid.as_str()?.to_owned()),
        };
        // No extension is understood, so none may be critical (RFC 7515 4.1.11).
        if head.contains_key("crit") {
            return None;
        }
        let message = &token[..header.len() + 1 + payload.len()];
        Some(Parsed {
            alg,
            kid,
            claims,
            message,
            signature,
        })
    }
}

fn decode_object(part: &str) -> Option<Map<String, Value>> {
    let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// Whether `key` can verify `alg` (a test verification that the key's
/// material parses; a false signature is expected).
fn usable(alg: Algorithm, key: &DecodingKey) -> bool {
    // The Ed25519 verifier slices the first 32 bytes: shorter would panic.
    if alg == Algorithm::EdDSA && key.try_get_as_bytes().map_or(true, |b| b.len() != 32) {
        return false;
    }
    jsonwebtoken::crypto::verify("", b"", key, alg).is_ok()
}

/// The PEM public key file: RSA (SPKI or PKCS#1), EC P-256 or Ed25519, the
/// type detected from the file.
fn load_public_key(path: &Path) -> anyhow::Result<Key> {
    let what = || format!("auth_jwt_public_key {}", path.display());
    let pem = std::fs::read(path).with_context(|| format!("reading {}", what()))?;
    if let Ok(Some((item, _))) = rustls_pemfile::read_one_from_slice(&pem) {
        use rustls_pemfile::Item;
        match item {
            Item::Pkcs1Key(_) | Item::Pkcs8Key(_) | Item::Sec1Key(_) => bail!(
                "{} is a private key; give its public key (openssl pkey -in KEY -pubout)",
                what()
            ),
            Item::X509Certificate(_) => bail!(
                "{} is a certificate; give its public key (openssl x509 -pubkey -noout -in CERT)",
                what()
            ),
            _ => {}
        }
    }
    type Parse = fn(&[u8]) -> jsonwebtoken::errors::Result<DecodingKey>;
    let kinds: [(Algorithm, Parse); 3] = [
        (Algorithm::RS256, DecodingKey::from_rsa_pem),
        (Algorithm::ES256, DecodingKey::from_ec_pem),
        (Algorithm::EdDSA, DecodingKey::from_ed_pem),
    ];
    for (alg, parse) in kinds {
        if let Ok(key) = parse(&pem)
            && usable(alg, &key)
        {
            tracing::info!(?alg, "jwt public key loaded");
            return Ok(Key { alg, key });
        }
    }
    bail!(
        "{} is not a PEM public key of RSA, EC P-256 or Ed25519",
        what()
    )
}

/// The JWKS endpoint and what was last fetched from it.
struct Jwks {
    url: reqwest::Url,
    client: reqwest::Client,
    timing: JwksTiming,
    state: parking_lot::Mutex<JwksState>,
    /// Held while fetching: one fetch at a time, and callers that wait for
    /// it see its result.
    fetching: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct JwksState {
    /// `None` until a fetch succeeds; then the last good set.
    keys: Option<Arc<KeySet>>,
    fetched_at: Option<Instant>,
    last_attempt: Option<Instant>,
}

impl JwksState {
    fn fresh(&self, max_age: Duration) -> bool {
        self.fetched_at.is_some_and(|t| t.elapsed() < max_age)
    }
}

impl Jwks {
    fn new(url: &str, timing: JwksTiming) -> anyhow::Result<Jwks> {
        let parsed = reqwest::Url::parse(url).context("auth_jwt_jwks_url is not a URL")?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            bail!("auth_jwt_jwks_url must be an http or https URL with a host");
        }
        let client = reqwest::Client::builder()
            .timeout(timing.fetch_timeout)
            .connect_timeout(timing.fetch_timeout)
            .redirect(reqwest::redirect::Policy::limited(3))
            .user_agent(concat!("tokenim/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("building the JWKS client")?;
        Ok(Jwks {
            url: parsed,
            client,
            timing,
            state: parking_lot::Mutex::new(JwksState::default()),
            fetching: tokio::sync::Mutex::new(()),
        })
    }

    /// The key named `kid`: from the cache when it is fresh and knows the
    /// kid, else after a fetch if none was tried within `refetch_min`.
    /// `Ok(None)`: unknown kid; `unavailable` while no fetch ever succeeded.
    async fn key(&self, kid: &str) -> Result<Option<Arc<Key>>, Error> {
        if let Some(key) = self.cached(kid) {
            return Ok(Some(key));
        }
        let _fetching = self.fetching.lock().await;
        if let Some(key) = self.cached(kid) {
            return Ok(Some(key));
        }
        let may_fetch = {
            let mut st = self.state.lock();
            let may = st
                .last_attempt
                .is_none_or(|t| t.elapsed() >= self.timing.refetch_min);
            if may {
                st.last_attempt = Some(Instant::now());
            }
            may
        };
        if may_fetch {
            match self.fetch().await {
                Ok(keys) => {
                    tracing::debug!(keys = keys.len(), "jwks fetched");
                    let mut st = self.state.lock();
                    st.keys = Some(Arc::new(keys));
                    st.fetched_at = Some(Instant::now());
                }
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "jwks fetch failed; keeping the keys we had")
                }
            }
        }
        let st = self.state.lock();
        match &st.keys {
            None => Err(Error::unavailable("jwt: key set unavailable")),
            Some(keys) => Ok(keys.get(kid).cloned()),
        }
    }

    fn cached(&self, kid: &str) -> Option<Arc<Key>> {
        let st = self.state.lock();
        if !st.fresh(self.timing.max_age) {
            return None;
        }
        st.keys.as_ref()?.get(kid).cloned()
    }

    async fn fetch(&self) -> anyhow::Result<KeySet> {
        let mut resp = self
            .client
            .get(self.url.clone())
            .header("accept", "application/json")
            .send()
            .await
            .map_err(reqwest::Error::without_url)?;
        if !resp.status().is_success() {
            bail!("answered {}", resp.status());
        }
        if resp
            .content_length()
            .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
        {
            bail!("larger than {MAX_JWKS_BYTES} bytes");
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(reqwest::Error::without_url)? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                bail!("larger than {MAX_JWKS_BYTES} bytes");
            }
            body.extend_from_slice(&chunk);
        }
        parse_jwks(&body)
    }
}

/// The usable signing keys of a JWKS document, by `kid`: RSA (RS256), EC
/// P-256 (ES256) and Ed25519 (EdDSA) keys with a `kid`, not for encryption,
/// whose `alg` (if given) matches. Other keys are skipped; the first of a
/// repeated `kid` wins.
fn parse_jwks(body: &[u8]) -> anyhow::Result<KeySet> {
    #[derive(serde::Deserialize)]
    struct Doc {
        keys: Vec<Value>,
    }
    let doc: Doc = serde_json::from_slice(body).context("not a JWKS document")?;
    let mut set = KeySet::new();
    for value in doc.keys {
        let Ok(jwk) = serde_json::from_value::<Jwk>(value) else {
            continue;
        };
        let Some(kid) = jwk.common.key_id.clone() else {
            continue;
        };
        if let Some(key) = jwk_key(&jwk) {
            set.entry(kid).or_insert_with(|| Arc::new(key));
        }
    }
    Ok(set)
}

fn jwk_key(jwk: &Jwk) -> Option<Key> {
    if matches!(
        jwk.common.public_key_use,
        Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))
    ) {
        return None;
    }
    let alg = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Algorithm::ES256,
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            Algorithm::EdDSA
        }
        _ => return None,
    };
    if jwk
        .common
        .key_algorithm
        .is_some_and(|a| a != KeyAlgorithm::from(alg))
    {
        return None;
    }
    let key = DecodingKey::from_jwk(jwk).ok()?;
    usable(alg, &key).then_some(Key { alg, key })
}
