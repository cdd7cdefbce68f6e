//! `wilddog-stats`: webrtcbin's stats turned into the original's `local_stats` /
//! `remote_stats`, every [`crate::session::STATS_INTERVAL`] while a call has media, with what
//! a user needs to see what the network does (the congestion controller's estimate and
//! target, loss, NACKs, key frame requests, retransmissions). The same stats drive loss
//! recovery (`recovery_tick`) and the congestion controller's periodic step
//! (`congestion_tick`).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Instant;

use gst::prelude::*;
use gst::subclass::prelude::*;

use super::{WilddogCall, lock};

/// What one webrtcbin stats report says, summed over the streams of each direction.
#[derive(Debug, Default, Clone, PartialEq)]
pub(super) struct LinkStats {
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub packets_sent: u64,
    pub packets_received: u64,
    /// Round trip, ms (the longest of the streams', from RTCP).
    pub rtt_ms: u32,
    pub local_candidate_type: Option<String>,
    pub remote_candidate_type: Option<String>,
    /// What we receive: packets lost (the jitterbuffers gave up: not repaired in time),
    /// NACKs, PLIs and FIRs we sent, packets a retransmission repaired.
    pub packets_lost: i64,
    pub nack_sent: u64,
    pub pli_sent: u64,
    pub fir_sent: u64,
    pub packets_repaired: u64,
    /// What we send: packets the peer reports lost (its receiver reports' cumulative count
    /// for our video and audio, before repair), NACKs, PLIs and FIRs it sent us.
    pub remote_packets_lost: i64,
    pub nack_received: u64,
    pub pli_received: u64,
    pub fir_received: u64,
    /// Fraction of our audio / video packets the peer reports lost in its last report.
    pub audio_fraction_lost: f64,
    pub video_fraction_lost: f64,
}

/// What the previous report of the same webrtcbin said.
#[derive(Debug, Clone)]
pub(super) struct PreviousStats {
    pub at: Instant,
    pub link: LinkStats,
    pub local_frames: u64,
    pub remote_frames: u64,
}

/// The first frame each direction counted since the media began (a call's start, an ICE
/// restart's new webrtcbin): the first report, which has no earlier one to count from,
/// counts each direction's rates from there. It said 0 kbit/s and 0 fps (a newcomer read
/// that as a call without media); counted from the media's start instead, its rates included
/// the setup (8 fps of 15).
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct FirstFrames {
    pub local: Option<FirstFrame>,
    pub remote: Option<FirstFrame>,
}

/// See [`FirstFrames`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct FirstFrame {
    /// When it came.
    pub at: Instant,
    /// The direction's frame counter with it counted: the rate counts the frames after it
    /// over the time since.
    pub frames_at: u64,
}

/// A first report's rates need a direction's frames over this long at least (a window of one
/// frame says nothing of the rate): under it they are 0, as before the first frame.
pub(super) const FIRST_WINDOW_MIN: std::time::Duration = std::time::Duration::from_millis(500);

/// The rates of one direction in the first report of a webrtcbin, at `now`: its bytes (all of
/// this webrtcbin's) and frames (the counter) over the time since its first frame, as
/// (kbit/s, fps); 0 before [`FIRST_WINDOW_MIN`] of frames.
pub(super) fn first_rates(
    first: Option<FirstFrame>,
    bytes: u64,
    frames: u64,
    now: Instant,
) -> (u64, u32) {
    let Some(first) = first else { return (0, 0) };
    let window = now.saturating_duration_since(first.at);
    if window < FIRST_WINDOW_MIN {
        return (0, 0);
    }
    let secs = window.as_secs_f64();
    let kbps = (bytes as f64 * 8.0 / 1000.0 / secs) as u64;
    let fps = (frames.saturating_sub(first.frames_at) as f64 / secs).round() as u32;
    (kbps, fps)
}

/// A direction's frame rate over the window from the previous report (`prev_at`, its counter
/// then `prev_frames`) to `now`. A window in which the direction's first frame came counts
/// from that frame, as the first report does ([`first_rates`]): over the whole window it read
/// 8 fps of a 15 fps stream whose frames began half-way through it (a CI run).
pub(super) fn window_fps(
    prev_at: Instant,
    prev_frames: u64,
    first: Option<FirstFrame>,
    frames: u64,
    now: Instant,
) -> u32 {
    if let Some(first) = first.filter(|f| f.at > prev_at) {
        return first_rates(Some(first), 0, frames, now).1;
    }
    let secs = now.saturating_duration_since(prev_at).as_secs_f64().max(0.001);
    (frames.saturating_sub(prev_frames) as f64 / secs).round() as u32
}

