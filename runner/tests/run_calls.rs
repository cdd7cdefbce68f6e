//! Real calls between `wilddog-runner` processes, each test in a private network namespace
//! with only loopback, ICE restricted to 127.0.0.1. The first process (a bot) starts the
//! signaling server in-process on a free port; the callers use it.

mod run_support;

use std::process::Command;
use std::time::{Duration, Instant};

use run_support::{
    Runner, enter_netns, pipeline, start_bot, start_caller, start_caller_file, temp_dir,
};
use serde_json::Value;

/// Exit codes of `run` (docs/pipeline-files.md).
const ENDED: i32 = 0;
const ERROR: i32 = 1;
const REJECTED: i32 = 3;
const BUSY: i32 = 4;
const TIMEOUT: i32 = 5;

fn received(closed: &Value, kind: &str) -> u64 {
    closed["received"][kind].as_u64().unwrap_or(0)
}

/// The positions of `names` in `seen`, which must be increasing: the events came in order.
fn assert_in_order(runner: &Runner, names: &[&str]) {
    let seen = runner.names();
    let mut from = 0;
    for name in names {
        match seen[from..].iter().position(|n| n == name) {
            Some(i) => from += i + 1,
            None => panic!(
                "[{}] `{name}` missing or out of order in {seen:?} (expected order {names:?})",
                runner.label
            ),
        }
    }
}

#[test]
fn call_test_gets_its_own_media_back_from_echo() {
    if !enter_netns("call_test_gets_its_own_media_back_from_echo") {
        return;
    }
    let (mut echo, server) = start_bot("echo", &pipeline("echo.toml"), &[]);
    // Long enough for a stats report after the first frame (one every 2 s from ACCEPTED)
    // when the whole suite loads the machine and the media takes 2.7 s to flow.
    let mut caller = start_caller("caller", &server, "alice", "echo", &["--hangup-after", "6"]);
    assert_eq!(caller.wait_exit(), ENDED, "caller exit code; stderr:\n{}", caller.stderr());
    assert_in_order(
        &caller,
        &["ready", "response", "stream_received", "first_frame", "stats", "closed"],
    );
    assert_eq!(
        caller.names().last().map(String::as_str),
        Some("closed"),
        "closed is the last event"
    );
    let event =
        |r: &Runner, name: &str| r.seen.iter().find(|e| e["event"] == name).cloned().unwrap();
    assert_eq!(event(&caller, "response")["status"], "ACCEPTED");
    let first = event(&caller, "first_frame");
    assert_eq!(
        (first["width"].as_u64(), first["height"].as_u64()),
        (Some(640), Some(480)),
        "{first}"
    );
    let closed = event(&caller, "closed");
    assert_eq!(closed["reason"], "local-hangup");
    // Our own test pattern and tone, back through the echo bot, decoded here.
    assert!(received(&closed, "video") >= 10, "video frames back: {closed}");
    assert!(received(&closed, "audio") >= 50, "audio buffers back: {closed}");
    let cid = closed["conversation_id"].as_str().unwrap().to_owned();
    for e in &caller.seen {
        assert!(e["ts"].as_u64().unwrap() > 1_600_000_000_000, "ts in ms since the epoch: {e}");
        assert_eq!(e["uid"], "alice");
    }

    // The bot: called by alice, the same conversation, closed by the remote side, then
    // ready for the next call.
    let called = echo.wait_event("called");
    assert_eq!(called["remote_uid"], "alice");
    assert_eq!(called["conversation_id"], cid.as_str());
    let bot_closed = echo.wait_event("closed");
    assert_eq!(bot_closed["reason"], "remote-hangup", "{bot_closed}");
    // The echo has no sink of its own: what it received is what left its `video_src` and
    // `audio_src` (and went back to alice).
    assert!(received(&bot_closed, "video") > 0, "video frames the echo got: {bot_closed}");
    assert!(received(&bot_closed, "audio") > 0, "audio buffers the echo got: {bot_closed}");
    echo.wait_event("ready");
    echo.signal("INT");
    assert_eq!(echo.wait_exit(), ENDED);

    // A call's teardown leaves nothing for GStreamer to complain about (elements disposed
    // while still PAUSED, leaked references).
    for r in [&caller, &echo] {
        assert!(
            run_support::criticals(&r.stderr()).is_empty(),
            "[{}] stderr:\n{}",
            r.label,
            r.stderr()
        );
    }
}

