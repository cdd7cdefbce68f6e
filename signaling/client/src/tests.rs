//! The client against small WebSocket servers written in the tests, on 127.0.0.1 port 0.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use wilddog_protocol::{Body, Empty};

use super::*;

/// Longest wait for anything that should happen.
const PATIENCE: Duration = Duration::from_secs(5);

/// One accepted server-side socket (plain or TLS).
trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

type ServerSocket = WebSocketStream<Box<dyn Io>>;

/// A WebSocket server on 127.0.0.1 port 0 that hands each accepted socket to the test.
struct TestServer {
    url: String,
    sockets: mpsc::UnboundedReceiver<ServerSocket>,
}

impl TestServer {
    async fn start() -> TestServer {
        TestServer::start_with_tls(None).await
    }

    async fn start_with_tls(tls: Option<tokio_rustls::TlsAcceptor>) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let url = match tls {
            Some(_) => format!("wss://localhost:{port}/ws"),
            None => format!("ws://127.0.0.1:{port}/ws"),
        };
        let (tx, sockets) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let io: Box<dyn Io> = match &tls {
                    Some(acceptor) => match acceptor.accept(tcp).await {
                        Ok(stream) => Box::new(stream),
                        Err(_) => continue,
                    },
                    None => Box::new(tcp),
                };
                if let Ok(ws) = tokio_tungstenite::accept_async(io).await
                    && tx.send(ws).is_err()
                {
                    return;
                }
            }
        });
        TestServer { url, sockets }
    }

    async fn next_socket(&mut self) -> ServerSocket {
        tokio::time::timeout(PATIENCE, self.sockets.recv())
            .await
            .expect("the client connects in time")
            .expect("server running")
    }

    /// Accepts the next socket, checks its `connect`, answers `connack` with `code`.
    async fn accept(&mut self, code: i64) -> (ServerSocket, Value) {
        let mut ws = self.next_socket().await;
        let connect = read_json(&mut ws).await;
        assert_eq!(connect["type"], "connect", "first frame is connect: {connect}");
        send_json(&mut ws, connack(code, "stun:127.0.0.1:3478")).await;
        (ws, connect)
    }
}

/// A client connected to `server` (its `connect` accepted, code 0) with the default test
/// config, its events read past `Connected`, and the server's side of its socket.
async fn connected(
    server: &mut TestServer,
) -> (Client, mpsc::UnboundedReceiver<ClientEvent>, ServerSocket) {
    let connecting = tokio::spawn(Client::connect(config(&server.url)));
    let (ws, _) = server.accept(0).await;
    let (client, mut events, _) = connecting.await.unwrap().unwrap();
    assert!(matches!(next_event(&mut events).await, Some(ClientEvent::Connected { .. })));
    (client, events, ws)
}

fn connack(code: i64, stun: &str) -> Value {
    json!({"type": "connack", "msg": {"code": code, "stopped": false,
        "iceServers": [{"url": stun, "urls": [stun], "type": "stun"}]}})
}

async fn read_text(ws: &mut ServerSocket) -> Option<String> {
    loop {
        match tokio::time::timeout(PATIENCE, ws.next()).await.expect("a frame in time") {
            Some(Ok(Message::Text(text))) => return Some(text.to_string()),
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
            Some(Ok(_)) => {}
        }
    }
}

async fn read_json(ws: &mut ServerSocket) -> Value {
    let text = read_text(ws).await.expect("a text frame");
    serde_json::from_str(&text).expect("JSON")
}

async fn send_json(ws: &mut ServerSocket, value: Value) {
    ws.send(Message::text(value.to_string())).await.unwrap();
}

async fn next_event(events: &mut mpsc::UnboundedReceiver<ClientEvent>) -> Option<ClientEvent> {
    tokio::time::timeout(PATIENCE, events.recv()).await.expect("an event in time")
}

fn config(url: &str) -> ClientConfig {
    ClientConfig {
        backoff: Backoff {
            initial: Duration::from_millis(20),
            factor: 1.3,
            max: Duration::from_millis(200),
            jitter: 0.3,
        },
        ..ClientConfig::new(url, "app1", "tok-alice")
    }
}

