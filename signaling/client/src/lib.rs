//! Async WebSocket client of the Wilddog signaling protocol.
//!
//! [`Client::connect`] opens the socket (`ws://` or `wss://`), sends `connect` and resolves
//! after the first good `connack`. A task on the current tokio runtime then owns the socket:
//! it sends the frames given to [`Client::send`], a heartbeat (a bare increasing number)
//! every [`ClientConfig::heartbeat_interval`], and delivers what the server sends as
//! [`ClientEvent`]s. When the socket is lost it reconnects with [`Backoff`] (if
//! [`ClientConfig::reconnect`]), queueing the frames sent meanwhile and sending them after
//! the next good `connack`; a `connack` carrying a top-level `url` makes it reconnect to that
//! address at once.
//!
//! A frame larger than the server takes (`connack.msg.maxFrameBytes`, our server's
//! extension; [`DEFAULT_FRAME_LIMIT`] from a server that does not say) is not sent: the
//! server would refuse it (`too_large`), or close the socket (1009) on one over 4 times its
//! limit, and the client would reconnect. The client delivers instead, at once, the error
//! frame the server gives a frame over its limit, [`ServerFrame::Error`] with
//! [`ErrorCode::TooLarge`] naming the frame's `cid` and `type`: a `call` whose user data is too
//! large ends at once (the call state machine closes it, `refused`), and the connection
//! stays up.
//!
//! A socket that dies silently (a dead Wi-Fi, a NAT that forgot the connection: no FIN, no
//! reset) is noticed by a liveness check: a WebSocket ping every
//! [`ClientConfig::ping_interval`] that the server must answer (a pong, or any frame) within
//! [`ClientConfig::pong_timeout`], and a deadline of the same length on every write. A socket
//! that misses it is dropped as lost, and the client reconnects.
//!
//! Events come in this order: [`ClientEvent::Connected`] first (the `connack` that
//! [`Client::connect`] waited for), then frames; after a lost socket
//! [`ClientEvent::Disconnected`], then [`ClientEvent::Connected`] again after a reconnect
//! (feed it to the call state machine, which restarts ICE). The event stream ends after
//! `Disconnected { will_retry: false, .. }`, after [`ClientEvent::Error`] (the server
//! refused a reconnect's token: the client gives up), or after [`Client::close`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), wilddog_client::ClientError> {
//! use wilddog_client::{Client, ClientConfig, ClientEvent};
//! let config = ClientConfig::new("ws://127.0.0.1:8080/ws", "app", "token");
//! let (client, mut events, _ice_servers) = Client::connect(config).await?;
//! while let Some(event) = events.recv().await {
//!     if let ClientEvent::Frame(frame) = event {
//!         println!("{}", frame.to_json());
//!     }
//! }
//! client.close().await;
//! # Ok(()) }
//! ```

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use wilddog_protocol::{Connack, Connect, ErrorMsg, connack_code};

pub use wilddog_protocol::{ClientFrame, ErrorCode, IceServer, ServerFrame};

/// The original's heartbeat period.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(30);
/// How long opening the socket and waiting for `connack` may take, per attempt.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the client pings the server to check that the socket is alive.
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(5);
/// How long the server may take to answer a ping (or a write may take) before the socket
/// counts as lost.
pub const DEFAULT_PONG_TIMEOUT: Duration = Duration::from_secs(3);
/// How many `connack` redirects (`url`) one connection attempt follows.
pub const MAX_REDIRECTS: usize = 5;
/// The largest frame sent to a server whose `connack` does not say how large a frame it
/// takes (`maxFrameBytes`): our server's default hard limit (1 MiB), over which it closes
/// the socket. Smaller frames over that server's own limit get its `too_large` error.
pub const DEFAULT_FRAME_LIMIT: usize =
    wilddog_protocol::hard_frame_limit(wilddog_protocol::DEFAULT_MAX_FRAME_BYTES);

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Delays between reconnection attempts: `initial × factor^attempt`, at most `max`, less a
/// random part of up to `jitter` of it (so that clients dropped together do not come back
/// together). The default is the original's: 1 s, ×1.3, up to 30 s, jitter 0.3.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// The first delay.
    pub initial: Duration,
    /// Growth per attempt (values below 1 count as 1).
    pub factor: f64,
    /// The largest delay.
    pub max: Duration,
    /// Fraction of the delay, 0 to 1, that may be taken off at random.
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_secs(1),
            factor: 1.3,
            max: Duration::from_secs(30),
            jitter: 0.3,
        }
    }
}

