//! The peer connection of one call: webrtcbin made with its transceivers and linked to the
//! sending chains, the remote streams decoded and exposed as `video_src`/`audio_src`, and
//! its teardown at the end of the call.

use std::sync::atomic::Ordering;

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_webrtc::WebRTCRTPTransceiverDirection as Direction;
use wilddog_call::Input;

use super::pads::feeds_a_muxer;
use super::{CAT, Media, WilddogCall, caps_size, lock, remove_child};
use crate::media::{self, StreamKind};

/// A sending chain to link to a new peer connection.
struct Sender {
    kind: StreamKind,
    /// The chain's src pad (its encoder bin's).
    src: gst::Pad,
    /// The SSRC its payloader sends with, once it runs ([`media::payloader_ssrc`]).
    ssrc: Option<u32>,
}

impl WilddogCall {
    /// Makes the peer connection for the next call: webrtcbin with UPnP off and ICE
    /// restricted, the encoders linked to its sink pads (transceivers ready before any
    /// offer, so a callee's answer is sendrecv), receive-only transceivers for the kinds
    /// this side does not send.
    pub(super) fn prepare_media(&self) -> Result<(), String> {
        let (validated, serial) = {
            let mut st = lock(&self.state);
            if st.media.is_some() {
                return Ok(());
            }
            st.media_serial += 1;
            (st.validated.clone().ok_or("not started")?, st.media_serial)
        };
        // Not connected until it says so: the chains' packets wait (build_encoders).
        self.media_up.store(false, Ordering::Release);
        let webrtcbin = gst::ElementFactory::make("webrtcbin")
            .name(format!("webrtcbin{serial}"))
            .build()
            .map_err(|_| "webrtcbin is not installed (gst-plugins-bad)".to_owned())?;
        webrtcbin.set_property_from_str("bundle-policy", "max-bundle");
        webrtcbin.set_property("latency", validated.latency);
        let connectivity = self.setup_connectivity(&webrtcbin, &validated)?;

        let weak = self.obj().downgrade();
        webrtcbin.connect("on-ice-candidate", false, move |values| {
            let source = values.first().and_then(|v| v.get::<gst::Element>().ok());
            let mline = values.get(1).and_then(|v| v.get::<u32>().ok());
            let candidate = values.get(2).and_then(|v| v.get::<String>().ok());
            if let (Some(obj), Some(sdp_mline_index), Some(candidate)) =
                (weak.upgrade(), mline, candidate)
                // Not one of a peer connection replaced by an ICE restart.
                && obj.imp().webrtcbin() == source
            {
                obj.imp().input(Input::LocalCandidate { sdp_mline_index, candidate });
            }
            None
        });
        let weak = self.obj().downgrade();
        webrtcbin.connect_notify(Some("connection-state"), move |webrtcbin, _| {
            let state =
                webrtcbin.property::<gst_webrtc::WebRTCPeerConnectionState>("connection-state");
            if let Some(obj) = weak.upgrade() {
                obj.imp().connection_state(webrtcbin, state);
            }
        });
        let weak = self.obj().downgrade();
        webrtcbin.connect_pad_added(move |webrtcbin, pad| {
            if let Some(obj) = weak.upgrade() {
                obj.imp().remote_pad(webrtcbin, pad);
            }
        });

        self.setup_congestion(&webrtcbin, &validated);
        self.setup_recovery(&webrtcbin);
        self.obj().add(&webrtcbin).map_err(|e| e.to_string())?;
        let mut media = Media {
            webrtcbin: webrtcbin.clone(),
            stream_id: format!("wilddog-{}", glib::uuid_string_random()),
            video_transceiver: None,
            audio_transceiver: None,
            decoders: Vec::new(),
            src_pads: Vec::new(),
            connectivity,
        };
        let senders: Vec<Sender> = {
            let st = lock(&self.state);
            [st.video_in.as_ref(), st.audio_in.as_ref()]
                .into_iter()
                .flatten()
                .filter_map(|s| {
                    Some(Sender {
                        kind: s.kind,
                        src: s.encoder_bin.as_ref()?.static_pad("src")?,
                        ssrc: s.payloader.as_ref().and_then(media::payloader_ssrc),
                    })
                })
                .collect()
        };
        let links = match self.request_send_pads(&webrtcbin, &mut media, &senders, &validated) {
            Ok(links) => links,
            Err(e) => {
                // Not left in the bin: the next attempt makes another.
                remove_child(self.obj().upcast_ref(), &webrtcbin);
                return Err(e);
            }
        };
        if media.video_transceiver.is_none() {
            let t = media::add_recv_transceiver(
                &webrtcbin,
                &self.offer_caps(media::video_rtp_caps(
                    validated.video.codec,
                    validated.video.payload,
                )),
            );
            self.configure_transceiver(StreamKind::Video, &t);
            media.video_transceiver = Some(t);
        }
        if media.audio_transceiver.is_none() {
            media.audio_transceiver = Some(media::add_recv_transceiver(
                &webrtcbin,
                &self.offer_caps(media::audio_rtp_caps(media::OPUS_PAYLOAD)),
            ));
        }
        lock(&self.state).media = Some(media);
        webrtcbin.sync_state_with_parent().map_err(|e| e.to_string())?;
        // The running chains are linked only now that webrtcbin's sink pads are active. A pad
        // of a webrtcbin still in NULL is flushing: a chain pushing in between (the caps and
        // segment the link makes it send again, or the caps its payloader renegotiates on
        // the link's reconfigure) was answered `flushing`, which stopped its queue and the
        // user's source for good, with no error: the callee sent nothing in this call or
        // any later one.
        for (src, pad) in links {
            src.link(&pad).map_err(|e| format!("linking the encoder to webrtcbin: {e}"))?;
        }
        gst::debug!(CAT, imp = self, "peer connection {serial} ready");
        Ok(())
    }

