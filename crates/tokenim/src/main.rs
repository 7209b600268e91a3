//! The `tokenim` binary: `serve` runs the server, `migrate` prepares its
//! database; `bench` (`tokenim-bench`) and the client commands
//! (`tokenim-cli`) are clients of it. Wires the crates together; holds no
//! protocol logic.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokenim_server::Config;
use tokenim_server::config::LogFormat;

use tokenim_bench as bench;
use tokenim_cli as cli;

/// mimalloc: the server allocates from many threads and frees on others
/// (frames built by the dispatcher, dropped by socket writers); glibc malloc
/// spent a fifth of the server's time on that under load.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "tokenim", version, about = "tokenim instant-messaging server")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the server.
    Serve(Box<ServeArgs>),
    /// Apply the database's pending schema migrations and exit (`serve` also
    /// applies them at start).
    Migrate(MigrateArgs),
    /// Load-test a running server.
    Bench(bench::BenchArgs),
    #[command(flatten)]
    Client(cli::ClientCmd),
}

#[derive(Parser)]
struct MigrateArgs {
    /// TOML configuration file (its database_url is used).
    #[arg(long)]
    config: Option<PathBuf>,
    /// postgres://USER@HOST/DB or mysql://USER@HOST/DB [env TOKENIM_DATABASE_URL].
    #[arg(long)]
    database_url: Option<String>,
}

#[derive(Parser)]
struct ServeArgs {
    /// TOML configuration file (settings at the top level, limits under [limits]).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080; env TOKENIM_LISTEN].
    #[arg(long)]
    listen: Option<String>,
    /// Data directory [default: ./data; env TOKENIM_DATA_DIR].
    #[arg(long)]
    data_dir: Option<String>,
    /// PEM certificate chain: serve HTTPS and WSS [env TOKENIM_TLS_CERT].
    #[arg(long)]
    tls_cert: Option<String>,
    /// PEM private key for --tls-cert [env TOKENIM_TLS_KEY].
    #[arg(long)]
    tls_key: Option<String>,
    /// Log format: text or json [env TOKENIM_LOG_FORMAT].
    #[arg(long)]
    log_format: Option<String>,
    /// Argon2id memory cost in KiB [default: 19456].
    #[arg(long)]
    argon2_memory_kib: Option<String>,
    /// Argon2id iterations [default: 2].
    #[arg(long)]
    argon2_iterations: Option<String>,
    /// The API key named `admin` (same as --api-key admin=SECRET) [env TOKENIM_ADMIN_TOKEN].
    #[arg(long)]
    admin_token: Option<String>,
    /// An API key of the app's backend for /v1/server/..., NAME=SECRET
    /// (repeatable) [env TOKENIM_API_KEYS=N1=S1,N2=S2].
    #[arg(long = "api-key", value_name = "NAME=SECRET")]
    api_keys: Vec<String>,
    /// open: anyone may register; closed: only the server API creates users
    /// [default: open; env TOKENIM_REGISTRATION].
    #[arg(long)]
    registration: Option<String>,
    /// A web origin allowed to call /v1/* from a browser, or * (repeatable)
    /// [env TOKENIM_CORS_ORIGINS, comma-separated].
    #[arg(long = "cors-origin", value_name = "ORIGIN")]
    cors_origins: Vec<String>,
    /// Sign-in with your app's JWTs: the HS256 secret [env TOKENIM_AUTH_JWT_SECRET].
    #[arg(long)]
    auth_jwt_secret: Option<String>,
    /// Sign-in with your app's JWTs: a PEM public key file (RS256, ES256,
    /// EdDSA) [env TOKENIM_AUTH_JWT_PUBLIC_KEY].
    #[arg(long)]
    auth_jwt_public_key: Option<String>,
    /// Sign-in with your app's JWTs: a JWKS URL, keys by kid
    /// [env TOKENIM_AUTH_JWT_JWKS_URL].
    #[arg(long)]
    auth_jwt_jwks_url: Option<String>,
    /// The `iss` every JWT must carry [env TOKENIM_AUTH_JWT_ISSUER].
    #[arg(long)]
    auth_jwt_issuer: Option<String>,
    /// The `aud` every JWT must name [env TOKENIM_AUTH_JWT_AUDIENCE].
    #[arg(long)]
    auth_jwt_audience: Option<String>,
    /// Keep the data in PostgreSQL or MySQL instead of the embedded store:
    /// postgres://USER@HOST/DB or mysql://USER@HOST/DB [env TOKENIM_DATABASE_URL].
    #[arg(long)]
    database_url: Option<String>,
    /// Most database connections of this node [default: 16].
    #[arg(long)]
    database_pool: Option<String>,
    /// Run as a cluster node sharing presence and delivery through Redis:
    /// redis://HOST:PORT [env TOKENIM_REDIS_URL].
    #[arg(long)]
    redis_url: Option<String>,
    /// This node's unique name in the cluster [default: random; env TOKENIM_NODE_ID].
    #[arg(long)]
    node_id: Option<String>,
    /// Prefix of the cluster's Redis keys [default: tokenim].
    #[arg(long)]
    redis_prefix: Option<String>,
    /// Load balancers (comma-separated IPs) whose X-Forwarded-For header
    /// names the client, for the per-IP login limit [env TOKENIM_TRUSTED_PROXIES].
    #[arg(long)]
    trusted_proxies: Option<String>,
    /// How much of a message offline pushes show: full, sender or none
    /// [default: full; config [push] preview; env TOKENIM_PUSH_PREVIEW].
    #[arg(long)]
    push_preview: Option<String>,
    /// A protocol limit, NAME=VALUE (repeatable), e.g. --limit heartbeat_ms=10000
    /// [env TOKENIM_LIMITS_<NAME>].
    #[arg(long = "limit", value_name = "NAME=VALUE")]
    limits: Vec<String>,
}

