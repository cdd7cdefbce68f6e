// A real TURN server for browser tests: coturn (Debian `coturn`) on 127.0.0.1 with a shared
// secret (`use-auth-secret`), on free ports, relaying between loopback peers (the test runs
// in a loopback-only namespace). Fails saying why when turnserver is missing.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './server.js';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function startCoturn(secret) {
  if (!existsSync('/usr/bin/turnserver')) throw new Error('turnserver not found: apt-get install coturn (or scripts/install-deps.sh)');
  const dir = mkdtempSync(join(tmpdir(), 'wilddog-coturn-'));
  const port = await freePort();
  // Relay ports below the kernel's ephemeral range: no peer's own socket can take one.
  const low = 10000 + (port % 20000);
  const child = spawn('turnserver', [
    '-n', '--listening-ip', '127.0.0.1', '--relay-ip', '127.0.0.1', '--listening-port', String(port),
    '--min-port', String(low), '--max-port', String(low + 200), '--use-auth-secret', '--static-auth-secret', secret,
    '--realm', 'wilddog.test', '--fingerprint', '--no-cli', '--allow-loopback-peers', '--no-dtls', '--no-tls',
    '--simple-log', '--pidfile', join(dir, 'turnserver.pid'), '--log-file', join(dir, 'turn.log'),
  ], { stdio: 'ignore' });
  const log = () => readdirSync(dir).filter((f) => f.startsWith('turn')).map((f) => readFileSync(join(dir, f), 'utf8')).join('');
  const deadline = Date.now() + 10_000;
  for (;;) {
    const ok = await new Promise((r) => {
      const s = connect(port, '127.0.0.1', () => { s.destroy(); r(true); });
      s.on('error', () => r(false));
    });
    if (ok) break;
    if (Date.now() > deadline) throw new Error(`turnserver does not listen on ${port}: ${log()}`);
    await sleep(50);
  }
  return {
    port,
    log,
    async stop() {
      child.kill('SIGTERM');
      await sleep(100);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
