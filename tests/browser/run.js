#!/usr/bin/env node
// Runs the browser test suite inside a private network namespace that has only loopback
// (shared/docs/testing-on-loopback.md, fact 2): Chromium then gathers 127.0.0.1 candidates
// only, and no packet of a test can leave the machine, whatever interfaces it has.
// Needs root or unprivileged user namespaces; otherwise fails saying why.
// WILDDOG_BROWSER_NO_NETNS=1 runs in the current namespace instead (debugging against a
// server started by hand, WILDDOG_SERVER=...).
import { spawnSync } from 'node:child_process';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const testArgs = ['--test', '--test-concurrency=1', '--test-reporter=spec', ...(args.length ? args : ['test/'])];

function runTests() {
  const r = spawnSync(process.execPath, testArgs, { cwd: here, stdio: 'inherit', env: process.env });
  if (r.error) throw r.error;
  process.exit(r.status ?? 1);
}

if (process.env.WILDDOG_IN_NETNS === '1' || process.env.WILDDOG_BROWSER_NO_NETNS === '1') runTests();

const script = 'ip link set lo up && exec "$0" "$@"';
const env = { ...process.env, WILDDOG_IN_NETNS: '1' };
const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
const attempts = isRoot ? [['--net']] : [['--net', '--map-root-user']];
for (const flags of attempts) {
  const r = spawnSync('unshare', [...flags, '--', 'sh', '-c', script, process.execPath, fileURLToPath(import.meta.url), ...args], {
    cwd: here,
    stdio: 'inherit',
    env,
  });
  if (r.error) {
    console.error(`run.js: cannot run unshare (${r.error.message}): install util-linux and iproute2, or set WILDDOG_BROWSER_NO_NETNS=1`);
    process.exit(1);
  }
  process.exit(r.status ?? 1);
}
