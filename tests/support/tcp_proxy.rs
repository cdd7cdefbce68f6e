//! A TCP proxy on 127.0.0.1 port 0 in front of a signaling server, which a test can cut
//! (every live connection reset, as a network blip does) or freeze (every live connection
//! stops forwarding without closing: a half-open socket, as a dead Wi-Fi leaves). New
//! connections are forwarded normally. Shared by the test suites of several crates through
//! `#[path]`.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// One proxied connection: the client's socket and the server's.
struct Link {
    client: TcpStream,
    upstream: TcpStream,
    /// Set: bytes read are dropped, nothing is written, nothing is closed.
    frozen: Arc<AtomicBool>,
}

/// The proxy; it stops accepting when dropped (live connections are reset).
pub struct TcpProxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    links: Arc<Mutex<Vec<Link>>>,
    stopped: Arc<AtomicBool>,
}

impl TcpProxy {
    /// Forwards 127.0.0.1:port-0 to `upstream`.
    pub fn start(upstream: SocketAddr) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("the proxy binds");
        let addr = listener.local_addr().expect("the proxy's address");
        let links: Arc<Mutex<Vec<Link>>> = Arc::default();
        let stopped = Arc::new(AtomicBool::new(false));
        let (links2, stopped2) = (links.clone(), stopped.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stopped2.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(upstream) = TcpStream::connect(upstream) else { continue };
                let _ = client.set_nodelay(true);
                let _ = upstream.set_nodelay(true);
                let frozen = Arc::new(AtomicBool::new(false));
                for (from, to) in [(&client, &upstream), (&upstream, &client)] {
                    let (Ok(from), Ok(to)) = (from.try_clone(), to.try_clone()) else { continue };
                    let frozen = frozen.clone();
                    std::thread::spawn(move || pump(from, to, &frozen));
                }
                let mut links = links2.lock().unwrap_or_else(|e| e.into_inner());
                links.push(Link { client, upstream, frozen });
            }
        });
        TcpProxy { addr, links, stopped }
    }

    /// `ws://ADDR/ws` through the proxy.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Resets every live connection (both sides get a TCP reset); later ones go through.
    pub fn cut(&self) -> usize {
        let links = std::mem::take(&mut *self.links.lock().unwrap_or_else(|e| e.into_inner()));
        let n = links.len();
        for link in links {
            for socket in [&link.client, &link.upstream] {
                // Linger 0: the close is a reset, not a FIN.
                let _ = socket2::SockRef::from(socket).set_linger(Some(std::time::Duration::ZERO));
                let _ = socket.shutdown(Shutdown::Both);
            }
        }
        n
    }

    /// Freezes every live connection: from now on its bytes go nowhere, in either direction,
    /// and it is never closed (both ends see a socket that went silent). Later connections
    /// go through.
    pub fn freeze(&self) -> usize {
        let links = std::mem::take(&mut *self.links.lock().unwrap_or_else(|e| e.into_inner()));
        let n = links.len();
        for link in links {
            link.frozen.store(true, Ordering::SeqCst);
            // Kept open for the rest of the process: a half-open socket is never closed.
            std::mem::forget(link);
        }
        n
    }

    /// How many connections are forwarded now.
    pub fn live(&self) -> usize {
        self.links.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::SeqCst);
        self.cut();
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, frozen: &AtomicBool) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if frozen.load(Ordering::SeqCst) {
            continue;
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    if !frozen.load(Ordering::SeqCst) {
        let _ = to.shutdown(Shutdown::Write);
    }
}
