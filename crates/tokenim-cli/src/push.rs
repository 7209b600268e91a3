//! `tokenim push test --user ID`: sends a test notification to each of a
//! user's registered devices through the running server and prints each
//! provider's answer, then the devices' push state (PROTOCOL-INTEGRATION
//! I2.5). Needs an API key of the server.

use anyhow::Context;
use clap::{Args, Subcommand};
use tokenim_client::Client;

#[derive(Subcommand)]
pub enum PushCmd {
    /// Send a test notification to a user's devices and print each answer.
    Test(TestArgs),
}

#[derive(Args)]
pub struct TestArgs {
    /// The user (the app's own user ID or a `u_...` ID).
    #[arg(long)]
    user: String,
    /// Server URL.
    #[arg(long, env = "TOKENIM_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// An API key of the server (`--api-key NAME=SECRET` there: give SECRET).
    #[arg(long, env = "TOKENIM_API_KEY", hide_env_values = true)]
    api_key: String,
}

pub async fn run(cmd: PushCmd) -> anyhow::Result<()> {
    match cmd {
        PushCmd::Test(a) => test(a).await,
    }
}

async fn test(a: TestArgs) -> anyhow::Result<()> {
    let client = Client::new(&a.url).with_context(|| format!("server URL {}", a.url))?;
    let results = client.server_push_test(&a.api_key, &a.user).await?.results;
    if results.is_empty() {
        println!("{} has no device registered for push", a.user);
    }
    let mut failed = false;
    for r in &results {
        failed |= r.result != "sent";
        match &r.error {
            Some(e) => println!("{}\t{}\t{}\t{e}", r.device_id, r.provider, r.result),
            None => println!("{}\t{}\t{}", r.device_id, r.provider, r.result),
        }
    }
    if failed {
        anyhow::bail!("a test push was not accepted (see above)");
    }
    Ok(())
}
