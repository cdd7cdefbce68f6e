// call-test calls a Chromium page (our SDK) that stops its video transceiver before it
// answers: Chromium answers our first, bundle-tag section `m=video 9 … a=inactive` (in
// BUNDLE, not rejected) and audio sendrecv. Audio must flow both ways, we send no video into
// the inactive section, and our caller must not take the missing video for a lost path (it
// rebuilt its peer connection every 2 s: the sink waiting for `video_src` never prerolled, the
// pipeline never reached PLAYING and the remote audio stopped at the jitterbuffer).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { launchChromium } from '../lib/chromium.js';
import { startServer, uniqueUid } from '../lib/server.js';
import { events, openSdkPage, waitEvent } from '../lib/sdk-page.js';
import { runPipeline } from '../lib/gst-runner.js';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** The page's inbound audio (getStats inbound-rtp, every peer connection it made). */
function inboundAudio(page) {
  return page.evaluate(async () => {
    let bytes = 0;
    let packets = 0;
    for (const pc of window.__pcs) {
      (await pc.getStats()).forEach((s) => {
        if (s.type === 'inbound-rtp' && s.kind === 'audio') {
          bytes += s.bytesReceived || 0;
          packets += s.packetsReceived || 0;
        }
      });
    }
    return { bytes, packets };
  });
}

describe('Chromium callee answering our video section inactive', () => {
  let server;
  let browser;
  const runners = [];
  before(async () => {
    server = await startServer();
    browser = await launchChromium();
  });
  after(async () => {
    for (const r of runners) await r.stop();
    await browser?.close();
    await server?.stop();
  });

  it('call-test ↔ Chromium with its video stopped: audio both ways, no video sent, no restart', async () => {
    const uid = uniqueUid('chromium-callee');
    const page = await openSdkPage(browser, server, uid);
    await waitEvent(page, 'connected');
    await page.evaluate(() => T.preview());
    // Every offer the page gets (a restart makes a new one), its answers, and its peer
    // connections; the video transceiver stopped before each answer.
    await page.evaluate(() => {
      window.__offers = 0;
      window.__answers = [];
      window.__pcs = [];
      const Pc = window.RTCPeerConnection;
      window.RTCPeerConnection = function (...args) {
        const pc = new Pc(...args);
        window.__pcs.push(pc);
        return pc;
      };
      window.RTCPeerConnection.prototype = Pc.prototype;
      const setRemote = Pc.prototype.setRemoteDescription;
      Pc.prototype.setRemoteDescription = function (desc, ...rest) {
        if (desc && desc.type === 'offer') window.__offers += 1;
        return setRemote.call(this, desc, ...rest);
      };
      const createAnswer = Pc.prototype.createAnswer;
      Pc.prototype.createAnswer = async function (...args) {
        for (const t of this.getTransceivers()) {
          if (t.receiver.track.kind === 'video' && !t.stopped) t.stop();
        }
        const answer = await createAnswer.apply(this, args);
        window.__answers.push(answer.sdp);
        return answer;
      };
      T.onCalled = 'accept';
    });
    const caller = uniqueUid('call-test');
    const runner = runPipeline('call-test.toml', server, ['--uid', caller, '--remote-uid', uid, '--hangup-after', '9', '--call-timeout', '20'], { label: 'call-test→chromium' });
    runners.push(runner);
    const fail = async (what) => `${what}; page events: ${(await events(page)).join(', ')}; offers ${await page.evaluate(() => window.__offers)}; answers:\n${(await page.evaluate(() => window.__answers)).join('\n---\n')}\n${runner.describe()}`;
    await waitEvent(page, 'accepted', { timeout: 20_000 });
    await page.waitForFunction(() => window.__answers.length > 0, null, { timeout: 15_000 });
    const answer = await page.evaluate(() => window.__answers[0]);
    // The shape this is about: the first section (the BUNDLE tag) video, inactive, port 9.
    assert.match(answer, /\r\nm=video [1-9]\d* [^\r]*\r\n(?:[^m][^\r]*\r\n)*a=inactive\r\n/, answer);
    assert.match(answer, /a=group:BUNDLE \S+ \S+/, answer);

    // Chromium receives our audio, and keeps receiving it.
    const deadline = Date.now() + 15_000;
    let first = await inboundAudio(page);
    while (first.bytes === 0 && Date.now() < deadline) {
      await sleep(250);
      first = await inboundAudio(page);
    }
    assert.ok(first.bytes > 0, await fail(`Chromium received no audio from us (${JSON.stringify(first)})`));
    await sleep(3000);
    const later = await inboundAudio(page);
    assert.ok(later.packets >= first.packets + 50, await fail(`Chromium's inbound audio did not grow (${JSON.stringify(first)} → ${JSON.stringify(later)})`));

    // The call ends at --hangup-after: our side received Chromium's audio all along.
    assert.equal(await runner.exit(40_000), 0, runner.describe());
    const closed = runner.events.find((e) => e.event === 'closed');
    assert.equal(closed?.media_connected, true, runner.describe());
    // 9 s of 20 ms Opus packets is 450 buffers; a third of that on a loaded machine. Before
    // the fix the pipeline stayed PAUSED: about 1 s (50) per peer connection.
    assert.ok(closed.received.audio >= 150, await fail(`our side decoded too little of Chromium's audio: ${JSON.stringify(closed.received)}`));
    // No restart: one offer, one peer connection, all call long.
    assert.equal(await page.evaluate(() => window.__offers), 1, await fail('the caller restarted its peer connection'));
    assert.equal(await page.evaluate(() => window.__pcs.length), 1, await fail('more than one peer connection'));
    // No video into the inactive section: no frame reached our encoder once answered (the
    // stats' local fps; the first report may count the frames before the answer).
    const stats = runner.events.filter((e) => e.event === 'stats');
    assert.ok(stats.length >= 2, runner.describe());
    for (const s of stats.slice(1)) assert.equal(s.local.fps, 0, await fail(`we sent video into the inactive section: ${JSON.stringify(s.local)}`));
    assert.ok(!(await events(page)).some((e) => e.startsWith('error')), (await events(page)).join(', '));
    await page.close();
  });
});
