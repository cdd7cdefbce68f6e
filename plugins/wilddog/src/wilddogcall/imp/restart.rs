//! Restarts of a call's media: a dying path noticed, and the peer connection rebuilt for an
//! ICE restart.
//!
//! webrtcbin 1.22 cannot restart ICE in place (an offer made with `ice-restart` keeps its
//! `a=ice-ufrag`/`a=ice-pwd`), and a second `create-offer` on a negotiated webrtcbin can fail
//! ("Caps negotiation on pad src_0 failed": the audio receive pad was tied to the video
//! transceiver). So a restart makes a **new peer connection on the same conversation**: a new
//! webrtcbin (new ICE agent: new credentials and candidates; new DTLS certificate: a new
//! fingerprint, so the peer starts a new DTLS association), the sending chains linked to it,
//! and its remote streams decoded by the decoders that fed `video_src`/`audio_src`, which stay:
//! the user's pipeline sees no pad go away. The caller makes one for
//! `CreateOffer { ice_restart: true }`; the callee for an offer on a negotiated connection
//! whose ICE credentials or fingerprint changed. The old webrtcbin goes
//! to NULL on a thread of its own.
//!
//! The path is watched on the media worker: RTP packets counted into the decoders; a call
//! that received media and then nothing for [`PATH_SILENCE`] (from a peer that sends no
//! media: no RTCP for [`RTCP_SILENCE`]) reports [`Input::MediaDisconnected`] (libnice does
//! not notice a black-holed path for a long time), and [`Input::MediaConnected`] when
//! packets come again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gst::prelude::*;
use gst::subclass::prelude::*;
use wilddog_call::{CallState, Input};

use super::{CAT, Media, WilddogCall, lock, remove_child, take_out};
use crate::media::{self, StreamKind};
use crate::sdp_direction::Direction;

/// Silence on a connection that carried media, after which its path counts as lost. Above the
/// frame interval of a slow video and RTCP-only lulls, below what a user waits.
pub(super) const PATH_SILENCE: Duration = Duration::from_millis(2000);

/// Silence of the RTCP of a peer that sends no media, after which its path counts as lost.
/// Over RTCP's longest regular interval (RFC 3550: 5 s at most, randomized to 1.5 times and
/// compensated: about 9.1 s); WebRTC peers report every 0.1 to 1 s while they receive.
pub(super) const RTCP_SILENCE: Duration = Duration::from_secs(10);

/// How long stopping waits for the peer connections replaced by restarts to go down.
const DISPOSAL_WAIT: Duration = Duration::from_secs(3);

/// What the media worker knows of the path.
#[derive(Debug, Default)]
pub(super) struct PathWatch {
    /// Remote packets counted at the last look.
    packets: u64,
    /// When that count last changed, or the connection (re)connected.
    active_at: Option<Instant>,
    /// Whether this call received media at all (a peer that sends nothing is not watched).
    received: bool,
    /// Whether the loss was reported (and not the way back yet).
    lost: bool,
    /// Whether the peer's description has no section it sends us media in (every section
    /// rejected, inactive or recvonly): its media's silence is then what the call is, not a
    /// lost path, and its RTCP is watched instead ([`RTCP_SILENCE`]).
    peer_sends_nothing: bool,
    /// The src pads of the kinds the peer's description says it sends, and since when the
    /// call is connected: one still without a stream [`ANNOUNCED_STREAM_WAIT`] later is held
    /// with a gap ([`WilddogCall::hold_unexposed_pad`]).
    announced: Vec<&'static str>,
    announced_since: Option<Instant>,
}

/// How long a stream the peer announced (its section sends) may take to come once the call
/// is connected and other media flows, before its src pad appears with a gap
/// ([`WilddogCall::hold_unexposed_pad`]). A peer may announce video it never sends (a
/// callee whose video source never starts; an echo once answered an audio-only caller so,
/// and now answers that section `inactive`: `negotiation::kinds_to_send_nothing_of`); the
/// caller's sink on `video_src` then never prerolled and held its audio sink at the first
/// buffer for the whole call. A stream later than this still goes
/// on behind that pad (unless the pad feeds a muxer: it ends).
pub(super) const ANNOUNCED_STREAM_WAIT: Duration = Duration::from_secs(4);

