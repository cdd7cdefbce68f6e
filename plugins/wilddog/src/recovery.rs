//! Loss recovery of a call: the choices that are plain arithmetic (how long the jitterbuffer
//! waits for a retransmission, how much redundancy Opus and ULPFEC carry for a measured loss),
//! tested without GStreamer. The wiring into webrtcbin is in `wilddogcall/imp/recovery.rs`.
//!
//! What a call does about lost packets, both ways:
//! - video: NACK and RTX retransmission (webrtcbin's transceiver `do-nack`: the SDP offers an
//!   `rtx` payload type with `a=rtcp-fb:… nack`, rtprtxsend keeps the last 500 packets, the
//!   jitterbuffers ask for what is missing); key frame requests (PLI, and FIR for peers that
//!   ask with it) when a frame is lost anyway or the decoder reports an error
//!   (`crate::media::configure_loss_recovery`), answered by the encoder at once; optionally
//!   ULPFEC in RED (`fec`).
//! - audio: Opus in-band FEC, sized to the loss the transport-wide feedback reports, and packet loss
//!   concealment; no retransmission (a late audio packet is worth nothing).
//!
//! The jitterbuffer's `latency` is the longest it waits for a missing packet before it
//! declares it lost; packets in order go out at once whatever it is. On a clean link it
//! stays at the element's `latency` (30 ms by default), which keeps glass-to-glass where it
//! was. From the receiver's first retransmission request, a retransmission must be able to
//! arrive: the video jitterbuffers' wait becomes [`retransmission_wait_ms`] of the measured
//! round trip (the RTCP one, or what retransmissions took, whichever is longer: two of them
//! and a margin, so that a lost retransmission is asked for once more), and falls back to
//! `latency` after [`LOSS_MEMORY`] without loss. Audio keeps `latency`: it is not retransmitted.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use gst::glib;

/// Forward error correction of the sent video (`fec`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, glib::Enum, Default)]
#[repr(i32)]
#[enum_type(name = "GstWilddogFec")]
pub enum Fec {
    /// None: lost video is retransmitted (NACK/RTX) or refreshed by a key frame.
    #[default]
    #[enum_value(name = "No video FEC", nick = "none")]
    None = 0,
    /// ULPFEC (RFC 5109) in RED (RFC 2198), as Chrome does: repairs a loss without a round
    /// trip, for redundancy that grows with the loss the transport-wide feedback reports.
    #[enum_value(name = "ULPFEC in RED", nick = "ulpfec-red")]
    UlpfecRed = 1,
}

/// The shortest interval between the regular RTCP packets of a call's RTP session, ns
/// (rtpsession's `rtcp-min-interval`, RFC 4585's T_rr_interval): 100 ms.
///
/// The feedback that loss recovery and congestion control live on rides on RTCP: NACKs,
/// PLIs and the transport-wide congestion control reports. rtpsession's default, at least
/// 5 s between regular packets, allows an early feedback packet only once per regular
/// interval, so feedback waited seconds: on a link capped at 250 kbit/s the estimate took
/// 8 s to fall and the picture froze for 12 s, and retransmissions often came too late.
/// (Raising the RTCP bandwidth too, with an absolute `rtcp-fraction`, was tried: PLIs then
/// stopped going out at all in GStreamer 1.22.)
pub const RTCP_MIN_INTERVAL_NS: u64 = 100_000_000;

/// The same interval for a call whose peer sends us no media (a receive-only caller of a
/// camera, a bot or a broadcast): 1 s, Chrome's interval for video sender reports.
///
/// Such a session has no feedback of its own to send (NACKs, key frame requests and the
/// transport-wide reports are about media received), only sender reports: the peer's lip
/// sync and round trip need one a second, not ten. At 100 ms the RTCP thread of a serving
/// process was 3 % of a core with 12 receive-only callers (`call-bench --density`, 480p
/// one way), under 1 % at 1 s. The peer's own RTCP (its feedback) keeps its interval.
pub const SEND_ONLY_RTCP_MIN_INTERVAL_NS: u64 = 1_000_000_000;

