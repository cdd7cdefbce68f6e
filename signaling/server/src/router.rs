//! The routing logic, pure: no sockets, no clock (time is an input), no locks.
//!
//! [`Router`] knows which connection is which (app, uid), and every conversation (`cid` →
//! caller connection, callee connections). It turns one [`ClientFrame`] from one connection
//! into the frames to send, each addressed to a connection. The socket side
//! ([`crate::server`]) authenticates a connection, then calls [`Router::connect`], feeds it
//! frames with [`Router::handle`], calls [`Router::disconnect`] when the socket goes, and
//! [`Router::expire`] when [`Router::next_expiry`] has passed.
//!
//! Conversation rules:
//! - a `call` rings every connection of the callee's uid in the caller's app, except the
//!   caller's own; none → [`ServerFrame::Unreachable`] to the caller;
//! - service endpoints: when the callee's uid has connections that connected with
//!   `service: true` ([`Router::connect_with`]), the `call` rings exactly one of them that is
//!   free (party of no conversation), the least recently rung, and no other connection; when
//!   every one is busy the caller gets `busy` from the callee's uid at once;
//! - the first `accept` or `reject` of a ringing connection decides; the others get `bye`;
//!   a `busy` (or `bye`) from one ringing connection stops ringing there, and reaches the
//!   caller only if it was the last one ringing;
//! - `offer`, `answer`, `candidate`, `restartice` pass only once accepted, `bye` at any
//!   time, and all only between the two parties of the `cid`;
//! - `bye`, `reject`, a last `busy`, or a party's disconnect ends the conversation; on a
//!   disconnect the other party gets `bye`.
//!
//! Reconnect grace: a connection [`Departure::Lost`] (EOF, reset, ping timeout) that is a
//! party of live (accepted) conversations is kept "away" for the router's reconnect grace
//! instead of ending them:
//! - frames the peer sends it meanwhile are queued (at most [`AWAY_QUEUE_FRAMES`], the oldest
//!   dropped first); a `bye` (the peer hung up, or left) ends the conversation at once and is
//!   queued too, so that the returning client learns the call is over;
//! - the next connection of the same (app, uid) to [`Router::connect`] takes the away
//!   connection's conversations over and receives the queue;
//! - a connection of the same uid that sends a frame on such a `cid` takes that conversation
//!   over (the device that really had the call, when several devices of one uid dropped and
//!   another came back first); this also applies to a conversation taken over on reconnect
//!   on which its new connection has not sent anything yet;
//! - when the grace ends with nobody back, the peer gets `bye`, once.
//!
//! Ringing conversations, and every conversation of a connection that left
//! [`Departure::Closed`], end at once as before.
//!
//! Resume (`resume`, or the implicit resume of an old client: a restart `offer` or a
//! `restartice` on a `cid` this router does not know):
//! - on a known live `cid` whose party of the named role is the sender's uid, the sender takes
//!   that party over: at once when the party is away or unconfirmed, after a takeover probe
//!   when it is another registered connection (below); a sender that is not that party gets
//!   `not_party`;
//! - on an unknown `cid` (the server restarted), the conversation is re-created as live with
//!   the sender as the party of its role, and a placeholder, away for the reconnect grace,
//!   for the other party: the first connection of the peer's uid that connects, resumes or
//!   speaks on the `cid` binds it and receives what was kept for it; nobody within the grace
//!   → the resumed party gets `bye`. Such a conversation is provisional until the peer's party
//!   resumes or speaks on it (anyone may resume a made-up `cid` naming anyone): a service
//!   endpoint is not bound to it by connecting (it would be busy, every caller turned away),
//!   and when the peer has not shown within the grace it ends, the resumed party (and a
//!   connection bound by connecting) getting `bye`. In cluster mode its record says so
//!   ([`Effect::Record`]`::unproven`), and a node adopting it keeps it so ([`Router::adopt`]);
//! - a `cid` that ended recently (remembered at least [`MIN_ENDED_MEMORY`]) is not
//!   re-created: a `resume` on it gets `bye` from the peer it names (the conversation ended
//!   while the sender was away, e.g. the peer's `bye` went to a half-open socket), an old
//!   client's restart `unknown_conversation`.
//!
//! Takeover probe: when a connection of a uid speaks (any conversation frame, or `resume`) on a
//! live `cid` whose party of that uid is another, still registered connection, the router
//! asks the I/O to ping that connection ([`Effect::Probe`], drained with
//! [`Router::take_effects`]) and holds the frame, and the frames for the probed connection,
//! until [`Router::probe_result`]: no answer → the probed connection is lost (reconnect grace
//! rules) and the conversation passes to the new connection, which then gets what was held
//! for it, and its held frames go through; an answer (or any frame from it) → the held frames
//! are refused with `not_party`, as before.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wilddog_protocol::{Body, ClientFrame, Empty, ErrorCode, ErrorMsg, Role, ServerFrame};

use crate::turn::TurnCredentials;

/// Identifies one connection (one socket) for the router's whole life. Across nodes
/// (cluster mode) the node's id is in the high 32 bits ([`node_of`]), so ids are unique in
/// the whole cluster.
pub type ConnId = u64;

/// Identifies one server node of a cluster (below 2^31; 0 for a server alone).
pub type NodeId = u32;

/// The node a connection lives on.
pub fn node_of(conn: ConnId) -> NodeId {
    (conn >> 32) as NodeId
}

/// Frames to send, each to a connection, in order.
pub type Outbox = Vec<(ConnId, ServerFrame)>;

/// Where a conversation frame stands in its sender's sequence: the sending connection and
/// the frame's number on it (1, 2, …, given by the connection's own node). A frame relayed
/// again (its conversation's home died after handling it, and the new home got it too) has
/// the same stamp, so that its recipient's node drops it the second time.
pub type Stamp = (ConnId, u64);

/// Open conversations (ringing or live) one connection may be a party of at once; more is a
/// flood (a client holds one conversation at a time; a few may overlap while one ends).
pub const MAX_CONVERSATIONS_PER_CONNECTION: usize = 32;

/// Frames kept for one connection in its reconnect grace (across its conversations), or
/// while it is probed. When more arrive the oldest are dropped (a newer offer supersedes an
/// older one); a `bye` is never dropped.
pub const AWAY_QUEUE_FRAMES: usize = 32;

/// How long an ended conversation is remembered at least (longer when the reconnect grace
/// is longer), so that a late `resume` or restart on it is refused instead of re-creating it.
pub const MIN_ENDED_MEMORY: Duration = Duration::from_secs(60);

/// Ended conversations remembered at most (the oldest are forgotten first).
pub const MAX_ENDED_REMEMBERED: usize = 65_536;

/// Ids of placeholder parties (the peer of a re-created conversation, not bound yet) are
/// taken from here up; connection ids stay below.
pub const FIRST_PLACEHOLDER: ConnId = 1 << 63;

/// How a connection left, which decides what happens to its live conversations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Departure {
    /// On purpose (a close frame from the client saying it leaves), or closed by the server
    /// for misbehaviour or shutdown: its conversations end at once, the peers get `bye`.
    Closed,
    /// The connection was lost (EOF or reset without a close, write failure, ping timeout):
    /// its live conversations wait the reconnect grace for the uid to come back.
    Lost,
}

/// What the router asks of the I/O besides sending frames ([`Router::take_effects`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Ping this connection and report with [`Router::probe_result`] whether it answered
    /// (a pong or any frame) within the takeover probe deadline. The connection may be on
    /// another node (cluster mode): that node pings it.
    Probe(ConnId),
    /// Cluster mode: a frame of local connection `conn` on a conversation whose router is
    /// on node `home`; send it there.
    Forward {
        /// The conversation's node.
        home: NodeId,
        /// The local connection that sent it.
        conn: ConnId,
        /// The frame.
        frame: ClientFrame,
        /// Its number on `conn` ([`Stamp`]).
        number: u64,
    },
    /// Cluster mode: `frame`, relayed from the frame stamped `stamp`, for `conn`, a
    /// connection of another node: its node delivers it ([`Router::deliver`]) unless it
    /// delivered that stamp already.
    Deliver {
        /// The recipient (on another node).
        conn: ConnId,
        /// The frame.
        frame: ServerFrame,
        /// The stamp of the frame it relays.
        stamp: Stamp,
    },
    /// Cluster mode: local connection `conn`, a party of conversations homed on `home`, left.
    Departed {
        /// The conversations' node.
        home: NodeId,
        /// The connection.
        conn: ConnId,
        /// How it left.
        departure: Departure,
    },
    /// Cluster mode: live conversation `cid` of `app`, homed here, has these parties now.
    Record {
        /// Its app.
        app: Arc<str>,
        /// Its id.
        cid: Arc<str>,
        /// The caller's connection (or placeholder) and uid.
        caller: (ConnId, Arc<str>),
        /// The callee's connection (or placeholder) and uid.
        callee: (ConnId, Arc<str>),
        /// The conversation is provisional: re-created by one party's resume, and the party
        /// of this role has not resumed or spoken on it yet (see the module doc). A node
        /// that adopts it keeps it so ([`Router::adopt`]).
        unproven: Option<Role>,
    },
    /// Cluster mode: live conversation `cid` of `app`, homed here, ended.
    Unrecord {
        /// Its app.
        app: Arc<str>,
        /// Its id.
        cid: Arc<str>,
    },
    /// Cluster mode: conversation `cid` of `app`, homed here, that a service endpoint of
    /// `uid` was party of, ended: the endpoint's claim in the pool is released.
    Unclaim {
        /// Its app.
        app: Arc<str>,
        /// The service uid.
        uid: Arc<str>,
        /// The conversation.
        cid: Arc<str>,
    },
    /// Cluster mode: a party of `uid` of `app` waits here, away (lost, or a placeholder), for
    /// a connection of its uid: a node where one connects says so ([`Router::arrive_remote`]).
    Awaits {
        /// Its app.
        app: Arc<str>,
        /// Its uid.
        uid: Arc<str>,
    },
}

/// Cluster mode: which service endpoint a `call` rings, as the nodes decided together
/// ([`Router::handle_call`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolPick {
    /// This endpoint, claimed for the call.
    Ring(ConnId),
    /// Every endpoint of the pool is busy.
    Busy,
}

/// A party of a conversation adopted from a node that died ([`Router::adopt`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adoptee {
    /// A connection registered here.
    Local(ConnId),
    /// A connection of another live node.
    Remote(ConnId),
    /// Nobody now: a placeholder waits the reconnect grace for the uid to come back.
    Gone,
}

