//! Loading push credentials from the test keys of
//! `tests/fixtures/push/` (see its README) and from broken copies of them:
//! each good file loads; each bad one fails naming the table, the field
//! and the file, and no message or `Debug` shows key material.

use std::path::{Path, PathBuf};

use super::config::*;
use super::credentials::PushProviders;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/push")
        .join(name)
}

fn read(name: &str) -> String {
    std::fs::read_to_string(fixture(name)).unwrap()
}

fn apns(key_file: PathBuf) -> ApnsConfig {
    ApnsConfig {
        key_file: Some(key_file),
        key_id: Some("ABC123DEFG".into()),
        team_id: Some("TEAM123456".into()),
        topic: Some("com.example.chat".into()),
        ..Default::default()
    }
}

fn webpush(key_file: PathBuf) -> WebPushConfig {
    WebPushConfig {
        vapid_private_key_file: Some(key_file),
        subject: Some("mailto:ops@example.com".into()),
        allow_private: false,
    }
}

fn load(f: impl FnOnce(&mut PushConfig)) -> anyhow::Result<PushProviders> {
    let mut c = PushConfig::default();
    f(&mut c);
    PushProviders::load(&c)
}

/// The error of a config that must fail, with every key of the fixtures
/// checked absent from it.
fn fails(f: impl FnOnce(&mut PushConfig)) -> String {
    let e = format!("{:#}", load(f).expect_err("must fail"));
    for key in ["apns.p8", "vapid_sec1.pem", "fcm_rsa.pem", "p384.p8"] {
        let pem = read(key);
        let body: Vec<&str> = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        for line in body {
            assert!(!e.contains(line), "key material in {e:?}");
        }
    }
    e
}

fn has(e: &str, parts: &[&str]) {
    for p in parts {
        assert!(e.contains(p), "{p:?} not in {e:?}");
    }
}

#[test]
fn good_files_load_with_defaults() {
    let p = load(|c| {
        c.apns = Some(apns(fixture("apns.p8")));
        c.fcm = Some(FcmConfig {
            service_account_file: Some(fixture("service_account.json")),
            endpoint: None,
        });
        c.webpush = Some(webpush(fixture("vapid_sec1.pem")));
        c.webhook = Some(WebhookConfig {
            url: Some("https://backend.example.com/push?key=s3cret-q".into()),
            secret: Some("hook-s3cret".into()),
            secrets: None,
        });
    })
    .unwrap();
    assert_eq!(p.names(), ["apns", "fcm", "webpush", "webhook"]);
    assert_eq!(p.preview, PushPreview::Full);
    assert_eq!(p.app_name, "tokenim");
    let a = p.apns.as_ref().unwrap();
    assert_eq!(a.endpoint, "https://api.push.apple.com");
    assert_eq!(a.endpoint_for(true), "https://api.sandbox.push.apple.com");
    let f = p.fcm.as_ref().unwrap();
    assert_eq!(f.endpoint, "https://fcm.googleapis.com");
    assert_eq!(f.project_id, "tokenim-test");
    assert_eq!(f.token_uri, "https://oauth2.googleapis.com/token");
    let w = p.webpush.as_ref().unwrap();
    // base64url without padding of a 65-byte point.
    assert_eq!(w.public_key.len(), 87);
    assert!(w.public_key.starts_with('B'), "{}", w.public_key);
    // The signers work, with the right header.
    let header = |jwt: &str| jsonwebtoken::decode_header(jwt).unwrap();
    let h = header(&a.jwt(1_700_000_000));
    assert_eq!(
        (h.alg, h.kid.as_deref()),
        (jsonwebtoken::Algorithm::ES256, Some("ABC123DEFG"))
    );
    let h = header(&f.assertion(1_700_000_000));
    assert_eq!(
        (h.alg, h.kid.as_deref()),
        (jsonwebtoken::Algorithm::RS256, Some("0123456789abcdef"))
    );
    let h = header(&w.vapid_jwt("https://push.example.com", 1_700_000_000));
    assert_eq!(h.alg, jsonwebtoken::Algorithm::ES256);
    // Debug shows no secret, no key, no URL query.
    let shown = format!("{p:?}");
    for secret in ["hook-s3cret", "s3cret-q", "PRIVATE"] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
    assert!(shown.contains("backend.example.com"), "{shown}");
}

#[test]
fn vapid_keys_in_pkcs8_too_and_the_same_key_gives_the_same_public_key() {
    let a = load(|c| c.webpush = Some(webpush(fixture("vapid_pkcs8.pem")))).unwrap();
    let b = load(|c| c.webpush = Some(webpush(fixture("vapid_pkcs8.pem")))).unwrap();
    assert_eq!(a.webpush.unwrap().public_key, b.webpush.unwrap().public_key);
}

