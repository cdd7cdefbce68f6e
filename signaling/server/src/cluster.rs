//! Several server nodes on one Redis (`serve --redis redis://HOST:PORT/`).
//!
//! Each node keeps its own pure [`Router`](crate::router::Router): the conversations it is
//! *home* of (those whose `call` came from one of its connections, or that it adopted), its
//! connections, and *links* (conversations of its connections homed elsewhere). Redis holds
//! only what nodes must find of each other, written by the node that owns it:
//!
//! | key | what | lifetime |
//! |---|---|---|
//! | `wd:node:{node}` | the node is alive | `node_ttl`, refreshed every `node_ttl / 4` |
//! | `wd:nodes` | set of node ids | members removed when their alive key is gone |
//! | `wd:p:{app}:{uid}` | hash: connection id → `c` (client) or `s` (service endpoint) | [`PRESENCE_TTL`], refreshed by every node with a connection of the uid |
//! | `wd:c:{app}:{cid}` | hash of a live conversation: `home`, `caller`, `caller_uid`, `callee`, `callee_uid` | [`RECORD_TTL`], refreshed by its home; deleted when it ends |
//! | channel `wd:n:{node}` | the node's bus: [`BusMsg`] in JSON | pub/sub |
//!
//! Frames between nodes go on the bus of the destination node: `Forward` (a party's frame to
//! the conversation's home), `Deliver` (the home's frame to a party's node), `Departed`,
//! `Probe`, `ProbeResult`. One writer task sends them in order, in pipelines, each with a
//! per-destination sequence number so that a batch sent again after a Redis error is not
//! delivered twice. A message whose destination is not subscribed (0 receivers) waits, in
//! order, until the node is back or declared dead.
//!
//! A node is dead when its alive key has expired (or it deleted it when it left), seen by a
//! node that has itself been connected to Redis for at least `node_ttl` (so that a Redis
//! restart, which forgets every key, kills nobody). The nodes holding parties of its
//! conversations then adopt them: a compare-and-set on the record's `home` picks one; the
//! others link to it. Parties that were on the dead node are placeholders in the reconnect
//! grace, so a client that comes back on any node within the grace keeps its call (its
//! `resume` finds the record), and one that does not gives its peer `bye` once.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use redis::aio::MultiplexedConnection;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use wilddog_protocol::{Body, ClientFrame, Empty, ServerFrame};

use crate::router::{Adoptee, ConnId, Departure, NodeId, node_of};
use crate::server::Shared;

/// How long a presence entry lives without a refresh.
pub const PRESENCE_TTL: Duration = Duration::from_secs(60);
/// How long a conversation record lives without a refresh.
pub const RECORD_TTL: Duration = Duration::from_secs(60);
/// How often a node rewrites its presence entries and records (well within their TTLs).
pub const REFRESH_EVERY: Duration = Duration::from_secs(15);
/// How long one Redis command may take before the node counts Redis as unreachable.
pub const REDIS_TIMEOUT: Duration = Duration::from_millis(1000);
/// Messages kept for the bus while Redis is unreachable (the oldest are dropped beyond).
pub const MAX_PENDING_WRITES: usize = 100_000;

/// Where a node's bus is.
fn channel(node: NodeId) -> String {
    format!("wd:n:{node}")
}

fn alive_key(node: NodeId) -> String {
    format!("wd:node:{node}")
}

/// Set by a node that left on purpose (drain), for a minute: it did not crash.
fn left_key(node: NodeId) -> String {
    format!("wd:left:{node}")
}

fn presence_key(app: &str, uid: &str) -> String {
    format!("wd:p:{app}:{uid}")
}

fn record_key(app: &str, cid: &str) -> String {
    format!("wd:c:{app}:{cid}")
}

/// A message between nodes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum BusMsg {
    /// From a conversation's home: deliver `frame` (a server frame's JSON) to connection
    /// `conn` of the receiving node.
    Deliver {
        /// The receiving node's connection.
        conn: ConnId,
        /// The frame, as sent on the WebSocket.
        frame: String,
    },
    /// To a conversation's home: `frame` (a client frame's JSON) from connection `conn` of
    /// the sending node, authenticated as `uid` of `app`.
    Forward {
        /// The sender's connection.
        conn: ConnId,
        /// Its app.
        app: String,
        /// Its uid.
        uid: String,
        /// Whether it is a service endpoint.
        service: bool,
        /// The frame, as received.
        frame: String,
    },
    /// Connection `conn` of the sending node left (lost: it may come back in the grace).
    Departed {
        /// The connection.
        conn: ConnId,
        /// Lost (grace) or closed on purpose.
        lost: bool,
    },
    /// Ping connection `conn` of the receiving node (a takeover probe) and answer.
    Probe {
        /// The connection.
        conn: ConnId,
    },
    /// The answer to a [`BusMsg::Probe`].
    ProbeResult {
        /// The connection.
        conn: ConnId,
        /// Whether it answered in time.
        answered: bool,
    },
}

