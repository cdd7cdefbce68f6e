//! Call lifecycles over real WebSockets.

mod common;

use std::time::Duration;

use common::TestServer;
use serde_json::json;
use wilddog_protocol::{Body, ErrorCode, ServerFrame, TelemetryKind};

const QUIET: Duration = Duration::from_millis(300);

#[tokio::test]
async fn accepted_call_full_lifecycle() {
    let server = TestServer::dev().await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;

    alice.call("c1", "bob").await;
    let (kind, cid, from, body) = bob.recv_conv().await;
    assert_eq!((kind.as_str(), cid.as_str(), from.as_str()), ("call", "c1", "alice"));
    let Body::Call(call) = body else { unreachable!() };
    assert_eq!(call.data_text().as_deref(), Some("hello"));
    assert!(call.turn_credential.is_some(), "forwarded call carries turnCredential");
    assert_eq!(call.ice_servers.unwrap()[0].url.as_deref(), Some("stun:x"));
    assert_eq!(server.metric("wilddog_conversations").await, 1);

    bob.say("accept", "c1", "alice", json!({})).await;
    assert_eq!(alice.recv_conv().await.0, "accept");
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n";
    alice.say("offer", "c1", "bob", json!({"sdp": sdp})).await;
    let (kind, _, from, body) = bob.recv_conv().await;
    assert_eq!((kind.as_str(), from.as_str()), ("offer", "alice"));
    let Body::Offer(offer) = body else { unreachable!() };
    assert_eq!(offer.sdp, sdp);
    bob.say("answer", "c1", "alice", json!({"sdp": "v=0 answer"})).await;
    assert_eq!(alice.recv_conv().await.0, "answer");
    for i in 0..3 {
        let c = json!({"sdpMLineIndex": i, "sdpMid": i.to_string(), "sdp": format!("candidate:{i} 1 udp 1 127.0.0.1 {i} typ host")});
        alice.say("candidate", "c1", "bob", c.clone()).await;
        bob.say("candidate", "c1", "alice", c).await;
    }
    for i in 0..3 {
        let (kind, _, from, Body::Candidate(c)) = bob.recv_conv().await else { panic!() };
        assert_eq!(
            (kind.as_str(), from.as_str(), c.sdp_mline_index),
            ("candidate", "alice", Some(i))
        );
        let (_, _, from, Body::Candidate(c)) = alice.recv_conv().await else { panic!() };
        assert_eq!((from.as_str(), c.sdp_mline_index), ("bob", Some(i)));
    }
    bob.say("restartice", "c1", "alice", json!({})).await;
    assert_eq!(alice.recv_conv().await.0, "restartice");
    alice.say("bye", "c1", "bob", json!({})).await;
    let (kind, cid, from, _) = bob.recv_conv().await;
    assert_eq!((kind.as_str(), cid.as_str(), from.as_str()), ("bye", "c1", "alice"));
    alice.expect_silence(QUIET).await;
    assert_eq!(server.metric("wilddog_conversations").await, 0);
    assert!(server.metric("wilddog_frames_relayed_total").await >= 12);
    server.shutdown().await;
}

#[tokio::test]
async fn rejected_call() {
    let server = TestServer::dev().await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    alice.call("c1", "bob").await;
    bob.recv_conv().await;
    bob.say("reject", "c1", "alice", json!({})).await;
    let (kind, cid, from, _) = alice.recv_conv().await;
    assert_eq!((kind.as_str(), cid.as_str(), from.as_str()), ("reject", "c1", "bob"));
    // The conversation is over: a late offer is refused.
    alice.say("offer", "c1", "bob", json!({"sdp": "v=0"})).await;
    alice.recv_error(ErrorCode::UnknownConversation).await;
    bob.expect_silence(QUIET).await;
}

#[tokio::test]
async fn busy_call() {
    let server = TestServer::dev().await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    alice.call("c1", "bob").await;
    bob.recv_conv().await;
    bob.say("busy", "c1", "alice", json!({})).await;
    let (kind, _, from, _) = alice.recv_conv().await;
    assert_eq!((kind.as_str(), from.as_str()), ("busy", "bob"));
    // The cid is free again.
    alice.call("c1", "bob").await;
    assert_eq!(bob.recv_conv().await.0, "call");
}

