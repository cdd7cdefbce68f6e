//! The signaling side of a call: one task on the plugin's tokio runtime per element, owning
//! the WebSocket client and the conversation state machine. It feeds the machine what the
//! client and the element report, and hands every output to a [`Driver`] (the element),
//! which sends frames, raises events and drives webrtcbin.

use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;
use wilddog_call::{CallConfig, Endpoint, Event, Input, MediaAction, Output};
use wilddog_client::{Client, ClientConfig, ClientError, ClientEvent, ClientFrame, ServerFrame};

/// What the element tells its session task.
#[derive(Debug)]
pub enum Command {
    /// Feed this to the state machine.
    Input(Input),
    /// Place a call to `remote_uid` with `data` (a fresh conversation id is made here).
    Call {
        /// The callee.
        remote_uid: String,
        /// User data for the callee.
        data: Option<String>,
    },
    /// Hang up (bye) and close the connection; the task ends.
    Shutdown,
}

/// What a session needs to connect.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Client settings (server, app id, token).
    pub client: ClientConfig,
    /// Timers.
    pub call: CallConfig,
}

/// How the session task reaches the element. Called on the runtime's thread.
pub trait Driver: Send + Sync + 'static {
    /// Whether the element still exists.
    fn alive(&self) -> bool;
    /// The connection could not be made, or the server refused it for good.
    fn connect_failed(&self, error: &ClientError);
    /// Connected (`connack`), or lost the connection (`false`, with why).
    fn signaling_state(&self, connected: bool, detail: &str);
    /// A state machine event.
    fn event(&self, event: Event, endpoint: &Endpoint);
    /// A media action.
    fn media(&self, action: MediaAction);
    /// Time for stats (every 2 s while the call has media).
    fn stats(&self);
    /// A frame of a conversation came in (for the debug log).
    fn received(&self, _frame: &ServerFrame) {}
    /// A frame goes out (for the debug log).
    fn sent(&self, _frame: &ClientFrame) {}
}

/// Period of `wilddog-stats`, as the original's `local_stats`/`remote_stats`.
pub const STATS_INTERVAL: Duration = Duration::from_secs(2);

/// Runs a session until [`Command::Shutdown`], the element going away, or a fatal client
/// error. `done` is dropped when the task ends (the element waits on it when stopping).
///
/// A call and an accept wait until `ready` resolves (the element: its process's DTLS key,
/// `crate::dtls_prewarm_done`), and the commands after them with them, in order: before,
/// the negotiation they start would block in webrtcbin until then, with the call already
/// ACCEPTED. The connection is made at once, so that the endpoint is reachable.
pub async fn run<D: Driver>(
    config: SessionConfig,
    driver: D,
    mut commands: mpsc::UnboundedReceiver<Command>,
    done: std::sync::mpsc::Sender<()>,
    ready: impl std::future::Future<Output = ()>,
) {
    let _done = done;
    // Commands that come while connecting (the call, on PLAYING) wait for `connack`, and a
    // call or an accept for `ready` too.
    let mut waiting = Waiting::default();
    tokio::pin!(ready);
    let connect = Client::connect(config.client.clone());
    tokio::pin!(connect);
    let connected = loop {
        tokio::select! {
            c = &mut connect => break c,
            _ = &mut ready, if !waiting.key_made => waiting.key_made = true,
            command = commands.recv() => match command {
                // Stopping while connecting ends at once.
                None | Some(Command::Shutdown) => return,
                Some(c) => waiting.commands.push_back(c),
            },
        }
    };
    let (client, mut events, _ice) = match connected {
        Ok(c) => c,
        Err(e) => {
            driver.connect_failed(&e);
            return;
        }
    };
    let mut endpoint = Endpoint::new(config.call);
    let mut stats_at: Option<tokio::time::Instant> = None;
    loop {
        // Drain outputs first.
        while let Some(output) = endpoint.poll_output() {
            if !driver.alive() {
                client.close().await;
                return;
            }
            let d = &driver;
            match output {
                Output::Send(frame) => {
                    d.sent(&frame);
                    let _ = client.send(frame);
                }
                Output::Event(event) => d.event(event, &endpoint),
                Output::Media(action) => d.media(action),
            }
        }
        if endpoint.state().has_media() {
            if stats_at.is_none() {
                stats_at = Some(tokio::time::Instant::now() + STATS_INTERVAL);
            }
        } else {
            stats_at = None;
        }
        let deadline = endpoint.poll_timeout();
        let sleep_until = deadline.map(tokio::time::Instant::from_std);
        tokio::select! {
            event = events.recv() => {
                let now = Instant::now();
                match event {
                    Some(ClientEvent::Connected { ice_servers }) => {
                        endpoint.handle_input(now, Input::Connected { ice_servers });
                        waiting.connected = true;
                        waiting.apply_due(&mut endpoint);
                        driver.signaling_state(true, "connected");
                    }
                    Some(ClientEvent::Frame(frame)) => {
                        driver.received(&frame);
                        endpoint.handle_input(now, Input::Frame(frame));
                    }
                    Some(ClientEvent::Disconnected { reason, will_retry }) => {
                        endpoint.handle_input(now, Input::Disconnected);
                        driver.signaling_state(false, &format!("{reason} (reconnecting: {will_retry})"));
                    }
                    Some(ClientEvent::Error(e)) => {
                        endpoint.handle_input(now, Input::Disconnected);
                        driver.connect_failed(&e);
                    }
                    None => {
                        // The client gave up; the media (if any) goes on until the element stops.
                        driver.signaling_state(false, "signaling connection ended");
                        wait_shutdown(&mut commands).await;
                        return;
                    }
                }
            }
            command = commands.recv() => {
                match command {
                    None | Some(Command::Shutdown) => {
                        endpoint.handle_input(Instant::now(), Input::Close);
                        while let Some(output) = endpoint.poll_output() {
                            match output {
                                Output::Send(frame) => {
                                    driver.sent(&frame);
                                    let _ = client.send(frame);
                                }
                                Output::Media(action) => {
                                    driver.media(action);
                                }
                                Output::Event(_) => {}
                            }
                        }
                        let _ = tokio::time::timeout(Duration::from_secs(2), client.close()).await;
                        return;
                    }
                    Some(c) => {
                        waiting.commands.push_back(c);
                        waiting.apply_due(&mut endpoint);
                    }
                }
            }
            _ = &mut ready, if !waiting.key_made => {
                waiting.key_made = true;
                waiting.apply_due(&mut endpoint);
            }
            _ = sleep_opt(sleep_until) => {
                endpoint.handle_timeout(Instant::now());
            }
            _ = sleep_opt(stats_at) => {
                stats_at = Some(tokio::time::Instant::now() + STATS_INTERVAL);
                driver.stats();
            }
        }
    }
}

