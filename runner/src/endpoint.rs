//! A call endpoint made of a pipeline file: the launch description instantiated once per
//! call, its wilddog elements configured, its bus turned into events, and its end made clean
//! (the call hung up, EOS through the pipeline so recordings are finalized, files renamed).
//!
//! An answering endpoint ([`run_callee`]) serves up to [`Plan::concurrent_calls`] calls at
//! once, one *slot* (a thread) each: a slot builds a pipeline whose wilddog elements connect as
//! service endpoints of the uid (`service`), waits for a call on it, tears it down when that
//! call ends and builds the next one, until stopped. The server rings one free service
//! connection per call and answers BUSY when every slot is in a call, so several runners
//! serving one uid share its callers too. A calling endpoint ([`run_caller`]) builds one
//! pipeline, places its call and returns how the call ended.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gst::prelude::*;
use serde_json::{Map, Value};

use crate::events::{event_name, fields, structure_fields};
use crate::pipeline_file::{self, AnswerPolicy, Role};

/// How long the end of a call may take to drain EOS through the pipeline (recordings
/// finalized) before the pipeline is stopped anyway.
pub const FINALIZE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a call that ended, not by us, may take to tell why (`wilddog-closed`) after its
/// media drained.
const CLOSED_GRACE: Duration = Duration::from_millis(500);

/// How often the bus loop looks at the stop flag and the timers.
const POLL: Duration = Duration::from_millis(50);

/// Where events go: the event's name and its fields (the `ts` is added by the sink).
pub type EventSink = Arc<dyn Fn(&str, Map<String, Value>) + Send + Sync>;

/// Everything an endpoint needs, resolved from the file, the flags and the server.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The launch description of one call, with `${variables}` unexpanded.
    pub launch: String,
    /// Media shared by every call (`shared_pipeline`), running: it feeds each call
    /// pipeline's `appsrc`s of its `appsink`s' names.
    pub shared: Option<Arc<crate::shared_media::SharedMedia>>,
    /// Answer calls, or place one.
    pub role: Role,
    /// This endpoint's uid.
    pub uid: String,
    /// The signaling server's WebSocket URL.
    pub server: String,
    /// The app.
    pub app_id: String,
    /// The token proving `uid`.
    pub token: String,
    /// Whom to call (role `call`).
    pub remote_uid: Option<String>,
    /// What to do with incoming calls.
    pub answer: AnswerPolicy,
    /// User data sent with the call.
    pub user_data: Option<String>,
    /// The element's `call-timeout`, ms.
    pub call_timeout_ms: Option<u32>,
    /// Caller: hang up this long after the call was accepted.
    pub hangup_after: Option<Duration>,
    /// The element's `ice-local-addresses`.
    pub ice_local_addresses: Vec<String>,
    /// The element's `ice-transport-policy` (unset: the element's default, `all`).
    pub ice_transport_policy: Option<pipeline_file::IceTransportPolicy>,
    /// `${record_dir}`.
    pub record_dir: PathBuf,
    /// Answering endpoint: how many calls it serves at once (at least 1).
    pub concurrent_calls: u32,
    /// Answering endpoint: take no call after this many were accepted, and return when they
    /// have ended (tests, one-shot bots).
    pub exit_after_calls: Option<u32>,
}

/// A flag that asks a running endpoint to end its call cleanly and return.
#[derive(Debug, Clone, Default)]
pub struct StopFlag(Arc<AtomicBool>);

