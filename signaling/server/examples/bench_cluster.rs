//! Benchmark of the signaling server as several nodes on one Redis (a program, not a test).
//!
//! ```text
//! cargo run --release -p wilddog-server --example bench_cluster -- [NODES] [IDLE] [PAIRS] [SECONDS]
//! ```
//!
//! Starts `redis-server` on a free loopback port and NODES (default 3) server nodes, each a
//! child process (this program re-executed as `node`), with rate limits raised; drives them
//! over loopback WebSockets from this process and prints:
//!
//! 1. resident memory per idle authenticated connection: IDLE (default 10,000) sockets
//!    spread over the nodes, opened in steps (1,000, 5,000, then IDLE); at each step the sum
//!    of the nodes' VmRSS growth since before the first connection divided by the
//!    connections open, and the growth since the previous step divided by the connections
//!    added (what one more connection costs, without the nodes' fixed costs);
//! 2. relayed frames per second at saturation and p50/p99 relay latency at a fixed 10,000
//!    frames/s, for PAIRS (default 50) pairs with both parties on node 0 (same node) and,
//!    with 2 nodes or more, with the caller on node 0 and the callee on node 1 (cross node),
//!    each for SECONDS (default 5); CPU per relayed frame of all nodes and of Redis;
//! 3. with 3 nodes or more: the time a client needs to resume after its node is killed
//!    (SIGKILL of the node holding 10 callers; each reconnects to another node, sends
//!    `resume` and its restart offer; time from the kill to the callee receiving it).
//!
//! With NODES = 1 the node still runs on Redis (its presence and records are written):
//! the single-node figures of cluster mode. NODES = 0: one node without Redis, measured the
//! same way, to compare with.

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::{Mutex, Semaphore};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use wilddog_server::{ClusterConfig, DEV_APP_ID, ServerConfig, mint_token};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const WINDOW: usize = 16;

const BENCH_CONFIG: &str = r#"
[[apps]]
id = "wilddog-dev"
secret = "wilddog-dev-secret-public-do-not-deploy"
[limits]
rate_limit_per_sec = 1000000
rate_limit_burst = 1000000
outbound_queue_frames = 4096
idle_timeout_secs = 600
connect_timeout_secs = 60
reconnect_grace_secs = 30
"#;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    rlimit::increase_nofile_limit(65_536)?;
    if args.get(1).map(String::as_str) == Some("node") {
        return node(args.get(2).ok_or("node REDIS_URL")?);
    }
    let nodes: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(3);
    let idle: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let pairs: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(50);
    let seconds: u64 = args.get(4).and_then(|a| a.parse().ok()).unwrap_or(5);
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(drive(
        nodes,
        idle,
        pairs,
        Duration::from_secs(seconds),
    ))
}

/// A child: one node on 127.0.0.1 port 0, its address on stdout; runs until killed or stdin
/// closes.
fn node(redis_url: &str) -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .try_init();
    }
    let mut config = ServerConfig::from_toml_str(BENCH_CONFIG)?;
    if redis_url != "-" {
        let mut cluster = ClusterConfig::new(redis_url);
        cluster.node_ttl = Duration::from_millis(1000);
        cluster.drain_notice = Duration::ZERO;
        config.cluster = Some(cluster);
    }
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("{}", listener.local_addr()?);
        std::io::stdout().flush()?;
        let stdin_closed = async {
            let _ = tokio::task::spawn_blocking(|| {
                let mut line = String::new();
                let _ = std::io::stdin().lock().read_line(&mut line);
            })
            .await;
        };
        wilddog_server::run(listener, config, stdin_closed).await?;
        Ok(())
    })
}

fn proc_status_kib(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_comm = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let ticks: f64 =
        fields.get(11..13).map_or(0.0, |f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum());
    ticks / 100.0
}

/// Every wait of the benchmark ends: a step that takes longer fails, saying what it waited
/// for, instead of hanging.
const STEP: Duration = Duration::from_secs(30);

async fn open(addr: SocketAddr, uid: &str, config: &ServerConfig) -> Ws {
    let token = mint_token(config, DEV_APP_ID, uid, Duration::from_secs(3600)).unwrap();
    let connected = tokio::time::timeout(
        STEP,
        tokio_tungstenite::connect_async_with_config(format!("ws://{addr}/ws"), None, true),
    )
    .await;
    let (mut ws, _) = match connected {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => panic!("{uid}: no WebSocket to {addr}: {e}"),
        Err(_) => panic!("{uid}: no WebSocket to {addr} within {STEP:?}"),
    };
    ws.send(Message::text(
        json!({"type": "connect", "msg": {"token": token, "appId": DEV_APP_ID}}).to_string(),
    ))
    .await
    .unwrap();
    let connack = next_json(&mut ws, &format!("{uid}'s connack from {addr}")).await;
    assert_eq!(connack["msg"]["code"], 0, "{connack}");
    ws
}