impl WilddogCall {
    /// Looks at the media path (the media worker calls it between actions): silence after
    /// media → [`Input::MediaDisconnected`]; media again → [`Input::MediaConnected`].
    pub(super) fn check_path(&self) {
        let now = Instant::now();
        let report = {
            let mut st = lock(&self.state);
            let connected = st.call_state == Some(CallState::Connected);
            let watch = &mut st.path;
            // A peer that sends no media (a recorder) still sends RTCP (its reports on what
            // it receives, its transport-wide feedback): that is what its path carries.
            let (packets, silence, what) = if watch.peer_sends_nothing {
                (self.counters.remote_rtcp.load(Ordering::Relaxed), RTCP_SILENCE, "RTCP")
            } else {
                (self.counters.remote_packets.load(Ordering::Relaxed), PATH_SILENCE, "media")
            };
            if !connected {
                // What the peer announced stays: its description comes before the call
                // connects.
                let fresh = PathWatch {
                    packets,
                    peer_sends_nothing: watch.peer_sends_nothing,
                    announced: std::mem::take(&mut watch.announced),
                    ..PathWatch::default()
                };
                *watch = fresh;
                return;
            }
            // From the call's connection, not the path's: a sink held by the missing stream
            // holds the other stream too, which the watch below takes for a lost path, and
            // each ICE restart connects anew.
            let since = *watch.announced_since.get_or_insert(now);
            let announced_late = watch.received
                && !watch.announced.is_empty()
                && now.duration_since(since) >= ANNOUNCED_STREAM_WAIT;
            if announced_late {
                // A later description (a restart's) announcing more waits as long again.
                watch.announced_since = Some(now);
                let announced = std::mem::take(&mut watch.announced);
                let missing: Vec<&'static str> =
                    announced.into_iter().filter(|name| !st.exposed.contains(name)).collect();
                drop(st);
                for name in missing {
                    gst::info!(
                        CAT,
                        imp = self,
                        "the peer announced a stream for {name} but sent none in \
                         {ANNOUNCED_STREAM_WAIT:?}: a gap until it comes"
                    );
                    self.hold_unexposed_pad(name);
                }
                return;
            }
            let watch = &mut st.path;
            if packets != watch.packets {
                watch.packets = packets;
                watch.active_at = Some(now);
                watch.received = true;
                let back = std::mem::take(&mut watch.lost);
                if back {
                    st.media_failure = None;
                }
                back.then_some((Input::MediaConnected, what, silence))
            } else {
                let since = *watch.active_at.get_or_insert(now);
                let silent = now.duration_since(since) >= silence;
                let lost = (watch.received && !watch.lost && silent).then(|| {
                    watch.lost = true;
                    Input::MediaDisconnected
                });
                if lost.is_some() {
                    // The message of the 41004 should no restart bring the path back.
                    st.media_failure = Some(format!(
                        "no path to the peer: no {what} for {silence:?}, and no ICE restart \
                         brought it back"
                    ));
                }
                lost.map(|input| (input, what, silence))
            }
        };
        if let Some((input, what, silence)) = report {
            match input {
                Input::MediaDisconnected => gst::warning!(
                    CAT,
                    imp = self,
                    "no {what} for {silence:?}: the path is lost, restarting"
                ),
                _ => gst::info!(CAT, imp = self, "media flows again"),
            }
            self.input(input);
        }
    }

