//! `call-bench --density`: how many calls one process serves on this machine.
//!
//! Ours: one echo runner (`wilddog-runner run` of the shipped `pipelines/echo.toml`, its
//! `dimension` set, `--concurrent-calls N`, the signaling server in-process) and N callers,
//! each a process of its own (`call-bench --density-caller`: a `wilddogcall` sending
//! clock-stamped test video + test audio, VP8 + Opus, and reading its own stamps back from
//! the echoed video). The anchor: one `webrtcsink` producer (`webrtcsink-anchor
//! --density-producer`, gst-webrtc-signalling-server in-process, a clock-stamped test source)
//! and N `webrtcsrc` consumers (`webrtcsink-anchor --density-consumer`), each a process.
//! webrtcsink encodes once per consumer, as the echo does per call (the echo also decodes
//! what each caller sends, and each caller sends: twice the media of a consumer).
//!
//! For each N (1, 2, 4, 8, 16, then on while every caller still gets 90 % of its frames, then
//! bisected between the last N that held and the first that did not): the serving process's
//! CPU, memory and threads over a window, minus those of the same process serving nothing,
//! per call; each caller's received fps and the share of its frames that came back;
//! glass-to-glass (the stamps carry `CLOCK_MONOTONIC` milliseconds, one clock for every
//! process of the machine: ours is the caller → echo → caller round trip, the anchor's the
//! one-way producer → consumer).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::AtomicU64;
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use gst::prelude::*;

use crate::measure::{self, Arrivals, LoadResult, ProcSample, percentile};

/// The share of its frames every caller must get back for N calls to count as served.
pub const DELIVERED_MIN: f64 = 0.9;

/// The shipped echo bot: the density run serves what users run.
const ECHO_TOML: &str = include_str!("../../../pipelines/echo.toml");

/// A video size of the run.
#[derive(Debug, Clone, Copy)]
pub struct Dim {
    /// The element's `dimension`.
    pub name: &'static str,
    pub width: i32,
    pub height: i32,
}

/// 480p and 240p, both at 15 fps.
pub const DIMS: [Dim; 2] =
    [Dim { name: "480p", width: 640, height: 480 }, Dim { name: "240p", width: 320, height: 240 }];

/// The video bitrate both systems send at, bit/s (wilddogcall's default up to 480p).
pub const BITRATE: u32 = 500_000;

/// What the density run needs.
pub struct Options {
    /// The `wilddog-runner` binary.
    pub runner_bin: PathBuf,
    /// The `webrtcsink-anchor` binary (density modes); none: ours only.
    pub anchor_bin: Option<PathBuf>,
    pub dims: Vec<Dim>,
    /// Call counts tried first, in order; after the last, on while they hold.
    pub schedule: Vec<usize>,
    /// The most calls tried.
    pub max_n: usize,
    /// Bisect between the last N that held and the first that did not.
    pub bisect: bool,
    /// From every caller's first frame to the window.
    pub settle: Duration,
    /// The measuring window.
    pub window: Duration,
    pub out: PathBuf,
    /// Only these systems (`wilddog`, `wilddog-one-way`, `webrtcsink`); none: all.
    pub systems: Option<Vec<String>>,
}

/// One system serving N calls, measured.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Point {
    pub n: usize,
    /// Every caller connected and got at least [`DELIVERED_MIN`] of its frames.
    pub ok: bool,
    /// Why not, when not.
    pub failure: Option<String>,
    /// Serving process CPU over the window, % of one core, per call.
    pub cpu_pct_per_call: f64,
    /// Serving process CPU over the window, % of one core.
    pub cpu_pct: f64,
    /// The load processes' (callers', consumers') CPU over the window, % of one core, mean
    /// across them: what each call costs at its other end.
    #[serde(default)]
    pub load_cpu_pct_per_call: f64,
    /// What a call costs on both ends, % of one core: the serving process's share plus one
    /// load process ([`Self::cpu_pct_per_call`] + [`Self::load_cpu_pct_per_call`]).
    #[serde(default)]
    pub both_ends_cpu_pct_per_call: f64,
    /// Serving process resident memory minus the idle process's, per call, MiB.
    pub mib_per_call: f64,
    /// Serving process threads minus the idle process's, per call.
    pub threads_per_call: f64,
    pub rss_mib: f64,
    pub threads: u64,
    /// The 10th percentile (nearest rank) across callers of the video fps each received.
    pub fps_p10: f64,
    /// The least share of its sent frames that a caller received.
    pub delivered_min: f64,
    pub g2g_p50_ms: f64,
    pub g2g_p95_ms: f64,
    /// Serving process CPU by thread name over the window, % of one core, largest first.
    pub cpu_by_thread: Vec<(String, f64)>,
    /// The machine's 1-minute load average when the window ended.
    pub load_average: f64,
    /// Our serving runner's video encoders at the window's end (each call's last `stats`
    /// event): their speed (`encoderSpeed`, VP8 `cpu-used`, `cpu-adaptation`), sorted.
    #[serde(default)]
    pub encoder_speeds: Vec<i64>,
}

