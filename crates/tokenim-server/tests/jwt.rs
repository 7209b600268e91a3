//! The JWT verifier (PROTOCOL-INTEGRATION I1.3, I-6, I-7) on tokens signed
//! here with the test-only keys of `tests/fixtures/jwt/` (made with openssl,
//! see its README), and a JWKS served by a real local HTTP server that the
//! tests rotate, break and stop. Storage plays no part, so these run once.
//! long: one case per check of I1.3 and I-7, each with its own tokens,
//! sharing the key-loading and JWKS-server helpers at the top.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokenim_proto::ErrorCode;
use tokenim_server::Config;
use tokenim_server::jwt::{self, JwksTiming, JwtAuth, JwtIdentity};

const SECRET: &str = "an HS256 secret of at least thirty-two bytes";
const ISS: &str = "https://id.example.com";
const AUD: &str = "tokenim-test";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/jwt")
        .join(name)
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Valid claims for `alice`, changed by `extra` (a `null` removes a claim).
fn claims(extra: Value) -> Value {
    let mut c = json!({"sub": "alice", "iss": ISS, "aud": AUD, "exp": now() + 600});
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    c
}

/// The signing key of `alg`: `name` is a fixture's private key, or the
/// secret itself for HS256.
fn signing_key(alg: Algorithm, name: &str) -> EncodingKey {
    if alg == Algorithm::HS256 {
        return EncodingKey::from_secret(name.as_bytes()).unwrap();
    }
    let pem = std::fs::read(fixture(name)).unwrap();
    match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem),
        Algorithm::ES256 => EncodingKey::from_ec_pem(&pem),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem),
        other => panic!("no test key for {other:?}"),
    }
    .unwrap()
}

fn token(alg: Algorithm, key: &str, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &signing_key(alg, key)).unwrap()
}

/// A token put together by hand, signature part as given.
fn raw(header: &Value, claims: &Value, signature: &str) -> String {
    let part = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap());
    format!("{}.{}.{signature}", part(header), part(claims))
}

/// A verifier with the test issuer and audience, and `set`'s keys.
fn auth(set: impl FnOnce(&mut Config)) -> Arc<JwtAuth> {
    auth_with(set, JwksTiming::default())
}

fn auth_with(set: impl FnOnce(&mut Config), timing: JwksTiming) -> Arc<JwtAuth> {
    let mut cfg = Config {
        auth_jwt_issuer: Some(ISS.into()),
        auth_jwt_audience: Some(AUD.into()),
        ..Config::default()
    };
    set(&mut cfg);
    JwtAuth::from_config_with(&cfg, timing)
        .expect("a valid JWT configuration")
        .expect("a key is configured")
}

fn with_secret(cfg: &mut Config) {
    cfg.auth_jwt_secret = Some(SECRET.into());
}

fn with_pem(name: &'static str) -> impl FnOnce(&mut Config) {
    move |cfg: &mut Config| cfg.auth_jwt_public_key = Some(fixture(name))
}

/// The message of the `401 unauthorized` that `token` gets.
async fn refused(auth: &JwtAuth, token: &str) -> String {
    match auth.verify(token).await {
        Ok(id) => panic!("token accepted for {id:?}"),
        Err(e) => {
            assert_eq!(e.code, ErrorCode::Unauthorized, "{e}");
            e.message
        }
    }
}

async fn accepted(auth: &JwtAuth, token: &str) -> JwtIdentity {
    auth.verify(token).await.expect("a valid token")
}

#[tokio::test]
async fn hs256_passes_with_the_secret_and_reads_the_name() {
    let a = auth(with_secret);
    let t = token(
        Algorithm::HS256,
        SECRET,
        None,
        &claims(json!({"name": "Alice A."})),
    );
    assert_eq!(
        accepted(&a, &t).await,
        JwtIdentity {
            sub: "alice".into(),
            name: Some("Alice A.".into())
        }
    );
    // A name that is no valid display name is left out, not refused.
    for bad in [
        json!("line\nbreak"),
        json!("x".repeat(129)),
        json!(""),
        json!(7),
    ] {
        let t = token(
            Algorithm::HS256,
            SECRET,
            None,
            &claims(json!({"name": bad})),
        );
        assert_eq!(accepted(&a, &t).await.name, None, "name {bad}");
    }
    let t = token(Algorithm::HS256, SECRET, None, &claims(json!({})));
    assert_eq!(accepted(&a, &t).await.name, None);
}

