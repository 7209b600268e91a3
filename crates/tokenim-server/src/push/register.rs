//! A device's push registration checked against the configured providers
//! (PROTOCOL-INTEGRATION I2.1, I-11): an unconfigured provider or a
//! malformed registration is `bad_request` with a message saying which
//! part is wrong; a good one becomes the store's [`PushTarget`].

use std::net::IpAddr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tokenim_core::{Error, Result};
use tokenim_proto::{PushRegistration, WebPushSubscription};
use tokenim_store::PushTarget;

use super::credentials::PushProviders;

/// Longest token (and Web Push endpoint) accepted, in bytes.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// Reads a registration body field by field, so that a wrong one is named
/// (serde's messages for a tagged enum lose the field's name).
pub fn parse(body: &serde_json::Value) -> Result<PushRegistration> {
    use tokenim_proto::{ApnsEnvironment, WebPushKeys};
    let bad = |m: &str| Error::bad_request(m.to_owned());
    let Some(obj) = body.as_object() else {
        return Err(bad("the body must be a JSON object"));
    };
    let text = |o: &serde_json::Map<String, serde_json::Value>, name: &str, what: &str| match o
        .get(name)
    {
        Some(serde_json::Value::String(s)) => Ok(s.clone()),
        _ => Err(Error::bad_request(format!("{what} must be a string"))),
    };
    let provider = obj.get("provider").and_then(|p| p.as_str()).unwrap_or("");
    Ok(match provider {
        "apns" => PushRegistration::Apns {
            token: text(obj, "token", "token")?,
            environment: match obj.get("environment") {
                None | Some(serde_json::Value::Null) => ApnsEnvironment::Production,
                Some(v) if v == "production" => ApnsEnvironment::Production,
                Some(v) if v == "sandbox" => ApnsEnvironment::Sandbox,
                Some(_) => return Err(bad("environment must be production or sandbox")),
            },
        },
        "fcm" => PushRegistration::Fcm {
            token: text(obj, "token", "token")?,
        },
        "webhook" => PushRegistration::Webhook {
            token: text(obj, "token", "token")?,
        },
        "webpush" => {
            let Some(sub) = obj.get("subscription").and_then(|s| s.as_object()) else {
                return Err(bad("subscription must be an object with endpoint and keys"));
            };
            let Some(keys) = sub.get("keys").and_then(|k| k.as_object()) else {
                return Err(bad(
                    "subscription.keys must be an object with p256dh and auth",
                ));
            };
            PushRegistration::Webpush {
                subscription: WebPushSubscription {
                    endpoint: text(sub, "endpoint", "subscription.endpoint")?,
                    keys: WebPushKeys {
                        p256dh: text(keys, "p256dh", "subscription.keys.p256dh")?,
                        auth: text(keys, "auth", "subscription.keys.auth")?,
                    },
                },
            }
        }
        _ => return Err(bad("provider must be apns, fcm, webpush or webhook")),
    })
}

/// The store's target for `reg`, or why it is refused.
pub fn target(reg: &PushRegistration, providers: &PushProviders) -> Result<PushTarget> {
    let unconfigured = |p: &str| {
        Error::bad_request(format!(
            "push provider {p} is not configured on this server"
        ))
    };
    match reg {
        PushRegistration::Apns { token, environment } => {
            if providers.apns.is_none() {
                return Err(unconfigured("apns"));
            }
            let ok = (32..=200).contains(&token.len())
                && token.len() % 2 == 0
                && token.bytes().all(|b| b.is_ascii_hexdigit());
            if !ok {
                return Err(Error::bad_request(
                    "an apns token is 32-200 hexadecimal digits (an even number)",
                ));
            }
            let mut t = PushTarget::new("apns", &token.to_ascii_lowercase());
            t.environment = Some(environment.as_str().to_owned());
            Ok(t)
        }
        PushRegistration::Fcm { token } => {
            if providers.fcm.is_none() {
                return Err(unconfigured("fcm"));
            }
            opaque("an fcm token", token)?;
            Ok(PushTarget::new("fcm", token))
        }
        PushRegistration::Webhook { token } => {
            if providers.webhook.is_none() {
                return Err(unconfigured("webhook"));
            }
            opaque("a webhook token", token)?;
            Ok(PushTarget::new("webhook", token))
        }
        PushRegistration::Webpush { subscription } => {
            let Some(wp) = &providers.webpush else {
                return Err(unconfigured("webpush"));
            };
            webpush(subscription, wp.allow_private)
        }
    }
}

