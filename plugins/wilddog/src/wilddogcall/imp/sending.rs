//! The sending chains: one per requested sink pad (`video_sink`, `audio_sink`), raw media in,
//! RTP out to the peer connection of the current call; they outlive peer connections, so a
//! callee sends in every call it answers.

use std::sync::atomic::Ordering;

use gst::prelude::*;
use gst::subclass::prelude::*;
use wilddog_call::Input;

use super::{CAT, Validated, WilddogCall, caps_size, lock};
use crate::media::{self, StreamKind};

impl WilddogCall {
    /// The payloaders of the video and audio sending chains (those there are).
    pub(super) fn payloaders(&self) -> Vec<gst::Element> {
        let st = lock(&self.state);
        [st.video_in.as_ref(), st.audio_in.as_ref()]
            .into_iter()
            .flatten()
            .filter_map(|s| s.payloader.clone())
            .collect()
    }

    pub(super) fn build_encoders(&self, v: &Validated) -> Result<(), media::MediaError> {
        let mut st = lock(&self.state);
        let mut built = Vec::new();
        for stream in {
            let st = &mut *st;
            [st.video_in.as_mut(), st.audio_in.as_mut()]
        }
        .into_iter()
        .flatten()
        {
            if stream.encoder_bin.is_some() {
                continue;
            }
            let (bin, encoder, payloader) = match stream.kind {
                StreamKind::Video => {
                    let (bin, enc) = media::video_encoder_bin(&v.video)?;
                    let pay = last_element(&bin);
                    (bin, Some(enc), pay)
                }
                StreamKind::Audio => {
                    let bin = media::audio_encoder_bin(media::OPUS_PAYLOAD)?;
                    let pay = last_element(&bin);
                    (bin, None, pay)
                }
            };
            // Count the frames that reach the encoder (the local fps of the stats), on the
            // pad before it, which stays when an answerer switches the encoder.
            if let Some(enc) = &encoder
                && let Some(enc_sink) = enc.static_pad("sink").and_then(|p| p.peer())
            {
                let weak = self.obj().downgrade();
                enc_sink.add_probe(gst::PadProbeType::BUFFER, move |pad, _| {
                    if let Some(obj) = weak.upgrade() {
                        let c = &obj.imp().counters;
                        let before = c.local_frames.fetch_add(1, Ordering::Relaxed);
                        lock(&c.first_frames).local.get_or_insert(super::stats::FirstFrame {
                            at: std::time::Instant::now(),
                            frames_at: before + 1,
                        });
                        // Every frame: congestion control changes the size sent.
                        if let Some((w, h)) = caps_size(pad) {
                            c.local_width.store(w, Ordering::Relaxed);
                            c.local_height.store(h, Ordering::Relaxed);
                        }
                    }
                    gst::PadProbeReturn::Ok
                });
            }
            // Video the peer takes none of (its section inactive or sendonly) stops before
            // the encoder: webrtcbin would send it into the section all the same.
            if stream.kind == StreamKind::Video
                && let Some(sink) = bin.static_pad("sink")
            {
                let weak = self.obj().downgrade();
                sink.add_probe(
                    gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST,
                    move |_, _| match weak.upgrade() {
                        Some(obj) if obj.imp().counters.video_unwanted.load(Ordering::Relaxed) => {
                            gst::PadProbeReturn::Drop
                        }
                        _ => gst::PadProbeReturn::Ok,
                    },
                );
            }
            // Between calls (no webrtcbin linked) the encoded packets go nowhere; nor before
            // the call's peer connection is connected: webrtcbin holds a packet until DTLS is
            // up (its transport's pad block), and with it this chain's streaming thread, so
            // that a call ending before it connects (the caller hung up, ICE failed) could not
            // detach the chain between two packets (media::detach_sender): its teardown
            // answered the held push `flushing`, which stopped the chain's queue and the
            // user's source for good, and every later call sent nothing. Caps and the other
            // events go on (an answerer's payload types: media::follow_payload_type); the
            // first video frame once connected is a key frame (`force_keyframe`).
            if let Some(src) = bin.static_pad("src") {
                let weak = self.obj().downgrade();
                src.add_probe(
                    gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST,
                    move |pad, _| {
                        let up = weak
                            .upgrade()
                            .is_some_and(|obj| obj.imp().media_up.load(Ordering::Acquire));
                        if up && pad.is_linked() {
                            gst::PadProbeReturn::Ok
                        } else {
                            gst::PadProbeReturn::Drop
                        }
                    },
                );
            }
            stream.encoder_bin = Some(bin.clone());
            stream.encoder = encoder;
            stream.payloader = payloader;
            built.push((bin, stream.ghost.clone()));
        }
        drop(st);
        for (bin, ghost) in built {
            // In the element before the ghost pad targets it (pads link within one parent).
            self.obj().add(&bin).map_err(|e| media::MediaError::Link(e.to_string()))?;
            let sink = bin
                .static_pad("sink")
                .ok_or_else(|| media::MediaError::Link("encoder sink".into()))?;
            ghost.set_target(Some(&sink)).map_err(|e| media::MediaError::Link(e.to_string()))?;
            let _ = bin.sync_state_with_parent();
        }
        Ok(())
    }

    pub(super) fn sink_event(&self, pad: &gst::GhostPad, event: gst::Event) -> bool {
        if let gst::EventView::Eos(_) = event.view() {
            let all_eos = {
                let mut st = lock(&self.state);
                for s in {
                    let st = &mut *st;
                    [st.video_in.as_mut(), st.audio_in.as_mut()]
                }
                .into_iter()
                .flatten()
                {
                    if &s.ghost == pad {
                        s.eos = true;
                    }
                }
                [st.video_in.as_ref(), st.audio_in.as_ref()].into_iter().flatten().all(|s| s.eos)
            };
            if all_eos {
                gst::info!(CAT, imp = self, "every sink pad got EOS: hanging up");
                // The element is done: its src pads end with this call (its teardown), or
                // now if there is none.
                self.inputs_ended.store(true, Ordering::Release);
                self.end_src_pads_unless_kept();
                self.input(Input::Close);
                // The element is done: let the pipeline see EOS.
                let obj = self.obj();
                let _ = obj.post_message(gst::message::Eos::builder().src(&*obj).build());
            }
            // EOS is ours: webrtcbin must keep running until the call is torn down.
            return true;
        }
        gst::Pad::event_default(pad, Some(&*self.obj()), event)
    }
}

fn last_element(bin: &gst::Bin) -> Option<gst::Element> {
    let src = bin.static_pad("src")?.downcast::<gst::GhostPad>().ok()?.target()?;
    src.parent_element()
}
