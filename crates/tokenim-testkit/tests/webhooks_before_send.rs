//! The synchronous `message.before_send` webhook (PROTOCOL-INTEGRATION
//! I3.2, I3.3, I-17..I-19) over real HTTP and WebSocket: a small axum
//! receiver in the test checks every request's signature and answers as
//! each test scripts it; the server is the real one on every backend.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use parking_lot::Mutex;
use serde_json::{Value, json};
use sha2::Sha256;
use tokenim_server::config::WebhookConfig;
use tokenim_testkit::{Resp, TestServer, User, Ws};

const SECRET: &str = "whsec-test-secret";
const BEFORE_SEND: &str = "message.before_send";

/// How the receiver answers one request.
#[derive(Clone)]
enum Answer {
    /// `200` with this JSON body.
    Json(Value),
    /// This status, empty body.
    Status(u16),
    /// `200` with this text (not necessarily JSON).
    Raw(String),
    /// Never answers (the server's timeout must fire).
    Hang,
}

type Script = Arc<dyn Fn(&Value) -> Answer + Send + Sync>;

/// A request the receiver got: its body, and how many `v1` signatures
/// it carried (each checked).
#[derive(Clone, Debug)]
struct Call {
    body: Value,
    signatures: usize,
}

struct Inner {
    secrets: Vec<String>,
    script: Mutex<Script>,
    calls: Mutex<Vec<Call>>,
    /// What was wrong with a request's signature, if anything.
    bad: Mutex<Vec<String>>,
}

/// A webhook receiver on a port of its own.
struct Receiver {
    url: String,
    inner: Arc<Inner>,
}

impl Receiver {
    async fn start(secrets: &[&str]) -> Receiver {
        let inner = Arc::new(Inner {
            secrets: secrets.iter().map(|s| s.to_string()).collect(),
            script: Mutex::new(Arc::new(|_: &Value| {
                Answer::Json(json!({"action": "allow"}))
            })),
            calls: Mutex::new(Vec::new()),
            bad: Mutex::new(Vec::new()),
        });
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver {
            url: format!("http://{addr}/hook"),
            inner,
        }
    }

    fn script(&self, f: impl Fn(&Value) -> Answer + Send + Sync + 'static) {
        *self.inner.script.lock() = Arc::new(f);
    }

    fn answer(&self, a: Answer) {
        self.script(move |_| a.clone());
    }

    /// Every request so far; fails the test if any was badly signed.
    fn calls(&self) -> Vec<Call> {
        let bad = self.inner.bad.lock().clone();
        assert!(bad.is_empty(), "badly signed webhook requests: {bad:?}");
        self.inner.calls.lock().clone()
    }

    fn count(&self) -> usize {
        self.calls().len()
    }

    fn last(&self) -> Value {
        self.calls().last().expect("a webhook request").body.clone()
    }

    /// A `[[webhooks]]` entry for this receiver.
    fn hook(&self, name: &str) -> WebhookConfig {
        WebhookConfig {
            url: self.url.clone(),
            secret: Some(SECRET.to_owned()),
            secrets: None,
            events: vec![BEFORE_SEND.to_owned()],
            name: Some(name.to_owned()),
            timeout_ms: None,
            on_failure: None,
        }
    }
}

