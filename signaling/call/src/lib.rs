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
//! * The callee raises [`Event::Called`] on an incoming `call`, unless a conversation is live:
//!   then it answers `busy` itself and raises nothing. [`Input::Accept`] sends `accept` and
//!   starts the media engine, which then gets the offer ([`MediaAction::ApplyRemoteOffer`])
//!   and feeds back [`Input::LocalAnswer`]. A ringing call not answered within
//!   [`CallConfig::answer_timeout`] ends with [`WilddogError::ConversationTimeout`].
//! * Remote candidates are held until the remote description has been applied.
//! * Local candidates are held until the offer or answer they belong to has been sent, and
//!   name the `a=mid` of their m-section in that description as `sdpMid`.
//! * An accepted call whose media does not connect within [`CallConfig::connect_timeout`] ends
//!   with [`WilddogError::ConnectFailed`]; so does [`Input::MediaFailed`] (ICE failed, no
//!   candidate at all, a description that cannot be applied). Both send `bye`.
//! * [`Input::Close`] sends `bye` and raises no [`Event::Closed`] (the side that closes gets
//!   no `closed`); the other side gets [`Event::Closed`] with [`CloseReason::RemoteHangup`].
//!   A new [`Input::Call`] while a conversation is live hangs the old one up first.
//! * [`Input::Disconnected`] keeps the conversation (the media goes on). On the next
//!   [`Input::Connected`] a conversation in [`CallState::Connecting`] or
//!   [`CallState::Connected`] restarts ICE: the caller re-offers with
//!   `CreateOffer { ice_restart: true }` (its offer carries `restartId`), the callee sends
//!   `restartice`, which makes the caller re-offer.
//! * Frames of another `cid` (or from another uid) than the current conversation's are
//!   ignored, except an incoming `call`.
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
use wilddog_protocol::{Body, CallMsg, CandidateMsg, Empty, ErrorCode, SdpMsg};

pub use id::new_conversation_id;
pub use wilddog_protocol::{ClientFrame, IceServer, ServerFrame};

/// The original's timeout for an unanswered call, for a ringing call and for connecting.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

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
    },
    /// Caller: set this answer as remote description.
    ApplyRemoteAnswer {
        /// The answer's SDP.
        sdp: String,
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
    /// Media: ICE/DTLS connected.
    MediaConnected,
    /// Media: the media cannot connect (ICE failed, nothing gathered, a description refused):
    /// the call ends with [`WilddogError::ConnectFailed`].
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
    /// Callee: the ICE servers of the incoming `call`.
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
}

