//! Server configuration: defaults, then a TOML file, then `TOKENIM_*`
//! environment variables, then command-line flags (the binary applies those
//! last through [`Config::set`]).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use serde::Deserialize;
use tokenim_core::Limits;

use crate::push::PushConfig;
pub use crate::webhooks::config::{OnFailure, Webhook, WebhookConfig, WebhookEvent};

/// One API key of the app's backend (PROTOCOL-INTEGRATION I1.1).
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ApiKey {
    pub name: String,
    pub secret: String,
}

impl std::fmt::Debug for ApiKey {
    /// Never prints the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKey")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Which origins may call `/v1/*` from a browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsOrigins {
    /// No origin configured: the layer does nothing.
    Off,
    /// `*`: every origin, answered with `*`.
    Any,
    /// Exactly these origins (`scheme://host[:port]`).
    List(HashSet<String>),
}

impl CorsOrigins {
    /// From the configured origins; fails with a message naming the first
    /// one that is neither `*` nor `scheme://host[:port]`.
    pub fn new(origins: &[String]) -> anyhow::Result<CorsOrigins> {
        let mut list = HashSet::new();
        let mut any = false;
        for o in origins {
            if o == "*" {
                any = true;
                continue;
            }
            check_origin(o)?;
            list.insert(o.clone());
        }
        Ok(if any {
            CorsOrigins::Any
        } else if list.is_empty() {
            CorsOrigins::Off
        } else {
            CorsOrigins::List(list)
        })
    }
}

/// `scheme://host[:port]` as a browser sends it: `http` or `https`, a
/// lowercase host name, IPv4 or bracketed IPv6 address, an optional port
/// 1-65535, and nothing after.
fn check_origin(o: &str) -> anyhow::Result<()> {
    let bad =
        |why: &str| anyhow::anyhow!("CORS origin {o:?} must be * or scheme://host[:port] ({why})");
    let Some((scheme, rest)) = o.split_once("://") else {
        return Err(bad("no scheme"));
    };
    if scheme != "http" && scheme != "https" {
        return Err(bad("the scheme is http or https"));
    }
    if rest.contains(['/', '?', '#']) {
        return Err(bad("no path, query or fragment, not even a trailing /"));
    }
    if rest.contains('@') {
        return Err(bad("no user name"));
    }
    let port = if let Some(v6) = rest.strip_prefix('[') {
        let Some((addr, after)) = v6.split_once(']') else {
            return Err(bad("an unclosed ["));
        };
        if addr.parse::<std::net::Ipv6Addr>().is_err()
            || addr.contains(|c: char| c.is_ascii_uppercase())
        {
            return Err(bad("not a lowercase IPv6 address in []"));
        }
        match after {
            "" => None,
            p => match p.strip_prefix(':') {
                Some(p) => Some(p),
                None => return Err(bad("junk after ]")),
            },
        }
    } else {
        let (host, port) = match rest.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        };
        let ok = !host.is_empty()
            && host.len() <= 253
            && host
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
        if !ok {
            return Err(bad("the host is lowercase letters, digits, . and -"));
        }
        port
    };
    if let Some(p) = port {
        let ok = !p.is_empty()
            && p.bytes().all(|b| b.is_ascii_digit())
            && p.parse::<u16>().is_ok_and(|n| n > 0);
        if !ok {
            return Err(bad("the port is 1-65535"));
        }
    }
    Ok(())
}

/// Whether anyone may create an account with `POST /v1/accounts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Registration {
    Open,
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

