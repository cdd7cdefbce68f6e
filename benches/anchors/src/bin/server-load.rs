//! One load generator for two signaling servers: ours (`wilddog`) and gst-plugins-rs's
//! `gst-webrtc-signalling-server` (`gst`), so that their figures are comparable.
//!
//! ```text
//! server-load --protocol wilddog|gst --addr 127.0.0.1:PORT [--idle N] [--pairs P] [--seconds S]
//!             [--app-id ID --secret S]  -- SERVER COMMAND...
//! ```
//!
//! It starts SERVER COMMAND as a child process (it must listen on --addr), waits until the
//! port accepts, reads the server's VmRSS and CPU time from /proc/PID, and kills it at the end.
//! The same work for both protocols:
//!
//! 1. N idle connections (200 handshakes in flight), each authenticated (`wilddog`: `connect`
//!    with an HS256 token → `connack`) or registered as a peer (`gst`: `welcome`, then
//!    `setPeerStatus` roles ["producer"], confirmed by the reply to a `startSession` to an
//!    unknown peer, which the server answers after handling the registration);
//!    server VmRSS with them open minus before, divided by N;
//! 2. P live pairs (`wilddog`: `call` → `accept`; `gst`: producer and consumer registered,
//!    consumer `startSession` → `sessionStarted` / `startSession`), then ICE candidates relayed
//!    caller → callee (producer → consumer): frames of exactly the same size (FRAME_BYTES) on
//!    both, at most WINDOW in flight per pair, first as fast as possible, then at a fixed total
//!    rate; latency = send → receive (one clock, both ends here), server CPU from /proc.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use async_tungstenite::WebSocketStream;
use async_tungstenite::tokio::{TokioAdapter, client_async};
use async_tungstenite::tungstenite::Message;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::{Mutex, Semaphore};

type Ws = WebSocketStream<TokioAdapter<tokio::net::TcpStream>>;

/// A client WebSocket with Nagle off on the client side (as bench_server.rs does), so that
/// the load generator's own small writes are not held back; the server side is each server's.
async fn connect(addr: SocketAddr, url: String) -> anyhow::Result<Ws> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    Ok(client_async(url, tcp).await?.0)
}

/// Frames in flight per pair at saturation (as in signaling/server/examples/bench_server.rs).
const WINDOW: usize = 16;
/// Every relayed frame the load generator sends has exactly this many bytes, on both servers.
const FRAME_BYTES: usize = 190;
/// Handshakes in flight while opening the idle connections.
const HANDSHAKES_IN_FLIGHT: usize = 200;
/// The fixed rate of phase 4.
const FIXED_RATE: u64 = 10_000;

#[derive(Clone, Copy, PartialEq)]
enum Protocol {
    Wilddog,
    Gst,
}

struct Options {
    protocol: Protocol,
    addr: SocketAddr,
    idle: usize,
    pairs: usize,
    seconds: u64,
    app_id: String,
    secret: String,
    command: Vec<String>,
}

fn parse_args() -> anyhow::Result<Options> {
    let mut args = std::env::args().skip(1);
    let mut protocol = None;
    let mut addr = None;
    let (mut idle, mut pairs, mut seconds) = (2000, 50, 5);
    let mut app_id = "wilddog-dev".to_string();
    let mut secret = "wilddog-dev-secret-public-do-not-deploy".to_string();
    let mut command = Vec::new();
    while let Some(a) = args.next() {
        let mut value = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--protocol" => {
                protocol = Some(match value()?.as_str() {
                    "wilddog" => Protocol::Wilddog,
                    "gst" => Protocol::Gst,
                    other => bail!("unknown protocol {other} (wilddog or gst)"),
                })
            }
            "--addr" => addr = Some(value()?.parse()?),
            "--idle" => idle = value()?.parse()?,
            "--pairs" => pairs = value()?.parse()?,
            "--seconds" => seconds = value()?.parse()?,
            "--app-id" => app_id = value()?,
            "--secret" => secret = value()?,
            "--" => {
                command = args.by_ref().collect();
                break;
            }
            other => bail!("unknown argument {other}"),
        }
    }
    if command.is_empty() {
        bail!(
            "usage: server-load --protocol wilddog|gst --addr IP:PORT [...] -- SERVER COMMAND..."
        );
    }
    Ok(Options {
        protocol: protocol.context("--protocol is required")?,
        addr: addr.context("--addr is required")?,
        idle,
        pairs,
        seconds,
        app_id,
        secret,
        command,
    })
}

