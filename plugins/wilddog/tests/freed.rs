//! Nothing of a call outlives it: after calls that connected, hung up and were set to NULL
//! and dropped, every element that was in either pipeline (webrtcbin, its internals, the
//! aux sender of congestion control, the decoders) is freed. A process serving calls one
//! after the other (a bot, a recorder) must not keep a little of each.

mod common;

use std::time::{Duration, Instant};

use common::{Endpoint, EndpointConfig, Seen, TestServer};
use gst::prelude::*;

const T: Duration = Duration::from_secs(15);
/// How long the elements of a finished call may take to be freed (a peer connection is torn
/// down on a thread of its own).
const FREED_WITHIN: Duration = Duration::from_secs(10);

/// A weak reference to every element inside `pipeline`, with its path for the failure message.
fn every_element(pipeline: &gst::Pipeline) -> Vec<(String, gst::glib::WeakRef<gst::Element>)> {
    pipeline
        .iterate_recurse()
        .into_iter()
        .filter_map(Result::ok)
        .map(|e| (e.path_string().to_string(), e.downgrade()))
        .collect()
}

#[test]
fn every_element_of_a_finished_call_is_freed() {
    if !common::enter_netns("every_element_of_a_finished_call_is_freed") {
        return;
    }
    let server = TestServer::start();
    for round in 0..2 {
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
        // The peer connections are complete now: webrtcbin with its transports, rtpbin and
        // the aux sender it asked for (congestion control is on by default).
        let mut elements = every_element(&alice.pipeline);
        elements.extend(every_element(&bob.pipeline));
        assert!(
            elements.iter().any(|(path, _)| path.contains("wilddog-congestion")),
            "the aux sender is in the pipeline: {:?}",
            elements.iter().map(|(p, _)| p).collect::<Vec<_>>()
        );
        alice.call.close();
        bob.wait_for("closed", T, |s| matches!(s, Seen::Closed(_)));
        drop(alice);
        drop(bob);

        let deadline = Instant::now() + FREED_WITHIN;
        loop {
            let alive: Vec<&str> = elements
                .iter()
                .filter(|(_, weak)| weak.upgrade().is_some())
                .map(|(path, _)| path.as_str())
                .collect();
            if alive.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: {} of {} elements of the call still alive {FREED_WITHIN:?} \
                 after it ended: {alive:#?}",
                alive.len(),
                elements.len()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        println!("round {round}: all {} elements of the call freed", elements.len());
    }
}
