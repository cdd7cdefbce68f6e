//! Socket I/O: one task per WebSocket, a [`Hub`] that owns the [`Router`] behind a mutex
//! held only for the pure call, one bounded outbound queue per connection, one task
//! ([`expire_graces`]) that ends reconnect graces when they run out, and one short task per
//! takeover probe ([`Effect::Probe`]). With minted TURN credentials each connection's task
//! also sends its client a fresh one (`turn`) at half their lifetime, so that a client never
//! holds only an expired one (an ICE restart of a live call gathers with it).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::SinkExt;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wilddog_protocol::{
    ClientFrame, Connack, ErrorCode, ErrorMsg, FrameError, Role, ServerFrame, connack_code,
};

use crate::cluster::{BusMsg, Cluster, RecordFields, Write};
use crate::config::ServerConfig;
use crate::metrics::Metrics;
use crate::router::{
    ConnId, Departure, Effect, LinkedConversation, NodeId, Outbox, PoolPick, Router, node_of,
};
use crate::token::{AuthError, verify_token};

/// WebSocket close codes the server uses.
pub mod close_code {
    /// The server is shutting down; or the connection was idle too long; or it did not
    /// answer a takeover probe (another connection of its uid took its calls over).
    pub const GOING_AWAY: u16 = 1001;
    /// Protocol error at the WebSocket level.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// Policy: flood, failed authentications, no `connect` in time, too slow a reader.
    pub const POLICY: u16 = 1008;
    /// A frame over the hard size limit.
    pub const TOO_BIG: u16 = 1009;
    /// The node is draining (cluster mode): reconnect, through the load balancer, to
    /// another node; live calls wait the reconnect grace (RFC 6455 "service restart").
    pub const SERVICE_RESTART: u16 = 1012;
}

/// Bytes tungstenite reserves for reading from each socket. Small, because most sockets are
/// idle and frames are small; a large SDP grows the buffer for as long as it needs.
pub(crate) const READ_BUFFER_BYTES: usize = 1024;

/// What every connection task shares.
pub(crate) struct Shared {
    pub config: ServerConfig,
    pub metrics: Metrics,
    pub hub: Hub,
    pub local_addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub tracker: TaskTracker,
    next_conn: AtomicU64,
    /// Cluster mode: the Redis side of this node.
    pub cluster: Option<Cluster>,
    /// Draining: `/readyz` 503, no new WebSocket.
    pub draining: AtomicBool,
    /// Cancelled when draining closes the sessions (1012, their calls keep the grace).
    pub drain: CancellationToken,
    /// `[turn]`: mints the credentials each connection is sent again before they expire.
    pub turn: Option<crate::turn::RestTurn>,
}

impl Shared {
    pub fn new(config: ServerConfig, local_addr: SocketAddr) -> Result<Self, crate::ServerError> {
        let (turn, grace) = (config.turn_credentials(), config.limits.reconnect_grace);
        let turn_minter = config.turn.as_ref().map(|t| t.minter());
        let cluster = match &config.cluster {
            Some(c) => Some(
                Cluster::new(&c.redis_url, c.node_ttl)
                    .map_err(|e| crate::ServerError::Redis(e.to_string()))?,
            ),
            None => None,
        };
        let (router, first_conn) = match &cluster {
            Some(c) => (Router::clustered(turn, grace), (u64::from(c.node) << 32) + 1),
            None => (Router::new(turn, grace), 1),
        };
        Ok(Shared {
            config,
            metrics: Metrics::default(),
            hub: Hub {
                state: Mutex::new(HubState { router, peers: HashMap::new(), next_expiry: None }),
                graces_changed: Notify::new(),
            },
            local_addr,
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
            next_conn: AtomicU64::new(first_conn),
            cluster,
            draining: AtomicBool::new(false),
            drain: CancellationToken::new(),
            turn: turn_minter,
        })
    }

    /// Sends a message on the bus of node `to`.
    pub(crate) fn publish(&self, to: NodeId, msg: BusMsg) {
        if let Some(c) = &self.cluster {
            c.write(Write::Publish { to, msg });
        }
    }

    /// This node's id (0 alone).
    fn node(&self) -> NodeId {
        self.cluster.as_ref().map_or(0, |c| c.node)
    }

    /// The conversations of local connections homed on `node`.
    pub(crate) fn hub_links_to(&self, node: NodeId) -> Vec<LinkedConversation> {
        self.hub.lock().router.links_to(node)
    }

    /// The nodes conversations of local connections are homed on.
    pub(crate) fn hub_linked_homes(&self) -> Vec<NodeId> {
        self.hub.lock().router.linked_homes()
    }

    /// Whether conversation `cid` of `app` is homed here.
    pub(crate) fn hub_knows(&self, app: &str, cid: &str) -> bool {
        self.hub.lock().router.knows(app, cid)
    }

    /// Whether conversation `cid` of local connection `conn` is homed here or linked.
    pub(crate) fn hub_places(&self, conn: ConnId, cid: &str) -> bool {
        self.hub.lock().router.places(conn, cid)
    }

