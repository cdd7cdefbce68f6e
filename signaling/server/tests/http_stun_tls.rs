//! HTTP routes, the built-in STUN server, TLS.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Client, TestServer, assert_server_sockets_nodelay, http_get};
use serde_json::Value;
use stun_codec::rfc5389::Attribute;
use stun_codec::rfc5389::attributes::XorMappedAddress;
use stun_codec::rfc5389::methods::BINDING;
use stun_codec::{Message, MessageClass, MessageDecoder, MessageEncoder, TransactionId};
use wilddog_server::{DEV_APP_ID, ServerConfig};

#[tokio::test]
async fn healthz_metrics_and_static_files() {
    let server = TestServer::dev().await;
    let (status, _, body) = server.http_get("/healthz").await;
    assert_eq!((status, body.trim()), (200, "ok"));

    let _alice = server.login("alice").await;
    assert_server_sockets_nodelay(server.addr.port()).await;
    let mut anon = server.open().await;
    anon.connect_code(DEV_APP_ID, "bad").await;
    let (status, head, body) = server.http_get("/metrics").await;
    assert_eq!(status, 200);
    assert!(head.to_lowercase().contains("content-type: application/openmetrics-text"), "{head}");
    for line in [
        "wilddog_connections 2",
        "wilddog_authenticated_connections 1",
        "wilddog_conversations 0",
        "wilddog_auth_failures_total 1",
    ] {
        assert!(body.lines().any(|l| l == line), "{line} missing in\n{body}");
    }
    assert!(body.contains("wilddog_frames_relayed_total"));
    assert!(body.contains("wilddog_frames_refused_total"));

    for (path, file, ctype) in [
        ("/sdk/wilddog-video.js", "wilddog-video.js", "application/javascript"),
        ("/sdk/wilddog-video.mjs", "wilddog-video.mjs", "application/javascript"),
        ("/sdk/wilddog-video.d.ts", "wilddog-video.d.ts", "application/typescript"),
        ("/", "index.html", "text/html"),
    ] {
        let (status, head, body) = server.http_get(path).await;
        assert_eq!(status, 200, "{path}");
        let head = head.to_lowercase();
        assert!(head.contains(&format!("content-type: {ctype}")), "{path}: {head}");
        // The SDK loads from pages of any origin (module scripts need CORS); the page does
        // not need it.
        assert_eq!(
            head.contains("access-control-allow-origin: *"),
            path.starts_with("/sdk/"),
            "{path}: {head}"
        );
        let on_disk =
            std::fs::read_to_string(format!("{}/../../web/{file}", env!("CARGO_MANIFEST_DIR")))
                .unwrap();
        // Embedded at build time; cargo rebuilds when the file changes.
        assert_eq!(body, on_disk, "{path}");
    }
    assert_eq!(server.http_get("/nope").await.0, 404);
    assert_eq!(server.http_get("/ws").await.0 / 100, 4, "plain GET /ws is no upgrade");
}

#[tokio::test]
async fn dev_token_on_loopback_for_the_dev_app_only() {
    let server = TestServer::dev().await;
    let (status, head, body) = server.http_get("/dev/token?uid=alice").await;
    assert_eq!(status, 200, "{head}{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["appId"], DEV_APP_ID);
    assert_eq!(v["uid"], "alice");
    assert_eq!(v["server"], format!("ws://{}/ws", server.addr));
    let mut c = Client::open(v["server"].as_str().unwrap()).await;
    c.connect(DEV_APP_ID, v["token"].as_str().unwrap()).await;
    assert_eq!(server.http_get("/dev/token").await.0, 400);

    let configured = TestServer::start(
        ServerConfig::from_toml_str("[[apps]]\nid = 'wilddog-dev'\nsecret = 'private'").unwrap(),
    )
    .await;
    assert_eq!(configured.http_get("/dev/token?uid=alice").await.0, 404);
}

#[tokio::test]
async fn builtin_stun_answers_binding_requests_on_the_server_port() {
    let server = TestServer::dev().await;
    let mut c = server.open().await;
    let connack = c.connect(DEV_APP_ID, &server.token("a")).await;
    let url = format!("stun:127.0.0.1:{}", server.addr.port());
    assert_eq!(connack.ice_servers[0].url.as_deref(), Some(url.as_str()));
    assert_eq!(connack.ice_servers[0].all_urls(), vec![url]);

    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let request =
        Message::<Attribute>::new(MessageClass::Request, BINDING, TransactionId::new([9; 12]));
    let bytes =
        bytecodec::EncodeExt::encode_into_bytes(&mut MessageEncoder::new(), request).unwrap();
    udp.send_to(&bytes, server.addr).await.unwrap();
    let mut buf = [0u8; 1500];
    let (n, from) = tokio::time::timeout(Duration::from_secs(5), udp.recv_from(&mut buf))
        .await
        .expect("a STUN answer")
        .unwrap();
    assert_eq!(from, server.addr);
    let reply =
        bytecodec::DecodeExt::decode_from_bytes(&mut MessageDecoder::<Attribute>::new(), &buf[..n])
            .unwrap()
            .unwrap();
    assert_eq!(reply.class(), MessageClass::SuccessResponse);
    assert_eq!(reply.transaction_id(), TransactionId::new([9; 12]));
    assert_eq!(
        reply.get_attribute::<XorMappedAddress>().unwrap().address(),
        udp.local_addr().unwrap()
    );
}

#[tokio::test]
async fn tls_serves_wss() {
    let dir = std::env::temp_dir().join(format!("wilddog-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), cert.signing_key.serialize_pem()).unwrap();
    std::fs::write(
        dir.join("server.toml"),
        "[[apps]]\nid = 'a'\nsecret = 's'\n[tls]\ncert = 'cert.pem'\nkey = 'key.pem'\n",
    )
    .unwrap();
    let config = ServerConfig::from_file(&dir.join("server.toml")).unwrap();
    let server = TestServer::start(config.clone()).await;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let client_config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let tls = connector
        .connect(rustls::pki_types::ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("TLS handshake");
    let url = format!("wss://localhost:{}/ws", server.addr.port());
    let (ws, _) = tokio_tungstenite::client_async(url, tls).await.expect("wss upgrade");
    let mut ws = ws;
    use futures_util::{SinkExt, StreamExt};
    let token = wilddog_server::mint_token(&config, "a", "alice", Duration::from_secs(60)).unwrap();
    ws.send(tokio_tungstenite::tungstenite::Message::text(
        serde_json::json!({"type": "connect", "msg": {"token": token, "appId": "a"}}).to_string(),
    ))
    .await
    .unwrap();
    let reply =
        tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap().unwrap().unwrap();
    let v: Value = serde_json::from_str(reply.to_text().unwrap()).unwrap();
    assert_eq!(v["type"], "connack");
    assert_eq!(v["msg"]["code"], 0);
    assert_server_sockets_nodelay(server.addr.port()).await;
    // Plain HTTP on the TLS port gets nothing useful.
    let (status, _, _) =
        tokio::time::timeout(Duration::from_secs(5), http_get(server.addr, "/healthz"))
            .await
            .unwrap_or((0, String::new(), String::new()));
    assert_ne!(status, 200);
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn bad_tls_files_are_a_clear_error() {
    let mut config = ServerConfig::development();
    config.tls = Some(wilddog_server::TlsConfig {
        cert: "/nonexistent/cert.pem".into(),
        key: "/nonexistent/key.pem".into(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = wilddog_server::run(listener, config, async {}).await.unwrap_err().to_string();
    assert!(err.contains("TLS") && err.contains("/nonexistent/cert.pem"), "{err}");
}
