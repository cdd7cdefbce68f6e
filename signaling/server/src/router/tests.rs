use std::time::{Duration, Instant};

use serde_json::json;
use wilddog_protocol::{
    Body, CallMsg, CandidateMsg, ClientFrame, Connect, Empty, ErrorCode, SdpMsg, ServerFrame,
    TelemetryKind, TurnCredential, UnknownFrame,
};

use super::*;
use crate::router::{Adoptee, Effect, NodeId};

const APP: &str = "app";

const GRACE: Duration = Duration::from_secs(10);

fn now() -> Instant {
    Instant::now()
}

fn router() -> Router {
    Router::new(TurnCredential { username: "tu".into(), credential: "tc".into() }, GRACE)
}

/// A deliberate close (or a policy close): conversations end at once.
fn close(r: &mut Router, conn: ConnId) -> Outbox {
    let (out, until) = r.disconnect(conn, Departure::Closed, Instant::now());
    assert_eq!(until, None, "a deliberate close keeps nothing");
    out
}

/// A lost connection at `at`: returns what is sent at once and when its grace ends.
fn lose(r: &mut Router, conn: ConnId, at: Instant) -> (Outbox, Option<Instant>) {
    r.disconnect(conn, Departure::Lost, at)
}

fn frame(cid: &str, to: &str, body: Body) -> ClientFrame {
    ClientFrame::Conversation { cid: cid.into(), to: to.into(), body }
}

fn call(cid: &str, to: &str) -> ClientFrame {
    frame(cid, to, Body::Call(CallMsg { data: Some(json!("hi")), ..Default::default() }))
}

fn empty() -> Empty {
    Empty::default()
}

fn offer() -> Body {
    Body::Offer(SdpMsg { sdp: "v=0 offer".into(), ..Default::default() })
}

fn answer() -> Body {
    Body::Answer(SdpMsg { sdp: "v=0 answer".into(), ..Default::default() })
}

fn cand(n: u32) -> Body {
    Body::Candidate(CandidateMsg {
        sdp_mline_index: Some(n),
        sdp_mid: Some("0".into()),
        sdp: format!("candidate:{n}"),
        ..Default::default()
    })
}

/// Asserts `out` is exactly one relayed frame.
fn relayed(out: &Outbox) -> (ConnId, &str, &str, &Body) {
    assert_eq!(out.len(), 1, "{out:?}");
    match &out[0] {
        (to, ServerFrame::Conversation { cid, from, body }) => (*to, cid, from, body),
        other => panic!("not a relayed frame: {other:?}"),
    }
}

fn error_code(out: &Outbox, conn: ConnId) -> ErrorCode {
    assert_eq!(out.len(), 1, "{out:?}");
    match &out[0] {
        (to, ServerFrame::Error { msg, .. }) if *to == conn => msg.code,
        other => panic!("not an error to {conn}: {other:?}"),
    }
}

/// alice = 1, bob = 2, carol = 3.
fn three() -> Router {
    let mut r = router();
    r.connect(1, APP, "alice");
    r.connect(2, APP, "bob");
    r.connect(3, APP, "carol");
    r
}

#[test]
fn accepted_lifecycle_relays_everything_with_from_stamped() {
    let mut r = three();
    let out = r.handle(1, call("c1", "bob"), now());
    let (to, cid, from, body) = relayed(&out);
    assert_eq!((to, cid, from), (2, "c1", "alice"));
    let Body::Call(msg) = body else { panic!() };
    assert_eq!(msg.data_text().as_deref(), Some("hi"));
    assert_eq!(
        msg.turn_credential,
        Some(TurnCredential { username: "tu".into(), credential: "tc".into() })
    );
    assert_eq!(r.conversation_count(), 1);

    let out = r.handle(2, frame("c1", "alice", Body::Accept(Default::default())), now());
    assert_eq!(relayed(&out).0, 1);
    let out = r.handle(1, frame("c1", "bob", offer()), now());
    assert_eq!(relayed(&out), (2, "c1", "alice", &offer()));
    let out = r.handle(2, frame("c1", "alice", answer()), now());
    assert_eq!(relayed(&out), (1, "c1", "bob", &answer()));
    let out = r.handle(1, frame("c1", "bob", cand(0)), now());
    assert_eq!(relayed(&out), (2, "c1", "alice", &cand(0)));
    let out = r.handle(2, frame("c1", "alice", cand(1)), now());
    assert_eq!(relayed(&out), (1, "c1", "bob", &cand(1)));
    let out = r.handle(2, frame("c1", "alice", Body::RestartIce(empty())), now());
    assert_eq!(relayed(&out).0, 1);
    let out = r.handle(1, frame("c1", "bob", Body::Bye(empty())), now());
    assert_eq!(relayed(&out), (2, "c1", "alice", &Body::Bye(empty())));
    assert_eq!(r.conversation_count(), 0);
    // Ended: further frames are refused.
    let out = r.handle(2, frame("c1", "alice", cand(2)), now());
    assert_eq!(error_code(&out, 2), ErrorCode::UnknownConversation);
}

#[test]
fn reject_and_busy_end_the_conversation() {
    let mut r = three();
    r.handle(1, call("c1", "bob"), now());
    let out = r.handle(2, frame("c1", "alice", Body::Reject(empty())), now());
    assert_eq!(relayed(&out), (1, "c1", "bob", &Body::Reject(empty())));
    assert_eq!(r.conversation_count(), 0);

    r.handle(1, call("c2", "bob"), now());
    let out = r.handle(2, frame("c2", "alice", Body::Busy(empty())), now());
    assert_eq!(relayed(&out), (1, "c2", "bob", &Body::Busy(empty())));
    assert_eq!(r.conversation_count(), 0);
    // The cid is free again.
    let out = r.handle(1, call("c2", "bob"), now());
    assert_eq!(relayed(&out).0, 2);
}

#[test]
fn caller_cancels_before_answer() {
    let mut r = three();
    r.handle(1, call("c1", "bob"), now());
    let out = r.handle(1, frame("c1", "bob", Body::Bye(empty())), now());
    assert_eq!(relayed(&out), (2, "c1", "alice", &Body::Bye(empty())));
    assert_eq!(r.conversation_count(), 0);
    let out = r.handle(2, frame("c1", "alice", Body::Accept(Default::default())), now());
    assert_eq!(error_code(&out, 2), ErrorCode::UnknownConversation);
}

#[test]
fn disconnect_mid_call_sends_bye_to_the_other_party() {
    let mut r = three();
    r.handle(1, call("c1", "bob"), now());
    r.handle(2, frame("c1", "alice", Body::Accept(Default::default())), now());
    let out = close(&mut r, 2);
    assert_eq!(relayed(&out), (1, "c1", "bob", &Body::Bye(empty())));
    assert_eq!(r.conversation_count(), 0);
    assert!(!r.is_connected(2));
    // Caller drops while ringing: the callee gets bye.
    r.handle(1, call("c2", "carol"), now());
    let out = close(&mut r, 1);
    assert_eq!(relayed(&out), (3, "c2", "alice", &Body::Bye(empty())));
    assert_eq!(r.conversation_count(), 0);
    assert!(close(&mut r, 1).is_empty(), "a second disconnect is a no-op");
}

#[test]
fn several_clients_of_one_uid_ring_and_first_answer_decides() {
    let mut r = three();
    r.connect(4, APP, "bob");
    r.connect(5, APP, "bob");
    let out = r.handle(1, call("c1", "bob"), now());
    let mut rung: Vec<ConnId> = out.iter().map(|(c, _)| *c).collect();
    rung.sort();
    assert_eq!(rung, vec![2, 4, 5]);
    let out = r.handle(4, frame("c1", "alice", Body::Accept(Default::default())), now());
    assert_eq!(out.len(), 3, "{out:?}");
    assert!(
        matches!(&out[0], (1, ServerFrame::Conversation { body: Body::Accept(_), from, .. }) if from == "bob")
    );
    let mut byes: Vec<ConnId> = out[1..]
        .iter()
        .map(|(c, f)| {
            assert!(matches!(f, ServerFrame::Conversation { body: Body::Bye(_), from, .. } if from == "alice"));
            *c
        })
        .collect();
    byes.sort();
    assert_eq!(byes, vec![2, 5]);
    // The losers are no longer parties.
    let out = r.handle(2, frame("c1", "alice", Body::Accept(Default::default())), now());
    assert_eq!(error_code(&out, 2), ErrorCode::NotParty);
    let out = r.handle(1, frame("c1", "bob", offer()), now());
    assert_eq!(relayed(&out).0, 4);
    // Losing clients disconnecting does not disturb the live conversation.
    assert!(close(&mut r, 2).is_empty());
    assert_eq!(r.conversation_count(), 1);

    // Reject from one of several also decides.
    r.handle(3, call("c2", "bob"), now());
    let out = r.handle(5, frame("c2", "carol", Body::Reject(empty())), now());
    assert_eq!(out.len(), 2, "{out:?}");
    assert!(matches!(&out[0], (3, ServerFrame::Conversation { body: Body::Reject(_), .. })));
    assert!(matches!(&out[1], (4, ServerFrame::Conversation { body: Body::Bye(_), .. })));
}

