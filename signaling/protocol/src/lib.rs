//! Frames of the Wilddog v2 one-to-one call signaling protocol.
//!
//! Every frame is one WebSocket text message holding JSON. A client sends
//! `{"type","cid","to","msg"}`; the server sends the same shape with `"from"` (the uid the
//! server authenticated) in place of `"to"`. The heartbeat is a bare JSON number.
//!
//! This crate is serde types only: no I/O. [`ClientFrame`] is what a client sends,
//! [`ServerFrame`] what the server sends; the [`Body`] of a conversation frame is the same in
//! both directions, since the server relays it. Every `msg` keeps the fields it does not know
//! (`extra`), so that a relayed frame loses nothing an original client put in it.
//!
//! Extensions (old clients ignore frame types they do not know): [`ServerFrame::Error`]
//! (`"type":"error"`) tells a client why a frame was refused, and
//! [`ServerFrame::Unreachable`] (`"type":"unreachable"`) tells a caller that the callee is
//! not connected, so that it can fail at once instead of waiting for its timeout;
//! [`ClientFrame::Resume`] (`"type":"resume"`) re-announces a live conversation after a
//! reconnect; [`Connect::service`] (`connect.msg.service`) declares a connection one endpoint
//! of a pool serving its uid; [`ServerFrame::Turn`] (`"type":"turn"`) hands a connection a
//! fresh TURN credential before its last one expires. `docs/protocol-extensions.md` tells the
//! rules.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Fields of a `msg` object that a type does not name, kept for relaying.
pub type Extra = Map<String, Value>;

/// The largest frame the server accepts by default, in bytes. SDP offers with many codecs
/// and candidates run to tens of KiB; this leaves room for them and bounds what one client
/// can make the server buffer.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 256 * 1024;

/// How many times its frame limit the server reads a frame to refuse it with an error frame
/// (`too_large`); a frame larger still closes the socket (1009) without being read.
pub const HARD_LIMIT_FACTOR: usize = 4;

/// The size over which the server closes the socket (1009, message too big) rather than
/// refusing the frame with `too_large`, for a frame limit of `max_frame_bytes`: 1 MiB for
/// [`DEFAULT_MAX_FRAME_BYTES`].
pub const fn hard_frame_limit(max_frame_bytes: usize) -> usize {
    max_frame_bytes.saturating_mul(HARD_LIMIT_FACTOR)
}

/// Why a text could not be read as a frame.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// Not JSON, or JSON of the wrong shape.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// A field the frame type needs is absent.
    #[error("frame `{kind}` lacks field `{field}`")]
    MissingField {
        /// The frame's `type`.
        kind: String,
        /// The missing field.
        field: &'static str,
    },
    /// The `msg` does not have the shape its `type` needs.
    #[error("frame `{kind}` has a bad msg: {reason}")]
    BadMsg {
        /// The frame's `type`.
        kind: String,
        /// What serde said.
        reason: String,
    },
}

/// A `msg` with no fields of its own (`accept`, `reject`, `busy`, `bye`, `restartice`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Empty {
    /// Whatever the sender put there anyway.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `connect`: the first frame a client sends.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Connect {
    /// The token that proves the client's uid.
    pub token: String,
    /// The app the client belongs to.
    pub app_id: String,
    /// Free-form description of the client (SDK name, version, browser).
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub client_info: Value,
    /// Extension: this connection is one endpoint of a pool serving its uid (a bot, a
    /// recorder). A call to a uid with service connections rings one free service connection
    /// (least recently used) instead of every connection of the uid; when all are busy the
    /// server answers the caller `busy` itself. Absent (false) on the wire unless set.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub service: bool,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// Which party of a conversation a [`ClientFrame::Resume`] speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The party that sent `call`.
    Caller,
    /// The party that accepted it.
    Callee,
}

/// `resume.msg`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResumeMsg {
    /// The role of the sender in the conversation it resumes.
    pub role: Role,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