impl Backoff {
    /// The delay before attempt `attempt` (0 for the first), `random` in `[0, 1)` choosing
    /// the jitter.
    pub fn delay(&self, attempt: u32, random: f64) -> Duration {
        let exponent = i32::try_from(attempt).unwrap_or(i32::MAX);
        let grown = self.initial.as_secs_f64() * self.factor.max(1.0).powi(exponent);
        let capped = grown.min(self.max.as_secs_f64());
        let taken_off = self.jitter.clamp(0.0, 1.0) * random.clamp(0.0, 1.0);
        Duration::try_from_secs_f64(capped * (1.0 - taken_off)).unwrap_or(self.max)
    }
}

/// How to reach and authenticate with the signaling server.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// WebSocket URL, `ws://host:port/ws` or `wss://host:port/ws`.
    pub server: String,
    /// The app id (`connect.msg.appId`).
    pub app_id: String,
    /// The token proving the uid (`connect.msg.token`).
    pub token: String,
    /// `connect.msg.clientInfo`: SDK name, version, platform.
    pub client_info: Value,
    /// Heartbeat period; 30 s by default.
    pub heartbeat_interval: Duration,
    /// Reconnect when the socket is lost (true by default).
    pub reconnect: bool,
    /// Delays between reconnection attempts.
    pub backoff: Backoff,
    /// Time allowed to open the socket and get `connack`, per attempt; 10 s by default.
    pub connect_timeout: Duration,
    /// Liveness check: a WebSocket ping this often; 5 s by default.
    pub ping_interval: Duration,
    /// Liveness check: the time the server has to answer a ping (with a pong or any frame),
    /// and the longest a write may block, before the socket counts as lost; 3 s by default.
    pub pong_timeout: Duration,
    /// PEM text of root certificates to trust for `wss://` besides the public web roots
    /// (e.g. a private or test CA).
    pub root_ca_pem: Option<String>,
    /// The TLS client for `wss://`, made by the caller (its own roots and verifier: the
    /// GStreamer element's trust the system's roots and `server-ca-file`); when set,
    /// [`ClientConfig::root_ca_pem`] is not used. Unset by default.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Connect as one service endpoint of a pool serving this uid (`connect.msg.service`,
    /// sent on every connect and reconnect): a call to the uid rings one free service
    /// endpoint instead of every connection, and the server answers BUSY when all are busy.
    /// False by default.
    pub service: bool,
}

impl ClientConfig {
    /// A configuration with the defaults, for `server`, `app_id` and `token`.
    pub fn new(
        server: impl Into<String>,
        app_id: impl Into<String>,
        token: impl Into<String>,
    ) -> Self {
        ClientConfig {
            server: server.into(),
            app_id: app_id.into(),
            token: token.into(),
            ..ClientConfig::default()
        }
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            server: String::new(),
            app_id: String::new(),
            token: String::new(),
            client_info: serde_json::json!({
                "sdk": "wilddog-client",
                "version": env!("CARGO_PKG_VERSION"),
            }),
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            reconnect: true,
            backoff: Backoff::default(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            ping_interval: DEFAULT_PING_INTERVAL,
            pong_timeout: DEFAULT_PONG_TIMEOUT,
            root_ca_pem: None,
            tls: None,
            service: false,
        }
    }
}

