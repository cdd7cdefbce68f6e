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

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wilddog_protocol::{
    Body, ClientFrame, Empty, ErrorCode, ErrorMsg, ServerFrame, TurnCredential,
};

/// Identifies one connection (one socket) for the router's whole life.
pub type ConnId = u64;

/// Frames to send, each to a connection, in order.
pub type Outbox = Vec<(ConnId, ServerFrame)>;

/// Open conversations (ringing or live) one connection may be a party of at once; more is a
/// flood (a client holds one conversation at a time; a few may overlap while one ends).
pub const MAX_CONVERSATIONS_PER_CONNECTION: usize = 32;

/// Frames kept for one connection in its reconnect grace (across its conversations). When
/// more arrive the oldest are dropped (a newer offer supersedes an older one); a `bye` is
/// never dropped.
pub const AWAY_QUEUE_FRAMES: usize = 32;

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

#[derive(Debug)]
struct Connection {
    app: Arc<str>,
    uid: Arc<str>,
    /// Conversations this connection is a party of (as caller, ringing or live callee).
    cids: Vec<Arc<str>>,
    /// Of `cids`, those taken over from an away connection on reconnect on which this
    /// connection has not sent a frame yet: another connection of the uid may claim them.
    rebound: Vec<Arc<str>>,
}

/// A lost connection in its reconnect grace.
#[derive(Debug)]
struct Away {
    app: Arc<str>,
    uid: Arc<str>,
    /// Live conversations it is still a party of.
    cids: Vec<Arc<str>>,
    /// When the grace ends.
    until: Instant,
    /// Frames for it, in order, delivered to whoever takes it over.
    queue: VecDeque<ServerFrame>,
}

impl Away {
    fn enqueue(&mut self, frame: ServerFrame) {
        if let ServerFrame::Conversation { cid, body: Body::Bye(_), .. } = &frame {
            // The conversation is over: what was queued for it is moot.
            self.queue
                .retain(|f| !matches!(f, ServerFrame::Conversation { cid: c, .. } if c == cid));
            self.queue.push_back(frame);
            return;
        }
        self.queue.push_back(frame);
        if self.queue.len() > AWAY_QUEUE_FRAMES {
            let oldest = self
                .queue
                .iter()
                .position(|f| !matches!(f, ServerFrame::Conversation { body: Body::Bye(_), .. }));
            if let Some(i) = oldest {
                self.queue.remove(i);
            }
        }
    }
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
enum Role {
    Caller,
    RingingCallee,
    Callee,
}

/// The routing state of the whole server.
#[derive(Debug)]
pub struct Router {
    turn_credential: TurnCredential,
    reconnect_grace: Duration,
    connections: HashMap<ConnId, Connection>,
    /// Lost connections in their reconnect grace.
    away: HashMap<ConnId, Away>,
    apps: HashMap<Arc<str>, AppSpace>,
    conversation_count: usize,
}

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

impl Router {
    /// An empty router; `turn_credential` is added to every forwarded `call`; a lost
    /// party of a live conversation is waited for `reconnect_grace` (zero: not at all).
    pub fn new(turn_credential: TurnCredential, reconnect_grace: Duration) -> Self {
        Router {
            turn_credential,
            reconnect_grace,
            connections: HashMap::new(),
            away: HashMap::new(),
            apps: HashMap::new(),
            conversation_count: 0,
        }
    }

    /// Registers an authenticated connection as `uid` of `app`. Several connections may be
    /// the same uid. Registering a connection again is a no-op.
    ///
    /// If connections of this (app, uid) are away (lost, in their grace), this one takes
    /// their conversations over: what is returned is the frames queued for them meanwhile
    /// (including a `bye` for each conversation that ended meanwhile), now for `conn`.
    pub fn connect(&mut self, conn: ConnId, app: &str, uid: &str) -> Outbox {
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
        self.connections.insert(
            conn,
            Connection { app: app_key, uid: uid_key, cids: Vec::new(), rebound: Vec::new() },
        );
        let mut returning: Vec<ConnId> = self
            .away
            .iter()
            .filter(|(_, a)| &*a.app == app && &*a.uid == uid)
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
            out.extend(away.queue.into_iter().map(|frame| (conn, frame)));
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
    }

