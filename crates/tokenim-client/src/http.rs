//! HTTP helpers (PROTOCOL.md section 2): accounts, sessions, users,
//! conversations and history.

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokenim_proto::{
    AccountCreated, AddMembers, ContactList, Conversation, ConversationList, CreateAccount,
    CreateConversation, CreateSession, DeviceList, ErrorCode, ErrorResponse, EventPage, MemberPage,
    MessagePosted, PatchConversation, PostMessage, PushToken, Receipts, Role, SessionCreated,
    SetMute, SetRole, UserInfo, UserList,
};

use crate::{Error, Result};

/// How long one HTTP request may take unless configured otherwise.
pub const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// Builds a [`Client`] with non-default settings.
#[derive(Debug)]
pub struct ClientBuilder {
    url: String,
    timeout: Duration,
    root_pems: Vec<Vec<u8>>,
}

impl ClientBuilder {
    /// How long one HTTP request may take (default 30 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Also trusts the PEM certificates in `pem` (for example a private CA),
    /// for HTTPS and WSS alike. The public web roots stay trusted.
    pub fn add_root_certificate_pem(mut self, pem: &[u8]) -> Self {
        self.root_pems.push(pem.to_vec());
        self
    }

    /// Builds the client. Fails on a URL that is not `http` or `https` or
    /// on a PEM file without certificates.
    pub fn build(self) -> Result<Client> {
        // rustls needs a process-wide crypto provider for the socket's TLS:
        // ring, unless the app installed one of its own first.
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let base = Url::parse(self.url.trim_end_matches('/'))
            .map_err(|e| Error::Invalid(format!("server URL {:?}: {e}", self.url)))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(Error::Invalid(format!(
                "server URL {:?} must start with http:// or https://",
                self.url
            )));
        }
        let mut http = reqwest::Client::builder()
            .timeout(self.timeout)
            .connect_timeout(Duration::from_secs(10));
        let mut ws_tls = None;
        if !self.root_pems.is_empty() {
            let mut roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            for pem in &self.root_pems {
                let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
                    .collect::<std::result::Result<_, _>>()
                    .map_err(|e| Error::Invalid(format!("PEM certificates: {e}")))?;
                if certs.is_empty() {
                    return Err(Error::Invalid("the PEM holds no certificate".into()));
                }
                for c in certs {
                    roots
                        .add(c)
                        .map_err(|e| Error::Invalid(format!("certificate: {e}")))?;
                }
                let cert = reqwest::Certificate::from_pem(pem)?;
                http = http.add_root_certificate(cert);
            }
            let provider = rustls::crypto::CryptoProvider::get_default()
                .cloned()
                .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()));
            let cfg = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| Error::Invalid(format!("TLS: {e}")))?
                .with_root_certificates(roots)
                .with_no_client_auth();
            ws_tls = Some(Arc::new(cfg));
        }
        Ok(Client {
            inner: Arc::new(ClientInner {
                base,
                http: http.build()?,
                ws_tls,
            }),
        })
    }
}

struct ClientInner {
    base: Url,
    http: reqwest::Client,
    ws_tls: Option<Arc<rustls::ClientConfig>>,
}

/// An unauthenticated connection to a tokenim server: registers accounts
/// and logs in. Cheap to clone.
///
/// ```no_run
/// # async fn demo() -> tokenim_client::Result<()> {
/// let client = tokenim_client::Client::new("http://127.0.0.1:8080")?;
/// client.register("alice", "correct horse", None).await?;
/// let session = client.login("alice", "correct horse", "laptop", "cli").await?;
/// println!("logged in as {}", session.user_id());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<ClientInner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("url", &self.inner.base.as_str())
            .finish()
    }
}

impl Client {
    /// A client for the server at `url` (e.g. `http://127.0.0.1:8080`),
    /// with default settings.
    pub fn new(url: &str) -> Result<Client> {
        Client::builder(url).build()
    }

