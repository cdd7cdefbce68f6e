//! The signaling side of a call: one task on the plugin's tokio runtime per element, owning
//! the WebSocket client and the conversation state machine. It feeds the machine what the
//! client and the element report, and hands every output to a [`Driver`] (the element),
//! which sends frames, raises events and drives webrtcbin.

use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;
use wilddog_call::{CallConfig, CallState, Endpoint, Event, Input, MediaAction, Output};
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
/// ACCEPTED. The connection is made at once, so that the endpoint is reachable. What may
/// overtake them is in [`Waiting::push`]: a close, a reject, a busy answer.
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
    let mut endpoint = Endpoint::new(config.call);
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
                Some(c) => queue(&mut waiting, c, &mut endpoint, &driver),
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
                    Some(c) => queue(&mut waiting, c, &mut endpoint, &driver),
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
    commands: std::collections::VecDeque<Pending>,
    /// `connack` came (once; the machine takes commands through reconnections after).
    connected: bool,
    /// The process's DTLS key is made (`ready` resolved).
    key_made: bool,
}

/// A command not yet given to the state machine.
struct Pending {
    command: Command,
    /// For an accept: the conversation that was ringing when it came (an accept when
    /// nothing rings is dropped). Held, it goes to that call or to none: the caller may
    /// cancel and another call ring meanwhile, which nobody accepted.
    ringing: Option<String>,
}

impl Pending {
    /// A call or an accept: a command that starts a negotiation.
    fn negotiates(&self) -> bool {
        matches!(self.command, Command::Call { .. } | Command::Input(Input::Accept))
    }
}

impl Waiting {
    /// Queues `command` and gives the machine every command that may go now.
    ///
    /// A close never waits behind a held call or accept: it drops them (the callee is
    /// never rung, the caller gets its `bye` at once). A reject or a busy answer drops a
    /// held accept (the caller gets its answer, not ACCEPTED and then a hang-up), and so
    /// does a call of our own (which hangs the ringing call up when it goes out).
    ///
    /// Returns whether a call that had not gone out was dropped: for the application it
    /// ends as one cancelled while calling, in state idle.
    #[must_use]
    fn push(&mut self, command: Command, endpoint: &mut Endpoint) -> bool {
        let calls_before = self.calls();
        let is_accept = |p: &Pending| matches!(p.command, Command::Input(Input::Accept));
        match &command {
            Command::Input(Input::Close) => self.commands.retain(|p| !p.negotiates()),
            // A call of our own hangs the ringing call up when it goes out: not accepted
            // first.
            Command::Input(Input::Reject | Input::Busy) | Command::Call { .. } => {
                self.commands.retain(|p| !is_accept(p))
            }
            _ => {}
        }
        let ringing = match &command {
            Command::Input(Input::Accept) => {
                let ringing = (endpoint.state() == CallState::Ringing)
                    .then(|| endpoint.conversation_id().map(str::to_owned))
                    .flatten();
                if ringing.is_none() {
                    // Nothing rings (the caller hung up first): there is nothing to accept,
                    // now or when the key is made, whatever rings then.
                    return false;
                }
                ringing
            }
            _ => None,
        };
        let dropped_call = calls_before > self.calls();
        self.commands.push_back(Pending { command, ringing });
        self.apply_due(endpoint);
        dropped_call
    }

    /// How many calls wait.
    fn calls(&self) -> usize {
        self.commands.iter().filter(|p| matches!(p.command, Command::Call { .. })).count()
    }

    /// Gives the machine every command that may go now, in order: none before `connack`,
    /// and none from the first call or accept on while the key is being made. While a call
    /// waits, the endpoint answers incoming calls busy ([`Endpoint::set_reserved`]): it is
    /// about to call, and a call ringing it now would be hung up by its own.
    fn apply_due(&mut self, endpoint: &mut Endpoint) {
        while self.connected {
            let Some(front) = self.commands.front() else { break };
            if front.negotiates() && !self.key_made {
                break;
            }
            let Some(Pending { command, ringing }) = self.commands.pop_front() else { break };
            let stale = ringing.is_some_and(|cid| {
                endpoint.state() != CallState::Ringing
                    || endpoint.conversation_id() != Some(cid.as_str())
            });
            if !stale {
                apply(endpoint, command);
            }
        }
        endpoint.set_reserved(self.calls() > 0);
    }
}

