//! Calls with `video-codec=h264` and `video-codec=vp9`: a caller with the codec set calls a
//! callee with default settings (`vp8`); the callee follows the offer's codec, both sides
//! decode video of the right size, and the SDP of both directions names the codec as the
//! only video payload (read from the receiving element's debug log of the remote SDP: each
//! test runs in its own process inside its network namespace, so replacing the log function
//! touches no other test). A second caller with the default codec then gets VP8 back: the
//! callee returns to the codec it is set to.

mod common;

use std::time::Duration;

use common::{Endpoint, EndpointConfig, Seen, TestServer};

const T: Duration = Duration::from_secs(15);

/// The encoding names of the payload types of the video m-line of an SDP text, in the
/// m-line's order, without the retransmission payload types (`rtx`, which carry no codec
/// of their own).
fn video_encodings(sdp: &str) -> Vec<String> {
    let start = sdp.find("m=video").unwrap_or_else(|| panic!("no video section: {sdp}"));
    let section = &sdp[start..];
    let section = match section[1..].find("\nm=") {
        Some(end) => &section[..end + 1],
        None => section,
    };
    let mline = section.lines().next().unwrap_or("");
    mline
        .split_whitespace()
        .skip(3)
        .map(|pt| {
            section
                .lines()
                .find_map(|l| l.trim_end().strip_prefix(&format!("a=rtpmap:{pt} ")))
                .map(|v| v.split('/').next().unwrap_or("").to_ascii_uppercase())
                .unwrap_or_else(|| format!("<pt {pt} without rtpmap>"))
        })
        .filter(|name| name != "RTX")
        .collect()
}

/// Alice calls Bob with `video-codec=<codec>`, Bob answers with default settings; both
/// decode 320x240 video and both directions negotiated `encoding` alone.
fn call_with_codec(codec: &str, encoding: &str) {
    common::init();
    let remote_sdps = common::capture_remote_sdps();
    let server = TestServer::start();
    let mut bob = Endpoint::new(&server, EndpointConfig::new("bob").prop("dimension", "240p"));
    let mut alice = Endpoint::new(
        &server,
        EndpointConfig::new("alice")
            .calling("bob")
            .prop("dimension", "240p")
            .prop("video-codec", codec),
    );
    bob.play();
    bob.wait_for("connected", T, |s| *s == Seen::Signaling(true));
    alice.play();
    let is_240p = |s: &Seen| matches!(s, Seen::VideoFrame { width: 320, height: 240 });
    alice.wait_for("320x240 frames from bob", T, is_240p);
    bob.wait_for("320x240 frames from alice", T, is_240p);
    // Frames keep coming: not one key frame and then nothing.
    alice.drain();
    bob.drain();
    let a = alice.count_for(Duration::from_secs(1), is_240p);
    let b = bob.count_for(Duration::from_secs(1), is_240p);
    println!("{codec}: 320x240 frames decoded in 1 s: alice {a}, bob {b}");
    assert!(a >= 5 && b >= 5, "{codec}: video stalled: alice {a}, bob {b} frames in 1 s");
    assert!(!alice.saw(|s| matches!(s, Seen::ElementError { .. })), "{:?}", alice.log);
    assert!(!bob.saw(|s| matches!(s, Seen::ElementError { .. })), "{:?}", bob.log);

    let sdps = remote_sdps.lock().unwrap().clone();
    let offer = sdps.iter().find(|t| t.starts_with("remote offer")).expect("bob got an offer");
    let answer = sdps.iter().find(|t| t.starts_with("remote answer")).expect("alice got an answer");
    let (offered, answered) = (video_encodings(offer), video_encodings(answer));
    println!("{codec}: offered video {offered:?}, answered video {answered:?}");
    assert_eq!(offered, [encoding], "{offer}");
    assert_eq!(answered, [encoding], "{answer}");
    if encoding == "H264" {
        // What browsers need to accept it: constrained baseline, non-interleaved packets.
        for sdp in [offer, answer] {
            assert!(sdp.contains("packetization-mode=1"), "{sdp}");
            assert!(sdp.contains("profile-level-id=42e01f"), "{sdp}");
        }
    }

    // The next caller offers vp8, the codec Bob is set to: he goes back to it.
    drop(alice);
    bob.wait_for("closed", T, |s| matches!(s, Seen::Closed(_)));
    let mut carol = Endpoint::new(
        &server,
        EndpointConfig::new("carol").calling("bob").prop("dimension", "240p"),
    );
    carol.play();
    // Once in several full suites (never alone, 45 runs), Bob's switch back to VP8 left him
    // sending carol no video at all ("rtpvp8pay2 did not negotiate the offer's payload type
    // 96"): what Bob saw then (his errors, his stats) goes with the failure.
    let from_bob = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        carol.wait_for("320x240 frames from bob", T, is_240p);
    }));
    if let Err(failure) = from_bob {
        bob.drain();
        let seen: Vec<&Seen> = bob
            .log
            .iter()
            .filter(|s| !matches!(s, Seen::VideoFrame { .. } | Seen::AudioBuffer))
            .collect();
        eprintln!("bob, who sent carol no video, saw: {seen:?}");
        std::panic::resume_unwind(failure);
    }
    bob.wait_for("320x240 frames from carol", T, is_240p);
    let sdps = remote_sdps.lock().unwrap().clone();
    let answer =
        sdps.iter().rfind(|t| t.starts_with("remote answer")).expect("carol got an answer");
    assert_eq!(video_encodings(answer), ["VP8"], "{answer}");
}

#[test]
fn h264_call_both_sides_decode() {
    if !common::enter_netns("h264_call_both_sides_decode") {
        return;
    }
    call_with_codec("h264", "H264");
}

#[test]
fn vp9_call_both_sides_decode() {
    if !common::enter_netns("vp9_call_both_sides_decode") {
        return;
    }
    call_with_codec("vp9", "VP9");
}
