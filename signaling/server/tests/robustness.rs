//! Authentication and bad input over real WebSockets: every refusal is a clear error frame
//! or close, and the server and other sessions keep running.

mod common;

use std::time::Duration;

use common::{Client, TestServer};
use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use wilddog_protocol::{ErrorCode, ServerFrame};
use wilddog_server::{Claims, DEV_APP_ID, ServerConfig, close_code, sign_claims};

const QUIET: Duration = Duration::from_millis(300);

#[tokio::test]
async fn bad_expired_and_wrong_app_tokens() {
    let server = TestServer::dev().await;
    let good = server.token("alice");

    let mut c = server.open().await;
    // Change the signature's first character (its last may hold only ignored padding bits).
    let (head, sig) = good.rsplit_once('.').unwrap();
    let tampered = format!("{head}.{}{}", if sig.starts_with('A') { 'B' } else { 'A' }, &sig[1..]);
    let refused = c.connect_code(DEV_APP_ID, &tampered).await;
    assert_eq!(refused.code, 1, "bad signature");
    assert!(!refused.app_id_invalid, "a bad token of a good app is not 41008");
    let mut c = server.open().await;
    assert_eq!(c.connect_code(DEV_APP_ID, "garbage").await.code, 1, "malformed");
    let mut c = server.open().await;
    // Code 1 as the original, and our extension saying that the app id is the fault (41008).
    let refused = c.connect_code("some-other-app", &good).await;
    assert_eq!(refused.code, 1, "unknown app");
    assert!(refused.app_id_invalid, "unknown app: appIdInvalid");
    let mut other = ServerConfig::development();
    other.apps[0].secret = "another secret".into();
    let foreign =
        wilddog_server::mint_token(&other, DEV_APP_ID, "alice", Duration::from_secs(60)).unwrap();
    let mut c = server.open().await;
    assert_eq!(c.connect_code(DEV_APP_ID, &foreign).await.code, 1, "signed by another secret");

    let expired = sign_claims(
        &server.config,
        &Claims { uid: "alice".into(), app_id: DEV_APP_ID.into(), iat: 1000, exp: 2000 },
    )
    .unwrap();
    let mut c = server.open().await;
    let connack = c.connect_code(DEV_APP_ID, &expired).await;
    assert_eq!(connack.code, 2, "expired");
    // Still nothing but connect accepted; a good token then works on the same socket.
    c.call("c1", "bob").await;
    c.recv_error(ErrorCode::NotConnected).await;
    c.connect(DEV_APP_ID, &good).await;
    assert_eq!(server.metric("wilddog_auth_failures_total").await, 5);
}

#[tokio::test]
async fn too_many_failed_connects_close_the_socket() {
    let server = TestServer::dev().await;
    let mut c = server.open().await;
    for _ in 0..3 {
        assert_eq!(c.connect_code(DEV_APP_ID, "bad").await.code, 1);
    }
    let reason = c.recv_close(close_code::POLICY).await;
    assert!(reason.contains("failed connect"), "{reason}");
}

#[tokio::test]
async fn nothing_but_connect_before_connack() {
    let server = TestServer::dev().await;
    let mut bob = server.login("bob").await;
    let mut c = server.open().await;
    c.send_text("5").await; // heartbeats are fine
    c.call("c1", "bob").await;
    let reason = c.recv_error(ErrorCode::NotConnected).await;
    assert!(reason.contains("connect"), "{reason}");
    c.send_json(json!({"type": "device", "msg": {}})).await;
    c.recv_error(ErrorCode::NotConnected).await;
    bob.expect_silence(QUIET).await;
    // A second connect after a good one is refused.
    bob.send_json(
        json!({"type": "connect", "msg": {"token": server.token("bob"), "appId": DEV_APP_ID}}),
    )
    .await;
    bob.recv_error(ErrorCode::NotConnected).await;
}

