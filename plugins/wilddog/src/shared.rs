//! Calls shared by `wilddogsink` and `wilddogsrc` elements of one process.
//!
//! A process-wide registry maps a conversation name (the elements' `conversation`
//! property) to a [`SharedCall`]: a private pipeline holding one `wilddogcall`. A
//! `wilddogsink` feeds its raw input into that call through `appsink` → `appsrc` bridges; a
//! `wilddogsrc` gets the call's decoded output the same way. Bridged buffers are timestamped
//! again on arrival (the two pipelines have different base times). The call's bus messages
//! and errors are posted again by a member element, so the user's pipeline sees them.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, LazyLock, Mutex, Weak};

use gst::glib;
use gst::prelude::*;

use crate::wilddogcall::WilddogCall;

static REGISTRY: LazyLock<Mutex<HashMap<String, Weak<SharedCall>>>> =
    LazyLock::new(Default::default);

/// Default `conversation` of `wilddogsink` / `wilddogsrc`.
pub const DEFAULT_CONVERSATION: &str = "default";

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One named call shared by member elements.
pub struct SharedCall {
    name: String,
    pipeline: gst::Pipeline,
    call: WilddogCall,
    configured: Mutex<HashSet<String>>,
    members: Mutex<Vec<glib::WeakRef<gst::Element>>>,
    src_members: Mutex<Vec<glib::WeakRef<gst::Bin>>>,
    started: Mutex<bool>,
}

impl std::fmt::Debug for SharedCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedCall").field("name", &self.name).finish()
    }
}

/// A member's explicitly set `wilddogcall` properties, serialized (`glib::Value` is not
/// `Send`); `None` for a string set to NULL.
pub type CallProps = Vec<(String, Option<String>)>;

impl SharedCall {
    /// Joins (or creates) the call named `name`; `props` set on the call those properties
    /// no earlier member set.
    pub fn join(name: &str, member: &gst::Element, props: &CallProps) -> Arc<SharedCall> {
        let shared = {
            let mut reg = lock(&REGISTRY);
            match reg.get(name).and_then(Weak::upgrade) {
                Some(s) => s,
                None => {
                    let s = Arc::new(SharedCall::new(name));
                    reg.insert(name.to_owned(), Arc::downgrade(&s));
                    s
                }
            }
        };
        {
            let mut configured = lock(&shared.configured);
            for (k, v) in props {
                if configured.insert(k.clone()) {
                    set_serialized(shared.call.upcast_ref(), k, v.as_deref());
                }
            }
        }
        lock(&shared.members).push(member.downgrade());
        shared
    }

    fn new(name: &str) -> SharedCall {
        let pipeline = gst::Pipeline::with_name(&format!("wilddog-shared-{name}"));
        let call = WilddogCall::new(Some("call"));
        let _ = pipeline.add(&call);
        SharedCall {
            name: name.to_owned(),
            pipeline,
            call,
            configured: Mutex::new(HashSet::new()),
            members: Mutex::new(Vec::new()),
            src_members: Mutex::new(Vec::new()),
            started: Mutex::new(false),
        }
    }

    /// The call inside.
    pub fn call(&self) -> &WilddogCall {
        &self.call
    }

    fn first_member(&self) -> Option<gst::Element> {
        lock(&self.members).iter().find_map(|w| w.upgrade())
    }

    /// Feeds the call's `video_sink` / `audio_sink` from a new `appsrc`, returned.
    pub fn add_input(&self, pad_name: &str) -> Option<gst_app::AppSrc> {
        let appsrc = bridge_appsrc();
        self.pipeline.add(&appsrc).ok()?;
        let sink = self.call.request_pad_simple(pad_name)?;
        appsrc.static_pad("src")?.link(&sink).ok()?;
        let _ = appsrc.sync_state_with_parent();
        Some(appsrc)
    }

    /// Registers a `wilddogsrc` to receive the call's decoded streams.
    pub fn add_output_member(&self, member: &gst::Bin) {
        lock(&self.src_members).push(member.downgrade());
    }

