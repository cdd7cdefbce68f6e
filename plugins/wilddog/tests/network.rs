//! Calls on links like users' (issue 10), each in a private network namespace whose
//! loopback is shaped: capacity caps with `tc tbf` (both directions of the call share the
//! cap, as they share `lo`), random UDP loss with nftables. Short versions of the
//! benchmark's scenarios (`scripts/bench.sh --network`), asserting what a user sees: the
//! picture keeps moving, the sender backs off, lost packets are asked for and resent, an
//! echo comes back at the rate it was sent. And one unshaped: the sent rate counts a
//! camera's video again after it paused.

mod common;

#[path = "../../../tests/support/shaping.rs"]
mod shaping;

use std::time::{Duration, Instant};

use gst::glib;
use gst::prelude::*;

use common::{Endpoint, EndpointConfig, Seen, Stats, TestServer, enter_netns};

const T: Duration = Duration::from_secs(20);

fn is_frame(s: &Seen) -> bool {
    matches!(s, Seen::VideoFrame { .. })
}

/// Frames and stats an endpoint got over `window`.
fn watch(ep: &mut Endpoint, window: Duration) -> (usize, Vec<Stats>) {
    let (frames, stats, _) = watch_gaps(ep, window);
    (frames, stats)
}

/// Frames and stats an endpoint got over `window`, and the longest time without a frame in
/// it (a freeze).
fn watch_gaps(ep: &mut Endpoint, window: Duration) -> (usize, Vec<Stats>, Duration) {
    let start = Instant::now();
    let deadline = start + window;
    let (mut frames, mut stats) = (0, Vec::new());
    let (mut last_frame, mut longest) = (start, Duration::ZERO);
    while let Ok(s) = ep.seen.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        match &s {
            Seen::VideoFrame { .. } => {
                frames += 1;
                longest = longest.max(last_frame.elapsed());
                last_frame = Instant::now();
            }
            Seen::Stats(text) => stats.push(Stats::parse(text)),
            _ => ep.log.push(s),
        }
    }
    (frames, stats, longest.max(last_frame.elapsed().min(window)))
}

/// The stats an endpoint reported since it was last drained, without waiting (what else it
/// saw goes to its log, its decoded frames excepted): the reports of a window that another
/// endpoint was watched over.
fn drain_stats(ep: &mut Endpoint) -> Vec<Stats> {
    let mut stats = Vec::new();
    while let Ok(s) = ep.seen.try_recv() {
        match s {
            Seen::Stats(text) => stats.push(Stats::parse(&text)),
            Seen::VideoFrame { .. } => {}
            other => ep.log.push(other),
        }
    }
    stats
}

/// The mean `bitSentRate` of `stats`, kbit/s.
fn mean_sent(stats: &[Stats]) -> u64 {
    stats.iter().map(|s| s.local_u64("bitSentRate")).sum::<u64>() / stats.len().max(1) as u64
}

/// What the headers of the packets counted in `stats` add to their `bitSentRate`, as a
/// share of it: `bitSentRate` counts RTP payload only (webrtcbin's `bytes-sent`,
/// rtpsession's `octets-sent`), and each packet costs about
/// `congestion::PACKET_OVERHEAD_BYTES` (60) more on the link (RTP, its header extensions,
/// SRTP's tag, UDP, IPv4). From the growth of `packetsSent` and `bytesSent` over the
/// reports.
fn header_share(stats: &[Stats]) -> f64 {
    let (Some(first), Some(last)) = (stats.first(), stats.last()) else { return 0.0 };
    let packets = last.local_u64("packetsSent").saturating_sub(first.local_u64("packetsSent"));
    let bytes = last.local_u64("bytesSent").saturating_sub(first.local_u64("bytesSent"));
    (packets * 60) as f64 / bytes.max(1) as f64
}

/// The Opus encoder's (`bitrate` bit/s, `frame-size` ms) of each of a call's audio
/// chains: the stats report no audio target, so it is read from the element.
fn opus_settings(ep: &Endpoint) -> Vec<(i32, String)> {
    elements(ep, "opusenc")
        .iter()
        .map(|e| {
            let frame = e.property_value("frame-size");
            let frame = glib::EnumValue::from_value(&frame)
                .map_or_else(|| "?".to_owned(), |(_, v)| v.nick().to_owned());
            (e.property::<i32>("bitrate"), frame)
        })
        .collect()
}

/// Alice calls bob, both sending camera-like 480p video at 15 fps; returns when alice
/// decodes bob's frames.
fn call(server: &TestServer, props: &[(&'static str, &'static str)]) -> (Endpoint, Endpoint) {
    let mut cfg_b = EndpointConfig::new("bob").camera_like(15);
    let mut cfg_a = EndpointConfig::new("alice").calling("bob").camera_like(15);
    for (k, v) in props {
        cfg_a = cfg_a.prop(k, v);
        cfg_b = cfg_b.prop(k, v);
    }
    let bob = Endpoint::new(server, cfg_b);
    let mut alice = Endpoint::new(server, cfg_a);
    bob.play();
    std::thread::sleep(Duration::from_millis(300));
    alice.play();
    alice.wait_for("a decoded frame", T, is_frame);
    (alice, bob)
}

/// How long a call runs on a clean link before the cap comes.
const MID_CALL: Duration = Duration::from_secs(3);