#[test]
fn busy_from_one_of_several_keeps_ringing_the_others() {
    let mut r = three();
    r.connect(4, APP, "bob");
    r.handle(1, call("c1", "bob"), now());
    assert!(r.handle(2, frame("c1", "alice", Body::Busy(empty())), now()).is_empty());
    assert_eq!(r.conversation_count(), 1);
    let out = r.handle(4, frame("c1", "alice", Body::Busy(empty())), now());
    assert_eq!(relayed(&out), (1, "c1", "bob", &Body::Busy(empty())));
    assert_eq!(r.conversation_count(), 0);
}

#[test]
fn third_party_and_wrong_to_are_refused() {
    let mut r = three();
    r.handle(1, call("c1", "bob"), now());
    r.handle(2, frame("c1", "alice", Body::Accept(Default::default())), now());
    // carol is no party, whatever `to` she names.
    for to in ["alice", "bob"] {
        let out = r.handle(3, frame("c1", to, cand(0)), now());
        assert_eq!(error_code(&out, 3), ErrorCode::NotParty);
        let out = r.handle(3, frame("c1", to, Body::Bye(empty())), now());
        assert_eq!(error_code(&out, 3), ErrorCode::NotParty);
    }
    // A party naming someone else as `to`.
    let out = r.handle(1, frame("c1", "carol", cand(0)), now());
    assert_eq!(error_code(&out, 1), ErrorCode::NotParty);
    assert_eq!(r.conversation_count(), 1);
    // Another connection of the caller's own uid is not a party either, once the party's
    // connection answers the probe.
    r.connect(6, APP, "alice");
    assert!(r.handle(6, frame("c1", "bob", cand(0)), now()).is_empty());
    assert_eq!(r.take_effects(), vec![Effect::Probe(1)]);
    let out = r.probe_result(1, true, now());
    assert_eq!(error_code(&out, 6), ErrorCode::NotParty);
    assert!(r.take_effects().is_empty());
}

#[test]
fn cid_in_use_is_refused() {
    let mut r = three();
    r.handle(1, call("c1", "bob"), now());
    let out = r.handle(3, call("c1", "bob"), now());
    assert_eq!(error_code(&out, 3), ErrorCode::CidInUse);
    let out = r.handle(1, call("c1", "carol"), now());
    assert_eq!(error_code(&out, 1), ErrorCode::CidInUse);
}

#[test]
fn cids_are_per_app() {
    let mut r = three();
    r.connect(10, "other", "x");
    r.connect(11, "other", "y");
    r.handle(1, call("c1", "bob"), now());
    let out = r.handle(10, call("c1", "y"), now());
    assert_eq!(relayed(&out), (11, "c1", "x", out_body(&out)));
}

fn out_body(out: &Outbox) -> &Body {
    match &out[0].1 {
        ServerFrame::Conversation { body, .. } => body,
        _ => panic!(),
    }
}

#[test]
fn call_to_absent_uid_or_other_app_is_unreachable() {
    let mut r = three();
    r.connect(10, "other", "dave");
    for to in ["nobody", "dave", "alice"] {
        let out = r.handle(1, call("c1", to), now());
        assert_eq!(
            out,
            vec![(1, ServerFrame::Unreachable { cid: "c1".into(), from: to.into() })],
            "{to}"
        );
    }
    assert_eq!(r.conversation_count(), 0);
}

#[test]
fn out_of_order_frames_are_refused() {
    let mut r = three();
    r.handle(1, call("c1", "bob"), now());
    let out = r.handle(1, frame("c1", "bob", offer()), now());
    assert_eq!(error_code(&out, 1), ErrorCode::OutOfOrder);
    let out = r.handle(2, frame("c1", "alice", cand(0)), now());
    assert_eq!(error_code(&out, 2), ErrorCode::OutOfOrder);
    let out = r.handle(1, frame("c1", "bob", Body::Accept(Default::default())), now());
    assert_eq!(error_code(&out, 1), ErrorCode::OutOfOrder);
    r.handle(2, frame("c1", "alice", Body::Accept(Default::default())), now());
    let out = r.handle(2, frame("c1", "alice", Body::Accept(Default::default())), now());
    assert_eq!(error_code(&out, 2), ErrorCode::OutOfOrder);
    assert_eq!(r.conversation_count(), 1);
}

#[test]
fn unauthenticated_connections_get_not_connected() {
    let mut r = three();
    let out = r.handle(99, call("c1", "bob"), now());
    assert_eq!(error_code(&out, 99), ErrorCode::NotConnected);
    assert!(r.handle(99, ClientFrame::Heartbeat(3), now()).is_empty());
    let out = r.handle(1, ClientFrame::Connect(Connect::default()), now());
    assert_eq!(error_code(&out, 1), ErrorCode::NotConnected);
}

#[test]
fn telemetry_is_acknowledged_heartbeat_and_quality_are_silent() {
    let mut r = three();
    let out = r.handle(
        1,
        ClientFrame::Telemetry {
            kind: TelemetryKind::Start,
            cid: Some("c".into()),
            msg: json!({}),
        },
        now(),
    );
    assert_eq!(
        out,
        vec![(
            1,
            ServerFrame::TelemetryAck {
                kind: TelemetryKind::Start,
                cid: Some("c".into()),
                code: 0
            }
        )]
    );
    let quality =
        ClientFrame::Telemetry { kind: TelemetryKind::Quality, cid: None, msg: json!({}) };
    assert!(r.handle(1, quality, now()).is_empty());
    assert!(r.handle(1, ClientFrame::Heartbeat(7), now()).is_empty());
    let unknown = ClientFrame::Unknown(UnknownFrame {
        kind: "frobnicate".into(),
        cid: None,
        peer: None,
        msg: json!({}),
    });
    assert_eq!(error_code(&r.handle(1, unknown, now()), 1), ErrorCode::UnknownType);
}

#[test]
fn conversations_per_connection_are_bounded() {
    let mut r = three();
    for i in 0..MAX_CONVERSATIONS_PER_CONNECTION {
        let out = r.handle(1, call(&format!("c{i}"), "bob"), now());
        assert_eq!(relayed(&out).0, 2);
    }
    let out = r.handle(1, call("one-more", "bob"), now());
    assert_eq!(error_code(&out, 1), ErrorCode::RateLimited);
    // Disconnecting bob ends them all, each with a bye to alice.
    let out = close(&mut r, 2);
    assert_eq!(out.len(), MAX_CONVERSATIONS_PER_CONNECTION);
    assert_eq!(r.conversation_count(), 0);
}

#[test]
fn state_is_released_after_everyone_leaves() {
    let mut r = three();
    r.handle(1, call("c1", "bob"), now());
    r.handle(2, frame("c1", "alice", Body::Accept(Default::default())), now());
    for c in [1, 2, 3] {
        close(&mut r, c);
    }
    assert_eq!(r.connection_count(), 0);
    assert_eq!(r.conversation_count(), 0);
    assert!(r.apps.is_empty(), "{:?}", r.apps);
}

// Reconnect grace.

fn bye_frame(to: ConnId, cid: &str, from: &str) -> (ConnId, ServerFrame) {
    (to, ServerFrame::Conversation { cid: cid.into(), from: from.into(), body: Body::Bye(empty()) })
}

fn restart_offer() -> Body {
    Body::Offer(SdpMsg {
        sdp: "v=0 restart".into(),
        restart_id: Some(json!("r1")),
        ..Default::default()
    })
}

/// alice (1) called bob (2), bob accepted: a live conversation `c1`.
fn live() -> Router {
    let mut r = three();
    r.handle(1, call("c1", "bob"), now());
    r.handle(2, frame("c1", "alice", Body::Accept(Default::default())), now());
    r
}

#[test]
fn lost_caller_reconnects_within_grace_and_frames_flow_both_ways() {
    let mut r = live();
    let t0 = Instant::now();
    let (out, until) = lose(&mut r, 1, t0);
    assert!(out.is_empty(), "bob hears nothing yet: {out:?}");
    assert_eq!(until, Some(t0 + GRACE));
    assert_eq!(r.next_expiry(), Some(t0 + GRACE));
    assert!(!r.is_connected(1));
    assert_eq!((r.away_count(), r.conversation_count()), (1, 1));
    // bob's frames meanwhile are kept, not sent to the dead connection.
    assert!(r.handle(2, frame("c1", "alice", cand(7)), now()).is_empty());
    assert!(r.expire(t0 + GRACE / 2).is_empty());
    // alice is back on a new connection: she gets what was kept, and the conversation.
    let out = r.connect(4, APP, "alice");
    assert_eq!(relayed(&out), (4, "c1", "bob", &cand(7)));
    assert_eq!((r.away_count(), r.next_expiry()), (0, None));
    let out = r.handle(4, frame("c1", "bob", restart_offer()), now());
    assert_eq!(relayed(&out), (2, "c1", "alice", &restart_offer()));
    let out = r.handle(2, frame("c1", "alice", answer()), now());
    assert_eq!(relayed(&out), (4, "c1", "bob", &answer()));
    let out = r.handle(2, frame("c1", "alice", cand(1)), now());
    assert_eq!(relayed(&out).0, 4);
    // The grace's end changes nothing now.
    assert!(r.expire(t0 + GRACE * 2).is_empty());
    assert_eq!(r.conversation_count(), 1);
    // The new connection is a full party: its bye ends the conversation.
    let out = r.handle(4, frame("c1", "bob", Body::Bye(empty())), now());
    assert_eq!(out, vec![bye_frame(2, "c1", "alice")]);
    assert_eq!(r.conversation_count(), 0);
}

