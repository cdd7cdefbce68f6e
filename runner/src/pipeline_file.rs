//! Pipeline files: a call endpoint in TOML (who it is, what it does with calls, and the
//! GStreamer launch description that carries one call's media). The reference is
//! `docs/pipeline-files.md`.
//!
//! A file is checked whole before anything connects: unknown keys, wrong types, unknown
//! `${variables}`, a launch description that does not parse and one without a wilddog
//! element are refused with the file, the line and the reason ([`FileError`]).

use std::fmt;
use std::path::{Path, PathBuf};

use gst::prelude::*;
use serde::Deserialize;
use toml::Spanned;

use crate::shared_media::Mismatch;

/// Factory names of the wilddog elements: a pipeline file needs at least one.
pub const WILDDOG_ELEMENTS: [&str; 3] = ["wilddogcall", "wilddogsink", "wilddogsrc"];

/// Where recordings go when neither the file (`record_dir`) nor `--record-dir` says.
pub const DEFAULT_RECORD_DIR: &str = "recordings";

/// The most calls one answering runner serves at once (`concurrent_calls`): each is a
/// pipeline, a signaling connection and a few threads of its own.
pub const MAX_CONCURRENT_CALLS: u32 = 256;

/// The variables a launch description may use, as `${name}`.
pub const VARIABLES: [&str; 3] = ["record_dir", "conversation_id", "uid"];

/// The variables `shared_pipeline` may use: it belongs to no call, so no `${conversation_id}`.
pub const SHARED_VARIABLES: [&str; 2] = ["record_dir", "uid"];

/// What the endpoint does with calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Waits for incoming calls and answers them with the `answer` policy, one pipeline per
    /// call, up to `concurrent_calls` at once, until stopped.
    Answer,
    /// Calls `remote_uid` once and exits when that call ends.
    Call,
}

impl Role {
    /// `"answer"` or `"call"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Answer => "answer",
            Role::Call => "call",
        }
    }
}

/// What an answering endpoint does with an incoming call (the element's `answer` property).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AnswerPolicy {
    /// Accept every call (up to `concurrent_calls` at once; a call while all are live gets
    /// BUSY).
    #[default]
    Accept,
    /// Reject every call: callers get REJECTED.
    Reject,
}

impl AnswerPolicy {
    /// `"accept"` or `"reject"`, the element's nicks.
    pub fn as_str(self) -> &'static str {
        match self {
            AnswerPolicy::Accept => "accept",
            AnswerPolicy::Reject => "reject",
        }
    }
}

/// Which ICE candidates a call may use (`ice_transport_policy`, `--ice-transport-policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum IceTransportPolicy {
    /// Every candidate (host, server-reflexive, relay).
    #[default]
    All,
    /// TURN relay only: the media goes through the TURN server.
    Relay,
}

impl IceTransportPolicy {
    /// The element's nick.
    pub fn as_str(self) -> &'static str {
        match self {
            IceTransportPolicy::All => "all",
            IceTransportPolicy::Relay => "relay",
        }
    }
}

/// The keys of a pipeline file. Every key but `role` and `pipeline` may be left out.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    /// Who this endpoint is.
    pub uid: Option<String>,
    /// The token proving `uid`; without it the runner mints one from the app's secret.
    pub token: Option<String>,
    /// The app; without it, the config's only app (or the development app).
    pub app_id: Option<String>,
    /// The signaling server's WebSocket URL; without it (and without `--server`) the runner
    /// starts the server in-process.
    pub server: Option<String>,
    /// `"answer"` or `"call"`.
    pub role: Spanned<Role>,
    /// Policy for incoming calls: `"accept"` (default) or `"reject"`.
    pub answer: Option<AnswerPolicy>,
    /// Whom to call (role `call`).
    pub remote_uid: Option<String>,
    /// User data sent with the call.
    pub user_data: Option<String>,
    /// Caller: seconds the callee may ring before TIMEOUT (the element's default: 30).
    pub call_timeout: Option<Spanned<u32>>,
    /// Caller: hang up this many seconds after the call was accepted.
    pub hangup_after: Option<f64>,
    /// Local addresses ICE gathers from (e.g. `["127.0.0.1"]`); default: every interface
    /// (127.0.0.1 when loopback is the only one).
    pub ice_local_addresses: Option<Vec<String>>,
    /// `"all"` (default) or `"relay"`: only TURN-relayed candidates.
    pub ice_transport_policy: Option<IceTransportPolicy>,
    /// Directory for `${record_dir}` (created when missing).
    pub record_dir: Option<PathBuf>,
    /// Answering endpoint: how many calls it serves at once, each with its own pipeline from
    /// `pipeline` and its own service connection (default 1).
    pub concurrent_calls: Option<Spanned<u32>>,
    /// The launch description of one call's media (`gst-launch-1.0` syntax).
    pub pipeline: Spanned<String>,
    /// The launch description of media shared by every call (one camera, one file, one
    /// source, made once): it runs for as long as the endpoint does, and each of its
    /// `appsink name=NAME` feeds the `appsrc name=NAME` of every call's `pipeline`.
    pub shared_pipeline: Option<Spanned<String>>,
}

