//! Several server nodes on one real Redis (Debian `redis-server`, started here on a free
//! loopback port), with a real load balancer (Debian `haproxy`) where clients must find
//! another node: calls across nodes, 200 calls over three nodes, a node killed mid-call, a
//! rolling drain, a Redis outage.
//!
//! Nodes run in this process (`wilddog_server::run` on port 0) except where one is killed or
//! drained: there each node is a process of its own (this test binary run again as
//! `node_process_for_other_tests`), so that SIGKILL and SIGTERM are real.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Client, TestServer, WAIT};
use serde_json::json;
use wilddog_protocol::{Body, ServerFrame};
use wilddog_server::{ClusterConfig, DEV_APP_ID, ServerConfig, mint_token};

const QUIET: Duration = Duration::from_millis(300);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A `redis-server` on a free loopback port, stopped when dropped.
struct Redis {
    port: u16,
    child: Option<Child>,
}

impl Redis {
    fn start() -> Self {
        let mut r = Redis { port: free_port(), child: None };
        r.restart();
        r
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Starts it (again) on its port, with no persistence: a restart forgets everything.
    fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/install-deps.sh installs it)");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + WAIT;
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

fn node_config(redis: &Redis, grace: Duration) -> ServerConfig {
    let mut config = ServerConfig::development();
    config.builtin_stun = false;
    config.ice_servers = vec![wilddog_server::IceServerConfig {
        urls: wilddog_server::UrlList::One("stun:127.0.0.1:3478".into()),
        username: None,
        credential: None,
    }];
    config.limits.reconnect_grace = grace;
    config.limits.rate_limit_per_sec = 10_000;
    config.limits.rate_limit_burst = 10_000;
    let mut cluster = ClusterConfig::new(redis.url());
    cluster.node_ttl = Duration::from_millis(800);
    cluster.drain_notice = Duration::from_millis(600);
    cluster.drain_deadline = Duration::from_secs(5);
    config.cluster = Some(cluster);
    config
}

fn token(uid: &str) -> String {
    mint_token(&ServerConfig::development(), DEV_APP_ID, uid, Duration::from_secs(600)).unwrap()
}

async fn login(addr: SocketAddr, uid: &str) -> Client {
    let mut c = Client::open(&format!("ws://{addr}/ws")).await;
    c.connect(DEV_APP_ID, &token(uid)).await;
    c
}

/// Waits until the node's presence is in Redis (a call from another node finds it).
async fn settle() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}

/// Expects a conversation frame of `kind` on `cid` from `from`; returns its body.
async fn expect(c: &mut Client, kind: &str, cid: &str, from: &str) -> Body {
    let (k, c_, f, body) = c.recv_conv().await;
    assert_eq!((k.as_str(), c_.as_str(), f.as_str()), (kind, cid, from));
    body
}

/// A whole call from `caller` (uid `a`) to `callee` (uid `b`) on `cid`: every frame type,
/// 20 candidates each way, each received once, in order, with `from` as authenticated.
async fn whole_call(caller: &mut Client, a: &str, callee: &mut Client, b: &str, cid: &str) {
    caller.call(cid, b).await;
    let Body::Call(call) = expect(callee, "call", cid, a).await else { unreachable!() };
    assert_eq!(call.data_text().as_deref(), Some("hello"));
    assert!(call.turn_credential.is_some());
    callee.say("accept", cid, a, json!({})).await;
    expect(caller, "accept", cid, b).await;
    caller.say("offer", cid, b, json!({"sdp": "v=0 offer"})).await;
    expect(callee, "offer", cid, a).await;
    callee.say("answer", cid, a, json!({"sdp": "v=0 answer"})).await;
    expect(caller, "answer", cid, b).await;
    for i in 0..20 {
        caller.say("candidate", cid, b, json!({"sdpMLineIndex": 0, "sdp": format!("a{i}")})).await;
        callee.say("candidate", cid, a, json!({"sdpMLineIndex": 0, "sdp": format!("b{i}")})).await;
    }
    for i in 0..20 {
        let Body::Candidate(c) = expect(callee, "candidate", cid, a).await else { unreachable!() };
        assert_eq!(c.sdp, format!("a{i}"));
        let Body::Candidate(c) = expect(caller, "candidate", cid, b).await else { unreachable!() };
        assert_eq!(c.sdp, format!("b{i}"));
    }
    callee.say("restartice", cid, a, json!({})).await;
    expect(caller, "restartice", cid, b).await;
    caller.say("bye", cid, b, json!({})).await;
    expect(callee, "bye", cid, a).await;
    caller.expect_silence(QUIET).await;
    callee.expect_silence(Duration::ZERO).await;
}