/// One system at one size: every N tried, and the largest that held.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Curve {
    pub system: String,
    pub dim: String,
    /// The serving process serving nothing (our runner with one idle slot; the producer
    /// without a consumer): MiB, threads.
    pub idle_rss_mib: f64,
    pub idle_threads: u64,
    pub points: Vec<Point>,
    /// The largest N at which every caller got at least 90 % of its frames (0: none).
    pub capacity: usize,
}

// ---------------------------------------------------------------------------------------
// Load processes (ours: `call-bench --density-caller`)

/// A density caller: calls `remote` through `server` as `uid`, sending clock-stamped
/// `width`x`height`@15 video (the element's `dimension`) and a tone; speaks the load protocol
/// of [`measure::serve_load_window`] on stdin/stdout.
/// `receive_only`: it sends nothing (the one-way scenario), and counts no frames sent.
pub fn run_caller(
    server: &str,
    uid: &str,
    remote: &str,
    dim: &str,
    receive_only: bool,
) -> Result<()> {
    let dim = DIMS.iter().find(|d| d.name == dim).with_context(|| format!("no dimension {dim}"))?;
    gst::init()?;
    gstwilddog::plugin_register_static()?;
    let config = wilddog_server::ServerConfig::development();
    let token = wilddog_server::mint_token(
        &config,
        wilddog_server::config::DEV_APP_ID,
        uid,
        Duration::from_secs(3600),
    )?;
    let pipeline = gst::Pipeline::with_name(&format!("caller-{uid}"));
    let call = gstwilddog::WilddogCall::new(Some("call"));
    call.set_property("server", server);
    call.set_property("app-id", wilddog_server::config::DEV_APP_ID);
    call.set_property("token", token);
    call.set_property("remote-uid", remote);
    call.set_property("ice-local-addresses", "127.0.0.1");
    call.set_property_from_str("dimension", dim.name);
    call.set_property("max-fps", measure::FPS as u32);
    call.set_property_from_str("video-codec", "vp8");
    pipeline.add(&call)?;
    let sent = Arc::new(AtomicU64::new(0));
    if !receive_only {
        let video = measure::clock_stamped_video_source(
            pipeline.upcast_ref(),
            dim.width,
            dim.height,
            sent.clone(),
        )?;
        let pad = call.request_pad_simple("video_sink").context("no video_sink pad")?;
        video.static_pad("src").context("no src pad")?.link(&pad)?;
        let audio = measure::audio_source(pipeline.upcast_ref())?;
        let pad = call.request_pad_simple("audio_sink").context("no audio_sink pad")?;
        audio.static_pad("src").context("no src pad")?.link(&pad)?;
    }
    let arrivals = Arc::new(Mutex::new(Arrivals::default()));
    let pipeline_weak = pipeline.downgrade();
    let arrivals2 = arrivals.clone();
    call.connect_pad_added(move |_, pad| {
        let Some(pipeline) = pipeline_weak.upgrade() else { return };
        let linked = if pad.name() == "video_src" {
            measure::clock_stamp_reader(pipeline.upcast_ref(), arrivals2.clone())
                .and_then(|sink| Ok(pad.link(&sink).map(|_| ())?))
        } else {
            measure::discard(pipeline.upcast_ref(), pad)
        };
        if let Err(e) = linked {
            eprintln!("cannot link {}: {e}", pad.name());
        }
    });
    let failed = watch_failures(&pipeline)?;
    pipeline.set_state(gst::State::Playing)?;
    measure::serve_load_window(&arrivals, &sent, Duration::from_secs(90), || {
        failed.lock().unwrap_or_else(|e| e.into_inner()).clone()
    })?;
    let _ = pipeline.set_state(gst::State::Null);
    Ok(())
}

