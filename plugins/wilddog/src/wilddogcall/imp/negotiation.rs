//! SDP negotiation of a call's peer connection: offers and answers made and applied through
//! webrtcbin, what we change in the SDP we send (bitrates, one MediaStream), what an
//! answerer follows of an offer (payload types, the video codec), and the offered sections
//! it rejects (port 0, or no codec we decode: `crate::sdp_reject`) without ending the call.

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use wilddog_call::Input;

use super::{CAT, WilddogCall, lock};
use crate::media::{self, StreamKind, VideoParams};

impl WilddogCall {
    pub(super) fn create_offer(&self, ice_restart: bool) {
        let Some(webrtcbin) = self.webrtcbin() else { return };
        let weak = self.obj().downgrade();
        let webrtc_weak = webrtcbin.downgrade();
        let promise = gst::Promise::with_change_func(move |reply| {
            let (Some(obj), Some(webrtcbin)) = (weak.upgrade(), webrtc_weak.upgrade()) else {
                return;
            };
            let imp = obj.imp();
            match reply_description(reply, "offer") {
                Ok(offer) => {
                    webrtcbin.emit_by_name::<()>(
                        "set-local-description",
                        &[&offer, &None::<gst::Promise>],
                    );
                    match imp.outgoing_sdp(offer.sdp()) {
                        Ok(sdp) => imp.input(Input::LocalOffer { sdp }),
                        Err(e) => gst::warning!(CAT, imp = imp, "offer as text: {e}"),
                    }
                }
                Err(e) => imp.negotiation_failed(&format!("create-offer failed: {e}")),
            }
        });
        let options = ice_restart
            .then(|| gst::Structure::builder("options").field("ice-restart", true).build());
        webrtcbin.emit_by_name::<()>("create-offer", &[&options, &promise]);
    }

    /// The SDP text of a local offer or answer as it goes to the peer: `b=AS:<max-bitrate>`
    /// and `x-google-max-bitrate` on the video section (no floor: `media::set_video_bitrate_cap`),
    /// and every sent section in one MediaStream (`a=msid`).
    pub(super) fn outgoing_sdp(
        &self,
        sdp: &gst_sdp::SDPMessageRef,
    ) -> Result<String, glib::BoolError> {
        let (kbps, stream_id, fingerprint) = {
            let st = lock(&self.state);
            (
                st.validated.as_ref().map(|v| v.video.bitrate_kbps),
                st.media.as_ref().map(|m| m.stream_id.clone()),
                st.media.as_ref().map(|m| m.connectivity.fingerprint.clone()),
            )
        };
        let mut msg = sdp.to_owned();
        // The real fingerprint of our certificate (webrtcbin's is wrong: `crate::dtls`).
        if let Some(fingerprint) = fingerprint.filter(|f| !f.is_empty()) {
            crate::dtls::set_fingerprints(&mut msg, &fingerprint);
        }
        if let Some(max) = kbps {
            media::set_video_bandwidth(&mut msg, max);
            media::set_video_bitrate_cap(&mut msg, max);
        }
        if let Some(stream_id) = stream_id {
            media::label_media_stream(&mut msg, &stream_id);
        }
        media::drop_unbacked_transport_cc(&mut msg);
        msg.as_text()
    }

