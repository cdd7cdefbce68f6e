// Starts the project's real signaling server (`wilddog-runner serve`) on a free loopback port
// for one test file, and mints tokens for its development app.
//
// Environment:
//   WILDDOG_RUNNER  path of the wilddog-runner binary (default: <repo>/target/debug/wilddog-runner)
//   WILDDOG_SERVER  base URL of a server that is already running (e.g. http://127.0.0.1:8080):
//                   then nothing is started (for debugging against a server in another terminal)
import { spawn, execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);
export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');

export function runnerPath() {
  const target = process.env.CARGO_TARGET_DIR ? resolve(REPO, process.env.CARGO_TARGET_DIR) : join(REPO, 'target');
  return process.env.WILDDOG_RUNNER || join(target, 'debug', 'wilddog-runner');
}

/** A free TCP port on 127.0.0.1 (bind port 0, read it, release it). */
export function freePort() {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.unref();
    s.on('error', fail);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Starts `wilddog-runner serve --listen 127.0.0.1:PORT` and waits until it answers HTTP.
 * Returns { base, wsUrl, token(uid), runnerToken(uid, args), stop() }. `config`: a server
 * config file (`--config`; then there is no /dev/token: mint with runnerToken(uid,
 * ['--config', config, '--app-id', …])). `args`: more arguments of `serve` (e.g. `--redis URL`).
 */
export async function startServer({ config, args: extra = [] } = {}) {
  if (process.env.WILDDOG_SERVER) return serverAt(process.env.WILDDOG_SERVER.replace(/\/$/, ''), null);
  const bin = runnerPath();
  if (!existsSync(bin)) {
    throw new Error(`${bin} does not exist: build it first with \`cargo build -p wilddog-runner\` (or set WILDDOG_RUNNER)`);
  }
  let lastError;
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await freePort();
    const args = ['serve', '--listen', `127.0.0.1:${port}`, ...(config ? ['--config', config] : []), ...extra];
    const child = spawn(bin, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'info' },
    });
    let output = '';
    const keep = (d) => {
      output += d;
      if (output.length > 200_000) output = output.slice(-100_000);
      if (process.env.WILDDOG_TEST_VERBOSE) process.stderr.write(`# server: ${d}`);
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    let exited = null;
    child.on('exit', (code, signal) => (exited = { code, signal }));
    const base = `http://127.0.0.1:${port}`;
    const deadline = Date.now() + 20_000;
    while (Date.now() < deadline && !exited) {
      try {
        const r = await fetch(config ? `${base}/healthz` : `${base}/dev/token?uid=probe`);
        if (r.ok) return serverAt(base, child, () => output);
      } catch {
        /* not listening yet */
      }
      await sleep(100);
    }
    child.kill('SIGKILL');
    lastError = new Error(
      `wilddog-runner serve on port ${port} ${exited ? `exited (${JSON.stringify(exited)})` : 'did not answer GET /dev/token within 20 s'}:\n${output.slice(-4000)}`,
    );
    // A port taken between our probe and its bind: try another.
    if (!/address already in use|AddrInUse/i.test(output)) break;
  }
  throw lastError;
}

function serverAt(base, child, output = () => '') {
  const wsUrl = base.replace(/^http/, 'ws') + '/ws';
  return {
    base,
    wsUrl,
    output,
    /** {appId, uid, token, server} from the server's development app. */
    async token(uid) {
      const r = await fetch(`${base}/dev/token?uid=${encodeURIComponent(uid)}`);
      if (!r.ok) throw new Error(`GET /dev/token?uid=${uid}: HTTP ${r.status}: ${await r.text()}`);
      return r.json();
    },
    /** `wilddog-runner token --uid UID ...args` (stdout, trimmed). */
    async runnerToken(uid, args = []) {
      const { stdout } = await execFileP(runnerPath(), ['token', '--uid', uid, ...args]);
      return stdout.trim();
    },
    async stop() {
      if (!child || child.exitCode !== null) return;
      child.kill('SIGTERM');
      await Promise.race([new Promise((r) => child.once('exit', r)), sleep(3000)]);
      if (child.exitCode === null) child.kill('SIGKILL');
    },
  };
}

let uidCounter = 0;
/** A uid unique to this run, so tests never see each other's users. */
export function uniqueUid(name) {
  uidCounter += 1;
  return `${name}-${process.pid}-${uidCounter}-${Math.random().toString(36).slice(2, 7)}`;
}
