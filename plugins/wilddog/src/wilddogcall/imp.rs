//! Implementation of `wilddogcall`. See the module docs of `wilddogcall` for the element's
//! behaviour. This file holds the element itself (properties, signals, pads, state changes,
//! the sending chains, bus messages) and drives the signaling task of `crate::session`; each
//! concern of the call's media has a module of its own:
//!
//! - [`sending`]: the sending chains (encoders) of the sink pads;
//! - [`peer`]: the peer connection (webrtcbin, transceivers, decoders, teardown);
//! - [`negotiation`]: offers and answers, and what we change in the SDP;
//! - [`pads`]: the src pads' lifecycle (waiting for their stream, exposed for an answer, kept
//!   between calls, ended when unused);
//! - [`restart`]: a dying path noticed, the peer connection rebuilt for an ICE restart;
//! - [`stats`]: the `wilddog-stats` reports;
//! - [`worker`]: the thread that drives webrtcbin, off the signaling runtime;
//! - [`connectivity`]: DTLS certificate, ICE gathering, policy and servers (TURN, TURN/TLS);
//! - [`congestion`]: congestion control (TWCC, rtpgccbwe driving the encoders, `wilddog-quality`);
//! - [`recovery`]: loss recovery (NACK/RTX, FEC, the jitterbuffer's wait for retransmissions).

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use tokio::sync::mpsc;
use wilddog_call::{
    CallConfig, CallState, CloseReason, Endpoint, Event, Input, MediaAction, Role, WilddogError,
};
use wilddog_client::{ClientConfig, ClientError};

use crate::congestion::{CongestionControl, DegradationPreference};
use crate::cpu_adaptation::EncoderSpeed;
use crate::ice::IceTransportPolicy;
use crate::media::{self, StreamKind, VideoCodec, VideoParams};
use crate::recovery::Fec;
use crate::session::{self, Command, Driver, SessionConfig};

mod congestion;
mod connectivity;
mod negotiation;
mod pads;
mod peer;
mod recovery;
mod restart;
mod sending;
mod stats;
mod worker;

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "wilddogcall",
        gst::DebugColorFlags::empty(),
        Some("Wilddog one-to-one call bin"),
    )
});

/// Default `answer`.
pub const DEFAULT_ANSWER: AnswerPolicy = AnswerPolicy::Accept;
/// Default `call-timeout`, ms (the original's 30 s).
pub const DEFAULT_CALL_TIMEOUT_MS: u32 = 30_000;
/// Default `dimension`.
pub const DEFAULT_DIMENSION: &str = "480p";
/// Default `max-fps` (the original's 15).
pub const DEFAULT_MAX_FPS: u32 = 15;
/// Highest `max-fps` (the original's 30).
pub const MAX_MAX_FPS: u32 = 30;
/// Default `latency` of the receive jitterbuffer, ms: low, since calls run on good networks
/// first and a late first frame is what users notice.
pub const DEFAULT_LATENCY_MS: u32 = 30;
/// Default `service`.
pub const DEFAULT_SERVICE: bool = false;
/// Default `video-codec`.
pub const DEFAULT_VIDEO_CODEC: VideoCodec = VideoCodec::Vp8;
/// Default `ice-transport-policy`.
pub const DEFAULT_ICE_TRANSPORT_POLICY: IceTransportPolicy = IceTransportPolicy::All;
/// Default `congestion-control`.
pub const DEFAULT_CONGESTION_CONTROL: CongestionControl = CongestionControl::Gcc;
/// Default `fec`.
pub const DEFAULT_FEC: Fec = Fec::None;
/// Default `cpu-adaptation`: on, as in Chrome.
pub const DEFAULT_CPU_ADAPTATION: bool = true;
/// Default `encoder-speed`: Chrome's desktop speed.
pub const DEFAULT_ENCODER_SPEED: EncoderSpeed = EncoderSpeed::Quality;
/// Default `degradation-preference`: the size first, as Chrome does for a camera.
pub const DEFAULT_DEGRADATION_PREFERENCE: DegradationPreference =
    DegradationPreference::MaintainFramerate;
/// How long stopping waits for `bye` to go out.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(3);

/// What the element does with an incoming call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, glib::Enum, Default)]
#[repr(i32)]
#[enum_type(name = "GstWilddogAnswerPolicy")]
pub enum AnswerPolicy {
    /// Accept it at once.
    #[default]
    #[enum_value(name = "Accept every incoming call", nick = "accept")]
    Accept = 0,
    /// Reject it at once.
    #[enum_value(name = "Reject every incoming call", nick = "reject")]
    Reject = 1,
    /// Raise `wilddog-called` and wait for the `accept`/`reject` action signals.
    #[enum_value(name = "Wait for the accept/reject action signals", nick = "manual")]
    Manual = 2,
    /// Answer BUSY at once, without raising `wilddog-called`: the endpoint takes no call now
    /// (the runner sets it on a pipeline whose call is over while it drains).
    #[enum_value(name = "Answer every incoming call BUSY, without raising it", nick = "busy")]
    Busy = 3,
}

#[derive(Debug, Clone)]
struct Settings {
    server: Option<String>,
    app_id: Option<String>,
    token: Option<String>,
    remote_uid: Option<String>,
    user_data: Option<String>,
    answer: AnswerPolicy,
    call_timeout_ms: u32,
    dimension: String,
    max_fps: u32,
    min_bitrate: u32,
    max_bitrate: u32,
    video_codec: VideoCodec,
    ice_local_addresses: Option<String>,
    ice_transport_policy: IceTransportPolicy,
    turn_ca_file: Option<String>,
    server_ca_file: Option<String>,
    latency: u32,
    congestion_control: CongestionControl,
    degradation_preference: DegradationPreference,
    fec: Fec,
    cpu_adaptation: bool,
    encoder_speed: EncoderSpeed,
    service: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            server: None,
            app_id: None,
            token: None,
            remote_uid: None,
            user_data: None,
            answer: DEFAULT_ANSWER,
            call_timeout_ms: DEFAULT_CALL_TIMEOUT_MS,
            dimension: DEFAULT_DIMENSION.to_owned(),
            max_fps: DEFAULT_MAX_FPS,
            min_bitrate: 0,
            max_bitrate: 0,
            video_codec: DEFAULT_VIDEO_CODEC,
            ice_local_addresses: None,
            ice_transport_policy: DEFAULT_ICE_TRANSPORT_POLICY,
            turn_ca_file: None,
            server_ca_file: None,
            latency: DEFAULT_LATENCY_MS,
            congestion_control: DEFAULT_CONGESTION_CONTROL,
            degradation_preference: DEFAULT_DEGRADATION_PREFERENCE,
            fec: DEFAULT_FEC,
            cpu_adaptation: DEFAULT_CPU_ADAPTATION,
            encoder_speed: DEFAULT_ENCODER_SPEED,
            service: DEFAULT_SERVICE,
        }
    }
}

