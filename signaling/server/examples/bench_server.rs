//! Benchmark of the signaling server (a program, not a test).
//!
//! ```text
//! cargo run --release -p wilddog-server --example bench_server -- [IDLE_CONNECTIONS] [PAIRS] [SECONDS]
//! ```
//!
//! Runs the server in a child process (this program re-executed with `serve`), so that its
//! resident memory (VmRSS from /proc/PID/status) and CPU time are the server's alone, and
//! drives it from this process over loopback WebSockets:
//!
//! 1. connects + auths per second, opening IDLE_CONNECTIONS (default 10,000) sockets that
//!    each send `connect` and wait for `connack`, 200 handshakes in flight;
//! 2. resident memory per idle authenticated connection: server VmRSS with them open, minus
//!    before, divided by their number;
//! 3. relayed frames per second at saturation: PAIRS (default 50) live conversations, each
//!    caller sending `candidate` frames to its callee as fast as it can (at most 16 in flight
//!    per pair), for SECONDS (default 5), with p50/p99 relay latency (send → receive, one
//!    clock: both ends are in this process);
//! 4. p50/p99 relay latency at a fixed 10,000 frames/s over the same pairs.

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
use wilddog_server::{DEV_APP_ID, ServerConfig, mint_token};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Frames in flight per pair at saturation: enough to keep the server busy, few enough that
/// latency is not just queueing in the benchmark itself.
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
"#;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    // Each process holds one end of every socket.
    let fds = rlimit::increase_nofile_limit(65_536)?;
    if args.get(1).map(String::as_str) == Some("serve") {
        return serve();
    }
    let idle: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let pairs: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(50);
    let seconds: u64 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(5);
    if fds < (idle + 2 * pairs + 100) as u64 {
        return Err(format!(
            "{idle} idle connections need more file descriptors than the limit {fds}"
        )
        .into());
    }
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(drive(
        idle,
        pairs,
        Duration::from_secs(seconds),
    ))
}

/// The child: the server on 127.0.0.1 port 0, its address on stdout; stops when stdin closes.
fn serve() -> Result<(), Box<dyn std::error::Error>> {
    let config = ServerConfig::from_toml_str(BENCH_CONFIG)?;
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
    // Fields 14 and 15 of stat; after the comm they are at index 11 and 12.
    let ticks: f64 =
        fields.get(11..13).map_or(0.0, |f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum());
    ticks / 100.0 // USER_HZ
}

async fn open(addr: SocketAddr, uid: &str, config: &ServerConfig) -> Ws {
    let token = mint_token(config, DEV_APP_ID, uid, Duration::from_secs(3600)).unwrap();
    let (mut ws, _) =
        tokio_tungstenite::connect_async_with_config(format!("ws://{addr}/ws"), None, true)
            .await
            .unwrap();
    ws.send(Message::text(
        json!({"type": "connect", "msg": {"token": token, "appId": DEV_APP_ID}}).to_string(),
    ))
    .await
    .unwrap();
    let connack = next_json(&mut ws).await;
    assert_eq!(connack["msg"]["code"], 0, "{connack}");
    ws
}

async fn next_json(ws: &mut Ws) -> Value {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(&t).unwrap(),
            Some(Ok(_)) => continue,
            other => panic!("socket ended: {other:?}"),
        }
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

