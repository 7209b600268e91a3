//! Committed events to sockets: the store's writer hands each committed
//! batch to [`Sink`] (commit order), the dispatcher task publishes it to the
//! cluster and pushes every event to this node's sockets of the members;
//! events other nodes committed arrive from the cluster bus on a second
//! queue and go through the same path, behind a per-conversation
//! [`Sequencer`] that drops repeats and fills gaps from the store.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::ws::Utf8Bytes;
use parking_lot::Mutex;
use tokenim_proto::system::System;
use tokenim_proto::{Event, EventKind, ServerFrame, event_frame_json};
use tokenim_store::{Committed, EventSink, Store};
use tokio::sync::mpsc;

use crate::delivery::cluster::Cluster;
use crate::delivery::cluster::sequencer::{Admit, Sequencer};
use crate::delivery::hub::Hub;
use crate::delivery::outbox::{Priority, shared};
use crate::views;

/// Conversations whose last pushed seq a cluster node remembers (per
/// generation, see `Sequencer`).
const SEQUENCER_CAP: usize = 65_536;
/// Most events one gap fill pushes (a longer gap is left to the devices'
/// gap detection and sync, as the outbox would overflow anyway).
const MAX_GAP_FILL: u64 = 4096;
/// Conversations whose member list the dispatcher keeps between seqs.
const PUSH_LIST_CAP: usize = 65_536;
/// Committed batches waiting for the dispatcher; past it the writer waits.
pub const QUEUE: usize = 1024;

/// A conversation's member list as of one seq.
type PushList = (u64, Arc<[String]>);

pub struct Dispatcher {
    store: Arc<dyn Store>,
    hub: Arc<Hub>,
    cluster: Option<Arc<Cluster>>,
    /// In cluster mode: the last seq pushed per conversation, so events from
    /// several nodes reach sockets in order, without gaps or repeats.
    sequencer: Option<Mutex<Sequencer>>,
    /// Per conversation, the member list used for the last event pushed:
    /// the next seq reuses it unless it changes membership, so pushing needs
    /// no read per event.
    push_lists: Mutex<HashMap<String, PushList>>,
}

impl Dispatcher {
    pub fn new(store: Arc<dyn Store>, hub: Arc<Hub>, cluster: Option<Arc<Cluster>>) -> Self {
        Dispatcher {
            store,
            hub,
            sequencer: cluster
                .as_ref()
                .map(|_| Mutex::new(Sequencer::new(SEQUENCER_CAP))),
            cluster,
            push_lists: Mutex::new(HashMap::new()),
        }
    }

