// ICE restarts between GStreamer (wilddog-runner) and a browser with our SDK, Chromium and
// Firefox ESR, issue 12. A GStreamer caller (pipelines/call-test.toml) and a browser callee,
// each way:
// - the GStreamer side finds its path lost (its UDP ports black-holed with nftables) and
//   restarts on a new peer connection: new ICE credentials, candidates and DTLS fingerprint;
//   the SDK answers it from a new RTCPeerConnection;
// - the browser finds its path lost (nothing reaches it: the runner's packets are dropped,
//   the page's still arrive) and asks for a restart (`restartice`), again while it is not
//   back; the runner restarts as above.
// And a browser caller of a GStreamer callee (pipelines/echo.toml): the callee's path dies,
// the caller restarts ICE, the callee answers from a new peer connection (new fingerprint),
// and the SDK offers again from a new RTCPeerConnection (Firefox cannot follow a new
// fingerprint in place), which the callee answers from a new one too.
// And the original Web SDK (wilddog-video-call 2.4.1, in Chromium) as callee of a GStreamer
// caller that restarts: it keeps its RTCPeerConnection and Chromium follows in place.
// Both keep the call: the page decodes video again, no error, `closed` only at the end.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { launchChromium } from '../lib/chromium.js';
import { launchFirefox } from '../lib/firefox.js';
import { startServer, uniqueUid } from '../lib/server.js';
import { events, expectRemoteVideo, openSdkPage, waitEvent } from '../lib/sdk-page.js';
import { runPipeline, startEchoBot } from '../lib/gst-runner.js';
import { openOriginalPage } from '../lib/original-sdk.js';
import { blackHole, callPorts, videoBack } from '../lib/black-hole.js';

