//! Reconnect grace over real sockets: a party whose connection is lost mid-call comes back
//! on a new socket and carries on with the same `cid`.

mod common;

use std::time::Duration;

use common::{Client, TestServer};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use wilddog_protocol::{Body, ErrorCode};
use wilddog_server::ServerConfig;

const QUIET: Duration = Duration::from_millis(300);
const AUTHENTICATED: &str = "wilddog_authenticated_connections";

/// alice calls bob, bob accepts, the first offer/answer go through: a live call `c1`.
async fn live_call(server: &TestServer) -> (Client, Client) {
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    alice.call("c1", "bob").await;
    assert_eq!(bob.recv_conv().await.0, "call");
    bob.say("accept", "c1", "alice", json!({})).await;
    assert_eq!(alice.recv_conv().await.0, "accept");
    alice.say("offer", "c1", "bob", json!({"sdp": "v=0 first"})).await;
    assert_eq!(bob.recv_conv().await.0, "offer");
    bob.say("answer", "c1", "alice", json!({"sdp": "v=0 first answer"})).await;
    assert_eq!(alice.recv_conv().await.0, "answer");
    (alice, bob)
}

#[tokio::test]
async fn caller_dropped_abruptly_reconnects_and_restarts_ice_on_the_same_cid() {
    let server = TestServer::dev().await; // default grace: 10 s
    let (alice, mut bob) = live_call(&server).await;
    alice.abort(); // TCP reset, no close frame
    server.wait_metric(AUTHENTICATED, 1).await;
    bob.expect_silence(QUIET).await; // no bye: alice may come back
    assert_eq!(server.metric("wilddog_conversations").await, 1);

    let mut alice = server.login("alice").await;
    alice.say("offer", "c1", "bob", json!({"sdp": "v=0 restart", "restartId": "r-1"})).await;
    let (kind, cid, from, body) = bob.recv_conv().await;
    assert_eq!((kind.as_str(), cid.as_str(), from.as_str()), ("offer", "c1", "alice"));
    let Body::Offer(offer) = body else { unreachable!() };
    assert_eq!((offer.sdp.as_str(), offer.restart_id), ("v=0 restart", Some(json!("r-1"))));
    bob.say("answer", "c1", "alice", json!({"sdp": "v=0 restart answer", "restartId": "r-1"}))
        .await;
    let (kind, cid, from, body) = alice.recv_conv().await;
    assert_eq!((kind.as_str(), cid.as_str(), from.as_str()), ("answer", "c1", "bob"));
    let Body::Answer(answer) = body else { unreachable!() };
    assert_eq!(answer.restart_id, Some(json!("r-1")));
    // Candidates both ways, then a normal hang-up.
    bob.say("candidate", "c1", "alice", json!({"sdpMLineIndex": 0, "sdp": "candidate:b"})).await;
    assert_eq!(alice.recv_conv().await.0, "candidate");
    alice.say("candidate", "c1", "bob", json!({"sdpMLineIndex": 0, "sdp": "candidate:a"})).await;
    assert_eq!(bob.recv_conv().await.0, "candidate");
    alice.say("bye", "c1", "bob", json!({})).await;
    assert_eq!(bob.recv_conv().await.0, "bye");
    assert_eq!(server.metric("wilddog_conversations").await, 0);
    alice.expect_silence(QUIET).await;
}

#[tokio::test]
async fn callee_gets_what_was_sent_while_away_then_asks_for_an_ice_restart() {
    let server = TestServer::dev().await;
    let (mut alice, bob) = live_call(&server).await;
    drop(bob); // FIN without a close frame
    server.wait_metric(AUTHENTICATED, 1).await;
    alice.say("candidate", "c1", "bob", json!({"sdpMLineIndex": 0, "sdp": "candidate:late"})).await;
    alice.expect_silence(QUIET).await;

    let mut bob = server.login("bob").await;
    let (kind, cid, from, body) = bob.recv_conv().await;
    assert_eq!((kind.as_str(), cid.as_str(), from.as_str()), ("candidate", "c1", "alice"));
    let Body::Candidate(c) = body else { unreachable!() };
    assert_eq!(c.sdp, "candidate:late");
    bob.say("restartice", "c1", "alice", json!({})).await;
    assert_eq!(alice.recv_conv().await.0, "restartice");
    alice.say("offer", "c1", "bob", json!({"sdp": "v=0 r", "restartId": 2})).await;
    assert_eq!(bob.recv_conv().await.0, "offer");
}

