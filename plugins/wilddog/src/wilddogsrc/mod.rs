//! `wilddogsrc`: the remote half of a call (src pads only).
//!
//! Alone, it is a one-way call that only receives (a recorder that answers):
//!
//! ```text
//! gst-launch-1.0 -m wilddogsrc server=ws://127.0.0.1:8080/ws app-id=wilddog-dev token=$BOB \
//!     answer=accept ice-local-addresses=127.0.0.1 ! videoconvert ! autovideosink
//! ```
//!
//! With a `wilddogsink` of the same `conversation` in the same process, the two are one
//! two-way call (see `wilddogsink`). The sometimes pads `video_src`/`audio_src` carry the
//! decoded remote media and get EOS when the call ends, or, answering further calls, stay
//! for the next one (as `wilddogcall`'s).

mod imp;

use gst::glib;
use gst::prelude::*;

glib::wrapper! {
    /// The `wilddogsrc` element.
    pub struct WilddogSrc(ObjectSubclass<imp::WilddogSrc>) @extends gst::Bin, gst::Element, gst::Object, @implements gst::ChildProxy;
}

impl WilddogSrc {
    /// The shared call, once the element is PAUSED.
    pub fn call(&self) -> Option<crate::WilddogCall> {
        self.property::<Option<crate::WilddogCall>>("call")
    }
}

/// Registers `wilddogsrc` with `plugin`.
pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(Some(plugin), "wilddogsrc", gst::Rank::NONE, WilddogSrc::static_type())
}

/// Adds `video_src`/`audio_src` (`pad_name`) to `member` (a `wilddogsrc`), fed by the
/// returned `appsrc`.
pub(crate) fn expose(member: &gst::Bin, pad_name: &str) -> Option<gst_app::AppSrc> {
    let src = member.downcast_ref::<WilddogSrc>()?;
    imp::expose(src, pad_name)
}
