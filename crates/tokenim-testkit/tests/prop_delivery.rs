//! Property test against the real server: for random interleavings of
//! sends (socket and HTTP), acks, disconnects, reconnects with and without
//! cursors, every device ends up with every event exactly once and in order,
//! and a live socket's pushes never skip a seq it did not create itself once
//! its reconnect sync has answered (protocol section 4.2). A push that
//! reaches a new socket before its sync answers (an event committed just
//! before the socket connected, still on its way) is held, as a client
//! holds it, and taken after the sync's pages.

use std::collections::BTreeSet;

use proptest::prelude::*;
use serde_json::{Value, json};
use tokenim_core::sync::{Accept, Cursor};
use tokenim_testkit::{TestServer, User, Ws};

#[derive(Debug, Clone)]
enum Step {
    Send(usize),
    Ack(usize),
    Disconnect(usize),
    Reconnect {
        dev: usize,
        cursor: bool,
        limit: u64,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        5 => (0..3usize).prop_map(Step::Send),
        2 => (0..3usize).prop_map(Step::Ack),
        1 => (0..3usize).prop_map(Step::Disconnect),
        2 => (0..3usize, any::<bool>(), 1..6u64)
            .prop_map(|(dev, cursor, limit)| Step::Reconnect { dev, cursor, limit }),
    ]
}

struct Device {
    user: User,
    ws: Option<Ws>,
    cursor: Cursor,
    delivered: Vec<u64>,
    /// Seqs this device created itself (it has their acks).
    own: BTreeSet<u64>,
}

impl Device {
    /// Takes one event seq, from a push or a sync page.
    fn take(&mut self, seq: u64, pushed: bool) -> Result<(), String> {
        loop {
            match self.cursor.check(seq) {
                Accept::Duplicate => return Ok(()),
                Accept::Next => {
                    self.cursor.offer(seq);
                    self.delivered.push(seq);
                    return Ok(());
                }
                Accept::Gap { from, .. } if self.own.contains(&from) => {
                    // Its own send: it has the ack, so it counts as had.
                    self.cursor.offer(from);
                    self.delivered.push(from);
                }
                Accept::Gap { from, to } if pushed => {
                    return Err(format!("push skipped {from}..={to} before {seq}"));
                }
                Accept::Gap { from, to } => return Err(format!("sync skipped {from}..={to}")),
            }
        }
    }

    /// Handles frames read while waiting for something else.
    fn frames(&mut self, frames: Vec<Value>) -> Result<(), String> {
        for f in frames {
            if f["type"] == "event" {
                self.take(f["event"]["seq"].as_u64().unwrap(), true)?;
            }
        }
        Ok(())
    }

    async fn sync(&mut self, conv: &str, with_cursor: bool, limit: u64) -> Result<(), String> {
        let mut first = true;
        let mut held = Vec::new();
        loop {
            let cursors = if with_cursor || !first {
                json!([{"conv_id": conv, "after_seq": self.cursor.seq}])
            } else {
                json!([])
            };
            first = false;
            let ws = self.ws.as_mut().expect("online");
            ws.send(json!({"type": "sync", "id": "s", "limit": limit, "cursors": cursors}))
                .await;
            let r = ws.expect("sync_result").await;
            held.extend(ws.take_kept());
            for c in r["conversations"].as_array().unwrap() {
                for e in c["events"].as_array().unwrap() {
                    self.take(e["seq"].as_u64().unwrap(), false)?;
                }
            }
            if r["has_more"] != true {
                return self.frames(held);
            }
        }
    }
}

async fn run(steps: Vec<Step>) -> Result<(), String> {
    let s = TestServer::start().await;
    let alice = User::new(&s, "alice", "d1").await;
    let alice2 = alice.device(&s, "d2").await;
    let bob = User::new(&s, "bob", "d1").await;
    let conv = alice.direct(&bob).await;
    let mut devs: Vec<Device> = Vec::new();
    for u in [alice, alice2, bob] {
        let mut d = Device {
            ws: Some(u.ws(&s).await),
            user: u,
            cursor: Cursor::default(),
            delivered: Vec::new(),
            own: BTreeSet::new(),
        };
        d.sync(&conv, false, 5).await?;
        devs.push(d);
    }
    let mut n = 0u64;
    for st in steps {
        match st {
            Step::Send(i) => {
                n += 1;
                let cmid = format!("m{n}");
                let d = &mut devs[i];
                if let Some(ws) = d.ws.as_mut() {
                    let ack = ws.send_msg(&conv, &cmid, "x").await;
                    let kept = ws.take_kept();
                    d.own.insert(ack["seq"].as_u64().unwrap());
                    d.frames(kept)?;
                } else {
                    let r = d
                        .user
                        .http
                        .post(&format!("/v1/conversations/{conv}/messages"),
                              json!({"client_msg_id": cmid, "content": {"type": "text", "text": "x"}}))
                        .await;
                    assert_eq!(r.status, 201);
                }
            }
            Step::Ack(i) => {
                let d = &mut devs[i];
                let seq = d.cursor.seq;
                if let Some(ws) = d.ws.as_mut() {
                    ws.send(json!({"type": "ack", "conv_id": conv, "seq": seq}))
                        .await;
                }
            }
            Step::Disconnect(i) => {
                devs[i].ws = None;
            }
            Step::Reconnect { dev, cursor, limit } => {
                let d = &mut devs[dev];
                d.ws = Some(d.user.ws(&s).await);
                d.sync(&conv, cursor, limit).await?;
            }
        }
    }
    // Finally every device comes online and syncs from its own cursor.
    for d in &mut devs {
        if d.ws.is_none() {
            d.ws = Some(d.user.ws(&s).await);
        }
        d.sync(&conv, true, 3).await?;
        let want: Vec<u64> = (1..=n).collect();
        if d.delivered != want {
            return Err(format!(
                "{} has {:?}, want 1..={n}",
                d.user.name, d.delivered
            ));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    #[test]
    fn every_device_gets_every_event_once_in_order(steps in proptest::collection::vec(step(), 1..40)) {
        tokenim_testkit::init_crypto();
        let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
        let r = rt.block_on(run(steps));
        prop_assert!(r.is_ok(), "{}", r.unwrap_err());
    }
}
