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
