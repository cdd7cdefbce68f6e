//! Two (or three) pipelines calling each other through a real signaling server, in a
//! private network namespace, media on 127.0.0.1 only.

mod common;

use std::time::Duration;

use common::{Endpoint, EndpointConfig, Seen, Stats, TestServer};
use gst::glib;
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
    // (bob's encoder kept at its first speed: read back below, it must not have stepped
    // faster on a busy machine)
    let mut bob = Endpoint::new(
        &server,
        EndpointConfig::new("bob").prop("dimension", "240p").prop("cpu-adaptation", "false"),
    );
    let mut alice = Endpoint::new(
        &server,
        EndpointConfig::new("alice")
            .calling("bob")
            .prop("dimension", "360p")
            .prop("user-data", "hello bob")
            .prop("encoder-speed", "fast"),
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
    first_stats_have_rates(&mut alice);
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
            let threads = vpx_property(&ep.call, factory, "threads");
            assert_eq!(threads, vec![1], "{who}'s {factory} threads");
        }
    }
    // `encoder-speed`: alice's encoder at libvpx's fastest, bob's (the default) at Chrome's.
    assert_eq!(
        vpx_property(&alice.call, "vp8enc", "cpu-used"),
        vec![-16],
        "alice's vp8enc, encoder-speed=fast"
    );
    assert_eq!(
        vpx_property(&bob.call, "vp8enc", "cpu-used"),
        vec![-6],
        "bob's vp8enc, the default encoder-speed"
    );
}

/// Right after `ep`'s first remote frame: the first report that comes a second or more
/// after it has both directions' rates, near the frame rates sent (15 fps each way). The
/// first report of a call said 0 kbit/s and 0 fps (it had no earlier one to count from), so
/// this fails with that whenever the report read is the call's first: on an idle machine it
/// is (reports come 2 s after the media began, the first frame within 1 s); on a slow one
/// the report read may be a later one (printed).
fn first_stats_have_rates(ep: &mut Endpoint) {
    let first_frame_at = std::time::Instant::now();
    let reports_before = ep.log.iter().filter(|s| matches!(s, Seen::Stats(_))).count();
    let mut reports = reports_before;
    let deadline = first_frame_at + Duration::from_secs(6);
    let stats = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match ep.seen.recv_timeout(left) {
            Ok(Seen::Stats(text)) => {
                ep.log.push(Seen::Stats(text.clone()));
                reports += 1;
                if first_frame_at.elapsed() >= Duration::from_secs(1) {
                    break Stats::parse(&text);
                }
            }
            Ok(other) => ep.log.push(other),
            Err(_) => panic!("no stats within 6 s of the first frame"),
        }
    };
    println!(
        "report {reports} ({reports_before} before the first frame): local {} fps {} kbit/s, \
         remote {} fps {} kbit/s",
        stats.local_u64("fps"),
        stats.local_u64("bitSentRate"),
        stats.remote_u64("fps"),
        stats.remote_u64("bitReceivedRate")
    );
    for (side, fps, kbps) in [("local", "fps", "bitSentRate"), ("remote", "fps", "bitReceivedRate")]
    {
        let (fps, kbps) = if side == "local" {
            (stats.local_u64(fps), stats.local_u64(kbps))
        } else {
            (stats.remote_u64(fps), stats.remote_u64(kbps))
        };
        // (Counting from the media's start, tried once, read 8 fps of 15.)
        assert!((9..=20).contains(&fps) && kbps > 0, "{side}: {fps} fps, {kbps} kbit/s");
    }
}

/// The integer property `name` of every `factory` element inside `call` (vp8enc's
/// `threads` is a gint, vp8dec's a guint: both read as i64).
fn vpx_property(call: &gstwilddog::WilddogCall, factory: &str, name: &str) -> Vec<i64> {
    call.iterate_recurse()
        .into_iter()
        .flatten()
        .filter(|e| e.factory().is_some_and(|f| f.name() == factory))
        .map(|e| {
            let v = e.property_value(name);
            v.get::<i32>()
                .map(i64::from)
                .or_else(|_| v.get::<u32>().map(i64::from))
                .unwrap_or_else(|_| panic!("{factory}'s {name} is not an integer: {v:?}"))
        })
        .collect()
}