impl StopFlag {
    /// A flag not raised.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the endpoint to stop.
    pub fn raise(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether stopping was asked.
    pub fn is_raised(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// How an endpoint's run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The call was accepted, then ended (either side hung up). For an answering endpoint:
    /// it was stopped, or served `exit_after_calls` calls.
    Ended,
    /// The callee did not accept: `REJECTED`, `BUSY` or `TIMEOUT`.
    Response(String),
    /// Stopped before the call was answered.
    Cancelled,
    /// An error: a Wilddog code (41001–41008) when there is one, and what happened.
    Error {
        /// The Wilddog error code, if the error has one.
        code: Option<u32>,
        /// What happened.
        message: String,
    },
}

/// Places the plan's call and returns how it ended.
pub fn run_caller(plan: &Plan, stop: &StopFlag, events: &EventSink) -> Outcome {
    run_instance(plan, stop, events, None).outcome
}

/// What the slots of an answering endpoint share.
struct Pool {
    /// Raised when the endpoint stops: by the caller's flag, a fatal error of a slot, or the
    /// last call of `exit_after_calls` having been taken and ended.
    stop: StopFlag,
    /// Calls accepted so far, by every slot.
    accepted: AtomicU32,
    /// `exit_after_calls`.
    limit: Option<u32>,
    /// The first error that ended a slot before it ever connected.
    fatal: Mutex<Option<Outcome>>,
}

impl Pool {
    /// Every call `exit_after_calls` allows was taken: no slot waits for another.
    fn exhausted(&self) -> bool {
        self.limit.is_some_and(|limit| self.accepted.load(Ordering::SeqCst) >= limit)
    }
}

/// One slot of an answering endpoint: its number (in events, `slot`) and the pool.
#[derive(Clone, Copy)]
struct Slot<'a> {
    index: u32,
    pool: &'a Pool,
}

/// Answers calls, up to [`Plan::concurrent_calls`] at once, one pipeline per call, until
/// stopped (or `exit_after_calls` calls were taken and ended). Every pipeline's bus loop runs
/// on a thread of its own, so that a slow call (a pipeline draining, a teardown) never holds
/// the others; this thread only starts them. A slot's next pipeline is made as soon as the
/// call of its last one is over, while that one drains (recordings finalized, `bye` sent,
/// teardown), so the slot takes a call again within moments. An error before a slot ever
/// connected (bad token, server unreachable) ends the endpoint (every slot, live calls hung
/// up); an error during a call ends only that call.
pub fn run_callee(plan: &Plan, stop: &StopFlag, events: &EventSink) -> Outcome {
    let pool = Pool {
        stop: StopFlag::new(),
        accepted: AtomicU32::new(0),
        limit: plan.exit_after_calls,
        fatal: Mutex::new(None),
    };
    let slots = plan.concurrent_calls.max(1) as usize;
    std::thread::scope(|scope| {
        let (reports, inbox) = std::sync::mpsc::channel::<(usize, u64, Report)>();
        // Per slot: the instance that holds it (its serial), and when to make the next one
        // after a pipeline that ended without a call.
        let mut current: Vec<Option<u64>> = vec![None; slots];
        let mut restart_at: Vec<Option<Instant>> = vec![None; slots];
        let mut serial = 0u64;
        let mut live = 0usize;
        let pool = &pool;
        let mut spawn = |index: usize, current: &mut Vec<Option<u64>>, live: &mut usize| {
            serial += 1;
            let id = serial;
            let reports = reports.clone();
            let over = reports.clone();
            let slot = Slot { index: index as u32, pool };
            let spawned = std::thread::Builder::new().name(format!("slot-{index}")).spawn_scoped(
                scope,
                move || {
                    let on_call_over: CallOver<'_> = Box::new(move || {
                        let _ = over.send((index, id, Report::CallOver));
                    });
                    // A panic of a pipeline (a bug) must not take the slot away unseen: the
                    // thread that starts them would wait for its report forever, Ctrl-C
                    // included. It ends the endpoint as an error instead.
                    let end = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        run_instance_with(plan, &pool.stop, events, Some(slot), Some(on_call_over))
                    }))
                    .unwrap_or_else(|panic| {
                        let what = panic
                            .downcast_ref::<&str>()
                            .map(|s| s.to_string())
                            .or_else(|| panic.downcast_ref::<String>().cloned())
                            .unwrap_or_default();
                        InstanceEnd {
                            outcome: Outcome::Error {
                                code: None,
                                message: format!("the pipeline of slot {index} panicked: {what}"),
                            },
                            was_ready: false,
                            had_call: false,
                        }
                    });
                    // The call's pipeline is gone: what it freed goes back to the system.
                    crate::memory::release_free();
                    let _ = reports.send((index, id, Report::Ended(end)));
                },
            );
            match spawned {
                Ok(_) => {
                    current[index] = Some(id);
                    *live += 1;
                }
                Err(e) => {
                    tracing::error!("cannot start a pipeline thread for slot {index}: {e}");
                    pool.stop.raise();
                }
            }
        };
        for index in 0..slots {
            spawn(index, &mut current, &mut live);
        }
        loop {
            if stop.is_raised() {
                pool.stop.raise();
            }
            let taking = !pool.stop.is_raised() && !pool.exhausted();
            let due: Vec<usize> = (0..slots)
                .filter(|&i| restart_at[i].is_some_and(|at| at <= Instant::now()))
                .collect();
            for index in due {
                restart_at[index] = None;
                if taking {
                    spawn(index, &mut current, &mut live);
                }
            }
            if live == 0 && (!taking || restart_at.iter().all(Option::is_none)) {
                break;
            }
            let Ok((index, id, report)) = inbox.recv_timeout(POLL) else { continue };
            if let Report::Ended(_) = report {
                live -= 1;
            }
            // Reports of a pipeline that already handed its slot on (it was draining).
            if current[index] != Some(id) {
                continue;
            }
            current[index] = None;
            let taking = !pool.stop.is_raised() && !pool.exhausted();
            match report {
                Report::CallOver if taking => spawn(index, &mut current, &mut live),
                Report::CallOver => {}
                Report::Ended(end) => {
                    if let Outcome::Error { .. } = end.outcome
                        && !end.was_ready
                        && !pool.stop.is_raised()
                    {
                        let mut fatal = pool.fatal.lock().unwrap_or_else(|e| e.into_inner());
                        fatal.get_or_insert(end.outcome);
                        pool.stop.raise();
                    } else if taking && end.had_call {
                        spawn(index, &mut current, &mut live);
                    } else if taking {
                        // The pipeline ended without a call (EOS of its own, an error): do
                        // not spin.
                        restart_at[index] = Some(Instant::now() + Duration::from_millis(500));
                    }
                }
            }
        }
    });
    let fatal = pool.fatal.lock().unwrap_or_else(|e| e.into_inner()).take();
    fatal.unwrap_or(Outcome::Ended)
}

/// What a pipeline of a slot tells the thread that starts them.
enum Report {
    /// Its call is over: it answers BUSY and drains; the slot may have its next pipeline.
    CallOver,
    /// It ended.
    Ended(InstanceEnd),
}

/// Called once when an instance begins to end after a call it took.
type CallOver<'a> = Box<dyn FnOnce() + Send + 'a>;

/// What one pipeline instance did.
struct InstanceEnd {
    outcome: Outcome,
    /// The endpoint connected to the server.
    was_ready: bool,
    /// A call was accepted on it (so the next call needs a fresh pipeline).
    had_call: bool,
}

/// Media seen by the sinks outside the wilddog elements: a test or a user sees that frames
/// arrived without looking inside the pipeline. And the media out of the wilddog elements'
/// src pads, for the kinds no such sink takes raw (an echo sends its media back into the
/// element, a recorder muxes it into a file).
#[derive(Default)]
struct SinkWatch {
    sinks: Mutex<BTreeMap<String, SinkCount>>,
    /// The src pads of the wilddog elements (`element/pad`), counted the same way.
    call_pads: Mutex<BTreeMap<String, SinkCount>>,
}