/// Everything `tokenim serve` can be told. Its `Debug` hides every secret
/// (the admin token, the JWT secret, URLs that may carry credentials).
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub log_format: LogFormat,
    /// Argon2id memory cost in KiB and iterations (tests lower them).
    pub argon2_memory_kib: u32,
    pub argon2_iterations: u32,
    /// The API key named `admin` (I1.1).
    pub admin_token: Option<String>,
    /// The app backend's keys for `/v1/server/...` and `/v1/admin/...`.
    pub api_keys: Vec<ApiKey>,
    /// `closed`: only the app's backend creates users.
    pub registration: Registration,
    /// Web origins allowed to call `/v1/*` from a browser (`*`: any).
    pub cors_origins: Vec<String>,
    /// External identity (I1.3): HS256 secret, PEM public key file, JWKS
    /// URL, and the required `iss` and `aud`.
    pub auth_jwt_secret: Option<String>,
    pub auth_jwt_public_key: Option<PathBuf>,
    pub auth_jwt_jwks_url: Option<String>,
    pub auth_jwt_issuer: Option<String>,
    pub auth_jwt_audience: Option<String>,
    /// `postgres://…` or `mysql://…`: keep the timeline there instead of the
    /// embedded engine under `data_dir`.
    pub database_url: Option<String>,
    /// Most connections this node opens to the database.
    pub database_pool: u32,
    /// `redis://…`: run as one node of a cluster (registry, presence, rate
    /// limits and cross-node delivery through Redis).
    pub redis_url: Option<String>,
    /// This node's name in the cluster (unique per node; a random one when
    /// unset).
    pub node_id: Option<String>,
    /// Prefix of every Redis key and channel, so clusters can share a Redis.
    pub redis_prefix: String,
    /// Load balancers whose `X-Forwarded-For` names the client (for the
    /// per-IP login limit); other peers are the client themselves.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// `[push]` and its provider tables (PROTOCOL-INTEGRATION I2); the key
    /// files are read at start ([`crate::push::PushProviders::load`]).
    pub push: PushConfig,
    /// Business webhooks (`[[webhooks]]` tables, file only; I3.1).
    pub webhooks: Vec<WebhookConfig>,
    pub limits: Limits,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |v: &Option<String>| v.as_ref().map(|_| "<hidden>");
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("log_format", &self.log_format)
            .field("argon2_memory_kib", &self.argon2_memory_kib)
            .field("argon2_iterations", &self.argon2_iterations)
            .field("admin_token", &hidden(&self.admin_token))
            .field("api_keys", &self.api_keys)
            .field("registration", &self.registration)
            .field("cors_origins", &self.cors_origins)
            .field("auth_jwt_secret", &hidden(&self.auth_jwt_secret))
            .field("auth_jwt_public_key", &self.auth_jwt_public_key)
            .field("auth_jwt_jwks_url", &hidden(&self.auth_jwt_jwks_url))
            .field("auth_jwt_issuer", &self.auth_jwt_issuer)
            .field("auth_jwt_audience", &self.auth_jwt_audience)
            .field("database_url", &hidden(&self.database_url))
            .field("database_pool", &self.database_pool)
            .field("redis_url", &hidden(&self.redis_url))
            .field("node_id", &self.node_id)
            .field("redis_prefix", &self.redis_prefix)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("push", &self.push)
            .field("webhooks", &self.webhooks)
            .field("limits", &self.limits)
            .finish()
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8080".parse().expect("a valid address"),
            data_dir: PathBuf::from("./data"),
            tls_cert: None,
            tls_key: None,
            log_format: LogFormat::Text,
            argon2_memory_kib: 19_456,
            argon2_iterations: 2,
            admin_token: None,
            api_keys: Vec::new(),
            registration: Registration::Open,
            cors_origins: Vec::new(),
            auth_jwt_secret: None,
            auth_jwt_public_key: None,
            auth_jwt_jwks_url: None,
            auth_jwt_issuer: None,
            auth_jwt_audience: None,
            database_url: None,
            database_pool: 16,
            redis_url: None,
            node_id: None,
            redis_prefix: "tokenim".to_owned(),
            trusted_proxies: Vec::new(),
            push: PushConfig::default(),
            webhooks: Vec::new(),
            limits: Limits::default(),
        }
    }
}

/// The top-level settings, by their names in the file and after `TOKENIM_`.
pub const SETTINGS: [&str; 23] = [
    "listen",
    "data_dir",
    "tls_cert",
    "tls_key",
    "log_format",
    "argon2_memory_kib",
    "argon2_iterations",
    "admin_token",
    "api_keys",
    "registration",
    "cors_origins",
    "auth_jwt_secret",
    "auth_jwt_public_key",
    "auth_jwt_jwks_url",
    "auth_jwt_issuer",
    "auth_jwt_audience",
    "database_url",
    "database_pool",
    "redis_url",
    "node_id",
    "redis_prefix",
    "trusted_proxies",
    "push_preview",
];

