//! The Wilddog conversation state machine, sans I/O.
//!
//! An [`Endpoint`] is one client's call state: it holds at most one conversation at a time,
//! as the original Web SDK did. It does no I/O and reads no clock: the caller feeds it
//! [`Input`]s (what the application asked for, what the signaling connection delivered, what
//! the media engine reported) together with the current [`Instant`], and drains
//! [`Output`]s with [`Endpoint::poll_output`]: frames to send ([`Output::Send`]), things to
//! tell the application ([`Output::Event`]) and things the media engine must do
//! ([`Output::Media`]). Timers are deadlines: [`Endpoint::poll_timeout`] says when to call
//! [`Endpoint::handle_timeout`] next.
//!
//! # Driving it
//!
//! ```
//! use std::time::Instant;
//! use wilddog_call::{CallConfig, Endpoint, Input, Output};
//!
//! let mut endpoint = Endpoint::new(CallConfig::default());
//! let now = Instant::now();
//! endpoint.handle_input(now, Input::Connected { ice_servers: Vec::new() });
//! endpoint.handle_input(
//!     now,
//!     Input::Call { cid: "cid1".into(), remote_uid: "bob".into(), data: None },
//! );
//! while let Some(output) = endpoint.poll_output() {
//!     match output {
//!         Output::Send(frame) => { /* client.send(frame) */ let _ = frame; }
//!         Output::Event(event) => { /* tell the application */ let _ = event; }
//!         Output::Media(action) => { /* drive webrtcbin */ let _ = action; }
//!     }
//! }
//! // Sleep until endpoint.poll_timeout(), then endpoint.handle_timeout(Instant::now()).
//! ```
//!
//! # Rules (the original's)
//!
//! * The caller sends `call` (with `msg.data` and the `iceServers` of its `connack`) and
//!   creates its offer only after `accept`: [`MediaAction::Start`], then
//!   [`MediaAction::CreateOffer`]. It gets [`Response::Accepted`], [`Response::Rejected`] or
//!   [`Response::Busy`] from the callee, [`Response::Timeout`] after
//!   [`CallConfig::call_timeout`] without an answer (it then sends `bye` to stop the ringing)
//!   or at once when the server says the callee is unreachable.
//! * The callee raises [`Event::Called`] on an incoming `call`, unless a conversation is live
//!   or the endpoint is [reserved](Endpoint::set_reserved): then it answers `busy` itself and
//!   raises nothing. [`Input::Accept`] sends `accept` and
//!   starts the media engine, which then gets the offer ([`MediaAction::ApplyRemoteOffer`])
//!   and feeds back [`Input::LocalAnswer`]. A ringing call not answered within
//!   [`CallConfig::answer_timeout`] ends with [`WilddogError::ConversationTimeout`].
//! * Remote candidates are held until the remote description has been applied.
//! * Local candidates are held until the offer or answer they belong to has been sent, and
//!   name the `a=mid` of their m-section in that description as `sdpMid`.
//! * An accepted call whose media does not connect within [`CallConfig::connect_timeout`] ends
//!   with [`WilddogError::ConnectFailed`], and so does [`Input::MediaFailed`] before the media
//!   ever connected (media that cannot be negotiated or connected). Both send `bye`.
//! * [`Input::Close`] sends `bye` and raises no [`Event::Closed`] (the side that closes gets
//!   no `closed`); the other side gets [`Event::Closed`] with [`CloseReason::RemoteHangup`].
//!   A new [`Input::Call`] while a conversation is live hangs the old one up first.
//! * Frames of another `cid` (or from another uid) than the current conversation's are
//!   ignored, except an incoming `call`.
//!
//! # Interruptions: signaling blips, dying paths, restarted servers
//!
//! A call whose media flows is never ended by signaling: [`Input::Disconnected`] keeps the
//! conversation. On every later [`Input::Connected`] (a reconnect) a conversation in
//! [`CallState::Connecting`] or [`CallState::Connected`] sends `resume` (so that the server
//! binds it to the new connection, or re-creates it after a restart of its own), then asks
//! for a restart: the caller re-offers, the callee sends `restartice` (which makes the caller
//! re-offer). A restart comes in two weights:
//!
//! * **Resync**, while the media is healthy: the caller sends its current offer again (a new
//!   `restartId`, the same SDP) with its candidates; a callee that gets the offer it answered
//!   (the same text but for `o=`) sends its answer again with its candidates. Nothing touches
//!   the media: an offer or answer lost in the blip is delivered, and the peer learns that we
//!   are back. Another offer of the same transport (`a=ice-ufrag`, `a=ice-pwd`,
//!   `a=fingerprint`, the m-sections' kinds) is a renegotiation, applied as it is.
//! * **ICE restart**, when the path is lost ([`Input::MediaDisconnected`], or
//!   [`Input::MediaFailed`] after the media had connected), or when the callee asks again
//!   within [`REPEATED_RESTART_WINDOW`] of a resync: the caller gets
//!   `CreateOffer { ice_restart: true }` (new ICE credentials and candidates; a media engine
//!   that cannot restart in place makes a new peer connection), the callee sends `restartice`.
//!   A callee that gets an offer whose transport changed applies it
//!   (`ApplyRemoteOffer { ice_restart: true }`; a media engine that cannot restart in place
//!   makes a new peer connection for it). An attempt that does not bring the media back
//!   ([`Input::MediaConnected`]) within [`RESTART_RETRY`] is made again; a path that does not
//!   come back within [`CallConfig::connect_timeout`] ends the call with
//!   [`WilddogError::ConnectFailed`] (and `bye`). A failed attempt never ends a call by itself.
//!
//! A restart gathers again, and a TURN server refuses an expired credential: the endpoint
//! keeps the TURN credentials of its ICE servers fresh. A `turn` frame (our server's, sent
//! before the last credential expires) or a reconnect's `connack` gives the TURN entries
//! minted for the same user (`EXPIRY:USER`) a new credential, and media that runs gets the
//! conversation's new list ([`MediaAction::IceServers`]) before any later restart.
//!
//! After a reconnect, an `error` `not_party` or `unknown_conversation` for the live `cid`
//! (the server has not handed the conversation over yet, or does not know it) makes the
//! endpoint send `resume` and its restart again after each of [`RESUME_RETRY_DELAYS`]; when
//! the last retry is refused too, the conversation ends with [`Event::Closed`] and
//! [`CloseReason::Refused`].
//!
//! # Order of outputs
//!
//! Outputs come out in the order the endpoint produced them, and for one input or timeout
//! in this fixed order, step by step:
//!
//! 1. frames to send ([`Output::Send`]),
//! 2. media actions ([`Output::Media`]), `Stop` last,
//! 3. the event that says what happened ([`Event::Called`], [`Event::Response`],
//!    [`Event::Closed`], [`Event::Error`]),
//! 4. [`Event::StateChanged`], emitted exactly when [`Endpoint::state`] changed.
//!
//! An input that does two things (a new call while one is live) produces the first step's
//! outputs in that order, then the second's: `bye`, `Stop`, `StateChanged(Idle)`, `call`,
//! `StateChanged(Calling)`.