/// A 250 kbit/s cap mid-call (both directions share it): congestion control brings what the
/// two sides send together under the capacity, the video's target and size and the Opus
/// bitrate down, says so (`wilddog-quality` low), and the picture keeps moving: above 8 fps
/// again within 10 s, the figure (over a 2 s window, so at 10 fps the picture moved
/// again 1.7 s earlier). With the standing-queue guard on each
/// transport-wide feedback report and on their silence it took 3.3 to 4.8 s at a load of 3
/// to 5 on the 2-core machine (4.6 and 5.5 s at 7 with the cap right at the first frame); on
/// the 2 s stats tick 5.4 to 6.6 s at the same load, and up to 19 s on a loaded machine.
/// Without congestion control it falls to 0 fps and stays there.
#[test]
fn a_250_kbit_link_keeps_the_picture_moving() {
    if !enter_netns("a_250_kbit_link_keeps_the_picture_moving") {
        return;
    }
    let server = TestServer::start();
    let (mut alice, mut bob) = call(&server, &[]);
    // Mid-call: the estimator has had feedback from a clean link for a while.
    let _ = watch(&mut alice, MID_CALL);
    let lip_sync = LipSyncOffsets::sample(&alice);
    shaping::cap_kbit(250);
    let capped = Instant::now();
    // When, after the cap, 2 s of frames first held more than 16 (over 8 fps).
    let mut arrivals: Vec<Duration> = Vec::new();
    let recovered = loop {
        match alice.seen.recv_timeout(Duration::from_millis(200)) {
            Ok(Seen::VideoFrame { .. }) => {
                let t = capped.elapsed();
                arrivals.push(t);
                let recent = arrivals.iter().filter(|a| t - **a < Duration::from_secs(2)).count();
                if t >= Duration::from_secs(2) && recent > 16 {
                    break Some(t);
                }
            }
            Ok(other) => alice.log.push(other),
            Err(_) => {}
        }
        if capped.elapsed() > Duration::from_secs(25) {
            break None;
        }
    };
    let per_second: Vec<usize> = (0..capped.elapsed().as_secs())
        .map(|s| arrivals.iter().filter(|a| a.as_secs() == s).count())
        .collect();
    // Bob's reports of the same window (his channel held the ones before it).
    let _ = drain_stats(&mut bob);
    let (frames, stats) = watch(&mut alice, Duration::from_secs(8));
    let bob_stats = drain_stats(&mut bob);
    let (alice_opus, bob_opus) = (opus_settings(&alice), opus_settings(&bob));
    let (largest_offset_ms, largest_offset_step_ms) = lip_sync.stop();
    shaping::uncap();
    let sent: Vec<u64> = stats.iter().map(|s| s.local_u64("bitSentRate")).collect();
    let bob_sent: Vec<u64> = bob_stats.iter().map(|s| s.local_u64("bitSentRate")).collect();
    let targets: Vec<u64> = stats.iter().map(|s| s.local_u64("targetBitrate")).collect();
    let widths: Vec<u64> = stats.iter().map(|s| s.local_u64("width")).collect();
    let sent_fps: Vec<u64> = stats.iter().map(|s| s.local_u64("fps")).collect();
    let estimates = |stats: &[Stats]| -> Vec<u64> {
        stats.iter().map(|s| s.local_u64("estimatedBitrate")).collect()
    };
    // Payload of the two directions together, and with their packets' headers.
    let together = mean_sent(&stats) + mean_sent(&bob_stats);
    let shares = (header_share(&stats), header_share(&bob_stats));
    let with_headers = mean_sent(&stats) as f64 * (1.0 + shares.0)
        + mean_sent(&bob_stats) as f64 * (1.0 + shares.1);
    println!(
        "250 kbit/s: frames per second {per_second:?}, above 8 fps after {recovered:?}; then \
         {frames} frames in 8 s, alice sent {sent:?} kbit/s, bob {bob_sent:?} (together \
         {together} kbit/s of payload, {with_headers:.0} with headers adding {:.0} and {:.0} \
         %), targets {targets:?}, widths {widths:?} at {sent_fps:?} fps, estimates alice {:?} \
         bob {:?}; Opus (bit/s, frame ms) alice {alice_opus:?} bob {bob_opus:?}; lip-sync \
         offsets up to {largest_offset_ms:.0} ms, moved at most {largest_offset_step_ms:.0} ms \
         in 50 ms",
        shares.0 * 100.0,
        shares.1 * 100.0,
        estimates(&stats),
        estimates(&bob_stats)
    );
    // The lip sync stays bounded and moves slowly (crate::recovery::LIP_SYNC_MAX_OFFSET_NS):
    // a jitterbuffer waiting at a gap waits for its offset too. Unbounded, the offsets
    // rtpbin computed from the reports of the capped link moved by 62 and 171 ms between two
    // reads 50 ms apart (two runs), and in a benchmark call to 1.0 s: 25 frames that had arrived were held, then
    // shown at once, up to 1.7 s old.
    assert!(
        largest_offset_ms <= 300.0 && largest_offset_step_ms <= 40.0,
        "lip-sync offsets up to {largest_offset_ms:.0} ms, moving {largest_offset_step_ms:.0} \
         ms in 50 ms"
    );
    let recovered = recovered.expect("the picture did not get above 8 fps in 25 s");
    assert!(recovered <= Duration::from_secs(10), "above 8 fps only after {recovered:?}");
    // And it keeps moving (under load the rate after recovery varies; frozen is under 1).
    assert!(frames >= 24, "{frames} frames in 8 s after it had recovered");
    // Both directions share the link, so what the two sides send together must fit it.
    // `bitSentRate` counts RTP payload only (webrtcbin's `bytes-sent`: no RTP, SRTP, UDP or
    // IP header, no RTCP, no retransmission or probe, which go in the RTX stream), and
    // counts it as it leaves the sender, before the bottleneck drops any: a side that does
    // not back off (`congestion-control=disabled`: over 400 kbit/s alone) is over it.
    // Their headers come on top (`header_share`: 21 to 49 % more in the runs here, with 60
    // ms Opus packets and video frames of a packet or two), so the payload and the headers of
    // both together must stay under the capacity: 106 to 150 kbit/s in the runs here (84 to
    // 115 of payload); 750 (683) when bob had congestion control disabled.
    assert!(!sent.is_empty() && !bob_sent.is_empty(), "stats: alice {sent:?}, bob {bob_sent:?}");
    assert!(
        with_headers < 250.0,
        "alice sent {sent:?} and bob {bob_sent:?} kbit/s of payload ({with_headers:.0} kbit/s \
         with headers) on a 250 kbit/s link both share"
    );
    assert!(targets.iter().all(|&t| t < 200), "the encoder target stayed at {targets:?}");
    // The audio's share comes down with the estimate too (`congestion::Controller::split`:
    // a tenth of it, 12 to 64 kbit/s, in 40 ms frames under 300 kbit/s and 60 ms under 150):
    // each side's estimate is under the 250 kbit/s both share, so its Opus encoder is at
    // 25 kbit/s at most, in longer frames, where without congestion control it stays at
    // opusenc's default, 64 kbit/s in 20 ms frames.
    for (side, opus) in [("alice", &alice_opus), ("bob", &bob_opus)] {
        assert!(
            !opus.is_empty() && opus.iter().all(|(bps, ms)| *bps <= 25_000 && ms != "20"),
            "{side}'s Opus encoder (bit/s, frame ms) {opus:?} on a 250 kbit/s link"
        );
    }
    // Under what 640x480 needs, the picture sent is smaller (the quality ladder).
    assert!(
        !widths.is_empty() && widths.iter().all(|&w| w < 640),
        "alice still sends widths {widths:?} at 250 kbit/s"
    );
    assert!(
        alice
            .log
            .iter()
            .any(|s| matches!(s, Seen::Quality(q) if q.contains("quality=(string)low"))),
        "no wilddog-quality low: {:?}",
        alice.log
    );
    // The estimator beside the path runs no pacing thread of its own (it woke every 5 ms
    // for nothing, in both calls of this process).
    let threads = thread_names();
    assert!(
        !threads.iter().any(|t| t.starts_with("rtpgccbwe")),
        "an estimator's pacing thread runs: {threads:?}"
    );
}

/// `degradation-preference=balanced`, the order "frame rate, then resolution": on a
/// 500 kbit/s cap (both directions share it; each side's video gets 100 to 200 kbit/s, under
/// the 500 that 640x480 at 15 fps needs) the first step down that congestion control
/// announces (`wilddog-quality` low) is already at two thirds of the rate, 10 fps, and so is
/// what is sent after it (160x120 to 320x240 at 10 fps in the runs), where the default,
/// `maintain-framerate`, keeps 15 fps at a smaller size. (At 250 kbit/s it sent 160x120 at 10
/// fps alone, but once in the full suite stayed at 320x240 and 10 fps with no frame decoded
/// for 6 s: docs/elements.md.)
#[test]
fn balanced_degradation_lowers_the_frame_rate_then_the_size() {
    if !enter_netns("balanced_degradation_lowers_the_frame_rate_then_the_size") {
        return;
    }
    let server = TestServer::start();
    let (mut alice, _bob) = call(&server, &[("degradation-preference", "balanced")]);
    let _ = watch(&mut alice, MID_CALL);
    shaping::cap_kbit(500);
    let _ = watch(&mut alice, Duration::from_secs(8));
    let (frames, stats) = watch(&mut alice, Duration::from_secs(6));
    shaping::uncap();
    let sent: Vec<(u64, u64)> =
        stats.iter().map(|s| (s.local_u64("width"), s.local_u64("fps"))).collect();
    // (width, fps) of each step announced.
    let announced: Vec<(u32, u32)> = alice
        .log
        .iter()
        .filter_map(|s| match s {
            Seen::Quality(text) => {
                let q: gst::Structure = text.parse().ok()?;
                Some((q.get::<u32>("width").ok()?, q.get::<u32>("fps").ok()?))
            }
            _ => None,
        })
        .collect();
    println!(
        "balanced at 500 kbit/s: announced (width, fps) {announced:?}; then alice sent (width, \
         fps) {sent:?}; alice decoded {frames} frames in 6 s"
    );
    let lowered: Vec<&(u32, u32)> =
        announced.iter().filter(|&&(w, fps)| (w, fps) != (640, 15)).collect();
    assert!(!lowered.is_empty(), "no step down announced: {announced:?}");
    assert!(lowered.iter().all(|s| s.1 == 10), "steps announced: {announced:?}");
    assert!(sent.len() >= 2, "stats: {sent:?}");
    // Measured over a stats period: a frame late by a CPU stall can count in the next one.
    let mean_fps = sent.iter().map(|s| s.1).sum::<u64>() as f64 / sent.len() as f64;
    assert!(mean_fps <= 11.0, "sent {sent:?}");
    assert!(frames >= 24, "{frames} frames in 6 s");
}

