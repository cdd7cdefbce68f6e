//! HTTP routes: `/ws`, `/healthz`, `/metrics`, the browser SDK (`/sdk/*`, CORS open) and
//! demo page, `/dev/token`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{ConnectInfo, Query, State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use crate::config::DEV_APP_ID;
use crate::server::{READ_BUFFER_BYTES, Shared, serve_socket, stun_host_port};
use crate::token::mint_token;

/// The browser SDK, served at `/sdk/wilddog-video.js`.
const SDK_JS: &str = include_str!("../../../web/wilddog-video.js");
/// Its ES module entry (imports `./wilddog-video.js`), served at `/sdk/wilddog-video.mjs`.
const SDK_MJS: &str = include_str!("../../../web/wilddog-video.mjs");
/// Its TypeScript declarations, served at `/sdk/wilddog-video.d.ts`.
const SDK_DTS: &str = include_str!("../../../web/wilddog-video.d.ts");
/// The demo page, served at `/`.
const INDEX_HTML: &str = include_str!("../../../web/index.html");

/// Lifetime of the tokens `GET /dev/token` hands out.
pub const DEV_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

pub(crate) fn routes(shared: Arc<Shared>) -> axum::Router {
    axum::Router::new()
        .route("/ws", get(websocket))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/", get(|| async { static_file("text/html; charset=utf-8", INDEX_HTML) }))
        .route(
            "/sdk/wilddog-video.js",
            get(|| async { sdk_file("application/javascript; charset=utf-8", SDK_JS) }),
        )
        .route(
            "/sdk/wilddog-video.mjs",
            get(|| async { sdk_file("application/javascript; charset=utf-8", SDK_MJS) }),
        )
        .route(
            "/sdk/wilddog-video.d.ts",
            get(|| async { sdk_file("application/typescript; charset=utf-8", SDK_DTS) }),
        )
        .route("/dev/token", get(dev_token))
        .with_state(shared)
}

fn static_file(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body)
        .into_response()
}

/// An SDK file: static, and loadable by pages of any origin (a page served elsewhere
/// imports the SDK from its signaling server; a module script needs CORS).
fn sdk_file(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        body,
    )
        .into_response()
}

fn host_header(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::HOST).and_then(|h| h.to_str().ok())
}

async fn websocket(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    if shared.draining.load(std::sync::atomic::Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining: connect to another node\n")
            .into_response();
    }
    let stun = stun_host_port(shared.local_addr, host_header(&headers));
    // Frames up to 4x the limit are read and refused with an error frame; larger ones close
    // the socket without being buffered whole.
    // tungstenite checks a frame's announced length against `max_frame_size` as soon as its
    // header is read, before it reserves anything for the payload: a header announcing
    // exabytes is refused at once (1009). `limits.max_frame_bytes` is capped in the config
    // check (`MAX_MAX_FRAME_BYTES`) so that this bound stays small.
    let hard_limit = wilddog_protocol::hard_frame_limit(shared.config.limits.max_frame_bytes);
    let tracker = shared.tracker.clone();
    upgrade
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(0)
        .max_write_buffer_size(hard_limit.saturating_mul(4))
        .max_message_size(hard_limit)
        .max_frame_size(hard_limit)
        .on_upgrade(move |ws| tracker.track_future(serve_socket(ws, shared, peer, stun)))
}

/// `GET /readyz`: 200 while the node takes connections, 503 once it drains (a load
/// balancer stops sending it clients). A node whose Redis is unreachable is ready but says
/// it is degraded: it still routes the calls between its own connections.
async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    if shared.draining.load(std::sync::atomic::Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response();
    }
    match &shared.cluster {
        Some(c) if !c.connected() => "ok (degraded: Redis unreachable)\n".into_response(),
        _ => "ok\n".into_response(),
    }
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        shared.metrics.encode(),
    )
        .into_response()
}

/// Whether `/dev/token` answers `peer`: 404 unless the server runs the development app,
/// 403 unless the peer is on loopback.
fn dev_token_access(development: bool, peer: SocketAddr) -> Result<(), (StatusCode, &'static str)> {
    if !development {
        return Err((StatusCode::NOT_FOUND, "no /dev/token: this server runs configured apps\n"));
    }
    // A server listening on `[::]` sees an IPv4 client as `::ffff:a.b.c.d`: 127.0.0.1 so
    // mapped is loopback too (the demo page opened at http://127.0.0.1:PORT/ signs in).
    if !peer.ip().to_canonical().is_loopback() {
        return Err((StatusCode::FORBIDDEN, "/dev/token answers loopback clients only\n"));
    }
    Ok(())
}

#[derive(Deserialize)]
struct DevTokenQuery {
    uid: Option<String>,
}

/// `GET /dev/token?uid=UID`: a token of the development app, for pages and tools on this
/// machine. Only when the server runs the development app (404 otherwise) and only to a
/// loopback peer (403 otherwise): the development secret is public anyway, but a server
/// someone exposed by mistake should not mint tokens for the network.
async fn dev_token(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(query): Query<DevTokenQuery>,
) -> Response {
    if let Err(refusal) = dev_token_access(shared.config.is_development(), peer) {
        return refusal.into_response();
    }
    let uid = match query.uid {
        Some(uid) if !uid.is_empty() => uid,
        _ => return (StatusCode::BAD_REQUEST, "missing ?uid=\n").into_response(),
    };
    let token = match mint_token(&shared.config, DEV_APP_ID, &uid, DEV_TOKEN_TTL) {
        Ok(token) => token,
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    };
    let scheme = if shared.config.tls.is_some() { "wss" } else { "ws" };
    let host =
        host_header(&headers).map(str::to_owned).unwrap_or_else(|| shared.local_addr.to_string());
    Json(serde_json::json!({
        "appId": DEV_APP_ID,
        "uid": uid,
        "token": token,
        "server": format!("{scheme}://{host}/ws"),
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_token_only_for_the_dev_app_and_loopback_peers() {
        let peer = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(dev_token_access(true, peer("127.0.0.1:5000")).is_ok());
        assert!(dev_token_access(true, peer("127.8.9.10:5000")).is_ok());
        assert!(dev_token_access(true, peer("[::1]:5000")).is_ok());
        assert!(dev_token_access(true, peer("[::ffff:127.0.0.1]:5000")).is_ok());
        for remote in [
            "192.168.1.2:5000",
            "10.0.0.1:1",
            "[2001:db8::1]:5000",
            "0.0.0.0:1",
            "[::ffff:192.168.1.2]:5000",
        ] {
            assert_eq!(dev_token_access(true, peer(remote)).unwrap_err().0, StatusCode::FORBIDDEN);
        }
        assert_eq!(
            dev_token_access(false, peer("127.0.0.1:5000")).unwrap_err().0,
            StatusCode::NOT_FOUND
        );
    }
}
