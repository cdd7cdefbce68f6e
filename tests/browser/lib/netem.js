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
  if (process.env.WILDDOG_IN_NETNS !== '1') {
    throw new Error('loseUdp needs the private network namespace of run.js (WILDDOG_IN_NETNS=1): nftables rules there touch nothing else');
  }
  noLoss();
  try {
    nft(['add', 'table', 'inet', TABLE]);
    nft(['add', 'chain', 'inet', TABLE, 'input', '{ type filter hook input priority 0; }']);
    nft(['add', 'rule', 'inet', TABLE, 'input', 'meta', 'l4proto', 'udp', 'numgen', 'random', 'mod', '100', '<', String(percent), 'drop']);
  } catch (e) {
    throw new Error(`nft failed (scripts/install-deps.sh installs nftables): ${e.stderr || e.message}`);
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