/// 1-4096 printable ASCII characters (no spaces).
fn opaque(what: &str, token: &str) -> Result<()> {
    if token.is_empty()
        || token.len() > MAX_TOKEN_BYTES
        || !token.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(Error::bad_request(format!(
            "{what} is 1-{MAX_TOKEN_BYTES} printable ASCII characters without spaces"
        )));
    }
    Ok(())
}

fn webpush(s: &WebPushSubscription, allow_private: bool) -> Result<PushTarget> {
    endpoint(&s.endpoint, allow_private)?;
    let p256dh = b64url(&s.keys.p256dh)
        .filter(|k| k.len() == 65 && k[0] == 0x04)
        .ok_or_else(|| {
            Error::bad_request(
                "subscription.keys.p256dh must be base64url of a 65-byte uncompressed P-256 point",
            )
        })?;
    if p256::PublicKey::from_sec1_bytes(&p256dh).is_err() {
        return Err(Error::bad_request(
            "subscription.keys.p256dh is not a point on the P-256 curve",
        ));
    }
    if b64url(&s.keys.auth).is_none_or(|a| a.len() != 16) {
        return Err(Error::bad_request(
            "subscription.keys.auth must be base64url of 16 bytes",
        ));
    }
    let mut t = PushTarget::new("webpush", &s.endpoint);
    t.p256dh = Some(s.keys.p256dh.clone());
    t.auth = Some(s.keys.auth.clone());
    Ok(t)
}

/// base64url with or without `=` padding (browsers send none).
fn b64url(s: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).ok()
}

/// An `https:` URL with a host that is neither loopback nor private;
/// with `allow_private`, also `http:` and any address (tests).
fn endpoint(url: &str, allow_private: bool) -> Result<()> {
    let bad = |why: &str| Err(Error::bad_request(format!("subscription.endpoint {why}")));
    if url.len() > MAX_TOKEN_BYTES {
        return bad(&format!("is over {MAX_TOKEN_BYTES} bytes"));
    }
    let Ok(u) = reqwest::Url::parse(url) else {
        return bad("is not a URL");
    };
    match u.scheme() {
        "https" => {}
        "http" if allow_private => {}
        _ => return bad("must be an https URL"),
    }
    if !u.username().is_empty() || u.password().is_some() {
        return bad("must not carry a user name or password");
    }
    let private = match u.host() {
        None => return bad("has no host"),
        Some(url::Host::Domain(d)) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            d == "localhost" || d.ends_with(".localhost")
        }
        Some(url::Host::Ipv4(ip)) => !public(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => !public(IpAddr::V6(ip)),
    };
    if private && !allow_private {
        return bad(
            "is a loopback or private address ([push.webpush] allow_private = true allows it)",
        );
    }
    Ok(())
}

/// Whether an address is reachable on the public internet: not loopback,
/// private, link-local, shared (CGNAT), unspecified, multicast,
/// documentation or unique-local.
pub fn public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b)))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || first == 0x2001 && v6.segments()[1] == 0x0db8)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        for good in [
            "https://fcm.googleapis.com/fcm/send/abc",
            "https://updates.push.services.mozilla.com/wpush/v2/x",
            "https://8.8.8.8/x",
            "https://[2606:4700::1]/x",
        ] {
            assert!(endpoint(good, false).is_ok(), "{good}");
        }
        for bad in [
            "http://push.example.com/x",
            "https://127.0.0.1/x",
            "https://localhost:8443/x",
            "https://a.localhost/x",
            "https://10.1.2.3/x",
            "https://172.16.0.1/x",
            "https://192.168.1.1/x",
            "https://169.254.169.254/latest",
            "https://100.64.0.1/x",
            "https://0.0.0.0/x",
            "https://[::1]/x",
            "https://[fd00::1]/x",
            "https://[fe80::1]/x",
            "https://[::ffff:127.0.0.1]/x",
            "https://user:pw@push.example.com/x",
            "ftp://push.example.com/x",
            "not a url",
        ] {
            assert!(endpoint(bad, false).is_err(), "{bad}");
        }
        assert!(endpoint("http://127.0.0.1:9/x", true).is_ok());
        assert!(endpoint("ftp://127.0.0.1:9/x", true).is_err());
    }
}