/// Notes the first reason the call failed (a response other than ACCEPTED, an error).
fn watch_failures(pipeline: &gst::Pipeline) -> Result<Arc<Mutex<Option<String>>>> {
    let failed: Arc<Mutex<Option<String>>> = Arc::default();
    let bus = pipeline.bus().context("pipeline without bus")?;
    let noted = failed.clone();
    bus.set_sync_handler(move |_, msg| {
        let why = match msg.view() {
            gst::MessageView::Error(e) => Some(format!("error: {}", e.error())),
            gst::MessageView::Element(e) => e.structure().and_then(|s| {
                let status = s.get::<String>("status").ok()?;
                (s.name() == "wilddog-response" && status != "ACCEPTED")
                    .then(|| format!("response {status}"))
            }),
            _ => None,
        };
        if let Some(why) = why {
            noted.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(why);
        }
        gst::BusSyncReply::Drop
    });
    Ok(failed)
}

// ---------------------------------------------------------------------------------------
// Child processes and their line protocols

/// A child process whose stdout lines are read on a thread.
struct Proc {
    label: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

impl Proc {
    fn start(label: &str, mut cmd: Command) -> Result<Proc> {
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null());
        let mut child = cmd.spawn().with_context(|| format!("cannot start {label}"))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let stdin = child.stdin.take();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Proc { label: label.to_owned(), child, stdin, lines })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The lines it printed that nobody read yet.
    fn unread(&self) -> Vec<String> {
        self.lines.try_iter().collect()
    }