/// A pipeline file, read and checked.
#[derive(Debug, Clone)]
pub struct PipelineFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// Its keys.
    pub spec: FileSpec,
}

/// Why a pipeline file was refused: `FILE:LINE: REASON`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError {
    /// The file.
    pub path: PathBuf,
    /// 1-based line; `None` when the file could not be read at all.
    pub line: Option<usize>,
    /// What is wrong, and what is expected instead.
    pub reason: String,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.path.display(), line, self.reason),
            None => write!(f, "{}: {}", self.path.display(), self.reason),
        }
    }
}

impl std::error::Error for FileError {}

/// 1-based line of a byte offset in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end].iter().filter(|&&b| b == b'\n').count() + 1
}

/// Initializes GStreamer and registers the wilddog plugin (linked in statically), once.
pub fn init_gstreamer() -> anyhow::Result<()> {
    static RESULT: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    RESULT
        .get_or_init(|| {
            gst::init().map_err(|e| format!("initializing GStreamer: {e}"))?;
            gstwilddog::plugin_register_static()
                .map_err(|e| format!("registering the wilddog plugin: {e}"))
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

/// Whether the wilddog elements take `ms` as their `call-timeout`: checked against the
/// property itself (GStreamer initialized), so that a file or a flag is refused before
/// anything connects rather than when its pipeline is configured. The error says the range
/// in seconds, the unit of the file and the flag.
pub fn check_call_timeout_ms(ms: u32) -> Result<(), String> {
    let class = gst::glib::object::ObjectClass::from_type(gstwilddog::WilddogCall::static_type());
    let Some(pspec) = class.as_ref().and_then(|c| c.find_property("call-timeout")) else {
        return Ok(());
    };
    if gstwilddog::media::property_value(&pspec, &ms.to_string()).is_ok() {
        return Ok(());
    }
    let (min, max) = pspec
        .downcast_ref::<gst::glib::ParamSpecUInt>()
        .map(|p| (p.minimum(), p.maximum()))
        .unwrap_or((0, u32::MAX));
    Err(format!(
        "must be {} to {} seconds, not {}",
        f64::from(min) / 1000.0,
        f64::from(max) / 1000.0,
        f64::from(ms) / 1000.0
    ))
}

/// Reads and checks a pipeline file from disk.
pub fn load(path: &Path) -> Result<PipelineFile, FileError> {
    let text = std::fs::read_to_string(path).map_err(|e| FileError {
        path: path.to_owned(),
        line: None,
        reason: format!("cannot read: {e}"),
    })?;
    parse(path, &text)
}

/// Checks a pipeline file's text (`path` names it in errors). GStreamer must be initialized
/// ([`init_gstreamer`]) for the launch description to be checked.
pub fn parse(path: &Path, text: &str) -> Result<PipelineFile, FileError> {
    let error = |offset: Option<usize>, reason: String| FileError {
        path: path.to_owned(),
        line: offset.map(|o| line_of(text, o)),
        reason,
    };
    let spec: FileSpec = toml::from_str(text).map_err(|e| {
        let offset = e.span().map(|s| s.start).unwrap_or(0);
        error(Some(offset), e.message().trim_end().to_owned())
    })?;
    let pipeline_span = spec.pipeline.span();
    let raw = text.get(pipeline_span.clone()).unwrap_or_default();

    if let Some(answer) = spec.answer
        && *spec.role.get_ref() == Role::Call
        && answer != AnswerPolicy::Accept
    {
        return Err(error(
            Some(spec.role.span().start),
            format!("`answer = \"{}\"` needs `role = \"answer\"`", answer.as_str()),
        ));
    }
    if let Some(secs) = spec.hangup_after
        && !(secs.is_finite() && secs > 0.0)
    {
        return Err(error(
            None,
            format!("`hangup_after` must be a positive number of seconds, not {secs}"),
        ));
    }

    if let Some(secs) = &spec.call_timeout
        && let Err(e) = check_call_timeout_ms(secs.get_ref().saturating_mul(1000))
    {
        return Err(error(Some(secs.span().start), format!("`call_timeout`: {e}")));
    }

    if let Some(n) = &spec.concurrent_calls {
        let at = Some(n.span().start);
        let n = *n.get_ref();
        if !(1..=MAX_CONCURRENT_CALLS).contains(&n) {
            return Err(error(
                at,
                format!("`concurrent_calls` must be 1 to {MAX_CONCURRENT_CALLS}, not {n}"),
            ));
        }
        if n > 1 && *spec.role.get_ref() == Role::Call {
            return Err(error(
                at,
                "`concurrent_calls` is for files that answer calls (role = \"answer\"); a caller places one call".into(),
            ));
        }
    }

    // Variables: every `${name}` must be known.
    let check_vars = expand(spec.pipeline.get_ref(), |name| {
        VARIABLES.contains(&name).then(|| format!("wilddog-check-{name}"))
    });
    let launch = match check_vars {
        Ok(launch) => launch,
        Err(unknown) => {
            let offset = raw.find(&format!("${{{unknown}}}")).map(|o| pipeline_span.start + o);
            return Err(error(
                offset.or(Some(pipeline_span.start)),
                format!(
                    "unknown variable `${{{unknown}}}` in `pipeline` (known: {})",
                    VARIABLES.map(|v| format!("${{{v}}}")).join(", ")
                ),
            ));
        }
    };

    // The launch description must parse and hold a wilddog element.
    if let Some((name, offset)) = duplicate_name(raw) {
        return Err(error(
            Some(pipeline_span.start + offset),
            format!("two elements named `{name}` in `pipeline`: names must differ"),
        ));
    }
    let pipeline = build(&launch).map_err(|e| {
        let offset = locate_in(raw, &e).map(|o| pipeline_span.start + o);
        error(offset.or(Some(pipeline_span.start)), format!("`pipeline` does not parse: {e}"))
    })?;
    let wilddog: Vec<gst::Element> = wilddog_elements(&pipeline).collect();
    let calls =
        wilddog.iter().filter(|e| e.factory().is_some_and(|f| f.name() == "wilddogcall")).count();
    // Nothing ran: the elements were only made.
    let _ = pipeline.set_state(gst::State::Null);
    if wilddog.is_empty() {
        return Err(error(
            Some(pipeline_span.start),
            format!("`pipeline` has no wilddog element (one of {})", WILDDOG_ELEMENTS.join(", ")),
        ));
    }
    // The runner drives one call per pipeline (its events, exit code and hang-up are that
    // call's): a second `wilddogcall` would sign in as the same uid and never be driven.
    if calls > 1 {
        return Err(error(
            Some(pipeline_span.start),
            format!(
                "`pipeline` has {calls} wilddogcall elements: a pipeline is one call (answer \
                 several at once with `concurrent_calls`)"
            ),
        ));
    }
    if let Some(shared) = &spec.shared_pipeline {
        let shared_span = shared.span();
        let shared_raw = text.get(shared_span.clone()).unwrap_or_default();
        let at = |offset: Option<usize>| Some(shared_span.start + offset.unwrap_or(0));
        let launch = expand(shared.get_ref(), |name| {
            SHARED_VARIABLES.contains(&name).then(|| format!("wilddog-check-{name}"))
        })
        .map_err(|unknown| {
            error(
                at(shared_raw.find(&format!("${{{unknown}}}"))),
                format!(
                    "unknown variable `${{{unknown}}}` in `shared_pipeline` (known: {}; it \
                     belongs to no call)",
                    SHARED_VARIABLES.map(|v| format!("${{{v}}}")).join(", ")
                ),
            )
        })?;
        if let Some((name, offset)) = duplicate_name(shared_raw) {
            return Err(error(
                at(Some(offset)),
                format!("two elements named `{name}` in `shared_pipeline`: names must differ"),
            ));
        }
        let shared_pipeline = build(&launch).map_err(|e| {
            error(at(locate_in(shared_raw, &e)), format!("`shared_pipeline` does not parse: {e}"))
        })?;
        let names = crate::shared_media::sink_names(&shared_pipeline);
        let _ = shared_pipeline.set_state(gst::State::Null);
        let names =
            names.map_err(|reason| error(at(reason.offset_in(shared_raw)), reason.to_string()))?;
        if let Some(mismatch) = crate::shared_media::mismatch(&pipeline, &names) {
            // At the element the message names: the appsink without its appsrc, or the
            // appsrc without its appsink.
            let offset = match &mismatch {
                Mismatch::NoSource(name) => at(find_name(shared_raw, name)),
                Mismatch::NoSink(name) => {
                    find_name(raw, name).map(|o| pipeline_span.start + o).or(at(None))
                }
            };
            return Err(error(offset, mismatch.to_string()));
        }
    }
    Ok(PipelineFile { path: path.to_owned(), spec })
}

/// Replaces every `${name}` by `value(name)`; `Err(name)` for the first unknown one. `$$`
/// stands for a literal `$`.
pub fn expand(template: &str, value: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('{')
            && let Some(close) = inner.find('}')
        {
            let name = &inner[..close];
            out.push_str(&value(name).ok_or_else(|| name.to_owned())?);
            rest = &inner[close + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Builds a pipeline from a launch description; every error is fatal (an unknown property
/// too, which plain `gst_parse_launch` would only warn about).
pub fn build(launch: &str) -> Result<gst::Pipeline, String> {
    // A property value out of its range (`max-fps=99`) is no parse error: GObject warns on
    // stderr and the element keeps its default, so a typo went unnoticed. The warnings of
    // this thread while it parses are its errors.
    let warnings = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let handler = {
        let warnings = std::sync::Arc::clone(&warnings);
        let parsing = std::thread::current().id();
        gst::glib::log_set_handler(
            Some("GLib-GObject"),
            gst::glib::LogLevels::LEVEL_WARNING | gst::glib::LogLevels::LEVEL_CRITICAL,
            false,
            false,
            move |_, _, message| {
                if std::thread::current().id() == parsing {
                    warnings.lock().unwrap_or_else(|e| e.into_inner()).push(message.to_owned());
                } else {
                    eprintln!("GLib-GObject-WARNING: {message}");
                }
            },
        )
    };
    let parsed = gst::parse::launch_full(launch, None, gst::ParseFlags::FATAL_ERRORS);
    gst::glib::log_remove_handler(Some("GLib-GObject"), handler);
    let element = parsed.map_err(|e| e.message().to_owned())?;
    if let Some(warning) = warnings.lock().unwrap_or_else(|e| e.into_inner()).first() {
        let _ = element.set_state(gst::State::Null);
        // `value "99" of type 'guint' is invalid or out of range for property 'max-fps' of
        // type 'guint'`: quoted for locate_in, which finds the property in the text.
        let property = warning.split('\'').nth(3).unwrap_or_default();
        return Err(format!("{warning} (property \"{property}\")"));
    }
    match element.downcast::<gst::Pipeline>() {
        Ok(pipeline) => Ok(pipeline),
        Err(element) => {
            // A single element: put it in a pipeline.
            let pipeline = gst::Pipeline::new();
            pipeline.add(&element).map_err(|e| e.to_string())?;
            Ok(pipeline)
        }
    }
}

/// The wilddog elements of a pipeline, at any depth.
pub fn wilddog_elements(pipeline: &gst::Pipeline) -> impl Iterator<Item = gst::Element> {
    pipeline.iterate_recurse().into_iter().filter_map(Result::ok).filter(is_wilddog)
}

/// Whether an element is one of the wilddog elements.
pub fn is_wilddog(element: &gst::Element) -> bool {
    element.factory().is_some_and(|f| WILDDOG_ELEMENTS.contains(&f.name().as_str()))
}

/// Where in the raw launch text a GStreamer parse error points: the first word the error
/// quotes (an element or property name) that the text contains.
/// The first element name given twice in a launch description's text (`name=X`), and where
/// its second `name=` is. GStreamer's own error for it named neither ("could not link
/// videotestsrc1 to camera", the second element never being added).
fn duplicate_name(raw: &str) -> Option<(String, usize)> {
    let mut seen = std::collections::HashSet::new();
    let mut from = 0;
    while let Some(at) = raw[from..].find("name=").map(|a| from + a) {
        from = at + "name=".len();
        // A property whose name ends in `name` (`device-name=`) is not an element's name.
        let before = raw[..at].chars().next_back();
        if before.is_some_and(|c| !c.is_whitespace()) {
            continue;
        }
        let value: String = raw[from..]
            .chars()
            .take_while(|c| !c.is_whitespace() && *c != '!')
            .collect::<String>()
            .trim_matches('"')
            .to_owned();
        if !value.is_empty() && !seen.insert(value.clone()) {
            return Some((value, at));
        }
    }
    None
}

/// Where `name=NAME` (an element's name) is in a launch description's text.
fn find_name(raw: &str, name: &str) -> Option<usize> {
    let pattern = format!("name={name}");
    raw.match_indices(&pattern)
        .find(|(at, _)| {
            let end = at + pattern.len();
            raw[end..].chars().next().is_none_or(|c| c.is_whitespace() || c == '!')
        })
        .map(|(at, _)| at)
}

fn locate_in(raw: &str, message: &str) -> Option<usize> {
    message
        .split('"')
        .skip(1)
        .step_by(2)
        .filter(|word| !word.is_empty())
        .find_map(|word| raw.find(word))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_variables() {
        let v = |n: &str| (n == "a").then(|| "X".to_owned());
        assert_eq!(expand("p ${a}/$${a} $b", v).unwrap(), "p X/${a} $b");
        assert_eq!(expand("${nope}", v).unwrap_err(), "nope");
    }

    #[test]
    fn lines_are_one_based() {
        assert_eq!(line_of("a\nb\nc", 0), 1);
        assert_eq!(line_of("a\nb\nc", 2), 2);
        assert_eq!(line_of("a\nb\nc", 4), 3);
    }
}
