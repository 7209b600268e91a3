//! Push setup over real HTTP (PROTOCOL-INTEGRATION I2.1, I-11, I-12):
//! registration for each provider when it is configured and `400` when it
//! is not or the registration is malformed, the alias, one device per
//! token across users, logout and device removal dropping the
//! registration, the VAPID key route, notification levels read back
//! through the conversation object, `mentions` checked on send, and a bad
//! key file stopping the server at start.
//!
//! long: one suite for the push setup routes; each test is independent.

use std::path::PathBuf;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use tokenim_server::Config;
use tokenim_server::push::config::{
    ApnsConfig, FcmConfig, PushConfig, WebPushConfig, WebhookConfig,
};
use tokenim_testkit::{TestServer, User};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tokenim-server/tests/fixtures/push")
        .join(name)
}

/// Every provider, with the test keys.
fn all_providers(allow_private: bool) -> impl FnOnce(&mut Config) {
    move |cfg: &mut Config| {
        cfg.push = PushConfig {
            apns: Some(ApnsConfig {
                key_file: Some(fixture("apns.p8")),
                key_id: Some("ABC123DEFG".into()),
                team_id: Some("TEAM123456".into()),
                topic: Some("com.example.chat".into()),
                ..Default::default()
            }),
            fcm: Some(FcmConfig {
                service_account_file: Some(fixture("service_account.json")),
                endpoint: None,
            }),
            webpush: Some(WebPushConfig {
                vapid_private_key_file: Some(fixture("vapid_sec1.pem")),
                subject: Some("mailto:ops@example.com".into()),
                allow_private,
            }),
            webhook: Some(WebhookConfig {
                url: Some("https://backend.example.com/push".into()),
                secret: Some("hook-secret".into()),
                secrets: None,
            }),
            ..Default::default()
        }
    }
}

const APNS_TOKEN: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";
/// base64url of 16 bytes.
const AUTH: &str = "AAECAwQFBgcICQoLDA0ODw";

/// A valid p256dh: the server's own VAPID public key is a P-256 point.
async fn p256dh(s: &TestServer) -> String {
    let r = s.client().get("/v1/push/webpush-key").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.body["public_key"].as_str().unwrap().to_owned()
}

fn webpush(endpoint: &str, p256dh: &str, auth: &str) -> Value {
    json!({"provider": "webpush", "subscription": {
        "endpoint": endpoint, "expirationTime": null,
        "keys": {"p256dh": p256dh, "auth": auth}}})
}

async fn register(u: &User, body: Value) -> tokenim_testkit::Resp {
    u.http.put("/v1/devices/current/push", Some(body)).await
}

async fn push_of(s: &TestServer, user: &str, device: &str) -> Option<tokenim_store::PushTarget> {
    s.app()
        .store
        .device(user, device)
        .await
        .unwrap()
        .expect("the device exists")
        .push
}

