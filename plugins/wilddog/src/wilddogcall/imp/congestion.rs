//! Congestion control of a call's sending side (`congestion-control=gcc`): transport-wide
//! congestion control feedback negotiated both ways, Google Congestion Control's estimate
//! (`rtpgccbwe`, beside webrtcbin's aux sender: fed the feedback, not the packets)
//! driving the video encoder's bitrate, frame rate and size and the Opus bitrate through
//! [`crate::congestion::Controller`], and `wilddog-quality` when the estimate falls below
//! what the dimension needs and when it recovers. Each feedback report, and their silence,
//! also feeds the controller's standing-queue guard ([`Controller::note_feedback`],
//! [`Controller::note_sending`]).
//!
//! How webrtcsink (gst-plugins-rs) does it, which this follows: the TWCC header extension
//! added to every payloader, with the id the SDP gives it; `rtpgccbwe` behind webrtcbin's
//! `request-aux-sender` (webrtcsink puts it in the path, pacing; we put it beside the path,
//! see `estimator_beside_the_path`); `notify::estimated-bitrate` sets the encoders.

use std::time::Instant;

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;

use super::{CAT, Validated, WilddogCall, lock};
use crate::congestion::{
    Adaptation, CongestionControl, Controller, FeedbackPacket, QueueMonitor, SendLimits,
};
use crate::media;
use crate::probe::{PROBE_DURATION, Probe, ProbeAction, Prober, SentPacket, SentPackets};

/// How often a probe's padding goes out.
const PADDING_TICK: std::time::Duration = std::time::Duration::from_millis(10);

/// The structure of a retransmission request for padding: rtprtxsend's
/// `GstRTPRetransmissionRequest`, marked so that the hold on retransmissions lets it through
/// (see `recovery::hold_retransmissions_when_congested`).
pub(super) const PADDING_REQUEST_FIELD: &str = "wilddog-padding";

/// The id our offers give the TWCC header extension (Chrome's).
pub const TWCC_OFFER_ID: u32 = 3;

/// A probe's padding so far (see `WilddogCall::send_padding`).
struct Padding {
    /// The last tick.
    last: Instant,
    /// The media's [`SentPackets::total_bytes`] then.
    media_bytes: u64,
    /// Bytes of padding owed.
    credit: f64,
}

/// Congestion control of the current peer connection.
#[derive(Debug, Default)]
pub(super) struct Congestion {
    /// `rtpgccbwe`, once webrtcbin asked for its aux sender.
    bwe: Option<Estimator>,
    controller: Option<Controller>,
    last: Option<Adaptation>,
    /// The TWCC header extension id the payloaders write (0: none).
    twcc_id: u32,
    /// Whether the last `wilddog-quality` said the link is too slow.
    constrained: bool,
    /// The bottleneck's queue, from each transport-wide feedback report.
    queue: QueueMonitor,
    /// Probes for capacity over the estimate ([`crate::probe`]).
    prober: Option<Prober>,
    /// What we sent lately: the probes' padding resends some of it.
    sent: SentPackets,
    /// The aux sender's sink pad, whose peer is rtprtxsend: padding is asked for there.
    padding_pad: Option<gst::Pad>,
    /// The retransmissions' payload types: the padding's, in the feedback.
    padding_pts: Vec<u8>,
    /// The path's loss in the feedback: the FEC redundancy follows it.
    feedback_loss: crate::recovery::FeedbackLoss,
}

impl Congestion {
    /// rtpgccbwe, once there is one.
    fn estimator(&self) -> Option<gst::Element> {
        self.bwe.as_ref().map(|e| e.0.clone())
    }
}