/// The RTP sessions of `call` (webrtcbin's rtpbin's), each with its `rtcp-min-interval`
/// (ns) and whether it has remote sources that send, and a sender report from each.
fn rtcp_of(call: &gstwilddog::WilddogCall) -> Vec<(u64, bool)> {
    call.iterate_recurse()
        .into_iter()
        .flatten()
        .filter(|e| e.factory().is_some_and(|f| f.name() == "rtpsession"))
        .map(|session| {
            let stats = session.property::<gst::Structure>("stats");
            let sources = stats.get::<glib::ValueArray>("source-stats").expect("source-stats");
            let senders: Vec<gst::Structure> = sources
                .iter()
                .filter_map(|v| v.get::<gst::Structure>().ok())
                .filter(|s| {
                    !s.get::<bool>("internal").unwrap_or(true)
                        && s.get::<bool>("is-sender").unwrap_or(false)
                })
                .collect();
            let senders_reported = !senders.is_empty()
                && senders.iter().all(|s| s.get::<bool>("have-sr").unwrap_or(false));
            (session.property::<u64>("rtcp-min-interval"), senders_reported)
        })
        .collect()
}

/// A call whose peer sends no media (a receive-only caller) has only sender reports to send:
/// one a second, not the ten a second a session that receives sends its feedback in. The
/// receive-only side keeps its 100 ms, and still gets the sender's reports.
#[test]
fn a_session_that_only_sends_reports_a_second_apart() {
    if !common::enter_netns("a_session_that_only_sends_reports_a_second_apart") {
        return;
    }
    let server = TestServer::start();
    let mut bob = Endpoint::new(&server, EndpointConfig::new("bob").prop("dimension", "120p"));
    bob.play();
    bob.wait_for("connected", T, |s| *s == Seen::Signaling(true));
    let mut carol =
        Endpoint::new(&server, EndpointConfig::new("carol").calling("bob").receive_only());
    carol.play();
    carol.wait_for("120p frames", T, is_video(160, 120));
    let intervals = |ep: &Endpoint| rtcp_of(&ep.call).iter().map(|r| r.0).collect::<Vec<_>>();
    let (bob_rtcp, carol_rtcp) = (intervals(&bob), intervals(&carol));
    assert!(!bob_rtcp.is_empty() && bob_rtcp.iter().all(|&i| i == 1_000_000_000), "{bob_rtcp:?}");
    assert!(
        !carol_rtcp.is_empty() && carol_rtcp.iter().all(|&i| i == 100_000_000),
        "{carol_rtcp:?}"
    );
    // Carol gets bob's sender reports (lip sync, her round trip), within their interval.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !rtcp_of(&carol.call).iter().all(|r| r.1) {
        assert!(std::time::Instant::now() < deadline, "carol got no sender report from bob");
        std::thread::sleep(Duration::from_millis(100));
    }
    // And her picture keeps coming.
    assert!(carol.count_for(Duration::from_secs(2), is_video(160, 120)) > 15);
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
    // The side that closes gets no `closed`, and its stream ends.
    alice.wait_for("EOS", T, |s| *s == Seen::PipelineEos);
    assert!(!alice.saw(|s| matches!(s, Seen::Closed(_))));
    assert_eq!(bob.call.state(), "idle");
    // Bob answers further calls: his src pads stay for the next one, with no EOS.
    std::thread::sleep(Duration::from_millis(500));
    assert!(!bob.saw(|s| matches!(s, Seen::VideoEos | Seen::AudioEos)), "{:?}", bob.log);
    assert!(bob.call.static_pad("video_src").is_some_and(|p| p.is_linked()));
    // Once he takes no more calls (as the runner makes a pipeline whose call is over), they
    // end.
    bob.call.set_property_from_str("answer", "busy");
    bob.wait_for("video EOS", T, |s| *s == Seen::VideoEos);
    bob.wait_for("audio EOS", T, |s| *s == Seen::AudioEos);
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
    let alice =
        Endpoint::with_token(&server, "not-a-token", EndpointConfig::new("alice").calling("bob"));
    assert_refused_with(alice, 41002);
}