impl ServeArgs {
    fn config(&self) -> anyhow::Result<Config> {
        let mut cfg = Config::load(self.config.as_deref(), std::env::vars())?;
        let flags = [
            ("listen", &self.listen),
            ("data_dir", &self.data_dir),
            ("tls_cert", &self.tls_cert),
            ("tls_key", &self.tls_key),
            ("log_format", &self.log_format),
            ("argon2_memory_kib", &self.argon2_memory_kib),
            ("argon2_iterations", &self.argon2_iterations),
            ("admin_token", &self.admin_token),
            ("registration", &self.registration),
            ("auth_jwt_secret", &self.auth_jwt_secret),
            ("auth_jwt_public_key", &self.auth_jwt_public_key),
            ("auth_jwt_jwks_url", &self.auth_jwt_jwks_url),
            ("auth_jwt_issuer", &self.auth_jwt_issuer),
            ("auth_jwt_audience", &self.auth_jwt_audience),
            ("database_url", &self.database_url),
            ("database_pool", &self.database_pool),
            ("redis_url", &self.redis_url),
            ("node_id", &self.node_id),
            ("redis_prefix", &self.redis_prefix),
            ("trusted_proxies", &self.trusted_proxies),
            ("push_preview", &self.push_preview),
        ];
        for (name, v) in flags {
            if let Some(v) = v {
                cfg.set(name, v)
                    .with_context(|| format!("--{}", name.replace('_', "-")))?;
            }
        }
        for k in &self.api_keys {
            cfg.add_api_key(k).context("--api-key")?;
        }
        for o in &self.cors_origins {
            cfg.set("cors_origin", o).context("--cors-origin")?;
        }
        for l in &self.limits {
            cfg.set_limit(l).with_context(|| format!("--limit {l}"))?;
        }
        Ok(cfg)
    }
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,fjall=warn,lsm_tree=warn,sqlx=warn")
    });
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    match format {
        LogFormat::Json => b.json().init(),
        LogFormat::Text => b.init(),
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line, whatever RUST_BACKTRACE says: what failed and why.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    rustls::crypto::ring::default_provider()
        .install_default()
        .map_err(|_| anyhow::anyhow!("a rustls crypto provider was already installed"))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.cmd {
        Cmd::Serve(args) => rt.block_on(serve(*args)),
        Cmd::Migrate(args) => rt.block_on(migrate(args)),
        Cmd::Bench(args) => rt.block_on(bench::run(args)),
        Cmd::Client(cmd) => rt.block_on(cli::run(cmd)),
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let cfg = args.config()?;
    init_logs(cfg.log_format);
    // Every socket is a file descriptor: take as many as the system allows.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::debug!(nofile = n, "file descriptor limit"),
        Err(e) => tracing::warn!(error = %e, "could not raise the file descriptor limit"),
    }
    let store = tokenim_server::open_store(&cfg).await?;
    let server = tokenim_server::start(cfg, store).await?;
    let stop = server.stopper();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        let _ = stop.send(true);
    });
    server.wait().await
}

async fn migrate(args: MigrateArgs) -> anyhow::Result<()> {
    let mut cfg = Config::load(args.config.as_deref(), std::env::vars())?;
    if let Some(url) = &args.database_url {
        cfg.set("database_url", url).context("--database-url")?;
    }
    init_logs(cfg.log_format);
    let Some(url) = cfg.database_url else {
        anyhow::bail!(
            "no database to migrate: give --database-url (the embedded store needs no migrations)"
        );
    };
    let applied = tokenim_store::sql::migrate(&url)
        .await
        .with_context(|| format!("migrating {}", tokenim_store::sql::redact(&url)))?;
    let latest = tokenim_store::sql::latest_schema();
    if applied.is_empty() {
        println!("schema is up to date (version {latest})");
    } else {
        let list: Vec<String> = applied.iter().map(i64::to_string).collect();
        println!(
            "applied migration(s) {}; schema is at version {latest}",
            list.join(", ")
        );
    }
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
