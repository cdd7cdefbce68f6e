//! Calls through a real TURN server: coturn with a shared secret (`use-auth-secret`), our
//! server minting per-connection credentials from the same secret (`[turn]`), two endpoints
//! with `ice-transport-policy=relay`. Over UDP, TCP and TLS (the paths to the TURN server
//! that are not wanted are dropped with nftables, so that only the one tested can work), a
//! policy `all` endpoint whose direct UDP is blocked, and credentials coturn refuses.
//! Each test runs in a private network namespace: coturn, the server and both pipelines on
//! 127.0.0.1 only.

mod common;

#[path = "../../../tests/support/coturn.rs"]
mod coturn;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Endpoint, EndpointConfig, Seen, TestServer};
use coturn::Coturn;
use gst::prelude::*;

const T: Duration = Duration::from_secs(20);
const SECRET: &str = "coturn-test-secret";

/// Our server's config: the development app, TURN at `urls` with `secret`.
fn server_config(urls: &[String], secret: &str) -> wilddog_server::ServerConfig {
    let urls = urls.iter().map(|u| format!("\"{u}\"")).collect::<Vec<_>>().join(", ");
    wilddog_server::ServerConfig::from_toml_str(&format!(
        "[[apps]]\nid = \"{}\"\nsecret = \"{}\"\n[turn]\nurls = [{urls}]\nsecret = \"{secret}\"\n",
        wilddog_server::DEV_APP_ID,
        wilddog_server::DEV_APP_SECRET,
    ))
    .expect("test config")
}

/// [`server_config`] for one URL, with credentials that live `ttl_secs`.
fn short_lived_config(url: &str, ttl_secs: u64) -> wilddog_server::ServerConfig {
    wilddog_server::ServerConfig::from_toml_str(&format!(
        "[[apps]]\nid = \"{}\"\nsecret = \"{}\"\n[turn]\nurls = [\"{url}\"]\nsecret = \"{SECRET}\"\n\
         ttl_secs = {ttl_secs}\n",
        wilddog_server::DEV_APP_ID,
        wilddog_server::DEV_APP_SECRET,
    ))
    .expect("test config")
}

/// Runs `nft` with `args`, panicking with its output when it fails (nftables missing:
/// `apt-get install nftables`).
fn nft(script: &str) {
    let out = Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().map(|mut i| i.write_all(script.as_bytes()));
            child.wait_with_output()
        })
        .unwrap_or_else(|e| panic!("cannot run nft (apt-get install nftables): {e}"));
    assert!(
        out.status.success(),
        "nft refused {script:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A table that drops what `rules` match on the way in (one rule per line).
fn drop_rules(rules: &[String]) {
    let mut script = String::from(
        "table inet wilddogtest {\n chain input {\n  type filter hook input priority 0;\n",
    );
    for r in rules {
        script.push_str(&format!("  {r} drop\n"));
    }
    script.push_str(" }\n}\n");
    nft(&script);
}

/// What `e` saw but media: its events, for a failure's message.
fn events(e: &mut Endpoint) -> Vec<Seen> {
    e.drain();
    let media =
        |s: &Seen| matches!(s, Seen::VideoFrame { .. } | Seen::AudioBuffer | Seen::Stats(_));
    e.log.iter().filter(|s| !media(s)).cloned().collect()
}

/// Two relay-only endpoints call each other and decode video; their stats say `relay`.
fn relayed_call(server: &TestServer, extra: &[(&str, &str)], coturn: &Coturn) {
    relayed_call_after(server, extra, coturn, Duration::ZERO);
}

/// [`relayed_call`], the caller connected to the server (PAUSED: signaling only) for
/// `connected_for` before it calls (PLAYING).
fn relayed_call_after(
    server: &TestServer,
    extra: &[(&str, &str)],
    coturn: &Coturn,
    connected_for: Duration,
) {
    let mut bob_cfg = EndpointConfig::new("bob").prop("dimension", "240p");
    let mut alice_cfg = EndpointConfig::new("alice").calling("bob").prop("dimension", "240p");
    for (k, v) in [("ice-transport-policy", "relay")].iter().chain(extra) {
        bob_cfg = bob_cfg.prop(k, v);
        alice_cfg = alice_cfg.prop(k, v);
    }
    let mut bob = Endpoint::new(server, bob_cfg);
    let mut alice = Endpoint::new(server, alice_cfg);
    bob.play();
    if !connected_for.is_zero() {
        alice.pipeline.set_state(gst::State::Paused).unwrap();
        std::thread::sleep(connected_for);
    }
    std::thread::sleep(Duration::from_millis(300));
    alice.play();
    alice.wait_for("ACCEPTED", T, |s| *s == Seen::Response("ACCEPTED".into()));
    let relayed = |s: &Seen| matches!(s, Seen::VideoFrame { width: 320, height: 240 });
    let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        alice.wait_for("relayed video", T, relayed);
        bob.wait_for("relayed video", T, relayed);
    }));
    if let Err(e) = ok {
        eprintln!("coturn log:\n{}", coturn.log());
        std::panic::resume_unwind(e);
    }
    for who in [&mut alice, &mut bob] {
        let stats = who.wait_for("stats", Duration::from_secs(6), |s| matches!(s, Seen::Stats(_)));
        let Seen::Stats(text) = stats else { unreachable!() };
        println!("{} stats: {text}", who.call.name());
        // The structure's text escapes its nested structures: count the values.
        assert!(
            text.matches("relay").count() == 2 && !text.contains("host") && !text.contains("srflx"),
            "both candidates relayed: {text}"
        );
    }
    assert_eq!(alice.call.state(), "connected");
}