/// Why the client could not connect, or gave up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The server address is not a usable WebSocket URL.
    #[error("invalid server url: {0}")]
    InvalidUrl(String),
    /// The socket could not be opened, or closed before `connack`, or timed out.
    #[error("cannot connect to the signaling server: {0}")]
    Connect(String),
    /// TLS set-up or handshake failed.
    #[error("TLS: {0}")]
    Tls(String),
    /// `connack` code 1 (41002 TOKEN_INVALID).
    #[error("the server refused the token (41002 TOKEN_INVALID)")]
    TokenInvalid,
    /// `connack` code 1 with `appIdInvalid`: the app id is not an app of the server (41008
    /// APPID_INVALID).
    #[error("the server has no app of this app id (41008 APPID_INVALID)")]
    AppIdInvalid,
    /// `connack` code 2 (41001 TOKEN_EXPIRED).
    #[error("the token has expired (41001 TOKEN_EXPIRED)")]
    TokenExpired,
    /// `connack` with a code this client does not know.
    #[error("the server refused the connection with connack code {0}")]
    Refused(i64),
    /// More than [`MAX_REDIRECTS`] `connack` redirects in a row.
    #[error("too many redirects")]
    TooManyRedirects,
    /// The client was closed, or gave up.
    #[error("the client is closed")]
    Closed,
}

impl ClientError {
    /// The original's error code for this error (41001, 41002, 41008), if it has one.
    pub fn wilddog_code(&self) -> Option<u32> {
        match self {
            ClientError::TokenExpired => Some(41001),
            ClientError::TokenInvalid => Some(41002),
            ClientError::AppIdInvalid => Some(41008),
            _ => None,
        }
    }

    /// Whether trying again cannot help (the server refused the credentials, or the address
    /// is not a WebSocket URL). TLS errors are not fatal: a server's certificate can be fixed
    /// while the media of a call goes on.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            ClientError::TokenInvalid
                | ClientError::AppIdInvalid
                | ClientError::TokenExpired
                | ClientError::Refused(_)
                | ClientError::InvalidUrl(_)
                | ClientError::TooManyRedirects
        )
    }
}

/// What the connection delivers.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientEvent {
    /// A good `connack`: the first one, and one after every reconnect.
    Connected {
        /// Its ICE servers.
        ice_servers: Vec<IceServer>,
    },
    /// A frame from the server (never `connack`); or, for a frame given to [`Client::send`]
    /// that is over the server's frame limit and was not sent, the error the server gives
    /// such a frame: [`ServerFrame::Error`], [`ErrorCode::TooLarge`], the frame's `cid` and
    /// `type` (`ref`).
    Frame(ServerFrame),
    /// The socket was lost.
    Disconnected {
        /// What happened.
        reason: String,
        /// Whether the client is reconnecting.
        will_retry: bool,
    },
    /// The client gave up reconnecting: the server refused the token (or the address).
    /// The stream ends after it.
    Error(ClientError),
}

enum Command {
    Send(ClientFrame),
    Close(oneshot::Sender<()>),
}

#[derive(Debug)]
struct Shared {
    commands: mpsc::UnboundedSender<Command>,
    closed: AtomicBool,
}

/// A connection to the signaling server; a cheap handle to clone. The connection ends
/// when [`Client::close`] is called or every handle is dropped.
#[derive(Debug, Clone)]
pub struct Client {
    shared: Arc<Shared>,
}