/// Settings checked at READY→PAUSED.
#[derive(Debug, Clone)]
struct Validated {
    video: VideoParams,
    /// `min-bitrate`, resolved: the floor a Chrome peer's sender keeps to.
    min_bitrate_kbps: u32,
    local_addresses: Vec<IpAddr>,
    ice_transport_policy: IceTransportPolicy,
    /// The TLS client of `turns:` tunnels (system and public roots, `turn-ca-file`).
    turn_tls: Arc<rustls::ClientConfig>,
    latency: u32,
    congestion_control: CongestionControl,
    degradation_preference: DegradationPreference,
    fec: Fec,
    session: SessionConfig,
    remote_uid: Option<String>,
    user_data: Option<String>,
}

/// One raw input (`video_sink` / `audio_sink`) and its encoder.
#[derive(Debug)]
struct SendStream {
    kind: StreamKind,
    ghost: gst::GhostPad,
    encoder_bin: Option<gst::Bin>,
    encoder: Option<gst::Element>,
    payloader: Option<gst::Element>,
    eos: bool,
}

/// The peer connection of one call.
#[derive(Debug)]
struct Media {
    webrtcbin: gst::Element,
    /// The id of the one MediaStream the peer gets our tracks in (`a=msid`).
    stream_id: String,
    video_transceiver: Option<gst_webrtc::WebRTCRTPTransceiver>,
    audio_transceiver: Option<gst_webrtc::WebRTCRTPTransceiver>,
    decoders: Vec<gst::Bin>,
    src_pads: Vec<gst::GhostPad>,
    /// Where ICE gathers, the ICE servers and `turns:` tunnels of this peer connection.
    connectivity: connectivity::Connectivity,
}

#[derive(Debug, Default)]
struct State {
    running: bool,
    validated: Option<Validated>,
    commands: Option<mpsc::UnboundedSender<Command>>,
    task_done: Option<std::sync::mpsc::Receiver<()>>,
    called: bool,
    video_in: Option<SendStream>,
    audio_in: Option<SendStream>,
    media: Option<Media>,
    media_serial: u32,
    call_state: Option<CallState>,
    role: Option<Role>,
    conversation_id: Option<String>,
    remote_uid: Option<String>,
    call_began: Option<Instant>,
    first_frame_done: bool,
    stream_received: bool,
    /// The src pads (`video_src`, `audio_src`) this call exposed (or ended): a caller's pads
    /// it never exposed get an EOS of their own when its call is over
    /// ([`WilddogCall::end_unexposed`]), any role's when the peer sends no such stream.
    exposed: Vec<&'static str>,
    last_stats: Option<gst::Structure>,
    /// The last report, for rates (see [`stats::PreviousStats`]); cleared when a new
    /// webrtcbin starts its counters at 0.
    prev_stats: Option<stats::PreviousStats>,
    /// The counters that never go back, summed from each stream's deltas (see
    /// [`stats::CounterTotals`]); cleared with `prev_stats`.
    counter_totals: stats::CounterTotals,
    /// Why the media failed, when we know better than the error's name: the message of
    /// the `wilddog-error` that ends the call.
    media_failure: Option<String>,
    media_worker: Option<worker::MediaWorker>,
    /// The call's ICE servers, for a peer connection rebuilt by a restart: the start's, or
    /// the latest the state machine gave (a fresh TURN credential, `MediaAction::IceServers`).
    ice_servers: Vec<wilddog_call::IceServer>,
    /// What the media worker knows of the media path.
    path: restart::PathWatch,
    /// Threads tearing down peer connections replaced by a restart (and when each ends).
    disposals: Vec<(std::thread::JoinHandle<()>, std::sync::mpsc::Receiver<()>)>,
    /// Sending chains (src pad) and the sink pads of a restart's new peer connection they go
    /// to once it connects.
    held_senders: Vec<(gst::Pad, gst::Pad)>,
    /// A callee's src pads of kinds the peer's offer does not send, ended once the call's
    /// connection is up (`restart::watch_remote_senders`).
    unsent_pads: Vec<&'static str>,
    /// Src pads of kinds the peer does not send that loop back into this element (an echo):
    /// exposed with no stream and nothing pushed, removed at the end of the call.
    idle_src_pads: Vec<gst::Pad>,
    /// Src pads (ghost pads with no target yet) of streams the peer announced but has not
    /// sent: their sinks got a gap, and the stream, should it come, goes on behind them
    /// ([`WilddogCall::hold_unexposed_pad`]).
    placeholder_src_pads: Vec<gst::GhostPad>,
}

#[derive(Debug, Default)]
struct Counters {
    local_frames: AtomicU64,
    remote_frames: AtomicU64,
    local_width: AtomicU32,
    local_height: AtomicU32,
    remote_width: AtomicU32,
    remote_height: AtomicU32,
    /// RTP packets of the remote streams, into the decoders (the path watch).
    remote_packets: AtomicU64,
    /// RTCP packets from the peer, into rtpsession (the path watch of a peer that sends no
    /// media).
    remote_rtcp: AtomicU64,
    /// The peer's description takes no video from us: our frames stop before the encoder
    /// (`restart::PeerMedia::takes_video`).
    video_unwanted: std::sync::atomic::AtomicBool,
    /// Each direction's first frame since the media began (the first stats report's
    /// window).
    first_frames: Mutex<stats::FirstFrames>,
}

impl Counters {
    /// The media begins again (a call's start, an ICE restart's new webrtcbin): the next
    /// frames of each direction are its first.
    fn media_begins(&self) {
        *lock(&self.first_frames) = stats::FirstFrames::default();
    }
}

/// The `wilddogcall` bin.
#[derive(Default)]
pub struct WilddogCall {
    settings: Mutex<Settings>,
    state: Mutex<State>,
    counters: Counters,
    congestion: Mutex<congestion::Congestion>,
    /// Held from computing an adaptation to applying it to the chains (see
    /// `WilddogCall::on_estimate`): estimates come from several threads (the feedback's,
    /// the stats tick's, a cut's), and two applied in the other order than computed would
    /// leave the chains at the older one while the controller goes on from the newer (a
    /// stale size until the next step; found by reading, not seen in a run).
    adapting: Mutex<()>,
    recovery: Mutex<recovery::Recovery>,
    /// Held while a remote stream's src pad is checked and removed: a teardown on another
    /// thread between recording the pad and adding it removed a pad not there yet (a
    /// GStreamer-CRITICAL "does not belong to element"), or it and the exposing thread both
    /// removed it.
    src_pads: Mutex<()>,
    /// Held while deciding whether the src pads outlive the call ([`Self::keeps_src_pads`])
    /// and keeping or ending them: a teardown keeping the pads and `answer` set to `busy` at
    /// the same time (the runner does so as the call ends) ended none of them, and the
    /// pipeline waited for EOS for good.
    keeping_pads: Mutex<()>,
    /// Every sink pad got EOS: the element is done, its src pads end with the call (or now,
    /// between calls).
    inputs_ended: AtomicBool,
    /// Whether the current peer connection is connected (ICE and DTLS): until then the
    /// sending chains' packets are dropped before webrtcbin (`WilddogCall::build_encoders`).
    media_up: AtomicBool,
    /// The webrtcbin and decoders of a peer connection being torn down, while they are still
    /// children: their errors and warnings are the teardown's (a decoder ended before its
    /// first frame, a stream unlinked from its decoder) and stay here (`handle_message`).
    retiring: Mutex<Vec<gst::Element>>,
}

