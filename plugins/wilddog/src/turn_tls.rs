//! TURN over TLS (`turns:`) for libnice, which has none: libnice 0.1.21 connects a `turns:`
//! server with plain TCP. So for each `turns:HOST:PORT` server a peer connection is given,
//! a local tunnel listens on 127.0.0.1 (a free port), and webrtcbin gets
//! `turn://USER:PASS@127.0.0.1:LOCAL?transport=tcp` instead. Each TCP connection libnice
//! makes to the tunnel is carried over its own TLS connection to HOST:PORT, the server's
//! certificate verified against HOST (rustls; the system's roots plus the web's public roots
//! and the `turn-ca-file` the element was given).
//!
//! The tunnel first checks that it can reach the server (a TLS handshake, certificate
//! verified): when it cannot, it stops listening, so that libnice's connection is refused at
//! once and gathering ends without waiting for TCP timeouts; [`Tunnel::failure`] says why.
//! The tunnel lives as long as its [`Tunnel`] handle (the peer connection's): dropping it
//! stops listening and closes every carried connection.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;

/// How long connecting and the TLS handshake to the TURN server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a tunnel could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    /// The CA file could not be read or holds no certificate.
    #[error("turn-ca-file {path}: {reason}")]
    CaFile {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The TLS client could not be made.
    #[error("TLS: {0}")]
    Tls(String),
    /// The server's name is not a valid TLS name.
    #[error("`{0}` is not a host name TLS can verify")]
    BadName(String),
    /// The local listener could not be opened.
    #[error("cannot listen on 127.0.0.1: {0}")]
    Listen(io::Error),
}

/// The TLS client configuration of every tunnel of an element: roots from the system, the
/// web's public roots, and the PEM file `ca_file` when given.
pub fn client_config(ca_file: Option<&str>) -> Result<Arc<rustls::ClientConfig>, TunnelError> {
    // The system's roots are read once per process (a few hundred files).
    static SYSTEM_ROOTS: std::sync::OnceLock<rustls::RootCertStore> = std::sync::OnceLock::new();
    let mut roots = SYSTEM_ROOTS
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            roots
        })
        .clone();
    let mut pinned = Vec::new();
    if let Some(path) = ca_file {
        let ca_error = |reason: String| TunnelError::CaFile { path: path.to_owned(), reason };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| ca_error(e.to_string()))?
            .collect::<Result<_, _>>()
            .map_err(|e| ca_error(e.to_string()))?;
        if certs.is_empty() {
            return Err(ca_error("no certificate in it".into()));
        }
        for cert in &certs {
            roots.add(cert.clone()).map_err(|e| ca_error(e.to_string()))?;
        }
        pinned = certs;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| TunnelError::Tls(e.to_string()))?;
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TunnelError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedOrWebPki { webpki, pinned }))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Verifies a TURN server's certificate as a browser does (chain to a root, valid for the
/// name), and besides trusts a certificate that `turn-ca-file` holds itself. The latter is
/// the usual self-signed test certificate (`openssl req -x509` marks it `CA:TRUE`), which
/// WebPKI refuses as a server's own certificate (`CaUsedAsEndEntity`) although the user named
/// exactly that certificate. The handshake's signatures are checked against it all the same.
#[derive(Debug)]
struct PinnedOrWebPki {
    webpki: Arc<WebPkiServerVerifier>,
    pinned: Vec<CertificateDer<'static>>,
}

impl ServerCertVerifier for PinnedOrWebPki {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(_) if self.pinned.iter().any(|p| p.as_ref() == end_entity.as_ref()) => {
                Ok(ServerCertVerified::assertion())
            }
            verdict => verdict,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// A running tunnel; dropping it stops it.
#[derive(Debug)]
pub struct Tunnel {
    local: SocketAddr,
    stop: CancellationToken,
    failure: Arc<Mutex<Option<String>>>,
}

impl Tunnel {
    /// Starts a tunnel to `host:port` on the plugin's runtime; returns once it listens.
    pub fn start(
        host: &str,
        port: u16,
        tls: Arc<rustls::ClientConfig>,
    ) -> Result<Tunnel, TunnelError> {
        let name = ServerName::try_from(host.trim_start_matches('[').trim_end_matches(']'))
            .map_err(|_| TunnelError::BadName(host.to_owned()))?
            .to_owned();
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(TunnelError::Listen)?;
        let local = listener.local_addr().map_err(TunnelError::Listen)?;
        let stop = CancellationToken::new();
        let target = format!("{}:{port}", host);
        let task_stop = stop.clone();
        let failure = Arc::new(Mutex::new(None));
        let task_failure = failure.clone();
        let runtime = crate::runtime();
        let _guard = runtime.enter();
        let listener = TcpListener::from_std(listener).map_err(TunnelError::Listen)?;
        runtime.spawn(async move {
            let connector = TlsConnector::from(tls);
            let probe = tokio::select! {
                _ = task_stop.cancelled() => return,
                p = connect(&target, name.clone(), &connector) => p,
            };
            if let Err(e) = probe {
                let why = format!("turns:{target}: {e}");
                gst::warning!(gst::CAT_DEFAULT, "TURN over TLS: {why}");
                *task_failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
                // Dropping the listener refuses libnice's connection at once.
                return;
            }
            loop {
                let accepted = tokio::select! {
                    _ = task_stop.cancelled() => return,
                    a = listener.accept() => a,
                };
                let Ok((local_conn, _)) = accepted else { continue };
                let connector = connector.clone();
                let name = name.clone();
                let target = target.clone();
                let stop = task_stop.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        r = carry(local_conn, &target, name, connector) => {
                            if let Err(e) = r {
                                gst::warning!(
                                    gst::CAT_DEFAULT,
                                    "TURN over TLS to {target}: {e}"
                                );
                            }
                        }
                    }
                });
            }
        });
        Ok(Tunnel { local, stop, failure })
    }

    /// Why the tunnel could not reach its server, once it knows.
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The local address libnice connects to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Carries one libnice connection over TLS to the TURN server.
async fn carry(
    mut local: TcpStream,
    target: &str,
    name: ServerName<'static>,
    connector: TlsConnector,
) -> io::Result<()> {
    let _ = local.set_nodelay(true);
    let mut remote = connect(target, name, &connector).await?;
    tokio::io::copy_bidirectional(&mut local, &mut remote).await?;
    Ok(())
}