/// A conversation of a local connection homed on another node ([`Router::links_to`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct LinkedConversation {
    /// The local connection.
    pub conn: ConnId,
    /// Its app.
    pub app: Arc<str>,
    /// The conversation.
    pub cid: Arc<str>,
    /// The other party's uid.
    pub peer: Arc<str>,
    /// The local connection's uid when it is the callee and accepted the call here: the
    /// conversation is live even if its home died before it wrote the record.
    pub accepted_callee: Option<Arc<str>>,
}

/// A conversation of a local connection whose router is on another node.
#[derive(Debug)]
struct Link {
    cid: Arc<str>,
    home: NodeId,
    /// The other party's uid.
    peer: Arc<str>,
    /// The local connection was rung (it is the callee) and sent its `accept`.
    rung: bool,
    accepted: bool,
}

#[derive(Debug)]
struct Connection {
    app: Arc<str>,
    uid: Arc<str>,
    /// Conversations this connection is a party of (as caller, ringing or live callee).
    cids: Vec<Arc<str>>,
    /// Of `cids`, those taken over from an away connection on reconnect on which this
    /// connection has not sent a frame yet: another connection of the uid may claim them.
    rebound: Vec<Arc<str>>,
    /// One endpoint of a pool serving its uid: rung alone, only when free.
    service: bool,
    /// When a call last rang it (the router's call counter; 0: never).
    last_rung: u64,
    /// A connection of another node, party of conversations homed here (cluster mode).
    remote: bool,
    /// Cluster mode, local connections: the number of its last conversation frame.
    sent: u64,
    /// Cluster mode, local connections: the last stamp relayed to it per (conversation,
    /// sender), so that a frame relayed twice (by a home that died and by its successor)
    /// reaches it once.
    received: Vec<(Arc<str>, Stamp)>,
}

impl Connection {
    fn new(app: Arc<str>, uid: Arc<str>, service: bool, remote: bool) -> Self {
        Connection {
            app,
            uid,
            cids: Vec::new(),
            rebound: Vec::new(),
            service,
            last_rung: 0,
            remote,
            sent: 0,
            received: Vec::new(),
        }
    }

    /// Whether the frame stamped `(from, number)` on `cid` is new for this connection
    /// (and remembers it). Frames of one sender reach a recipient in their order, so a
    /// number not above the last one is a frame relayed again.
    fn first_time(&mut self, cid: &str, (from, number): Stamp) -> bool {
        match self.received.iter_mut().find(|(c, (f, _))| *f == from && &**c == cid) {
            Some((_, (_, last))) if *last >= number => false,
            Some((_, (_, last))) => {
                *last = number;
                true
            }
            None => {
                self.received.push((Arc::from(cid), (from, number)));
                true
            }
        }
    }
}

/// Frames kept for a connection that cannot take them now, in order.
#[derive(Debug, Default)]
struct FrameQueue(VecDeque<ServerFrame>);

impl FrameQueue {
    fn push(&mut self, frame: ServerFrame) {
        if let ServerFrame::Conversation { cid, body: Body::Bye(_), .. } = &frame {
            // The conversation is over: what was queued for it is moot.
            self.0.retain(|f| !matches!(f, ServerFrame::Conversation { cid: c, .. } if c == cid));
            self.0.push_back(frame);
            return;
        }
        self.0.push_back(frame);
        if self.0.len() > AWAY_QUEUE_FRAMES {
            let oldest = self
                .0
                .iter()
                .position(|f| !matches!(f, ServerFrame::Conversation { body: Body::Bye(_), .. }));
            if let Some(i) = oldest {
                self.0.remove(i);
            }
        }
    }

    /// Takes out the frames of conversation `cid`.
    fn take_cid(&mut self, cid: &str) -> Vec<ServerFrame> {
        let (mine, others): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut self.0)
            .into_iter()
            .partition(|f: &ServerFrame| frame_cid(f) == Some(cid));
        self.0 = others;
        mine.into()
    }
}

fn frame_cid(frame: &ServerFrame) -> Option<&str> {
    match frame {
        ServerFrame::Conversation { cid, .. } | ServerFrame::Unreachable { cid, .. } => Some(cid),
        ServerFrame::Error { cid, .. } | ServerFrame::TelemetryAck { cid, .. } => cid.as_deref(),
        ServerFrame::Connack { .. } | ServerFrame::Turn(_) | ServerFrame::Unknown(_) => None,
    }
}

/// A lost connection in its reconnect grace, or the placeholder of a party not bound yet.
#[derive(Debug)]
struct Away {
    app: Arc<str>,
    uid: Arc<str>,
    /// Live conversations it is still a party of.
    cids: Vec<Arc<str>>,
    /// When the grace ends.
    until: Instant,
    /// Frames for it, in order, delivered to whoever takes it over.
    queue: FrameQueue,
    /// The placeholder of a party of a conversation re-created by the other party's resume:
    /// nothing shows it was ever in that call, so a service endpoint of its uid is not bound
    /// to it by merely connecting (only by resuming or speaking on the `cid` itself).
    provisional: bool,
}

/// A takeover probe in progress: the connection is pinged; meanwhile frames for it, and the
/// frames of the other connection(s) of its uid that want its conversation, wait.
#[derive(Debug, Default)]
struct Probe {
    /// Frames for the probed connection.
    queue: FrameQueue,
    /// Frames of the claimants, in arrival order: (connection, cid, frame).
    held: Vec<(ConnId, Arc<str>, ClientFrame)>,
}

#[derive(Debug, PartialEq)]
enum Phase {
    /// Rung at these connections of the callee's uid; none answered yet.
    Ringing(Vec<ConnId>),
    /// Accepted by this connection.
    Live(ConnId),
}

#[derive(Debug)]
struct Conversation {
    caller: ConnId,
    caller_uid: Arc<str>,
    callee_uid: Arc<str>,
    phase: Phase,
}

#[derive(Debug, Default)]
struct AppSpace {
    users: HashMap<Arc<str>, Vec<ConnId>>,
    conversations: HashMap<Arc<str>, Conversation>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Party {
    Caller,
    RingingCallee,
    Callee,
}

/// What [`Router::claim`] found.
enum Claim {
    /// Go on (the sender is the party now, or never could be: the frame's own checks say
    /// so), after these frames (what was kept for the party it took over).
    Proceed(Outbox),
    /// The party is this other registered connection of the sender's uid: probe it first.
    Probe(ConnId),
}

type AppCid = (Arc<str>, Arc<str>);

/// The routing state of the whole server.
#[derive(Debug)]
pub struct Router {
    turn_credentials: TurnCredentials,
    reconnect_grace: Duration,
    connections: HashMap<ConnId, Connection>,
    /// Lost connections in their reconnect grace, and placeholders.
    away: HashMap<ConnId, Away>,
    apps: HashMap<Arc<str>, AppSpace>,
    conversation_count: usize,
    /// Takeover probes in progress, by probed connection.
    probes: HashMap<ConnId, Probe>,
    effects: Vec<Effect>,
    /// Recently ended conversations, and when they ended (oldest first in `ended_order`).
    ended: HashMap<AppCid, Instant>,
    ended_order: VecDeque<(AppCid, Instant)>,
    /// Calls rung so far (the clock of least-recently-used service endpoints).
    calls_rung: u64,
    next_placeholder: ConnId,
    /// Cluster mode: records and forwards are asked for.
    clustered: bool,
    /// Cluster mode: conversations of local connections homed on other nodes.
    links: HashMap<ConnId, Vec<Link>>,
    /// Cluster mode: nodes declared dead ([`Router::node_dead`]), the latest last: a late
    /// frame from one of them never links a conversation to it again.
    dead_nodes: VecDeque<NodeId>,
    /// Cluster mode: the pool's choice for the `call` being handled ([`Router::handle_call`]).
    pool_pick: Option<PoolPick>,
    /// Conversations re-created by one party's resume whose other party (of this role) has
    /// not resumed or spoken on them yet, and when they end if it does not by then (the end
    /// of the reconnect grace). Anyone can resume a made-up `cid` naming anyone: until the
    /// named party shows it was in the call, the conversation is the resumer's claim only.
    unproven: HashMap<AppCid, (Role, Instant)>,
}

/// Dead nodes remembered at most.
const DEAD_NODES_REMEMBERED: usize = 1024;

fn error(
    conn: ConnId,
    cid: Option<&str>,
    code: ErrorCode,
    reason: impl Into<String>,
    refers_to: &str,
) -> (ConnId, ServerFrame) {
    (
        conn,
        ServerFrame::Error {
            cid: cid.map(str::to_owned),
            msg: ErrorMsg { code, reason: reason.into(), refers_to: Some(refers_to.to_owned()) },
        },
    )
}

fn relay(to: ConnId, cid: &str, from: &str, body: Body) -> (ConnId, ServerFrame) {
    (to, ServerFrame::Conversation { cid: cid.to_owned(), from: from.to_owned(), body })
}

fn bye() -> Body {
    Body::Bye(Empty::default())
}

/// The role an old client's frame on an unknown `cid` resumes: a restart `offer` is the
/// caller's, `restartice` the callee's.
fn implicit_resume(body: &Body) -> Option<Role> {
    match body {
        Body::Offer(m) if m.restart_id.is_some() => Some(Role::Caller),
        Body::RestartIce(_) => Some(Role::Callee),
        _ => None,
    }
}

impl Router {
    /// An empty router; `turn_credentials` fill every forwarded `call` (`turnCredential`);
    /// a lost party of a live conversation is waited for `reconnect_grace` (zero: not at all).
    pub fn new(turn_credentials: impl Into<TurnCredentials>, reconnect_grace: Duration) -> Self {
        Router {
            turn_credentials: turn_credentials.into(),
            reconnect_grace,
            connections: HashMap::new(),
            away: HashMap::new(),
            apps: HashMap::new(),
            conversation_count: 0,
            probes: HashMap::new(),
            effects: Vec::new(),
            ended: HashMap::new(),
            ended_order: VecDeque::new(),
            calls_rung: 0,
            next_placeholder: FIRST_PLACEHOLDER,
            clustered: false,
            links: HashMap::new(),
            dead_nodes: VecDeque::new(),
            pool_pick: None,
            unproven: HashMap::new(),
        }
    }

