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
// Content: each tab's camera is a canvas of the SDK's size and rate showing a moving texture
// (a pre-drawn noise-and-rings image panned every frame: it compresses like a camera, as the
// pipelines' zone plate does), stamped with the capture instant in epoch ms modulo 65536 in
// call-bench's block code, so that a pipeline and a tab read each other's stamps on one clock.
// Frames: requestVideoFrameCallback on the remote <video>. Sent bytes: getStats outbound-rtp.
// Prints `NET-START` when measuring begins and `NET-RESULT {json}` lines (netmeasure.rs).
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { launchChromium } from '../../tests/browser/lib/chromium.js';
import { startServer, uniqueUid } from '../../tests/browser/lib/server.js';
import { openSdkPage, waitEvent } from '../../tests/browser/lib/sdk-page.js';

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

/** Page side: the textured, stamped canvas camera, and `NET` to read remote frames. */
function installCamera([WIDTH, HEIGHT]) {
  const BLOCK = 24;
  const BITS = 16;
  const clock = () => performance.timeOrigin + performance.now();
  const NET = { start: null, frames: [], g2g: [], unreadable: 0 };
  window.NET = NET;

  function writeCode(ctx, value) {
    for (let row = 0; row < 2; row++) {
      const v = row === 0 ? value : ~value & 0xffff;
      for (let bit = 0; bit < BITS; bit++) {
        ctx.fillStyle = (v >> (BITS - 1 - bit)) & 1 ? '#fff' : '#000';
        ctx.fillRect(bit * BLOCK, row * BLOCK, BLOCK, BLOCK);
      }
    }
  }
  function readCode(at, block) {
    const values = [0, 0];
    const lo = Math.floor(block / 3);
    const hi = Math.ceil((2 * block) / 3);
    for (let row = 0; row < 2; row++) {
      for (let bit = 0; bit < BITS; bit++) {
        let sum = 0;
        let n = 0;
        for (let dy = lo; dy < hi; dy++) {
          for (let dx = lo; dx < hi; dx++) { sum += at(Math.floor(bit * block) + dx, Math.floor(row * block) + dy); n++; }
        }
        values[row] = (values[row] << 1) | (sum / Math.max(1, n) > 125 ? 1 : 0);
      }
    }
    return values[0] === (~values[1] & 0xffff) ? values[0] : -1;
  }

  // A texture twice the frame: noise and rings, drawn once, panned every frame.
  const texture = document.createElement('canvas');
  texture.width = WIDTH * 2;
  texture.height = HEIGHT * 2;
  {
    const t = texture.getContext('2d');
    const img = t.createImageData(texture.width, texture.height);
    let seed = 12345;
    const rnd = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
    for (let y = 0; y < texture.height; y++) {
      for (let x = 0; x < texture.width; x++) {
        const r = Math.hypot(x - texture.width / 2, y - texture.height / 2);
        const ring = 128 + 90 * Math.sin(r * r * 0.0008);
        const v = Math.max(0, Math.min(255, ring + (rnd() - 0.5) * 16));
        const i = (y * texture.width + x) * 4;
        img.data[i] = v;
        img.data[i + 1] = (v + x) & 255;
        img.data[i + 2] = (v + y) & 255;
        img.data[i + 3] = 255;
      }
    }
    t.putImageData(img, 0, 0);
  }

  function canvasTrack(video) {
    const pick = (c, d) => (typeof c === 'number' ? c : (c && (c.exact || c.ideal || c.max)) || d);
    const width = pick(video.width, WIDTH);
    const height = pick(video.height, HEIGHT);
    const fps = pick(video.frameRate, 15);
    const canvas = document.createElement('canvas');
    canvas.width = width;
    canvas.height = height;
    const ctx = canvas.getContext('2d');
    const track = canvas.captureStream(0).getVideoTracks()[0];
    let n = 0;
    const timer = setInterval(() => {
      if (track.readyState === 'ended') { clearInterval(timer); return; }
      const ox = (n * 7) % width;
      const oy = (n * 5) % height;
      ctx.drawImage(texture, ox, oy, width, height, 0, 0, width, height);
      n++;
      writeCode(ctx, Math.round(clock()) & 0xffff);
      track.requestFrame();
    }, 1000 / fps);
    return track;
  }
  const real = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
  navigator.mediaDevices.getUserMedia = async (c) => {
    const ms = c && c.audio ? await real({ audio: c.audio, video: false }) : new MediaStream();
    if (c && c.video) ms.addTrack(canvasTrack(c.video === true ? {} : c.video));
    return ms;
  };

  /** Records every frame the remote <video> presents (and its stamp) from now. */
  NET.begin = () => {
    NET.start = clock();
    const v = document.getElementById('remote');
    const since = (t, code) => (((t - code) % 65536) + 65536) % 65536;
    const onFrame = async (_now, meta) => {
      v.requestVideoFrameCallback(onFrame);
      const received = performance.timeOrigin + meta.presentationTime;
      NET.frames.push((received - NET.start) / 1000);
      let frame;
      let code = -1;
      try {
        frame = new VideoFrame(v);
        const sx = frame.codedWidth / WIDTH;
        const block = BLOCK * sx;
        const even = (x) => 2 * Math.ceil(x / 2);
        const rect = { x: 0, y: 0, width: Math.min(frame.codedWidth, even(BITS * block)), height: Math.min(frame.codedHeight, even(2 * block)) };
        const buf = new Uint8Array(frame.allocationSize({ rect }));
        const layout = await frame.copyTo(buf, { rect });
        const { offset, stride } = layout[0];
        const step = /^(I4|NV12)/.test(frame.format || '') ? 1 : 4;
        const green = step === 1 ? 0 : 1;
        code = readCode((x, y) => buf[offset + y * stride + x * step + green], block);
      } catch {
        code = -1;
      } finally {
        if (frame) frame.close();
      }
      if (code < 0) NET.unreadable++;
      else NET.g2g.push(since(received, code));
    };
    v.requestVideoFrameCallback(onFrame);
  };
  NET.sentBytes = async () => {
    const stats = await T.pc().getStats();
    let bytes = 0;
    stats.forEach((s) => { if (s.type === 'outbound-rtp') bytes += s.bytesSent || 0; });
    return bytes;
  };
}

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
  const sent = await sample(() => bob.page.evaluate(() => NET.sentBytes()), t0);
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