impl WilddogCall {
    /// A new peer connection: with `gcc`, webrtcbin gets `rtpgccbwe` as its aux sender, and
    /// the payloaders the TWCC header extension of our offers.
    pub(super) fn setup_congestion(&self, webrtcbin: &gst::Element, validated: &Validated) {
        let audio = lock(&self.state).audio_in.is_some();
        {
            let mut c = lock(&self.congestion);
            *c = Congestion::default();
            if validated.congestion_control != CongestionControl::Gcc {
                return;
            }
            if !crate::congestion::ensure_estimator() {
                gst::element_imp_warning!(
                    self,
                    gst::CoreError::MissingPlugin,
                    ("rtpgccbwe is not available: sending without congestion control")
                );
                return;
            }
            c.controller = Some(Controller::new(SendLimits {
                width: validated.video.width,
                height: validated.video.height,
                max_fps: validated.video.max_fps,
                min_video_kbps: validated.min_bitrate_kbps,
                max_video_kbps: validated.video.bitrate_kbps,
                audio,
                preference: validated.degradation_preference,
            }));
            c.twcc_id = TWCC_OFFER_ID;
            let ceiling = c.controller.as_ref().map_or(0, |ctl| ctl.estimate_range().2);
            let seed = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.subsec_nanos().into());
            c.prober = Some(Prober::new(ceiling, seed));
        }
        self.set_payloaders_twcc(Some(TWCC_OFFER_ID));
        let weak = self.obj().downgrade();
        webrtcbin.connect("request-aux-sender", false, move |_| {
            // A typed NULL when there is none (the call ended meanwhile): the signal returns
            // a GstElement, and a missing value would abort the process.
            let bwe = weak.upgrade().and_then(|obj| obj.imp().make_estimator());
            Some(bwe.map(floating).to_value())
        });
    }

    /// The estimator for webrtcbin's `request-aux-sender`.
    fn make_estimator(&self) -> Option<gst::Element> {
        let (min, start, max) = lock(&self.congestion).controller.as_ref()?.estimate_range();
        let bwe = match gst::ElementFactory::make("rtpgccbwe")
            // The delay trend as libwebrtc measures it (a linear regression of the delay
            // variation), not the older Kalman filter: on a 250 kbit/s link it settled
            // about twice as high (webrtcsink keeps the element's Kalman default).
            .property_from_str("estimator", "linear-regression")
            .property("min-bitrate", min)
            .property("max-bitrate", max)
            .property("estimated-bitrate", start)
            .build()
        {
            Ok(bwe) => bwe,
            Err(e) => {
                gst::warning!(CAT, imp = self, "no rtpgccbwe: {e}");
                return None;
            }
        };
        let weak = self.obj().downgrade();
        bwe.connect_notify(Some("estimated-bitrate"), move |bwe, _| {
            if let Some(obj) = weak.upgrade() {
                obj.imp().on_estimate(bwe.property::<u32>("estimated-bitrate"));
            }
        });
        gst::debug!(CAT, imp = self, "congestion control: {min}..{max} bit/s from {start}");
        lock(&self.congestion).bwe = Some(Estimator(bwe.clone()));
        let weak = self.obj().downgrade();
        let on_feedback = move |feedback: &gst::StructureRef| {
            if let Some(obj) = weak.upgrade() {
                obj.imp().on_feedback(feedback);
            }
        };
        let weak = self.obj().downgrade();
        let on_sent = move |packets: &[SentPacket]| {
            if let Some(obj) = weak.upgrade() {
                obj.imp().on_sent(packets);
            }
        };
        match estimator_beside_the_path(&bwe, on_feedback, on_sent) {
            Ok((aux, padding_pad)) => {
                lock(&self.congestion).padding_pad = Some(padding_pad);
                Some(aux)
            }
            Err(e) => {
                gst::warning!(CAT, imp = self, "cannot build the aux sender: {e}");
                None
            }
        }
    }

    /// Codec preferences of a transceiver: with `gcc`, the TWCC header extension in our
    /// offers (an answer takes the offer's).
    pub(super) fn offer_caps(&self, caps: gst::Caps) -> gst::Caps {
        match lock(&self.congestion).controller {
            Some(_) => media::with_twcc_extmap(caps, TWCC_OFFER_ID),
            None => caps,
        }
    }

    /// Codec preferences of a transceiver for our answer to `offer`: with `gcc` and an offer
    /// that maps the TWCC header extension, that mapping, so that the answer has it.
    ///
    /// webrtcbin (1.22) builds an answer's section from the offer's caps, which carry no
    /// extmap (its log showed them), and the transceiver's preferences, which
    /// `follow_offer_payloads` sets to the offer's payload types; without the mapping there,
    /// `media::drop_unbacked_transport_cc` then takes out a `transport-cc` without one: our
    /// answers to Chromium had neither, so Chromium sent us
    /// no transport-wide feedback and no sequence numbers to give feedback on. Its sending
    /// fell back on receiver reports alone (at a 250 kbit/s cap it kept the queue full),
    /// and ours on the round trip of the stats.
    pub(super) fn answer_caps(&self, caps: gst::Caps, offer: &gst_sdp::SDPMessageRef) -> gst::Caps {
        if lock(&self.congestion).controller.is_none() {
            return caps;
        }
        match media::twcc_extmap_id(offer) {
            Some(id) => media::with_twcc_extmap(caps, id),
            None => caps,
        }
    }

    /// A remote description (offer or answer): the payloaders write the TWCC header
    /// extension with its id, or none when the peer does not do TWCC.
    pub(super) fn follow_remote_twcc(&self, sdp: &gst_sdp::SDPMessageRef) {
        let id = {
            let mut c = lock(&self.congestion);
            if c.controller.is_none() {
                return;
            }
            let id = media::twcc_extmap_id(sdp);
            c.twcc_id = id.unwrap_or(0);
            id
        };
        if id.is_none() {
            gst::info!(
                CAT,
                imp = self,
                "the peer does not do TWCC: the round trip alone guards the queue"
            );
        }
        self.set_payloaders_twcc(id);
    }

    fn set_payloaders_twcc(&self, id: Option<u32>) {
        let payloaders = self.payloaders();
        for pay in &payloaders {
            media::set_twcc_extension(pay, id);
        }
    }

    /// A new estimate: the encoders follow it.
    pub(super) fn on_estimate(&self, estimate_bps: u32) {
        // Not the congestion lock: applying sets the encoders' properties, and the sending
        // chains' threads take that lock for every packet. Released before the bus message
        // and signal, whose handlers may do anything.
        let adapting = lock(&self.adapting);
        let (adaptation, previous, quality_changed) = {
            let mut c = lock(&self.congestion);
            let twcc = c.twcc_id != 0;
            let Some(controller) = c.controller.as_mut() else { return };
            // A peer without transport-wide feedback gives rtpgccbwe nothing to move its
            // estimate from: the stats' round trip drives it (`congestion_tick`).
            let estimate_bps =
                if twcc { estimate_bps } else { controller.estimate_without_feedback() };
            let adaptation = controller.update(estimate_bps, Instant::now());
            let full = controller.full();
            // Before the first estimate, the chains are as they were built: full.
            let previous = c.last.replace(adaptation).or(Some(full));
            let changed = adaptation.constrained() != c.constrained;
            c.constrained = adaptation.constrained();
            (adaptation, previous, changed)
        };
        gst::log!(CAT, imp = self, "estimate {estimate_bps} bit/s: {adaptation:?}");
        self.apply_adaptation(&adaptation, previous.as_ref());
        drop(adapting);
        self.follow_estimate_in_rtcp(adaptation.estimate_bps);
        if quality_changed {
            self.post_quality(&adaptation);
        }
    }

    /// A transport-wide feedback report (after the estimator had it): a standing queue at
    /// the bottleneck cuts the estimate at once (see [`Controller::note_feedback`]).
    fn on_feedback(&self, feedback: &gst::StructureRef) {
        let Ok(list) = feedback.get::<glib::ValueArray>("packets") else { return };
        let packets: Vec<FeedbackPacket> = list
            .iter()
            .filter_map(|v| {
                let p = v.get::<gst::Structure>().ok()?;
                let sent = p.get::<gst::ClockTime>("local-ts").ok()?;
                let lost = p.get::<bool>("lost").unwrap_or(true);
                let arrived = if lost { None } else { p.get::<gst::ClockTime>("remote-ts").ok() };
                Some(FeedbackPacket {
                    sent_ns: sent.nseconds(),
                    arrived_ns: arrived.map(gst::ClockTime::nseconds),
                    size: p.get::<u32>("size").unwrap_or(0),
                    pt: p.get::<u8>("payload-type").unwrap_or(0),
                })
            })
            .collect();
        let now = Instant::now();
        let (bwe, reading, cut, probe) = {
            let mut c = lock(&self.congestion);
            // The media's packets: retransmissions and the probes' padding (RTX) are sent
            // over the estimate at times, and their losses say more about that than the path.
            let (media, lost) = packets
                .iter()
                .filter(|p| !c.padding_pts.contains(&p.pt))
                .fold((0u32, 0u32), |(n, l), p| (n + 1, l + u32::from(p.arrived_ns.is_none())));
            c.feedback_loss.note(now, media, lost);
            let Some(reading) = c.queue.update(&packets) else { return };
            gst::debug!(CAT, imp = self, "feedback: {reading:?}");
            let Some(bwe) = c.estimator() else { return };
            let c = &mut *c;
            let Some(controller) = c.controller.as_mut() else { return };
            let cap_before = controller.queue_cap();
            let changed = controller.note_feedback(&reading, now);
            let cut = controller.queue_cap().is_some_and(|cap| cap_before.is_none_or(|b| cap < b));
            let estimate = controller.capped_estimate();
            if let (Some(prober), Some(bps)) = (c.prober.as_mut(), reading.acked_bps) {
                prober.note_delivered(bps, now);
            }
            let probe = match c.prober.as_mut() {
                Some(prober) if cut => {
                    if prober.note_cut(now) {
                        ProbeAction::Failed
                    } else {
                        ProbeAction::None
                    }
                }
                Some(prober) => {
                    prober.note_packets(&packets, &c.padding_pts);
                    prober.note_report(reading.queue_ms, reading.lossy, estimate, now)
                }
                None => ProbeAction::None,
            };
            if !changed && probe == ProbeAction::None {
                return;
            }
            (bwe, reading, changed.then_some(cut), probe)
        };
        if let Some(cut) = cut {
            gst::info!(
                CAT,
                imp = self,
                "queue {} ms, {:?} bit/s delivered: estimate cap {} to {:?}",
                reading.queue_ms,
                reading.acked_bps,
                if cut { "cut" } else { "lifted" },
                lock(&self.congestion).controller.as_ref().and_then(Controller::queue_cap)
            );
        }
        match probe {
            ProbeAction::Start(probe) => self.start_probe(probe, now),
            ProbeAction::Failed => {
                gst::info!(
                    CAT,
                    imp = self,
                    "probe failed: queue {} ms, lossy {}, {:?}",
                    reading.queue_ms,
                    reading.lossy,
                    self.last_probe_measure()
                );
                // (A probe failed by a cut leaves the cut alone.)
                if cut != Some(true)
                    && let Some(controller) = lock(&self.congestion).controller.as_mut()
                {
                    controller.note_probe_failed(now);
                }
            }
            ProbeAction::Passed(rate) if rate > bwe.property::<u32>("estimated-bitrate") => {
                gst::info!(
                    CAT,
                    imp = self,
                    "probe passed: the path carries {rate} bit/s, {:?}",
                    self.last_probe_measure()
                );
                if let Some(controller) = lock(&self.congestion).controller.as_mut() {
                    controller.note_probe_passed(rate);
                }
                // The estimator goes on from there (its increase is bounded by what it saw
                // delivered, which the padding raised).
                bwe.set_property("estimated-bitrate", rate);
            }
            ProbeAction::Passed(_) | ProbeAction::None => {}
        }
        self.on_estimate(bwe.property::<u32>("estimated-bitrate"));
    }

    /// A probe starts: padding on top of the media for [`PROBE_DURATION`], from the plugin's
    /// runtime, every [`PADDING_TICK`]: what the media sent since the last tick leaves of the
    /// probe's rate. Only video packets that rtprtxsend keeps can be sent again: without any
    /// (no RTX negotiated), the probe fails; while the media alone sends the probe's rate,
    /// there is none.
    fn start_probe(&self, probe: Probe, now: Instant) {
        let (resendable, padding_pts) = self.retransmitted_payload_types();
        let media_bytes = {
            let mut c = lock(&self.congestion);
            c.padding_pts = padding_pts;
            if resendable.is_empty() || c.padding_pad.is_none() {
                if let Some(prober) = c.prober.as_mut() {
                    prober.note_cut(now);
                }
                gst::debug!(CAT, imp = self, "no packet to probe with");
                return;
            }
            let media_bps = c.sent.rate_bps(now);
            if media_bps >= probe.rate_bps {
                gst::debug!(CAT, imp = self, "no probe: sending {media_bps} bit/s already");
                if let Some(prober) = c.prober.as_mut() {
                    prober.abandon(probe.id, now);
                }
                return;
            }
            gst::info!(
                CAT,
                imp = self,
                "probing {} bit/s for {} ms (sending {media_bps} bit/s)",
                probe.rate_bps,
                PROBE_DURATION.as_millis()
            );
            c.sent.total_bytes()
        };
        let weak = self.obj().downgrade();
        crate::runtime().spawn(async move {
            let mut tick = tokio::time::interval(PADDING_TICK);
            let mut padding = Padding { last: Instant::now(), media_bytes, credit: 0.0 };
            loop {
                tick.tick().await;
                let Some(obj) = weak.upgrade() else { break };
                if !obj.imp().send_padding(probe, &resendable, &mut padding) {
                    break;
                }
            }
        });
    }

    /// One tick of `probe`'s padding (see [`Self::start_probe`]): whether it goes on.
    fn send_padding(&self, probe: Probe, resendable: &[u8], padding: &mut Padding) -> bool {
        let now = Instant::now();
        let (pad, packets) = {
            let mut c = lock(&self.congestion);
            let c = &mut *c;
            let Some(prober) = c.prober.as_mut() else { return false };
            let Some(rate) = prober.running(probe.id, now) else { return false };
            let media_bytes = c.sent.total_bytes();
            let due = f64::from(rate) / 8.0 * now.duration_since(padding.last).as_secs_f64();
            let media = media_bytes.saturating_sub(padding.media_bytes) as f64;
            padding.last = now;
            padding.media_bytes = media_bytes;
            // A key frame's burst owes the rest of the probe at most a tick's worth: the
            // probe asks the path for its rate over its whole length.
            padding.credit = (padding.credit + due - media).max(-due);
            let packets = if padding.credit >= 1.0 {
                c.sent.padding(padding.credit as u32, resendable)
            } else {
                vec![]
            };
            padding.credit -= f64::from(packets.iter().map(|p| p.size).sum::<u32>());
            let Some(pad) = c.padding_pad.clone() else { return false };
            (pad, packets)
        };
        // Kept out of the retransmission budget (before rtprtxsend can send them).
        self.note_padding_requested(packets.iter().map(|p| p.seq));
        for p in packets {
            let request = gst::Structure::builder("GstRTPRetransmissionRequest")
                .field("seqnum", u32::from(p.seq))
                .field("ssrc", p.ssrc)
                .field(PADDING_REQUEST_FIELD, true)
                .build();
            pad.push_event(gst::event::CustomUpstream::new(request));
        }
        true
    }

    /// From rtprtxsend's `payload-type-map` (media → RTX): the payload types it keeps
    /// packets of (those a retransmission request can send again), and those of its
    /// retransmissions.
    fn retransmitted_payload_types(&self) -> (Vec<u8>, Vec<u8>) {
        let Some(rtx) = self.rtx_sender() else { return (vec![], vec![]) };
        let Some(map) = rtx.property::<Option<gst::Structure>>("payload-type-map") else {
            return (vec![], vec![]);
        };
        map.iter()
            .filter_map(|(name, rtx)| {
                Some((name.parse::<u8>().ok()?, u8::try_from(rtx.get::<u32>().ok()?).ok()?))
            })
            .unzip()
    }

    /// A packet goes out: feedback that fell silent (lost in a full queue) cuts the estimate
    /// (see [`Controller::note_sending`]).
    fn on_sent(&self, packets: &[SentPacket]) {
        let bwe = {
            let mut c = lock(&self.congestion);
            let now = Instant::now();
            // Media only: the rate a probe adds its padding to, and what padding resends.
            let c = &mut *c;
            for p in packets.iter().filter(|p| !c.padding_pts.contains(&p.pt)) {
                c.sent.note(*p, now);
            }
            let Some(controller) = c.controller.as_mut() else { return };
            if !controller.note_sending(now) {
                return;
            }
            gst::info!(
                CAT,
                imp = self,
                "no feedback for {} ms: estimate capped at {:?}",
                crate::congestion::FEEDBACK_SILENCE.as_millis(),
                controller.queue_cap()
            );
            c.estimator()
        };
        let Some(bwe) = bwe else { return };
        // On another thread: this is the sending chain's streaming thread (the encoder's,
        // up to the payloader), which must not set its own encoder's properties and caps
        // while it pushes.
        let weak = self.obj().downgrade();
        let spawned =
            std::thread::Builder::new().name("wilddog-congestion".into()).spawn(move || {
                if let Some(obj) = weak.upgrade() {
                    obj.imp().on_estimate(bwe.property::<u32>("estimated-bitrate"));
                }
            });
        if let Err(e) = spawned {
            gst::warning!(CAT, imp = self, "cannot apply the cut: {e}");
        }
    }

    /// Sets the sending chains to `a` (what differs from `previous`).
    fn apply_adaptation(&self, a: &Adaptation, previous: Option<&Adaptation>) {
        let (encoder, video_bin, audio_bin) = {
            let st = lock(&self.state);
            let video = st.video_in.as_ref();
            (
                video.and_then(|s| s.encoder.clone()),
                video.and_then(|s| s.encoder_bin.clone()),
                st.audio_in.as_ref().and_then(|s| s.encoder_bin.clone()),
            )
        };
        let changed = |f: fn(&Adaptation) -> u32| previous.is_none_or(|p| f(p) != f(a));
        if let Some(encoder) = &encoder
            && changed(|a| a.video_kbps)
        {
            media::set_video_bitrate(encoder, a.video_kbps);
        }
        if let Some(bin) = &video_bin
            && previous.is_none_or(|p| p.step != a.step)
        {
            if previous
                .is_some_and(|p| (p.step.width, p.step.height) != (a.step.width, a.step.height))
            {
                gst::info!(
                    CAT,
                    imp = self,
                    "sending {}x{} at {} fps for {} kbit/s",
                    a.step.width,
                    a.step.height,
                    a.step.fps,
                    a.video_kbps
                );
            }
            media::set_video_step(bin, a.step.width, a.step.height, a.step.fps);
        }
        if let Some(enc) = audio_bin.as_ref().and_then(media::audio_encoder) {
            if changed(|a| a.audio_bps) {
                media::set_audio_bitrate(&enc, a.audio_bps);
            }
            if changed(|a| a.audio_frame_ms) {
                media::set_audio_frame_ms(&enc, a.audio_frame_ms);
            }
        }
    }

    /// `wilddog-quality`: the link gives less than the dimension needs (`quality=low`), or
    /// enough again (`quality=good`). Also the `wilddog-quality` signal.
    fn post_quality(&self, a: &Adaptation) {
        let quality = if a.constrained() { "low" } else { "good" };
        gst::info!(
            CAT,
            imp = self,
            "quality {quality}: estimate {} kbit/s, video {} kbit/s of {} needed",
            a.estimate_bps / 1000,
            a.video_kbps,
            a.needed_kbps
        );
        let s = gst::Structure::builder("wilddog-quality")
            .field("quality", quality)
            .field("estimated-bitrate", a.estimate_bps / 1000)
            .field("target-bitrate", a.video_kbps)
            .field("needed-bitrate", a.needed_kbps)
            .field("width", a.step.width)
            .field("height", a.step.height)
            .field("fps", a.step.fps)
            .build();
        self.raise("wilddog-quality", s.clone(), &[&s]);
    }

    /// Every stats period: the estimator stops notifying at its ceiling, so a step back up
    /// that waited for its hold is taken here.
    ///
    /// The round trip of the stats finds a standing queue (see
    /// [`crate::congestion::STANDING_QUEUE_MS`]), which the estimator does not see.
    pub(super) fn congestion_tick(&self, rtt_ms: u32) {
        let (bwe, without_feedback) = {
            let mut c = lock(&self.congestion);
            if let Some(controller) = c.controller.as_mut()
                && !controller.feedback_is_fresh(Instant::now())
            {
                controller.forget_feedback();
            }
            if let Some(controller) = c.controller.as_mut()
                && controller.note_round_trip(rtt_ms)
            {
                gst::info!(
                    CAT,
                    imp = self,
                    "round trip {rtt_ms} ms: estimate {} bit/s capped while the queue drains",
                    controller.last_estimate()
                );
            }
            // A peer without transport-wide feedback: the estimate grows or falls here.
            let without_feedback = (c.twcc_id == 0)
                .then(|| c.controller.as_mut().map(Controller::grow_without_feedback))
                .flatten();
            (c.estimator(), without_feedback)
        };
        if let Some(estimate) = without_feedback {
            self.on_estimate(estimate);
        } else if let Some(bwe) = bwe {
            self.on_estimate(bwe.property::<u32>("estimated-bitrate"));
        }
    }

    /// Whether the bottleneck is congested now (see [`Controller::congested`]): retransmission
    /// requests wait.
    pub(super) fn congested(&self) -> bool {
        lock(&self.congestion).controller.as_ref().is_some_and(|c| c.congested(Instant::now()))
    }

    /// The ULPFEC redundancy sent on top of the video, % of its packets: the encoder's share
    /// of the estimate leaves room for it (see [`Controller::set_redundancy`]).
    pub(super) fn set_fec_redundancy(&self, percent: u32) {
        if let Some(c) = lock(&self.congestion).controller.as_mut() {
            c.set_redundancy(percent);
        }
    }

    /// The share of our packets the path lost lately, from the transport-wide feedback
    /// (`None` without it, or with too few packets).
    pub(super) fn feedback_loss_fraction(&self) -> Option<f64> {
        lock(&self.congestion).feedback_loss.fraction(Instant::now())
    }

    /// The congestion fields of `wilddog-stats`' `local`: (estimate, video target) in kbps,
    /// `None` without congestion control.
    pub(super) fn congestion_stats(&self) -> Option<(u32, u32)> {
        let c = lock(&self.congestion);
        c.controller.as_ref()?;
        c.last.map(|a| (a.estimate_bps / 1000, a.video_kbps))
    }

    fn last_probe_measure(&self) -> Option<crate::probe::ProbeMeasure> {
        lock(&self.congestion).prober.as_ref().and_then(Prober::last_measure)
    }

    /// Bandwidth probes (see [`crate::probe`]) started and passed in this peer connection.
    pub(super) fn probe_stats(&self) -> (u32, u32) {
        lock(&self.congestion).prober.as_ref().map_or((0, 0), Prober::counts)
    }

    /// The call is over: the sending chains, which serve the next call too, go back to full
    /// quality.
    pub(super) fn end_congestion(&self) {
        let _adapting = lock(&self.adapting);
        let full = {
            let mut c = lock(&self.congestion);
            let full = c.controller.as_ref().map(Controller::full);
            let previous = c.last.take();
            *c = Congestion::default();
            full.filter(|_| previous.is_some()).map(|f| (f, previous))
        };
        if let Some((full, previous)) = full {
            self.apply_adaptation(&full, previous.as_ref());
        }
    }
}

