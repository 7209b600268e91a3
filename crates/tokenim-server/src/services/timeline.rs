//! The timeline: send, recall and edit (gather the facts once, let
//! `tokenim_core::timeline::check` decide, queue the write) and history.
//!
//! Per-socket order (rule 8) is kept in two places: queueing is
//! synchronous, so a socket's writes reach the store's writer in the order
//! they were sent; and the gateway lets a request that reads a
//! conversation (an edit, recall, read, ack or sync) see the socket's
//! earlier writes by waiting for their commits before its facts are
//! gathered (`crate::api::ws`).
//!
//! `message.before_send` webhooks (`crate::webhooks::before_send`) are asked
//! after every check and the dedup lookup, just before the write is queued
//! (I-17); with none configured that costs one branch.

use std::sync::Arc;

use tokenim_core::clock::now_ms;
use tokenim_core::timeline::{self as rules, Facts, Request, Target};
use tokenim_core::{Error, Limits, Result, validate};
use tokenim_proto::{EventPage, HookKind, ServerPostMessage};
use tokenim_store::{AppendFuture, Author, ConvMeta, DedupRecord, Op, RequestKind, Store};

use crate::services::Actor;
use crate::services::commits::Commits;
use crate::services::conversations::{Conversations, backend};
use crate::services::rate::RateLimits;
use crate::views::facts;
use crate::webhooks::before_send::{Ask, BeforeSend};

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

    fn request(&self) -> Request {
        match self {
            TimelineReq::Send(_) => Request::Send,
            TimelineReq::Recall(t) => Request::Recall { target_seq: *t },
            TimelineReq::Edit(t, _) => Request::Edit { target_seq: *t },
        }
    }
}

/// A timeline request past its checks: answered already (a repeat) or
/// queued for commit.
pub enum Prepared {
    Repeat(DedupRecord),
    /// Queued, with the content a before_send hook put in place of the
    /// client's (reported in the ack, I-19).
    Queued(AppendFuture, Option<serde_json::Value>),
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
    /// The stored content, when a before_send hook replaced it.
    pub content: Option<serde_json::Value>,
}

pub struct Timeline {
    store: Arc<dyn Store>,
    limits: Limits,
    rate: Arc<RateLimits>,
    convs: Arc<Conversations>,
    commits: Arc<Commits>,
    /// `None` when no webhook subscribes to `message.before_send`.
    hooks: Option<Arc<BeforeSend>>,
}

impl Timeline {
    pub fn new(
        store: Arc<dyn Store>,
        limits: Limits,
        rate: Arc<RateLimits>,
        convs: Arc<Conversations>,
        commits: Arc<Commits>,
        hooks: Option<Arc<BeforeSend>>,
    ) -> Self {
        Timeline {
            store,
            limits,
            rate,
            convs,
            commits,
            hooks,
        }
    }

    /// Whether sends and edits wait for `message.before_send` hooks.
    pub fn has_hooks(&self) -> bool {
        self.hooks.is_some()
    }

    /// Checks a send, recall or edit and queues it for commit.
    pub async fn prepare(
        &self,
        a: &Actor,
        conv_id: &str,
        cmid: &str,
        req: TimelineReq,
    ) -> Result<Prepared> {
        // The input alone.
        validate::opaque_id("conv_id", conv_id)?;
        validate::client_msg_id(cmid)?;
        let max = self.limits.max_content_bytes;
        let mut op = match &req {
            TimelineReq::Send(c) => Op::Message {
                content: validate::content(c, max)?,
            },
            TimelineReq::Recall(t) => Op::Recall { target_seq: *t },
            TimelineReq::Edit(t, c) => Op::Edit {
                target_seq: *t,
                content: validate::content(c, max)?,
            },
        };
        self.rate.send(&a.user_id).await?;
        // The facts, each read once.
        if let Some(d) = self.store.dedup(&a.user_id, cmid).await? {
            rules::repeat(d.conv_id == conv_id, d.kind == req.kind())?;
            return Ok(Prepared::Repeat(d));
        }
        let (meta, me) = self.convs.membership(conv_id, &a.user_id).await?;
        let now = now_ms();
        let request = req.request();
        let mut blocked_by_peer = false;
        let mut target = None;
        match request {
            Request::Send => {
                if let Some((x, y)) = &meta.pair {
                    let peer = if *x == a.user_id { y } else { x };
                    blocked_by_peer = self.store.is_blocked(peer, &a.user_id).await?;
                }
            }
            Request::Recall { target_seq } | Request::Edit { target_seq } => {
                rules::target_in_range(target_seq, meta.last_seq)?;
                target = self
                    .store
                    .events(conv_id, target_seq, target_seq, 1)
                    .await?
                    .pop()
                    .map(|e| Target {
                        kind: e.kind,
                        mine: e.sent_by(&a.user_id),
                        ts: e.ts,
                    });
            }
        }
        // One pure decision.
        rules::check(
            request,
            &Facts {
                ty: meta.ty,
                only_admins_send: meta.only_admins_send,
                last_seq: meta.last_seq,
                me: facts(&me),
                blocked_by_peer,
                target,
                now_ms: now,
                recall_window_ms: self.limits.recall_window_ms,
            },
        )?;
        let mut replaced = None;
        let mut now = now;
        if let Some(hooks) = &self.hooks {
            replaced = ask_hooks(hooks, a, &meta, cmid, &mut op).await?;
            // The event is made now, after the hooks answered.
            now = now_ms();
        }
        Ok(Prepared::Queued(
            self.commits
                .queue(a, conv_id, Some(cmid.to_owned()), op, now),
            replaced,
        ))
    }