#[test]
fn lost_callee_reconnects_and_asks_for_an_ice_restart() {
    let mut r = live();
    let t0 = Instant::now();
    assert!(lose(&mut r, 2, t0).0.is_empty());
    let out = r.connect(5, APP, "bob");
    assert!(out.is_empty(), "nothing was kept: {out:?}");
    let out = r.handle(5, frame("c1", "alice", Body::RestartIce(empty())), now());
    assert_eq!(relayed(&out), (1, "c1", "bob", &Body::RestartIce(empty())));
    let out = r.handle(1, frame("c1", "bob", restart_offer()), now());
    assert_eq!(relayed(&out), (5, "c1", "alice", &restart_offer()));
    let out = r.handle(5, frame("c1", "alice", answer()), now());
    assert_eq!(relayed(&out), (1, "c1", "bob", &answer()));
    // The old connection is nobody now.
    assert!(!r.is_connected(2));
    assert!(r.expire(t0 + GRACE).is_empty());
}

#[test]
fn grace_expiry_sends_bye_to_the_peer_exactly_once() {
    let mut r = live();
    let t0 = Instant::now();
    lose(&mut r, 2, t0);
    r.handle(1, frame("c1", "bob", cand(0)), now());
    assert!(r.expire(t0 + GRACE - Duration::from_millis(1)).is_empty());
    assert_eq!(r.expire(t0 + GRACE), vec![bye_frame(1, "c1", "bob")]);
    assert!(r.expire(t0 + GRACE).is_empty());
    assert!(r.expire(t0 + GRACE * 3).is_empty());
    assert_eq!((r.conversation_count(), r.away_count(), r.next_expiry()), (0, 0, None));
    let out = r.handle(1, frame("c1", "bob", cand(1)), now());
    assert_eq!(error_code(&out, 1), ErrorCode::UnknownConversation);
    // bob back too late: nothing is kept for him, and the cid is gone.
    assert!(r.connect(5, APP, "bob").is_empty());
    let out = r.handle(5, frame("c1", "alice", Body::RestartIce(empty())), now());
    assert_eq!(error_code(&out, 5), ErrorCode::UnknownConversation);
}

#[test]
fn a_deliberate_close_ends_live_calls_at_once() {
    let mut r = live();
    assert_eq!(close(&mut r, 2), vec![bye_frame(1, "c1", "bob")]);
    assert_eq!((r.conversation_count(), r.away_count()), (0, 0));
    // bob's new connection inherits nothing.
    assert!(r.connect(5, APP, "bob").is_empty());
    let out = r.handle(5, frame("c1", "alice", Body::RestartIce(empty())), now());
    assert_eq!(error_code(&out, 5), ErrorCode::UnknownConversation);
}

#[test]
fn zero_grace_is_the_immediate_behaviour() {
    let mut r = Router::new(TurnCredential::default(), Duration::ZERO);
    r.connect(1, APP, "alice");
    r.connect(2, APP, "bob");
    r.handle(1, call("c1", "bob"), now());
    r.handle(2, frame("c1", "alice", Body::Accept(Default::default())), now());
    let (out, until) = lose(&mut r, 2, Instant::now());
    assert_eq!((out, until), (vec![bye_frame(1, "c1", "bob")], None));
    assert_eq!((r.conversation_count(), r.away_count()), (0, 0));
}

#[test]
fn ringing_conversations_end_at_once_even_when_lost() {
    let mut r = three();
    let t0 = Instant::now();
    r.handle(1, call("c1", "bob"), now());
    assert_eq!(lose(&mut r, 1, t0), (vec![bye_frame(2, "c1", "alice")], None));
    r.handle(3, call("c2", "bob"), now());
    assert_eq!(lose(&mut r, 2, t0), (vec![bye_frame(3, "c2", "bob")], None));
    assert_eq!((r.conversation_count(), r.away_count()), (0, 0));
}

#[test]
fn only_live_conversations_of_a_lost_connection_are_kept() {
    let mut r = live();
    // alice also rings carol when her connection goes.
    r.handle(1, call("c2", "carol"), now());
    let t0 = Instant::now();
    let (out, until) = lose(&mut r, 1, t0);
    assert_eq!(out, vec![bye_frame(3, "c2", "alice")]);
    assert_eq!(until, Some(t0 + GRACE));
    assert_eq!(r.conversation_count(), 1);
}

#[test]
fn peer_hangs_up_while_the_other_is_away_and_the_returning_client_gets_bye() {
    let mut r = live();
    let t0 = Instant::now();
    lose(&mut r, 1, t0);
    assert!(r.handle(2, frame("c1", "alice", cand(0)), now()).is_empty());
    // bob hangs up: nothing goes to the dead connection, the conversation is over.
    assert!(r.handle(2, frame("c1", "alice", Body::Bye(empty())), now()).is_empty());
    assert_eq!(r.conversation_count(), 0);
    let out = r.handle(2, frame("c1", "alice", cand(1)), now());
    assert_eq!(error_code(&out, 2), ErrorCode::UnknownConversation);
    // alice, back within the grace, learns it ended (the kept candidate is moot, dropped).
    assert_eq!(r.connect(4, APP, "alice"), vec![bye_frame(4, "c1", "bob")]);
    let out = r.handle(4, frame("c1", "bob", restart_offer()), now());
    assert_eq!(error_code(&out, 4), ErrorCode::UnknownConversation);
    // bob gets no second bye when the grace would have ended.
    assert!(r.expire(t0 + GRACE).is_empty());
}

#[test]
fn peer_leaving_while_the_other_is_away_ends_the_call_once() {
    let mut r = live();
    let t0 = Instant::now();
    lose(&mut r, 1, t0);
    // bob closes on purpose: the bye is for alice, who is away: kept for her.
    assert!(close(&mut r, 2).is_empty());
    assert_eq!(r.conversation_count(), 0);
    close(&mut r, 3);
    assert!(r.expire(t0 + GRACE).is_empty(), "the grace ends silently");
    assert_eq!(r.away_count(), 0);
    assert!(r.apps.is_empty(), "{:?}", r.apps);
}

#[test]
fn both_parties_lost_the_first_to_expire_leaves_a_bye_for_the_other() {
    let mut r = live();
    let t0 = Instant::now();
    lose(&mut r, 1, t0);
    let (_, bob_until) = lose(&mut r, 2, t0 + Duration::from_secs(1));
    assert_eq!(bob_until, Some(t0 + Duration::from_secs(1) + GRACE));
    assert_eq!(r.next_expiry(), Some(t0 + GRACE));
    assert!(r.expire(t0 + GRACE).is_empty(), "bob is away: his bye is kept");
    assert_eq!(r.conversation_count(), 0);
    assert_eq!(r.next_expiry(), bob_until);
    assert_eq!(r.connect(5, APP, "bob"), vec![bye_frame(5, "c1", "alice")]);
    assert!(r.expire(t0 + GRACE * 2).is_empty());
    assert_eq!(r.away_count(), 0);
}

#[test]
fn both_parties_lost_both_come_back() {
    let mut r = live();
    let t0 = Instant::now();
    lose(&mut r, 1, t0);
    lose(&mut r, 2, t0);
    assert!(r.connect(4, APP, "alice").is_empty());
    // bob is still away: alice's offer is kept for him.
    assert!(r.handle(4, frame("c1", "bob", restart_offer()), now()).is_empty());
    let out = r.connect(5, APP, "bob");
    assert_eq!(relayed(&out), (5, "c1", "alice", &restart_offer()));
    let out = r.handle(5, frame("c1", "alice", answer()), now());
    assert_eq!(relayed(&out), (4, "c1", "bob", &answer()));
    assert!(r.expire(t0 + GRACE).is_empty());
    assert_eq!(r.conversation_count(), 1);
}

#[test]
fn frames_kept_for_an_away_party_are_bounded_oldest_dropped() {
    let mut r = live();
    lose(&mut r, 2, Instant::now());
    let n = AWAY_QUEUE_FRAMES as u32 + 8;
    for i in 0..n {
        assert!(r.handle(1, frame("c1", "bob", cand(i)), now()).is_empty());
    }
    let out = r.connect(5, APP, "bob");
    assert_eq!(out.len(), AWAY_QUEUE_FRAMES);
    for (i, (to, f)) in out.iter().enumerate() {
        let ServerFrame::Conversation { body, .. } = f else { panic!("{f:?}") };
        assert_eq!((*to, body), (5, &cand(8 + i as u32)));
    }
}

#[test]
fn calls_to_an_away_uid_ring_only_its_live_connections() {
    let mut r = live();
    lose(&mut r, 2, Instant::now());
    let out = r.handle(3, call("c2", "bob"), now());
    assert_eq!(out, vec![(3, ServerFrame::Unreachable { cid: "c2".into(), from: "bob".into() })]);
    r.connect(5, APP, "bob");
    let out = r.handle(3, call("c2", "bob"), now());
    assert_eq!(relayed(&out).0, 5);
}

