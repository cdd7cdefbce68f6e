//! Congestion control of what a call sends: what a bandwidth estimate becomes.
//!
//! The estimate is Google Congestion Control's (`rtpgccbwe` of gst-plugins-rs, fed by the
//! peer's transport-wide congestion control feedback; wired in
//! `wilddogcall/imp/congestion.rs`): the bit rate the path carries now, for everything the
//! call sends. [`Controller`] splits it between Opus and the video encoder and, when the
//! video's share falls below what the dimension needs (`min-bitrate` at the full size and
//! `max-fps`), steps down the sent size and frame rate in the order the call's
//! `degradation-preference` names ([`DegradationPreference`], WebRTC's: by default the size
//! first, the frame rate only at the smallest size; [`ladder`]; webrtcsink's "mitigation
//! modes"), and back up as capacity returns. On a link with less than
//! `min-bitrate` the estimate wins: a soft picture beats a frozen one.
//!
//! Everything here is plain arithmetic over numbers, tested without GStreamer.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use gst::glib;

/// How a call adapts what it sends to the network (`congestion-control`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, glib::Enum, Default)]
#[repr(i32)]
#[enum_type(name = "GstWilddogCongestionControl")]
pub enum CongestionControl {
    /// Google Congestion Control on transport-wide feedback drives the encoders.
    #[default]
    #[enum_value(name = "Google Congestion Control (rtpgccbwe)", nick = "gcc")]
    Gcc = 0,
    /// Fixed rates: the video encoder at `max-bitrate`, Opus at its default.
    #[enum_value(name = "Disabled: send at max-bitrate whatever the network", nick = "disabled")]
    Disabled = 1,
}

/// What goes down first when the link gives less than full quality needs
/// (`degradation-preference`): WebRTC's `RTCDegradationPreference`, what a browser page sets
/// on its sender ([`ladder`] has the steps of each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, glib::Enum, Default)]
#[repr(i32)]
#[enum_type(name = "GstWilddogDegradationPreference")]
pub enum DegradationPreference {
    /// The size goes down first, at the full frame rate; the rate only at the smallest size
    /// (what Chrome does for a camera). A picture that moves on a slow link.
    #[default]
    #[enum_value(
        name = "Maintain the frame rate: the size goes down first, the frame rate only at the smallest size",
        nick = "maintain-framerate"
    )]
    MaintainFramerate = 0,
    /// The frame rate goes down first (to two thirds, at least 10 fps), then the size at that
    /// rate.
    #[enum_value(
        name = "Balanced: the frame rate goes down first (to two thirds, at least 10 fps), then the size",
        nick = "balanced"
    )]
    Balanced = 1,
}

/// Opus bitrate on a link with room, bit/s (opusenc's default, what a call sends without
/// congestion control).
pub const AUDIO_BPS_MAX: u32 = 64_000;
/// Lowest Opus bitrate, bit/s: speech stays intelligible (wideband) down to about here.
pub const AUDIO_BPS_MIN: u32 = 12_000;
/// What one audio packet costs on top of its payload, bytes: RTP, the header extension,
/// SRTP, UDP and IPv4 headers.
pub const PACKET_OVERHEAD_BYTES: u32 = 60;
/// Opus frame durations by estimate: 20 ms (50 packets/s, 24 kbit/s of headers) while the
/// estimate is at least the first figure, 40 ms above the second, 60 ms below (8 kbit/s of
/// headers: on a 100 kbit/s link the headers of 20 ms packets would take a quarter of it).
pub const AUDIO_FRAME_THRESHOLDS_BPS: (u32, u32) = (300_000, 150_000);
/// Share of the video's part of the estimate given to the encoder: the rest covers packet
/// headers and retransmissions.
pub const VIDEO_SHARE: f64 = 0.9;
/// Lowest video target, kbps: below this an encoder makes nothing useful.
pub const VIDEO_KBPS_FLOOR: u32 = 20;
/// Lowest estimate the estimator may reach, bit/s (a floor for its own sake, well below any
/// `min-bitrate`: on a link with less than the floor the estimate wins).
pub const ESTIMATE_BPS_MIN: u32 = 40_000;
/// Where the estimate starts, bit/s (at most the ceiling): Chrome's start. A call that
/// started at the ceiling (640 kbit/s at 480p) on a 250 kbit/s link flooded it both ways
/// and decoded no frame in 30 s; from here the estimate grows about 8 % a second on a link
/// with room, and at 300 kbit/s a 480p call already sends its full size and rate.
pub const ESTIMATE_BPS_START: u32 = 300_000;
/// A lowered step is kept only with this much more than its need: encoders overshoot small
/// targets on detailed pictures (VP8 sent 340 kbit/s of a moving test pattern for a 200
/// kbit/s target at 480p), and a step chosen at its bare need congested the link it was
/// chosen for (on a 500 kbit/s link shared by both directions, 480p at 10 fps for 148 kbit/s
/// froze for 16 s of 30).
pub const FIT_MARGIN: f64 = 1.3;
/// The smallest size at the full frame rate holds down to this share of its need (see
/// [`Controller::fit_kbps`]).
pub const LAST_FULL_RATE_FIT: f64 = 0.75;
/// A step up needs this much more than the step's need (with [`FIT_MARGIN`] below full)...
pub const UPGRADE_MARGIN: f64 = 1.25;
/// ...for this long, without a step down in between.
pub const UPGRADE_HOLD: Duration = Duration::from_secs(3);
/// Frame rate a reduced-rate step keeps at least (unless `max-fps` is lower): a picture at
/// 10 fps still moves.
pub const REDUCED_FPS_FLOOR: u32 = 10;

/// A round trip this much over the lowest one the call measured means a standing queue at
/// the bottleneck, ms. Google Congestion Control's delay detector sees a queue that grows,
/// not one that is full: a tail-drop queue that filled in a tenth of a second (a call at
/// 300 kbit/s each way on a 250 kbit/s link) holds its packets 300 ms each way while the
/// loss-based control settles where 2 to 10 % are dropped. Retransmissions then come after
/// the frames were given up, every key frame loses a packet, and the picture froze 6 to 12 s.
pub const STANDING_QUEUE_MS: u32 = 150;
/// The round trip the first measurement is held against, ms: a queue of over
/// [`STANDING_QUEUE_MS`] on top of it is cut at once (a path this long, a satellite one,
/// costs one cut, which lifts again once its round trip is known).
pub const FIRST_RTT_MS: u32 = 50;
/// What a standing queue cuts the estimate to, each time it is seen (a feedback report, at
/// most every [`QUEUE_CUT_INTERVAL`]; without feedback, the stats, every 2 s).
pub const STANDING_QUEUE_CUT: f64 = 0.7;
/// How fast the cap lifts once the queue is gone, per stats period (per
/// [`QUEUE_LIFT_INTERVAL`] with feedback).
pub const STANDING_QUEUE_LIFT: f64 = 1.25;

