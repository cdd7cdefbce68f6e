//! `call-bench`: call setup, glass-to-glass latency, CPU and memory per call, for a
//! `wilddogcall` call through the real server, two bare webrtcbins (the floor), and the
//! gst-plugins-rs `webrtcsink` -> `webrtcsrc` anchor (a separate binary, see
//! `benches/anchors`). Same caps everywhere: 640x480@15 VP8 + Opus, loopback only.
//!
//! ```text
//! call-bench [--quick] [--calls N] [--call-secs S] [--out DIR] [--anchor-bin PATH]
//! call-bench --network [--quick] [--secs S] [--links L,...] [--scenarios S,...] [--jobs N]
//!            [--anchor-bin PATH] [--chromium-net-script benches/chromium/network.mjs] [--out DIR]
//! call-bench --density [--quick] --runner-bin PATH [--anchor-bin PATH] [--dims 480p,240p]
//!            [--counts 1,2,4,8,16] [--max-calls N] [--window-secs S] [--no-bisect] [--out DIR]
//!            [--scenarios wilddog,wilddog-one-way,webrtcsink] [--wilddogcall-props K=V,...]
//! call-bench --encoder-quality [--frames N]
//! ```
//!
//! `--encoder-quality`: each VP8 encoder speed's picture (luma PSNR) and cost (module
//! `encoder_quality`), ours and webrtcsink's.
//!
//! `--network`: the shaped-network benchmark (`net.rs`).
//!
//! `--density`: how many calls one process serves (module `density`): an echo runner with N
//! concurrent callers against webrtcsink serving N webrtcsrc consumers, each caller or
//! consumer a process of its own.
//!
//! Runs itself inside a private network namespace (`unshare --net`, `lo` up, plus a veth
//! pair holding 127.0.0.2 for the anchor, whose ICE cannot be restricted); each scenario runs
//! in its own child process so that its CPU time and resident memory are its own. Prints a
//! table and writes `results.json` and `plot.svg` into the output directory.

mod density;
mod encoder_quality;
mod measure;
mod net;
mod netmeasure;
mod plot;
mod scenarios;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use measure::{ScenarioResult, percentile};

const IN_NETNS: &str = "CALL_BENCH_IN_NETNS";

/// Sets up the namespace: loopback up, and a veth pair renamed away from `veth*` holding
/// 127.0.0.2, the only address libnice gathers for elements that cannot be told to use
/// loopback (see docs/testing-on-loopback.md). Nothing leaves the namespace.
const NETNS_SETUP: &str = "ip link set lo up && ip link add tst0 type veth peer name tst1 && \
    ip addr add 127.0.0.2/32 dev tst0 && ip link set tst0 up && ip link set tst1 up && exec \"$@\"";