mod id;

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use serde_json::Value;
use wilddog_protocol::{
    AcceptMsg, Body, CallMsg, CandidateMsg, Empty, ErrorCode, ResumeMsg, SdpMsg, TurnCredential,
};

pub use id::new_conversation_id;
pub use wilddog_protocol::{ClientFrame, IceServer, ServerFrame};

/// The original's timeout for an unanswered call, for a ringing call and for connecting.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long an ICE restart may take to bring a lost path back before it is made again.
pub const RESTART_RETRY: Duration = Duration::from_secs(4);

/// A `restartice` that comes within this time of one answered by a resync asks for a real
/// ICE restart: the callee's path is still lost although ours looks healthy.
pub const REPEATED_RESTART_WINDOW: Duration = Duration::from_secs(10);

/// After a reconnect, the delays before `resume` (and the restart) are sent again when the
/// server refuses them with `not_party` or `unknown_conversation`. They add up to more than
/// the server's reconnect grace (10 s by default), within which a half-open old connection
/// is found dead and the conversation handed over.
pub const RESUME_RETRY_DELAYS: [Duration; 5] = [
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(8),
];

/// The most candidates of one local description kept to be sent again by a resync.
const MAX_KEPT_CANDIDATES: usize = 64;

/// The timers of a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallConfig {
    /// Caller: how long the callee may ring before the caller gets [`Response::Timeout`]
    /// (and sends `bye`). 30 s by default.
    pub call_timeout: Duration,
    /// Callee: how long an incoming call may ring unanswered before it ends with
    /// [`WilddogError::ConversationTimeout`]. 30 s by default.
    pub answer_timeout: Duration,
    /// Both: how long an accepted call may take to connect its media before it ends with
    /// [`WilddogError::ConnectFailed`] (and `bye`). 30 s by default.
    pub connect_timeout: Duration,
}

impl Default for CallConfig {
    fn default() -> Self {
        CallConfig {
            call_timeout: DEFAULT_TIMEOUT,
            answer_timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// Which side of a conversation this endpoint is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Placed the call; creates the offers.
    Caller,
    /// Received the call; answers the offers.
    Callee,
}

impl Role {
    /// `"caller"` or `"callee"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Caller => "caller",
            Role::Callee => "callee",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the endpoint's conversation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CallState {
    /// No conversation.
    #[default]
    Idle,
    /// Outgoing call, ringing at the callee.
    Calling,
    /// Incoming call, not answered yet.
    Ringing,
    /// Accepted; the media engine is negotiating.
    Connecting,
    /// Media connected.
    Connected,
}

impl CallState {
    /// `"idle"`, `"calling"`, `"ringing"`, `"connecting"` or `"connected"`.
    pub fn as_str(self) -> &'static str {
        match self {
            CallState::Idle => "idle",
            CallState::Calling => "calling",
            CallState::Ringing => "ringing",
            CallState::Connecting => "connecting",
            CallState::Connected => "connected",
        }
    }

    /// Whether a conversation is live (anything but [`CallState::Idle`]).
    pub fn is_live(self) -> bool {
        self != CallState::Idle
    }

    /// Whether the media engine runs ([`CallState::Connecting`] or [`CallState::Connected`]).
    pub fn has_media(self) -> bool {
        matches!(self, CallState::Connecting | CallState::Connected)
    }
}

impl fmt::Display for CallState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The answer a caller gets (the original's `response` event).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Response {
    /// The callee accepted.
    Accepted,
    /// The callee refused.
    Rejected,
    /// The callee already had a live conversation.
    Busy,
    /// No answer within [`CallConfig::call_timeout`], or the callee is not connected.
    Timeout,
}

impl Response {
    /// `"ACCEPTED"`, `"REJECTED"`, `"BUSY"` or `"TIMEOUT"`, as the original spells them.
    pub fn as_str(self) -> &'static str {
        match self {
            Response::Accepted => "ACCEPTED",
            Response::Rejected => "REJECTED",
            Response::Busy => "BUSY",
            Response::Timeout => "TIMEOUT",
        }
    }
}

impl fmt::Display for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The original's error codes (`err.code` of its `error` and `token_error` events).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum WilddogError {
    /// 41001: the token's expiry has passed.
    #[error("41001 TOKEN_EXPIRED")]
    TokenExpired,
    /// 41002: the token is not valid.
    #[error("41002 TOKEN_INVALID")]
    TokenInvalid,
    /// 41003: no ICE servers configured.
    #[error("41003 GET_CONFIG_ERROR")]
    GetConfigError,
    /// 41004: accepted, but the media never connected.
    #[error("41004 CONVERSATION_CONNECT_FAILED")]
    ConnectFailed,
    /// 41005: a capture device is missing.
    #[error("41005 DEVICE_NOT_AVAILABLE")]
    DeviceNotAvailable,
    /// 41006: an operation took too long.
    #[error("41006 OPERATION_TIMEOUT")]
    OperationTimeout,
    /// 41007: a ringing call was never answered.
    #[error("41007 CONVERSATION_TIMEOUT")]
    ConversationTimeout,
    /// 41008: the app id is not valid.
    #[error("41008 APPID_INVALID")]
    AppIdInvalid,
}

impl WilddogError {
    /// Every error, in code order.
    pub const ALL: [WilddogError; 8] = [
        WilddogError::TokenExpired,
        WilddogError::TokenInvalid,
        WilddogError::GetConfigError,
        WilddogError::ConnectFailed,
        WilddogError::DeviceNotAvailable,
        WilddogError::OperationTimeout,
        WilddogError::ConversationTimeout,
        WilddogError::AppIdInvalid,
    ];

    /// The numeric code, 41001 to 41008.
    pub fn code(self) -> u32 {
        match self {
            WilddogError::TokenExpired => 41001,
            WilddogError::TokenInvalid => 41002,
            WilddogError::GetConfigError => 41003,
            WilddogError::ConnectFailed => 41004,
            WilddogError::DeviceNotAvailable => 41005,
            WilddogError::OperationTimeout => 41006,
            WilddogError::ConversationTimeout => 41007,
            WilddogError::AppIdInvalid => 41008,
        }
    }

