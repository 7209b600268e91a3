//! CORS for browsers calling the client API (PROTOCOL-INTEGRATION I1.5):
//! for a listed `Origin` on `/v1/*`, answers preflights itself and marks
//! every other answer (errors included) as readable by that origin. Never
//! on the app backend's `/v1/server/` and `/v1/admin/` routes, never on the
//! socket upgrade, never `Access-Control-Allow-Credentials`.
//!
//! Hand-written rather than tower-http's `CorsLayer`: that layer applies to
//! whatever it wraps and cannot leave `/v1/server/` and `/v1/admin/` (and
//! their `OPTIONS`) untouched without splitting the router, and it answers
//! preflights only when `Access-Control-Request-Method` is present.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::config::CorsOrigins;
use crate::state::AppState;

/// The longest `Origin` header that can be listed.
const MAX_ORIGIN: usize = 1024;
const ALLOW_METHODS: &str = "GET, POST, PUT, PATCH, DELETE";
const ALLOW_HEADERS: &str = "Authorization, Content-Type";
const MAX_AGE: &str = "600";
const EXPOSE_HEADERS: &str = "Retry-After";

/// The `Access-Control-Allow-Origin` value for a request with these
/// headers, or `None` when the origin is absent or not listed.
fn allow(origins: &CorsOrigins, headers: &HeaderMap) -> Option<HeaderValue> {
    let origin = headers.get(header::ORIGIN)?;
    let bytes = origin.as_bytes();
    if bytes.is_empty() || bytes.len() > MAX_ORIGIN || !bytes.iter().all(|b| b.is_ascii_graphic()) {
        return None;
    }
    match origins {
        CorsOrigins::Off => None,
        CorsOrigins::Any => Some(HeaderValue::from_static("*")),
        // Visible ASCII, so valid UTF-8.
        CorsOrigins::List(l) => l.contains(origin.to_str().ok()?).then(|| origin.clone()),
    }
}

/// Whether CORS may apply to `path`: `/v1/*` except the app backend's
/// routes and the socket upgrade.
fn applies(path: &str) -> bool {
    let Some(rest) = path.strip_prefix("/v1/") else {
        return false;
    };
    let first = rest.split('/').next().unwrap_or("");
    !(first == "server" || first == "admin" || rest == "ws")
}

/// The middleware: outermost, so framework errors, JSON errors and panics
/// carry the headers too.
pub async fn layer(State(app): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if matches!(app.cors, CorsOrigins::Off) {
        return next.run(req).await;
    }
    let allow = match applies(req.uri().path()) {
        true => allow(&app.cors, req.headers()),
        false => None,
    };
    let Some(allow) = allow else {
        return next.run(req).await;
    };
    let vary = HeaderValue::from_static("Origin");
    if req.method() == Method::OPTIONS {
        let mut r = StatusCode::NO_CONTENT.into_response();
        let h = r.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(ALLOW_METHODS),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(ALLOW_HEADERS),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static(MAX_AGE),
        );
        h.insert(header::VARY, vary);
        return r;
    }
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
    h.append(header::VARY, vary);
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSE_HEADERS),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origins(list: &[&str]) -> anyhow::Result<CorsOrigins> {
        CorsOrigins::new(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn modes() {
        assert_eq!(origins(&[]).unwrap(), CorsOrigins::Off);
        assert_eq!(origins(&["https://a.com", "*"]).unwrap(), CorsOrigins::Any);
        let list = origins(&["https://a.com"]).unwrap();
        let with = |o: &[u8]| {
            let mut h = HeaderMap::new();
            h.insert(header::ORIGIN, HeaderValue::from_bytes(o).unwrap());
            allow(&list, &h)
        };
        assert_eq!(with(b"https://a.com").unwrap(), "https://a.com");
        assert!(with(b"https://a.com:443").is_none());
        assert!(with(b"http://a.com").is_none());
        assert!(with(b"https://A.com").is_none());
        assert!(with("https://a.com\u{e9}".as_bytes()).is_none());
        assert!(allow(&list, &HeaderMap::new()).is_none());
    }

    #[test]
    fn paths() {
        for yes in [
            "/v1/me",
            "/v1/accounts",
            "/v1/conversations/c1/messages",
            "/v1/serverx",
        ] {
            assert!(applies(yes), "{yes}");
        }
        for no in [
            "/",
            "/v1",
            "/v2/me",
            "/v1/ws",
            "/v1/server",
            "/v1/server/users",
            "/v1/admin/x",
            "/app",
        ] {
            assert!(!applies(no), "{no}");
        }
    }
}