#[tokio::test]
async fn each_provider_registers_when_configured_and_a_new_one_replaces_it() {
    let s = TestServer::start_with(all_providers(false)).await;
    let alice = User::new(&s, "alice", "phone").await;

    let r = register(&alice, json!({"provider": "apns", "token": APNS_TOKEN})).await;
    assert_eq!(r.status, 204, "{:?}", r.body);
    let p = push_of(&s, &alice.id, "phone").await.unwrap();
    assert_eq!(
        (
            p.provider.as_str(),
            p.token.as_str(),
            p.environment.as_deref()
        ),
        ("apns", APNS_TOKEN, Some("production"))
    );
    let upper = APNS_TOKEN.to_ascii_uppercase();
    let r = register(
        &alice,
        json!({"provider": "apns", "token": upper, "environment": "sandbox"}),
    )
    .await;
    assert_eq!(r.status, 204, "{:?}", r.body);
    let p = push_of(&s, &alice.id, "phone").await.unwrap();
    assert_eq!(p.token, APNS_TOKEN, "hex tokens are kept in lowercase");
    assert_eq!(p.environment.as_deref(), Some("sandbox"));

    let r = register(
        &alice,
        json!({"provider": "fcm", "token": "fcm:APA91b-x_y"}),
    )
    .await;
    assert_eq!(r.status, 204, "{:?}", r.body);
    let p = push_of(&s, &alice.id, "phone").await.unwrap();
    assert_eq!((p.provider.as_str(), p.environment), ("fcm", None));

    let r = register(&alice, json!({"provider": "webhook", "token": "device-42"})).await;
    assert_eq!(r.status, 204, "{:?}", r.body);
    assert_eq!(
        push_of(&s, &alice.id, "phone").await.unwrap().provider,
        "webhook"
    );

    let key = p256dh(&s).await;
    let endpoint = "https://fcm.googleapis.com/fcm/send/abc:def";
    let r = register(&alice, webpush(endpoint, &key, AUTH)).await;
    assert_eq!(r.status, 204, "{:?}", r.body);
    let p = push_of(&s, &alice.id, "phone").await.unwrap();
    assert_eq!(
        (p.provider.as_str(), p.token.as_str()),
        ("webpush", endpoint)
    );
    assert_eq!(
        (p.p256dh.as_deref(), p.auth.as_deref()),
        (Some(key.as_str()), Some(AUTH))
    );

    // The alias, for the one-token providers.
    let r = alice
        .http
        .put(
            "/v1/push-token",
            Some(json!({"provider": "fcm", "token": "alias-token"})),
        )
        .await;
    assert_eq!(r.status, 204, "{:?}", r.body);
    assert_eq!(
        push_of(&s, &alice.id, "phone").await.unwrap().token,
        "alias-token"
    );
    let r = alice
        .http
        .put(
            "/v1/push-token",
            Some(json!({"provider": "apns", "token": APNS_TOKEN})),
        )
        .await;
    assert_eq!(r.status, 204, "{:?}", r.body);
    assert_eq!(
        push_of(&s, &alice.id, "phone")
            .await
            .unwrap()
            .environment
            .as_deref(),
        Some("production")
    );

    let r = alice.http.delete("/v1/devices/current/push").await;
    assert_eq!(r.status, 204, "{:?}", r.body);
    assert!(push_of(&s, &alice.id, "phone").await.is_none());
    let r = alice.http.delete("/v1/devices/current/push").await;
    assert_eq!(r.status, 204, "dropping none is fine: {:?}", r.body);

    let anon = s.client();
    let r = anon
        .put(
            "/v1/devices/current/push",
            Some(json!({"provider": "fcm", "token": "t"})),
        )
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(anon.delete("/v1/devices/current/push").await.status, 401);
}