    /// The original's name, e.g. `"TOKEN_INVALID"`.
    pub fn name(self) -> &'static str {
        match self {
            WilddogError::TokenExpired => "TOKEN_EXPIRED",
            WilddogError::TokenInvalid => "TOKEN_INVALID",
            WilddogError::GetConfigError => "GET_CONFIG_ERROR",
            WilddogError::ConnectFailed => "CONVERSATION_CONNECT_FAILED",
            WilddogError::DeviceNotAvailable => "DEVICE_NOT_AVAILABLE",
            WilddogError::OperationTimeout => "OPERATION_TIMEOUT",
            WilddogError::ConversationTimeout => "CONVERSATION_TIMEOUT",
            WilddogError::AppIdInvalid => "APPID_INVALID",
        }
    }

    /// The error of a numeric code, if it is one of the original's.
    pub fn from_code(code: u32) -> Option<Self> {
        WilddogError::ALL.into_iter().find(|e| e.code() == code)
    }
}

/// Why a conversation ended, as [`Event::Closed`] tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The other party sent `bye` (hung up, or cancelled before an answer).
    RemoteHangup,
    /// This side hung up. The endpoint never raises it (the closing side gets no `closed`);
    /// it is here for drivers that report their own ending of a call.
    LocalHangup,
    /// A timer ended the call. The endpoint raises [`Event::Response`] or [`Event::Error`]
    /// for its timers; this is for drivers that report one as a close.
    Timeout,
    /// An error ended the call. The endpoint raises [`Event::Error`] for its own errors;
    /// this is for drivers that report one as a close.
    Error(WilddogError),
    /// The server refused the outgoing call (`error` frame `not_party`,
    /// `unknown_conversation` or `cid_in_use` for its `cid` while calling).
    Refused {
        /// The server's code.
        code: ErrorCode,
        /// The server's reason.
        reason: String,
    },
}

impl CloseReason {
    /// A short name: `"remote-hangup"`, `"local-hangup"`, `"timeout"`, `"error"`, `"refused"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            CloseReason::RemoteHangup => "remote-hangup",
            CloseReason::LocalHangup => "local-hangup",
            CloseReason::Timeout => "timeout",
            CloseReason::Error(_) => "error",
            CloseReason::Refused { .. } => "refused",
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::Error(e) => write!(f, "error {e}"),
            CloseReason::Refused { code, reason } => write!(f, "refused ({code:?}): {reason}"),
            other => f.write_str(other.as_str()),
        }
    }
}

/// What the application learns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// An incoming call rings (state [`CallState::Ringing`]); answer with [`Input::Accept`] or
    /// [`Input::Reject`].
    Called {
        /// Its conversation id.
        cid: String,
        /// The caller's uid.
        remote_uid: String,
        /// The caller's user data, as text.
        data: Option<String>,
    },
    /// Caller: the callee's answer, or [`Response::Timeout`].
    Response(Response),
    /// The conversation ended, not by this side.
    Closed {
        /// Why.
        reason: CloseReason,
    },
    /// The conversation ended with one of the original's errors.
    Error(WilddogError),
    /// [`Endpoint::state`] changed to this.
    StateChanged(CallState),
}

/// What the media engine (webrtcbin) must do.
#[derive(Debug, Clone, PartialEq)]
pub enum MediaAction {
    /// Create the peer connection with these ICE servers.
    Start {
        /// From `connack` (caller) or from the `call` frame, else `connack` (callee).
        ice_servers: Vec<IceServer>,
        /// Which side this is.
        role: Role,
    },
    /// Caller: create an offer, set it as local description and feed back
    /// [`Input::LocalOffer`].
    CreateOffer {
        /// Restart ICE (after a reconnect or a `restartice`).
        ice_restart: bool,
    },
    /// Callee: set this offer as remote description, create an answer, set it as local
    /// description and feed back [`Input::LocalAnswer`].
    ApplyRemoteOffer {
        /// The offer's SDP.
        sdp: String,
        /// A later offer whose ICE credentials or DTLS fingerprint changed (the caller
        /// restarted ICE, or made a new peer connection): a media engine that cannot restart
        /// in place makes a new peer connection for it. False for the first offer and for a
        /// renegotiation of the same transport.
        ice_restart: bool,
    },
    /// Caller: set this answer as remote description.
    ApplyRemoteAnswer {
        /// The answer's SDP.
        sdp: String,
    },
    /// Use these ICE servers from now on: the server sent a fresh TURN credential (`turn`, or
    /// a reconnect's `connack`) while the media runs. A peer connection made later (an ICE
    /// restart's) must gather with them: the ones it was started with may have expired, and
    /// the TURN server refuses an expired credential. Only emitted when the list changed.
    IceServers {
        /// The conversation's ICE servers with the fresh credential.
        ice_servers: Vec<IceServer>,
    },
    /// Add a remote ICE candidate (only ever after the remote description was applied).
    AddRemoteCandidate {
        /// Index of its m-line.
        sdp_mline_index: u32,
        /// The `candidate:…` line; empty for end-of-candidates.
        candidate: String,
    },
    /// Tear the peer connection down.
    Stop,
}

/// One thing the driver must do, from [`Endpoint::poll_output`].
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Send this frame to the signaling server.
    Send(ClientFrame),
    /// Tell the application.
    Event(Event),
    /// Drive the media engine.
    Media(MediaAction),
}

/// What the endpoint is told.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// Application: call `remote_uid` in a new conversation `cid` (see
    /// [`new_conversation_id`]). Hangs up a live conversation first.
    Call {
        /// The new conversation's id.
        cid: String,
        /// The callee's uid.
        remote_uid: String,
        /// User data for the callee.
        data: Option<String>,
    },
    /// Application: accept the ringing incoming call.
    Accept,
    /// Application: refuse the ringing incoming call.
    Reject,
    /// Application: answer the ringing incoming call `busy` (an endpoint that takes no call
    /// now, e.g. one of a pool that is being replaced); the caller gets [`Response::Busy`].
    Busy,
    /// Application: cancel the outgoing call or hang up.
    Close,
    /// Signaling: a good `connack` (the first, or after a reconnect).
    Connected {
        /// The `connack`'s ICE servers.
        ice_servers: Vec<IceServer>,
    },
    /// Signaling: the socket was lost (the client reconnects).
    Disconnected,
    /// Signaling: a frame from the server.
    Frame(ServerFrame),
    /// Media: the offer [`MediaAction::CreateOffer`] asked for.
    LocalOffer {
        /// Its SDP.
        sdp: String,
    },
    /// Media: the answer [`MediaAction::ApplyRemoteOffer`] asked for.
    LocalAnswer {
        /// Its SDP.
        sdp: String,
    },
    /// Media: a local ICE candidate.
    LocalCandidate {
        /// Index of its m-line.
        sdp_mline_index: u32,
        /// The `candidate:…` line.
        candidate: String,
    },
    /// Media: ICE/DTLS connected, or packets flow again after [`Input::MediaDisconnected`].
    MediaConnected,
    /// Media: the path of a connected call is dying (ICE disconnected or failed, no packets
    /// any more). The endpoint restarts ICE.
    MediaDisconnected,
    /// Media: an offer or answer could not be made or applied, or ICE failed. Before the
    /// media ever connected the call ends with [`WilddogError::ConnectFailed`]; after, it is
    /// a failed restart attempt, made again.
    MediaFailed,
}

