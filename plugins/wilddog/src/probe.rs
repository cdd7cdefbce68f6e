//! Bandwidth probing: finding out, without risking the picture, that the path carries more
//! than the estimate.
//!
//! After a congestion episode the estimate comes back only as fast as Google Congestion
//! Control lets it: 8 % a second at most, and never over 1.5 times what the sender sends,
//! which a small picture at a low target keeps low. On a link that dropped to 300 kbit/s for
//! ten seconds and came back to 2 Mbit/s, neither our sender nor webrtcsink was back at its
//! rate within ten seconds of the step up (docs/benchmarks.md). Raising the encoder's target
//! to find out (branch `stepup-s18`, not merged) cost the picture: one step past the
//! capacity filled the bottleneck's queue before the feedback showed it, and the media lost
//! then froze the picture until a key frame.
//!
//! A probe is padding instead, as libwebrtc's probe controller does after a large drop and
//! while the sender is application limited: retransmissions of video packets the peer
//! already has (the receiver drops the copies), sent on top of the media so that the path
//! carries [`PROBE_GAIN`] times the estimate for [`PROBE_DURATION`]. It passes when no
//! transport-wide feedback report shows a queue ([`PROBE_QUEUE_MS`]) and the path delivered
//! its packets at the rate they were sent at ([`PROBE_DELIVERED_SHARE`]): the estimate goes
//! to that rate at once. A report with a queue or losses stops the padding at once, and the
//! next probe waits longer ([`PROBE_BACKOFF_MIN`] doubling to [`PROBE_BACKOFF_MAX`]). A
//! failed probe costs queue (20 to 190 ms in debug logs) and no media: what is lost of it
//! is a copy.
//!
//! [`Prober`] is the decision (sans I/O: reports and instants in, actions out);
//! [`SentPackets`] is what the padding is made of. The element sends the padding
//! (`wilddogcall/imp/congestion.rs`).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::congestion::FeedbackPacket;

/// A probe asks the path for this many times the estimate (media and padding together).
/// 1.5: a path with less than that shows a queue growing at least a third of a millisecond
/// per millisecond of probe, which the reports see within [`PROBE_DURATION`]; twice the
/// estimate filled the queue twice as fast when the capacity had not come back.
pub const PROBE_GAIN: f64 = 1.5;
/// A probe right after one that passed asks for this many times the estimate (libwebrtc's
/// further exponential probing doubles too): the path just carried the estimate without a
/// queue, so a link that came back is found in half the probes (from 60 kbit/s after a
/// 300 kbit/s step, 1.5 times a probe took 5.7 s to full quality at 640 kbit/s), and one
/// that did not costs at most a probe's queue.
pub const PROBE_CHAINED_GAIN: f64 = 2.0;
/// A probe after failed ones asks for this much over the estimate at least.
pub const PROBE_LEAST_GAIN: f64 = 1.1;
/// How long a probe sends its padding.
pub const PROBE_DURATION: Duration = Duration::from_millis(250);
/// How long after its padding a probe waits for the reports on its last packets (feedback
/// comes about every 100 ms, a round trip later) before it counts as passed.
pub const PROBE_SETTLE: Duration = Duration::from_millis(200);
/// A report whose every packet queued this long, ms, fails a probe running, and is no
/// drained queue to start one from.
pub const PROBE_QUEUE_MS: u32 = 30;
/// A probe starts only after the reports have shown a drained queue this long.
pub const PROBE_DRAINED_FOR: Duration = Duration::from_secs(1);
/// After a probe passed, the next (from the new estimate) may start this soon.
pub const PROBE_CHAIN_GAP: Duration = Duration::from_millis(200);
/// After a probe failed, the next one waits this long, doubling with each failure in a
/// row up to [`PROBE_BACKOFF_MAX`] (and a quarter either way at random: the two ends of a
/// call share links, and probes of both at once each see the other's as a queue).
pub const PROBE_BACKOFF_MIN: Duration = Duration::from_secs(2);
/// See [`PROBE_BACKOFF_MIN`]: on a link that stays capped, one probe every 5 s or so (a
/// failed one costs 20 to 190 ms of queue; a link that came back waits for
/// the next).
pub const PROBE_BACKOFF_MAX: Duration = Duration::from_secs(6);
/// No probe once the estimate is within this share of the ceiling (what full quality
/// sends).
pub const PROBE_GOAL_REACHED: f64 = 0.9;

