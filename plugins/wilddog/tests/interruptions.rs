//! Calls that survive interruptions (issue 12), GStreamer to GStreamer through a real
//! signaling server in a private network namespace: signaling sockets reset under a live
//! caller and callee, a black-holed media path, a half-open signaling socket, and the server
//! killed (SIGKILL) and started again. The media must go on (or come back), no error may be
//! raised, and `closed` comes only at the real end.

mod common;

use std::time::{Duration, Instant};

use common::tcp_proxy::TcpProxy;
use common::{Endpoint, EndpointConfig, Seen, TestServer};
use gst::prelude::*;

const T: Duration = Duration::from_secs(15);

fn is_error(s: &Seen) -> bool {
    matches!(s, Seen::WilddogError(_) | Seen::ElementError { .. } | Seen::Closed(_))
}

/// Samples the endpoints' decoded video every `step` for `span`: each must get frames in
/// every step. Returns the frames each got.
#[track_caller]
fn media_flows(endpoints: &[&Endpoint], span: Duration, step: Duration, what: &str) -> Vec<u64> {
    let start: Vec<u64> = endpoints.iter().map(|e| e.frames()).collect();
    let mut last = start.clone();
    let until = Instant::now() + span;
    while Instant::now() < until {
        std::thread::sleep(step);
        for (i, e) in endpoints.iter().enumerate() {
            let now = e.frames();
            assert!(
                now > last[i],
                "{what}: {} decoded no frame for {step:?} ({} in all)",
                e.pipeline.name(),
                now - start[i]
            );
            last[i] = now;
        }
    }
    last.iter().zip(&start).map(|(l, s)| l - s).collect()
}

/// bob answers, alice calls him; each signals through its own proxy. Both decode frames.
fn call_through_proxies(
    server: &TestServer,
    proxy_alice: &TcpProxy,
    proxy_bob: &TcpProxy,
) -> (Endpoint, Endpoint) {
    let (url_a, url_b) = (proxy_alice.ws_url(), proxy_bob.ws_url());
    let mut bob = Endpoint::new(
        server,
        EndpointConfig::new("bob").prop("dimension", "120p").prop("server", &url_b),
    );
    let mut alice = Endpoint::new(
        server,
        EndpointConfig::new("alice")
            .calling("bob")
            .prop("dimension", "120p")
            .prop("server", &url_a),
    );
    bob.play();
    bob.wait_for("connected", T, |s| *s == Seen::Signaling(true));
    alice.play();
    alice.wait_for("frames", T, |s| matches!(s, Seen::VideoFrame { .. }));
    bob.wait_for("frames", T, |s| matches!(s, Seen::VideoFrame { .. }));
    (alice, bob)
}

fn signaling_events(e: &mut Endpoint) -> Vec<bool> {
    e.drain();
    e.log
        .iter()
        .filter_map(|s| match s {
            Seen::Signaling(c) => Some(*c),
            _ => None,
        })
        .collect()
}

#[test]
fn signaling_resets_under_a_live_callee_then_caller_keep_the_call() {
    if !common::enter_netns("signaling_resets_under_a_live_callee_then_caller_keep_the_call") {
        return;
    }
    let sent = common::capture_signaling();
    let server = TestServer::start();
    let (proxy_a, proxy_b) = (TcpProxy::start(server.addr()), TcpProxy::start(server.addr()));
    let (mut alice, mut bob) = call_through_proxies(&server, &proxy_a, &proxy_b);

    // The callee's socket is reset: it reconnects, resumes and asks for a restart.
    assert_eq!(proxy_b.cut(), 1);
    bob.wait_for("signaling lost", T, |s| *s == Seen::Signaling(false));
    let frames = media_flows(
        &[&alice, &bob],
        Duration::from_secs(4),
        Duration::from_secs(1),
        "callee reset",
    );
    println!("frames in the 4 s after the callee's reset: alice {}, bob {}", frames[0], frames[1]);
    assert_eq!(signaling_events(&mut bob), [true, false, true], "bob reconnected");

    // The caller's.
    assert_eq!(proxy_a.cut(), 1);
    alice.wait_for("signaling lost", T, |s| *s == Seen::Signaling(false));
    let frames = media_flows(
        &[&alice, &bob],
        Duration::from_secs(4),
        Duration::from_secs(1),
        "caller reset",
    );
    println!("frames in the 4 s after the caller's reset: alice {}, bob {}", frames[0], frames[1]);
    assert_eq!(signaling_events(&mut alice), [true, false, true], "alice reconnected");

    let log: Vec<String> = sent.lock().unwrap().iter().map(|(_, l)| l.clone()).collect();
    for expected in ["received restartice from bob", "sent resume"] {
        assert!(log.iter().any(|l| l.starts_with(expected)), "no `{expected}` in {log:#?}");
    }
    assert!(!alice.saw(is_error) && !bob.saw(is_error), "alice {:?}\nbob {:?}", alice.log, bob.log);
    assert_eq!((alice.call.state(), bob.call.state()), ("connected".into(), "connected".into()));

    // The real end still reaches the peer.
    alice.call.close();
    bob.wait_for("closed", T, |s| *s == Seen::Closed("remote-hangup".into()));
}