impl ResumeMsg {
    /// A `resume.msg` for `role`.
    pub fn new(role: Role) -> Self {
        ResumeMsg { role, extra: Extra::new() }
    }
}

/// `connack.code`.
pub mod connack_code {
    /// The token was accepted.
    pub const OK: i64 = 0;
    /// Bad signature, malformed token, unknown app id (then with `appIdInvalid`).
    pub const TOKEN_INVALID: i64 = 1;
    /// The token's expiry has passed.
    pub const TOKEN_EXPIRED: i64 = 2;
}

/// `connack`: the server's answer to `connect`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Connack {
    /// See [`connack_code`].
    pub code: i64,
    /// ICE servers for the client's peer connections. Never empty when `code` is 0: the
    /// original client refuses to call without one.
    #[serde(default)]
    pub ice_servers: Vec<IceServer>,
    /// Whether the app is stopped (always false here).
    #[serde(default)]
    pub stopped: bool,
    /// Extension, with code 1: the app id is not an app of this server (41008
    /// APPID_INVALID), rather than a bad token (41002). Absent otherwise; old clients ignore
    /// it and report code 1 as TOKEN_INVALID.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub app_id_invalid: bool,
    /// Extension, with code 0: the largest text frame, in bytes, the server takes
    /// (`limits.max_frame_bytes`); it refuses a larger one (`too_large`) and closes the
    /// socket on one over [`hard_frame_limit`] of it. Our clients refuse to send a larger
    /// frame. Absent from the original's (and old servers'): old clients ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_frame_bytes: Option<u64>,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `urls` of an ICE server: one URL or several, as `RTCIceServer.urls`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Urls {
    /// A single URL.
    One(String),
    /// Several URLs.
    Many(Vec<String>),
}

impl Urls {
    /// The URLs as a list.
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            Urls::One(u) => vec![u.clone()],
            Urls::Many(v) => v.clone(),
        }
    }
}

/// One ICE server entry. The original client reads `url`; browsers read `urls`; the server
/// fills both.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IceServer {
    /// The first URL (what the original client reads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// All URLs (what `RTCPeerConnection` reads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Urls>,
    /// TURN user name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// TURN credential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
    /// `"stun"` or `"turn"`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

impl IceServer {
    /// Every URL of the entry, from `urls` or else `url`.
    pub fn all_urls(&self) -> Vec<String> {
        match (&self.urls, &self.url) {
            (Some(urls), _) => urls.to_vec(),
            (None, Some(url)) => vec![url.clone()],
            (None, None) => Vec::new(),
        }
    }
}

/// TURN credential that the server adds to a forwarded `call` (and, our extensions, to a
/// forwarded `accept` and in a `turn` frame).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TurnCredential {
    /// User name.
    pub username: String,
    /// Credential.
    pub credential: String,
}

/// `call.msg`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CallMsg {
    /// The caller's user data (the original sends a string; anything is relayed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    /// The caller's ICE servers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ice_servers: Option<Vec<IceServer>>,
    /// Added by the server when it forwards the call; the original callee needs it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn_credential: Option<TurnCredential>,
    /// May be added by the server when it forwards the call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_video_codec: Option<String>,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

impl CallMsg {
    /// The user data as text: a string as is, anything else as its JSON, absent as `None`.
    pub fn data_text(&self) -> Option<String> {
        match &self.data {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => Some(other.to_string()),
        }
    }
}

