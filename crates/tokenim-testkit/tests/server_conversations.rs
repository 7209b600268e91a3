//! The server API's conversations (PROTOCOL-INTEGRATION I1.4, I-8..I-10)
//! over real HTTP and WebSocket: conversations under chosen IDs, members
//! changed by the app's backend, system messages and messages posted as a
//! member, pushed in order with the members' own sends, and history.
//!
//! long: one suite for the server API's conversation routes; each test is
//! independent.

use serde_json::{Value, json};
use tokenim_testkit::{Http, TestServer, User, Ws};

/// The app's backend: the test server's `admin` key.
fn backend(s: &TestServer) -> Http {
    s.client().with_token("test-admin")
}

fn text(t: &str) -> Value {
    json!({"type": "text", "text": t})
}

/// The next pushed event on `ws` (other frames are kept).
async fn next_event(ws: &mut Ws) -> Value {
    ws.expect("event").await["event"].clone()
}

async fn create(b: &Http, body: Value) -> Value {
    let r = b.post("/v1/server/conversations", body.clone()).await;
    assert_eq!(r.status, 201, "{body}: {:?}", r.body);
    r.body
}

async fn post(b: &Http, conv: &str, body: Value) -> tokenim_testkit::Resp {
    b.post(&format!("/v1/server/conversations/{conv}/messages"), body)
        .await
}