    /// A router of one node of a cluster: it asks for records of its live conversations
    /// ([`Effect::Record`]), forwards frames on conversations homed elsewhere
    /// ([`Effect::Forward`]) and tells their homes when a connection leaves.
    pub fn clustered(
        turn_credentials: impl Into<TurnCredentials>,
        reconnect_grace: Duration,
    ) -> Self {
        Router { clustered: true, ..Router::new(turn_credentials, reconnect_grace) }
    }

    /// Registers an authenticated connection as `uid` of `app` (not a service endpoint):
    /// [`Router::connect_with`] with `service` false.
    pub fn connect(&mut self, conn: ConnId, app: &str, uid: &str) -> Outbox {
        self.connect_with(conn, app, uid, false)
    }

    /// Registers an authenticated connection as `uid` of `app`; `service`: it is one endpoint
    /// of a pool serving the uid (`connect.msg.service`). Several connections may be the
    /// same uid. Registering a connection again is a no-op.
    ///
    /// If connections of this (app, uid) are away (lost, in their grace), this one takes
    /// their conversations over: what is returned is the frames queued for them meanwhile
    /// (including a `bye` for each conversation that ended meanwhile), now for `conn`.
    pub fn connect_with(&mut self, conn: ConnId, app: &str, uid: &str, service: bool) -> Outbox {
        if self.connections.contains_key(&conn) {
            return Vec::new();
        }
        let app_key = match self.apps.get_key_value(app) {
            Some((k, _)) => k.clone(),
            None => Arc::from(app),
        };
        let space = self.apps.entry(app_key.clone()).or_default();
        let uid_key = match space.users.get_key_value(uid) {
            Some((k, _)) => k.clone(),
            None => Arc::from(uid),
        };
        space.users.entry(uid_key.clone()).or_default().push(conn);
        self.connections.insert(conn, Connection::new(app_key, uid_key, service, false));
        self.take_over_away(conn, app, uid)
    }

    /// Cluster mode: connection `conn` of `uid` of `app` connected on another node (which
    /// said so because this node [awaits](Effect::Awaits) the uid). Like
    /// [`Router::connect_with`]: it takes over the conversations of this uid's away parties
    /// here, and gets the frames queued for them at once, not only when it resumes.
    pub fn arrive_remote(&mut self, conn: ConnId, app: &str, uid: &str, service: bool) -> Outbox {
        let away = self.away.values().any(|a| &*a.app == app && &*a.uid == uid);
        if !away || self.connections.get(&conn).is_some_and(|c| !c.remote) {
            return Vec::new();
        }
        self.connect_remote(conn, app, uid, service);
        let out = self.take_over_away(conn, app, uid);
        self.release_if_idle(conn);
        out
    }

    /// Puts `party` away (in its reconnect grace).
    fn put_away(&mut self, party: ConnId, away: Away) {
        if self.clustered {
            self.effects.push(Effect::Awaits { app: away.app.clone(), uid: away.uid.clone() });
        }
        self.away.insert(party, away);
    }

    /// `conn` takes over the conversations of the away parties of its (app, uid): the frames
    /// queued for them, now for `conn`.
    ///
    /// A service endpoint does not take over the placeholder of a conversation re-created by
    /// the other party's resume ([`Away::provisional`]): a free endpoint would be busy with a
    /// call it never had (anyone may resume a made-up `cid` naming the pool's uid) and turn
    /// every caller away. It binds it by resuming it, as our clients do after a reconnect.
    fn take_over_away(&mut self, conn: ConnId, app: &str, uid: &str) -> Outbox {
        let service = self.connections.get(&conn).is_some_and(|c| c.service);
        let mut returning: Vec<ConnId> = self
            .away
            .iter()
            .filter(|(_, a)| &*a.app == app && &*a.uid == uid && !(service && a.provisional))
            .map(|(id, _)| *id)
            .collect();
        returning.sort_unstable();
        let mut out = Vec::new();
        for old in returning {
            let Some(away) = self.away.remove(&old) else { continue };
            for cid in &away.cids {
                self.replace_party(&away.app, cid, old, conn);
            }
            if let Some(me) = self.connections.get_mut(&conn) {
                me.cids.extend(away.cids.iter().cloned());
                me.rebound.extend(away.cids.iter().cloned());
            }
            out.extend(away.queue.0.into_iter().map(|frame| (conn, frame)));
        }
        out
    }

    /// Makes `new` the party of `cid` that `old` was.
    fn replace_party(&mut self, app: &str, cid: &str, old: ConnId, new: ConnId) {
        let Some(conv) = self.apps.get_mut(app).and_then(|s| s.conversations.get_mut(cid)) else {
            return;
        };
        if conv.caller == old {
            conv.caller = new;
        }
        match &mut conv.phase {
            Phase::Live(callee) if *callee == old => *callee = new,
            Phase::Ringing(list) => list.iter_mut().filter(|c| **c == old).for_each(|c| *c = new),
            Phase::Live(_) => {}
        }
        self.record(app, cid);
    }

    /// Cluster mode: asks for the record of live conversation `cid` as it is now.
    fn record(&mut self, app: &str, cid: &str) {
        if !self.clustered {
            return;
        }
        let Some((app, space)) = self.apps.get_key_value(app) else { return };
        let Some((cid, conv)) = space.conversations.get_key_value(cid) else { return };
        let Phase::Live(callee) = conv.phase else { return };
        let unproven = self.unproven.get(&(app.clone(), cid.clone())).map(|(role, _)| *role);
        self.effects.push(Effect::Record {
            app: app.clone(),
            cid: cid.clone(),
            caller: (conv.caller, conv.caller_uid.clone()),
            callee: (callee, conv.callee_uid.clone()),
            unproven,
        });
    }

    /// Whether `party` of live conversation `cid` may be taken over at once by another
    /// connection of its uid: it is away (or a placeholder), or took the conversation over
    /// on reconnect and has not sent a frame on it since.
    fn takeable(&self, party: ConnId, cid: &str) -> bool {
        self.away.contains_key(&party)
            || self.connections.get(&party).is_some_and(|c| c.rebound.iter().any(|x| &**x == cid))
    }

    /// Whether `conn` (of `uid`), which is not a party of live conversation `cid`, may become
    /// the party of `role` (any role that fits, if `None`) whose peer is `to`: at once (the
    /// frames kept for that party are returned), after probing the party's connection, or
    /// not at all (the frame's own checks then refuse it).
    fn claim(
        &mut self,
        conn: ConnId,
        (app, uid): (&Arc<str>, &Arc<str>),
        cid: &str,
        to: &str,
        role: Option<Role>,
    ) -> Claim {
        let Some(conv) = self.apps.get(app).and_then(|s| s.conversations.get(cid)) else {
            return Claim::Proceed(Vec::new());
        };
        let Phase::Live(callee) = conv.phase else { return Claim::Proceed(Vec::new()) };
        if conv.caller == conn || callee == conn {
            return Claim::Proceed(Vec::new());
        }
        let parties = [
            (Role::Caller, conv.caller, &conv.caller_uid, &conv.callee_uid),
            (Role::Callee, callee, &conv.callee_uid, &conv.caller_uid),
        ];
        let Some(old) = parties
            .into_iter()
            .find(|(r, _, party_uid, peer_uid)| {
                role.is_none_or(|role| role == *r) && *party_uid == uid && ***peer_uid == *to
            })
            .map(|(_, party, ..)| party)
        else {
            return Claim::Proceed(Vec::new());
        };
        if self.takeable(old, cid) {
            Claim::Proceed(self.take_over(app, cid, old, conn))
        } else if self.connections.contains_key(&old) {
            Claim::Probe(old)
        } else {
            Claim::Proceed(Vec::new())
        }
    }

    /// Moves live conversation `cid` from party `old` to `new`; returns the frames queued
    /// for `old` on that conversation (if it is away), now for `new`.
    fn take_over(&mut self, app: &str, cid: &str, old: ConnId, new: ConnId) -> Outbox {
        self.replace_party(app, cid, old, new);
        self.forget(old, cid);
        if let Some(c) = self.connections.get_mut(&new)
            && !c.cids.iter().any(|x| &**x == cid)
        {
            c.cids.push(Arc::from(cid));
        }
        let Some(away) = self.away.get_mut(&old) else { return Vec::new() };
        let kept = away.queue.take_cid(cid).into_iter().map(|frame| (new, frame)).collect();
        if away.cids.is_empty() && away.queue.0.is_empty() {
            // Nothing left to wait for (always so for a placeholder).
            self.away.remove(&old);
        }
        kept
    }

    /// Queues the frames addressed to away or probed connections instead of sending them.
    fn divert(&mut self, out: Outbox) -> Outbox {
        if self.away.is_empty() && self.probes.is_empty() {
            return out;
        }
        out.into_iter()
            .filter_map(|(to, frame)| {
                if let Some(away) = self.away.get_mut(&to) {
                    away.queue.push(frame);
                    None
                } else if let Some(probe) = self.probes.get_mut(&to) {
                    probe.queue.push(frame);
                    None
                } else {
                    Some((to, frame))
                }
            })
            .collect()
    }

    /// Whether `conn` is a party of conversation `cid` here (ringing or live).
    pub fn is_party(&self, conn: ConnId, cid: &str) -> bool {
        self.connections.get(&conn).is_some_and(|c| c.cids.iter().any(|x| &**x == cid))
    }

    /// Whether `conn` is registered.
    pub fn is_connected(&self, conn: ConnId) -> bool {
        self.connections.contains_key(&conn)
    }

    /// The (app, uid) of a registered connection.
    pub fn identity(&self, conn: ConnId) -> Option<(&str, &str)> {
        self.connections.get(&conn).map(|c| (&*c.app, &*c.uid))
    }

    /// The (app, uid, service) of a registered connection.
    pub fn endpoint(&self, conn: ConnId) -> Option<(&Arc<str>, &Arc<str>, bool)> {
        self.connections.get(&conn).map(|c| (&c.app, &c.uid, c.service))
    }

    /// Cluster mode: this node's own connections: (app, uid, connection, service).
    pub fn local_connections(&self) -> Vec<(Arc<str>, Arc<str>, ConnId, bool)> {
        self.connections
            .iter()
            .filter(|(_, c)| !c.remote)
            .map(|(id, c)| (c.app.clone(), c.uid.clone(), *id, c.service))
            .collect()
    }