/// The live conversation.
#[derive(Debug)]
struct Conversation {
    cid: String,
    remote_uid: String,
    role: Role,
    state: CallState,
    /// When the current phase's timer fires.
    deadline: Option<Instant>,
    /// The ICE servers the media uses (callee: those of the incoming `call`; caller: its
    /// `connack`'s with the `accept`'s fresh credential), kept fresh by `turn` frames.
    ice_servers: Vec<IceServer>,
    /// Whether [`MediaAction::Start`] was emitted (so `Stop` is owed).
    media_started: bool,
    /// Caller: whether the first offer went out (a restart before it is pointless).
    offer_sent: bool,
    /// Whether the current remote description was applied (candidates may be added).
    remote_description_applied: bool,
    /// Remote candidates waiting for the remote description.
    pending_candidates: Vec<(u32, String)>,
    /// Caller: `restartId` for the offer being created. Callee: `restartId` to echo.
    restart_id: Option<Value>,
    /// The `a=mid` of each m-section of the local description, by index: the `sdpMid` of
    /// our candidates. A browser refuses a candidate whose `sdpMid` names no section.
    local_mids: Vec<Option<String>>,
    /// Whether the offer or answer our candidates belong to went out: a peer cannot add a
    /// candidate before it has that description (the original Web SDK even ends the call
    /// on the error), and the media engine may gather before it hands the description over.
    local_description_sent: bool,
    /// Our candidates waiting for that description.
    pending_local_candidates: Vec<(u32, String)>,
    /// The last offer (caller) or answer (callee) sent, for a resync.
    local_description: Option<String>,
    /// The candidates sent for it, for a resync.
    sent_candidates: Vec<(u32, String)>,
    /// Caller: the `restartId` of the offer whose answer is awaited; answers carrying
    /// another are stale.
    awaited_restart_id: Option<Value>,
    /// Callee: the transport of the last offer applied, to tell a restart from a
    /// renegotiation, and its text (less `o=`), to tell a resync from either.
    remote_transport: Option<Vec<String>>,
    remote_offer: Option<String>,
    /// Whether the media connected at least once.
    media_connected_once: bool,
    /// Since when the path is lost (the media reported it), until it comes back.
    path_lost_since: Option<Instant>,
    /// Caller: an ICE restart was asked of the media engine and its offer did not go out yet.
    restart_offer_pending: bool,
    /// When the current restart attempt is made again if the path is still lost.
    restart_retry_at: Option<Instant>,
    /// Caller: when the last `restartice` was answered by a resync.
    resynced_restartice_at: Option<Instant>,
    /// A reconnect happened while the media ran (refusals of the cid are then retried).
    reconnected: bool,
    /// When `resume` is sent again after a refusal, and how many retries were made.
    resume_retry_at: Option<Instant>,
    resume_retries: usize,
}

impl Conversation {
    fn new(cid: String, remote_uid: String, role: Role, deadline: Instant) -> Conversation {
        Conversation {
            cid,
            remote_uid,
            role,
            state: CallState::Idle,
            deadline: Some(deadline),
            ice_servers: Vec::new(),
            media_started: false,
            offer_sent: false,
            remote_description_applied: false,
            pending_candidates: Vec::new(),
            restart_id: None,
            local_mids: Vec::new(),
            local_description_sent: false,
            pending_local_candidates: Vec::new(),
            local_description: None,
            sent_candidates: Vec::new(),
            awaited_restart_id: None,
            remote_transport: None,
            remote_offer: None,
            media_connected_once: false,
            path_lost_since: None,
            restart_offer_pending: false,
            restart_retry_at: None,
            resynced_restartice_at: None,
            reconnected: false,
            resume_retry_at: None,
            resume_retries: 0,
        }
    }

    /// Whether the media is connected and its path not reported lost.
    fn media_healthy(&self) -> bool {
        self.state == CallState::Connected && self.path_lost_since.is_none()
    }
}

/// One client's call state: at most one conversation at a time. See the crate docs.
#[derive(Debug)]
pub struct Endpoint {
    config: CallConfig,
    /// The ICE servers of the last `connack`, with the fresh TURN credential of any later
    /// `turn` frame.
    ice_servers: Vec<IceServer>,
    /// Whether a `connack` was seen before (so the next one is a reconnect).
    connected_before: bool,
    conversation: Option<Conversation>,
    outputs: VecDeque<Output>,
    /// Source of `restartId`s.
    restart_counter: u64,
    /// Set by [`Endpoint::set_reserved`]: an incoming call is answered `busy`, as in a call.
    reserved: bool,
}

impl Endpoint {
    /// An idle endpoint.
    pub fn new(config: CallConfig) -> Self {
        Endpoint {
            config,
            ice_servers: Vec::new(),
            connected_before: false,
            conversation: None,
            outputs: VecDeque::new(),
            restart_counter: 0,
            reserved: false,
        }
    }

    /// While `reserved`, an idle endpoint answers every incoming call `busy` itself and
    /// raises nothing, as it does in a conversation: the application has a call of its own
    /// to place (it waits, say, for its media engine to be ready) and must not be rung
    /// before. A ringing or live conversation is not touched.
    pub fn set_reserved(&mut self, reserved: bool) {
        self.reserved = reserved;
    }

    /// The timers in use.
    pub fn config(&self) -> &CallConfig {
        &self.config
    }

    /// The conversation's state.
    pub fn state(&self) -> CallState {
        self.conversation.as_ref().map_or(CallState::Idle, |c| c.state)
    }

    /// The live conversation's id.
    pub fn conversation_id(&self) -> Option<&str> {
        self.conversation.as_ref().map(|c| c.cid.as_str())
    }

    /// The other party of the live conversation.
    pub fn remote_uid(&self) -> Option<&str> {
        self.conversation.as_ref().map(|c| c.remote_uid.as_str())
    }

    /// This side's role in the live conversation.
    pub fn role(&self) -> Option<Role> {
        self.conversation.as_ref().map(|c| c.role)
    }

    /// The ICE servers of the last `connack`, with the credential of any later `turn` frame.
    pub fn ice_servers(&self) -> &[IceServer] {
        &self.ice_servers
    }