/// Once a probe of the call has failed (the start's ramp is over), a probe recalls a rate
/// the path carried: it starts only while the estimate is under this share of the most the
/// path delivered of our packets (all of them, padding and retransmissions too; over a
/// [`DELIVERED_WINDOW`], within the last [`PROBE_RECALL`]), and asks for that at most.
/// libwebrtc probes after a drop of more than a third too (this share), but once, within
/// 5 s, to 85 % of the rate before it; here the recall goes on with the failed probes'
/// backoff for as long as the rate is remembered, so that a link that comes back after ten
/// seconds is found. What it no longer does is probe past anything delivered: that is what
/// made our sender unfair to a Chromium tab sending the other way on a 500 kbit/s cap (each
/// probe, every 2 to 7.5 s at 1.1 to 1.5 times the estimate, queued the tab's packets too,
/// and its delay-based estimate backed off: it sent 83 to 112 kbit/s against our 187 to
/// 216; without our probes, 210 to 234). A stream that fills the link after we delivered
/// more still sees recall probes for up to a minute.
pub const PROBE_RECALL_BELOW: f64 = 0.66;
/// See [`PROBE_RECALL_BELOW`]: what the path delivered is averaged over windows this long
/// (a probe's or a key frame's burst is not a rate the path sustains).
pub const DELIVERED_WINDOW: Duration = Duration::from_secs(2);
/// See [`PROBE_RECALL_BELOW`]: how long a delivered rate is remembered.
pub const PROBE_RECALL: Duration = Duration::from_secs(60);

/// A probe passes only if the path delivered what was sent while it ran at this share of
/// the rate it was sent at, or more: a path with less capacity delivers at its capacity, a
/// queue growing behind (libwebrtc's probe estimator reads a probe's packets the same way).
pub const PROBE_DELIVERED_SHARE: f64 = 0.9;
/// ...and lost at most this share of them.
pub const PROBE_LOST_SHARE: f64 = 0.1;
/// ...and the feedback reported at least this many of them (a few packets measure nothing).
pub const PROBE_MIN_PACKETS: usize = 5;

/// What a probe measured, for the log.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProbeMeasure {
    /// The rate its packets were sent at, bit/s.
    pub sent_bps: u32,
    /// The rate the path delivered them at, bit/s.
    pub delivered_bps: u32,
    /// Its packets the feedback reported, and of those lost.
    pub packets: usize,
    /// See `packets`.
    pub lost: usize,
}

/// A probe that was started: the padding runs while [`Prober::running`] says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// Tells this probe from the next.
    pub id: u64,
    /// What the path is asked to carry, media and padding together, bit/s.
    pub rate_bps: u32,
    /// When its padding stops.
    pub until: Instant,
}

/// What to do after a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeAction {
    /// Nothing.
    None,
    /// Start sending padding for this probe.
    Start(Probe),
    /// The probe failed: its padding stops (it stops by itself, as it asks
    /// [`Prober::running`]).
    Failed,
    /// The probe passed: the path carries this rate, bit/s (what its packets went out at, at
    /// most the probe's rate); the estimate goes there if that is more.
    Passed(u32),
}

/// Decides when to probe and what a probe proved (see the module's doc).
#[derive(Debug, Clone)]
pub struct Prober {
    /// What full quality sends, bit/s: no probe past it.
    ceiling_bps: u32,
    /// Since when the reports have shown a drained queue.
    drained_since: Option<Instant>,
    /// No probe starts before this.
    next_at: Option<Instant>,
    /// What the next failure makes the next probe wait.
    backoff: Duration,
    /// The rate of the last probe, if it failed (none since one passed).
    failed_bps: Option<u32>,
    probe: Option<Probe>,
    /// The running probe's packets as the feedback reported them, from its first padding
    /// packet to its last: (sent, arrived, size).
    measured: Vec<(u64, Option<u64>, u32)>,
    /// When its first and last padding packets were sent (our clock, ns).
    padding_span: Option<(u64, u64)>,
    next_id: u64,
    /// Probes passed so far.
    passed: u32,
    /// Whether the last probe passed (the next one, if soon, doubles).
    chained: bool,
    /// What the last probe measured: sent and delivered rates (bit/s) and packets.
    measure: Option<ProbeMeasure>,
    /// A small generator for the backoff's randomness.
    seed: u64,
    /// Whether the start's ramp is over (a probe failed): probes then only recall a rate
    /// the path carried ([`PROBE_RECALL_BELOW`]).
    ramp_over: bool,
    /// What the path delivered, per [`DELIVERED_WINDOW`].
    delivered: DeliveredHistory,
}

/// The rates the path delivered of our packets, averaged per [`DELIVERED_WINDOW`], over the
/// last [`PROBE_RECALL`].
#[derive(Debug, Clone, Default)]
struct DeliveredHistory {
    /// The window being filled: when it began, and the sum and count of its reports' rates.
    current: Option<(Instant, u64, u32)>,
    /// Complete windows: (when each ended, its mean rate, bit/s).
    windows: VecDeque<(Instant, u32)>,
}