    /// Starts the private pipeline (once), after every member in the user's pipeline set
    /// up its bridges (the first PAUSED→PLAYING of a member).
    pub fn start(self: &Arc<Self>) {
        let mut started = lock(&self.started);
        if *started {
            return;
        }
        *started = true;
        let weak = Arc::downgrade(self);
        self.call.connect_pad_added(move |_, pad| {
            if let Some(shared) = weak.upgrade() {
                shared.bridge_output(pad);
            }
        });
        let weak = Arc::downgrade(self);
        if let Some(bus) = self.pipeline.bus() {
            bus.set_sync_handler(move |_, msg| {
                if let Some(shared) = weak.upgrade() {
                    shared.forward(msg);
                }
                gst::BusSyncReply::Drop
            });
        }
        if self.pipeline.set_state(gst::State::Playing).is_err()
            && let Some(m) = self.first_member()
        {
            gst::element_error!(
                m,
                gst::CoreError::StateChange,
                ("the shared call `{}` could not start", self.name)
            );
        }
    }

    /// Re-posts the private pipeline's messages through a member.
    fn forward(&self, msg: &gst::Message) {
        let Some(member) = self.first_member() else { return };
        match msg.view() {
            gst::MessageView::Element(e) => {
                if let Some(s) = e.structure() {
                    let _ = member.post_message(
                        gst::message::Element::builder(s.to_owned()).src(&member).build(),
                    );
                }
            }
            gst::MessageView::Error(e) => {
                let mut b = gst::message::Error::builder_from_error(e.error()).src(&member);
                let debug = e.debug().map(|d| d.to_string());
                if let Some(d) = debug.as_deref() {
                    b = b.debug(d);
                }
                if let Some(details) = e.details() {
                    b = b.details(details.to_owned());
                }
                let _ = member.post_message(b.build());
            }
            gst::MessageView::Warning(w) => {
                let _ = member.post_message(
                    gst::message::Warning::builder_from_error(w.error()).src(&member).build(),
                );
            }
            gst::MessageView::Eos(_) => {
                // The call is over (a caller's only call, or every input ended): members
                // that are sinks end their stream too.
                for m in lock(&self.members).iter().filter_map(|w| w.upgrade()) {
                    if m.is::<crate::wilddogsink::WilddogSink>() {
                        let _ = m.post_message(gst::message::Eos::builder().src(&m).build());
                    }
                }
            }
            _ => {}
        }
    }

    /// A decoded stream of the call: into an `appsink`, then out of the `wilddogsrc`s.
    fn bridge_output(&self, pad: &gst::Pad) {
        let targets: Vec<gst_app::AppSrc> = lock(&self.src_members)
            .iter()
            .filter_map(|w| w.upgrade())
            .filter_map(|m| crate::wilddogsrc::expose(&m, &pad.name()))
            .collect();
        let appsink = gst_app::AppSink::builder().sync(false).max_buffers(4).drop(true).build();
        let eos_targets = targets.clone();
        appsink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    for t in &targets {
                        push_sample(t, &sample);
                    }
                    Ok(gst::FlowSuccess::Ok)
                })
                .eos(move |_| {
                    for t in &eos_targets {
                        let _ = t.end_of_stream();
                    }
                })
                .build(),
        );
        if self.pipeline.add(&appsink).is_ok() {
            let _ = appsink.sync_state_with_parent();
            if let Some(sink) = appsink.static_pad("sink") {
                let _ = pad.link(&sink);
            }
        }
    }
}

/// The receiving end of a bridge: a live `appsrc` that stamps each buffer on arrival and
/// drops the newest when its small queue is full (a stalled pipeline never blocks the other).
/// Both bridges use it: `wilddogsrc`'s pads (in the user's pipeline) and the call's inputs.
///
/// It answers the LATENCY query live, min 0, max NONE, as a live source must (min <= max).
/// Min 0: a buffer is stamped with the running time at which it arrives, so it is never
/// late by the time it took to get there. Max NONE: the queue is leaky, so however long
/// downstream waits on the clock the other pipeline is never held up; a wait longer than
/// the queue holds costs dropped buffers, not a stall (a leaky `queue` without a time limit
/// answers NONE too). Left unset, appsrc answers GstBaseSrc's default, max = min = 0: a sink
/// that syncs (autovideosink: basesink's `processing-deadline` is 20 ms) then finds its min
/// above the max and warns "Pipeline construction is invalid, please add queues", as the
/// documented `wilddogsrc ! videoconvert ! autovideosink` did.
pub fn bridge_appsrc() -> gst_app::AppSrc {
    let appsrc = gst_app::AppSrc::builder()
        .is_live(true)
        .do_timestamp(true)
        .format(gst::Format::Time)
        .max_buffers(4)
        .leaky_type(gst_app::AppLeakyType::Upstream)
        .build();
    appsrc.set_latency(gst::ClockTime::ZERO, gst::ClockTime::NONE);
    appsrc
}

