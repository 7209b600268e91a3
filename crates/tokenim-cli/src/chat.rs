//! `tokenim chat`: the full-screen terminal chat. Sets up the terminal
//! (crossterm: works on any terminal, over SSH too), then runs the loop that
//! joins key presses, SDK updates and the screens of `tui`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow};
use clap::Args;
use crossterm::event::{Event as TermEvent, EventStream, KeyEventKind};
use futures_util::{Stream, StreamExt};
use ratatui::Terminal;
use ratatui::backend::{Backend, CrosstermBackend};
use ratatui::buffer::Buffer;
use tokenim_client::{
    Client, Config, Conversation, ErrorCode, FileStore, HistoryPage, MemoryStore, Messenger,
    Session, StateStore, StopReason, Update, proto::ConvType,
};

use super::tui::{Action, ChatState, ConvItem, LoginAction, LoginForm};
use super::{Conn, PLATFORM};
use tokenim_core::clock::now_ms;

#[derive(Args)]
pub struct ChatArgs {
    #[command(flatten)]
    conn: Conn,
    /// Create the account first (with --user and --password).
    #[arg(long)]
    register: bool,
}

pub async fn run(a: ChatArgs) -> anyhow::Result<()> {
    let start = Start {
        client: a.conn.client()?,
        device: a.conn.device()?,
        user: a.conn.user.clone(),
        password: a.conn.password.clone(),
        token: a.conn.token.clone(),
        register: a.register,
        state_dir: super::home().ok(),
    };
    crossterm::terminal::enable_raw_mode().context("this needs a terminal")?;
    crossterm::execute!(std::io::stdout(), crossterm::terminal::EnterAlternateScreen)?;
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore_terminal();
        hook(info);
    }));
    let result = async {
        let mut terminal = Terminal::new(CrosstermBackend::new(std::io::stdout()))?;
        terminal.clear()?;
        let input = EventStream::new().filter_map(|e| async move { e.ok() });
        run_ui(&mut terminal, Box::pin(input), start, |_| {}).await
    }
    .await;
    restore_terminal();
    result
}

fn restore_terminal() {
    let _ = crossterm::terminal::disable_raw_mode();
    let _ = crossterm::execute!(
        std::io::stdout(),
        crossterm::terminal::LeaveAlternateScreen,
        crossterm::cursor::Show
    );
}

/// What the chat starts from.
pub struct Start {
    pub client: Client,
    pub device: String,
    pub user: Option<String>,
    pub password: Option<String>,
    /// A ready session token: used instead of the password when given.
    pub token: Option<String>,
    /// Register `user` first.
    pub register: bool,
    /// Where the SDK state (cursors, outbox) is kept; in memory if `None`.
    pub state_dir: Option<PathBuf>,
}

