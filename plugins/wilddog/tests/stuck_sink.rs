//! Stopping a caller whose downstream holds its streaming threads: a src pad into an
//! `appsink` nobody pulls (a full queue before a sink, a sink prerolling while the pipeline
//! changes state: what the runner's pipeline did at the end of a Chromium call). The
//! remote streams then stop reaching the decoders, the path watch restarts ICE (a new peer
//! connection; the old one goes to NULL on a thread of its own, waiting for its streaming
//! thread), and the application stops the pipeline. The bin's state change must not wait
//! for the old peer connection going down (which waits for the sinks the same state change
//! would release): the pipeline reaches NULL, no deadlock.

mod common;

use std::time::{Duration, Instant};

use common::{Seen, TestServer};
use gst::prelude::*;

const T: Duration = Duration::from_secs(20);

#[test]
fn caller_with_a_stuck_sink_stops_after_a_restart() {
    if !common::enter_netns("caller_with_a_stuck_sink_stops_after_a_restart") {
        return;
    }
    let sent = common::capture_signaling();
    let server = TestServer::start();
    let mut bob = common::Endpoint::new(&server, common::EndpointConfig::new("bob"));
    bob.play();
    bob.wait_for("connected", T, |s| *s == Seen::Signaling(true));
    let description = format!(
        "wilddogcall name=c server={} app-id={} token={} remote-uid=bob dimension=240p \
         ice-local-addresses=127.0.0.1 \
         videotestsrc is-live=true ! video/x-raw,width=320,height=240,framerate=15/1 ! \
         c.video_sink audiotestsrc is-live=true ! c.audio_sink \
         c.video_src ! appsink max-buffers=1 drop=false sync=false \
         c.audio_src ! appsink max-buffers=1 drop=false sync=false",
        server.url,
        wilddog_server::DEV_APP_ID,
        server.token("alice"),
    );
    let alice = gst::parse::launch(&description).unwrap().downcast::<gst::Pipeline>().unwrap();
    alice.set_state(gst::State::Playing).unwrap();
    bob.wait_for("alice's video", T, |s| matches!(s, Seen::VideoFrame { .. }));
    let started = Instant::now();
    // Nothing pulls alice's appsinks: her remote streams stall, and after 2 s without RTP
    // into her decoders she makes a new peer connection (a second offer).
    let offers = || {
        sent.lock()
            .unwrap()
            .iter()
            .filter(|(_, l)| l.starts_with("received offer from alice"))
            .count()
    };
    while offers() < 2 && started.elapsed() < T {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(offers() >= 2, "alice made no restart offer");
    std::thread::sleep(Duration::from_millis(500));

    let (tx, rx) = std::sync::mpsc::channel();
    let pipeline = alice.clone();
    let stopping = Instant::now();
    std::thread::spawn(move || {
        let _ = pipeline.set_state(gst::State::Null);
        let _ = tx.send(stopping.elapsed());
    });
    let took = rx.recv_timeout(Duration::from_secs(15)).ok();
    println!("alice stopped in {took:?}");
    if took.is_none() {
        // Deadlocked: leave it to the process's end.
        std::mem::forget(alice);
        panic!("alice's pipeline did not reach NULL within 15 s (deadlock)");
    }
    assert!(took.is_some_and(|t| t < Duration::from_secs(8)), "stopping took {took:?}");
}