fn bye(cid: &str, to: &str) -> ClientFrame {
    ClientFrame::Conversation { cid: cid.into(), to: to.into(), body: Body::Bye(Empty::default()) }
}

fn stun_urls(servers: &[IceServer]) -> Vec<String> {
    servers.iter().flat_map(IceServer::all_urls).collect()
}

#[tokio::test]
async fn connects_sends_and_receives() {
    let mut server = TestServer::start().await;
    let url = server.url.clone();
    let connecting = tokio::spawn(Client::connect(config(&url)));
    let (mut ws, connect) = server.accept(0).await;
    assert_eq!(connect["msg"]["token"], "tok-alice");
    assert_eq!(connect["msg"]["appId"], "app1");
    assert_eq!(connect["msg"]["clientInfo"]["sdk"], "wilddog-client");

    let (client, mut events, ice_servers) = connecting.await.unwrap().unwrap();
    assert_eq!(stun_urls(&ice_servers), ["stun:127.0.0.1:3478"]);
    assert_eq!(next_event(&mut events).await, Some(ClientEvent::Connected { ice_servers }));

    client.send(bye("cid1", "bob")).unwrap();
    let frame = read_json(&mut ws).await;
    assert_eq!(frame, json!({"type": "bye", "cid": "cid1", "to": "bob", "msg": {}}));

    send_json(&mut ws, json!({"type": "accept", "cid": "cid1", "from": "bob", "msg": {}})).await;
    // Unreadable text is skipped, not fatal.
    ws.send(Message::text("{not json")).await.unwrap();
    send_json(&mut ws, json!({"type": "bye", "cid": "cid1", "from": "bob", "msg": {}})).await;
    let Some(ClientEvent::Frame(first)) = next_event(&mut events).await else { panic!() };
    assert_eq!(first.kind(), "accept");
    let Some(ClientEvent::Frame(second)) = next_event(&mut events).await else { panic!() };
    assert_eq!(second.kind(), "bye");
    assert!(!client.is_closed());
}

/// A `call` to `to` whose user data is `len` characters.
fn call_with_data(cid: &str, to: &str, len: usize) -> ClientFrame {
    let msg = wilddog_protocol::CallMsg {
        data: Some(Value::String("x".repeat(len))),
        ..Default::default()
    };
    ClientFrame::Conversation { cid: cid.into(), to: to.into(), body: Body::Call(msg) }
}

/// Expects the error the server gives a frame over its limit, for a `call` of `cid`.
fn assert_too_large(event: Option<ClientEvent>, cid: &str, limit: usize) {
    let Some(ClientEvent::Frame(ServerFrame::Error { cid: got, msg })) = event else {
        panic!("expected the too_large error, got {event:?}");
    };
    assert_eq!(got.as_deref(), Some(cid));
    assert_eq!(msg.code, ErrorCode::TooLarge, "{msg:?}");
    assert_eq!(msg.refers_to.as_deref(), Some("call"));
    assert!(msg.reason.contains(&format!("over the limit of {limit} bytes")), "{msg:?}");
}

#[tokio::test]
async fn a_frame_over_the_announced_limit_is_refused_without_being_sent() {
    let mut server = TestServer::start().await;
    let connecting = tokio::spawn(Client::connect(config(&server.url)));
    let mut ws = server.next_socket().await;
    read_json(&mut ws).await;
    let mut ack = connack(0, "stun:127.0.0.1:3478");
    ack["msg"]["maxFrameBytes"] = json!(2000);
    send_json(&mut ws, ack).await;
    let (client, mut events, _) = connecting.await.unwrap().unwrap();
    assert!(matches!(next_event(&mut events).await, Some(ClientEvent::Connected { .. })));

    client.send(call_with_data("big", "bob", 3000)).unwrap();
    assert_too_large(next_event(&mut events).await, "big", 2000);
    // The socket is untouched: the next frame is the first the server reads.
    client.send(call_with_data("small", "bob", 100)).unwrap();
    assert_eq!(read_json(&mut ws).await["cid"], "small");
    assert!(tokio::time::timeout(Duration::from_millis(100), events.recv()).await.is_err());
    assert!(!client.is_closed());
}

