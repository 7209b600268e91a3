//! Where the SDK keeps what must survive a restart of the application: the
//! per-conversation cursors and the outbox of unacknowledged requests.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Error, Result};

/// The SDK's durable state for one (user, device).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// The user this state belongs to (set on first save).
    #[serde(default)]
    pub user_id: Option<String>,
    /// The device this state belongs to (set on first save).
    #[serde(default)]
    pub device_id: Option<String>,
    /// Per conversation, the highest seq handed to the application in order.
    #[serde(default)]
    pub cursors: BTreeMap<String, u64>,
    /// Requests not yet acknowledged by the server, oldest first.
    #[serde(default)]
    pub outbox: Vec<OutboxEntry>,
}

/// One request waiting for its `send_ack`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// The request's idempotency key, reused on every resend.
    pub client_msg_id: String,
    /// The conversation it goes to.
    pub conv_id: String,
    /// What it asks for.
    pub request: Request,
    /// When the application made it (ms since the epoch, local clock).
    pub created_at: i64,
}

/// A request that creates a timeline event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    /// A message with this content.
    Send {
        /// The message content (an object with a string `type`).
        content: Value,
    },
    /// Recalls the message at `target_seq`.
    Recall {
        /// The seq of the message recalled.
        target_seq: u64,
    },
    /// Replaces the content of the message at `target_seq`.
    Edit {
        /// The seq of the message edited.
        target_seq: u64,
        /// The new content.
        content: Value,
    },
}

/// Keeps a [`State`]. Implement it to keep the state in the application's
/// own database; [`MemoryStore`] and [`FileStore`] come with the SDK.
///
/// `save` is called from a blocking thread, at most a few times a second
/// and before every send is reported queued; it must replace the whole
/// state atomically.
pub trait StateStore: Send + Sync + 'static {
    /// Reads the state (an empty one when nothing was saved yet).
    fn load(&self) -> Result<State>;
    /// Replaces the saved state.
    fn save(&self, state: &State) -> Result<()>;
}

/// Keeps the state in memory. Clones share it, so a new
/// [`Messenger`](crate::Messenger) given a clone resumes where the previous
/// one stopped, within one process.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// A copy of what is stored now.
    pub fn snapshot(&self) -> State {
        self.state.lock().expect("state lock poisoned").clone()
    }
}

impl StateStore for MemoryStore {
    fn load(&self) -> Result<State> {
        Ok(self.snapshot())
    }

    fn save(&self, state: &State) -> Result<()> {
        *self.state.lock().expect("state lock poisoned") = state.clone();
        Ok(())
    }
}

/// Keeps the state in a JSON file, replaced atomically (written beside it,
/// synced, then renamed over it), so a restarted application resumes where
/// it was. One file per (user, device); two processes must not share one.
#[derive(Debug, Clone)]
pub struct FileStore {
    path: PathBuf,
}

impl FileStore {
    /// A store in `path` (created on first save, with its parent folders).
    pub fn new(path: impl Into<PathBuf>) -> FileStore {
        FileStore { path: path.into() }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl StateStore for FileStore {
    fn load(&self) -> Result<State> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| Error::Store(format!("{}: {e}", self.path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(Error::Store(format!("{}: {e}", self.path.display()))),
        }
    }

    fn save(&self, state: &State) -> Result<()> {
        let err = |e: std::io::Error| Error::Store(format!("{}: {e}", self.path.display()));
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let bytes = serde_json::to_vec(state).expect("the state always serializes");
        let mut f = std::fs::File::create(&tmp).map_err(err)?;
        f.write_all(&bytes).map_err(err)?;
        f.sync_all().map_err(err)?;
        drop(f);
        std::fs::rename(&tmp, &self.path).map_err(err)?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            // Makes the rename durable; not every platform can open a folder.
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_store_round_trips_and_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path().join("sub/state.json"));
        assert_eq!(store.load().unwrap(), State::default());
        let mut s = State::default();
        s.cursors.insert("c1".into(), 7);
        s.outbox.push(OutboxEntry {
            client_msg_id: "m1".into(),
            conv_id: "c1".into(),
            request: Request::Send {
                content: serde_json::json!({"type": "text", "text": "hi"}),
            },
            created_at: 1,
        });
        store.save(&s).unwrap();
        assert_eq!(FileStore::new(store.path()).load().unwrap(), s);
    }

    #[test]
    fn file_store_rejects_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        std::fs::write(&p, b"not json").unwrap();
        assert!(matches!(FileStore::new(&p).load(), Err(Error::Store(_))));
    }
}