#[tokio::test]
async fn caller_cancels_before_answer() {
    let server = TestServer::dev().await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    alice.call("c1", "bob").await;
    bob.recv_conv().await;
    alice.say("bye", "c1", "bob", json!({})).await;
    let (kind, _, from, _) = bob.recv_conv().await;
    assert_eq!((kind.as_str(), from.as_str()), ("bye", "alice"));
    bob.say("accept", "c1", "alice", json!({})).await;
    bob.recv_error(ErrorCode::UnknownConversation).await;
    alice.expect_silence(QUIET).await;
}

#[tokio::test]
async fn socket_drop_mid_call_sends_bye_after_the_grace() {
    let grace = Duration::from_millis(600);
    let mut config = wilddog_server::ServerConfig::development();
    config.limits.reconnect_grace = grace;
    let server = TestServer::start(config).await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    alice.call("c1", "bob").await;
    bob.recv_conv().await;
    bob.say("accept", "c1", "alice", json!({})).await;
    alice.recv_conv().await;
    drop(bob); // no close frame: the TCP connection just goes
    let dropped = tokio::time::Instant::now();
    // Kept for the grace (bob may come back), then over.
    alice.expect_silence(grace / 2).await;
    let (kind, cid, from, _) = alice.recv_conv().await;
    assert_eq!((kind.as_str(), cid.as_str(), from.as_str()), ("bye", "c1", "bob"));
    assert!(dropped.elapsed() >= grace, "bye after {:?}", dropped.elapsed());
    alice.expect_silence(QUIET).await;
    assert_eq!(server.metric("wilddog_conversations").await, 0);

    // The caller dropping while ringing: the callee gets bye at once (no grace for ringing).
    let mut carol = server.login("carol").await;
    alice.call("c2", "carol").await;
    carol.recv_conv().await;
    drop(alice);
    let (kind, cid, from, _) = carol.recv_conv().await;
    assert_eq!((kind.as_str(), cid.as_str(), from.as_str()), ("bye", "c2", "alice"));
}

#[tokio::test]
async fn deliberate_close_mid_call_sends_bye_at_once() {
    // The default grace (10 s) is not waited for: the client closed on purpose.
    let server = TestServer::dev().await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    alice.call("c1", "bob").await;
    bob.recv_conv().await;
    bob.say("accept", "c1", "alice", json!({})).await;
    alice.recv_conv().await;
    let closed = tokio::time::Instant::now();
    bob.ws.close(None).await.unwrap();
    let (kind, cid, from, _) = alice.recv_conv().await;
    assert_eq!((kind.as_str(), cid.as_str(), from.as_str()), ("bye", "c1", "bob"));
    assert!(closed.elapsed() < Duration::from_secs(2), "bye after {:?}", closed.elapsed());

    // Close code 1000 or 1001 is leaving too; a ringing conversation ends either way.
    let mut carol = server.login("carol").await;
    alice.call("c2", "carol").await;
    carol.recv_conv().await;
    carol.say("accept", "c2", "alice", json!({})).await;
    alice.recv_conv().await;
    carol
        .ws
        .close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
            code: 1001.into(),
            reason: "page left".into(),
        }))
        .await
        .unwrap();
    let (kind, cid, _, _) = alice.recv_conv().await;
    assert_eq!((kind.as_str(), cid.as_str()), ("bye", "c2"));
    assert!(closed.elapsed() < Duration::from_secs(4));
}

#[tokio::test]
async fn several_clients_of_one_uid() {
    let server = TestServer::dev().await;
    let mut alice = server.login("alice").await;
    let mut bob1 = server.login("bob").await;
    let mut bob2 = server.login("bob").await;
    let mut bob3 = server.login("bob").await;
    alice.call("c1", "bob").await;
    for bob in [&mut bob1, &mut bob2, &mut bob3] {
        let (kind, cid, from, _) = bob.recv_conv().await;
        assert_eq!((kind.as_str(), cid.as_str(), from.as_str()), ("call", "c1", "alice"));
    }
    bob2.say("accept", "c1", "alice", json!({})).await;
    assert_eq!(alice.recv_conv().await.0, "accept");
    for bob in [&mut bob1, &mut bob3] {
        let (kind, _, from, _) = bob.recv_conv().await;
        assert_eq!((kind.as_str(), from.as_str()), ("bye", "alice"));
    }
    // A late answer from a losing client is refused; the winner carries on.
    bob1.say("accept", "c1", "alice", json!({})).await;
    bob1.recv_error(ErrorCode::NotParty).await;
    alice.say("offer", "c1", "bob", json!({"sdp": "v=0"})).await;
    assert_eq!(bob2.recv_conv().await.0, "offer");
    bob1.expect_silence(QUIET).await;
    bob3.expect_silence(QUIET).await;

    // First reject decides too.
    let mut carol = server.login("carol").await;
    carol.call("c2", "bob").await;
    for bob in [&mut bob1, &mut bob2, &mut bob3] {
        assert_eq!(bob.recv_conv().await.0, "call");
    }
    bob3.say("reject", "c2", "carol", json!({})).await;
    assert_eq!(carol.recv_conv().await.0, "reject");
    for bob in [&mut bob1, &mut bob2] {
        let (kind, cid, _, _) = bob.recv_conv().await;
        assert_eq!((kind.as_str(), cid.as_str()), ("bye", "c2"));
    }
}