    /// Cluster mode: writes this node's presence entries and records again (periodically,
    /// and when Redis is back after an outage that may have lost them).
    pub(crate) fn rewrite_index(&self) {
        let Some(cluster) = &self.cluster else { return };
        let state = self.hub.lock();
        let connections = state.router.local_connections();
        self.metrics.presence_entries.set(connections.len() as i64);
        for (app, uid, conn, service) in connections {
            cluster.write(Write::PresenceAdd { app, uid, conn, service });
        }
        for effect in state.router.records() {
            if let Effect::Record { app, cid, caller, callee, unproven } = effect {
                cluster.write(record_write(app, cid, caller, callee, unproven));
            }
        }
    }
}

fn record_write(
    app: Arc<str>,
    cid: Arc<str>,
    caller: (ConnId, Arc<str>),
    callee: (ConnId, Arc<str>),
    unproven: Option<Role>,
) -> Write {
    Write::Record {
        app,
        cid,
        fields: RecordFields {
            caller: caller.0,
            caller_uid: caller.1,
            callee: callee.0,
            callee_uid: callee.1,
            unproven,
        },
    }
}

/// One authenticated connection as the hub sees it: its bounded outbound queue, and the
/// signals of takeover probes, in one small allocation. (A tokio channel per connection
/// cost 1.5 KiB of every idle connection: its first block and its cache-padded halves.)
pub(crate) struct Mailbox {
    /// Frames for the client, in order; at most `capacity`.
    queue: Mutex<VecDeque<Utf8Bytes>>,
    capacity: usize,
    /// Wakes the connection's task: frames queued, a ping asked, a close.
    wake: Notify,
    /// [`OPEN`], or why the task must close the socket: [`TOO_SLOW`], [`KICKED`].
    close: AtomicU8,
    /// Ping the client now.
    ping: AtomicBool,
    /// A probe waits for the client to show it is alive (a pong, or any frame).
    probing: AtomicBool,
    /// The client showed it is alive while probed.
    answered: Notify,
}

const OPEN: u8 = 0;
/// Its queue overflowed: the client does not read.
const TOO_SLOW: u8 = 1;
/// It did not answer a takeover probe: its calls went to another connection of its uid.
const KICKED: u8 = 2;

/// A queue that is full.
struct Full;

impl Mailbox {
    fn new(capacity: usize) -> Self {
        Mailbox {
            queue: Mutex::new(VecDeque::new()),
            capacity,
            wake: Notify::new(),
            close: AtomicU8::new(OPEN),
            ping: AtomicBool::new(false),
            probing: AtomicBool::new(false),
            answered: Notify::new(),
        }
    }

    /// Queues a frame for the client (dropped if the connection is closing).
    fn push(&self, frame: Utf8Bytes) -> Result<(), Full> {
        if self.close.load(Ordering::SeqCst) != OPEN {
            return Ok(());
        }
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        if queue.len() >= self.capacity {
            return Err(Full);
        }
        queue.push_back(frame);
        drop(queue);
        self.wake.notify_one();
        Ok(())
    }

