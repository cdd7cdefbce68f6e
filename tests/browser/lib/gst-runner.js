// The GStreamer side: `wilddog-runner run pipelines/FILE.toml ...` as a child process (an echo
// bot, a test caller), its JSON-line events on stdout (docs/pipeline-files.md, "Events")
// collected in order, its exit code, and `wilddog-runner demo`. Every runner gathers ICE on
// 127.0.0.1 only, like the browsers of lib/chromium.js.
import { spawn } from 'node:child_process';
import { isAbsolute, join } from 'node:path';
import assert from 'node:assert/strict';
import { REPO, freePort, runnerPath } from './server.js';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Path of a shipped pipeline file (`echo.toml`, `call-test.toml` ...). */
/** A file of pipelines/ by name, or a pipeline file's own (absolute) path. */
export const pipelineFile = (name) => (isAbsolute(name) ? name : join(REPO, 'pipelines', name));

/**
 * Spawns `wilddog-runner ARGS...` and collects its stdout JSON lines.
 * Returns { events, stderr(), waitEvent(name, {where, timeout}), exit(timeout), stop(), describe() }.
 */
export function spawnRunner(args, { label = 'runner' } = {}) {
  const child = spawn(runnerPath(), args, {
    cwd: REPO,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'info' },
  });
  const events = [];
  const nonJson = [];
  let err = '';
  let buf = '';
  const waiters = new Set();
  const notify = () => {
    for (const w of waiters) w();
  };
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (d) => {
    buf += d;
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl).trim();
      buf = buf.slice(nl + 1);
      if (!line) continue;
      if (process.env.WILDDOG_TEST_VERBOSE) process.stderr.write(`# ${label}: ${line}\n`);
      try {
        events.push(JSON.parse(line));
      } catch {
        nonJson.push(line);
      }
    }
    notify();
  });
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (d) => {
    err += d;
    if (err.length > 200_000) err = err.slice(-100_000);
    if (process.env.WILDDOG_TEST_VERBOSE) process.stderr.write(`# ${label} stderr: ${d}`);
  });
  let exitInfo = null;
  const exited = new Promise((ok) =>
    child.on('exit', (code, signal) => {
      exitInfo = { code, signal };
      notify();
      ok(exitInfo);
    }),
  );
  child.on('error', (e) => {
    exitInfo = { code: null, signal: null, error: e.message };
    notify();
  });

  const runner = {
    child,
    events,
    nonJson,
    stderr: () => err,
    /** `label: exit …; events: a, b, …; stderr tail` for assertion messages. */
    describe() {
      const names = events.map(
        (e) => e.event + (e.status ? `:${e.status}` : '') + (e.reason ? `:${e.reason}` : '') + (e.event === 'error' ? `:${JSON.stringify({ code: e.code, message: e.message })}` : ''),
      );
      return `${label} (${args.join(' ')}) ${exitInfo ? `exited ${JSON.stringify(exitInfo)}` : 'running'}; events: ${names.join(', ')}; stderr:\n${err.slice(-3000)}`;
    },
    /** The names of the events so far, in order. */
    names: () => events.map((e) => e.event),
    /** Waits for the first event `name` (at or after index `from`) for which `where(e)` holds. */
    waitEvent(name, { where = () => true, timeout = 20_000, from = 0 } = {}) {
      return new Promise((ok, fail) => {
        const check = () => {
          const e = events.slice(from).find((x) => x.event === name && where(x));
          if (e) return done(() => ok(e));
          if (exitInfo) return done(() => fail(new Error(`no "${name}" event: ${runner.describe()}`)));
        };
        const timer = setTimeout(() => done(() => fail(new Error(`no "${name}" event within ${timeout} ms: ${runner.describe()}`))), timeout);
        const done = (f) => {
          clearTimeout(timer);
          waiters.delete(check);
          f();
        };
        waiters.add(check);
        check();
      });
    },
    /** Waits for the process to exit; returns its exit code. */
    async exit(timeout = 30_000) {
      const r = await Promise.race([exited, sleep(timeout).then(() => null)]);
      if (!r) throw new Error(`did not exit within ${timeout} ms: ${runner.describe()}`);
      return r.code;
    },
    /** SIGTERM (a clean end: bye, drain), then SIGKILL after 8 s. */
    async stop() {
      if (exitInfo || child.exitCode !== null) return;
      child.kill('SIGTERM');
      await Promise.race([exited, sleep(8000)]);
      if (!exitInfo) child.kill('SIGKILL');
      await Promise.race([exited, sleep(2000)]);
    },
  };
  return runner;
}

/** `wilddog-runner run pipelines/FILE ...` against `server` (lib/server.js), on 127.0.0.1. */
export function runPipeline(file, server, args = [], opts = {}) {
  return spawnRunner(['run', pipelineFile(file), '--server', server.wsUrl, '--ice-local-addresses', '127.0.0.1', ...args], {
    label: opts.label || file,
  });
}

/** The echo bot (`echo.toml`, or another pipeline file) as `uid`, once it is `ready`. */
export async function startEchoBot(server, uid, extra = [], file = 'echo.toml') {
  const bot = runPipeline(file, server, ['--uid', uid, ...extra], { label: `echo ${uid}` });
  try {
    const ready = await bot.waitEvent('ready', { timeout: 20_000 });
    assert.equal(ready.role, 'answer');
    assert.equal(ready.uid, uid);
  } catch (e) {
    await bot.stop();
    throw e;
  }
  return bot;
}

/**
 * `wilddog-runner demo --json --listen 127.0.0.1:PORT --echo-uid UID`, once its self-check
 * passed. Returns the runner plus { base, wsUrl, echoUid }.
 */
export async function startDemo(echoUid, { checkSeconds = 3 } = {}) {
  let last;
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await freePort();
    const demo = spawnRunner(
      ['demo', '--json', '--listen', `127.0.0.1:${port}`, '--echo-uid', echoUid, '--check-seconds', String(checkSeconds), '--ice-local-addresses', '127.0.0.1'],
      { label: 'demo' },
    );
    try {
      const verdict = await demo.waitEvent('self_check', { timeout: 60_000 });
      assert.equal(verdict.passed, true, `the demo's self-check failed: ${demo.describe()}`);
      // The bot is free again (a fresh pipeline) once it prints `ready` after the check's call.
      const closedAt = demo.events.indexOf(await demo.waitEvent('closed', { where: (e) => e.endpoint === 'echo', timeout: 20_000 }));
      await demo.waitEvent('ready', { where: (e) => e.endpoint === 'echo', from: closedAt + 1, timeout: 20_000 });
      const base = `http://127.0.0.1:${port}`;
      return Object.assign(demo, { base, wsUrl: `ws://127.0.0.1:${port}/ws`, echoUid });
    } catch (e) {
      await demo.stop();
      last = e;
      if (!/address already in use|AddrInUse/i.test(demo.stderr())) break;
    }
  }
  throw last;
}
