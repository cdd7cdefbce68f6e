//! Loss recovery of a call's peer connection (see [`crate::recovery`] for what and why):
//! NACK/RTX and the optional ULPFEC on the video transceiver, the jitterbuffer's wait for
//! retransmissions following the measured round trip once loss is seen, the peer's NACKs
//! held while congestion control sees the bottleneck congested, and Opus's in-band FEC and
//! ULPFEC's redundancy following the loss the transport-wide feedback reports.

use std::collections::HashMap;
use std::time::Instant;

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;

use super::stats::{Counter, LinkStats, StreamReading};
use super::{CAT, WilddogCall, lock};
use crate::media::{self, StreamKind};
use crate::recovery::{self, Fec};

/// Loss recovery state of the current peer connection.
#[derive(Debug, Default)]
pub(super) struct Recovery {
    /// webrtcbin's rtprtxsend (what it retransmitted).
    rtxsend: Option<glib::WeakRef<gst::Element>>,
    /// webrtcbin's rtpsession (its RTCP bandwidth follows the estimate).
    rtpsession: Option<glib::WeakRef<gst::Element>>,
    /// The session bandwidth set on it, bit/s (0: the start's).
    rtcp_bandwidth: f64,
    /// The remote description sends us no media (see
    /// [`recovery::SEND_ONLY_RTCP_MIN_INTERVAL_NS`]).
    peer_sends_nothing: bool,
    /// When the receiver last saw loss (a NACK or a lost packet).
    last_loss: Option<Instant>,
    /// NACKs sent and video packets given up at the last stats.
    seen: (u64, u64),
    /// The jitterbuffer latency set, ms (0: the element's `latency`, untouched).
    latency_ms: u32,
    /// The round trip the last stats measured (RTCP's, or what retransmissions took), ms.
    rtt_ms: u32,
    /// What a retransmission took at the last stats, ms (see [`retransmission_rtt_ms`]).
    retransmission_rtt_ms: u32,
    /// opusenc's `packet-loss-percentage` set.
    opus_loss: u32,
    /// The payload types of the remote description's video sections.
    video_payloads: Vec<u32>,
    /// Those of its audio sections (see [`recovery::FeedbackClock`]).
    audio_payloads: Vec<u32>,
    /// The video jitterbuffers (those that ask for retransmissions).
    video_jitterbuffers: Vec<glib::WeakRef<gst::Element>>,
    /// The audio ones: with the video's, what the stats count losses from (see
    /// [`WilddogCall::jitterbuffer_readings`]).
    audio_jitterbuffers: Vec<glib::WeakRef<gst::Element>>,
    /// The cumulative loss the peer's last report block about each of our SSRCs said (see
    /// [`WilddogCall::report_block_readings`]).
    reported_lost: HashMap<u32, i32>,
    /// What the retransmissions of the last second took.
    rtx_budget: recovery::RetransmissionBudget,
    /// rtprtxsend's packets that were a probe's padding, not retransmissions (the stats'
    /// `retransmitted` leaves them out).
    padding_sent: u64,
}

