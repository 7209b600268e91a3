//! The terminal chat's screens as plain state: what keys do to it, what
//! SDK updates do to it, and how it is drawn. No IO here, so it renders
//! into ratatui's `TestBackend` in tests exactly as on a terminal.
//!
//! long: the chat's screens as one state type with its key handling and
//! drawing, which refer to each other throughout.

use std::collections::HashMap;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Frame;
use ratatui::layout::{Constraint, Direction, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, List, ListItem, ListState, Paragraph};
use tokenim_client::proto::system::System;
use tokenim_client::{Event, EventKind, MessageStatus, StatusChange, event_text};

use super::clock;

/// The help shown at the bottom of the chat.
pub const HELP: &str = "Enter send · Tab pane · ↑↓ choose · /dm USER · /group TITLE USER... · \
     /edit TEXT · /recall · /quit";

/// How long a `typing` notice shows.
pub const TYPING_SHOWN_MS: i64 = 5_000;

fn ctrl(k: &KeyEvent, c: char) -> bool {
    k.modifiers.contains(KeyModifiers::CONTROL) && k.code == KeyCode::Char(c)
}

// ---------------------------------------------------------------- login

/// What the login form asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginAction {
    Login,
    Register,
    Quit,
}

#[derive(Debug, Default)]
pub struct LoginForm {
    pub url: String,
    pub username: String,
    pub password: String,
    /// 0: username, 1: password.
    pub field: usize,
    pub message: String,
}

impl LoginForm {
    pub fn on_key(&mut self, k: KeyEvent) -> Option<LoginAction> {
        if ctrl(&k, 'c') || ctrl(&k, 'q') || k.code == KeyCode::Esc {
            return Some(LoginAction::Quit);
        }
        if ctrl(&k, 'r') || k.code == KeyCode::F(2) {
            return Some(LoginAction::Register);
        }
        match k.code {
            KeyCode::Tab | KeyCode::Down | KeyCode::Up | KeyCode::BackTab => {
                self.field = 1 - self.field;
            }
            KeyCode::Enter if self.field == 0 => self.field = 1,
            KeyCode::Enter => return Some(LoginAction::Login),
            KeyCode::Backspace => {
                self.current().pop();
            }
            KeyCode::Char(c) if !k.modifiers.contains(KeyModifiers::CONTROL) => {
                self.current().push(c);
            }
            _ => {}
        }
        None
    }

    fn current(&mut self) -> &mut String {
        if self.field == 0 {
            &mut self.username
        } else {
            &mut self.password
        }
    }

    pub fn draw(&self, f: &mut Frame) {
        let area = centered(f.area(), 60, 11);
        let stars = "*".repeat(self.password.chars().count());
        let mark = |i| if self.field == i { "> " } else { "  " };
        let lines = vec![
            Line::from(format!("server: {}", self.url)),
            Line::from(""),
            Line::from(format!("{}username: {}", mark(0), self.username)),
            Line::from(format!("{}password: {stars}", mark(1))),
            Line::from(""),
            Line::from("Enter log in · F2 (or Ctrl-R) register · Esc quit"),
            Line::from(""),
            Line::from(Span::styled(
                self.message.clone(),
                Style::default().fg(Color::Yellow),
            )),
        ];
        let p = Paragraph::new(lines).block(
            Block::default()
                .borders(Borders::ALL)
                .title(" tokenim: log in "),
        );
        f.render_widget(p, area);
    }
}

fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let w = w.min(area.width);
    let h = h.min(area.height);
    Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    }
}

// ----------------------------------------------------------------- chat

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Focus {
    List,
    Input,
}

/// What the chat asks the event loop to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Open(String),
    Send {
        conv_id: String,
        text: String,
    },
    Direct(String),
    Group {
        title: String,
        members: Vec<String>,
    },
    /// Replaces the text of the user's message at `seq`.
    Edit {
        conv_id: String,
        seq: u64,
        text: String,
    },
    /// Recalls the user's message at `seq`.
    Recall {
        conv_id: String,
        seq: u64,
    },
    /// The user typed in the open conversation (the loop rate-limits the
    /// `typing` notices it sends).
    Typing(String),
    Quit,
}

