//! The scriptable one-shot commands: each logs in over HTTP, does one thing,
//! prints it (as JSON with `--json`) and exits non-zero on failure.

use std::collections::HashMap;
use std::io::Read;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};
use tokenim_client::{HistoryPage, Session, event_text, new_client_msg_id};

use super::{Conn, PLATFORM, clock};

/// `println!` through [`emit`].
macro_rules! out {
    ($($t:tt)*) => {
        emit(format_args!($($t)*))
    };
}

#[derive(Args)]
pub struct RegisterArgs {
    #[command(flatten)]
    conn: Conn,
    /// Display name [default: the username].
    #[arg(long)]
    display_name: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct LoginArgs {
    #[command(flatten)]
    conn: Conn,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Which conversation: a direct one with a user, or one by ID.
#[derive(Args)]
struct Target {
    /// The other user of a direct conversation (opened if needed).
    #[arg(long, visible_alias = "with", required_unless_present = "conv")]
    to: Option<String>,
    /// A conversation ID.
    #[arg(long, conflicts_with = "to")]
    conv: Option<String>,
}

impl Target {
    async fn conv_id(&self, s: &Session) -> anyhow::Result<String> {
        if let Some(c) = &self.conv {
            return Ok(c.clone());
        }
        let name = self.to.as_deref().expect("clap requires --to or --conv");
        let peer = s
            .find_user(name)
            .await
            .with_context(|| format!("finding user {name}"))?;
        Ok(s.create_direct(&peer.user_id).await?.conv_id)
    }
}

#[derive(Args)]
pub struct SendArgs {
    #[command(flatten)]
    conn: Conn,
    #[command(flatten)]
    target: Target,
    /// The request's idempotency key [default: a random one]. Running the
    /// command again with the same key sends nothing new.
    #[arg(long)]
    client_msg_id: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// The text (words are joined by spaces) [default: read standard input].
    text: Vec<String>,
}

#[derive(Args)]
pub struct HistoryArgs {
    #[command(flatten)]
    conn: Conn,
    #[command(flatten)]
    target: Target,
    /// Most events to print (the server caps it at 500).
    #[arg(long, default_value_t = 50)]
    limit: u32,
    /// Only events before this seq.
    #[arg(long, conflicts_with = "after")]
    before: Option<u64>,
    /// Only events after this seq.
    #[arg(long)]
    after: Option<u64>,
    /// Print JSON: {"conv_id", "events": [...], "has_more"}.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct ConversationsArgs {
    #[command(flatten)]
    conn: Conn,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct GroupArgs {
    #[command(flatten)]
    conn: Conn,
    /// The group's title.
    #[arg(long)]
    title: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Usernames of the other members.
    members: Vec<String>,
}

/// Writes one line to standard output. When the reader has gone away
/// (`tokenim history | head -1`) the command ends quietly, as Unix tools
/// do, instead of panicking on the broken pipe.
fn emit(args: std::fmt::Arguments) {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    let r = o
        .write_fmt(args)
        .and_then(|()| o.write_all(b"\n"))
        .and_then(|()| o.flush());
    match r {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => {
            eprintln!("error: writing to standard output: {e}");
            std::process::exit(1);
        }
    }
}

fn print_json(v: &Value) {
    out!(
        "{}",
        serde_json::to_string_pretty(v).expect("JSON values serialize")
    );
}

pub async fn register(a: RegisterArgs) -> anyhow::Result<()> {
    let user = a.conn.user()?;
    let user_id = a
        .conn
        .client()?
        .register(user, a.conn.password()?, a.display_name.as_deref())
        .await
        .with_context(|| format!("registering {user}"))?;
    if a.json {
        print_json(&json!({"user_id": user_id, "username": user}));
    } else {
        out!("registered {user} ({user_id})");
    }
    Ok(())
}

pub async fn login(a: LoginArgs) -> anyhow::Result<()> {
    if a.conn.token.is_some() {
        bail!(
            "login makes a token from a password: with --token or TOKENIM_TOKEN there is nothing to log in"
        );
    }
    // Always a fresh login, kept for the next commands.
    let s = a.conn.password_login().await?;
    if a.json {
        print_json(&json!({
            "user_id": s.user_id(), "device_id": s.device_id(), "token": s.token(),
            "expires_at": s.expires_at(), "platform": PLATFORM,
        }));
    } else {
        out!(
            "logged in as {} on device {}",
            a.conn.user()?,
            s.device_id()
        );
        out!("token: {}", s.token());
    }
    Ok(())
}

pub async fn send(a: SendArgs) -> anyhow::Result<()> {
    let text = if a.text.is_empty() {
        let mut t = String::new();
        std::io::stdin()
            .read_to_string(&mut t)
            .context("reading the message from standard input")?;
        t.trim_end_matches(['\n', '\r']).to_owned()
    } else {
        a.text.join(" ")
    };
    if text.is_empty() {
        bail!("nothing to send");
    }
    let s = a.conn.login().await?;
    let conv_id = a.target.conv_id(&s).await?;
    let cmid = a.client_msg_id.clone().unwrap_or_else(new_client_msg_id);
    // Retrying with the same client_msg_id is safe: the server keeps one.
    let mut delay = Duration::from_millis(200);
    let posted = loop {
        match s.post_text(&conv_id, &cmid, &text).await {
            Ok(p) => break p,
            Err(e) if e.retryable() && delay < Duration::from_secs(10) => {
                let wait = match &e {
                    tokenim_client::Error::Api {
                        retry_after_ms: Some(ms),
                        ..
                    } => Duration::from_millis(*ms),
                    _ => delay,
                };
                eprintln!("send failed ({e}); retrying");
                tokio::time::sleep(wait).await;
                delay *= 2;
            }
            Err(e) => return Err(e).context("sending"),
        }
    };
    if a.json {
        print_json(&json!({
            "conv_id": conv_id, "client_msg_id": cmid, "msg_id": posted.msg_id,
            "seq": posted.seq, "ts": posted.ts, "status": "sent",
        }));
    } else {
        out!("sent #{} to {conv_id}", posted.seq);
    }
    Ok(())
}

/// Usernames of user IDs, asked once each.
pub(crate) struct Names<'a> {
    session: &'a Session,
    known: HashMap<String, String>,
}

impl<'a> Names<'a> {
    pub(crate) fn new(session: &'a Session) -> Self {
        Names {
            session,
            known: HashMap::new(),
        }
    }

    pub(crate) async fn name(&mut self, user_id: &str) -> String {
        if let Some(n) = self.known.get(user_id) {
            return n.clone();
        }
        let n = match self.session.user(user_id).await {
            Ok(u) => u.username.unwrap_or_else(|| user_id.to_owned()),
            Err(_) => user_id.to_owned(),
        };
        self.known.insert(user_id.to_owned(), n.clone());
        n
    }
}

pub async fn history(a: HistoryArgs) -> anyhow::Result<()> {
    let s = a.conn.login().await?;
    let conv_id = a.target.conv_id(&s).await?;
    let page = match (a.before, a.after) {
        (Some(b), _) => HistoryPage::Before(b),
        (None, Some(af)) => HistoryPage::After(af),
        (None, None) => HistoryPage::Latest,
    };
    let events = s
        .history(&conv_id, page, a.limit)
        .await
        .context("reading history")?;
    if a.json {
        print_json(&json!({
            "conv_id": conv_id,
            "events": events.events,
            "has_more": events.has_more,
        }));
        return Ok(());
    }
    let mut names = Names::new(&s);
    for e in &events.events {
        let who = match &e.sender {
            Some(s) => names.name(s).await,
            None => "(system)".to_owned(),
        };
        let body = match event_text(e) {
            Some(t) => t,
            None if e.recalled => "(recalled)".to_owned(),
            None => format!("[{}]", e.kind.as_str()),
        };
        let edited = if e.edited { " (edited)" } else { "" };
        out!("#{:<5} {} {who}: {body}{edited}", e.seq, clock(e.ts));
    }
    if events.has_more {
        out!("(older events: --before {})", events.events[0].seq);
    }
    Ok(())
}

pub async fn conversations(a: ConversationsArgs) -> anyhow::Result<()> {
    let s = a.conn.login().await?;
    let convs = s.conversations().await.context("listing conversations")?;
    if a.json {
        print_json(&json!({ "conversations": convs }));
        return Ok(());
    }
    let mut names = Names::new(&s);
    for c in &convs {
        let title = match (&c.title, &c.members) {
            (Some(t), _) if !t.is_empty() => t.clone(),
            (_, Some(members)) => {
                let mut others = Vec::new();
                for m in members.iter().filter(|m| m.user_id != s.user_id()) {
                    others.push(names.name(&m.user_id).await);
                }
                others.join(", ")
            }
            _ => c.conv_id.clone(),
        };
        out!("{:<28} {:>4} unread  {title}", c.conv_id, c.unread);
    }
    Ok(())
}

pub async fn group(a: GroupArgs) -> anyhow::Result<()> {
    let s = a.conn.login().await?;
    let mut ids = Vec::new();
    for m in &a.members {
        ids.push(
            s.find_user(m)
                .await
                .with_context(|| format!("finding user {m}"))?
                .user_id,
        );
    }
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let c = s
        .create_group(&a.title, &refs)
        .await
        .context("creating the group")?;
    if a.json {
        print_json(&serde_json::to_value(&c).expect("conversations serialize"));
    } else {
        out!("created group {} ({})", a.title, c.conv_id);
    }
    Ok(())
}
