//! The Wilddog signaling server.
//!
//! Speaks the Wilddog v2 call protocol (see `wilddog-protocol`) over WebSockets at `/ws`,
//! authenticates clients with HS256 tokens of configured apps, routes call frames between
//! the two parties of each conversation, and answers STUN binding requests on UDP at its own
//! address and port so that `connack.iceServers` always works on a machine with no other
//! server. A party whose connection is lost mid-call gets `limits.reconnect_grace` to come
//! back on a new connection and carry on. Also serves `/healthz`, `/metrics` (OpenMetrics),
//! the browser SDK (`/sdk/wilddog-video.js`, `/sdk/wilddog-video.mjs`,
//! `/sdk/wilddog-video.d.ts`), the demo page (`/`) and, for the development app on loopback
//! only, `/dev/token`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8930").await?;
//! let config = wilddog_server::ServerConfig::development();
//! wilddog_server::run(listener, config, async {
//!     let _ = tokio::signal::ctrl_c().await;
//! })
//! .await?;
//! # Ok(()) }
//! ```
//!
//! The routing logic is [`router::Router`], pure and tested without sockets.
//!
//! With [`ServerConfig::cluster`] (`serve --redis redis://HOST:PORT/`), any number of
//! nodes on one Redis form one service (the `cluster` module: presence, a bus between
//! nodes, records of live conversations, node liveness); SIGTERM then drains the node
//! (`/readyz` 503, clients told to reconnect elsewhere, exit when they are gone).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

mod cluster;
pub mod config;
mod http;
pub mod metrics;
pub mod router;
mod server;
pub mod stun;
pub mod token;
pub mod turn;

pub use config::{
    AppConfig, ClusterConfig, ConfigError, DEFAULT_RECONNECT_GRACE, DEFAULT_TAKEOVER_PROBE,
    DEV_APP_ID, DEV_APP_SECRET, IceServerConfig, Limits, MAX_MAX_FRAME_BYTES, ServerConfig,
    TlsConfig, TurnConfig, UrlList,
};
pub use http::DEV_TOKEN_TTL;
pub use server::close_code;
pub use token::{AuthError, Claims, TokenError, mint_token, sign_claims, verify_token};
pub use turn::{DEFAULT_TURN_TTL, RestTurn, TurnCredentials, rest_credential};

/// How long shutdown waits for connections to close before giving up on them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration is not usable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A socket operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The TLS certificate or key could not be loaded.
    #[error("TLS: {0}")]
    Tls(String),
    /// The Redis URL is not usable.
    #[error("Redis: {0}")]
    Redis(String),
}

/// Drains a cluster node: not ready, sessions closed with 1012 after the notice, leave the
/// cluster, wait for the sessions to end (at most the deadline).
async fn drain(shared: &Arc<server::Shared>) {
    let Some(cluster_config) = shared.config.cluster.clone() else { return };
    shared.draining.store(true, std::sync::atomic::Ordering::SeqCst);
    shared.metrics.draining.set(1);
    tracing::info!(
        notice = ?cluster_config.drain_notice,
        "draining: /readyz 503, no new connections; clients will be told to reconnect"
    );
    let deadline = tokio::time::Instant::now() + cluster_config.drain_deadline;
    tokio::time::sleep(cluster_config.drain_notice).await;
    shared.drain.cancel();
    while shared.metrics.connections.get() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if let Some(c) = &shared.cluster {
        // Let the writer send what the closing sessions queued (their departures).
        tokio::time::sleep(Duration::from_millis(100)).await;
        c.leave(shared).await;
    }
    tracing::info!(connections = shared.metrics.connections.get(), "drained: leaving the cluster");
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ServerError {
    let what = what.into();
    move |source| ServerError::Io { what, source }
}

fn rustls_config(tls: &TlsConfig) -> Result<axum_server::tls_rustls::RustlsConfig, ServerError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(&tls.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| ServerError::Tls(format!("certificate {}: {e}", tls.cert.display())))?;
    if certs.is_empty() {
        return Err(ServerError::Tls(format!("no certificate in {}", tls.cert.display())));
    }
    let key = PrivateKeyDer::from_pem_file(&tls.key)
        .map_err(|e| ServerError::Tls(format!("key {}: {e}", tls.key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServerError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ServerError::Tls(e.to_string()))?;
    // WebSockets upgrade over HTTP/1.1.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(config)))
}

/// Runs the server on `listener` until `shutdown` resolves: HTTP and WebSocket on the TCP
/// port (TLS when `config.tls` is set), STUN on UDP at the same address and port (when
/// `config.builtin_stun`). On shutdown every WebSocket gets a close frame (1001).
///
/// In cluster mode (`config.cluster`), shutdown drains the node instead: `/readyz` answers
/// 503 and no WebSocket is accepted; after `drain_notice` every WebSocket is closed with
/// 1012 (its live calls keep the reconnect grace while the client reconnects to another
/// node through the load balancer); the node leaves the cluster (its calls are adopted by
/// other nodes) and returns when its connections are gone, or after `drain_deadline`.
pub async fn run(
    listener: tokio::net::TcpListener,
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    config.validate()?;
    let local: SocketAddr = listener.local_addr().map_err(io_err("listener address"))?;
    let tls = config.tls.as_ref().map(rustls_config).transpose()?;
    let stun_socket = if config.builtin_stun {
        Some(
            tokio::net::UdpSocket::bind(local)
                .await
                .map_err(io_err(format!("binding the STUN socket on udp {local}")))?,
        )
    } else {
        None
    };
    let shared = Arc::new(server::Shared::new(config, local)?);
    if let Some(socket) = stun_socket {
        tokio::spawn(stun::serve(socket, shared.shutdown.clone()));
    }
    tokio::spawn(server::expire_graces(shared.clone()));
    if let Some(c) = &shared.cluster {
        tracing::info!(node = c.node, "cluster node on Redis");
        cluster::start(&shared);
    }
    let handle = axum_server::Handle::new();
    {
        let (handle, shared) = (handle.clone(), shared.clone());
        tokio::spawn(async move {
            let stop = shared.shutdown.clone();
            tokio::select! {
                _ = shutdown => {}
                _ = stop.cancelled() => {}
            }
            if shared.cluster.is_some() && !stop.is_cancelled() {
                drain(&shared).await;
            }
            tracing::info!("shutting down");
            stop.cancel();
            handle.graceful_shutdown(Some(SHUTDOWN_GRACE));
        });
    }
    let app = http::routes(shared.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let std_listener = listener.into_std().map_err(io_err("listener"))?;
    // TCP_NODELAY on every accepted socket. Signaling frames are small and come one at a
    // time: with Nagle, a frame written while the previous one is unacknowledged waits for
    // the client's delayed ACK (up to 40 ms on Linux). That held the `call` to a callee that
    // had just got its `connack` ~38 ms (docs/benchmarks.md).
    let nodelay = axum_server::accept::NoDelayAcceptor::new();
    let server = axum_server::from_tcp(std_listener).handle(handle);
    let served = match tls {
        Some(tls) => {
            let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(tls).acceptor(nodelay);
            server.acceptor(acceptor).serve(app).await
        }
        None => server.acceptor(nodelay).serve(app).await,
    };
    // Whatever ended serving, end the sessions too.
    shared.shutdown.cancel();
    shared.tracker.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, shared.tracker.wait()).await.is_err() {
        tracing::warn!("some connections did not close within {SHUTDOWN_GRACE:?}");
    }
    served.map_err(io_err(format!("serving on {local}")))
}
