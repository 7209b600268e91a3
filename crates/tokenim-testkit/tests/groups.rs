//! Integration tests of the conversation features (groups, roles,
//! receipts, recall and edit, typing, presence, contacts and blocks) over
//! real sockets.
//!
//! long: one integration suite per protocol area; each test is independent
//! and short.

use serde_json::{Value, json};
use tokenim_testkit::{TestServer, User, Ws};

struct Cast {
    owner: User,
    admin: User,
    member: User,
    muted: User,
    removed: User,
    stranger: User,
    conv: String,
}

async fn cast(s: &TestServer) -> Cast {
    let owner = User::new(s, "owner", "d").await;
    let admin = User::new(s, "admin", "d").await;
    let member = User::new(s, "member", "d").await;
    let muted = User::new(s, "muted", "d").await;
    let removed = User::new(s, "removed", "d").await;
    let stranger = User::new(s, "stranger", "d").await;
    let conv = owner
        .group("team", &[&admin, &member, &muted, &removed])
        .await;
    let h = &owner.http;
    let r = h
        .put(
            &format!("/v1/conversations/{conv}/members/{}/role", admin.id),
            Some(json!({"role": "admin"})),
        )
        .await;
    assert_eq!(r.status, 204, "{:?}", r.body);
    let r = h
        .put(
            &format!("/v1/conversations/{conv}/members/{}/mute", muted.id),
            Some(json!({"until": 99_999_999_999_999i64})),
        )
        .await;
    assert_eq!(r.status, 204, "{:?}", r.body);
    let r = h
        .delete(&format!("/v1/conversations/{conv}/members/{}", removed.id))
        .await;
    assert_eq!(r.status, 204, "{:?}", r.body);
    Cast {
        owner,
        admin,
        member,
        muted,
        removed,
        stranger,
        conv,
    }
}

fn who(c: &Cast) -> Vec<(&'static str, &User)> {
    vec![
        ("owner", &c.owner),
        ("admin", &c.admin),
        ("member", &c.member),
        ("muted", &c.muted),
        ("removed", &c.removed),
        ("stranger", &c.stranger),
    ]
}

