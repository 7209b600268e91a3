//! The SQL engines: PostgreSQL and MySQL/MariaDB behind one implementation.

/// A database URL with its password hidden, for logs and errors.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

pub struct SqlStore {}

impl SqlStore {
    pub async fn connect(
        _url: &str,
        _pool: u32,
    ) -> crate::StoreResult<std::sync::Arc<dyn crate::Store>> {
        Err(crate::StoreError::Engine("not built yet".into()))
    }
}
