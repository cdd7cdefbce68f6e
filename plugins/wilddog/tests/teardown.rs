//! Teardown under load: calls closed and pipelines set to NULL, round after round, and
//! elements stopped while they still make the DTLS certificate. A hang fails the test
//! (a watchdog ends the process) instead of blocking the suite.

mod common;

use std::time::{Duration, Instant};

use common::{Endpoint, EndpointConfig, Seen, TestServer};
use gst::prelude::*;

const T: Duration = Duration::from_secs(15);
/// Longest a pipeline may take to reach NULL.
const NULL_WITHIN: Duration = Duration::from_secs(8);

/// Ends the process (failing the test) if it is still running after `limit`.
fn watchdog(what: &'static str, limit: Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        eprintln!("{what}: still running after {limit:?}: a teardown hangs");
        std::process::exit(101);
    });
}

fn to_null(endpoint: &Endpoint, who: &str) -> Duration {
    let started = Instant::now();
    endpoint.pipeline.set_state(gst::State::Null).unwrap();
    let took = started.elapsed();
    assert!(took < NULL_WITHIN, "{who}: NULL took {took:?}");
    took
}

#[test]
fn five_rounds_of_call_close_and_null() {
    if !common::enter_netns("five_rounds_of_call_close_and_null") {
        return;
    }
    watchdog("five_rounds_of_call_close_and_null", Duration::from_secs(150));
    let server = TestServer::start();
    for round in 0..5 {
        let started = Instant::now();
        let callee = format!("bob{round}");
        let mut bob =
            Endpoint::new(&server, EndpointConfig::new(&callee).prop("dimension", "120p"));
        let mut alice = Endpoint::new(
            &server,
            EndpointConfig::new(&format!("alice{round}"))
                .calling(&callee)
                .prop("dimension", "120p"),
        );
        bob.play();
        bob.wait_for("connected", T, |s| *s == Seen::Signaling(true));
        alice.play();
        alice.wait_for("frames", T, |s| matches!(s, Seen::VideoFrame { .. }));
        bob.wait_for("frames", T, |s| matches!(s, Seen::VideoFrame { .. }));
        let how = match round % 3 {
            // Hang up, then stop both.
            0 => {
                alice.call.close();
                bob.wait_for("closed", T, |s| matches!(s, Seen::Closed(_)));
                (to_null(&alice, "alice"), to_null(&bob, "bob"), "close, then NULL")
            }
            // The caller's pipeline goes to NULL while the call is live.
            1 => {
                let a = to_null(&alice, "alice");
                bob.wait_for("closed", T, |s| matches!(s, Seen::Closed(_)));
                (a, to_null(&bob, "bob"), "caller NULL mid-call")
            }
            // Both go to NULL mid-call, the callee first, without waiting for anything.
            _ => (to_null(&bob, "bob"), to_null(&alice, "alice"), "both NULL mid-call"),
        };
        println!(
            "round {round} ({}): alice NULL in {:?}, bob NULL in {:?}, round {:?}",
            how.2,
            how.0,
            how.1,
            started.elapsed()
        );
    }
}

/// A child process that sets a `wilddogcall` to READY (starting the DTLS key generation in
/// the background) and at once to NULL, then exits the process right away.
#[test]
fn null_right_after_ready_then_exit_does_not_crash() {
    const CHILD: &str = "WILDDOG_TEARDOWN_CHILD";
    if std::env::var_os(CHILD).is_some() {
        common::init();
        for _ in 0..5 {
            let call = gstwilddog::WilddogCall::new(None);
            call.set_state(gst::State::Ready).unwrap();
            call.set_state(gst::State::Null).unwrap();
        }
        // Exit now, without the test harness's orderly end: OpenSSL's exit handlers run
        // while any thread still generating a key would use what they free.
        std::process::exit(0);
    }
    for run in 0..3 {
        let output = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["null_right_after_ready_then_exit_does_not_crash", "--exact", "--nocapture"])
            .env(CHILD, "1")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "run {run}: the child ended with {} ({})",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