impl Client {
    /// Connects and authenticates; resolves after the first good `connack` with the client,
    /// its events (the first is [`ClientEvent::Connected`]) and the `connack`'s ICE servers.
    /// Fails with [`ClientError::TokenInvalid`] / [`ClientError::TokenExpired`] for `connack`
    /// codes 1 / 2, [`ClientError::Connect`] for an unreachable server. Must be called
    /// within a tokio runtime (the connection's task is spawned on it).
    pub async fn connect(
        config: ClientConfig,
    ) -> Result<(Client, mpsc::UnboundedReceiver<ClientEvent>, Vec<IceServer>), ClientError> {
        let tls = match &config.tls {
            Some(tls) => tls.clone(),
            None => tls_config(&config)?,
        };
        let (socket, url, welcome) = establish(&config, &tls, config.server.clone()).await?;
        let Welcome { ice_servers, frame_limit } = welcome;
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (commands_tx, commands_rx) = mpsc::unbounded_channel();
        let _ = events_tx.send(ClientEvent::Connected { ice_servers: ice_servers.clone() });
        let task = Task {
            config,
            tls,
            url,
            events: events_tx,
            commands: commands_rx,
            queue: VecDeque::new(),
            heartbeat: 0,
            frame_limit,
        };
        tokio::spawn(task.run(socket));
        let shared = Arc::new(Shared { commands: commands_tx, closed: AtomicBool::new(false) });
        Ok((Client { shared }, events_rx, ice_servers))
    }

    /// Sends a frame without waiting. While the client reconnects, frames are queued and sent
    /// after the next good `connack`. A frame over the server's frame limit is not sent: the
    /// events get the server's `too_large` error for it instead (see [`ClientEvent::Frame`]).
    /// Fails with [`ClientError::Closed`] after [`Client::close`] or once the client gave up.
    pub fn send(&self, frame: ClientFrame) -> Result<(), ClientError> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(ClientError::Closed);
        }
        self.shared.commands.send(Command::Send(frame)).map_err(|_| ClientError::Closed)
    }

    /// Sends a WebSocket close frame and stops reconnecting; resolves when the connection's
    /// task has ended. Frames sent before are sent first (if connected).
    pub async fn close(&self) {
        self.shared.closed.store(true, Ordering::Release);
        let (done_tx, done_rx) = oneshot::channel();
        if self.shared.commands.send(Command::Close(done_tx)).is_ok() {
            let _ = done_rx.await;
        }
    }

    /// Whether [`Client::close`] was called, or the connection's task has ended.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire) || self.shared.commands.is_closed()
    }
}

/// The TLS set-up for `wss://`: the public web roots plus [`ClientConfig::root_ca_pem`],
/// with the ring provider.
fn tls_config(config: &ClientConfig) -> Result<Arc<rustls::ClientConfig>, ClientError> {
    let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    if let Some(pem) = &config.root_ca_pem {
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            let cert = cert.map_err(|e| ClientError::Tls(format!("bad root CA PEM: {e}")))?;
            roots.add(cert).map_err(|e| ClientError::Tls(format!("bad root CA: {e}")))?;
            added += 1;
        }
        if added == 0 {
            return Err(ClientError::Tls("no certificate in the root CA PEM".into()));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(tls))
}

/// What a good `connack` said.
struct Welcome {
    /// Its ICE servers.
    ice_servers: Vec<IceServer>,
    /// The largest frame this server takes, in bytes.
    frame_limit: usize,
}

impl Welcome {
    fn new(connack: Connack) -> Welcome {
        // The server's word (our extension), else the default server's hard limit.
        let frame_limit = connack
            .max_frame_bytes
            .map_or(DEFAULT_FRAME_LIMIT, |n| usize::try_from(n).unwrap_or(usize::MAX));
        Welcome { ice_servers: connack.ice_servers, frame_limit }
    }
}

/// What one attempt's `connack` said.
enum Handshake {
    Accepted(Box<Socket>, Welcome),
    Redirect(String),
}

/// Connects to `url`, following redirects; the socket, the URL it ended at, and what its
/// `connack` said.
async fn establish(
    config: &ClientConfig,
    tls: &Arc<rustls::ClientConfig>,
    mut url: String,
) -> Result<(Socket, String, Welcome), ClientError> {
    for _ in 0..=MAX_REDIRECTS {
        check_url(&url)?;
        let attempt = tokio::time::timeout(config.connect_timeout, handshake(config, tls, &url));
        match attempt.await {
            Err(_) => {
                return Err(ClientError::Connect(format!(
                    "{url}: no connack within {:?}",
                    config.connect_timeout
                )));
            }
            Ok(Err(e)) => return Err(e),
            Ok(Ok(Handshake::Accepted(socket, welcome))) => {
                return Ok((*socket, url, welcome));
            }
            Ok(Ok(Handshake::Redirect(to))) => {
                tracing::info!(from = %url, to = %to, "signaling server redirects");
                url = to;
            }
        }
    }
    Err(ClientError::TooManyRedirects)
}