/// One line of a conversation.
#[derive(Debug, Clone)]
pub struct Msg {
    pub seq: Option<u64>,
    pub client_msg_id: Option<String>,
    pub sender: String,
    pub text: String,
    pub ts: i64,
    pub status: Option<MessageStatus>,
    pub system: bool,
    pub edited: bool,
}

#[derive(Debug, Clone)]
pub struct ConvItem {
    pub conv_id: String,
    pub title: String,
    pub unread: u64,
    pub last_seq: u64,
    /// The other user of a direct conversation (whose presence shows).
    pub peer: Option<String>,
}

/// What the event loop must do after an event was applied.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Effect {
    /// The conversation is not listed yet: fetch it.
    pub unknown_conv: bool,
    /// The event is in the open conversation: move the read marker.
    pub read: Option<u64>,
}

#[derive(Debug)]
pub struct ChatState {
    pub me: String,
    pub my_name: String,
    pub names: HashMap<String, String>,
    pub convs: Vec<ConvItem>,
    pub selected: usize,
    pub open: Option<String>,
    /// Lines of the conversations whose history was loaded.
    pub msgs: HashMap<String, Vec<Msg>>,
    pub input: String,
    pub focus: Focus,
    pub status: String,
    pub online: bool,
    /// Who is typing where, until when (ms).
    pub typing: HashMap<String, (String, i64)>,
    /// Whether watched users are online.
    pub presence: HashMap<String, bool>,
    /// The time the screen is drawn at (ms), set by the event loop.
    pub now_ms: i64,
}

impl ChatState {
    pub fn new(me: &str, my_name: &str) -> ChatState {
        let mut names = HashMap::new();
        names.insert(me.to_owned(), my_name.to_owned());
        ChatState {
            me: me.to_owned(),
            my_name: my_name.to_owned(),
            names,
            convs: Vec::new(),
            selected: 0,
            open: None,
            msgs: HashMap::new(),
            input: String::new(),
            focus: Focus::Input,
            status: String::new(),
            online: false,
            typing: HashMap::new(),
            presence: HashMap::new(),
            now_ms: 0,
        }
    }

    fn name<'a>(&'a self, user_id: &'a str) -> &'a str {
        self.names.get(user_id).map_or(user_id, String::as_str)
    }

    /// Adds or refreshes a conversation in the list (kept in place).
    pub fn upsert_conv(&mut self, item: ConvItem) {
        match self.convs.iter_mut().find(|c| c.conv_id == item.conv_id) {
            Some(c) => *c = item,
            None => self.convs.push(item),
        }
    }

    fn bump(&mut self, conv_id: &str) {
        let Some(i) = self.convs.iter().position(|c| c.conv_id == conv_id) else {
            return;
        };
        let selected = self.convs.get(self.selected).map(|c| c.conv_id.clone());
        let c = self.convs.remove(i);
        self.convs.insert(0, c);
        if let Some(s) = selected {
            self.selected = self.convs.iter().position(|c| c.conv_id == s).unwrap_or(0);
        }
    }

    pub fn open_conv(&mut self, conv_id: &str) {
        self.open = Some(conv_id.to_owned());
        if let Some(i) = self.convs.iter().position(|c| c.conv_id == conv_id) {
            self.selected = i;
            self.convs[i].unread = 0;
        }
    }

    pub fn on_key(&mut self, k: KeyEvent) -> Option<Action> {
        if ctrl(&k, 'c') || ctrl(&k, 'q') {
            return Some(Action::Quit);
        }
        match (self.focus, k.code) {
            (_, KeyCode::Tab) | (_, KeyCode::BackTab) => {
                self.focus = match self.focus {
                    Focus::List => Focus::Input,
                    Focus::Input => Focus::List,
                };
            }
            (_, KeyCode::Esc) => self.focus = Focus::List,
            (_, KeyCode::Up) | (Focus::List, KeyCode::Char('k')) => {
                self.selected = self.selected.saturating_sub(1);
                if self.focus == Focus::Input {
                    return self
                        .convs
                        .get(self.selected)
                        .map(|c| Action::Open(c.conv_id.clone()));
                }
            }
            (_, KeyCode::Down) | (Focus::List, KeyCode::Char('j')) => {
                if self.selected + 1 < self.convs.len() {
                    self.selected += 1;
                }
                if self.focus == Focus::Input {
                    return self
                        .convs
                        .get(self.selected)
                        .map(|c| Action::Open(c.conv_id.clone()));
                }
            }
            (Focus::List, KeyCode::Enter) => {
                self.focus = Focus::Input;
                return self
                    .convs
                    .get(self.selected)
                    .map(|c| Action::Open(c.conv_id.clone()));
            }
            (Focus::List, KeyCode::Char(c)) if !k.modifiers.contains(KeyModifiers::CONTROL) => {
                self.focus = Focus::Input;
                self.input.push(c);
            }
            (Focus::Input, KeyCode::Char(c)) if !k.modifiers.contains(KeyModifiers::CONTROL) => {
                self.input.push(c);
                if !self.input.starts_with('/') {
                    return self.open.clone().map(Action::Typing);
                }
            }
            (Focus::Input, KeyCode::Backspace) => {
                self.input.pop();
            }
            (Focus::Input, KeyCode::Enter) => return self.submit(),
            _ => {}
        }
        None
    }

