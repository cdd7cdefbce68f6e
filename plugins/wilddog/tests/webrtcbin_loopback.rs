//! Two bare webrtcbins in one process, restricted to 127.0.0.1 by `ice::configure_agent`,
//! connect and decode VP8: the plumbing every element of the plugin builds on.

mod common;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use gst::prelude::*;
use gstwilddog::{ice, media};

fn make_webrtcbin(name: &str) -> gst::Element {
    let webrtc = gst::ElementFactory::make("webrtcbin").name(name).build().unwrap();
    webrtc.set_property_from_str("bundle-policy", "max-bundle");
    webrtc.set_property("latency", 20u32);
    ice::configure_agent(&webrtc, &["127.0.0.1".parse().unwrap()]).unwrap();
    webrtc
}

#[test]
fn two_webrtcbins_on_loopback_decode_vp8() {
    if !common::enter_netns("two_webrtcbins_on_loopback_decode_vp8") {
        return;
    }
    common::init();
    let pipeline = gst::Pipeline::new();
    let src = gst::ElementFactory::make("videotestsrc").property("is-live", true).build().unwrap();
    let params = media::VideoParams {
        codec: media::VideoCodec::Vp8,
        width: 320,
        height: 240,
        max_fps: 15,
        bitrate_kbps: 300,
        payload: 96,
        cpu_adaptation: true,
        encoder_speed: gstwilddog::cpu_adaptation::EncoderSpeed::Quality,
    };
    let (enc, _encoder) = media::video_encoder_bin(&params).unwrap();
    let offerer = make_webrtcbin("offerer");
    let answerer = make_webrtcbin("answerer");
    pipeline.add_many([&src, enc.upcast_ref::<gst::Element>(), &offerer, &answerer]).unwrap();
    src.link(&enc).unwrap();
    let (sinkpad, _) = media::request_send_pad(
        &offerer,
        &media::video_rtp_caps(media::VideoCodec::Vp8, 96),
        gst_webrtc::WebRTCRTPTransceiverDirection::Sendrecv,
    )
    .unwrap();
    enc.static_pad("src").unwrap().link(&sinkpad).unwrap();

    // Decoded frames reach an appsink; the first one's caps tell its size.
    let (frame_tx, frame_rx) = mpsc::channel::<(i32, i32)>();
    let pipeline_weak = pipeline.downgrade();
    answerer.connect_pad_added(move |_, pad| {
        let Some(pipeline) = pipeline_weak.upgrade() else { return };
        let caps = pad.current_caps().unwrap();
        let (dec, kind) = media::decoder_bin(&caps).unwrap();
        assert_eq!(kind, media::StreamKind::Video);
        let sink = gst_app::AppSink::builder().sync(false).build();
        let tx = frame_tx.clone();
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |s| {
                    let sample = s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    let st = sample.caps().unwrap().structure(0).unwrap().to_owned();
                    let _ = tx
                        .send((st.get::<i32>("width").unwrap(), st.get::<i32>("height").unwrap()));
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
        pipeline.add_many([dec.upcast_ref::<gst::Element>(), sink.upcast_ref()]).unwrap();
        dec.link(&sink).unwrap();
        dec.sync_state_with_parent().unwrap();
        sink.sync_state_with_parent().unwrap();
        pad.link(&dec.static_pad("sink").unwrap()).unwrap();
    });

    // Trickle candidates straight across.
    for (from, to) in [(&offerer, &answerer), (&answerer, &offerer)] {
        let to = to.downgrade();
        from.connect("on-ice-candidate", false, move |values| {
            let mline = values[1].get::<u32>().unwrap();
            let cand = values[2].get::<String>().unwrap();
            assert!(cand.contains("127.0.0.1"), "candidate not on loopback: {cand}");
            if let Some(to) = to.upgrade() {
                to.emit_by_name::<()>("add-ice-candidate", &[&mline, &cand]);
            }
            None
        });
    }

    pipeline.set_state(gst::State::Playing).unwrap();
    let started = Instant::now();
    let answerer_weak = answerer.downgrade();
    let offerer_weak = offerer.downgrade();
    let promise = gst::Promise::with_change_func(move |reply| {
        let offer = reply
            .unwrap()
            .unwrap()
            .value("offer")
            .unwrap()
            .get::<gst_webrtc::WebRTCSessionDescription>()
            .unwrap();
        let offerer = offerer_weak.upgrade().unwrap();
        let answerer = answerer_weak.upgrade().unwrap();
        offerer.emit_by_name::<()>("set-local-description", &[&offer, &None::<gst::Promise>]);
        answerer.emit_by_name::<()>("set-remote-description", &[&offer, &None::<gst::Promise>]);
        let offerer_weak = offerer.downgrade();
        let answerer_weak = answerer.downgrade();
        let promise = gst::Promise::with_change_func(move |reply| {
            let answer = reply
                .unwrap()
                .unwrap()
                .value("answer")
                .unwrap()
                .get::<gst_webrtc::WebRTCSessionDescription>()
                .unwrap();
            answerer_weak
                .upgrade()
                .unwrap()
                .emit_by_name::<()>("set-local-description", &[&answer, &None::<gst::Promise>]);
            offerer_weak
                .upgrade()
                .unwrap()
                .emit_by_name::<()>("set-remote-description", &[&answer, &None::<gst::Promise>]);
        });
        answerer.emit_by_name::<()>("create-answer", &[&None::<gst::Structure>, &promise]);
    });
    offerer.emit_by_name::<()>("create-offer", &[&None::<gst::Structure>, &promise]);

    let (w, h) =
        frame_rx.recv_timeout(Duration::from_secs(10)).expect("a decoded VP8 frame within 10 s");
    println!(
        "two bare webrtcbins: create-offer -> first decoded frame {} ms",
        started.elapsed().as_millis()
    );
    assert_eq!((w, h), (320, 240));
    pipeline.set_state(gst::State::Null).unwrap();
}
