//! `wilddog-runner demo`: the whole system in one command, headless.
//!
//! Starts the signaling server in-process (it also serves the browser demo page at `/`),
//! an echo bot (`pipelines/echo.toml`, built in), places one self-check call to the bot with
//! test patterns and a tone (`pipelines/call-test.toml`, built in), prints its life
//! (response, first frame, stats, end), then keeps serving and says how a person calls the
//! bot from a browser, until Ctrl-C.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Map, Value};
use wilddog_server::{DEV_APP_ID, ServerConfig, mint_token};

use crate::embedded::EmbeddedServer;
use crate::endpoint::{self, EventSink, Outcome, Plan, StopFlag};
use crate::events;
use crate::pipeline_file::{self, AnswerPolicy, Role};

/// The echo bot's pipeline file, built into the binary.
pub const ECHO_TOML: &str = include_str!("../../pipelines/echo.toml");
/// The self-check caller's pipeline file, built into the binary.
pub const CALL_TEST_TOML: &str = include_str!("../../pipelines/call-test.toml");

/// Uid of the self-check caller.
pub const SELF_CHECK_UID: &str = "self-check";

/// How long the echo bot may take to connect.
const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// Arguments of `demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Address of the server (HTTP, WebSocket, STUN); port 0: any free port.
    #[arg(long, default_value = crate::embedded::DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// The echo bot's uid (the one to call from a browser).
    #[arg(long, default_value = "echo")]
    pub echo_uid: String,
    /// Length of the self-check call, seconds.
    #[arg(long, default_value_t = 5.0)]
    pub check_seconds: f64,
    /// Local addresses ICE gathers from, comma-separated. Default: every interface, or
    /// 127.0.0.1 on a machine whose only interface is loopback (the element's own rule).
    #[arg(long, value_delimiter = ',')]
    pub ice_local_addresses: Vec<String>,
    /// Exit after the self-check call (0: it passed, 1: it failed) instead of serving.
    #[arg(long)]
    pub self_check_only: bool,
    /// Print JSON lines (each with "endpoint": "echo" or "self-check") instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs the demo; exits 1 when the self-check call failed.
pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    crate::serve::init_tracing();
    let passed = execute(args)?;
    if !passed {
        std::process::exit(1);
    }
    Ok(())
}

/// What the self-check saw.
#[derive(Debug, Default)]
struct Check {
    response: Option<String>,
    first_frame: Option<(u64, u64, u64)>,
    stats: u32,
    video_received: u64,
    audio_received: u64,
    closed: bool,
}

