//! Service endpoints over real sockets: a uid served by a pool of connections that declared
//! `connect.msg.service`; each call rings one free endpoint, `busy` when all are busy.

mod common;

use std::time::{Duration, Instant};

use common::{Client, TestServer};
use serde_json::json;
use wilddog_server::ServerConfig;

const QUIET: Duration = Duration::from_millis(300);

/// Expects a `call` on `cid` from `from`.
async fn rung(endpoint: &mut Client, cid: &str, from: &str) {
    let (kind, c, f, _) = endpoint.recv_conv().await;
    assert_eq!((kind.as_str(), c.as_str(), f.as_str()), ("call", cid, from));
}

#[tokio::test]
async fn each_call_rings_one_free_endpoint_and_busy_comes_when_all_are_busy() {
    let server = TestServer::dev().await;
    let mut bot1 = server.login_service("bot").await;
    let mut bot2 = server.login_service("bot").await;
    // A plain connection of the same uid is never rung while the uid has a pool.
    let mut watcher = server.login("bot").await;
    let mut alice = server.login("alice").await;
    let mut carol = server.login("carol").await;
    let mut dave = server.login("dave").await;

    alice.call("c1", "bot").await;
    rung(&mut bot1, "c1", "alice").await;
    bot2.expect_silence(QUIET).await;
    bot1.say("accept", "c1", "alice", json!({})).await;
    assert_eq!(alice.recv_conv().await.0, "accept");

    carol.call("c2", "bot").await;
    rung(&mut bot2, "c2", "carol").await;
    bot1.expect_silence(QUIET).await;

    // Both busy: the server answers dave `busy` from bot itself, exactly this frame.
    dave.call("c3", "bot").await;
    assert_eq!(
        dave.recv_json().await,
        json!({"type": "busy", "cid": "c3", "from": "bot", "msg": {}})
    );
    watcher.expect_silence(QUIET).await;
    bot1.expect_silence(Duration::ZERO).await;
    bot2.expect_silence(Duration::ZERO).await;

    // alice hangs up: bot1 is free again and takes dave's next call.
    alice.say("bye", "c1", "bot", json!({})).await;
    assert_eq!(bot1.recv_conv().await.0, "bye");
    dave.call("c4", "bot").await;
    rung(&mut bot1, "c4", "dave").await;

    // bot2's socket dies while ringing: its slot goes with it; carol hears bye.
    bot2.abort();
    assert_eq!(carol.recv_conv().await.0, "bye");
    carol.call("c5", "bot").await;
    assert_eq!(carol.recv_json().await["type"], "busy", "bot1 rings for dave, bot2 is gone");
    // bot1 rejects dave: free, and the next call is its.
    bot1.say("reject", "c4", "dave", json!({})).await;
    assert_eq!(dave.recv_conv().await.0, "reject");
    carol.call("c6", "bot").await;
    rung(&mut bot1, "c6", "carol").await;
    watcher.expect_silence(Duration::ZERO).await;
    server.shutdown().await;
}

#[tokio::test]
async fn without_service_endpoints_every_connection_rings_as_before() {
    let server = TestServer::dev().await;
    let mut bob1 = server.login("bob").await;
    let mut bob2 = server.login("bob").await;
    let mut alice = server.login("alice").await;
    alice.call("c1", "bob").await;
    rung(&mut bob1, "c1", "alice").await;
    rung(&mut bob2, "c1", "alice").await;
    server.shutdown().await;
}

/// Anyone may resume a made-up conversation naming a pool's uid (a `resume`, or an old
/// client's restart `offer`): before, the conversation the server re-created took the pool's
/// next endpoint to connect, and every caller heard `busy` for as long as the forger stayed.
#[tokio::test]
async fn a_forged_resume_of_a_made_up_call_never_takes_a_service_endpoint() {
    let mut config = ServerConfig::development();
    let grace = Duration::from_secs(2);
    config.limits.reconnect_grace = grace;
    let server = TestServer::start(config).await;
    let bot1 = server.login_service("bot").await;
    let mut mallory = server.login("mallory").await;
    let forged_at = Instant::now();
    let resume = json!({"type": "resume", "cid": "fake1", "to": "bot", "msg": {"role": "caller"}});
    mallory.send_json(resume).await;
    mallory.say("offer", "fake2", "bot", json!({"sdp": "v=0\r\n", "restartId": "r1"})).await;
    mallory.expect_silence(QUIET).await;
    // The bot's runner reconnects (a new socket after a network blip): its endpoint is free.
    bot1.abort();
    let mut bot2 = server.login_service("bot").await;
    bot2.expect_silence(QUIET).await;

    // A real caller is rung on it, not told `busy`.
    let mut alice = server.login("alice").await;
    alice.call("c1", "bot").await;
    rung(&mut bot2, "c1", "alice").await;
    bot2.say("accept", "c1", "alice", json!({})).await;
    assert_eq!(alice.recv_conv().await.0, "accept");

    // Nobody of `bot` ever resumed mallory's conversations: they end after the grace, and
    // she hears `bye` from bot for each.
    let mut ended = Vec::new();
    for _ in 0..2 {
        let (kind, cid, from, _) = mallory.recv_conv().await;
        assert_eq!((kind.as_str(), from.as_str()), ("bye", "bot"));
        ended.push(cid);
    }
    ended.sort();
    assert_eq!(ended, ["fake1", "fake2"]);
    assert!(forged_at.elapsed() >= grace, "not before the grace: a real peer may come back");
    assert_eq!(server.metric("wilddog_conversations").await, 1, "alice's call only");
    bot2.expect_silence(Duration::ZERO).await;
    alice.expect_silence(Duration::ZERO).await;
    server.shutdown().await;
}
