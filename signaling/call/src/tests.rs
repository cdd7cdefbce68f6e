//! The state machine, driven by endpoints wired through a fake relay and a fake clock.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use wilddog_protocol::{
    Body, CallMsg, CandidateMsg, Empty, ErrorCode, ErrorMsg, SdpMsg, TurnCredential,
};

use super::*;

const SECOND: Duration = Duration::from_secs(1);

fn stun() -> IceServer {
    IceServer {
        url: Some("stun:127.0.0.1:3478".into()),
        urls: Some(wilddog_protocol::Urls::One("stun:127.0.0.1:3478".into())),
        kind: Some("stun".into()),
        ..IceServer::default()
    }
}

fn turn() -> IceServer {
    IceServer {
        url: Some("turn:127.0.0.1:3478".into()),
        kind: Some("turn".into()),
        ..IceServer::default()
    }
}

fn render_servers(servers: &[IceServer]) -> String {
    servers
        .iter()
        .map(|s| {
            let mut text = s.all_urls().join("+");
            if let Some(user) = &s.username {
                text.push_str(&format!("({user}:{})", s.credential.clone().unwrap_or_default()));
            }
            text
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn render_body(body: &Body) -> String {
    match body {
        Body::Call(m) => format!(
            "call data={} servers={}",
            m.data_text().unwrap_or_else(|| "-".into()),
            render_servers(m.ice_servers.as_deref().unwrap_or_default())
        ),
        Body::Offer(m) | Body::Answer(m) => format!(
            "{} sdp={}{}",
            body.kind(),
            m.sdp,
            m.restart_id.as_ref().map(|r| format!(" restart={r}")).unwrap_or_default()
        ),
        Body::Candidate(m) => format!(
            "candidate index={} mid={} {}",
            m.sdp_mline_index.map(|i| i.to_string()).unwrap_or_else(|| "-".into()),
            m.sdp_mid.clone().unwrap_or_else(|| "-".into()),
            m.sdp
        ),
        other => other.kind().to_owned(),
    }
}

fn render(output: &Output) -> String {
    match output {
        Output::Send(ClientFrame::Conversation { cid, to, body }) => {
            format!("send {cid}->{to} {}", render_body(body))
        }
        Output::Send(other) => format!("send {}", other.to_json()),
        Output::Event(Event::Called { cid, remote_uid, data }) => format!(
            "called {cid} from={remote_uid} data={}",
            data.clone().unwrap_or_else(|| "-".into())
        ),
        Output::Event(Event::Response(r)) => format!("response {r}"),
        Output::Event(Event::Closed { reason }) => format!("closed {reason}"),
        Output::Event(Event::Error(e)) => format!("error {}", e.code()),
        Output::Event(Event::StateChanged(s)) => format!("state {s}"),
        Output::Media(MediaAction::Start { ice_servers, role }) => {
            format!("media start {role} servers={}", render_servers(ice_servers))
        }
        Output::Media(MediaAction::CreateOffer { ice_restart }) => {
            if *ice_restart {
                "media offer restart".into()
            } else {
                "media offer".into()
            }
        }
        Output::Media(MediaAction::ApplyRemoteOffer { sdp, ice_restart }) => {
            format!("media apply-offer {sdp}{}", if *ice_restart { " restart" } else { "" })
        }
        Output::Media(MediaAction::ApplyRemoteAnswer { sdp }) => {
            format!("media apply-answer {sdp}")
        }
        Output::Media(MediaAction::AddRemoteCandidate { sdp_mline_index, candidate }) => {
            format!("media candidate {sdp_mline_index} {candidate}")
        }
        Output::Media(MediaAction::IceServers { ice_servers }) => {
            format!("media ice-servers {}", render_servers(ice_servers))
        }
        Output::Media(MediaAction::Stop) => "media stop".into(),
    }
}

/// Endpoints by uid, a relay that turns their `ClientFrame`s into `ServerFrame`s as the
/// server would, and a clock. Every output is logged as `uid: what`.
struct World {
    now: Instant,
    endpoints: BTreeMap<&'static str, Endpoint>,
    wire: VecDeque<(&'static str, ClientFrame)>,
    log: Vec<String>,
}

impl World {
    /// alice, bob and carol, connected, with default timers.
    fn new() -> World {
        World::with(&[
            ("alice", CallConfig::default()),
            ("bob", CallConfig::default()),
            ("carol", CallConfig::default()),
        ])
    }

    fn with(peers: &[(&'static str, CallConfig)]) -> World {
        let mut world = World {
            now: Instant::now(),
            endpoints: BTreeMap::new(),
            wire: VecDeque::new(),
            log: Vec::new(),
        };
        for (uid, config) in peers {
            world.endpoints.insert(uid, Endpoint::new(*config));
            world.input(uid, Input::Connected { ice_servers: vec![stun()] });
        }
        assert_eq!(world.take(), Vec::<String>::new(), "connecting says nothing");
        world
    }

    fn ep(&self, uid: &str) -> &Endpoint {
        &self.endpoints[uid]
    }

    fn drain(&mut self, uid: &'static str) {
        let Some(endpoint) = self.endpoints.get_mut(uid) else { return };
        while let Some(output) = endpoint.poll_output() {
            self.log.push(format!("{uid}: {}", render(&output)));
            if let Output::Send(frame) = output {
                self.wire.push_back((uid, frame));
            }
        }
    }

    fn input(&mut self, uid: &'static str, input: Input) {
        let now = self.now;
        self.endpoints.get_mut(uid).expect("known uid").handle_input(now, input);
        self.drain(uid);
    }

    /// Feeds a frame as if the server sent it.
    fn inject(&mut self, uid: &'static str, frame: ServerFrame) {
        self.input(uid, Input::Frame(frame));
    }

    /// Relays every frame on the wire (and those the deliveries cause), in order.
    fn run(&mut self) {
        while let Some((from, frame)) = self.wire.pop_front() {
            let ClientFrame::Conversation { cid, to, mut body } = frame else { continue };
            let Some(to) = self.endpoints.keys().copied().find(|uid| *uid == to) else {
                if matches!(body, Body::Call(_)) {
                    self.log.push(format!("relay: {to} unreachable"));
                    self.inject(from, ServerFrame::Unreachable { cid, from: to });
                }
                continue;
            };
            if let Body::Call(msg) = &mut body {
                msg.turn_credential =
                    Some(TurnCredential { username: "u".into(), credential: "p".into() });
            }
            self.inject(to, ServerFrame::Conversation { cid, from: from.to_owned(), body });
        }
    }

    /// Moves the clock on and fires the endpoints' due timers (in uid order).
    fn advance(&mut self, by: Duration) {
        self.now += by;
        let uids: Vec<&'static str> = self.endpoints.keys().copied().collect();
        for uid in uids {
            let endpoint = self.endpoints.get_mut(uid).expect("known uid");
            if endpoint.poll_timeout().is_some_and(|t| t <= self.now) {
                endpoint.handle_timeout(self.now);
                self.drain(uid);
            }
        }
    }

    fn take(&mut self) -> Vec<String> {
        std::mem::take(&mut self.log)
    }

    #[track_caller]
    fn expect(&mut self, expected: &[&str]) {
        assert_eq!(self.take(), expected, "outputs differ");
    }

    fn call(&mut self, from: &'static str, to: &str, cid: &str) {
        self.input(
            from,
            Input::Call { cid: cid.into(), remote_uid: to.into(), data: Some("hi".into()) },
        );
    }

    /// alice calls bob (cid1), bob accepts, offer/answer done, both connected.
    fn connected_call(&mut self) {
        self.call("alice", "bob", "cid1");
        self.run();
        self.input("bob", Input::Accept);
        self.run();
        self.input("alice", Input::LocalOffer { sdp: "O1".into() });
        self.run();
        self.input("bob", Input::LocalAnswer { sdp: "A1".into() });
        self.run();
        self.input("alice", Input::MediaConnected);
        self.input("bob", Input::MediaConnected);
        self.take();
        assert_eq!(self.ep("alice").state(), CallState::Connected);
        assert_eq!(self.ep("bob").state(), CallState::Connected);
    }
}

fn candidate(index: u32, line: &str) -> Input {
    Input::LocalCandidate { sdp_mline_index: index, candidate: line.into() }
}

#[test]
fn accepted_call_negotiates_in_order() {
    let mut w = World::new();
    w.call("alice", "bob", "cid1");
    w.expect(&[
        "alice: send cid1->bob call data=hi servers=stun:127.0.0.1:3478",
        "alice: state calling",
    ]);
    assert_eq!(w.ep("alice").conversation_id(), Some("cid1"));
    assert_eq!(w.ep("alice").remote_uid(), Some("bob"));
    assert_eq!(w.ep("alice").role(), Some(Role::Caller));

    w.run();
    w.expect(&["bob: called cid1 from=alice data=hi", "bob: state ringing"]);
    assert_eq!(w.ep("bob").role(), Some(Role::Callee));
    assert_eq!(w.ep("bob").remote_uid(), Some("alice"));

    w.input("bob", Input::Accept);
    w.expect(&[
        "bob: send cid1->alice accept",
        "bob: media start callee servers=stun:127.0.0.1:3478",
        "bob: state connecting",
    ]);
    w.run();
    w.expect(&[
        "alice: media start caller servers=stun:127.0.0.1:3478",
        "alice: media offer",
        "alice: response ACCEPTED",
        "alice: state connecting",
    ]);

    w.input("alice", Input::LocalOffer { sdp: "O1".into() });
    w.input("alice", candidate(0, "candidate:a0"));
    w.input("alice", candidate(1, "candidate:a1"));
    w.run();
    w.expect(&[
        "alice: send cid1->bob offer sdp=O1",
        "alice: send cid1->bob candidate index=0 mid=- candidate:a0",
        "alice: send cid1->bob candidate index=1 mid=- candidate:a1",
        "bob: media apply-offer O1",
        "bob: media candidate 0 candidate:a0",
        "bob: media candidate 1 candidate:a1",
    ]);

    w.input("bob", Input::LocalAnswer { sdp: "A1".into() });
    w.input("bob", candidate(0, "candidate:b0"));
    w.run();
    w.expect(&[
        "bob: send cid1->alice answer sdp=A1",
        "bob: send cid1->alice candidate index=0 mid=- candidate:b0",
        "alice: media apply-answer A1",
        "alice: media candidate 0 candidate:b0",
    ]);

    w.input("alice", Input::MediaConnected);
    w.input("bob", Input::MediaConnected);
    w.expect(&["alice: state connected", "bob: state connected"]);
    assert_eq!(w.ep("alice").poll_timeout(), None, "no timer once connected");
    assert_eq!(w.ep("bob").poll_timeout(), None);

    // Nothing else happens, however long the call.
    w.advance(3600 * SECOND);
    w.expect(&[]);
}

#[test]
fn call_frame_is_the_wire_protocol() {
    let mut endpoint = Endpoint::new(CallConfig::default());
    let now = Instant::now();
    endpoint.handle_input(now, Input::Connected { ice_servers: vec![stun()] });
    endpoint.handle_input(
        now,
        Input::Call { cid: "c".into(), remote_uid: "bob".into(), data: Some("x".into()) },
    );
    let Some(Output::Send(frame)) = endpoint.poll_output() else { panic!("no frame") };
    let json: serde_json::Value = serde_json::from_str(&frame.to_json()).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "type": "call", "cid": "c", "to": "bob",
            "msg": {
                "data": "x",
                "iceServers": [{"url": "stun:127.0.0.1:3478", "urls": "stun:127.0.0.1:3478",
                                "type": "stun"}],
            },
        })
    );
}

#[test]
fn candidate_frame_carries_the_line_in_sdp() {
    let mut w = World::new();
    w.connected_call();
    w.input("alice", candidate(1, "candidate:1 1 UDP 1 127.0.0.1 5000 typ host"));
    let Some((_, frame)) = w.wire.pop_front() else { panic!("nothing sent") };
    let json: serde_json::Value = serde_json::from_str(&frame.to_json()).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "type": "candidate", "cid": "cid1", "to": "bob",
            "msg": {"sdpMLineIndex": 1,
                    "sdp": "candidate:1 1 UDP 1 127.0.0.1 5000 typ host"},
        })
    );
}

