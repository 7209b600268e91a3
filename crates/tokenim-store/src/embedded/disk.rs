//! The on-disk layout of the embedded engine (fjall keyspaces) and the code
//! that reads it. Keys are byte strings with `\0` between parts (no ID
//! contains a NUL) and seqs in big-endian, so prefixes and ranges follow the
//! natural order.

use std::path::Path;
use std::sync::Arc;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use tokenim_proto::Event;

use super::state::{Change, ConvState, State};
use crate::{ConvMeta, DedupRecord, Device, Member, Session, StoreError, StoreResult, User};

fn engine(e: impl std::fmt::Display) -> StoreError {
    StoreError::Engine(e.to_string())
}

pub(crate) struct Disk {
    pub db: Database,
    users: Keyspace,
    sessions: Keyspace,
    devices: Keyspace,
    social: Keyspace,
    convs: Keyspace,
    members: Keyspace,
    pub events: Keyspace,
    pub dedup: Keyspace,
    acks: Keyspace,
}

pub(crate) fn key2(a: &str, b: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(a.len() + b.len() + 1);
    k.extend_from_slice(a.as_bytes());
    k.push(0);
    k.extend_from_slice(b.as_bytes());
    k
}

fn key3(a: &str, b: &str, c: &str) -> Vec<u8> {
    let mut k = key2(a, b);
    k.push(0);
    k.extend_from_slice(c.as_bytes());
    k
}