#[tokio::test]
async fn without_an_announced_limit_the_default_servers_hard_limit_applies() {
    let mut server = TestServer::start().await;
    let (client, mut events, mut ws) = connected(&mut server).await;

    assert_eq!(DEFAULT_FRAME_LIMIT, 1024 * 1024);
    client.send(call_with_data("huge", "bob", DEFAULT_FRAME_LIMIT)).unwrap();
    assert_too_large(next_event(&mut events).await, "huge", DEFAULT_FRAME_LIMIT);
    // Under it, the frame goes: the server decides (ours answers too_large over its limit).
    client.send(call_with_data("large", "bob", 300_000)).unwrap();
    assert_eq!(read_json(&mut ws).await["cid"], "large");
}

#[tokio::test]
async fn a_frame_queued_while_reconnecting_is_held_to_the_new_connacks_limit() {
    let mut server = TestServer::start().await;
    let (client, mut events, ws) = connected(&mut server).await;
    drop(ws);
    assert!(matches!(next_event(&mut events).await, Some(ClientEvent::Disconnected { .. })));
    client.send(call_with_data("queued", "bob", 5000)).unwrap();
    client.send(bye("after", "bob")).unwrap();
    let mut ws = server.next_socket().await;
    read_json(&mut ws).await;
    let mut ack = connack(0, "stun:127.0.0.1:3478");
    ack["msg"]["maxFrameBytes"] = json!(4096);
    send_json(&mut ws, ack).await;
    assert_eq!(read_json(&mut ws).await["cid"], "after");
    let mut seen = vec![next_event(&mut events).await, next_event(&mut events).await];
    // The refusal and Connected, in either order.
    let at = seen.iter().position(|e| matches!(e, Some(ClientEvent::Frame(_)))).expect("refused");
    assert_too_large(seen.remove(at), "queued", 4096);
    assert!(matches!(seen[0], Some(ClientEvent::Connected { .. })), "{seen:?}");
}

#[tokio::test]
async fn a_service_endpoint_says_so_in_every_connect() {
    let mut server = TestServer::start().await;
    let connecting =
        tokio::spawn(Client::connect(ClientConfig { service: true, ..config(&server.url) }));
    let (ws, connect) = server.accept(0).await;
    assert_eq!(connect["msg"]["service"], true, "{connect}");
    let (_client, mut events, _) = connecting.await.unwrap().unwrap();
    assert!(matches!(next_event(&mut events).await, Some(ClientEvent::Connected { .. })));
    // And again after a reconnect: the server forgot the old connection.
    drop(ws);
    let (_ws, connect) = server.accept(0).await;
    assert_eq!(connect["msg"]["service"], true, "{connect}");

    // Not a service endpoint: the field is absent, as the original client sends it.
    let connecting = tokio::spawn(Client::connect(config(&server.url)));
    let (_ws, connect) = server.accept(0).await;
    assert!(connect["msg"].get("service").is_none(), "{connect}");
    connecting.await.unwrap().unwrap();
}

#[tokio::test]
async fn bad_token_is_token_invalid() {
    let mut server = TestServer::start().await;
    let url = server.url.clone();
    let connecting = tokio::spawn(Client::connect(config(&url)));
    let _ = server.accept(connack_code::TOKEN_INVALID).await;
    let error = connecting.await.unwrap().unwrap_err();
    assert_eq!(error, ClientError::TokenInvalid);
    assert_eq!(error.wilddog_code(), Some(41002));
}

#[tokio::test]
async fn unknown_app_id_is_appid_invalid() {
    let mut server = TestServer::start().await;
    let url = server.url.clone();
    let connecting = tokio::spawn(Client::connect(config(&url)));
    let mut ws = server.next_socket().await;
    let _connect = read_json(&mut ws).await;
    let mut refused = connack(connack_code::TOKEN_INVALID, "stun:127.0.0.1:3478");
    refused["msg"]["appIdInvalid"] = json!(true);
    send_json(&mut ws, refused).await;
    let error = connecting.await.unwrap().unwrap_err();
    assert_eq!(error, ClientError::AppIdInvalid);
    assert_eq!(error.wilddog_code(), Some(41008));
    assert!(error.is_fatal());
}

