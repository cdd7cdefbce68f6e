//! Two (or three) pipelines calling each other through a real signaling server, in a
//! private network namespace, media on 127.0.0.1 only.

mod common;

use std::time::Duration;

use common::{Endpoint, EndpointConfig, Seen, TestServer};
use gst::prelude::*;

const T: Duration = Duration::from_secs(15);

fn is_video(w: i32, h: i32) -> impl Fn(&Seen) -> bool {
    move |s| matches!(s, Seen::VideoFrame { width, height } if *width == w && *height == h)
}

#[test]
fn call_accepted_both_sides_decode_video_and_audio() {
    if !common::enter_netns("call_accepted_both_sides_decode_video_and_audio") {
        return;
    }
    let server = TestServer::start();
    let mut bob = Endpoint::new(&server, EndpointConfig::new("bob").prop("dimension", "240p"));
    let mut alice = Endpoint::new(
        &server,
        EndpointConfig::new("alice")
            .calling("bob")
            .prop("dimension", "360p")
            .prop("user-data", "hello bob"),
    );
    bob.play();
    std::thread::sleep(Duration::from_millis(300));
    alice.play();
    let called = bob.wait_for("called", T, |s| matches!(s, Seen::Called { .. }));
    assert_eq!(
        called,
        Seen::Called { remote_uid: "alice".into(), user_data: Some("hello bob".into()) }
    );
    alice.wait_for("ACCEPTED", T, |s| *s == Seen::Response("ACCEPTED".into()));
    // Each side decodes the other's video at the size the other's `dimension` says.
    let first = alice.wait_for("first frame", T, |s| matches!(s, Seen::FirstFrame { .. }));
    println!("alice (caller): call -> first decoded remote frame: {first:?}");
    let Seen::FirstFrame { width, height, elapsed_ms } = first else { unreachable!() };
    assert_eq!((width, height), (320, 240));
    assert!(elapsed_ms < 10_000);
    alice.wait_for("240p frames", T, is_video(320, 240));
    bob.wait_for("360p frames", T, is_video(480, 360));
    let bob_first = bob.wait_for("first frame", T, |s| matches!(s, Seen::FirstFrame { .. }));
    println!("bob (callee): called -> first decoded remote frame: {bob_first:?}");
    alice.wait_for("audio", T, |s| *s == Seen::AudioBuffer);
    bob.wait_for("audio", T, |s| *s == Seen::AudioBuffer);
    assert!(alice.saw(|s| *s == Seen::StreamReceived));
    assert_eq!(alice.call.state(), "connected");
    assert_eq!(bob.call.conversation_id(), alice.call.conversation_id());
    // Stats come every 2 s with the original's fields.
    let stats = alice.wait_for("stats", Duration::from_secs(5), |s| matches!(s, Seen::Stats(_)));
    println!("alice stats: {stats:?}");
    let Seen::Stats(text) = stats else { unreachable!() };
    for field in [
        "bytesSent",
        "bitSentRate",
        "fps",
        "width",
        "height",
        "candidateType",
        "bytesReceived",
        "bitReceivedRate",
        "delay",
    ] {
        assert!(text.contains(field), "stats lack {field}: {text}");
    }
    assert!(alice.call.stats().is_some());
    // Up to 480p each libvpx encoder and decoder runs on one thread (their worker threads
    // busy-wait on each other): read back from the chains the call built.
    for (who, ep) in [("alice", &alice), ("bob", &bob)] {
        for factory in ["vp8enc", "vp8dec"] {
            let threads = vpx_threads(&ep.call, factory);
            assert_eq!(threads, vec![1], "{who}'s {factory} threads");
        }
    }
}

