//! Client subcommands of the binary: the terminal chat and the scriptable
//! one-shot commands, all built on the `tokenim-client` SDK.

use clap::Subcommand;

#[derive(Subcommand)]
pub enum ClientCmd {
    /// Open the full-screen terminal chat.
    Chat,
}

pub async fn run(cmd: ClientCmd) -> anyhow::Result<()> {
    match cmd {
        ClientCmd::Chat => anyhow::bail!("the terminal chat is not built yet"),
    }
}
