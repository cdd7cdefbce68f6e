//! CPU adaptation of the video encoder (`cpu-adaptation`) in a real call on a machine
//! overloaded on purpose: busy threads, two per core and one more, for the test's duration.
//! With it on, the sender's stats show a faster VP8 speed than -6 and the receiver still
//! decodes frames; off, the speed stays -6 under the same load.
//!
//! One test in a binary of its own: its busy threads would slow any test running beside it
//! (the tests of one binary run in parallel).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Endpoint, EndpointConfig, Seen, TestServer, enter_netns};

const T: Duration = Duration::from_secs(20);

/// Threads spinning until dropped: three per core and one more, so that every core is full
/// and the encoder waits for one (with one per core and one more, the encoder's usage at -6
/// peaked at 84 % in one of three runs, under Chrome's 85 %; with two per core and one
/// more, at 84 % in one full suite of 2026-12-03, where it had passed in the runs before).
struct Overload {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Overload {
    fn start() -> Overload {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..3 * cores + 1)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut x = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        x = std::hint::black_box(
                            x.wrapping_mul(6364136223846793005).wrapping_add(1),
                        );
                    }
                })
            })
            .collect();
        Overload { stop, threads }
    }
}

impl Drop for Overload {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The sender's `local` stats: (encoderSpeed, encodeUsage %).
fn speed_and_usage(text: &str) -> (i32, u32) {
    let s: gst::Structure = text.parse().expect("a stats structure");
    let local: gst::Structure = s.get("local").expect("local stats");
    let speed = local.get::<i32>("encoderSpeed").expect("local.encoderSpeed (VP8)");
    let usage = local.get::<u32>("encodeUsage").expect("local.encodeUsage");
    (speed, usage)
}

/// `sender` calls `receiver` (receive-only), sending camera-like video at 30 fps in 720p:
/// a VP8 encoder at -6 that a full machine cannot keep up with. Returns when the receiver
/// decodes a frame.
fn call(server: &TestServer, sender: &str, receiver: &str, adapt: &str) -> (Endpoint, Endpoint) {
    let cfg = |uid| {
        EndpointConfig::new(uid)
            .prop("dimension", "720p")
            .prop("max-fps", "30")
            .prop("cpu-adaptation", adapt)
    };
    let mut rx = Endpoint::new(server, cfg(receiver).receive_only());
    let tx = Endpoint::new(server, cfg(sender).calling(receiver).camera_like(30));
    rx.play();
    std::thread::sleep(Duration::from_millis(300));
    tx.play();
    rx.wait_for("a decoded frame", T, |s| matches!(s, Seen::VideoFrame { .. }));
    (tx, rx)
}

/// The sender's stats over `window`: (encoderSpeed, encodeUsage) of each report.
fn watch_stats(
    tx: &mut Endpoint,
    window: Duration,
    until: impl Fn(i32) -> bool,
) -> Vec<(i32, u32)> {
    let deadline = Instant::now() + window;
    let mut reports = Vec::new();
    while let Ok(s) = tx.seen.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        if let Seen::Stats(text) = &s {
            let report = speed_and_usage(text);
            reports.push(report);
            if until(report.0) {
                break;
            }
        }
        tx.log.push(s);
    }
    reports
}

#[test]
fn an_overloaded_machine_makes_the_encoder_faster_and_frames_still_come() {
    if !enter_netns("an_overloaded_machine_makes_the_encoder_faster_and_frames_still_come") {
        return;
    }
    let server = TestServer::start();
    let _overload = Overload::start();

    // Off: the encoder keeps Chrome's speed, however late its frames.
    {
        let (mut tx, rx) = call(&server, "alice", "bob", "false");
        let before = rx.frames();
        let reports = watch_stats(&mut tx, Duration::from_secs(6), |_| false);
        println!(
            "cpu-adaptation=false: (encoderSpeed, encodeUsage %) {reports:?}, {} frames decoded",
            rx.frames() - before
        );
        assert!(reports.len() >= 2, "{reports:?}");
        assert!(
            reports.iter().all(|r| r.0 == -6),
            "the speed changed with cpu-adaptation=false: {reports:?}"
        );
        // The load is there: the encoder overuses (Chrome's 85 %) at some point.
        assert!(reports.iter().any(|r| r.1 > 85), "the encoder was not overloaded: {reports:?}");
    }

    // On (the default): a faster speed, and the picture keeps coming.
    let (mut tx, rx) = call(&server, "carol", "dave", "true");
    let started = Instant::now();
    // Until the fastest speed (or the window's end: the load may be lighter).
    let reports = watch_stats(&mut tx, Duration::from_secs(12), |speed| speed == -16);
    println!(
        "cpu-adaptation=true: (encoderSpeed, encodeUsage %) {reports:?} within {:?}",
        started.elapsed()
    );
    assert!(
        reports.last().is_some_and(|r| r.0 < -6),
        "the encoder stayed at -6 on a full machine: {reports:?}"
    );
    // Still a moving picture (how fast depends on how full the machine is: the busy threads
    // take what they can, and the receiver's decoder shares the cores).
    let before = rx.frames();
    std::thread::sleep(Duration::from_secs(4));
    let frames = rx.frames() - before;
    println!("the receiver decoded {frames} frames in 4 s at the faster speed");
    assert!(frames >= 3, "the receiver got {frames} frames in 4 s");
}