#[test]
fn configured_endpoints_and_secrets() {
    let p = load(|c| {
        let mut a = apns(fixture("apns.p8"));
        a.endpoint = Some("http://127.0.0.1:9000/".into());
        a.sandbox_endpoint = Some("http://127.0.0.1:9001".into());
        c.apns = Some(a);
        c.webhook = Some(WebhookConfig {
            url: Some("http://127.0.0.1:9002/push".into()),
            secret: None,
            secrets: Some(vec!["new".into(), "old".into()]),
        });
    })
    .unwrap();
    let a = p.apns.unwrap();
    assert_eq!(a.endpoint, "http://127.0.0.1:9000");
    assert_eq!(a.sandbox_endpoint, "http://127.0.0.1:9001");
    assert_eq!(p.webhook.unwrap().secrets, ["new", "old"]);
}

#[test]
fn bad_apns_configs_name_the_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let missing = dir.path().join("nope.p8");
    let e = fails(|c| c.apns = Some(apns(missing.clone())));
    has(&e, &["[push.apns] key_file", "nope.p8", "cannot read"]);

    for (file, why) in [
        (fixture("p384.p8"), "not a PKCS#8 P-256 private key"),
        (fixture("ed25519.pem"), "not a PKCS#8 P-256 private key"),
        (fixture("fcm_rsa.pem"), "not a PKCS#8 P-256 private key"),
        (fixture("vapid_sec1.pem"), "a SEC1 key"),
        (
            write(
                "cert.pem",
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            ),
            "unknown key format",
        ),
        (write("junk.p8", "hello"), "not a PEM file"),
    ] {
        let e = fails(|c| c.apns = Some(apns(file.clone())));
        let name = file.file_name().unwrap().to_str().unwrap().to_owned();
        has(&e, &["[push.apns] key_file", &name, why]);
    }
    // A PKCS#8 P-256 key cut short.
    let pem = read("apns.p8");
    let mut lines: Vec<&str> = pem.lines().collect();
    lines.remove(2);
    let cut = write("cut.p8", &(lines.join("\n") + "\n"));
    let e = fails(|c| c.apns = Some(apns(cut.clone())));
    has(&e, &["[push.apns] key_file", "cut.p8", "not a PKCS#8"]);

    for field in ["key_id", "team_id", "topic"] {
        for value in [None, Some(" ".to_owned())] {
            let e = fails(|c| {
                let mut a = apns(fixture("apns.p8"));
                match field {
                    "key_id" => a.key_id = value.clone(),
                    "team_id" => a.team_id = value.clone(),
                    _ => a.topic = value.clone(),
                }
                c.apns = Some(a);
            });
            has(&e, &["[push.apns]", field, "missing or empty"]);
        }
    }
    let e = fails(|c| {
        c.apns = Some(ApnsConfig {
            key_file: None,
            ..apns(fixture("apns.p8"))
        })
    });
    has(&e, &["[push.apns] key_file is missing or empty"]);
    let e = fails(|c| {
        let mut a = apns(fixture("apns.p8"));
        a.sandbox_endpoint = Some("api.sandbox.push.apple.com".into());
        c.apns = Some(a);
    });
    has(
        &e,
        &["[push.apns] sandbox_endpoint must be an http or https URL"],
    );
}

#[test]
fn bad_service_accounts_name_the_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let good: serde_json::Value = serde_json::from_str(&read("service_account.json")).unwrap();
    let fcm = |path: PathBuf| FcmConfig {
        service_account_file: Some(path),
        endpoint: None,
    };
    let mut n = 0;
    let mut with = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut v = good.clone();
        edit(&mut v);
        n += 1;
        let p = dir.path().join(format!("sa{n}.json"));
        std::fs::write(&p, v.to_string()).unwrap();
        p
    };
    for field in [
        "project_id",
        "private_key_id",
        "private_key",
        "client_email",
        "token_uri",
    ] {
        let gone = with(&|v| {
            v.as_object_mut().unwrap().remove(field);
        });
        let empty = with(&|v| v[field] = "".into());
        let number = with(&|v| v[field] = 7.into());
        for p in [gone, empty, number] {
            let e = fails(|c| c.fcm = Some(fcm(p.clone())));
            let name = p.file_name().unwrap().to_str().unwrap().to_owned();
            has(
                &e,
                &[
                    "[push.fcm] service_account_file",
                    &name,
                    field,
                    "missing or empty",
                ],
            );
        }
    }
    let ec = with(&|v| v["private_key"] = read("apns.p8").into());
    let e = fails(|c| c.fcm = Some(fcm(ec.clone())));
    has(&e, &["service_account_file", "private_key is not", "RSA"]);
    let junk = with(&|v| {
        v["private_key"] = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".into()
    });
    let e = fails(|c| c.fcm = Some(fcm(junk.clone())));
    has(&e, &["service_account_file", "private_key is not"]);
    let user = with(&|v| v["type"] = "authorized_user".into());
    let e = fails(|c| c.fcm = Some(fcm(user.clone())));
    has(&e, &["service_account_file", "not \"service_account\""]);
    let not_json = dir.path().join("broken.json");
    std::fs::write(&not_json, "{\"private_key\": \"-----BEGIN").unwrap();
    let e = fails(|c| c.fcm = Some(fcm(not_json.clone())));
    has(
        &e,
        &["[push.fcm] service_account_file", "broken.json", "not JSON"],
    );
    let e = fails(|c| c.fcm = Some(fcm(dir.path().join("absent.json"))));
    has(
        &e,
        &[
            "[push.fcm] service_account_file",
            "absent.json",
            "cannot read",
        ],
    );
}

