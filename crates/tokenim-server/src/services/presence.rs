//! Presence and typing: who may watch whom (contacts and co-members), the
//! `presence` frames (online anywhere in the cluster), and `typing`
//! notices in small conversations.

use std::collections::HashSet;
use std::sync::Arc;

use tokenim_core::clock::now_ms;
use tokenim_core::{Error, Limits, Result, validate};
use tokenim_proto::ServerFrame;
use tokenim_store::Store;

use crate::delivery::fanout::Fanout;
use crate::delivery::outbox::{Priority, shared};
use crate::services::Actor;
use crate::services::conversations::Conversations;

/// Most users one `presence_sub` may name.
const MAX_WATCHED: usize = 1000;

pub struct Presence {
    store: Arc<dyn Store>,
    limits: Limits,
    convs: Arc<Conversations>,
    fanout: Arc<Fanout>,
}

impl Presence {
    pub fn new(
        store: Arc<dyn Store>,
        limits: Limits,
        convs: Arc<Conversations>,
        fanout: Arc<Fanout>,
    ) -> Self {
        Presence {
            store,
            limits,
            convs,
            fanout,
        }
    }

    pub async fn typing(&self, a: &Actor, conv_id: &str) -> Result<()> {
        let (meta, _) = self.convs.membership(conv_id, &a.user_id).await?;
        if meta.member_count > self.limits.receipt_group_max {
            return Ok(());
        }
        let ids = self.store.member_ids(conv_id).await?;
        let others: Vec<String> = ids.iter().filter(|u| **u != a.user_id).cloned().collect();
        let f = shared(&ServerFrame::Typing {
            conv_id: conv_id.to_owned(),
            user_id: a.user_id.clone(),
        });
        self.fanout
            .to_members(&others, a.conn, Priority::Ephemeral, &f);
        Ok(())
    }

    /// The users of `wanted` that `a` may watch (contacts and co-members).
    pub async fn allowed(&self, a: &Actor, wanted: &[String]) -> Result<Vec<String>> {
        if wanted.len() > MAX_WATCHED {
            return Err(Error::bad_request(format!(
                "at most {MAX_WATCHED} user_ids"
            )));
        }
        let contacts: HashSet<String> =
            self.store.contacts(&a.user_id).await?.into_iter().collect();
        let mine = self.store.user_convs(&a.user_id).await?;
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
                    if self.store.member(&meta.conv_id, u).await?.is_some() {
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

    /// The `presence` frame of each user.
    pub async fn frames(&self, users: &[String]) -> Vec<ServerFrame> {
        let online = self.fanout.online(users).await;
        let mut out = Vec::with_capacity(users.len());
        for (u, on) in users.iter().zip(online) {
            out.push(self.frame(u, on).await);
        }
        out
    }

    /// The `presence` frame of one user.
    pub async fn of(&self, user_id: &str) -> ServerFrame {
        let online = self
            .fanout
            .online(&[user_id.to_owned()])
            .await
            .first()
            .copied()
            .unwrap_or(false);
        self.frame(user_id, online).await
    }

    async fn frame(&self, user_id: &str, online: bool) -> ServerFrame {
        let last_seen = if online {
            now_ms()
        } else {
            match self.fanout.hub.last_seen(user_id) {
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
}
