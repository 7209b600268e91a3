//! Client subcommands of the binary: the terminal chat and the scriptable
//! one-shot commands, all built on the `tokenim-client` SDK. Holds no
//! protocol logic of its own.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use tokenim_client::{Client, Session};

mod chat;
mod kept;
mod oneshot;
mod push;
mod tui;

/// The platform this binary logs in as.
const PLATFORM: &str = "cli";

#[derive(Subcommand)]
pub enum ClientCmd {
    /// Open the full-screen terminal chat (logs in, or shows a login form).
    Chat(chat::ChatArgs),
    /// Create an account.
    Register(oneshot::RegisterArgs),
    /// Log in and print the session (token, user and device).
    Login(oneshot::LoginArgs),
    /// Send a text message to a user or a conversation.
    Send(oneshot::SendArgs),
    /// Print a conversation's history.
    History(oneshot::HistoryArgs),
    /// List conversations with their unread counts.
    Conversations(oneshot::ConversationsArgs),
    /// Create a group with the given members.
    Group(oneshot::GroupArgs),
    /// Offline push tools for operators (with an API key).
    #[command(subcommand)]
    Push(push::PushCmd),
}

pub async fn run(cmd: ClientCmd) -> anyhow::Result<()> {
    match cmd {
        ClientCmd::Chat(a) => chat::run(a).await,
        ClientCmd::Register(a) => oneshot::register(a).await,
        ClientCmd::Login(a) => oneshot::login(a).await,
        ClientCmd::Send(a) => oneshot::send(a).await,
        ClientCmd::History(a) => oneshot::history(a).await,
        ClientCmd::Conversations(a) => oneshot::conversations(a).await,
        ClientCmd::Group(a) => oneshot::group(a).await,
        ClientCmd::Push(c) => push::run(c).await,
    }
}

/// Where the server is and who the user is: flags, or the environment.
/// Either a username and password, or a ready session token (which wins
/// when both are given).
#[derive(Args, Clone)]
pub struct Conn {
    /// Server URL.
    #[arg(long, env = "TOKENIM_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Username.
    #[arg(long, short = 'u', env = "TOKENIM_USER")]
    user: Option<String>,
    /// Password (not used when a token is given).
    #[arg(long, short = 'p', env = "TOKENIM_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// A ready session token (e.g. minted by your app's backend) instead of
    /// logging in with --user and --password; wins over a password when
    /// both are given. Give --device the token's device.
    #[arg(long, env = "TOKENIM_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Device ID [default: one generated once and kept in the tokenim home
    /// folder, so it is stable per installation].
    #[arg(long, env = "TOKENIM_DEVICE")]
    device: Option<String>,
}

impl std::fmt::Debug for Conn {
    /// Never prints the password or the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("url", &self.url)
            .field("user", &self.user)
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

impl Conn {
    fn client(&self) -> anyhow::Result<Client> {
        Client::new(&self.url).with_context(|| format!("server URL {}", self.url))
    }

    fn user(&self) -> anyhow::Result<&str> {
        self.user
            .as_deref()
            .context("no username: pass --user, set TOKENIM_USER, or run tokenim login once")
    }

    fn password(&self) -> anyhow::Result<&str> {
        self.password
            .as_deref()
            .context("no password: pass --password or set TOKENIM_PASSWORD")
    }

    fn device(&self) -> anyhow::Result<String> {
        match &self.device {
            Some(d) => Ok(d.clone()),
            None => stable_device_id(),
        }
    }

    /// Signs in with the flags or the environment: with the token when
    /// there is one, else with the session a password login kept for this
    /// server and user (`tokenim login`, or an earlier command), else by
    /// logging in with the username and password (and keeping that
    /// session).
    async fn login(&self) -> anyhow::Result<Session> {
        if let Some(token) = &self.token {
            let device = self.device()?;
            // The error names neither the token nor anything of it.
            return self
                .client()?
                .session_from_token(token, &device)
                .await
                .context("signing in with the token");
        }
        if let Some(s) = self.kept_session().await? {
            return Ok(s);
        }
        self.password_login().await
    }

    /// A fresh password login, kept for the next commands.
    async fn password_login(&self) -> anyhow::Result<Session> {
        let (user, password) = (self.user()?, self.password()?);
        let device = self.device()?;
        let s = self
            .client()?
            .login(user, password, &device, PLATFORM)
            .await
            .with_context(|| format!("logging in as {user}"))?;
        let k = kept::Kept {
            url: self.url.clone(),
            user: user.to_owned(),
            user_id: s.user_id().to_owned(),
            device: s.device_id().to_owned(),
            token: s.token().to_owned(),
            expires_at: s.expires_at().unwrap_or(0),
        };
        kept::save(&home()?, k)?;
        Ok(s)
    }

    /// The kept session of this server and user (the latest one of the
    /// server when no user is named), when the server still takes it and
    /// it is of the device asked for.
    async fn kept_session(&self) -> anyhow::Result<Option<Session>> {
        let home = home()?;
        let Some(k) = kept::find(&home, &self.url, self.user.as_deref(), now_ms())? else {
            return Ok(None);
        };
        if self.device.as_ref().is_some_and(|d| *d != k.device) {
            return Ok(None);
        }
        let s = self.client()?.session(&k.token, &k.user_id, &k.device);
        match s.me().await {
            Ok(_) => Ok(Some(s)),
            Err(e) if e.code() == Some(tokenim_client::ErrorCode::Unauthorized) => {
                // Logged out or revoked elsewhere: log in again.
                kept::forget(&home, &k.url, &k.user)?;
                Ok(None)
            }
            Err(e) => Err(e).context("checking the kept session"),
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The folder where the CLI keeps its device ID and chat state:
/// `$TOKENIM_HOME`, else `$XDG_CONFIG_HOME/tokenim`, else
/// `$HOME/.config/tokenim`.
pub fn home() -> anyhow::Result<PathBuf> {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(h) = var("TOKENIM_HOME") {
        return Ok(PathBuf::from(h));
    }
    if let Some(x) = var("XDG_CONFIG_HOME") {
        return Ok(PathBuf::from(x).join("tokenim"));
    }
    match var("HOME") {
        Some(h) => Ok(PathBuf::from(h).join(".config").join("tokenim")),
        None => bail!("no home folder: set TOKENIM_HOME or pass --device"),
    }
}

/// This installation's device ID, made once (`cli-` and 16 hex digits) and
/// kept in `home()/device-id`.
fn stable_device_id() -> anyhow::Result<String> {
    let dir = home()?;
    let path = dir.join("device-id");
    match std::fs::read_to_string(&path) {
        Ok(s) if tokenim_core::validate::device_id(s.trim()).is_ok() => {
            return Ok(s.trim().to_owned());
        }
        Ok(_) => bail!("{} does not hold a valid device ID", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    let id = format!("cli-{:016x}", rand::random::<u64>());
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(&path, format!("{id}\n"))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(id)
}

/// `HH:MM` (UTC) of a timestamp in ms.
fn clock(ts: i64) -> String {
    let mins = ts.div_euclid(60_000);
    let (h, m) = (mins.div_euclid(60).rem_euclid(24), mins.rem_euclid(60));
    format!("{h:02}:{m:02}")
}
