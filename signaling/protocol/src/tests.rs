//! Every frame of the wire protocol, read from and written to literal JSON.

use super::*;
use serde_json::json;

/// Reads `text` as a client frame, checks it against `expected`, and checks that writing it
/// gives back the same JSON (as a value: key order does not matter on the wire).
fn client(text: &str, expected: ClientFrame) {
    let frame = ClientFrame::from_json(text).expect("parses");
    assert_eq!(frame, expected);
    let written: Value = serde_json::from_str(&frame.to_json()).expect("writes JSON");
    let original: Value = serde_json::from_str(text).expect("literal is JSON");
    assert_eq!(written, original);
}

fn server(text: &str, expected: ServerFrame) {
    let frame = ServerFrame::from_json(text).expect("parses");
    assert_eq!(frame, expected);
    let written: Value = serde_json::from_str(&frame.to_json()).expect("writes JSON");
    let original: Value = serde_json::from_str(text).expect("literal is JSON");
    assert_eq!(written, original);
}

#[test]
fn heartbeat_is_a_bare_number() {
    assert_eq!(ClientFrame::from_json("0").unwrap(), ClientFrame::Heartbeat(0));
    assert_eq!(ClientFrame::from_json("17").unwrap(), ClientFrame::Heartbeat(17));
    assert_eq!(ClientFrame::Heartbeat(3).to_json(), "3");
    assert!(ClientFrame::from_json("-1").is_err());
}

#[test]
fn connect() {
    client(
        r#"{"type":"connect","msg":{"token":"t.o.k","appId":"wd123","clientInfo":{"sdk":"web","version":"2.4.1"}}}"#,
        ClientFrame::Connect(Connect {
            token: "t.o.k".into(),
            app_id: "wd123".into(),
            client_info: json!({"sdk":"web","version":"2.4.1"}),
            service: false,
            extra: Extra::new(),
        }),
    );
}

#[test]
fn connect_of_a_service_endpoint() {
    client(
        r#"{"type":"connect","msg":{"token":"t.o.k","appId":"wd123","clientInfo":{"sdk":"wilddog-gst"},"service":true}}"#,
        ClientFrame::Connect(Connect {
            token: "t.o.k".into(),
            app_id: "wd123".into(),
            client_info: json!({"sdk":"wilddog-gst"}),
            service: true,
            extra: Extra::new(),
        }),
    );
    // `false` is the default, and is not written.
    let c = ClientFrame::from_json(
        r#"{"type":"connect","msg":{"token":"t","appId":"a","service":false}}"#,
    )
    .unwrap();
    assert!(matches!(&c, ClientFrame::Connect(Connect { service: false, .. })), "{c:?}");
    let written: Value = serde_json::from_str(&c.to_json()).unwrap();
    assert_eq!(written, json!({"type":"connect","msg":{"token":"t","appId":"a"}}));
    assert!(
        ClientFrame::from_json(
            r#"{"type":"connect","msg":{"token":"t","appId":"a","service":"yes"}}"#
        )
        .is_err()
    );
}