/// A one-way queueing delay this long, ms, in every packet of a transport-wide feedback
/// report (its least), means a standing queue at the bottleneck: the same signal as
/// [`STANDING_QUEUE_MS`] of round trip, but read from each report (about every 100 ms) rather
/// than from the stats' round trip (every 2 s, and RTCP's round trip lags a report or two).
/// On a 250 kbit/s cap applied mid-call, the stats saw the queue 3.9 s after the cap, and
/// the picture froze 6 to 9 s; a report sees it in a few hundred milliseconds.
pub const QUEUE_DELAY_MS: u32 = 100;
/// A queueing delay under this, ms, is a drained queue: the cap may lift.
pub const QUEUE_DRAINED_MS: u32 = 30;
/// The shortest time between two cuts for a standing queue: what a cut does shows in the
/// reports only once the sent rate has changed and the queue has had time to shrink.
pub const QUEUE_CUT_INTERVAL: Duration = Duration::from_millis(500);
/// A cut for a standing queue shows in the reports only after a round trip through that
/// queue: the packets sent after it wait in the queue, and the reports on them wait in the
/// way back (on a link shared by both directions, the same queue). Another cut waits this
/// many times the queue it was made at (and [`QUEUE_CUT_INTERVAL`] at least), plus
/// [`FEEDBACK_INTERVAL`]. On a 300 kbit/s step both ends cut again every 500 ms into a
/// 320 ms queue, reading the same queue each time, and went from 150 to 40 kbit/s each,
/// where the link carried both at 120 (with this wait and [`QUEUE_DRAINING_MS`] they still
/// end at 40 to 90: each end's first cut comes with a smaller size and its key frame, and
/// the queue still grows a round trip later).
pub const QUEUE_ROUND_TRIPS: u32 = 2;
/// How often the peer sends transport-wide feedback (rtpsession's RTCP interval, Chrome's
/// at most 250 ms apart, 100 ms for both here).
pub const FEEDBACK_INTERVAL: Duration = Duration::from_millis(100);
/// A standing queue that went down this much, ms, since the last cut (or since the last
/// report that found it going down) is draining: the cut was enough, no other is made. A
/// tail-drop queue of 300 ms drains at what the link has left over: 75 ms every 500 ms with
/// both directions at 85 % of it.
pub const QUEUE_DRAINING_MS: u32 = 15;
/// A probe that failed leaves a queue of its own, which drains once its padding stopped: no
/// cut for a standing or growing queue this long after (unless the reports lose packets).
/// Both ends of a call on a 300 kbit/s link probed at once; the queue their padding left
/// (30 to 110 ms, seen 400 ms after the failure) cut each to 85 % of the little it then
/// delivered, every probe, down to the floor.
pub const PROBE_FAILED_GRACE: Duration = Duration::from_secs(1);
/// The shortest time between two lifts of the cap (the [`STANDING_QUEUE_LIFT`] of one stats
/// period before).
pub const QUEUE_LIFT_INTERVAL: Duration = Duration::from_secs(2);
/// A cut for a standing queue goes to this share of what the path delivered to the peer (of
/// the estimate, when less) (libwebrtc's delay-based back-off, β = 0.85 of the acknowledged
/// rate): what the bottleneck gives this direction, less room for the queue to drain.
pub const ACKED_SHARE: f64 = 0.85;
/// How much of the feedback the delivered rate is measured over.
pub const ACKED_WINDOW: Duration = Duration::from_millis(500);
/// Transport-wide feedback this recent drives the standing-queue guard instead of the stats'
/// round trip.
pub const FEEDBACK_FRESH: Duration = Duration::from_secs(5);
/// No feedback report for this long while we send means the reports are lost or stuck in the
/// bottleneck's queue: the link is congested, cut as for a standing queue, again after each
/// such silence. Reports come every 100 ms or so (rtpsession's RTCP interval; Chrome's at
/// most 250 ms apart); after a 250 kbit/s cap, tail drop lost most of them, and the
/// estimator and the queue guard heard nothing for 1 to 2 s while both sides kept sending
/// 300 kbit/s into it (libwebrtc's congestion window pushes back on unacknowledged data for
/// the same reason).
pub const FEEDBACK_SILENCE: Duration = Duration::from_millis(500);
/// A report with this share of its packets lost is one of a path in trouble.
pub const LOSSY_REPORT: f64 = 0.1;
/// The silence of the feedback counts only after this many reports: at the start of a call
/// they come late and irregularly (the first one 0.5 to 0.9 s after the first frame, then
/// gaps over [`FEEDBACK_SILENCE`] on a loaded machine), which is no congestion.
pub const FEEDBACK_REPORTS_ARMED: u32 = 20;
/// What a silence of the feedback, or a standing queue in reports that say nothing of what
/// the path delivered, cuts the cap to: half (with the delivered rate, [`ACKED_SHARE`]). On a 250 kbit/s cap, both sides at 300 kbit/s lost one packet in three,
/// the reports among them; cuts to 0.7 took four of them, 2.5 s, to bring both directions
/// under the capacity, and the picture stayed frozen until the queue drained.
pub const QUEUE_CUT: f64 = 0.5;
/// A queue that grew by [`QUEUE_GROWTH_MS`] over this long of troubled reports, while the
/// path delivered less than [`ACKED_SHARE`] of what we send, is cut before it stands.
pub const QUEUE_GROWTH_SPAN: Duration = Duration::from_millis(300);
/// See [`QUEUE_GROWTH_SPAN`], ms.
pub const QUEUE_GROWTH_MS: u32 = 30;
/// A queue must stand in the reports this long before the first cut, unless they also lose
/// packets: a receiver that did not run for a moment (a loaded machine) stamps a report's
/// packets late, once, but loses none.
pub const QUEUE_PERSIST: Duration = Duration::from_millis(200);
/// Within this of a cut, a standing queue or a silence is the same congestion: cut again
/// without waiting for [`QUEUE_PERSIST`].
pub const CONGESTION_EPISODE: Duration = Duration::from_secs(2);
/// A pause this long in what we send (this process did not run, or had nothing to send)
/// starts the silence over: the feedback had nothing to report.
pub const SENDING_PAUSE: Duration = Duration::from_millis(250);

/// Makes `rtpgccbwe` available: from the installed gst-plugins-rs RTP plugin when there is
/// one, else from the copy linked into this plugin (crate `gst-plugin-rtp`), registered in
/// this process on first use. Whether it is available.
pub fn ensure_estimator() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        if gst::ElementFactory::find("rtpgccbwe").is_some() {
            return true;
        }
        if let Err(e) = gstrsrtp::plugin_register_static() {
            gst::warning!(gst::CAT_DEFAULT, "cannot register rtpgccbwe: {e}");
        }
        gst::ElementFactory::find("rtpgccbwe").is_some()
    })
}

/// What a call sends at full quality, from its settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SendLimits {
    /// The dimension's width.
    pub width: u32,
    /// The dimension's height.
    pub height: u32,
    /// `max-fps`.
    pub max_fps: u32,
    /// `min-bitrate`, kbps: what the full size at `max-fps` needs.
    pub min_video_kbps: u32,
    /// `max-bitrate`, kbps.
    pub max_video_kbps: u32,
    /// Whether the call sends audio (whose share comes off the estimate first).
    pub audio: bool,
    /// What goes down first (`degradation-preference`).
    pub preference: DegradationPreference,
}

/// One step of the ladder: the size and rate sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// Width sent.
    pub width: u32,
    /// Height sent.
    pub height: u32,
    /// Frames per second sent (at most).
    pub fps: u32,
}

/// What the sending chains are set to for an estimate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Adaptation {
    /// The estimate it was made for, bit/s.
    pub estimate_bps: u32,
    /// Video encoder target, kbps.
    pub video_kbps: u32,
    /// Opus target, bit/s.
    pub audio_bps: u32,
    /// Opus frame duration, ms (20, 40 or 60).
    pub audio_frame_ms: u32,
    /// The step sent: size and frame rate.
    pub step: Step,
    /// Index of the step: 0 is full quality.
    pub level: usize,
    /// What full quality needs, kbps (`min-bitrate`).
    pub needed_kbps: u32,
}

impl Adaptation {
    /// Whether the network gives less than full quality needs (frame rate or size lowered).
    pub fn constrained(&self) -> bool {
        self.level > 0
    }
}

/// Turns estimates into [`Adaptation`]s, with hysteresis on the way up.
#[derive(Debug, Clone)]
pub struct Controller {
    limits: SendLimits,
    steps: Vec<Step>,
    level: usize,
    better_since: Option<Instant>,
    /// The lowest round trip measured, ms.
    min_rtt_ms: Option<u32>,
    /// A ceiling on the estimate set by a standing queue, bit/s.
    queue_cap_bps: Option<u32>,
    /// The last estimate given to [`Controller::update`], bit/s.
    last_estimate_bps: u32,
    /// When transport-wide feedback last measured the queue.
    feedback_at: Option<Instant>,
    /// When the queue cap was last cut or lifted on feedback.
    queue_cut_at: Option<Instant>,
    queue_lift_at: Option<Instant>,
    /// The standing queue the last cut was made at, or the last report that found it
    /// draining (when, ms): another cut waits for a round trip through it, and is made only
    /// if it did not drain.
    queue_cut_reference: Option<(Instant, u32)>,
    /// When a probe last failed ([`PROBE_FAILED_GRACE`]).
    probe_failed_at: Option<Instant>,
    /// The queue the last feedback report measured, ms.
    last_queue_ms: u32,
    /// When we last sent a packet, and since when without a pause ([`SENDING_PAUSE`]).
    sent_at: Option<Instant>,
    sending_since: Option<Instant>,
    /// Whether the feedback fell silent since the last report.
    silent: bool,
    /// Since when the reports have shown a standing queue.
    queue_since: Option<Instant>,
    /// Since when the reports say the path is in trouble, and the queue they read then, ms.
    troubled_since: Option<(Instant, u32)>,
    /// Feedback reports so far.
    reports: u32,
    /// Whether the last report said the path is in trouble ([`QueueReading::troubled`]).
    troubled: bool,
    /// Whether a probe proved the path carries the estimate since the last update: the size
    /// may go up more than one step at once, without [`UPGRADE_HOLD`].
    probe_passed: bool,
    /// ULPFEC packets sent per 100 video packets (`fec=ulpfec-red`; 0 without).
    redundancy_pct: u32,
    /// The estimate when the peer gives no transport-wide feedback, bit/s
    /// ([`Controller::grow_without_feedback`]; `None` until the first stats period).
    no_feedback_bps: Option<u32>,
}