/// Pushes a sample's buffer into `appsrc`, stamped again on arrival.
pub fn push_sample(appsrc: &gst_app::AppSrc, sample: &gst::Sample) {
    if let Some(caps) = sample.caps()
        && appsrc.caps().as_ref().map(|c| c.as_ref()) != Some(caps)
    {
        appsrc.set_caps(Some(&caps.to_owned()));
    }
    if let Some(buffer) = sample.buffer_owned() {
        let mut buffer = buffer;
        {
            let b = buffer.make_mut();
            b.set_pts(gst::ClockTime::NONE);
            b.set_dts(gst::ClockTime::NONE);
        }
        let _ = appsrc.push_buffer(buffer);
    }
}

impl Drop for SharedCall {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
        let mut reg = lock(&REGISTRY);
        if reg.get(&self.name).is_some_and(|w| w.strong_count() == 0) {
            reg.remove(&self.name);
        }
    }
}

/// Properties of a member element: `conversation`, `call` (read-only), and every
/// `wilddogcall` property, forwarded.
pub fn member_properties() -> Vec<glib::ParamSpec> {
    let mut props = vec![
        glib::ParamSpecString::builder("conversation")
            .nick("Conversation")
            .blurb("Name of the shared call: a wilddogsink and a wilddogsrc with the same name in one process are the two halves of one call")
            .default_value(Some(DEFAULT_CONVERSATION))
            .flags(glib::ParamFlags::READWRITE | gst::PARAM_FLAG_MUTABLE_READY)
            .build(),
        glib::ParamSpecObject::builder::<WilddogCall>("call")
            .nick("Call")
            .blurb("The shared wilddogcall (for its signals and action signals); NULL before READY→PAUSED")
            .read_only()
            .build(),
    ];
    props.extend(crate::wilddogcall::call_properties_for_members());
    props
}

/// What a member stores of its properties.
#[derive(Debug, Default)]
pub struct MemberSettings {
    /// `conversation`.
    pub conversation: Option<String>,
    /// Explicitly set `wilddogcall` properties, in order.
    pub props: CallProps,
}

impl MemberSettings {
    /// Stores a property set on a member.
    pub fn set(&mut self, pspec: &glib::ParamSpec, value: &glib::Value) {
        if pspec.name() == "conversation" {
            self.conversation = value.get::<Option<String>>().ok().flatten();
            return;
        }
        self.props.retain(|(k, _)| k != pspec.name());
        let text = if value.type_() == glib::Type::STRING {
            value.get::<Option<String>>().ok().flatten()
        } else {
            value.serialize().ok().map(|s| s.to_string())
        };
        self.props.push((pspec.name().to_owned(), text));
    }

    /// Reads a property of a member (the shared call's value once joined).
    pub fn get(&self, pspec: &glib::ParamSpec, shared: Option<&Arc<SharedCall>>) -> glib::Value {
        match pspec.name() {
            "conversation" => self
                .conversation
                .clone()
                .unwrap_or_else(|| DEFAULT_CONVERSATION.to_owned())
                .to_value(),
            "call" => shared.map(|s| s.call().clone()).to_value(),
            name => {
                if let Some(s) = shared {
                    return s.call().property_value(name);
                }
                match self.props.iter().find(|(k, _)| k == name) {
                    Some((_, Some(text))) if pspec.value_type() == glib::Type::STRING => {
                        text.to_value()
                    }
                    Some((_, Some(text))) => match glib::Value::deserialize_with_pspec(text, pspec)
                    {
                        Ok(v) if v.type_().is_a(pspec.value_type()) => v,
                        _ => pspec.default_value().clone(),
                    },
                    _ => pspec.default_value().clone(),
                }
            }
        }
    }

    /// The conversation name.
    pub fn name(&self) -> String {
        self.conversation.clone().unwrap_or_else(|| DEFAULT_CONVERSATION.to_owned())
    }
}

/// Sets a property of `obj` from its serialized text (strings as they are).
fn set_serialized(obj: &glib::Object, name: &str, text: Option<&str>) {
    let Some(pspec) = obj.find_property(name) else { return };
    if pspec.value_type() == glib::Type::STRING {
        obj.set_property(name, text);
    } else if let Some(text) = text
        && let Err(e) = crate::media::try_set_str(obj, name, text)
    {
        // Values a member took once, so refused only by a differing element version.
        gst::warning!(gst::CAT_DEFAULT, obj = obj, "cannot set {name}={text}: {e}");
    }
}
