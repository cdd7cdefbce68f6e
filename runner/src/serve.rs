//! `wilddog-runner serve`: the signaling server.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use tracing_subscriber::EnvFilter;
use wilddog_server::{ClusterConfig, DEV_APP_ID, ServerConfig};

/// Where `serve` listens by default: loopback only, so that the development app (whose
/// secret is public) is not exposed by accident.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8930";

/// Arguments of `serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address and port for HTTP/WebSocket (TCP) and STUN (UDP).
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// TOML config (apps, ICE servers, TLS, limits). Without it: the development app.
    #[arg(long, env = "WILDDOG_CONFIG")]
    pub config: Option<PathBuf>,
    /// Run as one node of a cluster on this Redis (`redis://HOST:PORT/`); overrides the
    /// config file's `redis`. Without it (and without the key) the server is alone.
    #[arg(long, env = "WILDDOG_REDIS")]
    pub redis: Option<String>,
}

/// Logs go to stderr, filtered by RUST_LOG (default `info`).
pub fn init_tracing() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Runs the server until Ctrl-C or SIGTERM.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    init_tracing();
    let config = match &args.config {
        Some(path) => ServerConfig::from_file(path)
            .with_context(|| format!("loading config {}", path.display()))?,
        None => ServerConfig::development(),
    };
    let mut config = config;
    if let Some(url) = &args.redis {
        match &mut config.cluster {
            Some(c) => c.redis_url = url.clone(),
            None => config.cluster = Some(ClusterConfig::new(url.clone())),
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        let local = listener.local_addr().context("listener address")?;
        let scheme = if config.tls.is_some() { "https" } else { "http" };
        let ws = if config.tls.is_some() { "wss" } else { "ws" };
        tracing::info!("listening on {scheme}://{local} (WebSocket {ws}://{local}/ws)");
        if config.builtin_stun {
            tracing::info!("STUN on udp {local}");
        }
        if let Some(c) = &config.cluster {
            tracing::info!("cluster node on {} (SIGTERM drains)", c.redis_url);
        }
        if config.is_development() {
            tracing::info!(
                "no --config: development app `{DEV_APP_ID}` (public secret; tokens from \
                 `wilddog-runner token --uid UID` or GET /dev/token?uid=UID)"
            );
            if !local.ip().is_loopback() {
                tracing::warn!(
                    "the development app's secret is public and {local} is reachable from the \
                     network: anyone there can connect as any uid. Use --config for real apps."
                );
            }
        }
        wilddog_server::run(listener, config, crate::run::wait_signal()).await?;
        tracing::info!("stopped");
        Ok(())
    })
}