/// One client's call state: at most one conversation at a time. See the crate docs.
#[derive(Debug)]
pub struct Endpoint {
    config: CallConfig,
    /// The ICE servers of the last `connack`.
    ice_servers: Vec<IceServer>,
    /// Whether a `connack` was seen before (so the next one is a reconnect).
    connected_before: bool,
    conversation: Option<Conversation>,
    outputs: VecDeque<Output>,
    /// Source of `restartId`s.
    restart_counter: u64,
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
        }
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

    /// The ICE servers of the last `connack`.
    pub fn ice_servers(&self) -> &[IceServer] {
        &self.ice_servers
    }

    /// The next output, in the order documented at the crate level.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When [`Endpoint::handle_timeout`] must be called next, if a timer runs.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.conversation.as_ref().and_then(|c| c.deadline)
    }

    /// Fires the timer if `now` reached it; does nothing otherwise.
    pub fn handle_timeout(&mut self, now: Instant) {
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
            Input::Close => {
                if self.conversation.is_some() {
                    self.end(true, None);
                }
            }
            Input::Connected { ice_servers } => self.connected(ice_servers),
            // The media goes on without signaling; the reconnect restarts ICE.
            Input::Disconnected => {}
            Input::Frame(frame) => self.frame(now, frame),
            Input::LocalOffer { sdp } => self.local_offer(sdp),
            Input::LocalAnswer { sdp } => self.local_answer(sdp),
            Input::LocalCandidate { sdp_mline_index, candidate } => {
                self.local_candidate(sdp_mline_index, candidate)
            }
            Input::MediaConnected => {
                if let Some(conv) = &mut self.conversation
                    && conv.state == CallState::Connecting
                {
                    conv.deadline = None;
                    self.set_state(CallState::Connected);
                }
            }
            Input::MediaFailed => {
                // The original's table: media that cannot be negotiated or connected is
                // 41004 (41007 is a call nobody answered).
                if self.state().has_media() {
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
        self.conversation = Some(Conversation {
            cid,
            remote_uid,
            role: Role::Caller,
            state: CallState::Idle,
            deadline: Some(now + self.config.call_timeout),
            ice_servers: Vec::new(),
            media_started: false,
            offer_sent: false,
            remote_description_applied: false,
            pending_candidates: Vec::new(),
            restart_id: None,
            local_mids: Vec::new(),
            local_description_sent: false,
            pending_local_candidates: Vec::new(),
        });
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
        self.send(Body::Accept(Empty::default()));
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

    fn connected(&mut self, ice_servers: Vec<IceServer>) {
        self.ice_servers = ice_servers;
        let reconnect = std::mem::replace(&mut self.connected_before, true);
        if !reconnect || !self.state().has_media() {
            return;
        }
        match self.role() {
            Some(Role::Caller) => self.restart_offer(),
            Some(Role::Callee) => self.send(Body::RestartIce(Empty::default())),
            None => {}
        }
    }

    /// Caller: re-offer with an ICE restart.
    fn restart_offer(&mut self) {
        let Some(conv) = &mut self.conversation else { return };
        if conv.role != Role::Caller || !conv.state.has_media() || !conv.offer_sent {
            // Before the first offer there is nothing to restart: that offer gathers anew.
            return;
        }
        self.restart_counter += 1;
        conv.restart_id = Some(Value::from(self.restart_counter));
        // Candidates of the restarted session belong to the answer still to come.
        conv.remote_description_applied = false;
        self.media(MediaAction::CreateOffer { ice_restart: true });
    }

    fn local_offer(&mut self, sdp: String) {
        let Some(conv) = &mut self.conversation else { return };
        if conv.role != Role::Caller || !conv.state.has_media() {
            return;
        }
        conv.offer_sent = true;
        conv.local_mids = media_ids(&sdp);
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
                let refused = matches!(
                    msg.code,
                    ErrorCode::NotParty | ErrorCode::UnknownConversation | ErrorCode::CidInUse
                );
                if refused && self.is_calling(&cid) {
                    let reason = CloseReason::Refused { code: msg.code, reason: msg.reason };
                    self.end(false, Some(Event::Closed { reason }));
                }
            }
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
        let data = msg.data_text();
        let ice_servers = callee_ice_servers(&msg, &self.ice_servers);
        self.conversation = Some(Conversation {
            cid: cid.clone(),
            remote_uid: from.clone(),
            role: Role::Callee,
            state: CallState::Idle,
            deadline: Some(now + self.config.answer_timeout),
            ice_servers,
            media_started: false,
            offer_sent: false,
            remote_description_applied: false,
            pending_candidates: Vec::new(),
            restart_id: None,
            local_mids: Vec::new(),
            local_description_sent: false,
            pending_local_candidates: Vec::new(),
        });
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
            Body::Accept(_) if role == Role::Caller && state == CallState::Calling => {
                conv.deadline = Some(now + self.config.connect_timeout);
                conv.media_started = true;
                let ice_servers = self.ice_servers.clone();
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
                conv.restart_id = msg.restart_id;
                conv.remote_description_applied = true;
                self.media(MediaAction::ApplyRemoteOffer { sdp: msg.sdp });
                self.flush_candidates();
            }
            Body::Answer(msg) if role == Role::Caller && state.has_media() => {
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
            Body::RestartIce(_) if role == Role::Caller => self.restart_offer(),
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

#[cfg(test)]
mod tests;

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
