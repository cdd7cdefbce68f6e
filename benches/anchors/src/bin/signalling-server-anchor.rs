//! The anchor server for the signaling benchmark: gst-plugins-rs's
//! `gst-webrtc-signalling-server` (crate `gst-plugin-webrtc-signalling`), run in-process the
//! way its own binary runs it (plain WebSocket, no TLS), and nothing else.
//!
//! ```text
//! signalling-server-anchor [PORT]    # listens on 127.0.0.1:PORT (default 8443)
//! ```
//!
//! Logging: `WEBRTCSINK_SIGNALLING_SERVER_LOG` as in the original binary, but the default here
//! is `warn`, not `info`: at `info` the original logs every received message, which would
//! measure its logging rather than its relaying (our server is run with `RUST_LOG=warn` too).

use anyhow::Context;
use gst_plugin_webrtc_signalling::handlers::Handler;
use gst_plugin_webrtc_signalling::server::Server;
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let port: u16 = match std::env::args().nth(1) {
        Some(p) => p.parse().context("PORT must be a number")?,
        None => 8443,
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("WEBRTCSINK_SIGNALLING_SERVER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();

    let server = Server::spawn(Handler::new);
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    eprintln!("gst-webrtc-signalling-server listening on {}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let mut server = server.clone();
        tokio::spawn(async move {
            let _ = server.accept_async(stream).await;
        });
    }
}
