//! Prints everything one user receives, live, resuming after a restart.
//!
//! ```text
//! cargo run -p tokenim-client --example listen -- http://127.0.0.1:8080 bob password1 [STATE_FILE]
//! ```
//!
//! Registers the user first if the name is free. With `STATE_FILE`, the
//! cursors and the outbox are kept there: stop it, send bob a few messages,
//! start it again, and it prints exactly the ones it missed.

use std::sync::Arc;

use tokenim_client::{
    Client, Config, ErrorCode, FileStore, MemoryStore, Messenger, StateStore, Update, event_text,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, user, password, rest @ ..] = args.as_slice() else {
        eprintln!("usage: listen URL USER PASSWORD [STATE_FILE]");
        std::process::exit(2);
    };
    let client = Client::new(url)?;
    match client.register(user, password, None).await {
        Ok(id) => println!("registered {user} as {id}"),
        Err(e) if e.code() == Some(ErrorCode::Conflict) => {}
        Err(e) => return Err(e.into()),
    }
    let session = client
        .login(user, password, "example-listen", "bot")
        .await?;
    let store: Arc<dyn StateStore> = match rest.first() {
        Some(path) => Arc::new(FileStore::new(path)),
        None => Arc::new(MemoryStore::new()),
    };
    let (_messenger, mut updates) = Messenger::start(&session, store, Config::default()).await?;
    println!(
        "listening as {user} ({}); Ctrl-C to stop",
        session.user_id()
    );
    while let Some(u) = updates.recv().await {
        match u {
            Update::Event(e) => {
                let text = event_text(&e).unwrap_or_else(|| format!("[{}]", e.kind.as_str()));
                let who = e.sender.as_deref().unwrap_or("(system)");
                println!("{} #{} {who}: {text}", e.conv_id, e.seq);
            }
            Update::Connected { .. } => println!("connected"),
            Update::Synced => println!("caught up"),
            Update::Disconnected { reason, retry_in } => {
                println!("disconnected ({reason}); retrying in {retry_in:?}")
            }
            Update::Stopped(r) => println!("stopped: {r:?}"),
            _ => {}
        }
    }
    Ok(())
}
