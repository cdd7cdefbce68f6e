#!/usr/bin/env node
// The Chromium scenarios of the shaped-network benchmark (`call-bench --network`, which runs
// this inside a private network namespace whose loopback it shapes; see
// benches/call-bench/src/net.rs). Our browser SDK in headless Chromium through our server
// (`call-bench --serve`); needs `npm ci` in tests/browser.
//
//   node benches/chromium/network.mjs --mode chromium|mixed --server-bin PATH/call-bench [--secs S]
//
// - `chromium`: two tabs call each other; measured: what the caller receives from the
//   callee, and what the callee sends.
// - `mixed`: a `wilddogcall` (`call-bench --net-endpoint`) calls a tab; both directions of
//   the one call measured: `gst-to-chromium` (what the tab receives, what the pipeline sends)
//   and `chromium-to-gst` (what the pipeline receives, what the tab sends).
//
// Content: each tab's camera is tests/browser/lib/textured-camera.js, a canvas of the SDK's
// size and rate showing a moving texture that compresses like a camera, stamped with the
// capture instant, so that a pipeline and a tab read each other's stamps on one clock.
// Frames: requestVideoFrameCallback on the remote <video>. Sent bytes: getStats outbound-rtp.
// Prints `NET-START` when measuring begins and `NET-RESULT {json}` lines (netmeasure.rs).
// NET_STATS=1 also prints the sending tab's getStats every second on stderr (`NET-STATS`;
// call-bench keeps stderr to itself: run one job by hand, `unshare --net` and `call-bench
// --net-run LINK -- node benches/chromium/network.mjs ...`).
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { launchChromium } from '../../tests/browser/lib/chromium.js';
import { startServer, uniqueUid } from '../../tests/browser/lib/server.js';
import { openSdkPage, waitEvent } from '../../tests/browser/lib/sdk-page.js';
import { installCamera } from '../../tests/browser/lib/textured-camera.js';

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : dflt;
};
const mode = opt('--mode', 'chromium');
const secs = Number(opt('--secs', '30'));
const serverBin = opt('--server-bin');
if (!serverBin) throw new Error('--server-bin PATH (call-bench) is required');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const WIDTH = 640;
const HEIGHT = 480;

const serverProc = spawn(serverBin, ['--serve'], { stdio: ['ignore', 'pipe', 'inherit'] });
const base = await new Promise((ok, fail) => {
  let out = '';
  serverProc.stdout.on('data', (d) => {
    out += d;
    const m = out.match(/LISTENING (\S+)/);
    if (m) ok(m[1]);
  });
  serverProc.on('exit', (c) => fail(new Error(`call-bench --serve exited (${c})`)));
  setTimeout(() => fail(new Error('call-bench --serve did not start')), 15_000);
});
process.env.WILDDOG_SERVER = base;
const server = await startServer();
const browser = await launchChromium();

async function tab(name) {
  const uid = uniqueUid(name);
  const page = await openSdkPage(browser, server, uid);
  await waitEvent(page, 'connected');
  await page.evaluate(installCamera, [WIDTH, HEIGHT]);
  await page.evaluate(() => T.preview({ captureAudio: true, captureVideo: true, dimension: '480p', maxFPS: 15 }));
  return { uid, page };
}

/** Samples `sentBytes()` every 500 ms for `secs`, in (seconds since t0, bytes) pairs. */
async function sample(sentBytes, t0) {
  const sent = [];
  while (Date.now() - t0 < secs * 1000) {
    const b = await sentBytes().catch(() => null);
    if (b != null) sent.push([(Date.now() - t0) / 1000, Math.max(b, sent.length ? sent[sent.length - 1][1] : 0)]);
    await sleep(500);
  }
  return sent;
}

/**
 * With NET_STATS set (a diagnosis, not a figure): every second, the sending tab's video
 * `outbound-rtp` and path estimate, and the receiving tab's `inbound-rtp` (when it is a tab),
 * as `NET-STATS {json}` lines on stderr.
 */
