//! Accounts and sessions: registration, login (password or the app's JWT)
//! and logout, bearer-token authentication, looking users up, and the
//! server API's users of the app's own IDs: create-or-update, deactivate,
//! and sessions minted for them (PROTOCOL-INTEGRATION I1.2, I1.3).

use std::collections::HashMap;
use std::sync::Arc;

use tokenim_core::clock::now_ms;
use tokenim_core::{Error, Limits, Result, validate};
use tokenim_proto::*;
use tokenim_store::{Patch, PutUser, Store, User};

use crate::auth::{Claims, Passwords, Tokens};
use crate::delivery::fanout::Fanout;
use crate::jwt::{self, JwtAuth};
use crate::services::Actor;

/// The shortest session the server API mints (I-5).
pub const MIN_MINTED_TTL_MS: u64 = 60_000;
/// Longest `avatar_url`.
pub const MAX_AVATAR_URL_BYTES: usize = 2048;

pub struct Accounts {
    store: Arc<dyn Store>,
    limits: Limits,
    tokens: Tokens,
    passwords: Passwords,
    fanout: Arc<Fanout>,
    /// The app's identity provider, when one is configured (I1.3).
    jwt: Option<Arc<JwtAuth>>,
}

impl Accounts {
    pub fn new(
        store: Arc<dyn Store>,
        limits: Limits,
        tokens: Tokens,
        passwords: Passwords,
        fanout: Arc<Fanout>,
        jwt: Option<Arc<JwtAuth>>,
    ) -> Self {
        Accounts {
            store,
            limits,
            tokens,
            passwords,
            fanout,
            jwt,
        }
    }

    /// Checks a bearer token: signature, expiry, and that its session lives.
    pub async fn authenticate(&self, token: &str) -> Result<Actor> {
        let claims: Claims = self.tokens.verify(token, now_ms())?;
        match self.store.session(&claims.session_id).await? {
            Some(s) if s.user_id == claims.user_id && s.device_id == claims.device_id => {
                Ok(Actor {
                    user_id: claims.user_id,
                    device_id: claims.device_id,
                    session_id: claims.session_id,
                    conn: 0,
                })
            }
            _ => Err(Error::unauthorized("invalid or expired token")),
        }
    }

    pub async fn register(&self, req: CreateAccount) -> Result<AccountCreated> {
        validate::username(&req.username)?;
        validate::password(&req.password)?;
        let display = req.display_name.unwrap_or_else(|| req.username.clone());
        validate::display_name(&display)?;
        if self.store.user_by_name(&req.username).await?.is_some() {
            return Err(Error::conflict("username is taken"));
        }
        let hash = self.passwords.hash(req.password).await?;
        let mut out = self
            .store
            .create_users(vec![tokenim_store::NewUser {
                username: req.username,
                display_name: display,
                password_hash: hash,
                now_ms: now_ms(),
            }])
            .await?;
        let user = out.pop().ok_or_else(|| Error::internal("no result"))??;
        Ok(AccountCreated {
            user_id: user.user_id,
        })
    }

    /// Creates many accounts at once (operators, benchmarks); accounts
    /// with the same password share one hash computation. Answers each
    /// user ID, or `None` where the username was taken or invalid.
    pub async fn bulk_register(&self, reqs: Vec<CreateAccount>) -> Result<Vec<Option<String>>> {
        let mut hashes: HashMap<String, String> = HashMap::new();
        let mut news = Vec::with_capacity(reqs.len());
        let mut slots = Vec::with_capacity(reqs.len());
        let now = now_ms();
        for r in reqs {
            let display = r.display_name.unwrap_or_else(|| r.username.clone());
            let ok = validate::username(&r.username).is_ok()
                && validate::password(&r.password).is_ok()
                && validate::display_name(&display).is_ok();
            if !ok {
                slots.push(false);
                continue;
            }
            let hash = match hashes.get(&r.password) {
                Some(h) => h.clone(),
                None => {
                    let h = self.passwords.hash(r.password.clone()).await?;
                    hashes.insert(r.password, h.clone());
                    h
                }
            };
            news.push(tokenim_store::NewUser {
                username: r.username,
                display_name: display,
                password_hash: hash,
                now_ms: now,
            });
            slots.push(true);
        }
        let mut created = self.store.create_users(news).await?.into_iter();
        Ok(slots
            .into_iter()
            .map(|ok| {
                if ok {
                    created.next().and_then(|r| r.ok()).map(|u| u.user_id)
                } else {
                    None
                }
            })
            .collect())
    }

    pub async fn login(&self, req: CreateSession) -> Result<SessionCreated> {
        validate::device_id(&req.device_id)?;
        validate::platform(&req.platform)?;
        if req.username.len() > 64 || req.password.len() > 4 * 128 {
            return Err(Error::unauthorized("wrong username or password"));
        }
        let user = self.store.user_by_name(&req.username).await?;
        let hash = user.as_ref().and_then(|u| u.password_hash.clone());
        let (Some(user), Some(hash)) = (user, hash) else {
            // Same cost as a wrong password, so timing tells nothing.
            self.passwords.verify_nothing(req.password).await;
            return Err(Error::unauthorized("wrong username or password"));
        };
        // A deactivated user fails as a wrong password (I-4), after the
        // same work.
        if !self.passwords.verify(req.password, hash).await || user.deactivated {
            return Err(Error::unauthorized("wrong username or password"));
        }
        self.open_session(&user.user_id, req.device_id, req.platform, None)
            .await
    }

