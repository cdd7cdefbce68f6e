//! `wilddogcall`: a whole Wilddog one-to-one call as a bin.
//!
//! Raw video/audio into the request pads `video_sink`/`audio_sink` is scaled to
//! `dimension`, given the fixed rate `max-fps`, encoded (VP8/H.264/VP9, Opus) and sent through a
//! `webrtcbin`; the remote party's media leaves decoded through the sometimes pads
//! `video_src`/`audio_src`: a caller's get EOS when its call ends; an element that answers
//! further calls keeps them, and each call's streams go on behind them (docs/elements.md,
//! "At the end of a call"). The element speaks the Wilddog wire protocol to `server` (see
//! `signaling/protocol`).
//!
//! ```text
//! # call bob, send a test pattern, show what bob sends
//! gst-launch-1.0 -m wilddogcall name=c server=ws://127.0.0.1:8080/ws app-id=wilddog-dev \
//!     token=$ALICE remote-uid=bob ice-local-addresses=127.0.0.1 \
//!     videotestsrc is-live=true ! c.video_sink  c.video_src ! autovideosink
//! # answer every call, record nothing, just show it
//! gst-launch-1.0 -m wilddogcall server=… token=$BOB answer=accept ! autovideosink
//! ```
//!
//! Signals (each also posted on the bus as an element message of the same name):
//! `wilddog-called` (remote-uid, user-data, conversation-id), `wilddog-response` (status:
//! ACCEPTED/REJECTED/BUSY/TIMEOUT), `wilddog-stream-received`, `wilddog-first-frame`
//! (width, height, elapsed-ms), `wilddog-closed` (reason), `wilddog-stats` (a structure
//! with `local` and `remote` sub-structures), `wilddog-quality` (a structure: the link gives
//! less than the dimension needs, or enough again), `wilddog-error` (code, message). Action
//! signals: `accept`, `reject`, `close`.
//!
//! On a slow or lossy link the call adapts (`congestion-control`, `fec`, `latency`): see
//! `crate::congestion` and `crate::recovery`.

mod imp;

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::ObjectSubclassIsExt;

pub use imp::AnswerPolicy;
pub(crate) use imp::call_properties_for_members;

glib::wrapper! {
    /// The `wilddogcall` element. Its typed API (see the methods) spares an embedding
    /// application string-typed properties and signals.
    pub struct WilddogCall(ObjectSubclass<imp::WilddogCall>) @extends gst::Bin, gst::Element, gst::Object, @implements gst::ChildProxy;
}

/// Registers `wilddogcall` with `plugin`.
pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(Some(plugin), "wilddogcall", gst::Rank::NONE, WilddogCall::static_type())
}

/// An incoming call, as `wilddog-called` tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingCall {
    /// The caller's uid.
    pub remote_uid: String,
    /// The caller's user data.
    pub user_data: Option<String>,
    /// The conversation id.
    pub conversation_id: String,
}

/// The first decoded remote video frame, as `wilddog-first-frame` tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FirstFrame {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Milliseconds since the call began (`call` sent, or `called` received).
    pub elapsed_ms: u64,
}

impl WilddogCall {
    /// A new element, not in any pipeline yet.
    pub fn new(name: Option<&str>) -> Self {
        let mut b = glib::Object::builder::<Self>();
        if let Some(name) = name {
            b = b.property("name", name);
        }
        b.build()
    }

    /// Accepts the ringing incoming call (`answer=manual`).
    pub fn accept(&self) {
        self.emit_by_name::<()>("accept", &[]);
    }

    /// Rejects the ringing incoming call.
    pub fn reject(&self) {
        self.emit_by_name::<()>("reject", &[]);
    }

    /// Cancels the outgoing call or hangs up.
    pub fn close(&self) {
        self.emit_by_name::<()>("close", &[]);
    }

    /// The conversation's state: `idle`, `calling`, `ringing`, `connecting`, `connected`.
    pub fn state(&self) -> String {
        self.property::<String>("state")
    }