struct Args {
    calls: usize,
    call_secs: f64,
    out: PathBuf,
    anchor_bin: Option<PathBuf>,
    child: Option<String>,
    quick: bool,
    chromium_script: Option<PathBuf>,
    serve: bool,
    network: bool,
    secs: Option<f64>,
    links: Option<Vec<String>>,
    scenarios: Option<Vec<String>>,
    jobs: usize,
    chromium_net_script: Option<PathBuf>,
    net_run: Option<(String, Vec<String>)>,
    net_scenario: Option<String>,
    net_endpoint: bool,
    server: Option<String>,
    token: Option<String>,
    remote_uid: Option<String>,
    density: bool,
    density_caller: bool,
    receive_only: bool,
    runner_bin: Option<PathBuf>,
    uid: Option<String>,
    dimension: Option<String>,
    dims: Option<Vec<String>>,
    counts: Option<Vec<usize>>,
    max_calls: Option<usize>,
    window_secs: Option<f64>,
    no_bisect: bool,
    encoder_quality: bool,
    frames: usize,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        calls: 20,
        call_secs: 10.0,
        out: PathBuf::from("bench-out"),
        anchor_bin: None,
        child: None,
        quick: false,
        chromium_script: None,
        serve: false,
        network: false,
        secs: None,
        links: None,
        scenarios: None,
        jobs: 2,
        chromium_net_script: None,
        net_run: None,
        net_scenario: None,
        net_endpoint: false,
        server: None,
        token: None,
        remote_uid: None,
        density: false,
        density_caller: false,
        receive_only: false,
        runner_bin: None,
        uid: None,
        dimension: None,
        dims: None,
        counts: None,
        max_calls: None,
        window_secs: None,
        no_bisect: false,
        encoder_quality: false,
        frames: 300,
    };
    let mut it = std::env::args().skip(1);
    let mut calls_set = false;
    let mut secs_set = false;
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().with_context(|| format!("{name} needs a value"));
        match a.as_str() {
            "--quick" => args.quick = true,
            "--calls" => {
                args.calls = value("--calls")?.parse().context("--calls: a number")?;
                calls_set = true;
            }
            "--call-secs" => {
                args.call_secs = value("--call-secs")?.parse().context("--call-secs: seconds")?;
                secs_set = true;
            }
            "--out" => args.out = value("--out")?.into(),
            "--anchor-bin" => args.anchor_bin = Some(value("--anchor-bin")?.into()),
            "--child" => args.child = Some(value("--child")?),
            "--chromium-script" => args.chromium_script = Some(value("--chromium-script")?.into()),
            "--serve" => args.serve = true,
            "--network" => args.network = true,
            "--secs" => args.secs = Some(value("--secs")?.parse().context("--secs: seconds")?),
            "--links" => args.links = Some(net::list(&value("--links")?)),
            "--scenarios" => args.scenarios = Some(net::list(&value("--scenarios")?)),
            "--jobs" => args.jobs = value("--jobs")?.parse().context("--jobs: a number")?,
            "--chromium-net-script" => {
                args.chromium_net_script = Some(value("--chromium-net-script")?.into())
            }
            "--net-run" => {
                let link = value("--net-run")?;
                if it.next().as_deref() != Some("--") {
                    bail!("--net-run LINK -- COMMAND...");
                }
                args.net_run = Some((link, it.by_ref().collect()));
            }
            "--net-scenario" => args.net_scenario = Some(value("--net-scenario")?),
            "--net-endpoint" => args.net_endpoint = true,
            "--server" => args.server = Some(value("--server")?),
            "--token" => args.token = Some(value("--token")?),
            "--remote-uid" => args.remote_uid = Some(value("--remote-uid")?),
            "--density" => args.density = true,
            "--density-caller" => args.density_caller = true,
            "--receive-only" => args.receive_only = true,
            "--runner-bin" => args.runner_bin = Some(value("--runner-bin")?.into()),
            "--uid" => args.uid = Some(value("--uid")?),
            "--dimension" => args.dimension = Some(value("--dimension")?),
            "--dims" => {
                args.dims = Some(value("--dims")?.split(',').map(|d| d.trim().to_owned()).collect())
            }
            "--counts" => {
                let counts: Result<Vec<usize>, _> =
                    value("--counts")?.split(',').map(|n| n.trim().parse::<usize>()).collect();
                args.counts = Some(counts.context("--counts: numbers, e.g. 1,2,4")?);
            }
            "--max-calls" => {
                args.max_calls =
                    Some(value("--max-calls")?.parse().context("--max-calls: a number")?)
            }
            "--window-secs" => {
                args.window_secs =
                    Some(value("--window-secs")?.parse().context("--window-secs: seconds")?)
            }
            "--no-bisect" => args.no_bisect = true,
            "--encoder-quality" => args.encoder_quality = true,
            "--frames" => args.frames = value("--frames")?.parse().context("--frames: a number")?,
            "--vp8enc-props" => {
                let v = value("--vp8enc-props")?;
                // SAFETY: single-threaded here, before anything reads the environment.
                unsafe { std::env::set_var(scenarios::VP8ENC_PROPS_ENV, v) };
            }
            "--wilddogcall-props" => {
                let v = value("--wilddogcall-props")?;
                // SAFETY: single-threaded here, before anything reads the environment.
                unsafe { std::env::set_var(density::WILDDOGCALL_PROPS_ENV, v) };
            }
            "-h" | "--help" => {
                println!(
                    "call-bench [--quick] [--calls N (20; quick 3)] [--call-secs S (10; quick 3)] [--out DIR (bench-out)] [--anchor-bin PATH] [--chromium-script benches/chromium/anchor.mjs] [--vp8enc-props K=V,... (experiment: set on our scenarios' vp8enc)]"
                );
                println!(
                    "call-bench --density [--quick] --runner-bin PATH [--anchor-bin PATH (webrtcsink-anchor)] [--dims 480p,240p (quick 240p)] [--counts 1,2,4,8,16 (quick 1,2)] [--max-calls N (64)] [--window-secs S (10; quick 3)] [--no-bisect] [--out DIR] [--scenarios wilddog,wilddog-one-way,webrtcsink] [--wilddogcall-props K=V,... (experiment: set on the serving runner's wilddogcall)]"
                );
                println!(
                    "call-bench --encoder-quality [--frames N (300)] [--vp8enc-props K=V,...]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument `{other}` (see --help)"),
        }
    }
    if args.quick {
        if !calls_set {
            args.calls = 3;
        }
        if !secs_set {
            args.call_secs = 3.0;
        }
    }
    Ok(args)
}

