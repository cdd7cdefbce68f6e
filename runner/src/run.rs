//! `wilddog-runner run FILE`: a call endpoint from a pipeline file.
//!
//! Reads and checks the file (nothing connects when it is bad), resolves who the endpoint
//! is (uid, app, token minted from the app's secret when the file has none), starts the
//! signaling server in-process when no server is named, then answers calls (one pipeline per
//! call, until stopped) or places one call and exits with a code that says how it ended.
//! Events go to stdout as JSON lines, logs to stderr.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use wilddog_server::{DEV_APP_ID, ServerConfig, mint_token};

use crate::embedded::EmbeddedServer;
use crate::endpoint::{self, EventSink, Outcome, Plan, StopFlag};
use crate::events;
use crate::pipeline_file::{
    self, AnswerPolicy, DEFAULT_RECORD_DIR, IceTransportPolicy, PipelineFile, Role,
};
use crate::shared_media::SharedMedia;

/// Exit codes of `run` (documented in `docs/pipeline-files.md` and the README).
pub mod exit {
    /// The call was accepted and then ended (either side hung up); an answering endpoint
    /// that was stopped (Ctrl-C, SIGTERM) or served `--exit-after-calls` calls.
    pub const ENDED: i32 = 0;
    /// An error: the server unreachable, a token refused, a call that failed (41004, 41007
    /// …) or that ended without ever carrying media, a pipeline that failed.
    pub const ERROR: i32 = 1;
    /// A bad command line or pipeline file; nothing connected.
    pub const USAGE: i32 = 2;
    /// The callee rejected the call.
    pub const REJECTED: i32 = 3;
    /// The callee was busy with another call.
    pub const BUSY: i32 = 4;
    /// No answer within the call timeout (or the callee is not connected).
    pub const TIMEOUT: i32 = 5;
    /// Stopped (Ctrl-C, SIGTERM) before the call carried media (unanswered, or answered and
    /// still connecting); the call was cancelled.
    pub const CANCELLED: i32 = 6;
}

/// Lifetime of tokens the runner mints for itself.
const MINTED_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

/// Arguments of `run`. Flags override the file's keys.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The pipeline file (TOML; see docs/pipeline-files.md and pipelines/).
    pub file: PathBuf,
    /// Signaling server WebSocket URL (ws://HOST:PORT/ws). Without it (and without `server`
    /// in the file) the runner starts the server in-process.
    #[arg(long)]
    pub server: Option<String>,
    /// Server config (TOML, as `serve --config`): its app secret mints this endpoint's token,
    /// and the in-process server uses it.
    #[arg(long, env = "WILDDOG_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address of the in-process server (port 0: any free port).
    #[arg(long, default_value = crate::embedded::DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// The app (default: the file's, else the config's only app, else the development app).
    #[arg(long)]
    pub app_id: Option<String>,
    /// This endpoint's uid.
    #[arg(long)]
    pub uid: Option<String>,
    /// Token proving the uid (default: minted from the app's secret).
    #[arg(long, env = "WILDDOG_TOKEN")]
    pub token: Option<String>,
    /// Whom to call (files with role = "call").
    #[arg(long)]
    pub remote_uid: Option<String>,
    /// User data sent with the call.
    #[arg(long)]
    pub user_data: Option<String>,
    /// Policy for incoming calls (files with role = "answer").
    #[arg(long, value_enum)]
    pub answer: Option<AnswerPolicy>,
    /// Seconds a call may ring unanswered (and an accepted call may take to connect).
    #[arg(long)]
    pub call_timeout: Option<f64>,
    /// Caller: hang up this many seconds after the call was accepted.
    #[arg(long)]
    pub hangup_after: Option<f64>,
    /// Answering endpoint: how many calls it serves at once (default: the file's
    /// `concurrent_calls`, else 1); each has its own pipeline and service connection, and a
    /// caller while all are in a call gets BUSY.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=i64::from(pipeline_file::MAX_CONCURRENT_CALLS)))]
    pub concurrent_calls: Option<u32>,
    /// Answering endpoint: take no call after this many were accepted, and exit when they
    /// have ended (tests, one-shot bots). `--max-calls` is its old name.
    #[arg(long, visible_alias = "max-calls")]
    pub exit_after_calls: Option<u32>,
    /// Local addresses ICE gathers from, comma-separated (e.g. 127.0.0.1). Default: every
    /// interface, or 127.0.0.1 when loopback is the only one.
    #[arg(long, value_delimiter = ',')]
    pub ice_local_addresses: Vec<String>,
    /// Candidates the call may use: `all`, or `relay` (TURN only).
    #[arg(long, value_enum)]
    pub ice_transport_policy: Option<IceTransportPolicy>,
    /// Directory for `${record_dir}` (recordings).
    #[arg(long)]
    pub record_dir: Option<PathBuf>,
    /// Only check the file (and the flags), print what would run, and exit.
    #[arg(long)]
    pub check: bool,
}

