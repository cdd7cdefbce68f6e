//! Media of a call: the original's dimensions and bitrates, and the encoder and decoder
//! chains per codec that sit between the elements' raw pads and webrtcbin.

use std::sync::LazyLock;

use gst::glib;
use gst::prelude::*;

/// The sending and receiving chains' own decisions (key frame requests asked, held and
/// answered), which no element of ours owns.
static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "wilddogmedia",
        gst::DebugColorFlags::empty(),
        Some("Wilddog call media chains"),
    )
});

/// The original's video sizes (`createLocalStream({dimension})`).
pub const DIMENSIONS: &[(&str, u32, u32)] = &[
    ("120p", 160, 120),
    ("240p", 320, 240),
    ("360p", 480, 360),
    ("480p", 640, 480),
    ("720p", 1280, 720),
    ("1080p", 1920, 1080),
];

/// Lowest bitrate a user may ask for, kbps (the original clamps to 50..2048).
pub const MIN_BITRATE_KBPS: u32 = 50;
/// Highest bitrate a user may ask for, kbps.
pub const MAX_BITRATE_KBPS: u32 = 2048;

/// Width and height of a dimension name (`"480p"` → 640x480), `None` if unknown.
pub fn dimension_size(name: &str) -> Option<(u32, u32)> {
    DIMENSIONS.iter().find(|(n, _, _)| n.eq_ignore_ascii_case(name.trim())).map(|&(_, w, h)| (w, h))
}

/// The original's default (min, max) bitrate in kbps for a dimension: 200..500 up to 480p,
/// 200..1024 for 720p and 1080p.
pub fn default_bitrates(name: &str) -> (u32, u32) {
    match dimension_size(name) {
        Some((_, h)) if h >= 720 => (200, 1024),
        _ => (200, 500),
    }
}

/// Clamps a user's bitrate to the original's range.
pub fn clamp_bitrate(kbps: u32) -> u32 {
    kbps.clamp(MIN_BITRATE_KBPS, MAX_BITRATE_KBPS)
}

/// Video codecs a call may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, glib::Enum, Default)]
#[repr(i32)]
#[enum_type(name = "GstWilddogVideoCodec")]
pub enum VideoCodec {
    /// VP8 (libvpx), what the original and every browser speak.
    #[default]
    #[enum_value(name = "VP8", nick = "vp8")]
    Vp8 = 0,
    /// H.264 (x264enc or openh264enc, when installed).
    #[enum_value(name = "H.264", nick = "h264")]
    H264 = 1,
    /// VP9 (libvpx, when installed).
    #[enum_value(name = "VP9", nick = "vp9")]
    Vp9 = 2,
}

impl VideoCodec {
    /// The RTP encoding name.
    pub fn encoding_name(self) -> &'static str {
        match self {
            VideoCodec::Vp8 => "VP8",
            VideoCodec::H264 => "H264",
            VideoCodec::Vp9 => "VP9",
        }
    }

    /// Payload type our offers use (Chromium's numbers where they have one).
    pub fn default_payload(self) -> u32 {
        match self {
            VideoCodec::Vp8 => 96,
            VideoCodec::H264 => 102,
            VideoCodec::Vp9 => 98,
        }
    }

    /// Encoder factories tried in order.
    fn encoders(self) -> &'static [&'static str] {
        match self {
            VideoCodec::Vp8 => &["vp8enc"],
            VideoCodec::H264 => &["x264enc", "openh264enc"],
            VideoCodec::Vp9 => &["vp9enc"],
        }
    }

    /// Whether an encoder for this codec is installed.
    pub fn available(self) -> bool {
        self.encoders().iter().any(|f| gst::ElementFactory::find(f).is_some())
    }
}

/// Payload type of Opus in our offers (Chromium's).
pub const OPUS_PAYLOAD: u32 = 111;

/// What a call sends: the video settings of the `wilddogcall` properties.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoParams {
    /// Codec.
    pub codec: VideoCodec,
    /// Output width.
    pub width: u32,
    /// Output height.
    pub height: u32,
    /// Frame rate ceiling.
    pub max_fps: u32,
    /// Target bitrate, kbps.
    pub bitrate_kbps: u32,
    /// RTP payload type.
    pub payload: u32,
    /// Whether the encoder's speed follows its CPU load (`cpu-adaptation`, see
    /// [`crate::cpu_adaptation`]); off, it keeps the slowest.
    pub cpu_adaptation: bool,
    /// The slowest speed of the video encoder (`encoder-speed`): where it starts.
    pub encoder_speed: crate::cpu_adaptation::EncoderSpeed,
}

/// The RTP caps a video transceiver prefers (its `codec-preferences`).
pub fn video_rtp_caps(codec: VideoCodec, payload: u32) -> gst::Caps {
    let mut s = gst::Structure::builder("application/x-rtp")
        .field("media", "video")
        .field("encoding-name", codec.encoding_name())
        .field("clock-rate", 90000i32)
        .field("payload", payload as i32)
        // Key frame requests, which the sending chain answers (the encoder gets them from
        // rtpsession through the payloader). No `rtcp-fb-nack`: webrtcbin adds it, with the
        // RTX payload type that answers it, on a transceiver with `do-nack`.
        .field("rtcp-fb-nack-pli", true)
        .field("rtcp-fb-ccm-fir", true)
        .build();
    if codec == VideoCodec::H264 {
        s.set("packetization-mode", "1");
        s.set("profile-level-id", "42e01f");
        s.set("level-asymmetry-allowed", "1");
    }
    gst::Caps::builder_full().structure(s).build()
}

/// The RTP caps of the audio transceiver (Opus).
pub fn audio_rtp_caps(payload: u32) -> gst::Caps {
    gst::Caps::builder("application/x-rtp")
        .field("media", "audio")
        .field("encoding-name", "OPUS")
        .field("clock-rate", 48000i32)
        .field("encoding-params", "2")
        .field("payload", payload as i32)
        .field("minptime", "10")
        .field("useinbandfec", "1")
        .build()
}

/// Why a media chain could not be built.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// A GStreamer element is not installed.
    #[error("GStreamer element `{0}` is not installed")]
    Missing(String),
    /// No encoder is installed for the codec.
    #[error("no encoder for {0:?} is installed")]
    NoEncoder(VideoCodec),
    /// Linking failed (a bug, or incompatible caps).
    #[error("could not link the media chain: {0}")]
    Link(String),
    /// No depayloader and decoder for the encoding are installed.
    #[error("no decoder for {0} is installed")]
    NoDecoder(String),
}

/// Why a property cannot take a value given as text.
#[derive(Debug, thiserror::Error)]
pub enum PropertyError {
    /// The text is not a value of the property's type (a word for a number, an unknown nick).
    #[error("`{value}` is not a valid value for {name}")]
    Parse { name: String, value: String },
    /// The value is of the right type but outside what the property accepts (its range).
    #[error("{value} is out of range for {name}")]
    OutOfRange { name: String, value: String },
    /// The property cannot be set after construction.
    #[error("{name} is not writable")]
    NotWritable { name: String },
}

/// `text` as a value of `pspec`, checked the way GObject checks a value set: a value that
/// parses but is out of the property's range is refused here, where glib's `set_property`
/// would panic on it ("can't be set from given value, it is invalid or out of range").
/// Strings are taken as they are.
pub fn property_value(pspec: &glib::ParamSpec, text: &str) -> Result<glib::Value, PropertyError> {
    use glib::translate::{ToGlibPtr, ToGlibPtrMut};
    let name = pspec.name();
    let flags = pspec.flags();
    if !flags.contains(glib::ParamFlags::WRITABLE)
        || flags.contains(glib::ParamFlags::CONSTRUCT_ONLY)
    {
        return Err(PropertyError::NotWritable { name: name.to_owned() });
    }
    let value = if pspec.value_type() == glib::Type::STRING {
        text.to_value()
    } else {
        glib::Value::deserialize_with_pspec(text, pspec)
            .ok()
            .filter(|v| v.type_().is_a(pspec.value_type()))
            .ok_or_else(|| PropertyError::Parse { name: name.to_owned(), value: text.to_owned() })?
    };
    // What `set_property` checks before it panics: whether validating the value against the
    // ParamSpec changes it. `ParamSpec::value_is_valid` does this without unsafe code but
    // needs glib's `v2_74` feature, which would rebuild the whole GStreamer binding stack.
    let mut probe = value.clone();
    // SAFETY: both pointers are valid for the call: `pspec` is borrowed, and `probe` is an
    // owned, initialized GValue of the ParamSpec's type (checked above) that only this
    // function sees.
    let changed = unsafe {
        glib::gobject_ffi::g_param_value_validate(
            pspec.to_glib_none().0,
            probe.to_glib_none_mut().0,
        ) != glib::ffi::GFALSE
    };
    if changed && !flags.contains(glib::ParamFlags::LAX_VALIDATION) {
        return Err(PropertyError::OutOfRange { name: name.to_owned(), value: text.to_owned() });
    }
    Ok(value)
}

/// Sets a property of `object` from its text form, never panicking: `Ok(false)` when it has
/// no such property, an error when the property refuses the value (see [`property_value`]).
pub fn try_set_str(
    object: &impl IsA<glib::Object>,
    name: &str,
    value: &str,
) -> Result<bool, PropertyError> {
    let Some(pspec) = object.find_property(name) else { return Ok(false) };
    let v = property_value(&pspec, value)?;
    object.set_property_from_value(name, &v);
    Ok(true)
}

/// Sets a property from its string form when the element has it: element versions differ
/// in property types (gint vs guint), and a missing tuning knob must never fail a call. A
/// value the property refuses (a payload type a peer chose out of range) is logged: a panic
/// here would kill the thread building the media, and with it every later call.
pub fn set_str(element: &gst::Element, name: &str, value: &str) {
    if let Err(e) = try_set_str(element, name, value) {
        gst::warning!(gst::CAT_DEFAULT, obj = element, "cannot set {name}={value}: {e}");
    }
}

/// Makes an element, with a clear error when its plugin is missing.
pub fn make(factory: &str) -> Result<gst::Element, MediaError> {
    gst::ElementFactory::make(factory).build().map_err(|_| MediaError::Missing(factory.to_owned()))
}

fn link_all(bin: &gst::Bin, elements: &[&gst::Element]) -> Result<(), MediaError> {
    bin.add_many(elements.iter().copied()).map_err(|e| MediaError::Link(e.to_string()))?;
    gst::Element::link_many(elements.iter().copied())
        .map_err(|e| MediaError::Link(e.to_string()))?;
    Ok(())
}

fn ghost(bin: &gst::Bin, first: &gst::Element, last: &gst::Element) -> Result<(), MediaError> {
    let src = last.static_pad("src").ok_or_else(|| MediaError::Link("no src pad".into()))?;
    let gsrc = gst::GhostPad::builder_with_target(&src)
        .map_err(|e| MediaError::Link(e.to_string()))?
        .name("src")
        .build();
    add_ghost_pads(bin, first, gsrc)
}

/// [`ghost`] for a sending chain, which outlives the peer connections it is linked to: what
/// a torn-down webrtcbin answers a push (`flushing`, `not-linked`) comes back to the chain as
/// `ok`. Answered `flushing`, the chain's queue paused and the user's source stopped for
/// good, and every later call got no media from it. [`detach_sender`] unlinks a chain between
/// two pushes so that this does not happen, but a push held in the webrtcbin longer than it
/// waits (a loaded machine: a CI run) came back `flushing` when the webrtcbin went to NULL.
fn ghost_sender(
    bin: &gst::Bin,
    first: &gst::Element,
    last: &gst::Element,
) -> Result<(), MediaError> {
    fn outlive_the_peer(
        flow: Result<gst::FlowSuccess, gst::FlowError>,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        match flow {
            Err(gst::FlowError::Flushing | gst::FlowError::NotLinked) => Ok(gst::FlowSuccess::Ok),
            other => other,
        }
    }
    let src = last.static_pad("src").ok_or_else(|| MediaError::Link("no src pad".into()))?;
    let gsrc = gst::GhostPad::builder_with_target(&src)
        .map_err(|e| MediaError::Link(e.to_string()))?
        .name("src")
        .proxy_pad_chain_function(|pad, parent, buffer| {
            outlive_the_peer(gst::ProxyPad::chain_default(pad, parent, buffer))
        })
        .proxy_pad_chain_list_function(|pad, parent, list| {
            outlive_the_peer(gst::ProxyPad::chain_list_default(pad, parent, list))
        })
        .build();
    add_ghost_pads(bin, first, gsrc)
}

/// Adds a sink ghost pad for `first` and `gsrc` to `bin`.
fn add_ghost_pads(
    bin: &gst::Bin,
    first: &gst::Element,
    gsrc: gst::GhostPad,
) -> Result<(), MediaError> {
    let sink = first.static_pad("sink").ok_or_else(|| MediaError::Link("no sink pad".into()))?;
    let gsink = gst::GhostPad::builder_with_target(&sink)
        .map_err(|e| MediaError::Link(e.to_string()))?
        .name("sink")
        .build();
    bin.add_pad(&gsink).map_err(|e| MediaError::Link(e.to_string()))?;
    bin.add_pad(&gsrc).map_err(|e| MediaError::Link(e.to_string()))?;
    Ok(())
}

/// How far ahead of the clock a buffer entering a sending chain may be stamped.
const MAX_LEAD: gst::ClockTime = gst::ClockTime::from_mseconds(40);

/// How far behind the clock the sending chain's offset may leave a buffer before it is
/// taken back (see [`keep_to_the_clock`]): more than a live source's latency, so a stream
/// stamped ahead on purpose (rtpbin's lip-sync offset) keeps its offset.
const MAX_LAG: gst::ClockTime = gst::ClockTime::from_seconds(1);