#[test]
fn rejected_call() {
    let mut w = World::new();
    w.call("alice", "bob", "cid1");
    w.run();
    w.take();
    w.input("bob", Input::Reject);
    w.run();
    w.expect(&[
        "bob: send cid1->alice reject",
        "bob: state idle",
        "alice: response REJECTED",
        "alice: state idle",
    ]);
    assert_eq!(w.ep("alice").conversation_id(), None);
    assert_eq!(w.ep("alice").poll_timeout(), None);
    assert_eq!(w.ep("bob").poll_timeout(), None);
}

#[test]
fn callee_answering_busy_gives_busy() {
    let mut w = World::new();
    w.call("alice", "bob", "cid1");
    w.run();
    w.take();
    w.input("bob", Input::Busy);
    w.run();
    w.expect(&[
        "bob: send cid1->alice busy",
        "bob: state idle",
        "alice: response BUSY",
        "alice: state idle",
    ]);
    assert_eq!(w.ep("bob").conversation_id(), None);
    // Only a ringing call can be answered busy.
    w.input("bob", Input::Busy);
    w.run();
    w.expect(&[]);
}

#[test]
fn third_caller_gets_busy_from_a_live_call() {
    let mut w = World::new();
    w.connected_call();
    w.call("carol", "bob", "cid2");
    w.run();
    w.expect(&[
        "carol: send cid2->bob call data=hi servers=stun:127.0.0.1:3478",
        "carol: state calling",
        "bob: send cid2->carol busy",
        "carol: response BUSY",
        "carol: state idle",
    ]);
    // bob's call goes on, untouched.
    assert_eq!(w.ep("bob").state(), CallState::Connected);
    assert_eq!(w.ep("bob").conversation_id(), Some("cid1"));
}

#[test]
fn ringing_callee_answers_a_second_caller_busy() {
    let mut w = World::new();
    w.call("alice", "bob", "cid1");
    w.run();
    w.take();
    w.call("carol", "bob", "cid2");
    w.run();
    w.expect(&[
        "carol: send cid2->bob call data=hi servers=stun:127.0.0.1:3478",
        "carol: state calling",
        "bob: send cid2->carol busy",
        "carol: response BUSY",
        "carol: state idle",
    ]);
    assert_eq!(w.ep("bob").state(), CallState::Ringing);
    assert_eq!(w.ep("bob").remote_uid(), Some("alice"));
}

#[test]
fn calling_endpoint_answers_an_incoming_call_busy() {
    let mut w = World::new();
    w.call("alice", "bob", "cid1");
    w.call("carol", "alice", "cid2");
    w.take();
    // Deliver only carol's call to alice: alice is calling, so busy.
    w.wire.retain(|(from, _)| *from == "carol");
    w.run();
    w.expect(&["alice: send cid2->carol busy", "carol: response BUSY", "carol: state idle"]);
    assert_eq!(w.ep("alice").state(), CallState::Calling);
}