impl DeliveredHistory {
    fn note(&mut self, bps: u32, now: Instant) {
        // A window that reports stopped coming into (no media for a while) says nothing of
        // now.
        if self
            .current
            .is_some_and(|(began, _, _)| now.duration_since(began) > 2 * DELIVERED_WINDOW)
        {
            self.current = None;
        }
        let (began, sum, count) = self.current.get_or_insert((now, 0, 0));
        *sum += u64::from(bps);
        *count += 1;
        if now.duration_since(*began) >= DELIVERED_WINDOW {
            let mean = (*sum / u64::from(*count)) as u32;
            self.windows.push_back((now, mean));
            self.current = None;
        }
        // Only bounds the memory: `best` filters by age itself, as no report may come for a
        // while (media stopped) and the windows then stay as they were.
        while self.windows.front().is_some_and(|&(at, _)| now.duration_since(at) > PROBE_RECALL) {
            self.windows.pop_front();
        }
    }

    /// The most delivered over a whole window within [`PROBE_RECALL`] of `now`, bit/s (0:
    /// none).
    fn best(&self, now: Instant) -> u32 {
        self.windows
            .iter()
            .filter(|&&(at, _)| now.duration_since(at) <= PROBE_RECALL)
            .map(|&(_, bps)| bps)
            .max()
            .unwrap_or(0)
    }
}

impl Prober {
    /// A prober for a sender whose full quality sends `ceiling_bps`.
    pub fn new(ceiling_bps: u32, seed: u64) -> Self {
        Prober {
            ceiling_bps,
            drained_since: None,
            next_at: None,
            backoff: PROBE_BACKOFF_MIN,
            failed_bps: None,
            probe: None,
            measured: Vec::new(),
            padding_span: None,
            next_id: 1,
            passed: 0,
            chained: false,
            measure: None,
            // xorshift must not start at 0.
            seed: seed | 1,
            ramp_over: false,
            delivered: DeliveredHistory::default(),
        }
    }

    /// What a transport-wide feedback report says the path delivered of our packets, bit/s
    /// (before [`Prober::note_report`] with its reading).
    pub fn note_delivered(&mut self, bps: u32, now: Instant) {
        self.delivered.note(bps, now);
    }

    /// A transport-wide feedback report at `now`, read as its queue (ms, the least of its
    /// packets'), whether it lost packets, and the estimate then (under any cap), bit/s.
    pub fn note_report(
        &mut self,
        queue_ms: u32,
        lossy: bool,
        estimate_bps: u32,
        now: Instant,
    ) -> ProbeAction {
        let quiet = queue_ms < PROBE_QUEUE_MS && !lossy;
        if let Some(probe) = self.probe {
            if !quiet {
                self.fail(now);
                return ProbeAction::Failed;
            }
            if now >= probe.until + PROBE_SETTLE {
                // What it proved is the rate its packets went out at (the padding may have
                // fallen short of the probe's rate), if the path delivered them at that rate.
                let Some(tested_bps) = self.delivered_as_sent() else {
                    self.fail(now);
                    return ProbeAction::Failed;
                };
                self.probe = None;
                self.backoff = PROBE_BACKOFF_MIN;
                self.failed_bps = None;
                self.passed += 1;
                self.chained = true;
                self.next_at = Some(now + PROBE_CHAIN_GAP);
                return ProbeAction::Passed(tested_bps.min(probe.rate_bps));
            }
            return ProbeAction::None;
        }
        if !quiet {
            self.drained_since = None;
            self.chained = false;
            return ProbeAction::None;
        }
        let drained = *self.drained_since.get_or_insert(now);
        let goal = f64::from(self.ceiling_bps) * PROBE_GOAL_REACHED;
        // After the start's ramp, only a rate the path carried, after a large drop.
        let recalled = self.delivered.best(now);
        if self.ramp_over && f64::from(estimate_bps) >= f64::from(recalled) * PROBE_RECALL_BELOW {
            return ProbeAction::None;
        }
        if f64::from(estimate_bps) >= goal
            || now.duration_since(drained) < PROBE_DRAINED_FOR
            || self.next_at.is_some_and(|t| now < t)
        {
            return ProbeAction::None;
        }
        // Each report that could start one starts it by even odds, so that the two ends of a
        // call, drained by the same cut, do not probe together.
        if self.random().is_multiple_of(2) {
            return ProbeAction::None;
        }
        let gain = if self.chained { PROBE_CHAINED_GAIN } else { PROBE_GAIN };
        let mut rate_bps = (f64::from(estimate_bps) * gain) as u32;
        // After a failure, halfway to the rate that failed: on a link that stays capped each
        // failed probe overshoots less (a probe 50 % over a full link queued 50 to 180 ms
        // before the reports showed it), and one that came back passes and goes on at
        // PROBE_CHAINED_GAIN.
        if let Some(failed) = self.failed_bps.filter(|&f| f > estimate_bps) {
            let halfway = estimate_bps + (failed - estimate_bps) / 2;
            let least = (f64::from(estimate_bps) * PROBE_LEAST_GAIN) as u32;
            rate_bps = rate_bps.min(halfway.max(least));
        }
        let mut rate_bps = rate_bps.min(self.ceiling_bps);
        if self.ramp_over {
            rate_bps = rate_bps.min(recalled);
        }
        let probe = Probe { id: self.next_id, rate_bps, until: now + PROBE_DURATION };
        self.next_id += 1;
        self.probe = Some(probe);
        self.measured.clear();
        self.padding_span = None;
        self.measure = None;
        ProbeAction::Start(probe)
    }