/// `offer.msg` and `answer.msg`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SdpMsg {
    /// The session description text.
    pub sdp: String,
    /// Set on an offer that restarts ICE, and echoed by its answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_id: Option<Value>,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `candidate.msg`. The candidate line is in `sdp`, not `candidate`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CandidateMsg {
    /// Index of the m-line the candidate belongs to.
    #[serde(default, rename = "sdpMLineIndex", skip_serializing_if = "Option::is_none")]
    pub sdp_mline_index: Option<u32>,
    /// Media id of the m-line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdp_mid: Option<String>,
    /// `candidate:…` line; empty for end-of-candidates.
    #[serde(default)]
    pub sdp: String,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `accept.msg`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AcceptMsg {
    /// Added by our server when it forwards the accept (an extension the original client
    /// ignores): a TURN credential minted for the caller now. The caller's own one came with
    /// its `connack`, maybe longer ago than it lives (`docs/protocol-extensions.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn_credential: Option<TurnCredential>,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// The body of a conversation frame: what passes between the two parties of a `cid`.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// Caller → callee: ring.
    Call(CallMsg),
    /// Callee → caller: answered yes.
    Accept(AcceptMsg),
    /// Callee → caller: answered no.
    Reject(Empty),
    /// Callee → caller: already in a conversation.
    Busy(Empty),
    /// Caller → callee, after `accept`.
    Offer(SdpMsg),
    /// Callee → caller.
    Answer(SdpMsg),
    /// Either way: a trickled ICE candidate.
    Candidate(CandidateMsg),
    /// Either way: cancel a ringing call or hang up.
    Bye(Empty),
    /// Callee → caller: re-offer with an ICE restart.
    RestartIce(Empty),
}

impl Body {
    /// The frame `type` this body travels as.
    pub fn kind(&self) -> &'static str {
        match self {
            Body::Call(_) => "call",
            Body::Accept(_) => "accept",
            Body::Reject(_) => "reject",
            Body::Busy(_) => "busy",
            Body::Offer(_) => "offer",
            Body::Answer(_) => "answer",
            Body::Candidate(_) => "candidate",
            Body::Bye(_) => "bye",
            Body::RestartIce(_) => "restartice",
        }
    }

    fn to_msg(&self) -> Value {
        let v = match self {
            Body::Call(m) => serde_json::to_value(m),
            Body::Accept(m) => serde_json::to_value(m),
            Body::Reject(m) | Body::Busy(m) | Body::Bye(m) | Body::RestartIce(m) => {
                serde_json::to_value(m)
            }
            Body::Offer(m) | Body::Answer(m) => serde_json::to_value(m),
            Body::Candidate(m) => serde_json::to_value(m),
        };
        // Our msg types hold only strings, numbers and maps: serializing them cannot fail.
        v.unwrap_or(Value::Null)
    }

    fn from_msg(kind: &str, msg: Value) -> Result<Option<Body>, FrameError> {
        fn typed<T: serde::de::DeserializeOwned>(kind: &str, msg: Value) -> Result<T, FrameError> {
            let msg = if msg.is_null() { Value::Object(Map::new()) } else { msg };
            serde_json::from_value(msg)
                .map_err(|e| FrameError::BadMsg { kind: kind.to_owned(), reason: e.to_string() })
        }
        Ok(Some(match kind {
            "call" => Body::Call(typed(kind, msg)?),
            "accept" => Body::Accept(typed(kind, msg)?),
            "reject" => Body::Reject(typed(kind, msg)?),
            "busy" => Body::Busy(typed(kind, msg)?),
            "offer" => Body::Offer(typed(kind, msg)?),
            "answer" => Body::Answer(typed(kind, msg)?),
            "candidate" => Body::Candidate(typed(kind, msg)?),
            "bye" => Body::Bye(typed(kind, msg)?),
            "restartice" => Body::RestartIce(typed(kind, msg)?),
            _ => return Ok(None),
        }))
    }
}

/// Telemetry frames: the server acknowledges `device`, `start`, `end` and relays nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TelemetryKind {
    /// Device description; acknowledged with `deviceack`.
    Device,
    /// Call start; acknowledged with `startack`.
    Start,
    /// Call end; acknowledged with `endack`.
    End,
    /// Quality report every 60 s; not acknowledged.
    Quality,
}

