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
    /// More arguments of `redis-server`.
    args: Vec<String>,
}

impl Redis {
    fn start() -> Self {
        Self::start_with(&[])
    }

    fn start_with(args: &[&str]) -> Self {
        let args = args.iter().map(|a| a.to_string()).collect();
        let mut r = Redis { port: free_port(), child: None, args };
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
            .args(&self.args)
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

#[tokio::test]
async fn a_burst_bigger_than_redis_buffers_for_a_slow_reader_loses_no_frame() {
    // Redis drops a pub/sub subscriber whose output buffer passes its limit (32 MB by
    // default: a node that reads slowly on a loaded machine at a few thousand frames/s) and
    // every message in that buffer. Here the limit is small, the burst big.
    let redis = Redis::start_with(&["--client-output-buffer-limit", "pubsub 16kb 8kb 1"]);
    let config = node_config(&redis, Duration::from_secs(10));
    let a = TestServer::start(config.clone()).await;
    let b = TestServer::start(config).await;
    let mut alice = login(a.addr, "alice").await;
    let mut bob = login(b.addr, "bob").await;
    settle().await;
    live(&mut alice, "alice", &mut bob, "bob", "burst").await;
    let pad = "x".repeat(2000);
    const FRAMES: usize = 600;
    // bob reads as the burst comes, as a client does, and alice keeps at most IN_FLIGHT
    // frames (256 KB, sixteen times what Redis buffers here) ahead of him: more not read
    // would overflow bob's outbound queue on his node (256 frames), which then drops him as
    // too slow, another limit. (Sent all at once, the burst tripped it on a loaded machine.)
    const IN_FLIGHT: usize = 128;
    let received = std::cell::Cell::new(0usize);
    let send = async {
        use futures_util::SinkExt;
        for i in 0..FRAMES {
            while i >= received.get() + IN_FLIGHT {
                alice.ws.flush().await.unwrap();
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let frame = json!({"type": "candidate", "cid": "burst", "to": "bob",
                "msg": {"sdpMLineIndex": 0, "sdp": format!("{i} {pad}")}});
            let text = tokio_tungstenite::tungstenite::Message::text(frame.to_string());
            alice.ws.feed(text).await.unwrap();
        }
        alice.ws.flush().await.unwrap();
    };
    let receive = async {
        for i in 0..FRAMES {
            let Body::Candidate(c) = expect(&mut bob, "candidate", "burst", "alice").await else {
                unreachable!()
            };
            assert!(c.sdp.starts_with(&format!("{i} ")), "frame {i}: {}", &c.sdp[..10]);
            received.set(i + 1);
        }
    };
    tokio::join!(send, receive);
    bob.expect_silence(QUIET).await;
    bob.say("candidate", "burst", "alice", json!({"sdp": "back"})).await;
    expect(&mut alice, "candidate", "burst", "bob").await;
}

// Nodes as processes, behind haproxy.

/// Not a test: the body of a node process for the tests below (this binary run again with
/// `WILDDOG_TEST_NODE_PORT` set). Serves until SIGTERM (drain) or SIGKILL.
#[test]
fn node_process_for_other_tests() {
    let Ok(port) = std::env::var("WILDDOG_TEST_NODE_PORT") else { return };
    // Its warnings go to the test's output (stderr is inherited).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
    let redis_url = std::env::var("WILDDOG_TEST_REDIS").expect("WILDDOG_TEST_REDIS");
    let grace_ms: u64 = std::env::var("WILDDOG_TEST_GRACE_MS").unwrap().parse().unwrap();
    let unused = Redis { port: 0, child: None, args: Vec::new() };
    let mut config = node_config(&unused, Duration::from_millis(grace_ms));
    if let Some(c) = config.cluster.as_mut() {
        c.redis_url = redis_url;
    }
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port.parse::<u16>().unwrap()))
            .await
            .unwrap();
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
        wilddog_server::run(listener, config, async move {
            term.recv().await;
        })
        .await
        .unwrap();
    });
}

/// A node process on `port`.
struct Node {
    port: u16,
    child: Child,
}