    /// The next output, in the order documented at the crate level.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When [`Endpoint::handle_timeout`] must be called next, if a timer runs.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let conv = self.conversation.as_ref()?;
        [conv.deadline, conv.restart_retry_at, conv.resume_retry_at].into_iter().flatten().min()
    }

    /// Fires the timers that `now` reached; does nothing otherwise.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.handle_deadline(now);
        if let Some(conv) = &mut self.conversation
            && conv.resume_retry_at.is_some_and(|at| now >= at)
        {
            conv.resume_retry_at = None;
            conv.resume_retries += 1;
            self.resume(now);
        }
        if let Some(conv) = &mut self.conversation
            && conv.restart_retry_at.is_some_and(|at| now >= at)
        {
            conv.restart_retry_at = None;
            if conv.path_lost_since.is_some() {
                self.ice_restart(now);
            }
        }
    }

    fn handle_deadline(&mut self, now: Instant) {
        let Some(conv) = &self.conversation else { return };
        match conv.deadline {
            Some(deadline) if now >= deadline => {}
            _ => return,
        }
        match conv.state {
            CallState::Calling => {
                self.end(true, Some(Event::Response(Response::Timeout)));
            }
            CallState::Ringing => {
                self.end(false, Some(Event::Error(WilddogError::ConversationTimeout)));
            }
            CallState::Connecting => {
                self.end(true, Some(Event::Error(WilddogError::ConnectFailed)));
            }
            // The path was lost and did not come back.
            CallState::Connected if conv.path_lost_since.is_some() => {
                self.end(true, Some(Event::Error(WilddogError::ConnectFailed)));
            }
            CallState::Connected | CallState::Idle => {
                if let Some(conv) = &mut self.conversation {
                    conv.deadline = None;
                }
            }
        }
    }

    /// Handles one input at `now`.
    pub fn handle_input(&mut self, now: Instant, input: Input) {
        match input {
            Input::Call { cid, remote_uid, data } => self.call(now, cid, remote_uid, data),
            Input::Accept => self.accept(now),
            Input::Reject => self.reject(),
            Input::Busy => self.answer_busy(),
            Input::Close => {
                if self.conversation.is_some() {
                    self.end(true, None);
                }
            }
            Input::Connected { ice_servers } => self.connected(now, ice_servers),
            // The media goes on without signaling; the reconnect resumes.
            Input::Disconnected => {}
            Input::Frame(frame) => self.frame(now, frame),
            Input::LocalOffer { sdp } => self.local_offer(sdp),
            Input::LocalAnswer { sdp } => self.local_answer(sdp),
            Input::LocalCandidate { sdp_mline_index, candidate } => {
                self.local_candidate(sdp_mline_index, candidate)
            }
            Input::MediaConnected => self.media_connected(),
            Input::MediaDisconnected => self.path_lost(now),
            Input::MediaFailed => {
                let Some(conv) = &self.conversation else { return };
                if !conv.state.has_media() {
                    return;
                }
                if conv.media_connected_once {
                    // A restart attempt failed (or ICE failed on the connected call): the
                    // path is lost, and it is tried again.
                    self.path_lost(now);
                    if let Some(conv) = &mut self.conversation {
                        conv.restart_offer_pending = false;
                        conv.restart_retry_at.get_or_insert(now + RESTART_RETRY);
                    }
                } else {
                    self.end(true, Some(Event::Error(WilddogError::ConnectFailed)));
                }
            }
        }
    }

    fn push_send(&mut self, cid: &str, to: &str, body: Body) {
        self.outputs.push_back(Output::Send(ClientFrame::Conversation {
            cid: cid.to_owned(),
            to: to.to_owned(),
            body,
        }));
    }

    /// Sends `body` in the live conversation.
    fn send(&mut self, body: Body) {
        if let Some(conv) = &self.conversation {
            let frame = ClientFrame::Conversation {
                cid: conv.cid.clone(),
                to: conv.remote_uid.clone(),
                body,
            };
            self.outputs.push_back(Output::Send(frame));
        }
    }

    fn media(&mut self, action: MediaAction) {
        if matches!(action, MediaAction::CreateOffer { .. } | MediaAction::ApplyRemoteOffer { .. })
            && let Some(conv) = &mut self.conversation
        {
            // A new local description is coming; what is gathered now belongs to it.
            conv.local_description_sent = false;
            conv.sent_candidates.clear();
        }
        self.outputs.push_back(Output::Media(action));
    }

    fn event(&mut self, event: Event) {
        self.outputs.push_back(Output::Event(event));
    }

    fn set_state(&mut self, state: CallState) {
        if let Some(conv) = &mut self.conversation
            && conv.state != state
        {
            conv.state = state;
            self.event(Event::StateChanged(state));
        }
    }

    /// Ends the live conversation: `bye` if asked, `Stop` if the media runs, `event`, and
    /// `StateChanged(Idle)`.
    fn end(&mut self, send_bye: bool, event: Option<Event>) {
        if send_bye {
            self.send(Body::Bye(Empty::default()));
        }
        let Some(conv) = self.conversation.take() else { return };
        if conv.media_started {
            self.media(MediaAction::Stop);
        }
        if let Some(event) = event {
            self.event(event);
        }
        if conv.state != CallState::Idle {
            self.event(Event::StateChanged(CallState::Idle));
        }
    }

    fn call(&mut self, now: Instant, cid: String, remote_uid: String, data: Option<String>) {
        if self.conversation.is_some() {
            self.end(true, None);
        }
        let msg = CallMsg {
            data: data.map(Value::String),
            ice_servers: Some(self.ice_servers.clone()),
            ..CallMsg::default()
        };
        self.push_send(&cid, &remote_uid, Body::Call(msg));
        let deadline = now + self.config.call_timeout;
        self.conversation = Some(Conversation::new(cid, remote_uid, Role::Caller, deadline));
        self.set_state(CallState::Calling);
    }

    fn accept(&mut self, now: Instant) {
        let Some(conv) = &mut self.conversation else { return };
        if conv.state != CallState::Ringing {
            return;
        }
        conv.deadline = Some(now + self.config.connect_timeout);
        conv.media_started = true;
        let ice_servers = conv.ice_servers.clone();
        self.send(Body::Accept(AcceptMsg::default()));
        self.media(MediaAction::Start { ice_servers, role: Role::Callee });
        self.set_state(CallState::Connecting);
    }

    fn reject(&mut self) {
        if self.state() != CallState::Ringing {
            return;
        }
        self.send(Body::Reject(Empty::default()));
        self.end(false, None);
    }

    fn answer_busy(&mut self) {
        if self.state() != CallState::Ringing {
            return;
        }
        self.send(Body::Busy(Empty::default()));
        self.end(false, None);
    }

    fn connected(&mut self, now: Instant, ice_servers: Vec<IceServer>) {
        // A reconnect's `connack` carries credentials minted now: the live conversation's
        // media (its next ICE restart) takes them too.
        let fresh: Vec<TurnCredential> = ice_servers
            .iter()
            .filter_map(|s| {
                let username = s.username.as_ref().filter(|u| rest_user(u).is_some())?;
                let credential = s.credential.clone()?;
                Some(TurnCredential { username: username.clone(), credential })
            })
            .collect();
        self.ice_servers = ice_servers;
        let first_output = self.outputs.len();
        for credential in &fresh {
            self.fresh_turn_credential(credential, false);
        }
        // The fresh servers must reach the media before the restart below, yet frames come
        // first (the documented order): the restart's media actions go after them.
        let refreshed: Vec<Output> = self.outputs.drain(first_output..).collect();
        let reconnect = std::mem::replace(&mut self.connected_before, true);
        if let Some(conv) = &mut self.conversation
            && reconnect
            && conv.state.has_media()
        {
            conv.reconnected = true;
            // Refusals counted for the previous connection mean nothing for this one.
            conv.resume_retry_at = None;
            conv.resume_retries = 0;
            self.resume(now);
        }
        let media_at = (first_output..self.outputs.len())
            .find(|&i| matches!(self.outputs[i], Output::Media(_)))
            .unwrap_or(self.outputs.len());
        for (offset, output) in refreshed.into_iter().enumerate() {
            self.outputs.insert(media_at + offset, output);
        }
    }

    /// A fresh TURN credential for our uid: the TURN entries minted for the same user take it
    /// (the `connack`'s when `ours_too`, and the live conversation's), and media that runs
    /// gets the conversation's new list for its next gathering.
    fn fresh_turn_credential(&mut self, fresh: &TurnCredential, ours_too: bool) {
        if ours_too {
            self.ice_servers = with_fresh_turn_credential(&self.ice_servers, fresh);
        }
        let Some(conv) = &mut self.conversation else { return };
        let ice_servers = with_fresh_turn_credential(&conv.ice_servers, fresh);
        if ice_servers == conv.ice_servers {
            return;
        }
        conv.ice_servers = ice_servers.clone();
        if conv.media_started {
            self.media(MediaAction::IceServers { ice_servers });
        }
    }

    /// `resume`, then the restart that fits: resync or ICE restart.
    fn resume(&mut self, now: Instant) {
        let Some(conv) = &self.conversation else { return };
        if !conv.state.has_media() {
            return;
        }
        let role = match conv.role {
            Role::Caller => wilddog_protocol::Role::Caller,
            Role::Callee => wilddog_protocol::Role::Callee,
        };
        let frame = ClientFrame::Resume {
            cid: conv.cid.clone(),
            to: conv.remote_uid.clone(),
            msg: ResumeMsg::new(role),
        };
        self.outputs.push_back(Output::Send(frame));
        self.restart(now);
    }

    /// Asks for a restart of the weight the media's health calls for.
    fn restart(&mut self, now: Instant) {
        let Some(conv) = &self.conversation else { return };
        match conv.role {
            Role::Callee => self.send(Body::RestartIce(Empty::default())),
            // A lost path whose restart offer is not out or not answered yet: that offer (a
            // resync sends it again); answered and still lost: a new attempt.
            Role::Caller if conv.path_lost_since.is_some() && conv.remote_description_applied => {
                self.ice_restart(now)
            }
            Role::Caller => self.resync(),
        }
    }

    /// Caller: sends the current offer again (new `restartId`), with its candidates. While a
    /// restart's offer is still being made, that offer goes out when it comes.
    fn resync(&mut self) {
        let Some(conv) = &mut self.conversation else { return };
        if conv.role != Role::Caller || !conv.state.has_media() || conv.restart_offer_pending {
            return;
        }
        let Some(sdp) = conv.local_description.clone() else {
            // Before the first offer there is nothing to repeat: that offer goes out anyway.
            return;
        };
        self.restart_counter += 1;
        let restart_id = Value::from(self.restart_counter);
        conv.awaited_restart_id = Some(restart_id.clone());
        let candidates = conv.sent_candidates.clone();
        let msg = SdpMsg { sdp, restart_id: Some(restart_id), ..SdpMsg::default() };
        self.send(Body::Offer(msg));
        for (index, candidate) in candidates {
            self.send_candidate(index, candidate);
        }
    }

    /// Callee: sends the current answer again (echoing the offer's `restartId`), with its
    /// candidates.
    fn resend_answer(&mut self, restart_id: Option<Value>) {
        let Some(conv) = &self.conversation else { return };
        let Some(sdp) = conv.local_description.clone() else { return };
        let candidates = conv.sent_candidates.clone();
        self.send(Body::Answer(SdpMsg { sdp, restart_id, ..SdpMsg::default() }));
        for (index, candidate) in candidates {
            self.send_candidate(index, candidate);
        }
    }

    /// The path of the call is lost: restart ICE, and end the call if it does not come back.
    fn path_lost(&mut self, now: Instant) {
        let connect_timeout = self.config.connect_timeout;
        let Some(conv) = &mut self.conversation else { return };
        if conv.state != CallState::Connected || conv.path_lost_since.is_some() {
            return;
        }
        conv.path_lost_since = Some(now);
        conv.deadline = Some(now + connect_timeout);
        self.ice_restart(now);
    }

    /// Caller: a new offer with an ICE restart; callee: `restartice`. Made again after
    /// [`RESTART_RETRY`] while the path is lost.
    fn ice_restart(&mut self, now: Instant) {
        let Some(conv) = &mut self.conversation else { return };
        if !conv.state.has_media() {
            return;
        }
        conv.restart_retry_at = Some(now + RESTART_RETRY);
        match conv.role {
            Role::Callee => self.send(Body::RestartIce(Empty::default())),
            Role::Caller => {
                if !conv.offer_sent || conv.restart_offer_pending {
                    // Before the first offer there is nothing to restart: that offer gathers
                    // anew. A restart's offer being made already is the one asked for.
                    return;
                }
                self.restart_counter += 1;
                conv.restart_id = Some(Value::from(self.restart_counter));
                conv.restart_offer_pending = true;
                // Candidates of the restarted session belong to the answer still to come.
                conv.remote_description_applied = false;
                self.media(MediaAction::CreateOffer { ice_restart: true });
            }
        }
    }

    /// Caller: the callee asks for a restart. A resync first while our media is healthy; a
    /// second request soon after means the callee's path is lost: restart ICE.
    fn restartice(&mut self, now: Instant) {
        let Some(conv) = &mut self.conversation else { return };
        if conv.path_lost_since.is_some() && conv.restart_retry_at.is_some() {
            // Our own restart is under way (and made again if it fails): another one now
            // would only start it over.
            return;
        }
        let repeated =
            conv.resynced_restartice_at.is_some_and(|at| now < at + REPEATED_RESTART_WINDOW);
        if conv.media_healthy() && !repeated || conv.state == CallState::Connecting {
            conv.resynced_restartice_at = Some(now);
            self.resync();
        } else {
            conv.resynced_restartice_at = None;
            self.ice_restart(now);
        }
    }

    fn media_connected(&mut self) {
        let Some(conv) = &mut self.conversation else { return };
        if !conv.state.has_media() {
            return;
        }
        conv.media_connected_once = true;
        if conv.path_lost_since.take().is_some() {
            conv.deadline = None;
            conv.restart_retry_at = None;
        }
        if conv.state == CallState::Connecting {
            conv.deadline = None;
            self.set_state(CallState::Connected);
        }
    }

    /// After a reconnect the server refused a frame of the live conversation: `resume` and
    /// the restart again after a delay; when every retry was refused, the call is over.
    fn refused(&mut self, now: Instant, code: ErrorCode, reason: String) {
        let Some(conv) = &mut self.conversation else { return };
        if !conv.reconnected || !conv.state.has_media() || conv.resume_retry_at.is_some() {
            return;
        }
        match RESUME_RETRY_DELAYS.get(conv.resume_retries) {
            Some(delay) => conv.resume_retry_at = Some(now + *delay),
            None => {
                let reason = CloseReason::Refused { code, reason };
                self.end(false, Some(Event::Closed { reason }));
            }
        }
    }

    fn local_offer(&mut self, sdp: String) {
        let Some(conv) = &mut self.conversation else { return };
        if conv.role != Role::Caller || !conv.state.has_media() {
            return;
        }
        conv.offer_sent = true;
        conv.restart_offer_pending = false;
        conv.local_mids = media_ids(&sdp);
        conv.local_description = Some(sdp.clone());
        conv.awaited_restart_id = conv.restart_id.clone();
        let msg = SdpMsg { sdp, restart_id: conv.restart_id.take(), ..SdpMsg::default() };
        self.send(Body::Offer(msg));
        self.local_description_sent();
    }

    fn local_answer(&mut self, sdp: String) {
        let Some(conv) = &mut self.conversation else { return };
        if conv.role != Role::Callee || !conv.state.has_media() {
            return;
        }
        conv.local_mids = media_ids(&sdp);
        conv.local_description = Some(sdp.clone());
        let msg = SdpMsg { sdp, restart_id: conv.restart_id.take(), ..SdpMsg::default() };
        self.send(Body::Answer(msg));
        self.local_description_sent();
    }

    /// Sends the candidates gathered before the description they belong to went out.
    fn local_description_sent(&mut self) {
        let Some(conv) = &mut self.conversation else { return };
        conv.local_description_sent = true;
        for (index, candidate) in std::mem::take(&mut conv.pending_local_candidates) {
            self.local_candidate(index, candidate);
        }
    }

    fn local_candidate(&mut self, sdp_mline_index: u32, candidate: String) {
        let Some(conv) = &mut self.conversation else { return };
        if !conv.state.has_media() {
            return;
        }
        if !conv.local_description_sent {
            conv.pending_local_candidates.push((sdp_mline_index, candidate));
            return;
        }
        if conv.sent_candidates.len() < MAX_KEPT_CANDIDATES {
            conv.sent_candidates.push((sdp_mline_index, candidate.clone()));
        }
        self.send_candidate(sdp_mline_index, candidate);
    }

    fn send_candidate(&mut self, sdp_mline_index: u32, candidate: String) {
        let Some(conv) = &self.conversation else { return };
        let sdp_mid = conv.local_mids.get(sdp_mline_index as usize).cloned().flatten();
        let msg = CandidateMsg {
            sdp_mline_index: Some(sdp_mline_index),
            sdp_mid,
            sdp: candidate,
            ..CandidateMsg::default()
        };
        self.send(Body::Candidate(msg));
    }

    fn frame(&mut self, now: Instant, frame: ServerFrame) {
        match frame {
            ServerFrame::Conversation { cid, from, body } => {
                let ours = self
                    .conversation
                    .as_ref()
                    .is_some_and(|c| c.cid == cid && c.remote_uid == from);
                if ours {
                    self.conversation_frame(now, body);
                } else if let Body::Call(msg) = body {
                    self.incoming_call(now, cid, from, msg);
                }
            }
            ServerFrame::Unreachable { cid, .. } => {
                if self.is_calling(&cid) {
                    self.end(false, Some(Event::Response(Response::Timeout)));
                }
            }
            ServerFrame::Error { cid: Some(cid), msg } => {
                // A `call` over the server's frame limit (its `data`) is refused too.
                let refused = matches!(
                    msg.code,
                    ErrorCode::NotParty
                        | ErrorCode::UnknownConversation
                        | ErrorCode::CidInUse
                        | ErrorCode::TooLarge
                );
                if refused && self.is_calling(&cid) {
                    let reason = CloseReason::Refused { code: msg.code, reason: msg.reason };
                    self.end(false, Some(Event::Closed { reason }));
                } else if matches!(msg.code, ErrorCode::NotParty | ErrorCode::UnknownConversation)
                    && self.conversation_id() == Some(cid.as_str())
                {
                    self.refused(now, msg.code, msg.reason);
                }
            }
            ServerFrame::Turn(fresh) => self.fresh_turn_credential(&fresh, true),
            ServerFrame::Error { cid: None, .. }
            | ServerFrame::Connack { .. }
            | ServerFrame::TelemetryAck { .. }
            | ServerFrame::Unknown(_) => {}
        }
    }

    fn is_calling(&self, cid: &str) -> bool {
        self.conversation.as_ref().is_some_and(|c| c.cid == cid && c.state == CallState::Calling)
    }

    fn incoming_call(&mut self, now: Instant, cid: String, from: String, msg: CallMsg) {
        if let Some(conv) = &self.conversation {
            if conv.cid != cid {
                self.push_send(&cid, &from, Body::Busy(Empty::default()));
            }
            // The same cid from someone else: not ours to answer.
            return;
        }
        if self.reserved {
            self.push_send(&cid, &from, Body::Busy(Empty::default()));
            return;
        }
        let data = msg.data_text();
        let ice_servers = callee_ice_servers(&msg, &self.ice_servers);
        let deadline = now + self.config.answer_timeout;
        let mut conv = Conversation::new(cid.clone(), from.clone(), Role::Callee, deadline);
        conv.ice_servers = ice_servers;
        self.conversation = Some(conv);
        self.event(Event::Called { cid, remote_uid: from, data });
        self.set_state(CallState::Ringing);
    }

    /// A frame of the live conversation, from its other party.
    fn conversation_frame(&mut self, now: Instant, body: Body) {
        let Some(conv) = &mut self.conversation else { return };
        let (role, state) = (conv.role, conv.state);
        match body {
            Body::Bye(_) => {
                self.end(false, Some(Event::Closed { reason: CloseReason::RemoteHangup }))
            }
            Body::Accept(msg) if role == Role::Caller && state == CallState::Calling => {
                conv.deadline = Some(now + self.config.connect_timeout);
                conv.media_started = true;
                let ice_servers = match &msg.turn_credential {
                    Some(fresh) => with_fresh_turn_credential(&self.ice_servers, fresh),
                    None => self.ice_servers.clone(),
                };
                conv.ice_servers = ice_servers.clone();
                self.media(MediaAction::Start { ice_servers, role: Role::Caller });
                self.media(MediaAction::CreateOffer { ice_restart: false });
                self.event(Event::Response(Response::Accepted));
                self.set_state(CallState::Connecting);
            }
            Body::Reject(_) if role == Role::Caller && state == CallState::Calling => {
                self.end(false, Some(Event::Response(Response::Rejected)));
            }
            Body::Busy(_) if role == Role::Caller && state == CallState::Calling => {
                self.end(false, Some(Event::Response(Response::Busy)));
            }
            Body::Offer(msg) if role == Role::Callee && state.has_media() => {
                let transport = transport_of(&msg.sdp);
                let same_transport = conv.remote_transport.as_ref() == Some(&transport);
                let offer = without_origin(&msg.sdp);
                if same_transport
                    && conv.remote_offer.as_ref() == Some(&offer)
                    && conv.local_description.is_some()
                {
                    // The offer we answered, again (the caller resyncs after a blip).
                    self.resend_answer(msg.restart_id);
                    return;
                }
                let ice_restart = conv.remote_transport.is_some() && !same_transport;
                conv.remote_transport = Some(transport);
                conv.remote_offer = Some(offer);
                conv.local_description = None;
                if conv.path_lost_since.is_some() {
                    // The caller's restart: give it its time before asking again.
                    conv.restart_retry_at = Some(now + RESTART_RETRY);
                }
                conv.restart_id = msg.restart_id;
                conv.remote_description_applied = true;
                self.media(MediaAction::ApplyRemoteOffer { sdp: msg.sdp, ice_restart });
                self.flush_candidates();
            }
            Body::Answer(msg) if role == Role::Caller && state.has_media() => {
                if msg.restart_id.is_some() && msg.restart_id != conv.awaited_restart_id {
                    // The answer to an older offer.
                    return;
                }
                if conv.remote_description_applied || conv.restart_offer_pending {
                    // The answer to a resync: the one applied already holds.
                    return;
                }
                conv.remote_description_applied = true;
                self.media(MediaAction::ApplyRemoteAnswer { sdp: msg.sdp });
                self.flush_candidates();
            }
            Body::Candidate(msg) => {
                let index = msg.sdp_mline_index.unwrap_or(0);
                if conv.remote_description_applied {
                    self.media(MediaAction::AddRemoteCandidate {
                        sdp_mline_index: index,
                        candidate: msg.sdp,
                    });
                } else {
                    conv.pending_candidates.push((index, msg.sdp));
                }
            }
            Body::RestartIce(_) if role == Role::Caller && state.has_media() => {
                self.restartice(now)
            }
            // Duplicates, frames out of order, a `call` repeated: nothing to do.
            _ => {}
        }
    }

    fn flush_candidates(&mut self) {
        let Some(conv) = &mut self.conversation else { return };
        let pending = std::mem::take(&mut conv.pending_candidates);
        for (sdp_mline_index, candidate) in pending {
            self.media(MediaAction::AddRemoteCandidate { sdp_mline_index, candidate });
        }
    }
}