/// Refuses what is not a `ws://` or `wss://` URL before any connection attempt.
fn check_url(url: &str) -> Result<(), ClientError> {
    let scheme = url.split_once("://").map(|(scheme, _)| scheme.to_ascii_lowercase());
    match scheme.as_deref() {
        Some("ws" | "wss") => Ok(()),
        _ => Err(ClientError::InvalidUrl(format!("{url}: not a ws:// or wss:// URL"))),
    }
}

fn connect_error(url: &str, error: tungstenite::Error) -> ClientError {
    match error {
        tungstenite::Error::Url(e) => ClientError::InvalidUrl(format!("{url}: {e}")),
        tungstenite::Error::Tls(e) => ClientError::Tls(format!("{url}: {e}")),
        tungstenite::Error::Io(e)
            if e.get_ref().is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some()) =>
        {
            ClientError::Tls(format!("{url}: {e}"))
        }
        e => ClientError::Connect(format!("{url}: {e}")),
    }
}

/// Opens the socket, sends `connect` and reads up to `connack`.
async fn handshake(
    config: &ClientConfig,
    tls: &Arc<rustls::ClientConfig>,
    url: &str,
) -> Result<Handshake, ClientError> {
    let connector = Some(Connector::Rustls(tls.clone()));
    let (mut socket, _) =
        tokio_tungstenite::connect_async_tls_with_config(url, None, true, connector)
            .await
            .map_err(|e| connect_error(url, e))?;
    let connect = ClientFrame::Connect(Connect {
        token: config.token.clone(),
        app_id: config.app_id.clone(),
        client_info: config.client_info.clone(),
        service: config.service,
        ..Connect::default()
    });
    socket.send(Message::text(connect.to_json())).await.map_err(|e| connect_error(url, e))?;
    loop {
        let text = match socket.next().await {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(close))) => {
                let why = close.map(|c| c.reason.to_string()).unwrap_or_default();
                return Err(ClientError::Connect(format!("{url}: closed before connack {why}")));
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(connect_error(url, e)),
            None => return Err(ClientError::Connect(format!("{url}: closed before connack"))),
        };
        match ServerFrame::from_json(&text) {
            Ok(ServerFrame::Connack { url: Some(to), .. }) => {
                let _ = socket.close(None).await;
                return Ok(Handshake::Redirect(to));
            }
            Ok(ServerFrame::Connack { url: None, msg }) => {
                return match msg.code {
                    connack_code::OK => {
                        Ok(Handshake::Accepted(Box::new(socket), Welcome::new(msg)))
                    }
                    connack_code::TOKEN_INVALID if msg.app_id_invalid => {
                        Err(ClientError::AppIdInvalid)
                    }
                    connack_code::TOKEN_INVALID => Err(ClientError::TokenInvalid),
                    connack_code::TOKEN_EXPIRED => Err(ClientError::TokenExpired),
                    code => Err(ClientError::Refused(code)),
                };
            }
            Ok(other) => tracing::debug!(kind = other.kind(), "frame before connack ignored"),
            Err(e) => tracing::warn!(error = %e, "unreadable frame before connack ignored"),
        }
    }
}

/// How a connected phase ended.
enum Ended {
    /// Closed on purpose: stop.
    Closed,
    /// The socket was lost: reconnect after a delay.
    Lost(String),
    /// The server told us to reconnect elsewhere: at once.
    Redirected(String),
}