    /// Cluster mode: an [`Effect::Record`] of every live conversation homed here.
    pub fn records(&self) -> Vec<Effect> {
        let mut out = Vec::new();
        for (app, space) in &self.apps {
            for (cid, conv) in &space.conversations {
                if let Phase::Live(callee) = conv.phase {
                    let unproven =
                        self.unproven.get(&(app.clone(), cid.clone())).map(|(role, _)| *role);
                    out.push(Effect::Record {
                        app: app.clone(),
                        cid: cid.clone(),
                        caller: (conv.caller, conv.caller_uid.clone()),
                        callee: (callee, conv.callee_uid.clone()),
                        unproven,
                    });
                }
            }
        }
        out
    }

    /// Registered connections.
    pub fn connection_count(&self) -> usize {
        self.connections.len()
    }

    /// Lost connections in their reconnect grace, and parties of re-created conversations
    /// not bound yet.
    pub fn away_count(&self) -> usize {
        self.away.len()
    }

    /// When the earliest reconnect grace ends: call [`Router::expire`] then.
    pub fn next_expiry(&self) -> Option<Instant> {
        let unproven = self.unproven.values().map(|(_, until)| *until);
        self.away.values().map(|a| a.until).chain(unproven).min()
    }

    /// Conversations ringing or live.
    pub fn conversation_count(&self) -> usize {
        self.conversation_count
    }

    /// What the router asks of the I/O since the last call (takeover probes to run).
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    /// Handles one frame from `conn`, received at `now`, and returns what to send.
    pub fn handle(&mut self, conn: ConnId, frame: ClientFrame, now: Instant) -> Outbox {
        self.handle_with(conn, frame, &[], now)
    }

    /// [`Router::handle`], where a `call` also rings `remotes`: connections of other nodes
    /// of the callee's uid ([`Router::connect_remote`]; cluster mode, from presence).
    ///
    /// Cluster mode: a conversation frame of a local connection gets the next number of
    /// that connection ([`Stamp`]).
    pub fn handle_with(
        &mut self,
        conn: ConnId,
        frame: ClientFrame,
        remotes: &[ConnId],
        now: Instant,
    ) -> Outbox {
        let number = match self.connections.get_mut(&conn) {
            Some(c) if self.clustered && !c.remote && Self::frame_cid(&frame).is_some() => {
                c.sent += 1;
                Some(c.sent)
            }
            _ => None,
        };
        self.handle_numbered(conn, frame, remotes, number, now)
    }

    /// Cluster mode: [`Router::handle_with`] for a `call` whose callee's service endpoint (if
    /// the callee is a pool) was chosen by the nodes together: `pick` rings that endpoint
    /// alone, or answers `busy`; `None` leaves the choice to this router (Redis
    /// unreachable, or the callee has no service endpoints).
    pub fn handle_call(
        &mut self,
        conn: ConnId,
        frame: ClientFrame,
        remotes: &[ConnId],
        pick: Option<PoolPick>,
        now: Instant,
    ) -> Outbox {
        self.pool_pick = pick;
        let out = self.handle_with(conn, frame, remotes, now);
        self.pool_pick = None;
        out
    }

    /// Cluster mode: the service endpoints of `uid` of `app` that are free as far as this
    /// node knows (local ones in no conversation, remote ones among `remotes` that are party
    /// of nothing here), least recently rung here first; `caller` excluded.
    pub fn free_service_endpoints(
        &self,
        app: &str,
        uid: &str,
        caller: ConnId,
        remotes: &[(ConnId, bool)],
    ) -> (usize, Vec<ConnId>) {
        let local = self
            .apps
            .get(app)
            .and_then(|s| s.users.get(uid))
            .into_iter()
            .flatten()
            .copied()
            .filter(|c| *c != caller);
        let remote = remotes.iter().filter(|(_, service)| *service).map(|(c, _)| *c);
        let mut all = 0;
        let mut free: Vec<(u64, ConnId)> = Vec::new();
        for c in local.chain(remote) {
            match self.connections.get(&c) {
                Some(x) if x.service && !x.remote => {
                    all += 1;
                    if x.cids.is_empty() && !self.links.contains_key(&c) {
                        free.push((x.last_rung, c));
                    }
                }
                Some(x) if x.remote => {
                    all += 1;
                    if x.cids.is_empty() {
                        free.push((x.last_rung, c));
                    }
                }
                Some(_) => {}
                None => {
                    // A remote endpoint this node knows nothing of.
                    all += 1;
                    free.push((0, c));
                }
            }
        }
        free.sort_unstable();
        (all, free.into_iter().map(|(_, c)| c).collect())
    }

    /// Cluster mode: handles frame number `number` of `conn`: a frame a connection of
    /// another node sent ([`Effect::Forward`]), or a local connection's frame handled again
    /// because the node it was forwarded to died. Its relays are stamped with it: a
    /// recipient that had it already does not get it again.
    pub fn handle_stamped(
        &mut self,
        conn: ConnId,
        frame: ClientFrame,
        number: u64,
        now: Instant,
    ) -> Outbox {
        if let Some(c) = self.connections.get_mut(&conn).filter(|c| !c.remote) {
            c.sent = c.sent.max(number);
        }
        self.handle_numbered(conn, frame, &[], Some(number), now)
    }

    fn handle_numbered(
        &mut self,
        conn: ConnId,
        frame: ClientFrame,
        remotes: &[ConnId],
        number: Option<u64>,
        now: Instant,
    ) -> Outbox {
        let relayed = match (&frame, number) {
            (ClientFrame::Conversation { cid, .. }, Some(n)) => {
                self.identity(conn).map(|(_, uid)| (Arc::<str>::from(uid), cid.clone(), n))
            }
            _ => None,
        };
        let out = self.route_frame(conn, frame, remotes, number, now);
        match relayed {
            Some((uid, cid, n)) => self.stamp_relays(out, (conn, n), &uid, &cid),
            None => out,
        }
    }

    /// The relays of the frame stamped `stamp` (from `uid` on `cid`) in `out`: those for a
    /// local connection that had it already are dropped; those for a connection of another
    /// node become [`Effect::Deliver`], stamped.
    fn stamp_relays(&mut self, out: Outbox, stamp: Stamp, uid: &str, cid: &str) -> Outbox {
        let mut kept = Vec::with_capacity(out.len());
        for (to, frame) in out {
            let relay = to != stamp.0
                && matches!(&frame, ServerFrame::Conversation { cid: c, from, .. }
                    if c == cid && from == uid);
            match self.connections.get_mut(&to) {
                Some(c) if relay && c.remote => {
                    self.effects.push(Effect::Deliver { conn: to, frame, stamp });
                }
                Some(c) if relay => {
                    if c.first_time(cid, stamp) {
                        kept.push((to, frame));
                    }
                }
                _ => kept.push((to, frame)),
            }
        }
        kept
    }

    fn route_frame(
        &mut self,
        conn: ConnId,
        frame: ClientFrame,
        remotes: &[ConnId],
        number: Option<u64>,
        now: Instant,
    ) -> Outbox {
        if !self.connections.contains_key(&conn) {
            if let ClientFrame::Heartbeat(_) = frame {
                return Vec::new();
            }
            let cid = match &frame {
                ClientFrame::Conversation { cid, .. } | ClientFrame::Resume { cid, .. } => {
                    Some(cid.as_str())
                }
                _ => None,
            };
            return vec![error(
                conn,
                cid,
                ErrorCode::NotConnected,
                "send `connect` with a valid token first",
                frame.kind(),
            )];
        }
        // A probed connection that speaks is alive: the claim on its conversation fails.
        let mut out = self.probe_answered(conn);
        if let Some(home) = self.linked_home(conn, &frame) {
            match &frame {
                ClientFrame::Conversation {
                    cid,
                    body: Body::Bye(_) | Body::Reject(_) | Body::Busy(_),
                    ..
                } => self.unlink(conn, cid),
                ClientFrame::Conversation { cid, body: Body::Accept(_), .. } => {
                    let links = self.links.get_mut(&conn).into_iter().flatten();
                    for l in links.filter(|l| &*l.cid == cid) {
                        l.accepted = true;
                    }
                }
                _ => {}
            }
            // A local connection's frames are always numbered.
            let number = number.unwrap_or_default();
            self.effects.push(Effect::Forward { home, conn, frame, number });
            return self.divert(out);
        }
        match frame {
            ClientFrame::Heartbeat(_) => {}
            ClientFrame::Connect(_) => out.push(error(
                conn,
                None,
                ErrorCode::NotConnected,
                "already connected: a socket authenticates once",
                "connect",
            )),
            ClientFrame::Telemetry { kind, cid, .. } => {
                if kind.ack_kind().is_some() {
                    out.push((conn, ServerFrame::TelemetryAck { kind, cid, code: 0 }));
                }
            }
            ClientFrame::Unknown(u) => out.push(error(
                conn,
                u.cid.as_deref(),
                ErrorCode::UnknownType,
                format!("unknown frame type `{}`", u.kind),
                &u.kind,
            )),
            ClientFrame::Resume { cid, to, msg } => {
                out.extend(self.resume(conn, &cid, &to, msg.role, now));
            }
            ClientFrame::Conversation { cid, to, body } => {
                out.extend(self.conversation(conn, &cid, &to, body, remotes, now));
            }
        }
        self.divert(out)
    }

    /// The conversation `frame` is on, if it is not a `call`.
    fn frame_cid(frame: &ClientFrame) -> Option<&str> {
        match frame {
            ClientFrame::Conversation { body: Body::Call(_), .. } => None,
            ClientFrame::Conversation { cid, .. } | ClientFrame::Resume { cid, .. } => Some(cid),
            _ => None,
        }
    }

    /// Whether conversation `cid` of `app` is homed here.
    pub fn knows(&self, app: &str, cid: &str) -> bool {
        self.apps.get(app).is_some_and(|s| s.conversations.contains_key(cid))
    }

    /// The node where the conversation of `frame` from local connection `conn` lives, when
    /// not here.
    fn linked_home(&self, conn: ConnId, frame: &ClientFrame) -> Option<NodeId> {
        let cid = Self::frame_cid(frame)?;
        let link = self.links.get(&conn)?.iter().find(|l| &*l.cid == cid)?;
        let me = self.connections.get(&conn)?;
        // Adopted here since: the link is stale.
        (!self.knows(&me.app, cid)).then_some(link.home)
    }

    /// Cluster mode: whether conversation `cid` of local connection `conn` is homed here or
    /// linked to its home.
    pub fn places(&self, conn: ConnId, cid: &str) -> bool {
        let Some(me) = self.connections.get(&conn) else { return false };
        self.knows(&me.app, cid)
            || self.links.get(&conn).is_some_and(|l| l.iter().any(|l| &*l.cid == cid))
    }

