//! `wilddog-runner run` on hosts where ICE has little to work with, each test in a private
//! network namespace whose only interface is loopback: without `--ice-local-addresses` the
//! element gathers on 127.0.0.1 by itself; a call whose gathering finds nothing ends at once
//! with 41004 and a message that names the cause, and is never reported as a success.

mod run_support;

use std::time::{Duration, Instant};

use run_support::{Runner, enter_netns, pipeline, start_caller_file};

const ENDED: i32 = 0;
const ERROR: i32 = 1;
const CANCELLED: i32 = 6;

/// An echo bot with its own in-process server, no `--ice-local-addresses`.
fn echo_bot() -> (Runner, String) {
    let mut bot = Runner::start(
        "echo",
        &["run", &pipeline("echo.toml"), "--listen", "127.0.0.1:0", "--uid", "echo"],
    );
    let ready = bot.wait_event("ready");
    let server = ready["server"].as_str().expect("ready.server").to_owned();
    (bot, server)
}

fn caller(server: &str, extra: &[&str]) -> Runner {
    let file = pipeline("call-test.toml");
    let mut args = vec!["run", &file, "--server", server, "--uid", "alice", "--remote-uid", "echo"];
    args.extend_from_slice(extra);
    Runner::start("caller", &args)
}

/// A recorder (`record.toml`) answering as `uid` with its own server, recording into a new
/// directory; returns it, its server's URL and the directory.
fn recorder(uid: &str, dir_label: &str) -> (Runner, String, std::path::PathBuf) {
    let dir = run_support::temp_dir(dir_label);
    let dir_arg = dir.display().to_string();
    let mut recorder = Runner::start(
        "recorder",
        &[
            "run",
            &pipeline("record.toml"),
            "--listen",
            "127.0.0.1:0",
            "--uid",
            uid,
            "--ice-local-addresses",
            "127.0.0.1",
            "--record-dir",
            &dir_arg,
        ],
    );
    let ready = recorder.wait_event("ready");
    let server = ready["server"].as_str().expect("ready.server").to_owned();
    (recorder, server, dir)
}

/// The port of a `ws://127.0.0.1:PORT/ws` URL.
fn port_of(server: &str) -> u16 {
    server
        .trim_start_matches("ws://127.0.0.1:")
        .split('/')
        .next()
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or_else(|| panic!("no port in {server}"))
}

#[test]
fn loopback_only_host_calls_without_ice_local_addresses() {
    if !enter_netns("loopback_only_host_calls_without_ice_local_addresses") {
        return;
    }
    let (mut echo, server) = echo_bot();
    let mut caller = caller(&server, &["--hangup-after", "4"]);
    assert_eq!(caller.wait_exit(), ENDED, "stderr:\n{}", caller.stderr());
    let closed = caller.seen.iter().find(|e| e["event"] == "closed").cloned().unwrap();
    assert_eq!(closed["media_connected"], true, "{closed}");
    assert!(closed["received"]["video"].as_u64().unwrap_or(0) >= 10, "video back: {closed}");
    // The echo's pipeline, which loops `video_src` back to `video_sink`, stopped after its
    // call without GStreamer's "loop detected in the graph" warnings.
    echo.wait_event_since("ready", 1);
    echo.signal("INT");
    echo.wait_exit();
    assert!(!echo.stderr().contains("loop detected"), "echo stderr:\n{}", echo.stderr());
}

/// ICE told to gather on an address no interface has (TEST-NET-1): no candidate at all.
#[test]
fn gathering_nothing_ends_the_call_at_once_with_41004() {
    if !enter_netns("gathering_nothing_ends_the_call_at_once_with_41004") {
        return;
    }
    let (_echo, server) = echo_bot();
    let began = Instant::now();
    let mut caller = caller(&server, &["--ice-local-addresses", "192.0.2.1"]);
    assert_eq!(caller.wait_exit(), ERROR, "stderr:\n{}", caller.stderr());
    let took = began.elapsed();
    let error = caller.seen.iter().find(|e| e["event"] == "error").cloned().unwrap_or_else(|| {
        panic!("no error event: {:?}", caller.names());
    });
    assert_eq!(error["code"], 41004, "{error}");
    let message = error["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("no candidate") && message.contains("ice-local-addresses"),
        "{message}"
    );
    assert!(took < Duration::from_secs(10), "not the 30 s connect timeout: {took:?}");
    assert!(
        !caller.seen.iter().any(|e| e["event"] == "closed" && e["media_connected"] == true),
        "{:?}",
        caller.seen
    );
}

