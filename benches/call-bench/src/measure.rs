//! Measurement helpers shared by `call-bench` and the anchor binary (which includes this file
//! with `#[path]`): frame stamping for glass-to-glass latency, process CPU and memory, the
//! result record each scenario prints, and the capture caps every scenario uses.
//!
//! Glass-to-glass: the sender writes a frame counter into the top-left corner of each raw
//! frame's luma plane right after capture (two rows of 16 black/white 24x24 blocks: the
//! counter and its complement), and notes the instant; the receiver reads the blocks back from
//! the decoded frame and looks the instant up. Both ends live in one process, so one
//! monotonic clock serves both. The blocks survive VP8 at a few hundred kbps; a frame whose
//! two rows do not agree is skipped rather than mis-attributed.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gst::prelude::*;
use gst_video::prelude::*;

/// Capture size and rate of every scenario.
pub const WIDTH: i32 = 640;
pub const HEIGHT: i32 = 480;
pub const FPS: i32 = 15;

/// The side of one code block, px, in frames at least 384 px wide (16 blocks of 24).
const BLOCK: usize = 24;

/// The side of a code block in a frame `width` px wide: [`BLOCK`], smaller (a multiple of 8)
/// when 16 of them would not fit (320x240: 16 px).
fn block_for(width: usize) -> usize {
    ((width / BITS).min(BLOCK) & !7).max(8)
}
const BITS: usize = 16;

/// The raw caps every sender captures: 640x480 I420 at 15 fps.
pub fn capture_caps() -> gst::Caps {
    gst::Caps::builder("video/x-raw")
        .field("format", "I420")
        .field("width", WIDTH)
        .field("height", HEIGHT)
        .field("framerate", gst::Fraction::new(FPS, 1))
        .build()
}

/// The instants at which a sender captured its stamped frames.
#[derive(Default)]
pub struct Stamper {
    inner: Mutex<StamperInner>,
}

#[derive(Default)]
struct StamperInner {
    next: u32,
    sent: HashMap<u16, Instant>,
}

impl Stamper {
    pub fn new() -> Arc<Stamper> {
        Arc::new(Stamper::default())
    }

    /// Adds a probe on `pad` (raw I420 video) that stamps every buffer passing.
    pub fn stamp_pad(self: &Arc<Self>, pad: &gst::Pad) {
        let stamper = self.clone();
        pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
            let Some(caps) = pad.current_caps() else { return gst::PadProbeReturn::Ok };
            let Ok(vinfo) = gst_video::VideoInfo::from_caps(&caps) else {
                return gst::PadProbeReturn::Ok;
            };
            if let Some(gst::PadProbeData::Buffer(buffer)) = &mut info.data {
                let buf = buffer.make_mut();
                let Ok(mut frame) = gst_video::VideoFrameRef::from_buffer_ref_writable(buf, &vinfo)
                else {
                    return gst::PadProbeReturn::Ok;
                };
                let mut inner = stamper.inner.lock().unwrap_or_else(|e| e.into_inner());
                let counter = (inner.next & 0xffff) as u16;
                inner.next = inner.next.wrapping_add(1);
                let stride = frame.plane_stride()[0] as usize;
                if let Ok(y) = frame.plane_data_mut(0) {
                    write_code(y, stride, vinfo.width() as usize, counter);
                    inner.sent.insert(counter, Instant::now());
                }
            }
            gst::PadProbeReturn::Ok
        });
    }

    fn sent_at(&self, counter: u16) -> Option<Instant> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).sent.get(&counter).copied()
    }
}

fn write_code(y: &mut [u8], stride: usize, width: usize, counter: u16) {
    let block = block_for(width);
    for row in 0..2 {
        let value = if row == 0 { counter } else { !counter };
        for bit in 0..BITS {
            let on = (value >> (BITS - 1 - bit)) & 1 == 1;
            let luma = if on { 235 } else { 16 };
            for dy in 0..block {
                let start = (row * block + dy) * stride + bit * block;
                if let Some(line) = y.get_mut(start..start + block) {
                    line.fill(luma);
                }
            }
        }
    }
}

