//! Offers with sections to reject, as fixtures sent by a scripted caller (the signaling
//! client) to a real `wilddogcall` callee: what its answer says. A section offered with port 0
//! (Chromium's stopped transceiver) and one with no codec this host decodes are answered port
//! 0, `a=inactive`, without bitrate lines, their mid out of BUNDLE; the audio section is
//! accepted; the call goes on (no error).

mod common;

use std::time::Duration;

use common::{Endpoint, EndpointConfig, Seen, TestServer};
use wilddog_protocol::{Body, ClientFrame, Empty, ServerFrame};

const T: Duration = Duration::from_secs(15);

const ICE_DTLS: &str = "a=ice-ufrag:Hs2L\r\na=ice-pwd:hbmNYtiy0rYpzLtB1hxDvkUS\r\na=ice-options:trickle\r\n\
    a=fingerprint:sha-256 8C:71:B1:5E:2F:0E:5F:3A:6C:36:4B:1F:6C:E4:04:5C:39:E5:9F:2A:19:D8:5A:3B:2C:0E:28:1F:72:A8:46:1B\r\n\
    a=setup:actpass\r\n";

/// Chromium's first offer after its video transceiver was stopped: the video section has port
/// 0, no ICE/DTLS attributes, and is out of the BUNDLE group.
fn chromium_stopped_video() -> String {
    format!(
        "v=0\r\no=- 4611731400430051336 3 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n\
         a=extmap-allow-mixed\r\na=msid-semantic: WMS\r\n\
         m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\nb=AS:64\r\na=rtcp:9 IN IP4 0.0.0.0\r\n{ICE_DTLS}\
         a=mid:0\r\na=sendrecv\r\na=msid:- 7d0e1d4f\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\n\
         a=fmtp:111 minptime=10;useinbandfec=1\r\na=ssrc:1001 cname:abc\r\n\
         m=video 0 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\nb=AS:500\r\na=rtcp:9 IN IP4 0.0.0.0\r\n\
         a=mid:1\r\na=inactive\r\na=rtcp-mux\r\na=rtpmap:96 VP8/90000\r\n"
    )
}

/// An offer whose video section has only a codec nobody here decodes, first in BUNDLE.
fn undecodable_video() -> String {
    format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE v a\r\n\
         m=video 9 UDP/TLS/RTP/SAVPF 45\r\nc=IN IP4 0.0.0.0\r\nb=AS:1000\r\n{ICE_DTLS}\
         a=mid:v\r\na=sendrecv\r\na=rtcp-mux\r\na=rtpmap:45 AV1/90000\r\n\
         m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\n{ICE_DTLS}\
         a=mid:a\r\na=sendrecv\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\n"
    )
}

/// A hostile offer: its video section's only codec is under payload type 300, which RTP
/// cannot carry (7 bits). Set on a payloader's `pt`, it panicked the thread building the
/// media, and the callee took every later call without media.
fn payload_type_300_video() -> String {
    undecodable_video()
        .replace("SAVPF 45\r\n", "SAVPF 300\r\n")
        .replace("a=rtpmap:45 AV1/90000", "a=rtpmap:300 VP8/90000")
}

/// A scripted caller calls bob and offers `offer`; returns bob's answer.
fn answer_to(offer: String) -> String {
    let server = TestServer::start();
    let mut bob = Endpoint::new(&server, EndpointConfig::new("bob"));
    bob.play();
    bob.wait_for("connected", T, |s| *s == Seen::Signaling(true));
    offer_to(&server, &mut bob, offer)
}

/// A scripted caller (alice) calls `bob` (connected) and offers `offer`, then hangs up;
/// returns bob's answer.
fn offer_to(server: &TestServer, bob: &mut Endpoint, offer: String) -> String {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let answer = rt.block_on(async {
        let config = wilddog_client::ClientConfig::new(
            server.url.clone(),
            wilddog_server::DEV_APP_ID.to_owned(),
            server.token("alice"),
        );
        let (client, mut events, _) = wilddog_client::Client::connect(config).await.unwrap();
        let conv = |body| ClientFrame::Conversation { cid: "cid1".into(), to: "bob".into(), body };
        client.send(conv(Body::Call(Default::default()))).unwrap();
        let next = async |events: &mut tokio::sync::mpsc::UnboundedReceiver<_>| loop {
            match tokio::time::timeout(T, events.recv()).await {
                Ok(Some(wilddog_client::ClientEvent::Frame(ServerFrame::Conversation {
                    body,
                    ..
                }))) => return body,
                Ok(Some(_)) => {}
                other => panic!("no frame from bob: {other:?}"),
            }
        };
        assert!(matches!(next(&mut events).await, Body::Accept(_)));
        let msg = wilddog_protocol::SdpMsg { sdp: offer, ..Default::default() };
        client.send(conv(Body::Offer(msg))).unwrap();
        let answer = loop {
            match next(&mut events).await {
                Body::Answer(a) => break a.sdp,
                Body::Bye(_) => panic!("bob hung up"),
                _ => {}
            }
        };
        client.send(conv(Body::Bye(Empty::default()))).unwrap();
        answer
    });
    assert!(
        !bob.saw(|s| matches!(s, Seen::WilddogError(_) | Seen::ElementError { .. })),
        "the call goes on: {:?}",
        bob.log
    );
    answer
}