#[glib::object_subclass]
impl ObjectSubclass for WilddogCall {
    const NAME: &'static str = "GstWilddogCall";
    type Type = super::WilddogCall;
    type ParentType = gst::Bin;
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not take every later call down with it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ObjectImpl for WilddogCall {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPS: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(call_properties);
        PROPS.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut s = lock(&self.settings);
        let string = || value.get::<Option<String>>().ok().flatten().filter(|v| !v.is_empty());
        match pspec.name() {
            "server" => s.server = string(),
            "app-id" => s.app_id = string(),
            "token" => s.token = string(),
            "remote-uid" => s.remote_uid = string(),
            "user-data" => s.user_data = string(),
            "answer" => s.answer = value.get().unwrap_or(DEFAULT_ANSWER),
            "call-timeout" => s.call_timeout_ms = value.get().unwrap_or(DEFAULT_CALL_TIMEOUT_MS),
            "dimension" => s.dimension = string().unwrap_or_else(|| DEFAULT_DIMENSION.to_owned()),
            "max-fps" => s.max_fps = value.get().unwrap_or(DEFAULT_MAX_FPS),
            "min-bitrate" => s.min_bitrate = value.get().unwrap_or(0),
            "max-bitrate" => s.max_bitrate = value.get().unwrap_or(0),
            "video-codec" => s.video_codec = value.get().unwrap_or(DEFAULT_VIDEO_CODEC),
            "ice-local-addresses" => s.ice_local_addresses = string(),
            "ice-transport-policy" => {
                s.ice_transport_policy = value.get().unwrap_or(DEFAULT_ICE_TRANSPORT_POLICY)
            }
            "turn-ca-file" => s.turn_ca_file = string(),
            "server-ca-file" => s.server_ca_file = string(),
            "latency" => s.latency = value.get().unwrap_or(DEFAULT_LATENCY_MS),
            "congestion-control" => {
                s.congestion_control = value.get().unwrap_or(DEFAULT_CONGESTION_CONTROL)
            }
            "fec" => s.fec = value.get().unwrap_or(DEFAULT_FEC),
            "cpu-adaptation" => s.cpu_adaptation = value.get().unwrap_or(DEFAULT_CPU_ADAPTATION),
            "encoder-speed" => s.encoder_speed = value.get().unwrap_or(DEFAULT_ENCODER_SPEED),
            "degradation-preference" => {
                s.degradation_preference = value.get().unwrap_or(DEFAULT_DEGRADATION_PREFERENCE)
            }
            "service" => s.service = value.get().unwrap_or(DEFAULT_SERVICE),
            other => gst::warning!(CAT, imp = self, "unknown property {other}"),
        }
        drop(s);
        if pspec.name() == "answer" {
            // `busy` or `reject`: no further call, so the pads kept between calls end.
            self.end_src_pads_unless_kept();
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let s = lock(&self.settings);
        match pspec.name() {
            "server" => s.server.to_value(),
            "app-id" => s.app_id.to_value(),
            "token" => s.token.to_value(),
            "remote-uid" => {
                let st = lock(&self.state);
                st.remote_uid.clone().or_else(|| s.remote_uid.clone()).to_value()
            }
            "user-data" => s.user_data.to_value(),
            "answer" => s.answer.to_value(),
            "call-timeout" => s.call_timeout_ms.to_value(),
            "dimension" => s.dimension.to_value(),
            "max-fps" => s.max_fps.to_value(),
            "min-bitrate" => s.min_bitrate.to_value(),
            "max-bitrate" => s.max_bitrate.to_value(),
            "video-codec" => s.video_codec.to_value(),
            "ice-local-addresses" => s.ice_local_addresses.to_value(),
            "ice-transport-policy" => s.ice_transport_policy.to_value(),
            "turn-ca-file" => s.turn_ca_file.to_value(),
            "server-ca-file" => s.server_ca_file.to_value(),
            "latency" => s.latency.to_value(),
            "congestion-control" => s.congestion_control.to_value(),
            "fec" => s.fec.to_value(),
            "cpu-adaptation" => s.cpu_adaptation.to_value(),
            "encoder-speed" => s.encoder_speed.to_value(),
            "degradation-preference" => s.degradation_preference.to_value(),
            "service" => s.service.to_value(),
            "conversation-id" => lock(&self.state).conversation_id.to_value(),
            "state" => lock(&self.state).call_state.unwrap_or(CallState::Idle).as_str().to_value(),
            _ => glib::Value::from_type(pspec.value_type()),
        }
    }

    fn signals() -> &'static [glib::subclass::Signal] {
        use glib::subclass::Signal;
        static SIGNALS: LazyLock<Vec<Signal>> = LazyLock::new(|| {
            let action = |name: &'static str, f: fn(&WilddogCall)| {
                Signal::builder(name)
                    .action()
                    .class_handler(move |args| {
                        if let Some(Ok(obj)) = args.first().map(|v| v.get::<super::WilddogCall>()) {
                            f(obj.imp());
                        }
                        None
                    })
                    .build()
            };
            vec![
                // An incoming call rings: remote uid, user data (or NULL), conversation id.
                Signal::builder("wilddog-called")
                    .param_types([
                        String::static_type(),
                        Option::<String>::static_type(),
                        String::static_type(),
                    ])
                    .build(),
                // The callee's answer: ACCEPTED, REJECTED, BUSY or TIMEOUT.
                Signal::builder("wilddog-response").param_types([String::static_type()]).build(),
                // The remote stream arrived (the first src pad of the call was added).
                Signal::builder("wilddog-stream-received").build(),
                // The first remote video frame was decoded: width, height, ms since the call began.
                Signal::builder("wilddog-first-frame")
                    .param_types([u32::static_type(), u32::static_type(), u64::static_type()])
                    .build(),
                // The other side ended the call: the reason.
                Signal::builder("wilddog-closed").param_types([String::static_type()]).build(),
                // Stats every 2 s: a structure with `local` and `remote` sub-structures.
                Signal::builder("wilddog-stats")
                    .param_types([gst::Structure::static_type()])
                    .build(),
                // The link gives less than the dimension needs (`quality` "low": the frame
                // rate, then the size sent are lowered) or enough again ("good"): a
                // structure with quality, estimated-bitrate, target-bitrate, needed-bitrate
                // (kbps), width, height, fps.
                Signal::builder("wilddog-quality")
                    .param_types([gst::Structure::static_type()])
                    .build(),
                // One of the original's errors: code 41001..41008 and a message.
                Signal::builder("wilddog-error")
                    .param_types([u32::static_type(), String::static_type()])
                    .build(),
                // Action: accept the ringing incoming call.
                action("accept", |imp| imp.input(Input::Accept)),
                // Action: reject the ringing incoming call.
                action("reject", |imp| imp.input(Input::Reject)),
                // Action: cancel the outgoing call or hang up.
                action("close", |imp| imp.input(Input::Close)),
            ]
        });
        SIGNALS.as_ref()
    }
}