#[test]
fn reserved_endpoint_answers_an_incoming_call_busy() {
    let mut w = World::new();
    w.endpoints.get_mut("alice").expect("alice").set_reserved(true);
    w.call("carol", "alice", "cid2");
    w.run();
    w.expect(&[
        "carol: send cid2->alice call data=hi servers=stun:127.0.0.1:3478",
        "carol: state calling",
        "alice: send cid2->carol busy",
        "carol: response BUSY",
        "carol: state idle",
    ]);
    assert_eq!(w.ep("alice").state(), CallState::Idle);
    // No longer reserved: rung.
    w.endpoints.get_mut("alice").expect("alice").set_reserved(false);
    w.call("carol", "alice", "cid3");
    w.run();
    assert_eq!(w.ep("alice").state(), CallState::Ringing);
}

#[test]
fn unanswered_call_times_out_and_stops_the_ringing() {
    let config = CallConfig { call_timeout: 20 * SECOND, ..CallConfig::default() };
    let mut w = World::with(&[("alice", config), ("bob", CallConfig::default())]);
    w.call("alice", "bob", "cid1");
    w.run();
    w.take();
    let started = w.now;
    assert_eq!(w.ep("alice").poll_timeout(), Some(started + 20 * SECOND));
    assert_eq!(w.ep("bob").poll_timeout(), Some(started + 30 * SECOND));

    w.advance(20 * SECOND - Duration::from_millis(1));
    w.expect(&[]);
    // A timeout call too early does nothing.
    let now = w.now;
    w.endpoints.get_mut("alice").unwrap().handle_timeout(now);
    w.drain("alice");
    w.expect(&[]);

    w.advance(Duration::from_millis(1));
    w.run();
    w.expect(&[
        "alice: send cid1->bob bye",
        "alice: response TIMEOUT",
        "alice: state idle",
        "bob: closed remote-hangup",
        "bob: state idle",
    ]);
    assert_eq!(w.ep("bob").poll_timeout(), None);
}

#[test]
fn unreachable_callee_fails_at_once() {
    let mut w = World::new();
    w.call("alice", "dave", "cid1");
    w.run();
    w.expect(&[
        "alice: send cid1->dave call data=hi servers=stun:127.0.0.1:3478",
        "alice: state calling",
        "relay: dave unreachable",
        "alice: response TIMEOUT",
        "alice: state idle",
    ]);
    assert_eq!(w.ep("alice").poll_timeout(), None);
}

#[test]
fn unreachable_for_another_cid_is_ignored() {
    let mut w = World::new();
    w.call("alice", "bob", "cid1");
    w.take();
    w.inject("alice", ServerFrame::Unreachable { cid: "old".into(), from: "bob".into() });
    w.expect(&[]);
    assert_eq!(w.ep("alice").state(), CallState::Calling);
}

#[test]
fn caller_cancels_before_an_answer() {
    let mut w = World::new();
    w.call("alice", "bob", "cid1");
    w.run();
    w.take();
    w.input("alice", Input::Close);
    w.run();
    w.expect(&[
        "alice: send cid1->bob bye",
        "alice: state idle",
        "bob: closed remote-hangup",
        "bob: state idle",
    ]);
}

#[test]
fn close_mid_call() {
    let mut w = World::new();
    w.connected_call();
    w.input("bob", Input::Close);
    w.run();
    w.expect(&[
        "bob: send cid1->alice bye",
        "bob: media stop",
        "bob: state idle",
        "alice: media stop",
        "alice: closed remote-hangup",
        "alice: state idle",
    ]);
    // A second close, and a close when idle, do nothing.
    w.input("bob", Input::Close);
    w.input("alice", Input::Close);
    w.expect(&[]);
}

#[test]
fn unanswered_incoming_call_times_out() {
    let config = CallConfig { call_timeout: 60 * SECOND, ..CallConfig::default() };
    let mut w = World::with(&[("alice", config), ("bob", CallConfig::default())]);
    w.call("alice", "bob", "cid1");
    w.run();
    w.take();
    w.advance(30 * SECOND);
    w.run();
    w.expect(&["bob: error 41007", "bob: state idle"]);
    // A late accept does nothing.
    w.input("bob", Input::Accept);
    w.expect(&[]);
    assert_eq!(w.ep("alice").state(), CallState::Calling);
}

#[test]
fn accepted_call_that_never_connects_fails_on_both_sides() {
    let mut w = World::new();
    w.call("alice", "bob", "cid1");
    w.run();
    w.input("bob", Input::Accept);
    w.run();
    w.input("alice", Input::LocalOffer { sdp: "O1".into() });
    w.run();
    w.input("bob", Input::LocalAnswer { sdp: "A1".into() });
    w.run();
    w.take();
    w.advance(30 * SECOND);
    w.run();
    w.expect(&[
        "alice: send cid1->bob bye",
        "alice: media stop",
        "alice: error 41004",
        "alice: state idle",
        "bob: send cid1->alice bye",
        "bob: media stop",
        "bob: error 41004",
        "bob: state idle",
    ]);
}

#[test]
fn connect_timeout_at_one_side_closes_the_other() {
    let slow = CallConfig { connect_timeout: 60 * SECOND, ..CallConfig::default() };
    let mut w = World::with(&[("alice", slow), ("bob", CallConfig::default())]);
    w.call("alice", "bob", "cid1");
    w.run();
    w.input("bob", Input::Accept);
    w.run();
    w.take();
    w.advance(30 * SECOND);
    w.run();
    w.expect(&[
        "bob: send cid1->alice bye",
        "bob: media stop",
        "bob: error 41004",
        "bob: state idle",
        "alice: media stop",
        "alice: closed remote-hangup",
        "alice: state idle",
    ]);
}

#[test]
fn media_failure_before_the_media_connected_ends_the_call_with_41004() {
    let mut w = World::new();
    w.call("alice", "bob", "cid1");
    w.run();
    w.input("bob", Input::Accept);
    w.run();
    w.take();
    // The offer cannot be made (or ICE failed before it ever connected).
    w.input("alice", Input::MediaFailed);
    w.run();
    w.expect(&[
        "alice: send cid1->bob bye",
        "alice: media stop",
        "alice: error 41004",
        "alice: state idle",
        "bob: media stop",
        "bob: closed remote-hangup",
        "bob: state idle",
    ]);
    // Media reports without a call are ignored.
    w.input("alice", Input::MediaFailed);
    w.input("alice", Input::MediaConnected);
    w.input("alice", Input::MediaDisconnected);
    w.input("alice", Input::LocalOffer { sdp: "late".into() });
    w.input("alice", candidate(0, "candidate:late"));
    w.expect(&[]);
}

#[test]
fn new_call_hangs_up_the_old_one() {
    let mut w = World::new();
    w.connected_call();
    w.call("alice", "carol", "cid2");
    w.run();
    w.expect(&[
        "alice: send cid1->bob bye",
        "alice: media stop",
        "alice: state idle",
        "alice: send cid2->carol call data=hi servers=stun:127.0.0.1:3478",
        "alice: state calling",
        "bob: media stop",
        "bob: closed remote-hangup",
        "bob: state idle",
        "carol: called cid2 from=alice data=hi",
        "carol: state ringing",
    ]);
    assert_eq!(w.ep("alice").conversation_id(), Some("cid2"));
}

#[test]
fn new_call_while_calling_cancels_the_first() {
    let mut w = World::new();
    w.call("alice", "bob", "cid1");
    w.call("alice", "carol", "cid2");
    w.run();
    w.expect(&[
        "alice: send cid1->bob call data=hi servers=stun:127.0.0.1:3478",
        "alice: state calling",
        "alice: send cid1->bob bye",
        "alice: state idle",
        "alice: send cid2->carol call data=hi servers=stun:127.0.0.1:3478",
        "alice: state calling",
        "bob: called cid1 from=alice data=hi",
        "bob: state ringing",
        "bob: closed remote-hangup",
        "bob: state idle",
        "carol: called cid2 from=alice data=hi",
        "carol: state ringing",
    ]);
    // bob's late accept of the old call reaches no one.
    w.input("bob", Input::Accept);
    w.expect(&[]);
}