    /// The open conversation and the seq of the user's last message in it
    /// that is committed and not recalled.
    fn last_own(&self) -> Option<(String, u64)> {
        let conv = self.open.clone()?;
        let seq = self
            .msgs
            .get(&conv)?
            .iter()
            .rev()
            .find(|m| m.sender == self.me && !m.system && m.text != "(recalled)")
            .and_then(|m| m.seq)?;
        Some((conv, seq))
    }

    /// Someone is typing in `conv_id`.
    pub fn on_typing(&mut self, conv_id: &str, user_id: &str, now_ms: i64) {
        if user_id != self.me {
            self.typing.insert(
                conv_id.to_owned(),
                (user_id.to_owned(), now_ms + TYPING_SHOWN_MS),
            );
        }
    }

    fn submit(&mut self) -> Option<Action> {
        let line = std::mem::take(&mut self.input);
        let line = line.trim();
        if line.is_empty() {
            return None;
        }
        if let Some(cmd) = line.strip_prefix('/') {
            let mut words = cmd.split_whitespace();
            return match words.next() {
                Some("quit") | Some("q") => Some(Action::Quit),
                Some("dm") => match words.next() {
                    Some(u) => Some(Action::Direct(u.to_owned())),
                    None => {
                        self.status = "usage: /dm USER".into();
                        None
                    }
                },
                Some("group") => {
                    let title = words.next();
                    let members: Vec<String> = words.map(str::to_owned).collect();
                    match title {
                        Some(t) => Some(Action::Group {
                            title: t.to_owned(),
                            members,
                        }),
                        None => {
                            self.status = "usage: /group TITLE USER...".into();
                            None
                        }
                    }
                }
                Some("edit") => {
                    let text = cmd["edit".len()..].trim();
                    match self.last_own() {
                        _ if text.is_empty() => {
                            self.status = "usage: /edit NEW TEXT".into();
                            None
                        }
                        Some((conv_id, seq)) => Some(Action::Edit {
                            conv_id,
                            seq,
                            text: text.to_owned(),
                        }),
                        None => {
                            self.status = "no message of yours here to edit".into();
                            None
                        }
                    }
                }
                Some("recall") => match self.last_own() {
                    Some((conv_id, seq)) => Some(Action::Recall { conv_id, seq }),
                    None => {
                        self.status = "no message of yours here to recall".into();
                        None
                    }
                },
                _ => {
                    self.status = HELP.into();
                    None
                }
            };
        }
        match &self.open {
            Some(c) => Some(Action::Send {
                conv_id: c.clone(),
                text: line.to_owned(),
            }),
            None => {
                self.status = "open a conversation first (↑↓ and Enter, or /dm USER)".into();
                self.input = line.to_owned();
                None
            }
        }
    }

    /// Puts the loaded history of a conversation in place, keeping lines
    /// that arrived meanwhile.
    pub fn set_history(&mut self, conv_id: &str, events: &[Event]) {
        let old = self.msgs.remove(conv_id).unwrap_or_default();
        self.msgs.insert(conv_id.to_owned(), Vec::new());
        for e in events {
            self.apply_event(e);
        }
        for m in old {
            self.insert(conv_id, m);
        }
        if let Some(c) = self.convs.iter_mut().find(|c| c.conv_id == conv_id)
            && let Some(last) = events.last()
        {
            c.last_seq = c.last_seq.max(last.seq);
        }
        // Sending moves the sender's read marker: whoever wrote after an own
        // message has read it.
        if let Some(seq) = events
            .iter()
            .filter(|e| by_other(e, &self.me) && e.kind == EventKind::Message)
            .map(|e| e.seq)
            .max()
        {
            self.mark_read(conv_id, seq);
        }
    }