/// A bus message with its sender and its sequence number from that sender to this node.
#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    from: NodeId,
    seq: u64,
    #[serde(flatten)]
    msg: BusMsg,
}

/// What the writer task sends to Redis, in order.
#[derive(Debug)]
pub(crate) enum Write {
    Publish { to: NodeId, msg: BusMsg },
    PresenceAdd { app: Arc<str>, uid: Arc<str>, conn: ConnId, service: bool },
    PresenceDel { app: Arc<str>, uid: Arc<str>, conn: ConnId },
    Record { app: Arc<str>, cid: Arc<str>, fields: RecordFields },
    Unrecord { app: Arc<str>, cid: Arc<str> },
}

/// The parties of a live conversation, as its record holds them.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RecordFields {
    pub caller: ConnId,
    pub caller_uid: Arc<str>,
    pub callee: ConnId,
    pub callee_uid: Arc<str>,
}

/// A record read back: its home and parties.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Record {
    pub home: NodeId,
    pub parties: RecordFields,
}

impl Record {
    fn from_hash(h: &HashMap<String, String>) -> Option<Self> {
        Some(Record {
            home: h.get("home")?.parse().ok()?,
            parties: RecordFields {
                caller: h.get("caller")?.parse().ok()?,
                caller_uid: Arc::from(h.get("caller_uid")?.as_str()),
                callee: h.get("callee")?.parse().ok()?,
                callee_uid: Arc::from(h.get("callee_uid")?.as_str()),
            },
        })
    }
}

/// Compare-and-set of a record's home: `home` becomes ARGV[2] if it is ARGV[1]. A record
/// that does not exist is created from ARGV[4..7] (caller, caller_uid, callee, callee_uid)
/// if they are given: a live call whose home died before it wrote the record. Returns the
/// record as it is afterwards (empty if there is none).
const ADOPT_SCRIPT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then
  if ARGV[4] ~= '' then
    redis.call('HSET', KEYS[1], 'home', ARGV[2], 'caller', ARGV[4], 'caller_uid', ARGV[5],
      'callee', ARGV[6], 'callee_uid', ARGV[7])
    redis.call('PEXPIRE', KEYS[1], ARGV[3])
  end
elseif redis.call('HGET', KEYS[1], 'home') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'home', ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return redis.call('HGETALL', KEYS[1])
";

/// The Redis side of a node.
pub(crate) struct Cluster {
    /// This node's id (the high bits of its connection ids).
    pub node: NodeId,
    client: redis::Client,
    /// The command connection, made again after an error.
    conn: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    writes: mpsc::UnboundedSender<Write>,
    writes_rx: Mutex<Option<mpsc::UnboundedReceiver<Write>>>,
    /// Nodes alive at the last heartbeat.
    alive: Mutex<HashSet<NodeId>>,
    /// Since when Redis has answered without error (`None`: unreachable now).
    connected_since: Mutex<Option<Instant>>,
    /// Last sequence number received from each node.
    seen: Mutex<HashMap<NodeId, u64>>,
    node_ttl: Duration,
    /// Whether the node left (drain): no more heartbeats.
    left: AtomicBool,
    /// Redis failed since the index was last written: write it all again (a restarted
    /// Redis forgot it).
    stale_index: AtomicBool,
    /// Frames forwarded to each node lately: a node that dies takes with it what it had not
    /// handled yet (PUBLISH counts a receiver that is already dead but not yet noticed by
    /// Redis), so these are handed to the conversations' new home when it dies.
    recent: Mutex<HashMap<NodeId, VecDeque<(Instant, BusMsg)>>>,
}

/// Forwarded frames kept per destination node, at most.
const RECENT_FORWARDS: usize = 10_000;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A random node id: below 2^31 (connection ids keep their top bit clear), not 0.
fn random_node_id() -> NodeId {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.write_u32(std::process::id());
    ((h.finish() as u32) & 0x7fff_ffff).max(1)
}