    /// Cluster mode: whether the node must find where the conversation of `frame` from local
    /// connection `conn` lives before handing it over ([`Router::link`] or
    /// [`Router::adopt`], then [`Router::handle`]): `(app, cid)` when it is a conversation
    /// frame on a `cid` neither homed here nor linked.
    pub fn needs_lookup(&self, conn: ConnId, frame: &ClientFrame) -> Option<(String, String)> {
        if !self.clustered {
            return None;
        }
        let cid = Self::frame_cid(frame)?;
        let me = self.connections.get(&conn).filter(|c| !c.remote)?;
        if self.knows(&me.app, cid)
            || self.links.get(&conn).is_some_and(|l| l.iter().any(|l| &*l.cid == cid))
        {
            return None;
        }
        Some((me.app.to_string(), cid.to_owned()))
    }

    /// Cluster mode: conversation `cid` of local connection `conn`, with `peer`, lives on
    /// node `home`: its frames go there ([`Effect::Forward`]).
    pub fn link(&mut self, conn: ConnId, cid: &str, home: NodeId, peer: &str) {
        let Some(me) = self.connections.get(&conn).filter(|c| !c.remote) else { return };
        if self.knows(&me.app, cid) || self.dead_nodes.contains(&home) {
            // Adopted here, or a late frame of a node that died since: the conversation
            // is where its adoption put it.
            return;
        }
        let links = self.links.entry(conn).or_default();
        match links.iter_mut().find(|l| &*l.cid == cid) {
            Some(l) => l.home = home,
            None => links.push(Link {
                cid: Arc::from(cid),
                home,
                peer: Arc::from(peer),
                rung: false,
                accepted: false,
            }),
        }
    }

    fn unlink(&mut self, conn: ConnId, cid: &str) {
        if let Some(links) = self.links.get_mut(&conn) {
            links.retain(|l| &*l.cid != cid);
            if links.is_empty() {
                self.links.remove(&conn);
            }
        }
    }

    /// Cluster mode: the conversations of local connections homed on `node`: (connection,
    /// app, cid, the other party's uid).
    pub fn links_to(&self, node: NodeId) -> Vec<LinkedConversation> {
        let mut out = Vec::new();
        for (conn, links) in &self.links {
            let Some(me) = self.connections.get(conn) else { continue };
            for l in links.iter().filter(|l| l.home == node) {
                out.push(LinkedConversation {
                    conn: *conn,
                    app: me.app.clone(),
                    cid: l.cid.clone(),
                    peer: l.peer.clone(),
                    accepted_callee: (l.rung && l.accepted).then(|| me.uid.clone()),
                });
            }
        }
        out.sort_unstable();
        out
    }

    /// Cluster mode: the nodes conversations of local connections are homed on.
    pub fn linked_homes(&self) -> Vec<NodeId> {
        let mut homes: Vec<NodeId> = self.links.values().flatten().map(|l| l.home).collect();
        homes.sort_unstable();
        homes.dedup();
        homes
    }

    /// Cluster mode: registers `conn`, a connection of another node, as a possible party of
    /// conversations homed here. It is never rung unless given to [`Router::handle_with`],
    /// and forgotten when it is party of no conversation here.
    pub fn connect_remote(&mut self, conn: ConnId, app: &str, uid: &str, service: bool) {
        if self.connections.contains_key(&conn) {
            return;
        }
        let app_key = match self.apps.get_key_value(app) {
            Some((k, _)) => k.clone(),
            None => Arc::from(app),
        };
        let space = self.apps.entry(app_key.clone()).or_default();
        let uid_key = match space.users.get_key_value(uid) {
            Some((k, _)) => k.clone(),
            None => Arc::from(uid),
        };
        self.connections.insert(conn, Connection::new(app_key, uid_key, service, true));
    }

    /// Cluster mode: forgets connection `conn` of another node if it is party of nothing here.
    pub fn release_if_idle(&mut self, conn: ConnId) {
        let idle = self.connections.get(&conn).is_some_and(|c| c.remote && c.cids.is_empty());
        if idle && !self.probes.contains_key(&conn) {
            self.connections.remove(&conn);
            self.release_empty_apps();
        }
    }

    /// Cluster mode: `frame` from the router of node `home` for local connection `conn`,
    /// relaying the frame stamped `stamp` if given ([`Effect::Deliver`]). The frames to send
    /// (`frame`, unless `conn` had that stamp already or is probed meanwhile), or `None`
    /// when `conn` is not a connection here (gone): tell the home it left.
    pub fn deliver(
        &mut self,
        conn: ConnId,
        home: NodeId,
        frame: ServerFrame,
        stamp: Option<Stamp>,
    ) -> Option<Outbox> {
        let me = self.connections.get_mut(&conn).filter(|c| !c.remote)?;
        if let (Some(stamp), ServerFrame::Conversation { cid, .. }) = (stamp, &frame)
            && !me.first_time(cid, stamp)
        {
            return Some(Vec::new());
        }
        let me = self.connections.get_mut(&conn)?;
        if let ServerFrame::Conversation { cid, from, body: Body::Call(_) } = &frame {
            // A service endpoint holds one conversation: a node that rang it while it was
            // busy with a conversation homed elsewhere hears `busy` from it.
            let busy = me.service && (!me.cids.is_empty() || self.links.contains_key(&conn));
            if busy {
                let busy = Body::Busy(Empty::default());
                let frame =
                    ClientFrame::Conversation { cid: cid.clone(), to: from.clone(), body: busy };
                me.sent += 1;
                let number = me.sent;
                self.effects.push(Effect::Forward { home, conn, frame, number });
                return Some(Vec::new());
            }
        }
        // A link is made by the first frame from a conversation's home, and moved only when
        // this node takes over from a dead home (`link`), never by a frame from the new home:
        // this node's own frames still on their way to the dead one go first.
        let linked = |r: &Self, cid: &str| {
            r.links.get(&conn).is_some_and(|l| l.iter().any(|l| &*l.cid == cid))
        };
        match &frame {
            ServerFrame::Conversation { cid, from, body } => match body {
                Body::Bye(_) | Body::Reject(_) | Body::Busy(_) => self.unlink(conn, cid),
                Body::Call(_) => {
                    self.link(conn, cid, home, from);
                    let links = self.links.get_mut(&conn).into_iter().flatten();
                    for l in links.filter(|l| &*l.cid == cid) {
                        l.rung = true;
                    }
                }
                _ if linked(self, cid) => {}
                _ => self.link(conn, cid, home, from),
            },
            ServerFrame::Error { cid: Some(cid), msg }
                if msg.code == ErrorCode::UnknownConversation =>
            {
                self.unlink(conn, cid)
            }
            _ => {}
        }
        Some(self.divert(vec![(conn, frame)]))
    }

    /// Cluster mode: `frame` for `conn`, a connection of another node, could not be
    /// delivered (its node is gone): `conn` is lost (reconnect grace) and `frame` kept for it.
    pub fn undeliverable(&mut self, conn: ConnId, frame: ServerFrame, now: Instant) -> Outbox {
        let mut out = Vec::new();
        if self.connections.get(&conn).is_some_and(|c| c.remote) {
            out = self.disconnect(conn, Departure::Lost, now).0;
        }
        out.extend(self.divert(vec![(conn, frame)]).into_iter().filter(|(to, _)| *to != conn));
        out
    }

    /// Cluster mode: node `node` died. Its connections that are parties here are lost
    /// (reconnect grace). The conversations it was home of are adopted by
    /// [`Router::adopt`] ([`Router::links_to`] lists those of local connections).
    pub fn node_dead(&mut self, node: NodeId, now: Instant) -> Outbox {
        if !self.dead_nodes.contains(&node) {
            if self.dead_nodes.len() >= DEAD_NODES_REMEMBERED {
                self.dead_nodes.pop_front();
            }
            self.dead_nodes.push_back(node);
        }
        let mut lost: Vec<ConnId> = self
            .connections
            .iter()
            .filter(|(id, c)| c.remote && node_of(**id) == node)
            .map(|(id, _)| *id)
            .collect();
        lost.sort_unstable();
        let mut out = Vec::new();
        for conn in lost {
            out.extend(self.disconnect(conn, Departure::Lost, now).0);
        }
        out
    }

    /// Cluster mode: live conversation `cid` of `app`, whose node died, is homed here from
    /// now on with these parties (and uids). A party [`Adoptee::Gone`] (or a local
    /// connection no longer here) is a placeholder waiting the reconnect grace.
    ///
    /// `unproven`: the record says the conversation is provisional (re-created by one
    /// party's resume) and the party of this role has not shown it was in the call. It stays
    /// so here, by the same rules as on the node that re-created it: that party's placeholder
    /// binds no service endpoint by connecting, and the conversation ends after the
    /// reconnect grace (counted from now) unless that party resumes or speaks on it.
    ///
    /// If the conversation is known here already (a party's `resume` re-created it first),
    /// its parties that are still placeholders become the adoptees that are connections:
    /// what was kept for a placeholder is returned, for its connection. A role the record
    /// says is proven is proven here too.
    pub fn adopt(
        &mut self,
        app: &str,
        cid: &str,
        caller: (Adoptee, &str),
        callee: (Adoptee, &str),
        unproven: Option<Role>,
        now: Instant,
    ) -> Outbox {
        if self.knows(app, cid) {
            let out = self.bind_adoptees(app, cid, [caller, callee]);
            if let Some((app, _)) = self.apps.get_key_value(app) {
                let app = app.clone();
                let here = self.unproven.get(&(app.clone(), Arc::from(cid))).map(|(r, _)| *r);
                if let Some(role) = here.filter(|r| Some(*r) != unproven) {
                    self.prove(&app, cid, role);
                }
            }
            return out;
        }
        let until = now.checked_add(self.reconnect_grace).unwrap_or(now);
        let app_key = match self.apps.get_key_value(app) {
            Some((k, _)) => k.clone(),
            None => Arc::from(app),
        };
        self.apps.entry(app_key.clone()).or_default();
        let cid_key: Arc<str> = Arc::from(cid);
        let mut parties = [0; 2];
        let roles = [Role::Caller, Role::Callee];
        for (i, (who, uid)) in [caller, callee].into_iter().enumerate() {
            parties[i] = match who {
                Adoptee::Local(c)
                    if self.connections.get(&c).is_some_and(|x| !x.remote && &*x.uid == uid) =>
                {
                    self.unlink(c, cid);
                    c
                }
                Adoptee::Remote(c)
                    if self.connections.get(&c).is_none_or(|x| x.remote && &*x.uid == uid) =>
                {
                    self.connect_remote(c, app, uid, false);
                    c
                }
                _ => {
                    let placeholder = self.next_placeholder;
                    self.next_placeholder += 1;
                    self.put_away(
                        placeholder,
                        Away {
                            app: app_key.clone(),
                            uid: Arc::from(uid),
                            cids: vec![cid_key.clone()],
                            until,
                            queue: FrameQueue::default(),
                            provisional: unproven == Some(roles[i]),
                        },
                    );
                    placeholder
                }
            };
            if let Some(c) = self.connections.get_mut(&parties[i]) {
                c.cids.push(cid_key.clone());
            }
        }
        let Some(space) = self.apps.get_mut(&app_key) else { return Vec::new() };
        space.conversations.insert(
            cid_key,
            Conversation {
                caller: parties[0],
                caller_uid: Arc::from(caller.1),
                callee_uid: Arc::from(callee.1),
                phase: Phase::Live(parties[1]),
            },
        );
        self.conversation_count += 1;
        if let Some(role) = unproven {
            self.unproven.insert((app_key, Arc::from(cid)), (role, until));
        }
        self.record(app, cid);
        Vec::new()
    }