#[test]
fn multi_device_the_device_that_speaks_on_the_cid_takes_it() {
    let mut r = live();
    r.connect(4, APP, "bob"); // bob's idle second device
    let t0 = Instant::now();
    // A network outage: both of bob's devices drop; the idle one comes back first.
    lose(&mut r, 2, t0);
    assert_eq!(lose(&mut r, 4, t0), (vec![], None), "nothing to keep for an idle device");
    r.handle(1, frame("c1", "bob", cand(0)), now());
    let out = r.connect(5, APP, "bob");
    assert_eq!(relayed(&out), (5, "c1", "alice", &cand(0)), "the first back gets c1");
    // The device that had the call comes back and speaks on c1: it takes the call over.
    r.connect(6, APP, "bob");
    let out = r.handle(6, frame("c1", "alice", Body::RestartIce(empty())), now());
    assert_eq!(relayed(&out), (1, "c1", "bob", &Body::RestartIce(empty())));
    let out = r.handle(1, frame("c1", "bob", restart_offer()), now());
    assert_eq!(relayed(&out).0, 6);
    // The other device is no party any more; and 6, having spoken, is displaced only if it
    // does not answer a probe.
    assert!(r.handle(5, frame("c1", "alice", cand(1)), now()).is_empty());
    r.connect(7, APP, "bob");
    assert!(r.handle(7, frame("c1", "alice", cand(1)), now()).is_empty());
    assert_eq!(r.take_effects(), vec![Effect::Probe(6)]);
    let out = r.probe_result(6, true, now());
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(error_code(&out[..1].to_vec(), 5), ErrorCode::NotParty);
    assert_eq!(error_code(&out[1..].to_vec(), 7), ErrorCode::NotParty);
    assert!(r.expire(t0 + GRACE).is_empty());
    assert_eq!(r.conversation_count(), 1);
}

#[test]
fn a_device_that_reconnected_before_the_drop_was_noticed_claims_the_away_call() {
    let mut r = live();
    // bob's client reconnected (4) before the server saw its old connection (2) die.
    r.connect(4, APP, "bob");
    let t0 = Instant::now();
    lose(&mut r, 2, t0);
    r.handle(1, frame("c1", "bob", cand(0)), now());
    // Its first frame on c1 takes the call over, and brings what was kept for it.
    let out = r.handle(4, frame("c1", "alice", Body::RestartIce(empty())), now());
    assert_eq!(
        out,
        vec![
            (
                4,
                ServerFrame::Conversation { cid: "c1".into(), from: "alice".into(), body: cand(0) }
            ),
            (
                1,
                ServerFrame::Conversation {
                    cid: "c1".into(),
                    from: "bob".into(),
                    body: Body::RestartIce(empty())
                }
            ),
        ]
    );
    let out = r.handle(1, frame("c1", "bob", restart_offer()), now());
    assert_eq!(relayed(&out).0, 4);
    // The grace of the old connection ends without a bye.
    assert!(r.expire(t0 + GRACE).is_empty());
    assert_eq!(r.conversation_count(), 1);
}

#[test]
fn nobody_else_may_claim_an_away_party() {
    let mut r = live();
    lose(&mut r, 2, Instant::now());
    // Another uid, whatever `to` it names.
    for to in ["alice", "bob"] {
        let out = r.handle(3, frame("c1", to, cand(0)), now());
        assert_eq!(error_code(&out, 3), ErrorCode::NotParty);
    }
    // Another device of the other party's uid: alice is here (she answers the probe).
    r.connect(8, APP, "alice");
    assert!(r.handle(8, frame("c1", "bob", cand(0)), now()).is_empty());
    assert_eq!(r.take_effects(), vec![Effect::Probe(1)]);
    let out = r.probe_result(1, true, now());
    assert_eq!(error_code(&out, 8), ErrorCode::NotParty);
    // Another app's bob.
    r.connect(9, "other", "bob");
    let out = r.handle(9, frame("c1", "alice", cand(0)), now());
    assert_eq!(error_code(&out, 9), ErrorCode::UnknownConversation);
    // The call itself is intact.
    let out = r.connect(5, APP, "bob");
    assert!(out.is_empty(), "refused frames are not kept: {out:?}");
    let out = r.handle(1, frame("c1", "bob", cand(2)), now());
    assert_eq!(relayed(&out).0, 5);
}

#[test]
fn state_is_released_after_graces_end() {
    let mut r = live();
    let t0 = Instant::now();
    lose(&mut r, 1, t0);
    lose(&mut r, 2, t0);
    close(&mut r, 3);
    assert_eq!(r.away_count(), 2);
    assert!(r.expire(t0 + GRACE).is_empty());
    assert_eq!((r.connection_count(), r.conversation_count(), r.away_count()), (0, 0, 0));
    assert!(r.apps.is_empty(), "{:?}", r.apps);
}

// Service endpoints.

/// bob serves with two service connections (4, 5) and has a plain one (6).
fn pool() -> Router {
    let mut r = three();
    close(&mut r, 2);
    r.connect_with(4, APP, "bob", true);
    r.connect_with(5, APP, "bob", true);
    r.connect(6, APP, "bob");
    r
}

fn busy_frame(to: ConnId, cid: &str, from: &str) -> (ConnId, ServerFrame) {
    (
        to,
        ServerFrame::Conversation { cid: cid.into(), from: from.into(), body: Body::Busy(empty()) },
    )
}

#[test]
fn a_call_to_a_service_uid_rings_one_free_endpoint_least_recently_used() {
    let mut r = pool();
    let out = r.handle(1, call("c1", "bob"), now());
    assert_eq!(relayed(&out).0, 4, "one endpoint, the first connected: {out:?}");
    // 4 is busy (ringing): the next call rings 5 only.
    let out = r.handle(3, call("c2", "bob"), now());
    assert_eq!(relayed(&out).0, 5);
    // Both busy: the caller gets busy from bob at once, and no conversation is made.
    r.connect(7, APP, "dave");
    let out = r.handle(7, call("c3", "bob"), now());
    assert_eq!(out, vec![busy_frame(7, "c3", "bob")]);
    assert_eq!(r.conversation_count(), 2);
    let out = r.handle(7, frame("c3", "bob", Body::Bye(empty())), now());
    assert_eq!(error_code(&out, 7), ErrorCode::UnknownConversation);
    // 5 rejects (slot freed), 4 accepts and hangs up later.
    r.handle(5, frame("c2", "carol", Body::Reject(empty())), now());
    let out = r.handle(7, call("c4", "bob"), now());
    assert_eq!(relayed(&out).0, 5, "5 is free again");
    r.handle(4, frame("c1", "alice", Body::Accept(Default::default())), now());
    r.handle(1, frame("c1", "bob", Body::Bye(empty())), now());
    // 4 is free and rung longest ago.
    let out = r.handle(3, call("c5", "bob"), now());
    assert_eq!(relayed(&out).0, 4);
}

#[test]
fn least_recently_used_among_free_endpoints() {
    let mut r = pool();
    r.connect_with(8, APP, "bob", true);
    for (i, expected) in [4, 5, 8, 4, 5, 8].into_iter().enumerate() {
        let cid = format!("c{i}");
        let out = r.handle(1, call(&cid, "bob"), now());
        assert_eq!(relayed(&out).0, expected, "call {i}");
        r.handle(expected, frame(&cid, "alice", Body::Reject(empty())), now());
    }
}

#[test]
fn a_service_slot_is_freed_however_the_conversation_ends() {
    let mut r = three();
    close(&mut r, 2);
    r.connect_with(4, APP, "bob", true);
    let t0 = Instant::now();
    let live = |r: &mut Router, cid: &str| {
        let out = r.handle(1, call(cid, "bob"), t0);
        assert_eq!(relayed(&out).0, 4, "{cid}");
        assert_eq!(r.handle(3, call("probe", "bob"), t0), vec![busy_frame(3, "probe", "bob")]);
        r.handle(4, frame(cid, "alice", Body::Accept(Default::default())), t0);
    };
    // bye from either side
    live(&mut r, "a");
    r.handle(4, frame("a", "alice", Body::Bye(empty())), t0);
    live(&mut r, "b");
    r.handle(1, frame("b", "bob", Body::Bye(empty())), t0);
    // a busy from the endpoint itself
    r.handle(1, call("c", "bob"), t0);
    r.handle(4, frame("c", "alice", Body::Busy(empty())), t0);
    // the caller cancels while ringing
    r.handle(1, call("d", "bob"), t0);
    r.handle(1, frame("d", "bob", Body::Bye(empty())), t0);
    // the caller's connection closes
    live(&mut r, "e");
    close(&mut r, 1);
    r.connect(1, APP, "alice");
    // the caller's connection is lost and never comes back: freed at the grace's end
    live(&mut r, "f");
    lose(&mut r, 1, t0);
    assert_eq!(r.handle(3, call("g", "bob"), t0), vec![busy_frame(3, "g", "bob")]);
    assert_eq!(r.expire(t0 + GRACE), vec![bye_frame(4, "f", "alice")]);
    let out = r.handle(3, call("h", "bob"), t0);
    assert_eq!(relayed(&out).0, 4);
}

#[test]
fn a_lost_service_endpoint_keeps_its_call_and_stays_busy_when_back() {
    let mut r = three();
    close(&mut r, 2);
    r.connect_with(4, APP, "bob", true);
    r.handle(1, call("c1", "bob"), now());
    r.handle(4, frame("c1", "alice", Body::Accept(Default::default())), now());
    lose(&mut r, 4, now());
    // No service connection registered: nobody to ring.
    let out = r.handle(3, call("c2", "bob"), now());
    assert_eq!(out, vec![(3, ServerFrame::Unreachable { cid: "c2".into(), from: "bob".into() })]);
    r.connect_with(5, APP, "bob", true);
    assert_eq!(r.handle(3, call("c3", "bob"), now()), vec![busy_frame(3, "c3", "bob")]);
    let out = r.handle(1, frame("c1", "bob", cand(0)), now());
    assert_eq!(relayed(&out).0, 5);
}

