//! Media shared by every call of an endpoint (`shared_pipeline`): one camera, one microphone,
//! one file or one test source, captured once and sent to every caller, instead of one per
//! call's pipeline (a device opens once; a source costs once).
//!
//! The shared pipeline runs from the endpoint's start to its end. Each of its `appsink
//! name=NAME` feeds the `appsrc name=NAME` of every call's pipeline that is running: each
//! sample is pushed to every attached `appsrc` (the same memory; only the buffer's header is
//! copied, to give it the call's running time as its timestamp), from the shared pipeline's
//! streaming thread.
//! A call's `appsrc` is leaky with a short queue, so a call that stalls drops its own oldest
//! media and never holds up the others or the source.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use gst::prelude::*;

use crate::pipeline_file;

/// How much media a call's `appsrc` holds before it drops its oldest: a few frames. More only
/// delays a call that cannot keep up.
const CALL_QUEUE: gst::ClockTime = gst::ClockTime::from_mseconds(200);

/// How long the shared pipeline may take to stop at the end.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// What makes a shared pipeline's `appsink`s unusable (see [`sink_names`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkError {
    /// A wilddog element (its factory name): calls belong in `pipeline`.
    CallElement(String),
    /// An `appsink` without a name of its own (gst-launch's `appsinkN`).
    Unnamed(String),
    /// Two `appsink`s of this name.
    Duplicate(String),
    /// No `appsink` at all.
    NoSink,
}

impl std::fmt::Display for SinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::CallElement(factory) => write!(
                f,
                "`shared_pipeline` runs once for every call: it cannot hold a call's element \
                 ({factory})"
            ),
            Self::Unnamed(name) => write!(
                f,
                "every appsink of `shared_pipeline` needs a name (`appsink name=video`), the \
                 name of the `appsrc` it feeds in `pipeline`; `{name}` has none"
            ),
            Self::Duplicate(name) => write!(f, "two appsinks named `{name}` in `shared_pipeline`"),
            Self::NoSink => f.write_str(
                "`shared_pipeline` has no `appsink name=NAME`: nothing reaches the calls",
            ),
        }
    }
}

impl SinkError {
    /// Where in the launch text `raw` the element at fault is written, if it can be told: a
    /// check error points at its line, not at the key's first.
    pub fn offset_in(&self, raw: &str) -> Option<usize> {
        match self {
            Self::CallElement(factory) => word_offsets(raw, factory).next(),
            // The first `appsink` given no `name=` before its link or line ends.
            Self::Unnamed(_) => word_offsets(raw, "appsink").find(|&at| {
                let rest = &raw[at..];
                let end = rest.find(['!', '\n']).unwrap_or(rest.len());
                !rest[..end].contains("name=")
            }),
            Self::Duplicate(name) => {
                raw.match_indices(&format!("name={name}")).nth(1).map(|(at, _)| at)
            }
            Self::NoSink => None,
        }
    }
}

/// Where `word` stands in `text` as a word of its own (not inside `appsink_x` or `myappsink`).
fn word_offsets<'a>(text: &'a str, word: &'a str) -> impl Iterator<Item = usize> + 'a {
    let is_name_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    text.match_indices(word).map(|(at, _)| at).filter(move |&at| {
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        !before.is_some_and(is_name_char) && !after.is_some_and(is_name_char)
    })
}

/// The names of the `appsink`s of a shared pipeline, in order; an error when it has none, an
/// `appsink` without a name of its own or two of one name, or a wilddog element (calls belong
/// in `pipeline`).
pub fn sink_names(pipeline: &gst::Pipeline) -> Result<Vec<String>, SinkError> {
    if let Some(element) = pipeline_file::wilddog_elements(pipeline).next() {
        return Err(SinkError::CallElement(
            element.factory().map(|f| f.name().to_string()).unwrap_or_default(),
        ));
    }
    let mut names = Vec::new();
    for element in pipeline.iterate_recurse().into_iter().filter_map(Result::ok) {
        if element.factory().is_none_or(|f| f.name() != "appsink") {
            continue;
        }
        let name = element.name().to_string();
        // gst-launch names an unnamed element `appsink0`, `appsink1`, …
        if name.starts_with("appsink") && name[7..].chars().all(|c| c.is_ascii_digit()) {
            return Err(SinkError::Unnamed(name));
        }
        if names.contains(&name) {
            return Err(SinkError::Duplicate(name));
        }
        names.push(name);
    }
    names.sort();
    if names.is_empty() {
        return Err(SinkError::NoSink);
    }
    Ok(names)
}