fn main() -> Result<()> {
    let args = parse_args()?;
    if args.encoder_quality {
        return encoder_quality::run(args.frames);
    }
    if args.serve {
        // For the Chromium anchor: our server alone, until killed.
        return scenarios::serve_forever();
    }
    if let Some((link, cmd)) = &args.net_run {
        return net::net_run(link, cmd);
    }
    if let Some(name) = &args.net_scenario {
        let secs = args.secs.unwrap_or(30.0);
        match name.as_str() {
            "wilddog" => net::scenario_wilddog(secs)?,
            other => bail!("unknown network scenario {other}"),
        }
        // Do not run GStreamer's and OpenSSL's exit handlers under still-running threads.
        std::process::exit(0);
    }
    if args.net_endpoint {
        let server = args.server.as_deref().context("--net-endpoint needs --server")?;
        let token = args.token.as_deref().context("--net-endpoint needs --token")?;
        net::endpoint(server, token, args.remote_uid.as_deref(), args.secs.unwrap_or(30.0))?;
        std::process::exit(0);
    }
    if args.network {
        // Each job makes its own namespace: this process stays where it is.
        let quick = args.quick;
        let a = net::NetArgs {
            quick,
            secs: args.secs.unwrap_or(if quick { 8.0 } else { 30.0 }),
            links: args.links.clone().unwrap_or_else(|| {
                if quick {
                    vec!["250kbit".into()]
                } else {
                    net::LINKS.iter().map(|(n, _)| n.to_string()).collect()
                }
            }),
            scenarios: args.scenarios.clone().unwrap_or_else(|| {
                let mut s = vec!["wilddog".to_string()];
                if args.anchor_bin.is_some() {
                    s.push("webrtcsink".into());
                }
                if args.chromium_net_script.is_some() {
                    s.extend(["chromium".into(), "mixed".into()]);
                }
                s
            }),
            jobs: args.jobs,
            anchor_bin: args.anchor_bin.clone(),
            chromium_script: args.chromium_net_script.clone(),
            out: args.out.clone(),
        };
        return net::run_network(&a);
    }
    if args.density_caller {
        let need = |v: &Option<String>, name: &str| {
            v.clone().with_context(|| format!("--density-caller needs {name}"))
        };
        let result = density::run_caller(
            &need(&args.server, "--server")?,
            &need(&args.uid, "--uid")?,
            &need(&args.remote_uid, "--remote-uid")?,
            &need(&args.dimension, "--dimension")?,
            args.receive_only,
        );
        if let Err(e) = &result {
            println!("FAILED {e:#}");
        }
        std::process::exit(0);
    }
    if let Some(child) = &args.child {
        let plan = scenarios::Plan { calls: args.calls, call_secs: args.call_secs };
        let result = match child.as_str() {
            "wilddog" => scenarios::run_wilddog(&plan)?,
            "webrtcbin-pair" => scenarios::run_bare_pair(&plan)?,
            other => bail!("unknown scenario {other}"),
        };
        result.print();
        // Do not run GStreamer's and OpenSSL's exit handlers under still-running threads.
        std::process::exit(0);
    }
    if std::env::var_os(IN_NETNS).is_none() {
        return reexec_in_netns();
    }
    if args.density {
        return density::run(&density_options(&args)?);
    }
    run_all(&args)
}

