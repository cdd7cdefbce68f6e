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
/// The connection is made once `ready` resolves (the element: its process's DTLS key,
/// `crate::dtls_prewarm_done`); a shutdown before then ends the task at once.
pub async fn run<D: Driver>(
    config: SessionConfig,
    driver: D,
    mut commands: mpsc::UnboundedReceiver<Command>,
    done: std::sync::mpsc::Sender<()>,
    ready: impl std::future::Future<Output = ()>,
) {
    let _done = done;
    // Commands that come while connecting (the call, on PLAYING) wait for `connack`.
    let mut pending: Vec<Command> = Vec::new();
    let client_config = config.client.clone();
    let connect = async move {
        ready.await;
        Client::connect(client_config).await
    };
    tokio::pin!(connect);
    let connected = loop {
        tokio::select! {
            c = &mut connect => break c,
            command = commands.recv() => match command {
                // Stopping while connecting ends at once.
                None | Some(Command::Shutdown) => return,
                Some(c) => pending.push(c),
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
    let mut have_connack = false;
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
                        if !have_connack {
                            have_connack = true;
                            for c in pending.drain(..) {
                                apply(&mut endpoint, c);
                            }
                        }
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
                    Some(c) if !have_connack => pending.push(c),
                    Some(c) => apply(&mut endpoint, c),
                }
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
    use wilddog_call::{CallConfig, Endpoint, Event, MediaAction};
    use wilddog_client::{ClientConfig, ClientError};

    use super::{Command, Driver, SessionConfig, run};

    struct QuietDriver;

    impl Driver for QuietDriver {
        fn alive(&self) -> bool {
            true
        }
        fn connect_failed(&self, _error: &ClientError) {}
        fn signaling_state(&self, _connected: bool, _detail: &str) {}
        fn event(&self, _event: Event, _endpoint: &Endpoint) {}
        fn media(&self, _action: MediaAction) {}
        fn stats(&self) {}
    }

    /// A session, its commands, and the sender that lets it connect, against a listener
    /// that accepts TCP and says nothing (the attempt is what is looked at).
    async fn session_on(
        listener: &tokio::net::TcpListener,
    ) -> (tokio::task::JoinHandle<()>, mpsc::UnboundedSender<Command>, oneshot::Sender<()>) {
        let server = format!("ws://{}/ws", listener.local_addr().unwrap());
        let config = SessionConfig {
            client: ClientConfig { server, reconnect: false, ..ClientConfig::default() },
            call: CallConfig::default(),
        };
        let (ready_tx, ready_rx) = oneshot::channel::<()>();
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let (done, _done_rx) = std::sync::mpsc::channel();
        let ready = async move {
            let _ = ready_rx.await;
        };
        let task = tokio::spawn(run(config, QuietDriver, commands_rx, done, ready));
        (task, commands, ready_tx)
    }

    /// The element's session does not connect (so a callee is not rung, a caller not
    /// registered) before its process's DTLS key is made (`ready`), and connects once it is.
    #[test]
    fn the_connection_waits_until_ready() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let (task, commands, ready) = session_on(&listener).await;
            let early = tokio::time::timeout(Duration::from_millis(500), listener.accept()).await;
            assert!(early.is_err(), "connected before ready");
            ready.send(()).unwrap();
            let attempt = tokio::time::timeout(Duration::from_secs(5), listener.accept()).await;
            assert!(attempt.is_ok(), "no connection within 5 s of ready");
            commands.send(Command::Shutdown).unwrap();
            tokio::time::timeout(Duration::from_secs(5), task).await.unwrap().unwrap();
        });
    }

    /// Stopping the element while the key is still being made ends its session at once.
    #[test]
    fn a_shutdown_before_ready_ends_the_session_at_once() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let (task, commands, _ready) = session_on(&listener).await;
            commands.send(Command::Shutdown).unwrap();
            let ended = tokio::time::timeout(Duration::from_secs(1), task).await;
            assert!(ended.is_ok(), "the session waited for ready to stop");
            let attempt = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
            assert!(attempt.is_err(), "connected after a shutdown");
        });
    }
}
