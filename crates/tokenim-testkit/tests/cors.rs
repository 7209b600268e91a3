//! CORS (PROTOCOL-INTEGRATION I1.5) and closed registration over real HTTP
//! and WebSocket against the real server: preflights and answers for listed
//! origins carry exactly the contract's headers, errors included; unlisted
//! origins, a server without origins, the app backend's `/v1/server/` and
//! `/v1/admin/` routes and the socket upgrade get none.

use reqwest::header::HeaderMap;
use serde_json::json;
use tokenim_testkit::{Http, TestServer, User, WAIT, Ws};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const APP: &str = "https://app.example.com";
const OTHER: &str = "http://localhost:5173";

/// Every CORS response header the server could send.
const CORS_HEADERS: [&str; 7] = [
    "access-control-allow-origin",
    "access-control-allow-methods",
    "access-control-allow-headers",
    "access-control-max-age",
    "access-control-expose-headers",
    "access-control-allow-credentials",
    "vary",
];

async fn with_origins(origins: &[&str]) -> TestServer {
    let origins: Vec<String> = origins.iter().map(|s| s.to_string()).collect();
    TestServer::start_with(|c| c.cors_origins = origins).await
}

struct Answer {
    status: u16,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ASCII header"))
    }

    /// The CORS headers present, by name.
    fn cors(&self) -> Vec<&'static str> {
        CORS_HEADERS
            .into_iter()
            .filter(|h| self.headers.contains_key(*h))
            .collect()
    }

    /// The answer to a request from `origin` on a CORS route.
    fn assert_simple(&self, origin: &str) {
        assert_eq!(self.header("access-control-allow-origin"), Some(origin));
        assert_eq!(self.header("vary"), Some("Origin"));
        assert_eq!(
            self.header("access-control-expose-headers"),
            Some("Retry-After")
        );
        assert_eq!(
            self.cors(),
            [
                "access-control-allow-origin",
                "access-control-expose-headers",
                "vary"
            ],
            "{:?}",
            self.headers
        );
    }

    fn assert_preflight(&self, origin: &str) {
        assert_eq!(self.status, 204, "{}", self.body);
        assert!(self.body.is_empty(), "{}", self.body);
        assert_eq!(self.header("access-control-allow-origin"), Some(origin));
        assert_eq!(
            self.header("access-control-allow-methods"),
            Some("GET, POST, PUT, PATCH, DELETE")
        );
        assert_eq!(
            self.header("access-control-allow-headers"),
            Some("Authorization, Content-Type")
        );
        assert_eq!(self.header("access-control-max-age"), Some("600"));
        assert_eq!(self.header("vary"), Some("Origin"));
        assert!(!self.headers.contains_key("access-control-expose-headers"));
        assert!(
            !self
                .headers
                .contains_key("access-control-allow-credentials")
        );
    }

    /// No CORS header at all, and for an `OPTIONS` not CORS's `204`.
    fn assert_none(&self) {
        assert_eq!(self.cors(), Vec::<&str>::new(), "{:?}", self.headers);
        assert_ne!(self.status, 204);
    }
}

