#!/usr/bin/env node
// Chromium <-> Chromium anchor: two headless Chromium tabs calling each other with our browser
// SDK (web/wilddog-video.js) through our server, fake camera and microphone, 640x480@15
// (createLocalStream dimension 480p, maxFPS 15; Chromium picks VP8 and Opus). What a web
// developer gets. Run by `call-bench --chromium` inside its private network namespace (Chromium
// gathers 127.0.0.1 only there); reuses tests/browser/lib (needs `npm ci` in tests/browser).
//
//   node benches/chromium/anchor.mjs --server-bin PATH/call-bench [--calls N] [--call-secs S]
//
// Setup = caller's `call()` -> first remote video frame presented in its <video>
// (requestVideoFrameCallback), both tabs connected and previewing. CPU and memory: every process
// of Chromium and the server (children of this script) over a call of S seconds; memory as
// the sum of their Pss. Glass-to-glass
// is not measured here (the fake camera cannot be stamped). Prints `BENCH-RESULT {json}`.
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

async function user(name) {
  const uid = uniqueUid(name);
  const page = await openSdkPage(browser, server, uid);
  await waitEvent(page, 'connected');
  await page.evaluate(() => T.preview({ captureAudio: true, captureVideo: true, dimension: '480p', maxFPS: 15 }));
  return { uid, page };
}

/** One call; returns [setup ms, alice, bob]. */
async function oneCall() {
  const bob = await user('bob');
  await bob.page.evaluate(() => { T.onCalled = 'accept'; });
  const alice = await user('alice');
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

// The long call first (also the warm-up).
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
console.log('BENCH-RESULT ' + JSON.stringify({
  name: 'chromium',
  setup_definition: "caller's call() -> first remote frame presented (requestVideoFrameCallback); both tabs connected and previewing",
  setup_ms: setup,
  g2g_ms: [],
  g2g_unreadable: 0,
  call_secs: secs,
  cpu_s_per_call_min: ((after.cpu - before.cpu) / secs) * 60,
  rss_mib: after.rss,
  cpu_by_thread: [],
  setup_phases_ms: [],
  notes: 'two headless Chromium tabs (one browser) + our server (call-bench --serve); our SDK; fake camera/mic; memory is the sum of Pss over the Chromium and server processes; glass-to-glass not measured',
}));
await browser.close();
await server.stop();
serverProc.kill('SIGTERM');
process.exit(0);