/// The `appsrc` of a call's pipeline named `name`, if there is one.
fn call_source(pipeline: &gst::Pipeline, name: &str) -> Option<gst_app::AppSrc> {
    pipeline.by_name_recurse_up(name).and_then(|e| e.downcast::<gst_app::AppSrc>().ok())
}

/// A mismatch between a shared pipeline's `appsink`s and a call pipeline's `appsrc`s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mismatch {
    /// An `appsink` of this name, and no `appsrc` of it in the call's pipeline.
    NoSource(String),
    /// An `appsrc` of this name in the call's pipeline that no `appsink` feeds (it would send
    /// nothing: the call would lack that stream, silently).
    NoSink(String),
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoSource(name) => write!(
                f,
                "`shared_pipeline`'s `appsink name={name}` feeds the `appsrc name={name}` of \
                 each call, and `pipeline` has none"
            ),
            Self::NoSink(name) => write!(
                f,
                "`pipeline`'s `appsrc name={name}` has no `appsink name={name}` in \
                 `shared_pipeline` to feed it"
            ),
        }
    }
}

/// The first mismatch between a shared pipeline's `appsink`s (`names`) and the `appsrc`s of
/// a call's `pipeline`: every `appsink` needs its `appsrc`, and every `appsrc` its `appsink`.
pub fn mismatch(pipeline: &gst::Pipeline, names: &[String]) -> Option<Mismatch> {
    if let Some(name) = names.iter().find(|n| call_source(pipeline, n).is_none()) {
        return Some(Mismatch::NoSource(name.clone()));
    }
    pipeline
        .iterate_recurse()
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.factory().is_some_and(|f| f.name() == "appsrc"))
        .map(|e| e.name().to_string())
        .find(|n| !names.contains(n))
        .map(Mismatch::NoSink)
}

/// One call's `appsrc`, fed by the shared `appsink` of its name.
struct Attached {
    id: u64,
    name: String,
    source: gst_app::AppSrc,
    /// The caps last set on it, so it is told again only when they change.
    caps: Option<gst::Caps>,
}

/// The shared pipeline, running, and the calls' `appsrc`s it feeds.
pub struct SharedMedia {
    pipeline: gst::Pipeline,
    /// Its `appsink`s' names: a call's `appsrc` of one of these names is fed.
    names: Vec<String>,
    attached: Arc<Mutex<Vec<Attached>>>,
    next_id: AtomicU64,
    /// Why the shared pipeline stopped on its own (an error, or the end of its media).
    failure: Arc<Mutex<Option<String>>>,
    watcher: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for SharedMedia {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedMedia").field("pipeline", &self.pipeline.name()).finish()
    }
}

impl SharedMedia {
    /// Builds and starts the shared pipeline. `on_stop` is called once, from its bus thread,
    /// when it fails or its media ends (the endpoint then stops: its calls would get nothing
    /// more); its reason is in [`SharedMedia::failure`].
    pub fn start(launch: &str, on_stop: impl FnOnce() + Send + 'static) -> anyhow::Result<Self> {
        let pipeline =
            pipeline_file::build(launch).map_err(anyhow::Error::msg).context("shared_pipeline")?;
        let names = sink_names(&pipeline).map_err(|e| anyhow::anyhow!("{e}"))?;
        let attached: Arc<Mutex<Vec<Attached>>> = Arc::default();
        for name in &names {
            let Some(sink) =
                pipeline.by_name(name).and_then(|e| e.downcast::<gst_app::AppSink>().ok())
            else {
                bail!("shared_pipeline: no appsink `{name}`");
            };
            // A live source's samples as soon as they are made: the calls' pipelines keep
            // their own time (a source that is not live: pace_if_not_live).
            sink.set_sync(false);
            // Each stream on its own: a sink that prerolls holds its first sample until the
            // pipeline plays, which it does only once every sink has one, so a camera that
            // started late (or not at all) held back the microphone too, and every call sent
            // nothing until the camera's first frame.
            sink.set_property("async", false);
            sink.set_property("enable-last-sample", false);
            let attached = Arc::clone(&attached);
            let name = name.clone();
            let paced = std::sync::Once::new();
            sink.set_callbacks(
                gst_app::AppSinkCallbacks::builder()
                    .new_sample(move |sink| {
                        paced.call_once(|| pace_if_not_live(sink));
                        let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                        if let Some(reason) = fan_out(&attached, &name, &sample) {
                            // Every call's pipeline is the same: no call could take this
                            // media, so the endpoint stops, saying why (before, each call
                            // failed with "Internal data stream error" and its caller got
                            // TIMEOUT).
                            let refused = gst::Structure::builder(REFUSED_MESSAGE)
                                .field("reason", reason)
                                .build();
                            let _ = sink.post_message(gst::message::Application::new(refused));
                        }
                        Ok(gst::FlowSuccess::Ok)
                    })
                    // The end of one stream is the end: the pipeline says EOS only once every
                    // stream ended, and a camera's video that ended under a live microphone
                    // left every call with a frozen picture (and later calls with none).
                    .eos(|sink| {
                        let ended = gst::Structure::builder(ENDED_MESSAGE)
                            .field("appsink", sink.name().as_str())
                            .build();
                        let _ = sink.post_message(gst::message::Application::new(ended));
                    })
                    .build(),
            );
        }
        let bus = pipeline.bus().context("shared_pipeline has no bus")?;
        if pipeline.set_state(gst::State::Playing).is_err() {
            let reason = first_error(&bus).unwrap_or_else(|| "it cannot start".into());
            let _ = pipeline.set_state(gst::State::Null);
            bail!("shared_pipeline: {reason}");
        }
        let failure: Arc<Mutex<Option<String>>> = Arc::default();
        let watcher = {
            let failure = Arc::clone(&failure);
            std::thread::Builder::new()
                .name("shared-bus".into())
                .spawn(move || watch_bus(&bus, &failure, on_stop))
                .context("starting the shared pipeline's bus thread")?
        };
        Ok(Self {
            pipeline,
            names,
            attached,
            next_id: AtomicU64::new(1),
            failure,
            watcher: Mutex::new(Some(watcher)),
        })
    }