impl Controller {
    /// A controller at full quality.
    pub fn new(limits: SendLimits) -> Self {
        let steps = ladder(&limits);
        let mut controller = Controller {
            limits,
            steps,
            level: 0,
            better_since: None,
            min_rtt_ms: None,
            queue_cap_bps: None,
            last_estimate_bps: 0,
            feedback_at: None,
            queue_cut_at: None,
            queue_lift_at: None,
            queue_cut_reference: None,
            probe_failed_at: None,
            last_queue_ms: 0,
            sent_at: None,
            sending_since: None,
            silent: false,
            queue_since: None,
            troubled_since: None,
            reports: 0,
            troubled: false,
            probe_passed: false,
            redundancy_pct: 0,
            no_feedback_bps: None,
        };
        // Until the estimator says otherwise, the estimate is where it starts.
        controller.last_estimate_bps = controller.estimate_range().1;
        controller
    }

    /// The settings it adapts.
    pub fn limits(&self) -> &SendLimits {
        &self.limits
    }

    /// The ladder of steps, full quality first.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// The estimator's range, bit/s: (lowest, first, highest). The highest is what a call
    /// without congestion control sends (`max-bitrate` and Opus's default); it starts at
    /// [`ESTIMATE_BPS_START`] (or the highest, if lower).
    pub fn estimate_range(&self) -> (u32, u32, u32) {
        let audio = if self.limits.audio { AUDIO_BPS_MAX + audio_overhead_bps(20) } else { 0 };
        let max =
            (f64::from(self.limits.max_video_kbps) * 1000.0 / VIDEO_SHARE).ceil() as u32 + audio;
        (ESTIMATE_BPS_MIN, ESTIMATE_BPS_START.min(max), max)
    }

    /// What full quality at step `level` needs, kbps: `min-bitrate` scaled by the step's
    /// frame rate and by its pixel count to the power 0.75 (a smaller picture needs more
    /// bits per pixel: 480p→240p is a quarter of the pixels and about a third of the bits).
    pub fn needed_kbps(&self, level: usize) -> u32 {
        let full = self.steps[0];
        let step = self.steps[level.min(self.steps.len() - 1)];
        let pixels = f64::from(step.width * step.height) / f64::from(full.width * full.height);
        let rate = f64::from(step.fps) / f64::from(full.fps);
        (f64::from(self.limits.min_video_kbps) * pixels.powf(0.75) * rate).round() as u32
    }

    /// What the video's share must be to stay at step `level`, kbps: `min-bitrate` at full
    /// quality, the step's need with [`FIT_MARGIN`] below; with `maintain-framerate`, the
    /// smallest size at the full frame rate at [`LAST_FULL_RATE_FIT`] of its need.
    ///
    /// Below that step the frame rate goes, which is what a viewer notices most; at the
    /// smallest size the margin is a few kbit/s, which VP8's overshoot of its target never
    /// needed. With the margin, a 250 kbit/s link shared by both directions (where each side's
    /// estimate hovers around 50 kbit/s) spent most of the call at the reduced rate.
    pub fn fit_kbps(&self, level: usize) -> f64 {
        let need = f64::from(self.needed_kbps(level));
        let last_at_full_rate = self.limits.preference == DegradationPreference::MaintainFramerate
            && self.steps.get(level + 1).is_some_and(|next| next.fps < self.steps[level].fps);
        if level == 0 {
            need
        } else if last_at_full_rate {
            need * LAST_FULL_RATE_FIT
        } else {
            need * FIT_MARGIN
        }
    }

    /// ULPFEC sends `percent` FEC packets per 100 video packets on top of the video: the
    /// encoder's share of the estimate is that much smaller from the next update on, so that
    /// video and FEC together stay within it (at 50 %, the encoder gets two thirds).
    pub fn set_redundancy(&mut self, percent: u32) {
        self.redundancy_pct = percent;
    }

    /// The audio and video shares of an estimate (bit/s, kbps): the video's is the encoder's
    /// target, FEC's redundancy left out.
    pub fn split(&self, estimate_bps: u32) -> (u32, u32) {
        let (audio_bps, audio_total) = if self.limits.audio {
            let bps = (estimate_bps / 10).clamp(AUDIO_BPS_MIN, AUDIO_BPS_MAX);
            (bps, bps + audio_overhead_bps(audio_frame_ms(estimate_bps)))
        } else {
            (0, 0)
        };
        let video_bps = f64::from(estimate_bps.saturating_sub(audio_total)) * VIDEO_SHARE * 100.0
            / (100.0 + f64::from(self.redundancy_pct));
        let video_kbps = ((video_bps / 1000.0) as u32)
            .clamp(VIDEO_KBPS_FLOOR, self.limits.max_video_kbps.max(VIDEO_KBPS_FLOOR));
        (audio_bps, video_kbps)
    }

    /// What the sending chains are set to before any estimate: full size and rate,
    /// `max-bitrate`, Opus at its default in 20 ms frames.
    pub fn full(&self) -> Adaptation {
        let (_, _, max) = self.estimate_range();
        let (audio_bps, video_kbps) = self.split(max);
        Adaptation {
            estimate_bps: max,
            video_kbps,
            audio_bps,
            audio_frame_ms: 20,
            step: self.steps[0],
            level: 0,
            needed_kbps: self.limits.min_video_kbps,
        }
    }

    /// The adaptation for a new estimate at `now`: down the ladder at once (to the first step
    /// the video's share fits, [`Controller::fit_kbps`]), up one step once the share has had
    /// [`UPGRADE_MARGIN`] over that step's fit for [`UPGRADE_HOLD`].
    pub fn update(&mut self, estimate_bps: u32, now: Instant) -> Adaptation {
        self.last_estimate_bps = estimate_bps;
        let estimate_bps = self.queue_cap_bps.map_or(estimate_bps, |cap| estimate_bps.min(cap));
        let (audio_bps, video_kbps) = self.split(estimate_bps);
        let fits = (0..self.steps.len())
            .find(|&l| self.fit_kbps(l) <= f64::from(video_kbps))
            .unwrap_or(self.steps.len() - 1);
        let probe_passed = std::mem::take(&mut self.probe_passed);
        if fits > self.level {
            self.level = fits;
            self.better_since = None;
        } else if probe_passed && fits < self.level {
            // What the hold waits for, a probe showed: the path carries the estimate now.
            self.level = fits;
            self.better_since = Some(now);
        } else if self.level > 0
            && f64::from(video_kbps) >= self.fit_kbps(self.level - 1) * UPGRADE_MARGIN
        {
            let since = *self.better_since.get_or_insert(now);
            if now.duration_since(since) >= UPGRADE_HOLD {
                self.level -= 1;
                // The next step up waits a hold of its own.
                self.better_since = Some(now);
            }
        } else {
            self.better_since = None;
        }
        Adaptation {
            estimate_bps,
            video_kbps,
            audio_bps,
            audio_frame_ms: audio_frame_ms(estimate_bps),
            step: self.steps[self.level],
            level: self.level,
            needed_kbps: self.limits.min_video_kbps,
        }
    }
}

impl Controller {
    /// A round trip measured (the stats', every 2 s): one [`STANDING_QUEUE_MS`] over the
    /// lowest of the call caps the estimate at [`STANDING_QUEUE_CUT`] of what it is (of the
    /// cap, when there is one already), so that the queue drains; a normal one lifts the cap
    /// by [`STANDING_QUEUE_LIFT`] until the estimate is under it. Whether the cap changed.
    ///
    /// Not while transport-wide feedback measures the queue ([`Controller::note_feedback`],
    /// fresher and more precise): only its lift, then, follows the stats.
    pub fn note_round_trip(&mut self, rtt_ms: u32) -> bool {
        if rtt_ms == 0 {
            return false;
        }
        if self.feedback_at.is_some() {
            return false;
        }
        // The first measurement may already carry the queue (a call that starts on a full
        // link): against it, a path's round trip is taken to be at most FIRST_RTT_MS.
        let min = self.min_rtt_ms.unwrap_or(rtt_ms.min(FIRST_RTT_MS));
        self.min_rtt_ms = Some(self.min_rtt_ms.unwrap_or(rtt_ms).min(rtt_ms));
        let (lowest, _, _) = self.estimate_range();
        let before = self.queue_cap_bps;
        if rtt_ms > min.saturating_add(STANDING_QUEUE_MS) {
            let from = self.capped_estimate();
            self.queue_cap_bps = Some(((f64::from(from) * STANDING_QUEUE_CUT) as u32).max(lowest));
        } else if let Some(cap) = self.queue_cap_bps {
            let lifted = (f64::from(cap) * STANDING_QUEUE_LIFT) as u32;
            self.queue_cap_bps = (lifted < self.last_estimate_bps).then_some(lifted);
        }
        before != self.queue_cap_bps
    }

    /// The estimate to send at when the peer gives no transport-wide feedback (a peer that
    /// does not do TWCC, e.g. `congestion-control=disabled`): rtpgccbwe then has nothing to
    /// move its estimate from, and stayed at its start for the whole call (300 kbit/s, the
    /// video at 221, on any link). See [`Controller::grow_without_feedback`].
    pub fn estimate_without_feedback(&self) -> u32 {
        self.no_feedback_bps.unwrap_or(self.estimate_range().1)
    }