/// The `rtcp-min-interval` of a call's RTP session: [`RTCP_MIN_INTERVAL_NS`], or
/// [`SEND_ONLY_RTCP_MIN_INTERVAL_NS`] when the peer sends no media.
pub fn rtcp_min_interval_ns(peer_sends_media: bool) -> u64 {
    if peer_sends_media { RTCP_MIN_INTERVAL_NS } else { SEND_ONLY_RTCP_MIN_INTERVAL_NS }
}

/// How many times the estimate the RTCP of a call is sized for (rtpsession's `bandwidth`,
/// of which RTCP may take 5 %).
///
/// rtpsession sends an early RTCP packet (RFC 4585), which is how a NACK or a key frame
/// request leaves at once, only when a regular interval has passed since the last early
/// one; that interval comes from the RTCP bandwidth, 5 % of the session's bit rate. The
/// transport-wide congestion control feedback asks for an early packet at the end of every
/// frame and takes the turn, so a NACK waited for the next regular packet: with the session's
/// own bit rate (500 kbit/s each way), 200 to 250 ms. Under 3 % random loss, the NACKs of the
/// first losses of a call expired before they left, the key frame asked for lost a packet
/// that could not be asked for again in time, and the picture froze 1 to 1.6 s, one to three
/// times in 30 s. Sized for ten times the estimate, an early turn comes back within 25 ms
/// (at 500 kbit/s): no freeze at 1, 3 or 5 % loss. Tied to the estimate, not fixed: the
/// feedback is bounded by the turns, and on a 250 kbit/s link a session sized for 5 Mbit/s
/// spent a fifth of the capacity on RTCP and the picture froze for 6 to 7 s.
pub const RTCP_BANDWIDTH_PER_ESTIMATE: f64 = 10.0;
/// The estimate a call starts from for its RTCP, bit/s (the estimator's start).
pub const RTCP_START_ESTIMATE_BPS: u32 = 300_000;
/// The session bandwidth, bit/s, RTCP is sized for at most.
pub const MAX_RTCP_SESSION_BANDWIDTH: f64 = 5_000_000.0;

/// rtpsession's `bandwidth`, bit/s, for an estimate of what the path carries (see
/// [`RTCP_BANDWIDTH_PER_ESTIMATE`]).
pub fn rtcp_session_bandwidth(estimate_bps: u32) -> f64 {
    (f64::from(estimate_bps) * RTCP_BANDWIDTH_PER_ESTIMATE)
        .clamp(64_000.0, MAX_RTCP_SESSION_BANDWIDTH)
}

/// What the jitterbuffer waits beyond the round trips for a retransmission: a NACK rides on
/// an RTCP packet, and rtpsession sends an early one (RFC 4585) only once between two regular
/// ones, which the transport-wide feedback mostly takes: a NACK waited up to a regular
/// interval (80 to 100 ms, before [`RTCP_BANDWIDTH_PER_ESTIMATE`] shortened the turns) before
/// it left, and a lost NACK or retransmission (the link loses those too) is asked for again
/// after another. Two such waits, and the sender's turnaround:
/// with 100 ms, 3 % random loss on loopback still lost a frame every 2 to 3 s whose
/// retransmission came 100 to 160 ms after the gap, each a key frame request and a freeze.
pub const RTX_MARGIN_MS: u32 = 200;