impl Cluster {
    /// A node on the Redis at `url`; connects lazily (a node starts while Redis is down).
    pub fn new(url: &str, node_ttl: Duration) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let (writes, rx) = mpsc::unbounded_channel();
        Ok(Cluster {
            node: random_node_id(),
            client,
            conn: tokio::sync::Mutex::new(None),
            writes,
            writes_rx: Mutex::new(Some(rx)),
            alive: Mutex::new(HashSet::new()),
            connected_since: Mutex::new(None),
            seen: Mutex::new(HashMap::new()),
            node_ttl,
            left: AtomicBool::new(false),
            stale_index: AtomicBool::new(true),
            recent: Mutex::new(HashMap::new()),
        })
    }

    /// Queues a write (in order with every other).
    pub fn write(&self, w: Write) {
        let _ = self.writes.send(w);
    }

    pub fn is_alive(&self, node: NodeId) -> bool {
        node == self.node || lock(&self.alive).contains(&node)
    }

    /// Whether Redis answers now.
    pub fn connected(&self) -> bool {
        lock(&self.connected_since).is_some()
    }

    /// Whether this node may declare others dead: connected for at least `node_ttl`, so
    /// that every live node had the time to write its alive key again after a Redis restart.
    fn settled(&self) -> bool {
        lock(&self.connected_since).is_some_and(|t| t.elapsed() >= self.node_ttl)
    }

    async fn connection(&self, shared: &Shared) -> Option<MultiplexedConnection> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            return Some(c.clone());
        }
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT));
        match self.client.get_multiplexed_async_connection_with_config(&config).await {
            Ok(c) => {
                *slot = Some(c.clone());
                Some(c)
            }
            Err(e) => {
                drop(slot);
                self.failed(shared, &e).await;
                None
            }
        }
    }

    /// Counts an error; the connection is made again next time.
    async fn failed(&self, shared: &Shared, e: &redis::RedisError) {
        shared.metrics.redis_errors.inc();
        self.stale_index.store(true, Ordering::SeqCst);
        let was = lock(&self.connected_since).take();
        shared.metrics.redis_connected.set(0);
        if was.is_some() {
            tracing::warn!(
                "Redis unreachable ({e}): degraded, routing only calls between this node's \
                 connections until it is back"
            );
        }
        if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() {
            *self.conn.lock().await = None;
        }
    }

    fn succeeded(&self, shared: &Shared) {
        let mut since = lock(&self.connected_since);
        if since.is_none() {
            *since = Some(Instant::now());
            shared.metrics.redis_connected.set(1);
            tracing::info!("Redis reachable");
        }
    }

    /// Runs a command or pipeline on the command connection; `None` on error (counted).
    async fn query<T: redis::FromRedisValue>(
        &self,
        shared: &Shared,
        cmd: impl AsyncQuery<T>,
    ) -> Option<T> {
        let mut c = self.connection(shared).await?;
        match tokio::time::timeout(REDIS_TIMEOUT, cmd.run(&mut c)).await {
            Ok(Ok(v)) => Some(v),
            Ok(Err(e)) => {
                self.failed(shared, &e).await;
                None
            }
            Err(_) => {
                let e = redis::RedisError::from((redis::ErrorKind::Io, "timed out"));
                self.failed(shared, &e).await;
                None
            }
        }
    }

    /// The connections of `uid` of `app` on other live nodes: (id, service).
    pub async fn presence(&self, shared: &Shared, app: &str, uid: &str) -> Vec<(ConnId, bool)> {
        if !self.connected() {
            // Degraded: no call waits for a Redis that does not answer.
            return Vec::new();
        }
        let key = presence_key(app, uid);
        let cmd = redis::cmd("HGETALL").arg(&key).to_owned();
        let Some(entries) = self.query::<HashMap<String, String>>(shared, cmd).await else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut stale = Vec::new();
        for (conn, kind) in entries {
            let Ok(conn) = conn.parse::<ConnId>() else { continue };
            let node = node_of(conn);
            if node == self.node {
                continue;
            }
            if self.is_alive(node) {
                out.push((conn, kind == "s"));
            } else if self.settled() {
                stale.push(conn);
            }
        }
        if !stale.is_empty() {
            // Entries of dead nodes: whoever reads them cleans them.
            let cmd = redis::cmd("HDEL").arg(&key).arg(stale).to_owned();
            let _ = self.query::<i64>(shared, cmd).await;
        }
        out.sort_unstable();
        out
    }

    /// The record of live conversation `cid` of `app`, if any.
    pub async fn record(
        &self,
        shared: &Shared,
        app: &str,
        cid: &str,
    ) -> Result<Option<Record>, ()> {
        if !self.connected() {
            return Err(());
        }
        let cmd = redis::cmd("HGETALL").arg(record_key(app, cid)).to_owned();
        let h = self.query::<HashMap<String, String>>(shared, cmd).await.ok_or(())?;
        Ok(Record::from_hash(&h))
    }

    /// Makes this node the home of `cid` if its home is still `dead` (or, when there is no
    /// record and `missing` gives the parties, creates it); the record afterwards.
    pub async fn claim_home(
        &self,
        shared: &Shared,
        (app, cid): (&str, &str),
        dead: NodeId,
        missing: Option<&RecordFields>,
    ) -> Result<Option<Record>, ()> {
        let script = redis::Script::new(ADOPT_SCRIPT);
        let mut inv = script.prepare_invoke();
        inv.key(record_key(app, cid)).arg(dead).arg(self.node).arg(RECORD_TTL.as_millis() as u64);
        match missing {
            Some(f) => inv.arg(f.caller).arg(&*f.caller_uid).arg(f.callee).arg(&*f.callee_uid),
            None => inv.arg("").arg("").arg("").arg(""),
        };
        let mut c = self.connection(shared).await.ok_or(())?;
        let r: redis::RedisResult<HashMap<String, String>> =
            match tokio::time::timeout(REDIS_TIMEOUT, inv.invoke_async(&mut c)).await {
                Ok(r) => r,
                Err(_) => Err(redis::RedisError::from((redis::ErrorKind::Io, "timed out"))),
            };
        match r {
            Ok(h) => Ok(Record::from_hash(&h)),
            Err(e) => {
                self.failed(shared, &e).await;
                Err(())
            }
        }
    }

    /// Who a party of a record is, seen from this node.
    pub fn adoptee(&self, conn: ConnId, dead: NodeId) -> Adoptee {
        let node = node_of(conn);
        if node == self.node {
            Adoptee::Local(conn)
        } else if node != dead && self.is_alive(node) {
            Adoptee::Remote(conn)
        } else {
            Adoptee::Gone
        }
    }

    /// Leaves the cluster (drain): the alive key goes, so other nodes adopt this node's
    /// conversations at once instead of after `node_ttl`.
    pub async fn leave(&self, shared: &Shared) {
        self.left.store(true, Ordering::SeqCst);
        let mut pipe = redis::pipe();
        pipe.del(alive_key(self.node))
            .ignore()
            .srem("wd:nodes", self.node)
            .ignore()
            .cmd("SET")
            .arg(left_key(self.node))
            .arg(1)
            .arg("PX")
            .arg(60_000)
            .ignore();
        let _ = self.query::<()>(shared, pipe).await;
    }

    /// Keeps a frame forwarded to `to` for a while (see `recent`).
    fn sent(&self, to: NodeId, msg: &BusMsg) {
        if !matches!(msg, BusMsg::Forward { .. }) {
            return;
        }
        let now = Instant::now();
        let keep = self.node_ttl + Duration::from_secs(1);
        let mut recent = lock(&self.recent);
        let q = recent.entry(to).or_default();
        while q.front().is_some_and(|(t, _)| now.duration_since(*t) > keep)
            || q.len() >= RECENT_FORWARDS
        {
            q.pop_front();
        }
        q.push_back((now, msg.clone()));
    }

    /// The frames forwarded lately to `node`, which died.
    fn take_recent(&self, node: NodeId) -> VecDeque<(Instant, BusMsg)> {
        lock(&self.recent).remove(&node).unwrap_or_default()
    }

    /// Takes a bus message in: `None` if it was seen already (a batch sent again).
    fn accept(&self, env: Envelope) -> Option<(NodeId, BusMsg)> {
        let mut seen = lock(&self.seen);
        let last = seen.entry(env.from).or_insert(0);
        if env.seq <= *last {
            return None;
        }
        if env.seq > *last + 1 && *last != 0 {
            tracing::warn!(from = env.from, "bus: {} messages lost", env.seq - *last - 1);
        }
        *last = env.seq;
        Some((env.from, env.msg))
    }
}