/// A cumulative counter of webrtcbin's stats entries, summed into [`LinkStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Counter {
    BytesSent,
    PacketsSent,
    NackReceived,
    PliReceived,
    FirReceived,
    BytesReceived,
    PacketsReceived,
    PacketsLost,
    PacketsRepaired,
    NackSent,
    PliSent,
    FirSent,
    RemotePacketsLost,
}

impl Counter {
    const COUNT: usize = 13;
    const ALL: [Counter; Counter::COUNT] = [
        Counter::BytesSent,
        Counter::PacketsSent,
        Counter::NackReceived,
        Counter::PliReceived,
        Counter::FirReceived,
        Counter::BytesReceived,
        Counter::PacketsReceived,
        Counter::PacketsLost,
        Counter::PacketsRepaired,
        Counter::NackSent,
        Counter::PliSent,
        Counter::FirSent,
        Counter::RemotePacketsLost,
    ];

    fn index(self) -> usize {
        self as usize
    }

    /// Whether this counter going back means its stream started again from 0. Only the
    /// traffic counters say so: they are in every entry of their kind and move with every
    /// packet. A lost count goes back without a restart (a late packet, a duplicate in the
    /// receiver report's cumulative loss), and a jitterbuffer's counters are missing now and
    /// then (webrtcbin reads them only while it holds the jitterbuffer).
    fn marks_restart(self) -> bool {
        matches!(
            self,
            Counter::BytesSent
                | Counter::PacketsSent
                | Counter::BytesReceived
                | Counter::PacketsReceived
        )
    }
}

/// What one stats entry (one SSRC's outbound, inbound or remote-inbound stream) counted so
/// far, as one reply read it; `None` where the entry lacks the field.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct StreamReading {
    /// The entry's id in the reply (`rtp-outbound-stream-stats_<ssrc>`, ...).
    pub id: String,
    values: [Option<u64>; Counter::COUNT],
}

impl StreamReading {
    pub fn new(id: impl Into<String>) -> Self {
        StreamReading { id: id.into(), values: [None; Counter::COUNT] }
    }

    /// The reading with `counter` at `value` (nothing when `value` is `None`).
    pub fn with(mut self, counter: Counter, value: Option<u64>) -> Self {
        if value.is_some() {
            self.values[counter.index()] = value;
        }
        self
    }
}

/// The running sums of the counters, one per [`Counter`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct CounterSums([u64; Counter::COUNT]);

impl CounterSums {
    pub fn get(&self, counter: Counter) -> u64 {
        self.0[counter.index()]
    }
}

/// What [`CounterTotals`] remembers of one stream.
#[derive(Debug, Clone)]
struct StreamMemory {
    last: [Option<u64>; Counter::COUNT],
    /// The report ([`CounterTotals::reports`]) that last had this stream.
    seen_in: u64,
}

/// Counters that never go back, summed from per-stream deltas.
///
/// The sums over a reply's streams go back whenever a stream leaves the reply: webrtcbin
/// drops our video's entry once its sender was idle for 5 s or more (an echo bot with
/// nothing to echo; see [`CounterTotals::fill_missing`]), and a stream ended or replaced by
/// a new SSRC leaves for good, or starts again from 0 under the same id (a new source for
/// that SSRC). Holding a total at the highest sum seen then hid all that was sent until the
/// sum passed the old one: an echo bot's `bitSentRate` read 0 for the last 12 s of a call
/// in which it sent video at 13-14 fps (`bytesSent` stuck at 259,749 while `packetsSent`
/// grew: the small packets of the streams left passed their old sum first). Here each
/// stream's delta counts: a stream whose traffic counter went back counts its new values,
/// one missing from a reply counts nothing (and its next reading counts from where it was),
/// so the totals still never go back.
#[derive(Debug, Clone, Default)]
pub(super) struct CounterTotals {
    streams: HashMap<String, StreamMemory>,
    sums: CounterSums,
    reports: u64,
}

impl CounterTotals {
    /// Streams remembered at most: a peer changing SSRCs without end (each remote stream is
    /// an entry) does not grow this without bound. The ones unseen longest are forgotten; one
    /// coming back after that counts again from 0, which a real call never gets near.
    const MAX_STREAMS: usize = 64;

