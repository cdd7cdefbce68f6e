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
//! | `wd:c:{app}:{cid}` | hash of a live conversation: `home`, `caller`, `caller_uid`, `callee`, `callee_uid`, and `unproven` (`caller` or `callee`) while it is provisional (re-created by one party's resume, the party of that role not shown yet; absent: not provisional) | [`RECORD_TTL`], refreshed by its home; deleted when it ends |
//! | `wd:sv:{app}:{uid}` | hash of a pool of service endpoints: `b:{conn}` → `{home}|{cid}` (claimed for that call), `u:{conn}` → when it was last claimed (a counter, `n`) | a day after the last claim; an endpoint's fields go when it disconnects |
//! | `wd:a:{app}:{uid}` | set of the nodes where a party of the uid waits, away (lost, or a placeholder) | the reconnect grace and a minute, from the last add |
//! | `wd:s:{node}` | stream: the node's inbox, [`BusMsg`]s in JSON (field `m`) | entries trimmed as the node reads them; the key expires [`stream_ttl`] after the node's last heartbeat |
//!
//! Frames between nodes go to the inbox of the destination node: `Forward` (a party's frame
//! to the conversation's home), `Deliver` (the home's frame to a party's node), `Departed`,
//! `Probe`, `ProbeResult`. One writer task adds them (`XADD`) in order, in pipelines of at
//! most [`PIPELINE_WRITES`], each with a per-destination sequence number so that a batch
//! sent again after a Redis error is not delivered twice. One reader task per node reads
//! its inbox (`XREAD BLOCK`) from the last entry it handled and trims what it handled
//! (`XTRIM MINID`) in the same round trip. A stream, unlike pub/sub, loses nothing when a
//! node reads slowly (Redis drops a pub/sub subscriber whose output buffer passes its limit,
//! and the messages with it), nothing while its reader reconnects, and keeps what a node
//! that died had not handled.
//!
//! A node is dead when its alive key has expired (or it deleted it when it left), seen by a
//! node that has itself been connected to Redis for at least `node_ttl` (so that a Redis
//! restart, which forgets every key, kills nobody). Each node then, in its writer (so in
//! order with every frame it sends): reads what it had sent to the dead node that is still
//! in its inbox; adopts the conversations of the dead node that have a party here (a
//! compare-and-set on the record's `home` picks one node; the others link to it); and hands
//! what the dead node had not handled to the conversations' new homes (frames for the dead
//! node's connections wait for them, in the reconnect grace), before anything sent later.
//! A frame the dead node had handled but not yet trimmed is relayed twice: conversation
//! frames carry their sender's [`Stamp`](crate::router::Stamp), and the recipient's node
//! drops a stamp it delivered already, so each frame reaches the other party once and in
//! order. Parties that were on the dead node are placeholders in the reconnect grace, so a
//! client that comes back on any node within the grace keeps its call (its `resume` finds
//! the record), and one that does not gives its peer `bye` once.
//!
//! A node where a connection of a uid authenticates tells the nodes that await that uid
//! (`wd:a:…`, `Arrived`): the away party's conversations pass to it and the frames queued
//! for it are delivered at once, as on one node, not only when it resumes.
//!
//! A `call` to a pool of service endpoints claims one endpoint in Redis (one script: the
//! free endpoint claimed least recently, marked claimed for the call), so two nodes never
//! give one endpoint two calls, and a caller beyond the pool gets `busy` wherever it is
//! connected. The home of the call releases the claim when the call ends; a claim whose home
//! is dead and whose conversation has no record is free.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::streams::{StreamRangeReply, StreamReadReply};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use wilddog_protocol::{Body, ClientFrame, Empty, Role, ServerFrame};

use crate::router::{
    Adoptee, ConnId, Departure, LinkedConversation, NodeId, Router, Stamp, node_of,
};
use crate::server::Shared;

/// How long a presence entry lives without a refresh.
pub const PRESENCE_TTL: Duration = Duration::from_secs(60);
/// How long a conversation record lives without a refresh.
pub const RECORD_TTL: Duration = Duration::from_secs(60);
/// How often a node rewrites its presence entries and records (well within their TTLs).
pub const REFRESH_EVERY: Duration = Duration::from_secs(15);
/// How long one Redis command may take before the node counts Redis as unreachable.
pub const REDIS_TIMEOUT: Duration = Duration::from_millis(1000);
/// Writes kept while Redis is unreachable (the oldest are dropped beyond).
pub const MAX_PENDING_WRITES: usize = 100_000;
/// Writes sent in one pipeline at most: a backlog goes out in round trips of this size,
/// each well within [`REDIS_TIMEOUT`] (one huge pipeline after an outage could take longer,
/// fail, and be sent again, bigger, forever).
pub const PIPELINE_WRITES: usize = 512;
/// Inbox entries read at once.
const READ_COUNT: usize = 512;
/// How long the reader's `XREAD` waits for an entry.
const READ_BLOCK: Duration = Duration::from_millis(1000);
/// The reader trims its inbox after this many entries handled, or this long after the
/// first one handled since the last trim.
const TRIM_EVERY_ENTRIES: usize = 256;
const TRIM_EVERY: Duration = Duration::from_millis(50);
/// Entries an inbox keeps at most (approximately): a node this far behind is lost anyway.
const MAX_INBOX_ENTRIES: usize = 200_000;