    pub(super) fn apply_offer(&self, sdp: &str) {
        gst::debug!(CAT, imp = self, "remote offer:\n{sdp}");
        let Some(webrtcbin) = self.webrtcbin() else { return };
        let desc = match parse_sdp(gst_webrtc::WebRTCSDPType::Offer, sdp) {
            Ok(d) => d,
            Err(e) => {
                self.negotiation_failed(&format!("the peer's offer does not parse: {e}"));
                return;
            }
        };
        // Rejected sections (port 0, no codec we decode) are answered port 0, out of
        // BUNDLE; the rest of the call goes on.
        let offer = desc.sdp().to_owned();
        let rejected = crate::sdp_reject::rejected_sections(&offer, media::can_decode);
        for r in &rejected {
            let mid = r.mid.as_deref().unwrap_or("?");
            match r.reason {
                crate::sdp_reject::Reason::PortZero => gst::info!(
                    CAT,
                    imp = self,
                    "offered {} section (mid {mid}) has port 0: answered rejected",
                    r.media
                ),
                crate::sdp_reject::Reason::NoCodec => gst::element_imp_warning!(
                    self,
                    gst::StreamError::CodecNotFound,
                    (
                        "the offer's {} section (mid {}) has no codec this host decodes: it is rejected, the call goes on without it",
                        r.media,
                        mid
                    )
                ),
            }
        }
        let desc = gst_webrtc::WebRTCSessionDescription::new(
            gst_webrtc::WebRTCSDPType::Offer,
            crate::sdp_reject::offer_for_webrtcbin(&offer, &rejected),
        );
        self.follow_offer_payloads(desc.sdp());
        self.watch_remote_senders(desc.sdp());
        let send_nothing = self.kinds_to_send_nothing_of(desc.sdp());
        let weak = self.obj().downgrade();
        let webrtc_weak = webrtcbin.downgrade();
        let promise = gst::Promise::with_change_func(move |reply| {
            let (Some(obj), Some(webrtcbin)) = (weak.upgrade(), webrtc_weak.upgrade()) else {
                return;
            };
            if let Some(e) = reply_error(reply) {
                obj.imp().negotiation_failed(&format!("webrtcbin refused the peer's offer: {e}"));
                return;
            }
            let weak = obj.downgrade();
            let webrtc_weak = webrtcbin.downgrade();
            let promise = gst::Promise::with_change_func(move |reply| {
                let (Some(obj), Some(webrtcbin)) = (weak.upgrade(), webrtc_weak.upgrade()) else {
                    return;
                };
                let imp = obj.imp();
                match reply_description(reply, "answer") {
                    Ok(answer) => {
                        let mut sdp = answer.sdp().to_owned();
                        crate::sdp_reject::own_fingerprint_in_rejected(&mut sdp);
                        for media in &send_nothing {
                            if crate::sdp_direction::stop_sending(&mut sdp, media) {
                                gst::info!(
                                    CAT,
                                    imp = imp,
                                    "answering {media} without sending: the peer sends none, \
                                     and all our {media}_sink gets is what our {media}_src would"
                                );
                            }
                        }
                        let answer = gst_webrtc::WebRTCSessionDescription::new(
                            gst_webrtc::WebRTCSDPType::Answer,
                            sdp,
                        );
                        webrtcbin.emit_by_name::<()>(
                            "set-local-description",
                            &[&answer, &None::<gst::Promise>],
                        );
                        match imp
                            .outgoing_sdp(answer.sdp())
                            .and_then(|sdp| clean_answer(&sdp, &offer))
                        {
                            Ok(sdp) => {
                                gst::debug!(CAT, imp = imp, "local answer:\n{sdp}");
                                imp.input(Input::LocalAnswer { sdp })
                            }
                            Err(e) => gst::warning!(CAT, imp = imp, "answer as text: {e}"),
                        }
                    }
                    Err(e) => imp.negotiation_failed(&format!("create-answer failed: {e}")),
                }
            });
            webrtcbin.emit_by_name::<()>("create-answer", &[&None::<gst::Structure>, &promise]);
        });
        webrtcbin.emit_by_name::<()>("set-remote-description", &[&desc, &promise]);
    }

