//! Test helpers: run a test inside a private network namespace with only loopback up, so
//! that a call's packets can go nowhere but 127.0.0.1.

#![allow(dead_code)]

#[path = "../../../../tests/support/netns.rs"]
mod netns;
#[allow(unused_imports)] // not every test binary makes calls
pub use netns::enter_netns;
#[path = "../../../../tests/support/tcp_proxy.rs"]
pub mod tcp_proxy;

/// videotestsrc settings for moving, textured content: VP8 at 480p and 15 fps needs its
/// whole 500 kbit/s for it, like a camera's picture (a static test pattern needs 50).
pub const CAMERA_LIKE: &str = "pattern=zone-plate kx2=20 ky2=20 kt=1";

/// The directory of the built `libgstwilddog.so` (`cargo test` builds the cdylib next to
/// the test binary's `deps/`, or in the profile directory above it).
pub fn plugin_dir() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap().to_path_buf();
    for dir in [deps.clone(), deps.parent().unwrap().to_path_buf()] {
        if dir.join("libgstwilddog.so").exists() {
            return dir;
        }
    }
    panic!("libgstwilddog.so not found near {}: build the crate first", exe.display());
}

/// `command` (a GStreamer tool: `gst-launch-1.0`, `gst-inspect-1.0`, or a shell running
/// one) made to load the built plugin, with a registry of its own named after `tag` and
/// this process, so that parallel test binaries never share or rebuild each other's.
pub fn with_built_plugin(mut command: std::process::Command, tag: &str) -> std::process::Command {
    let registry =
        std::env::temp_dir().join(format!("wilddog-{tag}-registry-{}.bin", std::process::id()));
    command.env("GST_PLUGIN_PATH", plugin_dir()).env("GST_REGISTRY", registry);
    command
}

/// Initializes GStreamer and registers the plugin statically, once per process.
pub fn init() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        gst::init().expect("GStreamer initializes");
        gstwilddog::plugin_register_static().expect("the wilddog plugin registers");
    });
}

/// Keeps the `wilddogcall` debug lines that hold a remote offer or answer ("remote offer:\n…"),
/// in order. It replaces the default log function: only for a test in a process of its own
/// (each netns test re-runs itself alone).
pub fn capture_remote_sdps() -> std::sync::Arc<std::sync::Mutex<Vec<String>>> {
    let remote_sdps: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
    let store = remote_sdps.clone();
    replace_log_function(move |text| {
        if text.starts_with("remote offer") || text.starts_with("remote answer") {
            store.lock().unwrap_or_else(|e| e.into_inner()).push(text.to_string());
        }
    });
    remote_sdps
}

/// The signaling frames each endpoint's element logged ("received offer from alice (cid)",
/// "sent resume"), with when. It replaces the default log function: only for a test in a
/// process of its own (each netns test re-runs itself alone).
pub fn capture_signaling() -> std::sync::Arc<std::sync::Mutex<Vec<(std::time::Instant, String)>>> {
    let lines: std::sync::Arc<std::sync::Mutex<Vec<(std::time::Instant, String)>>> =
        Default::default();
    let store = lines.clone();
    replace_log_function(move |text| {
        if text.starts_with("received ") || text.starts_with("sent ") {
            store
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((std::time::Instant::now(), text.to_string()));
        }
    });
    lines
}