impl WilddogCall {
    /// A new peer connection: keep its retransmission sender for the stats, and make its
    /// video jitterbuffers ask for retransmissions.
    ///
    /// webrtcbin (1.22.0) sets each new jitterbuffer's `do-retransmission` from the `do-nack`
    /// of every transceiver of the transport in turn, not of the one whose stream it is, so
    /// with audio after video in one BUNDLE the video's ends up false and nothing is ever
    /// NACKed (the offer said `a=rtcp-fb:96 nack`, and an RTX payload type was negotiated,
    /// for nothing). The jitterbuffer's first packet tells its payload type: a video one
    /// turns retransmission requests on.
    pub(super) fn setup_recovery(&self, webrtcbin: &gst::Element) {
        *lock(&self.recovery) = Recovery::default();
        // Lip sync that cannot hold the picture for seconds: see
        // crate::recovery::LIP_SYNC_MAX_OFFSET_NS. rtpbin hands the step on to each
        // jitterbuffer it makes.
        match super::peer::rtpbin_of(webrtcbin) {
            Some(rtpbin) => {
                rtpbin.set_property("max-ts-offset", recovery::LIP_SYNC_MAX_OFFSET_NS);
                rtpbin.set_property("max-ts-offset-adjustment", recovery::LIP_SYNC_STEP_NS);
            }
            None => gst::warning!(CAT, imp = self, "webrtcbin has no rtpbin: lip sync unbounded"),
        }
        let weak = self.obj().downgrade();
        webrtcbin.connect("deep-element-added", false, move |values| {
            let element = values.get(2)?.get::<gst::Element>().ok()?;
            let obj = weak.upgrade()?;
            match element.factory()?.name().as_str() {
                "rtprtxsend" => {
                    lock(&obj.imp().recovery).rtxsend = Some(element.downgrade());
                    obj.imp().hold_retransmissions_when_congested(&element);
                    obj.imp().count_retransmissions(&element);
                }
                "rtpjitterbuffer" => obj.imp().watch_jitterbuffer(&element),
                // ULPFEC repairs from it: see crate::recovery::fec_storage_ns.
                "rtpstorage" => {
                    let validated =
                        lock(&obj.imp().state).validated.as_ref().map(|v| (v.fec, v.latency));
                    if let Some((Fec::UlpfecRed, latency)) = validated {
                        element.set_property("size-time", recovery::fec_storage_ns(latency));
                    }
                }
                // `fec=ulpfec-red`: see media::fix_red_twcc_extension_id.
                "rtpredenc" => media::fix_red_twcc_extension_id(&element),
                "rtpsession" => {
                    // Feedback in time: see crate::recovery::RTCP_MIN_INTERVAL_NS (a
                    // remote description read before this session was made may have said
                    // the peer sends nothing: see size_rtcp_for_peer).
                    let sends = !lock(&obj.imp().recovery).peer_sends_nothing;
                    element
                        .set_property("rtcp-min-interval", recovery::rtcp_min_interval_ns(sends));
                    // NACKs and key frame requests in time: see
                    // crate::recovery::rtcp_session_bandwidth. It follows the estimate
                    // (`follow_estimate_in_rtcp`); until there is one, the start's.
                    element.set_property(
                        "bandwidth",
                        recovery::rtcp_session_bandwidth(recovery::RTCP_START_ESTIMATE_BPS),
                    );
                    let sends_now = {
                        let mut r = lock(&obj.imp().recovery);
                        r.rtpsession = Some(element.downgrade());
                        !r.peer_sends_nothing
                    };
                    // A remote description read while this session was set up found no
                    // session to change: its interval now.
                    if sends_now != sends {
                        element.set_property(
                            "rtcp-min-interval",
                            recovery::rtcp_min_interval_ns(sends_now),
                        );
                    }
                    // A new source's packets go out at once, not after a second one in
                    // sequence: GStreamer (1.22) exempts retransmission streams from this
                    // probation only when their caps say `rtx` in lower case, and webrtcbin
                    // says `RTX`, so the first retransmission of a call waited for the next
                    // one (150 ms and more, its frame long given up). SRTP already
                    // authenticates every packet; browsers do no probation either.
                    element.set_property("probation", 0u32);
                    // Its receiving pads, now or when requested: the RTP's for transport-wide
                    // feedback at least every 100 ms while audio arrives (see
                    // crate::recovery::FeedbackClock), the RTCP's for the path watch of a
                    // peer that sends no media (restart.rs, check_path).
                    let weak = obj.downgrade();
                    element.connect_pad_added(move |_, pad| {
                        if let Some(obj) = weak.upgrade() {
                            obj.imp().watch_rtpsession_sink(pad);
                        }
                    });
                    for pad in element.sink_pads() {
                        obj.imp().watch_rtpsession_sink(&pad);
                    }
                }
                _ => {}
            }
            None
        });
    }

    /// webrtcbin's rtprtxsend, while there is one.
    pub(super) fn rtx_sender(&self) -> Option<gst::Element> {
        lock(&self.recovery).rtxsend.as_ref().and_then(|w| w.upgrade())
    }

    /// The peer's retransmission requests (NACKs, as rtpsession's upstream events to
    /// rtprtxsend) are not answered while congestion control sees the bottleneck congested
    /// (see [`crate::congestion::Controller::congested`]), nor once the retransmissions of
    /// the last second took their share of the estimate (see
    /// [`recovery::RetransmissionBudget`]).
    fn hold_retransmissions_when_congested(&self, rtxsend: &gst::Element) {
        let Some(src) = rtxsend.static_pad("src") else { return };
        let weak = self.obj().downgrade();
        src.add_probe(gst::PadProbeType::EVENT_UPSTREAM, move |_, info| {
            let Some(gst::PadProbeData::Event(event)) = &info.data else {
                return gst::PadProbeReturn::Ok;
            };
            let Some(request) =
                event.structure().filter(|s| s.name() == "GstRTPRetransmissionRequest")
            else {
                return gst::PadProbeReturn::Ok;
            };
            // A probe's padding: see crate::probe.
            if request.has_field(super::congestion::PADDING_REQUEST_FIELD) {
                return gst::PadProbeReturn::Ok;
            }
            let Some(obj) = weak.upgrade() else { return gst::PadProbeReturn::Remove };
            let over_budget = obj.imp().congestion_stats().is_some_and(|(estimate_kbps, _)| {
                !lock(&obj.imp().recovery)
                    .rtx_budget
                    .allows(Instant::now(), estimate_kbps.saturating_mul(1000))
            });
            if over_budget || obj.imp().congested() {
                gst::log!(
                    CAT,
                    imp = obj.imp(),
                    "retransmission request held ({})",
                    if over_budget { "over the budget" } else { "congested" }
                );
                // Replaced, not dropped: GStreamer 1.22 unrefs a NULL event when a probe
                // drops one given to gst_pad_push_event (see media::key_frame_requests).
                info.data = Some(gst::PadProbeData::Event(gst::event::CustomUpstream::new(
                    gst::Structure::new_empty("wilddog-retransmission-request-held"),
                )));
            }
            gst::PadProbeReturn::Ok
        });
    }