#[tokio::test]
async fn peer_hangs_up_meanwhile_and_the_returning_client_gets_bye() {
    let server = TestServer::dev().await;
    let (mut alice, bob) = live_call(&server).await;
    bob.abort();
    server.wait_metric(AUTHENTICATED, 1).await;
    alice.say("bye", "c1", "bob", json!({})).await;
    alice.expect_silence(QUIET).await;
    assert_eq!(server.metric("wilddog_conversations").await, 0);
    let mut bob = server.login("bob").await;
    let (kind, cid, from, _) = bob.recv_conv().await;
    assert_eq!((kind.as_str(), cid.as_str(), from.as_str()), ("bye", "c1", "alice"));
    bob.say("restartice", "c1", "alice", json!({})).await;
    bob.recv_error(ErrorCode::UnknownConversation).await;
    alice.expect_silence(QUIET).await;
}

/// Bob's socket went half-open (the server still writes to it, nobody reads): alice's `bye`
/// went there. Bob's new connection resumes the call and hears the `bye` at once, instead
/// of a refusal it would retry for 15 s.
#[tokio::test]
async fn resume_of_a_call_that_ended_meanwhile_gets_bye() {
    let server = TestServer::dev().await;
    let (mut alice, _half_open_bob) = live_call(&server).await;
    alice.say("bye", "c1", "bob", json!({})).await;
    assert_eq!(server.metric("wilddog_conversations").await, 0);
    let mut bob = server.login("bob").await;
    bob.say("resume", "c1", "alice", json!({"role": "callee"})).await;
    let (kind, cid, from, _) = bob.recv_conv().await;
    assert_eq!((kind.as_str(), cid.as_str(), from.as_str()), ("bye", "c1", "alice"));
    alice.expect_silence(QUIET).await;
}

#[tokio::test]
async fn a_client_closing_with_an_error_code_gets_the_grace() {
    let server = TestServer::dev().await;
    let (mut alice, mut bob) = live_call(&server).await;
    // 4000: an application code, e.g. a client tearing down a socket it thinks is broken.
    bob.ws
        .close(Some(CloseFrame { code: 4000.into(), reason: "reconnecting".into() }))
        .await
        .unwrap();
    while let Some(Ok(m)) = bob.ws.next().await {
        if let Message::Close(_) = m {
            break;
        }
    }
    server.wait_metric(AUTHENTICATED, 1).await;
    alice.expect_silence(QUIET).await;
    let mut bob = server.login("bob").await;
    bob.say("restartice", "c1", "alice", json!({})).await;
    assert_eq!(alice.recv_conv().await.0, "restartice");
}

#[tokio::test]
async fn a_client_back_before_its_old_socket_died_takes_the_call_with_its_first_frame() {
    let server = TestServer::dev().await;
    let (mut alice, bob) = live_call(&server).await;
    // bob's client noticed the network change first and is already back.
    let mut bob2 = server.login("bob").await;
    drop(bob);
    server.wait_metric(AUTHENTICATED, 2).await;
    alice.say("candidate", "c1", "bob", json!({"sdp": "candidate:kept"})).await;
    bob2.expect_silence(QUIET).await; // not bound yet: bob2 might be another device
    bob2.say("restartice", "c1", "alice", json!({})).await;
    let (kind, _, _, body) = bob2.recv_conv().await;
    assert_eq!(kind, "candidate");
    let Body::Candidate(c) = body else { unreachable!() };
    assert_eq!(c.sdp, "candidate:kept");
    assert_eq!(alice.recv_conv().await.0, "restartice");
}

#[tokio::test]
async fn a_reaped_silent_party_gets_the_grace_too() {
    let mut config = ServerConfig::development();
    config.limits.idle_timeout = Duration::from_secs(1);
    config.limits.reconnect_grace = Duration::from_secs(3);
    let server = TestServer::start(config).await;
    let (mut alice, mut bob) = live_call(&server).await;
    // bob reads nothing (no pong) and sends nothing: reaped at 1 s. alice keeps talking.
    let quiet_until = tokio::time::Instant::now() + Duration::from_millis(1800);
    while tokio::time::Instant::now() < quiet_until {
        alice.send_text("1").await; // heartbeat
        if let Ok(m) = tokio::time::timeout(Duration::from_millis(200), alice.ws.next()).await {
            match m {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                other => panic!("alice got {other:?} while bob is away"),
            }
        }
    }
    let reason = loop {
        match bob.ws.next().await {
            Some(Ok(Message::Ping(_))) => continue,
            Some(Ok(Message::Close(Some(f)))) => break f.reason.to_string(),
            other => panic!("{other:?}"),
        }
    };
    assert!(reason.contains("idle"), "{reason}");
    let _ = bob.ws.send(Message::Close(None)).await;
    drop(bob);
    let mut bob = server.login("bob").await;
    bob.say("restartice", "c1", "alice", json!({})).await;
    assert_eq!(alice.recv_conv().await.0, "restartice");
}

