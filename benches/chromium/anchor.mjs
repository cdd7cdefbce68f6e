#!/usr/bin/env node
// Chromium <-> Chromium anchor: two headless Chromium tabs calling each other with our browser
// SDK (web/wilddog-video.js) through our server, 640x480@15 (createLocalStream dimension 480p,
// maxFPS 15; Chromium picks VP8 and Opus). What a web developer gets. Run by
// `call-bench --chromium` inside its private network namespace (Chromium gathers 127.0.0.1 only
// there); reuses tests/browser/lib (needs `npm ci` in tests/browser).
//
//   node benches/chromium/anchor.mjs --server-bin PATH/call-bench [--calls N] [--call-secs S]
//
// Setup = caller's `call()` -> first remote video frame presented in its <video>
// (requestVideoFrameCallback), both tabs connected and previewing; fake camera and microphone.
// CPU and memory: every process of Chromium and the server (children of this script) over a
// call of S seconds, fake camera; memory as the sum of their Pss.
//
// Glass-to-glass: one more call of S seconds in which each tab's getUserMedia gives the fake
// microphone and, instead of the fake camera (whose frames cannot be stamped), a canvas
// captureStream of the size and rate the SDK asks for: a rotating disc and a frame number like
// the fake camera's, plus the send instant as the block code of call-bench's Stamper
// (benches/call-bench/src/measure.rs: two rows of 16 black/white 24x24 blocks, the value and its
// complement, which survive VP8). Figure: canvas drawn and stamped -> the caller's remote
// <video> presents the frame (requestVideoFrameCallback's presentationTime; the blocks read
// from the frame's luma with WebCodecs). Both tabs are in one browser, on one clock
// (performance.timeOrigin + now()); the offset between the two tabs' clocks is measured and
// reported in the notes, with that call's CPU. Prints `BENCH-RESULT {json}`.
import { spawn } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { launchChromium } from '../../tests/browser/lib/chromium.js';
import { startServer, uniqueUid } from '../../tests/browser/lib/server.js';
import { openSdkPage, waitEvent } from '../../tests/browser/lib/sdk-page.js';

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : dflt;
};
const calls = Number(opt('--calls', '20'));
const callSecs = Number(opt('--call-secs', '10'));
const serverBin = opt('--server-bin');
if (!serverBin) throw new Error('--server-bin PATH (call-bench) is required');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Our server, in a call-bench process (`--serve`), which prints its base URL.
const serverProc = spawn(serverBin, ['--serve'], { stdio: ['ignore', 'pipe', 'inherit'] });
const base = await new Promise((ok, fail) => {
  let out = '';
  serverProc.stdout.on('data', (d) => {
    out += d;
    const m = out.match(/LISTENING (\S+)/);
    if (m) ok(m[1]);
  });
  serverProc.on('exit', (c) => fail(new Error(`call-bench --serve exited (${c})`)));
  setTimeout(() => fail(new Error('call-bench --serve did not start')), 10_000);
});
process.env.WILDDOG_SERVER = base;
const server = await startServer();
const browser = await launchChromium();

/** CPU seconds and proportional set size (MiB) of every descendant process of this one. */
function descendants() {
  const procs = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      procs.push({ pid: Number(d), ppid: Number(rest[1]), cpu: (Number(rest[11]) + Number(rest[12])) / 100 });
    } catch { /* gone */ }
  }
  const mine = new Set([process.pid]);
  let grew = true;
  while (grew) {
    grew = false;
    for (const p of procs) if (!mine.has(p.pid) && mine.has(p.ppid)) { mine.add(p.pid); grew = true; }
  }
  mine.delete(process.pid);
  let cpu = 0;
  let rss = 0;
  for (const p of procs) {
    if (!mine.has(p.pid)) continue;
    cpu += p.cpu;
    try {
      // Pss, not RSS: Chromium's processes share most of their pages.
      const m = readFileSync(`/proc/${p.pid}/smaps_rollup`, 'utf8').match(/Pss:\s+(\d+)/);
      if (m) rss += Number(m[1]) / 1024;
    } catch { /* gone */ }
  }
  return { cpu, rss };
}