#[tokio::test]
async fn permission_matrix() {
    let s = TestServer::start().await;
    let c = cast(&s).await;
    let conv = c.conv.clone();

    // Sending, over HTTP and the socket: (actor, expected code or "ok").
    for (name, u) in who(&c) {
        let want = match name {
            "owner" | "admin" | "member" => "ok",
            "muted" => "forbidden",
            _ => "not_found",
        };
        let r = u
            .http
            .post(&format!("/v1/conversations/{conv}/messages"), json!({"client_msg_id": format!("h-{name}"), "content": {"type": "text", "text": name}}))
            .await;
        let got = if r.status == 201 { "ok" } else { r.code() };
        assert_eq!(got, want, "HTTP send by {name}");
        let mut ws = u.ws(&s).await;
        let a = ws.send_msg(&conv, &format!("w-{name}"), name).await;
        let got = if a["type"] == "send_ack" {
            "ok"
        } else {
            a["code"].as_str().unwrap()
        };
        assert_eq!(got, want, "socket send by {name}");
    }

    // Reading: members (muted included) yes; removed and strangers no.
    for (name, u) in who(&c) {
        let want = if matches!(name, "removed" | "stranger") {
            404
        } else {
            200
        };
        assert_eq!(
            u.http
                .get(&format!("/v1/conversations/{conv}"))
                .await
                .status,
            want,
            "{name}"
        );
        assert_eq!(
            u.http
                .get(&format!("/v1/conversations/{conv}/events"))
                .await
                .status,
            want,
            "{name}"
        );
    }

    // Title changes: admins and the owner.
    for (name, u) in who(&c) {
        let want = match name {
            "owner" | "admin" => 200,
            "member" | "muted" => 403,
            _ => 404,
        };
        let r = u
            .http
            .patch(
                &format!("/v1/conversations/{conv}"),
                json!({"title": format!("by {name}")}),
            )
            .await;
        assert_eq!(r.status, want, "title by {name}: {:?}", r.body);
    }

    // Adding members: admins and the owner.
    for (name, u) in who(&c) {
        let extra = User::new(&s, &format!("extra-{name}"), "d").await;
        let want = match name {
            "owner" | "admin" => 200,
            "member" | "muted" => 403,
            _ => 404,
        };
        let r = u
            .http
            .post(
                &format!("/v1/conversations/{conv}/members"),
                json!({"user_ids": [extra.id]}),
            )
            .await;
        assert_eq!(r.status, want, "add by {name}: {:?}", r.body);
    }

    // Removing a plain member: admins and the owner; removing the owner:
    // never; removing an admin: the owner only.
    let victim = |n: &str| format!("extra-{n}");
    let _ = victim;
    for (name, u) in who(&c) {
        let target = User::new(&s, &format!("target-{name}"), "d").await;
        c.owner
            .http
            .post(
                &format!("/v1/conversations/{conv}/members"),
                json!({"user_ids": [target.id]}),
            )
            .await;
        let want = match name {
            "owner" | "admin" => 204,
            "member" | "muted" => 403,
            _ => 404,
        };
        let r = u
            .http
            .delete(&format!("/v1/conversations/{conv}/members/{}", target.id))
            .await;
        assert_eq!(r.status, want, "remove by {name}: {:?}", r.body);
    }
    for (name, u) in who(&c) {
        if name == "owner" {
            continue;
        }
        let r = u
            .http
            .delete(&format!("/v1/conversations/{conv}/members/{}", c.owner.id))
            .await;
        let want = if matches!(name, "removed" | "stranger") {
            404
        } else {
            403
        };
        assert_eq!(r.status, want, "removing the owner by {name}");
    }
    let r = c
        .member
        .http
        .delete(&format!("/v1/conversations/{conv}/members/{}", c.admin.id))
        .await;
    assert_eq!(r.status, 403);
    let second_admin = User::new(&s, "admin2", "d").await;
    c.owner
        .http
        .post(
            &format!("/v1/conversations/{conv}/members"),
            json!({"user_ids": [second_admin.id]}),
        )
        .await;
    c.owner
        .http
        .put(
            &format!("/v1/conversations/{conv}/members/{}/role", second_admin.id),
            Some(json!({"role": "admin"})),
        )
        .await;
    let r = c
        .admin
        .http
        .delete(&format!(
            "/v1/conversations/{conv}/members/{}",
            second_admin.id
        ))
        .await;
    assert_eq!(r.status, 403, "an admin cannot remove another admin");

    // Roles: the owner only.
    for (name, u) in who(&c) {
        let want = match name {
            "owner" => 204,
            "admin" | "member" | "muted" => 403,
            _ => 404,
        };
        let r = u
            .http
            .put(
                &format!("/v1/conversations/{conv}/members/{}/role", c.member.id),
                Some(json!({"role": "admin"})),
            )
            .await;
        assert_eq!(r.status, want, "role by {name}");
        if r.status == 204 {
            c.owner
                .http
                .put(
                    &format!("/v1/conversations/{conv}/members/{}/role", c.member.id),
                    Some(json!({"role": "member"})),
                )
                .await;
        }
    }

    // Mute: admins mute members, never the owner.
    for (name, u) in who(&c) {
        let want = match name {
            "owner" | "admin" => 204,
            "member" | "muted" => 403,
            _ => 404,
        };
        let r = u
            .http
            .put(
                &format!("/v1/conversations/{conv}/members/{}/mute", c.member.id),
                Some(json!({"until": null})),
            )
            .await;
        assert_eq!(r.status, want, "mute by {name}");
    }
    let r = c
        .admin
        .http
        .put(
            &format!("/v1/conversations/{conv}/members/{}/mute", c.owner.id),
            Some(json!({"until": 1})),
        )
        .await;
    assert_eq!(r.status, 403);

    // A past mute is no mute.
    c.owner
        .http
        .put(
            &format!("/v1/conversations/{conv}/members/{}/mute", c.muted.id),
            Some(json!({"until": 1})),
        )
        .await;
    let mut ws = c.muted.ws(&s).await;
    assert_eq!(
        ws.send_msg(&conv, "after-mute", "x").await["type"],
        "send_ack"
    );

    // The owner cannot leave while others are there; others can.
    assert_eq!(
        c.owner
            .http
            .delete(&format!("/v1/conversations/{conv}/members/{}", c.owner.id))
            .await
            .status,
        403
    );
    assert_eq!(
        c.member
            .http
            .delete(&format!("/v1/conversations/{conv}/members/{}", c.member.id))
            .await
            .status,
        204
    );
    assert_eq!(
        c.member
            .http
            .get(&format!("/v1/conversations/{conv}"))
            .await
            .status,
        404
    );

    // Announcement mode: only admins send.
    let r = c
        .owner
        .http
        .patch(
            &format!("/v1/conversations/{conv}"),
            json!({"only_admins_send": true}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["only_admins_send"], true);
    let mut wm = c.muted.ws(&s).await;
    assert_eq!(
        wm.send_msg(&conv, "announce-1", "x").await["code"],
        "forbidden"
    );
    let mut wa = c.admin.ws(&s).await;
    assert_eq!(
        wa.send_msg(&conv, "announce-2", "x").await["type"],
        "send_ack"
    );
}

#[tokio::test]
async fn membership_events_and_notices() {
    let s = TestServer::start().await;
    let o = User::new(&s, "owner", "d").await;
    let o2 = o.device(&s, "d2").await;
    let a = User::new(&s, "ann", "d").await;
    let b = User::new(&s, "ben", "d").await;
    let mut wo2 = o2.ws(&s).await;
    let mut wa = a.ws(&s).await;
    let mut wb = b.ws(&s).await;
    let conv = o.group("team", &[&a]).await;

    // Seq 1 is member_joined listing everyone, by the owner.
    let added = wa.expect("conv_added").await;
    assert_eq!(added["conversation"]["conv_id"], conv.as_str());
    assert_eq!(
        wo2.expect("conv_added").await["conversation"]["conv_id"],
        conv.as_str()
    );
    let e = wa.expect("event").await["event"].clone();
    assert_eq!(
        (e["seq"].as_u64(), e["kind"].as_str()),
        (Some(1), Some("member_joined"))
    );
    let mut ids: Vec<String> = serde_json::from_value(e["content"]["user_ids"].clone()).unwrap();
    ids.sort();
    let mut want = vec![o.id.clone(), a.id.clone()];
    want.sort();
    assert_eq!(ids, want);
    assert_eq!(e["content"]["by"], o.id.as_str());
    assert!(
        e.get("client_msg_id").is_none(),
        "server-made events have no client_msg_id key"
    );

    let h = &o.http;
    h.post(
        &format!("/v1/conversations/{conv}/members"),
        json!({"user_ids": [b.id]}),
    )
    .await;
    assert_eq!(
        wb.expect("conv_added").await["conversation"]["conv_id"],
        conv.as_str()
    );
    let e = wb.expect("event").await["event"].clone();
    assert_eq!(
        (e["seq"].as_u64(), e["kind"].as_str()),
        (Some(2), Some("member_joined"))
    );
    assert_eq!(e["content"], json!({"user_ids": [b.id], "by": o.id}));

    h.put(
        &format!("/v1/conversations/{conv}/members/{}/role", a.id),
        Some(json!({"role": "admin"})),
    )
    .await;
    let e = wa
        .expect_where(|v| v["type"] == "event" && v["event"]["seq"] == 3)
        .await["event"]
        .clone();
    assert_eq!(e["kind"], "role_changed");
    assert_eq!(
        e["content"],
        json!({"user_id": a.id, "role": "admin", "by": o.id})
    );

    h.patch(
        &format!("/v1/conversations/{conv}"),
        json!({"title": "new"}),
    )
    .await;
    let e = wa
        .expect_where(|v| v["type"] == "event" && v["event"]["seq"] == 4)
        .await["event"]
        .clone();
    assert_eq!(e["kind"], "conv_updated");
    assert_eq!(e["content"], json!({"title": "new", "by": o.id}));

    h.delete(&format!("/v1/conversations/{conv}/members/{}", b.id))
        .await;
    assert_eq!(wb.expect("conv_removed").await["conv_id"], conv.as_str());
    let e = wa
        .expect_where(|v| v["type"] == "event" && v["event"]["seq"] == 5)
        .await["event"]
        .clone();
    assert_eq!(e["kind"], "member_removed");
    assert_eq!(e["content"], json!({"user_id": b.id, "by": o.id}));

    a.http
        .delete(&format!("/v1/conversations/{conv}/members/{}", a.id))
        .await;
    assert_eq!(wa.expect("conv_removed").await["conv_id"], conv.as_str());
    let e = wo2
        .expect_where(|v| v["type"] == "event" && v["event"]["seq"] == 6)
        .await["event"]
        .clone();
    assert_eq!(e["kind"], "member_left");
    assert_eq!(e["content"], json!({"user_id": a.id}));

    // The removed member receives nothing later and cannot read or sync.
    let mut wo = o.ws(&s).await;
    wo.send_msg(&conv, "after", "x").await;
    wo2.expect_where(|v| v["type"] == "event" && v["event"]["seq"] == 7)
        .await;
    wb.send(json!({"type": "ping", "id": "fence"})).await;
    wb.expect("pong").await;
    assert!(
        !wb_has_event_after(&mut wb).await,
        "a removed member gets no later events"
    );
    let mut cursors = std::collections::BTreeMap::from([(conv.clone(), 0)]);
    assert!(wb.sync_all(&mut cursors).await.is_empty());
    assert_eq!(
        b.http
            .get(&format!("/v1/conversations/{conv}/events"))
            .await
            .status,
        404
    );
}

async fn wb_has_event_after(ws: &mut Ws) -> bool {
    // Frames before the pong were kept; look at them.
    ws.send(json!({"type": "ping", "id": "fence2"})).await;
    let mut found = false;
    loop {
        let v = ws.recv().await;
        if v["type"] == "pong" && v["id"] == "fence2" {
            return found;
        }
        if v["type"] == "event" && v["event"]["seq"].as_u64() >= Some(6) {
            found = true;
        }
    }
}

#[tokio::test]
async fn receipts_and_delivered() {
    let s = TestServer::start().await;
    let a = User::new(&s, "alice", "d").await;
    let a2 = a.device(&s, "d2").await;
    let b = User::new(&s, "bob", "d").await;
    let c = User::new(&s, "carol", "d").await;
    let g = a.group("g", &[&b, &c]).await;
    let mut wa = a.ws(&s).await;
    let mut wa2 = a2.ws(&s).await;
    let mut wb = b.ws(&s).await;
    let mut wc = c.ws(&s).await;
    let ack = wa.send_msg(&g, "m1", "hi").await;
    let seq = ack["seq"].as_u64().unwrap();
    wb.expect_where(|v| v["type"] == "event" && v["event"]["seq"] == seq)
        .await;

    // Bob's device acks: alice's devices get `delivered`, carol nothing.
    wb.send(json!({"type": "ack", "conv_id": g, "seq": seq}))
        .await;
    let d = wa.expect("delivered").await;
    assert_eq!(
        d,
        json!({"type": "delivered", "conv_id": g, "user_id": b.id, "seq": seq})
    );
    assert_eq!(wa2.expect("delivered").await["seq"], seq);
    // A second ack of the same seq announces nothing new.
    wb.send(json!({"type": "ack", "conv_id": g, "seq": seq}))
        .await;

    // Bob reads: receipts to alice's devices and carol, not to bob's socket.
    wb.send(json!({"type": "read", "conv_id": g, "seq": seq}))
        .await;
    let r = wa.expect("receipt").await;
    assert_eq!(
        r,
        json!({"type": "receipt", "conv_id": g, "user_id": b.id, "read_seq": seq})
    );
    assert_eq!(wc.expect("receipt").await["user_id"], b.id.as_str());
    assert_eq!(wa2.expect("receipt").await["read_seq"], seq);
    wb.send(json!({"type": "ping", "id": "f"})).await;
    let next = wb.recv().await;
    assert_eq!(
        next["type"], "pong",
        "the reader gets no receipt of its own read: {next}"
    );

    let r = a
        .http
        .get(&format!("/v1/conversations/{g}/events/{seq}/receipts"))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["read_by"], json!([b.id]));
    assert_eq!(r.body["unread_by"], json!([c.id]));
    assert_eq!(
        a.http
            .get(&format!("/v1/conversations/{g}/events/999/receipts"))
            .await
            .status,
        404
    );
    // The delivered notice above came before the second ack's; nothing else.
    wa.send(json!({"type": "ping", "id": "f2"})).await;
    let next = wa
        .expect_where(|v| v["type"] == "pong" || v["type"] == "delivered")
        .await;
    assert_eq!(next["type"], "pong");
}