/// A link that drops and comes back, as the benchmark's step link (2 Mbit/s, 300 kbit/s for
/// 8 s, 2 Mbit/s again; both directions share it): the sender finds the capacity again by
/// probing (`crate::probe`), and its video encoder's target is back over 80 % of
/// `max-bitrate` (500 kbit/s) within 20 s of the step back up: 5.6 to 9.6 s alone here, 13.7 s
/// once in the full suite and 17.1 s once beside another call and a busy loop (stats every
/// 2 s). The first probe after the step may wait out the backoff of those that failed on the
/// capped link (up to 7.5 s), then a second of drained queue, then four or five probes passed
/// (about 0.7 s each, from the 20 to 100 kbit/s the capped link leaves), then the next stats;
/// on a loaded machine a probe can fail on a late report and wait out another backoff. GCC
/// alone grows its estimate at most 8 % a second (20 s or more from 80 kbit/s to 400), and
/// the benchmark's step link was never back at its rate within 10 s; the test also asks for
/// probes passed after the step.
/// The same probes take the call from the 300 kbit/s start to `max-bitrate` first (GCC alone
/// would be at about 340 kbit/s of video after 8 s).
#[test]
fn a_link_that_comes_back_is_found_by_probing() {
    if !enter_netns("a_link_that_comes_back_is_found_by_probing") {
        return;
    }
    let server = TestServer::start();
    shaping::cap_kbit(2000);
    let (mut alice, _bob) = call(&server, &[]);
    let (_, before) = watch(&mut alice, Duration::from_secs(8));
    let log_at_cap = alice.log.len();
    shaping::cap_kbit(300);
    let (_, low) = watch(&mut alice, Duration::from_secs(8));
    shaping::cap_kbit(2000);
    let back = Instant::now();
    // (seconds after the step up, video target kbit/s, probes passed) per stats report.
    let mut after: Vec<(f32, u64, u64)> = Vec::new();
    let mut recovered = None;
    while recovered.is_none() && back.elapsed() < Duration::from_secs(22) {
        match alice.seen.recv_timeout(Duration::from_millis(200)) {
            Ok(Seen::Stats(text)) => {
                let s = Stats::parse(&text);
                let target = s.local_u64("targetBitrate");
                after.push((back.elapsed().as_secs_f32(), target, s.local_u64("probesPassed")));
                if target >= 400 {
                    recovered = Some(back.elapsed());
                }
            }
            Ok(other) if !is_frame(&other) => alice.log.push(other),
            _ => {}
        }
    }
    // (A `wilddog-quality` posted with that target may still be on its way.)
    let _ = watch(&mut alice, Duration::from_secs(1));
    shaping::uncap();
    let targets = |stats: &[Stats]| -> Vec<u64> {
        stats.iter().map(|s| s.local_u64("targetBitrate")).collect()
    };
    let passed = |stats: &[Stats]| stats.last().map_or(0, |s| s.local_u64("probesPassed"));
    println!(
        "step link: targets at 2 Mbit/s {:?} ({} probes passed), at 300 kbit/s {:?} ({}), \
         after the step up (s, target, probes passed) {after:?}",
        targets(&before),
        passed(&before),
        targets(&low),
        passed(&low)
    );
    assert!(
        // Reached, not held to the last report: on a machine shared with other calls, a
        // report late by a CPU stall reads as queueing and takes the estimate down a little.
        targets(&before).iter().any(|&t| t >= 400),
        "the call never got to max-bitrate on a 2 Mbit/s link: {:?}",
        targets(&before)
    );
    assert!(
        targets(&low).iter().any(|&t| t < 200),
        "the target stayed at {:?} on a 300 kbit/s link",
        targets(&low)
    );
    let recovered = recovered.expect("the target was not back over 400 kbit/s 22 s after");
    assert!(recovered <= Duration::from_secs(20), "back only after {recovered:?}");
    assert!(
        after.last().is_some_and(|&(_, _, p)| p > passed(&low)),
        "no probe passed after the step up: {after:?}"
    );
    // `wilddog-quality` said so: low on the capped link, good again once back.
    let qualities: Vec<&str> = alice.log[log_at_cap..]
        .iter()
        .filter_map(|s| match s {
            Seen::Quality(q) if q.contains("quality=(string)low") => Some("low"),
            Seen::Quality(q) if q.contains("quality=(string)good") => Some("good"),
            _ => None,
        })
        .collect();
    let low_at = qualities.iter().position(|&q| q == "low");
    assert!(
        low_at.is_some_and(|i| qualities[i..].contains(&"good"))
            && qualities.last() == Some(&"good"),
        "wilddog-quality went {qualities:?} after the cap (low on the capped link, then good)"
    );
    // The probes' padding (RTX of packets the peer has) is not counted as retransmissions:
    // on the 2 Mbit/s part, where probes ran and passed, nothing was resent unless asked.
    let last = before.last().expect("alice's stats at 2 Mbit/s");
    assert!(last.local_u64("probes") > 0, "no probe on the 2 Mbit/s part");
    assert!(
        last.local_u64("retransmitted") == 0 || last.local_u64("nackReceived") > 0,
        "alice counted {} retransmissions with no NACK received (padding counted?)",
        last.local_u64("retransmitted")
    );
}

/// The names of this process's threads.
fn thread_names() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
        .map(|n| n.trim().to_owned())
        .collect()
}

/// 3 % random loss: the receivers ask for the lost packets (NACK), the senders resend them
/// (RTX), and at least 90 % of the frames of a clean link come through. Then a burst of
/// 60 % loss of the media that retransmissions cannot keep up with (they are lost too):
/// frames are lost, and the receiver asks for key frames (PLI), which the sender gets. (At
/// 30 %, asked again until given up, retransmissions now repair some bursts whole: no frame
/// lost, no key frame asked for. The burst spares RTCP: when it took the requests too, all
/// four of a burst were once lost, and the sender's next key frame, for a smaller size, made
/// asking again needless.)
#[test]
fn three_percent_loss_is_repaired() {
    if !enter_netns("three_percent_loss_is_repaired") {
        return;
    }
    let server = TestServer::start();
    let (mut alice, mut bob) = call(&server, &[]);
    // Lossy from the first frame, as the benchmark's link: the first losses of a call were
    // the ones left unrepaired (see the freeze assertion below). The clean reference comes
    // last.
    shaping::lose_udp_percent(3);
    let (_, _, settling_gap) = watch_gaps(&mut alice, Duration::from_secs(2));
    let (lossy, alice_stats, longest_gap) = watch_gaps(&mut alice, Duration::from_secs(16));
    let longest_gap = longest_gap.max(settling_gap);
    shaping::lose_media_percent(60);
    let _ = watch(&mut alice, Duration::from_secs(4));
    shaping::no_loss();
    // Stats that count every request of the burst.
    let (_, burst_stats) = watch(&mut alice, Duration::from_millis(2500));
    let (_, bob_stats) = watch(&mut bob, Duration::from_secs(3));
    // (What alice got meanwhile is queued: drained first.)
    let _ = watch(&mut alice, Duration::from_secs(1));
    let (clean, _) = watch(&mut alice, Duration::from_secs(8));
    let series = |stats: &[Stats], side: fn(&Stats, &str) -> u64, field: &str| -> Vec<u64> {
        stats.iter().map(|s| side(s, field)).collect()
    };
    println!(
        "alice received fps {:?}, jitterbuffer {:?} ms; bob's stats while bob drained: target {:?}",
        series(&alice_stats, Stats::remote_u64, "fps"),
        series(&alice_stats, Stats::remote_u64, "jitterBufferLatency"),
        series(&bob_stats, Stats::local_u64, "targetBitrate"),
    );
    let a = alice_stats.last().expect("alice's stats");
    let b = bob_stats.last().expect("bob's stats");
    let (nack_sent, pli_sent) = (a.remote_u64("nackSent"), a.remote_u64("pliSent"));
    let retransmission_rtt = a.remote_u64("retransmissionRtt");
    let (nack_received, resent) = (b.local_u64("nackReceived"), b.local_u64("retransmitted"));
    let burst = burst_stats.last().expect("alice's stats in the burst");
    let burst_requests = burst.remote_u64("pliSent") + burst.remote_u64("firSent");
    let requests_received = b.local_u64("pliReceived") + b.local_u64("firReceived");
    println!(
        "clean: {clean} frames in 8 s; 3 % loss: {lossy} frames in 16 s (longest gap \
         {longest_gap:?}, a retransmission took {retransmission_rtt} ms); alice sent {nack_sent} \
         NACKs and {pli_sent} PLIs, bob got {nack_received} NACKs and resent {resent} packets; \
         after a 60 % burst alice had sent {burst_requests} key frame requests, bob had got \
         {requests_received}"
    );
    assert!(
        nack_sent > 0 && nack_received > 0,
        "no NACK: {nack_sent} sent, {nack_received} received"
    );
    // Retransmissions answering NACKs (a probe's padding, RTX too, is not counted), and
    // what alice got of them in time.
    assert!(resent > 0, "nothing retransmitted");
    let repaired = a.remote_u64("packetsRepaired");
    assert!(repaired > 0, "alice repaired no packet with a retransmission ({resent} resent)");
    // A frame lost anyway is asked for again as a key frame. At 3 % the retransmissions now
    // repair nearly every loss (0 to 3 PLIs in 16 s); in the burst, frames are lost.
    assert!(burst_requests > 0, "no key frame request (PLI or FIR) in 4 s at 60 % loss");
    assert!(requests_received > 0, "bob got none of alice's {burst_requests} key frame requests");
    assert!(
        lossy as f64 >= 0.9 * 2.0 * clean as f64,
        "{lossy} frames in 16 s under 3 % loss against {clean} in 8 s on a clean link"
    );
    // The jitterbuffer waits long enough for a retransmission once loss is seen: from the
    // element's 30 ms `latency` to two round trips and 200 ms (recovery::retransmission_wait_ms),
    // as its stats say.
    let waits = series(&alice_stats, Stats::remote_u64, "jitterBufferLatency");
    let margin = u64::from(gstwilddog::recovery::RTX_MARGIN_MS);
    assert!(
        waits.iter().any(|&ms| ms >= margin),
        "the jitterbuffer never waited {margin} ms for retransmissions under 3 % loss: {waits:?} ms"
    );
    // The clean reference comes after the burst, when bob may still send less: against the
    // source too (15 fps; 85 %, room for the freeze allowed below and a loaded machine).
    assert!(lossy >= 204, "{lossy} frames in 16 s under 3 % loss of a 15 fps source (240)");
    // Repaired in time, the picture does not freeze: NACKs leave in an early RTCP packet
    // (crate::recovery::RTCP_BANDWIDTH_PER_ESTIMATE), and a retransmission takes 4 to 7 ms
    // here (the longest gap 150 to 470 ms, the latter a loss at the very start). When they
    // waited for a regular RTCP packet (18 to 34 ms on average), the first losses' NACKs
    // expired unsent and a lost key frame packet froze the picture: up to 1 s here, 1 to
    // 1.6 s in the benchmark. (The margin is for a loaded machine.)
    assert!(
        longest_gap < Duration::from_millis(700),
        "the picture froze for {longest_gap:?} under 3 % loss"
    );
}