#[test]
fn relay_only_call_over_turn_udp() {
    if !common::enter_netns("relay_only_call_over_turn_udp") {
        return;
    }
    let coturn = Coturn::start(SECRET, None);
    // Only UDP reaches the TURN server.
    drop_rules(&[format!("tcp dport {}", coturn.port)]);
    let url = format!("turn:127.0.0.1:{}?transport=udp", coturn.port);
    let server = TestServer::start_config("127.0.0.1:0", server_config(&[url], SECRET));
    relayed_call(&server, &[], &coturn);
}

/// Credentials live 2 s here; the caller calls 4 s after its `connack`, whose credential has
/// expired by then. The server adds one minted for the caller to the `accept` it forwards
/// (our extension), and the call goes through the relay. Before, the caller's allocation was
/// refused and the call failed with 41004: a caller connected for a day failed so on every
/// relayed call.
#[test]
fn a_caller_connected_longer_than_the_credential_lives_is_relayed() {
    if !common::enter_netns("a_caller_connected_longer_than_the_credential_lives_is_relayed") {
        return;
    }
    let coturn = Coturn::start(SECRET, None);
    let url = format!("turn:127.0.0.1:{}?transport=udp", coturn.port);
    let server = TestServer::start_config("127.0.0.1:0", short_lived_config(&url, 2));
    relayed_call_after(&server, &[], &coturn, Duration::from_secs(4));
}

