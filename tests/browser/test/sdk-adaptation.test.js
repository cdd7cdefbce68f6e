// The SDK's sent-size ladder (`Conversation.prototype._fitSendSize`), fed the stats a
// Chrome (or Firefox) sender gives on a narrow link, without a browser: which scale it picks,
// tick by tick.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const api = createRequire(import.meta.url)(join(here, '..', '..', '..', 'web', 'wilddog-video.js'));

/** A live conversation sending a 480p, 15 fps stream (minBitrateBps: the dimension's
 * default, 200 kbit/s), whose sender settings are not applied (there is no peer). */
function conversation() {
  const conv = Object.create(api.Conversation.prototype);
  conv.localStream = { captureVideo: true, dimension: '480p', maxFPS: 15, minBitrateBps: 0, maxBitrateBps: 500 };
  conv.status = 'connected';
  conv._client = { options: { debug: false } };
  conv._applySenderBitrate = function () {};
  // The events it emits (quality), in order.
  conv.emitted = [];
  conv._emit = function (event, data) { conv.emitted.push([event, data]); };
  return conv;
}

/** One stats tick: what the encoder sends (kbit/s target, size, fps) and the video's rate. */
function tick(conv, { target, width, height, fps, videoKbps }) {
  conv._fitSendSize({ targetBitrate: target, width, height, fps }, { videoKbps });
}