    /// The peer's offer or answer: whether it sends us media at all (a section with a port,
    /// audio or video, neither `recvonly` nor `inactive`). Only such sections carry the RTP
    /// whose silence means a lost path. And what follows from the kinds it sends and takes:
    /// a src pad of a kind the peer never sends ends now
    /// ([`WilddogCall::end_unexposed_pad`]), and our video goes nowhere when the peer takes
    /// none (an `inactive` or `sendonly` video section: webrtcbin 1.22 sends what reaches its
    /// sink pad whatever the direction).
    pub(super) fn watch_remote_senders(&self, sdp: &gst_sdp::SDPMessageRef) {
        let peer = PeerMedia::of(sdp);
        if !peer.sends_audio && !peer.sends_video {
            gst::info!(CAT, imp = self, "the peer sends no media: its RTCP tells the path");
        }
        self.size_rtcp_for_peer(peer.sends_audio || peer.sends_video);
        let was_unwanted = self.counters.video_unwanted.swap(!peer.takes_video, Ordering::Relaxed);
        if was_unwanted == peer.takes_video {
            gst::info!(
                CAT,
                imp = self,
                "the peer {} our video",
                if peer.takes_video { "takes" } else { "takes none of" }
            );
            if peer.takes_video {
                // The first frame it gets must be one it can decode.
                self.force_keyframe();
            }
        }
        {
            let mut st = lock(&self.state);
            st.path.peer_sends_nothing = !peer.sends_audio && !peer.sends_video;
            st.path.announced = [(peer.sends_video, "video_src"), (peer.sends_audio, "audio_src")]
                .into_iter()
                .filter_map(|(sends, name)| sends.then_some(name))
                .collect();
        }
        // A sink waiting for a stream that never comes never prerolls, and keeps the whole
        // pipeline out of PLAYING: every other sink of it holds its first buffer, and the
        // remote audio stops at the jitterbuffer (which the path watch took for a lost path).
        // A callee too: answering an audio-only caller (its video section `recvonly`), the
        // sink of `video_src` kept the audio sink holding its first buffer for the whole
        // call. Its pads all end (EOS) when the call does anyway, so this ends one sooner.
        // Not a pad that loops back into this element (an echo): it is left idle
        // (`end_unexposed_pad`).
        let unsent = [(peer.sends_video, "video_src"), (peer.sends_audio, "audio_src")]
            .into_iter()
            .filter_map(|(sends, name)| (!sends).then_some(name));
        let caller = lock(&self.state).role == Some(wilddog_call::Role::Caller);
        if caller {
            for name in unsent {
                self.end_unexposed_pad(name);
            }
        } else {
            // Once connected: a pad that appears makes an application that adds a sink for
            // it in `pad-added` (a common way) take its pipeline through PAUSED again, and
            // ended while the callee answered, that broke the connection in the making
            // (`halves.rs`: ICE and DTLS failed in one run of two).
            lock(&self.state).unsent_pads = unsent.collect();
        }
    }

    /// The current peer connection connected (ICE and DTLS): silence counts from now, and
    /// the sending chains held back by a restart go to it.
    pub(super) fn path_connected(&self) {
        let (held, unsent) = {
            let mut st = lock(&self.state);
            st.path.active_at = Some(Instant::now());
            st.path.lost = false;
            (std::mem::take(&mut st.held_senders), std::mem::take(&mut st.unsent_pads))
        };
        for name in unsent {
            self.end_unexposed_pad(name);
        }
        let current = self.webrtcbin();
        for (src, sink) in held {
            // Pads of a peer connection replaced or torn down meanwhile stay apart.
            if sink.parent_element() != current || src.is_linked() {
                continue;
            }
            // The first frame through is a key frame (media::video_encoder_bin).
            if let Err(e) = src.link(&sink) {
                gst::warning!(CAT, imp = self, "cannot give the new connection our media: {e}");
            }
        }
    }

    /// Counts the peer's RTCP packets (into rtpsession), for [`Self::check_path`].
    pub(super) fn count_remote_rtcp(&self, rtcp_sink: &gst::Pad) {
        self.count_buffers(rtcp_sink, |c| &c.remote_rtcp);
    }

    /// Counts the RTP packets of a remote stream (into its decoder), for [`Self::check_path`].
    pub(super) fn count_remote_packets(&self, decoder_sink: &gst::Pad) {
        self.count_buffers(decoder_sink, |c| &c.remote_packets);
    }

    /// Adds one to `counter` of [`super::Counters`] for each buffer (or list) through `pad`.
    fn count_buffers(&self, pad: &gst::Pad, counter: fn(&super::Counters) -> &AtomicU64) {
        let weak = self.obj().downgrade();
        pad.add_probe(gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST, move |_, _| {
            if let Some(obj) = weak.upgrade() {
                counter(&obj.imp().counters).fetch_add(1, Ordering::Relaxed);
            }
            gst::PadProbeReturn::Ok
        });
    }

    /// Whether the current peer connection has begun negotiating (it has a local or remote
    /// description): a new offer or answer then needs a new peer connection.
    pub(super) fn negotiated(&self) -> bool {
        let Some(webrtcbin) = self.webrtcbin() else { return false };
        ["local-description", "remote-description"].iter().any(|name| {
            webrtcbin.property::<Option<gst_webrtc::WebRTCSessionDescription>>(name).is_some()
        })
    }

