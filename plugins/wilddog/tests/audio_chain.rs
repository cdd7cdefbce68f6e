//! The audio sending chain while congestion control changes Opus's frame duration: every
//! change is applied on the encoder's streaming thread. Set from another thread, opusenc
//! (1.22) encoded a buffer of the old duration as a frame of the new one and aborted the
//! process on its `bsize < bytes` or `size == bytes` assertion (seen in a shaped-network
//! benchmark run, where the estimate crossed 150 kbit/s both ways).

mod common;

use std::time::{Duration, Instant};

use gst::prelude::*;
use gstwilddog::media;

#[test]
fn frame_duration_changes_while_encoding_do_not_abort() {
    common::init();
    let pipeline = gst::Pipeline::new();
    let src = gst::ElementFactory::make("audiotestsrc")
        .property("is-live", true)
        .property_from_str("wave", "pink-noise")
        .build()
        .unwrap();
    let bin = media::audio_encoder_bin(media::OPUS_PAYLOAD).unwrap();
    let sink = gst_app::AppSink::builder().sync(false).build();
    pipeline.add_many([&src, bin.upcast_ref(), sink.upcast_ref()]).unwrap();
    gst::Element::link_many([&src, bin.upcast_ref(), sink.upcast_ref()]).unwrap();
    let encoder = media::audio_encoder(&bin).expect("opusenc in the audio chain");
    pipeline.set_state(gst::State::Playing).unwrap();

    // Every change of the ladder, back and forth, far more often than the estimate moves.
    let started = Instant::now();
    let mut changes = 0;
    while started.elapsed() < Duration::from_secs(3) {
        for ms in [60, 40, 60, 20, 40, 20] {
            media::set_audio_frame_ms(&encoder, ms);
            changes += 1;
            std::thread::sleep(Duration::from_micros(50));
        }
    }
    media::set_audio_frame_ms(&encoder, 40);
    // Still encoding, at the duration set last: 25 packets a second.
    std::thread::sleep(Duration::from_millis(300));
    while sink.try_pull_sample(gst::ClockTime::ZERO).is_some() {}
    let mut packets = 0;
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        if sink.try_pull_sample(gst::ClockTime::from_mseconds(50)).is_some() {
            packets += 1;
        }
    }
    pipeline.set_state(gst::State::Null).unwrap();
    println!("{changes} frame duration changes; then {packets} packets in 1 s");
    assert!((20..=30).contains(&packets), "{packets} packets in 1 s, not 40 ms ones");
}