fn read_code(y: &[u8], stride: usize, width: usize) -> Option<u16> {
    let block = block_for(width);
    // The block's central third (8x8 of a 24 px block), away from its edges' ringing.
    let (from, side) = (block / 3, block / 3);
    let mut values = [0u16; 2];
    for (row, value) in values.iter_mut().enumerate() {
        for bit in 0..BITS {
            let mut sum = 0u32;
            for dy in from..from + side {
                let start = (row * block + dy) * stride + bit * block + from;
                sum += y.get(start..start + side)?.iter().map(|&v| v as u32).sum::<u32>();
            }
            let on = sum / (side * side) as u32 > 125;
            *value = (*value << 1) | on as u16;
        }
    }
    (values[0] == !values[1]).then_some(values[0])
}

/// Milliseconds of the system's monotonic clock (`CLOCK_MONOTONIC`), the same in every
/// process of the machine: what the clock-coded stamps carry from one process to another.
pub fn monotonic_ms() -> u64 {
    let mut ts = [0i64; 2];
    // SAFETY: clock_gettime fills the timespec it is given; CLOCK_MONOTONIC (1) always exists.
    let ok = unsafe { clock_gettime(1, &mut ts) } == 0;
    if !ok {
        return 0;
    }
    (ts[0] as u64) * 1000 + (ts[1] as u64) / 1_000_000
}

unsafe extern "C" {
    fn clock_gettime(clock: i32, ts: *mut [i64; 2]) -> i32;
}

