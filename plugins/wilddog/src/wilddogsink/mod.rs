//! `wilddogsink`: the local half of a call (sink pads only).
//!
//! Alone, it is a one-way call: it sends what enters `video_sink`/`audio_sink` and drops
//! what the other side sends. With a `wilddogsrc` of the same `conversation` in the same
//! process, the two are one two-way call:
//!
//! ```text
//! gst-launch-1.0 -m videotestsrc is-live=true ! wilddogsink conversation=c1 \
//!     server=ws://127.0.0.1:8080/ws app-id=wilddog-dev token=$ALICE remote-uid=bob \
//!     ice-local-addresses=127.0.0.1 \
//!   wilddogsrc conversation=c1 ! videoconvert ! autovideosink
//! ```
//!
//! Every `wilddogcall` property is accepted (and forwarded to the shared call; the first
//! member to start sets a property, later members only fill what is unset); the call's
//! bus messages (`wilddog-called`, `wilddog-response`, …) are posted by this element or
//! its `wilddogsrc` partner. The `call` property gives the shared `wilddogcall` for signals.

mod imp;

use gst::glib;
use gst::prelude::*;

glib::wrapper! {
    /// The `wilddogsink` element.
    pub struct WilddogSink(ObjectSubclass<imp::WilddogSink>) @extends gst::Bin, gst::Element, gst::Object, @implements gst::ChildProxy;
}

impl WilddogSink {
    /// The shared call, once the element is PAUSED.
    pub fn call(&self) -> Option<crate::WilddogCall> {
        self.property::<Option<crate::WilddogCall>>("call")
    }
}

/// Registers `wilddogsink` with `plugin`.
pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(Some(plugin), "wilddogsink", gst::Rank::NONE, WilddogSink::static_type())
}