for (const [name, launch] of [['Chromium', launchChromium], ['Firefox ESR', launchFirefox]]) describe(`ICE restarts between GStreamer and ${name} (our SDK)`, () => {
  let server;
  let browser;
  const runners = [];
  // Playwright's WebSocket routing (the frames in failure messages) is Chromium's only.
  const proxy = name === 'Chromium';

  before(async () => {
    server = await startServer();
    browser = await launch();
  });
  after(async () => {
    for (const r of runners) await r.stop();
    await browser?.close();
    await server?.stop();
  });

  /** call-test (hanging up after `hangupAfter` s) calls a page that accepts; both decode. */
  async function connectedCall(hangupAfter) {
    const pageUid = uniqueUid('restart-callee');
    const page = await openSdkPage(browser, server, pageUid, { proxy, initOptions: { debug: !!process.env.WILDDOG_TEST_VERBOSE } });
    page.on('console', (m) => { if (process.env.WILDDOG_TEST_VERBOSE || (m.type() === 'warning' || m.type() === 'warn')) console.log(`# page ${m.type()}: ${m.text()}`); });
    await waitEvent(page, 'connected');
    await page.evaluate(() => T.preview());
    await page.evaluate(() => (T.onCalled = 'accept'));
    const uid = uniqueUid('restart-caller');
    const runner = runPipeline('call-test.toml', server, ['--uid', uid, '--remote-uid', pageUid, '--hangup-after', String(hangupAfter)], {
      label: `call-test ${uid}`,
    });
    runners.push(runner);
    await waitEvent(page, 'accepted', { timeout: 20_000 });
    await expectRemoteVideo(page, { width: 640, height: 480 });
    await runner.waitEvent('first_frame', { timeout: 20_000 });
    return { page, runner };
  }

  /** The page hangs up: the runner gets `closed` (remote-hangup) and exits 0; nobody saw an
   * error, and the page no `closed` (the side that closes gets none). */
  async function theEnd(page, runner) {
    await page.evaluate(() => T.conv.close());
    const closed = await runner.waitEvent('closed', { timeout: 20_000 });
    assert.equal(closed.reason, 'remote-hangup', runner.describe());
    assert.equal(await runner.exit(20_000), 0, runner.describe());
    assert.ok(!runner.names().includes('error'), runner.describe());
    const pageEvents = await events(page);
    assert.ok(!pageEvents.some((e) => e.startsWith('error') || e === 'closed'), pageEvents.join(', '));
    await page.close();
  }

  it(`the GStreamer caller loses its path and restarts on a new peer connection; ${name} follows the new fingerprint`, async () => {
    const { page, runner } = await connectedCall(60);
    const fingerprint = () => page.evaluate(() => (T.pc().remoteDescription.sdp.match(/a=fingerprint:\S+ (\S+)/) || [])[1]);
    const before = await fingerprint();
    const ports = callPorts(runner.child.pid, Number(new URL(server.base).port));
    assert.ok(ports.length > 0, 'the runner has UDP candidates');
    const hole = blackHole(ports);
    const t0 = Date.now();
    try {
      const took = await videoBack(page, t0, 15_000, runner);
      console.log(`# ${name}: GStreamer-side restart: the page decodes video again ${took} ms after the black hole`);
    } finally {
      hole.clear();
    }
    // The <video> the application attached at `stream_received` shows the new stream.
    await expectRemoteVideo(page, { width: 640, height: 480 });
    const afterFp = await fingerprint();
    assert.notEqual(afterFp, before, 'the restart offer carried a new DTLS fingerprint (a new peer connection)');
    await theEnd(page, runner);
  });

  it(`the ${name} callee loses its path and asks for restarts until the GStreamer caller makes one`, async () => {
    const { page, runner } = await connectedCall(60);
    const ports = callPorts(runner.child.pid, Number(new URL(server.base).port));
    // Only what the runner sends is dropped: the runner still receives the page's media (its
    // path looks healthy), the page gets nothing.
    const hole = blackHole(ports, { to: false, from: true });
    const t0 = Date.now();
    try {
      const took = await videoBack(page, t0, 25_000, runner);
      console.log(`# ${name}: browser-side restart: the page decodes video again ${took} ms after the black hole`);
    } finally {
      hole.clear();
    }
    await expectRemoteVideo(page, { width: 640, height: 480 });
    await theEnd(page, runner);
  });

  it(`a ${name} caller restarts ICE; the GStreamer callee answers from a new peer connection, which the page follows from a new RTCPeerConnection`, async () => {
    const botUid = uniqueUid('restart-echo');
    const bot = await startEchoBot(server, botUid);
    runners.push(bot);
    const pageUid = uniqueUid('restart-caller');
    const page = await openSdkPage(browser, server, pageUid, { proxy });
    page.on('console', (m) => { if ((m.type() === 'warning' || m.type() === 'warn')) console.log(`# page ${m.type()}: ${m.text()}`); });
    await waitEvent(page, 'connected');
    await page.evaluate(() => T.preview());
    await page.evaluate((uid) => T.call(uid), botUid);
    await waitEvent(page, 'response', { d: 'ACCEPTED' });
    await expectRemoteVideo(page, { width: 640, height: 480 });
    const fingerprint = () => page.evaluate(() => (T.pc().remoteDescription.sdp.match(/a=fingerprint:\S+ (\S+)/) || [])[1]);
    const before = await fingerprint();
    const hole = blackHole(callPorts(bot.child.pid, Number(new URL(server.base).port)));
    const t0 = Date.now();
    try {
      const took = await videoBack(page, t0, 20_000, bot);
      console.log(`# ${name}: GStreamer callee restart, browser caller: the page decodes video again ${took} ms after the black hole`);
    } finally {
      hole.clear();
    }
    await expectRemoteVideo(page, { width: 640, height: 480 });
    assert.notEqual(await fingerprint(), before, 'the answer came from a new peer connection');
    await page.evaluate(() => T.conv.close());
    const closed = await bot.waitEvent('closed', { timeout: 20_000 });
    assert.equal(closed.reason, 'remote-hangup', bot.describe());
    assert.ok(!bot.names().includes('error'), bot.describe());
    const pageEvents = await events(page);
    assert.ok(!pageEvents.some((e) => e.startsWith('error') || e === 'closed'), pageEvents.join(', '));
    await page.close();
  });
});

describe('ICE restart of a GStreamer caller to the original Web SDK (Chromium)', () => {
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

  it('the GStreamer caller loses its path and restarts on a new peer connection; the original SDK follows in place', async () => {
    const pageUid = uniqueUid('original-callee');
    const page = await openOriginalPage(browser, server, pageUid);
    await waitEvent(page, 'connected');
    await page.evaluate(() => T.preview());
    await page.evaluate(() => (T.onCalled = 'accept'));
    const uid = uniqueUid('restart-caller');
    const runner = runPipeline('call-test.toml', server, ['--uid', uid, '--remote-uid', pageUid, '--hangup-after', '60'], {
      label: `call-test ${uid}`,
    });
    runners.push(runner);
    await waitEvent(page, 'accepted', { timeout: 20_000 });
    // Its sender starts small; what it receives (our 640x480) comes at once.
    await expectRemoteVideo(page, { width: 640, height: 480 });
    const hole = blackHole(callPorts(runner.child.pid, Number(new URL(server.base).port)));
    const t0 = Date.now();
    try {
      const took = await videoBack(page, t0, 20_000, runner);
      console.log(`# original SDK: GStreamer-side restart: the page decodes video again ${took} ms after the black hole`);
    } finally {
      hole.clear();
    }
    await page.evaluate(() => T.conv.close());
    const closed = await runner.waitEvent('closed', { timeout: 20_000 });
    assert.equal(closed.reason, 'remote-hangup', runner.describe());
    assert.ok(!runner.names().includes('error'), runner.describe());
    assert.ok(!(await events(page)).some((e) => e.startsWith('error')), (await events(page)).join(', '));
    await page.close();
  });
});
