//! CPU adaptation of the video encoder (`cpu-adaptation`): Chrome's "CPU overuse" detection
//! (`OveruseFrameDetector`) for one sending chain.
//!
//! Each video encoder's *encode usage* is measured: the wall time from a frame entering its
//! sink pad to its encoded output leaving the src pad, as a share of the time between two
//! frames reaching it, over the last [`Config::window`] of frames. Above
//! [`Config::overuse`] (Chrome's 85 %) the machine (or this encoder) cannot keep up: frames
//! wait, and the chain's leaky queue drops them. The encoder then steps to a faster speed
//! (libvpx `cpu-used`, [`VP8_SPEEDS`]): a softer picture on a machine that sends every frame
//! instead of Chrome's desktop quality on one that loses them. Under [`Config::underuse`]
//! (Chrome's 42 %), for a hold time that doubles when a step back soon overused again, and
//! only when the slower speed is predicted to fit ([`Config::back_below`]), it steps back.
//!
//! The machine's CPU is watched too ([`machine_busy`], all cores, from `/proc/stat`): a
//! process holding many calls (a service endpoint) fills a machine with encoders each of
//! which takes a few milliseconds a frame, and a frame waits for a core long before any one
//! encoder's usage reaches 85 %: the first frames are lost when the machine is full, not when
//! an encoder is. A machine at least [`Config::machine_overuse`] busy for a whole window
//! steps the encoder faster as its own overuse does, and a step back waits for the machine
//! to be under [`Config::machine_underuse`] as well. A machine with cores to spare keeps
//! every encoder at its slowest speed.
//!
//! Measured in wall time, not CPU time, as Chrome does: what matters is whether a frame is
//! done before the next one comes, and on a full machine the wait for a core is part of it.
//! The interval is the time between two frames *reaching the encoder*, not their
//! timestamps: when the encoder falls behind, the next frame is already queued and comes as
//! soon as it is done (usage near 100 %), where the timestamps would show the gaps of the
//! frames the queue dropped, and hide the overuse.
//!
//! x264enc already runs at its fastest preset (`ultrafast`): an H.264 encoder is measured
//! (its usage is in the stats) but has no speed to change. Lowering the frame rate or the
//! size when even the fastest speed overuses is left to the user's `max-fps`/`dimension`
//! (and to congestion control's steps, which the network drives): on a full machine the
//! leaky queue already thins the frame rate by itself.
//!
//! [`SpeedController`] is plain arithmetic over durations, tested without GStreamer;
//! [`watch_encoder`] wires it to an encoder with two pad probes.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use gst::prelude::*;

use gst::glib;

use crate::media::VideoCodec;

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "wilddogcpu",
        gst::DebugColorFlags::empty(),
        Some("Wilddog CPU adaptation of the video encoder"),
    )
});

/// vp8enc's speeds (`cpu-used`), slowest first: Chrome's on desktops (-6, where a call starts
/// with the default `encoder-speed`), then faster. -16 is libvpx's fastest, webrtcsink's
/// fixed speed (480p zone plate at 500 kbit/s: 33.8 dB luma PSNR against -6's 40.9,
/// `call-bench --encoder-quality`).
pub const VP8_SPEEDS: &[i32] = &[-6, -10, -16];
/// vp9enc's speeds: libvpx's VP9 takes -8..8 (-9..9 in later versions) and gets faster in
/// smaller steps.
pub const VP9_SPEEDS: &[i32] = &[-6, -7, -8];

/// The slowest speed a call's video encoder uses (`encoder-speed`): where it starts, and
/// the speed CPU adaptation steps back to at most. What a service endpoint holding many calls
/// on one machine chooses: Chrome's picture quality, or webrtcsink's cost per call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, glib::Enum, Default)]
#[repr(i32)]
#[enum_type(name = "GstWilddogEncoderSpeed")]
pub enum EncoderSpeed {
    /// Chrome's desktop speed (VP8/VP9 `cpu-used` -6): the best picture a real-time call
    /// gets, at the most CPU.
    #[default]
    #[enum_value(name = "Quality: Chrome's desktop speed (VP8/VP9 cpu-used -6)", nick = "quality")]
    Quality = 0,
    /// The middle step (VP8 -10, VP9 -7).
    #[enum_value(name = "Balanced: VP8 cpu-used -10, VP9 -7", nick = "balanced")]
    Balanced = 1,
    /// libvpx's fastest (VP8 -16, VP9 -8), webrtcsink's fixed speed: the least CPU per
    /// call; on moving content a softer picture (480p zone plate at 500 kbit/s: 33.8 dB luma
    /// PSNR against 40.9), on still content the same.
    #[enum_value(
        name = "Fast: libvpx's fastest, webrtcsink's (VP8 cpu-used -16, VP9 -8)",
        nick = "fast"
    )]
    Fast = 2,
}