    /// Caller: an offer, on a new peer connection when this is a restart of a negotiated one.
    pub(super) fn offer_media(&self, ice_restart: bool) {
        if ice_restart && self.negotiated() && !self.rebuild_or_fail() {
            return;
        }
        self.create_offer(false);
    }

    /// Callee: applies an offer; one that restarts ICE on a negotiated peer connection goes
    /// to a new one (a renegotiation of the same transport is applied in place).
    pub(super) fn answer_media(&self, sdp: &str, ice_restart: bool) {
        if ice_restart && self.negotiated() && !self.rebuild_or_fail() {
            return;
        }
        self.apply_offer(sdp);
    }

    /// Rebuilds the peer connection; a failure is reported to the state machine (which tries
    /// again later). Whether the new one is ready.
    fn rebuild_or_fail(&self) -> bool {
        let started = Instant::now();
        match self.rebuild_peer_connection() {
            Ok(()) => {
                gst::info!(
                    CAT,
                    imp = self,
                    "new peer connection for an ICE restart in {:?}",
                    started.elapsed()
                );
                true
            }
            Err(e) => {
                gst::element_imp_warning!(
                    self,
                    gst::CoreError::Failed,
                    ("cannot make a new peer connection for an ICE restart: {}", e)
                );
                self.input(Input::MediaFailed);
                false
            }
        }
    }

    /// Replaces webrtcbin by a new one: the sending chains move to it, the remote streams'
    /// decoders (and the src pads they feed) stay for its streams, the old one is torn down on
    /// a thread of its own.
    fn rebuild_peer_connection(&self) -> Result<(), String> {
        let (old, senders, ice_servers) = {
            let mut st = lock(&self.state);
            let senders: Vec<gst::Pad> = [st.video_in.as_ref(), st.audio_in.as_ref()]
                .into_iter()
                .flatten()
                .filter_map(|s| s.encoder_bin.as_ref()?.static_pad("src"))
                .collect();
            (st.media.take(), senders, st.ice_servers.clone())
        };
        let Some(old) = old else { return self.prepare_media() };
        for src in &senders {
            media::detach_sender(src);
        }
        for dec in &old.decoders {
            if let Some(sink) = dec.static_pad("sink")
                && let Some(peer) = sink.peer()
            {
                let _ = peer.unlink(&sink);
            }
        }
        if let Err(e) = self.prepare_media() {
            // Keep what we had: the next attempt starts from it.
            lock(&self.state).media = Some(old);
            return Err(e);
        }
        // The sending chains wait until the new connection is up: until DTLS connects,
        // webrtcbin holds what it is given (and with it the chain's thread), and a connection
        // that never comes up would hold it for good, so that the next attempt could not
        // take the chains back. Nothing went through yet: they come off at once.
        let mut held = Vec::new();
        for src in &senders {
            if let Some(sink) = src.peer() {
                let _ = src.unlink(&sink);
                held.push((src.clone(), sink));
            }
        }
        let Media { webrtcbin: old_webrtcbin, stream_id, decoders, src_pads, .. } = old;
        let new_webrtcbin = {
            let mut st = lock(&self.state);
            st.prev_stats = None;
            st.counter_totals = Default::default();
            self.counters.media_begins();
            st.path.active_at = Some(Instant::now());
            let Some(m) = st.media.as_mut() else { return Err("torn down meanwhile".into()) };
            m.decoders = decoders;
            m.src_pads = src_pads;
            m.stream_id = stream_id.clone();
            let webrtcbin = m.webrtcbin.clone();
            st.held_senders.extend(held);
            webrtcbin
        };
        // The peer keeps seeing our tracks in the same MediaStream.
        for pad in new_webrtcbin.sink_pads() {
            if pad.find_property("msid").is_some() {
                pad.set_property("msid", &stream_id);
            }
        }
        self.apply_ice_servers(&ice_servers);
        self.dispose_in_background(vec![old_webrtcbin]);
        Ok(())
    }

