// Calls that connect with any peer: Chromium offering a rejected (stopped) video section, in
// its first offer and in a re-offer, gets an answer it applies and its audio flows; Firefox
// ESR (puppeteer-core over WebDriver BiDi) calls the echo bot and a callee whose live sources
// run before the call (it follows Firefox's payload types), and is called by call-test, all
// decoding video (our endpoint as DTLS client and server with a stack that is not Chromium's);
// it calls the echo bot with an audio-only stream too (lib/audio-only.js) and hears itself.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { launchChromium } from '../lib/chromium.js';
import { launchFirefox } from '../lib/firefox.js';
import { startServer, uniqueUid } from '../lib/server.js';
import { events, expectRemoteVideo, openSdkPage, waitEvent } from '../lib/sdk-page.js';
import { runPipeline, startEchoBot } from '../lib/gst-runner.js';
import { blackHole, callPorts, videoBack } from '../lib/black-hole.js';
import { startCoturn } from '../lib/coturn.js';
import { capKbit, sampleCleanThenLossy, uncap } from '../lib/netem.js';
import { installCamera } from '../lib/textured-camera.js';
import { callEchoAudioOnly, callTestCallsPageWithoutVideo } from '../lib/audio-only.js';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Audio RTP packets the page received so far (getStats inbound-rtp). */
function audioPackets(page) {
  return page.evaluate(async () => {
    let n = 0;
    (await T.pc().getStats()).forEach((s) => { if (s.type === 'inbound-rtp' && s.kind === 'audio') n += s.packetsReceived || 0; });
    return n;
  });
}

/** Waits until the page's received audio packets grow by `more`. */
async function expectAudioFlowing(page, more = 20, timeout = 15_000) {
  const deadline = Date.now() + timeout;
  const first = await audioPackets(page);
  let last = first;
  while (Date.now() < deadline && last < first + more) {
    await sleep(250);
    last = await audioPackets(page);
  }
  assert.ok(last >= first + more, `audio packets did not grow (${first} → ${last})`);
}

/** The m-section of `mid` in `sdp`, and the BUNDLE group's mids. */
function section(sdp, mid) {
  const parts = sdp.split(/\r\nm=/);
  const m = parts.find((p) => new RegExp(`\\r\\na=mid:${mid}(\\r|$)`).test(p)) || '';
  const bundle = (sdp.match(/a=group:BUNDLE([^\r\n]*)/) || ['', ''])[1].trim().split(/\s+/).filter(Boolean);
  return { m: m ? `m=${m}` : '', bundle };
}

