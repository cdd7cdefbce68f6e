//! A `wilddogcall` caller whose callee answers the video section inactive (Chromium's page
//! stopped the video transceiver before answering: `m=video 9 … a=inactive`, audio
//! sendrecv) or rejected (`m=video 0`, `c=`, `a=mid`, `a=inactive`, no fingerprint: what our
//! own answerer sends for a rejected section). The callee is a scripted webrtcbin behind the
//! signaling client that munges its answer so. The call must carry audio both ways, never
//! restart ICE (an inactive section has no RTP: that is not a lost path), and end promptly
//! when the callee hangs up: `closed`, EOS, and the pipeline to NULL without a deadlock.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Endpoint, EndpointConfig, Seen, TestServer};
use gst::prelude::*;
use wilddog_protocol::{Body, CandidateMsg, ClientFrame, Empty, SdpMsg, ServerFrame};

const T: Duration = Duration::from_secs(20);

/// How the scripted callee answers the offered video section.
#[derive(Debug, Clone, Copy, PartialEq)]
enum VideoAnswer {
    /// Port 9, in BUNDLE, `a=inactive` (Chromium with a stopped transceiver).
    Inactive,
    /// Port 0, out of BUNDLE, no ICE/DTLS attributes.
    Rejected,
    /// Like `Rejected`, and no fingerprint anywhere: an answer webrtcbin cannot set.
    NoFingerprint,
}

/// The scripted callee: a webrtcbin answering through the signaling client as `bob`.
struct FakeCallee {
    /// Caller's audio RTP packets that reached the callee.
    audio_packets: Arc<AtomicU64>,
    /// Offers received (a second one is an ICE restart).
    offers: Arc<AtomicU64>,
    hang_up: tokio::sync::mpsc::UnboundedSender<()>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeCallee {
    fn start(server: &TestServer, mode: VideoAnswer) -> FakeCallee {
        common::init();
        let audio_packets = Arc::new(AtomicU64::new(0));
        let offers = Arc::new(AtomicU64::new(0));
        let (hang_up, mut hang_up_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let config = wilddog_client::ClientConfig::new(
            server.url.clone(),
            wilddog_server::DEV_APP_ID.to_owned(),
            server.token("bob"),
        );
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (packets, offer_count) = (audio_packets.clone(), offers.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let (client, mut events, _) =
                    wilddog_client::Client::connect(config).await.expect("bob connects");
                ready_tx.send(()).unwrap();
                let pipeline = gst::Pipeline::new();
                let mut webrtc: Option<gst::Element> = None;
                let mut peer: Option<(String, String)> = None;
                loop {
                    let event = tokio::select! {
                        e = events.recv() => e,
                        _ = hang_up_rx.recv() => {
                            if let Some((cid, to)) = &peer {
                                let bye = Body::Bye(Empty::default());
                                let _ = client.send(ClientFrame::Conversation {
                                    cid: cid.clone(), to: to.clone(), body: bye });
                            }
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            break;
                        }
                    };
                    let Some(event) = event else { break };
                    let wilddog_client::ClientEvent::Frame(ServerFrame::Conversation {
                        cid,
                        from,
                        body,
                    }) = event
                    else {
                        continue;
                    };
                    let conv = |body| ClientFrame::Conversation {
                        cid: cid.clone(),
                        to: from.clone(),
                        body,
                    };
                    match body {
                        Body::Call(_) => {
                            peer = Some((cid.clone(), from.clone()));
                            client.send(conv(Body::Accept(Default::default()))).unwrap();
                        }
                        Body::Offer(offer) => {
                            offer_count.fetch_add(1, Ordering::SeqCst);
                            if webrtc.is_some() {
                                // A restart offer: not answered (the test fails on it).
                                continue;
                            }
                            let (element, answer) = answer_offer(
                                &pipeline,
                                &offer.sdp,
                                mode,
                                &client,
                                &cid,
                                &from,
                                packets.clone(),
                            );
                            webrtc = Some(element);
                            let msg = SdpMsg { sdp: answer, ..Default::default() };
                            client.send(conv(Body::Answer(msg))).unwrap();
                        }
                        Body::Candidate(c) => {
                            if let (Some(w), Some(mline)) = (&webrtc, c.sdp_mline_index)
                                && !c.sdp.is_empty()
                            {
                                w.emit_by_name::<()>("add-ice-candidate", &[&mline, &c.sdp]);
                            }
                        }
                        Body::Bye(_) => break,
                        _ => {}
                    }
                }
                let _ = pipeline.set_state(gst::State::Null);
            });
        });
        ready_rx.recv_timeout(T).expect("the scripted callee connects");
        FakeCallee { audio_packets, offers, hang_up, thread: Some(thread) }
    }

    fn audio_packets(&self) -> u64 {
        self.audio_packets.load(Ordering::SeqCst)
    }
}