/// The m-section of `mid` in `sdp`.
fn section<'a>(sdp: &'a str, mid: &str) -> &'a str {
    sdp.split("\r\nm=")
        .find(|s| s.contains(&format!("\r\na=mid:{mid}\r\n")))
        .unwrap_or_else(|| panic!("no mid {mid}: {sdp}"))
}

fn bundle(sdp: &str) -> Vec<&str> {
    sdp.lines()
        .find_map(|l| l.strip_prefix("a=group:BUNDLE"))
        .map(|m| m.split_whitespace().collect())
        .unwrap_or_default()
}

#[test]
fn chromium_stopped_video_section_is_answered_rejected() {
    if !common::enter_netns("chromium_stopped_video_section_is_answered_rejected") {
        return;
    }
    let answer = answer_to(chromium_stopped_video());
    println!("answer:\n{answer}");
    let video = section(&answer, "1");
    assert!(video.starts_with("video 0 "), "{video}");
    assert!(video.contains("a=inactive") && !video.contains("\r\nb="), "{video}");
    assert_eq!(bundle(&answer), vec!["0"]);
    let audio = section(&answer, "0");
    assert!(audio.starts_with("audio 9 ") && audio.contains("a=sendrecv"), "{audio}");
}

#[test]
fn undecodable_video_section_is_answered_rejected() {
    if !common::enter_netns("undecodable_video_section_is_answered_rejected") {
        return;
    }
    let answer = answer_to(undecodable_video());
    println!("answer:\n{answer}");
    let video = section(&answer, "v");
    assert!(video.contains("video 0 "), "{video}");
    assert!(video.contains("a=inactive") && !video.contains("\r\nb="), "{video}");
    assert_eq!(bundle(&answer), vec!["a"]);
    let audio = section(&answer, "a");
    assert!(audio.starts_with("audio 9 ") && audio.contains("a=sendrecv"), "{audio}");
}

#[test]
fn payload_type_over_127_is_answered_rejected_and_the_next_call_has_media() {
    if !common::enter_netns(
        "payload_type_over_127_is_answered_rejected_and_the_next_call_has_media",
    ) {
        return;
    }
    let offer = payload_type_300_video();
    assert!(offer.contains("m=video 9 UDP/TLS/RTP/SAVPF 300\r\n"), "{offer}");
    let server = TestServer::start();
    let mut bob = Endpoint::new(&server, EndpointConfig::new("bob"));
    bob.play();
    bob.wait_for("connected", T, |s| *s == Seen::Signaling(true));
    let answer = offer_to(&server, &mut bob, offer);
    println!("answer:\n{answer}");
    let video = section(&answer, "v");
    assert!(video.contains("video 0 "), "{video}");
    assert!(video.contains("a=inactive"), "{video}");
    assert_eq!(bundle(&answer), vec!["a"]);
    let audio = section(&answer, "a");
    assert!(audio.starts_with("audio 9 ") && audio.contains("a=sendrecv"), "{audio}");
    bob.wait_for("the hostile call closed", T, |s| matches!(s, Seen::Closed(_)));
    bob.drain();
    // The same element takes the next, ordinary call with media both ways.
    let mut carol = Endpoint::new(&server, EndpointConfig::new("carol").calling("bob"));
    carol.play();
    carol.wait_for("bob's frames", T, |s| matches!(s, Seen::VideoFrame { .. }));
    bob.wait_for("carol's frames", T, |s| matches!(s, Seen::VideoFrame { .. }));
    assert!(!bob.saw(|s| matches!(s, Seen::ElementError { .. })), "{:?}", bob.log);
}