    /// The frames queued so far.
    fn take(&self) -> VecDeque<Utf8Bytes> {
        std::mem::take(&mut *self.queue.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn close(&self, why: u8) {
        self.close.store(why, Ordering::SeqCst);
        self.wake.notify_one();
    }

    fn ask_ping(&self) {
        self.ping.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }
}

struct HubState {
    router: Router,
    peers: HashMap<ConnId, Arc<Mailbox>>,
    /// The router's next grace expiry, as [`expire_graces`] last heard of it.
    next_expiry: Option<std::time::Instant>,
}

/// The router and the outbound queues of authenticated connections.
pub(crate) struct Hub {
    state: Mutex<HubState>,
    /// Wakes [`expire_graces`] when the earliest reconnect grace changes.
    graces_changed: Notify,
}

/// What one pure call on the router gave: frames paired with their connection's queue, and
/// the connections to probe.
struct Routed {
    deliveries: Vec<(ConnId, Arc<Mailbox>, ServerFrame)>,
    probes: Vec<(ConnId, Arc<Mailbox>)>,
}

impl Hub {
    fn lock(&self) -> MutexGuard<'_, HubState> {
        // The router never panics on input; if a bug ever did, the state is still usable
        // for the other sessions.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Shared {
    /// Registers an authenticated connection; frames kept for it while its uid was away
    /// (reconnect grace) go to its queue.
    fn register(
        self: &Arc<Self>,
        conn: ConnId,
        (app, uid, service): (&str, &str, bool),
        mailbox: Arc<Mailbox>,
    ) {
        self.hub.lock().peers.insert(conn, mailbox);
        if let Some(cluster) = &self.cluster {
            self.metrics.presence_entries.inc();
            cluster.write(Write::PresenceAdd {
                app: Arc::from(app),
                uid: Arc::from(uid),
                conn,
                service,
            });
            // Nodes where a party of this uid waits hand it its calls and their queued
            // frames now, as a node does for its own away parties (below).
            let shared = self.clone();
            let (app, uid) = (app.to_owned(), uid.to_owned());
            tokio::spawn(async move {
                let Some(cluster) = shared.cluster.as_ref() else { return };
                for node in cluster.awaiting_nodes(&shared, &app, &uid).await {
                    let (app, uid) = (app.clone(), uid.clone());
                    shared.publish(node, BusMsg::Arrived { conn, app, uid, service });
                }
            });
        }
        self.route(|router| router.connect_with(conn, app, uid, service));
    }

    /// Runs `f` on the router, then delivers what it returns and starts the probes it asks
    /// for. A connection whose queue is full is too slow to read: it is dropped from the
    /// router at once (its peers get `bye`), and its task, seeing its queue closed, closes
    /// the socket.
    pub(crate) fn route(self: &Arc<Self>, f: impl FnOnce(&mut Router) -> Outbox) {
        let metrics = &self.metrics;
        let mut routed = self.collect(&[], f);
        loop {
            for (conn, mailbox) in std::mem::take(&mut routed.probes) {
                self.start_probe(conn, mailbox);
            }
            let mut overflowed = Vec::new();
            for (to, mailbox, frame) in std::mem::take(&mut routed.deliveries) {
                match &frame {
                    ServerFrame::Conversation { .. } => metrics.frames_relayed.inc(),
                    ServerFrame::Error { .. } => metrics.frames_refused.inc(),
                    _ => 0,
                };
                if let Err(Full) = mailbox.push(Utf8Bytes::from(frame.to_json())) {
                    mailbox.close(TOO_SLOW);
                    overflowed.push(to);
                }
            }
            if overflowed.is_empty() {
                break;
            }
            for conn in &overflowed {
                tracing::warn!(
                    conn,
                    "outbound queue full: disconnecting a client too slow to read"
                );
            }
            // Not reading is a policy close, not a lost connection: no reconnect grace.
            let now = std::time::Instant::now();
            routed = self.collect(&overflowed, |router| {
                overflowed
                    .iter()
                    .flat_map(|conn| router.disconnect(*conn, Departure::Closed, now).0)
                    .collect()
            });
        }
    }

    /// Forgets the queues of `dropped` (closed already), runs `f` under the lock and pairs
    /// each output with its connection's queue.
    fn collect(&self, dropped: &[ConnId], f: impl FnOnce(&mut Router) -> Outbox) -> Routed {
        let mut state = self.hub.lock();
        let HubState { router, peers, next_expiry } = &mut *state;
        for conn in dropped {
            peers.remove(conn);
        }
        let out = f(router);
        self.metrics.conversations.set(router.conversation_count() as i64);
        let expiry = router.next_expiry();
        if expiry != *next_expiry {
            *next_expiry = expiry;
            self.hub.graces_changed.notify_one();
        }
        let me = self.node();
        let mut probes = Vec::new();
        for effect in router.take_effects() {
            match effect {
                Effect::Probe(conn) if node_of(conn) == me => {
                    if let Some(p) = peers.get(&conn) {
                        probes.push((conn, p.clone()));
                    }
                }
                Effect::Probe(conn) => self.publish(node_of(conn), BusMsg::Probe { conn }),
                Effect::Forward { home, conn, frame, number } => {
                    if let Some((app, uid, service)) = router.endpoint(conn) {
                        self.publish(
                            home,
                            BusMsg::Forward {
                                conn,
                                app: app.to_string(),
                                uid: uid.to_string(),
                                service,
                                frame: frame.to_json(),
                                number,
                            },
                        );
                    }
                }
                Effect::Deliver { conn, frame, stamp } => {
                    if let ServerFrame::Conversation { .. } = frame {
                        self.metrics.frames_relayed.inc();
                    }
                    let frame = frame.to_json();
                    self.publish(
                        node_of(conn),
                        BusMsg::Deliver { conn, frame, stamp: Some(stamp) },
                    );
                }
                Effect::Departed { home, conn, departure } => self
                    .publish(home, BusMsg::Departed { conn, lost: departure == Departure::Lost }),
                Effect::Record { app, cid, caller, callee, unproven } => {
                    if let Some(c) = &self.cluster {
                        c.write(record_write(app, cid, caller, callee, unproven));
                    }
                }
                Effect::Unrecord { app, cid } => {
                    if let Some(c) = &self.cluster {
                        c.write(Write::Unrecord { app, cid });
                    }
                }
                Effect::Unclaim { app, uid, cid } => {
                    if let Some(c) = &self.cluster {
                        c.write(Write::Unclaim { app, uid, cid });
                    }
                }
                Effect::Awaits { app, uid } => {
                    if let Some(c) = &self.cluster {
                        let ttl = self.config.limits.reconnect_grace + Duration::from_secs(60);
                        c.write(Write::Awaits { app, uid, ttl });
                    }
                }
            }
        }
        let mut deliveries = Vec::with_capacity(out.len());
        for (to, frame) in out {
            if node_of(to) == me {
                if let Some(p) = peers.get(&to) {
                    deliveries.push((to, p.clone(), frame));
                }
            } else if node_of(to) < 1 << 31 {
                // A party on another node: its node delivers it.
                if let ServerFrame::Conversation { .. } = frame {
                    self.metrics.frames_relayed.inc();
                }
                let frame = frame.to_json();
                self.publish(node_of(to), BusMsg::Deliver { conn: to, frame, stamp: None });
            }
        }
        Routed { deliveries, probes }
    }

    /// Pings `conn` and gives the router the verdict after `limits.takeover_probe`, or as
    /// soon as the client shows it is alive. A silent one is closed: its calls went on.
    fn start_probe(self: &Arc<Self>, conn: ConnId, mailbox: Arc<Mailbox>) {
        self.run_probe(conn, mailbox, None);
    }

    /// Cluster mode: the home of a conversation on node `home` asks to probe local
    /// connection `conn`; the verdict goes back to it.
    pub(crate) fn probe_for(self: &Arc<Self>, conn: ConnId, home: NodeId) {
        let mailbox = self.hub.lock().peers.get(&conn).cloned();
        match mailbox {
            Some(mailbox) => self.run_probe(conn, mailbox, Some(home)),
            None => self.publish(home, BusMsg::ProbeResult { conn, answered: false }),
        }
    }

    fn run_probe(self: &Arc<Self>, conn: ConnId, control: Arc<Mailbox>, home: Option<NodeId>) {
        let shared = self.clone();
        let deadline = self.config.limits.takeover_probe;
        tokio::spawn(async move {
            control.probing.store(true, Ordering::SeqCst);
            control.ask_ping();
            let answered =
                tokio::time::timeout(deadline, control.answered.notified()).await.is_ok();
            control.probing.store(false, Ordering::SeqCst);
            if answered {
                tracing::debug!(conn, "takeover probe answered: the connection keeps its calls");
            } else {
                tracing::info!(
                    conn,
                    "no answer to the takeover probe within {deadline:?}: the connection is \
                     lost, a new connection of its uid takes its calls over"
                );
            }
            let now = std::time::Instant::now();
            match home {
                None => shared.route(|router| router.probe_result(conn, answered, now)),
                Some(home) => shared.publish(home, BusMsg::ProbeResult { conn, answered }),
            }
            if !answered {
                control.close(KICKED);
            }
        });
    }

    async fn dispatch(self: &Arc<Self>, conn: ConnId, frame: ClientFrame) {
        if let Some(cluster) = &self.cluster {
            // A call rings the callee's connections on other nodes too.
            if let ClientFrame::Conversation { to, cid, body: wilddog_protocol::Body::Call(_) } =
                &frame
            {
                let (to, cid) = (to.clone(), cid.clone());
                let to = to.as_str();
                let app = self.hub.lock().router.endpoint(conn).map(|(a, ..)| a.clone());
                let Some(app) = app else { return };
                let remotes = cluster.presence(self, &app, to).await;
                // A pool of service endpoints: the nodes choose its endpoint together.
                let (pool, free) =
                    self.hub.lock().router.free_service_endpoints(&app, to, conn, &remotes);
                let pick = if pool == 0 {
                    None
                } else if free.is_empty() {
                    Some(PoolPick::Busy)
                } else {
                    match cluster.claim_endpoint(self, (&app, to, &cid), &free).await {
                        Some(Some(endpoint)) => Some(PoolPick::Ring(endpoint)),
                        Some(None) => Some(PoolPick::Busy),
                        None => None,
                    }
                };
                let now = std::time::Instant::now();
                let mut rung = false;
                self.route(|router| {
                    for (c, service) in &remotes {
                        router.connect_remote(*c, &app, to, *service);
                    }
                    let ids: Vec<ConnId> = remotes.iter().map(|(c, _)| *c).collect();
                    let out = router.handle_call(conn, frame, &ids, pick, now);
                    if let Some(PoolPick::Ring(endpoint)) = pick {
                        rung = router.is_party(endpoint, &cid);
                    }
                    for c in ids {
                        router.release_if_idle(c);
                    }
                    out
                });
                if let (Some(PoolPick::Ring(_)), false) = (pick, rung) {
                    // The call was refused (a cid in use, too many calls): the claim goes.
                    let uid: Arc<str> = Arc::from(to);
                    cluster.write(Write::Unclaim { app, uid, cid: Arc::from(cid) });
                }
                return;
            }
            // A conversation this node does not know may live on another one.
            let unknown = self.hub.lock().router.needs_lookup(conn, &frame);
            if let Some((app, cid)) = unknown {
                let peer = match &frame {
                    ClientFrame::Conversation { to, .. } | ClientFrame::Resume { to, .. } => {
                        to.clone()
                    }
                    _ => String::new(),
                };
                crate::cluster::find_conversation(self, conn, (&app, &cid, &peer)).await;
            }
        }
        let now = std::time::Instant::now();
        self.route(|router| router.handle(conn, frame, now));
    }

    fn unregister(self: &Arc<Self>, conn: ConnId, departure: Departure) {
        if let Some(cluster) = &self.cluster {
            let identity =
                self.hub.lock().router.endpoint(conn).map(|(a, u, s)| (a.clone(), u.clone(), s));
            if let Some((app, uid, service)) = identity {
                self.metrics.presence_entries.dec();
                cluster.write(Write::PresenceDel { app, uid, conn, service });
            }
        }
        let now = std::time::Instant::now();
        let mut grace_until = None;
        self.route(|router| {
            let (out, until) = router.disconnect(conn, departure, now);
            grace_until = until;
            out
        });
        self.hub.lock().peers.remove(&conn);
        if let Some(until) = grace_until {
            tracing::debug!(conn, grace = ?until.saturating_duration_since(now), "connection lost: its live calls wait for it");
        }
    }
}

/// Ends reconnect graces as they run out (the peers get `bye`), until shutdown.
pub(crate) async fn expire_graces(shared: Arc<Shared>) {
    let hub = &shared.hub;
    loop {
        let next = hub.lock().router.next_expiry();
        let wake = async {
            match next {
                Some(at) => tokio::time::sleep_until(Instant::from_std(at)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            // A new grace may end before the one we sleep for: look again.
            _ = hub.graces_changed.notified() => {}
            _ = wake => {
                let now = std::time::Instant::now();
                shared.route(|router| router.expire(now));
            }
        }
    }
}

/// Frames per second with a burst.
struct TokenBucket {
    tokens: f64,
    per_sec: f64,
    burst: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(per_sec: u32, burst: u32) -> Self {
        TokenBucket {
            tokens: f64::from(burst),
            per_sec: f64::from(per_sec),
            burst: f64::from(burst),
            last: Instant::now(),
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

fn error_frame(
    cid: Option<String>,
    code: ErrorCode,
    reason: String,
    refers_to: Option<String>,
) -> ServerFrame {
    ServerFrame::Error { cid, msg: ErrorMsg { code, reason, refers_to } }
}

/// Why the connection loop ended: the close frame to send, if any.
type CloseWith = Option<(u16, String)>;

/// The `HOST:PORT` of the built-in STUN server as a client reaching us via `host_header`
/// sees it.
pub(crate) fn stun_host_port(local: SocketAddr, host_header: Option<&str>) -> String {
    let ip = local.ip();
    let host = if ip.is_unspecified() {
        host_header
            .map(host_of)
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| if ip.is_ipv4() { "127.0.0.1".into() } else { "[::1]".into() })
    } else if ip.is_ipv6() {
        format!("[{ip}]")
    } else {
        ip.to_string()
    };
    format!("{host}:{}", local.port())
}

/// The host part of a `Host` header (`name`, `1.2.3.4`, `[::1]`), without the port.
fn host_of(header: &str) -> String {
    if let Some(rest) = header.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((v6, _)) => format!("[{v6}]"),
            None => String::new(),
        };
    }
    header.split(':').next().unwrap_or_default().to_owned()
}

/// Serves one upgraded WebSocket until it closes, the server shuts down, or it misbehaves.
pub(crate) async fn serve_socket(
    mut ws: WebSocket,
    shared: Arc<Shared>,
    peer: SocketAddr,
    stun_host_port: String,
) {
    let conn = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    let metrics = &shared.metrics;
    metrics.connections.inc();
    tracing::debug!(conn, %peer, "socket opened");
    let mut session = Session {
        conn,
        shared: &shared,
        stun_host_port,
        mailbox: None,
        bucket: TokenBucket::new(
            shared.config.limits.rate_limit_per_sec,
            shared.config.limits.rate_limit_burst,
        ),
        refused_in_a_row: 0,
        failed_auth: 0,
        departure: Departure::Lost,
        turn_refresh: None,
    };
    let close = session.run(&mut ws).await;
    if session.mailbox.is_some() {
        shared.unregister(conn, session.departure);
        metrics.authenticated.dec();
    }
    if let Some((code, reason)) = &close {
        tracing::debug!(conn, %peer, code, reason, "closing socket");
    }
    // Boxed, like every step below that is not waiting: a connection's task holds only
    // what an idle connection waits with (docs/signaling-server.md, memory).
    Box::pin(finish(&mut ws, close)).await;
    metrics.connections.dec();
    tracing::debug!(conn, %peer, "socket closed");
}

/// Sends the close frame, then waits briefly for the peer's, so that the close frame is not
/// lost to a TCP reset.
async fn finish(ws: &mut WebSocket, close: CloseWith) {
    if let Some((code, reason)) = close {
        let frame = CloseFrame { code, reason: Utf8Bytes::from(reason) };
        if !within_send_timeout(ws.send(Message::Close(Some(frame)))).await {
            return;
        }
    } else if !within_send_timeout(ws.close()).await {
        return;
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while let Some(Ok(msg)) = ws.recv().await {
            if let Message::Close(_) = msg {
                break;
            }
        }
    })
    .await;
}

/// A write that does not complete in this time means the peer stopped reading: the
/// connection is dropped.
pub(crate) const SEND_TIMEOUT: Duration = Duration::from_secs(10);

async fn within_send_timeout<E>(write: impl Future<Output = Result<(), E>>) -> bool {
    matches!(tokio::time::timeout(SEND_TIMEOUT, write).await, Ok(Ok(())))
}

/// The `type` and `cid` of a frame refused before it was read whole (`too_large`).
#[derive(Default, serde::Deserialize)]
struct FrameHead {
    #[serde(rename = "type")]
    kind: Option<String>,
    cid: Option<String>,
}

/// Writes `frames`, then flushes once.
async fn write_batch(ws: &mut WebSocket, frames: VecDeque<Utf8Bytes>) -> Result<(), axum::Error> {
    for text in frames {
        ws.feed(Message::Text(text)).await?;
    }
    ws.flush().await
}

struct Session<'a> {
    conn: ConnId,
    shared: &'a Arc<Shared>,
    stun_host_port: String,
    /// Set once authenticated: its queue and probe signals.
    mailbox: Option<Arc<Mailbox>>,
    bucket: TokenBucket,
    refused_in_a_row: u32,
    failed_auth: u32,
    /// What ending the connection means for its live conversations: [`Departure::Lost`]
    /// unless the client closed on purpose or the server closed it by policy or shutdown.
    departure: Departure,
    /// Minted TURN credentials: when this authenticated connection gets its next one.
    turn_refresh: Option<TurnRefresh>,
}

/// The next `turn` frame of a connection.
struct TurnRefresh {
    /// When it is sent: half the credential's lifetime after the last one was minted.
    due: Instant,
    /// The uid it is minted for.
    uid: Box<str>,
}

async fn woken(mailbox: &Option<Arc<Mailbox>>) {
    match mailbox {
        Some(m) => m.wake.notified().await,
        None => std::future::pending().await,
    }
}

/// What a close frame from the client means. No code, 1000 (normal) or 1001 (going away,
/// e.g. the page is left) say the client is leaving: its calls end now. Any other code
/// (an error, 1002–1015, or an application's 3000–4999) says it is closing because
/// something went wrong, and will likely be back: its calls get the reconnect grace.
pub(crate) fn departure_of_close(code: Option<u16>) -> Departure {
    match code {
        None | Some(1000) | Some(1001) => Departure::Closed,
        Some(_) => Departure::Lost,
    }
}

/// Close reasons must fit a control frame (125 bytes with the code).
fn clip(mut reason: String) -> String {
    if reason.len() > 120 {
        let mut end = 120;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
    }
    reason
}

impl Session<'_> {
    async fn run(&mut self, ws: &mut WebSocket) -> CloseWith {
        let limits = &self.shared.config.limits;
        let opened = Instant::now();
        let mut last_heard = opened;
        let mut pinged = false;
        let timer = tokio::time::sleep_until(opened + limits.connect_timeout);
        tokio::pin!(timer);
        loop {
            tokio::select! {
                biased;
                _ = self.shared.shutdown.cancelled() => {
                    self.departure = Departure::Closed;
                    return Some((close_code::GOING_AWAY, "server shutting down".into()));
                }
                _ = self.shared.drain.cancelled() => {
                    // Lost, not closed: its calls wait the grace while it reconnects elsewhere.
                    self.departure = Departure::Lost;
                    return Some((close_code::SERVICE_RESTART, "node draining: reconnect".into()));
                }
                _ = woken(&self.mailbox) => {
                    let Some(mailbox) = self.mailbox.clone() else { continue };
                    match mailbox.close.load(Ordering::SeqCst) {
                        TOO_SLOW => {
                            self.departure = Departure::Closed;
                            return Some((close_code::POLICY, "too slow: outbound queue overflowed".into()));
                        }
                        // The router already handed its calls to another connection of its uid.
                        KICKED => return Some((close_code::GOING_AWAY, "no answer to a ping while another connection of this uid took the call over".into())),
                        _ => {}
                    }
                    if mailbox.ping.swap(false, Ordering::SeqCst) {
                        let ping = within_send_timeout(ws.send(Message::Ping(Default::default())));
                        if !Box::pin(ping).await {
                            return None;
                        }
                    }
                    let frames = mailbox.take();
                    if !frames.is_empty() && !Box::pin(within_send_timeout(write_batch(ws, frames))).await {
                        return None;
                    }
                }
                msg = ws.recv() => {
                    let now = Instant::now();
                    last_heard = now;
                    pinged = false;
                    // Only a message shows it is alive to a takeover probe: its socket's
                    // end or reset (the probe of a dropped client often meets it) does not.
                    if let Some(mailbox) = &self.mailbox
                        && matches!(msg, Some(Ok(_)))
                        && mailbox.probing.swap(false, Ordering::SeqCst)
                    {
                        mailbox.answered.notify_one();
                    }
                    let msg = match msg {
                        None => return None,
                        Some(Ok(msg)) => msg,
                        Some(Err(e)) => {
                            // A reset, or EOF without a close frame, is a lost connection
                            // (the default departure); an oversized frame is policy.
                            let reason = e.to_string();
                            let code = if reason.contains("too long") {
                                self.shared.metrics.frames_refused.inc();
                                self.departure = Departure::Closed;
                                close_code::TOO_BIG
                            } else {
                                close_code::PROTOCOL_ERROR
                            };
                            tracing::debug!(conn = self.conn, "socket error: {reason}");
                            return Some((code, clip(reason)));
                        }
                    };
                    let was_authenticated = self.mailbox.is_some();
                    if let Some(close) = Box::pin(self.on_message(ws, msg, now)).await {
                        return close;
                    }
                    if !was_authenticated && self.mailbox.is_some() {
                        // From now on the timer watches idleness (and the TURN credential's
                        // age), not the connect deadline.
                        timer.as_mut().reset(self.with_turn_refresh(now + limits.idle_timeout / 2));
                    }
                }
                _ = &mut timer => {
                    let now = Instant::now();
                    if self.mailbox.is_none() {
                        if now >= opened + limits.connect_timeout {
                            self.departure = Departure::Closed;
                            return Some((close_code::POLICY, format!(
                                "no successful connect within {:?}", limits.connect_timeout
                            )));
                        }
                        timer.as_mut().reset(opened + limits.connect_timeout);
                        continue;
                    }
                    if !Box::pin(self.refresh_turn(ws, now)).await {
                        return None;
                    }
                    let idle = limits.idle_timeout;
                    if now >= last_heard + idle {
                        // The peer stopped answering pings: lost, not gone on purpose.
                        return Some((close_code::GOING_AWAY, format!("idle for {idle:?}")));
                    }
                    if !pinged && now >= last_heard + idle / 2 {
                        pinged = true;
                        let ping = within_send_timeout(ws.send(Message::Ping(Default::default())));
                        if !Box::pin(ping).await {
                            return None;
                        }
                    }
                    let next = if pinged { last_heard + idle } else { last_heard + idle / 2 };
                    timer.as_mut().reset(self.with_turn_refresh(next));
                }
            }
        }
    }

    /// `at`, or the next TURN refresh if that comes first.
    fn with_turn_refresh(&self, at: Instant) -> Instant {
        self.turn_refresh.as_ref().map_or(at, |r| r.due.min(at))
    }

    /// Sends the client a fresh TURN credential when it is due (`turn`, our extension): the
    /// last one it got (`connack`, a forwarded `call` or `accept`, a `turn`) is then half
    /// through its lifetime. Whether the socket is still good.
    async fn refresh_turn(&mut self, ws: &mut WebSocket, now: Instant) -> bool {
        let (Some(refresh), Some(turn)) = (&mut self.turn_refresh, &self.shared.turn) else {
            return true;
        };
        if now < refresh.due {
            return true;
        }
        refresh.due = now + turn.ttl / 2;
        let frame = ServerFrame::Turn(turn.credential(&refresh.uid));
        tracing::trace!(conn = self.conn, "fresh TURN credential sent");
        self.reply(ws, &frame).await
    }

    /// Sends one frame straight to this socket (answers to this connection's own frames).
    async fn reply(&self, ws: &mut WebSocket, frame: &ServerFrame) -> bool {
        within_send_timeout(ws.send(Message::Text(Utf8Bytes::from(frame.to_json())))).await
    }

    async fn refuse(
        &self,
        ws: &mut WebSocket,
        cid: Option<String>,
        code: ErrorCode,
        reason: String,
        refers_to: Option<String>,
    ) -> Option<CloseWith> {
        self.shared.metrics.frames_refused.inc();
        let frame = error_frame(cid, code, reason, refers_to);
        if self.reply(ws, &frame).await { None } else { Some(None) }
    }

    /// Handles one message; `Some` ends the connection with that close.
    async fn on_message(
        &mut self,
        ws: &mut WebSocket,
        msg: Message,
        now: Instant,
    ) -> Option<CloseWith> {
        let text = match msg {
            Message::Text(text) => text,
            Message::Binary(_) => {
                match self.rate_limit(ws, now).await {
                    Ok(true) => {}
                    Ok(false) => return None,
                    Err(close) => return Some(close),
                }
                return self
                    .refuse(
                        ws,
                        None,
                        ErrorCode::Malformed,
                        "binary frames are not part of the protocol: send JSON text".into(),
                        None,
                    )
                    .await;
            }
            // Pongs and pings only keep the connection alive (tungstenite answers pings).
            Message::Ping(_) | Message::Pong(_) => return None,
            Message::Close(frame) => {
                let code = frame.as_ref().map(|f| f.code);
                self.departure = departure_of_close(code);
                tracing::debug!(conn = self.conn, ?code, departure = ?self.departure, "close frame from the client");
                return Some(None);
            }
        };
        match self.rate_limit(ws, now).await {
            Ok(true) => {}
            Ok(false) => return None,
            Err(close) => return Some(close),
        }
        let max = self.shared.config.limits.max_frame_bytes;
        if text.len() > max {
            // The error names the frame's cid and type when it has them, so that a client
            // whose `call` was refused ends it at once (as the call state machine does)
            // instead of waiting for its answer timeout. Only those two fields are kept.
            let head = serde_json::from_str::<FrameHead>(text.as_str()).unwrap_or_default();
            return self
                .refuse(
                    ws,
                    head.cid,
                    ErrorCode::TooLarge,
                    format!("frame of {} bytes is over the limit of {max} bytes", text.len()),
                    head.kind,
                )
                .await;
        }
        let frame = match ClientFrame::from_json(text.as_str()) {
            Ok(frame) => frame,
            Err(e) => {
                let refers_to = match &e {
                    FrameError::Malformed(_) => None,
                    FrameError::MissingField { kind, .. } | FrameError::BadMsg { kind, .. } => {
                        Some(kind.clone())
                    }
                };
                return self.refuse(ws, None, ErrorCode::Malformed, e.to_string(), refers_to).await;
            }
        };
        if self.mailbox.is_some() {
            self.shared.dispatch(self.conn, frame).await;
            return None;
        }
        match frame {
            ClientFrame::Connect(connect) => self.authenticate(ws, connect).await,
            ClientFrame::Heartbeat(_) => None,
            other => {
                let cid = match &other {
                    ClientFrame::Conversation { cid, .. } => Some(cid.clone()),
                    _ => None,
                };
                self.refuse(
                    ws,
                    cid,
                    ErrorCode::NotConnected,
                    "send `connect` with a valid token first".into(),
                    Some(other.kind().to_owned()),
                )
                .await
            }
        }
    }

    /// `Ok(true)`: go on; `Ok(false)`: drop the frame; `Err`: end the connection.
    async fn rate_limit(&mut self, ws: &mut WebSocket, now: Instant) -> Result<bool, CloseWith> {
        if self.bucket.take(now) {
            self.refused_in_a_row = 0;
            return Ok(true);
        }
        self.refused_in_a_row += 1;
        self.shared.metrics.frames_refused.inc();
        let limits = &self.shared.config.limits;
        if self.refused_in_a_row >= limits.rate_limit_burst {
            self.departure = Departure::Closed;
            return Err(Some((
                close_code::POLICY,
                format!("flood: over {} frames/s", limits.rate_limit_per_sec),
            )));
        }
        if self.refused_in_a_row == 1 {
            // One error per flood, not one per dropped frame.
            let frame = error_frame(
                None,
                ErrorCode::RateLimited,
                format!(
                    "over {} frames/s (burst {}): frames are dropped",
                    limits.rate_limit_per_sec, limits.rate_limit_burst
                ),
                None,
            );
            if !self.reply(ws, &frame).await {
                return Err(None);
            }
        }
        Ok(false)
    }

    async fn authenticate(
        &mut self,
        ws: &mut WebSocket,
        connect: wilddog_protocol::Connect,
    ) -> Option<CloseWith> {
        let shared = self.shared;
        match verify_token(&shared.config, &connect.app_id, &connect.token) {
            Ok(claims) => {
                let mailbox = Arc::new(Mailbox::new(shared.config.limits.outbound_queue_frames));
                let identity = (claims.app_id.as_str(), claims.uid.as_str(), connect.service);
                shared.register(self.conn, identity, mailbox.clone());
                self.mailbox = Some(mailbox);
                self.turn_refresh = shared.turn.as_ref().map(|turn| TurnRefresh {
                    due: Instant::now() + turn.ttl / 2,
                    uid: claims.uid.as_str().into(),
                });
                shared.metrics.authenticated.inc();
                tracing::debug!(
                    conn = self.conn,
                    app = claims.app_id,
                    uid = claims.uid,
                    service = connect.service,
                    "authenticated"
                );
                let connack = ServerFrame::Connack {
                    url: None,
                    msg: Connack {
                        code: connack_code::OK,
                        ice_servers: shared
                            .config
                            .connack_ice_servers(&self.stun_host_port, &claims.uid),
                        stopped: false,
                        app_id_invalid: false,
                        max_frame_bytes: u64::try_from(shared.config.limits.max_frame_bytes).ok(),
                        extra: Default::default(),
                    },
                };
                if self.reply(ws, &connack).await { None } else { Some(None) }
            }
            Err(e) => {
                shared.metrics.auth_failures.inc();
                self.failed_auth += 1;
                tracing::debug!(conn = self.conn, app = connect.app_id, "connect refused: {e}");
                let mut msg = Connack {
                    code: e.connack_code(),
                    app_id_invalid: matches!(e, AuthError::UnknownApp(_)),
                    ..Default::default()
                };
                msg.extra.insert("reason".into(), serde_json::Value::String(e.to_string()));
                if !self.reply(ws, &ServerFrame::Connack { url: None, msg }).await {
                    return Some(None);
                }
                if self.failed_auth >= shared.config.limits.max_failed_auth {
                    self.departure = Departure::Closed;
                    return Some(Some((
                        close_code::POLICY,
                        format!("{} failed connect attempts", self.failed_auth),
                    )));
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stun_host_follows_the_listener_or_the_host_header() {
        let v4: SocketAddr = "127.0.0.1:8930".parse().unwrap();
        assert_eq!(stun_host_port(v4, Some("example.com:1")), "127.0.0.1:8930");
        let any: SocketAddr = "0.0.0.0:8930".parse().unwrap();
        assert_eq!(stun_host_port(any, Some("192.168.1.5:8930")), "192.168.1.5:8930");
        assert_eq!(stun_host_port(any, Some("host.lan")), "host.lan:8930");
        assert_eq!(stun_host_port(any, None), "127.0.0.1:8930");
        let any6: SocketAddr = "[::]:9".parse().unwrap();
        assert_eq!(stun_host_port(any6, Some("[fe80::1]:9")), "[fe80::1]:9");
        let v6: SocketAddr = "[::1]:9".parse().unwrap();
        assert_eq!(stun_host_port(v6, None), "[::1]:9");
    }

    #[test]
    fn close_codes_that_mean_leaving_end_calls_at_once() {
        for code in [None, Some(1000), Some(1001)] {
            assert_eq!(departure_of_close(code), Departure::Closed, "{code:?}");
        }
        for code in [Some(1002), Some(1006), Some(1011), Some(3000), Some(4000), Some(4999)] {
            assert_eq!(departure_of_close(code), Departure::Lost, "{code:?}");
        }
    }

    #[test]
    fn token_bucket_allows_burst_then_rate() {
        let start = Instant::now();
        let mut b = TokenBucket::new(10, 3);
        b.last = start;
        assert!((0..3).all(|_| b.take(start)));
        assert!(!b.take(start));
        assert!(b.take(start + Duration::from_millis(100)));
        assert!(!b.take(start + Duration::from_millis(100)));
    }
}