/// `--density` options from the command line; `--quick`: 240p, N = 1 and 2, 3 s windows.
fn density_options(args: &Args) -> Result<density::Options> {
    let runner_bin = match &args.runner_bin {
        Some(p) => p.clone(),
        None => {
            // The workspace's build puts it next to call-bench.
            let exe = std::env::current_exe()?;
            exe.with_file_name("wilddog-runner")
        }
    };
    if !runner_bin.exists() {
        bail!("--density needs the wilddog-runner binary: {} does not exist", runner_bin.display());
    }
    let dims_named = args.dims.clone().unwrap_or_else(|| {
        if args.quick { vec!["240p".into()] } else { vec!["480p".into(), "240p".into()] }
    });
    let mut dims = Vec::new();
    for name in dims_named {
        match density::DIMS.iter().find(|d| d.name == name) {
            Some(d) => dims.push(*d),
            None => bail!("--dims: {name} is not one of 480p, 240p"),
        }
    }
    let schedule = args
        .counts
        .clone()
        .unwrap_or_else(|| if args.quick { vec![1, 2] } else { vec![1, 2, 4, 8, 16] });
    let max_n = args.max_calls.unwrap_or(if args.quick { 2 } else { 64 });
    let window = args.window_secs.unwrap_or(if args.quick { 3.0 } else { 10.0 });
    Ok(density::Options {
        runner_bin,
        anchor_bin: args.anchor_bin.clone(),
        dims,
        schedule,
        max_n,
        bisect: !args.no_bisect && !args.quick,
        settle: Duration::from_secs(if args.quick { 2 } else { 3 }),
        window: Duration::from_secs_f64(window),
        out: args.out.clone(),
        systems: args.scenarios.clone(),
    })
}

fn reexec_in_netns() -> Result<()> {
    let exe = std::env::current_exe()?;
    let status = Command::new("unshare")
        .args(["--net", "sh", "-c", NETNS_SETUP, "sh"])
        .arg(&exe)
        .args(std::env::args_os().skip(1))
        .env(IN_NETNS, "1")
        .status()
        .context("cannot run `unshare --net` (util-linux) for a private network namespace")?;
    if !status.success() {
        bail!(
            "call-bench inside the private network namespace exited with {status} (see above; if `unshare --net` or `ip link add … type veth` failed, they need root: CAP_SYS_ADMIN, CAP_NET_ADMIN)"
        );
    }
    Ok(())
}