/// Commands not yet given to the state machine, in order.
#[derive(Default)]
struct Waiting {
    commands: std::collections::VecDeque<Command>,
    /// `connack` came (once; the machine takes commands through reconnections after).
    connected: bool,
    /// The process's DTLS key is made (`ready` resolved).
    key_made: bool,
}

impl Waiting {
    /// Gives the machine every command that may go now, in order: none before `connack`,
    /// and none from the first call or accept on while the key is being made.
    fn apply_due(&mut self, endpoint: &mut Endpoint) {
        while self.connected {
            let negotiates = matches!(
                self.commands.front(),
                Some(Command::Call { .. } | Command::Input(Input::Accept))
            );
            if negotiates && !self.key_made {
                return;
            }
            let Some(command) = self.commands.pop_front() else { return };
            apply(endpoint, command);
        }
    }
}

fn apply(endpoint: &mut Endpoint, command: Command) {
    let now = Instant::now();
    match command {
        Command::Input(input) => endpoint.handle_input(now, input),
        Command::Call { remote_uid, data } => {
            let cid = wilddog_call::new_conversation_id(SystemTime::now(), rand_u64());
            endpoint.handle_input(now, Input::Call { cid, remote_uid, data });
        }
        Command::Shutdown => {}
    }
}

async fn sleep_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Waits for Shutdown (or the element dropping its sender); `true` when it came.
async fn wait_shutdown(commands: &mut mpsc::UnboundedReceiver<Command>) -> bool {
    loop {
        match commands.recv().await {
            None | Some(Command::Shutdown) => return true,
            Some(_) => {}
        }
    }
}