#[derive(Default, Clone)]
struct SinkCount {
    kind: &'static str,
    buffers: u64,
    /// A stream reached it (an unlinked sink, e.g. for media that never came, is not waited for).
    started: bool,
    eos: bool,
}

impl SinkWatch {
    fn all_eos(&self) -> bool {
        let sinks = self.sinks.lock().unwrap_or_else(|e| e.into_inner());
        sinks.values().all(|s| s.eos || !s.started)
    }

    /// `{"video": frames, "audio": buffers}` received, by kind: what the raw sinks got,
    /// summed; a kind no raw sink got, what left the wilddog elements' src pads (the decoded
    /// media the call gave the pipeline). Each kind is counted in one place only: a frame
    /// out of `video_src` into a sink is counted once.
    fn received(&self) -> Map<String, Value> {
        let mut totals = totals_by_kind(&self.sinks);
        for (kind, buffers) in totals_by_kind(&self.call_pads) {
            totals.entry(kind).or_insert(buffers);
        }
        totals.into_iter().map(|(k, v)| (k.to_owned(), Value::from(v))).collect()
    }
}

/// The buffers of `counts` summed by kind (`video`, `audio`), for those whose caps told it.
fn totals_by_kind(counts: &Mutex<BTreeMap<String, SinkCount>>) -> BTreeMap<&'static str, u64> {
    let counts = counts.lock().unwrap_or_else(|e| e.into_inner());
    let mut totals: BTreeMap<&'static str, u64> = BTreeMap::new();
    for c in counts.values() {
        if !c.kind.is_empty() {
            *totals.entry(c.kind).or_default() += c.buffers;
        }
    }
    totals
}

/// Whether `element` is inside (or is) a wilddog element.
fn inside_wilddog(element: &gst::Element) -> bool {
    let mut current = Some(element.clone());
    while let Some(e) = current {
        if pipeline_file::is_wilddog(&e) {
            return true;
        }
        current = e.parent().and_then(|p| p.downcast::<gst::Element>().ok());
    }
    false
}

/// Counts buffers and notes EOS on every sink element outside the wilddog elements, and
/// counts the buffers out of the outermost wilddog elements' src pads (`video_src`,
/// `audio_src`: sometimes pads, watched as they appear).
fn watch_sinks(pipeline: &gst::Pipeline) -> Arc<SinkWatch> {
    let watch = Arc::new(SinkWatch::default());
    for element in pipeline.iterate_recurse().into_iter().filter_map(Result::ok) {
        if pipeline_file::is_wilddog(&element)
            && !element
                .parent()
                .and_then(|p| p.downcast::<gst::Element>().ok())
                .is_some_and(|p| inside_wilddog(&p))
        {
            watch_call_pads(&watch, &element);
            continue;
        }
        if !element.element_flags().contains(gst::ElementFlags::SINK)
            || element.is::<gst::Bin>()
            || inside_wilddog(&element)
        {
            continue;
        }
        let name = element.name().to_string();
        watch
            .sinks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.clone(), SinkCount::default());
        for pad in element.sink_pads() {
            count_into(&watch, |w| &w.sinks, name.clone(), &pad);
        }
    }
    watch
}

/// Counts what leaves the src pads of wilddog element `element`, those it has and those it
/// adds (a call's `video_src`/`audio_src` appear with its streams).
fn watch_call_pads(watch: &Arc<SinkWatch>, element: &gst::Element) {
    let watch_pad = |watch: &Arc<SinkWatch>, element: &gst::Element, pad: &gst::Pad| {
        if pad.direction() != gst::PadDirection::Src {
            return;
        }
        // A pad name comes back in each call's pipeline, and within a call when the peer
        // connection is rebuilt (an ICE restart keeps the pad): one count per name.
        let name = format!("{}/{}", element.name(), pad.name());
        watch.call_pads.lock().unwrap_or_else(|e| e.into_inner()).entry(name.clone()).or_default();
        count_into(watch, |w| &w.call_pads, name, pad);
    };
    for pad in element.src_pads() {
        watch_pad(watch, element, &pad);
    }
    let weak = Arc::downgrade(watch);
    element.connect_pad_added(move |element, pad| {
        if let Some(watch) = weak.upgrade() {
            watch_pad(&watch, element, pad);
        }
    });
}

/// Counts the buffers through `pad` into the entry `name` of the map `counts` of `watch`
/// picks, the kind from the caps (raw video or audio), and notes its stream's start and EOS.
fn count_into(
    watch: &Arc<SinkWatch>,
    counts: fn(&SinkWatch) -> &Mutex<BTreeMap<String, SinkCount>>,
    name: String,
    pad: &gst::Pad,
) {
    let watch = Arc::downgrade(watch);
    pad.add_probe(
        gst::PadProbeType::BUFFER | gst::PadProbeType::EVENT_DOWNSTREAM,
        move |_, info| {
            let Some(watch) = watch.upgrade() else { return gst::PadProbeReturn::Remove };
            let mut counts = counts(&watch).lock().unwrap_or_else(|e| e.into_inner());
            let Some(count) = counts.get_mut(&name) else { return gst::PadProbeReturn::Ok };
            match &info.data {
                Some(gst::PadProbeData::Buffer(_)) => {
                    count.started = true;
                    count.buffers += 1;
                }
                Some(gst::PadProbeData::Event(event)) => match event.view() {
                    gst::EventView::StreamStart(_) => count.started = true,
                    gst::EventView::Eos(_) => count.eos = true,
                    gst::EventView::Caps(caps) => {
                        let media = caps
                            .caps()
                            .structure(0)
                            .map(|s| s.name().to_string())
                            .unwrap_or_default();
                        count.kind = if media == "video/x-raw" {
                            "video"
                        } else if media == "audio/x-raw" {
                            "audio"
                        } else {
                            ""
                        };
                    }
                    _ => {}
                },
                _ => {}
            }
            gst::PadProbeReturn::Ok
        },
    );
}