#[tokio::test]
async fn malformed_registrations_are_400() {
    let s = TestServer::start_with(all_providers(false)).await;
    let alice = User::new(&s, "alice", "phone").await;
    let key = p256dh(&s).await;
    let ok = "https://updates.push.services.mozilla.com/wpush/v2/abc";
    let point = URL_SAFE_NO_PAD.decode(&key).unwrap();
    let mut off_curve = point.clone();
    off_curve[64] ^= 1;
    let compressed = {
        let mut c = vec![2 + (point[64] & 1)];
        c.extend_from_slice(&point[1..33]);
        c
    };
    let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
    let cases = [
        (json!({"provider": "apns", "token": "xyz"}), "apns token"),
        (json!({"provider": "apns", "token": "abc"}), "apns token"),
        (json!({"provider": "apns", "token": ""}), "apns token"),
        (
            json!({"provider": "apns", "token": APNS_TOKEN, "environment": "staging"}),
            "environment",
        ),
        (json!({"provider": "apns"}), "token"),
        (json!({"provider": "fcm", "token": ""}), "fcm token"),
        (json!({"provider": "fcm", "token": "a b"}), "fcm token"),
        (
            json!({"provider": "fcm", "token": "x".repeat(4097)}),
            "fcm token",
        ),
        (
            json!({"provider": "webhook", "token": "a\nb"}),
            "webhook token",
        ),
        (
            json!({"provider": "pigeon", "token": "t"}),
            "provider must be",
        ),
        (json!({"token": "t"}), "provider"),
        (webpush("http://push.example.com/x", &key, AUTH), "https"),
        (webpush("https://127.0.0.1/x", &key, AUTH), "private"),
        (webpush("https://192.168.0.10/x", &key, AUTH), "private"),
        (webpush("https://[::1]:8443/x", &key, AUTH), "private"),
        (webpush("https://localhost/x", &key, AUTH), "private"),
        (webpush("not a url", &key, AUTH), "endpoint"),
        (webpush(ok, "not base64!", AUTH), "p256dh"),
        (webpush(ok, &b64(&point[..64]), AUTH), "p256dh"),
        (webpush(ok, &b64(&compressed), AUTH), "p256dh"),
        (webpush(ok, &b64(&off_curve), AUTH), "curve"),
        (webpush(ok, &b64(&[4u8; 65]), AUTH), "curve"),
        (webpush(ok, &key, &b64(&[0u8; 15])), "auth"),
        (webpush(ok, &key, "***"), "auth"),
        (
            json!({"provider": "webpush", "subscription": {"endpoint": ok}}),
            "keys",
        ),
    ];
    for (body, word) in cases {
        let r = register(&alice, body.clone()).await;
        assert_eq!(r.status, 400, "{body}: {:?}", r.body);
        assert_eq!(r.code(), "bad_request", "{body}");
        let msg = r.body["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(word), "{body}: {msg:?} lacks {word:?}");
    }
    let r = alice.http.put("/v1/devices/current/push", None).await;
    assert_eq!(r.status, 400);
    assert!(
        push_of(&s, &alice.id, "phone").await.is_none(),
        "nothing was stored"
    );
    // Web Push is not possible through the alias.
    for (provider, word) in [
        ("webpush", "/v1/devices/current/push"),
        ("pigeon", "provider"),
    ] {
        let r = alice
            .http
            .put(
                "/v1/push-token",
                Some(json!({"provider": provider, "token": ok})),
            )
            .await;
        assert_eq!(r.status, 400, "{provider}: {:?}", r.body);
        let msg = r.body["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(word), "{msg}");
    }
}

#[tokio::test]
async fn unconfigured_providers_are_400_and_there_is_no_webpush_key() {
    let s = TestServer::start().await;
    let alice = User::new(&s, "alice", "phone").await;
    let key = URL_SAFE_NO_PAD.encode([4u8; 65]);
    for (body, provider) in [
        (json!({"provider": "apns", "token": APNS_TOKEN}), "apns"),
        (json!({"provider": "fcm", "token": "t"}), "fcm"),
        (json!({"provider": "webhook", "token": "t"}), "webhook"),
        (webpush("https://push.example.com/x", &key, AUTH), "webpush"),
    ] {
        let r = register(&alice, body).await;
        assert_eq!(r.status, 400, "{provider}: {:?}", r.body);
        let msg = r.body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            msg.contains(provider) && msg.contains("not configured"),
            "{msg}"
        );
    }
    let r = alice
        .http
        .put(
            "/v1/push-token",
            Some(json!({"provider": "apns", "token": APNS_TOKEN})),
        )
        .await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    let r = s.client().get("/v1/push/webpush-key").await;
    assert_eq!(r.status, 404, "{:?}", r.body);
    assert_eq!(r.code(), "not_found");
}

#[tokio::test]
async fn the_webpush_key_is_the_vapid_public_key_without_auth() {
    let s = TestServer::start_with(all_providers(true)).await;
    let r = s.client().get("/v1/push/webpush-key").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let key = r.body["public_key"].as_str().unwrap();
    let wp = s.app().push.webpush.as_ref().unwrap();
    assert_eq!(key, wp.public_key);
    let point = URL_SAFE_NO_PAD.decode(key).unwrap();
    assert_eq!((point.len(), point[0]), (65, 4));
    // With allow_private, a test's own plain-HTTP push service is fine.
    let alice = User::new(&s, "alice", "web").await;
    let r = register(&alice, webpush("http://127.0.0.1:9/push/1", key, AUTH)).await;
    assert_eq!(r.status, 204, "{:?}", r.body);
}

#[tokio::test]
async fn a_token_belongs_to_the_device_that_registered_it_last() {
    let s = TestServer::start_with(all_providers(false)).await;
    let alice = User::new(&s, "alice", "phone").await;
    let bob = User::new(&s, "bob", "phone").await;
    let alice_tab = alice.device(&s, "tablet").await;
    let body = json!({"provider": "fcm", "token": "shared-token"});
    assert_eq!(register(&alice, body.clone()).await.status, 204);
    assert_eq!(register(&bob, body.clone()).await.status, 204);
    assert!(push_of(&s, &alice.id, "phone").await.is_none());
    assert_eq!(
        push_of(&s, &bob.id, "phone").await.unwrap().token,
        "shared-token"
    );
    let store = &s.app().store;
    assert_eq!(
        store.push_device("fcm", "shared-token").await.unwrap(),
        Some((bob.id.clone(), "phone".to_owned()))
    );
    // Web Push: the endpoint is the token, whatever the keys.
    let key = p256dh(&s).await;
    let ep = "https://web.push.apple.com/QGx-1";
    assert_eq!(
        register(&alice_tab, webpush(ep, &key, AUTH)).await.status,
        204
    );
    let other_auth = URL_SAFE_NO_PAD.encode([9u8; 16]);
    assert_eq!(
        register(&bob, webpush(ep, &key, &other_auth)).await.status,
        204
    );
    assert!(push_of(&s, &alice.id, "tablet").await.is_none());
    let p = push_of(&s, &bob.id, "phone").await.unwrap();
    assert_eq!((p.token.as_str(), p.auth), (ep, Some(other_auth)));
    assert_eq!(
        store.push_device("fcm", "shared-token").await.unwrap(),
        None,
        "bob's new registration replaced the fcm one"
    );
}

#[tokio::test]
async fn logout_and_device_removal_drop_the_registration() {
    let s = TestServer::start_with(all_providers(false)).await;
    let alice = User::new(&s, "alice", "phone").await;
    let laptop = alice.device(&s, "laptop").await;
    let tablet = alice.device(&s, "tablet").await;
    for (u, token) in [
        (&alice, "t-phone"),
        (&laptop, "t-laptop"),
        (&tablet, "t-tab"),
    ] {
        let r = register(u, json!({"provider": "fcm", "token": token})).await;
        assert_eq!(r.status, 204, "{:?}", r.body);
    }
    // Logout keeps the device but not its registration.
    assert_eq!(alice.http.delete("/v1/sessions/current").await.status, 204);
    let devices = laptop.http.get("/v1/devices").await.body;
    let ids: Vec<&str> = devices["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["device_id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"phone"), "{devices}");
    assert!(push_of(&s, &alice.id, "phone").await.is_none());
    assert!(push_of(&s, &alice.id, "laptop").await.is_some());
    // Removing a device removes it with its registration.
    let r = laptop.http.delete("/v1/devices/tablet").await;
    assert_eq!(r.status, 204, "{:?}", r.body);
    let store = &s.app().store;
    assert!(store.device(&alice.id, "tablet").await.unwrap().is_none());
    assert_eq!(store.push_device("fcm", "t-tab").await.unwrap(), None);
    // The token is free for another device.
    let bob = User::new(&s, "bob", "phone").await;
    let r = register(&bob, json!({"provider": "fcm", "token": "t-tab"})).await;
    assert_eq!(r.status, 204);
    assert!(push_of(&s, &alice.id, "laptop").await.is_some());
    // Deactivation drops every registration of the user (I1.2).
    let backend = s.client().with_token("test-admin");
    let r = backend
        .delete(&format!("/v1/server/users/{}", alice.id))
        .await;
    assert_eq!(r.status, 204, "{:?}", r.body);
    assert!(push_of(&s, &alice.id, "laptop").await.is_none());
    assert_eq!(store.push_device("fcm", "t-laptop").await.unwrap(), None);
}

