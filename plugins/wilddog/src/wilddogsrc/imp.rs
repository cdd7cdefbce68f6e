//! Implementation of `wilddogsrc`: a shared call's decoded streams out of sometimes pads.

use std::sync::{Arc, LazyLock, Mutex};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;

use crate::shared::{self, MemberSettings, SharedCall};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "wilddogsrc",
        gst::DebugColorFlags::empty(),
        Some("Wilddog call, remote half"),
    )
});

#[derive(Default)]
struct State {
    shared: Option<Arc<SharedCall>>,
}

/// The `wilddogsrc` bin.
#[derive(Default)]
pub struct WilddogSrc {
    settings: Mutex<MemberSettings>,
    state: Mutex<State>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[glib::object_subclass]
impl ObjectSubclass for WilddogSrc {
    const NAME: &'static str = "GstWilddogSrc";
    type Type = super::WilddogSrc;
    type ParentType = gst::Bin;
}

impl ObjectImpl for WilddogSrc {
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

impl GstObjectImpl for WilddogSrc {}

impl ElementImpl for WilddogSrc {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static META: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "Wilddog call source",
                "Source/Network/WebRTC",
                "The remote half of a Wilddog call: the other party's decoded video/audio; pairs with a wilddogsink of the same conversation",
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
                    gst::PadDirection::Src,
                    gst::PadPresence::Sometimes,
                    &caps,
                )
                .unwrap_or_else(|e| panic!("pad template {name}: {e}"))
            };
            vec![
                t("video_src", gst::Caps::builder("video/x-raw").build()),
                t("audio_src", gst::Caps::builder("audio/x-raw").build()),
            ]
        });
        TEMPLATES.as_ref()
    }

    fn change_state(
        &self,
        transition: gst::StateChange,
    ) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        if transition == gst::StateChange::ReadyToPaused {
            let (name, props) = {
                let s = lock(&self.settings);
                (s.name(), s.props.clone())
            };
            let shared = SharedCall::join(&name, self.obj().upcast_ref(), &props);
            shared.add_output_member(self.obj().upcast_ref());
            gst::debug!(CAT, imp = self, "joined shared call `{name}`");
            lock(&self.state).shared = Some(shared);
        }
        if transition == gst::StateChange::PausedToPlaying
            && let Some(s) = lock(&self.state).shared.clone()
        {
            s.start();
        }
        let mut ret = self.parent_change_state(transition)?;
        match transition {
            gst::StateChange::ReadyToPaused | gst::StateChange::PlayingToPaused => {
                ret = gst::StateChangeSuccess::NoPreroll
            }
            gst::StateChange::PausedToReady => {
                lock(&self.state).shared = None;
                let obj = self.obj();
                for pad in obj.src_pads() {
                    let _ = obj.remove_pad(&pad);
                }
                for child in obj.children() {
                    let _ = child.set_state(gst::State::Null);
                    let _ = obj.remove(&child);
                }
            }
            _ => {}
        }
        Ok(ret)
    }
}

impl BinImpl for WilddogSrc {}

/// Adds the pad `pad_name` fed by a new live `appsrc`, returned.
pub(super) fn expose(src: &super::WilddogSrc, pad_name: &str) -> Option<gst_app::AppSrc> {
    if src.static_pad(pad_name).is_some() {
        // A pad of an earlier call: it had EOS; make way for the new stream.
        if let Some(old) = src.static_pad(pad_name) {
            let _ = src.remove_pad(&old);
        }
    }
    let appsrc = shared::bridge_appsrc();
    src.add(&appsrc).ok()?;
    let templ = src.pad_template(pad_name)?;
    let ghost =
        gst::GhostPad::builder_from_template_with_target(&templ, &appsrc.static_pad("src")?)
            .ok()?
            .name(pad_name)
            .build();
    let _ = appsrc.sync_state_with_parent();
    let _ = ghost.set_active(true);
    src.add_pad(&ghost).ok()?;
    Some(appsrc)
}