    /// Adds to `readings` the `fallback` reading of each stream an earlier reply had and this
    /// one lacks: webrtcbin leaves a stream out of `get-stats` once rtpsession timed its
    /// sender out (2 RTCP intervals, at least 5 s, without a packet: an echo bot's video with
    /// nothing to echo), and does not bring it back when the stream sends again, while the
    /// session's source keeps counting from where it was (GStreamer 1.22; see
    /// [`session_readings`]). Without this the stream's traffic never counted again.
    /// Streams never seen in a reply are left out (the RTX stream's, the session's own
    /// RTCP-only source): the totals keep meaning what webrtcbin reports.
    pub fn fill_missing(&self, readings: &mut Vec<StreamReading>, fallback: Vec<StreamReading>) {
        for reading in fallback {
            if self.streams.contains_key(&reading.id)
                && !readings.iter().any(|r| r.id == reading.id)
            {
                readings.push(reading);
            }
        }
    }

    /// Adds one reply's readings; returns the totals so far.
    pub fn advance(&mut self, readings: impl IntoIterator<Item = StreamReading>) -> CounterSums {
        self.reports += 1;
        for reading in readings {
            let memory = self
                .streams
                .entry(reading.id)
                .or_insert(StreamMemory { last: [None; Counter::COUNT], seen_in: 0 });
            memory.seen_in = self.reports;
            let restarted = Counter::ALL.iter().any(|c| {
                let i = c.index();
                c.marks_restart()
                    && matches!((reading.values[i], memory.last[i]), (Some(now), Some(before)) if now < before)
            });
            for c in Counter::ALL {
                let i = c.index();
                let Some(now) = reading.values[i] else {
                    // The new source's count starts from 0 when it turns up.
                    if restarted {
                        memory.last[i] = None;
                    }
                    continue;
                };
                let (delta, last) = match memory.last[i] {
                    Some(before) if !restarted => (now.saturating_sub(before), now.max(before)),
                    _ => (now, now),
                };
                memory.last[i] = Some(last);
                self.sums.0[i] = self.sums.0[i].saturating_add(delta);
            }
        }
        while self.streams.len() > Self::MAX_STREAMS {
            let oldest =
                self.streams.iter().min_by_key(|(_, m)| m.seen_in).map(|(id, _)| id.clone());
            match oldest {
                Some(id) => self.streams.remove(&id),
                None => break,
            };
        }
        self.sums
    }
}

impl StreamReading {
    /// Reads one source of an RTP session's `source-stats` as webrtcbin would report it (the
    /// same fields, under the id webrtcbin gives the stream).
    pub fn from_session_source(s: &gst::StructureRef) -> Option<StreamReading> {
        let ssrc = s.get::<u32>("ssrc").ok()?;
        let big = |field: &str| s.get::<u64>(field).ok();
        let count = |field: &str| s.get::<u32>(field).ok().map(u64::from);
        Some(if s.get::<bool>("internal").ok()? {
            StreamReading::new(format!("rtp-outbound-stream-stats_{ssrc}"))
                .with(Counter::BytesSent, big("octets-sent"))
                .with(Counter::PacketsSent, big("packets-sent"))
                .with(Counter::NackReceived, count("recv-nack-count"))
                .with(Counter::PliReceived, count("recv-pli-count"))
                .with(Counter::FirReceived, count("recv-fir-count"))
        } else {
            StreamReading::new(format!("rtp-inbound-stream-stats_{ssrc}"))
                .with(Counter::BytesReceived, big("octets-received"))
                .with(Counter::PacketsReceived, big("packets-received"))
                .with(Counter::NackSent, count("sent-nack-count"))
                .with(Counter::PliSent, count("sent-pli-count"))
                .with(Counter::FirSent, count("sent-fir-count"))
        })
    }
}

/// The streams of `webrtcbin`'s RTP sessions, read from the sessions (see
/// [`CounterTotals::fill_missing`]); empty when its rtpbin or sessions cannot be read.
fn session_readings(webrtcbin: &gst::Element) -> Vec<StreamReading> {
    /// Session ids tried: one per media section without bundling, 0 with it.
    const MAX_SESSIONS: u32 = 8;
    let Some(rtpbin) = super::peer::rtpbin_of(webrtcbin) else { return Vec::new() };
    let mut readings = Vec::new();
    for id in 0..MAX_SESSIONS {
        let Some(session) = rtpbin.emit_by_name::<Option<glib::Object>>("get-session", &[&id])
        else {
            continue;
        };
        if session.find_property("stats").is_none() {
            continue;
        }
        let Ok(stats) = session.property_value("stats").get::<gst::Structure>() else { continue };
        let Ok(sources) = stats.get::<glib::ValueArray>("source-stats") else { continue };
        readings.extend(
            sources
                .iter()
                .filter_map(|v| v.get::<gst::Structure>().ok())
                .filter_map(|s| StreamReading::from_session_source(&s)),
        );
    }
    readings
}