    /// The last own message after every other member's, which a receipt
    /// lookup may show as read.
    pub fn last_unconfirmed(&self, conv_id: &str) -> Option<u64> {
        self.msgs
            .get(conv_id)?
            .iter()
            .rev()
            .find(|m| m.sender == self.me && !m.system && m.status < Some(MessageStatus::Read))
            .and_then(|m| m.seq)
    }

    /// Own messages up to `seq` are read.
    pub fn mark_read(&mut self, conv_id: &str, seq: u64) {
        for m in self.msgs.get_mut(conv_id).into_iter().flatten() {
            if m.sender == self.me
                && m.seq.is_some_and(|s| s <= seq)
                && m.status.is_some_and(|s| s < MessageStatus::Read)
            {
                m.status = Some(MessageStatus::Read);
            }
        }
    }

    /// Shows a message just queued, before the server has it.
    pub fn add_pending(&mut self, conv_id: &str, client_msg_id: &str, text: &str, now: i64) {
        let m = Msg {
            seq: None,
            client_msg_id: Some(client_msg_id.to_owned()),
            sender: self.me.clone(),
            text: text.to_owned(),
            ts: now,
            status: Some(MessageStatus::Sending),
            system: false,
            edited: false,
        };
        self.insert(conv_id, m);
    }

    fn insert(&mut self, conv_id: &str, m: Msg) {
        let Some(list) = self.msgs.get_mut(conv_id) else {
            return;
        };
        if let Some(id) = &m.client_msg_id
            && let Some(have) = list
                .iter_mut()
                .find(|x| x.client_msg_id.as_ref() == Some(id))
        {
            if have.seq.is_none() {
                have.seq = m.seq;
                have.ts = m.ts;
            }
            have.status = have.status.max(m.status);
        } else if m.seq.is_some() && list.iter().any(|x| x.seq == m.seq) {
            return;
        } else {
            let at = match m.seq {
                Some(s) => list
                    .iter()
                    .position(|x| x.seq.is_none_or(|xs| xs > s))
                    .unwrap_or(list.len()),
                None => list.len(),
            };
            list.insert(at, m);
        }
        // A line that got its seq moves before the ones still pending.
        list.sort_by_key(|x| x.seq.unwrap_or(u64::MAX));
    }

    fn event_line(&self, e: &Event) -> Option<Msg> {
        let (text, system) = match System::of(e) {
            None if e.kind != EventKind::Message => return None,
            // A system message (no sender) shows as a notice.
            None => match event_text(e) {
                Some(t) => (t, e.system),
                None if e.recalled => ("(recalled)".to_owned(), e.system),
                None => {
                    let content: serde_json::Value = e
                        .content
                        .as_ref()
                        .and_then(|c| serde_json::from_str(c.get()).ok())
                        .unwrap_or_default();
                    let ty = content["type"].as_str().unwrap_or("message");
                    (format!("[{ty}]"), e.system)
                }
            },
            Some(System::Recall(_) | System::Edit(_)) => return None,
            Some(System::MemberJoined(b)) => {
                let names: Vec<&str> = b.user_ids.iter().map(|u| self.name(u)).collect();
                (format!("{} joined", names.join(", ")), true)
            }
            Some(System::MemberLeft(b)) => (format!("{} left", self.name(&b.user_id)), true),
            Some(System::MemberRemoved(b)) => {
                (format!("{} was removed", self.name(&b.user_id)), true)
            }
            Some(System::RoleChanged(b)) => (
                format!("{} is now {}", self.name(&b.user_id), b.role.as_str()),
                true,
            ),
            Some(System::ConvUpdated(b)) => match b.title {
                Some(t) => (format!("title changed to {t}"), true),
                None => ("settings changed".to_owned(), true),
            },
        };
        Some(Msg {
            seq: Some(e.seq),
            client_msg_id: e.client_msg_id.clone(),
            sender: e.sender.clone().unwrap_or_default(),
            text,
            ts: e.ts,
            status: (e.sent_by(&self.me) && e.kind == EventKind::Message)
                .then_some(MessageStatus::Sent),
            system,
            edited: e.edited,
        })
    }

