//! The server API's users (PROTOCOL-INTEGRATION I1.1, I1.2, I-1..I-5) and
//! sign-in with the app's JWT (I1.3, I-6) over real HTTP and WebSocket:
//! API keys and user tokens kept apart both ways, create-or-update by the
//! app's own ID, minted sessions that chat, and deactivation that kicks
//! live sockets and refuses every way back in. The JWT checks one by one,
//! each algorithm and the JWKS cache are the verifier's own suite
//! (`crates/tokenim-server/tests/jwt.rs`); here the server's answers.
//!
//! long: one suite for the server API's user routes and JWT sign-in; each
//! test is independent.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokenim_testkit::{Closed, Http, TestServer, User, Ws};

/// The app's backend: the test server's `admin` key.
fn backend(s: &TestServer) -> Http {
    s.client().with_token("test-admin")
}

async fn put_user(b: &Http, id: &str, body: Value) -> tokenim_testkit::Resp {
    b.put(&format!("/v1/server/users/{id}"), Some(body)).await
}

/// A session minted for `id` on `device`; answers a client with its token.
async fn mint(s: &TestServer, id: &str, device: &str) -> Http {
    let r = backend(s)
        .post(
            &format!("/v1/server/users/{id}/sessions"),
            json!({"device_id": device, "platform": "web"}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.body["user_id"], id);
    assert_eq!(r.body["device_id"], device);
    s.client().with_token(r.body["token"].as_str().unwrap())
}

fn text(t: &str) -> Value {
    json!({"type": "text", "text": t})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_and_user_tokens_are_kept_apart() {
    let s = TestServer::start_with(|c| {
        c.add_api_key("shop=shop-secret-1234").unwrap();
    })
    .await;
    let alice = User::new(&s, "alice", "phone").await;
    // Every key has the same rights (I-1), the admin token among them.
    for key in ["test-admin", "shop-secret-1234"] {
        let r = s
            .client()
            .with_token(key)
            .get(&format!("/v1/server/users/{}", alice.id))
            .await;
        assert_eq!(r.status, 200, "{key}: {:?}", r.body);
    }
    // No key, a wrong key, or a user's token: 401 on the server routes.
    for http in [
        s.client(),
        s.client().with_token("shop-secret-123"),
        alice.http.clone(),
    ] {
        for (m, path) in [
            ("GET", format!("/v1/server/users/{}", alice.id)),
            ("PUT", "/v1/server/users/x1".to_owned()),
            ("POST", "/v1/server/users/x1/sessions".to_owned()),
            ("DELETE", format!("/v1/server/users/{}", alice.id)),
            ("POST", "/v1/admin/users".to_owned()),
        ] {
            let r = http.req(m, &path, Some(json!({}))).await;
            assert_eq!((r.status, r.code()), (401, "unauthorized"), "{m} {path}");
        }
    }
    // A key is no user: not on the user routes, not in the socket's auth.
    let key = s.client().with_token("shop-secret-1234");
    for path in ["/v1/me", "/v1/conversations", "/v1/devices"] {
        let r = key.get(path).await;
        assert_eq!((r.status, r.code()), (401, "unauthorized"), "{path}");
    }
    let mut ws = Ws::connect(&s.ws).await;
    ws.send(json!({"type": "auth", "token": "shop-secret-1234"}))
        .await;
    let f = ws.recv().await;
    assert_eq!(f["type"], "error", "{f}");
    assert_eq!(f["code"], "unauthorized", "{f}");
    // Alice's own routes are untouched.
    assert_eq!(alice.http.get("/v1/me").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_is_created_once_and_updated_by_id() {
    let s = TestServer::start().await;
    let b = backend(&s);
    let r = put_user(&b, "player:8812", json!({})).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let first = r.body.clone();
    assert_eq!(
        first,
        json!({"user_id": "player:8812", "username": null, "display_name": "player:8812",
               "avatar_url": null, "metadata": {}, "has_password": false,
               "deactivated": false, "created_at": first["created_at"]})
    );
    // The same PUT again: 200, still one user, unchanged.
    let r = put_user(&b, "player:8812", json!({})).await;
    assert_eq!((r.status, &r.body), (200, &first));

    // Fields set, then absent fields kept, metadata replaced whole.
    let r = put_user(
        &b,
        "player:8812",
        json!({"display_name": "Ana", "avatar_url": "https://cdn.example.com/a.png",
               "metadata": {"tier": "gold", "level": 3}}),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = put_user(&b, "player:8812", json!({"metadata": {"level": 4}})).await;
    assert_eq!(r.body["display_name"], "Ana");
    assert_eq!(r.body["avatar_url"], "https://cdn.example.com/a.png");
    assert_eq!(r.body["metadata"], json!({"level": 4}));
    assert_eq!(r.body["created_at"], first["created_at"]);
    // `null` clears; a cleared display name falls back to the username,
    // else the ID.
    let r = put_user(
        &b,
        "player:8812",
        json!({"username": "ana", "password": "password1", "display_name": null,
               "avatar_url": null, "metadata": null}),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["display_name"], "ana");
    assert_eq!(r.body["has_password"], true);
    assert_eq!(
        (&r.body["avatar_url"], &r.body["metadata"]),
        (&json!(null), &json!({}))
    );
    assert_eq!(
        backend(&s).get("/v1/server/users/player:8812").await.body,
        r.body
    );
    // The password works for a login, and the device view has no metadata.
    let ana = s.client().login("ana", "phone").await;
    let me = ana.get("/v1/me").await.body;
    assert_eq!(
        me,
        json!({"user_id": "player:8812", "username": "ana", "display_name": "ana",
               "avatar_url": null})
    );
    // A user without a username shows `"username": null` to devices (I-3).
    put_user(&b, "12345", json!({"display_name": "Bo"})).await;
    let r = ana.get("/v1/users/12345").await;
    assert_eq!(
        r.body,
        json!({"user_id": "12345", "username": null, "display_name": "Bo",
               "avatar_url": null})
    );

    // Users the server made (`u_...`) can be updated, not created.
    let carol = User::new(&s, "carol", "phone").await;
    let r = put_user(&b, &carol.id, json!({"display_name": "Carol C"})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["username"], "carol");
    let r = put_user(&b, "u_made_up", json!({})).await;
    assert_eq!((r.status, r.code()), (400, "bad_request"));
    assert_eq!(b.get("/v1/server/users/u_made_up").await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_input_is_bounded() {
    let s = TestServer::start().await;
    let b = backend(&s);
    User::new(&s, "taken", "phone").await;
    let long = "x".repeat(65);
    for id in [long.as_str(), "with space", "é", "a/b"] {
        let r = b
            .req(
                "PUT",
                &format!("/v1/server/users/{}", urlish(id)),
                Some(json!({})),
            )
            .await;
        assert_eq!((r.status, r.code()), (400, "bad_request"), "{id:?}");
    }
    for (body, status, code) in [
        (json!({"username": "taken"}), 409, "conflict"),
        (json!({"username": "No Caps"}), 400, "bad_request"),
        (json!({"password": "password1"}), 400, "bad_request"),
        (
            json!({"username": "okname", "password": "short"}),
            400,
            "bad_request",
        ),
        (json!({"display_name": ""}), 400, "bad_request"),
        (
            json!({"avatar_url": "javascript:alert(1)"}),
            400,
            "bad_request",
        ),
        (
            json!({"avatar_url": format!("https://a.example/{}", "p".repeat(2048))}),
            400,
            "bad_request",
        ),
        (json!({"metadata": [1, 2]}), 400, "bad_request"),
        (json!({"metadata": "text"}), 400, "bad_request"),
        (
            json!({"metadata": {"k": "v".repeat(4096)}}),
            413,
            "too_large",
        ),
        (json!({"display_name": 7}), 400, "bad_request"),
    ] {
        let r = put_user(&b, "new1", body.clone()).await;
        assert_eq!((r.status, r.code()), (status, code), "{body}");
    }
    // Nothing was created by the refused PUTs.
    assert_eq!(b.get("/v1/server/users/new1").await.status, 404);
    // Metadata of exactly the limit passes (compact form counted).
    let pad = 4096 - r#"{"k":""}"#.len();
    let r = put_user(&b, "new1", json!({"metadata": {"k": "v".repeat(pad)}})).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    // A username can move from one user to another once freed.
    put_user(&b, "new1", json!({"username": "moving"})).await;
    let r = put_user(&b, "new2", json!({"username": "moving"})).await;
    assert_eq!(r.status, 409);
    put_user(&b, "new1", json!({"username": null})).await;
    let r = put_user(&b, "new2", json!({"username": "moving"})).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let found = s
        .client()
        .login("taken", "x")
        .await
        .get("/v1/users?username=moving")
        .await;
    assert_eq!(found.body["users"][0]["user_id"], "new2");
    // Registration sees the names the server API gave.
    let r = s
        .client()
        .post(
            "/v1/accounts",
            json!({"username": "moving", "password": "password1"}),
        )
        .await;
    assert_eq!((r.status, r.code()), (409, "conflict"));
}

/// Percent-encodes what a path segment cannot carry as is.
fn urlish(id: &str) -> String {
    id.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minted_token_chats() {
    let s = TestServer::start().await;
    let b = backend(&s);
    for id in ["buyer:1", "seller:2"] {
        assert_eq!(put_user(&b, id, json!({})).await.status, 201);
    }
    let buyer = mint(&s, "buyer:1", "web1").await;
    let seller = mint(&s, "seller:2", "phone").await;
    let mut seller_ws = Ws::connect_auth(&s.ws, seller.token()).await;
    let mut buyer_ws = Ws::connect_auth(&s.ws, buyer.token()).await;
    let conv = buyer.direct("seller:2").await;
    let ack = buyer_ws
        .send_msg(&conv, "m1", "is it still for sale?")
        .await;
    assert_eq!(ack["type"], "send_ack", "{ack}");
    let ev = seller_ws.expect("event").await;
    assert_eq!(ev["event"]["sender"], "buyer:1");
    assert_eq!(ev["event"]["sender_device"], "web1");
    assert_eq!(ev["event"]["content"]["text"], "is it still for sale?");
    assert_eq!(seller.get("/v1/me").await.body["user_id"], "seller:2");

    // ttl_ms: at least a minute; above token_ttl_ms it is clamped (I-5).
    let path = "/v1/server/users/buyer:1/sessions";
    let r = b
        .post(
            path,
            json!({"device_id": "d", "platform": "web", "ttl_ms": 59_999}),
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "bad_request"));
    let before = now_ms();
    let r = b
        .post(
            path,
            json!({"device_id": "d", "platform": "web", "ttl_ms": 60_000}),
        )
        .await;
    assert_eq!(r.status, 201);
    let exp = r.body["expires_at"].as_i64().unwrap();
    assert!(
        (before + 60_000..=now_ms() + 60_000).contains(&exp),
        "{exp}"
    );
    let r = b
        .post(
            path,
            json!({"device_id": "d", "platform": "web", "ttl_ms": u64::MAX}),
        )
        .await;
    let exp = r.body["expires_at"].as_i64().unwrap();
    let ttl = s.app().limits.token_ttl_ms as i64;
    assert!((before + ttl..=now_ms() + ttl).contains(&exp), "{exp}");
    for (body, status) in [
        (json!({"device_id": "bad id", "platform": "web"}), 400),
        (json!({"device_id": "d", "platform": "toaster"}), 400),
        (json!({"platform": "web"}), 400),
    ] {
        assert_eq!(b.post(path, body.clone()).await.status, status, "{body}");
    }
    let r = b
        .post(
            "/v1/server/users/nobody/sessions",
            json!({"device_id": "d", "platform": "web"}),
        )
        .await;
    assert_eq!((r.status, r.code()), (404, "not_found"));
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deactivation_kicks_at_once_and_refuses_every_way_back() {
    let s = TestServer::start().await;
    let b = backend(&s);
    let bob = User::new(&s, "bob", "phone").await;
    let r = put_user(
        &b,
        "patient:7",
        json!({"username": "pat", "password": "password1"}),
    )
    .await;
    assert_eq!(r.status, 201);
    let phone = s.client().login("pat", "phone").await;
    let web = mint(&s, "patient:7", "web").await;
    let conv = phone.direct(&bob.id).await;
    let mut bob_ws = bob.ws(&s).await;
    let mut phone_ws = Ws::connect_auth(&s.ws, phone.token()).await;
    let mut web_ws = Ws::connect_auth(&s.ws, web.token()).await;
    phone_ws.send_msg(&conv, "m1", "see you at 3").await;
    bob_ws.expect("event").await;

    let t = Instant::now();
    assert_eq!(b.delete("/v1/server/users/patient:7").await.status, 204);
    for ws in [&mut phone_ws, &mut web_ws] {
        // Frames before the kick (the message, on the other device) pass.
        let deadline = t + Duration::from_secs(1);
        let f = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let f = ws.try_recv(left).await.expect("kicked within a second");
            if f["type"] != "event" {
                break f;
            }
        };
        assert_eq!(f, json!({"type": "kicked", "reason": "deactivated"}));
        assert!(matches!(ws.closed().await, Closed::Code(4002)));
    }
    eprintln!("both sockets kicked {:?} after the DELETE", t.elapsed());

    // Every session is gone, logins fail as a wrong password, minting is
    // forbidden, the user cannot be changed.
    for http in [&phone, &web] {
        let r = http.get("/v1/me").await;
        assert_eq!((r.status, r.code()), (401, "unauthorized"));
    }
    let r = s
        .client()
        .post(
            "/v1/sessions",
            json!({"username": "pat", "password": "password1", "device_id": "p2",
                   "platform": "ios"}),
        )
        .await;
    assert_eq!((r.status, r.code()), (401, "unauthorized"));
    assert_eq!(r.body["error"]["message"], "wrong username or password");
    let r = b
        .post(
            "/v1/server/users/patient:7/sessions",
            json!({"device_id": "d", "platform": "web"}),
        )
        .await;
    assert_eq!((r.status, r.code()), (403, "forbidden"));
    let r = put_user(&b, "patient:7", json!({"display_name": "x"})).await;
    assert_eq!((r.status, r.code()), (409, "conflict"));
    // Again: 204. The user reads back deactivated, to both sides.
    assert_eq!(b.delete("/v1/server/users/patient:7").await.status, 204);
    assert_eq!(
        b.get("/v1/server/users/patient:7").await.body["deactivated"],
        true
    );
    let seen = bob.http.get("/v1/users/patient:7").await.body;
    assert_eq!(seen["deactivated"], true, "{seen}");
    assert_eq!(b.delete("/v1/server/users/nobody").await.status, 404);

    // Messages and memberships stay.
    let page = bob
        .http
        .get(&format!("/v1/conversations/{conv}/events"))
        .await
        .body;
    let texts: Vec<&str> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["content"]["text"].as_str())
        .collect();
    assert_eq!(texts, vec!["see you at 3"]);
    let members = bob
        .http
        .get(&format!("/v1/conversations/{conv}/members"))
        .await
        .body;
    assert_eq!(members["members"].as_array().unwrap().len(), 2);
    // Nobody adds them anywhere, opens a new direct conversation with
    // them, nor posts as them (I-4).
    let carol = User::new(&s, "carol", "phone").await;
    let r = carol
        .http
        .post(
            "/v1/conversations",
            json!({"type": "direct", "peer": "patient:7"}),
        )
        .await;
    assert_eq!((r.status, r.code()), (403, "forbidden"));
    // Bob's conversation with them is still his to open.
    assert_eq!(bob.http.direct("patient:7").await, conv);
    let g = bob.group("team", &[]).await;
    let r = bob
        .http
        .post(
            &format!("/v1/conversations/{g}/members"),
            json!({"user_ids": ["patient:7"]}),
        )
        .await;
    assert_eq!((r.status, r.code()), (403, "forbidden"), "{:?}", r.body);
    let r = b
        .post(
            &format!("/v1/server/conversations/{conv}/messages"),
            json!({"as": "patient:7", "client_msg_id": "x", "content": text("hi")}),
        )
        .await;
    assert_eq!((r.status, r.code()), (403, "forbidden"));
    let r = b
        .post(
            "/v1/server/conversations",
            json!({"type": "direct", "members": ["patient:7", carol.id], "conv_id": "new-dm"}),
        )
        .await;
    assert_eq!((r.status, r.code()), (403, "forbidden"));
}

// ---- sign-in with the app's JWT ----

const SECRET: &str = "an HS256 secret of at least thirty-two bytes";
const ISS: &str = "https://id.example.com";
const AUD: &str = "chat";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tokenim-server/tests/fixtures/jwt")
        .join(name)
}

fn claims(extra: Value) -> Value {
    let now = now_ms() / 1000;
    let mut c = json!({"sub": "player:1", "iss": ISS, "aud": [AUD, "other"], "exp": now + 600});
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    c
}

fn hs256(claims: &Value) -> String {
    let key = EncodingKey::from_secret(SECRET.as_bytes()).unwrap();
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &key).unwrap()
}

fn rs256(private: &str, kid: Option<&str>, claims: &Value) -> String {
    let pem = std::fs::read(fixture(private)).unwrap();
    let key = EncodingKey::from_rsa_pem(&pem).unwrap();
    let mut h = Header::new(Algorithm::RS256);
    h.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&h, claims, &key).unwrap()
}

async fn jwt_login(s: &TestServer, jwt: &str) -> tokenim_testkit::Resp {
    s.client()
        .post(
            "/v1/sessions",
            json!({"jwt": jwt, "device_id": "web", "platform": "web"}),
        )
        .await
}

fn message(r: &tokenim_testkit::Resp) -> &str {
    r.body["error"]["message"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwt_signs_in_and_creates_the_user_on_first_use() {
    let s = TestServer::start_with(|c| {
        c.auth_jwt_secret = Some(SECRET.into());
        c.auth_jwt_issuer = Some(ISS.into());
        c.auth_jwt_audience = Some(AUD.into());
    })
    .await;
    let b = backend(&s);
    assert_eq!(b.get("/v1/server/users/player:1").await.status, 404);
    let jwt = hs256(&claims(
        json!({"name": "Ana", "exp": now_ms() / 1000 + 120}),
    ));
    let r = jwt_login(&s, &jwt).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.body["user_id"], "player:1");
    // The session lasts token_ttl_ms, whatever `exp` says (I-6).
    let ttl = s.app().limits.token_ttl_ms as i64;
    assert!(r.body["expires_at"].as_i64().unwrap() > now_ms() + ttl - 60_000);
    let user = b.get("/v1/server/users/player:1").await.body;
    assert_eq!(
        (
            &user["display_name"],
            &user["username"],
            &user["has_password"]
        ),
        (&json!("Ana"), &json!(null), &json!(false))
    );
    // The session chats like any other.
    let ana = s.client().with_token(r.body["token"].as_str().unwrap());
    let mut ws = Ws::connect_auth(&s.ws, ana.token()).await;
    let bob = User::new(&s, "bob", "phone").await;
    let conv = ana.direct(&bob.id).await;
    assert_eq!(ws.send_msg(&conv, "m1", "hi").await["type"], "send_ack");
    // The same JWT again is fine; a new `name` renames them; no `name`
    // leaves the name.
    assert_eq!(jwt_login(&s, &jwt).await.status, 201);
    let renamed = hs256(&claims(json!({"name": "Ana B"})));
    assert_eq!(jwt_login(&s, &renamed).await.status, 201);
    assert_eq!(
        b.get("/v1/server/users/player:1").await.body["display_name"],
        "Ana B"
    );
    assert_eq!(jwt_login(&s, &hs256(&claims(json!({})))).await.status, 201);
    assert_eq!(
        b.get("/v1/server/users/player:1").await.body["display_name"],
        "Ana B"
    );
    // A new subject without `name` is named by its ID.
    let r = jwt_login(&s, &hs256(&claims(json!({"sub": "player:2"})))).await;
    assert_eq!(r.status, 201);
    assert_eq!(
        b.get("/v1/server/users/player:2").await.body["display_name"],
        "player:2"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_jwt_says_which_check_failed_and_never_echoes_it() {
    let s = TestServer::start_with(|c| {
        c.auth_jwt_secret = Some(SECRET.into());
        c.auth_jwt_issuer = Some(ISS.into());
        c.auth_jwt_audience = Some(AUD.into());
    })
    .await;
    let now = now_ms() / 1000;
    let good = hs256(&claims(json!({})));
    let mut tampered: Vec<&str> = good.split('.').collect();
    let evil = claims(json!({"sub": "admin"})).to_string();
    let evil = base64url(evil.as_bytes());
    tampered[1] = &evil;
    let tampered = tampered.join(".");
    let none = format!(
        "{}.{}.",
        base64url(br#"{"alg":"none","typ":"JWT"}"#),
        base64url(claims(json!({})).to_string().as_bytes())
    );
    let cases = [
        ("garbage".to_owned(), "jwt: malformed"),
        (none, "jwt: algorithm"),
        (
            rs256("rsa_a.key", None, &claims(json!({}))),
            "jwt: algorithm",
        ),
        (tampered, "jwt: signature"),
        (
            jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &claims(json!({})),
                &EncodingKey::from_secret(b"another secret of thirty-two bytes!!").unwrap(),
            )
            .unwrap(),
            "jwt: signature",
        ),
        (hs256(&claims(json!({"exp": now - 90}))), "jwt: expired"),
        (hs256(&claims(json!({"exp": null}))), "jwt: expired"),
        (
            hs256(&claims(json!({"nbf": now + 90}))),
            "jwt: not yet valid",
        ),
        (
            hs256(&claims(json!({"iss": "https://evil.example"}))),
            "jwt: issuer",
        ),
        (hs256(&claims(json!({"aud": "other"}))), "jwt: audience"),
        (
            hs256(&claims(json!({"sub": "u_server_made"}))),
            "jwt: subject",
        ),
        (hs256(&claims(json!({"sub": "has space"}))), "jwt: subject"),
    ];
    for (jwt, want) in &cases {
        let r = jwt_login(&s, jwt).await;
        assert_eq!(
            (r.status, r.code(), message(&r)),
            (401, "unauthorized", *want),
            "{jwt}"
        );
        let body = r.body.to_string();
        for part in jwt.split('.').filter(|p| p.len() > 8) {
            assert!(!body.contains(part), "the answer echoes the token: {body}");
        }
    }
    // Within the skew, both pass.
    let edge = hs256(&claims(json!({"exp": now - 30, "nbf": now + 30})));
    assert_eq!(jwt_login(&s, &edge).await.status, 201);
    // A JWT with a username is a bad request.
    let r = s
        .client()
        .post(
            "/v1/sessions",
            json!({"jwt": good, "username": "a", "device_id": "d", "platform": "web"}),
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "bad_request"));
    // Deactivated subjects are refused.
    assert_eq!(jwt_login(&s, &good).await.status, 201);
    assert_eq!(
        backend(&s).delete("/v1/server/users/player:1").await.status,
        204
    );
    let r = jwt_login(&s, &good).await;
    assert_eq!((r.status, message(&r)), (401, "jwt: deactivated"));
}

fn base64url(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_jwt_settings_a_jwt_is_not_configured() {
    let s = TestServer::start().await;
    let r = jwt_login(&s, &hs256(&claims(json!({})))).await;
    assert_eq!((r.status, message(&r)), (401, "jwt: not configured"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_keys_are_fetched_from_the_apps_server() {
    let keys = std::sync::Arc::new(parking_lot::Mutex::new(
        json!({"keys": [jwk("rsa_a.key", "A")]}),
    ));
    let served = keys.clone();
    let app = axum::Router::new().route(
        "/.well-known/jwks.json",
        axum::routing::get(move || {
            let v = served.lock().clone();
            async move { axum::Json(v) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/.well-known/jwks.json",
        listener.local_addr().unwrap()
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let s = TestServer::start_with(move |c| {
        c.auth_jwt_jwks_url = Some(url);
        c.auth_jwt_issuer = Some(ISS.into());
    })
    .await;
    let r = jwt_login(&s, &rs256("rsa_a.key", Some("A"), &claims(json!({})))).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    // Key B appears at the app's server; the key set was fetched under a
    // minute ago, so B stays unknown until the next allowed refetch (I-7;
    // the refetch itself is the verifier suite's).
    keys.lock()["keys"]
        .as_array_mut()
        .unwrap()
        .push(jwk("rsa_b.key", "B"));
    let r = jwt_login(&s, &rs256("rsa_b.key", Some("B"), &claims(json!({})))).await;
    assert_eq!((r.status, message(&r)), (401, "jwt: unknown kid"));
    // A's key under kid B's name is no better.
    let r = jwt_login(&s, &rs256("rsa_a.key", Some("B"), &claims(json!({})))).await;
    assert_eq!((r.status, message(&r)), (401, "jwt: unknown kid"));
    // With a JWKS only, a token without a kid has no key.
    let r = jwt_login(&s, &rs256("rsa_a.key", None, &claims(json!({})))).await;
    assert_eq!(r.status, 401, "{:?}", r.body);
}

fn jwk(private: &str, kid: &str) -> Value {
    let pem = std::fs::read(fixture(private)).unwrap();
    let key = EncodingKey::from_rsa_pem(&pem).unwrap();
    let mut k = jsonwebtoken::jwk::Jwk::from_encoding_key(&key, Algorithm::RS256).unwrap();
    k.common.key_id = Some(kid.to_owned());
    serde_json::to_value(k).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_public_key_algorithm_signs_in_and_another_key_fails() {
    for (alg, public, private, other) in [
        (Algorithm::RS256, "rsa_a.pub", "rsa_a.key", "rsa_b.key"),
        (Algorithm::ES256, "ec_a.pub", "ec_a.key", "ec_b.key"),
        (Algorithm::EdDSA, "ed_a.pub", "ed_a.key", "ed_b.key"),
    ] {
        let path = fixture(public);
        let s = TestServer::start_with(move |c| c.auth_jwt_public_key = Some(path)).await;
        let sign = |key: &str| {
            let pem = std::fs::read(fixture(key)).unwrap();
            let key = match alg {
                Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem),
                Algorithm::ES256 => EncodingKey::from_ec_pem(&pem),
                _ => EncodingKey::from_ed_pem(&pem),
            }
            .unwrap();
            jsonwebtoken::encode(&Header::new(alg), &claims(json!({})), &key).unwrap()
        };
        let r = jwt_login(&s, &sign(private)).await;
        assert_eq!(r.status, 201, "{alg:?}: {:?}", r.body);
        let r = jwt_login(&s, &sign(other)).await;
        assert_eq!((r.status, message(&r)), (401, "jwt: signature"), "{alg:?}");
        // The PEM key's algorithm only: an HS256 token has no key here.
        let r = jwt_login(&s, &hs256(&claims(json!({})))).await;
        assert_eq!((r.status, message(&r)), (401, "jwt: algorithm"), "{alg:?}");
    }
}