    /// Answerer: the kinds (`video`, `audio`) the answer must not say it sends although
    /// this side has their sink pad. The offer sends none of the kind (its section
    /// `recvonly` or `inactive`), and the sink is fed only by this element's own src pad of
    /// that kind (an echo, `pipelines/echo.toml`), which will never get a stream: webrtcbin
    /// answers such a section `sendonly` (the transceiver has a sink pad), and a caller
    /// waited for the stream announced, its sink on `video_src` holding its audio sink for
    /// [`super::restart::ANNOUNCED_STREAM_WAIT`]. Not through the transceiver's direction:
    /// webrtcbin 1.22 rejects (port 0) a section whose offered and own directions are both
    /// `recvonly` instead of answering it `inactive`, so the answer is changed after it is made.
    fn kinds_to_send_nothing_of(&self, offer: &gst_sdp::SDPMessageRef) -> Vec<&'static str> {
        let peer = super::restart::PeerMedia::of(offer);
        [
            (peer.sends_video, StreamKind::Video, "video"),
            (peer.sends_audio, StreamKind::Audio, "audio"),
        ]
        .into_iter()
        .filter(|&(sends, kind, _)| !sends && self.sends_only_its_own(kind))
        .map(|(_, _, media)| media)
        .collect()
    }

    /// Caller: sets the peer's answer as remote description.
    pub(super) fn apply_answer(&self, sdp: &str) {
        gst::debug!(CAT, imp = self, "remote answer:\n{sdp}");
        let Some(webrtcbin) = self.webrtcbin() else { return };
        match parse_sdp(gst_webrtc::WebRTCSDPType::Answer, sdp) {
            Ok(desc) => {
                // Rejected sections shown as inactive ones of the bundle
                // (crate::sdp_reject::answer_for_webrtcbin).
                let mut msg = desc.sdp().to_owned();
                let offer = webrtcbin
                    .property::<Option<gst_webrtc::WebRTCSessionDescription>>("local-description")
                    .map(|d| d.sdp().to_owned());
                let completed = match &offer {
                    Some(offer) => crate::sdp_reject::answer_for_webrtcbin(&mut msg, offer),
                    None => Vec::new(),
                };
                if !completed.is_empty() {
                    gst::debug!(
                        CAT,
                        imp = self,
                        "rejected sections {completed:?} of the answer shown to webrtcbin as inactive"
                    );
                }
                let desc = gst_webrtc::WebRTCSessionDescription::new(
                    gst_webrtc::WebRTCSDPType::Answer,
                    msg,
                );
                self.follow_remote_description(desc.sdp(), false);
                self.watch_remote_senders(desc.sdp());
                let promise = self.refusal_watch(&webrtcbin, "the peer's answer");
                webrtcbin.emit_by_name::<()>("set-remote-description", &[&desc, &promise])
            }
            Err(e) => {
                self.negotiation_failed(&format!("the peer's answer does not parse: {e}"));
            }
        }
    }

    /// Answerer: send with the payload types the offer chose for our codecs, so that the
    /// transceivers' preferences intersect with the offer; an offer without our video codec
    /// switches the video encoder to one it has (media::answer_video_codec).
    pub(super) fn follow_offer_payloads(&self, sdp: &gst_sdp::SDPMessageRef) {
        // The codec it is set to, not the one a previous call switched it to: a callee goes
        // back to its own codec whenever an offer has it.
        let configured = lock(&self.settings).video_codec;
        // What is needed, taken out of the state: a codec switch waits for the encoder to be
        // between two frames, without holding the lock.
        let (video, video_transceiver, audio_transceiver, encoder_bin, video_pay, audio_pay) = {
            let st = lock(&self.state);
            let (Some(v), Some(m)) = (st.validated.as_ref(), st.media.as_ref()) else { return };
            let sender = |s: Option<&super::SendStream>| {
                let s = s?;
                Some((s.payloader.clone()?, s.encoder_bin.as_ref()?.static_pad("src")?))
            };
            (
                v.video.clone(),
                m.video_transceiver.clone(),
                m.audio_transceiver.clone(),
                st.video_in.as_ref().and_then(|s| s.encoder_bin.clone()),
                sender(st.video_in.as_ref()),
                sender(st.audio_in.as_ref()),
            )
        };
        // The running payloaders to move to the offer's payload types.
        let mut follow: Vec<(gst::Element, gst::Pad, u32)> = Vec::new();
        'video: {
            let Some((codec, pt, caps)) = media::answer_video_codec(sdp, configured) else {
                break 'video;
            };
            // The preferences first: a switched encoder's caps must fit them.
            if let Some(t) = &video_transceiver {
                let pay = video_pay.as_ref().map(|(p, _)| p);
                media::set_preferences_between_buffers(
                    t,
                    &self.answer_caps(caps.clone(), sdp),
                    pay,
                );
            }
            let switched = match &encoder_bin {
                Some(bin) if codec != video.codec => {
                    let params = VideoParams { codec, payload: pt, ..video.clone() };
                    match media::switch_video_codec(bin, &params, &caps) {
                        Ok(elements) => {
                            let old = video.codec;
                            gst::info!(
                                CAT,
                                imp = self,
                                "the offer has no {old:?}: sending {codec:?}"
                            );
                            Some(elements)
                        }
                        Err(e) => {
                            gst::warning!(CAT, imp = self, "cannot switch to {codec:?}: {e}");
                            break 'video;
                        }
                    }
                }
                _ => None,
            };
            let pay = switched.as_ref().map(|(_, pay)| pay).or(video_pay.as_ref().map(|(p, _)| p));
            if let (Some(pay), Some((_, src))) = (pay, &video_pay) {
                follow.push((pay.clone(), src.clone(), pt));
            }
            let mut st = lock(&self.state);
            if let Some(v) = st.validated.as_mut() {
                v.video.codec = codec;
                v.video.payload = pt;
            }
            if let (Some((encoder, pay)), Some(s)) = (switched, st.video_in.as_mut()) {
                s.encoder = Some(encoder);
                s.payloader = Some(pay);
            }
        }
        if let Some(pt) = media::payload_in_sdp(sdp, "audio", "OPUS") {
            if let Some(t) = &audio_transceiver {
                let pay = audio_pay.as_ref().map(|(p, _)| p);
                let caps = self.answer_caps(media::audio_rtp_caps(pt), sdp);
                media::set_preferences_between_buffers(t, &caps, pay);
            }
            if let Some((pay, src)) = &audio_pay {
                follow.push((pay.clone(), src.clone(), pt));
            }
        }
        // Congestion control and loss recovery follow the offer (imp/recovery.rs): the
        // payloaders, a switched one too, write the offer's TWCC extension id, which the
        // preferences above put into the answer (`answer_caps`).
        self.follow_remote_description(sdp, true);
        // Then the payloaders negotiate again, their new caps (payload type, extensions)
        // reaching webrtcbin before it answers.
        for (pay, src, pt) in follow {
            self.follow_payload_type(&pay, &src, pt);
        }
    }
}