#[tokio::test]
async fn bad_input_gets_error_frames_and_sessions_survive() {
    let server = TestServer::dev().await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    let mut evil = server.login("evil").await;

    evil.send_text("{not json").await;
    evil.recv_error(ErrorCode::Malformed).await;
    evil.send_text("[1,2,3]").await;
    evil.recv_error(ErrorCode::Malformed).await;
    evil.send_text("\"a string\"").await;
    evil.recv_error(ErrorCode::Malformed).await;
    evil.ws.send(Message::binary(vec![0u8, 1, 2])).await.unwrap();
    let reason = evil.recv_error(ErrorCode::Malformed).await;
    assert!(reason.contains("binary"), "{reason}");
    evil.send_json(json!({"type": "frobnicate", "cid": "x", "msg": {}})).await;
    let reason = evil.recv_error(ErrorCode::UnknownType).await;
    assert!(reason.contains("frobnicate"), "{reason}");
    evil.send_json(json!({"type": "offer", "to": "bob", "msg": {"sdp": "v=0"}})).await;
    let reason = evil.recv_error(ErrorCode::Malformed).await;
    assert!(reason.contains("cid"), "missing cid: {reason}");
    evil.send_json(json!({"type": "offer", "cid": "c", "to": "bob", "msg": {}})).await;
    let reason = evil.recv_error(ErrorCode::Malformed).await;
    assert!(reason.contains("sdp"), "missing msg.sdp: {reason}");
    evil.send_json(json!({"cid": "c", "msg": {}})).await;
    evil.recv_error(ErrorCode::Malformed).await;
    evil.send_json(json!({"type": "call", "cid": "c", "msg": {}})).await;
    let reason = evil.recv_error(ErrorCode::Malformed).await;
    assert!(reason.contains("to"), "missing to: {reason}");
    evil.send_json(json!({"type": "candidate", "cid": "nope", "to": "bob", "msg": {"sdp": ""}}))
        .await;
    evil.recv_error(ErrorCode::UnknownConversation).await;

    // Everyone else is unaffected.
    alice.call("c1", "bob").await;
    assert_eq!(bob.recv_conv().await.0, "call");
    bob.say("accept", "c1", "alice", json!({})).await;
    assert_eq!(alice.recv_conv().await.0, "accept");
    evil.call("c2", "alice").await;
    assert_eq!(alice.recv_conv().await.0, "call");
    assert!(server.metric("wilddog_frames_refused_total").await >= 10);
    assert_eq!(server.http_get("/healthz").await.0, 200);
}

#[tokio::test]
async fn large_sdp_passes_oversized_frames_are_refused() {
    let mut config = ServerConfig::development();
    config.limits.max_frame_bytes = 64 * 1024;
    let server = TestServer::start(config).await;
    // The connack says how large a frame the server takes (our extension).
    let mut alice = server.open().await;
    let connack = alice.connect(DEV_APP_ID, &server.token("alice")).await;
    assert_eq!(connack.max_frame_bytes, Some(64 * 1024));
    let mut bob = server.login("bob").await;
    alice.call("c1", "bob").await;
    bob.recv_conv().await;
    bob.say("accept", "c1", "alice", json!({})).await;
    alice.recv_conv().await;
    // An SDP of 48 KiB passes.
    let sdp = format!(
        "v=0\r\n{}",
        "a=candidate:1 1 udp 2113937151 127.0.0.1 5000 typ host\r\n".repeat(880)
    );
    assert!(sdp.len() > 48 * 1024);
    alice.say("offer", "c1", "bob", json!({"sdp": sdp})).await;
    let (_, _, _, wilddog_protocol::Body::Offer(offer)) = bob.recv_conv().await else { panic!() };
    assert_eq!(offer.sdp, sdp);
    // Over the limit: an error frame, the session goes on.
    let big = "x".repeat(100 * 1024);
    alice.say("offer", "c1", "bob", json!({"sdp": big})).await;
    let (cid, msg) = alice.recv_error_frame().await;
    assert_eq!(msg.code, ErrorCode::TooLarge, "{msg:?}");
    assert!(msg.reason.contains("65536"), "{msg:?}");
    // It names the refused frame, so that a client knows which of its frames it was.
    assert_eq!(cid.as_deref(), Some("c1"));
    assert_eq!(msg.refers_to.as_deref(), Some("offer"));
    alice.say("candidate", "c1", "bob", json!({"sdp": "candidate:1"})).await;
    assert_eq!(bob.recv_conv().await.0, "candidate");
    // Far over it: the socket is closed with 1009, the peer gets bye.
    let huge = "x".repeat(300 * 1024);
    alice.say("offer", "c1", "bob", json!({"sdp": huge})).await;
    alice.recv_close(close_code::TOO_BIG).await;
    assert_eq!(bob.recv_conv().await.0, "bye");
}

