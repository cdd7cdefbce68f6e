//! What the offer and the answer say to the peer (read from the receiving element's debug
//! log of the remote SDP, in this test process of its own):
//! - `max-bitrate` reaches the peer as `b=AS:<max-bitrate>` on the video section, and with
//!   `min-bitrate` as `x-google-min-bitrate`/`x-google-max-bitrate` on its codec;
//! - every sent section names the same MediaStream (`a=msid`), so that a browser puts the
//!   audio and video tracks in one stream whether or not the encoder had made its caps when
//!   the description was made (the original Web SDK shows only the first stream it gets).

mod common;

use std::sync::{Arc, Mutex};
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
    // Keep the `wilddogcall` debug lines that hold a remote SDP.
    let remote_sdps: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let store = remote_sdps.clone();
    gst::log::remove_default_log_function();
    gst::log::set_threshold_for_name("wilddogcall", gst::DebugLevel::Debug);
    gst::log::add_log_function(move |cat, _level, _file, _func, _line, obj, msg| {
        if cat.name() != "wilddogcall" {
            return;
        }
        let Some(text) = msg.get() else { return };
        if text.starts_with("remote offer") || text.starts_with("remote answer") {
            let who = obj.map(|o| o.to_string()).unwrap_or_default();
            store.lock().unwrap().push((who, text.to_string()));
        }
    });
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
    let offer = sdps.iter().find(|(_, t)| t.starts_with("remote offer")).expect("bob got an offer");
    let answer =
        sdps.iter().find(|(_, t)| t.starts_with("remote answer")).expect("alice got an answer");
    println!("bob received (video):\n{}", video_section(&offer.1));
    println!("alice received (video):\n{}", video_section(&answer.1));
    // Alice's offer says her max-bitrate, Bob's answer his.
    assert!(video_section(&offer.1).contains("b=AS:700"), "{}", offer.1);
    assert!(video_section(&answer.1).contains("b=AS:300"), "{}", answer.1);
    // The range of min-bitrate (bob: the dimension's default, 200) and max-bitrate, for a
    // Chrome peer's sender, on the VP8 payload.
    assert!(
        video_section(&offer.1).contains("x-google-min-bitrate=250;x-google-max-bitrate=700"),
        "{}",
        offer.1
    );
    assert!(
        video_section(&answer.1).contains("x-google-min-bitrate=200;x-google-max-bitrate=300"),
        "{}",
        answer.1
    );
    assert!(!offer.1.split("m=audio").nth(1).unwrap_or("").contains("b=AS"), "{}", offer.1);
    // Both send audio and video: two sections, one stream each side, not the same one.
    for (what, sdp) in [("offer", &offer.1), ("answer", &answer.1)] {
        let ids = stream_ids(sdp);
        assert_eq!(ids.len(), 2, "{what}: {sdp}");
        let first = ids[0].clone().unwrap_or_else(|| panic!("{what}: no a=msid: {sdp}"));
        assert!(first.starts_with("wilddog-"), "{what}: {sdp}");
        assert!(ids.iter().all(|id| id.as_deref() == Some(first.as_str())), "{what}: {sdp}");
    }
    assert_ne!(stream_ids(&offer.1)[0], stream_ids(&answer.1)[0]);
}