fn has(v: &Value, key: &str) -> bool {
    v.get(key).is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_and_member_messages_arrive_in_order_with_own_sends() {
    let s = TestServer::start().await;
    let b = backend(&s);
    let alice = User::new(&s, "alice", "phone").await;
    let bob = User::new(&s, "bob", "phone").await;
    let carol = User::new(&s, "carol", "phone").await;
    let mut bob_ws = bob.ws(&s).await;
    let mut carol_ws = carol.ws(&s).await;
    let mut alice_ws = alice.ws(&s).await;

    let conv = create(
        &b,
        json!({"type": "group", "title": "news", "owner": alice.id,
               "members": [bob.id, carol.id, alice.id], "conv_id": "team:1"}),
    )
    .await;
    assert_eq!(conv["conv_id"], "team:1");
    assert_eq!(
        (conv["type"].clone(), conv["last_seq"].clone()),
        (json!("group"), json!(1))
    );
    assert_eq!(conv["member_count"], 3);
    for k in ["read_seq", "unread", "notifications"] {
        assert!(!has(&conv, k), "no per-user {k}: {conv}");
    }
    let owner = conv["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["user_id"] == alice.id.as_str())
        .unwrap()
        .clone();
    assert_eq!(owner["role"], "owner");

    // The members are told, and the first event is made by no one.
    let added = bob_ws.expect("conv_added").await;
    assert_eq!(added["conversation"]["conv_id"], "team:1");
    let joined = next_event(&mut bob_ws).await;
    assert_eq!(
        (joined["seq"].clone(), joined["kind"].clone()),
        (json!(1), json!("member_joined"))
    );
    assert_eq!(joined["system"], true);
    assert!(
        !has(&joined, "sender") && !has(&joined, "sender_device"),
        "{joined}"
    );
    assert!(!has(&joined["content"], "by"), "{joined}");
    assert_eq!(
        joined["content"]["user_ids"][0],
        alice.id.as_str(),
        "owner first"
    );
    next_event(&mut carol_ws).await;
    next_event(&mut alice_ws).await;

    // Own sends, a system message and one posted as carol, interleaved.
    let a1 = alice_ws.send_msg("team:1", "a1", "first").await;
    assert_eq!(
        (a1["type"].clone(), a1["seq"].clone()),
        (json!("send_ack"), json!(2))
    );
    let sys = post(
        &b,
        "team:1",
        json!({"client_msg_id": "n1", "content": text("notice")}),
    )
    .await;
    assert_eq!(sys.status, 201, "{:?}", sys.body);
    assert_eq!(sys.body["seq"], 3);
    assert!(sys.body["msg_id"].is_string() && sys.body["ts"].is_i64());
    let as_carol = post(
        &b,
        "team:1",
        json!({"as": carol.id, "client_msg_id": "c1", "content": text("from carol")}),
    )
    .await;
    assert_eq!(
        (as_carol.status, as_carol.body["seq"].clone()),
        (201, json!(4))
    );
    let a2 = alice_ws.send_msg("team:1", "a2", "second").await;
    assert_eq!(a2["seq"], 5);

    // Bob sees the four in seq order, each as it was made.
    let got: Vec<Value> = [0; 4].iter().map(|_| Value::Null).collect();
    let mut got = got;
    for slot in got.iter_mut() {
        *slot = next_event(&mut bob_ws).await;
    }
    let seqs: Vec<u64> = got.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, vec![2, 3, 4, 5]);
    assert_eq!(got[0]["sender"], alice.id.as_str());
    assert_eq!(got[0]["sender_device"], "phone");
    assert!(!has(&got[0], "system"), "{}", got[0]);
    let notice = &got[1];
    assert_eq!(notice["system"], true);
    assert!(
        !has(notice, "sender") && !has(notice, "sender_device"),
        "{notice}"
    );
    assert_eq!(notice["client_msg_id"], "n1");
    assert_eq!(notice["content"], text("notice"));
    assert_eq!(notice["msg_id"], sys.body["msg_id"]);
    let theirs = &got[2];
    assert_eq!(theirs["sender"], carol.id.as_str());
    assert!(
        !has(theirs, "sender_device") && !has(theirs, "system"),
        "{theirs}"
    );
    assert_eq!(theirs["content"], text("from carol"));
    assert_eq!(got[3]["content"], text("second"));

    // Carol's own devices get the message posted as her; alice gets all
    // but her own.
    let mut carol_seqs = Vec::new();
    for _ in 0..4 {
        carol_seqs.push(next_event(&mut carol_ws).await["seq"].as_u64().unwrap());
    }
    assert_eq!(carol_seqs, vec![2, 3, 4, 5]);
    let mut alice_seqs = Vec::new();
    for _ in 0..2 {
        alice_seqs.push(next_event(&mut alice_ws).await["seq"].as_u64().unwrap());
    }
    assert_eq!(alice_seqs, vec![3, 4]);

    // Posting as carol moved her read marker like her own sends; the
    // system message is unread for the others.
    let cc = carol.http.get("/v1/conversations/team:1").await;
    assert_eq!(cc.body["read_seq"], 4, "{:?}", cc.body);
    let bc = bob.http.get("/v1/conversations/team:1").await;
    assert_eq!(bc.body["unread"], 4, "{:?}", bc.body);
    // History shows the same events.
    let h = bob.http.get("/v1/conversations/team:1/events").await;
    assert_eq!(h.body["events"][2], *notice);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_client_msg_id_returns_the_original() {
    let s = TestServer::start().await;
    let b = backend(&s);
    let alice = User::new(&s, "alice", "phone").await;
    let bob = User::new(&s, "bob", "phone").await;
    let conv = create(
        &b,
        json!({"type": "group", "owner": alice.id, "members": [bob.id]}),
    )
    .await["conv_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(conv.starts_with("c_"), "a server-made ID: {conv}");
    let other = create(&b, json!({"type": "group", "owner": alice.id})).await["conv_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut bob_ws = bob.ws(&s).await;
    let mut alice_ws = alice.ws(&s).await;

    // A system message, twice.
    let first = post(
        &b,
        &conv,
        json!({"client_msg_id": "k", "content": text("x")}),
    )
    .await;
    assert_eq!(first.status, 201);
    let again = post(
        &b,
        &conv,
        json!({"client_msg_id": "k", "content": text("other")}),
    )
    .await;
    assert_eq!(again.status, 200, "{:?}", again.body);
    assert_eq!(again.body, first.body, "the original msg_id, seq and ts");

    // As a member, twice.
    let m1 = post(
        &b,
        &conv,
        json!({"as": bob.id, "client_msg_id": "b1", "content": text("b")}),
    )
    .await;
    assert_eq!((m1.status, m1.body["seq"].clone()), (201, json!(3)));
    let m2 = post(
        &b,
        &conv,
        json!({"as": bob.id, "client_msg_id": "b1", "content": text("b")}),
    )
    .await;
    assert_eq!((m2.status, m2.body.clone()), (200, m1.body.clone()));

    // Alice's own socket send, then the backend's as alice with the same ID.
    let ack = alice_ws.send_msg(&conv, "a1", "mine").await;
    assert_eq!(ack["seq"], 4);
    let r = post(
        &b,
        &conv,
        json!({"as": alice.id, "client_msg_id": "a1", "content": text("dup")}),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        (
            r.body["msg_id"].clone(),
            r.body["seq"].clone(),
            r.body["ts"].clone()
        ),
        (ack["msg_id"].clone(), ack["seq"].clone(), ack["ts"].clone())
    );
    // ...and alice repeating over the socket what the backend posted as her.
    let r = post(
        &b,
        &conv,
        json!({"as": alice.id, "client_msg_id": "a2", "content": text("p")}),
    )
    .await;
    assert_eq!(r.status, 201);
    let ack = alice_ws.send_msg(&conv, "a2", "p").await;
    assert_eq!(
        (ack["seq"].clone(), ack["msg_id"].clone()),
        (r.body["seq"].clone(), r.body["msg_id"].clone())
    );

    // The system's IDs are apart from the users': "a1" is new for it.
    let sys_a1 = post(
        &b,
        &conv,
        json!({"client_msg_id": "a1", "content": text("s")}),
    )
    .await;
    assert_eq!((sys_a1.status, sys_a1.body["seq"].clone()), (201, json!(6)));
    // An ID reused in another conversation is a conflict (rule 7).
    let r = post(
        &b,
        &other,
        json!({"client_msg_id": "k", "content": text("x")}),
    )
    .await;
    assert_eq!((r.status, r.code()), (409, "conflict"));
    let r = post(
        &b,
        &other,
        json!({"as": alice.id, "client_msg_id": "a1", "content": text("x")}),
    )
    .await;
    assert_eq!((r.status, r.code()), (409, "conflict"));

    // No repeat made an event: bob got exactly seqs 2..=6, then the marker.
    let marker = post(
        &b,
        &conv,
        json!({"client_msg_id": "end", "content": text("end")}),
    )
    .await;
    assert_eq!(marker.body["seq"], 7);
    let mut seqs = Vec::new();
    for _ in 0..6 {
        seqs.push(next_event(&mut bob_ws).await["seq"].as_u64().unwrap());
    }
    assert_eq!(seqs, vec![2, 3, 4, 5, 6, 7]);
    let page = b
        .get(&format!("/v1/server/conversations/{conv}/events"))
        .await;
    assert_eq!(page.body["events"].as_array().unwrap().len(), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversations_under_chosen_ids() {
    let s = TestServer::start().await;
    let b = backend(&s);
    let alice = User::new(&s, "alice", "phone").await;
    let bob = User::new(&s, "bob", "phone").await;
    let carol = User::new(&s, "carol", "phone").await;
    let mut bob_ws = bob.ws(&s).await;
    let path = "/v1/server/conversations";

    let dm = create(
        &b,
        json!({"type": "direct", "members": [alice.id, bob.id], "conv_id": "dm:a.b"}),
    )
    .await;
    assert_eq!(
        (dm["conv_id"].clone(), dm["type"].clone()),
        (json!("dm:a.b"), json!("direct"))
    );
    assert_eq!(
        (dm["member_count"].clone(), dm["last_seq"].clone()),
        (json!(2), json!(0))
    );
    assert!(!has(&dm, "read_seq") && !has(&dm, "unread"), "{dm}");
    let told = bob_ws.expect("conv_added").await;
    assert_eq!(told["conversation"]["conv_id"], "dm:a.b");
    // The users see it as theirs.
    let r = alice.http.get("/v1/conversations/dm:a.b").await;
    assert_eq!((r.status, r.body["type"].clone()), (200, json!("direct")));
    // The user route finds the same conversation.
    assert_eq!(alice.direct(&bob).await, "dm:a.b");

    // Again: 200, the same; also in the other order and without an ID.
    for body in [
        json!({"type": "direct", "members": [alice.id, bob.id], "conv_id": "dm:a.b"}),
        json!({"type": "direct", "members": [bob.id, alice.id], "conv_id": "dm:a.b"}),
        json!({"type": "direct", "members": [bob.id, alice.id]}),
    ] {
        let r = b.post(path, body.clone()).await;
        assert_eq!(r.status, 200, "{body}: {:?}", r.body);
        assert_eq!(r.body["conv_id"], "dm:a.b");
    }
    // The pair under another ID, the ID for another pair or a group.
    for body in [
        json!({"type": "direct", "members": [alice.id, bob.id], "conv_id": "dm:other"}),
        json!({"type": "direct", "members": [alice.id, carol.id], "conv_id": "dm:a.b"}),
        json!({"type": "group", "owner": alice.id, "conv_id": "dm:a.b"}),
    ] {
        let r = b.post(path, body.clone()).await;
        assert_eq!(
            (r.status, r.code()),
            (409, "conflict"),
            "{body}: {:?}",
            r.body
        );
    }

    let g = create(
        &b,
        json!({"type": "group", "title": "crew", "owner": alice.id, "members": [bob.id],
               "conv_id": "crew-7"}),
    )
    .await;
    assert_eq!(
        (g["title"].clone(), g["member_count"].clone()),
        (json!("crew"), json!(2))
    );
    // Again, even with other fields: 200 with it unchanged.
    let r = b
        .post(
            path,
            json!({"type": "group", "title": "renamed", "owner": carol.id, "conv_id": "crew-7"}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        (r.body["title"].clone(), r.body["member_count"].clone()),
        (json!("crew"), json!(2))
    );
    assert_eq!(r.body["last_seq"], 1);
    let r = b
        .post(
            path,
            json!({"type": "direct", "members": [alice.id, carol.id], "conv_id": "crew-7"}),
        )
        .await;
    assert_eq!((r.status, r.code()), (409, "conflict"));

    // Bad IDs and bodies.
    let long = "x".repeat(65);
    for id in ["c_mine", "c_", "", "has space", "a/b", "é", long.as_str()] {
        for body in [
            json!({"type": "direct", "members": [alice.id, carol.id], "conv_id": id}),
            json!({"type": "group", "owner": alice.id, "conv_id": id}),
        ] {
            let r = b.post(path, body.clone()).await;
            assert_eq!(
                (r.status, r.code()),
                (400, "bad_request"),
                "{body}: {:?}",
                r.body
            );
        }
    }
    let max = "y".repeat(64);
    let r = b
        .post(
            path,
            json!({"type": "group", "owner": alice.id, "conv_id": max}),
        )
        .await;
    assert_eq!(r.status, 201, "64 characters are allowed: {:?}", r.body);
    for body in [
        json!({"type": "direct", "members": [alice.id]}),
        json!({"type": "direct", "members": [alice.id, bob.id, carol.id]}),
        json!({"type": "group", "members": [alice.id]}),
        json!({"type": "channel", "members": [alice.id]}),
    ] {
        let r = b.post(path, body.clone()).await;
        assert_eq!(
            (r.status, r.code()),
            (400, "bad_request"),
            "{body}: {:?}",
            r.body
        );
    }
    for body in [
        json!({"type": "direct", "members": [alice.id, "u_nobody"]}),
        json!({"type": "group", "owner": "u_nobody"}),
        json!({"type": "group", "owner": alice.id, "members": ["u_nobody"]}),
    ] {
        let r = b.post(path, body.clone()).await;
        assert_eq!(
            (r.status, r.code()),
            (404, "not_found"),
            "{body}: {:?}",
            r.body
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backend_changes_members_without_by() {
    let s = TestServer::start().await;
    let b = backend(&s);
    let alice = User::new(&s, "alice", "phone").await;
    let bob = User::new(&s, "bob", "phone").await;
    let carol = User::new(&s, "carol", "phone").await;
    create(
        &b,
        json!({"type": "group", "owner": alice.id, "members": [bob.id], "conv_id": "g1"}),
    )
    .await;
    let mut bob_ws = bob.ws(&s).await;
    let mut carol_ws = carol.ws(&s).await;
    let members = "/v1/server/conversations/g1/members";

    let r = b.post(members, json!({"user_ids": [carol.id]})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        (r.body["conv_id"].clone(), r.body["member_count"].clone()),
        (json!("g1"), json!(3))
    );
    assert_eq!(r.body["last_seq"], 2);
    assert!(!has(&r.body, "read_seq"), "{:?}", r.body);
    let added = carol_ws.expect("conv_added").await;
    assert_eq!(added["conversation"]["conv_id"], "g1");
    for ws in [&mut bob_ws, &mut carol_ws] {
        let e = next_event(ws).await;
        assert_eq!(
            (e["seq"].clone(), e["kind"].clone()),
            (json!(2), json!("member_joined"))
        );
        assert_eq!(e["system"], true);
        assert!(!has(&e, "sender") && !has(&e, "sender_device"), "{e}");
        assert_eq!(e["content"], json!({"user_ids": [carol.id]}), "no by");
    }
    // Adding members who are all in already changes nothing.
    let r = b
        .post(members, json!({"user_ids": [carol.id, bob.id]}))
        .await;
    assert_eq!((r.status, r.body["last_seq"].clone()), (200, json!(2)));
    let r = b.post(members, json!({"user_ids": []})).await;
    assert_eq!(r.status, 400);
    let r = b.post(members, json!({"user_ids": ["u_nobody"]})).await;
    assert_eq!((r.status, r.code()), (404, "not_found"));

    // Removing bob: an event without by for the members left, and bob is
    // told he is out (as when a user removes him).
    let r = b.delete(&format!("{members}/{}", bob.id)).await;
    assert_eq!(r.status, 204, "{:?}", r.body);
    let e = next_event(&mut carol_ws).await;
    assert_eq!(
        (e["seq"].clone(), e["kind"].clone()),
        (json!(3), json!("member_removed"))
    );
    assert_eq!(e["system"], true);
    assert!(!has(&e, "sender") && !has(&e, "sender_device"), "{e}");
    assert_eq!(e["content"], json!({"user_id": bob.id}), "no by");
    assert_eq!(bob_ws.expect("conv_removed").await["conv_id"], "g1");
    let r = bob.http.get("/v1/conversations/g1").await;
    assert_eq!(r.status, 404);
    let r = b.delete(&format!("{members}/{}", bob.id)).await;
    assert_eq!((r.status, r.code()), (404, "not_found"), "not a member");

    // The owner stays while the group has anyone else...
    let r = b.delete(&format!("{members}/{}", alice.id)).await;
    assert_eq!((r.status, r.code()), (403, "forbidden"));
    // ...and may be removed once alone.
    let r = b.delete(&format!("{members}/{}", carol.id)).await;
    assert_eq!(r.status, 204);
    let r = b.delete(&format!("{members}/{}", alice.id)).await;
    assert_eq!(r.status, 204, "{:?}", r.body);
    let r = b.get("/v1/server/conversations/g1/events").await;
    assert_eq!(r.body["events"].as_array().unwrap().len(), 5);

    // A direct conversation's members never change.
    create(
        &b,
        json!({"type": "direct", "members": [alice.id, bob.id], "conv_id": "d1"}),
    )
    .await;
    let r = b
        .post(
            "/v1/server/conversations/d1/members",
            json!({"user_ids": [carol.id]}),
        )
        .await;
    assert_eq!((r.status, r.code()), (403, "forbidden"));
    let r = b
        .delete(&format!("/v1/server/conversations/d1/members/{}", bob.id))
        .await;
    assert_eq!((r.status, r.code()), (403, "forbidden"));
    // Unknown conversations.
    let r = b
        .post(
            "/v1/server/conversations/nope/members",
            json!({"user_ids": [carol.id]}),
        )
        .await;
    assert_eq!((r.status, r.code()), (404, "not_found"));
    let r = b.delete("/v1/server/conversations/nope/members/x").await;
    assert_eq!(r.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_routes_skip_user_rules_but_not_the_fixed_ones() {
    let s = TestServer::start_with(|c| {
        c.limits.max_group_members = 3;
        c.limits.send_rate_per_sec = 1;
        c.limits.send_burst = 1;
    })
    .await;
    let b = backend(&s);
    let alice = User::new(&s, "alice", "phone").await;
    let bob = User::new(&s, "bob", "phone").await;
    let carol = User::new(&s, "carol", "phone").await;
    let dave = User::new(&s, "dave", "phone").await;

    // max_group_members, at creation and when adding.
    let r = b
        .post(
            "/v1/server/conversations",
            json!({"type": "group", "owner": alice.id, "members": [bob.id, carol.id, dave.id]}),
        )
        .await;
    assert_eq!((r.status, r.code()), (403, "forbidden"));
    create(
        &b,
        json!({"type": "group", "owner": alice.id, "members": [bob.id, carol.id], "conv_id": "g"}),
    )
    .await;
    let r = b
        .post(
            "/v1/server/conversations/g/members",
            json!({"user_ids": [dave.id]}),
        )
        .await;
    assert_eq!((r.status, r.code()), (403, "forbidden"));

    // Only admins may send, bob is muted, and over his rate limit: the
    // backend posts as him all the same.
    let r = alice
        .http
        .patch("/v1/conversations/g", json!({"only_admins_send": true}))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = alice
        .http
        .put(
            &format!("/v1/conversations/g/members/{}/mute", bob.id),
            Some(json!({"until": 99_999_999_999_999i64})),
        )
        .await;
    assert_eq!(r.status, 204);
    let r = bob
        .http
        .post(
            "/v1/conversations/g/messages",
            json!({"client_msg_id": "own", "content": text("x")}),
        )
        .await;
    assert_eq!(r.status, 403, "bob himself may not: {:?}", r.body);
    for i in 0..4 {
        let r = post(
            &b,
            "g",
            json!({"as": bob.id, "client_msg_id": format!("as{i}"), "content": text("hi")}),
        )
        .await;
        assert_eq!(r.status, 201, "as bob #{i}: {:?}", r.body);
        let r = post(
            &b,
            "g",
            json!({"client_msg_id": format!("s{i}"), "content": text("s")}),
        )
        .await;
        assert_eq!(r.status, 201, "system #{i}: {:?}", r.body);
    }

    // A block does not stop the backend.
    create(
        &b,
        json!({"type": "direct", "members": [alice.id, bob.id], "conv_id": "ab"}),
    )
    .await;
    let r = bob
        .http
        .put(&format!("/v1/blocks/{}", alice.id), None)
        .await;
    assert_eq!(r.status, 204);
    let r = post(
        &b,
        "ab",
        json!({"as": alice.id, "client_msg_id": "blk", "content": text("x")}),
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.body);

    // Posting as a non-member is forbidden; into nothing, not found.
    let r = post(
        &b,
        "g",
        json!({"as": dave.id, "client_msg_id": "d", "content": text("x")}),
    )
    .await;
    assert_eq!((r.status, r.code()), (403, "forbidden"));
    let r = post(
        &b,
        "g",
        json!({"as": "u_nobody", "client_msg_id": "d", "content": text("x")}),
    )
    .await;
    assert_eq!((r.status, r.code()), (403, "forbidden"));
    let r = post(
        &b,
        "nope",
        json!({"client_msg_id": "d", "content": text("x")}),
    )
    .await;
    assert_eq!((r.status, r.code()), (404, "not_found"));
    // Content and IDs are checked as a user's.
    for body in [
        json!({"client_msg_id": "bad id", "content": text("x")}),
        json!({"client_msg_id": "", "content": text("x")}),
        json!({"client_msg_id": "ok", "content": "text"}),
        json!({"client_msg_id": "ok", "content": {"text": "no type"}}),
        json!({"content": text("x")}),
    ] {
        let r = post(&b, "g", body.clone()).await;
        assert_eq!(
            (r.status, r.code()),
            (400, "bad_request"),
            "{body}: {:?}",
            r.body
        );
    }
    let big = "z".repeat(20_000);
    let r = post(
        &b,
        "g",
        json!({"client_msg_id": "big", "content": text(&big)}),
    )
    .await;
    assert_eq!((r.status, r.code()), (413, "too_large"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_an_api_key_opens_the_server_routes() {
    let s = TestServer::start().await;
    let b = backend(&s);
    let alice = User::new(&s, "alice", "phone").await;
    create(
        &b,
        json!({"type": "group", "owner": alice.id, "conv_id": "g"}),
    )
    .await;
    let routes: [(&str, &str, Option<Value>); 5] = [
        (
            "POST",
            "/v1/server/conversations",
            Some(json!({"type": "group", "owner": alice.id})),
        ),
        (
            "POST",
            "/v1/server/conversations/g/members",
            Some(json!({"user_ids": [alice.id]})),
        ),
        ("DELETE", "/v1/server/conversations/g/members/x", None),
        (
            "POST",
            "/v1/server/conversations/g/messages",
            Some(json!({"client_msg_id": "k", "content": text("x")})),
        ),
        ("GET", "/v1/server/conversations/g/events", None),
    ];
    for (method, path, body) in routes {
        for who in [
            alice.http.clone(),
            s.client(),
            s.client().with_token("not-a-key"),
        ] {
            let r = who.req(method, path, body.clone()).await;
            assert_eq!(
                (r.status, r.code()),
                (401, "unauthorized"),
                "{method} {path}"
            );
        }
    }
    // Nothing was written.
    let r = b.get("/v1/server/conversations/g/events").await;
    assert_eq!(r.body["events"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_page_like_the_user_route() {
    let s = TestServer::start().await;
    let b = backend(&s);
    let alice = User::new(&s, "alice", "phone").await;
    let bob = User::new(&s, "bob", "phone").await;
    create(
        &b,
        json!({"type": "group", "owner": alice.id, "members": [bob.id], "conv_id": "g"}),
    )
    .await;
    for i in 0..9 {
        let body = if i % 3 == 0 {
            json!({"client_msg_id": format!("k{i}"), "content": text(&i.to_string())})
        } else {
            json!({"as": alice.id, "client_msg_id": format!("k{i}"), "content": text(&i.to_string())})
        };
        assert_eq!(post(&b, "g", body).await.status, 201);
    }
    let seqs = |v: &Value| -> Vec<u64> {
        v["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["seq"].as_u64().unwrap())
            .collect()
    };
    // Every query answers what the user route answers a member.
    for q in [
        "",
        "?limit=3",
        "?before_seq=5&limit=2",
        "?after_seq=7",
        "?after_seq=2&limit=4",
        "?limit=1000",
        "?before_seq=1",
    ] {
        let server = b
            .get(&format!("/v1/server/conversations/g/events{q}"))
            .await;
        let user = bob
            .http
            .get(&format!("/v1/conversations/g/events{q}"))
            .await;
        assert_eq!(server.status, 200, "{q}: {:?}", server.body);
        assert_eq!(server.body, user.body, "{q}");
    }
    let r = b.get("/v1/server/conversations/g/events?limit=3").await;
    assert_eq!(
        (seqs(&r.body), r.body["has_more"].clone()),
        (vec![8, 9, 10], json!(true))
    );
    let r = b
        .get("/v1/server/conversations/g/events?before_seq=4&limit=5")
        .await;
    assert_eq!(
        (seqs(&r.body), r.body["has_more"].clone()),
        (vec![1, 2, 3], json!(false))
    );
    let r = b.get("/v1/server/conversations/g/events?after_seq=8").await;
    assert_eq!(
        (seqs(&r.body), r.body["has_more"].clone()),
        (vec![9, 10], json!(false))
    );
    for q in [
        "?after_seq=1&before_seq=5",
        "?limit=0",
        "?limit=-1",
        "?after_seq=x",
    ] {
        let r = b
            .get(&format!("/v1/server/conversations/g/events{q}"))
            .await;
        assert_eq!((r.status, r.code()), (400, "bad_request"), "{q}");
    }
    let r = b.get("/v1/server/conversations/nope/events").await;
    assert_eq!((r.status, r.code()), (404, "not_found"));
    // No membership needed: a conversation without members reads too.
    create(
        &b,
        json!({"type": "group", "owner": bob.id, "conv_id": "solo"}),
    )
    .await;
    let r = b
        .delete(&format!("/v1/server/conversations/solo/members/{}", bob.id))
        .await;
    assert_eq!(r.status, 204);
    let r = b.get("/v1/server/conversations/solo/events").await;
    assert_eq!(seqs(&r.body), vec![1, 2]);
}