    fn apply_event(&mut self, e: &Event) {
        let (target, edit) = match System::of(e) {
            Some(System::Recall(r)) => (r.target_seq, None),
            Some(System::Edit(ed)) => (ed.target_seq, Some(ed.content)),
            _ => (0, None),
        };
        if matches!(e.kind, EventKind::Recall | EventKind::Edit) {
            if let Some(list) = self.msgs.get_mut(&e.conv_id)
                && let Some(m) = list.iter_mut().find(|m| m.seq == Some(target))
            {
                match edit {
                    None => m.text = "(recalled)".into(),
                    Some(content) => {
                        m.edited = true;
                        let v: serde_json::Value =
                            serde_json::from_str(content.get()).unwrap_or_default();
                        if let Some(t) = v["text"].as_str() {
                            m.text = t.to_owned();
                        }
                    }
                }
            }
            return;
        }
        if let Some(m) = self.event_line(e) {
            self.insert(&e.conv_id.clone(), m);
        }
    }

    /// Applies a live event from the SDK.
    pub fn on_event(&mut self, e: &Event) -> Effect {
        let mut fx = Effect::default();
        self.apply_event(e);
        // Who sent has stopped typing.
        if let Some(s) = &e.sender
            && self.typing.get(&e.conv_id).is_some_and(|(who, _)| who == s)
        {
            self.typing.remove(&e.conv_id);
        }
        let is_open = self.open.as_deref() == Some(&e.conv_id);
        match self.convs.iter_mut().find(|c| c.conv_id == e.conv_id) {
            None => fx.unknown_conv = true,
            Some(c) => {
                // Events up to the listed last_seq are already in the
                // listed unread count (the first sync replays them).
                let news = e.seq > c.last_seq;
                c.last_seq = c.last_seq.max(e.seq);
                if news && !is_open && !e.sent_by(&self.me) && e.kind == EventKind::Message {
                    c.unread += 1;
                }
            }
        }
        if is_open && !e.sent_by(&self.me) {
            fx.read = Some(e.seq);
        }
        self.bump(&e.conv_id);
        fx
    }

    pub fn on_status(&mut self, s: &StatusChange) {
        let Some(list) = self.msgs.get_mut(&s.conv_id) else {
            return;
        };
        if let Some(m) = list
            .iter_mut()
            .find(|m| m.client_msg_id.as_deref() == Some(&s.client_msg_id))
        {
            if s.status == MessageStatus::Failed || m.status < Some(s.status) {
                m.status = Some(s.status);
            }
            if m.seq.is_none() {
                m.seq = s.seq;
            }
        }
        if let Some((code, msg)) = &s.error {
            self.status = format!("not sent: {code}: {msg}");
        }
    }

    /// The user's own read marker moved on another device.
    pub fn on_own_read(&mut self, conv_id: &str, read_seq: u64) {
        if let Some(c) = self.convs.iter_mut().find(|c| c.conv_id == conv_id)
            && read_seq >= c.last_seq
        {
            c.unread = 0;
        }
    }

    pub fn draw(&self, f: &mut Frame) {
        let rows = Layout::default()
            .direction(Direction::Vertical)
            .constraints([
                Constraint::Min(3),
                Constraint::Length(3),
                Constraint::Length(1),
            ])
            .split(f.area());
        let cols = Layout::default()
            .direction(Direction::Horizontal)
            .constraints([Constraint::Length(28), Constraint::Min(10)])
            .split(rows[0]);
        self.draw_list(f, cols[0]);
        self.draw_messages(f, cols[1]);

        let focused = Style::default().fg(Color::Cyan);
        let input = Paragraph::new(format!("> {}", self.input)).block(
            Block::default()
                .borders(Borders::ALL)
                .title(" message ")
                .border_style(if self.focus == Focus::Input {
                    focused
                } else {
                    Style::default()
                }),
        );
        f.render_widget(input, rows[1]);
        if self.focus == Focus::Input {
            let x = rows[1].x + 3 + self.input.chars().count() as u16;
            f.set_cursor_position((x.min(rows[1].right().saturating_sub(2)), rows[1].y + 1));
        }
        let state = if self.online { "online" } else { "offline" };
        let status = if self.status.is_empty() {
            HELP
        } else {
            &self.status
        };
        let line = Line::from(vec![
            Span::styled(
                format!(" {} · {state} ", self.my_name),
                Style::default().add_modifier(Modifier::REVERSED),
            ),
            Span::raw(format!(" {status}")),
        ]);
        f.render_widget(Paragraph::new(line), rows[2]);
    }