pub(crate) fn event_key(conv_id: &str, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(conv_id.len() + 9);
    k.extend_from_slice(conv_id.as_bytes());
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// An event as stored: the timeline's message count at it, then the JSON.
pub(crate) fn encode_event(msg_count: u64, e: &Event) -> Vec<u8> {
    let mut v = Vec::with_capacity(256);
    v.extend_from_slice(&msg_count.to_be_bytes());
    serde_json::to_writer(&mut v, e).expect("events serialize");
    v
}

pub(crate) fn decode_event(v: &[u8]) -> StoreResult<(u64, Event)> {
    if v.len() < 8 {
        return Err(engine("corrupt event record"));
    }
    let count = u64::from_be_bytes(v[..8].try_into().expect("8 bytes"));
    Ok((count, tokenim_proto::decode_event(&v[8..]).map_err(engine)?))
}

fn split(k: &[u8]) -> Vec<String> {
    k.split(|b| *b == 0)
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect()
}

impl Disk {
    pub fn open(path: &Path) -> StoreResult<Disk> {
        let db = Database::builder(path).open().map_err(engine)?;
        let ks = |name: &str| {
            db.keyspace(name, KeyspaceCreateOptions::default)
                .map_err(engine)
        };
        Ok(Disk {
            users: ks("users")?,
            sessions: ks("sessions")?,
            devices: ks("devices")?,
            social: ks("social")?,
            convs: ks("convs")?,
            members: ks("members")?,
            events: ks("events")?,
            dedup: ks("dedup")?,
            acks: ks("acks")?,
            db,
        })
    }

    pub fn persist(&self) -> StoreResult<()> {
        self.db.persist(PersistMode::SyncData).map_err(engine)
    }

    fn scan(&self, ks: &Keyspace) -> StoreResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        for item in ks.iter() {
            let (k, v) = item.into_inner().map_err(engine)?;
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    /// Reads every in-memory record back from disk.
    pub fn load(&self) -> StoreResult<State> {
        let mut st = State::default();
        for (_, v) in self.scan(&self.users)? {
            let u: User = parse(&v)?;
            st.apply(&Change::User(Arc::new(u)));
        }
        for (_, v) in self.scan(&self.sessions)? {
            let s: Session = parse(&v)?;
            st.apply(&Change::Session(s));
        }
        for (_, v) in self.scan(&self.devices)? {
            let d: Device = parse(&v)?;
            st.apply(&Change::Device(d));
        }
        for (k, _) in self.scan(&self.social)? {
            let parts = split(&k);
            if parts.len() == 3 {
                let (u, o) = (parts[1].clone(), parts[2].clone());
                match parts[0].as_str() {
                    "c" => st.apply(&Change::Contact(u, o, true)),
                    "b" => st.apply(&Change::Block(u, o, true)),
                    _ => {}
                }
            }
        }
        for (_, v) in self.scan(&self.convs)? {
            let mut meta: ConvMeta = parse(&v)?;
            if meta.last_seq > 0 {
                meta.last_event = self.last_event(&meta.conv_id, meta.last_seq)?;
            }
            st.apply(&Change::Conv(meta));
        }
        for (k, v) in self.scan(&self.members)? {
            let parts = split(&k);
            let m: Member = parse(&v)?;
            st.apply(&Change::Member(parts[0].clone(), m));
        }
        for (k, v) in self.scan(&self.acks)? {
            let parts = split(&k);
            if parts.len() == 3 && v.len() == 8 {
                let seq = u64::from_be_bytes(v[..8].try_into().expect("8 bytes"));
                st.apply(&Change::Ack(
                    parts[0].clone(),
                    parts[1].clone(),
                    parts[2].clone(),
                    seq,
                ));
            }
        }
        st.convs
            .retain(|_, c: &mut ConvState| !c.meta.conv_id.is_empty());
        st.settle();
        Ok(st)
    }

    fn last_event(&self, conv_id: &str, seq: u64) -> StoreResult<Option<Arc<Event>>> {
        Ok(self.event(conv_id, seq)?.map(|(_, e)| Arc::new(e)))
    }

    pub fn event(&self, conv_id: &str, seq: u64) -> StoreResult<Option<(u64, Event)>> {
        match self.events.get(event_key(conv_id, seq)).map_err(engine)? {
            Some(v) => Ok(Some(decode_event(&v)?)),
            None => Ok(None),
        }
    }

    pub fn events(
        &self,
        conv_id: &str,
        from: u64,
        to: u64,
        limit: usize,
    ) -> StoreResult<Vec<Event>> {
        if from > to || limit == 0 {
            return Ok(Vec::new());
        }
        let mut out = Vec::with_capacity(limit.min((to - from + 1) as usize));
        for item in self
            .events
            .range(event_key(conv_id, from)..=event_key(conv_id, to))
            .take(limit)
        {
            let (_, v) = item.into_inner().map_err(engine)?;
            out.push(decode_event(&v)?.1);
        }
        Ok(out)
    }

    pub fn dedup(&self, sender: &str, cmid: &str) -> StoreResult<Option<DedupRecord>> {
        match self.dedup.get(key2(sender, cmid)).map_err(engine)? {
            Some(v) => Ok(Some(serde_json::from_slice(&v).map_err(engine)?)),
            None => Ok(None),
        }
    }

    /// Adds the write of one change to a batch.
    pub fn write(&self, b: &mut fjall::OwnedWriteBatch, c: &Change) {
        match c {
            Change::User(u) => b.insert(&self.users, u.user_id.as_bytes(), json(&**u)),
            Change::Session(s) => b.insert(&self.sessions, s.session_id.as_bytes(), json(s)),
            Change::DelSession(id) => b.remove(&self.sessions, id.as_bytes()),
            Change::Device(d) => b.insert(&self.devices, key2(&d.user_id, &d.device_id), json(d)),
            Change::DelDevice(u, d) => b.remove(&self.devices, key2(u, d)),
            Change::Contact(u, o, on) | Change::Block(u, o, on) => {
                let tag = if matches!(c, Change::Contact(..)) {
                    "c"
                } else {
                    "b"
                };
                let k = key3(tag, u, o);
                if *on {
                    b.insert(&self.social, k, b"");
                } else {
                    b.remove(&self.social, k);
                }
            }
            Change::Conv(m) => b.insert(&self.convs, m.conv_id.as_bytes(), json(m)),
            Change::Member(conv, m) => b.insert(&self.members, key2(conv, &m.user_id), json(m)),
            Change::DelMember(conv, u) => b.remove(&self.members, key2(conv, u)),
            Change::Ack(u, d, conv, seq) => {
                b.insert(&self.acks, key3(u, d, conv), seq.to_be_bytes())
            }
        }
    }

    /// Removes the acks of a device (when the device is removed).
    pub fn remove_device_acks(&self, b: &mut fjall::OwnedWriteBatch, user: &str, device: &str) {
        let prefix = {
            let mut p = key2(user, device);
            p.push(0);
            p
        };
        for item in self.acks.prefix(&prefix) {
            if let Ok(k) = item.key() {
                b.remove(&self.acks, k.to_vec());
            }
        }
    }
}

fn parse<T: serde::de::DeserializeOwned>(v: &[u8]) -> StoreResult<T> {
    serde_json::from_slice(v).map_err(engine)
}

fn json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("records serialize")
}