#[tokio::test]
async fn floods_are_rate_limited_then_closed() {
    let mut config = ServerConfig::development();
    config.limits.rate_limit_per_sec = 10;
    config.limits.rate_limit_burst = 20;
    let server = TestServer::start(config).await;
    let mut bob = server.login("bob").await;
    let mut flooder = server.login("flooder").await;
    // The burst is 20 frames; `connect` was one of them.
    for i in 0..19 {
        flooder.send_json(json!({"type": "device", "cid": format!("c{i}"), "msg": {}})).await;
    }
    for _ in 0..19 {
        assert!(matches!(flooder.recv().await, ServerFrame::TelemetryAck { .. }));
    }
    // Three more: whatever trickled in since (10/s) is used up, and then one is refused.
    for _ in 0..3 {
        flooder.send_json(json!({"type": "device", "msg": {}})).await;
    }
    let reason = loop {
        match flooder.recv().await {
            ServerFrame::TelemetryAck { .. } => continue,
            ServerFrame::Error { msg, .. } if msg.code == ErrorCode::RateLimited => {
                break msg.reason;
            }
            other => panic!("{other:?}"),
        }
    };
    assert!(reason.contains("10 frames/s"), "{reason}");
    // Keep flooding: the server closes the socket.
    for _ in 0..400 {
        if flooder.ws.send(Message::text("1")).await.is_err() {
            break;
        }
    }
    let reason = flooder.recv_close(close_code::POLICY).await;
    assert!(reason.contains("flood"), "{reason}");
    // Others are fine.
    bob.send_json(json!({"type": "device", "msg": {}})).await;
    let got = bob.recv().await;
    assert!(matches!(got, ServerFrame::TelemetryAck { .. }), "{got:?}");
}

#[tokio::test]
async fn idle_sockets_are_pinged_then_reaped() {
    let mut config = ServerConfig::development();
    config.limits.idle_timeout = Duration::from_secs(1);
    config.limits.connect_timeout = Duration::from_secs(1);
    let server = TestServer::start(config).await;
    // A client that answers pings (tungstenite does while we read) stays.
    let mut lively = server.login("lively").await;
    // A silent one: we read nothing, so no pong goes out.
    let mut silent = server.login("silent").await;
    let mut got_ping = false;
    let start = tokio::time::Instant::now();
    while start.elapsed() < Duration::from_millis(2500) {
        if let Ok(Some(Ok(m))) = tokio::time::timeout(
            Duration::from_millis(100),
            futures_util::StreamExt::next(&mut lively.ws),
        )
        .await
        {
            got_ping |= matches!(m, Message::Ping(_));
        }
    }
    assert!(got_ping, "the server pings a quiet connection");
    lively.send_json(json!({"type": "device", "msg": {}})).await;
    assert!(matches!(lively.recv().await, ServerFrame::TelemetryAck { .. }));
    // The silent client's socket was closed for idleness (the ping arrives first).
    let mut saw_ping = false;
    let reason = loop {
        match futures_util::StreamExt::next(&mut silent.ws).await {
            Some(Ok(Message::Ping(_))) => saw_ping = true,
            Some(Ok(Message::Close(Some(f)))) => break f.reason.to_string(),
            other => panic!("{other:?}"),
        }
    };
    assert!(saw_ping);
    assert!(reason.contains("idle"), "{reason}");
    // A socket that never authenticates is closed too.
    let mut lurker = server.open().await;
    let reason = lurker.recv_close(close_code::POLICY).await;
    assert!(reason.contains("connect"), "{reason}");
}

#[tokio::test]
async fn graceful_shutdown_sends_close_frames() {
    let server = TestServer::dev().await;
    let mut alice = server.login("alice").await;
    let mut anon = server.open().await;
    let addr = server.addr;
    let stopping = tokio::spawn(server.shutdown());
    let reason = alice.recv_close(close_code::GOING_AWAY).await;
    assert!(reason.contains("shutting down"), "{reason}");
    anon.recv_close(close_code::GOING_AWAY).await;
    tokio::time::timeout(Duration::from_secs(10), stopping).await.unwrap().unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "no longer listening");
}

