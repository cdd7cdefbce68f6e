use std::time::{Duration, Instant};

use serde_json::json;
use wilddog_protocol::{
    Body, CallMsg, CandidateMsg, ClientFrame, Connect, Empty, ErrorCode, SdpMsg, ServerFrame,
    TelemetryKind, TurnCredential, UnknownFrame,
};

use super::*;

const APP: &str = "app";

const GRACE: Duration = Duration::from_secs(10);

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
    let out = r.handle(1, call("c1", "bob"));
    let (to, cid, from, body) = relayed(&out);
    assert_eq!((to, cid, from), (2, "c1", "alice"));
    let Body::Call(msg) = body else { panic!() };
    assert_eq!(msg.data_text().as_deref(), Some("hi"));
    assert_eq!(
        msg.turn_credential,
        Some(TurnCredential { username: "tu".into(), credential: "tc".into() })
    );
    assert_eq!(r.conversation_count(), 1);

    let out = r.handle(2, frame("c1", "alice", Body::Accept(empty())));
    assert_eq!(relayed(&out).0, 1);
    let out = r.handle(1, frame("c1", "bob", offer()));
    assert_eq!(relayed(&out), (2, "c1", "alice", &offer()));
    let out = r.handle(2, frame("c1", "alice", answer()));
    assert_eq!(relayed(&out), (1, "c1", "bob", &answer()));
    let out = r.handle(1, frame("c1", "bob", cand(0)));
    assert_eq!(relayed(&out), (2, "c1", "alice", &cand(0)));
    let out = r.handle(2, frame("c1", "alice", cand(1)));
    assert_eq!(relayed(&out), (1, "c1", "bob", &cand(1)));
    let out = r.handle(2, frame("c1", "alice", Body::RestartIce(empty())));
    assert_eq!(relayed(&out).0, 1);
    let out = r.handle(1, frame("c1", "bob", Body::Bye(empty())));
    assert_eq!(relayed(&out), (2, "c1", "alice", &Body::Bye(empty())));
    assert_eq!(r.conversation_count(), 0);
    // Ended: further frames are refused.
    let out = r.handle(2, frame("c1", "alice", cand(2)));
    assert_eq!(error_code(&out, 2), ErrorCode::UnknownConversation);
}

#[test]
fn reject_and_busy_end_the_conversation() {
    let mut r = three();
    r.handle(1, call("c1", "bob"));
    let out = r.handle(2, frame("c1", "alice", Body::Reject(empty())));
    assert_eq!(relayed(&out), (1, "c1", "bob", &Body::Reject(empty())));
    assert_eq!(r.conversation_count(), 0);

    r.handle(1, call("c2", "bob"));
    let out = r.handle(2, frame("c2", "alice", Body::Busy(empty())));
    assert_eq!(relayed(&out), (1, "c2", "bob", &Body::Busy(empty())));
    assert_eq!(r.conversation_count(), 0);
    // The cid is free again.
    let out = r.handle(1, call("c2", "bob"));
    assert_eq!(relayed(&out).0, 2);
}

#[test]
fn caller_cancels_before_answer() {
    let mut r = three();
    r.handle(1, call("c1", "bob"));
    let out = r.handle(1, frame("c1", "bob", Body::Bye(empty())));
    assert_eq!(relayed(&out), (2, "c1", "alice", &Body::Bye(empty())));
    assert_eq!(r.conversation_count(), 0);
    let out = r.handle(2, frame("c1", "alice", Body::Accept(empty())));
    assert_eq!(error_code(&out, 2), ErrorCode::UnknownConversation);
}

#[test]
fn disconnect_mid_call_sends_bye_to_the_other_party() {
    let mut r = three();
    r.handle(1, call("c1", "bob"));
    r.handle(2, frame("c1", "alice", Body::Accept(empty())));
    let out = close(&mut r, 2);
    assert_eq!(relayed(&out), (1, "c1", "bob", &Body::Bye(empty())));
    assert_eq!(r.conversation_count(), 0);
    assert!(!r.is_connected(2));
    // Caller drops while ringing: the callee gets bye.
    r.handle(1, call("c2", "carol"));
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
    let out = r.handle(1, call("c1", "bob"));
    let mut rung: Vec<ConnId> = out.iter().map(|(c, _)| *c).collect();
    rung.sort();
    assert_eq!(rung, vec![2, 4, 5]);
    let out = r.handle(4, frame("c1", "alice", Body::Accept(empty())));
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
    let out = r.handle(2, frame("c1", "alice", Body::Accept(empty())));
    assert_eq!(error_code(&out, 2), ErrorCode::NotParty);
    let out = r.handle(1, frame("c1", "bob", offer()));
    assert_eq!(relayed(&out).0, 4);
    // Losing clients disconnecting does not disturb the live conversation.
    assert!(close(&mut r, 2).is_empty());
    assert_eq!(r.conversation_count(), 1);

    // Reject from one of several also decides.
    r.handle(3, call("c2", "bob"));
    let out = r.handle(5, frame("c2", "carol", Body::Reject(empty())));
    assert_eq!(out.len(), 2, "{out:?}");
    assert!(matches!(&out[0], (3, ServerFrame::Conversation { body: Body::Reject(_), .. })));
    assert!(matches!(&out[1], (4, ServerFrame::Conversation { body: Body::Bye(_), .. })));
}