    fn draw_list(&self, f: &mut Frame, area: Rect) {
        let items: Vec<ListItem> = self
            .convs
            .iter()
            .map(|c| {
                let open = self.open.as_deref() == Some(&c.conv_id);
                let unread = if c.unread > 0 {
                    format!(" ({})", c.unread)
                } else {
                    String::new()
                };
                let style = if c.unread > 0 {
                    Style::default().add_modifier(Modifier::BOLD)
                } else {
                    Style::default()
                };
                let mark = if open { "● " } else { "  " };
                ListItem::new(Line::from(Span::styled(
                    format!("{mark}{}{unread}", c.title),
                    style,
                )))
            })
            .collect();
        let border = if self.focus == Focus::List {
            Style::default().fg(Color::Cyan)
        } else {
            Style::default()
        };
        let list = List::new(items)
            .block(
                Block::default()
                    .borders(Borders::ALL)
                    .title(" conversations ")
                    .border_style(border),
            )
            .highlight_style(Style::default().add_modifier(Modifier::REVERSED));
        let mut state = ListState::default();
        if !self.convs.is_empty() {
            state.select(Some(self.selected.min(self.convs.len() - 1)));
        }
        f.render_stateful_widget(list, area, &mut state);
    }

    fn draw_messages(&self, f: &mut Frame, area: Rect) {
        let title = self
            .open
            .as_ref()
            .and_then(|o| self.convs.iter().find(|c| &c.conv_id == o))
            .map_or(" no conversation open ".to_owned(), |c| {
                let seen = c.peer.as_ref().and_then(|p| self.presence.get(p));
                match seen {
                    Some(true) => format!(" {} · online ", c.title),
                    Some(false) => format!(" {} · offline ", c.title),
                    None => format!(" {} ", c.title),
                }
            });
        let block = Block::default().borders(Borders::ALL).title(title);
        let inner = block.inner(area);
        f.render_widget(block, area);
        let width = inner.width.max(1) as usize;
        let mut lines: Vec<Line> = Vec::new();
        let empty = Vec::new();
        let msgs = self
            .open
            .as_ref()
            .and_then(|o| self.msgs.get(o))
            .unwrap_or(&empty);
        for m in msgs {
            let time = clock(m.ts);
            if m.system {
                for chunk in wrap(&format!("{time} * {}", m.text), width) {
                    lines.push(Line::from(Span::styled(
                        chunk,
                        Style::default().fg(Color::DarkGray),
                    )));
                }
                continue;
            }
            let mark = match m.status {
                None => "",
                Some(MessageStatus::Sending) => " …",
                Some(MessageStatus::Sent) => " ✓",
                Some(MessageStatus::Delivered) => " ✓✓",
                Some(MessageStatus::Read) => " ✓✓ read",
                Some(MessageStatus::Failed) => " ✗ failed",
            };
            let edited = if m.edited { " (edited)" } else { "" };
            let text = format!("{time} {}: {}{edited}{mark}", self.name(&m.sender), m.text);
            let style = if m.sender == self.me {
                Style::default().fg(Color::Green)
            } else {
                Style::default()
            };
            for chunk in wrap(&text, width) {
                lines.push(Line::from(Span::styled(chunk, style)));
            }
        }
        let typing = self
            .open
            .as_ref()
            .and_then(|o| self.typing.get(o))
            .filter(|(_, until)| *until > self.now_ms);
        if let Some((who, _)) = typing {
            lines.push(Line::from(Span::styled(
                format!("{} is typing…", self.name(who)),
                Style::default().fg(Color::DarkGray),
            )));
        }
        let skip = lines.len().saturating_sub(inner.height as usize);
        let shown: Vec<Line> = lines.into_iter().skip(skip).collect();
        f.render_widget(Paragraph::new(shown), inner);
    }
}

