//! A bot that answers every text message with the same text, in every
//! conversation it is in.
//!
//! ```text
//! cargo run -p tokenim-client --example echo_bot -- http://127.0.0.1:8080 echo password1
//! ```
//!
//! Then, from another terminal: `tokenim send --to echo "ping"` and
//! `tokenim history --with echo`.

use std::sync::Arc;

use tokenim_client::{
    Client, Config, ErrorCode, EventKind, MemoryStore, Messenger, Update, event_text,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, user, password] = args.as_slice() else {
        eprintln!("usage: echo_bot URL USER PASSWORD");
        std::process::exit(2);
    };
    let client = Client::new(url)?;
    match client.register(user, password, None).await {
        Ok(id) => println!("registered {user} as {id}"),
        Err(e) if e.code() == Some(ErrorCode::Conflict) => {}
        Err(e) => return Err(e.into()),
    }
    let session = client.login(user, password, "example-echo", "bot").await?;
    let store = Arc::new(MemoryStore::new());
    let (messenger, mut updates) = Messenger::start(&session, store, Config::default()).await?;
    println!("echoing as {user}; Ctrl-C to stop");
    let mut caught_up = false;
    while let Some(u) = updates.recv().await {
        match u {
            // Answer only what arrives live, not the backlog of the first
            // sync, and only other users (not system messages).
            Update::Synced => caught_up = true,
            Update::Event(e)
                if caught_up
                    && e.kind == EventKind::Message
                    && e.sender.as_deref().is_some_and(|s| s != session.user_id()) =>
            {
                if let Some(text) = event_text(&e) {
                    messenger.send_text(&e.conv_id, &text).await?;
                    messenger.read(&e.conv_id, e.seq).await?;
                }
            }
            Update::Stopped(r) => println!("stopped: {r:?}"),
            _ => {}
        }
    }
    Ok(())
}