/// An offer or answer SDP with a transport of its own (`ufrag`), as the restart tests need.
fn sdp(ufrag: &str) -> String {
    format!("v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=ice-ufrag:{ufrag}\r\na=mid:video0\r\n")
}

/// A call connected with SDPs that carry transports (`O1`/`A1` ufrags).
fn connected_call_with_transports(w: &mut World) {
    w.call("alice", "bob", "cid1");
    w.run();
    w.input("bob", Input::Accept);
    w.run();
    w.input("alice", Input::LocalOffer { sdp: sdp("o1") });
    w.input("alice", candidate(0, "candidate:a1"));
    w.run();
    w.input("bob", Input::LocalAnswer { sdp: sdp("a1") });
    w.input("bob", candidate(0, "candidate:b1"));
    w.run();
    w.input("alice", Input::MediaConnected);
    w.input("bob", Input::MediaConnected);
    w.take();
}

fn short(line: String) -> String {
    line.replace("v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=ice-ufrag:", "<")
        .replace("\r\na=mid:video0\r\n", ">")
}

fn take_short(w: &mut World) -> Vec<String> {
    w.take().into_iter().map(short).collect()
}

#[test]
fn resume_frame_is_the_extension_json() {
    let mut w = World::new();
    w.connected_call();
    w.input("alice", Input::Disconnected);
    w.wire.clear();
    w.input("alice", Input::Connected { ice_servers: vec![stun()] });
    let (_, first) = w.wire.pop_front().expect("a frame");
    assert_eq!(
        first.to_json(),
        r#"{"type":"resume","cid":"cid1","to":"bob","msg":{"role":"caller"}}"#
    );
    w.input("bob", Input::Disconnected);
    w.wire.clear();
    w.input("bob", Input::Connected { ice_servers: vec![stun()] });
    let (_, first) = w.wire.pop_front().expect("a frame");
    assert_eq!(
        first.to_json(),
        r#"{"type":"resume","cid":"cid1","to":"alice","msg":{"role":"callee"}}"#
    );
}

#[test]
fn caller_reconnect_resumes_and_resyncs_a_healthy_call_without_touching_the_media() {
    let mut w = World::new();
    connected_call_with_transports(&mut w);
    w.input("alice", Input::Disconnected);
    w.expect(&[]);
    assert_eq!(w.ep("alice").state(), CallState::Connected, "media goes on");
    w.input("alice", Input::Connected { ice_servers: vec![turn()] });
    assert_eq!(w.ep("alice").ice_servers(), &[turn()]);
    w.run();
    // The offer and answer go again (with their candidates), nobody's media is touched.
    assert_eq!(
        take_short(&mut w),
        [
            r#"alice: send {"type":"resume","cid":"cid1","to":"bob","msg":{"role":"caller"}}"#,
            "alice: send cid1->bob offer sdp=<o1> restart=1",
            "alice: send cid1->bob candidate index=0 mid=video0 candidate:a1",
            "bob: send cid1->alice answer sdp=<a1> restart=1",
            "bob: send cid1->alice candidate index=0 mid=video0 candidate:b1",
            // Candidates again are harmless (the media engines know them already).
            "bob: media candidate 0 candidate:a1",
            "alice: media candidate 0 candidate:b1",
        ]
    );
    assert_eq!(w.ep("alice").state(), CallState::Connected);
    assert_eq!(w.ep("alice").poll_timeout(), None);
    // The next reconnect has a new restart id.
    w.input("alice", Input::Connected { ice_servers: vec![stun()] });
    let sent = take_short(&mut w);
    assert_eq!(sent[1], "alice: send cid1->bob offer sdp=<o1> restart=2");
}

#[test]
fn callee_reconnect_resumes_and_asks_the_caller_to_resync() {
    let mut w = World::new();
    connected_call_with_transports(&mut w);
    w.input("bob", Input::Disconnected);
    w.input("bob", Input::Connected { ice_servers: vec![stun()] });
    w.run();
    assert_eq!(
        take_short(&mut w),
        [
            r#"bob: send {"type":"resume","cid":"cid1","to":"alice","msg":{"role":"callee"}}"#,
            "bob: send cid1->alice restartice",
            "alice: send cid1->bob offer sdp=<o1> restart=1",
            "alice: send cid1->bob candidate index=0 mid=video0 candidate:a1",
            "bob: send cid1->alice answer sdp=<a1> restart=1",
            "bob: send cid1->alice candidate index=0 mid=video0 candidate:b1",
            // Candidates again are harmless (the media engines know them already).
            "bob: media candidate 0 candidate:a1",
            "alice: media candidate 0 candidate:b1",
        ]
    );
}

#[test]
fn resync_delivers_an_offer_lost_in_the_blip() {
    let mut w = World::new();
    w.call("alice", "bob", "cid1");
    w.run();
    w.input("bob", Input::Accept);
    w.run();
    w.input("alice", Input::LocalOffer { sdp: sdp("o1") });
    w.input("alice", candidate(0, "candidate:a1"));
    // Lost with the socket.
    w.wire.clear();
    w.take();
    w.input("alice", Input::Disconnected);
    w.input("alice", Input::Connected { ice_servers: vec![stun()] });
    w.run();
    assert_eq!(
        take_short(&mut w),
        [
            r#"alice: send {"type":"resume","cid":"cid1","to":"bob","msg":{"role":"caller"}}"#,
            "alice: send cid1->bob offer sdp=<o1> restart=1",
            "alice: send cid1->bob candidate index=0 mid=video0 candidate:a1",
            "bob: media apply-offer <o1>",
            "bob: media candidate 0 candidate:a1",
        ]
    );
    // Its answer is the first: applied.
    w.input("bob", Input::LocalAnswer { sdp: sdp("a1") });
    w.run();
    assert_eq!(
        take_short(&mut w),
        ["bob: send cid1->alice answer sdp=<a1> restart=1", "alice: media apply-answer <a1>"]
    );
}

#[test]
fn lost_path_restarts_ice_from_the_caller() {
    let mut w = World::new();
    connected_call_with_transports(&mut w);
    w.input("alice", Input::MediaDisconnected);
    w.expect(&["alice: media offer restart"]);
    // The callee's candidates of the restarted session wait for its answer.
    w.input("alice", Input::LocalOffer { sdp: sdp("o2") });
    w.input("alice", candidate(0, "candidate:a2"));
    w.run();
    assert_eq!(
        take_short(&mut w),
        [
            "alice: send cid1->bob offer sdp=<o2> restart=1",
            "alice: send cid1->bob candidate index=0 mid=video0 candidate:a2",
            "bob: media apply-offer <o2> restart",
            "bob: media candidate 0 candidate:a2",
        ]
    );
    // Gathered before the answer was handed over: sent after it.
    w.input("bob", candidate(0, "candidate:b2"));
    w.input("bob", Input::LocalAnswer { sdp: sdp("a2") });
    w.run();
    assert_eq!(
        take_short(&mut w),
        [
            "bob: send cid1->alice answer sdp=<a2> restart=1",
            "bob: send cid1->alice candidate index=0 mid=video0 candidate:b2",
            "alice: media apply-answer <a2>",
            "alice: media candidate 0 candidate:b2",
        ]
    );
    w.input("alice", Input::MediaConnected);
    w.input("bob", Input::MediaConnected);
    w.expect(&[]);
    assert_eq!(w.ep("alice").poll_timeout(), None, "the path is back: no timer");
    w.advance(3600 * SECOND);
    w.expect(&[]);
    assert_eq!(w.ep("alice").state(), CallState::Connected);
}

