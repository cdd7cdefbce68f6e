//! GStreamer elements for Wilddog one-to-one video calls.
//!
//! Elements: `wilddogcall` (a whole call: raw media in, decoded remote media out),
//! `wilddogsink` (the local half) and `wilddogsrc` (the remote half).

#![allow(clippy::new_without_default)]

pub mod congestion;
pub mod cpu_adaptation;
pub mod dtls;
mod framerate;
pub mod ice;
pub mod media;
pub mod probe;
pub mod recovery;
pub mod sdp_direction;
pub mod sdp_reject;
mod session;
mod shared;
pub mod turn_tls;
pub mod wilddogcall;
pub mod wilddogsink;
pub mod wilddogsrc;

use gst::glib;
pub use wilddogcall::{AnswerPolicy, FirstFrame, IncomingCall, WilddogCall};
pub use wilddogsink::WilddogSink;
pub use wilddogsrc::WilddogSrc;

use std::sync::OnceLock;

/// The plugin's single tokio runtime: one worker thread drives every call's signaling.
///
/// Every socket the plugin itself writes to (the signaling WebSocket, the TURN-over-TLS
/// tunnel) is written on this runtime's threads, and they block SIGPIPE
/// ([`block_sigpipe`]).
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(RUNTIME_THREAD)
            .on_thread_start(block_sigpipe)
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("cannot start the wilddog tokio runtime: {e}"))
    })
}

/// Blocks SIGPIPE in the calling thread (the runtime's worker and blocking threads).
///
/// A write to a TCP connection its peer closed raises SIGPIPE, whose default action kills
/// the process: a C or Python host (`gst-launch-1.0`) died without a word when the signaling
/// server closed the connection under a TLS handshake (rustls writes its alert with
/// `writev`, which has no `MSG_NOSIGNAL`). Rust programs ignore SIGPIPE, C programs do not,
/// and a plugin must not change the host's process-wide disposition. The kernel sends this
/// SIGPIPE to the writing thread: blocked there, it stays pending on that thread and the
/// write fails with EPIPE, which the connection reports as an error like any other.
fn block_sigpipe() {
    // SAFETY: `set` is a local sigset_t initialised by sigemptyset before use, and
    // pthread_sigmask only changes the calling thread's mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGPIPE);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Name of the runtime's worker thread.
const RUNTIME_THREAD: &str = "wilddog-signaling";

/// Whether the calling thread is the plugin runtime's worker (where every session task and
/// its callbacks run).
pub(crate) fn on_runtime_thread() -> bool {
    std::thread::current().name() == Some(RUNTIME_THREAD)
}

static DTLS_PREWARM: std::sync::LazyLock<(std::sync::Mutex<Option<bool>>, std::sync::Condvar)> =
    std::sync::LazyLock::new(Default::default);

/// Makes the process's DTLS certificate now, in the background: GStreamer's DTLS elements
/// generate one RSA-2048 key per process on first use, inside the first call's
/// `create-offer` or `create-answer`. That takes 0.2 to 2 s on an idle 2-core machine and
/// several seconds on a loaded one (`openssl genrsa 2048`: 4 to 12 s at load 40), all of it
/// added to the first call's setup. Called when a `wilddogcall` goes to READY; an
/// application that knows it will call (wilddog-runner) calls it at start, before it
/// connects, and then [`wait_dtls_prewarm`] before it exits.
///
/// Our peer connections present their own ECDSA certificate ([`crate::dtls`]), but this is
/// still needed: `dtlsdec`'s instance init (GStreamer 1.22) makes its default agent, and so
/// the RSA key, before the `pem` property replaces it.
pub fn prewarm_dtls_certificate() {
    let (lock, _) = &*DTLS_PREWARM;
    let mut state = lock.lock().unwrap_or_else(|e| e.into_inner());
    if state.is_some() {
        return;
    }
    *state = Some(false);
    let spawned = std::thread::Builder::new().name("wilddog-dtls-prewarm".into()).spawn(|| {
        let _ = gst::ElementFactory::make("dtlsdec").build();
        let (lock, cvar) = &*DTLS_PREWARM;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = Some(true);
        cvar.notify_all();
    });
    if spawned.is_err() {
        *state = Some(true);
    }
}

/// Waits (20 s at most: key generation on a loaded machine can take seconds) for the
/// certificate of [`prewarm_dtls_certificate`], if one is being made: a process must not exit
/// while OpenSSL generates a key in another thread (its exit handlers free what that thread
/// uses). Called when a `wilddogcall` goes back to NULL.
pub fn wait_dtls_prewarm() {
    let (lock, cvar) = &*DTLS_PREWARM;
    let state = lock.lock().unwrap_or_else(|e| e.into_inner());
    let _ =
        cvar.wait_timeout_while(state, std::time::Duration::from_secs(20), |s| *s == Some(false));
}

/// Resolves once the certificate of [`prewarm_dtls_certificate`] is made (20 s at most, as
/// [`wait_dtls_prewarm`]), without holding the runtime's thread: a `wilddogcall`'s call and
/// accept wait for it (`session::run`). Until then the first `create-offer` or
/// `create-answer` of the process blocks in `dtlsdec`'s instance init for what is left of
/// the key: measured on a loaded machine (8 calls on 2 cores), 3.7 s from `creating offer
/// sdp` to the first DTLS connection, so a caller that called at once was ACCEPTED and then
/// sat seconds without media. Waiting before the call and the accept instead: no callee is
/// rung, and no caller told ACCEPTED, by an endpoint that cannot negotiate yet.
pub(crate) async fn dtls_prewarm_done() {
    let making = {
        let (lock, _) = &*DTLS_PREWARM;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) == Some(false)
    };
    if making {
        let _ = tokio::task::spawn_blocking(wait_dtls_prewarm).await;
    }
}

fn plugin_init(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    wilddogcall::register(plugin)?;
    wilddogsink::register(plugin)?;
    wilddogsrc::register(plugin)?;
    Ok(())
}

gst::plugin_define!(
    wilddog,
    env!("CARGO_PKG_DESCRIPTION"),
    plugin_init,
    concat!(env!("CARGO_PKG_VERSION"), "-", env!("COMMIT_ID")),
    // LICENSE (MIT), as GStreamer names it.
    "MIT/X11",
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_REPOSITORY"),
    env!("BUILD_REL_DATE")
);