    /// A builder for a client with custom settings.
    pub fn builder(url: &str) -> ClientBuilder {
        ClientBuilder {
            url: url.to_owned(),
            timeout: DEFAULT_HTTP_TIMEOUT,
            root_pems: Vec::new(),
        }
    }

    /// The server's base URL.
    pub fn url(&self) -> &str {
        self.inner.base.as_str().trim_end_matches('/')
    }

    /// The WebSocket URL derived from the base URL (`ws://.../v1/ws` or
    /// `wss://.../v1/ws`).
    pub fn ws_url(&self) -> String {
        let mut u = self.inner.base.clone();
        let scheme = if u.scheme() == "https" { "wss" } else { "ws" };
        u.set_scheme(scheme).expect("http(s) to ws(s) is allowed");
        u.path_segments_mut()
            .expect("http URLs have paths")
            .pop_if_empty()
            .extend(["v1", "ws"]);
        u.to_string()
    }

    pub(crate) fn ws_tls(&self) -> Option<Arc<rustls::ClientConfig>> {
        self.inner.ws_tls.clone()
    }

    fn url_for(&self, segments: &[&str]) -> Url {
        let mut u = self.inner.base.clone();
        u.path_segments_mut()
            .expect("http URLs have paths")
            .pop_if_empty()
            .extend(segments);
        u
    }