#[test]
fn busy_from_one_of_several_keeps_ringing_the_others() {
    let mut r = three();
    r.connect(4, APP, "bob");
    r.handle(1, call("c1", "bob"));
    assert!(r.handle(2, frame("c1", "alice", Body::Busy(empty()))).is_empty());
    assert_eq!(r.conversation_count(), 1);
    let out = r.handle(4, frame("c1", "alice", Body::Busy(empty())));
    assert_eq!(relayed(&out), (1, "c1", "bob", &Body::Busy(empty())));
    assert_eq!(r.conversation_count(), 0);
}

#[test]
fn third_party_and_wrong_to_are_refused() {
    let mut r = three();
    r.handle(1, call("c1", "bob"));
    r.handle(2, frame("c1", "alice", Body::Accept(empty())));
    // carol is no party, whatever `to` she names.
    for to in ["alice", "bob"] {
        let out = r.handle(3, frame("c1", to, cand(0)));
        assert_eq!(error_code(&out, 3), ErrorCode::NotParty);
        let out = r.handle(3, frame("c1", to, Body::Bye(empty())));
        assert_eq!(error_code(&out, 3), ErrorCode::NotParty);
    }
    // A party naming someone else as `to`.
    let out = r.handle(1, frame("c1", "carol", cand(0)));
    assert_eq!(error_code(&out, 1), ErrorCode::NotParty);
    assert_eq!(r.conversation_count(), 1);
    // Another connection of the caller's own uid is not a party either.
    r.connect(6, APP, "alice");
    let out = r.handle(6, frame("c1", "bob", cand(0)));
    assert_eq!(error_code(&out, 6), ErrorCode::NotParty);
}

#[test]
fn cid_in_use_is_refused() {
    let mut r = three();
    r.handle(1, call("c1", "bob"));
    let out = r.handle(3, call("c1", "bob"));
    assert_eq!(error_code(&out, 3), ErrorCode::CidInUse);
    let out = r.handle(1, call("c1", "carol"));
    assert_eq!(error_code(&out, 1), ErrorCode::CidInUse);
}

#[test]
fn cids_are_per_app() {
    let mut r = three();
    r.connect(10, "other", "x");
    r.connect(11, "other", "y");
    r.handle(1, call("c1", "bob"));
    let out = r.handle(10, call("c1", "y"));
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
        let out = r.handle(1, call("c1", to));
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
    r.handle(1, call("c1", "bob"));
    let out = r.handle(1, frame("c1", "bob", offer()));
    assert_eq!(error_code(&out, 1), ErrorCode::OutOfOrder);
    let out = r.handle(2, frame("c1", "alice", cand(0)));
    assert_eq!(error_code(&out, 2), ErrorCode::OutOfOrder);
    let out = r.handle(1, frame("c1", "bob", Body::Accept(empty())));
    assert_eq!(error_code(&out, 1), ErrorCode::OutOfOrder);
    r.handle(2, frame("c1", "alice", Body::Accept(empty())));
    let out = r.handle(2, frame("c1", "alice", Body::Accept(empty())));
    assert_eq!(error_code(&out, 2), ErrorCode::OutOfOrder);
    assert_eq!(r.conversation_count(), 1);
}

#[test]
fn unauthenticated_connections_get_not_connected() {
    let mut r = three();
    let out = r.handle(99, call("c1", "bob"));
    assert_eq!(error_code(&out, 99), ErrorCode::NotConnected);
    assert!(r.handle(99, ClientFrame::Heartbeat(3)).is_empty());
    let out = r.handle(1, ClientFrame::Connect(Connect::default()));
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
    assert!(r.handle(1, quality).is_empty());
    assert!(r.handle(1, ClientFrame::Heartbeat(7)).is_empty());
    let unknown = ClientFrame::Unknown(UnknownFrame {
        kind: "frobnicate".into(),
        cid: None,
        peer: None,
        msg: json!({}),
    });
    assert_eq!(error_code(&r.handle(1, unknown), 1), ErrorCode::UnknownType);
}

