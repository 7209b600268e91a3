//! The HTTP JSON API (PROTOCOL.md section 2). Handlers parse and bound the
//! input, call one service, and map errors through the one code→status table.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Path, RawQuery, Request, State};
use axum::http::{StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use serde::de::DeserializeOwned;
use tokenim_core::{Error, validate};
use tokenim_proto::*;
use tokenim_store::Op;

use crate::api::error::{ApiError, ApiResult};
use crate::services::Actor;
use crate::services::timeline::TimelineReq;
use crate::state::AppState;

/// The authenticated caller.
pub struct Auth(pub Actor);

impl FromRequestParts<Arc<AppState>> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<AppState>) -> ApiResult<Self> {
        let h = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| Error::unauthorized("missing bearer token"))?;
        Ok(Auth(app.accounts.authenticate(h.trim()).await?))
    }
}

/// A JSON body, bounded by `max_frame_bytes`, with protocol errors.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<Arc<AppState>> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, app: &Arc<AppState>) -> ApiResult<Self> {
        let limit = app.limits.max_frame_bytes as usize;
        let body = axum::body::to_bytes(req.into_body(), limit)
            .await
            .map_err(|_| Error::too_large(format!("the body is over {limit} bytes")))?;
        parse_json(&body).map(JsonBody)
    }
}

/// `201 Created` for a new resource, `200 OK` for one that existed (a
/// repeated, idempotent request).
pub(crate) fn created_or_ok(created: bool) -> StatusCode {
    if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    }
}

pub(crate) fn parse_json<T: DeserializeOwned>(body: &Bytes) -> ApiResult<T> {
    if body.is_empty() {
        return Err(Error::bad_request("a JSON body is required").into());
    }
    serde_json::from_slice(body).map_err(|e| Error::bad_request(format!("bad JSON: {e}")).into())
}

/// The client's address: the peer, or, when the peer is a trusted load
/// balancer, the right-most `X-Forwarded-For` entry that is not one.
fn client_ip(app: &AppState, parts: &axum::http::request::Parts) -> std::net::IpAddr {
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    let trusted = &app.cfg.trusted_proxies;
    if !trusted.contains(&peer) {
        return peer;
    }
    let forwarded = parts
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse::<std::net::IpAddr>().ok())
        .collect::<Vec<_>>();
    forwarded
        .into_iter()
        .rev()
        .find(|ip| !trusted.contains(ip))
        .unwrap_or(peer)
}

/// The JSON API's routes and the probes; [`crate::api::router`] adds the
/// socket, the web client and the error handling around them.
pub fn routes() -> Router<Arc<AppState>> {
    let conv = "/v1/conversations/{conv_id}";
    Router::new()
        .route("/v1/accounts", post(create_account))
        .route("/v1/sessions", post(create_session))
        .route("/v1/sessions/current", delete(delete_session))
        .route("/v1/me", get(me))
        .route("/v1/devices", get(devices))
        .route("/v1/devices/{device_id}", delete(delete_device))
        .route("/v1/users", get(find_users))
        .route("/v1/users/{user_id}", get(get_user))
        .route("/v1/contacts", get(contacts))
        .route(
            "/v1/contacts/{user_id}",
            put(add_contact).delete(remove_contact),
        )
        .route("/v1/blocks/{user_id}", put(block).delete(unblock))
        .route(
            "/v1/conversations",
            post(create_conversation).get(list_conversations),
        )
        .route(conv, get(get_conversation).patch(patch_conversation))
        .route(
            &format!("{conv}/members"),
            post(add_members).get(list_members),
        )
        .route(
            &format!("{conv}/members/{{user_id}}"),
            delete(remove_member),
        )
        .route(&format!("{conv}/members/{{user_id}}/role"), put(set_role))
        .route(&format!("{conv}/members/{{user_id}}/mute"), put(set_mute))
        .route(&format!("{conv}/events"), get(events))
        .route(&format!("{conv}/events/{{seq}}/receipts"), get(receipts))
        .route(&format!("{conv}/messages"), post(post_message))
        .route(&format!("{conv}/notifications"), put(set_notifications))
        .route("/v1/push-token", put(push_token))
        .route("/v1/devices/current/push", put(set_push).delete(clear_push))
        .route("/v1/push/webpush-key", get(webpush_key))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

async fn create_account(
    State(app): State<Arc<AppState>>,
    req: Request,
) -> ApiResult<(StatusCode, axum::Json<AccountCreated>)> {
    if app.cfg.registration == crate::config::Registration::Closed {
        return Err(Error::forbidden(
            "registration is closed: accounts are created by the app's backend",
        )
        .into());
    }
    let (parts, body) = req.into_parts();
    app.rate.login(client_ip(&app, &parts)).await?;
    let JsonBody(body) =
        JsonBody::<CreateAccount>::from_request(Request::from_parts(parts, body), &app).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(app.accounts.register(body).await?),
    ))
}