/// The speeds an encoder of `codec` steps through from `slowest`, slowest first; empty: none
/// to change (x264enc runs `ultrafast` already; openh264enc has no such setting).
pub fn speeds(codec: VideoCodec, slowest: EncoderSpeed) -> &'static [i32] {
    let all = match codec {
        VideoCodec::Vp8 => VP8_SPEEDS,
        VideoCodec::Vp9 => VP9_SPEEDS,
        VideoCodec::H264 => return &[],
    };
    &all[(slowest as usize).min(all.len() - 1)..]
}

/// The controller's thresholds and times.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Encode usage (a share of the frame interval) above which the encoder overuses:
    /// Chrome's 85 %.
    pub overuse: f64,
    /// Encode usage under which it underuses: Chrome's 42 %.
    pub underuse: f64,
    /// The usage is averaged over the frames of this much time, and a decision needs a whole
    /// window measured at the current speed: one slow frame (a key frame) changes nothing.
    pub window: Duration,
    /// And at least this many frames: a source of a few fps (or an encoder taking longer
    /// than the window for each frame) is measured over more time.
    pub min_frames: usize,
    /// How long after a change the encoder waits at least before stepping back to a slower
    /// speed (Chrome's ramp-up delay, 40 s; shorter here, as the prediction below keeps a
    /// step back from overusing at once).
    pub hold: Duration,
    /// The longest that hold grows to: it doubles each time a step back overused again
    /// within [`Config::hold`].
    pub max_hold: Duration,
    /// A step back happens only when the usage at the slower speed, predicted from the cost
    /// ratio of the two speeds measured when the encoder left it, is under this: a machine
    /// that held at the faster speed by a small margin does not go back to overusing.
    pub back_below: f64,
    /// The share of the machine's CPU (all cores, [`machine_busy`]) at or above which, held
    /// for a whole window, the encoder steps faster whatever its own usage: 95 %, a machine
    /// about to lose frames.
    pub machine_overuse: f64,
    /// A step back to a slower speed waits for the machine to be under this share too (80 %):
    /// a step back on a full machine would fill it again.
    pub machine_underuse: f64,
    /// A frame that came this much longer after the one before it was encoded (a paused
    /// source) makes no sample. The time that frame took to encode does not count: an
    /// encoder taking seconds per frame is the worst overuse, not a pause.
    pub max_idle: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            overuse: 0.85,
            underuse: 0.42,
            window: Duration::from_millis(1500),
            min_frames: 5,
            hold: Duration::from_secs(10),
            max_hold: Duration::from_secs(240),
            back_below: 0.75,
            machine_overuse: 0.95,
            machine_underuse: 0.80,
            max_idle: Duration::from_secs(1),
        }
    }
}

/// The direction of the last change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Faster,
    Slower,
}

/// Chooses an encoder's speed from its encode times, sans I/O: fed one sample per encoded
/// frame ([`SpeedController::sample`]), it answers the speed to change to.
#[derive(Debug, Clone)]
pub struct SpeedController {
    config: Config,
    speeds: &'static [i32],
    /// Index into `speeds` of the speed in use.
    level: usize,
    /// (when, encode time, interval) of the frames in the window, oldest first.
    samples: VecDeque<(Instant, Duration, Duration)>,
    encode_sum: Duration,
    interval_sum: Duration,
    /// The first sample at the current speed.
    since: Option<Instant>,
    last_change: Option<(Instant, Step)>,
    /// The hold before a step back, now.
    hold: Duration,
    /// The usage measured at each speed when the encoder left it for the next faster one.
    left_at: Vec<Option<f64>>,
    /// The cost of each speed relative to the next faster one (`left_at` over the usage of
    /// the first whole window after the step).
    ratio: Vec<Option<f64>>,
    /// The last usage computed.
    usage: Option<f64>,
    /// The encode time of the frame before.
    last_encode: Duration,
    /// The machine's busy share last noted ([`SpeedController::note_machine`]).
    machine_busy: Option<f64>,
    /// Since when the machine has been at or above [`Config::machine_overuse`].
    machine_full_since: Option<Instant>,
    /// Whether a step back is this encoder's turn (see [`SpeedController::note_machine`]).
    step_back_turn: bool,
}