// The capture size and rate of every scenario (call-bench's measure.rs WIDTH, HEIGHT, FPS).
const WIDTH = 640;
const HEIGHT = 480;
const FPS = 15;

/**
 * Page side, run in each tab before preview(): getUserMedia gives a stamped canvas camera, and
 * `G2G` reads the stamps of the frames the remote <video> presents. The code is the send
 * instant in ms (performance.timeOrigin + now(), rounded) modulo 65536: a receiver takes the
 * difference modulo 65536, so it wraps after 65 s, far above any latency of a live call.
 */
function installStampedCamera([WIDTH, HEIGHT]) {
  const BLOCK = 24;
  const BITS = 16;
  const clock = () => performance.timeOrigin + performance.now();
  const G2G = { samples: [], toReceived: [], unreadable: 0, mismatched: 0, error: null, sent: 0, reading: false, clock };
  window.G2G = G2G;

  function writeCode(ctx, value) {
    for (let row = 0; row < 2; row++) {
      const v = row === 0 ? value : ~value & 0xffff;
      for (let bit = 0; bit < BITS; bit++) {
        ctx.fillStyle = (v >> (BITS - 1 - bit)) & 1 ? '#fff' : '#000';
        ctx.fillRect(bit * BLOCK, row * BLOCK, BLOCK, BLOCK);
      }
    }
  }

  /**
   * The code in a frame's top-left corner, read through `at(x, y)` (the frame's luma, or green,
   * sample at (x, y) of the sent geometry), or -1 when the two rows disagree.
   */
  function readCode(at) {
    const values = [0, 0];
    for (let row = 0; row < 2; row++) {
      for (let bit = 0; bit < BITS; bit++) {
        // Mean of the block's central 8x8, away from its edges' ringing (as measure.rs).
        let sum = 0;
        for (let dy = 8; dy < 16; dy++) {
          for (let dx = 8; dx < 16; dx++) sum += at(bit * BLOCK + dx, row * BLOCK + dy);
        }
        values[row] = (values[row] << 1) | (sum / 64 > 125 ? 1 : 0);
      }
    }
    return values[0] === (~values[1] & 0xffff) ? values[0] : -1;
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
    // Frames only on requestFrame(): one per draw, at the stamped instant.
    const track = canvas.captureStream(0).getVideoTracks()[0];
    let n = 0;
    const timer = setInterval(() => {
      if (track.readyState === 'ended') {
        clearInterval(timer);
        return;
      }
      // Like Chromium's fake camera: a rotating "pacman" and the frame number on black.
      ctx.fillStyle = '#000';
      ctx.fillRect(0, 0, width, height);
      const a = (n * Math.PI) / 30;
      ctx.fillStyle = '#0c0';
      ctx.beginPath();
      ctx.moveTo(width / 2, height / 2);
      ctx.arc(width / 2, height / 2, height / 4, a + 0.4, a + 2 * Math.PI - 0.4);
      ctx.closePath();
      ctx.fill();
      ctx.fillStyle = '#fff';
      ctx.font = '24px monospace';
      ctx.fillText(`${n}`, 20, height - 20);
      n++;
      const t = clock();
      writeCode(ctx, Math.round(t) & 0xffff);
      track.requestFrame();
      G2G.sent++;
    }, 1000 / fps);
    return track;
  }

  const real = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
  navigator.mediaDevices.getUserMedia = async (c) => {
    const ms = c && c.audio ? await real({ audio: c.audio, video: false }) : new MediaStream();
    if (c && c.video) ms.addTrack(canvasTrack(c.video === true ? {} : c.video));
    return ms;
  };

  /** Starts reading the stamps of every frame the remote <video> presents. */
  G2G.start = () => {
    if (G2G.reading) return;
    G2G.reading = true;
    const v = document.getElementById('remote');
    const since = (t, code) => (((t - code) % 65536) + 65536) % 65536;
    const onFrame = async (_now, meta) => {
      if (!G2G.reading) return;
      v.requestVideoFrameCallback(onFrame);
      // When the decoded frame went to the compositor, on this tab's clock.
      const received = performance.timeOrigin + meta.presentationTime;
      let code = -1;
      let frame;
      try {
        // The frame presented, copied out with WebCodecs and closed at once (drawing the
        // <video> into a canvas instead grew the tab by ~2.5 MB a frame: no GC came).
        frame = new VideoFrame(v);
        // Now and then the element has moved on to the next frame already: its stamp is not
        // this presentation time's.
        if (Math.abs(frame.timestamp - meta.mediaTime * 1e6) > 1000) {
          G2G.mismatched++;
          throw new Error('the <video> moved on to the next frame');
        }
        // The blocks' area, scaled should the encoder have scaled the frame.
        const sx = frame.codedWidth / WIDTH;
        const sy = frame.codedHeight / HEIGHT;
        const even = (x) => 2 * Math.ceil(x / 2);
        const rect = {
          x: 0,
          y: 0,
          width: Math.min(frame.codedWidth, even(BITS * BLOCK * sx)),
          height: Math.min(frame.codedHeight, even(2 * BLOCK * sy)),
        };
        const buf = new Uint8Array(frame.allocationSize({ rect }));
        const layout = await frame.copyTo(buf, { rect });
        const { offset, stride } = layout[0];
        // Planar YUV (I420, NV12: software decoding): plane 0 is luma, as our Stamper reads
        // it; packed RGB: green stands in for luma on black and white.
        const step = /^(I4|NV12)/.test(frame.format || '') ? 1 : 4;
        const green = step === 1 ? 0 : 1;
        code = readCode((x, y) => buf[offset + Math.floor(y * sy) * stride + Math.floor(x * sx) * step + green]);
      } catch (e) {
        // Counted as unreadable; the first reason is reported.
        G2G.error = G2G.error || String(e);
      } finally {
        if (frame) frame.close();
      }
      if (code < 0) {
        G2G.unreadable++;
      } else {
        G2G.samples.push(since(received, code));
        // Where the time goes: until the frame's last packet arrived (encode, network, the
        // sender's capture), the rest is jitter buffer, decode and render scheduling.
        if (meta.receiveTime !== undefined) G2G.toReceived.push(since(performance.timeOrigin + meta.receiveTime, code));
      }
    };
    v.requestVideoFrameCallback(onFrame);
  };
  G2G.stop = () => { G2G.reading = false; };
}

