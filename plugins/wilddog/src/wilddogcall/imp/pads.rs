//! The lifecycle of the src pads (`video_src`, `audio_src`) between and across calls. A src
//! pad is exposed when the remote stream comes (`peer`); this module owns every other state
//! of it: a pad that waits for its stream (a ghost pad with no target yet, holding its
//! sink's place with a gap while an announced stream is late), a pad exposed before an offer
//! is answered (to see whether an echo feeds its own sink), a pad kept across calls by an
//! element that answers further calls (a `gst-launch-1.0` line links it once, so it must
//! outlive each call), a pad that loops back into the element (left idle), and a pad the
//! call never used, ended with EOS so that the pipeline can end. They are in one place
//! because each of those decisions depends on the others (one lock, `keeping_pads`, orders
//! keeping against ending).

use std::sync::atomic::Ordering;

use gst::prelude::*;
use gst::subclass::prelude::*;
use wilddog_call::CallState;

use super::{AnswerPolicy, CAT, State, WilddogCall, lock};
use crate::media::StreamKind;

impl WilddogCall {
    /// A caller's call is over: the pipeline posts EOS once every sink has had one, and
    /// branches waiting for a src pad that never came (`c.video_src ! … ! fakesink` in
    /// gst-launch: linked when the pad appears) would never get one. Each src pad the call
    /// never exposed appears now, carries EOS, and goes.
    pub(super) fn end_unexposed(&self) {
        for name in ["video_src", "audio_src"] {
            self.end_unexposed_pad(name);
        }
    }

    /// The template of src pad `name` if the call has not exposed it (nor ended it) yet, and
    /// marks it exposed: once per call.
    fn claim_unexposed(&self, name: &'static str) -> Option<gst::PadTemplate> {
        {
            let mut st = lock(&self.state);
            if st.exposed.contains(&name) {
                return None;
            }
            st.exposed.push(name);
        }
        let obj = self.obj();
        if obj.static_pad(name).is_some() {
            return None;
        }
        obj.pad_template(name)
    }

    /// One src pad the call never exposed appears, carries EOS, and goes (see
    /// [`Self::end_unexposed`] and `watch_remote_senders`); once per call. A pad that holds
    /// the place of a stream that has not come ([`Self::hold_unexposed_pad`],
    /// [`Self::expose_for_answer`]) ends too.
    ///
    /// An element that keeps its src pads between calls ([`Self::keeps_src_pads`]) holds the
    /// pad instead ([`Self::hold_unexposed_pad`]; one already held stays): its EOS would end
    /// the branch for every later call (a `gst-launch-1.0` line links it once), and with
    /// every sink at EOS the pipeline would post EOS.
    pub(super) fn end_unexposed_pad(&self, name: &'static str) {
        if self.keeps_src_pads() {
            self.hold_unexposed_pad(name);
            return;
        }
        if let Some(ghost) = self.take_placeholder(name) {
            gst::debug!(CAT, imp = self, "{name} had no stream: its placeholder ends");
            self.end_pad(ghost.upcast(), name);
            return;
        }
        let Some(templ) = self.claim_unexposed(name) else { return };
        let obj = self.obj();
        // Nothing is forwarded: by default the events and queries coming up to a src pad go
        // on to the element's sink pads, and an echo links this pad back to one of them
        // (`video_src` to `video_sink`), so a reconfigure event went round that loop until
        // the stack overflowed (a SIGSEGV).
        let pad = gst::Pad::builder_from_template(&templ)
            .name(name)
            .event_function(|_, _, _| true)
            .query_function(|_, _, _| false)
            .build();
        let _ = pad.set_active(true);
        if obj.add_pad(&pad).is_err() {
            return;
        }
        if feeds_back_into(&pad, obj.upcast_ref()) {
            // An echo (`video_src` looped to `video_sink`): no sink waits on this pad, and an
            // end pushed into our own sending chain made webrtcbin take up a video section the
            // call had rejected (Chromium's stopped transceiver, `connectivity.test.js`). The
            // pad stays, idle, until the call ends.
            gst::debug!(CAT, imp = self, "{name} loops back into this element: left idle");
            lock(&self.state).idle_src_pads.push(pad);
            return;
        }
        self.end_pad(pad, name);
        gst::debug!(CAT, imp = self, "{name} never had a stream: EOS on its own");
    }

