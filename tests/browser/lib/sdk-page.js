// A bare test page that loads OUR SDK from the server (<server>/sdk/wilddog-video.js) and
// records what a user of the SDK sees (events in order) in `window.T`. The page comes from the
// tests' own loopback HTTP server (lib/static.js); the SDK finds the signaling server from the
// address it was loaded from (…/sdk/wilddog-video.js → ws://…/ws), as a third-party page
// embedding our SDK would.
import assert from 'node:assert/strict';
import { proxySignaling } from './ws-proxy.js';

export const SDK_TEST_PATH = '/__test__/sdk.html';

const PAGE_SCRIPT = String.raw`
window.T = {
  events: [],
  conv: null,
  local: null,
  localStats: [],
  remoteStats: [],
  // The conversation's 'quality' events (kept apart from 'events', whose order tests check).
  quality: [],
  log(e, d) { T.events.push({ e, d: d === undefined ? null : d, t: Date.now() }); },
  // 'accept' | 'reject' | null: what to do on "called".
  onCalled: null,
  watch(c) {
    T.conv = c;
    c.on('response', (s) => T.log('response', s));
    c.on('stream_received', (s) => { T.log('stream_received'); T.remote = s; s.attach(document.getElementById('remote')); });
    c.on('closed', () => T.log('closed'));
    c.on('error', (e) => T.log('error', e.code));
    c.on('local_stats', (s) => T.localStats.push(s));
    c.on('remote_stats', (s) => T.remoteStats.push(s));
    c.on('quality', (q) => T.quality.push(q));
  },
  async init(appId, token, opts) {
    T.video = wilddogVideo.getInstance().initialize(appId, token, opts || {});
    T.video.on('token_error', (e) => T.log('token_error', e.code));
    T.video.on('connected', () => T.log('connected'));
    T.video.on('called', (c) => {
      T.log('called', { from: c.remoteUid, data: c.data === undefined ? null : c.data });
      T.watch(c);
      if (T.onCalled === 'accept') c.accept(T.local).then(() => T.log('accepted'), (e) => T.log('accept_failed', e.message));
      if (T.onCalled === 'reject') c.reject().then(() => T.log('rejected'), (e) => T.log('reject_failed', e.message));
    });
  },
  async preview(opts) {
    T.local = await wilddogVideo.createLocalStream(opts || { captureAudio: true, captureVideo: true, dimension: '480p', maxFPS: 15 });
    T.local.attach(document.getElementById('local'));
    return { audio: T.local.stream.getAudioTracks().length, video: T.local.stream.getVideoTracks().length };
  },
  call(uid, data) { T.watch(T.video.call(uid, T.local, data)); T.log('calling', uid); },
  pc() { return T.conv && T.conv._pc; },
  // Frames the remote <video> presented since countPresented() (requestVideoFrameCallback):
  // Firefox's inbound framesDecoded, nackCount and packetsLost started again from 0 when the
  // page's own sender changed its parameters.
  presented: 0,
  countPresented() {
    const v = document.getElementById('remote');
    const onFrame = () => { T.presented++; v.requestVideoFrameCallback(onFrame); };
    v.requestVideoFrameCallback(onFrame);
  },
  // The inbound video's nackCount and packetsLost since watchInbound(), summed over samples
  // every 250 ms (and at each call) across those restarts: framesDecoded going down marks one.
  inbound: null,
  watchInbound() {
    T.inbound = { nack: 0, lost: 0, restarts: 0, prev: null, chain: Promise.resolve() };
    T.inboundTimer = setInterval(() => T.readInbound(), 250);
  },
  readInbound() {
    const sum = T.inbound;
    sum.chain = sum.chain.then(async () => {
      const pc = T.pc();
      if (!pc) return;
      let cur = null;
      (await pc.getStats()).forEach((s) => {
        if (s.type === 'inbound-rtp' && s.kind === 'video') cur = { nack: s.nackCount || 0, lost: s.packetsLost || 0, decoded: s.framesDecoded || 0 };
      });
      if (!cur) return;
      const prev = sum.prev;
      const restarted = prev && cur.decoded < prev.decoded;
      if (restarted) sum.restarts++;
      for (const k of ['nack', 'lost']) sum[k] += !prev ? 0 : restarted ? cur[k] : cur[k] - prev[k];
      sum.prev = cur;
    });
    return sum.chain.then(() => ({ nack: sum.nack, lost: sum.lost, restarts: sum.restarts }));
  },
  // Frames decoded on the receiving RTCPeerConnection, from getStats() itself.
  async framesDecoded() {
    const pc = T.pc();
    if (!pc) return -1;
    let n = 0;
    (await pc.getStats()).forEach((s) => { if (s.type === 'inbound-rtp' && s.kind === 'video') n += s.framesDecoded || 0; });
    return n;
  },
};
`;

