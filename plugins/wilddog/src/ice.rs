//! ICE set-up of every webrtcbin the plugin makes: UPnP off, gathering restricted to the
//! local addresses a call may use (127.0.0.1 on a host whose only interface is loopback),
//! the ICE servers `connack` handed out (TURN with its transport; `turns:` through a local
//! TLS tunnel, [`crate::turn_tls`]), the transport policy (`all` or `relay`), and a watch
//! on gathering that tells when it ended with no candidate at all.
//!
//! webrtcbin exposes its ICE implementation as the `ice-agent` property (a `GstWebRTCNice`),
//! whose `agent` property is libnice's `NiceAgent`. libnice has no GObject property for the
//! local addresses, so they are added through its C API (`nice_agent_add_local_address`),
//! which must happen before gathering starts (before the first `set-local-description`).

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

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
    fn nice_interfaces_get_local_ips(include_loopback: c_int) -> *mut glib::ffi::GList;
}

/// Which candidates a peer connection may use (`ice-transport-policy`), as
/// `RTCIceTransportPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, glib::Enum, Default)]
#[repr(i32)]
#[enum_type(name = "GstWilddogIceTransportPolicy")]
pub enum IceTransportPolicy {
    /// Every candidate: host, server-reflexive and relayed.
    #[default]
    #[enum_value(name = "Every candidate (host, server-reflexive, relay)", nick = "all")]
    All = 0,
    /// Relayed candidates only: media goes through a TURN server.
    #[enum_value(name = "TURN relay candidates only", nick = "relay")]
    Relay = 1,
}

impl IceTransportPolicy {
    /// `all` or `relay`.
    pub fn as_str(self) -> &'static str {
        match self {
            IceTransportPolicy::All => "all",
            IceTransportPolicy::Relay => "relay",
        }
    }
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

/// The addresses libnice gathers from when it is given none: those of every interface that
/// is up, loopback excluded (libnice's own list).
pub fn default_gathering_addresses() -> Vec<String> {
    local_ips(false)
}

/// Whether gathering on `addresses` (not empty) can find anything: one of them is an address
/// of an interface of this host that is up (loopback included). libnice does not even start
/// gathering otherwise, so its gathering never completes.
pub fn can_gather_on(addresses: &[IpAddr]) -> bool {
    let local: Vec<IpAddr> = local_ips(true).iter().filter_map(|a| a.parse().ok()).collect();
    addresses.iter().any(|a| local.contains(a))
}

fn local_ips(include_loopback: bool) -> Vec<String> {
    let mut out = Vec::new();
    // SAFETY: libnice returns a newly allocated GList of newly allocated C strings, which
    // are read and then freed here.
    unsafe {
        let list = nice_interfaces_get_local_ips(c_int::from(include_loopback));
        let mut node = list;
        while !node.is_null() {
            let data = (*node).data as *const c_char;
            if !data.is_null() {
                out.push(CStr::from_ptr(data).to_string_lossy().into_owned());
            }
            glib::ffi::g_free((*node).data);
            node = (*node).next;
        }
        glib::ffi::g_list_free(list);
    }
    out
}

