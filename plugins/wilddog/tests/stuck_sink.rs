//! Stopping a caller whose downstream holds its streaming threads: a src pad into an
//! `appsink` nobody pulls (a full queue before a sink, a sink prerolling while the pipeline
//! changes state: what the runner's pipeline did at the end of a Chromium call). The
//! remote streams then stop reaching the decoders, the path watch restarts ICE (a new peer
//! connection; the old one goes to NULL on a thread of its own, waiting for its streaming
//! thread), and the application stops the pipeline. The bin's state change must not wait
//! for the old peer connection going down (which waits for the sinks the same state change
//! would release): the pipeline reaches NULL, no deadlock.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{EndpointConfig, Seen, TestServer};
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

    stops_in_time("alice", alice);
}

/// A callee whose first call's remote streams go into sinks that hold their streaming
/// threads when the call ends (`appsink max-buffers=1 drop=false` nobody pulls: what a sink
/// prerolling in a pipeline that has not gone back to PLAYING does). The end of that call
/// must not wait for them: the next caller gets the callee's media, and the callee decodes
/// the next caller's. The callee's teardown of the first call waited on the media thread for
/// the held streaming thread until the pipeline stopped, and the second call had no media.
/// The callee keeps its src pads between calls: the application replaces the held sinks by
/// counting ones for the next call (stopping a held sink lets the first call's thread go:
/// until then it holds the pad, and the next call's stream behind it would wait).
#[test]
fn callee_whose_sinks_hold_a_call_takes_the_next_call_with_media() {
    if !common::enter_netns("callee_whose_sinks_hold_a_call_takes_the_next_call_with_media") {
        return;
    }
    let server = TestServer::start();
    common::init();
    let description = format!(
        "wilddogcall name=c server={} app-id={} token={} dimension=240p \
         ice-local-addresses=127.0.0.1 \
         videotestsrc is-live=true ! video/x-raw,width=320,height=240,framerate=15/1 ! \
         c.video_sink audiotestsrc is-live=true ! c.audio_sink",
        server.url,
        wilddog_server::DEV_APP_ID,
        server.token("bob"),
    );
    let bob = gst::parse::launch(&description).unwrap().downcast::<gst::Pipeline>().unwrap();
    let call = bob.by_name("c").unwrap();
    // The first call's streams (one video, one audio pad) into sinks nobody pulls.
    let pads_seen = Arc::new(AtomicU64::new(0));
    let (weak, seen) = (bob.downgrade(), pads_seen.clone());
    call.connect_pad_added(move |_, pad| {
        let Some(pipeline) = weak.upgrade() else { return };
        seen.fetch_add(1, Ordering::SeqCst);
        let sink = gst_app::AppSink::builder().sync(false).max_buffers(1).drop(false).build();
        pipeline.add(&sink).unwrap();
        sink.sync_state_with_parent().unwrap();
        pad.link(&sink.static_pad("sink").unwrap()).unwrap();
    });
    bob.set_state(gst::State::Playing).unwrap();
    std::thread::sleep(Duration::from_millis(300));

    let mut alice = common::Endpoint::new(&server, EndpointConfig::new("alice").calling("bob"));
    alice.play();
    alice.wait_for("bob's video", T, |s| matches!(s, Seen::VideoFrame { .. }));
    while pads_seen.load(Ordering::SeqCst) < 2 {
        std::thread::sleep(Duration::from_millis(50));
    }
    // Long enough for both sinks to be full and hold their streaming threads.
    std::thread::sleep(Duration::from_millis(500));
    drop(alice);
    let started = Instant::now();
    while call.property::<Option<String>>("state").as_deref() != Some("idle")
        && started.elapsed() < T
    {
        std::thread::sleep(Duration::from_millis(50));
    }

    let mut carol = common::Endpoint::new(
        &server,
        EndpointConfig::new("carol").calling("bob").prop("dimension", "240p"),
    );
    carol.play();
    carol.wait_for("ACCEPTED", T, |s| *s == Seen::Response("ACCEPTED".into()));
    carol.wait_for("bob's 240p video", T, |s| {
        matches!(s, Seen::VideoFrame { width: 320, height: 240 })
    });
    carol.wait_for("bob's audio", T, |s| *s == Seen::AudioBuffer);
    // Only now (the held sinks did not keep carol from bob's media): the next call's video
    // (320x240: alice sent 640x480) into a counting sink.
    let next_call_frames = Arc::new(AtomicU64::new(0));
    for name in ["video_src", "audio_src"] {
        let pad = call.static_pad(name).expect("the pad stays for the next call");
        let held = pad.peer().expect("the pad stays linked");
        pad.unlink(&held).unwrap();
        let held = held.parent_element().unwrap();
        held.set_state(gst::State::Null).unwrap();
        bob.remove(&held).unwrap();
        let frames = next_call_frames.clone();
        let sink = gst_app::AppSink::builder().sync(false).build();
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |s| {
                    let sample = s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    let width =
                        sample.caps().and_then(|c| c.structure(0)?.get::<i32>("width").ok());
                    if width == Some(320) {
                        frames.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
        bob.add(&sink).unwrap();
        sink.sync_state_with_parent().unwrap();
        pad.link(&sink.static_pad("sink").unwrap()).unwrap();
    }

    let started = Instant::now();
    while next_call_frames.load(Ordering::Relaxed) == 0 && started.elapsed() < T {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(next_call_frames.load(Ordering::Relaxed) > 0, "bob decoded none of carol's video");
    drop(carol);

    // The first call's peer connection, still going down, does not keep bob from stopping.
    stops_in_time("bob", bob);
}

/// Stops `pipeline` (NULL) on a thread of its own: it must get there within 8 s; not within
/// 15 s is a deadlock.
fn stops_in_time(who: &str, pipeline: gst::Pipeline) {
    let (tx, rx) = std::sync::mpsc::channel();
    let stopping_pipeline = pipeline.clone();
    let stopping = Instant::now();
    std::thread::spawn(move || {
        let _ = stopping_pipeline.set_state(gst::State::Null);
        let _ = tx.send(stopping.elapsed());
    });
    let took = rx.recv_timeout(Duration::from_secs(15)).ok();
    println!("{who} stopped in {took:?}");
    if took.is_none() {
        // Deadlocked: leave it to the process's end.
        std::mem::forget(pipeline);
        panic!("{who}'s pipeline did not reach NULL within 15 s (deadlock)");
    }
    assert!(took.is_some_and(|t| t < Duration::from_secs(8)), "stopping took {took:?}");
}

/// The other direction: a call ends while the callee's video sending chain is inside the
/// call's webrtcbin for longer than the teardown waits to detach it (2 s; a loaded machine).
/// The next call must still carry the callee's video: the chain's thread comes back with
/// `flushing` from the torn-down webrtcbin, which must not stop it. (A CI run saw a callee
/// send audio and no video to its second caller.)
#[test]
fn callee_whose_video_push_outlasts_the_teardown_sends_video_in_the_next_call() {
    if !common::enter_netns(
        "callee_whose_video_push_outlasts_the_teardown_sends_video_in_the_next_call",
    ) {
        return;
    }
    common::init();
    let server = TestServer::start();
    let is_240p = |s: &Seen| matches!(s, Seen::VideoFrame { width: 320, height: 240 });
    let mut bob =
        common::Endpoint::new(&server, EndpointConfig::new("bob").prop("dimension", "240p"));
    bob.play();
    bob.wait_for("connected", T, |s| *s == Seen::Signaling(true));
    let mut alice = common::Endpoint::new(
        &server,
        EndpointConfig::new("alice").calling("bob").prop("dimension", "240p"),
    );
    alice.play();
    alice.wait_for("bob's 240p video", T, is_240p);

    // The next video packet bob sends stays in his webrtcbin for 5 s.
    let call_bin = bob.call.clone().upcast::<gst::Bin>();
    let into_webrtcbin = call_bin
        .by_name("video-encoder")
        .and_then(|bin| bin.static_pad("src")?.peer())
        .expect("bob's video sending chain is linked to his webrtcbin");
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    into_webrtcbin.add_probe(
        gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST,
        move |_, _| {
            if held_tx.send(()).is_ok() {
                std::thread::sleep(Duration::from_secs(5));
            }
            gst::PadProbeReturn::Remove
        },
    );
    held_rx.recv_timeout(T).expect("bob sent no video packet to hold");
    drop(alice);
    bob.wait_for("alice's hang-up", T, |s| matches!(s, Seen::Closed(_)));

    let mut carol = common::Endpoint::new(
        &server,
        EndpointConfig::new("carol").calling("bob").prop("dimension", "240p"),
    );
    carol.play();
    carol.wait_for("ACCEPTED", T, |s| *s == Seen::Response("ACCEPTED".into()));
    carol.wait_for("bob's 240p video", T, is_240p);
    bob.wait_for("carol's 240p video", T, is_240p);
}