/// Sets a property when the element has it: strings as they are, anything else (enum nicks,
/// numbers) from its text form. A value the property refuses is logged, never a panic (the
/// file check refuses the values users give before this: `pipeline_file`).
fn set_text_property(element: &gst::Element, name: &str, value: &str) {
    if let Err(e) = gstwilddog::media::try_set_str(element, name, value) {
        tracing::error!("{}: cannot set {name}={value}: {e}", element.name());
    }
}

/// Gives every wilddog element of the pipeline the endpoint's identity and call settings.
/// `instance` names this pipeline in the process: the halves (`wilddogsink`/`wilddogsrc`) of
/// one pipeline share one call by their `conversation` name, process-wide, so each pipeline's
/// names get it (two slots' pipelines must not share one call).
fn configure(pipeline: &gst::Pipeline, plan: &Plan, instance: &str) {
    for element in pipeline_file::wilddog_elements(pipeline) {
        if element.find_property("conversation").is_some() {
            let name = element.property::<Option<String>>("conversation").unwrap_or_default();
            element.set_property("conversation", format!("{name}{instance}"));
        }
        set_text_property(&element, "server", &plan.server);
        set_text_property(&element, "app-id", &plan.app_id);
        set_text_property(&element, "token", &plan.token);
        match (&plan.role, &plan.remote_uid) {
            (Role::Call, Some(remote)) => set_text_property(&element, "remote-uid", remote),
            _ => {
                if element.find_property("remote-uid").is_some() {
                    element.set_property("remote-uid", None::<String>);
                }
            }
        }
        if plan.role == Role::Answer {
            set_text_property(&element, "answer", plan.answer.as_str());
            // One endpoint of the pool serving the uid: the server rings one free slot per
            // call (of this runner or another serving the uid), BUSY when all are in a call.
            set_text_property(&element, "service", "true");
        }
        if let Some(data) = &plan.user_data {
            set_text_property(&element, "user-data", data);
        }
        if let Some(ms) = plan.call_timeout_ms {
            set_text_property(&element, "call-timeout", &ms.to_string());
        }
        if !plan.ice_local_addresses.is_empty() {
            set_text_property(&element, "ice-local-addresses", &plan.ice_local_addresses.join(","));
        }
        if let Some(policy) = plan.ice_transport_policy {
            set_text_property(&element, "ice-transport-policy", policy.as_str());
        }
    }
}

/// The `wilddogcall` that a wilddog element is or drives (a `wilddogsink`/`wilddogsrc`'s
/// shared call exists from READY→PAUSED on).
fn call_of(element: &gst::Element) -> Option<gstwilddog::WilddogCall> {
    match element.clone().downcast::<gstwilddog::WilddogCall>() {
        Ok(call) => Some(call),
        Err(member) => member
            .find_property("call")
            .and_then(|_| member.property::<Option<gstwilddog::WilddogCall>>("call")),
    }
}

/// Makes `call` answer BUSY once its call is over (back to idle after any other state). The
/// handler runs on the element's signaling thread as the state changes, before the element
/// reads its next frame, so a caller rung in the moment between the end of the call and this
/// pipeline's teardown gets BUSY instead of a call that the teardown would cut.
fn busy_after_call(call: &gstwilddog::WilddogCall) {
    let had_call = AtomicBool::new(false);
    call.connect_notify(Some("state"), move |call, _| {
        let state = call.property::<Option<String>>("state").unwrap_or_default();
        if state != "idle" {
            had_call.store(true, Ordering::SeqCst);
        } else if had_call.load(Ordering::SeqCst) {
            call.set_property_from_str("answer", "busy");
        }
    });
}

/// Every wilddog element of the pipeline answers BUSY from now on (the pipeline is ending).
fn answer_busy(pipeline: &gst::Pipeline) {
    for element in pipeline_file::wilddog_elements(pipeline) {
        set_text_property(&element, "answer", "busy");
    }
}

/// The call state of the pipeline's wilddog elements: the first that is not idle.
fn call_state(pipeline: &gst::Pipeline) -> String {
    pipeline_file::wilddog_elements(pipeline)
        .filter(|e| e.find_property("state").is_some())
        .map(|e| e.property::<Option<String>>("state").unwrap_or_default())
        .find(|s| s != "idle")
        .unwrap_or_else(|| "idle".to_owned())
}

/// Whether a `wilddog-stats` message says that RTP has arrived from the peer: the only
/// proof in the stats that the call has a working media path.
fn stats_show_received_media(s: &gst::StructureRef) -> bool {
    s.get::<gst::Structure>("remote")
        .ok()
        .and_then(|remote| remote.get::<u64>("packetsReceived").ok())
        .is_some_and(|packets| packets > 0)
}

/// The conversation id the pipeline's wilddog elements know.
fn conversation_id(pipeline: &gst::Pipeline) -> Option<String> {
    pipeline_file::wilddog_elements(pipeline)
        .filter(|e| e.find_property("conversation-id").is_some())
        .find_map(|e| e.property::<Option<String>>("conversation-id"))
}