    /// Each stats period without feedback, after [`Controller::note_round_trip`]: the
    /// estimate starts where rtpgccbwe starts and grows by [`STANDING_QUEUE_LIFT`] up to the
    /// ceiling while the round trip shows no standing queue (at most 8 s from the start to a
    /// 480p call's full rate); a standing queue's cut brings it down to the cap, and it grows
    /// from there. What it is now, bit/s.
    pub fn grow_without_feedback(&mut self) -> u32 {
        let (_, start, max) = self.estimate_range();
        let next = match (self.no_feedback_bps, self.queue_cap_bps) {
            (None, _) => start,
            (Some(bps), Some(cap)) if cap < bps => cap,
            (Some(bps), _) => ((f64::from(bps) * STANDING_QUEUE_LIFT) as u32).min(max),
        };
        self.no_feedback_bps = Some(next);
        next
    }

    /// What a transport-wide feedback report says about the bottleneck's queue (see
    /// [`QueueMonitor`]) at `now`: a standing one ([`QUEUE_DELAY_MS`], for [`QUEUE_PERSIST`])
    /// cuts the estimate's cap to [`ACKED_SHARE`] of what the path delivered or of the
    /// estimate (of the cap, when there is one), whichever is less ([`QUEUE_CUT`] of the
    /// latter when the report says nothing of what was delivered), again every
    /// [`QUEUE_CUT_INTERVAL`] while it stands; a drained one ([`QUEUE_DRAINED_MS`]) lifts
    /// the cap by [`STANDING_QUEUE_LIFT`] every [`QUEUE_LIFT_INTERVAL`] until the estimate is
    /// under it. Whether the cap changed.
    pub fn note_feedback(&mut self, queue: &QueueReading, now: Instant) -> bool {
        self.feedback_at = Some(now);
        self.last_queue_ms = queue.queue_ms;
        self.silent = false;
        self.troubled = queue.troubled;
        self.reports = self.reports.saturating_add(1);
        let (lowest, _, _) = self.estimate_range();
        let before = self.queue_cap_bps;
        let since = |t: Option<Instant>| t.map_or(Duration::MAX, |t| now.duration_since(t));
        if queue.queue_ms < QUEUE_DELAY_MS {
            self.queue_since = None;
            // The queue the last cut was made at is gone: a queue that stands again is a
            // new one, not that one draining.
            self.queue_cut_reference = None;
        }
        let growing = if queue.troubled {
            let (since_t, since_q) = *self.troubled_since.get_or_insert((now, queue.queue_ms));
            now.duration_since(since_t) >= QUEUE_GROWTH_SPAN
                && queue.queue_ms >= since_q.saturating_add(QUEUE_GROWTH_MS)
        } else {
            self.troubled_since = None;
            false
        };
        let from = self.capped_estimate();
        if since(self.probe_failed_at) < PROBE_FAILED_GRACE && !queue.lossy {
            return false;
        }
        // A queue still growing while the path delivers less than we send (what it
        // delivered): the link is overrun now, and waiting for it to stand at
        // QUEUE_DELAY_MS let it fill to the bottleneck's limit (tail drop) before the cut
        // took effect.
        let overrun = queue.acked_bps.filter(|&acked| {
            growing
                && f64::from(acked) < f64::from(from) * ACKED_SHARE
                && since(self.queue_cut_at) >= QUEUE_CUT_INTERVAL
        });
        if let Some(acked) = overrun.filter(|_| queue.queue_ms < QUEUE_DELAY_MS) {
            let cap = f64::from(acked) * ACKED_SHARE;
            self.queue_cap_bps = Some((cap as u32).max(lowest));
            self.queue_cut_at = Some(now);
            self.queue_lift_at = Some(now);
            self.queue_cut_reference = Some((now, queue.queue_ms));
            self.troubled_since = Some((now, queue.queue_ms));
        } else if queue.queue_ms >= QUEUE_DELAY_MS {
            let standing = *self.queue_since.get_or_insert(now);
            let episode = since(self.queue_cut_at) < CONGESTION_EPISODE;
            if since(self.queue_cut_at) < QUEUE_CUT_INTERVAL
                || (!episode && !queue.lossy && now.duration_since(standing) < QUEUE_PERSIST)
            {
                return false;
            }
            // Within an episode, a cut made before shows only a round trip through its queue
            // later; after that, a queue going down needs no other.
            if episode && let Some((at, queue_ms)) = self.queue_cut_reference {
                let round_trip = Duration::from_millis(u64::from(QUEUE_ROUND_TRIPS * queue_ms))
                    + FEEDBACK_INTERVAL;
                if now.duration_since(at) < round_trip.max(QUEUE_CUT_INTERVAL) {
                    return false;
                }
                if queue.queue_ms + QUEUE_DRAINING_MS <= queue_ms {
                    self.queue_cut_reference = Some((now, queue.queue_ms));
                    return false;
                }
            }
            // What the path delivered says where the bottleneck is (a queue that still
            // stands after a cut takes another share off); without it, half.
            let cap = match queue.acked_bps {
                Some(acked) => f64::from(acked.min(from)) * ACKED_SHARE,
                None => f64::from(from) * QUEUE_CUT,
            };
            self.queue_cap_bps = Some((cap as u32).max(lowest));
            self.queue_cut_at = Some(now);
            self.queue_lift_at = Some(now);
            self.queue_cut_reference = Some((now, queue.queue_ms));
        } else if queue.queue_ms < QUEUE_DRAINED_MS
            && let Some(cap) = self.queue_cap_bps
            && since(self.queue_lift_at) >= QUEUE_LIFT_INTERVAL
        {
            let lifted = (f64::from(cap) * STANDING_QUEUE_LIFT) as u32;
            self.queue_cap_bps = (lifted < self.last_estimate_bps).then_some(lifted);
            self.queue_lift_at = Some(now);
        }
        before != self.queue_cap_bps
    }

    /// We are sending at `now`: feedback silent for [`FEEDBACK_SILENCE`] (after
    /// [`FEEDBACK_REPORTS_ARMED`] reports came, the last one troubled or in a congestion
    /// episode, and not for [`FEEDBACK_FRESH`] yet) cuts the cap to [`QUEUE_CUT`], at most once per
    /// silence. Whether the cap changed.
    pub fn note_sending(&mut self, now: Instant) -> bool {
        let paused = self.sent_at.is_none_or(|t| now.duration_since(t) >= SENDING_PAUSE);
        self.sent_at = Some(now);
        if paused {
            self.sending_since = Some(now);
        }
        let Some(heard) = self.feedback_at else { return false };
        // A silence after a clean report is a peer (or this machine) that did not run for a
        // moment; after a troubled one, or within a congestion episode, it is congestion.
        let episode = self.queue_cut_at.is_some_and(|t| now.duration_since(t) < CONGESTION_EPISODE);
        if self.reports < FEEDBACK_REPORTS_ARMED || !(self.troubled || episode) {
            return false;
        }
        let from = self.sending_since.map_or(heard, |s| s.max(heard));
        let silent = now.duration_since(from);
        if silent < FEEDBACK_SILENCE || silent >= FEEDBACK_FRESH {
            return false;
        }
        if self.queue_cut_at.is_some_and(|t| now.duration_since(t) < FEEDBACK_SILENCE) {
            return false;
        }
        self.silent = true;
        let (lowest, _, _) = self.estimate_range();
        let before = self.queue_cap_bps;
        let from = self.capped_estimate();
        self.queue_cap_bps = Some(((f64::from(from) * QUEUE_CUT) as u32).max(lowest));
        self.queue_cut_at = Some(now);
        self.queue_lift_at = Some(now);
        self.queue_cut_reference = Some((now, self.last_queue_ms));
        before != self.queue_cap_bps
    }

    /// Whether the bottleneck is congested at `now`: the feedback reports have seen a queue
    /// of [`QUEUE_DELAY_MS`] standing for [`QUEUE_PERSIST`] (or one that cut the estimate
    /// lately), or they fell silent ([`FEEDBACK_SILENCE`]) since.
    ///
    /// Retransmissions wait then: into a full queue they add to what is lost, and with the
    /// queue's round trip (600 ms on a 250 kbit/s cap) they come after the receiver gave the
    /// frame up (it waits at most [`crate::recovery::MAX_RETRANSMISSION_WAIT_MS`]); a key frame
    /// repairs the picture. libwebrtc caps retransmissions at the target rate for the same
    /// reason.
    pub fn congested(&self, now: Instant) -> bool {
        let Some(heard) = self.feedback_at else { return false };
        // A queue in one report may be a receiver (or this machine) that did not run for a
        // moment, as on a loaded host: holding retransmissions then turned random loss into
        // frozen frames. It counts once it has stood for QUEUE_PERSIST or cut the estimate.
        let standing = self.last_queue_ms >= QUEUE_DELAY_MS
            && (self.queue_since.is_some_and(|t| now.duration_since(t) >= QUEUE_PERSIST)
                || self.queue_cut_at.is_some_and(|t| now.duration_since(t) < CONGESTION_EPISODE));
        standing || (self.silent && now.duration_since(heard) < FEEDBACK_FRESH)
    }

