//! A GStreamer call whose two parties' signaling connections are on two server nodes of one
//! Redis (`serve --redis`): the call, its media and its hang-up cross nodes. In a private
//! network namespace, with a real `redis-server` started on loopback there.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Endpoint, EndpointConfig, Seen, TestServer};

const T: Duration = Duration::from_secs(15);

struct Redis(Child);

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn redis_on_loopback() -> (Redis, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server (scripts/install-deps.sh installs it)");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    (Redis(child), format!("redis://127.0.0.1:{port}/"))
}

#[test]
fn a_call_across_two_server_nodes_decodes_media_both_ways() {
    if !common::enter_netns("a_call_across_two_server_nodes_decodes_media_both_ways") {
        return;
    }
    let (_redis, url) = redis_on_loopback();
    let mut config = wilddog_server::ServerConfig::development();
    config.cluster = Some(wilddog_server::ClusterConfig::new(url));
    let node_a = TestServer::start_config("127.0.0.1:0", config.clone());
    let node_b = TestServer::start_config("127.0.0.1:0", config);
    let mut bob = Endpoint::new(&node_b, EndpointConfig::new("bob").prop("dimension", "240p"));
    let mut alice = Endpoint::new(
        &node_a,
        EndpointConfig::new("alice").calling("bob").prop("dimension", "360p"),
    );
    bob.play();
    // bob's presence reaches Redis.
    std::thread::sleep(Duration::from_millis(500));
    alice.play();
    let called = bob.wait_for("called", T, |s| matches!(s, Seen::Called { .. }));
    assert!(matches!(called, Seen::Called { remote_uid, .. } if remote_uid == "alice"));
    alice.wait_for("ACCEPTED", T, |s| *s == Seen::Response("ACCEPTED".into()));
    alice.wait_for("240p frames", T, |s| matches!(s, Seen::VideoFrame { width: 320, height: 240 }));
    bob.wait_for("360p frames", T, |s| matches!(s, Seen::VideoFrame { width: 480, height: 360 }));
    alice.wait_for("audio", T, |s| *s == Seen::AudioBuffer);
    bob.wait_for("audio", T, |s| *s == Seen::AudioBuffer);
    alice.call.close();
    bob.wait_for("closed", T, |s| matches!(s, Seen::Closed(r) if r == "remote-hangup"));
}
