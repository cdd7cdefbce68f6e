//! What the offer and the answer say to the peer (read from the receiving element's debug
//! log of the remote SDP, in this test process of its own):
//! - `max-bitrate` reaches the peer as `b=AS:<max-bitrate>` on the video section and as
//!   `x-google-max-bitrate` on its codec, and `min-bitrate` not at all (Chrome would take it
//!   as the floor of its estimate);
//! - the answer maps the transport-wide congestion control extension of the offer, with
//!   `transport-cc` feedback, on both sections (a browser that offers it sends its feedback
//!   and sequence numbers only then). Between two `wilddogcall`s it did so before the fix
//!   for Chromium's offers too; that case is caught by the browser test "… at 250 kbit/s"
//!   in tests/browser/test/gstreamer.test.js;
//! - every sent section names the same MediaStream (`a=msid`), so that a browser puts the
//!   audio and video tracks in one stream whether or not the encoder had made its caps when
//!   the description was made (the original Web SDK shows only the first stream it gets).

mod common;

use std::time::Duration;

use common::{Endpoint, EndpointConfig, Seen, TestServer};

const T: Duration = Duration::from_secs(15);

/// The stream ids of the media-level `a=msid` lines of each m-section of an SDP text, in order
/// (`None` for a section without one).
fn stream_ids(sdp: &str) -> Vec<Option<String>> {
    sdp.split("\nm=")
        .skip(1)
        .map(|section| {
            section
                .lines()
                .find_map(|l| l.trim_end().strip_prefix("a=msid:"))
                .map(|v| v.split_whitespace().next().unwrap_or("").to_owned())
        })
        .collect()
}

/// The video m-section of an SDP text (up to the next m= line).
fn video_section(sdp: &str) -> &str {
    let start = sdp.find("m=video").unwrap_or_else(|| panic!("no video section: {sdp}"));
    let rest = &sdp[start..];
    match rest[1..].find("\nm=") {
        Some(end) => &rest[..end + 1],
        None => rest,
    }
}

#[test]
fn offer_and_answer_carry_bitrates_and_one_stream() {
    if !common::enter_netns("offer_and_answer_carry_bitrates_and_one_stream") {
        return;
    }
    common::init();
    let remote_sdps = common::capture_remote_sdps();
    let server = TestServer::start();
    let mut bob = Endpoint::new(
        &server,
        EndpointConfig::new("bob").prop("dimension", "120p").prop("max-bitrate", "300"),
    );
    let mut alice = Endpoint::new(
        &server,
        EndpointConfig::new("alice")
            .calling("bob")
            .prop("dimension", "120p")
            .prop("min-bitrate", "250")
            .prop("max-bitrate", "700"),
    );
    bob.play();
    bob.wait_for("connected", T, |s| *s == Seen::Signaling(true));
    alice.play();
    alice.wait_for("frames", T, |s| matches!(s, Seen::VideoFrame { .. }));
    bob.wait_for("frames", T, |s| matches!(s, Seen::VideoFrame { .. }));
    let sdps = remote_sdps.lock().unwrap().clone();
    let offer = sdps.iter().find(|t| t.starts_with("remote offer")).expect("bob got an offer");
    let answer = sdps.iter().find(|t| t.starts_with("remote answer")).expect("alice got an answer");
    println!("bob received (video):\n{}", video_section(offer));
    println!("alice received (video):\n{}", video_section(answer));
    // Alice's offer says her max-bitrate, Bob's answer his.
    assert!(video_section(offer).contains("b=AS:700"), "{}", offer);
    assert!(video_section(answer).contains("b=AS:300"), "{}", answer);
    // The cap for a Chrome peer's sender, on the VP8 payload, and no floor.
    assert!(video_section(offer).contains("x-google-max-bitrate=700"), "{}", offer);
    assert!(video_section(answer).contains("x-google-max-bitrate=300"), "{}", answer);
    for sdp in [offer, answer] {
        assert!(!sdp.contains("x-google-min-bitrate"), "{}", sdp);
        // Without `fec`, no RED or ULPFEC: nothing behind them.
        let video = video_section(sdp);
        assert!(!video.contains("red/90000") && !video.contains("ulpfec/90000"), "{video}");
    }
    // Transport-wide congestion control both ways: each section of the answer maps the
    // extension and asks for its feedback, as the offer does.
    for (what, sdp) in [("offer", offer), ("answer", answer)] {
        for section in sdp.split("\nm=").skip(1) {
            assert!(section.contains("transport-wide-cc-extensions-01"), "{what}: {section}");
            assert!(section.contains(" transport-cc"), "{what}: {section}");
        }
    }
    assert!(!offer.split("m=audio").nth(1).unwrap_or("").contains("b=AS"), "{}", offer);
    // Both send audio and video: two sections, one stream each side, not the same one.
    for (what, sdp) in [("offer", offer), ("answer", answer)] {
        let ids = stream_ids(sdp);
        assert_eq!(ids.len(), 2, "{what}: {sdp}");
        let first = ids[0].clone().unwrap_or_else(|| panic!("{what}: no a=msid: {sdp}"));
        assert!(first.starts_with("wilddog-"), "{what}: {sdp}");
        assert!(ids.iter().all(|id| id.as_deref() == Some(first.as_str())), "{what}: {sdp}");
    }
    assert_ne!(stream_ids(offer)[0], stream_ids(answer)[0]);
}