    async fn call<T: DeserializeOwned>(
        &self,
        token: Option<&str>,
        method: Method,
        url: Url,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<T> {
        let mut r = self.inner.http.request(method, url);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if let Some(b) = body {
            r = r.json(b);
        }
        let resp = r.send().await?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .map(|s| s * 1000);
        let bytes = resp.bytes().await?;
        if status.is_success() {
            let bytes = if status == StatusCode::NO_CONTENT || bytes.is_empty() {
                &b"null"[..]
            } else {
                &bytes[..]
            };
            return serde_json::from_slice(bytes)
                .map_err(|e| Error::Protocol(format!("response body: {e}")));
        }
        Err(match serde_json::from_slice::<ErrorResponse>(&bytes) {
            Ok(e) => Error::Api {
                code: e.error.code,
                message: e.error.message,
                retry_after_ms: e.error.retry_after_ms.or(retry_after),
                status: Some(status.as_u16()),
            },
            Err(_) => Error::Api {
                code: code_for_status(status),
                message: String::from_utf8_lossy(&bytes).chars().take(200).collect(),
                retry_after_ms: retry_after,
                status: Some(status.as_u16()),
            },
        })
    }

    /// Sends a test notification to each of the user's registered devices
    /// now and answers each provider's answer (`POST
    /// /v1/server/users/{user_id}/push/test`, with an API key).
    pub async fn server_push_test(
        &self,
        api_key: &str,
        user_id: &str,
    ) -> Result<tokenim_proto::PushTestResults> {
        let url = self.url_for(&["v1", "server", "users", user_id, "push", "test"]);
        self.call(
            Some(api_key),
            Method::POST,
            url,
            Some(&serde_json::json!({})),
        )
        .await
    }

    /// The user's devices with their push registration and last attempt
    /// (`GET /v1/server/users/{user_id}/push`, with an API key).
    pub async fn server_user_push(
        &self,
        api_key: &str,
        user_id: &str,
    ) -> Result<tokenim_proto::PushDevices> {
        let url = self.url_for(&["v1", "server", "users", user_id, "push"]);
        self.call(Some(api_key), Method::GET, url, None::<&()>)
            .await
    }

    /// Creates an account (`POST /v1/accounts`); answers the new user ID.
    /// A taken username is [`Error::Api`] with code `conflict`.
    pub async fn register(
        &self,
        username: &str,
        password: &str,
        display_name: Option<&str>,
    ) -> Result<String> {
        let body = CreateAccount {
            username: username.to_owned(),
            password: password.to_owned(),
            display_name: display_name.map(str::to_owned),
        };
        let r: AccountCreated = self
            .call(
                None,
                Method::POST,
                self.url_for(&["v1", "accounts"]),
                Some(&body),
            )
            .await?;
        Ok(r.user_id)
    }

    /// Logs in on `device_id` (1-64 of `[A-Za-z0-9_.-]`, stable per
    /// installation) with `platform` (`web`, `ios`, `android`, `desktop`,
    /// `cli` or `bot`).
    pub async fn login(
        &self,
        username: &str,
        password: &str,
        device_id: &str,
        platform: &str,
    ) -> Result<Session> {
        tokenim_core::validate::device_id(device_id)?;
        tokenim_core::validate::platform(platform)?;
        let body = CreateSession {
            username: username.to_owned(),
            password: password.to_owned(),
            device_id: device_id.to_owned(),
            platform: platform.to_owned(),
        };
        let r: SessionCreated = self
            .call(
                None,
                Method::POST,
                self.url_for(&["v1", "sessions"]),
                Some(&body),
            )
            .await?;
        Ok(Session {
            client: self.clone(),
            token: r.token,
            user_id: r.user_id,
            device_id: r.device_id,
            expires_at: Some(r.expires_at),
        })
    }

    /// A session from a ready token, without a password: one the app's
    /// backend minted with `POST /v1/server/users/{user_id}/sessions` (or
    /// any other session token of the server), for `device_id`, the device
    /// the token was issued for. The token is checked at once with
    /// `GET /v1/me`, which also names its user; a refused (unknown, expired
    /// or revoked) or malformed token is [`Error::Api`] with code
    /// `unauthorized`, and is not retried. Pass the session to
    /// [`Messenger::start`](crate::Messenger::start) to connect; if the
    /// token stops working later, the messenger stops with
    /// [`StopReason::Unauthorized`](crate::StopReason::Unauthorized).
    ///
    /// ```no_run
    /// # async fn demo(token_from_backend: &str) -> tokenim_client::Result<()> {
    /// let client = tokenim_client::Client::new("https://chat.example.com")?;
    /// let session = client.session_from_token(token_from_backend, "phone-1").await?;
    /// println!("signed in as {}", session.user_id());
    /// # Ok(()) }
    /// ```
    pub async fn session_from_token(&self, token: &str, device_id: &str) -> Result<Session> {
        tokenim_core::validate::device_id(device_id)?;
        // What cannot travel in an Authorization header cannot be a token.
        if token.is_empty() || token.len() > 4096 || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::api(
                ErrorCode::Unauthorized,
                "not a token: 1-4096 visible ASCII characters",
            ));
        }
        let mut s = self.session(token, "", device_id);
        s.user_id = s.me().await?.user_id;
        Ok(s)
    }

    /// A session from a token obtained earlier (for example saved by the
    /// application), whose user and device are known. Nothing is checked
    /// until the first request.
    pub fn session(&self, token: &str, user_id: &str, device_id: &str) -> Session {
        Session {
            client: self.clone(),
            token: token.to_owned(),
            user_id: user_id.to_owned(),
            device_id: device_id.to_owned(),
            expires_at: None,
        }
    }
}

fn code_for_status(s: StatusCode) -> ErrorCode {
    ErrorCode::from_http_status(s.as_u16()).unwrap_or(ErrorCode::Internal)
}

/// Which events of a conversation [`Session::history`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryPage {
    /// The newest `limit` events.
    Latest,
    /// The newest `limit` events before this seq (scrolling back).
    Before(u64),
    /// The oldest `limit` events after this seq (catching up).
    After(u64),
}

/// A logged-in user on one device: the authenticated HTTP API. Cheap to
/// clone; hand it to [`Messenger::start`](crate::Messenger::start) for the
/// real-time connection.
#[derive(Clone)]
pub struct Session {
    client: Client,
    token: String,
    user_id: String,
    device_id: String,
    expires_at: Option<i64>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("url", &self.client.url())
            .field("user_id", &self.user_id)
            .field("device_id", &self.device_id)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// The bearer token.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The logged-in user's ID.
    pub fn user_id(&self) -> &str {
        &self.user_id
    }