/// [`Waiting::push`], telling the driver of a call dropped before it went out.
fn queue<D: Driver>(waiting: &mut Waiting, command: Command, endpoint: &mut Endpoint, driver: &D) {
    // Only from idle to idle: a close that also ended a ringing call says so itself.
    let was_idle = endpoint.state() == CallState::Idle;
    if waiting.push(command, endpoint) && was_idle && endpoint.state() == CallState::Idle {
        driver.event(Event::StateChanged(CallState::Idle), endpoint);
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
    use wilddog_call::{CallConfig, CallState, Endpoint, Event, Input, MediaAction, Response};
    use wilddog_client::{ClientConfig, ClientError};

    use super::{Command, Driver, SessionConfig, run};

    /// Reports `connack`s, and the state machine's calls, responses, hang-ups and returns to
    /// idle (all a test here looks at).
    struct Reporter {
        events: mpsc::UnboundedSender<Event>,
        connected: mpsc::UnboundedSender<()>,
    }

    impl Driver for Reporter {
        fn alive(&self) -> bool {
            true
        }
        fn connect_failed(&self, _error: &ClientError) {}
        fn signaling_state(&self, connected: bool, _detail: &str) {
            if connected {
                let _ = self.connected.send(());
            }
        }
        fn event(&self, event: Event, _endpoint: &Endpoint) {
            if matches!(
                event,
                Event::Called { .. }
                    | Event::Response(_)
                    | Event::Closed { .. }
                    | Event::StateChanged(CallState::Idle)
            ) {
                let _ = self.events.send(event);
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
        /// `uid`'s session on `server` (`ws://…/ws`, the development app), its key not made,
        /// once it is connected.
        async fn start(server: &str, config: &wilddog_server::ServerConfig, uid: &str) -> Self {
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
            let (connected_tx, mut connected) = mpsc::unbounded_channel();
            let (done, _) = std::sync::mpsc::channel();
            let ready = async move {
                let _ = key_made.await;
            };
            let config = SessionConfig { client, call: CallConfig::default() };
            let reporter = Reporter { events: events_tx, connected: connected_tx };
            tokio::spawn(run(config, reporter, commands_rx, done, ready));
            let connack = tokio::time::timeout(Duration::from_secs(10), connected.recv()).await;
            assert!(matches!(connack, Ok(Some(()))), "{uid} not connected: {connack:?}");
            TestSession { commands, events, make_key: Some(make_key) }
        }

        fn make_key(&mut self) {
            if let Some(tx) = self.make_key.take() {
                let _ = tx.send(());
            }
        }

        fn call(&self, remote_uid: &str) {
            self.commands
                .send(Command::Call { remote_uid: remote_uid.into(), data: None })
                .unwrap();
        }

        fn input(&self, input: Input) {
            self.commands.send(Command::Input(input)).unwrap();
        }

        /// What it reports within `within`, if anything.
        async fn next_event(&mut self, within: Duration) -> Option<Event> {
            tokio::time::timeout(within, self.events.recv()).await.ok().flatten()
        }

        /// What it reports next (within 5 s).
        async fn event(&mut self) -> Option<Event> {
            self.next_event(Duration::from_secs(5)).await
        }

        /// Its next report (within 5 s), which must be one `is` takes.
        async fn expect(&mut self, is: impl Fn(&Event) -> bool) {
            let event = self.event().await;
            assert!(event.as_ref().is_some_and(is), "{event:?}");
        }
    }

    /// bob, its key not made, rung by alice, hers made.
    async fn alice_rings_bob(
        url: &str,
        config: &wilddog_server::ServerConfig,
    ) -> (TestSession, TestSession) {
        let mut bob = TestSession::start(url, config, "bob").await;
        let mut alice = TestSession::start(url, config, "alice").await;
        alice.make_key();
        alice.call("bob");
        bob.expect(|e| matches!(e, Event::Called { .. })).await;
        (bob, alice)
    }

    /// How long a test waits for what must not happen.
    const QUIET: Duration = Duration::from_millis(700);

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
            let mut bob = TestSession::start(&url, &config, "bob").await;
            bob.make_key();
            let mut alice = TestSession::start(&url, &config, "alice").await;
            alice.call("bob");
            assert!(bob.next_event(QUIET).await.is_none(), "rung early");
            alice.make_key();
            bob.expect(|e| matches!(e, Event::Called { .. })).await;
        });
    }

    /// A callee whose key is not made yet is rung, but its accept goes out only once the key
    /// exists: the caller is not told ACCEPTED by an endpoint that cannot answer yet.
    #[test]
    fn an_accept_waits_for_the_key() {
        with_server(|url, config| async move {
            let (mut bob, mut alice) = alice_rings_bob(&url, &config).await;
            bob.input(Input::Accept);
            assert!(alice.next_event(QUIET).await.is_none(), "early answer");
            bob.make_key();
            alice.expect(|e| matches!(e, Event::Response(Response::Accepted))).await;
        });
    }

    /// A close while the call waits for the key drops the call: the caller's call ends at
    /// once (state idle, so a caller element ends its stream), and the callee is never rung.
    #[test]
    fn a_close_drops_a_call_that_waits_for_the_key() {
        with_server(|url, config| async move {
            let mut bob = TestSession::start(&url, &config, "bob").await;
            bob.make_key();
            let mut alice = TestSession::start(&url, &config, "alice").await;
            alice.call("bob");
            alice.input(Input::Close);
            alice.expect(|e| matches!(e, Event::StateChanged(CallState::Idle))).await;
            alice.make_key();
            let rung = bob.next_event(QUIET).await;
            assert!(rung.is_none(), "a call closed before it went out rang: {rung:?}");
            // No call waits any more: alice can be called again.
            let mut carol = TestSession::start(&url, &config, "carol").await;
            carol.make_key();
            carol.call("alice");
            alice.expect(|e| matches!(e, Event::Called { .. })).await;
        });
    }

    /// A caller waiting for its key is busy for everyone else: a third party calling it
    /// gets BUSY, and it is not rung (its own call would hang that one up).
    #[test]
    fn a_call_that_waits_for_the_key_answers_others_busy() {
        with_server(|url, config| async move {
            let mut bob = TestSession::start(&url, &config, "bob").await;
            bob.make_key();
            let mut alice = TestSession::start(&url, &config, "alice").await;
            let mut carol = TestSession::start(&url, &config, "carol").await;
            carol.make_key();
            alice.call("bob");
            carol.call("alice");
            carol.expect(|e| matches!(e, Event::Response(Response::Busy))).await;
            let rung = alice.next_event(QUIET).await;
            assert!(rung.is_none(), "rung while about to call: {rung:?}");
            alice.make_key();
            bob.expect(|e| matches!(e, Event::Called { .. })).await;
            // Once its call is over, alice takes calls again.
            bob.input(Input::Reject);
            alice.expect(|e| matches!(e, Event::Response(Response::Rejected))).await;
            alice.expect(|e| matches!(e, Event::StateChanged(CallState::Idle))).await;
            carol.call("alice");
            alice.expect(|e| matches!(e, Event::Called { .. })).await;
        });
    }

    /// An accept held for the key goes to the call that rang when it was given or to none:
    /// that caller hangs up and calls again, and the new call, which nobody accepted, keeps
    /// ringing after the key is made.
    #[test]
    fn a_held_accept_goes_to_its_own_call_only() {
        with_server(|url, config| async move {
            let (mut bob, mut alice) = alice_rings_bob(&url, &config).await;
            bob.input(Input::Accept);
            alice.input(Input::Close);
            alice.expect(|e| matches!(e, Event::StateChanged(CallState::Idle))).await;
            bob.expect(|e| matches!(e, Event::Closed { .. })).await;
            bob.expect(|e| matches!(e, Event::StateChanged(CallState::Idle))).await;
            alice.call("bob");
            bob.expect(|e| matches!(e, Event::Called { .. })).await;
            bob.make_key();
            let answer = alice.next_event(QUIET).await;
            assert!(answer.is_none(), "the second call answered by the first's accept: {answer:?}");
        });
    }

    /// An accept given when nothing rings (the caller hung up first) accepts nothing: not
    /// the next call, which rings after it and nobody accepted.
    #[test]
    fn a_late_accept_answers_no_later_call() {
        with_server(|url, config| async move {
            let (mut bob, mut alice) = alice_rings_bob(&url, &config).await;
            alice.input(Input::Close);
            bob.expect(|e| matches!(e, Event::Closed { .. })).await;
            bob.input(Input::Accept);
            alice.call("bob");
            bob.expect(|e| matches!(e, Event::StateChanged(CallState::Idle))).await;
            bob.expect(|e| matches!(e, Event::Called { .. })).await;
            bob.make_key();
            while let Some(event) = alice.next_event(QUIET).await {
                assert!(
                    !matches!(event, Event::Response(_)),
                    "the call answered by an accept given before it rang: {event:?}"
                );
            }
        });
    }

    /// A close of a call whose accept waits for the key hangs up at once: the caller hears
    /// `closed`, not ACCEPTED once the key is made and then a hang-up.
    #[test]
    fn a_close_drops_a_held_accept_and_hangs_up() {
        with_server(|url, config| async move {
            let (bob, mut alice) = alice_rings_bob(&url, &config).await;
            bob.input(Input::Accept);
            bob.input(Input::Close);
            alice.expect(|e| matches!(e, Event::Closed { .. })).await;
        });
    }

    /// A reject of a call whose accept waits for the key replaces the accept: the caller
    /// hears REJECTED at once, not ACCEPTED once the key is made and then a hang-up.
    #[test]
    fn a_reject_replaces_a_held_accept() {
        with_server(|url, config| async move {
            let (bob, mut alice) = alice_rings_bob(&url, &config).await;
            bob.input(Input::Accept);
            bob.input(Input::Reject);
            alice.expect(|e| matches!(e, Event::Response(Response::Rejected))).await;
        });
    }
}