#[test]
fn unknown_app_id_is_error_41008() {
    if !common::enter_netns("unknown_app_id_is_error_41008") {
        return;
    }
    let server = TestServer::start();
    let alice = Endpoint::new(
        &server,
        EndpointConfig::new("alice").calling("bob").prop("app-id", "no-such-app"),
    );
    assert_refused_with(alice, 41008);
}

/// `endpoint`, played, posts `wilddog-error` `code` and then an element error with it.
fn assert_refused_with(mut endpoint: Endpoint, code: u32) {
    endpoint.play();
    endpoint.wait_for(&format!("wilddog-error {code}"), T, |s| *s == Seen::WilddogError(code));
    let err = endpoint.wait_for("element error", T, |s| matches!(s, Seen::ElementError { .. }));
    assert!(matches!(err, Seen::ElementError { code: Some(c), .. } if c == code), "{err:?}");
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

/// An answerer as the README's `gst-launch-1.0` line makes it (its src branches linked
/// once, when the pads first appear, into synchronised sinks through `videoconvert`) shows
/// every call it answers, not only the first: its pads stay between calls, the second
/// caller's smaller video goes to the same sinks (new caps through `videoconvert`,
/// timestamps on the pipeline's clock: the synchronised sink neither waits nor gets it
/// late), and the pipeline posts no EOS in between. The pads used to get EOS and go at the
/// end of each call; the next call's were new pads nobody linked.
#[test]
fn an_answerer_linked_once_shows_every_call() {
    if !common::enter_netns("an_answerer_linked_once_shows_every_call") {
        return;
    }
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Instant;
    let server = TestServer::start();
    common::init();
    // Keeping the pads leaves GStreamer nothing to complain about (a probe dropping the
    // teardown's EOS made GStreamer 1.22 unref it twice).
    let criticals = common::count_gstreamer_criticals();
    let bob = gst::parse::launch(&format!(
        "wilddogcall name=c server={} app-id={} token={} answer=accept \
           ice-local-addresses=127.0.0.1 \
         c.video_src ! queue ! videoconvert ! appsink name=video sync=true \
         c.audio_src ! queue ! audioconvert ! appsink name=audio sync=true",
        server.url,
        wilddog_server::config::DEV_APP_ID,
        server.token("bob"),
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let bob_call = bob.by_name("c").unwrap();
    // Each decoded frame's size, and how far behind the clock it reached its sink (ms).
    let frames: Arc<Mutex<Vec<(i32, i32, i64)>>> = Default::default();
    let audio_buffers = Arc::new(AtomicU64::new(0));
    let video_sink = bob.by_name("video").unwrap().downcast::<gst_app::AppSink>().unwrap();
    let seen = frames.clone();
    video_sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                let s = sample.caps().and_then(|c| c.structure(0).map(|s| s.to_owned()));
                let size = s.map(|s| (s.get("width").unwrap_or(0), s.get("height").unwrap_or(0)));
                let behind = (|| {
                    let segment = sample.segment()?.downcast_ref::<gst::ClockTime>()?;
                    let at = segment.to_running_time(sample.buffer()?.pts()?)?;
                    let now = sink.current_running_time()?;
                    Some((now.nseconds() as i64 - at.nseconds() as i64) / 1_000_000)
                })();
                let (w, h) = size.unwrap_or((0, 0));
                seen.lock().unwrap().push((w, h, behind.unwrap_or(i64::MAX)));
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    common::count_samples(&bob, "audio", audio_buffers.clone());
    bob.set_state(gst::State::Playing).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let of_size = |w: i32, h: i32| {
        let frames = frames.clone();
        move || frames.lock().unwrap().iter().filter(|f| f.0 == w && f.1 == h).count()
    };
    let wait = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = Instant::now() + T;
        while !done() {
            assert!(Instant::now() < deadline, "bob: no {what} within {T:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };

    for (caller, dimension, (w, h)) in
        [("alice", "240p", (320, 240)), ("carol", "120p", (160, 120))]
    {
        let audio_before = audio_buffers.load(Ordering::Relaxed);
        let frames_before = frames.lock().unwrap().len();
        let mut c = Endpoint::new(
            &server,
            EndpointConfig::new(caller).calling("bob").prop("dimension", dimension),
        );
        c.play();
        c.wait_for("ACCEPTED", T, |s| *s == Seen::Response("ACCEPTED".into()));
        let sized = of_size(w, h);
        wait(&format!("{caller}'s {w}x{h} frames"), &|| sized() >= 10);
        wait(&format!("{caller}'s audio"), &|| {
            audio_buffers.load(Ordering::Relaxed) >= audio_before + 10
        });
        // The frames of this call reached the synchronised sink on time: timestamps of the
        // pipeline's running time, not of a clock that started with the call.
        let mut behind: Vec<i64> =
            frames.lock().unwrap()[frames_before..].iter().map(|f| f.2).collect();
        behind.sort_unstable();
        let median = behind[behind.len() / 2];
        println!("{caller}: {} frames, median {median} ms behind the clock", behind.len());
        assert!((-1000..1000).contains(&median), "{caller}'s frames {median} ms behind");
        c.call.close();
        c.wait_for("EOS", T, |s| *s == Seen::PipelineEos);
        drop(c);
        // The pads stay, linked, for the next call.
        common::assert_src_pads_kept(&bob_call, &bob_call, caller);
    }
    // Between and after the calls: no EOS (gst-launch-1.0 would have exited), no error.
    common::assert_kept_pipeline_clean(&bob, &criticals);
}

/// The echo bot's pipeline (`pipelines/echo.toml`, as written) kept across calls, as
/// `gst-launch-1.0` keeps it: the element keeps its src pads, linked back into its own sink
/// pads, and each caller in turn gets its own media back, not the last caller's. Each caller
/// sends a plain picture of its own (white, then black) and recognises it in what it decodes.
#[test]
fn the_echo_pipeline_kept_across_calls_gives_each_caller_its_own_media() {
    if !common::enter_netns("the_echo_pipeline_kept_across_calls_gives_each_caller_its_own_media") {
        return;
    }
    use std::sync::atomic::Ordering;
    let server = TestServer::start();
    common::init();
    let criticals = common::count_gstreamer_criticals();
    let echo =
        gst::parse::launch(&pipeline_of("echo.toml")).unwrap().downcast::<gst::Pipeline>().unwrap();
    // What the runner sets on the file's `call` (the rest is the file's).
    let echo_call = echo.by_name("call").unwrap();
    echo_call.set_property("server", &server.url);
    echo_call.set_property("app-id", wilddog_server::config::DEV_APP_ID);
    echo_call.set_property("token", server.token("echo"));
    echo_call.set_property("ice-local-addresses", "127.0.0.1");
    echo.set_state(gst::State::Playing).unwrap();
    std::thread::sleep(Duration::from_millis(300));

    for (caller, pattern, bright) in
        [("alice", "pattern=white", true), ("carol", "pattern=black", false)]
    {
        let mut cfg = EndpointConfig::new(caller).calling("echo");
        cfg.video_pattern = Some(pattern);
        let mut c = Endpoint::new(&server, cfg);
        let frames = luma_of_decoded_video(&c.call);
        c.play();
        c.wait_for("ACCEPTED", T, |s| *s == Seen::Response("ACCEPTED".into()));
        // Its own picture back, decoded at the size both sides send (480p, the default).
        let deadline = std::time::Instant::now() + T;
        let own = |f: &(i32, i32, u8)| (f.2 > 128) == bright;
        while frames.lock().unwrap().iter().filter(|f| own(f)).count() < 10 {
            assert!(
                std::time::Instant::now() < deadline,
                "{caller}: no 10 frames of its own picture back within {T:?}: {:?} ({} decoded)",
                frames.lock().unwrap(),
                c.video_frames.load(Ordering::Relaxed)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        c.wait_for(&format!("{caller}'s own audio back"), T, |s| *s == Seen::AudioBuffer);
        let frames = frames.lock().unwrap().clone();
        println!("{caller}: {} frames back, first {:?}", frames.len(), frames.first());
        // Nothing of the last call: every frame this caller decoded is its own picture.
        assert!(
            frames.iter().all(|f| own(f) && (f.0, f.1) == (640, 480)),
            "{caller} decoded frames not its own (width, height, luma): {frames:?}"
        );
        assert!(
            !c.log.iter().any(|s| matches!(s, Seen::ElementError { .. })),
            "{caller}: {:?}",
            c.log
        );
        c.call.close();
        c.wait_for("EOS", T, |s| *s == Seen::PipelineEos);
        drop(c);
        // The pads stay, linked back into the element, for the next call.
        common::assert_src_pads_kept(&echo_call, &echo_call, caller);
    }
    common::assert_kept_pipeline_clean(&echo, &criticals);
}

/// The `pipeline` of a file in `pipelines/`, as written.
fn pipeline_of(file: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../pipelines").join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    let start = text.find("pipeline = \"\"\"").expect("a pipeline") + "pipeline = \"\"\"".len();
    let len = text[start..].find("\"\"\"").expect("the pipeline's end");
    text[start..start + len].to_owned()
}

/// Width, height and the luma in the middle of each decoded frame out of `call`'s
/// `video_src` (a plain picture: white is about 235, black 16).
fn luma_of_decoded_video(
    call: &gstwilddog::WilddogCall,
) -> std::sync::Arc<std::sync::Mutex<Vec<(i32, i32, u8)>>> {
    let frames: std::sync::Arc<std::sync::Mutex<Vec<(i32, i32, u8)>>> = Default::default();
    let seen = frames.clone();
    call.connect_pad_added(move |_, pad| {
        if pad.name() != "video_src" {
            return;
        }
        let seen = seen.clone();
        pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
            let (Some(buffer), Some(caps)) = (info.buffer(), pad.current_caps()) else {
                return gst::PadProbeReturn::Ok;
            };
            let Ok(video) = gst_video::VideoInfo::from_caps(&caps) else {
                return gst::PadProbeReturn::Ok;
            };
            assert!(video.format_info().is_yuv(), "decoded video in {caps}");
            let (w, h) = (video.width() as usize, video.height() as usize);
            let stride = video.stride()[0] as usize;
            let at = video.offset()[0] + (h / 2) * stride + w / 2;
            let mut byte = [0u8; 1];
            if buffer.copy_to_slice(at, &mut byte).is_ok() {
                seen.lock().unwrap_or_else(|e| e.into_inner()).push((w as i32, h as i32, byte[0]));
            }
            gst::PadProbeReturn::Ok
        });
    });
    frames
}

/// The recorder's pipeline (`pipelines/record.toml`, as written) and a caller whose video
/// starts 6 s after its audio, past the 4 s the element waits for an announced stream
/// (`ANNOUNCED_STREAM_WAIT`): the muxer's video input ends then, so the recording is
/// finalized when the call ends, playable, with the whole call's audio, and nothing on the
/// bus (a pad left waiting instead held the muxer, and the file, forever). The late video
/// itself is not in the file today: the muxer's input had ended when it came (with video
/// from the start the same test records both).
#[test]
fn a_recording_whose_video_starts_six_seconds_late_is_playable() {
    if !common::enter_netns("a_recording_whose_video_starts_six_seconds_late_is_playable") {
        return;
    }
    use std::sync::{Arc, Mutex};
    let server = TestServer::start();
    common::init();
    let dir = std::env::temp_dir().join(format!("wilddog-late-video-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("call.mkv");
    let desc = pipeline_of("record.toml")
        .replace("${record_dir}", &dir.display().to_string())
        .replace("${conversation_id}", "call");
    let recorder = gst::parse::launch(&desc).unwrap().downcast::<gst::Pipeline>().unwrap();
    let rec_call = recorder.by_name("call").unwrap();
    rec_call.set_property("server", &server.url);
    rec_call.set_property("app-id", wilddog_server::config::DEV_APP_ID);
    rec_call.set_property("token", server.token("recorder"));
    rec_call.set_property("ice-local-addresses", "127.0.0.1");
    // Everything the recorder's bus says that a user would look at.
    let said: Arc<Mutex<Vec<String>>> = Default::default();
    let log = said.clone();
    recorder.bus().unwrap().set_sync_handler(move |_, msg| {
        let line = match msg.view() {
            gst::MessageView::Error(e) => Some(format!("error: {} ({:?})", e.error(), e.debug())),
            gst::MessageView::Warning(w) => {
                Some(format!("warning: {} ({:?})", w.error(), w.debug()))
            }
            gst::MessageView::Eos(_) => Some("eos".to_owned()),
            _ => None,
        };
        if let Some(line) = line {
            log.lock().unwrap_or_else(|e| e.into_inner()).push(line);
        }
        gst::BusSyncReply::Drop
    });
    let file_ended = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ended = file_ended.clone();
    let filesink = recorder
        .iterate_elements()
        .into_iter()
        .flatten()
        .find(|e| e.factory().is_some_and(|f| f.name() == "filesink"))
        .unwrap();
    filesink.static_pad("sink").unwrap().add_probe(
        gst::PadProbeType::EVENT_DOWNSTREAM,
        move |_, info| {
            if let Some(gst::PadProbeData::Event(e)) = &info.data
                && e.type_() == gst::EventType::Eos
            {
                ended.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            gst::PadProbeReturn::Ok
        },
    );
    recorder.set_state(gst::State::Playing).unwrap();
    std::thread::sleep(Duration::from_millis(300));

    let caller = gst::parse::launch(&format!(
        "wilddogcall name=c server={} app-id={} token={} remote-uid=recorder \
           ice-local-addresses=127.0.0.1 dimension=240p \
         videotestsrc is-live=true ! valve name=gate drop=true ! c.video_sink \
         audiotestsrc is-live=true ! c.audio_sink",
        server.url,
        wilddog_server::config::DEV_APP_ID,
        server.token("alice"),
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let caller_bus = caller.bus().unwrap();
    caller.set_state(gst::State::Playing).unwrap();
    let accepted = caller_bus
        .iter_timed_filtered(gst::ClockTime::from_seconds(15), &[gst::MessageType::Element])
        .find(|m| m.structure().is_some_and(|s| s.name() == "wilddog-response"));
    let status = accepted.and_then(|m| m.structure()?.get::<String>("status").ok());
    assert_eq!(status.as_deref(), Some("ACCEPTED"));
    let started = std::time::Instant::now();
    std::thread::sleep(Duration::from_secs(6));
    caller.by_name("gate").unwrap().set_property("drop", false);
    std::thread::sleep(Duration::from_secs(4));
    caller.by_name("c").unwrap().downcast::<gstwilddog::WilddogCall>().unwrap().close();
    let call_secs = started.elapsed().as_secs_f64();
    // The recording is finalized: its pads end with the call (the element answers further
    // calls, so the pipeline itself posts no EOS), the muxer writes its index and hands EOS
    // to the file.
    let deadline = std::time::Instant::now() + T;
    while !file_ended.load(std::sync::atomic::Ordering::Relaxed) {
        if std::time::Instant::now() >= deadline {
            let pads: Vec<String> = rec_call
                .src_pads()
                .iter()
                .map(|p| format!("{} linked={}", p.name(), p.is_linked()))
                .collect();
            panic!("the recording got no EOS: the recorder's bus {said:?}; its pads {pads:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    recorder.set_state(gst::State::Null).unwrap();
    caller.set_state(gst::State::Null).unwrap();
    let said = said.lock().unwrap().clone();
    println!("the recorder's bus: {said:?}");
    assert!(said.iter().all(|l| !l.starts_with("error")), "the recorder's bus: {said:?}");

    let out = std::process::Command::new("gst-discoverer-1.0").arg(&file).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    assert!(out.status.success(), "gst-discoverer-1.0 failed: {text}");
    assert!(text.contains("audio #") && text.contains("Opus"), "the call's audio: {text}");
    let duration = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Duration: "))
        .unwrap_or_else(|| panic!("no duration: {text}"));
    let parts: Vec<f64> = duration.split(':').filter_map(|p| p.parse().ok()).collect();
    let secs = parts.iter().fold(0.0, |acc, p| acc * 60.0 + p);
    assert!(secs >= call_secs - 2.0, "{secs} s recorded of a {call_secs:.1} s call: {text}");
    let _ = std::fs::remove_dir_all(&dir);
}