    /// The device this session is bound to.
    pub fn device_id(&self) -> &str {
        &self.device_id
    }

    /// When the token expires (ms since the epoch), if known.
    pub fn expires_at(&self) -> Option<i64> {
        self.expires_at
    }

    /// The unauthenticated client this session came from.
    pub fn client(&self) -> &Client {
        &self.client
    }

    async fn get<T: DeserializeOwned>(&self, url: Url) -> Result<T> {
        self.client
            .call(Some(&self.token), Method::GET, url, None::<&Value>)
            .await
    }

    async fn send_json<T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<T> {
        self.client.call(Some(&self.token), method, url, body).await
    }

    /// `GET /v1/me`.
    pub async fn me(&self) -> Result<UserInfo> {
        self.get(self.client.url_for(&["v1", "me"])).await
    }

    /// `GET /v1/users/{user_id}`.
    pub async fn user(&self, user_id: &str) -> Result<UserInfo> {
        self.get(self.client.url_for(&["v1", "users", user_id]))
            .await
    }

    /// `GET /v1/users?username=NAME`: the users with exactly that name (none
    /// or one).
    pub async fn users_by_name(&self, username: &str) -> Result<Vec<UserInfo>> {
        let mut u = self.client.url_for(&["v1", "users"]);
        u.query_pairs_mut().append_pair("username", username);
        let r: UserList = self.get(u).await?;
        Ok(r.users)
    }