/// The `threads` of every `factory` element inside `call`.
fn vpx_threads(call: &gstwilddog::WilddogCall, factory: &str) -> Vec<u32> {
    call.iterate_recurse()
        .into_iter()
        .flatten()
        .filter(|e| e.factory().is_some_and(|f| f.name() == factory))
        .map(|e| {
            // vp8enc's is a gint, vp8dec's a guint.
            let v = e.property_value("threads");
            v.get::<u32>().ok().or_else(|| v.get::<i32>().ok().map(|t| t as u32)).unwrap_or(0)
        })
        .collect()
}

/// A callee takes one call after another and sends media in each: the end of a call (its
/// webrtcbin torn down) must not stop the encoders or the pipeline's sources.
#[test]
fn callee_sends_media_in_its_next_call_too() {
    if !common::enter_netns("callee_sends_media_in_its_next_call_too") {
        return;
    }
    let server = TestServer::start();
    let mut bob = Endpoint::new(&server, EndpointConfig::new("bob").prop("dimension", "240p"));
    bob.play();
    bob.wait_for("connected", T, |s| *s == Seen::Signaling(true));
    for caller in ["alice", "carol", "dave"] {
        let mut c = Endpoint::new(&server, EndpointConfig::new(caller).calling("bob"));
        c.play();
        c.wait_for("bob's 240p frames", T, is_video(320, 240));
        c.wait_for("bob's audio", T, |s| *s == Seen::AudioBuffer);
        bob.wait_for("the caller's frames", T, is_video(640, 480));
        drop(c);
        bob.wait_for("closed", T, |s| matches!(s, Seen::Closed(_)));
        // The end of the call left bob's pipeline playing: its next sinks do not wait in
        // PAUSED holding the next call's streams (nor its teardown).
        bob.assert_playing(Duration::from_secs(5));
        bob.drain();
    }
    assert!(!bob.saw(|s| matches!(s, Seen::ElementError { .. })), "{:?}", bob.log);
}

#[test]
fn close_gives_closed_and_eos_on_the_other_side() {
    if !common::enter_netns("close_gives_closed_and_eos_on_the_other_side") {
        return;
    }
    let server = TestServer::start();
    let mut bob = Endpoint::new(&server, EndpointConfig::new("bob"));
    let mut alice = Endpoint::new(
        &server,
        EndpointConfig::new("alice").calling("bob").prop("dimension", "240p"),
    );
    bob.play();
    std::thread::sleep(Duration::from_millis(300));
    alice.play();
    bob.wait_for("frames", T, |s| matches!(s, Seen::VideoFrame { .. }));
    // Both of alice's streams reached bob (a src pad the call never exposed gets no EOS at
    // a callee: the audio one can come a little after the first video frames).
    bob.wait_for("audio", T, |s| *s == Seen::AudioBuffer);
    alice.wait_for("frames", T, |s| matches!(s, Seen::VideoFrame { .. }));
    alice.call.close();
    bob.wait_for("closed", T, |s| matches!(s, Seen::Closed(r) if r == "remote-hangup"));
    bob.wait_for("video EOS", T, |s| *s == Seen::VideoEos);
    bob.wait_for("audio EOS", T, |s| *s == Seen::AudioEos);
    // The side that closes gets no `closed`, and its stream ends.
    alice.wait_for("EOS", T, |s| *s == Seen::PipelineEos);
    assert!(!alice.saw(|s| matches!(s, Seen::Closed(_))));
    assert_eq!(bob.call.state(), "idle");
    // Ending the call is no error on either side, and leaves both pipelines playing.
    bob.assert_playing(Duration::from_secs(5));
    alice.assert_playing(Duration::from_secs(5));
    for side in [&mut bob, &mut alice] {
        assert!(!side.saw(|s| matches!(s, Seen::ElementError { .. })), "{:?}", side.log);
    }
}