fn execute(args: DemoArgs) -> anyhow::Result<bool> {
    pipeline_file::init_gstreamer()?;
    let echo_file = pipeline_file::parse(Path::new("pipelines/echo.toml"), ECHO_TOML)
        .map_err(|e| anyhow::anyhow!("built-in {e}"))?;
    let caller_file = pipeline_file::parse(Path::new("pipelines/call-test.toml"), CALL_TEST_TOML)
        .map_err(|e| anyhow::anyhow!("built-in {e}"))?;
    if !(args.check_seconds.is_finite() && args.check_seconds > 0.0) {
        bail!("--check-seconds must be positive");
    }
    let ice_local_addresses = args.ice_local_addresses.clone();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let config = ServerConfig::development();
    let server = EmbeddedServer::start(&runtime, args.listen, config.clone())?;
    let json = args.json;
    let say = move |text: String, event: Map<String, Value>, name: &str| {
        if json {
            events::emit(name, event);
        } else {
            println!("{text}");
        }
    };
    say(
        format!("signaling server: {} (WebSocket {})", server.http_url(), server.ws_url()),
        events::fields([
            ("endpoint", Value::from("server")),
            ("http", Value::from(server.http_url())),
            ("server", Value::from(server.ws_url())),
        ]),
        "listening",
    );

    let plan_of =
        |file: &pipeline_file::PipelineFile, uid: &str, role: Role| -> anyhow::Result<Plan> {
            Ok(Plan {
                shared: None,
                launch: file.spec.pipeline.get_ref().clone(),
                role,
                uid: uid.to_owned(),
                server: server.ws_url(),
                app_id: DEV_APP_ID.to_owned(),
                token: mint_token(&config, DEV_APP_ID, uid, Duration::from_secs(24 * 3600))
                    .with_context(|| format!("minting a token for `{uid}`"))?,
                remote_uid: None,
                answer: AnswerPolicy::Accept,
                user_data: None,
                call_timeout_ms: None,
                hangup_after: None,
                ice_local_addresses: ice_local_addresses.clone(),
                ice_transport_policy: None,
                record_dir: std::env::temp_dir(),
                concurrent_calls: 1,
                exit_after_calls: None,
            })
        };

    // The echo bot, on its own thread.
    let echo_plan = plan_of(&echo_file, &args.echo_uid, Role::Answer)?;
    let echo_stop = StopFlag::new();
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let ready_tx = Mutex::new(ready_tx);
    let echo_sink: EventSink = Arc::new(move |name, mut map| {
        if name == "ready" {
            let _ = ready_tx.lock().map(|tx| tx.send(()));
        }
        let text = match name {
            "ready" => "echo bot: ready".to_owned(),
            "called" => format!("echo bot: called by `{}`", str_field(&map, "remote_uid")),
            "closed" => format!("echo bot: call ended ({})", str_field(&map, "reason")),
            "error" => format!("echo bot: error {}", Value::Object(map.clone())),
            _ => String::new(),
        };
        map.insert("endpoint".into(), Value::from("echo"));
        if json {
            events::emit(name, map);
        } else if !text.is_empty() {
            println!("{text}");
        }
    });
    let echo_thread = {
        let (plan, stop) = (echo_plan.clone(), echo_stop.clone());
        std::thread::Builder::new()
            .name("echo-bot".into())
            .spawn(move || endpoint::run_callee(&plan, &stop, &echo_sink))
            .context("starting the echo bot")?
    };
    let stop_all = |echo_thread: std::thread::JoinHandle<Outcome>, server: EmbeddedServer| {
        echo_stop.raise();
        let _ = echo_thread.join();
        server.stop();
    };
    if ready_rx.recv_timeout(READY_TIMEOUT).is_err() {
        stop_all(echo_thread, server);
        bail!("the echo bot did not connect within {READY_TIMEOUT:?}");
    }

    // The self-check call.
    let mut caller_plan = plan_of(&caller_file, SELF_CHECK_UID, Role::Call)?;
    caller_plan.remote_uid = Some(args.echo_uid.clone());
    caller_plan.hangup_after = Some(Duration::from_secs_f64(args.check_seconds));
    let check = Arc::new(Mutex::new(Check::default()));
    let caller_sink: EventSink = {
        let check = check.clone();
        let echo_uid = args.echo_uid.clone();
        Arc::new(move |name, mut map| {
            let mut c = check.lock().unwrap_or_else(|e| e.into_inner());
            let text = match name {
                "ready" => format!("self-check: connected, calling `{echo_uid}`"),
                "response" => {
                    let status = str_field(&map, "status");
                    c.response = Some(status.clone());
                    format!("self-check: response {status}")
                }
                "stream_received" => "self-check: remote stream received".to_owned(),
                "first_frame" => {
                    let n = |k: &str| map.get(k).and_then(Value::as_u64).unwrap_or(0);
                    c.first_frame = Some((n("width"), n("height"), n("elapsed_ms")));
                    format!(
                        "self-check: first frame {}x{} after {} ms",
                        n("width"),
                        n("height"),
                        n("elapsed_ms")
                    )
                }
                "stats" => {
                    c.stats += 1;
                    format!("self-check: stats {}", stats_line(&map))
                }
                "closed" => {
                    c.closed = true;
                    let received = map.get("received").cloned().unwrap_or_default();
                    c.video_received = received.get("video").and_then(Value::as_u64).unwrap_or(0);
                    c.audio_received = received.get("audio").and_then(Value::as_u64).unwrap_or(0);
                    format!(
                        "self-check: call ended ({}) after {} ms; received {} video frames, {} audio buffers",
                        str_field(&map, "reason"),
                        map.get("duration_ms").and_then(Value::as_u64).unwrap_or(0),
                        c.video_received,
                        c.audio_received
                    )
                }
                "error" => format!("self-check: error {}", Value::Object(map.clone())),
                _ => String::new(),
            };
            drop(c);
            map.insert("endpoint".into(), Value::from(SELF_CHECK_UID));
            if json {
                events::emit(name, map);
            } else if !text.is_empty() {
                println!("{text}");
            }
        })
    };
    let caller_stop = StopFlag::new();
    let signal_stop = caller_stop.clone();
    let signal_task = runtime.spawn(async move {
        crate::run::wait_signal().await;
        signal_stop.raise();
    });
    let outcome = endpoint::run_caller(&caller_plan, &caller_stop, &caller_sink);
    let interrupted = caller_stop.is_raised();
    let (passed, why) = {
        let c = check.lock().unwrap_or_else(|e| e.into_inner());
        verdict(&c, &outcome)
    };
    say(
        if passed { "self-check passed".to_owned() } else { format!("self-check FAILED: {why}") },
        events::fields([
            ("endpoint", Value::from(SELF_CHECK_UID)),
            ("passed", Value::from(passed)),
            ("reason", Value::from(why)),
        ]),
        "self_check",
    );
    if args.self_check_only || interrupted {
        signal_task.abort();
        stop_all(echo_thread, server);
        return Ok(passed);
    }

    say(
        format!(
            "\nCall the echo bot from a browser: open {} , sign in with any uid, call `{}`.\n\
             (Other endpoints: wilddog-runner run pipelines/call-test.toml --server {} --remote-uid {})\n\
             Serving until Ctrl-C.",
            server.http_url(),
            args.echo_uid,
            server.ws_url(),
            args.echo_uid
        ),
        events::fields([
            ("endpoint", Value::from("server")),
            ("http", Value::from(server.http_url())),
            ("server", Value::from(server.ws_url())),
            ("echo_uid", Value::from(args.echo_uid.clone())),
        ]),
        "serving",
    );
    let _ = runtime.block_on(signal_task);
    stop_all(echo_thread, server);
    Ok(passed)
}