async fn create_session(
    State(app): State<Arc<AppState>>,
    req: Request,
) -> ApiResult<(StatusCode, axum::Json<SessionCreated>)> {
    let (parts, body) = req.into_parts();
    app.rate.login(client_ip(&app, &parts)).await?;
    let JsonBody(body) =
        JsonBody::<serde_json::Value>::from_request(Request::from_parts(parts, body), &app).await?;
    // A password login, or one with the app's JWT (I1.3), never both.
    let created = if body.get("jwt").is_some() {
        if body.get("username").is_some() || body.get("password").is_some() {
            return Err(
                Error::bad_request("give a jwt or a username and password, not both").into(),
            );
        }
        let req: JwtSession = serde_json::from_value(body)
            .map_err(|e| Error::bad_request(format!("bad JSON: {e}")))?;
        app.accounts.login_jwt(req).await?
    } else {
        let req: CreateSession = serde_json::from_value(body)
            .map_err(|e| Error::bad_request(format!("bad JSON: {e}")))?;
        app.accounts.login(req).await?
    };
    Ok((StatusCode::CREATED, axum::Json(created)))
}

async fn delete_session(State(app): State<Arc<AppState>>, Auth(a): Auth) -> ApiResult<StatusCode> {
    app.accounts.logout(&a).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn me(State(app): State<Arc<AppState>>, Auth(a): Auth) -> ApiResult<axum::Json<UserInfo>> {
    Ok(axum::Json(app.accounts.user_info(&a.user_id).await?))
}

async fn devices(
    State(app): State<Arc<AppState>>,
    Auth(a): Auth,
) -> ApiResult<axum::Json<DeviceList>> {
    Ok(axum::Json(app.devices.list(&a).await?))
}

async fn delete_device(
    State(app): State<Arc<AppState>>,
    Auth(a): Auth,
    Path(device_id): Path<String>,
) -> ApiResult<StatusCode> {
    app.devices.remove(&a, &device_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) fn query(raw: Option<String>) -> ApiResult<HashMap<String, String>> {
    let raw = raw.unwrap_or_default();
    if raw.len() > 4096 {
        return Err(Error::too_large("query string too long").into());
    }
    serde_urlencoded_lite(&raw)
}

/// Parses `a=1&b=2` (percent-decoding values) without another dependency.
fn serde_urlencoded_lite(raw: &str) -> ApiResult<HashMap<String, String>> {
    let mut out = HashMap::new();
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.insert(pct_decode(k)?, pct_decode(v)?);
    }
    Ok(out)
}

fn pct_decode(s: &str) -> ApiResult<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                let v = u8::from_str_radix(hex, 16)
                    .map_err(|_| Error::bad_request("bad percent-encoding"))?;
                out.push(v);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| Error::bad_request("query is not UTF-8").into())
}

fn num(q: &HashMap<String, String>, name: &str) -> ApiResult<Option<i64>> {
    match q.get(name) {
        None => Ok(None),
        Some(v) => v
            .parse::<i64>()
            .map(Some)
            .map_err(|_| Error::bad_request(format!("{name} must be an integer")).into()),
    }
}

async fn find_users(
    State(app): State<Arc<AppState>>,
    Auth(_): Auth,
    RawQuery(raw): RawQuery,
) -> ApiResult<axum::Json<UserList>> {
    let q = query(raw)?;
    let name = q
        .get("username")
        .ok_or_else(|| Error::bad_request("username is required"))?;
    Ok(axum::Json(app.accounts.find_users(name).await?))
}

async fn get_user(
    State(app): State<Arc<AppState>>,
    Auth(_): Auth,
    Path(user_id): Path<String>,
) -> ApiResult<axum::Json<UserInfo>> {
    Ok(axum::Json(app.accounts.user_info(&user_id).await?))
}