fn nft(args: &str) {
    let status = std::process::Command::new("sh")
        .args(["-c", &format!("nft {args}")])
        .status()
        .unwrap_or_else(|e| panic!("cannot run nft (apt-get install nftables): {e}"));
    assert!(status.success(), "nft {args} failed");
}

#[test]
fn black_holed_path_is_restarted_and_media_comes_back() {
    if !common::enter_netns("black_holed_path_is_restarted_and_media_comes_back") {
        return;
    }
    let sent = common::capture_signaling();
    let server = TestServer::start();
    let (proxy_a, proxy_b) = (TcpProxy::start(server.addr()), TcpProxy::start(server.addr()));
    let (mut alice, mut bob) = call_through_proxies(&server, &proxy_a, &proxy_b);
    media_flows(&[&alice, &bob], Duration::from_secs(1), Duration::from_millis(500), "before");

    // Every packet of the current path is dropped: new ports (a new path) are not.
    let ports = common::bound_udp_ports(&[server.addr().port()]);
    assert!(!ports.is_empty(), "the call's candidates are bound");
    let set = ports.iter().map(u16::to_string).collect::<Vec<_>>().join(",");
    nft("add table inet blackhole");
    nft("add chain inet blackhole c '{ type filter hook input priority 0; }'");
    nft(&format!("add rule inet blackhole c udp dport '{{ {set} }}' drop"));
    nft(&format!("add rule inet blackhole c udp sport '{{ {set} }}' drop"));
    let holed_at = Instant::now();
    println!("black-holed UDP ports {set}");

    // The media stops, the path is found lost, a new peer connection is made on both sides.
    let (a0, b0) = (alice.frames(), bob.frames());
    std::thread::sleep(Duration::from_millis(1200));
    let stalled = (alice.frames() - a0, bob.frames() - b0);
    let deadline = holed_at + Duration::from_secs(12);
    let mut back = [None, None];
    let (mut last_a, mut last_b) = (alice.frames(), bob.frames());
    while back.iter().any(Option::is_none) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        let (a, b) = (alice.frames(), bob.frames());
        // Frames again after the stall (a few decoded in the first instants do not count).
        if back[0].is_none() && a > last_a + 2 {
            back[0] = Some(holed_at.elapsed());
        }
        if back[1].is_none() && b > last_b + 2 {
            back[1] = Some(holed_at.elapsed());
        }
        if back[0].is_none() {
            last_a = last_a.max(a.saturating_sub(2));
        }
        if back[1].is_none() {
            last_b = last_b.max(b.saturating_sub(2));
        }
    }
    println!("frames in the first 1.2 s of the black hole: {stalled:?}; media back after {back:?}");
    let restarts = sent
        .lock()
        .unwrap()
        .iter()
        .filter(|(at, l)| *at > holed_at && l.starts_with("received offer from alice"))
        .count();
    assert!(restarts >= 1, "bob got no restart offer");
    for (who, at) in ["alice", "bob"].iter().zip(back) {
        let at = at.unwrap_or_else(|| panic!("{who}: no media within 12 s of the black hole"));
        // Silence noticed after 2 s, then a new path in well under 5 s.
        assert!(at < Duration::from_secs(8), "{who}: media back only after {at:?}");
    }
    media_flows(&[&alice, &bob], Duration::from_secs(2), Duration::from_millis(500), "after");
    assert!(!alice.saw(is_error) && !bob.saw(is_error), "alice {:?}\nbob {:?}", alice.log, bob.log);
    assert_eq!(alice.call.state(), "connected");
    alice.call.close();
    bob.wait_for("closed", T, |s| *s == Seen::Closed("remote-hangup".into()));
}