impl TelemetryKind {
    /// The frame `type`.
    pub fn kind(self) -> &'static str {
        match self {
            TelemetryKind::Device => "device",
            TelemetryKind::Start => "start",
            TelemetryKind::End => "end",
            TelemetryKind::Quality => "quality",
        }
    }

    /// The acknowledgement's `type`, if the server acknowledges this kind.
    pub fn ack_kind(self) -> Option<&'static str> {
        match self {
            TelemetryKind::Device => Some("deviceack"),
            TelemetryKind::Start => Some("startack"),
            TelemetryKind::End => Some("endack"),
            TelemetryKind::Quality => None,
        }
    }

    fn from_kind(kind: &str) -> Option<Self> {
        Some(match kind {
            "device" => TelemetryKind::Device,
            "start" => TelemetryKind::Start,
            "end" => TelemetryKind::End,
            "quality" => TelemetryKind::Quality,
            _ => return None,
        })
    }

    fn from_ack_kind(kind: &str) -> Option<Self> {
        Some(match kind {
            "deviceack" => TelemetryKind::Device,
            "startack" => TelemetryKind::Start,
            "endack" => TelemetryKind::End,
            _ => return None,
        })
    }
}

/// A frame whose `type` this crate does not know, kept whole.
#[derive(Debug, Clone, PartialEq)]
pub struct UnknownFrame {
    /// Its `type`.
    pub kind: String,
    /// Its `cid`, if any.
    pub cid: Option<String>,
    /// Its `to` (client frames) or `from` (server frames), if any.
    pub peer: Option<String>,
    /// Its `msg`.
    pub msg: Value,
}

/// What a client sends.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientFrame {
    /// A bare number every 30 s.
    Heartbeat(u64),
    /// The first frame: authenticate.
    Connect(Connect),
    /// A frame of a conversation, addressed to the other party.
    Conversation {
        /// Conversation id, chosen by the caller.
        cid: String,
        /// The other party's uid.
        to: String,
        /// What it says.
        body: Body,
    },
    /// Extension: after a reconnect, a client with a live conversation re-announces it
    /// before its ICE-restart `offer` or `restartice`, so that the server binds the
    /// conversation to this connection (or re-creates it, if the server restarted).
    Resume {
        /// The live conversation.
        cid: String,
        /// The other party's uid.
        to: String,
        /// The sender's role.
        msg: ResumeMsg,
    },
    /// `device`, `start`, `end`, `quality`.
    Telemetry {
        /// Which one.
        kind: TelemetryKind,
        /// Conversation id, if any.
        cid: Option<String>,
        /// Its content, unread by the server.
        msg: Value,
    },
    /// A type this crate does not know.
    Unknown(UnknownFrame),
}

/// Codes of the [`ServerFrame::Error`] extension frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, or not a frame.
    Malformed,
    /// A `type` the server does not handle.
    UnknownType,
    /// A frame before a good `connack`, or a second `connect`.
    NotConnected,
    /// Over the frame size limit.
    TooLarge,
    /// Frames faster than the rate limit.
    RateLimited,
    /// A conversation frame from someone who is not a party of that `cid`, or to the wrong uid.
    NotParty,
    /// A `call` whose `cid` is already used by others.
    CidInUse,
    /// A conversation frame for a `cid` the server does not know (ended, never begun).
    UnknownConversation,
    /// A frame out of order for its conversation (an `offer` before `accept`, …).
    OutOfOrder,
    /// An error code from a newer server.
    #[serde(other)]
    Other,
}

/// `msg` of the [`ServerFrame::Error`] extension frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorMsg {
    /// Machine-readable code.
    pub code: ErrorCode,
    /// Human-readable reason.
    pub reason: String,
    /// The `type` of the frame that was refused, if it had one.
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub refers_to: Option<String>,
}