#[test]
fn record_writes_a_playable_file_per_call() {
    if !enter_netns("record_writes_a_playable_file_per_call") {
        return;
    }
    let dir = temp_dir("record");
    let dir_arg = dir.display().to_string();
    let (mut recorder, server) =
        start_bot("record", &pipeline("record.toml"), &["--record-dir", &dir_arg]);
    let started = Instant::now();
    let mut caller = start_caller("caller", &server, "alice", "recorder", &["--hangup-after", "4"]);
    assert_eq!(caller.wait_exit(), ENDED, "caller; stderr:\n{}", caller.stderr());
    let call_secs = started.elapsed().as_secs_f64();
    let recorded = recorder.wait_event("recorded");
    let path = recorded["path"].as_str().unwrap().to_owned();
    let cid =
        recorder.seen.iter().find(|e| e["event"] == "called").unwrap()["conversation_id"].clone();
    assert_eq!(recorded["conversation_id"], cid);
    // Its only sink writes the file: what it received is what left its `video_src` and
    // `audio_src` (into the encoders and the muxer).
    let closed = recorder.seen.iter().find(|e| e["event"] == "closed").cloned().unwrap();
    assert!(received(&closed, "video") > 0, "video frames the recorder got: {closed}");
    assert!(received(&closed, "audio") > 0, "audio buffers the recorder got: {closed}");
    assert!(
        path.ends_with(&format!("{}.mkv", cid.as_str().unwrap())),
        "named by conversation id: {path}"
    );

    let out = Command::new("gst-discoverer-1.0").arg(&path).output().unwrap_or_else(|e| {
        panic!("gst-discoverer-1.0 (Debian gstreamer1.0-plugins-base-apps) is needed: {e}")
    });
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    assert!(out.status.success(), "gst-discoverer-1.0 failed: {text}");
    assert!(text.contains("video #") && text.contains("VP8"), "a video stream: {text}");
    assert!(text.contains("audio #") && text.contains("Opus"), "an audio stream: {text}");
    let duration = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Duration: "))
        .unwrap_or_else(|| panic!("no duration: {text}"));
    let secs: f64 = {
        let parts: Vec<f64> = duration.split(':').map(|p| p.parse().unwrap()).collect();
        parts[0] * 3600.0 + parts[1] * 60.0 + parts[2]
    };
    // The file holds the media of the whole call: from its first stream (`stream_received`)
    // to the hang-up, give or take the last frames on their way. Not judged against the 4 s
    // of the call: on a loaded machine the media came up to 2 s after `called`, and the
    // recorder cannot record what has not come.
    let at = |event: &str| {
        let e = recorder.seen.iter().find(|e| e["event"] == event);
        e.and_then(|e| e["ts"].as_f64()).unwrap_or_else(|| panic!("no {event} event"))
    };
    let media_secs = (at("closed") - at("stream_received")) / 1000.0;
    assert!(
        (media_secs - 0.7..=call_secs + 0.5).contains(&secs) && secs >= 1.0,
        "recording of {secs} s for {media_secs:.1} s of media in a 4 s call ({call_secs:.1} s in all)"
    );

    // Nothing but the finished recording is left in the directory. (The next call's
    // pipeline is made while this one drains: its `ready` may come before `recorded`.)
    let called_at = recorder.seen.iter().position(|e| e["event"] == "called").unwrap();
    recorder.wait_event_since("ready", called_at);
    recorder.signal("TERM");
    assert_eq!(recorder.wait_exit(), ENDED);
    let files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files, [format!("{}.mkv", cid.as_str().unwrap())]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A caller that announces video and never sends any (its camera held by a closed valve):
/// the recorder's `video_src` got a gap 4 s into the call (ANNOUNCED_STREAM_WAIT), which its
/// muxer took for nothing, so it wrote nothing of the audio either and the call left no
/// file. A stream late into a muxer ends instead: the file has the call's audio.
#[test]
fn a_recording_of_a_caller_whose_video_never_comes_has_its_audio() {
    if !enter_netns("a_recording_of_a_caller_whose_video_never_comes_has_its_audio") {
        return;
    }
    let dir = temp_dir("record-no-video");
    let dir_arg = dir.display().to_string();
    let (mut recorder, server) =
        start_bot("record", &pipeline("record.toml"), &["--record-dir", &dir_arg]);
    let caller_file = dir.join("no-video.toml");
    std::fs::write(
        &caller_file,
        "role = \"call\"\npipeline = \"\"\"\nwilddogcall name=call\n  \
         videotestsrc is-live=true ! valve drop=true ! call.video_sink\n  \
         audiotestsrc is-live=true ! call.audio_sink\n  call.video_src ! fakesink\n  \
         call.audio_src ! fakesink\n\"\"\"\n",
    )
    .unwrap();
    let caller_path = caller_file.display().to_string();
    let mut caller = start_caller_file(
        "caller",
        &caller_path,
        &server,
        "alice",
        "recorder",
        &["--hangup-after", "7"],
    );
    assert_eq!(caller.wait_exit(), ENDED, "caller; stderr:\n{}", caller.stderr());
    let recorded = recorder.wait_event("recorded");
    let path = recorded["path"].as_str().unwrap_or_default().to_owned();
    let out = Command::new("gst-discoverer-1.0").arg(&path).output().expect("gst-discoverer-1.0");
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    assert!(text.contains("audio #") && text.contains("Opus"), "the call's audio: {text}");
    assert!(!text.contains("video #"), "no video was sent: {text}");
    let duration = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Duration: "))
        .unwrap_or_else(|| panic!("no duration: {text}"));
    let parts: Vec<f64> = duration.split(':').filter_map(|p| p.parse().ok()).collect();
    let secs = parts.iter().fold(0.0, |acc, p| acc * 60.0 + p);
    // The audio of the whole call from its first stream (`stream_received`) to the hang-up,
    // give or take the last packets on their way (as record_writes_a_playable_file_per_call
    // judges): under the suite's load the media came 2.1 s after ACCEPTED, and 4.9 s of a
    // 7 s call was then all there was to record.
    let at = |event: &str| {
        let e = recorder.seen.iter().find(|e| e["event"] == event);
        e.and_then(|e| e["ts"].as_f64()).unwrap_or_else(|| panic!("no {event} event"))
    };
    let media_secs = (at("closed") - at("stream_received")) / 1000.0;
    assert!(
        secs >= media_secs - 0.7 && secs >= 3.0,
        "{secs} s of audio recorded for {media_secs:.1} s of media in a 7 s call"
    );
    recorder.signal("TERM");
    assert_eq!(recorder.wait_exit(), ENDED);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ctrl_c_at_the_recorder_hangs_up_and_finalizes_the_file() {
    if !enter_netns("ctrl_c_at_the_recorder_hangs_up_and_finalizes_the_file") {
        return;
    }
    let dir = temp_dir("record-int");
    let dir_arg = dir.display().to_string();
    let (mut recorder, server) =
        start_bot("record", &pipeline("record.toml"), &["--record-dir", &dir_arg]);
    let mut caller = start_caller("caller", &server, "alice", "recorder", &[]);
    // The recorder sends nothing back: it is the one that sees frames.
    recorder.wait_event("first_frame");
    std::thread::sleep(Duration::from_secs(2));
    // Twice at once, as `timeout` or a shell signals a process and its group: one request.
    recorder.signal("INT");
    recorder.signal("INT");
    // The caller hears the hang-up (bye) and ends as an accepted call that ended.
    let closed = caller.wait_event("closed");
    assert_eq!(closed["reason"], "remote-hangup", "{closed}");
    assert_eq!(caller.wait_exit(), ENDED);
    let recorded = recorder.wait_event("recorded");
    assert_eq!(recorder.wait_exit(), ENDED);
    let out = Command::new("gst-discoverer-1.0")
        .arg(recorded["path"].as_str().unwrap())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("video #") && text.contains("audio #"),
        "finalized, both streams: {text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn reject_policy_gives_rejected_and_its_exit_code() {
    if !enter_netns("reject_policy_gives_rejected_and_its_exit_code") {
        return;
    }
    let (mut bot, server) = start_bot("refuser", &pipeline("echo.toml"), &["--answer", "reject"]);
    let mut caller = start_caller("caller", &server, "alice", "echo", &[]);
    assert_eq!(caller.wait_exit(), REJECTED, "stderr:\n{}", caller.stderr());
    assert_eq!(caller.names(), ["ready", "response"]);
    assert_eq!(caller.seen[1]["status"], "REJECTED");
    // The bot saw the call, refused it, and still waits for calls on the same connection.
    assert_eq!(bot.wait_event("called")["remote_uid"], "alice");
    let mut again = start_caller("again", &server, "bob", "echo", &[]);
    assert_eq!(again.wait_exit(), REJECTED);
    bot.signal("INT");
    assert_eq!(bot.wait_exit(), ENDED);
}

#[test]
fn second_caller_while_busy_gets_busy() {
    if !enter_netns("second_caller_while_busy_gets_busy") {
        return;
    }
    let (mut echo, server) = start_bot("echo", &pipeline("echo.toml"), &[]);
    let mut first = start_caller("first", &server, "alice", "echo", &["--hangup-after", "6"]);
    assert_eq!(first.wait_event("response")["status"], "ACCEPTED");
    let mut second = start_caller("second", &server, "bob", "echo", &[]);
    assert_eq!(second.wait_exit(), BUSY, "stderr:\n{}", second.stderr());
    assert_eq!(second.seen.iter().find(|e| e["event"] == "response").unwrap()["status"], "BUSY");
    // The first call is not disturbed.
    assert_eq!(first.wait_exit(), ENDED);
    assert!(received(first.seen.last().unwrap(), "video") > 0);
    echo.signal("INT");
    assert_eq!(echo.wait_exit(), ENDED);
    // The busy call was never raised at the bot.
    assert_eq!(
        echo.seen.iter().filter(|e| e["event"] == "called").count(),
        1,
        "{:?}",
        echo.names()
    );
}

#[test]
fn killed_caller_gives_closed_and_the_bot_takes_the_next_call() {
    if !enter_netns("killed_caller_gives_closed_and_the_bot_takes_the_next_call") {
        return;
    }
    let (mut echo, server) = start_bot("echo", &pipeline("echo.toml"), &[]);
    let mut doomed = start_caller("doomed", &server, "alice", "echo", &[]);
    doomed.wait_event("first_frame");
    echo.wait_event("first_frame");
    doomed.signal("KILL");
    let closed = echo.wait_event("closed");
    println!("bot closed after SIGKILL: {closed}");
    echo.wait_event("ready");
    // 8 s: the call's media must come, not come fast (CI saw a loaded machine take over 3 s
    // from ACCEPTED to the first frame; an idle one takes under 1 s).
    let mut next = start_caller("next", &server, "bob", "echo", &["--hangup-after", "8"]);
    assert_eq!(next.wait_exit(), ENDED, "stderr:\n{}", next.stderr());
    let closed = next.seen.last().unwrap().clone();
    assert!(received(&closed, "video") > 0, "{closed}");
    assert_eq!(echo.wait_event("called")["remote_uid"], "bob");
    echo.signal("INT");
    assert_eq!(echo.wait_exit(), ENDED);
}

/// A signaling blip (the caller's socket reset) does not end the call: `signaling` events say
/// so, the media goes on, and the call ends when the caller hangs up.
#[test]
fn signaling_blip_keeps_the_call() {
    if !enter_netns("signaling_blip_keeps_the_call") {
        return;
    }
    let (mut echo, server) = start_bot("echo", &pipeline("echo.toml"), &[]);
    let upstream = server.trim_start_matches("ws://").trim_end_matches("/ws").parse().unwrap();
    let proxy = run_support::tcp_proxy::TcpProxy::start(upstream);
    let mut caller =
        start_caller("caller", &proxy.ws_url(), "alice", "echo", &["--hangup-after", "7"]);
    caller.wait_event("first_frame");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(proxy.cut(), 1, "the caller's socket");
    let lost = caller.wait_event("signaling");
    assert_eq!(lost["connected"], false, "{lost}");
    assert!(lost["conversation_id"].is_string(), "{lost}");
    let back = caller.wait_event("signaling");
    assert_eq!(back["connected"], true, "{back}");
    assert_eq!(caller.wait_exit(), ENDED, "stderr:\n{}", caller.stderr());
    assert!(!caller.names().contains(&"error".to_owned()), "{:?}", caller.names());
    let closed = caller.seen.iter().find(|e| e["event"] == "closed").cloned().unwrap();
    assert_eq!(closed["reason"], "local-hangup", "{closed}");
    // Frames all along the 7 s: the blip did not stop the media.
    assert!(received(&closed, "video") >= 30, "video frames back: {closed}");
    let bot_closed = echo.wait_event("closed");
    assert_eq!(bot_closed["reason"], "remote-hangup", "{bot_closed}");
    // The echo has no sink of its own: what it received is what left its `video_src` and
    // `audio_src` (and went back to alice).
    assert!(received(&bot_closed, "video") > 0, "video frames the echo got: {bot_closed}");
    assert!(received(&bot_closed, "audio") > 0, "audio buffers the echo got: {bot_closed}");
    echo.signal("INT");
    assert_eq!(echo.wait_exit(), ENDED);
}

#[test]
fn calling_nobody_gives_timeout_and_its_exit_code() {
    if !enter_netns("calling_nobody_gives_timeout_and_its_exit_code") {
        return;
    }
    let (mut echo, server) = start_bot("echo", &pipeline("echo.toml"), &[]);
    let mut caller = start_caller("caller", &server, "alice", "nobody", &["--call-timeout", "3"]);
    assert_eq!(caller.wait_exit(), TIMEOUT, "stderr:\n{}", caller.stderr());
    assert_eq!(caller.names(), ["ready", "response"]);
    assert_eq!(caller.seen[1]["status"], "TIMEOUT");
    echo.signal("INT");
    assert_eq!(echo.wait_exit(), ENDED);
}

/// A call whose user data puts its `call` frame over the server's frame limit (256 KiB) is
/// refused by the server: the caller ends at once with `closed` (reason `refused`, the
/// server's reason) and exit code 1, where it waited 30 s for TIMEOUT; the bot is not rung.
#[test]
fn a_call_over_the_servers_frame_limit_fails_at_once() {
    if !enter_netns("a_call_over_the_servers_frame_limit_fails_at_once") {
        return;
    }
    let (mut echo, server) = start_bot("echo", &pipeline("echo.toml"), &[]);
    let dir = temp_dir("big-call");
    let file = dir.join("big.toml");
    let text = std::fs::read_to_string(pipeline("call-test.toml")).expect("call-test.toml");
    let big = "x".repeat(300_000);
    let text =
        text.replace("user_data = \"wilddog-runner call-test\"", &format!("user_data = \"{big}\""));
    assert!(text.contains(&big), "call-test.toml sets user_data");
    std::fs::write(&file, text).expect("write the pipeline file");
    let started = Instant::now();
    let mut caller =
        start_caller_file("caller", &file.display().to_string(), &server, "alice", "echo", &[]);
    assert_eq!(caller.wait_exit(), ERROR, "stderr:\n{}", caller.stderr());
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    let closed = caller.seen.iter().find(|e| e["event"] == "closed").expect("closed");
    assert_eq!(closed["reason"], "refused", "{closed}");
    let message = closed["message"].as_str().unwrap_or_default();
    assert!(message.contains("over the limit"), "{closed}");
    assert!(!caller.names().contains(&"response".to_owned()), "{:?}", caller.names());
    echo.signal("INT");
    assert_eq!(echo.wait_exit(), ENDED);
    assert!(!echo.names().contains(&"called".to_owned()), "{:?}", echo.names());
    let _ = std::fs::remove_dir_all(&dir);
}