/// The properties of `wilddogcall`, made anew for each class that shows them
/// (`wilddogsink` and `wilddogsrc` forward them to their shared call).
pub(crate) fn call_properties() -> Vec<glib::ParamSpec> {
    let ready = glib::ParamFlags::READWRITE | gst::PARAM_FLAG_MUTABLE_READY;
    vec![
        glib::ParamSpecString::builder("server")
            .nick("Server")
            .blurb("WebSocket URL of the Wilddog signaling server, e.g. ws://127.0.0.1:8080/ws")
            .flags(ready)
            .build(),
        glib::ParamSpecString::builder("app-id").nick("App id").blurb("The Wilddog app id").flags(ready).build(),
        glib::ParamSpecString::builder("token")
            .nick("Token")
            .blurb("The token proving this endpoint's uid")
            .flags(ready)
            .build(),
        glib::ParamSpecString::builder("remote-uid")
            .nick("Remote uid")
            .blurb("Set: call this uid on PLAYING. Unset: wait for incoming calls. Reads the other party of the current or last call")
            .flags(ready)
            .build(),
        glib::ParamSpecString::builder("user-data")
            .nick("User data")
            .blurb("Data sent with the call; after an incoming call, the caller's data")
            .flags(ready)
            .build(),
        glib::ParamSpecEnum::builder_with_default("answer", DEFAULT_ANSWER)
            .nick("Answer")
            .blurb("What to do with an incoming call: accept, reject, manual (wait for the accept/reject action signals), or busy (answer BUSY without raising it)")
            .flags(glib::ParamFlags::READWRITE | gst::PARAM_FLAG_MUTABLE_PLAYING)
            .build(),
        glib::ParamSpecUInt::builder("call-timeout")
            .nick("Call timeout")
            .blurb("Milliseconds a call may ring unanswered (TIMEOUT), an incoming call may wait (41007), an accepted call may take to connect, or a lost media path may take to come back (41004)")
            .minimum(100)
            .default_value(DEFAULT_CALL_TIMEOUT_MS)
            .flags(ready)
            .build(),
        glib::ParamSpecString::builder("dimension")
            .nick("Dimension")
            .blurb("Sent video size: 120p (160x120), 240p (320x240), 360p (480x360), 480p (640x480), 720p (1280x720), 1080p (1920x1080)")
            .default_value(Some(DEFAULT_DIMENSION))
            .flags(ready)
            .build(),
        glib::ParamSpecUInt::builder("max-fps")
            .nick("Max FPS")
            .blurb("Highest sent frame rate: faster input is thinned to it (on average: a stream at or under it is sent whole, whatever its jitter); slower input is sent as it comes")
            .minimum(1)
            .maximum(MAX_MAX_FPS)
            .default_value(DEFAULT_MAX_FPS)
            .flags(ready)
            .build(),
        glib::ParamSpecUInt::builder("min-bitrate")
            .nick("Min bitrate")
            .blurb("Lowest video bitrate, kbps (50..2048; 0: the dimension's default, 200)")
            .maximum(media::MAX_BITRATE_KBPS)
            .default_value(0)
            .flags(ready)
            .build(),
        glib::ParamSpecUInt::builder("max-bitrate")
            .nick("Max bitrate")
            .blurb("Highest (target) video bitrate, kbps, also sent as b=AS in the SDP (50..2048; 0: the dimension's default, 500 up to 480p, 1024 above)")
            .maximum(media::MAX_BITRATE_KBPS)
            .default_value(0)
            .flags(ready)
            .build(),
        glib::ParamSpecEnum::builder_with_default("video-codec", DEFAULT_VIDEO_CODEC)
            .nick("Video codec")
            .blurb("Codec of the sent video (its encoder must be installed)")
            .flags(ready)
            .build(),
        glib::ParamSpecString::builder("ice-local-addresses")
            .nick("ICE local addresses")
            .blurb("Comma-separated IP addresses ICE gathers from (e.g. 127.0.0.1); unset: every interface, or 127.0.0.1 when loopback is the only one")
            .flags(ready)
            .build(),
        glib::ParamSpecEnum::builder_with_default("ice-transport-policy", DEFAULT_ICE_TRANSPORT_POLICY)
            .nick("ICE transport policy")
            .blurb("Candidates the call may use: all, or relay (TURN relay only: the media goes through the TURN server)")
            .flags(ready)
            .build(),
        // The signaling server's `wss://` certificate is checked against the system's roots
        // (SSL_CERT_FILE / SSL_CERT_DIR too), the web's public roots and this file: a server
        // with a private CA's certificate, or its own self-signed one, is reachable.
        glib::ParamSpecString::builder("server-ca-file")
            .nick("Signaling server CA file")
            .blurb("PEM file of CA certificates (or the server's own certificate, self-signed too) trusted for a wss:// signaling server, besides the system's and the web's public roots")
            .flags(ready)
            .build(),
        glib::ParamSpecString::builder("turn-ca-file")
            .nick("TURN CA file")
            .blurb("PEM file of CA certificates (or a server's own certificate, self-signed too) trusted for turns: servers, besides the system's and the web's public roots")
            .flags(ready)
            .build(),
        glib::ParamSpecUInt::builder("latency")
            .nick("Latency")
            .blurb("Receive jitterbuffer latency, ms: the longest a missing packet is waited for on a clean link (packets in order are never held). Once loss is seen the video's grows to two round trips and 200 ms (500 ms at most), so that a retransmission can arrive, and comes back 20 s after the last loss")
            .maximum(10_000)
            .default_value(DEFAULT_LATENCY_MS)
            .flags(ready)
            .build(),
        glib::ParamSpecEnum::builder_with_default("congestion-control", DEFAULT_CONGESTION_CONTROL)
            .nick("Congestion control")
            .blurb("gcc: Google Congestion Control on transport-wide feedback sets the video bitrate (up to max-bitrate), then lowers the size and the frame rate (not under 10 fps) when the link gives less than min-bitrate, and the Opus bitrate; disabled: send at max-bitrate whatever the network")
            .flags(ready)
            .build(),
        // What goes down first on a slow link (with `congestion-control=gcc`): WebRTC's
        // RTCDegradationPreference; the steps of each are in `congestion::ladder`.
        glib::ParamSpecEnum::builder_with_default(
            "degradation-preference",
            DEFAULT_DEGRADATION_PREFERENCE,
        )
        .nick("Degradation preference")
        .blurb("What goes down first when the link gives less than min-bitrate (congestion-control=gcc), as WebRTC's degradationPreference: maintain-framerate (the size, at the full frame rate; the rate only at the smallest size, to two thirds, at least 10 fps) or balanced (the frame rate to two thirds, at least 10 fps, then the size)")
        .flags(ready)
        .build(),
        glib::ParamSpecEnum::builder_with_default("fec", DEFAULT_FEC)
            .nick("FEC")
            .blurb("Forward error correction of the sent video: none (lost packets are retransmitted, NACK/RTX), or ulpfec-red (ULPFEC in RED, redundancy growing with the loss the transport-wide feedback reports, taken off the video encoder's share). Audio always carries Opus in-band FEC")
            .flags(ready)
            .build(),
        // Chrome's CPU overuse detection of the video encoder: crate::cpu_adaptation.
        glib::ParamSpecBoolean::builder("cpu-adaptation")
            .nick("CPU adaptation")
            .blurb("Make the video encoder faster when it cannot keep up (its encode time above 85 % of the frame interval for 1.5 s), or when the machine is full (all its cores 95 % busy or more for 1.5 s: a process holding many calls), and slower again when it has room (under 42 %, the machine under 80 %, after 10 s or more, never slower than encoder-speed): VP8 cpu-used -6 (Chrome's desktop speed) to -10 and -16, VP9 -6 to -8; H.264 (x264 ultrafast) stays. The speed and usage are in wilddog-stats (encoderSpeed, encodeUsage). false: always at encoder-speed")
            .default_value(DEFAULT_CPU_ADAPTATION)
            .flags(ready)
            .build(),
        // The slowest speed of the video encoder: crate::cpu_adaptation::EncoderSpeed.
        glib::ParamSpecEnum::builder_with_default("encoder-speed", DEFAULT_ENCODER_SPEED)
            .nick("Encoder speed")
            .blurb("The slowest speed of the video encoder, where each call starts: quality (Chrome's desktop speed, VP8/VP9 cpu-used -6), balanced (VP8 -10, VP9 -7) or fast (libvpx's fastest, webrtcsink's: VP8 -16, VP9 -8; the least CPU per call, a softer picture on moving content). cpu-adaptation makes it faster still on a full machine, never slower. H.264 (x264 ultrafast) has one speed")
            .flags(ready)
            .build(),
        // Protocol extension `connect.msg.service` (docs/protocol-extensions.md).
        glib::ParamSpecBoolean::builder("service")
            .nick("Service endpoint")
            .blurb("Connect as one endpoint of a pool serving this uid: a call to the uid rings one free endpoint of the pool (least recently used) instead of every connection, and the server answers BUSY when all are busy")
            .default_value(DEFAULT_SERVICE)
            .flags(ready)
            .build(),
        glib::ParamSpecString::builder("conversation-id")
            .nick("Conversation id")
            .blurb("The current or last conversation's id")
            .read_only()
            .build(),
        glib::ParamSpecString::builder("state")
            .nick("State")
            .blurb("The conversation's state: idle, calling, ringing, connecting, connected")
            .read_only()
            .build(),
    ]
}