    /// Whether transport-wide feedback measured the queue lately ([`FEEDBACK_FRESH`]); the
    /// stats' round trip guards it otherwise.
    pub fn feedback_is_fresh(&self, now: Instant) -> bool {
        self.feedback_at.is_some_and(|t| now.duration_since(t) < FEEDBACK_FRESH)
    }

    /// The feedback stopped (a peer that no longer sends it): the stats' round trip guards
    /// the queue again.
    pub fn forget_feedback(&mut self) {
        self.feedback_at = None;
    }

    /// A probe failed at `now` ([`crate::probe`]): the queue its padding left is no
    /// congestion of the media's ([`PROBE_FAILED_GRACE`]).
    pub fn note_probe_failed(&mut self, now: Instant) {
        self.probe_failed_at = Some(now);
    }

    /// The ceiling a standing queue put on the estimate, bit/s.
    pub fn queue_cap(&self) -> Option<u32> {
        self.queue_cap_bps
    }

    /// A probe showed that the path carries `rate_bps` ([`crate::probe`]): a cap under it
    /// goes, and the size may go up at once.
    /// The next [`Controller::update`] goes straight to the step the estimate fits.
    pub fn note_probe_passed(&mut self, rate_bps: u32) {
        if self.queue_cap_bps.is_some_and(|cap| cap < rate_bps) {
            self.queue_cap_bps = None;
        }
        self.probe_passed = true;
    }

    /// The last estimate under the standing queue's cap, bit/s: what a cut cuts from.
    pub fn capped_estimate(&self) -> u32 {
        self.queue_cap_bps.map_or(self.last_estimate_bps, |c| c.min(self.last_estimate_bps))
    }

    /// The last estimate given to [`Controller::update`], bit/s.
    pub fn last_estimate(&self) -> u32 {
        self.last_estimate_bps
    }
}

/// What one transport-wide feedback report says about the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueReading {
    /// The least one-way queueing delay of the report's packets, ms: their transit time over
    /// the least transit time of the call (the two clocks' offset cancels out).
    pub queue_ms: u32,
    /// What the path delivered to the peer over the last [`ACKED_WINDOW`], bit/s (`None`
    /// until the feedback covers half of it).
    pub acked_bps: Option<u32>,
    /// Whether the report says the path is in trouble: a queue of [`QUEUE_DRAINED_MS`] or
    /// more, or [`LOSSY_REPORT`] of its packets lost.
    pub troubled: bool,
    /// Whether [`LOSSY_REPORT`] of its packets were lost.
    pub lossy: bool,
}

/// One packet of a transport-wide feedback report (rtpsession's `RTPTWCCPackets` event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedbackPacket {
    /// When we sent it, ns (our clock).
    pub sent_ns: u64,
    /// When the peer got it, ns (its clock), `None` when it was lost.
    pub arrived_ns: Option<u64>,
    /// Its size, bytes.
    pub size: u32,
    /// Its payload type (a probe's padding is told by its retransmission payload type).
    pub pt: u8,
}

/// Measures the bottleneck's queue and what the path delivers from transport-wide feedback,
/// report by report.
#[derive(Debug, Default, Clone)]
pub struct QueueMonitor {
    /// The least transit time of the call (arrival in the peer's clock less departure in
    /// ours), ns.
    base_transit_ns: Option<i128>,
    /// The packets that arrived over the last [`ACKED_WINDOW`]: (arrival, size).
    delivered: VecDeque<(u64, u32)>,
}

impl QueueMonitor {
    /// A report: its reading, or `None` when none of its packets arrived.
    pub fn update(&mut self, packets: &[FeedbackPacket]) -> Option<QueueReading> {
        let mut least: Option<i128> = None;
        for p in packets {
            let Some(arrived) = p.arrived_ns else { continue };
            let transit = i128::from(arrived) - i128::from(p.sent_ns);
            least = Some(least.map_or(transit, |l| l.min(transit)));
            if self.delivered.back().is_none_or(|&(last, _)| arrived >= last) {
                self.delivered.push_back((arrived, p.size));
            }
        }
        let least = least?;
        let lost = packets.iter().filter(|p| p.arrived_ns.is_none()).count();
        let base = *self.base_transit_ns.get_or_insert(least);
        let base = base.min(least);
        self.base_transit_ns = Some(base);
        let newest = self.delivered.back().map_or(0, |&(t, _)| t);
        let window = ACKED_WINDOW.as_nanos() as u64;
        while self.delivered.front().is_some_and(|&(t, _)| newest.saturating_sub(t) > window) {
            self.delivered.pop_front();
        }
        let oldest = self.delivered.front().map_or(newest, |&(t, _)| t);
        let span = newest.saturating_sub(oldest);
        let acked_bps = (span >= window / 2).then(|| {
            let bits: u64 = self.delivered.iter().skip(1).map(|&(_, s)| u64::from(s) * 8).sum();
            (bits as f64 / (span as f64 / 1e9)) as u32
        });
        let queue_ms = ((least - base) / 1_000_000).clamp(0, i128::from(u32::MAX)) as u32;
        let lossy = lost as f64 >= LOSSY_REPORT * packets.len() as f64;
        let troubled = queue_ms >= QUEUE_DRAINED_MS || lossy;
        Some(QueueReading { queue_ms, acked_bps, troubled, lossy })
    }
}

/// The Opus frame duration for an estimate, ms (see [`AUDIO_FRAME_THRESHOLDS_BPS`]).
pub fn audio_frame_ms(estimate_bps: u32) -> u32 {
    let (twenty, forty) = AUDIO_FRAME_THRESHOLDS_BPS;
    match estimate_bps {
        e if e >= twenty => 20,
        e if e >= forty => 40,
        _ => 60,
    }
}

/// What the headers of Opus packets of `frame_ms` cost, bit/s.
pub fn audio_overhead_bps(frame_ms: u32) -> u32 {
    1000 / frame_ms.max(1) * PACKET_OVERHEAD_BYTES * 8
}

/// The steps for a call's settings, full quality first, in the order of its
/// `degradation-preference`.
///
/// `maintain-framerate` (the default; Chrome's for a camera, libwebrtc's `MAINTAIN_FRAMERATE`,
/// what a browser call does unless the page asks otherwise): the size goes down at the full
/// rate, to three quarters, a half, three eighths
/// and a quarter of the dimension (none under 120 lines); only at the smallest size does the
/// rate go down, to two thirds (at least [`REDUCED_FPS_FLOOR`]). A picture that moves is what
/// a user watches on a slow link: 480p at 15 fps becomes 360p, 240p, 180p and 120p at 15, then
/// 120p at 10. (An earlier ladder in libwebrtc's "balanced" order, 360p at 10 then 240p at 10,
/// never gave more than 10 fps on a 250 kbit/s link, so any freeze on the way down put the
/// call under it.)
///
/// `balanced` (the order "frame rate, then resolution"): the rate goes to two thirds (at least
/// [`REDUCED_FPS_FLOOR`]) at the full size, then the size goes down at that rate: 480p at 15
/// becomes 480p at 10, then 360p, 240p, 180p and 120p at 10.
///
/// No `maintain-resolution` (the size never goes down): measured on a 250 kbit/s link shared by
/// both directions, 640x480 at 3 fps and 20 kbit/s decoded no frame in 14 s. Every key frame
/// at that size (the answer to each request) was several times the frame's share, there is
/// no pacer to spread it, so it overflowed the bottleneck's queue, was lost, and its loss
/// asked for the next one.
pub fn ladder(limits: &SendLimits) -> Vec<Step> {
    let (w, h, fps) = (limits.width.max(2), limits.height.max(2), limits.max_fps.max(1));
    let full = Step { width: w, height: h, fps };
    let reduced =
        if fps > REDUCED_FPS_FLOOR { (fps * 2).div_ceil(3).max(REDUCED_FPS_FLOOR) } else { fps };
    let sizes_at = |fps: u32| {
        [(3, 4), (1, 2), (3, 8), (1, 4)].into_iter().filter_map(move |(num, den)| {
            let (sw, sh) = (even(w * num / den), even(h * num / den));
            (sh >= 120).then_some(Step { width: sw, height: sh, fps })
        })
    };
    let mut steps = vec![full];
    match limits.preference {
        DegradationPreference::MaintainFramerate => {
            steps.extend(sizes_at(fps));
            if reduced < fps {
                let smallest = steps[steps.len() - 1];
                steps.push(Step { fps: reduced, ..smallest });
            }
        }
        DegradationPreference::Balanced => {
            if reduced < fps {
                steps.push(Step { fps: reduced, ..full });
            }
            steps.extend(sizes_at(reduced));
        }
    }
    steps
}