    /// Feeds the `appsrc`s of a call's pipeline (those named like a shared `appsink`) until
    /// the returned [`Attachment`] is dropped. Sets them up as live sources stamped with their
    /// own pipeline's time.
    pub fn attach(self: &Arc<Self>, pipeline: &gst::Pipeline) -> Attachment {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut attached = lock(&self.attached);
        for name in &self.names {
            let Some(source) = call_source(pipeline, name) else { continue };
            source.set_is_live(true);
            source.set_format(gst::Format::Time);
            // Stamped by fan_out with this pipeline's running time: the shared pipeline's
            // timestamps mean nothing in this one.
            source.set_do_timestamp(false);
            source.set_max_bytes(0);
            source.set_max_buffers(0);
            source.set_max_time(CALL_QUEUE);
            source.set_leaky_type(gst_app::AppLeakyType::Downstream);
            attached.push(Attached { id, name: name.clone(), source, caps: None });
        }
        Attachment { media: Arc::clone(self), id }
    }

    /// Why the shared pipeline stopped on its own, if it did.
    pub fn failure(&self) -> Option<String> {
        lock(&self.failure).clone()
    }

    /// Stops the shared pipeline (at the endpoint's end).
    pub fn stop(&self) {
        // The bus thread first: a pipeline going to NULL flushes its bus, and a message
        // posted after that would never wake it.
        if let Some(bus) = self.pipeline.bus() {
            let _ =
                bus.post(gst::message::Application::new(gst::Structure::new_empty(STOP_MESSAGE)));
        }
        if let Some(watcher) = lock(&self.watcher).take() {
            let _ = watcher.join();
        }
        let _ = self.pipeline.set_state(gst::State::Null);
        let (_, state, _) =
            self.pipeline.state(gst::ClockTime::from_seconds(STOP_TIMEOUT.as_secs()));
        if state != gst::State::Null {
            tracing::warn!("the shared pipeline did not stop within {STOP_TIMEOUT:?}");
        }
    }
}

/// Detaches a call's `appsrc`s from the shared media when dropped.
pub struct Attachment {
    media: Arc<SharedMedia>,
    id: u64,
}

impl Drop for Attachment {
    fn drop(&mut self) {
        lock(&self.media.attached).retain(|a| a.id != self.id);
    }
}

/// The application message that ends the bus thread.
const STOP_MESSAGE: &str = "wilddog-shared-stop";

/// The application message an `appsink` posts when its stream ended (field `appsink`: its
/// name).
const ENDED_MESSAGE: &str = "wilddog-shared-ended";

