//! Measurement helpers of the shaped-network benchmark (`call-bench --network`), shared with
//! the webrtcsink anchor (which includes this file with `#[path]`) and mirrored by the
//! Chromium scenarios (benches/chromium/network.mjs).
//!
//! Content: `videotestsrc pattern=zone-plate kx2=20 ky2=20 kt=1`, 640x480 at 15 fps: moving
//! and textured, it compresses like a camera's picture (VP8 needs its whole 500 kbit/s for it
//! at 480p; a static test pattern needs 50 and hides what a slow link does).
//!
//! Glass-to-glass: each frame carries, in its top-left corner, the instant it was captured as
//! milliseconds since the Unix epoch modulo 65536 (two rows of 16 black/white 24x24 blocks:
//! the value and its complement), the same code the Chromium pages draw. A receiver reads it
//! back (scaled when the sender's congestion control scaled the picture down) and takes the
//! difference with its own clock modulo 65536: one system clock on one machine, so senders
//! and receivers may be different processes (a browser and a pipeline). A frame whose two
//! rows disagree is counted unreadable.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gst::prelude::*;
use gst_video::prelude::*;

/// Capture size and rate.
pub const WIDTH: u32 = 640;
pub const HEIGHT: u32 = 480;
pub const FPS: i32 = 15;
/// videotestsrc's properties for the content.
pub const CONTENT: &[(&str, &str)] =
    &[("pattern", "zone-plate"), ("kx2", "20"), ("ky2", "20"), ("kt", "1")];

const BLOCK: usize = 24;
const BITS: usize = 16;

/// Milliseconds since the Unix epoch.
pub fn epoch_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// `videotestsrc is-live=true <CONTENT> ! capsfilter(640x480 I420 @15)` in `pipeline`, each
/// frame stamped with its capture instant; returns the capsfilter to link on.
pub fn camera_like_source(pipeline: &gst::Bin) -> anyhow::Result<gst::Element> {
    let src = gst::ElementFactory::make("videotestsrc").property("is-live", true).build()?;
    for (k, v) in CONTENT {
        src.set_property_from_str(k, v);
    }
    let caps = gst::ElementFactory::make("capsfilter")
        .property(
            "caps",
            gst::Caps::builder("video/x-raw")
                .field("format", "I420")
                .field("width", WIDTH as i32)
                .field("height", HEIGHT as i32)
                .field("framerate", gst::Fraction::new(FPS, 1))
                .build(),
        )
        .build()?;
    pipeline.add_many([&src, &caps])?;
    src.link(&caps)?;
    let pad = caps.static_pad("src").ok_or_else(|| anyhow::anyhow!("no src pad"))?;
    pad.add_probe(gst::PadProbeType::BUFFER, |pad, info| {
        let Some(caps) = pad.current_caps() else { return gst::PadProbeReturn::Ok };
        let Ok(vinfo) = gst_video::VideoInfo::from_caps(&caps) else {
            return gst::PadProbeReturn::Ok;
        };
        if let Some(gst::PadProbeData::Buffer(buffer)) = &mut info.data
            && let Ok(mut frame) =
                gst_video::VideoFrameRef::from_buffer_ref_writable(buffer.make_mut(), &vinfo)
        {
            let stride = frame.plane_stride()[0] as usize;
            if let Ok(y) = frame.plane_data_mut(0) {
                write_code(y, stride, (epoch_ms() & 0xffff) as u16);
            }
        }
        gst::PadProbeReturn::Ok
    });
    Ok(caps)
}

fn write_code(y: &mut [u8], stride: usize, code: u16) {
    for row in 0..2 {
        let value = if row == 0 { code } else { !code };
        for bit in 0..BITS {
            let luma = if (value >> (BITS - 1 - bit)) & 1 == 1 { 235 } else { 16 };
            for dy in 0..BLOCK {
                let start = (row * BLOCK + dy) * stride + bit * BLOCK;
                if let Some(line) = y.get_mut(start..start + BLOCK) {
                    line.fill(luma);
                }
            }
        }
    }
}

/// The code of a decoded frame `width` pixels wide (the blocks scale with the picture): the
/// mean of the central third of each block.
fn read_code(y: &[u8], stride: usize, width: usize) -> Option<u16> {
    let scale = width as f64 / f64::from(WIDTH);
    let block = BLOCK as f64 * scale;
    let (lo, hi) = ((block / 3.0).floor() as usize, ((2.0 * block) / 3.0).ceil() as usize);
    if hi <= lo {
        return None;
    }
    let mut values = [0u16; 2];
    for (row, value) in values.iter_mut().enumerate() {
        for bit in 0..BITS {
            let (x0, y0) = ((bit as f64 * block) as usize, (row as f64 * block) as usize);
            let (mut sum, mut n) = (0u32, 0u32);
            for dy in lo..hi {
                let start = (y0 + dy) * stride + x0 + lo;
                for &v in y.get(start..start + (hi - lo))? {
                    sum += u32::from(v);
                    n += 1;
                }
            }
            *value = (*value << 1) | u16::from(sum / n.max(1) > 125);
        }
    }
    (values[0] == !values[1]).then_some(values[0])
}