#[tokio::test]
async fn a_whole_call_across_two_and_three_nodes() {
    let redis = Redis::start();
    let config = node_config(&redis, Duration::from_secs(10));
    let a = TestServer::start(config.clone()).await;
    let b = TestServer::start(config.clone()).await;
    let mut alice = login(a.addr, "alice").await;
    let mut bob = login(b.addr, "bob").await;
    settle().await;
    whole_call(&mut alice, "alice", &mut bob, "bob", "c1").await;
    whole_call(&mut bob, "bob", &mut alice, "alice", "c2").await;
    assert!(a.metric("wilddog_cross_node_frames_total").await >= 40);
    assert_eq!(a.metric("wilddog_redis_connected").await, 1);
    assert_eq!(a.metric("wilddog_presence_entries").await, 1);

    // A third node.
    let c = TestServer::start(config).await;
    let mut carol = login(c.addr, "carol").await;
    settle().await;
    whole_call(&mut carol, "carol", &mut alice, "alice", "c3").await;
    whole_call(&mut bob, "bob", &mut carol, "carol", "c4").await;
    // Nobody anywhere: unreachable; a uid on two nodes rings on both.
    carol.call("c5", "nobody").await;
    match carol.recv().await {
        ServerFrame::Unreachable { cid, from } => {
            assert_eq!((cid.as_str(), from.as_str()), ("c5", "nobody"))
        }
        other => panic!("{other:?}"),
    }
    let mut bob_on_c = login(c.addr, "bob").await;
    settle().await;
    alice.call("c6", "bob").await;
    expect(&mut bob, "call", "c6", "alice").await;
    expect(&mut bob_on_c, "call", "c6", "alice").await;
    bob_on_c.say("accept", "c6", "alice", json!({})).await;
    expect(&mut alice, "accept", "c6", "bob").await;
    expect(&mut bob, "bye", "c6", "alice").await;
    alice.say("offer", "c6", "bob", json!({"sdp": "x"})).await;
    expect(&mut bob_on_c, "offer", "c6", "alice").await;
    bob.expect_silence(QUIET).await;
}

#[tokio::test]
async fn two_hundred_calls_over_three_nodes_each_reach_their_callee_only() {
    let redis = Redis::start();
    let config = node_config(&redis, Duration::from_secs(10));
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(TestServer::start(config.clone()).await);
    }
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();
    const CALLS: usize = 200;
    let mut callees = Vec::new();
    for i in 0..CALLS {
        callees.push(login(addrs[(i + 1) % 3], &format!("callee{i}")).await);
    }
    let mut callers = Vec::new();
    for i in 0..CALLS {
        callers.push(login(addrs[i % 3], &format!("caller{i}")).await);
    }
    settle().await;
    let mut tasks = Vec::new();
    for (i, (mut caller, mut callee)) in callers.into_iter().zip(callees).enumerate() {
        tasks.push(tokio::spawn(async move {
            let (a, b, cid) = (format!("caller{i}"), format!("callee{i}"), format!("call-{i}"));
            caller
                .send_json(
                    json!({"type": "call", "cid": cid, "to": b, "msg": {"data": i.to_string()}}),
                )
                .await;
            let Body::Call(call) = expect(&mut callee, "call", &cid, &a).await else {
                unreachable!()
            };
            assert_eq!(call.data_text(), Some(i.to_string()));
            callee.say("accept", &cid, &a, json!({})).await;
            expect(&mut caller, "accept", &cid, &b).await;
            caller.say("offer", &cid, &b, json!({"sdp": format!("offer {i}")})).await;
            let Body::Offer(o) = expect(&mut callee, "offer", &cid, &a).await else {
                unreachable!()
            };
            assert_eq!(o.sdp, format!("offer {i}"));
            callee.say("bye", &cid, &a, json!({})).await;
            expect(&mut caller, "bye", &cid, &b).await;
            (caller, callee)
        }));
    }
    let mut ends = Vec::new();
    for t in tasks {
        ends.push(t.await.unwrap());
    }
    // Nobody got anything else.
    for (caller, callee) in &mut ends {
        caller.expect_silence(Duration::ZERO).await;
        callee.expect_silence(Duration::ZERO).await;
    }
    let mut cross = 0;
    for n in &nodes {
        cross += n.metric("wilddog_cross_node_frames_total").await;
        assert_eq!(n.metric("wilddog_conversations").await, 0);
    }
    assert!(cross >= CALLS as i64 * 4, "{cross} cross-node frames");
}