/// Runs `run` and exits the process with its code.
pub fn run(args: RunArgs) -> anyhow::Result<()> {
    crate::serve::init_tracing();
    let code = match execute(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            exit::ERROR
        }
    };
    // Not while OpenSSL makes the prewarmed key in another thread (see `execute`).
    gstwilddog::wait_dtls_prewarm();
    std::process::exit(code);
}

/// A refusal before anything connected: printed, exit code 2.
fn usage(message: impl std::fmt::Display) -> anyhow::Result<i32> {
    eprintln!("error: {message}");
    Ok(exit::USAGE)
}

fn execute(args: RunArgs) -> anyhow::Result<i32> {
    pipeline_file::init_gstreamer()?;
    let file = match pipeline_file::load(&args.file) {
        Ok(f) => f,
        Err(e) => return usage(e),
    };
    let settings = match Settings::resolve(&file, &args) {
        Ok(s) => s,
        Err(e) => return usage(format!("{}: {e}", args.file.display())),
    };
    let config = match &args.config {
        Some(path) => match ServerConfig::from_file(path) {
            Ok(c) => Some(c),
            Err(e) => return usage(format!("config {}: {e}", path.display())),
        },
        None => None,
    };
    let server_url = args.server.clone().or_else(|| file.spec.server.clone());
    let credentials = match Credentials::resolve(&file, &args, config.as_ref(), &settings.uid) {
        Ok(c) => c,
        Err(e) => return usage(format!("{}: {e:#}", args.file.display())),
    };
    if args.check {
        eprintln!(
            "{}: ok ({} as `{}`{}{}, app `{}`)",
            args.file.display(),
            settings.role.as_str(),
            settings.uid,
            settings.remote_uid.as_deref().map(|r| format!(" calling `{r}`")).unwrap_or_default(),
            if settings.role == Role::Answer {
                format!(", {} at once", calls_at_once(settings.concurrent_calls))
            } else {
                String::new()
            },
            credentials.app_id,
        );
        return Ok(exit::ENDED);
    }
    // GStreamer's per-process DTLS key (RSA-2048, seconds on a loaded machine) is made while
    // the runner connects, not inside the first call's offer or answer: a caller started
    // on a busy machine otherwise spent its first seconds of `hangup_after` without media.
    gstwilddog::prewarm_dtls_certificate();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let embedded = match server_url {
        Some(_) => None,
        None => {
            let config = config.clone().unwrap_or_else(ServerConfig::development);
            let server = EmbeddedServer::start(&runtime, args.listen, config)?;
            tracing::info!(
                "signaling server (in-process) listening on {} (WebSocket {})",
                server.http_url(),
                server.ws_url()
            );
            Some(server)
        }
    };
    let server = match (&server_url, &embedded) {
        (Some(url), _) => url.clone(),
        (None, Some(e)) => e.ws_url(),
        (None, None) => bail!("no signaling server"),
    };
    let token = match credentials.token {
        Some(t) => t,
        None => {
            let minting = config.clone().unwrap_or_else(ServerConfig::development);
            mint_token(&minting, &credentials.app_id, &settings.uid, MINTED_TOKEN_TTL)
                .with_context(|| {
                    format!(
                        "minting a token for `{}` in app `{}`",
                        settings.uid, credentials.app_id
                    )
                })?
        }
    };

    recover_leftovers(&settings.record_dir);
    let stop = StopFlag::new();
    // Before any call: a camera that cannot open fails the endpoint before it is reachable.
    let shared = match &file.spec.shared_pipeline {
        Some(launch) => {
            let template = launch.get_ref();
            let launch = pipeline_file::expand(template, |name| match name {
                "record_dir" => Some(settings.record_dir.display().to_string()),
                "uid" => Some(settings.uid.clone()),
                _ => None,
            })
            .map_err(|name| anyhow::anyhow!("unknown variable ${{{name}}} in shared_pipeline"))?;
            if template.contains("${record_dir}") {
                std::fs::create_dir_all(&settings.record_dir).with_context(|| {
                    format!("cannot create the record directory {}", settings.record_dir.display())
                })?;
            }
            let stop = stop.clone();
            let media = match SharedMedia::start(&launch, move || stop.raise()) {
                Ok(media) => media,
                Err(e) => {
                    // As when it fails mid-run: a consumer of the events learns why too.
                    events::emit(
                        "error",
                        events::fields([
                            ("message", format!("{e:#}").into()),
                            ("source", "shared_pipeline".into()),
                            ("uid", settings.uid.clone().into()),
                        ]),
                    );
                    return Err(e);
                }
            };
            tracing::info!("shared_pipeline running: its media goes to every call");
            Some(Arc::new(media))
        }
        None => None,
    };
    let plan = Plan {
        launch: file.spec.pipeline.get_ref().clone(),
        shared: shared.clone(),
        role: settings.role,
        uid: settings.uid,
        server,
        app_id: credentials.app_id,
        token,
        remote_uid: settings.remote_uid,
        answer: settings.answer,
        user_data: args.user_data.clone().or_else(|| file.spec.user_data.clone()),
        call_timeout_ms: settings.call_timeout_ms,
        hangup_after: settings.hangup_after,
        ice_local_addresses: settings.ice_local_addresses,
        ice_transport_policy: settings.ice_transport_policy,
        record_dir: settings.record_dir,
        concurrent_calls: settings.concurrent_calls,
        exit_after_calls: args.exit_after_calls,
    };
    runtime.spawn(stop_on_signal(stop.clone()));
    let sink: EventSink = Arc::new(events::emit);
    tracing::info!(
        "{}: {} as `{}` on {}{}",
        file.path.display(),
        match plan.role {
            Role::Answer if plan.concurrent_calls > 1 => {
                format!("answering up to {} calls at once", plan.concurrent_calls)
            }
            Role::Answer => "answering calls".to_owned(),
            Role::Call => "calling".to_owned(),
        },
        plan.uid,
        plan.server,
        plan.remote_uid.as_deref().map(|r| format!(", calling `{r}`")).unwrap_or_default()
    );
    let outcome = match plan.role {
        Role::Answer => endpoint::run_callee(&plan, &stop, &sink),
        Role::Call => endpoint::run_caller(&plan, &stop, &sink),
    };
    let mut code = exit_code(&outcome);
    if let Some(shared) = shared {
        shared.stop();
        // The endpoint stopped because its shared media did: an error, whatever the calls did.
        if let Some(reason) = shared.failure() {
            events::emit(
                "error",
                events::fields([
                    ("message", format!("shared_pipeline stopped: {reason}").into()),
                    ("source", "shared_pipeline".into()),
                    ("uid", plan.uid.clone().into()),
                ]),
            );
            code = exit::ERROR;
        }
    }
    if let Some(server) = embedded {
        server.stop();
    }
    runtime.shutdown_timeout(Duration::from_secs(1));
    Ok(code)
}