/// Stamps every raw I420 frame passing `pad` with the low 16 bits of [`monotonic_ms`] (the
/// blocks of [`Stamper`]), so that a receiver in another process reads when it was captured;
/// counts the frames in `sent`.
pub fn clock_stamp_pad(pad: &gst::Pad, sent: Arc<std::sync::atomic::AtomicU64>) {
    pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
        let Some(caps) = pad.current_caps() else { return gst::PadProbeReturn::Ok };
        let Ok(vinfo) = gst_video::VideoInfo::from_caps(&caps) else {
            return gst::PadProbeReturn::Ok;
        };
        if let Some(gst::PadProbeData::Buffer(buffer)) = &mut info.data {
            let buf = buffer.make_mut();
            if let Ok(mut frame) = gst_video::VideoFrameRef::from_buffer_ref_writable(buf, &vinfo) {
                let stride = frame.plane_stride()[0] as usize;
                if let Ok(y) = frame.plane_data_mut(0) {
                    let width = vinfo.width() as usize;
                    write_code(y, stride, width, (monotonic_ms() & 0xffff) as u16);
                    sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
        gst::PadProbeReturn::Ok
    });
}

/// Builds `videoconvert ! appsink(I420)` in `pipeline` and gives `on_frame` each decoded
/// frame as it arrives: the instant, and its luma plane as `(plane, stride, width, height)`
/// (`None` for a frame that could not be mapped). Returns the convert's sink pad to link
/// decoded video to. Every stamp reader of the benchmarks is one of these.
pub fn luma_reader(
    pipeline: &gst::Bin,
    mut on_frame: impl FnMut(Instant, Option<(&[u8], usize, u32, u32)>) + Send + 'static,
) -> anyhow::Result<gst::Pad> {
    let convert = gst::ElementFactory::make("videoconvert").build()?;
    let sink = gst_app::AppSink::builder()
        .caps(&gst::Caps::builder("video/x-raw").field("format", "I420").build())
        .sync(false)
        .build();
    sink.set_property("async", false);
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |s| {
                let now = Instant::now();
                let sample = s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                let info = sample.caps().and_then(|c| gst_video::VideoInfo::from_caps(c).ok());
                let frame = match (&info, sample.buffer()) {
                    (Some(info), Some(buffer)) => {
                        gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, info).ok()
                    }
                    _ => None,
                };
                let luma = frame.as_ref().and_then(|f| {
                    Some((
                        f.plane_data(0).ok()?,
                        f.plane_stride()[0] as usize,
                        f.width(),
                        f.height(),
                    ))
                });
                on_frame(now, luma);
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    pipeline.add_many([&convert, sink.upcast_ref()])?;
    convert.link(&sink)?;
    convert.sync_state_with_parent()?;
    sink.sync_state_with_parent()?;
    convert.static_pad("sink").ok_or_else(|| anyhow::anyhow!("videoconvert has no sink pad"))
}

/// A [`luma_reader`] reading the clock-coded stamps of [`clock_stamp_pad`] (glass-to-glass =
/// now − the stamp, modulo 65.536 s).
pub fn clock_stamp_reader(
    pipeline: &gst::Bin,
    arrivals: Arc<Mutex<Arrivals>>,
) -> anyhow::Result<gst::Pad> {
    luma_reader(pipeline, move |now, luma| {
        let now_ms = monotonic_ms();
        let mut a = arrivals.lock().unwrap_or_else(|e| e.into_inner());
        a.frames += 1;
        if a.first_frame.is_none() {
            a.first_frame = Some(now);
        }
        match luma.and_then(|(y, stride, width, _)| read_code(y, stride, width as usize)) {
            Some(code) => {
                let age = (now_ms as u16).wrapping_sub(code);
                a.g2g_ms.push(f64::from(age));
            }
            None => a.undecodable += 1,
        }
    })
}

/// `videotestsrc is-live=true ! capsfilter(WIDTHxHEIGHT I420 @15)` in `pipeline`, stamped with
/// the clock ([`clock_stamp_pad`]); returns the capsfilter to link on.
pub fn clock_stamped_video_source(
    pipeline: &gst::Bin,
    width: i32,
    height: i32,
    sent: Arc<std::sync::atomic::AtomicU64>,
) -> anyhow::Result<gst::Element> {
    let src = gst::ElementFactory::make("videotestsrc")
        .property("is-live", true)
        .property_from_str("pattern", "smpte")
        .build()?;
    let caps = gst::ElementFactory::make("capsfilter")
        .property(
            "caps",
            gst::Caps::builder("video/x-raw")
                .field("format", "I420")
                .field("width", width)
                .field("height", height)
                .field("framerate", gst::Fraction::new(FPS, 1))
                .build(),
        )
        .build()?;
    pipeline.add_many([&src, &caps])?;
    src.link(&caps)?;
    clock_stamp_pad(&caps.static_pad("src").ok_or_else(|| anyhow::anyhow!("no src pad"))?, sent);
    Ok(caps)
}

/// What one load process (a density caller or consumer) measured in its window, printed as
/// one line `DENSITY-RESULT {json}` after `stop` on its stdin.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct LoadResult {
    /// Frames its source captured in the window (0 for a consumer: the producer counts).
    pub frames_sent: u64,
    /// Decoded frames it received in the window.
    pub frames_received: u64,
    /// Glass-to-glass latency of each frame whose stamp was read, ms.
    pub g2g_ms: Vec<f64>,
    /// The window's length, s.
    pub secs: f64,
}

