//! Three protocol defects found by trying the server as a new client would,
//! each checked over real sockets: rule 8 across request types (an edit,
//! recall, ack or sync pipelined behind a send sees that send), `has_more`
//! after a clamped limit on every paging path, and rule 21 (every frame
//! error echoes the frame's `id`; every `/v1` body is JSON).

use std::collections::HashMap;

use serde_json::{Value, json};
use tokenim_testkit::{Http, TestServer, User};

fn text(t: &str) -> Value {
    json!({"type": "text", "text": t})
}

#[tokio::test]
async fn requests_pipelined_behind_a_send_see_it() {
    let s = TestServer::start().await;
    let alice = User::new(&s, "alice", "d1").await;
    let bob = User::new(&s, "bob", "d1").await;
    let conv = alice.direct(&bob).await;
    let mut w = alice.ws(&s).await;
    // One message before, so the conversation's seq is not at its start.
    let first = w.send_msg(&conv, "m0", "before").await;
    assert_eq!(first["type"], "send_ack");
    let base = first["seq"].as_u64().unwrap();
    let next = base + 1;

    // Pipelined without waiting: send, then edit and recall of the seq the
    // send will get, an ack of it, then a sync from before it.
    w.send(
        json!({"type": "send", "id": "s", "conv_id": conv, "client_msg_id": "m1",
                  "content": text("hello")}),
    )
    .await;
    w.send(
        json!({"type": "edit", "id": "e", "conv_id": conv, "client_msg_id": "m2",
                  "target_seq": next, "content": text("hello, edited")}),
    )
    .await;
    w.send(
        json!({"type": "recall", "id": "r", "conv_id": conv, "client_msg_id": "m3",
                  "target_seq": next}),
    )
    .await;
    w.send(json!({"type": "ack", "conv_id": conv, "seq": next + 2}))
        .await;
    w.send(json!({"type": "sync", "id": "y", "cursors": [{"conv_id": conv, "after_seq": base}]}))
        .await;

    let mut answers: HashMap<String, Value> = HashMap::new();
    let mut order = Vec::new();
    while answers.len() < 4 {
        let f = w
            .expect_where(|v| {
                matches!(
                    v["type"].as_str(),
                    Some("send_ack" | "error" | "sync_result")
                )
            })
            .await;
        let id = f["id"].as_str().unwrap_or("").to_owned();
        order.push(id.clone());
        answers.insert(id, f);
    }
    assert_eq!(order, ["s", "e", "r", "y"], "answered in arrival order");
    assert_eq!(answers["s"]["type"], "send_ack", "{}", answers["s"]);
    assert_eq!(answers["s"]["seq"], next);
    assert_eq!(answers["e"]["type"], "send_ack", "edit: {}", answers["e"]);
    assert_eq!(answers["e"]["seq"], next + 1);
    assert_eq!(answers["r"]["type"], "send_ack", "recall: {}", answers["r"]);
    assert_eq!(answers["r"]["seq"], next + 2);
    let sync = &answers["y"];
    let events = sync["conversations"][0]["events"].as_array().unwrap();
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [next, next + 1, next + 2], "the sync sees the writes");

    // The ack was not clamped to the seq before the send: a new socket of
    // the same device, syncing from its ack, has nothing left there.
    drop(w);
    let mut w2 = alice.ws(&s).await;
    w2.send(json!({"type": "sync", "id": "z"})).await;
    let r = w2
        .expect_where(|v| v["type"] == "sync_result" && v["id"] == "z")
        .await;
    let left: Vec<&Value> = r["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["conv_id"] == conv.as_str())
        .collect();
    assert!(left.is_empty(), "the pipelined ack covered the send: {r}");
}

/// One page of a conversation's history: its seqs and its `has_more`.
async fn page(http: &Http, conv: &str, q: &str) -> (Vec<u64>, Value) {
    let r = http
        .get(&format!("/v1/conversations/{conv}/events?{q}"))
        .await;
    assert_eq!(r.status, 200, "{q}: {:?}", r.body);
    let seqs = r.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    (seqs, r.body["has_more"].clone())
}