#[tokio::test]
async fn third_party_frames_are_refused() {
    let server = TestServer::dev().await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    let mut mallory = server.login("mallory").await;
    alice.call("c1", "bob").await;
    bob.recv_conv().await;
    bob.say("accept", "c1", "alice", json!({})).await;
    alice.recv_conv().await;
    for to in ["alice", "bob"] {
        mallory.say("candidate", "c1", to, json!({"sdp": "candidate:evil"})).await;
        mallory.recv_error(ErrorCode::NotParty).await;
        mallory.say("bye", "c1", to, json!({})).await;
        mallory.recv_error(ErrorCode::NotParty).await;
    }
    // Hijacking the cid with a new call is refused too.
    mallory.call("c1", "bob").await;
    mallory.recv_error(ErrorCode::CidInUse).await;
    alice.expect_silence(QUIET).await;
    bob.expect_silence(QUIET).await;
    // The conversation still works.
    alice.say("offer", "c1", "bob", json!({"sdp": "v=0"})).await;
    assert_eq!(bob.recv_conv().await.0, "offer");
}

#[tokio::test]
async fn forged_from_is_ignored() {
    let server = TestServer::dev().await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    alice
        .send_json(
            json!({"type": "call", "cid": "c1", "to": "bob", "from": "president", "msg": {}}),
        )
        .await;
    let (_, _, from, _) = bob.recv_conv().await;
    assert_eq!(from, "alice");
}

#[tokio::test]
async fn call_to_absent_uid_gets_unreachable() {
    let server = TestServer::dev().await;
    let mut alice = server.login("alice").await;
    alice.call("c1", "nobody").await;
    let raw = alice.recv_json().await;
    assert_eq!(raw["type"], "unreachable");
    assert_eq!(raw["cid"], "c1");
    assert_eq!(raw["from"], "nobody");
    // The cid was never taken.
    let _bob = server.login("nobody").await;
    alice.call("c1", "nobody").await;
    alice.expect_silence(QUIET).await;
}

#[tokio::test]
async fn call_to_a_uid_of_another_app_is_unreachable() {
    let mut config = wilddog_server::ServerConfig::from_toml_str(
        "[[apps]]\nid = 'one'\nsecret = 's1'\n[[apps]]\nid = 'two'\nsecret = 's2'",
    )
    .unwrap();
    config.limits.idle_timeout = Duration::from_secs(30);
    let server = TestServer::start(config.clone()).await;
    let mut alice = server.open().await;
    alice
        .connect(
            "one",
            &wilddog_server::mint_token(&config, "one", "alice", Duration::from_secs(60)).unwrap(),
        )
        .await;
    let mut bob = server.open().await;
    bob.connect(
        "two",
        &wilddog_server::mint_token(&config, "two", "bob", Duration::from_secs(60)).unwrap(),
    )
    .await;
    alice.call("c1", "bob").await;
    assert_eq!(
        alice.recv().await,
        ServerFrame::Unreachable { cid: "c1".into(), from: "bob".into() }
    );
    bob.expect_silence(QUIET).await;
}

#[tokio::test]
async fn telemetry_is_acknowledged_and_not_relayed() {
    let server = TestServer::dev().await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    for (kind, tk) in [
        ("device", TelemetryKind::Device),
        ("start", TelemetryKind::Start),
        ("end", TelemetryKind::End),
    ] {
        alice.send_json(json!({"type": kind, "cid": "c9", "to": "bob", "msg": {"x": 1}})).await;
        assert_eq!(
            alice.recv().await,
            ServerFrame::TelemetryAck { kind: tk, cid: Some("c9".into()), code: 0 }
        );
    }
    alice.send_json(json!({"type": "quality", "cid": "c9", "msg": {"rtt": 3}})).await;
    alice.send_text("17").await; // heartbeat
    alice.expect_silence(QUIET).await;
    bob.expect_silence(QUIET).await;
}
