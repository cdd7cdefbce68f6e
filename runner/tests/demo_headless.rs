//! `wilddog-runner demo`, headless, in a private network namespace: it starts the server
//! and the echo bot, completes its self-check call, and says how to call in.

mod run_support;

use run_support::{Runner, enter_netns};

#[test]
fn demo_completes_its_self_check_call() {
    if !enter_netns("demo_completes_its_self_check_call") {
        return;
    }
    let mut demo = Runner::start(
        "demo",
        &[
            "demo",
            "--listen",
            "127.0.0.1:0",
            "--json",
            "--self-check-only",
            "--check-seconds",
            "5",
            "--ice-local-addresses",
            "127.0.0.1",
        ],
    );
    let verdict = demo.wait_event("self_check");
    assert_eq!(verdict["passed"], true, "{verdict}");
    assert_eq!(demo.wait_exit(), 0, "stderr:\n{}", demo.stderr());
    let of = |endpoint: &str| -> Vec<String> {
        demo.seen
            .iter()
            .filter(|e| e["endpoint"] == endpoint)
            .map(|e| e["event"].as_str().unwrap().to_owned())
            .collect()
    };
    let caller = of("self-check");
    for name in ["ready", "response", "first_frame", "stats", "closed"] {
        assert!(caller.contains(&name.to_owned()), "self-check events {caller:?} lack {name}");
    }
    assert!(of("echo").contains(&"called".to_owned()), "echo events: {:?}", of("echo"));
    let listening = demo.seen.iter().find(|e| e["event"] == "listening").unwrap();
    assert!(listening["http"].as_str().unwrap().starts_with("http://127.0.0.1:"), "{listening}");
}

#[test]
fn demo_serves_and_says_how_to_call_in_until_stopped() {
    if !enter_netns("demo_serves_and_says_how_to_call_in_until_stopped") {
        return;
    }
    let mut demo = Runner::start(
        "demo",
        &[
            "demo",
            "--listen",
            "127.0.0.1:0",
            "--json",
            // As long as the other test's: on a 2-core machine running the whole suite a
            // call has taken 2.7 s to carry its first frame, and a 3 s self-check then
            // decoded nothing.
            "--check-seconds",
            "5",
            "--ice-local-addresses",
            "127.0.0.1",
        ],
    );
    assert_eq!(demo.wait_event("self_check")["passed"], true);
    let serving = demo.wait_event("serving");
    assert_eq!(serving["echo_uid"], "echo");
    let page = serving["http"].as_str().unwrap().to_owned();
    // The page a person opens is there.
    let addr = page.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    use std::io::{Read, Write};
    write!(stream, "GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{}", &response[..response.len().min(200)]);
    assert!(
        response.contains("<html")
            || response.contains("<!doctype")
            || response.contains("<!DOCTYPE")
    );
    demo.signal("INT");
    assert_eq!(demo.wait_exit(), 0, "stderr:\n{}", demo.stderr());
}