impl GstObjectImpl for WilddogCall {}

impl ElementImpl for WilddogCall {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static META: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "Wilddog call",
                "Filter/Network/WebRTC",
                "A Wilddog one-to-one call: raw media in, the remote party's decoded media out",
                "wilddog-gst developers",
            )
        });
        Some(&*META)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let video = gst::Caps::builder("video/x-raw").build();
            let audio = gst::Caps::builder("audio/x-raw").build();
            let t = |name, dir, presence, caps: &gst::Caps| {
                gst::PadTemplate::new(name, dir, presence, caps)
                    .unwrap_or_else(|e| panic!("pad template {name}: {e}"))
            };
            vec![
                t("video_sink", gst::PadDirection::Sink, gst::PadPresence::Request, &video),
                t("audio_sink", gst::PadDirection::Sink, gst::PadPresence::Request, &audio),
                t("video_src", gst::PadDirection::Src, gst::PadPresence::Sometimes, &video),
                t("audio_src", gst::PadDirection::Src, gst::PadPresence::Sometimes, &audio),
            ]
        });
        TEMPLATES.as_ref()
    }

    fn request_new_pad(
        &self,
        templ: &gst::PadTemplate,
        _name: Option<&str>,
        _caps: Option<&gst::Caps>,
    ) -> Option<gst::Pad> {
        let kind = match templ.name_template().to_string().as_str() {
            "video_sink" => StreamKind::Video,
            "audio_sink" => StreamKind::Audio,
            _ => return None,
        };
        let mut st = lock(&self.state);
        let slot = if kind == StreamKind::Video { &mut st.video_in } else { &mut st.audio_in };
        if slot.is_some() {
            gst::warning!(CAT, imp = self, "{} already requested", templ.name_template());
            return None;
        }
        let ghost = gst::GhostPad::builder_from_template(templ)
            .event_function(|pad, parent, event| {
                WilddogCall::catch_panic_pad_function(
                    parent,
                    || false,
                    |imp| imp.sink_event(pad, event),
                )
            })
            .build();
        *slot = Some(SendStream {
            kind,
            ghost: ghost.clone(),
            encoder_bin: None,
            encoder: None,
            payloader: None,
            eos: false,
        });
        drop(st);
        if self.obj().add_pad(&ghost).is_err() {
            return None;
        }
        Some(ghost.upcast())
    }

    fn release_pad(&self, pad: &gst::Pad) {
        let mut st = lock(&self.state);
        let stream =
            if st.video_in.as_ref().is_some_and(|s| s.ghost.upcast_ref::<gst::Pad>() == pad) {
                st.video_in.take()
            } else if st.audio_in.as_ref().is_some_and(|s| s.ghost.upcast_ref::<gst::Pad>() == pad)
            {
                st.audio_in.take()
            } else {
                None
            };
        drop(st);
        if let Some(stream) = stream {
            let _ = stream.ghost.set_target(None::<&gst::Pad>);
            if let Some(bin) = stream.encoder_bin {
                remove_child(self.obj().upcast_ref(), &bin);
            }
        }
        let _ = self.obj().remove_pad(pad);
    }

    fn change_state(
        &self,
        transition: gst::StateChange,
    ) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        match transition {
            gst::StateChange::NullToReady => crate::prewarm_dtls_certificate(),
            gst::StateChange::ReadyToPaused => self.start()?,
            gst::StateChange::PausedToReady => self.stop(),
            gst::StateChange::ReadyToNull => crate::wait_dtls_prewarm(),
            _ => {}
        }
        let mut ret = self.parent_change_state(transition)?;
        match transition {
            gst::StateChange::ReadyToPaused | gst::StateChange::PlayingToPaused => {
                // Like webrtcbin: the src pads are live.
                ret = gst::StateChangeSuccess::NoPreroll;
            }
            gst::StateChange::PausedToPlaying => self.place_call(),
            _ => {}
        }
        Ok(ret)
    }
}

impl BinImpl for WilddogCall {
    /// Errors and warnings of a peer connection being torn down do not reach the application:
    /// an error marks every bin it passes as failed, and the application's pipeline, losing
    /// its state for a sink it links to a src pad as the call ends (an async sink added to a
    /// playing pipeline), never went back to PLAYING, or undid a state change that was on
    /// its way: its sinks stayed in PAUSED holding our streaming threads, so that the teardown
    /// and every later call waited on them, and a caller's pipeline never posted EOS.
    fn handle_message(&self, message: gst::Message) {
        if matches!(message.view(), gst::MessageView::Error(_) | gst::MessageView::Warning(_))
            && self.posted_by_retiring(&message)
        {
            gst::debug!(
                CAT,
                imp = self,
                "kept a message of a peer connection being torn down: {message:?}"
            );
            return;
        }
        self.parent_handle_message(message)
    }
}

