//! Implementation of `wilddogsink`: request sink pads bridged into a shared call.

use std::sync::{Arc, LazyLock, Mutex};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;

use crate::shared::{self, MemberSettings, SharedCall};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "wilddogsink",
        gst::DebugColorFlags::empty(),
        Some("Wilddog call, local half"),
    )
});

#[derive(Default)]
struct State {
    inputs: Vec<(String, gst_app::AppSink)>,
    shared: Option<Arc<SharedCall>>,
}

/// The `wilddogsink` bin.
#[derive(Default)]
pub struct WilddogSink {
    settings: Mutex<MemberSettings>,
    state: Mutex<State>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[glib::object_subclass]
impl ObjectSubclass for WilddogSink {
    const NAME: &'static str = "GstWilddogSink";
    type Type = super::WilddogSink;
    type ParentType = gst::Bin;
}

impl ObjectImpl for WilddogSink {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPS: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(shared::member_properties);
        PROPS.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        lock(&self.settings).set(pspec, value);
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let shared = lock(&self.state).shared.clone();
        lock(&self.settings).get(pspec, shared.as_ref())
    }
}

impl GstObjectImpl for WilddogSink {}

impl ElementImpl for WilddogSink {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static META: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "Wilddog call sink",
                "Sink/Network/WebRTC",
                "The local half of a Wilddog call: sends raw video/audio; pairs with a wilddogsrc of the same conversation",
                "wilddog-gst developers",
            )
        });
        Some(&*META)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let t = |name, caps: gst::Caps| {
                gst::PadTemplate::new(
                    name,
                    gst::PadDirection::Sink,
                    gst::PadPresence::Request,
                    &caps,
                )
                .unwrap_or_else(|e| panic!("pad template {name}: {e}"))
            };
            vec![
                t("video_sink", gst::Caps::builder("video/x-raw").build()),
                t("audio_sink", gst::Caps::builder("audio/x-raw").build()),
            ]
        });
        TEMPLATES.as_ref()
    }

    fn request_new_pad(
        &self,
        templ: &gst::PadTemplate,
        _name: Option<&str>,
        _caps: Option<&gst::Caps>,
    ) -> Option<gst::Pad> {
        let name = templ.name_template().to_string();
        if lock(&self.state).inputs.iter().any(|(n, _)| *n == name) {
            return None;
        }
        let appsink =
            gst_app::AppSink::builder().sync(false).async_(false).max_buffers(4).drop(true).build();
        self.obj().add(&appsink).ok()?;
        let ghost =
            gst::GhostPad::builder_from_template_with_target(templ, &appsink.static_pad("sink")?)
                .ok()?
                .name(name.as_str())
                .build();
        self.obj().add_pad(&ghost).ok()?;
        let _ = appsink.sync_state_with_parent();
        lock(&self.state).inputs.push((name, appsink));
        Some(ghost.upcast())
    }

    fn change_state(
        &self,
        transition: gst::StateChange,
    ) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        if transition == gst::StateChange::ReadyToPaused {
            self.join()?;
        }
        if transition == gst::StateChange::PausedToPlaying
            && let Some(s) = lock(&self.state).shared.clone()
        {
            s.start();
        }
        let ret = self.parent_change_state(transition)?;
        if transition == gst::StateChange::PausedToReady {
            lock(&self.state).shared = None;
        }
        Ok(ret)
    }
}

impl BinImpl for WilddogSink {}

impl WilddogSink {
    fn join(&self) -> Result<(), gst::StateChangeError> {
        let (name, props) = {
            let s = lock(&self.settings);
            (s.name(), s.props.clone())
        };
        let inputs = lock(&self.state).inputs.clone();
        if inputs.is_empty() {
            gst::element_imp_error!(
                self,
                gst::CoreError::Negotiation,
                ("no pads linked: request video_sink and/or audio_sink")
            );
            return Err(gst::StateChangeError);
        }
        let shared = SharedCall::join(&name, self.obj().upcast_ref(), &props);
        for (pad_name, appsink) in inputs {
            let Some(appsrc) = shared.add_input(&pad_name) else {
                gst::element_imp_error!(
                    self,
                    gst::CoreError::Pad,
                    ("the shared call `{}` has {} already", name, pad_name)
                );
                return Err(gst::StateChangeError);
            };
            let eos_src = appsrc.clone();
            appsink.set_callbacks(
                gst_app::AppSinkCallbacks::builder()
                    .new_sample(move |sink| {
                        let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                        shared::push_sample(&appsrc, &sample);
                        Ok(gst::FlowSuccess::Ok)
                    })
                    .eos(move |_| {
                        let _ = eos_src.end_of_stream();
                    })
                    .build(),
            );
        }
        gst::debug!(CAT, imp = self, "joined shared call `{name}`");
        lock(&self.state).shared = Some(shared);
        Ok(())
    }
}
