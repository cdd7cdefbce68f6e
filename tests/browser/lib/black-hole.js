// Breaking a call's media path on loopback (nftables), and watching the page's video come
// back: the restart tests' and the relay test's.
import { execFileSync } from 'node:child_process';
import { events } from './sdk-page.js';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** The ports of the process `pid`'s peer connections: its UDP sockets and its TCP ones (ICE-TCP
 * candidates) but its signaling connection (to `serverPort`). */
export function callPorts(pid, serverPort) {
  const out = execFileSync('ss', ['-tuapnH'], { encoding: 'utf8' });
  const port = (addr) => Number(addr.slice(addr.lastIndexOf(':') + 1));
  const ports = new Set();
  for (const line of out.split('\n')) {
    if (!line.includes(`pid=${pid},`)) continue;
    const cols = line.trim().split(/\s+/);
    const [local, peer] = [port(cols[4] || ''), port(cols[5] || '')];
    if (!local || peer === serverPort) continue;
    ports.add(local);
  }
  return [...ports];
}

/** Drops UDP and TCP to/from `ports` (`to`/`from`: which directions), in a table removed by
 * `clear()`. */
export function blackHole(ports, { to = true, from = true } = {}) {
  const table = `wilddog_restart_${process.pid}`;
  const nft = (...args) => execFileSync('nft', args, { stdio: 'pipe' });
  nft('add', 'table', 'inet', table);
  nft('add', 'chain', 'inet', table, 'c', '{ type filter hook input priority 0; }');
  const set = `{ ${ports.join(', ')} }`;
  for (const proto of ['udp', 'tcp']) {
    if (to) nft('add', 'rule', 'inet', table, 'c', proto, 'dport', set, 'drop');
    if (from) nft('add', 'rule', 'inet', table, 'c', proto, 'sport', set, 'drop');
  }
  return { clear: () => nft('delete', 'table', 'inet', table) };
}

/** Waits until the page's video stalls (no frame decoded for 700 ms), then decodes 10 frames
 * again (counting from 0 when a new stream replaced the old); returns the time since `t0`. */
export async function videoBack(page, t0, timeout, runner) {
  try {
    return await videoBackInner(page, t0, timeout);
  } catch (e) {
    const pc = await page.evaluate(() => {
      const pc = T.pc();
      return pc ? `pc ${pc.signalingState} ice ${pc.iceConnectionState} conn ${pc.connectionState}` : 'no pc';
    });
    const frames = page.signaling ? page.signaling.frames.filter((f) => !f.text.includes('"candidate"') && !/^\d+$/.test(f.text)).slice(-12).map((f) => `${f.t - t0} ${f.dir} ${f.text.slice(0, 200)}`).join('\n') : '';
    throw new Error(`${e.message}; page: ${pc}, events ${(await events(page)).join(', ')}\nframes:\n${frames}\n${runner.describe()}`);
  }
}

/** The page's decoded frames; -1 when getStats does not answer within 2 s (Firefox's may never
 * answer on a peer connection closed meanwhile, and a page.evaluate would then hang). */
function decoded(page) {
  return page.evaluate(() => Promise.race([T.framesDecoded(), new Promise((r) => setTimeout(() => r(-1), 2000))]));
}

async function videoBackInner(page, t0, timeout) {
  const deadline = Date.now() + timeout;
  let last = await decoded(page);
  let grewAt = Date.now();
  let base = null;
  while (Date.now() < deadline) {
    await sleep(100);
    const n = await decoded(page);
    if (n < 0) continue;
    if (n > last) grewAt = Date.now();
    if (base === null && Date.now() - grewAt > 700) base = n;
    if (base !== null) {
      if (n < base) base = 0;
      if (n - base >= 10) return Date.now() - t0;
    }
    last = n;
  }
  throw new Error(`the page's video ${base === null ? 'never stalled' : 'did not come back'} within ${timeout} ms of the black hole`);
}
