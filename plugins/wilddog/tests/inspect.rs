//! The plugin as users meet it: `gst-inspect-1.0` lists its three elements from the built
//! shared library, and the elements refuse bad settings with clear errors.

mod common;

use std::process::Command;

use gst::prelude::*;

fn inspect(args: &[&str]) -> String {
    let out = common::with_built_plugin(Command::new("gst-inspect-1.0"), "inspect")
        .args(args)
        .output()
        .expect("gst-inspect-1.0 runs (gstreamer1.0-tools)");
    assert!(
        out.status.success(),
        "gst-inspect-1.0 {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn gst_inspect_lists_the_three_elements() {
    let text = inspect(&["wilddog"]);
    for element in ["wilddogcall", "wilddogsink", "wilddogsrc"] {
        assert!(text.contains(element), "gst-inspect-1.0 wilddog does not list {element}:\n{text}");
    }
    // The project's license (LICENSE: MIT), in GStreamer's spelling of it; it said MPL.
    assert!(
        text.lines().any(|l| l.split_whitespace().eq(["License", "MIT/X11"])),
        "gst-inspect-1.0 wilddog names another license:\n{text}"
    );
    let call = inspect(&["wilddogcall"]);
    for needle in [
        "server",
        "app-id",
        "token",
        "remote-uid",
        "user-data",
        "answer",
        "call-timeout",
        "dimension",
        "max-fps",
        "min-bitrate",
        "max-bitrate",
        "video-codec",
        "ice-local-addresses",
        "latency",
        "service",
        "endpoint of a pool",
        "(3): busy",
        "conversation-id",
        "state",
        "video_sink",
        "audio_sink",
        "video_src",
        "audio_src",
        "wilddog-called",
        "wilddog-response",
        "wilddog-stream-received",
        "wilddog-first-frame",
        "wilddog-closed",
        "wilddog-stats",
        "wilddog-error",
        "\"accept\"",
        "\"reject\"",
        "\"close\"",
    ] {
        assert!(call.contains(needle), "gst-inspect-1.0 wilddogcall lacks {needle}");
    }
    assert!(inspect(&["wilddogsink"]).contains("conversation"));
    assert!(inspect(&["wilddogsink"]).contains("endpoint of a pool"));
    assert!(inspect(&["wilddogsrc"]).contains("endpoint of a pool"));
    assert!(inspect(&["wilddogsrc"]).contains("video_src"));
}

fn start_fails_with(call: &gstwilddog::WilddogCall) -> String {
    let pipeline = gst::Pipeline::new();
    pipeline.add(call).unwrap();
    let pad = call.request_pad_simple("video_sink").unwrap();
    let src = gst::ElementFactory::make("videotestsrc").build().unwrap();
    pipeline.add(&src).unwrap();
    src.static_pad("src").unwrap().link(&pad).unwrap();
    assert!(
        pipeline.set_state(gst::State::Paused).is_err(),
        "the element started with bad settings"
    );
    let bus = pipeline.bus().unwrap();
    let msg = bus
        .timed_pop_filtered(gst::ClockTime::from_seconds(5), &[gst::MessageType::Error])
        .expect("an error message");
    let gst::MessageView::Error(e) = msg.view() else { unreachable!() };
    let text = e.error().to_string();
    let _ = pipeline.set_state(gst::State::Null);
    text
}

#[test]
fn properties_are_validated() {
    common::init();
    let call = gstwilddog::WilddogCall::new(None);
    // Defaults are the original's.
    assert_eq!(call.property::<String>("dimension"), "480p");
    assert_eq!(call.property::<u32>("max-fps"), 15);
    assert_eq!(call.property::<u32>("call-timeout"), 30_000);
    assert_eq!(call.state(), "idle");
    assert_eq!(call.conversation_id(), None);
    call.set_property("server", "ws://127.0.0.1:9/ws");
    call.set_property("app-id", "wilddog-dev");
    call.set_property("token", "t");
    call.set_property("dimension", "4k");
    let err = start_fails_with(&call);
    assert!(err.contains("unknown dimension `4k`"), "{err}");

    let call = gstwilddog::WilddogCall::new(None);
    call.set_property("dimension", "720p");
    let err = start_fails_with(&call);
    assert!(err.contains("`server` must be set"), "{err}");

    let call = gstwilddog::WilddogCall::new(None);
    call.set_property("server", "ws://127.0.0.1:9/ws");
    call.set_property("app-id", "wilddog-dev");
    call.set_property("token", "t");
    call.set_property("min-bitrate", 900u32);
    call.set_property("max-bitrate", 300u32);
    let err = start_fails_with(&call);
    assert!(err.contains("min-bitrate"), "{err}");

    let call = gstwilddog::WilddogCall::new(None);
    call.set_property("server", "ws://127.0.0.1:9/ws");
    call.set_property("app-id", "wilddog-dev");
    call.set_property("token", "t");
    call.set_property("ice-local-addresses", "localhost");
    let err = start_fails_with(&call);
    assert!(err.contains("ice-local-addresses"), "{err}");
}

#[test]
fn unreachable_server_is_an_element_error_not_a_hang() {
    if !common::enter_netns("unreachable_server_is_an_element_error_not_a_hang") {
        return;
    }
    common::init();
    // Nothing listens on this port inside the fresh namespace.
    let pipeline = gst::parse::launch(
        "videotestsrc is-live=true ! wilddogcall name=c server=ws://127.0.0.1:9/ws app-id=wilddog-dev token=t remote-uid=bob",
    )
    .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    let msg = bus
        .timed_pop_filtered(gst::ClockTime::from_seconds(15), &[gst::MessageType::Error])
        .expect("an error within 15 s");
    let gst::MessageView::Error(e) = msg.view() else { unreachable!() };
    assert!(e.error().to_string().contains("cannot reach the signaling server"), "{}", e.error());
    pipeline.set_state(gst::State::Null).unwrap();
}

#[test]
fn wilddogsink_without_pads_is_an_error() {
    common::init();
    let sink = gst::parse::launch(
        "wilddogsink conversation=nopads server=ws://127.0.0.1:9/ws app-id=a token=t",
    )
    .unwrap();
    let pipeline = gst::Pipeline::new();
    pipeline.add(&sink).unwrap();
    assert!(pipeline.set_state(gst::State::Paused).is_err());
    let bus = pipeline.bus().unwrap();
    let msg = bus
        .timed_pop_filtered(gst::ClockTime::from_seconds(5), &[gst::MessageType::Error])
        .expect("an error");
    let gst::MessageView::Error(e) = msg.view() else { unreachable!() };
    assert!(e.error().to_string().contains("no pads linked"), "{}", e.error());
    pipeline.set_state(gst::State::Null).unwrap();
}