impl Node {
    async fn start(port: u16, redis: &Redis, grace: Duration) -> Self {
        let child = Command::new(std::env::current_exe().unwrap())
            .args(["node_process_for_other_tests", "--exact", "--nocapture", "--test-threads", "1"])
            .env("WILDDOG_TEST_NODE_PORT", port.to_string())
            .env("WILDDOG_TEST_REDIS", redis.url())
            .env("WILDDOG_TEST_GRACE_MS", grace.as_millis().to_string())
            // WILDDOG_TEST_NODE_LOG (e.g. `wilddog_server=debug`) to see what the nodes do.
            .env("RUST_LOG", std::env::var("WILDDOG_TEST_NODE_LOG").unwrap_or("warn".into()))
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let node = Node { port, child };
        node.wait_ready(200).await;
        node
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    async fn readyz(&self) -> Option<u16> {
        let connect = tokio::net::TcpStream::connect(self.addr()).await;
        if connect.is_err() {
            return None;
        }
        drop(connect);
        Some(common::http_get(self.addr(), "/readyz").await.0)
    }

    async fn wait_ready(&self, status: u16) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.readyz().await != Some(status) {
            assert!(tokio::time::Instant::now() < deadline, "node {} not {status}", self.port);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn terminate(&self) {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        assert!(status.is_ok_and(|s| s.success()));
    }

    async fn wait_exit(&mut self) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                assert!(status.success(), "node {} exited with {status}", self.port);
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "node {} did not exit", self.port);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// haproxy in front of the nodes: round robin, `/readyz` checked every 100 ms.
struct Balancer {
    port: u16,
    child: Child,
    _dir: TempDir,
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Balancer {
    async fn start(nodes: &[u16]) -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("wilddog-haproxy-{port}"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut cfg = format!(
            "defaults\n  mode tcp\n  timeout connect 500ms\n  timeout client 1h\n  timeout server 1h\n  \
             retries 3\n  option redispatch\n\
             frontend fe\n  bind 127.0.0.1:{port}\n  default_backend nodes\n\
             backend nodes\n  balance roundrobin\n  option httpchk GET /readyz\n  \
             http-check expect status 200\n  default-server inter 100ms fall 1 rise 1\n"
        );
        for (i, p) in nodes.iter().enumerate() {
            cfg.push_str(&format!("  server n{i} 127.0.0.1:{p} check\n"));
        }
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, cfg).unwrap();
        let child = Command::new("haproxy")
            .args(["-db", "-q", "-f"])
            .arg(&path)
            .stdout(Stdio::null())
            .spawn()
            .expect("haproxy (scripts/install-deps.sh installs it)");
        let deadline = tokio::time::Instant::now() + WAIT;
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(tokio::time::Instant::now() < deadline, "haproxy did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Balancer { port, child, _dir: TempDir(dir) }
    }

    /// Logs in through the balancer, retrying while it still sends us to a node that is gone
    /// or draining (as clients do with their backoff).
    async fn login(&self, uid: &str) -> Client {
        let url = format!("ws://127.0.0.1:{}/ws", self.port);
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Ok(Ok((ws, _))) =
                tokio::time::timeout(Duration::from_secs(2), tokio_tungstenite::connect_async(&url))
                    .await
            {
                let mut c = Client { ws };
                c.send_json(
                    json!({"type": "connect", "msg": {"token": token(uid), "appId": DEV_APP_ID}}),
                )
                .await;
                if let Ok(Some(tokio_tungstenite::tungstenite::Message::Text(t))) =
                    tokio::time::timeout(Duration::from_secs(2), c.recv_message()).await
                    && t.contains("connack")
                {
                    return c;
                }
            }
            assert!(tokio::time::Instant::now() < deadline, "no node took {uid} back");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `None` while nothing (no close, no frame) is waiting on the socket; else how it ended
/// (the close code, if any).
async fn ended(c: &mut Client) -> Option<Option<u16>> {
    use futures_util::FutureExt;
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        match c.ws.next().now_or_never() {
            None => return None,
            Some(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Some(Some(Ok(Message::Close(f)))) => return Some(f.map(|f| u16::from(f.code))),
            Some(Some(Ok(other))) => panic!("expected nothing or a close, got {other:?}"),
            Some(Some(Err(_)) | None) => return Some(None),
        }
    }
}

/// Waits for the socket to end (its node died or closed it); returns the close code, if any.
async fn lost(c: &mut Client) -> Option<u16> {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        match tokio::time::timeout(WAIT, c.ws.next()).await.expect("the socket ends") {
            Some(Ok(Message::Close(f))) => return f.map(|f| u16::from(f.code)),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(other)) => panic!("expected the socket to end, got {other:?}"),
            Some(Err(_)) | None => return None,
        }
    }
}

/// A live call on `cid` between `caller` (uid `a`) and `callee` (uid `b`).
async fn live(caller: &mut Client, a: &str, callee: &mut Client, b: &str, cid: &str) {
    caller.call(cid, b).await;
    expect(callee, "call", cid, a).await;
    callee.say("accept", cid, a, json!({})).await;
    expect(caller, "accept", cid, b).await;
}

/// A party back on a new connection resumes its call and restarts ICE; the peer follows.
async fn resume_and_restart(
    back: &mut Client,
    me: &str,
    peer: &mut Client,
    peer_uid: &str,
    cid: &str,
    caller: bool,
) {
    let role = if caller { "caller" } else { "callee" };
    back.send_json(json!({"type": "resume", "cid": cid, "to": peer_uid, "msg": {"role": role}}))
        .await;
    if caller {
        back.say("offer", cid, peer_uid, json!({"sdp": "v=0 restart", "restartId": 1})).await;
        expect(peer, "offer", cid, me).await;
        peer.say("answer", cid, me, json!({"sdp": "v=0 restart answer", "restartId": 1})).await;
        expect(back, "answer", cid, peer_uid).await;
    } else {
        back.say("restartice", cid, peer_uid, json!({})).await;
        expect(peer, "restartice", cid, me).await;
        peer.say("offer", cid, me, json!({"sdp": "v=0 restart", "restartId": 1})).await;
        expect(back, "offer", cid, peer_uid).await;
    }
}

#[tokio::test]
async fn a_killed_node_s_clients_come_back_through_the_balancer_and_keep_their_calls() {
    let redis = Redis::start();
    let grace = Duration::from_secs(4);
    let ports = [free_port(), free_port(), free_port()];
    let mut n0 = Node::start(ports[0], &redis, grace).await;
    let n1 = Node::start(ports[1], &redis, grace).await;
    let n2 = Node::start(ports[2], &redis, grace).await;
    let lb = Balancer::start(&ports).await;
    // c1: alice (n0, home) → bob (n1); c2: carol (n0, home) → dave (n2); c3: n1 → n2.
    let mut alice = login(n0.addr(), "alice").await;
    let mut bob = login(n1.addr(), "bob").await;
    let mut carol = login(n0.addr(), "carol").await;
    let mut dave = login(n2.addr(), "dave").await;
    let mut erin = login(n1.addr(), "erin").await;
    let mut frank = login(n2.addr(), "frank").await;
    settle().await;
    live(&mut alice, "alice", &mut bob, "bob", "c1").await;
    live(&mut carol, "carol", &mut dave, "dave", "c2").await;
    live(&mut erin, "erin", &mut frank, "frank", "c3").await;

    n0.kill();
    let killed = tokio::time::Instant::now();
    assert_eq!(lost(&mut alice).await, None, "no close frame from a killed node");
    drop(carol); // carol never comes back
    let mut alice = lb.login("alice").await;
    resume_and_restart(&mut alice, "alice", &mut bob, "bob", "c1", true).await;
    let resumed = killed.elapsed();
    assert!(resumed < grace, "resumed after {resumed:?}");
    // dave's peer never came back: bye after the grace, once.
    let body = expect(&mut dave, "bye", "c2", "carol").await;
    assert!(matches!(body, Body::Bye(_)));
    assert!(killed.elapsed() >= grace, "bye before the grace ended");
    dave.expect_silence(Duration::from_millis(800)).await;
    // The surviving calls go on; bob never heard bye.
    bob.expect_silence(Duration::ZERO).await;
    alice.say("candidate", "c1", "bob", json!({"sdp": "after"})).await;
    expect(&mut bob, "candidate", "c1", "alice").await;
    erin.say("candidate", "c3", "frank", json!({"sdp": "x"})).await;
    expect(&mut frank, "candidate", "c3", "erin").await;
    alice.say("bye", "c1", "bob", json!({})).await;
    expect(&mut bob, "bye", "c1", "alice").await;
    bob.expect_silence(QUIET).await;
    drop((n1, n2));
}

#[tokio::test]
async fn draining_each_node_in_turn_drops_no_call() {
    let redis = Redis::start();
    let grace = Duration::from_secs(8);
    let ports = [free_port(), free_port(), free_port()];
    let mut nodes = Vec::new();
    for p in ports {
        nodes.push(Some(Node::start(p, &redis, grace).await));
    }
    let lb = Balancer::start(&ports).await;
    const CALLS: usize = 20;
    // Call i: caller on node i % 3, callee on node (i + 1) % 3; `at[k]`: the node of party k.
    let mut parties: Vec<(Client, String)> = Vec::new();
    let mut at = Vec::new();
    for i in 0..CALLS {
        for (uid, node) in [(format!("caller{i}"), i % 3), (format!("callee{i}"), (i + 1) % 3)] {
            parties.push((login(SocketAddr::from(([127, 0, 0, 1], ports[node])), &uid).await, uid));
            at.push(node);
        }
    }
    settle().await;
    for i in 0..CALLS {
        let (a, b) = parties.split_at_mut(2 * i + 1);
        let (caller, callee) = (&mut a[2 * i], &mut b[0]);
        live(&mut caller.0, &caller.1.clone(), &mut callee.0, &callee.1.clone(), &format!("d{i}"))
            .await;
    }
    for x in 0..3 {
        let node = nodes[x].as_mut().unwrap();
        node.terminate();
        // Not ready first, while its clients are still connected.
        node.wait_ready(503).await;
        if x == 0 {
            for (k, (client, uid)) in parties.iter_mut().enumerate() {
                if at[k] == 0 {
                    assert_eq!(ended(client).await, None, "{uid} closed before /readyz said 503");
                }
            }
        }
        node.wait_exit().await;
        // Its clients (placed there, or landed there by the balancer) were told to go.
        let mut moved = vec![false; parties.len()];
        for (k, (client, uid)) in parties.iter_mut().enumerate() {
            if let Some(code) = ended(client).await {
                assert_eq!(code, Some(1012), "{uid}");
                moved[k] = true;
            }
        }
        assert!(moved.iter().any(|m| *m), "nobody was on node {x}");
        // They come back through the balancer and resume; then each call restarts ICE.
        for k in 0..parties.len() {
            if moved[k] {
                let uid = parties[k].1.clone();
                parties[k].0 = lb.login(&uid).await;
                at[k] = usize::MAX;
                let (cid, peer) = (format!("d{}", k / 2), parties[k ^ 1].1.clone());
                let role = if k % 2 == 0 { "caller" } else { "callee" };
                parties[k]
                    .0
                    .send_json(
                        json!({"type": "resume", "cid": cid, "to": peer, "msg": {"role": role}}),
                    )
                    .await;
            }
        }
        for i in 0..CALLS {
            let (c, e) = (2 * i, 2 * i + 1);
            if !moved[c] && !moved[e] {
                continue;
            }
            let (a, b) = parties.split_at_mut(e);
            let (caller, callee) = (&mut a[c], &mut b[0]);
            let (cu, eu, cid) = (caller.1.clone(), callee.1.clone(), format!("d{i}"));
            if !moved[c] {
                callee.0.say("restartice", &cid, &cu, json!({})).await;
                expect(&mut caller.0, "restartice", &cid, &eu).await;
            }
            caller.0.say("offer", &cid, &eu, json!({"sdp": "v=0 restart", "restartId": x})).await;
            expect(&mut callee.0, "offer", &cid, &cu).await;
            callee.0.say("answer", &cid, &cu, json!({"sdp": "v=0 r", "restartId": x})).await;
            expect(&mut caller.0, "answer", &cid, &eu).await;
        }
        nodes[x] = None;
        // The node comes back (a rolling restart), empty.
        nodes[x] = Some(Node::start(ports[x], &redis, grace).await);
    }
    // Every call is alive: a candidate each way, then the hang-up reaches the peer.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 0..CALLS {
        let (a, b) = parties.split_at_mut(2 * i + 1);
        let (caller, callee) = (&mut a[2 * i], &mut b[0]);
        let (cu, eu, cid) = (caller.1.clone(), callee.1.clone(), format!("d{i}"));
        caller.0.expect_silence(Duration::ZERO).await;
        callee.0.expect_silence(Duration::ZERO).await;
        caller.0.say("candidate", &cid, &eu, json!({"sdp": "end"})).await;
        expect(&mut callee.0, "candidate", &cid, &cu).await;
        callee.0.say("candidate", &cid, &cu, json!({"sdp": "end"})).await;
        expect(&mut caller.0, "candidate", &cid, &eu).await;
        caller.0.say("bye", &cid, &eu, json!({})).await;
        expect(&mut callee.0, "bye", &cid, &cu).await;
    }
}

/// Sends `count` candidates (`{tag}0`, `{tag}1`, …) on `cid` to `to`, one every 3 ms, while
/// collecting every frame received; stops when nothing more comes (WAIT, or a moment once
/// `count` candidates came). Returns the client and what it received: the candidates' sdp,
/// anything else described.
async fn exchange(
    c: Client,
    (cid, to): (&'static str, &'static str),
    tag: &'static str,
    count: usize,
) -> (Client, Vec<String>) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let (mut tx, mut rx) = c.ws.split();
    let sender = tokio::spawn(async move {
        for i in 0..count {
            let frame = json!({"type": "candidate", "cid": cid, "to": to,
                "msg": {"sdpMLineIndex": 0, "sdp": format!("{tag}{i}")}});
            tx.send(Message::text(frame.to_string())).await.unwrap();
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        tx
    });
    let mut got = Vec::new();
    loop {
        let wait = if got.len() >= count { QUIET * 2 } else { WAIT };
        match tokio::time::timeout(wait, rx.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => match ServerFrame::from_json(&t) {
                Ok(ServerFrame::Conversation { cid: c, body: Body::Candidate(x), .. })
                    if c == cid =>
                {
                    got.push(x.sdp)
                }
                other => got.push(format!("{other:?}")),
            },
            Ok(Some(Ok(_))) => continue,
            _ => break,
        }
    }
    let tx = sender.await.unwrap();
    (Client { ws: tx.reunite(rx).unwrap() }, got)
}

#[tokio::test]
async fn frames_in_flight_when_their_conversation_s_home_dies_arrive_once_and_in_order() {
    let redis = Redis::start();
    let grace = Duration::from_secs(8);
    let ports = [free_port(), free_port(), free_port()];
    let mut n0 = Node::start(ports[0], &redis, grace).await;
    let n1 = Node::start(ports[1], &redis, grace).await;
    let n2 = Node::start(ports[2], &redis, grace).await;
    // c1 is homed on n0 (alice called from there); alice then moves to n2: the home holds
    // no party, every frame crosses it.
    let mut alice = login(n0.addr(), "alice").await;
    let mut bob = login(n1.addr(), "bob").await;
    settle().await;
    live(&mut alice, "alice", &mut bob, "bob", "c1").await;
    drop(alice);
    let mut alice = login(n2.addr(), "alice").await;
    resume_and_restart(&mut alice, "alice", &mut bob, "bob", "c1", true).await;
    // Both stream candidates; n0 dies in the middle, with frames in flight both ways.
    const FRAMES: usize = 400;
    let ((mut alice, to_alice), (mut bob, to_bob), ()) = tokio::join!(
        exchange(alice, ("c1", "bob"), "a", FRAMES),
        exchange(bob, ("c1", "alice"), "b", FRAMES),
        async {
            tokio::time::sleep(Duration::from_millis(400)).await;
            n0.kill();
        }
    );
    let expected = |tag: &str| (0..FRAMES).map(|i| format!("{tag}{i}")).collect::<Vec<_>>();
    let diff = |got: &[String], tag: &str| {
        let want = expected(tag);
        let first = got.iter().zip(&want).position(|(g, w)| g != w);
        format!("{} received, first difference at {first:?}", got.len())
    };
    assert!(to_bob == expected("a"), "bob: {}", diff(&to_bob, "a"));
    assert!(to_alice == expected("b"), "alice: {}", diff(&to_alice, "b"));
    // The call goes on, and ends once.
    alice.say("bye", "c1", "bob", json!({})).await;
    expect(&mut bob, "bye", "c1", "alice").await;
    bob.expect_silence(QUIET).await;
    drop((n1, n2));
}

/// Which of `bots` rings for `cid` from `from` (the other stays silent).
async fn rung_endpoint(bots: &mut [Client; 2], cid: &str, from: &str) -> usize {
    let [b0, b1] = bots;
    let (i, (kind, c, f, _)) = tokio::select! {
        r = b0.recv_conv() => (0, r),
        r = b1.recv_conv() => (1, r),
    };
    assert_eq!((kind.as_str(), c.as_str(), f.as_str()), ("call", cid, from));
    bots[1 - i].expect_silence(QUIET).await;
    i
}

async fn expect_busy(c: &mut Client, cid: &str) {
    assert_eq!(c.recv_json().await, json!({"type": "busy", "cid": cid, "from": "bot", "msg": {}}));
}

#[tokio::test]
async fn a_service_pool_over_two_nodes_gives_each_endpoint_one_call_and_busy_beyond_it() {
    let redis = Redis::start();
    let config = node_config(&redis, Duration::from_secs(10));
    let a = TestServer::start(config.clone()).await;
    let b = TestServer::start(config).await;
    // The pool: one endpoint on each node. Callers on both.
    let mut bots = [a.login_service("bot").await, b.login_service("bot").await];
    let mut ann = a.login("ann").await;
    let mut ben = b.login("ben").await;
    let mut amy = a.login("amy").await;
    let mut bob = b.login("bob").await;
    settle().await;

    // Each node, deciding alone, would ring the same endpoint for both calls.
    ann.call("k1", "bot").await;
    let first = rung_endpoint(&mut bots, "k1", "ann").await;
    ben.call("k2", "bot").await;
    let second = rung_endpoint(&mut bots, "k2", "ben").await;
    assert_ne!(first, second, "one endpoint was given two calls");
    // Both endpoints are taken: busy, from the server, on either node.
    amy.call("k3", "bot").await;
    expect_busy(&mut amy, "k3").await;
    bob.call("k4", "bot").await;
    expect_busy(&mut bob, "k4").await;
    // Two callers at once beyond the pool: busy for both, no endpoint rung.
    amy.call("k5", "bot").await;
    bob.call("k6", "bot").await;
    expect_busy(&mut amy, "k5").await;
    expect_busy(&mut bob, "k6").await;
    for bot in bots.iter_mut() {
        bot.expect_silence(QUIET).await;
    }

    // The first endpoint rejects ann: it is free again for a caller on the other node.
    bots[first].say("reject", "k1", "ann", json!({})).await;
    expect(&mut ann, "reject", "k1", "bot").await;
    settle().await;
    bob.call("k7", "bot").await;
    assert_eq!(rung_endpoint(&mut bots, "k7", "bob").await, first);
    // The second endpoint's call goes live and ends with bye: free again, for a caller on
    // the first node; and the pool is full once more.
    bots[second].say("accept", "k2", "ben", json!({})).await;
    expect(&mut ben, "accept", "k2", "bot").await;
    ben.say("bye", "k2", "bot", json!({})).await;
    expect(&mut bots[second], "bye", "k2", "ben").await;
    settle().await;
    amy.call("k8", "bot").await;
    assert_eq!(rung_endpoint(&mut bots, "k8", "amy").await, second);
    ann.call("k9", "bot").await;
    expect_busy(&mut ann, "k9").await;
}

/// A socket on node `addr` authenticated as a service endpoint of `uid`.
async fn login_service(addr: SocketAddr, uid: &str) -> Client {
    let mut c = Client::open(&format!("ws://{addr}/ws")).await;
    c.send_json(json!({"type": "connect", "msg": {
        "token": token(uid), "appId": DEV_APP_ID, "clientInfo": {"sdk": "test"}, "service": true
    }}))
    .await;
    match c.recv().await {
        ServerFrame::Connack { msg, .. } => assert_eq!(msg.code, 0, "{msg:?}"),
        other => panic!("expected connack, got {other:?}"),
    }
    c
}

/// Waits until metric `name` of the node at `addr` reads `value`.
async fn wait_metric(addr: SocketAddr, name: &str, value: i64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, _, body) = common::http_get(addr, "/metrics").await;
        let now = body
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
            .and_then(|v| v.trim().parse::<i64>().ok());
        if now == Some(value) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{name} is {now:?}, not {value}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_forged_resume_on_a_node_that_dies_never_takes_a_service_endpoint_where_it_is_adopted() {
    let redis = Redis::start();
    let grace = Duration::from_secs(4);
    let ports = [free_port(), free_port()];
    let mut n0 = Node::start(ports[0], &redis, grace).await;
    let n1 = Node::start(ports[1], &redis, grace).await;
    // mallory resumes a made-up call naming the pool's uid on n0, where its endpoint is.
    let mut bot = login_service(n0.addr(), "bot").await;
    let mut mallory = login(n0.addr(), "mallory").await;
    settle().await;
    let resume = json!({"type": "resume", "cid": "fake1", "to": "bot", "msg": {"role": "caller"}});
    mallory.send_json(resume.clone()).await;
    mallory.expect_silence(QUIET).await;
    bot.expect_silence(Duration::ZERO).await;

    // n0 dies within the grace. mallory comes back on n1 and resumes: n1 adopts the record.
    n0.kill();
    let killed = tokio::time::Instant::now();
    assert_eq!(lost(&mut mallory).await, None, "no close frame from a killed node");
    assert_eq!(lost(&mut bot).await, None);
    let mut mallory = login(n1.addr(), "mallory").await;
    mallory.send_json(resume).await;
    wait_metric(n1.addr(), "wilddog_conversations", 1).await;
    mallory.expect_silence(QUIET).await;
    // The bot's runner comes back on n1 too: its endpoint is not bound to the adopted call.
    let mut bot = login_service(n1.addr(), "bot").await;
    bot.expect_silence(QUIET).await;
    assert!(killed.elapsed() < grace, "too slow for the grace: {:?}", killed.elapsed());

    // A real caller is rung on it and the call goes live, not `busy`.
    let mut alice = login(n1.addr(), "alice").await;
    settle().await;
    alice.call("c1", "bot").await;
    alice.expect_silence(QUIET).await; // no `busy`
    expect(&mut bot, "call", "c1", "alice").await;
    bot.say("accept", "c1", "alice", json!({})).await;
    expect(&mut alice, "accept", "c1", "bot").await;

    // Nobody of bot ever resumed mallory's call: it ends after the grace, as on n0.
    expect(&mut mallory, "bye", "fake1", "bot").await;
    assert!(killed.elapsed() >= grace, "not before the grace: a real peer may come back");
    wait_metric(n1.addr(), "wilddog_conversations", 1).await; // alice's call only
    mallory.expect_silence(QUIET).await;
    bot.expect_silence(Duration::ZERO).await;
    alice.expect_silence(Duration::ZERO).await;
    drop(n1);
}

#[tokio::test]
async fn frames_queued_for_a_party_come_at_connack_on_another_node() {
    let redis = Redis::start();
    let config = node_config(&redis, Duration::from_secs(10));
    let a = TestServer::start(config.clone()).await;
    let b = TestServer::start(config.clone()).await;
    let c = TestServer::start(config).await;
    let mut alice = a.login("alice").await;
    let bob = b.login("bob").await;
    settle().await;
    let mut bob = bob;
    live(&mut alice, "alice", &mut bob, "bob", "q1").await;
    // bob's socket dies; alice goes on talking meanwhile: the call's home keeps her frames.
    bob.abort();
    settle().await;
    for i in 0..3 {
        alice
            .say("candidate", "q1", "bob", json!({"sdpMLineIndex": 0, "sdp": format!("c{i}")}))
            .await;
    }
    settle().await;
    // bob is back on a third node: the frames come right after connack, before any resume.
    let mut bob = c.login("bob").await;
    for i in 0..3 {
        let Body::Candidate(cand) = expect(&mut bob, "candidate", "q1", "alice").await else {
            unreachable!()
        };
        assert_eq!(cand.sdp, format!("c{i}"));
    }
    bob.expect_silence(QUIET).await;
    // Its resume and restart go through; alice never heard bye.
    resume_and_restart(&mut bob, "bob", &mut alice, "alice", "q1", false).await;
    alice.say("candidate", "q1", "bob", json!({"sdp": "after"})).await;
    expect(&mut bob, "candidate", "q1", "alice").await;
    bob.say("bye", "q1", "alice", json!({})).await;
    expect(&mut alice, "bye", "q1", "bob").await;
    alice.expect_silence(QUIET).await;
    bob.expect_silence(Duration::ZERO).await;
}
