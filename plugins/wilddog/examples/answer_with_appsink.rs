//! Answers Wilddog calls and processes the decoded remote video with `appsink`: the way a
//! Rust media server embeds the plugin (static registration, the typed `WilddogCall` API).
//!
//! ```text
//! cargo run -p gst-plugin-wilddog --example answer_with_appsink -- \
//!     ws://127.0.0.1:8080/ws wilddog-dev "$BOB_TOKEN" [127.0.0.1]
//! ```
//! Then call `bob` from any client. Every decoded frame's size is counted; each call's
//! events are printed. Ctrl-C to stop.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use gst::prelude::*;
use gstwilddog::WilddogCall;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [server, app_id, token, rest @ ..] = args.as_slice() else {
        eprintln!("usage: answer_with_appsink SERVER_URL APP_ID TOKEN [ICE_LOCAL_ADDRESSES]");
        std::process::exit(2);
    };
    gst::init()?;
    gstwilddog::plugin_register_static()?;

    let pipeline = gst::Pipeline::new();
    let call = WilddogCall::new(Some("call"));
    call.set_property("server", server);
    call.set_property("app-id", app_id);
    call.set_property("token", token);
    call.set_property("answer", gstwilddog::AnswerPolicy::Manual);
    if let Some(addresses) = rest.first() {
        call.set_property("ice-local-addresses", addresses);
    }
    pipeline.add(&call)?;

    // The policy is ours: accept everyone, and say who called.
    call.connect_called(|call, incoming| {
        println!(
            "called by {} (data {:?}, conversation {})",
            incoming.remote_uid, incoming.user_data, incoming.conversation_id
        );
        call.accept();
    });
    call.connect_first_frame(|_, f| {
        println!("first frame {}x{} after {} ms", f.width, f.height, f.elapsed_ms)
    });
    call.connect_closed(|_, reason| println!("closed: {reason}"));
    call.connect_error(|_, code, msg| eprintln!("wilddog error {code}: {msg}"));
    call.connect_stats(|_, stats| println!("stats: {stats}"));

    // Decoded frames into an appsink per call; audio is dropped.
    let frames = Arc::new(AtomicU64::new(0));
    let pipeline_weak = pipeline.downgrade();
    call.connect_pad_added(move |_, pad| {
        let Some(pipeline) = pipeline_weak.upgrade() else { return };
        let sink: gst::Element = if pad.name() == "video_src" {
            let frames = frames.clone();
            gst_app::AppSink::builder()
                .caps(&gst::Caps::builder("video/x-raw").field("format", "RGBA").build())
                .sync(false)
                .callbacks(
                    gst_app::AppSinkCallbacks::builder()
                        .new_sample(move |sink| {
                            let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                            let buffer = sample.buffer().ok_or(gst::FlowError::Error)?;
                            let map = buffer.map_readable().map_err(|_| gst::FlowError::Error)?;
                            // Here a media server would analyse, re-encode or forward the pixels.
                            let n = frames.fetch_add(1, Ordering::Relaxed) + 1;
                            if n.is_multiple_of(30) {
                                println!("{n} frames, last one {} bytes of RGBA", map.size());
                            }
                            Ok(gst::FlowSuccess::Ok)
                        })
                        .build(),
                )
                .build()
                .upcast()
        } else {
            match gst::ElementFactory::make("fakesink").property("sync", false).build() {
                Ok(s) => s,
                Err(_) => return,
            }
        };
        // RGBA for the appsink: a converter in front (the element outputs what the decoder gives).
        let convert = match gst::ElementFactory::make(if pad.name() == "video_src" {
            "videoconvert"
        } else {
            "queue"
        })
        .build()
        {
            Ok(c) => c,
            Err(_) => return,
        };
        if pipeline.add_many([&convert, &sink]).is_err() || convert.link(&sink).is_err() {
            return;
        }
        let _ = convert.sync_state_with_parent();
        let _ = sink.sync_state_with_parent();
        if let Some(sinkpad) = convert.static_pad("sink") {
            let _ = pad.link(&sinkpad);
        }
    });

    pipeline.set_state(gst::State::Playing)?;
    let bus = pipeline.bus().ok_or("no bus")?;
    for msg in bus.iter_timed(gst::ClockTime::NONE) {
        match msg.view() {
            gst::MessageView::Error(e) => {
                eprintln!("error: {} ({:?})", e.error(), e.details());
                break;
            }
            gst::MessageView::Eos(_) => break,
            _ => {}
        }
    }
    pipeline.set_state(gst::State::Null)?;
    Ok(())
}
