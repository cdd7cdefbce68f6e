//! What makes a peer connection reach its peer through any network: its DTLS certificate
//! (`crate::dtls`), where ICE gathers and with which policy, the ICE servers it was given
//! (TURN with its transport, `turns:` through a TLS tunnel) and the watch that ends a call
//! whose gathering found no candidate at all (41004, saying why).

use std::net::IpAddr;

use gst::prelude::*;
use gst::subclass::prelude::*;
use wilddog_call::{IceServer, Input};

use super::{CAT, Validated, WilddogCall, lock};
use crate::ice::{self, AppliedServers};

/// The connectivity part of a peer connection, kept as long as it is.
#[derive(Debug, Default)]
pub(super) struct Connectivity {
    /// `a=fingerprint` of our certificate, for the SDP we send (`crate::dtls`).
    pub(super) fingerprint: String,
    /// Where ICE gathers (empty: every interface).
    gathering: Vec<IpAddr>,
    /// The ICE servers handed to webrtcbin, and the `turns:` tunnels.
    servers: AppliedServers,
}

impl WilddogCall {
    /// Sets a fresh webrtcbin up before it gathers: its own ECDSA certificate, UPnP off,
    /// the local addresses (127.0.0.1 on a loopback-only host), the transport policy, and
    /// the gathering watch.
    pub(super) fn setup_connectivity(
        &self,
        webrtcbin: &gst::Element,
        validated: &Validated,
    ) -> Result<Connectivity, String> {
        let fingerprint = crate::dtls::use_own_certificate(webrtcbin).map_err(|e| e.to_string())?;
        let gathering = ice::gathering_addresses(&validated.local_addresses);
        if validated.local_addresses.is_empty() && !gathering.is_empty() {
            gst::info!(CAT, imp = self, "no network interface but loopback: ICE uses 127.0.0.1");
        }
        ice::configure_agent(webrtcbin, &gathering).map_err(|e| e.to_string())?;
        let policy = match validated.ice_transport_policy {
            ice::IceTransportPolicy::All => gst_webrtc::WebRTCICETransportPolicy::All,
            ice::IceTransportPolicy::Relay => gst_webrtc::WebRTCICETransportPolicy::Relay,
        };
        webrtcbin.set_property("ice-transport-policy", policy);
        let weak = self.obj().downgrade();
        let webrtc_weak = webrtcbin.downgrade();
        let doomed = !gathering.is_empty() && !ice::can_gather_on(&gathering);
        ice::watch_gathering(webrtcbin, doomed, move || {
            if let (Some(obj), Some(webrtcbin)) = (weak.upgrade(), webrtc_weak.upgrade()) {
                obj.imp().gathered_nothing(&webrtcbin);
            }
        });
        Ok(Connectivity { fingerprint, gathering, servers: AppliedServers::default() })
    }

    /// Hands the call's ICE servers to the current webrtcbin.
    pub(super) fn apply_ice_servers(&self, servers: &[IceServer]) {
        let (webrtcbin, tls) = {
            let st = lock(&self.state);
            let tls = st.validated.as_ref().map(|v| v.turn_tls.clone());
            (st.media.as_ref().map(|m| m.webrtcbin.clone()), tls)
        };
        let (Some(webrtcbin), Some(tls)) = (webrtcbin, tls) else { return };
        let applied = ice::apply_ice_servers(&webrtcbin, servers, &tls);
        for refused in &applied.refused {
            gst::element_imp_warning!(
                self,
                gst::ResourceError::Settings,
                ("ICE server not used: {}", refused)
            );
        }
        gst::debug!(CAT, imp = self, "TURN servers: {:?}", applied.turn);
        let mut st = lock(&self.state);
        if let Some(m) = st.media.as_mut().filter(|m| m.webrtcbin == webrtcbin) {
            m.connectivity.servers = applied;
        }
    }

    /// A round of gathering of `webrtcbin` ended with no candidate: the call cannot connect.
    fn gathered_nothing(&self, webrtcbin: &gst::Element) {
        let message = {
            let mut st = lock(&self.state);
            let Some(media) = st.media.as_ref().filter(|m| &m.webrtcbin == webrtcbin) else {
                return;
            };
            let Some(v) = st.validated.as_ref() else { return };
            let c = &media.connectivity;
            let mut refused = c.servers.refused.clone();
            refused.extend(c.servers.tunnels.iter().filter_map(|t| t.failure()));
            let message = ice::no_candidate_message(
                v.ice_transport_policy,
                &v.local_addresses,
                &c.gathering,
                &c.servers.turn,
                &refused,
            );
            st.media_failure = Some(message.clone());
            message
        };
        gst::element_imp_warning!(self, gst::ResourceError::OpenReadWrite, ("{}", message));
        self.input(Input::MediaFailed);
    }
}
