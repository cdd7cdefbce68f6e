//! Audio heard over a call when one side's media is not the usual 48 kHz mono audio plus
//! video, with gst-launch pipelines as users write them: src branches linked when the pads
//! appear (`c.video_src ! fakesink`), synchronised sinks.
//!
//! - A callee answering an audio-only caller: its `video_src` never came, the sink waiting
//!   for it never prerolled, so the pipeline never reached PLAYING and its audio sink held
//!   its first buffer for the whole call (the caller looked as if it stopped sending).
//!   Such a pad that an echo loops back into the element is left idle, not ended.
//! - An answerer capturing at 8 kHz, or in stereo: its Opus caps (`sprop-maxcapturerate`,
//!   `sprop-stereo`) did not intersect a 48 kHz mono caller's offer, webrtcbin answered the
//!   audio section `recvonly`, and the caller heard nothing, with no error.
//! - A callee whose video source starts late (a camera): its audio goes out from the
//!   connection on, its video once the source starts (a shared source's audio waited for
//!   the video: the runner's `shared_pipeline`, `run_concurrent.rs`).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Endpoint, EndpointConfig, Seen, TestServer};
use gst::prelude::*;

/// How long the audio is measured once it flows.
const WINDOW: Duration = Duration::from_secs(3);

/// A `wilddogcall` pipeline from a gst-launch line (`c` is the element), on loopback.
fn launch(server: &TestServer, uid: &str, props: &str, branches: &str) -> gst::Pipeline {
    common::init();
    let description = format!(
        "wilddogcall name=c server={} app-id={} token={} ice-local-addresses=127.0.0.1 {props} \
         {branches}",
        server.url,
        wilddog_server::DEV_APP_ID,
        server.token(uid),
    );
    gst::parse::launch(&description).unwrap().downcast::<gst::Pipeline>().unwrap()
}

/// The audio time (ns) that reached the sink named `name` so far.
fn heard(pipeline: &gst::Pipeline, name: &str) -> Arc<AtomicU64> {
    let total = Arc::new(AtomicU64::new(0));
    let sink = pipeline.by_name(name).unwrap().static_pad("sink").unwrap();
    let counted = total.clone();
    sink.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        if let Some(gst::PadProbeData::Buffer(buffer)) = &info.data {
            let ns = buffer.duration().map_or(0, gst::ClockTime::nseconds);
            counted.fetch_add(ns, Ordering::Relaxed);
        }
        gst::PadProbeReturn::Ok
    });
    total
}

/// Plays `callee` then `caller` (which calls it), and asserts that the sink `heard` counts
/// (in `listener`) gets at least 80 % of real time once audio flows.
fn assert_heard(callee: &gst::Pipeline, caller: &gst::Pipeline, listener: &gst::Pipeline) {
    assert_heard_after(callee, caller, listener, Duration::ZERO);
}

/// [`assert_heard`], measuring from `settle` after the first audio.
fn assert_heard_after(
    callee: &gst::Pipeline,
    caller: &gst::Pipeline,
    listener: &gst::Pipeline,
    settle: Duration,
) {
    let total = heard(listener, "heard");
    callee.set_state(gst::State::Playing).unwrap();
    // The callee registers before it is called.
    std::thread::sleep(Duration::from_millis(500));
    caller.set_state(gst::State::Playing).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while total.load(Ordering::Relaxed) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(settle);
    let first = total.load(Ordering::Relaxed);
    std::thread::sleep(WINDOW);
    let got = Duration::from_nanos(total.load(Ordering::Relaxed) - first);
    let _ = caller.set_state(gst::State::Null);
    let _ = callee.set_state(gst::State::Null);
    println!("{got:?} of audio heard in {WINDOW:?} (first {first} ns)");
    assert!(first > 0, "no audio heard at all");
    assert!(got >= WINDOW.mul_f64(0.8), "{got:?} of audio heard in {WINDOW:?}");
}

#[test]
fn a_callee_hears_an_audio_only_caller() {
    if !common::enter_netns("a_callee_hears_an_audio_only_caller") {
        return;
    }
    let server = TestServer::start();
    let bob =
        launch(&server, "bob", "", "c.video_src ! fakesink c.audio_src ! fakesink name=heard");
    let alice = launch(
        &server,
        "alice",
        "remote-uid=bob",
        "audiotestsrc is-live=true ! c.audio_sink c.audio_src ! fakesink",
    );
    assert_heard(&bob, &alice, &bob);
}