    /// The next line for which `pick` says something, within `timeout`.
    fn wait_line<T>(
        &self,
        timeout: Duration,
        mut pick: impl FnMut(&str) -> Option<T>,
    ) -> Result<T> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(v) = pick(&line) {
                        return Ok(v);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    bail!("{}: nothing expected within {timeout:?}", self.label)
                }
                Err(RecvTimeoutError::Disconnected) => bail!("{}: exited", self.label),
            }
        }
    }

    fn send(&mut self, line: &str) {
        if let Some(stdin) = &mut self.stdin {
            let _ = writeln!(stdin, "{line}");
            let _ = stdin.flush();
        }
    }

    /// SIGINT, then SIGKILL after `grace`.
    fn stop(mut self, grace: Duration) {
        self.stdin = None;
        let _ = Command::new("kill").args(["-INT", &self.pid().to_string()]).status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a load process said after connecting.
enum Connected {
    FirstFrame,
    Failed(String),
}

fn connected(line: &str) -> Option<Connected> {
    if line == "FIRST-FRAME" {
        Some(Connected::FirstFrame)
    } else {
        line.strip_prefix("FAILED ").map(|why| Connected::Failed(why.to_owned()))
    }
}

/// The system under test: how to start its serving process and its load.
trait System {
    fn name(&self) -> &'static str;
    /// Starts the serving process for `n` calls; returns it and the address loads use once
    /// it is ready.
    fn serve(&self, n: usize, dim: Dim, dir: &Path) -> Result<(Proc, String)>;
    /// Starts load process `i` against `address`.
    fn load(&self, address: &str, i: usize, dim: Dim) -> Result<Proc>;
    /// Frames the serving process's own source captured in the window, when it has one (the
    /// anchor's producer); our callers count their own.
    fn producer_window(&self, _server: &mut Proc) -> Option<LoadResult> {
        None
    }
}

struct Wilddog {
    runner_bin: PathBuf,
    exe: PathBuf,
    /// The one-way scenario: the runner sends a test pattern and a tone to receive-only
    /// callers, the work webrtcsink does per consumer (one encode a call, the callers only
    /// decode), instead of echoing what they send.
    one_way: bool,
}

/// Experiment knob (`call-bench --density --wilddogcall-props "cpu-adaptation=false"`, in this
/// environment variable): properties of the serving runner's `wilddogcall`, comma-separated,
/// to see what a setting costs or buys.
pub const WILDDOGCALL_PROPS_ENV: &str = "CALL_BENCH_WILDDOGCALL_PROPS";

/// The serving `wilddogcall`'s settings: the dimension, the frame rate, and any of
/// [`WILDDOGCALL_PROPS_ENV`].
fn wilddogcall_line(dim: Dim) -> String {
    let extra = std::env::var(WILDDOGCALL_PROPS_ENV).unwrap_or_default().replace(',', " ");
    format!("wilddogcall name=call dimension={} max-fps={} {extra}", dim.name, measure::FPS)
        .trim_end()
        .to_owned()
}

/// The serving pipeline of the one-way scenario: what webrtcsink is fed, without stamps, made
/// once for every call as webrtcsink's producer makes it (`shared_pipeline`), each call
/// encoding its own.
fn one_way_toml(dim: Dim) -> String {
    format!(
        r#"# call-bench --density, one way: one test pattern and one tone to every caller.
uid = "echo"
role = "answer"
shared_pipeline = """
videotestsrc is-live=true pattern=smpte ! video/x-raw,format=I420,width={w},height={h},framerate={fps}/1 ! appsink name=video
audiotestsrc is-live=true volume=0.3 ! appsink name=audio
"""
pipeline = """
{call}
  appsrc name=video ! call.video_sink
  appsrc name=audio ! call.audio_sink
"""
"#,
        call = wilddogcall_line(dim),
        fps = measure::FPS,
        w = dim.width,
        h = dim.height,
    )
}

impl System for Wilddog {
    fn name(&self) -> &'static str {
        if self.one_way { "wilddog-one-way" } else { "wilddog" }
    }

    fn serve(&self, n: usize, dim: Dim, dir: &Path) -> Result<(Proc, String)> {
        let file = dir.join(format!("{}-{}.toml", self.name(), dim.name));
        let text = if self.one_way {
            one_way_toml(dim)
        } else {
            let text = ECHO_TOML.replacen("wilddogcall name=call", &wilddogcall_line(dim), 1);
            if text == ECHO_TOML {
                bail!("pipelines/echo.toml has no `wilddogcall name=call` to set the dimension on");
            }
            text
        };
        std::fs::write(&file, text)?;
        let mut cmd = Command::new(&self.runner_bin);
        cmd.arg("run")
            .arg(&file)
            .args(["--listen", "127.0.0.1:0", "--ice-local-addresses", "127.0.0.1"])
            .args(["--concurrent-calls", &n.to_string()])
            .env("RUST_LOG", "warn");
        let proc = Proc::start("echo runner", cmd)?;
        let mut ready = 0;
        let mut server = String::new();
        proc.wait_line(Duration::from_secs(60), |line| {
            let event: serde_json::Value = serde_json::from_str(line).ok()?;
            if event["event"] == "ready" {
                ready += 1;
                server = event["server"].as_str().unwrap_or_default().to_owned();
            }
            (ready >= n).then_some(())
        })
        .context("the echo runner did not get every slot ready")?;
        Ok((proc, server))
    }

    fn load(&self, address: &str, i: usize, dim: Dim) -> Result<Proc> {
        let mut cmd = Command::new(&self.exe);
        cmd.args(["--density-caller", "--server", address])
            .args(["--uid", &format!("caller{i}"), "--remote-uid", "echo"])
            .args(["--dimension", dim.name]);
        if self.one_way {
            cmd.arg("--receive-only");
        }
        Proc::start(&format!("caller {i}"), cmd)
    }
}

struct Webrtcsink {
    anchor_bin: PathBuf,
}

impl System for Webrtcsink {
    fn name(&self) -> &'static str {
        "webrtcsink"
    }

    fn serve(&self, _n: usize, dim: Dim, _dir: &Path) -> Result<(Proc, String)> {
        let mut cmd = Command::new(&self.anchor_bin);
        cmd.args(["--density-producer", "--dimension", dim.name])
            .args(["--bitrate", &BITRATE.to_string()])
            .env("GST_DEBUG", "0");
        let proc = Proc::start("webrtcsink producer", cmd)?;
        let uri = proc
            .wait_line(Duration::from_secs(60), |line| {
                line.strip_prefix("READY ").map(str::to_owned)
            })
            .context("the webrtcsink producer did not start")?;
        Ok((proc, uri))
    }

    fn load(&self, address: &str, i: usize, _dim: Dim) -> Result<Proc> {
        let mut cmd = Command::new(&self.anchor_bin);
        cmd.args(["--density-consumer", address]).env("GST_DEBUG", "0");
        Proc::start(&format!("consumer {i}"), cmd)
    }

    fn producer_window(&self, server: &mut Proc) -> Option<LoadResult> {
        server
            .wait_line(Duration::from_secs(20), |line| {
                line.strip_prefix("DENSITY-PRODUCER ")
                    .and_then(|json| serde_json::from_str::<LoadResult>(json).ok())
            })
            .ok()
    }
}