/// A Redis command or pipeline run asynchronously.
trait AsyncQuery<T> {
    fn run(
        &self,
        c: &mut MultiplexedConnection,
    ) -> impl std::future::Future<Output = redis::RedisResult<T>> + Send;
}

impl<T: redis::FromRedisValue + Send> AsyncQuery<T> for redis::Cmd {
    async fn run(&self, c: &mut MultiplexedConnection) -> redis::RedisResult<T> {
        self.query_async(c).await
    }
}

impl<T: redis::FromRedisValue + Send> AsyncQuery<T> for redis::Pipeline {
    async fn run(&self, c: &mut MultiplexedConnection) -> redis::RedisResult<T> {
        self.query_async(c).await
    }
}

/// Starts the node's Redis tasks: the writer, the bus subscriber, the heartbeat.
pub(crate) fn start(shared: &Arc<Shared>) {
    let Some(cluster) = shared.cluster.as_ref() else { return };
    let Some(rx) = lock(&cluster.writes_rx).take() else { return };
    tokio::spawn(writer(shared.clone(), rx));
    tokio::spawn(subscriber(shared.clone()));
    tokio::spawn(heartbeat(shared.clone()));
}

/// Sends the queued writes in order, a pipeline per batch; keeps them through Redis
/// outages; holds the bus messages of a node that does not listen until it does or dies.
async fn writer(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<Write>) {
    let Some(cluster) = shared.cluster.as_ref() else { return };
    let mut seq: HashMap<NodeId, u64> = HashMap::new();
    // Envelopes not yet delivered, per destination, in order.
    let mut stalled: HashMap<NodeId, VecDeque<(String, BusMsg)>> = HashMap::new();
    // A batch that failed: sent again as it is (same sequence numbers).
    let mut retry: Vec<Prepared> = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let mut batch: Vec<Prepared> = std::mem::take(&mut retry);
        let retrying = !batch.is_empty();
        if retrying {
            tick.tick().await;
            // Everything queued meanwhile waits with it, the oldest dropped past the bound.
            while let Ok(w) = rx.try_recv() {
                batch.push(prepare(cluster, &mut seq, w));
            }
            if batch.len() > MAX_PENDING_WRITES {
                let drop = batch.len() - MAX_PENDING_WRITES;
                batch.drain(..drop);
                tracing::warn!("Redis unreachable: {drop} writes dropped");
            }
        } else {
            tokio::select! {
                w = rx.recv() => {
                    let Some(w) = w else { return };
                    batch.push(prepare(cluster, &mut seq, w));
                    while batch.len() < 512 {
                        match rx.try_recv() {
                            Ok(w) => batch.push(prepare(cluster, &mut seq, w)),
                            Err(_) => break,
                        }
                    }
                }
                _ = tick.tick() => {}
            }
        }
        // Messages to a node that has messages waiting wait behind them.
        let mut sendable = Vec::with_capacity(batch.len());
        for p in batch {
            match p {
                Prepared::Publish { to, text, msg } if stalled.contains_key(&to) => {
                    stalled.entry(to).or_default().push_back((text, msg));
                }
                other => sendable.push(other),
            }
        }
        // Waiting messages first, each queue until its first refusal.
        let mut order: Vec<Prepared> = Vec::new();
        for (to, q) in &stalled {
            for (text, msg) in q {
                order.push(Prepared::Publish { to: *to, text: text.clone(), msg: msg.clone() });
            }
        }
        let from_stalled = order.len();
        order.extend(sendable);
        if order.is_empty() {
            resolve_dead(&shared, cluster, &mut stalled).await;
            continue;
        }
        let mut pipe = redis::pipe();
        for p in &order {
            p.add_to(&mut pipe);
        }
        let counts: Option<Vec<redis::Value>> = cluster.query(&shared, pipe).await;
        let Some(counts) = counts else {
            // Redis unreachable: keep everything, in order, for later (waiting messages
            // stay where they are).
            retry = order.into_iter().skip(from_stalled).collect();
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        cluster.succeeded(&shared);
        // Publishes come back as receiver counts: 0 means nobody listens on that bus.
        let mut results = counts.into_iter();
        let mut newly_stalled: HashMap<NodeId, VecDeque<(String, BusMsg)>> = HashMap::new();
        let mut delivered_from: HashMap<NodeId, usize> = HashMap::new();
        for (i, p) in order.into_iter().enumerate() {
            let Prepared::Publish { to, text, msg } = p else {
                results.next();
                continue;
            };
            let received = matches!(results.next(), Some(redis::Value::Int(n)) if n > 0);
            let blocked = newly_stalled.contains_key(&to);
            if i < from_stalled {
                if received && !blocked {
                    *delivered_from.entry(to).or_default() += 1;
                } else {
                    newly_stalled.entry(to).or_default();
                }
                continue;
            }
            if received && !blocked && !stalled.contains_key(&to) {
                if matches!(msg, BusMsg::Deliver { .. } | BusMsg::Forward { .. }) {
                    shared.metrics.cross_node_frames.inc();
                }
                cluster.sent(to, &msg);
            } else {
                newly_stalled.entry(to).or_default().push_back((text, msg));
            }
        }
        // Drop what the waiting queues delivered; append the newly refused.
        for (to, n) in delivered_from {
            if let Some(q) = stalled.get_mut(&to) {
                for _ in 0..n {
                    if let Some((_, msg)) = q.pop_front()
                        && matches!(msg, BusMsg::Deliver { .. } | BusMsg::Forward { .. })
                    {
                        shared.metrics.cross_node_frames.inc();
                        cluster.sent(to, &msg);
                    }
                }
            }
        }
        stalled.retain(|_, q| !q.is_empty());
        for (to, q) in newly_stalled {
            let entry = stalled.entry(to).or_default();
            entry.extend(q);
            if entry.is_empty() {
                stalled.remove(&to);
            }
        }
        resolve_dead(&shared, cluster, &mut stalled).await;
    }
}