/// Makes `sink` wait for the clock when what feeds it is not live (a file, a test pattern
/// without `is-live`), asked at its first sample (each branch on its own: a file's video
/// beside a live microphone). Unsynced, such a source ran as fast as the machine allowed: a
/// 20 s clip ended half a second in, and an idle endpoint burned two cores. A live source's
/// samples go out as soon as they are made (the calls' pipelines keep their own time).
fn pace_if_not_live(sink: &gst_app::AppSink) {
    let mut query = gst::query::Latency::new();
    let answered = sink.static_pad("sink").is_some_and(|pad| pad.peer_query(&mut query));
    if answered && !query.result().0 {
        tracing::info!(
            "shared_pipeline: appsink `{}` is fed by no live source: paced by the clock",
            sink.name()
        );
        sink.set_sync(true);
    }
}

/// The application message `fan_out`'s caller posts when a call's pipeline cannot take the
/// shared media (field `reason`).
const REFUSED_MESSAGE: &str = "wilddog-shared-refused";

/// Sends one shared sample to every attached `appsrc` of its name. Returns why, when a call's
/// pipeline refuses the sample's caps (what comes after its `appsrc` cannot take them: an
/// encoded shared stream into a pipeline that expects raw media, say).
fn fan_out(attached: &Mutex<Vec<Attached>>, name: &str, sample: &gst::Sample) -> Option<String> {
    let buffer = sample.buffer()?;
    let caps = sample.caps_owned();
    let mut refused = None;
    let mut attached = lock(attached);
    for call in attached.iter_mut().filter(|a| a.name == name) {
        if let Some(new_caps) = caps.as_ref().filter(|c| call.caps.as_ref() != Some(*c)) {
            call.caps = Some(new_caps.clone());
            if !accepts(&call.source, new_caps) {
                refused.get_or_insert_with(|| {
                    format!(
                        "`appsrc name={name}` of a call cannot pass on what `appsink \
                         name={name}` gives ({new_caps}): what follows it in `pipeline` does \
                         not take these caps (the calls' encoders take raw media: decode it \
                         in `shared_pipeline`)"
                    )
                });
            }
            call.source.set_caps(Some(new_caps));
        }
        // Its running time now: the shared pipeline's timestamps mean nothing in the call's,
        // and the appsrc's 200 ms limit is counted in these. A pipeline not playing has no
        // running time: nothing to send it.
        let Some(now) = running_time(&call.source) else { continue };
        // A new header on the same memory.
        let mut copy = buffer.copy();
        {
            let copy = copy.make_mut();
            copy.set_pts(now);
            copy.set_dts(gst::ClockTime::NONE);
        }
        // Flushing (the call's pipeline is stopping) or ended: nothing to do; it is
        // detached when it ends.
        let _ = call.source.push_buffer(copy);
    }
    refused
}

/// Whether what follows `source` takes `caps` (its peer's accept-caps query). Nothing
/// linked after it answers yes: nothing to tell.
fn accepts(source: &gst_app::AppSrc, caps: &gst::Caps) -> bool {
    source
        .static_pad("src")
        .and_then(|pad| pad.peer())
        .is_none_or(|peer| peer.query_accept_caps(caps))
}

/// The running time of `element`'s pipeline now, once the element plays.
///
/// Not before: a pipeline going to PLAYING gives its elements the clock first and their new
/// base time after, so in between the clock's time minus the old base time (0 in a new
/// pipeline) is the clock's absolute time, hours ahead. One buffer stamped so moved the
/// sending chain's offset to the clock (media.rs, `keep_to_the_clock`) by hours, and every
/// frame of that call after it was stamped 0, so the frame-rate limiter let none through:
/// about one call in ten of a runner serving 13 had no video at all.
fn running_time(element: &gst_app::AppSrc) -> Option<gst::ClockTime> {
    if element.current_state() != gst::State::Playing {
        return None;
    }
    let clock = element.clock()?;
    let base = element.base_time()?;
    clock.time().checked_sub(base)
}