/// Keeps the timestamps of what enters a sending chain (at `queue`, its first element) from
/// running ahead of the clock, in a live pipeline: webrtcbin (1.22) holds every buffer it
/// sends until its time (a `clocksync` before rtpbin), and a chain fed from a receiving side
/// (an echo, a gateway) gets buffers stamped hundreds of ms ahead (rtpbin's lip-sync offset):
/// the chain's thread waited that long for each while its short leaky queue dropped what came
/// meanwhile, so an echo sent a half or a third of the frames, that much later. A buffer more
/// than [`MAX_LEAD`] ahead moves the stream's offset forward to bring it back to the clock.
///
/// The offset goes back only when the buffers fall [`MAX_LAG`] behind the clock with it: one
/// bogus buffer hours ahead (a source stamping with a clock's absolute time) otherwise set
/// it to hours, every later buffer of the call was stamped 0, and the frame-rate limiter
/// passed none of them: the call's video stopped for good.
///
/// A source that is not live (a file, a test pattern without `is-live`) is paced instead, by
/// `pace` (a `clocksync` before the queue, made to sync at the first buffer): it pushed as
/// fast as the machine allowed, the short leaky queue passed a few frames stamped ever
/// further ahead, and webrtcbin's own wait for their time held the chain: a call with such a
/// source sent ten video packets, or no audio at all, and looked healthy.
fn keep_to_the_clock(queue: &gst::Element, pace: &gst::Element) {
    let Some(pad) = queue.static_pad("sink") else { return };
    let pace = pace.downgrade();
    // (the upstream is live, the offset so far)
    let state: std::sync::Mutex<(Option<bool>, gst::ClockTime)> =
        std::sync::Mutex::new((None, gst::ClockTime::ZERO));
    pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
        let Some(gst::PadProbeData::Buffer(buffer)) = &mut info.data else {
            return gst::PadProbeReturn::Ok;
        };
        let Some(pts) = buffer.pts() else { return gst::PadProbeReturn::Ok };
        let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
        let live = *state.0.get_or_insert_with(|| {
            let mut query = gst::query::Latency::new();
            let answered = pad.peer_query(&mut query);
            let live = answered && query.result().0;
            // Only a source that says it is not live: one that does not answer (a test
            // harness pushing on a clock of its own) is left alone.
            if answered
                && !live
                && let Some(pace) = pace.upgrade()
            {
                gst::info!(gst::CAT_DEFAULT, obj = pad, "a source that is not live: paced");
                pace.set_property("sync", true);
            }
            live
        });
        if !live {
            return gst::PadProbeReturn::Ok;
        }
        let Some(element) = pad.parent_element() else { return gst::PadProbeReturn::Ok };
        let (Some(clock), Some(base)) = (element.clock(), element.base_time()) else {
            return gst::PadProbeReturn::Ok;
        };
        let now = clock.time().saturating_sub(base);
        let Some(segment) = pad.sticky_event::<gst::event::Segment>(0) else {
            return gst::PadProbeReturn::Ok;
        };
        let Some(segment) = segment.segment().downcast_ref::<gst::ClockTime>() else {
            return gst::PadProbeReturn::Ok;
        };
        let Some(running) = segment.to_running_time(pts) else { return gst::PadProbeReturn::Ok };
        let shifted = running.saturating_sub(state.1);
        if shifted > now + MAX_LEAD {
            state.1 += shifted - now;
        } else if state.1 > gst::ClockTime::ZERO
            && running.checked_sub(state.1).is_none_or(|shifted| shifted + MAX_LAG < now)
        {
            // The offset overshot: back to what brings this buffer to the clock.
            state.1 = running.saturating_sub(now);
        }
        if state.1 > gst::ClockTime::ZERO
            && let Some(pts) = segment.position_from_running_time(running.saturating_sub(state.1))
        {
            buffer.make_mut().set_pts(pts);
        }
        gst::PadProbeReturn::Ok
    });
}

/// The first element of a sending chain: a `clocksync` that passes everything until
/// [`keep_to_the_clock`] finds the source is not live, and paces it from then on.
fn pacer() -> Result<gst::Element, MediaError> {
    let pace = make("clocksync")?;
    set_str(&pace, "sync", "false");
    Ok(pace)
}

/// The video sending chain, raw video in, RTP out: `clocksync ! queue ! videoconvert !
/// videoscale ! <frame-rate limiter> ! capsfilter ! <encoder> ! <payloader>`.
/// Returns the bin and its encoder (for bitrate changes and key frame requests).
pub fn video_encoder_bin(params: &VideoParams) -> Result<(gst::Bin, gst::Element), MediaError> {
    let bin = gst::Bin::with_name("video-encoder");
    let queue = make("queue")?;
    queue.set_property("name", SEND_QUEUE);
    // A live call wants the newest frame, not a backlog.
    set_str(&queue, "max-size-buffers", "2");
    set_str(&queue, "max-size-bytes", "0");
    set_str(&queue, "max-size-time", "0");
    set_str(&queue, "leaky", "downstream");
    let pace = pacer()?;
    keep_to_the_clock(&queue, &pace);
    let convert = make("videoconvert")?;
    let scale = make("videoscale")?;
    // A token bucket over the timestamps (crate::framerate), not `videorate`: a fixed output
    // rate holds every frame until the next one arrives to decide whether to repeat it, a
    // whole frame time (66 ms at 15 fps) added to the glass-to-glass latency, and `drop-only`
    // dropped the frames of a stream at `max-fps` that came a little early (an echo sent 7
    // to 11 fps of a 15 fps call back). Congestion control lowers its rate at run time.
    let rate =
        crate::framerate::FrameRateLimiter::new(FRAME_RATE, f64::from(params.max_fps.max(1)))
            .upcast::<gst::Element>();
    let filter = gst::ElementFactory::make("capsfilter")
        .name(RAW_CAPS)
        .build()
        .map_err(|_| MediaError::Missing("capsfilter".into()))?;
    // Congestion control changes the size while frames flow: a frame already scaled to the
    // old size (or a source renegotiating meanwhile) is still accepted until the first frame
    // of the new size comes, instead of stopping the chain with not-negotiated (see
    // set_video_step).
    filter.set_property_from_str("caps-change-mode", "delayed");
    filter.set_property(
        "caps",
        gst::Caps::builder("video/x-raw")
            .field("format", "I420")
            .field("width", params.width as i32)
            .field("height", params.height as i32)
            .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
            .build(),
    );
    let codec = codec_elements(params)?;
    let mut chain = vec![&pace, &queue, &convert, &scale, &rate, &filter];
    chain.extend(codec.iter());
    link_all(&bin, &chain)?;
    ghost_sender(&bin, &pace, &codec[codec.len() - 1])?;
    drop_when_unlinked(&bin);
    // No frame is encoded before the transceiver is negotiated (has a mid): webrtcbin would
    // hold the first one at its sink pad until then, and with it this chain's streaming
    // thread, which would keep an answerer from switching the codec (switch_video_codec);
    // that frame would be stale when it went, and encoding for nobody is wasted CPU. The
    // first frame after the wait is made a key frame, so the peer decodes the first frame it
    // gets instead of asking for one (PLI) and waiting a round trip.
    // A payloader that must negotiate again (an answerer moving to the offer's payload type:
    // follow_payload_type) gets frames meanwhile: only a buffer makes it send its new caps
    // (the frames go no further than drop_when_unlinked).
    if let (Some(raw_src), Some(src)) = (filter.static_pad("src"), bin.static_pad("src")) {
        let src = src.downgrade();
        let waited = std::sync::atomic::AtomicBool::new(true);
        raw_src.add_probe(
            gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST,
            move |pad, _| {
                // Between calls (no webrtcbin) too: nobody to send to.
                let unnegotiated = match src.upgrade().and_then(|src| src.peer()) {
                    None => true,
                    Some(peer) => peer
                        .find_property("transceiver")
                        .and_then(|_| {
                            peer.property::<Option<gst_webrtc::WebRTCRTPTransceiver>>("transceiver")
                        })
                        .is_some_and(|t| t.mid().is_none()),
                };
                if unnegotiated {
                    // The payloader is the one the src pad targets (a codec switch replaces it).
                    let payloader_src = src
                        .upgrade()
                        .and_then(|p| p.downcast::<gst::GhostPad>().ok())
                        .and_then(|g| g.target());
                    if payloader_src.is_some_and(|p| p.needs_reconfigure()) {
                        return gst::PadProbeReturn::Ok;
                    }
                    waited.store(true, std::sync::atomic::Ordering::Relaxed);
                    return gst::PadProbeReturn::Drop;
                }
                if waited.swap(false, std::sync::atomic::Ordering::Relaxed) {
                    let key =
                        gst_video::DownstreamForceKeyUnitEvent::builder().all_headers(true).build();
                    let _ = pad.push_event(key);
                }
                gst::PadProbeReturn::Ok
            },
        );
    }
    Ok((bin, codec[0].clone()))
}

/// Name of the raw-video capsfilter of [`video_encoder_bin`], after which the codec's
/// elements start; congestion control changes the size in its caps.
pub const RAW_CAPS: &str = "raw-caps";
/// Name of the leaky queue of [`video_encoder_bin`]: its thread carries each frame through
/// the rest of the chain (scaling, encoding, payloading), one at a time.
const SEND_QUEUE: &str = "send-queue";
/// Name of the frame-rate limiter of [`video_encoder_bin`] (a
/// [`crate::framerate::FrameRateLimiter`]); congestion control changes its `max-fps`.
pub const FRAME_RATE: &str = "frame-rate";

/// The largest frame (pixels) that a video encoder or decoder handles on one thread: 480p.
const ONE_THREAD_PIXELS: u32 = 640 * 480;

/// The threads a video encoder or decoder gets for frames of `width`x`height`: one up to
/// 480p, two above. libvpx's worker threads sync rows by busy-waiting on each other
/// (`vp8_atomic_spin_wait`); on two busy cores, with two threads, that spinning cost the
/// encoder 4-5x the CPU and late or lost frames (docs/benchmarks.md, "Calls"), and the
/// decoder more CPU for nothing (docs/benchmarks.md, "Density"). Larger frames need the
/// second.
pub fn codec_threads(width: u32, height: u32) -> u32 {
    if width.saturating_mul(height) <= ONE_THREAD_PIXELS { 1 } else { 2 }
}

/// The longest gap between two frames that libvpx is shown (see [`hide_long_gaps`]): under
/// the second after which its frame rate estimate breaks, over any real frame interval but
/// a source's under about 1 fps.
const MAX_ENCODER_GAP: gst::ClockTime = gst::ClockTime::from_mseconds(900);

/// Shortens, for libvpx only, any gap of more than [`MAX_ENCODER_GAP`] between two frames
/// (a paused source, a frozen incoming stream an echo or gateway sends on), and puts the
/// timestamps back on what it encodes: the RTP timestamps still tell the real time.
///
/// Why: libvpx 1.12 (Debian 12) estimates the frame rate from the timestamps, and after a
/// gap of more than a second its running average goes negative (`vp8_get_compressed_data`:
/// the average duration, the gap's, times `interval - gap + duration`, with `interval` at
/// most a second). VP8 then takes 30 fps for good, so each frame of a 15 fps stream got half
/// its share: after one 1.1 s pause a 500 kbit/s call sent 250 kbit/s until its end (VP9
/// resets its estimate and recovers).
///
/// The encoder encodes each frame within its `chain` (`lag-in-frames=0`), so what comes out
/// of it belongs to the frame that went in last, and the shift then is that frame's.
fn hide_long_gaps(encoder: &gst::Element) {
    let (Some(sink), Some(src)) = (encoder.static_pad("sink"), encoder.static_pad("src")) else {
        return;
    };
    #[derive(Default)]
    struct Gaps {
        /// The last frame's timestamp as the encoder saw it.
        last: Option<gst::ClockTime>,
        /// What was taken off every timestamp since the last long gap (all gaps so far).
        shift: gst::ClockTime,
    }
    let gaps = std::sync::Arc::new(std::sync::Mutex::new(Gaps::default()));
    // (the state is two numbers: a panic elsewhere leaves them usable)
    let shift_now = |g: &std::sync::Mutex<Gaps>| {
        g.lock().map(|g| g.shift).unwrap_or_else(|e| e.into_inner().shift)
    };
    {
        let gaps = std::sync::Arc::clone(&gaps);
        sink.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            let Some(gst::PadProbeData::Buffer(buffer)) = &mut info.data else {
                return gst::PadProbeReturn::Ok;
            };
            let Some(pts) = buffer.pts() else { return gst::PadProbeReturn::Ok };
            let mut gaps = gaps.lock().unwrap_or_else(|e| e.into_inner());
            if pts < gaps.shift {
                // Timestamps that went back (a new stream): start again.
                *gaps = Gaps::default();
            }
            let mut seen = pts - gaps.shift;
            if let Some(last) = gaps.last
                && seen > last + MAX_ENCODER_GAP
            {
                gaps.shift += seen - last - MAX_ENCODER_GAP;
                seen = last + MAX_ENCODER_GAP;
            }
            gaps.last = Some(seen);
            if gaps.shift > gst::ClockTime::ZERO {
                let shift = gaps.shift;
                let buffer = buffer.make_mut();
                buffer.set_pts(seen);
                if let Some(dts) = buffer.dts() {
                    buffer.set_dts(dts.saturating_sub(shift));
                }
            }
            gst::PadProbeReturn::Ok
        });
    }
    src.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        let Some(gst::PadProbeData::Buffer(buffer)) = &mut info.data else {
            return gst::PadProbeReturn::Ok;
        };
        let shift = shift_now(&gaps);
        if shift > gst::ClockTime::ZERO {
            let buffer = buffer.make_mut();
            if let Some(pts) = buffer.pts() {
                buffer.set_pts(pts + shift);
            }
            if let Some(dts) = buffer.dts() {
                buffer.set_dts(dts + shift);
            }
        }
        gst::PadProbeReturn::Ok
    });
}

/// The most frames between two key frames the encoder makes unasked: libwebrtc's default
/// (`keyFrameInterval` 3000, what Chrome's VP8 encoder uses), so in practice a key frame
/// comes only when the peer asks for one (PLI/FIR, answered at once: see
/// [`KEY_FRAME_MIN_INTERVAL`]).
///
/// It was 3 s. A key frame is several frames' worth of bits sent at once; on a link both
/// directions share, each one queued the peer's packets too. A Chromium tab sending to our
/// element on a 500 kbit/s link read every one of ours as congestion (its delay-based
/// estimate fell to 0.85 times what it had sent within a second of each key frame it
/// decoded, every 3 s), and its estimate went down from 230 to 65 kbit/s in 20 s on a link
/// it used a third of.
pub const KEY_FRAME_MAX_DIST: u32 = 3000;

