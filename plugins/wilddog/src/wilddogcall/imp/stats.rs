//! `wilddog-stats`: webrtcbin's stats turned into the original's `local_stats` /
//! `remote_stats`, every [`crate::session::STATS_INTERVAL`] while a call has media.

use std::sync::atomic::Ordering;
use std::time::Instant;

use gst::prelude::*;
use gst::subclass::prelude::*;

use super::{WilddogCall, lock};

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
        use gst_webrtc::WebRTCStatsType as T;
        let (mut bytes_sent, mut bytes_received, mut rtt_ms) = (0u64, 0u64, 0f64);
        let mut local_candidate_type = None;
        let mut remote_candidate_type = None;
        for (_, value) in reply.iter() {
            let Ok(s) = value.get::<gst::Structure>() else { continue };
            match s.get::<T>("type") {
                Ok(T::OutboundRtp) => bytes_sent += s.get::<u64>("bytes-sent").unwrap_or(0),
                Ok(T::InboundRtp) => bytes_received += s.get::<u64>("bytes-received").unwrap_or(0),
                Ok(T::RemoteInboundRtp) => {
                    if let Ok(rtt) = s.get::<f64>("round-trip-time") {
                        rtt_ms = rtt_ms.max(rtt * 1000.0);
                    }
                }
                Ok(T::LocalCandidate) => {
                    local_candidate_type =
                        s.get::<String>("candidate-type").ok().or(local_candidate_type)
                }
                Ok(T::RemoteCandidate) => {
                    remote_candidate_type =
                        s.get::<String>("candidate-type").ok().or(remote_candidate_type)
                }
                _ => {}
            }
        }
        let c = &self.counters;
        let local_frames = c.local_frames.load(Ordering::Relaxed);
        let remote_frames = c.remote_frames.load(Ordering::Relaxed);
        let now = Instant::now();
        let prev = lock(&self.state).prev_stats.replace((
            now,
            bytes_sent,
            bytes_received,
            local_frames,
            remote_frames,
        ));
        let (sent_kbps, recv_kbps, local_fps, remote_fps) = match prev {
            Some((at, ps, pr, plf, prf)) => {
                let secs = now.duration_since(at).as_secs_f64().max(0.001);
                (
                    (bytes_sent.saturating_sub(ps) as f64 * 8.0 / 1000.0 / secs) as u64,
                    (bytes_received.saturating_sub(pr) as f64 * 8.0 / 1000.0 / secs) as u64,
                    (local_frames.saturating_sub(plf) as f64 / secs).round() as u32,
                    (remote_frames.saturating_sub(prf) as f64 / secs).round() as u32,
                )
            }
            None => (0, 0, 0, 0),
        };
        let local = gst::Structure::builder("local")
            .field("bytesSent", bytes_sent)
            .field("bitSentRate", sent_kbps)
            .field("fps", local_fps)
            .field("width", c.local_width.load(Ordering::Relaxed))
            .field("height", c.local_height.load(Ordering::Relaxed))
            .field("candidateType", local_candidate_type.unwrap_or_else(|| "unknown".into()))
            .build();
        let remote = gst::Structure::builder("remote")
            .field("bytesReceived", bytes_received)
            .field("bitReceivedRate", recv_kbps)
            .field("fps", remote_fps)
            .field("delay", rtt_ms.round() as u64)
            .field("width", c.remote_width.load(Ordering::Relaxed))
            .field("height", c.remote_height.load(Ordering::Relaxed))
            .field("candidateType", remote_candidate_type.unwrap_or_else(|| "unknown".into()))
            .build();
        let s = gst::Structure::builder("wilddog-stats")
            .field("local", local)
            .field("remote", remote)
            .build();
        lock(&self.state).last_stats = Some(s.clone());
        self.raise("wilddog-stats", s.clone(), &[&s]);
    }
}