#[test]
fn a_service_endpoint_does_not_ring_for_its_own_uid_calling() {
    let mut r = pool();
    // bob's plain connection calls bob: the pool answers, never the caller itself.
    let out = r.handle(6, call("c1", "bob"), now());
    assert_eq!(relayed(&out).0, 4);
    // A service endpoint calling out is busy for incoming calls.
    let out = r.handle(5, call("c2", "alice"), now());
    assert_eq!(relayed(&out).0, 1);
    assert_eq!(r.handle(3, call("c3", "bob"), now()), vec![busy_frame(3, "c3", "bob")]);
}

// Resume and takeover.

fn resume(cid: &str, to: &str, role: Role) -> ClientFrame {
    ClientFrame::Resume {
        cid: cid.into(),
        to: to.into(),
        msg: wilddog_protocol::ResumeMsg::new(role),
    }
}

#[test]
fn resume_of_an_away_party_takes_it_over_with_what_was_kept() {
    let mut r = live();
    r.connect(4, APP, "bob"); // back before the server saw the old socket die
    lose(&mut r, 2, now());
    r.handle(1, frame("c1", "bob", cand(3)), now());
    let out = r.handle(4, resume("c1", "alice", Role::Callee), now());
    assert_eq!(relayed(&out), (4, "c1", "alice", &cand(3)));
    let out = r.handle(4, frame("c1", "alice", Body::RestartIce(empty())), now());
    assert_eq!(relayed(&out).0, 1);
    // Resuming again is a no-op.
    assert!(r.handle(4, resume("c1", "alice", Role::Callee), now()).is_empty());
}

#[test]
fn resume_by_a_non_party_is_refused() {
    let mut r = live();
    // carol is no party; alice is not the callee; bob's `to` is wrong.
    let out = r.handle(3, resume("c1", "alice", Role::Callee), now());
    assert_eq!(error_code(&out, 3), ErrorCode::NotParty);
    let out = r.handle(1, resume("c1", "bob", Role::Callee), now());
    assert_eq!(error_code(&out, 1), ErrorCode::NotParty);
    let out = r.handle(2, resume("c1", "carol", Role::Callee), now());
    assert_eq!(error_code(&out, 2), ErrorCode::NotParty);
    assert!(r.take_effects().is_empty());
    // The parties themselves resume as no-ops.
    assert!(r.handle(1, resume("c1", "bob", Role::Caller), now()).is_empty());
    assert!(r.handle(2, resume("c1", "alice", Role::Callee), now()).is_empty());
}

#[test]
fn half_open_party_is_probed_and_its_call_passes_to_the_new_connection() {
    let mut r = live();
    // bob's old socket (2) is half-open; bob logs in again (4) and resumes, then re-offers…
    r.connect(4, APP, "bob");
    assert!(r.handle(4, resume("c1", "alice", Role::Callee), now()).is_empty());
    assert!(r.handle(4, frame("c1", "alice", Body::RestartIce(empty())), now()).is_empty());
    assert_eq!(r.take_effects(), vec![Effect::Probe(2)]);
    // …while alice sends a candidate to the old one: held, not lost.
    assert!(r.handle(1, frame("c1", "bob", cand(5)), now()).is_empty());
    // No pong: 2 is lost, 4 has the call, gets the candidate, and its restartice goes through.
    let t = now();
    let out = r.probe_result(2, false, t);
    assert_eq!(
        out,
        vec![
            (
                4,
                ServerFrame::Conversation { cid: "c1".into(), from: "alice".into(), body: cand(5) }
            ),
            (
                1,
                ServerFrame::Conversation {
                    cid: "c1".into(),
                    from: "bob".into(),
                    body: Body::RestartIce(empty())
                }
            ),
        ]
    );
    assert!(!r.is_connected(2));
    assert_eq!(r.away_count(), 0, "nothing else of 2 waits");
    let out = r.handle(1, frame("c1", "bob", restart_offer()), now());
    assert_eq!(relayed(&out).0, 4);
    // A late verdict changes nothing.
    assert!(r.probe_result(2, true, now()).is_empty());
    assert!(r.expire(t + GRACE).is_empty());
    assert_eq!(r.conversation_count(), 1);
}

#[test]
fn a_probed_party_that_answers_keeps_its_call() {
    let mut r = live();
    r.connect(4, APP, "bob");
    assert!(r.handle(4, frame("c1", "alice", Body::RestartIce(empty())), now()).is_empty());
    assert_eq!(r.take_effects(), vec![Effect::Probe(2)]);
    assert!(r.handle(1, frame("c1", "bob", cand(1)), now()).is_empty());
    // Any frame from 2 is an answer: it gets what was held, 4 gets not_party.
    let out = r.handle(2, ClientFrame::Heartbeat(1), now());
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(
        out[0],
        (2, ServerFrame::Conversation { cid: "c1".into(), from: "alice".into(), body: cand(1) })
    );
    assert_eq!(error_code(&out[1..].to_vec(), 4), ErrorCode::NotParty);
    assert!(r.probe_result(2, false, now()).is_empty(), "decided already");
    assert!(r.is_connected(2));
    let out = r.handle(1, frame("c1", "bob", cand(2)), now());
    assert_eq!(relayed(&out).0, 2);
}

#[test]
fn a_probed_party_whose_socket_dies_hands_its_call_over_at_once() {
    let mut r = live();
    r.connect(4, APP, "alice");
    assert!(r.handle(4, frame("c1", "bob", restart_offer()), now()).is_empty());
    assert_eq!(r.take_effects(), vec![Effect::Probe(1)]);
    let (out, _) = lose(&mut r, 1, now());
    assert_eq!(relayed(&out), (2, "c1", "alice", &restart_offer()));
    let out = r.handle(2, frame("c1", "alice", answer()), now());
    assert_eq!(relayed(&out).0, 4);
}

#[test]
fn a_claimant_that_leaves_during_the_probe_claims_nothing() {
    let mut r = live();
    r.connect(4, APP, "bob");
    r.handle(4, frame("c1", "alice", Body::RestartIce(empty())), now());
    close(&mut r, 4);
    let (out, until) = (r.probe_result(2, false, now()), r.next_expiry());
    assert!(out.is_empty(), "{out:?}");
    assert!(until.is_some(), "2 is lost: its call waits the grace");
    let out = r.connect(5, APP, "bob");
    assert!(out.is_empty());
    let out = r.handle(5, frame("c1", "alice", Body::RestartIce(empty())), now());
    assert_eq!(relayed(&out).0, 1);
}

#[test]
fn a_restarted_server_recreates_a_resumed_conversation_and_binds_the_peer() {
    let mut r = router();
    let t0 = Instant::now();
    // Both clients reconnect to a server that knows nothing; bob resumes first.
    r.connect(1, APP, "bob");
    assert!(r.handle(1, resume("c1", "alice", Role::Callee), t0).is_empty());
    assert_eq!((r.conversation_count(), r.away_count()), (1, 1));
    // bob's restartice waits for alice.
    assert!(r.handle(1, frame("c1", "alice", Body::RestartIce(empty())), t0).is_empty());
    r.connect(2, APP, "alice");
    let out = r.connect(2, APP, "alice");
    assert!(out.is_empty(), "connect twice is a no-op");
    // alice connected after the re-creation: she got the kept restartice at connect.
    let mut r2 = router();
    r2.connect(1, APP, "bob");
    r2.handle(1, resume("c1", "alice", Role::Callee), t0);
    r2.handle(1, frame("c1", "alice", Body::RestartIce(empty())), t0);
    let out = r2.connect(2, APP, "alice");
    assert_eq!(relayed(&out), (2, "c1", "bob", &Body::RestartIce(empty())));
    assert!(r2.handle(2, resume("c1", "bob", Role::Caller), t0).is_empty());
    let out = r2.handle(2, frame("c1", "bob", restart_offer()), t0);
    assert_eq!(relayed(&out).0, 1);
    let out = r2.handle(1, frame("c1", "alice", answer()), t0);
    assert_eq!(relayed(&out).0, 2);
    let out = r2.handle(2, frame("c1", "bob", Body::Bye(empty())), t0);
    assert_eq!(out, vec![bye_frame(1, "c1", "alice")]);
    assert_eq!((r2.conversation_count(), r2.away_count()), (0, 0));
}

#[test]
fn a_connected_peer_binds_by_resuming() {
    let mut r = three();
    let t0 = Instant::now();
    assert!(r.handle(2, resume("c1", "alice", Role::Callee), t0).is_empty());
    assert!(r.handle(2, frame("c1", "alice", cand(1)), t0).is_empty());
    // alice was connected before: she binds by resuming, and gets what waited.
    let out = r.handle(1, resume("c1", "bob", Role::Caller), t0);
    assert_eq!(relayed(&out), (1, "c1", "bob", &cand(1)));
    let out = r.handle(1, frame("c1", "bob", restart_offer()), t0);
    assert_eq!(relayed(&out).0, 2);
    // carol cannot take the placeholder's place, nor resume as alice.
    let out = r.handle(3, resume("c1", "bob", Role::Caller), t0);
    assert_eq!(error_code(&out, 3), ErrorCode::NotParty);
}