/// The codec's part of the video sending chain, `<encoder> [! <caps>] ! <payloader>`: the
/// encoder first, the payloader last. Public for the benchmarks, which measure the encoder
/// exactly as a call sets it up (`call-bench --encoder-quality`).
pub fn codec_elements(params: &VideoParams) -> Result<Vec<gst::Element>, MediaError> {
    let keyframe_dist = KEY_FRAME_MAX_DIST;
    // x264's sliced threads split a small frame into slices that cost bits and buy nothing
    // up to 480p; libvpx's: see codec_threads.
    let threads = codec_threads(params.width, params.height).to_string();
    let threads = threads.as_str();
    let mut elements = Vec::with_capacity(3);
    match params.codec {
        VideoCodec::Vp8 | VideoCodec::Vp9 => {
            let (enc, pay) = if params.codec == VideoCodec::Vp8 {
                ("vp8enc", "rtpvp8pay")
            } else {
                ("vp9enc", "rtpvp9pay")
            };
            let enc = make(enc).map_err(|_| MediaError::NoEncoder(params.codec))?;
            set_str(&enc, "deadline", "1");
            // A speed we choose, Chrome's on desktops (-6) to start with, and faster ones
            // while the encoder overuses the CPU (`cpu-adaptation`: crate::cpu_adaptation).
            // A positive value lets libvpx pick the slowest speed that fits that share of the
            // frame interval (8: half of it), so with cores to spare each call spent 1.5x the
            // CPU for 0.6 dB of PSNR (480p zone plate at 500 kbit/s: 39.8 dB against 39.2;
            // webrtcsink's -16, the fastest, 33.7 dB); docs/benchmarks.md, "Density".
            let speed = crate::cpu_adaptation::speeds(params.codec, params.encoder_speed)
                .first()
                .copied()
                .unwrap_or(-6);
            set_str(&enc, "cpu-used", &speed.to_string());
            // Blocks that did not change are skipped before motion search (Chrome's
            // VP8E_SET_STATIC_THRESHOLD of 1): a mostly still picture (a face, a slide, a
            // test pattern) costs a quarter less to encode, and nothing visible changes.
            set_str(&enc, "static-threshold", "1");
            set_str(&enc, "end-usage", "cbr");
            set_str(&enc, "target-bitrate", &((params.bitrate_kbps * 1000) as i32).to_string());
            set_str(&enc, "lag-in-frames", "0");
            set_str(&enc, "keyframe-max-dist", &keyframe_dist.to_string());
            set_str(&enc, "threads", threads);
            set_str(&enc, "error-resilient", "default");
            set_str(&enc, "buffer-size", "1000");
            set_str(&enc, "buffer-initial-size", "500");
            set_str(&enc, "buffer-optimal-size", "600");
            // A key frame at most this many times a frame's share of the target (libvpx's
            // max intra bitrate, %; Chrome's formula for a 600 ms optimal buffer: half of it
            // times the frame rate over 10, at least 300). Uncapped, a key frame took 10 to
            // 20 frames' worth of bits: on a slow link each filled the bottleneck's queue for
            // both directions, the frames after it were lost, and their key frame requests
            // brought more key frames.
            let max_intra = (600 * params.max_fps.max(1) / 20).max(300);
            set_str(&enc, "max-intra-bitrate", &max_intra.to_string());
            // What a frame may overshoot its share by (Chrome's 15 %; libvpx's default 100 %
            // let rate control send twice the target for a while after the target fell).
            set_str(&enc, "overshoot", "15");
            hide_long_gaps(&enc);
            let pay = make(pay)?;
            set_str(&pay, "picture-id-mode", "15-bit");
            elements.extend([enc, pay]);
        }
        VideoCodec::H264 => {
            let enc = if gst::ElementFactory::find("x264enc").is_some() {
                let enc = make("x264enc")?;
                // zerolatency: no B-frames, no lookahead, no frame of delay in the encoder.
                set_str(&enc, "tune", "zerolatency");
                set_str(&enc, "speed-preset", "ultrafast");
                set_str(&enc, "bitrate", &params.bitrate_kbps.to_string());
                set_str(&enc, "key-int-max", &keyframe_dist.to_string());
                // 600 ms of rate-control buffer by default: bursts that queue in the network.
                set_str(&enc, "vbv-buf-capacity", "300");
                set_str(&enc, "threads", threads);
                enc
            } else {
                let enc = make("openh264enc").map_err(|_| MediaError::NoEncoder(params.codec))?;
                set_str(&enc, "bitrate", &(params.bitrate_kbps * 1000).to_string());
                set_str(&enc, "gop-size", &keyframe_dist.to_string());
                enc
            };
            // Constrained baseline, what every browser decodes. Byte-stream, not avc: from
            // avc's codec_data rtph264pay copies the stream's own profile-level-id (x264:
            // 42c01f) into its caps, which then do not match the 42e01f that the
            // transceiver and browsers expect, and the payloader fails to negotiate; from a
            // byte-stream it takes the negotiated one (the SDP's).
            let profile = make("capsfilter")?;
            profile.set_property(
                "caps",
                gst::Caps::builder("video/x-h264")
                    .field("profile", "constrained-baseline")
                    .field("stream-format", "byte-stream")
                    .field("alignment", "au")
                    .build(),
            );
            let pay = make("rtph264pay")?;
            set_str(&pay, "config-interval", "-1");
            set_str(&pay, "aggregate-mode", "zero-latency");
            elements.extend([enc, profile, pay]);
        }
    }
    throttle_key_frames(&elements[0]);
    crate::cpu_adaptation::watch_encoder(
        &elements[0],
        params.codec,
        params.encoder_speed,
        params.cpu_adaptation,
    );
    let pay = &elements[elements.len() - 1];
    set_str(pay, "pt", &params.payload.to_string());
    set_str(pay, "mtu", "1200");
    Ok(elements)
}

/// The shortest interval between two key frames the sending side makes on request (PLI,
/// FIR): the first request is answered at once, the next ones wait for this much.
pub const KEY_FRAME_MIN_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

/// Holds back key frame requests reaching `encoder` sooner than [`KEY_FRAME_MIN_INTERVAL`]
/// after the last one it answered, and answers them (once, however many came) when the
/// interval is over. A key frame is several frames' worth of bits: on a congested link
/// (a 480p key frame takes a second at 250 kbit/s) a receiver that lost part of one asked
/// for the next before it could arrive, and the link carried nothing but key frames.
/// Dropped instead of held, a request for a key frame whose predecessor was lost went
/// unanswered, and the receiver stayed frozen until it asked again.
fn throttle_key_frames(encoder: &gst::Element) {
    let (Some(src), Some(sink)) = (encoder.static_pad("src"), encoder.static_pad("sink")) else {
        return;
    };
    #[derive(Default)]
    struct Requests {
        /// When the last request went through.
        answered: Option<std::time::Instant>,
        /// A request came since, held back.
        held: bool,
    }
    let requests = std::sync::Arc::new(std::sync::Mutex::new(Requests::default()));
    let in_src = requests.clone();
    src.add_probe(gst::PadProbeType::EVENT_UPSTREAM, move |pad, info| {
        let Some(gst::PadProbeData::Event(event)) = &info.data else {
            return gst::PadProbeReturn::Ok;
        };
        if gst_video::UpstreamForceKeyUnitEvent::parse(event).is_err() {
            return gst::PadProbeReturn::Ok;
        }
        let mut r = in_src.lock().unwrap_or_else(|e| e.into_inner());
        let now = std::time::Instant::now();
        if r.answered.is_some_and(|t| now.duration_since(t) < KEY_FRAME_MIN_INTERVAL) {
            gst::debug!(
                CAT,
                obj = pad,
                "key frame request held (one answered {:?} ago)",
                r.answered.map(|t| now.duration_since(t))
            );
            r.held = true;
            // Replaced by an event nobody acts on, not dropped: GStreamer 1.22 unrefs a NULL
            // event when a probe drops one given to gst_pad_send_event (our own request at
            // connection time comes that way).
            info.data = Some(gst::PadProbeData::Event(ignored_key_frame_request()));
            return gst::PadProbeReturn::Ok;
        }
        gst::debug!(CAT, obj = pad, "key frame request answered");
        r.answered = Some(now);
        r.held = false;
        gst::PadProbeReturn::Ok
    });
    // A held request goes to the encoder with the first raw frame after the interval.
    let weak_src = src.downgrade();
    sink.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
        let due = {
            let r = requests.lock().unwrap_or_else(|e| e.into_inner());
            r.held && r.answered.is_none_or(|t| t.elapsed() >= KEY_FRAME_MIN_INTERVAL)
        };
        if due && let Some(src) = weak_src.upgrade() {
            // Through the probe above, which lets it pass now.
            let event = gst_video::UpstreamForceKeyUnitEvent::builder().all_headers(true).build();
            let _ = src.send_event(event);
        }
        gst::PadProbeReturn::Ok
    });
}

/// What a key frame request held back by a probe becomes: an upstream event no element acts
/// on. A probe must not drop an event in GStreamer 1.22: `gst_pad_push_event` and
/// `gst_pad_send_event` then unref a NULL event (a GStreamer-CRITICAL each time).
fn ignored_key_frame_request() -> gst::Event {
    gst::event::CustomUpstream::new(gst::Structure::new_empty(
        "wilddog-key-frame-request-throttled",
    ))
}

/// Replaces the codec of a running [`video_encoder_bin`] (an answerer following an offer
/// that does not have its codec): the new encoder and payloader are linked in place of the
/// old ones when no buffer is passing, the bin's src pad stays linked. Returns the new
/// encoder and payloader once they are in place.
///
/// `rtp_caps` (the transceiver's new `codec-preferences`) go out of the src pad at once, with
/// the old stream's ssrc, which the new payloader keeps: webrtcbin (1.22) answers with the
/// intersection of the preferences and the caps its sink pad last received, which would be
/// the old codec's until the new encoder's first frame, and would reject the video.
pub fn switch_video_codec(
    bin: &gst::Bin,
    params: &VideoParams,
    rtp_caps: &gst::Caps,
) -> Result<(gst::Element, gst::Element), MediaError> {
    let filter =
        bin.by_name(RAW_CAPS).ok_or_else(|| MediaError::Link("no raw-caps in the bin".into()))?;
    let filter_src =
        filter.static_pad("src").ok_or_else(|| MediaError::Link("raw-caps src".into()))?;
    let ghost_src = bin
        .static_pad("src")
        .and_then(|p| p.downcast::<gst::GhostPad>().ok())
        .ok_or_else(|| MediaError::Link("no src ghost pad".into()))?;
    let new = codec_elements(params)?;
    let (encoder, payloader) = (new[0].clone(), new[new.len() - 1].clone());
    let mut announce = rtp_caps.clone();
    announce.fixate();
    let ssrc = ghost_src.current_caps().and_then(|c| c.structure(0)?.get::<u32>("ssrc").ok());
    if let Some(ssrc) = ssrc {
        payloader.set_property("ssrc", ssrc);
        if let Some(s) = announce.make_mut().structure_mut(0) {
            s.set("ssrc", ssrc);
        }
    }
    let bin_weak = bin.downgrade();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    // Idle: at once when no buffer is in the encoder, else right after the current one.
    filter_src.add_probe(gst::PadProbeType::IDLE, move |pad, _| {
        let Some(bin) = bin_weak.upgrade() else { return gst::PadProbeReturn::Remove };
        // The old chain: from raw-caps' peer down to the element the src ghost pad targets.
        let mut old = Vec::new();
        let mut next = pad.peer().and_then(|p| p.parent_element());
        while let Some(element) = next {
            next = element
                .static_pad("src")
                .and_then(|p| p.peer())
                .and_then(|p| p.parent_element())
                .filter(|e| e.parent().as_ref() == Some(bin.upcast_ref()));
            old.push(element);
        }
        let _ = ghost_src.set_target(None::<&gst::Pad>);
        for element in &old {
            let _ = element.set_state(gst::State::Null);
            let _ = bin.remove(element);
        }
        let refs: Vec<&gst::Element> = new.iter().collect();
        let mut linked = bin.add_many(refs.iter().copied()).is_ok()
            && gst::Element::link_many(refs.iter().copied()).is_ok();
        // Running before the first buffer reaches them (the pad is held while this runs).
        for element in &new {
            linked &= element.sync_state_with_parent().is_ok();
        }
        linked = linked
            && new[0].static_pad("sink").is_some_and(|sink| pad.link(&sink).is_ok())
            && new[new.len() - 1]
                .static_pad("src")
                .is_some_and(|src| ghost_src.set_target(Some(&src)).is_ok());
        if !linked {
            gst::element_error!(
                bin,
                gst::CoreError::Negotiation,
                ("could not link the new video encoder")
            );
        }
        // The new payloader's own caps (with sprop-parameter-sets) replace these at its first
        // frame.
        let _ = ghost_src.push_event(gst::event::Caps::new(&announce));
        let _ = done_tx.send(());
        gst::PadProbeReturn::Remove
    });
    // One encoded frame at most; a stuck stream must not hold the answer forever (the
    // switch then happens when it moves on).
    if done_rx.recv_timeout(std::time::Duration::from_secs(2)).is_err() {
        gst::warning!(gst::CAT_DEFAULT, obj = bin, "the video encoder is not switched yet");
    }
    Ok((encoder, payloader))
}

/// URI of the transport-wide congestion control header extension (TWCC).
pub const TWCC_URI: &str =
    "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";

/// `caps` with `extmap-<id>` naming the TWCC header extension, so that webrtcbin offers it
/// (`a=extmap:<id> …transport-wide-cc…`).
pub fn with_twcc_extmap(mut caps: gst::Caps, id: u32) -> gst::Caps {
    if let Some(s) = caps.make_mut().structure_mut(0) {
        s.set(format!("extmap-{id}"), TWCC_URI);
    }
    caps
}

/// The id a description gives the TWCC header extension (its `a=extmap` lines, media-level
/// or session-level), if it has it.
pub fn twcc_extmap_id(sdp: &gst_sdp::SDPMessageRef) -> Option<u32> {
    let parse = |value: Option<&str>| {
        let (id, rest) = value?.split_once(' ')?;
        let uri = rest.split_whitespace().next()?;
        // `a=extmap:<id>[/<direction>] <uri>`
        (uri == TWCC_URI).then(|| id.split('/').next()?.parse::<u32>().ok()).flatten()
    };
    sdp.medias()
        .flat_map(|m| m.attributes().filter(|a| a.key() == "extmap").map(|a| parse(a.value())))
        .chain(sdp.attributes().filter(|a| a.key() == "extmap").map(|a| parse(a.value())))
        .flatten()
        .next()
}

/// Makes a payloader write the TWCC header extension with `id` in every packet (rtpsession
/// fills in the transport-wide sequence numbers), replacing any extension it wrote; `None`:
/// none (the peer did not negotiate it).
pub fn set_twcc_extension(payloader: &gst::Element, id: Option<u32>) {
    if payloader.find_property("auto-header-extension").is_none() {
        // Not a GstRTPBasePayload (1.20+): no header extensions.
        return;
    }
    payloader.emit_by_name::<()>("clear-extensions", &[]);
    let Some(id) = id.filter(|id| (1..=14).contains(id)) else { return };
    match gst_rtp::RTPHeaderExtension::create_from_uri(TWCC_URI) {
        Some(ext) => {
            gst_rtp::prelude::RTPHeaderExtensionExt::set_id(&ext, id);
            payloader.emit_by_name::<()>("add-extension", &[&ext]);
        }
        None => gst::warning!(
            gst::CAT_DEFAULT,
            obj = payloader,
            "no TWCC header extension (rtpmanager of gst-plugins-good)"
        ),
    }
}

/// The id rtpredenc of GStreamer 1.22.0 gives the TWCC header extension of every RED packet
/// (and so of every packet of a `fec=ulpfec-red` video stream, FEC ones too), whatever id
/// was negotiated: `gstrtpredenc.c:203` hardcodes 1 (fixed in 1.22.1, commit 3e83399103
/// "redenc: fix setting of extension ID for twcc").
const REDENC_1_22_0_TWCC_ID: u8 = 1;