/// How long the video jitterbuffer waits after it sees a gap before it asks for the missing
/// packet (`rtx-delay`): the gap shows only when a later packet arrives, so there is nothing
/// to wait for but a packet reordered on the way. rtpjitterbuffer's automatic value, half the
/// packet spacing (33 ms at 15 fps), spent a third of the wait before the request left.
pub const RTX_DELAY_MS: u32 = 10;
/// How long the video jitterbuffer asks again for a missing packet (`rtx-retry-period`):
/// as long as the longest wait, so that the packet is given up by the wait (`latency`), not
/// by the retries. rtpjitterbuffer's automatic period is the latency less a retry interval,
/// which at a clean link's 30 ms is nothing: the first loss of a call was asked for once, and
/// when that NACK expired before an RTCP packet could carry it (it had the clean link's 30
/// ms), never again, though the wait had grown to 200 ms meanwhile: a freeze until the next
/// key frame (0.5 to 0.8 s under 5 % loss).
pub const RTX_RETRY_PERIOD_MS: u32 = MAX_RETRANSMISSION_WAIT_MS;
/// The longest the jitterbuffer waits for a retransmission: past this a frame is better
/// given up (and a key frame asked for) than waited for.
pub const MAX_RETRANSMISSION_WAIT_MS: u32 = 500;
/// How long the receiving rtpstorage of a `fec=ulpfec-red` call keeps packets (`size-time`,
/// ns), for a `latency` of `latency_ms`: the longest the video jitterbuffer waits for a
/// missing packet ([`MAX_RETRANSMISSION_WAIT_MS`], or `latency` when longer: the wait never
/// goes under it) and 100 ms.
///
/// rtpulpfecdec repairs a packet only when the jitterbuffer gives it up (its
/// `GstRTPPacketLost` event: the decoder sits after the jitterbuffer, gstrtpbin.c:3917 in
/// 1.22), from the FEC and media packets rtpstorage still holds. webrtcbin sizes the storage
/// for its own `latency` and 50 ms (gstwebrtcbin.c:7777 `on_rtpbin_new_storage`): 80 ms
/// for our 30 ms, while we raise the jitterbuffers' wait to 200 to 500 ms once loss is seen
/// (for the retransmissions). A packet whose retransmission did not come was then given up
/// long after the FEC that covered it had left the storage: under 5 % loss with every
/// retransmission lost, the decoder recovered 0 of the 9 to 15 packets given up in 10 s;
/// sized so, 4 to 5 of 14 to 20 (at the 10 % redundancy of those runs).
/// Without `fec` the storage is left as webrtcbin sized it: no FEC is negotiated, so it
/// holds nothing anything reads.
pub fn fec_storage_ns(latency_ms: u32) -> u64 {
    (u64::from(latency_ms.max(MAX_RETRANSMISSION_WAIT_MS)) + 100) * 1_000_000
}
/// The largest lip-sync offset rtpbin may give a stream's jitterbuffer (`max-ts-offset`,
/// ns); one computed larger is ignored. rtpbin delays the stream that is ahead (by the
/// sender reports' clocks) by this offset, and a jitterbuffer waiting at a gap waits for
/// it too. At the onset of a 250 kbit/s cap the offsets it computed from delayed reports
/// jumped to 1.0 s (rtpbin's default bound is 3 s), and a gap in the video then held 25
/// frames, 1.6 s of them, that had arrived: released at once, up to 1.7 s old.
pub const LIP_SYNC_MAX_OFFSET_NS: i64 = 300_000_000;
/// How far a stream's lip-sync offset moves per frame, ns (rtpbin's
/// `max-ts-offset-adjustment`): 30 ms a second at 15 fps video (audio, a frame each 20 to
/// 60 ms, moves up to 100 ms a second), about as slow as libwebrtc's (at most 80 ms a
/// second). Unbounded, it followed each sender report: on a 250 kbit/s link it moved by 60
/// to 170 ms between two reads 50 ms apart (network.rs `a_250_kbit_link_keeps_the_picture_moving`).
pub const LIP_SYNC_STEP_NS: u64 = 2_000_000;
/// How long a seen loss keeps the longer wait.
pub const LOSS_MEMORY: Duration = Duration::from_secs(20);