#[test]
fn an_unbound_peer_never_coming_gives_the_resumed_party_bye_after_the_grace() {
    let mut r = three();
    let t0 = Instant::now();
    r.handle(2, resume("c1", "alice", Role::Callee), t0);
    assert_eq!(r.next_expiry(), Some(t0 + GRACE));
    assert!(r.expire(t0 + GRACE - Duration::from_millis(1)).is_empty());
    assert_eq!(r.expire(t0 + GRACE), vec![bye_frame(2, "c1", "alice")]);
    assert!(r.expire(t0 + GRACE * 2).is_empty());
    assert_eq!((r.conversation_count(), r.away_count()), (0, 0));
    // Ended: resuming it again is told so again, not re-created.
    let out = r.handle(2, resume("c1", "alice", Role::Callee), t0 + GRACE);
    assert_eq!(out, vec![bye_frame(2, "c1", "alice")]);
    assert_eq!(r.conversation_count(), 0);
}

#[test]
fn old_clients_resume_implicitly_with_their_restart() {
    let mut r = three();
    let t0 = Instant::now();
    // The caller's restart offer on an unknown cid re-creates it, the callee's restartice too.
    assert!(r.handle(1, frame("c1", "bob", restart_offer()), t0).is_empty());
    let out = r.handle(2, frame("c1", "alice", Body::RestartIce(empty())), t0);
    assert_eq!(
        out,
        vec![
            (
                2,
                ServerFrame::Conversation {
                    cid: "c1".into(),
                    from: "alice".into(),
                    body: restart_offer()
                }
            ),
            (
                1,
                ServerFrame::Conversation {
                    cid: "c1".into(),
                    from: "bob".into(),
                    body: Body::RestartIce(empty())
                }
            ),
        ]
    );
    assert_eq!((r.conversation_count(), r.away_count()), (1, 0));
    // A plain offer or candidate on an unknown cid is still unknown.
    let out = r.handle(3, frame("c9", "bob", offer()), t0);
    assert_eq!(error_code(&out, 3), ErrorCode::UnknownConversation);
    let out = r.handle(3, frame("c9", "bob", cand(0)), t0);
    assert_eq!(error_code(&out, 3), ErrorCode::UnknownConversation);
    assert_eq!(r.conversation_count(), 1);
}

#[test]
fn an_ended_conversation_is_not_recreated_until_it_is_forgotten() {
    let mut r = live();
    let t0 = Instant::now();
    r.handle(1, frame("c1", "bob", Body::Bye(empty())), t0);
    let out = r.handle(2, frame("c1", "alice", Body::RestartIce(empty())), t0);
    assert_eq!(error_code(&out, 2), ErrorCode::UnknownConversation);
    let late = t0 + MIN_ENDED_MEMORY;
    let out = r.handle(2, frame("c1", "alice", Body::RestartIce(empty())), late);
    assert!(out.is_empty(), "forgotten: re-created, {out:?}");
    // A new call may reuse a cid that ended.
    let mut r = live();
    r.handle(1, frame("c1", "bob", Body::Bye(empty())), t0);
    let out = r.handle(1, call("c1", "bob"), t0);
    assert_eq!(relayed(&out).0, 2);
}

#[test]
fn ended_conversations_remembered_are_bounded() {
    let mut r = three();
    let t0 = Instant::now();
    for i in 0..MAX_ENDED_REMEMBERED + 10 {
        let cid = format!("c{i}");
        r.handle(1, call(&cid, "bob"), t0);
        r.handle(1, frame(&cid, "bob", Body::Bye(empty())), t0);
    }
    assert_eq!(r.ended.len(), MAX_ENDED_REMEMBERED);
    assert_eq!(r.ended_order.len(), MAX_ENDED_REMEMBERED);
    // The oldest are forgotten first.
    assert!(r.handle(2, resume("c0", "alice", Role::Callee), t0).is_empty());
    let out = r.handle(2, resume("c20", "alice", Role::Callee), t0);
    assert_eq!(
        out,
        [(2, ServerFrame::Conversation { cid: "c20".into(), from: "alice".into(), body: bye() })]
    );
}

// Cluster mode (the node's side; the bus and Redis are the I/O's).

const B: NodeId = 7;

fn on_b(n: u64) -> ConnId {
    (u64::from(B) << 32) + n
}

#[test]
fn a_call_rings_remote_connections_and_their_frames_come_back_forwarded() {
    let mut r = Router::clustered(TurnCredential::default(), GRACE);
    r.connect(1, APP, "alice");
    let bob = on_b(1);
    r.connect_remote(bob, APP, "bob", false);
    let out = r.handle_with(1, call("c1", "bob"), &[bob], now());
    assert_eq!(relayed(&out).0, bob);
    // bob's node forwards his accept: the conversation is live, and recorded.
    let out = r.handle(bob, frame("c1", "alice", Body::Accept(Default::default())), now());
    assert_eq!(relayed(&out), (1, "c1", "bob", &Body::Accept(Default::default())));
    let effects = r.take_effects();
    assert!(
        matches!(&effects[..], [Effect::Record { caller: (1, _), callee: (c, _), .. }] if *c == bob),
        "{effects:?}"
    );
    // bob's node reports him lost: grace, then bye.
    let t0 = Instant::now();
    r.disconnect(bob, Departure::Lost, t0);
    assert_eq!(r.expire(t0 + GRACE), vec![bye_frame(1, "c1", "bob")]);
    let effects = r.take_effects();
    assert!(
        matches!(&effects[..], [Effect::Awaits { uid, .. }, Effect::Unrecord { .. }] if &**uid == "bob"),
        "{effects:?}"
    );
    assert!(!r.is_connected(bob), "a remote party is forgotten with its last conversation");
}

#[test]
fn a_lost_party_back_on_another_node_gets_its_queued_frames_at_once() {
    let mut r = Router::clustered(TurnCredential::default(), GRACE);
    r.connect(1, APP, "alice");
    let bob = on_b(1);
    r.connect_remote(bob, APP, "bob", false);
    r.handle_with(1, call("c1", "bob"), &[bob], now());
    r.handle(bob, frame("c1", "alice", Body::Accept(Default::default())), now());
    r.disconnect(bob, Departure::Lost, now());
    let cand = || Body::Candidate(CandidateMsg { sdp: "x".into(), ..Default::default() });
    assert!(r.handle(1, frame("c1", "bob", cand()), now()).is_empty(), "queued while away");
    r.take_effects();
    // Another connection of bob, on a third node, arrives: the queue is its, now.
    let back = (u64::from(B + 1) << 32) + 5;
    assert!(r.arrive_remote(on_b(9), APP, "carol", false).is_empty(), "not awaited");
    let out = r.arrive_remote(back, APP, "bob", false);
    assert_eq!(relayed(&out), (back, "c1", "alice", &cand()));
    assert!(r.is_party(back, "c1"));
    // It is the party now: its frames reach alice.
    let out = r.handle(back, frame("c1", "alice", cand()), now());
    assert_eq!(relayed(&out), (1, "c1", "bob", &cand()));
}

