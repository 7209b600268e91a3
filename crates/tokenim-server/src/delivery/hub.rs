//! Who is online where: the registry of live sockets by user and device,
//! presence subscriptions, and fan-out of frames to them. Nothing here
//! awaits while holding a lock.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::ws::Utf8Bytes;
use parking_lot::{Mutex, RwLock};
use tokenim_proto::{KickReason, ServerFrame};

use crate::delivery::outbox::{Close, Outbox, Priority};

/// One live, authenticated socket.
pub struct Conn {
    pub id: u64,
    pub user_id: String,
    pub device_id: String,
    pub outbox: Outbox,
    /// Users this socket watches the presence of.
    pub presence_subs: Mutex<Vec<String>>,
    /// `client_msg_id`s of timeline requests this socket sent whose event
    /// was not pushed yet (nor failed): the socket that sent an event is
    /// not pushed it, also when the event reaches this node by another path
    /// than its own commit (a cluster's gap fill).
    pub sending: Mutex<HashSet<String>>,
}

impl Conn {
    pub fn send(&self, p: Priority, frame: &ServerFrame) -> bool {
        self.outbox.push(p, frame.to_json().into())
    }
}

/// A change of a user's presence, for the caller to persist and announce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresenceChange {
    None,
    Online,
    Offline,
}

#[derive(Default)]
pub struct Hub {
    next_id: AtomicU64,
    users: RwLock<HashMap<String, Vec<Arc<Conn>>>>,
    /// watched user -> sockets watching.
    watchers: RwLock<HashMap<String, Vec<Arc<Conn>>>>,
    /// Users' last-seen times for presence answers (ms).
    last_seen: Mutex<HashMap<String, i64>>,
}

impl Hub {
    pub fn new_conn(&self, user_id: &str, device_id: &str) -> Arc<Conn> {
        Arc::new(Conn {
            id: self.next_id.fetch_add(1, Ordering::Relaxed) + 1,
            user_id: user_id.to_owned(),
            device_id: device_id.to_owned(),
            outbox: Outbox::default(),
            presence_subs: Mutex::new(Vec::new()),
            sending: Mutex::new(HashSet::new()),
        })
    }

    /// Registers a socket, kicking an older one of the same device.
    pub fn register(&self, conn: &Arc<Conn>) -> PresenceChange {
        let mut users = self.users.write();
        let list = users.entry(conn.user_id.clone()).or_default();
        let was_online = !list.is_empty();
        list.retain(|c| {
            if c.device_id == conn.device_id {
                c.outbox.close(Close::Kick(KickReason::Replaced));
                false
            } else {
                true
            }
        });
        list.push(conn.clone());
        if was_online {
            PresenceChange::None
        } else {
            PresenceChange::Online
        }
    }

    /// Removes a socket (if still registered).
    pub fn unregister(&self, conn: &Conn, now_ms: i64) -> PresenceChange {
        let change = {
            let mut users = self.users.write();
            let Some(list) = users.get_mut(&conn.user_id) else {
                return PresenceChange::None;
            };
            let before = list.len();
            list.retain(|c| c.id != conn.id);
            if list.len() == before {
                PresenceChange::None
            } else if list.is_empty() {
                users.remove(&conn.user_id);
                PresenceChange::Offline
            } else {
                PresenceChange::None
            }
        };
        if change == PresenceChange::Offline {
            self.last_seen.lock().insert(conn.user_id.clone(), now_ms);
        }
        self.set_subs(conn, Vec::new());
        change
    }

    pub fn conns_of(&self, user_id: &str) -> Vec<Arc<Conn>> {
        self.users.read().get(user_id).cloned().unwrap_or_default()
    }

    pub fn is_online(&self, user_id: &str) -> bool {
        self.users.read().contains_key(user_id)
    }

    pub fn device_online(&self, user_id: &str, device_id: &str) -> bool {
        self.users
            .read()
            .get(user_id)
            .is_some_and(|l| l.iter().any(|c| c.device_id == device_id))
    }

    pub fn online_users(&self) -> usize {
        self.users.read().len()
    }

    pub fn connections(&self) -> usize {
        self.users.read().values().map(Vec::len).sum()
    }

    pub fn last_seen(&self, user_id: &str) -> Option<i64> {
        self.last_seen.lock().get(user_id).copied()
    }