/// The audio m-section of an SDP text.
fn audio_section(sdp: &str) -> &str {
    sdp.split("m=audio").nth(1).unwrap_or_else(|| panic!("no audio section: {sdp}"))
}

/// The offer and the answer advertise only what is behind them: NACK with an RTX payload
/// type for video (none for audio, which is not retransmitted), the TWCC extension and
/// `transport-cc` with congestion control, RED and ULPFEC with `fec=ulpfec-red`; and a call
/// with all of it decodes.
#[test]
fn offer_and_answer_advertise_what_is_behind_them() {
    if !common::enter_netns("offer_and_answer_advertise_what_is_behind_them") {
        return;
    }
    common::init();
    let remote_sdps = common::capture_remote_sdps();
    let server = TestServer::start();
    let mut bob = Endpoint::new(
        &server,
        EndpointConfig::new("bob").prop("dimension", "120p").prop("fec", "ulpfec-red"),
    );
    let mut alice = Endpoint::new(
        &server,
        EndpointConfig::new("alice")
            .calling("bob")
            .prop("dimension", "120p")
            .prop("fec", "ulpfec-red"),
    );
    bob.play();
    bob.wait_for("connected", T, |s| *s == Seen::Signaling(true));
    alice.play();
    alice.wait_for("frames", T, |s| matches!(s, Seen::VideoFrame { .. }));
    bob.wait_for("frames", T, |s| matches!(s, Seen::VideoFrame { .. }));
    // Frames keep coming through RED.
    let n = bob.count_for(Duration::from_secs(2), |s| matches!(s, Seen::VideoFrame { .. }));
    assert!(n >= 10, "bob decoded {n} frames in 2 s of alice's RED/ULPFEC video");
    let sdps = remote_sdps.lock().unwrap().clone();
    let offer = sdps.iter().find(|t| t.starts_with("remote offer")).expect("bob got an offer");
    let answer = sdps.iter().find(|t| t.starts_with("remote answer")).expect("alice got an answer");
    println!("offer (video):\n{}", video_section(offer));
    for (what, sdp) in [("offer", offer.as_str()), ("answer", answer.as_str())] {
        let video = video_section(sdp);
        assert!(video.contains("rtx/90000") && video.contains(" nack\r\n"), "{what}: {video}");
        assert!(video.contains("transport-wide-cc"), "{what}: {video}");
        assert!(video.contains(" transport-cc"), "{what}: {video}");
        let audio = audio_section(sdp);
        assert!(!audio.contains(" nack"), "{what}: audio NACKed: {audio}");
        assert!(audio.contains("useinbandfec=1"), "{what}: {audio}");
    }
    for sdp in [offer, answer] {
        let video = video_section(sdp);
        assert!(video.contains("red/90000") && video.contains("ulpfec/90000"), "{video}");
    }
}