/// Gives the TWCC header extension of the RED packets `redenc` (webrtcbin's rtpredenc) sends
/// the id negotiated (its caps' `extmap-<id>`), on GStreamer before 1.22.1.
///
/// There rtpredenc writes the extension's slot with id 1 (see [`REDENC_1_22_0_TWCC_ID`]), so
/// rtpsession, which fills in the transport-wide sequence number only in the slot of the
/// negotiated id (3 in our offers, Chrome's), gave no video packet one: the peer's feedback
/// covered the audio alone, and as audio packets carry no marker bit (the feedback's usual
/// trigger), only rtptwcc's fallback of 60 lost packets sent any: 0 to 2 reports in 10 to 17 s
/// (394 in 12 s without FEC), and congestion control was blind. RED packets carry no other
/// header extension in 1.22 ("FIXME: Ignoring RTP extension"), so an id-1 slot in one is
/// this one.
pub fn fix_red_twcc_extension_id(redenc: &gst::Element) {
    if gst::version() >= (1, 22, 1, 0) {
        return;
    }
    let Some(src) = redenc.static_pad("src") else { return };
    // The TWCC id its caps give (UNKNOWN before caps; NOTHING: none, or 1 already).
    const UNKNOWN: u8 = 0;
    const NOTHING: u8 = u8::MAX;
    let seen = |caps: Option<&gst::CapsRef>| {
        caps.and_then(|c| c.structure(0)).and_then(twcc_id_to_fix).unwrap_or(NOTHING)
    };
    let twcc_id = std::sync::Arc::new(std::sync::atomic::AtomicU8::new(UNKNOWN));
    // Its RED payload type (`pt`, 0 until negotiated), followed as webrtcbin sets it rather
    // than read for every packet.
    let red_pt = std::sync::Arc::new(std::sync::atomic::AtomicI32::new(redenc.property("pt")));
    let followed = red_pt.clone();
    redenc.connect_notify(Some("pt"), move |e, _| {
        followed.store(e.property("pt"), std::sync::atomic::Ordering::Relaxed);
    });
    src.add_probe(
        gst::PadProbeType::BUFFER | gst::PadProbeType::EVENT_DOWNSTREAM,
        move |pad, info| {
            use std::sync::atomic::Ordering::Relaxed;
            match &mut info.data {
                Some(gst::PadProbeData::Event(event)) => {
                    if let gst::EventView::Caps(c) = event.view() {
                        twcc_id.store(seen(Some(c.caps())), Relaxed);
                    }
                }
                Some(gst::PadProbeData::Buffer(buffer)) => {
                    let mut id = twcc_id.load(Relaxed);
                    if id == UNKNOWN {
                        // Caps that passed before the probe was there.
                        id = seen(pad.current_caps().as_deref());
                        twcc_id.store(id, Relaxed);
                    }
                    if id == NOTHING {
                        return gst::PadProbeReturn::Ok;
                    }
                    // Only the RED packets it made (its `pt`): it passes others through, with
                    // the payloader's extensions.
                    let red_pt = red_pt.load(Relaxed);
                    let mut header = [0u8; 2];
                    if red_pt > 0
                        && buffer.copy_to_slice(0, &mut header).is_ok()
                        && i32::from(header[1] & 0x7f) == red_pt
                        && let Ok(mut map) = buffer.make_mut().map_writable()
                    {
                        rename_onebyte_extension(&mut map, REDENC_1_22_0_TWCC_ID, id);
                    }
                }
                _ => {}
            }
            gst::PadProbeReturn::Ok
        },
    );
}

/// The id rtpredenc's caps give the TWCC header extension (`extmap-<id>`, 1 to 14: a
/// one-byte header), unless that is [`REDENC_1_22_0_TWCC_ID`] already.
fn twcc_id_to_fix(s: &gst::StructureRef) -> Option<u8> {
    let id = s.iter().find_map(|(name, value)| {
        let id = name.strip_prefix("extmap-")?.parse::<u8>().ok()?;
        (value.get::<&str>().ok()? == TWCC_URI && (1..=14).contains(&id)).then_some(id)
    })?;
    (id != REDENC_1_22_0_TWCC_ID).then_some(id)
}

/// Gives the element with id `from` and 2 bytes of data of an RTP packet's one-byte-header
/// extension block (RFC 8285) the id `to`; whether there was one.
pub fn rename_onebyte_extension(packet: &mut [u8], from: u8, to: u8) -> bool {
    // A one-byte header's ids are 1 to 14 (15 ends the block, 0 is padding).
    if !(1..=14).contains(&to) {
        return false;
    }
    // Version 2 with the X bit.
    if packet.len() < 12 || packet[0] >> 6 != 2 || packet[0] & 0x10 == 0 {
        return false;
    }
    let block = 12 + 4 * usize::from(packet[0] & 0x0f);
    let Some(header) = packet.get(block..block + 4) else { return false };
    if header[..2] != [0xbe, 0xde] {
        return false;
    }
    let end = block + 4 + 4 * usize::from(u16::from_be_bytes([header[2], header[3]]));
    let end = end.min(packet.len());
    let mut i = block + 4;
    while i < end {
        let byte = packet[i];
        let id = byte >> 4;
        if byte == 0 {
            // Padding.
            i += 1;
            continue;
        }
        if id == 15 {
            break;
        }
        let len = usize::from(byte & 0x0f) + 1;
        if i + 1 + len > end {
            break;
        }
        if id == from && len == 2 {
            packet[i] = (to << 4) | (byte & 0x0f);
            return true;
        }
        i += 1 + len;
    }
    false
}

/// The SSRC a running payloader sends with (its `stats`); `None` before it is PAUSED (it
/// picks its SSRC going there, and says 0 until then).
pub fn payloader_ssrc(payloader: &gst::Element) -> Option<u32> {
    payloader.find_property("stats")?;
    if payloader.current_state() < gst::State::Paused {
        return None;
    }
    payloader.property::<gst::Structure>("stats").get::<u32>("ssrc").ok()
}

/// `caps` naming `ssrc` in every structure: webrtcbin writes an `a=ssrc` line (and, with
/// retransmissions, the RTX group) for it in its offers and answers.
pub fn with_ssrc(mut caps: gst::Caps, ssrc: u32) -> gst::Caps {
    for s in caps.make_mut().iter_mut() {
        s.set("ssrc", ssrc);
    }
    caps
}

/// Sets a video encoder's target bitrate (vp8enc/vp9enc in bit/s, x264enc in kbit/s,
/// openh264enc in bit/s), while it runs.
pub fn set_video_bitrate(encoder: &gst::Element, kbps: u32) {
    let name = encoder.factory().map(|f| f.name().to_string()).unwrap_or_default();
    match name.as_str() {
        "x264enc" => set_str(encoder, "bitrate", &kbps.to_string()),
        "vp8enc" | "vp9enc" => set_str(encoder, "target-bitrate", &(kbps * 1000).to_string()),
        _ => set_str(encoder, "bitrate", &(kbps * 1000).to_string()),
    }
}

/// Sets the size and frame rate a running [`video_encoder_bin`] sends: the raw caps' size
/// (videoscale scales to it; the encoder starts over with a key frame at the new size) and
/// the frame-rate limiter's `max-fps`. Unchanged values are left alone.
///
/// The size changes on the chain's streaming thread (its queue's), before the next frame
/// leaves the queue, when no frame is between the queue and the encoder. Set from another
/// thread, a change could land while a frame that videoscale had already scaled to the old
/// size was on its way to the capsfilter: the capsfilter refused it (not-negotiated), the
/// queue's thread and the source stopped, and the call's video stopped for good while its
/// audio went on. Two steps 50 ms apart (congestion control cutting twice on a 500 kbit/s
/// link) did it in about one call in three against a Chromium tab (2026-12-03).
pub fn set_video_step(bin: &gst::Bin, width: u32, height: u32, fps: u32) {
    if let (Some(filter), Some(queue_src)) =
        (bin.by_name(RAW_CAPS), bin.by_name(SEND_QUEUE).and_then(|q| q.static_pad("src")))
    {
        let filter = filter.downgrade();
        // One probe per change, run in order before the next frame: the last change wins.
        queue_src.add_probe(
            gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST,
            move |_, _| {
                if let Some(filter) = filter.upgrade() {
                    set_raw_size(&filter, width, height);
                }
                gst::PadProbeReturn::Remove
            },
        );
    }
    if let Some(limiter) = bin.by_name(FRAME_RATE) {
        let fps = f64::from(fps.max(1));
        if limiter.property::<f64>("max-fps") != fps {
            limiter.set_property("max-fps", fps);
        }
    }
}

/// Sets the size in a raw-video capsfilter's caps, unless it is that already.
fn set_raw_size(filter: &gst::Element, width: u32, height: u32) {
    let caps = filter.property::<gst::Caps>("caps");
    let current = caps.structure(0).map(|s| {
        (s.get::<i32>("width").unwrap_or(0) as u32, s.get::<i32>("height").unwrap_or(0) as u32)
    });
    if current != Some((width, height)) {
        let mut caps = caps.copy();
        if let Some(s) = caps.make_mut().structure_mut(0) {
            s.set("width", width as i32);
            s.set("height", height as i32);
        }
        filter.set_property("caps", caps);
    }
}

/// Sets a running Opus encoder's frame duration, ms (20, 40 or 60), on its streaming thread,
/// with the next buffer it gets. Set from any other thread, `frame-size` raced the encoder:
/// opusenc (1.22) takes a buffer of the old duration from its adapter and encodes it with
/// the new one, and a 60 ms buffer encoded at 40 ms fails its `bsize < bytes` assertion,
/// which aborts the process (every call in it). Congestion control moves between 60 and 40
/// ms as the estimate crosses 150 kbit/s (`congestion::AUDIO_FRAME_THRESHOLDS_BPS`).
pub fn set_audio_frame_ms(encoder: &gst::Element, ms: u32) {
    set_between_buffers(encoder, "frame-size", ms.to_string());
}

/// Sets a running Opus encoder's bitrate (bit/s) between two buffers, on its streaming
/// thread: see [`set_between_buffers`].
pub fn set_audio_bitrate(encoder: &gst::Element, bps: u32) {
    set_between_buffers(encoder, "bitrate", bps.to_string());
}

/// Sets a running Opus encoder's expected packet loss, % (what its in-band FEC is sized
/// for), between two buffers, on its streaming thread: see [`set_between_buffers`].
pub fn set_audio_loss_percentage(encoder: &gst::Element, percent: u32) {
    set_between_buffers(encoder, "packet-loss-percentage", percent.to_string());
}