/// A write made ready for a pipeline.
enum Prepared {
    Publish { to: NodeId, text: String, msg: BusMsg },
    Other(redis::Pipeline),
}

impl Prepared {
    fn add_to(&self, pipe: &mut redis::Pipeline) {
        match self {
            Prepared::Publish { to, text, .. } => {
                pipe.publish(channel(*to), text);
            }
            Prepared::Other(p) => {
                // One reply per pipeline entry: the first command answers, the rest are
                // ignored.
                for (i, cmd) in p.cmd_iter().enumerate() {
                    pipe.add_command(cmd.clone());
                    if i > 0 {
                        pipe.ignore();
                    }
                }
            }
        }
    }
}

fn prepare(cluster: &Cluster, seq: &mut HashMap<NodeId, u64>, w: Write) -> Prepared {
    let ms = |d: Duration| d.as_millis() as u64;
    match w {
        Write::Publish { to, msg } => {
            let n = seq.entry(to).or_insert(0);
            *n += 1;
            let env = Envelope { from: cluster.node, seq: *n, msg };
            let text = serde_json::to_string(&env).unwrap_or_default();
            Prepared::Publish { to, text, msg: env.msg }
        }
        Write::PresenceAdd { app, uid, conn, service } => {
            let key = presence_key(&app, &uid);
            let mut p = redis::pipe();
            p.hset(&key, conn, if service { "s" } else { "c" })
                .pexpire(&key, ms(PRESENCE_TTL) as i64);
            Prepared::Other(p)
        }
        Write::PresenceDel { app, uid, conn } => {
            let mut p = redis::pipe();
            p.hdel(presence_key(&app, &uid), conn);
            Prepared::Other(p)
        }
        Write::Record { app, cid, fields } => {
            let key = record_key(&app, &cid);
            let mut p = redis::pipe();
            p.hset_multiple(
                &key,
                &[
                    ("home", cluster.node.to_string()),
                    ("caller", fields.caller.to_string()),
                    ("caller_uid", fields.caller_uid.to_string()),
                    ("callee", fields.callee.to_string()),
                    ("callee_uid", fields.callee_uid.to_string()),
                ],
            )
            .pexpire(&key, ms(RECORD_TTL) as i64);
            Prepared::Other(p)
        }
        Write::Unrecord { app, cid } => {
            let mut p = redis::pipe();
            p.del(record_key(&app, &cid));
            Prepared::Other(p)
        }
    }
}

