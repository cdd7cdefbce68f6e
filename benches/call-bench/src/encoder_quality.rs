//! `call-bench --encoder-quality`: what each VP8 encoder speed costs and what picture it
//! gives, so that the density benchmark's "equal received quality" is a measurement and not
//! an assumption (docs/benchmarks.md, "Density").
//!
//! For each setting and content: 640x480 at 15 fps, 500 kbit/s, a fixed number of frames from
//! `videotestsrc` (not live: every frame is encoded, none dropped), encoded, decoded by
//! `vp8dec`, and compared with the frame that went in (matched by timestamp). Per setting:
//! the mean luma PSNR, its 10th percentile over the frames, the encoder's CPU time per frame
//! (its thread's, between its sink and src pads) and the bitrate it made.
//!
//! Settings: ours, each `encoder-speed`, from the plugin's own chain (`media::codec_elements`,
//! the encoder exactly as a call sets it up, CPU adaptation off); and webrtcsink's, its
//! `configure_encoder` for vp8enc (gst-plugins-rs `net/webrtc/src/webrtcsink/imp.rs`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use gst::prelude::*;
use gst_video::prelude::*;
use gstwilddog::cpu_adaptation::EncoderSpeed;
use gstwilddog::media;

const WIDTH: u32 = 640;
const HEIGHT: u32 = 480;
const FPS: i32 = 15;
const BITRATE_KBPS: u32 = 500;

/// The pictures: the density benchmark's (a still SMPTE pattern) and the shaped-network
/// benchmark's (a moving zone plate, which compresses like a camera's picture).
const CONTENTS: &[(&str, &str)] = &[
    ("smpte (density)", "pattern=smpte"),
    ("zone plate (network)", "pattern=zone-plate kx2=20 ky2=20 kt=1"),
];

#[derive(Clone, Copy)]
enum Setting {
    Ours(EncoderSpeed),
    Webrtcsink,
}

impl Setting {
    fn name(self) -> &'static str {
        match self {
            Setting::Ours(EncoderSpeed::Quality) => "wilddogcall encoder-speed=quality (-6)",
            Setting::Ours(EncoderSpeed::Balanced) => "wilddogcall encoder-speed=balanced (-10)",
            Setting::Ours(EncoderSpeed::Fast) => "wilddogcall encoder-speed=fast (-16)",
            Setting::Webrtcsink => "webrtcsink (its vp8enc set-up, -16)",
        }
    }

    fn encoder(self) -> Result<gst::Element> {
        match self {
            Setting::Ours(speed) => {
                let params = media::VideoParams {
                    codec: media::VideoCodec::Vp8,
                    width: WIDTH,
                    height: HEIGHT,
                    max_fps: FPS as u32,
                    bitrate_kbps: BITRATE_KBPS,
                    payload: 96,
                    cpu_adaptation: false,
                    encoder_speed: speed,
                };
                let elements = media::codec_elements(&params)?;
                elements.into_iter().next().context("no encoder in the codec chain")
            }
            Setting::Webrtcsink => {
                // webrtcsink's configure_encoder for "vp8enc" (gst-plugins-rs 0.15).
                let enc = gst::ElementFactory::make("vp8enc").build()?;
                enc.set_property("deadline", 1i64);
                enc.set_property("target-bitrate", (BITRATE_KBPS * 1000) as i32);
                enc.set_property("cpu-used", -16i32);
                enc.set_property("keyframe-max-dist", 2000i32);
                enc.set_property_from_str("keyframe-mode", "disabled");
                enc.set_property_from_str("end-usage", "cbr");
                enc.set_property("buffer-initial-size", 100i32);
                enc.set_property("buffer-optimal-size", 120i32);
                enc.set_property("buffer-size", 150i32);
                enc.set_property("max-intra-bitrate", 250i32);
                enc.set_property_from_str("error-resilient", "default");
                enc.set_property("lag-in-frames", 0i32);
                Ok(enc)
            }
        }
    }
}