    /// The estimate was cut for congestion at `now`: a probe running failed. Whether one was.
    pub fn note_cut(&mut self, now: Instant) -> bool {
        self.drained_since = None;
        self.chained = false;
        if self.probe.is_some() {
            self.fail(now);
            return true;
        }
        false
    }

    /// The rate probe `id` asks the path for at `now`, bit/s, while its padding should run.
    pub fn running(&self, id: u64, now: Instant) -> Option<u32> {
        self.probe.filter(|p| p.id == id && now < p.until).map(|p| p.rate_bps)
    }

    /// A feedback report's packets (before [`Prober::note_report`] with its reading), and
    /// the payload types of padding (retransmissions): those of a running probe are kept to
    /// measure it.
    pub fn note_packets(&mut self, packets: &[FeedbackPacket], padding_pts: &[u8]) {
        if self.probe.is_none() {
            return;
        }
        for p in packets.iter().filter(|p| padding_pts.contains(&p.pt)) {
            let (first, last) = self.padding_span.get_or_insert((p.sent_ns, p.sent_ns));
            *first = (*first).min(p.sent_ns);
            *last = (*last).max(p.sent_ns);
        }
        self.measured.extend(packets.iter().map(|p| (p.sent_ns, p.arrived_ns, p.size)));
    }

    /// Whether the path delivered the running probe's packets (those sent between its first
    /// and last padding packet) at [`PROBE_DELIVERED_SHARE`] of the rate they were sent at,
    /// losing at most [`PROBE_LOST_SHARE`] of them.
    /// The rate it tested, bit/s (what its packets were sent at), when it passed.
    fn delivered_as_sent(&mut self) -> Option<u32> {
        let mut measure = ProbeMeasure { sent_bps: 0, delivered_bps: 0, packets: 0, lost: 0 };
        let passed = self.padding_span.is_some_and(|(first, last)| {
            let mut sent: Vec<&(u64, Option<u64>, u32)> =
                self.measured.iter().filter(|(s, _, _)| (first..=last).contains(s)).collect();
            sent.sort_unstable_by_key(|(s, _, _)| *s);
            measure.packets = sent.len();
            measure.lost = sent.iter().filter(|(_, a, _)| a.is_none()).count();
            // Rates over the gaps: the bytes of all but the first packet (by sending, then
            // by arrival) over the span from the first to the last.
            let send_bytes: u64 = sent.iter().skip(1).map(|(_, _, size)| u64::from(*size)).sum();
            let mut arrivals: Vec<(u64, u32)> =
                sent.iter().filter_map(|(_, a, size)| a.map(|a| (a, *size))).collect();
            arrivals.sort_unstable();
            let arrived_bytes: u64 =
                arrivals.iter().skip(1).map(|&(_, size)| u64::from(size)).sum();
            let arrival_span = match (arrivals.first(), arrivals.last()) {
                (Some(a), Some(b)) => b.0 - a.0,
                _ => 0,
            };
            let rate =
                |bytes: u64, span_ns: u64| (bytes as f64 * 8e9 / span_ns.max(1) as f64) as u32;
            measure.sent_bps = rate(send_bytes, last - first);
            measure.delivered_bps = rate(arrived_bytes, arrival_span);
            measure.packets >= PROBE_MIN_PACKETS
                && measure.lost as f64 <= PROBE_LOST_SHARE * measure.packets as f64
                && last > first
                && arrival_span > 0
                && f64::from(measure.delivered_bps)
                    >= f64::from(measure.sent_bps) * PROBE_DELIVERED_SHARE
        });
        self.measure = Some(measure);
        passed.then_some(measure.sent_bps)
    }

    /// What the last probe measured (none when it failed on a queue before its end).
    pub fn last_measure(&self) -> Option<ProbeMeasure> {
        self.measure
    }

    /// The media alone already sends what probe `id` would ask for (a key frame, an
    /// encoder's overshoot): it is given up without a verdict, and the next report may start
    /// another. (Padding on top would ask for more than the probe's rate, and a probe
    /// without padding measures nothing.)
    pub fn abandon(&mut self, id: u64, now: Instant) {
        if self.probe.is_some_and(|p| p.id == id) {
            self.probe = None;
            self.next_at = Some(now + PROBE_CHAIN_GAP);
        }
    }

    /// Probes started and passed so far.
    pub fn counts(&self) -> (u32, u32) {
        ((self.next_id - 1) as u32, self.passed)
    }