/// Runs the chat on any ratatui backend with any source of terminal events
/// until the user quits; `on_draw` sees every frame drawn.
pub async fn run_ui<B: Backend>(
    terminal: &mut Terminal<B>,
    mut input: impl Stream<Item = TermEvent> + Unpin,
    start: Start,
    mut on_draw: impl FnMut(&Buffer),
) -> anyhow::Result<()> {
    let mut draw = |terminal: &mut Terminal<B>, f: &dyn Fn(&mut ratatui::Frame)| {
        let done = terminal.draw(f).map_err(|e| anyhow!("drawing: {e}"))?;
        on_draw(done.buffer);
        Ok::<(), anyhow::Error>(())
    };

    // Log in: with the given credentials, else through the form.
    let mut form = LoginForm {
        url: start.client.url().to_owned(),
        username: start.user.clone().unwrap_or_default(),
        password: start.password.clone().unwrap_or_default(),
        field: usize::from(start.user.is_some()),
        message: String::new(),
    };
    let mut attempt = match (&start.user, &start.password) {
        (Some(_), Some(_)) if start.register => Some(LoginAction::Register),
        (Some(_), Some(_)) => Some(LoginAction::Login),
        _ => None,
    };
    let mut with_token = None;
    if let Some(token) = &start.token {
        form.message = "…".into();
        draw(terminal, &|f| form.draw(f))?;
        match with_token_sign_in(&start.client, token, &start.device).await {
            Ok((s, username)) => {
                form.username = username;
                with_token = Some(s);
            }
            Err(e) => {
                form.message = e;
                attempt = None;
            }
        }
    }
    let session = loop {
        if let Some(s) = with_token.take() {
            break s;
        }
        if let Some(action) = attempt.take() {
            match action {
                LoginAction::Quit => return Ok(()),
                LoginAction::Register | LoginAction::Login => {
                    form.message = "…".into();
                    draw(terminal, &|f| form.draw(f))?;
                    match sign_in(&start, &form, action == LoginAction::Register).await {
                        Ok(s) => break s,
                        Err(e) => form.message = e,
                    }
                }
            }
        }
        draw(terminal, &|f| form.draw(f))?;
        match input.next().await {
            None => return Ok(()),
            Some(TermEvent::Key(k)) if k.kind == KeyEventKind::Press => attempt = form.on_key(k),
            Some(_) => {}
        }
    };

    let store: Arc<dyn StateStore> = match &start.state_dir {
        Some(d) => Arc::new(FileStore::new(d.join(format!(
            "chat-{}-{}.json",
            session.user_id(),
            session.device_id()
        )))),
        None => Arc::new(MemoryStore::new()),
    };
    let (messenger, mut updates) = Messenger::start(&session, store, Config::default()).await?;
    let mut st = ChatState::new(session.user_id(), &form.username);
    let mut names = Names::default();
    match session.conversations().await {
        Ok(convs) => {
            for c in &convs {
                let item = names.item(&session, c).await;
                st.upsert_conv(item);
            }
            if !convs.is_empty() {
                st.focus = super::tui::Focus::List;
            }
        }
        Err(e) => st.status = format!("listing conversations: {e}"),
    }
    names.share(&mut st);
    watch_peers(&messenger, &st).await;

    // Redraws once a second too, so a typing notice goes away on time.
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut typing_sent: HashMap<String, i64> = HashMap::new();
    loop {
        st.now_ms = now_ms();
        draw(terminal, &|f| st.draw(f))?;
        tokio::select! {
            _ = tick.tick() => {}
            ev = input.next() => match ev {
                None => break,
                Some(TermEvent::Key(k)) if k.kind == KeyEventKind::Press => {
                    if let Some(action) = st.on_key(k) {
                        if action == Action::Quit {
                            break;
                        }
                        if let Action::Typing(conv) = &action {
                            // At most one notice per conversation every 3 s.
                            let last = typing_sent.get(conv).copied().unwrap_or(0);
                            if now_ms() - last >= 3_000 {
                                typing_sent.insert(conv.clone(), now_ms());
                                let _ = messenger.typing(conv).await;
                            }
                            continue;
                        }
                        if let Err(e) = perform(action, &session, &messenger, &mut st, &mut names).await {
                            // The whole chain: what was tried and why it failed.
                            st.status = format!("{e:#}");
                        }
                    }
                }
                Some(_) => {}
            },
            u = updates.recv() => match u {
                None => break,
                Some(u) => on_update(u, &session, &messenger, &mut st, &mut names).await,
            },
        }
    }
    let _ = messenger.close().await;
    Ok(())
}

/// Signs in with a ready token; answers the session and the username. The
/// message on failure never shows the token.
async fn with_token_sign_in(
    client: &Client,
    token: &str,
    device: &str,
) -> Result<(Session, String), String> {
    let session = client
        .session_from_token(token, device)
        .await
        .map_err(|e| match e.code() {
            Some(ErrorCode::Unauthorized) => "the token was refused: log in instead".to_owned(),
            _ => format!("signing in with the token: {e}"),
        })?;
    let me = session
        .me()
        .await
        .map_err(|e| format!("signing in with the token: {e}"))?;
    Ok((session, me.username.unwrap_or(me.display_name)))
}