#[test]
fn rejected_call() {
    if !common::enter_netns("rejected_call") {
        return;
    }
    let server = TestServer::start();
    let bob = Endpoint::new(&server, EndpointConfig::new("bob").prop("answer", "reject"));
    let mut alice = Endpoint::new(&server, EndpointConfig::new("alice").calling("bob"));
    bob.play();
    std::thread::sleep(Duration::from_millis(300));
    alice.play();
    alice.wait_for("REJECTED", T, |s| *s == Seen::Response("REJECTED".into()));
    alice.wait_for("EOS", T, |s| *s == Seen::PipelineEos);
    assert!(!alice.saw(|s| matches!(s, Seen::VideoFrame { .. })));
}

#[test]
fn third_caller_gets_busy() {
    if !common::enter_netns("third_caller_gets_busy") {
        return;
    }
    let server = TestServer::start();
    let mut bob = Endpoint::new(&server, EndpointConfig::new("bob").prop("dimension", "120p"));
    let mut alice = Endpoint::new(
        &server,
        EndpointConfig::new("alice").calling("bob").prop("dimension", "120p"),
    );
    bob.play();
    std::thread::sleep(Duration::from_millis(300));
    alice.play();
    alice.wait_for("frames", T, |s| matches!(s, Seen::VideoFrame { .. }));
    let mut carol =
        Endpoint::new(&server, EndpointConfig::new("carol").calling("bob").receive_only());
    carol.play();
    carol.wait_for("BUSY", T, |s| *s == Seen::Response("BUSY".into()));
    // Bob was not told, and his call goes on.
    bob.drain();
    assert_eq!(bob.log.iter().filter(|s| matches!(s, Seen::Called { .. })).count(), 1);
    assert!(!bob.saw(|s| matches!(s, Seen::Called { remote_uid, .. } if remote_uid == "carol")));
    assert!(
        alice.count_for(Duration::from_millis(500), |s| matches!(s, Seen::VideoFrame { .. })) > 0
    );
}

#[test]
fn service_endpoints_of_one_uid_take_one_call_each_then_busy() {
    if !common::enter_netns("service_endpoints_of_one_uid_take_one_call_each_then_busy") {
        return;
    }
    let server = TestServer::start();
    let bot = || {
        let cfg = EndpointConfig::new("bot").prop("service", "true").prop("dimension", "120p");
        let mut bot = Endpoint::new(&server, cfg);
        bot.play();
        bot.wait_for("connected", T, |s| *s == Seen::Signaling(true));
        bot
    };
    let mut bots = [bot(), bot()];
    assert!(bots[0].call.property::<bool>("service"));
    let mut callers = Vec::new();
    for uid in ["alice", "dave"] {
        let mut caller =
            Endpoint::new(&server, EndpointConfig::new(uid).calling("bot").receive_only());
        caller.play();
        caller.wait_for("ACCEPTED", T, |s| *s == Seen::Response("ACCEPTED".into()));
        caller.wait_for("120p frames", T, is_video(160, 120));
        callers.push(caller);
    }
    // Each bot took one of the two calls (the other was not rung).
    for bot in &mut bots {
        bot.drain();
        let called = bot.log.iter().filter(|s| matches!(s, Seen::Called { .. })).count();
        assert_eq!(called, 1, "{:?}", bot.log);
    }
    // Both are busy now: the server answers BUSY, and neither bot hears of it.
    let mut carol =
        Endpoint::new(&server, EndpointConfig::new("carol").calling("bot").receive_only());
    carol.play();
    carol.wait_for("BUSY", T, |s| *s == Seen::Response("BUSY".into()));
    for bot in &mut bots {
        bot.drain();
        assert!(
            !bot.saw(|s| matches!(s, Seen::Called { remote_uid, .. } if remote_uid == "carol"))
        );
    }
    for caller in &mut callers {
        assert!(caller.count_for(Duration::from_millis(500), is_video(160, 120)) > 0);
    }
}

