//! Restarts of a call's media: a dying path noticed, and the peer connection rebuilt for an
//! ICE restart (webrtcbin 1.22 can neither restart ICE in place nor renegotiate reliably).

use super::WilddogCall;

impl WilddogCall {
    /// Looks at the media path (the media worker calls it between actions).
    pub(super) fn check_path(&self) {}
}