/// Whether the self-check call did what a call must, and if not, why.
fn verdict(c: &Check, outcome: &Outcome) -> (bool, String) {
    if c.response.as_deref() != Some("ACCEPTED") {
        return (false, format!("response {:?}, outcome {outcome:?}", c.response));
    }
    if c.first_frame.is_none() {
        return (false, "no remote video frame was decoded".into());
    }
    if c.stats == 0 {
        return (false, "no stats were reported".into());
    }
    if c.video_received == 0 || c.audio_received == 0 {
        return (
            false,
            format!(
                "received {} video frames and {} audio buffers",
                c.video_received, c.audio_received
            ),
        );
    }
    if *outcome != Outcome::Ended {
        return (false, format!("the call ended with {outcome:?}"));
    }
    (true, "ok".into())
}

fn str_field(map: &Map<String, Value>, key: &str) -> String {
    map.get(key).and_then(Value::as_str).unwrap_or_default().to_owned()
}

/// One line of the stats' most telling numbers.
fn stats_line(map: &Map<String, Value>) -> String {
    let part = |side: &str, keys: &[&str]| {
        let Some(Value::Object(o)) = map.get(side) else { return String::new() };
        keys.iter()
            .filter_map(|k| o.get(*k).map(|v| format!("{k}={v}")))
            .collect::<Vec<_>>()
            .join(" ")
    };
    format!(
        "local: {} | remote: {}",
        part("local", &["bitSentRate", "fps", "width", "height", "bit_sent_rate"]),
        part(
            "remote",
            &["bitReceivedRate", "fps", "width", "height", "delay", "bit_received_rate"]
        )
    )
}