/// The connection's task.
struct Task {
    config: ClientConfig,
    tls: Arc<rustls::ClientConfig>,
    /// Where to (re)connect.
    url: String,
    events: mpsc::UnboundedSender<ClientEvent>,
    commands: mpsc::UnboundedReceiver<Command>,
    /// Frames waiting for a connection.
    queue: VecDeque<ClientFrame>,
    /// The next heartbeat number.
    heartbeat: u64,
    /// The largest frame the server takes (its last `connack`'s `maxFrameBytes`).
    frame_limit: usize,
}

impl Task {
    fn emit(&self, event: ClientEvent) {
        // Nobody listening is fine: the connection still serves `send`.
        let _ = self.events.send(event);
    }

    async fn run(mut self, socket: Socket) {
        let mut socket = socket;
        loop {
            let (reason, at_once) = match self.serve(&mut socket).await {
                Ended::Closed => return,
                Ended::Lost(reason) => (reason, false),
                Ended::Redirected(to) => {
                    let reason = format!("redirected to {to}");
                    self.url = to;
                    (reason, true)
                }
            };
            tracing::info!(%reason, "signaling connection lost");
            let will_retry = self.config.reconnect || at_once;
            self.emit(ClientEvent::Disconnected { reason, will_retry });
            if !will_retry {
                return;
            }
            match self.reconnect(at_once).await {
                Some(new_socket) => socket = new_socket,
                None => return,
            }
        }
    }

    /// The text of `frame`; `None` when it is over the server's frame limit: it is not sent,
    /// and the events get the error the server gives such a frame, naming its `cid` and
    /// `type` (a `call` sent would be refused with it, or close the socket with 1009).
    fn encode(&self, frame: &ClientFrame) -> Option<String> {
        let text = frame.to_json();
        if text.len() <= self.frame_limit {
            return Some(text);
        }
        let reason = format!(
            "frame of {} bytes is over the limit of {} bytes (not sent)",
            text.len(),
            self.frame_limit
        );
        tracing::warn!(kind = frame.kind(), cid = ?frame.cid(), "{reason}");
        self.emit(ClientEvent::Frame(ServerFrame::Error {
            cid: frame.cid().map(str::to_owned),
            msg: ErrorMsg {
                code: ErrorCode::TooLarge,
                reason,
                refers_to: Some(frame.kind().to_owned()),
            },
        }));
        None
    }