/// Replaces GStreamer's log function: each `wilddogcall` line (debug and up) goes to
/// `element_line`, and stderr gets what the default function would have printed with
/// `GST_DEBUG=1,default:2,webrtcbin:2,wilddogcall:4` (errors; warnings of webrtcbin, of our
/// element and of our helpers; our element's info: codec switches, path changes), so that a
/// failed test shows them. Seconds since the first line.
///
/// `WILDDOG_TEST_GST_DEBUG` (a `GST_DEBUG` string) prints, on top, every line that it lets
/// through, for a failure that needs more than that (`GST_DEBUG` itself would not reach
/// stderr: the default log function is removed).
fn replace_log_function(element_line: impl Fn(&str) + Send + Sync + 'static) {
    gst::log::remove_default_log_function();
    gst::log::set_default_threshold(gst::DebugLevel::Error);
    gst::log::set_threshold_for_name("default", gst::DebugLevel::Warning);
    gst::log::set_threshold_for_name("webrtcbin", gst::DebugLevel::Warning);
    gst::log::set_threshold_for_name("wilddogcall", gst::DebugLevel::Debug);
    let extra = std::env::var("WILDDOG_TEST_GST_DEBUG").ok();
    if let Some(extra) = &extra {
        gst::log::set_threshold_from_string(extra, false);
        gst::log::set_threshold_for_name("wilddogcall", gst::DebugLevel::Debug);
    }
    let print_all = extra.is_some();
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    gst::log::add_log_function(move |cat, level, _file, _func, _line, obj, msg| {
        let Some(text) = msg.get() else { return };
        let ours = cat.name() == "wilddogcall";
        if print_all
            || level <= gst::DebugLevel::Warning
            || (ours && level <= gst::DebugLevel::Info)
        {
            let at = START.get_or_init(Instant::now).elapsed().as_secs_f64();
            let name = obj.map(|o| o.to_string()).unwrap_or_default();
            eprintln!("{at:7.3} {level:?} {} {name}: {text}", cat.name());
        }
        if ours {
            element_line(text.as_str());
        }
    });
}

use std::sync::mpsc;
use std::time::{Duration, Instant};

use gst::prelude::*;