function watchStats(label, page, t0) {
  if (!process.env.NET_STATS) return;
  const timer = setInterval(async () => {
    const s = await page.evaluate(async () => {
      const pc = T.pc();
      if (!pc) return null;
      const out = {};
      (await pc.getStats()).forEach((r) => {
        if (r.type === 'outbound-rtp' && r.kind === 'video') {
          Object.assign(out, {
            w: r.frameWidth, enc: r.framesEncoded, sent: r.framesSent, key: r.keyFramesEncoded, target: r.targetBitrate,
            bytes: r.bytesSent, rtxBytes: r.retransmittedBytesSent, nack: r.nackCount, pli: r.pliCount, fir: r.firCount,
            qlr: r.qualityLimitationReason, huge: r.hugeFramesSent,
          });
        } else if (r.type === 'inbound-rtp' && r.kind === 'video') {
          Object.assign(out, { rxDec: r.framesDecoded, rxKey: r.keyFramesDecoded, rxLost: r.packetsLost, rxPli: r.pliCount, rxNack: r.nackCount, rxDrop: r.framesDropped, rxW: r.frameWidth });
        } else if (r.type === 'candidate-pair' && r.nominated && r.state === 'succeeded') {
          Object.assign(out, { aob: r.availableOutgoingBitrate, rtt: r.currentRoundTripTime });
        }
      });
      return out;
    }).catch(() => null);
    if (s) console.error('NET-STATS ' + JSON.stringify({ label, t: (Date.now() - t0) / 1000, ...s }));
  }, 1000);
  return timer;
}

async function pageResult(page) {
  return page.evaluate(() => ({ frames: NET.frames, g2g: NET.g2g, unreadable: NET.unreadable }));
}

function emit(scenario, received, sent, notes) {
  const frames = received.frames.filter((t) => t >= 0 && t <= secs);
  console.log('NET-RESULT ' + JSON.stringify({
    scenario, link: '', secs, frames_s: frames, g2g_ms: received.g2g, unreadable: received.unreadable, sent, notes,
  }));
}

if (mode === 'chromium') {
  const bob = await tab('bob');
  await bob.page.evaluate(() => { T.onCalled = 'accept'; });
  const alice = await tab('alice');
  await alice.page.evaluate((uid) => T.call(uid), bob.uid);
  await alice.page.waitForFunction(() => document.getElementById('remote').videoWidth > 0, null, { timeout: 40_000, polling: 100 });
  await alice.page.evaluate(() => NET.begin());
  console.log('NET-START');
  const t0 = Date.now();
  const stats = [watchStats('sender bob', bob.page, t0), watchStats('receiver alice', alice.page, t0)];
  const sent = await sample(() => bob.page.evaluate(() => NET.sentBytes()), t0);
  stats.forEach((t) => t && clearInterval(t));
  emit('chromium', await pageResult(alice.page), sent, 'two Chromium tabs, our SDK, 480p 15 fps textured canvas camera');
} else if (mode === 'mixed') {
  const callee = await tab('page');
  await callee.page.evaluate(() => { T.onCalled = 'accept'; });
  const { token } = await server.token('gst');
  const endpoint = spawn(serverBin, ['--net-endpoint', '--server', server.wsUrl, '--token', token, '--remote-uid', callee.uid, '--secs', String(secs)], { stdio: ['ignore', 'pipe', 'inherit'] });
  let gst = null;
  let t0 = null;
  let samplerDone = null;
  const lines = createInterface({ input: endpoint.stdout });
  for await (const line of lines) {
    if (line === 'NET-START') {
      // The pipeline decodes the tab's frames: measure both directions from now.
      await callee.page.evaluate(() => NET.begin());
      console.log('NET-START');
      t0 = Date.now();
      samplerDone = sample(() => callee.page.evaluate(() => NET.sentBytes()), t0);
      const stats = watchStats('tab', callee.page, t0);
      if (stats) samplerDone.finally(() => clearInterval(stats));
    } else if (line.startsWith('NET-RESULT ')) {
      gst = JSON.parse(line.slice('NET-RESULT '.length));
    }
  }
  if (!gst || !samplerDone) throw new Error('the pipeline endpoint printed no result');
  const pageSent = await samplerDone;
  const atPage = await pageResult(callee.page);
  emit('gst-to-chromium', atPage, gst.sent, 'wilddogcall (call-bench --net-endpoint, zone plate) -> Chromium tab (our SDK)');
  emit('chromium-to-gst', { frames: gst.frames_s, g2g: gst.g2g_ms, unreadable: gst.unreadable }, pageSent, 'Chromium tab (our SDK, textured canvas) -> wilddogcall');
} else {
  throw new Error(`unknown --mode ${mode}`);
}
await browser.close().catch(() => {});
await server.stop().catch(() => {});
serverProc.kill('SIGTERM');
process.exit(0);