impl WilddogCall {
    /// Whether `message` comes from (an element inside) a peer connection being torn down.
    fn posted_by_retiring(&self, message: &gst::Message) -> bool {
        let retiring = lock(&self.retiring);
        if retiring.is_empty() {
            return false;
        }
        let mut object = message.src().cloned();
        while let Some(o) = object {
            if retiring.iter().any(|e| e.upcast_ref::<gst::Object>() == &o) {
                return true;
            }
            object = o.parent();
        }
        false
    }
}

/// How the session task reaches the element.
struct ElementDriver(glib::WeakRef<super::WilddogCall>);

impl Driver for ElementDriver {
    fn alive(&self) -> bool {
        self.0.upgrade().is_some()
    }

    fn connect_failed(&self, error: &ClientError) {
        if let Some(obj) = self.0.upgrade() {
            obj.imp().connect_failed(error);
        }
    }

    fn signaling_state(&self, connected: bool, detail: &str) {
        if let Some(obj) = self.0.upgrade() {
            obj.imp().signaling_state(connected, detail);
        }
    }

    fn event(&self, event: Event, endpoint: &Endpoint) {
        if let Some(obj) = self.0.upgrade() {
            obj.imp().on_event(event, endpoint);
        }
    }

    fn media(&self, action: MediaAction) {
        // On the media worker: webrtcbin may block, the signaling must not.
        if let Some(obj) = self.0.upgrade() {
            obj.imp().queue_media(action);
        }
    }

    fn stats(&self) {
        if let Some(obj) = self.0.upgrade() {
            obj.imp().request_stats();
        }
    }

    fn received(&self, frame: &wilddog_client::ServerFrame) {
        if let Some(obj) = self.0.upgrade() {
            match frame {
                wilddog_client::ServerFrame::Conversation { cid, from, body } => {
                    gst::debug!(CAT, obj = obj, "received {} from {from} ({cid})", body.kind());
                }
                other => gst::debug!(CAT, obj = obj, "received {}", other.kind()),
            }
        }
    }

    fn sent(&self, frame: &wilddog_client::ClientFrame) {
        if let Some(obj) = self.0.upgrade() {
            gst::debug!(CAT, obj = obj, "sent {}", frame.kind());
        }
    }
}

impl WilddogCall {
    fn validate(&self) -> Result<Validated, gst::ErrorMessage> {
        let s = lock(&self.settings).clone();
        let missing = |what: &str| {
            gst::error_msg!(gst::LibraryError::Settings, ("property `{}` must be set", what))
        };
        let server = s.server.clone().ok_or_else(|| missing("server"))?;
        let app_id = s.app_id.clone().ok_or_else(|| missing("app-id"))?;
        let token = s.token.clone().ok_or_else(|| missing("token"))?;
        let (width, height) = media::dimension_size(&s.dimension).ok_or_else(|| {
            gst::error_msg!(
                gst::LibraryError::Settings,
                ("unknown dimension `{}`: use 120p, 240p, 360p, 480p, 720p or 1080p", s.dimension)
            )
        })?;
        if !s.video_codec.available() && lock(&self.state).video_in.is_some() {
            return Err(gst::error_msg!(
                gst::CoreError::MissingPlugin,
                ("no encoder for video-codec {:?} is installed", s.video_codec)
            ));
        }
        let (default_min, default_max) = media::default_bitrates(&s.dimension);
        let min =
            if s.min_bitrate == 0 { default_min } else { media::clamp_bitrate(s.min_bitrate) };
        let max =
            if s.max_bitrate == 0 { default_max } else { media::clamp_bitrate(s.max_bitrate) };
        if min > max {
            return Err(gst::error_msg!(
                gst::LibraryError::Settings,
                ("min-bitrate {} kbps is above max-bitrate {} kbps", min, max)
            ));
        }
        let local_addresses = match &s.ice_local_addresses {
            Some(text) => crate::ice::parse_local_addresses(text).map_err(|e| {
                gst::error_msg!(gst::LibraryError::Settings, ("ice-local-addresses: {}", e))
            })?,
            None => Vec::new(),
        };
        let turn_tls = crate::turn_tls::client_config(s.turn_ca_file.as_deref())
            .map_err(|e| gst::error_msg!(gst::LibraryError::Settings, ("{}", e)))?;
        let timeout = Duration::from_millis(u64::from(s.call_timeout_ms));
        let mut client = ClientConfig::new(server, app_id, token);
        client.service = s.service;
        client.tls = Some(crate::turn_tls::client_config(s.server_ca_file.as_deref()).map_err(
            |e| match e {
                crate::turn_tls::TunnelError::CaFile { path, reason } => gst::error_msg!(
                    gst::LibraryError::Settings,
                    ("server-ca-file {}: {}", path, reason)
                ),
                other => gst::error_msg!(gst::LibraryError::Settings, ("{}", other)),
            },
        )?);
        client.client_info = serde_json::json!({
            "sdk": "gst-plugin-wilddog",
            "version": env!("CARGO_PKG_VERSION"),
            "platform": "gstreamer",
        });
        Ok(Validated {
            video: VideoParams {
                codec: s.video_codec,
                width,
                height,
                max_fps: s.max_fps.clamp(1, MAX_MAX_FPS),
                bitrate_kbps: max,
                payload: s.video_codec.default_payload(),
                cpu_adaptation: s.cpu_adaptation,
                encoder_speed: s.encoder_speed,
            },
            min_bitrate_kbps: min,
            local_addresses,
            ice_transport_policy: s.ice_transport_policy,
            turn_tls,
            latency: s.latency,
            congestion_control: s.congestion_control,
            degradation_preference: s.degradation_preference,
            fec: s.fec,
            session: SessionConfig {
                client,
                call: CallConfig {
                    call_timeout: timeout,
                    answer_timeout: timeout,
                    connect_timeout: timeout,
                },
            },
            remote_uid: s.remote_uid,
            user_data: s.user_data,
        })
    }