/**
 * Offset of `b`'s clock from `a`'s (ms): each page's clock against this process's, from the
 * evaluate round trip with the shortest time (its midpoint), a few times.
 */
async function clockOffset(a, b) {
  const against = async (page) => {
    let best = { rtt: Infinity, off: 0 };
    for (let i = 0; i < 20; i++) {
      const t0 = performance.timeOrigin + performance.now();
      const t = await page.evaluate(() => G2G.clock());
      const t1 = performance.timeOrigin + performance.now();
      if (t1 - t0 < best.rtt) best = { rtt: t1 - t0, off: t - (t0 + t1) / 2 };
    }
    return best;
  };
  const [oa, ob] = [await against(a), await against(b)];
  return { offset: ob.off - oa.off, uncertainty: (oa.rtt + ob.rtt) / 2 };
}

/** A connected, previewing tab; `stamped`: with the stamped canvas camera (else the fake one). */
async function user(name, stamped) {
  const uid = uniqueUid(name);
  const page = await openSdkPage(browser, server, uid);
  await waitEvent(page, 'connected');
  if (stamped) await page.evaluate(installStampedCamera, [WIDTH, HEIGHT]);
  await page.evaluate(() => T.preview({ captureAudio: true, captureVideo: true, dimension: '480p', maxFPS: 15 }));
  return { uid, page };
}

/** One call; returns [setup ms, alice, bob]. */
async function oneCall(stamped = false) {
  const bob = await user('bob', stamped);
  await bob.page.evaluate(() => { T.onCalled = 'accept'; });
  const alice = await user('alice', stamped);
  const ms = await alice.page.evaluate(async (uid) => {
    const v = document.getElementById('remote');
    const first = new Promise((ok) => v.requestVideoFrameCallback(() => ok(performance.now())));
    const t0 = performance.now();
    T.call(uid);
    const t = await Promise.race([first, new Promise((r) => setTimeout(() => r(-1), 20000))]);
    return t < 0 ? -1 : t - t0;
  }, bob.uid);
  if (ms < 0) throw new Error('no remote frame within 20 s');
  return [ms, alice, bob];
}