/// The messages waiting for nodes that are now dead: frames for their connections are
/// kept for those parties (reconnect grace), frames for conversations they were home of
/// go to the conversation's new home once adopted.
async fn resolve_dead(
    shared: &Arc<Shared>,
    cluster: &Cluster,
    stalled: &mut HashMap<NodeId, VecDeque<(String, BusMsg)>>,
) {
    if !cluster.settled() {
        return;
    }
    let dead: Vec<NodeId> = stalled.keys().copied().filter(|n| !cluster.is_alive(*n)).collect();
    for node in dead {
        let Some(q) = stalled.remove(&node) else { continue };
        node_dead(shared, node).await;
        let now = std::time::Instant::now();
        for (_, msg) in q {
            match msg {
                BusMsg::Deliver { conn, frame } => {
                    let Ok(frame) = ServerFrame::from_json(&frame) else { continue };
                    shared.route(|r| r.undeliverable(conn, frame, now));
                }
                BusMsg::Forward { conn, frame, .. } => {
                    // Adopted meanwhile: the router finds its new place.
                    let Ok(frame) = ClientFrame::from_json(&frame) else { continue };
                    shared.route(|r| r.handle(conn, frame, now));
                }
                BusMsg::Probe { conn } => shared.route(|r| r.probe_result(conn, false, now)),
                BusMsg::Departed { .. } | BusMsg::ProbeResult { .. } => {}
            }
        }
    }
}

/// Node `node` died: its connections that were parties here are lost; the conversations it
/// was home of that have a party here are adopted (here, or by the node that won the
/// record), or end for the local party if the record is gone.
pub(crate) async fn node_dead(shared: &Arc<Shared>, node: NodeId) {
    node_gone(shared, node, false).await;
}

