//! `wilddogsink` + `wilddogsrc` with one conversation name are one two-way call.

mod common;

use std::sync::mpsc;
use std::time::Duration;

use common::{Endpoint, EndpointConfig, Seen, TestServer};
use gst::prelude::*;

#[test]
fn sink_and_src_halves_make_a_two_way_call() {
    if !common::enter_netns("sink_and_src_halves_make_a_two_way_call") {
        return;
    }
    let server = TestServer::start();
    let mut bob = Endpoint::new(&server, EndpointConfig::new("bob").prop("dimension", "240p"));
    bob.play();
    std::thread::sleep(Duration::from_millis(300));

    let token = server.token("alice");
    let desc = format!(
        "videotestsrc is-live=true ! video/x-raw,width=640,height=480 ! wilddogsink conversation=halves-test \
         server={} app-id=wilddog-dev token={token} remote-uid=bob ice-local-addresses=127.0.0.1 dimension=360p \
         wilddogsrc name=remote conversation=halves-test",
        server.url
    );
    let pipeline = gst::parse::launch(&desc).unwrap().downcast::<gst::Pipeline>().unwrap();
    let remote = pipeline.by_name("remote").unwrap();
    let (tx, rx) = mpsc::channel::<(String, i32, i32)>();
    let weak = pipeline.downgrade();
    remote.connect_pad_added(move |_, pad| {
        let Some(pipeline) = weak.upgrade() else { return };
        let name = pad.name().to_string();
        let tx = tx.clone();
        let sink = gst_app::AppSink::builder()
            .sync(false)
            .callbacks(
                gst_app::AppSinkCallbacks::builder()
                    .new_sample(move |s| {
                        let sample = s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                        let st = sample.caps().unwrap().structure(0).unwrap().to_owned();
                        let _ = tx.send((
                            name.clone(),
                            st.get("width").unwrap_or(0),
                            st.get("height").unwrap_or(0),
                        ));
                        Ok(gst::FlowSuccess::Ok)
                    })
                    .build(),
            )
            .build();
        pipeline.add(&sink).unwrap();
        sink.sync_state_with_parent().unwrap();
        pad.link(&sink.static_pad("sink").unwrap()).unwrap();
    });
    // The call's messages come out of the user's pipeline.
    let bus = pipeline.bus().unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let response = bus
        .timed_pop_filtered(gst::ClockTime::from_seconds(15), &[gst::MessageType::Element])
        .and_then(|m| m.structure().map(|s| s.to_string()));
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let mut video = None;
    while std::time::Instant::now() < deadline {
        if let Ok((name, w, h)) = rx.recv_timeout(Duration::from_millis(200))
            && name == "video_src"
        {
            video = Some((w, h));
            break;
        }
    }
    assert_eq!(
        video,
        Some((320, 240)),
        "wilddogsrc did not output bob's 240p video (first message: {response:?})"
    );
    bob.wait_for("alice's 360p video", Duration::from_secs(15), |s| {
        *s == Seen::VideoFrame { width: 480, height: 360 }
    });
    let sink = pipeline
        .iterate_elements()
        .into_iter()
        .flatten()
        .find(|e| e.factory().is_some_and(|f| f.name() == "wilddogsink"))
        .unwrap();
    let call = sink.downcast::<gstwilddog::WilddogSink>().unwrap().call().expect("the shared call");
    assert_eq!(call.state(), "connected");
    assert!(remote.downcast_ref::<gstwilddog::WilddogSrc>().unwrap().call().is_some());
    pipeline.set_state(gst::State::Null).unwrap();
    bob.wait_for("closed", Duration::from_secs(10), |s| matches!(s, Seen::Closed(_)));
}