/// The next text frame; panics after [`STEP`] saying it waited for `what`.
async fn next_json(ws: &mut Ws, what: &str) -> Value {
    let next = async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => return serde_json::from_str(&t).unwrap(),
                Some(Ok(_)) => continue,
                other => panic!("socket ended while waiting for {what}: {other:?}"),
            }
        }
    };
    match tokio::time::timeout(STEP, next).await {
        Ok(v) => v,
        Err(_) => panic!("nothing within {STEP:?} while waiting for {what}"),
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

/// Kills the process when dropped (also when the benchmark fails half-way).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Child {
    process: std::process::Child,
    addr: SocketAddr,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_or(0, |a| a.port())
}

/// Live conversations from callers to callees; returns (callers with cid and peer, callees).
async fn pairs_between(
    (a, b): (SocketAddr, SocketAddr),
    label: &str,
    pairs: usize,
    config: &ServerConfig,
) -> (Vec<(Ws, String, String)>, Vec<Ws>) {
    let mut opened = Vec::new();
    for p in 0..pairs {
        let (caller_uid, callee_uid) =
            (format!("{label}-caller-{p}"), format!("{label}-callee-{p}"));
        let caller = open(a, &caller_uid, config).await;
        let callee = open(b, &callee_uid, config).await;
        opened.push((caller, callee, caller_uid, callee_uid));
    }
    // The callees' presence reaches Redis.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for (p, (mut caller, mut callee, caller_uid, callee_uid)) in opened.into_iter().enumerate() {
        let cid = format!("{label}-{p}");
        let call = json!({"type": "call", "cid": cid, "to": callee_uid, "msg": {}}).to_string();
        caller.send(Message::text(call.clone())).await.unwrap();
        let (ring, answer) = (format!("{callee_uid}'s call"), format!("{caller_uid}'s answer"));
        let deadline = Instant::now() + STEP;
        loop {
            assert!(Instant::now() < deadline, "{callee_uid} not reachable within {STEP:?}");
            tokio::select! {
                v = next_json(&mut callee, &ring) => {
                    assert_eq!(v["type"], "call", "{v}");
                    break;
                }
                v = next_json(&mut caller, &answer) => {
                    // Not in Redis yet: call again.
                    assert_eq!(v["type"], "unreachable", "{v}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    caller.send(Message::text(call.clone())).await.unwrap();
                }
            }
        }
        callee
            .send(Message::text(
                json!({"type": "accept", "cid": cid, "to": caller_uid, "msg": {}}).to_string(),
            ))
            .await
            .unwrap();
        assert_eq!(next_json(&mut caller, &format!("{cid}'s accept")).await["type"], "accept");
        senders.push((caller, cid, callee_uid));
        receivers.push(callee);
    }
    (senders, receivers)
}

