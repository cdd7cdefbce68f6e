//! The two in-process scenarios: a `wilddogcall` call through the real signaling server, and
//! the floor, two bare webrtcbins with SDP passed directly. Both send 640x480@15 VP8 + Opus
//! in both directions, ICE restricted to 127.0.0.1.

use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use gst::prelude::*;
use gstwilddog::{ice, media};

use crate::measure::{self, Arrivals, ScenarioResult, Stamper};

const FIRST_FRAME_TIMEOUT: Duration = Duration::from_secs(20);

/// Settings of one scenario run.
pub struct Plan {
    pub calls: usize,
    pub call_secs: f64,
}

/// Experiment knob (`call-bench --vp8enc-props "threads=1,cpu-used=-16"`, passed to the
/// scenario processes in this environment variable): properties set on every `vp8enc` of
/// our scenarios, to see what the encoder's settings cost.
pub const VP8ENC_PROPS_ENV: &str = "CALL_BENCH_VP8ENC_PROPS";

pub(crate) fn override_vp8enc(pipeline: &gst::Pipeline) {
    let Ok(props) = std::env::var(VP8ENC_PROPS_ENV) else { return };
    let props: Vec<(String, String)> = props
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let set = move |element: &gst::Element| {
        if element.factory().is_some_and(|f| f.name() == "vp8enc") {
            for (k, v) in &props {
                element.set_property_from_str(k, v);
            }
        }
    };
    // A bin added whole (the encoder bin) signals only itself, not what it holds already.
    pipeline.connect_deep_element_added(move |_, _, element| {
        set(element);
        if let Some(bin) = element.downcast_ref::<gst::Bin>() {
            for child in bin.iterate_recurse().into_iter().flatten() {
                set(&child);
            }
        }
    });
}

