//! Helpers of the integration tests: a server on 127.0.0.1 port 0, WebSocket clients.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use wilddog_protocol::{Body, ErrorCode, ServerFrame};
use wilddog_server::{DEV_APP_ID, ServerConfig, mint_token};

pub const WAIT: Duration = Duration::from_secs(10);

/// `TCP_NODELAY` of every socket of this process that is the accepted (server) side of a
/// connection to `port`: found by walking `/proc/self/fd`, so it sees the server's own sockets.
pub fn server_side_nodelay(port: u16) -> Vec<bool> {
    use std::os::fd::{BorrowedFd, RawFd};
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let Ok(fd) = entry.file_name().to_string_lossy().parse::<RawFd>() else { continue };
        // SAFETY: only getsockopt/getsockname/getpeername on the descriptor; one that another
        // test thread closed meanwhile makes those calls fail, which is skipped.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let socket = socket2::SockRef::from(&fd);
        let (Ok(local), Ok(_connected)) = (socket.local_addr(), socket.peer_addr()) else {
            continue;
        };
        if local.as_socket().map(|a| a.port()) == Some(port) {
            found.push(socket.tcp_nodelay().unwrap_or(false));
        }
    }
    found
}

/// Waits until the server side of a connection to `port` exists; asserts each has
/// `TCP_NODELAY` (small frames must not wait for the peer's delayed ACK).
pub async fn assert_server_sockets_nodelay(port: u16) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let found = server_side_nodelay(port);
        if !found.is_empty() {
            assert!(found.iter().all(|n| *n), "TCP_NODELAY of the server's sockets: {found:?}");
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "no accepted socket on port {port}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub config: ServerConfig,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), wilddog_server::ServerError>>>,
}

impl TestServer {
    pub async fn start(config: ServerConfig) -> Self {
        Self::start_on("127.0.0.1:0".parse().unwrap(), config).await
    }

    /// A server on `addr` (e.g. the address of a server that was just shut down).
    pub async fn start_on(addr: SocketAddr, config: ServerConfig) -> Self {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(wilddog_server::run(listener, config.clone(), async move {
            let _ = stopped.await;
        }));
        TestServer { addr, config, stop: Some(stop), task: Some(task) }
    }

    pub async fn dev() -> Self {
        Self::start(ServerConfig::development()).await
    }

    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub fn token(&self, uid: &str) -> String {
        mint_token(&self.config, DEV_APP_ID, uid, Duration::from_secs(600)).unwrap()
    }

    /// A raw socket, not yet authenticated.
    pub async fn open(&self) -> Client {
        Client::open(&self.url()).await
    }

    /// A socket authenticated as `uid` of the dev app (connack 0 checked).
    pub async fn login(&self, uid: &str) -> Client {
        let mut c = self.open().await;
        c.connect(DEV_APP_ID, &self.token(uid)).await;
        c
    }

    /// A socket authenticated as a service endpoint of `uid` (`connect.msg.service`).
    pub async fn login_service(&self, uid: &str) -> Client {
        let mut c = self.open().await;
        c.send_json(json!({"type": "connect", "msg": {
            "token": self.token(uid), "appId": DEV_APP_ID, "clientInfo": {"sdk": "test"},
            "service": true
        }}))
        .await;
        match c.recv().await {
            ServerFrame::Connack { msg, .. } => assert_eq!(msg.code, 0, "{msg:?}"),
            other => panic!("expected connack, got {other:?}"),
        }
        c
    }

    /// Stops the server and waits for `run` to return.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(WAIT, task).await.expect("server stops").unwrap().unwrap();
        }
    }

    pub async fn http_get(&self, path: &str) -> (u16, String, String) {
        http_get(self.addr, path).await
    }

    /// Waits until metric `name` reads `value` (the server's view catches up with a socket
    /// event), failing after [`WAIT`].
    pub async fn wait_metric(&self, name: &str, value: i64) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let now = self.metric(name).await;
            if now == value {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "{name} is {now}, not {value}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn metric(&self, name: &str) -> i64 {
        let (_, _, body) = self.http_get("/metrics").await;
        body.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("metric {name} missing in\n{body}"))
            .trim()
            .parse()
            .unwrap()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A plain HTTP/1.1 GET: (status, head, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut buf)).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).unwrap_or("0").parse().unwrap();
    (status, head.to_owned(), body.to_owned())
}

pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Client {
    pub async fn open(url: &str) -> Self {
        let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        Client { ws }
    }

    /// Ends the TCP connection with a reset, no close frame: a network failure as the
    /// server sees it.
    pub fn abort(self) {
        match self.ws.get_ref() {
            MaybeTlsStream::Plain(tcp) => tcp.set_zero_linger().unwrap(),
            _ => panic!("abort() is for plain TCP clients"),
        }
        drop(self);
    }

    pub async fn send_text(&mut self, text: impl Into<String>) {
        self.ws.send(Message::text(text.into())).await.unwrap();
    }

    pub async fn send_json(&mut self, v: Value) {
        self.send_text(v.to_string()).await;
    }

    /// Sends `connect` and checks connack code 0 with ICE servers.
    pub async fn connect(&mut self, app_id: &str, token: &str) -> wilddog_protocol::Connack {
        let msg = self.connect_code(app_id, token).await;
        assert_eq!(msg.code, 0, "connack {msg:?}");
        assert!(!msg.ice_servers.is_empty());
        msg
    }

    /// Sends `connect`, returns the connack whatever its code.
    pub async fn connect_code(&mut self, app_id: &str, token: &str) -> wilddog_protocol::Connack {
        self.send_json(json!({"type": "connect", "msg": {
            "token": token, "appId": app_id, "clientInfo": {"sdk": "test"}
        }}))
        .await;
        match self.recv().await {
            ServerFrame::Connack { msg, .. } => msg,
            other => panic!("expected connack, got {other:?}"),
        }
    }

    /// The next message, whatever it is (pings skipped).
    pub async fn recv_message(&mut self) -> Option<Message> {
        loop {
            let m = tokio::time::timeout(WAIT, self.ws.next()).await.expect("a message in time");
            match m {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(m)) => return Some(m),
                Some(Err(_)) | None => return None,
            }
        }
    }

    /// The next text frame, parsed.
    pub async fn recv(&mut self) -> ServerFrame {
        match self.recv_message().await {
            Some(Message::Text(t)) => ServerFrame::from_json(&t)
                .unwrap_or_else(|e| panic!("server sent an unreadable frame {t}: {e}")),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    pub async fn recv_json(&mut self) -> Value {
        match self.recv_message().await {
            Some(Message::Text(t)) => serde_json::from_str(&t).unwrap(),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    /// Expects a conversation frame; returns (type, cid, from, body).
    pub async fn recv_conv(&mut self) -> (String, String, String, Body) {
        match self.recv().await {
            ServerFrame::Conversation { cid, from, body } => {
                (body.kind().to_owned(), cid, from, body)
            }
            other => panic!("expected a conversation frame, got {other:?}"),
        }
    }

    /// Expects an error frame with `code`; returns its reason.
    pub async fn recv_error(&mut self, code: ErrorCode) -> String {
        match self.recv().await {
            ServerFrame::Error { msg, .. } => {
                assert_eq!(msg.code, code, "error {msg:?}");
                msg.reason
            }
            other => panic!("expected error {code:?}, got {other:?}"),
        }
    }

    /// Expects an error frame; returns its cid and msg.
    pub async fn recv_error_frame(&mut self) -> (Option<String>, wilddog_protocol::ErrorMsg) {
        match self.recv().await {
            ServerFrame::Error { cid, msg } => (cid, msg),
            other => panic!("expected an error frame, got {other:?}"),
        }
    }

    /// Expects the server to close the socket with `code`; returns the reason.
    pub async fn recv_close(&mut self, code: u16) -> String {
        loop {
            match self.recv_message().await {
                Some(Message::Close(Some(CloseFrame { code: c, reason }))) => {
                    assert_eq!(u16::from(c), code, "close reason {reason}");
                    return reason.to_string();
                }
                Some(Message::Text(_)) => continue,
                other => panic!("expected close {code}, got {other:?}"),
            }
        }
    }

    /// Asserts nothing arrives for `d`.
    pub async fn expect_silence(&mut self, d: Duration) {
        if let Ok(m) = tokio::time::timeout(d, self.ws.next()).await {
            panic!("expected silence, got {m:?}");
        }
    }

    pub async fn call(&mut self, cid: &str, to: &str) {
        self.send_json(json!({"type": "call", "cid": cid, "to": to, "msg": {
            "data": "hello", "iceServers": [{"url": "stun:x", "urls": "stun:x"}]
        }}))
        .await;
    }

    pub async fn say(&mut self, kind: &str, cid: &str, to: &str, msg: Value) {
        self.send_json(json!({"type": kind, "cid": cid, "to": to, "msg": msg})).await;
    }
}