/// The load processes' protocol on stdin/stdout: prints `FIRST-FRAME` once a frame came
/// (`FAILED reason` when none did within `timeout`), then on `start` resets the counters,
/// on `stop` prints `DENSITY-RESULT {json}` and returns.
pub fn serve_load_window(
    arrivals: &Arc<Mutex<Arrivals>>,
    sent: &Arc<std::sync::atomic::AtomicU64>,
    timeout: Duration,
    failed: impl Fn() -> Option<String>,
) -> anyhow::Result<()> {
    use std::io::{BufRead, Write};
    use std::sync::atomic::Ordering;
    let deadline = Instant::now() + timeout;
    loop {
        if arrivals.lock().unwrap_or_else(|e| e.into_inner()).first_frame.is_some() {
            break;
        }
        if let Some(why) = failed() {
            println!("FAILED {why}");
            return Ok(());
        }
        if Instant::now() > deadline {
            println!("FAILED no decoded frame within {timeout:?}");
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    println!("FIRST-FRAME");
    std::io::stdout().flush()?;
    let mut started = Instant::now();
    let mut sent0 = 0;
    for line in std::io::stdin().lock().lines() {
        match line?.trim() {
            "start" => {
                let mut a = arrivals.lock().unwrap_or_else(|e| e.into_inner());
                a.frames = 0;
                a.g2g_ms.clear();
                a.undecodable = 0;
                sent0 = sent.load(Ordering::Relaxed);
                started = Instant::now();
            }
            "stop" => {
                let a = arrivals.lock().unwrap_or_else(|e| e.into_inner());
                let result = LoadResult {
                    frames_sent: sent.load(Ordering::Relaxed) - sent0,
                    frames_received: a.frames,
                    g2g_ms: a.g2g_ms.clone(),
                    secs: started.elapsed().as_secs_f64(),
                };
                println!("DENSITY-RESULT {}", serde_json::to_string(&result)?);
                std::io::stdout().flush()?;
                return Ok(());
            }
            _ => {}
        }
    }
    Ok(())
}

/// What a receiver saw: first decoded frame instant and glass-to-glass samples.
#[derive(Default)]
pub struct Arrivals {
    pub first_frame: Option<Instant>,
    pub frames: u64,
    pub g2g_ms: Vec<f64>,
    pub undecodable: u64,
}

/// A [`luma_reader`] reading the stamps of `stamper`'s frames.
pub fn stamp_reader(
    pipeline: &gst::Bin,
    stamper: Arc<Stamper>,
    arrivals: Arc<Mutex<Arrivals>>,
) -> anyhow::Result<gst::Pad> {
    luma_reader(pipeline, move |now, luma| {
        let mut a = arrivals.lock().unwrap_or_else(|e| e.into_inner());
        a.frames += 1;
        if a.first_frame.is_none() {
            a.first_frame = Some(now);
        }
        let decoded = luma.and_then(|(y, stride, width, _)| read_code(y, stride, width as usize));
        match decoded.and_then(|c| stamper.sent_at(c)) {
            Some(sent) => a.g2g_ms.push(now.duration_since(sent).as_secs_f64() * 1000.0),
            None => a.undecodable += 1,
        }
    })
}

/// `videotestsrc is-live=true ! capsfilter(640x480 I420 @15)` in `pipeline`, stamped by
/// `stamper`; returns the capsfilter to link on.
pub fn stamped_video_source(
    pipeline: &gst::Bin,
    stamper: &Arc<Stamper>,
) -> anyhow::Result<gst::Element> {
    let src = gst::ElementFactory::make("videotestsrc")
        .property("is-live", true)
        .property_from_str("pattern", "smpte")
        .build()?;
    let caps = gst::ElementFactory::make("capsfilter").property("caps", capture_caps()).build()?;
    pipeline.add_many([&src, &caps])?;
    src.link(&caps)?;
    stamper.stamp_pad(&caps.static_pad("src").ok_or_else(|| anyhow::anyhow!("no src pad"))?);
    Ok(caps)
}

/// `audiotestsrc is-live=true` in `pipeline`.
pub fn audio_source(pipeline: &gst::Bin) -> anyhow::Result<gst::Element> {
    let src = gst::ElementFactory::make("audiotestsrc")
        .property("is-live", true)
        .property("volume", 0.3f64)
        .build()?;
    pipeline.add(&src)?;
    Ok(src)
}

/// A `fakesink` for streams nobody measures.
pub fn discard(pipeline: &gst::Bin, pad: &gst::Pad) -> anyhow::Result<()> {
    let sink = gst::ElementFactory::make("fakesink")
        .property("sync", false)
        .property("async", false)
        .build()?;
    pipeline.add(&sink)?;
    sink.sync_state_with_parent()?;
    pad.link(&sink.static_pad("sink").ok_or_else(|| anyhow::anyhow!("no sink pad"))?)?;
    Ok(())
}

/// A `fakesink` behind `audio/x-raw`, for received audio nobody measures but that is played
/// all the same: a source that decodes only when downstream wants raw (webrtcsrc) decodes
/// it, as a caller that plays the call's sound does.
pub fn discard_decoded_audio(pipeline: &gst::Bin, pad: &gst::Pad) -> anyhow::Result<()> {
    let raw = gst::ElementFactory::make("capsfilter")
        .property("caps", gst::Caps::new_empty_simple("audio/x-raw"))
        .build()?;
    pipeline.add(&raw)?;
    let raw_src = raw.static_pad("src").ok_or_else(|| anyhow::anyhow!("no src pad"))?;
    discard(pipeline, &raw_src)?;
    raw.sync_state_with_parent()?;
    pad.link(&raw.static_pad("sink").ok_or_else(|| anyhow::anyhow!("no sink pad"))?)?;
    Ok(())
}

/// CPU seconds (user + system) this process used so far.
pub fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    unsafe {
        let mut usage: libc_rusage = std::mem::zeroed();
        if getrusage(0, &mut usage) != 0 {
            return 0.0;
        }
        let tv = |t: [i64; 2]| t[0] as f64 + t[1] as f64 / 1e6;
        tv(usage.ru_utime) + tv(usage.ru_stime)
    }
}

#[repr(C)]
struct libc_rusage {
    ru_utime: [i64; 2],
    ru_stime: [i64; 2],
    rest: [i64; 14],
}

unsafe extern "C" {
    fn getrusage(who: i32, usage: *mut libc_rusage) -> i32;
}

/// Resident memory of this process (VmRSS), MiB.
pub fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<f64>().ok()))
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// What one scenario measured; printed by the child process as one line
/// `BENCH-RESULT {json}`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ScenarioResult {
    /// Scenario name (`wilddog`, `webrtcbin-pair`, `webrtcsink`).
    pub name: String,
    /// What the setup time is measured from and to.
    pub setup_definition: String,
    /// Setup time of each measured call, ms.
    pub setup_ms: Vec<f64>,
    /// Glass-to-glass latency of each frame of the long call, ms.
    pub g2g_ms: Vec<f64>,
    /// Decoded frames of the long call whose stamp could not be read.
    pub g2g_unreadable: u64,
    /// Length of the long call's measuring window, s.
    pub call_secs: f64,
    /// Process CPU seconds per call-minute during the long call (both endpoints; for
    /// wilddog also the in-process signaling server).
    pub cpu_s_per_call_min: f64,
    /// Process resident memory during the long call, MiB (both endpoints).
    pub rss_mib: f64,
    /// Where the long call's CPU went: seconds per call-minute by thread name (threads of the
    /// same name summed, digits dropped), largest first.
    #[serde(default)]
    pub cpu_by_thread: Vec<(String, f64)>,
    /// Median time from the start of a setup to each of the caller's bus messages (ours only).
    #[serde(default)]
    pub setup_phases_ms: Vec<(String, f64)>,
    /// Free-form notes (what this scenario sends, in which directions).
    pub notes: String,
}

