// Browser ↔ GStreamer through the real server: pages (our SDK, the original SDK, the demo page)
// and `wilddog-runner run` endpoints (pipelines/echo.toml, an echo bot; pipelines/call-test.toml,
// a test-pattern caller) call each other. What each side sees: the pages' events and decoded
// video (getStats framesDecoded, <video> size), the runners' JSON-line events and exit codes.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { launchChromium } from '../lib/chromium.js';
import { startServer, uniqueUid } from '../lib/server.js';
import { events, expectRemoteVideo, openSdkPage, waitEvent } from '../lib/sdk-page.js';
import { openOriginalPage } from '../lib/original-sdk.js';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipelineFile, runPipeline, spawnRunner, startDemo, startEchoBot } from '../lib/gst-runner.js';
import { screenshotPath } from '../lib/screenshots.js';
import { capKbit, loseMedia, sampleCleanThenLossy, uncap } from '../lib/netem.js';
import { installCamera } from '../lib/textured-camera.js';
import { blackHole, callPorts } from '../lib/black-hole.js';
import { callEchoAudioOnly, callTestCallsPageWithoutVideo, mediaSection, withAudioOnlyCallTest } from '../lib/audio-only.js';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * The type of the remote candidate of the page's selected ICE pair (getStats). `host` when the
 * page connected to a candidate the runner signalled; `prflx` when the page refused (or never
 * got) the runner's candidates and learned its address from the runner's connectivity checks.
 */
async function selectedRemoteCandidate(page) {
  return page.evaluate(async () => {
    const stats = await T.pc().getStats();
    let pairId = null;
    stats.forEach((s) => { if (s.type === 'transport' && s.selectedCandidatePairId) pairId = s.selectedCandidatePairId; });
    const pair = pairId && stats.get(pairId);
    const remote = pair && stats.get(pair.remoteCandidateId);
    return remote ? `${remote.candidateType} ${remote.address || '?'}:${remote.port}` : 'none';
  });
}

/** What the page's RTCPeerConnection saw (lib/original-sdk.js records it; our SDK page does not). */
async function pcLog(page) {
  const log = await page.evaluate(() => (T.pcLog || []).map((x) => (x.what.startsWith('remote') || x.what.startsWith('local') ? `${x.what}:\n${x.d}` : `${x.what} ${x.d}`)));
  return log.length ? `peer connection: ${log.join('\n')}` : 'no peer connection log';
}

/** The mimeType of the codec of the page's received video (getStats inbound-rtp → codec). */
async function receivedVideoCodec(page) {
  return page.evaluate(async () => {
    const stats = await T.pc().getStats();
    let codec = 'none';
    stats.forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'video' && s.codecId) codec = stats.get(s.codecId)?.mimeType || codec;
    });
    return codec;
  });
}

/**
 * Runs `fn(path)` with a temporary copy of pipelines/`name` whose `wilddogcall name=call` has
 * the element properties `props` (e.g. `video-codec=h264`; the runner has no flag for
 * element properties: they belong in the launch description, docs/pipeline-files.md "Media
 * properties").
 */