    /// Requests a send pad (and transceiver) of `webrtcbin` for each sending chain; the
    /// chains (src pad) and the pads to link them to once webrtcbin runs. A chain still
    /// linked to a peer connection being replaced (its thread held in that webrtcbin, which a
    /// section the peer made inactive never releases) is not among them: it waits with the
    /// chains held back by the restart ([`WilddogCall::path_connected`]), so that the new
    /// peer connection is made anyway.
    ///
    /// The preferences name the SSRC the chain's payloader sends with, so that our offers
    /// have their `a=ssrc` lines whatever the chain did so far. webrtcbin (1.22) takes them
    /// from the caps its sink pad received, or else from the payloader's caps, and a chain
    /// whose source had not given its first buffer when the call was accepted (a microphone
    /// or a network source slow to start), or that waits unlinked for an ICE restart's new
    /// peer connection, had neither: the offer named no SSRC. Chromium answering such an
    /// offer with no video to receive (a page without a camera, or with one: its video
    /// `inactive` or `sendonly`) then did not route our audio by its payload type: no
    /// inbound-rtp at all, and its user heard nothing (as with the echo's answers,
    /// `answer_with_our_ssrc`).
    fn request_send_pads(
        &self,
        webrtcbin: &gst::Element,
        media: &mut Media,
        senders: &[Sender],
        validated: &super::Validated,
    ) -> Result<Vec<(gst::Pad, gst::Pad)>, String> {
        let mut links = Vec::new();
        for Sender { kind, src, ssrc } in senders {
            let caps = self.offer_caps(match kind {
                StreamKind::Video => {
                    media::video_rtp_caps(validated.video.codec, validated.video.payload)
                }
                // The payload type the chain last sent with (a previous call's offer chose
                // it): a buffer on its way when the chain is linked here still carries those
                // caps, and webrtcbin refuses caps outside the preferences (not-negotiated
                // would stop the chain). It moves to the next offer's (follow_payload_type).
                StreamKind::Audio => media::audio_rtp_caps(
                    src.current_caps()
                        .and_then(|c| c.structure(0)?.get::<i32>("payload").ok())
                        .and_then(|pt| u32::try_from(pt).ok())
                        .unwrap_or(media::OPUS_PAYLOAD),
                ),
            });
            let caps = match ssrc {
                Some(ssrc) => media::with_ssrc(caps, *ssrc),
                None => caps,
            };
            let (pad, transceiver) = media::request_send_pad(webrtcbin, &caps, Direction::Sendrecv)
                .map_err(|e| e.to_string())?;
            // The ssrc-level msid lines name the same stream as our media-level ones.
            if pad.find_property("msid").is_some() {
                pad.set_property("msid", &media.stream_id);
            }
            self.configure_transceiver(*kind, &transceiver);
            if src.is_linked() {
                gst::warning!(
                    CAT,
                    imp = self,
                    "the {kind:?} sending chain is still held by the previous peer connection: \
                     it follows once that one is gone"
                );
                lock(&self.state).held_senders.push((src.clone(), pad.clone()));
            } else {
                links.push((src.clone(), pad));
            }
            match kind {
                StreamKind::Video => media.video_transceiver = Some(transceiver),
                StreamKind::Audio => media.audio_transceiver = Some(transceiver),
            }
        }
        Ok(links)
    }