fn base64url(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// An HS256 JWT with the claims our server checks (uid, appId, iat, exp).
fn mint_token(app_id: &str, secret: &str, uid: &str) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let header = base64url(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = base64url(
        json!({"uid": uid, "appId": app_id, "iat": now, "exp": now + 3600}).to_string().as_bytes(),
    );
    let signing_input = format!("{header}.{claims}");
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = ring::hmac::sign(&key, signing_input.as_bytes());
    format!("{signing_input}.{}", base64url(tag.as_ref()))
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
    ticks / 100.0 // USER_HZ
}

async fn next_json(ws: &mut Ws) -> anyhow::Result<Value> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return Ok(serde_json::from_str(&t)?),
            Some(Ok(_)) => continue,
            other => bail!("socket ended: {other:?}"),
        }
    }
}

async fn send_json(ws: &mut Ws, v: Value) -> anyhow::Result<()> {
    ws.send(Message::text(v.to_string())).await?;
    Ok(())
}

/// A connection as each protocol's clients hold one, ready to be called.
/// Returns the socket and the server's name for it (`wilddog`: the uid; `gst`: the peer id).
async fn open(opts: &Options, uid: &str, role: &str) -> anyhow::Result<(Ws, String)> {
    match opts.protocol {
        Protocol::Wilddog => {
            let mut ws = connect(opts.addr, format!("ws://{}/ws", opts.addr)).await?;
            let token = mint_token(&opts.app_id, &opts.secret, uid);
            send_json(
                &mut ws,
                json!({"type": "connect", "msg": {"token": token, "appId": opts.app_id}}),
            )
            .await?;
            let connack = next_json(&mut ws).await?;
            if connack["msg"]["code"] != 0 {
                bail!("connect refused: {connack}");
            }
            Ok((ws, uid.to_string()))
        }
        Protocol::Gst => {
            let mut ws = connect(opts.addr, format!("ws://{}", opts.addr)).await?;
            let welcome = next_json(&mut ws).await?;
            let peer_id = welcome["peerId"].as_str().context("no peerId in welcome")?.to_string();
            send_json(&mut ws, json!({"type": "setPeerStatus", "roles": [role], "meta": null}))
                .await?;
            // Barrier: the server handles one peer's messages in order and answers this with
            // an error, so once it arrives the registration is done.
            send_json(&mut ws, json!({"type": "startSession", "peerId": "no-such-peer"})).await?;
            let reply = next_json(&mut ws).await?;
            if reply["type"] != "error" {
                bail!("unexpected reply to the registration barrier: {reply}");
            }
            Ok((ws, peer_id))
        }
    }
}

/// A live pair: the caller's socket, the callee's socket, and the frame envelope values.
struct Pair {
    caller: Ws,
    callee: Ws,
    /// wilddog: cid; gst: session id.
    conversation: String,
    /// wilddog: the callee's uid; gst: unused.
    to: String,
}

async fn open_pair(opts: &Options, p: usize) -> anyhow::Result<Pair> {
    if opts.protocol == Protocol::Gst {
        return open_gst_pair(opts).await;
    }
    let (mut caller, _) = open(opts, &format!("caller-{p}"), "producer").await?;
    let (mut callee, callee_id) = open(opts, &format!("callee-{p}"), "consumer").await?;
    match opts.protocol {
        Protocol::Wilddog => {
            let cid = format!("bench-{p}");
            send_json(&mut caller, json!({"type": "call", "cid": cid, "to": callee_id, "msg": {}}))
                .await?;
            let call = next_json(&mut callee).await?;
            if call["type"] != "call" {
                bail!("callee got {call}");
            }
            send_json(
                &mut callee,
                json!({"type": "accept", "cid": cid, "to": format!("caller-{p}"), "msg": {}}),
            )
            .await?;
            let accept = next_json(&mut caller).await?;
            if accept["type"] != "accept" {
                bail!("caller got {accept}");
            }
            Ok(Pair { caller, callee, conversation: cid, to: callee_id })
        }
        Protocol::Gst => bail!("gst pairs are opened by open_gst_pair"),
    }
}

