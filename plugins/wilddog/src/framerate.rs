//! The frame-rate limiter of the video sending chain: raw video in, the same buffers out, at
//! most `max-fps` of them per second on average.
//!
//! It replaces `videorate drop-only max-rate=…`, which keeps a frame only when it comes a
//! whole frame time after the previous one it kept: a 15 fps stream whose timestamps jitter
//! (frames decoded from WebRTC, which an echo sends back; live sources on a busy machine)
//! lost every frame that came a little early, and an echo bot sent 7 to 11 fps of a
//! 15 fps call back. This one is a token bucket over the buffers' timestamps: a frame time
//! of `max-fps` earns one frame, a frame spends one, and up to [`BURST_FRAMES`] can be saved,
//! so a stream at or under `max-fps` passes whole whatever its jitter, and a faster one is
//! thinned to `max-fps`. Congestion control lowers `max-fps` at run time
//! (`crate::congestion`).
//!
//! Not registered as a factory: the sending chain makes it with [`FrameRateLimiter::new`].

use std::sync::{LazyLock, Mutex};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::prelude::*;
use gst_base::subclass::prelude::*;

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "wilddogframerate",
        gst::DebugColorFlags::empty(),
        Some("Wilddog sending frame-rate limiter"),
    )
});

/// Default `max-fps`.
pub const DEFAULT_MAX_FPS: f64 = 15.0;
/// Frames a stream may save up (a frame that comes early after a late one still passes).
pub const BURST_FRAMES: f64 = 2.0;
/// A frame passes with this much less than a whole token: rounding and clock drift of a
/// source running at exactly `max-fps` must not cost it a frame.
const TOLERANCE: f64 = 0.05;

/// The token bucket, apart from GStreamer so that it can be tested alone.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenBucket {
    tokens: f64,
    last: Option<gst::ClockTime>,
}

impl Default for TokenBucket {
    fn default() -> Self {
        TokenBucket { tokens: BURST_FRAMES, last: None }
    }
}

impl TokenBucket {
    /// Whether a frame stamped `pts` passes at `max_fps`; spends its token when it does.
    pub fn admit(&mut self, pts: Option<gst::ClockTime>, max_fps: f64) -> bool {
        let Some(pts) = pts else { return true };
        if let Some(last) = self.last {
            // A timestamp going back (a new segment, a repeated frame) earns nothing.
            let earned = pts.saturating_sub(last).nseconds() as f64 / 1e9 * max_fps;
            self.tokens = (self.tokens + earned).min(BURST_FRAMES);
        }
        self.last = Some(pts);
        if self.tokens >= 1.0 - TOLERANCE {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[derive(Debug)]
struct Settings {
    max_fps: f64,
}

/// The element's implementation.
#[derive(Debug)]
pub struct FrameRateLimiterImp {
    settings: Mutex<Settings>,
    bucket: Mutex<TokenBucket>,
}

impl Default for FrameRateLimiterImp {
    fn default() -> Self {
        FrameRateLimiterImp {
            settings: Mutex::new(Settings { max_fps: DEFAULT_MAX_FPS }),
            bucket: Mutex::new(TokenBucket::default()),
        }
    }
}

#[glib::object_subclass]
impl ObjectSubclass for FrameRateLimiterImp {
    const NAME: &'static str = "GstWilddogFrameRateLimiter";
    type Type = FrameRateLimiter;
    type ParentType = gst_base::BaseTransform;
}

impl ObjectImpl for FrameRateLimiterImp {
    fn constructed(&self) {
        self.parent_constructed();
        // The buffers go through untouched.
        self.obj().set_passthrough(true);
    }

    fn properties() -> &'static [glib::ParamSpec] {
        static PROPS: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            // The most frames per second let through, on average; changeable while playing.
            vec![
                glib::ParamSpecDouble::builder("max-fps")
                    .nick("Max FPS")
                    .blurb("Most frames per second let through, on average")
                    .minimum(0.1)
                    .maximum(240.0)
                    .default_value(DEFAULT_MAX_FPS)
                    .mutable_playing()
                    .build(),
            ]
        });
        PROPS.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        if pspec.name() == "max-fps" {
            let fps = value.get::<f64>().unwrap_or(DEFAULT_MAX_FPS);
            gst::debug!(CAT, imp = self, "max-fps {fps}");
            self.settings.lock().unwrap_or_else(|e| e.into_inner()).max_fps = fps;
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        match pspec.name() {
            "max-fps" => self.settings.lock().unwrap_or_else(|e| e.into_inner()).max_fps.to_value(),
            _ => glib::Value::from_type(pspec.value_type()),
        }
    }
}

impl GstObjectImpl for FrameRateLimiterImp {}

impl ElementImpl for FrameRateLimiterImp {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static META: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "Wilddog frame-rate limiter",
                "Filter/Video",
                "Lets through at most max-fps frames per second on average",
                "wilddog-gst developers",
            )
        });
        Some(&*META)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let caps = gst::Caps::new_any();
            [gst::PadDirection::Src, gst::PadDirection::Sink]
                .into_iter()
                .map(|dir| {
                    let name = if dir == gst::PadDirection::Src { "src" } else { "sink" };
                    gst::PadTemplate::new(name, dir, gst::PadPresence::Always, &caps)
                        .unwrap_or_else(|e| panic!("pad template {name}: {e}"))
                })
                .collect()
        });
        TEMPLATES.as_ref()
    }
}