    /// The current (or last) conversation's id.
    pub fn conversation_id(&self) -> Option<String> {
        self.property::<Option<String>>("conversation-id")
    }

    /// The last `wilddog-stats` structure, if any was made.
    pub fn stats(&self) -> Option<gst::Structure> {
        self.imp().last_stats()
    }

    /// Calls `f` on every incoming call (`wilddog-called`).
    pub fn connect_called<F: Fn(&Self, &IncomingCall) + Send + Sync + 'static>(
        &self,
        f: F,
    ) -> glib::SignalHandlerId {
        self.connect_closure(
            "wilddog-called",
            false,
            glib::closure!(move |obj: &Self,
                                 remote_uid: &str,
                                 user_data: Option<&str>,
                                 cid: &str| {
                f(
                    obj,
                    &IncomingCall {
                        remote_uid: remote_uid.to_owned(),
                        user_data: user_data.map(str::to_owned),
                        conversation_id: cid.to_owned(),
                    },
                )
            }),
        )
    }

    /// Calls `f` with the callee's answer (`ACCEPTED`, `REJECTED`, `BUSY`, `TIMEOUT`).
    pub fn connect_response<F: Fn(&Self, &str) + Send + Sync + 'static>(
        &self,
        f: F,
    ) -> glib::SignalHandlerId {
        self.connect_closure(
            "wilddog-response",
            false,
            glib::closure!(move |obj: &Self, status: &str| f(obj, status)),
        )
    }

    /// Calls `f` when the other side ended the call (`wilddog-closed`), with the reason.
    pub fn connect_closed<F: Fn(&Self, &str) + Send + Sync + 'static>(
        &self,
        f: F,
    ) -> glib::SignalHandlerId {
        self.connect_closure(
            "wilddog-closed",
            false,
            glib::closure!(move |obj: &Self, reason: &str| f(obj, reason)),
        )
    }

    /// Calls `f` on the first decoded remote video frame of each call.
    pub fn connect_first_frame<F: Fn(&Self, FirstFrame) + Send + Sync + 'static>(
        &self,
        f: F,
    ) -> glib::SignalHandlerId {
        self.connect_closure(
            "wilddog-first-frame",
            false,
            glib::closure!(move |obj: &Self, width: u32, height: u32, elapsed_ms: u64| {
                f(obj, FirstFrame { width, height, elapsed_ms })
            }),
        )
    }

    /// Calls `f` with every `wilddog-error` code (41001–41008) and its message.
    pub fn connect_error<F: Fn(&Self, u32, &str) + Send + Sync + 'static>(
        &self,
        f: F,
    ) -> glib::SignalHandlerId {
        self.connect_closure(
            "wilddog-error",
            false,
            glib::closure!(move |obj: &Self, code: u32, msg: &str| f(obj, code, msg)),
        )
    }

    /// Calls `f` with every `wilddog-quality` structure: `quality` is `low` when the link
    /// gives the video less than `min-bitrate` (the size, then the frame rate sent are
    /// lowered), `good` when it gives enough again.
    pub fn connect_quality<F: Fn(&Self, &gst::Structure) + Send + Sync + 'static>(
        &self,
        f: F,
    ) -> glib::SignalHandlerId {
        self.connect_closure(
            "wilddog-quality",
            false,
            glib::closure!(move |obj: &Self, s: gst::Structure| f(obj, &s)),
        )
    }

    /// Calls `f` with every `wilddog-stats` structure (every 2 s while media runs).
    pub fn connect_stats<F: Fn(&Self, &gst::Structure) + Send + Sync + 'static>(
        &self,
        f: F,
    ) -> glib::SignalHandlerId {
        self.connect_closure(
            "wilddog-stats",
            false,
            glib::closure!(move |obj: &Self, s: gst::Structure| f(obj, &s)),
        )
    }
}