    /// Ends the peer connection: EOS out of the src pads, which are then removed, and
    /// webrtcbin goes.
    /// `keep_sending`: the element goes on to the next call (its encoders with it); false
    /// when it stops.
    pub(super) fn teardown_media(&self, keep_sending: bool) {
        let (media, senders) = {
            let mut st = lock(&self.state);
            let senders: Vec<gst::Pad> = [st.video_in.as_ref(), st.audio_in.as_ref()]
                .into_iter()
                .flatten()
                .filter_map(|s| s.encoder_bin.as_ref()?.static_pad("src"))
                .collect();
            (st.media.take(), senders)
        };
        self.media_up.store(false, Ordering::Release);
        let Some(media) = media else { return };
        let retiring: Vec<gst::Element> = media
            .decoders
            .iter()
            .map(|d| d.clone().upcast())
            .chain(std::iter::once(media.webrtcbin.clone()))
            .collect();
        lock(&self.retiring).extend(retiring.iter().cloned());
        // Out of the application's state changes from now on: an error of theirs that the
        // teardown causes (kept in the element, `handle_message`) still marks them failed,
        // and the pipeline going back to PLAYING (after a sink linked to a src pad prerolled)
        // would fail on them and switch every element back to PAUSED.
        for child in &retiring {
            child.set_locked_state(true);
        }
        self.end_congestion();
        // The encoders go on for the next call: unlinked between two buffers, they never see
        // the torn-down webrtcbin answer `flushing` (media::detach_sender). Not when the
        // element stops: the sources stop too, and a push held in a prerolling sink would
        // keep the chain from being idle until the state change goes on.
        if keep_sending {
            for src in &senders {
                media::detach_sender(src);
            }
        }
        let obj = self.obj();
        // Before the EOS: what the kept pads' decoders send from now on goes nowhere.
        let (ended_pads, keeping) = self.keep_src_pads(&media.src_pads, keep_sending);
        let mut eos_to = Vec::new();
        for dec in &media.decoders {
            if let Some(sink) = dec.static_pad("sink") {
                if let Some(peer) = sink.peer() {
                    let _ = peer.unlink(&sink);
                }
                eos_to.push(sink);
            }
        }
        let delivered = send_eos_without_waiting(eos_to);
        for pad in &ended_pads {
            self.remove_src_pad(pad);
        }
        self.remove_idle_src_pads(None);
        if !keeping {
            self.end_placeholders();
        }
        if delivered || !keep_sending {
            for dec in &media.decoders {
                remove_child(obj.upcast_ref(), dec);
            }
            remove_child(obj.upcast_ref(), &media.webrtcbin);
            self.retired(&retiring);
            gst::debug!(CAT, imp = self, "peer connection torn down");
            return;
        }
        // A remote stream's streaming thread is held downstream of its src pad (a sink
        // prerolling in a pipeline that has not gone back to PLAYING, a full queue nobody
        // drains): going to NULL here would wait for it, on the thread that sets up the
        // next call, which then never got its media (the next caller saw nothing for as
        // long as the sink held on). The old decoders and webrtcbin leave the element now
        // (their pad names are free for the next call) and go to NULL on a thread of their
        // own once the sink lets go; stopping the element waits for that.
        gst::warning!(
            CAT,
            imp = self,
            "a remote stream is still held downstream (a sink not playing?): the call's \
             peer connection goes down in the background"
        );
        self.dispose_in_background(retiring.clone());
        // Out of the element now: what they post reaches nobody.
        self.retired(&retiring);
    }