#[test]
fn a_pool_pick_made_by_the_nodes_is_the_endpoint_rung() {
    let mut r = Router::clustered(TurnCredential::default(), GRACE);
    r.connect(1, APP, "alice");
    r.connect_with(2, APP, "bot", true);
    let remote = on_b(1);
    r.connect_remote(remote, APP, "bot", true);
    let (pool, free) = r.free_service_endpoints(APP, "bot", 1, &[(remote, true)]);
    assert_eq!((pool, free.len()), (2, 2));
    let out = r.handle_call(1, call("c1", "bot"), &[remote], Some(PoolPick::Ring(remote)), now());
    assert_eq!(relayed(&out).0, remote);
    assert!(r.is_party(remote, "c1"));
    let out = r.handle_call(1, call("c2", "bot"), &[], Some(PoolPick::Busy), now());
    assert_eq!(out[0].1.to_json(), r#"{"type":"busy","cid":"c2","from":"bot","msg":{}}"#);
    // Ending the call releases the endpoint's claim.
    r.take_effects();
    r.handle(1, frame("c1", "bot", Body::Bye(empty())), now());
    let effects = r.take_effects();
    assert!(
        effects.iter().any(|e| matches!(e, Effect::Unclaim { cid, .. } if &**cid == "c1")),
        "{effects:?}"
    );
}

#[test]
fn a_party_of_a_conversation_homed_elsewhere_forwards_and_reports_leaving() {
    let mut r = Router::clustered(TurnCredential::default(), GRACE);
    r.connect(1, APP, "bob");
    let call_frame = ServerFrame::Conversation {
        cid: "c1".into(),
        from: "alice".into(),
        body: Body::Call(CallMsg::default()),
    };
    assert_eq!(r.deliver(1, B, call_frame.clone(), None), Some(vec![(1, call_frame)]));
    assert_eq!(r.needs_lookup(1, &frame("c1", "alice", cand(0))), None, "linked");
    assert!(r.handle(1, frame("c1", "alice", Body::Accept(Default::default())), now()).is_empty());
    assert_eq!(
        r.take_effects(),
        vec![Effect::Forward {
            home: B,
            conn: 1,
            frame: frame("c1", "alice", Body::Accept(Default::default())),
            number: 1,
        }]
    );
    // The link knows bob accepted: the call is live even if its home dies unrecorded.
    let links = r.links_to(B);
    assert_eq!(links.len(), 1);
    assert_eq!(links[0].accepted_callee.as_deref(), Some("bob"));
    // An unknown cid must be looked up first.
    assert_eq!(
        r.needs_lookup(1, &frame("c9", "alice", cand(0))),
        Some((APP.to_owned(), "c9".to_owned()))
    );
    r.disconnect(1, Departure::Lost, now());
    assert_eq!(
        r.take_effects(),
        vec![Effect::Departed { home: B, conn: 1, departure: Departure::Lost }]
    );
    // A frame for a connection that is gone: the home is told.
    assert_eq!(r.deliver(1, B, bye_frame(1, "c1", "alice").1, None), None);
}

#[test]
fn a_busy_service_endpoint_rung_from_another_node_answers_busy() {
    let mut r = Router::clustered(TurnCredential::default(), GRACE);
    r.connect_with(1, APP, "bot", true);
    r.connect(2, APP, "alice");
    r.handle(2, call("local", "bot"), now());
    let ring = ServerFrame::Conversation {
        cid: "c2".into(),
        from: "carol".into(),
        body: Body::Call(CallMsg::default()),
    };
    assert_eq!(r.deliver(1, B, ring, None), Some(vec![]));
    assert_eq!(
        r.take_effects(),
        vec![Effect::Forward {
            home: B,
            conn: 1,
            frame: frame("c2", "carol", Body::Busy(empty())),
            number: 1,
        }]
    );
}

#[test]
fn a_conversation_of_a_dead_node_is_adopted_with_placeholders_for_its_parties() {
    let mut r = Router::clustered(TurnCredential::default(), GRACE);
    r.connect(1, APP, "bob");
    let t0 = Instant::now();
    let dead_alice = on_b(3);
    r.adopt(APP, "c1", (Adoptee::Gone, "alice"), (Adoptee::Local(1), "bob"), None, t0);
    assert_eq!((r.conversation_count(), r.away_count()), (1, 1));
    // bob's frames wait for alice; alice comes back (here) and resumes.
    assert!(r.handle(1, frame("c1", "alice", cand(1)), t0).is_empty());
    r.connect(2, APP, "alice");
    let out = r.handle(2, resume("c1", "bob", Role::Caller), t0);
    assert!(out.is_empty() || relayed(&out).0 == 2, "{out:?}");
    let out = r.handle(2, frame("c1", "bob", restart_offer()), t0);
    assert_eq!(relayed(&out).0, 1);
    assert!(!r.is_connected(dead_alice));
    // Nobody back for another adopted call: the local party hears bye after the grace.
    r.connect(3, APP, "dave");
    r.adopt(APP, "c2", (Adoptee::Gone, "carol"), (Adoptee::Local(3), "dave"), None, t0);
    assert_eq!(r.expire(t0 + GRACE), vec![bye_frame(3, "c2", "carol")]);
}

#[test]
fn a_frame_relayed_again_after_its_home_died_reaches_each_party_once() {
    // This node adopted c1 (alice here, bob on node B); bob's node hands over again frames
    // the dead home may have relayed already.
    let mut r = Router::clustered(TurnCredential::default(), GRACE);
    r.connect(1, APP, "alice");
    let bob = on_b(1);
    let t0 = now();
    r.adopt(APP, "c1", (Adoptee::Local(1), "alice"), (Adoptee::Remote(bob), "bob"), None, t0);
    r.take_effects();
    // What the dead home delivered to alice: bob's frames 1 and 2.
    for n in 1..=2 {
        let f = relay(1, "c1", "bob", cand(n as u32)).1;
        assert_eq!(r.deliver(1, B + 1, f.clone(), Some((bob, n))), Some(vec![(1, f)]));
    }
    // bob's node hands 2 and 3 to the new home: only 3 reaches alice.
    assert!(r.handle_stamped(bob, frame("c1", "alice", cand(2)), 2, t0).is_empty());
    let out = r.handle_stamped(bob, frame("c1", "alice", cand(3)), 3, t0);
    assert_eq!(out, vec![relay(1, "c1", "bob", cand(3))]);
    // alice's frames to bob are numbered and leave stamped, for bob's node to check.
    assert!(r.handle(1, frame("c1", "bob", cand(7)), t0).is_empty());
    assert!(r.handle(1, frame("c1", "bob", cand(8)), t0).is_empty());
    let effects = r.take_effects();
    let stamps: Vec<Stamp> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::Deliver { conn, stamp, .. } if *conn == bob => Some(*stamp),
            _ => None,
        })
        .collect();
    assert_eq!(stamps, vec![(1, 1), (1, 2)]);
    // A local frame handled again (its node died before handling it) keeps its number.
    assert!(r.handle_stamped(1, frame("c1", "bob", cand(8)), 2, t0).is_empty());
    assert!(
        matches!(&r.take_effects()[..], [Effect::Deliver { stamp: (1, 2), .. }]),
        "the recipient's node drops it"
    );
    assert!(r.handle(1, frame("c1", "bob", cand(9)), t0).is_empty());
    assert!(matches!(&r.take_effects()[..], [Effect::Deliver { stamp: (1, 3), .. }]));
}

#[test]
fn a_stamp_delivered_already_is_dropped_at_the_recipient_s_node() {
    let mut r = Router::clustered(TurnCredential::default(), GRACE);
    r.connect(1, APP, "bob");
    let alice = on_b(4);
    let f = |n: u32| relay(1, "c1", "alice", cand(n)).1;
    assert_eq!(r.deliver(1, B, f(1), Some((alice, 1))), Some(vec![(1, f(1))]));
    assert_eq!(r.deliver(1, B, f(2), Some((alice, 2))), Some(vec![(1, f(2))]));
    // The dead home's successor relays 1 and 2 again, then 3.
    assert_eq!(r.deliver(1, B + 1, f(1), Some((alice, 1))), Some(vec![]));
    assert_eq!(r.deliver(1, B + 1, f(2), Some((alice, 2))), Some(vec![]));
    assert_eq!(r.deliver(1, B + 1, f(3), Some((alice, 3))), Some(vec![(1, f(3))]));
    // Another sender (alice back on a new connection) counts on its own.
    assert_eq!(r.deliver(1, B + 1, f(4), Some((alice + 1, 1))), Some(vec![(1, f(4))]));
    // Unstamped frames (kept for a party, or from an older node) always pass.
    assert_eq!(r.deliver(1, B + 1, f(5), None), Some(vec![(1, f(5))]));
}

#[test]
fn a_late_frame_of_a_dead_node_does_not_link_a_conversation_to_it() {
    let mut r = Router::clustered(TurnCredential::default(), GRACE);
    r.connect(1, APP, "bob");
    r.node_dead(B, now());
    let offer_frame = relay(1, "c1", "alice", offer()).1;
    assert_eq!(r.deliver(1, B, offer_frame.clone(), None), Some(vec![(1, offer_frame)]));
    assert!(r.links_to(B).is_empty());
    assert!(!r.places(1, "c1"));
}

#[test]
fn an_adoption_binds_its_local_party_to_a_conversation_a_resume_re_created_first() {
    // This node claimed c1 (its home died; alice is here, linked to it) and another node,
    // reading the new record, forwarded bob's resume and restartice before the adoption:
    // the resume re-created c1 with a placeholder caller, which kept the restartice.
    let mut r = Router::clustered(TurnCredential::default(), GRACE);
    r.connect(1, APP, "alice");
    r.link(1, "c1", B + 1, "bob");
    let bob = on_b(1);
    let t0 = now();
    r.connect_remote(bob, APP, "bob", false);
    assert!(r.handle_stamped(bob, resume("c1", "alice", Role::Callee), 1, t0).is_empty());
    let restart = frame("c1", "alice", Body::RestartIce(empty()));
    assert!(r.handle_stamped(bob, restart, 2, t0).is_empty());
    // The adoption makes alice the caller, with what was kept for her.
    let out = r.adopt(APP, "c1", (Adoptee::Local(1), "alice"), (Adoptee::Gone, "bob"), None, t0);
    assert_eq!(out, vec![relay(1, "c1", "bob", Body::RestartIce(empty()))]);
    assert_eq!((r.conversation_count(), r.away_count()), (1, 0));
    // The call goes on here: alice's offer reaches bob, bob's answer alice.
    r.take_effects();
    assert!(r.handle(1, frame("c1", "bob", restart_offer()), t0).is_empty());
    let effects = r.take_effects();
    assert!(
        effects.iter().any(|e| matches!(e, Effect::Deliver { conn, .. } if *conn == bob)),
        "{effects:?}"
    );
    let out = r.handle_stamped(bob, frame("c1", "alice", answer()), 3, t0);
    assert_eq!(relayed(&out).0, 1);
}

/// mallory = 1, a service endpoint of `echo` = 10.
fn mallory_and_echo() -> Router {
    let mut r = router();
    r.connect(1, APP, "mallory");
    r.connect_with(10, APP, "echo", true);
    r
}