/// What a receiver saw, from the start of the measurement.
#[derive(Debug, Default)]
pub struct Received {
    /// When measuring began (`None`: not yet; frames before are not kept).
    pub start: Option<Instant>,
    /// Seconds since the start at which each frame arrived.
    pub frames_s: Vec<f64>,
    /// Glass-to-glass of the frames whose stamp was readable, ms.
    pub g2g_ms: Vec<f64>,
    pub unreadable: u64,
    /// Size of the last frame.
    pub width: u32,
    pub height: u32,
    /// Frames before the start (the first tells the call is up).
    pub before: u64,
}

/// A [`crate::measure::luma_reader`] in `pipeline` recording what arrives into the returned
/// `Received`; returns the convert's sink pad to link decoded video to.
pub fn receiver(pipeline: &gst::Bin) -> anyhow::Result<(gst::Pad, Arc<Mutex<Received>>)> {
    let received = Arc::new(Mutex::new(Received::default()));
    let r = received.clone();
    let pad = crate::measure::luma_reader(pipeline, move |now, luma| {
        let now_ms = epoch_ms();
        let decoded = luma.map(|(y, stride, w, h)| (read_code(y, stride, w as usize), w, h));
        let mut r = r.lock().unwrap_or_else(|e| e.into_inner());
        let Some(start) = r.start else {
            r.before += 1;
            return;
        };
        r.frames_s.push(now.duration_since(start).as_secs_f64());
        match decoded {
            Some((code, w, h)) => {
                r.width = w;
                r.height = h;
                match code {
                    Some(c) => r.g2g_ms.push(((now_ms as u16).wrapping_sub(c)) as f64),
                    None => r.unreadable += 1,
                }
            }
            None => r.unreadable += 1,
        }
    })?;
    Ok((pad, received))
}

/// Waits until `received` got its first frame (the call is up), `timeout` at most.
pub fn wait_first_frame(received: &Arc<Mutex<Received>>, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if received.lock().unwrap_or_else(|e| e.into_inner()).before > 0 {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Sum of `bytes-sent` over the outbound RTP streams of a webrtcbin (`get-stats`).
pub fn outbound_bytes(webrtcbin: &gst::Element) -> Option<u64> {
    let promise = gst::Promise::new();
    webrtcbin.emit_by_name::<()>("get-stats", &[&None::<gst::Pad>, &promise]);
    if promise.wait() != gst::PromiseResult::Replied {
        return None;
    }
    let reply = promise.get_reply()?;
    let mut bytes = 0;
    for (_, value) in reply.iter() {
        if let Ok(s) = value.get::<gst::Structure>()
            && s.get::<gst_webrtc::WebRTCStatsType>("type")
                == Ok(gst_webrtc::WebRTCStatsType::OutboundRtp)
        {
            bytes += s.get::<u64>("bytes-sent").unwrap_or(0);
        }
    }
    Some(bytes)
}

/// One measured direction of one call on one link.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct NetResult {
    /// Scenario: `wilddog`, `webrtcsink`, `chromium`, `gst-to-chromium`, `chromium-to-gst`.
    pub scenario: String,
    /// The link (filled in by the runner).
    #[serde(default)]
    pub link: String,
    pub secs: f64,
    /// Seconds since the measurement's start at which the receiver got each frame.
    pub frames_s: Vec<f64>,
    pub g2g_ms: Vec<f64>,
    pub unreadable: u64,
    /// (seconds since the start, total bytes the measured direction's sender had sent).
    pub sent: Vec<(f64, u64)>,
    #[serde(default)]
    pub notes: String,
}

impl NetResult {
    /// The line the runner collects.
    pub fn print(&self) {
        if let Ok(json) = serde_json::to_string(self) {
            println!("NET-RESULT {json}");
        }
    }
}

/// Marks the start of the measurement for the link shaper (a step link changes 10 s and 20 s
/// after it).
pub fn announce_start() {
    use std::io::Write;
    println!("NET-START");
    let _ = std::io::stdout().flush();
}

/// Measures `secs` from now: sets `received`'s start, samples `sent_bytes` every 500 ms.
pub fn measure(
    scenario: &str,
    secs: f64,
    received: &Arc<Mutex<Received>>,
    sent_bytes: impl Fn() -> Option<u64>,
) -> NetResult {
    let start = Instant::now();
    received.lock().unwrap_or_else(|e| e.into_inner()).start = Some(start);
    announce_start();
    let mut sent: Vec<(f64, u64)> = Vec::new();
    while start.elapsed().as_secs_f64() < secs {
        if let Some(b) = sent_bytes() {
            // A stats reply now and then lacks a stream (the RTX one): the total never goes
            // back.
            let b = b.max(sent.last().map(|s| s.1).unwrap_or(0));
            sent.push((start.elapsed().as_secs_f64(), b));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let r = received.lock().unwrap_or_else(|e| e.into_inner());
    NetResult {
        scenario: scenario.into(),
        link: String::new(),
        secs,
        frames_s: r.frames_s.clone(),
        g2g_ms: r.g2g_ms.clone(),
        unreadable: r.unreadable,
        sent,
        notes: format!("last frame {}x{}", r.width, r.height),
    }
}