/// The local addresses a peer connection gathers from: the ones asked for; else, when
/// libnice would find none (a host or container whose only interface is loopback),
/// 127.0.0.1, so that calls on the same machine still connect; else none (every interface).
pub fn gathering_addresses(configured: &[IpAddr]) -> Vec<IpAddr> {
    if !configured.is_empty() {
        return configured.to_vec();
    }
    if default_gathering_addresses().is_empty() {
        vec![IpAddr::from([127, 0, 0, 1])]
    } else {
        Vec::new()
    }
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

/// What [`apply_ice_servers`] did.
#[derive(Debug, Default)]
pub struct AppliedServers {
    /// TURN URLs handed to webrtcbin (as they were given).
    pub turn: Vec<String>,
    /// The tunnels of the `turns:` servers: they live as long as the peer connection.
    pub tunnels: Vec<crate::turn_tls::Tunnel>,
    /// Servers that could not be used, and why.
    pub refused: Vec<String>,
}

/// Hands the ICE servers from `connack` (or the call) to webrtcbin: the first STUN URL as
/// `stun-server`, every TURN URL with its credentials through `add-turn-server` with its
/// transport (`?transport=udp|tcp`; none: both), every `turns:` URL through a local TLS
/// tunnel made with `tls` (TURN over TCP to the tunnel, TLS from it). Nothing else is ever
/// configured.
pub fn apply_ice_servers(
    webrtcbin: &gst::Element,
    servers: &[IceServer],
    tls: &Arc<rustls::ClientConfig>,
) -> AppliedServers {
    let mut applied = AppliedServers::default();
    let mut stun_set = false;
    for server in servers {
        for url in server.all_urls() {
            if let Some(rest) = url.strip_prefix("stun:") {
                if !stun_set {
                    let rest = rest.trim_start_matches("//");
                    let rest = rest.split('?').next().unwrap_or(rest);
                    webrtcbin.set_property("stun-server", format!("stun://{rest}"));
                    stun_set = true;
                }
                continue;
            }
            let Some((scheme, rest)) = url.split_once(':') else { continue };
            // webrtcbin wants turn://user:pass@host:port, with ':' in user/pass escaped.
            let user = encode(server.username.as_deref().unwrap_or(""));
            let pass = encode(server.credential.as_deref().unwrap_or(""));
            let uri = match scheme {
                "turn" => {
                    let rest = rest.trim_start_matches("//");
                    let (host_port, query) = match rest.split_once('?') {
                        Some((hp, q)) => (hp, Some(q)),
                        None => (rest, None),
                    };
                    match query.and_then(transport_of) {
                        Some(Ok(t)) => format!("turn://{user}:{pass}@{host_port}?transport={t}"),
                        Some(Err(t)) => {
                            applied.refused.push(format!("{url}: unknown transport `{t}`"));
                            continue;
                        }
                        None => format!("turn://{user}:{pass}@{host_port}"),
                    }
                }
                "turns" => {
                    let Some((host, port)) = crate::turn_tls::host_port(rest) else {
                        applied.refused.push(format!("{url}: no host"));
                        continue;
                    };
                    match crate::turn_tls::Tunnel::start(&host, port, tls.clone()) {
                        Ok(tunnel) => {
                            let local = tunnel.local_addr();
                            applied.tunnels.push(tunnel);
                            format!("turn://{user}:{pass}@{local}?transport=tcp")
                        }
                        Err(e) => {
                            applied.refused.push(format!("{url}: {e}"));
                            continue;
                        }
                    }
                }
                _ => continue,
            };
            if webrtcbin.emit_by_name::<bool>("add-turn-server", &[&uri]) {
                applied.turn.push(url.clone());
            } else {
                applied.refused.push(format!("{url}: webrtcbin refused it"));
            }
        }
    }
    applied
}

/// The `transport` of a TURN URL's query: `Ok("udp" | "tcp")`, `Err(other)`, or `None`.
fn transport_of(query: &str) -> Option<Result<&'static str, String>> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == "transport").then(|| match v.to_ascii_lowercase().as_str() {
            "udp" => Ok("udp"),
            "tcp" => Ok("tcp"),
            _ => Err(v.to_owned()),
        })
    })
}

/// Watches a webrtcbin's ICE gathering: when a round of gathering completes without a single
/// local candidate, calls `on_empty` (once per round). Nobody can reach a peer connection
/// without a candidate, so the call cannot connect: better to end it at once, saying why,
/// than after the connect timeout. `doomed`: gathering cannot find anything (no local
/// address to gather on, see [`can_gather_on`]), and libnice will not even say it is over:
/// `on_empty` is called as soon as it starts.
pub fn watch_gathering(
    webrtcbin: &gst::Element,
    doomed: bool,
    on_empty: impl Fn() + Send + Sync + 'static,
) {
    let count = Arc::new(AtomicUsize::new(0));
    let counted = count.clone();
    webrtcbin.connect("on-ice-candidate", false, move |values| {
        // An active TCP candidate (port 9, nothing bound: libnice makes one even for an
        // address no interface has) receives nothing: it does not count.
        let candidate = values.get(2).and_then(|v| v.get::<String>().ok());
        if candidate.is_some_and(|c| !c.is_empty() && !c.contains("tcptype active")) {
            counted.fetch_add(1, Ordering::SeqCst);
        }
        None
    });
    let on_empty = Arc::new(on_empty);
    webrtcbin.connect_notify(Some("ice-gathering-state"), move |webrtcbin, _| {
        use gst_webrtc::WebRTCICEGatheringState as G;
        let state = webrtcbin.property::<G>("ice-gathering-state");
        if state == G::Gathering {
            count.store(0, Ordering::SeqCst);
        }
        match state {
            G::Gathering if !doomed => {}
            G::Gathering | G::Complete => {
                // Candidates are signalled from webrtcbin's own thread, maybe after this
                // notification: look again a little later.
                let count = count.clone();
                let on_empty = on_empty.clone();
                let weak = webrtcbin.downgrade();
                crate::runtime().spawn(async move {
                    tokio::time::sleep(GATHERING_SETTLE).await;
                    let Some(webrtcbin) = weak.upgrade() else { return };
                    let now = webrtcbin.property::<G>("ice-gathering-state");
                    if now == state && count.load(Ordering::SeqCst) == 0 {
                        on_empty();
                    }
                });
            }
            _ => {}
        }
    });
}