describe('Chromium: offers with a rejected (stopped) video section', () => {
  let server;
  let browser;
  const bots = [];
  before(async () => {
    server = await startServer();
    browser = await launchChromium();
  });
  after(async () => {
    for (const b of bots) await b.stop();
    await browser?.close();
    await server?.stop();
  });

  async function callEcho() {
    const echoUid = uniqueUid('echo');
    const bot = await startEchoBot(server, echoUid);
    bots.push(bot);
    const uid = uniqueUid('chromium');
    const page = await openSdkPage(browser, server, uid);
    await waitEvent(page, 'connected');
    await page.evaluate(() => T.preview());
    return { page, bot, echoUid };
  }

  it('first offer: port-0 video section answered port 0, out of BUNDLE; audio flows', async () => {
    const { page, bot, echoUid } = await callEcho();
    // The SDK's offer, made after the video transceiver got a mid and was stopped: what a
    // page that stops its camera's transceiver before calling sends.
    await page.evaluate(() => {
      const createOffer = RTCPeerConnection.prototype.createOffer;
      RTCPeerConnection.prototype.createOffer = async function (options) {
        if (this.__stoppedOnce) return createOffer.call(this, options);
        this.__stoppedOnce = true;
        await this.setLocalDescription(await createOffer.call(this, options));
        this.getTransceivers().find((t) => t.receiver.track.kind === 'video').stop();
        return createOffer.call(this, options);
      };
    });
    await page.evaluate((uid) => T.call(uid), echoUid);
    await waitEvent(page, 'response', { d: 'ACCEPTED' });
    await page.waitForFunction(() => T.pc() && T.pc().signalingState === 'stable' && T.pc().remoteDescription, null, { timeout: 15_000 }).catch(async (e) => {
      const state = await page.evaluate(() => [T.pc()?.signalingState, T.pc()?.localDescription?.sdp]);
      throw new Error(`our answer was not applied (${e.message}): ${state.join('\n')}; page events: ${(await events(page)).join(', ')}; ${bot.describe()}`);
    });
    const { offer, answer } = await page.evaluate(() => ({ offer: T.pc().localDescription.sdp, answer: T.pc().remoteDescription.sdp }));
    const offered = section(offer, 1);
    assert.match(offered.m, /^m=video 0 /, `Chromium offered the stopped section with port 0:\n${offer}`);
    const answered = section(answer, 1);
    assert.match(answered.m, /^m=video 0 /, answer);
    assert.match(answered.m, /a=inactive/, answer);
    assert.doesNotMatch(answered.m, /\r\nb=/, answer);
    assert.ok(!answered.bundle.includes('1'), `mid 1 out of BUNDLE: ${answer}`);
    await expectAudioFlowing(page).catch(async (e) => {
      const pc = await page.evaluate(() => [T.pc()?.iceConnectionState, T.pc()?.connectionState]);
      throw new Error(`${e.message}; page pc ${pc.join('/')}; answer:\n${answer}\n${bot.describe()}`);
    });
    assert.ok(!(await events(page)).some((e) => e.startsWith('error')), (await events(page)).join(', '));
    assert.ok(!bot.names().includes('error'), bot.describe());
    await page.evaluate(() => T.conv.close());
    await page.close();
  });

  it('re-offer mid-call with the video transceiver stopped: answer applied, audio goes on', async () => {
    const { page, bot, echoUid } = await callEcho();
    await page.evaluate((uid) => T.call(uid), echoUid);
    await waitEvent(page, 'response', { d: 'ACCEPTED' });
    await expectRemoteVideo(page, { timeout: 20_000 });
    await page.evaluate(() => {
      T.pc().getTransceivers().find((t) => t.receiver.track.kind === 'video').stop();
      T.conv._sendOffer(true);
    });
    await page.waitForFunction(
      () => T.pc().signalingState === 'stable' && /\r\nm=video 0 /.test(T.pc().remoteDescription.sdp),
      null,
      { timeout: 15_000 },
    ).catch(async (e) => {
      const sdp = await page.evaluate(() => [T.pc().signalingState, T.pc().remoteDescription?.sdp]);
      throw new Error(`the re-offer's answer was not applied (${e.message}): ${sdp.join('\n')}; ${bot.describe()}`);
    });
    const answer = await page.evaluate(() => T.pc().remoteDescription.sdp);
    assert.ok(!section(answer, 1).bundle.includes('1'), answer);
    await expectAudioFlowing(page);
    assert.ok(!(await events(page)).some((e) => e.startsWith('error') || e === 'closed'), (await events(page)).join(', '));
    await page.evaluate(() => T.conv.close());
    await page.close();
  });
});

