//! A C host of the plugin (`gst-launch-1.0`) survives the signaling server closing the
//! connection under a write: `server=wss://…` named a plain `ws://` server, whose HTTP 400
//! reply to the TLS ClientHello and close made rustls's alert hit a closed socket. The
//! write raised SIGPIPE and gst-launch died of it (exit 141, not a word said) before the
//! element could post its error. A Rust test process cannot show this (Rust ignores
//! SIGPIPE at startup), so the test runs the real `gst-launch-1.0` with the built plugin.

mod common;

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::TestServer;

/// Runs `gst-launch-1.0 args…` to its end (killed after `within`): its status and output.
fn gst_launch(args: &str, within: Duration) -> (ExitStatus, String) {
    let mut child = common::with_built_plugin(Command::new("gst-launch-1.0"), "sigpipe")
        .args(args.split_whitespace())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("gst-launch-1.0 runs (gstreamer1.0-tools)");
    let readers: Vec<_> = [
        Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ]
    .into_iter()
    .map(|mut stream| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stream.read_to_string(&mut text);
            text
        })
    })
    .collect();
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let output: String = readers.into_iter().map(|r| r.join().unwrap()).collect();
            panic!("gst-launch-1.0 still ran after {within:?}; output:\n{output}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = readers.into_iter().map(|r| r.join().unwrap()).collect();
    (status, output)
}

#[test]
fn wss_to_a_plain_server_is_an_element_error_not_sigpipe() {
    if !common::enter_netns("wss_to_a_plain_server_is_an_element_error_not_sigpipe") {
        return;
    }
    let server = TestServer::start();
    let wss = server.url.replace("ws://", "wss://");
    let line = format!(
        "wilddogcall name=c server={wss} app-id=wilddog-dev token={} remote-uid=echo \
         ice-local-addresses=127.0.0.1 videotestsrc is-live=true ! c.video_sink",
        server.token("alice")
    );
    // The newcomer's report: killed in 3 runs of 3.
    for run in 1..=3 {
        let started = Instant::now();
        // Generous: the first run scans the plugins into a fresh registry, on a loaded machine.
        let (status, output) = gst_launch(&line, Duration::from_secs(60));
        println!("run {run}: {status} after {:?}", started.elapsed());
        assert_ne!(
            status.signal(),
            Some(libc::SIGPIPE),
            "run {run}: gst-launch-1.0 was killed by SIGPIPE; output:\n{output}"
        );
        assert_eq!(status.code(), Some(1), "run {run}: {status}; output:\n{output}");
        let error = output
            .lines()
            .skip_while(|l| !l.starts_with("ERROR: from element"))
            .take(2)
            .collect::<Vec<_>>()
            .join("\n");
        println!("{error}");
        assert!(
            error.contains("GstWilddogCall:c: cannot reach the signaling server")
                && error.contains(&wss),
            "run {run}: no element error about the server; output:\n{output}"
        );
    }
}