#[test]
fn conversations_per_connection_are_bounded() {
    let mut r = three();
    for i in 0..MAX_CONVERSATIONS_PER_CONNECTION {
        let out = r.handle(1, call(&format!("c{i}"), "bob"));
        assert_eq!(relayed(&out).0, 2);
    }
    let out = r.handle(1, call("one-more", "bob"));
    assert_eq!(error_code(&out, 1), ErrorCode::RateLimited);
    // Disconnecting bob ends them all, each with a bye to alice.
    let out = close(&mut r, 2);
    assert_eq!(out.len(), MAX_CONVERSATIONS_PER_CONNECTION);
    assert_eq!(r.conversation_count(), 0);
}

#[test]
fn state_is_released_after_everyone_leaves() {
    let mut r = three();
    r.handle(1, call("c1", "bob"));
    r.handle(2, frame("c1", "alice", Body::Accept(empty())));
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
    r.handle(1, call("c1", "bob"));
    r.handle(2, frame("c1", "alice", Body::Accept(empty())));
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
    assert!(r.handle(2, frame("c1", "alice", cand(7))).is_empty());
    assert!(r.expire(t0 + GRACE / 2).is_empty());
    // alice is back on a new connection: she gets what was kept, and the conversation.
    let out = r.connect(4, APP, "alice");
    assert_eq!(relayed(&out), (4, "c1", "bob", &cand(7)));
    assert_eq!((r.away_count(), r.next_expiry()), (0, None));
    let out = r.handle(4, frame("c1", "bob", restart_offer()));
    assert_eq!(relayed(&out), (2, "c1", "alice", &restart_offer()));
    let out = r.handle(2, frame("c1", "alice", answer()));
    assert_eq!(relayed(&out), (4, "c1", "bob", &answer()));
    let out = r.handle(2, frame("c1", "alice", cand(1)));
    assert_eq!(relayed(&out).0, 4);
    // The grace's end changes nothing now.
    assert!(r.expire(t0 + GRACE * 2).is_empty());
    assert_eq!(r.conversation_count(), 1);
    // The new connection is a full party: its bye ends the conversation.
    let out = r.handle(4, frame("c1", "bob", Body::Bye(empty())));
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
    let out = r.handle(5, frame("c1", "alice", Body::RestartIce(empty())));
    assert_eq!(relayed(&out), (1, "c1", "bob", &Body::RestartIce(empty())));
    let out = r.handle(1, frame("c1", "bob", restart_offer()));
    assert_eq!(relayed(&out), (5, "c1", "alice", &restart_offer()));
    let out = r.handle(5, frame("c1", "alice", answer()));
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
    r.handle(1, frame("c1", "bob", cand(0)));
    assert!(r.expire(t0 + GRACE - Duration::from_millis(1)).is_empty());
    assert_eq!(r.expire(t0 + GRACE), vec![bye_frame(1, "c1", "bob")]);
    assert!(r.expire(t0 + GRACE).is_empty());
    assert!(r.expire(t0 + GRACE * 3).is_empty());
    assert_eq!((r.conversation_count(), r.away_count(), r.next_expiry()), (0, 0, None));
    let out = r.handle(1, frame("c1", "bob", cand(1)));
    assert_eq!(error_code(&out, 1), ErrorCode::UnknownConversation);
    // bob back too late: nothing is kept for him, and the cid is gone.
    assert!(r.connect(5, APP, "bob").is_empty());
    let out = r.handle(5, frame("c1", "alice", Body::RestartIce(empty())));
    assert_eq!(error_code(&out, 5), ErrorCode::UnknownConversation);
}

#[test]
fn a_deliberate_close_ends_live_calls_at_once() {
    let mut r = live();
    assert_eq!(close(&mut r, 2), vec![bye_frame(1, "c1", "bob")]);
    assert_eq!((r.conversation_count(), r.away_count()), (0, 0));
    // bob's new connection inherits nothing.
    assert!(r.connect(5, APP, "bob").is_empty());
    let out = r.handle(5, frame("c1", "alice", Body::RestartIce(empty())));
    assert_eq!(error_code(&out, 5), ErrorCode::UnknownConversation);
}

#[test]
fn zero_grace_is_the_immediate_behaviour() {
    let mut r = Router::new(TurnCredential::default(), Duration::ZERO);
    r.connect(1, APP, "alice");
    r.connect(2, APP, "bob");
    r.handle(1, call("c1", "bob"));
    r.handle(2, frame("c1", "alice", Body::Accept(empty())));
    let (out, until) = lose(&mut r, 2, Instant::now());
    assert_eq!((out, until), (vec![bye_frame(1, "c1", "bob")], None));
    assert_eq!((r.conversation_count(), r.away_count()), (0, 0));
}