#[test]
fn a_forged_resume_naming_a_service_uid_never_holds_its_endpoints() {
    let mut r = mallory_and_echo();
    let t0 = Instant::now();
    // Made-up cids: a `resume`, and an old client's restart offer.
    assert!(r.handle(1, resume("fake1", "echo", Role::Caller), t0).is_empty());
    assert!(r.handle(1, frame("fake2", "echo", restart_offer()), t0).is_empty());
    // The endpoint connected before is free; so is the one connecting after: it is bound to
    // neither, and hears nothing of them.
    assert!(r.connect_with(11, APP, "echo", true).is_empty());
    r.connect(3, APP, "carol");
    let out = r.handle(3, call("c1", "echo"), t0);
    assert_eq!(relayed(&out).0, 10);
    let out = r.handle(3, call("c2", "echo"), t0);
    assert_eq!(relayed(&out).0, 11, "the newer endpoint rings too, not busy");
    // Nobody of echo resumed them: mallory hears `bye` at the end of the grace, once each.
    assert!(r.expire(t0 + GRACE - Duration::from_millis(1)).is_empty());
    let mut out = r.expire(t0 + GRACE);
    out.sort_by_key(|(_, f)| format!("{f:?}"));
    assert_eq!(out, vec![bye_frame(1, "fake1", "echo"), bye_frame(1, "fake2", "echo")]);
    assert!(r.expire(t0 + GRACE * 2).is_empty());
    assert_eq!((r.conversation_count(), r.away_count()), (2, 0), "carol's two calls");
}

#[test]
fn a_service_endpoint_binds_a_re_created_conversation_by_resuming_it() {
    // A real restart: alice's call with echo's endpoint lives on after both resume.
    let mut r = router();
    let t0 = Instant::now();
    r.connect(1, APP, "alice");
    assert!(r.handle(1, resume("c1", "echo", Role::Caller), t0).is_empty());
    assert!(r.handle(1, frame("c1", "echo", restart_offer()), t0).is_empty());
    assert!(r.connect_with(10, APP, "echo", true).is_empty(), "not bound by connecting");
    let out = r.handle(10, resume("c1", "alice", Role::Callee), t0);
    assert_eq!(relayed(&out), (10, "c1", "alice", &restart_offer()));
    let out = r.handle(10, frame("c1", "alice", answer()), t0);
    assert_eq!(relayed(&out).0, 1);
    // A call like any: busy for the next caller, and no end at the grace.
    r.connect(3, APP, "carol");
    let out = r.handle(3, call("c2", "echo"), t0);
    assert_eq!(
        out,
        vec![(
            3,
            ServerFrame::Conversation {
                cid: "c2".into(),
                from: "echo".into(),
                body: Body::Busy(empty()),
            }
        )]
    );
    assert_eq!(r.next_expiry(), None);
    assert!(r.expire(t0 + GRACE * 2).is_empty());
    assert_eq!(r.conversation_count(), 1);
}

#[test]
fn a_peer_bound_by_connecting_but_never_resuming_is_let_go_after_the_grace() {
    let mut r = router();
    let t0 = Instant::now();
    r.connect(1, APP, "mallory");
    r.handle(1, resume("fake", "bob", Role::Caller), t0);
    r.handle(1, frame("fake", "bob", restart_offer()), t0);
    // bob (not a pool) connects: bound, as an old client that waits for the offer would be.
    let out = r.connect(2, APP, "bob");
    assert_eq!(relayed(&out), (2, "fake", "mallory", &restart_offer()));
    assert_eq!(r.next_expiry(), Some(t0 + GRACE));
    // He never resumes nor answers: at the grace both hear `bye`, from each other.
    let mut out = r.expire(t0 + GRACE);
    out.sort_by_key(|(to, _)| *to);
    assert_eq!(out, vec![bye_frame(1, "fake", "bob"), bye_frame(2, "fake", "mallory")]);
    assert_eq!((r.conversation_count(), r.away_count(), r.next_expiry()), (0, 0, None));
    assert!(!r.is_party(2, "fake"));

    // Had he answered (an old client), the call would be his: it lives on.
    let mut r = router();
    r.connect(1, APP, "alice");
    r.handle(1, frame("c1", "bob", restart_offer()), t0);
    r.connect(2, APP, "bob");
    let out = r.handle(2, frame("c1", "alice", answer()), t0);
    assert_eq!(relayed(&out).0, 1);
    assert_eq!(r.next_expiry(), None);
    assert!(r.expire(t0 + GRACE).is_empty());
    assert_eq!(r.conversation_count(), 1);
}

/// The `unproven` of the last [`Effect::Record`] of `cid` among `effects`.
fn recorded_unproven(effects: &[Effect], cid: &str) -> Option<Option<Role>> {
    effects.iter().rev().find_map(|e| match e {
        Effect::Record { cid: c, unproven, .. } if &**c == cid => Some(*unproven),
        _ => None,
    })
}

#[test]
fn the_record_of_a_re_created_conversation_says_it_is_provisional_until_proven() {
    let mut r = Router::clustered(TurnCredential::default(), GRACE);
    let t0 = now();
    r.connect(1, APP, "alice");
    assert!(r.handle(1, resume("c1", "bob", Role::Caller), t0).is_empty());
    assert_eq!(recorded_unproven(&r.take_effects(), "c1"), Some(Some(Role::Callee)));
    // bob (not a pool) connects: bound, but not proven yet.
    r.connect(2, APP, "bob");
    assert_eq!(recorded_unproven(&r.take_effects(), "c1"), Some(Some(Role::Callee)));
    assert!(r.records().iter().all(|e| matches!(e, Effect::Record { unproven: Some(_), .. })));
    // He resumes it: a call like any, and its record says so.
    r.handle(2, resume("c1", "alice", Role::Callee), t0);
    assert_eq!(recorded_unproven(&r.take_effects(), "c1"), Some(None));
    assert!(matches!(&r.records()[..], [Effect::Record { unproven: None, .. }]));
}

#[test]
fn a_provisional_conversation_of_a_dead_node_stays_provisional_where_it_is_adopted() {
    // mallory's forged resume of `fake1` naming `echo` was homed on a node that died; her
    // client comes back here and resumes it. The record says the callee never showed.
    let mut r = Router::clustered(TurnCredential::default(), GRACE);
    let t0 = now();
    let callee = Some(Role::Callee);
    let out =
        r.adopt(APP, "fake1", (Adoptee::Gone, "mallory"), (Adoptee::Gone, "echo"), callee, t0);
    assert!(out.is_empty());
    assert_eq!(recorded_unproven(&r.take_effects(), "fake1"), Some(callee), "still provisional");
    r.connect(1, APP, "mallory");
    assert!(r.handle(1, resume("fake1", "echo", Role::Caller), t0).is_empty());
    // An endpoint of the pool that connects now is not bound to it: a caller is rung.
    assert!(r.connect_with(10, APP, "echo", true).is_empty());
    assert!(!r.is_party(10, "fake1"));
    r.connect(3, APP, "carol");
    let out = r.handle(3, call("c1", "echo"), t0);
    assert_eq!(relayed(&out).0, 10, "rung, not busy");
    // Nobody of echo resumed it: mallory hears `bye` at the end of the grace, once.
    assert!(r.expire(t0 + GRACE - Duration::from_millis(1)).is_empty());
    assert_eq!(r.expire(t0 + GRACE), vec![bye_frame(1, "fake1", "echo")]);
    assert!(r.expire(t0 + GRACE * 2).is_empty());
    assert_eq!(r.conversation_count(), 1, "carol's call only");

    // A record without the mark (a real call, or one written by an older node) is a call
    // like any: the endpoint of its uid coming back takes it over by connecting.
    let mut r = Router::clustered(TurnCredential::default(), GRACE);
    r.connect(1, APP, "alice");
    r.adopt(APP, "c2", (Adoptee::Local(1), "alice"), (Adoptee::Gone, "echo"), None, t0);
    r.connect_with(10, APP, "echo", true);
    assert!(r.is_party(10, "c2"));
    assert_eq!(r.next_expiry(), None);
}

#[test]
fn an_adopted_record_that_says_a_role_is_proven_proves_it_where_a_resume_re_created_it() {
    // As in `an_adoption_binds_its_local_party_to_a_conversation_a_resume_re_created_first`:
    // bob's resume re-created c1 here (alice unproven) before the adoption of its record.
    for (recorded, expiry) in [(None, false), (Some(Role::Caller), true)] {
        let mut r = Router::clustered(TurnCredential::default(), GRACE);
        r.connect(1, APP, "alice");
        r.link(1, "c1", B + 1, "bob");
        let bob = on_b(1);
        let t0 = now();
        r.connect_remote(bob, APP, "bob", false);
        assert!(r.handle_stamped(bob, resume("c1", "alice", Role::Callee), 1, t0).is_empty());
        assert_eq!(r.next_expiry(), Some(t0 + GRACE));
        let alice = (Adoptee::Local(1), "alice");
        r.adopt(APP, "c1", alice, (Adoptee::Gone, "bob"), recorded, t0);
        assert!(r.is_party(1, "c1"));
        // The dead home saw alice in the call: it is not ended at the grace.
        assert_eq!(r.next_expiry().is_some(), expiry, "{recorded:?}");
        assert_eq!(recorded_unproven(&r.take_effects(), "c1"), Some(recorded));
        let byes = r.expire(t0 + GRACE);
        assert_eq!(byes.len(), if expiry { 2 } else { 0 }, "{byes:?}");
    }
}