/// webrtcbin's aux sender: `identity` in the packets' path, and `rtpgccbwe` beside it,
/// fed the transport-wide feedback (the `RTPTWCCPackets` events rtpsession sends upstream)
/// but not the packets.
///
/// In the path, rtpgccbwe paces every packet at the estimate with a 30 ms bucket: a 480p
/// frame (about 33 kbit at 500 kbit/s) left over 20 to 30 ms, which on a clean link took
/// glass-to-glass from 3.9 to 7.7 ms at p50 and from 7.6 to 30 ms at p95 (the bare
/// webrtcbin pair against us, `scripts/bench.sh --quick`). The encoders' targets already keep
/// the average under the estimate; the bursts of a frame go out as they did before, and a
/// bottleneck's queue absorbs them.
///
/// Each report then goes to `on_feedback` too (the standing-queue guard), and each packet
/// sent calls `on_sent` (which notices feedback that fell silent).
///
/// rtpgccbwe is not in the pipeline: only its src pad is active, for the feedback events,
/// without the pacing task that activating it starts. That task woke every 5 ms (its burst
/// time) to pace the packets that never go through it here: 200 wake-ups a second per call,
/// at both ends, for nothing (a thread per call, and about 0.5 % of a core per call on both
/// ends together, docs/benchmarks.md "Density").
fn estimator_beside_the_path(
    bwe: &gst::Element,
    on_feedback: impl Fn(&gst::StructureRef) + Send + Sync + 'static,
    on_sent: impl Fn(&[SentPacket]) + Send + Sync + 'static,
) -> Result<(gst::Element, gst::Pad), glib::BoolError> {
    let bin = gst::Bin::with_name("wilddog-congestion");
    let pass = gst::ElementFactory::make("identity").property("silent", true).build()?;
    bin.add(&pass)?;
    let (Some(sink), Some(src), Some(bwe_src)) =
        (pass.static_pad("sink"), pass.static_pad("src"), bwe.static_pad("src"))
    else {
        return Err(glib::bool_error!("identity or rtpgccbwe without pads"));
    };
    bwe_src.set_active(true)?;
    bwe_src.stop_task()?;
    bin.add_pad(&gst::GhostPad::builder_with_target(&sink)?.name("sink").build())?;
    bin.add_pad(&gst::GhostPad::builder_with_target(&src)?.name("src").build())?;
    src.add_probe(gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST, move |_, info| {
        let read = |buffer: &gst::BufferRef| {
            let rtp = gst_rtp::RTPBuffer::from_buffer_readable(buffer).ok()?;
            Some(SentPacket {
                pt: rtp.payload_type(),
                ssrc: rtp.ssrc(),
                seq: rtp.seq(),
                size: buffer.size() as u32,
            })
        };
        let packets: Vec<SentPacket> = match &info.data {
            Some(gst::PadProbeData::Buffer(buffer)) => read(buffer).into_iter().collect(),
            Some(gst::PadProbeData::BufferList(list)) => list.iter().filter_map(read).collect(),
            _ => Vec::new(),
        };
        on_sent(&packets);
        gst::PadProbeReturn::Ok
    });
    src.add_probe(gst::PadProbeType::EVENT_UPSTREAM, move |_, info| {
        if let Some(gst::PadProbeData::Event(event)) = &info.data
            && let Some(feedback) = event.structure().filter(|s| s.name() == "RTPTWCCPackets")
        {
            let _ = bwe_src.send_event(event.clone());
            on_feedback(feedback);
        }
        gst::PadProbeReturn::Ok
    });
    Ok((bin.upcast(), sink))
}