async function hangUp(...users) {
  for (const u of users) await u.page.close().catch(() => {});
  await sleep(200);
}

// The long call first (also the warm-up), fake camera.
const [, a0, b0] = await oneCall();
await sleep(1000);
const before = descendants();
const t0 = Date.now();
await sleep(callSecs * 1000);
const after = descendants();
const secs = (Date.now() - t0) / 1000;
await hangUp(a0, b0);
const setup = [];
for (let i = 0; i < calls; i++) {
  const [ms, a, b] = await oneCall();
  setup.push(ms);
  await hangUp(a, b);
}

// Glass-to-glass: one more call of S seconds with the stamped canvas camera, kept apart so that
// setup, CPU and memory above stay those of the fake camera (the canvas costs CPU of its own,
// and its first frame comes sooner). Both tabs read stamps, as both of our endpoints do; the
// caller's are the figure.
const [, a1, b1] = await oneCall(true);
await a1.page.evaluate(() => G2G.start());
await b1.page.evaluate(() => G2G.start());
const clocks = await clockOffset(b1.page, a1.page);
await sleep(1000);
await a1.page.evaluate(() => { G2G.samples = []; G2G.toReceived = []; G2G.unreadable = 0; G2G.mismatched = 0; });
const sent0 = await b1.page.evaluate(() => G2G.sent);
const stampedBefore = descendants();
const t1 = Date.now();
await sleep(callSecs * 1000);
const stampedCpu = ((descendants().cpu - stampedBefore.cpu) / ((Date.now() - t1) / 1000)) * 60;
const g2g = await a1.page.evaluate(() => {
  G2G.stop();
  return { samples: G2G.samples, toReceived: G2G.toReceived, unreadable: G2G.unreadable, mismatched: G2G.mismatched, error: G2G.error };
});
await b1.page.evaluate(() => G2G.stop());
const sent = (await b1.page.evaluate(() => G2G.sent)) - sent0;
await hangUp(a1, b1);
const median = (v) => [...v].sort((x, y) => x - y)[Math.max(0, Math.ceil(v.length / 2) - 1)];
const g2gNote =
  `glass-to-glass from a separate call with a stamped canvas camera: stamped -> caller's remote <video> presents the frame ` +
  `(median ${median(g2g.toReceived)?.toFixed(1)} ms of it until the frame's last packet arrived); ` +
  `${g2g.unreadable} unreadable (${g2g.mismatched} where the <video> had moved on to the next frame${g2g.error ? '; first: ' + g2g.error : ''}); ` +
  `tab clocks differ by ${clocks.offset.toFixed(2)} ms (+-${clocks.uncertainty.toFixed(2)}, not corrected); ` +
  `that call's CPU ${stampedCpu.toFixed(1)} s per call-minute`;
console.error(`# chromium: callee sent ${sent} stamped frames, caller read ${g2g.samples.length}; ${g2gNote}`);
console.log('BENCH-RESULT ' + JSON.stringify({
  name: 'chromium',
  setup_definition: "caller's call() -> first remote frame presented (requestVideoFrameCallback); both tabs connected and previewing",
  setup_ms: setup,
  g2g_ms: g2g.samples,
  g2g_unreadable: g2g.unreadable,
  call_secs: secs,
  cpu_s_per_call_min: ((after.cpu - before.cpu) / secs) * 60,
  rss_mib: after.rss,
  cpu_by_thread: [],
  setup_phases_ms: [],
  notes: `two headless Chromium tabs (one browser) + our server (call-bench --serve); our SDK; fake camera/mic; memory is the sum of Pss over the Chromium and server processes; ${g2gNote}`,
}));
await browser.close();
await server.stop();
serverProc.kill('SIGTERM');
process.exit(0);