impl Config {
    /// Defaults, overlaid by `file` (if any) and by the environment.
    pub fn load(
        file: Option<&std::path::Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> anyhow::Result<Config> {
        let mut cfg = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading config file {}", path.display()))?;
                toml::from_str(&text)
                    .with_context(|| format!("parsing config file {}", path.display()))?
            }
            None => Config::default(),
        };
        for (k, v) in env {
            if let Some(name) = k.strip_prefix("TOKENIM_LIMITS_") {
                let name = name.to_ascii_lowercase();
                let n: u64 = v
                    .parse()
                    .with_context(|| format!("{k} must be a whole number"))?;
                cfg.limits.set(&name, n).map_err(anyhow::Error::msg)?;
            } else if let Some(name) = k.strip_prefix("TOKENIM_") {
                let name = name.to_ascii_lowercase();
                if SETTINGS.contains(&name.as_str()) {
                    cfg.set(&name, &v).with_context(|| format!("from {k}"))?;
                }
            }
        }
        cfg.limits.check().map_err(anyhow::Error::msg)?;
        Ok(cfg)
    }

    /// Sets one top-level setting from text.
    pub fn set(&mut self, name: &str, value: &str) -> anyhow::Result<()> {
        match name {
            "listen" => self.listen = value.parse().context("listen must be HOST:PORT")?,
            "data_dir" => self.data_dir = value.into(),
            "tls_cert" => self.tls_cert = Some(value.into()),
            "tls_key" => self.tls_key = Some(value.into()),
            "log_format" => {
                self.log_format = match value {
                    "text" => LogFormat::Text,
                    "json" => LogFormat::Json,
                    _ => bail!("log_format must be text or json"),
                }
            }
            "argon2_memory_kib" => self.argon2_memory_kib = value.parse()?,
            "argon2_iterations" => self.argon2_iterations = value.parse()?,
            "admin_token" => self.admin_token = Some(value.into()),
            "api_keys" => {
                // `N1=S1,N2=S2` from the environment: replaces the list.
                self.api_keys.clear();
                for pair in value.split(',').filter(|p| !p.trim().is_empty()) {
                    self.add_api_key(pair)?;
                }
            }
            "api_key" => self.add_api_key(value)?,
            "registration" => {
                self.registration = match value {
                    "open" => Registration::Open,
                    "closed" => Registration::Closed,
                    _ => bail!("registration must be open or closed"),
                }
            }
            "cors_origins" => {
                self.cors_origins = value
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            }
            "cors_origin" => self.cors_origins.push(value.trim().to_owned()),
            "auth_jwt_secret" => self.auth_jwt_secret = Some(value.into()),
            "auth_jwt_public_key" => self.auth_jwt_public_key = Some(value.into()),
            "auth_jwt_jwks_url" => self.auth_jwt_jwks_url = Some(value.into()),
            "auth_jwt_issuer" => self.auth_jwt_issuer = Some(value.into()),
            "auth_jwt_audience" => self.auth_jwt_audience = Some(value.into()),
            "database_url" => self.database_url = Some(value.into()),
            "database_pool" => {
                self.database_pool = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=1024).contains(n))
                    .context("database_pool must be 1..=1024")?
            }
            "redis_url" => self.redis_url = Some(value.into()),
            "node_id" => {
                let ok = !value.is_empty()
                    && value.len() <= 64
                    && value
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                if !ok {
                    bail!("node_id is 1-64 letters, digits, - or _");
                }
                self.node_id = Some(value.into())
            }
            "trusted_proxies" => {
                self.trusted_proxies = value
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| s.parse())
                    .collect::<Result<_, _>>()
                    .context("trusted_proxies is a comma-separated list of IP addresses")?
            }
            "redis_prefix" => {
                if value.is_empty() || value.len() > 64 || value.contains(char::is_whitespace) {
                    bail!("redis_prefix is 1-64 characters without spaces");
                }
                self.redis_prefix = value.into()
            }
            // `[push] preview` in the file.
            "push_preview" => self.push.preview = value.parse()?,
            other => bail!("unknown setting {other:?}"),
        }
        Ok(())
    }

    /// Adds one API key from `NAME=SECRET` text.
    pub fn add_api_key(&mut self, pair: &str) -> anyhow::Result<()> {
        let (name, secret) = pair
            .trim()
            .split_once('=')
            .context("an API key is given as NAME=SECRET")?;
        self.api_keys.push(ApiKey {
            name: name.to_owned(),
            secret: secret.to_owned(),
        });
        Ok(())
    }

    /// Every API key, `admin_token` as the key `admin`; checks names are
    /// 1-64 of `[A-Za-z0-9_.:-]` and unique, and secrets 1-256 printable
    /// ASCII characters (I-1).
    pub fn all_api_keys(&self) -> anyhow::Result<Vec<ApiKey>> {
        let mut keys = self.api_keys.clone();
        if let Some(s) = &self.admin_token {
            keys.push(ApiKey {
                name: "admin".to_owned(),
                secret: s.clone(),
            });
        }
        let mut seen = std::collections::HashSet::new();
        for k in &keys {
            let name_ok = !k.name.is_empty()
                && k.name.len() <= 64
                && k.name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b));
            if !name_ok {
                bail!(
                    "API key name {:?} must be 1-64 of A-Z a-z 0-9 _ . : -",
                    k.name
                );
            }
            if k.secret.is_empty()
                || k.secret.len() > 256
                || !k.secret.bytes().all(|b| b.is_ascii_graphic())
            {
                bail!(
                    "the secret of API key {:?} must be 1-256 printable ASCII characters",
                    k.name
                );
            }
            if !seen.insert(k.name.as_str()) {
                bail!("API key name {:?} is given twice", k.name);
            }
        }
        Ok(keys)
    }

    /// Every `[[webhooks]]` table, checked
    /// ([`crate::webhooks::config::check`]).
    pub fn webhooks(&self) -> anyhow::Result<Vec<Webhook>> {
        crate::webhooks::config::check(&self.webhooks)
    }

    /// Sets one limit from `NAME=VALUE` text.
    pub fn set_limit(&mut self, pair: &str) -> anyhow::Result<()> {
        let (k, v) = pair
            .split_once('=')
            .context("a limit is given as NAME=VALUE")?;
        let n: u64 = v.parse().context("a limit is a whole number")?;
        self.limits.set(k, n).map_err(anyhow::Error::msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_checked() {
        for good in [
            "https://app.example.com",
            "http://localhost:5173",
            "http://127.0.0.1:8080",
            "https://[::1]:8443",
            "https://[2001:db8::1]",
        ] {
            assert!(CorsOrigins::new(&[good.to_owned()]).is_ok(), "{good}");
        }
        for bad in [
            "app.example.com",
            "ftp://app.example.com",
            "https://app.example.com/",
            "https://app.example.com/path",
            "https://App.example.com",
            "https://",
            "https://a.com:0",
            "https://a.com:99999",
            "https://a.com:",
            "https://user@a.com",
            "https://[::1",
            "https://[nope]",
            "null",
            "",
        ] {
            let e = CorsOrigins::new(&[bad.to_owned()])
                .expect_err(bad)
                .to_string();
            assert!(e.contains("CORS origin"), "{e}");
        }
    }

    #[test]
    fn env_overrides_file_and_defaults() {
        let dir = std::env::temp_dir().join(format!("tokenim-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("c.toml");
        std::fs::write(
            &f,
            "listen = \"127.0.0.1:9000\"\n[limits]\nheartbeat_ms = 5000\nsend_burst = 7\n",
        )
        .unwrap();
        let env = vec![
            ("TOKENIM_LIMITS_SEND_BURST".to_string(), "9".to_string()),
            ("TOKENIM_DATA_DIR".to_string(), "/tmp/x".to_string()),
            ("PATH".to_string(), "/bin".to_string()),
        ];
        let c = Config::load(Some(&f), env).unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.limits.heartbeat_ms, 5000);
        assert_eq!(c.limits.send_burst, 9);
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
        assert!(Config::load(None, vec![("TOKENIM_LIMITS_NOPE".into(), "1".into())]).is_err());
    }

    #[test]
    fn api_keys_from_env_and_flags_and_no_secret_in_debug() {
        let env = vec![
            (
                "TOKENIM_API_KEYS".to_string(),
                "shop=s3cret-one,crm=s3cret-two".to_string(),
            ),
            (
                "TOKENIM_AUTH_JWT_SECRET".to_string(),
                "jwt-s3cret".to_string(),
            ),
            (
                "TOKENIM_ADMIN_TOKEN".to_string(),
                "adm1n-s3cret".to_string(),
            ),
            ("TOKENIM_REGISTRATION".to_string(), "closed".to_string()),
        ];
        let mut c = Config::load(None, env).unwrap();
        c.add_api_key("bot=s3cret-three").unwrap();
        let names: Vec<String> = c
            .all_api_keys()
            .unwrap()
            .into_iter()
            .map(|k| k.name)
            .collect();
        assert_eq!(names, ["shop", "crm", "bot", "admin"].map(String::from));
        assert_eq!(c.registration, Registration::Closed);
        let shown = format!("{c:?}");
        for secret in [
            "s3cret-one",
            "s3cret-two",
            "s3cret-three",
            "jwt-s3cret",
            "adm1n-s3cret",
        ] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        // A second key named admin clashes with the admin token (I-1).
        c.add_api_key("admin=other").unwrap();
        assert!(c.all_api_keys().is_err());
        assert!(c.add_api_key("no-equals-sign").is_err());
    }

    fn with_webhooks(toml_text: &str) -> anyhow::Result<Vec<Webhook>> {
        let c: Config = toml::from_str(toml_text)?;
        c.webhooks()
    }

    #[test]
    fn webhooks_are_read_with_defaults_and_never_show_secrets() {
        let text = r#"
            [[webhooks]]
            url = "https://app.example/hooks/check"
            secret = "wh-s3cret-one"
            events = ["message.before_send", "message.created"]

            [[webhooks]]
            name = "audit"
            url = "http://10.0.0.5:9000/audit"
            secrets = ["wh-s3cret-new", "wh-s3cret-old"]
            events = ["message.before_send"]
            timeout_ms = 500
            on_failure = "reject"

            [[webhooks]]
            name = "after"
            url = "http://10.0.0.5:9000/after"
            secret = "wh-s3cret-after"
            events = ["member.joined", "read.updated"]
        "#;
        let c: Config = toml::from_str(text).unwrap();
        let hooks = c.webhooks().unwrap();
        assert_eq!(hooks.len(), 3);
        assert_eq!(hooks[0].name, "https://app.example/hooks/check");
        assert_eq!(
            (hooks[0].timeout_ms, hooks[0].on_failure),
            (2000, OnFailure::Allow)
        );
        assert!(hooks[0].subscribes(WebhookEvent::MessageCreated));
        assert_eq!(
            (hooks[1].timeout_ms, hooks[1].on_failure),
            (500, OnFailure::Reject)
        );
        assert_eq!(hooks[1].secrets.len(), 2);
        assert!(!hooks[2].subscribes(WebhookEvent::BeforeSend));
        let shown = format!("{c:?} {hooks:?}");
        assert!(shown.contains("audit"), "{shown}");
        for secret in [
            "wh-s3cret-one",
            "wh-s3cret-new",
            "wh-s3cret-old",
            "wh-s3cret-after",
        ] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
    }

    #[test]
    fn bad_webhooks_stop_startup_naming_the_webhook_not_the_secret() {
        let hook = |extra: &str| {
            format!("[[webhooks]]\nname = \"shop\"\nsecret = \"sEcReT-x\"\n{extra}\n")
        };
        let cases = [
            (hook("url = \"ftp://x/y\"\nevents = [\"message.created\"]"), "http or https"),
            (hook("url = \"not a url\"\nevents = [\"message.created\"]"), "http or https"),
            (hook("url = \"http://u:p@x/y\"\nevents = [\"message.created\"]"), "credentials"),
            (hook("url = \"http://x/y\"\nevents = []"), "at least one event"),
            (hook("url = \"http://x/y\"\nevents = [\"message.sent\"]"), "unknown event"),
            (
                hook("url = \"http://x/y\"\nevents = [\"message.before_send\"]\ntimeout_ms = 0"),
                "timeout_ms",
            ),
            (
                hook("url = \"http://x/y\"\nevents = [\"message.before_send\"]\ntimeout_ms = 30001"),
                "timeout_ms",
            ),
            (
                hook("url = \"http://x/y\"\nevents = [\"message.before_send\"]\non_failure = \"drop\""),
                "on_failure",
            ),
            (
                hook("url = \"http://x/y\"\nevents = [\"message.created\"]\ntimeout_ms = 10"),
                "only to message.before_send",
            ),
            (
                hook("url = \"http://x/y\"\nevents = [\"message.created\"]\nsecrets = [\"b\"]"),
                "not both",
            ),
            (
                hook("url = \"http://x/y\"\nevents = [\"message.created\"]")
                    + &hook("url = \"http://x/z\"\nevents = [\"message.created\"]"),
                "unique",
            ),
            (
                "[[webhooks]]\nname = \"shop\"\nurl = \"http://x/y\"\nevents = [\"message.created\"]\n".to_owned(),
                "needs a secret",
            ),
            (
                "[[webhooks]]\nname = \"shop\"\nurl = \"http://x/y\"\nsecrets = []\nevents = [\"message.created\"]\n".to_owned(),
                "at least one secret",
            ),
            (
                format!(
                    "[[webhooks]]\nname = \"shop\"\nurl = \"http://x/y\"\nsecret = \"{}\"\nevents = [\"message.created\"]\n",
                    "s".repeat(257)
                ),
                "1-256 bytes",
            ),
        ];
        for (text, want) in cases {
            let e = format!("{:#}", with_webhooks(&text).unwrap_err());
            assert!(e.contains(want), "{text}: {e}");
            assert!(
                e.contains("\"shop\""),
                "{text}: {e} does not name the webhook"
            );
            assert!(!e.contains("sEcReT"), "{text}: {e} shows the secret");
        }
    }
}
