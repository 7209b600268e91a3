//! Passwords (Argon2id, hashed off the async runtime) and bearer tokens
//! (HMAC-SHA256 over the session, with a key kept in the data directory).

use std::path::Path;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use tokenim_core::Error;

type HmacSha256 = Hmac<Sha256>;

/// Hashes and checks passwords with Argon2id at a configured cost.
#[derive(Clone)]
pub struct Passwords {
    params: Params,
    /// A hash at the configured cost, verified against for unknown users so
    /// that a login's timing does not tell whether the username exists.
    dummy: std::sync::Arc<std::sync::OnceLock<String>>,
}

impl Passwords {
    pub fn new(memory_kib: u32, iterations: u32) -> anyhow::Result<Self> {
        let params = Params::new(memory_kib, iterations, 1, None)
            .map_err(|e| anyhow::anyhow!("argon2 parameters: {e}"))?;
        Ok(Passwords {
            params,
            dummy: Default::default(),
        })
    }

    fn argon(&self) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone())
    }

    /// Hashes on a blocking thread.
    pub async fn hash(&self, password: String) -> Result<String, Error> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.hash_now(&password))
            .await
            .map_err(|_| Error::internal("password hashing failed"))?
    }

    pub fn hash_now(&self, password: &str) -> Result<String, Error> {
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        self.argon()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|_| Error::internal("password hashing failed"))
    }

    /// Spends the time of one verification, for logins of unknown users.
    pub async fn verify_nothing(&self, password: String) {
        let me = self.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let hash = me
                .dummy
                .get_or_init(|| me.hash_now("not a password").unwrap_or_default());
            if let Ok(h) = PasswordHash::new(hash) {
                let _ = me.argon().verify_password(password.as_bytes(), &h);
            }
        })
        .await;
    }

    /// Verifies on a blocking thread; `false` for a wrong password.
    pub async fn verify(&self, password: String, hash: String) -> bool {
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            PasswordHash::new(&hash)
                .map(|h| me.argon().verify_password(password.as_bytes(), &h).is_ok())
                .unwrap_or(false)
        })
        .await
        .unwrap_or(false)
    }
}

/// The app backend's API keys (PROTOCOL-INTEGRATION I1.1), held as
/// SHA-256 digests and compared in constant time.
pub struct ApiKeys {
    keys: Vec<(String, [u8; 32])>,
}

impl ApiKeys {
    pub fn new(keys: &[crate::config::ApiKey]) -> ApiKeys {
        ApiKeys {
            keys: keys
                .iter()
                .map(|k| (k.name.clone(), Self::digest(&k.secret)))
                .collect(),
        }
    }

    fn digest(s: &str) -> [u8; 32] {
        use sha2::Digest;
        Sha256::digest(s.as_bytes()).into()
    }

    /// The name of the key whose secret is `given`, if any. Every key is
    /// compared, each in constant time, so timing tells nothing.
    pub fn find(&self, given: &str) -> Option<&str> {
        use subtle::ConstantTimeEq;
        let d = Self::digest(given);
        let mut found = None;
        for (name, want) in &self.keys {
            if bool::from(want.ct_eq(&d)) {
                found = Some(name.as_str());
            }
        }
        found
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub session_id: String,
    pub user_id: String,
    pub device_id: String,
    pub expires_at: i64,
}

/// Signs and checks tokens. A token is `base64(claims).base64(hmac)`; it is
/// valid while its signature checks, it has not expired, and its session
/// still exists (so revocation is immediate).
pub struct Tokens {
    key: [u8; 32],
}

impl Tokens {
    /// Loads the key from `dir/token.key`, creating it on first start.
    pub fn load_or_create(dir: &Path) -> anyhow::Result<Tokens> {
        if let Some(key) = Self::read_key(dir)? {
            return Ok(Tokens { key });
        }
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        Self::save_key(dir, &key)?;
        Ok(Tokens { key })
    }

    /// Signs with a given key (a cluster's, shared by every node).
    pub fn from_key(key: [u8; 32]) -> Tokens {
        Tokens { key }
    }

    /// The key in `dir/token.key`, if there is one.
    pub fn read_key(dir: &Path) -> anyhow::Result<Option<[u8; 32]>> {
        let path = dir.join("token.key");
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes.as_slice().try_into().map_err(|_| {
                anyhow::anyhow!("{} must hold 32 bytes", path.display())
            })?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(anyhow::anyhow!("reading {}: {e}", path.display())),
        }
    }

    /// Writes `dir/token.key` atomically, readable by its owner only.
    pub fn save_key(dir: &Path, key: &[u8; 32]) -> anyhow::Result<()> {
        let tmp = dir.join("token.key.tmp");
        std::fs::write(&tmp, key)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
        }
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, dir.join("token.key"))?;
        Ok(())
    }

    fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key length")
    }

    pub fn sign(&self, c: &Claims) -> String {
        let body = format!(
            "{}\n{}\n{}\n{}",
            c.session_id, c.user_id, c.device_id, c.expires_at
        );
        let mut mac = self.mac();
        mac.update(body.as_bytes());
        let sig = mac.finalize().into_bytes();
        format!("{}.{}", B64.encode(body), B64.encode(sig))
    }

    /// Checks the signature and expiry (not the session: the caller does).
    pub fn verify(&self, token: &str, now_ms: i64) -> Result<Claims, Error> {
        let bad = || Error::unauthorized("invalid or expired token");
        if token.len() > 1024 {
            return Err(bad());
        }
        let (body, sig) = token.split_once('.').ok_or_else(bad)?;
        let body = B64.decode(body).map_err(|_| bad())?;
        let sig = B64.decode(sig).map_err(|_| bad())?;
        let mut mac = self.mac();
        mac.update(&body);
        mac.verify_slice(&sig).map_err(|_| bad())?;
        let body = String::from_utf8(body).map_err(|_| bad())?;
        let mut parts = body.split('\n');
        let mut next = || parts.next().map(str::to_owned).ok_or_else(bad);
        let claims = Claims {
            session_id: next()?,
            user_id: next()?,
            device_id: next()?,
            expires_at: next()?.parse().map_err(|_| bad())?,
        };
        if claims.expires_at <= now_ms {
            return Err(bad());
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_keys_match_exactly() {
        let keys = ApiKeys::new(&[
            crate::config::ApiKey {
                name: "admin".into(),
                secret: "s3cret-one".into(),
            },
            crate::config::ApiKey {
                name: "crm".into(),
                secret: "s3cret-two".into(),
            },
        ]);
        assert_eq!(keys.find("s3cret-one"), Some("admin"));
        assert_eq!(keys.find("s3cret-two"), Some("crm"));
        assert_eq!(keys.find("s3cret-on"), None);
        assert_eq!(keys.find(""), None);
    }

    #[test]
    fn tokens_round_trip_and_reject_tampering() {
        let dir = std::env::temp_dir().join(format!("tokenim-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let t = Tokens::load_or_create(&dir).unwrap();
        let c = Claims {
            session_id: "s_1".into(),
            user_id: "u_1".into(),
            device_id: "d".into(),
            expires_at: 1000,
        };
        let tok = t.sign(&c);
        assert_eq!(t.verify(&tok, 999).unwrap(), c);
        assert!(t.verify(&tok, 1000).is_err());
        let mut forged = tok.clone();
        forged.insert(1, 'x');
        assert!(t.verify(&forged, 0).is_err());
        let again = Tokens::load_or_create(&dir).unwrap();
        assert_eq!(again.verify(&tok, 0).unwrap(), c);
    }
}