/// What the server sends.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerFrame {
    /// The answer to `connect`.
    Connack {
        /// Set to tell the client to reconnect to another server node.
        url: Option<String>,
        /// Result and ICE servers.
        msg: Connack,
    },
    /// A frame of a conversation, from the other party.
    Conversation {
        /// Conversation id.
        cid: String,
        /// The sender's uid, as its token proved it.
        from: String,
        /// What it says.
        body: Body,
    },
    /// `deviceack`, `startack`, `endack`.
    TelemetryAck {
        /// Which telemetry frame this acknowledges.
        kind: TelemetryKind,
        /// The `cid` of that frame.
        cid: Option<String>,
        /// 0.
        code: i64,
    },
    /// Extension: the callee of `cid` is not connected; the call cannot ring.
    Unreachable {
        /// The call's conversation id.
        cid: String,
        /// The callee's uid.
        from: String,
    },
    /// Extension: a frame was refused, and why.
    Error {
        /// The conversation the refused frame named, if any.
        cid: Option<String>,
        /// Code and reason.
        msg: ErrorMsg,
    },
    /// Extension: a TURN credential minted for this connection's uid, sent before the last
    /// one expires (`{"type":"turn","msg":{"username":…,"credential":…}}`); it replaces the
    /// credential of the TURN entries minted for the same user (`EXPIRY:UID`).
    Turn(TurnCredential),
    /// A type this crate does not know.
    Unknown(UnknownFrame),
}

/// The JSON object every frame is, before its `type` is looked at.
#[derive(Deserialize)]
struct RawFrame {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    cid: Option<String>,
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    msg: Value,
}

#[derive(Serialize)]
struct RawFrameOut<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    cid: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    to: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    from: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<&'a str>,
    msg: Value,
}

impl RawFrameOut<'_> {
    fn to_json(&self) -> String {
        // A struct of strings and a Value always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }
}

enum Parsed {
    Heartbeat(u64),
    Frame(RawFrame),
}

fn parse_raw(text: &str) -> Result<Parsed, FrameError> {
    let trimmed = text.trim_start();
    if trimmed.starts_with(|c: char| c.is_ascii_digit()) {
        return serde_json::from_str::<u64>(text)
            .map(Parsed::Heartbeat)
            .map_err(|e| FrameError::Malformed(e.to_string()));
    }
    serde_json::from_str::<RawFrame>(text)
        .map(Parsed::Frame)
        .map_err(|e| FrameError::Malformed(e.to_string()))
}

fn required(kind: &str, field: &'static str, value: Option<String>) -> Result<String, FrameError> {
    value.ok_or_else(|| FrameError::MissingField { kind: kind.to_owned(), field })
}

fn msg_or_empty(msg: Value) -> Value {
    if msg.is_null() { Value::Object(Map::new()) } else { msg }
}

impl ClientFrame {
    /// Reads one frame from a WebSocket text message.
    pub fn from_json(text: &str) -> Result<Self, FrameError> {
        let raw = match parse_raw(text)? {
            Parsed::Heartbeat(n) => return Ok(ClientFrame::Heartbeat(n)),
            Parsed::Frame(raw) => raw,
        };
        let kind = raw.kind.as_str();
        if kind == "connect" {
            let connect = serde_json::from_value(msg_or_empty(raw.msg)).map_err(|e| {
                FrameError::BadMsg { kind: raw.kind.clone(), reason: e.to_string() }
            })?;
            return Ok(ClientFrame::Connect(connect));
        }
        if let Some(kind) = TelemetryKind::from_kind(kind) {
            return Ok(ClientFrame::Telemetry { kind, cid: raw.cid, msg: raw.msg });
        }
        if kind == "resume" {
            let msg = serde_json::from_value(msg_or_empty(raw.msg)).map_err(|e| {
                FrameError::BadMsg { kind: raw.kind.clone(), reason: e.to_string() }
            })?;
            return Ok(ClientFrame::Resume {
                cid: required(kind, "cid", raw.cid)?,
                to: required(kind, "to", raw.to)?,
                msg,
            });
        }
        match Body::from_msg(kind, raw.msg.clone())? {
            Some(body) => Ok(ClientFrame::Conversation {
                cid: required(kind, "cid", raw.cid)?,
                to: required(kind, "to", raw.to)?,
                body,
            }),
            None => Ok(ClientFrame::Unknown(UnknownFrame {
                kind: raw.kind,
                cid: raw.cid,
                peer: raw.to,
                msg: raw.msg,
            })),
        }
    }