impl ScenarioResult {
    pub fn print(&self) {
        println!("BENCH-RESULT {}", serde_json::to_string(self).unwrap_or_default());
    }
}

/// The `q` quantile (0..=1) of `values` (nearest rank), `NaN` when empty.
pub fn percentile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

/// Measures CPU and memory over `window` after `settle`, collecting glass-to-glass samples
/// from `arrivals` in that window only.
pub fn measure_window(
    arrivals: &Arc<Mutex<Arrivals>>,
    settle: Duration,
    window: Duration,
) -> (Vec<f64>, u64, f64, f64) {
    let (g2g, unreadable, cpu, rss, _) = measure_window_threads(arrivals, settle, window);
    (g2g, unreadable, cpu, rss)
}

/// CPU seconds of each live thread of this process, by thread id: (name, seconds).
fn thread_cpu() -> HashMap<u64, (String, f64)> {
    thread_cpu_of("/proc/self")
}

/// CPU seconds of each live thread of the process at `proc_dir` (`/proc/PID`), by thread
/// id: (name without digits, seconds).
fn thread_cpu_of(proc_dir: &str) -> HashMap<u64, (String, f64)> {
    let mut out = HashMap::new();
    let ticks = 100.0; // USER_HZ on Linux
    let Ok(dir) = std::fs::read_dir(format!("{proc_dir}/task")) else { return out };
    for entry in dir.flatten() {
        let Ok(tid) = entry.file_name().to_string_lossy().parse::<u64>() else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // comm is in parentheses and may hold spaces; fields after it are space-separated.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
        let name: String = stat[open + 1..close].chars().filter(|c| !c.is_ascii_digit()).collect();
        let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        let (Some(u), Some(s)) = (fields.get(11), fields.get(12)) else { continue };
        let secs = (u.parse::<f64>().unwrap_or(0.0) + s.parse::<f64>().unwrap_or(0.0)) / ticks;
        out.insert(tid, (name, secs));
    }
    out
}