// ---------------------------------------------------------------------------------------
// Measuring

fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(f64::NAN)
}

/// The serving process serving nothing: resident MiB and threads, settled.
fn idle_footprint(system: &dyn System, dim: Dim, dir: &Path) -> Result<(f64, u64)> {
    let (server, _) = system.serve(1, dim, dir)?;
    std::thread::sleep(Duration::from_secs(2));
    let sample = measure::sample_process(server.pid()).context("the serving process is gone")?;
    server.stop(Duration::from_secs(10));
    Ok((sample.rss_mib, sample.threads))
}

/// Serves `n` calls and measures them.
fn measure_point(
    system: &dyn System,
    n: usize,
    dim: Dim,
    opts: &Options,
    idle: (f64, u64),
    dir: &Path,
) -> Result<Point> {
    let (mut server, address) = system.serve(n, dim, dir)?;
    let mut loads = Vec::with_capacity(n);
    let mut failure: Option<String> = None;
    for i in 0..n {
        match system.load(&address, i, dim) {
            Ok(p) => loads.push(p),
            Err(e) => {
                failure.get_or_insert(format!("{e:#}"));
            }
        }
    }
    // Every load reports its first frame, or why not.
    let connect_timeout = Duration::from_secs(30 + 2 * n as u64);
    for load in &loads {
        match load.wait_line(connect_timeout, connected) {
            Ok(Connected::FirstFrame) => {}
            Ok(Connected::Failed(why)) => {
                failure.get_or_insert(format!("{}: {why}", load.label));
            }
            Err(e) => {
                failure.get_or_insert(format!("{e:#}"));
            }
        }
    }
    std::thread::sleep(opts.settle);
    for load in &mut loads {
        load.send("start");
    }
    server.send("start");
    let before = measure::sample_process(server.pid()).context("the serving process is gone")?;
    let loads_before: Vec<Option<f64>> = loads.iter().map(|l| load_cpu_s(l.pid())).collect();
    let started = Instant::now();
    std::thread::sleep(opts.window);
    let after = measure::sample_process(server.pid()).unwrap_or_default();
    let loads_after: Vec<Option<f64>> = loads.iter().map(|l| load_cpu_s(l.pid())).collect();
    let secs = started.elapsed().as_secs_f64();
    // Each load process's CPU over the window, % of one core (one that exited: not counted).
    let load_cpu: Vec<f64> = loads_before
        .iter()
        .zip(&loads_after)
        .filter_map(|(b, a)| Some((a.as_ref()? - b.as_ref()?) / secs * 100.0))
        .collect();
    let load_avg = load_average();
    let speeds = encoder_speeds(&server.unread());
    for load in &mut loads {
        load.send("stop");
    }
    server.send("stop");
    let producer = system.producer_window(&mut server);
    let mut results: Vec<LoadResult> = Vec::new();
    for load in &loads {
        let result = load.wait_line(Duration::from_secs(20), |line| {
            line.strip_prefix("DENSITY-RESULT ")
                .and_then(|json| serde_json::from_str::<LoadResult>(json).ok())
        });
        match result {
            Ok(r) => results.push(r),
            Err(e) => {
                failure.get_or_insert(format!("{e:#}"));
                results.push(LoadResult::default());
            }
        }
    }
    for load in loads {
        load.stop(Duration::from_secs(5));
    }
    server.stop(Duration::from_secs(15));
    let mut p =
        point(n, failure, (&before, &after), secs, idle, &results, producer.as_ref(), load_avg);
    p.load_cpu_pct_per_call = if load_cpu.is_empty() {
        f64::NAN
    } else {
        load_cpu.iter().sum::<f64>() / load_cpu.len() as f64
    };
    p.both_ends_cpu_pct_per_call = p.cpu_pct_per_call + p.load_cpu_pct_per_call;
    if !speeds.is_empty() {
        eprintln!("   encoder speeds (cpu-used) at the window's end: {speeds:?}");
    }
    p.encoder_speeds = speeds;
    Ok(p)
}