#[tokio::test]
async fn has_more_holds_after_a_clamped_limit() {
    let s = TestServer::start().await;
    let alice = User::new(&s, "alice", "d1").await;
    let bob = User::new(&s, "bob", "d1").await;
    let conv = alice.direct(&bob).await;
    let mut w = alice.ws(&s).await;
    const N: u64 = 510;
    for i in 0..N {
        w.send(json!({"type": "send", "id": i, "conv_id": conv,
                      "client_msg_id": format!("m{i}"), "content": text("x")}))
            .await;
    }
    let last = w
        .expect_where(|v| v["type"] == "send_ack" && v["id"] == N - 1)
        .await;
    assert_eq!(last["seq"], N, "the conversation holds {N} events");

    let (seqs, more) = page(&alice.http, &conv, "after_seq=0&limit=1000").await;
    assert_eq!((seqs.len(), seqs[0], more.clone()), (500, 1, json!(true)));
    let (seqs, more) = page(&alice.http, &conv, "after_seq=500&limit=1000").await;
    assert_eq!((seqs.len(), more), (10, json!(false)));
    let (seqs, more) = page(&alice.http, &conv, "before_seq=511&limit=1000").await;
    assert_eq!((seqs.len(), seqs[0], more), (500, 11, json!(true)));
    let (seqs, more) = page(&alice.http, &conv, "before_seq=11&limit=1000").await;
    assert_eq!((seqs.len(), more), (10, json!(false)));
    // The newest page: older events exist.
    let (seqs, more) = page(&alice.http, &conv, "limit=1000").await;
    assert_eq!((seqs.len(), seqs[0], more), (500, 11, json!(true)));

    // sync with a limit over its cap: the page is clamped, and says so.
    w.send(json!({"type": "sync", "id": "y", "limit": 1000,
                  "cursors": [{"conv_id": conv, "after_seq": 0}]}))
        .await;
    let r = w
        .expect_where(|v| v["type"] == "sync_result" && v["id"] == "y")
        .await;
    let c = r["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["conv_id"] == conv.as_str())
        .expect("the conversation is listed")
        .clone();
    assert_eq!(c["events"].as_array().unwrap().len(), 500);
    assert_eq!(c["has_more"], true);
    assert_eq!(r["has_more"], true);

    // Member pages: a limit over the cap is clamped and still pages.
    let r = alice
        .http
        .get(&format!("/v1/conversations/{conv}/members?limit=5000"))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["members"].as_array().unwrap().len(), 2);
    assert_eq!(r.body["has_more"], false);
    let r = alice
        .http
        .get(&format!("/v1/conversations/{conv}/members?limit=1"))
        .await;
    assert_eq!(r.body["members"].as_array().unwrap().len(), 1);
    assert_eq!(r.body["has_more"], true);
}

#[tokio::test]
async fn every_frame_error_echoes_its_id() {
    let s = TestServer::start().await;
    let alice = User::new(&s, "alice", "d1").await;
    let mut w = alice.ws(&s).await;
    for (frame, id) in [
        (json!({"id": "u2"}), json!("u2")),
        (json!({"id": 7, "type": 42}), json!(7)),
        (json!({"id": "u3", "type": "no_such_frame"}), json!("u3")),
        (json!({"id": "u4", "type": "send"}), json!("u4")),
        (json!({"id": 8, "type": null}), json!(8)),
    ] {
        w.send(frame.clone()).await;
        let e = w.expect("error").await;
        assert_eq!(e["id"], id, "{frame} -> {e}");
        assert_eq!(e["code"], "bad_request", "{frame} -> {e}");
    }
    // An id that is neither a string nor a number is not echoed.
    w.send(json!({"id": [1], "type": "ping"})).await;
    let e = w.expect("error").await;
    assert!(e.get("id").is_none_or(Value::is_null), "{e}");
    // The socket still works.
    w.send(json!({"type": "ping", "id": "p"})).await;
    assert_eq!(w.expect("pong").await["id"], "p");

    // A plain GET of the WebSocket endpoint answers JSON like every /v1 route.
    let r = s.client().get("/v1/ws").await;
    assert!(r.status >= 400 && r.status < 500, "{}", r.status);
    assert_eq!(r.code(), "bad_request", "a JSON error body: {:?}", r.body);
}