#[tokio::test]
async fn rs256_es256_and_eddsa_pass_with_their_pem_key_and_fail_with_another() {
    let cases = [
        (Algorithm::RS256, "rsa_a.pub", "rsa_a.key", "rsa_b.key"),
        (
            Algorithm::RS256,
            "rsa_a_pkcs1.pub",
            "rsa_a.key",
            "rsa_b.key",
        ),
        (Algorithm::ES256, "ec_a.pub", "ec_a.key", "ec_b.key"),
        (Algorithm::EdDSA, "ed_a.pub", "ed_a.key", "ed_b.key"),
    ];
    for (alg, public, private, other) in cases {
        let a = auth(with_pem(public));
        let good = token(alg, private, None, &claims(json!({"sub": "ext:bob-1"})));
        assert_eq!(
            accepted(&a, &good).await.sub,
            "ext:bob-1",
            "{alg:?} {public}"
        );
        // A kid with no JWKS configured: the PEM key still checks it.
        let with_kid = token(alg, private, Some("k1"), &claims(json!({})));
        assert_eq!(accepted(&a, &with_kid).await.sub, "alice", "{alg:?} kid");
        let wrong = token(alg, other, None, &claims(json!({})));
        assert_eq!(
            refused(&a, &wrong).await,
            "jwt: signature",
            "{alg:?} {other}"
        );
    }
}

#[tokio::test]
async fn a_wrong_secret_a_tampered_payload_or_a_bad_signature_fail_signature() {
    let a = auth(with_secret);
    let other = token(
        Algorithm::HS256,
        "another secret, also thirty-two bytes",
        None,
        &claims(json!({})),
    );
    assert_eq!(refused(&a, &other).await, "jwt: signature");

    let good = token(Algorithm::HS256, SECRET, None, &claims(json!({})));
    let parts: Vec<&str> = good.split('.').collect();
    let evil = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims(json!({"sub": "root"}))).unwrap());
    let tampered = format!("{}.{evil}.{}", parts[0], parts[2]);
    assert_eq!(refused(&a, &tampered).await, "jwt: signature");
    let unsigned = format!("{}.{}.", parts[0], parts[1]);
    assert_eq!(refused(&a, &unsigned).await, "jwt: signature");
    let short = format!("{}.{}.{}", parts[0], parts[1], &parts[2][..20]);
    assert_eq!(refused(&a, &short).await, "jwt: signature");

    // The same for a public key: a payload swapped under an RS256 signature.
    let a = auth(with_pem("rsa_a.pub"));
    let good = token(Algorithm::RS256, "rsa_a.key", None, &claims(json!({})));
    let parts: Vec<&str> = good.split('.').collect();
    let tampered = format!("{}.{evil}.{}", parts[0], parts[2]);
    assert_eq!(refused(&a, &tampered).await, "jwt: signature");
}