/// Relays candidates from every sender to its receiver, at saturation and at 10,000
/// frames/s; prints the figures.
async fn relay(
    label: &str,
    senders: Vec<(Ws, String, String)>,
    receivers: Vec<Ws>,
    pids: &[u32],
    redis_pid: u32,
    run_for: Duration,
) {
    let pairs = senders.len();
    let epoch = Instant::now();
    let senders: Vec<_> = senders.into_iter().map(|s| Arc::new(Mutex::new(s))).collect();
    let receivers: Vec<_> = receivers.into_iter().map(|r| Arc::new(Mutex::new(r))).collect();
    for (phase, rate) in [("saturation", None), ("10,000 frames/s", Some(10_000u64))] {
        let stop = Arc::new(AtomicBool::new(false));
        let received = Arc::new(AtomicU64::new(0));
        let measuring = Arc::new(AtomicBool::new(false));
        let latencies = Arc::new(std::sync::Mutex::new(Vec::<u64>::new()));
        let mut handles = Vec::new();
        for p in 0..pairs {
            let window = Arc::new(Semaphore::new(WINDOW));
            let (sender, receiver) = (senders[p].clone(), receivers[p].clone());
            let (stop_s, stop_r) = (stop.clone(), stop.clone());
            let window_r = window.clone();
            let interval = rate.map(|r| Duration::from_secs_f64(pairs as f64 / r as f64));
            handles.push(tokio::spawn(async move {
                let mut guard = sender.lock().await;
                let (ws, cid, to) = &mut *guard;
                let mut tick = interval.map(|i| {
                    let mut t = tokio::time::interval(i);
                    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                    t
                });
                let mut n = 0u64;
                while !stop_s.load(Ordering::Relaxed) {
                    if let Some(t) = tick.as_mut() {
                        t.tick().await;
                    }
                    if tokio::time::timeout(Duration::from_millis(200), window.acquire())
                        .await
                        .is_err()
                    {
                        continue;
                    }
                    window.forget_permits(1);
                    let sent_ns = epoch.elapsed().as_nanos() as u64;
                    let frame = json!({"type": "candidate", "cid": cid, "to": to, "msg": {
                        "sdpMLineIndex": 0, "sdpMid": "0",
                        "sdp": format!("candidate:{n} 1 udp 2122260223 127.0.0.1 {sent_ns} typ host")
                    }});
                    let send = ws.send(Message::text(frame.to_string()));
                    match tokio::time::timeout(STEP, send).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => break,
                        Err(_) => panic!("{cid}: the server read nothing for {STEP:?}"),
                    }
                    n += 1;
                }
            }));
            let (received, measuring, latencies) =
                (received.clone(), measuring.clone(), latencies.clone());
            handles.push(tokio::spawn(async move {
                let mut ws = receiver.lock().await;
                let mut local = Vec::new();
                while !stop_r.load(Ordering::Relaxed) {
                    let msg =
                        match tokio::time::timeout(Duration::from_millis(200), ws.next()).await {
                            Ok(Some(Ok(Message::Text(t)))) => t,
                            Ok(Some(Ok(_))) | Err(_) => continue,
                            Ok(other) => panic!("receiver socket ended: {other:?}"),
                        };
                    let now_ns = epoch.elapsed().as_nanos() as u64;
                    window_r.add_permits(1);
                    let v: Value = serde_json::from_str(&msg).unwrap_or_default();
                    let sent_ns: u64 = v["msg"]["sdp"]
                        .as_str()
                        .and_then(|s| s.split(' ').nth(5))
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(now_ns);
                    if measuring.load(Ordering::Relaxed) {
                        received.fetch_add(1, Ordering::Relaxed);
                        local.push(now_ns.saturating_sub(sent_ns) / 1000);
                    }
                }
                latencies.lock().unwrap_or_else(|p| p.into_inner()).extend(local);
            }));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let cpu0: f64 = pids.iter().map(|p| cpu_seconds(*p)).sum();
        let redis0 = cpu_seconds(redis_pid);
        measuring.store(true, Ordering::Relaxed);
        let t0 = Instant::now();
        tokio::time::sleep(run_for).await;
        measuring.store(false, Ordering::Relaxed);
        let elapsed = t0.elapsed().as_secs_f64();
        let cpu = pids.iter().map(|p| cpu_seconds(*p)).sum::<f64>() - cpu0;
        let redis_cpu = cpu_seconds(redis_pid) - redis0;
        stop.store(true, Ordering::Relaxed);
        for h in handles {
            let _ = h.await;
        }
        for r in &receivers {
            let mut ws = r.lock().await;
            while let Ok(Some(_)) =
                tokio::time::timeout(Duration::from_millis(100), ws.next()).await
            {}
        }
        let mut lat = std::mem::take(&mut *latencies.lock().unwrap_or_else(|p| p.into_inner()));
        lat.sort_unstable();
        let n = received.load(Ordering::Relaxed).max(1);
        println!(
            "{label}, {phase}: {n} frames in {elapsed:.2} s = {:.0} frames/s over {pairs} pairs; \
             latency p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms; nodes' CPU {:.1} µs/frame, \
             Redis CPU {:.1} µs/frame",
            n as f64 / elapsed,
            percentile(&lat, 0.50),
            percentile(&lat, 0.99),
            percentile(&lat, 1.0),
            1e6 * cpu / n as f64,
            1e6 * redis_cpu / n as f64,
        );
    }
}

