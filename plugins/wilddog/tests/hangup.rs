//! Hang-up is prompt at every moment of a call: the callee hears `bye` (its `wilddog-closed`)
//! within 100 ms of the caller's hang-up — `close`, the pipeline stopped (as Ctrl-C does), or
//! EOS from its sources — whatever the caller's webrtcbin is doing (being built, negotiating,
//! connecting, connected).

mod common;

use std::time::{Duration, Instant};

use common::{Endpoint, EndpointConfig, Seen, TestServer};
use gst::prelude::*;

const T: Duration = Duration::from_secs(15);
/// Longest time from `close()` at the caller to `wilddog-closed` at the callee.
const BYE_WITHIN: Duration = Duration::from_millis(100);

#[test]
fn early_hangups_reach_the_callee_within_100_ms() {
    if !common::enter_netns("early_hangups_reach_the_callee_within_100_ms") {
        return;
    }
    let server = TestServer::start();
    let mut took = Vec::new();
    for (round, after_accepted_ms) in [0u64, 100, 250, 500].into_iter().enumerate() {
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
        alice.wait_for("ACCEPTED", T, |s| *s == Seen::Response("ACCEPTED".into()));
        std::thread::sleep(Duration::from_millis(after_accepted_ms));
        let closed_at = Instant::now();
        // Each way to hang up, in turn.
        let how = match round % 3 {
            0 => {
                alice.call.close();
                "close()"
            }
            1 => {
                // Stopping blocks until the teardown is done; the bye must not wait for it.
                let pipeline = alice.pipeline.clone();
                std::thread::spawn(move || pipeline.set_state(gst::State::Null));
                "pipeline to NULL"
            }
            _ => {
                alice.pipeline.send_event(gst::event::Eos::new());
                "EOS"
            }
        };
        bob.wait_for("closed", T, |s| matches!(s, Seen::Closed(_)));
        let elapsed = closed_at.elapsed();
        println!(
            "hang-up ({how}) {after_accepted_ms} ms after ACCEPTED: closed at the callee after {elapsed:?}"
        );
        took.push((after_accepted_ms, elapsed));
        drop(alice);
        drop(bob);
    }
    for (after, elapsed) in took {
        assert!(
            elapsed <= BYE_WITHIN,
            "hang-up {after} ms after ACCEPTED reached the callee after {elapsed:?}"
        );
    }
}