impl LinkStats {
    /// Sets the cumulative counters to `sums` ([`CounterTotals::advance`]).
    pub fn set_counters(&mut self, sums: &CounterSums) {
        let lost = |c| i64::try_from(sums.get(c)).unwrap_or(i64::MAX);
        self.bytes_sent = sums.get(Counter::BytesSent);
        self.packets_sent = sums.get(Counter::PacketsSent);
        self.nack_received = sums.get(Counter::NackReceived);
        self.pli_received = sums.get(Counter::PliReceived);
        self.fir_received = sums.get(Counter::FirReceived);
        self.bytes_received = sums.get(Counter::BytesReceived);
        self.packets_received = sums.get(Counter::PacketsReceived);
        self.packets_lost = lost(Counter::PacketsLost);
        self.packets_repaired = sums.get(Counter::PacketsRepaired);
        self.nack_sent = sums.get(Counter::NackSent);
        self.pli_sent = sums.get(Counter::PliSent);
        self.fir_sent = sums.get(Counter::FirSent);
        self.remote_packets_lost = lost(Counter::RemotePacketsLost);
    }

    /// Reads a reply of webrtcbin's `get-stats`: what is not a counter, and each stream's
    /// counters (for [`CounterTotals`]; the counters of the returned [`LinkStats`] are 0).
    /// Not its loss and repair counts, which are the wrong streams' (see
    /// `WilddogCall::jitterbuffer_readings` and `WilddogCall::report_block_readings`).
    pub fn parse(reply: &gst::StructureRef) -> (LinkStats, Vec<StreamReading>) {
        use gst_webrtc::WebRTCStatsType as T;
        let mut l = LinkStats::default();
        let mut readings = Vec::new();
        let big = |s: &gst::Structure, field: &str| s.get::<u64>(field).ok();
        let count = |s: &gst::Structure, field: &str| s.get::<u32>(field).ok().map(u64::from);
        for (id, value) in reply.iter() {
            let Ok(s) = value.get::<gst::Structure>() else { continue };
            let reading = StreamReading::new(id.as_str());
            match s.get::<T>("type") {
                Ok(T::OutboundRtp) => readings.push(
                    reading
                        .with(Counter::BytesSent, big(&s, "bytes-sent"))
                        .with(Counter::PacketsSent, big(&s, "packets-sent"))
                        .with(Counter::NackReceived, count(&s, "nack-count"))
                        .with(Counter::PliReceived, count(&s, "pli-count"))
                        .with(Counter::FirReceived, count(&s, "fir-count")),
                ),
                Ok(T::InboundRtp) => readings.push(
                    reading
                        .with(Counter::BytesReceived, big(&s, "bytes-received"))
                        .with(Counter::PacketsReceived, big(&s, "packets-received"))
                        .with(Counter::NackSent, count(&s, "nack-count"))
                        .with(Counter::PliSent, count(&s, "pli-count"))
                        .with(Counter::FirSent, count(&s, "fir-count")),
                ),
                Ok(T::RemoteInboundRtp) => {
                    // A measured round trip under half a millisecond (a loopback) is 1 ms,
                    // not 0, which says none was measured: congestion control ignores 0,
                    // and a cap it put on a standing queue would then never lift.
                    if let Ok(rtt) = s.get::<f64>("round-trip-time")
                        && rtt > 0.0
                    {
                        l.rtt_ms = l.rtt_ms.max(((rtt * 1000.0).round() as u32).max(1));
                    }
                    let lost = s.get::<f64>("fraction-lost").unwrap_or(0.0);
                    match s.get::<&str>("kind") {
                        Ok("audio") => l.audio_fraction_lost = l.audio_fraction_lost.max(lost),
                        Ok("video") => l.video_fraction_lost = l.video_fraction_lost.max(lost),
                        _ => {}
                    }
                }
                Ok(T::LocalCandidate) => {
                    l.local_candidate_type =
                        s.get::<String>("candidate-type").ok().or(l.local_candidate_type)
                }
                Ok(T::RemoteCandidate) => {
                    l.remote_candidate_type =
                        s.get::<String>("candidate-type").ok().or(l.remote_candidate_type)
                }
                _ => {}
            }
        }
        (l, readings)
    }
}

impl WilddogCall {
    pub(super) fn request_stats(&self) {
        let Some(webrtcbin) = self.webrtcbin() else { return };
        let weak = self.obj().downgrade();
        let weak_webrtcbin = webrtcbin.downgrade();
        let promise = gst::Promise::with_change_func(move |reply| {
            if let (Some(obj), Ok(Some(reply))) = (weak.upgrade(), reply) {
                obj.imp().report_stats(reply, weak_webrtcbin.upgrade().as_ref());
            }
        });
        webrtcbin.emit_by_name::<()>("get-stats", &[&None::<gst::Pad>, &promise]);
    }