    /// `POST /v1/sessions` with the app's JWT (I1.3, I-6): its subject is
    /// the user, created on first sign-in, its valid `name` their display
    /// name at each sign-in.
    pub async fn login_jwt(&self, req: JwtSession) -> Result<SessionCreated> {
        validate::device_id(&req.device_id)?;
        validate::platform(&req.platform)?;
        let auth = self.jwt.as_ref().ok_or_else(jwt::not_configured)?;
        let who = auth.verify(&req.jwt).await?;
        let user = self.store.user(&who.sub).await?;
        if user.as_ref().is_some_and(|u| u.deactivated) {
            return Err(Error::unauthorized("jwt: deactivated"));
        }
        let stale = match (&user, &who.name) {
            (None, _) => true,
            (Some(u), Some(n)) => u.display_name != *n,
            (Some(_), None) => false,
        };
        if stale {
            let put = PutUser {
                user_id: who.sub.clone(),
                username: Patch::Keep,
                display_name: who.name.clone().map_or(Patch::Keep, Patch::Set),
                password_hash: Patch::Keep,
                avatar_url: Patch::Keep,
                metadata: Patch::Keep,
                now_ms: now_ms(),
            };
            if let Err(e) = self.store.put_user(put).await {
                let e = Error::from(e);
                // Deactivated between the read and the write.
                if e.code == ErrorCode::Conflict {
                    return Err(Error::unauthorized("jwt: deactivated"));
                }
                return Err(e);
            }
        }
        self.open_session(&who.sub, req.device_id, req.platform, None)
            .await
    }

    /// A new session of `user_id` on `device_id`, lasting `ttl_ms` (else
    /// `token_ttl_ms`), and its signed token.
    async fn open_session(
        &self,
        user_id: &str,
        device_id: String,
        platform: String,
        ttl_ms: Option<u64>,
    ) -> Result<SessionCreated> {
        let now = now_ms();
        let ttl = ttl_ms.unwrap_or(self.limits.token_ttl_ms);
        let expires_at = now.saturating_add(ttl.min(i64::MAX as u64) as i64);
        let session = tokenim_store::Session {
            session_id: tokenim_store::ids::session_id(now),
            user_id: user_id.to_owned(),
            device_id: device_id.clone(),
            created_at: now,
            expires_at,
        };
        let device = tokenim_store::Device {
            user_id: user_id.to_owned(),
            device_id: device_id.clone(),
            platform,
            last_seen: now,
            synced_before: false,
            push: None,
            push_last: None,
        };
        let token = self.tokens.sign(&Claims {
            session_id: session.session_id.clone(),
            user_id: user_id.to_owned(),
            device_id: device_id.clone(),
            expires_at,
        });
        self.store.create_session(session, device).await?;
        Ok(SessionCreated {
            token,
            user_id: user_id.to_owned(),
            device_id,
            expires_at,
        })
    }

    /// Ends the session; the device stays listed but loses its push
    /// registration (I2.1), dropped first so a failure leaves the session
    /// to log out again.
    pub async fn logout(&self, a: &Actor) -> Result<()> {
        match self
            .store
            .set_push_token(&a.user_id, &a.device_id, None)
            .await
        {
            Err(tokenim_store::StoreError::Rejected(e)) if e.code == ErrorCode::NotFound => {}
            r => r?,
        }
        self.store.delete_session(&a.session_id).await?;
        self.fanout
            .kick(&a.user_id, &a.device_id, KickReason::LoggedOut)
            .await;
        Ok(())
    }

    pub async fn user_info(&self, user_id: &str) -> Result<UserInfo> {
        validate::opaque_id("user_id", user_id)?;
        let u = self.store.user(user_id).await?;
        let u = u.ok_or_else(|| Error::not_found("no such user"))?;
        Ok(device_view(u))
    }

    pub async fn find_users(&self, username: &str) -> Result<UserList> {
        if username.len() > 64 {
            return Err(Error::bad_request("username is too long"));
        }
        let u = self.store.user_by_name(username).await?;
        Ok(UserList {
            users: u.into_iter().map(device_view).collect(),
        })
    }
}

/// A user as devices see them (I-3): no `metadata`, no password facts.
pub fn device_view(u: User) -> UserInfo {
    UserInfo {
        user_id: u.user_id,
        username: u.username,
        display_name: u.display_name,
        avatar_url: u.avatar_url,
        deactivated: u.deactivated,
    }
}