/// 3 % random loss on the content of `pipelines/call-test.toml` (videotestsrc
/// `pattern=ball`: about 130 kbit/s, one RTP packet per frame at 15 fps) with the default
/// `latency` (30 ms): the receiver must still ask for the lost packets (NACK) instead of
/// giving every loss up as a lost frame and a key frame request (PLI).
///
/// Found by trying call-test -> echo with the runner (newcomer-s32): in 20 s of 3 % loss the
/// caller sent 1 NACK and 7 PLIs, the echo 0 NACKs and 4 PLIs, the received fps fell to 7 to
/// 13; with `latency=200`, or with moving content (several packets per frame), NACKs flowed
/// and no PLI was sent. A lone packet's loss shows only when the next frame's packet comes,
/// a frame interval (66 ms) later, past the 30 ms wait, so the jitterbuffer gives it up
/// without asking; the wait grows only once a loss is seen. (The stats' `packetsLost` that
/// should have shown it stayed 0: see `three_percent_loss_with_probes_is_counted`.)
#[test]
fn three_percent_loss_of_one_packet_frames_is_asked_for() {
    if !enter_netns("three_percent_loss_of_one_packet_frames_is_asked_for") {
        return;
    }
    let server = TestServer::start();
    let mut cfg_b = EndpointConfig::new("bob");
    cfg_b.video_pattern = Some("pattern=ball");
    cfg_b.video_fps = 15;
    let mut cfg_a = EndpointConfig::new("alice").calling("bob");
    cfg_a.video_pattern = Some("pattern=ball");
    cfg_a.video_fps = 15;
    let bob = Endpoint::new(&server, cfg_b);
    let mut alice = Endpoint::new(&server, cfg_a);
    bob.play();
    std::thread::sleep(Duration::from_millis(300));
    alice.play();
    alice.wait_for("a decoded frame", T, is_frame);
    // Clean for a while, as a user's call: the start's probes run.
    let _ = watch(&mut alice, Duration::from_secs(6));
    shaping::lose_udp_percent(3);
    let (lossy, alice_stats) = watch(&mut alice, Duration::from_secs(20));
    shaping::no_loss();
    let a = alice_stats.last().expect("alice's stats");
    let (nack_sent, pli_sent) = (a.remote_u64("nackSent"), a.remote_u64("pliSent"));
    let fps: Vec<u64> = alice_stats.iter().map(|s| s.remote_u64("fps")).collect();
    println!(
        "ball pattern, 3 % loss: {lossy} frames in 20 s, fps {fps:?}; alice sent {nack_sent} \
         NACKs and {pli_sent} PLIs, counted {} packets lost",
        a.remote_u64("packetsLost")
    );
    drop(bob);
    // Mostly asked for, not refreshed by key frames: the first loss of the call may still
    // be given up (nothing had been lost yet, the wait was the clean link's), then a PLI.
    // 3 % of some 300 video packets is 9 on average but as few as 2 now and then (then one
    // PLI and one NACK: 2 of 19 runs of 16 s failed a claim of more NACKs than PLIs).
    assert!(
        nack_sent > 0 && nack_sent >= pli_sent,
        "alice sent {nack_sent} NACKs and {pli_sent} PLIs in 20 s of 3 % loss"
    );
    assert!(lossy >= 255, "{lossy} frames in 20 s under 3 % loss of a 15 fps source (300)");
}

/// Opus's in-band FEC follows the path's loss (`recovery::opus_loss_percentage`, opusenc's
/// `packet-loss-percentage`: 0 on a clean link, a little above the loss), and goes back to
/// 0 once the link is clean. The loss is read from the transport-wide feedback (every
/// packet, before a retransmission repaired it): from the receiver report's
/// `fraction-lost`, which covers only the ~100 ms since the report before, it stayed at 0
/// under 5 % loss.
#[test]
fn opus_fec_follows_the_loss() {
    if !enter_netns("opus_fec_follows_the_loss") {
        return;
    }
    let server = TestServer::start();
    let (mut alice, bob) = call(&server, &[]);
    let opus_loss = || -> Option<i32> {
        bob.call
            .iterate_recurse()
            .into_iter()
            .flatten()
            .find(|e| e.factory().is_some_and(|f| f.name() == "opusenc"))
            .map(|e| e.property::<i32>("packet-loss-percentage"))
    };
    let _ = watch(&mut alice, Duration::from_secs(3));
    let clean_before = opus_loss();
    shaping::lose_udp_percent(5);
    let mut lossy = Vec::new();
    for _ in 0..4 {
        let _ = watch(&mut alice, Duration::from_secs(2));
        lossy.push(opus_loss());
    }
    shaping::no_loss();
    let _ = watch(&mut alice, Duration::from_secs(8));
    let clean_after = opus_loss();
    println!(
        "bob's Opus packet-loss-percentage: clean {clean_before:?}, 5 % loss {lossy:?}, clean \
         again {clean_after:?}"
    );
    assert_eq!(clean_before, Some(0), "on the clean link");
    assert!(lossy.iter().flatten().any(|&p| p > 0), "under 5 % loss: {lossy:?}");
    assert_eq!(clean_after, Some(0), "after the loss stopped");
}

/// A key frame request from the receiver (what its depayloader sends when a frame is lost:
/// a PLI, or a FIR to a peer that wants one) is answered with a key frame at once (the
/// encoder makes none unasked: `media::KEY_FRAME_MAX_DIST`), and with one every 500 ms at
/// most however often it comes (`media::KEY_FRAME_MIN_INTERVAL`): a key frame is several
/// frames' worth of bits. The requests are asked of alice's VP8 depayloader every 100 ms for
/// 4 s, as a lossy link makes it ask; the key frames are counted as they leave it (no
/// `DELTA_UNIT` flag).
#[test]
fn key_frame_requests_are_answered_at_once_and_at_most_every_500_ms() {
    if !enter_netns("key_frame_requests_are_answered_at_once_and_at_most_every_500_ms") {
        return;
    }
    let server = TestServer::start();
    let (mut alice, mut bob) = call(&server, &[]);
    let depay = alice
        .call
        .iterate_recurse()
        .into_iter()
        .flatten()
        .find(|e| e.factory().is_some_and(|f| f.name() == "rtpvp8depay"))
        .expect("alice's VP8 depayloader");
    let key_frames = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Instant>::new()));
    let seen = key_frames.clone();
    let depay_src = depay.static_pad("src").expect("the depayloader's src pad");
    depay_src.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        if let Some(gst::PadProbeData::Buffer(buffer)) = &info.data
            && !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT)
        {
            seen.lock().unwrap().push(Instant::now());
        }
        gst::PadProbeReturn::Ok
    });
    // Bob's counts before the requests; then the requests start 1 s after a key frame (or 4
    // s after the call's first, the encoder making none unasked), so that no key frame of
    // the call's start comes with the first answer.
    let (_, bob_before) = watch(&mut bob, Duration::from_millis(2100));
    let seen_before = key_frames.lock().unwrap().len();
    let waited = Instant::now();
    while key_frames.lock().unwrap().len() == seen_before
        && waited.elapsed() < Duration::from_secs(4)
    {
        let _ = watch(&mut alice, Duration::from_millis(50));
    }
    let _ = watch(&mut alice, Duration::from_secs(1));
    let requests_received = |stats: &[Stats]| {
        let s = stats.last().expect("bob's stats");
        s.local_u64("pliReceived") + s.local_u64("firReceived")
    };
    let before = requests_received(&bob_before);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(4) {
        depay_src
            .send_event(gst_video::UpstreamForceKeyUnitEvent::builder().all_headers(true).build());
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, bob_after) = watch(&mut bob, Duration::from_millis(2100));
    let got: Vec<u128> = key_frames
        .lock()
        .unwrap()
        .iter()
        .filter(|&&t| t >= start && t <= start + Duration::from_millis(4300))
        .map(|t| t.duration_since(start).as_millis())
        .collect();
    let requests = requests_received(&bob_after) - before;
    println!("key frames at {got:?} ms after the first request; bob got {requests} requests");
    assert!(
        got.first().is_some_and(|&ms| ms < 400),
        "the first key frame came {:?} ms after the first request",
        got.first()
    );
    assert!(got.len() >= 5, "{} key frames in 4 s of requests: {got:?} ms", got.len());
    let closest = got.windows(2).map(|w| w[1] - w[0]).min().unwrap_or(u128::MAX);
    // A request goes through 500 ms after the last one that did, and each is answered with
    // the next frame (a frame is 66 ms): 434 ms apart at the least, less the arrivals'
    // jitter on a loaded machine. Unthrottled, they came 200 ms apart.
    assert!(closest >= 350, "two key frames {closest} ms apart: {got:?} ms");
    assert!(requests >= 5, "bob got {requests} key frame requests in 4 s");
}