    /// The call's src pads that outlive it, when the element keeps them
    /// ([`WilddogCall::keeps_src_pads`]; `keep_sending`: it goes on to the next call): each
    /// loses its decoder, whose output (the EOS of the teardown too) goes nowhere from now
    /// on, and waits for the next call's stream. A sink behind it gets nothing: no EOS, which
    /// would end the branch (and, with every sink at EOS, the pipeline) for good, and no
    /// gap, which a sink that already prerolled does not need. Not a pad that feeds a muxer:
    /// the recording of this call is finalized by its EOS. The pads that end, and whether
    /// the element keeps its pads (the placeholders then stay too).
    fn keep_src_pads(
        &self,
        pads: &[gst::GhostPad],
        keep_sending: bool,
    ) -> (Vec<gst::GhostPad>, bool) {
        let _guard = lock(&self.keeping_pads);
        if !keep_sending || !self.keeps_src_pads() {
            return (pads.to_vec(), false);
        }
        let mut ended = Vec::new();
        let mut kept = Vec::new();
        for pad in pads {
            if feeds_a_muxer(pad.upcast_ref()) {
                ended.push(pad.clone());
                continue;
            }
            // Its frames are dropped (not `not-linked`, which would stop the decoder with an
            // error); its events (the EOS) go nowhere on the unlinked pad. Not dropped in a
            // probe: GStreamer 1.22 unrefs a dropped event twice (a CRITICAL each).
            if let Some(decoded) = pad.target() {
                decoded.add_probe(
                    gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST,
                    |_, _| gst::PadProbeReturn::Drop,
                );
            }
            let _ = pad.set_target(None::<&gst::Pad>);
            gst::debug!(CAT, imp = self, "{} stays for the next call", pad.name());
            kept.push(pad.clone());
        }
        lock(&self.state).placeholder_src_pads.extend(kept);
        (ended, true)
    }

    /// Children of a torn-down peer connection are out of the element: forget them.
    fn retired(&self, children: &[gst::Element]) {
        lock(&self.retiring).retain(|e| !children.contains(e));
    }

    /// Removes a remote stream's src pad if it is still ours: teardown and a remote stream
    /// being exposed on another thread may both try (see `src_pads`).
    fn remove_src_pad(&self, pad: &gst::GhostPad) {
        let obj = self.obj();
        let _guard = lock(&self.src_pads);
        if pad.parent().as_ref() == Some(obj.upcast_ref::<gst::Object>()) {
            let _ = obj.remove_pad(pad);
        }
    }

    pub(super) fn webrtcbin(&self) -> Option<gst::Element> {
        lock(&self.state).media.as_ref().map(|m| m.webrtcbin.clone())
    }

    pub(super) fn connection_state(
        &self,
        webrtcbin: &gst::Element,
        state: gst_webrtc::WebRTCPeerConnectionState,
    ) {
        if self.webrtcbin().as_ref() != Some(webrtcbin) {
            return;
        }
        gst::debug!(CAT, imp = self, "connection state {state:?}");
        match state {
            gst_webrtc::WebRTCPeerConnectionState::Connected => {
                lock(&self.state).media_failure = None;
                // The chains' packets go to it from now (build_encoders).
                self.media_up.store(true, Ordering::Release);
                self.path_connected();
                self.force_keyframe();
                self.input(Input::MediaConnected);
            }
            // A connected call's path is dying: the state machine restarts ICE.
            gst_webrtc::WebRTCPeerConnectionState::Disconnected => {
                self.input(Input::MediaDisconnected)
            }
            // Before the media ever connected the call fails (41004); after, a restart.
            gst_webrtc::WebRTCPeerConnectionState::Failed => {
                lock(&self.state).media_failure.get_or_insert_with(|| {
                    "ICE failed: no candidate pair reached the peer (or DTLS failed on it)"
                        .to_owned()
                });
                self.input(Input::MediaFailed)
            }
            _ => {}
        }
    }

    /// A key frame right when DTLS is up: the ones before went nowhere.
    pub(super) fn force_keyframe(&self) {
        let encoder = lock(&self.state).video_in.as_ref().and_then(|s| s.encoder.clone());
        if let Some(encoder) = encoder {
            let event = gst_video::UpstreamForceKeyUnitEvent::builder().all_headers(true).build();
            if let Some(src) = encoder.static_pad("src") {
                let _ = src.send_event(event);
            }
        }
    }

