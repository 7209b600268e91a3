//! Integration tests of the core protocol (PROTOCOL.md sections 2-6) against
//! a real server over real HTTP and WebSocket connections.
//!
//! long: one integration suite per protocol area; each test is independent
//! and short.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use tokenim_testkit::{Closed, TestServer, User, Ws};

fn text(t: &str) -> Value {
    json!({"type": "text", "text": t})
}

#[tokio::test]
async fn accounts_and_sessions() {
    let s = TestServer::start().await;
    let c = s.client();
    let r = c
        .post(
            "/v1/accounts",
            json!({"username": "alice", "password": "password1"}),
        )
        .await;
    assert_eq!(r.status, 201);
    let alice = r.body["user_id"].as_str().unwrap().to_owned();
    let r = c
        .post(
            "/v1/accounts",
            json!({"username": "alice", "password": "password1"}),
        )
        .await;
    assert_eq!((r.status, r.code()), (409, "conflict"));
    for bad in [
        json!({"username": "Alice", "password": "password1"}),
        json!({"username": "al", "password": "password1"}),
        json!({"username": "bob", "password": "short"}),
        json!({"username": "bob"}),
        json!({"username": 5, "password": "password1"}),
    ] {
        let r = c.post("/v1/accounts", bad.clone()).await;
        assert_eq!((r.status, r.code()), (400, "bad_request"), "{bad}");
    }
    // Password length counts characters, not bytes.
    let r = c
        .post(
            "/v1/accounts",
            json!({"username": "eve", "password": "éééééééé"}),
        )
        .await;
    assert_eq!(r.status, 201);

    let login = |u: &str, p: &str, d: &str, plat: &str| json!({"username": u, "password": p, "device_id": d, "platform": plat});
    let r = c
        .post("/v1/sessions", login("alice", "wrongpass", "d1", "cli"))
        .await;
    assert_eq!((r.status, r.code()), (401, "unauthorized"));
    let r = c
        .post("/v1/sessions", login("nobody", "password1", "d1", "cli"))
        .await;
    assert_eq!((r.status, r.code()), (401, "unauthorized"));
    let r = c
        .post("/v1/sessions", login("alice", "password1", "bad id", "cli"))
        .await;
    assert_eq!(r.status, 400);
    let r = c
        .post("/v1/sessions", login("alice", "password1", "d1", "fax"))
        .await;
    assert_eq!(r.status, 400);
    let r = c
        .post("/v1/sessions", login("alice", "password1", "d1", "cli"))
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(r.body["user_id"], alice.as_str());
    assert_eq!(r.body["device_id"], "d1");
    assert!(r.body["expires_at"].as_i64().unwrap() > 0);
    let a = c.with_token(r.body["token"].as_str().unwrap());

    let me = a.get("/v1/me").await;
    assert_eq!(me.status, 200);
    assert_eq!(
        me.body,
        json!({"user_id": alice, "username": "alice", "display_name": "alice",
               "avatar_url": null})
    );
    let found = a.get("/v1/users?username=alice").await;
    assert_eq!(found.body["users"][0]["user_id"], alice.as_str());
    assert_eq!(
        a.get("/v1/users?username=zzz").await.body["users"],
        json!([])
    );
    assert_eq!(a.get(&format!("/v1/users/{alice}")).await.status, 200);
    assert_eq!(a.get("/v1/users/u_nope").await.code(), "not_found");
    let devs = a.get("/v1/devices").await;
    assert_eq!(devs.body["devices"][0]["device_id"], "d1");
    assert_eq!(devs.body["devices"][0]["platform"], "cli");

    // No token, a bad token, a forged token.
    assert_eq!(c.get("/v1/me").await.code(), "unauthorized");
    assert_eq!(c.with_token("x.y").get("/v1/me").await.status, 401);
    let mut forged = a.token().to_owned();
    forged.pop();
    assert_eq!(c.with_token(&forged).get("/v1/me").await.status, 401);

    // Logout: the token stops working at once and the socket is kicked.
    let mut ws = Ws::connect_auth(&s.ws, a.token()).await;
    assert_eq!(a.delete("/v1/sessions/current").await.status, 204);
    assert_eq!(a.get("/v1/me").await.status, 401);
    let k = ws.expect("kicked").await;
    assert_eq!(k["reason"], "logged_out");
    assert_eq!(ws.closed().await, Closed::Code(4002));
}