#[tokio::test]
async fn nobody_back_within_the_grace_the_peer_gets_bye_once() {
    let mut config = ServerConfig::development();
    config.limits.reconnect_grace = Duration::from_millis(500);
    let server = TestServer::start(config).await;
    let (mut alice, bob) = live_call(&server).await;
    bob.abort();
    let (kind, cid, from, _) = alice.recv_conv().await;
    assert_eq!((kind.as_str(), cid.as_str(), from.as_str()), ("bye", "c1", "bob"));
    alice.expect_silence(Duration::from_millis(800)).await;
    assert_eq!(server.metric("wilddog_conversations").await, 0);
    // Too late: bob finds nothing.
    let mut bob = server.login("bob").await;
    bob.say("restartice", "c1", "alice", json!({})).await;
    bob.recv_error(ErrorCode::UnknownConversation).await;
}

/// Reads `client` for `d`, answering pings (tungstenite pongs while it is read) and
/// asserting nothing else arrives.
async fn stay_alive(client: &mut Client, d: Duration) {
    let until = tokio::time::Instant::now() + d;
    while let Ok(m) = tokio::time::timeout_at(until, client.ws.next()).await {
        match m {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_half_open_caller_is_taken_over_and_the_restart_offer_arrives_within_3_s() {
    let server = TestServer::dev().await; // takeover probe: 2 s
    let (alice, mut bob) = live_call(&server).await;
    // alice's socket stops reading without closing (a dead Wi-Fi): it never answers a ping.
    let half_open = alice;
    // alice logs in again and re-offers, as the original client does (no `resume`).
    let mut alice = server.login("alice").await;
    let sent = tokio::time::Instant::now();
    alice.say("offer", "c1", "bob", json!({"sdp": "v=0 restart", "restartId": 1})).await;
    let (kind, cid, from, _) = bob.recv_conv().await;
    let waited = sent.elapsed();
    assert_eq!((kind.as_str(), cid.as_str(), from.as_str()), ("offer", "c1", "alice"));
    assert!(waited < Duration::from_secs(3), "the restart took {waited:?}");
    // The call goes on between the new connection and bob.
    bob.say("answer", "c1", "alice", json!({"sdp": "v=0 restart answer", "restartId": 1})).await;
    assert_eq!(alice.recv_conv().await.0, "answer");
    bob.say("bye", "c1", "alice", json!({})).await;
    assert_eq!(alice.recv_conv().await.0, "bye");
    // The silent socket was closed by the server (a ping, then the close frame).
    let mut half_open = half_open;
    let reason = half_open.recv_close(wilddog_server::close_code::GOING_AWAY).await;
    assert!(reason.contains("ping"), "{reason}");
    bob.expect_silence(QUIET).await;
}

#[tokio::test]
async fn a_half_open_callee_is_taken_over_by_its_resume() {
    let mut config = ServerConfig::development();
    config.limits.takeover_probe = Duration::from_millis(500);
    let server = TestServer::start(config).await;
    let (mut alice, bob) = live_call(&server).await;
    let _half_open = bob;
    let mut bob = server.login("bob").await;
    bob.send_json(json!({"type": "resume", "cid": "c1", "to": "alice", "msg": {"role": "callee"}}))
        .await;
    // alice trickles a candidate to the half-open socket meanwhile: bob gets it after the probe.
    alice.say("candidate", "c1", "bob", json!({"sdp": "candidate:during-probe"})).await;
    bob.say("restartice", "c1", "alice", json!({})).await;
    let (kind, _, _, body) = bob.recv_conv().await;
    let Body::Candidate(c) = body else { panic!("{kind}") };
    assert_eq!(c.sdp, "candidate:during-probe");
    assert_eq!(alice.recv_conv().await.0, "restartice");
    alice.say("offer", "c1", "bob", json!({"sdp": "v=0 r", "restartId": 2})).await;
    assert_eq!(bob.recv_conv().await.0, "offer");
}

// Several threads: the probe's task and the socket's run at once, as in a served node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_that_ends_while_it_is_probed_has_not_answered() {
    let mut config = ServerConfig::development();
    config.limits.takeover_probe = Duration::from_secs(5);
    let server = TestServer::start(config).await;
    let (mut alice, bob) = live_call(&server).await;
    // bob's new connection resumes while the old one still looks alive: it is probed.
    let mut new_bob = server.login("bob").await;
    new_bob
        .send_json(json!({"type": "resume", "cid": "c1", "to": "alice", "msg": {"role": "callee"}}))
        .await;
    tokio::time::sleep(QUIET).await;
    // The old socket is reset (a dropped client), which is no answer to the ping: the call
    // passes to the new connection at once, not refused (`not_party`).
    bob.abort();
    new_bob.say("restartice", "c1", "alice", json!({})).await;
    assert_eq!(alice.recv_conv().await.0, "restartice");
    alice.say("offer", "c1", "bob", json!({"sdp": "v=0 r", "restartId": 2})).await;
    assert_eq!(new_bob.recv_conv().await.0, "offer");
}

#[tokio::test]
async fn a_live_connection_answers_the_probe_and_keeps_its_call() {
    let mut config = ServerConfig::development();
    config.limits.takeover_probe = Duration::from_secs(5);
    let server = TestServer::start(config).await;
    let (mut alice, mut bob) = live_call(&server).await;
    // Another device of bob claims the call; bob's connection is alive and answers the ping.
    let mut other = server.login("bob").await;
    let sent = tokio::time::Instant::now();
    other.say("restartice", "c1", "alice", json!({})).await;
    let (_, refused) = tokio::join!(
        stay_alive(&mut bob, Duration::from_millis(500)),
        other.recv_error(ErrorCode::NotParty)
    );
    assert!(sent.elapsed() < Duration::from_secs(2), "refused at the pong, not the deadline");
    assert!(refused.contains("alive"), "{refused}");
    alice.expect_silence(QUIET).await;
    alice.say("candidate", "c1", "bob", json!({"sdp": "candidate:x"})).await;
    assert_eq!(bob.recv_conv().await.0, "candidate");
}

#[tokio::test]
async fn a_restarted_server_carries_on_a_live_call_after_both_resume() {
    let server = TestServer::dev().await;
    let addr = server.addr;
    let (mut alice, mut bob) = live_call(&server).await;
    server.shutdown().await;
    alice.recv_close(wilddog_server::close_code::GOING_AWAY).await;
    bob.recv_close(wilddog_server::close_code::GOING_AWAY).await;

    // The same address, a server that knows nothing: both come back and resume c1.
    let server = TestServer::start_on(addr, ServerConfig::development()).await;
    let mut alice = server.login("alice").await;
    alice
        .send_json(json!({"type": "resume", "cid": "c1", "to": "bob", "msg": {"role": "caller"}}))
        .await;
    let mut bob = server.login("bob").await;
    bob.send_json(json!({"type": "resume", "cid": "c1", "to": "alice", "msg": {"role": "callee"}}))
        .await;
    bob.say("restartice", "c1", "alice", json!({})).await;
    assert_eq!(alice.recv_conv().await.0, "restartice");
    alice.say("offer", "c1", "bob", json!({"sdp": "v=0 again", "restartId": 1})).await;
    let (kind, cid, from, _) = bob.recv_conv().await;
    assert_eq!((kind.as_str(), cid.as_str(), from.as_str()), ("offer", "c1", "alice"));
    bob.say("answer", "c1", "alice", json!({"sdp": "v=0 again", "restartId": 1})).await;
    assert_eq!(alice.recv_conv().await.0, "answer");
    // A later hang-up reaches the peer.
    bob.say("bye", "c1", "alice", json!({})).await;
    let (kind, cid, from, _) = alice.recv_conv().await;
    assert_eq!((kind.as_str(), cid.as_str(), from.as_str()), ("bye", "c1", "bob"));
    assert_eq!(server.metric("wilddog_conversations").await, 0);
    server.shutdown().await;
}

#[tokio::test]
async fn a_restarted_server_carries_on_an_old_clients_call_from_its_restart() {
    let server = TestServer::dev().await;
    let addr = server.addr;
    let (alice, bob) = live_call(&server).await;
    server.shutdown().await;
    drop((alice, bob));
    let server = TestServer::start_on(addr, ServerConfig::development()).await;
    // Old clients: the caller re-offers, the callee answers it; neither sends `resume`.
    let mut bob = server.login("bob").await;
    let mut alice = server.login("alice").await;
    alice.say("offer", "c1", "bob", json!({"sdp": "v=0 again", "restartId": 9})).await;
    // bob was connected before the conversation was re-created: he binds by answering.
    bob.expect_silence(QUIET).await;
    bob.say("answer", "c1", "alice", json!({"sdp": "v=0 again", "restartId": 9})).await;
    let (kind, _, _, _) = bob.recv_conv().await;
    assert_eq!(kind, "offer", "what was kept for him comes first");
    assert_eq!(alice.recv_conv().await.0, "answer");
    alice.say("bye", "c1", "bob", json!({})).await;
    assert_eq!(bob.recv_conv().await.0, "bye");
    server.shutdown().await;
}
