//! A callee whose sending chains already run (live sources, or the encoders a previous call
//! negotiated) answers offers whose payload types differ from its own: Firefox offers VP8 as
//! 120 and Opus as 109, aiortc VP8 as 97 and Opus as 96. webrtcbin intersects an offer with
//! the caps its sink pads last received, so before the fix every section of such an offer
//! was answered rejected (port 0) and nothing flowed. Offers are SDP fixtures sent by a
//! scripted caller (the signaling client) to a real `wilddogcall`; the answers are checked.
//! Calls with media both ways against Firefox and aiortc: tests/browser
//! (connectivity.test.js) and tests/interop.rs.

mod common;

use std::time::{Duration, Instant};

use common::{Endpoint, EndpointConfig, Seen, TestServer};
use gst::prelude::*;
use wilddog_protocol::{Body, ClientFrame, Empty, ServerFrame};

const T: Duration = Duration::from_secs(15);

const ICE_DTLS: &str = "a=ice-ufrag:Hs2L\r\na=ice-pwd:hbmNYtiy0rYpzLtB1hxDvkUS\r\na=ice-options:trickle\r\n\
    a=fingerprint:sha-256 8C:71:B1:5E:2F:0E:5F:3A:6C:36:4B:1F:6C:E4:04:5C:39:E5:9F:2A:19:D8:5A:3B:2C:0E:28:1F:72:A8:46:1B\r\n\
    a=setup:actpass\r\n";

/// Firefox ESR's offer (audio then video), trimmed: Opus 109, VP8 120 with RTX 124, VP9 121.
fn firefox_offer() -> String {
    format!(
        "v=0\r\no=mozilla...THIS_IS_SDPARTA-115 3402212337962391117 0 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
         a=fingerprint:sha-256 8C:71:B1:5E:2F:0E:5F:3A:6C:36:4B:1F:6C:E4:04:5C:39:E5:9F:2A:19:D8:5A:3B:2C:0E:28:1F:72:A8:46:1B\r\n\
         a=group:BUNDLE 0 1\r\na=ice-options:trickle\r\na=msid-semantic:WMS *\r\n\
         m=audio 9 UDP/TLS/RTP/SAVPF 109 9 0 8 101\r\nc=IN IP4 0.0.0.0\r\na=sendrecv\r\n{ICE_DTLS}\
         a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\na=extmap:3 urn:ietf:params:rtp-hdrext:sdes:mid\r\n\
         a=fmtp:109 maxplaybackrate=48000;stereo=1;useinbandfec=1\r\na=fmtp:101 0-15\r\n\
         a=mid:0\r\na=msid:{{a1}} {{a2}}\r\na=rtcp-mux\r\na=rtpmap:109 opus/48000/2\r\n\
         a=rtpmap:9 G722/8000/1\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\na=ssrc:2841185937 cname:{{c1}}\r\n\
         m=video 9 UDP/TLS/RTP/SAVPF 120 124 121 125\r\nc=IN IP4 0.0.0.0\r\na=sendrecv\r\n{ICE_DTLS}\
         a=extmap:3 urn:ietf:params:rtp-hdrext:sdes:mid\r\n\
         a=extmap:7 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n\
         a=fmtp:120 max-fs=12288;max-fr=60\r\na=fmtp:124 apt=120\r\n\
         a=fmtp:121 max-fs=12288;max-fr=60\r\na=fmtp:125 apt=121\r\n\
         a=mid:1\r\na=msid:{{a1}} {{v2}}\r\n\
         a=rtcp-fb:120 nack\r\na=rtcp-fb:120 nack pli\r\na=rtcp-fb:120 ccm fir\r\n\
         a=rtcp-fb:120 goog-remb\r\na=rtcp-fb:120 transport-cc\r\n\
         a=rtcp-fb:121 nack\r\na=rtcp-fb:121 nack pli\r\na=rtcp-fb:121 ccm fir\r\n\
         a=rtcp-mux\r\na=rtcp-rsize\r\na=rtpmap:120 VP8/90000\r\na=rtpmap:124 rtx/90000\r\n\
         a=rtpmap:121 VP9/90000\r\na=rtpmap:125 rtx/90000\r\n\
         a=ssrc:3421400111 cname:{{c1}}\r\na=ssrc:3931355432 cname:{{c1}}\r\n\
         a=ssrc-group:FID 3421400111 3931355432\r\n"
    )
}