/// Each call's last `encoderSpeed` in the runner's `stats` events among `lines`, sorted.
fn encoder_speeds(lines: &[String]) -> Vec<i64> {
    let mut last = std::collections::BTreeMap::new();
    for line in lines {
        let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if event["event"] != "stats" {
            continue;
        }
        if let Some(speed) = event["local"]["encoderSpeed"].as_i64() {
            last.insert(event["conversation_id"].as_str().unwrap_or_default().to_owned(), speed);
        }
    }
    let mut speeds: Vec<i64> = last.into_values().collect();
    speeds.sort_unstable();
    speeds
}

/// A load process's CPU seconds so far (user + system).
fn load_cpu_s(pid: u32) -> Option<f64> {
    measure::sample_process(pid).map(|s| s.cpu_s)
}

#[allow(clippy::too_many_arguments)]
fn point(
    n: usize,
    mut failure: Option<String>,
    (before, after): (&ProcSample, &ProcSample),
    secs: f64,
    idle: (f64, u64),
    results: &[LoadResult],
    producer: Option<&LoadResult>,
    load_average: f64,
) -> Point {
    let per_call = |v: f64| v / n.max(1) as f64;
    let cpu_pct = (after.cpu_s - before.cpu_s) / secs * 100.0;
    let fps: Vec<f64> =
        results.iter().map(|r| r.frames_received as f64 / r.secs.max(0.001)).collect();
    let delivered: Vec<f64> = results
        .iter()
        .map(|r| {
            let (sent, sent_secs) = match producer {
                Some(p) => (p.frames_sent as f64, p.secs),
                None => (r.frames_sent as f64, r.secs),
            };
            // A receive-only caller counts nothing sent: the sender's nominal rate.
            let sent_fps =
                if sent > 0.0 { sent / sent_secs.max(0.001) } else { f64::from(measure::FPS) };
            if sent_fps > 0.0 {
                (r.frames_received as f64 / r.secs.max(0.001)) / sent_fps
            } else {
                0.0
            }
        })
        .collect();
    let delivered_min = delivered.iter().copied().fold(f64::INFINITY, f64::min);
    let delivered_min = if delivered_min.is_finite() { delivered_min } else { 0.0 };
    let g2g: Vec<f64> = results.iter().flat_map(|r| r.g2g_ms.iter().copied()).collect();
    if failure.is_none() && delivered_min < DELIVERED_MIN {
        failure = Some(format!(
            "a caller got {:.0} % of its frames (< {:.0} %)",
            delivered_min * 100.0,
            DELIVERED_MIN * 100.0
        ));
    }
    Point {
        n,
        ok: failure.is_none(),
        failure,
        cpu_pct_per_call: per_call(cpu_pct),
        cpu_pct,
        // Filled in by the caller, which sampled the load processes.
        load_cpu_pct_per_call: f64::NAN,
        both_ends_cpu_pct_per_call: f64::NAN,
        mib_per_call: per_call(after.rss_mib - idle.0),
        threads_per_call: per_call(after.threads as f64 - idle.1 as f64),
        rss_mib: after.rss_mib,
        threads: after.threads,
        fps_p10: percentile(&fps, 0.1),
        delivered_min,
        g2g_p50_ms: percentile(&g2g, 0.5),
        g2g_p95_ms: percentile(&g2g, 0.95),
        cpu_by_thread: measure::cpu_by_thread_name(before, after)
            .into_iter()
            .map(|(name, s)| (name, s / secs * 100.0))
            .filter(|(_, pct)| *pct >= 0.5)
            .collect(),
        load_average,
        encoder_speeds: Vec::new(),
    }
}