fn init() -> Result<()> {
    gst::init()?;
    gstwilddog::plugin_register_static()?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// wilddogcall through the real server

pub(crate) struct Server {
    pub(crate) url: String,
    config: wilddog_server::ServerConfig,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    pub(crate) fn start() -> Result<Server> {
        let config = wilddog_server::ServerConfig::development();
        let (addr_tx, addr_rx) = mpsc::channel();
        let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
        let run_config = config.clone();
        let thread = std::thread::spawn(move || {
            let Ok(rt) =
                tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()
            else {
                return;
            };
            rt.block_on(async move {
                let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = addr_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = addr_tx.send(listener.local_addr().map_err(|e| e.to_string()));
                let shutdown = async move {
                    let _ = shutdown_rx.await;
                };
                let _ = wilddog_server::run(listener, run_config, shutdown).await;
            });
        });
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(10))
            .context("the signaling server did not start")?
            .map_err(|e| anyhow!("the signaling server cannot listen: {e}"))?;
        Ok(Server {
            url: format!("ws://{addr}/ws"),
            config,
            shutdown: Some(shutdown_tx),
            thread: Some(thread),
        })
    }

    pub(crate) fn token(&self, uid: &str) -> Result<String> {
        Ok(wilddog_server::mint_token(
            &self.config,
            wilddog_server::config::DEV_APP_ID,
            uid,
            Duration::from_secs(3600),
        )?)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs the development server on 127.0.0.1:0, prints `LISTENING http://ADDR` and serves
/// until the process is killed (`call-bench --serve`, for the Chromium anchor).
pub fn serve_forever() -> Result<()> {
    let server = Server::start()?;
    let base = server.url.trim_end_matches("/ws").replace("ws://", "http://");
    println!("LISTENING {base}");
    use std::io::Write;
    std::io::stdout().flush()?;
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// One call endpoint: stamped test video + test audio into a `wilddogcall`; the remote
/// video's stamps read back, remote audio discarded.
struct Endpoint {
    pipeline: gst::Pipeline,
    stamper: Arc<Stamper>,
    arrivals: Arc<Mutex<Arrivals>>,
}

impl Endpoint {
    /// `remote_stamper`: the other side's stamper, whose frames this side receives.
    fn new(
        server: &Server,
        uid: &str,
        remote_uid: Option<&str>,
        stamper: Arc<Stamper>,
        remote_stamper: Arc<Stamper>,
    ) -> Result<Endpoint> {
        let pipeline = gst::Pipeline::with_name(&format!("pipeline-{uid}"));
        override_vp8enc(&pipeline);
        let call = gstwilddog::WilddogCall::new(Some("call"));
        call.set_property("server", &server.url);
        call.set_property("app-id", wilddog_server::config::DEV_APP_ID);
        call.set_property("token", server.token(uid)?);
        call.set_property("ice-local-addresses", "127.0.0.1");
        call.set_property_from_str("dimension", "480p");
        call.set_property("max-fps", measure::FPS as u32);
        call.set_property_from_str("video-codec", "vp8");
        if let Some(r) = remote_uid {
            call.set_property("remote-uid", r);
        }
        pipeline.add(&call)?;
        let video = measure::stamped_video_source(pipeline.upcast_ref(), &stamper)?;
        let pad = call.request_pad_simple("video_sink").context("no video_sink pad")?;
        video.static_pad("src").context("no src pad")?.link(&pad)?;
        let audio = measure::audio_source(pipeline.upcast_ref())?;
        let pad = call.request_pad_simple("audio_sink").context("no audio_sink pad")?;
        audio.static_pad("src").context("no src pad")?.link(&pad)?;

        let arrivals = Arc::new(Mutex::new(Arrivals::default()));
        let pipeline_weak = pipeline.downgrade();
        let arrivals2 = arrivals.clone();
        call.connect_pad_added(move |_, pad| {
            let Some(pipeline) = pipeline_weak.upgrade() else { return };
            let linked = if pad.name() == "video_src" {
                measure::stamp_reader(
                    pipeline.upcast_ref(),
                    remote_stamper.clone(),
                    arrivals2.clone(),
                )
                .and_then(|sink| Ok(pad.link(&sink).map(|_| ())?))
            } else {
                measure::discard(pipeline.upcast_ref(), pad)
            };
            if let Err(e) = linked {
                eprintln!("cannot link {}: {e}", pad.name());
            }
        });
        Ok(Endpoint { pipeline, stamper, arrivals })
    }

    fn play(&self) -> Result<()> {
        self.pipeline.set_state(gst::State::Playing)?;
        Ok(())
    }

    /// Waits for the bus message `wilddog-signaling` with `connected=true`.
    fn wait_connected(&self, timeout: Duration) -> Result<()> {
        let bus = self.pipeline.bus().context("pipeline without bus")?;
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(20)) else { continue };
            match msg.view() {
                gst::MessageView::Element(e) => {
                    if let Some(s) = e.structure()
                        && s.name() == "wilddog-signaling"
                        && s.get::<bool>("connected").unwrap_or(false)
                    {
                        return Ok(());
                    }
                }
                gst::MessageView::Error(e) => bail!("{}: {}", self.pipeline.name(), e.error()),
                _ => {}
            }
        }
        bail!("{} did not connect to the server within {timeout:?}", self.pipeline.name())
    }

    /// First error on the bus, if any (for a clear failure message).
    fn bus_error(&self) -> Option<String> {
        let bus = self.pipeline.bus()?;
        while let Some(msg) = bus.pop() {
            if let gst::MessageView::Error(e) = msg.view() {
                return Some(format!("{} ({:?})", e.error(), e.debug()));
            }
        }
        None
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
        let _ = &self.stamper;
    }
}

/// One call: bob waits (connected to the server), then alice's pipeline starts and calls.
/// Setup time = alice set to PLAYING (connect + auth + call) -> her first decoded remote video
/// frame.
fn wilddog_call(server: &Server, i: usize) -> Result<(f64, Endpoint, Endpoint)> {
    let alice_stamper = Stamper::new();
    let bob_stamper = Stamper::new();
    let bob_uid = format!("bob{i}");
    let bob = Endpoint::new(server, &bob_uid, None, bob_stamper.clone(), alice_stamper.clone())?;
    let alice =
        Endpoint::new(server, &format!("alice{i}"), Some(&bob_uid), alice_stamper, bob_stamper)?;
    bob.play()?;
    bob.wait_connected(Duration::from_secs(10))?;
    // When the caller's element messages are posted (from the posting thread, at once).
    let posted: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let posted2 = posted.clone();
    alice.pipeline.bus().context("pipeline without bus")?.set_sync_handler(move |_, msg| {
        if let gst::MessageView::Element(e) = msg.view()
            && let Some(s) = e.structure()
        {
            let mut name = s.name().to_string();
            if let Ok(v) = s.get::<String>("status") {
                name = format!("{name}:{v}");
            }
            if let Ok(v) = s.get::<bool>("connected") {
                name = format!("{name}:{v}");
            }
            let mut p = posted2.lock().unwrap_or_else(|e| e.into_inner());
            if !p.iter().any(|(n, _)| *n == name) {
                p.push((name, Instant::now()));
            }
        }
        gst::BusSyncReply::Pass
    });
    let t0 = Instant::now();
    alice.play()?;
    let Some(first) = measure::wait_first_frame(&alice.arrivals, FIRST_FRAME_TIMEOUT) else {
        bail!(
            "call {i}: no decoded remote frame at the caller within {FIRST_FRAME_TIMEOUT:?} (alice: {:?}, bob: {:?})",
            alice.bus_error(),
            bob.bus_error()
        );
    };
    let mut phases: Vec<(String, f64)> = posted
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter(|(_, t)| *t <= first)
        .map(|(n, t)| (n.clone(), t.duration_since(t0).as_secs_f64() * 1000.0))
        .collect();
    phases.push((
        "first decoded frame at appsink".into(),
        first.duration_since(t0).as_secs_f64() * 1000.0,
    ));
    PHASES.with(|p| p.borrow_mut().push(phases));
    Ok((first.duration_since(t0).as_secs_f64() * 1000.0, alice, bob))
}

thread_local! {
    /// Per measured call: (caller's bus message, ms since PLAYING), in order of posting.
    static PHASES: std::cell::RefCell<Vec<Vec<(String, f64)>>> = Default::default();
}

/// Median time of each bus message over the measured calls, ordered by that median.
fn median_phases() -> Vec<(String, f64)> {
    let all = PHASES.with(|p| p.take());
    let mut names: Vec<String> = Vec::new();
    for call in &all {
        for (n, _) in call {
            if !names.contains(n) {
                names.push(n.clone());
            }
        }
    }
    let mut out: Vec<(String, f64)> = names
        .into_iter()
        .map(|n| {
            let v: Vec<f64> =
                all.iter().filter_map(|c| c.iter().find(|(m, _)| *m == n).map(|x| x.1)).collect();
            (n, measure::percentile(&v, 0.5))
        })
        .collect();
    out.sort_by(|a, b| a.1.total_cmp(&b.1));
    out
}

pub fn run_wilddog(plan: &Plan) -> Result<ScenarioResult> {
    init()?;
    let server = Server::start()?;
    // The long call first: it is also the warm-up (DTLS certificate, plugin loading).
    let (_, alice, bob) = wilddog_call(&server, 1000)?;
    let (g2g, unreadable, cpu, rss, cpu_by_thread) = measure::measure_window_threads(
        &alice.arrivals,
        Duration::from_secs(1),
        Duration::from_secs_f64(plan.call_secs),
    );
    drop(alice);
    drop(bob);
    PHASES.with(|p| p.borrow_mut().clear());
    let mut setup = Vec::new();
    for i in 0..plan.calls {
        let (ms, alice, bob) = wilddog_call(&server, i)?;
        setup.push(ms);
        drop(alice);
        drop(bob);
    }
    let setup_phases_ms = median_phases();
    Ok(ScenarioResult {
        name: "wilddog".into(),
        setup_definition: "caller pipeline PLAYING (connect, auth, call) -> first decoded remote video frame; callee already connected".into(),
        setup_ms: setup,
        g2g_ms: g2g,
        g2g_unreadable: unreadable,
        call_secs: plan.call_secs,
        cpu_s_per_call_min: cpu,
        rss_mib: rss,
        cpu_by_thread,
        setup_phases_ms,
        notes: "two wilddogcall endpoints + signaling server in one process; video+audio both ways".into(),
    })
}

// ---------------------------------------------------------------------------------------
// Two bare webrtcbins

fn make_webrtcbin(name: &str) -> Result<gst::Element> {
    let webrtc = gst::ElementFactory::make("webrtcbin").name(name).build()?;
    webrtc.set_property_from_str("bundle-policy", "max-bundle");
    // The same jitterbuffer latency as wilddogcall's default.
    webrtc.set_property("latency", 30u32);
    ice::configure_agent(&webrtc, &["127.0.0.1".parse()?])?;
    Ok(webrtc)
}

/// Stamped video + audio into `webrtc`'s send pads (the same encoder chains wilddogcall uses).
fn add_senders(pipeline: &gst::Bin, webrtc: &gst::Element, stamper: &Arc<Stamper>) -> Result<()> {
    let params = media::VideoParams {
        codec: media::VideoCodec::Vp8,
        width: measure::WIDTH as u32,
        height: measure::HEIGHT as u32,
        max_fps: measure::FPS as u32,
        bitrate_kbps: 500,
        payload: 96,
        cpu_adaptation: true,
        encoder_speed: Default::default(),
    };
    let video = measure::stamped_video_source(pipeline, stamper)?;
    let (enc, _) = media::video_encoder_bin(&params)?;
    pipeline.add(&enc)?;
    video.link(&enc)?;
    let (pad, _) = media::request_send_pad(
        webrtc,
        &media::video_rtp_caps(media::VideoCodec::Vp8, 96),
        gst_webrtc::WebRTCRTPTransceiverDirection::Sendrecv,
    )?;
    enc.static_pad("src").context("no src")?.link(&pad)?;
    let audio = measure::audio_source(pipeline)?;
    let aenc = media::audio_encoder_bin(111)?;
    pipeline.add(&aenc)?;
    audio.link(&aenc)?;
    let (pad, _) = media::request_send_pad(
        webrtc,
        &media::audio_rtp_caps(111),
        gst_webrtc::WebRTCRTPTransceiverDirection::Sendrecv,
    )?;
    aenc.static_pad("src").context("no src")?.link(&pad)?;
    Ok(())
}

/// Decodes what `webrtc` receives; video into a stamp reader of `remote` stamps.
fn add_receivers(
    pipeline: &gst::Bin,
    webrtc: &gst::Element,
    remote: Arc<Stamper>,
    arrivals: Arc<Mutex<Arrivals>>,
) {
    let pipeline_weak = pipeline.downgrade();
    webrtc.connect_pad_added(move |_, pad| {
        if pad.direction() != gst::PadDirection::Src {
            return;
        }
        let Some(pipeline) = pipeline_weak.upgrade() else { return };
        let linked = (|| -> Result<()> {
            let caps = pad.current_caps().context("pad without caps")?;
            let (dec, kind) = media::decoder_bin(&caps)?;
            pipeline.add(&dec)?;
            dec.sync_state_with_parent()?;
            pad.link(&dec.static_pad("sink").context("no sink")?)?;
            let out = dec.static_pad("src").context("no src")?;
            if kind == media::StreamKind::Video {
                let sink = measure::stamp_reader(&pipeline, remote.clone(), arrivals.clone())?;
                out.link(&sink)?;
            } else {
                measure::discard(&pipeline, &out)?;
            }
            Ok(())
        })();
        if let Err(e) = linked {
            eprintln!("cannot link {}: {e}", pad.name());
        }
    });
}

struct BarePair {
    pipeline: gst::Pipeline,
    offerer_arrivals: Arc<Mutex<Arrivals>>,
}

impl Drop for BarePair {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

fn sdp_from(
    reply: Result<Option<&gst::StructureRef>, gst::PromiseError>,
    what: &str,
) -> Option<gst_webrtc::WebRTCSessionDescription> {
    reply.ok().flatten()?.value(what).ok()?.get::<gst_webrtc::WebRTCSessionDescription>().ok()
}

/// One bare call. Setup = pipeline PLAYING + create-offer -> the offerer's first decoded
/// remote video frame.
fn bare_call() -> Result<(f64, BarePair)> {
    let pipeline = gst::Pipeline::new();
    override_vp8enc(&pipeline);
    // One bin per side: the encoder/decoder bins have fixed names.
    let offer_side = gst::Bin::with_name("offer-side");
    let answer_side = gst::Bin::with_name("answer-side");
    pipeline.add_many([&offer_side, &answer_side])?;
    let offerer = make_webrtcbin("offerer")?;
    let answerer = make_webrtcbin("answerer")?;
    offer_side.add(&offerer)?;
    answer_side.add(&answerer)?;
    let offer_stamper = Stamper::new();
    let answer_stamper = Stamper::new();
    add_senders(&offer_side, &offerer, &offer_stamper)?;
    add_senders(&answer_side, &answerer, &answer_stamper)?;
    let offerer_arrivals = Arc::new(Mutex::new(Arrivals::default()));
    let answerer_arrivals = Arc::new(Mutex::new(Arrivals::default()));
    add_receivers(&offer_side, &offerer, answer_stamper, offerer_arrivals.clone());
    add_receivers(&answer_side, &answerer, offer_stamper, answerer_arrivals);
    for (from, to) in [(&offerer, &answerer), (&answerer, &offerer)] {
        let to = to.downgrade();
        from.connect("on-ice-candidate", false, move |values| {
            let mline = values[1].get::<u32>().ok()?;
            let cand = values[2].get::<String>().ok()?;
            if let Some(to) = to.upgrade() {
                to.emit_by_name::<()>("add-ice-candidate", &[&mline, &cand]);
            }
            None
        });
    }
    let t0 = Instant::now();
    pipeline.set_state(gst::State::Playing)?;
    let answerer_weak = answerer.downgrade();
    let offerer_weak = offerer.downgrade();
    let promise = gst::Promise::with_change_func(move |reply| {
        let Some(offer) = sdp_from(reply, "offer") else {
            eprintln!("create-offer failed");
            return;
        };
        let (Some(offerer), Some(answerer)) = (offerer_weak.upgrade(), answerer_weak.upgrade())
        else {
            return;
        };
        offerer.emit_by_name::<()>("set-local-description", &[&offer, &None::<gst::Promise>]);
        answerer.emit_by_name::<()>("set-remote-description", &[&offer, &None::<gst::Promise>]);
        let offerer_weak = offerer.downgrade();
        let answerer_weak = answerer.downgrade();
        let promise = gst::Promise::with_change_func(move |reply| {
            let Some(answer) = sdp_from(reply, "answer") else {
                eprintln!("create-answer failed");
                return;
            };
            if let Some(a) = answerer_weak.upgrade() {
                a.emit_by_name::<()>("set-local-description", &[&answer, &None::<gst::Promise>]);
            }
            if let Some(o) = offerer_weak.upgrade() {
                o.emit_by_name::<()>("set-remote-description", &[&answer, &None::<gst::Promise>]);
            }
        });
        answerer.emit_by_name::<()>("create-answer", &[&None::<gst::Structure>, &promise]);
    });
    offerer.emit_by_name::<()>("create-offer", &[&None::<gst::Structure>, &promise]);
    let pair = BarePair { pipeline, offerer_arrivals };
    let Some(first) = measure::wait_first_frame(&pair.offerer_arrivals, FIRST_FRAME_TIMEOUT) else {
        bail!("bare webrtcbin pair: no decoded frame within {FIRST_FRAME_TIMEOUT:?}");
    };
    Ok((first.duration_since(t0).as_secs_f64() * 1000.0, pair))
}

pub fn run_bare_pair(plan: &Plan) -> Result<ScenarioResult> {
    init()?;
    let (_, pair) = bare_call()?;
    let (g2g, unreadable, cpu, rss, cpu_by_thread) = measure::measure_window_threads(
        &pair.offerer_arrivals,
        Duration::from_secs(1),
        Duration::from_secs_f64(plan.call_secs),
    );
    drop(pair);
    let mut setup = Vec::new();
    for _ in 0..plan.calls {
        let (ms, pair) = bare_call()?;
        setup.push(ms);
        drop(pair);
    }
    Ok(ScenarioResult {
        name: "webrtcbin-pair".into(),
        setup_definition: "pipeline PLAYING + create-offer -> offerer's first decoded remote video frame (SDP and candidates passed directly)".into(),
        setup_ms: setup,
        g2g_ms: g2g,
        g2g_unreadable: unreadable,
        call_secs: plan.call_secs,
        cpu_s_per_call_min: cpu,
        rss_mib: rss,
        cpu_by_thread,
        setup_phases_ms: Vec::new(),
        notes: "two webrtcbins in one pipeline, same encoder/decoder chains as wilddogcall; video+audio both ways".into(),
    })
}