    /// A remote stream from webrtcbin: decode it and expose `video_src`/`audio_src`.
    pub(super) fn remote_pad(&self, webrtcbin: &gst::Element, pad: &gst::Pad) {
        if pad.direction() != gst::PadDirection::Src || self.webrtcbin().as_ref() != Some(webrtcbin)
        {
            return;
        }
        let Some(caps) = pad.current_caps() else {
            gst::warning!(CAT, imp = self, "remote pad {} without caps", pad.name());
            return;
        };
        let obj = self.obj();
        let audio = caps.structure(0).and_then(|s| s.get::<&str>("media").ok()) == Some("audio");
        let (kind, name) =
            if audio { (StreamKind::Audio, "audio_src") } else { (StreamKind::Video, "video_src") };
        // The peer sends a kind it first did not (a re-offer): the idle pad an echo left
        // makes way for the stream's.
        self.remove_idle_src_pads(Some(name));
        // A stream that came late, or the next call's (the element keeps its pads): behind
        // the pad that held its place.
        let placeholder = self.take_placeholder(name);
        if placeholder.is_none() && obj.static_pad(name).is_some() {
            // A peer connection rebuilt for an ICE restart: its stream goes on behind the pad.
            if !self.continue_remote_stream(webrtcbin, pad, &caps, kind) {
                gst::warning!(CAT, imp = self, "a second remote {name} stream: ignored");
            }
            return;
        }
        let (dec, kind) = match media::decoder_bin(&caps) {
            Ok(d) => d,
            Err(e) => {
                self.drop_remote_stream(webrtcbin, pad, &caps, &e.to_string());
                return;
            }
        };
        let name = if kind == StreamKind::Video { "video_src" } else { "audio_src" };
        if obj.add(&dec).is_err() {
            return;
        }
        let _ = dec.sync_state_with_parent();
        let (Some(dec_sink), Some(dec_src)) = (dec.static_pad("sink"), dec.static_pad("src"))
        else {
            return;
        };
        if let Err(e) = pad.link(&dec_sink) {
            gst::warning!(CAT, imp = self, "cannot link the remote stream: {e}");
            return;
        }
        let late = placeholder.is_some();
        let ghost = match placeholder {
            Some(ghost) => {
                if let Err(e) = ghost.set_target(Some(&dec_src)) {
                    gst::warning!(CAT, imp = self, "cannot give {name} its late stream: {e}");
                    return;
                }
                gst::debug!(CAT, imp = self, "{name}'s stream came: behind its waiting pad");
                ghost
            }
            None => {
                let Some(templ) = obj.pad_template(name) else { return };
                let Ok(ghost) = gst::GhostPad::builder_from_template_with_target(&templ, &dec_src)
                else {
                    return;
                };
                ghost.name(name).build()
            }
        };
        self.count_remote_packets(&dec_sink);
        self.watch_decoded(&dec_src, &ghost, kind);
        let _ = ghost.set_active(true);
        let first = {
            let mut st = lock(&self.state);
            match st.media.as_mut() {
                Some(m) if &m.webrtcbin == webrtcbin => {
                    m.decoders.push(dec.clone());
                    m.src_pads.push(ghost.clone());
                    st.exposed.push(name);
                }
                // The call was torn down meanwhile: nobody would remove this decoder, and
                // the next call's stream would find its pad name taken. A waiting pad given
                // to it waits again (or ends).
                _ => {
                    drop(st);
                    remove_child(obj.upcast_ref(), &dec);
                    if late {
                        self.keep_or_end(ghost);
                    }
                    return;
                }
            }
            !std::mem::replace(&mut st.stream_received, true)
        };
        if !late {
            let _ = obj.add_pad(&ghost);
        }
        if self.webrtcbin().as_ref() != Some(webrtcbin) {
            if self.is_placeholder(&ghost) {
                // The teardown kept it for the next call: it stays, with no stream.
                return;
            }
            // Torn down between recording the pad and adding it: teardown could not remove
            // a pad that was not there yet (or did, if it came after add_pad), and its EOS
            // went nowhere. The sink the application linked in pad-added gets one of its own:
            // an async sink added to a playing pipeline holds the pipeline in PAUSED until it
            // prerolls, and every sink linked to a later call's pads would wait there too.
            end_linked_stream(&ghost, &format!("{}/{name}", obj.name()));
            gst::debug!(CAT, imp = self, "{name} came as the call ended: EOS on its own");
            self.remove_src_pad(&ghost);
            return;
        }
        if first {
            self.raise(
                "wilddog-stream-received",
                gst::Structure::new_empty("wilddog-stream-received"),
                &[],
            );
        }
    }