/// Relay only, and the server hands out no TURN server: nothing to gather.
#[test]
fn relay_policy_without_turn_ends_the_call_with_41004() {
    if !enter_netns("relay_policy_without_turn_ends_the_call_with_41004") {
        return;
    }
    let (_echo, server) = echo_bot();
    let mut caller = caller(&server, &["--ice-transport-policy", "relay"]);
    assert_eq!(caller.wait_exit(), ERROR, "stderr:\n{}", caller.stderr());
    let error = caller.seen.iter().find(|e| e["event"] == "error").cloned().unwrap();
    assert_eq!(error["code"], 41004, "{error}");
    let message = error["message"].as_str().unwrap_or_default();
    assert!(message.contains("ice-transport-policy=relay"), "{message}");
    assert_closed_after_error(&caller.seen, false);
}

/// A failed call still ends with `closed`, reason `error`, after its `error` event.
fn assert_closed_after_error(seen: &[serde_json::Value], media_connected: bool) {
    let error = seen.iter().position(|e| e["event"] == "error");
    let closed = seen.iter().position(|e| e["event"] == "closed");
    let (Some(error), Some(closed)) = (error, closed) else {
        panic!("an error, then closed: {seen:?}");
    };
    assert!(error < closed, "error, then closed: {seen:?}");
    assert_eq!(seen[closed]["reason"], "error", "{}", seen[closed]);
    assert_eq!(seen[closed]["media_connected"], media_connected, "{}", seen[closed]);
}

/// Every packet but the signaling connection's dropped (nftables): the call is accepted and
/// its stats flow every 2 s, but no media ever arrives, so a hang-up at 4 s is not a success.
#[test]
fn a_call_whose_media_never_arrived_is_not_a_success() {
    if !enter_netns("a_call_whose_media_never_arrived_is_not_a_success") {
        return;
    }
    let (_echo, server) = echo_bot();
    block_all_but_tcp_port(port_of(&server));
    let mut caller = caller(&server, &["--hangup-after", "4"]);
    assert_eq!(caller.wait_exit(), ERROR, "stderr:\n{}", caller.stderr());
    assert!(caller.seen.iter().any(|e| e["event"] == "stats"), "no stats: {:?}", caller.names());
    assert!(
        !caller.seen.iter().any(|e| e["event"] == "closed" && e["media_connected"] == true),
        "{:?}",
        caller.seen
    );
    // Exit 1 says why.
    let stderr = caller.stderr();
    assert!(stderr.contains("41004: the call ended without ever carrying media"), "{stderr}");
}

/// Ctrl-C on a caller whose call was ACCEPTED but whose media has not connected (every
/// datagram dropped) cancels it: exit 6, as before an answer, with `closed` `local-hangup`
/// and `media_connected` false. It exited 1 with nothing on stderr to say why.
#[test]
fn ctrl_c_before_the_media_connects_cancels_the_call() {
    if !enter_netns("ctrl_c_before_the_media_connects_cancels_the_call") {
        return;
    }
    let (_echo, server) = echo_bot();
    block_all_but_tcp_port(port_of(&server));
    let mut caller = caller(&server, &[]);
    let response = caller.wait_event("response");
    assert_eq!(response["status"], "ACCEPTED", "{response}");
    std::thread::sleep(Duration::from_secs(1));
    caller.signal("INT");
    assert_eq!(caller.wait_exit(), CANCELLED, "stderr:\n{}", caller.stderr());
    let closed = caller.seen.iter().find(|e| e["event"] == "closed").expect("closed");
    assert_eq!(closed["reason"], "local-hangup", "{closed}");
    assert_eq!(closed["media_connected"], false, "{closed}");
}

