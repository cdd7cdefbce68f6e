//! A real TURN server for tests: coturn (Debian `coturn`) on 127.0.0.1, with a shared secret
//! (`use-auth-secret`), started on free ports and stopped when dropped. Run it inside the
//! test's private network namespace (`enter_netns`): it relays between loopback peers only.

#![allow(dead_code)]

use std::net::{Ipv4Addr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running coturn.
pub struct Coturn {
    /// UDP and TCP listening port.
    pub port: u16,
    /// TLS listening port, when started with a certificate.
    pub tls_port: Option<u16>,
    /// The shared secret.
    pub secret: String,
    /// Its directory (log, pid file).
    pub dir: PathBuf,
    child: Child,
}

/// A free port on 127.0.0.1 for both TCP and UDP (a race with other processes is harmless
/// inside a private namespace).
pub fn free_port() -> u16 {
    loop {
        let tcp = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
        let port = tcp.local_addr().expect("local addr").port();
        if UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return port;
        }
    }
}

/// The first of the 200 relay ports of a coturn listening on `port`: below the kernel's
/// ephemeral range (32768 and up), so that no peer's own socket can take one.
pub fn relay_low(port: u16) -> u16 {
    10000 + (port % 20000)
}

impl Coturn {
    /// Starts coturn with `secret`; with `tls` (certificate and key PEM files) it also
    /// listens for TLS. Panics saying why when it cannot (coturn not installed: `apt-get
    /// install coturn`, or scripts/install-deps.sh).
    pub fn start(secret: &str, tls: Option<(&std::path::Path, &std::path::Path)>) -> Coturn {
        let dir = std::env::temp_dir().join(format!(
            "wilddog-coturn-{}-{}",
            std::process::id(),
            Instant::now().elapsed().as_nanos()
        ));
        std::fs::create_dir_all(&dir).expect("coturn dir");
        let port = free_port();
        let relay_low = relay_low(port);
        let mut cmd = Command::new("turnserver");
        cmd.args(["-n", "--listening-ip", "127.0.0.1", "--relay-ip", "127.0.0.1"])
            .args(["--listening-port", &port.to_string()])
            .args(["--min-port", &relay_low.to_string()])
            .args(["--max-port", &(relay_low + 200).to_string()])
            .args(["--use-auth-secret", "--static-auth-secret", secret])
            .args(["--realm", "wilddog.test", "--fingerprint", "--no-cli"])
            .arg("--allow-loopback-peers")
            .args(["--no-dtls", "--simple-log"])
            .args(["--pidfile", &dir.join("turnserver.pid").display().to_string()])
            .args(["--log-file", &dir.join("turn.log").display().to_string()]);
        let tls_port = match tls {
            Some((cert, key)) => {
                let p = free_port();
                cmd.args(["--tls-listening-port", &p.to_string()])
                    .args(["--cert", &cert.display().to_string()])
                    .args(["--pkey", &key.display().to_string()]);
                Some(p)
            }
            None => {
                cmd.arg("--no-tls");
                None
            }
        };
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start turnserver (apt-get install coturn, or scripts/install-deps.sh): {e}"
            )
        });
        let coturn = Coturn { port, tls_port, secret: secret.to_owned(), dir, child };
        let deadline = Instant::now() + Duration::from_secs(10);
        for p in [Some(port), tls_port].into_iter().flatten() {
            while TcpStream::connect((Ipv4Addr::LOCALHOST, p)).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "turnserver does not listen on {p} after 10 s; its log: {}",
                    coturn.log()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        coturn
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        // coturn appends a date to the log file name.
        let mut out = String::new();
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with("turn") {
                    out.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
                }
            }
        }
        out
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
