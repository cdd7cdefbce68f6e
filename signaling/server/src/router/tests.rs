use serde_json::json;
use wilddog_protocol::{
    Body, CallMsg, CandidateMsg, ClientFrame, Connect, Empty, ErrorCode, SdpMsg, ServerFrame,
    TelemetryKind, TurnCredential, UnknownFrame,
};

use super::*;

const APP: &str = "app";

fn router() -> Router {
    Router::new(TurnCredential { username: "tu".into(), credential: "tc".into() })
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
    let out = r.disconnect(2);
    assert_eq!(relayed(&out), (1, "c1", "bob", &Body::Bye(empty())));
    assert_eq!(r.conversation_count(), 0);
    assert!(!r.is_connected(2));
    // Caller drops while ringing: the callee gets bye.
    r.handle(1, call("c2", "carol"));
    let out = r.disconnect(1);
    assert_eq!(relayed(&out), (3, "c2", "alice", &Body::Bye(empty())));
    assert_eq!(r.conversation_count(), 0);
    assert!(r.disconnect(1).is_empty(), "a second disconnect is a no-op");
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
    assert!(r.disconnect(2).is_empty());
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
    let out = r.disconnect(2);
    assert_eq!(out.len(), MAX_CONVERSATIONS_PER_CONNECTION);
    assert_eq!(r.conversation_count(), 0);
}

#[test]
fn state_is_released_after_everyone_leaves() {
    let mut r = three();
    r.handle(1, call("c1", "bob"));
    r.handle(2, frame("c1", "alice", Body::Accept(empty())));
    for c in [1, 2, 3] {
        r.disconnect(c);
    }
    assert_eq!(r.connection_count(), 0);
    assert_eq!(r.conversation_count(), 0);
    assert!(r.apps.is_empty(), "{:?}", r.apps);
}