/// A user as the server API shows them (I1.2).
pub fn server_view(u: User) -> ServerUser {
    let metadata = u
        .metadata
        .as_deref()
        .and_then(|m| serde_json::from_str(m).ok())
        .unwrap_or_else(|| serde_json::Value::Object(Default::default()));
    ServerUser {
        user_id: u.user_id,
        has_password: u.password_hash.is_some(),
        username: u.username,
        display_name: u.display_name,
        avatar_url: u.avatar_url,
        metadata,
        deactivated: u.deactivated,
        created_at: u.created_at,
    }
}

/// The server API (PROTOCOL-INTEGRATION I1.2): users of the app's own IDs.
impl Accounts {
    /// Creates or updates a user by ID (I-2); `true` when created.
    pub async fn server_put(
        &self,
        user_id: &str,
        req: ServerPutUser,
    ) -> Result<(ServerUser, bool)> {
        validate::app_id("user_id", user_id)?;
        let username = match req.username {
            None => Patch::Keep,
            Some(None) => Patch::Clear,
            Some(Some(n)) => {
                validate::username(&n)?;
                Patch::Set(n)
            }
        };
        let display_name = match req.display_name {
            None => Patch::Keep,
            Some(None) => Patch::Clear,
            Some(Some(n)) => {
                validate::display_name(&n)?;
                Patch::Set(n)
            }
        };
        let avatar_url = match req.avatar_url {
            None => Patch::Keep,
            Some(None) => Patch::Clear,
            Some(Some(u)) => {
                avatar_url(&u)?;
                Patch::Set(u)
            }
        };
        let metadata = match req.metadata {
            None => Patch::Keep,
            Some(None) => Patch::Clear,
            Some(Some(m)) => Patch::Set(self.metadata(&m)?),
        };
        let password_hash = match req.password {
            None => Patch::Keep,
            Some(None) => Patch::Clear,
            Some(Some(p)) => {
                validate::password(&p)?;
                Patch::Set(self.passwords.hash(p).await?)
            }
        };
        let put = PutUser {
            user_id: user_id.to_owned(),
            username,
            display_name,
            password_hash,
            avatar_url,
            metadata,
            now_ms: now_ms(),
        };
        let (user, created) = self.store.put_user(put).await?;
        Ok((server_view(user), created))
    }

    /// The user, as the server API shows them.
    pub async fn server_get(&self, user_id: &str) -> Result<ServerUser> {
        validate::app_id("user_id", user_id)?;
        let u = self.store.user(user_id).await?;
        Ok(server_view(
            u.ok_or_else(|| Error::not_found("no such user"))?,
        ))
    }

    /// Deactivates the user (I1.2, I-4): every session is revoked and every
    /// socket of theirs, on any node, is kicked (`deactivated`, close
    /// 4002). Again on a deactivated user: the same answer.
    pub async fn deactivate(&self, user_id: &str) -> Result<()> {
        validate::app_id("user_id", user_id)?;
        if self.store.deactivate_user(user_id).await?.is_none() {
            return Err(Error::not_found("no such user"));
        }
        self.fanout
            .kick_user(user_id, KickReason::Deactivated)
            .await;
        Ok(())
    }

    /// A session minted for the user's device by the app's backend (I1.2,
    /// I-5), answered as a password login.
    pub async fn mint(&self, user_id: &str, req: MintSession) -> Result<SessionCreated> {
        validate::app_id("user_id", user_id)?;
        validate::device_id(&req.device_id)?;
        validate::platform(&req.platform)?;
        let ttl = match req.ttl_ms {
            Some(t) if t < MIN_MINTED_TTL_MS => {
                return Err(Error::bad_request(format!(
                    "ttl_ms must be at least {MIN_MINTED_TTL_MS}"
                )));
            }
            Some(t) => t.min(self.limits.token_ttl_ms),
            None => self.limits.token_ttl_ms,
        };
        let user = self.store.user(user_id).await?;
        let user = user.ok_or_else(|| Error::not_found("no such user"))?;
        if user.deactivated {
            return Err(Error::forbidden("the user is deactivated"));
        }
        self.open_session(user_id, req.device_id, req.platform, Some(ttl))
            .await
    }

    /// `metadata` checked (an object, at most `user_metadata_bytes`
    /// compact) and compacted.
    fn metadata(&self, m: &serde_json::Value) -> Result<String> {
        if !m.is_object() {
            return Err(Error::bad_request("metadata must be a JSON object"));
        }
        let text = serde_json::to_string(m).expect("a JSON value serializes");
        if text.len() as u64 > self.limits.user_metadata_bytes {
            return Err(Error::too_large(format!(
                "metadata is over {} bytes",
                self.limits.user_metadata_bytes
            )));
        }
        Ok(text)
    }
}

/// An `avatar_url`: an `http://` or `https://` URL of at most
/// [`MAX_AVATAR_URL_BYTES`] visible ASCII characters.
fn avatar_url(u: &str) -> Result<()> {
    let ok = u.len() <= MAX_AVATAR_URL_BYTES
        && (u.starts_with("https://") || u.starts_with("http://"))
        && u.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(Error::bad_request(format!(
            "avatar_url must be an http(s) URL of at most {MAX_AVATAR_URL_BYTES} visible ASCII characters"
        )))
    }
}