    /// Ends `pad` (exposed as `name`): stream-start, segment and EOS, then it goes.
    fn end_pad(&self, pad: gst::Pad, name: &str) {
        let obj = self.obj();
        let stream_id = format!("{}/{name}", obj.name());
        let weak = obj.downgrade();
        // On a thread of its own: a sink still prerolling (its pipeline not yet PLAYING,
        // which it is waiting for) holds the EOS until the pipeline plays, and the media
        // worker, ending the pad while it applies the peer's offer, then never answered it:
        // the call never connected.
        let end = move || {
            let _ = pad.push_event(gst::event::StreamStart::new(&stream_id));
            let _ = pad.push_event(gst::event::Segment::new(&gst::FormattedSegment::<
                gst::ClockTime,
            >::new()));
            let _ = pad.push_event(gst::event::Eos::new());
            let _ = pad.set_active(false);
            if let Some(obj) = weak.upgrade() {
                let _ = obj.remove_pad(&pad);
            }
        };
        if let Err(e) = std::thread::Builder::new().name("wilddog-eos".into()).spawn(end) {
            gst::warning!(CAT, imp = self, "cannot end {name}: {e}");
        }
    }

    /// A stream the peer announced is late (`restart::ANNOUNCED_STREAM_WAIT`): its src pad
    /// appears as a ghost pad with no target yet and carries a gap, which its sink takes as
    /// its preroll, so the pipeline plays and the other stream's sink no longer holds its
    /// first buffer. Should the stream come, it goes on behind this same pad (the
    /// `gst-launch-1.0` branch linked to it gets it); if not, the pad ends with the call.
    /// A pad that loops back into the element (an echo) is left idle, as in
    /// [`Self::end_unexposed_pad`]; kept for the next call's stream, by an element that keeps
    /// its pads (nothing is pushed into it either way, and a ghost pad with no target forwards
    /// no event or query: no loop).
    pub(super) fn hold_unexposed_pad(&self, name: &'static str) {
        let Some(ghost) = self.add_waiting_src_pad(name) else { return };
        if feeds_a_muxer(ghost.upcast_ref()) {
            // A muxer (a recorder's) takes no gap for data: it waited for this stream and
            // wrote nothing of the other one (an empty file). It goes on with what it has
            // once this one ends.
            gst::debug!(CAT, imp = self, "{name}'s stream is late and feeds a muxer: ended");
            self.end_pad(ghost.upcast(), name);
            return;
        }
        lock(&self.state).placeholder_src_pads.push(ghost.clone());
        let stream_id = format!("{}/{name}/awaited", self.obj().name());
        // On a thread of its own, as an end (see end_unexposed_pad): a prerolling sink holds
        // the gap until the pipeline plays.
        let gap = move || {
            let _ = ghost.push_event(gst::event::StreamStart::new(&stream_id));
            let _ = ghost.push_event(gst::event::Segment::new(&gst::FormattedSegment::<
                gst::ClockTime,
            >::new()));
            let _ = ghost.push_event(gst::event::Gap::builder(gst::ClockTime::ZERO).build());
        };
        if let Err(e) = std::thread::Builder::new().name("wilddog-gap".into()).spawn(gap) {
            gst::warning!(CAT, imp = self, "cannot hold {name}: {e}");
            return;
        }
        gst::debug!(CAT, imp = self, "{name} has no stream: a gap until one comes");
    }

    /// Whether this side's sink pad of `kind` is fed by its own src pad of that kind and by
    /// nothing else (an echo: `c.video_src ! … ! c.video_sink`), looked at as the peer's
    /// offer sends none of that kind: what it could send is then only what it never gets.
    /// The src pad the walk needs is exposed for it now ([`Self::expose_for_answer`]) when
    /// nothing else feeds the sink: a gst-launch line links `c.video_src ! video_back.` only
    /// once the pad appears.
    pub(super) fn sends_only_its_own(&self, kind: StreamKind) -> bool {
        let sink = {
            let st = lock(&self.state);
            let stream = if kind == StreamKind::Video { &st.video_in } else { &st.audio_in };
            stream.as_ref().map(|s| s.ghost.clone())
        };
        let Some(sink) = sink else { return false };
        let src_name = if kind == StreamKind::Video { "video_src" } else { "audio_src" };
        let obj = self.obj();
        let feeds = || upstream_of(sink.upcast_ref(), obj.upcast_ref(), src_name);
        match feeds() {
            Upstream { other: true, .. } => false,
            Upstream { own: true, .. } => true,
            Upstream { .. } => {
                self.expose_for_answer(src_name);
                feeds() == Upstream { own: true, other: false }
            }
        }
    }

    /// Src pad `name` of a kind the peer's offer does not send appears before the answer
    /// (a ghost pad with no target, nothing pushed), for [`Self::sends_only_its_own`] to
    /// see what it feeds. If it loops back into this element it is left idle, as
    /// [`Self::end_unexposed_pad`] leaves it; if not, it holds its place until the call
    /// connects and then ends (`end_unexposed_pad`), as the pad of any kind the peer does not
    /// send, or ends with the call; a stream of its kind that comes after all (a new offer)
    /// goes on behind it.
    fn expose_for_answer(&self, name: &'static str) {
        let Some(ghost) = self.add_waiting_src_pad(name) else { return };
        gst::debug!(CAT, imp = self, "{name} exposed for the answer: it ends once connected");
        lock(&self.state).placeholder_src_pads.push(ghost);
    }