async fn sign_in(start: &Start, form: &LoginForm, register: bool) -> Result<Session, String> {
    let (user, password) = (form.username.trim(), form.password.as_str());
    if user.is_empty() || password.is_empty() {
        return Err("enter a username and a password".into());
    }
    if register {
        match start.client.register(user, password, None).await {
            Ok(_) => {}
            Err(e) if e.code() == Some(ErrorCode::Conflict) => {
                return Err(format!("{user} is taken: press Enter to log in"));
            }
            Err(e) => return Err(format!("registering: {e}")),
        }
    }
    start
        .client
        .login(user, password, &start.device, PLATFORM)
        .await
        .map_err(|e| match e.code() {
            Some(ErrorCode::Unauthorized) => "wrong username or password".to_owned(),
            _ => format!("logging in: {e}"),
        })
}

/// Usernames by user ID, asked once each.
#[derive(Default)]
struct Names {
    known: HashMap<String, String>,
}

impl Names {
    async fn name(&mut self, s: &Session, user_id: &str) -> String {
        if let Some(n) = self.known.get(user_id) {
            return n.clone();
        }
        let n = s
            .user(user_id)
            .await
            .ok()
            .and_then(|u| u.username)
            .unwrap_or_else(|| user_id.to_owned());
        self.known.insert(user_id.to_owned(), n.clone());
        n
    }

    /// The list entry of a conversation: a group's title, or the other
    /// member's name.
    async fn item(&mut self, s: &Session, c: &Conversation) -> ConvItem {
        let mut others = Vec::new();
        for m in c.members.iter().flatten() {
            let n = self.name(s, &m.user_id).await;
            if m.user_id != s.user_id() {
                others.push(n);
            }
        }
        let title = match (&c.title, c.ty) {
            (Some(t), ConvType::Group) if !t.is_empty() => t.clone(),
            _ if !others.is_empty() => others.join(", "),
            _ => c.conv_id.clone(),
        };
        let peer = match c.ty {
            ConvType::Direct => c
                .members
                .iter()
                .flatten()
                .map(|m| m.user_id.clone())
                .find(|u| u != s.user_id()),
            ConvType::Group => None,
        };
        ConvItem {
            conv_id: c.conv_id.clone(),
            title,
            unread: c.unread,
            last_seq: c.last_seq,
            peer,
        }
    }