/// A request with optional `Origin`, bearer token and JSON body.
async fn call(
    s: &TestServer,
    method: &str,
    path: &str,
    origin: Option<&[u8]>,
    token: Option<&str>,
    body: Option<serde_json::Value>,
) -> Answer {
    let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut r = reqwest::Client::new().request(m, format!("{}{}", s.http, path));
    if let Some(o) = origin {
        r = r.header(
            "origin",
            reqwest::header::HeaderValue::from_bytes(o).expect("header value"),
        );
    }
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = tokio::time::timeout(WAIT, r.send())
        .await
        .expect("answer in time")
        .expect("HTTP request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.text().await.expect("body");
    Answer {
        status,
        headers,
        body,
    }
}

/// A preflight as a browser sends it.
async fn preflight(s: &TestServer, path: &str, origin: &str) -> Answer {
    call(s, "OPTIONS", path, Some(origin.as_bytes()), None, None).await
}

fn is_json_error(a: &Answer, code: &str) {
    let v: serde_json::Value = serde_json::from_str(&a.body).expect("JSON body");
    assert_eq!(v["error"]["code"], code, "{}", a.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preflight_from_a_listed_origin_is_answered_with_exactly_the_contract() {
    let s = with_origins(&[APP, OTHER]).await;
    for path in ["/v1/me", "/v1/conversations/c1/messages", "/v1/sessions"] {
        preflight(&s, path, APP).await.assert_preflight(APP);
        preflight(&s, path, OTHER).await.assert_preflight(OTHER);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_and_errors_for_a_listed_origin_carry_the_headers() {
    let s = with_origins(&[APP]).await;
    let o = Some(APP.as_bytes());
    let alice = User::new(&s, "alice", "web").await;
    let bob = s.client().register("bob").await;
    let token = alice.http.token();

    let me = call(&s, "GET", "/v1/me", o, Some(token), None).await;
    assert_eq!(me.status, 200, "{}", me.body);
    me.assert_simple(APP);
    let conv = call(
        &s,
        "POST",
        "/v1/conversations",
        o,
        Some(token),
        Some(json!({"type": "direct", "peer": bob})),
    )
    .await;
    assert_eq!(conv.status, 201, "{}", conv.body);
    conv.assert_simple(APP);

    // Errors: unauthorized, an unknown route, a method the route lacks.
    let e = call(&s, "GET", "/v1/me", o, None, None).await;
    assert_eq!(e.status, 401);
    is_json_error(&e, "unauthorized");
    e.assert_simple(APP);
    let e = call(&s, "GET", "/v1/nothing-here", o, Some(token), None).await;
    assert_eq!(e.status, 404);
    is_json_error(&e, "not_found");
    e.assert_simple(APP);
    let e = call(&s, "PUT", "/v1/me", o, Some(token), None).await;
    assert_eq!(e.status, 405);
    e.assert_simple(APP);

    // A rate-limited answer, whose Retry-After the browser may read: on a
    // server allowing one login attempt a minute.
    let s = TestServer::start_with(|c| {
        c.cors_origins = vec![APP.to_owned()];
        c.limits.login_rate_per_min = 1;
        c.limits.login_burst = 1;
    })
    .await;
    let login = json!({"username": "alice", "password": "wrong", "device_id": "web",
                       "platform": "web"});
    let mut limited = None;
    for _ in 0..3 {
        let a = call(&s, "POST", "/v1/sessions", o, None, Some(login.clone())).await;
        a.assert_simple(APP);
        if a.status == 429 {
            limited = Some(a);
            break;
        }
        assert_eq!(a.status, 401, "{}", a.body);
    }
    let limited = limited.expect("the login limit answers 429");
    is_json_error(&limited, "rate_limited");
    assert!(limited.header("retry-after").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unlisted_origin_gets_no_cors_headers() {
    let s = with_origins(&[APP]).await;
    let alice = User::new(&s, "alice", "web").await;
    let long = format!("{APP}{}", "a".repeat(1100));
    let unlisted: [&[u8]; 7] = [
        b"https://evil.example.com",
        b"https://app.example.com:443",
        b"http://app.example.com",
        b"https://APP.example.com",
        b"https://app.example.com/",
        "https://app.example.com\u{e9}".as_bytes(),
        long.as_bytes(),
    ];
    for o in unlisted {
        let a = call(&s, "OPTIONS", "/v1/me", Some(o), None, None).await;
        a.assert_none();
        assert_eq!(a.status, 405, "{}", a.body);
        is_json_error(&a, "bad_request");
        let a = call(&s, "GET", "/v1/me", Some(o), Some(alice.http.token()), None).await;
        assert_eq!(a.status, 200, "{}", a.body);
        a.assert_none();
    }
    // No Origin at all (not a browser's cross-origin request).
    let a = call(&s, "GET", "/v1/me", None, Some(alice.http.token()), None).await;
    assert_eq!(a.status, 200);
    a.assert_none();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_configured_origins_there_are_no_cors_headers() {
    let s = TestServer::start().await;
    let alice = User::new(&s, "alice", "web").await;
    for o in [APP, "*", "null"] {
        let a = preflight(&s, "/v1/me", o).await;
        a.assert_none();
        assert_eq!(a.status, 405);
        let a = preflight(&s, "/v1/nothing-here", o).await;
        a.assert_none();
        assert_eq!(a.status, 404);
        let a = call(
            &s,
            "GET",
            "/v1/me",
            Some(o.as_bytes()),
            Some(alice.http.token()),
            None,
        )
        .await;
        assert_eq!(a.status, 200);
        a.assert_none();
        let a = call(&s, "GET", "/v1/me", Some(o.as_bytes()), None, None).await;
        assert_eq!(a.status, 401);
        a.assert_none();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_and_admin_routes_never_carry_cors_headers() {
    for origins in [&["*"][..], &[APP][..]] {
        let s = with_origins(origins).await;
        let o = Some(APP.as_bytes());
        for path in [
            "/v1/server/users",
            "/v1/admin/users",
            "/v1/server",
            "/v1/admin",
        ] {
            let a = preflight(&s, path, APP).await;
            a.assert_none();
            assert!(a.status == 405 || a.status == 404, "{path}: {}", a.status);
            is_json_error(
                &a,
                if a.status == 404 {
                    "not_found"
                } else {
                    "bad_request"
                },
            );
        }
        let users = json!({"users": [{"username": "carol", "password": "password1"}]});
        let a = call(
            &s,
            "POST",
            "/v1/server/users",
            o,
            Some("test-admin"),
            Some(users),
        )
        .await;
        assert_eq!(a.status, 200, "{}", a.body);
        a.assert_none();
        let a = call(&s, "POST", "/v1/admin/users", o, None, Some(json!({}))).await;
        assert_eq!(a.status, 401, "{}", a.body);
        a.assert_none();
        let a = call(
            &s,
            "GET",
            "/v1/server/conversations/nope",
            o,
            Some("test-admin"),
            None,
        )
        .await;
        assert!(a.status >= 400, "{}", a.body);
        a.assert_none();
        // The client API next door still gets them.
        let a = call(&s, "GET", "/v1/me", o, None, None).await;
        let want = if origins == ["*"] { "*" } else { APP };
        a.assert_simple(want);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_star_allows_every_origin_and_answers_star() {
    let s = with_origins(&["*"]).await;
    let alice = User::new(&s, "alice", "web").await;
    for o in ["https://anything.example", OTHER, "null"] {
        preflight(&s, "/v1/me", o).await.assert_preflight("*");
        let a = call(
            &s,
            "GET",
            "/v1/me",
            Some(o.as_bytes()),
            Some(alice.http.token()),
            None,
        )
        .await;
        assert_eq!(a.status, 200);
        a.assert_simple("*");
        let a = call(&s, "GET", "/v1/me", Some(o.as_bytes()), None, None).await;
        assert_eq!(a.status, 401);
        a.assert_simple("*");
    }
    // Still nothing without an Origin.
    let a = call(&s, "GET", "/v1/me", None, Some(alice.http.token()), None).await;
    a.assert_none();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_upgrade_ignores_origin() {
    let s = with_origins(&[APP]).await;
    let alice = User::new(&s, "alice", "web").await;
    for o in [APP, "https://evil.example.com"] {
        let mut req = s.ws.as_str().into_client_request().expect("ws request");
        req.headers_mut()
            .insert("origin", o.parse().expect("header value"));
        let (stream, resp) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req))
            .await
            .expect("upgrade in time")
            .expect("upgrade");
        assert_eq!(resp.status(), 101);
        for h in CORS_HEADERS {
            assert!(!resp.headers().contains_key(h), "{h} on the upgrade");
        }
        let mut ws = Ws::from_stream(stream);
        ws.send(json!({"type": "auth", "token": alice.http.token()}))
            .await;
        assert_eq!(ws.recv().await["type"], "auth_ok");
    }
    // An OPTIONS on the socket's path is no preflight either.
    preflight(&s, "/v1/ws", APP).await.assert_none();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_registration_leaves_account_creation_to_the_backend() {
    let s = TestServer::start_with(|c| {
        c.registration = tokenim_server::config::Registration::Closed;
    })
    .await;
    let anyone = s.client();
    let r = anyone
        .post(
            "/v1/accounts",
            json!({"username": "mallory", "password": "password1"}),
        )
        .await;
    assert_eq!(r.status, 403, "{:?}", r.body);
    assert_eq!(r.code(), "forbidden");

    let backend: Http = s.client().with_token("test-admin");
    let r = backend
        .post(
            "/v1/server/users",
            json!({"users": [{"username": "alice", "password": "password1"}]}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let id = r.body["user_ids"][0]
        .as_str()
        .expect("a user ID")
        .to_owned();
    // The new user can log in and is who the backend made.
    let alice = anyone.login("alice", "web").await;
    let me = alice.get("/v1/me").await;
    assert_eq!(me.body["user_id"], id.as_str());
    // Still closed for a name the backend did not take either.
    let r = anyone
        .post(
            "/v1/accounts",
            json!({"username": "bob", "password": "password1"}),
        )
        .await;
    assert_eq!(r.status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_origin_stops_startup_with_a_clear_message() {
    tokenim_testkit::init_crypto();
    let dir = tempfile::tempdir().expect("temp dir");
    for bad in ["https://app.example.com/", "app.example.com", "ftp://a.com"] {
        let mut cfg = tokenim_testkit::test_config(dir.path());
        cfg.cors_origins = vec![APP.to_owned(), bad.to_owned()];
        let store = tokenim_server::open_store(&cfg).await.expect("store");
        let e = match tokenim_server::start(cfg, store).await {
            Ok(_) => panic!("{bad} was accepted"),
            Err(e) => format!("{e:#}"),
        };
        assert!(e.contains("CORS origin") && e.contains(bad), "{e}");
    }
}