async fn drive(
    nodes: usize,
    idle: usize,
    pairs: usize,
    run_for: Duration,
) -> Result<(), Box<dyn std::error::Error>> {
    let redis_port = free_port();
    let redis = KillOnDrop(
        std::process::Command::new("redis-server")
            .args(["--port", &redis_port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .map_err(|e| format!("redis-server: {e} (scripts/install-deps.sh installs it)"))?,
    );
    let redis_url = format!("redis://127.0.0.1:{redis_port}/");
    while TcpStream::connect(("127.0.0.1", redis_port)).await.is_err() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let exe = std::env::current_exe()?;
    let mut children = Vec::new();
    let without_redis = nodes == 0;
    let nodes = nodes.max(1);
    for _ in 0..nodes {
        let mut process = std::process::Command::new(&exe)
            .args(["node", if without_redis { "-" } else { &redis_url }])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        let mut line = String::new();
        std::io::BufReader::new(process.stdout.take().ok_or("no stdout")?).read_line(&mut line)?;
        children.push(Child { process, addr: line.trim().parse()? });
    }
    let pids: Vec<u32> = children.iter().map(|c| c.process.id()).collect();
    let addrs: Vec<SocketAddr> = children.iter().map(|c| c.addr).collect();
    if without_redis {
        println!("1 node {addrs:?} without Redis");
    } else {
        println!("{nodes} node(s) {addrs:?} on Redis {redis_url} (pid {})", redis.0.id());
    }
    let config = Arc::new(ServerConfig::from_toml_str(BENCH_CONFIG)?);
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // 1: idle connections spread over the nodes, in steps.
    let rss = || pids.iter().map(|p| proc_status_kib(*p, "VmRSS:")).sum::<u64>();
    let rss_before = rss();
    let gate = Arc::new(Semaphore::new(200));
    let mut idle_sockets = Vec::with_capacity(idle);
    let mut steps: Vec<usize> = [1_000, 5_000].into_iter().filter(|s| *s < idle).collect();
    steps.push(idle);
    let (mut last_count, mut last_rss) = (0, rss_before);
    for step in steps {
        let mut tasks = Vec::with_capacity(step - last_count);
        for i in last_count..step {
            let (gate, config, addr) = (gate.clone(), config.clone(), addrs[i % nodes]);
            tasks.push(tokio::spawn(async move {
                let _permit = gate.acquire().await;
                open(addr, &format!("idle-{i}"), &config).await
            }));
        }
        for t in tasks {
            idle_sockets.push(t.await?);
        }
        // Presence writes and the first index refresh are done.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let now = rss();
        println!(
            "memory per idle authenticated connection at {step}: {:.2} KiB ({nodes} node(s), \
             VmRSS {rss_before} → {now} KiB); the {} added since {last_count}: {:.2} KiB each",
            now.saturating_sub(rss_before) as f64 / step as f64,
            step - last_count,
            now.saturating_sub(last_rss) as f64 / (step - last_count) as f64,
        );
        (last_count, last_rss) = (step, now);
    }
    // 2: relay, same node and cross node.
    let (s, r) = pairs_between((addrs[0], addrs[0]), "same", pairs, &config).await;
    relay("same node", s, r, &pids, redis.0.id(), run_for).await;
    if nodes >= 2 {
        let (s, r) = pairs_between((addrs[0], addrs[1]), "cross", pairs, &config).await;
        relay("cross node", s, r, &pids, redis.0.id(), run_for).await;
    }

    // 3: resume after a node is killed.
    if nodes >= 3 {
        let victim = nodes - 1;
        let (mut callers, mut callees) =
            pairs_between((addrs[victim], addrs[1]), "resume", 10, &config).await;
        let _ = children[victim].process.kill();
        let killed = Instant::now();
        let mut times = Vec::new();
        let mut lost = 0;
        for (i, (caller, cid, callee_uid)) in callers.drain(..).enumerate() {
            drop(caller);
            let caller_uid = format!("resume-caller-{i}");
            let mut back = open(addrs[i % 2], &caller_uid, &config).await;
            back.send(Message::text(
                json!({"type": "resume", "cid": cid, "to": callee_uid, "msg": {"role": "caller"}})
                    .to_string(),
            ))
            .await?;
            back.send(Message::text(
                json!({"type": "offer", "cid": cid, "to": callee_uid, "msg": {"sdp": "v=0", "restartId": 1}})
                    .to_string(),
            ))
            .await?;
            let callee = &mut callees[i];
            let resumed = loop {
                let v =
                    tokio::time::timeout(Duration::from_secs(10), next_json(callee, "offer")).await;
                match v {
                    Ok(v) if v["type"] == "offer" => break true,
                    Ok(v) if v["type"] == "bye" => break false,
                    Ok(_) => continue,
                    Err(_) => break false,
                }
            };
            if resumed {
                times.push(killed.elapsed().as_millis() as u64);
            } else {
                lost += 1;
            }
        }
        times.sort_unstable();
        let at = |q: usize| times.get(q).copied().unwrap_or_default();
        println!(
            "resume after its node is killed (10 clients, one after another, node TTL 1 s): first {} ms, median {} ms, last {} ms; calls lost: {lost}",
            at(0),
            at(times.len() / 2),
            at(times.len().saturating_sub(1))
        );
    }
    drop(idle_sockets);
    for c in &mut children {
        drop(c.process.stdin.take());
        let _ = c.process.kill();
        let _ = c.process.wait();
    }
    drop(redis);
    Ok(())
}