impl SpeedController {
    /// A controller starting at the slowest of `speeds`.
    pub fn new(speeds: &'static [i32], config: Config) -> SpeedController {
        let hold = config.hold;
        SpeedController {
            config,
            speeds,
            level: 0,
            samples: VecDeque::new(),
            encode_sum: Duration::ZERO,
            interval_sum: Duration::ZERO,
            since: None,
            last_change: None,
            hold,
            left_at: vec![None; speeds.len()],
            ratio: vec![None; speeds.len()],
            usage: None,
            last_encode: Duration::ZERO,
            machine_busy: None,
            machine_full_since: None,
            step_back_turn: true,
        }
    }

    /// The machine's CPU at `now`: the busy share of all its cores ([`machine_busy`]; `None`
    /// where it cannot be read, which leaves the encoder's own usage alone to decide), and
    /// whether a step back is this encoder's turn. The encoders of a process see one machine
    /// and step faster together when it is full; stepping back together they would fill it
    /// again at once, so a process steps back one encoder at a time ([`step_back_turn`]).
    pub fn note_machine(&mut self, busy: Option<f64>, step_back_turn: bool, now: Instant) {
        self.machine_busy = busy;
        self.step_back_turn = step_back_turn;
        if busy.is_some_and(|b| b >= self.config.machine_overuse) {
            self.machine_full_since.get_or_insert(now);
        } else {
            self.machine_full_since = None;
        }
    }

    /// The speed in use (`None`: an encoder without speeds).
    pub fn speed(&self) -> Option<i32> {
        self.speeds.get(self.level).copied()
    }

    /// The encode usage of the frames in the window, as a share of their intervals.
    pub fn usage(&self) -> Option<f64> {
        self.usage
    }

    /// One encoded frame: it took `encode` from entering the encoder to leaving it, and came
    /// `interval` after the frame before it; `now` is when it left. Returns the speed to
    /// change to, if any.
    pub fn sample(&mut self, encode: Duration, interval: Duration, now: Instant) -> Option<i32> {
        let idle = interval.saturating_sub(std::mem::replace(&mut self.last_encode, encode));
        if interval.is_zero() || idle > self.config.max_idle {
            return None;
        }
        self.samples.push_back((now, encode, interval));
        self.encode_sum += encode;
        self.interval_sum += interval;
        while let Some(&(at, e, i)) = self.samples.front() {
            if now.duration_since(at) <= self.config.window
                || self.samples.len() <= self.config.min_frames
            {
                break;
            }
            self.samples.pop_front();
            self.encode_sum = self.encode_sum.saturating_sub(e);
            self.interval_sum = self.interval_sum.saturating_sub(i);
        }
        let usage = self.encode_sum.as_secs_f64() / self.interval_sum.as_secs_f64().max(1e-6);
        self.usage = Some(usage);
        let since = *self.since.get_or_insert(now);
        if now.duration_since(since) < self.config.window
            || self.samples.len() < self.config.min_frames
        {
            return None;
        }
        // The first whole window after a step: what the step bought.
        if self.level > 0
            && self.ratio[self.level - 1].is_none()
            && let Some(left) = self.left_at[self.level - 1]
        {
            self.ratio[self.level - 1] = Some(left / usage.max(0.01));
        }
        // The machine full for a whole window (at this speed: the window began with it).
        let machine_full =
            self.machine_full_since.is_some_and(|t| now.duration_since(t) >= self.config.window);
        if (usage > self.config.overuse || machine_full) && self.level + 1 < self.speeds.len() {
            // Back to overusing soon after a step back: that load does not hold at the slower
            // speed, so wait longer before trying again (Chrome's ramp-up backoff).
            if let Some((at, Step::Slower)) = self.last_change {
                self.hold = if now.duration_since(at) < self.config.hold {
                    (self.hold * 2).min(self.config.max_hold)
                } else {
                    self.config.hold
                };
            }
            self.left_at[self.level] = Some(usage);
            self.ratio[self.level] = None;
            return Some(self.change(self.level + 1, Step::Faster, now));
        }
        let held = self.last_change.is_none_or(|(at, _)| now.duration_since(at) >= self.hold);
        let machine_has_room = self.machine_busy.is_none_or(|b| b < self.config.machine_underuse);
        if usage < self.config.underuse
            && self.level > 0
            && held
            && machine_has_room
            && self.step_back_turn
        {
            let predicted = usage * self.ratio[self.level - 1].unwrap_or(1.0);
            if predicted < self.config.back_below {
                return Some(self.change(self.level - 1, Step::Slower, now));
            }
        }
        None
    }