#[tokio::test]
async fn expired_token_is_token_expired() {
    let mut server = TestServer::start().await;
    let url = server.url.clone();
    let connecting = tokio::spawn(Client::connect(config(&url)));
    let _ = server.accept(connack_code::TOKEN_EXPIRED).await;
    let error = connecting.await.unwrap().unwrap_err();
    assert_eq!(error, ClientError::TokenExpired);
    assert_eq!(error.wilddog_code(), Some(41001));
}

#[tokio::test]
async fn unreachable_server_is_a_connect_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let result = Client::connect(config(&format!("ws://127.0.0.1:{port}/ws"))).await;
    assert!(matches!(result, Err(ClientError::Connect(_))), "{result:?}");
}

#[tokio::test]
async fn bad_url_is_invalid_url() {
    let result = Client::connect(config("http://127.0.0.1:1/ws")).await;
    assert!(matches!(result, Err(ClientError::InvalidUrl(_))), "{result:?}");
}

#[tokio::test]
async fn server_without_connack_times_out() {
    let mut server = TestServer::start().await;
    let mut config = config(&server.url);
    config.connect_timeout = Duration::from_millis(200);
    let connecting = tokio::spawn(Client::connect(config));
    let _socket = server.next_socket().await;
    let result = connecting.await.unwrap();
    assert!(matches!(&result, Err(ClientError::Connect(why)) if why.contains("no connack")));
}

#[tokio::test]
async fn heartbeats_are_increasing_numbers() {
    let mut server = TestServer::start().await;
    let mut config = config(&server.url);
    config.heartbeat_interval = Duration::from_millis(30);
    let connecting = tokio::spawn(Client::connect(config));
    let (mut ws, _) = server.accept(0).await;
    let (_client, _events, _) = connecting.await.unwrap().unwrap();
    let beats = [read_text(&mut ws).await, read_text(&mut ws).await, read_text(&mut ws).await];
    assert_eq!(beats, [Some("0".into()), Some("1".into()), Some("2".into())]);
}

#[tokio::test]
async fn reconnects_and_delivers_the_frames_queued_meanwhile() {
    let mut server = TestServer::start().await;
    let (client, mut events, ws) = connected(&mut server).await;

    drop(ws);
    let event = next_event(&mut events).await;
    assert!(
        matches!(&event, Some(ClientEvent::Disconnected { will_retry: true, .. })),
        "{event:?}"
    );
    // Sent while the socket is down: queued.
    client.send(bye("cid1", "bob")).unwrap();
    client.send(bye("cid2", "bob")).unwrap();

    let mut ws = server.next_socket().await;
    let connect = read_json(&mut ws).await;
    assert_eq!(connect["type"], "connect");
    // Nothing before connack.
    assert!(tokio::time::timeout(Duration::from_millis(100), ws.next()).await.is_err());
    send_json(&mut ws, connack(0, "stun:127.0.0.2:3478")).await;
    assert_eq!(read_json(&mut ws).await["cid"], "cid1");
    assert_eq!(read_json(&mut ws).await["cid"], "cid2");
    let Some(ClientEvent::Connected { ice_servers }) = next_event(&mut events).await else {
        panic!("Connected again after the reconnect")
    };
    assert_eq!(stun_urls(&ice_servers), ["stun:127.0.0.2:3478"]);

    // And the new socket carries new frames.
    client.send(bye("cid3", "bob")).unwrap();
    assert_eq!(read_json(&mut ws).await["cid"], "cid3");
}

#[tokio::test]
async fn a_socket_that_stops_answering_is_dropped_and_the_client_reconnects() {
    let mut server = TestServer::start().await;
    let mut config = config(&server.url);
    config.ping_interval = Duration::from_millis(100);
    config.pong_timeout = Duration::from_millis(300);
    let connecting = tokio::spawn(Client::connect(config));
    // The server never reads again (a dead Wi-Fi: no FIN, no reset, no pong).
    let (_silent, _) = server.accept(0).await;
    let (client, mut events, _) = connecting.await.unwrap().unwrap();
    assert!(matches!(next_event(&mut events).await, Some(ClientEvent::Connected { .. })));
    let started = std::time::Instant::now();
    let event = next_event(&mut events).await;
    let Some(ClientEvent::Disconnected { reason, will_retry: true }) = &event else {
        panic!("{event:?}")
    };
    assert!(reason.contains("ping"), "{reason}");
    assert!(started.elapsed() < Duration::from_secs(2), "noticed after {:?}", started.elapsed());
    client.send(bye("cid1", "bob")).unwrap();
    let (mut ws, _) = server.accept(0).await;
    assert!(matches!(next_event(&mut events).await, Some(ClientEvent::Connected { .. })));
    assert_eq!(read_json(&mut ws).await["cid"], "cid1");
}