#[test]
fn bad_webpush_and_webhook_configs() {
    for (file, why) in [
        ("p384.p8", "not a PKCS#8 P-256"),
        ("ed25519.pem", "not a PKCS#8 P-256"),
        ("fcm_rsa.pem", "not a PKCS#8 P-256"),
    ] {
        let e = fails(|c| c.webpush = Some(webpush(fixture(file))));
        has(&e, &["[push.webpush] vapid_private_key_file", file, why]);
    }
    for subject in [
        None,
        Some(""),
        Some("ops@example.com"),
        Some("http://example.com"),
    ] {
        let e = fails(|c| {
            let mut w = webpush(fixture("vapid_sec1.pem"));
            w.subject = subject.map(str::to_owned);
            c.webpush = Some(w);
        });
        has(&e, &["[push.webpush] subject"]);
    }
    let hook =
        |url: Option<&str>, secret: Option<&str>, secrets: Option<Vec<&str>>| WebhookConfig {
            url: url.map(str::to_owned),
            secret: secret.map(str::to_owned),
            secrets: secrets.map(|l| l.into_iter().map(str::to_owned).collect()),
        };
    for (h, want) in [
        (
            hook(None, Some("s"), None),
            "[push.webhook] url is missing or empty",
        ),
        (
            hook(Some("backend/push"), Some("s"), None),
            "[push.webhook] url must be",
        ),
        (
            hook(Some("https://b.example.com"), None, None),
            "[push.webhook] secret is missing",
        ),
        (
            hook(Some("https://b.example.com"), Some(""), None),
            "[push.webhook] secret is missing",
        ),
        (
            hook(Some("https://b.example.com"), None, Some(vec![])),
            "[push.webhook] secrets is empty",
        ),
        (
            hook(Some("https://b.example.com"), None, Some(vec!["a", " "])),
            "[push.webhook] secrets[1] is empty",
        ),
        (
            hook(Some("https://b.example.com"), Some("a"), Some(vec!["b"])),
            "not both",
        ),
    ] {
        let e = fails(|c| c.webhook = Some(h.clone()));
        has(&e, &[want]);
    }
    let e = fails(|c| c.app_name = " ".into());
    has(&e, &["[push] app_name"]);
}

#[test]
fn the_config_file_reads_push_tables_and_preview_settings() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("c.toml");
    std::fs::write(
        &f,
        format!(
            "[push]\npreview = \"sender\"\napp_name = \"Chat\"\n\
             [push.apns]\nkey_file = {:?}\nkey_id = \"K\"\nteam_id = \"T\"\ntopic = \"t\"\n\
             [push.webhook]\nurl = \"https://b.example.com/p\"\nsecrets = [\"hook-sec-1\", \"hook-sec-2\"]\n",
            fixture("apns.p8")
        ),
    )
    .unwrap();
    let cfg = crate::Config::load(Some(&f), Vec::new()).unwrap();
    assert_eq!(cfg.push.preview, PushPreview::Sender);
    assert_eq!(cfg.push.app_name, "Chat");
    let shown = format!("{cfg:?}");
    assert!(!shown.contains("hook-sec"), "{shown}");
    let p = PushProviders::load(&cfg.push).unwrap();
    assert_eq!(p.names(), ["apns", "webhook"]);
    let env = vec![("TOKENIM_PUSH_PREVIEW".to_string(), "none".to_string())];
    let mut cfg = crate::Config::load(Some(&f), env).unwrap();
    assert_eq!(cfg.push.preview, PushPreview::None);
    cfg.set("push_preview", "full").unwrap();
    assert_eq!(cfg.push.preview, PushPreview::Full);
    assert!(cfg.set("push_preview", "some").is_err());
    std::fs::write(&f, "[push.apns]\nkey_fil = \"x\"\n").unwrap();
    let e = format!(
        "{:#}",
        crate::Config::load(Some(&f), Vec::new()).unwrap_err()
    );
    assert!(e.contains("key_fil"), "{e}");
}