async function withCallProperties(name, props, fn) {
  const tag = props.replace(/[^a-z0-9]+/gi, '-');
  const dir = mkdtempSync(join(tmpdir(), `wilddog-${tag}-`));
  try {
    const file = join(dir, name.replace(/\.toml$/, `-${tag}.toml`));
    const text = readFileSync(pipelineFile(name), 'utf8');
    assert.match(text, /^wilddogcall name=call$/m, `${name} names its element \`call\``);
    writeFileSync(file, text.replace(/^wilddogcall name=call$/m, `wilddogcall name=call ${props}`));
    return await fn(file);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** {@link withCallProperties} with `video-codec=codec`. */
async function withVideoCodec(name, codec, fn) {
  return withCallProperties(name, `video-codec=${codec}`, fn);
}

/** Asserts that `names` occur in `runner`'s events in this order (others may come between). */
function assertInOrder(runner, names) {
  const seen = runner.names();
  let at = -1;
  for (const n of names) {
    const i = seen.indexOf(n, at + 1);
    assert.ok(i > at, `event "${n}" missing or out of order (want ${names.join(' < ')}): ${seen.join(', ')}`);
    at = i;
  }
}

describe('browser ↔ GStreamer (wilddog-runner run) through our server', () => {
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

  async function echoBot(file) {
    const uid = uniqueUid('echo');
    const bot = await startEchoBot(server, uid, [], file);
    runners.push(bot);
    return { uid, bot };
  }
  /** `file`: a pipeline file's path instead of pipelines/call-test.toml. */
  function callTest(remoteUid, hangupAfter, file) {
    const uid = uniqueUid('call-test');
    const args = ['--uid', uid, '--remote-uid', remoteUid, '--call-timeout', '20'];
    if (hangupAfter) args.push('--hangup-after', String(hangupAfter));
    const label = `call-test ${uid}`;
    const runner = file
      ? spawnRunner(['run', file, '--server', server.wsUrl, '--ice-local-addresses', '127.0.0.1', ...args], { label })
      : runPipeline('call-test.toml', server, args, { label });
    runners.push(runner);
    return { uid, runner };
  }
  async function page(kind, name) {
    const uid = uniqueUid(name);
    const p = kind === 'original' ? await openOriginalPage(browser, server, uid) : await openSdkPage(browser, server, uid);
    await waitEvent(p, 'connected');
    await p.evaluate(() => T.preview());
    return { uid, page: p };
  }

  /** A page of our SDK whose camera is the textured canvas (lib/textured-camera.js) at 480p
   * 15 fps calls a new echo bot; returns once the bot has its first frame. */
  async function texturedCallToEchoBot(name) {
    const { uid: echoUid, bot } = await echoBot();
    const caller = await openSdkPage(browser, server, uniqueUid(name));
    await waitEvent(caller, 'connected');
    await caller.evaluate(installCamera, [640, 480]);
    await caller.evaluate(() => T.preview({ dimension: '480p', maxFPS: 15 }));
    await caller.evaluate((remote) => T.call(remote, 'textured'), echoUid);
    await waitEvent(caller, 'response', { d: 'ACCEPTED', timeout: 20_000 });
    await bot.waitEvent('first_frame');
    return { bot, caller };
  }

  /** A page calls the echo bot and decodes its own video coming back; then hangs up.
   * `file`: another echo pipeline file; `mimeType`: the codec the page must decode. */
  async function callEchoBot(kind, videoTimeout, { file, mimeType } = {}) {
    const { uid: echoUid, bot } = await echoBot(file);
    const caller = await page(kind, `${kind}-caller`);
    await caller.page.evaluate((uid) => T.call(uid, 'hello echo'), echoUid);

    await waitEvent(caller.page, 'response', { d: 'ACCEPTED', timeout: 20_000 });
    const called = await bot.waitEvent('called');
    assert.equal(called.remote_uid, caller.uid);
    assert.equal(called.user_data, 'hello echo');
    await waitEvent(caller.page, 'stream_received', { timeout: 20_000 });
    // The bot decodes the page's 480p camera and encodes it again: 640x480 comes back.
    await expectRemoteVideo(caller.page, { width: 640, height: 480, timeout: videoTimeout }).catch(async (e) => {
      throw new Error(`${e.message}; page events: ${(await events(caller.page)).join(', ')}; ${bot.describe()}`);
    });
    if (mimeType) assert.equal(await receivedVideoCodec(caller.page), mimeType);
    const pair = await selectedRemoteCandidate(caller.page);
    assert.match(pair, /^host 127\.0\.0\.1:/, `the page connected to a candidate the bot signalled (selected remote candidate: ${pair})`);
    const firstFrame = await bot.waitEvent('first_frame', { where: (e) => e.conversation_id === called.conversation_id });
    assert.ok(firstFrame.width > 0 && firstFrame.height > 0, JSON.stringify(firstFrame));

    await caller.page.evaluate(() => T.conv.close());
    const closed = await bot.waitEvent('closed', { where: (e) => e.conversation_id === called.conversation_id, timeout: 15_000 });
    assert.equal(closed.reason, 'remote-hangup');
    assert.equal(closed.remote_uid, caller.uid);
    assertInOrder(bot, ['ready', 'called', 'stream_received', 'first_frame', 'closed']);
    // A fresh pipeline waits for the next call.
    await bot.waitEvent('ready', { from: bot.events.indexOf(closed) + 1, timeout: 15_000 });
    await sleep(200);
    assert.ok(!(await events(caller.page)).includes('closed'), 'the side that closes gets no `closed`');
    await caller.page.close();
    await bot.stop();
    assert.equal(await bot.exit(10_000), 0, `echo bot after SIGTERM: ${bot.describe()}`);
  }

  /** call-test calls a page that accepts; hangs up after `hangupAfter` s. */
  async function callTestCallsPage(kind, { width, height, videoTimeout, hangupAfter, file, mimeType, during }) {
    const callee = await page(kind, `${kind}-callee`);
    await callee.page.evaluate(() => (T.onCalled = 'accept'));
    const { uid, runner } = callTest(callee.uid, hangupAfter, file);

    const called = await waitEvent(callee.page, 'called', { timeout: 20_000 });
    assert.equal(called.d.from, uid);
    if (kind !== 'original') assert.equal(called.d.data, 'wilddog-runner call-test');
    await waitEvent(callee.page, 'accepted');
    await waitEvent(callee.page, 'stream_received', { timeout: 20_000 });
    // One MediaStream with both tracks: what the SDK's `stream_received` gives the app.
    const kinds = await callee.page.evaluate(() => T.remote.stream.getTracks().map((t) => t.kind).sort());
    assert.deepEqual(kinds, ['audio', 'video'], `the remote stream of \`stream_received\`; ${await pcLog(callee.page)}`);
    // videotestsrc, scaled by wilddogcall to its `dimension` (480p by default).
    await expectRemoteVideo(callee.page, { width: 640, height: 480, timeout: videoTimeout }).catch(async (e) => {
      throw new Error(`${e.message}; page events: ${(await events(callee.page)).join(', ')}; ${await pcLog(callee.page)}; ${runner.describe()}`);
    });
    if (kind !== 'original') {
      // wilddogcall's cap (480p default: 500 kbps) reached Chrome's sender, and no floor
      // (Chrome would never send less: its estimate stood at it on a 250 kbit/s link).
      const offer = await callee.page.evaluate(() => T.pc().remoteDescription.sdp);
      assert.match(offer, /a=fmtp:\d+ [^\r\n]*x-google-max-bitrate=500(;|\r)/, offer);
      assert.doesNotMatch(offer, /x-google-min-bitrate/, offer);
    }
    // The runner's candidates are usable: the page connected to one of them (not to a peer-
    // reflexive address learned from the runner's checks).
    const pair = await selectedRemoteCandidate(callee.page);
    assert.match(pair, /^host 127\.0\.0\.1:/, `the page connected to a candidate the runner signalled (selected remote candidate: ${pair})`);
    if (mimeType) assert.equal(await receivedVideoCodec(callee.page), mimeType, await pcLog(callee.page));
    if (during) await during(callee.page);
    // The runner hangs up after --hangup-after: the page gets `closed`.
    await waitEvent(callee.page, 'closed', { timeout: (hangupAfter + 15) * 1000 });

    const code = await runner.exit(20_000);
    assert.equal(code, 0, runner.describe());
    assertInOrder(runner, ['ready', 'response', 'stream_received', 'first_frame', 'closed']);
    const ev = (n) => runner.events.find((e) => e.event === n);
    assert.equal(ev('response').status, 'ACCEPTED');
    if (width) assert.deepEqual([ev('first_frame').width, ev('first_frame').height], [width, height], JSON.stringify(ev('first_frame')));
    else assert.ok(ev('first_frame').width > 0, JSON.stringify(ev('first_frame')));
    const closed = ev('closed');
    assert.equal(closed.reason, 'local-hangup');
    assert.equal(closed.remote_uid, callee.uid);
    assert.ok(closed.received.video > 0 && closed.received.audio > 0, `the runner got the page's media: ${JSON.stringify(closed.received)}`);
    assert.ok(closed.duration_ms >= hangupAfter * 1000 - 500, `hung up after ${closed.duration_ms} ms`);
    await callee.page.close();
  }

  it('our SDK → echo bot: ACCEPTED, the page decodes its video echoed at 640x480, close() → the bot prints `closed`', async () => {
    await callEchoBot('ours', 20_000);
  });

  // A page with a microphone and no camera: its offer sends audio and receives video; the
  // echo answers the video inactive and sends the audio back. Chromium dropped that audio
  // (no inbound-rtp at all) until the answer named its SSRC (lib/audio-only.js).
  it('our SDK with an audio-only stream → echo bot: ACCEPTED, `stream_received` with audio alone, the audio echoed, no video, a clean close', async () => {
    const { uid: echoUid, bot } = await echoBot();
    const callerUid = uniqueUid('audio-only');
    const caller = await openSdkPage(browser, server, callerUid);
    await waitEvent(caller, 'connected');
    await callEchoAudioOnly(caller, { callerUid, echoUid, bot, label: 'chromium' });
    await caller.close();
  });

  // A GStreamer caller with a microphone and no camera: its offer sends audio and receives
  // video. The page's user must hear it, whether the page answers with its camera (video
  // sendonly) or without (video inactive: what made Chromium drop the echo's audio of an
  // unnamed SSRC, lib/audio-only.js).
  it('an audio-only call-test → our SDK page with camera and microphone: the page hears the caller, the runner gets audio and video', async () => {
    await callTestCallsPageWithoutVideo(browser, server, callTest, { callerVideo: false, pageVideo: true });
  });

  it('an audio-only call-test → our SDK page with an audio-only stream: the page hears the caller, the runner gets its audio', async () => {
    await callTestCallsPageWithoutVideo(browser, server, callTest, { callerVideo: false, pageVideo: false });
  });

  // The same with a microphone that gives its first buffer 3 s after the runner starts,
  // after the call is accepted and offered (a microphone or a network source slow to
  // start): no caps had reached the payloader, and the offer named no audio SSRC. Chromium
  // answering with no video to receive then dropped every packet of that audio (no
  // inbound-rtp at all), camera or not. The offer names it now.
  it('an audio-only call-test whose audio starts late → our SDK page with camera and microphone: the page hears the caller', async () => {
    await callTestCallsPageWithoutVideo(browser, server, callTest, { callerVideo: false, pageVideo: true, audioLateMs: 3000 });
  });

  it('an audio-only call-test whose audio starts late → our SDK page with an audio-only stream: the page hears the caller', async () => {
    await callTestCallsPageWithoutVideo(browser, server, callTest, { callerVideo: false, pageVideo: false, audioLateMs: 3000 });
  });

  // An ICE restart of the caller makes a new peer connection, and the SDK answers its offer
  // from a new RTCPeerConnection: the offer must name the audio's SSRC again, although the
  // sending chain waits unlinked (held back until the new connection is up) when it is made.
  it('an audio-only call-test that loses its path and restarts → our SDK page with camera and microphone: the page hears the caller again', async () => {
    const calleeUid = uniqueUid('restart-audio-callee');
    const callee = await openSdkPage(browser, server, calleeUid);
    await waitEvent(callee, 'connected');
    await callee.evaluate(() => T.preview());
    await callee.evaluate(() => (T.onCalled = 'accept'));
    await withAudioOnlyCallTest(async (file) => {
      const { runner } = callTest(calleeUid, 40, file);
      await waitEvent(callee, 'stream_received', { timeout: 15_000 });
      // Audio on the peer connection `pc` (the page's current one when it is null) for 1 s,
      // within `timeout` ms: its inbound audio before and after that second.
      const audioFlows = async (timeout, pc) => {
        const deadline = Date.now() + timeout;
        const read = () => callee.evaluate(async (old) => {
          const cur = T.pc();
          if (!cur || (old && cur === window.__oldPc)) return null;
          let r = null;
          (await cur.getStats()).forEach((s) => { if (s.type === 'inbound-rtp' && s.kind === 'audio') r = { packets: s.packetsReceived || 0, samples: s.totalSamplesReceived || 0 }; });
          return r;
        }, pc);
        let first = await read();
        while (!(first?.packets > 0) && Date.now() < deadline) {
          await sleep(100);
          first = await read();
        }
        await sleep(1000);
        return [first, await read()];
      };
      const [a0, a1] = await audioFlows(5_000, false);
      assert.ok(a1?.packets - a0?.packets >= 25, `the page hears the caller before the path loss: ${JSON.stringify([a0, a1])}; ${runner.describe()}`);
      await callee.evaluate(() => (window.__oldPc = T.pc()));
      const hole = blackHole(callPorts(runner.child.pid, Number(new URL(server.base).port)));
      const t0 = Date.now();
      let back;
      try {
        // The runner finds the path lost (2 s of silence), restarts on a new peer connection,
        // and the page answers from a new RTCPeerConnection, on new ports.
        back = await audioFlows(15_000, true);
      } finally {
        hole.clear();
      }
      const offer = await callee.evaluate(() => T.pc().remoteDescription?.sdp || '');
      const [b0, b1] = back;
      const message = `the page's audio on its new peer connection: ${JSON.stringify(back)}; the restart offer:\n${offer}\npage events: ${(await events(callee)).join(', ')}; ${runner.describe()}`;
      assert.ok(b0?.packets > 0, `the page heard nothing within 15 s of the path loss: ${message}`);
      assert.ok(b1.packets - b0.packets >= 25 && b1.samples - b0.samples >= 24_000, `audio packets and samples in 1 s: ${message}`);
      assert.match(mediaSection(offer, 'audio'), /\r\na=ssrc:\d+ /, `the restart offer names the audio SSRC: ${message}`);
      console.log(`audio-only call-test restart: the page hears the caller again ${Date.now() - t0 - 1000} ms after the path loss; ${JSON.stringify(back)}`);
      await callee.evaluate(() => T.conv.close());
      await runner.waitEvent('closed', { timeout: 15_000 });
      assert.equal(await runner.exit(15_000), 0, runner.describe());
    });
    await callee.close();
  });

  // The reverse: the page has no camera and answers our video `recvonly`.
  it('call-test → our SDK page with an audio-only stream: the page hears the caller and decodes 640x480, the runner gets its audio', async () => {
    await callTestCallsPageWithoutVideo(browser, server, callTest, { callerVideo: true, pageVideo: false });
  });

  it('call-test → our SDK page that accepts: 640x480 decoded, `closed`; runner exits 0 with response, first_frame, closed', async () => {
    await callTestCallsPage('ours', { width: 640, height: 480, videoTimeout: 20_000, hangupAfter: 8 });
  });

  // A copy of call-test.toml with `video-codec=h264`. The page answers the H.264-only offer,
  // decodes H.264 and sends H.264 back, which the runner decodes (the `closed` event's
  // `received`).
  it('call-test with video-codec=h264 → our SDK page: the page decodes 640x480 H.264', async () => {
    await withVideoCodec('call-test.toml', 'h264', (file) =>
      callTestCallsPage('ours', { width: 640, height: 480, videoTimeout: 20_000, hangupAfter: 8, file, mimeType: 'video/H264' }));
  });

  // Issue 10: `fec=ulpfec-red` against a browser. Chromium keeps RED and ULPFEC in its
  // answer and decodes the RED-wrapped VP8. (The Chromium here reports no
  // `fecPacketsReceived` for ULPFEC, so neither that our FEC packets reach it nor that it
  // repairs with them is asserted.)
  it('call-test with fec=ulpfec-red → our SDK page: RED and ULPFEC negotiated, the page decodes 640x480', async () => {
    await withCallProperties('call-test.toml', 'fec=ulpfec-red', (file) =>
      callTestCallsPage('ours', {
        width: 640, height: 480, videoTimeout: 20_000, hangupAfter: 10, file, mimeType: 'video/VP8',
        during: async (calleePage) => {
          const video = () => calleePage.evaluate(async () => {
            const stats = await T.pc().getStats();
            let r = null;
            stats.forEach((s) => {
              if (s.type === 'inbound-rtp' && s.kind === 'video') r = { decoded: s.framesDecoded ?? 0, packets: s.packetsReceived ?? 0, lost: s.packetsLost ?? 0 };
            });
            return r;
          });
          const before = await video();
          await sleep(3000);
          const after = await video();
          const sdp = await calleePage.evaluate(() => T.pc().localDescription.sdp);
          assert.match(sdp, /a=rtpmap:\d+ red\/90000/, `the page's answer keeps RED: ${sdp}`);
          assert.match(sdp, /a=rtpmap:\d+ ulpfec\/90000/, `the page's answer keeps ULPFEC: ${sdp}`);
          assert.ok(after.decoded - before.decoded >= 30, `the page decoded ${after.decoded - before.decoded} frames in 3 s: ${JSON.stringify([before, after])}`);
        },
      }));
  });

  // The page offers VP8 first (Chrome's order) and H.264 among the rest; a bot set to
  // `video-codec=h264` answers H.264, as a recorder that keeps the browser's H.264 would.
  it('our SDK → echo bot with video-codec=h264: the bot answers H.264 and the page decodes it at 640x480', async () => {
    await withVideoCodec('echo.toml', 'h264', (file) => callEchoBot('ours', 20_000, { file, mimeType: 'video/H264' }));
  });

  // Issue 10: our SDK kept the application's dimension under pressure
  // (`degradationPreference: 'maintain-resolution'`): a detailed 640x480 picture (the
  // textured camera, which compresses like a real one; Chrome's fake camera is a flat
  // picture) reached the bot at about 2 fps on a clean link, libvpx dropping frames to stay
  // under the 500 kbit/s cap. It now follows the browser's adaptation: a smaller picture at
  // the full frame rate.
  it('our SDK with a detailed camera → echo bot: the bot receives the page\'s 15 fps', async () => {
    const { bot, caller } = await texturedCallToEchoBot('textured-caller');
    const sent = () => caller.evaluate(async () => {
      const stats = await T.pc().getStats();
      let r = null;
      stats.forEach((s) => { if (s.type === 'outbound-rtp' && s.kind === 'video') r = { width: s.frameWidth, height: s.frameHeight, fps: s.framesPerSecond, limitation: s.qualityLimitationReason }; });
      return r;
    });
    // Chrome starts at 640x480 (x-google-start-bitrate) and steps down to a size this
    // picture fits at its estimate. A fixed 12 s wait was not enough on a loaded CI machine:
    // the bot then measured 7 fps in its first 2 s window (and 15, 15 after), the page
    // sending 240x180, limited by bandwidth. So the page's sent size is read every second,
    // and the bot's fps is judged over the last 6 s of 10 s in which that size held; 40 s at
    // most.
    const sizeOf = (s) => (s ? `${s.width}x${s.height}` : 'none');
    const deadline = Date.now() + 40_000;
    const samples = [];
    let held = null;
    while (!held && Date.now() < deadline) {
      samples.push({ size: sizeOf(await sent()), botEvents: bot.events.length });
      const last = samples.slice(-11);
      if (last.length === 11 && last[0].size !== 'none' && last.every((x) => x.size === last[0].size)) held = last;
      else await sleep(1_000);
    }
    const final = await sent();
    const sizes = samples.map((x) => x.size);
    console.log('page sent sizes', JSON.stringify(sizes), 'page sent', JSON.stringify(final));
    assert.ok(held, `the page's sent size never held for 10 s in 40 s: ${JSON.stringify(sizes)}`);
    const fps = bot.events.slice(held[4].botEvents).filter((e) => e.event === 'stats').map((e) => e.remote.fps);
    console.log('bot received fps', JSON.stringify(fps), 'at', held[0].size);
    assert.ok(fps.length >= 2, `the bot reported ${fps.length} stats in 6 s`);
    assert.ok(Math.min(...fps) >= 12, `the bot received ${JSON.stringify(fps)} fps of the page's 15 at ${held[0].size} (page sent ${JSON.stringify(final)})`);
    await caller.evaluate(() => T.conv.close());
    await caller.close();
    await bot.stop();
  });

  // Issue 10: at a 250 kbit/s cap that both directions share, Chrome's own adaptation keeps
  // a detailed picture at 320x240 or more, where it made 1 to 3 fps. Our SDK
  // scales its picture down further and caps Opus, as wilddogcall does, and the page keeps
  // sending frames; and Chrome's estimate, fed by the bot's transport-wide feedback, goes
  // under what the dimension needs; and the bot decodes some of those frames every second.
  it('our SDK with a detailed camera → echo bot at 250 kbit/s: the page sends a smaller picture, less audio, and keeps sending frames', async () => {
    const { bot, caller } = await texturedCallToEchoBot('capped-caller');
    const sent = () => caller.evaluate(async () => {
      const stats = await T.pc().getStats();
      const r = {};
      stats.forEach((s) => {
        if (s.type === 'outbound-rtp' && s.kind === 'video') r.video = { width: s.frameWidth, height: s.frameHeight, frames: s.framesSent, target: s.targetBitrate, keyFrames: s.keyFramesEncoded, pli: s.pliCount, limitation: s.qualityLimitationReason };
        if (s.type === 'outbound-rtp' && s.kind === 'audio') r.audio = { target: s.targetBitrate };
      });
      return r;
    });
    let before;
    let after;
    let fps;
    const audioTargets = [];
    try {
      capKbit(250);
      await sleep(10_000);
      before = await sent();
      const from = bot.events.length;
      // Opus is capped while the picture is at its smallest sizes, which the target may
      // leave for a while: its lowest target over the period.
      for (let i = 0; i < 17; i++) {
        await sleep(500);
        const now = await sent();
        audioTargets.push(now.audio.target);
      }
      after = await sent();
      after.sdkScale = await caller.evaluate(() => T.conv._sendScale);
      fps = bot.events.slice(from).filter((e) => e.event === 'stats').map((e) => e.remote.fps);
    } finally {
      uncap();
    }
    const sentFps = (after.video.frames - before.video.frames) / 8.5;
    console.log('at 250 kbit/s: page sent', JSON.stringify(after), `${sentFps.toFixed(1)} fps, Opus targets`, JSON.stringify(audioTargets), '; the bot received fps', JSON.stringify(fps));
    assert.ok(after.video.width <= 240, `the page still sends ${after.video.width}x${after.video.height} at 250 kbit/s`);
    assert.ok(Math.min(...audioTargets) <= 16000, `Opus never capped at 250 kbit/s: ${JSON.stringify(audioTargets)}`);
    assert.ok(sentFps >= 2, `the page sent ${sentFps.toFixed(1)} fps at 250 kbit/s`);
    // What the user at the bot sees: frames every second. The bot's transport-wide feedback
    // waited for the end of a video frame, so while the page's encoder dropped frames Chrome
    // heard nothing for up to 1.5 s, and our periodic key frames read to it as congestion:
    // the bot decoded 0 to 5 fps (means 2.5 and 2.3 with the release runner, 2 runs).
    // Since, 3 to 7 (means 4.2 to 6.5, 4 runs, debug and release).
    const meanFps = fps.reduce((a, b) => a + b, 0) / Math.max(1, fps.length);
    assert.ok(fps.length >= 3 && meanFps >= 3.5 && Math.min(...fps) >= 2, `the bot decoded ${JSON.stringify(fps)} fps of the page's frames at 250 kbit/s`);
    // Chrome's estimate follows the link below 200 kbit/s: the bot's answer maps the
    // transport-wide feedback extension (it sends Chrome that feedback) and sets no
    // x-google-min-bitrate floor. Without either, its video target stood at 185 kbit/s.
    const answer = await caller.evaluate(() => T.pc().remoteDescription.sdp);
    for (const section of answer.split('\nm=').slice(1)) {
      assert.match(section, /a=extmap:\d+ [^\r\n]*transport-wide-cc/, `the bot's answer: ${section}`);
    }
    assert.ok(after.video.target < 150_000, `the page's video target at 250 kbit/s: ${after.video.target}`);
    // Both ends said so: the SDK's `quality` event and the runner's (the bot's wilddogcall's
    // wilddog-quality), 'low' with the target under what 480p needs.
    const pageQuality = await caller.evaluate(() => T.quality);
    const low = pageQuality.find((q) => q.quality === 'low');
    assert.ok(low && low.neededBitrate > 0 && low.width > 0, `the page's quality events: ${JSON.stringify(pageQuality)}`);
    const botQuality = bot.events.filter((e) => e.event === 'quality');
    assert.ok(botQuality.some((e) => e.quality === 'low' && e.target_bitrate < e.needed_bitrate && e.conversation_id), `the bot's quality events: ${JSON.stringify(botQuality)}`);
    await caller.evaluate(() => T.conv.close());
    await caller.close();
    await bot.stop();
  });

  // Issue 10: a Chromium sender calling the echo bot under 3 % loss made one key frame in
  // 30 s, the bot answered none of its 1,453 NACKs and 9 PLIs, and the page decoded 38 of the
  // 331 frames it decodes without loss. Now, under 5 % random loss both ways: the bot NACKs
  // what it misses of the page's stream and asks for key frames, and the page resends and
  // makes them (its outbound-rtp); the page's NACKs are answered with retransmissions (its
  // inbound-rtp); the echo, which crosses the lossy link twice, keeps playing.
  it('our SDK → echo bot under 5 % loss: NACKs and PLIs answered both ways, the echo keeps playing', async () => {
    const { uid: echoUid, bot } = await echoBot();
    const caller = await page('ours', 'lossy-caller');
    await caller.page.evaluate((uid) => T.call(uid, 'lossy'), echoUid);
    await waitEvent(caller.page, 'response', { d: 'ACCEPTED', timeout: 20_000 });
    await expectRemoteVideo(caller.page, { width: 640, height: 480, timeout: 20_000 });
    const rtp = () => caller.page.evaluate(async () => {
      const stats = await T.pc().getStats();
      const r = {};
      stats.forEach((s) => {
        if (s.kind !== 'video') return;
        // A counter Chromium has not started yet is absent: 0.
        if (s.type === 'outbound-rtp') r.out = { nack: s.nackCount ?? 0, pli: s.pliCount ?? 0, resent: s.retransmittedPacketsSent ?? 0, keyFrames: s.keyFramesEncoded ?? 0 };
        if (s.type === 'inbound-rtp') r.in = { nack: s.nackCount ?? 0, pli: s.pliCount ?? 0, repaired: s.retransmittedPacketsReceived ?? 0, decoded: s.framesDecoded ?? 0, keyFrames: s.keyFramesDecoded ?? 0 };
      });
      return r;
    });
    const { clean0, clean1, lossy0, lossy1 } = await sampleCleanThenLossy(rtp, {
      percent: 5,
      cleanMs: 8000,
      lossyMs: 16_000,
      // Retransmissions repair nearly all of 5 %: a 60 % burst loses frames for good, so
      // the bot must ask for a key frame (a 30 % one was sometimes repaired whole, once the
      // bot asked for a packet again until it gave it up). The burst spares RTCP: the test
      // asserts that the requests arrive, and a burst that lost them all failed it.
      whileLossy: async () => {
        loseMedia(60);
        await sleep(4000);
      },
    });
    await sleep(3000);
    const burst = await rtp();
    const stats = bot.events.filter((e) => e.event === 'stats').at(-1);
    console.log('clean', JSON.stringify([clean0, clean1]), 'lossy', JSON.stringify([lossy0, lossy1]), 'bot', JSON.stringify(stats));
    // The bot NACKed what it lost of the page's video, and the page resent it.
    assert.ok(lossy1.out.nack > lossy0.out.nack, `the bot sent no NACK: ${JSON.stringify(lossy1.out)}`);
    assert.ok(lossy1.out.resent > lossy0.out.resent, `the page resent nothing: ${JSON.stringify(lossy1.out)}`);
    // The page's NACKs were answered: retransmissions arrived.
    assert.ok(lossy1.in.nack > lossy0.in.nack, `the page sent no NACK: ${JSON.stringify(lossy1.in)}`);
    assert.ok(lossy1.in.repaired > lossy0.in.repaired, `no retransmission reached the page: ${JSON.stringify(lossy1.in)}`);
    // The bot asked the page for key frames (PLI) and got them.
    assert.ok(burst.out.pli > lossy0.out.pli, `the bot sent no PLI: ${JSON.stringify(burst.out)}`);
    assert.ok(burst.out.keyFrames > lossy0.out.keyFrames, `the page made no key frame: ${JSON.stringify(burst.out)}`);
    // What the bot saw: NACKs from the page, and what it resent.
    assert.ok(stats.local.nackReceived > 0 && stats.local.retransmitted > 0, JSON.stringify(stats.local));
    // The page's key frame requests were answered: it decoded a key frame after asking.
    if (burst.in.pli > lossy1.in.pli) assert.ok(burst.in.keyFrames > lossy1.in.keyFrames, `the page asked for key frames and got none: ${JSON.stringify(burst.in)}`);
    // The echo keeps playing: per second, at least 40 % of the frames of the clean period
    // (it crosses the lossy link twice; before, 11 % came through at 3 % loss).
    const cleanRate = (clean1.in.decoded - clean0.in.decoded) / 8;
    const lossyRate = (lossy1.in.decoded - lossy0.in.decoded) / 16;
    assert.ok(lossyRate >= 0.4 * cleanRate, `${lossyRate} frames/s decoded under 5 % loss against ${cleanRate} clean`);
    await caller.page.evaluate(() => T.conv.close());
    await caller.page.close();
    await bot.stop();
  });

  // Issue 10, "against every peer, the original SDK too": the original service's SDK,
  // unmodified, calls the echo bot under 5 % random loss both ways. Its RTCPeerConnection is
  // Chromium's, configured by that SDK's own offer: the bot's NACKs reach it and it resends;
  // its NACKs are answered; the echo keeps playing.
  it('the original SDK → echo bot under 5 % loss: NACKs answered both ways, the echo keeps playing', async () => {
    const { uid: echoUid, bot } = await echoBot();
    const caller = await page('original', 'original-lossy');
    await caller.page.evaluate((uid) => T.call(uid, 'lossy'), echoUid);
    await waitEvent(caller.page, 'response', { d: 'ACCEPTED', timeout: 20_000 });
    await expectRemoteVideo(caller.page, { timeout: 20_000 });
    const rtp = () => caller.page.evaluate(async () => {
      const stats = await T.pc().getStats();
      const r = { out: { nack: 0, resent: 0 }, in: { nack: 0, repaired: 0, decoded: 0 } };
      stats.forEach((s) => {
        if (s.kind !== 'video') return;
        if (s.type === 'outbound-rtp') r.out = { nack: s.nackCount ?? 0, resent: s.retransmittedPacketsSent ?? 0 };
        if (s.type === 'inbound-rtp') r.in = { nack: s.nackCount ?? 0, repaired: s.retransmittedPacketsReceived ?? 0, decoded: s.framesDecoded ?? 0 };
      });
      return r;
    });
    const { clean0, clean1, lossy0, lossy1 } = await sampleCleanThenLossy(rtp, { percent: 5, cleanMs: 6000, lossyMs: 12_000 });
    await sleep(2500);
    const stats = bot.events.filter((e) => e.event === 'stats').at(-1);
    console.log('original SDK clean', JSON.stringify([clean0, clean1]), 'lossy', JSON.stringify([lossy0, lossy1]), 'bot', JSON.stringify(stats));
    // The bot NACKed what it lost of the page's video, and the page resent it.
    assert.ok(lossy1.out.nack > lossy0.out.nack, `the bot's NACKs never reached the page: ${JSON.stringify(lossy1.out)}`);
    assert.ok(lossy1.out.resent > lossy0.out.resent, `the page resent nothing: ${JSON.stringify(lossy1.out)}`);
    // The page's NACKs were answered: retransmissions arrived.
    assert.ok(lossy1.in.nack > lossy0.in.nack, `the page sent no NACK: ${JSON.stringify(lossy1.in)}`);
    assert.ok(lossy1.in.repaired > lossy0.in.repaired, `no retransmission reached the page: ${JSON.stringify(lossy1.in)}`);
    assert.ok(stats.local.nackReceived > 0 && stats.local.retransmitted > 0, `the bot resent nothing: ${JSON.stringify(stats.local)}`);
    // The echo, across the lossy link twice, keeps playing (as our SDK's test: 40 %).
    const cleanRate = (clean1.in.decoded - clean0.in.decoded) / 6;
    const lossyRate = (lossy1.in.decoded - lossy0.in.decoded) / 12;
    assert.ok(lossyRate >= 0.4 * cleanRate, `${lossyRate} frames/s decoded under 5 % loss against ${cleanRate} clean`);
    await caller.page.evaluate(() => T.conv.close());
    await caller.page.close();
    await bot.stop();
  });

  it('call-test → our SDK page that rejects: runner exits 3 with response REJECTED', async () => {
    const callee = await page('ours', 'rejecter');
    await callee.page.evaluate(() => (T.onCalled = 'reject'));
    const { uid, runner } = callTest(callee.uid, 5);
    const called = await waitEvent(callee.page, 'called', { timeout: 20_000 });
    assert.equal(called.d.from, uid);
    await waitEvent(callee.page, 'rejected');
    assert.equal(await runner.exit(20_000), 3, runner.describe());
    const responses = runner.events.filter((e) => e.event === 'response');
    assert.deepEqual(responses.map((e) => e.status), ['REJECTED'], runner.describe());
    assert.ok(!runner.names().includes('first_frame'), runner.describe());
    await callee.page.close();
  });

  // The original sender starts at 320x240 and ramps up (docs/browser-sdk.md); the bot's
  // wilddogcall scales what it sends back to its own `dimension` (480p): 640x480 from the start.
  it('the original SDK → echo bot: ACCEPTED, its video echoed back at 640x480, close() → `closed`', async () => {
    await callEchoBot('original', 45_000);
  });

  // The original SDK shows the first MediaStream the peer connection gives it (legacy
  // `addstream`). This failed intermittently while webrtcbin's offer named a stream for the
  // audio section only (the video encoder had no caps yet when the offer was made): the
  // original then showed an audio-only stream, 0x0. wilddogcall now names one stream on every
  // sent section (a=msid); the page checks that it got both tracks in one stream.
  it('call-test → original SDK page that accepts: 640x480 decoded by the original; runner exits 0', async () => {
    // What the runner decodes from the original sender starts small (its ramp): any size.
    await callTestCallsPage('original', { videoTimeout: 20_000, hangupAfter: 10 });
  });
});

describe('the demo page calling the echo bot of `wilddog-runner demo`', () => {
  let demo;
  let browser;

  before(async () => {
    demo = await startDemo(uniqueUid('echo'));
    browser = await launchChromium();
  });
  after(async () => {
    await browser?.close();
    await demo?.stop();
  });

  it('a person signs in, calls the bot, sees the echoed video and live stats, hangs up', async () => {
    const me = uniqueUid('visitor');
    const p = await browser.newPage();
    await p.goto(`${demo.base}/`);
    await p.getByLabel('Your uid').fill(me);
    await p.getByRole('button', { name: 'Sign in', exact: true }).click();
    await p.locator('#status').filter({ hasText: 'Ready' }).waitFor({ timeout: 10_000, polling: 100 });

    await p.getByLabel('Callee uid').fill(demo.echoUid);
    await p.getByRole('button', { name: 'Call', exact: true }).click();
    const called = await demo.waitEvent('called', { where: (e) => e.endpoint === 'echo' && e.remote_uid === me });

    await p.waitForFunction(() => {
      const v = document.getElementById('remote-video');
      return v.videoWidth === 640 && v.videoHeight === 480 && v.currentTime > 1;
    }, null, { timeout: 20_000, polling: 100 });
    await p.locator('#status').filter({ hasText: `In a call with ${demo.echoUid}` }).waitFor({ timeout: 10_000 });
    await p.locator('#stats-remote td[data-k="res"]').filter({ hasText: '640 × 480' }).waitFor({ timeout: 10_000, polling: 100 });
    await p.waitForFunction(() => parseInt(document.querySelector('#stats-remote td[data-k="rate"]').textContent, 10) > 0, null, { timeout: 10_000, polling: 100 });
    assert.equal(await p.locator('#stats-remote td[data-k="cand"]').textContent(), 'host');
    // The echoed picture is the fake camera's moving one: the remote <video> keeps playing.
    const t0 = await p.evaluate(() => document.getElementById('remote-video').currentTime);
    await sleep(1000);
    assert.ok((await p.evaluate(() => document.getElementById('remote-video').currentTime)) > t0 + 0.5, 'the remote video plays');
    await p.screenshot({ path: screenshotPath('demo-echo.png'), fullPage: true });

    await p.getByRole('button', { name: 'Hang up' }).click();
    const closed = await demo.waitEvent('closed', { where: (e) => e.endpoint === 'echo' && e.conversation_id === called.conversation_id, timeout: 15_000 });
    assert.equal(closed.reason, 'remote-hangup');
    assert.equal(await p.locator('#hangup').isDisabled(), true);
    await p.close();
  });
});
