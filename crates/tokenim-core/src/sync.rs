//! Where a sync starts (rule 11), how it pages (rule 10), and the receiving
//! side's bookkeeping: drop what it already has, notice gaps.

/// Most conversations in one `sync_result` (rule 10).
pub const MAX_SYNC_CONVERSATIONS: usize = 100;
/// Default and largest per-conversation `limit` of a sync (rule 10).
pub const DEFAULT_SYNC_LIMIT: u64 = 100;
pub const MAX_SYNC_LIMIT: u64 = 500;

/// What the server knows about one (device, conversation) pair.
#[derive(Debug, Clone, Copy, Default)]
pub struct StartFacts {
    /// `after_seq` from the request's cursors, if it named the conversation.
    pub cursor: Option<u64>,
    /// The device's stored `ack_seq`, if it ever acked this conversation.
    pub ack_seq: Option<u64>,
    /// Whether the device has synced before.
    pub synced_before: bool,
    /// The seq just before the user joined the conversation.
    pub joined_after: u64,
    pub last_seq: u64,
    pub new_device_backfill: u64,
}

/// The seq after which a sync returns events (rule 11).
pub fn start_after(f: StartFacts) -> u64 {
    let start = if let Some(c) = f.cursor {
        c
    } else if let Some(a) = f.ack_seq {
        a
    } else if f.synced_before {
        f.joined_after
    } else {
        f.last_seq.saturating_sub(f.new_device_backfill)
    };
    start.min(f.last_seq)
}

/// The per-conversation limit of a sync request (rule 10).
pub fn clamp_limit(limit: Option<u64>) -> Result<u64, crate::Error> {
    match limit {
        None => Ok(DEFAULT_SYNC_LIMIT),
        Some(0) => Err(crate::Error::bad_request("limit must be at least 1")),
        Some(l) => Ok(l.min(MAX_SYNC_LIMIT)),
    }
}

/// One page of a sync for a conversation: the seqs `(after, after + n]`
/// returned, and whether more follow.
pub fn page(after: u64, last_seq: u64, limit: u64) -> (u64, u64, bool) {
    let end = last_seq.min(after.saturating_add(limit));
    (after, end, end < last_seq)
}

/// What a receiver does with an incoming seq of one conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accept {
    /// The next one: deliver it.
    Next,
    /// Already delivered: drop it.
    Duplicate,
    /// Events `from..=to` are missing before it: fetch them first.
    Gap { from: u64, to: u64 },
}

/// A receiver's cursor for one conversation: the highest seq delivered in
/// order. Used by the SDK and by the property tests of the server model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cursor {
    pub seq: u64,
}

impl Cursor {
    /// Classifies `seq` without changing the cursor.
    pub fn check(&self, seq: u64) -> Accept {
        if seq <= self.seq {
            Accept::Duplicate
        } else if seq == self.seq + 1 {
            Accept::Next
        } else {
            Accept::Gap {
                from: self.seq + 1,
                to: seq - 1,
            }
        }
    }

    /// Delivers `seq` if it is the next one; answers what happened.
    pub fn offer(&mut self, seq: u64) -> Accept {
        let a = self.check(seq);
        if a == Accept::Next {
            self.seq = seq;
        }
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn start_rules() {
        let base = StartFacts {
            last_seq: 120,
            new_device_backfill: 50,
            joined_after: 10,
            ..Default::default()
        };
        assert_eq!(start_after(base), 70);
        assert_eq!(
            start_after(StartFacts {
                synced_before: true,
                ..base
            }),
            10
        );
        assert_eq!(
            start_after(StartFacts {
                ack_seq: Some(100),
                synced_before: true,
                ..base
            }),
            100
        );
        assert_eq!(
            start_after(StartFacts {
                cursor: Some(5),
                ack_seq: Some(100),
                ..base
            }),
            5
        );
        assert_eq!(
            start_after(StartFacts {
                cursor: Some(500),
                ..base
            }),
            120
        );
        assert_eq!(
            start_after(StartFacts {
                last_seq: 20,
                ..base
            }),
            0
        );
    }

    /// What a device and the server do, in a random order.
    #[derive(Debug, Clone)]
    enum Step {
        /// Someone sends into the conversation; pushed if the device is up.
        Send,
        /// The push of the latest events is lost in flight.
        SendLost,
        /// The device acks what it has (maybe the ack is lost).
        Ack {
            lost: bool,
        },
        Disconnect,
        /// Reconnect and sync with the given limit, paging to the end.
        Reconnect {
            limit: u64,
            with_cursor: bool,
        },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => Just(Step::Send),
            1 => Just(Step::SendLost),
            2 => any::<bool>().prop_map(|lost| Step::Ack { lost }),
            1 => Just(Step::Disconnect),
            2 => (1u64..8, any::<bool>())
                .prop_map(|(limit, with_cursor)| Step::Reconnect { limit, with_cursor }),
        ]
    }

    proptest! {
        /// For any interleaving of sends, lost pushes, acks, disconnects and
        /// paged syncs, the device delivers every event exactly once, in
        /// order, once it has synced.
        #[test]
        fn every_event_once_in_order(steps in proptest::collection::vec(step(), 1..120)) {
            let mut last_seq = 0u64;
            let mut stored_ack: Option<u64> = None;
            let mut synced_before = false;
            let mut online = false;
            let mut cursor = Cursor::default();
            let mut delivered: Vec<u64> = Vec::new();

            let sync = |cursor: &mut Cursor, delivered: &mut Vec<u64>, stored_ack: Option<u64>,
                            synced_before: bool, last_seq: u64, limit: u64, with_cursor: bool| {
                let mut after = start_after(StartFacts {
                    cursor: with_cursor.then_some(cursor.seq),
                    ack_seq: stored_ack,
                    synced_before,
                    joined_after: 0,
                    last_seq,
                    new_device_backfill: u64::MAX,
                });
                loop {
                    let (from, to, more) = page(after, last_seq, limit);
                    for seq in from + 1..=to {
                        if cursor.offer(seq) == Accept::Next {
                            delivered.push(seq);
                        }
                    }
                    after = to;
                    if !more { break; }
                }
            };

            for s in steps {
                match s {
                    Step::Send => {
                        last_seq += 1;
                        if online {
                            match cursor.offer(last_seq) {
                                Accept::Next => delivered.push(last_seq),
                                Accept::Duplicate => {}
                                Accept::Gap { .. } => {
                                    sync(&mut cursor, &mut delivered, stored_ack, synced_before, last_seq, 3, true);
                                }
                            }
                        }
                    }
                    Step::SendLost => last_seq += 1,
                    Step::Ack { lost } => {
                        if online && !lost && cursor.seq > 0 {
                            stored_ack = Some(stored_ack.unwrap_or(0).max(cursor.seq));
                        }
                    }
                    Step::Disconnect => online = false,
                    Step::Reconnect { limit, with_cursor } => {
                        online = true;
                        sync(&mut cursor, &mut delivered, stored_ack, synced_before, last_seq, limit, with_cursor);
                        synced_before = true;
                    }
                }
            }
            if online {
                sync(&mut cursor, &mut delivered, stored_ack, synced_before, last_seq, 5, true);
                let want: Vec<u64> = (1..=last_seq).collect();
                prop_assert_eq!(delivered, want);
            } else {
                let want: Vec<u64> = (1..=delivered.len() as u64).collect();
                prop_assert_eq!(delivered, want);
            }
        }
    }
}