/// The jitterbuffer latency, ms, that lets a retransmission arrive on a path with a round
/// trip of `rtt_ms`, and a second one when the first is lost too (two round trips), never
/// under the element's `latency` (`base_ms`).
pub fn retransmission_wait_ms(base_ms: u32, rtt_ms: u32) -> u32 {
    rtt_ms
        .saturating_mul(2)
        .saturating_add(RTX_MARGIN_MS)
        .min(MAX_RETRANSMISSION_WAIT_MS)
        .max(base_ms)
}

/// The share of the congestion estimate retransmissions may take over a
/// [`RTX_BUDGET_WINDOW`] (libwebrtc limits them with a rate limiter too). rtprtxsend answers
/// every NACK: an echo bot at a 250 kbit/s cap, whose peer (Chromium) asked again for
/// what a full queue had dropped, retransmitted 45 packets a second, 300 to 600 kbit/s in
/// all, and kept the queue full for both directions.
pub const RTX_BUDGET_SHARE: f64 = 0.25;
/// The window the retransmission budget is counted over.
pub const RTX_BUDGET_WINDOW: Duration = Duration::from_secs(1);
/// What retransmissions may always take in a window, bytes: two full packets.
pub const RTX_BUDGET_MIN_BYTES: u64 = 2 * 1200;

/// How many of a probe's padding requests are remembered (a probe sends a few tens of
/// packets; rtprtxsend sends each within milliseconds).
pub const PADDING_REMEMBERED: usize = 256;
/// How long a padding request is remembered: rtprtxsend answers it within milliseconds, or
/// never (the packet left its history), and a later NACK for that packet is a real one.
pub const PADDING_REMEMBERED_FOR: Duration = Duration::from_secs(1);

/// The bytes retransmitted over the last [`RTX_BUDGET_WINDOW`], and whether another
/// retransmission fits the budget.
///
/// A bandwidth probe's padding ([`crate::probe`]) goes out as retransmissions too, but it is
/// not counted: it is sent to measure the path, on top of the estimate, and counted it held
/// the peer's NACKs for a second after each probe (a call under 3 % loss had its requests
/// held right after a probe, and froze).
#[derive(Debug, Default)]
pub struct RetransmissionBudget {
    sent: VecDeque<(Instant, u64)>,
    bytes: u64,
    /// The sequence numbers padding asked rtprtxsend for, and when, oldest first, not yet
    /// sent.
    padding: VecDeque<(Instant, u16)>,
}

impl RetransmissionBudget {
    /// At `now`, a probe asked for the packet of sequence number `seqnum` to be sent again
    /// as padding.
    pub fn note_padding_requested(&mut self, now: Instant, seqnum: u16) {
        self.forget_padding_before(now);
        if self.padding.len() == PADDING_REMEMBERED {
            self.padding.pop_front();
        }
        self.padding.push_back((now, seqnum));
    }

    /// A retransmission of `bytes` went out at `now`, of the packet of sequence number
    /// `seqnum` (its original's, read from the RTX payload), if known. One that padding
    /// asked for is not counted. Whether it was counted (a real retransmission).
    pub fn note_sent(&mut self, now: Instant, bytes: u64, seqnum: Option<u16>) -> bool {
        self.forget_padding_before(now);
        if let Some(i) = seqnum.and_then(|s| self.padding.iter().position(|&(_, p)| p == s)) {
            self.padding.remove(i);
            return false;
        }
        self.forget_before(now);
        self.sent.push_back((now, bytes));
        self.bytes += bytes;
        true
    }

    /// Whether a retransmission may go out at `now` with the path estimated at
    /// `estimate_bps`: while those of the window are under [`RTX_BUDGET_SHARE`] of it.
    pub fn allows(&mut self, now: Instant, estimate_bps: u32) -> bool {
        self.forget_before(now);
        let budget = (f64::from(estimate_bps) / 8.0
            * RTX_BUDGET_SHARE
            * RTX_BUDGET_WINDOW.as_secs_f64()) as u64;
        self.bytes < budget.max(RTX_BUDGET_MIN_BYTES)
    }

