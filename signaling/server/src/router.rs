//! The routing logic, pure: no sockets, no clock, no locks.
//!
//! [`Router`] knows which connection is which (app, uid), and every conversation (`cid` →
//! caller connection, callee connections). It turns one [`ClientFrame`] from one connection
//! into the frames to send, each addressed to a connection. The socket side
//! ([`crate::server`]) authenticates a connection, then calls [`Router::connect`], feeds it
//! frames with [`Router::handle`], and calls [`Router::disconnect`] when the socket goes.
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

use std::collections::HashMap;
use std::sync::Arc;

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

#[derive(Debug)]
struct Connection {
    app: Arc<str>,
    uid: Arc<str>,
    /// Conversations this connection is a party of (as caller, ringing or live callee).
    cids: Vec<Arc<str>>,
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
    connections: HashMap<ConnId, Connection>,
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
    /// An empty router; `turn_credential` is added to every forwarded `call`.
    pub fn new(turn_credential: TurnCredential) -> Self {
        Router {
            turn_credential,
            connections: HashMap::new(),
            apps: HashMap::new(),
            conversation_count: 0,
        }
    }

    /// Registers an authenticated connection as `uid` of `app`. Several connections may be
    /// the same uid. Registering a connection again is a no-op.
    pub fn connect(&mut self, conn: ConnId, app: &str, uid: &str) {
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
        space.users.entry(uid_key.clone()).or_default().push(conn);
        self.connections.insert(conn, Connection { app: app_key, uid: uid_key, cids: Vec::new() });
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
            ClientFrame::Conversation { cid, to, body } => self.conversation(conn, &cid, &to, body),
        }
    }

    fn conversation(&mut self, conn: ConnId, cid: &str, to: &str, body: Body) -> Outbox {
        let Some(me) = self.connections.get(&conn) else { return Vec::new() };
        let (app, uid) = (me.app.clone(), me.uid.clone());
        let kind = body.kind();
        if let Body::Call(msg) = body {
            return self.call(conn, &app, &uid, cid, to, msg);
        }
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

    /// Removes `cid` from the conversations `conn` is a party of.
    fn forget(&mut self, conn: ConnId, cid: &str) {
        if let Some(c) = self.connections.get_mut(&conn) {
            c.cids.retain(|x| &**x != cid);
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
    /// each gets `bye`.
    pub fn disconnect(&mut self, conn: ConnId) -> Outbox {
        let Some(me) = self.connections.remove(&conn) else { return Vec::new() };
        let mut out = Vec::new();
        let Some(space) = self.apps.get_mut(&me.app) else { return out };
        if let Some(conns) = space.users.get_mut(&me.uid) {
            conns.retain(|c| *c != conn);
            if conns.is_empty() {
                space.users.remove(&me.uid);
            }
        }
        for cid in &me.cids {
            let Some(space) = self.apps.get_mut(&me.app) else { break };
            let Some(conv) = space.conversations.get_mut(cid) else { continue };
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
        if space_is_empty(self.apps.get(&me.app)) {
            self.apps.remove(&me.app);
        }
        out
    }
}

fn space_is_empty(space: Option<&AppSpace>) -> bool {
    space.is_some_and(|s| s.users.is_empty() && s.conversations.is_empty())
}

#[cfg(test)]
mod tests;