#[test]
fn resume_a_live_conversation() {
    for (role, text) in [(Role::Caller, "caller"), (Role::Callee, "callee")] {
        client(
            &format!(r#"{{"type":"resume","cid":"c1","to":"bob","msg":{{"role":"{text}"}}}}"#),
            ClientFrame::Resume { cid: "c1".into(), to: "bob".into(), msg: ResumeMsg::new(role) },
        );
    }
    let f =
        ClientFrame::Resume { cid: "c1".into(), to: "b".into(), msg: ResumeMsg::new(Role::Callee) };
    assert_eq!(f.kind(), "resume");
    for bad in [
        r#"{"type":"resume","cid":"c1","to":"bob","msg":{}}"#,
        r#"{"type":"resume","cid":"c1","to":"bob","msg":{"role":"boss"}}"#,
        r#"{"type":"resume","to":"bob","msg":{"role":"caller"}}"#,
        r#"{"type":"resume","cid":"c1","msg":{"role":"caller"}}"#,
    ] {
        assert!(ClientFrame::from_json(bad).is_err(), "accepted {bad}");
    }
}

#[test]
fn connack_ok_with_ice_servers() {
    server(
        r#"{"type":"connack","msg":{"code":0,"stopped":false,"iceServers":[
            {"url":"stun:127.0.0.1:8930","urls":"stun:127.0.0.1:8930","type":"stun"},
            {"url":"turn:t.example:3478","urls":["turn:t.example:3478"],"username":"u","credential":"c","type":"turn"}]}}"#,
        ServerFrame::Connack {
            url: None,
            msg: Connack {
                code: 0,
                stopped: false,
                ice_servers: vec![
                    IceServer {
                        url: Some("stun:127.0.0.1:8930".into()),
                        urls: Some(Urls::One("stun:127.0.0.1:8930".into())),
                        kind: Some("stun".into()),
                        ..Default::default()
                    },
                    IceServer {
                        url: Some("turn:t.example:3478".into()),
                        urls: Some(Urls::Many(vec!["turn:t.example:3478".into()])),
                        username: Some("u".into()),
                        credential: Some("c".into()),
                        kind: Some("turn".into()),
                        extra: Extra::new(),
                    },
                ],
                app_id_invalid: false,
                max_frame_bytes: None,
                extra: Extra::new(),
            },
        },
    );
    // Extension: our server says how large a frame it takes.
    server(
        r#"{"type":"connack","msg":{"code":0,"stopped":false,"iceServers":[],"maxFrameBytes":262144}}"#,
        ServerFrame::Connack {
            url: None,
            msg: Connack { max_frame_bytes: Some(262_144), ..Default::default() },
        },
    );
}

#[test]
fn the_hard_frame_limit_is_four_times_the_limit() {
    assert_eq!(hard_frame_limit(DEFAULT_MAX_FRAME_BYTES), 1024 * 1024);
    assert_eq!(hard_frame_limit(usize::MAX), usize::MAX);
}