    fn forget_padding_before(&mut self, now: Instant) {
        while self
            .padding
            .front()
            .is_some_and(|&(at, _)| now.duration_since(at) >= PADDING_REMEMBERED_FOR)
        {
            self.padding.pop_front();
        }
    }

    fn forget_before(&mut self, now: Instant) {
        while let Some(&(at, bytes)) = self.sent.front() {
            if now.duration_since(at) < RTX_BUDGET_WINDOW {
                break;
            }
            self.sent.pop_front();
            self.bytes -= bytes;
        }
    }
}

/// opusenc's `packet-loss-percentage` for the fraction of our packets the path loses
/// (0..1, [`FeedbackLoss`]): a little above the loss, so that the in-band FEC is there when a
/// packet goes; 0 on a clean link (FEC costs bits).
pub fn opus_loss_percentage(fraction_lost: f64) -> u32 {
    if fraction_lost <= 0.0 || !fraction_lost.is_finite() {
        return 0;
    }
    ((fraction_lost * 100.0).ceil() as u32 + 2).min(30)
}

/// The transceiver's `fec-percentage` (ULPFEC packets per 100 media packets) for the fraction
/// of our video packets the path loses ([`FeedbackLoss`]): 10 % on a clean link, up to 50 %.
pub fn ulpfec_percentage(fraction_lost: f64) -> u32 {
    let loss = if fraction_lost.is_finite() { fraction_lost.max(0.0) } else { 0.0 };
    (10 + (loss * 500.0).round() as u32).min(50)
}

/// How far back the transport-wide feedback's losses are counted for the redundancy.
pub const LOSS_WINDOW: Duration = Duration::from_secs(2);
/// Fewer packets than this in the window measure no loss.
pub const LOSS_MIN_PACKETS: u32 = 20;

/// The share of our packets the path lost over the last [`LOSS_WINDOW`], from the
/// transport-wide feedback (every packet, before any retransmission repaired it): what the
/// ULPFEC redundancy and Opus's in-band FEC are sized for. The receiver report's
/// `fraction-lost` covers only the ~100 ms since its last report, a few packets: read at a
/// stats tick it was 0 nearly every time on a link that lost 5 %, and its cumulative count
/// falls back as retransmissions arrive. (With `fec=ulpfec-red` the feedback covers the
/// video only since its RED packets carry the negotiated extension id: see
/// `media::fix_red_twcc_extension_id`.)
#[derive(Debug, Default)]
pub struct FeedbackLoss {
    /// Per report: when, packets reported, of those lost.
    reports: VecDeque<(Instant, u32, u32)>,
}

impl FeedbackLoss {
    /// A feedback report at `now` on `packets` packets, `lost` of them lost.
    pub fn note(&mut self, now: Instant, packets: u32, lost: u32) {
        self.reports.push_back((now, packets, lost.min(packets)));
        self.forget_before(now);
    }

    /// The share lost over the window, if it reported enough packets to tell.
    pub fn fraction(&mut self, now: Instant) -> Option<f64> {
        self.forget_before(now);
        let (packets, lost) =
            self.reports.iter().fold((0u32, 0u32), |(p, l), r| (p + r.1, l + r.2));
        (packets >= LOSS_MIN_PACKETS).then(|| f64::from(lost) / f64::from(packets))
    }

    fn forget_before(&mut self, now: Instant) {
        while self.reports.front().is_some_and(|r| now.duration_since(r.0) >= LOSS_WINDOW) {
            self.reports.pop_front();
        }
    }
}

/// The longest our transport-wide feedback waits while packets arrive: when this long has
/// passed since the last packet that ended a frame, the next audio packet is made to end one
/// (see [`FeedbackClock`]).
pub const TWCC_FEEDBACK_INTERVAL: Duration = Duration::from_millis(100);