/// aiortc 1.16's offer (video then audio): VP8 97 with RTX 98, Opus 96.
fn aiortc_offer() -> String {
    format!(
        "v=0\r\no=- 3942061735 3942061735 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
         a=group:BUNDLE 0 1\r\na=msid-semantic:WMS *\r\n\
         m=video 9 UDP/TLS/RTP/SAVPF 97 98 99 100\r\nc=IN IP4 0.0.0.0\r\na=sendrecv\r\n\
         a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid\r\n\
         a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r\n\
         a=mid:0\r\na=msid:s1 t1\r\na=rtcp:9 IN IP4 0.0.0.0\r\na=rtcp-mux\r\n\
         a=ssrc-group:FID 1001 1002\r\na=ssrc:1001 cname:c1\r\na=ssrc:1002 cname:c1\r\n\
         a=rtpmap:97 VP8/90000\r\na=rtcp-fb:97 nack\r\na=rtcp-fb:97 nack pli\r\n\
         a=rtcp-fb:97 goog-remb\r\na=rtpmap:98 rtx/90000\r\na=fmtp:98 apt=97\r\n\
         a=rtpmap:99 H264/90000\r\na=rtcp-fb:99 nack\r\na=rtcp-fb:99 nack pli\r\n\
         a=fmtp:99 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f\r\n\
         a=rtpmap:100 rtx/90000\r\na=fmtp:100 apt=99\r\n{ICE_DTLS}\
         m=audio 9 UDP/TLS/RTP/SAVPF 96 0 8\r\nc=IN IP4 0.0.0.0\r\na=sendrecv\r\n\
         a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid\r\n\
         a=mid:1\r\na=msid:s1 t2\r\na=rtcp:9 IN IP4 0.0.0.0\r\na=rtcp-mux\r\n\
         a=ssrc:1003 cname:c1\r\na=rtpmap:96 opus/48000/2\r\na=rtpmap:0 PCMU/8000\r\n\
         a=rtpmap:8 PCMA/8000\r\n{ICE_DTLS}"
    )
}

/// Chromium's payload types, which are ours too: VP8 96, Opus 111.
fn chromium_offer() -> String {
    format!(
        "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n\
         a=extmap-allow-mixed\r\na=msid-semantic: WMS\r\n\
         m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\n{ICE_DTLS}\
         a=mid:0\r\na=sendrecv\r\na=msid:- 7d0e1d4f\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\n\
         a=fmtp:111 minptime=10;useinbandfec=1\r\na=ssrc:1001 cname:abc\r\n\
         m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\n{ICE_DTLS}\
         a=mid:1\r\na=sendrecv\r\na=msid:- 8e1f2a3b\r\na=rtcp-mux\r\na=rtcp-rsize\r\n\
         a=rtpmap:96 VP8/90000\r\na=rtcp-fb:96 goog-remb\r\na=rtcp-fb:96 transport-cc\r\n\
         a=rtcp-fb:96 ccm fir\r\na=rtcp-fb:96 nack\r\na=rtcp-fb:96 nack pli\r\n\
         a=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n\
         a=ssrc-group:FID 2002 2003\r\na=ssrc:2002 cname:abc\r\na=ssrc:2003 cname:abc\r\n"
    )
}

/// The payload types of the caps webrtcbin's sink pads (bob's sending chains) carry.
fn sending_payload_types(bob: &Endpoint) -> Vec<i32> {
    let bin = bob.call.upcast_ref::<gst::Bin>();
    bin.iterate_elements()
        .into_iter()
        .flatten()
        .filter(|e| e.factory().is_some_and(|f| f.name() == "webrtcbin"))
        .flat_map(|w| w.sink_pads())
        .filter_map(|p| p.current_caps()?.structure(0)?.get::<i32>("payload").ok())
        .collect()
}

/// Whether bob's audio chain (which runs from PLAYING, unlike the video chain, which waits for
/// a negotiated transceiver) has sent its caps to his webrtcbin.
fn sending(bob: &Endpoint) -> bool {
    !sending_payload_types(bob).is_empty()
}