/// Recordings a runner that died (SIGKILL, a crash) left under their hidden placeholder
/// name (`.wilddog-call-PID-N.ext`, renamed with the conversation id only at a call's end):
/// made visible as `unfinished-PID-N.ext`, with a warning, so that they are neither lost
/// from sight nor mistaken for finished ones (their container may lack its index).
fn recover_leftovers(record_dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(record_dir) else { return };
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(".wilddog-call-") else { continue };
        let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
        // A live process's (another runner serving from the same directory) is its own.
        if pid.is_none_or(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists()) {
            continue;
        }
        let to = record_dir.join(format!("unfinished-{rest}"));
        match std::fs::rename(entry.path(), &to) {
            Ok(()) => tracing::warn!(
                "a recording left unfinished by a runner that died (pid {}): {}",
                pid.unwrap_or_default(),
                to.display()
            ),
            Err(e) => tracing::warn!("cannot rename the leftover {}: {e}", entry.path().display()),
        }
    }
}

/// "1 call" or "N calls".
fn calls_at_once(n: u32) -> String {
    if n == 1 { "1 call".to_owned() } else { format!("{n} calls") }
}

/// The exit code of an outcome.
pub fn exit_code(outcome: &Outcome) -> i32 {
    match outcome {
        Outcome::Ended => exit::ENDED,
        Outcome::Response(status) => match status.as_str() {
            "REJECTED" => exit::REJECTED,
            "BUSY" => exit::BUSY,
            "TIMEOUT" => exit::TIMEOUT,
            _ => exit::ERROR,
        },
        Outcome::Cancelled => exit::CANCELLED,
        Outcome::Error { .. } => exit::ERROR,
    }
}