/// How long after gathering completed its candidates are counted.
const GATHERING_SETTLE: Duration = Duration::from_millis(300);

/// Why a round of gathering found nothing, for the message of the call's error: what was
/// asked of ICE and what to set.
pub fn no_candidate_message(
    policy: IceTransportPolicy,
    configured: &[IpAddr],
    gathering: &[IpAddr],
    turn: &[String],
    refused: &[String],
) -> String {
    let mut why = match policy {
        IceTransportPolicy::Relay if turn.is_empty() => "ICE gathered no candidate: \
            ice-transport-policy=relay, but no TURN server was usable (the signaling \
            server's connack/call carried none; configure [turn] on the server)"
            .to_owned(),
        IceTransportPolicy::Relay => format!(
            "ICE gathered no candidate: ice-transport-policy=relay, and no TURN server gave a \
             relay address ({}): check that the TURN server runs and accepts the credentials \
             (an expired or forged credential is refused), or set ice-transport-policy=all",
            turn.join(", ")
        ),
        IceTransportPolicy::All if configured.is_empty() && gathering.is_empty() => {
            "ICE gathered no candidate: no usable network interface (libnice found no address \
             on any interface that is up); set ice-local-addresses (e.g. 127.0.0.1)"
                .to_owned()
        }
        IceTransportPolicy::All => format!(
            "ICE gathered no candidate from the local addresses {}: set ice-local-addresses to \
             addresses of this host's interfaces that are up (or leave it unset)",
            gathering.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(",")
        ),
    };
    if !refused.is_empty() {
        why.push_str(&format!("; ICE servers not used: {}", refused.join("; ")));
    }
    why
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

    #[test]
    fn turn_transport_is_kept() {
        assert_eq!(transport_of("transport=tcp"), Some(Ok("tcp")));
        assert_eq!(transport_of("x=1&transport=UDP"), Some(Ok("udp")));
        assert_eq!(transport_of("transport=sctp"), Some(Err("sctp".into())));
        assert_eq!(transport_of("x=1"), None);
    }

    #[test]
    fn turn_urls_reach_webrtcbin_with_their_transport() {
        gst::init().unwrap();
        let Ok(webrtcbin) = gst::ElementFactory::make("webrtcbin").build() else {
            panic!("webrtcbin is not installed (gst-plugins-bad)");
        };
        let uris = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let seen = uris.clone();
        // add-turn-server is a run-last action signal: this handler sees what webrtcbin is
        // given, before webrtcbin does.
        webrtcbin.connect("add-turn-server", false, move |values| {
            if let Some(uri) = values.get(1).and_then(|v| v.get::<String>().ok()) {
                seen.lock().unwrap().push(uri);
            }
            // No accumulator: the class handler, which runs after this one, has the last word.
            Some(false.to_value())
        });
        let server = IceServer {
            urls: Some(wilddog_protocol::Urls::Many(vec![
                "stun:127.0.0.1:3478".into(),
                "turn:127.0.0.1:3478?transport=tcp".into(),
                "turn:127.0.0.1:3478?transport=udp".into(),
                "turns:localhost:5349".into(),
            ])),
            username: Some("1700000000:bob".into()),
            credential: Some("c/d+e=".into()),
            ..Default::default()
        };
        let tls = crate::turn_tls::client_config(None).unwrap();
        let applied = apply_ice_servers(&webrtcbin, &[server], &tls);
        assert!(applied.refused.is_empty(), "{:?}", applied.refused);
        assert_eq!(applied.tunnels.len(), 1);
        let local = applied.tunnels[0].local_addr();
        let uris = uris.lock().unwrap().clone();
        assert_eq!(
            uris,
            vec![
                "turn://1700000000%3Abob:c%2Fd%2Be%3D@127.0.0.1:3478?transport=tcp".to_owned(),
                "turn://1700000000%3Abob:c%2Fd%2Be%3D@127.0.0.1:3478?transport=udp".to_owned(),
                format!("turn://1700000000%3Abob:c%2Fd%2Be%3D@{local}?transport=tcp"),
            ]
        );
        assert_eq!(
            webrtcbin.property::<Option<String>>("stun-server").as_deref(),
            Some("stun://127.0.0.1:3478")
        );
    }
}