/// When the transport-wide congestion control feedback we send for what the peer sends us
/// goes out.
///
/// GStreamer 1.22's rtpsession writes a feedback report only when a packet with the marker
/// bit arrives (the end of a video frame) and has no `twcc-feedback-interval` (1.24): while a
/// peer's video encoder drops frames, nothing reports the packets it did send, audio included.
/// A Chromium tab sending to our element on a 500 kbit/s link got no report for 0.3 to 1.5 s
/// 23 times in 30 s (196 reports in all; a Chromium receiver reports every 50 to 100 ms).
/// Chrome counts what is not acknowledged as in flight, and its congestion window holds the
/// encoder at its 30 kbit/s floor while that is large: `availableOutgoingBitrate` fell to
/// 65 kbit/s and its target to 30 kbit/s on a link with no queue (round trip 1 to 4 ms), its
/// encoder sent 3 frames a second, each frame it dropped made the next report later.
///
/// So a packet of a non-video payload type (audio) that arrives [`TWCC_FEEDBACK_INTERVAL`]
/// or more after the last marked packet gets the marker bit set (after SRTP, before
/// rtpsession): rtpsession then reports at least every interval while audio flows, as a
/// browser does. The marker bit means nothing to the Opus depayloader or its jitterbuffer.
#[derive(Debug, Default)]
pub struct FeedbackClock {
    last_marker: Option<Instant>,
}

impl FeedbackClock {
    /// A packet arrives at `now` with `marker` set or not; `audio` tells whether it is not
    /// video (marking it ends no frame), asked only when the interval has passed: the
    /// element's lock it takes stays off the path of almost every packet. Whether to set its
    /// marker bit.
    pub fn mark(&mut self, now: Instant, marker: bool, audio: impl FnOnce() -> bool) -> bool {
        if marker {
            self.last_marker = Some(now);
            return false;
        }
        let Some(last) = self.last_marker else {
            self.last_marker = Some(now);
            return false;
        };
        if now.duration_since(last) < TWCC_FEEDBACK_INTERVAL || !audio() {
            return false;
        }
        self.last_marker = Some(now);
        true
    }
}