    /// Takes children (a webrtcbin, decoders) out of the element now and sets them to NULL on
    /// a thread of their own (going to NULL can block for seconds, or for as long as a sink
    /// downstream holds a streaming thread); stopping waits for it.
    pub(super) fn dispose_in_background(&self, children: Vec<gst::Element>) {
        let obj = self.obj().clone();
        for child in &children {
            take_out(obj.upcast_ref(), child);
        }
        let (done_tx, done) = std::sync::mpsc::channel();
        let spawned =
            std::thread::Builder::new().name("wilddog-teardown".into()).spawn(move || {
                for child in children {
                    let _ = child.set_state(gst::State::Null);
                }
                let _ = done_tx.send(());
            });
        match spawned {
            Ok(handle) => lock(&self.state).disposals.push((handle, done)),
            Err(e) => gst::warning!(CAT, imp = self, "cannot start a teardown thread: {e}"),
        }
    }

    /// Waits for the old peer connections being torn down (stopping), at most
    /// [`DISPOSAL_WAIT`] in all: one that cannot finish yet (its streaming threads held
    /// downstream) ends on its own thread, out of the element already.
    pub(super) fn join_disposals(&self) {
        let disposals = std::mem::take(&mut lock(&self.state).disposals);
        let deadline = Instant::now() + DISPOSAL_WAIT;
        for (handle, done) in disposals {
            match done.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    gst::warning!(CAT, imp = self, "an old peer connection is still going down")
                }
                _ => {
                    let _ = handle.join();
                }
            }
        }
    }

    /// A remote stream of a new peer connection whose src pad exists already: into the
    /// decoder that feeds it (a new decoder behind the same pad when the codec changed).
    /// Whether the stream was taken.
    pub(super) fn continue_remote_stream(
        &self,
        webrtcbin: &gst::Element,
        pad: &gst::Pad,
        caps: &gst::CapsRef,
        kind: StreamKind,
    ) -> bool {
        let prefix = if kind == StreamKind::Video { "video" } else { "audio" };
        let current = {
            let st = lock(&self.state);
            let Some(m) = st.media.as_ref().filter(|m| &m.webrtcbin == webrtcbin) else {
                return false;
            };
            m.decoders.iter().find(|d| d.name().starts_with(prefix)).cloned()
        };
        let Some(decoder) = current else { return false };
        let Some(sink) = decoder.static_pad("sink") else { return false };
        if sink.is_linked() {
            return false;
        }
        let encoding = |caps: &gst::CapsRef| {
            caps.structure(0).and_then(|s| s.get::<String>("encoding-name").ok())
        };
        let same_codec = sink.current_caps().is_none_or(|c| encoding(&c) == encoding(caps));
        if same_codec {
            return match pad.link(&sink) {
                Ok(_) => {
                    gst::debug!(CAT, imp = self, "the new {prefix} stream goes on in its decoder");
                    true
                }
                Err(e) => {
                    gst::warning!(CAT, imp = self, "cannot link the new {prefix} stream: {e}");
                    false
                }
            };
        }
        self.replace_decoder(pad, caps, kind, &decoder)
    }

    /// The peer sends another codec after a restart: a new decoder behind the same src pad.
    fn replace_decoder(
        &self,
        pad: &gst::Pad,
        caps: &gst::CapsRef,
        kind: StreamKind,
        old: &gst::Bin,
    ) -> bool {
        let obj = self.obj();
        let name = if kind == StreamKind::Video { "video_src" } else { "audio_src" };
        let Some(ghost) = obj.static_pad(name).and_then(|p| p.downcast::<gst::GhostPad>().ok())
        else {
            return false;
        };
        let Ok((decoder, _)) = media::decoder_bin(caps) else { return false };
        let serial = lock(&self.state).media_serial;
        decoder.set_property("name", format!("{}-{serial}", decoder.name()));
        if obj.add(&decoder).is_err() {
            return false;
        }
        let _ = decoder.sync_state_with_parent();
        let (Some(sink), Some(src)) = (decoder.static_pad("sink"), decoder.static_pad("src"))
        else {
            return false;
        };
        self.count_remote_packets(&sink);
        self.watch_decoded(&src, &ghost, kind);
        if pad.link(&sink).is_err() || ghost.set_target(Some(&src)).is_err() {
            remove_child(obj.upcast_ref(), &decoder);
            return false;
        }
        {
            let mut st = lock(&self.state);
            if let Some(m) = st.media.as_mut() {
                m.decoders.retain(|d| d != old);
                m.decoders.push(decoder.clone());
            }
        }
        remove_child(obj.upcast_ref(), old);
        gst::info!(CAT, imp = self, "the peer sends {caps} after the restart: new decoder");
        true
    }
}