/// Settings waiting for an encoder's next buffer: (property, value), one per property.
type PendingSettings = std::sync::Arc<std::sync::Mutex<Vec<(&'static str, String)>>>;

/// The object data key of an encoder's [`PendingSettings`].
const PENDING_SETTINGS: &str = "wilddog-pending-settings";

/// Sets `property` of a running encoder from its own streaming thread, with the next buffer
/// it gets. opusenc (1.22) applies `bitrate` and `packet-loss-percentage` to the libopus
/// encoder state at once (`opus_multistream_encoder_ctl`, under its property lock) while
/// `gst_opus_enc_encode` runs `opus_multistream_encode` on that same state without the
/// lock: from another thread (our stats and feedback threads) the two race.
///
/// The settings made before that buffer wait together, the last value of each property, for
/// one probe: congestion control changes the bitrate with nearly every feedback report (15
/// a second), and an encoder that gets no buffer for an hour (a muted source) would
/// otherwise gather a probe per change, every one of them walked for each event.
fn set_between_buffers(encoder: &gst::Element, property: &'static str, value: String) {
    let Some(sink) = encoder.static_pad("sink") else { return };
    // SAFETY: the key is set once, to a PendingSettings, when the encoder is made
    // (audio_encoder_bin), and never replaced or stolen: what is read under it is one, alive
    // as long as the encoder.
    let Some(pending) = (unsafe { encoder.data::<PendingSettings>(PENDING_SETTINGS) })
        .map(|p| unsafe { p.as_ref() }.clone())
    else {
        gst::warning!(gst::CAT_DEFAULT, obj = encoder, "not our encoder: {property} not set");
        return;
    };
    {
        let mut list = pending.lock().unwrap_or_else(|e| e.into_inner());
        let waiting = !list.is_empty();
        list.retain(|(p, _)| *p != property);
        list.push((property, value));
        // A probe is on its way already: it takes this with the rest.
        if waiting {
            return;
        }
    }
    let weak = encoder.downgrade();
    sink.add_probe(gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST, move |_, _| {
        let settings = std::mem::take(&mut *pending.lock().unwrap_or_else(|e| e.into_inner()));
        if let Some(encoder) = weak.upgrade() {
            for (property, value) in settings {
                set_str(&encoder, property, &value);
            }
        }
        gst::PadProbeReturn::Remove
    });
}

/// The Opus encoder of an [`audio_encoder_bin`].
pub fn audio_encoder(bin: &gst::Bin) -> Option<gst::Element> {
    bin.iterate_elements()
        .into_iter()
        .flatten()
        .find(|e| e.factory().is_some_and(|f| f.name() == "opusenc"))
}

/// The audio sending chain, raw audio in, RTP out:
/// `queue ! audioconvert ! audioresample ! opusenc ! rtpopuspay`.
/// Makes a sending chain outlive its peer connections: what reaches its src pad while it is
/// linked to no webrtcbin is dropped (the push returns OK).
///
/// A push answered `not-linked` or `flushing` (a webrtcbin torn down at the end of a call)
/// would pause the chain's queue and go back up to the user's source, which stops for good:
/// a callee waiting for its next call would send no media in it. [`detach_sender`] unlinks
/// between two buffers, so that no push is normally answered so; [`ghost_sender`] turns the
/// answer into `ok` for a push that outlasted it.
///
/// What reaches it while webrtcbin has not yet connected its sink pad to the stream (no
/// transceiver negotiated to send: webrtcbin's pad is a ghost pad without target) is dropped
/// too: webrtcbin would hold the buffer at that pad, and with it this chain's streaming
/// thread, until a description is applied. An answerer's payloader could then never move to
/// the offer's payload type, and webrtcbin, which answers with the caps its pad last
/// received, would reject the section ([`follow_payload_type`]). Its caps (events) go on.
fn drop_when_unlinked(bin: &gst::Bin) {
    if let Some(src) = bin.static_pad("src") {
        src.add_probe(gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST, |pad, _| {
            if sink_connected(pad) { gst::PadProbeReturn::Ok } else { gst::PadProbeReturn::Drop }
        });
    }
}

/// Whether `src` is linked to a sink pad that takes buffers: not a webrtcbin sink pad
/// (a ghost pad) whose stream webrtcbin has not connected yet.
fn sink_connected(src: &gst::Pad) -> bool {
    match src.peer() {
        None => false,
        Some(peer) => match peer.downcast::<gst::GhostPad>() {
            Ok(ghost) => ghost.target().is_some(),
            Err(_) => true,
        },
    }
}

/// How long an answerer waits for its sending chain to carry the offer's payload type to
/// webrtcbin: the next buffer through the payloader does (a video frame at 1 fps at worst);
/// a chain that sends nothing meanwhile (a stalled source) is answered as it is.
pub const PAYLOAD_TYPE_WAIT: std::time::Duration = std::time::Duration::from_millis(1500);

/// Makes a running sending chain send with payload type `pt`, for an answerer whose offer
/// chose it, and waits until webrtcbin's sink pad has received the caps it negotiated.
///
/// webrtcbin (1.22) answers an offer with the intersection of the offer's caps and the caps
/// its sink pad last received (`_find_codec_preferences`), header extensions included: when
/// those carry another payload type than the offer's (Firefox's VP8 is 120 and its Opus 109,
/// aiortc's VP8 97), the section is rejected; another TWCC extension id than the offer's
/// goes into the answer, and Firefox refuses it. The payloader's `pt` (and extensions) alone
/// change nothing until it negotiates again, which its next buffer does once its src pad is
/// marked for reconfiguration; the new caps then reach webrtcbin ahead of that buffer, on the
/// chain's own streaming thread (pushing caps from this thread would wait for the stream
/// lock of a busy chain). The transceiver's `codec-preferences` must already have `pt`:
/// webrtcbin accepts only caps that intersect them.
///
/// `src`: the chain's src pad (linked to webrtcbin). Whether webrtcbin has the payloader's
/// new caps (or none at all, which its caps query then answers) in time.
pub fn follow_payload_type(payloader: &gst::Element, src: &gst::Pad, pt: u32) -> bool {
    set_str(payloader, "pt", &pt.to_string());
    let Some(pay_src) = payloader.static_pad("src") else { return true };
    let received = || src.peer().and_then(|sink| sink.current_caps());
    if received().is_none() {
        return true;
    }
    pay_src.mark_reconfigure();
    let began = std::time::Instant::now();
    while began.elapsed() < PAYLOAD_TYPE_WAIT {
        std::thread::sleep(std::time::Duration::from_millis(5));
        if pay_src.needs_reconfigure() {
            continue;
        }
        // Compared without what the audio chain takes out on the way (drop_sender_hints).
        let sent = pay_src.current_caps().map(|c| without_sender_hints(&c));
        let received = received();
        let payload = received.as_ref().and_then(|c| c.structure(0)?.get::<i32>("payload").ok());
        if payload == Some(pt as i32) && received.is_some() && received == sent {
            gst::debug!(
                gst::CAT_DEFAULT,
                obj = payloader,
                "sending with payload type {pt} after {:?}",
                began.elapsed()
            );
            return true;
        }
    }
    false
}

/// Sets a transceiver's `codec-preferences` between two buffers (or events) of the payloader
/// of the sending chain linked to it: never while that payloader negotiates. webrtcbin
/// refuses caps that do not intersect the preferences; changed between the payloader's caps
/// query and its caps reaching webrtcbin (the negotiation a relink to the next call's
/// webrtcbin starts, when that call's offer came at once), the chain got `not-negotiated`
/// and its source stopped with an error. Waits for that at most 2 s (a chain stuck
/// downstream gets them when it moves on: set here too then).
pub fn set_preferences_between_buffers(
    transceiver: &gst_webrtc::WebRTCRTPTransceiver,
    caps: &gst::Caps,
    payloader: Option<&gst::Element>,
) {
    let change = {
        let (transceiver, caps) = (transceiver.clone(), caps.clone());
        move || transceiver.set_property("codec-preferences", &caps)
    };
    // The pad that gives the payloader its buffers and events: its negotiation runs within
    // their push.
    let Some(feeding) = payloader.and_then(|p| p.static_pad("sink")).and_then(|p| p.peer()) else {
        change();
        return;
    };
    let change = std::sync::Arc::new(std::sync::Mutex::new(Some(change)));
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let pending = change.clone();
    feeding.add_probe(gst::PadProbeType::IDLE, move |_, _| {
        if let Some(change) = pending.lock().unwrap_or_else(|e| e.into_inner()).take() {
            change();
        }
        let _ = done_tx.send(());
        gst::PadProbeReturn::Remove
    });
    if done_rx.recv_timeout(std::time::Duration::from_secs(2)).is_err() {
        gst::warning!(
            gst::CAT_DEFAULT,
            obj = feeding,
            "the sending chain is busy: preferences set"
        );
        if let Some(change) = change.lock().unwrap_or_else(|e| e.into_inner()).take() {
            change();
        }
    }
}

/// Unlinks a sending chain's src pad (of [`video_encoder_bin`] or [`audio_encoder_bin`])
/// from its webrtcbin while no buffer goes through it; waits for that (at most 2 s: a chain
/// stuck downstream is unlinked when it moves on).
pub fn detach_sender(src: &gst::Pad) {
    if !src.is_linked() {
        return;
    }
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    src.add_probe(gst::PadProbeType::IDLE, move |pad, _| {
        if let Some(peer) = pad.peer() {
            let _ = pad.unlink(&peer);
        }
        let _ = done_tx.send(());
        gst::PadProbeReturn::Remove
    });
    if done_rx.recv_timeout(std::time::Duration::from_secs(2)).is_err() {
        gst::warning!(gst::CAT_DEFAULT, obj = src, "the sending chain is not detached yet");
    }
}

pub fn audio_encoder_bin(payload: u32) -> Result<gst::Bin, MediaError> {
    let bin = gst::Bin::with_name("audio-encoder");
    let queue = make("queue")?;
    set_str(&queue, "max-size-time", "200000000");
    set_str(&queue, "leaky", "downstream");
    let pace = pacer()?;
    keep_to_the_clock(&queue, &pace);
    let convert = make("audioconvert")?;
    let resample = make("audioresample")?;
    let enc = make("opusenc")?;
    set_str(&enc, "audio-type", "voice");
    set_str(&enc, "inband-fec", "true");
    set_str(&enc, "frame-size", "20");
    // Before any thread can change a setting: see set_between_buffers.
    // SAFETY: the key holds a PendingSettings, set once here, before the element is shared.
    unsafe { enc.set_data(PENDING_SETTINGS, PendingSettings::default()) };
    let pay = make("rtpopuspay")?;
    set_str(&pay, "pt", &payload.to_string());
    drop_sender_hints(&pay);
    link_all(&bin, &[&pace, &queue, &convert, &resample, &enc, &pay])?;
    ghost_sender(&bin, &pace, &pay)?;
    drop_when_unlinked(&bin);
    Ok(bin)
}

/// Opus's declarative parameters (RFC 7587): what the sender captures (its rate, whether in
/// stereo), hints for the receiver, never conditions on what it takes. `rtpopuspay` puts
/// them into its caps from the input's rate and channels.
const OPUS_SENDER_HINTS: [&str; 2] = ["sprop-maxcapturerate", "sprop-stereo"];

/// `caps` without [`OPUS_SENDER_HINTS`]: what a sending chain gives webrtcbin.
pub fn without_sender_hints(caps: &gst::CapsRef) -> gst::Caps {
    let mut caps = caps.to_owned();
    for s in caps.make_mut().iter_mut() {
        for field in OPUS_SENDER_HINTS {
            s.remove_field(field);
        }
    }
    caps
}

/// Takes [`OPUS_SENDER_HINTS`] out of the caps `pay` sends. webrtcbin (1.22) answers an
/// offer's section only with a transceiver whose sink pad's caps intersect the offer's:
/// an answerer capturing at 8 kHz (`sprop-maxcapturerate=8000`) or in stereo
/// (`sprop-stereo=1`) did not intersect a 48 kHz mono caller's offer, webrtcbin answered the
/// audio section with a new `recvonly` transceiver, and our audio went nowhere, silently.
fn drop_sender_hints(pay: &gst::Element) {
    let Some(src) = pay.static_pad("src") else { return };
    src.add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, |_, info| {
        let Some(gst::PadProbeData::Event(event)) = &mut info.data else {
            return gst::PadProbeReturn::Ok;
        };
        let gst::EventView::Caps(c) = event.view() else { return gst::PadProbeReturn::Ok };
        let hinted = c.caps().iter().any(|s| OPUS_SENDER_HINTS.iter().any(|f| s.has_field(*f)));
        if hinted {
            let caps = without_sender_hints(c.caps());
            *event = gst::event::Caps::builder(&caps).seqnum(event.seqnum()).build();
        }
        gst::PadProbeReturn::Ok
    });
}

/// The kind of a received stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// Video.
    Video,
    /// Audio.
    Audio,
}

/// The depayloader and the decoders (in order of preference) of an RTP encoding we receive.
fn known_decoder(encoding: &str) -> Option<(&'static str, &'static [&'static str])> {
    match encoding.to_ascii_uppercase().as_str() {
        "VP8" => Some(("rtpvp8depay", &["vp8dec"])),
        "VP9" => Some(("rtpvp9depay", &["vp9dec"])),
        "H264" => Some(("rtph264depay", &["avdec_h264", "openh264dec"])),
        "OPUS" => Some(("rtpopusdepay", &["opusdec"])),
        _ => None,
    }
}

/// The installed depayloader and decoder for an RTP encoding, if we decode it.
fn installed_decoder(encoding: &str) -> Option<(&'static str, &'static str)> {
    let (depay, decs) = known_decoder(encoding)?;
    gst::ElementFactory::find(depay)?;
    decs.iter().find(|d| gst::ElementFactory::find(d).is_some()).map(|d| (depay, *d))
}

/// Whether this host decodes `encoding` (an `a=rtpmap` encoding name) of `media` (`audio`,
/// `video`): an offered section with no such codec is rejected.
pub fn can_decode(media: &str, encoding: &str) -> bool {
    let kind_matches = match encoding.to_ascii_uppercase().as_str() {
        "OPUS" => media == "audio",
        _ => media == "video",
    };
    kind_matches && installed_decoder(encoding).is_some()
}

/// The receiving chain for RTP caps from webrtcbin, RTP in, raw media out: the depayloader
/// and decoder of a codec we know. Anything else is [`MediaError::NoDecoder`] (the caller
/// drops that stream): `decodebin` would end the call with a missing-plugin error.
pub fn decoder_bin(rtp_caps: &gst::CapsRef) -> Result<(gst::Bin, StreamKind), MediaError> {
    let s = rtp_caps.structure(0).ok_or_else(|| MediaError::Link("empty caps".into()))?;
    let media = s.get::<&str>("media").unwrap_or("video");
    let encoding = s.get::<&str>("encoding-name").unwrap_or("").to_ascii_uppercase();
    let kind = if media == "audio" { StreamKind::Audio } else { StreamKind::Video };
    let bin = gst::Bin::with_name(if kind == StreamKind::Audio {
        "audio-decoder"
    } else {
        "video-decoder"
    });
    let decoder_factory =
        installed_decoder(&encoding).ok_or_else(|| MediaError::NoDecoder(encoding.clone()))?;
    let convert = make(if kind == StreamKind::Audio { "audioconvert" } else { "videoconvert" })?;
    let (depay, dec) = decoder_factory;
    let depay = make(depay)?;
    let dec = make(dec)?;
    configure_loss_recovery(&depay, &dec, kind);
    if dec.find_property("threads").is_some() && kind == StreamKind::Video {
        decoder_threads_follow_size(&dec);
    }
    // libav's default frame threading holds one frame per thread before output;
    // slice threads add no latency.
    if dec.find_property("thread-type").is_some() {
        set_str(&dec, "thread-type", "slice");
        set_str(&dec, "max-threads", "2");
    }
    let mut chain = vec![depay, dec];
    if kind == StreamKind::Audio {
        chain.push(make("audioresample")?);
    }
    chain.push(convert);
    let refs: Vec<&gst::Element> = chain.iter().collect();
    link_all(&bin, &refs)?;
    ghost(&bin, &chain[0], &chain[chain.len() - 1])?;
    Ok((bin, kind))
}

/// Gives a libvpx decoder ([`codec_threads`]) the threads for the size of what it receives,
/// which only the stream says: the depayloader's caps carry the size of the last key frame,
/// and the decoder reads `threads` when it opens libvpx, at the first key frame after each
/// new caps. Two until the caps say the size (the default on two cores).
fn decoder_threads_follow_size(dec: &gst::Element) {
    dec.set_property("threads", 2u32);
    let Some(sink) = dec.static_pad("sink") else { return };
    sink.add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, |pad, info| {
        let Some(gst::PadProbeData::Event(event)) = &info.data else {
            return gst::PadProbeReturn::Ok;
        };
        let gst::EventView::Caps(caps) = event.view() else { return gst::PadProbeReturn::Ok };
        let size = caps
            .caps()
            .structure(0)
            .and_then(|s| Some((s.get::<i32>("width").ok()?, s.get::<i32>("height").ok()?)));
        if let (Some((w, h)), Some(dec)) = (size, pad.parent_element())
            && w > 0
            && h > 0
        {
            let threads = codec_threads(w as u32, h as u32);
            if dec.property::<u32>("threads") != threads {
                dec.set_property("threads", threads);
            }
        }
        gst::PadProbeReturn::Ok
    });
}

/// What a receiving chain does about lost packets (the jitterbuffer has given up on them:
/// neither the packet nor its retransmission came in time).
///
/// Video: the depayloader asks for a key frame (PLI, through rtpsession) and drops what
/// it cannot depayload until one comes, instead of handing the decoder frames whose
/// references are gone; the decoder, on an error or a frame it marks corrupted, asks for
/// one too (`automatic-request-sync-points`) and drops the corrupted frame rather than show
/// garbage; decoder errors never end the stream (`max-errors=-1`). Audio: Opus decodes a
/// lost packet from the in-band FEC of the next one (the jitterbuffer's lost-packet events,
/// `do-lost`, which webrtcbin turns on), or conceals it.
pub fn configure_loss_recovery(depay: &gst::Element, dec: &gst::Element, kind: StreamKind) {
    match kind {
        StreamKind::Video => {
            key_frame_requests(depay);
            set_str(depay, "request-keyframe", "true");
            set_str(depay, "wait-for-keyframe", "true");
            set_str(dec, "automatic-request-sync-points", "true");
            set_str(dec, "discard-corrupted-frames", "true");
            set_str(dec, "max-errors", "-1");
            // One request per round trip or so is enough; a burst of losses must not become
            // a burst of key frames (each costs several frames' worth of bits).
            set_str(dec, "min-force-key-unit-interval", "250000000");
        }
        StreamKind::Audio => {
            set_str(dec, "plc", "true");
            set_str(dec, "use-inband-fec", "true");
        }
    }
}