#[test]
fn busy_answer_policy_answers_busy_without_raising_called() {
    if !common::enter_netns("busy_answer_policy_answers_busy_without_raising_called") {
        return;
    }
    let server = TestServer::start();
    let mut bob = Endpoint::new(&server, EndpointConfig::new("bob").prop("answer", "busy"));
    bob.play();
    bob.wait_for("connected", T, |s| *s == Seen::Signaling(true));
    let mut alice = Endpoint::new(&server, EndpointConfig::new("alice").calling("bob"));
    alice.play();
    alice.wait_for("BUSY", T, |s| *s == Seen::Response("BUSY".into()));
    bob.drain();
    assert!(!bob.saw(|s| matches!(s, Seen::Called { .. })), "{:?}", bob.log);
    assert_eq!(bob.call.property::<Option<String>>("conversation-id"), None);
    assert_eq!(bob.call.state(), "idle");
    // Back to accepting: the next call is taken.
    bob.call.set_property_from_str("answer", "accept");
    let mut dave = Endpoint::new(&server, EndpointConfig::new("dave").calling("bob"));
    dave.play();
    dave.wait_for("ACCEPTED", T, |s| *s == Seen::Response("ACCEPTED".into()));
}

#[test]
fn unanswered_call_times_out() {
    if !common::enter_netns("unanswered_call_times_out") {
        return;
    }
    let server = TestServer::start();
    let mut bob = Endpoint::new(&server, EndpointConfig::new("bob").prop("answer", "manual"));
    let mut alice = Endpoint::new(
        &server,
        EndpointConfig::new("alice").calling("bob").prop("call-timeout", "1000"),
    );
    bob.play();
    std::thread::sleep(Duration::from_millis(300));
    alice.play();
    bob.wait_for("called", T, |s| matches!(s, Seen::Called { .. }));
    let started = std::time::Instant::now();
    alice.wait_for("TIMEOUT", T, |s| *s == Seen::Response("TIMEOUT".into()));
    assert!(started.elapsed() < Duration::from_secs(5));
    // The ringing stops at the callee.
    bob.wait_for("closed", T, |s| matches!(s, Seen::Closed(_)));
}

#[test]
fn caller_cancels_before_an_answer() {
    if !common::enter_netns("caller_cancels_before_an_answer") {
        return;
    }
    let server = TestServer::start();
    let mut bob = Endpoint::new(&server, EndpointConfig::new("bob").prop("answer", "manual"));
    let mut alice = Endpoint::new(&server, EndpointConfig::new("alice").calling("bob"));
    bob.play();
    std::thread::sleep(Duration::from_millis(300));
    alice.play();
    bob.wait_for("called", T, |s| matches!(s, Seen::Called { .. }));
    assert_eq!(bob.call.state(), "ringing");
    alice.call.close();
    bob.wait_for("closed", T, |s| matches!(s, Seen::Closed(_)));
    alice.wait_for("EOS", T, |s| *s == Seen::PipelineEos);
    assert!(!alice.saw(|s| matches!(s, Seen::Response(_))));
}

#[test]
fn manual_answer_with_action_signal() {
    if !common::enter_netns("manual_answer_with_action_signal") {
        return;
    }
    let server = TestServer::start();
    let mut bob = Endpoint::new(
        &server,
        EndpointConfig::new("bob").prop("answer", "manual").prop("dimension", "120p"),
    );
    let mut alice = Endpoint::new(
        &server,
        EndpointConfig::new("alice").calling("bob").prop("dimension", "120p"),
    );
    bob.play();
    std::thread::sleep(Duration::from_millis(300));
    alice.play();
    bob.wait_for("called", T, |s| matches!(s, Seen::Called { .. }));
    bob.call.accept();
    alice.wait_for("ACCEPTED", T, |s| *s == Seen::Response("ACCEPTED".into()));
    alice.wait_for("120p frames", T, is_video(160, 120));
}

