// A real `redis-server` (Debian package, scripts/install-deps.sh) on a free loopback port, for
// tests of several server nodes on one Redis. Nothing is persisted.
import { spawn } from 'node:child_process';
import { connect } from 'node:net';
import { freePort } from './server.js';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function answers(port) {
  return new Promise((ok) => {
    const s = connect(port, '127.0.0.1', () => {
      s.end();
      ok(true);
    });
    s.on('error', () => ok(false));
  });
}

/** Starts redis-server; returns { url, stop() }. */
export async function startRedis() {
  const port = await freePort();
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
    stdio: 'ignore',
  });
  let failed = null;
  child.on('error', (e) => (failed = e));
  const deadline = Date.now() + 10_000;
  while (!(await answers(port))) {
    if (failed) throw new Error(`redis-server: ${failed.message} (scripts/install-deps.sh installs it)`);
    if (Date.now() > deadline) throw new Error(`redis-server did not listen on ${port} within 10 s`);
    await sleep(50);
  }
  return {
    url: `redis://127.0.0.1:${port}/`,
    async stop() {
      child.kill('SIGKILL');
      await new Promise((r) => (child.exitCode !== null ? r() : child.once('exit', r)));
    },
  };
}