/// The consumer takes the producer's peer id from the producer's `welcome` (asking the
/// server for its list would cost O(N) with N idle producers).
async fn open_gst_pair(opts: &Options) -> anyhow::Result<Pair> {
    let (mut producer, producer_id) = open(opts, "", "producer").await?;
    let (mut consumer, _) = open(opts, "", "consumer").await?;
    send_json(&mut consumer, json!({"type": "startSession", "peerId": producer_id})).await?;
    let started = next_json(&mut consumer).await?;
    if started["type"] != "sessionStarted" {
        bail!("consumer got {started}");
    }
    let session = started["sessionId"].as_str().context("no sessionId")?.to_string();
    let start = next_json(&mut producer).await?;
    if start["type"] != "startSession" || start["sessionId"] != session.as_str() {
        bail!("producer got {start}");
    }
    Ok(Pair { caller: producer, callee: consumer, conversation: session, to: String::new() })
}

/// A candidate frame of exactly FRAME_BYTES, carrying its send time (ns since `epoch`) as the
/// candidate's port field, padded with a ufrag.
fn candidate_frame(
    protocol: Protocol,
    conversation: &str,
    to: &str,
    n: u64,
    sent_ns: u64,
) -> String {
    let build = |pad: usize| {
        let candidate = format!(
            "candidate:{n} 1 udp 2122260223 127.0.0.1 {sent_ns} typ host ufrag {}",
            "a".repeat(pad)
        );
        match protocol {
            Protocol::Wilddog => {
                json!({"type": "candidate", "cid": conversation, "to": to, "msg": {
                "sdpMLineIndex": 0, "sdpMid": "0", "sdp": candidate}})
            }
            Protocol::Gst => json!({"type": "peer", "sessionId": conversation,
                "ice": {"candidate": candidate, "sdpMLineIndex": 0}}),
        }
        .to_string()
    };
    let unpadded = build(1);
    build(1 + FRAME_BYTES.saturating_sub(unpadded.len()))
}