#[test]
fn half_open_signaling_socket_is_taken_over_and_the_restart_reaches_the_peer() {
    if !common::enter_netns(
        "half_open_signaling_socket_is_taken_over_and_the_restart_reaches_the_peer",
    ) {
        return;
    }
    let sent = common::capture_signaling();
    let server = TestServer::start();
    let (proxy_a, proxy_b) = (TcpProxy::start(server.addr()), TcpProxy::start(server.addr()));
    let (mut alice, mut bob) = call_through_proxies(&server, &proxy_a, &proxy_b);

    // bob's socket goes silent without closing, at both ends (a dead Wi-Fi).
    assert_eq!(proxy_b.freeze(), 1);
    let frozen_at = Instant::now();
    bob.wait_for("signaling lost", Duration::from_secs(12), |s| *s == Seen::Signaling(false));
    println!("bob noticed the silent socket after {:?}", frozen_at.elapsed());
    bob.wait_nth("signaling back", 2, T, |s| *s == Seen::Signaling(true));
    // bob's new connection speaks: `resume` (then `restartice`). The server finds the old
    // socket dead (no pong within 2 s) and hands the call over; the restart reaches alice.
    let find = |prefix: &str, after: Instant| {
        sent.lock()
            .unwrap()
            .iter()
            .find_map(|(at, l)| (*at > after && l.starts_with(prefix)).then_some(*at))
    };
    // The `resume` is logged on the signaling thread, at about the time the event above
    // is posted: waited for (on a loaded machine it came after the event).
    let resume_by = Instant::now() + Duration::from_secs(3);
    let back_at = loop {
        if let Some(at) = find("sent resume", frozen_at) {
            break at;
        }
        assert!(Instant::now() < resume_by, "bob sent no resume on his new connection");
        std::thread::sleep(Duration::from_millis(20));
    };
    let deadline = Instant::now() + Duration::from_secs(6);
    let restart_at = loop {
        if let Some(at) = find("received restartice from bob", back_at) {
            break at;
        }
        assert!(Instant::now() < deadline, "alice got no restart within 6 s");
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = restart_at.duration_since(back_at);
    println!("bob's new connection → restart at alice: {took:?}");
    assert!(took < Duration::from_secs(3), "the restart took {took:?}");
    media_flows(&[&alice, &bob], Duration::from_secs(2), Duration::from_millis(500), "after");
    assert!(!alice.saw(is_error) && !bob.saw(is_error), "alice {:?}\nbob {:?}", alice.log, bob.log);
    // Hang-ups go through the new connection.
    bob.call.close();
    alice.wait_for("closed", T, |s| *s == Seen::Closed("remote-hangup".into()));
    drop(proxy_a);
}

/// Runs the signaling server in a child process (this binary again) on a fixed address,
/// so that the test can SIGKILL it.
const SERVER_CHILD: &str = "WILDDOG_TEST_SERVER_ADDR";

#[test]
fn server_child() {
    // Not a test of its own: the server process of the test below.
    let Ok(addr) = std::env::var(SERVER_CHILD) else { return };
    let _server = TestServer::start_on(&addr);
    std::thread::sleep(Duration::from_secs(600));
}

/// The server process; killed (SIGKILL) when dropped, so that a failing test leaves none.
struct ServerProcess(std::process::Child);

impl ServerProcess {
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn_server(addr: &str) -> ServerProcess {
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["server_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(SERVER_CHILD, addr)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("the server process starts");
    let process = ServerProcess(child);
    // Listening once a connection goes through.
    let until = Instant::now() + T;
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < until, "the server process does not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    process
}

#[test]
fn server_killed_and_restarted_mid_call_media_uninterrupted_and_close_still_arrives() {
    if !common::enter_netns(
        "server_killed_and_restarted_mid_call_media_uninterrupted_and_close_still_arrives",
    ) {
        return;
    }
    // A fixed port is safe in the test's own namespace.
    let addr = "127.0.0.1:18930";
    let url = format!("ws://{addr}/ws");
    let mut server_process = spawn_server(addr);
    // Tokens from the same development configuration.
    let tokens = TestServer::start();
    let mut bob = Endpoint::new(
        &tokens,
        EndpointConfig::new("bob").prop("dimension", "120p").prop("server", &url),
    );
    let mut alice = Endpoint::new(
        &tokens,
        EndpointConfig::new("alice").calling("bob").prop("dimension", "120p").prop("server", &url),
    );
    bob.play();
    bob.wait_for("connected", T, |s| *s == Seen::Signaling(true));
    alice.play();
    alice.wait_for("frames", T, |s| matches!(s, Seen::VideoFrame { .. }));
    bob.wait_for("frames", T, |s| matches!(s, Seen::VideoFrame { .. }));

    server_process.kill();
    alice.wait_for("signaling lost", T, |s| *s == Seen::Signaling(false));
    bob.wait_for("signaling lost", T, |s| *s == Seen::Signaling(false));
    media_flows(&[&alice, &bob], Duration::from_secs(1), Duration::from_millis(500), "server down");
    let mut server_process = spawn_server(addr);
    // Both come back (backoff from 1 s) and resume the conversation the new server never saw.
    alice.wait_nth("signaling back", 2, T, |s| *s == Seen::Signaling(true));
    bob.wait_nth("signaling back", 2, T, |s| *s == Seen::Signaling(true));
    let frames =
        media_flows(&[&alice, &bob], Duration::from_secs(3), Duration::from_millis(500), "resumed");
    println!("frames in the 3 s after both came back: alice {}, bob {}", frames[0], frames[1]);
    assert!(!alice.saw(is_error) && !bob.saw(is_error), "alice {:?}\nbob {:?}", alice.log, bob.log);
    // A hang-up reaches the peer through the restarted server.
    alice.call.close();
    bob.wait_for("closed", T, |s| *s == Seen::Closed("remote-hangup".into()));
    server_process.kill();
}
