// Random UDP loss on the loopback of the test run's private network namespace (run.js makes
// it), with nftables: this kernel has no netem. Only inside that namespace: outside, the
// rule would drop the machine's own traffic.
import { execFileSync } from 'node:child_process';

const TABLE = 'wilddog_browser_loss';

function nft(args) {
  execFileSync('nft', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

/** Drops `percent` % of UDP packets at random on every hop through `lo`. */
export function loseUdp(percent) {
  addLossRule(percent, []);
}

/**
 * `loseUdp` sparing RTCP (a multiplexed packet whose second byte, its packet type, is 200 to
 * 206; SRTCP leaves it in the clear) and ICE's STUN checks (first byte 0 to 3, RFC 7983):
 * media is lost, key frame requests and the path get through. For a test that asserts a
 * request arrives: at 60 % loss of everything, all of a burst's few requests were sometimes
 * lost on the way, and with the checks lost too a page on a loaded machine sometimes took
 * the path for lost and restarted ICE on a new peer connection in the middle of the test.
 */
export function loseMedia(percent) {
  addLossRule(percent, ['@th,72,8', '!=', '200-206', '@th,64,8', '>', '3']);
}

function addLossRule(percent, spared) {
  if (process.env.WILDDOG_IN_NETNS !== '1') {
    throw new Error('loseUdp needs the private network namespace of run.js (WILDDOG_IN_NETNS=1): nftables rules there touch nothing else');
  }
  noLoss();
  try {
    nft(['add', 'table', 'inet', TABLE]);
    nft(['add', 'chain', 'inet', TABLE, 'input', '{ type filter hook input priority 0; }']);
    nft(['add', 'rule', 'inet', TABLE, 'input', 'meta', 'l4proto', 'udp', ...spared, 'numgen', 'random', 'mod', '100', '<', String(percent), 'drop']);
  } catch (e) {
    throw new Error(`nft failed (scripts/install-deps.sh installs nftables): ${e.stderr || e.message}`);
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Reads `sample()` (a page's RTP stats) around a clean period and a lossy one: after
 * `settleMs`, at the start and end of `cleanMs`; then under `percent` % UDP loss, after 2 s
 * and after `lossyMs` more. `whileLossy` runs before the loss ends (a burst of its own, say);
 * the loss is removed whatever happens. Returns `{ clean0, clean1, lossy0, lossy1 }`.
 */
export async function sampleCleanThenLossy(sample, { percent, cleanMs, lossyMs, settleMs = 2000, whileLossy }) {
  await sleep(settleMs);
  const clean0 = await sample();
  await sleep(cleanMs);
  const clean1 = await sample();
  try {
    loseUdp(percent);
    await sleep(2000);
    const lossy0 = await sample();
    await sleep(lossyMs);
    const lossy1 = await sample();
    if (whileLossy) await whileLossy();
    return { clean0, clean1, lossy0, lossy1 };
  } finally {
    noLoss();
  }
}

/** Removes the loss rule (if any). */
export function noLoss() {
  try {
    nft(['delete', 'table', 'inet', TABLE]);
  } catch {
    // none
  }
}

/**
 * Caps `lo` at `kbit` kbit/s with `tc tbf` (a 16 kbit burst, packets queued up to 300 ms;
 * both directions of a call share it), as tests/support/shaping.rs does. `lo`'s MTU becomes
 * 1500: tbf drops every packet larger than its burst, and a DTLS handshake datagram with
 * loopback's 64 KiB MTU would never pass.
 */
export function capKbit(kbit) {
  if (process.env.WILDDOG_IN_NETNS !== '1') {
    throw new Error('capKbit needs the private network namespace of run.js (WILDDOG_IN_NETNS=1): tc there touches nothing else');
  }
  try {
    execFileSync('ip', ['link', 'set', 'lo', 'mtu', '1500'], { stdio: ['ignore', 'ignore', 'pipe'] });
    execFileSync('tc', ['qdisc', 'replace', 'dev', 'lo', 'root', 'tbf', 'rate', `${kbit}kbit`, 'burst', '16kbit', 'latency', '300ms'], { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (e) {
    throw new Error(`tc failed (scripts/install-deps.sh installs iproute2): ${e.stderr || e.message}`);
  }
}

/** Removes the cap (if any) and gives `lo` its MTU back. */
export function uncap() {
  try {
    execFileSync('tc', ['qdisc', 'del', 'dev', 'lo', 'root'], { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch {
    // none
  }
  try {
    execFileSync('ip', ['link', 'set', 'lo', 'mtu', '65536'], { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch {
    // leave it
  }
}