/// Key frame requests of a video receiving chain as they go to rtpsession, on the
/// depayloader's sink pad: a PLI when the peer takes PLIs, else a FIR with a fresh sequence
/// number; once asked, not again until a key frame came or [`KEY_FRAME_RETRY`] passed.
///
/// rtpvp8depay asks with `all-headers=TRUE` and `count=0` every time. rtpsession turns that
/// into a FIR (the peer offered `ccm fir`), whose sequence number moves only when `count`
/// does: every FIR after the first repeated the first one, which a sender must not answer
/// again (RFC 5104), and a pending FIR also kept the decoder's PLIs from going out. A lossy
/// link then waited for the next periodic key frame (3 s) at every unrepaired loss. And the
/// depayloader and the decoder ask at every frame they cannot use: on a congested link that
/// was a key frame every few hundred milliseconds, each several frames' worth of bits.
fn key_frame_requests(depay: &gst::Element) {
    let (Some(sink), Some(src)) = (depay.static_pad("sink"), depay.static_pad("src")) else {
        return;
    };
    // When the last request went out (or the key frame it asked for last showed it is on its
    // way); `None` once a key frame came.
    let asked = std::sync::Arc::new(std::sync::Mutex::new(None::<std::time::Instant>));
    let count = std::sync::atomic::AtomicU32::new(1);
    let asked_in = asked.clone();
    if depay.factory().is_some_and(|f| f.name() == "rtpvp8depay") {
        watch_key_frames_on_the_way(&sink, asked.clone());
    }
    sink.add_probe(gst::PadProbeType::EVENT_UPSTREAM, move |pad, info| {
        let Some(gst::PadProbeData::Event(event)) = &info.data else {
            return gst::PadProbeReturn::Ok;
        };
        if gst_video::UpstreamForceKeyUnitEvent::parse(event).is_err() {
            return gst::PadProbeReturn::Ok;
        }
        {
            let mut asked = asked_in.lock().unwrap_or_else(|e| e.into_inner());
            let now = std::time::Instant::now();
            if asked.is_some_and(|t| now.duration_since(t) < KEY_FRAME_RETRY) {
                // Replaced by an event nobody acts on, not dropped: GStreamer 1.22 unrefs a
                // NULL event when a probe drops one given to gst_pad_push_event, which is
                // how the depayloader asks, at every frame it drops (a GStreamer-CRITICAL
                // each, hundreds in a lossy call).
                info.data = Some(gst::PadProbeData::Event(ignored_key_frame_request()));
                return gst::PadProbeReturn::Ok;
            }
            *asked = Some(now);
        }
        gst::debug!(CAT, obj = pad, "asking for a key frame");
        let pli = pad
            .current_caps()
            .and_then(|c| c.structure(0).map(|s| s.has_field("rtcp-fb-nack-pli")))
            .unwrap_or(true);
        let n = count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let request =
            gst_video::UpstreamForceKeyUnitEvent::builder().all_headers(!pli).count(n).build();
        info.data = Some(gst::PadProbeData::Event(request));
        gst::PadProbeReturn::Ok
    });
    src.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
        if let Some(gst::PadProbeData::Buffer(buffer)) = &info.data
            && !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT)
        {
            let was = asked.lock().unwrap_or_else(|e| e.into_inner()).take();
            gst::debug!(CAT, obj = pad, "key frame received (asked: {was:?})");
        }
        gst::PadProbeReturn::Ok
    });
}

/// While a key frame we asked for is arriving (on `sink`, a VP8 depayloader's), its packets
/// put off asking again: a VP8 key
/// frame is seen by its first packet (the payload descriptor's S bit, partition 0, and the
/// payload header's P bit clear), and every packet of the same RTP timestamp counts as
/// [`KEY_FRAME_RETRY`] more to wait.
///
/// On a slow link a key frame takes longer to arrive than the retry interval. A Chromium
/// tab keeping 640x480 (our SDK's `maintain-resolution`) sent 30 to 40 KB key frames into a
/// 250 kbit/s link, a second each; asked again every 600 ms, it answered each request with
/// another one (18 in 18 s), they filled the link, and its picture and ours stood still.
fn watch_key_frames_on_the_way(
    sink: &gst::Pad,
    asked: std::sync::Arc<std::sync::Mutex<Option<std::time::Instant>>>,
) {
    // The RTP timestamp of the key frame on its way (NONE: none).
    const NONE: u64 = u64::MAX;
    let on_the_way = std::sync::atomic::AtomicU64::new(NONE);
    let ordering = std::sync::atomic::Ordering::Relaxed;
    sink.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        let Some(gst::PadProbeData::Buffer(buffer)) = &info.data else {
            return gst::PadProbeReturn::Ok;
        };
        let mut asked = asked.lock().unwrap_or_else(|e| e.into_inner());
        if asked.is_none() {
            on_the_way.store(NONE, ordering);
            return gst::PadProbeReturn::Ok;
        }
        let Ok(rtp) = gst_rtp::RTPBuffer::from_buffer_readable(buffer) else {
            return gst::PadProbeReturn::Ok;
        };
        let timestamp = rtp.timestamp();
        let starts_key_frame = rtp.payload().ok().is_some_and(vp8_key_frame_start);
        if starts_key_frame {
            on_the_way.store(u64::from(timestamp), ordering);
        }
        if on_the_way.load(ordering) == u64::from(timestamp) {
            *asked = Some(std::time::Instant::now());
        }
        gst::PadProbeReturn::Ok
    });
}

/// Whether a VP8 RTP payload (RFC 7741) is the first packet of a key frame.
fn vp8_key_frame_start(payload: &[u8]) -> bool {
    let Some(&first) = payload.first() else { return false };
    let (extended, start, partition) = (first & 0x80 != 0, first & 0x10 != 0, first & 0x07);
    if !start || partition != 0 {
        return false;
    }
    let mut at = 1;
    if extended {
        let Some(&x) = payload.get(1) else { return false };
        at = 2;
        if x & 0x80 != 0 {
            // PictureID: 15 bits when its M bit is set, else 7.
            let Some(&id) = payload.get(at) else { return false };
            at += if id & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            at += 1; // TL0PICIDX
        }
        if x & 0x30 != 0 {
            at += 1; // TID/KEYIDX
        }
    }
    // The VP8 payload header's P bit: 0 for a key frame.
    payload.get(at).is_some_and(|header| header & 0x01 == 0)
}

/// How long a receiving chain that asked for a key frame waits for it before asking again:
/// a round trip and the key frame's own transmission, which on a slow link is most of a
/// second. The sender holds a request that comes sooner than [`KEY_FRAME_MIN_INTERVAL`]
/// after its last key frame until then, so asking again after this much costs no extra key
/// frame; waiting a whole second left the picture frozen that long whenever the key frame
/// asked for was itself lost (a 480p key frame is 10 to 20 packets: under 3 % loss a third
/// of them lose one, and its retransmission can be lost or late too).
pub const KEY_FRAME_RETRY: std::time::Duration = std::time::Duration::from_millis(600);

/// Payload type that an SDP offers for an encoding name (case-insensitive), for the
/// answerer's payloaders.
pub fn payload_in_sdp(sdp: &gst_sdp::SDPMessageRef, media: &str, encoding: &str) -> Option<u32> {
    sdp.medias()
        .filter(|m| m.media() == Some(media))
        .find_map(|m| rtpmaps(m).find(|(_, name)| name.eq_ignore_ascii_case(encoding)))
        .map(|(pt, _)| pt)
}

/// The video codec an answerer sends: the one it is set to when the offer has it, else the
/// offer's first one it can encode (sending another codec than the caller's beats sending
/// nothing); its payload type in the offer and the transceiver's `codec-preferences` for it.
/// `None` for an offer without video or without a codec we encode.
pub fn answer_video_codec(
    sdp: &gst_sdp::SDPMessageRef,
    ours: VideoCodec,
) -> Option<(VideoCodec, u32, gst::Caps)> {
    let media = sdp.medias().find(|m| m.media() == Some("video"))?;
    let offered: Vec<(VideoCodec, u32)> = (0..media.formats_len())
        .filter_map(|i| rtp_payload_type(media.format(i)?))
        .filter_map(|pt| {
            let name = rtpmap_name(media, pt)?;
            let codec = [VideoCodec::Vp8, VideoCodec::H264, VideoCodec::Vp9]
                .into_iter()
                .find(|c| c.encoding_name().eq_ignore_ascii_case(name))?;
            Some((codec, pt))
        })
        .collect();
    let codec = if offered.iter().any(|(c, _)| *c == ours) {
        ours
    } else {
        offered.iter().map(|(c, _)| *c).find(|c| c.available())?
    };
    let pts = offered.iter().filter(|(c, _)| *c == codec).map(|(_, pt)| *pt);
    if codec != VideoCodec::H264 {
        let pt = pts.clone().next()?;
        return Some((codec, pt, video_rtp_caps(codec, pt)));
    }
    // H.264: the payload type of constrained baseline in non-interleaved mode (what we
    // send), else any in that mode; its profile-level-id, as webrtcbin answers only with
    // identical format parameters.
    let fmtp = |pt: u32| {
        fmtp_index(media, pt)
            .and_then(|i| media.attribute(i)?.value()?.split_once(' '))
            .map(|(_, params)| params.to_ascii_lowercase())
            .unwrap_or_default()
    };
    let param = |params: &str, key: &str| {
        params
            .split(';')
            .filter_map(|kv| kv.trim().split_once('='))
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.trim().to_owned())
    };
    let mode1: Vec<(u32, Option<String>)> = pts
        .map(|pt| (pt, fmtp(pt)))
        .filter(|(_, f)| param(f, "packetization-mode").as_deref() == Some("1"))
        .map(|(pt, f)| (pt, param(&f, "profile-level-id")))
        .collect();
    let constrained_baseline = |id: &Option<String>| {
        id.as_deref()
            .filter(|id| id.len() == 6 && id.starts_with("42"))
            .and_then(|id| u8::from_str_radix(&id[2..4], 16).ok())
            .is_some_and(|iop| iop & 0x40 != 0)
    };
    let (pt, profile) =
        mode1.iter().find(|(_, id)| constrained_baseline(id)).or_else(|| mode1.first()).cloned()?;
    let mut caps = video_rtp_caps(codec, pt);
    if let Some(s) = caps.make_mut().structure_mut(0) {
        match profile {
            Some(id) => s.set("profile-level-id", id),
            None => s.remove_field("profile-level-id"),
        }
    }
    Some((codec, pt, caps))
}

/// The payload types of an m-section with their encoding names (its `a=rtpmap` lines;
/// malformed ones are skipped, and so are payload types RTP cannot carry: see
/// [`rtp_payload_type`]).
fn rtpmaps(media: &gst_sdp::SDPMediaRef) -> impl Iterator<Item = (u32, &str)> {
    media.attributes().filter(|a| a.key() == "rtpmap").filter_map(|a| {
        let (pt, rest) = a.value()?.split_once(' ')?;
        Some((rtp_payload_type(pt)?, rest.split('/').next().unwrap_or("")))
    })
}

/// A payload type of an SDP (an `m=` format, an `a=rtpmap`), when RTP can carry it: the RTP
/// header has 7 bits for it (0..=127). A peer's offer can name any number; one out of range
/// set on a payloader's `pt` would be refused, so such a codec is treated as not offered.
pub fn rtp_payload_type(text: &str) -> Option<u32> {
    text.trim().parse::<u32>().ok().filter(|pt| *pt <= 127)
}

/// The encoding name of a payload type of an m-section (its `a=rtpmap`).
fn rtpmap_name(media: &gst_sdp::SDPMediaRef, pt: u32) -> Option<&str> {
    rtpmaps(media).find(|(p, _)| *p == pt).map(|(_, name)| name)
}

/// The index of the `a=fmtp` attribute of a payload type of an m-section.
fn fmtp_index(media: &gst_sdp::SDPMediaRef, pt: u32) -> Option<u32> {
    (0..media.attributes_len()).find(|&i| {
        media.attribute(i).is_some_and(|a| {
            a.key() == "fmtp"
                && a.value()
                    .and_then(|v| v.split_once(' '))
                    .is_some_and(|(p, _)| p.trim().parse() == Ok(pt))
        })
    })
}

/// Sets the bandwidth of every video m-section of an SDP to `b=AS:<kbps>` (replacing any
/// `AS` line it had), as the original does with its `max-bitrate`: the peer's sender and
/// congestion control keep what it sends us below that.
pub fn set_video_bandwidth(sdp: &mut gst_sdp::SDPMessageRef, kbps: u32) {
    for m in sdp.medias_mut() {
        if m.media() != Some("video") {
            continue;
        }
        for idx in (0..m.bandwidths_len()).rev() {
            if m.bandwidth(idx).and_then(|b| b.bwtype()) == Some("AS") {
                let _ = m.remove_bandwidth(idx);
            }
        }
        m.add_bandwidth("AS", kbps);
    }
}

/// Encodings of a video section that carry no picture of their own: no bitrate for them.
const NOT_A_VIDEO_CODEC: &[&str] = &["rtx", "red", "ulpfec", "flexfec-03"];

/// Removes Chrome's sender parameters (`x-google-*`) from an SDP: from every `a=fmtp`, and
/// media-level `a=x-google-*` lines.
///
/// Used on what a peer sends us before webrtcbin sees it. webrtcbin (1.22) turns an offer's
/// `a=fmtp:96 x-google-min-bitrate=250` into a caps field and writes it back in its answer as
/// a media-level `a=x-google-min-bitrate:250`; a webrtcbin receiving that line and an
/// `a=fmtp` with a different value for the same payload gets empty caps for the payload and
/// decodes nothing (found when both sides of a wilddogcall call sent `min-bitrate`). The
/// parameters only steer a Chrome sender, so nothing is lost for webrtcbin.
pub fn drop_google_bitrates(sdp: &mut gst_sdp::SDPMessageRef) {
    for m in sdp.medias_mut() {
        strip_google_params(m);
    }
}

/// [`drop_google_bitrates`] of one m-section.
fn strip_google_params(m: &mut gst_sdp::SDPMediaRef) {
    for idx in (0..m.attributes_len()).rev() {
        let Some(attr) = m.attribute(idx) else { continue };
        if attr.key().starts_with("x-google-") {
            let _ = m.remove_attribute(idx);
            continue;
        }
        if attr.key() != "fmtp" {
            continue;
        }
        let value = attr.value().unwrap_or("");
        let Some((pt, params)) = value.split_once(' ') else { continue };
        if !params.contains("x-google-") {
            continue;
        }
        let kept: Vec<&str> = params
            .split(';')
            .map(str::trim)
            .filter(|p| !p.is_empty() && !p.starts_with("x-google-"))
            .collect();
        if kept.is_empty() {
            let _ = m.remove_attribute(idx);
        } else {
            let fmtp = format!("{pt} {}", kept.join(";"));
            let _ = m.replace_attribute(idx, gst_sdp::SDPAttribute::new("fmtp", Some(&fmtp)));
        }
    }
}

/// Puts `x-google-max-bitrate=<max>` (kbps) in the `a=fmtp` of each video codec of every
/// video section, in place of any `x-google-*` parameter there. A Chrome peer takes it from
/// the description it receives as the cap of what it sends us; other peers ignore it.
///
/// No `x-google-min-bitrate`, though the original Web SDK sends its `minBitrateBps` there:
/// Chrome takes that as the floor of its estimate. With our 200 kbit/s default a Chromium
/// tab kept sending at least 200 kbit/s of video into a 250 kbit/s link (its
/// `availableOutgoingBitrate` stood at exactly 200,000), the queue stayed full and our echo
/// bot decoded 0 to 2 fps of it; a soft picture beats a frozen one, as for our own sender.
pub fn set_video_bitrate_cap(sdp: &mut gst_sdp::SDPMessageRef, max_kbps: u32) {
    let range = format!("x-google-max-bitrate={max_kbps}");
    for m in sdp.medias_mut() {
        if m.media() != Some("video") {
            continue;
        }
        strip_google_params(m);
        let codecs: Vec<u32> = rtpmaps(m)
            .filter(|(_, name)| NOT_A_VIDEO_CODEC.iter().all(|n| !n.eq_ignore_ascii_case(name)))
            .map(|(pt, _)| pt)
            .collect();
        for pt in codecs {
            let params =
                fmtp_index(m, pt).and_then(|i| Some((i, m.attribute(i)?.value()?.to_owned())));
            match params {
                Some((idx, value)) => {
                    let value = format!("{value};{range}");
                    let _ =
                        m.replace_attribute(idx, gst_sdp::SDPAttribute::new("fmtp", Some(&value)));
                }
                None => m.add_attribute("fmtp", Some(&format!("{pt} {range}"))),
            }
        }
    }
}

