//! The protocol's objects built from store records (a conversation as a
//! member sees it, a member entry), shared by the services and the
//! dispatcher so that both show the same thing.

use tokenim_core::Result;
use tokenim_core::perms::MemberFacts;
use tokenim_proto::{Conversation, MemberInfo, Notifications, NotifyLevel, ServerConversation};
use tokenim_store::{ConvMeta, Member, Store};

/// Conversations up to this size carry their member list.
pub const INLINE_MEMBERS: u64 = 500;

/// The conversation object for member `me`, with the member list when the
/// conversation is small enough (one read).
pub async fn conversation(store: &dyn Store, meta: &ConvMeta, me: &Member) -> Result<Conversation> {
    let mut c = conversation_light(meta, me);
    if meta.member_count <= INLINE_MEMBERS {
        let page = store
            .members_page(&meta.conv_id, None, INLINE_MEMBERS as usize)
            .await?;
        c.members = Some(page.into_iter().map(member_info).collect());
    }
    Ok(c)
}

/// The conversation object without the member list (no read).
pub fn conversation_light(meta: &ConvMeta, me: &Member) -> Conversation {
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
        notifications: notifications(me, tokenim_core::clock::now_ms()),
    }
}

/// The member's notification level as the conversation object shows it:
/// `{"level": "all", "until": null}` once `until` has passed (I-12).
pub fn notifications(me: &Member, now_ms: i64) -> Notifications {
    match tokenim_core::push::effective(me.notify_level, me.notify_until, now_ms) {
        NotifyLevel::All => Notifications::default(),
        level => Notifications {
            level,
            until: me.notify_until,
        },
    }
}

/// The conversation object of the server API (PROTOCOL-INTEGRATION
/// I1.4): no one's read marker, with the member list when small enough.
pub async fn server_conversation(store: &dyn Store, meta: &ConvMeta) -> Result<ServerConversation> {
    let members = if meta.member_count <= INLINE_MEMBERS {
        let page = store
            .members_page(&meta.conv_id, None, INLINE_MEMBERS as usize)
            .await?;
        Some(page.into_iter().map(member_info).collect())
    } else {
        None
    };
    Ok(ServerConversation {
        conv_id: meta.conv_id.clone(),
        ty: meta.ty,
        title: meta.title.clone(),
        members,
        member_count: meta.member_count,
        last_seq: meta.last_seq,
        last_event: meta.last_event.as_deref().cloned(),
        created_at: meta.created_at,
        only_admins_send: meta.only_admins_send,
    })
}

pub fn member_info(m: Member) -> MemberInfo {
    MemberInfo {
        user_id: m.user_id,
        role: m.role,
        muted_until: m.muted_until,
    }
}

/// What the permission checks need to know of a member.
pub fn facts(m: &Member) -> MemberFacts {
    MemberFacts {
        role: m.role,
        muted_until: m.muted_until,
    }
}