/// Checks the signature headers against the receiver's secrets (I3.3):
/// the delivery id is the body's, `t` is recent, and there is exactly one
/// `v1` per secret, in order, over `"<t>.<raw body>"`.
fn verify(secrets: &[String], headers: &HeaderMap, raw: &[u8]) -> Result<usize, String> {
    let header = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or(format!("no {n}"))
    };
    let body: Value = serde_json::from_slice(raw).map_err(|e| e.to_string())?;
    if body["id"].as_str() != Some(header("tokenim-delivery")?.as_str()) {
        return Err("Tokenim-Delivery is not the body's id".into());
    }
    let sig = header("tokenim-signature")?;
    let mut parts = sig.split(',');
    let t = parts
        .next()
        .and_then(|p| p.strip_prefix("t="))
        .ok_or("no t=")?;
    let t_ms: i64 = t.parse().map_err(|_| "t is not a number")?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    if (now - t_ms).abs() > 5 * 60 * 1000 {
        return Err(format!("t={t_ms} is not recent"));
    }
    let got: Vec<&str> = parts
        .map(|p| p.strip_prefix("v1=").ok_or("a part is not v1="))
        .collect::<Result<_, _>>()?;
    let want: Vec<String> = secrets
        .iter()
        .map(|s| {
            let mut m = Hmac::<Sha256>::new_from_slice(s.as_bytes()).unwrap();
            m.update(t.as_bytes());
            m.update(b".");
            m.update(raw);
            m.finalize()
                .into_bytes()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect()
        })
        .collect();
    if got != want {
        return Err(format!("signatures {got:?}, expected {want:?}"));
    }
    Ok(got.len())
}

async fn receive(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    raw: axum::body::Bytes,
) -> Response {
    let signatures = match verify(&inner.secrets, &headers, &raw) {
        Ok(n) => n,
        Err(why) => {
            inner.bad.lock().push(why);
            return StatusCode::UNAUTHORIZED.into_response();
        }
    };
    let body: Value = serde_json::from_slice(&raw).expect("checked JSON");
    inner.calls.lock().push(Call {
        body: body.clone(),
        signatures,
    });
    let script = inner.script.lock().clone();
    match script(&body) {
        Answer::Json(v) => axum::Json(v).into_response(),
        Answer::Status(s) => StatusCode::from_u16(s).unwrap().into_response(),
        Answer::Raw(t) => t.into_response(),
        Answer::Hang => std::future::pending().await,
    }
}

fn text(t: &str) -> Value {
    json!({"type": "text", "text": t})
}

fn allow() -> Answer {
    Answer::Json(json!({"action": "allow"}))
}

fn reject(reason: &str) -> Answer {
    Answer::Json(json!({"action": "reject", "reason": reason}))
}

fn replace(content: Value) -> Answer {
    Answer::Json(json!({"action": "replace", "content": content}))
}

/// A server with these webhooks, alice and bob, and their direct
/// conversation.
async fn setup(hooks: Vec<WebhookConfig>) -> (TestServer, User, User, String) {
    let s = TestServer::start_with(move |c| c.webhooks = hooks).await;
    let alice = User::new(&s, "alice", "phone").await;
    let bob = User::new(&s, "bob", "phone").await;
    let conv = alice.direct(&bob).await;
    (s, alice, bob, conv)
}

async fn post(u: &User, conv: &str, cmid: &str, content: Value) -> Resp {
    u.http
        .post(
            &format!("/v1/conversations/{conv}/messages"),
            json!({"client_msg_id": cmid, "content": content}),
        )
        .await
}

async fn history(u: &User, conv: &str) -> Vec<Value> {
    let r = u
        .http
        .get(&format!("/v1/conversations/{conv}/events"))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.body["events"].as_array().unwrap().clone()
}