    /// [`Router::adopt`] of a conversation known here: each party (caller, callee) that is
    /// a placeholder passes to its adoptee if that is a connection of the party's uid.
    fn bind_adoptees(&mut self, app: &str, cid: &str, adoptees: [(Adoptee, &str); 2]) -> Outbox {
        let mut out = Vec::new();
        for (i, (who, uid)) in adoptees.into_iter().enumerate() {
            let Some(conv) = self.apps.get(app).and_then(|s| s.conversations.get(cid)) else {
                break;
            };
            let party = match (i, &conv.phase) {
                (0, _) => conv.caller,
                (_, Phase::Live(callee)) => *callee,
                (_, Phase::Ringing(_)) => break,
            };
            let party_uid = if i == 0 { &conv.caller_uid } else { &conv.callee_uid };
            if party < FIRST_PLACEHOLDER || **party_uid != *uid {
                continue;
            }
            let conn = match who {
                Adoptee::Local(c)
                    if self.connections.get(&c).is_some_and(|x| !x.remote && &*x.uid == uid) =>
                {
                    self.unlink(c, cid);
                    c
                }
                Adoptee::Remote(c)
                    if self.connections.get(&c).is_none_or(|x| x.remote && &*x.uid == uid) =>
                {
                    self.connect_remote(c, app, uid, false);
                    c
                }
                _ => continue,
            };
            if self.is_party(conn, cid) {
                continue;
            }
            out.extend(self.take_over(app, cid, party, conn));
        }
        self.divert(out)
    }

    /// The probe holding frames of `conn` on `cid`, if any: later frames wait behind them.
    fn holding(&self, conn: ConnId, cid: &str) -> Option<ConnId> {
        self.probes
            .iter()
            .find(|(_, p)| p.held.iter().any(|(c, x, _)| *c == conn && &**x == cid))
            .map(|(probed, _)| *probed)
    }

    /// Holds `frame` of `conn` on `cid` until the probe of `probed` decides.
    fn hold(&mut self, probed: ConnId, conn: ConnId, cid: &str, frame: ClientFrame) {
        if !self.probes.contains_key(&probed) {
            self.effects.push(Effect::Probe(probed));
        }
        let probe = self.probes.entry(probed).or_default();
        probe.held.push((conn, Arc::from(cid), frame));
    }

    fn resume(&mut self, conn: ConnId, cid: &str, to: &str, role: Role, now: Instant) -> Outbox {
        let Some(me) = self.connections.get(&conn) else { return Vec::new() };
        let (app, uid) = (me.app.clone(), me.uid.clone());
        let resume = || ClientFrame::Resume {
            cid: cid.to_owned(),
            to: to.to_owned(),
            msg: wilddog_protocol::ResumeMsg::new(role),
        };
        if let Some(probed) = self.holding(conn, cid) {
            self.hold(probed, conn, cid, resume());
            return Vec::new();
        }
        let known = self.apps.get(&app).is_some_and(|s| s.conversations.contains_key(cid));
        if !known {
            if self.has_ended(&app, cid, now) {
                // It ended while this party was away (its `bye` went to a socket that was
                // already dead, or the grace ran out): tell it so the way a live party hears
                // it, instead of a refusal it would retry.
                return vec![relay(conn, cid, to, bye())];
            }
            return self.recreate(conn, (&app, &uid), cid, to, role, now);
        }
        let mut out = match self.claim(conn, (&app, &uid), cid, to, Some(role)) {
            Claim::Probe(old) => {
                self.hold(old, conn, cid, resume());
                return Vec::new();
            }
            Claim::Proceed(out) => out,
        };
        let Some(conv) = self.apps.get(&app).and_then(|s| s.conversations.get(cid)) else {
            return out;
        };
        let (party, peer_uid) = match (role, &conv.phase) {
            (Role::Caller, _) => (Some(conv.caller), &conv.callee_uid),
            (Role::Callee, Phase::Live(callee)) => (Some(*callee), &conv.caller_uid),
            (Role::Callee, Phase::Ringing(_)) => (None, &conv.caller_uid),
        };
        if party != Some(conn) || **peer_uid != *to {
            let role = if role == Role::Caller { "caller" } else { "callee" };
            out.push(error(
                conn,
                Some(cid),
                ErrorCode::NotParty,
                format!("this connection is not the {role} of conversation `{cid}` with `{to}`"),
                "resume",
            ));
            return out;
        }
        self.confirm(conn, cid);
        self.prove(&app, cid, role);
        out
    }

    /// The party of `role` of conversation `cid` resumed or spoke on it: if the conversation
    /// was re-created by the other party's resume, both were in it; it is a call like any.
    ///
    /// Cluster mode: the record drops the mark, so that a node adopting the conversation
    /// does not end it after its grace.
    fn prove(&mut self, app: &Arc<str>, cid: &str, role: Role) {
        let key = (app.clone(), Arc::from(cid));
        if !self.unproven.get(&key).is_some_and(|(r, _)| *r == role) {
            return;
        }
        self.unproven.remove(&key);
        // Its party may still be a placeholder (proven on another node: [`Router::adopt`]).
        let party =
            self.apps.get(app).and_then(|s| s.conversations.get(cid)).and_then(|conv| {
                match (role, &conv.phase) {
                    (Role::Caller, _) => Some(conv.caller),
                    (Role::Callee, Phase::Live(callee)) => Some(*callee),
                    (Role::Callee, Phase::Ringing(_)) => None,
                }
            });
        if let Some(away) = party.and_then(|p| self.away.get_mut(&p)) {
            away.provisional = false;
        }
        self.record(app, cid);
    }

    /// Speaking on a conversation confirms it as this connection's: another connection of
    /// the uid can no longer claim it without a probe.
    fn confirm(&mut self, conn: ConnId, cid: &str) {
        if let Some(me) = self.connections.get_mut(&conn) {
            me.rebound.retain(|x| &**x != cid);
        }
    }

    /// Re-creates live conversation `cid` that this router does not know (it restarted):
    /// `conn` is the party of `role`, a placeholder away for the reconnect grace the other.
    fn recreate(
        &mut self,
        conn: ConnId,
        (app, uid): (&Arc<str>, &Arc<str>),
        cid: &str,
        to: &str,
        role: Role,
        now: Instant,
    ) -> Outbox {
        let kind = if role == Role::Caller { "offer" } else { "resume" };
        let open = self.connections.get(&conn).map_or(0, |c| c.cids.len());
        if open >= MAX_CONVERSATIONS_PER_CONNECTION {
            return vec![error(
                conn,
                Some(cid),
                ErrorCode::RateLimited,
                format!("{open} conversations open on this connection"),
                kind,
            )];
        }
        let Some(space) = self.apps.get_mut(app) else { return Vec::new() };
        let peer_uid = match space.users.get_key_value(to) {
            Some((k, _)) => k.clone(),
            None => Arc::from(to),
        };
        let placeholder = self.next_placeholder;
        self.next_placeholder += 1;
        let cid_key: Arc<str> = Arc::from(cid);
        let conversation = match role {
            Role::Caller => Conversation {
                caller: conn,
                caller_uid: uid.clone(),
                callee_uid: peer_uid.clone(),
                phase: Phase::Live(placeholder),
            },
            Role::Callee => Conversation {
                caller: placeholder,
                caller_uid: peer_uid.clone(),
                callee_uid: uid.clone(),
                phase: Phase::Live(conn),
            },
        };
        space.conversations.insert(cid_key.clone(), conversation);
        self.conversation_count += 1;
        if let Some(me) = self.connections.get_mut(&conn) {
            me.cids.push(cid_key.clone());
        }
        let until = now.checked_add(self.reconnect_grace).unwrap_or(now);
        let unproven = if role == Role::Caller { Role::Callee } else { Role::Caller };
        self.unproven.insert((app.clone(), cid_key.clone()), (unproven, until));
        self.put_away(
            placeholder,
            Away {
                app: app.clone(),
                uid: peer_uid,
                cids: vec![cid_key],
                until,
                queue: FrameQueue::default(),
                provisional: true,
            },
        );
        self.record(app, cid);
        Vec::new()
    }