/// The documented shape `wilddogsrc ! videoconvert ! autovideosink`: a sink that syncs on
/// the clock and keeps a processing deadline (20 ms by default) needs its live upstream to
/// answer the LATENCY query with a max at least that much above the min. wilddogsrc's bridge
/// answered GstBaseSrc's default, max = min = 0, so the sink warned "Pipeline construction
/// is invalid, please add queues" (and dropped its deadline) when the latency was set.
#[test]
fn halves_answer_a_latency_a_syncing_sink_can_use() {
    if !common::enter_netns("halves_answer_a_latency_a_syncing_sink_can_use") {
        return;
    }
    let server = TestServer::start();
    // Video only, as the line links only wilddogsrc's video_src.
    let mut cfg = EndpointConfig::new("bob").prop("dimension", "240p");
    cfg.send_audio = false;
    let mut bob = Endpoint::new(&server, cfg);
    bob.play();
    std::thread::sleep(Duration::from_millis(300));

    let token = server.token("alice");
    let desc = format!(
        "videotestsrc is-live=true ! wilddogsink conversation=halves-latency server={} \
         app-id=wilddog-dev token={token} remote-uid=bob ice-local-addresses=127.0.0.1 \
         wilddogsrc name=remote conversation=halves-latency ! videoconvert ! fakesink name=out sync=true",
        server.url
    );
    let pipeline = gst::parse::launch(&desc).unwrap().downcast::<gst::Pipeline>().unwrap();
    let rendered = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let count = rendered.clone();
    pipeline.by_name("out").unwrap().static_pad("sink").unwrap().add_probe(
        gst::PadProbeType::BUFFER,
        move |_, _| {
            count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            gst::PadProbeReturn::Ok
        },
    );
    let bus = pipeline.bus().unwrap();
    let mut warnings = Vec::new();
    // What an application does with the bus (gst-launch-1.0 does the same): a latency
    // message makes the pipeline query and configure its latency again.
    let mut handle = |msg: &gst::Message| match msg.view() {
        gst::MessageView::Latency(_) => {
            let _ = pipeline.recalculate_latency();
        }
        gst::MessageView::Warning(w) => warnings.push(format!("{} ({:?})", w.error(), w.debug())),
        gst::MessageView::Error(e) => panic!("error: {} ({:?})", e.error(), e.debug()),
        _ => {}
    };
    pipeline.set_state(gst::State::Playing).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while rendered.load(std::sync::atomic::Ordering::Relaxed) < 30 {
        assert!(std::time::Instant::now() < deadline, "the sink got no 30 frames of bob's video");
        if let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(100)) {
            handle(&msg);
        }
    }

    // wilddogsrc's own answer: live, with room for the sink's deadline.
    let remote = pipeline.by_name("remote").unwrap();
    let mut q = gst::query::Latency::new();
    assert!(remote.static_pad("video_src").unwrap().query(&mut q), "video_src answers LATENCY");
    let (live, min, max) = q.result();
    println!("wilddogsrc video_src: live={live} min={min} max={max:?}");
    assert!(live, "wilddogsrc is a live source");
    assert!(
        max.is_none_or(|max| max >= min + gst::ClockTime::from_mseconds(20)),
        "wilddogsrc's max latency {max:?} leaves no room for a sink's 20 ms processing deadline over min {min}"
    );
    // The whole pipeline's: live, and a latency that can be configured (min <= max).
    let mut q = gst::query::Latency::new();
    assert!(pipeline.query(&mut q), "the pipeline answers LATENCY");
    let (live, min, max) = q.result();
    println!("pipeline: live={live} min={min} max={max:?}");
    assert!(live && max.is_none_or(|max| min <= max), "live={live} min={min} max={max:?}");
    while let Some(msg) = bus.pop() {
        handle(&msg);
    }
    assert!(warnings.is_empty(), "the pipeline warned: {warnings:?}");

    pipeline.set_state(gst::State::Null).unwrap();
    bob.wait_for("closed", Duration::from_secs(10), |s| matches!(s, Seen::Closed(_)));
}

/// An answering `wilddogsrc`, kept across calls (a `gst-launch-1.0` line links its pads
/// once): two callers in a row, and the second caller's video comes out of the same pad,
/// linked, at its own size, with nothing of the first call in it and nothing on the bus.
#[test]
fn an_answering_wilddogsrc_kept_across_calls_shows_each_caller() {
    if !common::enter_netns("an_answering_wilddogsrc_kept_across_calls_shows_each_caller") {
        return;
    }
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Instant;
    const T: Duration = Duration::from_secs(15);
    let server = TestServer::start();
    common::init();
    let criticals = common::count_gstreamer_criticals();
    let bob = gst::parse::launch(&format!(
        "wilddogsrc name=remote conversation=kept-src server={} app-id=wilddog-dev token={} \
           answer=accept ice-local-addresses=127.0.0.1 \
         remote.video_src ! queue ! videoconvert ! appsink name=video sync=false \
         remote.audio_src ! queue ! audioconvert ! appsink name=audio sync=false",
        server.url,
        server.token("bob"),
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let remote = bob.by_name("remote").unwrap();
    let frames: Arc<Mutex<Vec<(i32, i32)>>> = Default::default();
    let seen = frames.clone();
    bob.by_name("video").unwrap().downcast::<gst_app::AppSink>().unwrap().set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                let s = sample.caps().and_then(|c| c.structure(0).map(|s| s.to_owned()));
                let size = s.map(|s| (s.get("width").unwrap_or(0), s.get("height").unwrap_or(0)));
                seen.lock().unwrap_or_else(|e| e.into_inner()).push(size.unwrap_or((0, 0)));
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    let audio_buffers = Arc::new(AtomicU64::new(0));
    common::count_samples(&bob, "audio", audio_buffers.clone());
    bob.set_state(gst::State::Playing).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let call = remote.downcast_ref::<gstwilddog::WilddogSrc>().unwrap().call().expect("the call");
    let wait = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = Instant::now() + T;
        while !done() {
            assert!(
                Instant::now() < deadline,
                "bob: no {what} within {T:?} (frames: {:?})",
                frames.lock().unwrap_or_else(|e| e.into_inner())
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };

    for (caller, dimension, size) in [("alice", "240p", (320, 240)), ("carol", "120p", (160, 120))]
    {
        let audio_before = audio_buffers.load(Ordering::Relaxed);
        let frames_before = frames.lock().unwrap().len();
        let mut c = Endpoint::new(
            &server,
            EndpointConfig::new(caller).calling("bob").prop("dimension", dimension),
        );
        c.play();
        c.wait_for("ACCEPTED", T, |s| *s == Seen::Response("ACCEPTED".into()));
        let this_call = || frames.lock().unwrap()[frames_before..].to_vec();
        wait(&format!("{caller}'s {size:?} frames"), &|| {
            this_call().iter().filter(|f| **f == size).count() >= 10
        });
        wait(&format!("{caller}'s audio"), &|| {
            audio_buffers.load(Ordering::Relaxed) >= audio_before + 10
        });
        // Only this caller's video since the call began: nothing of the last one.
        let got = this_call();
        println!("{caller}: {} frames, first {:?}", got.len(), got.first());
        assert!(got.iter().all(|f| *f == size), "{caller}'s call showed {got:?}");
        c.call.close();
        c.wait_for("EOS", T, |s| *s == Seen::PipelineEos);
        drop(c);
        // The pads stay, linked, for the next call.
        common::assert_src_pads_kept(call.upcast_ref(), &remote, caller);
    }
    common::assert_kept_pipeline_clean(&bob, &criticals);
}