/// Removes `a=rtcp-fb:<pt> transport-cc` from the m-sections that do not map the TWCC header
/// extension: webrtcbin (1.22) puts it on every payload type, extension or not, and a
/// description advertises only what is behind it.
pub fn drop_unbacked_transport_cc(sdp: &mut gst_sdp::SDPMessageRef) {
    let session_twcc = sdp
        .attributes()
        .any(|a| a.key() == "extmap" && a.value().is_some_and(|v| v.contains(TWCC_URI)));
    for m in sdp.medias_mut() {
        let twcc = session_twcc
            || m.attributes()
                .any(|a| a.key() == "extmap" && a.value().is_some_and(|v| v.contains(TWCC_URI)));
        if twcc {
            continue;
        }
        for idx in (0..m.attributes_len()).rev() {
            let transport_cc = m.attribute(idx).is_some_and(|a| {
                a.key() == "rtcp-fb" && a.value().is_some_and(|v| v.ends_with(" transport-cc"))
            });
            if transport_cc {
                let _ = m.remove_attribute(idx);
            }
        }
    }
}

/// Names the one MediaStream of every sent m-section: a media-level `a=msid:<stream> <track>`
/// (RFC 8830) on each section that sends, unless it has one.
///
/// webrtcbin (1.22) writes msid only as `a=ssrc:… msid:` lines, and only for a section whose
/// sink pad already had caps when the description was made. A video encoder is often still
/// working on its first frame when an offer is made just after `accept`; then the audio
/// section names a stream and the video section none, and a browser puts the two tracks in
/// two MediaStreams. The original Web SDK attaches the first stream it is given, the audio
/// one, and its `<video>` stays 0x0 while frames are decoded. The track id is the one of the
/// section's `a=ssrc:… msid:` line when it has one, its `a=mid` otherwise.
pub fn label_media_stream(sdp: &mut gst_sdp::SDPMessageRef, stream_id: &str) {
    use crate::sdp_direction::Direction;
    let session = Direction::of_session(sdp);
    for m in sdp.medias_mut() {
        let sends = Direction::of_media(m, session).sends();
        if !sends || m.attribute_val("msid").is_some() {
            continue;
        }
        let ssrc_track = m.attributes().filter(|a| a.key() == "ssrc").find_map(|a| {
            let (_, msid) = a.value()?.split_once(" msid:")?;
            Some(msid.split_whitespace().nth(1)?.to_owned())
        });
        let Some(track) = ssrc_track.or_else(|| m.attribute_val("mid").map(str::to_owned)) else {
            continue;
        };
        m.add_attribute("msid", Some(&format!("{stream_id} {track}")));
    }
}

/// Requests a sink pad of webrtcbin for a sent stream whose RTP caps are `caps`, and sets
/// its transceiver's `codec-preferences` (so an offer can be made before any buffer flowed)
/// and direction.
pub fn request_send_pad(
    webrtcbin: &gst::Element,
    caps: &gst::Caps,
    direction: gst_webrtc::WebRTCRTPTransceiverDirection,
) -> Result<(gst::Pad, gst_webrtc::WebRTCRTPTransceiver), MediaError> {
    let templ = webrtcbin
        .pad_template("sink_%u")
        .ok_or_else(|| MediaError::Link("webrtcbin has no sink_%u template".into()))?;
    let pad = webrtcbin
        .request_pad(&templ, None, Some(caps))
        .ok_or_else(|| MediaError::Link("webrtcbin refused a sink pad".into()))?;
    let transceiver = pad.property::<gst_webrtc::WebRTCRTPTransceiver>("transceiver");
    transceiver.set_property("codec-preferences", caps);
    transceiver.set_property("direction", direction);
    Ok((pad, transceiver))
}