    /// Src pad `name`, not exposed yet, appears as a ghost pad with no target, for a stream
    /// still to come; `None` if it was claimed already, could not be added, or loops back
    /// into this element (then left idle: [`Self::leave_looped_pad_idle`]).
    fn add_waiting_src_pad(&self, name: &'static str) -> Option<gst::GhostPad> {
        let templ = self.claim_unexposed(name)?;
        let obj = self.obj();
        let ghost = gst::GhostPad::builder_from_template(&templ).name(name).build();
        let _ = ghost.set_active(true);
        obj.add_pad(&ghost).ok()?;
        if feeds_back_into(ghost.upcast_ref(), obj.upcast_ref()) {
            self.leave_looped_pad_idle(ghost);
            return None;
        }
        Some(ghost)
    }

    /// `ghost`, a src pad with no stream that loops back into this element (an echo), stays
    /// idle: nothing is pushed into it, and with no target it forwards no event or query (a
    /// reconfigure event going round the loop overflowed the stack). It goes with the call,
    /// or, by an element that keeps its pads ([`Self::keeps_src_pads`]), waits for the next
    /// call's stream.
    fn leave_looped_pad_idle(&self, ghost: gst::GhostPad) {
        let name = ghost.name();
        let _guard = lock(&self.keeping_pads);
        let answer = lock(&self.settings).answer;
        let mut st = lock(&self.state);
        if self.keeps_src_pads_with(&st, answer) {
            gst::debug!(CAT, imp = self, "{name} loops back into this element: kept idle");
            st.placeholder_src_pads.push(ghost);
        } else {
            gst::debug!(CAT, imp = self, "{name} loops back into this element: left idle");
            st.idle_src_pads.push(ghost.upcast());
        }
    }

    /// The placeholder of `name` ([`Self::hold_unexposed_pad`]), taken for the stream that
    /// came at last.
    pub(super) fn take_placeholder(&self, name: &str) -> Option<gst::GhostPad> {
        let mut st = lock(&self.state);
        let at = st.placeholder_src_pads.iter().position(|p| p.name() == name)?;
        Some(st.placeholder_src_pads.remove(at))
    }

    /// Whether the src pads outlive the call: the element answers further calls (no
    /// `remote-uid`, `answer` `accept` or `manual`), runs, and its inputs have not all ended.
    /// Its pads then stay between calls, ghost pads with no target that carry nothing (the
    /// sinks keep their last frame, nothing tells them the stream ended), and the next call's
    /// streams go on behind them ([`Self::take_placeholder`]), with their own stream-start,
    /// caps and segment: a `gst-launch-1.0` line, which links them once, shows every call.
    /// Not a pad that feeds a muxer: a recording is finalized by EOS
    /// (`peer::teardown_media`).
    pub(super) fn keeps_src_pads(&self) -> bool {
        let answer = lock(&self.settings).answer;
        let st = lock(&self.state);
        self.keeps_src_pads_with(&st, answer)
    }

    /// [`Self::keeps_src_pads`] with the state locked and `answer` read before (never the
    /// settings under the state: `property` takes them the other way round).
    fn keeps_src_pads_with(&self, st: &State, answer: AnswerPolicy) -> bool {
        matches!(answer, AnswerPolicy::Accept | AnswerPolicy::Manual)
            && st.running
            && st.validated.as_ref().is_some_and(|v| v.remote_uid.is_none())
            && !self.inputs_ended.load(Ordering::Acquire)
    }

    /// The element no longer keeps its src pads (`answer` turned `busy` or `reject`, every
    /// input ended): those kept between calls end now (EOS). Not during a call: its
    /// teardown ends its pads.
    pub(super) fn end_src_pads_unless_kept(&self) {
        let _guard = lock(&self.keeping_pads);
        let answer = lock(&self.settings).answer;
        {
            let st = lock(&self.state);
            let between_calls = st.call_state.is_none_or(|s| s == CallState::Idle);
            if !between_calls
                || st.placeholder_src_pads.is_empty()
                || self.keeps_src_pads_with(&st, answer)
            {
                return;
            }
        }
        gst::debug!(CAT, imp = self, "no further call: the src pads kept between calls end");
        self.end_placeholders();
    }

    /// `pad` (kept, its stream gone) waits for the next call's stream; or ends, when the
    /// element no longer keeps its pads.
    pub(super) fn keep_or_end(&self, pad: gst::GhostPad) {
        let _ = pad.set_target(None::<&gst::Pad>);
        let _guard = lock(&self.keeping_pads);
        let answer = lock(&self.settings).answer;
        let mut st = lock(&self.state);
        if self.keeps_src_pads_with(&st, answer) {
            st.placeholder_src_pads.push(pad);
            return;
        }
        drop(st);
        let name = pad.name();
        self.end_pad(pad.upcast(), &name);
    }