/// Hangs up (`close` action signal) on every wilddog element that has one.
fn hang_up(pipeline: &gst::Pipeline) {
    for element in pipeline_file::wilddog_elements(pipeline) {
        if glib_signal_exists(&element, "close") {
            element.emit_by_name::<()>("close", &[]);
        }
    }
}

fn glib_signal_exists(element: &gst::Element, name: &str) -> bool {
    gst::glib::subclass::SignalId::lookup(name, element.type_()).is_some()
}

/// Counts pipeline instances in this process, so that `${conversation_id}` placeholders of
/// two endpoints (the demo runs two) never collide.
static INSTANCES: AtomicU64 = AtomicU64::new(0);

/// State of one instance's bus loop.
struct Instance<'a> {
    plan: &'a Plan,
    events: &'a EventSink,
    /// The slot of an answering endpoint this instance serves.
    slot: Option<Slot<'a>>,
    /// Called when the instance begins to end after its call.
    call_over: Option<CallOver<'a>>,
    pipeline: gst::Pipeline,
    sinks: Arc<SinkWatch>,
    outcome: Option<Outcome>,
    was_ready: bool,
    had_call: bool,
    accepted_at: Option<Instant>,
    call_began: Option<Instant>,
    conversation_id: Option<String>,
    remote_uid: Option<String>,
    /// When the instance began to end, and until when it may drain EOS.
    ending: Option<Instant>,
    /// We hung up (the element then raises no `closed`; we report one).
    local_hangup: bool,
    /// The pipeline posted EOS before anything else ended the instance.
    ended_by_eos: bool,
    closed_reported: bool,
    error_codes: Vec<u32>,
    /// The call's media connected (ICE and DTLS up) at some point: a call that never did
    /// never reports success.
    media_connected: bool,
}

fn run_instance(
    plan: &Plan,
    stop: &StopFlag,
    events: &EventSink,
    slot: Option<Slot<'_>>,
) -> InstanceEnd {
    run_instance_with(plan, stop, events, slot, None)
}