    fn conversation(
        &mut self,
        conn: ConnId,
        cid: &str,
        to: &str,
        body: Body,
        remotes: &[ConnId],
        now: Instant,
    ) -> Outbox {
        let Some(me) = self.connections.get(&conn) else { return Vec::new() };
        let (app, uid) = (me.app.clone(), me.uid.clone());
        if let Body::Call(msg) = body {
            return self.call(conn, (&app, &uid), cid, to, msg, remotes);
        }
        if let Some(probed) = self.holding(conn, cid) {
            let frame = ClientFrame::Conversation { cid: cid.to_owned(), to: to.to_owned(), body };
            self.hold(probed, conn, cid, frame);
            return Vec::new();
        }
        let known = self.apps.get(&app).is_some_and(|s| s.conversations.contains_key(cid));
        let mut out = Vec::new();
        if !known {
            // An old client's way to resume: its restart on a conversation we do not know.
            if let Some(role) = implicit_resume(&body)
                && !self.has_ended(&app, cid, now)
            {
                out = self.recreate(conn, (&app, &uid), cid, to, role, now);
                if !out.is_empty() {
                    return out; // refused
                }
            }
        }
        // Answers to a ringing call are never a returning party's: no claim.
        let answer = matches!(body, Body::Accept(_) | Body::Reject(_) | Body::Busy(_));
        let claim = if answer {
            Claim::Proceed(Vec::new())
        } else {
            self.claim(conn, (&app, &uid), cid, to, None)
        };
        match claim {
            Claim::Probe(old) => {
                let frame =
                    ClientFrame::Conversation { cid: cid.to_owned(), to: to.to_owned(), body };
                self.hold(old, conn, cid, frame);
                return out;
            }
            Claim::Proceed(kept) => out.extend(kept),
        }
        self.confirm(conn, cid);
        out.extend(self.conversation_frame(conn, (&app, &uid), cid, to, body, now));
        out
    }

    fn conversation_frame(
        &mut self,
        conn: ConnId,
        (app, uid): (&Arc<str>, &Arc<str>),
        cid: &str,
        to: &str,
        body: Body,
        now: Instant,
    ) -> Outbox {
        let (app, uid) = (app.clone(), uid.clone());
        let kind = body.kind();
        let Some(space) = self.apps.get_mut(&app) else { return Vec::new() };
        let Some(conv) = space.conversations.get_mut(cid) else {
            return vec![error(
                conn,
                Some(cid),
                ErrorCode::UnknownConversation,
                format!("no conversation `{cid}` (never begun, or ended)"),
                kind,
            )];
        };
        let role = if conv.caller == conn {
            Party::Caller
        } else {
            match &conv.phase {
                Phase::Ringing(list) if list.contains(&conn) => Party::RingingCallee,
                Phase::Live(callee) if *callee == conn => Party::Callee,
                _ => {
                    return vec![error(
                        conn,
                        Some(cid),
                        ErrorCode::NotParty,
                        format!("this connection is not a party of conversation `{cid}`"),
                        kind,
                    )];
                }
            }
        };
        let peer_uid = if role == Party::Caller { &conv.callee_uid } else { &conv.caller_uid };
        if **peer_uid != *to {
            return vec![error(
                conn,
                Some(cid),
                ErrorCode::NotParty,
                format!("`to` is `{to}`, but the other party of `{cid}` is `{peer_uid}`"),
                kind,
            )];
        }
        if !self.unproven.is_empty() {
            match role {
                Party::Caller => self.prove(&app, cid, Role::Caller),
                Party::Callee => self.prove(&app, cid, Role::Callee),
                Party::RingingCallee => {}
            }
        }
        let Some(conv) = self.apps.get_mut(&app).and_then(|s| s.conversations.get_mut(cid)) else {
            return Vec::new();
        };
        let out_of_order = |why: &str| {
            vec![error(conn, Some(cid), ErrorCode::OutOfOrder, format!("`{kind}` {why}"), kind)]
        };
        match (role, &conv.phase, body) {
            (Party::Caller, Phase::Ringing(ringing), Body::Bye(b)) => {
                let out =
                    ringing.iter().map(|c| relay(*c, cid, &uid, Body::Bye(b.clone()))).collect();
                self.end(&app, cid, now);
                out
            }
            (Party::Caller, Phase::Ringing(_), _) => out_of_order("before the callee accepted"),
            (Party::RingingCallee, Phase::Ringing(ringing), Body::Accept(mut b)) => {
                let others: Vec<ConnId> = ringing.iter().copied().filter(|c| *c != conn).collect();
                conv.phase = Phase::Live(conn);
                let caller = conv.caller;
                let caller_uid = conv.caller_uid.clone();
                self.turn_credentials.fill_accept(&mut b, &caller_uid);
                let mut out = vec![relay(caller, cid, &uid, Body::Accept(b))];
                for other in others {
                    out.push(relay(other, cid, &caller_uid, bye()));
                    self.forget(other, cid);
                }
                self.record(&app, cid);
                out
            }
            (Party::RingingCallee, Phase::Ringing(ringing), Body::Reject(b)) => {
                let caller_uid = conv.caller_uid.clone();
                let mut out = vec![relay(conv.caller, cid, &uid, Body::Reject(b))];
                out.extend(
                    ringing
                        .iter()
                        .filter(|c| **c != conn)
                        .map(|c| relay(*c, cid, &caller_uid, bye())),
                );
                self.end(&app, cid, now);
                out
            }
            (Party::RingingCallee, Phase::Ringing(_), body @ (Body::Busy(_) | Body::Bye(_))) => {
                if let Phase::Ringing(ringing) = &mut conv.phase {
                    ringing.retain(|c| *c != conn);
                    if ringing.is_empty() {
                        let out = vec![relay(conv.caller, cid, &uid, body)];
                        self.forget(conn, cid);
                        self.end(&app, cid, now);
                        return out;
                    }
                }
                self.forget(conn, cid);
                Vec::new()
            }
            (Party::RingingCallee | Party::Callee, Phase::Ringing(_), _)
            | (Party::RingingCallee, Phase::Live(_), _) => {
                out_of_order("before this callee accepted")
            }
            (_, Phase::Live(callee), body) => {
                let (peer, ends) = match (&body, role) {
                    (Body::Accept(_) | Body::Reject(_) | Body::Busy(_), _) => {
                        return out_of_order("in a conversation already accepted");
                    }
                    (Body::Bye(_), Party::Caller) => (*callee, true),
                    (Body::Bye(_), _) => (conv.caller, true),
                    (_, Party::Caller) => (*callee, false),
                    _ => (conv.caller, false),
                };
                let out = vec![relay(peer, cid, &uid, body)];
                if ends {
                    self.end(&app, cid, now);
                }
                out
            }
        }
    }

    fn call(
        &mut self,
        conn: ConnId,
        (app, uid): (&Arc<str>, &Arc<str>),
        cid: &str,
        to: &str,
        mut msg: wilddog_protocol::CallMsg,
        remotes: &[ConnId],
    ) -> Outbox {
        let Some(space) = self.apps.get_mut(app) else { return Vec::new() };
        if space.conversations.contains_key(cid) {
            return vec![error(
                conn,
                Some(cid),
                ErrorCode::CidInUse,
                format!("conversation id `{cid}` is already in use"),
                "call",
            )];
        }
        let open = self.connections.get(&conn).map_or(0, |c| c.cids.len());
        if open >= MAX_CONVERSATIONS_PER_CONNECTION {
            return vec![error(
                conn,
                Some(cid),
                ErrorCode::RateLimited,
                format!(
                    "{open} conversations open on this connection; end some before calling again"
                ),
                "call",
            )];
        }
        let unreachable =
            || vec![(conn, ServerFrame::Unreachable { cid: cid.to_owned(), from: to.to_owned() })];
        let (callee_uid, mut callee_conns): (Arc<str>, Vec<ConnId>) = match space
            .users
            .get_key_value(to)
        {
            Some((k, conns)) => (k.clone(), conns.iter().copied().filter(|c| *c != conn).collect()),
            None => (Arc::from(to), Vec::new()),
        };
        callee_conns.extend(remotes.iter().copied().filter(|c| {
            self.connections.get(c).is_some_and(|x| x.remote && x.app == *app && *x.uid == *to)
        }));
        if callee_conns.is_empty() {
            return unreachable();
        }
        let services: Vec<(ConnId, &Connection)> = callee_conns
            .iter()
            .filter_map(|c| self.connections.get(c).map(|x| (*c, x)))
            .filter(|(_, c)| c.service)
            .collect();
        let ringing: Vec<ConnId> = if services.is_empty() {
            callee_conns
        } else {
            // A pool of service endpoints: the free one rung least recently, alone (in a
            // cluster, the one the nodes claimed for this call together).
            let free = match self.pool_pick.take() {
                Some(PoolPick::Busy) => None,
                Some(PoolPick::Ring(c)) if services.iter().any(|(id, _)| *id == c) => Some(c),
                _ => services
                    .iter()
                    .filter(|(_, c)| c.cids.is_empty())
                    .min_by_key(|(id, c)| (c.last_rung, *id))
                    .map(|(id, _)| *id),
            };
            let Some(free) = free else {
                return vec![relay(conn, cid, &callee_uid, Body::Busy(Empty::default()))];
            };
            self.calls_rung += 1;
            if let Some(c) = self.connections.get_mut(&free) {
                c.last_rung = self.calls_rung;
            }
            vec![free]
        };
        if ringing.is_empty() {
            return unreachable();
        }
        let Some(space) = self.apps.get_mut(app) else { return Vec::new() };
        let cid_key: Arc<str> = Arc::from(cid);
        self.ended.remove(&(app.clone(), cid_key.clone()));
        self.turn_credentials.fill_call(&mut msg, &callee_uid);
        let mut out = Vec::with_capacity(ringing.len());
        for (i, callee) in ringing.iter().enumerate() {
            let body = if i + 1 == ringing.len() {
                Body::Call(std::mem::take(&mut msg))
            } else {
                Body::Call(msg.clone())
            };
            out.push(relay(*callee, cid, uid, body));
        }
        space.conversations.insert(
            cid_key.clone(),
            Conversation {
                caller: conn,
                caller_uid: uid.clone(),
                callee_uid,
                phase: Phase::Ringing(ringing.clone()),
            },
        );
        for party in ringing.iter().chain(std::iter::once(&conn)) {
            if let Some(c) = self.connections.get_mut(party) {
                c.cids.push(cid_key.clone());
            }
        }
        self.conversation_count += 1;
        out
    }

    /// Removes `cid` from the conversations `conn` (connected or away) is a party of.
    fn forget(&mut self, conn: ConnId, cid: &str) {
        if let Some(c) = self.connections.get_mut(&conn) {
            c.cids.retain(|x| &**x != cid);
            c.rebound.retain(|x| &**x != cid);
            c.received.retain(|(x, _)| &**x != cid);
            if c.remote && c.cids.is_empty() && !self.probes.contains_key(&conn) {
                // A connection of another node is known only while it is a party here.
                self.connections.remove(&conn);
            }
        }
        if let Some(a) = self.away.get_mut(&conn) {
            a.cids.retain(|x| &**x != cid);
        }
    }