    /// Whether `pad` waits for a stream ([`Self::hold_unexposed_pad`], or kept by the end of
    /// a call).
    pub(super) fn is_placeholder(&self, pad: &gst::GhostPad) -> bool {
        lock(&self.state).placeholder_src_pads.contains(pad)
    }

    /// The call is over: the placeholders no stream came behind end (EOS, on threads of their
    /// own) and go.
    pub(super) fn end_placeholders(&self) {
        let placeholders = std::mem::take(&mut lock(&self.state).placeholder_src_pads);
        for ghost in placeholders {
            let name = ghost.name();
            self.end_pad(ghost.upcast(), &name);
        }
    }

    /// Removes the src pads [`Self::end_unexposed_pad`] left idle: at the end of the call,
    /// and before a stream of that kind is exposed under the same name.
    pub(super) fn remove_idle_src_pads(&self, name: Option<&str>) {
        let idle: Vec<gst::Pad> = {
            let mut st = lock(&self.state);
            let (gone, kept) = std::mem::take(&mut st.idle_src_pads)
                .into_iter()
                .partition(|p| name.is_none_or(|n| p.name() == n));
            st.idle_src_pads = kept;
            gone
        };
        let obj = self.obj();
        for pad in idle {
            let _ = pad.set_active(false);
            let _ = obj.remove_pad(&pad);
        }
    }
}

/// Whether what `pad` feeds reaches `element` again (an echo pipeline links `video_src` back
/// to `video_sink`). Follows src pads' peers element by element, through bins as wholes.
fn feeds_back_into(pad: &gst::Pad, element: &gst::Element) -> bool {
    feeds(pad, |el| el == element)
}

/// What feeds a sink pad ([`upstream_of`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Upstream {
    /// The element's own src pad of the wanted name.
    own: bool,
    /// Anything else that makes media: a source element (or a bin holding one), another
    /// src pad of the element, or more elements than the walk follows.
    other: bool,
}

/// What feeds `pad` (a sink pad of `element`): follows sink pads' peers upstream element by
/// element, through bins as wholes, up to `element`'s own src pad `own_src`, a source, or
/// an unlinked sink pad (which feeds nothing).
fn upstream_of(pad: &gst::Pad, element: &gst::Element, own_src: &str) -> Upstream {
    // As in `feeds`: a bound against cycles elsewhere in the graph.
    const MAX_ELEMENTS: usize = 64;
    let mut found = Upstream::default();
    let mut seen: Vec<gst::Element> = Vec::new();
    let mut todo: Vec<gst::Pad> = pad.peer().into_iter().collect();
    while let Some(peer) = todo.pop() {
        let Some(el) = peer.parent_element() else { continue };
        if &el == element {
            if peer.name() == own_src {
                found.own = true;
            } else {
                found.other = true;
            }
            continue;
        }
        if seen.contains(&el) {
            continue;
        }
        let sinks = el.sink_pads();
        if seen.len() >= MAX_ELEMENTS
            || sinks.is_empty()
            || el.element_flags().contains(gst::ElementFlags::SOURCE)
        {
            found.other = true;
            return found;
        }
        todo.extend(sinks.iter().filter_map(|p| p.peer()));
        seen.push(el);
    }
    found
}

/// Whether what `pad` feeds reaches a muxer (an aggregator, or a factory of the class
/// `Muxer`, as `matroskamux` in 1.22).
pub(super) fn feeds_a_muxer(pad: &gst::Pad) -> bool {
    feeds(pad, |el| {
        el.is::<gst_base::Aggregator>()
            || el.factory().is_some_and(|f| {
                f.metadata(gst::ELEMENT_METADATA_KLASS).is_some_and(|k| k.contains("Muxer"))
            })
    })
}

/// Whether an element downstream of `pad` is one `wanted` says.
fn feeds(pad: &gst::Pad, wanted: impl Fn(&gst::Element) -> bool) -> bool {
    // Deep enough for any file we ship; a bound against cycles elsewhere in the graph.
    const MAX_ELEMENTS: usize = 64;
    let mut seen: Vec<gst::Element> = Vec::new();
    let mut todo: Vec<gst::Pad> = pad.peer().into_iter().collect();
    while let Some(peer) = todo.pop() {
        let Some(el) = peer.parent_element() else { continue };
        if wanted(&el) {
            return true;
        }
        if seen.contains(&el) || seen.len() >= MAX_ELEMENTS {
            continue;
        }
        todo.extend(el.src_pads().iter().filter_map(|p| p.peer()));
        seen.push(el);
    }
    false
}