    fn fail(&mut self, now: Instant) {
        self.chained = false;
        self.ramp_over = true;
        self.failed_bps = self.probe.map(|p| p.rate_bps).or(self.failed_bps);
        self.probe = None;
        self.drained_since = None;
        // A quarter either way.
        let jitter = 0.75 + 0.5 * (self.random() % 1000) as f64 / 1000.0;
        self.next_at = Some(now + self.backoff.mul_f64(jitter));
        self.backoff = (self.backoff * 2).min(PROBE_BACKOFF_MAX);
    }

    fn random(&mut self) -> u64 {
        // xorshift64
        let mut x = self.seed;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.seed = x;
        x
    }
}

/// How many sent video packets [`SentPackets`] keeps to make padding of: the last few
/// frames, all still in rtprtxsend's history (100 packets and more) when asked for again.
pub const PADDING_SOURCES: usize = 32;
/// What [`SentPackets::rate_bps`] measures over.
pub const SENT_RATE_WINDOW: Duration = Duration::from_millis(500);

/// One packet sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SentPacket {
    /// Its payload type.
    pub pt: u8,
    /// Its SSRC.
    pub ssrc: u32,
    /// Its sequence number.
    pub seq: u16,
    /// Its size, bytes.
    pub size: u32,
}

/// What the sender sent lately: its rate, and its last packets, the padding's sources.
#[derive(Debug, Default, Clone)]
pub struct SentPackets {
    /// Every packet of the last [`SENT_RATE_WINDOW`]: (when, size).
    window: VecDeque<(Instant, u32)>,
    /// The last [`PADDING_SOURCES`] packets.
    last: VecDeque<SentPacket>,
    /// Where the padding resumes in `last`, counting from the newest.
    cursor: usize,
    /// Bytes sent since the start.
    total_bytes: u64,
}

impl SentPackets {
    /// A packet went out at `now`.
    pub fn note(&mut self, packet: SentPacket, now: Instant) {
        self.total_bytes += u64::from(packet.size);
        self.window.push_back((now, packet.size));
        while self.window.front().is_some_and(|&(at, _)| now.duration_since(at) > SENT_RATE_WINDOW)
        {
            self.window.pop_front();
        }
        if self.last.len() == PADDING_SOURCES {
            self.last.pop_front();
        }
        self.last.push_back(packet);
    }

    /// Bytes sent since the start: the padding fills what the media leaves of a probe's
    /// rate, tick by tick.
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// What went out over the last [`SENT_RATE_WINDOW`], bit/s.
    pub fn rate_bps(&self, now: Instant) -> u32 {
        let bytes: u64 = self
            .window
            .iter()
            .filter(|(at, _)| now.duration_since(*at) <= SENT_RATE_WINDOW)
            .map(|&(_, size)| u64::from(size))
            .sum();
        (bytes * 8 * 1000 / SENT_RATE_WINDOW.as_millis() as u64) as u32
    }