#[tokio::test]
async fn redis_down_for_ten_seconds_local_calls_go_on_cross_node_routing_resumes() {
    let mut redis = Redis::start();
    let config = node_config(&redis, Duration::from_secs(30));
    let a = TestServer::start(config.clone()).await;
    let b = TestServer::start(config).await;
    let mut alice = login(a.addr, "alice").await;
    let mut bob = login(a.addr, "bob").await;
    let mut carol = login(a.addr, "carol").await;
    let mut dave = login(b.addr, "dave").await;
    settle().await;
    for (x, xu, y, yu, cid) in [
        (&mut alice, "alice", &mut bob, "bob", "local"),
        (&mut carol, "carol", &mut dave, "dave", "cross"),
    ] {
        x.call(cid, yu).await;
        expect(y, "call", cid, xu).await;
        y.say("accept", cid, xu, json!({})).await;
        expect(x, "accept", cid, yu).await;
    }

    redis.stop();
    let degraded = tokio::time::Instant::now();
    a.wait_metric("wilddog_redis_connected", 0).await;
    let (status, _, body) = a.http_get("/readyz").await;
    assert_eq!(status, 200);
    assert!(body.contains("degraded"), "{body}");
    // The call on one node goes on, both ways.
    for i in 0..5 {
        alice.say("candidate", "local", "bob", json!({"sdp": format!("a{i}")})).await;
        let Body::Candidate(c) = expect(&mut bob, "candidate", "local", "alice").await else {
            unreachable!()
        };
        assert_eq!(c.sdp, format!("a{i}"));
        bob.say("candidate", "local", "alice", json!({"sdp": format!("b{i}")})).await;
        expect(&mut alice, "candidate", "local", "bob").await;
    }
    // Across nodes, frames wait for Redis.
    for i in 0..3 {
        carol.say("candidate", "cross", "dave", json!({"sdp": format!("kept{i}")})).await;
    }
    let mut alice2 = login(a.addr, "alice2").await;
    alice2.call("new-local", "bob").await;
    expect(&mut bob, "call", "new-local", "alice2").await;
    let rest = Duration::from_secs(10).saturating_sub(degraded.elapsed());
    tokio::time::sleep(rest).await;
    dave.expect_silence(Duration::ZERO).await;

    redis.restart();
    a.wait_metric("wilddog_redis_connected", 1).await;
    b.wait_metric("wilddog_redis_connected", 1).await;
    // What waited arrives, in order, once; then frames flow both ways again.
    for i in 0..3 {
        let Body::Candidate(c) = expect(&mut dave, "candidate", "cross", "carol").await else {
            unreachable!()
        };
        assert_eq!(c.sdp, format!("kept{i}"));
    }
    dave.say("candidate", "cross", "carol", json!({"sdp": "after"})).await;
    expect(&mut carol, "candidate", "cross", "dave").await;
    // A new call across nodes finds the callee (presence written back).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut erin = login(b.addr, "erin").await;
    settle().await;
    erin.call("new-cross", "alice").await;
    expect(&mut alice, "call", "new-cross", "erin").await;
    dave.expect_silence(QUIET).await;
    assert!(a.metric("wilddog_redis_errors_total").await > 0);
}