#[test]
fn lost_path_at_the_callee_asks_for_a_restart_and_asks_again_until_it_comes() {
    let mut w = World::new();
    connected_call_with_transports(&mut w);
    w.input("bob", Input::MediaDisconnected);
    w.run();
    // alice's media looks healthy: a resync first, which bob answers as before.
    assert_eq!(
        take_short(&mut w),
        [
            "bob: send cid1->alice restartice",
            "alice: send cid1->bob offer sdp=<o1> restart=1",
            "alice: send cid1->bob candidate index=0 mid=video0 candidate:a1",
            "bob: send cid1->alice answer sdp=<a1> restart=1",
            "bob: send cid1->alice candidate index=0 mid=video0 candidate:b1",
            // Candidates again are harmless (the media engines know them already).
            "bob: media candidate 0 candidate:a1",
            "alice: media candidate 0 candidate:b1",
        ]
    );
    // Still lost: bob asks again, and alice restarts ICE for real.
    w.advance(RESTART_RETRY);
    w.run();
    assert_eq!(
        take_short(&mut w),
        ["bob: send cid1->alice restartice", "alice: media offer restart"]
    );
    w.input("alice", Input::LocalOffer { sdp: sdp("o2") });
    w.run();
    assert_eq!(
        take_short(&mut w),
        ["alice: send cid1->bob offer sdp=<o2> restart=2", "bob: media apply-offer <o2> restart"]
    );
    w.input("bob", Input::LocalAnswer { sdp: sdp("b2") });
    w.run();
    w.input("bob", Input::MediaConnected);
    w.input("alice", Input::MediaConnected);
    assert_eq!(
        take_short(&mut w),
        ["bob: send cid1->alice answer sdp=<b2> restart=2", "alice: media apply-answer <b2>"]
    );
    w.advance(3600 * SECOND);
    w.expect(&[]);
}

