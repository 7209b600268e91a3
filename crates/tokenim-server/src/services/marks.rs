//! Marks: device acks (rules 12, 13: kept in memory at once, written in a
//! batch every 500 ms, and `delivered` told to the senders), read markers
//! with their `receipt` notices (rule 14), and read receipts per event.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use parking_lot::Mutex;
use tokenim_core::{Error, Limits, Result};
use tokenim_proto::*;
use tokenim_store::{AckRecord, Store};

use crate::delivery::fanout::Fanout;
use crate::delivery::outbox::{Priority, shared};
use crate::services::Actor;
use crate::services::conversations::Conversations;

/// (user, conversation) pairs whose delivered seq is remembered; the map
/// starts again past it (an entry is rebuilt from the stored acks).
const DELIVERED_CAP: usize = 262_144;

pub struct Marks {
    store: Arc<dyn Store>,
    limits: Limits,
    convs: Arc<Conversations>,
    fanout: Arc<Fanout>,
    /// Acks received and not yet written: (user, device, conv) -> seq.
    pending: Mutex<HashMap<(String, String, String), u64>>,
    /// Highest seq acked by any device of a user: (user, conv) -> seq.
    delivered: Mutex<HashMap<(String, String), u64>>,
}

impl Marks {
    pub fn new(
        store: Arc<dyn Store>,
        limits: Limits,
        convs: Arc<Conversations>,
        fanout: Arc<Fanout>,
    ) -> Self {
        Marks {
            store,
            limits,
            convs,
            fanout,
            pending: Mutex::new(HashMap::new()),
            delivered: Mutex::new(HashMap::new()),
        }
    }

    /// `ack`: moves the device's ack_seq; announces `delivered` to the
    /// senders of the newly covered messages in small conversations.
    pub async fn ack(&self, a: &Actor, conv_id: &str, seq: u64) -> Result<()> {
        let (meta, _) = self.convs.membership(conv_id, &a.user_id).await?;
        let seq = seq.min(meta.last_seq);
        if seq == 0 {
            return Ok(());
        }
        let key = (a.user_id.clone(), a.device_id.clone(), conv_id.to_owned());
        let stored = self.ack_seq(&a.user_id, &a.device_id, conv_id).await?;
        if stored.is_some_and(|s| s >= seq) {
            return Ok(());
        }
        {
            let mut p = self.pending.lock();
            let slot = p.entry(key).or_insert(0);
            *slot = (*slot).max(seq);
        }
        let small =
            meta.ty == ConvType::Direct || meta.member_count <= self.limits.receipt_group_max;
        if !small {
            return Ok(());
        }
        let dkey = (a.user_id.clone(), conv_id.to_owned());
        let known = self.delivered.lock().get(&dkey).copied();
        let prev = match known {
            Some(p) => p,
            None => {
                let mut best = 0;
                for d in self.store.devices(&a.user_id).await? {
                    if d.device_id != a.device_id {
                        let s = self.ack_seq(&a.user_id, &d.device_id, conv_id).await?;
                        best = best.max(s.unwrap_or(0));
                    }
                }
                best.max(stored.unwrap_or(0))
            }
        };
        {
            let mut d = self.delivered.lock();
            if d.len() >= DELIVERED_CAP && !d.contains_key(&dkey) {
                d.clear();
            }
            let slot = d.entry(dkey).or_insert(0);
            *slot = (*slot).max(prev);
            if *slot >= seq {
                return Ok(());
            }
            *slot = seq;
        }
        let from = prev.max(seq.saturating_sub(1000)) + 1;
        let events = self.store.events(conv_id, from, seq, 1000).await?;
        let senders: HashSet<&str> = events
            .iter()
            .filter(|e| e.kind == EventKind::Message && !e.sent_by(&a.user_id))
            .filter_map(|e| e.sender.as_deref())
            .collect();
        if senders.is_empty() {
            return Ok(());
        }
        let f = shared(&ServerFrame::Delivered {
            conv_id: conv_id.to_owned(),
            user_id: a.user_id.clone(),
            seq,
        });
        for s in senders {
            self.fanout.to_user(s, 0, Priority::Event, &f);
        }
        Ok(())
    }