/// A recorder whose call never carried media (every datagram dropped): no file is left, not
/// even an empty or hidden one, and no `recorded` event says 0 bytes. The call fails at the
/// caller, and the recorder goes on answering.
#[test]
fn a_recorded_call_that_never_carried_media_leaves_no_file() {
    if !enter_netns("a_recorded_call_that_never_carried_media_leaves_no_file") {
        return;
    }
    let (mut recorder, server, dir) = recorder("echo", "recorder-no-media");
    block_all_but_tcp_port(port_of(&server));
    let mut caller = caller(&server, &["--hangup-after", "4"]);
    assert_eq!(
        caller.wait_exit(),
        ERROR,
        "stderr:
{}",
        caller.stderr()
    );
    // The recorder's call is over, and it answers again.
    let over = recorder.seen.len();
    recorder.wait_event_since("ready", over.min(1));
    recorder.signal("INT");
    recorder.wait_exit();
    let left: Vec<String> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "files left by a call without media: {left:?}");
    assert!(
        !recorder.names().iter().any(|n| n == "recorded"),
        "a `recorded` event for a call without media: {:?}",
        recorder.seen
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Drops every UDP datagram and every TCP segment but those to or from `port`, in this
/// test's own network namespace.
fn block_all_but_tcp_port(port: u16) {
    use std::io::Write;
    let rules = format!(
        "table inet media_block {{\n  chain output {{\n    type filter hook output priority 0;\n    \
         tcp dport {port} accept\n    tcp sport {port} accept\n    meta l4proto {{ tcp, udp }} drop\n  }}\n}}\n"
    );
    let mut nft = std::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("nft (scripts/install-deps.sh installs nftables)");
    nft.stdin.take().expect("nft stdin").write_all(rules.as_bytes()).expect("nft rules");
    assert!(nft.wait().expect("nft").success(), "nft refused the rules");
}

/// A callee that sends no media (a recorder) dies with its in-process server (SIGKILL):
/// the caller hears nothing from the path but its RTCP, which stops, and the signaling
/// cannot come back. It ends with 41004 naming the silence, instead of streaming to nobody
/// until someone stops it (11 minutes in a newcomer's try, then exit 0).
#[test]
fn a_recorder_that_dies_ends_its_callers_call_with_41004() {
    if !enter_netns("a_recorder_that_dies_ends_its_callers_call_with_41004") {
        return;
    }
    let (recorder, server, dir) = recorder("recorder", "recorder-dies");
    let file = pipeline("call-test.toml");
    // A short call timeout: how long the caller waits for an ICE restart to bring the path
    // back once it counts it as lost.
    let mut caller =
        start_caller_file("caller", &file, &server, "alice", "recorder", &["--call-timeout", "5"]);
    assert_eq!(caller.wait_event("response")["status"], "ACCEPTED");
    // Connected, its RTCP flowing.
    loop {
        let stats = caller.wait_event("stats");
        if stats["local"]["packetsSent"].as_u64().unwrap_or(0) > 0 {
            break;
        }
    }
    std::thread::sleep(Duration::from_secs(2));
    recorder.signal("KILL");
    let killed = Instant::now();
    assert_eq!(caller.wait_exit(), ERROR, "stderr:\n{}", caller.stderr());
    let took = killed.elapsed();
    let error = caller.seen.iter().find(|e| e["event"] == "error").cloned().unwrap_or_else(|| {
        panic!("no error event: {:?}", caller.names());
    });
    assert_eq!(error["code"], 41004, "{error}");
    assert!(error["message"].as_str().unwrap_or_default().contains("no RTCP"), "{error}");
    // 10 s of silence, then the 5 s the restart may take.
    assert!(took < Duration::from_secs(30), "ended {took:?} after the recorder died");
    assert_closed_after_error(&caller.seen, true);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A caller whose src pads go straight to sinks (no `queue`) calls an answerer that sends
/// nothing: the pads it never gets a stream on are ended apart, so the call connects (it
/// failed ICE: the EOS of one waited for the other's sink, and the element's worker with it).
#[test]
fn a_caller_without_queues_connects_to_an_answerer_that_sends_nothing() {
    if !enter_netns("a_caller_without_queues_connects_to_an_answerer_that_sends_nothing") {
        return;
    }
    let dir = run_support::temp_dir("no-queues");
    let listener = dir.join("listener.toml");
    std::fs::write(
        &listener,
        "uid = \"listener\"\nrole = \"answer\"\npipeline = \"\"\"\nwilddogcall name=call\n  \
         call.video_src ! fakesink\n  call.audio_src ! fakesink\n\"\"\"\n",
    )
    .unwrap();
    let caller_file = dir.join("caller.toml");
    std::fs::write(
        &caller_file,
        "uid = \"alice\"\nrole = \"call\"\npipeline = \"\"\"\nwilddogcall name=call\n  \
         videotestsrc is-live=true ! call.video_sink\n  \
         audiotestsrc is-live=true ! call.audio_sink\n  \
         call.video_src ! fakesink sync=false\n  call.audio_src ! fakesink sync=false\n\"\"\"\n",
    )
    .unwrap();
    let mut bot = Runner::start(
        "listener",
        &[
            "run",
            &listener.display().to_string(),
            "--listen",
            "127.0.0.1:0",
            "--ice-local-addresses",
            "127.0.0.1",
        ],
    );
    let ready = bot.wait_event("ready");
    let server = ready["server"].as_str().expect("ready.server").to_owned();
    let mut caller = Runner::start(
        "caller",
        &[
            "run",
            &caller_file.display().to_string(),
            "--server",
            &server,
            "--remote-uid",
            "listener",
            "--ice-local-addresses",
            "127.0.0.1",
            "--hangup-after",
            "5",
        ],
    );
    assert_eq!(caller.wait_exit(), ENDED, "stderr:\n{}", caller.stderr());
    let closed = caller.seen.iter().find(|e| e["event"] == "closed").cloned().unwrap();
    assert_eq!(closed["media_connected"], true, "{closed}");
    let got = bot.wait_event("closed");
    assert!(got["received"]["video"].as_u64().unwrap_or(0) >= 30, "{got}");
    assert!(got["received"]["audio"].as_u64().unwrap_or(0) >= 100, "{got}");
    let _ = std::fs::remove_dir_all(&dir);
}