/// Every N of one system at one size: the schedule, on while it holds, then bisected.
fn curve(system: &dyn System, dim: Dim, opts: &Options, dir: &Path) -> Result<Curve> {
    let idle = idle_footprint(system, dim, dir)?;
    let mut curve = Curve {
        system: system.name().into(),
        dim: dim.name.into(),
        idle_rss_mib: idle.0,
        idle_threads: idle.1,
        ..Curve::default()
    };
    let run = |n: usize, curve: &mut Curve| -> Result<bool> {
        eprintln!("== {} {} N={n} ...", system.name(), dim.name);
        let p = measure_point(system, n, dim, opts, idle, dir)?;
        eprintln!(
            "== {} {} N={n}: {} (CPU {:.1} %/call, callers {:.1}, both ends {:.1}; fps p10 {:.1}, delivered min {:.0} %, g2g p95 {:.0} ms{})",
            system.name(),
            dim.name,
            if p.ok { "held" } else { "did not hold" },
            p.cpu_pct_per_call,
            p.load_cpu_pct_per_call,
            p.both_ends_cpu_pct_per_call,
            p.fps_p10,
            p.delivered_min * 100.0,
            p.g2g_p95_ms,
            p.failure.as_deref().map(|f| format!("; {f}")).unwrap_or_default()
        );
        let ok = p.ok;
        curve.points.push(p);
        Ok(ok)
    };
    let mut last_ok = 0;
    let mut first_fail: Option<usize> = None;
    let mut next: Vec<usize> = opts.schedule.clone();
    let mut i = 0;
    while i < next.len() {
        let n = next[i];
        i += 1;
        if n > opts.max_n {
            break;
        }
        if run(n, &mut curve)? {
            last_ok = n;
            if i == next.len() {
                // Past the schedule: on by half again while it holds.
                next.push((n + n / 2).max(n + 1));
            }
        } else {
            first_fail = Some(n);
            break;
        }
    }
    if opts.bisect
        && let Some(mut fail) = first_fail
    {
        let mut ok = last_ok;
        while fail - ok > 1 {
            let mid = ok + (fail - ok) / 2;
            if run(mid, &mut curve)? {
                ok = mid;
            } else {
                fail = mid;
            }
        }
        last_ok = ok;
    }
    curve.points.sort_by_key(|p| p.n);
    curve.capacity = last_ok;
    Ok(curve)
}

// ---------------------------------------------------------------------------------------
// The run and its table

