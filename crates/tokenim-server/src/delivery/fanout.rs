//! Where a push goes: to this node's sockets (the [`Hub`]) and, in cluster
//! mode, to every other node's. The services push through here and never
//! through the hub directly, so a rule never needs to know whether it runs
//! on one node or many.
//!
//! Routing: frames for users and members and presence changes go on the
//! broadcast channel (every node looks its own sockets up: cheaper than a
//! registry lookup per frame, and right even while the registry is behind);
//! kicks go to the one node the registry says holds the socket. Committed
//! events are not pushed here: each node's dispatcher delivers them to its
//! own sockets (see `dispatcher::Dispatcher::deliver`).

use std::collections::HashSet;
use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use tokenim_proto::KickReason;

use crate::delivery::cluster::Cluster;
use crate::delivery::hub::{Conn, Hub, PresenceChange};
use crate::delivery::outbox::Priority;
use tokenim_core::clock::now_ms;

pub struct Fanout {
    pub hub: Arc<Hub>,
    pub cluster: Option<Arc<Cluster>>,
}

impl Fanout {
    /// Sends `frame` to every socket of `user` (but `skip`, a socket of this
    /// node).
    pub fn to_user(&self, user: &str, skip: u64, p: Priority, frame: &Utf8Bytes) {
        self.hub.to_user(user, skip, p, frame);
        if let Some(c) = &self.cluster {
            c.publish_user(user, p, frame);
        }
    }

    /// Sends `frame` to every socket of the members (sorted) but `skip`.
    pub fn to_members(&self, members: &[String], skip: u64, p: Priority, frame: &Utf8Bytes) {
        self.hub.to_members(members, skip, p, frame);
        if let Some(c) = &self.cluster {
            c.publish_members(members, p, frame);
        }
    }

    /// Tells every watcher of `user` on every node its new presence.
    pub fn announce(&self, user: &str, online: bool, last_seen: i64) {
        self.hub.announce(user, online, last_seen);
        if let Some(c) = &self.cluster {
            c.publish_presence(user, online, last_seen);
        }
    }

    /// Kicks the sockets of a device wherever they are.
    pub async fn kick(&self, user: &str, device: &str, reason: KickReason) {
        self.hub.kick(user, Some(device), reason);
        if let Some(c) = &self.cluster
            && let Some(devs) = c.live_devices(user).await
        {
            for (d, owner) in devs {
                if d == device && c.is_remote(&owner) {
                    c.publish_kick(&owner, user, device, reason);
                }
            }
        }
    }

    /// Kicks every socket of the user, here and on any other node.
    pub async fn kick_user(&self, user: &str, reason: KickReason) {
        self.hub.kick(user, None, reason);
        if let Some(c) = &self.cluster
            && let Some(devs) = c.live_devices(user).await
        {
            for (d, owner) in devs {
                if c.is_remote(&owner) {
                    c.publish_kick(&owner, user, &d, reason);
                }
            }
        }
    }

    /// A socket authenticated: registers it here and in the cluster, kicks
    /// the device's older socket (here or on another node) and announces
    /// the user `online` if no device of theirs was.
    pub async fn connected(&self, conn: &Arc<Conn>) {
        let local = self.hub.register(conn);
        let cluster = match &self.cluster {
            Some(c) => c
                .register(&conn.user_id, &conn.device_id, conn.id)
                .await
                .map(|r| (c, r)),
            None => None,
        };
        let online = match cluster {
            Some((c, (old, was_online))) => {
                if let Some(old) = old
                    && c.is_remote(&old)
                {
                    c.publish_kick(&old, &conn.user_id, &conn.device_id, KickReason::Replaced);
                }
                !was_online
            }
            // No cluster (or Redis failed): this node's view.
            None => local == PresenceChange::Online,
        };
        if online {
            self.announce(&conn.user_id, true, now_ms());
        }
    }

    /// A socket ended (called from a drop: the cluster's part runs in a
    /// task of its own).
    pub fn disconnected(&self, conn: &Arc<Conn>) {
        let now = now_ms();
        let local = self.hub.unregister(conn, now);
        let Some(c) = self.cluster.clone() else {
            if local == PresenceChange::Offline {
                self.hub.announce(&conn.user_id, false, now);
            }
            return;
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let hub = self.hub.clone();
        let conn = conn.clone();
        let pending = c.begin();
        rt.spawn(async move {
            let _pending = pending;
            let left = c.unregister(&conn.user_id, &conn.device_id, conn.id).await;
            let offline = match left {
                Some(n) => n == 0 && !hub.is_online(&conn.user_id),
                None => local == PresenceChange::Offline,
            };
            if offline {
                hub.announce(&conn.user_id, false, now);
                c.publish_presence(&conn.user_id, false, now);
            }
        });
    }

    /// Whether each user is online (anywhere in the cluster).
    pub async fn online(&self, users: &[String]) -> Vec<bool> {
        if let Some(c) = &self.cluster
            && let Some(v) = c.online(users).await
        {
            return v;
        }
        users.iter().map(|u| self.hub.is_online(u)).collect()
    }

    /// The devices of `user` that are online (anywhere in the cluster).
    pub async fn online_devices(&self, user: &str) -> HashSet<String> {
        if let Some(c) = &self.cluster
            && let Some(v) = c.live_devices(user).await
        {
            return v.into_iter().map(|(d, _)| d).collect();
        }
        self.hub
            .conns_of(user)
            .iter()
            .map(|c| c.device_id.clone())
            .collect()
    }
}