#[tokio::test]
async fn recall_and_edit() {
    let s = TestServer::start_with(|c| c.limits.recall_window_ms = 400).await;
    let a = User::new(&s, "alice", "d").await;
    let b = User::new(&s, "bob", "d").await;
    let adm = User::new(&s, "adm", "d").await;
    let g = a.group("g", &[&b, &adm]).await;
    a.http
        .put(
            &format!("/v1/conversations/{g}/members/{}/role", adm.id),
            Some(json!({"role": "admin"})),
        )
        .await;
    let mut wa = a.ws(&s).await;
    let mut wb = b.ws(&s).await;
    let m = wa.send_msg(&g, "m1", "original").await["seq"]
        .as_u64()
        .unwrap();

    // Bob may neither recall nor edit alice's message.
    wb.send(
        json!({"type": "recall", "id": "r", "conv_id": g, "client_msg_id": "b-r", "target_seq": m}),
    )
    .await;
    assert_eq!(
        wb.expect_where(|v| v["id"] == "r").await["code"],
        "forbidden"
    );
    wb.send(json!({"type": "edit", "id": "e", "conv_id": g, "client_msg_id": "b-e", "target_seq": m, "content": {"type": "text", "text": "x"}})).await;
    assert_eq!(
        wb.expect_where(|v| v["id"] == "e").await["code"],
        "forbidden"
    );
    wa.send(json!({"type": "recall", "id": "nf", "conv_id": g, "client_msg_id": "a-nf", "target_seq": 999})).await;
    assert_eq!(
        wa.expect_where(|v| v["id"] == "nf").await["code"],
        "not_found"
    );
    wa.send(json!({"type": "recall", "id": "mj", "conv_id": g, "client_msg_id": "a-mj", "target_seq": 1})).await;
    assert_eq!(
        wa.expect_where(|v| v["id"] == "mj").await["code"],
        "bad_request"
    );

    // Alice edits: an edit event, and the target reads with new content.
    wa.send(json!({"type": "edit", "id": "e1", "conv_id": g, "client_msg_id": "a-e1", "target_seq": m, "content": {"type": "text", "text": "edited"}})).await;
    let ack = wa.expect_where(|v| v["id"] == "e1").await;
    assert_eq!(ack["type"], "send_ack");
    let ev = wb
        .expect_where(|v| v["type"] == "event" && v["event"]["kind"] == "edit")
        .await;
    assert_eq!(ev["event"]["content"]["target_seq"], m);
    assert_eq!(ev["event"]["content"]["content"]["text"], "edited");
    let h = b
        .http
        .get(&format!(
            "/v1/conversations/{g}/events?after_seq={}&limit=1",
            m - 1
        ))
        .await;
    let target = &h.body["events"][0];
    assert_eq!(
        (
            target["content"]["text"].as_str(),
            target["edited"].as_bool()
        ),
        (Some("edited"), Some(true))
    );

    // Alice recalls within the window.
    wa.send(json!({"type": "recall", "id": "r1", "conv_id": g, "client_msg_id": "a-r1", "target_seq": m})).await;
    assert_eq!(
        wa.expect_where(|v| v["id"] == "r1").await["type"],
        "send_ack"
    );
    let ev = wb
        .expect_where(|v| v["type"] == "event" && v["event"]["kind"] == "recall")
        .await;
    assert_eq!(ev["event"]["content"], json!({"target_seq": m}));
    let h = b
        .http
        .get(&format!(
            "/v1/conversations/{g}/events?after_seq={}&limit=1",
            m - 1
        ))
        .await;
    let target = &h.body["events"][0];
    assert_eq!(target["content"], Value::Null);
    assert_eq!(target["recalled"], true);
    // And sync says the same.
    let mut cursors = std::collections::BTreeMap::from([(g.clone(), m - 1)]);
    let evs = wb.sync_all(&mut cursors).await;
    assert_eq!(evs[0]["recalled"], true);

    // Past the window a plain member may not recall; an admin may.
    let m2 = wb.send_msg(&g, "m2", "late").await["seq"].as_u64().unwrap();
    let t0 = std::time::Instant::now();
    // Wait out the 400 ms window: ping round trips until it has passed
    // (the server's clock is this machine's clock).
    while t0.elapsed() < std::time::Duration::from_millis(450) {
        wb.send(json!({"type": "ping", "id": "tick"})).await;
        wb.expect("pong").await;
    }
    wb.send(json!({"type": "recall", "id": "r2", "conv_id": g, "client_msg_id": "b-r2", "target_seq": m2})).await;
    assert_eq!(
        wb.expect_where(|v| v["id"] == "r2").await["code"],
        "forbidden"
    );
    let mut wadm = adm.ws(&s).await;
    wadm.send(json!({"type": "recall", "id": "r3", "conv_id": g, "client_msg_id": "adm-r3", "target_seq": m2})).await;
    assert_eq!(
        wadm.expect_where(|v| v["id"] == "r3").await["type"],
        "send_ack"
    );
}