#[tokio::test]
async fn garbage_is_malformed() {
    let a = auth(with_secret);
    let good = token(Algorithm::HS256, SECRET, None, &claims(json!({})));
    let p: Vec<&str> = good.split('.').collect();
    let b64 = |s: &str| URL_SAFE_NO_PAD.encode(s);
    let cases = [
        String::new(),
        "garbage".into(),
        "a.b".into(),
        format!("{good}.{}", p[2]),
        format!("!!!.{}.{}", p[1], p[2]),
        format!("{}.{}=.{}", p[0], p[1], p[2]),
        format!("{}.{}.{}", b64("[1,2]"), p[1], p[2]),
        format!("{}.{}.{}", p[0], b64("not json"), p[2]),
        format!("{}.{}.{}", p[0], b64("\"a string\""), p[2]),
        format!("{}.{}.{}", b64(r#"{"alg":5}"#), p[1], p[2]),
        format!("{}.{}.{}", b64(r#"{"typ":"JWT"}"#), p[1], p[2]),
        format!("{}.{}.{}", b64(r#"{"alg":"HS256","kid":7}"#), p[1], p[2]),
        format!("{}.{}.{}", p[0], p[1], "sig with spaces"),
        format!(".{}.{}", p[1], p[2]),
    ];
    for t in &cases {
        assert_eq!(refused(&a, t).await, "jwt: malformed", "{t:?}");
    }
    // Too long, though well signed: 8 KiB at most.
    let big = token(
        Algorithm::HS256,
        SECRET,
        None,
        &claims(json!({"pad": "x".repeat(8 * 1024)})),
    );
    assert_eq!(refused(&a, &big).await, "jwt: malformed");
    // An unknown critical extension cannot be honoured.
    let crit = raw(
        &json!({"alg": "HS256", "crit": ["exp"], "exp": 1}),
        &claims(json!({})),
        "",
    );
    assert_eq!(refused(&a, &crit).await, "jwt: malformed");
}

#[tokio::test]
async fn alg_none_and_algorithms_without_their_key_fail_algorithm() {
    let a = auth(|cfg| {
        with_secret(cfg);
    });
    for alg in [
        "none", "None", "NONE", "HS384", "HS512", "PS256", "RS384", "ES384", "",
    ] {
        let t = raw(&json!({"alg": alg, "typ": "JWT"}), &claims(json!({})), "");
        assert_eq!(refused(&a, &t).await, "jwt: algorithm", "alg {alg:?}");
    }
    // With only the secret, an RS256 token is not checked at all.
    let rs = token(Algorithm::RS256, "rsa_a.key", None, &claims(json!({})));
    assert_eq!(refused(&a, &rs).await, "jwt: algorithm");

    // With only a public key, HS256 never passes: not even the classic
    // confusion, HMAC keyed with the public key's own PEM text.
    let a = auth(with_pem("rsa_a.pub"));
    let public_pem = std::fs::read_to_string(fixture("rsa_a.pub")).unwrap();
    let hs = token(Algorithm::HS256, &public_pem, None, &claims(json!({})));
    assert_eq!(refused(&a, &hs).await, "jwt: algorithm");
    let hs = token(Algorithm::HS256, SECRET, None, &claims(json!({})));
    assert_eq!(refused(&a, &hs).await, "jwt: algorithm");
    // A public key has one algorithm: ES256 is not checked with an RSA key.
    let es = token(Algorithm::ES256, "ec_a.key", None, &claims(json!({})));
    assert_eq!(refused(&a, &es).await, "jwt: algorithm");
    let none = raw(&json!({"alg": "none"}), &claims(json!({})), "");
    assert_eq!(refused(&a, &none).await, "jwt: algorithm");
}

#[tokio::test]
async fn exp_is_required_and_checked_with_60_s_of_skew() {
    let a = auth(with_secret);
    let t = |extra: Value| token(Algorithm::HS256, SECRET, None, &claims(extra));
    accepted(&a, &t(json!({"exp": now() - 30}))).await;
    accepted(&a, &t(json!({"exp": now() + 30}))).await;
    accepted(&a, &t(json!({"exp": (now() + 30) as f64 + 0.5}))).await;
    for exp in [
        json!(now() - 90),
        json!(now() - 86_400),
        json!(0),
        json!(null),
        json!((now() + 600).to_string()),
        json!(true),
    ] {
        assert_eq!(
            refused(&a, &t(json!({"exp": exp.clone()}))).await,
            "jwt: expired",
            "exp {exp}"
        );
    }
}

#[tokio::test]
async fn nbf_is_checked_with_60_s_of_skew() {
    let a = auth(with_secret);
    let t = |extra: Value| token(Algorithm::HS256, SECRET, None, &claims(extra));
    accepted(&a, &t(json!({"nbf": now() + 30}))).await;
    accepted(&a, &t(json!({"nbf": now() - 3600}))).await;
    for nbf in [json!(now() + 90), json!(now() + 86_400), json!("0")] {
        assert_eq!(
            refused(&a, &t(json!({"nbf": nbf.clone()}))).await,
            "jwt: not yet valid",
            "nbf {nbf}"
        );
    }
}

#[tokio::test]
async fn iss_must_equal_the_issuer() {
    let a = auth(with_secret);
    let t = |extra: Value| token(Algorithm::HS256, SECRET, None, &claims(extra));
    for iss in [
        json!("https://evil.example.com"),
        json!(format!("{ISS}/")),
        json!(null),
        json!([ISS]),
    ] {
        assert_eq!(
            refused(&a, &t(json!({"iss": iss.clone()}))).await,
            "jwt: issuer",
            "iss {iss}"
        );
    }
}

#[tokio::test]
async fn aud_string_or_array_must_contain_the_audience() {
    let a = auth(with_secret);
    let t = |extra: Value| token(Algorithm::HS256, SECRET, None, &claims(extra));
    accepted(&a, &t(json!({"aud": AUD}))).await;
    accepted(&a, &t(json!({"aud": ["other", AUD]}))).await;
    for aud in [
        json!("other"),
        json!(["other", "more"]),
        json!([]),
        json!(null),
        json!({"aud": AUD}),
        json!(format!("{AUD} other")),
    ] {
        assert_eq!(
            refused(&a, &t(json!({"aud": aud.clone()}))).await,
            "jwt: audience",
            "aud {aud}"
        );
    }
}

#[tokio::test]
async fn sub_must_be_a_user_id_and_not_the_servers_own() {
    let a = auth(with_secret);
    let t = |extra: Value| token(Algorithm::HS256, SECRET, None, &claims(extra));
    let longest = "a".repeat(64);
    for sub in ["ext:user-1.a_B", "U_upper", "x_u_", longest.as_str()] {
        assert_eq!(accepted(&a, &t(json!({"sub": sub}))).await.sub, sub);
    }
    for sub in [
        json!("u_x"),
        json!("u_"),
        json!("a".repeat(65)),
        json!("a b"),
        json!("ü"),
        json!("a/b"),
        json!(""),
        json!(42),
        json!(null),
    ] {
        assert_eq!(
            refused(&a, &t(json!({"sub": sub.clone()}))).await,
            "jwt: subject",
            "sub {sub}"
        );
    }
}

#[tokio::test]
async fn the_first_failing_check_is_the_one_reported() {
    let a = auth(with_secret);
    let all_bad =
        json!({"exp": now() - 3600, "nbf": now() + 3600, "iss": "x", "aud": "y", "sub": "u_1"});
    let t = token(Algorithm::HS256, SECRET, None, &claims(all_bad.clone()));
    assert_eq!(refused(&a, &t).await, "jwt: expired");
    let wrong_key = token(
        Algorithm::HS256,
        "some other secret",
        None,
        &claims(all_bad),
    );
    assert_eq!(refused(&a, &wrong_key).await, "jwt: signature");
    let t = token(
        Algorithm::HS256,
        SECRET,
        None,
        &claims(json!({"nbf": now() + 3600, "iss": "x", "aud": "y", "sub": "u_1"})),
    );
    assert_eq!(refused(&a, &t).await, "jwt: not yet valid");
    let t = token(
        Algorithm::HS256,
        SECRET,
        None,
        &claims(json!({"iss": "x", "aud": "y", "sub": "u_1"})),
    );
    assert_eq!(refused(&a, &t).await, "jwt: issuer");
    let t = token(
        Algorithm::HS256,
        SECRET,
        None,
        &claims(json!({"aud": "y", "sub": "u_1"})),
    );
    assert_eq!(refused(&a, &t).await, "jwt: audience");
}

#[tokio::test]
async fn without_issuer_and_audience_settings_those_claims_are_not_checked() {
    let cfg = Config {
        auth_jwt_secret: Some(SECRET.into()),
        ..Config::default()
    };
    let a = JwtAuth::from_config(&cfg).unwrap().unwrap();
    let t = token(
        Algorithm::HS256,
        SECRET,
        None,
        &claims(json!({"iss": null, "aud": "anyone"})),
    );
    assert_eq!(accepted(&a, &t).await.sub, "alice");
}

#[test]
fn configuration_is_checked_at_startup() {
    assert!(JwtAuth::from_config(&Config::default()).unwrap().is_none());
    assert_eq!(jwt::not_configured().code, ErrorCode::Unauthorized);
    assert_eq!(jwt::not_configured().message, "jwt: not configured");

    let err = |set: &dyn Fn(&mut Config)| {
        let mut cfg = Config::default();
        set(&mut cfg);
        format!(
            "{:#}",
            JwtAuth::from_config(&cfg).expect_err("a bad configuration")
        )
    };
    let e = err(&|c| c.auth_jwt_issuer = Some(ISS.into()));
    assert!(e.contains("need a key"), "{e}");
    let e = err(&|c| c.auth_jwt_secret = Some(String::new()));
    assert!(e.contains("auth_jwt_secret must not be empty"), "{e}");
    let e = err(&|c| {
        with_secret(c);
        c.auth_jwt_audience = Some(String::new());
    });
    assert!(e.contains("auth_jwt_audience must not be empty"), "{e}");
    let e = err(&|c| c.auth_jwt_public_key = Some(fixture("missing.pub")));
    assert!(e.contains("missing.pub"), "{e}");
    let e = err(&|c| c.auth_jwt_public_key = Some(fixture("README.md")));
    assert!(e.contains("not a PEM public key"), "{e}");
    let e = err(&|c| c.auth_jwt_public_key = Some(fixture("ec_p384.pub")));
    assert!(
        e.contains("not a PEM public key of RSA, EC P-256 or Ed25519"),
        "{e}"
    );
    for private in ["rsa_a.key", "ec_a.key", "ed_a.key"] {
        let e = err(&|c| c.auth_jwt_public_key = Some(fixture(private)));
        assert!(e.contains("is a private key"), "{private}: {e}");
    }
    for url in [
        "not a url",
        "ftp://keys.example.com/jwks.json",
        "file:///etc/jwks.json",
    ] {
        let e = err(&|c| c.auth_jwt_jwks_url = Some(url.into()));
        assert!(e.contains("auth_jwt_jwks_url"), "{url}: {e}");
    }
}

/// What the test JWKS endpoint answers.
#[derive(Clone)]
enum Served {
    Set(Value),
    Status(u16),
    /// A key set, but with an error status.
    StatusWith(u16, Value),
    Body(String),
    /// A body of this many bytes in 64 KiB chunks, with no length given.
    Chunked(usize),
    /// Never answers.
    Hang,
}

#[derive(Clone)]
struct Endpoint {
    served: Arc<parking_lot::Mutex<Served>>,
    hits: Arc<AtomicUsize>,
}

/// A JWKS endpoint on 127.0.0.1, port 0; stops with the test's runtime.
struct JwksServer {
    url: String,
    endpoint: Endpoint,
}

impl JwksServer {
    async fn start(served: Served) -> JwksServer {
        let endpoint = Endpoint {
            served: Arc::new(parking_lot::Mutex::new(served)),
            hits: Arc::new(AtomicUsize::new(0)),
        };
        let app = axum::Router::new()
            .route("/jwks.json", axum::routing::get(answer))
            .with_state(endpoint.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        JwksServer { url, endpoint }
    }

    fn serve(&self, served: Served) {
        *self.endpoint.served.lock() = served;
    }

    fn hits(&self) -> usize {
        self.endpoint.hits.load(Ordering::SeqCst)
    }

    fn config(&self) -> impl FnOnce(&mut Config) + use<> {
        let url = self.url.clone();
        move |cfg: &mut Config| cfg.auth_jwt_jwks_url = Some(url)
    }
}

async fn answer(State(e): State<Endpoint>) -> Response {
    e.hits.fetch_add(1, Ordering::SeqCst);
    let served = e.served.lock().clone();
    match served {
        Served::Set(v) => axum::Json(v).into_response(),
        Served::Status(s) => StatusCode::from_u16(s).unwrap().into_response(),
        Served::StatusWith(s, v) => {
            (StatusCode::from_u16(s).unwrap(), axum::Json(v)).into_response()
        }
        Served::Chunked(n) => {
            let chunks = (0..n.div_ceil(65_536)).map(move |i| {
                let len = 65_536.min(n - i * 65_536);
                Ok::<_, std::io::Error>(vec![b' '; len])
            });
            axum::body::Body::from_stream(futures_util::stream::iter(chunks)).into_response()
        }
        Served::Body(b) => b.into_response(),
        Served::Hang => std::future::pending().await,
    }
}

/// The public JWK of a fixture's private key, named `kid`.
fn jwk(alg: Algorithm, private: &str, kid: &str) -> Value {
    let mut k = Jwk::from_encoding_key(&signing_key(alg, private), alg).unwrap();
    k.common.key_id = Some(kid.to_owned());
    serde_json::to_value(k).unwrap()
}

fn set(keys: &[Value]) -> Served {
    Served::Set(json!({ "keys": keys }))
}

fn rsa_a() -> Value {
    jwk(Algorithm::RS256, "rsa_a.key", "A")
}

fn rsa_b() -> Value {
    jwk(Algorithm::RS256, "rsa_b.key", "B")
}

fn signed_a() -> String {
    token(Algorithm::RS256, "rsa_a.key", Some("A"), &claims(json!({})))
}

fn signed_b() -> String {
    token(Algorithm::RS256, "rsa_b.key", Some("B"), &claims(json!({})))
}

/// Timing for rotation tests: refetch on every unknown kid.
fn eager() -> JwksTiming {
    JwksTiming {
        refetch_min: Duration::ZERO,
        ..JwksTiming::default()
    }
}

#[tokio::test]
async fn jwks_keys_are_found_by_kid_and_unusable_ones_skipped() {
    let mut enc = rsa_b();
    enc["kid"] = json!("enc");
    enc["use"] = json!("enc");
    let mut mislabelled = jwk(Algorithm::ES256, "ec_b.key", "mislabelled");
    mislabelled["alg"] = json!("ES384");
    let server = JwksServer::start(set(&[
        rsa_a(),
        jwk(Algorithm::ES256, "ec_a.key", "E"),
        jwk(Algorithm::EdDSA, "ed_a.key", "D"),
        json!({"kty": "oct", "kid": "hs", "k": URL_SAFE_NO_PAD.encode(SECRET)}),
        json!({"kty": "XYZ", "kid": "odd"}),
        json!({"kty": "OKP", "crv": "Ed25519", "kid": "short", "x": "AAAA"}),
        json!("not a key"),
        enc,
        mislabelled,
        {
            let mut no_kid = rsa_b();
            no_kid.as_object_mut().unwrap().remove("kid");
            no_kid
        },
    ]))
    .await;
    let a = auth(server.config());

    assert_eq!(accepted(&a, &signed_a()).await.sub, "alice");
    let es = token(Algorithm::ES256, "ec_a.key", Some("E"), &claims(json!({})));
    accepted(&a, &es).await;
    let ed = token(Algorithm::EdDSA, "ed_a.key", Some("D"), &claims(json!({})));
    accepted(&a, &ed).await;
    // A key of the set with another token's algorithm.
    let es_as_a = token(Algorithm::ES256, "ec_a.key", Some("A"), &claims(json!({})));
    assert_eq!(refused(&a, &es_as_a).await, "jwt: algorithm");
    // A kid of the right key signed by another.
    let forged = token(Algorithm::RS256, "rsa_b.key", Some("A"), &claims(json!({})));
    assert_eq!(refused(&a, &forged).await, "jwt: signature");
    // HS256 is only ever the secret's, even with an `oct` key in the set.
    let hs = token(Algorithm::HS256, SECRET, Some("hs"), &claims(json!({})));
    assert_eq!(refused(&a, &hs).await, "jwt: algorithm");
    // Skipped keys are unknown.
    let enc = token(
        Algorithm::RS256,
        "rsa_b.key",
        Some("enc"),
        &claims(json!({})),
    );
    assert_eq!(refused(&a, &enc).await, "jwt: unknown kid");
    let short = token(
        Algorithm::EdDSA,
        "ed_a.key",
        Some("short"),
        &claims(json!({})),
    );
    assert_eq!(refused(&a, &short).await, "jwt: unknown kid");
    let mis = token(
        Algorithm::ES256,
        "ec_b.key",
        Some("mislabelled"),
        &claims(json!({})),
    );
    assert_eq!(refused(&a, &mis).await, "jwt: unknown kid");
    // Only a JWKS, and no kid: no key to check it with.
    let no_kid = token(Algorithm::RS256, "rsa_a.key", None, &claims(json!({})));
    assert_eq!(refused(&a, &no_kid).await, "jwt: unknown kid");
    // One fetch served all of it (the unknown kids came within a minute).
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn jwks_rotation_is_seen_after_a_refetch_on_an_unknown_kid() {
    let server = JwksServer::start(set(&[rsa_a()])).await;
    let a = auth_with(server.config(), eager());
    accepted(&a, &signed_a()).await;
    assert_eq!(server.hits(), 1);

    // B is not in the set: refetched once, still unknown.
    assert_eq!(refused(&a, &signed_b()).await, "jwt: unknown kid");
    assert_eq!(server.hits(), 2);

    server.serve(set(&[rsa_a(), rsa_b()]));
    accepted(&a, &signed_b()).await;
    assert_eq!(server.hits(), 3);
    // Known kids come from the cache.
    accepted(&a, &signed_a()).await;
    accepted(&a, &signed_b()).await;
    assert_eq!(server.hits(), 3);
}

#[tokio::test]
async fn jwks_is_refetched_at_most_once_a_minute() {
    let server = JwksServer::start(set(&[rsa_a()])).await;
    let a = auth(server.config());
    accepted(&a, &signed_a()).await;
    server.serve(set(&[rsa_a(), rsa_b()]));
    for _ in 0..3 {
        assert_eq!(refused(&a, &signed_b()).await, "jwt: unknown kid");
    }
    assert_eq!(server.hits(), 1, "no refetch within the minute");
}

#[tokio::test]
async fn a_failed_jwks_fetch_keeps_the_old_keys() {
    let server = JwksServer::start(set(&[rsa_a()])).await;
    // Every use refetches, so every failure below is a real fetch.
    let timing = JwksTiming {
        max_age: Duration::ZERO,
        refetch_min: Duration::ZERO,
        ..JwksTiming::default()
    };
    let a = auth_with(server.config(), timing);
    accepted(&a, &signed_a()).await;
    assert_eq!(server.hits(), 1);
    let too_big = format!(r#"{{"keys":[],"pad":"{}"}}"#, "x".repeat(1024 * 1024));
    let failures = [
        Served::Status(500),
        Served::Status(404),
        Served::Body("not json".into()),
        Served::Body(r#"{"no":"keys"}"#.into()),
        Served::Body(too_big),
        Served::Chunked(1024 * 1024 + 1),
        Served::StatusWith(500, json!({"keys": [rsa_b()]})),
    ];
    for (i, failure) in failures.into_iter().enumerate() {
        server.serve(failure);
        accepted(&a, &signed_a()).await;
        assert_eq!(server.hits(), i + 2);
    }
    assert_eq!(refused(&a, &signed_b()).await, "jwt: unknown kid");
    // A good fetch replaces the set: A is gone.
    server.serve(set(&[rsa_b()]));
    accepted(&a, &signed_b()).await;
    assert_eq!(refused(&a, &signed_a()).await, "jwt: unknown kid");
}

#[tokio::test]
async fn before_a_jwks_fetch_succeeds_tokens_are_unavailable() {
    // Nothing listens on the port.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let a = auth(|cfg| cfg.auth_jwt_jwks_url = Some(format!("http://127.0.0.1:{port}/jwks.json")));
    let e = a.verify(&signed_a()).await.expect_err("no key set yet");
    assert_eq!(e.code, ErrorCode::Unavailable, "{e}");
    assert!(!e.message.contains(&signed_a()[..20]));
    // The checks before the kid still answer as usual.
    assert_eq!(refused(&a, "garbage").await, "jwt: malformed");

    // A server that fails, then recovers.
    let server = JwksServer::start(Served::Status(503)).await;
    let a = auth(server.config());
    let e = a.verify(&signed_a()).await.expect_err("no key set yet");
    assert_eq!(e.code, ErrorCode::Unavailable);
    server.serve(set(&[rsa_a()]));
    // Within the minute no new attempt is made.
    let e = a
        .verify(&signed_a())
        .await
        .expect_err("still within the minute");
    assert_eq!(e.code, ErrorCode::Unavailable);
    assert_eq!(server.hits(), 1);
    let a = auth_with(server.config(), eager());
    accepted(&a, &signed_a()).await;
}

#[tokio::test]
async fn a_jwks_fetch_that_hangs_times_out() {
    let server = JwksServer::start(Served::Hang).await;
    let timing = JwksTiming {
        fetch_timeout: Duration::from_millis(300),
        ..JwksTiming::default()
    };
    let a = auth_with(server.config(), timing);
    let started = std::time::Instant::now();
    let e = tokio::time::timeout(Duration::from_secs(10), a.verify(&signed_a()))
        .await
        .expect("the fetch gave up by itself")
        .expect_err("no answer");
    assert_eq!(e.code, ErrorCode::Unavailable);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn with_a_pem_key_and_a_jwks_the_kid_picks_the_jwks() {
    let server = JwksServer::start(set(&[rsa_a()])).await;
    let a = auth(|cfg| {
        server.config()(cfg);
        cfg.auth_jwt_public_key = Some(fixture("ec_a.pub"));
    });
    let pem = token(Algorithm::ES256, "ec_a.key", None, &claims(json!({})));
    accepted(&a, &pem).await;
    assert_eq!(server.hits(), 0, "a token without kid needs no JWKS");
    accepted(&a, &signed_a()).await;
    // A kid the JWKS lacks does not fall back to the PEM key.
    let pem_with_kid = token(Algorithm::ES256, "ec_a.key", Some("E"), &claims(json!({})));
    assert_eq!(refused(&a, &pem_with_kid).await, "jwt: unknown kid");
}