    /// Runs the dispatcher task: this node's commits (published to the
    /// cluster first) and, in cluster mode, the other nodes' events.
    pub fn spawn(
        self: Arc<Self>,
        mut local: mpsc::Receiver<Vec<Committed>>,
        mut remote: mpsc::Receiver<Vec<Committed>>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut remote_open = true;
            loop {
                tokio::select! {
                    biased;
                    b = local.recv() => match b {
                        Some(batch) => {
                            if let Some(c) = &self.cluster {
                                c.publish_events(&batch);
                            }
                            self.deliver(batch).await;
                        }
                        None => break,
                    },
                    b = remote.recv(), if remote_open => match b {
                        Some(batch) => self.deliver(batch).await,
                        None => remote_open = false,
                    },
                }
            }
        })
    }

    /// Pushes committed events to this node's sockets, in the order given
    /// (in cluster mode also events other nodes committed, which may come
    /// out of order: see `Sequencer`).
    pub async fn deliver(&self, batch: Vec<Committed>) {
        for c in batch {
            let e = &c.event;
            if let Some(seqr) = &self.sequencer {
                let admit = seqr.lock().admit(&e.conv_id, e.seq);
                match admit {
                    Admit::Repeat => {
                        if let Some(cl) = &self.cluster {
                            cl.stats.repeats_dropped.fetch_add(1, Ordering::Relaxed);
                        }
                        continue;
                    }
                    Admit::Next => {}
                    Admit::Gap { from, to } => self.fill_gap(&e.conv_id, from, to).await,
                }
            }
            let Some(members) = self.push_list(e, c.members).await else {
                continue;
            };
            self.push_event(e, c.origin, members).await;
        }
    }

    /// The member list to push `e` to: the one the engine gave, else the
    /// list used for the previous seq of the conversation when `e` does not
    /// change membership, else a read. `None` when it cannot be read.
    async fn push_list(&self, e: &Event, given: Option<Arc<[String]>>) -> Option<Arc<[String]>> {
        let changes = matches!(
            e.kind,
            EventKind::MemberJoined | EventKind::MemberLeft | EventKind::MemberRemoved
        );
        let list = match given {
            Some(m) => m,
            None => {
                let known = self
                    .push_lists
                    .lock()
                    .get(&e.conv_id)
                    .filter(|(seq, _)| *seq + 1 == e.seq && !changes)
                    .map(|(_, l)| l.clone());
                match known {
                    Some(l) => l,
                    None => match self.store.member_ids(&e.conv_id).await {
                        Ok(ids) => ids,
                        Err(err) => {
                            tracing::error!(error = %err, "push skipped: members unreadable");
                            return None;
                        }
                    },
                }
            }
        };
        let mut cache = self.push_lists.lock();
        if cache.len() >= PUSH_LIST_CAP && !cache.contains_key(&e.conv_id) {
            cache.clear();
        }
        cache.insert(e.conv_id.clone(), (e.seq, list.clone()));
        Some(list)
    }

    /// Pushes the events `from..=to` of a conversation, read from the store
    /// (committed before the event that revealed the gap, so readable).
    async fn fill_gap(&self, conv_id: &str, from: u64, to: u64) {
        let mut next = from.max(to.saturating_sub(MAX_GAP_FILL - 1));
        while next <= to {
            let page = match self.store.events(conv_id, next, to, 500).await {
                Ok(p) => p,
                Err(err) => {
                    tracing::warn!(conv_id, error = %err, "gap fill failed; devices will sync");
                    return;
                }
            };
            let Some(last) = page.last().map(|e| e.seq) else {
                return;
            };
            if let Some(cl) = &self.cluster {
                cl.stats
                    .gap_filled
                    .fetch_add(page.len() as u64, Ordering::Relaxed);
            }
            for e in &page {
                if let Some(members) = self.push_list(e, None).await {
                    self.push_event(e, 0, members).await;
                }
            }
            next = last + 1;
        }
    }

    /// Pushes one event to this node's sockets of `members` (the list after
    /// it): `conv_added` to the users it added first, then the event to
    /// every member's sockets but `origin`, then `conv_removed` to the user
    /// it removed.
    async fn push_event(&self, e: &Event, origin: u64, members: Arc<[String]>) {
        // The socket that sent it, if on this node: known by the commit
        // (`origin`), else (a gap fill) by its pending client_msg_id.
        let sender = match (&e.client_msg_id, &e.sender, &e.sender_device) {
            (Some(cmid), Some(user), Some(device)) => self.hub.take_sender(user, device, cmid),
            _ => None,
        };
        let origin = if origin != 0 {
            origin
        } else {
            sender.unwrap_or(0)
        };
        let (added, removed) = membership_change(e);
        for u in &added {
            // Only users with a socket on this node need the object (a
            // 1,000-user addition would otherwise read 1,000 memberships).
            if !self.hub.is_online(u) {
                continue;
            }
            if let Ok(Some((meta, me))) = self.store.membership(&e.conv_id, u).await
                && let Ok(obj) = views::conversation(self.store.as_ref(), &meta, &me).await
            {
                let f = shared(&ServerFrame::ConvAdded { conversation: obj });
                self.hub.to_user(u, origin, Priority::Event, &f);
            }
        }
        let frame: Utf8Bytes = event_frame_json(e).into();
        self.hub
            .to_members(&members, origin, Priority::Event, &frame);
        if let Some(u) = removed {
            let f = shared(&ServerFrame::ConvRemoved {
                conv_id: e.conv_id.clone(),
            });
            self.hub.to_user(&u, 0, Priority::Event, &f);
        }
    }
}

/// Who an event added to or removed from its conversation, read from the
/// event's own typed body, so events from the store or another node need
/// nothing beside them.
fn membership_change(e: &Event) -> (Vec<String>, Option<String>) {
    match System::of(e) {
        Some(System::MemberJoined(b)) => (b.user_ids, None),
        Some(System::MemberLeft(b)) => (Vec::new(), Some(b.user_id)),
        Some(System::MemberRemoved(b)) => (Vec::new(), Some(b.user_id)),
        _ => (Vec::new(), None),
    }
}

/// Hands committed events from the store's writer to the dispatcher task.
pub struct Sink(pub mpsc::Sender<Vec<Committed>>);

impl EventSink for Sink {
    fn committed(&self, batch: Vec<Committed>) {
        // The writer is a plain thread: waiting here is backpressure on
        // commits when pushing falls behind (the queue holds `QUEUE`
        // batches).
        if self.0.blocking_send(batch).is_err() {
            tracing::warn!("dispatcher gone; committed events not pushed");
        }
    }
}