    /// Remembers when a user went offline (told by another node).
    pub fn note_last_seen(&self, user_id: &str, at_ms: i64) {
        let mut seen = self.last_seen.lock();
        let slot = seen.entry(user_id.to_owned()).or_insert(at_ms);
        *slot = (*slot).max(at_ms);
    }

    /// Every live socket as (user, device, connection ID).
    pub fn local_devices(&self) -> Vec<(String, String, u64)> {
        self.users
            .read()
            .values()
            .flatten()
            .map(|c| (c.user_id.clone(), c.device_id.clone(), c.id))
            .collect()
    }

    /// Sends `frame` to every socket of `user_id` except `skip`.
    pub fn to_user(&self, user_id: &str, skip: u64, p: Priority, frame: &Utf8Bytes) {
        if let Some(list) = self.users.read().get(user_id) {
            for c in list {
                if c.id != skip {
                    c.outbox.push(p, frame.clone());
                }
            }
        }
    }

    /// Sends `frame` to every socket of the members in `members` (sorted)
    /// except `skip`, visiting the smaller of the member list and the online
    /// users, so a huge group with few online members stays cheap.
    pub fn to_members(&self, members: &[String], skip: u64, p: Priority, frame: &Utf8Bytes) {
        let users = self.users.read();
        let push = |list: &Vec<Arc<Conn>>| {
            for c in list {
                if c.id != skip {
                    c.outbox.push(p, frame.clone());
                }
            }
        };
        if members.len() <= users.len() {
            for m in members {
                if let Some(list) = users.get(m) {
                    push(list);
                }
            }
        } else {
            for (u, list) in users.iter() {
                if members.binary_search(u).is_ok() {
                    push(list);
                }
            }
        }
    }

    /// Replaces a socket's presence subscription.
    pub fn set_subs(&self, conn: &Conn, users: Vec<String>) {
        let old = std::mem::replace(&mut *conn.presence_subs.lock(), users.clone());
        let mut w = self.watchers.write();
        for u in old {
            if let Some(list) = w.get_mut(&u) {
                list.retain(|c| c.id != conn.id);
                if list.is_empty() {
                    w.remove(&u);
                }
            }
        }
        if users.is_empty() {
            return;
        }
        let me = self.find(conn);
        if let Some(me) = me {
            for u in users {
                w.entry(u).or_default().push(me.clone());
            }
        }
    }

    fn find(&self, conn: &Conn) -> Option<Arc<Conn>> {
        self.users
            .read()
            .get(&conn.user_id)?
            .iter()
            .find(|c| c.id == conn.id)
            .cloned()
    }

    /// Tells every watcher of `user_id` its new presence.
    pub fn announce(&self, user_id: &str, online: bool, last_seen: i64) {
        let frame: Utf8Bytes = ServerFrame::Presence {
            user_id: user_id.to_owned(),
            online,
            last_seen,
        }
        .to_json()
        .into();
        if let Some(list) = self.watchers.read().get(user_id) {
            for c in list {
                c.outbox.push(Priority::Ephemeral, frame.clone());
            }
        }
    }

    /// Closes every socket (graceful shutdown).
    pub fn close_all(&self, c: Close) {
        for list in self.users.read().values() {
            for conn in list {
                conn.outbox.close(c);
            }
        }
    }

    /// The socket of `user`'s `device` here that sent `client_msg_id` and
    /// was not pushed its event yet, forgetting the request.
    pub fn take_sender(&self, user_id: &str, device_id: &str, client_msg_id: &str) -> Option<u64> {
        let users = self.users.read();
        users.get(user_id)?.iter().find_map(|c| {
            (c.device_id == device_id && c.sending.lock().remove(client_msg_id)).then_some(c.id)
        })
    }

    /// Kicks one socket, if it is still the given user's and device's.
    pub fn kick_conn(&self, user_id: &str, device_id: &str, conn: u64, reason: KickReason) {
        for c in self.conns_of(user_id) {
            if c.id == conn && c.device_id == device_id {
                c.outbox.close(Close::Kick(reason));
            }
        }
    }

    /// Kicks the sockets of one device (or of every device when `None`).
    pub fn kick(&self, user_id: &str, device_id: Option<&str>, reason: KickReason) {
        for c in self.conns_of(user_id) {
            if device_id.is_none_or(|d| d == c.device_id) {
                c.outbox.close(Close::Kick(reason));
            }
        }
    }
}
