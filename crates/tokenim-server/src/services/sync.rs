//! `sync` (PROTOCOL.md 3.3, rules 10, 11, 15): for each of the device's
//! conversations, where to start (`tokenim_core::sync::start_after`), one
//! page of events, and whether more follow, in replies of a few MiB.

use std::collections::HashMap;
use std::sync::Arc;

use tokenim_core::clock::now_ms;
use tokenim_core::sync::{self as rules, MAX_SYNC_CONVERSATIONS, StartFacts};
use tokenim_core::{Error, Limits, Result, validate};
use tokenim_proto::{ServerFrame, SyncConversation, SyncFrame};
use tokenim_store::Store;

use crate::services::Actor;
use crate::services::marks::Marks;

/// About how many bytes of events one `sync_result` carries at most.
const SYNC_RESULT_BYTES: usize = 4 << 20;
/// Most cursors one sync may carry.
const MAX_CURSORS: usize = 10_000;

pub struct Sync {
    store: Arc<dyn Store>,
    limits: Limits,
    marks: Arc<Marks>,
}

impl Sync {
    pub fn new(store: Arc<dyn Store>, limits: Limits, marks: Arc<Marks>) -> Self {
        Sync {
            store,
            limits,
            marks,
        }
    }

    pub async fn sync(&self, a: &Actor, req: &SyncFrame) -> Result<ServerFrame> {
        let limit = rules::clamp_limit(req.limit)?;
        let mut cursors: HashMap<&str, u64> = HashMap::new();
        if let Some(cs) = &req.cursors {
            if cs.len() > MAX_CURSORS {
                return Err(Error::too_large(format!("at most {MAX_CURSORS} cursors")));
            }
            for c in cs {
                validate::opaque_id("conv_id", &c.conv_id)?;
                cursors.insert(&c.conv_id, c.after_seq);
            }
        }
        let device = self.store.device(&a.user_id, &a.device_id).await?;
        let synced_before = device.as_ref().is_some_and(|d| d.synced_before);
        let mut convs = self.store.user_convs(&a.user_id).await?;
        convs.sort_by(|(x, _), (y, _)| {
            y.last_ts
                .cmp(&x.last_ts)
                .then_with(|| x.conv_id.cmp(&y.conv_id))
        });
        let mut out = Vec::new();
        let mut has_more = false;
        let mut budget = SYNC_RESULT_BYTES;
        for (meta, me) in convs {
            let ack = self
                .marks
                .ack_seq(&a.user_id, &a.device_id, &meta.conv_id)
                .await?
                .filter(|s| *s >= me.joined_after);
            let start = rules::start_after(StartFacts {
                cursor: cursors.get(meta.conv_id.as_str()).copied(),
                ack_seq: ack,
                synced_before,
                joined_after: me.joined_after,
                last_seq: meta.last_seq,
                new_device_backfill: self.limits.new_device_backfill,
            });
            if start >= meta.last_seq {
                continue;
            }
            if out.len() >= MAX_SYNC_CONVERSATIONS || budget == 0 {
                has_more = true;
                break;
            }
            let (from, to, mut more) = rules::page(start, meta.last_seq, limit);
            let mut events = self
                .store
                .events(&meta.conv_id, from + 1, to, limit as usize)
                .await?;
            // Keep one reply to a few MiB: cut the page where the budget
            // runs out (at least one event), and say there is more.
            let mut keep = 0;
            for e in &events {
                let size = 256 + e.content.as_ref().map_or(0, |c| c.get().len());
                if keep > 0 && size > budget {
                    break;
                }
                budget = budget.saturating_sub(size);
                keep += 1;
            }
            if keep < events.len() {
                events.truncate(keep);
                more = true;
            }
            has_more |= more;
            out.push(SyncConversation {
                conv_id: meta.conv_id.clone(),
                last_seq: meta.last_seq,
                read_seq: me.read_seq,
                unread: me.unread(&meta),
                events,
                has_more: more,
            });
        }
        if !synced_before {
            self.store
                .touch_device(&a.user_id, &a.device_id, now_ms(), true)
                .await?;
        }
        Ok(ServerFrame::SyncResult {
            id: req.id.clone(),
            conversations: out,
            has_more,
        })
    }
}