/// Credentials live 4 s here. A relay-only call connects; 5 s after the accept, when every
/// credential minted for the call's setup (`connack`, `call`, `accept`) has expired, its
/// path is black-holed. Each side's ICE restart (a new peer connection) gathers with the
/// credential the server last pushed (`turn`, every 2 s), and the media comes back through
/// the relay. Before, the restart gathered with the setup's credential, which coturn refuses
/// once expired: no media came back (the newcomer's run: "gathered no candidate" every 4 s,
/// then 41004).
#[test]
fn a_relayed_call_comes_back_from_a_path_loss_after_its_credential_expired() {
    if !common::enter_netns(
        "a_relayed_call_comes_back_from_a_path_loss_after_its_credential_expired",
    ) {
        return;
    }
    let coturn = Coturn::start(SECRET, None);
    let url = format!("turn:127.0.0.1:{}?transport=udp", coturn.port);
    let server = TestServer::start_config("127.0.0.1:0", short_lived_config(&url, 4));
    let relay_only = |cfg: EndpointConfig<'static>| {
        cfg.prop("ice-transport-policy", "relay").prop("dimension", "120p")
    };
    let mut bob = Endpoint::new(&server, relay_only(EndpointConfig::new("bob")));
    let mut alice = Endpoint::new(&server, relay_only(EndpointConfig::new("alice").calling("bob")));
    bob.play();
    std::thread::sleep(Duration::from_millis(300));
    alice.play();
    alice.wait_for("ACCEPTED", T, |s| *s == Seen::Response("ACCEPTED".into()));
    let accepted_at = Instant::now();
    let video = |s: &Seen| matches!(s, Seen::VideoFrame { .. });
    alice.wait_for("relayed video", T, video);
    bob.wait_for("relayed video", T, video);
    let until = |at: Instant| std::thread::sleep(at.saturating_duration_since(Instant::now()));
    until(accepted_at + Duration::from_secs(4));
    let before = (alice.frames(), bob.frames());
    until(accepted_at + Duration::from_secs(5));
    // The allocations outlive the credentials they were made with (coturn checks a REST
    // credential when a session first authenticates, not on its refreshes).
    assert!(
        alice.frames() > before.0 && bob.frames() > before.1,
        "media flows until the black hole"
    );

    // The peers' sockets and coturn's relays of this call: a new path (new sockets, new
    // allocations) gets through, through coturn's own port.
    let ports = common::bound_udp_ports(&[coturn.port, server.addr().port()]);
    let set = ports.iter().map(u16::to_string).collect::<Vec<_>>().join(", ");
    drop_rules(&[format!("udp dport {{ {set} }}"), format!("udp sport {{ {set} }}")]);
    let holed_at = Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    let stalled = (alice.frames(), bob.frames());
    std::thread::sleep(Duration::from_millis(1000));
    assert!(
        alice.frames() <= stalled.0 + 2 && bob.frames() <= stalled.1 + 2,
        "the black hole stops the media"
    );
    let back = |e: &Endpoint, at: u64| e.frames() > at + 10;
    while !(back(&alice, stalled.0) && back(&bob, stalled.1)) {
        if holed_at.elapsed() > Duration::from_secs(12) {
            eprintln!("coturn log:\n{}", coturn.log());
            let (a, b) = (events(&mut alice), events(&mut bob));
            panic!("no media within 12 s of the black hole; alice {a:?}\nbob {b:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("media back through the relay {:?} after the black hole", holed_at.elapsed());
    let failed = |s: &Seen| matches!(s, Seen::WilddogError(_) | Seen::Closed(_));
    assert!(
        !alice.saw(failed) && !bob.saw(failed),
        "{:?}\n{:?}",
        events(&mut alice),
        events(&mut bob)
    );
    assert_eq!(alice.call.state(), "connected");
}

#[test]
fn relay_only_call_over_turn_tcp() {
    if !common::enter_netns("relay_only_call_over_turn_tcp") {
        return;
    }
    let coturn = Coturn::start(SECRET, None);
    // UDP to the TURN server is dropped: the allocation must go over TCP.
    drop_rules(&[format!("udp dport {}", coturn.port)]);
    let url = format!("turn:127.0.0.1:{}?transport=tcp", coturn.port);
    let server = TestServer::start_config("127.0.0.1:0", server_config(&[url], SECRET));
    relayed_call(&server, &[], &coturn);
}

#[test]
fn relay_only_call_over_turn_tls() {
    if !common::enter_netns("relay_only_call_over_turn_tls") {
        return;
    }
    // A self-signed certificate for `localhost`, trusted through turn-ca-file.
    let dir = std::env::temp_dir().join(format!("wilddog-turn-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let coturn = Coturn::start(SECRET, Some((&cert_path, &key_path)));
    let tls_port = coturn.tls_port.unwrap();
    // Plain TURN (UDP and TCP) is dropped: only TLS reaches the server.
    drop_rules(&[format!("udp dport {}", coturn.port), format!("tcp dport {}", coturn.port)]);
    let url = format!("turns:localhost:{tls_port}");
    let server = TestServer::start_config("127.0.0.1:0", server_config(&[url], SECRET));
    let ca = cert_path.display().to_string();
    relayed_call(&server, &[("turn-ca-file", &ca)], &coturn);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Without the CA, the TLS tunnel refuses the server's self-signed certificate: a relay-only
/// call cannot connect and ends with 41004 (not after the 30 s connect timeout).
#[test]
fn turn_tls_certificate_is_verified() {
    if !common::enter_netns("turn_tls_certificate_is_verified") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("wilddog-turn-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let coturn = Coturn::start(SECRET, Some((&cert_path, &key_path)));
    let url = format!("turns:localhost:{}", coturn.tls_port.unwrap());
    let server = TestServer::start_config("127.0.0.1:0", server_config(&[url], SECRET));
    expect_connect_failure(&server, &[]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Both endpoints relay-only; the call fails with 41004 well before the connect timeout.
fn expect_connect_failure(server: &TestServer, extra: &[(&str, &str)]) {
    let mut bob_cfg = EndpointConfig::new("bob").prop("ice-transport-policy", "relay");
    let mut alice_cfg =
        EndpointConfig::new("alice").calling("bob").prop("ice-transport-policy", "relay");
    for (k, v) in extra {
        bob_cfg = bob_cfg.prop(k, v);
        alice_cfg = alice_cfg.prop(k, v);
    }
    let mut bob = Endpoint::new(server, bob_cfg);
    let mut alice = Endpoint::new(server, alice_cfg);
    bob.play();
    // Bob online before Alice calls: a call to a uid not connected yet ends at once.
    bob.wait_for("bob connected", T, |s| *s == Seen::Signaling(true));
    let began = Instant::now();
    alice.play();
    alice.wait_for("ACCEPTED", T, |s| *s == Seen::Response("ACCEPTED".into()));
    alice.wait_for("41004", T, |s| *s == Seen::WilddogError(41004));
    let took = began.elapsed();
    println!("relay-only call with a refused TURN server failed after {took:?}");
    assert!(took < Duration::from_secs(15), "not the 30 s connect timeout: {took:?}");
    assert!(!alice.saw(|s| matches!(s, Seen::VideoFrame { .. })));
}

#[test]
fn forged_turn_credential_fails_with_41004() {
    if !common::enter_netns("forged_turn_credential_fails_with_41004") {
        return;
    }
    let coturn = Coturn::start(SECRET, None);
    // Our server mints with another secret: coturn refuses every credential.
    let url = format!("turn:127.0.0.1:{}", coturn.port);
    let server = TestServer::start_config("127.0.0.1:0", server_config(&[url], "not-the-secret"));
    expect_connect_failure(&server, &[]);
}

#[test]
fn expired_turn_credential_fails_with_41004() {
    if !common::enter_netns("expired_turn_credential_fails_with_41004") {
        return;
    }
    let coturn = Coturn::start(SECRET, None);
    // A credential made with the right secret but expired in 1970, as a fixed entry.
    let expired = wilddog_server::rest_credential(SECRET, "anyone", 1);
    let config = wilddog_server::ServerConfig::from_toml_str(&format!(
        "builtin_stun = false\n[[apps]]\nid = \"{}\"\nsecret = \"{}\"\n[[ice_servers]]\n\
         urls = \"turn:127.0.0.1:{}\"\nusername = \"{}\"\ncredential = \"{}\"\n",
        wilddog_server::DEV_APP_ID,
        wilddog_server::DEV_APP_SECRET,
        coturn.port,
        expired.username,
        expired.credential,
    ))
    .unwrap();
    let server = TestServer::start_config("127.0.0.1:0", config);
    expect_connect_failure(&server, &[]);
}

/// Direct UDP between the peers is blocked; only the TURN server's own ports pass. An
/// endpoint with the default policy (`all`) still connects, through the relay.
#[test]
fn policy_all_falls_back_to_the_relay_when_udp_is_blocked() {
    if !common::enter_netns("policy_all_falls_back_to_the_relay_when_udp_is_blocked") {
        return;
    }
    let coturn = Coturn::start(SECRET, None);
    let url = format!("turn:127.0.0.1:{}", coturn.port);
    let server = TestServer::start_config("127.0.0.1:0", server_config(&[url], SECRET));
    let signaling: u16 =
        server.url.rsplit(':').next().unwrap().trim_end_matches("/ws").parse().unwrap();
    // Only the signaling server and coturn (its port and relay ports) are reachable: no
    // direct path between the peers, neither UDP nor ICE-TCP.
    let relay_low = coturn::relay_low(coturn.port);
    let relay = format!("{relay_low}-{}", relay_low + 200);
    nft(&format!(
        "table inet wilddogtest {{\n chain input {{\n  type filter hook input priority 0;\n\
           udp dport {{ {p}, {relay} }} accept\n  udp sport {{ {p}, {relay} }} accept\n\
           tcp dport {{ {p}, {signaling} }} accept\n  tcp sport {{ {p}, {signaling} }} accept\n\
           meta l4proto {{ udp, tcp }} drop\n }}\n}}\n",
        p = coturn.port
    ));
    let mut bob = Endpoint::new(&server, EndpointConfig::new("bob").prop("dimension", "240p"));
    let mut alice = Endpoint::new(
        &server,
        EndpointConfig::new("alice").calling("bob").prop("dimension", "240p"),
    );
    bob.play();
    std::thread::sleep(Duration::from_millis(300));
    alice.play();
    alice.wait_for("ACCEPTED", T, |s| *s == Seen::Response("ACCEPTED".into()));
    let video = |s: &Seen| matches!(s, Seen::VideoFrame { width: 320, height: 240 });
    alice.wait_for("video through the relay", Duration::from_secs(30), video);
    bob.wait_for("video through the relay", Duration::from_secs(30), video);
    let stats = alice.wait_for("stats", Duration::from_secs(6), |s| matches!(s, Seen::Stats(_)));
    let Seen::Stats(text) = stats else { unreachable!() };
    println!("alice stats: {text}");
    assert!(text.contains("relay"), "the relay carries it: {text}");
}

/// A `wss://` signaling server with a self-signed certificate (`CA:TRUE`, as `openssl req
/// -x509` makes it): refused with the system's and the web's roots alone, reached once
/// `server-ca-file` names that certificate, and a call goes through it.
#[test]
fn wss_signaling_with_a_self_signed_certificate_named_in_server_ca_file() {
    if !common::enter_netns("wss_signaling_with_a_self_signed_certificate_named_in_server_ca_file")
    {
        return;
    }
    common::init();
    let dir = std::env::temp_dir().join(format!("wilddog-wss-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let mut config = wilddog_server::ServerConfig::development();
    config.tls = Some(wilddog_server::config::TlsConfig { cert: cert_path.clone(), key: key_path });
    let server = TestServer::start_config("127.0.0.1:0", config);
    let wss = server.url.replace("ws://", "wss://");
    let ca = cert_path.display().to_string();

    // Without it: an error that says why, no connection.
    let mut stranger = Endpoint::new(&server, EndpointConfig::new("carol").prop("server", &wss));
    stranger.play();
    let seen = stranger.wait_for("carol's error", T, |s| matches!(s, Seen::ElementError { .. }));
    let Seen::ElementError { message, .. } = seen else { unreachable!() };
    assert!(message.contains("certificate"), "{message}");
    assert!(!stranger.log.contains(&Seen::Signaling(true)), "{:?}", stranger.log);
    drop(stranger);

    let mut bob = Endpoint::new(
        &server,
        EndpointConfig::new("bob").prop("server", &wss).prop("server-ca-file", &ca),
    );
    bob.play();
    bob.wait_for("bob connected", T, |s| *s == Seen::Signaling(true));
    let mut alice = Endpoint::new(
        &server,
        EndpointConfig::new("alice")
            .calling("bob")
            .prop("server", &wss)
            .prop("server-ca-file", &ca),
    );
    alice.play();
    alice.wait_for("accepted", T, |s| *s == Seen::Response("ACCEPTED".into()));
    alice.wait_for("bob's video", T, |s| matches!(s, Seen::VideoFrame { .. }));
    drop(alice);
    drop(bob);
    let _ = std::fs::remove_dir_all(&dir);
}
