//! Who may do what in a conversation (PROTOCOL.md 2 and rules 3-6).
//!
//! Each check takes plain facts and answers `Ok` or the protocol error the
//! client sees. Membership itself is checked by the caller: a non-member
//! always gets `not_found` before any of these run.

use tokenim_proto::{ConvType, Role};

use crate::{Error, Result};

/// What the checks need to know about a member.
#[derive(Debug, Clone, Copy)]
pub struct MemberFacts {
    pub role: Role,
    pub muted_until: Option<i64>,
}

impl MemberFacts {
    pub fn is_admin(&self) -> bool {
        self.role >= Role::Admin
    }
    /// A mute whose `until` is in the past is no mute (rule 4).
    pub fn is_muted(&self, now_ms: i64) -> bool {
        self.muted_until.is_some_and(|t| t > now_ms)
    }
}

/// Sending a message (or an edit).
pub fn send(ty: ConvType, only_admins_send: bool, me: MemberFacts, now_ms: i64) -> Result<()> {
    if me.is_muted(now_ms) {
        return Err(Error::forbidden("you are muted in this conversation"));
    }
    if ty == ConvType::Group && only_admins_send && !me.is_admin() {
        return Err(Error::forbidden(
            "only admins may send in this conversation",
        ));
    }
    Ok(())
}

/// Recalling event `target` (rule 3): the sender within the window, or a
/// group admin at any time.
pub fn recall(
    ty: ConvType,
    me: MemberFacts,
    is_sender: bool,
    target_ts: i64,
    now_ms: i64,
    window_ms: u64,
) -> Result<()> {
    if ty == ConvType::Group && me.is_admin() {
        return Ok(());
    }
    if !is_sender {
        return Err(Error::forbidden("only the sender or an admin may recall"));
    }
    if now_ms.saturating_sub(target_ts) > window_ms as i64 {
        return Err(Error::forbidden("the recall window has passed"));
    }
    Ok(())
}

/// Editing: the sender only.
pub fn edit(is_sender: bool) -> Result<()> {
    if is_sender {
        Ok(())
    } else {
        Err(Error::forbidden("only the sender may edit a message"))
    }
}

/// Changing the title or the send mode, adding members: group admins.
pub fn manage(ty: ConvType, me: MemberFacts) -> Result<()> {
    if ty != ConvType::Group {
        return Err(Error::forbidden("direct conversations cannot be changed"));
    }
    if !me.is_admin() {
        return Err(Error::forbidden("only admins may do this"));
    }
    Ok(())
}

/// Removing `target` (not oneself): admins remove members, only the owner
/// removes admins, nobody removes the owner.
pub fn remove(ty: ConvType, me: MemberFacts, target: Role) -> Result<()> {
    manage(ty, me)?;
    act_on(me.role, target)
}

/// Leaving: anyone but an owner who still has company.
pub fn leave(ty: ConvType, me: MemberFacts, member_count: u64) -> Result<()> {
    if ty != ConvType::Group {
        return Err(Error::forbidden("you cannot leave a direct conversation"));
    }
    if me.role == Role::Owner && member_count > 1 {
        return Err(Error::forbidden(
            "the owner cannot leave while the group has other members",
        ));
    }
    Ok(())
}

/// Muting `target`: same rule as removing.
pub fn mute(ty: ConvType, me: MemberFacts, target: Role) -> Result<()> {
    remove(ty, me, target)
}

/// Changing `target`'s role: the owner only, never the owner's own role.
pub fn set_role(ty: ConvType, me: MemberFacts, target: Role, new_role: Role) -> Result<()> {
    if ty != ConvType::Group {
        return Err(Error::forbidden("direct conversations have no roles"));
    }
    if me.role != Role::Owner {
        return Err(Error::forbidden("only the owner may change roles"));
    }
    if target == Role::Owner {
        return Err(Error::forbidden("the owner's role cannot change"));
    }
    if new_role == Role::Owner {
        return Err(Error::bad_request("role must be admin or member"));
    }
    Ok(())
}

fn act_on(actor: Role, target: Role) -> Result<()> {
    match (actor, target) {
        (_, Role::Owner) => Err(Error::forbidden("the owner cannot be removed or muted")),
        (Role::Owner, _) => Ok(()),
        (Role::Admin, Role::Member) => Ok(()),
        _ => Err(Error::forbidden("only the owner may act on an admin")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(role: Role) -> MemberFacts {
        MemberFacts {
            role,
            muted_until: None,
        }
    }

    #[test]
    fn removal_matrix() {
        use Role::*;
        let g = ConvType::Group;
        assert!(remove(g, m(Owner), Admin).is_ok());
        assert!(remove(g, m(Owner), Member).is_ok());
        assert!(remove(g, m(Admin), Member).is_ok());
        assert!(remove(g, m(Admin), Admin).is_err());
        assert!(remove(g, m(Admin), Owner).is_err());
        assert!(remove(g, m(Member), Member).is_err());
        assert!(remove(ConvType::Direct, m(Member), Member).is_err());
    }

    #[test]
    fn mute_expires() {
        let f = MemberFacts {
            role: Role::Member,
            muted_until: Some(100),
        };
        assert!(send(ConvType::Group, false, f, 99).is_err());
        assert!(send(ConvType::Group, false, f, 100).is_ok());
    }

    #[test]
    fn recall_window() {
        let g = ConvType::Group;
        assert!(recall(g, m(Role::Member), true, 0, 1000, 1000).is_ok());
        assert!(recall(g, m(Role::Member), true, 0, 1001, 1000).is_err());
        assert!(recall(g, m(Role::Member), false, 0, 10, 1000).is_err());
        assert!(recall(g, m(Role::Admin), false, 0, 1_000_000, 1000).is_ok());
        assert!(recall(ConvType::Direct, m(Role::Member), false, 0, 1, 1000).is_err());
    }
}
