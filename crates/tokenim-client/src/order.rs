//! The receiving side's bookkeeping: per conversation, a cursor (the highest
//! seq handed to the application) and a buffer of events that arrived ahead
//! of a missing one. Pure: no IO, no clock.

use std::collections::{BTreeMap, HashMap};

use tokenim_core::sync::{Accept, Cursor};
use tokenim_proto::Event;

/// Most events kept waiting for a missing one in one conversation; past it
/// the buffer is dropped and the sync that the gap triggers fetches them
/// again.
const MAX_PENDING: usize = 10_000;

#[derive(Debug, Default)]
pub(crate) struct Sequencer {
    cursors: BTreeMap<String, Cursor>,
    pending: HashMap<String, BTreeMap<u64, Event>>,
}

impl Sequencer {
    pub(crate) fn new(cursors: &BTreeMap<String, u64>) -> Sequencer {
        Sequencer {
            cursors: cursors
                .iter()
                .map(|(c, s)| (c.clone(), Cursor { seq: *s }))
                .collect(),
            pending: HashMap::new(),
        }
    }

    pub(crate) fn cursor(&self, conv_id: &str) -> Option<u64> {
        self.cursors.get(conv_id).map(|c| c.seq)
    }

    pub(crate) fn cursors(&self) -> BTreeMap<String, u64> {
        self.cursors
            .iter()
            .map(|(c, s)| (c.clone(), s.seq))
            .collect()
    }

    /// Conversations holding events that wait for a missing one (or for a
    /// starting point, when the conversation has no cursor yet).
    pub(crate) fn waiting(&self) -> impl Iterator<Item = &str> {
        self.pending
            .iter()
            .filter(|(_, p)| !p.is_empty())
            .map(|(c, _)| c.as_str())
    }

    /// Takes one event from a push, a `send_ack` or a sync; answers the
    /// events now deliverable, in order (none when it is a duplicate or
    /// comes after a gap).
    ///
    /// `starts_here`: the event may set the starting point of a
    /// conversation without a cursor (true for events of a sync, whose start
    /// the server chose).
    pub(crate) fn offer(&mut self, ev: Event, starts_here: bool) -> Vec<Event> {
        let conv = ev.conv_id.clone();
        if !self.cursors.contains_key(&conv) {
            // Nothing comes before seq 1: a new conversation needs no sync.
            if !starts_here && ev.seq != 1 {
                self.hold(ev);
                return Vec::new();
            }
            let lowest = self
                .pending
                .get(&conv)
                .and_then(|p| p.keys().next().copied())
                .map_or(ev.seq, |p| p.min(ev.seq));
            self.cursors.insert(
                conv.clone(),
                Cursor {
                    seq: lowest.saturating_sub(1),
                },
            );
        }
        let cursor = self.cursors.get_mut(&conv).expect("inserted above");
        match cursor.offer(ev.seq) {
            Accept::Duplicate => Vec::new(),
            Accept::Gap { .. } => {
                self.hold(ev);
                Vec::new()
            }
            Accept::Next => {
                let mut out = vec![ev];
                self.drain(&conv, &mut out);
                out
            }
        }
    }

    /// Gives every conversation without a cursor whose events are waiting a
    /// starting point at its lowest waiting event (called when a sync found
    /// nothing older); answers what is now deliverable.
    pub(crate) fn settle_unknown(&mut self) -> Vec<Event> {
        let unknown: Vec<(String, u64)> = self
            .pending
            .iter()
            .filter(|(c, p)| !self.cursors.contains_key(*c) && !p.is_empty())
            .map(|(c, p)| (c.clone(), *p.keys().next().expect("not empty")))
            .collect();
        let mut out = Vec::new();
        for (conv, lowest) in unknown {
            self.cursors.insert(
                conv.clone(),
                Cursor {
                    seq: lowest.saturating_sub(1),
                },
            );
            self.drain(&conv, &mut out);
        }
        out
    }

    fn hold(&mut self, ev: Event) {
        let p = self.pending.entry(ev.conv_id.clone()).or_default();
        if p.len() >= MAX_PENDING {
            p.clear();
        }
        p.insert(ev.seq, ev);
    }

    fn drain(&mut self, conv: &str, out: &mut Vec<Event>) {
        let Some(p) = self.pending.get_mut(conv) else {
            return;
        };
        let cursor = self.cursors.get_mut(conv).expect("drain after a cursor");
        while let Some(entry) = p.first_entry() {
            match cursor.check(*entry.key()) {
                Accept::Duplicate => {
                    entry.remove();
                }
                Accept::Next => {
                    cursor.seq = *entry.key();
                    out.push(entry.remove());
                }
                Accept::Gap { .. } => break,
            }
        }
        if p.is_empty() {
            self.pending.remove(conv);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenim_proto::EventKind;

    fn ev(conv: &str, seq: u64) -> Event {
        Event {
            conv_id: conv.into(),
            seq,
            msg_id: format!("m{seq}"),
            ts: 0,
            sender: Some("u".into()),
            sender_device: Some("d".into()),
            system: false,
            kind: EventKind::Message,
            client_msg_id: None,
            content: None,
            recalled: false,
            edited: false,
        }
    }

    fn seqs(v: Vec<Event>) -> Vec<u64> {
        v.into_iter().map(|e| e.seq).collect()
    }

    #[test]
    fn in_order_duplicates_and_gaps() {
        let mut s = Sequencer::new(&BTreeMap::from([("c".to_owned(), 2)]));
        assert_eq!(seqs(s.offer(ev("c", 2), false)), Vec::<u64>::new());
        assert_eq!(seqs(s.offer(ev("c", 3), false)), vec![3]);
        assert_eq!(seqs(s.offer(ev("c", 6), false)), Vec::<u64>::new());
        assert_eq!(s.waiting().collect::<Vec<_>>(), vec!["c"]);
        assert_eq!(seqs(s.offer(ev("c", 5), false)), Vec::<u64>::new());
        assert_eq!(seqs(s.offer(ev("c", 4), true)), vec![4, 5, 6]);
        assert_eq!(s.waiting().count(), 0);
        assert_eq!(s.cursor("c"), Some(6));
    }

    #[test]
    fn unknown_conversations_wait_for_a_start() {
        let mut s = Sequencer::default();
        assert!(s.offer(ev("n", 8), false).is_empty());
        assert_eq!(s.cursor("n"), None);
        // A sync that starts lower fills in.
        assert_eq!(seqs(s.offer(ev("n", 6), true)), vec![6]);
        assert_eq!(seqs(s.offer(ev("n", 7), true)), vec![7, 8]);
        // Seq 1 starts a conversation by itself.
        assert_eq!(seqs(s.offer(ev("new", 1), false)), vec![1]);
        // A sync that brings nothing: the waiting events start the cursor.
        assert!(s.offer(ev("x", 3), false).is_empty());
        assert!(s.offer(ev("x", 4), false).is_empty());
        assert_eq!(seqs(s.settle_unknown()), vec![3, 4]);
        assert_eq!(s.cursor("x"), Some(4));
    }
}
