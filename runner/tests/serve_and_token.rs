//! The real `wilddog-runner serve` with tokens from the real `wilddog-runner token`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const RUNNER: &str = env!("CARGO_BIN_EXE_wilddog-runner");
const WAIT: Duration = Duration::from_secs(10);

struct Serve {
    child: Child,
    addr: String,
}

impl Serve {
    /// Starts `serve` on port 0 and reads the address it logs.
    fn start(config: Option<&Path>) -> Self {
        let mut cmd = Command::new(RUNNER);
        cmd.args(["serve", "--listen", "127.0.0.1:0"]).env("RUST_LOG", "info");
        if let Some(config) = config {
            cmd.arg("--config").arg(config);
        }
        let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("serve: {line}");
                if !sent && let Some(rest) = line.split("listening on http://").nth(1) {
                    let addr = rest.split_whitespace().next().unwrap_or_default().to_owned();
                    let _ = tx.send(addr);
                    sent = true;
                }
            }
        });
        let addr = rx.recv_timeout(WAIT).expect("serve logs where it listens");
        Serve { child, addr }
    }

    fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// SIGINT, as Ctrl-C does.
    fn interrupt(&self) {
        let status =
            Command::new("kill").args(["-INT", &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
    }

    fn wait(mut self) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(std::time::Instant::now() < deadline, "serve did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `wilddog-runner token` and returns stdout, checking it is the token alone.
fn token(config: Option<&Path>, app_id: Option<&str>, uid: &str, ttl: Option<u64>) -> String {
    let mut cmd = Command::new(RUNNER);
    cmd.args(["token", "--uid", uid]);
    if let Some(config) = config {
        cmd.arg("--config").arg(config);
    }
    if let Some(app_id) = app_id {
        cmd.args(["--app-id", app_id]);
    }
    if let Some(ttl) = ttl {
        cmd.args(["--ttl", &ttl.to_string()]);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "token failed: {}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let token = stdout.strip_suffix('\n').expect("one line");
    assert!(!token.contains('\n') && token.split('.').count() == 3, "a JWT alone: {stdout:?}");
    token.to_owned()
}

fn write_config(name: &str, secret: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("wilddog-runner-test-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("server.toml");
    std::fs::write(&path, format!("[[apps]]\nid = \"acme\"\nsecret = \"{secret}\"\n")).unwrap();
    path
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn recv(ws: &mut Ws) -> Value {
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await.expect("a frame in time") {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(&t).unwrap(),
            Some(Ok(Message::Ping(_))) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).await.unwrap();
}

/// Opens a socket and sends `connect`; returns the socket and the connack code.
async fn connect(url: &str, app_id: &str, token: &str) -> (Ws, i64) {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    send(&mut ws, json!({"type": "connect", "msg": {"token": token, "appId": app_id}})).await;
    let connack = recv(&mut ws).await;
    assert_eq!(connack["type"], "connack");
    let code = connack["msg"]["code"].as_i64().unwrap();
    if code == 0 {
        let ice = connack["msg"]["iceServers"].as_array().unwrap();
        assert!(!ice.is_empty() && ice[0]["url"].is_string() && ice[0]["urls"].is_string());
    }
    (ws, code)
}

#[tokio::test]
async fn a_call_with_tokens_from_the_token_command() {
    let config = write_config("call", "acme-secret-for-tests");
    let serve = Serve::start(Some(&config));
    let alice_token = token(Some(&config), Some("acme"), "alice", None);
    // Without --app-id: the config's only app.
    let bob_token = token(Some(&config), None, "bob", Some(600));
    let (mut alice, code) = connect(&serve.url(), "acme", &alice_token).await;
    assert_eq!(code, 0);
    let (mut bob, code) = connect(&serve.url(), "acme", &bob_token).await;
    assert_eq!(code, 0);

    send(&mut alice, json!({"type": "call", "cid": "c1", "to": "bob", "msg": {"data": "hi"}}))
        .await;
    let call = recv(&mut bob).await;
    assert_eq!((call["type"].as_str(), call["from"].as_str()), (Some("call"), Some("alice")));
    assert!(call["msg"]["turnCredential"].is_object());
    send(&mut bob, json!({"type": "accept", "cid": "c1", "to": "alice", "msg": {}})).await;
    assert_eq!(recv(&mut alice).await["type"], "accept");
    send(&mut alice, json!({"type": "offer", "cid": "c1", "to": "bob", "msg": {"sdp": "o"}})).await;
    let offer = recv(&mut bob).await;
    assert_eq!((offer["type"].as_str(), offer["msg"]["sdp"].as_str()), (Some("offer"), Some("o")));
    send(&mut bob, json!({"type": "answer", "cid": "c1", "to": "alice", "msg": {"sdp": "a"}}))
        .await;
    assert_eq!(recv(&mut alice).await["msg"]["sdp"], "a");
    send(&mut bob, json!({"type": "candidate", "cid": "c1", "to": "alice", "msg": {"sdpMLineIndex": 0, "sdpMid": "0", "sdp": "candidate:1"}})).await;
    assert_eq!(recv(&mut alice).await["msg"]["sdp"], "candidate:1");
    send(&mut alice, json!({"type": "bye", "cid": "c1", "to": "bob", "msg": {}})).await;
    let bye = recv(&mut bob).await;
    assert_eq!((bye["type"].as_str(), bye["cid"].as_str()), (Some("bye"), Some("c1")));

    // Ctrl-C: close frames, then a clean exit.
    serve.interrupt();
    for ws in [&mut alice, &mut bob] {
        match tokio::time::timeout(WAIT, ws.next()).await.unwrap() {
            Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1001),
            other => panic!("expected close 1001, got {other:?}"),
        }
    }
    assert!(serve.wait().success());
    std::fs::remove_dir_all(config.parent().unwrap()).ok();
}

#[tokio::test]
async fn expired_and_foreign_tokens_are_refused() {
    let config = write_config("refuse", "the-real-secret");
    let other = write_config("refuse-other", "some-other-secret");
    let serve = Serve::start(Some(&config));
    let foreign = token(Some(&other), Some("acme"), "alice", None);
    assert_eq!(connect(&serve.url(), "acme", &foreign).await.1, 1, "signed with another secret");
    let dev = token(None, None, "alice", None);
    assert_eq!(connect(&serve.url(), "wilddog-dev", &dev).await.1, 1, "app not configured");
    let short = token(Some(&config), Some("acme"), "alice", Some(0));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(connect(&serve.url(), "acme", &short).await.1, 2, "expired");

    let out = Command::new(RUNNER)
        .args(["token", "--app-id", "nope", "--uid", "x", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("app `nope` is not configured"));
    std::fs::remove_dir_all(config.parent().unwrap()).ok();
    std::fs::remove_dir_all(other.parent().unwrap()).ok();
}

#[tokio::test]
async fn without_config_serve_runs_the_development_app() {
    let serve = Serve::start(None);
    let t = token(None, None, "dev-user", None);
    let (_ws, code) = connect(&serve.url(), "wilddog-dev", &t).await;
    assert_eq!(code, 0);
    let out =
        Command::new(RUNNER).args(["serve", "--config", "/nonexistent.toml"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent.toml"));
}