    /// READY→PAUSED: check the settings, build encoders and the first peer connection,
    /// connect to the server.
    fn start(&self) -> Result<(), gst::StateChangeError> {
        let validated = match self.validate() {
            Ok(v) => v,
            Err(msg) => {
                self.post_error_message(msg);
                return Err(gst::StateChangeError);
            }
        };
        {
            let mut st = lock(&self.state);
            st.validated = Some(validated.clone());
            st.running = true;
            st.called = false;
            st.call_state = Some(CallState::Idle);
        }
        self.inputs_ended.store(false, Ordering::Release);
        if let Err(e) = self.build_encoders(&validated) {
            gst::element_imp_error!(
                self,
                gst::CoreError::MissingPlugin,
                ("cannot build the encoders: {}", e)
            );
            return Err(gst::StateChangeError);
        }
        if let Err(e) = self.prepare_media() {
            gst::element_imp_error!(
                self,
                gst::CoreError::Failed,
                ("cannot set up webrtcbin: {}", e)
            );
            return Err(gst::StateChangeError);
        }
        if let Err(e) = self.start_media_worker() {
            gst::element_imp_error!(self, gst::CoreError::Failed, ("{}", e));
            return Err(gst::StateChangeError);
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        {
            let mut st = lock(&self.state);
            st.commands = Some(tx);
            st.task_done = Some(done_rx);
        }
        let driver = ElementDriver(self.obj().downgrade());
        crate::runtime().spawn(session::run(
            validated.session,
            driver,
            rx,
            done_tx,
            crate::dtls_prewarm_done(),
        ));
        Ok(())
    }

    /// PAUSED→PLAYING: call `remote-uid`, once.
    fn place_call(&self) {
        let mut st = lock(&self.state);
        if st.called {
            return;
        }
        let Some(v) = st.validated.clone() else { return };
        let Some(remote_uid) = v.remote_uid else { return };
        st.called = true;
        st.role = Some(Role::Caller);
        st.call_began = Some(Instant::now());
        st.first_frame_done = false;
        st.stream_received = false;
        st.exposed.clear();
        gst::debug!(CAT, imp = self, "calling {remote_uid}");
        if let Some(tx) = &st.commands {
            let _ = tx.send(Command::Call { remote_uid, data: v.user_data });
        }
    }

    /// PAUSED→READY: hang up, close the connection, tear everything down.
    fn stop(&self) {
        let done = {
            let mut st = lock(&self.state);
            st.running = false;
            if let Some(tx) = st.commands.take() {
                let _ = tx.send(Command::Shutdown);
            }
            st.task_done.take()
        };
        // Wait for `bye` to go out, unless this is the plugin runtime's own thread (a
        // handler of one of our signals stopping the pipeline), which would wait on itself.
        // Another tokio runtime's thread may wait: the session task does not run there.
        if let Some(done) = done
            && !crate::on_runtime_thread()
        {
            let _ = done.recv_timeout(SHUTDOWN_WAIT);
        }
        // What the worker still does (a teardown, a restart) ends before ours.
        self.stop_media_worker();
        self.join_disposals();
        self.teardown_media(false);
        let streams: Vec<gst::Bin> = {
            let mut st = lock(&self.state);
            let mut out = Vec::new();
            for s in {
                let st = &mut *st;
                [st.video_in.as_mut(), st.audio_in.as_mut()]
            }
            .into_iter()
            .flatten()
            {
                let _ = s.ghost.set_target(None::<&gst::Pad>);
                s.encoder = None;
                s.payloader = None;
                s.eos = false;
                out.extend(s.encoder_bin.take());
            }
            st.call_state = Some(CallState::Idle);
            out
        };
        for bin in streams {
            remove_child(self.obj().upcast_ref(), &bin);
        }
    }

    /// Feeds the state machine (from action signals and webrtcbin callbacks).
    fn input(&self, input: Input) {
        if let Some(tx) = &lock(&self.state).commands {
            let _ = tx.send(Command::Input(input));
        }
    }

    /// Emits `signal` with `args` and posts `structure` as an element message.
    fn raise(&self, signal: &str, structure: gst::Structure, args: &[&dyn ToValue]) {
        let obj = self.obj();
        obj.emit_by_name::<()>(signal, args);
        let _ = obj.post_message(gst::message::Element::builder(structure).src(&*obj).build());
    }

    fn raise_error(&self, error: WilddogError, message: &str) {
        let code = error.code();
        let s = gst::Structure::builder("wilddog-error")
            .field("code", code)
            .field("name", error.name())
            .field("message", message)
            .build();
        self.raise("wilddog-error", s, &[&code, &message.to_owned()]);
    }

    fn connect_failed(&self, error: &ClientError) {
        let details =
            |code: u32| gst::Structure::builder("wilddog-error").field("code", code).build();
        match error.wilddog_code().and_then(WilddogError::from_code) {
            Some(we) => {
                self.raise_error(we, &error.to_string());
                gst::element_imp_error!(
                    self,
                    gst::ResourceError::NotAuthorized,
                    ("Wilddog error {} {}: {}", we.code(), we.name(), error),
                    details: details(we.code())
                );
            }
            None => {
                gst::element_imp_error!(
                    self,
                    gst::ResourceError::OpenReadWrite,
                    ("cannot reach the signaling server: {}", error)
                );
            }
        }
    }

    fn signaling_state(&self, connected: bool, detail: &str) {
        if !connected {
            gst::element_imp_warning!(
                self,
                gst::ResourceError::Read,
                ("signaling connection lost: {}", detail)
            );
        }
        let s = gst::Structure::builder("wilddog-signaling")
            .field("connected", connected)
            .field("detail", detail)
            .build();
        let obj = self.obj();
        let _ = obj.post_message(gst::message::Element::builder(s).src(&*obj).build());
    }

    fn on_event(&self, event: Event, endpoint: &Endpoint) {
        gst::debug!(CAT, imp = self, "event {event:?}");
        // The machine's state is already the new one: a handler of this event reading
        // `state` must see it (StateChanged comes after the event).
        lock(&self.state).call_state = Some(endpoint.state());
        match event {
            Event::Called { cid, remote_uid, data } => {
                let answer = lock(&self.settings).answer;
                if answer == AnswerPolicy::Busy {
                    // Not this element's call: nothing of it is raised or kept.
                    gst::debug!(CAT, imp = self, "answering {remote_uid}'s call {cid} busy");
                    self.input(Input::Busy);
                    return;
                }
                {
                    let mut st = lock(&self.state);
                    st.conversation_id = Some(cid.clone());
                    st.remote_uid = Some(remote_uid.clone());
                    st.role = Some(Role::Callee);
                    st.call_began = Some(Instant::now());
                    st.first_frame_done = false;
                    st.stream_received = false;
                    st.exposed.clear();
                }
                lock(&self.settings).user_data = data.clone();
                let obj = self.obj();
                obj.notify("conversation-id");
                obj.notify("remote-uid");
                let s = gst::Structure::builder("wilddog-called")
                    .field("remote-uid", &remote_uid)
                    .field("user-data", &data)
                    .field("conversation-id", &cid)
                    .build();
                self.raise("wilddog-called", s, &[&remote_uid, &data, &cid]);
                match answer {
                    AnswerPolicy::Accept => self.input(Input::Accept),
                    AnswerPolicy::Reject => self.input(Input::Reject),
                    AnswerPolicy::Manual | AnswerPolicy::Busy => {}
                }
            }
            Event::Response(r) => {
                let status = r.as_str().to_owned();
                let s =
                    gst::Structure::builder("wilddog-response").field("status", &status).build();
                self.raise("wilddog-response", s, &[&status]);
            }
            Event::Closed { reason: closed } => {
                let reason = closed.as_str().to_owned();
                let mut s = gst::Structure::builder("wilddog-closed").field("reason", &reason);
                // What the server said when it refused the call (a `call` over its frame
                // limit, a cid in use): the user's only clue.
                if let CloseReason::Refused { .. } = &closed {
                    s = s.field("message", closed.to_string());
                }
                self.raise("wilddog-closed", s.build(), &[&reason]);
            }
            Event::Error(e) => {
                let why = lock(&self.state).media_failure.take();
                self.raise_error(e, why.as_deref().unwrap_or(e.name()));
            }
            Event::StateChanged(state) => {
                // A call rung while answering busy is not this element's conversation.
                let answering_busy = state == CallState::Ringing
                    && lock(&self.settings).answer == AnswerPolicy::Busy;
                let role = {
                    let mut st = lock(&self.state);
                    st.call_state = Some(state);
                    if state == CallState::Calling {
                        // The call frame goes out now: the start of time-to-media.
                        st.call_began = Some(Instant::now());
                        st.first_frame_done = false;
                        st.stream_received = false;
                        st.exposed.clear();
                    }
                    if state != CallState::Idle && !answering_busy {
                        if let Some(cid) = endpoint.conversation_id() {
                            st.conversation_id = Some(cid.to_owned());
                        }
                        if let Some(uid) = endpoint.remote_uid() {
                            st.remote_uid = Some(uid.to_owned());
                        }
                    }
                    st.role
                };
                let obj = self.obj();
                obj.notify("state");
                obj.notify("conversation-id");
                if state == CallState::Idle && role == Some(Role::Caller) {
                    // A caller element makes one call: when it is over, so is the stream.
                    self.end_unexposed();
                    let _ = obj.post_message(gst::message::Eos::builder().src(&*obj).build());
                } else if state == CallState::Idle {
                    // A call that ends with no media torn down (rung, never accepted) after
                    // `answer` became `busy`: the pads kept from an earlier call end now.
                    self.end_src_pads_unless_kept();
                }
            }
        }
    }

    fn on_media(&self, action: MediaAction) {
        gst::debug!(CAT, imp = self, "media action {}", media_action_name(&action));
        match action {
            MediaAction::Start { ice_servers, role } => {
                {
                    let mut st = lock(&self.state);
                    st.role = Some(role);
                    st.prev_stats = None;
                    st.counter_totals = Default::default();
                    st.ice_servers = ice_servers.clone();
                }
                self.counters.remote_frames.store(0, Ordering::Relaxed);
                self.counters.media_begins();
                if self.webrtcbin().is_none()
                    && let Err(e) = self.prepare_media()
                {
                    gst::element_imp_error!(
                        self,
                        gst::CoreError::Failed,
                        ("cannot set up webrtcbin: {}", e)
                    );
                    self.input(Input::MediaFailed);
                    return;
                }
                lock(&self.state).media_failure = None;
                self.apply_ice_servers(&ice_servers);
            }
            MediaAction::CreateOffer { ice_restart } => self.offer_media(ice_restart),
            MediaAction::ApplyRemoteOffer { sdp, ice_restart } => {
                self.answer_media(&sdp, ice_restart)
            }
            MediaAction::ApplyRemoteAnswer { sdp } => self.apply_answer(&sdp),
            // For the next peer connection: an ICE restart's (restart.rs). The current one
            // keeps what it was made with: libnice takes the TURN servers when webrtcbin
            // creates its ICE stream, and neither `add-turn-server` nor `turn-server` reaches
            // a stream made before; an ICE restart gathers in a new webrtcbin anyway.
            MediaAction::IceServers { ice_servers } => {
                gst::debug!(CAT, imp = self, "fresh TURN credential for the next peer connection");
                lock(&self.state).ice_servers = ice_servers;
            }
            MediaAction::AddRemoteCandidate { sdp_mline_index, candidate } => {
                if candidate.is_empty() {
                    return;
                }
                if let Some(webrtcbin) = self.webrtcbin() {
                    webrtcbin
                        .emit_by_name::<()>("add-ice-candidate", &[&sdp_mline_index, &candidate]);
                }
            }
            MediaAction::Stop => {
                // Stopping (PAUSED→READY) tears the media down itself once the session
                // task and this worker ended; doing it here too would race the bin's own
                // state change of webrtcbin.
                if !lock(&self.state).running {
                    return;
                }
                self.teardown_media(true);
                let (running, role) = {
                    let st = lock(&self.state);
                    (st.running, st.role)
                };
                // A callee waits for the next call with a fresh peer connection.
                if running
                    && role != Some(Role::Caller)
                    && let Err(e) = self.prepare_media()
                {
                    gst::element_imp_error!(
                        self,
                        gst::CoreError::Failed,
                        ("cannot set up webrtcbin: {}", e)
                    );
                }
            }
        }
    }
}

fn caps_size(pad: &gst::Pad) -> Option<(u32, u32)> {
    let caps = pad.current_caps()?;
    let s = caps.structure(0)?;
    Some((s.get::<i32>("width").ok()? as u32, s.get::<i32>("height").ok()? as u32))
}

fn media_action_name(action: &MediaAction) -> &'static str {
    match action {
        MediaAction::Start { .. } => "start",
        MediaAction::CreateOffer { .. } => "create-offer",
        MediaAction::ApplyRemoteOffer { .. } => "apply-remote-offer",
        MediaAction::ApplyRemoteAnswer { .. } => "apply-remote-answer",
        MediaAction::AddRemoteCandidate { .. } => "add-remote-candidate",
        MediaAction::IceServers { .. } => "ice-servers",
        MediaAction::Stop => "stop",
    }
}

