//! The client and the call state machine against the real server: a `call` whose user data
//! is over the server's frame limit ends at once with the server's `too_large` refusal, and
//! the connection stays up. Without the client's check, a frame over 4 times the limit made
//! the server close the socket (1009), the client reconnected, and the call ended in TIMEOUT
//! 30 s later.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use wilddog_call::{CallConfig, CloseReason, Endpoint, Event, Input, Output};
use wilddog_client::{Client, ClientConfig, ClientEvent, ServerFrame};
use wilddog_protocol::{Body, DEFAULT_MAX_FRAME_BYTES, ErrorCode};
use wilddog_server::{DEV_APP_ID, ServerConfig, mint_token};

/// Far under the call timeout (30 s): the refusal must come at once.
const AT_ONCE: Duration = Duration::from_secs(2);

struct Server {
    addr: SocketAddr,
    config: ServerConfig,
    _stop: oneshot::Sender<()>,
}

async fn start(max_frame_bytes: usize) -> Server {
    let mut config = ServerConfig::development();
    config.limits.max_frame_bytes = max_frame_bytes;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(wilddog_server::run(listener, config.clone(), async move {
        let _ = stopped.await;
    }));
    Server { addr, config, _stop: stop }
}

async fn login(server: &Server, uid: &str) -> (Client, mpsc::UnboundedReceiver<ClientEvent>) {
    let token =
        mint_token(&server.config, DEV_APP_ID, uid, Duration::from_secs(600)).expect("a token");
    let config = ClientConfig::new(format!("ws://{}/ws", server.addr), DEV_APP_ID, token);
    let (client, mut events, _) = Client::connect(config).await.expect("connects");
    let first = events.recv().await;
    assert!(matches!(first, Some(ClientEvent::Connected { .. })), "{first:?}");
    (client, events)
}

/// A caller: its state machine, wired to its client.
struct Caller {
    endpoint: Endpoint,
    client: Client,
    events: mpsc::UnboundedReceiver<ClientEvent>,
}

impl Caller {
    fn new(client: Client, events: mpsc::UnboundedReceiver<ClientEvent>) -> Caller {
        let mut endpoint = Endpoint::new(CallConfig::default());
        endpoint.handle_input(Instant::now(), Input::Connected { ice_servers: Vec::new() });
        let mut caller = Caller { endpoint, client, events };
        caller.drain();
        caller
    }

    /// Sends what the state machine sends; returns its events.
    fn drain(&mut self) -> Vec<Event> {
        let mut events = Vec::new();
        while let Some(output) = self.endpoint.poll_output() {
            match output {
                Output::Send(frame) => self.client.send(frame).expect("client open"),
                Output::Event(event) => events.push(event),
                Output::Media(_) => {}
            }
        }
        events
    }

    fn call(&mut self, cid: &str, to: &str, data: String) {
        let call = Input::Call { cid: cid.into(), remote_uid: to.into(), data: Some(data) };
        self.endpoint.handle_input(Instant::now(), call);
        self.drain();
    }

    /// Feeds the client's events to the state machine until the call ends; fails on a lost
    /// connection, or after [`AT_ONCE`].
    async fn until_closed(&mut self) -> CloseReason {
        let deadline = tokio::time::Instant::now() + AT_ONCE;
        loop {
            let event = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .expect("the call ended at once");
            let input = match event {
                Some(ClientEvent::Frame(frame)) => Input::Frame(frame),
                other => panic!("the connection must stay up: {other:?}"),
            };
            self.endpoint.handle_input(Instant::now(), input);
            for event in self.drain() {
                match event {
                    Event::Closed { reason } => return reason,
                    Event::Response(r) => panic!("a response, not a refusal: {r}"),
                    _ => {}
                }
            }
        }
    }
}

/// Expects `cid`'s `call` at the callee.
async fn rung(events: &mut mpsc::UnboundedReceiver<ClientEvent>, cid: &str) {
    let event = tokio::time::timeout(Duration::from_secs(5), events.recv()).await.expect("rung");
    match event {
        Some(ClientEvent::Frame(ServerFrame::Conversation {
            cid: got,
            body: Body::Call(_),
            ..
        })) => {
            assert_eq!(got, cid)
        }
        other => panic!("expected the call {cid}, got {other:?}"),
    }
}

#[tokio::test]
async fn a_call_over_the_servers_frame_limit_ends_at_once_and_the_connection_stays() {
    for (max_frame_bytes, data_len, case) in [
        // Over the default server's hard limit (1 MiB): it closed the socket with 1009.
        (DEFAULT_MAX_FRAME_BYTES, 2 * 1024 * 1024, "2 MiB, default limit"),
        // Over 4 times a lower configured limit (64 KiB): closed with 1009 too; the client
        // knows the limit from the connack.
        (64 * 1024, 300_000, "300 kB, limit 64 KiB"),
        // Over the limit, under 4 times it: the server refused it (`too_large`); now the
        // client does, without sending it.
        (DEFAULT_MAX_FRAME_BYTES, 300_000, "300 kB, default limit"),
    ] {
        let server = start(max_frame_bytes).await;
        let (client, events) = login(&server, "alice").await;
        let (_bob, mut bob_events) = login(&server, "bob").await;
        let mut alice = Caller::new(client, events);

        let started = Instant::now();
        alice.call("big", "bob", "x".repeat(data_len));
        let reason = alice.until_closed().await;
        let CloseReason::Refused { code, reason } = reason else {
            panic!("{case}: expected refused, got {reason:?}");
        };
        assert_eq!(code, ErrorCode::TooLarge, "{case}: {reason}");
        assert!(reason.contains("over the limit"), "{case}: {reason}");
        assert!(started.elapsed() < AT_ONCE, "{case}: took {:?}", started.elapsed());

        // The same connection places the next call; the callee was never rung by the first.
        alice.call("small", "bob", "hello".into());
        rung(&mut bob_events, "small").await;
        assert!(alice.events.try_recv().is_err(), "{case}: nothing else happened");
    }
}