impl BaseTransformImpl for FrameRateLimiterImp {
    const MODE: gst_base::subclass::BaseTransformMode =
        gst_base::subclass::BaseTransformMode::AlwaysInPlace;
    const PASSTHROUGH_ON_SAME_CAPS: bool = false;
    const TRANSFORM_IP_ON_PASSTHROUGH: bool = true;

    fn start(&self) -> Result<(), gst::ErrorMessage> {
        *self.bucket.lock().unwrap_or_else(|e| e.into_inner()) = TokenBucket::default();
        Ok(())
    }

    fn sink_event(&self, event: gst::Event) -> bool {
        if matches!(event.view(), gst::EventView::FlushStop(_) | gst::EventView::Segment(_)) {
            *self.bucket.lock().unwrap_or_else(|e| e.into_inner()) = TokenBucket::default();
        }
        self.parent_sink_event(event)
    }

    fn transform_ip(&self, buf: &mut gst::BufferRef) -> Result<gst::FlowSuccess, gst::FlowError> {
        self.limit(buf)
    }

    fn transform_ip_passthrough(
        &self,
        buf: &gst::Buffer,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        self.limit(buf)
    }
}

impl FrameRateLimiterImp {
    fn limit(&self, buf: &gst::BufferRef) -> Result<gst::FlowSuccess, gst::FlowError> {
        let max_fps = self.settings.lock().unwrap_or_else(|e| e.into_inner()).max_fps;
        if self.bucket.lock().unwrap_or_else(|e| e.into_inner()).admit(buf.pts(), max_fps) {
            Ok(gst::FlowSuccess::Ok)
        } else {
            gst::trace!(CAT, imp = self, "dropping {:?}", buf.pts());
            Ok(gst_base::BASE_TRANSFORM_FLOW_DROPPED)
        }
    }
}

glib::wrapper! {
    /// The frame-rate limiter (see the module docs).
    pub struct FrameRateLimiter(ObjectSubclass<FrameRateLimiterImp>) @extends gst_base::BaseTransform, gst::Element, gst::Object;
}

impl FrameRateLimiter {
    /// A limiter letting `max_fps` frames per second through, named `name`.
    pub fn new(name: &str, max_fps: f64) -> Self {
        glib::Object::builder().property("name", name).property("max-fps", max_fps).build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passed(timestamps_ms: impl IntoIterator<Item = u64>, max_fps: f64) -> usize {
        let mut bucket = TokenBucket::default();
        timestamps_ms
            .into_iter()
            .filter(|&ms| bucket.admit(Some(gst::ClockTime::from_mseconds(ms)), max_fps))
            .count()
    }

    #[test]
    fn a_jittery_stream_at_max_fps_passes_whole() {
        // 15 fps for 10 s, each frame up to ±30 ms off its slot (a decoded WebRTC stream).
        let jitter = [0i64, 25, -20, 30, -30, 10, -5, 28, -27, 0, 15, -15];
        let ts: Vec<u64> = (0..150i64)
            .map(|i| (i * 1000 / 15 + jitter[i as usize % jitter.len()] + 100) as u64)
            .collect();
        assert_eq!(passed(ts, 15.0), 150);
    }

    #[test]
    fn a_faster_stream_is_thinned_to_max_fps() {
        // 30 fps for 10 s at max 15: 150 (and the burst's one or two).
        let n = passed((0..300u64).map(|i| i * 1000 / 30), 15.0);
        assert!((150..=152).contains(&n), "{n}");
        // 25 fps at max 10 for 10 s.
        let n = passed((0..250u64).map(|i| i * 40), 10.0);
        assert!((100..=102).contains(&n), "{n}");
    }

    #[test]
    fn a_gap_saves_no_more_than_the_burst() {
        // 5 s of nothing, then a burst of 10 frames 1 ms apart: two pass.
        let mut ts = vec![0];
        ts.extend((0..10).map(|i| 5000 + i));
        assert_eq!(passed(ts, 15.0), 1 + 2);
    }

    #[test]
    fn repeated_and_missing_timestamps() {
        let mut bucket = TokenBucket::default();
        assert!(bucket.admit(None, 1.0));
        let t = Some(gst::ClockTime::from_seconds(1));
        // The burst, then the same timestamp earns nothing.
        assert!(bucket.admit(t, 1.0));
        assert!(bucket.admit(t, 1.0));
        assert!(!bucket.admit(t, 1.0));
    }
}