    /// Ends conversation `cid` of `app`: forgets it everywhere, remembers that it ended.
    fn end(&mut self, app: &Arc<str>, cid: &str, now: Instant) {
        let Some((cid_key, conv)) =
            self.apps.get_mut(app).and_then(|s| s.conversations.remove_entry(cid))
        else {
            return;
        };
        self.conversation_count -= 1;
        self.unproven.remove(&(app.clone(), cid_key.clone()));
        if self.clustered {
            let callees = match &conv.phase {
                Phase::Ringing(list) => list.as_slice(),
                Phase::Live(c) => std::slice::from_ref(c),
            };
            let service =
                callees.iter().any(|c| self.connections.get(c).is_some_and(|x| x.service));
            if service {
                self.effects.push(Effect::Unclaim {
                    app: app.clone(),
                    uid: conv.callee_uid.clone(),
                    cid: cid_key.clone(),
                });
            }
        }
        self.forget(conv.caller, cid);
        match &conv.phase {
            Phase::Ringing(list) => list.iter().for_each(|c| self.forget(*c, cid)),
            Phase::Live(c) => self.forget(*c, cid),
        }
        if self.clustered && matches!(conv.phase, Phase::Live(_)) {
            self.effects.push(Effect::Unrecord { app: app.clone(), cid: cid_key.clone() });
        }
        self.remember_ended((app.clone(), cid_key), now);
    }

    fn ended_memory(&self) -> Duration {
        MIN_ENDED_MEMORY.max(self.reconnect_grace.saturating_mul(2))
    }

    fn remember_ended(&mut self, key: AppCid, now: Instant) {
        let memory = self.ended_memory();
        while let Some((old, at)) = self.ended_order.front() {
            let expired = now.saturating_duration_since(*at) >= memory;
            if !expired && self.ended_order.len() < MAX_ENDED_REMEMBERED {
                break;
            }
            if self.ended.get(old) == Some(at) {
                self.ended.remove(old);
            }
            self.ended_order.pop_front();
        }
        self.ended.insert(key.clone(), now);
        self.ended_order.push_back((key, now));
    }

    /// Whether conversation `cid` of `app` ended recently.
    fn has_ended(&self, app: &Arc<str>, cid: &str, now: Instant) -> bool {
        self.ended
            .get(&(app.clone(), Arc::from(cid)))
            .is_some_and(|at| now.saturating_duration_since(*at) < self.ended_memory())
    }

    /// Forgets `conn` (its socket is gone) and ends its conversations: the other party of
    /// each gets `bye`. Except, when it was [`Departure::Lost`] and the reconnect grace is
    /// not zero, its live conversations: they are kept until the returned deadline (pass
    /// that time, or later, to [`Router::expire`]) for the same uid to come back.
    pub fn disconnect(
        &mut self,
        conn: ConnId,
        departure: Departure,
        now: Instant,
    ) -> (Outbox, Option<Instant>) {
        // What it was waiting for in others' probes is void.
        for probe in self.probes.values_mut() {
            probe.held.retain(|(c, ..)| *c != conn);
        }
        // The nodes of its conversations elsewhere learn it left.
        if let Some(links) = self.links.remove(&conn) {
            let mut homes: Vec<NodeId> = links.iter().map(|l| l.home).collect();
            homes.sort_unstable();
            homes.dedup();
            for home in homes {
                self.effects.push(Effect::Departed { home, conn, departure });
            }
        }
        if self.probes.contains_key(&conn) {
            // It was being probed: those who claimed its conversations get them.
            let (out, until) = self.probe_failed(conn, departure, now);
            return (self.divert(out), until);
        }
        self.remove(conn, departure, now)
    }

    fn remove(
        &mut self,
        conn: ConnId,
        departure: Departure,
        now: Instant,
    ) -> (Outbox, Option<Instant>) {
        let Some(me) = self.connections.remove(&conn) else { return (Vec::new(), None) };
        let keep_live = departure == Departure::Lost && !self.reconnect_grace.is_zero();
        let mut out = Vec::new();
        let mut kept = Vec::new();
        let Some(space) = self.apps.get_mut(&me.app) else { return (out, None) };
        if let Some(conns) = space.users.get_mut(&me.uid) {
            conns.retain(|c| *c != conn);
            if conns.is_empty() {
                space.users.remove(&me.uid);
            }
        }
        for cid in &me.cids {
            let Some(space) = self.apps.get_mut(&me.app) else { break };
            let Some(conv) = space.conversations.get_mut(cid) else { continue };
            if keep_live && matches!(conv.phase, Phase::Live(_)) {
                kept.push(cid.clone());
                continue;
            }
            if conv.caller == conn {
                match &conv.phase {
                    Phase::Ringing(list) => {
                        out.extend(list.iter().map(|c| relay(*c, cid, &me.uid, bye())))
                    }
                    Phase::Live(c) => out.push(relay(*c, cid, &me.uid, bye())),
                }
                self.end(&me.app, cid, now);
                continue;
            }
            match &mut conv.phase {
                Phase::Ringing(list) => {
                    list.retain(|c| *c != conn);
                    if list.is_empty() {
                        out.push(relay(conv.caller, cid, &me.uid, bye()));
                        self.end(&me.app, cid, now);
                    }
                }
                Phase::Live(_) => {
                    out.push(relay(conv.caller, cid, &me.uid, bye()));
                    self.end(&me.app, cid, now);
                }
            }
        }
        let until = if kept.is_empty() {
            None
        } else {
            let until = now.checked_add(self.reconnect_grace).unwrap_or(now);
            let Connection { app, uid, .. } = me;
            let queue = FrameQueue::default();
            self.put_away(conn, Away { app, uid, cids: kept, until, queue, provisional: false });
            Some(until)
        };
        let out = self.divert(out);
        self.release_empty_apps();
        (out, until)
    }

    /// The verdict of the takeover probe of `conn` ([`Effect::Probe`]): `answered` (a pong or
    /// any frame came back in time) → it keeps its conversations, the claims on them are
    /// refused (`not_party`) and it gets the frames held for it; silent → it is lost (its
    /// live conversations get the reconnect grace), the conversations claimed pass to their
    /// claimants, whose held frames then go through. A verdict on a connection that is not
    /// probed is ignored.
    pub fn probe_result(&mut self, conn: ConnId, answered: bool, now: Instant) -> Outbox {
        if !self.probes.contains_key(&conn) {
            return Vec::new();
        }
        let out = if answered {
            self.probe_answered(conn)
        } else {
            self.probe_failed(conn, Departure::Lost, now).0
        };
        self.divert(out)
    }

    fn probe_answered(&mut self, probed: ConnId) -> Outbox {
        let Some(probe) = self.probes.remove(&probed) else { return Vec::new() };
        let mut out: Outbox = probe.queue.0.into_iter().map(|f| (probed, f)).collect();
        for (conn, cid, frame) in probe.held {
            out.push(error(
                conn,
                Some(&cid),
                ErrorCode::NotParty,
                format!(
                    "conversation `{cid}` belongs to another connection of this uid, which is alive"
                ),
                frame.kind(),
            ));
        }
        out
    }

    fn probe_failed(
        &mut self,
        probed: ConnId,
        departure: Departure,
        now: Instant,
    ) -> (Outbox, Option<Instant>) {
        let Some(mut probe) = self.probes.remove(&probed) else {
            return self.remove(probed, departure, now);
        };
        let mut out = Vec::new();
        // Each claimed conversation passes to its first claimant, with what was held for it.
        if let Some(app) = self.connections.get(&probed).map(|c| c.app.clone()) {
            for (claimant, cid, _) in &probe.held {
                let is_party = self.connections.get(&probed).is_some_and(|c| c.cids.contains(cid));
                if !is_party || !self.connections.contains_key(claimant) {
                    continue;
                }
                self.take_over(&app, cid, probed, *claimant);
                out.extend(probe.queue.take_cid(cid).into_iter().map(|f| (*claimant, f)));
            }
        }
        let (lost, until) = self.remove(probed, departure, now);
        out.extend(lost);
        // What was held for its other conversations waits with it, if it waits.
        if let Some(away) = self.away.get_mut(&probed) {
            for frame in probe.queue.0 {
                away.queue.push(frame);
            }
        }
        for (claimant, _, frame) in probe.held {
            out.extend(self.handle(claimant, frame, now));
        }
        (out, until)
    }

    /// Ends the reconnect graces that are over at `now`: the other party of each of their
    /// conversations gets `bye` (queued, if it is away too).
    pub fn expire(&mut self, now: Instant) -> Outbox {
        let mut due: Vec<ConnId> =
            self.away.iter().filter(|(_, a)| a.until <= now).map(|(id, _)| *id).collect();
        due.sort_unstable();
        let mut out = Vec::new();
        for &id in &due {
            let Some(away) = self.away.remove(&id) else { continue };
            for cid in &away.cids {
                let conv = self.apps.get(&away.app).and_then(|s| s.conversations.get(&**cid));
                let Some(Conversation { caller, phase: Phase::Live(callee), .. }) = conv else {
                    continue;
                };
                let peer = if *caller == id { *callee } else { *caller };
                out.push(relay(peer, cid, &away.uid, bye()));
                self.end(&away.app, cid, now);
            }
        }
        // A peer whose grace ended too is gone: nothing for it.
        out.retain(|(to, _)| !due.contains(to));
        // Re-created conversations whose other party never showed within the grace (a
        // connection of its uid that connected meanwhile may be bound to it, without having
        // said a word on it): both ends get `bye`, each from the other party's uid.
        let mut unproven: Vec<AppCid> = self
            .unproven
            .iter()
            .filter(|(_, (_, until))| *until <= now)
            .map(|(key, _)| key.clone())
            .collect();
        unproven.sort_unstable();
        for (app, cid) in unproven {
            self.unproven.remove(&(app.clone(), cid.clone()));
            let conv = self.apps.get(&app).and_then(|s| s.conversations.get(&cid));
            let Some(Conversation { caller, caller_uid, callee_uid, phase, .. }) = conv else {
                continue;
            };
            if let Phase::Live(callee) = phase {
                for (to, from) in [(*caller, callee_uid), (*callee, caller_uid)] {
                    if to < FIRST_PLACEHOLDER {
                        out.push(relay(to, &cid, from, bye()));
                    }
                }
            }
            self.end(&app, &cid, now);
        }
        let out = self.divert(out);
        self.release_empty_apps();
        out
    }

    fn release_empty_apps(&mut self) {
        self.apps.retain(|_, s| !(s.users.is_empty() && s.conversations.is_empty()));
    }
}

#[cfg(test)]
mod tests;