async fn drive(
    idle: usize,
    pairs: usize,
    run_for: Duration,
) -> Result<(), Box<dyn std::error::Error>> {
    let exe = std::env::current_exe()?;
    let mut child = std::process::Command::new(exe)
        .arg("serve")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let pid = child.id();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().ok_or("no stdout")?).read_line(&mut line)?;
    let addr: SocketAddr = line.trim().parse()?;
    let config = Arc::new(ServerConfig::from_toml_str(BENCH_CONFIG)?);
    println!("server pid {pid} on {addr}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_before = proc_status_kib(pid, "VmRSS:");
    println!("server VmRSS before connections: {rss_before} KiB");

    // 1 + 2: idle authenticated connections.
    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(200));
    let mut tasks = Vec::with_capacity(idle);
    for i in 0..idle {
        let (gate, config) = (gate.clone(), config.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire().await.unwrap();
            open(addr, &format!("idle-{i}"), &config).await
        }));
    }
    let mut idle_sockets = Vec::with_capacity(idle);
    for t in tasks {
        idle_sockets.push(t.await?);
    }
    let took = started.elapsed();
    println!(
        "connects+auths: {idle} in {:.2} s = {:.0}/s (200 handshakes in flight)",
        took.as_secs_f64(),
        idle as f64 / took.as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_idle = proc_status_kib(pid, "VmRSS:");
    println!(
        "server VmRSS with {idle} idle authenticated connections: {rss_idle} KiB; per connection: {:.2} KiB",
        (rss_idle.saturating_sub(rss_before)) as f64 / idle as f64
    );

    // 3 + 4: relaying between live pairs (the idle sockets stay open meanwhile).
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for p in 0..pairs {
        let mut caller = open(addr, &format!("caller-{p}"), &config).await;
        let mut callee = open(addr, &format!("callee-{p}"), &config).await;
        let cid = format!("bench-{p}");
        caller
            .send(Message::text(
                json!({"type": "call", "cid": cid, "to": format!("callee-{p}"), "msg": {}})
                    .to_string(),
            ))
            .await?;
        assert_eq!(next_json(&mut callee).await["type"], "call");
        callee
            .send(Message::text(
                json!({"type": "accept", "cid": cid, "to": format!("caller-{p}"), "msg": {}})
                    .to_string(),
            ))
            .await?;
        assert_eq!(next_json(&mut caller).await["type"], "accept");
        senders.push((caller, cid, format!("callee-{p}")));
        receivers.push(callee);
    }
    let epoch = Instant::now();
    let senders: Vec<_> = senders.into_iter().map(|s| Arc::new(Mutex::new(s))).collect();
    let receivers: Vec<_> = receivers.into_iter().map(|r| Arc::new(Mutex::new(r))).collect();

    for (label, rate) in [("saturation", None), ("fixed 10,000 frames/s", Some(10_000u64))] {
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
            let per_pair_interval = rate.map(|r| Duration::from_secs_f64(pairs as f64 / r as f64));
            handles.push(tokio::spawn(async move {
                let mut guard = sender.lock().await;
                let (ws, cid, to) = &mut *guard;
                let mut tick = per_pair_interval.map(|i| {
                    let mut t = tokio::time::interval(i);
                    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                    t
                });
                let mut n = 0u64;
                while !stop_s.load(Ordering::Relaxed) {
                    if let Some(t) = tick.as_mut() {
                        t.tick().await;
                    }
                    window.acquire().await.unwrap().forget();
                    let sent_ns = epoch.elapsed().as_nanos() as u64;
                    let frame = json!({"type": "candidate", "cid": cid, "to": to, "msg": {
                        "sdpMLineIndex": 0, "sdpMid": "0",
                        "sdp": format!("candidate:{n} 1 udp 2122260223 127.0.0.1 {sent_ns} typ host")
                    }});
                    if ws.send(Message::text(frame.to_string())).await.is_err() {
                        break;
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
                    let v: Value = serde_json::from_str(&msg).unwrap();
                    let sent_ns: u64 = v["msg"]["sdp"]
                        .as_str()
                        .and_then(|s| s.split(' ').nth(5))
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(now_ns);
                    if measuring.load(Ordering::Relaxed) {
                        received.fetch_add(1, Ordering::Relaxed);
                        local.push((now_ns - sent_ns) / 1000);
                    }
                }
                latencies.lock().unwrap().extend(local);
            }));
        }
        tokio::time::sleep(Duration::from_secs(1)).await; // warm-up
        let cpu0 = cpu_seconds(pid);
        measuring.store(true, Ordering::Relaxed);
        let t0 = Instant::now();
        tokio::time::sleep(run_for).await;
        measuring.store(false, Ordering::Relaxed);
        let elapsed = t0.elapsed().as_secs_f64();
        let cpu = cpu_seconds(pid) - cpu0;
        stop.store(true, Ordering::Relaxed);
        for h in handles {
            h.await?;
        }
        // Drain what is still in flight so that the next phase starts clean.
        for r in &receivers {
            let mut ws = r.lock().await;
            while let Ok(Some(_)) =
                tokio::time::timeout(Duration::from_millis(100), ws.next()).await
            {}
        }
        let mut lat = std::mem::take(&mut *latencies.lock().unwrap());
        lat.sort_unstable();
        let n = received.load(Ordering::Relaxed);
        println!(
            "relay, {label}: {n} frames in {elapsed:.2} s = {:.0} frames/s over {pairs} pairs; latency p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms; server CPU {:.0}% of one core ({:.1} µs/frame)",
            n as f64 / elapsed,
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
    drop(child.stdin.take());
    let _ = child.wait();
    Ok(())
}
