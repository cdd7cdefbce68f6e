//! Benchmark anchor: gst-plugins-rs `webrtcsink` -> `webrtcsrc` through
//! `gst-webrtc-signalling-server` (all in this process), with the capture caps, stamping and
//! measurements of `call-bench` (whose `measure.rs` this includes).
//!
//! ```text
//! webrtcsink-anchor [--calls N] [--call-secs S]
//! webrtcsink-anchor --network [--secs S]
//! webrtcsink-anchor --density-producer --dimension 480p|240p --bitrate BPS
//! webrtcsink-anchor --density-consumer URI
//! ```
//!
//! `--network` (run by `call-bench --network`, on a shaped link): `congestion-control=gcc`
//! (`rtpgccbwe`, registered from gst-plugin-rtp), camera-like content, one session each way;
//! prints one `NET-RESULT {json}` line for the forward session (see call-bench's
//! `netmeasure.rs`).
//!
//! The density modes (module `density`) are the anchor of `call-bench --density`.
//!
//! Run by `call-bench --anchor-bin …` inside its private network namespace: these elements
//! cannot be told which local addresses to gather, so the namespace holds a veth pair with
//! 127.0.0.2 (libnice skips interfaces flagged loopback). Prints one `BENCH-RESULT {json}`
//! line.
//!
//! The producer (`webrtcsink`, stamped 640x480@15 test video + test audio, VP8 + Opus) runs
//! all along; each measured "call" is a new consumer pipeline (`webrtcsrc` connecting to the
//! first producer). Setup = consumer pipeline PLAYING -> its first decoded video frame.

#[path = "../../call-bench/src/measure.rs"]
mod measure;
#[path = "../../call-bench/src/netmeasure.rs"]
mod netmeasure;

mod density;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use gst::prelude::*;

use measure::{Arrivals, ScenarioResult, Stamper};

const FIRST_FRAME_TIMEOUT: Duration = Duration::from_secs(20);

pub(crate) fn signalling_server() -> Result<u16> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let Ok(rt) =
            tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()
        else {
            return;
        };
        rt.block_on(async move {
            use gst_plugin_webrtc_signalling::handlers::Handler;
            use gst_plugin_webrtc_signalling::server::Server;
            let server = Server::spawn(Handler::new);
            let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
                Ok(l) => l,
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                    return;
                }
            };
            let _ = tx.send(listener.local_addr().map(|a| a.port()).map_err(|e| e.to_string()));
            while let Ok((stream, _)) = listener.accept().await {
                let mut server = server.clone();
                tokio::spawn(async move { server.accept_async(stream).await });
            }
        });
    });
    rx.recv_timeout(Duration::from_secs(10))
        .context("signalling server did not start")?
        .map_err(|e| anyhow::anyhow!("signalling server cannot listen: {e}"))
}

fn producer(uri: &str, stamper: &Arc<Stamper>) -> Result<gst::Pipeline> {
    let pipeline = gst::Pipeline::with_name("producer");
    let sink = gst::ElementFactory::make("webrtcsink").build()?;
    sink.set_property("video-caps", gst::Caps::builder("video/x-vp8").build());
    sink.set_property("audio-caps", gst::Caps::builder("audio/x-opus").build());
    sink.set_property("stun-server", None::<String>);
    // A fixed 500 kbps, as wilddogcall sends at 480p, instead of the congestion controller's
    // ramp.
    sink.set_property_from_str("congestion-control", "disabled");
    sink.set_property("start-bitrate", 500_000u32);
    let signaller = sink.property::<gst::glib::Object>("signaller");
    signaller.set_property("uri", uri);
    pipeline.add(&sink)?;
    let video = measure::stamped_video_source(pipeline.upcast_ref(), stamper)?;
    video.link(&sink)?;
    let audio = measure::audio_source(pipeline.upcast_ref())?;
    audio.link(&sink)?;
    Ok(pipeline)
}

struct Consumer {
    pipeline: gst::Pipeline,
    arrivals: Arc<Mutex<Arrivals>>,
}