fn rand_u64() -> u64 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0),
    );
    h.finish()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::{mpsc, oneshot};
    use wilddog_call::{CallConfig, Endpoint, Event, Input, MediaAction, Response};
    use wilddog_client::{ClientConfig, ClientError};

    use super::{Command, Driver, SessionConfig, run};

    /// Reports the state machine's calls and responses (all a test here looks at).
    struct Reporter(mpsc::UnboundedSender<Event>);

    impl Driver for Reporter {
        fn alive(&self) -> bool {
            true
        }
        fn connect_failed(&self, _error: &ClientError) {}
        fn signaling_state(&self, _connected: bool, _detail: &str) {}
        fn event(&self, event: Event, _endpoint: &Endpoint) {
            if matches!(event, Event::Called { .. } | Event::Response(_)) {
                let _ = self.0.send(event);
            }
        }
        fn media(&self, _action: MediaAction) {}
        fn stats(&self) {}
    }

    /// One endpoint's session: its commands, what it reports, and what lets it negotiate.
    struct TestSession {
        commands: mpsc::UnboundedSender<Command>,
        events: mpsc::UnboundedReceiver<Event>,
        make_key: Option<oneshot::Sender<()>>,
    }

    impl TestSession {
        /// `uid`'s session on `server` (`ws://…/ws`, the development app), its key not made.
        fn start(server: &str, config: &wilddog_server::ServerConfig, uid: &str) -> Self {
            let token = wilddog_server::mint_token(
                config,
                wilddog_server::config::DEV_APP_ID,
                uid,
                Duration::from_secs(600),
            )
            .unwrap();
            let client = ClientConfig {
                server: server.to_owned(),
                app_id: wilddog_server::config::DEV_APP_ID.to_owned(),
                token,
                ..ClientConfig::default()
            };
            let (make_key, key_made) = oneshot::channel::<()>();
            let (commands, commands_rx) = mpsc::unbounded_channel();
            let (events_tx, events) = mpsc::unbounded_channel();
            let (done, _) = std::sync::mpsc::channel();
            let ready = async move {
                let _ = key_made.await;
            };
            let config = SessionConfig { client, call: CallConfig::default() };
            tokio::spawn(run(config, Reporter(events_tx), commands_rx, done, ready));
            TestSession { commands, events, make_key: Some(make_key) }
        }

        fn make_key(&mut self) {
            if let Some(tx) = self.make_key.take() {
                let _ = tx.send(());
            }
        }

        /// What it reports within `within`, if anything.
        async fn next_event(&mut self, within: Duration) -> Option<Event> {
            tokio::time::timeout(within, self.events.recv()).await.ok().flatten()
        }
    }

    /// Runs `test` with the development server on a free loopback port.
    fn with_server<F: std::future::Future<Output = ()>>(
        test: impl FnOnce(String, wilddog_server::ServerConfig) -> F,
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("ws://{}/ws", listener.local_addr().unwrap());
            let config = wilddog_server::ServerConfig::development();
            tokio::spawn(wilddog_server::run(listener, config.clone(), std::future::pending()));
            test(url, config).await;
        });
    }

    /// A caller whose process's DTLS key is not made yet is connected (reachable) but does
    /// not call before it is: the callee is rung once the key exists.
    #[test]
    fn a_call_waits_for_the_key() {
        with_server(|url, config| async move {
            let mut bob = TestSession::start(&url, &config, "bob");
            bob.make_key();
            let mut alice = TestSession::start(&url, &config, "alice");
            tokio::time::sleep(Duration::from_millis(300)).await;
            let call = Command::Call { remote_uid: "bob".into(), data: None };
            alice.commands.send(call).unwrap();
            assert!(bob.next_event(Duration::from_millis(700)).await.is_none(), "rung early");
            alice.make_key();
            let called = bob.next_event(Duration::from_secs(5)).await;
            assert!(matches!(called, Some(Event::Called { .. })), "{called:?}");
        });
    }

    /// A callee whose key is not made yet is rung, but its accept goes out only once the key
    /// exists: the caller is not told ACCEPTED by an endpoint that cannot answer yet.
    #[test]
    fn an_accept_waits_for_the_key() {
        with_server(|url, config| async move {
            let mut bob = TestSession::start(&url, &config, "bob");
            let mut alice = TestSession::start(&url, &config, "alice");
            alice.make_key();
            tokio::time::sleep(Duration::from_millis(300)).await;
            let call = Command::Call { remote_uid: "bob".into(), data: None };
            alice.commands.send(call).unwrap();
            let called = bob.next_event(Duration::from_secs(5)).await;
            assert!(matches!(called, Some(Event::Called { .. })), "{called:?}");
            bob.commands.send(Command::Input(Input::Accept)).unwrap();
            assert!(alice.next_event(Duration::from_millis(700)).await.is_none(), "early answer");
            bob.make_key();
            let response = alice.next_event(Duration::from_secs(5)).await;
            assert!(matches!(response, Some(Event::Response(Response::Accepted))), "{response:?}");
        });
    }
}