/// How long a node's inbox outlives its last heartbeat: long enough for the other nodes to
/// declare it dead and read what they had sent it.
pub fn stream_ttl(node_ttl: Duration) -> Duration {
    Duration::from_secs(60).max(node_ttl.saturating_mul(10))
}

fn inbox_key(node: NodeId) -> String {
    format!("wd:s:{node}")
}

fn alive_key(node: NodeId) -> String {
    format!("wd:node:{node}")
}

fn presence_key(app: &str, uid: &str) -> String {
    format!("wd:p:{app}:{uid}")
}

fn record_key(app: &str, cid: &str) -> String {
    format!("wd:c:{app}:{cid}")
}

fn pool_key(app: &str, uid: &str) -> String {
    format!("wd:sv:{app}:{uid}")
}

fn awaits_key(app: &str, uid: &str) -> String {
    format!("wd:a:{app}:{uid}")
}

/// How long a pool's hash lives after its last claim.
const POOL_TTL: Duration = Duration::from_secs(24 * 3600);

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
        /// The stamp of the frame it relays, if it relays one: the receiving node drops a
        /// stamp its connection had already.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stamp: Option<Stamp>,
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
        /// Its number on `conn` (its [`Stamp`] is `(conn, number)`).
        number: u64,
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
    /// Connection `conn` of the sending node authenticated as `uid` of `app`, which the
    /// receiving node [awaits](crate::router::Effect::Awaits).
    Arrived {
        /// The connection.
        conn: ConnId,
        /// Its app.
        app: String,
        /// Its uid.
        uid: String,
        /// Whether it is a service endpoint.
        service: bool,
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
    Publish {
        to: NodeId,
        msg: BusMsg,
    },
    PresenceAdd {
        app: Arc<str>,
        uid: Arc<str>,
        conn: ConnId,
        service: bool,
    },
    PresenceDel {
        app: Arc<str>,
        uid: Arc<str>,
        conn: ConnId,
        service: bool,
    },
    Record {
        app: Arc<str>,
        cid: Arc<str>,
        fields: RecordFields,
    },
    Unrecord {
        app: Arc<str>,
        cid: Arc<str>,
    },
    /// Release the service endpoint claimed for conversation `cid`.
    Unclaim {
        app: Arc<str>,
        uid: Arc<str>,
        cid: Arc<str>,
    },
    /// A party of `uid` waits here, away, for `ttl`.
    Awaits {
        app: Arc<str>,
        uid: Arc<str>,
        ttl: Duration,
    },
    /// Node `node` is dead: take over what it left, after everything queued before.
    NodeGone {
        node: NodeId,
        done: Option<oneshot::Sender<()>>,
    },
    /// Say when everything queued before is sent.
    Flush {
        done: oneshot::Sender<()>,
    },
}

/// The parties of a live conversation, as its record holds them.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RecordFields {
    pub caller: ConnId,
    pub caller_uid: Arc<str>,
    pub callee: ConnId,
    pub callee_uid: Arc<str>,
    /// The conversation is provisional, the party of this role not shown yet
    /// ([`Effect::Record`](crate::router::Effect::Record)): field `unproven`. A record
    /// without it (written by an older node) is not provisional.
    pub unproven: Option<Role>,
}

/// The value of a record's `unproven` field.
fn role_field(role: Role) -> &'static str {
    match role {
        Role::Caller => "caller",
        Role::Callee => "callee",
    }
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
                unproven: match h.get("unproven").map(String::as_str) {
                    Some("caller") => Some(Role::Caller),
                    Some("callee") => Some(Role::Callee),
                    _ => None,
                },
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

/// Claims a free service endpoint of a pool (KEYS[1], [`pool_key`]) for a call: among the
/// candidates ARGV[5..], the one claimed least recently (then the first given) that is not
/// claimed, or whose claim is stale (its home's alive key, ARGV[2] + home, and its
/// conversation's record, ARGV[3] + cid, are both gone), is claimed with ARGV[1]
/// (`{home}|{cid}`); ARGV[4]: the hash's TTL in ms. Returns the endpoint, or nil.
const CLAIM_SCRIPT: &str = r"
local best, best_use
for i = 5, #ARGV do
  local c = ARGV[i]
  local claim = redis.call('HGET', KEYS[1], 'b:' .. c)
  local free = not claim
  if claim then
    local sep = string.find(claim, '|', 1, true)
    if not sep then
      free = true
    else
      local home = string.sub(claim, 1, sep - 1)
      local cid = string.sub(claim, sep + 1)
      free = redis.call('EXISTS', ARGV[2] .. home) == 0
        and redis.call('EXISTS', ARGV[3] .. cid) == 0
    end
  end
  if free then
    local used = tonumber(redis.call('HGET', KEYS[1], 'u:' .. c) or '0') or 0
    if not best or used < best_use then
      best, best_use = c, used
    end
  end