    /// Waits for a prepared request's commit.
    pub async fn complete(&self, conv_id: &str, cmid: &str, p: Prepared) -> Result<Acked> {
        let (msg_id, seq, ts, created, content) = match p {
            Prepared::Repeat(d) => (d.msg_id, d.seq, d.ts, false, None),
            Prepared::Queued(fut, replaced) => {
                let o = self.commits.finish(fut).await?;
                // A repeat caught by the writer stored another request's
                // content, not this replacement.
                let content = replaced.filter(|_| o.created());
                (o.msg_id().to_owned(), o.seq(), o.ts(), o.created(), content)
            }
        };
        Ok(Acked {
            conv_id: conv_id.to_owned(),
            client_msg_id: cmid.to_owned(),
            msg_id,
            seq,
            ts,
            created,
            content,
        })
    }

    /// History (rule 16); `limit` is clamped to 500.
    pub async fn history(
        &self,
        a: &Actor,
        conv_id: &str,
        after: Option<u64>,
        before: Option<u64>,
        limit: u64,
    ) -> Result<EventPage> {
        let (meta, _) = self.convs.membership(conv_id, &a.user_id).await?;
        self.page(&meta, after, before, limit).await
    }

    /// History for the app's backend: as [`Timeline::history`], for any
    /// conversation (I1.4).
    pub async fn server_history(
        &self,
        conv_id: &str,
        after: Option<u64>,
        before: Option<u64>,
        limit: u64,
    ) -> Result<EventPage> {
        let meta = self.convs.server_conv(conv_id).await?;
        self.page(&meta, after, before, limit).await
    }

    /// A message from the app's backend (I1.4): member `as`'s, deduplicated
    /// with their own sends, or without it a system message deduplicated
    /// under the API key `key`. The content is checked as a user's; roles,
    /// mutes, `only_admins_send`, blocks and rate limits are not (I-10).
    pub async fn server_post(
        &self,
        key: &str,
        conv_id: &str,
        req: ServerPostMessage,
    ) -> Result<Acked> {
        validate::opaque_id("conv_id", conv_id)?;
        let cmid = req.client_msg_id;
        validate::client_msg_id(&cmid)?;
        let content = validate::content(&req.content, self.limits.max_content_bytes)?;
        let actor = match &req.as_user {
            Some(u) => {
                validate::opaque_id("as", u)?;
                Author::User {
                    user_id: u.clone(),
                    device_id: None,
                }
            }
            None => backend(key),
        };
        let p = match self.store.dedup(actor.dedup_key(), &cmid).await? {
            Some(d) => {
                rules::repeat(d.conv_id == conv_id, d.kind == RequestKind::Send)?;
                Prepared::Repeat(d)
            }
            None => {
                self.convs.server_conv(conv_id).await?;
                if let Some(u) = actor.user() {
                    if self.store.member(conv_id, u).await?.is_none() {
                        return Err(Error::forbidden(format!("{u} is not a member")));
                    }
                    if !self.convs.usable(u).await? {
                        return Err(Error::forbidden(format!("user {u} is deactivated")));
                    }
                }
                Prepared::Queued(
                    self.commits.queue_by(
                        actor,
                        0,
                        conv_id,
                        Some(cmid.clone()),
                        Op::Message { content },
                        now_ms(),
                    ),
                    None,
                )
            }
        };
        self.complete(conv_id, &cmid, p).await
    }

    async fn page(
        &self,
        meta: &ConvMeta,
        after: Option<u64>,
        before: Option<u64>,
        limit: u64,
    ) -> Result<EventPage> {
        let conv_id = meta.conv_id.as_str();
        let p = rules::history_page(after, before, limit, meta.last_seq)?;
        let events = if p.to == 0 || p.from > p.to {
            Vec::new()
        } else {
            let n = (p.to - p.from + 1) as usize;
            self.store.events(conv_id, p.from, p.to, n).await?
        };
        Ok(EventPage {
            events,
            has_more: p.has_more,
        })
    }
}

/// Asks the before_send hooks about a send or an edit (a recall passes
/// untouched) and puts a replacement in `op`; answers the replacement as
/// the ack reports it.
async fn ask_hooks(
    hooks: &BeforeSend,
    a: &Actor,
    meta: &ConvMeta,
    cmid: &str,
    op: &mut Op,
) -> Result<Option<serde_json::Value>> {
    let (kind, target_seq, content) = match op {
        Op::Message { content } => (HookKind::Message, None, content),
        Op::Edit {
            target_seq,
            content,
        } => (HookKind::Edit, Some(*target_seq), content),
        _ => return Ok(None),
    };
    let ask = Ask {
        conv_id: &meta.conv_id,
        conv_type: meta.ty,
        sender: &a.user_id,
        sender_device: &a.device_id,
        client_msg_id: cmid,
        kind,
        target_seq,
    };
    let Some(new) = hooks.run(&ask, content).await? else {
        return Ok(None);
    };
    let shown = serde_json::from_str(new.get()).expect("checked content is JSON");
    *content = new;
    Ok(Some(shown))
}