#[tokio::test]
async fn typing_and_presence() {
    let s = TestServer::start().await;
    let a = User::new(&s, "alice", "d").await;
    let b = User::new(&s, "bob", "d").await;
    let stranger = User::new(&s, "zed", "d").await;
    let conv = a.direct(&b).await;
    let mut wa = a.ws(&s).await;
    let mut wb = b.ws(&s).await;
    wa.send(json!({"type": "typing", "conv_id": conv})).await;
    assert_eq!(
        wb.expect("typing").await,
        json!({"type": "typing", "conv_id": conv, "user_id": a.id})
    );

    // Subscriptions: co-members yes, strangers silently left out.
    wa.send(json!({"type": "presence_sub", "user_ids": [b.id, stranger.id]}))
        .await;
    let p = wa.expect("presence").await;
    assert_eq!(
        (p["user_id"].as_str(), p["online"].as_bool()),
        (Some(b.id.as_str()), Some(true))
    );
    // Bob goes offline, then online again: two more presence frames.
    drop(wb);
    let p = wa.expect("presence").await;
    assert_eq!(
        (p["user_id"].as_str(), p["online"].as_bool()),
        (Some(b.id.as_str()), Some(false))
    );
    assert!(p["last_seen"].as_i64().unwrap() > 0);
    let devs = b.http.get("/v1/devices").await.body;
    assert_eq!(devs["devices"][0]["online"], false);
    let _wb = b.ws(&s).await;
    let p = wa.expect("presence").await;
    assert_eq!(p["online"], true);
    let devs = b.http.get("/v1/devices").await.body;
    assert_eq!(devs["devices"][0]["online"], true);
    // The stranger never appeared.
    wa.send(json!({"type": "ping", "id": "end"})).await;
    loop {
        let v = wa.recv().await;
        assert_ne!(v["user_id"], stranger.id.as_str());
        if v["type"] == "pong" {
            break;
        }
    }
    // Contacts may be watched even without a shared conversation.
    assert_eq!(
        a.http
            .put(&format!("/v1/contacts/{}", stranger.id), None)
            .await
            .status,
        204
    );
    wa.send(json!({"type": "presence_sub", "user_ids": [stranger.id]}))
        .await;
    let p = wa.expect("presence").await;
    assert_eq!(
        (p["user_id"].as_str(), p["online"].as_bool()),
        (Some(stranger.id.as_str()), Some(false))
    );
}