/// [`run_instance`]; `call_over` is called when the instance begins to end after a call it
/// took (the slot may make its next pipeline then).
fn run_instance_with<'a>(
    plan: &'a Plan,
    stop: &'a StopFlag,
    events: &'a EventSink,
    slot: Option<Slot<'a>>,
    call_over: Option<CallOver<'a>>,
) -> InstanceEnd {
    let error_end = |message: String| {
        let mut map = fields([
            ("message", Value::from(message.clone())),
            ("uid", Value::from(plan.uid.clone())),
        ]);
        if let Some(slot) = slot {
            map.insert("slot".into(), Value::from(slot.index));
        }
        events("error", map);
        InstanceEnd {
            outcome: Outcome::Error { code: None, message },
            was_ready: false,
            had_call: false,
        }
    };
    let number = INSTANCES.fetch_add(1, Ordering::Relaxed);
    // A hidden name until the call is known.
    let placeholder = format!(".wilddog-call-{}-{}", std::process::id(), number);
    let uses_record_dir = plan.launch.contains("${record_dir}");
    let launch = match pipeline_file::expand(&plan.launch, |name| match name {
        "record_dir" => Some(plan.record_dir.display().to_string()),
        "conversation_id" => Some(placeholder.clone()),
        "uid" => Some(plan.uid.clone()),
        _ => None,
    }) {
        Ok(l) => l,
        Err(name) => return error_end(format!("unknown variable ${{{name}}}")),
    };
    if uses_record_dir && let Err(e) = std::fs::create_dir_all(&plan.record_dir) {
        return error_end(format!(
            "cannot create the record directory {}: {e}",
            plan.record_dir.display()
        ));
    }
    let pipeline = match pipeline_file::build(&launch) {
        Ok(p) => p,
        Err(e) => return error_end(format!("the pipeline does not parse: {e}")),
    };
    configure(&pipeline, plan, &placeholder);
    // Fed until this instance returns (its pipeline is stopped by then).
    let _shared = plan.shared.as_ref().map(|shared| shared.attach(&pipeline));
    let sinks = watch_sinks(&pipeline);
    let Some(bus) = pipeline.bus() else {
        return error_end("the pipeline has no bus".into());
    };

    let mut me = Instance {
        plan,
        events,
        slot,
        call_over,
        pipeline: pipeline.clone(),
        sinks,
        outcome: None,
        was_ready: false,
        had_call: false,
        accepted_at: None,
        call_began: None,
        conversation_id: None,
        remote_uid: plan.remote_uid.clone(),
        ending: None,
        local_hangup: false,
        ended_by_eos: false,
        closed_reported: false,
        error_codes: Vec::new(),
        media_connected: false,
    };
    // An answering pipeline takes one call: once it is over, BUSY until the pipeline is gone.
    // A wilddogcall now; the shared call of wilddogsink/wilddogsrc exists once they started.
    let mut watched: Vec<gstwilddog::WilddogCall> = Vec::new();
    let mut watch_calls = |pipeline: &gst::Pipeline| {
        if plan.role != Role::Answer || plan.answer != AnswerPolicy::Accept {
            return;
        }
        for call in pipeline_file::wilddog_elements(pipeline).filter_map(|e| call_of(&e)) {
            if !watched.contains(&call) {
                busy_after_call(&call);
                watched.push(call);
            }
        }
    };
    watch_calls(&pipeline);
    tracing::debug!("starting pipeline: {launch}");
    if pipeline.set_state(gst::State::Playing).is_err() {
        // The reason is on the bus.
        me.drain_errors(&bus);
        if me.outcome.is_none() {
            me.report_error(None, "the pipeline cannot start".into(), None);
        }
        let _ = pipeline.set_state(gst::State::Null);
        return me.finish(&placeholder);
    }
    watch_calls(&pipeline);

    loop {
        if !me.media_connected && me.had_call && call_state(&pipeline) == "connected" {
            me.media_connected = true;
        }
        if let Some(since) = me.ending {
            if since.elapsed() > FINALIZE_TIMEOUT {
                tracing::warn!(
                    "EOS did not reach every sink within {FINALIZE_TIMEOUT:?}; stopping anyway"
                );
                break;
            }
            if me.sinks.all_eos() && call_state(&pipeline) == "idle" {
                break;
            }
        } else if stop.is_raised() {
            if plan.role == Role::Answer {
                // No new call on a pipeline that is stopping.
                answer_busy(&pipeline);
            }
            let live = call_state(&pipeline) != "idle";
            if live {
                me.local_hangup = me.accepted_at.is_some() || plan.role == Role::Answer;
                hang_up(&pipeline);
            }
            // A caller stopped before its call carried media (unanswered, or answered and
            // still connecting) cancelled it: not a failure of the call, and not a success.
            me.outcome.get_or_insert(if plan.role == Role::Call && !me.media_connected {
                Outcome::Cancelled
            } else {
                Outcome::Ended
            });
            me.begin_ending();
        } else if !me.had_call && slot.is_some_and(|s| s.pool.exhausted()) {
            // Every call `exit_after_calls` allows was taken by other slots.
            answer_busy(&pipeline);
            me.outcome.get_or_insert(Outcome::Ended);
            me.begin_ending();
        } else if let (Some(after), Some(at)) = (plan.hangup_after, me.accepted_at)
            && at.elapsed() >= after
        {
            tracing::info!("hanging up after {after:?} (hangup_after)");
            me.local_hangup = true;
            hang_up(&pipeline);
            me.outcome.get_or_insert(Outcome::Ended);
            me.begin_ending();
        }

        let Some(message) = bus.timed_pop(gst::ClockTime::from_nseconds(POLL.as_nanos() as u64))
        else {
            continue;
        };
        match message.view() {
            gst::MessageView::Element(m) => {
                if let Some(s) = m.structure() {
                    me.on_element_message(s);
                }
            }
            gst::MessageView::Error(e) => {
                let code = e.details().and_then(|d| d.get::<u32>("code").ok());
                let source = message.src().map(|s| s.path_string().to_string());
                let text = match e.debug() {
                    Some(debug) => format!("{} ({debug})", e.error()),
                    None => e.error().to_string(),
                };
                tracing::error!("{}: {text}", source.as_deref().unwrap_or("pipeline"));
                me.report_error(code, e.error().to_string(), source);
                // A failed pipeline cannot drain: stop it now.
                break;
            }
            gst::MessageView::Warning(w) => {
                tracing::warn!(
                    "{}: {}",
                    message.src().map(|s| s.path_string().to_string()).unwrap_or_default(),
                    w.error()
                );
            }
            gst::MessageView::Eos(_) => {
                if me.ending.is_some() {
                    break;
                }
                // The pipeline ran out on its own: the call is over (the element tells how;
                // its `closed` may still be on the bus), or our sources ended, and the
                // element hung up when its sink pads got EOS.
                if me.outcome.is_none() {
                    me.ended_by_eos = true;
                    me.outcome = Some(if me.accepted_at.is_some() || plan.role == Role::Answer {
                        Outcome::Ended
                    } else {
                        Outcome::Cancelled
                    });
                }
                me.begin_ending();
            }
            _ => {}
        }
        // Answering endpoint after a REJECTED/TIMEOUT of its own: nothing ends; keep going.
        if me.outcome.is_some() && me.ending.is_none() {
            me.begin_ending();
        }
    }
    // What the elements said while the pipeline drained (`closed` may come after the EOS
    // it caused).
    loop {
        let expect_closed = !me.closed_reported
            && !me.local_hangup
            && me.had_call
            && matches!(me.outcome, Some(Outcome::Ended));
        let wait = if expect_closed { CLOSED_GRACE } else { Duration::ZERO };
        let Some(message) = bus.timed_pop_filtered(
            gst::ClockTime::from_nseconds(wait.as_nanos() as u64),
            &[gst::MessageType::Element],
        ) else {
            break;
        };
        if let Some(s) = message.structure() {
            me.on_element_message(s);
        }
    }
    unlink_wilddog_src_pads(&pipeline);
    let _ = pipeline.set_state(gst::State::Null);
    me.finish(&placeholder)
}

/// Unlinks what the wilddog elements' src pads feed, before the pipeline stops: an echo loops
/// them back into the element (`video_src` → `video_sink`), and GStreamer printed "loop
/// detected in the graph of bin" at each state change of the stop, on every call's end. The
/// call is over: nothing flows there any more.
fn unlink_wilddog_src_pads(pipeline: &gst::Pipeline) {
    for element in pipeline_file::wilddog_elements(pipeline) {
        for pad in element.src_pads() {
            if let Some(peer) = pad.peer() {
                let _ = pad.unlink(&peer);
            }
        }
    }
}