    /// Sends one message within [`ClientConfig::pong_timeout`]: a write that blocks longer
    /// (the peer stopped reading, the path is gone) means the socket is lost.
    async fn write(&self, socket: &mut Socket, message: Message) -> Result<(), String> {
        match tokio::time::timeout(self.config.pong_timeout, socket.send(message)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("a write blocked for {:?}", self.config.pong_timeout)),
        }
    }

    /// Serves one connection until it ends.
    async fn serve(&mut self, socket: &mut Socket) -> Ended {
        while let Some(frame) = self.queue.pop_front() {
            let Some(text) = self.encode(&frame) else { continue };
            if let Err(e) = self.write(socket, Message::text(text)).await {
                self.queue.push_front(frame);
                return Ended::Lost(e);
            }
        }
        let now = tokio::time::Instant::now();
        let period = self.config.heartbeat_interval.max(Duration::from_millis(1));
        let mut heartbeat = tokio::time::interval_at(now + period, period);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let ping_period = self.config.ping_interval.max(Duration::from_millis(1));
        let mut ping = tokio::time::interval_at(now + ping_period, ping_period);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // When the unanswered ping's time is up.
        let mut pong_due: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                command = self.commands.recv() => match command {
                    Some(Command::Send(frame)) => {
                        let Some(text) = self.encode(&frame) else { continue };
                        if let Err(e) = self.write(socket, Message::text(text)).await {
                            self.queue.push_back(frame);
                            return Ended::Lost(e);
                        }
                    }
                    Some(Command::Close(done)) => {
                        let _ = tokio::time::timeout(self.config.pong_timeout, socket.close(None)).await;
                        let _ = done.send(());
                        return Ended::Closed;
                    }
                    None => {
                        let _ = tokio::time::timeout(self.config.pong_timeout, socket.close(None)).await;
                        return Ended::Closed;
                    }
                },
                message = socket.next() => {
                    // Anything from the server shows that the socket is alive.
                    pong_due = None;
                    match message {
                        Some(Ok(Message::Text(text))) => match ServerFrame::from_json(&text) {
                            Ok(ServerFrame::Connack { url: Some(to), .. }) => {
                                let _ = tokio::time::timeout(self.config.pong_timeout, socket.close(None)).await;
                                return Ended::Redirected(to);
                            }
                            Ok(ServerFrame::Connack { .. }) => {
                                tracing::debug!("connack after connack ignored");
                            }
                            Ok(frame) => self.emit(ClientEvent::Frame(frame)),
                            Err(e) => tracing::warn!(error = %e, "unreadable frame ignored"),
                        },
                        Some(Ok(Message::Close(close))) => {
                            let why = close.map(|c| format!(" ({} {})", c.code, c.reason));
                            return Ended::Lost(format!("server closed the socket{}", why.unwrap_or_default()));
                        }
                        Some(Ok(_)) => {}
                        Some(Err(e)) => return Ended::Lost(e.to_string()),
                        None => return Ended::Lost("socket ended".into()),
                    }
                }
                _ = heartbeat.tick() => {
                    let beat = ClientFrame::Heartbeat(self.heartbeat);
                    self.heartbeat += 1;
                    if let Err(e) = self.write(socket, Message::text(beat.to_json())).await {
                        return Ended::Lost(e);
                    }
                }
                _ = ping.tick() => {
                    if pong_due.is_none() {
                        pong_due = Some(tokio::time::Instant::now() + self.config.pong_timeout);
                        if let Err(e) = self.write(socket, Message::Ping(Default::default())).await {
                            return Ended::Lost(e);
                        }
                    }
                }
                _ = sleep_opt(pong_due) => {
                    return Ended::Lost(format!(
                        "no answer to a ping within {:?} (a half-open socket)",
                        self.config.pong_timeout
                    ));
                }
            }
        }
    }

    /// Takes commands while waiting: frames are queued; `None` means stop.
    fn take_command(&mut self, command: Option<Command>) -> Option<()> {
        match command {
            Some(Command::Send(frame)) => {
                self.queue.push_back(frame);
                Some(())
            }
            Some(Command::Close(done)) => {
                let _ = done.send(());
                None
            }
            None => None,
        }
    }

    /// Reconnects with backoff; `None` if closed meanwhile or the server refused us.
    async fn reconnect(&mut self, at_once: bool) -> Option<Socket> {
        let mut attempt: u32 = 0;
        loop {
            let delay = if at_once && attempt == 0 {
                Duration::ZERO
            } else {
                self.config.backoff.delay(attempt, rand::random::<f64>())
            };
            let sleep = tokio::time::sleep(delay);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    _ = &mut sleep => break,
                    command = self.commands.recv() => self.take_command(command)?,
                }
            }
            let config = self.config.clone();
            let tls = self.tls.clone();
            let url = self.url.clone();
            let connecting = establish(&config, &tls, url);
            tokio::pin!(connecting);
            let result = loop {
                tokio::select! {
                    result = &mut connecting => break result,
                    command = self.commands.recv() => self.take_command(command)?,
                }
            };
            match result {
                Ok((socket, url, welcome)) => {
                    tracing::info!(%url, "signaling connection back");
                    self.url = url;
                    self.frame_limit = welcome.frame_limit;
                    self.emit(ClientEvent::Connected { ice_servers: welcome.ice_servers });
                    return Some(socket);
                }
                Err(e) if e.is_fatal() => {
                    tracing::warn!(error = %e, "reconnection refused; giving up");
                    self.emit(ClientEvent::Error(e));
                    return None;
                }
                Err(e) => {
                    tracing::debug!(error = %e, attempt, "reconnection failed");
                    attempt = attempt.saturating_add(1);
                }
            }
        }
    }
}

async fn sleep_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