    /// The frame's `type` (`"heartbeat"` for the bare number, which has none).
    pub fn kind(&self) -> &str {
        match self {
            ClientFrame::Heartbeat(_) => "heartbeat",
            ClientFrame::Connect(_) => "connect",
            ClientFrame::Conversation { body, .. } => body.kind(),
            ClientFrame::Resume { .. } => "resume",
            ClientFrame::Telemetry { kind, .. } => kind.kind(),
            ClientFrame::Unknown(u) => &u.kind,
        }
    }

    /// The frame's `cid`, if it has one.
    pub fn cid(&self) -> Option<&str> {
        match self {
            ClientFrame::Heartbeat(_) | ClientFrame::Connect(_) => None,
            ClientFrame::Conversation { cid, .. } | ClientFrame::Resume { cid, .. } => Some(cid),
            ClientFrame::Telemetry { cid, .. } => cid.as_deref(),
            ClientFrame::Unknown(u) => u.cid.as_deref(),
        }
    }

    /// Writes the frame as the text of one WebSocket message.
    pub fn to_json(&self) -> String {
        match self {
            ClientFrame::Heartbeat(n) => n.to_string(),
            ClientFrame::Connect(c) => RawFrameOut {
                kind: "connect",
                cid: None,
                to: None,
                from: None,
                url: None,
                msg: serde_json::to_value(c).unwrap_or(Value::Null),
            }
            .to_json(),
            ClientFrame::Conversation { cid, to, body } => RawFrameOut {
                kind: body.kind(),
                cid: Some(cid),
                to: Some(to),
                from: None,
                url: None,
                msg: body.to_msg(),
            }
            .to_json(),
            ClientFrame::Resume { cid, to, msg } => RawFrameOut {
                kind: "resume",
                cid: Some(cid),
                to: Some(to),
                from: None,
                url: None,
                msg: serde_json::to_value(msg).unwrap_or(Value::Null),
            }
            .to_json(),
            ClientFrame::Telemetry { kind, cid, msg } => RawFrameOut {
                kind: kind.kind(),
                cid: cid.as_deref(),
                to: None,
                from: None,
                url: None,
                msg: msg.clone(),
            }
            .to_json(),
            ClientFrame::Unknown(u) => RawFrameOut {
                kind: &u.kind,
                cid: u.cid.as_deref(),
                to: u.peer.as_deref(),
                from: None,
                url: None,
                msg: u.msg.clone(),
            }
            .to_json(),
        }
    }
}