/// Raises `stop` at the first Ctrl-C or SIGTERM; a second one exits at once. Signals within
/// [`SAME_STOP_REQUEST`] of the first are the same request: `timeout`, a shell's job control
/// or a terminal signal the runner and its process group, so one request can arrive twice.
async fn stop_on_signal(stop: StopFlag) {
    wait_signal().await;
    let first = std::time::Instant::now();
    tracing::info!("stopping: ending the call cleanly (again to exit at once)");
    stop.raise();
    loop {
        wait_signal().await;
        if first.elapsed() >= SAME_STOP_REQUEST {
            eprintln!("stopped twice: exiting at once");
            std::process::exit(130);
        }
    }
}

/// How long after a first stop signal another one is taken as the same request.
const SAME_STOP_REQUEST: Duration = Duration::from_secs(1);

/// Resolves at the next Ctrl-C or SIGTERM.
pub async fn wait_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The endpoint's settings: the file's keys, flags over them.
struct Settings {
    uid: String,
    role: Role,
    remote_uid: Option<String>,
    answer: AnswerPolicy,
    call_timeout_ms: Option<u32>,
    hangup_after: Option<Duration>,
    ice_local_addresses: Vec<String>,
    ice_transport_policy: Option<IceTransportPolicy>,
    record_dir: PathBuf,
    concurrent_calls: u32,
}

