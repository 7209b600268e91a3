//! The rules of a timeline write, shared by every engine: given a request,
//! the conversation as it stands and a view of its members and events, what
//! the write does (or why it is refused). An engine looks things up its own
//! way and applies the [`Plan`] to its own storage; the rules are written
//! once.

use tokenim_core::Error;
use tokenim_proto::system::{
    ConvUpdated, Edit, MemberJoined, MemberLeft, MemberRemoved, Recall, RoleChanged, System,
};
use tokenim_proto::{Content, ConvType, Event, EventKind, Role};

use crate::*;

/// What the rules need to look up besides the conversation itself.
pub(crate) trait View {
    /// The user's member record in the conversation, if a member.
    fn member(&self, user_id: &str) -> Option<Member>;
    /// An event of the conversation with the message count at it.
    fn event(&self, seq: u64) -> StoreResult<Option<(u64, Event)>>;
}

/// The effects of one accepted request.
pub(crate) struct Plan {
    /// The conversation after the event (position, counters, title, flags;
    /// `last_event` is left to the engine).
    pub meta: ConvMeta,
    pub event: Event,
    /// A recall or edit: the target's seq, its message count and its new
    /// form.
    pub target: Option<(u64, u64, Event)>,
    /// Member records written (`Some`) or deleted (`None`).
    pub members: Vec<(String, Option<Member>)>,
    pub added: Vec<String>,
    pub removed: Option<String>,
}

impl Plan {
    /// Whether the event changes who is a member.
    pub fn moves_members(&self) -> bool {
        !self.added.is_empty() || self.removed.is_some()
    }

    /// The dedup record the request leaves, when it carries a
    /// `client_msg_id`.
    pub fn dedup(&self, a: &Append) -> Option<(String, String, DedupRecord)> {
        let cmid = a.client_msg_id.as_ref()?;
        let kind = a.request_kind()?;
        Some((
            a.actor.dedup_key().to_owned(),
            cmid.clone(),
            DedupRecord {
                conv_id: a.conv_id.clone(),
                kind,
                msg_id: self.event.msg_id.clone(),
                seq: self.event.seq,
                ts: self.event.ts,
            },
        ))
    }
}

/// A repeat of an earlier request (rule 7): its original result, or a
/// conflict when the ID was used for something else. `None` when `found`
/// is no record.
pub(crate) fn repeat(a: &Append, found: Option<DedupRecord>) -> Option<StoreResult<AppendOutcome>> {
    let d = found?;
    let kind = a.request_kind()?;
    Some(if d.conv_id != a.conv_id || d.kind != kind {
        Err(
            Error::conflict("client_msg_id was used for another conversation or request type")
                .into(),
        )
    } else {
        Ok(AppendOutcome::Duplicate(d))
    })
}

/// A new direct conversation of the (sorted) `pair`, with its one or two
/// members counted; `conv_id` or a new server-made ID.
pub(crate) fn new_direct(pair: (String, String), conv_id: Option<&str>, now_ms: i64) -> ConvMeta {
    let id = conv_id.map_or_else(|| ids::conv_id(now_ms), str::to_owned);
    ConvMeta {
        member_count: if pair.0 == pair.1 { 1 } else { 2 },
        pair: Some(pair),
        ..new_conv(id, ConvType::Direct, None, now_ms)
    }
}

/// Whether an existing conversation answers a request to create a direct
/// conversation of `pair` (sorted) under `conv_id` (PROTOCOL-INTEGRATION
/// I-8): `Ok` when it is that pair's own (and `conv_id`, when given, is
/// its ID), `conflict` when the pair has another ID or `conv_id` is taken
/// by another conversation.
pub(crate) fn existing_direct(
    found: &ConvMeta,
    pair: &(String, String),
    conv_id: Option<&str>,
) -> StoreResult<()> {
    if found.pair.as_ref() == Some(pair) {
        match conv_id {
            Some(id) if id != found.conv_id => Err(Error::conflict(format!(
                "the two users have a direct conversation already: {}",
                found.conv_id
            ))
            .into()),
            _ => Ok(()),
        }
    } else {
        Err(Error::conflict("conv_id is taken by another conversation").into())
    }
}

/// Whether an existing conversation answers a request to create a group
/// under its ID (I-8): a group is answered unchanged, anything else is a
/// conflict.
pub(crate) fn existing_group(found: &ConvMeta) -> StoreResult<()> {
    if found.ty == ConvType::Group {
        Ok(())
    } else {
        Err(Error::conflict("conv_id is taken by a direct conversation").into())
    }
}

/// A new group, before its members are added (by its first event).
pub(crate) fn new_group(conv_id: String, title: Option<String>, now_ms: i64) -> ConvMeta {
    new_conv(conv_id, ConvType::Group, title, now_ms)
}

fn new_conv(conv_id: String, ty: ConvType, title: Option<String>, now_ms: i64) -> ConvMeta {
    ConvMeta {
        conv_id,
        ty,
        title,
        created_at: now_ms,
        only_admins_send: false,
        pair: None,
        last_seq: 0,
        last_ts: now_ms,
        msg_count: 0,
        member_count: 0,
        last_event: None,
    }
}

pub(crate) fn new_member(user: &str, role: Role, joined_after: u64, count: u64) -> Member {
    Member {
        user_id: user.to_owned(),
        role,
        muted_until: None,
        joined_after,
        read_seq: joined_after,
        read_count: count,
        notify_level: Default::default(),
        notify_until: None,
    }
}