/// Adds a receive-only transceiver for `caps` (an endpoint that sends nothing of this kind).
pub fn add_recv_transceiver(
    webrtcbin: &gst::Element,
    caps: &gst::Caps,
) -> gst_webrtc::WebRTCRTPTransceiver {
    webrtcbin.emit_by_name::<gst_webrtc::WebRTCRTPTransceiver>(
        "add-transceiver",
        &[&gst_webrtc::WebRTCRTPTransceiverDirection::Recvonly, caps],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A VP8 RTP packet: sequence number, timestamp, payload.
    fn vp8_packet(seq: u16, timestamp: u32, payload: &[u8]) -> gst::Buffer {
        use gst_rtp::prelude::RTPBufferExt;
        let mut buffer = gst::Buffer::new_rtp_with_sizes(payload.len() as u32, 0, 0).unwrap();
        {
            let buffer = buffer.get_mut().unwrap();
            let mut rtp = gst_rtp::RTPBuffer::from_buffer_writable(buffer).unwrap();
            rtp.set_payload_type(96);
            rtp.set_seq(seq);
            rtp.set_timestamp(timestamp);
            rtp.payload_mut().unwrap().copy_from_slice(payload);
        }
        buffer
    }

    /// A VP8 decoder gets one thread for what the depayloader says is up to 480p, two above
    /// (libvpx reads it when it opens, at the first key frame after new caps).
    #[test]
    fn vp8_decoder_threads_follow_the_received_size() {
        gst::init().unwrap();
        let rtp = video_rtp_caps(VideoCodec::Vp8, 96);
        let (bin, kind) = decoder_bin(&rtp).unwrap();
        assert_eq!(kind, StreamKind::Video);
        let dec = bin
            .iterate_elements()
            .into_iter()
            .flatten()
            .find(|e| e.factory().is_some_and(|f| f.name() == "vp8dec"))
            .unwrap();
        bin.set_state(gst::State::Paused).unwrap();
        let sink = dec.static_pad("sink").unwrap();
        assert!(sink.send_event(gst::event::StreamStart::new("vp8")));
        let threads_for = |width: i32, height: i32| {
            let caps = gst::Caps::builder("video/x-vp8")
                .field("width", width)
                .field("height", height)
                .field("framerate", gst::Fraction::new(0, 1))
                .build();
            sink.send_event(gst::event::Caps::new(&caps));
            dec.property::<u32>("threads")
        };
        assert_eq!(threads_for(640, 480), 1);
        assert_eq!(threads_for(320, 240), 1);
        assert_eq!(threads_for(1280, 720), 2);
        assert_eq!(threads_for(640, 480), 1);
        bin.set_state(gst::State::Null).unwrap();
        assert_eq!((codec_threads(640, 480), codec_threads(1920, 1080)), (1, 2));
    }

    #[test]
    fn a_key_frame_on_its_way_puts_off_asking_again() {
        gst::init().unwrap();
        let depay = gst::ElementFactory::make("rtpvp8depay").build().unwrap();
        key_frame_requests(&depay);
        let sink = depay.static_pad("sink").unwrap();
        let upstream = gst::Pad::builder(gst::PadDirection::Src).name("upstream").build();
        let sent = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let counted = sent.clone();
        upstream.add_probe(gst::PadProbeType::EVENT_UPSTREAM, move |_, info| {
            if let Some(gst::PadProbeData::Event(e)) = &info.data
                && gst_video::UpstreamForceKeyUnitEvent::parse(e).is_ok()
            {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            gst::PadProbeReturn::Ok
        });
        upstream.set_active(true).unwrap();
        upstream.link(&sink).unwrap();
        depay.set_state(gst::State::Playing).unwrap();
        assert!(upstream.push_event(gst::event::StreamStart::new("vp8")));
        let caps = gst::Caps::builder("application/x-rtp")
            .field("media", "video")
            .field("clock-rate", 90000i32)
            .field("encoding-name", "VP8")
            .field("payload", 96i32)
            .build();
        assert!(upstream.push_event(gst::event::Caps::new(&caps)));
        let segment = gst::FormattedSegment::<gst::ClockTime>::new();
        assert!(upstream.push_event(gst::event::Segment::new(&segment)));
        let ask = || {
            let request = gst_video::UpstreamForceKeyUnitEvent::builder().build();
            sink.push_event(request);
            sent.load(std::sync::atomic::Ordering::SeqCst)
        };
        let ms = std::time::Duration::from_millis;
        assert_eq!(ask(), 1);
        // The key frame asked for starts to arrive (S bit, P bit clear), slowly: on a slow
        // link it takes longer than KEY_FRAME_RETRY.
        let _ = upstream.push(vp8_packet(1, 9000, &[0x10, 0x00, 0x9d, 0x01, 0x2a]));
        for seq in 2..=3 {
            std::thread::sleep(ms(250));
            let _ = upstream.push(vp8_packet(seq, 9000, &[0x00, 0x55, 0x55]));
        }
        std::thread::sleep(ms(250));
        // 750 ms after asking, but its packets still come: not again.
        assert_eq!(ask(), 1);
        // Nothing more of it for KEY_FRAME_RETRY: asked again.
        std::thread::sleep(KEY_FRAME_RETRY + ms(50));
        assert_eq!(ask(), 2);
        depay.set_state(gst::State::Null).unwrap();
    }

    /// What a key frame request becomes on its way to rtpsession: a PLI (`all-headers`
    /// false) for a peer that takes PLIs (`rtcp-fb-nack-pli` in the caps), else a FIR
    /// (`all-headers` true) whose count moves at every request, so that rtpsession gives each
    /// FIR a new sequence number and the peer answers it (RFC 5104).
    #[test]
    fn key_frame_requests_are_a_pli_or_a_fresh_fir_by_what_the_peer_takes() {
        gst::init().unwrap();
        for takes_pli in [true, false] {
            let depay = gst::ElementFactory::make("rtpvp8depay").build().unwrap();
            key_frame_requests(&depay);
            let sink = depay.static_pad("sink").unwrap();
            let upstream = gst::Pad::builder(gst::PadDirection::Src).name("upstream").build();
            let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            let recorded = seen.clone();
            upstream.add_probe(gst::PadProbeType::EVENT_UPSTREAM, move |_, info| {
                if let Some(gst::PadProbeData::Event(e)) = &info.data
                    && let Ok(request) = gst_video::UpstreamForceKeyUnitEvent::parse(e)
                {
                    recorded.lock().unwrap().push((request.all_headers, request.count));
                }
                gst::PadProbeReturn::Ok
            });
            upstream.set_active(true).unwrap();
            upstream.link(&sink).unwrap();
            depay.set_state(gst::State::Playing).unwrap();
            assert!(upstream.push_event(gst::event::StreamStart::new("vp8")));
            let mut caps = gst::Caps::builder("application/x-rtp")
                .field("media", "video")
                .field("clock-rate", 90000i32)
                .field("encoding-name", "VP8")
                .field("payload", 96i32)
                .field("rtcp-fb-ccm-fir", true);
            if takes_pli {
                caps = caps.field("rtcp-fb-nack-pli", true);
            }
            assert!(upstream.push_event(gst::event::Caps::new(&caps.build())));
            let segment = gst::FormattedSegment::<gst::ClockTime>::new();
            assert!(upstream.push_event(gst::event::Segment::new(&segment)));
            // As rtpvp8depay asks: all-headers and count 0, every time.
            let ask = || {
                let request = gst_video::UpstreamForceKeyUnitEvent::builder()
                    .all_headers(true)
                    .count(0)
                    .build();
                sink.push_event(request);
            };
            ask();
            // A key frame came (no DELTA_UNIT flag): the next request goes out at once.
            let _ = upstream.push(vp8_packet(1, 9000, &[0x10, 0x00, 0x9d, 0x01, 0x2a]));
            std::thread::sleep(KEY_FRAME_RETRY + std::time::Duration::from_millis(50));
            ask();
            let seen = seen.lock().unwrap().clone();
            assert_eq!(seen.len(), 2, "pli {takes_pli}: {seen:?}");
            assert!(seen.iter().all(|(all_headers, _)| *all_headers != takes_pli), "{seen:?}");
            if !takes_pli {
                assert!(seen[1].1 > seen[0].1, "each FIR a new count: {seen:?}");
            }
            depay.set_state(gst::State::Null).unwrap();
        }
    }

    #[test]
    fn finds_the_first_packet_of_a_vp8_key_frame() {
        // S=1, partition 0, no extension; P=0: a key frame.
        assert!(vp8_key_frame_start(&[0x10, 0x00, 0x9d]));
        // P=1: an inter frame.
        assert!(!vp8_key_frame_start(&[0x10, 0x01]));
        // Not the start of the frame.
        assert!(!vp8_key_frame_start(&[0x00, 0x00]));
        // Extended, 15-bit PictureID, TL0PICIDX and TID: the header after them.
        assert!(vp8_key_frame_start(&[0x90, 0xe0, 0x80, 0x01, 0x05, 0x20, 0x00]));
        assert!(!vp8_key_frame_start(&[0x90, 0xe0, 0x80, 0x01, 0x05, 0x20, 0x01]));
        // 7-bit PictureID (browsers' short form).
        assert!(vp8_key_frame_start(&[0x90, 0x80, 0x12, 0x00]));
        // Truncated: no.
        assert!(!vp8_key_frame_start(&[0x90, 0x80]));
        assert!(!vp8_key_frame_start(&[]));
    }

    /// The offer webrtcbin made on 2026-11-25 before the video encoder's first caps: the
    /// audio section names a stream by ssrc, the video section none.
    const OFFER_WITHOUT_VIDEO_SSRC: &str = "v=0\r\no=- 1 0 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
        a=group:BUNDLE video0 audio1\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=sendrecv\r\n\
        a=rtpmap:96 VP8/90000\r\na=mid:video0\r\n\
        m=audio 0 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=bundle-only\r\na=sendrecv\r\n\
        a=rtpmap:111 OPUS/48000/2\r\n\
        a=ssrc:1269467221 msid:user3867457119@host-6df95679 webrtctransceiver1\r\n\
        a=ssrc:1269467221 cname:user3867457119@host-6df95679\r\na=mid:audio1\r\n\
        m=video 0 UDP/TLS/RTP/SAVPF 97\r\nc=IN IP4 0.0.0.0\r\na=recvonly\r\n\
        a=rtpmap:97 VP8/90000\r\na=mid:video2\r\n";

    #[test]
    fn video_codecs_get_the_bitrate_cap_and_no_floor_in_their_fmtp() {
        gst::init().unwrap();
        let sdp = "v=0\r\no=- 1 0 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96 97 102\r\nc=IN IP4 0.0.0.0\r\n\
            a=rtpmap:96 VP8/90000\r\na=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n\
            a=rtpmap:102 H264/90000\r\n\
            a=fmtp:102 packetization-mode=1;x-google-min-bitrate=10;profile-level-id=42e01f\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\n\
            a=rtpmap:111 OPUS/48000/2\r\na=fmtp:111 useinbandfec=1\r\n";
        let mut msg = gst_sdp::SDPMessage::parse_buffer(sdp.as_bytes()).unwrap();
        set_video_bitrate_cap(&mut msg, 800);
        let fmtp = |m: usize| -> Vec<String> {
            msg.media(m as u32)
                .unwrap()
                .attributes()
                .filter(|a| a.key() == "fmtp")
                .filter_map(|a| a.value().map(str::to_owned))
                .collect()
        };
        assert_eq!(
            fmtp(0),
            [
                "97 apt=96",
                "102 packetization-mode=1;profile-level-id=42e01f;x-google-max-bitrate=800",
                "96 x-google-max-bitrate=800",
            ]
        );
        assert_eq!(fmtp(1), ["111 useinbandfec=1"]);
    }

    #[test]
    fn chrome_sender_parameters_are_dropped_from_what_we_receive() {
        gst::init().unwrap();
        // What webrtcbin answered to an offer with x-google fmtp parameters, with ours added.
        let sdp = "v=0\r\no=- 1 0 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96 102\r\nc=IN IP4 0.0.0.0\r\n\
            a=rtpmap:96 VP8/90000\r\na=x-google-min-bitrate:250\r\na=x-google-max-bitrate:700\r\n\
            a=framerate:15\r\na=fmtp:96 x-google-min-bitrate=200;x-google-max-bitrate=300\r\n\
            a=rtpmap:102 H264/90000\r\n\
            a=fmtp:102 packetization-mode=1;x-google-start-bitrate=800;profile-level-id=42e01f\r\n";
        let mut msg = gst_sdp::SDPMessage::parse_buffer(sdp.as_bytes()).unwrap();
        drop_google_bitrates(&mut msg);
        let attrs: Vec<String> = msg
            .media(0)
            .unwrap()
            .attributes()
            .map(|a| format!("{}:{}", a.key(), a.value().unwrap_or("")))
            .collect();
        assert_eq!(
            attrs,
            [
                "rtpmap:96 VP8/90000",
                "framerate:15",
                "rtpmap:102 H264/90000",
                "fmtp:102 packetization-mode=1;profile-level-id=42e01f",
            ]
        );
        // What remains gives webrtcbin caps for both payloads.
        for pt in [96, 102] {
            let caps = msg.media(0).unwrap().caps_from_media(pt).unwrap();
            assert!(!caps.is_empty(), "{pt}: {caps}");
        }
    }

    #[test]
    fn the_twcc_slot_of_a_red_packet_gets_the_negotiated_id() {
        // rtpredenc 1.22.0's RED packet: a one-byte-header block with id 1, 2 bytes.
        let mut red = vec![0x90, 97, 0, 1, 0, 0, 0, 9, 0, 0, 0, 7, 0xbe, 0xde, 0, 1, 0x11, 0, 0, 0];
        red.extend_from_slice(&[96, 0xaa]);
        assert!(rename_onebyte_extension(&mut red, 1, 3));
        assert_eq!(red[16], 0x31);
        // Nothing else changed, and a second pass finds no id 1.
        assert_eq!(&red[17..], &[0, 0, 0, 96, 0xaa]);
        assert!(!rename_onebyte_extension(&mut red, 1, 3));
        // Other ids, other lengths, padding, no extension, truncated blocks: left alone.
        let mut other = vec![
            0x90, 97, 0, 1, 0, 0, 0, 9, 0, 0, 0, 7, 0xbe, 0xde, 0, 2, 0, 0x20, 5, 0x11, 1, 2, 0, 0,
        ];
        assert!(rename_onebyte_extension(&mut other, 1, 3));
        assert_eq!((other[17], other[19]), (0x20, 0x31));
        let mut long =
            vec![0x90, 97, 0, 1, 0, 0, 0, 9, 0, 0, 0, 7, 0xbe, 0xde, 0, 1, 0x12, 1, 2, 3];
        assert!(!rename_onebyte_extension(&mut long, 1, 3));
        let mut plain = vec![0x80, 97, 0, 1, 0, 0, 0, 9, 0, 0, 0, 7, 0x11, 0, 0];
        assert!(!rename_onebyte_extension(&mut plain, 1, 3));
        let mut truncated = vec![0x90, 97, 0, 1, 0, 0, 0, 9, 0, 0, 0, 7, 0xbe, 0xde, 0, 9, 0x11];
        assert!(!rename_onebyte_extension(&mut truncated, 1, 3));
        let mut short = vec![0x90, 97, 0, 1, 0, 0, 0, 9, 0, 0, 0, 7, 0xbe];
        assert!(!rename_onebyte_extension(&mut short, 1, 3));
        // After two CSRCs (CC = 2).
        let mut csrcs = vec![0x92, 97, 0, 1, 0, 0, 0, 9, 0, 0, 0, 7, 0, 0, 0, 1, 0, 0, 0, 2];
        csrcs.extend_from_slice(&[0xbe, 0xde, 0, 1, 0x11, 0, 0, 0]);
        assert!(rename_onebyte_extension(&mut csrcs, 1, 3));
        assert_eq!(csrcs[24], 0x31);
        // Id 15 ends the block: what follows it is not an element.
        let mut ended =
            vec![0x90, 97, 0, 1, 0, 0, 0, 9, 0, 0, 0, 7, 0xbe, 0xde, 0, 1, 0xf0, 0x11, 0, 0];
        assert!(!rename_onebyte_extension(&mut ended, 1, 3));
        // Ids a one-byte header cannot carry are never written.
        let mut red = vec![0x90, 97, 0, 1, 0, 0, 0, 9, 0, 0, 0, 7, 0xbe, 0xde, 0, 1, 0x11, 0, 0, 0];
        for to in [0, 15, 16] {
            assert!(!rename_onebyte_extension(&mut red, 1, to), "{to}");
        }
        assert_eq!(red[16], 0x11);
    }

    #[test]
    fn the_twcc_id_to_give_comes_from_the_caps() {
        gst::init().unwrap();
        let caps = |s: &str| s.parse::<gst::Caps>().unwrap();
        let red = caps(&format!(
            "application/x-rtp, media=video, encoding-name=VP8, payload=97, extmap-3={TWCC_URI}"
        ));
        assert_eq!(twcc_id_to_fix(red.structure(0).unwrap()), Some(3));
        let id_1 = caps(&format!(
            "application/x-rtp, media=video, encoding-name=VP8, payload=97, extmap-1={TWCC_URI}"
        ));
        assert_eq!(twcc_id_to_fix(id_1.structure(0).unwrap()), None);
        let no_twcc = caps("application/x-rtp, media=video, encoding-name=VP8, payload=97");
        assert_eq!(twcc_id_to_fix(no_twcc.structure(0).unwrap()), None);
    }

    #[test]
    fn transport_cc_only_with_the_twcc_extension() {
        gst::init().unwrap();
        let sdp = format!(
            "v=0\r\no=- 1 0 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\n\
            a=rtcp-fb:96 nack pli\r\na=rtcp-fb:96 transport-cc\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 OPUS/48000/2\r\n\
            a=rtcp-fb:111 transport-cc\r\na=extmap:3 {TWCC_URI}\r\n"
        );
        let mut msg = gst_sdp::SDPMessage::parse_buffer(sdp.as_bytes()).unwrap();
        assert_eq!(twcc_extmap_id(&msg), Some(3));
        drop_unbacked_transport_cc(&mut msg);
        let fb = |m: u32| -> Vec<String> {
            msg.media(m)
                .unwrap()
                .attributes()
                .filter(|a| a.key() == "rtcp-fb")
                .filter_map(|a| a.value().map(str::to_owned))
                .collect()
        };
        assert_eq!(fb(0), ["96 nack pli"]);
        assert_eq!(fb(1), ["111 transport-cc"]);
        let none =
            gst_sdp::SDPMessage::parse_buffer(b"v=0\r\no=- 1 0 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n")
                .unwrap();
        assert_eq!(twcc_extmap_id(&none), None);
    }

    #[test]
    fn opus_settings_wait_together_for_the_next_buffer() {
        gst::init().unwrap();
        let bin = audio_encoder_bin(OPUS_PAYLOAD).unwrap();
        let enc = audio_encoder(&bin).unwrap();
        let pending = || {
            let p = unsafe { enc.data::<PendingSettings>(PENDING_SETTINGS) }.unwrap();
            unsafe { p.as_ref() }.lock().unwrap().clone()
        };
        // No buffer yet: a thousand changes wait as one per property.
        for bps in 0..1000 {
            set_audio_bitrate(&enc, 20_000 + bps);
        }
        set_audio_loss_percentage(&enc, 7);
        assert_eq!(
            pending(),
            [("bitrate", "20999".to_owned()), ("packet-loss-percentage", "7".to_owned())]
        );
        assert_ne!(enc.property::<i32>("bitrate"), 20_999, "applied before a buffer");
        let pipeline = gst::Pipeline::new();
        let src =
            gst::ElementFactory::make("audiotestsrc").property("num-buffers", 5).build().unwrap();
        let sink = gst::ElementFactory::make("fakesink").build().unwrap();
        pipeline.add_many([&src, bin.upcast_ref(), &sink]).unwrap();
        gst::Element::link_many([&src, bin.upcast_ref(), &sink]).unwrap();
        pipeline.set_state(gst::State::Playing).unwrap();
        let bus = pipeline.bus().unwrap();
        let msg = bus
            .timed_pop_filtered(
                gst::ClockTime::from_seconds(10),
                &[gst::MessageType::Eos, gst::MessageType::Error],
            )
            .expect("the pipeline ends");
        pipeline.set_state(gst::State::Null).unwrap();
        assert_eq!(msg.type_(), gst::MessageType::Eos, "{msg:?}");
        assert_eq!(enc.property::<i32>("bitrate"), 20_999);
        assert_eq!(enc.property::<i32>("packet-loss-percentage"), 7);
        assert!(pending().is_empty());
    }

    #[test]
    fn every_sent_section_names_the_same_stream() {
        gst::init().unwrap();
        let mut msg =
            gst_sdp::SDPMessage::parse_buffer(OFFER_WITHOUT_VIDEO_SSRC.as_bytes()).unwrap();
        label_media_stream(&mut msg, "wilddog-s1");
        let msids: Vec<Option<&str>> = msg.medias().map(|m| m.attribute_val("msid")).collect();
        assert_eq!(
            msids,
            [Some("wilddog-s1 video0"), Some("wilddog-s1 webrtctransceiver1"), None],
            "{}",
            msg.as_text().unwrap()
        );
        // Labelling twice changes nothing.
        label_media_stream(&mut msg, "wilddog-other");
        assert_eq!(msg.media(0).unwrap().attributes().filter(|a| a.key() == "msid").count(), 1);
        assert_eq!(msg.media(0).unwrap().attribute_val("msid"), Some("wilddog-s1 video0"));

        // A receive-only description stated once at the session level sends nothing.
        let receive_only = OFFER_WITHOUT_VIDEO_SSRC.replace("a=sendrecv\r\n", "").replacen(
            "t=0 0\r\n",
            "t=0 0\r\na=recvonly\r\n",
            1,
        );
        let mut msg = gst_sdp::SDPMessage::parse_buffer(receive_only.as_bytes()).unwrap();
        label_media_stream(&mut msg, "wilddog-s1");
        assert!(msg.medias().all(|m| m.attribute_val("msid").is_none()), "{receive_only}");
    }

    #[test]
    fn dimensions_match_the_original() {
        assert_eq!(dimension_size("120p"), Some((160, 120)));
        assert_eq!(dimension_size("480p"), Some((640, 480)));
        assert_eq!(dimension_size("1080p"), Some((1920, 1080)));
        assert_eq!(dimension_size("4k"), None);
        assert_eq!(default_bitrates("480p"), (200, 500));
        assert_eq!(default_bitrates("720p"), (200, 1024));
        assert_eq!(default_bitrates("1080p"), (200, 1024));
        assert_eq!(clamp_bitrate(10), 50);
        assert_eq!(clamp_bitrate(5000), 2048);
    }

    #[test]
    fn video_sections_get_b_as() {
        gst::init().unwrap();
        let sdp = "v=0\r\no=- 1 0 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96\r\nb=AS:30\r\nb=TIAS:64000\r\na=rtpmap:96 VP8/90000\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n";
        let mut msg = gst_sdp::SDPMessage::parse_buffer(sdp.as_bytes()).unwrap();
        set_video_bandwidth(&mut msg, 700);
        let text = msg.as_text().unwrap();
        let (video, audio) = text.split_once("m=audio").unwrap();
        assert!(video.contains("b=AS:700\r\n"), "{text}");
        assert!(!video.contains("b=AS:30"), "{text}");
        assert!(video.contains("b=TIAS:64000"), "{text}");
        assert!(!audio.contains("b=AS"), "{text}");
    }

    #[test]
    fn answerer_follows_the_offers_video_codec() {
        gst::init().unwrap();
        // Chrome's order: VP8 first, several H.264 variants, VP9.
        let sdp = "v=0\r\no=- 1 0 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96 102 106 127 98\r\n\
            a=rtpmap:96 VP8/90000\r\na=rtpmap:102 H264/90000\r\n\
            a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f\r\n\
            a=rtpmap:106 H264/90000\r\n\
            a=fmtp:106 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42e01f\r\n\
            a=rtpmap:127 H264/90000\r\n\
            a=fmtp:127 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
            a=rtpmap:98 VP9/90000\r\n";
        let msg = gst_sdp::SDPMessage::parse_buffer(sdp.as_bytes()).unwrap();
        let pick = |ours| answer_video_codec(&msg, ours).map(|(c, pt, _)| (c, pt));
        assert_eq!(pick(VideoCodec::Vp8), Some((VideoCodec::Vp8, 96)));
        assert_eq!(pick(VideoCodec::Vp9), Some((VideoCodec::Vp9, 98)));
        // Constrained baseline in packetization mode 1, with its profile-level-id.
        let (codec, pt, caps) = answer_video_codec(&msg, VideoCodec::H264).unwrap();
        assert_eq!((codec, pt), (VideoCodec::H264, 127));
        let s = caps.structure(0).unwrap();
        assert_eq!(s.get::<&str>("profile-level-id").unwrap(), "42e01f");
        assert_eq!(s.get::<&str>("packetization-mode").unwrap(), "1");
        // An offer of H.264 alone: a VP8 answerer sends H.264.
        let h264_only = "v=0\r\no=- 1 0 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 102\r\na=rtpmap:102 H264/90000\r\n\
            a=fmtp:102 packetization-mode=1;profile-level-id=42c01f\r\n";
        let msg = gst_sdp::SDPMessage::parse_buffer(h264_only.as_bytes()).unwrap();
        let (codec, pt, caps) = answer_video_codec(&msg, VideoCodec::Vp8).unwrap();
        assert_eq!((codec, pt), (VideoCodec::H264, 102));
        assert_eq!(caps.structure(0).unwrap().get::<&str>("profile-level-id").unwrap(), "42c01f");
    }

    #[test]
    fn finds_payload_types_in_an_offer() {
        gst::init().unwrap();
        let sdp = "v=0\r\no=- 1 0 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 100 101\r\na=rtpmap:100 H264/90000\r\na=rtpmap:101 VP8/90000\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 109\r\na=rtpmap:109 opus/48000/2\r\n";
        let msg = gst_sdp::SDPMessage::parse_buffer(sdp.as_bytes()).unwrap();
        assert_eq!(payload_in_sdp(&msg, "video", "VP8"), Some(101));
        assert_eq!(payload_in_sdp(&msg, "audio", "OPUS"), Some(109));
        assert_eq!(payload_in_sdp(&msg, "video", "VP9"), None);
    }
}