/// An echo of a 15 fps stream comes back at 15 fps: the sending chain's rate limiter lets a
/// stream at `max-fps` through whole, whatever the jitter of the decoded frames' timestamps
/// (`videorate drop-only` sent back 7 to 11 fps).
#[test]
fn an_echo_of_15_fps_comes_back_at_15_fps() {
    if !enter_netns("an_echo_of_15_fps_comes_back_at_15_fps") {
        return;
    }
    common::init();
    let server = TestServer::start();
    // pipelines/echo.toml's pipeline.
    let echo = gst::parse::launch(&format!(
        "wilddogcall name=call server={} app-id={} token={} ice-local-addresses=127.0.0.1 \
           identity name=video_back ! call.video_sink \
           identity name=audio_back ! call.audio_sink \
           call.video_src ! video_back. call.audio_src ! audio_back.",
        server.url,
        wilddog_server::config::DEV_APP_ID,
        server.token("echo")
    ))
    .unwrap();
    echo.set_state(gst::State::Playing).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let mut alice =
        Endpoint::new(&server, EndpointConfig::new("alice").calling("echo").camera_like(15));
    alice.play();
    alice.wait_for("the echo", T, is_frame);
    let _ = watch(&mut alice, Duration::from_secs(2));
    let (frames, _) = watch(&mut alice, Duration::from_secs(10));
    let _ = echo.set_state(gst::State::Null);
    println!("echo of 15 fps: {frames} frames back in 10 s");
    assert!(frames >= 140, "{frames} frames in 10 s: the echo of a 15 fps stream came back slower");
}

/// `congestion-control=disabled`: today's behaviour whatever the network. On a 250 kbit/s
/// link (both directions share it) the video encoder's own target stays at `max-bitrate`
/// (500 kbit/s at 480p) and what is sent stays at it or above: far over the cap, where
/// congestion control brings it under (`a_250_kbit_link_keeps_the_picture_moving`: each
/// side's target under 200, both sides' payload and headers together under 250). The size
/// and frame rate sent do not step down, Opus stays at opusenc's default (64 kbit/s in 20
/// ms frames), no quality message, no TWCC in the offer; RTX for NACKs still is.
#[test]
fn congestion_control_disabled_sends_at_max_bitrate() {
    if !enter_netns("congestion_control_disabled_sends_at_max_bitrate") {
        return;
    }
    common::init();
    let remote_sdps = common::capture_remote_sdps();
    let server = TestServer::start();
    let (mut alice, _bob) = call(&server, &[("congestion-control", "disabled")]);
    let encoders = elements(&alice, "vp8enc");
    // The sending chain's frame-rate limiter, whose `max-fps` congestion control lowers.
    let limiters: Vec<gst::Element> = alice
        .call
        .iterate_recurse()
        .into_iter()
        .flatten()
        .filter(|e| e.name() == "frame-rate")
        .collect();
    // The encoder's target-bitrate and the limiter's max-fps.
    let settings = || -> (Vec<i32>, Vec<f64>) {
        (
            encoders.iter().map(|e| e.property::<i32>("target-bitrate")).collect(),
            limiters.iter().map(|e| e.property::<f64>("max-fps")).collect(),
        )
    };
    shaping::cap_kbit(250);
    // The encoder's and the limiter's settings, read every 2 s, and the stats, over 8 s on
    // the capped link.
    let (mut stats, mut video_targets, mut max_fps) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..4 {
        let (_, some) = watch(&mut alice, Duration::from_secs(2));
        stats.extend(some);
        let (targets, fps) = settings();
        video_targets.push(targets);
        max_fps.push(fps);
    }
    let opus = opus_settings(&alice);
    shaping::uncap();
    let series = |field: &str| -> Vec<u64> { stats.iter().map(|s| s.local_u64(field)).collect() };
    let (sent, widths, fps) = (series("bitSentRate"), series("width"), series("fps"));
    println!(
        "disabled at 250 kbit/s: vp8enc target-bitrate {video_targets:?} bit/s, max-fps \
         {max_fps:?}, alice sent {sent:?} kbit/s at widths {widths:?} and fps {fps:?}; Opus \
         (bit/s, frame ms) {opus:?}; stats targets {:?}, estimates {:?}; key frame requests \
         received {:?}",
        series("targetBitrate"),
        series("estimatedBitrate"),
        series("pliReceived")
    );
    // The encoder itself, not the stats (which show max-bitrate when there is no estimate).
    assert!(
        video_targets.iter().all(|t| !t.is_empty() && t.iter().all(|&t| t == 500_000)),
        "vp8enc's target-bitrate {video_targets:?} bit/s with congestion control disabled"
    );
    // What leaves: the first report may be the call's first (no rate yet) or cover its start.
    let judged = &sent[sent.len().min(1)..];
    let mean = judged.iter().sum::<u64>() / judged.len().max(1) as u64;
    assert!(judged.len() >= 2, "too few stats: {sent:?}");
    // At max-bitrate or more (payload: the video's 500 and the audio's 64; 454 to 2,276
    // kbit/s a report in the runs here, as the receiver, losing most of it, asks for key
    // frames and each answer, every 500 ms at most, comes on top of libvpx's target), so
    // over the 250 kbit/s cap that a sender backing off gets under (39 to 77 with gcc).
    assert!(mean >= 400, "alice sent {sent:?} kbit/s with congestion control disabled");
    assert!(
        !widths.is_empty() && widths.iter().all(|&w| w == 640),
        "alice sent widths {widths:?} with congestion control disabled"
    );
    // The frame rate stays the source's 15: read from the limiter, which a step down lowers
    // (to 10), not from the stats, which count what reached the encoder (1 to 7 in the
    // reports of runs at a load of 5 to 7, the encoder busy with the key frames the receiver
    // asks for).
    assert!(
        max_fps.iter().all(|f| !f.is_empty() && f.iter().all(|&f| f == 15.0)),
        "the frame-rate limiter's max-fps {max_fps:?} with congestion control disabled"
    );
    assert!(
        !opus.is_empty() && opus.iter().all(|(bps, ms)| *bps == 64_000 && ms == "20"),
        "Opus (bit/s, frame ms) {opus:?} with congestion control disabled"
    );
    assert!(!alice.log.iter().any(|s| matches!(s, Seen::Quality(_))), "{:?}", alice.log);
    let sdps = remote_sdps.lock().unwrap().clone();
    let offer =
        sdps.iter().find(|s| s.starts_with("remote offer")).expect("bob's log of the offer");
    assert!(!offer.contains("transport-wide-cc"), "{offer}");
    // Loss recovery does not depend on it: the offer still has RTX for NACKs.
    assert!(offer.contains("rtx/90000"), "{offer}");
}