    fn change(&mut self, level: usize, step: Step, now: Instant) -> i32 {
        self.level = level;
        self.last_change = Some((now, step));
        // What was measured at the old speed says nothing of the new one.
        self.samples.clear();
        self.encode_sum = Duration::ZERO;
        self.interval_sum = Duration::ZERO;
        self.since = None;
        self.speeds[level]
    }
}

/// How often [`machine_busy`] reads the machine's CPU times again.
const MACHINE_SAMPLE_EVERY: Duration = Duration::from_millis(500);

/// The machine's CPU times at the last reading.
#[derive(Debug, Default)]
struct MachineSampler {
    at: Option<Instant>,
    /// (busy, total) jiffies of all cores.
    times: Option<(u64, u64)>,
}

/// The last busy share [`machine_busy`] computed, as `f64` bits; [`NO_BUSY`]: none yet.
static MACHINE_BUSY: AtomicU64 = AtomicU64::new(NO_BUSY);
const NO_BUSY: u64 = u64::MAX;

/// The share of the machine's CPU time (all cores) that was busy between the two last
/// readings of `/proc/stat`, read at most every `MACHINE_SAMPLE_EVERY` by whichever
/// encoder of the process asks first (the others, and any that asks while it reads, get the
/// last share: no encoder waits for another's reading); `None` before two readings or where
/// there is no `/proc/stat`. One for the process: every call's encoder sees the same machine.
///
/// The machine's, not the process's quota: in a container limited to part of a host's cores
/// this reads the host (a full host steps our encoders faster; our own throttling does not).
pub fn machine_busy() -> Option<f64> {
    static SAMPLER: LazyLock<Mutex<MachineSampler>> = LazyLock::new(Mutex::default);
    let cached = || {
        let bits = MACHINE_BUSY.load(Ordering::Relaxed);
        (bits != NO_BUSY).then(|| f64::from_bits(bits))
    };
    let Ok(mut s) = SAMPLER.try_lock() else { return cached() };
    let now = Instant::now();
    if s.at.is_some_and(|at| now.duration_since(at) < MACHINE_SAMPLE_EVERY) {
        return cached();
    }
    s.at = Some(now);
    let times = std::fs::read_to_string("/proc/stat").ok().as_deref().and_then(cpu_times);
    let busy = match (times, s.times) {
        (Some((busy, total)), Some((busy0, total0))) if total > total0 => {
            Some((busy.saturating_sub(busy0) as f64 / (total - total0) as f64).clamp(0.0, 1.0))
        }
        // Unreadable now: no share rather than a stale one.
        (None, _) => None,
        _ => cached(),
    };
    s.times = times;
    MACHINE_BUSY.store(busy.map_or(NO_BUSY, f64::to_bits), Ordering::Relaxed);
    busy
}

/// When an encoder of the process last stepped back to a slower speed.
static LAST_STEP_BACK: Mutex<Option<Instant>> = Mutex::new(None);

/// Whether an encoder may step back at `now`: no other of the process did within a window
/// ([`Config::window`]), so that the load the machine sheds comes back one encoder at a time.
pub fn step_back_turn(now: Instant) -> bool {
    let last = *LAST_STEP_BACK.lock().unwrap_or_else(|e| e.into_inner());
    last.is_none_or(|at| now.saturating_duration_since(at) >= Config::default().window)
}

/// Notes that an encoder of the process stepped back at `now` (see [`step_back_turn`]).
fn stepped_back(now: Instant) {
    *LAST_STEP_BACK.lock().unwrap_or_else(|e| e.into_inner()) = Some(now);
}

/// (busy, total) CPU time of all cores from the text of `/proc/stat` (its `cpu` line, in
/// jiffies): idle, iowait and niced time are not busy (a niced process yields its core to
/// an encoder); time stolen by the hypervisor is (the machine could not use it). Guest time
/// is already in user time.
pub fn cpu_times(proc_stat: &str) -> Option<(u64, u64)> {
    let line = proc_stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> =
        line.split_whitespace().skip(1).take(8).map(|f| f.parse().ok()).collect::<Option<_>>()?;
    if fields.len() < 4 {
        return None;
    }
    let total: u64 = fields.iter().sum();
    let idle = fields[1] + fields[3] + fields.get(4).copied().unwrap_or(0);
    Some((total.saturating_sub(idle), total))
}

/// What the stats show of an encoder's load.
#[derive(Debug)]
struct Shown {
    /// The speed in use (`cpu-used`); [`NO_SPEED`] for an encoder without speeds.
    speed: AtomicI32,
    /// The encode usage, %.
    usage_pct: AtomicU32,
}