/// Every UDP port bound in this namespace now but those in `keep`: the candidates of the peer
/// connections of the call (and a TURN server's relays; the namespace holds nothing else).
pub fn bound_udp_ports(keep: &[u16]) -> Vec<u16> {
    let table = std::fs::read_to_string("/proc/net/udp").expect("/proc/net/udp");
    let mut ports: Vec<u16> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let local = line.split_whitespace().nth(1)?;
            u16::from_str_radix(local.rsplit(':').next()?, 16).ok()
        })
        .filter(|p| !keep.contains(p))
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// A signaling server running in-process on 127.0.0.1:0, on its own runtime.
pub struct TestServer {
    /// `ws://127.0.0.1:PORT/ws`.
    pub url: String,
    config: wilddog_server::ServerConfig,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestServer {
    /// Starts the development-configuration server on a free port.
    pub fn start() -> TestServer {
        Self::start_on("127.0.0.1:0")
    }

    /// Starts the development-configuration server on `addr` (a fixed port is safe only
    /// inside the test's own network namespace).
    pub fn start_on(addr: &str) -> TestServer {
        Self::start_config(addr, wilddog_server::ServerConfig::development())
    }

    /// Starts a server with `config` (its app must be the development app's) on `addr`.
    pub fn start_config(addr: &str, config: wilddog_server::ServerConfig) -> TestServer {
        let addr = addr.to_owned();
        let (addr_tx, addr_rx) = mpsc::channel();
        let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
        let run_config = config.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind(addr.as_str()).await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                let shutdown = async move {
                    let _ = shutdown_rx.await;
                };
                wilddog_server::run(listener, run_config, shutdown).await.unwrap();
            });
            // Dropping the runtime here ends every connection task for good.
        });
        let addr = addr_rx.recv_timeout(Duration::from_secs(10)).expect("the server starts");
        TestServer {
            url: format!("ws://{addr}/ws"),
            config,
            shutdown: Some(shutdown_tx),
            thread: Some(thread),
        }
    }

    /// The address it listens on.
    pub fn addr(&self) -> std::net::SocketAddr {
        let host = self.url.trim_start_matches("ws://").trim_end_matches("/ws");
        host.parse().expect("the server's address")
    }

    /// A token for `uid` in the development app.
    pub fn token(&self, uid: &str) -> String {
        wilddog_server::mint_token(
            &self.config,
            wilddog_server::config::DEV_APP_ID,
            uid,
            Duration::from_secs(3600),
        )
        .unwrap()
    }

    /// Stops the server (closing every socket) and waits for it.
    pub fn kill(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What a test pipeline saw, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Seen {
    Called { remote_uid: String, user_data: Option<String> },
    Response(String),
    StreamReceived,
    FirstFrame { width: u32, height: u32, elapsed_ms: u64 },
    Closed(String),
    WilddogError(u32),
    Stats(String),
    Quality(String),
    Signaling(bool),
    VideoFrame { width: i32, height: i32 },
    AudioBuffer,
    VideoEos,
    AudioEos,
    PipelineEos,
    ElementError { message: String, code: Option<u32> },
}

/// One endpoint: a pipeline with a `wilddogcall` fed by test sources, its decoded output in
/// appsinks, everything it does reported as [`Seen`].
pub struct Endpoint {
    pub pipeline: gst::Pipeline,
    pub call: gstwilddog::WilddogCall,
    /// Decoded remote video frames so far (readable while the events wait in `seen`).
    pub video_frames: std::sync::Arc<std::sync::atomic::AtomicU64>,
    pub seen: mpsc::Receiver<Seen>,
    pub log: Vec<Seen>,
    bus_thread: Option<std::thread::JoinHandle<()>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// How to build an [`Endpoint`].
pub struct EndpointConfig<'a> {
    pub uid: &'a str,
    pub remote_uid: Option<&'a str>,
    pub send_video: bool,
    pub send_audio: bool,
    pub props: Vec<(&'a str, &'a str)>,
    /// videotestsrc's properties (e.g. `pattern=zone-plate kx2=20 ky2=20 kt=1`, moving and
    /// textured content that compresses like a camera's); none: its default pattern.
    pub video_pattern: Option<&'a str>,
    /// The test source's frame rate.
    pub video_fps: i32,
}

impl<'a> EndpointConfig<'a> {
    pub fn new(uid: &'a str) -> Self {
        EndpointConfig {
            uid,
            remote_uid: None,
            send_video: true,
            send_audio: true,
            props: Vec::new(),
            video_pattern: None,
            video_fps: 30,
        }
    }
    /// Moving, textured video (see `video_pattern`) at `fps`.
    pub fn camera_like(mut self, fps: i32) -> Self {
        self.video_pattern = Some(CAMERA_LIKE);
        self.video_fps = fps;
        self
    }
    pub fn calling(mut self, remote: &'a str) -> Self {
        self.remote_uid = Some(remote);
        self
    }
    pub fn prop(mut self, name: &'a str, value: &'a str) -> Self {
        self.props.push((name, value));
        self
    }
    pub fn receive_only(mut self) -> Self {
        self.send_video = false;
        self.send_audio = false;
        self
    }
}

impl Endpoint {
    /// Builds the pipeline (not started).
    pub fn new(server: &TestServer, cfg: EndpointConfig<'_>) -> Endpoint {
        Self::with_token(server, &server.token(cfg.uid), cfg)
    }

    /// Builds the pipeline with an explicit token.
    pub fn with_token(server: &TestServer, token: &str, cfg: EndpointConfig<'_>) -> Endpoint {
        init();
        let pipeline = gst::Pipeline::with_name(&format!("pipeline-{}", cfg.uid));
        let call = gstwilddog::WilddogCall::new(Some("call"));
        call.set_property("server", &server.url);
        call.set_property("app-id", wilddog_server::config::DEV_APP_ID);
        call.set_property("token", token);
        call.set_property("ice-local-addresses", "127.0.0.1");
        if let Some(r) = cfg.remote_uid {
            call.set_property("remote-uid", r);
        }
        for (k, v) in &cfg.props {
            call.set_property_from_str(k, v);
        }
        pipeline.add(&call).unwrap();
        if cfg.send_video {
            let src = gst::ElementFactory::make("videotestsrc")
                .property("is-live", true)
                .build()
                .unwrap();
            for prop in cfg.video_pattern.unwrap_or("").split_whitespace() {
                let (k, v) = prop.split_once('=').unwrap();
                src.set_property_from_str(k, v);
            }
            let caps = gst::ElementFactory::make("capsfilter")
                .property(
                    "caps",
                    gst::Caps::builder("video/x-raw")
                        .field("width", 640)
                        .field("height", 480)
                        .field("framerate", gst::Fraction::new(cfg.video_fps, 1))
                        .build(),
                )
                .build()
                .unwrap();
            pipeline.add_many([&src, &caps]).unwrap();
            src.link(&caps).unwrap();
            let pad = call.request_pad_simple("video_sink").unwrap();
            caps.static_pad("src").unwrap().link(&pad).unwrap();
        }
        if cfg.send_audio {
            let src = gst::ElementFactory::make("audiotestsrc")
                .property("is-live", true)
                .build()
                .unwrap();
            pipeline.add(&src).unwrap();
            let pad = call.request_pad_simple("audio_sink").unwrap();
            src.static_pad("src").unwrap().link(&pad).unwrap();
        }
        let (tx, rx) = mpsc::channel();
        let video_frames = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let frames = video_frames.clone();
        // Decoded remote media into appsinks.
        let pipeline_weak = pipeline.downgrade();
        let pad_tx = std::sync::Mutex::new(tx.clone());
        call.connect_pad_added(move |_, pad| {
            let Some(pipeline) = pipeline_weak.upgrade() else { return };
            let video = pad.name() == "video_src";
            let tx = pad_tx.lock().unwrap().clone();
            let tx_eos = tx.clone();
            let frames = frames.clone();
            let sink = gst_app::AppSink::builder().sync(false).build();
            sink.set_callbacks(
                gst_app::AppSinkCallbacks::builder()
                    .new_sample(move |s| {
                        let sample = s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                        if video {
                            frames.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let st = sample.caps().unwrap().structure(0).unwrap().to_owned();
                            let _ = tx.send(Seen::VideoFrame {
                                width: st.get("width").unwrap(),
                                height: st.get("height").unwrap(),
                            });
                        } else {
                            let _ = tx.send(Seen::AudioBuffer);
                        }
                        Ok(gst::FlowSuccess::Ok)
                    })
                    .eos(move |_| {
                        let _ = tx_eos.send(if video { Seen::VideoEos } else { Seen::AudioEos });
                    })
                    .build(),
            );
            pipeline.add(&sink).unwrap();
            sink.sync_state_with_parent().unwrap();
            pad.link(&sink.static_pad("sink").unwrap()).unwrap();
        });
        // Element messages and errors from the bus.
        let bus = pipeline.bus().unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop2 = stop.clone();
        let bus_thread = std::thread::spawn(move || {
            while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
                let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(50)) else { continue };
                let seen = match msg.view() {
                    gst::MessageView::Element(e) => {
                        let s = e.structure().unwrap();
                        match s.name().as_str() {
                            "wilddog-called" => Some(Seen::Called {
                                remote_uid: s.get("remote-uid").unwrap(),
                                user_data: s.get("user-data").unwrap(),
                            }),
                            "wilddog-response" => Some(Seen::Response(s.get("status").unwrap())),
                            "wilddog-stream-received" => Some(Seen::StreamReceived),
                            "wilddog-first-frame" => Some(Seen::FirstFrame {
                                width: s.get("width").unwrap(),
                                height: s.get("height").unwrap(),
                                elapsed_ms: s.get("elapsed-ms").unwrap(),
                            }),
                            "wilddog-closed" => Some(Seen::Closed(s.get("reason").unwrap())),
                            "wilddog-error" => Some(Seen::WilddogError(s.get("code").unwrap())),
                            "wilddog-stats" => Some(Seen::Stats(s.to_string())),
                            "wilddog-quality" => Some(Seen::Quality(s.to_string())),
                            "wilddog-signaling" => {
                                Some(Seen::Signaling(s.get("connected").unwrap()))
                            }
                            _ => None,
                        }
                    }
                    gst::MessageView::Error(e) => Some(Seen::ElementError {
                        message: e.error().to_string(),
                        code: e.details().and_then(|d| d.get::<u32>("code").ok()),
                    }),
                    gst::MessageView::Eos(_) => Some(Seen::PipelineEos),
                    _ => None,
                };
                if let Some(seen) = seen {
                    let _ = tx.send(seen);
                }
            }
        });
        Endpoint {
            pipeline,
            call,
            video_frames,
            seen: rx,
            log: Vec::new(),
            bus_thread: Some(bus_thread),
            stop,
        }
    }

    pub fn play(&self) {
        self.pipeline.set_state(gst::State::Playing).unwrap();
    }

    /// Waits until `pred` matches something seen (within `timeout`), keeping everything seen
    /// in `log`. Panics with the log when it does not come.
    pub fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Seen) -> bool,
    ) -> Seen {
        let deadline = Instant::now() + timeout;
        if let Some(s) = self.log.iter().find(|s| pred(s)) {
            return s.clone();
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.seen.recv_timeout(left) {
                Ok(s) => {
                    let hit = pred(&s);
                    self.log.push(s.clone());
                    if hit {
                        return s;
                    }
                }
                Err(_) => panic!(
                    "{}: no {what} within {timeout:?}; saw {:?}",
                    self.call.name(),
                    self.log
                        .iter()
                        .filter(|s| !matches!(s, Seen::VideoFrame { .. } | Seen::AudioBuffer))
                        .collect::<Vec<_>>()
                ),
            }
        }
    }

    /// Decoded remote video frames so far.
    pub fn frames(&self) -> u64 {
        self.video_frames.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits until `n` things matching `pred` were seen in all (within `timeout`).
    pub fn wait_nth(
        &mut self,
        what: &str,
        n: usize,
        timeout: Duration,
        pred: impl Fn(&Seen) -> bool,
    ) -> Seen {
        let deadline = Instant::now() + timeout;
        loop {
            self.drain();
            if let Some(s) = self.log.iter().filter(|s| pred(s)).nth(n - 1) {
                return s.clone();
            }
            if Instant::now() > deadline {
                panic!(
                    "{}: no {what} (#{n}) within {timeout:?}; saw {:?}",
                    self.call.name(),
                    self.log
                        .iter()
                        .filter(|s| !matches!(
                            s,
                            Seen::VideoFrame { .. } | Seen::AudioBuffer | Seen::Stats(_)
                        ))
                        .collect::<Vec<_>>()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Drains what arrived so far into `log`.
    /// Asserts that the pipeline is PLAYING with no state change pending or failed (within
    /// `within`): an error posted through it marks it failed, and a pipeline that lost its
    /// state for a sink linked to a src pad must get it back.
    pub fn assert_playing(&mut self, within: Duration) {
        let (result, current, pending) = self.pipeline.state(gst::ClockTime::try_from(within).ok());
        self.drain();
        assert!(
            result.is_ok() && current == gst::State::Playing,
            "{}: {result:?}, {current:?} (pending {pending:?}); saw {:?}",
            self.pipeline.name(),
            self.log
        );
    }

    pub fn drain(&mut self) {
        while let Ok(s) = self.seen.try_recv() {
            self.log.push(s);
        }
    }

    /// Whether anything matching `pred` was seen.
    pub fn saw(&mut self, pred: impl Fn(&Seen) -> bool) -> bool {
        self.drain();
        self.log.iter().any(pred)
    }

    /// Counts what arrives within `window` and matches `pred`.
    pub fn count_for(&mut self, window: Duration, pred: impl Fn(&Seen) -> bool) -> usize {
        let deadline = Instant::now() + window;
        let mut n = 0;
        while let Ok(s) = self.seen.recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            if pred(&s) {
                n += 1;
            }
            self.log.push(s);
        }
        n
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.bus_thread.take() {
            let _ = t.join();
        }
    }
}

/// One `wilddog-stats` report, as its `local` and `remote` structures.
pub struct Stats {
    pub local: gst::Structure,
    pub remote: gst::Structure,
}

impl Stats {
    pub fn parse(text: &str) -> Stats {
        let s: gst::Structure = text.parse().expect("a stats structure");
        Stats { local: s.get("local").unwrap(), remote: s.get("remote").unwrap() }
    }
    pub fn local_u64(&self, field: &str) -> u64 {
        self.local.value(field).ok().and_then(number).unwrap_or_else(|| panic!("local.{field}"))
    }
    pub fn remote_u64(&self, field: &str) -> u64 {
        self.remote.value(field).ok().and_then(number).unwrap_or_else(|| panic!("remote.{field}"))
    }
}

fn number(v: &gst::glib::SendValue) -> Option<u64> {
    v.get::<u64>()
        .ok()
        .or_else(|| v.get::<u32>().ok().map(u64::from))
        .or_else(|| v.get::<i64>().ok().map(|n| n.max(0) as u64))
}

/// Counts GStreamer-CRITICALs from now on (each printed): a test that asserts none were
/// logged reads the count at its end.
pub fn count_gstreamer_criticals() -> std::sync::Arc<std::sync::atomic::AtomicU64> {
    use std::sync::atomic::{AtomicU64, Ordering};
    let criticals = std::sync::Arc::new(AtomicU64::new(0));
    let counted = criticals.clone();
    gst::glib::log_set_handler(
        Some("GStreamer"),
        gst::glib::LogLevels::LEVEL_CRITICAL,
        false,
        false,
        move |_, _, message| {
            eprintln!("GStreamer-CRITICAL: {message}");
            counted.fetch_add(1, Ordering::Relaxed);
        },
    );
    criticals
}

/// After a call answered by `call` (a `wilddogcall`, alone or inside a half) ended: waits
/// for it to be idle, then asserts that `element`'s src pads are still there and linked,
/// for the next call (`who`: whose call it was, for the message).
pub fn assert_src_pads_kept(call: &gst::Element, element: &gst::Element, who: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while call.property::<Option<String>>("state").as_deref() != Some("idle") {
        assert!(Instant::now() < deadline, "{who}'s call not over on {}", element.name());
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    for name in ["video_src", "audio_src"] {
        let pad = element.static_pad(name);
        assert!(
            pad.is_some_and(|p| p.is_linked()),
            "{}'s {name} is gone after {who}",
            element.name()
        );
    }
}

/// At the end of a test that kept `pipeline` across calls: no EOS (`gst-launch-1.0` would
/// have exited) and no error (a not-linked pad, a stale one) on its bus, still PLAYING, and
/// no GStreamer-CRITICAL counted; then stops it.
pub fn assert_kept_pipeline_clean(
    pipeline: &gst::Pipeline,
    criticals: &std::sync::atomic::AtomicU64,
) {
    let bus = pipeline.bus().expect("a pipeline's bus");
    if let Some(msg) = bus.pop_filtered(&[gst::MessageType::Eos, gst::MessageType::Error]) {
        panic!("{} posted {msg:?}", pipeline.name());
    }
    let (result, state, _) = pipeline.state(gst::ClockTime::from_seconds(1));
    assert!(
        result.is_ok() && state == gst::State::Playing,
        "{}: {result:?} {state:?}",
        pipeline.name()
    );
    pipeline.set_state(gst::State::Null).expect("to stop the pipeline");
    assert_eq!(
        criticals.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "GStreamer-CRITICALs (above)"
    );
}

/// Counts the samples the appsink named `name` in `pipeline` takes into `count`.
pub fn count_samples(
    pipeline: &gst::Pipeline,
    name: &str,
    count: std::sync::Arc<std::sync::atomic::AtomicU64>,
) {
    use gst::prelude::*;
    let sink = pipeline.by_name(name).and_then(|e| e.downcast::<gst_app::AppSink>().ok());
    sink.unwrap_or_else(|| panic!("no appsink {name}")).set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let _ = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
}
