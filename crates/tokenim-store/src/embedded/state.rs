//! The embedded engine's in-memory state: every record but events and dedup
//! records, loaded from disk at start and changed only by [`Change`]s.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use crate::{ConvMeta, Device, Member, Session, User};

#[derive(Clone, Default)]
pub(crate) struct ConvState {
    pub meta: ConvMeta,
    pub members: BTreeMap<String, Member>,
    pub member_ids: Arc<[String]>,
}

impl Default for ConvMeta {
    fn default() -> Self {
        ConvMeta {
            conv_id: String::new(),
            ty: tokenim_proto::ConvType::Group,
            title: None,
            created_at: 0,
            only_admins_send: false,
            pair: None,
            last_seq: 0,
            last_ts: 0,
            msg_count: 0,
            member_count: 0,
            last_event: None,
        }
    }
}

#[derive(Clone, Default)]
pub(crate) struct State {
    pub users: HashMap<String, Arc<User>>,
    pub by_name: HashMap<String, String>,
    pub sessions: HashMap<String, Session>,
    pub devices: HashMap<String, BTreeMap<String, Device>>,
    /// Push registrations by [`crate::PushTarget::token_key`] → (user,
    /// device), kept with `devices` (I-11: one device per token).
    pub push_index: HashMap<String, (String, String)>,
    pub contacts: HashMap<String, BTreeSet<String>>,
    pub blocks: HashMap<String, HashSet<String>>,
    pub convs: HashMap<String, ConvState>,
    pub user_convs: HashMap<String, HashSet<String>>,
    pub direct: HashMap<(String, String), String>,
    pub acks: HashMap<(String, String, String), u64>,
    /// Conversations whose `member_ids` must be rebuilt by [`State::settle`].
    pub dirty: HashSet<String>,
}

/// One change of state; applied to the writer's working copy as a batch is
/// built and to the published copy once the batch is durable.
#[derive(Debug, Clone)]
pub(crate) enum Change {
    User(Arc<User>),
    Session(Session),
    DelSession(String),
    Device(Device),
    DelDevice(String, String),
    Contact(String, String, bool),
    Block(String, String, bool),
    Conv(ConvMeta),
    Member(String, Member),
    DelMember(String, String),
    Ack(String, String, String, u64),
}

impl State {
    /// Rebuilds what a batch of changes left stale.
    pub fn settle(&mut self) {
        for conv in std::mem::take(&mut self.dirty) {
            if let Some(c) = self.convs.get_mut(&conv) {
                c.member_ids = c.members.keys().cloned().collect();
            }
        }
    }

    /// `apply(&Change::Conv(meta))` without a copy.
    pub fn put_conv(&mut self, meta: ConvMeta) {
        if let Some(pair) = &meta.pair {
            self.direct.insert(pair.clone(), meta.conv_id.clone());
        }
        match self.convs.get_mut(&meta.conv_id) {
            Some(c) => c.meta = meta,
            None => {
                let id = meta.conv_id.clone();
                self.convs.insert(
                    id,
                    ConvState {
                        meta,
                        ..Default::default()
                    },
                );
            }
        }
    }

    /// `apply(&Change::Member(conv, m))` without a copy.
    pub fn put_member(&mut self, conv: String, m: Member) {
        let c = self.convs.entry(conv.clone()).or_default();
        let user = m.user_id.clone();
        if c.members.insert(user.clone(), m).is_none() {
            self.dirty.insert(conv.clone());
            self.user_convs.entry(user).or_default().insert(conv);
        }
    }

    /// Drops `key` from the push index if it still names this device.
    fn unindex(&mut self, key: &str, user: &str, device: &str) {
        if self
            .push_index
            .get(key)
            .is_some_and(|(u, d)| u == user && d == device)
        {
            self.push_index.remove(key);
        }
    }

    pub fn apply(&mut self, c: &Change) {
        match c {
            Change::User(u) => {
                let before = self.users.insert(u.user_id.clone(), u.clone());
                if let Some(old) = before.as_ref().and_then(|o| o.username.as_ref())
                    && u.username.as_ref() != Some(old)
                    && self.by_name.get(old) == Some(&u.user_id)
                {
                    self.by_name.remove(old);
                }
                if let Some(name) = &u.username {
                    self.by_name.insert(name.clone(), u.user_id.clone());
                }
            }
            Change::Session(s) => {
                self.sessions.insert(s.session_id.clone(), s.clone());
            }
            Change::DelSession(id) => {
                self.sessions.remove(id);
            }
            Change::Device(d) => {
                let old = self
                    .devices
                    .entry(d.user_id.clone())
                    .or_default()
                    .insert(d.device_id.clone(), d.clone());
                if let Some(p) = old.and_then(|o| o.push) {
                    self.unindex(&p.token_key(), &d.user_id, &d.device_id);
                }
                if let Some(p) = &d.push {
                    self.push_index
                        .insert(p.token_key(), (d.user_id.clone(), d.device_id.clone()));
                }
            }
            Change::DelDevice(u, d) => {
                let old = self.devices.get_mut(u).and_then(|m| m.remove(d));
                if let Some(p) = old.and_then(|o| o.push) {
                    self.unindex(&p.token_key(), u, d);
                }
                self.acks.retain(|(au, ad, _), _| !(au == u && ad == d));
            }
            Change::Contact(u, o, on) => {
                let set = self.contacts.entry(u.clone()).or_default();
                if *on {
                    set.insert(o.clone());
                } else {
                    set.remove(o);
                }
            }
            Change::Block(u, o, on) => {
                let set = self.blocks.entry(u.clone()).or_default();
                if *on {
                    set.insert(o.clone());
                } else {
                    set.remove(o);
                }
            }
            Change::Conv(meta) => {
                if let Some(pair) = &meta.pair {
                    self.direct.insert(pair.clone(), meta.conv_id.clone());
                }
                let c = self.convs.entry(meta.conv_id.clone()).or_default();
                c.meta = meta.clone();
            }
            Change::Member(conv, m) => {
                let c = self.convs.entry(conv.clone()).or_default();
                let new = c.members.insert(m.user_id.clone(), m.clone()).is_none();
                if new {
                    self.dirty.insert(conv.clone());
                    self.user_convs
                        .entry(m.user_id.clone())
                        .or_default()
                        .insert(conv.clone());
                }
            }
            Change::DelMember(conv, user) => {
                if let Some(c) = self.convs.get_mut(conv)
                    && c.members.remove(user).is_some()
                {
                    self.dirty.insert(conv.clone());
                }
                if let Some(set) = self.user_convs.get_mut(user) {
                    set.remove(conv);
                }
                self.acks
                    .retain(|(au, _, ac), _| !(au == user && ac == conv));
            }
            Change::Ack(u, d, c, seq) => {
                let slot = self
                    .acks
                    .entry((u.clone(), d.clone(), c.clone()))
                    .or_insert(0);
                *slot = (*slot).max(*seq);
            }
        }
    }
}