fn wait_sending(bob: &Endpoint) {
    let began = Instant::now();
    while !sending(bob) {
        assert!(began.elapsed() < T, "bob's audio chain never reached webrtcbin");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Bob (live test sources, sending video and audio) answers a scripted caller's `offers`, one
/// call each, in order; his answers. Before the first offer his audio chain has sent its caps
/// to webrtcbin (its encoder runs from PLAYING).
fn answers_to(offers: &[String]) -> Vec<String> {
    let server = TestServer::start();
    let mut bob = Endpoint::new(&server, EndpointConfig::new("bob"));
    bob.play();
    bob.wait_for("connected", T, |s| *s == Seen::Signaling(true));
    wait_sending(&bob);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut answers = Vec::new();
    rt.block_on(async {
        let config = wilddog_client::ClientConfig::new(
            server.url.clone(),
            wilddog_server::DEV_APP_ID.to_owned(),
            server.token("alice"),
        );
        let (client, mut events, _) = wilddog_client::Client::connect(config).await.unwrap();
        // The next frame of conversation `cid` (a previous call's last frames may come late).
        let next = async |events: &mut tokio::sync::mpsc::UnboundedReceiver<_>, cid: &str| loop {
            match tokio::time::timeout(T, events.recv()).await {
                Ok(Some(wilddog_client::ClientEvent::Frame(ServerFrame::Conversation {
                    cid: frame_cid,
                    body,
                    ..
                }))) if frame_cid == cid => return body,
                Ok(Some(_)) => {}
                other => panic!("no frame from bob: {other:?}"),
            }
        };
        for (n, offer) in offers.iter().enumerate() {
            let cid = format!("cid{n}");
            let conv =
                |body| ClientFrame::Conversation { cid: cid.clone(), to: "bob".into(), body };
            client.send(conv(Body::Call(Default::default()))).unwrap();
            let accept = next(&mut events, &cid).await;
            assert!(matches!(accept, Body::Accept(_)), "{accept:?}");
            let msg = wilddog_protocol::SdpMsg { sdp: offer.clone(), ..Default::default() };
            client.send(conv(Body::Offer(msg))).unwrap();
            let answer = loop {
                match next(&mut events, &cid).await {
                    Body::Answer(a) => break a.sdp,
                    Body::Bye(_) => panic!("bob hung up"),
                    _ => {}
                }
            };
            println!("answer {n}:\n{answer}");
            answers.push(answer);
            client.send(conv(Body::Bye(Empty::default()))).unwrap();
            // Bob is free for the next call once he is idle again.
            let began = Instant::now();
            while bob.call.property::<String>("state") != "idle" {
                assert!(began.elapsed() < T, "bob never went back to idle");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // His chains sending to his next peer connection make the next offer the case
            // under test. Seen once in 10-20 runs: they had not within seconds (not yet
            // understood); the next answer is checked all the same.
            let began = Instant::now();
            while !sending(&bob) && began.elapsed() < Duration::from_secs(3) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if !sending(&bob) {
                eprintln!("note: bob's chains send nothing to his next peer connection yet");
            }
        }
    });
    assert!(
        !bob.saw(|s| matches!(s, Seen::WilddogError(_) | Seen::ElementError { .. })),
        "the calls went on: {:?}",
        bob.log
    );
    answers
}

/// The m-section of `mid` in `sdp`.
fn section<'a>(sdp: &'a str, mid: &str) -> &'a str {
    sdp.split("\r\nm=")
        .find(|s| s.contains(&format!("\r\na=mid:{mid}\r\n")))
        .unwrap_or_else(|| panic!("no mid {mid}: {sdp}"))
}

/// The section of `mid` is accepted (not port 0), sends and receives, and names `pt` first
/// with `rtpmap`.
fn assert_accepted(answer: &str, mid: &str, media: &str, pt: u32, rtpmap: &str) {
    let s = section(answer, mid);
    let m_line = s.lines().next().unwrap_or_default();
    let fields: Vec<&str> = m_line.split_whitespace().collect();
    assert_eq!(fields.first().copied(), Some(media), "{s}");
    assert_ne!(fields.get(1).copied(), Some("0"), "the {media} section was rejected:\n{answer}");
    assert_eq!(fields.get(3).copied(), Some(pt.to_string().as_str()), "{m_line}");
    assert!(s.contains(&format!("a=rtpmap:{pt} {rtpmap}")), "{s}");
    assert!(s.contains("a=sendrecv"), "{s}");
}

#[test]
fn live_callee_answers_firefox_payload_types() {
    if !common::enter_netns("live_callee_answers_firefox_payload_types") {
        return;
    }
    let answers = answers_to(&[firefox_offer()]);
    assert_accepted(&answers[0], "0", "audio", 109, "OPUS/48000/2");
    assert_accepted(&answers[0], "1", "video", 120, "VP8/90000");
    assert_firefox_twcc_id(&answers[0]);
}

/// The answer's TWCC extension has the id Firefox's offer gave it (7), not ours (3, which is
/// Firefox's `sdes:mid`: Firefox refuses such an answer). The payloaders' caps carry the id
/// to webrtcbin's answer: they must reach it after they took the offer's.
fn assert_firefox_twcc_id(answer: &str) {
    let video = section(answer, "1");
    assert!(
        video.contains(
            "a=extmap:7 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
        ),
        "{video}"
    );
    assert!(!answer.contains("a=extmap:3 http://www.ietf.org/id/draft-holmer"), "{answer}");
}

/// The callee's chains were negotiated for a first caller (Chromium's payload types), then
/// aiortc and Firefox call, then Chromium again.
#[test]
fn callee_follows_each_callers_payload_types_call_after_call() {
    if !common::enter_netns("callee_follows_each_callers_payload_types_call_after_call") {
        return;
    }
    let answers =
        answers_to(&[chromium_offer(), aiortc_offer(), firefox_offer(), chromium_offer()]);
    assert_accepted(&answers[0], "0", "audio", 111, "OPUS/48000/2");
    assert_accepted(&answers[0], "1", "video", 96, "VP8/90000");
    assert_accepted(&answers[1], "0", "video", 97, "VP8/90000");
    assert_accepted(&answers[1], "1", "audio", 96, "OPUS/48000/2");
    assert_accepted(&answers[2], "0", "audio", 109, "OPUS/48000/2");
    assert_accepted(&answers[2], "1", "video", 120, "VP8/90000");
    assert!(
        !answers[2].contains("a=extmap:3 http://www.ietf.org/id/draft-holmer"),
        "{}",
        answers[2]
    );
    assert_accepted(&answers[3], "0", "audio", 111, "OPUS/48000/2");
    assert_accepted(&answers[3], "1", "video", 96, "VP8/90000");
}