    /// Packets to send again for `bytes` of padding, of the payload types `wanted` (those
    /// rtprtxsend keeps), newest first and round the last ones; none when there is none.
    pub fn padding(&mut self, bytes: u32, wanted: &[u8]) -> Vec<SentPacket> {
        let sources: Vec<SentPacket> =
            self.last.iter().rev().filter(|p| wanted.contains(&p.pt)).copied().collect();
        let mut picked = Vec::new();
        if sources.is_empty() {
            return picked;
        }
        let mut left = i64::from(bytes);
        while left > 0 {
            let packet = sources[self.cursor % sources.len()];
            self.cursor = (self.cursor + 1) % sources.len();
            left -= i64::from(packet.size.max(1));
            picked.push(packet);
        }
        picked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// A probe's packets as the feedback reports them: 25 sent 10 ms apart, media (96) and
    /// padding (97) in turn, 1000 bytes each, arriving `spacing_ms` apart.
    fn probe_packets(spacing_ms: u64) -> Vec<FeedbackPacket> {
        (0..25u64)
            .map(|i| FeedbackPacket {
                sent_ns: 1_000_000_000 + i * 10_000_000,
                arrived_ns: Some(7_000_000_000 + i * spacing_ms * 1_000_000),
                size: 1000,
                pt: if i % 2 == 0 { 97 } else { 96 },
            })
            .collect()
    }

    /// Reports every 100 ms from `from` for `span`, with queue `queue_ms`, at `estimate`:
    /// the actions that were not `None`, with when.
    fn reports(
        prober: &mut Prober,
        from: Instant,
        span: Duration,
        queue_ms: u32,
        estimate: u32,
    ) -> Vec<(Duration, ProbeAction)> {
        let mut actions = Vec::new();
        let mut at = Duration::ZERO;
        while at < span {
            let action = prober.note_report(queue_ms, false, estimate, from + at);
            if action != ProbeAction::None {
                actions.push((at, action));
            }
            at += 100 * MS;
        }
        actions
    }

    #[test]
    fn a_drained_queue_under_the_ceiling_is_probed_and_a_quiet_probe_passes() {
        let t0 = Instant::now();
        let mut prober = Prober::new(2_000_000, 7);
        let actions = reports(&mut prober, t0, 1100 * MS, 0, 300_000);
        // The first probe after a second of drained reports (at even odds per report), at
        // 1.5 times the estimate.
        let (at, ProbeAction::Start(probe)) = actions[0] else { panic!("{actions:?}") };
        assert!(at >= PROBE_DRAINED_FOR, "{actions:?}");
        assert_eq!(probe.rate_bps, 450_000);
        assert_eq!(prober.running(probe.id, t0 + at + 100 * MS), Some(450_000));
        assert_eq!(prober.running(probe.id, t0 + at + PROBE_DURATION), None);
        prober.note_packets(&probe_packets(10), &[97]);
        // Quiet reports through its padding and the settling after it: passed.
        let t1 = t0 + at + 100 * MS;
        let span = PROBE_DURATION + PROBE_SETTLE + 100 * MS;
        let actions = reports(&mut prober, t1, span, 0, 300_000);
        assert_eq!(actions[0].1, ProbeAction::Passed(450_000), "{actions:?}");
        assert!(actions[0].0 + 100 * MS >= PROBE_DURATION + PROBE_SETTLE, "{actions:?}");
        assert_eq!(prober.counts(), (1, 1));
        // The next one soon after, from the estimate the caller raised, at twice it.
        let t2 = t1 + span;
        let (at, probe) = (0..10u32)
            .find_map(|i| match prober.note_report(0, false, 450_000, t2 + 100 * MS * i) {
                ProbeAction::Start(probe) => Some((100 * MS * i, probe)),
                _ => None,
            })
            .expect("a chained probe");
        assert_eq!(probe.rate_bps, 900_000);
        assert!(at <= PROBE_CHAIN_GAP + 500 * MS, "{at:?}");
        // After a pass, a queue between probes (the link is full again): the next one is at
        // 1.5 times again.
        let mut queued = Prober::new(2_000_000, 7);
        queued.note_report(0, false, 300_000, t0);
        let actions = reports(&mut queued, t0, 1100 * MS, 0, 300_000);
        let (at, ProbeAction::Start(_)) = actions[0] else { panic!("{actions:?}") };
        queued.note_packets(&probe_packets(10), &[97]);
        let passed = reports(&mut queued, t0 + at + 100 * MS, span, 0, 300_000);
        assert_eq!(passed[0].1, ProbeAction::Passed(450_000), "{passed:?}");
        let t3 = t0 + at + 100 * MS + span;
        assert_eq!(queued.note_report(40, false, 450_000, t3), ProbeAction::None);
        let actions = reports(&mut queued, t3 + 100 * MS, 2000 * MS, 0, 450_000);
        assert!(
            matches!(actions[0], (_, ProbeAction::Start(p)) if p.rate_bps == 675_000),
            "{actions:?}"
        );
    }

    /// `bps` delivered, reported every 100 ms for `span` from `from`.
    fn delivered(prober: &mut Prober, from: Instant, span: Duration, bps: u32) {
        let mut at = Duration::ZERO;
        while at < span {
            prober.note_delivered(bps, from + at);
            at += 100 * MS;
        }
    }

    #[test]
    fn a_queue_fails_a_probe_and_the_next_waits_longer_each_time() {
        let t0 = Instant::now();
        let mut prober = Prober::new(2_000_000, 7);
        // The path carried 600 kbit/s before the estimate fell to 300.
        delivered(&mut prober, t0, 4100 * MS, 600_000);
        let mut now = t0 + 4100 * MS;
        let mut starts = Vec::new();
        let mut rates = Vec::new();
        for _ in 0..200 {
            match prober.note_report(0, false, 300_000, now) {
                ProbeAction::Start(probe) => {
                    starts.push(now);
                    rates.push(probe.rate_bps);
                    // The path holds no more: the next report shows the probe's queue.
                    now += 100 * MS;
                    assert_eq!(prober.note_report(35, false, 300_000, now), ProbeAction::Failed);
                }
                ProbeAction::Passed(rate) => panic!("passed at {rate}"),
                _ => {}
            }
            now += 100 * MS;
        }
        // The first asked for 450 kbit/s; each after a failure halfway to the last that
        // failed, at least 10 % over the estimate: 375, 337.5, then 330 each time.
        assert_eq!(rates[..4], [450_000, 375_000, 337_500, 330_000], "{rates:?}");
        let gaps: Vec<Duration> = starts.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.len() >= 3, "{gaps:?}");
        // Each wait at least the backoff (less a quarter) plus the drained second, growing
        // to the cap.
        assert!(gaps[0] >= PROBE_BACKOFF_MIN.mul_f64(0.75), "{gaps:?}");
        assert!(gaps[2] > gaps[0], "{gaps:?}");
        assert!(gaps.iter().all(|g| *g <= PROBE_BACKOFF_MAX.mul_f64(1.25) + 1200 * MS), "{gaps:?}");
    }