/// [`node_dead`]; `crashed`: it did not leave (its alive key expired), so the frames
/// forwarded to it lately may have died with it and go to the new homes.
async fn node_gone(shared: &Arc<Shared>, node: NodeId, crashed: bool) {
    let Some(cluster) = shared.cluster.as_ref() else { return };
    if node == cluster.node {
        return;
    }
    lock(&cluster.alive).remove(&node);
    tracing::info!(node, "node gone: its parties wait the reconnect grace, its calls are adopted");
    let now = std::time::Instant::now();
    shared.route(|r| r.node_dead(node, now));
    for link in shared.hub_links_to(node) {
        // A callee that accepted here knows the call is live, record or not.
        let missing = link.accepted_callee.as_ref().map(|me| RecordFields {
            caller: 0,
            caller_uid: link.peer.clone(),
            callee: link.conn,
            callee_uid: me.clone(),
        });
        let what = (&*link.app, &*link.cid, &*link.peer);
        adopt_or_link(shared, cluster, link.conn, what, node, missing.as_ref()).await;
    }
    // A node that crashed may have taken frames forwarded to it just before with it
    // (PUBLISH counted it as a receiver): they go to the new homes again. A frame it had
    // handled may arrive twice; the refusals of those the new home already has are dropped.
    let replay = if crashed { cluster.take_recent(node) } else { VecDeque::new() };
    lock(&cluster.recent).remove(&node);
    if !replay.is_empty() {
        tracing::debug!(node, frames = replay.len(), "forwarded frames handed to the new homes");
    }
    for (_, msg) in replay {
        if let BusMsg::Forward { conn, frame, .. } = msg
            && let Ok(frame) = ClientFrame::from_json(&frame)
        {
            shared.route(|r| {
                let mut out = r.handle(conn, frame, now);
                out.retain(|(to, f)| !(*to == conn && matches!(f, ServerFrame::Error { .. })));
                out
            });
        }
    }
}

/// Resolves the link of local connection `conn` to conversation `cid` of `app` (with
/// `peer`), whose home `dead` died.
async fn adopt_or_link(
    shared: &Arc<Shared>,
    cluster: &Cluster,
    conn: ConnId,
    (app, cid, peer): (&str, &str, &str),
    dead: NodeId,
    missing: Option<&RecordFields>,
) {
    let now = std::time::Instant::now();
    match cluster.claim_home(shared, (app, cid), dead, missing).await {
        Ok(Some(rec)) if rec.home == cluster.node => {
            let p = &rec.parties;
            let caller = (cluster.adoptee(p.caller, dead), &*p.caller_uid);
            let callee = (cluster.adoptee(p.callee, dead), &*p.callee_uid);
            tracing::debug!(cid, "adopted a conversation of a dead node");
            shared.route(|r| {
                r.adopt(app, cid, caller, callee, now);
                Vec::new()
            });
        }
        Ok(Some(rec)) if cluster.is_alive(rec.home) => {
            shared.route(|r| {
                r.link(conn, cid, rec.home, peer);
                Vec::new()
            });
        }
        Ok(_) => {
            // No live conversation: it was ringing, or it ended. The local party hears bye.
            let bye = ServerFrame::Conversation {
                cid: cid.to_owned(),
                from: peer.to_owned(),
                body: Body::Bye(Empty::default()),
            };
            shared.route(|r| r.deliver(conn, dead, bye).unwrap_or_default());
        }
        Err(()) => {}
    }
}

/// Where a local connection's frame on an unknown conversation goes: after this, the
/// router has the conversation here, a link to its home, or nothing (it is unknown).
pub(crate) async fn find_conversation(
    shared: &Arc<Shared>,
    conn: ConnId,
    (app, cid, peer): (&str, &str, &str),
) {
    let Some(cluster) = shared.cluster.as_ref() else { return };
    let Ok(Some(rec)) = cluster.record(shared, app, cid).await else { return };
    if rec.home == cluster.node {
        return; // ours but forgotten: the router re-creates it
    }
    if cluster.is_alive(rec.home) {
        shared.route(|r| {
            r.link(conn, cid, rec.home, peer);
            Vec::new()
        });
    } else if cluster.settled() {
        node_dead(shared, rec.home).await;
        adopt_or_link(shared, cluster, conn, (app, cid, peer), rec.home, None).await;
    }
}

/// Reads this node's bus and hands each message to the node.
async fn subscriber(shared: Arc<Shared>) {
    let Some(cluster) = shared.cluster.as_ref() else { return };
    let mut backoff = Duration::from_millis(100);
    loop {
        if shared.shutdown.is_cancelled() {
            return;
        }
        let pubsub = tokio::time::timeout(REDIS_TIMEOUT, cluster.client.get_async_pubsub()).await;
        let mut pubsub = match pubsub {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                cluster.failed(&shared, &e).await;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
            Err(_) => {
                tokio::time::sleep(backoff).await;
                continue;
            }
        };
        if let Err(e) = pubsub.subscribe(channel(cluster.node)).await {
            cluster.failed(&shared, &e).await;
            tokio::time::sleep(backoff).await;
            continue;
        }
        backoff = Duration::from_millis(100);
        tracing::debug!(node = cluster.node, "listening on the bus");
        let mut messages = pubsub.into_on_message();
        loop {
            tokio::select! {
                _ = shared.shutdown.cancelled() => return,
                m = messages.next() => {
                    let Some(m) = m else { break };
                    let Ok(env) = serde_json::from_slice::<Envelope>(m.get_payload_bytes()) else {
                        tracing::warn!("bus: unreadable message dropped");
                        continue;
                    };
                    if let Some((from, msg)) = cluster.accept(env) {
                        on_bus(&shared, from, msg);
                    }
                }
            }
        }
        tracing::warn!("bus subscription lost; subscribing again");
    }
}