/// What another process (the one serving the calls) uses at one instant.
#[derive(Debug, Clone, Default)]
pub struct ProcSample {
    /// CPU seconds (user + system) so far.
    pub cpu_s: f64,
    /// Resident memory (VmRSS), MiB.
    pub rss_mib: f64,
    /// Threads.
    pub threads: u64,
    /// CPU seconds of each thread, by thread id: (name without digits, seconds).
    pub by_thread: HashMap<u64, (String, f64)>,
}

/// Samples process `pid` from `/proc`; `None` once it is gone.
pub fn sample_process(pid: u32) -> Option<ProcSample> {
    let dir = format!("/proc/{pid}");
    let status = std::fs::read_to_string(format!("{dir}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let stat = std::fs::read_to_string(format!("{dir}/stat")).ok()?;
    let close = stat.rfind(')')?;
    let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    Some(ProcSample {
        cpu_s: (ticks(11) + ticks(12)) / 100.0,
        rss_mib: field("VmRSS:") / 1024.0,
        threads: field("Threads:") as u64,
        by_thread: thread_cpu_of(&dir),
    })
}

/// CPU seconds per thread name between two samples of one process, largest first.
pub fn cpu_by_thread_name(before: &ProcSample, after: &ProcSample) -> Vec<(String, f64)> {
    let mut by_name: HashMap<String, f64> = HashMap::new();
    for (tid, (name, secs)) in &after.by_thread {
        let was = before.by_thread.get(tid).map(|(_, s)| *s).unwrap_or(0.0);
        *by_name.entry(name.clone()).or_default() += secs - was;
    }
    let mut out: Vec<(String, f64)> = by_name.into_iter().filter(|(_, v)| *v > 0.0).collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1));
    out
}

/// [`measure_window`], plus the CPU per call-minute of each thread name.
pub fn measure_window_threads(
    arrivals: &Arc<Mutex<Arrivals>>,
    settle: Duration,
    window: Duration,
) -> (Vec<f64>, u64, f64, f64, Vec<(String, f64)>) {
    std::thread::sleep(settle);
    {
        let mut a = arrivals.lock().unwrap_or_else(|e| e.into_inner());
        a.g2g_ms.clear();
        a.undecodable = 0;
    }
    let threads0 = thread_cpu();
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    std::thread::sleep(window);
    let cpu = cpu_seconds() - cpu0;
    let secs = t0.elapsed().as_secs_f64();
    let threads1 = thread_cpu();
    let rss = rss_mib();
    let mut by_name: HashMap<String, f64> = HashMap::new();
    for (tid, (name, secs1)) in threads1 {
        let before = threads0.get(&tid).map(|(_, s)| *s).unwrap_or(0.0);
        *by_name.entry(name).or_default() += secs1 - before;
    }
    let mut by_thread: Vec<(String, f64)> = by_name
        .into_iter()
        .map(|(n, s)| (n, s / secs * 60.0))
        .filter(|(_, v)| *v >= 0.05)
        .collect();
    by_thread.sort_by(|a, b| b.1.total_cmp(&a.1));
    let a = arrivals.lock().unwrap_or_else(|e| e.into_inner());
    (a.g2g_ms.clone(), a.undecodable, cpu / secs * 60.0, rss, by_thread)
}

/// Waits until `arrivals` saw a first frame, up to `timeout`.
pub fn wait_first_frame(arrivals: &Arc<Mutex<Arrivals>>, timeout: Duration) -> Option<Instant> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(t) = arrivals.lock().unwrap_or_else(|e| e.into_inner()).first_frame {
            return Some(t);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}