impl ServerFrame {
    /// Reads one frame from a WebSocket text message.
    pub fn from_json(text: &str) -> Result<Self, FrameError> {
        let raw = match parse_raw(text)? {
            Parsed::Heartbeat(_) => {
                return Err(FrameError::Malformed("a bare number is not a server frame".into()));
            }
            Parsed::Frame(raw) => raw,
        };
        let kind = raw.kind.as_str();
        match kind {
            "connack" => {
                let msg = serde_json::from_value(msg_or_empty(raw.msg)).map_err(|e| {
                    FrameError::BadMsg { kind: raw.kind.clone(), reason: e.to_string() }
                })?;
                return Ok(ServerFrame::Connack { url: raw.url, msg });
            }
            "unreachable" => {
                return Ok(ServerFrame::Unreachable {
                    cid: required(kind, "cid", raw.cid)?,
                    from: required(kind, "from", raw.from)?,
                });
            }
            "error" => {
                let msg = serde_json::from_value(raw.msg).map_err(|e| FrameError::BadMsg {
                    kind: raw.kind.clone(),
                    reason: e.to_string(),
                })?;
                return Ok(ServerFrame::Error { cid: raw.cid, msg });
            }
            "turn" => {
                let msg = serde_json::from_value(raw.msg).map_err(|e| FrameError::BadMsg {
                    kind: raw.kind.clone(),
                    reason: e.to_string(),
                })?;
                return Ok(ServerFrame::Turn(msg));
            }
            _ => {}
        }
        if let Some(tk) = TelemetryKind::from_ack_kind(kind) {
            let code = raw.msg.get("code").and_then(Value::as_i64).unwrap_or(0);
            return Ok(ServerFrame::TelemetryAck { kind: tk, cid: raw.cid, code });
        }
        match Body::from_msg(kind, raw.msg.clone())? {
            Some(body) => Ok(ServerFrame::Conversation {
                cid: required(kind, "cid", raw.cid)?,
                from: required(kind, "from", raw.from)?,
                body,
            }),
            None => Ok(ServerFrame::Unknown(UnknownFrame {
                kind: raw.kind,
                cid: raw.cid,
                peer: raw.from,
                msg: raw.msg,
            })),
        }
    }

    /// The frame's `type`.
    pub fn kind(&self) -> &str {
        match self {
            ServerFrame::Connack { .. } => "connack",
            ServerFrame::Conversation { body, .. } => body.kind(),
            ServerFrame::TelemetryAck { kind, .. } => kind.ack_kind().unwrap_or("ack"),
            ServerFrame::Unreachable { .. } => "unreachable",
            ServerFrame::Error { .. } => "error",
            ServerFrame::Turn(_) => "turn",
            ServerFrame::Unknown(u) => &u.kind,
        }
    }

    /// Writes the frame as the text of one WebSocket message.
    pub fn to_json(&self) -> String {
        match self {
            ServerFrame::Connack { url, msg } => RawFrameOut {
                kind: "connack",
                cid: None,
                to: None,
                from: None,
                url: url.as_deref(),
                msg: serde_json::to_value(msg).unwrap_or(Value::Null),
            }
            .to_json(),
            ServerFrame::Conversation { cid, from, body } => RawFrameOut {
                kind: body.kind(),
                cid: Some(cid),
                to: None,
                from: Some(from),
                url: None,
                msg: body.to_msg(),
            }
            .to_json(),
            ServerFrame::TelemetryAck { kind, cid, code } => RawFrameOut {
                kind: kind.ack_kind().unwrap_or("ack"),
                cid: cid.as_deref(),
                to: None,
                from: None,
                url: None,
                msg: serde_json::json!({ "code": code }),
            }
            .to_json(),
            ServerFrame::Unreachable { cid, from } => RawFrameOut {
                kind: "unreachable",
                cid: Some(cid),
                to: None,
                from: Some(from),
                url: None,
                msg: serde_json::json!({ "reason": "offline" }),
            }
            .to_json(),
            ServerFrame::Error { cid, msg } => RawFrameOut {
                kind: "error",
                cid: cid.as_deref(),
                to: None,
                from: None,
                url: None,
                msg: serde_json::to_value(msg).unwrap_or(Value::Null),
            }
            .to_json(),
            ServerFrame::Turn(credential) => RawFrameOut {
                kind: "turn",
                cid: None,
                to: None,
                from: None,
                url: None,
                msg: serde_json::to_value(credential).unwrap_or(Value::Null),
            }
            .to_json(),
            ServerFrame::Unknown(u) => RawFrameOut {
                kind: &u.kind,
                cid: u.cid.as_deref(),
                to: None,
                from: u.peer.as_deref(),
                url: None,
                msg: u.msg.clone(),
            }
            .to_json(),
        }
    }
}

#[cfg(test)]
mod tests;