/// One message from node `from`.
fn on_bus(shared: &Arc<Shared>, from: NodeId, msg: BusMsg) {
    let now = std::time::Instant::now();
    match msg {
        BusMsg::Deliver { conn, frame } => {
            let Ok(frame) = ServerFrame::from_json(&frame) else { return };
            let mut gone = false;
            shared.route(|r| {
                r.deliver(conn, from, frame).unwrap_or_else(|| {
                    gone = true;
                    Vec::new()
                })
            });
            if gone {
                shared.publish(from, BusMsg::Departed { conn, lost: true });
            }
        }
        BusMsg::Forward { conn, app, uid, service, frame } => {
            let Ok(frame) = ClientFrame::from_json(&frame) else { return };
            shared.route(|r| {
                r.connect_remote(conn, &app, &uid, service);
                let out = r.handle(conn, frame, now);
                r.release_if_idle(conn);
                out
            });
        }
        BusMsg::Departed { conn, lost } => {
            let departure = if lost { Departure::Lost } else { Departure::Closed };
            shared.route(|r| r.disconnect(conn, departure, now).0);
        }
        BusMsg::Probe { conn } => shared.probe_for(conn, from),
        BusMsg::ProbeResult { conn, answered } => {
            shared.route(|r| r.probe_result(conn, answered, now));
        }
    }
}

/// Keeps the node's alive key, learns which nodes are alive, declares the dead ones,
/// refreshes presence and records, and writes them all again after Redis comes back.
async fn heartbeat(shared: Arc<Shared>) {
    let Some(cluster) = shared.cluster.as_ref() else { return };
    let every = (cluster.node_ttl / 4).max(Duration::from_millis(50));
    let mut last_refresh: Option<Instant> = None;
    loop {
        if cluster.left.load(Ordering::SeqCst) || shared.shutdown.is_cancelled() {
            return;
        }
        let started = Instant::now();
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(alive_key(cluster.node))
            .arg(1)
            .arg("PX")
            .arg(cluster.node_ttl.as_millis() as u64)
            .ignore()
            .sadd("wd:nodes", cluster.node)
            .ignore()
            .smembers("wd:nodes");
        let members: Option<(Vec<NodeId>,)> = cluster.query(&shared, pipe).await;
        if let Some((members,)) = members {
            cluster.succeeded(&shared);
            let keys: Vec<String> = members.iter().map(|n| alive_key(*n)).collect();
            let cmd = redis::cmd("MGET").arg(&keys).to_owned();
            if let Some(flags) = cluster.query::<Vec<Option<String>>>(&shared, cmd).await {
                shared.metrics.redis_rtt.observe(started.elapsed().as_secs_f64() / 2.0);
                let now_alive: HashSet<NodeId> = members
                    .iter()
                    .zip(flags)
                    .filter(|(_, f)| f.is_some())
                    .map(|(n, _)| *n)
                    .collect();
                let gone: Vec<NodeId> = {
                    let alive = lock(&cluster.alive);
                    alive.iter().copied().filter(|n| !now_alive.contains(n)).collect()
                };
                let dead_members: Vec<NodeId> =
                    members.iter().copied().filter(|n| !now_alive.contains(n)).collect();
                *lock(&cluster.alive) = now_alive;
                if cluster.settled() {
                    for node in gone {
                        // A node that left on purpose says so; one that did not crashed.
                        let cmd = redis::cmd("EXISTS").arg(left_key(node)).to_owned();
                        let left = cluster.query::<i64>(&shared, cmd).await.unwrap_or(1) > 0;
                        node_gone(&shared, node, !left).await;
                    }
                    if !dead_members.is_empty() {
                        let cmd = redis::cmd("SREM").arg("wd:nodes").arg(dead_members).to_owned();
                        let _ = cluster.query::<i64>(&shared, cmd).await;
                    }
                }
            }
            let stale = cluster.stale_index.swap(false, Ordering::SeqCst);
            if stale || last_refresh.is_none_or(|t| t.elapsed() >= REFRESH_EVERY) {
                if stale && last_refresh.is_some() {
                    tracing::info!("presence and records written back to Redis");
                }
                shared.rewrite_index();
                last_refresh = Some(Instant::now());
            }
        }
        let elapsed = started.elapsed();
        tokio::time::sleep(every.saturating_sub(elapsed)).await;
    }
}