/// Runs a scenario in a child process and parses its `BENCH-RESULT` line.
fn run_child(name: &str, mut cmd: Command) -> Result<ScenarioResult> {
    eprintln!("== {name} ...");
    let started = Instant::now();
    let output = cmd.output().with_context(|| format!("cannot start scenario {name}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().find_map(|l| l.strip_prefix("BENCH-RESULT "));
    match line {
        Some(json) if output.status.success() => {
            eprintln!("== {name}: done in {:.1} s", started.elapsed().as_secs_f64());
            Ok(serde_json::from_str(json)?)
        }
        _ => {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let tail: Vec<&str> = stderr.lines().rev().take(15).collect();
            bail!(
                "scenario {name} failed ({}): {}",
                output.status,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            )
        }
    }
}

fn run_all(args: &Args) -> Result<()> {
    std::fs::create_dir_all(&args.out)?;
    let exe = std::env::current_exe()?;
    let mut results = Vec::new();
    let mut failures = Vec::new();
    for name in ["wilddog", "webrtcbin-pair"] {
        let mut cmd = Command::new(&exe);
        cmd.args(["--child", name, "--calls", &args.calls.to_string()])
            .args(["--call-secs", &args.call_secs.to_string()]);
        match run_child(name, cmd) {
            Ok(r) => results.push(r),
            Err(e) => failures.push((name.to_string(), format!("{e:#}"))),
        }
    }
    if let Some(anchor) = &args.anchor_bin {
        let mut cmd = Command::new(anchor);
        cmd.args(["--calls", &args.calls.to_string()])
            .args(["--call-secs", &args.call_secs.to_string()]);
        match run_child("webrtcsink", cmd) {
            Ok(r) => results.push(r),
            Err(e) => failures.push(("webrtcsink".into(), format!("{e:#}"))),
        }
    } else {
        failures.push(("webrtcsink".into(), "not run (no --anchor-bin)".into()));
    }
    if let Some(script) = &args.chromium_script {
        let mut cmd = Command::new("node");
        cmd.arg(script)
            .args(["--server-bin".as_ref(), exe.as_os_str()])
            .args(["--calls", &args.calls.to_string()])
            .args(["--call-secs", &args.call_secs.to_string()]);
        match run_child("chromium", cmd) {
            Ok(r) => results.push(r),
            Err(e) => failures.push(("chromium".into(), format!("{e:#}"))),
        }
    }

    let table = table(&results);
    println!("{table}");
    for r in &results {
        let top: Vec<String> =
            r.cpu_by_thread.iter().take(8).map(|(n, v)| format!("{n} {v:.1}")).collect();
        println!("CPU s/call-minute by thread, {}: {}", r.name, top.join(", "));
        if !r.setup_phases_ms.is_empty() {
            let phases: Vec<String> =
                r.setup_phases_ms.iter().map(|(n, v)| format!("{n} {v:.0}")).collect();
            println!("setup phases (median ms since start), {}: {}", r.name, phases.join(", "));
        }
    }
    for (name, why) in &failures {
        println!("MISSING {name}: {why}");
    }
    let machine = machine();
    println!("{machine}");
    let json = serde_json::json!({
        "machine": machine,
        "quick": args.quick,
        "calls": args.calls,
        "call_secs": args.call_secs,
        "results": results,
        "failures": failures,
        "table": table,
    });
    std::fs::write(args.out.join("results.json"), serde_json::to_string_pretty(&json)?)?;
    std::fs::write(args.out.join("table.md"), &table)?;
    std::fs::write(args.out.join("plot.svg"), plot::svg(&results))?;
    println!("wrote {0}/results.json, {0}/table.md, {0}/plot.svg", args.out.display());
    // What CI checks: every requested scenario ran and produced every figure.
    let requested_failures: Vec<&str> = failures
        .iter()
        .filter(|(n, _)| n != "webrtcsink" || args.anchor_bin.is_some())
        .filter(|(n, _)| n != "chromium" || args.chromium_script.is_some())
        .map(|(n, _)| n.as_str())
        .collect();
    if !requested_failures.is_empty() {
        bail!("scenarios failed: {}", requested_failures.join(", "));
    }
    let mut missing = Vec::new();
    for r in &results {
        for (label, f) in figures() {
            if !f(r).is_finite()
                || (label.starts_with("CPU") || label.starts_with("resident")) && f(r) <= 0.0
            {
                missing.push(format!("{}: {label}", r.name));
            }
        }
    }
    if !missing.is_empty() {
        bail!("figures missing: {}", missing.join(", "));
    }
    Ok(())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let nproc = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let load = std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    format!("machine: nproc {nproc}, CPU {cpu}, load average at end {load}")
}

/// How a figure is read from a result.
type Figure = Box<dyn Fn(&ScenarioResult) -> f64>;

/// The figures of the table (lower is better for all): label and how to read it.
fn figures() -> Vec<(&'static str, Figure)> {
    vec![
        ("setup p50 (ms)", Box::new(|r| percentile(&r.setup_ms, 0.5))),
        ("setup p95 (ms)", Box::new(|r| percentile(&r.setup_ms, 0.95))),
        ("glass-to-glass p50 (ms)", Box::new(|r| percentile(&r.g2g_ms, 0.5))),
        ("glass-to-glass p95 (ms)", Box::new(|r| percentile(&r.g2g_ms, 0.95))),
        ("CPU s per call-minute", Box::new(|r| r.cpu_s_per_call_min)),
        ("resident memory (MiB)", Box::new(|r| r.rss_mib)),
    ]
}

fn table(results: &[ScenarioResult]) -> String {
    let ours = results.iter().find(|r| r.name == "wilddog");
    let anchors: Vec<&ScenarioResult> = results.iter().filter(|r| r.name != "wilddog").collect();
    let mut out = String::from("| figure | wilddog |");
    for a in &anchors {
        out.push_str(&format!(" {} |", a.name));
    }
    out.push_str(" wilddog / best anchor |\n|---|---|");
    for _ in &anchors {
        out.push_str("---|");
    }
    out.push_str("---|\n");
    for (label, f) in figures() {
        let fmt = |v: f64| if v.is_nan() { "n/a".to_string() } else { format!("{v:.1}") };
        let ours_v = ours.map(&f).unwrap_or(f64::NAN);
        out.push_str(&format!("| {label} | {} |", fmt(ours_v)));
        let mut best = f64::NAN;
        for a in &anchors {
            let v = f(a);
            out.push_str(&format!(" {} |", fmt(v)));
            if !v.is_nan() && (best.is_nan() || v < best) {
                best = v;
            }
        }
        let ratio = ours_v / best;
        out.push_str(&format!(
            " {} |\n",
            if ratio.is_nan() { "n/a".into() } else { format!("{ratio:.2}x") }
        ));
    }
    out.push_str(&targets(results));
    let n = |r: &ScenarioResult| {
        format!(
            "{}: {} calls, {} g2g samples ({} unreadable)",
            r.name,
            r.setup_ms.len(),
            r.g2g_ms.len(),
            r.g2g_unreadable
        )
    };
    out.push('\n');
    out.push_str(&results.iter().map(n).collect::<Vec<_>>().join("; "));
    out.push('\n');
    out
}

/// The issue's targets, each with our figure, the reference and whether it is met.
fn targets(results: &[ScenarioResult]) -> String {
    let get = |name: &str| results.iter().find(|r| r.name == name);
    let p50 = |r: Option<&ScenarioResult>, f: fn(&ScenarioResult) -> &Vec<f64>| {
        r.map(|r| percentile(f(r), 0.5)).unwrap_or(f64::NAN)
    };
    let ours = get("wilddog");
    let setup = p50(ours, |r| &r.setup_ms);
    let sink_setup = p50(get("webrtcsink"), |r| &r.setup_ms);
    let g2g = p50(ours, |r| &r.g2g_ms);
    let cpu = ours.map(|r| r.cpu_s_per_call_min).unwrap_or(f64::NAN);
    let bare_cpu = get("webrtcbin-pair").map(|r| r.cpu_s_per_call_min).unwrap_or(f64::NAN);
    let verdict = |ok: Option<bool>| match ok {
        Some(true) => "met",
        Some(false) => "MISSED",
        None => "n/a (figure missing)",
    };
    let check = |a: f64, b: f64| (!a.is_nan() && !b.is_nan()).then_some(a <= b);
    let mut out = String::from("\n| target | wilddog | reference | verdict |\n|---|---|---|---|\n");
    out.push_str(&format!(
        "| setup p50 < 250 ms | {setup:.1} ms | 250 ms | {} |\n",
        verdict(check(setup, 250.0))
    ));
    out.push_str(&format!(
        "| setup p50 <= 0.5 x webrtcsink | {setup:.1} ms ({:.2}x) | {sink_setup:.1} ms | {} |\n",
        setup / sink_setup,
        verdict(check(setup, 0.5 * sink_setup))
    ));
    out.push_str(&format!(
        "| glass-to-glass p50 < 100 ms | {g2g:.1} ms | 100 ms | {} |\n",
        verdict(check(g2g, 100.0))
    ));
    out.push_str(&format!(
        "| CPU per call <= 1.1 x bare webrtcbin pair | {cpu:.1} s/min ({:.2}x) | {bare_cpu:.1} s/min | {} |\n",
        cpu / bare_cpu,
        verdict(check(cpu, 1.1 * bare_cpu))
    ));
    out
}
