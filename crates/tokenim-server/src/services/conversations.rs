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
use tokenim_store::{Author, ConvMeta, Member, Op, Store};

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
                    if !self.usable(m).await? {
                        return Err(Error::forbidden(format!("user {m} is deactivated")));
                    }
                }
                let (meta, _) = self
                    .store
                    .create_group(tokenim_store::NewGroup {
                        conv_id: None,
                        owner: a.user_id.clone(),
                        by: Author::device(&a.user_id, &a.device_id),
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
        // A deactivated user keeps the conversations they had, and gets no
        // new one (I-4).
        if !self.usable(&peer).await? && !self.has_direct(&peer, &a.user_id, &peer).await? {
            return Err(Error::forbidden(format!("user {peer} is deactivated")));
        }
        if self.store.is_blocked(&peer, &a.user_id).await? {
            return Err(Error::forbidden("this user does not accept your messages"));
        }
        let (meta, created) = self
            .store
            .open_direct(&a.user_id, &peer, None, now_ms())
            .await?;
        let conv = self.get(a, &meta.conv_id).await?;
        if created {
            self.announce_direct(&meta.conv_id, [&a.user_id, &peer], a.conn)
                .await?;
        }
        Ok((conv, created))
    }

    /// `conv_added` of a new direct conversation to its users' sockets but
    /// `origin`.
    async fn announce_direct(&self, conv_id: &str, users: [&String; 2], origin: u64) -> Result<()> {
        for u in users {
            let (m2, mine) = self.membership(conv_id, u).await?;
            let obj = views::conversation(self.store.as_ref(), &m2, &mine).await?;
            let f = shared(&ServerFrame::ConvAdded { conversation: obj });
            self.fanout.to_user(u, origin, Priority::Event, &f);
            if users[0] == users[1] {
                break;
            }
        }
        Ok(())
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
                    if !self.usable(u).await? {
                        return Err(Error::forbidden(format!("user {u} is deactivated")));
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

    /// The caller's own notification level in a conversation they are in
    /// (I2.1); anyone else's conversation is `not_found`.
    pub async fn set_notifications(
        &self,
        a: &Actor,
        conv_id: &str,
        n: Notifications,
    ) -> Result<()> {
        self.membership(conv_id, &a.user_id).await?;
        Ok(self
            .store
            .set_notifications(conv_id, &a.user_id, n.level, n.until)
            .await?)
    }

    async fn member(&self, conv_id: &str, user_id: &str) -> Result<Member> {
        self.store
            .member(conv_id, user_id)
            .await?
            .ok_or_else(|| Error::not_found("no such member"))
    }
}

/// The author of the app backend's writes made without a user (I-9),
/// whose `client_msg_id`s are deduplicated under the API key's name in a
/// space of their own: `#name` (`#` is in no user ID), or for a name too
/// long for the 64-byte key column, `~` and a digest of it.
pub fn backend(key_name: &str) -> Author {
    use sha2::Digest;
    let dedup_key = if key_name.len() < 64 {
        format!("#{key_name}")
    } else {
        let d = sha2::Sha256::digest(key_name.as_bytes());
        let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
        format!("~{}", &hex[..63])
    };
    Author::System { dedup_key }
}

/// A conversation ID the backend chooses: the user ID rules, `c_` being
/// the server's own (I1.4).
fn chosen_conv_id(id: &str) -> Result<()> {
    validate::app_id("conv_id", id)?;
    if id.starts_with("c_") {
        return Err(Error::bad_request(
            "conv_id c_... is reserved for the server's own",
        ));
    }
    Ok(())
}

/// The server API (PROTOCOL-INTEGRATION I1.4): the app's backend creates
/// conversations and changes their members, with none of a user's roles
/// (I-10), and its events carry no `by` (I-9).
impl Conversations {
    /// Creates a conversation (`true`), or answers the one that exists
    /// (I-8).
    pub async fn server_create(
        &self,
        key: &str,
        req: ServerCreateConversation,
    ) -> Result<(ServerConversation, bool)> {
        let (meta, created) = match req {
            ServerCreateConversation::Direct { members, conv_id } => {
                self.server_direct(members, conv_id).await?
            }
            ServerCreateConversation::Group {
                title,
                owner,
                members,
                conv_id,
            } => {
                self.server_group(key, title, owner, members, conv_id)
                    .await?
            }
        };
        Ok((self.server_view(&meta).await?, created))
    }

    async fn server_direct(
        &self,
        members: Vec<String>,
        conv_id: Option<String>,
    ) -> Result<(ConvMeta, bool)> {
        if let Some(id) = &conv_id {
            chosen_conv_id(id)?;
        }
        let [a, b] = <[String; 2]>::try_from(members)
            .map_err(|_| Error::bad_request("a direct conversation has exactly two members"))?;
        validate::opaque_id("user_id", &a)?;
        validate::opaque_id("user_id", &b)?;
        let exists = match &conv_id {
            Some(id) => self.store.conv(id).await?.is_some(),
            None => false,
        };
        // An existing ID is answered (or refused) by the store whatever
        // the users' state: a repeated request gets what the first made.
        if !exists {
            for u in [&a, &b] {
                if !self.usable(u).await? && !self.has_direct(u, &a, &b).await? {
                    return Err(Error::forbidden(format!("user {u} is deactivated")));
                }
            }
        }
        let (meta, created) = self
            .store
            .open_direct(&a, &b, conv_id.as_deref(), now_ms())
            .await?;
        if created {
            self.announce_direct(&meta.conv_id, [&a, &b], 0).await?;
        }
        Ok((meta, created))
    }

    async fn server_group(
        &self,
        key: &str,
        title: Option<String>,
        owner: String,
        members: Vec<String>,
        conv_id: Option<String>,
    ) -> Result<(ConvMeta, bool)> {
        if let Some(id) = &conv_id {
            chosen_conv_id(id)?;
            if let Some(meta) = self.store.conv(id).await? {
                if meta.ty != ConvType::Group {
                    return Err(Error::conflict("conv_id is taken by a direct conversation"));
                }
                return Ok((meta, false));
            }
        }
        if let Some(t) = &title {
            validate::title(t)?;
        }
        validate::opaque_id("owner", &owner)?;
        let mut members = validate::user_ids(&members)?;
        members.retain(|m| *m != owner);
        if members.len() as u64 + 1 > self.limits.max_group_members {
            return Err(Error::forbidden(format!(
                "a group holds at most {} members",
                self.limits.max_group_members
            )));
        }
        for u in std::iter::once(&owner).chain(&members) {
            if !self.usable(u).await? {
                return Err(Error::forbidden(format!("user {u} is deactivated")));
            }
        }
        let (meta, created) = self
            .store
            .create_group(tokenim_store::NewGroup {
                conv_id,
                owner,
                by: backend(key),
                title,
                members,
                now_ms: now_ms(),
                origin: 0,
            })
            .await?;
        if created {
            self.metrics.events.fetch_add(1, Ordering::Relaxed);
        }
        Ok((meta, created))
    }

    /// The conversation as the server API shows it (`not_found` when none).
    pub async fn server_get(&self, conv_id: &str) -> Result<ServerConversation> {
        let meta = self.server_conv(conv_id).await?;
        self.server_view(&meta).await
    }

    /// Adds users to a group; users already in it are left out, and a
    /// request adding nobody new changes nothing (a repeat of an earlier
    /// one). Answers the conversation.
    pub async fn server_add(
        &self,
        key: &str,
        conv_id: &str,
        user_ids: &[String],
    ) -> Result<ServerConversation> {
        let user_ids = validate::user_ids(user_ids)?;
        if user_ids.is_empty() {
            return Err(Error::bad_request("user_ids is empty"));
        }
        let meta = self.server_conv(conv_id).await?;
        direct_fixed(&meta)?;
        for u in &user_ids {
            if !self.usable(u).await? {
                return Err(Error::forbidden(format!("user {u} is deactivated")));
            }
        }
        let op = Op::AddMembers {
            user_ids,
            max_members: self.limits.max_group_members,
        };
        match self.server_commit(key, conv_id, op).await {
            Err(e) if e.code == ErrorCode::Conflict => {}
            other => other?,
        }
        self.server_get(conv_id).await
    }

    /// Removes a member from a group; the owner only once alone (I-10).
    pub async fn server_remove(&self, key: &str, conv_id: &str, user_id: &str) -> Result<()> {
        validate::opaque_id("user_id", user_id)?;
        let meta = self.server_conv(conv_id).await?;
        direct_fixed(&meta)?;
        let op = Op::Remove {
            user_id: user_id.to_owned(),
        };
        self.server_commit(key, conv_id, op).await
    }

    async fn server_commit(&self, key: &str, conv_id: &str, op: Op) -> Result<()> {
        let fut = self
            .commits
            .queue_by(backend(key), 0, conv_id, None, op, now_ms());
        self.commits.finish(fut).await.map(|_| ())
    }

    /// The conversation, for the backend (no membership involved).
    pub async fn server_conv(&self, conv_id: &str) -> Result<ConvMeta> {
        validate::opaque_id("conv_id", conv_id)?;
        self.store
            .conv(conv_id)
            .await?
            .ok_or_else(Error::no_conversation)
    }

    async fn server_view(&self, meta: &ConvMeta) -> Result<ServerConversation> {
        views::server_conversation(self.store.as_ref(), meta).await
    }

    /// Whether `user_id` exists and may be added (`not_found` when there
    /// is no such user; `false` when deactivated, I-4).
    pub async fn usable(&self, user_id: &str) -> Result<bool> {
        let user = self
            .store
            .user(user_id)
            .await?
            .ok_or_else(|| Error::not_found(format!("no such user {user_id}")))?;
        Ok(!user.deactivated)
    }

    /// Whether the direct conversation of `a` and `b` exists (read from
    /// `user`'s conversations: only asked about a deactivated user).
    async fn has_direct(&self, user: &str, a: &str, b: &str) -> Result<bool> {
        let pair = if a <= b { (a, b) } else { (b, a) };
        Ok(self.store.user_convs(user).await?.iter().any(|(c, _)| {
            c.pair
                .as_ref()
                .is_some_and(|(x, y)| (x.as_str(), y.as_str()) == pair)
        }))
    }
}

/// A direct conversation's members never change (I-10).
fn direct_fixed(meta: &ConvMeta) -> Result<()> {
    if meta.ty == ConvType::Direct {
        return Err(Error::forbidden(
            "the members of a direct conversation cannot change",
        ));
    }
    Ok(())
}
