//! 1,000 clients calling in pairs at once: every frame reaches the right peer exactly once.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Client, TestServer};
use serde_json::json;
use tokio::sync::{Barrier, Semaphore};
use wilddog_protocol::{Body, ServerFrame};
use wilddog_server::DEV_APP_ID;

const PAIRS: usize = 500;
const CANDIDATES: usize = 5;
/// Per pair: call, accept, offer, answer, candidates both ways, bye.
const FRAMES_PER_PAIR: usize = 5 + 2 * CANDIDATES;

async fn next_conv(c: &mut Client) -> (String, String, Body) {
    match c.recv().await {
        ServerFrame::Conversation { cid, from, body } => (cid, from, body),
        other => panic!("expected a relayed frame, got {other:?}"),
    }
}

async fn caller(mut c: Client, i: usize, start: Arc<Barrier>) {
    let (cid, me, peer) = (format!("cid-{i}"), format!("caller-{i}"), format!("callee-{i}"));
    start.wait().await;
    c.call(&cid, &peer).await;
    let (got_cid, from, body) = next_conv(&mut c).await;
    assert_eq!(
        (got_cid.as_str(), from.as_str(), body.kind()),
        (cid.as_str(), peer.as_str(), "accept")
    );
    c.say("offer", &cid, &peer, json!({"sdp": format!("offer of {me}")})).await;
    for k in 0..CANDIDATES {
        c.say(
            "candidate",
            &cid,
            &peer,
            json!({"sdpMLineIndex": k, "sdp": format!("candidate:{me}:{k}")}),
        )
        .await;
    }
    let (got_cid, from, body) = next_conv(&mut c).await;
    assert_eq!((got_cid.as_str(), from.as_str()), (cid.as_str(), peer.as_str()));
    let Body::Answer(answer) = body else { panic!("{me}: expected answer, got {body:?}") };
    assert_eq!(answer.sdp, format!("answer of {peer}"));
    for k in 0..CANDIDATES {
        let (got_cid, from, body) = next_conv(&mut c).await;
        assert_eq!((got_cid.as_str(), from.as_str()), (cid.as_str(), peer.as_str()));
        let Body::Candidate(cand) = body else { panic!("{me}: expected candidate, got {body:?}") };
        assert_eq!(cand.sdp, format!("candidate:{peer}:{k}"), "in order, once each");
    }
    c.say("bye", &cid, &peer, json!({})).await;
    c.expect_silence(Duration::from_millis(300)).await;
}

async fn callee(mut c: Client, i: usize, start: Arc<Barrier>) {
    let (cid, me, peer) = (format!("cid-{i}"), format!("callee-{i}"), format!("caller-{i}"));
    start.wait().await;
    let (got_cid, from, body) = next_conv(&mut c).await;
    assert_eq!(
        (got_cid.as_str(), from.as_str(), body.kind()),
        (cid.as_str(), peer.as_str(), "call")
    );
    c.say("accept", &cid, &peer, json!({})).await;
    let (got_cid, from, body) = next_conv(&mut c).await;
    assert_eq!((got_cid.as_str(), from.as_str()), (cid.as_str(), peer.as_str()));
    let Body::Offer(offer) = body else { panic!("{me}: expected offer, got {body:?}") };
    assert_eq!(offer.sdp, format!("offer of {peer}"));
    c.say("answer", &cid, &peer, json!({"sdp": format!("answer of {me}")})).await;
    for k in 0..CANDIDATES {
        c.say(
            "candidate",
            &cid,
            &peer,
            json!({"sdpMLineIndex": k, "sdp": format!("candidate:{me}:{k}")}),
        )
        .await;
    }
    for k in 0..CANDIDATES {
        let (got_cid, from, body) = next_conv(&mut c).await;
        assert_eq!((got_cid.as_str(), from.as_str()), (cid.as_str(), peer.as_str()));
        let Body::Candidate(cand) = body else { panic!("{me}: expected candidate, got {body:?}") };
        assert_eq!(cand.sdp, format!("candidate:{peer}:{k}"), "in order, once each");
    }
    let (got_cid, from, body) = next_conv(&mut c).await;
    assert_eq!(
        (got_cid.as_str(), from.as_str(), body.kind()),
        (cid.as_str(), peer.as_str(), "bye")
    );
    c.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_clients_in_pairs_every_frame_exactly_once() {
    // Both ends of 1,000 sockets live in this process: 2,000 descriptors and then some.
    let wanted = 4096;
    let got = rlimit::increase_nofile_limit(wanted).expect("raising RLIMIT_NOFILE");
    assert!(
        got >= wanted,
        "this test needs {wanted} file descriptors; the hard limit allows {got} (raise `ulimit -Hn`)"
    );
    let server = TestServer::dev().await;
    let url = server.url();
    // Connect everyone first (a few hundred handshakes at a time), then start all calls at once.
    let handshakes = Arc::new(Semaphore::new(200));
    let mut logins = Vec::new();
    for i in 0..PAIRS {
        for uid in [format!("caller-{i}"), format!("callee-{i}")] {
            let (url, token, handshakes) = (url.clone(), server.token(&uid), handshakes.clone());
            logins.push(tokio::spawn(async move {
                let _permit = handshakes.acquire().await.unwrap();
                let mut c = Client::open(&url).await;
                c.connect(DEV_APP_ID, &token).await;
                c
            }));
        }
    }
    let mut clients = Vec::new();
    for login in logins {
        clients.push(login.await.unwrap());
    }
    assert_eq!(server.metric("wilddog_authenticated_connections").await, 2 * PAIRS as i64);

    let start = Arc::new(Barrier::new(2 * PAIRS));
    let mut tasks = Vec::new();
    let mut clients = clients.into_iter();
    for i in 0..PAIRS {
        let (a, b) = (clients.next().unwrap(), clients.next().unwrap());
        tasks.push(tokio::spawn(caller(a, i, start.clone())));
        tasks.push(tokio::spawn(callee(b, i, start.clone())));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        server.metric("wilddog_frames_relayed_total").await,
        (PAIRS * FRAMES_PER_PAIR) as i64,
        "no frame relayed twice or lost"
    );
    assert_eq!(server.metric("wilddog_conversations").await, 0);
    assert_eq!(server.metric("wilddog_frames_refused_total").await, 0);
}