/// The callee's ICE servers: the `call`'s, else its own `connack`'s; TURN entries without
/// credentials get the `turnCredential` the server added to the `call`.
fn callee_ice_servers(msg: &CallMsg, own: &[IceServer]) -> Vec<IceServer> {
    let mut servers = match &msg.ice_servers {
        Some(servers) if !servers.is_empty() => servers.clone(),
        _ => own.to_vec(),
    };
    if let Some(turn) = &msg.turn_credential {
        for server in &mut servers {
            let is_turn = server.kind.as_deref() == Some("turn")
                || server
                    .all_urls()
                    .iter()
                    .any(|u| u.starts_with("turn:") || u.starts_with("turns:"));
            if is_turn && server.username.is_none() {
                server.username = Some(turn.username.clone());
                server.credential = Some(turn.credential.clone());
            }
        }
    }
    servers
}

/// ICE servers with a credential the server minted for us later than theirs (at the
/// `accept`, in a `turn` frame, our extensions): theirs may have expired since (a client
/// connected for a day, a call that lasts). Only the entries the server minted take it: TURN
/// entries whose user name has the TURN REST form (`expiry:user`,
/// draft-uberti-behave-turn-rest) for the same user; a fixed entry keeps its own.
fn with_fresh_turn_credential(servers: &[IceServer], fresh: &TurnCredential) -> Vec<IceServer> {
    let Some(user) = rest_user(&fresh.username) else { return servers.to_vec() };
    servers
        .iter()
        .cloned()
        .map(|mut server| {
            if server.username.as_deref().and_then(rest_user) == Some(user) {
                server.username = Some(fresh.username.clone());
                server.credential = Some(fresh.credential.clone());
            }
            server
        })
        .collect()
}