#[tokio::test]
async fn a_server_that_answers_pings_keeps_the_socket() {
    let mut server = TestServer::start().await;
    let mut config = config(&server.url);
    config.ping_interval = Duration::from_millis(50);
    config.pong_timeout = Duration::from_millis(200);
    let connecting = tokio::spawn(Client::connect(config));
    let (mut ws, _) = server.accept(0).await;
    let (_client, mut events, _) = connecting.await.unwrap().unwrap();
    next_event(&mut events).await;
    // Reading answers the pings (tungstenite sends the pongs).
    let mut pings = 0;
    let until = tokio::time::Instant::now() + Duration::from_millis(800);
    while let Ok(Some(Ok(message))) = tokio::time::timeout_at(until, ws.next()).await {
        if matches!(message, Message::Ping(_)) {
            pings += 1;
        }
    }
    assert!(pings >= 5, "{pings} pings");
    assert!(events.try_recv().is_err(), "no event: the socket stays");
}

#[tokio::test]
async fn keeps_retrying_while_the_server_is_down() {
    let mut server = TestServer::start().await;
    let (_client, mut events, ws) = connected(&mut server).await;
    drop(ws);
    assert!(matches!(next_event(&mut events).await, Some(ClientEvent::Disconnected { .. })));
    // Two failed attempts (closed before connack), then a good one.
    for _ in 0..2 {
        let mut ws = server.next_socket().await;
        read_json(&mut ws).await;
        ws.close(None).await.unwrap();
    }
    let _ws = server.accept(0).await;
    assert!(matches!(next_event(&mut events).await, Some(ClientEvent::Connected { .. })));
}

#[tokio::test]
async fn refused_token_on_reconnect_gives_up() {
    let mut server = TestServer::start().await;
    let (client, mut events, ws) = connected(&mut server).await;
    drop(ws);
    assert!(matches!(next_event(&mut events).await, Some(ClientEvent::Disconnected { .. })));
    let _ws = server.accept(connack_code::TOKEN_EXPIRED).await;
    assert_eq!(next_event(&mut events).await, Some(ClientEvent::Error(ClientError::TokenExpired)));
    assert_eq!(next_event(&mut events).await, None, "the stream ends");
    assert_eq!(client.send(bye("c", "b")), Err(ClientError::Closed));
    assert!(client.is_closed());
}

#[tokio::test]
async fn without_reconnect_the_stream_ends() {
    let mut server = TestServer::start().await;
    let mut config = config(&server.url);
    config.reconnect = false;
    let connecting = tokio::spawn(Client::connect(config));
    let (mut ws, _) = server.accept(0).await;
    let (_client, mut events, _) = connecting.await.unwrap().unwrap();
    next_event(&mut events).await;
    ws.close(None).await.unwrap();
    let event = next_event(&mut events).await;
    assert!(
        matches!(&event, Some(ClientEvent::Disconnected { will_retry: false, .. })),
        "{event:?}"
    );
    assert_eq!(next_event(&mut events).await, None);
}

#[tokio::test]
async fn connack_url_redirects() {
    let mut first = TestServer::start().await;
    let mut second = TestServer::start().await;
    let connecting = tokio::spawn(Client::connect(config(&first.url)));
    let mut ws = first.next_socket().await;
    read_json(&mut ws).await;
    send_json(&mut ws, json!({"type": "connack", "url": second.url, "msg": {"code": 0}})).await;
    let (mut ws2, _) = second.accept(0).await;
    let (client, _events, ice_servers) = connecting.await.unwrap().unwrap();
    assert_eq!(stun_urls(&ice_servers), ["stun:127.0.0.1:3478"]);
    client.send(bye("cid1", "bob")).unwrap();
    assert_eq!(read_json(&mut ws2).await["cid"], "cid1");

    // A redirect mid-session: reconnect there at once, and stay there.
    let mut third = TestServer::start().await;
    send_json(&mut ws2, json!({"type": "connack", "url": third.url, "msg": {"code": 0}})).await;
    let (mut ws3, _) = third.accept(0).await;
    client.send(bye("cid2", "bob")).unwrap();
    assert_eq!(read_json(&mut ws3).await["cid"], "cid2");
    drop(ws3);
    let (_ws3, _) = third.accept(0).await;
}