/// Checks `a` against the conversation `conv` (`creating`: the request that
/// creates a group, by a user not yet its member) and answers what it does.
pub(crate) fn plan(
    a: &Append,
    conv: &ConvMeta,
    creating: bool,
    view: &impl View,
) -> StoreResult<Plan> {
    if !creating
        && let Some(user) = a.actor.user()
        && view.member(user).is_none()
    {
        return Err(Error::no_conversation().into());
    }
    // Who did it, for the bodies' `by` (absent on system events).
    let by = a.actor.user().map(str::to_owned);
    let mut meta = conv.clone();
    meta.last_event = None;
    let seq = meta.last_seq + 1;
    let ts = a.now_ms.max(meta.last_ts);
    let mut added = Vec::new();
    let mut removed = None;
    let mut members = Vec::new();
    let mut target = None;
    let (kind, content): (EventKind, Content) = match &a.op {
        Op::Message { content } => {
            meta.msg_count += 1;
            (EventKind::Message, content.clone())
        }
        Op::Recall { target_seq } | Op::Edit { target_seq, .. } => {
            let Some((count, mut t)) = view.event(*target_seq)? else {
                return Err(Error::not_found("no such event").into());
            };
            if t.kind != EventKind::Message {
                return Err(Error::bad_request("only messages can be recalled or edited").into());
            }
            if t.recalled {
                return Err(Error::forbidden("the message was recalled").into());
            }
            let out = match &a.op {
                Op::Edit { content, .. } => {
                    t.content = Some(content.clone());
                    t.edited = true;
                    System::Edit(Edit {
                        target_seq: *target_seq,
                        content: content.clone(),
                    })
                    .parts()
                }
                _ => {
                    t.content = None;
                    t.recalled = true;
                    t.edited = false;
                    System::Recall(Recall {
                        target_seq: *target_seq,
                    })
                    .parts()
                }
            };
            target = Some((*target_seq, count, t));
            out
        }
        Op::AddMembers {
            user_ids,
            max_members,
        } => {
            let new: Vec<String> = user_ids
                .iter()
                .filter(|u| creating || view.member(u).is_none())
                .cloned()
                .collect();
            if new.is_empty() {
                return Err(Error::conflict("every user is already a member").into());
            }
            if meta.member_count + new.len() as u64 > *max_members {
                return Err(Error::forbidden(format!(
                    "a group holds at most {max_members} members"
                ))
                .into());
            }
            for u in &new {
                let role = if creating && Some(u) == user_ids.first() {
                    Role::Owner
                } else {
                    Role::Member
                };
                members.push((
                    u.clone(),
                    Some(new_member(u, role, seq - 1, meta.msg_count)),
                ));
            }
            meta.member_count += new.len() as u64;
            added = new.clone();
            System::MemberJoined(MemberJoined { user_ids: new, by }).parts()
        }
        Op::Leave => {
            let Some(user) = by else {
                return Err(Error::bad_request("only a member can leave").into());
            };
            meta.member_count = meta.member_count.saturating_sub(1);
            members.push((user.clone(), None));
            removed = Some(user.clone());
            System::MemberLeft(MemberLeft { user_id: user }).parts()
        }
        Op::Remove { user_id } => {
            match view.member(user_id) {
                None => return Err(Error::not_found("no such member").into()),
                // A user never removes the owner; the backend may, once
                // the owner is alone (I-10).
                Some(m) if m.role == Role::Owner && by.is_some() => {
                    return Err(Error::forbidden("the owner cannot be removed").into());
                }
                Some(m) if m.role == Role::Owner && meta.member_count > 1 => {
                    return Err(Error::forbidden(
                        "the owner cannot be removed while the group has other members",
                    )
                    .into());
                }
                Some(_) => {}
            }
            meta.member_count = meta.member_count.saturating_sub(1);
            members.push((user_id.clone(), None));
            removed = Some(user_id.clone());
            System::MemberRemoved(MemberRemoved {
                user_id: user_id.clone(),
                by,
            })
            .parts()
        }
        Op::SetRole { user_id, role } => {
            let Some(mut m) = view.member(user_id) else {
                return Err(Error::not_found("no such member").into());
            };
            m.role = *role;
            members.push((user_id.clone(), Some(m)));
            System::RoleChanged(RoleChanged {
                user_id: user_id.clone(),
                role: *role,
                by,
            })
            .parts()
        }
        Op::Update {
            title,
            only_admins_send,
        } => {
            if let Some(t) = title {
                meta.title = Some(t.clone());
            }
            if let Some(o) = only_admins_send {
                meta.only_admins_send = *o;
            }
            System::ConvUpdated(ConvUpdated {
                title: title.clone(),
                only_admins_send: *only_admins_send,
                by,
            })
            .parts()
        }
    };
    let event = Event {
        conv_id: a.conv_id.clone(),
        seq,
        msg_id: ids::msg_id(ts),
        ts,
        sender: a.actor.user().map(str::to_owned),
        sender_device: a.actor.device_id().map(str::to_owned),
        system: matches!(a.actor, Author::System { .. }),
        kind,
        client_msg_id: a.client_msg_id.clone(),
        content: Some(content),
        recalled: false,
        edited: false,
    };
    meta.last_seq = seq;
    meta.last_ts = ts;
    Ok(Plan {
        meta,
        event,
        target,
        members,
        added,
        removed,
    })
}