#[tokio::test]
async fn framework_errors_are_json() {
    let s = TestServer::start().await;
    let c = s.client();
    let r = c.get("/v1/nothing-here").await;
    assert_eq!((r.status, r.code()), (404, "not_found"));
    let r = c.req("PUT", "/v1/accounts", None).await;
    assert_eq!((r.status, r.code()), (405, "bad_request"));
    let r = c
        .raw("POST", "/v1/accounts", Some(b"{not json".to_vec()))
        .await;
    assert_eq!((r.status, r.code()), (400, "bad_request"));
    let r = c
        .raw("POST", "/v1/accounts", Some(vec![b'x'; 70_000]))
        .await;
    assert_eq!((r.status, r.code()), (413, "too_large"));
    let r = c.raw("POST", "/v1/accounts", None).await;
    assert_eq!(r.status, 400);
    assert_eq!(c.get("/healthz").await.status, 200);
    assert_eq!(c.get("/readyz").await.status, 200);
    let m = c.get("/metrics").await;
    assert!(
        m.body
            .as_str()
            .unwrap()
            .contains("tokenim_events_committed_total")
    );
}

#[tokio::test]
async fn device_removal_revokes_and_kicks() {
    let s = TestServer::start().await;
    let a = User::new(&s, "alice", "phone").await;
    let laptop = a.device(&s, "laptop").await;
    let mut ws = laptop.ws(&s).await;
    assert_eq!(a.http.delete("/v1/devices/laptop").await.status, 204);
    assert_eq!(ws.expect("kicked").await["reason"], "revoked");
    assert_eq!(ws.closed().await, Closed::Code(4002));
    assert_eq!(laptop.http.get("/v1/me").await.status, 401);
    assert_eq!(
        a.http.delete("/v1/devices/laptop").await.code(),
        "not_found"
    );
    let devs = a.http.get("/v1/devices").await.body;
    assert_eq!(devs["devices"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn socket_handshake_rules() {
    let s = TestServer::start_with(|c| c.limits.heartbeat_ms = 300).await;
    let a = User::new(&s, "alice", "d1").await;

    // A first frame other than auth: error unauthorized, close 4001.
    let mut ws = Ws::connect(&s.ws).await;
    ws.send(json!({"type": "ping", "id": 1})).await;
    let e = ws.recv().await;
    assert_eq!(
        (e["type"].as_str(), e["code"].as_str()),
        (Some("error"), Some("unauthorized"))
    );
    assert_eq!(ws.closed().await, Closed::Code(4001));

    let mut ws = Ws::connect(&s.ws).await;
    ws.send(json!({"type": "auth", "token": "nope"})).await;
    assert_eq!(ws.recv().await["code"], "unauthorized");
    assert_eq!(ws.closed().await, Closed::Code(4001));

    let mut ws = Ws::connect(&s.ws).await;
    ws.send(json!({"type": "auth", "token": a.http.token()}))
        .await;
    let ok = ws.recv().await;
    assert_eq!(ok["type"], "auth_ok");
    assert_eq!(ok["user_id"], a.id.as_str());
    assert_eq!(ok["device_id"], "d1");
    assert_eq!(ok["heartbeat_ms"], 300);
    assert!(ok["server_time"].as_i64().unwrap() > 0);

    ws.send(json!({"type": "ping", "id": "p1"})).await;
    assert_eq!(ws.recv().await, json!({"type": "pong", "id": "p1"}));
    ws.send(json!({"type": "fly", "id": 9})).await;
    let e = ws.recv().await;
    assert_eq!(
        (e["code"].as_str(), e["id"].as_i64()),
        (Some("bad_request"), Some(9))
    );
    ws.send_text("{oops".into()).await;
    assert_eq!(ws.recv().await["code"], "bad_request");
    ws.send(json!({"type": "send", "id": 3, "conv_id": "c_x"}))
        .await;
    let e = ws.recv().await;
    assert_eq!(
        (e["code"].as_str(), e["id"].as_i64()),
        (Some("bad_request"), Some(3))
    );

    // Silence for 2 x heartbeat_ms: closed with 4003.
    assert_eq!(ws.closed().await, Closed::Code(4003));

    // A frame over max_frame_bytes: closed with 1009.
    let mut ws = a.ws(&s).await;
    ws.send_text(format!(
        "{{\"type\":\"ping\",\"pad\":\"{}\"}}",
        "x".repeat(70_000)
    ))
    .await;
    assert_eq!(ws.closed().await, Closed::Code(1009));

    // One socket per device: the older one is replaced.
    let mut first = a.ws(&s).await;
    let _second = a.ws(&s).await;
    assert_eq!(first.expect("kicked").await["reason"], "replaced");
    assert_eq!(first.closed().await, Closed::Code(4002));
}

#[tokio::test]
async fn send_ack_push_and_idempotency() {
    let s = TestServer::start().await;
    let a = User::new(&s, "alice", "phone").await;
    let a2 = a.device(&s, "laptop").await;
    let b = User::new(&s, "bob", "phone").await;
    let conv = a.direct(&b).await;
    assert_eq!(
        a.direct(&b).await,
        conv,
        "the direct conversation is unique"
    );
    assert_eq!(
        b.http
            .post("/v1/conversations", json!({"type": "direct", "peer": a.id}))
            .await
            .status,
        200
    );
    let mut wa = a.ws(&s).await;
    let mut wa2 = a2.ws(&s).await;
    let mut wb = b.ws(&s).await;

    let ack = wa.send_msg(&conv, "m1", "hello").await;
    assert_eq!(ack["type"], "send_ack", "{ack}");
    assert_eq!(ack["seq"], 1);
    assert_eq!(ack["conv_id"], conv.as_str());
    assert_eq!(ack["client_msg_id"], "m1");
    let msg_id = ack["msg_id"].as_str().unwrap().to_owned();

    // Pushed to the peer and to the sender's other device, not to itself.
    for ws in [&mut wb, &mut wa2] {
        let e = ws.expect("event").await;
        assert_eq!(e["event"]["seq"], 1);
        assert_eq!(e["event"]["msg_id"], msg_id.as_str());
        assert_eq!(e["event"]["sender"], a.id.as_str());
        assert_eq!(e["event"]["sender_device"], "phone");
        assert_eq!(e["event"]["content"], text("hello"));
        assert_eq!(e["event"]["client_msg_id"], "m1");
    }

    // Repeats: same socket, other device, HTTP: the same ack, nothing new.
    let again = wa.send_msg(&conv, "m1", "different text").await;
    assert_eq!(again["msg_id"], msg_id.as_str());
    assert_eq!(again["seq"], 1);
    let other = wa2.send_msg(&conv, "m1", "x").await;
    assert_eq!(
        (other["msg_id"].as_str(), other["seq"].as_u64()),
        (Some(msg_id.as_str()), Some(1))
    );
    let r = a
        .http
        .post(
            &format!("/v1/conversations/{conv}/messages"),
            json!({"client_msg_id": "m1", "content": text("y")}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["msg_id"], msg_id.as_str());
    assert_eq!(r.body["ts"], ack["ts"]);

    // An HTTP send is pushed to every device of the sender and the peer.
    let r = a
        .http
        .post(
            &format!("/v1/conversations/{conv}/messages"),
            json!({"client_msg_id": "h2", "content": text("via http")}),
        )
        .await;
    assert_eq!((r.status, r.body["seq"].as_u64()), (201, Some(2)));
    for ws in [&mut wa, &mut wa2, &mut wb] {
        let e = ws.expect("event").await;
        assert_eq!(e["event"]["seq"], 2);
    }

    // The same key for another conversation or request type: conflict.
    let g = a.group("g", &[&b]).await;
    let e = wa.send_msg(&g, "m1", "x").await;
    assert_eq!(e["code"], "conflict");
    wa.send(json!({"type": "recall", "id": "r", "conv_id": conv, "client_msg_id": "m1", "target_seq": 1})).await;
    assert_eq!(
        wa.expect_where(|v| v["id"] == "r").await["code"],
        "conflict"
    );

    let hist = b
        .http
        .get(&format!("/v1/conversations/{conv}/events"))
        .await;
    assert_eq!(hist.body["events"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn send_rejections() {
    let s = TestServer::start().await;
    let a = User::new(&s, "alice", "d").await;
    let b = User::new(&s, "bob", "d").await;
    let c = User::new(&s, "carol", "d").await;
    let conv = a.direct(&b).await;
    let mut wc = c.ws(&s).await;
    let mut wa = a.ws(&s).await;
    assert_eq!(wc.send_msg(&conv, "x1", "hi").await["code"], "not_found");
    assert_eq!(
        wa.send_msg("c_missing", "x2", "hi").await["code"],
        "not_found"
    );
    let big = "x".repeat(17_000);
    assert_eq!(wa.send_msg(&conv, "x3", &big).await["code"], "too_large");
    for (cmid, content) in [
        ("x4", json!("str")),
        ("x5", json!({"text": "no type"})),
        ("x6", json!({"type": 5})),
    ] {
        wa.send(json!({"type": "send", "id": cmid, "conv_id": conv, "client_msg_id": cmid, "content": content})).await;
        assert_eq!(
            wa.expect_where(|v| v["id"] == cmid).await["code"],
            "bad_request"
        );
    }
    for cmid in ["", "has space", &"k".repeat(65)] {
        wa.send(json!({"type": "send", "id": "bad", "conv_id": conv, "client_msg_id": cmid, "content": text("x")})).await;
        assert_eq!(
            wa.expect_where(|v| v["id"] == "bad").await["code"],
            "bad_request"
        );
    }
    // Non-members see nothing of the conversation.
    let cc = &c.http;
    assert_eq!(
        cc.get(&format!("/v1/conversations/{conv}")).await.code(),
        "not_found"
    );
    assert_eq!(
        cc.get(&format!("/v1/conversations/{conv}/events"))
            .await
            .code(),
        "not_found"
    );
    assert_eq!(
        cc.get(&format!("/v1/conversations/{conv}/members"))
            .await
            .code(),
        "not_found"
    );
    let r = cc
        .post(
            &format!("/v1/conversations/{conv}/messages"),
            json!({"client_msg_id": "z", "content": text("x")}),
        )
        .await;
    assert_eq!(r.code(), "not_found");
    let mut cursors = BTreeMap::from([(conv.clone(), 0)]);
    assert!(wc.sync_all(&mut cursors).await.is_empty());
}

#[tokio::test]
async fn concurrent_senders_get_one_gap_free_order() {
    let s = TestServer::start().await;
    let owner = User::new(&s, "owner", "d").await;
    let mut users = Vec::new();
    for i in 0..3 {
        users.push(User::new(&s, &format!("sender{i}"), "d").await);
    }
    let refs: Vec<&User> = users.iter().collect();
    let g = owner.group("busy", &refs).await;
    let mut watcher = owner.ws(&s).await;
    const N: usize = 60;
    let mut tasks = Vec::new();
    for u in users.clone() {
        let (ws_url, g) = (s.ws.clone(), g.clone());
        tasks.push(tokio::spawn(async move {
            let mut ws = Ws::connect_auth(&ws_url, u.http.token()).await;
            // Pipelined: all sends first, then the acks.
            for i in 0..N {
                let cmid = format!("{}-{i}", u.name);
                ws.send(
                    json!({"type": "send", "id": i, "conv_id": g, "client_msg_id": cmid,
                               "content": {"type": "text", "text": cmid}}),
                )
                .await;
            }
            let mut seqs = Vec::new();
            for i in 0..N {
                let a = ws
                    .expect_where(|v| v["type"] == "send_ack" && v["id"] == i)
                    .await;
                seqs.push(a["seq"].as_u64().unwrap());
            }
            seqs
        }));
    }
    let mut all_acked = Vec::new();
    for t in tasks {
        let seqs = t.await.unwrap();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "one socket's sends keep their order"
        );
        all_acked.extend(seqs);
    }
    all_acked.sort();
    let want: Vec<u64> = (2..2 + 3 * N as u64).collect();
    assert_eq!(
        all_acked, want,
        "seq 1 is the group's member_joined; then gap-free"
    );
    // The watcher got every event pushed, in seq order, without gaps.
    let mut seen = Vec::new();
    while seen.len() < 3 * N {
        let e = watcher.expect("event").await;
        let seq = e["event"]["seq"].as_u64().unwrap();
        // The group's own seq-1 event was committed before this socket
        // connected; whether its push still reaches the socket is a race
        // (a client's cursor drops it), so only what follows is compared.
        if seq > 1 {
            seen.push(seq);
        }
    }
    assert_eq!(seen, want);
}

#[tokio::test]
async fn ack_and_sync() {
    let s = TestServer::start_with(|c| c.limits.new_device_backfill = 3).await;
    let a = User::new(&s, "alice", "d").await;
    let b = User::new(&s, "bob", "phone").await;
    let conv = a.direct(&b).await;
    let mut wa = a.ws(&s).await;
    for i in 1..=5 {
        assert_eq!(wa.send_msg(&conv, &format!("m{i}"), "x").await["seq"], i);
    }
    // Bob's first device ever: the last new_device_backfill events.
    let mut wb = b.ws(&s).await;
    wb.send(json!({"type": "sync", "id": 1})).await;
    let r = wb.expect("sync_result").await;
    assert_eq!(r["id"], 1);
    let c0 = &r["conversations"][0];
    assert_eq!(c0["conv_id"], conv.as_str());
    assert_eq!(c0["last_seq"], 5);
    assert_eq!(c0["unread"], 5);
    assert_eq!(c0["read_seq"], 0);
    let seqs: Vec<u64> = c0["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [3, 4, 5]);

    // Paging with cursors: limit 2 from seq 0.
    wb.send(json!({"type": "sync", "id": 2, "limit": 2, "cursors": [{"conv_id": conv, "after_seq": 0}]})).await;
    let r = wb.expect("sync_result").await;
    assert_eq!(r["has_more"], true);
    assert_eq!(r["conversations"][0]["has_more"], true);
    assert_eq!(r["conversations"][0]["events"].as_array().unwrap().len(), 2);
    let mut cursors = BTreeMap::from([(conv.clone(), 0)]);
    let all = wb.sync_all(&mut cursors).await;
    assert_eq!(all.len(), 5);

    // An ack moves where a cursor-less sync starts.
    wb.send(json!({"type": "ack", "conv_id": conv, "seq": 4}))
        .await;
    wb.send(json!({"type": "ping", "id": "after-ack"})).await;
    wb.expect("pong").await;
    wb.send(json!({"type": "sync", "id": 3})).await;
    let r = wb.expect("sync_result").await;
    let evs = r["conversations"][0]["events"].as_array().unwrap();
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0]["seq"], 5);
    // An ack above last_seq is clamped: then nothing is left to sync.
    wb.send(json!({"type": "ack", "conv_id": conv, "seq": 999}))
        .await;
    wb.send(json!({"type": "sync", "id": 4})).await;
    let r = wb.expect("sync_result").await;
    assert_eq!(r["conversations"], json!([]));
    assert_eq!(r["has_more"], false);

    // A new device of a user who synced before... is still a new device:
    // its first sync is the backfill.
    let b2 = b.device(&s, "tablet").await;
    let mut wb2 = b2.ws(&s).await;
    wb2.send(json!({"type": "sync", "id": 5})).await;
    let r = wb2.expect("sync_result").await;
    assert_eq!(r["conversations"][0]["events"].as_array().unwrap().len(), 3);

    // A device that synced before and then joins a group gets the group
    // from the join on (rule 11).
    let g = a.group("later", &[]).await;
    wa.send_msg(&g, "before-join", "x").await;
    let r = a
        .http
        .post(
            &format!("/v1/conversations/{g}/members"),
            json!({"user_ids": [b.id]}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    wb2.send(json!({"type": "sync", "id": 6})).await;
    let r = wb2
        .expect_where(|v| v["type"] == "sync_result" && v["id"] == 6)
        .await;
    let gconv = r["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["conv_id"] == g.as_str())
        .unwrap();
    let seqs: Vec<u64> = gconv["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [3], "only the member_joined that added bob");
}

#[tokio::test]
async fn history_paging_rules() {
    let s = TestServer::start().await;
    let a = User::new(&s, "alice", "d").await;
    let b = User::new(&s, "bob", "d").await;
    let conv = a.direct(&b).await;
    let mut wa = a.ws(&s).await;
    for i in 1..=7 {
        wa.send_msg(&conv, &format!("m{i}"), &format!("{i}")).await;
    }
    let get = |q: &str| {
        let h = a.http.clone();
        let path = format!("/v1/conversations/{conv}/events{q}");
        async move { h.get(&path).await }
    };
    let seqs = |r: &tokenim_testkit::Resp| -> Vec<u64> {
        r.body["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["seq"].as_u64().unwrap())
            .collect()
    };
    let r = get("?limit=3").await;
    assert_eq!(seqs(&r), [5, 6, 7]);
    let r = get("?after_seq=2&limit=3").await;
    assert_eq!(
        (seqs(&r), r.body["has_more"].clone()),
        (vec![3, 4, 5], json!(true))
    );
    let r = get("?after_seq=5&limit=3").await;
    assert_eq!(
        (seqs(&r), r.body["has_more"].clone()),
        (vec![6, 7], json!(false))
    );
    let r = get("?before_seq=5&limit=2").await;
    assert_eq!(
        (seqs(&r), r.body["has_more"].clone()),
        (vec![3, 4], json!(true))
    );
    let r = get("?before_seq=3&limit=5").await;
    assert_eq!(
        (seqs(&r), r.body["has_more"].clone()),
        (vec![1, 2], json!(false))
    );
    assert_eq!(get("?after_seq=1&before_seq=5").await.status, 400);
    assert_eq!(get("?limit=0").await.status, 400);
    assert_eq!(get("?limit=-2").await.status, 400);
    assert_eq!(get("?limit=abc").await.status, 400);
    assert_eq!(seqs(&get("?limit=100000").await).len(), 7);
}

#[tokio::test]
async fn unread_and_read_markers() {
    let s = TestServer::start().await;
    let a = User::new(&s, "alice", "d").await;
    let b = User::new(&s, "bob", "d").await;
    let b2 = b.device(&s, "d2").await;
    let conv = a.direct(&b).await;
    let mut wa = a.ws(&s).await;
    for i in 1..=4 {
        wa.send_msg(&conv, &format!("m{i}"), "x").await;
    }
    let list = b.http.get("/v1/conversations").await.body;
    assert_eq!(list["conversations"][0]["unread"], 4);
    assert_eq!(list["conversations"][0]["last_seq"], 4);
    assert_eq!(list["conversations"][0]["last_event"]["seq"], 4);
    let alist = a.http.get("/v1/conversations").await.body;
    assert_eq!(
        alist["conversations"][0]["unread"], 0,
        "own messages are read"
    );
    assert_eq!(alist["conversations"][0]["read_seq"], 4);

    let mut wb = b.ws(&s).await;
    let mut wb2 = b2.ws(&s).await;
    wb.send(json!({"type": "read", "conv_id": conv, "seq": 3}))
        .await;
    let r = wa.expect("receipt").await;
    assert_eq!(
        r,
        json!({"type": "receipt", "conv_id": conv, "user_id": b.id, "read_seq": 3})
    );
    assert_eq!(wb2.expect("receipt").await["read_seq"], 3);
    let list = b.http.get(&format!("/v1/conversations/{conv}")).await.body;
    assert_eq!(
        (list["read_seq"].as_u64(), list["unread"].as_u64()),
        (Some(3), Some(1))
    );
    // Never back; clamped to last_seq.
    wb.send(json!({"type": "read", "conv_id": conv, "seq": 1}))
        .await;
    wb.send(json!({"type": "read", "conv_id": conv, "seq": 100}))
        .await;
    assert_eq!(wa.expect("receipt").await["read_seq"], 4);
    let c = b.http.get(&format!("/v1/conversations/{conv}")).await.body;
    assert_eq!(
        (c["read_seq"].as_u64(), c["unread"].as_u64()),
        (Some(4), Some(0))
    );
    // A read of a conversation one is not in: an error with the id.
    wb.send(json!({"type": "read", "id": "r1", "conv_id": "c_nope", "seq": 1}))
        .await;
    let e = wb.expect("error").await;
    assert_eq!(
        (e["id"].as_str(), e["code"].as_str()),
        (Some("r1"), Some("not_found"))
    );
}

#[tokio::test]
async fn rate_limits() {
    let s = TestServer::start_with(|c| {
        c.limits.send_rate_per_sec = 1;
        c.limits.send_burst = 3;
        c.limits.login_rate_per_min = 1;
        c.limits.login_burst = 4;
    })
    .await;
    let a = User::new(&s, "alice", "d").await; // 2 login-limited requests
    let b = User::new(&s, "bob", "d").await; // 2 more
    let conv = a.direct(&b).await;
    let mut wa = a.ws(&s).await;
    for i in 0..3 {
        assert_eq!(
            wa.send_msg(&conv, &format!("ok{i}"), "x").await["type"],
            "send_ack"
        );
    }
    // Repeats count too.
    let e = wa.send_msg(&conv, "ok0", "x").await;
    assert_eq!(e["code"], "rate_limited");
    assert!(e["retry_after_ms"].as_u64().unwrap() > 0);
    let r = a
        .http
        .post(
            &format!("/v1/conversations/{conv}/messages"),
            json!({"client_msg_id": "h", "content": text("x")}),
        )
        .await;
    assert_eq!((r.status, r.code()), (429, "rate_limited"));
    assert!(r.body["error"]["retry_after_ms"].as_u64().unwrap() > 0);
    assert_eq!(r.retry_after.as_deref(), Some("1"));
    let r = s
        .client()
        .post("/v1/sessions", json!({"username": "alice", "password": "password1", "device_id": "x", "platform": "cli"}))
        .await;
    assert_eq!((r.status, r.code()), (429, "rate_limited"));
    assert!(r.retry_after.is_some());
}

#[tokio::test]
async fn restart_keeps_everything_acked() {
    let mut s = TestServer::start().await;
    let a = User::new(&s, "alice", "d").await;
    let b = User::new(&s, "bob", "d").await;
    let conv = a.direct(&b).await;
    let mut wa = a.ws(&s).await;
    let mut acks = Vec::new();
    for i in 0..20 {
        acks.push(wa.send_msg(&conv, &format!("m{i}"), &format!("{i}")).await);
    }
    let mut wb = b.ws(&s).await;
    wb.send(json!({"type": "ack", "conv_id": conv, "seq": 15}))
        .await;
    wb.send(json!({"type": "read", "conv_id": conv, "seq": 12}))
        .await;
    wb.send(json!({"type": "ping", "id": 1})).await;
    wb.expect("pong").await;
    s.restart().await;
    assert_eq!(
        wa.closed().await,
        Closed::Code(1001),
        "a clean close on shutdown"
    );
    // Tokens survive the restart; so do acks, read markers and dedup.
    assert_eq!(a.http.get("/v1/me").await.status, 200);
    let mut wa = a.ws(&s).await;
    let again = wa.send_msg(&conv, "m7", "other").await;
    assert_eq!(again["msg_id"], acks[7]["msg_id"]);
    assert_eq!(again["seq"], acks[7]["seq"]);
    let hist = b
        .http
        .get(&format!(
            "/v1/conversations/{conv}/events?after_seq=0&limit=100"
        ))
        .await;
    let evs = hist.body["events"].as_array().unwrap();
    assert_eq!(evs.len(), 20);
    for (i, e) in evs.iter().enumerate() {
        assert_eq!(e["seq"], acks[i]["seq"]);
        assert_eq!(e["msg_id"], acks[i]["msg_id"]);
    }
    let c = b.http.get(&format!("/v1/conversations/{conv}")).await.body;
    assert_eq!(c["read_seq"], 12);
    let mut wb = b.ws(&s).await;
    wb.send(json!({"type": "sync", "id": 1})).await;
    let r = wb.expect("sync_result").await;
    let seqs: Vec<u64> = r["conversations"][0]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (16..=20).collect::<Vec<u64>>());
    // The next send continues the sequence.
    assert_eq!(wa.send_msg(&conv, "after", "x").await["seq"], 21);
}

#[tokio::test]
async fn slow_consumer_is_kicked_and_loses_nothing() {
    let s = TestServer::start().await;
    let a = User::new(&s, "alice", "d").await;
    let b = User::new(&s, "bob", "d").await;
    let conv = a.direct(&b).await;
    // Bob connects with a small receive buffer and then does not read.
    let mut wb = Ws::connect_slow(s.addr, &s.ws, b.http.token()).await;
    let mut wa = a.ws(&s).await;
    let pad = "p".repeat(4000);
    const N: usize = 20_000;
    let mut kicked_at = None;
    for i in 0..N {
        wa.send(
            json!({"type": "send", "id": i, "conv_id": conv, "client_msg_id": format!("s{i}"),
                       "content": {"type": "text", "text": pad}}),
        )
        .await;
        if i % 200 == 199 {
            // Wait for the acks so far, keeping the sender in step.
            wa.expect_where(|v| v["type"] == "send_ack" && v["id"] == i)
                .await;
            wa.clear();
            if s.app()
                .metrics
                .slow_consumer_kicks
                .load(std::sync::atomic::Ordering::Relaxed)
                > 0
            {
                kicked_at = Some(i);
                break;
            }
        }
    }
    assert!(kicked_at.is_some(), "a socket that never reads is kicked");
    let last = kicked_at.unwrap() as u64 + 1;
    // Bob reads what reached his socket before the kick: events in order,
    // then (if it got through) the kick, then the end of the socket.
    let mut prev = 0;
    while let Ok(v) = wb.try_recv(tokenim_testkit::WAIT).await {
        match v["type"].as_str() {
            Some("event") => {
                let seq = v["event"]["seq"].as_u64().unwrap();
                assert_eq!(seq, prev + 1, "no gap before the kick");
                prev = seq;
            }
            Some("kicked") => assert_eq!(v["reason"], "slow_consumer"),
            other => panic!("unexpected frame {other:?}"),
        }
    }
    // He reconnects and syncs: every event, once, in order.
    let mut wb = b.ws(&s).await;
    let mut cursors = BTreeMap::from([(conv.clone(), 0)]);
    let all = wb.sync_all(&mut cursors).await;
    let seqs: Vec<u64> = all.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=last).collect::<Vec<u64>>());
}

/// Behind a trusted load balancer the login limit counts the client named by
/// `X-Forwarded-For`, not the balancer; from anyone else the header is
/// ignored (a client cannot dodge the limit by forging it).
#[tokio::test]
async fn login_limit_per_forwarded_client_behind_trusted_proxy() {
    async fn logins(s: &TestServer, forwarded_for: &str, n: usize) -> Vec<u16> {
        let http = reqwest::Client::new();
        let mut out = Vec::new();
        for _ in 0..n {
            let r = http
                .post(format!("{}/v1/sessions", s.http))
                .header("x-forwarded-for", forwarded_for)
                .json(&json!({"username": "nobody", "password": "wrong-password",
                              "device_id": "d", "platform": "web"}))
                .send()
                .await
                .unwrap();
            out.push(r.status().as_u16());
        }
        out
    }
    let limits = |c: &mut tokenim_server::Config| {
        c.limits.login_rate_per_min = 1;
        c.limits.login_burst = 2;
    };
    let trusted = TestServer::start_with(|c| {
        limits(c);
        c.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    })
    .await;
    assert_eq!(
        logins(&trusted, "10.0.0.1", 3).await,
        [401, 401, 429],
        "one forwarded client is limited"
    );
    assert_eq!(
        logins(&trusted, "10.0.0.2, 127.0.0.1", 2).await,
        [401, 401],
        "another forwarded client has its own bucket"
    );
    let untrusted = TestServer::start_with(limits).await;
    assert_eq!(logins(&untrusted, "10.0.0.1", 2).await, [401, 401]);
    assert_eq!(
        logins(&untrusted, "10.0.0.2", 1).await,
        [429],
        "the header of an untrusted peer is ignored"
    );
}