/// Bob as an echo (`video_src` looped to `video_sink`, as `pipelines/echo.toml`), called by
/// alice, who sends audio alone and hears it (`heard`) with `alice_also` in her pipeline.
fn echo_and_audio_only_caller(
    server: &TestServer,
    alice_also: &str,
) -> (gst::Pipeline, gst::Pipeline) {
    let bob = launch(
        server,
        "bob",
        "",
        "identity name=video_back ! c.video_sink identity name=audio_back ! c.audio_sink \
         c.video_src ! video_back. c.audio_src ! audio_back.",
    );
    let alice = launch(
        server,
        "alice",
        "remote-uid=bob",
        &format!(
            "audiotestsrc is-live=true ! c.audio_sink c.audio_src ! fakesink name=heard \
             {alice_also}"
        ),
    );
    (bob, alice)
}

/// An echo answering an audio-only caller: its `video_src` is exposed with no stream and
/// loops back into the element. A reconfigure event once went round that loop until the
/// echo's stack overflowed (SIGSEGV, which would end this test's process); now the caller
/// hears its audio echoed.
#[test]
fn an_echo_answering_an_audio_only_caller_echoes_its_audio() {
    if !common::enter_netns("an_echo_answering_an_audio_only_caller_echoes_its_audio") {
        return;
    }
    let server = TestServer::start();
    let (bob, alice) = echo_and_audio_only_caller(&server, "");
    assert_heard(&bob, &alice, &alice);
}

/// An audio-only caller that has a sink for video too, called back by a callee that
/// announces video (it has a `video_sink`, fed by a source) but sends none (its valve drops
/// every frame) and echoes the audio. The caller's `video_src` sink waited for that video and
/// held its audio sink at the first buffer; the pad of the stream announced and never sent
/// now comes after a few seconds with a gap, which the sink takes as its preroll. (An echo
/// announced such video once: it now answers it `inactive`, the test below.)
#[test]
fn a_caller_hears_a_callee_that_announces_video_it_never_sends() {
    if !common::enter_netns("a_caller_hears_a_callee_that_announces_video_it_never_sends") {
        return;
    }
    let server = TestServer::start();
    let bob = launch(
        &server,
        "bob",
        "",
        "videotestsrc is-live=true ! valve drop=true ! c.video_sink \
         identity name=audio_back ! c.audio_sink c.audio_src ! audio_back. \
         c.video_src ! fakesink",
    );
    let alice = launch(
        &server,
        "alice",
        "remote-uid=bob",
        "audiotestsrc is-live=true ! c.audio_sink c.audio_src ! fakesink name=heard \
         c.video_src ! fakesink",
    );
    // The element waits 4 s (ANNOUNCED_STREAM_WAIT) for the stream, from the connection.
    assert_heard_after(&bob, &alice, &alice, Duration::from_secs(5));
}

/// The same again, timed: the echo's answer says it sends no video (its section
/// `inactive`: all the echo's `video_sink` gets is what its own `video_src` would, and the
/// caller sends none), so the caller's `video_src` ends at once and its sink does not hold
/// the audio: the caller hears its echo from the connection on (more than 1 s of it in the
/// first 2 s), not after the 4 s an announced stream is waited for (`ANNOUNCED_STREAM_WAIT`),
/// as when the echo answered `sendonly`. The answer names the SSRC of the audio it sends.
#[test]
fn an_echo_announces_no_video_to_an_audio_only_caller_who_hears_it_at_once() {
    if !common::enter_netns(
        "an_echo_announces_no_video_to_an_audio_only_caller_who_hears_it_at_once",
    ) {
        return;
    }
    common::init();
    let remote_sdps = common::capture_remote_sdps();
    let server = TestServer::start();
    let (bob, alice) = echo_and_audio_only_caller(&server, "c.video_src ! fakesink");
    let total = heard(&alice, "heard");
    let call = alice.by_name("c").unwrap();
    bob.set_state(gst::State::Playing).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    alice.set_state(gst::State::Playing).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while call.property::<String>("state") != "connected" && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    // The audio of the first 2 s: a sink held at its first buffer (the pipeline waiting for
    // `video_src`'s sink to preroll) lets one 20 ms buffer through in that time.
    std::thread::sleep(Duration::from_secs(2));
    let got = Duration::from_nanos(total.load(Ordering::Relaxed));
    let _ = alice.set_state(gst::State::Null);
    let _ = bob.set_state(gst::State::Null);
    println!("alice heard {got:?} of her echo in the 2 s after connecting");
    let sdps = remote_sdps.lock().unwrap().clone();
    let answer = sdps.iter().find(|t| t.starts_with("remote answer")).expect("alice got an answer");
    let video = answer
        .split("\nm=")
        .find(|section| section.starts_with("video"))
        .unwrap_or_else(|| panic!("a video section in {answer}"));
    println!("the echo's answer (video):\nm={video}");
    assert!(
        !video.contains("a=sendonly") && !video.contains("a=sendrecv"),
        "the echo announces video it never sends:\nm={video}"
    );
    // The audio it sends has its SSRC named: a browser given no `a=ssrc` routes the audio by
    // its payload type alone, which Chrome does not do with the video section inactive (it
    // dropped every packet; tests/browser/lib/audio-only.js).
    let audio = answer
        .split("\nm=")
        .find(|section| section.starts_with("audio"))
        .unwrap_or_else(|| panic!("an audio section in {answer}"));
    assert!(audio.contains("\na=ssrc:"), "the echo's answer names no audio SSRC:\nm={audio}");
    assert!(
        got >= Duration::from_secs(1),
        "alice heard {got:?} of her echo in the 2 s after connecting"
    );
}