    /// Counts the decoded frames of a decoder feeding `ghost`, and drops them while nobody
    /// linked `ghost` (a src pad nobody linked must not stop the call with not-linked).
    pub(super) fn watch_decoded(
        &self,
        dec_src: &gst::Pad,
        ghost: &gst::GhostPad,
        kind: StreamKind,
    ) {
        let ghost_weak = ghost.downgrade();
        let weak = self.obj().downgrade();
        dec_src.add_probe(gst::PadProbeType::BUFFER, move |pad, _| {
            if kind == StreamKind::Video
                && let Some(obj) = weak.upgrade()
            {
                obj.imp().remote_video_frame(pad);
            }
            match ghost_weak.upgrade() {
                Some(g) if g.is_linked() => gst::PadProbeReturn::Ok,
                _ => gst::PadProbeReturn::Drop,
            }
        });
    }

    pub(super) fn remote_video_frame(&self, pad: &gst::Pad) {
        let c = &self.counters;
        let before = c.remote_frames.fetch_add(1, Ordering::Relaxed);
        lock(&c.first_frames).remote.get_or_insert(super::stats::FirstFrame {
            at: std::time::Instant::now(),
            frames_at: before + 1,
        });
        // Every frame: the peer's congestion control changes the size it sends.
        let (width, height) = caps_size(pad).unwrap_or((0, 0));
        c.remote_width.store(width, Ordering::Relaxed);
        c.remote_height.store(height, Ordering::Relaxed);
        let began = {
            let mut st = lock(&self.state);
            if st.first_frame_done {
                return;
            }
            st.first_frame_done = true;
            st.call_began
        };
        let elapsed_ms = began.map(|b| b.elapsed().as_millis() as u64).unwrap_or(0);
        gst::info!(CAT, imp = self, "first remote frame {width}x{height} after {elapsed_ms} ms");
        let s = gst::Structure::builder("wilddog-first-frame")
            .field("width", width)
            .field("height", height)
            .field("elapsed-ms", elapsed_ms)
            .build();
        self.raise("wilddog-first-frame", s, &[&width, &height, &elapsed_ms]);
    }
}

/// How long a teardown waits for the EOS it sends into the decoders.
const EOS_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// The rtpbin inside `webrtcbin` (made with it, so never announced by `deep-element-added`).
pub(super) fn rtpbin_of(webrtcbin: &gst::Element) -> Option<gst::Element> {
    webrtcbin.downcast_ref::<gst::Bin>().and_then(|bin| {
        bin.children().into_iter().find(|e| e.factory().is_some_and(|f| f.name() == "rtpbin"))
    })
}

/// Ends the stream of a src pad that is linked but whose EOS went nowhere: stream-start,
/// segment and EOS into its peer.
fn end_linked_stream(pad: &gst::GhostPad, stream_id: &str) {
    let Some(peer) = pad.peer() else { return };
    let _ = peer.send_event(gst::event::StreamStart::new(stream_id));
    let _ =
        peer.send_event(gst::event::Segment::new(&gst::FormattedSegment::<gst::ClockTime>::new()));
    let _ = peer.send_event(gst::event::Eos::new());
}

/// EOS into each pad (through the decoder, serialized after its last frame), each on a
/// thread of its own, waiting at most [`EOS_WAIT`]: a serialized event waits for the pad's
/// streaming thread, which may be held downstream until the state change it would block goes
/// on. One thread per pad: a sink holding one stream in preroll (added while the pipeline
/// had lost its state for the other stream's sink) is let go once the other stream's sink
/// prerolls, on its EOS, which must not wait behind the first one.
/// Whether every EOS went through in time (no streaming thread held downstream).
fn send_eos_without_waiting(pads: Vec<gst::Pad>) -> bool {
    let (done_tx, done) = std::sync::mpsc::channel();
    let mut sent = 0;
    for pad in pads {
        let done_tx = done_tx.clone();
        let spawned = std::thread::Builder::new().name("wilddog-eos".into()).spawn(move || {
            let _ = pad.send_event(gst::event::Eos::new());
            let _ = done_tx.send(());
        });
        if spawned.is_ok() {
            sent += 1;
        }
    }
    let deadline = std::time::Instant::now() + EOS_WAIT;
    for _ in 0..sent {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if done.recv_timeout(left).is_err() {
            gst::debug!(CAT, "the EOS of the remote streams is still on its way");
            return false;
        }
    }
    true
}