impl Drop for FakeCallee {
    fn drop(&mut self) {
        let _ = self.hang_up.send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The index, mid and first payload type of the offer's `kind` section.
fn offered(offer: &str, kind: &str) -> (u32, String, String) {
    let sections: Vec<&str> = offer.split("\r\nm=").skip(1).collect();
    let (i, s) = sections
        .iter()
        .enumerate()
        .find(|(_, s)| s.starts_with(&format!("{kind} ")))
        .unwrap_or_else(|| panic!("no {kind} section offered: {offer}"));
    let mid = s.lines().find_map(|l| l.strip_prefix("a=mid:")).unwrap().trim().to_owned();
    let pt = if kind == "audio" {
        s.lines()
            .find_map(|l| l.strip_prefix("a=rtpmap:").filter(|r| r.contains("OPUS/")))
            .or_else(|| {
                s.lines().find_map(|l| l.strip_prefix("a=rtpmap:").filter(|r| r.contains("opus/")))
            })
            .and_then(|r| r.split_whitespace().next())
            .unwrap()
            .to_owned()
    } else {
        s.split_whitespace().nth(3).unwrap().to_owned()
    };
    (i as u32, mid, pt)
}

/// `sdp` with the section of `mid` made inactive (`Inactive`) or a bare rejection (others),
/// and (for rejections) out of BUNDLE; `NoFingerprint` drops every fingerprint.
fn munge(sdp: &str, mid: &str, mode: VideoAnswer) -> String {
    let mut parts = sdp.trim_end_matches("\r\n").split("\r\nm=");
    let session = parts.next().unwrap();
    let mut out = String::new();
    for line in session.split("\r\n") {
        if mode != VideoAnswer::Inactive
            && let Some(group) = line.strip_prefix("a=group:BUNDLE ")
        {
            let kept: Vec<&str> = group.split_whitespace().filter(|m| *m != mid).collect();
            out.push_str(&format!("a=group:BUNDLE {}\r\n", kept.join(" ")));
        } else if !(mode == VideoAnswer::NoFingerprint && line.starts_with("a=fingerprint")) {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    for part in parts {
        let lines: Vec<&str> = part.split("\r\n").collect();
        let this = lines.iter().any(|l| *l == format!("a=mid:{mid}"));
        if this && mode != VideoAnswer::Inactive {
            let mut m: Vec<&str> = lines[0].split(' ').collect();
            m[1] = "0";
            out.push_str(&format!(
                "m={}\r\nc=IN IP4 0.0.0.0\r\na=mid:{mid}\r\na=inactive\r\n",
                m.join(" ")
            ));
            continue;
        }
        out.push_str("m=");
        for line in lines {
            let direction = matches!(line, "a=sendrecv" | "a=sendonly" | "a=recvonly");
            if this && direction {
                out.push_str("a=inactive\r\n");
            } else if !(mode == VideoAnswer::NoFingerprint && line.starts_with("a=fingerprint")) {
                out.push_str(line);
                out.push_str("\r\n");
            }
        }
    }
    out
}

/// Applies `offer` to a new webrtcbin sending audio, and returns it and the munged answer.
fn answer_offer(
    pipeline: &gst::Pipeline,
    offer: &str,
    mode: VideoAnswer,
    client: &wilddog_client::Client,
    cid: &str,
    to: &str,
    audio_packets: Arc<AtomicU64>,
) -> (gst::Element, String) {
    let (audio_index, _, opus_pt) = offered(offer, "audio");
    let (_, video_mid, _) = offered(offer, "video");
    let webrtc = gst::ElementFactory::make("webrtcbin").build().unwrap();
    webrtc.set_property_from_str("bundle-policy", "max-bundle");
    gstwilddog::ice::configure_agent(&webrtc, &["127.0.0.1".parse().unwrap()]).unwrap();
    pipeline.add(&webrtc).unwrap();
    let (client, cid, to) = (client.clone(), cid.to_owned(), to.to_owned());
    webrtc.connect("on-ice-candidate", false, move |v| {
        let mline = v[1].get::<u32>().unwrap();
        let candidate = v[2].get::<String>().unwrap();
        // A rejected section has no transport: its candidates belong to the audio one.
        let mline = if mode == VideoAnswer::Inactive { mline } else { audio_index };
        let msg =
            CandidateMsg { sdp_mline_index: Some(mline), sdp: candidate, ..Default::default() };
        let _ = client.send(ClientFrame::Conversation {
            cid: cid.clone(),
            to: to.clone(),
            body: Body::Candidate(msg),
        });
        None
    });
    let pipeline_weak = pipeline.downgrade();
    webrtc.connect_pad_added(move |_, pad| {
        let Some(pipeline) = pipeline_weak.upgrade() else { return };
        if pad.direction() != gst::PadDirection::Src {
            return;
        }
        let sink = gst::ElementFactory::make("fakesink")
            .property("sync", false)
            .property("async", false)
            .build()
            .unwrap();
        pipeline.add(&sink).unwrap();
        sink.sync_state_with_parent().unwrap();
        let audio = pad
            .current_caps()
            .and_then(|c| c.structure(0).and_then(|s| s.get::<String>("media").ok()))
            .is_some_and(|m| m == "audio");
        if audio {
            let packets = audio_packets.clone();
            pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
                packets.fetch_add(1, Ordering::SeqCst);
                gst::PadProbeReturn::Ok
            });
        }
        pad.link(&sink.static_pad("sink").unwrap()).unwrap();
    });
    pipeline.set_state(gst::State::Playing).unwrap();
    let desc = gst_webrtc::WebRTCSessionDescription::new(
        gst_webrtc::WebRTCSDPType::Offer,
        gst_sdp::SDPMessage::parse_buffer(offer.as_bytes()).unwrap(),
    );
    let promise = gst::Promise::new();
    webrtc.emit_by_name::<()>("set-remote-description", &[&desc, &promise]);
    promise.wait();
    // Our audio, into the offered audio transceiver.
    let source = gst::parse::bin_from_description(
        &format!(
            "audiotestsrc is-live=true wave=ticks ! audioconvert ! audioresample ! opusenc ! \
             rtpopuspay pt={opus_pt} ! capsfilter caps=\"application/x-rtp,media=audio,\
             encoding-name=OPUS,clock-rate=48000,payload={opus_pt}\""
        ),
        true,
    )
    .unwrap();
    pipeline.add(&source).unwrap();
    let sink = webrtc.request_pad_simple(&format!("sink_{audio_index}")).unwrap();
    source.static_pad("src").unwrap().link(&sink).unwrap();
    source.sync_state_with_parent().unwrap();
    let promise = gst::Promise::new();
    webrtc.emit_by_name::<()>("create-answer", &[&None::<gst::Structure>, &promise]);
    let reply = promise.wait();
    assert_eq!(reply, gst::PromiseResult::Replied);
    let answer =
        promise.get_reply().unwrap().get::<gst_webrtc::WebRTCSessionDescription>("answer").unwrap();
    let text = answer.sdp().as_text().unwrap();
    // Locally the section is inactive in every mode: the peer sees the mode's answer.
    let local = munge(&text, &video_mid, VideoAnswer::Inactive);
    let local = gst_webrtc::WebRTCSessionDescription::new(
        gst_webrtc::WebRTCSDPType::Answer,
        gst_sdp::SDPMessage::parse_buffer(local.as_bytes()).unwrap(),
    );
    webrtc.emit_by_name::<()>("set-local-description", &[&local, &None::<gst::Promise>]);
    let remote = munge(&text, &video_mid, mode);
    println!("answer sent:\n{remote}");
    (webrtc, remote)
}

/// Sets the caller's pipeline to NULL on a thread of its own: how long it took, or `None`
/// when it did not return within `limit` (a deadlock: the endpoint is then leaked).
fn stop_within(caller: Endpoint, limit: Duration) -> Option<Duration> {
    let (tx, rx) = std::sync::mpsc::channel();
    let pipeline = caller.pipeline.clone();
    let started = Instant::now();
    std::thread::spawn(move || {
        let _ = pipeline.set_state(gst::State::Null);
        let _ = tx.send(started.elapsed());
    });
    match rx.recv_timeout(limit) {
        Ok(took) => {
            drop(caller);
            Some(took)
        }
        Err(_) => {
            std::mem::forget(caller);
            None
        }
    }
}

fn audio_both_ways(server: &TestServer, mode: VideoAnswer) -> (Endpoint, FakeCallee) {
    let bob = FakeCallee::start(server, mode);
    let mut alice = Endpoint::new(server, EndpointConfig::new("alice").calling("bob"));
    alice.play();
    alice.wait_for("ACCEPTED", T, |s| *s == Seen::Response("ACCEPTED".into()));
    alice.wait_for("bob's audio", T, |s| *s == Seen::AudioBuffer);
    let deadline = Instant::now() + T;
    while bob.audio_packets() < 50 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(bob.audio_packets() >= 50, "bob got {} audio packets of alice", bob.audio_packets());
    // Longer than the lost-path rule's silence (2 s) on a loaded machine.
    std::thread::sleep(Duration::from_secs(5));
    alice.drain();
    assert_eq!(bob.offers.load(Ordering::SeqCst), 1, "no ICE restart: {:?}", alice.log);
    assert!(
        !alice.saw(|s| matches!(s, Seen::WilddogError(_) | Seen::ElementError { .. })),
        "{:?}",
        alice.log
    );
    (alice, bob)
}

#[test]
fn inactive_video_answer_carries_audio_and_hangs_up_cleanly() {
    if !common::enter_netns("inactive_video_answer_carries_audio_and_hangs_up_cleanly") {
        return;
    }
    let server = TestServer::start();
    let (mut alice, bob) = audio_both_ways(&server, VideoAnswer::Inactive);
    drop(bob);
    alice.wait_for("closed", T, |s| matches!(s, Seen::Closed(_)));
    alice.wait_for("EOS", T, |s| *s == Seen::PipelineEos);
    let took = stop_within(alice, Duration::from_secs(10));
    println!("stopping took {took:?}");
    assert!(took.is_some_and(|t| t < Duration::from_secs(5)), "stopping took {took:?}");
}

#[test]
fn rejected_video_answer_without_fingerprint_carries_audio() {
    if !common::enter_netns("rejected_video_answer_without_fingerprint_carries_audio") {
        return;
    }
    let server = TestServer::start();
    let (alice, bob) = audio_both_ways(&server, VideoAnswer::Rejected);
    drop(bob);
    let took = stop_within(alice, Duration::from_secs(10));
    assert!(took.is_some_and(|t| t < Duration::from_secs(5)), "stopping took {took:?}");
}

#[test]
fn answer_webrtcbin_refuses_ends_the_call_at_once() {
    if !common::enter_netns("answer_webrtcbin_refuses_ends_the_call_at_once") {
        return;
    }
    let server = TestServer::start();
    let _bob = FakeCallee::start(&server, VideoAnswer::NoFingerprint);
    let mut alice = Endpoint::new(
        &server,
        EndpointConfig::new("alice").calling("bob").prop("call-timeout", "30000"),
    );
    let message = Arc::new(std::sync::Mutex::new(String::new()));
    let store = message.clone();
    alice.call.connect("wilddog-error", false, move |v| {
        *store.lock().unwrap() = v[2].get::<String>().unwrap_or_default();
        None
    });
    alice.play();
    alice.wait_for("ACCEPTED", T, |s| *s == Seen::Response("ACCEPTED".into()));
    let accepted = Instant::now();
    alice.wait_for("41004", T, |s| *s == Seen::WilddogError(41004));
    let took = accepted.elapsed();
    let message = message.lock().unwrap().clone();
    println!("41004 after {took:?}: {message}");
    assert!(took < Duration::from_secs(10), "the call waited {took:?} for its timeout");
    // The cause, not just CONVERSATION_CONNECT_FAILED.
    assert!(message.contains("negotiation failed") && message.contains("fingerprint"), "{message}");
    alice.wait_for("EOS", T, |s| *s == Seen::PipelineEos);
}