async fn send(ws: &mut Ws, conv: &str, cmid: &str, content: Value) -> Value {
    ws.send(json!({"type": "send", "id": cmid, "conv_id": conv,
                   "client_msg_id": cmid, "content": content}))
        .await;
    ws.expect_where(|v| v["id"] == cmid && (v["type"] == "send_ack" || v["type"] == "error"))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_stores_and_delivers_as_sent() {
    let r = Receiver::start(&[SECRET]).await;
    let (s, alice, bob, conv) = setup(vec![r.hook("check")]).await;
    let mut aw = alice.ws(&s).await;
    let mut bw = bob.ws(&s).await;

    let ack = send(&mut aw, &conv, "m1", text("hello")).await;
    assert_eq!(ack["type"], "send_ack", "{ack}");
    assert!(
        ack.get("content").is_none(),
        "no replacement, no content: {ack}"
    );
    let ev = bw.expect("event").await["event"].clone();
    assert_eq!(ev["content"], text("hello"));

    // The request of I3.2.
    let req = r.last();
    assert_eq!(req["type"], BEFORE_SEND);
    assert!(req["id"].as_str().unwrap().starts_with("wh_"), "{req}");
    assert!(req["ts"].as_i64().unwrap() > 0);
    assert_eq!(
        req["data"],
        json!({"conv_id": conv, "conv_type": "direct", "sender": alice.id,
               "sender_device": "phone", "client_msg_id": "m1", "kind": "message",
               "content": text("hello")})
    );

    // Over HTTP too; every request has a fresh id.
    let p = post(&alice, &conv, "m2", text("again")).await;
    assert_eq!(p.status, 201, "{:?}", p.body);
    assert!(p.body.get("content").is_none(), "{:?}", p.body);
    let calls = r.calls();
    assert_eq!(calls.len(), 2);
    assert_ne!(calls[0].body["id"], calls[1].body["id"]);
    assert_eq!(calls[1].signatures, 1);
    let h = history(&bob, &conv).await;
    let texts: Vec<&Value> = h.iter().map(|e| &e["content"]).collect();
    assert_eq!(texts, [&text("hello"), &text("again")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejection_stores_nothing_and_a_resend_asks_again() {
    let r = Receiver::start(&[SECRET]).await;
    let (s, alice, bob, conv) = setup(vec![r.hook("check")]).await;
    let mut aw = alice.ws(&s).await;
    r.answer(reject("no links, please"));

    let e = send(&mut aw, &conv, "m1", text("http://spam")).await;
    assert_eq!(
        (e["type"].clone(), e["id"].clone(), e["code"].clone()),
        (json!("error"), json!("m1"), json!("rejected"))
    );
    assert_eq!(e["message"], "no links, please");

    let p = post(&alice, &conv, "m2", text("http://spam")).await;
    assert_eq!((p.status, p.code()), (403, "rejected"), "{:?}", p.body);
    assert_eq!(p.body["error"]["message"], "no links, please");

    // An absent reason is "rejected"; a long one is cut to 256 characters.
    r.answer(Answer::Json(json!({"action": "reject"})));
    let p = post(&alice, &conv, "m3", text("x")).await;
    assert_eq!(p.body["error"]["message"], "rejected");
    r.answer(reject(""));
    let p = post(&alice, &conv, "m3", text("x")).await;
    assert_eq!(p.body["error"]["message"], "rejected");
    r.answer(reject(&"é".repeat(300)));
    let p = post(&alice, &conv, "m3", text("x")).await;
    assert_eq!(p.body["error"]["message"], "é".repeat(256));

    assert!(history(&bob, &conv).await.is_empty(), "nothing stored");
    assert_eq!(r.count(), 5);

    // The same client_msg_id again asks again, and can pass now.
    r.answer(allow());
    let ack = send(&mut aw, &conv, "m1", text("fine now")).await;
    assert_eq!(ack["type"], "send_ack", "{ack}");
    assert_eq!(ack["seq"], 1);
    let p = post(&alice, &conv, "m2", text("fine too")).await;
    assert_eq!(p.status, 201, "{:?}", p.body);
    assert_eq!(r.count(), 7);
    let h = history(&bob, &conv).await;
    assert_eq!(h.len(), 2);
    assert_eq!(h[0]["content"], text("fine now"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replacement_is_stored_pushed_and_acked() {
    let r = Receiver::start(&[SECRET]).await;
    let (s, alice, bob, conv) = setup(vec![r.hook("clean")]).await;
    let mut aw = alice.ws(&s).await;
    let mut bw = bob.ws(&s).await;
    let clean = json!({"type": "text", "text": "****", "moderated": true});
    r.answer(replace(clean.clone()));

    let ack = send(&mut aw, &conv, "m1", text("darn")).await;
    assert_eq!(ack["type"], "send_ack", "{ack}");
    assert_eq!(ack["content"], clean);
    let ev = bw.expect("event").await["event"].clone();
    assert_eq!(ev["content"], clean);

    let p = post(&alice, &conv, "m2", text("darn")).await;
    assert_eq!(p.status, 201, "{:?}", p.body);
    assert_eq!(p.body["content"], clean);
    let h = history(&bob, &conv).await;
    assert_eq!(h.len(), 2);
    assert!(h.iter().all(|e| e["content"] == clean), "{h:?}");

    // A repeat is the original ack, without the hook and without content.
    let again = send(&mut aw, &conv, "m1", text("darn")).await;
    assert_eq!(
        (again["seq"].clone(), again.get("content")),
        (json!(1), None)
    );
    assert_eq!(r.count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_replacement_is_a_failure() {
    let r = Receiver::start(&[SECRET]).await;
    let (s, alice, bob, conv) = setup(vec![r.hook("big")]).await;
    let max = s.config.limits.max_content_bytes as usize;
    let mut aw = alice.ws(&s).await;

    // Over max_content_bytes: on_failure = allow stores the original.
    r.answer(replace(text(&"x".repeat(max))));
    let ack = send(&mut aw, &conv, "m1", text("small")).await;
    assert_eq!(ack["type"], "send_ack", "{ack}");
    assert!(ack.get("content").is_none(), "{ack}");
    // Not content at all (no type).
    r.answer(replace(json!({"text": "no type"})));
    let ack = send(&mut aw, &conv, "m2", text("typed")).await;
    assert_eq!(ack["type"], "send_ack", "{ack}");
    assert!(ack.get("content").is_none(), "{ack}");
    let h = history(&bob, &conv).await;
    let got: Vec<&Value> = h.iter().map(|e| &e["content"]).collect();
    assert_eq!(got, [&text("small"), &text("typed")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_run_in_order_and_the_first_rejection_wins() {
    let first = Receiver::start(&[SECRET]).await;
    let second = Receiver::start(&[SECRET]).await;
    let (s, alice, bob, conv) = setup(vec![first.hook("first"), second.hook("second")]).await;
    let mut aw = alice.ws(&s).await;
    first.answer(replace(text("from first")));
    second.script(|req| {
        let t = req["data"]["content"]["text"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        Answer::Json(json!({"action": "replace", "content": text(&format!("{t}, then second"))}))
    });

    let ack = send(&mut aw, &conv, "m1", text("original")).await;
    assert_eq!(ack["content"], text("from first, then second"), "{ack}");
    assert_eq!(second.last()["data"]["content"], text("from first"));
    assert_eq!(history(&bob, &conv).await[0]["content"], ack["content"]);

    // The first rejects: the second is not asked.
    first.answer(reject("first says no"));
    let e = send(&mut aw, &conv, "m2", text("original")).await;
    assert_eq!(
        (e["code"].clone(), e["message"].clone()),
        (json!("rejected"), json!("first says no"))
    );
    assert_eq!((first.count(), second.count()), (2, 1));

    // The second rejects what the first allowed.
    first.answer(allow());
    second.answer(reject("second says no"));
    let e = send(&mut aw, &conv, "m3", text("original")).await;
    assert_eq!(e["message"], "second says no");
    assert_eq!(second.last()["data"]["content"], text("original"));
    assert_eq!(history(&bob, &conv).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_lets_it_through_with_allow_and_keeps_socket_order() {
    let r = Receiver::start(&[SECRET]).await;
    let mut h = r.hook("slow");
    h.timeout_ms = Some(300);
    let (s, alice, bob, conv) = setup(vec![h]).await;
    let mut aw = alice.ws(&s).await;
    // The first message's hook never answers; the second's at once.
    r.script(|req| {
        if req["data"]["content"]["text"] == "slow" {
            Answer::Hang
        } else {
            allow()
        }
    });

    // Pipelined: the second must not commit before the first.
    for (cmid, t) in [("m1", "slow"), ("m2", "fast")] {
        aw.send(json!({"type": "send", "id": cmid, "conv_id": conv,
                       "client_msg_id": cmid, "content": text(t)}))
            .await;
    }
    let a1 = aw.expect_where(|v| v["id"] == "m1").await;
    let a2 = aw.expect_where(|v| v["id"] == "m2").await;
    assert_eq!(
        (a1["type"].clone(), a1["seq"].clone()),
        (json!("send_ack"), json!(1)),
        "{a1}"
    );
    assert_eq!(
        (a2["type"].clone(), a2["seq"].clone()),
        (json!("send_ack"), json!(2)),
        "{a2}"
    );
    let got: Vec<Value> = history(&bob, &conv)
        .await
        .iter()
        .map(|e| e["content"].clone())
        .collect();
    assert_eq!(got, [text("slow"), text("fast")]);
    assert_eq!(r.count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_with_on_failure_reject_is_unavailable() {
    let r = Receiver::start(&[SECRET]).await;
    let mut h = r.hook("strict");
    h.timeout_ms = Some(200);
    h.on_failure = Some("reject".to_owned());
    let (s, alice, bob, conv) = setup(vec![h]).await;
    let mut aw = alice.ws(&s).await;
    r.answer(Answer::Hang);

    let e = send(&mut aw, &conv, "m1", text("hi")).await;
    assert_eq!(
        (e["type"].clone(), e["code"].clone()),
        (json!("error"), json!("unavailable")),
        "{e}"
    );
    let p = post(&alice, &conv, "m2", text("hi")).await;
    assert_eq!((p.status, p.code()), (503, "unavailable"), "{:?}", p.body);
    assert!(history(&bob, &conv).await.is_empty());

    // The same request once the hook answers again.
    r.answer(allow());
    let ack = send(&mut aw, &conv, "m1", text("hi")).await;
    assert_eq!(ack["type"], "send_ack", "{ack}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_answers_are_failures() {
    let strict = Receiver::start(&[SECRET]).await;
    let lenient = Receiver::start(&[SECRET]).await;
    let mut h = strict.hook("strict");
    h.on_failure = Some("reject".to_owned());
    let (s, alice, bob, conv) = setup(vec![h]).await;
    let mut aw = alice.ws(&s).await;

    let bad = [
        Answer::Status(500),
        Answer::Status(204),
        Answer::Raw("allow".to_owned()),
        Answer::Json(json!({"action": "maybe"})),
        Answer::Raw(format!(
            "{{\"action\": \"allow\", \"pad\": \"{}\"}}",
            "x".repeat(64 * 1024)
        )),
    ];
    for (i, a) in bad.into_iter().enumerate() {
        strict.answer(a);
        let e = send(&mut aw, &conv, &format!("m{i}"), text("hi")).await;
        assert_eq!(e["code"], "unavailable", "answer {i}: {e}");
    }
    assert!(history(&bob, &conv).await.is_empty());
    assert_eq!(strict.count(), 5);

    // With on_failure = allow (the default) a 500 lets it through.
    drop(aw);
    let (s2, alice2, bob2, conv2) = setup(vec![lenient.hook("lenient")]).await;
    lenient.answer(Answer::Status(500));
    let p = post(&alice2, &conv2, "m1", text("hi")).await;
    assert_eq!(p.status, 201, "{:?}", p.body);
    assert_eq!(history(&bob2, &conv2).await.len(), 1);
    assert_eq!(lenient.count(), 1);
    drop(s2);
    drop(s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_repeat_does_not_ask_the_hook() {
    let r = Receiver::start(&[SECRET]).await;
    let (s, alice, _bob, conv) = setup(vec![r.hook("check")]).await;
    let mut aw = alice.ws(&s).await;
    let first = send(&mut aw, &conv, "m1", text("once")).await;
    assert_eq!(first["type"], "send_ack");
    assert_eq!(r.count(), 1);
    // Now the hook would refuse anything: a repeat never reaches it.
    r.answer(reject("never asked"));
    let again = send(&mut aw, &conv, "m1", text("once")).await;
    assert_eq!(again["msg_id"], first["msg_id"]);
    let p = post(&alice, &conv, "m1", text("once")).await;
    assert_eq!(p.status, 200, "{:?}", p.body);
    assert_eq!(p.body["msg_id"], first["msg_id"]);
    let mut other = alice.device(&s, "laptop").await.ws(&s).await;
    let third = send(&mut other, &conv, "m1", text("once")).await;
    assert_eq!(third["seq"], first["seq"]);
    assert_eq!(r.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_goes_through_the_hook() {
    let r = Receiver::start(&[SECRET]).await;
    let (s, alice, bob, conv) = setup(vec![r.hook("check")]).await;
    let mut aw = alice.ws(&s).await;
    let mut bw = bob.ws(&s).await;
    let sent = send(&mut aw, &conv, "m1", text("first")).await;
    assert_eq!(sent["seq"], 1);
    bw.expect("event").await;

    let edit = |cmid: &str, t: &str| {
        json!({"type": "edit", "id": cmid, "conv_id": conv, "client_msg_id": cmid,
               "target_seq": 1, "content": text(t)})
    };
    r.answer(reject("no edits"));
    aw.send(edit("e1", "second")).await;
    let e = aw.expect_where(|v| v["id"] == "e1").await;
    assert_eq!(
        (e["code"].clone(), e["message"].clone()),
        (json!("rejected"), json!("no edits"))
    );
    let req = r.last();
    assert_eq!(
        (
            req["data"]["kind"].clone(),
            req["data"]["target_seq"].clone()
        ),
        (json!("edit"), json!(1))
    );
    assert_eq!(req["data"]["content"], text("second"));
    assert_eq!(req["data"]["client_msg_id"], "e1");

    r.answer(replace(text("edited by the app")));
    aw.send(edit("e1", "second")).await;
    let ack = aw.expect_where(|v| v["id"] == "e1").await;
    assert_eq!(ack["type"], "send_ack", "{ack}");
    assert_eq!(ack["content"], text("edited by the app"));
    let ev = bw.expect("event").await["event"].clone();
    assert_eq!(ev["kind"], "edit");
    assert_eq!(ev["content"]["content"], text("edited by the app"));
    let h = history(&bob, &conv).await;
    assert_eq!(
        h[0]["content"],
        text("edited by the app"),
        "the message shows the edit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_posts_skip_the_hook() {
    let r = Receiver::start(&[SECRET]).await;
    let (s, alice, bob, conv) = setup(vec![r.hook("check")]).await;
    r.answer(reject("never asked"));
    let b = s.client().with_token("test-admin");
    let path = format!("/v1/server/conversations/{conv}/messages");
    let p = b
        .post(
            &path,
            json!({"client_msg_id": "sys1", "content": text("notice")}),
        )
        .await;
    assert_eq!(p.status, 201, "{:?}", p.body);
    let p = b
        .post(
            &path,
            json!({"as": alice.id, "client_msg_id": "as1", "content": text("as alice")}),
        )
        .await;
    assert_eq!(p.status, 201, "{:?}", p.body);
    assert_eq!(history(&bob, &conv).await.len(), 2);
    assert_eq!(r.count(), 0);
    // A user's own send is asked (and refused), so the hook is live.
    let p = post(&alice, &conv, "m1", text("mine")).await;
    assert_eq!(p.code(), "rejected");
    assert_eq!(r.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_secrets_sign_twice() {
    let r = Receiver::start(&["whsec-new", "whsec-old"]).await;
    let mut h = r.hook("rotating");
    h.secret = None;
    h.secrets = Some(vec!["whsec-new".to_owned(), "whsec-old".to_owned()]);
    let (_s, alice, _bob, conv) = setup(vec![h]).await;
    let p = post(&alice, &conv, "m1", text("hi")).await;
    assert_eq!(p.status, 201, "{:?}", p.body);
    let calls = r.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].signatures, 2);

    // A receiver that knows only the other secret refuses the request.
    let wrong = Receiver::start(&["whsec-unknown"]).await;
    let mut h = wrong.hook("wrong");
    h.on_failure = Some("reject".to_owned());
    let (_s2, alice2, _bob2, conv2) = setup(vec![h]).await;
    let p = post(&alice2, &conv2, "m1", text("hi")).await;
    assert_eq!(p.code(), "unavailable");
    assert_eq!(wrong.inner.bad.lock().len(), 1);
}