/// The report blocks of an RTCP compound packet (RFC 3550 6.4: those of its sender and
/// receiver reports), as (the SSRC reported on, its cumulative number of packets lost, a
/// signed 24-bit count). A truncated or malformed packet gives what came before it.
pub fn report_blocks(rtcp: &[u8]) -> Vec<(u32, i32)> {
    const SR: u8 = 200;
    const RR: u8 = 201;
    const BLOCK: usize = 24;
    let mut blocks = Vec::new();
    let mut rest = rtcp;
    while rest.len() >= 4 {
        let (first, pt) = (rest[0], rest[1]);
        if first >> 6 != 2 {
            break;
        }
        let len = (usize::from(u16::from_be_bytes([rest[2], rest[3]])) + 1) * 4;
        let Some(packet) = rest.get(..len) else { break };
        rest = &rest[len..];
        // After the header and the sender's SSRC; a sender report's sender info (20 bytes).
        let start = match pt {
            SR => 28,
            RR => 8,
            _ => continue,
        };
        let count = usize::from(first & 0x1f);
        for i in 0..count {
            let Some(b) = packet.get(start + i * BLOCK..start + (i + 1) * BLOCK) else { break };
            let ssrc = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
            // The 24-bit count, sign-extended.
            let lost = i32::from_be_bytes([b[5], b[6], b[7], 0]) >> 8;
            blocks.push((ssrc, lost));
        }
    }
    blocks
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A report block about `ssrc` with `lost` as its cumulative count (24 bits).
    fn block(ssrc: u32, lost: i32) -> Vec<u8> {
        let mut b = ssrc.to_be_bytes().to_vec();
        b.push(3); // fraction lost
        b.extend_from_slice(&lost.to_be_bytes()[1..]);
        b.extend_from_slice(&[0; 16]);
        b
    }

    /// An RTCP packet of type `pt` from SSRC 7, `body` after the sender's SSRC.
    fn packet(pt: u8, count: u8, body: &[u8]) -> Vec<u8> {
        let words = (4 + body.len()) / 4;
        let mut p = vec![0x80 | count, pt];
        p.extend_from_slice(&(words as u16).to_be_bytes());
        p.extend_from_slice(&7u32.to_be_bytes());
        p.extend_from_slice(body);
        p
    }

    #[test]
    fn report_blocks_of_a_compound_packet() {
        // A sender report with one block, an SDES to skip, a receiver report with two (one a
        // negative count: duplicates).
        let mut sr_body = vec![0u8; 20];
        sr_body.extend(block(1111, 18));
        let mut rr_body = block(2222, 5);
        rr_body.extend(block(3333, -2));
        let mut compound = packet(200, 1, &sr_body);
        compound.extend(packet(202, 1, &[1, 3, b'a', b'b', 0, 0, 0, 0]));
        compound.extend(packet(201, 2, &rr_body));
        assert_eq!(report_blocks(&compound), vec![(1111, 18), (2222, 5), (3333, -2)]);
        // Truncated: what came before the cut; garbage: nothing.
        assert_eq!(report_blocks(&compound[..compound.len() - 10]), vec![(1111, 18)]);
        assert_eq!(report_blocks(&[0xff; 40]), vec![]);
        assert_eq!(report_blocks(&[]), vec![]);
    }

    #[test]
    fn the_feedback_waits_at_most_an_interval_while_audio_arrives() {
        let mut clock = FeedbackClock::default();
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let audio = || true;
        let video = || false;
        assert!(!clock.mark(t0, false, audio), "the first packet starts the clock");
        // Video frames ending every 66 ms: no audio packet is marked.
        for i in 1..10 {
            assert!(!clock.mark(ms(i * 66), true, video));
            assert!(!clock.mark(ms(i * 66 + 10), false, audio));
        }
        // The video stops: every 100 ms an audio packet (20 ms apart) ends a "frame".
        let marked: Vec<u64> =
            (0..30).map(|i| 600 + i * 20).filter(|&t| clock.mark(ms(t), false, audio)).collect();
        assert_eq!(marked, [700, 800, 900, 1000, 1100]);
        // A video packet inside a frame is never marked, however long the wait.
        assert!(!clock.mark(ms(5000), false, video));
        assert!(clock.mark(ms(5020), false, audio));
        // Within the interval the kind is not even asked.
        assert!(!clock.mark(ms(5030), false, || unreachable!("asked within the interval")));
    }

    #[test]
    fn the_feedback_loss_is_counted_over_its_window() {
        let mut loss = FeedbackLoss::default();
        let t0 = Instant::now();
        loss.note(t0, 10, 1);
        assert_eq!(loss.fraction(t0), None, "10 packets tell nothing");
        for i in 1..10 {
            loss.note(t0 + Duration::from_millis(100 * i), 10, 0);
        }
        assert_eq!(loss.fraction(t0 + Duration::from_millis(900)), Some(0.01));
        // The lossy report leaves the window.
        assert_eq!(loss.fraction(t0 + LOSS_WINDOW + Duration::from_millis(50)), Some(0.0));
        assert_eq!(loss.fraction(t0 + Duration::from_secs(10)), None, "nothing reported lately");
    }

    #[test]
    fn the_wait_covers_a_round_trip_and_never_goes_under_latency() {
        assert_eq!(retransmission_wait_ms(30, 0), 200);
        assert_eq!(retransmission_wait_ms(30, 100), 400);
        assert_eq!(retransmission_wait_ms(450, 100), 450);
        assert_eq!(retransmission_wait_ms(30, 5000), MAX_RETRANSMISSION_WAIT_MS);
        assert_eq!(retransmission_wait_ms(800, 5000), 800);
    }

    #[test]
    fn rtcp_is_sized_for_ten_times_the_estimate_within_bounds() {
        assert_eq!(rtcp_session_bandwidth(300_000), 3_000_000.0);
        assert_eq!(rtcp_session_bandwidth(50_000), 500_000.0);
        assert_eq!(rtcp_session_bandwidth(2_000_000), MAX_RTCP_SESSION_BANDWIDTH);
        assert_eq!(rtcp_session_bandwidth(0), 64_000.0);
    }

    #[test]
    fn retransmissions_take_a_quarter_of_the_estimate_a_second() {
        let mut b = RetransmissionBudget::default();
        let t0 = Instant::now();
        // 200 kbit/s: 6,250 bytes a second for retransmissions.
        for i in 0..5 {
            assert!(b.allows(t0, 200_000), "packet {i}");
            assert!(b.note_sent(t0, 1200, None));
        }
        assert!(b.allows(t0, 200_000), "6,000 bytes: one more");
        assert!(b.note_sent(t0, 1200, None));
        assert!(!b.allows(t0 + Duration::from_millis(500), 200_000), "7,200 bytes in the window");
        assert!(b.allows(t0 + RTX_BUDGET_WINDOW, 200_000), "the window moved on");
        // A tiny estimate still lets two packets through.
        let mut b = RetransmissionBudget::default();
        assert!(b.allows(t0, 10_000));
        assert!(b.note_sent(t0, 1200, None));
        assert!(b.allows(t0, 10_000));
        assert!(b.note_sent(t0, 1200, None));
        assert!(!b.allows(t0, 10_000));
    }

    #[test]
    fn a_probes_padding_is_not_counted_in_the_budget() {
        let mut b = RetransmissionBudget::default();
        let t0 = Instant::now();
        // 200 kbit/s: 6,250 bytes a second. A probe resends ten packets as padding.
        for seqnum in 100..110 {
            b.note_padding_requested(t0, seqnum);
        }
        for seqnum in 100..110 {
            assert!(!b.note_sent(t0, 1200, Some(seqnum)), "padding {seqnum}");
        }
        assert!(b.allows(t0, 200_000), "the padding took none of the budget");
        // A NACK's retransmission of the same packet later counts: the request was used up.
        for _ in 0..6 {
            assert!(b.note_sent(t0, 1200, Some(100)));
        }
        assert!(!b.allows(t0, 200_000), "six real retransmissions fill it");
        // The oldest requests are forgotten past PADDING_REMEMBERED.
        let mut b = RetransmissionBudget::default();
        for seqnum in 0..=PADDING_REMEMBERED as u16 {
            b.note_padding_requested(t0, seqnum);
        }
        for _ in 0..6 {
            assert!(b.note_sent(t0, 1200, Some(0)));
        }
        assert!(!b.allows(t0, 200_000), "request 0 was forgotten");
        // And those rtprtxsend never answered, after PADDING_REMEMBERED_FOR.
        let mut b = RetransmissionBudget::default();
        b.note_padding_requested(t0, 7);
        let later = t0 + PADDING_REMEMBERED_FOR;
        assert!(b.note_sent(later, 1200, Some(7)), "a NACK's, a second after the probe");
        b.note_padding_requested(later, 8);
        assert!(!b.note_sent(later + Duration::from_millis(5), 1200, Some(8)), "padding");
    }

    #[test]
    fn redundancy_follows_the_loss() {
        assert_eq!(opus_loss_percentage(0.0), 0);
        assert_eq!(opus_loss_percentage(0.03), 5);
        assert_eq!(opus_loss_percentage(f64::NAN), 0);
        assert_eq!(opus_loss_percentage(0.9), 30);
        assert_eq!(ulpfec_percentage(0.0), 10);
        assert_eq!(ulpfec_percentage(0.03), 25);
        assert_eq!(ulpfec_percentage(0.5), 50);
    }
}