/// The caller: 48 kHz mono audio and video (as `call-test.toml`).
fn caller_of_bob(server: &TestServer) -> gst::Pipeline {
    launch(
        server,
        "alice",
        "remote-uid=bob dimension=240p",
        "videotestsrc is-live=true ! c.video_sink audiotestsrc is-live=true ! c.audio_sink \
         c.video_src ! fakesink c.audio_src ! fakesink name=heard",
    )
}

#[test]
fn an_answerer_capturing_at_8_khz_is_heard() {
    if !common::enter_netns("an_answerer_capturing_at_8_khz_is_heard") {
        return;
    }
    let server = TestServer::start();
    let bob = launch(
        &server,
        "bob",
        "",
        "audiotestsrc is-live=true ! audio/x-raw,rate=8000,channels=1 ! c.audio_sink \
         c.video_src ! fakesink c.audio_src ! fakesink",
    );
    let alice = caller_of_bob(&server);
    assert_heard(&bob, &alice, &alice);
}

#[test]
fn an_answerer_capturing_in_stereo_is_heard() {
    if !common::enter_netns("an_answerer_capturing_in_stereo_is_heard") {
        return;
    }
    let server = TestServer::start();
    let bob = launch(
        &server,
        "bob",
        "",
        "audiotestsrc is-live=true ! audio/x-raw,rate=48000,channels=2 ! c.audio_sink \
         c.video_src ! fakesink c.audio_src ! fakesink",
    );
    let alice = caller_of_bob(&server);
    assert_heard(&bob, &alice, &alice);
}

#[test]
fn a_callee_whose_video_starts_late_is_heard_at_once() {
    if !common::enter_netns("a_callee_whose_video_starts_late_is_heard_at_once") {
        return;
    }
    let server = TestServer::start();
    let bob = launch(
        &server,
        "bob",
        "dimension=240p",
        "videotestsrc is-live=true ! video/x-raw,width=320,height=240,framerate=15/1 \
         ! valve name=gate drop=true ! c.video_sink audiotestsrc is-live=true ! c.audio_sink \
         c.video_src ! fakesink c.audio_src ! fakesink",
    );
    bob.set_state(gst::State::Playing).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    // Its sinks are added as the pads come: none waits for a stream that is not there yet.
    let mut alice = Endpoint::new(
        &server,
        EndpointConfig::new("alice").calling("bob").prop("dimension", "240p"),
    );
    alice.play();
    alice.wait_for(
        "ACCEPTED",
        Duration::from_secs(10),
        |s| matches!(s, Seen::Response(r) if r == "ACCEPTED"),
    );
    let accepted = Instant::now();
    alice.wait_for("bob's audio", Duration::from_secs(3), |s| matches!(s, Seen::AudioBuffer));
    println!("bob heard {:?} after ACCEPTED", accepted.elapsed());
    std::thread::sleep(Duration::from_secs(5).saturating_sub(accepted.elapsed()));
    assert_eq!(alice.frames(), 0, "video before bob's source started");
    bob.by_name("gate").unwrap().set_property("drop", false);
    alice.wait_for("bob's video", Duration::from_secs(5), |s| {
        matches!(s, Seen::VideoFrame { width: 320, height: 240 })
    });
    println!("bob seen {:?} after ACCEPTED", accepted.elapsed());
    drop(alice);
    let _ = bob.set_state(gst::State::Null);
}

