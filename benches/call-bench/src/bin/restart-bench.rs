//! `restart-bench`: how long a `wilddogcall` call takes to get its media back after its path
//! dies (docs/benchmarks.md, "Media after a path change").
//!
//! ```text
//! restart-bench [--runs N (10)] [--dimension 480p]
//! ```
//!
//! Runs itself inside a private network namespace (`unshare --net`, `lo` up) with an
//! in-process signaling server. Each run is one call between two `wilddogcall` pipelines
//! (test pattern and tone both ways, ICE on 127.0.0.1); once both decode video, every UDP port
//! bound at that moment (the call's candidates) is black-holed with nftables, so the old path
//! is gone and any new one (new ports) works. Per run it prints, from the black hole:
//! **noticed** (the first new peer connection made for the ICE restart), **new path → media**
//! (from that moment to the first frames decoded again on both ends) and **total**; then the
//! p50 and max of each over the runs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use gst::prelude::*;

const IN_NETNS: &str = "RESTART_BENCH_IN_NETNS";
const TABLE: &str = "restart_bench";
/// Longest a run may take to get media back before it counts as failed.
const GIVE_UP: Duration = Duration::from_secs(30);

struct Args {
    runs: usize,
    dimension: String,
}

fn parse_args() -> Result<Args> {
    let mut args = Args { runs: 10, dimension: "480p".into() };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().with_context(|| format!("{name} needs a value"));
        match a.as_str() {
            "--runs" => args.runs = value("--runs")?.parse().context("--runs: a number")?,
            "--dimension" => args.dimension = value("--dimension")?,
            "-h" | "--help" => {
                println!("restart-bench [--runs N (10)] [--dimension 480p]");
                std::process::exit(0);
            }
            other => bail!("unknown argument `{other}` (see --help)"),
        }
    }
    Ok(args)
}

fn main() -> Result<()> {
    let args = parse_args()?;
    if std::env::var_os(IN_NETNS).is_none() {
        let status = std::process::Command::new("unshare")
            .args(["--net", "sh", "-c", "ip link set lo up && exec \"$@\"", "sh"])
            .arg(std::env::current_exe()?)
            .args(std::env::args_os().skip(1))
            .env(IN_NETNS, "1")
            .status()
            .context("cannot run `unshare --net` (util-linux; needs root)")?;
        std::process::exit(status.code().unwrap_or(1));
    }
    gst::init()?;
    gstwilddog::plugin_register_static()?;
    let restarts = watch_restarts();
    let server = Server::start()?;
    let mut results = Vec::new();
    for run in 0..args.runs {
        match one_run(&server, run, &args.dimension, &restarts) {
            Ok(r) => {
                println!(
                    "run {run:>2}: noticed {:>5} ms, new path → media {:>5} ms, total {:>5} ms",
                    r.noticed.as_millis(),
                    r.resumed.as_millis(),
                    r.total.as_millis()
                );
                results.push(r);
            }
            Err(e) => println!("run {run:>2}: FAILED: {e:#}"),
        }
        nft_clear();
    }
    if results.is_empty() {
        bail!("no run got its media back");
    }
    let stat = |f: fn(&RunResult) -> Duration| {
        let mut v: Vec<u128> = results.iter().map(|r| f(r).as_millis()).collect();
        v.sort_unstable();
        (v[v.len() / 2], v[v.len() - 1])
    };
    let (n50, nmax) = stat(|r| r.noticed);
    let (r50, rmax) = stat(|r| r.resumed);
    let (t50, tmax) = stat(|r| r.total);
    println!(
        "\n{} of {} runs got their media back ({}, VP8 + Opus both ways)",
        results.len(),
        args.runs,
        args.dimension
    );
    println!("| | p50 | max |\n|---|---|---|");
    println!("| black hole → noticed (new peer connection) | {n50} ms | {nmax} ms |");
    println!("| **new path → media on both ends** | **{r50} ms** | **{rmax} ms** |");
    println!("| black hole → media on both ends | {t50} ms | {tmax} ms |");
    // Do not run GStreamer's and OpenSSL's exit handlers under still-running threads.
    std::process::exit(0);
}

struct RunResult {
    noticed: Duration,
    resumed: Duration,
    total: Duration,
}

/// When each "new peer connection for an ICE restart" was logged (the element's INFO line).
fn watch_restarts() -> Arc<Mutex<Vec<Instant>>> {
    let seen: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let store = seen.clone();
    // Our function only: the default one would print the element's INFO lines too.
    gst::log::remove_default_log_function();
    gst::log::set_threshold_for_name("wilddogcall", gst::DebugLevel::Info);
    gst::log::add_log_function(move |cat, _, _, _, _, _, msg| {
        if cat.name() == "wilddogcall"
            && msg.get().is_some_and(|m| m.starts_with("new peer connection for an ICE restart"))
        {
            store.lock().unwrap_or_else(|e| e.into_inner()).push(Instant::now());
        }
    });
    seen
}

