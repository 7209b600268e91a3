//! Kept sessions: a password login's token, saved under the tokenim home
//! folder (`sessions.json`, mode 0600) so the one-shot commands reuse it
//! until it expires instead of logging in on every call (which the server's
//! per-IP login limit would soon refuse). Keyed by server URL and
//! username; the last login of a URL also serves commands that name no
//! user.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// Sessions expiring sooner than this are not reused.
const MARGIN_MS: i64 = 60_000;

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kept {
    pub url: String,
    pub user: String,
    pub user_id: String,
    pub device: String,
    pub token: String,
    pub expires_at: i64,
}

impl std::fmt::Debug for Kept {
    /// Never prints the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kept")
            .field("url", &self.url)
            .field("user", &self.user)
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

#[derive(Default, Serialize, Deserialize)]
struct File {
    /// Oldest first: the last one is the latest login.
    sessions: Vec<Kept>,
}

fn path(home: &Path) -> PathBuf {
    home.join("sessions.json")
}

fn read(home: &Path) -> anyhow::Result<File> {
    let p = path(home);
    match std::fs::read(&p) {
        Ok(b) => serde_json::from_slice(&b)
            .with_context(|| format!("{} is not a sessions file (delete it)", p.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(File::default()),
        Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
    }
}

/// Writes the file whole: a temporary file made 0600 before anything is
/// written to it, then renamed over the old one.
fn write(home: &Path, f: &File) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(home).with_context(|| format!("creating {}", home.display()))?;
    let p = path(home);
    let tmp = home.join("sessions.json.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    out.write_all(&serde_json::to_vec_pretty(f).expect("sessions serialize"))
        .and_then(|()| out.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &p).with_context(|| format!("writing {}", p.display()))
}

/// The kept session for `url` and `user` (the latest login of `url` when
/// `user` is `None`) that is still valid at `now_ms`.
pub fn find(
    home: &Path,
    url: &str,
    user: Option<&str>,
    now_ms: i64,
) -> anyhow::Result<Option<Kept>> {
    let f = read(home)?;
    Ok(f.sessions
        .into_iter()
        .rev()
        .find(|k| k.url == url && user.is_none_or(|u| k.user == u))
        .filter(|k| k.expires_at > now_ms + MARGIN_MS))
}

/// Keeps `k`, replacing an earlier session of the same URL and user.
pub fn save(home: &Path, k: Kept) -> anyhow::Result<()> {
    let mut f = read(home)?;
    f.sessions.retain(|o| !(o.url == k.url && o.user == k.user));
    f.sessions.push(k);
    write(home, &f)
}

/// Forgets the session of `url` and `user` (the server refused it).
pub fn forget(home: &Path, url: &str, user: &str) -> anyhow::Result<()> {
    let mut f = read(home)?;
    let before = f.sessions.len();
    f.sessions.retain(|o| !(o.url == url && o.user == user));
    if f.sessions.len() != before {
        write(home, &f)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn kept(user: &str, expires_at: i64) -> Kept {
        Kept {
            url: "http://h".into(),
            user: user.into(),
            user_id: format!("u_{user}"),
            device: "d".into(),
            token: format!("t-{user}"),
            expires_at,
        }
    }

    #[test]
    fn sessions_are_kept_private_replaced_and_found_until_they_expire() {
        let dir = tempfile::tempdir().unwrap();
        let h = dir.path();
        assert_eq!(find(h, "http://h", None, 0).unwrap(), None);
        save(h, kept("alice", 1_000_000)).unwrap();
        save(h, kept("bob", 1_000_000)).unwrap();
        save(h, kept("alice", 2_000_000)).unwrap();
        let mode = std::fs::metadata(path(h)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // The latest login serves commands without a user.
        assert_eq!(find(h, "http://h", None, 0).unwrap().unwrap().user, "alice");
        let a = find(h, "http://h", Some("alice"), 0).unwrap().unwrap();
        assert_eq!(a.expires_at, 2_000_000);
        assert!(find(h, "http://other", Some("alice"), 0).unwrap().is_none());
        // Not within a minute of expiry.
        assert!(
            find(h, "http://h", Some("bob"), 1_000_000 - 60_000)
                .unwrap()
                .is_none()
        );
        forget(h, "http://h", "alice").unwrap();
        assert!(find(h, "http://h", Some("alice"), 0).unwrap().is_none());
        assert!(find(h, "http://h", Some("bob"), 0).unwrap().is_some());
        assert!(!format!("{a:?}").contains("t-alice"));
    }
}