/// `element`, its only reference made floating, for webrtcbin's `request-aux-sender`.
///
/// webrtcbin before 1.24.4 (Debian 12 has 1.22) takes the returned element with
/// `gst_object_ref_sink()` and drops that reference once it added the element to its bin:
/// given the full reference a Rust element is (gstreamer-rs sinks every new element), it took
/// one more reference that it never dropped, and each call's aux sender (our bin, its
/// `identity`, bus and pads, and through a probe rtpgccbwe's src pad) outlived the call, one
/// per call served (found with `GST_TRACERS=leaks`; upstream "request-aux-sender, only sink
/// floating refs", 1.24.4). A floating reference is what every version sinks without adding
/// one of its own.
fn floating(element: gst::Element) -> gst::Element {
    // SAFETY: the element is alive (we own a reference); g_object_force_floating only sets
    // its floating flag, and the one reference handed to webrtcbin is the one it sinks.
    unsafe {
        glib::gobject_ffi::g_object_force_floating(
            element.as_ptr() as *mut glib::gobject_ffi::GObject
        );
    }
    element
}

/// The estimator of a peer connection ([`estimator_beside_the_path`]): its src pad, which it
/// activated itself, is deactivated with it.
#[derive(Debug)]
struct Estimator(gst::Element);

impl Drop for Estimator {
    fn drop(&mut self) {
        if let Some(src) = self.0.static_pad("src") {
            let _ = src.set_active(false);
        }
    }
}