impl Settings {
    fn resolve(file: &PipelineFile, args: &RunArgs) -> anyhow::Result<Self> {
        let spec = &file.spec;
        let role = *spec.role.get_ref();
        let uid = args
            .uid
            .clone()
            .or_else(|| spec.uid.clone())
            .filter(|u| !u.is_empty())
            .context("no uid: set `uid` in the file or pass --uid")?;
        let remote_uid =
            args.remote_uid.clone().or_else(|| spec.remote_uid.clone()).filter(|u| !u.is_empty());
        match role {
            Role::Call if remote_uid.is_none() => {
                bail!(
                    "role = \"call\" needs whom to call: set `remote_uid` in the file or pass --remote-uid"
                )
            }
            // The server would refuse it only once connected; say it before anything runs.
            Role::Call if remote_uid.as_deref() == Some(uid.as_str()) => {
                bail!("`{uid}` cannot call itself: `remote_uid` is the uid this file signs in as")
            }
            Role::Answer if args.remote_uid.is_some() => {
                bail!(
                    "--remote-uid is for files that call (role = \"call\"); this one answers calls"
                )
            }
            _ => {}
        }
        if role == Role::Call && args.concurrent_calls.is_some_and(|n| n > 1) {
            bail!(
                "--concurrent-calls is for files that answer calls (role = \"answer\"); this one places one call"
            );
        }
        if role == Role::Call && args.exit_after_calls.is_some() {
            bail!(
                "--exit-after-calls is for files that answer calls (role = \"answer\"); this one places one call"
            );
        }
        let concurrent_calls = args
            .concurrent_calls
            .or_else(|| spec.concurrent_calls.as_ref().map(|n| *n.get_ref()))
            .unwrap_or(1);
        if role == Role::Call && args.answer.is_some() {
            bail!("--answer is for files that answer calls (role = \"answer\"); this one calls");
        }
        let call_timeout_ms = match args.call_timeout {
            Some(secs) if !(secs.is_finite() && secs > 0.0) => {
                bail!("--call-timeout must be positive seconds")
            }
            Some(secs) => Some((secs * 1000.0).round().min(f64::from(u32::MAX)) as u32),
            None => spec.call_timeout.as_ref().map(|s| s.get_ref().saturating_mul(1000)),
        };
        // Positive is not enough: the element refuses under 0.1 s, and a pipeline given a
        // value it refuses would only find out once running.
        if let (Some(ms), Some(_)) = (call_timeout_ms, args.call_timeout)
            && let Err(e) = crate::pipeline_file::check_call_timeout_ms(ms)
        {
            bail!("--call-timeout {e}");
        }
        let hangup_after = match args.hangup_after.or(spec.hangup_after) {
            Some(secs) if !(secs.is_finite() && secs > 0.0) => {
                bail!("--hangup-after must be positive seconds")
            }
            Some(secs) => Some(Duration::from_secs_f64(secs)),
            None => None,
        };
        let ice_local_addresses = if args.ice_local_addresses.is_empty() {
            spec.ice_local_addresses.clone().unwrap_or_default()
        } else {
            args.ice_local_addresses.clone()
        };
        let record_dir = args
            .record_dir
            .clone()
            .or_else(|| spec.record_dir.clone())
            .unwrap_or_else(|| PathBuf::from(DEFAULT_RECORD_DIR));
        Ok(Settings {
            uid,
            role,
            remote_uid: if role == Role::Call { remote_uid } else { None },
            answer: args.answer.or(spec.answer).unwrap_or_default(),
            call_timeout_ms,
            hangup_after,
            ice_local_addresses,
            ice_transport_policy: args.ice_transport_policy.or(spec.ice_transport_policy),
            record_dir,
            concurrent_calls,
        })
    }
}

/// App and token; `token: None` means "mint one".
struct Credentials {
    app_id: String,
    token: Option<String>,
}

impl Credentials {
    fn resolve(
        file: &PipelineFile,
        args: &RunArgs,
        config: Option<&ServerConfig>,
        uid: &str,
    ) -> anyhow::Result<Self> {
        let named = args.app_id.clone().or_else(|| file.spec.app_id.clone());
        let token = args.token.clone().or_else(|| file.spec.token.clone());
        let app_id = match (named, config) {
            (Some(app), Some(config)) if token.is_none() && config.app_secret(&app).is_none() => {
                bail!("app `{app}` is not in the config, so no token can be minted for `{uid}`")
            }
            (Some(app), _) => app,
            (None, Some(config)) => match config.apps.as_slice() {
                [only] => only.id.clone(),
                [] => bail!("the config has no app"),
                apps => bail!(
                    "the config has {} apps ({}): say which with --app-id or `app_id`",
                    apps.len(),
                    apps.iter().map(|a| a.id.as_str()).collect::<Vec<_>>().join(", ")
                ),
            },
            (None, None) => DEV_APP_ID.to_owned(),
        };
        Ok(Credentials { app_id, token })
    }
}
