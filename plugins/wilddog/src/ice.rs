//! ICE set-up of every webrtcbin the plugin makes: UPnP off, gathering restricted to the
//! local addresses a call may use, and the ICE servers `connack` handed out.
//!
//! webrtcbin exposes its ICE implementation as the `ice-agent` property (a `GstWebRTCNice`),
//! whose `agent` property is libnice's `NiceAgent`. libnice has no GObject property for the
//! local addresses, so they are added through its C API (`nice_agent_add_local_address`),
//! which must happen before gathering starts (before the first `set-local-description`).

use std::ffi::{CString, c_char, c_int, c_void};
use std::net::IpAddr;

use glib::prelude::*;
use glib::translate::ToGlibPtr;

use wilddog_protocol::IceServer;

#[allow(non_camel_case_types)]
type NiceAddress = c_void;

unsafe extern "C" {
    fn nice_address_new() -> *mut NiceAddress;
    fn nice_address_set_from_string(addr: *mut NiceAddress, str: *const c_char) -> c_int;
    fn nice_address_free(addr: *mut NiceAddress);
    fn nice_agent_add_local_address(
        agent: *mut glib::gobject_ffi::GObject,
        addr: *const NiceAddress,
    ) -> c_int;
}

/// Why a webrtcbin's ICE agent could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum IceSetupError {
    /// The webrtcbin has no `ice-agent`, or its agent is not libnice's.
    #[error("webrtcbin has no libnice agent (ice-agent/agent property missing)")]
    NoNiceAgent,
    /// libnice refused the address.
    #[error("libnice refused local address {0}")]
    AddressRefused(IpAddr),
}

/// The libnice `NiceAgent` under a webrtcbin, if it has one.
pub fn nice_agent(webrtcbin: &gst::Element) -> Option<glib::Object> {
    webrtcbin.find_property("ice-agent")?;
    let ice = webrtcbin.property::<Option<glib::Object>>("ice-agent")?;
    ice.find_property("agent")?;
    ice.property::<Option<glib::Object>>("agent")
}

/// Turns UPnP off on the webrtcbin's agent and, when `local_addresses` is not empty, makes
/// it gather host candidates from these addresses only. Call before gathering starts.
pub fn configure_agent(
    webrtcbin: &gst::Element,
    local_addresses: &[IpAddr],
) -> Result<(), IceSetupError> {
    let agent = nice_agent(webrtcbin).ok_or(IceSetupError::NoNiceAgent)?;
    if agent.find_property("upnp").is_some() {
        // Debian's libnice is built with UPnP IGD: without this, gathering sends SSDP
        // multicast out of the machine's interfaces.
        agent.set_property("upnp", false);
    }
    for addr in local_addresses {
        add_local_address(&agent, *addr)?;
    }
    Ok(())
}

fn add_local_address(agent: &glib::Object, addr: IpAddr) -> Result<(), IceSetupError> {
    // An IpAddr's text never holds a NUL byte.
    let text = CString::new(addr.to_string()).map_err(|_| IceSetupError::AddressRefused(addr))?;
    // SAFETY: `agent` is a live NiceAgent (checked by its `upnp`/`agent` origin); the
    // NiceAddress is allocated, filled and freed here, and libnice copies it.
    let added = unsafe {
        let nice_addr = nice_address_new();
        if nice_addr.is_null() {
            return Err(IceSetupError::AddressRefused(addr));
        }
        let parsed = nice_address_set_from_string(nice_addr, text.as_ptr());
        let added =
            parsed != 0 && nice_agent_add_local_address(agent.to_glib_none().0, nice_addr) != 0;
        nice_address_free(nice_addr);
        added
    };
    if added { Ok(()) } else { Err(IceSetupError::AddressRefused(addr)) }
}

/// Parses a comma- or space-separated list of IP addresses (the `ice-local-addresses`
/// property).
pub fn parse_local_addresses(text: &str) -> Result<Vec<IpAddr>, String> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<IpAddr>().map_err(|e| format!("`{s}` is not an IP address: {e}")))
        .collect()
}

/// Hands the ICE servers from `connack` (or the call) to webrtcbin: the first STUN URL as
/// `stun-server`, every TURN URL with its credentials through `add-turn-server`. Nothing
/// else is ever configured.
pub fn apply_ice_servers(webrtcbin: &gst::Element, servers: &[IceServer]) {
    let mut stun_set = false;
    for server in servers {
        for url in server.all_urls() {
            if let Some(rest) = url.strip_prefix("stun:") {
                if !stun_set {
                    let rest = rest.trim_start_matches("//");
                    webrtcbin.set_property("stun-server", format!("stun://{rest}"));
                    stun_set = true;
                }
            } else if let Some((scheme, rest)) = url.split_once(':')
                && (scheme == "turn" || scheme == "turns")
            {
                let rest = rest.trim_start_matches("//");
                // webrtcbin wants turn(s)://user:pass@host:port, with ':' in user/pass escaped.
                let user = encode(server.username.as_deref().unwrap_or(""));
                let pass = encode(server.credential.as_deref().unwrap_or(""));
                let rest = rest.split('?').next().unwrap_or(rest);
                let uri = format!("{scheme}://{user}:{pass}@{rest}");
                let _ = webrtcbin.emit_by_name::<bool>("add-turn-server", &[&uri]);
            }
        }
    }
}

fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_address_lists() {
        assert_eq!(
            parse_local_addresses("127.0.0.1, ::1").unwrap(),
            vec!["127.0.0.1".parse::<IpAddr>().unwrap(), "::1".parse().unwrap()]
        );
        assert!(parse_local_addresses("").unwrap().is_empty());
        assert!(parse_local_addresses("localhost").is_err());
    }

    #[test]
    fn percent_encodes_turn_credentials() {
        assert_eq!(encode("a:b@c"), "a%3Ab%40c");
    }
}