fn even(v: u32) -> u32 {
    (v & !1).max(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits_480p() -> SendLimits {
        SendLimits {
            width: 640,
            height: 480,
            max_fps: 15,
            min_video_kbps: 200,
            max_video_kbps: 500,
            audio: true,
            preference: DegradationPreference::MaintainFramerate,
        }
    }

    fn steps_of(limits: &SendLimits) -> Vec<(u32, u32, u32)> {
        ladder(limits).iter().map(|s| (s.width, s.height, s.fps)).collect()
    }

    #[test]
    fn without_feedback_the_estimate_grows_to_the_ceiling_and_a_standing_queue_cuts_it() {
        let mut c = Controller::new(limits_480p());
        let (_, start, max) = c.estimate_range();
        assert_eq!(c.estimate_without_feedback(), start);
        // A clean round trip every stats period: from the start to the ceiling in 4 periods.
        let mut seen = Vec::new();
        for _ in 0..6 {
            assert!(!c.note_round_trip(1));
            seen.push(c.grow_without_feedback());
        }
        assert_eq!(seen[0], start);
        assert_eq!(seen[1], (f64::from(start) * STANDING_QUEUE_LIFT) as u32);
        assert_eq!(seen[4..], [max, max], "{seen:?}");
        assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
        assert_eq!(c.estimate_without_feedback(), max);
        let a = c.update(c.estimate_without_feedback(), Instant::now());
        assert_eq!(a.video_kbps, 500, "{a:?}");
        // A standing queue (a 250 kbit/s link's 300 ms): cut, and the estimate with it.
        assert!(c.note_round_trip(301));
        let cut = c.grow_without_feedback();
        assert_eq!(cut, (f64::from(max) * STANDING_QUEUE_CUT) as u32);
        let a = c.update(cut, Instant::now());
        assert!(a.estimate_bps <= cut, "{a:?}");
        // Still standing: cut again. Then drained: it grows again, with the cap lifting.
        assert!(c.note_round_trip(320));
        let again = c.grow_without_feedback();
        assert!(again < cut, "{again} after {cut}");
        c.update(again, Instant::now());
        assert!(c.note_round_trip(2));
        let grown = c.grow_without_feedback();
        assert!(grown > again, "{grown} after {again}");
    }

    #[test]
    fn balanced_lowers_the_frame_rate_then_the_size() {
        let balanced = SendLimits { preference: DegradationPreference::Balanced, ..limits_480p() };
        assert_eq!(
            steps_of(&balanced),
            [
                (640, 480, 15),
                (640, 480, 10),
                (480, 360, 10),
                (320, 240, 10),
                (240, 180, 10),
                (160, 120, 10)
            ]
        );
        // At 10 fps or under there is no rate to give: the sizes only.
        let ten = SendLimits { max_fps: 10, ..balanced };
        assert_eq!(steps_of(&ten)[1], (480, 360, 10));
        // The video's share of a 250 kbit/s link shared by both directions (about 80 kbit/s)
        // is 320x240 at 10 fps (where maintain-framerate sends 240x180 at 15); with
        // min-bitrate 500, 456 kbit/s of video keeps 640x480, at 10 fps.
        let mut c = Controller::new(balanced);
        let a = c.update(110_000, Instant::now());
        assert_eq!((a.step.width, a.step.fps), (320, 10), "{a:?}");
        let mut c = Controller::new(SendLimits {
            preference: DegradationPreference::Balanced,
            min_video_kbps: 500,
            ..limits_480p()
        });
        let a = c.update(590_000, Instant::now());
        assert_eq!((a.video_kbps, a.step.width, a.step.fps), (456, 640, 10), "{a:?}");
    }

    #[test]
    fn the_ladder_keeps_the_frame_rate_until_the_smallest_size() {
        let steps: Vec<(u32, u32, u32)> =
            ladder(&limits_480p()).iter().map(|s| (s.width, s.height, s.fps)).collect();
        assert_eq!(
            steps,
            [
                (640, 480, 15),
                (480, 360, 15),
                (320, 240, 15),
                (240, 180, 15),
                (160, 120, 15),
                (160, 120, 10)
            ]
        );
        // 120p at 10 fps has nowhere to go.
        let small = SendLimits { width: 160, height: 120, max_fps: 10, ..limits_480p() };
        assert_eq!(ladder(&small).len(), 1);
        // 720p at 30 fps: down to 320x180 at 30, then 20 fps.
        let hd = SendLimits { width: 1280, height: 720, max_fps: 30, ..limits_480p() };
        let steps: Vec<(u32, u32, u32)> =
            ladder(&hd).iter().map(|s| (s.width, s.height, s.fps)).collect();
        assert_eq!(
            steps,
            [
                (1280, 720, 30),
                (960, 540, 30),
                (640, 360, 30),
                (480, 270, 30),
                (320, 180, 30),
                (320, 180, 20)
            ]
        );
        // The frame rate goes down only at the smallest size, never under 10.
        for limits in [limits_480p(), hd] {
            let steps = ladder(&limits);
            let last = steps[steps.len() - 1];
            assert!(steps.iter().all(|s| s.fps >= REDUCED_FPS_FLOOR), "{steps:?}");
            assert!(steps[..steps.len() - 1].iter().all(|s| s.fps == limits.max_fps), "{steps:?}");
            assert!(steps.iter().all(|s| s.height >= last.height), "{steps:?}");
        }
    }

    #[test]
    fn the_encoder_leaves_room_for_the_fec_redundancy() {
        let mut c = Controller::new(limits_480p());
        let (_, without) = c.split(400_000);
        c.set_redundancy(50);
        let (_, with) = c.split(400_000);
        assert_eq!(with, without * 2 / 3, "{with} of {without}");
        c.set_redundancy(0);
        assert_eq!(c.split(400_000).1, without);
    }

    #[test]
    fn a_clean_link_sends_what_it_always_did() {
        let mut c = Controller::new(limits_480p());
        let (min, start, max) = c.estimate_range();
        assert_eq!(start, ESTIMATE_BPS_START);
        assert!(min < 100_000);
        // Already the full size and rate at the start...
        let a = c.update(start, Instant::now());
        assert_eq!(a.level, 0, "{a:?}");
        // ...and the full bitrate once the estimate has grown to the ceiling.
        let a = c.update(max, Instant::now());
        assert_eq!(a.video_kbps, 500);
        assert_eq!(a.audio_bps, AUDIO_BPS_MAX);
        assert_eq!(a.audio_frame_ms, 20);
        assert_eq!(a.level, 0);
        assert!(!a.constrained());
    }

    #[test]
    fn a_probe_that_passed_takes_the_size_up_at_once_where_the_hold_takes_a_step_at_a_time() {
        let t0 = Instant::now();
        let (_, _, max) = Controller::new(limits_480p()).estimate_range();
        for probed in [false, true] {
            let mut c = Controller::new(limits_480p());
            // 120p at 15 fps.
            assert_eq!(c.update(ESTIMATE_BPS_MIN, t0).level, 4);
            if probed {
                c.note_probe_passed(max);
            }
            let a = c.update(max, t0 + Duration::from_millis(100));
            if probed {
                assert_eq!(a.level, 0, "{a:?}");
            } else {
                // One step per hold.
                assert_eq!(a.level, 4, "{a:?}");
                let a = c.update(max, t0 + Duration::from_millis(100) + UPGRADE_HOLD);
                assert_eq!(a.level, 3, "{a:?}");
            }
        }
    }

    #[test]
    fn a_250_kbit_link_shared_by_both_directions_keeps_15_fps_at_a_smaller_size() {
        // About 110 kbit/s for each direction.
        let mut c = Controller::new(limits_480p());
        let a = c.update(110_000, Instant::now());
        assert_eq!(a.audio_bps, AUDIO_BPS_MIN);
        // 60 ms Opus packets: 8 kbit/s of headers instead of 24.
        assert_eq!(a.audio_frame_ms, 60);
        assert!((78..=82).contains(&a.video_kbps), "{a:?}");
        assert_eq!((a.step.width, a.step.height, a.step.fps), (240, 180, 15));
        assert!(a.constrained());
        // Under the floor the estimate wins over min-bitrate: the smallest step.
        let a = c.update(45_000, Instant::now());
        assert!(a.video_kbps <= 25, "{a:?}");
        assert_eq!((a.step.width, a.step.height), (160, 120));
    }

    #[test]
    fn the_frame_rate_goes_only_under_three_quarters_of_the_smallest_sizes_need() {
        // min-bitrate 200 at 480p: 120p at 15 fps needs 25 kbit/s, held down to 18.75; the
        // video's floor is 20, so the frame rate stays.
        let mut c = Controller::new(limits_480p());
        let a = c.update(ESTIMATE_BPS_MIN, Instant::now());
        assert_eq!((a.video_kbps, a.step.width, a.step.fps), (20, 160, 15));
        // min-bitrate 500: 120p at 15 fps needs 62 kbit/s, held down to 47; 36 kbit/s of
        // video (an estimate of 60 kbit/s) is 10 fps, and a little more does not bring 15
        // back at once.
        let mut c = Controller::new(SendLimits { min_video_kbps: 500, ..limits_480p() });
        let a = c.update(60_000, Instant::now());
        assert_eq!((a.step.width, a.step.fps), (160, 10), "{a:?}");
        let a = c.update(80_000, Instant::now());
        assert_eq!((a.step.width, a.step.fps), (160, 10), "{a:?}");
    }

    #[test]
    fn it_steps_back_up_one_step_at_a_time_after_a_hold() {
        let mut c = Controller::new(limits_480p());
        // The lowest estimate keeps the smallest size at 15 fps (LAST_FULL_RATE_FIT).
        let last = c.steps().len() - 2;
        let t0 = Instant::now();
        assert_eq!(c.update(40_000, t0).level, last);
        assert_eq!(c.steps()[last].fps, 15);
        // Capacity is back: not at once...
        assert_eq!(c.update(700_000, t0 + Duration::from_millis(100)).level, last);
        assert_eq!(c.update(700_000, t0 + Duration::from_secs(2)).level, last);
        // ...one step per hold.
        let t = t0 + Duration::from_millis(100) + UPGRADE_HOLD;
        for (n, level) in (0..last).rev().enumerate() {
            assert_eq!(c.update(700_000, t + UPGRADE_HOLD * n as u32).level, level);
        }
        // A dip on the way resets the hold; a drop goes down at once.
        let mut c = Controller::new(limits_480p());
        assert_eq!(c.update(150_000, t0).level, 2);
        assert_eq!(c.update(700_000, t0 + Duration::from_secs(1)).level, 2);
        assert_eq!(c.update(170_000, t0 + Duration::from_secs(2)).level, 2);
        assert_eq!(c.update(700_000, t0 + Duration::from_secs(3)).level, 2);
        assert_eq!(c.update(700_000, t0 + Duration::from_secs(5)).level, 2);
        assert_eq!(c.update(700_000, t0 + Duration::from_secs(6)).level, 1);
        assert_eq!(c.update(50_000, t0 + Duration::from_secs(7)).level, last);
    }

    #[test]
    fn a_lowered_step_keeps_a_margin() {
        let mut c = Controller::new(limits_480p());
        let t = Instant::now();
        // 180 kbit/s of video: under min-bitrate, enough for 360p at 15 fps with margin.
        assert_eq!(c.split(236_000).1, 180);
        let a = c.update(236_000, t);
        assert_eq!((a.step.width, a.step.height, a.step.fps), (480, 360, 15));
        // 151: 360p at 15 fps would need 130, too close: 240p at 15.
        let mut c = Controller::new(limits_480p());
        assert_eq!(c.split(200_000).1, 151);
        let a = c.update(200_000, t);
        assert_eq!((a.step.width, a.step.height, a.step.fps), (320, 240, 15));
    }

    #[test]
    fn the_need_of_each_step() {
        let c = Controller::new(limits_480p());
        assert_eq!(c.needed_kbps(0), 200);
        // 56 % of the pixels: 65 % of the bits.
        assert_eq!(c.needed_kbps(1), 130);
        // A quarter of the pixels: about a third of the bits.
        assert_eq!(c.needed_kbps(2), 71);
        assert_eq!(c.needed_kbps(3), 46);
        assert_eq!(c.needed_kbps(4), 25);
        // Two thirds of the rate: two thirds of the bits.
        assert_eq!(c.needed_kbps(5), 17);
    }

    #[test]
    fn a_standing_queue_caps_the_estimate_until_it_drains() {
        let mut c = Controller::new(limits_480p());
        let t = Instant::now();
        c.update(200_000, t);
        // A first measurement with a queue in it is cut at once...
        let mut first = Controller::new(limits_480p());
        first.update(200_000, t);
        assert!(first.note_round_trip(338));
        assert_eq!(first.update(200_000, t).estimate_bps, 140_000);
        // ...but a long path is known from then on: the cap lifts.
        let mut long = Controller::new(limits_480p());
        long.update(200_000, t);
        assert!(long.note_round_trip(600));
        assert!(long.note_round_trip(610));
        assert_eq!(long.update(200_000, t).estimate_bps, 175_000);
        // A clean path: no cap.
        assert!(!c.note_round_trip(2));
        assert!(!c.note_round_trip(40));
        assert_eq!(c.update(200_000, t).estimate_bps, 200_000);
        // The queue holds 600 ms: 70 %, then 70 % of that, whatever the estimator says.
        assert!(c.note_round_trip(640));
        assert_eq!(c.update(220_000, t).estimate_bps, 140_000);
        assert!(c.note_round_trip(600));
        assert_eq!(c.update(220_000, t).estimate_bps, 98_000);
        // Drained: the cap lifts a quarter per period, and goes once over the estimate.
        assert!(c.note_round_trip(5));
        assert_eq!(c.update(220_000, t).estimate_bps, 122_500);
        c.note_round_trip(5);
        c.note_round_trip(5);
        assert!(c.note_round_trip(5));
        assert_eq!(c.update(220_000, t).estimate_bps, 220_000);
    }

    fn packet(sent_ms: u64, arrived_ms: Option<u64>) -> FeedbackPacket {
        // The peer's clock is 5 s ahead of ours: only differences count.
        let ms = 1_000_000;
        FeedbackPacket {
            sent_ns: sent_ms * ms,
            arrived_ns: arrived_ms.map(|a| (a + 5000) * ms),
            size: 1000,
            pt: 96,
        }
    }

    #[test]
    fn feedback_measures_the_queue_and_what_the_path_delivers() {
        let mut m = QueueMonitor::default();
        // Nothing arrived: no reading.
        assert_eq!(m.update(&[packet(0, None)]), None);
        // 2 ms of transit: the base. 1000 bytes every 20 ms is 400 kbit/s.
        let clean: Vec<_> = (0..30).map(|i| packet(i * 20, Some(i * 20 + 2))).collect();
        let r = m.update(&clean).unwrap();
        assert_eq!(r.queue_ms, 0);
        assert!(!r.troubled);
        assert!((390_000..=410_000).contains(&r.acked_bps.unwrap()), "{r:?}");
        // A queue of 250 ms in every packet; one that jumped it (a late one) does not hide it.
        let queued: Vec<_> =
            (30..40).map(|i| packet(i * 20, Some(i * 20 + 252 + (i % 3) * 10))).collect();
        let r = m.update(&queued).unwrap();
        assert_eq!(r.queue_ms, 250);
        assert!(r.troubled);
        // A report with a loss in three is troubled, queue or not.
        let r = m.update(&[packet(1000, Some(1002)), packet(1020, None), packet(1040, Some(1042))]);
        assert!(r.unwrap().troubled);
        // A burst queued behind a key frame: the least of the report is what stands.
        let burst = [packet(900, Some(1000)), packet(920, Some(925))];
        assert_eq!(m.update(&burst).unwrap().queue_ms, 3);
    }

    #[test]
    fn feedback_cuts_a_standing_queue_at_once_and_lifts_once_it_drained() {
        let mut c = Controller::new(limits_480p());
        let t = Instant::now();
        c.update(300_000, t);
        let standing = |acked| QueueReading {
            queue_ms: 280,
            acked_bps: Some(acked),
            troubled: true,
            lossy: false,
        };
        let drained =
            QueueReading { queue_ms: 5, acked_bps: Some(100_000), troubled: false, lossy: false };
        let lossy = QueueReading { troubled: true, lossy: true, ..drained };
        // A clean path: nothing.
        assert!(!c.congested(t));
        assert!(!c.note_feedback(&drained, t));
        assert!(!c.congested(t));
        assert_eq!(c.update(300_000, t).estimate_bps, 300_000);
        // The queue stands (a first report could be a receiver that did not run for a
        // moment)...
        assert!(!c.note_feedback(&standing(125_000), t));
        assert!(!c.congested(t));
        // ...and still stands: to 85 % of what the path delivered (under half the estimate)...
        let t = t + QUEUE_PERSIST;
        assert!(c.note_feedback(&standing(125_000), t));
        assert!(c.congested(t));
        assert_eq!(c.update(300_000, t).estimate_bps, 106_250);
        // (A queue that also loses packets is cut at its first report.)
        let mut first = Controller::new(limits_480p());
        first.update(300_000, t);
        assert!(first.note_feedback(&QueueReading { lossy: true, ..standing(125_000) }, t));
        // ...not again before the cut could show...
        assert!(!c.note_feedback(&standing(125_000), t + Duration::from_millis(100)));
        // ...nor before a round trip through the queue it was made at (the reports come
        // from packets sent before the cut until then)...
        assert!(!c.note_feedback(&standing(125_000), t + QUEUE_CUT_INTERVAL));
        let round_trip = Duration::from_millis(2 * 280) + FEEDBACK_INTERVAL;
        assert!(!c.note_feedback(&standing(125_000), t + round_trip - Duration::from_millis(1)));
        // ...then, if it went down since, it drains: the cut was enough...
        let draining = QueueReading { queue_ms: 280 - QUEUE_DRAINING_MS, ..standing(125_000) };
        assert!(!c.note_feedback(&draining, t + round_trip));
        assert!(c.congested(t + round_trip));
        // ...and another share off if it stopped going down (a round trip through it on).
        let t = t + round_trip;
        let again = Duration::from_millis(2 * 265) + FEEDBACK_INTERVAL;
        let stuck = QueueReading { queue_ms: 260, ..standing(125_000) };
        assert!(!c.note_feedback(&stuck, t + again - Duration::from_millis(1)));
        assert!(c.note_feedback(&stuck, t + again));
        assert_eq!(c.update(300_000, t).estimate_bps, 90_312);
        // The stats' round trip, which lags, does not cut while feedback comes.
        assert!(!c.note_round_trip(700));
        // Drained: a quarter up per lift interval, gone once over the estimate.
        let t = t + again;
        assert!(!c.note_feedback(&drained, t + Duration::from_secs(1)));
        assert!(c.note_feedback(&drained, t + QUEUE_LIFT_INTERVAL));
        assert_eq!(c.update(300_000, t).estimate_bps, 112_890);
        // The reports stop (lost in the queue): a cut per silence, none after a short gap.
        let heard = t + QUEUE_LIFT_INTERVAL;
        let ms = Duration::from_millis;
        // (Once they came regularly: not the sparse ones of a call's start.)
        let mut start = Controller::new(limits_480p());
        start.note_feedback(&drained, t);
        assert!(!start.note_sending(t + ms(100)));
        assert!(!start.note_sending(t + ms(300)));
        assert!(!start.note_sending(t + ms(500)));
        assert!(!start.note_sending(t + ms(700)));
        for _ in 0..FEEDBACK_REPORTS_ARMED {
            c.note_feedback(&drained, heard - ms(1));
        }
        // (And after a report of trouble: see below for one after a clean report.)
        c.note_feedback(&lossy, heard);
        for at in (0..500).step_by(20) {
            assert!(!c.note_sending(heard + ms(at)), "{at}");
        }
        assert!(!c.congested(heard + ms(300)));
        assert!(c.note_sending(heard + FEEDBACK_SILENCE));
        assert!(c.congested(heard + FEEDBACK_SILENCE));
        assert_eq!(c.update(300_000, t).estimate_bps, 56_445);
        // A report: no longer silent.
        c.note_feedback(&drained, heard + ms(1100));
        assert!(!c.congested(heard + ms(1100)));
        // Silent after a clean report, out of a congestion episode: a peer (or this machine)
        // that did not run for a moment, nothing.
        let calm = heard + ms(1100) + CONGESTION_EPISODE;
        c.note_feedback(&drained, calm);
        for at in (0..=800).step_by(20) {
            assert!(!c.note_sending(calm + ms(at)), "{at}");
        }
        assert!(!c.congested(calm + ms(800)));
        // A pause in what we send (this process stalled) is no silence of the feedback.
        let calm = calm + ms(800);
        c.note_feedback(&lossy, calm);
        assert!(!c.note_sending(calm + ms(900)));
        assert!(!c.note_sending(calm + ms(1000)));
        assert!(!c.congested(calm + ms(1000)));
        // A peer that stopped sending feedback for good is left to the stats' round trip.
        assert!(!c.note_sending(calm + FEEDBACK_FRESH));
        assert!(c.feedback_is_fresh(t));
        c.forget_feedback();
        assert!(!c.feedback_is_fresh(t));
    }

    #[test]
    fn a_growing_queue_is_cut_before_it_stands() {
        let ms = Duration::from_millis;
        let reading = |queue_ms, acked| QueueReading {
            queue_ms,
            acked_bps: Some(acked),
            troubled: queue_ms >= QUEUE_DRAINED_MS,
            lossy: false,
        };
        let t = Instant::now();
        // The onset of a 500 kbit/s cap shared by both directions, as a benchmark run's
        // reports read it (2026-12-01): the queue grew about 40 ms every 300 ms while the
        // path delivered 160 of the 300 kbit/s sent; it reached 300 ms, and tail drop, 0.5 s
        // after the standing-queue cut.
        let mut c = Controller::new(limits_480p());
        c.update(300_000, t);
        assert!(!c.note_feedback(&reading(33, 160_000), t));
        assert!(!c.note_feedback(&reading(50, 160_000), t + ms(150)));
        assert!(!c.congested(t + ms(150)));
        // Grown by QUEUE_GROWTH_MS over QUEUE_GROWTH_SPAN: cut to 85 % of what the path
        // delivered at 70 ms of queue, before it stands at QUEUE_DELAY_MS.
        assert!(c.note_feedback(&reading(70, 160_000), t + QUEUE_GROWTH_SPAN));
        assert_eq!(c.update(300_000, t).estimate_bps, 136_000);
        // Not again before the cut could show.
        assert!(!c.note_feedback(&reading(90, 120_000), t + QUEUE_GROWTH_SPAN + ms(100)));
        // A small queue that does not grow (a path's standing jitter)...
        let mut steady = Controller::new(limits_480p());
        steady.update(300_000, t);
        for i in 0..10 {
            assert!(!steady.note_feedback(&reading(40, 160_000), t + ms(100 * i)));
        }
        // ...or one that grows while the path delivers what we send (a key frame's burst):
        // nothing.
        let mut burst = Controller::new(limits_480p());
        burst.update(300_000, t);
        assert!(!burst.note_feedback(&reading(35, 290_000), t));
        assert!(!burst.note_feedback(&reading(80, 290_000), t + QUEUE_GROWTH_SPAN));
        assert_eq!(burst.update(300_000, t).estimate_bps, 300_000);
    }

    #[test]
    fn a_queue_that_stands_again_after_draining_is_not_read_as_the_old_one_draining() {
        let ms = Duration::from_millis;
        let reading = |queue_ms| QueueReading {
            queue_ms,
            acked_bps: Some(100_000),
            troubled: queue_ms >= QUEUE_DRAINED_MS,
            lossy: false,
        };
        let t = Instant::now();
        let mut c = Controller::new(limits_480p());
        c.update(300_000, t);
        c.note_feedback(&reading(300), t);
        assert!(c.note_feedback(&reading(300), t + QUEUE_PERSIST));
        // It drains below the standing threshold, then a new queue of 250 ms stands within
        // the episode, a round trip through the old one later: cut at once (within an
        // episode), not taken for the 300 ms queue going down.
        let t = t + QUEUE_PERSIST;
        assert!(!c.note_feedback(&reading(40), t + ms(300)));
        assert!(c.note_feedback(&reading(250), t + ms(700)));
    }

    #[test]
    fn the_queue_a_failed_probe_left_is_not_cut() {
        let ms = Duration::from_millis;
        let reading = |queue_ms, lossy| QueueReading {
            queue_ms,
            acked_bps: Some(60_000),
            troubled: true,
            lossy,
        };
        let t = Instant::now();
        let mut c = Controller::new(limits_480p());
        c.update(100_000, t);
        c.note_probe_failed(t);
        // The padding's queue grows, then stands a while (2026-12-03: 33 ms at the failure,
        // 109 ms 400 ms later): no cut...
        for (i, queue_ms) in [33, 60, 90, 109, 120, 110, 105].into_iter().enumerate() {
            let at = t + ms(100 * i as u64 + 100);
            assert!(!c.note_feedback(&reading(queue_ms, false), at), "{queue_ms} at {i}");
        }
        assert_eq!(c.update(100_000, t).estimate_bps, 100_000);
        // ...unless the reports lose packets (the link is overrun, probe or not)...
        let mut lossy = c.clone();
        assert!(lossy.note_feedback(&reading(120, true), t + ms(800)));
        // ...and a queue that still stands once the grace is over is the media's.
        let after = t + PROBE_FAILED_GRACE;
        assert!(!c.note_feedback(&reading(120, false), after));
        assert!(c.note_feedback(&reading(120, false), after + QUEUE_PERSIST));
        assert_eq!(c.update(100_000, t).estimate_bps, 51_000);
    }

    #[test]
    fn without_audio_the_video_gets_the_estimate() {
        let c = Controller::new(SendLimits { audio: false, ..limits_480p() });
        assert_eq!(c.split(300_000), (0, 270));
        assert_eq!(c.estimate_range().2, 555_556);
    }
}
