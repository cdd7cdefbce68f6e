//! A caller element posts EOS when its one call is over (docs/elements.md), also in a
//! gst-launch pipeline whose src branches wait for pads the call never exposed
//! (`c.video_src ! queue ! fakesink`: gst-launch links them when the pads appear). The
//! pipeline posts EOS only once every sink had one, so a call that failed before any remote
//! stream (no candidate: 41004) must still end those branches.

mod common;

use std::time::{Duration, Instant};

use common::{Seen, TestServer};
use gst::prelude::*;

const T: Duration = Duration::from_secs(20);

/// The README's gst-launch caller, as `gst-launch-1.0` builds it (delayed links for the src
/// branches), gathering on an address that is not there.
fn launch_caller(server: &TestServer) -> gst::Pipeline {
    common::init();
    let description = format!(
        "wilddogcall name=c server={} app-id={} token={} remote-uid=bob dimension=240p \
         ice-local-addresses=10.9.9.9 \
         videotestsrc is-live=true ! c.video_sink audiotestsrc is-live=true ! c.audio_sink \
         c.video_src ! queue ! fakesink c.audio_src ! queue ! fakesink",
        server.url,
        wilddog_server::DEV_APP_ID,
        server.token("alice"),
    );
    gst::parse::launch(&description).unwrap().downcast::<gst::Pipeline>().unwrap()
}

#[test]
fn failed_call_of_a_launch_line_caller_ends_with_eos() {
    if !common::enter_netns("failed_call_of_a_launch_line_caller_ends_with_eos") {
        return;
    }
    let server = TestServer::start();
    let mut bob = common::Endpoint::new(&server, common::EndpointConfig::new("bob"));
    bob.play();
    bob.wait_for("connected", T, |s| *s == Seen::Signaling(true));
    let alice = launch_caller(&server);
    let bus = alice.bus().unwrap();
    alice.set_state(gst::State::Playing).unwrap();
    let deadline = Instant::now() + T;
    let mut error_at = None;
    let mut eos_at = None;
    while eos_at.is_none() && Instant::now() < deadline {
        let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(100)) else { continue };
        match msg.view() {
            gst::MessageView::Element(e)
                if e.structure().is_some_and(|s| s.name() == "wilddog-error") =>
            {
                let s = e.structure().unwrap();
                println!("{s}");
                assert_eq!(s.get::<u32>("code").unwrap(), 41004);
                error_at = Some(Instant::now());
            }
            gst::MessageView::Eos(_) => eos_at = Some(Instant::now()),
            gst::MessageView::Error(e) => panic!("error: {}", e.error()),
            _ => {}
        }
    }
    let _ = alice.set_state(gst::State::Null);
    let error_at = error_at.expect("the call fails with 41004");
    let eos_at = eos_at.expect("the pipeline posts EOS after the failed call");
    println!("EOS {:?} after the error", eos_at.duration_since(error_at));
}