#[tokio::test]
async fn close_sends_a_close_frame_and_stops() {
    let mut server = TestServer::start().await;
    let (client, mut events, mut ws) = connected(&mut server).await;
    let other_handle = client.clone();
    client.close().await;
    let message = tokio::time::timeout(PATIENCE, ws.next()).await.unwrap();
    assert!(matches!(message, Some(Ok(Message::Close(_)))), "{message:?}");
    assert_eq!(next_event(&mut events).await, None);
    assert_eq!(other_handle.send(bye("c", "b")), Err(ClientError::Closed));
    // No reconnection.
    assert!(tokio::time::timeout(Duration::from_millis(200), server.sockets.recv()).await.is_err());
    // Closing twice is harmless.
    other_handle.close().await;
}

#[tokio::test]
async fn dropping_every_handle_closes_the_socket() {
    let mut server = TestServer::start().await;
    let connecting = tokio::spawn(Client::connect(config(&server.url)));
    let (mut ws, _) = server.accept(0).await;
    let (client, _events, _) = connecting.await.unwrap().unwrap();
    drop(client);
    assert_eq!(read_text(&mut ws).await, None);
}

#[test]
fn backoff_grows_to_its_cap_with_jitter() {
    let backoff = Backoff::default();
    assert_eq!(backoff.delay(0, 0.0), Duration::from_secs(1));
    assert_eq!(backoff.delay(1, 0.0), Duration::from_millis(1300));
    assert_eq!(backoff.delay(100, 0.0), Duration::from_secs(30));
    assert_eq!(backoff.delay(u32::MAX, 0.0), Duration::from_secs(30));
    let jittered = backoff.delay(0, 0.999);
    assert!(jittered < Duration::from_secs(1) && jittered >= Duration::from_millis(700));
}

fn tls_acceptor() -> (tokio_rustls::TlsAcceptor, String) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("certificate");
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .unwrap();
    (tokio_rustls::TlsAcceptor::from(Arc::new(server)), certified.cert.pem())
}

#[tokio::test]
async fn wss_with_a_private_root() {
    let (acceptor, ca_pem) = tls_acceptor();
    let mut server = TestServer::start_with_tls(Some(acceptor)).await;
    let mut config = config(&server.url);
    config.root_ca_pem = Some(ca_pem);
    let connecting = tokio::spawn(Client::connect(config));
    let (mut ws, _) = server.accept(0).await;
    let (client, _events, _) = connecting.await.unwrap().unwrap();
    client.send(bye("cid1", "bob")).unwrap();
    assert_eq!(read_json(&mut ws).await["cid"], "cid1");
}

#[tokio::test]
async fn wss_with_an_unknown_root_is_refused() {
    let (acceptor, _) = tls_acceptor();
    let server = TestServer::start_with_tls(Some(acceptor)).await;
    let result = Client::connect(config(&server.url)).await;
    assert!(
        matches!(&result, Err(ClientError::Tls(why)) if why.contains("UnknownIssuer")),
        "{result:?}"
    );
}

#[test]
fn bad_root_pem_is_a_tls_error() {
    let mut config = config("wss://localhost/ws");
    config.root_ca_pem = Some("not a certificate".into());
    assert!(matches!(tls_config(&config), Err(ClientError::Tls(_))));
}

#[tokio::test]
async fn redirect_to_a_bad_url_is_refused() {
    let mut server = TestServer::start().await;
    let connecting = tokio::spawn(Client::connect(config(&server.url)));
    let mut ws = server.next_socket().await;
    read_json(&mut ws).await;
    send_json(&mut ws, json!({"type": "connack", "url": "ftp://x", "msg": {"code": 0}})).await;
    let result = connecting.await.unwrap();
    assert!(matches!(result, Err(ClientError::InvalidUrl(_))), "{result:?}");
}