#[test]
fn bad_token_is_error_41002() {
    if !common::enter_netns("bad_token_is_error_41002") {
        return;
    }
    let server = TestServer::start();
    let mut alice =
        Endpoint::with_token(&server, "not-a-token", EndpointConfig::new("alice").calling("bob"));
    alice.play();
    alice.wait_for("wilddog-error 41002", T, |s| *s == Seen::WilddogError(41002));
    let err = alice.wait_for("element error", T, |s| matches!(s, Seen::ElementError { .. }));
    assert!(matches!(err, Seen::ElementError { code: Some(41002), .. }), "{err:?}");
}

#[test]
fn server_killed_mid_call_media_goes_on() {
    if !common::enter_netns("server_killed_mid_call_media_goes_on") {
        return;
    }
    let mut server = TestServer::start();
    let mut bob = Endpoint::new(&server, EndpointConfig::new("bob").prop("dimension", "120p"));
    let mut alice = Endpoint::new(
        &server,
        EndpointConfig::new("alice").calling("bob").prop("dimension", "120p"),
    );
    bob.play();
    std::thread::sleep(Duration::from_millis(300));
    alice.play();
    alice.wait_for("frames", T, |s| matches!(s, Seen::VideoFrame { .. }));
    bob.wait_for("frames", T, |s| matches!(s, Seen::VideoFrame { .. }));
    server.kill();
    alice.wait_for("signaling lost", T, |s| *s == Seen::Signaling(false));
    bob.wait_for("signaling lost", T, |s| *s == Seen::Signaling(false));
    // Media flows on without the server.
    std::thread::sleep(Duration::from_millis(500));
    alice.drain();
    bob.drain();
    let a = alice.count_for(Duration::from_secs(1), |s| matches!(s, Seen::VideoFrame { .. }));
    let b = bob.count_for(Duration::from_secs(1), |s| matches!(s, Seen::VideoFrame { .. }));
    println!("frames in the second after the server died: alice {a}, bob {b}");
    assert!(a >= 5 && b >= 5, "media stopped: alice {a}, bob {b}");
    assert_eq!(alice.call.state(), "connected");
}

/// A callee that sends the caller's decoded media straight back (`c.video_src ! queue !
/// c.video_sink`, no videorate in between): decoded WebRTC video has a variable rate and
/// frames without duration, which aborted the process in the send chain's videorate.
#[test]
fn echo_callee_sends_decoded_video_back() {
    if !common::enter_netns("echo_callee_sends_decoded_video_back") {
        return;
    }
    use gst::prelude::*;
    let server = TestServer::start();
    common::init();
    let echo = gst::parse::launch(&format!(
        "wilddogcall name=c server={} app-id={} token={} ice-local-addresses=127.0.0.1 \
           dimension=120p \
         c.video_src ! queue ! c.video_sink \
         c.audio_src ! queue ! c.audio_sink",
        server.url,
        wilddog_server::config::DEV_APP_ID,
        server.token("echo"),
    ))
    .unwrap();
    let echo_bus = echo.bus().unwrap();
    echo.set_state(gst::State::Playing).unwrap();
    let mut alice = Endpoint::new(
        &server,
        EndpointConfig::new("alice").calling("echo").prop("dimension", "240p"),
    );
    std::thread::sleep(Duration::from_millis(300));
    alice.play();
    alice.wait_for("ACCEPTED", T, |s| *s == Seen::Response("ACCEPTED".into()));
    // Alice's own 240p video comes back, re-encoded at the echo's 120p.
    alice.wait_for("echoed 120p frames", T, is_video(160, 120));
    alice.drain();
    let echoed = alice.count_for(Duration::from_secs(2), is_video(160, 120));
    println!("echoed frames in 2 s: {echoed}");
    assert!(echoed >= 10, "the echo stalled: {echoed} frames in 2 s");
    if let Some(msg) = echo_bus.pop_filtered(&[gst::MessageType::Error]) {
        panic!("the echo pipeline failed: {msg:?}");
    }
    alice.call.close();
    alice.wait_for("EOS", T, |s| *s == Seen::PipelineEos);
    echo.set_state(gst::State::Null).unwrap();
}