fn one_run(
    server: &Server,
    run: usize,
    dimension: &str,
    restarts: &Arc<Mutex<Vec<Instant>>>,
) -> Result<RunResult> {
    let (callee, caller) = (format!("bob{run}"), format!("alice{run}"));
    let bob = Endpoint::new(server, &callee, None, dimension)?;
    bob.pipeline.set_state(gst::State::Playing)?;
    std::thread::sleep(Duration::from_millis(300));
    let alice = Endpoint::new(server, &caller, Some(&callee), dimension)?;
    alice.pipeline.set_state(gst::State::Playing)?;
    let until = Instant::now() + Duration::from_secs(20);
    while alice.frames() < 15 || bob.frames() < 15 {
        if Instant::now() > until {
            bail!("the call did not start");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let ports = bound_udp_ports(server.port);
    nft_drop(&ports)?;
    let holed = Instant::now();
    let (a0, b0) = (alice.frames(), bob.frames());
    // The stall (a few frames decoded in the first instants do not count), then frames again.
    std::thread::sleep(Duration::from_millis(300));
    let (a1, b1) = (alice.frames().max(a0), bob.frames().max(b0));
    let mut back: [Option<Instant>; 2] = [None, None];
    while back.iter().any(Option::is_none) {
        if holed.elapsed() > GIVE_UP {
            bail!(
                "no media within {GIVE_UP:?} (frames {a1}→{}, {b1}→{})",
                alice.frames(),
                bob.frames()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
        for (slot, (now, base)) in back.iter_mut().zip([(alice.frames(), a1), (bob.frames(), b1)]) {
            if slot.is_none() && now >= base + 3 {
                *slot = Some(Instant::now());
            }
        }
    }
    let resumed_at = back.into_iter().flatten().max().unwrap_or(holed);
    let noticed_at = restarts
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .copied()
        .find(|t| *t > holed)
        .context("no new peer connection was made")?;
    drop(alice);
    drop(bob);
    Ok(RunResult {
        noticed: noticed_at - holed,
        resumed: resumed_at.saturating_duration_since(noticed_at),
        total: resumed_at - holed,
    })
}

/// Every UDP port bound in this namespace but the server's (its STUN port).
fn bound_udp_ports(server_port: u16) -> Vec<u16> {
    let table = std::fs::read_to_string("/proc/net/udp").unwrap_or_default();
    let mut ports: Vec<u16> = table
        .lines()
        .skip(1)
        .filter_map(|l| {
            u16::from_str_radix(l.split_whitespace().nth(1)?.rsplit(':').next()?, 16).ok()
        })
        .filter(|p| *p != server_port)
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

fn nft(args: &str) -> Result<()> {
    let status = std::process::Command::new("sh")
        .args(["-c", &format!("nft {args}")])
        .status()
        .context("cannot run nft (apt-get install nftables)")?;
    if !status.success() {
        bail!("nft {args} failed");
    }
    Ok(())
}

fn nft_drop(ports: &[u16]) -> Result<()> {
    let set = ports.iter().map(u16::to_string).collect::<Vec<_>>().join(",");
    nft(&format!("add table inet {TABLE}"))?;
    nft(&format!("add chain inet {TABLE} c '{{ type filter hook input priority 0; }}'"))?;
    nft(&format!("add rule inet {TABLE} c udp dport '{{ {set} }}' drop"))?;
    nft(&format!("add rule inet {TABLE} c udp sport '{{ {set} }}' drop"))
}

fn nft_clear() {
    let _ = nft(&format!("delete table inet {TABLE}"));
}

/// The signaling server, in-process on 127.0.0.1:0.
struct Server {
    url: String,
    port: u16,
    config: wilddog_server::ServerConfig,
    _runtime: tokio::runtime::Runtime,
}

impl Server {
    fn start() -> Result<Server> {
        let config = wilddog_server::ServerConfig::development();
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let port = listener.local_addr()?.port();
        let run_config = config.clone();
        runtime.spawn(async move {
            let _ = wilddog_server::run(listener, run_config, std::future::pending::<()>()).await;
        });
        Ok(Server { url: format!("ws://127.0.0.1:{port}/ws"), port, config, _runtime: runtime })
    }

    fn token(&self, uid: &str) -> Result<String> {
        Ok(wilddog_server::mint_token(
            &self.config,
            wilddog_server::config::DEV_APP_ID,
            uid,
            Duration::from_secs(3600),
        )?)
    }
}

/// One side: test pattern and tone into a `wilddogcall`, its decoded video counted.
struct Endpoint {
    pipeline: gst::Pipeline,
    frames: Arc<AtomicU64>,
}

impl Endpoint {
    fn new(server: &Server, uid: &str, calling: Option<&str>, dimension: &str) -> Result<Endpoint> {
        let remote = calling.map(|r| format!("remote-uid={r}")).unwrap_or_default();
        let launch = format!(
            "wilddogcall name=call server={} app-id={} token={} ice-local-addresses=127.0.0.1 \
               dimension={dimension} {remote} \
             videotestsrc is-live=true pattern=ball ! video/x-raw,width=640,height=480,framerate=15/1 ! call.video_sink \
             audiotestsrc is-live=true ! call.audio_sink",
            server.url,
            wilddog_server::config::DEV_APP_ID,
            server.token(uid)?,
        );
        let pipeline = gst::parse::launch(&launch)?
            .downcast::<gst::Pipeline>()
            .map_err(|_| anyhow::anyhow!("not a pipeline"))?;
        let call = pipeline.by_name("call").context("the call element")?;
        let frames = Arc::new(AtomicU64::new(0));
        let counter = frames.clone();
        let weak = pipeline.downgrade();
        call.connect_pad_added(move |_, pad| {
            let Some(pipeline) = weak.upgrade() else { return };
            let Ok(sink) = gst::ElementFactory::make("fakesink").property("sync", false).build()
            else {
                return;
            };
            if pad.name() == "video_src" {
                let counter = counter.clone();
                if let Some(sink_pad) = sink.static_pad("sink") {
                    sink_pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
                        counter.fetch_add(1, Ordering::Relaxed);
                        gst::PadProbeReturn::Ok
                    });
                }
            }
            let _ = pipeline.add(&sink);
            let _ = sink.sync_state_with_parent();
            if let Some(sink_pad) = sink.static_pad("sink") {
                let _ = pad.link(&sink_pad);
            }
        });
        Ok(Endpoint { pipeline, frames })
    }

    fn frames(&self) -> u64 {
        self.frames.load(Ordering::Relaxed)
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}
