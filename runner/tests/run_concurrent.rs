//! Answering endpoints that serve several calls at once (`--concurrent-calls`), and several
//! runners serving one uid: real calls between `wilddog-runner` processes, each test in a
//! private network namespace with only loopback.

mod run_support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use run_support::{Runner, enter_netns, pipeline, start_bot, start_caller, temp_dir};
use serde_json::Value;

/// Exit codes of `run` (docs/pipeline-files.md).
const ENDED: i32 = 0;
const BUSY: i32 = 4;

/// Bytes of one frame that the colour callers write: 4x4 RGB (rows of 12 bytes, already
/// 4-byte aligned).
const FRAME_BYTES: usize = 4 * 4 * 3;

/// Writes into `dir` a caller file that sends a solid colour (videotestsrc `pattern`) at
/// 240p and writes every frame it gets back, scaled to 4x4 RGB, to `DIR/UID.rgb`.
fn colour_file(dir: &Path, pattern: &str) -> String {
    let path = dir.join(format!("caller-{pattern}.toml"));
    let text = format!(
        r#"# A test caller: solid {pattern} out, what comes back written as 4x4 RGB frames.
role = "call"
pipeline = """
wilddogcall name=call dimension=240p
  videotestsrc is-live=true pattern={pattern} ! call.video_sink
  audiotestsrc is-live=true volume=0.1 ! call.audio_sink
  call.video_src ! queue ! videoconvert ! videoscale ! video/x-raw,format=RGB,width=4,height=4 ! filesink name=remote_video buffer-mode=unbuffered location=${{record_dir}}/${{uid}}.rgb
  call.audio_src ! queue ! fakesink name=remote_audio sync=false
"""
"#
    );
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// Starts a colour caller `uid` (red, green, blue …) calling `remote` through `server`.
fn start_colour_caller(dir: &Path, server: &str, uid: &str, pattern: &str, remote: &str) -> Runner {
    let file = colour_file(dir, pattern);
    let dir_arg = dir.display().to_string();
    Runner::start(
        uid,
        &[
            "run",
            &file,
            "--server",
            server,
            "--uid",
            uid,
            "--remote-uid",
            remote,
            "--ice-local-addresses",
            "127.0.0.1",
            "--record-dir",
            &dir_arg,
        ],
    )
}

/// Frames a colour caller has written so far.
fn frames_back(dir: &Path, uid: &str) -> usize {
    std::fs::metadata(dir.join(format!("{uid}.rgb"))).map(|m| m.len() as usize).unwrap_or(0)
        / FRAME_BYTES
}

/// Waits until a colour caller has written `n` frames.
fn wait_frames(dir: &Path, uid: &str, n: usize) {
    let deadline = std::time::Instant::now() + run_support::WAIT;
    while frames_back(dir, uid) < n {
        assert!(
            std::time::Instant::now() < deadline,
            "{uid}: {} frames back within {:?}, not {n}",
            frames_back(dir, uid),
            run_support::WAIT
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Mean (R, G, B) of the last frame a colour caller got back.
fn last_colour(dir: &Path, uid: &str) -> (u32, u32, u32) {
    let bytes = std::fs::read(dir.join(format!("{uid}.rgb"))).unwrap_or_default();
    let frames = bytes.len() / FRAME_BYTES;
    assert!(frames > 0, "{uid}: no frame came back");
    let last = &bytes[(frames - 1) * FRAME_BYTES..frames * FRAME_BYTES];
    let mean = |channel: usize| {
        last.chunks(3).map(|px| u32::from(px[channel])).sum::<u32>() / (FRAME_BYTES as u32 / 3)
    };
    (mean(0), mean(1), mean(2))
}

/// The caller got its own colour back: that channel high, the others low.
fn assert_colour(dir: &Path, uid: &str, channel: usize) {
    let (r, g, b) = last_colour(dir, uid);
    let rgb = [r, g, b];
    for (i, v) in rgb.iter().enumerate() {
        if i == channel {
            assert!(*v > 150, "{uid} got ({r}, {g}, {b}) back, not its own colour");
        } else {
            assert!(*v < 100, "{uid} got ({r}, {g}, {b}) back, not its own colour");
        }
    }
}

/// The events named `name` of `runner` seen so far.
fn events<'a>(runner: &'a Runner, name: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    runner.seen.iter().filter(move |e| e["event"] == name)
}

/// Waits until `runner` printed `count` events named `name` in all.
fn wait_count(runner: &mut Runner, name: &str, count: usize) {
    while events(runner, name).count() < count {
        runner.wait_event(name);
    }
}

/// The conversation id of a caller's accepted call.
fn accepted_cid(caller: &mut Runner) -> String {
    let response = caller.wait_event("response");
    assert_eq!(response["status"], "ACCEPTED", "[{}] {response}", caller.label);
    caller.wait_event("first_frame");
    response["conversation_id"].as_str().expect("response.conversation_id").to_owned()
}

#[test]
fn echo_serves_three_calls_at_once_the_fourth_is_busy() {
    if !enter_netns("echo_serves_three_calls_at_once_the_fourth_is_busy") {
        return;
    }
    let dir = temp_dir("concurrent-echo");
    let (mut echo, server) =
        start_bot("echo", &pipeline("echo.toml"), &["--concurrent-calls", "3"]);
    // One `ready` per slot.
    wait_count(&mut echo, "ready", 3);
    let mut slots: Vec<u64> = events(&echo, "ready").filter_map(|e| e["slot"].as_u64()).collect();
    slots.sort();
    assert_eq!(slots, [0, 1, 2]);

    // Three callers at once, each its own colour.
    let mut red = start_colour_caller(&dir, &server, "red", "red", "echo");
    let mut green = start_colour_caller(&dir, &server, "green", "green", "echo");
    let mut blue = start_colour_caller(&dir, &server, "blue", "blue", "echo");
    let red_cid = accepted_cid(&mut red);
    let green_cid = accepted_cid(&mut green);
    let blue_cid = accepted_cid(&mut blue);
    wait_count(&mut echo, "called", 3);
    let mut served: Vec<(String, u64)> = events(&echo, "called")
        .map(|e| (e["conversation_id"].as_str().unwrap().to_owned(), e["slot"].as_u64().unwrap()))
        .collect();
    served.sort_by_key(|(_, slot)| *slot);
    assert_eq!(
        served.iter().map(|(_, slot)| *slot).collect::<Vec<_>>(),
        [0, 1, 2],
        "one call per slot: {served:?}"
    );
    for cid in [&red_cid, &green_cid, &blue_cid] {
        assert!(served.iter().any(|(c, _)| c == cid), "{cid} not served: {served:?}");
    }

    // The fourth: BUSY, from the server; the echo never hears of it.
    let mut fourth = start_caller("fourth", &server, "dave", "echo", &[]);
    assert_eq!(fourth.wait_exit(), BUSY, "stderr:\n{}", fourth.stderr());
    assert!(!events(&echo, "called").any(|e| e["remote_uid"] == "dave"));

    // Each caller's own media comes back (decoded, scaled, written).
    for uid in ["red", "green", "blue"] {
        wait_frames(&dir, uid, 5);
    }
    // SIGKILL of one caller: the two others go on.
    green.signal("KILL");
    let before = (frames_back(&dir, "red"), frames_back(&dir, "blue"));
    std::thread::sleep(Duration::from_secs(2));
    let after = (frames_back(&dir, "red"), frames_back(&dir, "blue"));
    assert!(
        after.0 >= before.0 + 5 && after.1 >= before.1 + 5,
        "red and blue still get frames after green was killed: {before:?} -> {after:?}"
    );
    // Each gets its own colour back, not another caller's.
    assert_colour(&dir, "red", 0);
    assert_colour(&dir, "green", 1);
    assert_colour(&dir, "blue", 2);

    // One hangs up: its slot takes the next call.
    let mark = echo.seen.len();
    red.signal("INT");
    assert_eq!(red.wait_exit(), ENDED);
    let closed = loop {
        let closed = echo.wait_event("closed");
        if closed["conversation_id"] == red_cid.as_str() {
            break closed;
        }
    };
    assert_eq!(closed["reason"], "remote-hangup", "{closed}");
    let ready = echo.wait_event_since("ready", mark);
    assert_eq!(ready["slot"], closed["slot"], "the freed slot is ready again: {ready}");
    let mut next = start_caller("next", &server, "erin", "echo", &[]);
    accepted_cid(&mut next);

    // Ctrl-C: every live call gets its bye, every caller ends as an accepted call that ended.
    echo.signal("INT");
    for caller in [&mut blue, &mut next] {
        let closed = caller.wait_event("closed");
        assert_eq!(closed["reason"], "remote-hangup", "[{}] {closed}", caller.label);
        assert_eq!(caller.wait_exit(), ENDED);
        assert!(closed["received"]["video"].as_u64().unwrap_or(0) > 0, "{closed}");
    }
    assert_eq!(echo.wait_exit(), ENDED, "stderr:\n{}", echo.stderr());
    // Every call the echo took ended with a `closed` naming it.
    for called in events(&echo, "called") {
        let cid = &called["conversation_id"];
        assert!(
            events(&echo, "closed").any(|c| c["conversation_id"] == *cid),
            "no closed for {cid}: {:?}",
            echo.names()
        );
    }
    assert_eq!(events(&echo, "called").count(), 4, "{:?}", echo.names());
    assert!(run_support::criticals(&echo.stderr()).is_empty(), "stderr:\n{}", echo.stderr());
    assert_colour(&dir, "blue", 2);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Writes into `dir` an answering file whose calls all get one red 240p picture and one tone
/// from `shared_pipeline` (made once), at most `calls` at once; with `frames`, the shared
/// video ends after that many frames (its audio goes on).
fn shared_red_file(dir: &Path, calls: u32, frames: Option<u32>) -> String {
    let ends = frames.map(|n| format!(" num-buffers={n}")).unwrap_or_default();
    shared_file(
        dir,
        calls,
        &format!(
            "videotestsrc is-live=true pattern=red{ends} ! video/x-raw,format=I420,width=320,height=240,framerate=15/1"
        ),
    )
}

/// A bot as [`shared_red_file`]'s whose shared video is `video` (a launch chain).
fn shared_file(dir: &Path, calls: u32, video: &str) -> String {
    let path = dir.join("shared-red.toml");
    // The shared audio goes on when the video ends: the end of one stream is the end.
    let shared = format!(
        "{video} ! appsink name=video\n  \
         audiotestsrc is-live=true volume=0.1 ! appsink name=audio"
    );
    let text = format!(
        r#"# A test bot: every call gets the one shared red picture.
uid = "cam"
role = "answer"
concurrent_calls = {calls}
shared_pipeline = """
{shared}
"""
pipeline = """
wilddogcall name=call dimension=240p max-fps=15
  appsrc name=video ! call.video_sink
  appsrc name=audio ! call.audio_sink
  call.video_src ! fakesink
  call.audio_src ! fakesink
"""
"#
    );
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// Waits for a caller's `stats` with decoded remote video and returns its (width, height, fps).
fn remote_video(caller: &mut Runner) -> (u64, u64, u64) {
    // The steady rate: the report after the first with frames (that one counts the first
    // half second or so of frames, a burst or a trickle; a CI run read 8 fps of 15 from it).
    let mut reports_with_frames = 0;
    loop {
        let stats = caller.wait_event("stats");
        let remote = &stats["remote"];
        if remote["fps"].as_u64().unwrap_or(0) > 0 {
            reports_with_frames += 1;
            if reports_with_frames == 2 {
                let dim = |k: &str| remote[k].as_u64().unwrap_or(0);
                return (dim("width"), dim("height"), dim("fps"));
            }
        }
    }
}

#[test]
fn shared_pipeline_sends_one_source_to_every_call() {
    if !enter_netns("shared_pipeline_sends_one_source_to_every_call") {
        return;
    }
    let dir = temp_dir("shared-source");
    let (mut cam, server) = start_bot("cam", &shared_red_file(&dir, 2, None), &[]);
    wait_count(&mut cam, "ready", 2);
    // Two callers at once, each sending its own colour: both get the shared red back.
    let mut green = start_colour_caller(&dir, &server, "green", "green", "cam");
    let mut blue = start_colour_caller(&dir, &server, "blue", "blue", "cam");
    accepted_cid(&mut green);
    accepted_cid(&mut blue);
    for caller in [&mut green, &mut blue] {
        let (w, h, fps) = remote_video(caller);
        assert_eq!((w, h), (320, 240), "[{}] decoded the shared picture's size", caller.label);
        assert!(fps >= 10, "[{}] {fps} fps of the shared 15", caller.label);
    }
    wait_frames(&dir, "green", 30);
    wait_frames(&dir, "blue", 30);
    assert_colour(&dir, "green", 0);
    assert_colour(&dir, "blue", 0);

    // One hangs up; the next call on its slot's new pipeline gets the same source.
    let mark = cam.seen.len();
    green.signal("INT");
    assert_eq!(green.wait_exit(), ENDED);
    cam.wait_event_since("ready", mark);
    let mut next = start_colour_caller(&dir, &server, "next", "green", "cam");
    accepted_cid(&mut next);
    wait_frames(&dir, "next", 15);
    assert_colour(&dir, "next", 0);
    // The call that stayed kept its picture meanwhile.
    let before = frames_back(&dir, "blue");
    std::thread::sleep(Duration::from_secs(1));
    assert!(frames_back(&dir, "blue") >= before + 10, "blue still gets frames");

    cam.signal("INT");
    for caller in [&mut blue, &mut next] {
        assert_eq!(caller.wait_event("closed")["reason"], "remote-hangup");
        assert_eq!(caller.wait_exit(), ENDED, "stderr:\n{}", caller.stderr());
    }
    assert_eq!(cam.wait_exit(), ENDED, "stderr:\n{}", cam.stderr());
    assert!(run_support::criticals(&cam.stderr()).is_empty(), "stderr:\n{}", cam.stderr());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A call-test caller of a bot whose only media is shared 8 kHz audio hears it: at least
/// 80 % of the time from its `stream_received` to its hang-up in decoded 20 ms buffers.
/// It heard nothing, with no error: the answer's audio section did not intersect the
/// offer's (`sprop-maxcapturerate` 8000 against 48000) and webrtcbin answered it `recvonly`.
#[test]
fn shared_8_khz_audio_is_heard() {
    if !enter_netns("shared_8_khz_audio_is_heard") {
        return;
    }
    let dir = temp_dir("shared-8k");
    let file = dir.join("shared-8k.toml");
    std::fs::write(
        &file,
        r#"uid = "cam"
role = "answer"
shared_pipeline = """
audiotestsrc is-live=true ! audio/x-raw,channels=1,rate=8000,format=S16LE ! appsink name=microphone
"""
pipeline = """
wilddogcall name=call
  appsrc name=microphone ! call.audio_sink
  call.video_src ! fakesink
  call.audio_src ! fakesink
"""
"#,
    )
    .unwrap();
    let (mut cam, server) = start_bot("cam", &file.display().to_string(), &[]);
    let mut caller = start_caller("v1", &server, "v1", "cam", &["--hangup-after", "5"]);
    let began = caller.wait_event("stream_received")["ts"].as_u64().unwrap();
    let closed = caller.wait_event("closed");
    assert_eq!(caller.wait_exit(), ENDED, "stderr:\n{}", caller.stderr());
    let heard_ms = closed["received"]["audio"].as_u64().unwrap_or(0) * 20;
    let span_ms = closed["ts"].as_u64().unwrap().saturating_sub(began);
    println!("{heard_ms} ms of audio heard in {span_ms} ms: {closed}");
    assert!(heard_ms * 10 >= span_ms * 8, "{heard_ms} ms heard in {span_ms} ms: {closed}");
    cam.signal("INT");
    assert_eq!(cam.wait_exit(), ENDED, "stderr:\n{}", cam.stderr());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A shared camera that starts late (its first frame 14 s after the shared pipeline) holds
/// back nothing else: the caller gets the shared audio at once, the video when it starts.
/// Before, the audio `appsink` held its first sample until the video one had its first (the
/// shared pipeline reached PLAYING only once every sink prerolled): the call connected at
/// once and sent nothing until the camera started.
///
/// The claims are about order, not speed: the audio comes with the connection, seconds before
/// the video. The camera's lateness counts from the shared pipeline's start, the endpoint's,
/// so a loaded machine that takes seconds to start the caller and make its DTLS key eats into
/// it (CI once saw over 3 s, a run of 8 tests at once on 2 cores 8.5 s from the endpoint's
/// `ready` to its `called`): 14 s of lateness leaves room for that.
#[test]
fn shared_video_that_starts_late_holds_back_no_audio() {
    if !enter_netns("shared_video_that_starts_late_holds_back_no_audio") {
        return;
    }
    let dir = temp_dir("shared-late-video");
    // The queue lets no frame through before it holds 14 s of them (events go on: the caps
    // reach the appsink at once).
    let video = "videotestsrc is-live=true pattern=red \
        ! video/x-raw,format=I420,width=320,height=240,framerate=15/1 \
        ! queue min-threshold-time=14000000000 max-size-time=0 max-size-buffers=0 max-size-bytes=0";
    let (mut cam, server) = start_bot("cam", &shared_file(&dir, 1, video), &[]);
    let mut caller = start_caller("v1", &server, "v1", "cam", &["--hangup-after", "17"]);
    let response = caller.wait_event("response");
    assert_eq!(response["status"], "ACCEPTED", "{response}");
    let accepted = response["ts"].as_u64().unwrap();
    // The first remote stream (the audio) comes with the connection: held back for the video,
    // it came with the video's first frame, 14 s after the endpoint started.
    let received = caller.wait_event("stream_received")["ts"].as_u64().unwrap();
    let first_frame = caller.wait_event("first_frame");
    println!("stream received {} ms after ACCEPTED; {first_frame}", received - accepted);
    assert!(received - accepted < 6000, "no remote stream for {} ms", received - accepted);
    // The video did start late, and came: decoded by the caller's element, and shown by
    // call-test.toml's sink, linked to `video_src` from the file's start: 4 s after the
    // connection with no video (`ANNOUNCED_STREAM_WAIT`) the pad appeared with a gap, and
    // the late stream went on behind it.
    let video_after_audio_ms = first_frame["ts"].as_u64().unwrap().saturating_sub(received);
    assert!(
        video_after_audio_ms >= 2000,
        "the first frame {video_after_audio_ms} ms after the audio stream: the audio waited for it"
    );
    assert_eq!(
        (first_frame["width"].as_u64(), first_frame["height"].as_u64()),
        (Some(320), Some(240))
    );
    let closed = caller.wait_event("closed");
    // 17 s of call, the video from about 13 s on (from 6 s on if the call came late): some
    // 60 frames or more.
    let shown = closed["received"]["video"].as_u64().unwrap_or(0);
    assert!(shown >= 20, "the caller's video sink got {shown} frames: {closed}");
    assert!(closed["received"]["audio"].as_u64().unwrap_or(0) >= 150, "{closed}");
    assert_eq!(caller.wait_exit(), ENDED, "stderr:\n{}", caller.stderr());
    cam.signal("INT");
    assert_eq!(cam.wait_exit(), ENDED, "stderr:\n{}", cam.stderr());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn shared_pipeline_that_ends_stops_the_endpoint_with_an_error() {
    if !enter_netns("shared_pipeline_that_ends_stops_the_endpoint_with_an_error") {
        return;
    }
    let dir = temp_dir("shared-ends");
    // 150 frames: 10 s of shared video, then its end.
    let (mut cam, server) = start_bot("cam", &shared_red_file(&dir, 1, Some(150)), &[]);
    let mut caller = start_colour_caller(&dir, &server, "green", "green", "cam");
    accepted_cid(&mut caller);
    // The call is hung up cleanly, and the endpoint says why and exits with an error.
    let closed = caller.wait_event("closed");
    assert_eq!(closed["reason"], "remote-hangup", "{closed}");
    assert_eq!(caller.wait_exit(), ENDED, "stderr:\n{}", caller.stderr());
    assert_eq!(cam.wait_exit(), 1, "stderr:\n{}", cam.stderr());
    let error = events(&cam, "error")
        .find(|e| e["source"] == "shared_pipeline")
        .unwrap_or_else(|| panic!("no shared_pipeline error: {:?}", cam.names()));
    let message = error["message"].as_str().unwrap_or_default();
    assert!(message.contains("EOS at appsink `video`"), "{error}");
    assert_colour(&dir, "green", 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn shared_encoded_media_a_call_cannot_take_stops_the_endpoint_saying_why() {
    if !enter_netns("shared_encoded_media_a_call_cannot_take_stops_the_endpoint_saying_why") {
        return;
    }
    let dir = temp_dir("shared-encoded");
    // VP8 into a call pipeline whose `appsrc` goes straight to the element's raw video pad.
    let video = "videotestsrc is-live=true pattern=red ! video/x-raw,width=320,height=240,framerate=15/1 ! vp8enc deadline=1";
    let file = shared_file(&dir, 1, video);
    let started = std::time::Instant::now();
    let mut cam = Runner::start(
        "cam",
        &["run", &file, "--listen", "127.0.0.1:0", "--ice-local-addresses", "127.0.0.1"],
    );
    // The endpoint stops as soon as the shared media meets a call's pipeline (the one made
    // for its first call), saying why: before, each call failed with GStreamer's "Internal
    // data stream error" and its caller waited for TIMEOUT.
    assert_eq!(cam.wait_exit(), 1, "stderr:\n{}", cam.stderr());
    // Seconds on an idle machine; 10 s once on a loaded one (8 tests on 2 cores). Before,
    // the endpoint never stopped.
    assert!(started.elapsed() < Duration::from_secs(20), "took {:?}", started.elapsed());
    let error = events(&cam, "error")
        .find(|e| e["source"] == "shared_pipeline")
        .unwrap_or_else(|| panic!("no shared_pipeline error: {:?}", cam.names()));
    let message = error["message"].as_str().unwrap_or_default();
    assert!(message.contains("appsrc name=video") && message.contains("video/x-vp8"), "{error}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn shared_source_that_is_not_live_is_paced_by_the_clock() {
    if !enter_netns("shared_source_that_is_not_live_is_paced_by_the_clock") {
        return;
    }
    let dir = temp_dir("shared-not-live");
    // A file's worth of media: 300 frames (20 s at 15 fps) and a tone, neither live. Unpaced
    // they were gone within half a second of the start, and the caller got TIMEOUT. 20 s:
    // the call must come while the media lasts, and on a loaded machine (8 tests on 2 cores)
    // the endpoint's start and the caller's took 9.5 s of a 10 s file.
    let path = dir.join("shared-file.toml");
    let text = r#"uid = "cam"
role = "answer"
shared_pipeline = """
videotestsrc pattern=red num-buffers=300 ! video/x-raw,format=I420,width=320,height=240,framerate=15/1 ! appsink name=video
audiotestsrc volume=0.1 ! appsink name=audio
"""
pipeline = """
wilddogcall name=call dimension=240p max-fps=15
  appsrc name=video ! call.video_sink
  appsrc name=audio ! call.audio_sink
  call.video_src ! fakesink
  call.audio_src ! fakesink
"""
"#;
    std::fs::write(&path, text).unwrap();
    let started = std::time::Instant::now();
    let (mut cam, server) = start_bot("cam", &path.display().to_string(), &[]);
    let mut caller = start_colour_caller(&dir, &server, "green", "green", "cam");
    accepted_cid(&mut caller);
    let (w, h, fps) = remote_video(&mut caller);
    assert_eq!((w, h), (320, 240));
    assert!(fps >= 10, "{fps} fps of the shared 15");
    wait_frames(&dir, "green", 30);
    assert_colour(&dir, "green", 0);
    // Its end comes at its own pace: about 20 s in.
    assert_eq!(cam.wait_exit(), 1, "stderr:\n{}", cam.stderr());
    let error = events(&cam, "error")
        .find(|e| e["source"] == "shared_pipeline")
        .unwrap_or_else(|| panic!("no shared_pipeline error: {:?}", cam.names()));
    assert!(error["message"].as_str().unwrap_or_default().contains("EOS at appsink"), "{error}");
    assert!(started.elapsed() >= Duration::from_secs(18), "ended after {:?}", started.elapsed());
    assert_eq!(caller.wait_event("closed")["reason"], "remote-hangup");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn two_runners_serving_one_uid_share_its_callers() {
    if !enter_netns("two_runners_serving_one_uid_share_its_callers") {
        return;
    }
    let (mut first, server) = start_bot("first", &pipeline("echo.toml"), &[]);
    let file = pipeline("echo.toml");
    let mut second = Runner::start(
        "second",
        &["run", &file, "--server", &server, "--ice-local-addresses", "127.0.0.1"],
    );
    second.wait_event("ready");
    let mut alice = start_caller("alice", &server, "alice", "echo", &[]);
    accepted_cid(&mut alice);
    let mut bob = start_caller("bob", &server, "bob", "echo", &[]);
    accepted_cid(&mut bob);
    // One call each.
    first.wait_event("called");
    second.wait_event("called");
    // Both busy: the third caller gets BUSY.
    let mut carol = start_caller("carol", &server, "carol", "echo", &[]);
    assert_eq!(carol.wait_exit(), BUSY, "stderr:\n{}", carol.stderr());
    for caller in [&mut alice, &mut bob] {
        assert!(caller.seen.iter().all(|e| e["event"] != "closed"), "{:?}", caller.names());
    }
    // The first runner holds the server: stop the second first.
    second.signal("INT");
    assert_eq!(second.wait_exit(), ENDED);
    first.signal("INT");
    assert_eq!(first.wait_exit(), ENDED);
    for caller in [&mut alice, &mut bob] {
        assert_eq!(caller.wait_exit(), ENDED);
    }
    let callers = |r: &Runner| {
        events(r, "called")
            .map(|e| e["remote_uid"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let (a, b) = (callers(&first), callers(&second));
    assert_eq!(a.len() + b.len(), 2, "first {a:?}, second {b:?}");
    assert_eq!((a.len(), b.len()), (1, 1), "one call each: first {a:?}, second {b:?}");
}

#[test]
fn recorder_with_two_slots_writes_two_playable_files_at_once_and_ctrl_c_finalizes_them() {
    if !enter_netns(
        "recorder_with_two_slots_writes_two_playable_files_at_once_and_ctrl_c_finalizes_them",
    ) {
        return;
    }
    let dir = temp_dir("concurrent-record");
    let dir_arg = dir.display().to_string();
    let (mut recorder, server) = start_bot(
        "record",
        &pipeline("record.toml"),
        &["--record-dir", &dir_arg, "--concurrent-calls", "2"],
    );
    wait_count(&mut recorder, "ready", 2);
    // Alice hangs up after 6 s; Bob's call is still live when the recorder gets Ctrl-C. (4 s
    // was sometimes too short for ICE and DTLS on a loaded machine: Alice's call then never
    // carried media, and she exited 1.)
    let mut alice = start_caller("alice", &server, "alice", "recorder", &["--hangup-after", "6"]);
    let mut bob = start_caller("bob", &server, "bob", "recorder", &[]);
    // (The recorder sends nothing back: no first frame to wait for.)
    assert_eq!(bob.wait_event("response")["status"], "ACCEPTED");
    assert_eq!(alice.wait_exit(), ENDED, "stderr:\n{}", alice.stderr());
    // Alice's file is finalized while Bob's call goes on.
    wait_count(&mut recorder, "recorded", 1);
    std::thread::sleep(Duration::from_secs(1));
    recorder.signal("INT");
    let closed = bob.wait_event("closed");
    assert_eq!(closed["reason"], "remote-hangup", "{closed}");
    assert_eq!(bob.wait_exit(), ENDED, "stderr:\n{}", bob.stderr());
    wait_count(&mut recorder, "recorded", 2);
    assert_eq!(recorder.wait_exit(), ENDED, "stderr:\n{}", recorder.stderr());
    // At once: both calls were taken before either ended.
    let names = recorder.names();
    let second_called = names.iter().enumerate().filter(|(_, n)| *n == "called").nth(1).unwrap().0;
    let first_closed = names.iter().position(|n| n == "closed").unwrap();
    assert!(second_called < first_closed, "two calls at once: {names:?}");

    let mut paths = Vec::new();
    for recorded in events(&recorder, "recorded") {
        let cid = recorded["conversation_id"].as_str().unwrap();
        let path = recorded["path"].as_str().unwrap().to_owned();
        assert!(path.ends_with(&format!("{cid}.mkv")), "named by its conversation: {path}");
        let out = Command::new("gst-discoverer-1.0").arg(&path).output().unwrap_or_else(|e| {
            panic!("gst-discoverer-1.0 (Debian gstreamer1.0-plugins-base-apps) is needed: {e}")
        });
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "gst-discoverer-1.0 {path} failed: {text}");
        assert!(text.contains("video #") && text.contains("VP8"), "a video stream: {text}");
        assert!(text.contains("audio #") && text.contains("Opus"), "an audio stream: {text}");
        paths.push(path);
    }
    paths.sort();
    paths.dedup();
    assert_eq!(paths.len(), 2, "two files: {paths:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn halves_pipelines_of_two_slots_are_two_calls() {
    if !enter_netns("halves_pipelines_of_two_slots_are_two_calls") {
        return;
    }
    // wilddogsink/wilddogsrc of one pipeline share one call by name, process-wide: each
    // slot's pipeline must still be a call of its own.
    let dir = temp_dir("concurrent-halves");
    let file = dir.join("halves.toml");
    std::fs::write(
        &file,
        r#"# A bot made of the two halves: a test pattern out, what comes in counted.
uid = "halves"
role = "answer"
pipeline = """
wilddogsrc name=remote
  remote.video_src ! queue ! fakesink name=remote_video sync=false
  remote.audio_src ! queue ! fakesink name=remote_audio sync=false
  videotestsrc is-live=true ! wilddogsink dimension=240p
"""
"#,
    )
    .unwrap();
    let file = file.display().to_string();
    let (mut bot, server) = start_bot("halves", &file, &["--concurrent-calls", "2"]);
    wait_count(&mut bot, "ready", 2);
    let mut alice = start_caller("alice", &server, "alice", "halves", &[]);
    let mut bob = start_caller("bob", &server, "bob", "halves", &[]);
    for caller in [&mut alice, &mut bob] {
        accepted_cid(caller);
    }
    wait_count(&mut bot, "first_frame", 2);
    let mut slots: Vec<u64> = events(&bot, "called").filter_map(|e| e["slot"].as_u64()).collect();
    slots.sort();
    assert_eq!(slots, [0, 1], "{:?}", bot.names());
    bot.signal("INT");
    for caller in [&mut alice, &mut bob] {
        let closed = caller.wait_event("closed");
        assert_eq!(closed["reason"], "remote-hangup", "{closed}");
        assert!(closed["received"]["video"].as_u64().unwrap_or(0) > 0, "{closed}");
        assert_eq!(caller.wait_exit(), ENDED);
    }
    assert_eq!(bot.wait_exit(), ENDED, "stderr:\n{}", bot.stderr());
    let _ = std::fs::remove_dir_all(&dir);
}