/// `wilddogcall`'s properties for `wilddogsink`/`wilddogsrc`, which forward them (so every
/// one is readable and writable there, `conversation-id` and `state` read-only).
pub(crate) fn call_properties_for_members() -> Vec<glib::ParamSpec> {
    call_properties()
}

/// Takes a child out of a running bin: locked first, so that a state change of the bin
/// running at the same time (the application stopping the pipeline as a call ends) cannot
/// set it back to PAUSED between our NULL and the removal, which would dispose it in PAUSED.
fn remove_child(bin: &gst::Bin, child: &impl IsA<gst::Element>) {
    child.set_locked_state(true);
    let _ = child.set_state(gst::State::Null);
    let _ = bin.remove(child);
}

/// Takes a child out of a running bin without changing its state: the caller sets it to NULL
/// afterwards (its reference keeps it until then, so it is never disposed in PAUSED), for a
/// child whose streaming threads may be held downstream (a peer connection replaced by a
/// restart, or a call's whose remote stream a sink still holds, going down on a thread of
/// its own). Out of the bin first: a state change of the bin (the application stopping the
/// pipeline) takes each child's state lock, and going to NULL holds it while it waits for
/// the child's streaming threads, which may wait for the pipeline's sinks to change state (a
/// sink prerolling in PAUSED holds the thread that pushes into it): with the child still in
/// the bin, the bin's state change and our NULL would wait for each other for ever.
fn take_out(bin: &gst::Bin, child: &impl IsA<gst::Element>) {
    child.set_locked_state(true);
    let _ = bin.remove(child);
}
