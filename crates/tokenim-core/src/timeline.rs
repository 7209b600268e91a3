//! The pre-commit check of a timeline request (send, recall, edit: rules 3,
//! 4, 7, 19) and the paging of history (rule 16), as pure functions.
//!
//! The server gathers the facts once (the dedup record, the membership, the
//! block, the target event) and [`check`] decides; nothing here reads a
//! store or a clock.

use tokenim_proto::{ConvType, EventKind};

use crate::perms::{self, MemberFacts};
use crate::{Error, Result};

/// Which timeline request is being checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    Send,
    Recall { target_seq: u64 },
    Edit { target_seq: u64 },
}

/// The event a recall or edit targets, as stored.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub kind: EventKind,
    /// Whether the actor sent it.
    pub mine: bool,
    pub ts: i64,
}

/// Everything [`check`] needs, gathered before it runs.
#[derive(Debug, Clone, Copy)]
pub struct Facts {
    pub ty: ConvType,
    pub only_admins_send: bool,
    /// The conversation's newest committed seq.
    pub last_seq: u64,
    pub me: MemberFacts,
    /// In a direct conversation: the peer blocks the actor.
    pub blocked_by_peer: bool,
    /// For a recall or edit: the target, if it exists.
    pub target: Option<Target>,
    pub now_ms: i64,
    pub recall_window_ms: u64,
}

/// Whether a repeated `client_msg_id` may be answered with its original
/// ack: only for the same conversation and the same request type (rule 7).
pub fn repeat(same_conv: bool, same_kind: bool) -> Result<()> {
    if same_conv && same_kind {
        Ok(())
    } else {
        Err(Error::conflict(
            "client_msg_id was used for another conversation or request type",
        ))
    }
}

/// Whether the target seq of a recall or edit can exist at all (before
/// anything is read for it).
pub fn target_in_range(target_seq: u64, last_seq: u64) -> Result<()> {
    if target_seq == 0 || target_seq > last_seq {
        Err(Error::not_found("no such event"))
    } else {
        Ok(())
    }
}

/// Decides a timeline request from its facts.
pub fn check(req: Request, f: &Facts) -> Result<()> {
    match req {
        Request::Send => {
            perms::send(f.ty, f.only_admins_send, f.me, f.now_ms)?;
            if f.blocked_by_peer {
                return Err(Error::forbidden("this user does not accept your messages"));
            }
            Ok(())
        }
        Request::Recall { target_seq } | Request::Edit { target_seq } => {
            target_in_range(target_seq, f.last_seq)?;
            let t = f.target.ok_or_else(|| Error::not_found("no such event"))?;
            if t.kind != EventKind::Message {
                return Err(Error::bad_request(
                    "only messages can be recalled or edited",
                ));
            }
            if matches!(req, Request::Recall { .. }) {
                perms::recall(f.ty, f.me, t.mine, t.ts, f.now_ms, f.recall_window_ms)
            } else {
                perms::edit(t.mine)?;
                perms::send(f.ty, f.only_admins_send, f.me, f.now_ms)
            }
        }
    }
}

/// The longest history page (rule 16): larger limits are clamped to it.
pub const MAX_HISTORY_LIMIT: u64 = 500;
/// The history page when no limit is given.
pub const DEFAULT_HISTORY_LIMIT: u64 = 50;

/// One history page: the seqs `from..=to` to read (empty when `from > to`
/// or `to == 0`) and whether more lie beyond them in the direction read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryPage {
    pub from: u64,
    pub to: u64,
    pub has_more: bool,
}

/// Where a history page lies: `after` reads forwards from a seq, `before`
/// backwards from one, neither gives the newest events. `limit` is already
/// clamped (at least 1).
pub fn history_page(
    after: Option<u64>,
    before: Option<u64>,
    limit: u64,
    last_seq: u64,
) -> Result<HistoryPage> {
    let limit = limit.clamp(1, MAX_HISTORY_LIMIT);
    let (from, to) = match (after, before) {
        (Some(_), Some(_)) => {
            return Err(Error::bad_request("give after_seq or before_seq, not both"));
        }
        (Some(s), None) => (s.saturating_add(1), last_seq.min(s.saturating_add(limit))),
        (None, Some(b)) => {
            let to = b.saturating_sub(1).min(last_seq);
            (to.saturating_sub(limit - 1).max(1), to)
        }
        (None, None) => (last_seq.saturating_sub(limit - 1).max(1), last_seq),
    };
    let has_more = match before {
        Some(_) => from > 1 && to > 0,
        None => to < last_seq,
    };
    // (None, None) reads the newest events: what remains is older.
    let has_more = if after.is_none() && before.is_none() {
        from > 1
    } else {
        has_more
    };
    Ok(HistoryPage { from, to, has_more })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenim_proto::Role;

    fn facts() -> Facts {
        Facts {
            ty: ConvType::Group,
            only_admins_send: false,
            last_seq: 10,
            me: MemberFacts {
                role: Role::Member,
                muted_until: None,
            },
            blocked_by_peer: false,
            target: None,
            now_ms: 1_000,
            recall_window_ms: 100,
        }
    }

    #[test]
    fn sends_are_refused_when_blocked_or_muted() {
        assert!(check(Request::Send, &facts()).is_ok());
        let blocked = Facts {
            blocked_by_peer: true,
            ..facts()
        };
        assert_eq!(
            check(Request::Send, &blocked).unwrap_err().code,
            tokenim_proto::ErrorCode::Forbidden
        );
        let mut muted = facts();
        muted.me.muted_until = Some(2_000);
        assert!(check(Request::Send, &muted).is_err());
    }

    #[test]
    fn recall_and_edit_need_an_existing_own_message() {
        let r = Request::Recall { target_seq: 11 };
        assert_eq!(
            check(r, &facts()).unwrap_err().code,
            tokenim_proto::ErrorCode::NotFound
        );
        let own = Facts {
            target: Some(Target {
                kind: EventKind::Message,
                mine: true,
                ts: 950,
            }),
            ..facts()
        };
        assert!(check(Request::Recall { target_seq: 3 }, &own).is_ok());
        assert!(check(Request::Edit { target_seq: 3 }, &own).is_ok());
        let late = Facts {
            now_ms: 2_000,
            ..own
        };
        assert!(check(Request::Recall { target_seq: 3 }, &late).is_err());
        let system = Facts {
            target: Some(Target {
                kind: EventKind::MemberJoined,
                mine: true,
                ts: 950,
            }),
            ..facts()
        };
        assert!(check(Request::Edit { target_seq: 3 }, &system).is_err());
    }

    #[test]
    fn history_pages_say_when_more_follow() {
        // 510 events, a limit over the cap: 500 come back and more follow.
        let p = history_page(Some(0), None, 1000, 510).unwrap();
        assert_eq!((p.from, p.to, p.has_more), (1, 500, true));
        let p = history_page(Some(500), None, 500, 510).unwrap();
        assert_eq!((p.from, p.to, p.has_more), (501, 510, false));
        let p = history_page(None, Some(511), 1000, 510).unwrap();
        assert_eq!((p.from, p.to, p.has_more), (11, 510, true));
        let p = history_page(None, Some(11), 500, 510).unwrap();
        assert_eq!((p.from, p.to, p.has_more), (1, 10, false));
        let p = history_page(None, None, 1000, 510).unwrap();
        assert_eq!((p.from, p.to, p.has_more), (11, 510, true));
        let p = history_page(None, None, 50, 20).unwrap();
        assert_eq!((p.from, p.to, p.has_more), (1, 20, false));
        assert!(history_page(Some(1), Some(2), 5, 9).is_err());
    }
}