    /// Turns webrtcbin's stats (`reply`, from `webrtcbin`) into the original's `local_stats` /
    /// `remote_stats`.
    pub(super) fn report_stats(&self, reply: &gst::StructureRef, webrtcbin: Option<&gst::Element>) {
        let (mut l, mut readings) = LinkStats::parse(reply);
        readings.extend(self.jitterbuffer_readings());
        readings.extend(self.report_block_readings(&self.media_ssrcs()));
        let fallback = webrtcbin.map(session_readings).unwrap_or_default();
        let sums = {
            let mut st = lock(&self.state);
            st.counter_totals.fill_missing(&mut readings, fallback);
            st.counter_totals.advance(readings)
        };
        l.set_counters(&sums);
        self.recovery_tick(&l);
        self.congestion_tick(l.rtt_ms);
        let c = &self.counters;
        let local_frames = c.local_frames.load(Ordering::Relaxed);
        let remote_frames = c.remote_frames.load(Ordering::Relaxed);
        let now = Instant::now();
        let prev = lock(&self.state).prev_stats.replace(PreviousStats {
            at: now,
            link: l.clone(),
            local_frames,
            remote_frames,
        });
        let (sent_kbps, recv_kbps, local_fps, remote_fps) = match prev {
            Some(p) => {
                let secs = now.duration_since(p.at).as_secs_f64().max(0.001);
                let kbps = |now: u64, before: u64| {
                    (now.saturating_sub(before) as f64 * 8.0 / 1000.0 / secs) as u64
                };
                let first = *lock(&c.first_frames);
                (
                    kbps(l.bytes_sent, p.link.bytes_sent),
                    kbps(l.bytes_received, p.link.bytes_received),
                    window_fps(p.at, p.local_frames, first.local, local_frames, now),
                    window_fps(p.at, p.remote_frames, first.remote, remote_frames, now),
                )
            }
            None => {
                let first = *lock(&c.first_frames);
                let (sent_kbps, local_fps) =
                    first_rates(first.local, l.bytes_sent, local_frames, now);
                let (recv_kbps, remote_fps) =
                    first_rates(first.remote, l.bytes_received, remote_frames, now);
                (sent_kbps, recv_kbps, local_fps, remote_fps)
            }
        };
        let max_bitrate = lock(&self.state).validated.as_ref().map(|v| v.video.bitrate_kbps);
        let (estimated_kbps, target_kbps) = match self.congestion_stats() {
            Some(cc) => cc,
            None => (0, max_bitrate.unwrap_or(0)),
        };
        let (retransmitted, jitterbuffer_ms, retransmission_rtt_ms) = self.recovery_stats();
        let (probes, probes_passed) = self.probe_stats();
        let video_encoder = lock(&self.state).video_in.as_ref().and_then(|v| v.encoder.clone());
        let (encoder_speed, encode_usage) = video_encoder
            .as_ref()
            .and_then(crate::cpu_adaptation::encoder_load)
            .unwrap_or((None, 0));
        let local = gst::Structure::builder("local")
            .field("bytesSent", l.bytes_sent)
            .field("bitSentRate", sent_kbps)
            .field("fps", local_fps)
            .field("width", c.local_width.load(Ordering::Relaxed))
            .field("height", c.local_height.load(Ordering::Relaxed))
            .field("candidateType", l.local_candidate_type.unwrap_or_else(|| "unknown".into()))
            .field("targetBitrate", target_kbps)
            .field("estimatedBitrate", estimated_kbps)
            .field("packetsSent", l.packets_sent)
            .field("packetsLost", l.remote_packets_lost)
            .field("nackReceived", l.nack_received)
            .field("pliReceived", l.pli_received)
            .field("firReceived", l.fir_received)
            .field("retransmitted", retransmitted)
            .field("probes", probes)
            .field("probesPassed", probes_passed)
            .field("encodeUsage", encode_usage)
            .field_if_some("encoderSpeed", encoder_speed)
            .build();
        let remote = gst::Structure::builder("remote")
            .field("bytesReceived", l.bytes_received)
            .field("bitReceivedRate", recv_kbps)
            .field("fps", remote_fps)
            .field("delay", u64::from(l.rtt_ms))
            .field("width", c.remote_width.load(Ordering::Relaxed))
            .field("height", c.remote_height.load(Ordering::Relaxed))
            .field("candidateType", l.remote_candidate_type.unwrap_or_else(|| "unknown".into()))
            .field("packetsReceived", l.packets_received)
            .field("packetsLost", l.packets_lost)
            .field("packetsRepaired", l.packets_repaired)
            .field("nackSent", l.nack_sent)
            .field("pliSent", l.pli_sent)
            .field("firSent", l.fir_sent)
            .field("jitterBufferLatency", jitterbuffer_ms)
            .field("retransmissionRtt", retransmission_rtt_ms)
            .build();
        let s = gst::Structure::builder("wilddog-stats")
            .field("local", local)
            .field("remote", remote)
            .build();
        lock(&self.state).last_stats = Some(s.clone());
        self.raise("wilddog-stats", s.clone(), &[&s]);
    }