/// The calling thread's CPU time.
fn thread_cpu_time() -> Duration {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec, which `t` is.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

struct Measured {
    psnr_mean: f64,
    psnr_p10: f64,
    encode_ms: f64,
    kbps: f64,
}

/// Luma PSNR of `a` against `b` (same size), dB; 99 for identical planes.
fn luma_psnr(
    a: &gst_video::VideoFrameRef<&gst::BufferRef>,
    b: &gst_video::VideoFrameRef<&gst::BufferRef>,
) -> Result<f64> {
    let (pa, pb) = (a.plane_data(0)?, b.plane_data(0)?);
    let (sa, sb) = (a.plane_stride()[0] as usize, b.plane_stride()[0] as usize);
    let (w, h) = (a.width() as usize, a.height() as usize);
    let mut sum = 0u64;
    for y in 0..h {
        let ra = &pa[y * sa..y * sa + w];
        let rb = &pb[y * sb..y * sb + w];
        sum += ra
            .iter()
            .zip(rb)
            .map(|(&x, &y)| (i32::from(x) - i32::from(y)).pow(2) as u64)
            .sum::<u64>();
    }
    let mse = sum as f64 / (w * h) as f64;
    Ok(if mse == 0.0 { 99.0 } else { 10.0 * (255.0 * 255.0 / mse).log10() })
}

fn measure(setting: Setting, content: &str, frames: usize) -> Result<Measured> {
    let pipeline = gst::parse::launch(&format!(
        "videotestsrc {content} num-buffers={frames} ! video/x-raw,format=I420,width={WIDTH},height={HEIGHT},framerate={FPS}/1 ! tee name=t \
         t. ! queue max-size-buffers=0 max-size-bytes=0 max-size-time=0 ! appsink name=reference sync=false \
         t. ! queue name=encode_in max-size-buffers=0 max-size-bytes=0 max-size-time=0 \
         queue name=decode_in max-size-buffers=0 max-size-bytes=0 max-size-time=0 ! vp8dec threads=1 ! appsink name=decoded sync=false"
    ))?
    .downcast::<gst::Pipeline>()
    .map_err(|_| anyhow::anyhow!("not a pipeline"))?;
    // The encoder goes between `encode_in` and the decoder.
    let before = pipeline.by_name("encode_in").context("queue")?;
    let after = pipeline.by_name("decode_in").context("decoder's queue")?;
    // `--vp8enc-props`, on every setting's encoder: what one property costs or buys.
    crate::scenarios::override_vp8enc(&pipeline);
    let encoder = setting.encoder()?;
    pipeline.add(&encoder)?;
    gst::Element::link_many([&before, &encoder, &after])?;

    // Encode time: the CPU time of the encoder's thread from its sink pad to its src pad,
    // one frame at a time (lag-in-frames 0); the decoder runs on a thread of its own.
    let entered: Arc<Mutex<Option<Duration>>> = Arc::default();
    let encode_total: Arc<Mutex<(Duration, usize, u64)>> = Arc::default();
    {
        let entered = entered.clone();
        encoder.static_pad("sink").context("sink")?.add_probe(
            gst::PadProbeType::BUFFER,
            move |_, _| {
                *entered.lock().unwrap_or_else(|e| e.into_inner()) = Some(thread_cpu_time());
                gst::PadProbeReturn::Ok
            },
        );
    }
    {
        let encode_total = encode_total.clone();
        encoder.static_pad("src").context("src")?.add_probe(
            gst::PadProbeType::BUFFER,
            move |_, info| {
                let size = info.buffer().map_or(0, |b| b.size() as u64);
                let at = entered.lock().unwrap_or_else(|e| e.into_inner()).take();
                let mut t = encode_total.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(at) = at {
                    t.0 += thread_cpu_time().saturating_sub(at);
                    t.1 += 1;
                }
                t.2 += size;
                gst::PadProbeReturn::Ok
            },
        );
    }

    let reference = pipeline
        .by_name("reference")
        .context("reference")?
        .downcast::<gst_app::AppSink>()
        .map_err(|_| anyhow::anyhow!("appsink"))?;
    let decoded = pipeline
        .by_name("decoded")
        .context("decoded")?
        .downcast::<gst_app::AppSink>()
        .map_err(|_| anyhow::anyhow!("appsink"))?;
    pipeline.set_state(gst::State::Playing)?;
    let mut references: HashMap<gst::ClockTime, gst::Sample> = HashMap::new();
    let mut psnrs = Vec::with_capacity(frames);
    while let Some(out) = decoded.try_pull_sample(gst::ClockTime::from_seconds(30)) {
        let buffer = out.buffer().context("decoded buffer")?;
        let pts = buffer.pts().context("decoded pts")?;
        while !references.contains_key(&pts) {
            let Some(r) = reference.try_pull_sample(gst::ClockTime::from_seconds(5)) else {
                bail!("no reference frame at {pts}");
            };
            let rpts = r.buffer().and_then(|b| b.pts()).context("reference pts")?;
            references.insert(rpts, r);
        }
        let r = references.remove(&pts).context("reference")?;
        let info_out = gst_video::VideoInfo::from_caps(out.caps().context("caps")?)?;
        let info_ref = gst_video::VideoInfo::from_caps(r.caps().context("caps")?)?;
        let f_out = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &info_out)?;
        let f_ref = gst_video::VideoFrameRef::from_buffer_ref_readable(
            r.buffer().context("ref buffer")?,
            &info_ref,
        )?;
        psnrs.push(luma_psnr(&f_out, &f_ref)?);
        if decoded.is_eos() {
            break;
        }
    }
    pipeline.set_state(gst::State::Null)?;
    if psnrs.len() < frames * 9 / 10 {
        bail!("{}: {} of {frames} frames decoded", setting.name(), psnrs.len());
    }
    let (encode, encoded, bytes) = *encode_total.lock().unwrap_or_else(|e| e.into_inner());
    let mut sorted = psnrs.clone();
    sorted.sort_by(f64::total_cmp);
    Ok(Measured {
        psnr_mean: psnrs.iter().sum::<f64>() / psnrs.len() as f64,
        psnr_p10: sorted[sorted.len() / 10],
        encode_ms: encode.as_secs_f64() * 1000.0 / encoded.max(1) as f64,
        kbps: bytes as f64 * 8.0 / 1000.0 / (frames as f64 / f64::from(FPS)),
    })
}

/// Prints one table row per content and setting.
pub fn run(frames: usize) -> Result<()> {
    gst::init()?;
    gstwilddog::plugin_register_static()?;
    let settings = [
        Setting::Ours(EncoderSpeed::Quality),
        Setting::Ours(EncoderSpeed::Balanced),
        Setting::Ours(EncoderSpeed::Fast),
        Setting::Webrtcsink,
    ];
    println!("VP8, {WIDTH}x{HEIGHT} at {FPS} fps, {BITRATE_KBPS} kbit/s, {frames} frames each");
    println!();
    println!(
        "| content | setting | luma PSNR mean dB | PSNR p10 dB | encode CPU ms/frame | kbit/s made |"
    );
    println!("|---|---|---|---|---|---|");
    for (content_name, content) in CONTENTS {
        for setting in settings {
            let m = measure(setting, content, frames)?;
            println!(
                "| {content_name} | {} | {:.2} | {:.2} | {:.2} | {:.0} |",
                setting.name(),
                m.psnr_mean,
                m.psnr_p10,
                m.encode_ms,
                m.kbps
            );
        }
    }
    Ok(())
}
