//! Sends one text message to another user through the reliable outbox and
//! waits until the server stored it (and, briefly, for delivery).
//!
//! ```text
//! cargo run -p tokenim-client --example send -- http://127.0.0.1:8080 alice password1 bob "hello bob"
//! ```
//!
//! Registers the sender first if the name is free. Start the `listen`
//! example as `bob` in another terminal to watch it arrive; stop the server
//! while this one waits and start it again: the message is resent with the
//! same `client_msg_id` and lands exactly once.

use std::sync::Arc;
use std::time::Duration;

use tokenim_client::{Client, Config, ErrorCode, MemoryStore, MessageStatus, Messenger, Update};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, user, password, peer, text] = args.as_slice() else {
        eprintln!("usage: send URL USER PASSWORD PEER TEXT");
        std::process::exit(2);
    };
    let client = Client::new(url)?;
    match client.register(user, password, None).await {
        Ok(id) => println!("registered {user} as {id}"),
        Err(e) if e.code() == Some(ErrorCode::Conflict) => {}
        Err(e) => return Err(e.into()),
    }
    let session = client.login(user, password, "example-send", "bot").await?;
    let peer = session.find_user(peer).await?;
    let conv = session.create_direct(&peer.user_id).await?;

    let store = Arc::new(MemoryStore::new());
    let (messenger, mut updates) = Messenger::start(&session, store, Config::default()).await?;
    let id = messenger.send_text(&conv.conv_id, text).await?;
    println!("queued {id} in {}", conv.conv_id);
    // Wait for `sent`, then up to 2 s more for `delivered` or `read`.
    let mut deadline = tokio::time::Instant::now() + Duration::from_secs(3600);
    while let Ok(Some(u)) = tokio::time::timeout_at(deadline, updates.recv()).await {
        match u {
            Update::Status(s) if s.client_msg_id == id => {
                println!("{id}: {}", s.status);
                match s.status {
                    MessageStatus::Sent => {
                        deadline = tokio::time::Instant::now() + Duration::from_secs(2);
                    }
                    MessageStatus::Delivered | MessageStatus::Read => break,
                    MessageStatus::Failed => {
                        eprintln!("refused: {:?}", s.error);
                        std::process::exit(1);
                    }
                    MessageStatus::Sending => {}
                }
            }
            Update::Disconnected { reason, retry_in } => {
                println!("disconnected ({reason}); retrying in {retry_in:?}")
            }
            _ => {}
        }
    }
    messenger.close().await?;
    Ok(())
}