/// Runs every system at every size; prints the tables, writes `density.json` and
/// `density.md` into the output directory.
pub fn run(opts: &Options) -> Result<()> {
    gst::init()?;
    std::fs::create_dir_all(&opts.out)?;
    let dir = std::env::temp_dir().join(format!("call-bench-density-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let exe = std::env::current_exe()?;
    let mut systems: Vec<Box<dyn System>> = vec![
        Box::new(Wilddog { runner_bin: opts.runner_bin.clone(), exe: exe.clone(), one_way: false }),
        Box::new(Wilddog { runner_bin: opts.runner_bin.clone(), exe, one_way: true }),
    ];
    if let Some(anchor) = &opts.anchor_bin {
        systems.push(Box::new(Webrtcsink { anchor_bin: anchor.clone() }));
    }
    if let Some(only) = &opts.systems {
        if let Some(unknown) = only.iter().find(|n| !systems.iter().any(|s| s.name() == n.as_str()))
        {
            bail!(
                "--scenarios: {unknown} is not one of wilddog, wilddog-one-way, webrtcsink (with --anchor-bin)"
            );
        }
        systems.retain(|s| only.iter().any(|n| n == s.name()));
    }
    let mut curves = Vec::new();
    let mut failures = Vec::new();
    for dim in &opts.dims {
        for system in &systems {
            match curve(system.as_ref(), *dim, opts, &dir) {
                Ok(c) => curves.push(c),
                Err(e) => failures.push(format!("{} {}: {e:#}", system.name(), dim.name)),
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let text = table(&curves, opts);
    println!("{text}");
    for f in &failures {
        println!("MISSING {f}");
    }
    let machine = crate::machine();
    println!("{machine}");
    let json = serde_json::json!({
        "machine": machine,
        "window_secs": opts.window.as_secs_f64(),
        "settle_secs": opts.settle.as_secs_f64(),
        "curves": curves,
        "failures": failures,
    });
    std::fs::write(opts.out.join("density.json"), serde_json::to_string_pretty(&json)?)?;
    std::fs::write(opts.out.join("density.md"), &text)?;
    println!("wrote {0}/density.json, {0}/density.md", opts.out.display());
    if !failures.is_empty() {
        bail!("density runs failed: {}", failures.join("; "));
    }
    // What CI checks: every system measured at least one N with every figure.
    for c in &curves {
        let Some(p) = c.points.first() else { bail!("{} {}: no point", c.system, c.dim) };
        let figures = [p.cpu_pct_per_call, p.mib_per_call, p.threads_per_call, p.fps_p10];
        if figures.iter().any(|v| !v.is_finite()) || p.cpu_pct <= 0.0 || p.rss_mib <= 0.0 {
            return Err(anyhow!("{} {} N={}: figures missing: {p:?}", c.system, c.dim, p.n));
        }
    }
    Ok(())
}

fn fmt(v: f64, digits: usize) -> String {
    if v.is_finite() { format!("{v:.digits$}") } else { "n/a".into() }
}

/// The density tables: per size, N down, both systems across; then the capacities and
/// their ratio, and where the serving process's CPU went at our largest N.
fn table(curves: &[Curve], opts: &Options) -> String {
    let mut out = String::new();
    let dims: Vec<&str> = opts.dims.iter().map(|d| d.name).collect();
    let systems: Vec<String> = {
        let mut s: Vec<String> = Vec::new();
        for c in curves {
            if !s.contains(&c.system) {
                s.push(c.system.clone());
            }
        }
        s
    };
    for dim in dims {
        let of = |system: &str| curves.iter().find(|c| c.dim == dim && c.system == system);
        let mut ns: Vec<usize> = curves
            .iter()
            .filter(|c| c.dim == dim)
            .flat_map(|c| c.points.iter().map(|p| p.n))
            .collect();
        ns.sort();
        ns.dedup();
        out.push_str(&format!(
            "\n#### {dim} (VP8 + Opus, 15 fps, {} kbps)\n\n| N |",
            BITRATE / 1000
        ));
        for s in &systems {
            out.push_str(&format!(
                " {s}: CPU %/call | caller CPU % | both ends % | MiB/call | threads/call | fps p10 | delivered min | g2g p95 ms |"
            ));
        }
        out.push_str("\n|---|");
        for _ in &systems {
            out.push_str("---|---|---|---|---|---|---|---|");
        }
        out.push('\n');
        for n in ns {
            out.push_str(&format!("| {n} |"));
            for s in &systems {
                match of(s).and_then(|c| c.points.iter().find(|p| p.n == n)) {
                    Some(p) => out.push_str(&format!(
                        " {} | {} | {} | {} | {} | {} | {}{} | {} |",
                        fmt(p.cpu_pct_per_call, 1),
                        fmt(p.load_cpu_pct_per_call, 1),
                        fmt(p.both_ends_cpu_pct_per_call, 1),
                        fmt(p.mib_per_call, 1),
                        fmt(p.threads_per_call, 1),
                        fmt(p.fps_p10, 1),
                        fmt(p.delivered_min * 100.0, 0),
                        if p.ok { " %" } else { " % ✗" },
                        fmt(p.g2g_p95_ms, 0),
                    )),
                    None => out.push_str(" | | | | | | | |"),
                }
            }
            out.push('\n');
        }
        let capacity = |s: &str| of(s).map(|c| c.capacity);
        let anchor = capacity("webrtcsink");
        let named: Vec<String> = systems
            .iter()
            .map(|s| {
                let n = capacity(s).map(|n| n.to_string()).unwrap_or_else(|| "n/a".into());
                format!("{s} {n}")
            })
            .collect();
        out.push_str(&format!(
            "\nLargest N with every caller getting ≥ {:.0} % of its frames, {dim}: {}\n",
            DELIVERED_MIN * 100.0,
            named.join(", ")
        ));
        for ours in ["wilddog", "wilddog-one-way"] {
            if let (Some(o), Some(a)) = (capacity(ours), anchor)
                && a > 0
            {
                out.push_str(&format!(
                    "{ours} / webrtcsink: {:.2}x (target ≥ 1.5x: {})\n",
                    o as f64 / a as f64,
                    if o as f64 >= 1.5 * a as f64 { "met" } else { "MISSED" }
                ));
            }
        }
        for s in &systems {
            let Some(c) = of(s) else { continue };
            let at = c.points.iter().rfind(|p| p.ok).or(c.points.first());
            if let Some(p) = at {
                let top: Vec<String> = p
                    .cpu_by_thread
                    .iter()
                    .take(8)
                    .map(|(name, pct)| format!("{name} {pct:.0}"))
                    .collect();
                out.push_str(&format!(
                    "{s} at N={}: serving process {:.0} % of a core ({}); idle process {:.0} MiB, {} threads\n",
                    p.n,
                    p.cpu_pct,
                    top.join(", "),
                    c.idle_rss_mib,
                    c.idle_threads
                ));
            }
        }
    }
    out
}
