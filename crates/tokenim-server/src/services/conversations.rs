//! Conversations and members: membership (the check every conversation
//! request starts with), the conversation objects, creating direct chats
//! and groups, listing, member pages, and the management requests
//! (title, settings, members, roles, mutes), which commit as timeline
//! events.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokenim_core::clock::now_ms;
use tokenim_core::{Error, Limits, Result, perms, validate};
use tokenim_proto::*;
use tokenim_store::{ConvMeta, Member, Op, Store};

use crate::delivery::fanout::Fanout;
use crate::delivery::outbox::{Priority, shared};
use crate::metrics::Metrics;
use crate::services::Actor;
use crate::services::commits::Commits;
use crate::views::{self, facts};

/// Conversation lists up to this long carry each small conversation's
/// member list.
const LIST_WITH_MEMBERS: usize = 200;
/// The longest member page: larger limits are clamped to it.
pub const MAX_MEMBER_PAGE: usize = 1000;

pub struct Conversations {
    store: Arc<dyn Store>,
    limits: Limits,
    fanout: Arc<Fanout>,
    commits: Arc<Commits>,
    metrics: Arc<Metrics>,
}

impl Conversations {
    pub fn new(
        store: Arc<dyn Store>,
        limits: Limits,
        fanout: Arc<Fanout>,
        commits: Arc<Commits>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Conversations {
            store,
            limits,
            fanout,
            commits,
            metrics,
        }
    }

    /// The caller's membership, or `not_found` (never revealing existence).
    pub async fn membership(&self, conv_id: &str, user_id: &str) -> Result<(ConvMeta, Member)> {
        validate::opaque_id("conv_id", conv_id)?;
        self.store
            .membership(conv_id, user_id)
            .await?
            .ok_or_else(Error::no_conversation)
    }

    /// The conversation as `a` sees it.
    pub async fn get(&self, a: &Actor, conv_id: &str) -> Result<Conversation> {
        let (meta, me) = self.membership(conv_id, &a.user_id).await?;
        views::conversation(self.store.as_ref(), &meta, &me).await
    }

    pub async fn create(&self, a: &Actor, req: CreateConversation) -> Result<(Conversation, bool)> {
        match req {
            CreateConversation::Direct { peer } => self.open_direct(a, peer).await,
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
                    if self.store.user(m).await?.is_none() {
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
                    .await?;
                self.metrics.events.fetch_add(1, Ordering::Relaxed);
                Ok((self.get(a, &meta.conv_id).await?, true))
            }
        }
    }

    /// Opens (or finds) the direct conversation with `peer`; a new one is
    /// announced with `conv_added` to both users' other sockets.
    async fn open_direct(&self, a: &Actor, peer: String) -> Result<(Conversation, bool)> {
        validate::opaque_id("peer", &peer)?;
        self.store
            .user(&peer)
            .await?
            .ok_or_else(|| Error::not_found("no such user"))?;
        if self.store.is_blocked(&peer, &a.user_id).await? {
            return Err(Error::forbidden("this user does not accept your messages"));
        }
        let (meta, created) = self.store.open_direct(&a.user_id, &peer, now_ms()).await?;
        let conv = self.get(a, &meta.conv_id).await?;
        if created {
            for u in [&a.user_id, &peer] {
                let (m2, mine) = self.membership(&meta.conv_id, u).await?;
                let obj = views::conversation(self.store.as_ref(), &m2, &mine).await?;
                let f = shared(&ServerFrame::ConvAdded { conversation: obj });
                self.fanout.to_user(u, a.conn, Priority::Event, &f);
                if a.user_id == peer {
                    break;
                }
            }
        }
        Ok((conv, created))
    }

    pub async fn list(&self, a: &Actor) -> Result<ConversationList> {
        let mut all = self.store.user_convs(&a.user_id).await?;
        all.sort_by(|(x, _), (y, _)| {
            y.last_ts
                .cmp(&x.last_ts)
                .then_with(|| x.conv_id.cmp(&y.conv_id))
        });
        let with_members = all.len() <= LIST_WITH_MEMBERS;
        let mut conversations = Vec::with_capacity(all.len());
        for (meta, me) in &all {
            conversations.push(if with_members {
                views::conversation(self.store.as_ref(), meta, me).await?
            } else {
                views::conversation_light(meta, me)
            });
        }
        Ok(ConversationList { conversations })
    }

    /// One page of members after `after` (by user ID); `limit` is clamped
    /// to [`MAX_MEMBER_PAGE`], and `has_more` says whether any member
    /// follows the page, whatever the clamp.
    pub async fn members_page(
        &self,
        a: &Actor,
        conv_id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<MemberPage> {
        self.membership(conv_id, &a.user_id).await?;
        let limit = limit.clamp(1, MAX_MEMBER_PAGE);
        let mut page = self.store.members_page(conv_id, after, limit + 1).await?;
        let has_more = page.len() > limit;
        page.truncate(limit);
        Ok(MemberPage {
            members: page.into_iter().map(views::member_info).collect(),
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
                    if self.store.user(u).await?.is_none() {
                        return Err(Error::not_found(format!("no such user {u}")));
                    }
                }
            }
            Op::Leave => perms::leave(meta.ty, facts, meta.member_count)?,
            Op::Remove { user_id } => {
                let target = self.member(conv_id, user_id).await?;
                perms::remove(meta.ty, facts, target.role)?;
            }
            Op::SetRole { user_id, role } => {
                let target = self.member(conv_id, user_id).await?;
                perms::set_role(meta.ty, facts, target.role, *role)?;
                if target.role == *role {
                    return Ok(());
                }
            }
            _ => return Err(Error::internal("not a management request")),
        }
        self.commits.commit(a, conv_id, None, op).await.map(|_| ())
    }

    pub async fn set_mute(
        &self,
        a: &Actor,
        conv_id: &str,
        user_id: &str,
        until: Option<i64>,
    ) -> Result<()> {
        let (meta, me) = self.membership(conv_id, &a.user_id).await?;
        let target = self.member(conv_id, user_id).await?;
        perms::mute(meta.ty, facts(&me), target.role)?;
        Ok(self.store.set_mute(conv_id, user_id, until).await?)
    }

    async fn member(&self, conv_id: &str, user_id: &str) -> Result<Member> {
        self.store
            .member(conv_id, user_id)
            .await?
            .ok_or_else(|| Error::not_found("no such member"))
    }
}