/// Whether another member made `e` (a system event is no member's).
fn by_other(e: &Event, me: &str) -> bool {
    e.sender.as_deref().is_some_and(|s| s != me)
}

/// Splits `s` into pieces of at most `width` characters.
fn wrap(s: &str, width: usize) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    if chars.is_empty() {
        return vec![String::new()];
    }
    chars
        .chunks(width.max(1))
        .map(|c| c.iter().collect())
        .collect()
}

/// The text of a rendered buffer, one line per row (trailing spaces cut).
#[cfg(test)]
pub fn buffer_text(buf: &ratatui::buffer::Buffer) -> String {
    let area = buf.area;
    let mut out = String::new();
    for y in area.top()..area.bottom() {
        let mut line = String::new();
        for x in area.left()..area.right() {
            line.push_str(buf[(x, y)].symbol());
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;
    use serde_json::value::RawValue;

    fn key(c: KeyCode) -> KeyEvent {
        KeyEvent::new(c, KeyModifiers::NONE)
    }

    fn text_event(conv: &str, seq: u64, sender: &str, text: &str, cmid: Option<&str>) -> Event {
        Event {
            conv_id: conv.into(),
            seq,
            msg_id: format!("m{seq}"),
            ts: 1_732_380_000_000 + seq as i64 * 60_000,
            sender: Some(sender.into()),
            sender_device: Some("d".into()),
            system: false,
            kind: EventKind::Message,
            client_msg_id: cmid.map(str::to_owned),
            content: Some(
                RawValue::from_string(
                    serde_json::json!({"type": "text", "text": text}).to_string(),
                )
                .unwrap(),
            ),
            recalled: false,
            edited: false,
        }
    }

    fn render(st: &ChatState) -> String {
        let mut t = Terminal::new(TestBackend::new(90, 16)).unwrap();
        t.draw(|f| st.draw(f)).unwrap();
        buffer_text(t.backend().buffer())
    }

    #[test]
    fn chat_screen_renders_conversations_unread_and_status_marks() {
        let mut st = ChatState::new("u_a", "alice");
        st.names.insert("u_b".into(), "bob".into());
        for (id, title, unread) in [("c1", "bob", 0), ("c2", "team", 0)] {
            st.upsert_conv(ConvItem {
                conv_id: id.into(),
                title: title.into(),
                unread,
                peer: None,
                last_seq: 0,
            });
        }
        st.open_conv("c1");
        st.set_history("c1", &[text_event("c1", 1, "u_b", "hi alice", None)]);
        st.add_pending("c1", "k1", "hello bob", 1_732_380_120_000);
        let screen = render(&st);
        assert!(screen.contains("conversations"), "{screen}");
        assert!(screen.contains("● bob"), "{screen}");
        assert!(screen.contains("bob: hi alice"), "{screen}");
        assert!(screen.contains("alice: hello bob …"), "{screen}");

        // The SDK reports the send, then bob's read; a message arrives in
        // the other conversation.
        let ch = |status, seq| StatusChange {
            conv_id: "c1".into(),
            client_msg_id: "k1".into(),
            status,
            seq,
            error: None,
        };
        st.on_status(&ch(MessageStatus::Sent, Some(2)));
        assert!(render(&st).contains("hello bob ✓"));
        assert_eq!(
            st.on_event(&text_event("c1", 2, "u_a", "hello bob", Some("k1"))),
            Effect::default()
        );
        st.on_status(&ch(MessageStatus::Read, Some(2)));
        let fx = st.on_event(&text_event("c2", 5, "u_b", "group news", None));
        assert_eq!(fx.read, None);
        let screen = render(&st);
        assert!(screen.contains("hello bob ✓✓ read"), "{screen}");
        assert_eq!(screen.matches("hello bob").count(), 1, "{screen}");
        assert!(screen.contains("team (1)"), "{screen}");
        assert!(screen.contains("alice · offline"), "{screen}");
    }

    #[test]
    fn history_marks_own_messages_answered_since_as_read() {
        let mut st = ChatState::new("u_a", "alice");
        st.names.insert("u_b".into(), "bob".into());
        st.upsert_conv(ConvItem {
            conv_id: "c1".into(),
            title: "bob".into(),
            unread: 0,
            peer: None,
            last_seq: 3,
        });
        st.open_conv("c1");
        st.set_history(
            "c1",
            &[
                text_event("c1", 1, "u_a", "first", Some("k1")),
                text_event("c1", 2, "u_b", "reply", None),
                text_event("c1", 3, "u_a", "last", Some("k3")),
            ],
        );
        let screen = render(&st);
        assert!(screen.contains("alice: first ✓✓ read"), "{screen}");
        assert!(
            screen.contains("alice: last ✓\n") || screen.contains("alice: last ✓ "),
            "{screen}"
        );
        assert_eq!(st.last_unconfirmed("c1"), Some(3));
        st.mark_read("c1", 3);
        assert!(render(&st).contains("alice: last ✓✓ read"));
        assert_eq!(st.last_unconfirmed("c1"), None);
    }

    #[test]
    fn keys_drive_commands_and_sends() {
        let mut st = ChatState::new("u_a", "alice");
        for c in "/dm bob".chars() {
            assert_eq!(st.on_key(key(KeyCode::Char(c))), None);
        }
        assert_eq!(
            st.on_key(key(KeyCode::Enter)),
            Some(Action::Direct("bob".into()))
        );
        for c in "/group team bob carol".chars() {
            st.on_key(key(KeyCode::Char(c)));
        }
        assert_eq!(
            st.on_key(key(KeyCode::Enter)),
            Some(Action::Group {
                title: "team".into(),
                members: vec!["bob".into(), "carol".into()]
            })
        );
        // Text with no conversation open stays in the input.
        for c in "hi".chars() {
            st.on_key(key(KeyCode::Char(c)));
        }
        assert_eq!(st.on_key(key(KeyCode::Enter)), None);
        assert_eq!(st.input, "hi");
        st.upsert_conv(ConvItem {
            conv_id: "c1".into(),
            title: "bob".into(),
            unread: 3,
            peer: None,
            last_seq: 3,
        });
        st.on_key(key(KeyCode::Tab));
        assert_eq!(st.focus, Focus::List);
        assert_eq!(
            st.on_key(key(KeyCode::Enter)),
            Some(Action::Open("c1".into()))
        );
        st.open_conv("c1");
        assert_eq!(
            st.on_key(key(KeyCode::Enter)),
            Some(Action::Send {
                conv_id: "c1".into(),
                text: "hi".into()
            })
        );
        assert_eq!(
            st.on_key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)),
            Some(Action::Quit)
        );
    }

    #[test]
    fn replayed_events_are_not_counted_unread_twice() {
        let mut st = ChatState::new("u_a", "alice");
        st.upsert_conv(ConvItem {
            conv_id: "c1".into(),
            title: "bob".into(),
            unread: 1,
            peer: None,
            last_seq: 1,
        });
        // The first sync hands over seq 1 again: still one unread.
        st.on_event(&text_event("c1", 1, "u_b", "hi", None));
        assert_eq!(st.convs[0].unread, 1);
        st.on_event(&text_event("c1", 2, "u_b", "again", None));
        assert_eq!(st.convs[0].unread, 2);
    }

    #[test]
    fn login_form_renders_and_masks_the_password() {
        let mut form = LoginForm {
            url: "http://127.0.0.1:8080".into(),
            ..LoginForm::default()
        };
        for c in "alice".chars() {
            form.on_key(key(KeyCode::Char(c)));
        }
        form.on_key(key(KeyCode::Tab));
        for c in "secret123".chars() {
            form.on_key(key(KeyCode::Char(c)));
        }
        assert_eq!(form.on_key(key(KeyCode::F(2))), Some(LoginAction::Register));
        assert_eq!(form.on_key(key(KeyCode::Enter)), Some(LoginAction::Login));
        let mut t = Terminal::new(TestBackend::new(80, 20)).unwrap();
        t.draw(|f| form.draw(f)).unwrap();
        let screen = buffer_text(t.backend().buffer());
        assert!(screen.contains("username: alice"), "{screen}");
        assert!(screen.contains("password: *********"), "{screen}");
        assert!(!screen.contains("secret123"));
    }
}