#[tokio::test]
async fn contacts_and_blocks() {
    let s = TestServer::start().await;
    let a = User::new(&s, "alice", "d").await;
    let b = User::new(&s, "bob", "d").await;
    let c = User::new(&s, "carol", "d").await;
    assert_eq!(
        a.http
            .put(&format!("/v1/contacts/{}", b.id), None)
            .await
            .status,
        204
    );
    let list = a.http.get("/v1/contacts").await.body;
    assert_eq!(list["contacts"][0]["user_id"], b.id.as_str());
    assert_eq!(list["contacts"][0]["username"], "bob");
    assert_eq!(
        b.http.get("/v1/contacts").await.body["contacts"],
        json!([]),
        "one-sided"
    );
    assert_eq!(a.http.put("/v1/contacts/u_nobody", None).await.status, 404);
    assert_eq!(
        a.http
            .delete(&format!("/v1/contacts/{}", b.id))
            .await
            .status,
        204
    );
    assert_eq!(a.http.get("/v1/contacts").await.body["contacts"], json!([]));

    // Alice blocks bob: bob can neither open nor send into their direct chat.
    let conv = a.direct(&b).await;
    assert_eq!(
        a.http
            .put(&format!("/v1/blocks/{}", b.id), None)
            .await
            .status,
        204
    );
    let r = b
        .http
        .post("/v1/conversations", json!({"type": "direct", "peer": a.id}))
        .await;
    assert_eq!((r.status, r.code()), (403, "forbidden"));
    let mut wb = b.ws(&s).await;
    assert_eq!(
        wb.send_msg(&conv, "blocked", "x").await["code"],
        "forbidden"
    );
    // Blocks apply to direct conversations only.
    let g = c.group("g", &[&a, &b]).await;
    assert_eq!(wb.send_msg(&g, "in-group", "x").await["type"], "send_ack");
    // Alice can still write; unblocking lets bob write again.
    let mut wa = a.ws(&s).await;
    assert_eq!(wa.send_msg(&conv, "from-a", "x").await["type"], "send_ack");
    assert_eq!(
        a.http.delete(&format!("/v1/blocks/{}", b.id)).await.status,
        204
    );
    assert_eq!(
        wb.send_msg(&conv, "unblocked", "x").await["type"],
        "send_ack"
    );
}