    /// The party of live conversation `cid` that `conn` (of `uid`) may take over: a
    /// connection of the same uid that is away, or that took the conversation over on
    /// reconnect and has not sent a frame on it since.
    fn claimable(&self, app: &str, uid: &str, cid: &str, conn: ConnId) -> Option<ConnId> {
        let conv = self.apps.get(app)?.conversations.get(cid)?;
        let Phase::Live(callee) = conv.phase else { return None };
        if conv.caller == conn || callee == conn {
            return None;
        }
        [(conv.caller, &conv.caller_uid), (callee, &conv.callee_uid)].into_iter().find_map(
            |(party, party_uid)| {
                let takeable = self.away.contains_key(&party)
                    || self
                        .connections
                        .get(&party)
                        .is_some_and(|c| c.rebound.iter().any(|x| &**x == cid));
                (&**party_uid == uid && takeable).then_some(party)
            },
        )
    }

    /// Moves live conversation `cid` from party `old` to `new`; returns the frames queued
    /// for `old` on that conversation (if it is away), now for `new`.
    fn take_over(&mut self, app: &str, cid: &str, old: ConnId, new: ConnId) -> Outbox {
        self.replace_party(app, cid, old, new);
        self.forget(old, cid);
        if let Some(c) = self.connections.get_mut(&new) {
            c.cids.push(Arc::from(cid));
        }
        let Some(away) = self.away.get_mut(&old) else { return Vec::new() };
        let (mine, others) = std::mem::take(&mut away.queue).into_iter().partition(
            |f: &ServerFrame| matches!(f, ServerFrame::Conversation { cid: c, .. } if c == cid),
        );
        away.queue = others;
        mine.into_iter().map(|frame: ServerFrame| (new, frame)).collect()
    }

    /// Queues the frames addressed to away connections instead of sending them.
    fn divert(&mut self, out: Outbox) -> Outbox {
        if self.away.is_empty() {
            return out;
        }
        out.into_iter()
            .filter_map(|(to, frame)| match self.away.get_mut(&to) {
                Some(away) => {
                    away.enqueue(frame);
                    None
                }
                None => Some((to, frame)),
            })
            .collect()
    }

    /// Whether `conn` is registered.
    pub fn is_connected(&self, conn: ConnId) -> bool {
        self.connections.contains_key(&conn)
    }

    /// The (app, uid) of a registered connection.
    pub fn identity(&self, conn: ConnId) -> Option<(&str, &str)> {
        self.connections.get(&conn).map(|c| (&*c.app, &*c.uid))
    }

    /// Registered connections.
    pub fn connection_count(&self) -> usize {
        self.connections.len()
    }

    /// Lost connections in their reconnect grace.
    pub fn away_count(&self) -> usize {
        self.away.len()
    }

    /// When the earliest reconnect grace ends: call [`Router::expire`] then.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.away.values().map(|a| a.until).min()
    }

    /// Conversations ringing or live.
    pub fn conversation_count(&self) -> usize {
        self.conversation_count
    }