/// The user of a TURN REST user name (`expiry:user`), if it has that form.
fn rest_user(username: &str) -> Option<&str> {
    let (expiry, user) = username.split_once(':')?;
    (!expiry.is_empty() && expiry.bytes().all(|b| b.is_ascii_digit())).then_some(user)
}

#[cfg(test)]
mod tests;

/// What identifies the transport of an SDP: the kinds of its m-sections, in order, and the
/// distinct values of its `a=ice-ufrag`, `a=ice-pwd` and `a=fingerprint` lines. An ICE restart
/// changes the credentials, a new peer connection the fingerprint too. Not the m-lines' ports
/// (Firefox puts its default candidate's port there in a re-offer of the same transport), nor
/// which sections repeat the values (a stopped section has none).
fn transport_of(sdp: &str) -> Vec<String> {
    let mut kinds = Vec::new();
    let mut values = std::collections::BTreeSet::new();
    for line in sdp.lines().map(str::trim) {
        if let Some(media) = line.strip_prefix("m=") {
            kinds.push(format!("m={}", media.split(' ').next().unwrap_or_default()));
        } else if line.starts_with("a=ice-ufrag:")
            || line.starts_with("a=ice-pwd:")
            || line.starts_with("a=fingerprint:")
        {
            values.insert(line.to_owned());
        }
    }
    kinds.extend(values);
    kinds
}

/// An SDP without its `o=` line (whose version a browser's every new offer increments).
fn without_origin(sdp: &str) -> String {
    sdp.lines().filter(|line| !line.starts_with("o=")).collect::<Vec<_>>().join("\n")
}

/// The `a=mid` value of each m-section of an SDP, in order (`None` for a section without one).
fn media_ids(sdp: &str) -> Vec<Option<String>> {
    let mut mids = Vec::new();
    for line in sdp.lines() {
        if line.starts_with("m=") {
            mids.push(None);
        } else if let (Some(value), Some(last)) = (line.strip_prefix("a=mid:"), mids.last_mut()) {
            *last = Some(value.trim().to_owned());
        }
    }
    mids
}