    /// The user called `username`, or [`Error::Api`] with `not_found`.
    pub async fn find_user(&self, username: &str) -> Result<UserInfo> {
        self.users_by_name(username)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| Error::api(ErrorCode::NotFound, format!("no user {username:?}")))
    }

    /// `GET /v1/devices`: the caller's devices.
    pub async fn devices(&self) -> Result<DeviceList> {
        self.get(self.client.url_for(&["v1", "devices"])).await
    }

    /// `POST /v1/conversations` with a peer: opens (or finds) the direct
    /// conversation with `peer_user_id`.
    pub async fn create_direct(&self, peer_user_id: &str) -> Result<Conversation> {
        let body = CreateConversation::Direct {
            peer: peer_user_id.to_owned(),
        };
        self.send_json(
            Method::POST,
            self.client.url_for(&["v1", "conversations"]),
            Some(&body),
        )
        .await
    }

    /// `POST /v1/conversations` for a group owned by the caller, with
    /// `members` (user IDs; the caller may be among them).
    pub async fn create_group(&self, title: &str, members: &[&str]) -> Result<Conversation> {
        let body = CreateConversation::Group {
            title: Some(title.to_owned()),
            members: members.iter().map(|m| (*m).to_owned()).collect(),
        };
        self.send_json(
            Method::POST,
            self.client.url_for(&["v1", "conversations"]),
            Some(&body),
        )
        .await
    }

    /// `POST /v1/conversations/{conv_id}/members` (admins and the owner).
    pub async fn add_members(&self, conv_id: &str, user_ids: &[&str]) -> Result<()> {
        let body = AddMembers {
            user_ids: user_ids.iter().map(|m| (*m).to_owned()).collect(),
        };
        let _: Value = self
            .send_json(
                Method::POST,
                self.client
                    .url_for(&["v1", "conversations", conv_id, "members"]),
                Some(&body),
            )
            .await?;
        Ok(())
    }

    /// `GET /v1/conversations`: the caller's conversations, most recently
    /// active first, each with its `unread` count.
    pub async fn conversations(&self) -> Result<Vec<Conversation>> {
        let r: ConversationList = self
            .get(self.client.url_for(&["v1", "conversations"]))
            .await?;
        Ok(r.conversations)
    }

    /// `GET /v1/conversations/{conv_id}`.
    pub async fn conversation(&self, conv_id: &str) -> Result<Conversation> {
        self.get(self.client.url_for(&["v1", "conversations", conv_id]))
            .await
    }

    /// `GET /v1/conversations/{conv_id}/events`: one page of history,
    /// ascending. `limit` is clamped by the server to 500.
    pub async fn history(&self, conv_id: &str, page: HistoryPage, limit: u32) -> Result<EventPage> {
        let mut u = self
            .client
            .url_for(&["v1", "conversations", conv_id, "events"]);
        {
            let mut q = u.query_pairs_mut();
            q.append_pair("limit", &limit.to_string());
            match page {
                HistoryPage::Latest => {}
                HistoryPage::Before(s) => {
                    q.append_pair("before_seq", &s.to_string());
                }
                HistoryPage::After(s) => {
                    q.append_pair("after_seq", &s.to_string());
                }
            }
        }
        self.get(u).await
    }

    /// `POST /v1/conversations/{conv_id}/messages`: sends over HTTP, without
    /// a socket. Idempotent: repeating `client_msg_id` answers the first
    /// message's `msg_id`, `seq` and `ts`, so retrying after an error is
    /// safe. Use [`new_client_msg_id`](crate::new_client_msg_id) for a fresh
    /// one.
    pub async fn post_message(
        &self,
        conv_id: &str,
        client_msg_id: &str,
        content: impl Into<crate::MessageContent>,
    ) -> Result<MessagePosted> {
        tokenim_core::validate::client_msg_id(client_msg_id)?;
        let body = PostMessage {
            client_msg_id: client_msg_id.to_owned(),
            content: content.into().to_value(),
        };
        self.send_json(
            Method::POST,
            self.client
                .url_for(&["v1", "conversations", conv_id, "messages"]),
            Some(&body),
        )
        .await
    }

    /// [`post_message`](Self::post_message) with `{"type": "text", "text"}`.
    pub async fn post_text(
        &self,
        conv_id: &str,
        client_msg_id: &str,
        text: &str,
    ) -> Result<MessagePosted> {
        self.post_message(conv_id, client_msg_id, crate::MessageContent::text(text))
            .await
    }

    /// `GET /v1/conversations/{conv_id}/events/{seq}/receipts`: who of the
    /// other members has read up to `seq`.
    pub async fn receipts(&self, conv_id: &str, seq: u64) -> Result<Receipts> {
        let seq = seq.to_string();
        self.get(
            self.client
                .url_for(&["v1", "conversations", conv_id, "events", &seq, "receipts"]),
        )
        .await
    }

    /// `PUT /v1/contacts/{user_id}`.
    pub async fn add_contact(&self, user_id: &str) -> Result<()> {
        let _: Value = self
            .send_json(
                Method::PUT,
                self.client.url_for(&["v1", "contacts", user_id]),
                None::<&Value>,
            )
            .await?;
        Ok(())
    }

    /// `DELETE /v1/contacts/{user_id}`.
    pub async fn remove_contact(&self, user_id: &str) -> Result<()> {
        self.no_content(Method::DELETE, &["v1", "contacts", user_id], None::<&Value>)
            .await
    }

    /// `GET /v1/contacts`.
    pub async fn contacts(&self) -> Result<Vec<UserInfo>> {
        let r: ContactList = self.get(self.client.url_for(&["v1", "contacts"])).await?;
        Ok(r.contacts)
    }

    /// `PUT /v1/blocks/{user_id}`: they can no longer open a direct
    /// conversation with the caller nor send to them there.
    pub async fn block(&self, user_id: &str) -> Result<()> {
        self.no_content(Method::PUT, &["v1", "blocks", user_id], None::<&Value>)
            .await
    }

    /// `DELETE /v1/blocks/{user_id}`.
    pub async fn unblock(&self, user_id: &str) -> Result<()> {
        self.no_content(Method::DELETE, &["v1", "blocks", user_id], None::<&Value>)
            .await
    }

    /// `PATCH /v1/conversations/{conv_id}`: the title and announcement mode
    /// of a group (admins and the owner); `None` leaves a field as it is.
    pub async fn update_conversation(
        &self,
        conv_id: &str,
        title: Option<&str>,
        only_admins_send: Option<bool>,
    ) -> Result<Conversation> {
        let body = PatchConversation {
            title: title.map(str::to_owned),
            only_admins_send,
        };
        self.send_json(
            Method::PATCH,
            self.client.url_for(&["v1", "conversations", conv_id]),
            Some(&body),
        )
        .await
    }

    /// `GET /v1/conversations/{conv_id}/members`: members in user ID order
    /// after `after`, at most `limit` (the server clamps it to 1,000).
    pub async fn members(
        &self,
        conv_id: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<MemberPage> {
        let mut u = self
            .client
            .url_for(&["v1", "conversations", conv_id, "members"]);
        {
            let mut q = u.query_pairs_mut();
            q.append_pair("limit", &limit.to_string());
            if let Some(a) = after {
                q.append_pair("after", a);
            }
        }
        self.get(u).await
    }

    /// `DELETE /v1/conversations/{conv_id}/members/{user_id}`: removes a
    /// member (admins and the owner), or leaves when `user_id` is the
    /// caller's own (see [`leave`](Self::leave)).
    pub async fn remove_member(&self, conv_id: &str, user_id: &str) -> Result<()> {
        self.no_content(
            Method::DELETE,
            &["v1", "conversations", conv_id, "members", user_id],
            None::<&Value>,
        )
        .await
    }

    /// Leaves a group.
    pub async fn leave(&self, conv_id: &str) -> Result<()> {
        let me = self.user_id.clone();
        self.remove_member(conv_id, &me).await
    }

    /// `PUT .../members/{user_id}/role` (the owner only): `admin` or
    /// `member`.
    pub async fn set_role(&self, conv_id: &str, user_id: &str, role: Role) -> Result<()> {
        self.no_content(
            Method::PUT,
            &["v1", "conversations", conv_id, "members", user_id, "role"],
            Some(&SetRole { role }),
        )
        .await
    }

    /// `PUT .../members/{user_id}/mute` (admins and the owner): muted
    /// until `until` (ms), or unmuted with `None`.
    pub async fn set_mute(&self, conv_id: &str, user_id: &str, until: Option<i64>) -> Result<()> {
        self.no_content(
            Method::PUT,
            &["v1", "conversations", conv_id, "members", user_id, "mute"],
            Some(&SetMute { until }),
        )
        .await
    }

    /// `PUT /v1/push-token`: this device's push registration (`provider`
    /// `apns`, `fcm` or `webhook`, and its token).
    pub async fn set_push_token(&self, provider: &str, token: &str) -> Result<()> {
        let body = PushToken {
            provider: provider.to_owned(),
            token: token.to_owned(),
        };
        self.no_content(Method::PUT, &["v1", "push-token"], Some(&body))
            .await
    }

    /// `DELETE /v1/devices/{device_id}`: ends that device's sessions and
    /// kicks it.
    pub async fn remove_device(&self, device_id: &str) -> Result<()> {
        self.no_content(
            Method::DELETE,
            &["v1", "devices", device_id],
            None::<&Value>,
        )
        .await
    }

    /// A call answered `204 No Content`.
    async fn no_content(
        &self,
        method: Method,
        path: &[&str],
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<()> {
        let _: Value = self
            .send_json(method, self.client.url_for(path), body)
            .await?;
        Ok(())
    }

    /// `DELETE /v1/sessions/current`: the token stops working at once.
    pub async fn logout(&self) -> Result<()> {
        let _: Value = self
            .send_json(
                Method::DELETE,
                self.client.url_for(&["v1", "sessions", "current"]),
                None::<&Value>,
            )
            .await?;
        Ok(())
    }
}