fn notifications(conv: &Value) -> (String, Value) {
    let n = &conv["notifications"];
    (n["level"].as_str().unwrap().to_owned(), n["until"].clone())
}

#[tokio::test]
async fn notification_levels_read_back_through_the_conversation() {
    let s = TestServer::start().await;
    let alice = User::new(&s, "alice", "phone").await;
    let bob = User::new(&s, "bob", "phone").await;
    let carol = User::new(&s, "carol", "phone").await;
    let conv = alice.direct(&bob).await;
    let path = format!("/v1/conversations/{conv}");
    let set = |u: &User, body: Value| {
        let http = u.http.clone();
        let p = format!("{path}/notifications");
        async move { http.put(&p, Some(body)).await }
    };
    let get = |u: &User| {
        let http = u.http.clone();
        let p = path.clone();
        async move {
            let r = http.get(&p).await;
            assert_eq!(r.status, 200, "{:?}", r.body);
            notifications(&r.body)
        }
    };
    assert_eq!(get(&alice).await, ("all".to_owned(), Value::Null));

    let r = set(&alice, json!({"level": "mentions"})).await;
    assert_eq!(r.status, 204, "{:?}", r.body);
    assert_eq!(get(&alice).await, ("mentions".to_owned(), Value::Null));
    assert_eq!(
        get(&bob).await,
        ("all".to_owned(), Value::Null),
        "for the caller only"
    );
    let later = tokenim_core::clock::now_ms() + 3_600_000;
    let r = set(&alice, json!({"level": "none", "until": later})).await;
    assert_eq!(r.status, 204, "{:?}", r.body);
    assert_eq!(get(&alice).await, ("none".to_owned(), json!(later)));
    // Sending (which moves the sender's read marker) keeps the level.
    let r = alice
        .http
        .post(
            &format!("{path}/messages"),
            json!({"client_msg_id": "n1", "content": {"type": "text", "text": "hi"}}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(get(&alice).await, ("none".to_owned(), json!(later)));
    // The list shows it too.
    let list = alice.http.get("/v1/conversations").await.body;
    let mine = list["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["conv_id"] == conv.as_str())
        .expect("listed")
        .clone();
    assert_eq!(notifications(&mine), ("none".to_owned(), json!(later)));
    // A level whose until has passed reads as all.
    let past = tokenim_core::clock::now_ms() - 1_000;
    let r = set(&alice, json!({"level": "none", "until": past})).await;
    assert_eq!(r.status, 204);
    assert_eq!(get(&alice).await, ("all".to_owned(), Value::Null));
    let r = set(&alice, json!({"level": "all", "until": null})).await;
    assert_eq!(r.status, 204);
    assert_eq!(get(&alice).await, ("all".to_owned(), Value::Null));

    for bad in [
        json!({"level": "some"}),
        json!({"until": 5}),
        json!({"level": "none", "until": "soon"}),
        json!({"level": "none", "extra": 1}),
    ] {
        let r = set(&alice, bad.clone()).await;
        assert_eq!(r.status, 400, "{bad}: {:?}", r.body);
    }
    let r = set(&carol, json!({"level": "none"})).await;
    assert_eq!(r.status, 404, "not a member: {:?}", r.body);
    assert_eq!(r.code(), "not_found");
    let r = carol
        .http
        .put(
            "/v1/conversations/c_nope/notifications",
            Some(json!({"level": "none"})),
        )
        .await;
    assert_eq!(r.status, 404);
    let r = s
        .client()
        .put(
            &format!("{path}/notifications"),
            Some(json!({"level": "none"})),
        )
        .await;
    assert_eq!(r.status, 401);
}

#[tokio::test]
async fn mentions_are_checked_on_send() {
    let s = TestServer::start().await;
    let alice = User::new(&s, "alice", "phone").await;
    let bob = User::new(&s, "bob", "phone").await;
    let conv = alice.direct(&bob).await;
    let path = format!("/v1/conversations/{conv}/messages");
    let send = |n: u32, content: Value| {
        alice.http.post(
            &path,
            json!({"client_msg_id": format!("m{n}"), "content": content}),
        )
    };
    let r = send(
        1,
        json!({"type": "text", "text": "hi @bob", "mentions": [bob.id]}),
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let many: Vec<String> = (0..100).map(|i| format!("u{i}")).collect();
    let r = send(2, json!({"type": "text", "text": "all", "mentions": many})).await;
    assert_eq!(r.status, 201, "100 is the most: {:?}", r.body);
    let too_many: Vec<String> = (0..101).map(|i| format!("u{i}")).collect();
    for (n, mentions) in [
        (3, json!(too_many)),
        (4, json!(bob.id)),
        (5, json!([1, 2])),
        (6, json!(["has space"])),
        (7, json!([""])),
        (8, json!(null)),
        (9, json!({"user": bob.id})),
    ] {
        let r = send(
            n,
            json!({"type": "text", "text": "x", "mentions": mentions}),
        )
        .await;
        assert_eq!(r.status, 400, "{mentions}: {:?}", r.body);
        assert_eq!(r.code(), "bad_request");
    }
    // The accepted mentions are kept in the content as sent.
    let r = alice
        .http
        .get(&format!("/v1/conversations/{conv}/events"))
        .await;
    let events = r.body["events"].as_array().unwrap().clone();
    let first = events
        .iter()
        .find(|e| e["content"]["text"] == "hi @bob")
        .expect("stored");
    assert_eq!(first["content"]["mentions"], json!([bob.id]));
}

#[tokio::test]
async fn a_bad_key_file_stops_the_server_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = tokenim_testkit::test_config(dir.path());
    all_providers(false)(&mut cfg);
    if let Some(a) = cfg.push.apns.as_mut() {
        a.key_file = Some(fixture("p384.p8"));
    }
    let store = tokenim_server::open_store(&cfg).await.expect("store");
    let e = match tokenim_server::start(cfg, store).await {
        Ok(_) => panic!("a P-384 key must not start the server"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        e.contains("[push.apns] key_file") && e.contains("p384.p8"),
        "{e}"
    );
    assert!(!e.contains("BEGIN"), "{e}");
}
