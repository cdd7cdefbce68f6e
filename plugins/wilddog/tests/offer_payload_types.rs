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

/// Bob's newest peer connection: the webrtcbin of the current call, or the one made for
/// the next (`webrtcbin<serial>`).
fn peer_connection(bob: &Endpoint) -> Option<gst::Element> {
    let bin = bob.call.upcast_ref::<gst::Bin>();
    bin.iterate_elements()
        .into_iter()
        .flatten()
        .filter(|e| e.factory().is_some_and(|f| f.name() == "webrtcbin"))
        .max_by_key(|w| w.name().trim_start_matches("webrtcbin").parse::<u32>().unwrap_or(0))
}

/// Whether both of bob's sending chains (video, audio) reach `webrtcbin`: each of its sink
/// pads has received their caps. A chain its previous peer connection's teardown stopped
/// sends nothing again, caps included.
fn chains_reach(webrtcbin: &gst::Element) -> bool {
    let pads = webrtcbin.sink_pads();
    pads.len() == 2 && pads.iter().all(|p| p.current_caps().is_some())
}

/// Waits until bob's chains reach a peer connection other than `previous` (the one of the
/// call that ended) and returns it.
fn wait_chains_reach_next(
    bob: &Endpoint,
    previous: Option<&gst::Element>,
    what: &str,
) -> gst::Element {
    let began = Instant::now();
    loop {
        if let Some(w) = peer_connection(bob)
            && Some(&w) != previous
            && chains_reach(&w)
        {
            return w;
        }
        assert!(
            began.elapsed() < T,
            "bob's sending chains send nothing to his peer connection {what}: {:?}",
            peer_connection(bob).map(|w| (
                w.name(),
                w.sink_pads().iter().map(|p| p.current_caps()).collect::<Vec<_>>()
            ))
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether `webrtcbin` connected one of its sink pads to its sending streams: a buffer given
/// to it now goes in, up to its transport (held there until DTLS is up).
fn sends_into(webrtcbin: &gst::Element) -> bool {
    webrtcbin
        .sink_pads()
        .into_iter()
        .any(|p| p.downcast::<gst::GhostPad>().is_ok_and(|g| g.target().is_some()))
}

/// Bob (live test sources, sending video and audio) answers a scripted caller's `offers`, one
/// call each, in order; his answers. Before each offer his sending chains have sent their
/// caps to the peer connection of that call: his media flows into every call (the callee's
/// sources, encoders and chains outlive each call's peer connection).
fn answers_to(offers: &[String]) -> Vec<String> {
    answers_to_calls(offers, Duration::ZERO)
}

/// [`answers_to`], each call lasting `hold` after bob's peer connection took his media in
/// (its sending streams connected by the answer), before the caller hangs up. Its DTLS never
/// comes up (the caller is scripted): a call ended before it connected.
fn answers_to_calls(offers: &[String], hold: Duration) -> Vec<String> {
    let server = TestServer::start();
    let mut bob = Endpoint::new(&server, EndpointConfig::new("bob"));
    bob.play();
    bob.wait_for("connected", T, |s| *s == Seen::Signaling(true));
    let mut current = wait_chains_reach_next(&bob, None, "of his first call");
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
            if !hold.is_zero() {
                let began = Instant::now();
                while !sends_into(&current) {
                    assert!(began.elapsed() < T, "bob's webrtcbin never took his media in");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                tokio::time::sleep(hold).await;
            }
            client.send(conv(Body::Bye(Empty::default()))).unwrap();
            // Bob is free for the next call once he is idle again.
            let began = Instant::now();
            while bob.call.property::<String>("state") != "idle" {
                assert!(began.elapsed() < T, "bob never went back to idle");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // His chains reach his next peer connection: his media flows in the next call,
            // and its offer is the case under test (chains that already sent caps). Before
            // the fix, once in 10-20 runs they never did (a chain linked to the next
            // webrtcbin before its pads were active, or held in this one by the transport
            // until DTLS, was answered `flushing`, and stopped).
            let what = format!("after call {n}");
            current = wait_chains_reach_next(&bob, Some(&current), &what);
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

/// A call that ends after the callee's peer connection took its media in but before DTLS
/// came up (the caller hung up while connecting, or ICE failed): webrtcbin holds the chains'
/// packets until DTLS is up, and the teardown stopped the chains for good (every later call
/// sent nothing). The callee's media flows into its next calls.
#[test]
fn callee_sends_in_its_next_call_after_one_that_never_connected() {
    if !common::enter_netns("callee_sends_in_its_next_call_after_one_that_never_connected") {
        return;
    }
    let answers =
        answers_to_calls(&[chromium_offer(), chromium_offer()], Duration::from_millis(300));
    assert_accepted(&answers[1], "0", "audio", 111, "OPUS/48000/2");
    assert_accepted(&answers[1], "1", "video", 96, "VP8/90000");
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
