//! Client subcommands of the binary: the terminal chat and the scriptable
//! one-shot commands, all built on the `tokenim-client` SDK. Holds no
//! protocol logic of its own.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use tokenim_client::{Client, Session};

mod chat;
mod oneshot;
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
            .context("no username: pass --user or set TOKENIM_USER")
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
    /// there is one, else by logging in with the username and password.
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
        let (user, password) = (self.user()?, self.password()?);
        let device = self.device()?;
        self.client()?
            .login(user, password, &device, PLATFORM)
            .await
            .with_context(|| format!("logging in as {user}"))
    }
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