const NO_SPEED: i32 = i32::MIN;

/// The object data key of an encoder's [`Shown`].
const SHOWN: &str = "wilddog-encoder-load";

/// An encoder's speed (`cpu-used`; `None` for an encoder without speeds) and encode usage
/// (%), for the stats; `None`: not an encoder [`watch_encoder`] watches.
pub fn encoder_load(encoder: &gst::Element) -> Option<(Option<i32>, u32)> {
    // SAFETY: the key is set once, to an Arc<Shown>, when the encoder is made (watch_encoder),
    // and never replaced or stolen: what is read under it is one, alive as long as the encoder.
    let shown =
        unsafe { encoder.data::<Arc<Shown>>(SHOWN) }.map(|p| unsafe { p.as_ref() }.clone())?;
    let speed = shown.speed.load(Ordering::Relaxed);
    Some(((speed != NO_SPEED).then_some(speed), shown.usage_pct.load(Ordering::Relaxed)))
}

/// Measures `encoder`'s encode usage (for the stats) and, when `adapt`, changes its speed
/// (`cpu-used`) as a [`SpeedController`] says. The encoder must be set to the slowest of
/// [`speeds`]`(codec, slowest)` already.
///
/// The new speed is set on the streaming thread, with the next frame, before it enters the
/// encoder: gst-plugins-good's vpxenc applies `cpu-used` to the running encoder
/// (`vpx_codec_control(VP8E_SET_CPUUSED)`, under the encoder lock its encoding holds too), so
/// nothing restarts; set there, the change never waits for a frame being encoded.
pub fn watch_encoder(
    encoder: &gst::Element,
    codec: VideoCodec,
    slowest: EncoderSpeed,
    adapt: bool,
) {
    let (Some(sink), Some(src)) = (encoder.static_pad("sink"), encoder.static_pad("src")) else {
        return;
    };
    // Not adapting: a controller with the starting speed alone, which measures and never
    // changes it.
    let speeds = speeds(codec, slowest);
    let speeds = if adapt { speeds } else { &speeds[..speeds.len().min(1)] };
    let can_step = speeds.len() > 1;
    let shown = Arc::new(Shown {
        speed: AtomicI32::new(speeds.first().copied().unwrap_or(NO_SPEED)),
        usage_pct: AtomicU32::new(0),
    });
    // SAFETY: set once, to an Arc<Shown>, before the encoder is shared; read by encoder_load.
    unsafe { encoder.set_data(SHOWN, shown.clone()) };
    struct Watch {
        controller: SpeedController,
        /// When the frame being encoded entered, and its interval.
        entered: Option<(Instant, Duration)>,
        /// When the last frame entered.
        last_entry: Option<Instant>,
        /// A speed to set before the next frame.
        pending: Option<i32>,
    }
    let watch = Arc::new(Mutex::new(Watch {
        controller: SpeedController::new(speeds, Config::default()),
        entered: None,
        last_entry: None,
        pending: None,
    }));
    fn lock(w: &Mutex<Watch>) -> std::sync::MutexGuard<'_, Watch> {
        // (plain numbers: a panic elsewhere leaves them usable)
        w.lock().unwrap_or_else(|e| e.into_inner())
    }
    {
        let watch = watch.clone();
        sink.add_probe(gst::PadProbeType::BUFFER, move |pad, _| {
            let now = Instant::now();
            let pending = {
                let mut w = lock(&watch);
                let interval = w.last_entry.map(|t| now.duration_since(t)).unwrap_or_default();
                w.last_entry = Some(now);
                w.entered = Some((now, interval));
                w.pending.take()
            };
            if let Some(speed) = pending
                && let Some(encoder) = pad.parent_element()
            {
                encoder.set_property("cpu-used", speed);
            }
            gst::PadProbeReturn::Ok
        });
    }
    src.add_probe(gst::PadProbeType::BUFFER, move |pad, _| {
        let now = Instant::now();
        let mut w = lock(&watch);
        // An output with no frame entered since the last one (a header, a frame libvpx
        // held): nothing to time.
        let Some((entered, interval)) = w.entered.take() else {
            return gst::PadProbeReturn::Ok;
        };
        // (an encoder with one speed has nothing to step: the machine is not read for it)
        if can_step {
            w.controller.note_machine(machine_busy(), step_back_turn(now), now);
        }
        let before = w.controller.speed();
        let change = w.controller.sample(now.duration_since(entered), interval, now);
        // A higher cpu-used is a slower speed (VP8 -6 is slower than -16).
        if change.is_some_and(|speed| before.is_some_and(|b| speed > b)) {
            stepped_back(now);
        }
        if let Some(usage) = w.controller.usage() {
            shown.usage_pct.store((usage * 100.0).round() as u32, Ordering::Relaxed);
        }
        if let Some(speed) = change {
            gst::info!(
                CAT,
                obj = pad,
                "encode usage {:.0} %: cpu-used {speed}",
                w.controller.usage().unwrap_or_default() * 100.0
            );
            w.pending = Some(speed);
            shown.speed.store(speed, Ordering::Relaxed);
        }
        gst::PadProbeReturn::Ok
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 15 fps.
    const FRAME: Duration = Duration::from_micros(66_667);

    /// Feeds `secs` of frames at 15 fps, each taking `usage(speed)` of the interval to encode;
    /// returns every change made, with when (seconds from `start`).
    fn run(
        c: &mut SpeedController,
        start: Instant,
        from: f64,
        secs: f64,
        usage: impl Fn(i32) -> f64,
    ) -> Vec<(f64, i32)> {
        feed(c, start, from, secs, usage, |_| None)
    }

    /// [`run`] with the machine's busy share `busy(t)` noted at each frame (`t` in seconds
    /// from `start`).
    fn feed(
        c: &mut SpeedController,
        start: Instant,
        from: f64,
        secs: f64,
        usage: impl Fn(i32) -> f64,
        busy: impl Fn(f64) -> Option<f64>,
    ) -> Vec<(f64, i32)> {
        let mut changes = Vec::new();
        let mut t = Duration::from_secs_f64(from);
        let end = Duration::from_secs_f64(from + secs);
        while t < end {
            t += FRAME;
            c.note_machine(busy(t.as_secs_f64()), true, start + t);
            let encode = FRAME.mul_f64(usage(c.speed().unwrap_or(0)));
            if let Some(s) = c.sample(encode, FRAME, start + t) {
                changes.push((t.as_secs_f64(), s));
            }
        }
        changes
    }

    fn vp8() -> SpeedController {
        SpeedController::new(VP8_SPEEDS, Config::default())
    }

    #[test]
    fn sustained_overuse_steps_to_faster_speeds_one_window_apart() {
        let mut c = vp8();
        assert_eq!(c.speed(), Some(-6));
        let changes = run(&mut c, Instant::now(), 0.0, 10.0, |_| 0.95);
        let speeds: Vec<i32> = changes.iter().map(|c| c.1).collect();
        assert_eq!(speeds, [-10, -16], "{changes:?}");
        // Each after a whole window measured at the speed before (1.5 s), not sooner.
        assert!((1.5..2.0).contains(&changes[0].0), "{changes:?}");
        assert!(changes[1].0 - changes[0].0 >= 1.5, "{changes:?}");
        // The fastest: nowhere further to go.
        assert_eq!(c.speed(), Some(-16));
    }

    #[test]
    fn one_slow_frame_changes_nothing() {
        let mut c = vp8();
        let start = Instant::now();
        assert!(run(&mut c, start, 0.0, 3.0, |_| 0.2).is_empty());
        // A key frame taking half a second; the next frame waited for it.
        assert_eq!(
            c.sample(Duration::from_millis(500), FRAME, start + Duration::from_secs(3)),
            None
        );
        let late = start + Duration::from_secs(3) + Duration::from_millis(500);
        assert_eq!(c.sample(FRAME.mul_f64(0.2), Duration::from_millis(500), late), None);
        assert!(run(&mut c, start, 3.5, 10.0, |_| 0.2).is_empty());
        assert_eq!(c.speed(), Some(-6));
    }

    #[test]
    fn a_short_peak_under_a_window_changes_nothing() {
        let mut c = vp8();
        let start = Instant::now();
        assert!(run(&mut c, start, 0.0, 3.0, |_| 0.3).is_empty());
        // Half a second of frames taking their whole interval: averaged with the second of
        // lighter ones around them, under the threshold.
        assert!(run(&mut c, start, 3.0, 0.5, |_| 1.0).is_empty());
        assert!(run(&mut c, start, 3.5, 5.0, |_| 0.3).is_empty());
    }

    #[test]
    fn sustained_underuse_steps_back_after_the_hold() {
        let mut c = vp8();
        let start = Instant::now();
        // Overloaded: one step makes it fit (-6 costs twice -10).
        let load = std::cell::Cell::new(1.0);
        let cost = |speed: i32| if speed == -6 { 0.9 } else { 0.45 };
        let changes = run(&mut c, start, 0.0, 5.0, |s| cost(s) * load.get());
        assert_eq!(changes.iter().map(|c| c.1).collect::<Vec<_>>(), [-10]);
        let stepped = changes[0].0;
        // The machine frees up: -6 would take 30 % now.
        load.set(1.0 / 3.0);
        let changes = run(&mut c, start, 5.0, 20.0, |s| cost(s) * load.get());
        assert_eq!(changes.iter().map(|c| c.1).collect::<Vec<_>>(), [-6], "{changes:?}");
        // Not before the hold (10 s after the step).
        assert!(changes[0].0 - stepped >= 10.0, "{changes:?} (stepped at {stepped})");
        assert_eq!(c.speed(), Some(-6));
    }

    #[test]
    fn no_oscillation_at_a_steady_load_on_the_boundary() {
        // -6 overuses (90 %), -10 underuses (40 %, under the 42 % threshold): stepping back
        // would overuse again. Ten minutes of it: one step, and the encoder stays.
        let mut c = vp8();
        let cost = |speed: i32| match speed {
            -6 => 0.9,
            -10 => 0.4,
            _ => 0.3,
        };
        let changes = run(&mut c, Instant::now(), 0.0, 600.0, cost);
        assert_eq!(changes.iter().map(|c| c.1).collect::<Vec<_>>(), [-10], "{changes:?}");
    }

    #[test]
    fn a_step_back_that_overuses_again_waits_twice_as_long_next_time() {
        // Without the prediction (a load that came and went while the step was measured
        // makes it wrong the same way): -6 overuses, -10 underuses, and each step back
        // overuses again at once. The backoff spaces the tries out.
        let config = Config { back_below: f64::INFINITY, ..Config::default() };
        let mut c = SpeedController::new(VP8_SPEEDS, config);
        let changes = run(&mut c, Instant::now(), 0.0, 200.0, |s| if s == -6 { 0.9 } else { 0.35 });
        let ups: Vec<f64> = changes.iter().filter(|(_, s)| *s == -10).map(|(t, _)| *t).collect();
        let backs: Vec<f64> = changes.iter().filter(|(_, s)| *s == -6).map(|(t, _)| *t).collect();
        assert!(backs.len() >= 3, "{changes:?}");
        // Each wait at -10 before stepping back is twice the one before.
        let waits: Vec<f64> = ups.iter().zip(&backs).map(|(u, b)| b - u).collect();
        assert!((10.0..10.2).contains(&waits[0]), "{waits:?}");
        assert!((20.0..20.2).contains(&waits[1]), "{waits:?}");
        assert!((40.0..40.2).contains(&waits[2]), "{waits:?}");
        assert_eq!(c.speed().map(|s| s <= -6), Some(true));
    }

    #[test]
    fn gaps_and_encoders_without_speeds() {
        // A paused source: frames more than a second apart (after the one before was done)
        // make no sample.
        let mut c = vp8();
        let start = Instant::now();
        for i in 1..20 {
            let at = start + Duration::from_secs(2 * i);
            assert_eq!(c.sample(Duration::from_millis(500), Duration::from_secs(2), at), None);
        }
        assert_eq!(c.usage(), None);
        // An encoder taking two seconds a frame is no pause: the next frame waited for it.
        let mut slow = vp8();
        let changes: Vec<i32> = (1..20)
            .filter_map(|i| {
                let at = start + Duration::from_secs(2 * i);
                let frame = Duration::from_millis(2000);
                slow.sample(frame, frame + Duration::from_millis(10), at)
            })
            .collect();
        assert_eq!(changes, [-10, -16]);
        // H.264: measured, never changed.
        let mut h264 = SpeedController::new(
            speeds(VideoCodec::H264, EncoderSpeed::Quality),
            Config::default(),
        );
        assert!(run(&mut h264, start, 0.0, 10.0, |_| 1.0).is_empty());
        assert_eq!(h264.speed(), None);
        assert!(h264.usage().is_some_and(|u| u > 0.99));
    }

    /// Frames at `usage` each on a machine `busy(t)`: see [`feed`].
    fn run_on_machine(
        c: &mut SpeedController,
        start: Instant,
        from: f64,
        secs: f64,
        usage: f64,
        busy: impl Fn(f64) -> f64,
    ) -> Vec<(f64, i32)> {
        feed(c, start, from, secs, |_| usage, |t| Some(busy(t)))
    }

    #[test]
    fn a_full_machine_steps_an_encoder_that_keeps_up_faster() {
        // One of many calls: its encoder takes 10 % of the frame interval, the machine is
        // full (98 %) from 3 s on. Under 95 % nothing changes.
        let mut c = vp8();
        let start = Instant::now();
        assert!(run_on_machine(&mut c, start, 0.0, 3.0, 0.1, |_| 0.9).is_empty());
        let changes = run_on_machine(&mut c, start, 3.0, 6.0, 0.1, |_| 0.98);
        assert_eq!(changes.iter().map(|c| c.1).collect::<Vec<_>>(), [-10, -16], "{changes:?}");
        // Each step after a whole window of a full machine at the speed before.
        assert!(changes[0].0 >= 4.5 && changes[1].0 - changes[0].0 >= 1.5, "{changes:?}");
        // A full machine that is briefly under the threshold starts its window again.
        let mut c = vp8();
        let flicker = |t: f64| if ((t * 10.0) as u64).is_multiple_of(12) { 0.9 } else { 0.98 };
        assert!(run_on_machine(&mut c, start, 0.0, 10.0, 0.1, flicker).is_empty());
    }

    #[test]
    fn a_step_back_waits_for_the_machine_to_have_room() {
        let mut c = vp8();
        let start = Instant::now();
        let changes = run_on_machine(&mut c, start, 0.0, 5.0, 0.1, |_| 0.98);
        assert_eq!(c.speed(), Some(-16), "{changes:?}");
        // The encoder underuses, the machine at 90 %: stays, however long.
        assert!(run_on_machine(&mut c, start, 5.0, 60.0, 0.1, |_| 0.9).is_empty());
        // At 70 % it steps back, one speed a hold apart.
        let changes = run_on_machine(&mut c, start, 65.0, 60.0, 0.1, |_| 0.7);
        assert_eq!(changes.iter().map(|c| c.1).collect::<Vec<_>>(), [-10, -6], "{changes:?}");
    }

    #[test]
    fn an_encoder_steps_back_only_in_its_turn() {
        let mut c = vp8();
        let start = Instant::now();
        run_on_machine(&mut c, start, 0.0, 5.0, 0.1, |_| 0.98);
        assert_eq!(c.speed(), Some(-16));
        // The machine has room, but another encoder of the process is stepping back.
        let mut t = Duration::from_secs(5);
        while t < Duration::from_secs(60) {
            t += FRAME;
            c.note_machine(Some(0.5), false, start + t);
            assert_eq!(c.sample(FRAME.mul_f64(0.1), FRAME, start + t), None);
        }
        // Its turn: it steps back.
        c.note_machine(Some(0.5), true, start + t + FRAME);
        assert_eq!(c.sample(FRAME.mul_f64(0.1), FRAME, start + t + FRAME), Some(-10));
    }

    #[test]
    fn cpu_times_read_from_proc_stat() {
        let text = "cpu  100 5 50 800 40 3 2 10 0 0\ncpu0 50 2 25 400 20 1 1 5 0 0\nintr 1 2\n";
        // busy: user, system, irq, softirq, steal; nice, idle and iowait not.
        assert_eq!(cpu_times(text), Some((165, 1010)));
        assert_eq!(cpu_times("intr 1 2\n"), None);
        assert_eq!(cpu_times("cpu  1 x 3 4\n"), None);
        // A machine with /proc/stat: two readings give a share between 0 and 1.
        if std::path::Path::new("/proc/stat").exists() {
            let _ = machine_busy();
            std::thread::sleep(MACHINE_SAMPLE_EVERY + Duration::from_millis(50));
            let busy = machine_busy();
            assert!(busy.is_some_and(|b| (0.0..=1.0).contains(&b)), "{busy:?}");
        }
    }

    #[test]
    fn encoder_speed_is_the_slowest_step() {
        use EncoderSpeed::*;
        assert_eq!(speeds(VideoCodec::Vp8, Quality), [-6, -10, -16]);
        assert_eq!(speeds(VideoCodec::Vp8, Balanced), [-10, -16]);
        assert_eq!(speeds(VideoCodec::Vp8, Fast), [-16]);
        assert_eq!(speeds(VideoCodec::Vp9, Quality), [-6, -7, -8]);
        assert_eq!(speeds(VideoCodec::Vp9, Fast), [-8]);
        assert!(speeds(VideoCodec::H264, Fast).is_empty());
        // Already at the fastest: a full machine changes nothing.
        let mut fast = SpeedController::new(speeds(VideoCodec::Vp8, Fast), Config::default());
        assert!(run(&mut fast, Instant::now(), 0.0, 10.0, |_| 1.0).is_empty());
        assert_eq!(fast.speed(), Some(-16));
    }
}
