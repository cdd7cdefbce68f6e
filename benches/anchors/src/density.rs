//! The density modes of the anchor (`call-bench --density` runs them, one process each):
//!
//! - `--density-producer --dimension 480p|240p --bitrate BPS`: gst-webrtc-signalling-server
//!   in-process and one `webrtcsink` (VP8 + Opus, congestion control off at BPS) fed a
//!   clock-stamped 15 fps test source and a tone; prints `READY ws://127.0.0.1:PORT` once
//!   registered; on `start`/`stop` on stdin prints `DENSITY-PRODUCER {json}` (the frames its
//!   source captured in the window). Serves until killed.
//! - `--density-consumer URI`: one `webrtcsrc` connecting to the first producer, reading the
//!   stamps of the decoded video; the load protocol of `measure::serve_load_window`.

use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use gst::prelude::*;

use crate::measure::{self, Arrivals, LoadResult};

/// `--density-producer`: serves until killed.
pub fn producer(dimension: &str, bitrate: u32) -> Result<()> {
    let (width, height) = match dimension {
        "480p" => (640, 480),
        "240p" => (320, 240),
        other => bail!("--dimension {other}: 480p or 240p"),
    };
    let port = crate::signalling_server()?;
    let uri = format!("ws://127.0.0.1:{port}");
    let pipeline = gst::Pipeline::with_name("producer");
    let sink = gst::ElementFactory::make("webrtcsink").build()?;
    sink.set_property("video-caps", gst::Caps::builder("video/x-vp8").build());
    sink.set_property("audio-caps", gst::Caps::builder("audio/x-opus").build());
    sink.set_property("stun-server", None::<String>);
    // A fixed bitrate, as wilddogcall sends, instead of the congestion controller's ramp.
    sink.set_property_from_str("congestion-control", "disabled");
    sink.set_property("start-bitrate", bitrate);
    let signaller = sink.property::<gst::glib::Object>("signaller");
    signaller.set_property("uri", &uri);
    pipeline.add(&sink)?;
    let sent = Arc::new(AtomicU64::new(0));
    let video =
        measure::clock_stamped_video_source(pipeline.upcast_ref(), width, height, sent.clone())?;
    video.link(&sink)?;
    let audio = measure::audio_source(pipeline.upcast_ref())?;
    audio.link(&sink)?;
    pipeline.set_state(gst::State::Playing)?;
    // Let the producer register with the signalling server.
    std::thread::sleep(Duration::from_millis(1500));
    println!("READY {uri}");
    std::io::stdout().flush()?;
    let mut started = Instant::now();
    let mut sent0 = 0;
    for line in std::io::stdin().lock().lines() {
        match line?.trim() {
            "start" => {
                sent0 = sent.load(Ordering::Relaxed);
                started = Instant::now();
            }
            "stop" => {
                let result = LoadResult {
                    frames_sent: sent.load(Ordering::Relaxed) - sent0,
                    secs: started.elapsed().as_secs_f64(),
                    ..LoadResult::default()
                };
                println!("DENSITY-PRODUCER {}", serde_json::to_string(&result)?);
                std::io::stdout().flush()?;
            }
            _ => {}
        }
    }
    // Stdin closed: the run is over.
    let _ = pipeline.set_state(gst::State::Null);
    Ok(())
}

/// `--density-consumer URI`.
pub fn consumer(uri: &str) -> Result<()> {
    let pipeline = gst::Pipeline::with_name("consumer");
    let src = gst::ElementFactory::make("webrtcsrc").build()?;
    src.set_property("stun-server", None::<String>);
    let signaller = src.property::<gst::glib::Object>("signaller");
    signaller.set_property("uri", format!("{uri}?connect-to-first-producer=true"));
    pipeline.add(&src)?;
    let arrivals = Arc::new(Mutex::new(Arrivals::default()));
    let pipeline_weak = pipeline.downgrade();
    let arrivals2 = arrivals.clone();
    src.connect_pad_added(move |_, pad| {
        let Some(pipeline) = pipeline_weak.upgrade() else { return };
        let linked = if pad.name().starts_with("video") {
            measure::clock_stamp_reader(pipeline.upcast_ref(), arrivals2.clone())
                .and_then(|sink| Ok(pad.link(&sink).map(|_| ())?))
        } else {
            // Played, as our callers play theirs: decoded (webrtcsrc passes Opus through to
            // a sink that takes it, and the consumers then decoded no audio at all).
            measure::discard_decoded_audio(pipeline.upcast_ref(), pad)
        };
        if let Err(e) = linked {
            eprintln!("cannot link {}: {e}", pad.name());
        }
    });
    let failed: Arc<Mutex<Option<String>>> = Arc::default();
    let noted = failed.clone();
    pipeline.bus().context("pipeline without bus")?.set_sync_handler(move |_, msg| {
        if let gst::MessageView::Error(e) = msg.view() {
            noted
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert(format!("error: {}", e.error()));
        }
        gst::BusSyncReply::Drop
    });
    pipeline.set_state(gst::State::Playing)?;
    // A consumer captures nothing: the producer counts the frames sent.
    let sent = Arc::new(AtomicU64::new(0));
    measure::serve_load_window(&arrivals, &sent, Duration::from_secs(90), || {
        failed.lock().unwrap_or_else(|e| e.into_inner()).clone()
    })?;
    let _ = pipeline.set_state(gst::State::Null);
    Ok(())
}