#[tokio::test]
async fn conversation_list_order() {
    let s = TestServer::start().await;
    let a = User::new(&s, "alice", "d").await;
    let b = User::new(&s, "bob", "d").await;
    let c = User::new(&s, "carol", "d").await;
    let ab = a.direct(&b).await;
    let ac = a.direct(&c).await;
    let g = a.group("g", &[&b]).await;
    let mut wa = a.ws(&s).await;
    wa.send_msg(&ab, "1", "x").await;
    wa.send_msg(&ac, "2", "x").await;
    let mut wb = b.ws(&s).await;
    wb.send_msg(&ab, "3", "x").await;
    let list = a.http.get("/v1/conversations").await.body;
    let order: Vec<&str> = list["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["conv_id"].as_str().unwrap())
        .collect();
    assert_eq!(order[0], ab.as_str());
    assert_eq!(order[1], ac.as_str());
    assert_eq!(order[2], g.as_str());
    assert_eq!(list["conversations"][0]["unread"], 1);
    assert_eq!(list["conversations"][0]["last_event"]["client_msg_id"], "3");
}

#[tokio::test]
async fn large_group_stores_each_message_once() {
    const N: usize = 20_000;
    let s = TestServer::start().await;
    let owner = User::new(&s, "owner", "d").await;
    let peer = User::new(&s, "peer", "d").await;
    // Bulk-create the members through the admin API (one hash for all).
    let users: Vec<Value> = (0..N)
        .map(|i| json!({"username": format!("m{i:05}"), "password": "password1"}))
        .collect();
    let admin = s.client().with_token("test-admin");
    let r = admin.post("/v1/admin/users", json!({"users": users})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let ids: Vec<String> = r.body["user_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), N);
    let r = owner
        .http
        .post(
            "/v1/conversations",
            json!({"type": "group", "title": "big", "members": ids[..999]}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let big = r.body["conv_id"].as_str().unwrap().to_owned();
    for chunk in ids[999..].chunks(1000) {
        let r = owner
            .http
            .post(
                &format!("/v1/conversations/{big}/members"),
                json!({"user_ids": chunk}),
            )
            .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
    }
    let small = owner.group("small", &[&peer]).await;
    let conv = owner
        .http
        .get(&format!("/v1/conversations/{big}"))
        .await
        .body;
    assert_eq!(conv["member_count"], N as u64 + 1);
    assert!(
        conv.get("members").is_none(),
        "large groups leave the member list out"
    );

    // The member list pages.
    let mut after: Option<String> = None;
    let mut seen = 0;
    loop {
        let q = match &after {
            Some(a) => format!("?after={a}&limit=1000"),
            None => "?limit=1000".to_string(),
        };
        let page = owner
            .http
            .get(&format!("/v1/conversations/{big}/members{q}"))
            .await
            .body;
        let ms = page["members"].as_array().unwrap();
        seen += ms.len();
        after = ms.last().map(|m| m["user_id"].as_str().unwrap().to_owned());
        if page["has_more"] != true {
            break;
        }
    }
    assert_eq!(seen, N + 1);

    // A member of the big group who is online gets the push.
    let member = s.client().login("m00007", "d").await;
    let mut wm = Ws::connect_auth(&s.ws, member.token()).await;
    let events_before = s
        .app()
        .metrics
        .events
        .load(std::sync::atomic::Ordering::Relaxed);
    let mut wo = owner.ws(&s).await;
    const M: usize = 50;
    for i in 0..M {
        let a = wo.send_msg(&big, &format!("big-{i}"), "x").await;
        assert_eq!(a["type"], "send_ack");
        let b = wo.send_msg(&small, &format!("small-{i}"), "x").await;
        assert_eq!(b["type"], "send_ack");
    }
    for i in 0..M {
        let e = wm.expect("event").await;
        assert_eq!(e["event"]["client_msg_id"], format!("big-{i}"));
    }
    // One stored event per message, whatever the member count.
    let events_after = s
        .app()
        .metrics
        .events
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(events_after - events_before, 2 * M as u64);
    let last = owner
        .http
        .get(&format!("/v1/conversations/{big}"))
        .await
        .body["last_seq"]
        .as_u64()
        .unwrap();
    let joined_events = 1 + (N - 999).div_ceil(1000) as u64;
    assert_eq!(last, joined_events + M as u64);
    // Unread for a member is cheap and right.
    let mc = member.get(&format!("/v1/conversations/{big}")).await.body;
    assert_eq!(mc["unread"], M as u64);
}