    /// A prober that started a probe from 300 kbit/s after drained reports, and when.
    fn started(seed: u64) -> (Prober, Instant, Probe) {
        let t0 = Instant::now();
        let mut prober = Prober::new(2_000_000, seed);
        let actions = reports(&mut prober, t0, 1100 * MS, 0, 300_000);
        let (at, ProbeAction::Start(probe)) = actions[0] else { panic!("{actions:?}") };
        (prober, t0 + at, probe)
    }

    /// What quiet reports after a probe's end say of it, given the feedback `packets`.
    fn verdict(seed: u64, packets: &[FeedbackPacket]) -> ProbeAction {
        let (mut prober, at, _) = started(seed);
        prober.note_packets(packets, &[97]);
        let actions = reports(&mut prober, at + 100 * MS, 500 * MS, 0, 300_000);
        actions.first().map_or(ProbeAction::None, |a| a.1)
    }

    #[test]
    fn a_probe_with_too_few_packets_reported_fails() {
        assert_eq!(verdict(5, &probe_packets(10)[..PROBE_MIN_PACKETS - 1]), ProbeAction::Failed);
        assert_eq!(verdict(5, &probe_packets(10)), ProbeAction::Passed(450_000));
    }

    #[test]
    fn a_probe_the_path_delivered_slower_than_sent_fails() {
        // Sent 10 ms apart, delivered 12 ms apart: the path carries 83 % of the rate, its
        // queue growing 2 ms a packet (under what the reports' least queue shows).
        assert_eq!(verdict(5, &probe_packets(12)), ProbeAction::Failed);
    }

    #[test]
    fn a_lossy_report_or_a_cut_fails_a_probe() {
        let (mut prober, at, probe) = started(3);
        assert_eq!(prober.note_report(0, true, 300_000, at + 100 * MS), ProbeAction::Failed);
        assert_eq!(prober.running(probe.id, at + 150 * MS), None);

        let (mut prober, at, probe) = started(3);
        assert!(prober.note_cut(at + 50 * MS));
        assert_eq!(prober.running(probe.id, at + 100 * MS), None);
    }

    #[test]
    fn no_probe_near_the_ceiling_or_over_a_queue() {
        let t0 = Instant::now();
        let mut prober = Prober::new(1_000_000, 1);
        assert!(reports(&mut prober, t0, 5000 * MS, 0, 950_000).is_empty());
        // A queue of 35 ms in every report: never drained.
        assert!(reports(&mut prober, t0, 5000 * MS, 35, 300_000).is_empty());
        // Near the ceiling the probe asks for the ceiling, not past it.
        let actions = reports(&mut prober, t0 + 5000 * MS, 1100 * MS, 0, 800_000);
        assert!(
            matches!(actions[0], (_, ProbeAction::Start(p)) if p.rate_bps == 1_000_000),
            "{actions:?}"
        );
    }

    /// Ends the start's ramp: drained reports at `estimate` until a probe starts, which the
    /// next report's queue fails. When it failed.
    fn fail_a_probe(prober: &mut Prober, from: Instant, estimate: u32) -> Instant {
        let (started, _) = next_probe(prober, from, estimate);
        let at = started + 100 * MS;
        assert_eq!(prober.note_report(35, false, estimate, at), ProbeAction::Failed);
        at
    }

    /// Drained reports at `estimate` from `from` until a probe starts: when, and the probe.
    fn next_probe(prober: &mut Prober, from: Instant, estimate: u32) -> (Instant, Probe) {
        let mut at = from;
        loop {
            if let ProbeAction::Start(probe) = prober.note_report(0, false, estimate, at) {
                return (at, probe);
            }
            at += 100 * MS;
            assert!(at < from + 60_000 * MS, "no probe within a minute");
        }
    }

    /// Drained reports at an estimate of 300 kbit/s from `at`: within 1.1 s a probe starts
    /// at 1.5 times it (the start's ramp, past anything delivered).
    fn assert_probes_past_the_estimate(prober: &mut Prober, at: Instant) {
        let actions = reports(prober, at, 1100 * MS, 0, 300_000);
        assert!(
            matches!(actions.first(), Some((_, ProbeAction::Start(p))) if p.rate_bps == 450_000),
            "{actions:?}"
        );
    }

    #[test]
    fn delivered_rates_expire_by_age_without_new_reports() {
        let t0 = Instant::now();
        let mut history = DeliveredHistory::default();
        for i in 0..=20u32 {
            history.note(600_000, t0 + 100 * MS * i);
        }
        let last = t0 + 2000 * MS;
        assert_eq!(history.best(last), 600_000);
        assert_eq!(history.best(last + PROBE_RECALL), 600_000);
        // No report since (no media): the window is still kept, but too old to recall.
        assert_eq!(history.best(last + PROBE_RECALL + MS), 0);
    }

