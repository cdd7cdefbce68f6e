//! Time from `call` to the first decoded remote frame at the caller, 480p VP8 on loopback,
//! over 20 calls through the real server (the performance figure).

mod common;

use std::time::Duration;

use common::{Endpoint, EndpointConfig, Seen, TestServer};

#[test]
fn call_to_first_frame_p50_p95() {
    if !common::enter_netns("call_to_first_frame_p50_p95") {
        return;
    }
    let server = TestServer::start();
    let mut times = Vec::new();
    for i in 0..20 {
        let callee = format!("bob{i}");
        let mut bob = Endpoint::new(&server, EndpointConfig::new(&callee));
        let mut alice =
            Endpoint::new(&server, EndpointConfig::new(&format!("alice{i}")).calling(&callee));
        bob.play();
        bob.wait_for("connected", Duration::from_secs(10), |s| *s == Seen::Signaling(true));
        alice.play();
        let Seen::FirstFrame { width, height, elapsed_ms } =
            alice.wait_for("first frame", Duration::from_secs(15), |s| {
                matches!(s, Seen::FirstFrame { .. })
            })
        else {
            unreachable!()
        };
        assert_eq!((width, height), (640, 480));
        times.push(elapsed_ms);
    }
    times.sort_unstable();
    let p50 = times[times.len() / 2];
    let p95 = times[(times.len() * 95).div_ceil(100) - 1];
    println!(
        "call -> first decoded remote frame (480p VP8, 20 calls): p50 {p50} ms, p95 {p95} ms, all {times:?}"
    );
    assert!(p50 < 2000, "call setup is far too slow: p50 {p50} ms");
}