/// A TLS connection to the TURN server, its certificate verified against `name`.
async fn connect(
    target: &str,
    name: ServerName<'static>,
    connector: &TlsConnector,
) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    tokio::time::timeout(CONNECT_TIMEOUT, async {
        let tcp = TcpStream::connect(target).await?;
        let _ = tcp.set_nodelay(true);
        connector.connect(name, tcp).await
    })
    .await
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect/handshake timed out"))?
}

/// Splits `turns:HOST:PORT[?…]` (or `turns://…`) into host and port (5349 by default).
pub fn host_port(url_rest: &str) -> Option<(String, u16)> {
    let rest = url_rest.trim_start_matches("//");
    let rest = rest.split('?').next().unwrap_or(rest);
    let rest = rest.rsplit_once('@').map(|(_, r)| r).unwrap_or(rest);
    if let Some(v6) = rest.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None => 5349,
        };
        return Some((format!("[{host}]"), port));
    }
    match rest.rsplit_once(':') {
        Some((host, port)) => Some((host.to_owned(), port.parse().ok()?)),
        None if !rest.is_empty() => Some((rest.to_owned(), 5349)),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TLS server on loopback with `cert`; the client handshake's result.
    fn handshake(cert: &rcgen::CertifiedKey<rcgen::KeyPair>, ca_file: &str) -> io::Result<()> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = rustls::pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der())
            .map_err(io::Error::other)?;
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(io::Error::other)?
            .with_no_client_auth()
            .with_single_cert(vec![cert.cert.der().clone()], key)
            .map_err(io::Error::other)?;
        let client = client_config(Some(ca_file)).map_err(io::Error::other)?;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        runtime.block_on(async {
            let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
            let target = listener.local_addr()?.to_string();
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
            let accept = tokio::spawn(async move {
                let (tcp, _) = listener.accept().await?;
                acceptor.accept(tcp).await.map(drop)
            });
            let name = ServerName::try_from("localhost").map_err(io::Error::other)?;
            let connected = connect(&target, name, &TlsConnector::from(client)).await.map(drop);
            let _ = accept.await;
            connected
        })
    }

    fn self_signed(
        is_ca: bool,
        tag: &str,
    ) -> (rcgen::CertifiedKey<rcgen::KeyPair>, std::path::PathBuf) {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        if is_ca {
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        }
        let signing_key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&signing_key).unwrap();
        let path = std::env::temp_dir()
            .join(format!("wilddog-turn-tls-{tag}-{}-{is_ca}.pem", std::process::id()));
        std::fs::write(&path, cert.pem()).unwrap();
        (rcgen::CertifiedKey { cert, signing_key }, path)
    }

    /// `openssl req -x509` makes a CA:TRUE self-signed certificate: named in turn-ca-file,
    /// it is trusted as the server's own (WebPKI alone refused it: CaUsedAsEndEntity).
    #[test]
    fn a_self_signed_certificate_in_the_ca_file_is_trusted_ca_or_not() {
        for is_ca in [true, false] {
            let (cert, path) = self_signed(is_ca, "trusted");
            let result = handshake(&cert, &path.display().to_string());
            let _ = std::fs::remove_file(&path);
            assert!(result.is_ok(), "is_ca {is_ca}: {result:?}");
        }
    }

    /// Another certificate in the CA file does not make an unknown server trusted.
    #[test]
    fn an_unknown_self_signed_server_is_refused() {
        let (server_cert, server_path) = self_signed(true, "server");
        let (_, other_path) = self_signed(false, "other");
        let result = handshake(&server_cert, &other_path.display().to_string());
        let _ = std::fs::remove_file(&server_path);
        let _ = std::fs::remove_file(&other_path);
        let error = result.expect_err("an unknown server was trusted");
        assert!(error.to_string().contains("certificate"), "{error}");
    }

    #[test]
    fn parses_turns_urls() {
        assert_eq!(host_port("turn.example.com:443"), Some(("turn.example.com".into(), 443)));
        assert_eq!(host_port("//t.example?transport=tcp"), Some(("t.example".into(), 5349)));
        assert_eq!(host_port("[::1]:5349"), Some(("[::1]".into(), 5349)));
        assert_eq!(host_port(""), None);
        assert_eq!(host_port("h:notaport"), None);
    }
}