    /// A probe's padding asked rtprtxsend for these packets again: not counted in the
    /// retransmission budget (see [`recovery::RetransmissionBudget`]).
    pub(super) fn note_padding_requested(&self, seqnums: impl Iterator<Item = u16>) {
        let now = Instant::now();
        let mut r = lock(&self.recovery);
        for seqnum in seqnums {
            r.rtx_budget.note_padding_requested(now, seqnum);
        }
    }

    /// Counts what rtprtxsend retransmits (its packets of an RTX payload type) into the
    /// retransmission budget.
    fn count_retransmissions(&self, rtxsend: &gst::Element) {
        let Some(src) = rtxsend.static_pad("src") else { return };
        let weak = self.obj().downgrade();
        let rtx = rtxsend.downgrade();
        // The payload types seen so far, and whether each is a retransmission's (from
        // rtprtxsend's `payload-type-map`, media → RTX, which webrtcbin sets after it made
        // the element).
        let kinds: std::sync::Mutex<Vec<(u8, bool)>> = std::sync::Mutex::new(Vec::new());
        src.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            let Some(gst::PadProbeData::Buffer(buffer)) = &info.data else {
                return gst::PadProbeReturn::Ok;
            };
            // The payload type, and the original's sequence number: an RTX payload starts
            // with it (RFC 4588).
            let Some((pt, original_seqnum)) =
                gst_rtp::RTPBuffer::from_buffer_readable(buffer).ok().map(|r| {
                    let original = r
                        .payload()
                        .ok()
                        .and_then(|p| p.get(..2))
                        .map(|b| u16::from_be_bytes([b[0], b[1]]));
                    (r.payload_type(), original)
                })
            else {
                return gst::PadProbeReturn::Ok;
            };
            let mut kinds = lock(&kinds);
            let is_rtx = match kinds.iter().find(|(p, _)| *p == pt) {
                Some(&(_, is_rtx)) => is_rtx,
                None => {
                    let Some(rtx) = rtx.upgrade() else { return gst::PadProbeReturn::Remove };
                    let Some(map) = rtx
                        .property::<Option<gst::Structure>>("payload-type-map")
                        .filter(|m| m.n_fields() > 0)
                    else {
                        // Not negotiated yet: nothing is retransmitted until then.
                        return gst::PadProbeReturn::Ok;
                    };
                    let is_rtx =
                        map.iter().any(|(_, v)| v.get::<u32>().is_ok_and(|v| v == u32::from(pt)));
                    kinds.push((pt, is_rtx));
                    is_rtx
                }
            };
            drop(kinds);
            if is_rtx {
                let Some(obj) = weak.upgrade() else { return gst::PadProbeReturn::Remove };
                let mut r = lock(&obj.imp().recovery);
                if !r.rtx_budget.note_sent(Instant::now(), buffer.size() as u64, original_seqnum) {
                    r.padding_sent += 1;
                }
            }
            gst::PadProbeReturn::Ok
        });
    }

    fn watch_jitterbuffer(&self, jitterbuffer: &gst::Element) {
        let Some(sink) = jitterbuffer.static_pad("sink") else { return };
        let weak = self.obj().downgrade();
        let jb = jitterbuffer.downgrade();
        sink.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            let pt = match &info.data {
                Some(gst::PadProbeData::Buffer(buffer)) => {
                    gst_rtp::RTPBuffer::from_buffer_readable(buffer)
                        .ok()
                        .map(|rtp| rtp.payload_type())
                }
                _ => None,
            };
            if let (Some(pt), Some(obj), Some(jb)) = (pt, weak.upgrade(), jb.upgrade())
                && lock(&obj.imp().recovery).video_payloads.contains(&u32::from(pt))
            {
                gst::debug!(CAT, obj = jb, "video (payload type {pt}): NACKs on");
                jb.set_property("do-retransmission", true);
                // Ask for a packet once a later one shows it missing, not when its expected
                // time passes: on a slow link a frame's packets come a serialization time
                // apart (38 ms for 1200 bytes at 250 kbit/s), and the estimate of when the
                // next one is due made the jitterbuffer ask for packets that were only late
                // (the retransmissions came as duplicates, on a link with no room for them).
                jb.set_property("rtx-next-seqnum", false);
                // A gap shows when a later packet arrives: ask at once (see
                // crate::recovery::RTX_DELAY_MS), not half a frame interval later.
                jb.set_property("rtx-delay", recovery::RTX_DELAY_MS as i32);
                // Ask again while a retransmission can still come: see
                // crate::recovery::RTX_RETRY_PERIOD_MS.
                jb.set_property("rtx-retry-period", recovery::RTX_RETRY_PERIOD_MS as i32);
                let mut r = lock(&obj.imp().recovery);
                if r.latency_ms > 0 {
                    jb.set_property("latency", r.latency_ms);
                }
                r.video_jitterbuffers.push(jb.downgrade());
                drop(r);
                obj.imp().watch_retransmission_requests(&jb);
                obj.imp().watch_lost_packets(&jb);
            } else if pt.is_some()
                && let Some(jb) = jb.upgrade()
            {
                // Audio: no `nack` negotiated (nor RTX), and webrtcbin may have set it on
                // from a video transceiver of the same transport (see setup_recovery): the
                // audio jitterbuffer NACKed packets that were only late, 3 to 130 in 4 s
                // calls on a clean link, for nothing any sender would resend.
                jb.set_property("do-retransmission", false);
                if let Some(obj) = weak.upgrade() {
                    lock(&obj.imp().recovery).audio_jitterbuffers.push(jb.downgrade());
                }
            }
            gst::PadProbeReturn::Remove
        });
    }

    /// The first retransmission request of a video jitterbuffer makes every video
    /// jitterbuffer wait for retransmissions at once, not at the next stats (a second or
    /// more later: the losses of that second, key frames among them, were given up after
    /// the clean link's `latency`, before their retransmissions could arrive).
    fn watch_retransmission_requests(&self, jitterbuffer: &gst::Element) {
        self.watch_loss_event(
            jitterbuffer.static_pad("sink"),
            gst::PadProbeType::EVENT_UPSTREAM,
            "GstRTPRetransmissionRequest",
            "first retransmission request",
        );
    }

    /// A packet the video jitterbuffer gave up without asking for it (its `GstRTPPacketLost`
    /// event) is loss seen too: a lone packet's loss (a frame of one packet, as a still or
    /// simple picture makes, or a small size on a slow link) shows only when the next
    /// frame's packet comes, a frame interval after it was due and past the clean link's
    /// `latency`, so no request ever left and the wait never grew: under 3 % loss the test
    /// caller's stream was repaired by key frames alone (0 NACKs, 4 to 7 PLIs in 16 to 20 s).
    /// (The stats' loss count, which should have shown it, read an empty jitterbuffer: see
    /// [`Self::jitterbuffer_readings`].)
    fn watch_lost_packets(&self, jitterbuffer: &gst::Element) {
        self.watch_loss_event(
            jitterbuffer.static_pad("src"),
            gst::PadProbeType::EVENT_DOWNSTREAM,
            "GstRTPPacketLost",
            "first packet given up",
        );
    }

    /// Calls [`Self::loss_seen`] (logged as `what`) for each custom event named `event_name`
    /// that passes `pad` in the direction of `direction`.
    fn watch_loss_event(
        &self,
        pad: Option<gst::Pad>,
        direction: gst::PadProbeType,
        event_name: &'static str,
        what: &'static str,
    ) {
        let Some(pad) = pad else { return };
        let weak = self.obj().downgrade();
        pad.add_probe(direction, move |_, info| {
            let Some(gst::PadProbeData::Event(event)) = &info.data else {
                return gst::PadProbeReturn::Ok;
            };
            if event.structure().is_none_or(|s| s.name() != event_name) {
                return gst::PadProbeReturn::Ok;
            }
            let Some(obj) = weak.upgrade() else { return gst::PadProbeReturn::Remove };
            obj.imp().loss_seen(what);
            gst::PadProbeReturn::Ok
        });
    }

    /// Loss seen by a video jitterbuffer: from the first, every video jitterbuffer waits for
    /// retransmissions ([`recovery::retransmission_wait_ms`]) at once, not at the next stats.
    fn loss_seen(&self, what: &str) {
        let base = match lock(&self.state).validated.as_ref() {
            Some(v) => v.latency,
            None => return,
        };
        let (wanted, jitterbuffers) = {
            let mut r = lock(&self.recovery);
            r.last_loss = Some(Instant::now());
            if r.latency_ms != 0 {
                // Already waiting; the stats follow the round trip from here.
                return;
            }
            let wanted = recovery::retransmission_wait_ms(base, r.rtt_ms);
            r.latency_ms = wanted;
            let jbs: Vec<gst::Element> =
                r.video_jitterbuffers.iter().filter_map(|w| w.upgrade()).collect();
            (wanted, jbs)
        };
        gst::info!(CAT, imp = self, "{what}: video jitterbuffer waits {wanted} ms");
        // On another thread: the jitterbuffer pushes a retransmission request from its timer
        // thread holding its lock, which setting `latency` takes (here it deadlocked).
        let spawned =
            std::thread::Builder::new().name("wilddog-jb-latency".into()).spawn(move || {
                for jb in &jitterbuffers {
                    jb.set_property("latency", wanted);
                }
            });
        if let Err(e) = spawned {
            gst::warning!(CAT, imp = self, "cannot set the jitterbuffer latency: {e}");
        }
    }

    /// What congestion control and loss recovery take from a remote description, before
    /// webrtcbin gets it: an offer (`offer`: we answer it) or an answer.
    pub(super) fn follow_remote_description(&self, sdp: &gst_sdp::SDPMessageRef, offer: bool) {
        self.follow_remote_payloads(sdp);
        self.follow_remote_twcc(sdp);
        if offer {
            self.answer_with_our_ssrc();
        }
    }

    /// An answerer's codec preferences name the SSRC each of its payloaders sends with, so
    /// that the answer's `a=ssrc` lines name the streams we send.
    ///
    /// webrtcbin (1.22) takes the SSRC of an answer's `a=ssrc` lines and of its RTX group
    /// from the answer's caps, which come from the codec preferences, not from the sink pad
    /// as in an offer. Without it, an answer with RTX listed only a stray RTX SSRC: Chrome
    /// took that for the section's stream and the real one for an unsignaled stream of no
    /// track, and decoded our video without ever showing it (a 0x0 `<video>`). Audio the
    /// same: with no `a=ssrc` Chrome routes our audio by its payload type alone, which it
    /// does not do for a caller of an audio-only stream whose video section we answer
    /// `inactive` (an echo): it dropped every packet ("Failed to demux RTP packet"), and
    /// the page heard nothing, with no error.
    fn answer_with_our_ssrc(&self) {
        let senders = {
            let st = lock(&self.state);
            let Some(m) = st.media.as_ref() else { return };
            let payloader = |s: Option<&super::SendStream>| s.and_then(|s| s.payloader.clone());
            [
                (m.video_transceiver.clone(), payloader(st.video_in.as_ref())),
                (m.audio_transceiver.clone(), payloader(st.audio_in.as_ref())),
            ]
        };
        for (transceiver, payloader) in senders {
            let (Some(transceiver), Some(payloader)) = (transceiver, payloader) else { continue };
            let Some(ssrc) = media::payloader_ssrc(&payloader) else { continue };
            let Some(caps) = transceiver.property::<Option<gst::Caps>>("codec-preferences") else {
                continue;
            };
            transceiver.set_property("codec-preferences", media::with_ssrc(caps, ssrc));
        }
    }

    /// A remote description: which payload types carry video, which audio.
    fn follow_remote_payloads(&self, sdp: &gst_sdp::SDPMessageRef) {
        let pts = |kind: &str| -> Vec<u32> {
            sdp.medias()
                .filter(|m| m.media() == Some(kind))
                .flat_map(|m| (0..m.formats_len()).filter_map(|i| m.format(i)?.parse::<u32>().ok()))
                .collect()
        };
        let mut r = lock(&self.recovery);
        r.video_payloads = pts("video");
        r.audio_payloads = pts("audio");
    }

    /// What a receiving pad of rtpsession carries is watched: see [`Self::pace_feedback`] and
    /// [`Self::count_remote_rtcp`].
    fn watch_rtpsession_sink(&self, pad: &gst::Pad) {
        let name = pad.name();
        if name.starts_with("recv_rtp_sink") {
            self.pace_feedback(pad);
        } else if name.starts_with("recv_rtcp_sink") {
            self.count_remote_rtcp(pad);
            self.watch_report_blocks(pad);
        }
    }

    /// The peer's report blocks on `pad` (rtpsession's `recv_rtcp_sink`, after SRTP): see
    /// [`Self::report_block_readings`].
    fn watch_report_blocks(&self, pad: &gst::Pad) {
        let weak = self.obj().downgrade();
        pad.add_probe(
            gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST,
            move |_, info| {
                let Some(obj) = weak.upgrade() else { return gst::PadProbeReturn::Remove };
                match &info.data {
                    Some(gst::PadProbeData::Buffer(buffer)) => obj.imp().note_report_blocks(buffer),
                    Some(gst::PadProbeData::BufferList(list)) => {
                        list.iter().for_each(|b| obj.imp().note_report_blocks(b))
                    }
                    _ => {}
                }
                gst::PadProbeReturn::Ok
            },
        );
    }

    /// Marks an audio packet on `pad` (rtpsession's `recv_rtp_sink`, after SRTP) as the end
    /// of a frame when the transport-wide feedback has waited
    /// [`recovery::TWCC_FEEDBACK_INTERVAL`] (see [`recovery::FeedbackClock`]).
    fn pace_feedback(&self, pad: &gst::Pad) {
        let weak = self.obj().downgrade();
        let clock = std::sync::Mutex::new(recovery::FeedbackClock::default());
        let mark = move |buffer: &mut gst::Buffer| {
            let (marker, pt) = match gst_rtp::RTPBuffer::from_buffer_readable(buffer) {
                Ok(rtp) => (rtp.is_marker(), rtp.payload_type()),
                Err(_) => return,
            };
            let audio = || {
                weak.upgrade().is_some_and(|obj| {
                    lock(&obj.imp().recovery).audio_payloads.contains(&u32::from(pt))
                })
            };
            if !lock(&clock).mark(Instant::now(), marker, audio) {
                return;
            }
            if let Ok(mut rtp) = gst_rtp::RTPBuffer::from_buffer_writable(buffer.make_mut()) {
                rtp.set_marker(true);
            }
        };
        pad.add_probe(
            gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST,
            move |_, info| {
                match &mut info.data {
                    Some(gst::PadProbeData::Buffer(buffer)) => mark(buffer),
                    Some(gst::PadProbeData::BufferList(list)) => {
                        list.make_mut().foreach_mut(|mut buffer, _| {
                            mark(&mut buffer);
                            std::ops::ControlFlow::Continue(Some(buffer))
                        });
                    }
                    _ => {}
                }
                gst::PadProbeReturn::Ok
            },
        );
    }

    /// A new transceiver: video asks for and answers retransmissions (NACK/RTX), with ULPFEC
    /// in RED when `fec` says so; audio relies on Opus's own FEC.
    pub(super) fn configure_transceiver(
        &self,
        kind: StreamKind,
        transceiver: &gst_webrtc::WebRTCRTPTransceiver,
    ) {
        if kind != StreamKind::Video {
            return;
        }
        transceiver.set_property("do-nack", true);
        let fec = lock(&self.state).validated.as_ref().map(|v| v.fec).unwrap_or_default();
        if fec == Fec::UlpfecRed {
            transceiver.set_property("fec-type", gst_webrtc::WebRTCFECType::UlpRed);
            transceiver.set_property("fec-percentage", recovery::ulpfec_percentage(0.0));
        }
    }

    /// Every stats period: the jitterbuffer's wait and the senders' redundancy follow what the
    /// stats say about loss and the round trip.
    pub(super) fn recovery_tick(&self, stats: &LinkStats) {
        let now = Instant::now();
        let (base_latency, fec) = match lock(&self.state).validated.as_ref() {
            Some(v) => (v.latency, v.fec),
            None => return,
        };
        let jitterbuffers: Vec<gst::Element> =
            lock(&self.recovery).video_jitterbuffers.iter().filter_map(|w| w.upgrade()).collect();
        let (rtx_rtt_ms, video_lost) = video_jitterbuffer_stats(&jitterbuffers);
        // The path's loss before repair (recovery::FeedbackLoss); the receiver report's when
        // that is higher (or the only one: without congestion control, no feedback).
        let path_loss = self.feedback_loss_fraction().unwrap_or(0.0);
        let (latency, opus_loss) = {
            let mut r = lock(&self.recovery);
            // The video's losses only, as `watch_lost_packets`: an audio packet given up
            // (`packetsLost` counts them too) is no reason to hold the video longer.
            let seen = (stats.nack_sent, video_lost);
            if seen.0 > r.seen.0 || seen.1 > r.seen.1 {
                r.last_loss = Some(now);
            }
            r.seen = seen;
            r.rtt_ms = stats.rtt_ms.max(rtx_rtt_ms);
            r.retransmission_rtt_ms = rtx_rtt_ms;
            let lossy = r.last_loss.is_some_and(|t| now.duration_since(t) < recovery::LOSS_MEMORY);
            let wanted = if lossy {
                recovery::retransmission_wait_ms(base_latency, stats.rtt_ms.max(rtx_rtt_ms))
            } else {
                base_latency
            };
            let current = if r.latency_ms == 0 { base_latency } else { r.latency_ms };
            let latency = (wanted != current).then(|| {
                r.latency_ms = wanted;
                wanted
            });
            let opus = recovery::opus_loss_percentage(path_loss.max(stats.audio_fraction_lost));
            let opus_loss = (opus != r.opus_loss).then(|| {
                r.opus_loss = opus;
                opus
            });
            (latency, opus_loss)
        };
        let (audio_bin, video_transceiver) = {
            let st = lock(&self.state);
            (
                st.audio_in.as_ref().and_then(|s| s.encoder_bin.clone()),
                st.media.as_ref().and_then(|m| m.video_transceiver.clone()),
            )
        };
        if let Some(ms) = latency {
            gst::info!(
                CAT,
                imp = self,
                "video jitterbuffer waits {ms} ms for a missing packet (round trip {} ms, \
                 retransmission {} ms)",
                stats.rtt_ms,
                rtx_rtt_ms
            );
            // The video's only: audio is not retransmitted, and a longer wait there would
            // hold every packet after a lost one for nothing.
            for jb in &jitterbuffers {
                jb.set_property("latency", ms);
            }
        }
        if let (Some(pct), Some(enc)) =
            (opus_loss, audio_bin.as_ref().and_then(media::audio_encoder))
        {
            gst::debug!(CAT, imp = self, "Opus FEC for {pct} % loss");
            media::set_audio_loss_percentage(&enc, pct);
        }
        if fec == Fec::UlpfecRed
            && let Some(t) = video_transceiver
        {
            let pct = recovery::ulpfec_percentage(path_loss.max(stats.video_fraction_lost));
            self.set_fec_redundancy(pct);
            if t.property::<u32>("fec-percentage") != pct {
                t.set_property("fec-percentage", pct);
            }
        }
    }

    /// The remote description says whether the peer sends us media: a session that only
    /// sends gets sender reports a second apart (see
    /// [`recovery::SEND_ONLY_RTCP_MIN_INTERVAL_NS`]), one that receives feedback in time.
    pub(super) fn size_rtcp_for_peer(&self, peer_sends_media: bool) {
        let session = {
            let mut r = lock(&self.recovery);
            if r.peer_sends_nothing != peer_sends_media {
                return;
            }
            r.peer_sends_nothing = !peer_sends_media;
            r.rtpsession.as_ref().and_then(|w| w.upgrade())
        };
        let interval = recovery::rtcp_min_interval_ns(peer_sends_media);
        gst::info!(CAT, imp = self, "RTCP at least {} ms apart", interval / 1_000_000);
        if let Some(session) = session {
            session.set_property("rtcp-min-interval", interval);
        }
    }

    /// A new estimate of what the path carries (all we send, bit/s): the RTCP bandwidth
    /// follows it (see [`recovery::rtcp_session_bandwidth`]), when it moved by a tenth.
    pub(super) fn follow_estimate_in_rtcp(&self, estimate_bps: u32) {
        let wanted = recovery::rtcp_session_bandwidth(estimate_bps);
        let session = {
            let mut r = lock(&self.recovery);
            if (wanted - r.rtcp_bandwidth).abs() < r.rtcp_bandwidth * 0.1 {
                return;
            }
            r.rtcp_bandwidth = wanted;
            r.rtpsession.as_ref().and_then(|w| w.upgrade())
        };
        if let Some(session) = session {
            gst::debug!(CAT, imp = self, "RTCP sized for a session of {wanted} bit/s");
            session.set_property("bandwidth", wanted);
        }
    }

    /// What each jitterbuffer (the video's and the audio's) counted so far, for the stats'
    /// `remote.packetsLost` and `remote.packetsRepaired`: the packets it gave up (`num-lost`:
    /// lost, and not repaired in time) and those a retransmission repaired
    /// (`rtx-success-count`: a retransmission we asked for that arrived for a packet still
    /// missing; a probe's padding, resent copies of packets we have, is dropped before it).
    ///
    /// Read from the elements, not from webrtcbin's inbound-rtp `packets-lost` and
    /// `packets-repaired`: webrtcbin 1.22 reads those from the jitterbuffer its map holds for
    /// the SSRC, and each new jitterbuffer replaces it for every SSRC of the transport
    /// (`on_rtpbin_new_jitterbuffer` sets it on every map entry, not the stream's). The last
    /// one made is the peer's RTX stream's: rtpbin makes it when the first RTCP sender report
    /// of that SSRC comes, and it never gets a packet (rtprtxreceive gives retransmissions
    /// the media's SSRC before the demuxer). From then every stream read 0 lost and 0
    /// repaired. A peer that probes sends padding (RTX) from the call's start, so its RTX
    /// stream's reports, and the empty jitterbuffer, came before the first loss: `packetsLost`
    /// stayed 0 for the whole call under 3 % loss (while the video's jitterbuffer gave up 1
    /// and the audio's 18).
    pub(super) fn jitterbuffer_readings(&self) -> Vec<StreamReading> {
        let jitterbuffers: Vec<gst::Element> = {
            let r = lock(&self.recovery);
            r.video_jitterbuffers
                .iter()
                .chain(&r.audio_jitterbuffers)
                .filter_map(|w| w.upgrade())
                .collect()
        };
        jitterbuffers
            .iter()
            .map(|jb| {
                let stats = jb.property::<gst::Structure>("stats");
                // Element names are unique in the process: a new peer connection's
                // jitterbuffers are new streams.
                StreamReading::new(format!("jitterbuffer_{}", jb.name()))
                    .with(Counter::PacketsLost, stats.get::<u64>("num-lost").ok())
                    .with(Counter::PacketsRepaired, stats.get::<u64>("rtx-success-count").ok())
            })
            .collect()
    }

    /// Keeps what each report block of the peer's RTCP packet `buffer` (a receiver or
    /// sender report, after SRTP) says of the cumulative loss of the stream it is about.
    pub(super) fn note_report_blocks(&self, buffer: &gst::BufferRef) {
        let Ok(map) = buffer.map_readable() else { return };
        let blocks = recovery::report_blocks(&map);
        if blocks.is_empty() {
            return;
        }
        let mut r = lock(&self.recovery);
        for (ssrc, lost) in blocks {
            r.reported_lost.insert(ssrc, lost);
        }
    }

    /// The cumulative loss the peer last reported for each stream we send (`media_ssrcs`:
    /// our video's and audio's, not the RTX stream's), for the stats' `local.packetsLost`.
    ///
    /// Kept from the RTCP packets, not read from webrtcbin's remote-inbound-rtp
    /// `packets-lost`: GStreamer 1.22's rtpsession keeps only the last report block each
    /// peer source sent about any of our SSRCs (rtpsession.c: "FIXME, need to keep track who
    /// the RB block is from"), and webrtcbin reports a stream from the sources whose last
    /// block is about it. With our video, audio and RTX streams each reported, a stream's
    /// count stayed at a block long past and jumped when a source's last block happened to
    /// be about it again: under 3 % loss our video's read 0 throughout, our audio's 0 until
    /// 5 s after the link was clean, then 20.
    pub(super) fn report_block_readings(&self, media_ssrcs: &[u32]) -> Vec<StreamReading> {
        let r = lock(&self.recovery);
        media_ssrcs
            .iter()
            .filter_map(|ssrc| {
                let lost = *r.reported_lost.get(ssrc)?;
                // A negative count (duplicates) counts as none.
                let lost = u64::try_from(lost).unwrap_or(0);
                Some(
                    StreamReading::new(format!("report-block_{ssrc}"))
                        .with(Counter::RemotePacketsLost, Some(lost)),
                )
            })
            .collect()
    }

    /// Packets retransmitted so far (RTX, a probe's padding left out), the jitterbuffer
    /// latency now, ms, and what a retransmission we asked for took, ms, as the last
    /// [`Self::recovery_tick`] read it.
    pub(super) fn recovery_stats(&self) -> (u64, u32, u32) {
        let r = lock(&self.recovery);
        let rtx = r
            .rtxsend
            .as_ref()
            .and_then(|w| w.upgrade())
            .map(|e| u64::from(e.property::<u32>("num-rtx-packets")).saturating_sub(r.padding_sent))
            .unwrap_or(0);
        let (current, retransmission_rtt_ms) = (r.latency_ms, r.retransmission_rtt_ms);
        drop(r);
        let base = lock(&self.state).validated.as_ref().map(|v| v.latency).unwrap_or(0);
        (rtx, if current == 0 { base } else { current }, retransmission_rtt_ms)
    }
}

/// From the video jitterbuffers' `stats` (read once each): what a retransmission took, ms,
/// from the request to its arrival (their running average, the longest of them; 0 before
/// the first): a round trip, the time the request waited for its RTCP packet, and the
/// sender's turnaround; and the packets they gave up so far (`num-lost`).
fn video_jitterbuffer_stats(jitterbuffers: &[gst::Element]) -> (u32, u64) {
    jitterbuffers.iter().map(|jb| jb.property::<gst::Structure>("stats")).fold(
        (0, 0),
        |(rtt_ms, lost), stats| {
            let rtt = stats.get::<u64>("rtx-rtt").map_or(0, |ns| (ns / 1_000_000) as u32);
            (rtt_ms.max(rtt), lost + stats.get::<u64>("num-lost").unwrap_or(0))
        },
    )
}