#[test]
fn client_frames_name_their_cid() {
    let call = ClientFrame::from_json(r#"{"type":"call","cid":"c1","to":"bob","msg":{}}"#);
    assert_eq!(call.expect("call").cid(), Some("c1"));
    assert_eq!(ClientFrame::Heartbeat(1).cid(), None);
    let device = ClientFrame::from_json(r#"{"type":"device","msg":{}}"#).expect("device");
    assert_eq!(device.cid(), None);
}

#[test]
fn connack_codes_and_redirect() {
    server(
        r#"{"type":"connack","msg":{"code":2,"iceServers":[],"stopped":false}}"#,
        ServerFrame::Connack {
            url: None,
            msg: Connack { code: connack_code::TOKEN_EXPIRED, ..Default::default() },
        },
    );
    // Extension: code 1 for an app id the server does not have (41008, not 41002).
    server(
        r#"{"type":"connack","msg":{"code":1,"iceServers":[],"stopped":false,"appIdInvalid":true}}"#,
        ServerFrame::Connack {
            url: None,
            msg: Connack {
                code: connack_code::TOKEN_INVALID,
                app_id_invalid: true,
                ..Default::default()
            },
        },
    );
    server(
        r#"{"type":"connack","url":"wss://node2.example/ws","msg":{"code":0,"iceServers":[],"stopped":false}}"#,
        ServerFrame::Connack {
            url: Some("wss://node2.example/ws".into()),
            msg: Connack::default(),
        },
    );
}

#[test]
fn call_as_sent_and_as_forwarded() {
    client(
        r#"{"type":"call","cid":"c1","to":"bob","msg":{"data":"hello","iceServers":[{"url":"stun:s:1","urls":"stun:s:1"}]}}"#,
        ClientFrame::Conversation {
            cid: "c1".into(),
            to: "bob".into(),
            body: Body::Call(CallMsg {
                data: Some(json!("hello")),
                ice_servers: Some(vec![IceServer {
                    url: Some("stun:s:1".into()),
                    urls: Some(Urls::One("stun:s:1".into())),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        },
    );
    server(
        r#"{"type":"call","cid":"c1","from":"alice","msg":{"data":"hello","turnCredential":{"username":"u","credential":"p"},"preferredVideoCodec":"VP8","x-ext":1}}"#,
        ServerFrame::Conversation {
            cid: "c1".into(),
            from: "alice".into(),
            body: Body::Call(CallMsg {
                data: Some(json!("hello")),
                turn_credential: Some(TurnCredential {
                    username: "u".into(),
                    credential: "p".into(),
                }),
                preferred_video_codec: Some("VP8".into()),
                extra: [("x-ext".to_owned(), json!(1))].into_iter().collect(),
                ..Default::default()
            }),
        },
    );
}

#[test]
fn call_data_as_text() {
    let m = CallMsg { data: Some(json!({"a":1})), ..Default::default() };
    assert_eq!(m.data_text().as_deref(), Some(r#"{"a":1}"#));
    assert_eq!(CallMsg::default().data_text(), None);
}

#[test]
fn answers_to_a_call() {
    for (kind, body) in [
        ("accept", Body::Accept(AcceptMsg::default())),
        ("reject", Body::Reject(Empty::default())),
        ("busy", Body::Busy(Empty::default())),
        ("bye", Body::Bye(Empty::default())),
        ("restartice", Body::RestartIce(Empty::default())),
    ] {
        client(
            &format!(r#"{{"type":"{kind}","cid":"c1","to":"alice","msg":{{}}}}"#),
            ClientFrame::Conversation { cid: "c1".into(), to: "alice".into(), body: body.clone() },
        );
        server(
            &format!(r#"{{"type":"{kind}","cid":"c1","from":"bob","msg":{{}}}}"#),
            ServerFrame::Conversation { cid: "c1".into(), from: "bob".into(), body },
        );
    }
}

#[test]
fn forwarded_accept_with_the_callers_fresh_turn_credential() {
    server(
        r#"{"type":"accept","cid":"c1","from":"bob","msg":{"turnCredential":{"username":"1700000000:alice","credential":"c2VjcmV0"}}}"#,
        ServerFrame::Conversation {
            cid: "c1".into(),
            from: "bob".into(),
            body: Body::Accept(AcceptMsg {
                turn_credential: Some(TurnCredential {
                    username: "1700000000:alice".into(),
                    credential: "c2VjcmV0".into(),
                }),
                ..Default::default()
            }),
        },
    );
}

#[test]
fn missing_msg_reads_as_empty() {
    let f = ClientFrame::from_json(r#"{"type":"bye","cid":"c1","to":"a"}"#).unwrap();
    assert_eq!(
        f,
        ClientFrame::Conversation {
            cid: "c1".into(),
            to: "a".into(),
            body: Body::Bye(Empty::default())
        }
    );
}

#[test]
fn offer_answer_candidate() {
    client(
        r#"{"type":"offer","cid":"c1","to":"bob","msg":{"sdp":"v=0\r\n"}}"#,
        ClientFrame::Conversation {
            cid: "c1".into(),
            to: "bob".into(),
            body: Body::Offer(SdpMsg { sdp: "v=0\r\n".into(), ..Default::default() }),
        },
    );
    server(
        r#"{"type":"answer","cid":"c1","from":"bob","msg":{"sdp":"v=0\r\n","restartId":3}}"#,
        ServerFrame::Conversation {
            cid: "c1".into(),
            from: "bob".into(),
            body: Body::Answer(SdpMsg {
                sdp: "v=0\r\n".into(),
                restart_id: Some(json!(3)),
                extra: Extra::new(),
            }),
        },
    );
    client(
        r#"{"type":"candidate","cid":"c1","to":"bob","msg":{"sdpMLineIndex":0,"sdpMid":"0","sdp":"candidate:1 1 UDP 2122252543 127.0.0.1 50000 typ host"}}"#,
        ClientFrame::Conversation {
            cid: "c1".into(),
            to: "bob".into(),
            body: Body::Candidate(CandidateMsg {
                sdp_mline_index: Some(0),
                sdp_mid: Some("0".into()),
                sdp: "candidate:1 1 UDP 2122252543 127.0.0.1 50000 typ host".into(),
                extra: Extra::new(),
            }),
        },
    );
}

#[test]
fn telemetry_and_acks() {
    client(
        r#"{"type":"device","cid":"c1","msg":{"os":"linux"}}"#,
        ClientFrame::Telemetry {
            kind: TelemetryKind::Device,
            cid: Some("c1".into()),
            msg: json!({"os":"linux"}),
        },
    );
    client(
        r#"{"type":"quality","cid":"c1","msg":{"rtt":3}}"#,
        ClientFrame::Telemetry {
            kind: TelemetryKind::Quality,
            cid: Some("c1".into()),
            msg: json!({"rtt":3}),
        },
    );
    for (kind, ack) in [
        (TelemetryKind::Device, "deviceack"),
        (TelemetryKind::Start, "startack"),
        (TelemetryKind::End, "endack"),
    ] {
        server(
            &format!(r#"{{"type":"{ack}","cid":"c1","msg":{{"code":0}}}}"#),
            ServerFrame::TelemetryAck { kind, cid: Some("c1".into()), code: 0 },
        );
    }
    assert_eq!(TelemetryKind::Quality.ack_kind(), None);
}

#[test]
fn extension_frames() {
    server(
        r#"{"type":"unreachable","cid":"c1","from":"bob","msg":{"reason":"offline"}}"#,
        ServerFrame::Unreachable { cid: "c1".into(), from: "bob".into() },
    );
    server(
        r#"{"type":"error","cid":"c1","msg":{"code":"not_party","reason":"you are not a party of c1","ref":"offer"}}"#,
        ServerFrame::Error {
            cid: Some("c1".into()),
            msg: ErrorMsg {
                code: ErrorCode::NotParty,
                reason: "you are not a party of c1".into(),
                refers_to: Some("offer".into()),
            },
        },
    );
    server(
        r#"{"type":"turn","msg":{"username":"1700000000:alice","credential":"c2VjcmV0"}}"#,
        ServerFrame::Turn(TurnCredential {
            username: "1700000000:alice".into(),
            credential: "c2VjcmV0".into(),
        }),
    );
    let no_credential = ServerFrame::from_json(r#"{"type":"turn","msg":{"username":"1:a"}}"#);
    assert!(matches!(no_credential, Err(FrameError::BadMsg { .. })), "{no_credential:?}");
    let newer =
        ServerFrame::from_json(r#"{"type":"error","msg":{"code":"brand_new","reason":"x"}}"#)
            .unwrap();
    assert!(matches!(
        newer,
        ServerFrame::Error { msg: ErrorMsg { code: ErrorCode::Other, .. }, .. }
    ));
}

#[test]
fn unknown_types_are_kept() {
    client(
        r#"{"type":"mystery","cid":"c9","to":"z","msg":{"k":[1,2]}}"#,
        ClientFrame::Unknown(UnknownFrame {
            kind: "mystery".into(),
            cid: Some("c9".into()),
            peer: Some("z".into()),
            msg: json!({"k":[1,2]}),
        }),
    );
    server(
        r#"{"type":"mystery","from":"z","msg":{}}"#,
        ServerFrame::Unknown(UnknownFrame {
            kind: "mystery".into(),
            cid: None,
            peer: Some("z".into()),
            msg: json!({}),
        }),
    );
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    for text in [
        "",
        "not json",
        "[1,2]",
        r#"{"cid":"c1"}"#,
        r#"{"type":7}"#,
        r#"{"type":"offer","to":"b","msg":{"sdp":"x"}}"#,
        r#"{"type":"offer","cid":"c","msg":{"sdp":"x"}}"#,
        r#"{"type":"offer","cid":"c","to":"b","msg":{"nosdp":1}}"#,
        r#"{"type":"offer","cid":"c","to":"b","msg":"text"}"#,
        r#"{"type":"connect","msg":{"appId":"a"}}"#,
        r#"{"type":"candidate","cid":"c","to":"b","msg":{"sdpMLineIndex":-1,"sdp":"x"}}"#,
        "99999999999999999999999",
    ] {
        assert!(ClientFrame::from_json(text).is_err(), "accepted {text:?}");
    }
    let e = ClientFrame::from_json(r#"{"type":"offer","cid":"c","msg":{"sdp":"x"}}"#).unwrap_err();
    assert!(matches!(e, FrameError::MissingField { field: "to", .. }), "{e}");
    assert!(ServerFrame::from_json("5").is_err());
}