impl WilddogCall {
    /// A running sending chain moves to the offer's payload type `pt` before the offer goes
    /// to webrtcbin, which answers with the payload type its sink pad last received and
    /// rejects the section when that is not the offer's (`media::follow_payload_type`).
    fn follow_payload_type(&self, payloader: &gst::Element, src: &gst::Pad, pt: u32) {
        if !media::follow_payload_type(payloader, src, pt) {
            gst::warning!(
                CAT,
                imp = self,
                "{} did not negotiate the offer's payload type {pt} within {:?}: webrtcbin may reject its section",
                payloader.name(),
                media::PAYLOAD_TYPE_WAIT
            );
        }
    }

    /// A promise for `set-remote-description` of `what` that ends the call at once, naming
    /// the cause, when webrtcbin refuses the description (instead of waiting out the call
    /// timeout with nothing said).
    fn refusal_watch(&self, webrtcbin: &gst::Element, what: &'static str) -> gst::Promise {
        let weak = self.obj().downgrade();
        let webrtc_weak = webrtcbin.downgrade();
        gst::Promise::with_change_func(move |reply| {
            let (Some(obj), Some(e)) = (weak.upgrade(), reply_error(reply)) else { return };
            // Not for a peer connection replaced meanwhile.
            if obj.imp().webrtcbin() == webrtc_weak.upgrade() {
                obj.imp().negotiation_failed(&format!("webrtcbin refused {what}: {e}"));
            }
        })
    }