/// What the peer's description says it sends us and takes from us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PeerMedia {
    pub(crate) sends_audio: bool,
    pub(crate) sends_video: bool,
    /// Whether a video section of it receives (`sendrecv` or `recvonly`, with a port).
    pub(crate) takes_video: bool,
}

impl PeerMedia {
    pub(crate) fn of(sdp: &gst_sdp::SDPMessageRef) -> PeerMedia {
        let session = Direction::of_session(sdp);
        let mut peer = PeerMedia { sends_audio: false, sends_video: false, takes_video: false };
        // Port 0 is a rejected section, but not with `a=bundle-only`: an offer's section
        // carried in the BUNDLE (webrtcbin's max-bundle offers have every one but the first
        // so). Read as rejected, a callee took the audio of a call-test offer for none and
        // ended its `audio_src` before the stream came.
        for m in sdp
            .medias()
            .filter(|m| m.port() != 0 || m.attributes().any(|a| a.key() == "bundle-only"))
        {
            let direction = Direction::of_media(m, session);
            match m.media() {
                Some("audio") => peer.sends_audio |= direction.sends(),
                Some("video") => {
                    peer.sends_video |= direction.sends();
                    peer.takes_video |= direction.receives();
                }
                _ => {}
            }
        }
        peer
    }
}

#[cfg(test)]
mod tests {
    use super::PeerMedia;

    fn sdp(video: &str, audio: &str) -> gst_sdp::SDPMessage {
        let text = format!(
            "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE video0 audio1\r\n\
             {video}a=mid:video0\r\na=rtpmap:96 VP8/90000\r\n\
             m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:audio1\r\n{audio}\
             a=rtpmap:111 OPUS/48000/2\r\n"
        );
        // Each test may run in a process of its own (cargo nextest).
        gst::init().unwrap();
        gst_sdp::SDPMessage::parse_buffer(text.as_bytes()).unwrap()
    }

    /// Chromium's answer with a stopped video transceiver: the video section inactive but
    /// not rejected (port 9, the first of BUNDLE), audio sendrecv.
    #[test]
    fn an_inactive_video_section_neither_sends_nor_takes_video() {
        let msg = sdp(
            "m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=inactive\r\n",
            "a=sendrecv\r\n",
        );
        let peer = PeerMedia::of(&msg);
        assert_eq!(peer, PeerMedia { sends_audio: true, sends_video: false, takes_video: false });
    }

    #[test]
    fn directions_of_each_kind() {
        let video = |dir: &str| {
            format!("m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na={dir}\r\n")
        };
        let recvonly = PeerMedia::of(&sdp(&video("recvonly"), "a=recvonly\r\n"));
        assert_eq!(
            recvonly,
            PeerMedia { sends_audio: false, sends_video: false, takes_video: true }
        );
        let sendonly = PeerMedia::of(&sdp(&video("sendonly"), "a=sendrecv\r\n"));
        assert_eq!(
            sendonly,
            PeerMedia { sends_audio: true, sends_video: true, takes_video: false }
        );
        // Rejected (port 0): nothing either way, whatever its direction says.
        let rejected = PeerMedia::of(&sdp(
            "m=video 0 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=sendrecv\r\n",
            "",
        ));
        assert_eq!(
            rejected,
            PeerMedia { sends_audio: true, sends_video: false, takes_video: false }
        );
    }

    /// webrtcbin's max-bundle offer: every section but the first has port 0 and
    /// `a=bundle-only`, and is not rejected.
    #[test]
    fn a_bundle_only_section_of_an_offer_counts() {
        let msg = sdp(
            "m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=recvonly\r\n",
            "a=bundle-only\r\na=sendrecv\r\n",
        )
        .to_string()
        .replace("m=audio 9", "m=audio 0");
        let msg = gst_sdp::SDPMessage::parse_buffer(msg.as_bytes()).unwrap();
        let peer = PeerMedia::of(&msg);
        assert_eq!(peer, PeerMedia { sends_audio: true, sends_video: false, takes_video: true });
    }
}