#[test]
fn callee_follows_a_restart_offer_whose_transport_changed() {
    // A browser caller restarts ICE in place: new credentials, while our media is healthy.
    let mut w = World::new();
    connected_call_with_transports(&mut w);
    w.inject(
        "bob",
        ServerFrame::Conversation {
            cid: "cid1".into(),
            from: "alice".into(),
            body: Body::Offer(SdpMsg {
                sdp: sdp("o9"),
                restart_id: Some("r9".into()),
                ..SdpMsg::default()
            }),
        },
    );
    assert_eq!(take_short(&mut w), ["bob: media apply-offer <o9> restart"]);
    w.input("bob", Input::LocalAnswer { sdp: sdp("a9") });
    assert_eq!(take_short(&mut w), [r#"bob: send cid1->alice answer sdp=<a9> restart="r9""#]);
}

#[test]
fn both_sides_lose_the_path_one_restart_goes_on() {
    let mut w = World::new();
    connected_call_with_transports(&mut w);
    w.input("alice", Input::MediaDisconnected);
    w.input("alice", Input::LocalOffer { sdp: sdp("o2") });
    w.input("bob", Input::MediaDisconnected);
    w.run();
    // alice's restart is under way: bob's `restartice` does not start it over, and bob waits
    // a whole retry period from the offer before asking again.
    assert_eq!(
        take_short(&mut w),
        [
            "alice: media offer restart",
            "alice: send cid1->bob offer sdp=<o2> restart=1",
            "bob: send cid1->alice restartice",
            "bob: media apply-offer <o2> restart",
        ]
    );
    w.advance(RESTART_RETRY - Duration::from_millis(1));
    w.run();
    w.expect(&[]);
    w.input("bob", Input::LocalAnswer { sdp: sdp("a2") });
    w.run();
    w.input("alice", Input::MediaConnected);
    w.input("bob", Input::MediaConnected);
    w.take();
    w.advance(3600 * SECOND);
    w.expect(&[]);
}

#[test]
fn a_re_offer_of_the_same_transport_is_a_renegotiation_applied_in_place() {
    // A browser's re-offer of the same transport (Firefox puts its default candidate's port
    // in the m-line; a stopped transceiver changes a section): applied as it is, no restart.
    let mut w = World::new();
    connected_call_with_transports(&mut w);
    let offer = sdp("o1").replace("m=video 9 ", "m=video 50123 ");
    w.inject(
        "bob",
        ServerFrame::Conversation {
            cid: "cid1".into(),
            from: "alice".into(),
            body: Body::Offer(SdpMsg {
                sdp: offer,
                restart_id: Some(5.into()),
                ..SdpMsg::default()
            }),
        },
    );
    assert_eq!(
        take_short(&mut w),
        ["bob: media apply-offer v=0\r\nm=video 50123 UDP/TLS/RTP/SAVPF 96\r\na=ice-ufrag:o1>"]
    );
    // A stopped section carries no credentials: still the same transport.
    let stopped =
        format!("{}m=audio 0 UDP/TLS/RTP/SAVPF 111\r\na=mid:audio1\r\na=inactive\r\n", sdp("o1"));
    let mut with_audio = World::new();
    with_audio.call("alice", "bob", "cid1");
    with_audio.run();
    with_audio.input("bob", Input::Accept);
    with_audio.run();
    let two = format!(
        "{}m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=ice-ufrag:o1\r\na=mid:audio1\r\n",
        sdp("o1")
    );
    with_audio.input("alice", Input::LocalOffer { sdp: two });
    with_audio.run();
    with_audio.take();
    with_audio.inject(
        "bob",
        ServerFrame::Conversation {
            cid: "cid1".into(),
            from: "alice".into(),
            body: Body::Offer(SdpMsg { sdp: stopped, ..SdpMsg::default() }),
        },
    );
    let applied = with_audio.take();
    assert_eq!(applied.len(), 1, "{applied:?}");
    assert!(
        applied[0].starts_with("bob: media apply-offer") && !applied[0].ends_with(" restart"),
        "{applied:?}"
    );
    // The same offer again but for its origin line: a resync.
    let again =
        format!("o=- 1 2 IN IP4 0.0.0.0\r\n{}", sdp("o1").replace("m=video 9 ", "m=video 50123 "));
    w.input("bob", Input::LocalAnswer { sdp: sdp("a1") });
    w.take();
    w.inject(
        "bob",
        ServerFrame::Conversation {
            cid: "cid1".into(),
            from: "alice".into(),
            body: Body::Offer(SdpMsg {
                sdp: again,
                restart_id: Some(6.into()),
                ..SdpMsg::default()
            }),
        },
    );
    assert_eq!(take_short(&mut w), ["bob: send cid1->alice answer sdp=<a1> restart=6"]);
}

#[test]
fn answer_to_an_older_offer_is_ignored() {
    let mut w = World::new();
    connected_call_with_transports(&mut w);
    w.input("alice", Input::MediaDisconnected);
    w.input("alice", Input::LocalOffer { sdp: sdp("o2") });
    w.wire.clear();
    w.take();
    let answer = |id: u64| ServerFrame::Conversation {
        cid: "cid1".into(),
        from: "bob".into(),
        body: Body::Answer(SdpMsg {
            sdp: sdp(&format!("a-{id}")),
            restart_id: Some(id.into()),
            ..SdpMsg::default()
        }),
    };
    w.inject("alice", answer(7));
    w.expect(&[]);
    w.inject("alice", answer(1));
    assert_eq!(take_short(&mut w), ["alice: media apply-answer <a-1>"]);
}

#[test]
fn failed_restart_attempts_are_retried_and_never_end_the_call_as_41007() {
    let mut w = World::new();
    connected_call_with_transports(&mut w);
    w.input("alice", Input::MediaDisconnected);
    w.expect(&["alice: media offer restart"]);
    // The new offer cannot be made.
    w.input("alice", Input::MediaFailed);
    w.expect(&[]);
    w.advance(RESTART_RETRY);
    w.expect(&["alice: media offer restart"]);
    w.input("alice", Input::LocalOffer { sdp: sdp("o3") });
    w.run();
    w.input("bob", Input::LocalAnswer { sdp: sdp("a3") });
    w.run();
    w.input("alice", Input::MediaConnected);
    w.take();
    w.advance(3600 * SECOND);
    w.expect(&[]);
    assert_eq!(w.ep("alice").state(), CallState::Connected);
}

/// alice finds the path lost; her restart's offer goes out and bob answers it; the path is
/// still lost.
fn lost_path_whose_restart_was_answered(w: &mut World) {
    w.input("alice", Input::MediaDisconnected);
    w.input("alice", Input::LocalOffer { sdp: sdp("o2") });
    w.run();
    w.input("bob", Input::LocalAnswer { sdp: sdp("a2") });
    w.run();
    w.take();
}

#[test]
fn path_that_does_not_come_back_ends_with_41004_after_the_connect_timeout() {
    let config = CallConfig { connect_timeout: 10 * SECOND, ..CallConfig::default() };
    let mut w = World::with(&[("alice", config), ("bob", config)]);
    connected_call_with_transports(&mut w);
    lost_path_whose_restart_was_answered(&mut w);
    // Each attempt that does not bring the path back is made again…
    w.advance(RESTART_RETRY);
    w.expect(&["alice: media offer restart"]);
    w.input("alice", Input::LocalOffer { sdp: sdp("o3") });
    w.run();
    w.input("bob", Input::LocalAnswer { sdp: sdp("a3") });
    w.run();
    w.take();
    w.advance(RESTART_RETRY);
    w.expect(&["alice: media offer restart"]);
    // … until the connect timeout.
    w.advance(2 * SECOND);
    w.run();
    w.expect(&[
        "alice: send cid1->bob bye",
        "alice: media stop",
        "alice: error 41004",
        "alice: state idle",
        "bob: media stop",
        "bob: closed remote-hangup",
        "bob: state idle",
    ]);
}

fn refusal(code: ErrorCode) -> ServerFrame {
    ServerFrame::Error {
        cid: Some("cid1".into()),
        msg: ErrorMsg { code, reason: "refused".into(), refers_to: Some("resume".into()) },
    }
}

#[test]
fn refused_resume_is_retried_with_backoff_then_the_call_is_over() {
    let mut w = World::new();
    connected_call_with_transports(&mut w);
    w.input("bob", Input::Disconnected);
    w.input("bob", Input::Connected { ice_servers: vec![stun()] });
    w.wire.clear();
    w.take();
    let resume_and_restart = [
        r#"bob: send {"type":"resume","cid":"cid1","to":"alice","msg":{"role":"callee"}}"#,
        "bob: send cid1->alice restartice",
    ];
    // The old connection still holds the conversation (a half-open socket, being probed).
    for delay in RESUME_RETRY_DELAYS {
        w.inject("bob", refusal(ErrorCode::NotParty));
        // Refusals of the other frames sent with it change nothing.
        w.inject("bob", refusal(ErrorCode::NotParty));
        w.expect(&[]);
        w.advance(delay - Duration::from_millis(1));
        w.expect(&[]);
        w.advance(Duration::from_millis(1));
        w.expect(&resume_and_restart);
        w.wire.clear();
    }
    w.inject("bob", refusal(ErrorCode::UnknownConversation));
    w.expect(&[
        "bob: media stop",
        "bob: closed refused (UnknownConversation): refused",
        "bob: state idle",
    ]);
}

#[test]
fn refusal_retries_stop_counting_at_the_next_reconnect() {
    let mut w = World::new();
    connected_call_with_transports(&mut w);
    w.input("alice", Input::Disconnected);
    w.input("alice", Input::Connected { ice_servers: vec![stun()] });
    w.take();
    w.inject("alice", refusal(ErrorCode::UnknownConversation));
    w.advance(RESUME_RETRY_DELAYS[0]);
    assert_eq!(take_short(&mut w)[1], "alice: send cid1->bob offer sdp=<o1> restart=2");
    w.input("alice", Input::Connected { ice_servers: vec![stun()] });
    w.take();
    w.inject("alice", refusal(ErrorCode::NotParty));
    assert_eq!(w.ep("alice").poll_timeout(), Some(w.now + RESUME_RETRY_DELAYS[0]));
}

#[test]
fn reconnect_without_media_changes_nothing() {
    let mut w = World::new();
    w.call("alice", "bob", "cid1");
    w.run();
    w.take();
    for uid in ["alice", "bob"] {
        w.input(uid, Input::Disconnected);
        w.input(uid, Input::Connected { ice_servers: vec![stun()] });
    }
    w.expect(&[]);
    assert_eq!(w.ep("alice").state(), CallState::Calling);
    assert_eq!(w.ep("bob").state(), CallState::Ringing);
}

#[test]
fn restart_before_the_first_offer_is_not_needed() {
    let mut w = World::new();
    w.call("alice", "bob", "cid1");
    w.run();
    w.input("bob", Input::Accept);
    w.run();
    w.take();
    // The first offer is still being created: it gathers with the new connection anyway.
    w.input("alice", Input::Connected { ice_servers: vec![stun()] });
    w.inject(
        "alice",
        ServerFrame::Conversation {
            cid: "cid1".into(),
            from: "bob".into(),
            body: Body::RestartIce(Empty::default()),
        },
    );
    w.input("alice", Input::MediaDisconnected);
    w.expect(&[r#"alice: send {"type":"resume","cid":"cid1","to":"bob","msg":{"role":"caller"}}"#]);
    w.input("alice", Input::LocalOffer { sdp: "O1".into() });
    w.expect(&["alice: send cid1->bob offer sdp=O1"]);
}

#[test]
fn remote_candidates_wait_for_the_remote_description() {
    let mut w = World::new();
    w.call("alice", "bob", "cid1");
    w.run();
    w.input("bob", Input::Accept);
    w.run();
    w.take();
    // The media engine reports candidates before the description they belong to: they go
    // out after it (a peer cannot add a candidate before it has the description).
    w.input("alice", candidate(0, "candidate:a0"));
    w.input("alice", candidate(1, "candidate:a1"));
    w.run();
    w.expect(&[]);
    w.input("alice", Input::LocalOffer { sdp: "O1".into() });
    w.run();
    w.expect(&[
        "alice: send cid1->bob offer sdp=O1",
        "alice: send cid1->bob candidate index=0 mid=- candidate:a0",
        "alice: send cid1->bob candidate index=1 mid=- candidate:a1",
        "bob: media apply-offer O1",
        "bob: media candidate 0 candidate:a0",
        "bob: media candidate 1 candidate:a1",
    ]);
    w.input("bob", candidate(0, "candidate:b0"));
    w.input("bob", candidate(0, ""));
    w.run();
    w.expect(&[]);
    w.input("bob", Input::LocalAnswer { sdp: "A1".into() });
    w.run();
    w.expect(&[
        "bob: send cid1->alice answer sdp=A1",
        "bob: send cid1->alice candidate index=0 mid=- candidate:b0",
        "bob: send cid1->alice candidate index=0 mid=- ",
        "alice: media apply-answer A1",
        "alice: media candidate 0 candidate:b0",
        "alice: media candidate 0 ",
    ]);
}

#[test]
fn candidate_without_index_goes_to_the_first_line() {
    let mut w = World::new();
    w.connected_call();
    w.inject(
        "alice",
        ServerFrame::Conversation {
            cid: "cid1".into(),
            from: "bob".into(),
            body: Body::Candidate(CandidateMsg {
                sdp: "candidate:x".into(),
                ..CandidateMsg::default()
            }),
        },
    );
    w.expect(&["alice: media candidate 0 candidate:x"]);
}

#[test]
fn frames_of_a_foreign_conversation_are_ignored() {
    let mut w = World::new();
    w.connected_call();
    let foreign = |cid: &str, from: &str, body: Body| ServerFrame::Conversation {
        cid: cid.into(),
        from: from.into(),
        body,
    };
    let bodies = || {
        vec![
            Body::Bye(Empty::default()),
            Body::Accept(wilddog_protocol::AcceptMsg::default()),
            Body::Reject(Empty::default()),
            Body::Busy(Empty::default()),
            Body::RestartIce(Empty::default()),
            Body::Offer(SdpMsg { sdp: "X".into(), ..SdpMsg::default() }),
            Body::Answer(SdpMsg { sdp: "X".into(), ..SdpMsg::default() }),
            Body::Candidate(CandidateMsg { sdp: "candidate:x".into(), ..CandidateMsg::default() }),
        ]
    };
    for body in bodies() {
        // Another cid from the right peer; the right cid from another uid.
        w.inject("alice", foreign("other", "bob", body.clone()));
        w.inject("alice", foreign("cid1", "carol", body.clone()));
        w.inject("bob", foreign("other", "alice", body.clone()));
        w.inject("bob", foreign("cid1", "carol", body));
    }
    // Server frames that are not about the call.
    w.inject(
        "alice",
        ServerFrame::Error {
            cid: Some("other".into()),
            msg: ErrorMsg { code: ErrorCode::NotParty, reason: "no".into(), refers_to: None },
        },
    );
    w.inject(
        "alice",
        ServerFrame::TelemetryAck {
            kind: wilddog_protocol::TelemetryKind::Start,
            cid: Some("cid1".into()),
            code: 0,
        },
    );
    w.expect(&[]);
    assert_eq!(w.ep("alice").state(), CallState::Connected);
    assert_eq!(w.ep("bob").state(), CallState::Connected);
}

#[test]
fn frames_out_of_order_are_ignored() {
    let mut w = World::new();
    w.call("alice", "bob", "cid1");
    w.run();
    w.take();
    let from_alice =
        |body: Body| ServerFrame::Conversation { cid: "cid1".into(), from: "alice".into(), body };
    let from_bob =
        |body: Body| ServerFrame::Conversation { cid: "cid1".into(), from: "bob".into(), body };
    // An offer before accept; an answer to a caller that has not offered; a repeated call.
    w.inject("bob", from_alice(Body::Offer(SdpMsg { sdp: "early".into(), ..SdpMsg::default() })));
    w.inject("alice", from_bob(Body::Answer(SdpMsg { sdp: "early".into(), ..SdpMsg::default() })));
    w.inject("bob", from_alice(Body::Call(CallMsg::default())));
    w.inject("alice", from_bob(Body::Offer(SdpMsg { sdp: "wrong".into(), ..SdpMsg::default() })));
    w.expect(&[]);
    // Answers the caller cannot give.
    w.input("alice", Input::Accept);
    w.input("alice", Input::Reject);
    w.expect(&[]);
    w.input("bob", Input::Accept);
    w.run();
    w.take();
    // A repeated accept does not start the media twice.
    w.inject("alice", from_bob(Body::Accept(wilddog_protocol::AcceptMsg::default())));
    w.input("bob", Input::Reject);
    w.expect(&[]);
}

#[test]
fn server_refusing_the_call_closes_it() {
    for code in [
        ErrorCode::NotParty,
        ErrorCode::UnknownConversation,
        ErrorCode::CidInUse,
        ErrorCode::TooLarge,
    ] {
        let mut w = World::new();
        w.call("alice", "bob", "cid1");
        w.take();
        w.inject(
            "alice",
            ServerFrame::Error {
                cid: Some("cid1".into()),
                msg: ErrorMsg { code, reason: "refused".into(), refers_to: Some("call".into()) },
            },
        );
        let log = w.take();
        assert_eq!(log.len(), 2, "{log:?}");
        assert!(log[0].starts_with("alice: closed refused"), "{log:?}");
        assert_eq!(log[1], "alice: state idle");
    }
}

#[test]
fn server_errors_do_not_end_a_connected_call() {
    // After a server restart the new server knows no cid: the media must go on.
    let mut w = World::new();
    w.connected_call();
    w.inject(
        "alice",
        ServerFrame::Error {
            cid: Some("cid1".into()),
            msg: ErrorMsg {
                code: ErrorCode::UnknownConversation,
                reason: "unknown".into(),
                refers_to: Some("offer".into()),
            },
        },
    );
    w.inject(
        "alice",
        ServerFrame::Error {
            cid: Some("cid1".into()),
            msg: ErrorMsg { code: ErrorCode::RateLimited, reason: "slow".into(), refers_to: None },
        },
    );
    w.expect(&[]);
    assert_eq!(w.ep("alice").state(), CallState::Connected);
}

#[test]
fn callee_takes_ice_servers_from_the_call_with_the_turn_credential() {
    let mut w = World::new();
    w.input("alice", Input::Connected { ice_servers: vec![stun(), turn()] });
    w.call("alice", "bob", "cid1");
    w.run();
    w.input("bob", Input::Accept);
    w.expect(&[
        "alice: send cid1->bob call data=hi servers=stun:127.0.0.1:3478,turn:127.0.0.1:3478",
        "alice: state calling",
        "bob: called cid1 from=alice data=hi",
        "bob: state ringing",
        "bob: send cid1->alice accept",
        "bob: media start callee servers=stun:127.0.0.1:3478,turn:127.0.0.1:3478(u:p)",
        "bob: state connecting",
    ]);
}

#[test]
fn callee_falls_back_to_its_own_ice_servers() {
    let mut w = World::new();
    w.inject(
        "bob",
        ServerFrame::Conversation {
            cid: "cid9".into(),
            from: "alice".into(),
            body: Body::Call(CallMsg {
                data: Some(serde_json::json!({"n": 1})),
                ..CallMsg::default()
            }),
        },
    );
    w.input("bob", Input::Accept);
    w.expect(&[
        "bob: called cid9 from=alice data={\"n\":1}",
        "bob: state ringing",
        "bob: send cid9->alice accept",
        "bob: media start callee servers=stun:127.0.0.1:3478",
        "bob: state connecting",
    ]);
}

#[test]
fn call_without_data_sends_none() {
    let mut w = World::new();
    w.input("alice", Input::Call { cid: "c".into(), remote_uid: "bob".into(), data: None });
    w.run();
    w.expect(&[
        "alice: send c->bob call data=- servers=stun:127.0.0.1:3478",
        "alice: state calling",
        "bob: called c from=alice data=-",
        "bob: state ringing",
    ]);
}

#[test]
fn remote_bye_while_connecting_stops_the_media() {
    let mut w = World::new();
    w.call("alice", "bob", "cid1");
    w.run();
    w.input("bob", Input::Accept);
    w.run();
    w.take();
    w.input("alice", Input::Close);
    w.run();
    w.expect(&[
        "alice: send cid1->bob bye",
        "alice: media stop",
        "alice: state idle",
        "bob: media stop",
        "bob: closed remote-hangup",
        "bob: state idle",
    ]);
}

#[test]
fn callee_can_call_again_after_a_call() {
    let mut w = World::new();
    w.connected_call();
    w.input("alice", Input::Close);
    w.run();
    w.take();
    w.call("bob", "alice", "cid2");
    w.run();
    w.expect(&[
        "bob: send cid2->alice call data=hi servers=stun:127.0.0.1:3478",
        "bob: state calling",
        "alice: called cid2 from=bob data=hi",
        "alice: state ringing",
    ]);
}

#[test]
fn error_codes_and_names_are_the_originals() {
    let table: Vec<(u32, &str)> = WilddogError::ALL.iter().map(|e| (e.code(), e.name())).collect();
    assert_eq!(
        table,
        [
            (41001, "TOKEN_EXPIRED"),
            (41002, "TOKEN_INVALID"),
            (41003, "GET_CONFIG_ERROR"),
            (41004, "CONVERSATION_CONNECT_FAILED"),
            (41005, "DEVICE_NOT_AVAILABLE"),
            (41006, "OPERATION_TIMEOUT"),
            (41007, "CONVERSATION_TIMEOUT"),
            (41008, "APPID_INVALID"),
        ]
    );
    for e in WilddogError::ALL {
        assert_eq!(WilddogError::from_code(e.code()), Some(e));
    }
    assert_eq!(WilddogError::from_code(41009), None);
    assert_eq!(WilddogError::ConnectFailed.to_string(), "41004 CONVERSATION_CONNECT_FAILED");
    let names: Vec<String> =
        [Response::Accepted, Response::Rejected, Response::Busy, Response::Timeout]
            .iter()
            .map(ToString::to_string)
            .collect();
    assert_eq!(names, ["ACCEPTED", "REJECTED", "BUSY", "TIMEOUT"]);
    assert_eq!(CallState::Connecting.to_string(), "connecting");
    assert_eq!(CloseReason::RemoteHangup.to_string(), "remote-hangup");
}

#[test]
fn default_timers_are_thirty_seconds() {
    let config = CallConfig::default();
    assert_eq!(config.call_timeout, 30 * SECOND);
    assert_eq!(config.answer_timeout, 30 * SECOND);
    assert_eq!(config.connect_timeout, 30 * SECOND);
}

#[test]
fn candidates_name_the_mid_of_the_local_description() {
    // GStreamer names its sections `video0`/`audio1`; a browser refuses a candidate whose
    // sdpMid names no section of the description, so the index is not a stand-in for it.
    let mut w = World::new();
    w.call("alice", "bob", "cid1");
    w.run();
    w.input("bob", Input::Accept);
    w.run();
    let offer = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:video0\r\n\
                 m=audio 9 UDP/TLS/RTP/SAVPF 97\r\na=mid:audio1\r\n";
    w.input("alice", Input::LocalOffer { sdp: offer.into() });
    w.wire.clear();
    w.input("alice", candidate(1, "candidate:1 1 UDP 1 127.0.0.1 5000 typ host"));
    w.input("alice", candidate(2, "candidate:2 1 UDP 1 127.0.0.1 5002 typ host"));
    let mids: Vec<Option<String>> = w
        .wire
        .drain(..)
        .filter_map(|(_, frame)| match frame {
            ClientFrame::Conversation { body: Body::Candidate(m), .. } => Some(m.sdp_mid),
            _ => None,
        })
        .collect();
    assert_eq!(mids, vec![Some("audio1".to_owned()), None]);
}

#[test]
fn the_callers_turn_entries_take_the_credential_of_the_accept() {
    let turn = |urls: &str, username: &str, credential: &str| IceServer {
        urls: Some(wilddog_protocol::Urls::One(urls.into())),
        username: Some(username.into()),
        credential: Some(credential.into()),
        ..Default::default()
    };
    let stun = IceServer {
        urls: Some(wilddog_protocol::Urls::One("stun:s:3478".into())),
        ..Default::default()
    };
    let connack = vec![
        stun.clone(),
        // Minted at the connack, a day ago: expired.
        turn("turn:ours:3478", "1000:alice", "old"),
        // A fixed entry of the server's config.
        turn("turn:other:3478", "static-user", "static-pass"),
        // Another user's REST credential (not the caller's): left alone.
        turn("turn:third:3478", "1000:someone-else", "theirs"),
    ];
    let fresh = TurnCredential { username: "90000:alice".into(), credential: "new".into() };
    let got = with_fresh_turn_credential(&connack, &fresh);
    assert_eq!(got[0], stun);
    assert_eq!(got[1], turn("turn:ours:3478", "90000:alice", "new"));
    assert_eq!(got[2], connack[2]);
    assert_eq!(got[3], connack[3]);
    // A credential not in the REST form changes nothing.
    let odd = TurnCredential { username: "alice".into(), credential: "x".into() };
    assert_eq!(with_fresh_turn_credential(&connack, &odd), connack);
}

/// A TURN entry of our server's, with a REST credential (`expiry:user`).
fn rest_turn(username: &str, credential: &str) -> IceServer {
    IceServer { username: Some(username.into()), credential: Some(credential.into()), ..turn() }
}

fn fresh(username: &str, credential: &str) -> ServerFrame {
    ServerFrame::Turn(TurnCredential { username: username.into(), credential: credential.into() })
}

#[test]
fn a_turn_frame_gives_the_callers_media_its_fresh_credential_before_the_restart() {
    let mut w = World::new();
    let expired = rest_turn("1000:alice", "old");
    w.input("alice", Input::Connected { ice_servers: vec![stun(), expired] });
    connected_call_with_transports(&mut w);
    w.inject("alice", fresh("2000:alice", "new"));
    w.expect(&["alice: media ice-servers stun:127.0.0.1:3478,turn:127.0.0.1:3478(2000:alice:new)"]);
    // The same credential again changes nothing; another user's is not ours.
    w.inject("alice", fresh("2000:alice", "new"));
    w.inject("alice", fresh("2000:bob", "theirs"));
    w.expect(&[]);
    // The restart's peer connection is made after the media got them.
    w.input("alice", Input::MediaDisconnected);
    w.expect(&["alice: media offer restart"]);
    // A later call carries them too.
    w.input("alice", Input::Close);
    w.call("alice", "carol", "cid2");
    let sent = w.take();
    assert!(
        sent.contains(
            &"alice: send cid2->carol call data=hi servers=stun:127.0.0.1:3478,\
              turn:127.0.0.1:3478(2000:alice:new)"
                .to_owned()
        ),
        "{sent:#?}"
    );
}

#[test]
fn a_turn_frame_gives_the_callees_media_its_fresh_credential() {
    let mut w = World::new();
    // As our server forwards a call: its TURN entry holds a credential minted for bob.
    let call =
        CallMsg { ice_servers: Some(vec![rest_turn("1000:bob", "old")]), ..CallMsg::default() };
    w.inject(
        "bob",
        ServerFrame::Conversation {
            cid: "cid1".into(),
            from: "alice".into(),
            body: Body::Call(call),
        },
    );
    // While it rings there is no media yet: the accept's start takes the fresh one.
    w.inject("bob", fresh("1500:bob", "ringing"));
    w.input("bob", Input::Accept);
    w.inject("bob", fresh("2000:bob", "new"));
    w.expect(&[
        "bob: called cid1 from=alice data=-",
        "bob: state ringing",
        "bob: send cid1->alice accept",
        "bob: media start callee servers=turn:127.0.0.1:3478(1500:bob:ringing)",
        "bob: state connecting",
        "bob: media ice-servers turn:127.0.0.1:3478(2000:bob:new)",
    ]);
}

#[test]
fn a_reconnects_credential_reaches_the_media_before_the_restart_after_the_frames() {
    let mut w = World::new();
    w.input("alice", Input::Connected { ice_servers: vec![rest_turn("1000:alice", "old")] });
    connected_call_with_transports(&mut w);
    // The path is still lost when the signaling comes back.
    lost_path_whose_restart_was_answered(&mut w);
    w.input("alice", Input::Disconnected);
    w.input("alice", Input::Connected { ice_servers: vec![rest_turn("3000:alice", "reconnect")] });
    assert_eq!(
        take_short(&mut w),
        [
            r#"alice: send {"type":"resume","cid":"cid1","to":"bob","msg":{"role":"caller"}}"#,
            "alice: media ice-servers turn:127.0.0.1:3478(3000:alice:reconnect)",
            "alice: media offer restart",
        ]
    );
}