    /// The negotiation failed: the call ends (41004 before the media connected) with `why`
    /// as the error's message.
    pub(super) fn negotiation_failed(&self, why: &str) {
        let message = format!("negotiation failed: {why}");
        gst::element_imp_warning!(self, gst::StreamError::Decode, ("{}", message));
        lock(&self.state).media_failure = Some(message);
        self.input(Input::MediaFailed);
    }

    /// A remote stream we cannot decode: dropped (into a `fakesink`, so that webrtcbin never
    /// sees `not-linked`) with a warning; the call goes on with its other streams.
    pub(super) fn drop_remote_stream(
        &self,
        webrtcbin: &gst::Element,
        pad: &gst::Pad,
        caps: &gst::Caps,
        why: &str,
    ) {
        gst::element_imp_warning!(
            self,
            gst::StreamError::CodecNotFound,
            ("remote stream dropped: {}", why),
            ["caps {}", caps]
        );
        let Ok(sink) = gst::ElementFactory::make("fakesink")
            .property("sync", false)
            .property("async", false)
            .build()
        else {
            return;
        };
        // In a bin of its own, kept with the decoders: the peer connection's teardown
        // removes it like one.
        let bin = gst::Bin::with_name(&format!("dropped-{}", pad.name()));
        let Some(target) = sink.static_pad("sink") else { return };
        let Ok(ghost) = gst::GhostPad::builder_with_target(&target) else { return };
        if bin.add(&sink).is_err() || bin.add_pad(&ghost.name("sink").build()).is_err() {
            return;
        }
        let obj = self.obj();
        if obj.add(&bin).is_err() {
            return;
        }
        let _ = bin.sync_state_with_parent();
        if let Some(sink_pad) = bin.static_pad("sink") {
            let _ = pad.link(&sink_pad);
        }
        let mut st = lock(&self.state);
        match st.media.as_mut() {
            Some(m) if &m.webrtcbin == webrtcbin => m.decoders.push(bin),
            _ => {
                drop(st);
                super::remove_child(obj.upcast_ref(), &bin);
            }
        }
    }
}

/// The answer text as it goes to the peer, its rejected sections made clean
/// (`crate::sdp_reject::clean_answer`).
fn clean_answer(sdp: &str, offer: &gst_sdp::SDPMessage) -> Result<String, glib::BoolError> {
    let mut msg = gst_sdp::SDPMessage::parse_buffer(sdp.as_bytes())
        .map_err(|e| glib::bool_error!("our own answer does not parse: {e}"))?;
    crate::sdp_reject::clean_answer(&mut msg, offer);
    msg.as_text()
}

pub(super) fn parse_sdp(
    kind: gst_webrtc::WebRTCSDPType,
    sdp: &str,
) -> Result<gst_webrtc::WebRTCSessionDescription, String> {
    let mut msg = gst_sdp::SDPMessage::parse_buffer(sdp.as_bytes()).map_err(|e| e.to_string())?;
    // Chrome's sender parameters mean nothing to webrtcbin, which would copy them into its
    // answer as bogus `a=x-google-*` lines (see media::drop_google_bitrates).
    media::drop_google_bitrates(&mut msg);
    Ok(gst_webrtc::WebRTCSessionDescription::new(kind, msg))
}

/// The error of a promise's reply (`set-*-description`), if it has one.
fn reply_error(reply: Result<Option<&gst::StructureRef>, gst::PromiseError>) -> Option<String> {
    match reply {
        Ok(Some(s)) => s.get::<glib::Error>("error").ok().map(|e| e.to_string()),
        // Interrupted or expired: the peer connection went away meanwhile.
        Ok(None) | Err(_) => None,
    }
}

pub(super) fn reply_description(
    reply: Result<Option<&gst::StructureRef>, gst::PromiseError>,
    field: &str,
) -> Result<gst_webrtc::WebRTCSessionDescription, String> {
    let reply = reply.map_err(|e| format!("{e:?}"))?.ok_or("empty reply")?;
    if let Ok(err) = reply.get::<glib::Error>("error") {
        return Err(err.to_string());
    }
    reply.get::<gst_webrtc::WebRTCSessionDescription>(field).map_err(|e| e.to_string())
}