end
if not best then
  return false
end
local n = redis.call('HINCRBY', KEYS[1], 'n', 1)
redis.call('HSET', KEYS[1], 'b:' .. best, ARGV[1], 'u:' .. best, n)
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return best
";

/// Releases the endpoint of a pool (KEYS[1]) claimed for conversation ARGV[1].
const UNCLAIM_SCRIPT: &str = r"
local h = redis.call('HGETALL', KEYS[1])
for i = 1, #h, 2 do
  local f, v = h[i], h[i + 1]
  if string.sub(f, 1, 2) == 'b:' then
    local sep = string.find(v, '|', 1, true)
    if sep and string.sub(v, sep + 1) == ARGV[1] then
      redis.call('HDEL', KEYS[1], f)
    end
  end
end
return 0
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
    /// The id of the last inbox entry handled.
    handled: Mutex<Option<String>>,
    /// Cancelled to stop reading the inbox (the node leaves); the reader cancels
    /// `stopped_reading` when it has stopped.
    stop_reading: CancellationToken,
    stopped_reading: CancellationToken,
    /// Held (write) from a claim of a conversation's home in Redis until the router has
    /// adopted it or linked to the winner; the reader handles its messages under it (read).
    /// Between the two, another node that read the new record may already have forwarded a
    /// party's frame here: handled before the adoption, a `resume` re-created the call with
    /// a placeholder instead of the party this node holds (the peer's restart reached
    /// nobody) and any other frame was refused as on an unknown conversation.
    adopting: tokio::sync::RwLock<()>,
}

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
            handled: Mutex::new(None),
            stop_reading: CancellationToken::new(),
            stopped_reading: CancellationToken::new(),
            adopting: tokio::sync::RwLock::new(()),
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

    /// Claims a free endpoint among `candidates` of the pool serving `uid` of `app` for call
    /// `cid` homed here: `Some(Some(endpoint))`, `Some(None)` when all are busy, `None` when
    /// Redis did not answer (the caller's node decides alone).
    pub async fn claim_endpoint(
        &self,
        shared: &Shared,
        (app, uid, cid): (&str, &str, &str),
        candidates: &[ConnId],
    ) -> Option<Option<ConnId>> {
        if !self.connected() {
            return None;
        }
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(CLAIM_SCRIPT)
            .arg(1)
            .arg(pool_key(app, uid))
            .arg(format!("{}|{cid}", self.node))
            .arg("wd:node:")
            .arg(record_key(app, ""))
            .arg(POOL_TTL.as_millis() as u64);
        for c in candidates {
            cmd.arg(*c);
        }
        self.query::<Option<ConnId>>(shared, cmd).await
    }

    /// The nodes other than this one where a party of `uid` of `app` waits, away.
    pub async fn awaiting_nodes(&self, shared: &Shared, app: &str, uid: &str) -> Vec<NodeId> {
        if !self.connected() {
            return Vec::new();
        }
        let cmd = redis::cmd("SMEMBERS").arg(awaits_key(app, uid)).to_owned();
        let nodes = self.query::<Vec<NodeId>>(shared, cmd).await.unwrap_or_default();
        nodes.into_iter().filter(|n| *n != self.node && self.is_alive(*n)).collect()
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
    /// record and `missing` gives the parties, creates it, never provisional: a call its
    /// callee accepted); the record afterwards.
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
    /// conversations at once instead of after `node_ttl`. What it handled leaves its inbox
    /// first: the other nodes hand over only what came after.
    ///
    /// In this order: it stops reading its inbox (what comes later stays there for the other
    /// nodes), sends everything it queued (what it handled has gone on), trims what it
    /// handled, then deletes its alive key.
    pub async fn leave(&self, shared: &Shared) {
        self.left.store(true, Ordering::SeqCst);
        self.stop_reading.cancel();
        let wait = REDIS_TIMEOUT * 2;
        let _ = tokio::time::timeout(wait, self.stopped_reading.cancelled()).await;
        let (done, sent) = oneshot::channel();
        self.write(Write::Flush { done });
        let _ = tokio::time::timeout(wait, sent).await;
        let mut pipe = redis::pipe();
        if let Some(last) = lock(&self.handled).as_deref() {
            pipe.cmd("XTRIM").arg(inbox_key(self.node)).arg("MINID").arg(next_id(last)).ignore();
        }
        pipe.del(alive_key(self.node)).ignore().srem("wd:nodes", self.node).ignore();
        let _ = self.query::<()>(shared, pipe).await;
    }

    /// Whether node `node`, which this node does not count alive, is really dead: its alive
    /// key is gone and this node has been connected long enough to say so.
    pub async fn confirm_dead(&self, shared: &Shared, node: NodeId) -> bool {
        if node == self.node || self.is_alive(node) || !self.settled() {
            return false;
        }
        let cmd = redis::cmd("EXISTS").arg(alive_key(node)).to_owned();
        self.query::<i64>(shared, cmd).await == Some(0)
    }

    /// The messages this node sent to node `node` (dead) that are still in its inbox:
    /// what it had not handled (or handled without trimming it yet), in order.
    async fn unread_by(&self, shared: &Shared, node: NodeId) -> Result<Vec<BusMsg>, ()> {
        let key = inbox_key(node);
        let mut out = Vec::new();
        let mut from = "-".to_owned();
        loop {
            let cmd = redis::cmd("XRANGE")
                .arg(&key)
                .arg(&from)
                .arg("+")
                .arg("COUNT")
                .arg(1000)
                .to_owned();
            let reply: StreamRangeReply = self.query(shared, cmd).await.ok_or(())?;
            let Some(last) = reply.ids.last().map(|e| e.id.clone()) else { break };
            for entry in &reply.ids {
                match entry_envelope(entry) {
                    Some(env) if env.from == self.node => out.push(env.msg),
                    _ => {}
                }
            }
            from = format!("({last}");
        }
        Ok(out)
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

/// Starts the node's Redis tasks: the writer, the inbox reader, the heartbeat.
pub(crate) fn start(shared: &Arc<Shared>) {
    let Some(cluster) = shared.cluster.as_ref() else { return };
    let Some(rx) = lock(&cluster.writes_rx).take() else { return };
    tokio::spawn(writer(shared.clone(), rx));
    tokio::spawn(reader(shared.clone()));
    tokio::spawn(heartbeat(shared.clone()));
}

/// A write made ready for a pipeline.
enum Prepared {
    /// An entry for node `to`'s inbox; `relayed`: a conversation frame (counted).
    Publish {
        to: NodeId,
        text: String,
        relayed: bool,
    },
    Other(redis::Pipeline),
}

impl Prepared {
    fn add_to(&self, pipe: &mut redis::Pipeline) {
        match self {
            Prepared::Publish { to, text, .. } => {
                pipe.cmd("XADD")
                    .arg(inbox_key(*to))
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(MAX_INBOX_ENTRIES)
                    .arg("*")
                    .arg("m")
                    .arg(text)
                    .ignore();
            }
            Prepared::Other(p) => {
                for cmd in p.cmd_iter() {
                    pipe.add_command(cmd.clone()).ignore();
                }
            }
        }
    }
}

/// A write made ready, with its sequence number if it is a message (`None`: a death).
fn prepare(cluster: &Cluster, seq: &mut HashMap<NodeId, u64>, w: Write) -> Option<Prepared> {
    let ms = |d: Duration| d.as_millis() as u64;
    Some(match w {
        Write::Publish { to, msg } => {
            let n = seq.entry(to).or_insert(0);
            *n += 1;
            let relayed = matches!(msg, BusMsg::Deliver { .. } | BusMsg::Forward { .. });
            let env = Envelope { from: cluster.node, seq: *n, msg };
            let text = serde_json::to_string(&env).unwrap_or_default();
            Prepared::Publish { to, text, relayed }
        }
        Write::PresenceAdd { app, uid, conn, service } => {
            let key = presence_key(&app, &uid);
            let mut p = redis::pipe();
            p.hset(&key, conn, if service { "s" } else { "c" })
                .pexpire(&key, ms(PRESENCE_TTL) as i64);
            Prepared::Other(p)
        }
        Write::PresenceDel { app, uid, conn, service } => {
            let mut p = redis::pipe();
            p.hdel(presence_key(&app, &uid), conn);
            if service {
                p.hdel(pool_key(&app, &uid), &[format!("b:{conn}"), format!("u:{conn}")]);
            }
            Prepared::Other(p)
        }
        Write::Unclaim { app, uid, cid } => {
            let mut p = redis::pipe();
            p.cmd("EVAL").arg(UNCLAIM_SCRIPT).arg(1).arg(pool_key(&app, &uid)).arg(&*cid).ignore();
            Prepared::Other(p)
        }
        Write::Awaits { app, uid, ttl } => {
            let key = awaits_key(&app, &uid);
            let mut p = redis::pipe();
            p.sadd(&key, cluster.node).ignore().pexpire(&key, ms(ttl) as i64).ignore();
            Prepared::Other(p)
        }
        Write::Record { app, cid, fields } => {
            let key = record_key(&app, &cid);
            let mut p = redis::pipe();
            let mut hash = vec![
                ("home", cluster.node.to_string()),
                ("caller", fields.caller.to_string()),
                ("caller_uid", fields.caller_uid.to_string()),
                ("callee", fields.callee.to_string()),
                ("callee_uid", fields.callee_uid.to_string()),
            ];
            match fields.unproven {
                // In the same `HSET` as the parties: a reader never sees them without it.
                Some(role) => hash.push(("unproven", role_field(role).to_owned())),
                // Before the parties: proven now, whoever they are.
                None => {
                    p.hdel(&key, "unproven").ignore();
                }
            }
            p.hset_multiple(&key, &hash).pexpire(&key, ms(RECORD_TTL) as i64);
            Prepared::Other(p)
        }
        Write::Unrecord { app, cid } => {
            let mut p = redis::pipe();
            p.del(record_key(&app, &cid));
            Prepared::Other(p)
        }
        Write::NodeGone { .. } | Write::Flush { .. } => return None,
    })
}

/// What waits in the writer's queue for the writes before it to be sent.
enum Marker {
    /// A node died: take over what it left.
    Death(NodeId, Option<oneshot::Sender<()>>),
    /// Someone waits for the writes before to be sent.
    Flush(oneshot::Sender<()>),
}

/// The writer's queue: writes made ready and not sent yet, in order, and the markers that
/// wait for them to be sent.
struct Outgoing {
    seq: HashMap<NodeId, u64>,
    pending: VecDeque<Prepared>,
    deaths: VecDeque<Marker>,
    /// Dead nodes taken over already (the latest last).
    buried: VecDeque<NodeId>,
}

impl Outgoing {
    fn take(&mut self, cluster: &Cluster, w: Write) {
        match w {
            Write::NodeGone { node, done } => self.deaths.push_back(Marker::Death(node, done)),
            Write::Flush { done } => self.deaths.push_back(Marker::Flush(done)),
            w => self.pending.extend(prepare(cluster, &mut self.seq, w)),
        }
    }

    /// Takes in what is queued, up to `limit` writes ready, never past a death (the writes
    /// after it wait until it is handled).
    fn fill(&mut self, cluster: &Cluster, rx: &mut mpsc::UnboundedReceiver<Write>, limit: usize) {
        while self.deaths.is_empty() && self.pending.len() < limit {
            match rx.try_recv() {
                Ok(w) => self.take(cluster, w),
                Err(_) => break,
            }
        }
    }
}

/// Sends the queued writes in order, in pipelines of at most [`PIPELINE_WRITES`]; keeps them
/// through Redis outages (bounded); takes over what a dead node left once everything queued
/// before its death is sent.
async fn writer(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<Write>) {
    let Some(cluster) = shared.cluster.as_ref() else { return };
    let mut out = Outgoing {
        seq: HashMap::new(),
        pending: VecDeque::new(),
        deaths: VecDeque::new(),
        buried: VecDeque::new(),
    };
    loop {
        if out.pending.is_empty() && out.deaths.is_empty() {
            let Some(w) = rx.recv().await else { return };
            out.take(cluster, w);
        }
        out.fill(cluster, &mut rx, PIPELINE_WRITES);
        if !out.pending.is_empty() {
            let n = out.pending.len().min(PIPELINE_WRITES);
            let mut pipe = redis::pipe();
            for p in out.pending.iter().take(n) {
                p.add_to(&mut pipe);
            }
            match cluster.send(&shared, pipe).await {
                Sent::Yes | Sent::Refused => {
                    for p in out.pending.drain(..n) {
                        if let Prepared::Publish { relayed: true, .. } = p {
                            shared.metrics.cross_node_frames.inc();
                        }
                    }
                }
                Sent::No => {
                    // Redis unreachable: keep everything, in order, with what comes meanwhile.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    out.fill(cluster, &mut rx, usize::MAX);
                    if out.pending.len() > MAX_PENDING_WRITES {
                        let drop = out.pending.len() - MAX_PENDING_WRITES;
                        out.pending.drain(..drop);
                        tracing::warn!("Redis unreachable: {drop} writes dropped");
                    }
                }
            }
            continue;
        }
        // Everything queued before the death is sent: take over what the dead node left.
        let (node, done) = match out.deaths.pop_front() {
            Some(Marker::Death(node, done)) => (node, done),
            Some(Marker::Flush(done)) => {
                let _ = done.send(());
                continue;
            }
            None => continue,
        };
        if !out.buried.contains(&node) {
            if take_over(&shared, cluster, node, &mut rx, &mut out).await.is_err() {
                out.deaths.push_front(Marker::Death(node, done));
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            if out.buried.len() >= 1024 {
                out.buried.pop_front();
            }
            out.buried.push_back(node);
        }
        if let Some(done) = done {
            let _ = done.send(());
        }
    }
}

/// How a pipeline went.
enum Sent {
    Yes,
    /// Redis refused a command (a bug, or a key of another program): the writes are dropped
    /// rather than sent again forever.
    Refused,
    /// Redis unreachable: send again later.
    No,
}

impl Cluster {
    async fn send(&self, shared: &Shared, pipe: redis::Pipeline) -> Sent {
        let Some(mut c) = self.connection(shared).await else { return Sent::No };
        match tokio::time::timeout(REDIS_TIMEOUT, pipe.query_async::<()>(&mut c)).await {
            Ok(Ok(())) => {
                self.succeeded(shared);
                Sent::Yes
            }
            Ok(Err(e)) if !(e.is_io_error() || e.is_timeout() || e.is_connection_dropped()) => {
                shared.metrics.redis_errors.inc();
                tracing::error!("Redis refused a write, dropped: {e}");
                Sent::Refused
            }
            Ok(Err(e)) => {
                self.failed(shared, &e).await;
                Sent::No
            }
            Err(_) => {
                let e = redis::RedisError::from((redis::ErrorKind::Io, "timed out"));
                self.failed(shared, &e).await;
                Sent::No
            }
        }
    }
}

/// Node `node` died. In the writer, so after every write this node queued before: what this
/// node had sent it and it had not handled (still in its inbox), then what was queued for it
/// since, go where they belong now, in order, in the same pure call that adopts or re-links
/// the conversations it was home of (so that nothing sent later overtakes them): frames for
/// its connections wait for them (reconnect grace), frames for the conversations it was home
/// of go to their new home, probes of its connections fail.
async fn take_over(
    shared: &Arc<Shared>,
    cluster: &Cluster,
    node: NodeId,
    rx: &mut mpsc::UnboundedReceiver<Write>,
    out: &mut Outgoing,
) -> Result<(), ()> {
    let mut unread = Some(cluster.unread_by(shared, node).await?);
    tracing::info!(
        node,
        unread = unread.as_ref().map_or(0, Vec::len),
        "node gone: its parties wait the reconnect grace, its calls are adopted"
    );
    // A late frame of the dead node may link another conversation to it meanwhile: a few
    // rounds settle those too.
    for _ in 0..3 {
        // No message from another node is handled between the claims and the adoptions.
        let adopting = cluster.adopting.write().await;
        let links = shared.hub_links_to(node);
        let mut decisions = Vec::with_capacity(links.len());
        for link in links {
            // A callee that accepted here knows the call is live, record or not.
            let missing = link.accepted_callee.as_ref().map(|me| RecordFields {
                caller: 0,
                caller_uid: link.peer.clone(),
                callee: link.conn,
                callee_uid: me.clone(),
                unproven: None,
            });
            let rec =
                cluster.claim_home(shared, (&link.app, &link.cid), node, missing.as_ref()).await?;
            decisions.push((link, rec));
        }
        let replays = unread.take();
        shared.route(|r| {
            let now = std::time::Instant::now();
            let mut sent = Vec::new();
            if replays.is_some() {
                sent.extend(r.node_dead(node, now));
            }
            for (link, rec) in decisions {
                sent.extend(settle_link(r, cluster, node, &link, rec, now));
            }
            if let Some(mut replays) = replays {
                // Under the router's lock nothing new is queued: what is in the channel for
                // the dead node now is all there will ever be, and comes after its inbox.
                while let Ok(w) = rx.try_recv() {
                    match w {
                        Write::Publish { to, msg } if to == node => replays.push(msg),
                        w => out.take(cluster, w),
                    }
                }
                for msg in replays {
                    sent.extend(replay(r, msg, now));
                }
            }
            sent
        });
        drop(adopting);
        if shared.hub_links_to(node).is_empty() {
            break;
        }
    }
    Ok(())
}

/// Resolves the link of local connection `link.conn` to a conversation whose home `dead`
/// died, given its record after the adoption script.
fn settle_link(
    r: &mut Router,
    cluster: &Cluster,
    dead: NodeId,
    link: &LinkedConversation,
    rec: Option<Record>,
    now: std::time::Instant,
) -> Vec<(ConnId, ServerFrame)> {
    match rec {
        Some(rec) if rec.home == cluster.node => {
            let p = &rec.parties;
            let caller = (cluster.adoptee(p.caller, dead), &*p.caller_uid);
            let callee = (cluster.adoptee(p.callee, dead), &*p.callee_uid);
            tracing::debug!(
                cid = &*link.cid,
                provisional = p.unproven.is_some(),
                "adopted a conversation of a dead node"
            );
            r.adopt(&link.app, &link.cid, caller, callee, p.unproven, now)
        }
        Some(rec) if cluster.is_alive(rec.home) => {
            r.link(link.conn, &link.cid, rec.home, &link.peer);
            Vec::new()
        }
        _ => {
            // No live conversation: it was ringing, or it ended. The local party hears bye.
            let bye = ServerFrame::Conversation {
                cid: link.cid.to_string(),
                from: link.peer.to_string(),
                body: Body::Bye(Empty::default()),
            };
            r.deliver(link.conn, dead, bye, None).unwrap_or_default()
        }
    }
}

/// A message this node had sent to a node that died before handling it.
fn replay(r: &mut Router, msg: BusMsg, now: std::time::Instant) -> Vec<(ConnId, ServerFrame)> {
    match msg {
        BusMsg::Deliver { conn, frame, .. } => match ServerFrame::from_json(&frame) {
            Ok(frame) => r.undeliverable(conn, frame, now),
            Err(_) => Vec::new(),
        },
        BusMsg::Forward { conn, frame, number, .. } => {
            let Ok(frame) = ClientFrame::from_json(&frame) else { return Vec::new() };
            let mut out = r.handle_stamped(conn, frame, number, now);
            // The dead node may have answered it already (a refusal is not worth a second).
            out.retain(|(to, f)| !(*to == conn && matches!(f, ServerFrame::Error { .. })));
            out
        }
        BusMsg::Probe { conn } => r.probe_result(conn, false, now),
        BusMsg::Departed { .. } | BusMsg::ProbeResult { .. } | BusMsg::Arrived { .. } => Vec::new(),
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
        // This node's ids are its own (random per process), so it claimed the conversation
        // a moment ago: another connection's resume, or the heartbeat, adopts it between the
        // script's answer and the router. Wait for that rather than re-create it here (the
        // router would, with a placeholder peer, and this client's frames would reach
        // nobody: both parties of a call landing on one node after a drain).
        let deadline = Instant::now() + REDIS_TIMEOUT * 2;
        while !shared.hub_knows(app, cid) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        return;
    }
    let link = |home: NodeId| {
        shared.route(|r| {
            r.link(conn, cid, home, peer);
            Vec::new()
        })
    };
    if cluster.is_alive(rec.home) {
        return link(rec.home);
    }
    // A node connected to Redis for less than `node_ttl` (it has just started) cannot tell a
    // dead home from a live one it has not heard of yet: it waits until it can, rather than
    // re-create the call here beside the node that adopts it (its party there would never
    // hear this one).
    let deadline = Instant::now() + cluster.node_ttl + REDIS_TIMEOUT;
    while cluster.connected() && !cluster.settled() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if cluster.is_alive(rec.home) {
        return link(rec.home);
    }
    if !cluster.confirm_dead(shared, rec.home).await {
        // Alive (started after this node's last heartbeat), or this node cannot tell yet.
        if cluster.settled() {
            link(rec.home);
        }
        return;
    }
    // Its home died and the heartbeat has not said so yet: take over now (in the writer,
    // in order), then adopt the conversation if no node has.
    let (done, taken) = oneshot::channel();
    cluster.write(Write::NodeGone { node: rec.home, done: Some(done) });
    let _ = tokio::time::timeout(REDIS_TIMEOUT * 5, taken).await;
    if shared.hub_places(conn, cid) {
        return; // adopted here, or linked to its new home
    }
    // No node with a party of it has adopted it: this one does.
    let dead = rec.home;
    // No message from another node is handled between the claim and the adoption.
    let _adopting = cluster.adopting.write().await;
    let Ok(rec @ Some(_)) = cluster.claim_home(shared, (app, cid), dead, None).await else {
        return;
    };
    let link = LinkedConversation {
        conn,
        app: Arc::from(app),
        cid: Arc::from(cid),
        peer: Arc::from(peer),
        accepted_callee: None,
    };
    shared.route(|r| settle_link(r, cluster, dead, &link, rec, std::time::Instant::now()));
}

/// Reads this node's inbox and hands each message to the node; trims what it handled.
async fn reader(shared: Arc<Shared>) {
    let Some(cluster) = shared.cluster.as_ref() else { return };
    let _stopped = cluster.stopped_reading.clone().drop_guard();
    let stop = cluster.stop_reading.clone();
    let key = inbox_key(cluster.node);
    // The last entry handled; entries handled since the inbox was last trimmed, and when.
    let mut last = "0-0".to_owned();
    let mut untrimmed = 0usize;
    let mut trimmed_at = Instant::now();
    let mut backoff = Duration::from_millis(100);
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(REDIS_TIMEOUT))
        .set_response_timeout(Some(READ_BLOCK + REDIS_TIMEOUT));
    loop {
        if stop.is_cancelled() || shared.shutdown.is_cancelled() {
            return;
        }
        let connected = tokio::select! {
            _ = stop.cancelled() => return,
            _ = shared.shutdown.cancelled() => return,
            c = cluster.client.get_multiplexed_async_connection_with_config(&config) => c,
        };
        let mut c = match connected {
            Ok(c) => c,
            Err(e) => {
                cluster.failed(&shared, &e).await;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        tracing::debug!(node = cluster.node, "reading the inbox");
        loop {
            let mut pipe = redis::pipe();
            // Trimmed in the same round trip as the next read, but not every round at a few
            // thousand entries per second: what is left over is handed over again, and
            // dropped by stamp, if this node dies.
            let trim = untrimmed >= TRIM_EVERY_ENTRIES
                || (untrimmed > 0 && trimmed_at.elapsed() >= TRIM_EVERY);
            if trim {
                pipe.cmd("XTRIM").arg(&key).arg("MINID").arg(next_id(&last)).ignore();
            }
            pipe.cmd("XREAD")
                .arg("COUNT")
                .arg(READ_COUNT)
                .arg("BLOCK")
                .arg(READ_BLOCK.as_millis() as u64)
                .arg("STREAMS")
                .arg(&key)
                .arg(&last);
            // What a read cut short returned stays in the inbox, for the other nodes.
            let read = tokio::select! {
                _ = stop.cancelled() => return,
                _ = shared.shutdown.cancelled() => return,
                r = pipe.query_async::<(Option<StreamReadReply>,)>(&mut c) => r,
            };
            let reply = match read {
                Ok((reply,)) => reply,
                Err(e) => {
                    cluster.failed(&shared, &e).await;
                    break;
                }
            };
            if trim {
                untrimmed = 0;
                trimmed_at = Instant::now();
            }
            // Not while this node claims and adopts conversations (`Cluster::adopting`).
            let adopting = cluster.adopting.read().await;
            for entry in reply.iter().flat_map(|r| &r.keys).flat_map(|k| &k.ids) {
                last.clone_from(&entry.id);
                untrimmed += 1;
                let Some(env) = entry_envelope(entry) else {
                    tracing::warn!("inbox: unreadable entry dropped");
                    continue;
                };
                if let Some((from, msg)) = cluster.accept(env) {
                    on_bus(&shared, from, msg);
                }
            }
            drop(adopting);
            if untrimmed > 0 {
                *lock(&cluster.handled) = Some(last.clone());
            }
        }
        tracing::warn!("inbox connection lost; reading again from the last entry handled");
        tokio::time::sleep(backoff).await;
    }
}

/// The envelope in inbox entry `entry`.
fn entry_envelope(entry: &redis::streams::StreamId) -> Option<Envelope> {
    let bytes: Vec<u8> = entry.get("m")?;
    serde_json::from_slice(&bytes).ok()
}

/// The stream id right after `id` (`ms-seq`): `XTRIM MINID` of it drops `id` too.
fn next_id(id: &str) -> String {
    match id.split_once('-').and_then(|(ms, n)| Some((ms, n.parse::<u64>().ok()?))) {
        Some((ms, n)) => format!("{ms}-{}", n.saturating_add(1)),
        None => id.to_owned(),
    }
}

/// One message from node `from`.
fn on_bus(shared: &Arc<Shared>, from: NodeId, msg: BusMsg) {
    let now = std::time::Instant::now();
    match msg {
        BusMsg::Deliver { conn, frame, stamp } => {
            let Ok(frame) = ServerFrame::from_json(&frame) else { return };
            let mut gone = false;
            shared.route(|r| {
                r.deliver(conn, from, frame, stamp).unwrap_or_else(|| {
                    gone = true;
                    Vec::new()
                })
            });
            if gone {
                shared.publish(from, BusMsg::Departed { conn, lost: true });
            }
        }
        BusMsg::Forward { conn, app, uid, service, frame, number } => {
            let Ok(frame) = ClientFrame::from_json(&frame) else { return };
            shared.route(|r| {
                r.connect_remote(conn, &app, &uid, service);
                let out = r.handle_stamped(conn, frame, number, now);
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
        BusMsg::Arrived { conn, app, uid, service } => {
            shared.route(|r| r.arrive_remote(conn, &app, &uid, service));
        }
    }
}

/// Keeps the node's alive key and inbox, learns which nodes are alive, declares the dead
/// ones (to the writer, in order), refreshes presence and records, and writes them all again
/// after Redis comes back.
async fn heartbeat(shared: Arc<Shared>) {
    let Some(cluster) = shared.cluster.as_ref() else { return };
    let every = (cluster.node_ttl / 4).max(Duration::from_millis(50));
    let inbox_ttl = stream_ttl(cluster.node_ttl).as_millis() as u64;
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
            .cmd("PEXPIRE")
            .arg(inbox_key(cluster.node))
            .arg(inbox_ttl)
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
                // Nodes seen alive before, and homes of this node's links (a node that
                // died before this one ever saw it alive).
                let mut gone: Vec<NodeId> = shared.hub_linked_homes();
                gone.extend(lock(&cluster.alive).iter().copied());
                gone.sort_unstable();
                gone.dedup();
                gone.retain(|n| !now_alive.contains(n) && *n != cluster.node);
                let dead_members: Vec<NodeId> =
                    members.iter().copied().filter(|n| !now_alive.contains(n)).collect();
                *lock(&cluster.alive) = now_alive;
                if cluster.settled() {
                    for node in gone {
                        cluster.write(Write::NodeGone { node, done: None });
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

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(fields: &[(&str, &str)]) -> HashMap<String, String> {
        fields.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    const PARTIES: [(&str, &str); 5] = [
        ("home", "7"),
        ("caller", "30064771073"),
        ("caller_uid", "mallory"),
        ("callee", "9223372036854775808"),
        ("callee_uid", "bot"),
    ];

    #[test]
    fn a_record_without_the_unproven_field_is_not_provisional() {
        // As an older node writes it (a rolling upgrade).
        let rec = Record::from_hash(&hash(&PARTIES)).expect("a record");
        assert_eq!(rec.home, 7);
        assert_eq!(rec.parties.unproven, None);
        assert_eq!(&*rec.parties.callee_uid, "bot");
    }

    #[test]
    fn a_record_with_the_unproven_field_names_the_role_not_shown_yet() {
        for (value, role) in
            [("callee", Some(Role::Callee)), ("caller", Some(Role::Caller)), ("other", None)]
        {
            let mut fields = PARTIES.to_vec();
            fields.push(("unproven", value));
            let rec = Record::from_hash(&hash(&fields)).expect("a record");
            assert_eq!(rec.parties.unproven, role, "{value}");
        }
        assert_eq!(role_field(Role::Caller), "caller");
        assert_eq!(role_field(Role::Callee), "callee");
    }
}