    fn share(&self, st: &mut ChatState) {
        for (k, v) in &self.known {
            st.names.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
}

async fn open(
    conv_id: &str,
    session: &Session,
    messenger: &Messenger,
    st: &mut ChatState,
    names: &mut Names,
) -> anyhow::Result<()> {
    st.open_conv(conv_id);
    let page = session
        .history(conv_id, HistoryPage::Latest, 100)
        .await
        .context("loading history")?;
    for e in &page.events {
        if let Some(s) = &e.sender {
            names.name(session, s).await;
        }
    }
    names.share(st);
    st.set_history(conv_id, &page.events);
    if let Some(seq) = st.last_unconfirmed(conv_id)
        && let Ok(r) = session.receipts(conv_id, seq).await
        && !r.read_by.is_empty()
    {
        st.mark_read(conv_id, seq);
    }
    if let Some(last) = page.events.last() {
        messenger.read(conv_id, last.seq).await?;
    }
    Ok(())
}

async fn show_conv(
    c: &Conversation,
    session: &Session,
    messenger: &Messenger,
    st: &mut ChatState,
    names: &mut Names,
) -> anyhow::Result<()> {
    let item = names.item(session, c).await;
    st.upsert_conv(item);
    st.focus = super::tui::Focus::Input;
    open(&c.conv_id, session, messenger, st, names).await
}

/// Watches the presence of every direct conversation's other user (the
/// server answers with their current state, then pushes changes).
async fn watch_peers(messenger: &Messenger, st: &ChatState) {
    let mut peers: Vec<String> = st.convs.iter().filter_map(|c| c.peer.clone()).collect();
    peers.sort();
    peers.dedup();
    peers.truncate(1000);
    if !peers.is_empty() {
        let _ = messenger.subscribe_presence(peers).await;
    }
}

async fn perform(
    action: Action,
    session: &Session,
    messenger: &Messenger,
    st: &mut ChatState,
    names: &mut Names,
) -> anyhow::Result<()> {
    match action {
        Action::Quit | Action::Typing(_) => {}
        Action::Edit { conv_id, seq, text } => {
            messenger
                .edit(&conv_id, seq, tokenim_client::MessageContent::text(text))
                .await?;
            st.status = format!("editing #{seq}");
        }
        Action::Recall { conv_id, seq } => {
            messenger.recall(&conv_id, seq).await?;
            st.status = format!("recalling #{seq}");
        }
        Action::Open(conv_id) => open(&conv_id, session, messenger, st, names).await?,
        Action::Send { conv_id, text } => {
            let id = messenger.send_text(&conv_id, &text).await?;
            st.add_pending(&conv_id, &id, &text, now_ms());
        }
        Action::Direct(user) => {
            let peer = session
                .find_user(&user)
                .await
                .with_context(|| format!("no chat with {user}"))?;
            let c = session.create_direct(&peer.user_id).await?;
            show_conv(&c, session, messenger, st, names).await?;
            watch_peers(messenger, st).await;
        }
        Action::Group { title, members } => {
            let mut ids = Vec::new();
            for m in &members {
                let u = session
                    .find_user(m)
                    .await
                    .with_context(|| format!("cannot add {m} to the group"))?;
                ids.push(u.user_id);
            }
            let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
            let c = session.create_group(&title, &refs).await?;
            show_conv(&c, session, messenger, st, names).await?;
            st.status = format!("created group {title}");
        }
    }
    Ok(())
}

async fn on_update(
    u: Update,
    session: &Session,
    messenger: &Messenger,
    st: &mut ChatState,
    names: &mut Names,
) {
    match u {
        Update::Connected { .. } => st.online = true,
        Update::Disconnected { reason, .. } => {
            st.online = false;
            st.status = format!("reconnecting ({reason})");
        }
        Update::Synced if st.status.starts_with("reconnecting") => st.status.clear(),
        Update::Event(e) => {
            if let Some(s) = &e.sender
                && !names.known.contains_key(s)
            {
                names.name(session, s).await;
                names.share(st);
            }
            let fx = st.on_event(&e);
            if fx.unknown_conv
                && let Ok(c) = session.conversation(&e.conv_id).await
            {
                let item = names.item(session, &c).await;
                names.share(st);
                st.upsert_conv(item);
            }
            if let Some(seq) = fx.read {
                let _ = messenger.read(&e.conv_id, seq).await;
            }
        }
        Update::Status(s) => st.on_status(&s),
        Update::Typing { conv_id, user_id } => st.on_typing(&conv_id, &user_id, now_ms()),
        Update::Presence {
            user_id, online, ..
        } => {
            st.presence.insert(user_id, online);
        }
        Update::Receipt {
            conv_id,
            user_id,
            read_seq,
        } if user_id == st.me => st.on_own_read(&conv_id, read_seq),
        Update::ConversationAdded(c) => {
            let item = names.item(session, &c).await;
            names.share(st);
            st.upsert_conv(item);
            watch_peers(messenger, st).await;
        }
        Update::ConversationRemoved { conv_id } => {
            st.convs.retain(|c| c.conv_id != conv_id);
            if st.open.as_deref() == Some(&conv_id) {
                st.open = None;
            }
        }
        Update::Error { code, message } => st.status = format!("{code}: {message}"),
        Update::Stopped(r) => {
            st.online = false;
            st.status = match r {
                StopReason::Kicked(k) => format!("signed out by the server ({k:?}); /quit"),
                StopReason::Unauthorized => "the session expired: log in again; /quit".into(),
                StopReason::Store(e) => format!("state file: {e}; /quit"),
                StopReason::Closed => "closed".into(),
            };
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    //! The whole chat against a real server: synthetic key presses in, the
    //! rendered TestBackend screen out.

    use std::time::Duration;

    use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
    use ratatui::backend::TestBackend;
    use serde_json::json;
    use tokenim_testkit::{TestServer, User};
    use tokio::sync::mpsc;

    use super::*;
    use crate::tui::buffer_text;

    struct Screen {
        keys: mpsc::UnboundedSender<TermEvent>,
        frames: mpsc::UnboundedReceiver<String>,
        last: String,
    }

    impl Screen {
        fn key(&self, code: KeyCode) {
            self.keys
                .send(TermEvent::Key(KeyEvent::new(code, KeyModifiers::NONE)))
                .unwrap();
        }

        fn type_line(&self, s: &str) {
            for c in s.chars() {
                self.key(KeyCode::Char(c));
            }
            self.key(KeyCode::Enter);
        }

        /// Waits for a frame showing `what`.
        async fn wait_for(&mut self, what: &str) {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            while !self.last.contains(what) {
                match tokio::time::timeout_at(deadline, self.frames.recv()).await {
                    Ok(Some(f)) => self.last = f,
                    Ok(None) => panic!("the chat ended; last screen:\n{}", self.last),
                    Err(_) => panic!("no frame shows {what:?}; last screen:\n{}", self.last),
                }
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn chat_registers_opens_sends_and_shows_replies_and_receipts() {
        let server = TestServer::start().await;
        let bob = User::new(&server, "bob", "phone").await;
        let dir = tempfile::tempdir().unwrap();
        let (keys, key_rx) = mpsc::unbounded_channel();
        let (frame_tx, frames) = mpsc::unbounded_channel();
        let start = Start {
            client: Client::new(&server.http).unwrap(),
            device: "tui-test".into(),
            user: None,
            password: None,
            token: None,
            register: false,
            state_dir: Some(dir.path().to_path_buf()),
        };
        let ui = tokio::spawn(async move {
            let mut terminal = Terminal::new(TestBackend::new(100, 24)).unwrap();
            let input = futures_util::stream::unfold(key_rx, |mut rx| async move {
                rx.recv().await.map(|e| (e, rx))
            });
            run_ui(&mut terminal, Box::pin(input), start, |b| {
                let _ = frame_tx.send(buffer_text(b));
            })
            .await
        });
        let mut s = Screen {
            keys,
            frames,
            last: String::new(),
        };
        s.wait_for("tokenim: log in").await;
        s.type_line("alice");
        for c in "password1".chars() {
            s.key(KeyCode::Char(c));
        }
        s.key(KeyCode::F(2));
        s.wait_for("alice · online").await;

        // A user who does not exist: the status line says so.
        s.type_line("/dm nosuchuser");
        s.wait_for(r#"no user "nosuchuser""#).await;

        s.type_line("/dm bob");
        s.wait_for("● bob").await;
        s.type_line("hello bob");
        s.wait_for("alice: hello bob ✓").await;

        // Bob answers and reads, from his own socket.
        let convs = bob.http.get("/v1/conversations").await;
        let conv = convs.body["conversations"][0]["conv_id"]
            .as_str()
            .unwrap()
            .to_owned();
        let mut ws = bob.ws(&server).await;
        ws.send(json!({"type": "read", "conv_id": conv, "seq": 1}))
            .await;
        s.wait_for("hello bob ✓✓ read").await;
        let r = ws.send_msg(&conv, "r1", "hi alice").await;
        assert_eq!(r["type"], "send_ack", "{r}");
        s.wait_for("bob: hi alice").await;

        // Bob's socket is up: his presence shows; his typing shows.
        s.wait_for("bob · online").await;
        ws.send(json!({"type": "typing", "conv_id": conv})).await;
        s.wait_for("bob is typing…").await;

        // Alice edits, then recalls, her last message.
        s.type_line("/edit hello again bob");
        s.wait_for("hello again bob (edited)").await;
        s.type_line("/recall");
        s.wait_for("alice: (recalled)").await;

        // A group, then news in the direct conversation shows as unread.
        s.type_line("/group team bob");
        s.wait_for("● team").await;
        let r = ws.send_msg(&conv, "r2", "are you there").await;
        assert_eq!(r["type"], "send_ack", "{r}");
        s.wait_for("bob (1)").await;

        s.keys
            .send(TermEvent::Key(KeyEvent::new(
                KeyCode::Char('c'),
                KeyModifiers::CONTROL,
            )))
            .unwrap();
        tokio::time::timeout(Duration::from_secs(20), ui)
            .await
            .expect("the chat quits")
            .unwrap()
            .unwrap();
        // The SDK state was kept in the tokenim home folder.
        let files: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(files.iter().any(|f| f.starts_with("chat-")), "{files:?}");
    }
}