    /// A device's ack_seq: the newest of what is pending and what is stored.
    pub async fn ack_seq(&self, user: &str, device: &str, conv: &str) -> Result<Option<u64>> {
        let key = (user.to_owned(), device.to_owned(), conv.to_owned());
        let pending = self.pending.lock().get(&key).copied();
        let stored = self.store.ack_seq(user, device, conv).await?;
        Ok(match (pending, stored) {
            (Some(p), Some(s)) => Some(p.max(s)),
            (p, s) => p.or(s),
        })
    }

    /// Drops what is pending for a removed device.
    pub fn forget_device(&self, user: &str, device: &str) {
        self.pending
            .lock()
            .retain(|(u, d, _), _| !(u == user && d == device));
    }

    /// Writes the pending acks (every 500 ms, and at shutdown); on failure
    /// they are kept for the next round.
    pub async fn flush(&self) {
        let pending: Vec<AckRecord> = self
            .pending
            .lock()
            .drain()
            .map(|((user_id, device_id, conv_id), seq)| AckRecord {
                user_id,
                device_id,
                conv_id,
                seq,
            })
            .collect();
        if pending.is_empty() {
            return;
        }
        if let Err(e) = self.store.record_acks(pending.clone()).await {
            tracing::warn!(error = %e, "acks not written; kept for the next flush");
            let mut p = self.pending.lock();
            for a in pending {
                let slot = p.entry((a.user_id, a.device_id, a.conv_id)).or_insert(0);
                *slot = (*slot).max(a.seq);
            }
        }
    }

    /// `read`: moves the marker, then tells the user's other devices and,
    /// in small conversations, the members.
    pub async fn read(&self, a: &Actor, conv_id: &str, seq: u64) -> Result<()> {
        let (meta, _) = self.convs.membership(conv_id, &a.user_id).await?;
        let Some(read_seq) = self.store.set_read(conv_id, &a.user_id, seq).await? else {
            return Ok(());
        };
        let f = shared(&ServerFrame::Receipt {
            conv_id: conv_id.to_owned(),
            user_id: a.user_id.clone(),
            read_seq,
        });
        if meta.member_count <= self.limits.receipt_group_max {
            let ids = self.store.member_ids(conv_id).await?;
            self.fanout.to_members(&ids, a.conn, Priority::Event, &f);
        } else {
            self.fanout.to_user(&a.user_id, a.conn, Priority::Event, &f);
        }
        Ok(())
    }

    /// Who has and has not read event `seq` (small conversations only).
    pub async fn receipts(&self, a: &Actor, conv_id: &str, seq: u64) -> Result<Receipts> {
        let (meta, _) = self.convs.membership(conv_id, &a.user_id).await?;
        if seq == 0 || seq > meta.last_seq {
            return Err(Error::not_found("no such event"));
        }
        if meta.member_count > self.limits.receipt_group_max {
            return Err(Error::forbidden(format!(
                "receipts are kept for conversations of at most {} members",
                self.limits.receipt_group_max
            )));
        }
        let ev = self
            .store
            .events(conv_id, seq, seq, 1)
            .await?
            .pop()
            .ok_or_else(|| Error::not_found("no such event"))?;
        let members = self
            .store
            .members_page(conv_id, None, self.limits.receipt_group_max as usize)
            .await?;
        let (mut read_by, mut unread_by) = (Vec::new(), Vec::new());
        for m in members {
            if ev.sent_by(&m.user_id) {
                continue;
            }
            if m.read_seq >= seq {
                read_by.push(m.user_id);
            } else {
                unread_by.push(m.user_id);
            }
        }
        Ok(Receipts { read_by, unread_by })
    }
}