    /// The SSRCs of the video and audio we send (their payloaders').
    fn media_ssrcs(&self) -> Vec<u32> {
        let payloaders = self.payloaders();
        payloaders.iter().filter_map(crate::media::payloader_ssrc).collect()
    }

    /// The last stats structure.
    pub fn last_stats(&self) -> Option<gst::Structure> {
        lock(&self.state).last_stats.clone()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::{
        Counter, CounterTotals, FIRST_WINDOW_MIN, FirstFrame, LinkStats, StreamReading,
        first_rates, window_fps,
    };

    /// A `get-stats` reply with one `remote-inbound-rtp` entry per round trip given (s).
    fn reply_with_round_trips(round_trips: &[f64]) -> gst::Structure {
        let mut reply = gst::Structure::new_empty("application/x-webrtc-stats");
        for (i, rtt) in round_trips.iter().enumerate() {
            let entry = gst::Structure::builder("application/x-webrtc-stats")
                .field("type", gst_webrtc::WebRTCStatsType::RemoteInboundRtp)
                .field("round-trip-time", *rtt)
                .field("kind", "video")
                .build();
            reply.set(format!("rtp-remote-inbound-stream-stats_{i}"), entry);
        }
        reply
    }

    /// A loopback's round trip (well under a millisecond) reads 1 ms, not 0, which means
    /// "none measured" to congestion control: its cap on a standing queue would never lift.
    #[test]
    fn a_round_trip_under_half_a_millisecond_reads_one_not_none() {
        gst::init().unwrap();
        let (loopback, _) = LinkStats::parse(&reply_with_round_trips(&[0.0002]));
        assert_eq!(loopback.rtt_ms, 1);
        // None measured yet (RTCP's 0) stays none; the longest of the streams' counts.
        let (none, _) = LinkStats::parse(&reply_with_round_trips(&[0.0]));
        assert_eq!(none.rtt_ms, 0);
        let (longest, _) = LinkStats::parse(&reply_with_round_trips(&[0.0002, 0.0424]));
        assert_eq!(longest.rtt_ms, 42);
    }

    #[test]
    fn a_window_in_which_frames_began_counts_from_the_first_frame() {
        let t0 = Instant::now();
        let report = t0 + Duration::from_secs(2);
        // No frame at the previous report (t0); the first came 1.4 s into the 2 s window and
        // 9 more followed: 15 fps, not the 5 of ten frames over the whole window.
        let first = FirstFrame { at: t0 + Duration::from_millis(1400), frames_at: 1 };
        assert_eq!(window_fps(t0, 0, Some(first), 10, report), 15);
        // Under half a second of frames: no rate rather than a wrong one.
        let late = FirstFrame { at: t0 + Duration::from_millis(1700), frames_at: 1 };
        assert_eq!(window_fps(t0, 0, Some(late), 5, report), 0);
        // Frames that began before the window: the frames over the whole window.
        let earlier = FirstFrame { at: t0 - Duration::from_secs(3), frames_at: 1 };
        assert_eq!(window_fps(t0, 40, Some(earlier), 70, report), 15);
    }

    #[test]
    fn the_first_report_counts_each_direction_from_its_first_frame() {
        let t0 = Instant::now();
        // Frames began 1.5 s into the media (its setup), the 101st of the counter (100 were
        // counted in an earlier call): 2 s later, 30 more frames and 125,000 bytes are 15 fps
        // and 500 kbit/s.
        let first = FirstFrame { at: t0 + Duration::from_millis(1500), frames_at: 101 };
        let now = first.at + Duration::from_secs(2);
        assert_eq!(first_rates(Some(first), 125_000, 131, now), (500, 15));
        // Nothing yet, or a single frame's worth: no rate rather than a wrong one.
        assert_eq!(first_rates(None, 125_000, 130, now), (0, 0));
        let early = first.at + FIRST_WINDOW_MIN - Duration::from_millis(1);
        assert_eq!(first_rates(Some(first), 4_000, 101, early), (0, 0));
    }

    const VIDEO_OUT: &str = "rtp-outbound-stream-stats_1111";
    const AUDIO_OUT: &str = "rtp-outbound-stream-stats_2222";

    fn sent(id: &str, bytes: u64, packets: u64) -> StreamReading {
        StreamReading::new(id)
            .with(Counter::BytesSent, Some(bytes))
            .with(Counter::PacketsSent, Some(packets))
    }

    /// Bytes sent since the previous report, as the rate is computed from the totals.
    fn bytes_sent_delta(totals: &mut CounterTotals, readings: Vec<StreamReading>) -> u64 {
        let before = totals.sums.get(Counter::BytesSent);
        totals.advance(readings).get(Counter::BytesSent) - before
    }

    /// The rule this replaced: the sum over the streams, held at the highest sum seen.
    fn held_at_max(previous: u64, readings: &[StreamReading]) -> u64 {
        let i = Counter::BytesSent.index();
        readings.iter().filter_map(|r| r.values[i]).sum::<u64>().max(previous)
    }

    #[test]
    fn plain_growth_counts_the_differences() {
        let mut t = CounterTotals::default();
        assert_eq!(
            bytes_sent_delta(&mut t, vec![sent(VIDEO_OUT, 1000, 2), sent(AUDIO_OUT, 100, 1)]),
            1100
        );
        assert_eq!(
            bytes_sent_delta(&mut t, vec![sent(VIDEO_OUT, 4000, 8), sent(AUDIO_OUT, 300, 3)]),
            3200
        );
        let sums = t.advance(vec![sent(VIDEO_OUT, 9000, 20), sent(AUDIO_OUT, 600, 6)]);
        assert_eq!(sums.get(Counter::BytesSent), 9600);
        assert_eq!(sums.get(Counter::PacketsSent), 26);
    }

    #[test]
    fn a_stream_starting_again_from_0_still_has_a_rate() {
        // What an echo bot showed: its video idle for 6 s, then a new source with the same
        // SSRC counting from 0 (its entry missing while idle).
        let mut t = CounterTotals::default();
        t.advance(vec![sent(VIDEO_OUT, 259_749, 508)]);
        assert_eq!(bytes_sent_delta(&mut t, vec![]), 0);
        let resumed = vec![sent(VIDEO_OUT, 20_000, 40)];
        // The old rule held 259,749 until the new count passed it: no rate at all.
        assert_eq!(held_at_max(259_749, &resumed), 259_749);
        assert_eq!(bytes_sent_delta(&mut t, resumed), 20_000);
        assert_eq!(bytes_sent_delta(&mut t, vec![sent(VIDEO_OUT, 50_000, 100)]), 30_000);
        let sums = t.advance(vec![sent(VIDEO_OUT, 60_000, 120)]);
        assert_eq!(sums.get(Counter::BytesSent), 259_749 + 60_000);
        assert_eq!(sums.get(Counter::PacketsSent), 508 + 120);
    }

    #[test]
    fn a_stream_replaced_by_a_new_ssrc_counts_from_its_start() {
        let mut t = CounterTotals::default();
        t.advance(vec![sent(VIDEO_OUT, 100_000, 200)]);
        let replaced = vec![sent("rtp-outbound-stream-stats_3333", 5_000, 10)];
        assert_eq!(held_at_max(100_000, &replaced), 100_000);
        assert_eq!(bytes_sent_delta(&mut t, replaced), 5_000);
        assert_eq!(
            bytes_sent_delta(&mut t, vec![sent("rtp-outbound-stream-stats_3333", 9_000, 18)]),
            4_000
        );
    }

    #[test]
    fn one_of_two_streams_going_back_counts_its_new_value() {
        let mut t = CounterTotals::default();
        t.advance(vec![sent(AUDIO_OUT, 10_000, 100), sent(VIDEO_OUT, 50_000, 100)]);
        let now = vec![sent(AUDIO_OUT, 12_000, 120), sent(VIDEO_OUT, 3_000, 6)];
        // The sum (15,000) is below the old one (60,000): the old rule saw nothing sent.
        assert_eq!(held_at_max(60_000, &now), 60_000);
        assert_eq!(bytes_sent_delta(&mut t, now), 2_000 + 3_000);
    }

    #[test]
    fn a_reply_without_a_stream_neither_loses_nor_counts_it_twice() {
        let mut t = CounterTotals::default();
        let nacks = |id: &str, bytes, n| sent(id, bytes, 1).with(Counter::NackReceived, Some(n));
        t.advance(vec![nacks(VIDEO_OUT, 1000, 43), sent(AUDIO_OUT, 500, 5)]);
        // A reply without the video stream's outbound entry.
        let sums = t.advance(vec![sent(AUDIO_OUT, 700, 7)]);
        assert_eq!(sums.get(Counter::BytesSent), 1700);
        assert_eq!(sums.get(Counter::NackReceived), 43);
        // Back again: only what it counted meanwhile is new.
        let sums = t.advance(vec![nacks(VIDEO_OUT, 1500, 44), sent(AUDIO_OUT, 800, 8)]);
        assert_eq!(sums.get(Counter::BytesSent), 2300);
        assert_eq!(sums.get(Counter::NackReceived), 44);
    }

    #[test]
    fn a_restart_counts_every_counter_of_the_stream_anew() {
        let mut t = CounterTotals::default();
        let out = |bytes, nacks| sent(VIDEO_OUT, bytes, 1).with(Counter::NackReceived, Some(nacks));
        t.advance(vec![out(10_000, 7)]);
        let sums = t.advance(vec![out(2_000, 2)]);
        assert_eq!(sums.get(Counter::BytesSent), 12_000);
        assert_eq!(sums.get(Counter::NackReceived), 9);
    }

    #[test]
    fn a_lost_count_going_back_is_not_a_restart() {
        // The receiver report's cumulative loss goes down when a late packet arrives.
        let mut t = CounterTotals::default();
        let report = |lost| {
            StreamReading::new("rtp-remote-inbound-stream-stats_1111")
                .with(Counter::RemotePacketsLost, Some(lost))
        };
        t.advance(vec![report(10)]);
        assert_eq!(t.advance(vec![report(9)]).get(Counter::RemotePacketsLost), 10);
        assert_eq!(t.advance(vec![report(12)]).get(Counter::RemotePacketsLost), 12);
    }

    #[test]
    fn a_missing_field_is_not_a_restart() {
        // webrtcbin reads the jitterbuffer's counters only while it holds the jitterbuffer.
        let mut t = CounterTotals::default();
        let inbound = |bytes, repaired| {
            StreamReading::new("rtp-inbound-stream-stats_4444")
                .with(Counter::BytesReceived, Some(bytes))
                .with(Counter::PacketsRepaired, repaired)
        };
        t.advance(vec![inbound(1000, Some(5))]);
        let sums = t.advance(vec![inbound(1500, None)]);
        assert_eq!(sums.get(Counter::BytesReceived), 1500);
        assert_eq!(sums.get(Counter::PacketsRepaired), 5);
        let sums = t.advance(vec![inbound(2000, Some(6))]);
        assert_eq!(sums.get(Counter::BytesReceived), 2000);
        assert_eq!(sums.get(Counter::PacketsRepaired), 6);
    }

    #[test]
    fn a_stream_webrtcbin_dropped_counts_from_its_session() {
        // webrtcbin no longer reports the video after its sender timed out; the session's
        // source goes on counting from where it was.
        let mut t = CounterTotals::default();
        t.advance(vec![sent(AUDIO_OUT, 10_000, 100), sent(VIDEO_OUT, 259_749, 508)]);
        let session = || {
            vec![
                sent(AUDIO_OUT, 99_999, 999),
                sent(VIDEO_OUT, 279_749, 548),
                sent("rtp-outbound-stream-stats_5555", 7_000, 70),
            ]
        };
        let mut readings = vec![sent(AUDIO_OUT, 12_000, 120)];
        t.fill_missing(&mut readings, session());
        // The reply's own reading stays; a stream never reported (RTX) stays out.
        assert_eq!(readings, vec![sent(AUDIO_OUT, 12_000, 120), sent(VIDEO_OUT, 279_749, 548)]);
        assert_eq!(bytes_sent_delta(&mut t, readings), 2_000 + 20_000);
        // Without the session (its webrtcbin gone): nothing, and nothing lost.
        let mut readings = vec![sent(AUDIO_OUT, 13_000, 130)];
        t.fill_missing(&mut readings, vec![]);
        assert_eq!(bytes_sent_delta(&mut t, readings), 1_000);
    }

    #[test]
    fn streams_remembered_are_bounded() {
        let mut t = CounterTotals::default();
        for ssrc in 0..1000u32 {
            t.advance(vec![sent(&format!("rtp-inbound-stream-stats_{ssrc}"), 10, 1)]);
        }
        assert_eq!(t.streams.len(), CounterTotals::MAX_STREAMS);
        assert_eq!(t.sums.get(Counter::BytesSent), 10_000);
        // The latest stays remembered: no double count.
        let sums = t.advance(vec![sent("rtp-inbound-stream-stats_999", 15, 2)]);
        assert_eq!(sums.get(Counter::BytesSent), 10_005);
    }
}