    #[test]
    fn after_a_failed_probe_a_probe_only_recalls_a_rate_the_path_carried_after_a_large_drop() {
        // The start's ramp: probes past anything delivered yet.
        let t0 = Instant::now();
        let mut ramp = Prober::new(2_000_000, 7);
        delivered(&mut ramp, t0, 4100 * MS, 100_000);
        assert_probes_past_the_estimate(&mut ramp, t0 + 4100 * MS);

        // A cut alone does not end the ramp (an early queue on a link with room).
        let mut cut = Prober::new(2_000_000, 7);
        delivered(&mut cut, t0, 4100 * MS, 300_000);
        assert!(!cut.note_cut(t0 + 4100 * MS));
        assert_probes_past_the_estimate(&mut cut, t0 + 4100 * MS);

        // A full link (a peer's stream beside ours): the path carried 250 kbit/s, the
        // estimate is 212, and a probe failed. Drained reports for 20 s: no probe (each
        // would queue the peer's packets too).
        let mut full = Prober::new(2_000_000, 7);
        delivered(&mut full, t0, 4100 * MS, 250_000);
        let t1 = fail_a_probe(&mut full, t0 + 4100 * MS, 212_000);
        assert!(reports(&mut full, t1, 20_000 * MS, 0, 212_000).is_empty());

        // A large drop: the path carried 600 kbit/s, the estimate is 200 (under two thirds
        // of it): probes, and a chained one asks for what was carried, not past it.
        let mut dropped = Prober::new(2_000_000, 7);
        delivered(&mut dropped, t0, 4100 * MS, 600_000);
        let t1 = fail_a_probe(&mut dropped, t0 + 4100 * MS, 400_000);
        let (started, probe) = next_probe(&mut dropped, t1, 200_000);
        assert!(started < t1 + 5000 * MS);
        assert_eq!(probe.rate_bps, 300_000);
        dropped.note_packets(&probe_packets(10), &[97]);
        let t2 = started + 100 * MS;
        let span = PROBE_DURATION + PROBE_SETTLE + 100 * MS;
        let passed = reports(&mut dropped, t2, span, 0, 200_000);
        assert_eq!(passed[0].1, ProbeAction::Passed(300_000), "{passed:?}");
        // From 350 kbit/s the chained probe would ask for 700: it asks for the 600 carried.
        let chained = reports(&mut dropped, t2 + span, 1000 * MS, 0, 350_000);
        assert!(
            matches!(chained[0], (_, ProbeAction::Start(p)) if p.rate_bps == 600_000),
            "{chained:?}"
        );
        // Once the estimate is back over two thirds of it, no probe: the rest is the
        // estimator's increase.
        let mut back = Prober::new(2_000_000, 7);
        delivered(&mut back, t0, 4100 * MS, 600_000);
        let t1 = fail_a_probe(&mut back, t0 + 4100 * MS, 400_000);
        assert!(reports(&mut back, t1, 20_000 * MS, 0, 400_000).is_empty());
        // What was carried is forgotten after PROBE_RECALL: a minute later, no probe from 200.
        let mut old = Prober::new(2_000_000, 7);
        delivered(&mut old, t0, 4100 * MS, 600_000);
        let later = t0 + PROBE_RECALL + 10_000 * MS;
        delivered(&mut old, later - 4100 * MS, 4100 * MS, 200_000);
        let t1 = fail_a_probe(&mut old, later, 150_000);
        assert!(reports(&mut old, t1, 20_000 * MS, 0, 150_000).is_empty());
    }

    #[test]
    fn padding_resends_the_last_video_packets_for_the_bytes_asked() {
        let t0 = Instant::now();
        let mut sent = SentPackets::default();
        for seq in 0..60u16 {
            // Video (96) of 1000 bytes, and audio (111) of 100 between.
            sent.note(
                SentPacket { pt: 96, ssrc: 1, seq, size: 1000 },
                t0 + 10 * MS * u32::from(seq),
            );
            sent.note(
                SentPacket { pt: 111, ssrc: 2, seq, size: 100 },
                t0 + 10 * MS * u32::from(seq),
            );
        }
        // 500 ms of 1,100 bytes every 10 ms: 880 kbit/s.
        let rate = sent.rate_bps(t0 + 590 * MS);
        assert!((860_000..=900_000).contains(&rate), "{rate}");
        let picked = sent.padding(2500, &[96]);
        assert_eq!(picked.iter().map(|p| p.seq).collect::<Vec<_>>(), vec![59, 58, 57]);
        // The next padding goes on from there.
        assert_eq!(sent.padding(1000, &[96])[0].seq, 56);
        assert!(sent.padding(1000, &[97]).is_empty());
    }
}