/// A `gcc` callee whose caller has `congestion-control=disabled` (its offer has no TWCC, so
/// no transport-wide feedback comes back): the callee's estimate grows to the full rate on
/// a clean link, and a standing queue in the stats' round trip (a 250 kbit/s cap, which the
/// caller floods at its fixed 500 kbit/s) brings its video target under the cap.
///
/// Found by trying the runner as a newcomer (newcomer-s32): rtpgccbwe, fed nothing, kept
/// its start, so the callee sent 221 kbit/s of video on any link for the whole call; and on
/// loopback the stats' round trip rounded to 0 ms, which the guard takes for none measured,
/// so once cut its cap was never lifted (the callee stayed at 72 kbit/s for 40 s after a
/// cap was removed).
#[test]
fn a_peer_without_transport_wide_feedback_gets_the_full_rate_and_the_queue_guard() {
    if !enter_netns("a_peer_without_transport_wide_feedback_gets_the_full_rate_and_the_queue_guard")
    {
        return;
    }
    let server = TestServer::start();
    let bob = Endpoint::new(&server, EndpointConfig::new("bob").camera_like(15));
    let mut alice = Endpoint::new(
        &server,
        EndpointConfig::new("alice")
            .calling("bob")
            .camera_like(15)
            .prop("congestion-control", "disabled"),
    );
    bob.play();
    std::thread::sleep(Duration::from_millis(300));
    alice.play();
    alice.wait_for("a decoded frame", T, is_frame);
    let encoders = elements(&bob, "vp8enc");
    let target = || -> Vec<i32> { encoders.iter().map(|e| e.property("target-bitrate")).collect() };
    // Every second for 12 s: the chains start at the full rate, the first stats period
    // (2 s) sets the estimator's start (300 kbit/s, the video at 221), and the estimate
    // grows once a period from there (to the ceiling in four).
    let mut clean = Vec::new();
    for _ in 0..12 {
        let _ = watch(&mut alice, Duration::from_secs(1));
        clean.push(target());
    }
    shaping::cap_kbit(250);
    let mut capped = Vec::new();
    for _ in 0..12 {
        let _ = watch(&mut alice, Duration::from_secs(1));
        capped.push(target());
        if capped.last().is_some_and(|t| t.len() == 1 && t[0] < 250_000) {
            break;
        }
    }
    shaping::uncap();
    // The cap lifts by a quarter a stats period once the round trip is clean again (on
    // loopback it reads under a millisecond).
    let mut after = Vec::new();
    for _ in 0..8 {
        let _ = watch(&mut alice, Duration::from_secs(1));
        after.push(target());
    }
    println!(
        "bob's vp8enc target-bitrate, clean: {clean:?}; capped at 250 kbit/s: {capped:?}; \
         after: {after:?}"
    );
    assert_eq!(
        clean.last(),
        Some(&vec![500_000]),
        "bob's video target on a clean link, without feedback from alice: {clean:?}"
    );
    assert!(
        capped.last().is_some_and(|t| t.len() == 1 && t[0] < 250_000),
        "bob's video target on a 250 kbit/s link, without feedback from alice: {capped:?}"
    );
    let lowest = capped.last().and_then(|t| t.first().copied()).unwrap_or(0);
    assert!(
        after.last().and_then(|t| t.first()).is_some_and(|&t| t > lowest),
        "bob's video target once the cap is gone, from {lowest}: {after:?}"
    );
    drop(bob);
}

/// The lip-sync offsets (`ts-offset`) of an endpoint's jitterbuffers, read every 50 ms on a
/// thread of its own until [`LipSyncOffsets::stop`].
struct LipSyncOffsets {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    sampler: std::thread::JoinHandle<(f64, f64)>,
}

impl LipSyncOffsets {
    fn sample(ep: &Endpoint) -> Self {
        let jitterbuffers = elements(ep, "rtpjitterbuffer");
        assert!(!jitterbuffers.is_empty(), "no jitterbuffer in the call");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let sampler = std::thread::spawn(move || {
            let read = || -> Vec<i64> {
                jitterbuffers.iter().map(|jb| jb.property::<i64>("ts-offset")).collect()
            };
            let mut last = read();
            let mut largest = last.iter().map(|o| o.abs()).max().unwrap_or(0);
            let mut largest_step = 0i64;
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
                let now = read();
                for (a, b) in last.iter().zip(&now) {
                    largest = largest.max(b.abs());
                    largest_step = largest_step.max((b - a).abs());
                }
                last = now;
            }
            (largest as f64 / 1e6, largest_step as f64 / 1e6)
        });
        LipSyncOffsets { stop, sampler }
    }

    /// The largest offset read, and the largest change between two reads, ms.
    fn stop(self) -> (f64, f64) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.sampler.join().expect("the lip-sync sampler")
    }
}

/// The elements of `factory` in a call's pipeline.
fn elements(ep: &Endpoint, factory: &str) -> Vec<gst::Element> {
    ep.call
        .iterate_recurse()
        .into_iter()
        .flatten()
        .filter(|e| e.factory().is_some_and(|f| f.name() == factory))
        .collect()
}