#[tokio::test]
async fn a_client_reading_nothing_does_not_stall_others() {
    let mut config = ServerConfig::development();
    config.limits.outbound_queue_frames = 16;
    config.limits.rate_limit_per_sec = 100_000;
    config.limits.rate_limit_burst = 100_000;
    let server = TestServer::start(config).await;
    let mut alice = server.login("alice").await;
    let mut sleeper = server.login("sleeper").await;
    let mut carol = server.login("carol").await;
    alice.call("c1", "sleeper").await;
    sleeper.recv_conv().await;
    sleeper.say("accept", "c1", "alice", json!({})).await;
    alice.recv_conv().await;
    // The sleeper reads nothing while alice pushes large frames at it.
    let blob = "x".repeat(60_000);
    let mut closed = false;
    for _ in 0..2000 {
        alice.say("candidate", "c1", "sleeper", json!({"sdp": blob})).await;
        if let Ok(ServerFrame::Conversation { body: wilddog_protocol::Body::Bye(_), .. }) =
            tokio::time::timeout(Duration::from_millis(1), alice.recv()).await
        {
            closed = true;
            break;
        }
    }
    assert!(closed, "the sleeper was disconnected and alice got bye");
    // Others still get service.
    alice.call("c2", "carol").await;
    assert_eq!(carol.recv_conv().await.0, "call");
    drop(sleeper);
}

#[tokio::test]
async fn configured_ice_servers_and_builtin_stun_in_connack() {
    let config = ServerConfig::from_toml_str(
        r#"
        [[apps]]
        id = "a"
        secret = "s"
        [[ice_servers]]
        urls = "turn:turn.example:3478"
        username = "tu"
        credential = "tc"
        "#,
    )
    .unwrap();
    let server = TestServer::start(config.clone()).await;
    let mut c = Client::open(&server.url()).await;
    let token = wilddog_server::mint_token(&config, "a", "x", Duration::from_secs(60)).unwrap();
    let connack = c.connect("a", &token).await;
    let stun = format!("stun:127.0.0.1:{}", server.addr.port());
    assert_eq!(connack.ice_servers[0].url.as_deref(), Some(stun.as_str()));
    assert_eq!(connack.ice_servers[0].all_urls(), vec![stun]);
    assert_eq!(connack.ice_servers[1].url.as_deref(), Some("turn:turn.example:3478"));
    assert_eq!(connack.ice_servers[1].username.as_deref(), Some("tu"));
    // The configured TURN credential rides on forwarded calls.
    let mut d = Client::open(&server.url()).await;
    d.connect(
        "a",
        &wilddog_server::mint_token(&config, "a", "y", Duration::from_secs(60)).unwrap(),
    )
    .await;
    c.call("c1", "y").await;
    let (_, _, _, wilddog_protocol::Body::Call(call)) = d.recv_conv().await else { panic!() };
    let cred = call.turn_credential.unwrap();
    assert_eq!((cred.username.as_str(), cred.credential.as_str()), ("tu", "tc"));
}

/// With `[turn]`, every authenticated connection is sent a credential minted for its uid
/// (`turn`, our extension) at half the credentials' lifetime, and again and again: a client
/// never holds only an expired one (an ICE restart late in a call gathers with it).
#[tokio::test]
async fn minted_turn_credentials_are_renewed_at_half_their_lifetime() {
    let config = ServerConfig::from_toml_str(
        "[[apps]]\nid = \"a\"\nsecret = \"s\"\n[turn]\nurls = \"turn:t.example:3478\"\n\
         secret = \"north\"\nttl_secs = 1\n",
    )
    .unwrap();
    let server = TestServer::start(config.clone()).await;
    let mut c = Client::open(&server.url()).await;
    let token = wilddog_server::mint_token(&config, "a", "alice", Duration::from_secs(60)).unwrap();
    c.connect("a", &token).await;
    let connected_at = std::time::Instant::now();
    for n in 1..=2u32 {
        let frame = c.recv_json().await;
        let after = connected_at.elapsed();
        let username = frame["msg"]["username"].as_str().unwrap_or_default().to_owned();
        let expiry: u64 = username.strip_suffix(":alice").and_then(|e| e.parse().ok()).unwrap_or(0);
        let credential = wilddog_server::rest_credential("north", "alice", expiry).credential;
        assert_eq!(
            frame,
            json!({"type": "turn", "msg": {"username": username, "credential": credential}})
        );
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
        assert!(expiry >= now.as_secs(), "minted now, for the TTL: {username}");
        let half = Duration::from_millis(500) * n;
        assert!(
            after + Duration::from_millis(100) >= half && after < half + Duration::from_secs(1),
            "turn #{n} after {after:?}"
        );
    }
}

