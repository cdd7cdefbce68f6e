//! The signaling server run in-process by `run` (when no `--server` is given) and by `demo`.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::oneshot;
use wilddog_server::ServerConfig;

/// Where the embedded server listens by default (the same as `serve`).
pub const DEFAULT_LISTEN: &str = crate::serve::DEFAULT_LISTEN;

/// A signaling server running on a tokio runtime of this process.
pub struct EmbeddedServer {
    /// The address it listens on (TCP for HTTP/WebSocket, UDP for STUN).
    pub addr: SocketAddr,
    tls: bool,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), wilddog_server::ServerError>>>,
    runtime: tokio::runtime::Handle,
}

impl EmbeddedServer {
    /// Binds `listen` and starts serving `config` on `runtime`.
    pub fn start(
        runtime: &tokio::runtime::Runtime,
        listen: SocketAddr,
        config: ServerConfig,
    ) -> anyhow::Result<Self> {
        let tls = config.tls.is_some();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(listen))
            .with_context(|| format!("starting the signaling server on {listen}"))?;
        let addr = listener.local_addr().context("the signaling server's address")?;
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let task = runtime.spawn(wilddog_server::run(listener, config, async move {
            let _ = stop_rx.await;
        }));
        Ok(EmbeddedServer {
            addr,
            tls,
            stop: Some(stop_tx),
            task: Some(task),
            runtime: runtime.handle().clone(),
        })
    }

    /// `ws://ADDR/ws` (or `wss://`), what the elements' `server` property takes.
    pub fn ws_url(&self) -> String {
        format!("{}://{}/ws", if self.tls { "wss" } else { "ws" }, self.addr)
    }

    /// `http://ADDR/` (or `https://`): the demo page.
    pub fn http_url(&self) -> String {
        format!("{}://{}/", if self.tls { "https" } else { "http" }, self.addr)
    }

    /// Stops the server, closing its connections (waits a few seconds at most).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let waited = self.runtime.block_on(async {
                tokio::time::timeout(wilddog_server::SHUTDOWN_GRACE + Duration::from_secs(1), task)
                    .await
            });
            match waited {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => tracing::error!("signaling server: {e}"),
                Ok(Err(e)) => tracing::error!("signaling server task: {e}"),
                Err(_) => tracing::warn!("signaling server did not stop in time"),
            }
        }
    }
}

impl Drop for EmbeddedServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
