//! Accounts and sessions: registration, login and logout, bearer-token
//! authentication, and looking users up.

use std::collections::HashMap;
use std::sync::Arc;

use tokenim_core::clock::now_ms;
use tokenim_core::{Error, Limits, Result, validate};
use tokenim_proto::*;
use tokenim_store::Store;

use crate::auth::{Claims, Passwords, Tokens};
use crate::delivery::fanout::Fanout;
use crate::services::Actor;

pub struct Accounts {
    store: Arc<dyn Store>,
    limits: Limits,
    tokens: Tokens,
    passwords: Passwords,
    fanout: Arc<Fanout>,
}

impl Accounts {
    pub fn new(
        store: Arc<dyn Store>,
        limits: Limits,
        tokens: Tokens,
        passwords: Passwords,
        fanout: Arc<Fanout>,
    ) -> Self {
        Accounts {
            store,
            limits,
            tokens,
            passwords,
            fanout,
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
        let Some(user) = self.store.user_by_name(&req.username).await? else {
            // Same cost as a wrong password, so timing tells nothing.
            self.passwords.verify_nothing(req.password).await;
            return Err(Error::unauthorized("wrong username or password"));
        };
        if !self
            .passwords
            .verify(req.password, user.password_hash.clone())
            .await
        {
            return Err(Error::unauthorized("wrong username or password"));
        }
        let now = now_ms();
        let expires_at = now.saturating_add(self.limits.token_ttl_ms as i64);
        let session = tokenim_store::Session {
            session_id: tokenim_store::ids::session_id(now),
            user_id: user.user_id.clone(),
            device_id: req.device_id.clone(),
            created_at: now,
            expires_at,
        };
        let device = tokenim_store::Device {
            user_id: user.user_id.clone(),
            device_id: req.device_id.clone(),
            platform: req.platform,
            last_seen: now,
            synced_before: false,
            push: None,
        };
        let token = self.tokens.sign(&Claims {
            session_id: session.session_id.clone(),
            user_id: user.user_id.clone(),
            device_id: req.device_id.clone(),
            expires_at,
        });
        self.store.create_session(session, device).await?;
        Ok(SessionCreated {
            token,
            user_id: user.user_id,
            device_id: req.device_id,
            expires_at,
        })
    }

    pub async fn logout(&self, a: &Actor) -> Result<()> {
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
        Ok(UserInfo {
            user_id: u.user_id,
            username: u.username,
            display_name: u.display_name,
        })
    }

    pub async fn find_users(&self, username: &str) -> Result<UserList> {
        if username.len() > 64 {
            return Err(Error::bad_request("username is too long"));
        }
        let u = self.store.user_by_name(username).await?;
        Ok(UserList {
            users: u
                .into_iter()
                .map(|u| UserInfo {
                    user_id: u.user_id,
                    username: u.username,
                    display_name: u.display_name,
                })
                .collect(),
        })
    }
}