async fn contacts(
    State(app): State<Arc<AppState>>,
    Auth(a): Auth,
) -> ApiResult<axum::Json<ContactList>> {
    Ok(axum::Json(app.contacts.contacts(&a).await?))
}

async fn add_contact(
    State(app): State<Arc<AppState>>,
    Auth(a): Auth,
    Path(u): Path<String>,
) -> ApiResult<StatusCode> {
    app.contacts.set_contact(&a, &u, true).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn remove_contact(
    State(app): State<Arc<AppState>>,
    Auth(a): Auth,
    Path(u): Path<String>,
) -> ApiResult<StatusCode> {
    app.contacts.set_contact(&a, &u, false).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn block(
    State(app): State<Arc<AppState>>,
    Auth(a): Auth,
    Path(u): Path<String>,
) -> ApiResult<StatusCode> {
    app.contacts.set_block(&a, &u, true).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn unblock(
    State(app): State<Arc<AppState>>,
    Auth(a): Auth,
    Path(u): Path<String>,
) -> ApiResult<StatusCode> {
    app.contacts.set_block(&a, &u, false).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn create_conversation(
    State(app): State<Arc<AppState>>,
    Auth(a): Auth,
    JsonBody(body): JsonBody<CreateConversation>,
) -> ApiResult<(StatusCode, axum::Json<Conversation>)> {
    let (c, created) = app.convs.create(&a, body).await?;
    let status = created_or_ok(created);
    Ok((status, axum::Json(c)))
}

async fn list_conversations(
    State(app): State<Arc<AppState>>,
    Auth(a): Auth,
) -> ApiResult<axum::Json<ConversationList>> {
    Ok(axum::Json(app.convs.list(&a).await?))
}

async fn get_conversation(
    State(app): State<Arc<AppState>>,
    Auth(a): Auth,
    Path(conv_id): Path<String>,
) -> ApiResult<axum::Json<Conversation>> {
    Ok(axum::Json(app.convs.get(&a, &conv_id).await?))
}

async fn patch_conversation(
    State(app): State<Arc<AppState>>,
    Auth(a): Auth,
    Path(conv_id): Path<String>,
    JsonBody(body): JsonBody<PatchConversation>,
) -> ApiResult<axum::Json<Conversation>> {
    app.convs
        .manage(
            &a,
            &conv_id,
            Op::Update {
                title: body.title,
                only_admins_send: body.only_admins_send,
            },
        )
        .await?;
    Ok(axum::Json(app.convs.get(&a, &conv_id).await?))
}

async fn add_members(
    State(app): State<Arc<AppState>>,
    Auth(a): Auth,
    Path(conv_id): Path<String>,
    JsonBody(body): JsonBody<AddMembers>,
) -> ApiResult<axum::Json<Conversation>> {
    let user_ids = validate::user_ids(&body.user_ids)?;
    app.convs
        .manage(
            &a,
            &conv_id,
            Op::AddMembers {
                user_ids,
                max_members: app.limits.max_group_members,
            },
        )
        .await?;
    Ok(axum::Json(app.convs.get(&a, &conv_id).await?))
}

async fn list_members(
    State(app): State<Arc<AppState>>,
    Auth(a): Auth,
    Path(conv_id): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult<axum::Json<MemberPage>> {
    let q = query(raw)?;
    let limit = match num(&q, "limit")? {
        None => 100,
        Some(l) if l <= 0 => return Err(Error::bad_request("limit must be positive").into()),
        Some(l) => l.min(1000) as usize,
    };
    let after = q.get("after").map(String::as_str);
    Ok(axum::Json(
        app.convs.members_page(&a, &conv_id, after, limit).await?,
    ))
}

async fn remove_member(
    State(app): State<Arc<AppState>>,
    Auth(a): Auth,
    Path((conv_id, user_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let op = if user_id == a.user_id {
        Op::Leave
    } else {
        Op::Remove { user_id }
    };
    app.convs.manage(&a, &conv_id, op).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn set_role(
    State(app): State<Arc<AppState>>,
    Auth(a): Auth,
    Path((conv_id, user_id)): Path<(String, String)>,
    JsonBody(body): JsonBody<SetRole>,
) -> ApiResult<StatusCode> {
    app.convs
        .manage(
            &a,
            &conv_id,
            Op::SetRole {
                user_id,
                role: body.role,
            },
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn set_mute(
    State(app): State<Arc<AppState>>,
    Auth(a): Auth,
    Path((conv_id, user_id)): Path<(String, String)>,
    JsonBody(body): JsonBody<SetMute>,
) -> ApiResult<StatusCode> {
    app.convs
        .set_mute(&a, &conv_id, &user_id, body.until)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn events(
    State(app): State<Arc<AppState>>,
    Auth(a): Auth,
    Path(conv_id): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult<axum::Json<EventPage>> {
    let (after, before, limit) = history_query(raw)?;
    Ok(axum::Json(
        app.timeline
            .history(&a, &conv_id, after, before, limit)
            .await?,
    ))
}

/// The events route's query (rule 16): `after_seq`, `before_seq` and
/// `limit` (default 50, clamped to 500).
pub(crate) fn history_query(raw: Option<String>) -> ApiResult<(Option<u64>, Option<u64>, u64)> {
    let q = query(raw)?;
    let limit = match num(&q, "limit")? {
        None => 50,
        Some(l) if l <= 0 => return Err(Error::bad_request("limit must be positive").into()),
        Some(l) => l.min(500) as u64,
    };
    let seq = |name: &str| -> ApiResult<Option<u64>> {
        match num(&q, name)? {
            Some(v) if v < 0 => Err(Error::bad_request(format!("{name} must be >= 0")).into()),
            v => Ok(v.map(|v| v as u64)),
        }
    };
    Ok((seq("after_seq")?, seq("before_seq")?, limit))
}

async fn receipts(
    State(app): State<Arc<AppState>>,
    Auth(a): Auth,
    Path((conv_id, seq)): Path<(String, String)>,
) -> ApiResult<axum::Json<Receipts>> {
    let seq: u64 = seq
        .parse()
        .map_err(|_| Error::bad_request("seq must be a positive integer"))?;
    Ok(axum::Json(app.marks.receipts(&a, &conv_id, seq).await?))
}

async fn post_message(
    State(app): State<Arc<AppState>>,
    Auth(a): Auth,
    Path(conv_id): Path<String>,
    JsonBody(body): JsonBody<PostMessage>,
) -> ApiResult<(StatusCode, axum::Json<MessagePosted>)> {
    let p = app
        .timeline
        .prepare(
            &a,
            &conv_id,
            &body.client_msg_id,
            TimelineReq::Send(body.content),
        )
        .await?;
    let ack = app
        .timeline
        .complete(&conv_id, &body.client_msg_id, p)
        .await?;
    let status = created_or_ok(ack.created);
    Ok((
        status,
        axum::Json(MessagePosted {
            msg_id: ack.msg_id,
            seq: ack.seq,
            ts: ack.ts,
            content: ack.content,
        }),
    ))
}

async fn push_token(
    State(app): State<Arc<AppState>>,
    Auth(a): Auth,
    JsonBody(body): JsonBody<PushToken>,
) -> ApiResult<StatusCode> {
    app.devices.set_push_token(&a, body).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn set_push(
    State(app): State<Arc<AppState>>,
    Auth(a): Auth,
    JsonBody(body): JsonBody<serde_json::Value>,
) -> ApiResult<StatusCode> {
    let reg = crate::push::register::parse(&body)?;
    app.devices.set_push(&a, reg).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn clear_push(State(app): State<Arc<AppState>>, Auth(a): Auth) -> ApiResult<StatusCode> {
    app.devices.clear_push(&a).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// No authentication: a web client fetches it before it subscribes.
async fn webpush_key(State(app): State<Arc<AppState>>) -> ApiResult<axum::Json<WebPushKey>> {
    Ok(axum::Json(app.devices.webpush_key()?))
}

async fn set_notifications(
    State(app): State<Arc<AppState>>,
    Auth(a): Auth,
    Path(conv_id): Path<String>,
    JsonBody(body): JsonBody<Notifications>,
) -> ApiResult<StatusCode> {
    app.convs.set_notifications(&a, &conv_id, body).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn readyz(State(app): State<Arc<AppState>>) -> Response {
    if app.store.ready().await && !app.shutting_down.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        ApiError(Error::unavailable("not ready")).into_response()
    }
}

async fn metrics(State(app): State<Arc<AppState>>) -> Response {
    let mut body = app.metrics.render(
        app.hub.connections(),
        app.hub.online_users(),
        &app.cluster
            .as_ref()
            .map(|c| c.stats.counters())
            .unwrap_or_default(),
    );
    app.outbound.stats.render(&mut body);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}
