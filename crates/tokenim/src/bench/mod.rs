//! `tokenim bench`: the load generator and its scenarios.

use clap::Parser;

#[derive(Parser)]
pub struct BenchArgs {}

pub async fn run(_args: BenchArgs) -> anyhow::Result<()> {
    anyhow::bail!("the benchmark tool is not built yet")
}
