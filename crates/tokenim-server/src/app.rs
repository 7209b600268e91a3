//! The server's shared state and the operations the HTTP API and the socket
//! both use, so that every rule is enforced in one place for both.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::ws::Utf8Bytes;
use parking_lot::Mutex;
use tokenim_core::perms::{self, MemberFacts};
use tokenim_core::{Error, Limits, Result, TokenBucket, validate};
use tokenim_proto::*;
use tokenim_store::{
    AckRecord, Append, AppendOutcome, Committed, ConvMeta, DedupRecord, EventSink, Member, Op,
    RequestKind, Store, StoreError,
};
use tokio::sync::mpsc;

use crate::auth::{Claims, Passwords, Tokens};
use crate::cluster::Cluster;
use crate::cluster::sequencer::{Admit, Sequencer};
use crate::config::Config;
use crate::fanout::Fanout;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::outbox::Priority;

/// About how many bytes of events one `sync_result` carries at most.
const SYNC_RESULT_BYTES: usize = 4 << 20;
/// Conversations whose last pushed seq a cluster node remembers (per
/// generation, see `Sequencer`).
const SEQUENCER_CAP: usize = 65_536;
/// Most events one gap fill pushes (a longer gap is left to the devices'
/// gap detection and sync, as the outbox would overflow anyway).
const MAX_GAP_FILL: u64 = 4096;

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Turns a store failure into what the client is told (and logs engine
/// failures, which the client only sees as `unavailable`).
pub fn store_err(e: StoreError) -> Error {
    if let StoreError::Engine(msg) = &e {
        tracing::error!(error = %msg, "storage failure");
    }
    e.to_client()
}

/// Who is acting: the authenticated user and device, and the socket (0 for
/// HTTP) that asked.
#[derive(Debug, Clone)]
pub struct Actor {
    pub user_id: String,
    pub device_id: String,
    pub session_id: String,
    pub conn: u64,
}

/// A timeline request from a client.
pub enum TimelineReq {
    Send(serde_json::Value),
    Recall(u64),
    Edit(u64, serde_json::Value),
}

impl TimelineReq {
    fn kind(&self) -> RequestKind {
        match self {
            TimelineReq::Send(_) => RequestKind::Send,
            TimelineReq::Recall(_) => RequestKind::Recall,
            TimelineReq::Edit(..) => RequestKind::Edit,
        }
    }
}

/// A timeline request past its checks: answered already (a repeat) or
/// queued for commit.
pub enum Prepared {
    Repeat(DedupRecord),
    Queued(tokenim_store::AppendFuture),
}

/// The result of a timeline request, as both surfaces report it.
#[derive(Debug, Clone)]
pub struct Acked {
    pub conv_id: String,
    pub client_msg_id: String,
    pub msg_id: String,
    pub seq: u64,
    pub ts: i64,
    pub created: bool,
}

pub struct App {
    pub cfg: Config,
    pub limits: Limits,
    pub store: Arc<dyn Store>,
    /// This node's sockets.
    pub hub: Arc<Hub>,
    /// Pushes to sockets on this node and, in cluster mode, on the others.
    pub fanout: Fanout,
    /// Cluster mode (`redis_url`): Redis and this node's part in it.
    pub cluster: Option<Arc<Cluster>>,
    /// In cluster mode: the last seq pushed per conversation, so events from
    /// several nodes reach sockets in order, without gaps or repeats.
    sequencer: Option<Mutex<Sequencer>>,
    pub tokens: Tokens,
    pub passwords: Passwords,
    pub metrics: Metrics,
    send_buckets: Mutex<HashMap<String, TokenBucket>>,
    login_buckets: Mutex<HashMap<IpAddr, TokenBucket>>,
    /// Acks received and not yet written: (user, device, conv) -> seq.
    pending_acks: Mutex<HashMap<(String, String, String), u64>>,
    /// Highest seq acked by any device of a user: (user, conv) -> seq.
    delivered: Mutex<HashMap<(String, String), u64>>,
    /// Per conversation, the member list pushes used for the last event this
    /// node pushed (its seq, the list): the next seq reuses it unless it is
    /// a membership event, so pushing needs no read per event.
    push_members: Mutex<HashMap<String, PushList>>,
    pub shutting_down: AtomicBool,
    pub commits_in_flight: AtomicU64,
}

impl App {
    /// The shared state; `cluster` when running as a node of a cluster
    /// (whose tokens are signed with the cluster's key).
    pub fn new(
        cfg: Config,
        store: Arc<dyn Store>,
        cluster: Option<Arc<Cluster>>,
        tokens: Tokens,
    ) -> anyhow::Result<Arc<App>> {
        let passwords = Passwords::new(cfg.argon2_memory_kib, cfg.argon2_iterations)?;
        let hub = Arc::new(Hub::default());
        Ok(Arc::new(App {
            limits: cfg.limits.clone(),
            cfg,
            store,
            fanout: Fanout {
                hub: hub.clone(),
                cluster: cluster.clone(),
            },
            hub,
            sequencer: cluster
                .as_ref()
                .map(|_| Mutex::new(Sequencer::new(SEQUENCER_CAP))),
            cluster,
            tokens,
            passwords,
            metrics: Metrics::default(),
            send_buckets: Mutex::new(HashMap::new()),
            login_buckets: Mutex::new(HashMap::new()),
            pending_acks: Mutex::new(HashMap::new()),
            delivered: Mutex::new(HashMap::new()),
            push_members: Mutex::new(HashMap::new()),
            shutting_down: AtomicBool::new(false),
            commits_in_flight: AtomicU64::new(0),
        }))
    }

    // ---- rate limits -------------------------------------------------

    /// Takes a login token for `ip`: from the cluster-wide bucket in cluster
    /// mode, else (or while Redis is unreachable) from this node's.
    pub async fn check_login_rate(&self, ip: IpAddr) -> Result<()> {
        let l = &self.limits;
        if let Some(c) = &self.cluster
            && let Some(r) = c
                .take_token(
                    "login",
                    &ip.to_string(),
                    l.login_rate_per_min,
                    60_000,
                    l.login_burst,
                )
                .await
        {
            return r.map_err(Error::rate_limited);
        }
        let now = now_ms();
        let mut b = self.login_buckets.lock();
        b.entry(ip)
            .or_insert_with(|| TokenBucket::new(l.login_burst, now))
            .take(l.login_rate_per_min, 60_000, l.login_burst, now)
            .map_err(Error::rate_limited)
    }

    /// Takes a send token for `user_id`: from the cluster-wide bucket in
    /// cluster mode, else (or while Redis is unreachable) from this node's.
    pub async fn check_send_rate(&self, user_id: &str) -> Result<()> {
        let l = &self.limits;
        if let Some(c) = &self.cluster
            && let Some(r) = c
                .take_token("send", user_id, l.send_rate_per_sec, 1000, l.send_burst)
                .await
        {
            return r.map_err(Error::rate_limited);
        }
        let now = now_ms();
        let mut b = self.send_buckets.lock();
        if let Some(bucket) = b.get_mut(user_id) {
            return bucket
                .take(l.send_rate_per_sec, 1000, l.send_burst, now)
                .map_err(Error::rate_limited);
        }
        let mut bucket = TokenBucket::new(l.send_burst, now);
        let r = bucket.take(l.send_rate_per_sec, 1000, l.send_burst, now);
        b.insert(user_id.to_owned(), bucket);
        r.map_err(Error::rate_limited)
    }

    /// Forgets buckets that are full again (called periodically).
    pub fn prune_buckets(&self) {
        let l = &self.limits;
        let now = now_ms();
        self.send_buckets
            .lock()
            .retain(|_, b| !b.is_full(l.send_rate_per_sec, 1000, l.send_burst, now));
        self.login_buckets
            .lock()
            .retain(|_, b| !b.is_full(l.login_rate_per_min, 60_000, l.login_burst, now));
    }

    // ---- accounts and sessions ----------------------------------------

    /// Checks a bearer token: signature, expiry, and that its session lives.
    pub async fn authenticate(&self, token: &str) -> Result<Actor> {
        let claims: Claims = self.tokens.verify(token, now_ms())?;
        let session = self
            .store
            .session(&claims.session_id)
            .await
            .map_err(store_err)?;
        match session {
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
        if self
            .store
            .user_by_name(&req.username)
            .await
            .map_err(store_err)?
            .is_some()
        {
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
            .await
            .map_err(store_err)?;
        let user = out
            .pop()
            .ok_or_else(|| Error::internal("no result"))?
            .map_err(store_err)?;
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
        let mut created = self
            .store
            .create_users(news)
            .await
            .map_err(store_err)?
            .into_iter();
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
        let user = self
            .store
            .user_by_name(&req.username)
            .await
            .map_err(store_err)?;
        let Some(user) = user else {
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
        self.store
            .create_session(session, device)
            .await
            .map_err(store_err)?;
        Ok(SessionCreated {
            token,
            user_id: user.user_id,
            device_id: req.device_id,
            expires_at,
        })
    }

    pub async fn logout(&self, a: &Actor) -> Result<()> {
        self.store
            .delete_session(&a.session_id)
            .await
            .map_err(store_err)?;
        self.fanout
            .kick(&a.user_id, &a.device_id, KickReason::LoggedOut)
            .await;
        Ok(())
    }

    pub async fn remove_device(&self, a: &Actor, device_id: &str) -> Result<()> {
        validate::device_id(device_id)?;
        let removed = self
            .store
            .remove_device(&a.user_id, device_id)
            .await
            .map_err(store_err)?;
        if removed.is_none() {
            return Err(Error::not_found("no such device"));
        }
        self.pending_acks
            .lock()
            .retain(|(u, d, _), _| !(u == &a.user_id && d == device_id));
        self.fanout
            .kick(&a.user_id, device_id, KickReason::Revoked)
            .await;
        Ok(())
    }

    pub async fn devices(&self, a: &Actor) -> Result<DeviceList> {
        let devs = self.store.devices(&a.user_id).await.map_err(store_err)?;
        let live = self.fanout.online_devices(&a.user_id).await;
        let now = now_ms();
        Ok(DeviceList {
            devices: devs
                .into_iter()
                .map(|d| {
                    let online = live.contains(&d.device_id);
                    DeviceInfo {
                        last_seen: if online { now } else { d.last_seen },
                        online,
                        device_id: d.device_id,
                        platform: d.platform,
                    }
                })
                .collect(),
        })
    }

    pub async fn user_info(&self, user_id: &str) -> Result<UserInfo> {
        validate::opaque_id("user_id", user_id)?;
        let u = self.store.user(user_id).await.map_err(store_err)?;
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
        let u = self.store.user_by_name(username).await.map_err(store_err)?;
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

    pub async fn set_contact(&self, a: &Actor, other: &str, on: bool) -> Result<()> {
        self.user_info(other).await?;
        self.store
            .set_contact(&a.user_id, other, on)
            .await
            .map_err(store_err)
    }

    pub async fn contacts(&self, a: &Actor) -> Result<ContactList> {
        let ids = self.store.contacts(&a.user_id).await.map_err(store_err)?;
        let mut contacts = Vec::with_capacity(ids.len());
        for id in ids {
            if let Ok(u) = self.user_info(&id).await {
                contacts.push(u);
            }
        }
        Ok(ContactList { contacts })
    }

    pub async fn set_block(&self, a: &Actor, other: &str, on: bool) -> Result<()> {
        self.user_info(other).await?;
        self.store
            .set_block(&a.user_id, other, on)
            .await
            .map_err(store_err)
    }

    // ---- conversations --------------------------------------------------

    /// The caller's membership, or `not_found` (never revealing existence).
    pub async fn membership(&self, conv_id: &str, user_id: &str) -> Result<(ConvMeta, Member)> {
        validate::opaque_id("conv_id", conv_id)?;
        self.store
            .membership(conv_id, user_id)
            .await
            .map_err(store_err)?
            .ok_or_else(Error::no_conversation)
    }

    pub async fn conv_object(&self, meta: &ConvMeta, me: &Member) -> Result<Conversation> {
        let members = if meta.member_count <= 500 {
            let page = self
                .store
                .members_page(&meta.conv_id, None, 500)
                .await
                .map_err(store_err)?;
            Some(page.into_iter().map(member_info).collect())
        } else {
            None
        };
        Ok(Conversation {
            conv_id: meta.conv_id.clone(),
            ty: meta.ty,
            title: meta.title.clone(),
            members,
            member_count: meta.member_count,
            last_seq: meta.last_seq,
            read_seq: me.read_seq,
            unread: me.unread(meta),
            last_event: meta.last_event.as_deref().cloned(),
            created_at: meta.created_at,
            only_admins_send: meta.only_admins_send,
        })
    }

    pub async fn create_conversation(
        &self,
        a: &Actor,
        req: CreateConversation,
    ) -> Result<(Conversation, bool)> {
        match req {
            CreateConversation::Direct { peer } => {
                validate::opaque_id("peer", &peer)?;
                self.store
                    .user(&peer)
                    .await
                    .map_err(store_err)?
                    .ok_or_else(|| Error::not_found("no such user"))?;
                if self
                    .store
                    .is_blocked(&peer, &a.user_id)
                    .await
                    .map_err(store_err)?
                {
                    return Err(Error::forbidden("this user does not accept your messages"));
                }
                let (meta, created) = self
                    .store
                    .open_direct(&a.user_id, &peer, now_ms())
                    .await
                    .map_err(store_err)?;
                let (meta, me) = self.membership(&meta.conv_id, &a.user_id).await?;
                let conv = self.conv_object(&meta, &me).await?;
                if created {
                    for u in [&a.user_id, &peer] {
                        let (m2, mine) = self.membership(&meta.conv_id, u).await?;
                        let obj = self.conv_object(&m2, &mine).await?;
                        let f = wire(ServerFrame::ConvAdded { conversation: obj });
                        self.fanout.to_user(u, a.conn, Priority::Event, &f);
                        if a.user_id == peer {
                            break;
                        }
                    }
                }
                Ok((conv, created))
            }
            CreateConversation::Group { title, members } => {
                if let Some(t) = &title {
                    validate::title(t)?;
                }
                let members = validate::user_ids(&members)?;
                if members.len() as u64 + 1 > self.limits.max_group_members {
                    return Err(Error::forbidden(format!(
                        "a group holds at most {} members",
                        self.limits.max_group_members
                    )));
                }
                for m in &members {
                    if self.store.user(m).await.map_err(store_err)?.is_none() {
                        return Err(Error::not_found(format!("no such user {m}")));
                    }
                }
                let meta = self
                    .store
                    .create_group(tokenim_store::NewGroup {
                        owner: a.user_id.clone(),
                        owner_device: a.device_id.clone(),
                        title,
                        members,
                        now_ms: now_ms(),
                        origin: a.conn,
                    })
                    .await
                    .map_err(store_err)?;
                self.metrics.events.fetch_add(1, Ordering::Relaxed);
                let (meta, me) = self.membership(&meta.conv_id, &a.user_id).await?;
                Ok((self.conv_object(&meta, &me).await?, true))
            }
        }
    }

    pub async fn list_conversations(&self, a: &Actor) -> Result<ConversationList> {
        let mut all = self.store.user_convs(&a.user_id).await.map_err(store_err)?;
        all.sort_by(|(x, _), (y, _)| {
            y.last_ts
                .cmp(&x.last_ts)
                .then_with(|| x.conv_id.cmp(&y.conv_id))
        });
        let mut conversations = Vec::with_capacity(all.len());
        for (meta, me) in &all {
            let mut c = self.conv_object_light(meta, me);
            if meta.member_count <= 500 && all.len() <= 200 {
                c = self.conv_object(meta, me).await?;
            }
            conversations.push(c);
        }
        Ok(ConversationList { conversations })
    }

    /// The conversation object without the member list.
    fn conv_object_light(&self, meta: &ConvMeta, me: &Member) -> Conversation {
        Conversation {
            conv_id: meta.conv_id.clone(),
            ty: meta.ty,
            title: meta.title.clone(),
            members: None,
            member_count: meta.member_count,
            last_seq: meta.last_seq,
            read_seq: me.read_seq,
            unread: me.unread(meta),
            last_event: meta.last_event.as_deref().cloned(),
            created_at: meta.created_at,
            only_admins_send: meta.only_admins_send,
        }
    }

    pub async fn members_page(
        &self,
        a: &Actor,
        conv_id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<MemberPage> {
        self.membership(conv_id, &a.user_id).await?;
        let mut page = self
            .store
            .members_page(conv_id, after, limit + 1)
            .await
            .map_err(store_err)?;
        let has_more = page.len() > limit;
        page.truncate(limit);
        Ok(MemberPage {
            members: page.into_iter().map(member_info).collect(),
            has_more,
        })
    }

    /// Membership-changing and settings requests (HTTP only): checked here,
    /// committed as a timeline event, answered after the commit.
    pub async fn manage(&self, a: &Actor, conv_id: &str, op: Op) -> Result<()> {
        let (meta, me) = self.membership(conv_id, &a.user_id).await?;
        let facts = facts(&me);
        match &op {
            Op::Update {
                title,
                only_admins_send,
            } => {
                perms::manage(meta.ty, facts)?;
                if let Some(t) = title {
                    validate::title(t)?;
                }
                if title.is_none() && only_admins_send.is_none() {
                    return Err(Error::bad_request("nothing to change"));
                }
            }
            Op::AddMembers { user_ids, .. } => {
                perms::manage(meta.ty, facts)?;
                if user_ids.is_empty() {
                    return Err(Error::bad_request("user_ids is empty"));
                }
                for u in user_ids {
                    if self.store.user(u).await.map_err(store_err)?.is_none() {
                        return Err(Error::not_found(format!("no such user {u}")));
                    }
                }
            }
            Op::Leave => perms::leave(meta.ty, facts, meta.member_count)?,
            Op::Remove { user_id } => {
                let target = self
                    .store
                    .member(conv_id, user_id)
                    .await
                    .map_err(store_err)?
                    .ok_or_else(|| Error::not_found("no such member"))?;
                perms::remove(meta.ty, facts, target.role)?;
            }
            Op::SetRole { user_id, role } => {
                let target = self
                    .store
                    .member(conv_id, user_id)
                    .await
                    .map_err(store_err)?
                    .ok_or_else(|| Error::not_found("no such member"))?;
                perms::set_role(meta.ty, facts, target.role, *role)?;
                if target.role == *role {
                    return Ok(());
                }
            }
            _ => return Err(Error::internal("not a management request")),
        }
        self.commit_one(a, conv_id, None, op).await.map(|_| ())
    }

    pub async fn set_mute(
        &self,
        a: &Actor,
        conv_id: &str,
        user_id: &str,
        until: Option<i64>,
    ) -> Result<()> {
        let (meta, me) = self.membership(conv_id, &a.user_id).await?;
        let target = self
            .store
            .member(conv_id, user_id)
            .await
            .map_err(store_err)?
            .ok_or_else(|| Error::not_found("no such member"))?;
        perms::mute(meta.ty, facts(&me), target.role)?;
        self.store
            .set_mute(conv_id, user_id, until)
            .await
            .map_err(store_err)
    }

    async fn commit_one(
        &self,
        a: &Actor,
        conv_id: &str,
        cmid: Option<String>,
        op: Op,
    ) -> Result<AppendOutcome> {
        let fut = self.store.append(vec![Append {
            conv_id: conv_id.to_owned(),
            actor: a.user_id.clone(),
            actor_device: a.device_id.clone(),
            client_msg_id: cmid,
            op,
            origin: a.conn,
            now_ms: now_ms(),
        }]);
        self.finish(fut).await
    }

    async fn finish(&self, fut: tokenim_store::AppendFuture) -> Result<AppendOutcome> {
        self.commits_in_flight.fetch_add(1, Ordering::Relaxed);
        let r = fut.await;
        self.commits_in_flight.fetch_sub(1, Ordering::Relaxed);
        let mut out = r.map_err(store_err)?;
        let one = out
            .pop()
            .ok_or_else(|| Error::internal("no result"))?
            .map_err(store_err)?;
        if one.created() {
            self.metrics.events.fetch_add(1, Ordering::Relaxed);
        }
        Ok(one)
    }

    // ---- timeline ---------------------------------------------------------

    /// Checks a send, recall or edit and queues it for commit (rules 3, 7, 19).
    pub async fn prepare(
        &self,
        a: &Actor,
        conv_id: &str,
        cmid: &str,
        req: TimelineReq,
    ) -> Result<Prepared> {
        validate::opaque_id("conv_id", conv_id)?;
        validate::client_msg_id(cmid)?;
        let op = match &req {
            TimelineReq::Send(c) => Op::Message {
                content: validate::content(c, self.limits.max_content_bytes)?,
            },
            TimelineReq::Recall(t) => Op::Recall { target_seq: *t },
            TimelineReq::Edit(t, c) => Op::Edit {
                target_seq: *t,
                content: validate::content(c, self.limits.max_content_bytes)?,
            },
        };
        self.check_send_rate(&a.user_id).await?;
        if let Some(d) = self
            .store
            .dedup(&a.user_id, cmid)
            .await
            .map_err(store_err)?
        {
            if d.conv_id != conv_id || d.kind != req.kind() {
                return Err(Error::conflict(
                    "client_msg_id was used for another conversation or request type",
                ));
            }
            return Ok(Prepared::Repeat(d));
        }
        let (meta, me) = self.membership(conv_id, &a.user_id).await?;
        let now = now_ms();
        match &req {
            TimelineReq::Send(_) => {
                perms::send(meta.ty, meta.only_admins_send, facts(&me), now)?;
                if let Some((x, y)) = &meta.pair {
                    let peer = if *x == a.user_id { y } else { x };
                    if self
                        .store
                        .is_blocked(peer, &a.user_id)
                        .await
                        .map_err(store_err)?
                    {
                        return Err(Error::forbidden("this user does not accept your messages"));
                    }
                }
            }
            TimelineReq::Recall(t) | TimelineReq::Edit(t, _) => {
                if *t == 0 || *t > meta.last_seq {
                    return Err(Error::not_found("no such event"));
                }
                let target = self
                    .store
                    .events(conv_id, *t, *t, 1)
                    .await
                    .map_err(store_err)?
                    .pop()
                    .ok_or_else(|| Error::not_found("no such event"))?;
                if target.kind != EventKind::Message {
                    return Err(Error::bad_request(
                        "only messages can be recalled or edited",
                    ));
                }
                let mine = target.sender == a.user_id;
                if matches!(req, TimelineReq::Recall(_)) {
                    perms::recall(
                        meta.ty,
                        facts(&me),
                        mine,
                        target.ts,
                        now,
                        self.limits.recall_window_ms,
                    )?;
                } else {
                    perms::edit(mine)?;
                    perms::send(meta.ty, meta.only_admins_send, facts(&me), now)?;
                }
            }
        }
        Ok(Prepared::Queued(self.store.append(vec![Append {
            conv_id: conv_id.to_owned(),
            actor: a.user_id.clone(),
            actor_device: a.device_id.clone(),
            client_msg_id: Some(cmid.to_owned()),
            op,
            origin: a.conn,
            now_ms: now,
        }])))
    }

    /// Waits for a prepared request's commit.
    pub async fn complete(&self, conv_id: &str, cmid: &str, p: Prepared) -> Result<Acked> {
        let (msg_id, seq, ts, created) = match p {
            Prepared::Repeat(d) => (d.msg_id, d.seq, d.ts, false),
            Prepared::Queued(fut) => {
                let o = self.finish(fut).await?;
                (o.msg_id().to_owned(), o.seq(), o.ts(), o.created())
            }
        };
        Ok(Acked {
            conv_id: conv_id.to_owned(),
            client_msg_id: cmid.to_owned(),
            msg_id,
            seq,
            ts,
            created,
        })
    }

    /// History (rule 16).
    pub async fn history(
        &self,
        a: &Actor,
        conv_id: &str,
        after: Option<u64>,
        before: Option<u64>,
        limit: u64,
    ) -> Result<EventPage> {
        let (meta, _) = self.membership(conv_id, &a.user_id).await?;
        let last = meta.last_seq;
        let (from, to) = match (after, before) {
            (Some(_), Some(_)) => {
                return Err(Error::bad_request("give after_seq or before_seq, not both"));
            }
            (Some(s), None) => (s.saturating_add(1), last.min(s.saturating_add(limit))),
            (None, Some(b)) => {
                let to = b.saturating_sub(1).min(last);
                (to.saturating_sub(limit - 1).max(1), to)
            }
            (None, None) => (last.saturating_sub(limit - 1).max(1), last),
        };
        let events = if to == 0 || from > to {
            Vec::new()
        } else {
            self.store
                .events(conv_id, from, to, limit as usize)
                .await
                .map_err(store_err)?
        };
        let has_more = match before {
            Some(_) => from > 1 && to > 0,
            None => to < last,
        };
        Ok(EventPage { events, has_more })
    }

    pub async fn receipts(&self, a: &Actor, conv_id: &str, seq: u64) -> Result<Receipts> {
        let (meta, _) = self.membership(conv_id, &a.user_id).await?;
        if seq == 0 || seq > meta.last_seq {
            return Err(Error::not_found("no such event"));
        }
        if meta.member_count > self.limits.receipt_group_max {
            return Err(Error::forbidden(format!(
                "receipts are kept for conversations of at most {} members",
                self.limits.receipt_group_max
            )));
        }
        let ev = self
            .store
            .events(conv_id, seq, seq, 1)
            .await
            .map_err(store_err)?
            .pop()
            .ok_or_else(|| Error::not_found("no such event"))?;
        let members = self
            .store
            .members_page(conv_id, None, self.limits.receipt_group_max as usize)
            .await
            .map_err(store_err)?;
        let (mut read_by, mut unread_by) = (Vec::new(), Vec::new());
        for m in members {
            if m.user_id == ev.sender {
                continue;
            }
            if m.read_seq >= seq {
                read_by.push(m.user_id);
            } else {
                unread_by.push(m.user_id);
            }
        }
        Ok(Receipts { read_by, unread_by })
    }

    /// `read` (rule 14): moves the marker, then tells the user's other
    /// devices and, in small conversations, the members.
    pub async fn read(&self, a: &Actor, conv_id: &str, seq: u64) -> Result<()> {
        let (meta, _) = self.membership(conv_id, &a.user_id).await?;
        let moved = self
            .store
            .set_read(conv_id, &a.user_id, seq)
            .await
            .map_err(store_err)?;
        let Some(read_seq) = moved else {
            return Ok(());
        };
        let f = wire(ServerFrame::Receipt {
            conv_id: conv_id.to_owned(),
            user_id: a.user_id.clone(),
            read_seq,
        });
        if meta.member_count <= self.limits.receipt_group_max {
            let ids = self.store.member_ids(conv_id).await.map_err(store_err)?;
            self.fanout.to_members(&ids, a.conn, Priority::Event, &f);
        } else {
            self.fanout.to_user(&a.user_id, a.conn, Priority::Event, &f);
        }
        Ok(())
    }

    /// `ack` (rule 12, 13): recorded within a second; announces `delivered`.
    pub async fn ack(&self, a: &Actor, conv_id: &str, seq: u64) -> Result<()> {
        let (meta, _) = self.membership(conv_id, &a.user_id).await?;
        let seq = seq.min(meta.last_seq);
        if seq == 0 {
            return Ok(());
        }
        let key = (a.user_id.clone(), a.device_id.clone(), conv_id.to_owned());
        let stored = self.ack_seq(&a.user_id, &a.device_id, conv_id).await?;
        if stored.is_some_and(|s| s >= seq) {
            return Ok(());
        }
        {
            let mut p = self.pending_acks.lock();
            let slot = p.entry(key).or_insert(0);
            *slot = (*slot).max(seq);
        }
        let small =
            meta.ty == ConvType::Direct || meta.member_count <= self.limits.receipt_group_max;
        if !small {
            return Ok(());
        }
        let dkey = (a.user_id.clone(), conv_id.to_owned());
        let known = self.delivered.lock().get(&dkey).copied();
        let prev = match known {
            Some(p) => p,
            None => {
                let mut best = 0;
                for d in self.store.devices(&a.user_id).await.map_err(store_err)? {
                    if d.device_id != a.device_id {
                        let s = self.ack_seq(&a.user_id, &d.device_id, conv_id).await?;
                        best = best.max(s.unwrap_or(0));
                    }
                }
                best.max(stored.unwrap_or(0))
            }
        };
        if seq <= prev {
            self.delivered.lock().insert(dkey, prev);
            return Ok(());
        }
        {
            let mut d = self.delivered.lock();
            let slot = d.entry(dkey).or_insert(0);
            if *slot >= seq {
                return Ok(());
            }
            *slot = seq;
        }
        let from = prev.max(seq.saturating_sub(1000)) + 1;
        let events = self
            .store
            .events(conv_id, from, seq, 1000)
            .await
            .map_err(store_err)?;
        let senders: HashSet<&str> = events
            .iter()
            .filter(|e| e.kind == EventKind::Message && e.sender != a.user_id)
            .map(|e| e.sender.as_str())
            .collect();
        if senders.is_empty() {
            return Ok(());
        }
        let f = wire(ServerFrame::Delivered {
            conv_id: conv_id.to_owned(),
            user_id: a.user_id.clone(),
            seq,
        });
        for s in senders {
            self.fanout.to_user(s, 0, Priority::Event, &f);
        }
        Ok(())
    }

    /// A device's ack_seq: the newest of what is pending and what is stored.
    pub async fn ack_seq(&self, user: &str, device: &str, conv: &str) -> Result<Option<u64>> {
        let key = (user.to_owned(), device.to_owned(), conv.to_owned());
        let pending = self.pending_acks.lock().get(&key).copied();
        let stored = self
            .store
            .ack_seq(user, device, conv)
            .await
            .map_err(store_err)?;
        Ok(match (pending, stored) {
            (Some(p), Some(s)) => Some(p.max(s)),
            (p, s) => p.or(s),
        })
    }

    /// Writes the pending acks (every second, and at shutdown).
    pub async fn flush_acks(&self) {
        let pending: Vec<AckRecord> = self
            .pending_acks
            .lock()
            .drain()
            .map(|((user_id, device_id, conv_id), seq)| AckRecord {
                user_id,
                device_id,
                conv_id,
                seq,
            })
            .collect();
        if pending.is_empty() {
            return;
        }
        if let Err(e) = self.store.record_acks(pending.clone()).await {
            tracing::warn!(error = %e, "acks not written; kept for the next flush");
            let mut p = self.pending_acks.lock();
            for a in pending {
                let slot = p.entry((a.user_id, a.device_id, a.conv_id)).or_insert(0);
                *slot = (*slot).max(a.seq);
            }
        }
    }

    /// `sync` (section 3.3, rules 10, 11, 15).
    pub async fn sync(&self, a: &Actor, req: &SyncFrame) -> Result<ServerFrame> {
        let limit = tokenim_core::sync::clamp_limit(req.limit)?;
        let mut cursors: HashMap<&str, u64> = HashMap::new();
        if let Some(cs) = &req.cursors {
            if cs.len() > 10_000 {
                return Err(Error::too_large("at most 10000 cursors"));
            }
            for c in cs {
                validate::opaque_id("conv_id", &c.conv_id)?;
                cursors.insert(&c.conv_id, c.after_seq);
            }
        }
        let device = self
            .store
            .device(&a.user_id, &a.device_id)
            .await
            .map_err(store_err)?;
        let synced_before = device.as_ref().is_some_and(|d| d.synced_before);
        let mut convs = self.store.user_convs(&a.user_id).await.map_err(store_err)?;
        convs.sort_by(|(x, _), (y, _)| {
            y.last_ts
                .cmp(&x.last_ts)
                .then_with(|| x.conv_id.cmp(&y.conv_id))
        });
        let mut out = Vec::new();
        let mut has_more = false;
        let mut budget = SYNC_RESULT_BYTES;
        for (meta, me) in convs {
            let ack = self
                .ack_seq(&a.user_id, &a.device_id, &meta.conv_id)
                .await?
                .filter(|s| *s >= me.joined_after);
            let start = tokenim_core::sync::start_after(tokenim_core::sync::StartFacts {
                cursor: cursors.get(meta.conv_id.as_str()).copied(),
                ack_seq: ack,
                synced_before,
                joined_after: me.joined_after,
                last_seq: meta.last_seq,
                new_device_backfill: self.limits.new_device_backfill,
            });
            if start >= meta.last_seq {
                continue;
            }
            if out.len() >= tokenim_core::sync::MAX_SYNC_CONVERSATIONS || budget == 0 {
                has_more = true;
                break;
            }
            let (from, to, mut more) = tokenim_core::sync::page(start, meta.last_seq, limit);
            let mut events = self
                .store
                .events(&meta.conv_id, from + 1, to, limit as usize)
                .await
                .map_err(store_err)?;
            // Keep one reply to a few MiB: cut the page where the budget
            // runs out (at least one event), and say there is more.
            let mut keep = 0;
            for e in &events {
                let size = 256 + e.content.as_ref().map_or(0, |c| c.get().len());
                if keep > 0 && size > budget {
                    break;
                }
                budget = budget.saturating_sub(size);
                keep += 1;
            }
            if keep < events.len() {
                events.truncate(keep);
                more = true;
            }
            has_more |= more;
            out.push(SyncConversation {
                conv_id: meta.conv_id.clone(),
                last_seq: meta.last_seq,
                read_seq: me.read_seq,
                unread: me.unread(&meta),
                events,
                has_more: more,
            });
        }
        if !synced_before {
            self.store
                .touch_device(&a.user_id, &a.device_id, now_ms(), true)
                .await
                .map_err(store_err)?;
        }
        Ok(ServerFrame::SyncResult {
            id: req.id.clone(),
            conversations: out,
            has_more,
        })
    }

    pub async fn typing(&self, a: &Actor, conv_id: &str) -> Result<()> {
        let (meta, _) = self.membership(conv_id, &a.user_id).await?;
        if meta.member_count > self.limits.receipt_group_max {
            return Ok(());
        }
        let ids = self.store.member_ids(conv_id).await.map_err(store_err)?;
        let others: Vec<String> = ids.iter().filter(|u| **u != a.user_id).cloned().collect();
        let f = wire(ServerFrame::Typing {
            conv_id: conv_id.to_owned(),
            user_id: a.user_id.clone(),
        });
        self.fanout
            .to_members(&others, a.conn, Priority::Ephemeral, &f);
        Ok(())
    }

    /// The users of `wanted` that `a` may watch (contacts and co-members).
    pub async fn presence_allowed(&self, a: &Actor, wanted: &[String]) -> Result<Vec<String>> {
        if wanted.len() > 1000 {
            return Err(Error::bad_request("at most 1000 user_ids"));
        }
        let contacts: HashSet<String> = self
            .store
            .contacts(&a.user_id)
            .await
            .map_err(store_err)?
            .into_iter()
            .collect();
        let mine = self.store.user_convs(&a.user_id).await.map_err(store_err)?;
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        for u in wanted {
            validate::opaque_id("user_id", u)?;
            if !seen.insert(u.as_str()) {
                continue;
            }
            let mut ok = contacts.contains(u) || *u == a.user_id;
            if !ok {
                for (meta, _) in &mine {
                    if meta.member_count <= 1 {
                        continue;
                    }
                    if self
                        .store
                        .member(&meta.conv_id, u)
                        .await
                        .map_err(store_err)?
                        .is_some()
                    {
                        ok = true;
                        break;
                    }
                }
            }
            if ok {
                out.push(u.clone());
            }
        }
        Ok(out)
    }

    /// The `presence` frame of each user (online anywhere in the cluster).
    pub async fn presences(&self, users: &[String]) -> Vec<ServerFrame> {
        let online = self.fanout.online(users).await;
        let mut out = Vec::with_capacity(users.len());
        for (u, on) in users.iter().zip(online) {
            out.push(self.presence_frame(u, on).await);
        }
        out
    }

    pub async fn presence_of(&self, user_id: &str) -> ServerFrame {
        let online = self
            .fanout
            .online(&[user_id.to_owned()])
            .await
            .first()
            .copied()
            .unwrap_or(false);
        self.presence_frame(user_id, online).await
    }

    async fn presence_frame(&self, user_id: &str, online: bool) -> ServerFrame {
        let last_seen = if online {
            now_ms()
        } else {
            match self.hub.last_seen(user_id) {
                Some(t) => t,
                None => self
                    .store
                    .devices(user_id)
                    .await
                    .map(|ds| ds.iter().map(|d| d.last_seen).max().unwrap_or(0))
                    .unwrap_or(0),
            }
        };
        ServerFrame::Presence {
            user_id: user_id.to_owned(),
            online,
            last_seen,
        }
    }

    /// Pushes committed events to this node's sockets (called by the
    /// dispatcher task, in commit order; in cluster mode also with the
    /// events other nodes committed, which may come out of order: see
    /// `Sequencer`).
    pub async fn deliver(&self, batch: Vec<Committed>) {
        for c in batch {
            let e = &c.event;
            if let Some(seqr) = &self.sequencer {
                let admit = seqr.lock().admit(&e.conv_id, e.seq);
                match admit {
                    Admit::Repeat => {
                        if let Some(cl) = &self.cluster {
                            cl.stats.repeats_dropped.fetch_add(1, Ordering::Relaxed);
                        }
                        continue;
                    }
                    Admit::Next => {}
                    Admit::Gap { from, to } => self.fill_gap(&e.conv_id, from, to).await,
                }
            }
            let Some(members) = self.push_members(e, c.members).await else {
                continue;
            };
            self.push_event(e, c.origin, members).await;
        }
    }

    /// The member list to push `e` to: the one the engine gave, else the
    /// list used for the previous seq of the conversation when `e` does not
    /// change membership, else a read. `None` when it cannot be read.
    async fn push_members(&self, e: &Event, given: Option<Arc<[String]>>) -> Option<Arc<[String]>> {
        let changes = matches!(
            e.kind,
            EventKind::MemberJoined | EventKind::MemberLeft | EventKind::MemberRemoved
        );
        let list = match given {
            Some(m) => m,
            None => {
                let known = self
                    .push_members
                    .lock()
                    .get(&e.conv_id)
                    .filter(|(seq, _)| *seq + 1 == e.seq && !changes)
                    .map(|(_, l)| l.clone());
                match known {
                    Some(l) => l,
                    None => match self.store.member_ids(&e.conv_id).await {
                        Ok(ids) => ids,
                        Err(err) => {
                            tracing::error!(error = %err, "push skipped: members unreadable");
                            return None;
                        }
                    },
                }
            }
        };
        let mut cache = self.push_members.lock();
        if cache.len() >= 65_536 && !cache.contains_key(&e.conv_id) {
            cache.clear();
        }
        cache.insert(e.conv_id.clone(), (e.seq, list.clone()));
        Some(list)
    }

    /// Pushes the events `from..=to` of a conversation, read from the store
    /// (committed before the event that revealed the gap, so readable).
    async fn fill_gap(&self, conv_id: &str, from: u64, to: u64) {
        let mut next = from.max(to.saturating_sub(MAX_GAP_FILL - 1));
        while next <= to {
            let page = match self.store.events(conv_id, next, to, 500).await {
                Ok(p) => p,
                Err(err) => {
                    tracing::warn!(conv_id, error = %err, "gap fill failed; devices will sync");
                    return;
                }
            };
            let Some(last) = page.last().map(|e| e.seq) else {
                return;
            };
            if let Some(cl) = &self.cluster {
                cl.stats
                    .gap_filled
                    .fetch_add(page.len() as u64, Ordering::Relaxed);
            }
            for e in &page {
                if let Some(members) = self.push_members(e, None).await {
                    self.push_event(e, 0, members).await;
                }
            }
            next = last + 1;
        }
    }

    /// Pushes one event to this node's sockets: `conv_added` to the users
    /// it added first, then the event to every member's sockets but
    /// `origin`, then `conv_removed` to the user it removed.
    /// Pushes one event to the sockets of `members` (the list after it).
    async fn push_event(&self, e: &Event, origin: u64, members: Arc<[String]>) {
        // The socket that sent it, if on this node: known by the commit
        // (`origin`), else (a gap fill) by its pending client_msg_id.
        let sender = match &e.client_msg_id {
            Some(cmid) => self.hub.take_sender(&e.sender, &e.sender_device, cmid),
            None => None,
        };
        let origin = if origin != 0 {
            origin
        } else {
            sender.unwrap_or(0)
        };
        let (added, removed) = membership_change(e);
        for u in &added {
            // Only users with a socket on this node need the object (a
            // 1,000-user addition would otherwise read 1,000 memberships).
            if !self.hub.is_online(u) {
                continue;
            }
            if let Ok((meta, me)) = self.membership(&e.conv_id, u).await
                && let Ok(obj) = self.conv_object(&meta, &me).await
            {
                let f = wire(ServerFrame::ConvAdded { conversation: obj });
                self.hub.to_user(u, origin, Priority::Event, &f);
            }
        }
        let frame: Utf8Bytes = event_frame(e).into();
        self.hub
            .to_members(&members, origin, Priority::Event, &frame);
        if let Some(u) = removed {
            let f = wire(ServerFrame::ConvRemoved {
                conv_id: e.conv_id.clone(),
            });
            self.hub.to_user(&u, 0, Priority::Event, &f);
            self.delivered.lock().remove(&(u, e.conv_id.clone()));
        }
    }
}

/// Who an event added to or removed from its conversation, read from the
/// event itself (protocol 1.1: `member_joined` has `user_ids`,
/// `member_left` and `member_removed` have `user_id`), so events from the
/// store or another node need nothing beside them.
fn membership_change(e: &Event) -> (Vec<String>, Option<String>) {
    #[derive(serde::Deserialize)]
    struct Body {
        #[serde(default)]
        user_ids: Vec<String>,
        #[serde(default)]
        user_id: Option<String>,
    }
    let body = || {
        e.content
            .as_ref()
            .and_then(|c| serde_json::from_str::<Body>(c.get()).ok())
    };
    match e.kind {
        EventKind::MemberJoined => (body().map(|b| b.user_ids).unwrap_or_default(), None),
        EventKind::MemberLeft | EventKind::MemberRemoved => {
            (Vec::new(), body().and_then(|b| b.user_id))
        }
        _ => (Vec::new(), None),
    }
}

/// A conversation's member list as of one seq (see `App::push_members`).
type PushList = (u64, Arc<[String]>);

/// `{"type":"event","event":{...}}`, serialized once per event for every
/// recipient (the same text as `ServerFrame::Event`, without copying the
/// event).
fn event_frame(e: &Event) -> String {
    #[derive(serde::Serialize)]
    struct Frame<'a> {
        #[serde(rename = "type")]
        ty: &'static str,
        event: &'a Event,
    }
    serde_json::to_string(&Frame {
        ty: "event",
        event: e,
    })
    .expect("events serialize")
}

/// A frame as the text every recipient's outbox shares.
fn wire(f: ServerFrame) -> Utf8Bytes {
    f.to_json().into()
}

fn facts(m: &Member) -> MemberFacts {
    MemberFacts {
        role: m.role,
        muted_until: m.muted_until,
    }
}

fn member_info(m: Member) -> MemberInfo {
    MemberInfo {
        user_id: m.user_id,
        role: m.role,
        muted_until: m.muted_until,
    }
}

/// Committed events on their way to this node's dispatcher.
pub enum Delivery {
    /// Committed by this node (in commit order; published to the cluster).
    Local(Vec<Committed>),
    /// Committed by another node, received from the bus.
    Remote(Vec<Committed>),
}

/// Hands committed events from the store's writer to the dispatcher task.
pub struct Dispatch(pub mpsc::Sender<Delivery>);

impl EventSink for Dispatch {
    fn committed(&self, batch: Vec<Committed>) {
        // The writer is a plain thread: waiting here is backpressure on
        // commits when pushing falls behind (the queue holds 1024 batches).
        if self.0.blocking_send(Delivery::Local(batch)).is_err() {
            tracing::warn!("dispatcher gone; committed events not pushed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_frame_matches_the_protocol_type() {
        let e = Event {
            conv_id: "c_1".into(),
            seq: 7,
            msg_id: "m_1".into(),
            ts: 5,
            sender: "u_1".into(),
            sender_device: "d".into(),
            kind: EventKind::Message,
            client_msg_id: Some("x".into()),
            content: Some(
                serde_json::value::RawValue::from_string(r#"{"type":"text"}"#.into()).unwrap(),
            ),
            recalled: false,
            edited: false,
        };
        let want = ServerFrame::Event { event: e.clone() }.to_json();
        assert_eq!(event_frame(&e), want);
    }
}