impl Drop for Consumer {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

fn consumer(uri: &str, stamper: &Arc<Stamper>) -> Result<(f64, Consumer)> {
    let pipeline = gst::Pipeline::with_name("consumer");
    let src = gst::ElementFactory::make("webrtcsrc").build()?;
    src.set_property("stun-server", None::<String>);
    let signaller = src.property::<gst::glib::Object>("signaller");
    signaller.set_property("uri", format!("{uri}?connect-to-first-producer=true"));
    pipeline.add(&src)?;
    let arrivals = Arc::new(Mutex::new(Arrivals::default()));
    let pipeline_weak = pipeline.downgrade();
    let (stamper2, arrivals2) = (stamper.clone(), arrivals.clone());
    src.connect_pad_added(move |_, pad| {
        let Some(pipeline) = pipeline_weak.upgrade() else { return };
        let linked = if pad.name().starts_with("video") {
            measure::stamp_reader(pipeline.upcast_ref(), stamper2.clone(), arrivals2.clone())
                .and_then(|sink| Ok(pad.link(&sink).map(|_| ())?))
        } else {
            measure::discard(pipeline.upcast_ref(), pad)
        };
        if let Err(e) = linked {
            eprintln!("cannot link {}: {e}", pad.name());
        }
    });
    let t0 = Instant::now();
    pipeline.set_state(gst::State::Playing)?;
    let c = Consumer { pipeline, arrivals };
    let Some(first) = measure::wait_first_frame(&c.arrivals, FIRST_FRAME_TIMEOUT) else {
        let err = c
            .pipeline
            .bus()
            .and_then(|b| b.pop_filtered(&[gst::MessageType::Error]).map(|m| format!("{m:?}")));
        bail!("webrtcsrc: no decoded frame within {FIRST_FRAME_TIMEOUT:?}; bus error: {err:?}");
    };
    Ok((first.duration_since(t0).as_secs_f64() * 1000.0, c))
}

/// A producer for the shaped-network benchmark: `congestion-control=gcc` (webrtcsink's
/// default) with its range set to ours (500 kbit/s of video at most, starting there; its
/// defaults are 2 Mbit/s to start and 8 Mbit/s at most), camera-like content. Its sessions'
/// webrtcbins go into `webrtcbins` (for what they send).
fn network_producer(uri: &str, webrtcbins: Arc<Mutex<Vec<gst::Element>>>) -> Result<gst::Pipeline> {
    let pipeline = gst::Pipeline::new();
    let sink = gst::ElementFactory::make("webrtcsink").build()?;
    sink.set_property("video-caps", gst::Caps::builder("video/x-vp8").build());
    sink.set_property("audio-caps", gst::Caps::builder("audio/x-opus").build());
    sink.set_property("stun-server", None::<String>);
    sink.set_property_from_str("congestion-control", "gcc");
    sink.set_property("start-bitrate", 500_000u32);
    sink.set_property("max-bitrate", 500_000u32);
    let signaller = sink.property::<gst::glib::Object>("signaller");
    signaller.set_property("uri", uri);
    sink.connect("consumer-added", false, move |values| {
        if let Some(Ok(webrtcbin)) = values.get(2).map(|v| v.get::<gst::Element>()) {
            webrtcbins.lock().unwrap_or_else(|e| e.into_inner()).push(webrtcbin);
        }
        None
    });
    pipeline.add(&sink)?;
    let video = netmeasure::camera_like_source(pipeline.upcast_ref())?;
    video.link(&sink)?;
    let audio = measure::audio_source(pipeline.upcast_ref())?;
    audio.link(&sink)?;
    Ok(pipeline)
}

/// A consumer measuring what it receives.
fn network_consumer(uri: &str) -> Result<(gst::Pipeline, Arc<Mutex<netmeasure::Received>>)> {
    let pipeline = gst::Pipeline::new();
    let src = gst::ElementFactory::make("webrtcsrc").build()?;
    src.set_property("stun-server", None::<String>);
    let signaller = src.property::<gst::glib::Object>("signaller");
    signaller.set_property("uri", format!("{uri}?connect-to-first-producer=true"));
    pipeline.add(&src)?;
    let (sink, received) = netmeasure::receiver(pipeline.upcast_ref())?;
    let weak = pipeline.downgrade();
    src.connect_pad_added(move |_, pad| {
        let Some(pipeline) = weak.upgrade() else { return };
        let linked = if pad.name().starts_with("video") {
            pad.link(&sink).map(|_| ()).map_err(anyhow::Error::from)
        } else {
            measure::discard(pipeline.upcast_ref(), pad)
        };
        if let Err(e) = linked {
            eprintln!("cannot link {}: {e}", pad.name());
        }
    });
    pipeline.set_state(gst::State::Playing)?;
    Ok((pipeline, received))
}

/// `--network`: one session each way on the shaped link, the forward one measured.
fn network(secs: f64) -> Result<()> {
    let forward_bins: Arc<Mutex<Vec<gst::Element>>> = Arc::default();
    let port = signalling_server()?;
    let uri = format!("ws://127.0.0.1:{port}");
    let forward = network_producer(&uri, forward_bins.clone())?;
    forward.set_state(gst::State::Playing)?;
    let reverse_port = signalling_server()?;
    let reverse_uri = format!("ws://127.0.0.1:{reverse_port}");
    let reverse = network_producer(&reverse_uri, Arc::default())?;
    reverse.set_state(gst::State::Playing)?;
    std::thread::sleep(Duration::from_millis(1500));
    let (consumer, received) = network_consumer(&uri)?;
    let (reverse_consumer, _) = network_consumer(&reverse_uri)?;
    if !netmeasure::wait_first_frame(&received, Duration::from_secs(40)) {
        bail!("webrtcsrc: no decoded frame within 40 s");
    }
    let sent = || {
        let bins = forward_bins.lock().unwrap_or_else(|e| e.into_inner()).clone();
        bins.last().and_then(netmeasure::outbound_bytes)
    };
    let mut r = netmeasure::measure("webrtcsink", secs, &received, sent);
    r.notes = format!(
        "webrtcsink congestion-control=gcc (start and max 500 kbit/s), one session each way; {}",
        r.notes
    );
    r.print();
    for p in [&consumer, &reverse_consumer, &forward, &reverse] {
        let _ = p.set_state(gst::State::Null);
    }
    Ok(())
}

fn main() -> Result<()> {
    let mut calls = 20usize;
    let mut call_secs = 10.0f64;
    let mut network_secs = None;
    let mut density_producer = false;
    let mut density_consumer: Option<String> = None;
    let mut dimension = "480p".to_owned();
    let mut bitrate = 500_000u32;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--calls" => calls = args.next().context("--calls N")?.parse()?,
            "--call-secs" => call_secs = args.next().context("--call-secs S")?.parse()?,
            "--network" => network_secs = network_secs.or(Some(30.0)),
            "--secs" => network_secs = Some(args.next().context("--secs S")?.parse()?),
            "--density-producer" => density_producer = true,
            "--density-consumer" => {
                density_consumer = Some(args.next().context("--density-consumer URI")?)
            }
            "--dimension" => dimension = args.next().context("--dimension 480p|240p")?,
            "--bitrate" => bitrate = args.next().context("--bitrate BPS")?.parse()?,
            other => bail!("unknown argument {other}"),
        }
    }
    gst::init()?;
    gstrswebrtc::plugin_register_static()?;
    if let Some(secs) = network_secs {
        if gst::ElementFactory::find("rtpgccbwe").is_none() {
            gstrsrtp::plugin_register_static()?;
        }
        network(secs)?;
        std::process::exit(0);
    }
    if density_producer || density_consumer.is_some() {
        let result = match &density_consumer {
            Some(uri) => density::consumer(uri),
            None => density::producer(&dimension, bitrate),
        };
        if let Err(e) = &result {
            println!("FAILED {e:#}");
        }
        // Do not run GStreamer's and OpenSSL's exit handlers under still-running threads.
        std::process::exit(if result.is_ok() { 0 } else { 1 });
    }
    let port = signalling_server()?;
    let uri = format!("ws://127.0.0.1:{port}");
    let stamper = Stamper::new();
    let forward_producer = producer(&uri, &stamper)?;
    forward_producer.set_state(gst::State::Playing)?;
    // The reverse direction of the long call, on a second signalling server (so that
    // "connect to the first producer" finds the right one): a call sends both ways, like
    // the other scenarios.
    let reverse_port = signalling_server()?;
    let reverse_uri = format!("ws://127.0.0.1:{reverse_port}");
    let reverse_stamper = Stamper::new();
    let reverse_producer = producer(&reverse_uri, &reverse_stamper)?;
    reverse_producer.set_state(gst::State::Playing)?;
    // Let the producers register with the signalling servers.
    std::thread::sleep(Duration::from_millis(1500));

    // The long call first (also the warm-up).
    let (_, c) = consumer(&uri, &stamper)?;
    let (_, reverse) = consumer(&reverse_uri, &reverse_stamper)?;
    let (g2g, unreadable, cpu, rss, cpu_by_thread) = measure::measure_window_threads(
        &c.arrivals,
        Duration::from_secs(1),
        Duration::from_secs_f64(call_secs),
    );
    drop(c);
    drop(reverse);
    let _ = reverse_producer.set_state(gst::State::Null);
    drop(reverse_producer);
    std::thread::sleep(Duration::from_millis(300));
    let mut setup = Vec::new();
    for _ in 0..calls {
        let (ms, c) = consumer(&uri, &stamper)?;
        setup.push(ms);
        drop(c);
        // webrtcsink tears the old session down asynchronously.
        std::thread::sleep(Duration::from_millis(300));
    }
    ScenarioResult {
        name: "webrtcsink".into(),
        setup_definition: "consumer (webrtcsrc) pipeline PLAYING -> first decoded video frame; producer (webrtcsink) already registered".into(),
        setup_ms: setup,
        g2g_ms: g2g,
        g2g_unreadable: unreadable,
        call_secs,
        cpu_s_per_call_min: cpu,
        rss_mib: rss,
        cpu_by_thread,
        setup_phases_ms: Vec::new(),
        notes: "webrtcsink + webrtcsrc + gst-webrtc-signalling-server in one process; the long call (CPU, memory, glass-to-glass) runs two producer->consumer sessions, one each way (two signalling servers), setup calls one consumer at a time; element defaults except caps, stun-server none, congestion-control disabled at 500 kbps".into(),
    }
    .print();
    let _ = forward_producer.set_state(gst::State::Null);
    std::process::exit(0);
}