/// A caller whose sources are not live (`audiotestsrc`, `videotestsrc` without `is-live`, as
/// a file would be): they pushed as fast as the machine allowed, the sending chains passed a
/// few buffers stamped ever further ahead and then waited for their time in webrtcbin, and
/// the call sent no audio at all and ten video packets, and looked healthy. They are paced
/// by the clock now: the callee hears real time and gets the video's frame rate.
#[test]
fn a_caller_with_sources_that_are_not_live_is_heard_and_seen() {
    if !common::enter_netns("a_caller_with_sources_that_are_not_live_is_heard_and_seen") {
        return;
    }
    let server = TestServer::start();
    let bob = launch(
        &server,
        "bob",
        "",
        "c.video_src ! fakesink name=seen c.audio_src ! fakesink name=heard",
    );
    let alice = launch(
        &server,
        "alice",
        "remote-uid=bob dimension=240p max-fps=15",
        "audiotestsrc ! c.audio_sink videotestsrc ! video/x-raw,framerate=15/1 ! c.video_sink",
    );
    let frames = Arc::new(AtomicU64::new(0));
    let seen = bob.by_name("seen").unwrap().static_pad("sink").unwrap();
    let counted = frames.clone();
    seen.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
        counted.fetch_add(1, Ordering::Relaxed);
        gst::PadProbeReturn::Ok
    });
    // Audio heard over WINDOW (3 s) once it flows; the call lasts that long and more.
    assert_heard(&bob, &alice, &bob);
    let shown = frames.load(Ordering::Relaxed);
    println!("{shown} video frames in the call");
    assert!(shown >= 30, "{shown} video frames from a 15 fps source that is not live");
}

/// A caller whose audio had not started when the call was accepted (a microphone or a
/// network source slow to start: no caps had reached its payloader) names the SSRC of that
/// audio in its offer all the same. Its offer named none, and Chromium answering with no
/// video to receive (its video section `inactive` or `sendonly`) dropped every packet of
/// that audio: its user heard nothing (tests/browser/test/gstreamer.test.js, "… whose
/// audio starts late …"). The audio, once it starts, is heard.
#[test]
fn a_callers_offer_names_the_ssrc_of_audio_that_has_not_started() {
    if !common::enter_netns("a_callers_offer_names_the_ssrc_of_audio_that_has_not_started") {
        return;
    }
    common::init();
    let remote_sdps = common::capture_remote_sdps();
    let server = TestServer::start();
    let bob =
        launch(&server, "bob", "", "c.video_src ! fakesink c.audio_src ! fakesink name=heard");
    // The valve drops the caps with the buffers: nothing reaches the element until it opens.
    let alice = launch(
        &server,
        "alice",
        "remote-uid=bob",
        "audiotestsrc is-live=true ! valve name=gate drop=true ! c.audio_sink \
         c.video_src ! fakesink c.audio_src ! fakesink",
    );
    let total = heard(&bob, "heard");
    bob.set_state(gst::State::Playing).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    alice.set_state(gst::State::Playing).unwrap();
    let offer = || {
        let sdps = remote_sdps.lock().unwrap();
        sdps.iter().find(|t| t.starts_with("remote offer")).cloned()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while offer().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let offer = offer();
    alice.by_name("gate").unwrap().set_property("drop", false);
    let deadline = Instant::now() + Duration::from_secs(5);
    while total.load(Ordering::Relaxed) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let got = Duration::from_nanos(total.load(Ordering::Relaxed));
    let _ = alice.set_state(gst::State::Null);
    let _ = bob.set_state(gst::State::Null);
    let offer = offer.expect("bob got an offer");
    let audio = offer
        .split("\nm=")
        .find(|section| section.starts_with("audio"))
        .unwrap_or_else(|| panic!("an audio section in {offer}"));
    println!("alice's offer (audio):\nm={audio}");
    assert!(audio.contains("\na=ssrc:"), "the offer names no audio SSRC:\nm={audio}");
    assert!(got > Duration::ZERO, "bob heard nothing once alice's audio started");
}