/// Counts the transport-wide feedback reports a call's rtpsession passes up to the sender
/// (its `RTPTWCCPackets` events, one per report received).
fn count_feedback(ep: &Endpoint) -> std::sync::Arc<std::sync::atomic::AtomicU64> {
    let count = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    for session in elements(ep, "rtpsession") {
        for pad in session.pads().into_iter().filter(|p| p.name().starts_with("send_rtp_sink")) {
            let count = count.clone();
            pad.add_probe(gst::PadProbeType::EVENT_UPSTREAM, move |_, info| {
                if let Some(gst::PadProbeData::Event(e)) = &info.data
                    && e.structure().is_some_and(|s| s.name() == "RTPTWCCPackets")
                {
                    count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                gst::PadProbeReturn::Ok
            });
        }
    }
    count
}

/// `fec=ulpfec-red` keeps the transport-wide feedback coming, about as often as without it
/// (a report per frame: 16 to 17 a second here, with FEC as without), and
/// congestion control's estimate moves with it (to 643 kbit/s within 2 to 4 s here). Before the fix
/// (`media::fix_red_twcc_extension_id`), GStreamer 1.22.0's rtpredenc gave every video
/// packet the TWCC slot under id 1, not the negotiated 3; rtpsession numbered none of them,
/// the feedback covered the audio alone and almost never came (0 reports in 10 s; 2 in 17 s
/// once), and the estimate stayed capped by the silence guard.
#[test]
fn ulpfec_red_keeps_the_transport_wide_feedback() {
    if !enter_netns("ulpfec_red_keeps_the_transport_wide_feedback") {
        return;
    }
    let server = TestServer::start();
    let (mut alice, _bob) = call(&server, &[("fec", "ulpfec-red")]);
    let feedback = count_feedback(&alice);
    let encoders = elements(&alice, "rtpulpfecenc");
    let protected = || -> u32 { encoders.iter().map(|e| e.property::<u32>("protected")).sum() };
    let protected_before = protected();
    let (_, stats) = watch(&mut alice, Duration::from_secs(8));
    let reports = feedback.load(std::sync::atomic::Ordering::Relaxed);
    let protected = protected() - protected_before;
    let estimates: Vec<u64> = stats.iter().map(|s| s.local_u64("estimatedBitrate")).collect();
    println!(
        "fec=ulpfec-red: {reports} transport-wide feedback reports in 8 s, estimates {estimates:?} \
         kbit/s, {protected} packets protected by FEC"
    );
    // The redundancy is sent (so the feedback covers RED and FEC packets).
    assert!(protected > 0, "no packet protected by ULPFEC");
    assert!(reports >= 40, "{reports} feedback reports in 8 s (5 a second at least)");
    // From the estimator's 300 kbit/s start (where it stayed without the feedback) up.
    assert!(
        estimates.last().is_some_and(|&e| e > 300),
        "the estimate did not grow from its start in 8 s: {estimates:?}"
    );
}

/// `fec=ulpfec-red` repairs packets that retransmissions do not: under 5 % loss with every
/// retransmission (RTX) lost, the receiver's ULPFEC decoder recovers some of the packets its
/// jitterbuffer gives up. rtpulpfecdec repairs only then (on the jitterbuffer's
/// `GstRTPPacketLost`, after the wait for retransmissions, 200 ms or more once loss is
/// seen), from what rtpstorage still holds; webrtcbin kept 80 ms there, and it recovered
/// none (0 of 9 to 15 in 10 s; 4 to 5 of 14 to 20 with `recovery::fec_storage_ns`).
#[test]
fn ulpfec_red_repairs_what_retransmissions_do_not() {
    if !enter_netns("ulpfec_red_repairs_what_retransmissions_do_not") {
        return;
    }
    let server = TestServer::start();
    let (mut alice, bob) = call(&server, &[("fec", "ulpfec-red")]);
    // The retransmissions' payload types (rtprtxsend's map: media → RTX).
    let rtx_pts: Vec<u8> = elements(&alice, "rtprtxsend")
        .iter()
        .filter_map(|e| e.property::<Option<gst::Structure>>("payload-type-map"))
        .flat_map(|m| {
            m.iter().filter_map(|(_, v)| v.get::<u32>().ok()?.try_into().ok()).collect::<Vec<u8>>()
        })
        .collect();
    assert!(!rtx_pts.is_empty(), "no RTX payload type negotiated");
    // (Looked up each time: rtpbin makes a decoder when a stream's first packet comes.)
    let counts = |ep: &Endpoint| {
        elements(ep, "rtpulpfecdec").iter().fold((0, 0), |(r, u), d| {
            (r + d.property::<u32>("recovered"), u + d.property::<u32>("unrecovered"))
        })
    };
    // The video's encoder (the audio's has no payload type: 255, passing through).
    let percentages = |ep: &Endpoint| -> Vec<u32> {
        elements(ep, "rtpulpfecenc")
            .iter()
            .filter(|e| e.property::<u32>("pt") != 255)
            .map(|e| e.property::<u32>("percentage"))
            .collect()
    };
    let _ = watch(&mut alice, Duration::from_secs(2));
    shaping::lose_udp_percent(5);
    shaping::drop_payload_types(&rtx_pts);
    let before = counts(&bob);
    let (frames, _) = watch(&mut alice, Duration::from_secs(10));
    shaping::no_loss();
    let after = counts(&bob);
    let (recovered, unrecovered) = (after.0 - before.0, after.1 - before.1);
    println!(
        "5 % loss, RTX (payload types {rtx_pts:?}) lost: bob's ULPFEC decoder recovered \
         {recovered} packets, gave up {unrecovered}; alice's redundancy {:?} %; alice got \
         {frames} frames in 10 s",
        percentages(&alice)
    );
    assert!(recovered + unrecovered > 0, "bob's jitterbuffer gave up no packet");
    assert!(recovered > 0, "ULPFEC recovered none of the {unrecovered} packets given up");
}

/// The ULPFEC redundancy follows the path's loss (`recovery::ulpfec_percentage`: 10 % on a
/// clean link, 10 % and 5 times the loss under it, at most 50), read from the transport-wide
/// feedback (`recovery::FeedbackLoss`): from the receiver report's `fraction-lost` it stayed
/// at 10 % under 5 % loss.
#[test]
fn ulpfec_redundancy_follows_the_loss() {
    if !enter_netns("ulpfec_redundancy_follows_the_loss") {
        return;
    }
    let server = TestServer::start();
    let (mut alice, bob) = call(&server, &[("fec", "ulpfec-red")]);
    // The video's encoder (the audio's has no payload type: 255, passing through).
    let encoders: Vec<gst::Element> = elements(&alice, "rtpulpfecenc")
        .into_iter()
        .filter(|e| e.property::<u32>("pt") != 255)
        .collect();
    let percentage = || encoders.iter().map(|e| e.property::<u32>("percentage")).max();
    let _ = watch(&mut alice, Duration::from_secs(3));
    let clean_before = percentage();
    shaping::lose_udp_percent(5);
    let mut lossy = Vec::new();
    for _ in 0..4 {
        let _ = watch(&mut alice, Duration::from_secs(2));
        lossy.push(percentage());
    }
    shaping::no_loss();
    let _ = watch(&mut alice, Duration::from_secs(8));
    let clean_after = percentage();
    let recovered: u32 =
        elements(&bob, "rtpulpfecdec").iter().map(|d| d.property::<u32>("recovered")).sum();
    println!(
        "alice's ULPFEC redundancy: clean {clean_before:?} %, 5 % loss {lossy:?} %, clean again \
         {clean_after:?} %; bob's decoder recovered {recovered} packets (NACKs on)"
    );
    assert_eq!(clean_before, Some(10), "on the clean link");
    assert!(lossy.iter().flatten().any(|&p| p >= 20), "under 5 % loss: {lossy:?}");
    assert_eq!(clean_after, Some(10), "after the loss stopped");
}

/// The sent rate counts the video again after it paused (the camera stopped, then went on):
/// `local.bytesSent` grows with the video again and `bitSentRate` reads more than the audio
/// alone. webrtcbin (GStreamer 1.22) leaves our video's stream out of `get-stats` once
/// rtpsession timed its sender out (5 to 8 s without a packet) and never brings it back;
/// the stats summed the streams reported and held the highest sum, so after the pause they
/// stood still (rate 0, the audio too) until the audio alone passed the old sum. Alice's
/// video goes through a `valve` that closes for 10 s after 6 s of video; within 8 s of its
/// opening again, what alice's stats count over and above the audio (measured in the pause)
/// must be at least a quarter of the video's rate before the pause, and bob must decode
/// frames again. A quarter, not more: after the 10 s gap in its timestamps libvpx's rate control
/// spends 40 to 60 % of its target for a while (190 to 300 kbit/s out of vp8enc against
/// 480 to 535 before, the target still 500, in one run), and the video counted after the
/// pause was 48 to 57 % of the rate before in the runs here (0 before the fix).
#[test]
fn sent_bitrate_counts_video_again_after_a_pause() {
    if !enter_netns("sent_bitrate_counts_video_again_after_a_pause") {
        return;
    }
    let server = TestServer::start();
    // Bob sends audio only: what alice sends is all this test looks at.
    let mut cfg_b = EndpointConfig::new("bob");
    cfg_b.send_video = false;
    let mut bob = Endpoint::new(&server, cfg_b);
    let mut alice =
        Endpoint::new(&server, EndpointConfig::new("alice").calling("bob").camera_like(15));
    // A valve between alice's camera and her call.
    let sink_pad = alice.call.static_pad("video_sink").expect("alice's video_sink pad");
    let camera = sink_pad.peer().expect("alice's camera, linked");
    camera.unlink(&sink_pad).unwrap();
    let valve = gst::ElementFactory::make("valve").build().unwrap();
    alice.pipeline.add(&valve).unwrap();
    camera.link(&valve.static_pad("sink").unwrap()).unwrap();
    valve.static_pad("src").unwrap().link(&sink_pad).unwrap();
    bob.play();
    std::thread::sleep(Duration::from_millis(300));
    alice.play();
    bob.wait_for("alice's video", T, is_frame);
    // (sent kbit/s, bytes sent) of each report.
    let series = |stats: &[Stats]| -> Vec<(u64, u64)> {
        stats.iter().map(|s| (s.local_u64("bitSentRate"), s.local_u64("bytesSent"))).collect()
    };
    let (_, before) = watch(&mut alice, Duration::from_secs(6));
    let before = series(&before);
    valve.set_property("drop", true);
    let frames_closed = bob.frames();
    let (_, paused) = watch(&mut alice, Duration::from_secs(10));
    let paused = series(&paused);
    valve.set_property("drop", false);
    let frames_reopened = bob.frames();
    let reopened = Instant::now();
    // (seconds after the opening, kbit/s, bytes sent) of each report.
    let mut after: Vec<(f64, u64, u64)> = Vec::new();
    while reopened.elapsed() < Duration::from_secs(8) {
        let (_, stats) = watch(&mut alice, Duration::from_millis(200));
        for (rate, bytes) in series(&stats) {
            after.push((reopened.elapsed().as_secs_f64(), rate, bytes));
        }
    }
    let frames_after = bob.frames() - frames_reopened;
    println!(
        "alice's (kbit/s, bytes sent) before the pause {before:?}, in it {paused:?}; after it \
         (s, kbit/s, bytes sent) {after:?}; bob decoded {} frames in the pause, {frames_after} \
         in the 8 s after",
        frames_reopened - frames_closed
    );
    // What alice sent with video: her last report before the pause (the rate ramps up from
    // the estimator's start in the first seconds).
    let &(with_video, _) = before.last().expect("alice's stats before the pause");
    // The audio alone: the reports of the pause's last 6 s (the first may hold video).
    let audio_only = paused.iter().skip(2).map(|&(rate, _)| rate).max();
    let audio_only = audio_only.unwrap_or_else(|| panic!("alice's stats in the pause: {paused:?}"));
    assert!(
        with_video > audio_only + 100,
        "alice sent {with_video} kbit/s with video, {audio_only} without: no video to measure"
    );
    let video_kbps = with_video - audio_only;
    // Enough, over and above the audio, for 70 % of the video before the pause (libvpx's
    // frame rate estimate, broken by the pause, halved it before media.rs hid long gaps from
    // the encoder: 190 to 300 kbit/s against 480 to 535 before it).
    let enough_kbps = audio_only as f64 + 0.7 * video_kbps as f64;
    // Bytes sent over the last 4 s or so of the 8 s after (the reports come every 2 s).
    let &(t0, _, bytes0) = after
        .iter()
        .rfind(|a| a.0 <= 4.5)
        .unwrap_or_else(|| panic!("no stats in the 4.5 s after the pause: {after:?}"));
    let &(t1, last_rate, bytes1) = after.last().expect("alice's stats after the pause");
    let span = t1 - t0;
    assert!(span >= 1.5, "too few stats after the pause: {after:?}");
    let grew_kbps = bytes1.saturating_sub(bytes0) as f64 * 8.0 / 1000.0 / span;
    assert!(
        grew_kbps >= enough_kbps,
        "bytesSent grew by {} in {span:.1} s after the pause ({grew_kbps:.0} kbit/s); the \
         audio alone sends {audio_only} kbit/s, the video sent {video_kbps} before it: {after:?}",
        bytes1.saturating_sub(bytes0)
    );
    assert!(
        last_rate as f64 >= enough_kbps,
        "bitSentRate {last_rate} kbit/s after the pause, {audio_only} with the audio alone and \
         {with_video} with video before it: {after:?}"
    );
    // And bob sees the picture again (15 fps; a key frame within 3 s).
    assert!(frames_after >= 30, "bob decoded {frames_after} frames in the 8 s after the pause");
    // The audio sent through the pause counted too (the held sum stood still there as well).
    assert!(audio_only > 0, "alice's stats counted nothing in the pause: {paused:?}");
}

/// A peer that sends audio alone gets transport-wide feedback at least every 100 ms
/// (`recovery::FeedbackClock`): GStreamer 1.22's rtpsession reports only at a packet with the
/// marker bit, which Opus sets at a talk spurt's start, so such a sender got almost none (and
/// a browser's video encoder, dropping frames on a slow link, none between its frames).
#[test]
fn an_audio_only_sender_gets_feedback_every_100_ms() {
    if !enter_netns("an_audio_only_sender_gets_feedback_every_100_ms") {
        return;
    }
    let server = TestServer::start();
    let bob = Endpoint::new(&server, EndpointConfig::new("bob"));
    let mut alice_cfg = EndpointConfig::new("alice").calling("bob");
    alice_cfg.send_video = false;
    let mut alice = Endpoint::new(&server, alice_cfg);
    bob.play();
    std::thread::sleep(Duration::from_millis(300));
    alice.play();
    alice.wait_for("a decoded frame", T, is_frame);
    let feedback = count_feedback(&alice);
    std::thread::sleep(Duration::from_secs(3));
    let reports = feedback.load(std::sync::atomic::Ordering::Relaxed);
    println!("{reports} transport-wide feedback reports in 3 s for audio alone");
    // 30 at one per 100 ms; a loaded machine delays some.
    assert!(reports >= 20, "{reports} feedback reports in 3 s for audio alone");
    drop(bob);
}

/// The packets one endpoint's jitterbuffers gave up (`num-lost`) and repaired with a
/// retransmission (`rtx-success-count`), summed: what GStreamer itself counts.
fn jitterbuffer_counts(ep: &Endpoint) -> (u64, u64) {
    elements(ep, "rtpjitterbuffer").iter().map(|jb| jb.property::<gst::Structure>("stats")).fold(
        (0, 0),
        |(lost, repaired), s| {
            (
                lost + s.get::<u64>("num-lost").unwrap_or(0),
                repaired + s.get::<u64>("rtx-success-count").unwrap_or(0),
            )
        },
    )
}

/// 3 % random loss in a call where both sides probe (their padding, RTX, from the call's
/// start): the stats count the loss. `remote.packetsLost` is what the jitterbuffers gave up
/// (audio is not retransmitted, so some is), `remote.packetsRepaired` what retransmissions
/// repaired, both as the jitterbuffers count them; `local.packetsLost`, what the peer's
/// receiver reports say it lost of ours (before repair), is there during the loss and
/// settled once the link is clean.
///
/// Found by a newcomer (s32): `remote.packetsLost` stayed 0 in every run where the peer
/// probed, and `local.packetsLost` jumped (11 to 67, 42 to 116) seconds after the link was
/// clean. webrtcbin 1.22 points every stream's loss counts at the newest jitterbuffer, the
/// one rtpbin makes for the peer's RTX stream when its first RTCP report comes, which never
/// gets a packet; and it reports each of our streams from the last report block a peer
/// source sent, which is about another of our streams most of the time (see
/// `WilddogCall::jitterbuffer_readings` and `report_block_readings`). Before the fix:
/// `packetsLost` 0 (2 once: counted before the RTX stream's first report) while the
/// jitterbuffers gave up 15 to 19, `packetsRepaired` read from the video's; our video's
/// reported loss 0 throughout, our audio's 0 until 5 s after the loss stopped, then 20.
#[test]
fn three_percent_loss_with_probes_is_counted() {
    if !enter_netns("three_percent_loss_with_probes_is_counted") {
        return;
    }
    let server = TestServer::start();
    let (mut alice, mut bob) = call(&server, &[]);
    // Clean for a while, as a user's call: the start's probes run (a probe stops at a loss).
    let _ = watch(&mut alice, Duration::from_secs(6));
    let probes = drain_stats(&mut bob).last().map_or(0, |s| s.local_u64("probes"));
    shaping::lose_udp_percent(3);
    let (_, lossy) = watch(&mut alice, Duration::from_secs(12));
    shaping::no_loss();
    // A report or two for the last losses to be given up and reported.
    let (_, settling) = watch(&mut alice, Duration::from_secs(3));
    let (_, clean) = watch(&mut alice, Duration::from_secs(6));
    let (jb_lost, jb_repaired) = jitterbuffer_counts(&alice);
    let bob_stats = drain_stats(&mut bob);
    let series = |stats: &[Stats], side: fn(&Stats, &str) -> u64, field: &str| -> Vec<u64> {
        stats.iter().map(|s| side(s, field)).collect()
    };
    println!(
        "alice under 3 % loss then clean: remote.packetsLost {:?} {:?} {:?}, packetsRepaired \
         {:?} {:?} {:?}, nackSent {:?}; local.packetsLost {:?} {:?} {:?}; her jitterbuffers \
         gave up {jb_lost} and repaired {jb_repaired}; bob's probes {probes} before the loss, \
         {:?} after",
        series(&lossy, Stats::remote_u64, "packetsLost"),
        series(&settling, Stats::remote_u64, "packetsLost"),
        series(&clean, Stats::remote_u64, "packetsLost"),
        series(&lossy, Stats::remote_u64, "packetsRepaired"),
        series(&settling, Stats::remote_u64, "packetsRepaired"),
        series(&clean, Stats::remote_u64, "packetsRepaired"),
        series(&clean, Stats::remote_u64, "nackSent"),
        series(&lossy, Stats::local_u64, "packetsLost"),
        series(&settling, Stats::local_u64, "packetsLost"),
        series(&clean, Stats::local_u64, "packetsLost"),
        series(&bob_stats, Stats::local_u64, "probes"),
    );
    drop(bob);
    // The case: the peer probed before the loss.
    assert!(probes > 0, "bob did not probe in the call's first 6 s");
    let a = clean.last().expect("alice's stats on the clean link");
    let (lost, repaired) = (a.remote_u64("packetsLost"), a.remote_u64("packetsRepaired"));
    // 3 % of some 50 audio packets a second for 12 s, none retransmitted: about 18.
    assert!(lost > 0, "alice counted no packet lost in 12 s of 3 % loss ({jb_lost} given up)");
    assert!(repaired > 0, "alice counted no packet repaired in 12 s of 3 % loss");
    // Lost and not repaired, and repaired, as her jitterbuffers count them (the link is clean
    // by now: no new loss between the last report and this reading).
    assert_eq!(
        (lost, repaired),
        (jb_lost, jb_repaired),
        "alice's (packetsLost, packetsRepaired) against her jitterbuffers' (given up, repaired)"
    );
    // What bob's reports say he lost of hers: counted while the loss lasts, and settled once
    // the link is clean, not jumping seconds later.
    let during = lossy.last().map_or(0, |s| s.local_u64("packetsLost"));
    assert!(during > 0, "bob reported none of alice's packets lost in 12 s of 3 % loss");
    let settled = settling.last().map_or(0, |s| s.local_u64("packetsLost"));
    let last = a.local_u64("packetsLost");
    assert_eq!(
        last, settled,
        "alice's local.packetsLost grew on a clean link: {settled} -> {last}"
    );
}