#[test]
fn ringing_conversations_end_at_once_even_when_lost() {
    let mut r = three();
    let t0 = Instant::now();
    r.handle(1, call("c1", "bob"));
    assert_eq!(lose(&mut r, 1, t0), (vec![bye_frame(2, "c1", "alice")], None));
    r.handle(3, call("c2", "bob"));
    assert_eq!(lose(&mut r, 2, t0), (vec![bye_frame(3, "c2", "bob")], None));
    assert_eq!((r.conversation_count(), r.away_count()), (0, 0));
}

#[test]
fn only_live_conversations_of_a_lost_connection_are_kept() {
    let mut r = live();
    // alice also rings carol when her connection goes.
    r.handle(1, call("c2", "carol"));
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
    assert!(r.handle(2, frame("c1", "alice", cand(0))).is_empty());
    // bob hangs up: nothing goes to the dead connection, the conversation is over.
    assert!(r.handle(2, frame("c1", "alice", Body::Bye(empty()))).is_empty());
    assert_eq!(r.conversation_count(), 0);
    let out = r.handle(2, frame("c1", "alice", cand(1)));
    assert_eq!(error_code(&out, 2), ErrorCode::UnknownConversation);
    // alice, back within the grace, learns it ended (the kept candidate is moot, dropped).
    assert_eq!(r.connect(4, APP, "alice"), vec![bye_frame(4, "c1", "bob")]);
    let out = r.handle(4, frame("c1", "bob", restart_offer()));
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
    assert!(r.handle(4, frame("c1", "bob", restart_offer())).is_empty());
    let out = r.connect(5, APP, "bob");
    assert_eq!(relayed(&out), (5, "c1", "alice", &restart_offer()));
    let out = r.handle(5, frame("c1", "alice", answer()));
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
        assert!(r.handle(1, frame("c1", "bob", cand(i))).is_empty());
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
    let out = r.handle(3, call("c2", "bob"));
    assert_eq!(out, vec![(3, ServerFrame::Unreachable { cid: "c2".into(), from: "bob".into() })]);
    r.connect(5, APP, "bob");
    let out = r.handle(3, call("c2", "bob"));
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
    r.handle(1, frame("c1", "bob", cand(0)));
    let out = r.connect(5, APP, "bob");
    assert_eq!(relayed(&out), (5, "c1", "alice", &cand(0)), "the first back gets c1");
    // The device that had the call comes back and speaks on c1: it takes the call over.
    r.connect(6, APP, "bob");
    let out = r.handle(6, frame("c1", "alice", Body::RestartIce(empty())));
    assert_eq!(relayed(&out), (1, "c1", "bob", &Body::RestartIce(empty())));
    let out = r.handle(1, frame("c1", "bob", restart_offer()));
    assert_eq!(relayed(&out).0, 6);
    // The other device is no party any more; and 6, having spoken, cannot be displaced.
    let out = r.handle(5, frame("c1", "alice", cand(1)));
    assert_eq!(error_code(&out, 5), ErrorCode::NotParty);
    r.connect(7, APP, "bob");
    let out = r.handle(7, frame("c1", "alice", cand(1)));
    assert_eq!(error_code(&out, 7), ErrorCode::NotParty);
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
    r.handle(1, frame("c1", "bob", cand(0)));
    // Its first frame on c1 takes the call over, and brings what was kept for it.
    let out = r.handle(4, frame("c1", "alice", Body::RestartIce(empty())));
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
    let out = r.handle(1, frame("c1", "bob", restart_offer()));
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
        let out = r.handle(3, frame("c1", to, cand(0)));
        assert_eq!(error_code(&out, 3), ErrorCode::NotParty);
    }
    // Another device of the other party's uid: alice is here, so not claimable.
    r.connect(8, APP, "alice");
    let out = r.handle(8, frame("c1", "bob", cand(0)));
    assert_eq!(error_code(&out, 8), ErrorCode::NotParty);
    // Another app's bob.
    r.connect(9, "other", "bob");
    let out = r.handle(9, frame("c1", "alice", cand(0)));
    assert_eq!(error_code(&out, 9), ErrorCode::UnknownConversation);
    // The call itself is intact.
    let out = r.connect(5, APP, "bob");
    assert!(out.is_empty(), "refused frames are not kept: {out:?}");
    let out = r.handle(1, frame("c1", "bob", cand(2)));
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