    /// Handles one frame from `conn` and returns what to send.
    pub fn handle(&mut self, conn: ConnId, frame: ClientFrame) -> Outbox {
        if !self.connections.contains_key(&conn) {
            if let ClientFrame::Heartbeat(_) = frame {
                return Vec::new();
            }
            let cid = match &frame {
                ClientFrame::Conversation { cid, .. } => Some(cid.as_str()),
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
        match frame {
            ClientFrame::Heartbeat(_) => Vec::new(),
            ClientFrame::Connect(_) => vec![error(
                conn,
                None,
                ErrorCode::NotConnected,
                "already connected: a socket authenticates once",
                "connect",
            )],
            ClientFrame::Telemetry { kind, cid, .. } => match kind.ack_kind() {
                Some(_) => vec![(conn, ServerFrame::TelemetryAck { kind, cid, code: 0 })],
                None => Vec::new(),
            },
            ClientFrame::Unknown(u) => vec![error(
                conn,
                u.cid.as_deref(),
                ErrorCode::UnknownType,
                format!("unknown frame type `{}`", u.kind),
                &u.kind,
            )],
            ClientFrame::Conversation { cid, to, body } => {
                let out = self.conversation(conn, &cid, &to, body);
                self.divert(out)
            }
        }
    }

    fn conversation(&mut self, conn: ConnId, cid: &str, to: &str, body: Body) -> Outbox {
        let Some(me) = self.connections.get(&conn) else { return Vec::new() };
        let (app, uid) = (me.app.clone(), me.uid.clone());
        if let Body::Call(msg) = body {
            return self.call(conn, &app, &uid, cid, to, msg);
        }
        let mut out = match self.claimable(&app, &uid, cid, conn) {
            Some(old) => self.take_over(&app, cid, old, conn),
            None => Vec::new(),
        };
        // Speaking on a conversation confirms it as this connection's.
        if let Some(me) = self.connections.get_mut(&conn) {
            me.rebound.retain(|x| &**x != cid);
        }
        out.extend(self.conversation_frame(conn, &app, &uid, cid, to, body));
        out
    }

    fn conversation_frame(
        &mut self,
        conn: ConnId,
        app: &Arc<str>,
        uid: &Arc<str>,
        cid: &str,
        to: &str,
        body: Body,
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
            Role::Caller
        } else {
            match &conv.phase {
                Phase::Ringing(list) if list.contains(&conn) => Role::RingingCallee,
                Phase::Live(callee) if *callee == conn => Role::Callee,
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
        let peer_uid = if role == Role::Caller { &conv.callee_uid } else { &conv.caller_uid };
        if **peer_uid != *to {
            return vec![error(
                conn,
                Some(cid),
                ErrorCode::NotParty,
                format!("`to` is `{to}`, but the other party of `{cid}` is `{peer_uid}`"),
                kind,
            )];
        }
        let out_of_order = |why: &str| {
            vec![error(conn, Some(cid), ErrorCode::OutOfOrder, format!("`{kind}` {why}"), kind)]
        };
        match (role, &conv.phase, body) {
            (Role::Caller, Phase::Ringing(ringing), Body::Bye(b)) => {
                let out =
                    ringing.iter().map(|c| relay(*c, cid, &uid, Body::Bye(b.clone()))).collect();
                self.end(&app, cid);
                out
            }
            (Role::Caller, Phase::Ringing(_), _) => out_of_order("before the callee accepted"),
            (Role::RingingCallee, Phase::Ringing(ringing), Body::Accept(b)) => {
                let others: Vec<ConnId> = ringing.iter().copied().filter(|c| *c != conn).collect();
                conv.phase = Phase::Live(conn);
                let caller = conv.caller;
                let caller_uid = conv.caller_uid.clone();
                let mut out = vec![relay(caller, cid, &uid, Body::Accept(b))];
                for other in others {
                    out.push(relay(other, cid, &caller_uid, bye()));
                    self.forget(other, cid);
                }
                out
            }
            (Role::RingingCallee, Phase::Ringing(ringing), Body::Reject(b)) => {
                let caller_uid = conv.caller_uid.clone();
                let mut out = vec![relay(conv.caller, cid, &uid, Body::Reject(b))];
                out.extend(
                    ringing
                        .iter()
                        .filter(|c| **c != conn)
                        .map(|c| relay(*c, cid, &caller_uid, bye())),
                );
                self.end(&app, cid);
                out
            }
            (Role::RingingCallee, Phase::Ringing(_), body @ (Body::Busy(_) | Body::Bye(_))) => {
                if let Phase::Ringing(ringing) = &mut conv.phase {
                    ringing.retain(|c| *c != conn);
                    if ringing.is_empty() {
                        let out = vec![relay(conv.caller, cid, &uid, body)];
                        self.end(&app, cid);
                        return out;
                    }
                }
                self.forget(conn, cid);
                Vec::new()
            }
            (Role::RingingCallee | Role::Callee, Phase::Ringing(_), _)
            | (Role::RingingCallee, Phase::Live(_), _) => {
                out_of_order("before this callee accepted")
            }
            (_, Phase::Live(callee), body) => {
                let (peer, ends) = match (&body, role) {
                    (Body::Accept(_) | Body::Reject(_) | Body::Busy(_), _) => {
                        return out_of_order("in a conversation already accepted");
                    }
                    (Body::Bye(_), Role::Caller) => (*callee, true),
                    (Body::Bye(_), _) => (conv.caller, true),
                    (_, Role::Caller) => (*callee, false),
                    _ => (conv.caller, false),
                };
                let out = vec![relay(peer, cid, &uid, body)];
                if ends {
                    self.end(&app, cid);
                }
                out
            }
        }
    }

    fn call(
        &mut self,
        conn: ConnId,
        app: &Arc<str>,
        uid: &Arc<str>,
        cid: &str,
        to: &str,
        mut msg: wilddog_protocol::CallMsg,
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
        let Some((callee_uid, callee_conns)) = space.users.get_key_value(to) else {
            return vec![(
                conn,
                ServerFrame::Unreachable { cid: cid.to_owned(), from: to.to_owned() },
            )];
        };
        let ringing: Vec<ConnId> = callee_conns.iter().copied().filter(|c| *c != conn).collect();
        if ringing.is_empty() {
            return vec![(
                conn,
                ServerFrame::Unreachable { cid: cid.to_owned(), from: to.to_owned() },
            )];
        }
        let callee_uid = callee_uid.clone();
        let cid_key: Arc<str> = Arc::from(cid);
        msg.turn_credential = Some(self.turn_credential.clone());
        let mut out = Vec::with_capacity(ringing.len());
        for (i, callee) in ringing.iter().enumerate() {
            let body = if i + 1 == ringing.len() {
                Body::Call(std::mem::take(&mut msg))
            } else {
                Body::Call(msg.clone())
            };
            out.push(relay(*callee, cid, uid, body));
        }
        for party in ringing.iter().chain(std::iter::once(&conn)) {
            if let Some(c) = self.connections.get_mut(party) {
                c.cids.push(cid_key.clone());
            }
        }
        space.conversations.insert(
            cid_key,
            Conversation {
                caller: conn,
                caller_uid: uid.clone(),
                callee_uid,
                phase: Phase::Ringing(ringing),
            },
        );
        self.conversation_count += 1;
        out
    }

    /// Removes `cid` from the conversations `conn` (connected or away) is a party of.
    fn forget(&mut self, conn: ConnId, cid: &str) {
        if let Some(c) = self.connections.get_mut(&conn) {
            c.cids.retain(|x| &**x != cid);
            c.rebound.retain(|x| &**x != cid);
        }
        if let Some(a) = self.away.get_mut(&conn) {
            a.cids.retain(|x| &**x != cid);
        }
    }

    /// Ends conversation `cid` of `app`: forgets it everywhere.
    fn end(&mut self, app: &str, cid: &str) {
        let Some(conv) = self.apps.get_mut(app).and_then(|s| s.conversations.remove(cid)) else {
            return;
        };
        self.conversation_count -= 1;
        self.forget(conv.caller, cid);
        match conv.phase {
            Phase::Ringing(list) => list.iter().for_each(|c| self.forget(*c, cid)),
            Phase::Live(c) => self.forget(c, cid),
        }
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
                self.end(&me.app, cid);
                continue;
            }
            match &mut conv.phase {
                Phase::Ringing(list) => {
                    list.retain(|c| *c != conn);
                    if list.is_empty() {
                        out.push(relay(conv.caller, cid, &me.uid, bye()));
                        self.end(&me.app, cid);
                    }
                }
                Phase::Live(_) => {
                    out.push(relay(conv.caller, cid, &me.uid, bye()));
                    self.end(&me.app, cid);
                }
            }
        }
        let until = if kept.is_empty() {
            None
        } else {
            let until = now.checked_add(self.reconnect_grace).unwrap_or(now);
            let Connection { app, uid, .. } = me;
            self.away.insert(conn, Away { app, uid, cids: kept, until, queue: VecDeque::new() });
            Some(until)
        };
        let out = self.divert(out);
        self.release_empty_apps();
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
                self.end(&away.app, cid);
            }
        }
        // A peer whose grace ended too is gone: nothing for it.
        out.retain(|(to, _)| !due.contains(to));
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