describe('SDK: the sent size on a narrow link', () => {
  it('an encoder target under what the size needs takes the picture down at once, and Opus is capped at 240x180', () => {
    const conv = conversation();
    // 43 kbit/s at 640x480: 240x180 needs 200/(8/3)² ≈ 28 kbit/s, 1.5 times that is 42.
    tick(conv, { target: 43, width: 640, height: 480, fps: 2, videoKbps: 60 });
    assert.equal(conv._sendScale, 3, 'scale index: 1/(8/3), 240x180');
    tick(conv, { target: 43, width: 240, height: 180, fps: 2, videoKbps: 40 });
    assert.equal(conv._audioCapped, true);
  });

  // A CI run of the 250 kbit/s browser test: the page stayed at 240x180, 1 fps, target 53
  // kbit/s (over the fit for that size) for 18 s. The frame rate alone moves it down,
  // whatever reason Chrome gives: the ladder skipped 'cpu' (this tick fails on that code).
  it('a frame rate under two thirds of maxFPS at 240x180 takes it down one more step, CPU-limited too', () => {
    const conv = conversation();
    conv._sendScale = 3;
    const stats = { target: 53, width: 240, height: 180, fps: 1, videoKbps: 45 };
    conv._fitSendSize({ targetBitrate: 53, width: 240, height: 180, fps: 1 }, { videoKbps: 45, limitation: 'cpu' });
    assert.equal(conv._sendScale, 4, 'down to 160x120 within a tick');
    // Then two ticks to settle before it moves again.
    tick(conv, { ...stats, width: 160, height: 120 });
    tick(conv, { ...stats, width: 160, height: 120 });
    assert.equal(conv._sendScale, 4);
  });

  it('back up one step after two ticks at the whole frame rate with room for the next size', () => {
    const conv = conversation();
    conv._sendScale = 4;
    // 160x120 at 15 fps, sending 20 kbit/s with a 120 kbit/s target: 240x180 needs 42.
    const stats = { target: 120, width: 160, height: 120, fps: 15, videoKbps: 20 };
    tick(conv, stats);
    assert.equal(conv._sendScale, 4, 'one tick is not enough');
    tick(conv, stats);
    assert.equal(conv._sendScale, 3);
  });

  // Firefox reports no encoder target and no estimate: the ladder stood still there (it
  // returned without a target), and a Firefox page at a 250 kbit/s cap kept 320x240 and its
  // full Opus rate, lost a quarter of its packets, and the bot decoded nothing for 20 s.
  // Firefox's framesPerSecond is no use (it said 12 to 15 while 4 frames a second went out):
  // what counts is the frames encoded over the tick. `rttRise`: the round trip over the
  // lowest seen, s (at the cap it went from 2 ms to 600 ms).
  const firefoxTick = (conv) => (width, height, encodedFps, lossFraction, rttRise = 0) =>
    conv._fitSendSize({ targetBitrate: 0, width, height, fps: 15 }, { videoKbps: 150, lossFraction, encodedFps, rttRise });

  it('without a target (Firefox), the peer\'s loss with a queue takes the picture down one step at a time, and Opus is capped at 240x180', () => {
    const conv = conversation();
    const firefox = firefoxTick(conv);
    firefox(640, 480, 15, 0.25, 0.6);
    assert.equal(conv._sendScale, 1, '640x480 at 25 % loss: one step down, 480x360');
    // Two ticks to settle, then the next step from the size sent.
    firefox(480, 360, 15, 0.25, 0.6);
    firefox(480, 360, 15, 0.25, 0.6);
    assert.equal(conv._sendScale, 1);
    firefox(480, 360, 15, 0.2, 0.5);
    assert.equal(conv._sendScale, 2, '320x240');
    conv._sendSettle = 0;
    firefox(320, 240, 15, 0.2, 0.5);
    assert.equal(conv._sendScale, 3, '240x180');
    conv._sendSettle = 0;
    firefox(240, 180, 15, 0.15, 0.4);
    assert.equal(conv._audioCapped, true, 'Opus capped at 240x180');
    assert.equal(conv._sendScale, 4, '160x120');
    // The first step down said the quality was low, once (Firefox has no target to say it).
    const quality = conv.emitted.filter(([e]) => e === 'quality').map(([, q]) => q.quality);
    assert.deepEqual(quality, ['low']);
  });

  // The Firefox loss test (5 % random loss, RTT a few ms, 15 fps encoded): the three ticks'
  // share read 12 % at times (about 15 packets a second), and the picture stepped down in
  // one run out of nine.
  it('without a target, loss over 10 % with no queue and a whole frame rate keeps the size until it lasts six ticks', () => {
    const conv = conversation();
    const firefox = firefoxTick(conv);
    for (let i = 0; i < 20; i++) firefox(640, 480, 15, i % 3 === 0 ? 0.12 : 0.05, 0.01);
    assert.equal(conv._sendScale ?? 0, 0, 'random loss a NACK repairs is no reason to shrink');
    for (let i = 0; i < 5; i++) firefox(640, 480, 15, 0.15, 0.01);
    assert.equal(conv._sendScale ?? 0, 0, 'five lossy ticks in a row are not enough');
    firefox(640, 480, 15, 0.15, 0.01);
    assert.equal(conv._sendScale, 1, 'the sixth: one step down');
  });

  it('without a target, loss over 10 % with a starving encoder takes it down at any size', () => {
    const conv = conversation();
    const firefox = firefoxTick(conv);
    firefox(640, 480, 8, 0.05);
    assert.equal(conv._sendScale ?? 0, 0, 'a slow frame rate over 320x240 with little loss: Firefox\'s own business');
    firefox(640, 480, 8, 0.15);
    assert.equal(conv._sendScale, 1);
  });

  it('without a target, 5 % loss keeps the size, a slow frame rate at 320x240 takes it down, and a whole clean one brings it back after five ticks', () => {
    const conv = conversation();
    const firefox = firefoxTick(conv);
    for (let i = 0; i < 5; i++) firefox(640, 480, 15, 0.05);
    assert.equal(conv._sendScale ?? 0, 0, 'random loss a NACK repairs is no reason to shrink');
    firefox(320, 240, 4, 0);
    assert.equal(conv._sendScale, 3, 'Firefox\'s own 320x240 at 4 fps: one step under it');
    conv._sendSettle = 0;
    for (let i = 0; i < 4; i++) firefox(240, 180, 15, 0.01);
    assert.equal(conv._sendScale, 3, 'four clean ticks are not enough');
    firefox(240, 180, 15, 0.01);
    assert.equal(conv._sendScale, 2, 'back up after the fifth');
  });

  // Issue 10: Chrome starts a detailed 640x480 picture at 1 to 3 fps on any link, its
  // target covering 640x480, and its own adaptation took 10 s to reach 320x240. When the
  // camera gives the whole frame rate (media-source) and the encoder drops most of it, the
  // SDK goes at once to the size that frame rate says fits, and not back for a while.
  it('an encoder dropping the camera\'s frames at 640x480 takes the picture to 320x240 at once, and not back up soon', () => {
    const conv = conversation();
    conv._fitSendSize({ targetBitrate: 450, width: 640, height: 480, fps: 2 }, { videoKbps: 300, sourceFps: 15 });
    assert.equal(conv._sendScale, 2, 'scale index 2: 320x240');
    conv._sendSettle = 0;
    // 15 fps at 320x240 with room: the ladder would go back to 480x360, which is held.
    for (let i = 0; i < 4; i++) tick(conv, { target: 450, width: 320, height: 240, fps: 15, videoKbps: 150 });
    assert.equal(conv._sendScale, 1, 'back up to 480x360, a size it did not starve at');
    conv._sendSettle = 0;
    for (let i = 0; i < 4; i++) tick(conv, { target: 450, width: 480, height: 360, fps: 15, videoKbps: 150 });
    assert.equal(conv._sendScale, 1, 'not back to 640x480 within SLOW_SIZE_HOLD_MS');
  });

  it('a camera giving fewer frames (low light) is no reason to shrink the picture', () => {
    const conv = conversation();
    for (let i = 0; i < 3; i++) conv._fitSendSize({ targetBitrate: 450, width: 640, height: 480, fps: 7 }, { videoKbps: 300, sourceFps: 7 });
    assert.equal(conv._sendScale ?? 0, 0);
  });

  it('a whole frame rate at a size the target covers stays where it is', () => {
    const conv = conversation();
    conv._sendScale = 2;
    for (let i = 0; i < 5; i++) tick(conv, { target: 110, width: 320, height: 240, fps: 15, videoKbps: 100 });
    assert.equal(conv._sendScale, 2);
  });
});