/// Does the WebSocket upgrade of `/ws` by hand on a raw TCP socket: the bytes after it are
/// whatever the test writes, frame headers no WebSocket library would send.
async fn raw_upgrade(server: &TestServer) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        server.addr
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    // The response head, byte by byte so that nothing after it is consumed.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        let n = tokio::time::timeout(common::WAIT, tcp.read(&mut byte)).await.unwrap().unwrap();
        assert_eq!(n, 1, "upgrade response cut short: {}", String::from_utf8_lossy(&head));
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    tcp
}

/// What the server does within `within` after the test wrote its frame: the close code of
/// its first frame if that is a close frame, `None` if it dropped the connection, or a
/// panic when it does neither (or sends another frame first).
async fn close_code_within(tcp: &mut tokio::net::TcpStream, within: Duration) -> Option<u16> {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let read = tokio::time::timeout(within, async {
        let mut buf = [0u8; 256];
        // A close frame from the server: 0x88, a length under 126, no mask, the code first.
        while got.len() < 4 {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "neither a close frame nor the connection closed within {within:?}");
    if got.is_empty() {
        return None;
    }
    assert!(got.len() >= 4 && got[0] == 0x88, "expected a close frame, got {got:02x?}");
    Some(u16::from_be_bytes([got[2], got[3]]))
}

/// A frame header announcing 2^63 - 1 bytes (64-bit extended length) is refused as soon as
/// the header is read: a close 1009 within a second, nothing allocated for it, and the server
/// goes on serving everyone else.
#[tokio::test]
async fn a_frame_header_announcing_exabytes_is_closed_with_1009_at_once() {
    use tokio::io::AsyncWriteExt;
    let server = TestServer::dev().await;
    let mut alice = server.login("alice").await;
    for authenticated in [false, true] {
        let mut tcp = raw_upgrade(&server).await;
        let mut header = vec![0x82, 0xFF, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];
        header.extend_from_slice(&[0x12, 0x34, 0x56, 0x78]); // the mask key
        if authenticated {
            // A connected session first (masked text frame carrying `connect`).
            let connect = json!({"type": "connect", "msg": {
                "token": server.token("raw"), "appId": DEV_APP_ID, "clientInfo": {"sdk": "test"}
            }})
            .to_string();
            let mut frame = vec![0x81, 0xFE];
            frame.extend_from_slice(&u16::try_from(connect.len()).unwrap().to_be_bytes());
            frame.extend_from_slice(&[0, 0, 0, 0]); // a zero mask key: the payload as is
            frame.extend_from_slice(connect.as_bytes());
            tcp.write_all(&frame).await.unwrap();
            let mut ack = [0u8; 4];
            tokio::io::AsyncReadExt::read_exact(&mut tcp, &mut ack).await.unwrap();
            assert_eq!(ack[0], 0x81, "a text frame (connack) first: {ack:02x?}");
            let len = match ack[1] {
                126 => usize::from(u16::from_be_bytes([ack[2], ack[3]])),
                n => usize::from(n) - 2,
            };
            let mut rest = vec![0u8; len];
            tokio::io::AsyncReadExt::read_exact(&mut tcp, &mut rest).await.unwrap();
        }
        tcp.write_all(&header).await.unwrap();
        let started = std::time::Instant::now();
        let code = close_code_within(&mut tcp, Duration::from_secs(1)).await;
        assert_eq!(code, Some(close_code::TOO_BIG), "authenticated: {authenticated}");
        assert!(started.elapsed() < Duration::from_secs(1));
    }
    // Everyone else is served: a call between two sessions, one opened before, one after.
    let mut bob = server.login("bob").await;
    alice.call("c1", "bob").await;
    assert_eq!(bob.recv_conv().await.0, "call");
    assert_eq!(server.http_get("/healthz").await.0, 200);

    // The check holds for any configured limit: one so large that 4 times it is over 2^63
    // let that header through, and the connection's task died allocating for it ("capacity
    // overflow"). Such a limit is refused before the server starts.
    let mut huge = ServerConfig::development();
    huge.limits.max_frame_bytes = 1 << 62;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let refused = wilddog_server::run(listener, huge, async {}).await;
    let error = refused.expect_err("a frame limit of 2^62 bytes is refused").to_string();
    assert!(error.contains("max_frame_bytes") && error.contains("16 MiB"), "{error}");
}