/// The shared pipeline's bus until it stops: an error or the end of its media is a failure
/// of the endpoint (logged, kept, `on_stop` called).
fn watch_bus(bus: &gst::Bus, failure: &Mutex<Option<String>>, on_stop: impl FnOnce()) {
    let mut on_stop = Some(on_stop);
    for message in bus.iter_timed(gst::ClockTime::NONE) {
        let reason = match message.view() {
            gst::MessageView::Error(e) => error_text(&message, e),
            gst::MessageView::Eos(_) => "its media ended (EOS)".to_owned(),
            gst::MessageView::Warning(w) => {
                tracing::warn!("shared_pipeline: {}", w.error());
                continue;
            }
            gst::MessageView::Application(a) => match a.structure() {
                Some(s) if s.name() == STOP_MESSAGE => return,
                Some(s) if s.name() == ENDED_MESSAGE => format!(
                    "its media ended (EOS at appsink `{}`)",
                    s.get::<&str>("appsink").unwrap_or_default()
                ),
                Some(s) if s.name() == REFUSED_MESSAGE => {
                    s.get::<String>("reason").unwrap_or_else(|_| "a call refused its media".into())
                }
                _ => continue,
            },
            _ => continue,
        };
        tracing::error!("shared_pipeline stopped: {reason}");
        lock(failure).get_or_insert(reason);
        if let Some(on_stop) = on_stop.take() {
            on_stop();
        }
    }
}

/// The first error on a bus, as text.
fn first_error(bus: &gst::Bus) -> Option<String> {
    while let Some(message) = bus.pop() {
        if let gst::MessageView::Error(e) = message.view() {
            return Some(error_text(&message, e));
        }
    }
    None
}

/// An error message as text: the element that posted it, the error and its details (which
/// file was not found, say: the error alone is "Resource not found.").
fn error_text(message: &gst::Message, error: &gst::message::Error) -> String {
    let source = message.src().map(|s| s.path_string().to_string()).unwrap_or_default();
    match error.debug() {
        Some(debug) => format!("{source}: {} ({debug})", error.error()),
        None => format!("{source}: {}", error.error()),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_running_time_before_the_element_plays() {
        pipeline_file::init_gstreamer().unwrap();
        let source = gst::ElementFactory::make("appsrc")
            .build()
            .unwrap()
            .downcast::<gst_app::AppSrc>()
            .unwrap();
        // As in a pipeline going to PLAYING: the clock is there, the base time not yet.
        let clock = gst::SystemClock::obtain();
        assert!(source.set_clock(Some(&clock)).is_ok());
        source.set_base_time(gst::ClockTime::ZERO);
        assert_eq!(running_time(&source), None, "the clock's absolute time is no running time");
        let pipeline = gst::Pipeline::new();
        pipeline.add(&source).unwrap();
        pipeline.set_state(gst::State::Playing).unwrap();
        let (_, state, _) = pipeline.state(gst::ClockTime::from_seconds(5));
        assert_eq!(state, gst::State::Playing);
        let now = running_time(&source).expect("a running time once playing");
        assert!(now < gst::ClockTime::from_seconds(5), "{now} since the pipeline started");
        pipeline.set_state(gst::State::Null).unwrap();
    }

    #[test]
    fn a_stalled_call_holds_at_most_its_queue_and_the_source_goes_on() {
        pipeline_file::init_gstreamer().unwrap();
        let shared = Arc::new(
            SharedMedia::start(
                "videotestsrc is-live=true ! video/x-raw,width=64,height=48,framerate=30/1 \
                 ! appsink name=video",
                || {},
            )
            .unwrap(),
        );
        // Takes one frame in five of the thirty a second the source makes.
        let slow = pipeline_file::build(
            "appsrc name=video ! identity sleep-time=200000 ! fakesink name=out",
        )
        .unwrap();
        let fast = pipeline_file::build("appsrc name=video ! fakesink name=out").unwrap();
        let _slow_attached = shared.attach(&slow);
        let _fast_attached = shared.attach(&fast);
        for pipeline in [&slow, &fast] {
            pipeline.set_state(gst::State::Playing).unwrap();
        }
        std::thread::sleep(Duration::from_secs(3));
        let level = |p: &gst::Pipeline| {
            let source = p.by_name("video").unwrap();
            (
                source.property::<u64>("current-level-buffers"),
                source.property::<u64>("current-level-time"),
            )
        };
        let (buffers, time) = level(&slow);
        // 200 ms at 30 fps: 6 or 7 frames, whatever the consumer takes.
        assert!(buffers <= 8, "the stalled call holds {buffers} frames ({time} ns)");
        let frames = |p: &gst::Pipeline| {
            let out = p.by_name("out").unwrap();
            out.property::<Option<gst::Sample>>("last-sample").is_some()
        };
        assert!(frames(&fast) && frames(&slow), "both calls got frames");
        let (fast_buffers, _) = level(&fast);
        assert!(fast_buffers <= 2, "the other call keeps up: {fast_buffers} queued");
        for pipeline in [&slow, &fast] {
            pipeline.set_state(gst::State::Null).unwrap();
        }
        shared.stop();
        assert_eq!(shared.failure(), None);
    }
}