describe('Firefox ESR ↔ GStreamer', () => {
  let server;
  let browser;
  const runners = [];
  before(async () => {
    server = await startServer();
    browser = await launchFirefox();
  });
  after(async () => {
    for (const r of runners) await r.stop();
    await browser?.close();
    await server?.stop();
  });

  /** `page` calls the echo bot `echoUid` (`data`: the call's user data) and decodes its own
   * video coming back at 640x480. */
  async function callEchoBotAndSeeIt(page, echoUid, bot, data) {
    await page.evaluate((uid, d) => T.call(uid, d), echoUid, data);
    await waitEvent(page, 'response', { d: 'ACCEPTED', timeout: 20_000 });
    await page.bringToFront();
    await expectRemoteVideo(page, { width: 640, height: 480, timeout: 30_000 }).catch(async (e) => {
      throw new Error(`${e.message}; page events: ${(await events(page)).join(', ')}; ${bot.describe()}`);
    });
  }

  /** Records, in `T.trace`, what the SDK's size ladder read on each stats tick (the size and
   * frames encoded, the loss over its window, the scale before and after) and the bot's last
   * receiver report of the video as getStats gives it (remote-inbound-rtp): which rule moved
   * the picture, when one did. */
  function traceLadder(page) {
    return page.evaluate(() => {
      T.trace = [];
      const f = T.conv._fitSendSize;
      T.conv._fitSendSize = function (local, video) {
        const at = this._sendScale || 0;
        const settle = this._sendSettle || 0;
        f.call(this, local, video);
        const row = { t: Date.now() % 100000, w: local.width, fps: local.fps, enc: video.encodedFps == null ? null : +video.encodedFps.toFixed(1), loss: +(video.lossFraction || 0).toFixed(3), ticks: (this._lossTicks || []).map((x) => `${x.lost}/${x.sent}`).join(' '), rttRise: +(video.rttRise || 0).toFixed(3), settle, at, to: this._sendScale || 0 };
        T.trace.push(row);
        T.pc()?.getStats().then((r) => r.forEach((s) => {
          if (s.type === 'remote-inbound-rtp' && s.kind === 'video') row.rr = { ts: Math.round(s.timestamp) % 100000, lost: s.packetsLost, rcv: s.packetsReceived, fl: s.fractionLost, rtt: s.roundTripTime };
          if (s.type === 'outbound-rtp' && s.kind === 'video') row.sent = s.packetsSent;
        }));
      };
    });
  }

  async function firefoxPage(name) {
    const uid = uniqueUid(name);
    const page = await openSdkPage(browser, server, uid, { initOptions: { debug: true } });
    await waitEvent(page, 'connected');
    await page.evaluate(() => T.preview());
    return { uid, page };
  }

  it('Firefox calls the echo bot (we answer: DTLS client) and decodes its video back', async () => {
    const echoUid = uniqueUid('echo');
    const bot = await startEchoBot(server, echoUid);
    runners.push(bot);
    const { page } = await firefoxPage('firefox-caller');
    await page.evaluate((uid) => T.call(uid), echoUid);
    await waitEvent(page, 'response', { d: 'ACCEPTED', timeout: 20_000 });
    await page.bringToFront();
    await expectRemoteVideo(page, { width: 640, height: 480, timeout: 30_000 }).catch(async (e) => {
      throw new Error(`${e.message}; page events: ${(await events(page)).join(', ')}; ${bot.describe()}`);
    });
    await bot.waitEvent('first_frame');
    await page.evaluate(() => T.conv.close());
    await page.close();
  });

  it('Firefox with an audio-only stream → echo bot: ACCEPTED, `stream_received` with audio alone, the audio echoed, no video, a clean close', async () => {
    const echoUid = uniqueUid('echo');
    const bot = await startEchoBot(server, echoUid);
    runners.push(bot);
    const callerUid = uniqueUid('firefox-audio-only');
    const page = await openSdkPage(browser, server, callerUid);
    await waitEvent(page, 'connected');
    await callEchoAudioOnly(page, { callerUid, echoUid, bot, label: 'firefox' });
    await page.close();
  });

  // An audio-only GStreamer caller whose audio starts after its offer was made: Chromium,
  // with no video to receive, dropped that audio until the offer named its SSRC
  // (gstreamer.test.js); Firefox with its camera (video `sendonly`) must hear it too.
  it('an audio-only call-test whose audio starts late → Firefox with camera and microphone: Firefox hears the caller', async () => {
    const callTest = (remoteUid, hangupAfter, file) => {
      const uid = uniqueUid('call-test');
      const runner = runPipeline(file || 'call-test.toml', server, ['--uid', uid, '--remote-uid', remoteUid, '--hangup-after', String(hangupAfter), '--call-timeout', '20'], { label: `call-test ${uid}` });
      runners.push(runner);
      return { uid, runner };
    };
    await callTestCallsPageWithoutVideo(browser, server, callTest, { callerVideo: false, pageVideo: true, audioLateMs: 3000, label: 'firefox' });
  });

  // Issue 10, "against every peer": loss recovery with Firefox, both ways. Firefox NACKs
  // what it loses of the bot's video and the bot resends it; the bot NACKs what it loses of
  // Firefox's and the NACKs reach Firefox; the echo keeps playing.
  it('Firefox → echo bot under 5 % loss: NACKs answered both ways, the echo keeps playing', async () => {
    const echoUid = uniqueUid('echo');
    const bot = await startEchoBot(server, echoUid);
    runners.push(bot);
    const { page } = await firefoxPage('firefox-lossy');
    await callEchoBotAndSeeIt(page, echoUid, bot, 'lossy');
    await traceLadder(page);
    // Firefox's inbound counters (framesDecoded, nackCount, packetsLost) started again from 0
    // when the SDK changed the page's sender: the frames its <video> presents, and the
    // counters summed across restarts.
    await page.evaluate(() => { T.countPresented(); T.watchInbound(); });
    const rtp = () => page.evaluate(async () => {
      const stats = await T.pc().getStats();
      const r = { scale: T.conv._sendScale ?? 0, audioCapped: !!T.conv._audioCapped, in: { ...(await T.readInbound()), presented: T.presented }, out: { nack: 0, resent: 0 } };
      stats.forEach((s) => {
        if (s.kind !== 'video' && s.mediaType !== 'video') return;
        if (s.type === 'inbound-rtp') r.in.raw = { nack: s.nackCount ?? 0, decoded: s.framesDecoded ?? 0, lost: s.packetsLost ?? 0, w: s.frameWidth };
        if (s.type === 'outbound-rtp') r.out = { nack: s.nackCount ?? 0, resent: s.retransmittedPacketsSent ?? 0, w: s.frameWidth, frames: s.framesEncoded };
      });
      return r;
    });
    const { clean0, clean1, lossy0, lossy1 } = await sampleCleanThenLossy(rtp, { percent: 5, cleanMs: 6000, lossyMs: 12_000 });
    await sleep(2500);
    const stats = bot.events.filter((e) => e.event === 'stats').at(-1);
    console.log('firefox clean', JSON.stringify([clean0, clean1]), 'lossy', JSON.stringify([lossy0, lossy1]), 'bot', JSON.stringify(stats));
    const trace = await page.evaluate(() => T.trace);
    console.log('the SDK\'s ladder, tick by tick', JSON.stringify(trace));
    // Random loss a NACK repairs is no reason to shrink the picture: with the SDK's ladder on
    // the loss alone, it stepped down in one run out of nine (then Firefox's inbound counters
    // started again, and this test failed on them).
    assert.ok(trace.every((r) => r.to === 0), `the SDK stepped Firefox's picture down under 5 % random loss: ${JSON.stringify(trace)}`);
    // Nor to say the page's quality is low (Firefox has no encoder target: the ladder says it).
    const quality = await page.evaluate(() => T.quality.map((q) => q.quality));
    assert.ok(!quality.includes('low'), `the page said its quality was low under 5 % random loss: ${JSON.stringify(quality)}`);
    // Firefox lost some of the bot's video and asked for it: the bot resent it.
    assert.ok(lossy1.in.lost > lossy0.in.lost, `Firefox lost nothing under 5 % loss: ${JSON.stringify(lossy1.in)}`);
    assert.ok(lossy1.in.nack > lossy0.in.nack, `Firefox sent no NACK: ${JSON.stringify(lossy1.in)}`);
    assert.ok(stats.local.nackReceived > 0 && stats.local.retransmitted > 0, `the bot resent nothing: ${JSON.stringify(stats.local)}`);
    // The bot asked Firefox for what it lost, and the requests reached Firefox.
    assert.ok(stats.remote.nackSent > 0, `the bot sent no NACK: ${JSON.stringify(stats.remote)}`);
    assert.ok(lossy1.out.nack > lossy0.out.nack, `no NACK reached Firefox: ${JSON.stringify(lossy1.out)}`);
    // The echo keeps playing: it crosses the lossy link twice.
    const cleanRate = (clean1.in.presented - clean0.in.presented) / 6;
    const lossyRate = (lossy1.in.presented - lossy0.in.presented) / 12;
    assert.ok(lossyRate >= 0.6 * cleanRate, `${lossyRate} frames/s shown under 5 % loss against ${cleanRate} clean`);
    await page.evaluate(() => T.conv.close());
    await page.close();
  });

  // Issue 10, "against every peer": Firefox at a 250 kbit/s cap that both directions share.
  // Firefox reports no encoder target, so our SDK's size ladder stood still there: the page
  // kept 320x240 and its full Opus rate, lost a quarter of its packets, and the bot decoded
  // nothing for 20 s (0 fps, three runs). The SDK now steps the picture down by the loss the
  // bot reports with the round trip it grows (the queue) and the frames Firefox encodes, and
  // caps Opus at 240x180: the bot decodes the page's video again and the echo, which crosses
  // the capped link twice, plays.
  it('Firefox → echo bot at 250 kbit/s: the SDK takes Firefox\'s picture down, the bot decodes it, the echo plays', async () => {
    const echoUid = uniqueUid('echo');
    const bot = await startEchoBot(server, echoUid);
    runners.push(bot);
    const page = await openSdkPage(browser, server, uniqueUid('firefox-capped'), { initOptions: { debug: true } });
    await waitEvent(page, 'connected');
    await page.evaluate(installCamera, [640, 480]);
    await page.evaluate(() => T.preview({ dimension: '480p', maxFPS: 15 }));
    await callEchoBotAndSeeIt(page, echoUid, bot, 'capped');
    await traceLadder(page);
    const rtp = () => page.evaluate(async () => {
      const stats = await T.pc().getStats();
      const r = { at: performance.now(), scale: T.conv._sendScale ?? 0, audioCapped: !!T.conv._audioCapped, out: { bytes: 0, frames: 0 }, in: { decoded: 0 } };
      stats.forEach((s) => {
        if (s.kind !== 'video' && s.mediaType !== 'video') return;
        if (s.type === 'outbound-rtp') r.out = { bytes: s.bytesSent ?? 0, frames: s.framesEncoded ?? 0, width: s.frameWidth, nack: s.nackCount, pli: s.pliCount, packets: s.packetsSent, resent: s.retransmittedPacketsSent };
        if (s.type === 'inbound-rtp') r.in = { decoded: s.framesDecoded ?? 0, packets: s.packetsReceived, lost: s.packetsLost, nack: s.nackCount, pli: s.pliCount };
        if (s.type === 'remote-inbound-rtp') r.remoteIn = { lost: s.packetsLost, fraction: s.fractionLost, rtt: s.roundTripTime };
      });
      return r;
    });
    await sleep(3000);
    const clean = await rtp();
    let capped0;
    let capped1;
    const ladder = [];
    const from = bot.events.length;
    try {
      capKbit(250);
      // Settling: the SDK steps the picture down one size every three stats ticks (6 s),
      // and the queue the larger sizes filled drains; the bot decoded again 10 to 16 s in.
      // At a small enough size the link is clean and the SDK tries the next size up after
      // five ticks (a suite run went back from 240x180 to 320x240 at 30 s): its ladder is
      // read every 2 s.
      for (let i = 0; i < 9; i++) {
        await sleep(2000);
        ladder.push(await page.evaluate(() => ({ scale: T.conv._sendScale ?? 0, audioCapped: !!T.conv._audioCapped })));
      }
      capped0 = await rtp();
      // The frames the page's <video> presents (Firefox's framesDecoded started again from
      // 0 when the SDK changed the sender's parameters).
      await page.evaluate(() => NET.begin());
      await sleep(10_000);
      capped1 = await rtp();
      capped1.presented = await page.evaluate(() => NET.frames.length);
    } finally {
      uncap();
    }
    const secs = (capped1.at - capped0.at) / 1000;
    const sentKbps = ((capped1.out.bytes - capped0.out.bytes) * 8) / 1000 / secs;
    const sentFps = (capped1.out.frames - capped0.out.frames) / secs;
    const decodedFps = capped1.presented / secs;
    const botStats = bot.events.slice(from).filter((e) => e.event === 'stats');
    // The bot's 2 s windows within the judged 10 s.
    const judged = botStats.slice(-5).map((e) => e.remote.fps);
    const botQuality = bot.events.slice(from).filter((e) => e.event === 'quality');
    console.log('bot stats at 250 kbit/s', JSON.stringify(botStats.map((e) => ({ local: e.local, remote: e.remote }))));
    console.log('firefox at 250 kbit/s: sent', sentKbps.toFixed(0), 'kbit/s', sentFps.toFixed(1), 'fps; showed the echo at', decodedFps.toFixed(1), 'fps;', JSON.stringify({ clean, capped0, capped1 }), 'bot sent kbit/s', JSON.stringify(botStats.map((e) => e.local.bitSentRate)), 'bot received fps', JSON.stringify(botStats.map((e) => e.remote.fps)), 'bot quality', JSON.stringify(botQuality.map((e) => e.quality)));
    console.log('the SDK\'s ladder, tick by tick', JSON.stringify(await page.evaluate(() => T.trace)));
    // The SDK's ladder acted: 240x180 or smaller (scale index 3 or more) with Opus capped.
    ladder.push(capped0, capped1);
    assert.ok(ladder.some((l) => l.scale >= 3 && l.audioCapped), `the SDK's ladder under the cap: ${JSON.stringify(ladder.map((l) => [l.scale, l.audioCapped]))}`);
    assert.ok(sentKbps < 150, `Firefox sent ${sentKbps.toFixed(0)} kbit/s of video over a 250 kbit/s link both directions share`);
    // The bot decodes the page's video over the judged 10 s, and the page the echo.
    const botFps = judged.reduce((a, b) => a + b, 0) / Math.max(1, judged.length);
    assert.ok(judged.length >= 4 && botFps >= 8, `the bot decoded ${JSON.stringify(judged)} fps of Firefox's video at 250 kbit/s`);
    assert.ok(decodedFps >= 5, `the page showed ${decodedFps.toFixed(1)} fps of the echo at 250 kbit/s`);
    assert.ok(botQuality.some((e) => e.quality === 'low'), `the bot never said its quality was low: ${JSON.stringify(botQuality)}`);
    // The page said so too, from its ladder (Firefox reports no encoder target).
    const pageQuality = await page.evaluate(() => T.quality);
    assert.ok(pageQuality.some((q) => q.quality === 'low' && q.width > 0), `the page never said its quality was low: ${JSON.stringify(pageQuality)}`);
    await page.evaluate(() => T.conv.close());
    await page.close();
  });

  it('Firefox calls a callee whose live sources run before the call: it answers Firefox\'s payload types (VP8 120, Opus 109); both decode', async () => {
    // The callee's sending chains have given webrtcbin their caps (VP8 96, Opus 111) before
    // Firefox's offer; webrtcbin answers with those, so they must follow the offer first.
    const dir = mkdtempSync(join(tmpdir(), 'wilddog-live-callee-'));
    const file = join(dir, 'live-callee.toml');
    writeFileSync(file, [
      'role = "answer"',
      'answer = "accept"',
      'pipeline = """',
      'wilddogcall name=call',
      '  videotestsrc is-live=true pattern=ball ! call.video_sink',
      '  audiotestsrc is-live=true wave=sine freq=440 volume=0.3 ! call.audio_sink',
      '  call.video_src ! queue ! fakesink sync=false',
      '  call.audio_src ! queue ! fakesink sync=false',
      '"""',
      '',
    ].join('\n'));
    try {
      const calleeUid = uniqueUid('live-callee');
      const bot = await startEchoBot(server, calleeUid, [], file);
      runners.push(bot);
      await sleep(500);
      const { page } = await firefoxPage('firefox-live');
      await page.evaluate((uid) => T.call(uid), calleeUid);
      await waitEvent(page, 'response', { d: 'ACCEPTED', timeout: 20_000 });
      await page.bringToFront();
      await expectRemoteVideo(page, { width: 640, height: 480, timeout: 30_000 }).catch(async (e) => {
        throw new Error(`${e.message}; page events: ${(await events(page)).join(', ')}; ${bot.describe()}`);
      });
      const answer = await page.evaluate(() => T.pc().remoteDescription.sdp);
      assert.match(answer, /\r\nm=video [1-9]\d* UDP\/TLS\/RTP\/SAVPF 120[ \r]/, answer);
      assert.match(answer, /\r\nm=audio [1-9]\d* UDP\/TLS\/RTP\/SAVPF 109[ \r]/, answer);
      const frame = await bot.waitEvent('first_frame', { timeout: 20_000 });
      assert.ok(frame.width > 0 && frame.height > 0, JSON.stringify(frame));
      await sleep(2000);
      await page.evaluate(() => T.conv.close());
      const closed = await bot.waitEvent('closed', { timeout: 20_000 });
      assert.equal(closed.media_connected, true, JSON.stringify(closed));
      // Firefox's video kept coming (a few frames a second is enough on a loaded machine).
      assert.ok(closed.received.video >= 5 && closed.received.audio > 0, JSON.stringify(closed));
      await page.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('call-test calls Firefox (we offer: DTLS server); both decode', async () => {
    const { uid, page } = await firefoxPage('firefox-callee');
    await page.evaluate(() => (T.onCalled = 'accept'));
    const caller = uniqueUid('call-test');
    const runner = runPipeline('call-test.toml', server, ['--uid', caller, '--remote-uid', uid, '--hangup-after', '6', '--call-timeout', '20'], { label: 'call-test→firefox' });
    runners.push(runner);
    await waitEvent(page, 'accepted', { timeout: 20_000 });
    await page.bringToFront();
    await expectRemoteVideo(page, { width: 640, height: 480, timeout: 30_000 }).catch(async (e) => {
      throw new Error(`${e.message}; page events: ${(await events(page)).join(', ')}; ${runner.describe()}`);
    });
    assert.equal(await runner.exit(30_000), 0, runner.describe());
    const closed = runner.events.find((e) => e.event === 'closed');
    assert.equal(closed.media_connected, true, JSON.stringify(closed));
    assert.ok(closed.received.video > 10, JSON.stringify(closed));
    await page.close();
  });
});

describe('Chromium relay-only through coturn (our SDK, iceTransportPolicy: relay)', () => {
  const SECRET = 'browser-coturn-secret';
  const APP = 'relay-app';
  const TTL_SECS = 4;
  let coturn;
  let server;
  let browser;
  let dir;
  let config;
  const bots = [];
  before(async () => {
    coturn = await startCoturn(SECRET);
    dir = mkdtempSync(join(tmpdir(), 'wilddog-relay-'));
    config = join(dir, 'server.toml');
    writeFileSync(
      config,
      // Credentials live 4 s: the page calls 5 s after its connack, whose credential has
      // expired by then; the server's `accept` brings the page a fresh one (our extension).
      `[[apps]]\nid = "${APP}"\nsecret = "relay-app-secret"\n[turn]\nurls = ["turn:127.0.0.1:${coturn.port}?transport=udp"]\nsecret = "${SECRET}"\nttl_secs = ${TTL_SECS}\n`,
    );
    server = await startServer({ config });
    browser = await launchChromium();
  });
  after(async () => {
    for (const b of bots) await b.stop();
    await browser?.close();
    await server?.stop();
    await coturn?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('a page connected longer than its TURN credential lives calls the echo bot with {iceTransportPolicy: "relay"}: video through the relay, stats say relay; the path lost after the call\'s credentials expired comes back', async () => {
    const echoUid = uniqueUid('echo');
    const bot = await startEchoBot(server, echoUid, ['--config', config, '--app-id', APP]);
    bots.push(bot);
    const uid = uniqueUid('relay-page');
    const token = await server.runnerToken(uid, ['--config', config, '--app-id', APP]);
    const page = await openSdkPage(browser, server, uid, { token, appId: APP });
    await waitEvent(page, 'connected');
    await page.evaluate(() => T.preview());
    await new Promise((r) => setTimeout(r, (TTL_SECS + 1) * 1000));
    await page.evaluate((to) => T.call(to, { iceTransportPolicy: 'relay' }), echoUid);
    await waitEvent(page, 'response', { d: 'ACCEPTED' });
    const acceptedAt = Date.now();
    await expectRemoteVideo(page, { width: 640, height: 480, timeout: 30_000 }).catch(async (e) => {
      throw new Error(`${e.message}; page events: ${(await events(page)).join(', ')}; ${bot.describe()}; coturn: ${coturn.log().slice(-3000)}`);
    });
    const local = await page.evaluate(async () => {
      const stats = await T.pc().getStats();
      let pairId = null;
      stats.forEach((s) => { if (s.type === 'transport' && s.selectedCandidatePairId) pairId = s.selectedCandidatePairId; });
      const pair = pairId && stats.get(pairId);
      return pair ? stats.get(pair.localCandidateId).candidateType : 'none';
    });
    assert.equal(local, 'relay', 'the page sends through the TURN relay');
    await page.waitForFunction(() => T.localStats.length > 0, null, { timeout: 10_000 });
    const reported = await page.evaluate(() => T.localStats[T.localStats.length - 1].candidateType);
    assert.equal(reported, 'relay', 'local_stats.candidateType');
    // Every credential of the call's setup has expired; then the bot's path is black-holed.
    // The page's ICE restart gathers with the credential the server pushed since (`turn`,
    // setConfiguration): the video comes back through the relay. Before, coturn refused the
    // restart's allocation and the call ended with 41004.
    await new Promise((r) => setTimeout(r, Math.max(0, acceptedAt + (TTL_SECS + 1) * 1000 - Date.now())));
    const hole = blackHole(callPorts(bot.child.pid, Number(new URL(server.base).port)));
    try {
      const took = await videoBack(page, Date.now(), 20_000, bot);
      console.log(`# relay-only page: video back through the relay ${took} ms after the black hole`);
    } catch (e) {
      throw new Error(`${e.message}; coturn: ${coturn.log().slice(-3000)}`);
    } finally {
      hole.clear();
    }
    assert.ok(!(await events(page)).some((e) => e.startsWith('error')), (await events(page)).join(', '));
    await page.evaluate(() => T.conv.close());
    await page.close();
  });
});
