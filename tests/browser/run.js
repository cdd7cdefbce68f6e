#!/usr/bin/env node
// Runs the browser test suite inside private network namespaces that have only loopback
// (shared/docs/testing-on-loopback.md, fact 2): Chromium then gathers 127.0.0.1 candidates
// only, and no packet of a test can leave the machine, whatever interfaces it has.
// Needs root or unprivileged user namespaces; otherwise fails saying why.
//
// `node run.js` runs every test file, WILDDOG_BROWSER_JOBS (default 1) at a time, each in a
// namespace of its own: a file shapes and breaks its own `lo` (tc, nftables), so two files
// never share one. A file's output is printed whole when it ends, then a summary.
// `node run.js ARGS...` passes ARGS to one `node --test` in one namespace (a file, a
// --test-name-pattern). WILDDOG_BROWSER_NO_NETNS=1 runs in the current namespace instead
// (debugging against a server started by hand, WILDDOG_SERVER=...), one file at a time.
import { spawn, spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const nodeTest = (files) => ['--test', '--test-concurrency=1', '--test-reporter=spec', ...files];
const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
const unshareFlags = isRoot ? ['--net'] : ['--net', '--map-root-user'];
const enterNetns = 'ip link set lo up && exec "$0" "$@"';

/** The command running `node --test testArgs` in a new namespace (or here). */
function command(testArgs) {
  if (process.env.WILDDOG_IN_NETNS === '1' || process.env.WILDDOG_BROWSER_NO_NETNS === '1') {
    return [process.execPath, testArgs];
  }
  return ['unshare', [...unshareFlags, '--', 'sh', '-c', enterNetns, process.execPath, ...testArgs]];
}

function cannotUnshare(e) {
  console.error(`run.js: cannot run unshare (${e.message}): install util-linux and iproute2, or set WILDDOG_BROWSER_NO_NETNS=1`);
  process.exit(1);
}

const env = { ...process.env, WILDDOG_IN_NETNS: process.env.WILDDOG_BROWSER_NO_NETNS === '1' ? '' : '1' };

if (args.length) {
  const [cmd, cmdArgs] = command(nodeTest(args));
  const r = spawnSync(cmd, cmdArgs, { cwd: here, stdio: 'inherit', env });
  if (r.error) cannotUnshare(r.error);
  process.exit(r.status ?? 1);
}

// The longest files first, so that the last to end is a short one (durations of a run on
// 2 cores, in seconds: gstreamer 176, connectivity 102, restart 71, original-sdk 35,
// sdk-calls 34, the others under 20).
const longest = ['gstreamer', 'connectivity', 'restart', 'original-sdk', 'sdk-calls'];
const rank = (f) => {
  const i = longest.indexOf(f.replace(/\.test\.js$/, ''));
  return i < 0 ? longest.length : i;
};
const files = readdirSync(join(here, 'test'))
  .filter((f) => f.endsWith('.test.js'))
  .sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
const separate = process.env.WILDDOG_BROWSER_NO_NETNS !== '1';
// One at a time by default: two at a time took 5 minutes instead of 9.5, but on 2 cores the
// fps-asserting tests then failed now and then (Chromium's CPU adaptation: 12 fps at 240x180
// where the test wants the page's 15).
const jobs = separate ? Math.max(1, Number(process.env.WILDDOG_BROWSER_JOBS || 1)) : 1;

// A file that runs this long is stopped and fails, saying so: a wedged browser (Firefox once
// stopped answering WebDriver BiDi, and a test waiting on it with no deadline held the run
// for 11 minutes until it was killed by hand) must not hold CI to its limit. The longest
// file takes about 3 minutes on 2 cores.
const FILE_TIMEOUT_MS = Number(process.env.WILDDOG_BROWSER_FILE_TIMEOUT_MS || 10 * 60_000);

function runFile(file) {
  return new Promise((resolve) => {
    const started = Date.now();
    const [cmd, cmdArgs] = command(nodeTest([join('test', file)]));
    // Its own process group: on a timeout the browsers and runners it started go too.
    const child = spawn(cmd, cmdArgs, { cwd: here, env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    const out = [];
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      // SIGINT first: node's test runner then prints what passed and failed so far.
      try { process.kill(-child.pid, 'SIGINT'); } catch {}
      setTimeout(() => { try { process.kill(-child.pid, 'SIGKILL'); } catch {} }, 10_000).unref();
    }, FILE_TIMEOUT_MS);
    child.stdout.on('data', (d) => out.push(d));
    child.stderr.on('data', (d) => out.push(d));
    child.on('error', cannotUnshare);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const seconds = ((Date.now() - started) / 1000).toFixed(1);
      const note = timedOut ? `\nrun.js: ${file} stopped after ${FILE_TIMEOUT_MS / 1000} s (WILDDOG_BROWSER_FILE_TIMEOUT_MS)\n` : '';
      process.stdout.write(`\n=== ${file} (${seconds} s) ===\n${Buffer.concat(out).toString()}${note}`);
      resolve({ file, seconds, ok: code === 0 && !timedOut, status: timedOut ? 'timeout' : (signal ?? code) });
    });
  });
}

const queue = [...files];
const results = [];
await Promise.all(
  Array.from({ length: Math.min(jobs, files.length) }, async () => {
    while (queue.length) results.push(await runFile(queue.shift()));
  }),
);
console.log(`\n=== browser tests: ${files.length} files, ${jobs} at a time ===`);
for (const r of results) console.log(`${r.ok ? 'ok    ' : 'FAILED'} ${r.file} (${r.seconds} s${r.ok ? '' : `, exit ${r.status}`})`);
const failed = results.filter((r) => !r.ok);
if (failed.length) {
  console.log(`${failed.length} of ${files.length} files failed: ${failed.map((r) => r.file).join(', ')}`);
  process.exit(1);
}