impl Instance<'_> {
    fn emit(&self, name: &str, mut map: Map<String, Value>) {
        map.entry("uid").or_insert_with(|| Value::from(self.plan.uid.clone()));
        if let Some(slot) = self.slot {
            map.entry("slot").or_insert_with(|| Value::from(slot.index));
        }
        (self.events)(name, map);
    }

    fn report_error(&mut self, code: Option<u32>, message: String, source: Option<String>) {
        if let Some(code) = code
            && self.error_codes.contains(&code)
        {
            // Already reported through `wilddog-error`.
        } else {
            let mut map = Map::new();
            if let Some(code) = code {
                map.insert("code".into(), Value::from(code));
            }
            map.insert("message".into(), Value::from(message.clone()));
            if let Some(source) = source {
                map.insert("source".into(), Value::from(source));
            }
            if let Some(cid) = &self.conversation_id {
                map.insert("conversation_id".into(), Value::from(cid.clone()));
            }
            self.emit("error", map);
        }
        if !matches!(self.outcome, Some(Outcome::Error { .. })) {
            self.outcome = Some(Outcome::Error { code, message });
        }
    }

    fn drain_errors(&mut self, bus: &gst::Bus) {
        while let Some(message) = bus.timed_pop_filtered(
            gst::ClockTime::from_mseconds(200),
            &[gst::MessageType::Error, gst::MessageType::Element],
        ) {
            match message.view() {
                gst::MessageView::Error(e) => {
                    let code = e.details().and_then(|d| d.get::<u32>("code").ok());
                    let source = message.src().map(|s| s.path_string().to_string());
                    self.report_error(code, e.error().to_string(), source);
                }
                gst::MessageView::Element(m) => {
                    if let Some(s) = m.structure() {
                        self.on_element_message(s);
                    }
                }
                _ => {}
            }
        }
    }

    /// Starts ending the instance: EOS from every source outside the wilddog elements (the
    /// element hangs up when all its sink pads have it), while the element sends EOS out of
    /// its source pads when the call is torn down; so every branch drains and recordings are
    /// finalized. The loop stops when the sinks have EOS (or after [`FINALIZE_TIMEOUT`]).
    ///
    /// Not EOS into the whole pipeline: that would reach webrtcbin's internals, whose pads
    /// block until a call is negotiated, and wait there forever. The sources get it from a
    /// thread of their own, so that a source stuck pushing cannot stall this loop.
    fn begin_ending(&mut self) {
        if self.ending.is_some() {
            return;
        }
        self.ending = Some(Instant::now());
        if self.plan.role == Role::Answer {
            // No new call on a pipeline that is ending.
            answer_busy(&self.pipeline);
        }
        if self.had_call
            && let Some(call_over) = self.call_over.take()
        {
            // This pipeline answers BUSY from now on; the slot may make the next one while
            // this one drains.
            call_over();
        }
        let sources: Vec<gst::Element> = self
            .pipeline
            .iterate_recurse()
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| {
                e.element_flags().contains(gst::ElementFlags::SOURCE)
                    && !e.is::<gst::Bin>()
                    && !inside_wilddog(e)
            })
            .collect();
        if sources.is_empty() {
            return;
        }
        let spawned = std::thread::Builder::new().name("eos".into()).spawn(move || {
            for source in sources {
                let _ = source.send_event(gst::event::Eos::new());
            }
        });
        if let Err(e) = spawned {
            tracing::warn!("cannot start the EOS thread: {e}");
        }
    }

    fn on_element_message(&mut self, s: &gst::StructureRef) {
        let Some(name) = event_name(s.name()) else { return };
        let mut map = structure_fields(s);
        // A decoded frame is media; stats are posted every 2 s from ACCEPTED on, also while
        // ICE has found no path, so they count only once packets have arrived.
        if name == "first-frame" || (name == "stats" && stats_show_received_media(s)) {
            self.media_connected = true;
        }
        match name.as_str() {
            "signaling" => {
                let connected = s.get::<bool>("connected").unwrap_or(false);
                let detail = s.get::<String>("detail").unwrap_or_default();
                if connected && !self.was_ready {
                    self.was_ready = true;
                    self.emit(
                        "ready",
                        fields([
                            ("role", Value::from(self.plan.role.as_str())),
                            ("server", Value::from(self.plan.server.clone())),
                            ("app_id", Value::from(self.plan.app_id.clone())),
                        ]),
                    );
                } else {
                    // The call goes on (its media does not need the server); the element
                    // reconnects and resumes it.
                    if connected {
                        tracing::info!("signaling connection back: {detail}");
                    } else {
                        tracing::warn!("signaling connection lost: {detail}");
                    }
                    let mut map = fields([
                        ("connected", Value::from(connected)),
                        ("detail", Value::from(detail)),
                    ]);
                    if let Some(cid) = &self.conversation_id {
                        map.insert("conversation_id".into(), Value::from(cid.clone()));
                    }
                    self.emit("signaling", map);
                }
                return;
            }
            "called" => {
                self.conversation_id = s.get::<String>("conversation-id").ok();
                self.remote_uid = s.get::<String>("remote-uid").ok();
                self.call_began = Some(Instant::now());
                if self.plan.answer == AnswerPolicy::Accept {
                    self.had_call = true;
                    self.accepted_at = Some(Instant::now());
                    if let Some(slot) = self.slot {
                        slot.pool.accepted.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
            "response" => {
                let status = s.get::<String>("status").unwrap_or_default();
                if self.conversation_id.is_none() {
                    self.conversation_id = conversation_id(&self.pipeline);
                }
                if let Some(cid) = &self.conversation_id {
                    map.insert("conversation_id".into(), Value::from(cid.clone()));
                }
                if status == "ACCEPTED" {
                    self.accepted_at = Some(Instant::now());
                    self.had_call = true;
                } else {
                    self.emit(&name, map);
                    self.outcome = Some(Outcome::Response(status));
                    self.begin_ending();
                    return;
                }
            }
            "closed" => {
                self.closed_reported = true;
                if !self.media_connected && call_state(&self.pipeline) == "connected" {
                    self.media_connected = true;
                }
                self.add_call_fields(&mut map);
                let refused = s.get::<String>("reason").is_ok_and(|r| r == "refused");
                let message = s.get::<String>("message").ok();
                self.emit(&name, map);
                if refused {
                    // The server dropped the call (or its resume): nobody answered it, and
                    // it is no success (exit code 1 with the server's reason).
                    self.outcome.get_or_insert(Outcome::Error {
                        code: None,
                        message: format!(
                            "the server refused the call: {}",
                            message.as_deref().unwrap_or("no reason given")
                        ),
                    });
                }
                self.outcome.get_or_insert(Outcome::Ended);
                self.begin_ending();
                return;
            }
            "error" => {
                let code = s.get::<u32>("code").ok();
                if let Some(code) = code {
                    self.error_codes.push(code);
                }
                if let Some(cid) = &self.conversation_id {
                    map.insert("conversation_id".into(), Value::from(cid.clone()));
                }
                self.emit(&name, map);
                let message = s.get::<String>("message").unwrap_or_else(|_| "call error".into());
                if !matches!(self.outcome, Some(Outcome::Error { .. })) {
                    self.outcome = Some(Outcome::Error { code, message });
                }
                if self.was_ready {
                    // The conversation is over; a failure to connect is followed by an
                    // element error, which stops the pipeline.
                    self.begin_ending();
                }
                return;
            }
            _ => {}
        }
        if let Some(cid) = &self.conversation_id {
            map.entry("conversation_id").or_insert_with(|| Value::from(cid.clone()));
        }
        self.emit(&name, map);
    }

    /// Conversation id, remote uid, duration and the media the sinks received.
    fn add_call_fields(&mut self, map: &mut Map<String, Value>) {
        if self.conversation_id.is_none() {
            self.conversation_id = conversation_id(&self.pipeline);
        }
        if let Some(cid) = &self.conversation_id {
            map.entry("conversation_id").or_insert_with(|| Value::from(cid.clone()));
        }
        if let Some(remote) = &self.remote_uid {
            map.entry("remote_uid").or_insert_with(|| Value::from(remote.clone()));
        }
        if let Some(at) = self.accepted_at {
            map.insert("duration_ms".into(), Value::from(at.elapsed().as_millis() as u64));
        }
        map.insert("received".into(), Value::Object(self.sinks.received()));
        map.insert("media_connected".into(), Value::from(self.media_connected));
    }

    /// A call that was accepted but never carried media did not succeed, however it ended.
    fn no_media_is_an_error(&mut self) {
        if self.had_call && !self.media_connected && matches!(self.outcome, Some(Outcome::Ended)) {
            let message = "the call ended without ever carrying media (its ICE/DTLS never \
                           connected)";
            // Said on stderr: its `closed` (with `media_connected` false) is already out.
            tracing::error!("41004: {message}");
            self.outcome = Some(Outcome::Error { code: Some(41004), message: message.into() });
        }
    }

    /// After the pipeline stopped: report our own hang-up, rename recordings.
    fn finish(mut self, placeholder: &str) -> InstanceEnd {
        if self.conversation_id.is_none() {
            self.conversation_id = conversation_id(&self.pipeline);
        }
        let failed_before = matches!(self.outcome, Some(Outcome::Error { .. }));
        // Every call that began ends with `closed`, a failed one too (reason `error`, after
        // its `error` event): an application waiting for `closed` and its `received` counts
        // gets them however the call ended.
        if !self.closed_reported && self.had_call {
            let reason = if failed_before {
                "error"
            } else if self.local_hangup || self.ended_by_eos {
                "local-hangup"
            } else {
                "ended"
            };
            let mut map = fields([("reason", Value::from(reason))]);
            self.add_call_fields(&mut map);
            self.emit("closed", map);
        }
        self.no_media_is_an_error();
        self.rename_recordings(placeholder);
        InstanceEnd {
            outcome: self.outcome.unwrap_or(Outcome::Ended),
            was_ready: self.was_ready,
            had_call: self.had_call,
        }
    }

    /// Files whose name holds the `${conversation_id}` placeholder get the real id (or are
    /// removed when no call happened, or they are empty: a call that never carried media).
    fn rename_recordings(&self, placeholder: &str) {
        for element in self.pipeline.iterate_recurse().into_iter().filter_map(Result::ok) {
            if element
                .find_property("location")
                .is_none_or(|p| p.value_type() != String::static_type())
            {
                continue;
            }
            let Some(location) = element.property::<Option<String>>("location") else { continue };
            if !location.contains(placeholder) {
                continue;
            }
            let from = Path::new(&location);
            if !from.exists() {
                continue;
            }
            // A call that never carried media recorded nothing: no file to keep or report.
            let empty = std::fs::metadata(from).is_ok_and(|m| m.len() == 0);
            match (&self.conversation_id, self.had_call && !empty) {
                (Some(cid), true) => {
                    let to = PathBuf::from(location.replace(placeholder, cid));
                    match std::fs::rename(from, &to) {
                        Ok(()) => {
                            let bytes = std::fs::metadata(&to).map(|m| m.len()).unwrap_or(0);
                            self.emit(
                                "recorded",
                                fields([
                                    ("path", Value::from(to.display().to_string())),
                                    ("bytes", Value::from(bytes)),
                                    ("conversation_id", Value::from(cid.clone())),
                                ]),
                            );
                        }
                        Err(e) => tracing::error!(
                            "cannot rename {} to {}: {e}",
                            from.display(),
                            to.display()
                        ),
                    }
                }
                _ => {
                    let _ = std::fs::remove_file(from);
                }
            }
        }
    }
}
