//! DTLS with a WebRTC stack that offers only ECDHE-ECDSA cipher suites: aiortc (PyPI, pure
//! Python over OpenSSL), whose DTLS cipher list is exactly the four ECDHE-ECDSA suites (the
//! script checks it). With GStreamer's default RSA certificate its handshake with webrtcbin
//! fails (`no shared cipher`); with ours (ECDSA P-256) it completes, our endpoint as DTLS
//! client (aiortc offers `actpass`, we answer `active`) and as DTLS server (we offer, aiortc
//! answers `active`). aiortc is installed into a virtualenv under the target directory by
//! the test itself (python3-venv; PyPI), before it enters its network namespace.
//!
//! Media goes both ways, decoded at 320x240 on each side. When aiortc calls, our callee's live
//! sources run before the call, so its sending chains follow aiortc's payload types (VP8 97,
//! Opus 96) instead of its own (tests/offer_payload_types.rs).

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{Endpoint, EndpointConfig, Seen, TestServer};
use serde_json::Value;

const T: Duration = Duration::from_secs(30);
/// Pinned: the cipher list above is aiortc 1.16's.
const AIORTC: &str = "aiortc==1.16.0";
const WEBSOCKETS: &str = "websockets==17.4";

fn venv() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("aiortc-venv")
}

/// Makes the virtualenv with aiortc unless it is there (outside the namespace: PyPI).
fn ensure_aiortc() {
    // One maker at a time, across processes too (cargo nextest runs each test in its own):
    // the lock is released when the file closes.
    let lock_path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("aiortc-venv.lock");
    let lock = std::fs::File::create(&lock_path).expect("the virtualenv's lock file");
    lock.lock().expect("the virtualenv's lock");
    let python = venv().join("bin/python");
    let ready = Command::new(&python)
        .args(["-c", "import aiortc, websockets; assert aiortc.__version__ == '1.16.0'"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ready {
        return;
    }
    let made = Command::new("python3").args(["-m", "venv"]).arg(venv()).status();
    assert!(
        made.is_ok_and(|s| s.success()),
        "cannot make a Python virtualenv (apt-get install python3-venv, or scripts/install-deps.sh)"
    );
    let pip = Command::new(venv().join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check", AIORTC, WEBSOCKETS])
        .status();
    assert!(pip.is_ok_and(|s| s.success()), "pip install {AIORTC} {WEBSOCKETS} failed");
}

/// The aiortc endpoint: its JSON events.
struct Aiortc {
    child: std::process::Child,
    events: mpsc::Receiver<Value>,
    seen: Vec<Value>,
}

impl Aiortc {
    fn start(server: &TestServer, uid: &str, call: Option<&str>) -> Aiortc {
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop/aiortc_peer.py");
        let mut cmd = Command::new(venv().join("bin/python"));
        cmd.arg(script)
            .args(["--server", &server.url, "--app-id", wilddog_server::DEV_APP_ID])
            .args(["--token", &server.token(uid)])
            .stdout(Stdio::piped());
        if let Some(remote) = call {
            cmd.args(["--call", remote]);
        }
        let mut child = cmd.spawn().expect("aiortc peer starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                println!("[aiortc] {line}");
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    let _ = tx.send(v);
                }
            }
        });
        Aiortc { child, events, seen: Vec::new() }
    }

    fn wait(&mut self, name: &str) -> Value {
        loop {
            match self.events.recv_timeout(T) {
                Ok(v) => {
                    self.seen.push(v.clone());
                    if v["event"] == name {
                        return v;
                    }
                }
                Err(_) => panic!("aiortc: no `{name}` within {T:?}; saw {:?}", self.seen),
            }
        }
    }
}

impl Drop for Aiortc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The handshake chose an ECDHE-ECDSA suite with aiortc in `aiortc_role`; we decode
/// aiortc's video, and aiortc decodes ours.
fn check_call(ours: &mut Endpoint, peer: &mut Aiortc, aiortc_role: &str) {
    let connected = peer.wait("connected");
    println!("aiortc DTLS: {connected}");
    assert_eq!(connected["role"], aiortc_role, "{connected}");
    let cipher = connected["cipher"].as_str().unwrap_or_default();
    assert!(cipher.starts_with("ECDHE-ECDSA-"), "{connected}");
    let frames = peer.wait("frames");
    assert_eq!((frames["width"].as_u64(), frames["height"].as_u64()), (Some(320), Some(240)));
    ours.wait_for("aiortc's video", T, |s| {
        matches!(s, Seen::VideoFrame { width: 320, height: 240 })
    });
}

#[test]
fn ecdsa_only_peer_calls_us_we_are_dtls_client() {
    if std::env::var_os("WILDDOG_IN_NETNS").is_none() {
        ensure_aiortc();
    }
    if !common::enter_netns("ecdsa_only_peer_calls_us_we_are_dtls_client") {
        return;
    }
    let server = TestServer::start();
    // Bob's live sources run before the call: his chains have sent their caps (VP8 96,
    // Opus 111) to webrtcbin when aiortc's offer (VP8 97, Opus 96) comes, and they follow it.
    let mut bob = Endpoint::new(&server, EndpointConfig::new("bob").prop("dimension", "240p"));
    bob.play();
    std::thread::sleep(Duration::from_millis(300));
    let mut peer = Aiortc::start(&server, "alice", Some("bob"));
    bob.wait_for("called", T, |s| matches!(s, Seen::Called { .. }));
    check_call(&mut bob, &mut peer, "server");
}

#[test]
fn we_call_an_ecdsa_only_peer_we_are_dtls_server() {
    if std::env::var_os("WILDDOG_IN_NETNS").is_none() {
        ensure_aiortc();
    }
    if !common::enter_netns("we_call_an_ecdsa_only_peer_we_are_dtls_server") {
        return;
    }
    let server = TestServer::start();
    let mut peer = Aiortc::start(&server, "bob", None);
    peer.wait("ready");
    let mut alice = Endpoint::new(
        &server,
        EndpointConfig::new("alice").calling("bob").prop("dimension", "240p"),
    );
    alice.play();
    alice.wait_for("ACCEPTED", T, |s| *s == Seen::Response("ACCEPTED".into()));
    check_call(&mut alice, &mut peer, "client");
}