export function sdkTestHtml(sdkBase) {
  return `<!doctype html><html><head><meta charset="utf-8"><title>sdk test</title></head><body>
<video id="local" muted playsinline autoplay width="320"></video>
<video id="remote" playsinline autoplay width="320"></video>
<script src="${sdkBase}/sdk/wilddog-video.js"></script>
<script>${PAGE_SCRIPT}</script>
</body></html>`;
}

/** Opens the SDK test page of `server` in a new tab of `browser`, signed in as `uid`. */
export async function openSdkPage(browser, server, uid, { initOptions, token, appId, proxy = false } = {}) {
  const page = await browser.newPage();
  if (proxy) page.signaling = await proxySignaling(page, server.wsUrl);
  if (!browser.pages) throw new Error('launchChromium() browser has no static page server');
  const url = browser.pages.put(SDK_TEST_PATH, sdkTestHtml(server.base));
  await page.goto(url);
  const hasSdk = await page.evaluate(() => typeof window.wilddogVideo === 'object' && window.wilddogVideo !== null);
  assert.ok(hasSdk, `GET ${server.base}/sdk/wilddog-video.js did not define window.wilddogVideo`);
  if (token === undefined) {
    const t = await server.token(uid);
    token = t.token;
    appId = appId || t.appId;
  }
  await page.evaluate(([a, t, o]) => T.init(a, t, o), [appId, token, initOptions || {}]);
  return page;
}

/** Waits until the page's event log has `event` (optionally with data `d`); returns it. */
export async function waitEvent(page, event, { d, timeout = 20_000 } = {}) {
  try {
    const handle = await page.waitForFunction(
      ([e, d]) => T.events.find((x) => x.e === e && (d === undefined || JSON.stringify(x.d) === JSON.stringify(d))),
      [event, d],
      { timeout, polling: 50 },
    );
    return handle.jsonValue();
  } catch (err) {
    const events = await page.evaluate(() => T.events.map((x) => x.e + (x.d === null ? '' : ':' + JSON.stringify(x.d)))).catch(() => []);
    throw new Error(`no "${event}"${d === undefined ? '' : ' ' + JSON.stringify(d)} within ${timeout} ms; events: ${events.join(', ')}`);
  }
}

/** The event names (with data) seen so far. */
export function events(page) {
  return page.evaluate(() => T.events.map((x) => (x.d === null ? x.e : `${x.e}:${typeof x.d === 'string' || typeof x.d === 'number' ? x.d : JSON.stringify(x.d)}`)));
}

/** Waits until the page's remote <video> decodes frames: getStats framesDecoded grows and the
 * element has the expected size. */
export async function expectRemoteVideo(page, { width, height, timeout = 20_000 } = {}) {
  const deadline = Date.now() + timeout;
  let first = -1;
  let last = -1;
  while (Date.now() < deadline) {
    last = await page.evaluate(() => T.framesDecoded());
    if (first < 0 && last > 0) first = last;
    if (first > 0 && last > first + 5) break;
    await new Promise((r) => setTimeout(r, 250));
  }
  assert.ok(first > 0 && last > first, `framesDecoded did not grow (first ${first}, last ${last})`);
  if (width) {
    await page.waitForFunction(
      ([w, h]) => {
        const v = document.getElementById('remote');
        return v.videoWidth === w && (h === undefined || v.videoHeight === h);
      },
      [width, height],
      { timeout: Math.max(2000, deadline - Date.now()), polling: 100 },
    ).catch(async () => {
      const size = await page.evaluate(() => [document.getElementById('remote').videoWidth, document.getElementById('remote').videoHeight]);
      throw new Error(`remote <video> is ${size.join('x')}, expected ${width}x${height}`);
    });
  }
  return last;
}
