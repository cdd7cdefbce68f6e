//! `wilddog-stats`: webrtcbin's stats turned into the original's `local_stats` /
//! `remote_stats`, every [`crate::session::STATS_INTERVAL`] while a call has media, with what
//! a user needs to see what the network does (the congestion controller's estimate and
//! target, loss, NACKs, key frame requests, retransmissions). The same stats drive loss
//! recovery (`recovery_tick`) and the congestion controller's periodic step
//! (`congestion_tick`).

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
    /// What we receive: packets lost (after retransmissions), NACKs, PLIs and FIRs we sent,
    /// packets a retransmission repaired.
    pub packets_lost: i64,
    pub nack_sent: u64,
    pub pli_sent: u64,
    pub fir_sent: u64,
    pub packets_repaired: u64,
    /// What we send: packets the peer reports lost, NACKs, PLIs and FIRs it sent us.
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

impl LinkStats {
    /// Keeps every cumulative counter at least where `prev` had it. Now and then a reply
    /// lacks a stream's entry (the RTX stream's, or one webrtcbin was updating): a counter
    /// read from it would go back, a period would show no traffic, and a user reading
    /// `nackReceived` would see 0 after 43 retransmissions.
    pub fn keep_counters_from(&mut self, prev: &LinkStats) {
        for (now, before) in [
            (&mut self.bytes_sent, prev.bytes_sent),
            (&mut self.bytes_received, prev.bytes_received),
            (&mut self.packets_sent, prev.packets_sent),
            (&mut self.packets_received, prev.packets_received),
            (&mut self.nack_sent, prev.nack_sent),
            (&mut self.pli_sent, prev.pli_sent),
            (&mut self.fir_sent, prev.fir_sent),
            (&mut self.packets_repaired, prev.packets_repaired),
            (&mut self.nack_received, prev.nack_received),
            (&mut self.pli_received, prev.pli_received),
            (&mut self.fir_received, prev.fir_received),
        ] {
            *now = (*now).max(before);
        }
        self.packets_lost = self.packets_lost.max(prev.packets_lost);
        self.remote_packets_lost = self.remote_packets_lost.max(prev.remote_packets_lost);
    }

    /// Reads a reply of webrtcbin's `get-stats`.
    pub fn parse(reply: &gst::StructureRef) -> LinkStats {
        use gst_webrtc::WebRTCStatsType as T;
        let mut l = LinkStats::default();
        let count = |s: &gst::Structure, field: &str| u64::from(s.get::<u32>(field).unwrap_or(0));
        for (_, value) in reply.iter() {
            let Ok(s) = value.get::<gst::Structure>() else { continue };
            match s.get::<T>("type") {
                Ok(T::OutboundRtp) => {
                    l.bytes_sent += s.get::<u64>("bytes-sent").unwrap_or(0);
                    l.packets_sent += s.get::<u64>("packets-sent").unwrap_or(0);
                    l.nack_received += count(&s, "nack-count");
                    l.pli_received += count(&s, "pli-count");
                    l.fir_received += count(&s, "fir-count");
                }
                Ok(T::InboundRtp) => {
                    l.bytes_received += s.get::<u64>("bytes-received").unwrap_or(0);
                    l.packets_received += s.get::<u64>("packets-received").unwrap_or(0);
                    l.packets_lost += s.get::<i64>("packets-lost").unwrap_or(0).max(0);
                    l.packets_repaired += s.get::<u64>("packets-repaired").unwrap_or(0);
                    l.nack_sent += count(&s, "nack-count");
                    l.pli_sent += count(&s, "pli-count");
                    l.fir_sent += count(&s, "fir-count");
                }
                Ok(T::RemoteInboundRtp) => {
                    if let Ok(rtt) = s.get::<f64>("round-trip-time") {
                        l.rtt_ms = l.rtt_ms.max((rtt * 1000.0).round() as u32);
                    }
                    l.remote_packets_lost += s.get::<i64>("packets-lost").unwrap_or(0).max(0);
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
        l
    }
}

impl WilddogCall {
    pub(super) fn request_stats(&self) {
        let Some(webrtcbin) = self.webrtcbin() else { return };
        let weak = self.obj().downgrade();
        let promise = gst::Promise::with_change_func(move |reply| {
            if let (Some(obj), Ok(Some(reply))) = (weak.upgrade(), reply) {
                obj.imp().report_stats(reply);
            }
        });
        webrtcbin.emit_by_name::<()>("get-stats", &[&None::<gst::Pad>, &promise]);
    }

    /// Turns webrtcbin's stats into the original's `local_stats` / `remote_stats`.
    pub(super) fn report_stats(&self, reply: &gst::StructureRef) {
        let mut l = LinkStats::parse(reply);
        if let Some(prev) = lock(&self.state).prev_stats.as_ref() {
            l.keep_counters_from(&prev.link);
        }
        self.recovery_tick(&l);
        l.packets_repaired = l.packets_repaired.max(self.packets_repaired());
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
                let fps = |now: u64, before: u64| {
                    (now.saturating_sub(before) as f64 / secs).round() as u32
                };
                (
                    kbps(l.bytes_sent, p.link.bytes_sent),
                    kbps(l.bytes_received, p.link.bytes_received),
                    fps(local_frames, p.local_frames),
                    fps(remote_frames, p.remote_frames),
                )
            }
            None => (0, 0, 0, 0),
        };
        let max_bitrate = lock(&self.state).validated.as_ref().map(|v| v.video.bitrate_kbps);
        let (estimated_kbps, target_kbps) = match self.congestion_stats() {
            Some(cc) => cc,
            None => (0, max_bitrate.unwrap_or(0)),
        };
        let (retransmitted, jitterbuffer_ms, retransmission_rtt_ms) = self.recovery_stats();
        let (probes, probes_passed) = self.probe_stats();
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
}

#[cfg(test)]
mod tests {
    use super::LinkStats;

    #[test]
    fn counters_never_go_back_when_a_reply_lacks_a_stream() {
        let before = LinkStats {
            bytes_sent: 1000,
            nack_received: 43,
            pli_received: 2,
            packets_lost: 7,
            rtt_ms: 80,
            ..LinkStats::default()
        };
        // A reply without the video stream's outbound entry: its counters read 0.
        let mut now = LinkStats { bytes_sent: 1200, rtt_ms: 60, ..LinkStats::default() };
        now.keep_counters_from(&before);
        assert_eq!(now.bytes_sent, 1200);
        assert_eq!(now.nack_received, 43);
        assert_eq!(now.pli_received, 2);
        assert_eq!(now.packets_lost, 7);
        // What is not a counter follows the latest reply.
        assert_eq!(now.rtt_ms, 60);
    }
}