fn sent_ns_of(protocol: Protocol, v: &Value) -> Option<u64> {
    let candidate = match protocol {
        Protocol::Wilddog => v["msg"]["sdp"].as_str(),
        Protocol::Gst => v["ice"]["candidate"].as_str(),
    }?;
    candidate.split(' ').nth(5)?.parse().ok()
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn main() -> anyhow::Result<()> {
    let opts = Arc::new(parse_args()?);
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(drive(opts))
}

async fn drive(opts: Arc<Options>) -> anyhow::Result<()> {
    let mut child = std::process::Command::new(&opts.command[0])
        .args(&opts.command[1..])
        .stdin(std::process::Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {:?}", opts.command))?;
    let pid = child.id();
    let result = measure(&opts, pid).await;
    let _ = child.kill();
    let _ = child.wait();
    result
}

async fn measure(opts: &Arc<Options>, pid: u32) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(opts.addr).await.is_err() {
        if Instant::now() > deadline {
            bail!("the server did not listen on {} within 10 s", opts.addr);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let protocol = opts.protocol;
    let name = match protocol {
        Protocol::Wilddog => "wilddog",
        Protocol::Gst => "gst-webrtc-signalling-server",
    };
    println!("server {name} pid {pid} on {}", opts.addr);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_before = proc_status_kib(pid, "VmRSS:");

    // 1: idle connections.
    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(HANDSHAKES_IN_FLIGHT));
    let mut tasks = Vec::with_capacity(opts.idle);
    for i in 0..opts.idle {
        let (gate, opts) = (gate.clone(), opts.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire().await?;
            open(&opts, &format!("idle-{i}"), "producer").await.map(|(ws, _)| ws)
        }));
    }
    let mut idle_sockets = Vec::with_capacity(opts.idle);
    for t in tasks {
        idle_sockets.push(t.await??);
    }
    let took = started.elapsed().as_secs_f64();
    println!(
        "idle: {} connections authenticated/registered in {took:.2} s = {:.0}/s",
        opts.idle,
        opts.idle as f64 / took
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_idle = proc_status_kib(pid, "VmRSS:");
    println!(
        "server VmRSS {rss_before} KiB before, {rss_idle} KiB with {} idle; per connection: {:.2} KiB",
        opts.idle,
        rss_idle.saturating_sub(rss_before) as f64 / opts.idle.max(1) as f64
    );

    // 2: live pairs.
    let mut pairs = Vec::with_capacity(opts.pairs);
    for p in 0..opts.pairs {
        pairs.push(open_pair(opts, p).await?);
    }
    let sample = candidate_frame(protocol, &pairs[0].conversation, &pairs[0].to, 0, 1);
    println!("{} pairs; relayed frame: {} bytes, e.g. {sample}", opts.pairs, sample.len());
    let epoch = Instant::now();
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for pair in pairs {
        senders.push(Arc::new(Mutex::new((pair.caller, pair.conversation, pair.to))));
        receivers.push(Arc::new(Mutex::new(pair.callee)));
    }

    for (label, rate) in [("saturation", None), ("fixed 10,000 frames/s", Some(FIXED_RATE))] {
        let stop = Arc::new(AtomicBool::new(false));
        let received = Arc::new(AtomicU64::new(0));
        let measuring = Arc::new(AtomicBool::new(false));
        let latencies = Arc::new(std::sync::Mutex::new(Vec::<u64>::new()));
        let mut handles = Vec::new();
        for p in 0..opts.pairs {
            let window = Arc::new(Semaphore::new(WINDOW));
            let (sender, receiver) = (senders[p].clone(), receivers[p].clone());
            let (stop_s, stop_r) = (stop.clone(), stop.clone());
            let window_r = window.clone();
            let interval = rate.map(|r| Duration::from_secs_f64(opts.pairs as f64 / r as f64));
            handles.push(tokio::spawn(async move {
                let mut guard = sender.lock().await;
                let (ws, conversation, to) = &mut *guard;
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
                    let Ok(permit) = window.acquire().await else { break };
                    permit.forget();
                    let sent_ns = epoch.elapsed().as_nanos() as u64;
                    let frame = candidate_frame(protocol, conversation, to, n, sent_ns);
                    if ws.send(Message::text(frame)).await.is_err() {
                        break;
                    }
                    n += 1;
                }
                anyhow::Ok(())
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
                            Ok(other) => bail!("receiver socket ended: {other:?}"),
                        };
                    let now_ns = epoch.elapsed().as_nanos() as u64;
                    window_r.add_permits(1);
                    let v: Value = serde_json::from_str(&msg)?;
                    let Some(sent_ns) = sent_ns_of(protocol, &v) else {
                        bail!("not a relayed candidate: {v}");
                    };
                    if measuring.load(Ordering::Relaxed) {
                        received.fetch_add(1, Ordering::Relaxed);
                        local.push(now_ns.saturating_sub(sent_ns) / 1000);
                    }
                }
                if let Ok(mut l) = latencies.lock() {
                    l.extend(local);
                }
                anyhow::Ok(())
            }));
        }
        tokio::time::sleep(Duration::from_secs(1)).await; // warm-up
        let cpu0 = cpu_seconds(pid);
        measuring.store(true, Ordering::Relaxed);
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_secs(opts.seconds)).await;
        measuring.store(false, Ordering::Relaxed);
        let elapsed = t0.elapsed().as_secs_f64();
        let cpu = cpu_seconds(pid) - cpu0;
        stop.store(true, Ordering::Relaxed);
        for h in handles {
            h.await??;
        }
        for r in &receivers {
            let mut ws = r.lock().await;
            while let Ok(Some(_)) =
                tokio::time::timeout(Duration::from_millis(100), ws.next()).await
            {}
        }
        let mut lat =
            std::mem::take(&mut *latencies.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
        lat.sort_unstable();
        let n = received.load(Ordering::Relaxed);
        println!(
            "relay, {label}: {n} frames in {elapsed:.2} s = {:.0} frames/s over {} pairs; latency p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms; server CPU {:.0}% of one core ({:.1} µs/frame)",
            n as f64 / elapsed,
            opts.pairs,
            percentile(&lat, 0.50),
            percentile(&lat, 0.99),
            percentile(&lat, 1.0),
            100.0 * cpu / elapsed,
            1e6 * cpu / n.max(1) as f64,
        );
    }
    println!(
        "server VmRSS at the end: {} KiB (VmHWM {} KiB)",
        proc_status_kib(pid, "VmRSS:"),
        proc_status_kib(pid, "VmHWM:")
    );
    drop(idle_sockets);
    Ok(())
}
